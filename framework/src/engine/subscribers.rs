//! A topic's subscribers on this node, as both engines keep them.

use std::collections::HashMap;

use crate::engine::Subscriber;
use crate::id::ConnectionId;

/// What the list is keyed by.
pub(crate) trait Keyed {
    fn key(&self) -> ConnectionId;
}

impl Keyed for Subscriber {
    fn key(&self) -> ConnectionId {
        self.id
    }
}

/// A Vec for fan-out (iterating it is the hot path), an index by connection for removal.
/// Removal swaps the last entry into the hole, so order is not kept.
pub(crate) struct Subscribers<T> {
    items: Vec<T>,
    index: HashMap<ConnectionId, usize>,
}

impl<T> Default for Subscribers<T> {
    fn default() -> Self {
        Subscribers {
            items: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T: Keyed> Subscribers<T> {
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    #[cfg_attr(not(any(feature = "redis", feature = "nats")), allow(dead_code))]
    pub(crate) fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.items.iter_mut()
    }

    #[cfg_attr(not(any(feature = "redis", feature = "nats")), allow(dead_code))]
    pub(crate) fn get_mut(&mut self, id: ConnectionId) -> Option<&mut T> {
        let i = *self.index.get(&id)?;
        self.items.get_mut(i)
    }

    /// Adds `item`, or replaces the entry of the same connection. True when it is new.
    pub(crate) fn insert(&mut self, item: T) -> bool {
        match self.index.get(&item.key()) {
            Some(&i) => {
                self.items[i] = item;
                false
            }
            None => {
                self.index.insert(item.key(), self.items.len());
                self.items.push(item);
                true
            }
        }
    }

    /// Removes `id`'s entry. True when there was one.
    pub(crate) fn remove(&mut self, id: ConnectionId) -> bool {
        let Some(i) = self.index.remove(&id) else {
            return false;
        };
        self.items.swap_remove(i);
        if let Some(moved) = self.items.get(i) {
            self.index.insert(moved.key(), i);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S(ConnectionId, u8);
    impl Keyed for S {
        fn key(&self) -> ConnectionId {
            self.0
        }
    }

    #[test]
    fn insert_replace_remove_keep_the_index_right() {
        let ids: Vec<ConnectionId> = (0..4).map(|_| ConnectionId::next()).collect();
        let mut subs = Subscribers::default();
        for (n, id) in ids.iter().enumerate() {
            assert!(subs.insert(S(*id, n as u8)));
        }
        assert!(!subs.insert(S(ids[1], 9)));
        assert_eq!(subs.len(), 4);
        assert!(subs.remove(ids[0]));
        assert!(!subs.remove(ids[0]));
        // The last entry moved into slot 0 and is still found by its id.
        assert_eq!(subs.get_mut(ids[3]).map(|s| s.1), Some(3));
        assert_eq!(subs.get_mut(ids[1]).map(|s| s.1), Some(9));
        let mut left: Vec<u8> = subs.iter().map(|s| s.1).collect();
        left.sort();
        assert_eq!(left, vec![2, 3, 9]);
    }
}
