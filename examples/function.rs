//! A function server: ordinary `#[switchboard::message]` handlers hosted behind the events a
//! gateway channel POSTs (API Gateway's WebSocket proxy events), the way a Lambda function
//! serves an API Gateway WebSocket API. The handlers are written exactly as for an in-process
//! channel: `ch.session()`, `ch.send`, `ch.subscribe`, `ch.publish` and `ch.close` work, through
//! the gateway's connections API.
//!
//! Run it beside `cargo run --example gateway` (which forwards `ws://127.0.0.1:8080/ws` here):
//!
//! ```sh
//! cargo run --example function -- --port 9000 \
//!     --connections-url http://127.0.0.1:8080 --connections-token api-token --token fn-token
//! ```
//!
//! It prints `listening on http://ADDR` once bound (`--port 0` picks a free port; the tests
//! read that line). `POST /fail` always answers 500 (a broken function, for the tests).
//!
//! With `--lambda` the same handlers run on AWS Lambda instead: the process takes API Gateway
//! WebSocket events from the Lambda runtime API (`AWS_LAMBDA_RUNTIME_API`, set by Lambda or
//! its runtime interface emulator) and answers Lambda proxy responses. Behind a real API
//! Gateway WebSocket API, point it at the Management API and sign with the function's role:
//! `--lambda --connections-url https://{api-id}.execute-api.{region}.amazonaws.com/{stage}
//! --connections-sigv4`.

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchboard::prelude::*;
use switchboard::serverless::connections_api::ConnectionsClient;
use switchboard::serverless::function::FunctionService;

#[derive(Parser, Debug)]
#[command(about = "A Switchboard function server")]
struct Args {
    /// Address to bind.
    #[arg(long, env = "FUNCTION_BIND", default_value = "127.0.0.1")]
    bind: String,
    /// Port (0: any free one).
    #[arg(long, env = "FUNCTION_PORT", default_value_t = 9000)]
    port: u16,
    /// The gateway's connections API.
    #[arg(long, env = "CONNECTIONS_URL", default_value = "http://127.0.0.1:8080")]
    connections_url: String,
    /// Bearer token for the connections API.
    #[arg(long, env = "CONNECTIONS_TOKEN")]
    connections_token: Option<String>,
    /// Sign connections API calls with the AWS credentials in the environment (on Lambda, the
    /// function's role), for API Gateway's Management API.
    #[arg(long, conflicts_with = "connections_token")]
    connections_sigv4: bool,
    /// Token the gateway must present (`Gateway::function_token`).
    #[arg(long, env = "FUNCTION_TOKEN")]
    token: Option<String>,
    /// Serve on AWS Lambda's runtime API instead of HTTP.
    #[arg(long)]
    lambda: bool,
}

/// The session `$connect` establishes; the gateway carries it in every later event.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct User {
    name: String,
}

#[switchboard::on_connect]
async fn connect(req: ConnectRequest) -> Result<User, ChannelError> {
    match req.query("name") {
        Some(name) if !name.is_empty() => Ok(User {
            name: name.to_owned(),
        }),
        _ => Err(ChannelError::unauthorized("pass ?name=...")),
    }
}

/// Tells the lobby who left.
#[switchboard::on_disconnect]
async fn disconnect(ch: Channel<User>) {
    let name = ch.session().map(|u| u.name).unwrap_or_default();
    if let Err(e) = ch
        .publish("room:lobby", "left", &json!({ "name": name }))
        .await
    {
        log::warn!("farewell of {name}: {e}");
    }
}

#[switchboard::message("echo")]
async fn echo(data: Value) -> Result<Value, ChannelError> {
    Ok(data)
}

#[switchboard::message("whoami")]
async fn whoami(ch: Channel<User>) -> Result<Value, ChannelError> {
    Ok(json!({ "id": ch.id(), "name": ch.session().map(|u| u.name) }))
}

#[derive(Deserialize)]
struct Room {
    room: String,
}

/// Subscriptions live in the gateway's brokers: this subscribes the caller's connection there.
#[switchboard::message("join")]
async fn join(ch: Channel<User>, msg: Room) -> Result<String, ChannelError> {
    ch.subscribe(&format!("room:{}", msg.room)).await?;
    Ok(msg.room)
}

#[switchboard::message("leave")]
async fn leave(ch: Channel<User>, msg: Room) -> Result<(), ChannelError> {
    ch.unsubscribe(&format!("room:{}", msg.room)).await
}

#[derive(Deserialize)]
struct Say {
    room: String,
    text: String,
}

#[switchboard::message("say")]
async fn say(ch: Channel<User>, msg: Say) -> Result<(), ChannelError> {
    let from = ch.session().map(|u| u.name).unwrap_or_default();
    ch.publish(
        &format!("room:{}", msg.room),
        "said",
        &json!({ "from": from, "text": msg.text }),
    )
    .await
}

#[derive(Deserialize)]
struct Tell {
    to: ConnectionId,
    text: String,
}

/// Pushes to another connection through the connections API.
#[switchboard::message("tell")]
async fn tell(
    api: web::Data<ConnectionsClient>,
    ch: Channel<User>,
    msg: Tell,
) -> Result<(), ChannelError> {
    let from = ch.session().map(|u| u.name).unwrap_or_default();
    api.send_to(msg.to, "told", &json!({ "from": from, "text": msg.text }))
        .await
}

/// A push to the caller, then the reply: the client sees them in that order.
#[switchboard::message("ping_me")]
async fn ping_me(ch: Channel<User>, n: u32) -> Result<&'static str, ChannelError> {
    for i in 0..n {
        ch.send("pinged", &i)?;
    }
    Ok("done")
}

/// Takes `ms` milliseconds to answer (for timeouts).
#[switchboard::message("slow")]
async fn slow(ms: u64) -> Result<u64, ChannelError> {
    actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

#[switchboard::message("bye")]
async fn bye(ch: Channel<User>) {
    ch.close_with(4000, "bye");
}

/// Messages no route answers.
#[switchboard::fallback]
async fn unrouted(route: Route) -> Result<String, ChannelError> {
    Ok(format!("no route {}", route.0))
}

/// Binary frames come back reversed.
#[switchboard::on_binary]
async fn reverse(data: Binary) -> Binary {
    let mut bytes = data.0.to_vec();
    bytes.reverse();
    Binary(bytes.into())
}

fn function(args: &Args) -> Result<FunctionService<User>, switchboard::serverless::StartError> {
    let mut connections = if args.connections_sigv4 {
        ConnectionsClient::from_aws_env(&args.connections_url)?
    } else {
        ConnectionsClient::new(&args.connections_url)
    };
    if let Some(t) = &args.connections_token {
        connections = connections.bearer_token(t);
    }
    let mut f = FunctionService::new("/fn")
        .connections(connections)
        .on_connect(connect)
        .on_disconnect(disconnect)
        .message(echo)
        .message(whoami)
        .message(join)
        .message(leave)
        .message(say)
        .message(tell)
        .message(ping_me)
        .message(slow)
        .message(bye)
        .fallback(unrouted)
        .on_binary(reverse);
    if let Some(t) = &args.token {
        f = f.token(t);
    }
    Ok(f)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::init_from_env(env_logger::Env::default().default_filter_or("info"));
    let args = Args::parse();
    let f = function(&args).map_err(|e| std::io::Error::other(e.to_string()))?;
    if args.lambda {
        return switchboard::serverless::function::lambda::run(f)
            .await
            .map_err(|e| {
                log::error!("{e}");
                std::io::Error::other(e.to_string())
            });
    }
    let server = HttpServer::new(move || {
        App::new().service(f.clone()).route(
            "/fail",
            web::post().to(|| async { HttpResponse::InternalServerError().body("boom") }),
        )
    })
    .bind((args.bind.as_str(), args.port))?;
    for addr in server.addrs() {
        log::info!("function on http://{addr}/fn");
        println!("listening on http://{addr}");
    }
    server.run().await
}
