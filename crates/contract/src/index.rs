//! The contract's ordered indexes: the keys that it and its readers walk in an order the
//! state tree (keyed by hashes of keys) cannot give — listings by content hash, listings by
//! owner, grants by expiry — and the subscriptions' keys.
//!
//! Each index is a sparse Merkle tree of rows. Its root commits to nothing; its hashes
//! check what a store gives back. So, like the state tree, an index can move out of memory
//! into the state tree's store ([`crate::State::keep_tree_in`]), and a state holding
//! millions of listings and grants keeps only a bounded part of them in memory.

use crate::state::StateTree;
use secnet_merkle::Digest;
use secnet_types::{AccountId, GrantId, Hash};
use std::ops::ControlFlow;
use std::sync::Arc;

/// How many indexes there are.
pub(crate) const INDEXES: usize = 4;

/// The index a row belongs to (its position among [`INDEXES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Index {
    /// Listings by content hash.
    Listed = 0,
    /// Listings by owner, then content hash.
    Owned = 1,
    /// Subscriptions, in no meaningful order (only exports walk them).
    Subscribed = 2,
    /// Grants by expiry, then id.
    Expiring = 3,
}

/// One row of an index.
///
/// A row's key in its index is made from the row, in the order the index is walked in:
/// - `Listed`: the content hash;
/// - `Owned`: the owner's first 16 bytes, then the content hash's first 16. Two rows share
///   a key only if two accounts share their first 16 bytes, which takes about 2^64 key
///   pairs to find among one's own accounts, and 2^128 to find for someone else's: the walk
///   of an owner's rows checks the whole owner, and such a pair can only hide its maker's
///   own listings from its maker's own listing by owner;
/// - `Subscribed`: the SHA-256 of the row (no order is needed, and no two rows collide);
/// - `Expiring`: the expiry (big-endian), then the grant id's first 24 bytes (grant ids are
///   transaction hashes, which nobody chooses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Row {
    Listed(Hash),
    Owned(AccountId, Hash),
    Subscribed(Hash, AccountId),
    Expiring(u64, GrantId),
}

impl Row {
    pub(crate) fn index(&self) -> Index {
        match self {
            Row::Listed(_) => Index::Listed,
            Row::Owned(..) => Index::Owned,
            Row::Subscribed(..) => Index::Subscribed,
            Row::Expiring(..) => Index::Expiring,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Row::Listed(h) => out.extend_from_slice(&h.0),
            Row::Owned(a, h) => {
                out.extend_from_slice(&a.0);
                out.extend_from_slice(&h.0);
            }
            Row::Subscribed(h, a) => {
                out.extend_from_slice(&h.0);
                out.extend_from_slice(&a.0);
            }
            Row::Expiring(t, g) => {
                out.extend_from_slice(&t.to_be_bytes());
                out.extend_from_slice(&g.0);
            }
        }
        out
    }

    fn key(&self, bytes: &[u8]) -> Digest {
        let mut key = [0u8; 32];
        match self {
            Row::Listed(h) => key = h.0,
            Row::Owned(a, h) => {
                key[..16].copy_from_slice(&a.0[..16]);
                key[16..].copy_from_slice(&h.0[..16]);
            }
            Row::Subscribed(..) => key = Hash::digest(bytes).0,
            Row::Expiring(t, g) => {
                key[..8].copy_from_slice(&t.to_be_bytes());
                key[8..].copy_from_slice(&g.0[..24]);
            }
        }
        key
    }

    /// The row of `index` whose bytes are `bytes`, if they are one.
    fn from_bytes(index: Index, bytes: &[u8]) -> Option<Row> {
        let h32 = |b: &[u8]| -> Option<[u8; 32]> { b.try_into().ok() };
        Some(match index {
            Index::Listed => Row::Listed(Hash(h32(bytes)?)),
            Index::Owned => {
                let (a, h) = bytes.split_at_checked(32)?;
                Row::Owned(AccountId(h32(a)?), Hash(h32(h)?))
            }
            Index::Subscribed => {
                let (h, a) = bytes.split_at_checked(32)?;
                Row::Subscribed(Hash(h32(h)?), AccountId(h32(a)?))
            }
            Index::Expiring => {
                let (t, g) = bytes.split_at_checked(8)?;
                Row::Expiring(u64::from_be_bytes(t.try_into().ok()?), Hash(h32(g)?))
            }
        })
    }

    /// The row's key in its index, and its value hash and payload there.
    fn entry(&self) -> (Digest, Digest, Arc<[u8]>) {
        let bytes = self.bytes();
        (self.key(&bytes), Hash::digest(&bytes).0, Arc::from(bytes))
    }
}

/// The indexes' trees, one per [`Index`].
pub(crate) type Trees = [StateTree; INDEXES];

/// The trees holding exactly `rows`.
pub(crate) fn build(rows: impl IntoIterator<Item = Row>) -> Trees {
    let mut entries: [Vec<_>; INDEXES] = Default::default();
    for row in rows {
        if let Some(list) = entries.get_mut(row.index() as usize) {
            list.push(row.entry());
        }
    }
    entries.map(StateTree::from_entries_with)
}

/// Adds (`true`) or removes (`false`) each of `rows`, the last change of a row winning.
pub(crate) fn apply(trees: &mut Trees, rows: Vec<(Row, bool)>) {
    let mut updates: [Vec<_>; INDEXES] = Default::default();
    for (row, present) in rows {
        let (key, value_hash, payload) = row.entry();
        if let Some(list) = updates.get_mut(row.index() as usize) {
            list.push((key, present.then_some((value_hash, payload))));
        }
    }
    for (tree, updates) in trees.iter_mut().zip(updates) {
        tree.apply_with(updates);
    }
}

/// Calls `f` with the rows of `index` from the key `from` on, in order, until it breaks.
pub(crate) fn walk<B>(
    trees: &Trees,
    index: Index,
    from: &Digest,
    mut f: impl FnMut(Row) -> ControlFlow<B>,
) -> Option<B> {
    let tree = trees.get(index as usize)?;
    tree.walk_from(from, |_, bytes| {
        // INVARIANT: an index holds only rows' bytes of its own kind (they were checked
        // against their hashes when read back), so they decode.
        match Row::from_bytes(index, bytes) {
            Some(row) => f(row),
            None => ControlFlow::Continue(()),
        }
    })
}

/// The first key of `owner`'s rows in [`Index::Owned`].
pub(crate) fn owned_from(owner: &AccountId) -> Digest {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(&owner.0[..16]);
    key
}

/// The key of the first row of [`Index::Listed`] after `hash`, if any could follow.
pub(crate) fn listed_after(hash: &Hash) -> Option<Digest> {
    let mut key = hash.0;
    for byte in key.iter_mut().rev() {
        if *byte == u8::MAX {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(key);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_of(trees: &Trees, index: Index) -> Vec<Row> {
        let mut out = Vec::new();
        walk(trees, index, &[0; 32], |row| {
            out.push(row);
            ControlFlow::<()>::Continue(())
        });
        out
    }

    #[test]
    fn rows_round_trip_and_walk_in_their_index_order() {
        let h = |n: u8| Hash::digest(&[n]);
        let a = |n: u8| AccountId(Hash::digest(&[n, n]).0);
        let rows = [
            Row::Listed(h(1)),
            Row::Listed(h(2)),
            Row::Owned(a(1), h(1)),
            Row::Owned(a(1), h(2)),
            Row::Owned(a(2), h(3)),
            Row::Subscribed(h(1), a(2)),
            Row::Expiring(20, h(9)),
            Row::Expiring(10, h(8)),
            Row::Expiring(10, h(7)),
        ];
        for row in rows {
            assert_eq!(Row::from_bytes(row.index(), &row.bytes()), Some(row));
        }
        let mut trees = build(rows);
        let expiring: Vec<_> = rows_of(&trees, Index::Expiring);
        let mut expected = vec![(10, h(8)), (10, h(7)), (20, h(9))];
        expected.sort_by_key(|(t, g)| (*t, g.0));
        assert_eq!(
            expiring,
            expected
                .into_iter()
                .map(|(t, g)| Row::Expiring(t, g))
                .collect::<Vec<_>>()
        );
        apply(
            &mut trees,
            vec![
                (Row::Listed(h(1)), false),
                (Row::Listed(h(4)), true),
                (Row::Listed(h(4)), false),
                (Row::Listed(h(5)), false),
                (Row::Listed(h(5)), true),
            ],
        );
        let mut listed = [h(2), h(5)];
        listed.sort();
        assert_eq!(
            rows_of(&trees, Index::Listed),
            listed.iter().map(|h| Row::Listed(*h)).collect::<Vec<_>>()
        );
        let first = listed.first().copied().unwrap_or(Hash::ZERO);
        let mut after = Vec::new();
        if let Some(from) = listed_after(&first) {
            walk(&trees, Index::Listed, &from, |row| {
                after.push(row);
                ControlFlow::<()>::Continue(())
            });
        }
        assert_eq!(
            after,
            listed[1..]
                .iter()
                .map(|h| Row::Listed(*h))
                .collect::<Vec<_>>()
        );
        assert_eq!(listed_after(&Hash([0xff; 32])), None);
        let mut of_a1 = Vec::new();
        walk(&trees, Index::Owned, &owned_from(&a(1)), |row| match row {
            Row::Owned(o, h) if o.0[..16] == a(1).0[..16] => {
                of_a1.push(h);
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Break(()),
        });
        let mut expected = vec![h(1), h(2)];
        expected.sort();
        assert_eq!(of_a1, expected);
    }
}
