//! Broker actors: the in-memory engine.
//!
//! Topics are spread over shards by a hash of their name; each shard is one broker actor on a
//! thread (an actix system) of its own, so publishing never takes a lock shared by all topics
//! and brokers use all cores. A broker owns its topics' subscriber lists, presence and
//! history. It hands every subscriber the same encoded frame and never waits for one: sinks
//! queue or drop.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::engine::{
    Delivered, Engine, EngineStats, HistoryConfig, Position, Presence, PresenceEntry, Publication,
    Publish, SendFuture, SubscribeRequest, Subscribed, Subscriber, TopicInfo, TopicPattern,
};
use crate::error::Error;
use crate::id::ConnectionId;

/// The in-memory engine: broker actors on this machine. The default.
///
/// ```
/// use std::time::Duration;
/// use switchboard::engine::{HistoryConfig, MemoryEngine};
///
/// let engine = MemoryEngine::builder()
///     .shards(2)
///     .history("room:*", HistoryConfig::last(100).for_at_most(Duration::from_secs(300)))
///     .build();
/// ```
pub struct MemoryEngine {
    shards: Vec<Addr<Broker>>,
    systems: Vec<actix_rt::System>,
}

/// Configures a [`MemoryEngine`].
#[derive(Clone, Debug, Default)]
pub struct MemoryEngineBuilder {
    shards: Option<usize>,
    history: Vec<(TopicPattern, HistoryConfig)>,
}

impl MemoryEngineBuilder {
    /// Broker shards (threads). Default: the number of cores.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n.max(1));
        self
    }

    /// Keeps history for recovery on topics matching `pattern`. The first matching rule wins.
    pub fn history(mut self, pattern: &str, config: HistoryConfig) -> Self {
        self.history.push((TopicPattern::new(pattern), config));
        self
    }

    /// Starts the broker threads.
    pub fn build(self) -> MemoryEngine {
        let n = self.shards.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let rules = Arc::new(self.history);
        let mut shards = Vec::with_capacity(n);
        let mut systems = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::channel();
            let rules = rules.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("switchboard-broker-{i}"))
                .spawn(move || {
                    let sys = actix_rt::System::new();
                    let addr = sys.block_on(async move { Broker::new(rules).start() });
                    let _ = tx.send((addr, actix_rt::System::current()));
                    if let Err(e) = sys.run() {
                        log::error!("broker shard {i} stopped: {e}");
                    }
                });
            if let Err(e) = spawned {
                log::error!("cannot start broker shard {i}: {e}");
                continue;
            }
            if let Ok((addr, sys)) = rx.recv() {
                shards.push(addr);
                systems.push(sys);
            }
        }
        assert!(!shards.is_empty(), "no broker shard could start");
        MemoryEngine { shards, systems }
    }
}

impl Default for MemoryEngine {
    fn default() -> Self {
        MemoryEngine::builder().build()
    }
}

impl MemoryEngine {
    /// An engine with default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Configures an engine.
    pub fn builder() -> MemoryEngineBuilder {
        MemoryEngineBuilder::default()
    }

    fn shard(&self, topic: &str) -> &Addr<Broker> {
        // std's DefaultHasher::new() has fixed keys: the same topic always lands on the same
        // shard, which keeps each publisher's order per topic.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        topic.hash(&mut h);
        &self.shards[(h.finish() % self.shards.len() as u64) as usize]
    }

    async fn ask<M>(addr: Addr<Broker>, msg: M) -> Result<M::Result, Error>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        Broker: Handler<M>,
    {
        addr.send(msg)
            .await
            .map_err(|e| Error::internal(format_args!("broker unavailable: {e}")))
    }

    async fn ask_all<M>(shards: Vec<Addr<Broker>>, msg: M) -> Result<Vec<M::Result>, Error>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        Broker: Handler<M>,
    {
        let mut out = Vec::with_capacity(shards.len());
        for s in shards {
            out.push(Self::ask(s, msg.clone()).await?);
        }
        Ok(out)
    }
}

impl Drop for MemoryEngine {
    fn drop(&mut self) {
        for sys in &self.systems {
            sys.stop();
        }
    }
}

impl Engine for MemoryEngine {
    fn subscribe(&self, request: SubscribeRequest) -> SendFuture<Result<Subscribed, Error>> {
        let addr = self.shard(&request.topic).clone();
        Box::pin(async move { Self::ask(addr, Subscribe(request)).await? })
    }

    fn unsubscribe(&self, topic: Arc<str>, id: ConnectionId) {
        self.shard(&topic).do_send(Unsubscribe { topic, id });
    }

    fn publish(&self, publication: Publish) -> SendFuture<Result<(), Error>> {
        self.shard(&publication.topic).do_send(publication);
        Box::pin(async { Ok(()) })
    }

    fn track(
        &self,
        topic: Arc<str>,
        subscriber: Subscriber,
        key: String,
        meta: Value,
    ) -> SendFuture<Result<(), Error>> {
        let addr = self.shard(&topic).clone();
        Box::pin(async move {
            Self::ask(
                addr,
                Track {
                    topic,
                    subscriber,
                    key,
                    meta,
                },
            )
            .await
        })
    }

    fn untrack(&self, topic: Arc<str>, id: ConnectionId) {
        self.shard(&topic).do_send(Untrack { topic, id });
    }

    fn presence(&self, topic: Arc<str>) -> SendFuture<Result<Presence, Error>> {
        let addr = self.shard(&topic).clone();
        Box::pin(async move { Self::ask(addr, GetPresence(topic)).await })
    }

    fn subscriber_count(&self, topic: Arc<str>) -> SendFuture<Result<usize, Error>> {
        let addr = self.shard(&topic).clone();
        Box::pin(async move { Self::ask(addr, Count(topic)).await })
    }

    fn topics(&self) -> SendFuture<Result<Vec<TopicInfo>, Error>> {
        let shards = self.shards.clone();
        Box::pin(async move {
            let mut all: Vec<TopicInfo> = Self::ask_all(shards, ListTopics)
                .await?
                .into_iter()
                .flatten()
                .collect();
            all.sort_by(|a, b| a.topic.cmp(&b.topic));
            Ok(all)
        })
    }

    fn stats(&self) -> SendFuture<Result<EngineStats, Error>> {
        let shards = self.shards.clone();
        Box::pin(async move {
            let mut total = EngineStats::default();
            for s in Self::ask_all(shards, Stats).await? {
                total.topics += s.topics;
                total.subscriptions += s.subscriptions;
                total.histories += s.histories;
            }
            Ok(total)
        })
    }
}

// ---- the broker actor -------------------------------------------------------------------

pub(crate) struct Broker {
    topics: HashMap<Arc<str>, TopicState>,
    rules: Arc<Vec<(TopicPattern, HistoryConfig)>>,
}

#[derive(Default)]
struct TopicState {
    // A Vec for fan-out (iteration is the hot path), an index for removal.
    subs: Vec<Subscriber>,
    index: HashMap<ConnectionId, usize>,
    presence: BTreeMap<String, Vec<(ConnectionId, Value)>>,
    tracked: HashMap<ConnectionId, String>,
    history: Option<History>,
}

struct History {
    epoch: Arc<str>,
    last: u64,
    items: VecDeque<(Instant, Publication)>,
    config: HistoryConfig,
}

impl History {
    fn new(config: HistoryConfig) -> Self {
        History {
            epoch: new_epoch(),
            last: 0,
            items: VecDeque::new(),
            config,
        }
    }

    fn prune(&mut self, now: Instant) {
        while self.items.len() > self.config.max_len {
            self.items.pop_front();
        }
        if let Some(ttl) = self.config.ttl {
            while self
                .items
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > ttl)
            {
                self.items.pop_front();
            }
        }
    }

    /// Publications after `seq`, if all of them are still held.
    fn since(&self, seq: u64) -> Option<impl Iterator<Item = &Publication>> {
        if seq > self.last {
            return None;
        }
        let first_held = self.items.front().and_then(|(_, d)| d.seq);
        let complete = seq == self.last || first_held.is_some_and(|f| f <= seq + 1);
        complete.then(|| {
            self.items
                .iter()
                .map(|(_, d)| d)
                .filter(move |d| d.seq.is_some_and(|s| s > seq))
        })
    }

    fn position(&self) -> Position {
        Position {
            epoch: self.epoch.to_string(),
            seq: self.last,
        }
    }
}

fn new_epoch() -> Arc<str> {
    // Epochs only need to differ between incarnations of a topic's history.
    let id = ConnectionId::next().to_string();
    Arc::from(id.trim_end_matches('='))
}

impl TopicState {
    fn is_idle(&self) -> bool {
        self.subs.is_empty()
            && self.presence.is_empty()
            && self.history.as_ref().is_none_or(|h| h.items.is_empty())
    }

    fn add(&mut self, sub: Subscriber) {
        match self.index.get(&sub.id) {
            Some(&i) => self.subs[i] = sub,
            None => {
                self.index.insert(sub.id, self.subs.len());
                self.subs.push(sub);
            }
        }
    }

    fn remove(&mut self, id: ConnectionId) -> bool {
        let Some(i) = self.index.remove(&id) else {
            return false;
        };
        self.subs.swap_remove(i);
        if let Some(moved) = self.subs.get(i) {
            self.index.insert(moved.id, i);
        }
        true
    }

    /// Hands `d` to every subscriber but `exclude`; forgets the ones that are gone.
    fn fan_out(&mut self, d: &Publication, exclude: Option<ConnectionId>) -> Vec<ConnectionId> {
        let mut gone = Vec::new();
        for sub in &self.subs {
            if Some(sub.id) == exclude {
                continue;
            }
            if sub.sink.deliver(d) == Delivered::Gone {
                gone.push(sub.id);
            }
        }
        gone
    }
}

impl Broker {
    fn new(rules: Arc<Vec<(TopicPattern, HistoryConfig)>>) -> Self {
        Broker {
            topics: HashMap::new(),
            rules,
        }
    }

    fn history_for(&self, topic: &str) -> Option<HistoryConfig> {
        self.rules
            .iter()
            .find(|(p, _)| p.matches(topic))
            .map(|(_, c)| *c)
    }

    fn state(&mut self, topic: &Arc<str>) -> &mut TopicState {
        if !self.topics.contains_key(topic) {
            let history = self.history_for(topic).map(History::new);
            self.topics.insert(
                topic.clone(),
                TopicState {
                    history,
                    ..TopicState::default()
                },
            );
        }
        self.topics
            .get_mut(topic)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    fn gc(&mut self, topic: &Arc<str>) {
        if self.topics.get(topic).is_some_and(TopicState::is_idle) {
            self.topics.remove(topic);
        }
    }

    /// Removes `id` from the topic, with its presence; subscribers hear about a key that left.
    fn drop_member(&mut self, topic: &Arc<str>, id: ConnectionId) {
        let Some(state) = self.topics.get_mut(topic) else {
            return;
        };
        state.remove(id);
        Self::untrack_in(topic, state, id);
        self.gc(topic);
    }

    fn untrack_in(topic: &Arc<str>, state: &mut TopicState, id: ConnectionId) {
        let Some(key) = state.tracked.remove(&id) else {
            return;
        };
        let Some(metas) = state.presence.get_mut(&key) else {
            return;
        };
        let mut left = Vec::new();
        metas.retain(|(cid, meta)| {
            if *cid == id {
                left.push(meta.clone());
                false
            } else {
                true
            }
        });
        if metas.is_empty() {
            state.presence.remove(&key);
            let diff = serde_json::json!({
                "joins": {},
                "leaves": { key: { "metas": left } },
            });
            let d = presence_delivery(topic, "presence_diff", &diff);
            let gone = state.fan_out(&d, None);
            for g in gone {
                state.remove(g);
            }
        }
    }
}

fn presence_delivery(topic: &Arc<str>, event: &str, data: &Value) -> Publication {
    let raw = serde_json::value::to_raw_value(data).unwrap_or_else(|_| RawValue::NULL.to_owned());
    Publication::new(topic.clone(), Arc::from(event), Arc::from(raw), None)
}

fn presence_of(state: &TopicState) -> Presence {
    state
        .presence
        .iter()
        .map(|(k, metas)| {
            (
                k.clone(),
                PresenceEntry {
                    metas: metas.iter().map(|(_, m)| m.clone()).collect(),
                },
            )
        })
        .collect()
}

impl Actor for Broker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.rules.iter().any(|(_, c)| c.ttl.is_some()) {
            ctx.run_interval(Duration::from_secs(1), |act, _| {
                let now = Instant::now();
                act.topics.retain(|_, st| {
                    if let Some(h) = &mut st.history {
                        h.prune(now);
                    }
                    !st.is_idle()
                });
            });
        }
    }
}

#[derive(Message)]
#[rtype(result = "Result<Subscribed, Error>")]
struct Subscribe(SubscribeRequest);

impl Handler<Subscribe> for Broker {
    type Result = Result<Subscribed, Error>;

    fn handle(&mut self, Subscribe(msg): Subscribe, _: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let topic = msg.topic.clone();
        let state = self.state(&topic);
        let mut recovered = None;
        if let Some(h) = &mut state.history {
            h.prune(now);
        }
        if let Some(pos) = &msg.recover {
            recovered = Some(false);
            if let Some(h) = &state.history {
                if *h.epoch == *pos.epoch {
                    if let Some(missed) = h.since(pos.seq) {
                        // Replayed before the subscriber is added: nothing published later can
                        // overtake them, this actor handles one message at a time.
                        for d in missed {
                            msg.subscriber.sink.deliver(d);
                        }
                        recovered = Some(true);
                    }
                }
            }
        }
        if let (None, Some(n), Some(h)) = (&msg.recover, msg.last, &state.history) {
            let skip = h.items.len().saturating_sub(n);
            for (_, d) in h.items.iter().skip(skip) {
                msg.subscriber.sink.deliver(d);
            }
        }
        let position = state.history.as_ref().map(History::position);
        state.add(msg.subscriber.clone());
        match msg.presence {
            Some((key, meta)) => {
                let gone = track_in(&topic, state, &msg.subscriber, key, meta);
                for g in gone {
                    self.drop_member(&topic, g);
                }
            }
            None if !state.presence.is_empty() => {
                send_state(&topic, state, &msg.subscriber);
            }
            None => {}
        }
        Ok(Subscribed {
            position,
            recovered,
        })
    }
}

/// Sends the topic's whole presence to one subscriber.
fn send_state(topic: &Arc<str>, state: &TopicState, to: &Subscriber) {
    if let Ok(data) = serde_json::to_value(presence_of(state)) {
        let d = presence_delivery(topic, "presence_state", &data);
        to.sink.deliver(&d);
    }
}

/// Enters `sub` into the topic's presence under `key`: it gets the state, everyone gets a
/// diff if the key is new. Returns subscribers found gone.
fn track_in(
    topic: &Arc<str>,
    state: &mut TopicState,
    sub: &Subscriber,
    key: String,
    meta: Value,
) -> Vec<ConnectionId> {
    let id = sub.id;
    if state.tracked.get(&id).is_some_and(|k| *k != key) {
        Broker::untrack_in(topic, state, id);
    }
    let metas = state.presence.entry(key.clone()).or_default();
    let is_new_key = metas.is_empty();
    match metas.iter_mut().find(|(cid, _)| *cid == id) {
        Some(entry) => entry.1 = meta.clone(),
        None => metas.push((id, meta.clone())),
    }
    state.tracked.insert(id, key.clone());
    send_state(topic, state, sub);
    if !is_new_key {
        return Vec::new();
    }
    let diff = serde_json::json!({
        "joins": { key: { "metas": [meta] } },
        "leaves": {},
    });
    let d = presence_delivery(topic, "presence_diff", &diff);
    state.fan_out(&d, None)
}

#[derive(Message, Clone)]
#[rtype(result = "()")]
struct Unsubscribe {
    topic: Arc<str>,
    id: ConnectionId,
}

impl Handler<Unsubscribe> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        self.drop_member(&msg.topic, msg.id);
    }
}

impl Message for Publish {
    type Result = ();
}

impl Handler<Publish> for Broker {
    type Result = ();

    fn handle(&mut self, p: Publish, _: &mut Context<Self>) {
        if !self.topics.contains_key(&p.topic) && self.history_for(&p.topic).is_none() {
            // Nobody listens and nothing is kept: the publication has nowhere to go.
            return;
        }
        let state = self.state(&p.topic);
        let position = state.history.as_mut().map(|h| {
            h.last += 1;
            (h.epoch.clone(), h.last)
        });
        let d = Publication::new(p.topic.clone(), p.event, p.data, position);
        let gone = state.fan_out(&d, p.exclude);
        if let Some(h) = &mut state.history {
            h.items.push_back((Instant::now(), d));
            h.prune(Instant::now());
        }
        for id in gone {
            self.drop_member(&p.topic, id);
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Track {
    topic: Arc<str>,
    subscriber: Subscriber,
    key: String,
    meta: Value,
}

impl Handler<Track> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Track, _: &mut Context<Self>) {
        let topic = msg.topic.clone();
        let state = self.state(&topic);
        let gone = track_in(&topic, state, &msg.subscriber, msg.key, msg.meta);
        for g in gone {
            self.drop_member(&topic, g);
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Untrack {
    topic: Arc<str>,
    id: ConnectionId,
}

impl Handler<Untrack> for Broker {
    type Result = ();

    fn handle(&mut self, msg: Untrack, _: &mut Context<Self>) {
        if let Some(state) = self.topics.get_mut(&msg.topic) {
            Self::untrack_in(&msg.topic, state, msg.id);
            self.gc(&msg.topic);
        }
    }
}

#[derive(Message)]
#[rtype(result = "Presence")]
struct GetPresence(Arc<str>);

impl Handler<GetPresence> for Broker {
    type Result = actix::MessageResult<GetPresence>;

    fn handle(&mut self, msg: GetPresence, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.topics.get(&msg.0).map(presence_of).unwrap_or_default())
    }
}

#[derive(Message)]
#[rtype(result = "usize")]
struct Count(Arc<str>);

impl Handler<Count> for Broker {
    type Result = usize;

    fn handle(&mut self, msg: Count, _: &mut Context<Self>) -> usize {
        self.topics.get(&msg.0).map_or(0, |s| s.subs.len())
    }
}

#[derive(Message, Clone)]
#[rtype(result = "Vec<TopicInfo>")]
struct ListTopics;

impl Handler<ListTopics> for Broker {
    type Result = actix::MessageResult<ListTopics>;

    fn handle(&mut self, _: ListTopics, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(
            self.topics
                .iter()
                .filter(|(_, s)| !s.subs.is_empty() || !s.presence.is_empty())
                .map(|(t, s)| TopicInfo {
                    topic: t.to_string(),
                    subscribers: s.subs.len(),
                })
                .collect(),
        )
    }
}

#[derive(Message, Clone)]
#[rtype(result = "EngineStats")]
struct Stats;

impl Handler<Stats> for Broker {
    type Result = actix::MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        let mut s = EngineStats::default();
        for st in self.topics.values() {
            if !st.subs.is_empty() || !st.presence.is_empty() {
                s.topics += 1;
            }
            s.subscriptions += st.subs.len();
            if st.history.as_ref().is_some_and(|h| !h.items.is_empty()) {
                s.histories += 1;
            }
        }
        actix::MessageResult(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl crate::engine::DeliverySink for Collect {
        fn deliver(&self, d: &Publication) -> Delivered {
            self.0.lock().unwrap().push(d.frame.to_string());
            Delivered::Queued
        }
    }

    fn raw(s: &str) -> Arc<RawValue> {
        Arc::from(RawValue::from_string(s.to_owned()).unwrap())
    }

    async fn publish(e: &MemoryEngine, topic: &str, n: u32) {
        e.publish(Publish {
            topic: topic.into(),
            event: "m".into(),
            data: raw(&n.to_string()),
            exclude: None,
        })
        .await
        .unwrap();
    }

    fn recovering(sub: &Subscriber, epoch: &str, seq: u64) -> SubscribeRequest {
        SubscribeRequest {
            recover: Some(Position {
                epoch: epoch.to_owned(),
                seq,
            }),
            ..SubscribeRequest::new("h:a".into(), sub.clone())
        }
    }

    #[actix_rt::test]
    async fn history_recovery_and_gaps() {
        let e = MemoryEngine::builder()
            .shards(1)
            .history("h:*", HistoryConfig::last(3))
            .build();
        let sink = Arc::new(Collect::default());
        let sub = Subscriber {
            id: ConnectionId::next(),
            sink: sink.clone(),
        };
        let first = e
            .subscribe(SubscribeRequest::new("h:a".into(), sub.clone()))
            .await
            .unwrap();
        let pos = first.position.unwrap();
        assert_eq!(pos.seq, 0);
        for n in 1..=2 {
            publish(&e, "h:a", n).await;
        }
        // Seen up to 1: 2 is still held.
        let again = e.subscribe(recovering(&sub, &pos.epoch, 1)).await.unwrap();
        assert_eq!(again.recovered, Some(true));
        assert_eq!(again.position.as_ref().unwrap().seq, 2);
        for n in 3..=6 {
            publish(&e, "h:a", n).await;
        }
        // Seen up to 1: 2 was pushed out of the last 3.
        let gap = e.subscribe(recovering(&sub, &pos.epoch, 1)).await.unwrap();
        assert_eq!(gap.recovered, Some(false));
        let wrong_epoch = e.subscribe(recovering(&sub, "other", 6)).await.unwrap();
        assert_eq!(wrong_epoch.recovered, Some(false));
        let frames = sink.0.lock().unwrap().clone();
        // 1,2 live; 2 replayed; 3..6 live.
        let seqs: Vec<u64> = frames
            .iter()
            .map(|f| {
                serde_json::from_str::<Value>(f).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 2, 3, 4, 5, 6]);
    }

    #[actix_rt::test]
    async fn presence_collapses_connections_of_one_key() {
        let e = MemoryEngine::builder().shards(1).build();
        let watcher = Arc::new(Collect::default());
        let w = Subscriber {
            id: ConnectionId::next(),
            sink: watcher.clone(),
        };
        e.subscribe(SubscribeRequest::new("p".into(), w))
            .await
            .unwrap();
        let a1 = Subscriber {
            id: ConnectionId::next(),
            sink: Arc::new(Collect::default()),
        };
        let a2 = Subscriber {
            id: ConnectionId::next(),
            sink: Arc::new(Collect::default()),
        };
        e.track(
            "p".into(),
            a1.clone(),
            "alice".into(),
            serde_json::json!({"d": 1}),
        )
        .await
        .unwrap();
        e.track(
            "p".into(),
            a2.clone(),
            "alice".into(),
            serde_json::json!({"d": 2}),
        )
        .await
        .unwrap();
        let p = e.presence("p".into()).await.unwrap();
        assert_eq!(p["alice"].metas.len(), 2);
        e.untrack("p".into(), a1.id);
        e.untrack("p".into(), a2.id);
        let p = e.presence("p".into()).await.unwrap();
        assert!(p.is_empty());
        let diffs: Vec<Value> = watcher
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|f| serde_json::from_str::<Value>(f).unwrap())
            .filter(|v| v["event"] == "presence_diff")
            .collect();
        assert_eq!(diffs.len(), 2, "one join, one leave: {diffs:?}");
        assert!(diffs[0]["data"]["joins"]["alice"].is_object());
        assert!(diffs[1]["data"]["leaves"]["alice"].is_object());
        let stats = e.stats().await.unwrap();
        assert_eq!(stats.subscriptions, 1);
    }

    #[actix_rt::test]
    async fn last_n_are_replayed_on_subscribe() {
        let e = MemoryEngine::builder()
            .shards(1)
            .history("h:*", HistoryConfig::last(10))
            .build();
        for n in 1..=5 {
            publish(&e, "h:a", n).await;
        }
        let sink = Arc::new(Collect::default());
        let sub = Subscriber {
            id: ConnectionId::next(),
            sink: sink.clone(),
        };
        let got = e
            .subscribe(SubscribeRequest {
                last: Some(3),
                ..SubscribeRequest::new("h:a".into(), sub)
            })
            .await
            .unwrap();
        assert_eq!(got.position.unwrap().seq, 5);
        let data: Vec<String> = sink
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|f| serde_json::from_str::<Value>(f).unwrap()["data"].to_string())
            .collect();
        assert_eq!(data, vec!["3", "4", "5"]);
    }
}
