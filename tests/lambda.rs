//! The function example on AWS Lambda's runtime API (`--lambda`, cargo feature `lambda`), end to
//! end: WebSocket clients on a gateway channel whose events go to an emulator of Lambda's
//! runtime interface (the Invoke API a gateway calls, and the runtime API the function process
//! polls), answered by the real `function` example running under `lambda_runtime`, which
//! pushes back through the gateway's connections API.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::web::Bytes;
use actix_web::{web, App, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use switchboard::prelude::*;
use switchboard::serverless::connections_api::ConnectionsApi;
use switchboard::serverless::function::lambda::{
    ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest, LambdaFunction,
};
use switchboard::serverless::function::FunctionService;
use switchboard::serverless::gateway::Gateway;
use switchboard::testing::{Frame, TestClient, TestServer};
use switchboard_suite::handlers::reverse;
use switchboard_suite::{
    connect_named, error_reply, example_binary, pushes_before_reply, rejected_status, Proc,
};
use tokio::sync::{mpsc, oneshot};

const API_TOKEN: &str = "api-token";
const INVOKE: &str = "/2015-03-31/functions/function/invocations";

/// What the function process answered to one invocation.
enum Outcome {
    Response(Bytes),
    Error(Bytes),
}

/// The emulator's state: invocations waiting for the function to take them, and those taken
/// and not yet answered.
struct Runtime {
    queue: mpsc::UnboundedSender<(String, Bytes)>,
    next: tokio::sync::Mutex<mpsc::UnboundedReceiver<(String, Bytes)>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    seq: AtomicU64,
    /// Every event invoked, in order.
    events: Mutex<Vec<Value>>,
}

/// `POST /2015-03-31/functions/function/invocations`: queues the event and answers with the
/// function's result, as the runtime interface emulator (and Lambda's Invoke API) do.
async fn invoke(rt: web::Data<Runtime>, body: Bytes) -> HttpResponse {
    if let Ok(event) = serde_json::from_slice(&body) {
        rt.events.lock().unwrap().push(event);
    }
    let id = format!("req-{}", rt.seq.fetch_add(1, Ordering::Relaxed));
    let (tx, rx) = oneshot::channel();
    rt.waiting.lock().unwrap().insert(id.clone(), tx);
    rt.queue
        .send((id, body))
        .expect("the runtime queue is open");
    match tokio::time::timeout(Duration::from_secs(20), rx).await {
        Ok(Ok(Outcome::Response(result))) => HttpResponse::Ok()
            .content_type("application/json")
            .body(result),
        Ok(Ok(Outcome::Error(error))) => HttpResponse::Ok()
            .insert_header(("X-Amz-Function-Error", "Unhandled"))
            .content_type("application/json")
            .body(error),
        _ => HttpResponse::GatewayTimeout().body("the function did not answer"),
    }
}

/// `GET /2018-06-01/runtime/invocation/next`: the next event, once there is one.
async fn next(rt: web::Data<Runtime>) -> HttpResponse {
    let Some((id, body)) = rt.next.lock().await.recv().await else {
        return HttpResponse::Gone().finish();
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 20_000;
    HttpResponse::Ok()
        .insert_header(("Lambda-Runtime-Aws-Request-Id", id))
        .insert_header(("Lambda-Runtime-Deadline-Ms", deadline.to_string()))
        .insert_header((
            "Lambda-Runtime-Invoked-Function-Arn",
            "arn:aws:lambda:us-east-1:000000000000:function:switchboard",
        ))
        .insert_header((
            "Lambda-Runtime-Trace-Id",
            "Root=1-00000000-000000000000000000000000",
        ))
        .content_type("application/json")
        .body(body)
}

/// `POST /2018-06-01/runtime/invocation/{id}/response` and `.../error`.
async fn answered(rt: web::Data<Runtime>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let id = req.match_info().get("id").unwrap_or_default().to_owned();
    let outcome = match req.match_info().get("kind") {
        Some("response") => Outcome::Response(body),
        Some("error") => Outcome::Error(body),
        _ => return HttpResponse::NotFound().finish(),
    };
    match rt.waiting.lock().unwrap().remove(&id) {
        Some(tx) => {
            let _ = tx.send(outcome);
            HttpResponse::Accepted().json(json!({"status": "OK"}))
        }
        None => HttpResponse::BadRequest().json(json!({"errorMessage": "unknown request id"})),
    }
}

/// A connections API served over HTTPS on a free loopback port, with a self-signed certificate
/// for `127.0.0.1` made for the test; stopped when dropped.
struct TlsApi {
    url: String,
    ca_file: std::path::PathBuf,
    handle: actix_web::dev::ServerHandle,
}

impl TlsApi {
    fn start(hub: Hub) -> TlsApi {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
            .expect("a self-signed certificate");
        static N: AtomicU64 = AtomicU64::new(0);
        let ca_file = std::env::temp_dir().join(format!(
            "switchboard-lambda-ca-{}-{}.pem",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&ca_file, cert.cert.pem()).expect("write the certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
            )
            .expect("a server config");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = actix_web::HttpServer::new(move || {
                    App::new()
                        .app_data(hub.clone())
                        .service(ConnectionsApi::new().bearer_token(API_TOKEN))
                })
                .workers(1)
                .disable_signals()
                .bind_rustls_0_23(("127.0.0.1", 0), config)
                .expect("bind the HTTPS API");
                let addr = server.addrs()[0];
                let server = server.run();
                tx.send((addr, server.handle())).unwrap();
                server.await
            })
        });
        let (addr, handle) = rx.recv().expect("the HTTPS API started");
        TlsApi {
            url: format!("https://{addr}"),
            ca_file,
            handle,
        }
    }
}

impl Drop for TlsApi {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

/// The gateway with its connections API, the emulator, and the function process on it.
struct Setup {
    gateway: TestServer,
    runtime: Arc<Runtime>,
    _api: TlsApi,
    _emulator: TestServer,
    _function: Proc,
}

fn lambda_env(cmd: &mut Command, runtime_api: &str) {
    cmd.env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "switchboard")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("RUST_LOG", "warn");
}

fn function_binary() -> std::path::PathBuf {
    example_binary(
        "function",
        &["examples/function.rs", "framework/src", "macros/src"],
    )
}

fn start() -> Setup {
    let hub = Hub::new();
    // The connections API over HTTPS, as API Gateway's Management API is: the function trusts
    // the certificate through SSL_CERT_FILE.
    let api = TlsApi::start(hub.clone());
    let (queue, rx) = mpsc::unbounded_channel();
    let runtime = Arc::new(Runtime {
        queue,
        next: tokio::sync::Mutex::new(rx),
        waiting: Mutex::new(HashMap::new()),
        seq: AtomicU64::new(1),
        events: Mutex::new(Vec::new()),
    });
    let data = web::Data::from(runtime.clone());
    // Two workers: the function's long poll for the next event holds one connection while a
    // gateway's invocation comes in on another.
    let emulator = TestServer::build(move || {
        App::new()
            .app_data(data.clone())
            .route(INVOKE, web::post().to(invoke))
            .route("/2018-06-01/runtime/invocation/next", web::get().to(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/{kind}",
                web::post().to(answered),
            )
    })
    .workers(2)
    .start();
    let mut cmd = Command::new(function_binary());
    cmd.args([
        "--lambda",
        "--connections-url",
        &api.url,
        "--connections-token",
        API_TOKEN,
    ])
    .env("SSL_CERT_FILE", &api.ca_file)
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    lambda_env(&mut cmd, &emulator.addr().to_string());
    let function = Proc(cmd.spawn().expect("start the function example"));
    let invoke_url = emulator.url(INVOKE);
    let gateway = TestServer::start(move || {
        App::new().app_data(hub.clone()).service(
            Gateway::new(&invoke_url)
                .lambda_proxy_responses()
                .timeout(Duration::from_secs(10))
                .channel("/ws"),
        )
    });
    Setup {
        gateway,
        runtime,
        _api: api,
        _emulator: emulator,
        _function: function,
    }
}

impl Setup {
    async fn connect(&self, name: &str) -> TestClient {
        connect_named(&self.gateway, name).await
    }

    fn event_types(&self) -> Vec<String> {
        self.runtime
            .events
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                e["requestContext"]["eventType"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }
}

#[tokio::test]
async fn the_handlers_run_on_the_lambda_runtime() {
    let s = start();
    let mut ann = s.connect("ann").await;
    // The session from on_connect, carried by the gateway into later events.
    let me = ann.request("whoami", json!(null)).await.unwrap();
    assert_eq!(me["name"], "ann");
    assert_eq!(
        ann.request("echo", json!({"a": [1, 2]})).await.unwrap(),
        json!({"a": [1, 2]})
    );
    // Pushes through the connections API, from the Lambda process, before the reply.
    pushes_before_reply(&mut ann, 2).await;
    // Error frames and the fallback, as in-process.
    let (code, _, frame) = error_reply(ann.request("join", json!({"room": 5})).await);
    assert_eq!(code, "bad_payload");
    assert_eq!(frame["error"]["field"], "room");
    assert_eq!(
        ann.request("nothing_here", json!(null)).await.unwrap(),
        "no route nothing_here"
    );
    // Binary frames: base64 both ways in the proxy event and response.
    ann.send_binary(&[1, 2, 3, 255]).await.unwrap();
    assert_eq!(ann.recv().await.unwrap(), Frame::Binary(vec![255, 3, 2, 1]));
    // A close from the handler.
    ann.push("bye", json!(null)).await.unwrap();
    assert_eq!(ann.recv_close().await.unwrap(), (4000, "bye".to_owned()));
    let types = s.event_types();
    assert_eq!(types.first().map(String::as_str), Some("CONNECT"));
    assert!(types.iter().filter(|t| *t == "MESSAGE").count() >= 6);
}

#[tokio::test]
async fn connect_rejection_topics_and_disconnect_through_lambda() {
    let s = start();
    // on_connect refuses a client without a name: the upgrade gets its status.
    assert_eq!(rejected_status(s.gateway.connect("/ws").await), 401);
    let mut ann = s.connect("ann").await;
    let mut bob = s.connect("bob").await;
    // Subscriptions made by the function live in the gateway's brokers.
    for c in [&mut ann, &mut bob] {
        assert_eq!(
            c.request("join", json!({"room": "lobby"})).await.unwrap(),
            "lobby"
        );
    }
    ann.request("say", json!({"room": "lobby", "text": "hi"}))
        .await
        .unwrap();
    assert_eq!(
        bob.recv_event("said").await.unwrap(),
        json!({"from": "ann", "text": "hi"})
    );
    // bob leaves: the function's $disconnect handler tells the lobby.
    bob.close().await.unwrap();
    assert_eq!(
        ann.recv_event("left").await.unwrap(),
        json!({"name": "bob"})
    );
    assert!(s.event_types().iter().any(|t| t == "DISCONNECT"));
}

#[test]
fn outside_lambda_the_function_says_what_is_missing() {
    let out = Command::new(function_binary())
        .arg("--lambda")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .env("RUST_LOG", "off")
        .output()
        .expect("run the function example");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("AWS_LAMBDA_RUNTIME_API is not set"),
        "stderr: {stderr}"
    );
}

// In-process, events shaped exactly as AWS API Gateway delivers them to a Lambda function.

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct User {
    name: String,
}

#[switchboard::on_connect]
async fn connect(req: ConnectRequest) -> Result<User, ChannelError> {
    match req.query("name") {
        Some(name) => Ok(User {
            name: name.to_owned(),
        }),
        None => Err(ChannelError::unauthorized("pass ?name=...")),
    }
}

#[switchboard::message("whoami")]
async fn whoami(ch: Channel<User>) -> Result<Value, ChannelError> {
    Ok(json!({ "id": ch.id(), "name": ch.session().map(|u| u.name) }))
}

async fn in_process() -> LambdaFunction {
    let f = FunctionService::new("/fn")
        .on_connect(connect)
        .message(whoami)
        .on_binary(reverse);
    LambdaFunction::new(f).await.unwrap()
}

/// An API Gateway WebSocket event, as AWS documents it, with `context` merged into
/// `requestContext` and `extra` into the event.
fn aws_event(
    event_type: &str,
    route: &str,
    context: Value,
    extra: Value,
) -> ApiGatewayWebsocketProxyRequest {
    let mut event = json!({
        "requestContext": {
            "routeKey": route,
            "eventType": event_type,
            "extendedRequestId": "TNYjAGOxPHcFY0Q=",
            "requestTime": "09/Feb/2024:17:05:19 +0000",
            "messageDirection": "IN",
            "stage": "production",
            "connectedAt": 1707498319000u64,
            "requestTimeEpoch": 1707498319361u64,
            "identity": { "sourceIp": "203.0.113.7", "userAgent": "Mozilla/5.0" },
            "requestId": "TNYjAGOxPHcFY0Q=",
            "domainName": "abcd1234.execute-api.us-east-1.amazonaws.com",
            "connectionId": "L0SM9cOFvHcCIhw=",
            "apiId": "abcd1234"
        },
        "isBase64Encoded": false
    });
    for (k, v) in context.as_object().unwrap() {
        event["requestContext"][k] = v.clone();
    }
    for (k, v) in extra.as_object().unwrap() {
        event[k] = v.clone();
    }
    serde_json::from_value(event).expect("an ApiGatewayWebsocketProxyRequest")
}

fn body_json(r: &ApiGatewayProxyResponse) -> Value {
    match &r.body {
        Some(switchboard::serverless::function::lambda::Body::Text(t)) => {
            serde_json::from_str(t).unwrap()
        }
        other => panic!("expected a text body, got {other:?}"),
    }
}

#[actix_web::test]
async fn aws_shaped_events_in_process() {
    let f = in_process().await;
    // $connect with the query as API Gateway sends it (single and multi-valued maps).
    let opening = aws_event(
        "CONNECT",
        "$connect",
        json!({}),
        json!({
            "headers": { "Host": "abcd1234.execute-api.us-east-1.amazonaws.com" },
            "multiValueHeaders": { "Host": ["abcd1234.execute-api.us-east-1.amazonaws.com"] },
            "queryStringParameters": { "name": "ann" },
            "multiValueQueryStringParameters": { "name": ["ann"] }
        }),
    );
    let r = f.handle(opening).await;
    assert_eq!(r.status_code, 200);
    assert_eq!(
        body_json(&r),
        json!({"authorizer": {"session": {"name": "ann"}}})
    );
    // Refused: the status, and the error as the body.
    let r = f
        .handle(aws_event("CONNECT", "$connect", json!({}), json!({})))
        .await;
    assert_eq!(r.status_code, 401);
    assert_eq!(body_json(&r)["error"]["code"], "unauthorized");

    // A message; the session from a Lambda authorizer's context, where values are strings.
    let message = aws_event(
        "MESSAGE",
        "$default",
        json!({
            "messageId": "TNYjJfpHvHcCIhw=",
            "authorizer": { "principalId": "ann", "session": "{\"name\":\"ann\"}" }
        }),
        json!({ "body": "{\"type\":\"whoami\",\"ref\":7}" }),
    );
    let r = f.handle(message).await;
    assert_eq!(r.status_code, 200);
    assert_eq!(
        r.headers
            .get("x-switchboard-reply")
            .and_then(|v| v.to_str().ok()),
        Some("frame")
    );
    assert_eq!(
        body_json(&r),
        json!({"ref": 7, "ok": true, "data": {"id": "L0SM9cOFvHcCIhw=", "name": "ann"}})
    );

    // A binary frame: base64 in, base64 out.
    let binary = aws_event(
        "MESSAGE",
        "$default",
        json!({}),
        json!({ "body": "AQID/w==", "isBase64Encoded": true }),
    );
    let r = f.handle(binary).await;
    assert_eq!(r.status_code, 200);
    assert!(r.is_base64_encoded);
    assert_eq!(serde_json::to_value(&r).unwrap()["body"], json!("/wMCAQ=="));

    // Not an event this function serves.
    let bogus = aws_event("BOGUS", "$default", json!({}), json!({}));
    let r = f.handle(bogus).await;
    assert_eq!(r.status_code, 400);
    assert_eq!(body_json(&r)["error"]["code"], "bad_event");
}
