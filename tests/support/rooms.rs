//! The topic app the topic tests run on one node (`tests/topics.rs`, the memory engine) and
//! on two nodes sharing Redis (`tests/redis.rs`): named users who say, shout and publish bursts
//! on `room:*` topics, with presence there. Each test adds its own join rules.

use serde::Deserialize;
use serde_json::json;
use switchboard::prelude::*;

use crate::handlers::whoami;

/// The session: `?name=` (default `anon`), and `?admin=1`.
#[derive(Clone)]
pub struct User {
    pub name: String,
    pub admin: bool,
}

#[switchboard::on_connect]
pub async fn connect(req: ConnectRequest) -> Result<User, ChannelError> {
    Ok(User {
        name: req.query("name").unwrap_or("anon").to_owned(),
        admin: req.query("admin") == Some("1"),
    })
}

#[derive(Deserialize)]
pub struct Say {
    pub topic: String,
    pub text: String,
}

/// Publishes `said` `{from, text}` to the topic, the sender included.
#[switchboard::message("say")]
pub async fn say(ch: Channel<User>, msg: Say) -> Result<(), ChannelError> {
    let from = ch.session().map(|u| u.name).unwrap_or_default();
    ch.publish(&msg.topic, "said", &json!({"from": from, "text": msg.text}))
        .await
}

/// Publishes `shouted` `{text}` to the topic's other subscribers.
#[switchboard::message("shout")]
pub async fn shout(ch: Channel<User>, msg: Say) -> Result<(), ChannelError> {
    ch.broadcast_from(&msg.topic, "shouted", &json!({"text": msg.text}))
        .await
}

#[derive(Deserialize)]
pub struct Burst {
    pub topic: String,
    pub n: u32,
    /// Bytes of padding in each publication (none when 0).
    #[serde(default)]
    pub pad: usize,
}

/// Publishes `n` events `n` `{i}` (`{i, pad}` with padding) in order; answers `n`.
#[switchboard::message("burst")]
pub async fn burst(ch: Channel<User>, b: Burst) -> Result<u32, ChannelError> {
    let pad = "x".repeat(b.pad);
    for i in 0..b.n {
        let data = if b.pad == 0 {
            json!({ "i": i })
        } else {
            json!({"i": i, "pad": pad})
        };
        ch.publish(&b.topic, "n", &data).await?;
    }
    Ok(b.n)
}

/// The app's channel at `/ws`: `room:*` open to all, a presence entry per user there.
pub fn route() -> ChannelRoute<User> {
    ChannelRoute::new("/ws")
        .on_connect(connect)
        .message(say)
        .message(shout)
        .message(burst)
        .message(whoami)
        .allow_join("room:*")
        .presence(|ch: Channel<User>, topic: String| async move {
            let user = ch.session()?;
            topic
                .starts_with("room:")
                .then(|| (user.name, json!({"id": ch.id()})))
        })
}
