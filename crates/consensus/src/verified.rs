//! The signed ids of transactions whose signatures a validator already checked, so that a
//! proposal or a block holding them is not checked again.
//!
//! An id normally leaves when its transaction is executed. One that never is (a proposal
//! checked after its block was executed, a transaction the mempool let go) must not stay
//! for ever, and the memory must not stay at its peak: the ids are kept in two generations,
//! and when the newer one is full the older one is dropped, its memory with it. An id
//! forgotten early costs one more signature check, nothing else.

use secnet_types::Hash;
use std::collections::HashSet;

/// Ids of checked signatures, in two generations of at most `generation` ids each.
#[derive(Debug)]
pub(crate) struct VerifiedIds {
    newer: HashSet<Hash>,
    older: HashSet<Hash>,
    generation: usize,
}

impl VerifiedIds {
    /// Keeps each id for at least `generation` later insertions (at least one), and at most
    /// `2 * generation` ids.
    pub(crate) fn new(generation: usize) -> VerifiedIds {
        VerifiedIds {
            newer: HashSet::new(),
            older: HashSet::new(),
            generation: generation.max(1),
        }
    }

    /// Remembers `ids`.
    pub(crate) fn extend(&mut self, ids: impl IntoIterator<Item = Hash>) {
        for id in ids {
            if self.newer.len() >= self.generation {
                self.older = std::mem::take(&mut self.newer);
            }
            self.newer.insert(id);
        }
    }

    /// Whether `id` is remembered.
    pub(crate) fn contains(&self, id: &Hash) -> bool {
        self.newer.contains(id) || self.older.contains(id)
    }

    /// Forgets `id`.
    pub(crate) fn remove(&mut self, id: &Hash) {
        self.newer.remove(id);
        self.older.remove(id);
    }

    /// How many ids are remembered (an id in both generations counts twice).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }

    /// How many ids the two generations have room for without growing.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.newer.capacity() + self.older.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u64) -> Hash {
        Hash::digest(&n.to_le_bytes())
    }

    #[test]
    fn ids_never_executed_leave_and_their_memory_with_them() {
        let mut ids = VerifiedIds::new(1_000);
        // Ids remembered and never removed, as for a proposal checked after its block ran.
        ids.extend((0..1_000).map(id));
        ids.extend((1_000..3_000).map(id));
        assert!(ids.len() <= 2_000);
        assert!((0..1_000).all(|n| !ids.contains(&id(n))), "the oldest left");
        assert!((2_000..3_000).all(|n| ids.contains(&id(n))));
        // However many come and go, the sets hold room for about two generations only.
        for round in 0..50u64 {
            ids.extend((round * 10_000..round * 10_000 + 10_000).map(|n| id(1_000_000 + n)));
            assert!(ids.len() <= 2_000);
            assert!(ids.capacity() <= 2 * 2 * 1_000 + 64, "{}", ids.capacity());
        }
    }

    proptest! {
        /// Against a model that remembers everything: an id is never claimed that was not
        /// remembered or was removed since, and one remembered among the last `generation`
        /// insertions is always found.
        #[test]
        fn answers_as_a_set_that_forgets_only_old_ids(
            generation in 1usize..16,
            steps in prop::collection::vec((any::<bool>(), 0u64..24), 0..300),
        ) {
            let mut ids = VerifiedIds::new(generation);
            let mut model: HashSet<u64> = HashSet::new();
            let mut inserted: Vec<u64> = Vec::new();
            for (insert, n) in steps {
                if insert {
                    ids.extend([id(n)]);
                    model.insert(n);
                    inserted.push(n);
                } else {
                    ids.remove(&id(n));
                    model.remove(&n);
                }
                for k in 0..24 {
                    if ids.contains(&id(k)) {
                        prop_assert!(model.contains(&k), "{k} was never remembered or was removed");
                    }
                }
                let recent = inserted.len().saturating_sub(generation);
                for k in &inserted[recent..] {
                    prop_assert_eq!(ids.contains(&id(*k)), model.contains(k));
                }
                prop_assert!(ids.len() <= 2 * generation);
            }
        }
    }
}
