//! Ordering within a connection, independence between connections.

use std::time::{Duration, Instant};

use actix_web::web;
use serde::Deserialize;
use serde_json::json;
use switchboard::prelude::*;
use switchboard::testing::TestServer;
use switchboard_suite::handlers::{echo, serve_gated, wait, wait_at_gate, Gate};

#[derive(Deserialize)]
struct Nap {
    ms: u64,
    n: u32,
}

/// Sleeps as long as it is told, then answers its number.
#[switchboard::message("nap")]
async fn nap(msg: Nap) -> Result<u32, ChannelError> {
    actix_rt::time::sleep(Duration::from_millis(msg.ms)).await;
    Ok(msg.n)
}

/// Starts a task that pushes three ticks, then waits for the gate.
#[switchboard::message("tick_then_wait")]
async fn tick_then_wait(ch: Channel, gate: web::Data<Gate>) -> Result<&'static str, ChannelError> {
    let pusher = ch.clone();
    actix_rt::spawn(async move {
        for n in 0..3 {
            actix_rt::time::sleep(Duration::from_millis(10)).await;
            let _ = pusher.send("tick", &n);
        }
    });
    gate.0.notified().await;
    Ok("released")
}

fn start(gate: web::Data<Gate>) -> TestServer {
    serve_gated(
        &gate,
        ChannelRoute::new("/ws")
            .message(nap)
            .message(echo)
            .message(wait)
            .message(tick_then_wait),
    )
}

#[tokio::test]
async fn messages_of_one_connection_are_handled_in_order_even_when_handlers_await() {
    let server = start(web::Data::new(Gate::default()));
    let mut c = server.connect("/ws").await.unwrap();
    // Earlier messages sleep longer: run concurrently, they would finish in reverse.
    let naps = [120, 90, 60, 30, 0];
    for (i, ms) in naps.iter().enumerate() {
        c.send_json(&json!({"type": "nap", "ref": i, "data": {"ms": ms, "n": i}}))
            .await
            .unwrap();
    }
    // A message whose handler does not wait queues behind them too.
    c.send_json(&json!({"type": "echo", "ref": "last", "data": "last"}))
        .await
        .unwrap();
    for i in 0..naps.len() {
        assert_eq!(
            c.recv_json().await.unwrap(),
            json!({"ref": i, "ok": true, "data": i})
        );
    }
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"ref": "last", "ok": true, "data": "last"})
    );
}

#[tokio::test]
async fn a_slow_handler_does_not_block_other_connections() {
    let gate = web::Data::new(Gate::default());
    let server = start(gate.clone());
    let mut slow = server.connect("/ws").await.unwrap();
    let mut fast = server.connect("/ws").await.unwrap();
    // The slow handler is now waiting.
    wait_at_gate(&mut slow, "slow").await;

    fast.set_timeout(Duration::from_secs(1));
    let started = Instant::now();
    for n in 0..5 {
        assert_eq!(fast.request("echo", json!(n)).await.unwrap(), n);
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // A new connection opens meanwhile too.
    let mut late = server.connect("/ws").await.unwrap();
    assert_eq!(late.request("echo", json!("late")).await.unwrap(), "late");

    gate.0.notify_one();
    assert_eq!(
        slow.reply_to(&json!("slow")).await.unwrap(),
        json!({"ref": "slow", "ok": true, "data": "released"})
    );
}

#[tokio::test]
async fn pushes_flow_while_a_handler_awaits() {
    let gate = web::Data::new(Gate::default());
    let server = start(gate.clone());
    let mut c = server.connect("/ws").await.unwrap();
    c.send_json(&json!({"type": "tick_then_wait", "ref": "w"}))
        .await
        .unwrap();
    for n in 0..3 {
        assert_eq!(c.recv_event("tick").await.unwrap(), n);
    }
    gate.0.notify_one();
    assert_eq!(
        c.reply_to(&json!("w")).await.unwrap(),
        json!({"ref": "w", "ok": true, "data": "released"})
    );
}

#[tokio::test]
async fn heartbeats_flow_while_a_handler_awaits() {
    let gate = web::Data::new(Gate::default());
    let server = serve_gated(
        &gate,
        ChannelRoute::new("/ws")
            .heartbeat(Duration::from_millis(50), Duration::from_millis(200))
            .message(wait)
            .message(echo),
    );
    let mut c = server.connect("/ws").await.unwrap();
    wait_at_gate(&mut c, "w").await;
    // Pings keep coming (and the client's pongs keep the connection alive) past the idle
    // timeout while the handler waits.
    c.set_timeout(Duration::from_secs(1));
    for _ in 0..8 {
        assert_eq!(c.recv().await.unwrap(), switchboard::testing::Frame::Ping);
    }
    gate.0.notify_one();
    assert_eq!(c.reply_to(&json!("w")).await.unwrap()["data"], "released");
    assert_eq!(c.request("echo", json!(1)).await.unwrap(), 1);
}
