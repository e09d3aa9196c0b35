//! The node: its connection to NATS and what runs on the engine's thread (the publisher queue,
//! the topic readers, the heartbeat and reaper, the counts writer, the reconnect supervisor).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};

use super::local::{Cursor, Local, LocalSub};
use crate::engine::{
    EngineError, EngineHealth, EngineStats, HistoryConfig, Position, Presence, PresenceEntry,
    Publication, Publish, SubscribeRequest, Subscribed, Subscriber, TopicInfo, TopicPattern,
};
use crate::id::ConnectionId;

/// Publishes waiting for the connection; past this, publishes fail at once.
const QUEUE: usize = 65_536;

/// How long a topic with history stays quiet before its stream is compared with what the
/// node delivered.
const QUIET: Duration = Duration::from_millis(500);

/// Attempts at a compare-and-set of a topic's presence before giving up.
const CAS_ATTEMPTS: usize = 64;

/// Default of [`Settings::reorder_wait`].
pub(super) const REORDER_WAIT: Duration = Duration::from_secs(1);

/// Default of [`Settings::reorder_limit`].
pub(super) const REORDER_LIMIT: usize = 4_096;

#[derive(Clone, Debug)]
pub(super) struct Settings {
    pub(super) prefix: String,
    pub(super) history: Vec<(TopicPattern, HistoryConfig)>,
    pub(super) node_timeout: Duration,
    pub(super) command_timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) backoff_min: Duration,
    pub(super) backoff_max: Duration,
    /// How long a node holds republished history messages that came ahead of a missing one
    /// before it reads the missing one from the stream instead. nats-server republishes a
    /// stored message after it let go of the stream, so messages stored at once for two
    /// connections can come out of sequence order; the one overtaken normally follows within
    /// microseconds. The wait only runs out in full when a message was really lost (dropped
    /// by a full subscription).
    pub(super) reorder_wait: Duration,
    /// Republished history messages a topic's reader holds ahead of a missing one, at most;
    /// past this it reads the missing ones from the stream at once.
    pub(super) reorder_limit: usize,
}

impl Settings {
    pub(super) fn history_for(&self, topic: &str) -> Option<HistoryConfig> {
        self.history
            .iter()
            .find(|(p, _)| p.matches(topic))
            .map(|(_, c)| *c)
    }

    fn core_subject(&self, topic: &str) -> String {
        format!("{}.t.{}", self.prefix, hex(topic))
    }

    fn history_subject(&self, topic: &str) -> String {
        format!("{}.h.{}", self.prefix, hex(topic))
    }

    fn stream_name(&self, topic: &str) -> String {
        format!("{}_h_{}", self.prefix, hex(topic))
    }
}

fn hex(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

pub(super) fn unavailable(detail: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(format!("NATS: {detail}"))
}

/// Whether the node is connected, and why not.
pub(super) struct Health {
    up: AtomicBool,
    reason: Mutex<String>,
    changed: Notify,
}

impl Health {
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub(super) fn get(&self) -> EngineHealth {
        if self.is_up() {
            EngineHealth::Up
        } else {
            EngineHealth::Down {
                reason: self
                    .reason
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            }
        }
    }

    fn set(&self, up: bool, reason: &str) {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_owned();
        let was = self.up.swap(up, Ordering::AcqRel);
        if was != up {
            if up {
                tracing::info!("nats engine: connected again");
            } else {
                tracing::warn!("nats engine: down: {reason}");
            }
        }
        self.changed.notify_waiters();
    }

    /// Waits until the health changes, at most `limit`.
    pub(super) async fn changed(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.changed.notified()).await;
    }
}

/// One publish waiting for the connection.
struct Outgoing {
    publish: Publish,
    reply: oneshot::Sender<Result<(), EngineError>>,
}

/// What every task of the node shares.
pub(super) struct Shared {
    pub(super) node: Arc<str>,
    pub(super) health: Health,
    settings: Settings,
    client: async_nats::Client,
    js: jetstream::Context,
    presence: kv::Store,
    nodes: kv::Store,
    counts: kv::Store,
    rt: tokio::runtime::Handle,
    local: Mutex<Local>,
    /// Subscribes set topics up one at a time (the subject, the history reader).
    setup: tokio::sync::Mutex<()>,
    outgoing: mpsc::Sender<Outgoing>,
    counts_dirty: Notify,
    stopped: AtomicBool,
}

/// A message as it travels: a publication or a presence diff.
#[derive(Serialize)]
struct WireOut<'a> {
    e: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<ConnectionId>,
    d: &'a RawValue,
}

#[derive(Deserialize)]
struct WireIn {
    e: String,
    #[serde(default)]
    x: Option<ConnectionId>,
    d: Box<RawValue>,
}

fn encode(event: &str, exclude: Option<ConnectionId>, data: &RawValue) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&WireOut {
            e: event,
            x: exclude,
            d: data,
        })
        .unwrap_or_default(),
    )
}

fn decode(
    topic: &Arc<str>,
    payload: &[u8],
    position: Option<(Arc<str>, u64)>,
) -> Option<(Publication, Option<ConnectionId>)> {
    match serde_json::from_slice::<WireIn>(payload) {
        Ok(w) => Some((
            Publication::new(topic.clone(), Arc::from(w.e), Arc::from(w.d), position),
            w.x,
        )),
        Err(e) => {
            tracing::warn!("nats engine: skipped a bad message on {topic}: {e}");
            None
        }
    }
}

/// A topic's presence as stored: connection → entry.
type Entries = BTreeMap<String, Entry>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Entry {
    /// The node that owns it.
    n: String,
    /// The presence key.
    k: String,
    /// The metadata.
    m: Value,
}

fn grouped(entries: &Entries) -> Presence {
    let mut out = Presence::new();
    for e in entries.values() {
        out.entry(e.k.clone()).or_default().metas.push(e.m.clone());
    }
    out
}

fn presence_publication(topic: &Arc<str>, event: &str, data: &Value) -> Publication {
    let raw = serde_json::value::to_raw_value(data).unwrap_or_else(|_| RawValue::NULL.to_owned());
    Publication::new(topic.clone(), Arc::from(event), Arc::from(raw), None)
}

/// The diff between two states of a topic's presence: keys that appeared and disappeared.
fn diff(before: &Entries, after: &Entries) -> Option<Value> {
    let (b, a) = (grouped(before), grouped(after));
    let joins: BTreeMap<&String, &PresenceEntry> =
        a.iter().filter(|(k, _)| !b.contains_key(*k)).collect();
    let leaves: BTreeMap<&String, &PresenceEntry> =
        b.iter().filter(|(k, _)| !a.contains_key(*k)).collect();
    if joins.is_empty() && leaves.is_empty() {
        return None;
    }
    Some(serde_json::json!({ "joins": joins, "leaves": leaves }))
}

fn backoff(settings: &Settings, attempts: usize) -> Duration {
    let exp = settings
        .backoff_min
        .saturating_mul(1u32 << attempts.min(16) as u32)
        .min(settings.backoff_max);
    // Drawn from the upper half, so that nodes which lost NATS together spread out.
    let nanos = exp.as_nanos() as u64;
    let jitter = ConnectionId::next().as_bytes()[10] as u64;
    Duration::from_nanos(nanos / 2 + (nanos / 2) * jitter / 255)
}

/// Connects, creates the buckets, starts the node's tasks. Runs on the engine's thread.
pub(super) async fn start(
    url: String,
    settings: Settings,
    node: Arc<str>,
) -> Result<Arc<Shared>, EngineError> {
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let delay_settings = settings.clone();
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(settings.connect_timeout)
        .request_timeout(Some(settings.command_timeout))
        .ping_interval((settings.node_timeout / 3).max(Duration::from_millis(500)))
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| backoff(&delay_settings, attempts))
        .event_callback(move |event| {
            let _ = events_tx.send(event);
            async {}
        })
        .connect(url.as_str())
        .await
        .map_err(|e| unavailable(format_args!("cannot connect to {url}: {e}")))?;
    let js = jetstream::new(client.clone());
    // The buckets' streams are made here as async-nats makes them (`create_key_value` reads
    // account fields that nats-server 2.9 does not send): `KV_{bucket}`, one value per key.
    let mut stores = Vec::new();
    for (name, max_age) in [
        ("presence", Duration::ZERO),
        ("nodes", settings.node_timeout),
        ("counts", Duration::ZERO),
    ] {
        let bucket = format!("{}_{name}", settings.prefix);
        let config = stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_messages: -1,
            max_bytes: -1,
            max_message_size: -1,
            max_consumers: -1,
            max_age,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map_err(|e| unavailable(format_args!("cannot create the {name} bucket: {e}")))?;
        let store = js
            .get_key_value(bucket)
            .await
            .map_err(|e| unavailable(format_args!("cannot open the {name} bucket: {e}")))?;
        stores.push(store);
    }
    let counts = stores
        .pop()
        .ok_or_else(|| EngineError::failed("no bucket"))?;
    let nodes = stores
        .pop()
        .ok_or_else(|| EngineError::failed("no bucket"))?;
    let presence = stores
        .pop()
        .ok_or_else(|| EngineError::failed("no bucket"))?;
    let (outgoing, queue) = mpsc::channel(QUEUE);
    let shared = Arc::new(Shared {
        node,
        health: Health {
            up: AtomicBool::new(true),
            reason: Mutex::new(String::new()),
            changed: Notify::new(),
        },
        settings,
        client,
        js,
        presence,
        nodes,
        counts,
        rt: tokio::runtime::Handle::current(),
        local: Mutex::new(Local::default()),
        setup: tokio::sync::Mutex::new(()),
        outgoing,
        counts_dirty: Notify::new(),
        stopped: AtomicBool::new(false),
    });
    shared.beat().await?;
    tokio::spawn(publisher(shared.clone(), queue));
    tokio::spawn(heartbeat(shared.clone()));
    tokio::spawn(counts_writer(shared.clone()));
    tokio::spawn(supervisor(shared.clone(), events_rx));
    Ok(shared)
}

impl Shared {
    pub(super) fn local(&self) -> MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ensure_up(&self) -> Result<(), EngineError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(unavailable("engine stopped"));
        }
        if self.health.is_up() {
            Ok(())
        } else {
            Err(unavailable(self.health.get_reason()))
        }
    }

    /// Runs `fut` on the engine's thread (where the NATS client lives) and waits for it.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, EngineError>> + Send + 'static,
    ) -> Result<T, EngineError> {
        match self.rt.spawn(fut).await {
            Ok(r) => r,
            Err(_) => Err(unavailable("engine stopped")),
        }
    }

    /// Queues a publish now, in call order.
    pub(super) fn enqueue(
        &self,
        publish: Publish,
    ) -> Result<oneshot::Receiver<Result<(), EngineError>>, EngineError> {
        self.ensure_up()?;
        let (reply, rx) = oneshot::channel();
        self.outgoing
            .try_send(Outgoing { publish, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => unavailable("engine overloaded"),
                mpsc::error::TrySendError::Closed(_) => unavailable("engine stopped"),
            })?;
        Ok(rx)
    }

    async fn beat(&self) -> Result<(), EngineError> {
        self.nodes
            .put(&*self.node, Bytes::from_static(b"1"))
            .await
            .map(|_| ())
            .map_err(|e| unavailable(format_args!("heartbeat: {e}")))
    }

    /// Removes `id` from `topic` (as a subscriber when `unsubscribe`) and its presence.
    pub(super) fn remove(self: &Arc<Self>, topic: &Arc<str>, id: ConnectionId, unsubscribe: bool) {
        let tracked = {
            let mut local = self.local();
            let Some(t) = local.topics.get_mut(topic) else {
                return;
            };
            if unsubscribe && t.subs.remove(id) {
                self.counts_dirty.notify_one();
            }
            let tracked = t.tracked.remove(&id).is_some();
            local.gc(topic);
            tracked
        };
        if tracked {
            let (shared, topic) = (self.clone(), topic.clone());
            self.rt.spawn(async move {
                let cid = id.to_string();
                let edit = edit_presence(&shared, &topic, |e| e.remove(&cid).is_some()).await;
                if let Err(e) = edit {
                    tracing::warn!("nats engine: removing {id} from {topic}'s presence: {e}");
                }
            });
        }
    }

    /// Hands a message to the topic's local subscribers; `seq`: its place in the topic's
    /// history, skipped when already delivered.
    fn deliver(
        self: &Arc<Self>,
        topic: &Arc<str>,
        p: &Publication,
        exclude: Option<ConnectionId>,
        seq: Option<u64>,
    ) {
        let gone = {
            let mut local = self.local();
            let Some(t) = local.topics.get_mut(topic) else {
                return;
            };
            if let Some(seq) = seq {
                match &mut t.cursor {
                    Some(c) if seq > c.last && p.epoch.as_deref() == Some(&*c.epoch) => {
                        c.last = seq
                    }
                    _ => return,
                }
            }
            t.fan_out(p, exclude)
        };
        for id in gone {
            self.remove(topic, id, true);
        }
    }

    /// Delivers the history message `seq` (or, when it could not be read, moves the topic's
    /// cursor past it, so that it holds back nothing after it).
    fn deliver_or_pass(
        self: &Arc<Self>,
        topic: &Arc<str>,
        message: Option<&(Publication, Option<ConnectionId>)>,
        seq: u64,
    ) {
        match message {
            Some((p, exclude)) => self.deliver(topic, p, *exclude, Some(seq)),
            None => {
                let mut local = self.local();
                if let Some(c) = local.topics.get_mut(topic).and_then(|t| t.cursor.as_mut()) {
                    c.last = c.last.max(seq);
                }
            }
        }
    }

    fn cursor(&self, topic: &Arc<str>) -> Option<(Arc<str>, u64)> {
        let local = self.local();
        let c = local.topics.get(topic)?.cursor.as_ref()?;
        Some((c.epoch.clone(), c.last))
    }

    async fn stream(&self, topic: &str, h: HistoryConfig) -> Result<stream::Stream, EngineError> {
        let config = stream::Config {
            name: self.settings.stream_name(topic),
            subjects: vec![self.settings.history_subject(topic)],
            max_messages: h.max_len.max(1) as i64,
            max_age: h.ttl.unwrap_or_default(),
            max_bytes: -1,
            max_message_size: -1,
            max_consumers: -1,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            allow_direct: true,
            num_replicas: 1,
            // Stored publications come back on the topic's subject, in stream order, with
            // their sequence number (header `Nats-Sequence`): the nodes' live path.
            republish: Some(stream::Republish {
                source: self.settings.history_subject(topic),
                destination: self.settings.core_subject(topic),
                headers_only: false,
            }),
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(|e| unavailable(format_args!("history stream of {topic}: {e}")))
    }
}

impl Health {
    fn get_reason(&self) -> String {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn epoch_of(info: &stream::Info) -> Arc<str> {
    Arc::from(info.created.unix_timestamp_nanos().to_string())
}

/// Changes a topic's presence by compare-and-set; publishes the diff when keys appeared or
/// disappeared. `change` returns whether it changed anything. Returns the entries after.
async fn edit_presence(
    shared: &Arc<Shared>,
    topic: &Arc<str>,
    change: impl Fn(&mut Entries) -> bool,
) -> Result<Entries, EngineError> {
    let key = hex(topic);
    let store = &shared.presence;
    for _ in 0..CAS_ATTEMPTS {
        let entry = store
            .entry(key.clone())
            .await
            .map_err(|e| unavailable(format_args!("presence of {topic}: {e}")))?;
        let (before, revision) = match &entry {
            Some(e) if e.operation == kv::Operation::Put => (
                serde_json::from_slice::<Entries>(&e.value).unwrap_or_default(),
                Some(e.revision),
            ),
            Some(e) => (Entries::new(), Some(e.revision)),
            None => (Entries::new(), None),
        };
        let mut after = before.clone();
        if !change(&mut after) {
            return Ok(after);
        }
        let written = if after.is_empty() {
            store
                .delete_expect_revision(&key, revision)
                .await
                .map_err(|e| e.to_string())
        } else {
            let value = Bytes::from(serde_json::to_vec(&after).unwrap_or_default());
            match revision {
                Some(r) => store
                    .update(&key, value, r)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => store
                    .create(&key, value)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            }
        };
        match written {
            Ok(()) => {
                if let Some(d) = diff(&before, &after) {
                    let data = serde_json::value::to_raw_value(&d)
                        .unwrap_or_else(|_| RawValue::NULL.to_owned());
                    let subject = shared.settings.core_subject(topic);
                    shared
                        .client
                        .publish(subject, encode("presence_diff", None, &data))
                        .await
                        .map_err(|e| unavailable(format_args!("presence diff: {e}")))?;
                }
                return Ok(after);
            }
            Err(e) => {
                if !shared.health.is_up() {
                    return Err(unavailable(format_args!("presence of {topic}: {e}")));
                }
                tracing::debug!("nats engine: presence of {topic} changed meanwhile ({e})");
            }
        }
    }
    Err(unavailable(format_args!(
        "presence of {topic}: too many concurrent changes"
    )))
}

async fn read_presence(shared: &Shared, topic: &str) -> Result<Entries, EngineError> {
    let v = shared
        .presence
        .get(hex(topic))
        .await
        .map_err(|e| unavailable(format_args!("presence of {topic}: {e}")))?;
    Ok(v.and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default())
}

// ---- subscribe, track, reads --------------------------------------------------------------

/// Puts the topic's subject (and history reader) in place if this node has none yet.
async fn ensure_topic(shared: &Arc<Shared>, topic: &Arc<str>) -> Result<(), EngineError> {
    let _setup = shared.setup.lock().await;
    if shared
        .local()
        .topics
        .get(topic)
        .is_some_and(|t| !t.tasks.is_empty())
    {
        return Ok(());
    }
    let core = shared
        .client
        .subscribe(shared.settings.core_subject(topic))
        .await
        .map_err(|e| unavailable(format_args!("subscribing to {topic}: {e}")))?;
    shared
        .client
        .flush()
        .await
        .map_err(|e| unavailable(format_args!("subscribing to {topic}: {e}")))?;
    // On the subject first, then the position: whatever is stored after it reaches the node.
    let history = shared.settings.history_for(topic);
    let cursor = match history {
        Some(h) => {
            let mut stream = shared.stream(topic, h).await?;
            let info = stream
                .info()
                .await
                .map_err(|e| unavailable(format_args!("history of {topic}: {e}")))?;
            Some(Cursor {
                epoch: epoch_of(info),
                last: info.state.last_sequence,
            })
        }
        None => None,
    };
    let catch_up = Arc::new(Notify::new());
    let task = tokio::spawn(reader(
        shared.clone(),
        topic.clone(),
        core,
        history,
        catch_up.clone(),
    ));
    let mut local = shared.local();
    let t = local.topics.entry(topic.clone()).or_default();
    t.tasks = vec![task.abort_handle()];
    t.cursor = cursor;
    t.catch_up = Some(catch_up);
    Ok(())
}

/// Republished history messages that came ahead of a missing one (sequence number → the
/// message, `None` when it could not be read: its place is taken all the same), and since
/// when the reader waits for the missing ones.
#[derive(Default)]
struct Ahead {
    held: BTreeMap<u64, Option<(Publication, Option<ConnectionId>)>>,
    since: Option<tokio::time::Instant>,
}

impl Ahead {
    /// Holds `seq`, which came ahead of a missing message.
    fn hold(&mut self, seq: u64, message: Option<(Publication, Option<ConnectionId>)>) {
        self.held.insert(seq, message);
        self.since.get_or_insert_with(tokio::time::Instant::now);
    }

    /// Delivers the held messages that follow the cursor without a gap; drops those it has
    /// passed (read from the stream meanwhile) and those of another epoch.
    fn release(&mut self, shared: &Arc<Shared>, topic: &Arc<str>) {
        if self.held.is_empty() {
            // The usual case, in order: no cursor lookup (a lock) per message.
            self.since = None;
            return;
        }
        let before = self.held.len();
        loop {
            let Some((epoch, last)) = shared.cursor(topic) else {
                self.held.clear();
                break;
            };
            self.held.retain(|seq, m| {
                *seq > last
                    && m.as_ref()
                        .is_none_or(|(p, _)| p.epoch.as_deref() == Some(&*epoch))
            });
            match self.held.first_entry() {
                Some(e) if *e.key() == last + 1 => {
                    let (seq, message) = e.remove_entry();
                    shared.deliver_or_pass(topic, message.as_ref(), seq);
                }
                _ => break,
            }
        }
        if self.held.is_empty() {
            self.since = None;
        } else if self.held.len() < before {
            // Missing messages arrived: the rest may well be on their way too.
            self.since = Some(tokio::time::Instant::now());
        }
    }

    /// Waits no longer: reads the missing messages up to the newest held one from the stream
    /// (what it still holds) and delivers them and the held ones in sequence order.
    async fn close_gaps(&mut self, shared: &Arc<Shared>, topic: &Arc<str>, h: HistoryConfig) {
        self.since = None;
        while let Some((seq, message)) = self.held.pop_first() {
            let Some((epoch, last)) = shared.cursor(topic) else {
                self.held.clear();
                return;
            };
            if seq <= last {
                continue;
            }
            if seq > last + 1 {
                fill(shared, topic, h, &epoch, last + 1, seq - 1).await;
            }
            shared.deliver_or_pass(topic, message.as_ref(), seq);
        }
    }
}

/// Reads a topic's subject: presence diffs and publications without history as they come;
/// publications with history as the stream republishes them (header `Nats-Sequence`),
/// delivered in sequence order. The republished messages of publications stored at once can
/// arrive out of sequence order: one that comes ahead of a missing one is held until the
/// missing one arrives, or at most `reorder_wait`, after which the missing one is read from
/// the stream. `catch_up` (the connection is back) reads what was stored meanwhile.
async fn reader(
    shared: Arc<Shared>,
    topic: Arc<str>,
    mut core: async_nats::Subscriber,
    history: Option<HistoryConfig>,
    catch_up: Arc<Notify>,
) {
    // Whether history messages came since the stream was last compared with the cursor: a
    // republished message lost on its way leaves a gap that only a later one reveals, so a
    // topic that goes quiet is compared once (what is missing then is newer than everything
    // delivered).
    let mut unchecked = false;
    let mut ahead = Ahead::default();
    let (reorder_wait, reorder_limit) =
        (shared.settings.reorder_wait, shared.settings.reorder_limit);
    loop {
        let gap_deadline = ahead.since.map(|t| t + reorder_wait);
        tokio::select! {
            _ = tokio::time::sleep_until(gap_deadline.unwrap_or_else(tokio::time::Instant::now)),
                if gap_deadline.is_some() => {
                if let Some(h) = history {
                    ahead.close_gaps(&shared, &topic, h).await;
                }
            }
            _ = tokio::time::sleep(QUIET), if unchecked && ahead.held.is_empty() => {
                unchecked = false;
                if let Some(h) = history {
                    if let Err(e) = catch_up_history(&shared, &topic, h).await {
                        tracing::debug!("nats engine: checking {topic}'s history: {e}");
                    }
                }
            }
            msg = core.next() => {
                let Some(msg) = msg else { return };
                let seq = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_SEQUENCE))
                    .and_then(|v| v.as_str().parse::<u64>().ok());
                match (history, seq) {
                    (Some(h), Some(seq)) => {
                        unchecked = true;
                        let Some((epoch, last)) = shared.cursor(&topic) else { continue };
                        if seq <= last || ahead.held.contains_key(&seq) {
                            continue;
                        }
                        let message = decode(&topic, &msg.payload, Some((epoch, seq)));
                        if seq == last + 1 {
                            shared.deliver_or_pass(&topic, message.as_ref(), seq);
                            ahead.release(&shared, &topic);
                        } else {
                            // Ahead of a message that is not here yet: held until it comes.
                            tracing::trace!("nats engine: {topic}: {seq} came before {}", last + 1);
                            ahead.hold(seq, message);
                            if ahead.held.len() > reorder_limit {
                                ahead.close_gaps(&shared, &topic, h).await;
                            }
                        }
                    }
                    _ => {
                        if let Some((p, exclude)) = decode(&topic, &msg.payload, None) {
                            shared.deliver(&topic, &p, exclude, None);
                        }
                    }
                }
            }
            _ = catch_up.notified(), if history.is_some() => {
                if let Some(h) = history {
                    if let Err(e) = catch_up_history(&shared, &topic, h).await {
                        tracing::warn!("nats engine: catching up {topic}: {e}");
                    }
                    ahead.release(&shared, &topic);
                }
            }
        }
    }
}

/// Delivers what the stream stored after this node's last delivery of the topic.
async fn catch_up_history(
    shared: &Arc<Shared>,
    topic: &Arc<str>,
    h: HistoryConfig,
) -> Result<(), EngineError> {
    let mut stream = shared.stream(topic, h).await?;
    let info = stream
        .info()
        .await
        .map_err(|e| unavailable(format_args!("history of {topic}: {e}")))?;
    let (epoch, to) = (epoch_of(info), info.state.last_sequence);
    let from = {
        let mut local = shared.local();
        let Some(c) = local.topics.get_mut(topic).and_then(|t| t.cursor.as_mut()) else {
            return Ok(());
        };
        if c.epoch != epoch {
            tracing::warn!("nats engine: the history of {topic} started over (new epoch)");
            c.epoch = epoch.clone();
            c.last = 0;
        }
        c.last + 1
    };
    fill(shared, topic, h, &epoch, from, to).await;
    Ok(())
}

/// Delivers `from..=to` of the topic's stream (what it still holds) to the local subscribers.
async fn fill(
    shared: &Arc<Shared>,
    topic: &Arc<str>,
    h: HistoryConfig,
    epoch: &Arc<str>,
    from: u64,
    to: u64,
) {
    match replay(shared, topic, h, epoch, from, to).await {
        Ok(items) => {
            if (items.len() as u64) < to + 1 - from.min(to + 1) {
                tracing::warn!(
                    "nats engine: {topic}'s history no longer holds all of {from}..={to}"
                );
            }
            for (seq, p) in items {
                shared.deliver(topic, &p, None, Some(seq));
            }
        }
        Err(e) => tracing::warn!("nats engine: reading {topic}'s history: {e}"),
    }
}

/// The publications `from..=to` of a topic's stream, as deliveries.
async fn replay(
    shared: &Shared,
    topic: &Arc<str>,
    h: HistoryConfig,
    epoch: &Arc<str>,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, Publication)>, EngineError> {
    let mut out = Vec::new();
    if from > to {
        return Ok(out);
    }
    let stream = shared.stream(topic, h).await?;
    for seq in from..=to {
        match stream.get_raw_message(seq).await {
            Ok(m) => {
                if let Some((p, _)) = decode(topic, &m.payload, Some((epoch.clone(), seq))) {
                    out.push((seq, p));
                }
            }
            Err(e) if shared.health.is_up() => {
                tracing::debug!("nats engine: {topic} no longer holds {seq}: {e}");
            }
            Err(e) => return Err(unavailable(format_args!("history of {topic}: {e}"))),
        }
    }
    Ok(out)
}

pub(super) async fn subscribe(
    shared: Arc<Shared>,
    req: SubscribeRequest,
) -> Result<Subscribed, EngineError> {
    shared.ensure_up()?;
    let topic = req.topic.clone();
    let id = req.subscriber.id;
    ensure_topic(&shared, &topic).await?;
    // The subscriber, pending: live messages are buffered until the snapshot is handed over.
    let position = {
        let mut local = shared.local();
        let t = local.topics.entry(topic.clone()).or_default();
        if t.subs.insert(LocalSub {
            sub: req.subscriber.clone(),
            pending: Some(Vec::new()),
        }) {
            shared.counts_dirty.notify_one();
        }
        t.cursor.as_ref().map(|c| (c.epoch.clone(), c.last))
    };
    match snapshot(&shared, &req, position.clone()).await {
        Ok((first, recovered)) => {
            let mut local = shared.local();
            if let Some(t) = local.topics.get_mut(&topic) {
                if let Some(s) = t.subs.get_mut(id) {
                    for p in &first {
                        s.sub.sink.deliver(p);
                    }
                    let covered = position.as_ref().map_or(0, |(_, last)| *last);
                    for p in s.pending.take().unwrap_or_default() {
                        if p.seq.is_none_or(|seq| seq > covered) {
                            s.sub.sink.deliver(&p);
                        }
                    }
                }
            }
            Ok(Subscribed {
                position: position.map(|(epoch, seq)| Position {
                    epoch: epoch.to_string(),
                    seq,
                }),
                recovered,
            })
        }
        Err(e) => {
            shared.remove(&topic, id, true);
            Err(e)
        }
    }
}

/// What a new subscriber gets first: the presence state (entering its own entry first), the
/// replayed history. And whether the requested recovery worked.
async fn snapshot(
    shared: &Arc<Shared>,
    req: &SubscribeRequest,
    position: Option<(Arc<str>, u64)>,
) -> Result<(Vec<Publication>, Option<bool>), EngineError> {
    let topic = &req.topic;
    let entries = match &req.presence {
        Some((key, meta)) => enter(shared, topic, req.subscriber.id, key, meta).await?,
        None => read_presence(shared, topic).await?,
    };
    let mut first = Vec::new();
    if req.presence.is_some() || !entries.is_empty() {
        let state = serde_json::to_value(grouped(&entries)).unwrap_or_default();
        first.push(presence_publication(topic, "presence_state", &state));
    }
    let history = shared.settings.history_for(topic);
    let mut recovered = req.recover.as_ref().map(|_| false);
    if let (Some(h), Some((epoch, last))) = (history, &position) {
        let held_from = {
            let mut stream = shared.stream(topic, h).await?;
            let info = stream
                .info()
                .await
                .map_err(|e| unavailable(format_args!("history of {topic}: {e}")))?;
            info.state.first_sequence.max(1)
        };
        let range = match (&req.recover, req.last) {
            (Some(p), _) if *p.epoch == **epoch && p.seq <= *last => {
                if p.seq + 1 >= held_from || p.seq == *last {
                    recovered = Some(true);
                    Some(p.seq + 1)
                } else {
                    None
                }
            }
            (Some(_), _) => None,
            (None, Some(n)) if n > 0 => Some(last.saturating_sub(n as u64 - 1).max(held_from)),
            (None, _) => None,
        };
        if let Some(from) = range {
            let items = replay(shared, topic, h, epoch, from, *last).await?;
            if recovered == Some(true) && items.len() as u64 != (*last + 1).saturating_sub(from) {
                // Trimmed while being read: not all of the gap is there.
                recovered = Some(false);
            }
            first.extend(items.into_iter().map(|(_, p)| p));
        }
    }
    Ok((first, recovered))
}

/// Enters `id`'s presence under `key` (locally and in the bucket); the entries after.
async fn enter(
    shared: &Arc<Shared>,
    topic: &Arc<str>,
    id: ConnectionId,
    key: &str,
    meta: &Value,
) -> Result<Entries, EngineError> {
    {
        let mut local = shared.local();
        let t = local.topics.entry(topic.clone()).or_default();
        t.tracked.insert(id, (key.to_owned(), meta.clone()));
    }
    let entry = Entry {
        n: shared.node.to_string(),
        k: key.to_owned(),
        m: meta.clone(),
    };
    let cid = id.to_string();
    let entered = edit_presence(shared, topic, |e| {
        if e.get(&cid) == Some(&entry) {
            return false;
        }
        e.insert(cid.clone(), entry.clone());
        true
    })
    .await;
    if entered.is_err() {
        shared.remove(topic, id, false);
    }
    entered
}

pub(super) async fn track(
    shared: Arc<Shared>,
    topic: Arc<str>,
    subscriber: Subscriber,
    key: String,
    meta: Value,
) -> Result<(), EngineError> {
    shared.ensure_up()?;
    let entries = enter(&shared, &topic, subscriber.id, &key, &meta).await?;
    let state = serde_json::to_value(grouped(&entries)).unwrap_or_default();
    subscriber
        .sink
        .deliver(&presence_publication(&topic, "presence_state", &state));
    Ok(())
}

pub(super) async fn presence(
    shared: Arc<Shared>,
    topic: Arc<str>,
) -> Result<Presence, EngineError> {
    shared.ensure_up()?;
    let live = live_nodes(&shared).await?;
    let entries = read_presence(&shared, &topic).await?;
    Ok(grouped(
        &entries
            .into_iter()
            .filter(|(_, e)| live.contains(&e.n))
            .collect(),
    ))
}

/// The keys a bucket holds, deleted ones included (their marker stays until it ages out).
/// Read from the stream's subjects: a key-value `keys()` watch can wait forever for a
/// write that raced with it.
async fn keys_of(store: &kv::Store) -> Result<Vec<String>, EngineError> {
    let prefix = format!("$KV.{}.", store.name);
    let subjects = store
        .stream
        .info_with_subjects(format!("{prefix}>"))
        .await
        .map_err(|e| unavailable(format_args!("keys of {}: {e}", store.name)))?;
    let subjects: Vec<Result<(String, usize), _>> = subjects.collect().await;
    let mut out = Vec::new();
    for s in subjects {
        let (subject, _) =
            s.map_err(|e| unavailable(format_args!("keys of {}: {e}", store.name)))?;
        if let Some(key) = subject.strip_prefix(&prefix) {
            out.push(key.to_owned());
        }
    }
    Ok(out)
}

async fn live_nodes(shared: &Shared) -> Result<HashSet<String>, EngineError> {
    // A node's heartbeat expires with the bucket's age limit; a clean shutdown's delete
    // marker too (its entries and counts went with the shutdown).
    Ok(keys_of(&shared.nodes).await?.into_iter().collect())
}

/// Subscribers per topic over the live nodes.
pub(super) async fn counts(shared: Arc<Shared>) -> Result<HashMap<String, usize>, EngineError> {
    shared.ensure_up()?;
    let mut total: HashMap<String, usize> = HashMap::new();
    for node in live_nodes(&shared).await? {
        let v = shared
            .counts
            .get(node)
            .await
            .map_err(|e| unavailable(format_args!("counts: {e}")))?;
        let map: HashMap<String, usize> = v
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        for (topic, n) in map {
            *total.entry(topic).or_default() += n;
        }
    }
    Ok(total)
}

/// Topics with presence entries (a topic whose entries all went is deleted, but its key's
/// marker stays a while: read to tell).
async fn presence_topics(shared: &Shared) -> Result<Vec<String>, EngineError> {
    let mut out = Vec::new();
    for key in keys_of(&shared.presence).await? {
        if let Some(topic) = unhex(&key) {
            if !read_presence(shared, &topic).await?.is_empty() {
                out.push(topic);
            }
        }
    }
    Ok(out)
}

pub(super) async fn topics(shared: Arc<Shared>) -> Result<Vec<TopicInfo>, EngineError> {
    let mut all = counts(shared.clone()).await?;
    for topic in presence_topics(&shared).await? {
        all.entry(topic).or_insert(0);
    }
    let mut out: Vec<TopicInfo> = all
        .into_iter()
        .map(|(topic, subscribers)| TopicInfo { topic, subscribers })
        .collect();
    out.sort_by(|a, b| a.topic.cmp(&b.topic));
    Ok(out)
}

pub(super) async fn stats(shared: Arc<Shared>) -> Result<EngineStats, EngineError> {
    let listed = topics(shared.clone()).await?;
    let prefix = format!("{}_h_", shared.settings.prefix);
    let mut histories = 0;
    let mut streams = shared.js.streams();
    while let Some(info) = streams.next().await {
        let info = info.map_err(|e| unavailable(format_args!("streams: {e}")))?;
        if info.config.name.starts_with(&prefix) && info.state.messages > 0 {
            histories += 1;
        }
    }
    Ok(EngineStats {
        topics: listed.len(),
        subscriptions: listed.iter().map(|t| t.subscribers).sum(),
        histories,
    })
}

// ---- background tasks ---------------------------------------------------------------------

/// Sends queued publishes in order: core messages in batches confirmed by one flush,
/// JetStream publishes each answered by its acknowledgement.
async fn publisher(shared: Arc<Shared>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut streams: HashSet<Arc<str>> = HashSet::new();
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, 1024).await > 0 {
        let mut flushed = Vec::new();
        for Outgoing { publish: p, reply } in batch.drain(..) {
            if let Err(e) = shared.ensure_up() {
                let _ = reply.send(Err(e));
                continue;
            }
            let body = encode(&p.event, p.exclude, &p.data);
            match shared.settings.history_for(&p.topic) {
                Some(h) => {
                    if !streams.contains(&p.topic) {
                        if let Err(e) = shared.stream(&p.topic, h).await {
                            let _ = reply.send(Err(e));
                            continue;
                        }
                        streams.insert(p.topic.clone());
                    }
                    let subject = shared.settings.history_subject(&p.topic);
                    match shared.js.publish(subject, body).await {
                        Ok(ack) => {
                            tokio::spawn(async move {
                                let r = ack
                                    .await
                                    .map(|_| ())
                                    .map_err(|e| unavailable(format_args!("publish: {e}")));
                                let _ = reply.send(r);
                            });
                        }
                        Err(e) => {
                            streams.remove(&p.topic);
                            let _ = reply.send(Err(unavailable(format_args!("publish: {e}"))));
                        }
                    }
                }
                None => {
                    let subject = shared.settings.core_subject(&p.topic);
                    match shared.client.publish(subject, body).await {
                        Ok(()) => flushed.push(reply),
                        Err(e) => {
                            let _ = reply.send(Err(unavailable(format_args!("publish: {e}"))));
                        }
                    }
                }
            }
        }
        if !flushed.is_empty() {
            let flushed_ok = shared.client.flush().await;
            for reply in flushed {
                let _ = reply.send(
                    flushed_ok
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| unavailable(format_args!("publish: {e}"))),
                );
            }
        }
    }
}

/// Beats every third of the node timeout and removes the presence and counts of nodes whose
/// heartbeat expired.
async fn heartbeat(shared: Arc<Shared>) {
    let every = shared.settings.node_timeout / 3;
    loop {
        tokio::time::sleep(every).await;
        if !shared.health.is_up() {
            continue;
        }
        if let Err(e) = shared.beat().await {
            tracing::warn!("nats engine: {e}");
            continue;
        }
        if let Err(e) = reap(&shared).await {
            tracing::debug!("nats engine: removing dead nodes: {e}");
        }
    }
}

async fn reap(shared: &Arc<Shared>) -> Result<(), EngineError> {
    let live = live_nodes(shared).await?;
    if !live.contains(&*shared.node) {
        // Our own heartbeat is not visible (yet): reap nothing rather than the wrong nodes.
        return Ok(());
    }
    for topic in presence_topics(shared).await? {
        let topic: Arc<str> = Arc::from(topic);
        let entries = read_presence(shared, &topic).await?;
        if entries.values().any(|e| !live.contains(&e.n)) {
            edit_presence(shared, &topic, |e| {
                let before = e.len();
                e.retain(|_, entry| live.contains(&entry.n));
                e.len() != before
            })
            .await?;
        }
    }
    for node in keys_of(&shared.counts).await? {
        if !live.contains(&node) {
            let _ = shared.counts.delete(&node).await;
        }
    }
    Ok(())
}

/// Writes this node's counts whenever they changed (the latest, once: changes coalesce).
async fn counts_writer(shared: Arc<Shared>) {
    let mut attempts = 0;
    loop {
        shared.counts_dirty.notified().await;
        let counts = shared.local().counts();
        let value = Bytes::from(serde_json::to_vec(&counts).unwrap_or_default());
        if let Err(e) = shared.counts.put(&*shared.node, value).await {
            tracing::debug!("nats engine: writing the counts: {e}");
            attempts += 1;
            tokio::time::sleep(backoff(&shared.settings, attempts)).await;
            shared.counts_dirty.notify_one();
        } else {
            attempts = 0;
        }
    }
}

/// Follows the connection: down when it drops; when it is back, writes the node's heartbeat,
/// presence and counts again, then up.
async fn supervisor(shared: Arc<Shared>, mut events: mpsc::UnboundedReceiver<async_nats::Event>) {
    while let Some(event) = events.recv().await {
        match event {
            async_nats::Event::Disconnected => {
                shared.health.set(false, "lost the connection to NATS");
            }
            async_nats::Event::Connected if !shared.health.is_up() => {
                let mut attempts = 0;
                loop {
                    match resync(&shared).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::debug!("nats engine: writing this node again: {e}");
                            attempts += 1;
                            tokio::time::sleep(backoff(&shared.settings, attempts)).await;
                        }
                    }
                }
                shared.health.set(true, "");
            }
            _ => {}
        }
    }
}

async fn resync(shared: &Arc<Shared>) -> Result<(), EngineError> {
    shared
        .client
        .flush()
        .await
        .map_err(|e| unavailable(format_args!("flush: {e}")))?;
    shared.beat().await?;
    let entries = shared.local().entries();
    for (topic, id, key, meta) in entries {
        let entry = Entry {
            n: shared.node.to_string(),
            k: key,
            m: meta,
        };
        let cid = id.to_string();
        edit_presence(shared, &topic, |e| {
            if e.get(&cid) == Some(&entry) {
                return false;
            }
            e.insert(cid.clone(), entry.clone());
            true
        })
        .await?;
    }
    // Every stream this node reads must answer before it calls itself up.
    let histories: Vec<Arc<str>> = shared
        .local()
        .topics
        .iter()
        .filter(|(_, t)| t.cursor.is_some())
        .map(|(k, _)| k.clone())
        .collect();
    for topic in &histories {
        if let Some(h) = shared.settings.history_for(topic) {
            shared.stream(topic, h).await?;
        }
    }
    // Then each reader delivers what its stream stored meanwhile.
    for t in shared.local().topics.values() {
        if let Some(n) = &t.catch_up {
            n.notify_one();
        }
    }
    shared.counts_dirty.notify_one();
    Ok(())
}

/// A clean stop: this node's entries, counts and heartbeat go.
pub(super) async fn shutdown(shared: Arc<Shared>) -> Result<(), EngineError> {
    shared.ensure_up()?;
    shared.stopped.store(true, Ordering::Release);
    let node = shared.node.to_string();
    let topics: HashSet<Arc<str>> = shared
        .local()
        .entries()
        .into_iter()
        .map(|(t, ..)| t)
        .collect();
    for topic in topics {
        edit_presence(&shared, &topic, |e| {
            let before = e.len();
            e.retain(|_, entry| entry.n != node);
            e.len() != before
        })
        .await?;
    }
    let _ = shared.counts.delete(&node).await;
    let _ = shared.nodes.delete(&node).await;
    shared.health.set(false, "engine stopped");
    Ok(())
}
