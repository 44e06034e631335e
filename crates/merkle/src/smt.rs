//! A sparse Merkle tree over 256-bit keys, for state commitments.
//!
//! Shape: an empty subtree hashes to 32 zero bytes; a subtree holding exactly one entry is
//! that entry's leaf, placed as high as it can go; a subtree holding two or more entries is an
//! internal node. Hashes:
//!
//! - leaf: `SHA-256(0x00 || key || value_hash)`
//! - internal: `SHA-256(0x01 || left || right)`
//!
//! The shape, and so the root, is a function of the set of entries alone: replaying the
//! same blocks, or rebuilding from a snapshot of the entries, gives the same root.

use crate::{Digest, sha256};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The hash of an empty subtree.
pub const EMPTY: Digest = [0u8; 32];

/// `SHA-256(0x00 || key || value_hash)`.
pub fn leaf_hash(key: &Digest, value_hash: &Digest) -> Digest {
    sha256(&[&[0x00], key, value_hash])
}

fn internal_hash(left: &Digest, right: &Digest) -> Digest {
    sha256(&[&[0x01], left, right])
}

/// Bit `depth` of `key`, most significant first.
fn bit(key: &Digest, depth: usize) -> bool {
    let byte = key.get(depth / 8).copied().unwrap_or(0);
    (byte >> (7 - (depth % 8))) & 1 == 1
}

/// A node is a pointer and a tag (16 bytes): an internal node holding two of them stays
/// small, which is what each version of the tree copies along the paths it changes.
#[derive(Debug, Clone)]
enum Node<P> {
    Empty,
    /// Shared between versions of the tree, like internal nodes.
    Leaf(Arc<Leaf<P>>),
    /// Shared between versions of the tree: an update copies only the nodes on its paths.
    Internal(Arc<Internal<P>>),
}

/// A leaf keeps what its hash is made of, not the hash: hashed again only where a path
/// passes beside it, it costs a state entry 32 bytes less of memory.
#[derive(Debug)]
struct Leaf<P> {
    key: Digest,
    value_hash: Digest,
    payload: P,
}

#[derive(Debug, Clone)]
struct Internal<P> {
    left: Node<P>,
    right: Node<P>,
    hash: Digest,
}

/// One entry: its key, the hash of its value, and what the tree keeps beside it.
type Entry<P> = (Digest, Digest, P);

impl<P: Clone> Node<P> {
    fn hash(&self) -> Digest {
        match self {
            Node::Empty => EMPTY,
            Node::Leaf(l) => leaf_hash(&l.key, &l.value_hash),
            Node::Internal(i) => i.hash,
        }
    }

    fn leaf((key, value_hash, payload): Entry<P>) -> Node<P> {
        Node::Leaf(Arc::new(Leaf {
            key,
            value_hash,
            payload,
        }))
    }

    /// Joins two children into the canonical node for their parent.
    fn join(left: Node<P>, right: Node<P>) -> Node<P> {
        match (&left, &right) {
            (Node::Empty, Node::Empty) => Node::Empty,
            (Node::Empty, Node::Leaf(_)) => right,
            (Node::Leaf(_), Node::Empty) => left,
            _ => {
                let hash = internal_hash(&left.hash(), &right.hash());
                Node::Internal(Arc::new(Internal { left, right, hash }))
            }
        }
    }
}

/// Something a subtree is built from: an entry to make a leaf of, or a leaf that already
/// exists (a leaf's hash does not depend on its depth, so one that moves down is kept as it is).
trait Item<P> {
    fn key(&self) -> &Digest;
    fn node(&self) -> Node<P>;
}

impl<P: Clone> Item<P> for Entry<P> {
    fn key(&self) -> &Digest {
        &self.0
    }
    fn node(&self) -> Node<P> {
        Node::leaf(self.clone())
    }
}

/// A new entry, or the leaf that was there.
enum Merged<P> {
    New(Entry<P>),
    Kept(Arc<Leaf<P>>),
}

impl<P: Clone> Item<P> for Merged<P> {
    fn key(&self) -> &Digest {
        match self {
            Merged::New(entry) => &entry.0,
            Merged::Kept(leaf) => &leaf.key,
        }
    }
    fn node(&self) -> Node<P> {
        match self {
            Merged::New(entry) => entry.node(),
            Merged::Kept(leaf) => Node::Leaf(Arc::clone(leaf)),
        }
    }
}

/// Builds the canonical subtree at `depth` from items sorted by key, keys distinct.
fn build<P: Clone, I: Item<P>>(depth: usize, items: &[I]) -> Node<P> {
    match items {
        [] => Node::Empty,
        [item] => item.node(),
        _ => {
            let split = items.partition_point(|item| !bit(item.key(), depth));
            let (l, r) = items.split_at(split);
            Node::join(build(depth + 1, l), build(depth + 1, r))
        }
    }
}

/// An update: set (`Some`) or remove (`None`) the entry under a key.
type Update<P> = (Digest, Option<(Digest, P)>);

/// Applies sorted, distinct-key updates below `node` at `depth`; returns the new node and
/// how many entries it gained (negative: lost).
fn update<P: Clone>(node: Node<P>, depth: usize, updates: &[Update<P>]) -> (Node<P>, isize) {
    if updates.is_empty() {
        return (node, 0);
    }
    match node {
        Node::Empty => {
            let inserts: Vec<Entry<P>> = updates
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|(h, p)| (*k, *h, p.clone())))
                .collect();
            let gained = inserts.len() as isize;
            (build(depth, &inserts), gained)
        }
        Node::Leaf(leaf) => {
            let mut merged: Vec<Merged<P>> = Vec::with_capacity(updates.len() + 1);
            let mut existing = Some(leaf);
            for (k, v) in updates {
                // The leaf stays unless an update names its key.
                if let Some(kept) = existing.take_if(|l| l.key <= *k)
                    && kept.key < *k
                {
                    merged.push(Merged::Kept(kept));
                }
                if let Some((h, p)) = v {
                    merged.push(Merged::New((*k, *h, p.clone())));
                }
            }
            if let Some(kept) = existing {
                merged.push(Merged::Kept(kept));
            }
            let gained = merged.len() as isize - 1;
            (build(depth, &merged), gained)
        }
        Node::Internal(internal) => {
            // A node shared with another version is copied (its children stay shared).
            let Internal { left, right, .. } = Arc::unwrap_or_clone(internal);
            let split = updates.partition_point(|(k, _)| !bit(k, depth));
            let (lu, ru) = updates.split_at(split);
            let (left, gained_left) = update(left, depth + 1, lu);
            let (right, gained_right) = update(right, depth + 1, ru);
            (Node::join(left, right), gained_left + gained_right)
        }
    }
}

/// A sparse Merkle tree held in memory, keeping a payload `P` beside each entry (`()` when
/// only the commitment matters).
///
/// Cloning is O(1): versions share every node neither has changed since, so keeping the
/// trees of recent heights costs only the paths each block touched.
#[derive(Debug, Clone)]
pub struct SparseMerkleTree<P = ()> {
    root: Node<P>,
    len: usize,
}

impl<P> Default for SparseMerkleTree<P> {
    fn default() -> Self {
        SparseMerkleTree {
            root: Node::Empty,
            len: 0,
        }
    }
}

impl SparseMerkleTree {
    /// An empty tree.
    pub fn new() -> SparseMerkleTree {
        SparseMerkleTree::default()
    }

    /// Builds a tree from `(key, value_hash)` entries in one pass; later duplicates win.
    pub fn from_entries(entries: Vec<(Digest, Digest)>) -> SparseMerkleTree {
        SparseMerkleTree::from_entries_with(entries.into_iter().map(|(k, v)| (k, v, ())).collect())
    }

    /// Sets (`Some`) or removes (`None`) entries; for a key given twice the last update wins.
    pub fn apply(&mut self, updates: Vec<(Digest, Option<Digest>)>) {
        self.apply_with(
            updates
                .into_iter()
                .map(|(k, v)| (k, v.map(|v| (v, ()))))
                .collect(),
        );
    }
}

impl<P: Clone> SparseMerkleTree<P> {
    /// Builds a tree from `(key, value_hash, payload)` entries in one pass; later duplicates
    /// win.
    pub fn from_entries_with(mut entries: Vec<(Digest, Digest, P)>) -> SparseMerkleTree<P> {
        entries.sort_by_key(|e| e.0);
        entries.reverse();
        entries.dedup_by(|a, b| a.0 == b.0);
        entries.reverse();
        SparseMerkleTree {
            len: entries.len(),
            root: build(0, &entries),
        }
    }

    /// The root hash.
    pub fn root(&self) -> Digest {
        self.root.hash()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets (`Some((value_hash, payload))`) or removes (`None`) entries; for a key given
    /// twice the last update wins.
    pub fn apply_with(&mut self, mut updates: Vec<(Digest, Option<(Digest, P)>)>) {
        if updates.is_empty() {
            return;
        }
        // Stable sort keeps the order of duplicates; keep the last of each key.
        updates.sort_by_key(|u| u.0);
        let mut deduped: Vec<Update<P>> = Vec::with_capacity(updates.len());
        for u in updates {
            match deduped.last_mut() {
                Some(last) if last.0 == u.0 => *last = u,
                _ => deduped.push(u),
            }
        }
        let root = std::mem::replace(&mut self.root, Node::Empty);
        let (root, gained) = update(root, 0, &deduped);
        self.root = root;
        self.len = self.len.saturating_add_signed(gained);
    }

    fn leaf(&self, key: &Digest) -> Option<(&Digest, &P)> {
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => return None,
                Node::Leaf(l) => {
                    return (l.key == *key).then_some((&l.value_hash, &l.payload));
                }
                Node::Internal(i) => {
                    node = if bit(key, depth) { &i.right } else { &i.left };
                    depth += 1;
                }
            }
        }
    }

    /// The value hash stored under `key`.
    pub fn get(&self, key: &Digest) -> Option<Digest> {
        self.leaf(key).map(|(h, _)| *h)
    }

    /// The payload kept under `key`.
    pub fn payload(&self, key: &Digest) -> Option<&P> {
        self.leaf(key).map(|(_, p)| p)
    }

    /// A proof that `key` holds its current value, or that it is absent.
    pub fn prove(&self, key: &Digest) -> SmtProof {
        let mut siblings = Vec::new();
        let mut node = &self.root;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => {
                    return SmtProof {
                        siblings,
                        leaf: None,
                    };
                }
                Node::Leaf(l) => {
                    return SmtProof {
                        siblings,
                        leaf: Some((l.key, l.value_hash)),
                    };
                }
                Node::Internal(i) => {
                    if bit(key, depth) {
                        siblings.push(i.left.hash());
                        node = &i.right;
                    } else {
                        siblings.push(i.right.hash());
                        node = &i.left;
                    }
                    depth += 1;
                }
            }
        }
    }
}

/// A membership or non-membership proof: the siblings from the root down, and the leaf where
/// the path ends (`None` where it ends in an empty subtree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtProof {
    /// Sibling hashes from the root downwards.
    pub siblings: Vec<Digest>,
    /// The leaf at the end of the path, as `(key, value_hash)`.
    pub leaf: Option<(Digest, Digest)>,
}

/// Why an SMT proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtVerifyError {
    /// More siblings than key bits.
    #[error("proof is deeper than 256 levels")]
    TooDeep,
    /// The proof's leaf says something else about the key than claimed.
    #[error("proof's leaf does not match the claimed value")]
    LeafMismatch,
    /// The computed root is not the claimed root.
    #[error("computed root does not match the claimed root")]
    RootMismatch,
}

impl SmtProof {
    /// Checks that under `root`, `key` holds `value_hash` (`Some`) or is absent (`None`).
    pub fn verify(
        &self,
        root: &Digest,
        key: &Digest,
        value_hash: Option<&Digest>,
    ) -> Result<(), SmtVerifyError> {
        let depth = self.siblings.len();
        if depth > 256 {
            return Err(SmtVerifyError::TooDeep);
        }
        let mut acc = match (&self.leaf, value_hash) {
            (Some((k, v)), Some(claimed)) => {
                if k != key || v != claimed {
                    return Err(SmtVerifyError::LeafMismatch);
                }
                leaf_hash(k, v)
            }
            (Some((k, v)), None) => {
                // Absence: another key's leaf sits where `key`'s path ends.
                if k == key || (0..depth).any(|d| bit(k, d) != bit(key, d)) {
                    return Err(SmtVerifyError::LeafMismatch);
                }
                leaf_hash(k, v)
            }
            (None, None) => EMPTY,
            (None, Some(_)) => return Err(SmtVerifyError::LeafMismatch),
        };
        for (d, sibling) in self.siblings.iter().enumerate().rev() {
            acc = if bit(key, d) {
                internal_hash(sibling, &acc)
            } else {
                internal_hash(&acc, sibling)
            };
        }
        if &acc == root {
            Ok(())
        } else {
            Err(SmtVerifyError::RootMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn h(n: u64) -> Digest {
        sha256(&[&n.to_be_bytes()])
    }

    #[test]
    fn empty_and_single_entry_roots() {
        let mut t = SparseMerkleTree::new();
        assert_eq!(t.root(), EMPTY);
        t.apply(vec![(h(1), Some(h(2)))]);
        assert_eq!(t.root(), leaf_hash(&h(1), &h(2)));
        // Removing a key the single leaf does not hold changes nothing.
        t.apply(vec![(h(3), None)]);
        assert_eq!((t.len(), t.root()), (1, leaf_hash(&h(1), &h(2))));
        // Replacing the leaf's value keeps one entry.
        t.apply(vec![(h(1), Some(h(4))), (h(5), None)]);
        assert_eq!((t.len(), t.root()), (1, leaf_hash(&h(1), &h(4))));
        t.apply(vec![(h(1), None)]);
        assert_eq!(t.root(), EMPTY);
        assert!(t.is_empty());
    }

    #[test]
    /// Frozen, and computed independently from the definition in the module docs.
    fn golden_root() {
        let t = SparseMerkleTree::from_entries((0..16).map(|i| (h(i), h(i + 100))).collect());
        assert_eq!(
            hex::encode(t.root()),
            "787ec8453bf734394daac596994d3b68eebdf4841ded0eb79cacafd5d47f853e"
        );
    }

    #[test]
    fn forged_proofs_fail() {
        let t = SparseMerkleTree::from_entries((0..50).map(|i| (h(i), h(i + 100))).collect());
        let root = t.root();
        let p = t.prove(&h(7));
        assert_eq!(p.verify(&root, &h(7), Some(&h(107))), Ok(()));
        assert_eq!(
            p.verify(&root, &h(7), Some(&h(108))),
            Err(SmtVerifyError::LeafMismatch)
        );
        assert!(p.verify(&root, &h(7), None).is_err());
        let absent = t.prove(&h(1000));
        assert_eq!(absent.verify(&root, &h(1000), None), Ok(()));
        assert!(absent.verify(&root, &h(1000), Some(&h(1))).is_err());
        let mut bad = p.clone();
        bad.siblings[0][3] ^= 0x10;
        assert_eq!(
            bad.verify(&root, &h(7), Some(&h(107))),
            Err(SmtVerifyError::RootMismatch)
        );
    }

    #[test]
    fn clones_are_versions() {
        let mut t: SparseMerkleTree<u64> =
            SparseMerkleTree::from_entries_with((0..40).map(|i| (h(i), h(i + 100), i)).collect());
        let old = t.clone();
        let old_root = old.root();
        t.apply_with(vec![(h(3), Some((h(999), 999))), (h(4), None)]);
        assert_ne!(t.root(), old_root);
        assert_eq!(old.root(), old_root);
        assert_eq!(old.payload(&h(3)), Some(&3));
        assert_eq!(t.payload(&h(3)), Some(&999));
        assert_eq!(old.get(&h(4)), Some(h(104)));
        assert_eq!(t.get(&h(4)), None);
        assert_eq!(
            old.prove(&h(4)).verify(&old_root, &h(4), Some(&h(104))),
            Ok(())
        );
    }

    /// The leaf under `key`, as the tree holds it.
    fn leaf_of<P: Clone>(tree: &SparseMerkleTree<P>, key: &Digest) -> Option<Arc<Leaf<P>>> {
        let mut node = &tree.root;
        let mut depth = 0;
        loop {
            match node {
                Node::Empty => return None,
                Node::Leaf(l) => return (l.key == *key).then(|| Arc::clone(l)),
                Node::Internal(i) => {
                    node = if bit(key, depth) { &i.right } else { &i.left };
                    depth += 1;
                }
            }
        }
    }

    #[test]
    fn a_leaf_pushed_down_by_a_new_key_is_kept_not_rebuilt() {
        let mut t = SparseMerkleTree::new();
        t.apply(vec![(h(1), Some(h(2)))]);
        let before = leaf_of(&t, &h(1)).expect("the only leaf");
        t.apply(vec![(h(3), Some(h(4))), (h(5), Some(h(6)))]);
        let after = leaf_of(&t, &h(1)).expect("still there, deeper");
        assert!(Arc::ptr_eq(&before, &after));
        // An update that names the key replaces the leaf.
        t.apply(vec![(h(1), Some(h(7))), (h(8), Some(h(9)))]);
        let replaced = leaf_of(&t, &h(1)).expect("replaced");
        assert!(!Arc::ptr_eq(&before, &replaced));
        assert_eq!(replaced.value_hash, h(7));
        let rebuilt = SparseMerkleTree::from_entries(vec![
            (h(1), h(7)),
            (h(3), h(4)),
            (h(5), h(6)),
            (h(8), h(9)),
        ]);
        assert_eq!(t.root(), rebuilt.root());
    }

    proptest! {
        /// Any sequence of updates gives the same tree as building from the final map.
        #[test]
        fn incremental_matches_rebuild(batches in prop::collection::vec(
            prop::collection::vec((0u64..64, prop::option::of(0u64..1000)), 0..20), 1..12)) {
            // The payload is the number the value hash is made of, so that a leaf kept across
            // updates is seen to keep its own payload.
            let mut tree: SparseMerkleTree<u64> = SparseMerkleTree::default();
            let mut model: BTreeMap<Digest, u64> = BTreeMap::new();
            for batch in batches {
                let updates: Vec<_> =
                    batch.iter().map(|(k, v)| (h(*k), v.map(|v| (h(v), v)))).collect();
                for (k, v) in &batch {
                    match v { Some(v) => { model.insert(h(*k), *v); } None => { model.remove(&h(*k)); } }
                }
                tree.apply_with(updates);
                let rebuilt = SparseMerkleTree::from_entries(model.iter().map(|(k, v)| (*k, h(*v))).collect());
                prop_assert_eq!(tree.root(), rebuilt.root());
                prop_assert_eq!(tree.len(), model.len());
            }
            let root = tree.root();
            for k in 0u64..64 {
                let key = h(k);
                let value_hash = model.get(&key).map(|v| h(*v));
                let proof = tree.prove(&key);
                prop_assert_eq!(proof.verify(&root, &key, value_hash.as_ref()), Ok(()));
                prop_assert_eq!(tree.get(&key), value_hash);
                prop_assert_eq!(tree.payload(&key), model.get(&key));
            }
        }
    }
}
