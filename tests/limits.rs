//! Limits on connections and requests that are not upgrades.

use actix_web::{web, App};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard::prelude::*;
use switchboard::testing::{reply_result, Frame, TestClient, TestError, TestServer};
use switchboard::ChannelConfig;
use switchboard_suite::handlers::{echo, reverse, serve_gated, wait, wait_at_gate, Gate};
use switchboard_suite::{error_reply, eventually, raw_http, rejected_status};

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

/// What a flooding client reads until the server closes it: the `ref`s of the replies it got,
/// the `ref`s of the `rate_limited` errors (`null` for binary frames, which have none), the
/// binary replies and the close frame.
#[derive(Default)]
struct Flood {
    served: Vec<Value>,
    limited: Vec<Value>,
    binary: usize,
    close: Option<(u16, String)>,
}

async fn read_until_closed(c: &mut TestClient) -> Flood {
    let mut flood = Flood::default();
    loop {
        match c.recv().await {
            Ok(Frame::Json(v)) if v["ok"] == false => {
                assert_eq!(v["error"]["code"], "rate_limited", "{v}");
                flood.limited.push(v["ref"].clone());
            }
            Ok(Frame::Json(v)) => flood.served.push(v["ref"].clone()),
            Ok(Frame::Binary(_)) => flood.binary += 1,
            Ok(Frame::Ping) => {}
            Ok(Frame::Close(close)) => {
                flood.close = close;
                return flood;
            }
            other => panic!("expected replies, errors and a close, got {other:?}"),
        }
    }
}

/// Messages over the rate get `rate_limited` answering their `ref` (their handler does not
/// run); a client that keeps going is closed with 1008; another client of the same server is
/// served all along.
#[tokio::test]
async fn rate_limit_refuses_then_closes_a_flooder_while_another_client_is_served() {
    let channel = ChannelRoute::<()>::new("/ws")
        .rate_limit(1, 3)
        .rate_limited_close_after(5)
        .message(echo);
    let server = TestServer::start(move || App::new().service(channel.clone()));
    let mut flooder = server.connect("/ws").await.unwrap();
    let mut other = server.connect("/ws").await.unwrap();
    for r in 1..=20 {
        flooder
            .send_json(&json!({"type": "echo", "ref": r, "data": r}))
            .await
            .unwrap();
    }
    assert_eq!(
        other.request("echo", json!("during")).await.unwrap(),
        "during"
    );
    let flood = read_until_closed(&mut flooder).await;
    // The burst of 3 is served (a token or two may come back if the machine is slow).
    assert_eq!(flood.served[..3], [json!(1), json!(2), json!(3)]);
    assert!(flood.served.len() <= 5, "{:?}", flood.served);
    // More than 5 refusals: the 6th closes; what comes after the close is not answered.
    assert_eq!(flood.limited.len(), 6, "{:?}", flood.limited);
    assert!(flood
        .limited
        .iter()
        .all(|r| r.as_u64().is_some_and(|r| r > 3)));
    assert_eq!(flood.close, Some((1008, "rate limited".to_owned())));
    assert_eq!(
        other.request("echo", json!("after")).await.unwrap(),
        "after"
    );
}

/// Binary frames draw on the same bucket: they cannot be used to get past the limit.
#[tokio::test]
async fn rate_limit_counts_binary_frames_too() {
    let channel = ChannelRoute::<()>::new("/ws")
        .rate_limit(1, 2)
        .rate_limited_close_after(3)
        .message(echo)
        .on_binary(reverse);
    let server = TestServer::start(move || App::new().service(channel.clone()));
    let mut flooder = server.connect("/ws").await.unwrap();
    let mut other = server.connect("/ws").await.unwrap();
    assert_eq!(flooder.request("echo", json!(1)).await.unwrap(), 1);
    for _ in 0..10 {
        flooder.send_binary(b"abc").await.unwrap();
    }
    assert_eq!(
        other.request("echo", json!("during")).await.unwrap(),
        "during"
    );
    let flood = read_until_closed(&mut flooder).await;
    assert!((1..=2).contains(&flood.binary), "{}", flood.binary);
    assert_eq!(flood.limited.len(), 4, "{:?}", flood.limited);
    assert_eq!(flood.close, Some((1008, "rate limited".to_owned())));
    assert_eq!(
        other.request("echo", json!("after")).await.unwrap(),
        "after"
    );
}

/// Subscribes the connection from a handler (`Topics` on a `Channel`); answers how many topics
/// it holds.
#[switchboard::message("follow")]
async fn follow(ch: Channel, topic: String) -> Result<usize, ChannelError> {
    ch.subscribe(&topic).await?;
    Ok(ch.subscriptions().await?.len())
}

#[derive(Deserialize)]
struct TrackMe {
    topic: String,
    meta: Value,
}

/// Enters the topic's presence as `me` with the given metadata.
#[switchboard::message("track")]
async fn track_me(ch: Channel, t: TrackMe) -> Result<(), ChannelError> {
    ch.track(&t.topic, "me", &t.meta).await
}

fn topic_channel() -> ChannelRoute {
    ChannelRoute::<()>::new("/ws")
        .allow_join("room:*")
        .presence(|_: Channel, topic: String| async move {
            let size = if topic.starts_with("room:big") {
                5000
            } else {
                10
            };
            Some(("me".to_owned(), json!({ "pad": "x".repeat(size) })))
        })
        .message(echo)
        .message(follow)
        .message(track_me)
}

async fn subscribe(c: &mut TestClient, topic: &str) -> Result<Value, TestError> {
    c.request("subscribe", json!({ "topic": topic })).await
}

#[tokio::test]
async fn topics_per_connection_are_limited_on_every_path() {
    let channel = topic_channel().max_topics(3);
    let server = TestServer::start(move || App::new().service(channel.clone()));
    let mut c = server.connect("/ws").await.unwrap();
    let mut other = server.connect("/ws").await.unwrap();
    for t in ["room:1", "room:2", "room:3"] {
        subscribe(&mut c, t).await.unwrap();
    }
    // A topic held already does not count twice.
    subscribe(&mut c, "room:1").await.unwrap();
    assert_eq!(c.request("follow", json!("room:2")).await.unwrap(), 3);

    let (code, message, _) = error_reply(subscribe(&mut c, "room:4").await);
    assert_eq!(code, "too_many_topics", "{message}");
    let (code, _, _) = error_reply(c.request("follow", json!("room:5")).await);
    assert_eq!(code, "too_many_topics");
    let (code, _, _) = error_reply(
        c.request("track", json!({"topic": "room:6", "meta": {}}))
            .await,
    );
    assert_eq!(code, "too_many_topics");

    // Another connection has its own count, and is served meanwhile.
    for t in ["room:4", "room:5", "room:6"] {
        subscribe(&mut other, t).await.unwrap();
    }
    assert_eq!(other.request("echo", json!("ok")).await.unwrap(), "ok");

    // Leaving a topic makes room.
    c.request("unsubscribe", json!({"topic": "room:1"}))
        .await
        .unwrap();
    assert_eq!(c.request("follow", json!("room:4")).await.unwrap(), 3);
}

#[tokio::test]
async fn long_topic_names_get_bad_topic_without_being_echoed() {
    let server = TestServer::start(move || App::new().service(topic_channel()));
    let mut c = server.connect("/ws").await.unwrap();
    let mut other = server.connect("/ws").await.unwrap();
    let longest = format!("room:{}", "a".repeat(251));
    assert_eq!(longest.len(), 256, "the default limit");
    subscribe(&mut c, &longest).await.unwrap();

    let too_long = format!("room:{}", "b".repeat(252));
    let (code, message, _) = error_reply(subscribe(&mut c, &too_long).await);
    assert_eq!(code, "bad_topic");
    assert!(!message.contains("bbbb"), "{message}");
    let (code, _, _) = error_reply(c.request("follow", json!(too_long)).await);
    assert_eq!(code, "bad_topic");
    let (code, _, _) = error_reply(
        c.request("track", json!({"topic": too_long, "meta": {}}))
            .await,
    );
    assert_eq!(code, "bad_topic");
    assert_eq!(other.request("echo", json!("ok")).await.unwrap(), "ok");
    // Refused topics were not recorded.
    assert_eq!(c.request("follow", json!("room:x")).await.unwrap(), 2);
}

#[tokio::test]
async fn large_presence_metadata_gets_presence_too_large() {
    let server = TestServer::start(move || App::new().service(topic_channel()));
    let mut c = server.connect("/ws").await.unwrap();
    let mut other = server.connect("/ws").await.unwrap();
    // Subscribe with presence: the channel's rule gives `room:big*` 5000 bytes of metadata.
    let (code, _, _) = error_reply(subscribe(&mut c, "room:big").await);
    assert_eq!(code, "presence_too_large");
    subscribe(&mut c, "room:small").await.unwrap();

    let big = json!({ "pad": "x".repeat(4096) });
    let (code, _, _) = error_reply(
        c.request("track", json!({"topic": "room:t", "meta": big}))
            .await,
    );
    assert_eq!(code, "presence_too_large");
    let fits = json!({ "pad": "x".repeat(4000) });
    c.request("track", json!({"topic": "room:t", "meta": fits}))
        .await
        .unwrap();
    assert_eq!(other.request("echo", json!("ok")).await.unwrap(), "ok");
    // Only the topics that were accepted are held.
    assert_eq!(c.request("follow", json!("room:small")).await.unwrap(), 2);
}

/// Error frames cut what they echo of the client's text: a 60 KB route name is not sent back.
#[tokio::test]
async fn error_frames_echo_at_most_128_bytes_of_client_text() {
    let server = TestServer::start(move || App::new().service(topic_channel()));
    let mut c = server.connect("/ws").await.unwrap();
    let mut other = server.connect("/ws").await.unwrap();
    let route = "r".repeat(60_000);
    c.send_json(&json!({"type": route, "ref": 1}))
        .await
        .unwrap();
    let (code, message, frame) = error_reply(reply_result(c.reply_to(&json!(1)).await.unwrap()));
    assert_eq!(code, "unknown_route");
    assert!(message.len() < 200 && message.contains('…'), "{message}");
    assert!(frame.to_string().len() < 300, "{frame}");
    // Without a `ref`, the frame would name the route: an over-long one is left out.
    c.send_json(&json!({"type": route})).await.unwrap();
    let frame = c.recv_json().await.unwrap();
    assert_eq!(frame["error"]["code"], "unknown_route", "{frame}");
    assert!(frame.get("type").is_none(), "{frame}");
    assert!(frame.to_string().len() < 300, "{frame}");
    // A short unknown route is still named in full.
    c.send_json(&json!({"type": "nope"})).await.unwrap();
    let frame = c.recv_json().await.unwrap();
    assert_eq!(frame["type"], "nope", "{frame}");

    // A topic no rule lets clients join is named in the refusal, cut too.
    let topic = format!("private:{}", "é".repeat(100));
    let (code, message, _) = error_reply(subscribe(&mut c, &topic).await);
    assert_eq!(code, "forbidden");
    assert!(message.len() < 200 && message.contains('…'), "{message}");
    assert_eq!(other.request("echo", json!("ok")).await.unwrap(), "ok");
}
