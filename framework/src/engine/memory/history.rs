//! A topic's history: the last publications, numbered in an epoch, for recovery.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::engine::{HistoryConfig, Position, Publication};
use crate::id::ConnectionId;

pub(super) struct History {
    pub(super) epoch: Arc<str>,
    pub(super) last: u64,
    pub(super) items: VecDeque<(Instant, Publication)>,
    pub(super) config: HistoryConfig,
}

impl History {
    pub(super) fn new(config: HistoryConfig) -> Self {
        History {
            epoch: new_epoch(),
            last: 0,
            items: VecDeque::new(),
            config,
        }
    }

    pub(super) fn prune(&mut self, now: Instant) {
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
    pub(super) fn since(&self, seq: u64) -> Option<impl Iterator<Item = &Publication>> {
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

    pub(super) fn position(&self) -> Position {
        Position {
            epoch: self.epoch.to_string(),
            seq: self.last,
        }
    }
}

pub(super) fn new_epoch() -> Arc<str> {
    // Epochs only need to differ between incarnations of a topic's history.
    let id = ConnectionId::next().to_string();
    Arc::from(id.trim_end_matches('='))
}
