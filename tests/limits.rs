//! Limits on connections and requests that are not upgrades.

use actix_web::{web, App};
use serde_json::json;
use switchboard::prelude::*;
use switchboard::testing::{TestClient, TestError, TestServer};
use switchboard::ChannelConfig;
use switchboard_suite::handlers::{echo, serve_gated, wait, wait_at_gate, Gate};
use switchboard_suite::{eventually, raw_http, rejected_status};

#[switchboard::on_connect]
async fn token_required(req: ConnectRequest) -> Result<(), ChannelError> {
    match req.query("token") {
        Some("ok") => Ok(()),
        _ => Err(ChannelError::unauthorized("token required")),
    }
}

/// Connects, retrying while the channel is full (503): the server frees a slot only once it
/// has noticed the close. Any other refusal fails at once.
async fn connect_when_a_slot_frees(server: &TestServer, path: &str) -> TestClient {
    eventually("a slot to free", || async {
        match server.connect(path).await {
            Err(TestError::Rejected { status: 503, .. }) => Err(503),
            Err(e) => panic!("connecting to {path}: {e}"),
            Ok(c) => Ok(c),
        }
    })
    .await
}

#[tokio::test]
async fn max_connections_rejects_the_third_with_503_until_one_closes() {
    let channel = ChannelRoute::<()>::new("/ws")
        .max_connections(2)
        .message(echo);
    let server = TestServer::start(move || App::new().service(channel.clone()));
    let a = server.connect("/ws").await.unwrap();
    let mut b = server.connect("/ws").await.unwrap();
    assert_eq!(rejected_status(server.connect("/ws").await), 503);

    a.close().await.unwrap();
    let mut c = connect_when_a_slot_frees(&server, "/ws").await;
    assert_eq!(c.request("echo", json!("c")).await.unwrap(), "c");
    assert_eq!(b.request("echo", json!("b")).await.unwrap(), "b");
    assert_eq!(rejected_status(server.connect("/ws").await), 503);

    // An abrupt drop frees its slot too.
    b.drop_abruptly();
    let mut d = connect_when_a_slot_frees(&server, "/ws").await;
    assert_eq!(d.request("echo", json!("d")).await.unwrap(), "d");
}

#[tokio::test]
async fn max_connections_counts_across_workers() {
    let channel = ChannelRoute::<()>::new("/ws")
        .max_connections(2)
        .message(echo);
    let server = TestServer::build(move || App::new().service(channel.clone()))
        .workers(2)
        .start();
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(server.connect("/ws").await.unwrap());
    }
    for _ in 0..3 {
        assert_eq!(rejected_status(server.connect("/ws").await), 503);
    }
    for c in &mut open {
        assert_eq!(c.request("echo", json!(1)).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn rejected_connections_do_not_hold_a_slot() {
    let channel = ChannelRoute::<()>::new("/ws")
        .max_connections(1)
        .on_connect(token_required)
        .message(echo);
    let server = TestServer::start(move || App::new().service(channel.clone()));
    for _ in 0..3 {
        assert_eq!(rejected_status(server.connect("/ws").await), 401);
    }
    let mut c = server.connect("/ws?token=ok").await.unwrap();
    assert_eq!(c.request("echo", json!(1)).await.unwrap(), 1);
}

#[tokio::test]
async fn plain_get_to_the_channel_path_gets_4xx_and_the_server_keeps_serving() {
    let server =
        TestServer::start(|| App::new().service(ChannelRoute::<()>::new("/ws").message(echo)));
    let (status, response) = raw_http(server.addr(), "GET", "/ws").await;
    assert!((400..500).contains(&status), "{response}");
    let (status, response) = raw_http(server.addr(), "POST", "/ws").await;
    assert!((400..500).contains(&status), "{response}");
    let mut c = server.connect("/ws").await.unwrap();
    assert_eq!(c.request("echo", json!(1)).await.unwrap(), 1);
}

/// Beyond the brief's list: a message refused because the connection's inbound queue is full
/// gets `overloaded`; a client waiting for the reply to its `ref` needs that ref on the error.
#[tokio::test]
async fn overloaded_message_gets_overloaded_answering_its_ref() {
    let gate = web::Data::new(Gate::default());
    let server = serve_gated(
        &gate,
        ChannelRoute::new("/ws")
            .config(ChannelConfig {
                inbound_capacity: 2,
                ..ChannelConfig::default()
            })
            .message(wait)
            .message(echo),
    );
    let mut c = server.connect("/ws").await.unwrap();
    wait_at_gate(&mut c, "w").await;
    // The handler runs; two more fit in the queue; the next one does not.
    for r in 1..=3 {
        c.send_json(&json!({"type": "echo", "ref": r, "data": r}))
            .await
            .unwrap();
    }
    let err = c.recv_json().await.unwrap();
    assert_eq!(err["ok"], false, "{err}");
    assert_eq!(err["error"]["code"], "overloaded", "{err}");
    gate.0.notify_one();
    assert_eq!(c.reply_to(&json!("w")).await.unwrap()["data"], "released");
    assert_eq!(c.reply_to(&json!(1)).await.unwrap()["data"], 1);
    assert_eq!(c.reply_to(&json!(2)).await.unwrap()["data"], 2);
    assert_eq!(
        err["ref"], 3,
        "the error answers the refused request: {err}"
    );
}
