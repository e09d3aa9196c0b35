//! This node's side of the topics: its subscribers (with their sinks), the presence entries of
//! its connections, and what it has delivered. Guarded by one mutex; the Redis operations that
//! mirror a change are queued while it is held, so Redis sees changes in the order they
//! happened here.
//!
//! A subscriber being set up (subscribe, track) is *pending*: what arrives for it meanwhile is
//! buffered, then handed over after the snapshot Redis returned (presence state, replayed
//! history), less what the snapshot already covered. That keeps each subscriber's view gap-free
//! and in order: snapshot first, then everything after it, nothing twice. The buffer holds at
//! most [`MAX_PENDING`] messages; past that the newest are dropped (and counted in a warning),
//! as the default drop-newest slow-consumer policy would drop them from the connection's
//! outbound queue anyway when the whole buffer is handed over at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::conn::Ctx;
use super::wire::Incoming;
use crate::engine::subscribers::{Keyed, Subscribers};
use crate::engine::{Delivered, DeliverySink, Publication, Subscriber};
use crate::id::ConnectionId;

/// Messages buffered per pending subscriber, at most. A subscribe takes a round trip or two,
/// so this is only reached when Redis is very slow or the topic very busy; it is well above
/// the default outbound queue (1024), which the buffer is handed to in one go.
pub(crate) const MAX_PENDING: usize = 8192;

#[derive(Default)]
pub(crate) struct Local {
    topics: HashMap<Arc<str>, TopicLocal>,
}

#[derive(Default)]
struct TopicLocal {
    subs: Subscribers<Sub>,
    /// Subscribes under way: the node stays on the channel for them.
    joining: usize,
    /// This node's connections in the topic's presence: key and meta.
    tracked: HashMap<ConnectionId, (String, Value)>,
    /// The last history position delivered here: a publication at or before it is not
    /// delivered again (after a catch-up).
    seen: Option<(Arc<str>, u64)>,
}

struct Sub {
    id: ConnectionId,
    sink: Arc<dyn DeliverySink>,
    pending: Option<Pending>,
    /// What its snapshot covered: messages published before the snapshot can still be on
    /// their way to this node when the subscriber goes live; they are not delivered again.
    /// Cleared once a newer message passes.
    floor: Covered,
}

impl Keyed for Sub {
    fn key(&self) -> ConnectionId {
        self.id
    }
}

struct Pending {
    /// Operations under way for this subscriber; the last one to finish hands the buffer over.
    depth: u32,
    items: Vec<Incoming>,
    /// Messages dropped because `items` was full.
    dropped: u64,
}

impl Pending {
    fn new() -> Self {
        Pending {
            depth: 1,
            items: Vec::new(),
            dropped: 0,
        }
    }

    fn push(&mut self, item: &Incoming) {
        if self.items.len() < MAX_PENDING {
            // A clone shares the frame: reference counts, no copy.
            self.items.push(item.clone());
        } else {
            self.dropped += 1;
        }
    }
}

/// What a snapshot from Redis already covers: buffered items it covers are not delivered.
#[derive(Clone, Debug, Default)]
pub(crate) struct Covered {
    /// The history position the snapshot was taken at.
    pub position: Option<(Arc<str>, u64)>,
    /// The presence version (epoch, number) the snapshot's state reflects.
    pub version: Option<(Arc<str>, u64)>,
}

impl Covered {
    fn is_empty(&self) -> bool {
        self.position.is_none() && self.version.is_none()
    }

    /// Whether `item` is covered; forgets what newer items show it needs no longer.
    fn passes(&mut self, item: &Incoming) -> bool {
        if self.covers(item) {
            return false;
        }
        match item {
            Incoming::Publication {
                position: Some(_), ..
            } => self.position = None,
            Incoming::Diff { .. } => self.version = None,
            Incoming::Publication { .. } => {}
        }
        true
    }

    fn covers(&self, item: &Incoming) -> bool {
        match item {
            Incoming::Publication {
                position: Some((epoch, seq)),
                ..
            } => matches!(&self.position, Some((e, s)) if e == epoch && seq <= s),
            Incoming::Publication { .. } => false,
            // Only within one epoch: a counter Redis restarted says nothing about the old one,
            // and a floor that compared across would hold back every later diff.
            Incoming::Diff {
                version: (epoch, v),
                ..
            } => matches!(&self.version, Some((e, floor)) if e == epoch && v <= floor),
        }
    }
}

/// What a node resends to Redis after (re)connecting.
pub(crate) struct Snapshot {
    /// Subscribers per topic.
    pub counts: Vec<(Arc<str>, usize)>,
    /// Topics the node must be subscribed to.
    pub wanted: Vec<Arc<str>>,
}

impl TopicLocal {
    fn is_idle(&self) -> bool {
        self.subs.is_empty() && self.joining == 0 && self.tracked.is_empty()
    }

    fn wants_channel(&self) -> bool {
        !self.subs.is_empty() || self.joining > 0
    }

    /// Adds `sub` (or gives an existing one the new sink) as pending. True when it is new.
    fn add_pending(&mut self, sub: Subscriber) -> bool {
        match self.subs.get_mut(sub.id) {
            Some(s) => {
                s.sink = sub.sink;
                match &mut s.pending {
                    Some(p) => p.depth += 1,
                    None => s.pending = Some(Pending::new()),
                }
                false
            }
            None => {
                self.subs.insert(Sub {
                    id: sub.id,
                    sink: sub.sink,
                    pending: Some(Pending::new()),
                    floor: Covered::default(),
                });
                true
            }
        }
    }

    fn remove_sub(&mut self, id: ConnectionId) -> bool {
        self.subs.remove(id)
    }

    /// Hands a live message to the subscribers (buffering it for pending ones). Returns the
    /// subscribers found gone.
    fn deliver(&mut self, item: Incoming) -> Vec<ConnectionId> {
        let exclude = match &item {
            Incoming::Publication {
                position, exclude, ..
            } => {
                if let Some((epoch, seq)) = position {
                    if matches!(&self.seen, Some((e, s)) if e == epoch && seq <= s) {
                        // Already delivered by a catch-up.
                        return Vec::new();
                    }
                    self.seen = Some((epoch.clone(), *seq));
                }
                *exclude
            }
            Incoming::Diff { .. } => None,
        };
        let started = crate::meter::start();
        let mut gone = Vec::new();
        let mut queued = 0;
        let publication = item.publication();
        for sub in self.subs.iter_mut() {
            if Some(sub.id) == exclude {
                continue;
            }
            match &mut sub.pending {
                Some(p) => p.push(&item),
                None => {
                    if !sub.floor.is_empty() && !sub.floor.passes(&item) {
                        continue;
                    }
                    match sub.sink.deliver(publication) {
                        Delivered::Queued => queued += 1,
                        Delivered::Dropped => {}
                        Delivered::Gone => gone.push(sub.id),
                    }
                }
            }
        }
        if matches!(item, Incoming::Publication { .. }) {
            crate::meter::fanned_out(queued, started);
        }
        gone
    }
}

impl Local {
    fn topic(&mut self, topic: &Arc<str>) -> &mut TopicLocal {
        self.topics.entry(topic.clone()).or_default()
    }

    fn gc(&mut self, topic: &Arc<str>) {
        if self.topics.get(topic).is_some_and(TopicLocal::is_idle) {
            self.topics.remove(topic);
        }
    }

    /// Whether the node must be subscribed to `topic`'s channel.
    pub(crate) fn wants_channel(&self, topic: &str) -> bool {
        self.topics
            .get(topic)
            .is_some_and(TopicLocal::wants_channel)
    }

    /// A subscribe starts: the node joins the channel for it.
    pub(crate) fn begin_join(&mut self, topic: &Arc<str>) {
        self.topic(topic).joining += 1;
    }

    /// A subscribe stopped before adding its subscriber.
    pub(crate) fn abort_join(&mut self, ctx: &Ctx, topic: &Arc<str>) {
        if let Some(t) = self.topics.get_mut(topic) {
            t.joining = t.joining.saturating_sub(1);
            if !t.wants_channel() {
                ctx.reconcile(topic.clone(), None);
            }
        }
        self.gc(topic);
    }

    /// Adds a pending subscriber (and its presence entry, when `track`), then queues the
    /// subscribe script that `args` builds (it gets whether the subscriber is new here).
    pub(crate) fn join(
        &mut self,
        ctx: &Ctx,
        topic: &Arc<str>,
        sub: Subscriber,
        track: Option<(String, Value)>,
        args: impl FnOnce(bool) -> Vec<Vec<u8>>,
    ) -> tokio::sync::oneshot::Receiver<Result<redis::Value, super::conn::OpError>> {
        let t = self.topic(topic);
        t.joining = t.joining.saturating_sub(1);
        let id = sub.id;
        let new = t.add_pending(sub);
        if let Some(track) = track {
            t.tracked.insert(id, track);
        }
        ctx.script(super::lua::ScriptId::Subscribe, args(new))
    }

    /// Puts a subscriber of `topic` (if it is one here) in pending mode and enters its
    /// presence entry; queues the track script `args`.
    pub(crate) fn track(
        &mut self,
        ctx: &Ctx,
        topic: &Arc<str>,
        id: ConnectionId,
        key: String,
        meta: Value,
        args: Vec<Vec<u8>>,
    ) -> (
        bool,
        tokio::sync::oneshot::Receiver<Result<redis::Value, super::conn::OpError>>,
    ) {
        let t = self.topic(topic);
        let subscribed = match t.subs.get_mut(id) {
            Some(s) => {
                match &mut s.pending {
                    Some(p) => p.depth += 1,
                    None => s.pending = Some(Pending::new()),
                }
                true
            }
            None => false,
        };
        t.tracked.insert(id, (key, meta));
        (subscribed, ctx.script(super::lua::ScriptId::Track, args))
    }

    /// Ends one pending operation of subscriber `id`: delivers `first` (its snapshot), then,
    /// when no other operation is under way, what was buffered and `covered` does not cover.
    pub(crate) fn finish(
        &mut self,
        ctx: &Ctx,
        topic: &Arc<str>,
        id: ConnectionId,
        first: &[Publication],
        covered: &Covered,
    ) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        if let (None, Some(pos)) = (&t.seen, &covered.position) {
            t.seen = Some(pos.clone());
        }
        let Some(sub) = t.subs.get_mut(id) else {
            return;
        };
        let mut gone = false;
        for p in first {
            gone |= sub.sink.deliver(p) == Delivered::Gone;
        }
        if let Some(p) = &mut sub.pending {
            p.depth = p.depth.saturating_sub(1);
            if p.depth == 0 {
                let items = std::mem::take(&mut p.items);
                if p.dropped > 0 {
                    tracing::warn!(
                        "redis engine: subscriber {id} of {topic} missed {} message(s) while it \
                         was being set up (more than {MAX_PENDING} arrived meanwhile)",
                        p.dropped
                    );
                }
                sub.pending = None;
                sub.floor = covered.clone();
                for item in items.iter().filter(|item| sub.floor.passes(item)) {
                    gone |= sub.sink.deliver(item.publication()) == Delivered::Gone;
                }
            }
        }
        if gone {
            self.remove(ctx, topic, id, true);
        }
    }

    /// Removes `id` from the topic: as a subscriber when `unsubscribe`, and from presence.
    /// Queues what Redis must forget.
    pub(crate) fn remove(&mut self, ctx: &Ctx, topic: &Arc<str>, id: ConnectionId, unsub: bool) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        let was_sub = unsub && t.remove_sub(id);
        let was_tracked = t.tracked.remove(&id).is_some();
        if was_sub || was_tracked {
            ctx.leave(topic, id, was_sub, was_tracked, t.tracked.is_empty());
        }
        if was_sub && !t.wants_channel() {
            ctx.reconcile(topic.clone(), None);
        }
        self.gc(topic);
    }

    /// A live message from the topic's channel.
    pub(crate) fn dispatch(&mut self, ctx: &Ctx, topic: &Arc<str>, item: Incoming) {
        self.deliver_all(ctx, topic, std::iter::once(item));
    }

    /// Where a catch-up after a reconnect starts: the last position delivered on `topic`, when
    /// it has subscribers here.
    pub(crate) fn seen(&self, topic: &str) -> Option<(Arc<str>, u64)> {
        let t = self.topics.get(topic)?;
        if t.subs.is_empty() {
            return None;
        }
        t.seen.clone()
    }

    /// Delivers what a catch-up found missed (decoded from the history). The supervisor reads
    /// no live message until every catch-up is done, and those that come next at or before the
    /// position reached here are skipped (`seen`): missed first, then live, nothing twice.
    pub(crate) fn caught_up(&mut self, ctx: &Ctx, topic: &Arc<str>, items: Vec<Incoming>) {
        self.deliver_all(ctx, topic, items);
    }

    fn deliver_all(
        &mut self,
        ctx: &Ctx,
        topic: &Arc<str>,
        items: impl IntoIterator<Item = Incoming>,
    ) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        let mut gone = Vec::new();
        for item in items {
            gone.extend(t.deliver(item));
        }
        for id in gone {
            self.remove(ctx, topic, id, true);
        }
    }

    /// What Redis must hold for this node, to write again after a reconnect.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: self
                .topics
                .iter()
                .filter(|(_, t)| !t.subs.is_empty())
                .map(|(k, t)| (k.clone(), t.subs.len()))
                .collect(),
            wanted: self
                .topics
                .iter()
                .filter(|(_, t)| t.wants_channel())
                .map(|(k, _)| k.clone())
                .collect(),
        }
    }

    /// This node's presence entries on `topic`: connection, key, meta.
    pub(crate) fn tracked(&self, topic: &str) -> Vec<(ConnectionId, String, Value)> {
        self.topics
            .get(topic)
            .map(|t| {
                t.tracked
                    .iter()
                    .map(|(id, (k, m))| (*id, k.clone(), m.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Topics where this node has presence entries.
    pub(crate) fn tracked_topics(&self) -> HashSet<Arc<str>> {
        self.topics
            .iter()
            .filter(|(_, t)| !t.tracked.is_empty())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(epoch: &str, v: u64) -> Incoming {
        let topic: Arc<str> = "t".into();
        match super::super::wire::decode(
            &topic,
            format!(r#"D {epoch} {v} {{"joins":{{}},"leaves":{{}}}}"#).as_bytes(),
        ) {
            Ok(item) => item,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_presence_floor_holds_within_its_epoch_only() {
        let mut floor = Covered {
            position: None,
            version: Some(("100".into(), 7)),
        };
        assert!(floor.covers(&diff("100", 7)));
        assert!(floor.covers(&diff("100", 3)));
        // Redis lost the counter (restart, expiry): it starts again at 1 in a new epoch, and
        // those diffs are not taken for old ones.
        assert!(!floor.covers(&diff("200", 1)));
        assert!(floor.passes(&diff("200", 1)));
        assert!(floor.version.is_none(), "a newer diff lifts the floor");
        assert!(floor.passes(&diff("100", 2)));
    }

    #[test]
    fn a_pending_buffer_is_bounded() {
        let mut p = Pending::new();
        let item = diff("1", 1);
        for _ in 0..MAX_PENDING + 5 {
            p.push(&item);
        }
        assert_eq!((p.items.len(), p.dropped), (MAX_PENDING, 5));
    }
}
