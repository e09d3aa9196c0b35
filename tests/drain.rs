//! Graceful drain: every connection gets a close frame (1012) before the server stops, in
//! batches; new connections are refused meanwhile; disconnect handlers run once each. And a
//! rolling deploy end to end: the chat example as two nodes on Redis, node A sent SIGTERM
//! while a publisher on node B publishes steadily; A's clients reconnect to B and recover, and
//! nobody's sequence of publications has a gap or a duplicate.

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::App;
use serde_json::{json, Value};
use switchboard::drain::Drain;
use switchboard::prelude::*;
use switchboard::testing::{Frame, TestClient, TestError, TestServer};
use switchboard_suite::{chat, http, process::wait_for_exit, Proc, RedisServer, Wait};

#[derive(Default)]
struct Left(Mutex<Vec<ConnectionId>>);

#[switchboard::on_disconnect]
async fn left(ch: Channel, log: actix_web::web::Data<Left>) {
    log.0.lock().unwrap().push(ch.id());
}

#[actix_rt::test]
async fn a_drain_closes_every_connection_with_1012_in_batches_and_refuses_newcomers() {
    let hub = Hub::new();
    let log = actix_web::web::Data::new(Left::default());
    let (app_hub, app_log) = (hub.clone(), log.clone());
    let srv = TestServer::start(move || {
        App::new()
            .app_data(app_hub.clone())
            .app_data(app_log.clone())
            .service(
                ChannelRoute::<()>::new("/ws")
                    .message(switchboard_suite::handlers::echo)
                    .on_disconnect(left),
            )
    });
    let mut clients = Vec::new();
    for _ in 0..25 {
        let mut c = srv.connect("/ws").await.unwrap();
        c.request("echo", json!(1)).await.unwrap();
        clients.push(c);
    }
    assert_eq!(hub.connection_count(), 25);

    // Batches of 10 every 300 ms: three batches.
    let drain = Drain::new(hub.clone())
        .batch_size(10)
        .batch_interval(Duration::from_millis(300))
        .window(Duration::from_secs(10));
    let started = Instant::now();
    let running = actix_rt::spawn(async move { drain.run().await });

    // Every client gets the close frame, and it is the last thing it gets. Each client waits
    // in a task of its own, so that each close is timed when it arrives.
    let waiting: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            actix_rt::spawn(async move {
                let (code, reason) = c.recv_close().await.unwrap();
                let at = started.elapsed();
                assert_eq!((code, reason.as_str()), (1012, "service restart"));
                c.wait_closed().await.unwrap();
                at
            })
        })
        .collect();
    let mut closed_after = Vec::new();
    for w in waiting {
        closed_after.push(w.await.unwrap());
    }
    // Refused while draining, with the documented status and code.
    match srv.connect("/ws").await {
        Err(TestError::Rejected { status, body }) => {
            assert_eq!(status, 503);
            assert!(body.contains("\"draining\""), "{body}");
        }
        other => panic!("a connection during the drain: {other:?}"),
    }
    let report = running.await.unwrap();
    assert_eq!(report.closed, 25);
    assert_eq!(report.remaining, 0);
    assert!(hub.is_draining());
    // Three batches: at most one batch before the first interval has passed, and the last
    // connection closed two intervals after the first.
    closed_after.sort();
    let early = closed_after
        .iter()
        .filter(|t| **t < Duration::from_millis(290))
        .count();
    assert!(
        early <= 10,
        "{early} closed in the first batch: {closed_after:?}"
    );
    assert!(
        closed_after[24] - closed_after[0] >= Duration::from_millis(550),
        "closes were not spread over batches: {closed_after:?}"
    );
    // Each disconnect handler ran once.
    Wait::up_to(Duration::from_secs(5))
        .until("every disconnect handler", || async {
            log.0.lock().unwrap().len() >= 25
        })
        .await;
    let ids = log.0.lock().unwrap().clone();
    assert_eq!(ids.len(), 25);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 25);
}

#[actix_rt::test]
async fn stop_drains_then_stops_the_server() {
    let hub = Hub::new();
    let app_hub = hub.clone();
    let srv = TestServer::start(move || {
        App::new()
            .app_data(app_hub.clone())
            .service(ChannelRoute::<()>::new("/ws").message(switchboard_suite::handlers::echo))
    });
    let mut c = srv.connect("/ws").await.unwrap();
    c.request("echo", json!(1)).await.unwrap();
    let handle = srv.handle();
    let stopping = actix_rt::spawn(async move { Drain::new(hub).stop(&handle).await });
    assert_eq!(c.recv_close().await.unwrap().0, 1012);
    let report = stopping.await.unwrap();
    assert_eq!((report.closed, report.remaining), (1, 0));
}

#[actix_rt::test]
async fn a_drain_with_no_connections_returns_at_once() {
    let hub = Hub::new();
    let report = Drain::new(hub.clone())
        .window(Duration::from_secs(30))
        .run()
        .await;
    assert_eq!((report.closed, report.remaining), (0, 0));
    assert!(report.elapsed < Duration::from_secs(5));
}

// ---- the rolling deploy ------------------------------------------------------------------

const CLIENTS: usize = 200;

fn chat_node(redis: &RedisServer) -> (Proc, String) {
    let url = redis.url();
    chat(&[
        "--redis",
        &url,
        "--drain-batch",
        "50",
        "--drain-interval-ms",
        "250",
        "--drain-window-s",
        "10",
    ])
}

fn ws(base: &str) -> String {
    format!("{}/ws/chat", base.replacen("http://", "ws://", 1))
}

/// Logs in as `nick` and joins the lobby, from `recover` when given; returns the client and
/// the subscribe reply.
async fn join(base: &str, nick: &str, recover: Option<&(String, u64)>) -> (TestClient, Value) {
    let mut c = TestClient::connect(&ws(base)).await.expect("connect");
    c.set_timeout(Duration::from_secs(30));
    assert_eq!(
        c.request("nick", json!({"nick": nick})).await.unwrap(),
        nick
    );
    let mut sub = json!({"topic": "room:lobby"});
    if let Some((epoch, seq)) = recover {
        sub["recover"] = json!({"epoch": epoch, "seq": seq});
    }
    let reply = c.request("subscribe", sub).await.expect("join the lobby");
    (c, reply)
}

/// What one client saw.
struct Seen {
    numbers: Vec<u64>,
    close: (u16, String),
    closed_after_term: Duration,
    recovered: Value,
}

struct Shared {
    receiving: AtomicUsize,
    moved: AtomicUsize,
    term_at: Mutex<Option<Instant>>,
}

/// One client: on node A until its close frame, then on node B from where it was.
async fn client(i: usize, a: String, b: String, shared: Arc<Shared>) -> Seen {
    let nick = format!("u{i}");
    let (mut c, _) = join(&a, &nick, None).await;
    let mut numbers = Vec::new();
    let mut position: Option<(String, u64)> = None;
    let record = |f: &Value, numbers: &mut Vec<u64>, position: &mut Option<(String, u64)>| {
        if f["event"] == "announcement" {
            let n: u64 = f["data"]["text"].as_str().unwrap().parse().unwrap();
            numbers.push(n);
            *position = Some((
                f["epoch"].as_str().unwrap().to_owned(),
                f["seq"].as_u64().unwrap(),
            ));
        }
    };
    // On node A.
    let close = loop {
        match c.recv().await.expect("a frame on node A") {
            Frame::Json(f) => {
                let first = numbers.is_empty();
                record(&f, &mut numbers, &mut position);
                if first && !numbers.is_empty() {
                    shared.receiving.fetch_add(1, Ordering::SeqCst);
                }
            }
            Frame::Close(c) => break c.expect("a close code"),
            _ => {}
        }
    };
    let term_at = shared
        .term_at
        .lock()
        .unwrap()
        .expect("closed after SIGTERM");
    let closed_after_term = term_at.elapsed();
    // On node B, from the last publication seen.
    let (mut c, recovered) = join(&b, &nick, position.as_ref()).await;
    shared.moved.fetch_add(1, Ordering::SeqCst);
    loop {
        match c.recv().await.expect("a frame on node B") {
            Frame::Json(f) => {
                if f["event"] == "announcement" && f["data"]["text"] == "end" {
                    break;
                }
                record(&f, &mut numbers, &mut position);
            }
            Frame::Close(c) => panic!("{nick} closed on node B: {c:?}"),
            _ => {}
        }
    }
    Seen {
        numbers,
        close,
        closed_after_term,
        recovered,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deploy_loses_no_publication() {
    let Some(redis) = RedisServer::start("drain") else {
        return;
    };
    let (mut node_a, a) = chat_node(&redis);
    let (_node_b, b) = chat_node(&redis);

    let shared = Arc::new(Shared {
        receiving: AtomicUsize::new(0),
        moved: AtomicUsize::new(0),
        term_at: Mutex::new(None),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(client(i, a.clone(), b.clone(), shared.clone())))
        .collect();

    // The publisher, on node B: a number every 20 ms until told to stop, then "end".
    let stop = Arc::new(tokio::sync::Notify::new());
    let published = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (b, stop, published) = (b.clone(), stop.clone(), published.clone());
        tokio::spawn(async move {
            let url = format!("{b}/api/rooms/lobby/announce");
            let mut n = 0u64;
            loop {
                let (status, body) = http("POST", &url, &n.to_string()).await.unwrap();
                assert_eq!(status, 204, "announce {n}: {body}");
                published.store(n as usize + 1, Ordering::SeqCst);
                n += 1;
                tokio::select! {
                    _ = stop.notified() => break,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            let (status, _) = http("POST", &url, "end").await.unwrap();
            assert_eq!(status, 204);
            n
        })
    };

    let wait = Wait::up_to(Duration::from_secs(60)).every(Duration::from_millis(20));
    wait.until("every client to receive on node A", || async {
        shared.receiving.load(Ordering::SeqCst) == CLIENTS
    })
    .await;

    // The deploy: SIGTERM to node A.
    *shared.term_at.lock().unwrap() = Some(Instant::now());
    let term = Command::new("kill")
        .args(["-TERM", &node_a.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    wait.until("every client to move to node B", || async {
        shared.moved.load(Ordering::SeqCst) == CLIENTS
    })
    .await;
    // Node A exits by itself once its connections are gone, well within its 10 s window.
    let status = tokio::task::spawn_blocking(move || {
        let status = wait_for_exit(&mut node_a.0, Duration::from_secs(15));
        (status, node_a)
    })
    .await
    .unwrap()
    .0
    .expect("node A exits after the drain");
    assert!(status.success(), "node A: {status}");

    // A little more on node B, then the end.
    let more = published.load(Ordering::SeqCst) + 10;
    wait.until("ten more publications", || async {
        published.load(Ordering::SeqCst) >= more
    })
    .await;
    stop.notify_one();
    let last = publisher.await.unwrap() - 1;

    for (i, seen) in clients.into_iter().enumerate() {
        let seen = seen.await.unwrap();
        assert_eq!(
            seen.close,
            (1012, "service restart".to_owned()),
            "client {i}"
        );
        assert!(
            seen.closed_after_term < Duration::from_secs(10),
            "client {i} closed {:?} after SIGTERM",
            seen.closed_after_term
        );
        assert_eq!(
            seen.recovered["recovered"], true,
            "client {i}: {}",
            seen.recovered
        );
        let numbers = &seen.numbers;
        let first = numbers[0];
        let expected: Vec<u64> = (first..=last).collect();
        assert_eq!(
            numbers, &expected,
            "client {i}: a gap or a duplicate across the deploy"
        );
    }
}
