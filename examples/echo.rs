//! The smallest complete Switchboard app: a stateless channel whose `echo` route replies with
//! the `data` it got, beside a plain HTTP route.
//!
//! Run: `cargo run --example echo` (address: `--addr 0.0.0.0:9000` or `SWITCHBOARD_ADDR`),
//! then send `{"type":"echo","ref":1,"data":{"hi":1}}` to `ws://127.0.0.1:8080/ws/echo`.

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::Value;
use switchboard::drain::Drain;
use switchboard::prelude::*;

/// Replies with the payload as it came.
#[switchboard::message("echo")]
async fn echo(data: Value) -> Result<Value, ChannelError> {
    Ok(data)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::init_from_env(env_logger::Env::default().default_filter_or("info"));
    let addr = std::env::args()
        .skip_while(|a| a != "--addr")
        .nth(1)
        .or_else(|| std::env::var("SWITCHBOARD_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());

    let channel = ChannelRoute::<()>::new("/ws/echo").message(echo);
    log::info!("echo channel on ws://{addr}/ws/echo, health on http://{addr}/health");
    let server = HttpServer::new(move || {
        App::new().service(channel.clone()).route(
            "/health",
            web::get().to(|| async { HttpResponse::Ok().body("ok") }),
        )
    })
    .disable_signals()
    .bind(addr)?
    .run();
    // On SIGTERM or Ctrl-C: every client gets a close frame (1012) before the process exits.
    // The channel uses the process-wide hub (the app registers none).
    Drain::new(Hub::global()).serve(server).await
}
