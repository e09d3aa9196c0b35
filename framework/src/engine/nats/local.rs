//! This node's side of the NATS engine: its topics, their subscribers (held *pending* while a
//! subscribe is being set up), the presence entries it owns, and where each topic's history
//! delivery stands.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::engine::subscribers::{Keyed, Subscribers};
use crate::engine::{Delivered, Publication, Subscriber};
use crate::id::ConnectionId;

/// A subscriber being set up buffers at most this many live messages.
pub(super) const MAX_PENDING: usize = 8_192;

pub(super) struct LocalSub {
    pub(super) sub: Subscriber,
    /// Live messages that arrived while the subscribe was under way.
    pub(super) pending: Option<Vec<Publication>>,
}

impl Keyed for LocalSub {
    fn key(&self) -> ConnectionId {
        self.sub.id
    }
}

/// Where a topic with history stands on this node: its epoch and the last sequence number
/// handed to the local subscribers.
pub(super) struct Cursor {
    pub(super) epoch: Arc<str>,
    pub(super) last: u64,
}

#[derive(Default)]
pub(super) struct Topic {
    pub(super) subs: Subscribers<LocalSub>,
    /// Presence entries of this node's connections: connection → (key, meta).
    pub(super) tracked: HashMap<ConnectionId, (String, Value)>,
    /// The core subscription's and the history reader's tasks, while there are subscribers.
    pub(super) tasks: Vec<tokio::task::AbortHandle>,
    pub(super) cursor: Option<Cursor>,
    /// Wakes the topic's reader to read what its stream stored while the node was away.
    pub(super) catch_up: Option<Arc<tokio::sync::Notify>>,
}

impl Topic {
    pub(super) fn is_idle(&self) -> bool {
        self.subs.is_empty() && self.tracked.is_empty()
    }

    /// Hands `p` to every subscriber but `exclude` (pending ones buffer it); returns the ones
    /// that are gone.
    pub(super) fn fan_out(
        &mut self,
        p: &Publication,
        exclude: Option<ConnectionId>,
    ) -> Vec<ConnectionId> {
        let started = crate::meter::start();
        let mut gone = Vec::new();
        let mut queued = 0;
        for s in self.subs.iter_mut() {
            if Some(s.sub.id) == exclude {
                continue;
            }
            match &mut s.pending {
                Some(buf) if buf.len() < MAX_PENDING => buf.push(p.clone()),
                Some(_) => {
                    tracing::warn!(
                        "nats engine: a subscriber of {} missed a message while it was being set up",
                        p.topic
                    );
                }
                None => match s.sub.sink.deliver(p) {
                    Delivered::Queued => queued += 1,
                    Delivered::Dropped => {}
                    Delivered::Gone => gone.push(s.sub.id),
                },
            }
        }
        crate::meter::fanned_out(queued, started);
        gone
    }
}

/// The topics of this node.
#[derive(Default)]
pub(super) struct Local {
    pub(super) topics: HashMap<Arc<str>, Topic>,
}

impl Local {
    /// Subscribers per topic, for the node's counts.
    pub(super) fn counts(&self) -> HashMap<String, usize> {
        self.topics
            .iter()
            .filter(|(_, t)| !t.subs.is_empty())
            .map(|(k, t)| (k.to_string(), t.subs.len()))
            .collect()
    }

    /// Every presence entry of this node: (topic, connection, key, meta).
    pub(super) fn entries(&self) -> Vec<(Arc<str>, ConnectionId, String, Value)> {
        let mut out = Vec::new();
        for (topic, t) in &self.topics {
            for (id, (key, meta)) in &t.tracked {
                out.push((topic.clone(), *id, key.clone(), meta.clone()));
            }
        }
        out
    }

    /// Removes a topic without subscribers nor entries, stopping its tasks.
    pub(super) fn gc(&mut self, topic: &Arc<str>) {
        if self.topics.get(topic).is_some_and(|t| t.subs.is_empty()) {
            if let Some(t) = self.topics.get_mut(topic) {
                for task in t.tasks.drain(..) {
                    task.abort();
                }
                t.cursor = None;
                t.catch_up = None;
            }
        }
        if self.topics.get(topic).is_some_and(Topic::is_idle) {
            self.topics.remove(topic);
        }
    }
}
