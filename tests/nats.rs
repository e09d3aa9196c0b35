//! The NATS engine against a real `nats-server` (started by each test on a loopback port of its
//! own), beyond what the conformance suite (`tests/conformance.rs`) checks: how a node reads
//! the messages a history stream republishes onto a topic's subject. A raw NATS client plays
//! the stream's part there, sending republished messages in an order of the test's choosing.
//!
//! Without `nats-server` (Debian package `nats-server`) the tests skip with a message; under
//! `CI=true` they fail instead.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::header::{HeaderMap, NATS_SEQUENCE};
use serde_json::{json, Value};
use switchboard::engine::nats::NatsEngine;
use switchboard::engine::{
    Delivered, DeliverySink, Engine, HistoryConfig, Publication, SubscribeRequest, Subscriber,
};
use switchboard::ConnectionId;
use switchboard_suite::wait::DEADLINE;
use switchboard_suite::{until, NatsServer};

/// What a subscriber got, as JSON frames.
#[derive(Default)]
struct Collect(Mutex<Vec<Value>>);

impl DeliverySink for Collect {
    fn deliver(&self, d: &Publication) -> Delivered {
        self.0
            .lock()
            .unwrap()
            .push(serde_json::from_str(&d.frame).unwrap());
        Delivered::Queued
    }
}

impl Collect {
    fn frames(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }
}

/// A node keeping history on `h:*`, with a subscriber to `topic` (whose stream it creates,
/// empty: its cursor starts at 0).
async fn subscribed(server: &NatsServer, topic: &str) -> (NatsEngine, Arc<Collect>) {
    subscribed_with(NatsEngine::builder(server.url()), topic).await
}

async fn subscribed_with(
    builder: switchboard::engine::nats::NatsEngineBuilder,
    topic: &str,
) -> (NatsEngine, Arc<Collect>) {
    let engine = builder
        .history("h:*", HistoryConfig::last(8))
        .connect()
        .await
        .unwrap();
    let sink = Arc::new(Collect::default());
    let subscriber = Subscriber {
        id: ConnectionId::next(),
        sink: sink.clone(),
    };
    engine
        .subscribe(SubscribeRequest::new(topic.into(), subscriber))
        .await
        .unwrap();
    (engine, sink)
}

/// Sends what the topic's stream would republish for its publication `seq`: the wire message
/// on the topic's subject (`switchboard.t.{hex(topic)}`), with header `Nats-Sequence`.
async fn republish(client: &async_nats::Client, topic: &str, seq: u64, data: Value) {
    let hex: String = topic.bytes().map(|b| format!("{b:02x}")).collect();
    let mut headers = HeaderMap::new();
    headers.insert(NATS_SEQUENCE, seq.to_string());
    let body = json!({ "e": "m", "d": data }).to_string();
    client
        .publish_with_headers(format!("switchboard.t.{hex}"), headers, body.into())
        .await
        .unwrap();
}

fn seqs_and_data(frames: &[Value]) -> Vec<(u64, Value)> {
    frames
        .iter()
        .filter(|f| f["event"] == "m")
        .map(|f| (f["seq"].as_u64().unwrap(), f["data"].clone()))
        .collect()
}

/// nats-server republishes a stored message after it let go of the stream: of two messages
/// stored at once (two publishers), the later one can come first. The node holds it until the
/// earlier one arrives and delivers both in sequence order. (It used to read the earlier one
/// from the stream at once, which a short history had already trimmed during a burst, move
/// on, and then drop the earlier one as already delivered when it came.)
#[tokio::test]
async fn republished_messages_out_of_sequence_order_are_delivered_in_order() {
    let Some(server) = NatsServer::start("nats_reorder") else {
        return;
    };
    let topic = "h:reorder";
    let (_engine, sink) = subscribed(&server, topic).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    // The stream itself holds none of them: whatever the node delivers came on the subject.
    for seq in [2, 3, 1, 5, 4] {
        republish(&client, topic, seq, json!(seq)).await;
    }
    client.flush().await.unwrap();
    until("five deliveries", || async {
        seqs_and_data(&sink.frames()).len() >= 5
    })
    .await;
    let want: Vec<(u64, Value)> = (1..=5).map(|n| (n, json!(n))).collect();
    assert_eq!(seqs_and_data(&sink.frames()), want);
}

/// A message that never comes (lost on its way, and no longer in the stream) holds back the
/// ones after it only a while: then the node reads the stream for it, and delivers what came.
#[tokio::test]
async fn a_lost_republished_message_does_not_hold_back_the_next_for_good() {
    let Some(server) = NatsServer::start("nats_lost") else {
        return;
    };
    let topic = "h:lost";
    let (_engine, sink) = subscribed(&server, topic).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    republish(&client, topic, 2, json!("two")).await;
    republish(&client, topic, 3, json!("three")).await;
    client.flush().await.unwrap();
    until("the deliveries after the lost one", || async {
        seqs_and_data(&sink.frames()).len() >= 2
    })
    .await;
    // The lost one coming after all is too late: the node has moved past it.
    republish(&client, topic, 1, json!("one")).await;
    republish(&client, topic, 4, json!("four")).await;
    client.flush().await.unwrap();
    until("the next delivery", || async {
        seqs_and_data(&sink.frames()).len() >= 3
    })
    .await;
    assert_eq!(
        seqs_and_data(&sink.frames()),
        vec![(2, json!("two")), (3, json!("three")), (4, json!("four"))]
    );
}

/// The reorder window is a setting: past `max_held` messages held ahead of a missing one, the
/// node reads the stream at once instead of waiting out the window. The window here (a minute)
/// is longer than the test waits, so only the count can release them.
#[tokio::test]
async fn more_held_than_the_reorder_window_allows_are_released_at_once() {
    let Some(server) = NatsServer::start("nats_reorder_limit") else {
        return;
    };
    assert!(Duration::from_secs(60) > DEADLINE);
    let topic = "h:limit";
    let builder = NatsEngine::builder(server.url()).reorder_window(Duration::from_secs(60), 2);
    let (_engine, sink) = subscribed_with(builder, topic).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    // Number 1 never comes: 2 and 3 are held (two, the limit), 4 goes past it.
    for seq in [2, 3, 4] {
        republish(&client, topic, seq, json!(seq)).await;
    }
    client.flush().await.unwrap();
    until("the held deliveries", || async {
        seqs_and_data(&sink.frames()).len() >= 3
    })
    .await;
    let want: Vec<(u64, Value)> = (2..=4).map(|n| (n, json!(n))).collect();
    assert_eq!(seqs_and_data(&sink.frames()), want);
}
