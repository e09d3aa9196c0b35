//! The list of a worker's connections of one channel that its heartbeat visits (a leaf: the
//! channel's shared state holds it, the heartbeat walks it).

use std::sync::{Arc, Weak};

/// A worker's connections of one channel, for the heartbeat: weak references, so that the list
/// keeps no connection alive. A dead reference still holds its entry's allocation, so dead ones
/// are swept as connections end (once they may be half the list), not only at the next beat:
/// a churn of short connections between two beats (30 s by default) would otherwise keep tens
/// of thousands of them, and the list's capacity with them.
pub(crate) struct Beats<T> {
    list: Vec<Weak<T>>,
    /// Connections that ended since the last sweep.
    ended: usize,
}

impl<T> Default for Beats<T> {
    fn default() -> Self {
        Beats {
            list: Vec::new(),
            ended: 0,
        }
    }
}

impl<T> Beats<T> {
    pub(crate) fn add(&mut self, entry: &Arc<T>) {
        self.list.push(Arc::downgrade(entry));
    }

    /// One of the connections ended (its entry goes once the connection is dropped): sweeps
    /// when those may be half the list, so that the sweeps cost O(1) per connection.
    pub(crate) fn ended(&mut self) {
        self.ended += 1;
        if self.ended * 2 >= self.list.len() {
            self.retain(|_| true);
        }
    }

    /// Keeps the live entries for which `keep` holds; gives back capacity that is mostly
    /// unused.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Arc<T>) -> bool) {
        self.list.retain(|w| w.upgrade().is_some_and(|e| keep(&e)));
        self.ended = 0;
        if self.list.capacity() > 4 * self.list.len().max(16) {
            self.list.shrink_to(2 * self.list.len());
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.list.len()
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.list.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_connections_are_swept_without_waiting_for_a_beat() {
        let mut beats = Beats::default();
        // Waves of 2,000 connections opened, then all gone: between two beats the list holds
        // no more than about a wave, dead or alive, and its capacity follows.
        for _ in 0..20 {
            let wave: Vec<Arc<u64>> = (0..2000).map(Arc::new).collect();
            for e in &wave {
                beats.add(e);
            }
            assert!(beats.len() <= 4000, "{} entries", beats.len());
            drop(wave);
            for _ in 0..2000 {
                beats.ended();
            }
            assert!(beats.len() <= 2, "{} dead entries left", beats.len());
        }
        assert!(beats.capacity() <= 8192, "capacity {}", beats.capacity());
        // A sweep with nothing left gives the capacity back.
        beats.retain(|_| true);
        assert!(beats.capacity() <= 64, "capacity {}", beats.capacity());
    }

    #[test]
    fn a_sweep_keeps_live_entries() {
        let mut beats = Beats::default();
        let live: Vec<Arc<u64>> = (0..100).map(Arc::new).collect();
        for e in &live {
            beats.add(e);
        }
        for _ in 0..100 {
            beats.ended();
        }
        assert_eq!(beats.len(), 100);
        beats.retain(|e| **e % 2 == 0);
        assert_eq!(beats.len(), 50);
    }
}
