//! The Redis engine: topics shared by several server processes (nodes) through one Redis.
//!
//! A publish on any node reaches the subscribers on every node, once each, in the same order
//! everywhere; presence, history (recovery, the last N publications) and the hub's counts are
//! cluster-wide. Handlers do not change: give the hub a [`RedisEngine`] instead of the default
//! in-memory engine.
//!
//! ```
//! use switchboard::engine::{EngineHealth, HistoryConfig};
//! use switchboard::engine::redis::RedisEngine;
//! use switchboard::Hub;
//!
//! # fn main() -> Result<(), switchboard::ChannelError> {
//! // `start` returns at once and connects in the background (port 1: nothing listens there).
//! let engine = RedisEngine::builder("redis://127.0.0.1:1/")
//!     .history("room:*", HistoryConfig::last(50))
//!     .start()?;
//! let hub = Hub::with_engine(engine.clone());
//! // Until it reaches Redis, and whenever it loses it, the engine is down: publishes fail with
//! // `engine_unavailable`, local connections keep working, the engine reconnects with backoff.
//! assert!(matches!(hub.health(), EngineHealth::Down { .. }));
//! # Ok(())
//! # }
//! ```
//!
//! In an actix-web server, connect first (this waits for Redis and fails if it cannot be
//! reached), then share the hub:
//!
//! ```no_run
//! use actix_web::{App, HttpServer};
//! use switchboard::engine::redis::RedisEngine;
//! use switchboard::Hub;
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let engine = RedisEngine::connect("redis://127.0.0.1:6379/")
//!         .await
//!         .map_err(std::io::Error::other)?;
//!     let hub = Hub::with_engine(engine);
//!     HttpServer::new(move || App::new().app_data(hub.clone()))
//!         .bind(("127.0.0.1", 8080))?
//!         .run()
//!         .await
//! }
//! ```
//!
//! # How it works
//!
//! - **Publications** go through Redis pub/sub, one channel per topic (`{prefix}:t:{topic}`). A
//!   node is subscribed to a topic's channel only while it has subscribers to that topic. Each
//!   node decodes a message once, encodes the delivery frame once, and hands that frame to its
//!   local subscribers; the publisher's own node too gets it back from Redis, so every node
//!   delivers in the order Redis published.
//! - **History** (topics matching a [`history`](RedisEngineBuilder::history) rule) is a Redis
//!   stream per topic plus an epoch and a counter; one Lua script numbers a publication,
//!   appends it and publishes it, so sequence numbers are the same on every node, and
//!   `recover` / `last` work whichever node a client comes back to.
//! - **Presence** is a hash per topic (connection → node, key, meta); joins and leaves are
//!   published on the topic's channel as `presence_diff`s by the same script that changes the
//!   hash. Each node beats a heartbeat; the entries (and counts) of a node silent for longer
//!   than [`node_timeout`](RedisEngineBuilder::node_timeout) are removed, with leave diffs, by
//!   the next node that touches presence.
//! - **Counts** ([`Hub::subscriber_count`](crate::Hub::subscriber_count),
//!   [`Hub::topics`](crate::Hub::topics), [`Hub::stats`](crate::Hub::stats)) add up the
//!   per-node counts of live nodes.
//! - **Faults**: when Redis goes away the engine reports [`EngineHealth::Down`], logs it once,
//!   and fails publishes, subscribes and cluster-wide reads at once with the error code
//!   `engine_unavailable` (HTTP 503) instead of losing them silently; local connections stay
//!   open. It reconnects with exponential backoff (jittered), then writes this node's
//!   presence and counts again, resubscribes its topics, and delivers what topics with history
//!   missed meanwhile.
//!
//! # Redis Cluster and several Redis servers
//!
//! [`RedisEngine::cluster`] runs on Redis Cluster (7 or later): the topics are spread over a
//! fixed number of partitions, each with a hash tag of its own, so that a topic's history,
//! presence and counts live on one shard, its scripts touch one slot, and its publications go
//! through sharded pub/sub (`SPUBLISH` / `SSUBSCRIBE`) within that shard only. A part of the
//! engine follows its partition's slot to whichever primary serves it (after a failover, its
//! connection fails or is redirected, and it reconnects to the new primary, resubscribes and
//! catches up history as after any reconnect). [`RedisEngine::sharded`] spreads topics over
//! several independent Redis servers instead (client-side sharding).
//!
//! ```
//! use switchboard::engine::redis::RedisEngine;
//! use switchboard::engine::{Engine, EngineHealth};
//!
//! # fn main() -> Result<(), switchboard::ChannelError> {
//! // Seeds: any nodes of the cluster; the engine asks them where each partition's slot lives.
//! let engine = RedisEngine::cluster(["redis://127.0.0.1:1/", "redis://127.0.0.1:2/"])
//!     .partitions(16)
//!     .start()?;
//! // Nothing listens there: down, with the reason, until the cluster answers.
//! assert!(matches!(engine.health(), EngineHealth::Down { .. }));
//! // Each topic lives in one of the 16 partitions, the same on every node.
//! assert!(engine.part_of("room:lobby") < 16);
//! # Ok(())
//! # }
//! ```
//!
//! See `docs/redis.md` for the keys, the failure behavior and the limits.

mod cluster;
mod conn;
mod local;
mod lua;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;
use tokio::sync::oneshot;

use self::cluster::Target;
use self::conn::{int, string, strings, unavailable, OpError, Settings, Shared, Waiter};
use self::local::Covered;
use self::lua::ScriptId;
use crate::engine::EngineError;
use crate::engine::{
    Engine, EngineHealth, EngineStats, HistoryConfig, Position, Presence, Publication, Publish,
    SendFuture, SubscribeRequest, Subscribed, Subscriber, TopicInfo, TopicPattern,
};
use crate::id::ConnectionId;

/// The Redis engine. Cheap to clone: clones share one engine (one node). The engine's
/// background threads stop when the last clone is dropped.
///
/// See the [module documentation](self) for an example and how it works.
#[derive(Clone)]
pub struct RedisEngine {
    inner: Arc<Inner>,
}

struct Inner {
    /// One part per Redis server, or per partition of a Redis Cluster (see `cluster.rs`); a
    /// topic lives in `parts[cluster::part_of(topic, parts.len())]`.
    parts: Vec<Arc<Shared>>,
    /// Stops the engine's threads.
    stop: Mutex<Vec<oneshot::Sender<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for stop in self
            .stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stop.send(());
        }
    }
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redis: Vec<&str> = self.inner.parts.iter().map(|p| p.addr.as_str()).collect();
        f.debug_struct("RedisEngine")
            .field("node", &self.node_id())
            .field("redis", &redis)
            .field("health", &self.health())
            .finish()
    }
}

/// What the engine runs on.
#[derive(Clone, Debug)]
enum Mode {
    /// One Redis server.
    Server(String),
    /// Several independent servers, topics spread over them.
    Servers(Vec<String>),
    /// Redis Cluster, reached through these seeds.
    Cluster(Vec<String>),
}

/// Configures a [`RedisEngine`].
#[derive(Clone, Debug)]
pub struct RedisEngineBuilder {
    mode: Mode,
    partitions: usize,
    node: Option<String>,
    settings: Settings,
}

impl RedisEngineBuilder {
    /// Prefix of every Redis key and channel the engine uses (default `switchboard`): nodes
    /// share topics when they share Redis and prefix. On Redis Cluster it may not contain `{`
    /// or `}` (the engine adds a hash tag per partition).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }

    /// Redis Cluster only: how many partitions the topics are spread over (default 16, at
    /// most 16384). Each partition is one slot of the cluster, and so lives on one shard:
    /// more partitions than shards keep the shards evenly loaded, and let the cluster grow to
    /// as many shards as there are partitions. Each costs two connections per node and a
    /// heartbeat every third of the node timeout. Every node must have the same (changing it
    /// moves topics to other partitions: their history and presence start afresh).
    pub fn partitions(mut self, partitions: usize) -> Self {
        self.partitions = partitions.clamp(1, usize::from(cluster::SLOTS));
        self
    }

    /// Keeps history for recovery on topics matching `pattern`, in Redis. The first matching
    /// rule wins. Every node of a cluster must have the same rules.
    pub fn history(mut self, pattern: &str, config: HistoryConfig) -> Self {
        self.settings
            .history
            .push((TopicPattern::new(pattern), config));
        self
    }

    /// How long a node may stay silent before the others take it for dead and remove its
    /// presence entries and counts (default 15 s). Nodes beat every third of it, and a node
    /// whose heartbeats have not got through for half of it goes down (and reconnects) rather
    /// than be removed by the others while it thinks itself up. Every node of a cluster should
    /// have the same: a node reaps the others with its own.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.settings.node_timeout = timeout.max(Duration::from_millis(150));
        self
    }

    /// How long a Redis command may take before the connection counts as lost (default 3 s).
    /// At most a third of the [node timeout](Self::node_timeout): [`start`](Self::start)
    /// lowers it to that, so that a stalled connection is noticed (and the node goes down)
    /// before the other nodes take this one for dead.
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
    /// `max` (default 100 ms to 5 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.settings.backoff_min = min.max(Duration::from_millis(1));
        self.settings.backoff_max = max.max(self.settings.backoff_min);
        self
    }

    /// How long a topic's history (epoch and sequence included) outlives its last publication
    /// (default one day); a rule's own TTL bounds the publications further.
    pub fn history_expiry(mut self, expiry: Duration) -> Self {
        self.settings.history_expiry = expiry.max(Duration::from_secs(1));
        self
    }

    /// This node's name in Redis (default: unique per engine). Must be unique in the cluster;
    /// no whitespace.
    pub fn node_id(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// Starts the engine's threads and returns at once; it connects in the background and
    /// stays down (see [`EngineHealth`]) until it reaches Redis (every server, or every
    /// partition's shard). Fails only on a bad URL, prefix or node id.
    pub fn start(self) -> Result<RedisEngine, EngineError> {
        let node: Arc<str> = match self.node {
            Some(n) if n.is_empty() || n.contains(char::is_whitespace) => {
                return Err(EngineError::Config(
                    "a node id must be non-empty and without whitespace".into(),
                ));
            }
            Some(n) => Arc::from(n),
            None => new_epoch(),
        };
        let mut settings = self.settings;
        // The node timeout is the cluster's (each node reaps the others with its own), so it
        // is the command timeout that gives way.
        settings.command_timeout = settings.command_timeout.min(settings.node_timeout / 3);
        let parts = plan(&self.mode, self.partitions, &settings)?;
        // Parts share a few threads (one per core at most): each thread runs the connections
        // and local fan-out of its parts.
        let threads = parts.len().min(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        );
        let mut per_thread: Vec<Vec<(usize, Settings, Target)>> =
            (0..threads).map(|_| Vec::new()).collect();
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            per_thread[i % threads].push((i, part.0, part.1));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let mut stops = Vec::new();
        for (t, mine) in per_thread.into_iter().enumerate() {
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            stops.push(stop_tx);
            let tx = tx.clone();
            let node = node.clone();
            std::thread::Builder::new()
                .name(if threads == 1 {
                    "switchboard-redis".into()
                } else {
                    format!("switchboard-redis-{t}")
                })
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    rt.block_on(async move {
                        for (i, settings, target) in mine {
                            let shared = conn::start(settings, node.clone(), target);
                            let _ = tx.send(Ok((i, shared)));
                        }
                    });
                    rt.block_on(async move {
                        let _ = stop_rx.await;
                    });
                })
                .map_err(|e| {
                    EngineError::failed(format_args!("cannot start the redis thread: {e}"))
                })?;
        }
        drop(tx);
        let mut started: Vec<Option<Arc<Shared>>> = vec![None; count];
        for _ in 0..count {
            let (i, shared) = rx
                .recv()
                .map_err(|_| EngineError::failed("the redis thread died while starting"))?
                .map_err(|e| EngineError::failed(format_args!("redis runtime: {e}")))?;
            started[i] = Some(shared);
        }
        Ok(RedisEngine {
            inner: Arc::new(Inner {
                parts: started.into_iter().flatten().collect(),
                stop: Mutex::new(stops),
            }),
        })
    }

    /// Starts the engine and waits until it is connected. Fails with `engine_unavailable`
    /// when the first attempt to reach Redis (any server, any partition's shard) fails, so
    /// that a wrong address shows at startup.
    pub async fn connect(self) -> Result<RedisEngine, EngineError> {
        let limit = self.settings.connect_timeout * 2 + Duration::from_secs(1);
        let engine = self.start()?;
        let deadline = Instant::now() + limit;
        for part in &engine.inner.parts {
            let health = &part.health;
            loop {
                if health.is_up() {
                    break;
                }
                if health.failures() > 0 {
                    return Err(unavailable(&format!("{}: {}", part.addr, health.reason())));
                }
                if Instant::now() >= deadline {
                    return Err(unavailable("timed out connecting"));
                }
                health.changed(Duration::from_millis(50)).await;
            }
        }
        Ok(engine)
    }
}

/// The parts of an engine: their settings and where they connect.
fn plan(
    mode: &Mode,
    partitions: usize,
    settings: &Settings,
) -> Result<Vec<(Settings, Target)>, EngineError> {
    let open = |url: &str| {
        redis::Client::open(url).map_err(|e| EngineError::Config(format!("invalid Redis URL: {e}")))
    };
    match mode {
        Mode::Server(url) => Ok(vec![(settings.clone(), Target::Server(open(url)?))]),
        Mode::Servers(urls) => {
            if urls.is_empty() {
                return Err(EngineError::Config("no Redis server given".into()));
            }
            let mut seen = std::collections::HashSet::new();
            let mut parts = Vec::new();
            for url in urls {
                let client = open(url)?;
                let info = client.get_connection_info();
                // Two parts on one keyspace would overwrite each other's node state.
                if !seen.insert(format!("{}/{}", info.addr, info.redis.db)) {
                    return Err(EngineError::Config(format!(
                        "Redis server {} is listed twice",
                        info.addr
                    )));
                }
                parts.push((settings.clone(), Target::Server(client)));
            }
            Ok(parts)
        }
        Mode::Cluster(seeds) => {
            if seeds.is_empty() {
                return Err(EngineError::Config("no Redis Cluster seed given".into()));
            }
            if settings.prefix.contains(['{', '}']) {
                return Err(EngineError::Config(
                    "on Redis Cluster the prefix may not contain `{` or `}`".into(),
                ));
            }
            let seeds = seeds
                .iter()
                .map(|u| open(u).map(|c| c.get_connection_info().clone()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((0..partitions)
                .map(|k| {
                    let (tag, slot) = cluster::partition_tag(k, partitions);
                    let mut s = settings.clone();
                    s.prefix = format!("{}:{{{tag}}}", settings.prefix);
                    s.sharded = true;
                    let target = Target::Slot {
                        seeds: seeds.clone(),
                        slot,
                        known: Mutex::new(Vec::new()),
                    };
                    (s, target)
                })
                .collect())
        }
    }
}

impl RedisEngine {
    /// Configures an engine for the Redis at `url` (`redis://[:password@]host[:port][/db]`).
    pub fn builder(url: impl Into<String>) -> RedisEngineBuilder {
        Self::with_mode(Mode::Server(url.into()))
    }

    /// Configures an engine for Redis Cluster (Redis 7 or later, for sharded pub/sub),
    /// reached through `seeds`: URLs of any of its nodes (the engine asks them which primary
    /// serves what, and remembers the others). See the [module documentation](self).
    ///
    /// ```
    /// use switchboard::engine::redis::RedisEngine;
    /// use switchboard::engine::HistoryConfig;
    ///
    /// # fn main() -> Result<(), switchboard::ChannelError> {
    /// let builder = RedisEngine::cluster(["redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/"])
    ///     .history("room:*", HistoryConfig::last(50))
    ///     .partitions(32);
    /// // `builder.connect().await?` waits for the cluster; a prefix with a hash tag is refused.
    /// assert!(RedisEngine::cluster(["redis://10.0.0.1:6379/"]).prefix("{x}").start().is_err());
    /// # drop(builder);
    /// # Ok(())
    /// # }
    /// ```
    pub fn cluster<I, S>(seeds: I) -> RedisEngineBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::with_mode(Mode::Cluster(seeds.into_iter().map(Into::into).collect()))
    }

    /// Configures an engine over several independent Redis servers: each topic lives on one
    /// of them, picked by a hash of its name (the same on every node). Every node must list
    /// the same servers in the same order; adding one moves about `1/n` of the topics to it
    /// (their history and presence start afresh there).
    ///
    /// ```
    /// use switchboard::engine::redis::RedisEngine;
    ///
    /// # fn main() -> Result<(), switchboard::ChannelError> {
    /// let urls = ["redis://127.0.0.1:1/", "redis://127.0.0.1:2/", "redis://127.0.0.1:3/"];
    /// let engine = RedisEngine::sharded(urls).start()?; // connects in the background
    /// // Every node with the same list puts a topic on the same server.
    /// let server = engine.part_of("room:lobby");
    /// assert_eq!(RedisEngine::sharded(urls).start()?.part_of("room:lobby"), server);
    /// # Ok(())
    /// # }
    /// ```
    pub fn sharded<I, S>(urls: I) -> RedisEngineBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        Self::with_mode(Mode::Servers(urls))
    }

    fn with_mode(mode: Mode) -> RedisEngineBuilder {
        RedisEngineBuilder {
            mode,
            partitions: 16,
            node: None,
            settings: Settings {
                prefix: "switchboard".into(),
                history: Vec::new(),
                node_timeout: Duration::from_secs(15),
                command_timeout: Duration::from_secs(3),
                connect_timeout: Duration::from_secs(3),
                backoff_min: Duration::from_millis(100),
                backoff_max: Duration::from_secs(5),
                history_expiry: Duration::from_secs(24 * 3600),
                sharded: false,
            },
        }
    }

    /// An engine with default settings, connected: see [`RedisEngineBuilder::connect`].
    pub async fn connect(url: impl Into<String>) -> Result<RedisEngine, EngineError> {
        Self::builder(url).connect().await
    }

    /// This node's name in Redis.
    pub fn node_id(&self) -> &str {
        &self.inner.parts[0].ctx.node
    }

    /// Waits until the engine is up (connected everywhere), at most `timeout`; true if it is.
    pub async fn wait_until_up(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        for part in &self.inner.parts {
            let health = &part.health;
            while !health.is_up() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                health.changed(left.min(Duration::from_millis(50))).await;
            }
        }
        true
    }

    /// Which partition (Redis Cluster) or server (several servers, in the order given)
    /// `topic` lives in, as an index; always 0 on one Redis. See [`RedisEngine::sharded`] for
    /// an example.
    pub fn part_of(&self, topic: &str) -> usize {
        cluster::part_of(topic, self.inner.parts.len())
    }

    /// Takes this node out of the cluster, for a clean stop: its presence entries go from
    /// Redis (subscribers on other nodes get the leaves) and so do its counts, then the engine
    /// stops for good (every clone: calls fail with `engine_unavailable`). A node that stops
    /// without it is removed by the others after the node timeout.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        for shared in &self.inner.parts {
            shared.ensure_up()?;
        }
        let mut waits = Vec::new();
        for shared in &self.inner.parts {
            shared.stop();
            let args = shared.ctx.args().s(&shared.ctx.node).done();
            waits.push(shared.ctx.script(ScriptId::DropNode, args));
        }
        let mut dropped = Ok(());
        for w in waits {
            if let Err(e) = result(w).await {
                dropped = Err(e);
            }
        }
        for stop in self
            .inner
            .stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stop.send(());
        }
        dropped
    }

    /// The part `topic` lives in.
    fn shared(&self, topic: &str) -> &Arc<Shared> {
        &self.inner.parts[self.part_of(topic)]
    }

    /// Runs the counts script in every part (in parallel), their answers in part order.
    async fn counts(&self, mode: &str) -> Result<Vec<Value>, EngineError> {
        let mut waits = Vec::with_capacity(self.inner.parts.len());
        for shared in &self.inner.parts {
            shared.ensure_up()?;
            let ctx = &shared.ctx;
            let args = ctx.args().ms(ctx.settings.node_timeout).s(mode).done();
            waits.push(ctx.script(ScriptId::Counts, args));
        }
        let mut out = Vec::with_capacity(waits.len());
        for w in waits {
            out.push(result(w).await?);
        }
        Ok(out)
    }
}

/// A fresh epoch (or node name): unique, no spaces.
pub(crate) fn new_epoch() -> Arc<str> {
    let id = ConnectionId::next().to_string();
    Arc::from(id.trim_end_matches('='))
}

async fn result(w: Waiter) -> Result<Value, EngineError> {
    match w.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.into_error()),
        Err(_) => Err(unavailable("engine stopped")),
    }
}

fn bad_reply(what: &str) -> EngineError {
    OpError::Failed(format!("unexpected reply to {what}")).into_error()
}

/// Undoes what a subscribe or track left half done when it fails or its caller stops waiting.
struct Undo<'a> {
    shared: &'a Shared,
    topic: &'a Arc<str>,
    id: ConnectionId,
    stage: Stage,
}

/// What to undo. While the script is under way the stage is already what a failure needs: a
/// caller that stops waiting (a connection closing mid-subscribe drops the future) learns of
/// no subscription, so none may stay behind; making it live instead would leave a subscriber,
/// its count and its presence that nothing takes out again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The node is joining the channel for this subscriber.
    Joining,
    /// The subscriber (new here) goes, with its presence. Its leave is queued after the
    /// script, and the executor runs them in order: Redis ends up without either.
    Failed,
    /// The subscriber was already here: it stays (no longer pending), its presence goes.
    FailedKeep,
    /// A connection that is no subscriber here: its presence goes.
    Untrack,
    /// Nothing to undo.
    Done,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        let ctx = &self.shared.ctx;
        let mut local = self.shared.local();
        match self.stage {
            Stage::Joining => local.abort_join(ctx, self.topic),
            Stage::Failed => local.remove(ctx, self.topic, self.id, true),
            Stage::FailedKeep => {
                local.finish(ctx, self.topic, self.id, &[], &Covered::default());
                local.remove(ctx, self.topic, self.id, false);
            }
            Stage::Untrack => local.remove(ctx, self.topic, self.id, false),
            Stage::Done => {}
        }
    }
}

/// The subscribe script's answer.
struct Snapshot {
    new_node: bool,
    version: (Arc<str>, u64),
    entries: Vec<Vec<u8>>,
    epoch: String,
    seq: u64,
    recovered: i64,
    items: Vec<Vec<u8>>,
}

impl Snapshot {
    fn parse(v: &Value) -> Option<Snapshot> {
        let Value::Array(p) = v else { return None };
        let [new_node, pepoch, pver, entries, epoch, seq, recovered, items] = p.as_slice() else {
            return None;
        };
        Some(Snapshot {
            new_node: int(new_node) == 1,
            version: presence_version(pepoch, pver),
            entries: strings(entries),
            epoch: string(epoch),
            seq: int(seq).max(0) as u64,
            recovered: int(recovered),
            items: strings(items),
        })
    }
}

fn presence_version(epoch: &Value, version: &Value) -> (Arc<str>, u64) {
    (Arc::from(string(epoch)), int(version).max(0) as u64)
}

async fn subscribe(shared: Arc<Shared>, req: SubscribeRequest) -> Result<Subscribed, EngineError> {
    shared.ensure_up()?;
    let ctx = &shared.ctx;
    let topic = req.topic.clone();
    let id = req.subscriber.id;
    // 1. The node on the topic's channel, before anything is read: nothing published after
    //    the snapshot below can pass this node by.
    shared.local().begin_join(&topic);
    let mut undo = Undo {
        shared: &shared,
        topic: &topic,
        id,
        stage: Stage::Joining,
    };
    let (tx, rx) = oneshot::channel();
    ctx.reconcile(topic.clone(), Some(tx));
    match rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into_error()),
        Err(_) => return Err(unavailable("engine stopped")),
    }
    // 2. The subscriber, pending, and the script: count, presence, snapshot, history.
    let history = ctx.settings.history_for(&topic);
    let parts = req
        .presence
        .as_ref()
        .map(|(key, meta)| wire::entry_parts(key, meta));
    let (new, waiter) = {
        let mut local = shared.local();
        let mut new_sub = false;
        let waiter = local.join(
            ctx,
            &topic,
            req.subscriber.clone(),
            req.presence.clone(),
            |new| {
                new_sub = new;
                let (k, m) = parts.clone().unwrap_or_default();
                let (rec_epoch, rec_seq) = match &req.recover {
                    Some(p) => (p.epoch.clone(), p.seq),
                    None => (String::new(), 0),
                };
                ctx.args()
                    .s(&topic)
                    .s(&ctx.node)
                    .s(&id.to_string())
                    .ms(ctx.settings.node_timeout)
                    .flag(new)
                    .flag(parts.is_some())
                    .s(&k)
                    .s(&m)
                    .flag(history.is_some())
                    .ms(history.and_then(|h| h.ttl).unwrap_or_default())
                    .ms(ctx.settings.history_expiry)
                    .s(&new_epoch())
                    .s(&rec_epoch)
                    .n(rec_seq)
                    .n(match (&req.recover, history) {
                        (None, Some(h)) => req.last.unwrap_or(0).min(h.max_len) as u64,
                        _ => 0,
                    })
                    .done()
            },
        );
        (new_sub, waiter)
    };
    undo.stage = if new {
        Stage::Failed
    } else {
        Stage::FailedKeep
    };
    let v = match waiter.await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(e.into_error()),
        Err(_) => return Err(unavailable("engine stopped")),
    };
    let Some(snap) = Snapshot::parse(&v) else {
        return Err(bad_reply("subscribe"));
    };
    // 3. The snapshot first (presence state, replayed history), then what arrived meanwhile.
    let mut first: Vec<Publication> = Vec::new();
    let presence = wire::presence(&snap.entries);
    if req.presence.is_some() || !presence.is_empty() {
        first.extend(wire::presence_state(&topic, &presence));
    }
    for m in &snap.items {
        match wire::decode(&topic, m) {
            Ok(item) => first.push(item.publication().clone()),
            Err(e) => tracing::warn!("redis engine: skipped a bad history entry of {topic}: {e}"),
        }
    }
    let position = history.map(|_| (Arc::<str>::from(snap.epoch.as_str()), snap.seq));
    let covered = Covered {
        position: position.clone(),
        version: Some(snap.version),
    };
    undo.stage = Stage::Done;
    shared.local().finish(ctx, &topic, id, &first, &covered);
    if snap.new_node {
        ctx.resync();
    }
    Ok(Subscribed {
        position: position.map(|(epoch, seq)| Position {
            epoch: epoch.to_string(),
            seq,
        }),
        recovered: match (&req.recover, snap.recovered) {
            (None, _) => None,
            (Some(_), 1) => Some(true),
            (Some(_), _) => Some(false),
        },
    })
}

async fn track(
    shared: Arc<Shared>,
    topic: Arc<str>,
    subscriber: Subscriber,
    key: String,
    meta: serde_json::Value,
    max: usize,
) -> Result<bool, EngineError> {
    shared.ensure_up()?;
    let ctx = &shared.ctx;
    let id = subscriber.id;
    let (k, m) = wire::entry_parts(&key, &meta);
    let args = ctx
        .args()
        .s(&topic)
        .s(&ctx.node)
        .s(&id.to_string())
        .ms(ctx.settings.node_timeout)
        .s(&k)
        .s(&m)
        .n(max as u64)
        .done();
    let (subscribed, waiter) = shared.local().track(ctx, &topic, id, key, meta, args);
    // Until the script answers, a failure (or the caller giving up) leaves the entry in Redis
    // or not: forget it on both sides.
    let mut undo = Undo {
        shared: &shared,
        topic: &topic,
        id,
        stage: if subscribed {
            Stage::FailedKeep
        } else {
            Stage::Untrack
        },
    };
    let reply = match waiter.await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(e.into_error()),
        Err(_) => return Err(unavailable("engine stopped")),
    };
    let (new_node, version, entries) = match &reply {
        Value::Array(p) => match p.as_slice() {
            [new_node, pepoch, pver, entries, admitted] => {
                if int(admitted) != 1 {
                    // Refused: the undo forgets the local entry (Redis made none).
                    if int(new_node) == 1 {
                        ctx.resync();
                    }
                    return Ok(false);
                }
                (
                    int(new_node) == 1,
                    presence_version(pepoch, pver),
                    strings(entries),
                )
            }
            _ => return Err(bad_reply("track")),
        },
        _ => return Err(bad_reply("track")),
    };
    let state = wire::presence_state(&topic, &wire::presence(&entries));
    undo.stage = Stage::Done;
    if subscribed {
        let covered = Covered {
            position: None,
            version: Some(version),
        };
        let first: Vec<Publication> = state.into_iter().collect();
        shared.local().finish(ctx, &topic, id, &first, &covered);
    } else if let Some(state) = state {
        subscriber.sink.deliver(&state);
    }
    if new_node {
        ctx.resync();
    }
    Ok(true)
}

impl Engine for RedisEngine {
    fn is_distributed(&self) -> bool {
        true
    }

    fn subscribe(&self, request: SubscribeRequest) -> SendFuture<Result<Subscribed, EngineError>> {
        Box::pin(subscribe(self.shared(&request.topic).clone(), request))
    }

    fn unsubscribe(&self, topic: Arc<str>, id: ConnectionId) {
        let shared = self.shared(&topic);
        shared.local().remove(&shared.ctx, &topic, id, true);
    }

    fn publish(&self, p: Publish) -> SendFuture<Result<(), EngineError>> {
        let shared = self.shared(&p.topic);
        if let Err(e) = shared.ensure_up() {
            return Box::pin(std::future::ready(Err(e)));
        }
        let ctx = &shared.ctx;
        // Queued now, in call order: one publisher's publications keep their order even when
        // it does not wait for each.
        let waiter = match ctx.settings.history_for(&p.topic) {
            Some(h) => {
                let args = ctx
                    .args()
                    .s(&p.topic)
                    .n(h.max_len as u64)
                    .ms(h.ttl.unwrap_or_default())
                    .ms(ctx.settings.history_expiry)
                    .s(&new_epoch())
                    .b(wire::body(&p))
                    .done();
                ctx.script(ScriptId::Publish, args)
            }
            None => {
                let mut cmd = redis::cmd(if ctx.settings.sharded {
                    "SPUBLISH"
                } else {
                    "PUBLISH"
                });
                cmd.arg(ctx.channel(&p.topic)).arg(wire::plain_message(&p));
                ctx.command(cmd)
            }
        };
        Box::pin(async move { result(waiter).await.map(|_| ()) })
    }

    fn track(
        &self,
        topic: Arc<str>,
        subscriber: Subscriber,
        key: String,
        meta: serde_json::Value,
    ) -> SendFuture<Result<(), EngineError>> {
        let shared = self.shared(&topic).clone();
        Box::pin(async move {
            track(shared, topic, subscriber, key, meta, 0)
                .await
                .map(|_| ())
        })
    }

    fn track_at_most(
        &self,
        topic: Arc<str>,
        subscriber: Subscriber,
        key: String,
        meta: serde_json::Value,
        max: usize,
    ) -> SendFuture<Result<bool, EngineError>> {
        // 0 means "no limit" to the script: a limit of 0 admits nobody, here.
        if max == 0 {
            return Box::pin(std::future::ready(Ok(false)));
        }
        let shared = self.shared(&topic).clone();
        Box::pin(track(shared, topic, subscriber, key, meta, max))
    }

    fn untrack(&self, topic: Arc<str>, id: ConnectionId) {
        let shared = self.shared(&topic);
        shared.local().remove(&shared.ctx, &topic, id, false);
    }

    fn presence(&self, topic: Arc<str>) -> SendFuture<Result<Presence, EngineError>> {
        let shared = self.shared(&topic).clone();
        Box::pin(async move {
            shared.ensure_up()?;
            let ctx = &shared.ctx;
            let args = ctx.args().s(&topic).ms(ctx.settings.node_timeout).done();
            let v = result(ctx.script(ScriptId::Presence, args)).await?;
            Ok(wire::presence(&strings(&v)))
        })
    }

    fn subscriber_count(&self, topic: Arc<str>) -> SendFuture<Result<usize, EngineError>> {
        let shared = self.shared(&topic).clone();
        Box::pin(async move {
            shared.ensure_up()?;
            let ctx = &shared.ctx;
            let args = ctx
                .args()
                .ms(ctx.settings.node_timeout)
                .s("count")
                .s(&topic)
                .done();
            let v = result(ctx.script(ScriptId::Counts, args)).await?;
            Ok(int(&v).max(0) as usize)
        })
    }

    fn topics(&self) -> SendFuture<Result<Vec<TopicInfo>, EngineError>> {
        let engine = self.clone();
        Box::pin(async move {
            let mut out: Vec<TopicInfo> = Vec::new();
            // A topic lives in one part: the parts' lists do not overlap.
            for v in engine.counts("topics").await? {
                let Value::Array(flat) = v else {
                    return Err(bad_reply("topics"));
                };
                out.extend(flat.chunks(2).filter(|c| c.len() == 2).map(|c| TopicInfo {
                    topic: string(&c[0]),
                    subscribers: int(&c[1]).max(0) as usize,
                }));
            }
            out.sort_by(|a, b| a.topic.cmp(&b.topic));
            Ok(out)
        })
    }

    fn stats(&self) -> SendFuture<Result<EngineStats, EngineError>> {
        let engine = self.clone();
        Box::pin(async move {
            let mut stats = EngineStats::default();
            for v in engine.counts("stats").await? {
                match v {
                    Value::Array(p) if p.len() == 3 => {
                        stats.topics += int(&p[0]).max(0) as usize;
                        stats.subscriptions += int(&p[1]).max(0) as usize;
                        stats.histories += int(&p[2]).max(0) as usize;
                    }
                    _ => return Err(bad_reply("stats")),
                }
            }
            Ok(stats)
        })
    }

    fn health(&self) -> EngineHealth {
        let parts = &self.inner.parts;
        if let [only] = parts.as_slice() {
            return only.health.get();
        }
        let down: Vec<&Arc<Shared>> = parts.iter().filter(|p| !p.health.is_up()).collect();
        match down.first() {
            None => EngineHealth::Up,
            Some(first) => EngineHealth::Down {
                reason: format!(
                    "{} of {} parts down; {}: {}",
                    down.len(),
                    parts.len(),
                    first.addr,
                    first.health.reason()
                ),
            },
        }
    }
}
