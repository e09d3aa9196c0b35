//! Channel handlers several test apps mount as they are.

use actix_web::{web, App};
use serde_json::Value;
use switchboard::prelude::*;
use switchboard::testing::{TestClient, TestServer};
use tokio::sync::Notify;

/// Answers with its payload.
#[switchboard::message("echo")]
pub async fn echo(data: Value) -> Result<Value, ChannelError> {
    Ok(data)
}

/// Answers with the connection's id.
#[switchboard::message("whoami")]
pub async fn whoami(id: ConnectionId) -> Result<ConnectionId, ChannelError> {
    Ok(id)
}

/// Answers a binary frame with its bytes reversed.
#[switchboard::on_binary]
pub async fn reverse(data: Binary) -> Binary {
    let mut bytes = data.0.to_vec();
    bytes.reverse();
    Binary(bytes.into())
}

/// What [`wait`] waits for, released by the test (`gate.0.notify_one()`); app data of the
/// channel as `web::Data<Gate>`.
#[derive(Default)]
pub struct Gate(pub Notify);

/// Announces that it waits (an event `waiting`), then waits for the [`Gate`].
#[switchboard::message("wait")]
pub async fn wait(ch: Channel, gate: web::Data<Gate>) -> Result<&'static str, ChannelError> {
    ch.send("waiting", &())?;
    gate.0.notified().await;
    Ok("released")
}

/// Sends `c` a [`wait`] with `reference`, and returns once its handler waits at the gate.
pub async fn wait_at_gate(c: &mut TestClient, reference: &str) {
    c.send_json(&serde_json::json!({"type": "wait", "ref": reference}))
        .await
        .unwrap();
    c.recv_event("waiting").await.unwrap();
}

/// A test server of `route`, with `gate` as its app data (for [`wait`]).
pub fn serve_gated(gate: &web::Data<Gate>, route: ChannelRoute) -> TestServer {
    let gate = gate.clone();
    TestServer::start(move || App::new().app_data(gate.clone()).service(route.clone()))
}
