//! The HTTP transport (`docs/http-transport.md`) with real clients: a Server-Sent Events
//! stream read from a raw socket and upstream `POST`s (`switchboard_suite::sse`). The same
//! channels as over WebSocket: request/reply, topics, presence, recovery, sessions, lifecycle
//! hooks exactly once, heartbeat and idle timeout, drain; hostile input (bad secrets, missing
//! headers, closed connections, oversized bodies, out-of-order and duplicate batches, a
//! stream nobody reads, foreign origins); and two nodes on Redis, the stream on one and its
//! `POST`s on the other (and the same on NATS).

use std::sync::Mutex;
use std::time::Duration;

use actix_web::{web, App};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchboard::drain::Drain;
use switchboard::engine::{HistoryConfig, MemoryEngine};
use switchboard::prelude::*;
use switchboard::testing::TestServer;
use switchboard::{ChannelConfig, SlowConsumerPolicy};
use switchboard_suite::http::{try_request, Response};
use switchboard_suite::rooms::{self, User};
use switchboard_suite::sse::SseClient;
use switchboard_suite::{until, NatsServer, RedisServer, Wait};

/// Disconnect handlers that ran, by connection.
#[derive(Default)]
struct Left(Mutex<Vec<ConnectionId>>);

impl Left {
    fn count(&self, id: &str) -> usize {
        let id: ConnectionId = id.parse().unwrap();
        self.0.lock().unwrap().iter().filter(|x| **x == id).count()
    }
}

#[switchboard::on_disconnect]
async fn log_left(ch: Channel<User>, log: web::Data<Left>) {
    log.0.lock().unwrap().push(ch.id());
}

/// The rooms app with echo, binary and a disconnect log; `room:h*` keeps history.
fn route() -> ChannelRoute<User> {
    rooms::route()
        .message(switchboard_suite::handlers::echo)
        .on_binary(switchboard_suite::handlers::reverse)
        .on_disconnect(log_left)
}

struct App1 {
    srv: TestServer,
    hub: Hub,
    left: web::Data<Left>,
}

fn serve(route: ChannelRoute<User>) -> App1 {
    let hub = Hub::with_engine(
        MemoryEngine::builder()
            .history("room:h*", HistoryConfig::last(50))
            .build(),
    );
    let left = web::Data::new(Left::default());
    let (h, l) = (hub.clone(), left.clone());
    let srv = TestServer::build(move || {
        App::new()
            .app_data(h.clone())
            .app_data(l.clone())
            .service(route.clone())
    })
    .workers(2)
    .start();
    App1 { srv, hub, left }
}

async fn open(app: &App1, name: &str) -> SseClient {
    SseClient::open(app.srv.addr(), &format!("/ws?name={name}"))
        .await
        .unwrap_or_else(|r| panic!("stream refused: {}", r.text))
}

fn error_code(reply: &Value) -> &str {
    reply["error"]["code"].as_str().unwrap_or_default()
}

/// A raw request, as it came back.
async fn req(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn body_code(r: &Response) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn requests_get_their_replies_on_the_stream() {
    let app = serve(route());
    let mut c = open(&app, "ann").await;
    assert_eq!(c.header("content-type"), Some("text/event-stream"));
    assert_eq!(c.header("cache-control"), Some("no-cache, no-transform"));
    assert_eq!(c.header("x-accel-buffering"), Some("no"));
    assert_eq!(c.secret.len(), 43, "256 bits of base64url");
    assert_eq!(c.ping_ms, 30_000);
    assert_eq!(c.request("whoami", Value::Null).await["data"], json!(c.id));
    let reply = c.request("echo", json!({"hi": [1, "two\nlines"]})).await;
    assert_eq!(
        reply,
        json!({"ref": 2, "ok": true, "data": {"hi": [1, "two\nlines"]}})
    );
    let reply = c.request("nope", Value::Null).await;
    assert_eq!(error_code(&reply), "unknown_route");
    // A batch: each frame handled like a WebSocket text frame, replies in order.
    let frames: Vec<Value> = (10..15)
        .map(|r| json!({"type": "echo", "ref": r, "data": r}))
        .collect();
    assert_eq!(c.send(&frames).await.status, 204);
    for r in 10..15 {
        assert_eq!(
            c.recv_json().await,
            json!({"ref": r, "ok": true, "data": r})
        );
    }
    // An empty batch is a valid heartbeat answer.
    assert_eq!(c.send(&[]).await.status, 204);
    // A binary frame: application/octet-stream, answered with an `event: binary`.
    let r = c.send_binary(b"\x00\x01abc").await;
    assert_eq!(r.status, 204, "{}", r.text);
    let e = c.recv().await.unwrap();
    assert_eq!(e.event, "binary");
    assert_eq!(e.data, "Y2JhAQA="); // "cba\x01\x00", standard base64
                                    // The same connection as the hub sees it.
    assert!(app.hub.connection(c.id.parse().unwrap()).is_some());
}

#[tokio::test]
async fn topics_and_presence_work_across_transports() {
    let app = serve(route());
    let mut ann = open(&app, "ann").await;
    let joined = ann.request("subscribe", json!({"topic": "room:x"})).await;
    assert_eq!(joined["ok"], true, "{joined}");
    let state = ann.recv_event("presence_state").await;
    assert!(state["data"].get("ann").is_some(), "{state}");
    // A WebSocket client on the same topic.
    let mut bob = app.srv.connect("/ws?name=bob").await.unwrap();
    bob.request("subscribe", json!({"topic": "room:x"}))
        .await
        .unwrap();
    loop {
        let diff = ann.recv_event("presence_diff").await;
        if diff["data"]["joins"].get("bob").is_some() {
            break;
        }
    }
    bob.request("say", json!({"topic": "room:x", "text": "hi ann"}))
        .await
        .unwrap();
    let said = ann.recv_event("said").await;
    assert_eq!(said["data"], json!({"from": "bob", "text": "hi ann"}));
    let reply = ann
        .request("say", json!({"topic": "room:x", "text": "hi bob"}))
        .await;
    assert_eq!(reply["ok"], true);
    // Bob hears his own first (`say` includes the sender), then Ann's.
    assert_eq!(bob.recv_event("said").await.unwrap()["from"], "bob");
    let said = bob.recv_event("said").await.unwrap();
    assert_eq!(said, json!({"from": "ann", "text": "hi bob"}));
    let presence = app.hub.presence("room:x").await.unwrap();
    assert!(presence.contains_key("ann") && presence.contains_key("bob"));
    // The stream's connection leaves presence when it goes.
    assert_eq!(ann.delete().await.status, 204);
    assert_eq!(ann.recv_close().await.0, 1000);
    loop {
        let diff = bob.recv_event("presence_diff").await.unwrap();
        if diff["leaves"].get("ann").is_some() {
            break;
        }
    }
}

#[tokio::test]
async fn a_new_stream_recovers_what_it_missed() {
    let app = serve(route());
    let mut pub_ = app.srv.connect("/ws?name=pub").await.unwrap();
    let mut a = open(&app, "ann").await;
    let joined = a.request("subscribe", json!({"topic": "room:h1"})).await;
    let epoch = joined["data"]["epoch"].as_str().unwrap().to_owned();
    pub_.request("burst", json!({"topic": "room:h1", "n": 3}))
        .await
        .unwrap();
    let mut last = 0;
    for i in 0..3 {
        let d = a.recv_event("n").await;
        assert_eq!(d["data"]["i"], i);
        last = d["seq"].as_u64().unwrap();
    }
    drop(a);
    pub_.request("burst", json!({"topic": "room:h1", "n": 5}))
        .await
        .unwrap();
    let mut a = open(&app, "ann").await;
    let reply = a
        .request(
            "subscribe",
            json!({"topic": "room:h1", "recover": {"epoch": epoch, "seq": last}}),
        )
        .await;
    assert_eq!(reply["data"]["recovered"], true, "{reply}");
    for i in 0..5 {
        let d = a.recv_event("n").await;
        assert_eq!(d["data"]["i"], i, "missed publications replayed in order");
        assert_eq!(d["seq"], last + 1 + i);
    }
}

// ---- a stateful session over HTTP ---------------------------------------------------------

#[switchboard::session]
struct Counter {
    name: String,
    n: u32,
}

#[derive(Deserialize)]
struct Add {
    n: u32,
}

#[derive(Serialize)]
struct Total {
    name: String,
    n: u32,
}

#[switchboard::session_handlers]
impl Counter {
    async fn create(req: ConnectRequest) -> Result<Self, ChannelError> {
        Ok(Counter {
            name: req.query("name").unwrap_or("anon").to_owned(),
            n: 0,
        })
    }

    #[message("add")]
    async fn add(&mut self, a: Add) -> Result<Total, ChannelError> {
        self.n += a.n;
        Ok(Total {
            name: self.name.clone(),
            n: self.n,
        })
    }
}

#[tokio::test]
async fn a_session_keeps_its_state_over_http() {
    let srv =
        TestServer::start(|| App::new().service(ChannelRoute::session::<Counter>("/ws/count")));
    let mut c = SseClient::open(srv.addr(), "/ws/count?name=ann")
        .await
        .unwrap();
    assert_eq!(
        c.request("add", json!({"n": 3})).await["data"],
        json!({"name": "ann", "n": 3})
    );
    assert_eq!(c.request("add", json!({"n": 4})).await["data"]["n"], 7);
    // A batch goes through the session one message at a time, in order.
    let frames: Vec<Value> = (1..=3)
        .map(|r| json!({"type": "add", "ref": 100 + r, "data": {"n": 1}}))
        .collect();
    assert_eq!(c.send(&frames).await.status, 204);
    for r in 1..=3u32 {
        let v = c.recv_json().await;
        assert_eq!(v["ref"], 100 + r);
        assert_eq!(v["data"]["n"], 7 + r);
    }
}

// ---- lifecycle ----------------------------------------------------------------------------

#[tokio::test]
async fn disconnect_runs_once_however_the_stream_ends() {
    // A client that goes away is noticed at the next write (actix-web reads nothing from a
    // connection while it streams a response): the ping, at the latest.
    let app = serve(route().heartbeat(Duration::from_millis(200), Duration::from_secs(30)));
    // The client goes away (the response body is dropped).
    let c = open(&app, "gone").await;
    let id = c.id.clone();
    drop(c);
    until("the disconnect of a client that went away", || async {
        app.left.count(&id) == 1
    })
    .await;
    // The client closes with DELETE: a close event 1000, then the end of the stream.
    let mut c = open(&app, "deleter").await;
    assert_eq!(c.delete().await.status, 204);
    assert_eq!(c.recv_close().await, (1000, String::new()));
    until("the disconnect after DELETE", || async {
        app.left.count(&c.id) == 1
    })
    .await;
    // Closed: upstream requests find no connection.
    let r = c.send(&[json!({"type": "echo", "ref": 1})]).await;
    assert_eq!(
        (r.status, body_code(&r).as_str()),
        (404, "unknown_connection")
    );
    assert_eq!(c.delete().await.status, 404);
    // The server closes it.
    let mut c = open(&app, "kicked").await;
    app.hub
        .disconnect(c.id.parse().unwrap(), Some(4000), "bye")
        .unwrap();
    assert_eq!(c.recv_close().await, (4000, "bye".to_owned()));
    until("the disconnect after the server's close", || async {
        app.left.count(&c.id) == 1
    })
    .await;
    // Each ran exactly once, and nothing is left in the hub.
    assert_eq!(app.left.count(&id), 1);
    until("the hub to be empty", || async {
        app.hub.connection_count() == 0
    })
    .await;
}

#[tokio::test]
async fn pings_flow_and_a_silent_client_times_out() {
    let app = serve(route().heartbeat(Duration::from_millis(150), Duration::from_millis(700)));
    let mut c = open(&app, "pinged").await;
    assert_eq!(c.ping_ms, 150);
    // Answering each ping with an empty batch keeps the connection open well past the idle
    // timeout.
    for _ in 0..8 {
        let e = c.next().await.unwrap();
        assert_eq!(e.event, "ping", "{e:?}");
        assert_eq!(c.send(&[]).await.status, 204);
    }
    // Silence: closed with 1001.
    assert_eq!(c.recv_close().await, (1001, "idle timeout".to_owned()));
    until("the disconnect", || async { app.left.count(&c.id) == 1 }).await;
}

#[actix_rt::test]
async fn a_drain_closes_streams_with_1012() {
    let app = serve(route());
    let mut a = open(&app, "a").await;
    let mut b = open(&app, "b").await;
    let drain = Drain::new(app.hub.clone())
        .batch_size(10)
        .window(Duration::from_secs(5));
    let running = actix_rt::spawn(async move { drain.run().await });
    assert_eq!(a.recv_close().await, (1012, "service restart".to_owned()));
    assert_eq!(b.recv_close().await, (1012, "service restart".to_owned()));
    match SseClient::open(app.srv.addr(), "/ws?name=late").await {
        Err(r) => {
            assert_eq!(r.status, 503);
            assert_eq!(body_code(&r), "draining");
        }
        Ok(_) => panic!("a stream opened during the drain"),
    }
    let report = running.await.unwrap();
    assert_eq!((report.closed, report.remaining), (2, 0));
    until("both disconnects", || async {
        app.left.count(&a.id) == 1 && app.left.count(&b.id) == 1
    })
    .await;
}

// ---- hostile input ------------------------------------------------------------------------

#[tokio::test]
async fn upstream_requests_must_prove_their_connection() {
    let app = serve(route());
    let mut c = open(&app, "ann").await;
    let frame = br#"{"type":"echo","ref":1}"#;
    // A wrong secret (right shape), a missing one, a malformed one.
    let wrong = format!(
        "{}{}",
        if c.secret.starts_with('A') { "B" } else { "A" },
        &c.secret[1..]
    );
    let r = c
        .post_raw(Some(0), "application/json", frame, Some(&wrong))
        .await;
    assert_eq!((r.status, body_code(&r).as_str()), (403, "forbidden"));
    let r = c.post_raw(Some(0), "application/json", frame, None).await;
    assert_eq!((r.status, body_code(&r).as_str()), (400, "bad_body"));
    let r = c
        .post_raw(Some(0), "application/json", frame, Some("not base64url!"))
        .await;
    assert_eq!(r.status, 400);
    // No batch number.
    let secret = c.secret.clone();
    let r = c
        .post_raw(None, "application/json", frame, Some(&secret))
        .await;
    assert_eq!((r.status, body_code(&r).as_str()), (400, "bad_body"));
    // No connection id, or one that is not open.
    let addr = app.srv.addr();
    let r = req(
        addr,
        "POST",
        "/ws",
        &[("Switchboard-Secret", &secret), ("Switchboard-Seq", "0")],
        frame,
    )
    .await;
    assert_eq!(r.status, 400);
    let other = ConnectionId::next().to_string();
    let r = req(
        addr,
        "POST",
        "/ws",
        &[
            ("Switchboard-Connection", &other),
            ("Switchboard-Secret", &secret),
            ("Switchboard-Seq", "0"),
        ],
        frame,
    )
    .await;
    assert_eq!(
        (r.status, body_code(&r).as_str()),
        (404, "unknown_connection")
    );
    // A WebSocket connection's id cannot be posted to, whatever the secret.
    let mut ws = app.srv.connect("/ws?name=ws").await.unwrap();
    let ws_id = ws.request("whoami", Value::Null).await.unwrap();
    let r = req(
        addr,
        "POST",
        "/ws",
        &[
            ("Switchboard-Connection", ws_id.as_str().unwrap()),
            ("Switchboard-Secret", &secret),
            ("Switchboard-Seq", "0"),
        ],
        frame,
    )
    .await;
    assert_eq!(r.status, 404);
    // None of that reached the connection: its first batch is still number 0.
    assert_eq!(
        c.request("echo", json!("still here")).await["data"],
        "still here"
    );
}

#[tokio::test]
async fn bodies_are_bounded() {
    let app = serve(
        route()
            .http_max_body(2048)
            .http_max_frames(5)
            .max_frame_size(512),
    );
    let mut c = open(&app, "ann").await;
    let secret = c.secret.clone();
    let post = |body: Vec<u8>| {
        let c = &c;
        let secret = secret.clone();
        async move {
            c.post_raw(Some(0), "application/json", &body, Some(&secret))
                .await
        }
    };
    let big = json!([{"type": "echo", "data": "x".repeat(3000)}]).to_string();
    let r = post(big.into_bytes()).await;
    assert_eq!(
        (r.status, body_code(&r).as_str()),
        (413, "payload_too_large")
    );
    let many: Vec<Value> = (0..6).map(|r| json!({"type": "echo", "ref": r})).collect();
    let r = post(serde_json::to_vec(&many).unwrap()).await;
    assert_eq!((r.status, body_code(&r).as_str()), (413, "too_many_frames"));
    let wide = json!([{"type": "echo", "data": "x".repeat(600)}]).to_string();
    let r = post(wide.into_bytes()).await;
    assert_eq!(
        (r.status, body_code(&r).as_str()),
        (413, "payload_too_large")
    );
    for bad in [&b"not json"[..], b"[1,2]", b"[{}", b"\"text\""] {
        let r = post(bad.to_vec()).await;
        assert_eq!(
            (r.status, body_code(&r).as_str()),
            (400, "bad_body"),
            "{bad:?}"
        );
    }
    let r = c
        .post_raw(
            Some(0),
            "application/octet-stream",
            &[0u8; 600],
            Some(&secret),
        )
        .await;
    assert_eq!(r.status, 413);
    // Refused bodies used no batch number.
    assert_eq!(c.request("echo", json!(1)).await["data"], 1);
}

#[tokio::test]
async fn batches_are_handled_in_seq_order_once() {
    let app = serve(route().max_pending_batches(2));
    let mut c = open(&app, "ann").await;
    let secret = c.secret.clone();
    let frame = |r: &str| format!(r#"{{"type":"echo","ref":"{r}","data":"{r}"}}"#);
    async fn post(c: &SseClient, secret: &str, seq: u64, body: String) -> u16 {
        c.post_raw(Some(seq), "application/json", body.as_bytes(), Some(secret))
            .await
            .status
    }
    // 2 and 1 come before 0: they wait for it.
    assert_eq!(post(&c, &secret, 2, frame("c")).await, 204);
    assert_eq!(post(&c, &secret, 1, frame("b")).await, 204);
    // The window holds 2: a third early batch is refused.
    let r = c
        .post_raw(
            Some(3),
            "application/json",
            frame("d").as_bytes(),
            Some(&secret),
        )
        .await;
    assert_eq!(
        (r.status, body_code(&r).as_str()),
        (429, "too_many_pending")
    );
    // A duplicate of a waiting batch is acknowledged and ignored.
    assert_eq!(post(&c, &secret, 1, frame("b")).await, 204);
    assert_eq!(post(&c, &secret, 0, frame("a")).await, 204);
    for r in ["a", "b", "c"] {
        assert_eq!(c.recv_json().await["ref"], r);
    }
    // Duplicates of handled batches too; the refused 3 can be sent again.
    assert_eq!(post(&c, &secret, 0, frame("a")).await, 204);
    assert_eq!(post(&c, &secret, 2, frame("c")).await, 204);
    assert_eq!(post(&c, &secret, 3, frame("d")).await, 204);
    assert_eq!(c.recv_json().await["ref"], "d", "no duplicate replies");
}

#[tokio::test]
async fn a_stream_nobody_reads_is_closed_and_forgotten() {
    let cfg = ChannelConfig {
        outbound_capacity: 32,
        slow_consumer: SlowConsumerPolicy::Close { code: 1013 },
        close_timeout: Duration::from_millis(300),
        ..ChannelConfig::default()
    };
    let app = serve(route().config(cfg));
    // Opened, joined, then never read again.
    let mut idle = SseClient::open_small(app.srv.addr(), "/ws?name=idle", 16 * 1024)
        .await
        .unwrap();
    let id: ConnectionId = idle.id.parse().unwrap();
    let joined = idle
        .request("subscribe", json!({"topic": "room:flood"}))
        .await;
    assert_eq!(joined["ok"], true, "{joined}");
    let mut publisher = app.srv.connect("/ws?name=pub").await.unwrap();
    publisher
        .request("subscribe", json!({"topic": "room:other"}))
        .await
        .unwrap();
    // 16 KiB publications until the server gives up on the idle stream; its queue never
    // holds more than its bound meanwhile.
    let mut sent = 0;
    while app.hub.connection(id).is_some() {
        assert!(
            sent < 4000,
            "still open after {sent} publications of 16 KiB"
        );
        publisher
            .request(
                "burst",
                json!({"topic": "room:flood", "n": 10, "pad": 16 * 1024}),
            )
            .await
            .unwrap();
        sent += 10;
        if let Some(info) = app.hub.connection(id) {
            assert!(info.queued <= 64, "queue bounded: {}", info.queued);
        }
    }
    until("the idle stream's disconnect", || async {
        app.left.count(&idle.id) == 1
    })
    .await;
    // The publisher was never held up.
    assert_eq!(
        publisher.request("echo", json!("ok")).await.unwrap(),
        json!("ok")
    );
    drop(idle);
}

#[tokio::test]
async fn foreign_origins_are_refused() {
    let app = serve(route().allowed_origins(["https://app.example"]));
    let addr = app.srv.addr();
    let evil = [("Origin", "https://evil.example")];
    match SseClient::open_with(addr, "/ws?name=x", &evil).await {
        Err(r) => assert_eq!((r.status, body_code(&r).as_str()), (403, "forbidden")),
        Ok(_) => panic!("a foreign origin opened a stream"),
    }
    // An allowed origin may read the stream (CORS).
    let c = SseClient::open_with(addr, "/ws?name=ok", &[("Origin", "https://app.example")])
        .await
        .unwrap_or_else(|r| panic!("{}", r.text));
    assert_eq!(
        c.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let secret = c.secret.clone();
    let r = req(
        addr,
        "POST",
        "/ws",
        &[
            ("Origin", "https://evil.example"),
            ("Switchboard-Connection", &c.id),
            ("Switchboard-Secret", &secret),
            ("Switchboard-Seq", "0"),
        ],
        b"[]",
    )
    .await;
    assert_eq!((r.status, body_code(&r).as_str()), (403, "forbidden"));
    let r = req(addr, "OPTIONS", "/ws", &evil, b"").await;
    assert_eq!(r.status, 403);
    let r = req(
        addr,
        "OPTIONS",
        "/ws",
        &[("Origin", "https://app.example")],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("switchboard-secret")));
}

#[tokio::test]
async fn the_fallback_can_be_turned_off() {
    let app = serve(route().http_fallback(false));
    match SseClient::open(app.srv.addr(), "/ws").await {
        Err(r) => assert_eq!(r.status, 400),
        Ok(_) => panic!("a stream opened on a channel without the HTTP transport"),
    }
    let r = req(app.srv.addr(), "POST", "/ws", &[], b"[]").await;
    assert_eq!(r.status, 405);
    // WebSockets as before.
    let mut ws = app.srv.connect("/ws").await.unwrap();
    assert_eq!(ws.request("echo", json!(1)).await.unwrap(), json!(1));
}

// ---- two nodes on Redis, and on NATS --------------------------------------------------------

struct Node {
    srv: TestServer,
    left: web::Data<Left>,
}

fn node_on(engine: impl switchboard::engine::Engine) -> Node {
    let hub = Hub::with_engine(engine);
    let left = web::Data::new(Left::default());
    let (h, l) = (hub.clone(), left.clone());
    let srv = TestServer::build(move || {
        App::new()
            .app_data(h.clone())
            .app_data(l.clone())
            .service(route())
    })
    .workers(2)
    .start();
    Node { srv, left }
}

async fn redis_node(redis: &RedisServer) -> Node {
    let engine = switchboard::engine::redis::RedisEngine::builder(redis.url())
        .node_timeout(Duration::from_secs(3))
        .connect()
        .await
        .expect("connect to redis");
    node_on(engine)
}

async fn nats_node(nats: &NatsServer) -> Node {
    let engine = switchboard::engine::nats::NatsEngine::builder(nats.url())
        .node_timeout(Duration::from_secs(3))
        .connect()
        .await
        .expect("connect to nats");
    node_on(engine)
}

#[tokio::test]
async fn posts_to_another_node_reach_the_stream_in_order() {
    let Some(redis) = RedisServer::start("http_two_nodes") else {
        return;
    };
    let (a, b) = (redis_node(&redis).await, redis_node(&redis).await);
    stream_on_a_posts_on_b(&a, &b).await;
}

#[tokio::test]
async fn posts_to_another_node_reach_the_stream_in_order_on_nats() {
    let Some(nats) = NatsServer::start("http_two_nodes_nats") else {
        return;
    };
    let (a, b) = (nats_node(&nats).await, nats_node(&nats).await);
    stream_on_a_posts_on_b(&a, &b).await;
}

/// A stream on node A, its `POST`s through B (and alternating), checked through presence.
async fn stream_on_a_posts_on_b(a: &Node, b: &Node) {
    let mut c = SseClient::open(a.srv.addr(), "/ws?name=ann").await.unwrap();
    // Every POST through B: handed to A through Redis, answered on A's stream.
    c.via(b.srv.addr());
    assert_eq!(c.request("whoami", Value::Null).await["data"], json!(c.id));
    let frames: Vec<Value> = (0..20)
        .map(|r| json!({"type": "echo", "ref": r, "data": r}))
        .collect();
    assert_eq!(c.send(&frames).await.status, 204);
    for r in 0..20 {
        assert_eq!(c.recv_json().await["ref"], r);
    }
    // Alternating A and B, one POST at a time: batches stay in order.
    for i in 0..20u64 {
        c.via(if i % 2 == 0 {
            a.srv.addr()
        } else {
            b.srv.addr()
        });
        let r = c
            .send(&[json!({"type": "echo", "ref": 100 + i, "data": i})])
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
    }
    for i in 0..20u64 {
        assert_eq!(c.recv_json().await["ref"], 100 + i, "in seq order");
    }
    // A binary frame through B.
    c.via(b.srv.addr());
    let r = c.send_binary(b"\x00\x01abc").await;
    assert_eq!(r.status, 204, "{}", r.text);
    let e = c.recv().await.unwrap();
    assert_eq!((e.event.as_str(), e.data.as_str()), ("binary", "Y2JhAQA="));
    // B checks the secret and the connection's existence through presence.
    // The right shape, one character off.
    let wrong = format!(
        "{}{}",
        if c.secret.starts_with('A') { "B" } else { "A" },
        &c.secret[1..]
    );
    let r = c
        .post_raw(Some(c.seq), "application/json", b"[]", Some(&wrong))
        .await;
    assert_eq!((r.status, body_code(&r).as_str()), (403, "forbidden"));
    let r = req(
        b.srv.addr(),
        "POST",
        "/ws",
        &[
            ("Switchboard-Connection", &ConnectionId::next().to_string()),
            ("Switchboard-Secret", &c.secret),
            ("Switchboard-Seq", "0"),
        ],
        b"[]",
    )
    .await;
    assert_eq!(
        (r.status, body_code(&r).as_str()),
        (404, "unknown_connection")
    );
    // A DELETE through B closes the stream on A, once.
    assert_eq!(c.delete().await.status, 204);
    assert_eq!(c.recv_close().await, (1000, String::new()));
    until("the disconnect on A", || async { a.left.count(&c.id) == 1 }).await;
    assert_eq!(b.left.count(&c.id), 0);
    // Gone from presence: B now answers 404.
    Wait::up_to(Duration::from_secs(5))
        .until("B to forget the connection", || {
            let c = &c;
            async move {
                c.post_raw(Some(1000), "application/json", b"[]", Some(&c.secret))
                    .await
                    .status
                    == 404
            }
        })
        .await;
}
