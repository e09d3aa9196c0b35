//! The NATS engine: topics shared by several server processes (nodes) through NATS.
//!
//! A publish on any node reaches the subscribers on every node once each; presence, history
//! (recovery, the last N publications) and the hub's counts are cluster-wide, as with the
//! [Redis engine](crate::engine::redis). It needs a `nats-server` (2.9 or later) with
//! JetStream enabled (`nats-server -js`).
//!
//! ```no_run
//! use switchboard::engine::HistoryConfig;
//! use switchboard::engine::nats::NatsEngine;
//! use switchboard::Hub;
//!
//! # async fn run() -> Result<(), switchboard::engine::EngineError> {
//! let engine = NatsEngine::builder("nats://127.0.0.1:4222")
//!     .history("room:*", HistoryConfig::last(50))
//!     .connect() // waits for NATS; an error if it cannot be reached
//!     .await?;
//! let hub = Hub::with_engine(engine);
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! - **Publications** of topics without history are core NATS messages on the subject
//!   `{prefix}.t.{hex(topic)}`. A node is subscribed to a topic's subject only while it has
//!   subscribers to the topic, decodes each message once and hands one frame to all of them.
//! - **History**: each topic with a [`history`](NatsEngineBuilder::history) rule has a
//!   JetStream stream of its own (`{prefix}_h_{hex(topic)}`, limited to the rule's length and
//!   age), so the stream's sequence number is the topic's: the same on every node. Publishing is
//!   a JetStream publish (answered once the stream has stored it); the stream republishes each
//!   stored message onto the topic's subject with its sequence number, and every node with
//!   subscribers delivers them by sequence number (holding one that came ahead of a missing
//!   one: nats-server can republish messages stored at once out of order), so all nodes
//!   deliver in stream order. The epoch is the stream's creation time: a stream lost and
//!   created again is a new epoch. Recovery and `last` read the stream by sequence number
//!   while the subscriber is held pending; live messages are buffered meanwhile and handed
//!   over without what the replay covered.
//! - **Presence** is a key-value bucket (`{prefix}_presence`), one key per topic holding its
//!   entries (connection → node, key, meta), changed by compare-and-set; the node whose change
//!   makes a key appear or disappear publishes the `presence_diff` on the topic's subject.
//! - **Node liveness**: each node puts its heartbeat into the bucket `{prefix}_nodes`, whose
//!   entries expire after [`node_timeout`](NatsEngineBuilder::node_timeout); every node
//!   removes, on each beat, the presence entries (with leave diffs) and counts of nodes whose
//!   heartbeat has expired.
//! - **Counts**: each node writes its subscribers per topic into the bucket `{prefix}_counts`;
//!   `subscriber_count`, `topics` and `stats` add up those of live nodes.
//! - **Faults**: when the connection to NATS drops the engine reports
//!   [`EngineHealth::Down`](crate::engine::EngineHealth) and fails publishes, subscribes and
//!   reads at once with `engine_unavailable`; the client reconnects with backoff; once back the
//!   node writes its heartbeat, presence and counts again, and its history readers go on from
//!   the last sequence number they delivered (nothing twice, nothing missed that the stream
//!   still holds).
//!
//! See `docs/nats.md` for the settings, the subjects and buckets, and the limits.

mod local;
mod node;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use self::node::{Settings, Shared};
use crate::engine::EngineError;
use crate::engine::{
    Engine, EngineHealth, EngineStats, HistoryConfig, Presence, Publish, SendFuture,
    SubscribeRequest, Subscribed, Subscriber, TopicInfo, TopicPattern,
};
use crate::id::ConnectionId;

/// The NATS engine. Cheap to clone: clones share one engine (one node). The engine's
/// background thread stops when the last clone is dropped, without cleaning up (like a crash:
/// the other nodes remove this one's presence after the node timeout); call
/// [`shutdown`](NatsEngine::shutdown) first for a clean stop.
///
/// See the [module documentation](self).
#[derive(Clone)]
pub struct NatsEngine {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}

impl std::fmt::Debug for NatsEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsEngine")
            .field("node", &self.node_id())
            .field("health", &self.inner.shared.health.get())
            .finish()
    }
}

/// Configures a [`NatsEngine`].
#[derive(Clone, Debug)]
pub struct NatsEngineBuilder {
    url: String,
    node: Option<String>,
    settings: Settings,
}

impl NatsEngineBuilder {
    /// Prefix of every subject, stream and bucket the engine uses (default `switchboard`):
    /// nodes share topics when they share NATS and prefix. Letters, digits, `-` and `_` only.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }

    /// Keeps history for recovery on topics matching `pattern`, in a JetStream stream per
    /// topic. The first matching rule wins. Every node must have the same rules.
    pub fn history(mut self, pattern: &str, config: HistoryConfig) -> Self {
        self.settings
            .history
            .push((TopicPattern::new(pattern), config));
        self
    }

    /// How long a node may stay silent before the others take it for dead and remove its
    /// presence entries and counts (default 15 s; at least 1 s). It is the age limit of the
    /// heartbeat bucket, fixed when the bucket is created: every node of a cluster must have
    /// the same. Nodes beat every third of it.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.settings.node_timeout = timeout.max(Duration::from_secs(1));
        self
    }

    /// How long a request to NATS (JetStream, key-value) may take (default 3 s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.settings.command_timeout = timeout;
        self
    }

    /// How long a connection attempt may take (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Waits between reconnection attempts: `min` after the first failure, doubling up to
    /// `max` (default 100 ms to 5 s), each drawn from its upper half.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.settings.backoff_min = min.max(Duration::from_millis(1));
        self.settings.backoff_max = max.max(self.settings.backoff_min);
        self
    }

    /// How long a topic's reader holds history messages that came ahead of a missing one, and
    /// how many at most, before it reads the missing one from the stream (defaults 1 s and
    /// 4,096). nats-server republishes stored messages after it lets go of the stream, so two
    /// stored at once can arrive out of order; the one overtaken normally follows within
    /// microseconds, and the wait runs out in full only when a message was really lost. A
    /// shorter wait delivers sooner after a loss at the cost of more stream reads when NATS
    /// is slow; the count bounds the memory a topic's reader may hold (at least 1).
    ///
    /// ```
    /// use std::time::Duration;
    /// use switchboard::engine::nats::NatsEngine;
    ///
    /// let builder = NatsEngine::builder("nats://127.0.0.1:4222")
    ///     .reorder_window(Duration::from_millis(200), 1_024);
    /// # let _ = builder;
    /// ```
    pub fn reorder_window(mut self, wait: Duration, max_held: usize) -> Self {
        self.settings.reorder_wait = wait;
        self.settings.reorder_limit = max_held.max(1);
        self
    }

    /// This node's name (default: unique per engine). Must be unique in the cluster; letters,
    /// digits, `-` and `_` only.
    pub fn node_id(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// Connects, creates the buckets it needs (if missing) and starts the engine's thread.
    /// Fails with [`EngineError::Unavailable`] when NATS cannot be reached or has no JetStream,
    /// with [`EngineError::Config`] on a bad prefix or node id.
    pub async fn connect(self) -> Result<NatsEngine, EngineError> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !valid(&self.settings.prefix) {
            return Err(EngineError::Config(
                "a NATS prefix must be letters, digits, '-' and '_'".into(),
            ));
        }
        let node: Arc<str> = match self.node {
            Some(n) if !valid(&n) => {
                return Err(EngineError::Config(
                    "a node id must be letters, digits, '-' and '_'".into(),
                ))
            }
            Some(n) => Arc::from(n),
            None => Arc::from(
                ConnectionId::next()
                    .to_string()
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>(),
            ),
        };
        let (tx, rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (url, settings) = (self.url, self.settings);
        std::thread::Builder::new()
            .name("switchboard-nats".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ =
                            tx.send(Err(EngineError::failed(format_args!("nats runtime: {e}"))));
                        return;
                    }
                };
                let started = rt.block_on(node::start(url, settings, node));
                let ok = started.is_ok();
                let _ = tx.send(started);
                if ok {
                    rt.block_on(async move {
                        let _ = stop_rx.await;
                    });
                }
            })
            .map_err(|e| EngineError::failed(format_args!("cannot start the nats thread: {e}")))?;
        let shared = rx
            .await
            .map_err(|_| EngineError::failed("the nats thread died while starting"))??;
        Ok(NatsEngine {
            inner: Arc::new(Inner {
                shared,
                stop: Mutex::new(Some(stop_tx)),
            }),
        })
    }
}

impl NatsEngine {
    /// Configures an engine for the NATS server at `url` (`nats://host:port`, several
    /// comma-separated for a cluster).
    pub fn builder(url: impl Into<String>) -> NatsEngineBuilder {
        NatsEngineBuilder {
            url: url.into(),
            node: None,
            settings: Settings {
                prefix: "switchboard".into(),
                history: Vec::new(),
                node_timeout: Duration::from_secs(15),
                command_timeout: Duration::from_secs(3),
                connect_timeout: Duration::from_secs(3),
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_secs(5),
                reorder_wait: node::REORDER_WAIT,
                reorder_limit: node::REORDER_LIMIT,
            },
        }
    }

    /// An engine with default settings, connected: see [`NatsEngineBuilder::connect`].
    pub async fn connect(url: impl Into<String>) -> Result<NatsEngine, EngineError> {
        Self::builder(url).connect().await
    }

    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.inner.shared.node
    }

    /// Waits until the engine is up, at most `timeout`; true if it is.
    pub async fn wait_until_up(&self, timeout: Duration) -> bool {
        let shared = self.inner.shared.clone();
        let deadline = std::time::Instant::now() + timeout;
        while !shared.health.is_up() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            shared.health.changed(Duration::from_millis(50)).await;
        }
        true
    }

    /// Takes this node out of the cluster, for a clean stop: its presence entries go (with
    /// leave diffs for the other nodes) and so do its counts and heartbeat; then the engine
    /// stops for good (every clone: calls fail with `engine_unavailable`).
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        let shared = self.inner.shared.clone();
        let done = shared.run(node::shutdown(shared.clone())).await;
        if let Some(stop) = self
            .inner
            .stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = stop.send(());
        }
        done
    }
}

impl Engine for NatsEngine {
    fn is_distributed(&self) -> bool {
        true
    }

    fn subscribe(&self, request: SubscribeRequest) -> SendFuture<Result<Subscribed, EngineError>> {
        let shared = self.inner.shared.clone();
        Box::pin(async move { shared.run(node::subscribe(shared.clone(), request)).await })
    }

    fn unsubscribe(&self, topic: Arc<str>, id: ConnectionId) {
        self.inner.shared.remove(&topic, id, true);
    }

    fn publish(&self, publication: Publish) -> SendFuture<Result<(), EngineError>> {
        let queued = self.inner.shared.enqueue(publication);
        Box::pin(async move {
            match queued?.await {
                Ok(r) => r,
                Err(_) => Err(node::unavailable("engine stopped")),
            }
        })
    }

    fn track(
        &self,
        topic: Arc<str>,
        subscriber: Subscriber,
        key: String,
        meta: serde_json::Value,
    ) -> SendFuture<Result<(), EngineError>> {
        let shared = self.inner.shared.clone();
        Box::pin(async move {
            shared
                .run(node::track(shared.clone(), topic, subscriber, key, meta))
                .await
        })
    }

    fn untrack(&self, topic: Arc<str>, id: ConnectionId) {
        self.inner.shared.remove(&topic, id, false);
    }

    fn presence(&self, topic: Arc<str>) -> SendFuture<Result<Presence, EngineError>> {
        let shared = self.inner.shared.clone();
        Box::pin(async move { shared.run(node::presence(shared.clone(), topic)).await })
    }

    fn subscriber_count(&self, topic: Arc<str>) -> SendFuture<Result<usize, EngineError>> {
        let shared = self.inner.shared.clone();
        Box::pin(async move {
            let counts = shared.run(node::counts(shared.clone())).await?;
            Ok(counts.get(&*topic).copied().unwrap_or(0))
        })
    }

    fn topics(&self) -> SendFuture<Result<Vec<TopicInfo>, EngineError>> {
        let shared = self.inner.shared.clone();
        Box::pin(async move { shared.run(node::topics(shared.clone())).await })
    }

    fn stats(&self) -> SendFuture<Result<EngineStats, EngineError>> {
        let shared = self.inner.shared.clone();
        Box::pin(async move { shared.run(node::stats(shared.clone())).await })
    }

    fn health(&self) -> EngineHealth {
        self.inner.shared.health.get()
    }
}
