//! The JavaScript client (`framework/js/switchboard.js`) against a real server: runs the Node
//! tests in `tests/js/*.test.mjs` with Node's built-in test runner.
//!
//! The suite runs twice, the same tests over each transport: `SWITCHBOARD_TRANSPORT` is
//! `websocket`, then `http` (docs/http-transport.md); `tests/js/support.mjs` builds the clients
//! with it.
//!
//! The node tests read `SWITCHBOARD_URL` (the channel, `ws://127.0.0.1:PORT/ws`) and
//! `SWITCHBOARD_HTTP` (`http://127.0.0.1:PORT`, for `/switchboard.js` and the test routes),
//! `SWITCHBOARD_TOKENS_URL` (the channel whose tokens expire, `/wst`),
//! `SWITCHBOARD_HEARTBEAT_URL` (a channel with a fast heartbeat, `/wsh`) and
//! `SWITCHBOARD_SILENT_URL` (a stream that never sends anything, as through a buffering proxy).
//! Without `node` on the `PATH` (or `NODE`) the test is skipped, except under CI (`CI=true` or
//! `CI=1`), where that is a failure.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::{web, App, HttpRequest, HttpResponse};
use futures_util::future::{Either, FutureExt};
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard::engine::{HistoryConfig, MemoryEngine};
use switchboard::prelude::*;
use switchboard::testing::TestServer;
use switchboard_suite::process::wait_for_exit;
use switchboard_suite::skip;

/// How long one node run (over one transport) may take before it is killed.
const NODE_DEADLINE: Duration = Duration::from_secs(90);

#[derive(Clone)]
struct User {
    name: String,
}

/// Names whose upgrades are refused: a client kept away from the server (a network outage) for
/// as long as the test wants, whatever its reconnect timing.
#[derive(Clone, Default)]
struct Blocked(Arc<Mutex<HashSet<String>>>);

impl Blocked {
    fn set(&self, name: &str, blocked: bool) {
        let mut names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if blocked {
            names.insert(name.to_owned());
        } else {
            names.remove(name);
        }
    }

    fn contains(&self, name: &str) -> bool {
        let names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        names.contains(name)
    }
}

/// What happens to the WebSocket upgrades of a name: refused (503), or left unanswered (a proxy
/// that swallows them); the HTTP transport's requests pass. `POST /upgrades/{refuse,hang,allow}/{name}`.
#[derive(Clone, Default)]
struct Upgrades(Arc<Mutex<std::collections::HashMap<String, Gate>>>);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Gate {
    Refuse,
    Hang,
}

impl Upgrades {
    fn set(&self, name: &str, gate: Option<Gate>) {
        let mut names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match gate {
            Some(gate) => names.insert(name.to_owned(), gate),
            None => names.remove(name),
        };
    }

    /// The gate of this request: an upgrade from a gated name.
    fn gate(&self, req: &ServiceRequest) -> Option<Gate> {
        if !req.headers().contains_key(actix_web::http::header::UPGRADE) {
            return None;
        }
        let name =
            web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
                .ok()?
                .get("name")?
                .clone();
        let names = self.0.lock().unwrap_or_else(|e| e.into_inner());
        names.get(&name).copied()
    }
}

/// `POST /upgrades/{refuse,hang,allow}/{name}`.
async fn set_upgrades(req: HttpRequest, path: web::Path<(String, String)>) -> HttpResponse {
    let (what, name) = path.into_inner();
    let gate = match what.as_str() {
        "refuse" => Some(Gate::Refuse),
        "hang" => Some(Gate::Hang),
        "allow" => None,
        _ => return HttpResponse::NotFound().finish(),
    };
    if let Some(upgrades) = req.app_data::<Upgrades>() {
        upgrades.set(&name, gate);
    }
    HttpResponse::NoContent().finish()
}

/// `GET /silent`: `200 text/event-stream` and then nothing, ever: what a client sees through a
/// proxy that buffers the stream.
async fn silent() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(futures_util::stream::pending::<
            Result<web::Bytes, actix_web::Error>,
        >())
}

#[switchboard::on_connect]
async fn connect(req: ConnectRequest) -> Result<User, ChannelError> {
    let name = req.query("name").unwrap_or("anon").to_owned();
    if req.app_data::<Blocked>().is_some_and(|b| b.contains(&name)) {
        return Err(ChannelError::new("blocked", "blocked by the test")
            .with_status(actix_web::http::StatusCode::SERVICE_UNAVAILABLE));
    }
    Ok(User { name })
}

#[switchboard::message("echo")]
async fn echo(data: Value) -> Result<Value, ChannelError> {
    Ok(data)
}

#[derive(Deserialize)]
struct Push {
    event: String,
    n: u32,
}

/// Pushes `n` events `{"event": event, "data": {"i": i}}`, then replies `n`.
#[switchboard::message("push")]
async fn push(ch: Channel<User>, p: Push) -> Result<u32, ChannelError> {
    for i in 0..p.n {
        ch.send(&p.event, &json!({ "i": i }))?;
    }
    Ok(p.n)
}

/// Sends a binary frame of the bytes `0..n`, then replies `n`.
#[switchboard::message("bytes")]
async fn bytes(ch: Channel<User>, n: u8) -> Result<u8, ChannelError> {
    ch.hub()
        .send_binary(ch.id(), (0..n).collect::<Vec<u8>>().into())?;
    Ok(n)
}

#[switchboard::message("fail")]
async fn fail() -> Result<(), ChannelError> {
    Err(ChannelError::new("room_full", "lobby is full"))
}

#[derive(Deserialize)]
struct Typed {
    n: u32,
}

/// A typed payload: a wrong `n` is a `bad_payload` error naming the field.
#[switchboard::message("typed")]
async fn typed(t: Typed) -> Result<u32, ChannelError> {
    Ok(t.n)
}

#[derive(Deserialize)]
struct Slow {
    ms: u64,
}

#[switchboard::message("slow")]
async fn slow(s: Slow) -> Result<u64, ChannelError> {
    actix_rt::time::sleep(Duration::from_millis(s.ms)).await;
    Ok(s.ms)
}

#[derive(Deserialize)]
struct Publish {
    topic: String,
    event: String,
    data: Value,
}

#[switchboard::message("publish")]
async fn publish(ch: Channel<User>, p: Publish) -> Result<(), ChannelError> {
    ch.publish(&p.topic, &p.event, &p.data).await
}

#[derive(Deserialize)]
struct Kick {
    code: u16,
    #[serde(default)]
    reason: String,
    /// Keeps the handler (and so the reply) waiting after the close.
    #[serde(default)]
    linger_ms: u64,
}

/// The server ends this connection with the given close code.
#[switchboard::message("kick")]
async fn kick(ch: Channel<User>, k: Kick) -> Result<(), ChannelError> {
    ch.close_with(k.code, &k.reason);
    if k.linger_ms > 0 {
        actix_rt::time::sleep(Duration::from_millis(k.linger_ms)).await;
    }
    Ok(())
}

/// `POST /block/{name}` and `/unblock/{name}`.
async fn set_blocked(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
    if let Some(blocked) = req.app_data::<Blocked>() {
        blocked.set(&name, req.path().starts_with("/block/"));
    }
    HttpResponse::NoContent().finish()
}

fn route() -> ChannelRoute<User> {
    ChannelRoute::new("/ws")
        .on_connect(connect)
        .message(echo)
        .message(push)
        .message(fail)
        .message(typed)
        .message(slow)
        .message(publish)
        .message(kick)
        .message(bytes)
        .allow_join("room:*")
        .allow_join("small:*")
        .presence(|ch: Channel<User>, topic: String| async move {
            let user = ch.session()?;
            topic
                .starts_with("room:")
                .then(|| (user.name.clone(), json!({ "name": user.name })))
        })
}

/// `<name>:<lifetime ms>`: a token of the token channel (`/wst`).
fn token(t: &str) -> Result<(String, SystemTime), ChannelError> {
    let (name, ms) = t
        .split_once(':')
        .ok_or(ChannelError::unauthorized("bad token"))?;
    let ms: u64 = ms
        .parse()
        .map_err(|_| ChannelError::unauthorized("bad token"))?;
    Ok((
        name.to_owned(),
        SystemTime::now() + Duration::from_millis(ms),
    ))
}

#[switchboard::on_connect]
async fn connect_with_token(req: ConnectRequest) -> Result<User, ChannelError> {
    // The client puts the token in the query with `URLSearchParams`: percent-encoded.
    #[derive(Deserialize)]
    struct Query {
        token: String,
    }
    let (name, at) = token(&req.query_as::<Query>()?.token)?;
    req.set_expiry(at);
    Ok(User { name })
}

#[switchboard::message("whoami")]
async fn whoami(ch: Channel<User>) -> Result<String, ChannelError> {
    Ok(ch.session().map(|u| u.name).unwrap_or_default())
}

/// The token channel: `?token=<name>:<ms>` expires after `ms`, refreshed with a new such
/// token (which renames the session); `private:*` topics take `<anything>:<ms>` tokens.
fn token_route() -> ChannelRoute<User> {
    ChannelRoute::new("/wst")
        .on_connect(connect_with_token)
        .message(whoami)
        .message(publish)
        .on_refresh(|ch: Channel<User>, t: String| async move {
            let (name, at) = token(&t)?;
            ch.set_session(User { name });
            Ok(Some(at))
        })
        .join_with_token(
            "private:*",
            |_ch: Channel<User>, _topic: String, t: String| async move { Ok(Some(token(&t)?.1)) },
        )
}

/// A channel with a fast heartbeat: a client that does not answer pings is closed within 600 ms.
fn heartbeat_route() -> ChannelRoute<User> {
    ChannelRoute::new("/wsh")
        .on_connect(connect)
        .message(echo)
        .heartbeat(Duration::from_millis(100), Duration::from_millis(600))
}

fn server() -> TestServer {
    let hub = Hub::with_engine(
        MemoryEngine::builder()
            .history("room:*", HistoryConfig::last(100))
            // Short enough for a test to outrun it: recovery then reports a gap.
            .history("small:*", HistoryConfig::last(2))
            .build(),
    );
    let blocked = Blocked::default();
    let upgrades = Upgrades::default();
    TestServer::build(move || {
        let gates = upgrades.clone();
        App::new()
            .app_data(hub.clone())
            .app_data(blocked.clone())
            .app_data(upgrades.clone())
            .wrap_fn(move |req, srv| match gates.gate(&req) {
                None => Either::Left(srv.call(req).map(|res| res.map(ServiceResponse::map_into_left_body))),
                Some(gate) => Either::Right(
                    async move {
                        if gate == Gate::Hang {
                            // Longer than any test waits; the client gives up on it first.
                            actix_rt::time::sleep(Duration::from_secs(20)).await;
                        }
                        let refused = HttpResponse::ServiceUnavailable()
                            .json(json!({"error": {"code": "no_websockets", "message": "upgrades are refused here"}}));
                        Ok(req.into_response(refused).map_into_right_body())
                    }
                    .boxed_local(),
                ),
            })
            .service(route())
            .service(token_route())
            .service(heartbeat_route())
            .service(switchboard::js::service("/switchboard.js"))
            .route("/block/{name}", web::post().to(set_blocked))
            .route("/unblock/{name}", web::post().to(set_blocked))
            .route("/upgrades/{what}/{name}", web::post().to(set_upgrades))
            .route("/silent", web::get().to(silent))
    })
    .workers(2)
    .start()
}

/// Runs `node <flags> -e <script>`; true when it exits with 0.
fn node_ok(node: &str, flags: &[&str], script: &str, env: &[(&str, &str)]) -> bool {
    Command::new(node)
        .args(flags)
        .arg("-e")
        .arg(script)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The flags this node needs for the tests: a global `WebSocket` (a flag before Node 22) and
/// ES module syntax in the `.js` client file without a `package.json` (detected by default
/// from Node 20.19 / 22.7). `Err` says why this node cannot run them.
fn node_flags(node: &str, client: &Path) -> Result<Vec<&'static str>, String> {
    let mut flags = Vec::new();
    let has_ws = "process.exit(typeof WebSocket === 'function' ? 0 : 1)";
    if !node_ok(node, &flags, has_ws, &[]) {
        flags.push("--experimental-websocket");
        if !node_ok(node, &flags, has_ws, &[]) {
            return Err("this node has no WebSocket (Node 20.10+ is needed)".into());
        }
    }
    let url = format!("file://{}", client.display());
    let imports = "import(process.env.SB_CLIENT).then(m => process.exit(typeof m.Switchboard === 'function' ? 0 : 1), () => process.exit(1))";
    let env = [("SB_CLIENT", url.as_str())];
    if !node_ok(node, &flags, imports, &env) {
        flags.push("--experimental-detect-module");
        if !node_ok(node, &flags, imports, &env) {
            flags.pop();
            return Err(format!(
                "this node cannot import {} as an ES module",
                client.display()
            ));
        }
    }
    Ok(flags)
}

fn skip_or_fail(why: &str) {
    skip("the JS client tests (Node.js 20.10+)", why);
}

#[test]
fn js_client_tests_pass_against_a_real_server() {
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
    let version = match Command::new(&node).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => return skip_or_fail(&format!("`{node}` is not installed")),
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let client = root.join("framework/js/switchboard.js");
    let flags = match node_flags(&node, &client) {
        Ok(flags) => flags,
        Err(why) => return skip_or_fail(&format!("{why} (found {version})")),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("tests/js"))
        .expect("tests/js exists")
        .map(|e| e.expect("read tests/js").path())
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no tests/js/*.test.mjs files");

    let srv = server();
    let mut failed = Vec::new();
    for transport in ["websocket", "http"] {
        let (ok, report) = run_suite(&node, &version, &flags, &files, &root, &srv, transport);
        println!("{report}");
        if !ok {
            failed.push(transport);
        }
    }
    assert!(
        failed.is_empty(),
        "the node tests failed over {failed:?} (reports above)"
    );
}

/// One run of the node tests over `transport`: whether it passed, and its report.
fn run_suite(
    node: &str,
    version: &str,
    flags: &[&str],
    files: &[PathBuf],
    root: &Path,
    srv: &TestServer,
    transport: &str,
) -> (bool, String) {
    let mut child = Command::new(node)
        .args(flags)
        .arg("--test")
        .arg("--test-reporter=spec")
        .args(files)
        .current_dir(root)
        .env("SWITCHBOARD_TRANSPORT", transport)
        .env("SWITCHBOARD_URL", srv.ws_url("/ws"))
        .env("SWITCHBOARD_TOKENS_URL", srv.ws_url("/wst"))
        .env("SWITCHBOARD_HEARTBEAT_URL", srv.ws_url("/wsh"))
        .env("SWITCHBOARD_SILENT_URL", srv.ws_url("/silent"))
        .env("SWITCHBOARD_HTTP", srv.url(""))
        .env(
            "SWITCHBOARD_CLIENT",
            root.join("framework/js/switchboard.js"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    // Read both pipes on their own threads so a chatty node never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let status = wait_for_exit(&mut child, NODE_DEADLINE);
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    let report = format!(
        "SWITCHBOARD_TRANSPORT={transport} node {version} {} --test\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
        flags.join(" ")
    );
    match status {
        None => (
            false,
            format!("node did not finish within {NODE_DEADLINE:?}\n{report}"),
        ),
        Some(s) if !s.success() => (false, format!("node tests failed ({s})\n{report}")),
        Some(_) => (true, report),
    }
}
