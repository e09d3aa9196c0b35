//! The broker actor: one shard of the in-memory engine's topics, with their subscribers,
//! presence and history.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, AsyncContext, Context, Handler, Message};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::engine::EngineError;
use crate::engine::{
    Delivered, EngineStats, HistoryConfig, Presence, PresenceEntry, Publication, Publish,
    SubscribeRequest, Subscribed, Subscriber, TopicInfo, TopicPattern,
};
use crate::id::ConnectionId;

use super::history::History;
use crate::engine::subscribers::Subscribers;

pub(crate) struct Broker {
    topics: HashMap<Arc<str>, TopicState>,
    rules: Arc<Vec<(TopicPattern, HistoryConfig)>>,
}

#[derive(Default)]
struct TopicState {
    subs: Subscribers<Subscriber>,
    presence: BTreeMap<String, Vec<(ConnectionId, Value)>>,
    tracked: HashMap<ConnectionId, String>,
    history: Option<History>,
}

impl TopicState {
    fn is_idle(&self) -> bool {
        self.subs.is_empty()
            && self.presence.is_empty()
            && self.history.as_ref().is_none_or(|h| h.items.is_empty())
    }

    fn add(&mut self, sub: Subscriber) {
        self.subs.insert(sub);
    }

    fn remove(&mut self, id: ConnectionId) -> bool {
        self.subs.remove(id)
    }

    /// Hands `d` to every subscriber but `exclude`; forgets the ones that are gone.
    fn fan_out(&mut self, d: &Publication, exclude: Option<ConnectionId>) -> Vec<ConnectionId> {
        let started = crate::meter::start();
        let mut gone = Vec::new();
        let mut queued = 0;
        for sub in self.subs.iter() {
            if Some(sub.id) == exclude {
                continue;
            }
            match sub.sink.deliver(d) {
                Delivered::Queued => queued += 1,
                Delivered::Dropped => {}
                Delivered::Gone => gone.push(sub.id),
            }
        }
        crate::meter::fanned_out(queued, started);
        gone
    }
}

impl Broker {
    pub(super) fn new(rules: Arc<Vec<(TopicPattern, HistoryConfig)>>) -> Self {
        Broker {
            topics: HashMap::new(),
            rules,
        }
    }

    fn history_for(&self, topic: &str) -> Option<HistoryConfig> {
        if crate::engine::is_internal(topic) {
            return None;
        }
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
#[rtype(result = "Result<Subscribed, EngineError>")]
pub(super) struct Subscribe(pub(super) SubscribeRequest);

impl Handler<Subscribe> for Broker {
    type Result = Result<Subscribed, EngineError>;

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
pub(super) struct Unsubscribe {
    pub(super) topic: Arc<str>,
    pub(super) id: ConnectionId,
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
#[rtype(result = "bool")]
pub(super) struct Track {
    pub(super) topic: Arc<str>,
    pub(super) subscriber: Subscriber,
    pub(super) key: String,
    pub(super) meta: Value,
    /// Refuse (false) when `key` already has this many other connections on the topic.
    pub(super) max: Option<usize>,
}

impl Handler<Track> for Broker {
    type Result = bool;

    fn handle(&mut self, msg: Track, _: &mut Context<Self>) -> bool {
        let topic = msg.topic.clone();
        let state = self.state(&topic);
        if let Some(max) = msg.max {
            let id = msg.subscriber.id;
            let others = state
                .presence
                .get(&msg.key)
                .map_or(0, |m| m.iter().filter(|(cid, _)| *cid != id).count());
            if others >= max {
                self.gc(&topic);
                return false;
            }
        }
        let gone = track_in(&topic, state, &msg.subscriber, msg.key, msg.meta);
        for g in gone {
            self.drop_member(&topic, g);
        }
        true
    }
}

#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Untrack {
    pub(super) topic: Arc<str>,
    pub(super) id: ConnectionId,
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
pub(super) struct GetPresence(pub(super) Arc<str>);

impl Handler<GetPresence> for Broker {
    type Result = actix::MessageResult<GetPresence>;

    fn handle(&mut self, msg: GetPresence, _: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(self.topics.get(&msg.0).map(presence_of).unwrap_or_default())
    }
}

#[derive(Message)]
#[rtype(result = "usize")]
pub(super) struct Count(pub(super) Arc<str>);

impl Handler<Count> for Broker {
    type Result = usize;

    fn handle(&mut self, msg: Count, _: &mut Context<Self>) -> usize {
        self.topics.get(&msg.0).map_or(0, |s| s.subs.len())
    }
}

#[derive(Message, Clone)]
#[rtype(result = "Vec<TopicInfo>")]
pub(super) struct ListTopics;

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
pub(super) struct Stats;

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
