//! One conformance suite for every [`Engine`]: what an engine promises, checked through its
//! public trait with real subscriber sinks, against several *nodes* sharing one backend.
//!
//! The same checks run, unchanged, against the in-memory engine, the Redis engine and the NATS
//! engine in this crate's tests; an engine of your own (Postgres, Kafka…) runs them from its
//! tests the same way. You describe the backend with a [`Backend`]: how to start one more node
//! on it, and optionally how long a crashed node takes to age out and how to kill and restart
//! the backend. [`run`] then checks, each on topics of its own:
//!
//! | check | what must hold |
//! |---|---|
//! | [`Check::Delivery`] | a publication reaches every subscriber on every node exactly once; `exclude` is honoured |
//! | [`Check::Order`] | each publisher's publications arrive in publish order, on every node; sequence numbers agree everywhere |
//! | [`Check::Presence`] | joins and leaves reach other nodes; several connections of one key collapse into one entry; the joiner's `presence_state` includes itself |
//! | [`Check::Crash`] | a node dropped without cleanup has its presence removed (with a leave) within the backend's crash delay |
//! | [`Check::History`] | positions, `recover` (replayed exactly, without repeats), `recovered: false` past the history or on another epoch, `last` |
//! | [`Check::Counts`] | `subscriber_count`, `topics` and `stats` add up every node's subscribers |
//! | [`Check::Churn`] | subscribing, tracking, unsubscribing and gone sinks leave no subscriber, count or presence behind |
//! | [`Check::Outage`] | with the backend killed: health is down, publishes fail with [`EngineError::Unavailable`]; restarted: delivery resumes, presence comes back, nothing is delivered twice |
//!
//! Checks the backend cannot take (no crash delay, no outage) are reported as skipped in the
//! [`Report`], so that a test can assert they ran.
//!
//! Nodes must keep history (for recovery) on topics matching [`HISTORY_TOPICS`], configured
//! as [`history_config`].
//!
//! ```
//! use std::sync::Arc;
//! use switchboard::engine::{Engine, MemoryEngine};
//! use switchboard::testing::conformance::{self, Backend, Check};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // The memory engine has one node per process: every "node" is the same engine.
//! let engine: Arc<dyn Engine> = Arc::new(
//!     MemoryEngine::builder()
//!         .shards(2)
//!         .history(conformance::HISTORY_TOPICS, conformance::history_config())
//!         .build(),
//! );
//! let backend = Backend::new(move || {
//!     let engine = engine.clone();
//!     async move { Ok(engine) }
//! });
//! let report = conformance::run(&backend).await.unwrap();
//! assert!(report.passed.contains(&Check::Delivery));
//! assert!(report.skipped.iter().any(|(check, _)| *check == Check::Outage));
//! # }
//! ```
//!
//! For an engine with separate nodes, `Backend::new` starts a new engine (a new connection to
//! the shared server) on each call; [`Backend::crash_after`] says how soon the others must
//! notice a node dropped without cleanup (its node timeout, plus a margin); [`Backend::outage`]
//! gives the kill and the restart of the server.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::engine::{
    Delivered, DeliverySink, Engine, EngineError, EngineHealth, HistoryConfig, Position,
    Publication, Publish, SendFuture, SubscribeRequest, Subscriber,
};
use crate::id::ConnectionId;

/// Topics on which nodes must keep history: `conformance:h:*`.
pub const HISTORY_TOPICS: &str = "conformance:h:*";

/// Publications the history of [`HISTORY_TOPICS`] must hold.
pub const HISTORY_LEN: usize = 8;

/// The history rule nodes must have for [`HISTORY_TOPICS`]: the last [`HISTORY_LEN`].
pub fn history_config() -> HistoryConfig {
    HistoryConfig::last(HISTORY_LEN)
}

/// How long the suite waits for what must happen (a delivery, a count to settle) before it
/// reports a violation.
pub const DEADLINE: Duration = Duration::from_secs(15);

type NodeFn = dyn Fn() -> SendFuture<Result<Arc<dyn Engine>, EngineError>> + Send + Sync;
type ActionFn = dyn Fn() -> SendFuture<()> + Send + Sync;

/// The engine under test: how to start nodes on one shared backend, and what faults it can
/// take. See the [module documentation](self).
pub struct Backend {
    node: Box<NodeFn>,
    crash_after: Option<Duration>,
    kill: Option<Box<ActionFn>>,
    restart: Option<Box<ActionFn>>,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("crash_after", &self.crash_after)
            .field("outage", &self.kill.is_some())
            .finish()
    }
}

impl Backend {
    /// A backend whose nodes `node` starts: each call returns one more node on the shared
    /// backend, connected and ready (or the same engine each time, for an engine with one node
    /// per process). The suite drops a node's last `Arc` to crash it, so keep no clone.
    pub fn new<F, Fut>(node: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn Engine>, EngineError>> + Send + 'static,
    {
        Backend {
            node: Box::new(move || Box::pin(node())),
            crash_after: None,
            kill: None,
            restart: None,
        }
    }

    /// Nodes are separate: a node dropped without cleanup (a crash) must have left the other
    /// nodes' presence within `limit`. Enables [`Check::Crash`].
    pub fn crash_after(mut self, limit: Duration) -> Self {
        self.crash_after = Some(limit);
        self
    }

    /// How to kill the backend (abruptly) and start it again at the same address (possibly
    /// empty). Enables [`Check::Outage`].
    pub fn outage<K, KF, R, RF>(mut self, kill: K, restart: R) -> Self
    where
        K: Fn() -> KF + Send + Sync + 'static,
        KF: Future<Output = ()> + Send + 'static,
        R: Fn() -> RF + Send + Sync + 'static,
        RF: Future<Output = ()> + Send + 'static,
    {
        self.kill = Some(Box::new(move || Box::pin(kill())));
        self.restart = Some(Box::new(move || Box::pin(restart())));
        self
    }

    async fn node(&self, check: Check) -> Result<Arc<dyn Engine>, Violation> {
        (self.node)()
            .await
            .map_err(|e| Violation::new(check, format!("starting a node failed: {e}")))
    }

    async fn nodes(&self, check: Check, n: usize) -> Result<Vec<Arc<dyn Engine>>, Violation> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.node(check).await?);
        }
        Ok(out)
    }
}

/// One check of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// Once per subscriber on every node.
    Delivery,
    /// Per-publisher order.
    Order,
    /// Presence across nodes.
    Presence,
    /// A crashed node's presence ages out.
    Crash,
    /// History and recovery.
    History,
    /// Counts, topics, stats.
    Counts,
    /// Unsubscribe and churn leave nothing behind.
    Churn,
    /// The backend killed and restarted mid-run.
    Outage,
}

impl Check {
    /// Every check, in the order [`run`] runs them.
    pub const ALL: [Check; 8] = [
        Check::Delivery,
        Check::Order,
        Check::Presence,
        Check::Crash,
        Check::History,
        Check::Counts,
        Check::Churn,
        Check::Outage,
    ];
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A broken promise: which check, and what was seen.
#[derive(Debug, thiserror::Error)]
#[error("engine conformance: {check}: {detail}")]
pub struct Violation {
    /// The check that failed.
    pub check: Check,
    /// What was expected and what happened instead.
    pub detail: String,
}

impl Violation {
    fn new(check: Check, detail: impl Into<String>) -> Self {
        Violation {
            check,
            detail: detail.into(),
        }
    }
}

/// What [`run`] did: the checks that passed, the ones skipped and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Checks that ran and passed.
    pub passed: Vec<Check>,
    /// Checks the backend cannot take, with the reason.
    pub skipped: Vec<(Check, &'static str)>,
}

/// Runs every check against `backend`, one after the other; the first violation ends the run.
pub async fn run(backend: &Backend) -> Result<Report, Violation> {
    let mut report = Report::default();
    for check in Check::ALL {
        match run_check(backend, check).await? {
            Outcome::Passed => report.passed.push(check),
            Outcome::Skipped(why) => report.skipped.push((check, why)),
        }
    }
    Ok(report)
}

/// Whether one check ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and passed.
    Passed,
    /// The backend cannot take it (the reason).
    Skipped(&'static str),
}

/// Runs one check against `backend` (to give each a test of its own).
///
/// A check that has not finished after [`CHECK_LIMIT`] fails: an engine call that never
/// answers is a violation too.
pub async fn run_check(backend: &Backend, check: Check) -> Result<Outcome, Violation> {
    match tokio::time::timeout(CHECK_LIMIT, checked(backend, check)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Violation::new(
            check,
            format!("not finished after {CHECK_LIMIT:?}: an engine call never answered"),
        )),
    }
}

/// How long one check may take in all.
pub const CHECK_LIMIT: Duration = Duration::from_secs(120);

async fn checked(backend: &Backend, check: Check) -> Result<Outcome, Violation> {
    let t = Topics::new();
    match check {
        Check::Delivery => delivery(backend, &t).await?,
        Check::Order => order(backend, &t).await?,
        Check::Presence => presence(backend, &t).await?,
        Check::Crash => match backend.crash_after {
            Some(limit) => crash(backend, &t, limit).await?,
            None => return Ok(Outcome::Skipped("nodes cannot crash separately")),
        },
        Check::History => history(backend, &t).await?,
        Check::Counts => counts(backend, &t).await?,
        Check::Churn => churn(backend, &t).await?,
        Check::Outage => match (&backend.kill, &backend.restart) {
            (Some(kill), Some(restart)) => outage(backend, &t, &**kill, &**restart).await?,
            _ => return Ok(Outcome::Skipped("no way to kill and restart the backend")),
        },
    }
    Ok(Outcome::Passed)
}

// ---- the sink and helpers ------------------------------------------------------------------

/// Topic names of one run: unique, so that runs on a shared backend never meet.
struct Topics(String);

impl Topics {
    fn new() -> Self {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let id = ConnectionId::next().to_string();
        let id: String = id.chars().filter(char::is_ascii_alphanumeric).collect();
        Topics(format!("{id}{n}"))
    }

    fn plain(&self, name: &str) -> Arc<str> {
        Arc::from(format!("conformance:{}:{name}", self.0))
    }

    fn history(&self, name: &str) -> Arc<str> {
        Arc::from(format!("conformance:h:{}:{name}", self.0))
    }
}

/// A subscriber that records what it gets (as JSON) and can be told to be gone.
struct Recorder {
    id: ConnectionId,
    frames: Mutex<Vec<Value>>,
    arrived: Notify,
    gone: AtomicBool,
}

impl DeliverySink for Recorder {
    fn deliver(&self, p: &Publication) -> Delivered {
        if self.gone.load(Ordering::Relaxed) {
            return Delivered::Gone;
        }
        let v = serde_json::from_str(&p.frame)
            .unwrap_or_else(|e| json!({"bad_frame": p.frame.to_string(), "error": e.to_string()}));
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(v);
        self.arrived.notify_waiters();
        Delivered::Queued
    }
}

impl Recorder {
    fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            id: ConnectionId::next(),
            frames: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            gone: AtomicBool::new(false),
        })
    }

    fn subscriber(self: &Arc<Self>) -> Subscriber {
        Subscriber {
            id: self.id,
            sink: self.clone(),
        }
    }

    fn frames(&self) -> Vec<Value> {
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publications only (no presence frames).
    fn publications(&self) -> Vec<Value> {
        self.frames()
            .into_iter()
            .filter(|f| !is_presence(f))
            .collect()
    }

    /// Waits until `cond` holds over the frames received; the frames then.
    async fn wait(
        &self,
        check: Check,
        what: &str,
        limit: Duration,
        cond: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>, Violation> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let frames = self.frames();
            if cond(&frames) {
                return Ok(frames);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                let frames = self.frames();
                if cond(&frames) {
                    return Ok(frames);
                }
                return Err(Violation::new(
                    check,
                    format!("timed out after {limit:?} waiting for {what}; got {frames:?}"),
                ));
            }
        }
    }

    /// Waits for a publication of `event` with `data`; returns everything received until then.
    async fn until_event(
        &self,
        check: Check,
        event: &str,
        data: &Value,
    ) -> Result<Vec<Value>, Violation> {
        self.wait(check, &format!("{event} {data}"), DEADLINE, |fs| {
            fs.iter().any(|f| f["event"] == event && f["data"] == *data)
        })
        .await
    }

    /// Waits for the `n`th frame matching `pred` (counting from 1); returns it.
    async fn nth(
        &self,
        check: Check,
        what: &str,
        n: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, Violation> {
        let frames = self
            .wait(check, what, DEADLINE, |fs| {
                fs.iter().filter(|f| pred(f)).count() >= n
            })
            .await?;
        Ok(frames
            .into_iter()
            .filter(|f| pred(f))
            .nth(n - 1)
            .unwrap_or(Value::Null))
    }
}

fn is_presence(f: &Value) -> bool {
    f["event"]
        .as_str()
        .is_some_and(|e| e.starts_with("presence_"))
}

fn is_diff(f: &Value) -> bool {
    f["event"] == "presence_diff"
}

fn raw(v: &Value) -> Arc<RawValue> {
    Arc::from(serde_json::value::to_raw_value(v).unwrap_or_else(|_| RawValue::NULL.to_owned()))
}

fn publish(topic: &Arc<str>, event: &str, data: Value) -> Publish {
    Publish {
        topic: topic.clone(),
        event: Arc::from(event),
        data: raw(&data),
        exclude: None,
    }
}

async fn publish_ok(
    check: Check,
    node: &Arc<dyn Engine>,
    p: Publish,
    what: &str,
) -> Result<(), Violation> {
    node.publish(p)
        .await
        .map_err(|e| Violation::new(check, format!("publishing {what} failed: {e}")))
}

async fn subscribe(
    check: Check,
    node: &Arc<dyn Engine>,
    req: SubscribeRequest,
) -> Result<crate::engine::Subscribed, Violation> {
    let topic = req.topic.clone();
    node.subscribe(req)
        .await
        .map_err(|e| Violation::new(check, format!("subscribing to {topic} failed: {e}")))
}

async fn sub(
    check: Check,
    node: &Arc<dyn Engine>,
    topic: &Arc<str>,
) -> Result<Arc<Recorder>, Violation> {
    let r = Recorder::new();
    subscribe(
        check,
        node,
        SubscribeRequest::new(topic.clone(), r.subscriber()),
    )
    .await?;
    Ok(r)
}

/// Publishes a sentinel from `node` and waits until each of `subs` got it: whatever was on
/// its way to them from `node` before it has arrived by then.
async fn sentinel(
    check: Check,
    node: &Arc<dyn Engine>,
    topic: &Arc<str>,
    subs: &[&Arc<Recorder>],
) -> Result<Value, Violation> {
    static SENTINELS: AtomicU64 = AtomicU64::new(0);
    let token = json!(SENTINELS.fetch_add(1, Ordering::Relaxed));
    publish_ok(
        check,
        node,
        publish(topic, "sentinel", token.clone()),
        "a sentinel",
    )
    .await?;
    for s in subs {
        s.until_event(check, "sentinel", &token).await?;
    }
    Ok(token)
}

/// Polls `probe` until it returns `Ok`, at most [`DEADLINE`]: for what settles through the
/// backend (counts after an unsubscribe, health).
async fn settle<T, F, Fut>(check: Check, what: &str, mut probe: F) -> Result<T, Violation>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    settle_within(check, what, DEADLINE, &mut probe).await
}

async fn settle_within<T, F, Fut>(
    check: Check,
    what: &str,
    limit: Duration,
    probe: &mut F,
) -> Result<T, Violation>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => {
                return Err(Violation::new(
                    check,
                    format!("timed out after {limit:?} waiting for {what}; last: {last}"),
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn expect(check: Check, cond: bool, detail: impl FnOnce() -> String) -> Result<(), Violation> {
    if cond {
        Ok(())
    } else {
        Err(Violation::new(check, detail()))
    }
}

/// How many times each `(event, data)` publication arrived.
fn tally(frames: &[Value]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for f in frames.iter().filter(|f| !is_presence(f)) {
        *out.entry(format!("{}/{}", f["event"], f["data"]))
            .or_default() += 1;
    }
    out
}

// ---- the checks ------------------------------------------------------------------------------

async fn delivery(backend: &Backend, t: &Topics) -> Result<(), Violation> {
    const C: Check = Check::Delivery;
    let nodes = backend.nodes(C, 3).await?;
    let topic = t.plain("deliver");
    let mut subs = Vec::new();
    for node in &nodes {
        for _ in 0..2 {
            subs.push(sub(C, node, &topic).await?);
        }
    }
    // From every node, one publication each, and one that excludes the first subscriber.
    for (i, node) in nodes.iter().enumerate() {
        publish_ok(C, node, publish(&topic, "m", json!(i)), "a publication").await?;
    }
    let mut excluding = publish(&topic, "x", json!("all but one"));
    excluding.exclude = Some(subs[0].id);
    publish_ok(C, &nodes[1], excluding, "a publication with exclude").await?;
    let all: Vec<&Arc<Recorder>> = subs.iter().collect();
    for node in &nodes {
        sentinel(C, node, &topic, &all).await?;
    }
    for (n, s) in subs.iter().enumerate() {
        let got = tally(&s.frames());
        for i in 0..nodes.len() {
            let k = format!("\"m\"/{i}");
            expect(C, got.get(&k) == Some(&1), || {
                format!(
                    "subscriber {n} got the publication of node {i} {:?} times, not once: {:?}",
                    got.get(&k),
                    s.frames()
                )
            })?;
        }
        let excluded = got.get("\"x\"/\"all but one\"").copied().unwrap_or(0);
        let want = if n == 0 { 0 } else { 1 };
        expect(C, excluded == want, || {
            format!("subscriber {n} got the publication excluding subscriber 0 {excluded} times, not {want}")
        })?;
    }
    for s in &subs {
        nodes[0].unsubscribe(topic.clone(), s.id);
    }
    Ok(())
}

async fn order(backend: &Backend, t: &Topics) -> Result<(), Violation> {
    const C: Check = Check::Order;
    const N: u64 = 200;
    let nodes = backend.nodes(C, 2).await?;
    for topic in [t.plain("order"), t.history("order")] {
        let subs = [
            sub(C, &nodes[0], &topic).await?,
            sub(C, &nodes[1], &topic).await?,
        ];
        // Two publishers, one per node, publishing at once without waiting for each other:
        // the calls are made in order, the futures awaited together.
        let mut pending = Vec::new();
        for n in 0..N {
            for (p, node) in nodes.iter().enumerate() {
                pending.push(node.publish(publish(&topic, "o", json!([p, n]))));
            }
        }
        for r in futures_util::future::join_all(pending).await {
            r.map_err(|e| Violation::new(C, format!("publishing failed: {e}")))?;
        }
        let mut seqs: Vec<Vec<u64>> = Vec::new();
        for s in &subs {
            let frames = s
                .wait(C, "every publication", DEADLINE, |fs| {
                    fs.iter().filter(|f| f["event"] == "o").count() >= 2 * N as usize
                })
                .await?;
            let mut next = [0u64; 2];
            for f in frames.iter().filter(|f| f["event"] == "o") {
                let p = f["data"][0].as_u64().unwrap_or(9) as usize;
                let n = f["data"][1].as_u64();
                expect(C, p < 2 && n == Some(next[p]), || {
                    format!(
                        "on {topic}: publisher {p}'s publication {n:?} arrived when {:?} was next",
                        next.get(p)
                    )
                })?;
                next[p] += 1;
            }
            seqs.push(
                frames
                    .iter()
                    .filter(|f| f["event"] == "o")
                    .filter_map(|f| f["seq"].as_u64())
                    .collect(),
            );
        }
        if topic.contains(":h:") {
            let want: Vec<u64> = (1..=2 * N).collect();
            for s in &seqs {
                expect(C, *s == want, || {
                    format!("on {topic}: sequence numbers {s:?}, expected 1..={}", 2 * N)
                })?;
            }
        }
        sentinel(C, &nodes[0], &topic, &[&subs[0], &subs[1]]).await?;
        for s in &subs {
            expect(C, s.publications().len() == 2 * N as usize + 1, || {
                format!(
                    "on {topic}: a subscriber got {} publications, expected {}",
                    s.publications().len(),
                    2 * N + 1
                )
            })?;
            nodes[0].unsubscribe(topic.clone(), s.id);
        }
    }
    Ok(())
}

fn with_presence(topic: &Arc<str>, r: &Arc<Recorder>, key: &str, meta: Value) -> SubscribeRequest {
    SubscribeRequest {
        presence: Some((key.to_owned(), meta)),
        ..SubscribeRequest::new(topic.clone(), r.subscriber())
    }
}

async fn keys(
    check: Check,
    node: &Arc<dyn Engine>,
    topic: &Arc<str>,
) -> Result<BTreeMap<String, usize>, String> {
    let _ = check;
    node.presence(topic.clone())
        .await
        .map(|p| p.into_iter().map(|(k, e)| (k, e.metas.len())).collect())
        .map_err(|e| e.to_string())
}

async fn presence_is(
    check: Check,
    nodes: &[Arc<dyn Engine>],
    topic: &Arc<str>,
    want: &[(&str, usize)],
) -> Result<(), Violation> {
    let want: BTreeMap<String, usize> = want.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    for (i, node) in nodes.iter().enumerate() {
        settle(
            check,
            &format!("node {i}'s presence to be {want:?}"),
            || async {
                let got = keys(check, node, topic).await?;
                if got == want {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            },
        )
        .await?;
    }
    Ok(())
}

async fn presence(backend: &Backend, t: &Topics) -> Result<(), Violation> {
    const C: Check = Check::Presence;
    let nodes = backend.nodes(C, 2).await?;
    let topic = t.plain("presence");
    let watcher = sub(C, &nodes[0], &topic).await?;

    // Alice joins on node 1: the watcher on node 0 hears it, she gets a state with herself.
    let alice = Recorder::new();
    subscribe(
        C,
        &nodes[1],
        with_presence(&topic, &alice, "alice", json!({"device": 1})),
    )
    .await?;
    let state = alice
        .nth(C, "alice's presence_state", 1, |f| {
            f["event"] == "presence_state"
        })
        .await?;
    expect(
        C,
        state["data"]["alice"]["metas"] == json!([{"device": 1}]),
        || format!("alice's presence_state lacks herself: {state}"),
    )?;
    let join = watcher.nth(C, "alice's join", 1, is_diff).await?;
    expect(
        C,
        join["data"]["joins"]["alice"]["metas"] == json!([{"device": 1}])
            && join["data"]["leaves"] == json!({}),
        || format!("expected alice's join, got {join}"),
    )?;
    presence_is(C, &nodes, &topic, &[("alice", 1)]).await?;

    // A second connection of alice, on node 0, tracked without subscribing: no new diff.
    let alice2 = Recorder::new();
    nodes[0]
        .track(
            topic.clone(),
            alice2.subscriber(),
            "alice".into(),
            json!({"device": 2}),
        )
        .await
        .map_err(|e| Violation::new(C, format!("track failed: {e}")))?;
    let state = alice2
        .nth(C, "alice2's presence_state", 1, |f| {
            f["event"] == "presence_state"
        })
        .await?;
    expect(
        C,
        state["data"]["alice"]["metas"]
            .as_array()
            .is_some_and(|m| m.len() == 2),
        || format!("the second connection's presence_state should hold both of alice's: {state}"),
    )?;
    presence_is(C, &nodes, &topic, &[("alice", 2)]).await?;
    nodes[0].untrack(topic.clone(), alice2.id);
    presence_is(C, &nodes, &topic, &[("alice", 1)]).await?;
    sentinel(C, &nodes[0], &topic, &[&watcher]).await?;
    sentinel(C, &nodes[1], &topic, &[&watcher]).await?;
    let diffs: Vec<Value> = watcher.frames().into_iter().filter(is_diff).collect();
    expect(C, diffs.len() == 1, || {
        format!("a key's second connection coming and going must not be diffs: {diffs:?}")
    })?;

    // Bob joins on node 0, alice leaves (unsubscribes) on node 1.
    let bob = Recorder::new();
    subscribe(C, &nodes[0], with_presence(&topic, &bob, "bob", json!({}))).await?;
    watcher.nth(C, "bob's join", 2, is_diff).await?;
    nodes[1].unsubscribe(topic.clone(), alice.id);
    let leave = watcher.nth(C, "alice's leave", 3, is_diff).await?;
    expect(
        C,
        leave["data"]["leaves"]["alice"]["metas"] == json!([{"device": 1}])
            && leave["data"]["joins"] == json!({}),
        || format!("expected alice's leave, got {leave}"),
    )?;
    bob.nth(C, "alice's leave at bob", 1, |f| {
        is_diff(f) && f["data"]["leaves"].get("alice").is_some()
    })
    .await?;
    presence_is(C, &nodes, &topic, &[("bob", 1)]).await?;
    nodes[0].unsubscribe(topic.clone(), bob.id);
    nodes[0].unsubscribe(topic.clone(), watcher.id);
    presence_is(C, &nodes, &topic, &[]).await?;
    Ok(())
}

async fn crash(backend: &Backend, t: &Topics, limit: Duration) -> Result<(), Violation> {
    const C: Check = Check::Crash;
    let live = backend.node(C).await?;
    let topic = t.plain("crash");
    let watcher = Recorder::new();
    subscribe(
        C,
        &live,
        with_presence(&topic, &watcher, "watcher", json!({})),
    )
    .await?;
    let doomed = backend.node(C).await?;
    let ghost = Recorder::new();
    subscribe(
        C,
        &doomed,
        with_presence(&topic, &ghost, "ghost", json!({"on": "doomed"})),
    )
    .await?;
    watcher
        .nth(C, "the ghost's join", 1, |f| {
            is_diff(f) && f["data"]["joins"].get("ghost").is_some()
        })
        .await?;
    presence_is(
        C,
        std::slice::from_ref(&live),
        &topic,
        &[("ghost", 1), ("watcher", 1)],
    )
    .await?;
    drop(doomed);
    watcher
        .wait(C, "the crashed node's leave", limit, |fs| {
            fs.iter()
                .any(|f| is_diff(f) && f["data"]["leaves"].get("ghost").is_some())
        })
        .await?;
    presence_is(C, std::slice::from_ref(&live), &topic, &[("watcher", 1)]).await?;
    live.unsubscribe(topic.clone(), watcher.id);
    presence_is(C, std::slice::from_ref(&live), &topic, &[]).await?;
    Ok(())
}

fn seqs(frames: &[Value], event: &str) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["event"] == event)
        .filter_map(|f| f["seq"].as_u64())
        .collect()
}

async fn history(backend: &Backend, t: &Topics) -> Result<(), Violation> {
    const C: Check = Check::History;
    let nodes = backend.nodes(C, 2).await?;
    let topic = t.history("recover");
    let first = Recorder::new();
    let at = subscribe(
        C,
        &nodes[0],
        SubscribeRequest::new(topic.clone(), first.subscriber()),
    )
    .await?;
    let Some(start) = at.position.clone() else {
        return Err(Violation::new(
            C,
            format!("a topic with history must answer a position: {at:?}"),
        ));
    };
    expect(C, start.seq == 0 && at.recovered.is_none(), || {
        format!("a new topic's position is seq 0, without `recovered`: {at:?}")
    })?;
    for n in 1..=3u64 {
        publish_ok(C, &nodes[1], publish(&topic, "h", json!(n)), "to history").await?;
    }
    let frames = first
        .wait(C, "3 publications", DEADLINE, |fs| seqs(fs, "h").len() >= 3)
        .await?;
    expect(C, seqs(&frames, "h") == [1, 2, 3], || {
        format!("expected seqs 1..=3: {frames:?}")
    })?;
    expect(
        C,
        frames
            .iter()
            .filter(|f| f["event"] == "h")
            .all(|f| f["epoch"] == json!(start.epoch)),
        || {
            format!(
                "deliveries must carry the epoch {}: {frames:?}",
                start.epoch
            )
        },
    )?;

    // Recovery on the other node: what came after seq 1, then live, without repeats.
    let back = Recorder::new();
    let got = subscribe(
        C,
        &nodes[1],
        SubscribeRequest {
            recover: Some(Position {
                epoch: start.epoch.clone(),
                seq: 1,
            }),
            ..SubscribeRequest::new(topic.clone(), back.subscriber())
        },
    )
    .await?;
    expect(
        C,
        got.recovered == Some(true)
            && got.position
                == Some(Position {
                    epoch: start.epoch.clone(),
                    seq: 3,
                }),
        || format!("recovering from seq 1 of 3: expected recovered: true at seq 3, got {got:?}"),
    )?;
    publish_ok(C, &nodes[0], publish(&topic, "h", json!(4)), "to history").await?;
    for s in [&first, &back] {
        s.wait(C, "seq 4", DEADLINE, |fs| seqs(fs, "h").contains(&4))
            .await?;
    }
    sentinel(C, &nodes[1], &topic, &[&first, &back]).await?;
    expect(C, seqs(&back.frames(), "h") == [2, 3, 4], || {
        format!(
            "recovered then live: expected seqs 2, 3, 4 once each, got {:?}",
            back.frames()
        )
    })?;
    expect(C, seqs(&first.frames(), "h") == [1, 2, 3, 4], || {
        format!(
            "live: expected seqs 1..=4 once each, got {:?}",
            first.frames()
        )
    })?;

    // Past what the history holds, and on another epoch: `recovered: false`.
    // The sentinel took seq 5: publications 6..=total follow, more than the history holds.
    let total = 5 + HISTORY_LEN as u64 + 2;
    for n in 6..=total {
        publish_ok(C, &nodes[1], publish(&topic, "h", json!(n)), "to history").await?;
    }
    first
        .wait(C, "every publication", DEADLINE, |fs| {
            seqs(fs, "h").contains(&total)
        })
        .await?;
    let late = Recorder::new();
    let got = subscribe(
        C,
        &nodes[0],
        SubscribeRequest {
            recover: Some(Position {
                epoch: start.epoch.clone(),
                seq: 1,
            }),
            ..SubscribeRequest::new(topic.clone(), late.subscriber())
        },
    )
    .await?;
    expect(C, got.recovered == Some(false), || {
        format!(
            "seq 2 is past the history of {HISTORY_LEN}: expected recovered: false, got {got:?}"
        )
    })?;
    expect(
        C,
        got.position.as_ref().map(|p| p.seq) == Some(total),
        || format!("the position after {total} publications: {got:?}"),
    )?;
    let other = Recorder::new();
    let got = subscribe(
        C,
        &nodes[1],
        SubscribeRequest {
            recover: Some(Position {
                epoch: format!("not-{}", start.epoch),
                seq: total,
            }),
            ..SubscribeRequest::new(topic.clone(), other.subscriber())
        },
    )
    .await?;
    expect(C, got.recovered == Some(false), || {
        format!("another epoch: expected recovered: false, got {got:?}")
    })?;
    // Up to date: nothing to replay, recovered.
    let current = Recorder::new();
    let got = subscribe(
        C,
        &nodes[1],
        SubscribeRequest {
            recover: Some(Position {
                epoch: start.epoch.clone(),
                seq: total,
            }),
            ..SubscribeRequest::new(topic.clone(), current.subscriber())
        },
    )
    .await?;
    expect(C, got.recovered == Some(true), || {
        format!("recovering from the current position: expected recovered: true, got {got:?}")
    })?;

    // `last`: the latest publications the history holds, then live.
    let recent = Recorder::new();
    subscribe(
        C,
        &nodes[0],
        SubscribeRequest {
            last: Some(3),
            ..SubscribeRequest::new(topic.clone(), recent.subscriber())
        },
    )
    .await?;
    publish_ok(
        C,
        &nodes[1],
        publish(&topic, "h", json!(total + 1)),
        "to history",
    )
    .await?;
    recent
        .wait(C, "the live publication", DEADLINE, |fs| {
            seqs(fs, "h").contains(&(total + 1))
        })
        .await?;
    sentinel(C, &nodes[0], &topic, &[&recent, &current]).await?;
    let want: Vec<u64> = (total - 2..=total + 1).collect();
    expect(C, seqs(&recent.frames(), "h") == want, || {
        format!(
            "last 3, then live: expected seqs {want:?}, got {:?}",
            recent.frames()
        )
    })?;
    expect(C, seqs(&current.frames(), "h") == [total + 1], || {
        format!(
            "recovered at the current position: expected only seq {}, got {:?}",
            total + 1,
            current.frames()
        )
    })?;
    for (node, s) in [
        (0, &first),
        (1, &back),
        (0, &late),
        (1, &other),
        (1, &current),
        (0, &recent),
    ] {
        nodes[node].unsubscribe(topic.clone(), s.id);
    }
    Ok(())
}

async fn stats_now(
    check: Check,
    node: &Arc<dyn Engine>,
) -> Result<crate::engine::EngineStats, Violation> {
    node.stats()
        .await
        .map_err(|e| Violation::new(check, format!("stats failed: {e}")))
}

/// Waits until every node counts `want` subscribers on each topic (0: not listed).
async fn counts_are(
    check: Check,
    nodes: &[Arc<dyn Engine>],
    want: &[(&Arc<str>, usize)],
) -> Result<(), Violation> {
    for (i, node) in nodes.iter().enumerate() {
        settle(check, &format!("node {i}'s counts {want:?}"), || async {
            let listed = node.topics().await.map_err(|e| e.to_string())?;
            for (topic, n) in want {
                let count = node
                    .subscriber_count((*topic).clone())
                    .await
                    .map_err(|e| e.to_string())?;
                let in_list = listed
                    .iter()
                    .find(|ti| *ti.topic == ***topic)
                    .map(|ti| ti.subscribers);
                let want_listed = if *n == 0 { None } else { Some(*n) };
                if count != *n || in_list != want_listed {
                    return Err(format!(
                        "{topic}: subscriber_count {count}, listed {in_list:?}"
                    ));
                }
            }
            Ok(())
        })
        .await?;
    }
    Ok(())
}

async fn counts(backend: &Backend, t: &Topics) -> Result<(), Violation> {
    const C: Check = Check::Counts;
    let nodes = backend.nodes(C, 2).await?;
    let (a, b, h) = (t.plain("count-a"), t.plain("count-b"), t.history("count"));
    let base = stats_now(C, &nodes[0]).await?;
    let subs = [
        (0, a.clone(), sub(C, &nodes[0], &a).await?),
        (0, a.clone(), sub(C, &nodes[0], &a).await?),
        (1, a.clone(), sub(C, &nodes[1], &a).await?),
        (1, b.clone(), sub(C, &nodes[1], &b).await?),
    ];
    // A subscriber's second subscribe to one topic is still one subscription.
    subscribe(
        C,
        &nodes[1],
        SubscribeRequest::new(b.clone(), subs[3].2.subscriber()),
    )
    .await?;
    publish_ok(C, &nodes[0], publish(&h, "kept", json!(1)), "to history").await?;
    counts_are(C, &nodes, &[(&a, 3), (&b, 1), (&h, 0)]).await?;
    for (i, node) in nodes.iter().enumerate() {
        settle(C, &format!("node {i}'s stats"), || async {
            let s = node.stats().await.map_err(|e| e.to_string())?;
            let ok = s.topics == base.topics + 2
                && s.subscriptions == base.subscriptions + 4
                && s.histories == base.histories + 1;
            if ok {
                Ok(())
            } else {
                Err(format!("{s:?}, before: {base:?}"))
            }
        })
        .await?;
    }
    for (n, topic, s) in &subs {
        nodes[*n].unsubscribe(topic.clone(), s.id);
    }
    counts_are(C, &nodes, &[(&a, 0), (&b, 0)]).await?;
    for (i, node) in nodes.iter().enumerate() {
        settle(C, &format!("node {i}'s stats back to before"), || async {
            let s = node.stats().await.map_err(|e| e.to_string())?;
            if s.topics == base.topics && s.subscriptions == base.subscriptions {
                Ok(())
            } else {
                Err(format!("{s:?}, before: {base:?}"))
            }
        })
        .await?;
    }
    Ok(())
}

async fn churn(backend: &Backend, t: &Topics) -> Result<(), Violation> {
    const C: Check = Check::Churn;
    const N: usize = 40;
    let nodes = backend.nodes(C, 2).await?;
    let topic = t.plain("churn");
    let base = stats_now(C, &nodes[0]).await?;
    let watcher = sub(C, &nodes[0], &topic).await?;
    // Many subscribers at once, half with presence (five keys), over both nodes.
    let recorders: Vec<Arc<Recorder>> = (0..N).map(|_| Recorder::new()).collect();
    let joins = recorders.iter().enumerate().map(|(i, r)| {
        let req = if i % 2 == 0 {
            with_presence(&topic, r, &format!("user{}", i % 5), json!({"i": i}))
        } else {
            SubscribeRequest::new(topic.clone(), r.subscriber())
        };
        nodes[i % 2].subscribe(req)
    });
    for r in futures_util::future::join_all(joins).await {
        r.map_err(|e| Violation::new(C, format!("subscribe failed: {e}")))?;
    }
    counts_are(C, &nodes, &[(&topic, N + 1)]).await?;
    presence_is(
        C,
        &nodes,
        &topic,
        &[
            ("user0", 4),
            ("user1", 4),
            ("user2", 4),
            ("user3", 4),
            ("user4", 4),
        ],
    )
    .await?;
    // A quarter go away by being gone (their sink says so at the next delivery), the rest
    // unsubscribe, some twice; some of the odd ones track and untrack first.
    for (i, r) in recorders.iter().enumerate() {
        if i % 4 == 3 {
            r.gone.store(true, Ordering::Relaxed);
        }
        if i % 4 == 1 {
            nodes[i % 2]
                .track(topic.clone(), r.subscriber(), "late".into(), json!({}))
                .await
                .map_err(|e| Violation::new(C, format!("track failed: {e}")))?;
            nodes[i % 2].untrack(topic.clone(), r.id);
        }
    }
    let token = sentinel(C, &nodes[1], &topic, &[&watcher]).await?;
    for (i, r) in recorders.iter().enumerate() {
        if i % 4 != 3 {
            r.until_event(C, "sentinel", &token).await?;
            nodes[i % 2].unsubscribe(topic.clone(), r.id);
            if i % 3 == 0 {
                nodes[i % 2].unsubscribe(topic.clone(), r.id);
            }
        }
    }
    counts_are(C, &nodes, &[(&topic, 1)]).await?;
    presence_is(C, &nodes, &topic, &[]).await?;
    // Nobody who left gets anything more.
    let before: Vec<usize> = recorders.iter().map(|r| r.frames().len()).collect();
    sentinel(C, &nodes[0], &topic, &[&watcher]).await?;
    sentinel(C, &nodes[1], &topic, &[&watcher]).await?;
    for (i, r) in recorders.iter().enumerate() {
        expect(C, r.frames().len() == before[i], || {
            format!(
                "subscriber {i} got deliveries after it left: {:?}",
                &r.frames()[before[i]..]
            )
        })?;
    }
    nodes[0].unsubscribe(topic.clone(), watcher.id);
    counts_are(C, &nodes, &[(&topic, 0)]).await?;
    for (i, node) in nodes.iter().enumerate() {
        settle(C, &format!("node {i}'s stats back to before"), || async {
            let s = node.stats().await.map_err(|e| e.to_string())?;
            if s.topics == base.topics && s.subscriptions == base.subscriptions {
                Ok(())
            } else {
                Err(format!("{s:?}, before: {base:?}"))
            }
        })
        .await?;
    }
    Ok(())
}

async fn health_is(check: Check, nodes: &[Arc<dyn Engine>], up: bool) -> Result<(), Violation> {
    let what = if up {
        "every node to be up"
    } else {
        "every node to report the engine down"
    };
    settle(check, what, || async {
        let healths: Vec<EngineHealth> = nodes.iter().map(|n| n.health()).collect();
        if healths.iter().all(|h| matches!(h, EngineHealth::Up) == up) {
            Ok(())
        } else {
            Err(format!("{healths:?}"))
        }
    })
    .await
}

async fn outage(
    backend: &Backend,
    t: &Topics,
    kill: &ActionFn,
    restart: &ActionFn,
) -> Result<(), Violation> {
    const C: Check = Check::Outage;
    let nodes = backend.nodes(C, 2).await?;
    let (plain, hist) = (t.plain("outage"), t.history("outage"));
    let mut subs = Vec::new();
    for topic in [&plain, &hist] {
        for (i, node) in nodes.iter().enumerate() {
            let r = Recorder::new();
            subscribe(
                C,
                node,
                with_presence(topic, &r, &format!("n{i}"), json!({})),
            )
            .await?;
            subs.push((topic.clone(), r));
        }
    }
    for topic in [&plain, &hist] {
        publish_ok(
            C,
            &nodes[1],
            publish(topic, "m", json!("before")),
            "before the outage",
        )
        .await?;
    }
    for (_, s) in &subs {
        s.until_event(C, "m", &json!("before")).await?;
    }

    kill().await;
    health_is(C, &nodes, false).await?;
    for (i, node) in nodes.iter().enumerate() {
        for topic in [&plain, &hist] {
            match node.publish(publish(topic, "m", json!(format!("lost {i}")))).await {
                Err(EngineError::Unavailable(_)) => {}
                other => {
                    return Err(Violation::new(C, format!(
                        "node {i}: a publish while the backend is down must fail with Unavailable, got {other:?}"
                    )))
                }
            }
        }
        // Unsubscribing and reading health never fail; reads fail clearly or answer.
        if let Err(e) = node.subscriber_count(plain.clone()).await {
            expect(C, matches!(e, EngineError::Unavailable(_)), || {
                format!("a count while down: {e}")
            })?;
        }
    }

    restart().await;
    health_is(C, &nodes, true).await?;
    for topic in [&plain, &hist] {
        // Right after the node is up, its subscriptions are back: the publication reaches all.
        publish_ok(
            C,
            &nodes[0],
            publish(topic, "m", json!("after")),
            "after the outage",
        )
        .await?;
    }
    for (_, s) in &subs {
        s.until_event(C, "m", &json!("after")).await?;
    }
    for topic in [&plain, &hist] {
        let here: Vec<&Arc<Recorder>> = subs
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, s)| s)
            .collect();
        for node in &nodes {
            sentinel(C, node, topic, &here).await?;
        }
        presence_is(C, &nodes, topic, &[("n0", 1), ("n1", 1)]).await?;
    }
    for (topic, s) in &subs {
        let got = tally(&s.frames());
        for (k, n) in &got {
            expect(C, *n == 1, || {
                format!("on {topic}: {k} delivered {n} times: {:?}", s.frames())
            })?;
        }
        expect(C, !got.keys().any(|k| k.contains("lost")), || {
            format!(
                "on {topic}: a publish that failed was delivered: {:?}",
                s.frames()
            )
        })?;
        expect(
            C,
            got.contains_key("\"m\"/\"before\"") && got.contains_key("\"m\"/\"after\""),
            || format!("on {topic}: {:?}", s.frames()),
        )?;
    }
    for (i, (topic, s)) in subs.iter().enumerate() {
        nodes[i % 2].unsubscribe(topic.clone(), s.id);
    }
    counts_are(C, &nodes, &[(&plain, 0), (&hist, 0)]).await?;
    Ok(())
}
