//! The servers under test, run in a child process (`reqreply --serve
//! framework|baseline|floor`): the same request/reply work, once as a Switchboard channel and
//! once hand-written on plain actix-ws (both: one actix-web worker, `/ws`, 64 KiB max frame
//! size, continuations aggregated, pings answered); and the floor, a verbatim echo on
//! fastwebsockets over one current-thread tokio runtime, with no HTTP framework and no work
//! per message: what a WebSocket message costs at least on this machine.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::AggregatedMessage;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use switchboard::prelude::*;

use crate::support::spawn;

/// Largest accepted frame, for both servers (the framework's default).
const MAX_FRAME: usize = 64 * 1024;

/// The request payload (`data`).
#[derive(Deserialize)]
pub struct Req {
    id: u64,
    text: String,
    values: Vec<u32>,
}

/// The reply payload. Field order is part of the wire format the load generator checks.
#[derive(Serialize)]
pub struct Resp {
    id: u64,
    len: usize,
    sum: u64,
    max: u32,
    text: String,
}

/// The work both servers do per request.
fn compute(req: Req) -> Resp {
    Resp {
        id: req.id,
        len: req.text.chars().count(),
        sum: req.values.iter().map(|&v| u64::from(v)).sum(),
        max: req.values.iter().copied().max().unwrap_or(0),
        text: req.text,
    }
}

// ---- framework ---------------------------------------------------------------------------

#[switchboard::message("echo")]
async fn echo(msg: Req) -> Result<Resp, ChannelError> {
    Ok(compute(msg))
}

// ---- hand-written baseline ---------------------------------------------------------------

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    ty: String,
    #[serde(rename = "ref", default)]
    reference: serde_json::Value,
    data: Req,
}

#[derive(Serialize)]
struct ReplyOk<'a> {
    #[serde(rename = "ref")]
    reference: &'a serde_json::Value,
    ok: bool,
    data: Resp,
}

#[derive(Serialize)]
struct ReplyErr<'a> {
    #[serde(rename = "ref")]
    reference: &'a serde_json::Value,
    ok: bool,
    error: ErrBody<'a>,
}

#[derive(Serialize)]
struct ErrBody<'a> {
    code: &'a str,
    message: String,
}

fn error_frame(reference: &serde_json::Value, code: &str, message: String) -> String {
    let reply = ReplyErr {
        reference,
        ok: false,
        error: ErrBody { code, message },
    };
    serde_json::to_string(&reply).unwrap_or_default()
}

/// Parses one text frame, routes it, and builds the reply text.
fn baseline_reply(text: &str) -> String {
    let env: Envelope = match serde_json::from_str(text) {
        Ok(env) => env,
        Err(e) => return error_frame(&serde_json::Value::Null, "bad_json", e.to_string()),
    };
    if env.ty != "echo" {
        let msg = format!("no handler for `{}`", env.ty);
        return error_frame(&env.reference, "unknown_route", msg);
    }
    let reply = ReplyOk {
        reference: &env.reference,
        ok: true,
        data: compute(env.data),
    };
    match serde_json::to_string(&reply) {
        Ok(s) => s,
        Err(e) => error_frame(&env.reference, "internal", e.to_string()),
    }
}

async fn baseline_ws(
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, mut session, stream) = actix_ws::handle(&req, body)?;
    let mut stream = stream
        .max_frame_size(MAX_FRAME)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME);
    actix_web::rt::spawn(async move {
        while let Some(item) = stream.next().await {
            let sent = match item {
                Ok(AggregatedMessage::Text(text)) => session.text(baseline_reply(&text)).await,
                Ok(AggregatedMessage::Ping(p)) => session.pong(&p).await,
                Ok(AggregatedMessage::Pong(_)) => Ok(()),
                Ok(AggregatedMessage::Binary(_)) => {
                    let msg = "binary frames are not supported".to_owned();
                    let frame = error_frame(&serde_json::Value::Null, "binary_unsupported", msg);
                    session.text(frame).await
                }
                Ok(AggregatedMessage::Close(reason)) => {
                    let _ = session.close(reason).await;
                    return;
                }
                Err(_) => break,
            };
            if sent.is_err() {
                return;
            }
        }
        let _ = session.close(None).await;
    });
    Ok(response)
}

// ---- floor: verbatim echo on fastwebsockets ------------------------------------------------

/// Reads the upgrade request's head, answers `101` with the accept key, then echoes every
/// text or binary message as it came (fragments collected, pings answered, close answered).
async fn floor_conn(mut stream: tokio::net::TcpStream) -> Result<(), String> {
    use fastwebsockets::{FragmentCollector, OpCode, Role, WebSocket};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 || head.len() > 16 * 1024 {
            return Err("no upgrade request".into());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let key = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim())
        })
        .ok_or("no Sec-WebSocket-Key")?;
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream
        .write_all(response.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut ws = WebSocket::after_handshake(stream, Role::Server);
    ws.set_max_message_size(MAX_FRAME);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await.map_err(|e| e.to_string())?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => {
                ws.write_frame(frame).await.map_err(|e| e.to_string())?
            }
            _ => {}
        }
    }
}

/// The floor server: one current-thread runtime, one task per connection.
fn serve_floor(port: u16) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        spawn::announce_port(&[listener.local_addr()?])?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(async move {
                let _ = floor_conn(stream).await;
            });
        }
    })
}

// ---- process entry -----------------------------------------------------------------------

/// Runs one server until killed. Prints `port N` on stdout once it listens.
pub fn serve(kind: &str, port: u16) -> std::io::Result<()> {
    if kind == "floor" {
        return serve_floor(port);
    }
    let addr = ("127.0.0.1", port);
    actix_web::rt::System::new().block_on(async move {
        match kind {
            "framework" | "metrics" | "http" => {
                // A bench drives each connection as fast as it can: no message rate limit.
                let channel = ChannelRoute::<()>::new("/ws")
                    .max_frame_size(MAX_FRAME)
                    .rate_limit(0, 1)
                    .message(echo);
                let metrics = kind == "metrics";
                let server = HttpServer::new(move || {
                    let app = App::new().service(channel.clone());
                    // Mounting the endpoint starts collection.
                    app.configure(|cfg| {
                        if metrics {
                            cfg.service(switchboard::metrics::service("/metrics"));
                        }
                    })
                })
                .workers(1)
                .bind(addr)?;
                spawn::announce_port(&server.addrs())?;
                server.run().await
            }
            "baseline" => {
                let server =
                    HttpServer::new(|| App::new().route("/ws", web::get().to(baseline_ws)))
                        .workers(1)
                        .bind(addr)?;
                spawn::announce_port(&server.addrs())?;
                server.run().await
            }
            other => Err(std::io::Error::other(format!(
                "unknown server `{other}` (framework|metrics|baseline|floor)"
            ))),
        }
    })
}
