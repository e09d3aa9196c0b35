//! Gateway mode end to end: a gateway channel (in a test server) forwarding its clients' events
//! to a real function server process (`examples/function.rs`), which answers through the
//! gateway's connections API. Plus the event's shape, checked against a stand-in function.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use switchboard::prelude::*;
use switchboard::serverless::connections_api::{ConnectionsApi, ConnectionsClient};
use switchboard::serverless::function::{Event, EventType};
use switchboard::serverless::gateway::{Gateway, GatewaySession};
use switchboard::testing::{Frame, TestClient, TestServer};
use switchboard_suite::{
    connect_named, error_reply, example_binary, percent, pushes_before_reply, raw_http,
    raw_http_with, rejected_status, spawn_listening, Proc,
};

const FN_TOKEN: &str = "fn-token";
const API_TOKEN: &str = "api-token";
/// The timeout of the `/ws/slow` channel, and how long its `slow` calls take: far apart, so
/// that the timeout fires however loaded the machine is.
const SHORT_TIMEOUT: Duration = Duration::from_millis(500);
const SLOW_MS: u64 = 10_000;

/// Starts the function example on a port of its choosing (`--port 0`) and reads the address
/// it prints once bound.
fn spawn_function(connections_url: &str) -> (Proc, SocketAddr) {
    let bin = example_binary(
        "function",
        &["examples/function.rs", "framework/src", "macros/src"],
    );
    let mut cmd = Command::new(bin);
    cmd.args([
        "--port",
        "0",
        "--connections-url",
        connections_url,
        "--connections-token",
        API_TOKEN,
        "--token",
        FN_TOKEN,
    ])
    .env("RUST_LOG", "warn");
    let (proc, url) = spawn_listening(cmd);
    let addr = url
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected address from the function: {url:?}"));
    (proc, addr)
}

/// Answers in-process on the short-timeout channel: shows the connection goes on after a
/// timeout without depending on how fast the function answers.
#[switchboard::message("ping")]
async fn ping(data: Value) -> Result<Value, ChannelError> {
    Ok(data)
}

/// The gateway (a test server with the channels), its connections API (another test server
/// over the same hub) and the function process.
///
/// The API is served apart from the channels only to order the start-up without guessing a
/// free port: the function needs the API's address, the channels need the function's.
struct Setup {
    gateway: TestServer,
    api: TestServer,
    hub: Hub,
    function: SocketAddr,
    _function: Proc,
}

fn start() -> Setup {
    let hub = Hub::new();
    let api_hub = hub.clone();
    let api = TestServer::start(move || {
        App::new()
            .app_data(api_hub.clone())
            .service(ConnectionsApi::new().bearer_token(API_TOKEN))
    });
    let (proc, faddr) = spawn_function(&api.url(""));
    let function = format!("http://{faddr}");
    let app_hub = hub.clone();
    let gateway = TestServer::start(move || {
        let to = |path: &str| {
            Gateway::new(format!("{function}{path}"))
                .function_token(FN_TOKEN)
                .timeout(Duration::from_secs(5))
        };
        App::new()
            .app_data(app_hub.clone())
            .service(to("/fn").routes(["echo", "whoami"]).channel("/ws"))
            // Only this channel has a short timeout (and no $connect to wait for).
            .service(
                to("/fn")
                    .timeout(SHORT_TIMEOUT)
                    .connect_events(false)
                    .disconnect_events(false)
                    .channel("/ws/slow")
                    .message(ping),
            )
            .service(to("/fail").connect_events(false).channel("/ws/fail"))
            // Nothing listens on port 1.
            .service(
                Gateway::new("http://127.0.0.1:1/fn")
                    .connect_events(false)
                    .channel("/ws/down"),
            )
            .service(Gateway::new("http://127.0.0.1:1/fn").channel("/ws/down-connect"))
    });
    Setup {
        gateway,
        api,
        hub,
        function: faddr,
        _function: proc,
    }
}

impl Setup {
    async fn connect(&self, name: &str) -> TestClient {
        connect_named(&self.gateway, name).await
    }
}

async fn id_of(c: &mut TestClient) -> ConnectionId {
    let me = c.request("whoami", json!(null)).await.unwrap();
    me["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_message_is_handled_by_the_function_and_its_reply_relayed() {
    let s = start();
    let mut ann = s.connect("ann").await;
    // With a ref: the reply to it.
    assert_eq!(
        ann.request("echo", json!({"a": [1, 2]})).await.unwrap(),
        json!({"a": [1, 2]})
    );
    // Without a ref: the reply frame of a message without ref, as in-process.
    ann.push("echo", json!("hi")).await.unwrap();
    assert_eq!(
        ann.recv_json().await.unwrap(),
        json!({"type": "echo", "data": "hi"})
    );
    // The session from the function's on_connect, and the connection id, in later events.
    let me = ann.request("whoami", json!(null)).await.unwrap();
    assert_eq!(me["name"], "ann");
    let id: ConnectionId = me["id"].as_str().unwrap().parse().unwrap();
    assert!(s.hub.connection(id).is_some(), "the id is the gateway's");
    // Payload errors are the same error frames as in-process.
    let (code, _, frame) = error_reply(ann.request("join", json!({"room": 5})).await);
    assert_eq!(code, "bad_payload");
    assert_eq!(frame["error"]["field"], "room");
}

#[tokio::test]
async fn unrouted_messages_go_to_default() {
    let s = start();
    let mut ann = s.connect("ann").await;
    assert_eq!(
        ann.request("nothing_here", json!(null)).await.unwrap(),
        "no route nothing_here"
    );
}

#[tokio::test]
async fn the_function_pushes_through_the_connections_api() {
    let s = start();
    let mut ann = s.connect("ann").await;
    let mut bob = s.connect("bob").await;
    let ann_id = id_of(&mut ann).await;
    // To another connection.
    bob.request("tell", json!({"to": ann_id, "text": "psst"}))
        .await
        .unwrap();
    assert_eq!(
        ann.recv_event("told").await.unwrap(),
        json!({"from": "bob", "text": "psst"})
    );
    // To the caller: the pushes arrive before the reply.
    pushes_before_reply(&mut bob, 3).await;
}

#[tokio::test]
async fn subscriptions_live_in_the_gateway() {
    let s = start();
    let mut ann = s.connect("ann").await;
    let mut bob = s.connect("bob").await;
    assert_eq!(
        ann.request("join", json!({"room": "rust"})).await.unwrap(),
        "rust"
    );
    assert_eq!(s.hub.subscriber_count("room:rust").await.unwrap(), 1);
    let ann_id = id_of(&mut ann).await;
    assert_eq!(
        s.hub.to(ann_id).subscriptions().await.unwrap(),
        vec!["room:rust".to_owned()]
    );
    bob.request("say", json!({"room": "rust", "text": "hello"}))
        .await
        .unwrap();
    assert_eq!(
        ann.recv_json().await.unwrap(),
        json!({"topic": "room:rust", "event": "said", "data": {"from": "bob", "text": "hello"}})
    );
    // Unsubscribing does not wait in the handler, but is done before the reply.
    ann.request("leave", json!({"room": "rust"})).await.unwrap();
    assert_eq!(s.hub.subscriber_count("room:rust").await.unwrap(), 0);
}

#[tokio::test]
async fn connect_rejected_by_the_function() {
    let s = start();
    match s.gateway.connect("/ws").await {
        Err(switchboard::testing::TestError::Rejected { status, body }) => {
            assert_eq!(status, 401);
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                body,
                json!({"error": {"code": "unauthorized", "message": "pass ?name=..."}})
            );
        }
        Err(e) => panic!("expected a 401, got {e}"),
        Ok(_) => panic!("expected a 401, but it connected"),
    }
    // An unreachable $connect function refuses the upgrade too.
    assert_eq!(
        rejected_status(s.gateway.connect("/ws/down-connect").await),
        502
    );
}

#[tokio::test]
async fn disconnect_is_notified() {
    let s = start();
    let mut ann = s.connect("ann").await;
    let mut bob = s.connect("bob").await;
    bob.request("join", json!({"room": "lobby"})).await.unwrap();
    ann.request("echo", json!(1)).await.unwrap();
    ann.close().await.unwrap();
    assert_eq!(
        bob.recv_json().await.unwrap(),
        json!({"topic": "room:lobby", "event": "left", "data": {"name": "ann"}})
    );
}

#[tokio::test]
async fn timeouts_and_failures_become_error_frames() {
    let s = start();
    let mut ann = s.gateway.connect("/ws/slow").await.unwrap();
    let (code, message, _) = error_reply(ann.request("slow", json!(SLOW_MS)).await);
    assert_eq!(code, "function_timeout", "{message}");
    // The connection goes on.
    assert_eq!(ann.request("ping", json!(2)).await.unwrap(), json!(2));
    // Without a ref: an error frame naming the route.
    ann.push("slow", json!(SLOW_MS)).await.unwrap();
    let frame = ann.recv_json().await.unwrap();
    assert_eq!(frame["type"], "slow");
    assert_eq!(frame["error"]["code"], "function_timeout");

    let mut fail = s.gateway.connect("/ws/fail").await.unwrap();
    let (code, message, _) = error_reply(fail.request("echo", json!(1)).await);
    assert_eq!(code, "function_error");
    assert!(message.contains("500"), "{message}");

    let mut down = s.gateway.connect("/ws/down").await.unwrap();
    let (code, _, _) = error_reply(down.request("echo", json!(1)).await);
    assert_eq!(code, "function_unavailable");
}

/// Concurrent invocations (the function has several workers) each unsubscribing: every one is
/// answered once its own unsubscribes are done, none waits on another's.
#[tokio::test]
async fn concurrent_unsubscribes_do_not_stall_invocations() {
    const CLIENTS: usize = 6;
    const ROUNDS: usize = 5;
    let s = start();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(s.connect(&format!("c{i}")).await);
    }
    let runs = clients.iter_mut().enumerate().map(|(i, c)| async move {
        let room = json!({"room": format!("r{i}")});
        for _ in 0..ROUNDS {
            c.request("join", room.clone()).await.unwrap();
            c.request("leave", room.clone()).await.unwrap();
        }
    });
    futures_util::future::join_all(runs).await;
    for i in 0..CLIENTS {
        let topic = format!("room:r{i}");
        assert_eq!(s.hub.subscriber_count(&topic).await.unwrap(), 0, "{topic}");
    }
}

#[tokio::test]
async fn gone_connections_are_410() {
    let s = start();
    let mut ann = s.connect("ann").await;
    let mut bob = s.connect("bob").await;
    let bob_id = id_of(&mut bob).await;
    bob.close().await.unwrap();
    // The function's push to a connection that left.
    let (code, _, _) = error_reply(
        ann.request("tell", json!({"to": bob_id, "text": "hello?"}))
            .await,
    );
    assert_eq!(code, "closed");
    // The API itself.
    let api = ConnectionsClient::new(s.api.url("")).bearer_token(API_TOKEN);
    assert!(matches!(
        api.post_to_connection(bob_id, "x").await,
        Err(ChannelError::Closed)
    ));
    let (status, text) = raw_http(
        s.api.addr(),
        "GET",
        &format!("/@connections/{}", percent(&bob_id.to_string())),
    )
    .await;
    // Unauthenticated: refused before anything is looked up.
    assert_eq!(status, 403, "{text}");
}

#[tokio::test]
async fn bad_tokens_and_signatures_are_403() {
    let s = start();
    let mut ann = s.connect("ann").await;
    let id = id_of(&mut ann).await;
    for api in [
        ConnectionsClient::new(s.api.url("")).bearer_token("wrong"),
        ConnectionsClient::new(s.api.url("")),
        // This API has no access keys: signatures are refused.
        ConnectionsClient::new(s.api.url("")).sigv4("AKID", "secret", "us-east-1"),
    ] {
        match api.post_to_connection(id, "x").await {
            Err(e) => assert_eq!(e.code(), "forbidden", "{api:?}: {e}"),
            Ok(()) => panic!("{api:?} was let in"),
        }
    }
    // The function refuses events without the gateway's token.
    let event = json!({"requestContext": {"routeKey": "echo", "eventType": "MESSAGE",
        "connectionId": id.to_string()}, "body": "{\"type\":\"echo\",\"data\":1}"})
    .to_string();
    for auth in [None, Some("Bearer wrong")] {
        let (status, text) = http_post(s.function, "/fn", auth, &event).await;
        assert!(status == 401 || status == 403, "{auth:?}: {text}");
    }
    let (status, text) = http_post(s.function, "/fn", Some("Bearer fn-token"), &event).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("{\"type\":\"echo\",\"data\":1}"), "{text}");
}

/// A raw HTTP/1.1 POST of JSON; returns the status and the whole response text.
async fn http_post(
    addr: std::net::SocketAddr,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend(authorization.map(|a| ("Authorization", a)));
    raw_http_with(addr, "POST", path, &headers, body).await
}

#[tokio::test]
async fn binary_frames_and_close() {
    let s = start();
    let mut ann = s.connect("ann").await;
    ann.send_binary(&[1, 2, 3]).await.unwrap();
    assert_eq!(ann.recv().await.unwrap(), Frame::Binary(vec![3, 2, 1]));
    ann.push("bye", json!(null)).await.unwrap();
    assert_eq!(ann.recv_close().await.unwrap(), (4000, "bye".to_owned()));
}

/// An event as the stand-in function got it: its `Authorization` header and its JSON.
type Recorded = (Option<String>, Value);

/// A stand-in function that records the events it gets and answers as told.
#[derive(Clone)]
struct Recorder {
    events: Arc<Mutex<Vec<Recorded>>>,
    /// Bumped with every event recorded: what a test waits on.
    recorded: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            events: Arc::default(),
            recorded: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl Recorder {
    fn push(&self, event: Recorded) {
        self.events.lock().unwrap().push(event);
        self.recorded.send_modify(|n| *n += 1);
    }

    /// Waits (at most 10 s) until the recorded events satisfy `cond`.
    async fn wait_for(&self, what: &str, cond: impl Fn(&[Recorded]) -> bool) {
        let mut rx = self.recorded.subscribe();
        let seen = tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|_| cond(&self.events.lock().unwrap())),
        )
        .await;
        assert!(matches!(seen, Ok(Ok(_))), "timed out waiting for {what}");
    }

    /// Waits (at most 10 s) until a `$disconnect` event was recorded.
    async fn wait_for_a_disconnect(&self) {
        self.wait_for("the $disconnect event", |events| {
            events
                .iter()
                .any(|(_, e)| e["requestContext"]["eventType"] == "DISCONNECT")
        })
        .await
    }
}

async fn record(req: HttpRequest, body: web::Bytes, rec: web::Data<Recorder>) -> HttpResponse {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let event: Value = serde_json::from_slice(&body).unwrap();
    let answer = match event["requestContext"]["eventType"].as_str() {
        Some("CONNECT") if event["queryStringParameters"]["deny"] == "1" => {
            HttpResponse::Forbidden().body("no")
        }
        Some("CONNECT") => HttpResponse::Ok().json(json!({"authorizer": {"principalId": "p-1"}})),
        Some("MESSAGE") if event["body"].as_str() == Some("{\"type\":\"plain\",\"ref\":7}") => {
            HttpResponse::Ok().body("not json")
        }
        Some("MESSAGE") => HttpResponse::Ok()
            .json(json!({"seen": event["requestContext"]["routeKey"], "body": event["body"]})),
        _ => HttpResponse::Ok().finish(),
    };
    rec.push((auth, event));
    answer
}

fn recording_function(rec: &Recorder) -> TestServer {
    let data = web::Data::new(rec.clone());
    TestServer::start(move || {
        App::new()
            .app_data(data.clone())
            .route("/fn", web::post().to(record))
    })
}

#[tokio::test]
async fn events_are_shaped_like_api_gateways() {
    let rec = Recorder::default();
    let function = recording_function(&rec);
    let url = function.url("/fn");
    let hub = Hub::new();
    let h = hub.clone();
    let gateway = TestServer::start(move || {
        App::new().app_data(h.clone()).service(
            Gateway::new(url.clone())
                .function_token("t0k")
                .routes(["join"])
                .stage("prod")
                .api_id("abc123")
                .channel("/ws"),
        )
    });
    assert_eq!(
        rejected_status(gateway.connect("/ws?deny=1").await),
        403,
        "a non-2xx $connect answer rejects"
    );
    let mut c = gateway
        .connect_with("/ws?room=a%20b&x=1&x=2", &[("user-agent", "tester/1.0")])
        .await
        .unwrap();
    // Routed by name when listed, else $default; a plain body answers the `ref` as a string.
    assert_eq!(
        c.request("join", json!({"room": "a"})).await.unwrap()["seen"],
        "join"
    );
    assert_eq!(
        c.request("other", json!(null)).await.unwrap()["seen"],
        "$default"
    );
    c.send_text("{\"type\":\"plain\",\"ref\":7}").await.unwrap();
    assert_eq!(
        c.recv_json().await.unwrap(),
        json!({"ref": 7, "ok": true, "data": "not json"})
    );
    // Without a ref the body goes to the client as is.
    c.push("other", json!(null)).await.unwrap();
    assert_eq!(c.recv_json().await.unwrap()["seen"], "$default");
    // Text that is not a message goes to $default as it is, as API Gateway sends it, and the
    // answer comes back.
    for text in ["hello, not json", "{\"no\":\"route key\"}"] {
        c.send_text(text).await.unwrap();
        assert_eq!(
            c.recv_json().await.unwrap(),
            json!({"seen": "$default", "body": text}),
            "{text}"
        );
    }
    c.close().await.unwrap();
    rec.wait_for_a_disconnect().await;

    let events = rec.events.lock().unwrap().clone();
    assert!(events
        .iter()
        .all(|(auth, _)| auth.as_deref() == Some("Bearer t0k")));
    let of = |t: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|(_, e)| e["requestContext"]["eventType"] == t)
            .map(|(_, e)| e.clone())
            .collect()
    };
    let connect = &of("CONNECT")[1];
    let ctx = &connect["requestContext"];
    assert_eq!(ctx["routeKey"], "$connect");
    assert_eq!(ctx["stage"], "prod");
    assert_eq!(ctx["apiId"], "abc123");
    assert_eq!(ctx["messageDirection"], "IN");
    assert_eq!(ctx["identity"]["sourceIp"], "127.0.0.1");
    assert_eq!(ctx["identity"]["userAgent"], "tester/1.0");
    assert_eq!(ctx["domainName"], gateway.addr().to_string());
    assert!(ctx["connectedAt"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(ctx["requestTimeEpoch"].as_u64().unwrap() >= ctx["connectedAt"].as_u64().unwrap());
    assert!(ctx["requestTime"].as_str().unwrap().ends_with(" +0000"));
    assert!(!ctx["requestId"].as_str().unwrap().is_empty());
    assert_eq!(connect["queryStringParameters"]["room"], "a b");
    assert_eq!(
        connect["multiValueQueryStringParameters"]["x"],
        json!(["1", "2"])
    );
    assert_eq!(connect["headers"]["user-agent"], "tester/1.0");
    assert_eq!(
        connect["multiValueHeaders"]["user-agent"],
        json!(["tester/1.0"])
    );
    assert_eq!(connect["isBase64Encoded"], false);
    let id = ctx["connectionId"].as_str().unwrap();

    let messages = of("MESSAGE");
    let join = &messages[0];
    assert_eq!(join["requestContext"]["routeKey"], "join");
    assert_eq!(join["requestContext"]["connectionId"], id);
    assert!(!join["requestContext"]["messageId"]
        .as_str()
        .unwrap()
        .is_empty());
    // Every event of the connection has the $connect event's connectedAt.
    for m in &messages {
        assert_eq!(m["requestContext"]["connectedAt"], ctx["connectedAt"]);
    }
    // The $connect answer's authorizer comes back with every event.
    assert_eq!(
        join["requestContext"]["authorizer"],
        json!({"principalId": "p-1"})
    );
    let body: Value = serde_json::from_str(join["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "join");
    assert_eq!(body["data"], json!({"room": "a"}));
    assert_eq!(messages[1]["requestContext"]["routeKey"], "$default");
    let raw = &messages[messages.len() - 2];
    assert_eq!(raw["requestContext"]["routeKey"], "$default");
    assert_eq!(raw["body"], "hello, not json");
    assert_eq!(raw["isBase64Encoded"], false);

    let disconnect = &of("DISCONNECT")[0];
    assert_eq!(disconnect["requestContext"]["routeKey"], "$disconnect");
    assert_eq!(disconnect["requestContext"]["connectionId"], id);
    assert_eq!(
        disconnect["requestContext"]["connectedAt"],
        ctx["connectedAt"]
    );
    // The client closed with 1000.
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1000);
    // The typed event reads them all.
    let typed: Vec<Event> = events
        .iter()
        .map(|(_, e)| serde_json::from_value(e.clone()).unwrap())
        .collect();
    assert_eq!(typed[1].request_context.event_type, EventType::Connect);
    assert_eq!(typed[1].request_context.connection_id, id);
    let last = &typed.last().unwrap().request_context;
    assert_eq!(last.event_type, EventType::Disconnect);
    assert_eq!(last.disconnect_status_code, Some(1000));
}

/// Closes the connection in-process (a gateway channel keeps its in-process routes).
#[switchboard::message("bye")]
async fn bye(ch: Channel<GatewaySession>) {
    ch.close_with(4001, "see you");
}

#[tokio::test]
async fn disconnect_events_carry_the_close_code_and_reason() {
    let rec = Recorder::default();
    let function = recording_function(&rec);
    let url = function.url("/fn");
    let gateway = TestServer::start(move || {
        App::new().service(
            Gateway::new(url.clone())
                .connect_events(false)
                .channel("/ws")
                .message(bye),
        )
    });
    let mut c = gateway.connect("/ws").await.unwrap();
    c.push("bye", json!(null)).await.unwrap();
    assert_eq!(c.recv_close().await.unwrap(), (4001, "see you".to_owned()));
    rec.wait_for_a_disconnect().await;
    let events = rec.events.lock().unwrap().clone();
    let (_, disconnect) = events.last().unwrap();
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 4001);
    assert_eq!(disconnect["requestContext"]["disconnectReason"], "see you");
    // Without a $connect event, connectedAt is the channel's.
    assert!(
        disconnect["requestContext"]["connectedAt"]
            .as_u64()
            .unwrap()
            > 1_600_000_000_000
    );

    // A client that goes away without a close frame: 1006, as API Gateway reports it.
    let c = gateway.connect("/ws").await.unwrap();
    c.drop_abruptly();
    rec.wait_for("the second $disconnect event", |events| {
        events
            .iter()
            .filter(|(_, e)| e["requestContext"]["eventType"] == "DISCONNECT")
            .count()
            == 2
    })
    .await;
    let events = rec.events.lock().unwrap().clone();
    let (_, disconnect) = events.last().unwrap();
    assert_eq!(disconnect["requestContext"]["disconnectStatusCode"], 1006);
}

/// A function answering like API Gateway's Lambda proxy integration: HTTP 200 whose body is
/// `{"statusCode", "body", "isBase64Encoded"}`.
async fn lambda(body: web::Bytes) -> HttpResponse {
    let event: Value = serde_json::from_slice(&body).unwrap();
    let ctx = &event["requestContext"];
    let proxy = match ctx["eventType"].as_str() {
        Some("CONNECT") if event["queryStringParameters"]["token"] != "ok" => json!({
            "statusCode": 401,
            "body": json!({"error": {"code": "unauthorized", "message": "bad token"}}).to_string(),
        }),
        Some("MESSAGE") if event["body"] == "bytes" => {
            json!({"statusCode": 200, "body": "AQID", "isBase64Encoded": true})
        }
        Some("MESSAGE")
            if event["body"]
                .as_str()
                .is_some_and(|b| b.contains("\"fail\"")) =>
        {
            json!({"statusCode": 500, "body": "no"})
        }
        Some("MESSAGE") => json!({"statusCode": 200, "body": "hi from lambda"}),
        _ => json!({"statusCode": 200}),
    };
    HttpResponse::Ok().json(proxy)
}

#[tokio::test]
async fn lambda_proxy_responses_are_read_when_asked() {
    let function = TestServer::start(|| App::new().route("/fn", web::post().to(lambda)));
    let url = function.url("/fn");
    let gateway = TestServer::start(move || {
        App::new()
            .service(
                Gateway::new(url.clone())
                    .lambda_proxy_responses()
                    .channel("/ws"),
            )
            .service(Gateway::new(url.clone()).channel("/ws/literal"))
    });
    // $connect refused with the statusCode and the error in the body.
    match gateway.connect("/ws?token=bad").await {
        Err(switchboard::testing::TestError::Rejected { status, body }) => {
            assert_eq!(status, 401);
            let body: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
            assert_eq!(body["error"]["message"], "bad token");
        }
        Err(e) => panic!("expected a 401, got {e}"),
        Ok(_) => panic!("expected a 401, but it connected"),
    }
    // Without the option the same answer is an HTTP 200: accepted.
    let mut literal = gateway.connect("/ws/literal?token=bad").await.unwrap();
    literal.send_text("text").await.unwrap();
    assert_eq!(
        literal.recv_json().await.unwrap(),
        json!({"statusCode": 200, "body": "hi from lambda"})
    );

    let mut c = gateway.connect("/ws?token=ok").await.unwrap();
    c.send_text("text").await.unwrap();
    assert_eq!(
        c.recv().await.unwrap(),
        Frame::Text("hi from lambda".into())
    );
    c.send_text("bytes").await.unwrap();
    assert_eq!(c.recv().await.unwrap(), Frame::Binary(vec![1, 2, 3]));
    let (code, message, _) = error_reply(c.request("fail", json!(null)).await);
    assert_eq!(code, "function_error");
    assert!(message.contains("500"), "{message}");
}
