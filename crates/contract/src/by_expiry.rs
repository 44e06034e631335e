//! The grants' keys in order of expiry, kept compactly: what each block walks from the front
//! to retire the grants that expired long enough ago.
//!
//! A grant stays in this queue from its issue until it is retired, an hour after it expired,
//! so the queue holds every live grant: a few hours of requests. A `BTreeSet` of
//! `(expiry, id)` takes about 72 bytes for each (its nodes are about half full when keys
//! arrive in order, as expiries mostly do); this queue takes about 40, the key itself, by
//! keeping the keys in sorted chunks that a full chunk passes its largest key on from, so
//! that they stay full (a chunk's storage grows by doubling as it fills, so chunks filled
//! from the middle take up to about 53).

use secnet_types::GrantId;
use std::collections::VecDeque;

/// A grant's expiry (milliseconds since the Unix epoch) and its id.
pub(crate) type Expiring = (u64, GrantId);

/// Keys a chunk holds at most (20 KiB: a chunk's storage grows by doubling, to this).
const CHUNK: usize = 512;

/// An ordered set of [`Expiring`] keys.
///
/// INVARIANT: every chunk is non-empty, sorted, and holds at most [`CHUNK`] keys; every key
/// of a chunk is below every key of the chunks after it; `len` is the number of keys.
#[derive(Debug, Clone, Default)]
pub(crate) struct ByExpiry {
    chunks: VecDeque<VecDeque<Expiring>>,
    len: usize,
}

impl ByExpiry {
    /// How many keys it holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `key` (a key already there stays once).
    pub(crate) fn insert(&mut self, key: Expiring) {
        // The last chunk whose first key is at most `key` (keys arrive mostly in order, so
        // mostly the last chunk), or the first.
        let at = self
            .chunks
            .partition_point(|c| c.front().is_some_and(|first| *first <= key))
            .saturating_sub(1);
        let Some(chunk) = self.chunks.get_mut(at) else {
            self.chunks.push_back(VecDeque::from([key]));
            self.len += 1;
            return;
        };
        let position = chunk.partition_point(|k| *k < key);
        if chunk.get(position) == Some(&key) {
            return;
        }
        self.len += 1;
        // A full chunk passes its largest key (it may be `key`) to the next chunk if that
        // has room, else to a new chunk after it: so chunks stay full whether keys arrive
        // at the end, as expiries mostly do, or in the middle, as a block's grants of one
        // expiry do (they are ordered by id).
        if chunk.len() < CHUNK {
            chunk.insert(position, key);
            return;
        }
        // Taken out before `key` goes in, so that the chunk's storage never grows past its
        // keys (the largest is `key` itself when it goes at the end).
        let moved = match chunk.pop_back() {
            Some(last) if position < CHUNK => {
                chunk.insert(position, key);
                last
            }
            Some(last) => {
                chunk.push_back(last);
                key
            }
            None => key,
        };
        match self.chunks.get_mut(at + 1) {
            Some(next) if next.len() < CHUNK => next.push_front(moved),
            Some(_) => self.chunks.insert(at + 1, VecDeque::from([moved])),
            None => {
                // A new last chunk is where keys arriving in order go next: it gets its
                // whole storage at once, rather than by doubling (one chunk at the end
                // can be partly empty; the others grow as they fill).
                let mut last = VecDeque::with_capacity(CHUNK);
                last.push_back(moved);
                self.chunks.push_back(last);
            }
        }
    }

    /// Holds `keys`, in any order (sorted first: cheaper than inserting them one by one
    /// where they fall).
    pub(crate) fn from_keys(mut keys: Vec<Expiring>) -> ByExpiry {
        keys.sort_unstable();
        keys.dedup();
        let len = keys.len();
        let mut chunks = VecDeque::with_capacity(len.div_ceil(CHUNK));
        let mut keys = keys.into_iter().peekable();
        while keys.peek().is_some() {
            let mut chunk = VecDeque::with_capacity(CHUNK);
            chunk.extend(keys.by_ref().take(CHUNK));
            chunks.push_back(chunk);
        }
        ByExpiry { chunks, len }
    }

    /// The smallest key.
    pub(crate) fn first(&self) -> Option<&Expiring> {
        self.chunks.front()?.front()
    }

    /// Removes and returns the smallest key.
    pub(crate) fn pop_first(&mut self) -> Option<Expiring> {
        let chunk = self.chunks.front_mut()?;
        let key = chunk.pop_front()?;
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        self.len -= 1;
        Some(key)
    }

    /// Every key, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Expiring> + '_ {
        self.chunks.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use secnet_types::Hash;
    use std::collections::BTreeSet;

    fn key(expiry: u64, id: u8) -> Expiring {
        (expiry, Hash::digest(&[id]))
    }

    /// The invariant, and the same keys as `model` in the same order.
    fn check(queue: &ByExpiry, model: &BTreeSet<Expiring>) {
        assert!(
            queue
                .chunks
                .iter()
                .all(|c| !c.is_empty() && c.len() <= CHUNK)
        );
        assert_eq!(queue.len(), model.len());
        assert!(queue.iter().eq(model.iter()));
        assert_eq!(queue.first(), model.first());
    }

    proptest! {
        /// Inserts (in order, out of order, repeated) and removals from the front, mixed,
        /// leave the queue holding what an ordered set holds.
        #[test]
        fn holds_what_an_ordered_set_holds(steps in prop::collection::vec(
            (0u64..3, 0u64..2_000, any::<u8>(), 0usize..600), 1..40)) {
            let mut queue = ByExpiry::default();
            let mut model = BTreeSet::new();
            let mut clock = 0;
            for (kind, expiry, id, count) in steps {
                match kind {
                    // A block's worth of grants of one lifetime: in order, after the rest.
                    0 => {
                        clock += expiry;
                        for i in 0..count {
                            let k = key(clock, id.wrapping_add(i as u8));
                            queue.insert(k);
                            model.insert(k);
                        }
                    }
                    // Grants of any lifetime: anywhere, repeated keys included.
                    1 => {
                        for i in 0..count {
                            let k = key(expiry + (i as u64 * 7) % 300, id);
                            queue.insert(k);
                            model.insert(k);
                        }
                    }
                    _ => {
                        for _ in 0..count {
                            prop_assert_eq!(queue.pop_first(), model.pop_first());
                        }
                    }
                }
                check(&queue, &model);
            }
        }
    }

    proptest! {
        /// Built from keys in any order, then changed, it holds what an ordered set holds.
        #[test]
        fn built_at_once_it_holds_the_same(keys in prop::collection::vec((0u64..50, any::<u8>()), 0..2_000),
                                           more in prop::collection::vec((0u64..60, any::<u8>()), 0..600)) {
            let keys: Vec<Expiring> = keys.into_iter().map(|(e, id)| key(e, id)).collect();
            let mut model: BTreeSet<Expiring> = keys.iter().copied().collect();
            let mut queue = ByExpiry::from_keys(keys);
            check(&queue, &model);
            for (e, id) in more {
                queue.insert(key(e, id));
                model.insert(key(e, id));
            }
            check(&queue, &model);
        }
    }

    #[test]
    fn keys_in_order_fill_their_chunks() {
        // Expiries in order; within one, ids in any order, as a block's grants come.
        let mut queue = ByExpiry::default();
        for i in 0..10 * CHUNK as u64 {
            queue.insert((i / 300, Hash::digest(&i.to_be_bytes())));
        }
        assert_eq!(queue.chunks.len(), 10);
        // Full, and their storage no larger: 40 bytes a key.
        assert!(
            queue
                .chunks
                .iter()
                .all(|c| c.len() == CHUNK && c.capacity() == CHUNK)
        );
    }
}
