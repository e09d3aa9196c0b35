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
//! While Redis is unreachable the engine is down: commands fail at once with
//! `engine_unavailable` instead of waiting, local subscribers stay where they are.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::Value;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::local::Local;
use super::lua::{self, ScriptId, SCRIPT_COUNT};
use super::wire;
use crate::engine::{EngineHealth, HistoryConfig, TopicPattern};
use crate::error::Error;
use crate::id::ConnectionId;

/// Pipelined commands per round trip, at most.
const MAX_BATCH: usize = 256;

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
}

impl Settings {
    pub(crate) fn history_for(&self, topic: &str) -> Option<HistoryConfig> {
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
    /// Redis answered with an error, or the answer made no sense.
    Failed(String),
}

impl OpError {
    pub(crate) fn into_error(self) -> Error {
        match self {
            OpError::Unavailable(reason) => unavailable(&reason),
            OpError::Failed(detail) => Error::internal(format_args!("redis engine: {detail}")),
        }
    }
}

/// The error publishers (and other callers) get while Redis is unreachable.
pub(crate) fn unavailable(reason: &str) -> Error {
    Error::new(
        "engine_unavailable",
        format!("the Redis engine is unavailable ({reason}); try again later"),
    )
    .with_status(actix_web::http::StatusCode::SERVICE_UNAVAILABLE)
}

/// A history position a node delivered up to: epoch and sequence number.
type Seen = (Arc<str>, u64);

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
    fn answer(self, r: Result<Value, OpError>) {
        if let Some(tx) = self.reply {
            let _ = tx.send(r);
        }
    }
}

/// Messages for the supervisor.
pub(crate) enum Ctl {
    /// Make the node's subscription to the topic's channel match whether it has subscribers;
    /// answer once it does.
    Reconcile(Arc<str>, Option<oneshot::Sender<Result<(), OpError>>>),
    /// Write this node's presence and counts again (Redis forgot the node).
    Resync,
    /// The executor lost the connection of this generation.
    Lost(u64, String),
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
    exec: mpsc::UnboundedSender<Op>,
    ctl: mpsc::UnboundedSender<Ctl>,
}

impl Ctx {
    pub(crate) fn args(&self) -> Args {
        Args(vec![self.settings.prefix.as_bytes().to_vec()])
    }

    pub(crate) fn channel(&self, topic: &str) -> String {
        format!("{}:t:{topic}", self.settings.prefix)
    }

    fn queue(&self, kind: OpKind, reply: Option<Reply>) {
        if let Err(mpsc::error::SendError(op)) = self.exec.send(Op { kind, reply }) {
            op.answer(Err(OpError::Unavailable("engine stopped".into())));
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

    /// Asks the supervisor to write this node's presence and counts again.
    pub(crate) fn resync(&self) {
        let _ = self.ctl.send(Ctl::Resync);
    }

    /// Asks the supervisor to (un)subscribe the node from the topic's channel as needed.
    pub(crate) fn reconcile(
        &self,
        topic: Arc<str>,
        reply: Option<oneshot::Sender<Result<(), OpError>>>,
    ) {
        if let Err(mpsc::error::SendError(Ctl::Reconcile(_, Some(tx)))) =
            self.ctl.send(Ctl::Reconcile(topic, reply))
        {
            let _ = tx.send(Err(OpError::Unavailable("engine stopped".into())));
        }
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
    pub(crate) fn ensure_up(&self) -> Result<(), Error> {
        if self.health.is_up() && !self.stopping() {
            Ok(())
        } else {
            Err(unavailable(&self.health.reason()))
        }
    }
}

/// The connection the executor uses, with the scripts' hashes.
#[derive(Clone)]
struct Conn {
    mc: MultiplexedConnection,
    shas: Arc<Vec<String>>,
    generation: u64,
}

fn sources() -> &'static [String; SCRIPT_COUNT] {
    static SOURCES: OnceLock<[String; SCRIPT_COUNT]> = OnceLock::new();
    SOURCES.get_or_init(lua::sources)
}

/// Starts the engine's tasks on the current runtime (the engine's own thread).
pub(crate) fn start(settings: Settings, node: Arc<str>, client: redis::Client) -> Arc<Shared> {
    let (exec_tx, exec_rx) = mpsc::unbounded_channel();
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let (conn_tx, conn_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        ctx: Ctx {
            settings,
            node,
            exec: exec_tx,
            ctl: ctl_tx,
        },
        local: Mutex::new(Local::default()),
        health: HealthState::new(),
        addr: client.get_connection_info().addr.to_string(),
        stopping: AtomicBool::new(false),
    });
    tokio::spawn(executor(shared.clone(), exec_rx, conn_rx));
    tokio::spawn(supervise(shared.clone(), client, ctl_rx, conn_tx));
    shared
}

// ---- the executor -------------------------------------------------------------------------

async fn executor(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Op>,
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
                    op.answer(Err(OpError::Unavailable(reason.clone())));
                }
            }
        }
    }
}

fn packed(kind: &mut OpKind, shas: &[String]) -> redis::Cmd {
    match kind {
        OpKind::Cmd(cmd) => std::mem::replace(cmd, redis::Cmd::new()),
        OpKind::Script(id, args) => {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&shas[*id as usize]).arg(0);
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

async fn run_batch(shared: &Shared, mut c: Conn, batch: &mut Vec<Op>) {
    let mut pipe = redis::pipe();
    for op in batch.iter_mut() {
        pipe.add_command(packed(&mut op.kind, &c.shas));
    }
    match c.mc.send_packed_commands(&pipe, 0, batch.len()).await {
        Ok(values) if values.len() == batch.len() => {
            let mut reloaded = false;
            for (mut op, v) in batch.drain(..).zip(values) {
                let mut result = v.extract_error();
                if let (Err(e), OpKind::Script(..)) = (&result, &op.kind) {
                    if e.kind() == redis::ErrorKind::NoScriptError {
                        // Someone flushed the scripts: load them again and retry this one.
                        if !reloaded {
                            reloaded = load_scripts(&mut c.mc).await.is_ok();
                        }
                        let cmd = packed(&mut op.kind, &c.shas);
                        result = c.mc.send_packed_command(&cmd).await;
                    }
                }
                op.answer(result.map_err(|e| OpError::Failed(e.to_string())));
            }
        }
        Ok(values) => {
            let detail = format!("{} replies to {} commands", values.len(), batch.len());
            for op in batch.drain(..) {
                op.answer(Err(OpError::Failed(detail.clone())));
            }
        }
        Err(e) => {
            let lost = is_lost(&e);
            for op in batch.drain(..) {
                op.answer(Err(if lost {
                    OpError::Unavailable(e.to_string())
                } else {
                    OpError::Failed(e.to_string())
                }));
            }
            if lost {
                let _ = shared.ctx.ctl.send(Ctl::Lost(c.generation, e.to_string()));
            }
        }
    }
}

async fn load_scripts(mc: &mut MultiplexedConnection) -> Result<Vec<String>, String> {
    let mut pipe = redis::pipe();
    for src in sources() {
        pipe.cmd("SCRIPT").arg("LOAD").arg(src.as_str());
    }
    pipe.query_async(mc)
        .await
        .map_err(|e| format!("loading the scripts: {e}"))
}

// ---- the supervisor -----------------------------------------------------------------------

/// The subscription connection and the channels it is subscribed to.
struct Link {
    sink: PubSubSink,
    subscribed: HashSet<Arc<str>>,
}

impl Link {
    async fn reconcile(&mut self, shared: &Shared, topic: &Arc<str>) -> Result<(), String> {
        let want = shared.local().wants_channel(topic);
        let have = self.subscribed.contains(topic);
        let timeout = shared.ctx.settings.command_timeout;
        let channel = shared.ctx.channel(topic);
        if want && !have {
            match tokio::time::timeout(timeout, self.sink.subscribe(&channel)).await {
                Ok(Ok(())) => {
                    self.subscribed.insert(topic.clone());
                }
                Ok(Err(e)) => return Err(format!("SUBSCRIBE {channel}: {e}")),
                Err(_) => return Err(format!("SUBSCRIBE {channel}: timed out")),
            }
        } else if !want && have {
            match tokio::time::timeout(timeout, self.sink.unsubscribe(&channel)).await {
                Ok(Ok(())) => {
                    self.subscribed.remove(topic);
                }
                Ok(Err(e)) => return Err(format!("UNSUBSCRIBE {channel}: {e}")),
                Err(_) => return Err(format!("UNSUBSCRIBE {channel}: timed out")),
            }
        }
        Ok(())
    }
}

async fn connect(
    client: &redis::Client,
    s: &Settings,
    generation: u64,
) -> Result<(Conn, PubSubSink, PubSubStream), String> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(s.connect_timeout)
        .set_response_timeout(s.command_timeout)
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let mut mc = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    let shas = load_scripts(&mut mc).await?;
    let pubsub = tokio::time::timeout(s.connect_timeout, client.get_async_pubsub())
        .await
        .map_err(|_| "timed out connecting".to_owned())?
        .map_err(|e| e.to_string())?;
    let (sink, stream) = pubsub.split();
    Ok((
        Conn {
            mc,
            shas: Arc::new(shas),
            generation,
        },
        sink,
        stream,
    ))
}

async fn supervise(
    shared: Arc<Shared>,
    client: redis::Client,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    conn_tx: watch::Sender<Option<Conn>>,
) {
    let settings = shared.ctx.settings.clone();
    let mut delay = settings.backoff_min;
    let mut generation = 0u64;
    // Log the first failure of an outage as a warning, the retries at debug level only.
    let mut warned = false;
    let mut connected_before = false;
    loop {
        generation += 1;
        let (conn, sink, stream) = match connect(&client, &settings, generation).await {
            Ok(c) => c,
            Err(e) => {
                let was_up = shared.health.failed(&e);
                if was_up || !warned {
                    log::warn!(
                        "redis engine (node {}): cannot reach Redis at {}: {e}; retrying in {delay:?} \
                         and backing off (local connections keep working)",
                        shared.ctx.node,
                        shared.addr
                    );
                    warned = true;
                } else {
                    log::debug!("redis engine: still cannot reach {}: {e}", shared.addr);
                }
                wait_down(&shared, &mut ctl, delay).await;
                delay = (delay * 2).min(settings.backoff_max);
                continue;
            }
        };
        let _ = conn_tx.send_replace(Some(conn));
        let mut link = Link {
            sink,
            subscribed: HashSet::new(),
        };
        match resync(&shared, &mut link, true).await {
            Ok(topics) => {
                shared.health.set_up();
                if !connected_before {
                    log::info!(
                        "redis engine (node {}): connected to Redis at {}",
                        shared.ctx.node,
                        shared.addr
                    );
                } else {
                    log::info!(
                        "redis engine (node {}): Redis at {} is back: up again, {topics} topic \
                         channel(s) resubscribed, presence and counts written again",
                        shared.ctx.node,
                        shared.addr
                    );
                }
                connected_before = true;
                delay = settings.backoff_min;
            }
            Err(e) => {
                let _ = conn_tx.send_replace(None);
                shared.health.set_down(&e);
                log::warn!("redis engine: setting up after connecting failed: {e}; retrying");
                wait_down(&shared, &mut ctl, delay).await;
                delay = (delay * 2).min(settings.backoff_max);
                continue;
            }
        }
        let reason = run(&shared, &mut link, stream, &mut ctl, generation).await;
        let _ = conn_tx.send_replace(None);
        shared.health.set_down(&reason);
        log::warn!(
            "redis engine (node {}): lost Redis at {}: {reason}; publishes fail until it is back, \
             local connections keep working; reconnecting",
            shared.ctx.node,
            shared.addr
        );
        warned = true;
    }
}

/// Waits `delay` while down, answering what needs an answer.
async fn wait_down(shared: &Shared, ctl: &mut mpsc::UnboundedReceiver<Ctl>, delay: Duration) {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return,
            msg = ctl.recv() => match msg {
                Some(Ctl::Reconcile(_, Some(tx))) => {
                    let _ = tx.send(Err(OpError::Unavailable(shared.health.reason())));
                }
                Some(_) => {}
                None => std::future::pending::<()>().await,
            },
        }
    }
}

async fn run(
    shared: &Arc<Shared>,
    link: &mut Link,
    mut stream: PubSubStream,
    ctl: &mut mpsc::UnboundedReceiver<Ctl>,
    generation: u64,
) -> String {
    let settings = &shared.ctx.settings;
    let every = (settings.node_timeout / 3).max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let prefix = format!("{}:t:", settings.prefix);
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => dispatch(shared, &prefix, &msg),
                None => return "the subscription connection closed".into(),
            },
            msg = ctl.recv() => match msg {
                Some(Ctl::Reconcile(topic, reply)) => {
                    let r = link.reconcile(shared, &topic).await;
                    if let Some(tx) = reply {
                        let _ = tx.send(r.clone().map_err(OpError::Unavailable));
                    }
                    if let Err(e) = r {
                        return e;
                    }
                }
                Some(Ctl::Resync) if shared.stopping() => {}
                Some(Ctl::Resync) => {
                    log::info!("redis engine (node {}): writing presence and counts again", shared.ctx.node);
                    if let Err(e) = resync(shared, link, false).await {
                        return e;
                    }
                }
                Some(Ctl::Lost(g, reason)) if g == generation => return reason,
                Some(Ctl::Lost(..)) => {}
                None => std::future::pending::<()>().await,
            },
            _ = tick.tick() => {
                match tokio::time::timeout(settings.command_timeout, link.sink.ping::<Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("ping: {e}"),
                    Err(_) => return "ping timed out".into(),
                }
                heartbeat(shared);
            }
        }
    }
}

/// Refreshes the node's heartbeat (and reaps dead nodes); resyncs when Redis forgot the node.
fn heartbeat(shared: &Arc<Shared>) {
    if shared.stopping() {
        return;
    }
    let ctx = &shared.ctx;
    let args = ctx.args().s(&ctx.node).ms(ctx.settings.node_timeout).done();
    let rx = ctx.script(ScriptId::Heartbeat, args);
    let shared = shared.clone();
    tokio::spawn(async move {
        if let Ok(Ok(Value::Int(1))) = rx.await {
            let _ = shared.ctx.ctl.send(Ctl::Resync);
        }
    });
}

fn dispatch(shared: &Shared, prefix: &str, msg: &redis::Msg) {
    let name = msg.get_channel_name();
    let Some(topic) = name.strip_prefix(prefix) else {
        return;
    };
    let topic: Arc<str> = Arc::from(topic);
    match wire::decode(&topic, msg.get_payload_bytes()) {
        Ok(item) => shared.local().dispatch(&shared.ctx, &topic, item),
        Err(e) => log::warn!("redis engine: dropped a bad message on {name}: {e}"),
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

async fn wait(rx: Waiter) -> Result<Value, String> {
    match rx.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(OpError::Unavailable(e) | OpError::Failed(e))) => Err(e),
        Err(_) => Err("engine stopped".into()),
    }
}

/// Writes this node's counts and presence to Redis again; with `full` (a new connection) also
/// subscribes to the channels and catches up topics with history.
async fn resync(shared: &Arc<Shared>, link: &mut Link, full: bool) -> Result<usize, String> {
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
        // Hold live messages of topics with history until what they missed is delivered.
        let held: Vec<(Arc<str>, Seen)> = {
            let mut local = shared.local();
            wanted
                .iter()
                .filter(|t| ctx.settings.history_for(t).is_some())
                .filter_map(|t| local.hold(t).map(|seen| (t.clone(), seen)))
                .collect()
        };
        let result = subscribe_and_catch_up(shared, link, &wanted, &held).await;
        if result.is_err() {
            let mut local = shared.local();
            for (topic, _) in &held {
                local.caught_up(ctx, topic, Vec::new());
            }
        }
        result?;
    }
    for w in waits {
        wait(w).await?;
    }
    Ok(link.subscribed.len())
}

async fn subscribe_and_catch_up(
    shared: &Arc<Shared>,
    link: &mut Link,
    wanted: &[Arc<str>],
    held: &[(Arc<str>, Seen)],
) -> Result<(), String> {
    let ctx = &shared.ctx;
    for topic in wanted {
        link.reconcile(shared, topic).await?;
    }
    for (topic, (epoch, seq)) in held {
        let Some(h) = ctx.settings.history_for(topic) else {
            continue;
        };
        let args = ctx
            .args()
            .s(topic)
            .ms(h.ttl.unwrap_or_default())
            .ms(ctx.settings.history_expiry)
            .s(&super::new_epoch())
            .s(epoch)
            .n(*seq)
            .done();
        let v = wait(ctx.script(ScriptId::Catchup, args)).await?;
        let items = match &v {
            Value::Array(parts) if parts.len() == 3 => strings(&parts[2]),
            _ => Vec::new(),
        };
        let decoded: Vec<wire::Incoming> = items
            .iter()
            .filter_map(|m| wire::decode(topic, m).ok())
            .collect();
        if !decoded.is_empty() {
            log::info!(
                "redis engine: {topic} caught up {} publication(s) missed while away",
                decoded.len()
            );
        }
        shared.local().caught_up(ctx, topic, decoded);
    }
    Ok(())
}
