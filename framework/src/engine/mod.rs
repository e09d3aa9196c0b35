//! The engine: where topics live. The in-memory engine ([`MemoryEngine`]) keeps them in broker
//! actors on this machine; another engine (Redis) can replace it without touching handlers.

mod error;
pub(crate) mod memory;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod subscribers;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ChannelError;
use crate::id::ConnectionId;

pub use error::EngineError;
pub use memory::{MemoryEngine, MemoryEngineBuilder};

/// A boxed `Send` future: engine calls can be made from any thread.
pub type SendFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A request to publish: what a publisher hands the engine.
#[derive(Clone, Debug)]
pub struct Publish {
    /// The topic.
    pub topic: Arc<str>,
    /// The event name subscribers see.
    pub event: Arc<str>,
    /// The payload, already serialized: a publication is serialized once, whatever the number
    /// of subscribers.
    pub data: Arc<RawValue>,
    /// A connection that must not receive it (`broadcast_from`).
    pub exclude: Option<ConnectionId>,
}

/// A position in a topic's history: its epoch and the last sequence number seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Changes whenever the topic's history is started anew (the server lost it).
    pub epoch: String,
    /// The last sequence number seen; publications after it are missed ones.
    pub seq: u64,
}

/// A publication as subscribers receive it: the encoded frame for sockets (the same bytes for
/// every subscriber), the parts for session handlers.
#[derive(Clone, Debug)]
pub struct Publication {
    /// The topic.
    pub topic: Arc<str>,
    /// The event name.
    pub event: Arc<str>,
    /// The payload as JSON text.
    pub data: Arc<RawValue>,
    /// The publication's sequence number, on topics with history.
    pub seq: Option<u64>,
    /// The topic history's epoch, on topics with history.
    pub epoch: Option<Arc<str>>,
    /// `{"topic":T,"event":E,["epoch":..,"seq":N,]"data":D}`, encoded once.
    pub frame: ByteString,
}

impl Publication {
    /// Builds a delivery and its frame.
    pub fn new(
        topic: Arc<str>,
        event: Arc<str>,
        data: Arc<RawValue>,
        position: Option<(Arc<str>, u64)>,
    ) -> Publication {
        let frame = crate::protocol::encode_delivery(
            &topic,
            &event,
            position.as_ref().map(|(e, s)| (&**e, *s)),
            data.get(),
        );
        let (epoch, seq) = match position {
            Some((e, s)) => (Some(e), Some(s)),
            None => (None, None),
        };
        Publication {
            topic,
            event,
            data,
            seq,
            epoch,
            frame,
        }
    }

    /// Deserializes the payload.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, ChannelError> {
        crate::protocol::decode_payload(self.data.get())
    }
}

/// What a sink did with a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Queued for the subscriber.
    Queued,
    /// Dropped by the subscriber's slow-consumer policy.
    Dropped,
    /// The subscriber is gone; the broker forgets it.
    Gone,
}

/// Where a subscriber's deliveries go. Brokers call it from their own thread and never wait:
/// a sink queues or drops, it does not block.
pub trait DeliverySink: Send + Sync + 'static {
    /// Hands one delivery to the subscriber.
    fn deliver(&self, publication: &Publication) -> Delivered;
}

/// A subscriber: a connection id and where its deliveries go.
#[derive(Clone)]
pub struct Subscriber {
    /// The connection.
    pub id: ConnectionId,
    /// Its sink.
    pub sink: Arc<dyn DeliverySink>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber").field("id", &self.id).finish()
    }
}

/// A subscription to make.
#[derive(Clone, Debug)]
pub struct SubscribeRequest {
    /// The topic.
    pub topic: Arc<str>,
    /// Who subscribes.
    pub subscriber: Subscriber,
    /// Replay what the subscriber missed since this position first (topics with history).
    pub recover: Option<Position>,
    /// Without `recover`: replay up to this many of the latest publications the topic still
    /// holds (topics with history), e.g. a chat room's recent messages on join.
    pub last: Option<usize>,
    /// Also enter the topic's presence under this key with this metadata, in the same step:
    /// the subscriber then gets one `presence_state` that includes itself, and no diff can
    /// fall between subscribing and tracking.
    pub presence: Option<(String, serde_json::Value)>,
}

impl SubscribeRequest {
    /// A plain subscription.
    pub fn new(topic: Arc<str>, subscriber: Subscriber) -> Self {
        SubscribeRequest {
            topic,
            subscriber,
            recover: None,
            last: None,
            presence: None,
        }
    }
}

/// The answer to a subscribe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Subscribed {
    /// The topic's current position, on topics with history.
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub position: Option<Position>,
    /// Whether the missed publications after the requested position were replayed; `None`
    /// when no recovery was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// Who is on a topic: one entry per presence key (a user), with the metadata of each of its
/// connections. Serialized the way Phoenix Presence does: `{"alice": {"metas": [...]}}`.
pub type Presence = BTreeMap<String, PresenceEntry>;

/// One presence key's connections.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PresenceEntry {
    /// Each connection's metadata.
    pub metas: Vec<serde_json::Value>,
}

/// A topic, as listed by [`Engine::topics`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopicInfo {
    /// The topic.
    pub topic: String,
    /// Its subscribers on this engine.
    pub subscribers: usize,
}

/// Totals over an engine's topics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Topics with at least one subscriber or presence entry.
    pub topics: usize,
    /// Subscriptions (one per connection per topic).
    pub subscriptions: usize,
    /// Topics whose history is retained (possibly without subscribers).
    pub histories: usize,
}

/// Whether the engine can reach what it needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum EngineHealth {
    /// Working.
    Up,
    /// Not working; local connections still are.
    Down {
        /// Why.
        reason: String,
    },
}

/// Where topics live.
///
/// Implementations must deliver a publisher's publications to each subscriber in publish order,
/// never wait on a subscriber, and serialize a publication once (the [`Publication`] frame is
/// shared by all subscribers of the node).
pub trait Engine: Send + Sync + 'static {
    /// Adds a subscriber to a topic: see [`SubscribeRequest`].
    fn subscribe(&self, request: SubscribeRequest) -> SendFuture<Result<Subscribed, EngineError>>;

    /// Removes a subscriber (and its presence) from a topic.
    fn unsubscribe(&self, topic: Arc<str>, id: ConnectionId);

    /// Publishes to every subscriber of the topic.
    fn publish(&self, publication: Publish) -> SendFuture<Result<(), EngineError>>;

    /// Adds or updates `id`'s presence on `topic` under `key`; the topic's subscribers get a
    /// `presence_diff` when the key appears, and `id` gets the `presence_state`.
    fn track(
        &self,
        topic: Arc<str>,
        subscriber: Subscriber,
        key: String,
        meta: serde_json::Value,
    ) -> SendFuture<Result<(), EngineError>>;

    /// Like [`track`](Engine::track), but only while `key` has fewer than `max` other
    /// connections in `topic`'s presence (on every node, for engines that span several):
    /// `Ok(false)` and nothing entered when it has. The count and the entry are one atomic
    /// step, so concurrent calls never admit more than `max`. Hubs use it for
    /// [`max_connections_per_user`](crate::ChannelRoute::max_connections_per_user).
    ///
    /// The default implementation fails: an engine that cannot count atomically cannot
    /// enforce the limit, and refusing is safer than admitting everyone.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use switchboard::engine::{Delivered, DeliverySink, Engine, MemoryEngine, Publication, Subscriber};
    /// use switchboard::ConnectionId;
    ///
    /// struct Ignore;
    /// impl DeliverySink for Ignore {
    ///     fn deliver(&self, _: &Publication) -> Delivered { Delivered::Queued }
    /// }
    ///
    /// # #[actix_rt::main] async fn main() {
    /// let engine = MemoryEngine::builder().shards(1).build();
    /// let tab = |_| Subscriber { id: ConnectionId::next(), sink: Arc::new(Ignore) };
    /// let one = engine.track_at_most("t".into(), tab(1), "ann".into(), serde_json::json!({}), 1);
    /// assert!(one.await.unwrap());
    /// let two = engine.track_at_most("t".into(), tab(2), "ann".into(), serde_json::json!({}), 1);
    /// assert!(!two.await.unwrap(), "ann has one connection already");
    /// # }
    /// ```
    fn track_at_most(
        &self,
        topic: Arc<str>,
        subscriber: Subscriber,
        key: String,
        meta: serde_json::Value,
        max: usize,
    ) -> SendFuture<Result<bool, EngineError>> {
        let _ = (topic, subscriber, key, meta, max);
        Box::pin(std::future::ready(Err(EngineError::failed(
            "this engine cannot limit presence entries per key",
        ))))
    }

    /// Removes `id`'s presence from `topic`.
    fn untrack(&self, topic: Arc<str>, id: ConnectionId);

    /// Who is on a topic.
    fn presence(&self, topic: Arc<str>) -> SendFuture<Result<Presence, EngineError>>;

    /// Subscribers of a topic.
    fn subscriber_count(&self, topic: Arc<str>) -> SendFuture<Result<usize, EngineError>>;

    /// Topics with subscribers or presence.
    fn topics(&self) -> SendFuture<Result<Vec<TopicInfo>, EngineError>>;

    /// Totals.
    fn stats(&self) -> SendFuture<Result<EngineStats, EngineError>>;

    /// Whether the engine works right now.
    fn health(&self) -> EngineHealth {
        EngineHealth::Up
    }

    /// Whether other server processes share this engine's topics and presence (Redis, NATS).
    /// Then an HTTP transport's upstream `POST` that reaches a node without the connection's
    /// stream is handed to the node that has it, through the engine (see
    /// `docs/http-transport.md`); on an engine of one process (the default) it is refused as
    /// an unknown connection.
    ///
    /// ```
    /// use switchboard::engine::{Engine, MemoryEngine};
    ///
    /// assert!(!MemoryEngine::new().is_distributed());
    /// ```
    fn is_distributed(&self) -> bool {
        false
    }
}

/// Topics whose names start with this are the framework's own (a user's connections listen on
/// `$sb:user:{user}`, an HTTP transport's stream on `$sb:conn:{id}`): clients cannot join
/// them, they never keep history, and [`Hub::topics`](crate::Hub::topics) leaves them out.
pub const INTERNAL_PREFIX: &str = "$sb:";

/// Whether `topic` is one of the framework's own (see [`INTERNAL_PREFIX`]).
pub fn is_internal(topic: &str) -> bool {
    topic.starts_with(INTERNAL_PREFIX)
}

/// How much history a topic keeps for recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Publications kept (at most).
    pub max_len: usize,
    /// How long a publication is kept; `None`: as long as it fits.
    pub ttl: Option<std::time::Duration>,
}

impl HistoryConfig {
    /// Keep the last `max_len` publications.
    pub fn last(max_len: usize) -> Self {
        HistoryConfig { max_len, ttl: None }
    }

    /// Also forget publications older than `ttl`.
    pub fn for_at_most(mut self, ttl: std::time::Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// A topic pattern: `room:lobby` (exactly), `room:*` (any topic starting `room:`), `*` (all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// A pattern; a trailing `*` matches any rest.
    pub fn new(pattern: impl Into<String>) -> Self {
        TopicPattern(pattern.into())
    }

    /// Whether `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => topic.starts_with(prefix),
            None => self.0 == topic,
        }
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(TopicPattern::new("room:*").matches("room:a"));
        assert!(!TopicPattern::new("room:*").matches("rooms"));
        assert!(TopicPattern::new("*").matches("anything"));
        assert!(TopicPattern::new("a").matches("a"));
        assert!(!TopicPattern::new("a").matches("ab"));
    }

    #[test]
    fn delivery_frame() {
        let data: Arc<RawValue> = Arc::from(RawValue::from_string("{\"x\":1}".into()).unwrap());
        let d = Publication::new("t".into(), "e".into(), data.clone(), None);
        assert_eq!(&*d.frame, r#"{"topic":"t","event":"e","data":{"x":1}}"#);
        let d = Publication::new("t".into(), "e".into(), data, Some(("ep".into(), 3)));
        assert_eq!(
            &*d.frame,
            r#"{"topic":"t","event":"e","epoch":"ep","seq":3,"data":{"x":1}}"#
        );
    }
}
