//! The two servers under test, run in a child process (`reqreply --serve framework|baseline`):
//! the same request/reply work, once as a Switchboard channel and once hand-written on plain
//! actix-ws. Both: one actix-web worker, `/ws`, 64 KiB max frame size, continuations
//! aggregated, pings answered.

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

// ---- process entry -----------------------------------------------------------------------

/// Runs one server until killed. Prints `port N` on stdout once it listens.
pub fn serve(kind: &str, port: u16) -> std::io::Result<()> {
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
                "unknown server `{other}` (framework|metrics|baseline)"
            ))),
        }
    })
}
