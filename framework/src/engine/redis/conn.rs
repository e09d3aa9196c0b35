//! The node's two Redis connections and the tasks around them, all on the engine's own thread:
//!
//! - the **executor** sends every command and script over one multiplexed connection, in the
//!   order they were queued, pipelining whatever queued up meanwhile (one round trip for a
//!   batch);
//! - the **supervisor** owns the subscription connection: it connects (and reconnects, with
//!   exponential backoff), subscribes the node to the channels of topics it has subscribers
//!   for, hands each message to the local subscribers, pings, beats the node's heartbeat, and
//!   after a reconnect writes this node's presence and counts again, resubscribes, and catches
//!   up what topics with history missed.
//!
//! This is one *part* of an engine (see `cluster.rs`). On a Redis Cluster partition the part
//! connects to the primary its slot's owner is now (`Target::client`), subscribes with
//! `SSUBSCRIBE` on a RESP3 connection (its messages arrive as pushes), and takes a redirection
//! (`MOVED`, `CLUSTERDOWN`...) or a shard channel dropped by the server as a lost connection:
//! the reconnect goes to the new owner and runs the same resync and catch-up.
//!
//! While Redis is unreachable the engine is down: commands fail at once with
//! `engine_unavailable` instead of waiting, local subscribers stay where they are.
//!
//! Nothing here grows without bound: the executor's queue holds [`EXEC_CAPACITY`] commands
//! (past that, callers get `engine_unavailable` at once, and a dropped fire-and-forget leave
//! marks the node for a resync, which rewrites its state from the local one); requests to the
//! supervisor are coalesced (a flag, a set of topics).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::cluster::Target;
use super::local::Local;
use super::lua::{self, ScriptId, SCRIPT_COUNT};
use super::wire;
use crate::engine::EngineError;
use crate::engine::{EngineHealth, HistoryConfig, TopicPattern};
use crate::id::ConnectionId;

/// Pipelined commands per round trip, at most.
const MAX_BATCH: usize = 256;

/// Commands waiting for the executor, at most: seconds of work for Redis, far more than a
/// healthy node queues, small enough that a stuck Redis cannot eat the process's memory.
pub(crate) const EXEC_CAPACITY: usize = 65_536;

/// The engine's settings (see `RedisEngineBuilder`).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub prefix: String,
    pub history: Vec<(TopicPattern, HistoryConfig)>,
    pub node_timeout: Duration,
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub history_expiry: Duration,
    /// Redis Cluster: `SPUBLISH` / `SSUBSCRIBE` (sharded pub/sub, within the key's shard)
    /// instead of `PUBLISH` / `SUBSCRIBE`, and redirections taken as a lost connection.
    pub sharded: bool,
}

impl Settings {
    pub(crate) fn history_for(&self, topic: &str) -> Option<HistoryConfig> {
        if crate::engine::is_internal(topic) {
            return None;
        }
        self.history
            .iter()
            .find(|(p, _)| p.matches(topic))
            .map(|(_, c)| *c)
    }
}

/// Why an operation failed.
#[derive(Clone, Debug)]
pub(crate) enum OpError {
    /// Redis cannot be reached (now).
    Unavailable(String),
    /// The executor's queue is full.
    Overloaded,
    /// Redis answered with an error, or the answer made no sense.
    Failed(String),
}

impl OpError {
    pub(crate) fn into_error(self) -> EngineError {
        match self {
            OpError::Unavailable(reason) => unavailable(&reason),
            OpError::Overloaded => unavailable("engine overloaded"),
            OpError::Failed(detail) => EngineError::failed(format_args!("redis engine: {detail}")),
        }
    }

    fn reason(&self) -> String {
        match self {
            OpError::Unavailable(r) | OpError::Failed(r) => r.clone(),
            OpError::Overloaded => "engine overloaded".into(),
        }
    }
}

/// The error publishers (and other callers) get while Redis is unreachable.
pub(crate) fn unavailable(reason: &str) -> EngineError {
    EngineError::Unavailable(format!("Redis: {reason}"))
}

pub(crate) type Reply = oneshot::Sender<Result<Value, OpError>>;
pub(crate) type Waiter = oneshot::Receiver<Result<Value, OpError>>;

/// A command for the executor.
pub(crate) struct Op {
    kind: OpKind,
    reply: Option<Reply>,
}

enum OpKind {
    Cmd(redis::Cmd),
    Script(ScriptId, Vec<Vec<u8>>),
}

impl Op {
    fn answer(self, ctx: &Ctx, r: Result<Value, OpError>) {
        match self.reply {
            Some(tx) => {
                let _ = tx.send(r);
            }
            // Nobody waits for a leave: when it fails, Redis keeps what the node dropped here
            // until a resync rewrites the node's state from the local one.
            None if r.is_err() => ctx.resync(),
            None => {}
        }
    }
}

type ReconcileReply = oneshot::Sender<Result<(), OpError>>;

/// What the supervisor is asked to do, coalesced so that a burst of requests (every
/// subscribe of a node that Redis forgot asks for a resync; a mass disconnect asks to leave
/// many channels) costs one pass, and what is waiting is bounded by the node's topics.
pub(crate) struct Signals {
    wake: Notify,
    /// Write this node's presence and counts again.
    resync: AtomicBool,
    state: Mutex<SignalState>,
}

#[derive(Default)]
struct SignalState {
    /// The supervisor is gone: nothing will answer.
    closed: bool,
    /// Topics whose channel subscription must follow the local subscribers, with who waits.
    reconcile: HashMap<Arc<str>, Vec<ReconcileReply>>,
    /// The executor lost the connection of this generation.
    lost: Option<(u64, String)>,
}

impl Signals {
    fn new() -> Self {
        Signals {
            wake: Notify::new(),
            resync: AtomicBool::new(false),
            state: Mutex::new(SignalState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, SignalState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_reconcile(&self) -> HashMap<Arc<str>, Vec<ReconcileReply>> {
        std::mem::take(&mut self.state().reconcile)
    }

    fn take_lost(&self) -> Option<(u64, String)> {
        self.state().lost.take()
    }
}

/// Marks the signals closed when the supervisor goes (the engine's runtime stops), so that
/// waiters get "engine stopped" instead of waiting forever.
struct CloseSignals<'a>(&'a Signals);

impl Drop for CloseSignals<'_> {
    fn drop(&mut self) {
        let waiting = {
            let mut st = self.0.state();
            st.closed = true;
            std::mem::take(&mut st.reconcile)
        };
        drop(waiting);
    }
}

/// Script arguments, starting with the key prefix.
pub(crate) struct Args(Vec<Vec<u8>>);

impl Args {
    pub(crate) fn s(mut self, s: &str) -> Self {
        self.0.push(s.as_bytes().to_vec());
        self
    }
    pub(crate) fn b(mut self, b: Vec<u8>) -> Self {
        self.0.push(b);
        self
    }
    pub(crate) fn n(mut self, n: u64) -> Self {
        self.0.push(n.to_string().into_bytes());
        self
    }
    pub(crate) fn ms(self, d: Duration) -> Self {
        self.n(d.as_millis() as u64)
    }
    pub(crate) fn flag(self, f: bool) -> Self {
        self.s(if f { "1" } else { "0" })
    }
    pub(crate) fn done(self) -> Vec<Vec<u8>> {
        self.0
    }
}

/// What every part of the engine shares: settings, the node's name, the queues.
pub(crate) struct Ctx {
    pub settings: Settings,
    pub node: Arc<str>,
    /// The one key every script declares (`KEYS[1]`, the node list): Redis Cluster routes a
    /// script by it, and checks that every key the script touches is in its slot (they all
    /// share the prefix's hash tag).
    anchor: String,
    exec: mpsc::Sender<Op>,
    signals: Signals,
    /// The executor's queue was found full (and not yet found with room again): to warn once.
    overloaded: AtomicBool,
}

impl Ctx {
    pub(crate) fn args(&self) -> Args {
        Args(vec![self.settings.prefix.as_bytes().to_vec()])
    }

    pub(crate) fn channel(&self, topic: &str) -> String {
        format!("{}:t:{topic}", self.settings.prefix)
    }

    fn queue(&self, kind: OpKind, reply: Option<Reply>) {
        match self.exec.try_send(Op { kind, reply }) {
            Ok(()) => {
                if self.overloaded.load(Ordering::Relaxed) {
                    self.overloaded.store(false, Ordering::Relaxed);
                }
            }
            Err(mpsc::error::TrySendError::Full(op)) => {
                if !self.overloaded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "redis engine (node {}): {EXEC_CAPACITY} commands queued for Redis: \
                         failing new ones with engine_unavailable until the queue drains",
                        self.node
                    );
                }
                op.answer(self, Err(OpError::Overloaded));
            }
            Err(mpsc::error::TrySendError::Closed(op)) => {
                op.answer(self, Err(OpError::Unavailable("engine stopped".into())));
            }
        }
    }

    /// Queues a script; the receiver gets its result.
    pub(crate) fn script(&self, id: ScriptId, args: Vec<Vec<u8>>) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.queue(OpKind::Script(id, args), Some(tx));
        rx
    }

    /// Queues a script nobody waits for.
    pub(crate) fn script_nowait(&self, id: ScriptId, args: Vec<Vec<u8>>) {
        self.queue(OpKind::Script(id, args), None);
    }

    /// Queues a command; the receiver gets its result.
    pub(crate) fn command(&self, cmd: redis::Cmd) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.queue(OpKind::Cmd(cmd), Some(tx));
        rx
    }

    /// Queues what Redis must forget when `id` leaves `topic` here.
    pub(crate) fn leave(
        &self,
        topic: &str,
        id: ConnectionId,
        uncount: bool,
        untrack: bool,
        last_local: bool,
    ) {
        let args = self
            .args()
            .s(topic)
            .s(&self.node)
            .s(&id.to_string())
            .flag(uncount)
            .flag(untrack)
            .flag(untrack && last_local)
            .done();
        self.script_nowait(ScriptId::Leave, args);
    }

    /// Asks the supervisor to write this node's presence and counts again (once, however
    /// many ask before it gets to it).
    pub(crate) fn resync(&self) {
        self.signals.resync.store(true, Ordering::Release);
        self.signals.wake.notify_one();
    }

    /// Asks the supervisor to (un)subscribe the node from the topic's channel as needed.
    pub(crate) fn reconcile(&self, topic: Arc<str>, reply: Option<ReconcileReply>) {
        {
            let mut st = self.signals.state();
            if st.closed {
                drop(st);
                if let Some(tx) = reply {
                    let _ = tx.send(Err(OpError::Unavailable("engine stopped".into())));
                }
                return;
            }
            let waiting = st.reconcile.entry(topic).or_default();
            waiting.extend(reply);
        }
        self.signals.wake.notify_one();
    }

    /// The executor lost the connection of `generation`.
    fn lost(&self, generation: u64, reason: String) {
        {
            let mut st = self.signals.state();
            if st.lost.as_ref().is_none_or(|(g, _)| *g < generation) {
                st.lost = Some((generation, reason));
            }
        }
        self.signals.wake.notify_one();
    }
}

/// Up or down, and why.
pub(crate) struct HealthState {
    up: AtomicBool,
    reason: Mutex<String>,
    /// Failed connection attempts so far.
    failures: AtomicU64,
    changed: Notify,
}

impl HealthState {
    fn new() -> Self {
        HealthState {
            up: AtomicBool::new(false),
            reason: Mutex::new("connecting to Redis".into()),
            failures: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn set_up(&self) -> bool {
        let was_down = !self.up.swap(true, Ordering::AcqRel);
        self.changed.notify_waiters();
        was_down
    }

    /// Marks the engine down; true when it was up.
    fn set_down(&self, reason: &str) -> bool {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_owned();
        let was_up = self.up.swap(false, Ordering::AcqRel);
        self.changed.notify_waiters();
        was_up
    }

    fn failed(&self, reason: &str) -> bool {
        self.failures.fetch_add(1, Ordering::AcqRel);
        self.set_down(reason)
    }

    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    /// Waits for a change of state, at most `max`.
    pub(crate) async fn changed(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.changed.notified()).await;
    }

    pub(crate) fn reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn get(&self) -> EngineHealth {
        if self.is_up() {
            EngineHealth::Up
        } else {
            EngineHealth::Down {
                reason: self.reason(),
            }
        }
    }
}

/// Everything the engine's handles and tasks share.
pub(crate) struct Shared {
    pub ctx: Ctx,
    local: Mutex<Local>,
    pub health: HealthState,
    /// The Redis server, for logs (no credentials).
    pub addr: String,
    /// Set by `shutdown`: the node no longer beats nor writes itself back.
    stopping: AtomicBool,
    /// When the last heartbeat that got through was sent.
    beat_ok: Mutex<Instant>,
    /// Heartbeats failed in a row.
    beat_failures: AtomicU32,
}

impl Shared {
    pub(crate) fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the node's heartbeats and resyncs, and marks the engine down for good.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.health.set_down("the engine was shut down");
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Fails at once while the engine is down.
    pub(crate) fn ensure_up(&self) -> Result<(), EngineError> {
        if self.health.is_up() && !self.stopping() {
            Ok(())
        } else {
            Err(unavailable(&self.health.reason()))
        }
    }
}

type Shas = Arc<[String; SCRIPT_COUNT]>;

/// The connection the executor uses, with the scripts' hashes.
#[derive(Clone)]
struct Conn {
    mc: MultiplexedConnection,
    shas: Shas,
    generation: u64,
}

fn sources(sharded: bool) -> &'static [String; SCRIPT_COUNT] {
    static SOURCES: OnceLock<[String; SCRIPT_COUNT]> = OnceLock::new();
    static SHARDED: OnceLock<[String; SCRIPT_COUNT]> = OnceLock::new();
    if sharded {
        SHARDED.get_or_init(|| lua::sources(true))
    } else {
        SOURCES.get_or_init(|| lua::sources(false))
    }
}

/// Starts the engine's tasks on the current runtime (the engine's own thread).
pub(crate) fn start(settings: Settings, node: Arc<str>, target: Target) -> Arc<Shared> {
    let (exec_tx, exec_rx) = mpsc::channel(EXEC_CAPACITY);
    let (conn_tx, conn_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        ctx: Ctx {
            anchor: format!("{}:nodes", settings.prefix),
            settings,
            node,
            exec: exec_tx,
            signals: Signals::new(),
            overloaded: AtomicBool::new(false),
        },
        local: Mutex::new(Local::default()),
        health: HealthState::new(),
        addr: target.describe(),
        stopping: AtomicBool::new(false),
        beat_ok: Mutex::new(Instant::now()),
        beat_failures: AtomicU32::new(0),
    });
    tokio::spawn(executor(shared.clone(), exec_rx, conn_rx));
    tokio::spawn(supervise(shared.clone(), target, conn_tx));
    shared
}

// ---- the executor -------------------------------------------------------------------------

async fn executor(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Op>,
    conn: watch::Receiver<Option<Conn>>,
) {
    let mut batch = Vec::new();
    while let Some(op) = rx.recv().await {
        batch.push(op);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let current = conn.borrow().clone();
        match current {
            Some(c) => run_batch(&shared, c, &mut batch).await,
            None => {
                let reason = shared.health.reason();
                for op in batch.drain(..) {
                    op.answer(&shared.ctx, Err(OpError::Unavailable(reason.clone())));
                }
            }
        }
    }
}

fn packed(kind: &mut OpKind, shas: &[String; SCRIPT_COUNT], anchor: &str) -> redis::Cmd {
    match kind {
        OpKind::Cmd(cmd) => std::mem::replace(cmd, redis::Cmd::new()),
        OpKind::Script(id, args) => {
            let mut cmd = redis::cmd("EVALSHA");
            // `ScriptId` values are below SCRIPT_COUNT, the array's length.
            cmd.arg(&shas[*id as usize]).arg(1).arg(anchor);
            for a in args.iter() {
                cmd.arg(a.as_slice());
            }
            cmd
        }
    }
}

fn is_lost(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_unrecoverable_error() || e.is_timeout()
}

/// An answer saying that this server no longer serves the key (Redis Cluster: the slot moved,
/// a failover made the server a replica, the cluster is reconfiguring): for the engine, the
/// connection is lost, and the next one goes to the slot's owner as the cluster says now.
fn is_redirect(e: &redis::RedisError) -> bool {
    use redis::ErrorKind as K;
    matches!(
        e.kind(),
        K::Moved | K::Ask | K::TryAgain | K::ClusterDown | K::MasterDown | K::ReadOnly
    ) || e.to_string().contains("non local key")
}

async fn run_batch(shared: &Shared, mut c: Conn, batch: &mut Vec<Op>) {
    let ctx = &shared.ctx;
    let mut pipe = redis::pipe();
    for op in batch.iter_mut() {
        pipe.add_command(packed(&mut op.kind, &c.shas, &ctx.anchor));
    }
    let values = match c.mc.send_packed_commands(&pipe, 0, batch.len()).await {
        Ok(values) if values.len() == batch.len() => values,
        Ok(values) => {
            let detail = format!("{} replies to {} commands", values.len(), batch.len());
            for op in batch.drain(..) {
                op.answer(ctx, Err(OpError::Failed(detail.clone())));
            }
            return;
        }
        Err(e) => {
            let err = batch_error(ctx, &c, &e);
            for op in batch.drain(..) {
                op.answer(ctx, Err(err.clone()));
            }
            return;
        }
    };
    let mut results: Vec<Result<Value, OpError>> = Vec::with_capacity(values.len());
    let mut noscript = Vec::new();
    for (i, (op, v)) in batch.iter().zip(values).enumerate() {
        let r = v.extract_error();
        if let (Err(e), OpKind::Script(..)) = (&r, &op.kind) {
            if e.kind() == redis::ErrorKind::NoScriptError {
                noscript.push(i);
            }
        }
        results.push(r.map_err(|e| {
            if is_redirect(&e) {
                ctx.lost(c.generation, e.to_string());
                OpError::Unavailable(e.to_string())
            } else {
                OpError::Failed(e.to_string())
            }
        }));
    }
    if !noscript.is_empty() {
        // Redis lost its script cache (SCRIPT FLUSH, a failover to a replica without it): load
        // the scripts again and run those that failed again, in their order, in one pipeline,
        // before anything queued after them. (Plain commands of the batch that Redis already
        // ran cannot be moved back behind them.)
        match retry_scripts(ctx, &mut c, batch, &noscript).await {
            Ok(again) => {
                for (i, r) in noscript.iter().zip(again) {
                    results[*i] = r;
                }
            }
            Err(e) => {
                for i in &noscript {
                    results[*i] = Err(e.clone());
                }
            }
        }
    }
    for (op, r) in batch.drain(..).zip(results) {
        op.answer(ctx, r);
    }
}

/// What a failed pipeline means for each of its commands; reports a lost connection.
fn batch_error(ctx: &Ctx, c: &Conn, e: &redis::RedisError) -> OpError {
    if is_lost(e) {
        ctx.lost(c.generation, e.to_string());
        OpError::Unavailable(e.to_string())
    } else {
        OpError::Failed(e.to_string())
    }
}

async fn retry_scripts(
    ctx: &Ctx,
    c: &mut Conn,
    batch: &mut [Op],
    which: &[usize],
) -> Result<Vec<Result<Value, OpError>>, OpError> {
    // A script's hash is that of its source: loading again gives the same ones.
    load_scripts(&mut c.mc, ctx.settings.sharded)
        .await
        .map_err(|e| OpError::Failed(format!("after NOSCRIPT: {e}")))?;
    let mut pipe = redis::pipe();
    for &i in which {
        if let Some(op) = batch.get_mut(i) {
            pipe.add_command(packed(&mut op.kind, &c.shas, &ctx.anchor));
        }
    }
    match c.mc.send_packed_commands(&pipe, 0, which.len()).await {
        Ok(values) if values.len() == which.len() => Ok(values
            .into_iter()
            .map(|v| {
                v.extract_error()
                    .map_err(|e| OpError::Failed(e.to_string()))
            })
            .collect()),
        Ok(values) => Err(OpError::Failed(format!(
            "{} replies to {} commands",
            values.len(),
            which.len()
        ))),
        Err(e) => Err(batch_error(ctx, c, &e)),
    }
}

async fn load_scripts(mc: &mut MultiplexedConnection, sharded: bool) -> Result<Shas, String> {
    let mut pipe = redis::pipe();
    for src in sources(sharded) {
        pipe.cmd("SCRIPT").arg("LOAD").arg(src.as_str());
    }
    let shas: Vec<String> = pipe
        .query_async(mc)
        .await
        .map_err(|e| format!("loading the scripts: {e}"))?;
    let n = shas.len();
    let shas: [String; SCRIPT_COUNT] = shas
        .try_into()
        .map_err(|_| format!("loading the scripts: {n} hashes for {SCRIPT_COUNT} scripts"))?;
    Ok(Arc::new(shas))
}

// ---- the supervisor -----------------------------------------------------------------------

/// The subscription connection: plain pub/sub (`SUBSCRIBE`, RESP2) on one Redis, sharded
/// pub/sub (`SSUBSCRIBE`, on a RESP3 connection whose pushes come through a channel) on a
/// Redis Cluster shard.
enum Sub {
    Plain(PubSubSink),
    Sharded(MultiplexedConnection),
}

/// What the subscription connection receives.
enum Feed {
    Plain(PubSubStream),
    Sharded(mpsc::UnboundedReceiver<PushInfo>),
}

/// One thing from the feed.
enum FeedItem {
    Message(redis::Msg),
    Push(PushInfo),
}

impl Feed {
    async fn next(&mut self) -> Option<FeedItem> {
        match self {
            Feed::Plain(s) => s.next().await.map(FeedItem::Message),
            Feed::Sharded(rx) => rx.recv().await.map(FeedItem::Push),
        }
    }
}

/// The subscription connection and the channels it is subscribed to.
struct Link {
    sub: Sub,
    subscribed: HashSet<Arc<str>>,
}

impl Link {
    async fn ping(&mut self) -> Result<(), String> {
        match &mut self.sub {
            Sub::Plain(sink) => sink.ping::<Value>().await.map(|_| ()),
            Sub::Sharded(mc) => redis::cmd("PING")
                .query_async::<Value>(mc)
                .await
                .map(|_| ()),
        }
        .map_err(|e| format!("ping: {e}"))
    }

    /// `(UN)SUBSCRIBE` or `S(UN)SUBSCRIBE` of one channel.
    async fn send(&mut self, on: bool, channel: &str) -> Result<(), redis::RedisError> {
        match &mut self.sub {
            Sub::Plain(sink) if on => sink.subscribe(channel).await,
            Sub::Plain(sink) => sink.unsubscribe(channel).await,
            Sub::Sharded(mc) => {
                // One channel per command: the confirmation is the command's one reply.
                let mut cmd = redis::cmd(if on { "SSUBSCRIBE" } else { "SUNSUBSCRIBE" });
                cmd.arg(channel);
                mc.send_packed_command(&cmd)
                    .await?
                    .extract_error()
                    .map(|_| ())
            }
        }
    }

    async fn reconcile(&mut self, shared: &Shared, topic: &Arc<str>) -> Result<(), String> {
        let want = shared.local().wants_channel(topic);
        let have = self.subscribed.contains(topic);
        let timeout = shared.ctx.settings.command_timeout;
        let channel = shared.ctx.channel(topic);
        if want != have {
            let what = match (want, shared.ctx.settings.sharded) {
                (true, false) => "SUBSCRIBE",
                (false, false) => "UNSUBSCRIBE",
                (true, true) => "SSUBSCRIBE",
                (false, true) => "SUNSUBSCRIBE",
            };
            match tokio::time::timeout(timeout, self.send(want, &channel)).await {
                Ok(Ok(())) if want => {
                    self.subscribed.insert(topic.clone());
                }
                Ok(Ok(())) => {
                    self.subscribed.remove(topic);
                }
                Ok(Err(e)) => return Err(format!("{what} {channel}: {e}")),
                Err(_) => return Err(format!("{what} {channel}: timed out")),
            }
        }
        Ok(())
    }
}

async fn connect(
    target: &Target,
    s: &Settings,
    generation: u64,
) -> Result<(Conn, Link, Feed, String), String> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(s.connect_timeout)
        .set_response_timeout(s.command_timeout)
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let client = target.client(s).await?;
    // Where a cluster slot's part went, for the logs.
    let server = match target {
        Target::Server(_) => String::new(),
        Target::Slot { .. } => format!(" (primary {})", client.get_connection_info().addr),
    };
    let mut mc = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    let shas = load_scripts(&mut mc, s.sharded).await?;
    let (sub, feed) = if s.sharded {
        let mut info = client.get_connection_info().clone();
        info.redis.protocol = redis::ProtocolVersion::RESP3;
        let client = redis::Client::open(info).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let config = config.set_push_sender(tx);
        let sub = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        (Sub::Sharded(sub), Feed::Sharded(rx))
    } else {
        let pubsub = tokio::time::timeout(s.connect_timeout, client.get_async_pubsub())
            .await
            .map_err(|_| "timed out connecting".to_owned())?
            .map_err(|e| e.to_string())?;
        let (sink, stream) = pubsub.split();
        (Sub::Plain(sink), Feed::Plain(stream))
    };
    Ok((
        Conn {
            mc,
            shas,
            generation,
        },
        Link {
            sub,
            subscribed: HashSet::new(),
        },
        feed,
        server,
    ))
}

async fn supervise(shared: Arc<Shared>, target: Target, conn_tx: watch::Sender<Option<Conn>>) {
    let _closed = CloseSignals(&shared.ctx.signals);
    let settings = shared.ctx.settings.clone();
    let mut delay = settings.backoff_min;
    let mut generation = 0u64;
    // Log the first failure of an outage as a warning, the retries at debug level only.
    let mut warned = false;
    let mut connected_before = false;
    loop {
        generation += 1;
        let (conn, mut link, stream, server) = match connect(&target, &settings, generation).await {
            Ok(c) => c,
            Err(e) => {
                let was_up = shared.health.failed(&e);
                let wait = jittered(delay, &shared.ctx.node, generation);
                if was_up || !warned {
                    tracing::warn!(
                        "redis engine (node {}): cannot reach Redis at {}: {e}; retrying in {wait:?} \
                         and backing off (local connections keep working)",
                        shared.ctx.node,
                        shared.addr
                    );
                    warned = true;
                } else {
                    tracing::debug!("redis engine: still cannot reach {}: {e}", shared.addr);
                }
                wait_down(&shared, wait).await;
                delay = (delay * 2).min(settings.backoff_max);
                continue;
            }
        };
        let _ = conn_tx.send_replace(Some(conn));
        // The full resync below covers whatever was asked for until now.
        shared.ctx.signals.resync.store(false, Ordering::Release);
        match resync(&shared, &mut link, true).await {
            Ok(topics) => {
                shared.health.set_up();
                if !connected_before {
                    tracing::info!(
                        "redis engine (node {}): connected to Redis at {}{server}",
                        shared.ctx.node,
                        shared.addr
                    );
                } else {
                    crate::meter::engine_reconnected();
                    tracing::info!(
                        "redis engine (node {}): Redis at {}{server} is back: up again, {topics} \
                         topic channel(s) resubscribed, presence and counts written again",
                        shared.ctx.node,
                        shared.addr
                    );
                }
                connected_before = true;
                delay = settings.backoff_min;
            }
            Err(e) => {
                let _ = conn_tx.send_replace(None);
                let e = e.reason();
                shared.health.set_down(&e);
                let wait = jittered(delay, &shared.ctx.node, generation);
                tracing::warn!(
                    "redis engine: setting up after connecting failed: {e}; retrying in {wait:?}"
                );
                wait_down(&shared, wait).await;
                delay = (delay * 2).min(settings.backoff_max);
                continue;
            }
        }
        let reason = run(&shared, &mut link, stream, generation).await;
        let _ = conn_tx.send_replace(None);
        shared.health.set_down(&reason);
        tracing::warn!(
            "redis engine (node {}): lost Redis at {}: {reason}; publishes fail until it is back, \
             local connections keep working; reconnecting",
            shared.ctx.node,
            shared.addr
        );
        warned = true;
    }
}

/// `delay` spread over its second half: nodes that lost Redis together do not all come back
/// at the same instant (and resync together) when it returns.
fn jittered(delay: Duration, node: &str, attempt: u64) -> Duration {
    use std::hash::BuildHasher;
    // A fresh `RandomState` has random keys: a cheap random number without a dependency.
    let r = std::collections::hash_map::RandomState::new().hash_one((node, attempt));
    let half = delay / 2;
    let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(r % spread.saturating_add(1))
}

/// Waits `delay` while down, answering what needs an answer.
async fn wait_down(shared: &Shared, delay: Duration) {
    let signals = &shared.ctx.signals;
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return,
            _ = signals.wake.notified() => {
                // The next connection starts from scratch (full resync, every wanted channel).
                let _ = signals.take_lost();
                let reason = shared.health.reason();
                for tx in signals.take_reconcile().into_values().flatten() {
                    let _ = tx.send(Err(OpError::Unavailable(reason.clone())));
                }
            }
        }
    }
}

async fn run(shared: &Arc<Shared>, link: &mut Link, mut stream: Feed, generation: u64) -> String {
    let settings = &shared.ctx.settings;
    let signals = &shared.ctx.signals;
    let every = (settings.node_timeout / 3).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // The full resync that just ran beat for the node.
    *shared.beat_ok.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    shared.beat_failures.store(0, Ordering::Relaxed);
    let prefix = format!("{}:t:", settings.prefix);
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(FeedItem::Message(msg)) => {
                    dispatch(shared, &prefix, msg.get_channel_name(), msg.get_payload_bytes())
                }
                Some(FeedItem::Push(push)) => {
                    if let Err(reason) = pushed(shared, link, &prefix, push) {
                        return reason;
                    }
                }
                None => return "the subscription connection closed".into(),
            },
            _ = signals.wake.notified() => {
                if let Err(reason) = handle_signals(shared, link, generation).await {
                    return reason;
                }
            }
            _ = tick.tick() => {
                match tokio::time::timeout(settings.command_timeout, link.ping()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return e,
                    Err(_) => return "ping timed out".into(),
                }
                if !shared.stopping() {
                    if let Some(reason) = beat_overdue(shared) {
                        return reason;
                    }
                    heartbeat(shared);
                }
                // A resync put off because the queue was full is tried again.
                if signals.resync.load(Ordering::Acquire) {
                    signals.wake.notify_one();
                }
            }
        }
    }
}

/// Does what was asked of the supervisor; an error is a reason to reconnect.
async fn handle_signals(
    shared: &Arc<Shared>,
    link: &mut Link,
    generation: u64,
) -> Result<(), String> {
    let signals = &shared.ctx.signals;
    if let Some((g, reason)) = signals.take_lost() {
        if g == generation {
            return Err(reason);
        }
    }
    let mut failed: Option<String> = None;
    for (topic, replies) in signals.take_reconcile() {
        let r = match &failed {
            Some(e) => Err(e.clone()),
            None => link.reconcile(shared, &topic).await,
        };
        if let Err(e) = &r {
            failed.get_or_insert_with(|| e.clone());
        }
        for tx in replies {
            let _ = tx.send(r.clone().map_err(OpError::Unavailable));
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if shared.stopping() || !signals.resync.swap(false, Ordering::AcqRel) {
        return Ok(());
    }
    tracing::info!(
        "redis engine (node {}): writing presence and counts again",
        shared.ctx.node
    );
    match resync(shared, link, false).await {
        Ok(_) => Ok(()),
        Err(OpError::Overloaded) => {
            // Not a reason to drop the connection: the next tick tries again.
            signals.resync.store(true, Ordering::Release);
            Ok(())
        }
        Err(e) => Err(e.reason()),
    }
}

/// A reason to go down when no heartbeat got through for half the node timeout: past the
/// whole of it the other nodes take this one for dead (and remove its members) while it
/// would still report itself up.
fn beat_overdue(shared: &Shared) -> Option<String> {
    let since = shared
        .beat_ok
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .elapsed();
    (since > shared.ctx.settings.node_timeout / 2).then(|| {
        format!(
            "no heartbeat got through for {since:?} ({} failed in a row)",
            shared.beat_failures.load(Ordering::Relaxed)
        )
    })
}

/// Refreshes the node's heartbeat (and reaps dead nodes); resyncs when Redis forgot the node.
fn heartbeat(shared: &Arc<Shared>) {
    let ctx = &shared.ctx;
    let args = ctx.args().s(&ctx.node).ms(ctx.settings.node_timeout).done();
    let sent = Instant::now();
    let rx = ctx.script(ScriptId::Heartbeat, args);
    let shared = shared.clone();
    tokio::spawn(async move {
        let failure = match rx.await {
            Ok(Ok(Value::Int(n))) => {
                {
                    let mut ok = shared.beat_ok.lock().unwrap_or_else(|p| p.into_inner());
                    *ok = (*ok).max(sent);
                }
                shared.beat_failures.store(0, Ordering::Relaxed);
                if n == 1 {
                    shared.ctx.resync();
                }
                return;
            }
            Ok(Ok(other)) => format!("unexpected reply {other:?}"),
            Ok(Err(e)) => e.reason(),
            Err(_) => "engine stopped".into(),
        };
        let n = shared.beat_failures.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::warn!(
            "redis engine (node {}): heartbeat failed ({n} in a row): {failure}",
            shared.ctx.node
        );
    });
}

/// A push on the sharded subscription connection: a message, the confirmation of a channel
/// change (already handled), or the server dropping a channel this node still wants (its
/// slot moved, the server became a replica): a reason to reconnect to the slot's new owner.
fn pushed(shared: &Shared, link: &Link, prefix: &str, push: PushInfo) -> Result<(), String> {
    let name = |v: Option<&Value>| match v {
        Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    };
    match push.kind {
        PushKind::SMessage | PushKind::Message => {
            if let [channel, Value::BulkString(payload), ..] = push.data.as_slice() {
                dispatch(shared, prefix, &name(Some(channel)), payload);
            }
            Ok(())
        }
        PushKind::SUnsubscribe => {
            let channel = name(push.data.first());
            match channel.strip_prefix(prefix) {
                Some(topic) if link.subscribed.contains(topic) => Err(format!(
                    "the server dropped the shard channel {channel} (its slot moved)"
                )),
                _ => Ok(()),
            }
        }
        PushKind::Disconnection => Err("the subscription connection closed".into()),
        _ => Ok(()),
    }
}

fn dispatch(shared: &Shared, prefix: &str, name: &str, payload: &[u8]) {
    let Some(topic) = name.strip_prefix(prefix) else {
        return;
    };
    let topic: Arc<str> = Arc::from(topic);
    match wire::decode(&topic, payload) {
        Ok(item) => shared.local().dispatch(&shared.ctx, &topic, item),
        Err(e) => tracing::warn!("redis engine: dropped a bad message on {name}: {e}"),
    }
}

fn bulk_strings(v: &Value) -> Vec<Vec<u8>> {
    match v {
        Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                Value::BulkString(b) => Some(b.clone()),
                Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

pub(crate) fn string(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        _ => String::new(),
    }
}

pub(crate) fn strings(v: &Value) -> Vec<Vec<u8>> {
    bulk_strings(v)
}

async fn wait(rx: Waiter) -> Result<Value, OpError> {
    match rx.await {
        Ok(r) => r,
        Err(_) => Err(OpError::Unavailable("engine stopped".into())),
    }
}

/// Writes this node's counts and presence to Redis again; with `full` (a new connection) also
/// subscribes to the channels and catches up topics with history.
async fn resync(shared: &Arc<Shared>, link: &mut Link, full: bool) -> Result<usize, OpError> {
    let ctx = &shared.ctx;
    let mut members = redis::cmd("SMEMBERS");
    members.arg(format!("{}:nt:{}", ctx.settings.prefix, ctx.node));
    let stale = strings(&wait(ctx.command(members)).await?);
    let (waits, wanted) = {
        let local = shared.local();
        let snapshot = local.snapshot();
        let mut waits = Vec::new();
        let mut args = ctx.args().s(&ctx.node).ms(ctx.settings.node_timeout);
        for (topic, n) in &snapshot.counts {
            args = args.s(topic).n(*n as u64);
        }
        waits.push(ctx.script(ScriptId::ResyncCounts, args.done()));
        let mut topics = local.tracked_topics();
        topics.extend(
            stale
                .iter()
                .map(|t| Arc::<str>::from(String::from_utf8_lossy(t).as_ref())),
        );
        for topic in topics {
            let mut args = ctx.args().s(&topic).s(&ctx.node);
            for (id, key, meta) in local.tracked(&topic) {
                let (k, m) = wire::entry_parts(&key, &meta);
                args = args.s(&id.to_string()).s(&k).s(&m);
            }
            waits.push(ctx.script(ScriptId::ResyncPresence, args.done()));
        }
        (waits, snapshot.wanted)
    };
    if full {
        link.subscribed.clear();
        subscribe_and_catch_up(shared, link, &wanted).await?;
    }
    for w in waits {
        wait(w).await?;
    }
    Ok(link.subscribed.len())
}

/// Subscribes the new connection to the channels, then delivers what topics with history
/// missed. No live message is read meanwhile (they wait in the connection), and those that
/// the catch-up already delivered are skipped when they are (see `Local::caught_up`).
async fn subscribe_and_catch_up(
    shared: &Arc<Shared>,
    link: &mut Link,
    wanted: &[Arc<str>],
) -> Result<(), OpError> {
    let ctx = &shared.ctx;
    for topic in wanted {
        link.reconcile(shared, topic)
            .await
            .map_err(OpError::Unavailable)?;
    }
    for topic in wanted {
        let Some(h) = ctx.settings.history_for(topic) else {
            continue;
        };
        let Some((epoch, seq)) = shared.local().seen(topic) else {
            continue;
        };
        let args = ctx
            .args()
            .s(topic)
            .ms(h.ttl.unwrap_or_default())
            .ms(ctx.settings.history_expiry)
            .s(&super::new_epoch())
            .s(&epoch)
            .n(seq)
            .done();
        let v = wait(ctx.script(ScriptId::Catchup, args)).await?;
        let Value::Array(parts) = &v else {
            tracing::warn!("redis engine: unexpected reply to the catch-up of {topic}");
            continue;
        };
        let [now_epoch, now_seq, items] = parts.as_slice() else {
            tracing::warn!("redis engine: unexpected reply to the catch-up of {topic}");
            continue;
        };
        let (now_epoch, now_seq, items) = (string(now_epoch), int(now_seq), strings(items));
        let missed = if now_epoch == *epoch {
            now_seq.saturating_sub(seq as i64).max(0) as u64
        } else {
            tracing::warn!(
                "redis engine: the history of {topic} restarted while this node was away \
                 (epoch {epoch} is gone): what it held after seq {seq} is lost"
            );
            now_seq.max(0) as u64
        };
        if (items.len() as u64) < missed {
            tracing::warn!(
                "redis engine: {topic} missed {missed} publication(s) while this node was away; \
                 the history holds only the last {}: subscribers here get a gap",
                items.len()
            );
        }
        let mut decoded = Vec::with_capacity(items.len());
        for m in &items {
            match wire::decode(topic, m) {
                Ok(item) => decoded.push(item),
                Err(e) => {
                    tracing::warn!("redis engine: skipped a bad history entry of {topic}: {e}")
                }
            }
        }
        if !decoded.is_empty() {
            tracing::info!(
                "redis engine: {topic} caught up {} publication(s) missed while away",
                decoded.len()
            );
        }
        shared.local().caught_up(ctx, topic, decoded);
    }
    Ok(())
}
