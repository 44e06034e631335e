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
//!
//! A tree given a [`SubtreeStore`] can move subtrees out of memory ([`SparseMerkleTree::evict`]):
//! it keeps of each only its hash, its size, where the store put its entries and the
//! store's checksum of them. A read of one entry asks the store for that entry alone (the
//! store checks the record against the checksum); a proof or an update reads the entries
//! back, rebuilds the subtree and checks it against the hash. Stored
//! subtrees that sit together can go further ([`group`]): the store keeps their places and
//! hashes too, and the tree one node for all of them.

use crate::{Digest, sha256};
use group::Group;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

mod group;

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
    /// A subtree of two or more entries whose entries a [`SubtreeStore`] holds; it stands
    /// where the internal node was, with the same hash.
    Stored(Arc<Stored<P>>),
    /// Stored subtrees below one node whose places and hashes a [`SubtreeStore`] holds too
    /// (see [`group`]); it stands where that node was, with the same hash.
    Group(Arc<Group<P>>),
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

impl<P> Internal<P> {
    /// Whether this node, at `depth`, is where a subtree is stored whole (when it holds at
    /// most the largest subtree): at or below the store's depth, or above it when a child
    /// is a leaf, a lone entry that subtrees stored below this node would leave in memory.
    fn stored_whole_at(&self, depth: usize, store_depth: usize) -> bool {
        depth >= store_depth
            || matches!(self.left, Node::Leaf(_))
            || matches!(self.right, Node::Leaf(_))
    }
}

/// One entry: its key, the hash of its value, and what the tree keeps beside it.
pub type Entry<P> = (Digest, Digest, P);

/// Where a tree keeps the subtrees it moves out of memory.
///
/// The tree hands over the entries of a subtree (two or more, sorted by key) and keeps where
/// the store put them, with the store's checksum of the record ([`Placed::check`]). A read of
/// one entry asks the store for that entry alone ([`SubtreeStore::find`]); an update or a
/// proof asks for all of them ([`SubtreeStore::load`]), rebuilds the subtree and checks it
/// against the hash it kept.
///
/// A store checks every record it reads back against the checksum it gave for it (damage,
/// or a record that is not the one put there, is caught before anything is answered from
/// it). A tree cannot go on without the entries it committed to: a store that cannot give
/// them back must not return, and [`SubtreeStore::fail`] is told when a subtree rebuilt from
/// what it gave back is not what was put.
pub trait SubtreeStore<P>: Send + Sync + fmt::Debug {
    /// Keeps `entries`; returns where, for [`SubtreeStore::load`], how many bytes they take
    /// there, and the checksum their record is read back against.
    fn put(&self, entries: &[Entry<P>]) -> Result<Placed, StoreError>;

    /// The entries [`SubtreeStore::put`] kept where it placed them (`at`, as it returned),
    /// in the order given, checked against `at.check`.
    fn load(&self, at: Placed) -> Vec<Entry<P>>;

    /// The entry under `key` among those [`SubtreeStore::put`] kept at `at`, if it is one of
    /// them: the record checked against `at.check` as [`SubtreeStore::load`] checks it, but
    /// only that entry made (a read of one entry costs no allocation or hash for the
    /// others). By default, [`SubtreeStore::load`] and a search.
    fn find(&self, at: Placed, key: &Digest) -> Option<Entry<P>> {
        let entries = self.load(at);
        let i = entries.binary_search_by(|e| e.0.cmp(key)).ok()?;
        entries.into_iter().nth(i)
    }

    /// Keeps `bytes` (the places and hashes of stored subtrees that sit together); returns
    /// where, for [`SubtreeStore::load_bytes`], how many bytes they take there, and the
    /// checksum they are read back against. Its locations are distinct from those of
    /// [`SubtreeStore::put`].
    fn put_bytes(&self, bytes: &[u8]) -> Result<Placed, StoreError>;

    /// The bytes [`SubtreeStore::put_bytes`] kept where it placed them (`at`, as it
    /// returned), checked against `at.check`.
    fn load_bytes(&self, at: Placed) -> Vec<u8>;

    /// What [`SubtreeStore::put`], [`SubtreeStore::put_bytes`] or
    /// [`SubtreeStore::put_record`] kept at `at`, as the store keeps it, for another store of
    /// the same kind to keep as it is ([`SubtreeStore::put_record`]): a subtree moves from an
    /// old store to a new one without being read back, rebuilt and written again. Like
    /// [`SubtreeStore::load`], it checks the record, and must not return if it cannot give
    /// it back.
    fn record(&self, at: Placed) -> Vec<u8>;

    /// Keeps a record that [`SubtreeStore::record`] of a store of the same kind gave, as it
    /// is: where, how many bytes it takes, and its checksum (the same as where it came
    /// from). A record that is not one is refused.
    fn put_record(&self, record: &[u8]) -> Result<Placed, StoreError>;

    /// Called when what the store gave back for `location` is not what was put there (a
    /// subtree or group rebuilt from it does not hash as kept, or a group's record does not
    /// decode as one): the store is corrupt, and the tree cannot answer.
    fn fail(&self, location: u64) -> !;

    /// A hint that the records at `at` (as [`SubtreeStore::put`], [`SubtreeStore::put_bytes`]
    /// or [`SubtreeStore::put_record`] placed them) are about to be read, so that a store on
    /// disk can start reading them now, all together, instead of one at a time as each is
    /// needed. Nothing by default.
    fn prefetch(&self, _at: &[Placed]) {}
}

/// Where a store put a subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// What [`SubtreeStore::load`] is given to read it back.
    pub location: u64,
    /// The bytes it takes in the store.
    pub bytes: u64,
    /// The store's checksum of the record, which it checks the record against whenever it
    /// reads it back.
    pub check: u64,
}

/// A store could not keep a subtree; the tree keeps it in memory instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot store a subtree: {0}")]
pub struct StoreError(pub String);

/// A subtree that a store holds.
struct Stored<P> {
    hash: Digest,
    /// How many entries it holds.
    len: usize,
    location: u64,
    /// The bytes it takes in the store.
    bytes: u64,
    /// The store's checksum of its record.
    check: u64,
    backing: Arc<Backing<P>>,
}

impl<P> fmt::Debug for Stored<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stored")
            .field("len", &self.len)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// A store, the size of the subtrees put there, and the subtrees and groups recently read
/// back from it, checked.
struct Backing<P> {
    store: Arc<dyn SubtreeStore<P>>,
    /// About how many entries a stored subtree holds.
    per_subtree: usize,
    /// Subtrees read back, by location; weighed by their entries.
    opened: Mutex<Recent<Node<P>>>,
    /// The places of groups read back, by location; weighed by their subtrees. What is kept
    /// is plain data, not nodes: a group's subtrees point to this store, and would keep it
    /// alive.
    groups: Mutex<Recent<group::Parts>>,
}

impl<P> Backing<P> {
    fn opened(&self) -> std::sync::MutexGuard<'_, Recent<Node<P>>> {
        self.opened.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, Recent<group::Parts>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<P> fmt::Debug for Backing<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backing")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// Things read back from a store, by location, the least recently used dropped first once
/// they weigh more than `capacity` together. A store never puts two things at one location,
/// so what is kept for a location stays true.
struct Recent<V> {
    by_location: HashMap<u64, (V, usize, u64)>,
    by_use: BTreeMap<u64, u64>,
    weight: usize,
    capacity: usize,
    tick: u64,
}

impl<V: Clone> Recent<V> {
    fn new(capacity: usize) -> Recent<V> {
        Recent {
            by_location: HashMap::new(),
            by_use: BTreeMap::new(),
            weight: 0,
            capacity,
            tick: 0,
        }
    }

    /// What is kept for `location`, and its weight.
    fn get(&mut self, location: u64) -> Option<(V, usize)> {
        self.tick += 1;
        let (value, weight, used) = self.by_location.get_mut(&location)?;
        self.by_use.remove(used);
        *used = self.tick;
        self.by_use.insert(self.tick, location);
        Some((value.clone(), *weight))
    }

    /// Forgets what is kept for `location`; returns whether something was.
    fn remove(&mut self, location: u64) -> bool {
        let Some((_, weight, used)) = self.by_location.remove(&location) else {
            return false;
        };
        self.by_use.remove(&used);
        self.weight -= weight;
        true
    }

    fn insert(&mut self, location: u64, value: V, weight: usize) {
        self.remove(location);
        self.tick += 1;
        self.by_location
            .insert(location, (value, weight, self.tick));
        self.by_use.insert(self.tick, location);
        self.weight += weight;
        while self.weight > self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            if let Some((_, weight, _)) = self.by_location.remove(&oldest) {
                self.weight -= weight;
            }
        }
    }
}

impl<P> Stored<P> {
    fn placed(&self) -> Placed {
        Placed {
            location: self.location,
            bytes: self.bytes,
            check: self.check,
        }
    }

    /// This subtree kept by `backing`'s store too, its record copied as it is (see
    /// [`SubtreeStore::record`]).
    fn copy_to(&self, backing: &Arc<Backing<P>>) -> Result<Stored<P>, StoreError> {
        let placed = backing
            .store
            .put_record(&self.backing.store.record(self.placed()))?;
        Ok(Stored {
            hash: self.hash,
            len: self.len,
            location: placed.location,
            bytes: placed.bytes,
            check: placed.check,
            backing: Arc::clone(backing),
        })
    }
}

impl<P: Clone> Stored<P> {
    /// What `f` makes of the entry under `key` in this subtree (at `depth`), if it holds one:
    /// found in the subtree if it was read back recently and is still kept, else asked of the
    /// store, which reads its record, checks it and makes that entry alone. A read keeps
    /// nothing: most subtrees a read reaches, an absent key's or a listing's, are not read
    /// again before many others, and a rebuilt subtree kept for each would cost more than
    /// the read (the kernel keeps the store's recent pages).
    fn find<R>(&self, depth: usize, key: &Digest, f: impl FnOnce(&Digest, &P) -> R) -> Option<R> {
        if let Some(node) = self.kept() {
            return find_in(&node, depth, key, f);
        }
        let (_, value_hash, payload) = self.backing.store.find(self.placed(), key)?;
        Some(f(&value_hash, &payload))
    }

    /// The subtree, if it was read back recently and is still kept, checked against what
    /// this node says it holds.
    fn kept(&self) -> Option<Node<P>> {
        let (node, len) = self.backing.opened().get(self.location)?;
        // What is kept for a location is what was put there; a group's record names a
        // location beside the hash, and a damaged one may name another subtree's.
        if len != self.len || node.hash() != self.hash {
            self.backing.store.fail(self.location);
        }
        Some(node)
    }

    /// The subtree, read back (or found among those read recently) and checked.
    fn open(&self, depth: usize) -> Node<P> {
        self.open_keeping(depth, true)
    }

    /// [`Self::open`], keeping what was read back among the subtrees read back only if
    /// `keep` (an update writes the subtree back changed, and keeps that instead).
    fn open_keeping(&self, depth: usize, keep: bool) -> Node<P> {
        if let Some(node) = self.kept() {
            return node;
        }
        let entries = self.backing.store.load(self.placed());
        let sorted = entries.windows(2).all(|w| matches!(w, [a, b] if a.0 < b.0));
        let node = build(depth, &entries);
        if !sorted || entries.len() != self.len || node.hash() != self.hash {
            self.backing.store.fail(self.location);
        }
        if keep {
            self.backing
                .opened()
                .insert(self.location, node.clone(), self.len);
        }
        node
    }
}

impl<P: Clone> Node<P> {
    fn hash(&self) -> Digest {
        match self {
            Node::Empty => EMPTY,
            Node::Leaf(l) => leaf_hash(&l.key, &l.value_hash),
            Node::Internal(i) => i.hash,
            Node::Stored(s) => s.hash,
            Node::Group(g) => g.hash,
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

/// What an update or an eviction did to a version's accounting of where its entries are.
#[derive(Debug, Default, Clone)]
struct Tally {
    /// Entries now held in memory that were not.
    loaded: usize,
    /// Entries no longer held in memory.
    stored: usize,
    /// Bytes of the current store's subtrees this version no longer reads.
    dropped_bytes: u64,
    /// Entries of other stores' subtrees this version no longer reads.
    dropped_elsewhere: usize,
    /// Bytes of the subtrees written to the current store.
    placed_bytes: u64,
    /// What the entries of stored subtrees gained (negative: lost) as they were changed.
    stored_gain: isize,
    /// Why the store refused a subtree written back, the first time it did.
    refused: Option<StoreError>,
    /// Stored subtrees put in the store.
    parts_placed: usize,
    /// Stored subtrees (of any store) this version no longer has.
    parts_left: usize,
    /// Stored subtrees that went into groups.
    parts_grouped: usize,
    /// Stored subtrees of groups opened.
    parts_expanded: usize,
    /// Groups made.
    groups_placed: usize,
    /// Groups (of any store) this version no longer has.
    groups_left: usize,
}

impl Tally {
    /// `group` leaves this version: its subtrees stand for themselves again (and count as
    /// they leave in turn), and its record is no longer read.
    fn left_group<P>(&mut self, group: &Group<P>, current: Option<&Arc<Backing<P>>>) {
        self.groups_left += 1;
        self.parts_expanded += group.parts;
        if current.is_some_and(|c| Arc::ptr_eq(c, &group.backing)) {
            self.dropped_bytes += group.bytes;
        }
    }

    /// `stored` leaves this version for `copy`, its record copied to `current`'s store.
    fn copied<P>(&mut self, stored: &Stored<P>, copy: &Stored<P>, current: &Arc<Backing<P>>) {
        self.left(stored, Some(current));
        self.placed_bytes += copy.bytes;
        self.parts_placed += 1;
    }

    /// `stored` leaves this version: its entries are now in memory, or written again.
    fn left<P>(&mut self, stored: &Stored<P>, current: Option<&Arc<Backing<P>>>) {
        self.parts_left += 1;
        if current.is_some_and(|c| Arc::ptr_eq(c, &stored.backing)) {
            self.dropped_bytes += stored.bytes;
        } else {
            self.dropped_elsewhere += stored.len;
        }
    }
}

/// Where an update writes back the stored subtrees it changes: the tree's store, and the
/// depth its subtrees are stored at and the most entries one holds there (see
/// [`SparseMerkleTree::evict`]).
struct WriteBack<'a, P> {
    backing: &'a Arc<Backing<P>>,
    depth: usize,
    largest: usize,
    /// The depth stored subtrees are grouped at.
    group_depth: Option<usize>,
}

/// Applies sorted, distinct-key updates below `node` at `depth`; returns the new node and
/// how many entries it gained (negative: lost). A stored subtree the updates reach is read
/// back, changed and written back at once (`back`: to the tree's store), so that an update
/// leaves none of its subtrees in memory (a leaf stays only where its parent holds more than
/// the store's largest subtree), only
/// what the store keeps among the subtrees read back; one the update left as it was stays
/// as stored;
/// `tally` counts what moved.
fn update<P: Clone>(
    node: Node<P>,
    depth: usize,
    updates: &[Update<P>],
    back: Option<&WriteBack<'_, P>>,
    tally: &mut Tally,
) -> (Node<P>, isize) {
    if updates.is_empty() {
        return (node, 0);
    }
    match node {
        Node::Stored(stored) => {
            // A subtree read back holds no stored subtrees: its gain is counted once.
            let opened = stored.open_keeping(depth, back.is_none());
            let (node, gained) = update(opened, depth, updates, back, tally);
            if node.hash() == stored.hash {
                // Nothing changed (a value written again as it was): it stays as stored.
                return (Node::Stored(stored), 0);
            }
            tally.left(&stored, back.map(|b| b.backing));
            tally.stored_gain += gained;
            let node = match back {
                Some(back) => {
                    // Only earlier versions read its old place now. What replaces it is kept
                    // among the subtrees read back only where that was: most subtrees an
                    // update reaches, as a new key's, are not read again soon, and would push
                    // out those that are.
                    let kept = stored.backing.opened().remove(stored.location);
                    write_back(node, depth, back, kept, tally)
                }
                None => {
                    tally.loaded += count(&node).0;
                    node
                }
            };
            (node, gained)
        }
        Node::Group(group) => {
            let opened = group.open(depth);
            // Grouped again here as a whole, not below (a group made where groups are made
            // now, deeper once the tree grew, would leave its neighbours out).
            let inside = back.map(|back| WriteBack {
                group_depth: None,
                ..*back
            });
            let (node, gained) = update(opened, depth, updates, inside.as_ref(), tally);
            if node.hash() == group.hash {
                return (Node::Group(group), 0);
            }
            tally.left_group(&group, back.map(|b| b.backing));
            // Its subtrees the updates changed were written back: it is written back too, if
            // it is still made of stored subtrees only; as groups where groups are made now,
            // if the tree grew since it was made (else its subtrees, cut in two each time
            // the tree doubles, would soon be too many for one group). The subtrees an
            // earlier store holds are copied to the current one first, as they are kept, so
            // that a group changed while its store's parts move over stays a group.
            let node = match back {
                Some(back) => {
                    let node = if Arc::ptr_eq(&group.backing, back.backing) {
                        node
                    } else {
                        copy_stored_to(node, back.backing, tally)
                    };
                    let at = back.group_depth.filter(|at| *at > depth).unwrap_or(depth);
                    regroup(node, depth, at, back.backing, tally)
                }
                None => node,
            };
            (node, gained)
        }
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
            let placed = tally.parts_placed;
            let (left, gained_left) = update(left, depth + 1, lu, back, tally);
            let (right, gained_right) = update(right, depth + 1, ru, back, tally);
            let node = match (back, Node::join(left, right)) {
                // Where groups are made, stored subtrees an update wrote back and their
                // neighbours are grouped at once.
                (Some(back), node)
                    if Some(depth) == back.group_depth && tally.parts_placed > placed =>
                {
                    group::make(node, back.backing, tally)
                }
                (_, node) => node,
            };
            (node, gained_left + gained_right)
        }
    }
}

/// `node` with the stored subtrees below it that another store holds copied to `backing`'s
/// store as they are kept ([`Stored::copy_to`]); one the store refuses stays where it is
/// (`tally` keeps the first refusal).
fn copy_stored_to<P: Clone>(
    node: Node<P>,
    backing: &Arc<Backing<P>>,
    tally: &mut Tally,
) -> Node<P> {
    match node {
        Node::Stored(stored) if !Arc::ptr_eq(&stored.backing, backing) => {
            match stored.copy_to(backing) {
                Ok(copied) => {
                    tally.copied(&stored, &copied, backing);
                    Node::Stored(Arc::new(copied))
                }
                Err(e) => {
                    tally.refused.get_or_insert(e);
                    Node::Stored(stored)
                }
            }
        }
        Node::Internal(internal) => {
            let Internal { left, right, hash } = Arc::unwrap_or_clone(internal);
            let left = copy_stored_to(left, backing, tally);
            let right = copy_stored_to(right, backing, tally);
            // Stored subtrees keep their hashes, so this node's stays.
            Node::Internal(Arc::new(Internal { left, right, hash }))
        }
        other => other,
    }
}

/// `node` (at `depth`) with its nodes at depth `at` (`depth` or below), or above it where a
/// stored subtree sits higher, made groups where they can be (see [`group::make`]), and
/// where one cannot (an entry in memory below it, or a lone stored subtree), the nodes
/// below it; `tally` counts what moved.
fn regroup<P: Clone>(
    node: Node<P>,
    depth: usize,
    at: usize,
    backing: &Arc<Backing<P>>,
    tally: &mut Tally,
) -> Node<P> {
    let Node::Internal(internal) = node else {
        return node;
    };
    let internal = if depth >= at
        || matches!(internal.left, Node::Stored(_))
        || matches!(internal.right, Node::Stored(_))
    {
        match group::make(Node::Internal(internal), backing, tally) {
            Node::Internal(internal) => internal,
            grouped => return grouped,
        }
    } else {
        internal
    };
    let Internal { left, right, hash } = Arc::unwrap_or_clone(internal);
    let left = regroup(left, depth + 1, at, backing, tally);
    let right = regroup(right, depth + 1, at, backing, tally);
    // Groups keep their hashes, so this node's stays.
    Node::Internal(Arc::new(Internal { left, right, hash }))
}

/// Puts the subtrees of `node` (at `depth`) at the store's depth into the store, and
/// returns the node that stands for them; what the store refuses, and leaves, stay in
/// memory, and `tally` counts them as loaded. The subtrees put are kept among those read
/// back if `keep`.
fn write_back<P: Clone>(
    node: Node<P>,
    depth: usize,
    back: &WriteBack<'_, P>,
    keep: bool,
    tally: &mut Tally,
) -> Node<P> {
    let Node::Internal(internal) = &node else {
        tally.loaded += count(&node).0;
        return node;
    };
    // Counted only up to `largest`, as evictions count.
    let in_memory = match count_within(&node, back.largest) {
        Some(0) => return node,
        Some(n) if internal.stored_whole_at(depth, back.depth) => n,
        _ => {
            let Internal { left, right, hash } = Arc::unwrap_or_clone(Arc::clone(internal));
            let left = write_back(left, depth + 1, back, keep, tally);
            let right = write_back(right, depth + 1, back, keep, tally);
            // Stored subtrees keep their hashes, so this node's stays.
            let node = Node::Internal(Arc::new(Internal { left, right, hash }));
            if Some(depth) == back.group_depth {
                return group::make(node, back.backing, tally);
            }
            return node;
        }
    };
    match put_subtree(&node, internal.hash, depth, back.backing, tally) {
        Ok((stored, _)) => {
            if keep {
                back.backing
                    .opened()
                    .insert(stored.location, node.clone(), stored.len);
            }
            Node::Stored(stored)
        }
        Err(e) => {
            tally.loaded += in_memory;
            tally.refused.get_or_insert(e);
            node
        }
    }
}

/// Puts the entries below `node` (at `depth`, whose hash is `hash`) into `backing`'s store:
/// what stands for them then, and how many of them were in memory. `tally` counts
/// the stored subtrees inside it that this version no longer reads, and the bytes put; on a
/// refusal it is left as it was.
fn put_subtree<P: Clone>(
    node: &Node<P>,
    hash: Digest,
    depth: usize,
    backing: &Arc<Backing<P>>,
    tally: &mut Tally,
) -> Result<(Arc<Stored<P>>, usize), StoreError> {
    let mut entries = Vec::new();
    let mut nested = Tally::default();
    collect(node, depth, &mut entries, Some(backing), &mut nested);
    let placed = backing.store.put(&entries)?;
    tally.dropped_bytes += nested.dropped_bytes;
    tally.dropped_elsewhere += nested.dropped_elsewhere;
    tally.parts_left += nested.parts_left;
    tally.parts_expanded += nested.parts_expanded;
    tally.groups_left += nested.groups_left;
    tally.placed_bytes += placed.bytes;
    tally.parts_placed += 1;
    let stored = Arc::new(Stored {
        hash,
        len: entries.len(),
        location: placed.location,
        bytes: placed.bytes,
        check: placed.check,
        backing: Arc::clone(backing),
    });
    Ok((stored, entries.len() - nested.loaded))
}

/// A sparse Merkle tree held in memory, keeping a payload `P` beside each entry (`()` when
/// only the commitment matters).
///
/// Cloning is O(1): versions share every node neither has changed since, so keeping the
/// trees of recent heights costs only the paths each block touched.
///
/// Given a store ([`SparseMerkleTree::with_store`]), it can move subtrees that have not
/// changed for a while out of memory ([`SparseMerkleTree::evict`]); they read back on
/// demand, so every method answers as before.
#[derive(Debug, Clone)]
pub struct SparseMerkleTree<P = ()> {
    root: Node<P>,
    len: usize,
    /// Entries whose leaves this version holds in memory.
    resident: usize,
    /// Entries of this version in subtrees that stores other than the current one hold.
    elsewhere: usize,
    /// Bytes of this version's subtrees in the current store.
    stored_bytes: u64,
    /// This version's stored subtrees outside groups, in any store.
    stored_subtrees: usize,
    /// This version's groups of stored subtrees, in any store.
    stored_groups: usize,
    /// Why the store refused a subtree an update wrote back, until taken.
    refused_write_back: Option<StoreError>,
    backing: Option<Arc<Backing<P>>>,
    /// How many entries the tree is expected to hold (see [`Self::expect_len`]).
    expected_len: usize,
}

impl<P> Default for SparseMerkleTree<P> {
    fn default() -> Self {
        SparseMerkleTree {
            root: Node::Empty,
            len: 0,
            resident: 0,
            elsewhere: 0,
            stored_bytes: 0,
            stored_subtrees: 0,
            stored_groups: 0,
            refused_write_back: None,
            backing: None,
            expected_len: 0,
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

/// What one call of [`SparseMerkleTree::evict`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// Subtrees written to the store.
    pub subtrees: usize,
    /// Entries that left memory with them.
    pub entries: usize,
    /// Entries of subtrees that an earlier store held, moved to the current one.
    pub moved: usize,
    /// Groups made of stored subtrees (see [`SparseMerkleTree::evict`]).
    pub groups: usize,
    /// Where the next call should start, as a key: where this one stopped, or all zeros
    /// once it reached the end of the key space.
    pub next: Digest,
    /// Why the store refused a subtree, if it did: the walk stopped there, and the next
    /// call starts past it.
    pub refused: Option<StoreError>,
}

/// Which subtrees [`SparseMerkleTree::evict`] may move out of memory.
#[derive(Debug)]
pub enum Evictable<'a, P> {
    /// Every one.
    All,
    /// Those this version shares with an older one: nothing in them changed since.
    UnchangedSince(&'a SparseMerkleTree<P>),
    /// None: only subtrees an earlier store holds move to the current one (the walk then
    /// goes below the eviction depth to find them).
    None,
}

/// How a subtree of the tree being evicted from compares with the same place in an older
/// version.
#[derive(Clone, Copy)]
enum Older<'a, P> {
    /// The same nodes: nothing below changed since.
    Same,
    /// The older version's node there.
    Node(&'a Node<P>),
    /// The older version has no internal node there.
    Other,
}

/// One call of [`SparseMerkleTree::evict`].
struct Evictor<'a, P> {
    backing: &'a Arc<Backing<P>>,
    /// The depth subtrees are stored at (deeper where one holds more than `largest`).
    depth: usize,
    largest: usize,
    /// The depth at which stored subtrees are grouped ([`group::GROUP_LEVELS`] above
    /// `depth`; none in a tree that small).
    group_depth: Option<usize>,
    /// Whether subtrees may be evicted at all (else only moved).
    evicting: bool,
    start: Digest,
    max: usize,
    /// Nodes it may still visit.
    looks: usize,
    done: Eviction,
    tally: Tally,
    stopped: bool,
}

/// The first key after those below a node at `depth` whose path is `prefix` (its first
/// `depth` bits, the rest zeros); `None` if they run to the end of the key space.
fn range_end(prefix: &Digest, depth: usize) -> Option<Digest> {
    let mut end = *prefix;
    for at in (0..depth.min(256)).rev() {
        let (byte, mask) = (at / 8, 1u8 << (7 - at % 8));
        let b = end.get_mut(byte)?;
        if *b & mask == 0 {
            *b |= mask;
            return Some(end);
        }
        *b &= !mask;
    }
    None
}

/// The paths of a node's children.
fn child_prefixes(prefix: &Digest, depth: usize) -> (Digest, Digest) {
    let mut right = *prefix;
    if let Some(b) = right.get_mut(depth / 8) {
        *b |= 1u8 << (7 - depth % 8);
    }
    (*prefix, right)
}

impl<P: Clone> Evictor<'_, P> {
    fn is_current(&self, stored: &Stored<P>) -> bool {
        Arc::ptr_eq(&stored.backing, self.backing)
    }

    /// Stops the walk at the node whose key range starts at `begin`.
    fn stop(&mut self, begin: &Digest) {
        self.stopped = true;
        self.done.next = (*begin).max(self.start);
    }

    fn walk(
        &mut self,
        node: &Node<P>,
        older: Older<'_, P>,
        depth: usize,
        prefix: &Digest,
    ) -> Node<P> {
        let end = range_end(prefix, depth);
        if self.stopped || end.is_some_and(|end| end <= self.start) {
            return node.clone();
        }
        if self.looks == 0 || self.done.entries + self.done.moved >= self.max {
            self.stop(prefix);
            return node.clone();
        }
        self.looks -= 1;
        let internal = match node {
            Node::Internal(internal) => internal,
            Node::Stored(stored) if !self.is_current(stored) => {
                return self.move_stored(node, stored, end);
            }
            Node::Group(group) if !Arc::ptr_eq(&group.backing, self.backing) => {
                return self.move_group(node, group, depth, end);
            }
            Node::Stored(_) | Node::Group(_) | Node::Empty | Node::Leaf(_) => {
                return node.clone();
            }
        };
        let same = match older {
            Older::Same => true,
            Older::Node(Node::Internal(o)) => Arc::ptr_eq(o, internal),
            Older::Node(_) | Older::Other => false,
        };
        if self.evicting && same && internal.stored_whole_at(depth, self.depth) {
            // Counted only up to `largest`, so that a crowded subtree (keys that share a long
            // prefix) costs no more to look at on each level it is split on.
            match count_within(node, self.largest) {
                // Nothing to free: its parts are in the current store already, or move there
                // as they are kept (below).
                Some(0) if !self.holds_elsewhere(node) => return node.clone(),
                Some(0) => {}
                Some(_) => return self.store(node, internal.hash, depth, end),
                // Too large to keep as one: its children are stored instead.
                None => {}
            }
        } else if self.evicting && depth >= self.depth {
            return node.clone();
        }
        let (older_left, older_right) = match older {
            _ if same => (Older::Same, Older::Same),
            Older::Node(Node::Internal(o)) => (Older::Node(&o.left), Older::Node(&o.right)),
            _ => (Older::Other, Older::Other),
        };
        let (left_prefix, right_prefix) = child_prefixes(prefix, depth);
        let placed = self.tally.parts_placed;
        let left = self.walk(&internal.left, older_left, depth + 1, &left_prefix);
        let right = self.walk(&internal.right, older_right, depth + 1, &right_prefix);
        let walked = if same_node(&left, &internal.left) && same_node(&right, &internal.right) {
            node.clone()
        } else {
            // Stored subtrees keep their hashes, so this node's stays.
            Node::Internal(Arc::new(Internal {
                left,
                right,
                hash: internal.hash,
            }))
        };
        // Grouped where the walk stored or moved subtrees below.
        if Some(depth) == self.group_depth && self.tally.parts_placed > placed {
            let groups = self.tally.groups_placed;
            let walked = group::make(walked, self.backing, &mut self.tally);
            self.done.groups += self.tally.groups_placed - groups;
            return walked;
        }
        walked
    }

    /// Copies a subtree another store holds to the current one as it is kept there (not read
    /// back, rebuilt or checked: its next read, from the current store, checks it): the node
    /// that stands for it then, or `node` if the store refused it (the walk stops past it).
    fn move_stored(&mut self, node: &Node<P>, stored: &Stored<P>, end: Option<Digest>) -> Node<P> {
        match stored.copy_to(self.backing) {
            Ok(moved) => {
                self.tally.copied(stored, &moved, self.backing);
                self.done.moved += stored.len;
                Node::Stored(Arc::new(moved))
            }
            Err(e) => self.refused(e, end, node),
        }
    }

    /// Copies a group another store holds to the current one: its subtrees as they are kept
    /// there, and its record with their new places (see [`Self::move_stored`]); or `node`
    /// if the store refused them (the walk stops past it).
    fn move_group(
        &mut self,
        node: &Node<P>,
        group: &Group<P>,
        depth: usize,
        end: Option<Digest>,
    ) -> Node<P> {
        match group.copy_to(depth, self.backing) {
            Ok((moved, placed_bytes)) => {
                self.tally.left_group(group, Some(self.backing));
                self.tally.parts_left += group.parts;
                self.tally.dropped_elsewhere += group.len;
                self.tally.parts_placed += group.parts;
                self.tally.parts_grouped += group.parts;
                self.tally.groups_placed += 1;
                self.tally.placed_bytes += placed_bytes;
                self.done.moved += group.len;
                self.done.groups += 1;
                Node::Group(Arc::new(moved))
            }
            Err(e) => self.refused(e, end, node),
        }
    }

    /// Stops the walk past a subtree the store refused, which stays as it was (`node`).
    fn refused(&mut self, e: StoreError, end: Option<Digest>, node: &Node<P>) -> Node<P> {
        self.done.refused = Some(e);
        self.stopped = true;
        self.done.next = end.unwrap_or(EMPTY);
        node.clone()
    }

    /// Whether another store holds a part of `node`.
    fn holds_elsewhere(&self, node: &Node<P>) -> bool {
        match node {
            Node::Stored(s) => !self.is_current(s),
            Node::Group(g) => !Arc::ptr_eq(&g.backing, self.backing),
            Node::Internal(i) => self.holds_elsewhere(&i.left) || self.holds_elsewhere(&i.right),
            Node::Empty | Node::Leaf(_) => false,
        }
    }

    /// Puts the entries below `node` into the current store: the node that stands for them
    /// then, or `node` if the store refused them (the walk stops past it).
    fn store(
        &mut self,
        node: &Node<P>,
        hash: Digest,
        depth: usize,
        end: Option<Digest>,
    ) -> Node<P> {
        let moved_before = self.tally.dropped_elsewhere;
        match put_subtree(node, hash, depth, self.backing, &mut self.tally) {
            Ok((stored, in_memory)) => {
                self.done.moved += self.tally.dropped_elsewhere - moved_before;
                if !matches!(node, Node::Stored(_)) {
                    self.done.subtrees += 1;
                    self.done.entries += in_memory;
                }
                self.tally.stored += in_memory;
                Node::Stored(stored)
            }
            Err(e) => self.refused(e, end, node),
        }
    }
}

/// The walk of [`SparseMerkleTree::prefetch_moves`]: [`Evictor::walk`]'s, when it only moves,
/// collecting places instead of moving.
struct Hinter<'a, P> {
    current: &'a Arc<Backing<P>>,
    start: Digest,
    max: usize,
    /// Nodes it may still visit.
    looks: usize,
    /// Entries of the subtrees and groups hinted so far.
    entries: usize,
    open_groups: bool,
    /// The places hinted, by the store that holds them.
    hints: Vec<(Arc<Backing<P>>, Vec<Placed>)>,
    /// Where it stopped, once it has.
    next: Option<Digest>,
}

impl<P: Clone> Hinter<'_, P> {
    fn walk(&mut self, node: &Node<P>, depth: usize, prefix: &Digest) {
        let end = range_end(prefix, depth);
        if self.next.is_some() || end.is_some_and(|end| end <= self.start) {
            return;
        }
        if self.looks == 0 || self.entries >= self.max {
            self.next = Some((*prefix).max(self.start));
            return;
        }
        self.looks -= 1;
        match node {
            Node::Internal(internal) => {
                let (left, right) = child_prefixes(prefix, depth);
                self.walk(&internal.left, depth + 1, &left);
                self.walk(&internal.right, depth + 1, &right);
            }
            Node::Stored(stored) if !Arc::ptr_eq(&stored.backing, self.current) => {
                self.entries += stored.len;
                self.hint(&stored.backing, [stored.placed()]);
            }
            Node::Group(group) if !Arc::ptr_eq(&group.backing, self.current) => {
                self.entries += group.len;
                let places = group.places_to_read(depth, self.open_groups);
                self.hint(&group.backing, places);
            }
            Node::Stored(_) | Node::Group(_) | Node::Empty | Node::Leaf(_) => {}
        }
    }

    fn hint(&mut self, backing: &Arc<Backing<P>>, places: impl IntoIterator<Item = Placed>) {
        match self.hints.iter_mut().find(|(b, _)| Arc::ptr_eq(b, backing)) {
            Some((_, hinted)) => hinted.extend(places),
            None => self
                .hints
                .push((Arc::clone(backing), places.into_iter().collect())),
        }
    }
}

/// Whether two nodes are the same allocation.
fn same_node<P>(a: &Node<P>, b: &Node<P>) -> bool {
    match (a, b) {
        (Node::Empty, Node::Empty) => true,
        (Node::Leaf(a), Node::Leaf(b)) => Arc::ptr_eq(a, b),
        (Node::Internal(a), Node::Internal(b)) => Arc::ptr_eq(a, b),
        (Node::Stored(a), Node::Stored(b)) => Arc::ptr_eq(a, b),
        (Node::Group(a), Node::Group(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// How many entries below `node` are in memory, if it has at most `largest` entries in all
/// (`None` otherwise); stops counting past `largest`.
fn count_within<P>(node: &Node<P>, largest: usize) -> Option<usize> {
    fn go<P>(node: &Node<P>, in_memory: &mut usize, total: &mut usize, largest: usize) -> bool {
        match node {
            Node::Empty => true,
            Node::Leaf(_) => {
                *in_memory += 1;
                *total += 1;
                *total <= largest
            }
            Node::Internal(i) => {
                go(&i.left, in_memory, total, largest) && go(&i.right, in_memory, total, largest)
            }
            Node::Stored(s) => {
                *total += s.len;
                *total <= largest
            }
            Node::Group(g) => {
                *total += g.len;
                *total <= largest
            }
        }
    }
    let (mut in_memory, mut total) = (0, 0);
    go(node, &mut in_memory, &mut total, largest).then_some(in_memory)
}

/// How many entries below `node` are in memory, and how many there are.
fn count<P>(node: &Node<P>) -> (usize, usize) {
    match node {
        Node::Empty => (0, 0),
        Node::Leaf(_) => (1, 1),
        Node::Internal(i) => {
            let (a, b) = count(&i.left);
            let (c, d) = count(&i.right);
            (a + c, b + d)
        }
        Node::Stored(s) => (0, s.len),
        Node::Group(g) => (0, g.len),
    }
}

/// Appends the entries below `node` (at `depth`) to `out`, in key order, reading stored
/// subtrees back; `tally` counts those as loaded and as left (`current`: the tree's store).
fn collect<P: Clone>(
    node: &Node<P>,
    depth: usize,
    out: &mut Vec<Entry<P>>,
    current: Option<&Arc<Backing<P>>>,
    tally: &mut Tally,
) {
    match node {
        Node::Empty => {}
        Node::Leaf(l) => out.push((l.key, l.value_hash, l.payload.clone())),
        Node::Internal(i) => {
            collect(&i.left, depth + 1, out, current, tally);
            collect(&i.right, depth + 1, out, current, tally);
        }
        Node::Stored(s) => {
            tally.loaded += s.len;
            tally.left(s, current);
            // Read to be written elsewhere: not kept among the subtrees read back.
            collect(&s.open_keeping(depth, false), depth, out, current, tally);
        }
        Node::Group(g) => {
            tally.left_group(g, current);
            collect(&g.open(depth), depth, out, current, tally);
        }
    }
}

/// The depth stored subtrees are grouped at when they are stored at `depth`
/// ([`group::GROUP_LEVELS`] above it; none in a tree that small).
fn group_depth(depth: usize) -> Option<usize> {
    depth.checked_sub(group::GROUP_LEVELS).filter(|d| *d > 0)
}

/// The deepest level subtrees are stored at by [`SparseMerkleTree::eviction_depth`].
pub const MAX_EVICTION_DEPTH: usize = 63;

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
            resident: entries.len(),
            elsewhere: 0,
            stored_bytes: 0,
            stored_subtrees: 0,
            stored_groups: 0,
            refused_write_back: None,
            root: build(0, &entries),
            backing: None,
            expected_len: 0,
        }
    }

    /// This tree, moving subtrees of about `per_subtree` entries to `store` from now on
    /// (see [`Self::evict`]). A stored subtree an update changes is written back to the
    /// store at once, so that updates leave none of its subtrees of two or more entries in
    /// memory (a lone entry goes with its sibling subtree, stored whole above the store's
    /// depth if small enough). Subtrees read back whole
    /// from it (by a proof or an update), and those written back in place of one kept, are
    /// kept, checked, until more than `opened_entries` entries are (the least recently used
    /// are dropped first), so that proving an entry again is not reading it from the store
    /// again, and reads find them there; they are shared by
    /// every version of the tree. Groups of stored subtrees (whose places and hashes the
    /// store keeps too) are kept the same way, as places, for as many subtrees as
    /// `opened_entries` holds subtrees' entries.
    ///
    /// Subtrees an earlier store holds stay there, and are read from there, until
    /// [`Self::evict`] moves them to this one ([`Self::elsewhere`] counts their entries);
    /// once no version of the tree holds any, the earlier store is dropped. They move as
    /// their records are kept ([`SubtreeStore::record`]), so every store a tree is given
    /// must keep records in the same format.
    pub fn with_store(
        mut self,
        store: Arc<dyn SubtreeStore<P>>,
        per_subtree: usize,
        opened_entries: usize,
    ) -> SparseMerkleTree<P> {
        self.backing = Some(Arc::new(Backing {
            store,
            per_subtree: per_subtree.max(1),
            opened: Mutex::new(Recent::new(opened_entries)),
            groups: Mutex::new(Recent::new(opened_entries / per_subtree.max(1))),
        }));
        self.elsewhere = self.len - self.resident;
        self.stored_bytes = 0;
        self
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

    /// How many of the entries this version holds in memory rather than in stored subtrees
    /// (subtrees read back or written back are not counted: they are shared by the
    /// versions, and bounded by `with_store`).
    pub fn resident(&self) -> usize {
        self.resident
    }

    /// How many of this version's entries are in subtrees that stores before the current
    /// one hold.
    pub fn elsewhere(&self) -> usize {
        self.elsewhere
    }

    /// The bytes this version's subtrees take in the current store: what of it is still
    /// read, the rest being copies only older versions, or none, read.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    /// How many subtrees of this version stores hold, outside groups (each costs its node,
    /// and its share of the nodes above, in memory).
    pub fn stored_subtrees(&self) -> usize {
        self.stored_subtrees
    }

    /// How many groups of stored subtrees this version has (each one node in memory for
    /// all its subtrees).
    pub fn stored_groups(&self) -> usize {
        self.stored_groups
    }

    /// Stores subtrees as deep as a tree of at least `n` entries would (see
    /// [`Self::eviction_depth`]): for a tree built a part at a time and moved out of memory
    /// as it grows, so that the parts stored first are no larger than the last.
    pub fn expect_len(&mut self, n: usize) {
        self.expected_len = n;
    }

    /// The level at which subtrees hold about `per_subtree` entries (between that and twice
    /// as many, on average) in a tree of this many entries, or of as many as it is expected
    /// to hold ([`Self::expect_len`]) if more.
    pub fn eviction_depth(&self, per_subtree: usize) -> usize {
        let subtrees = self.len.max(self.expected_len) / per_subtree.max(1);
        (subtrees.max(1).ilog2() as usize).min(MAX_EVICTION_DEPTH)
    }

    /// Moves out of memory the subtrees of about the store's `per_subtree` entries (at
    /// [`Self::eviction_depth`]; one holding more than sixteen times that is split into its
    /// children, so that no subtree a read or an update has to read back is large, however
    /// keys crowd) that are `evictable`, and moves the subtrees an earlier store holds to
    /// the current one, walking the key space from the key `start` until `max` entries have
    /// moved.
    ///
    /// A subtree or group an earlier store holds moves whole, as its record is kept (see
    /// [`Self::with_store`]): so a call may move up to a group's entries past `max`.
    ///
    /// It visits at most `max / 2 + 128` nodes, so that a call costs about what it moves
    /// even when few subtrees qualify. Roots, proofs and answers do not change. Versions
    /// that shared a moved subtree keep it in memory until they are dropped. A store that
    /// refuses a subtree stops the call there (`Eviction::refused`), what moved before
    /// staying moved; the next call starts past it. Without a store, nothing moves.
    pub fn evict(&mut self, evictable: Evictable<'_, P>, start: &Digest, max: usize) -> Eviction {
        let mut done = Eviction {
            subtrees: 0,
            entries: 0,
            moved: 0,
            groups: 0,
            next: EMPTY,
            refused: None,
        };
        let Some(backing) = self.backing.clone() else {
            return done;
        };
        let (evicting, older) = match evictable {
            Evictable::All => (true, Older::Same),
            Evictable::UnchangedSince(o) => (true, Older::Node(&o.root)),
            Evictable::None => (false, Older::Other),
        };
        let (depth, largest) = self.store_shape(&backing);
        let mut evictor = Evictor {
            backing: &backing,
            depth,
            largest,
            group_depth: group_depth(depth),
            evicting,
            start: *start,
            max,
            looks: max / 2 + 128,
            done,
            tally: Tally::default(),
            stopped: false,
        };
        self.root = evictor.walk(&self.root, older, 0, &EMPTY);
        self.settle(evictor.tally, 0);
        done = evictor.done;
        if !evictor.stopped {
            done.next = EMPTY;
        }
        done
    }

    /// Hints to the stores before the current one ([`SubtreeStore::prefetch`]) the records
    /// that [`Self::evict`] with [`Evictable::None`] from `start` would read to move `max`
    /// entries, visiting as many nodes as it would: each subtree's record, and of a group its
    /// subtrees' records if its places were read recently or `open_groups` (reading the
    /// group's own record for them), else the group's record alone. Returns where such a
    /// call would stop, where the next hint starts (all zeros at the end of the key space).
    ///
    /// A move reads an earlier store's records one at a time, each waiting for the disk once
    /// the file is larger than what the system caches; hinted a move ahead, they are read
    /// together, while other work runs. Nothing the tree holds or answers changes.
    pub fn prefetch_moves(&self, start: &Digest, max: usize, open_groups: bool) -> Digest {
        let Some(current) = self.backing.as_ref() else {
            return EMPTY;
        };
        if self.elsewhere == 0 {
            return EMPTY;
        }
        let mut hinter = Hinter {
            current,
            start: *start,
            max,
            looks: max / 2 + 128,
            entries: 0,
            open_groups,
            hints: Vec::new(),
            next: None,
        };
        hinter.walk(&self.root, 0, &EMPTY);
        for (backing, places) in &hinter.hints {
            backing.store.prefetch(places);
        }
        hinter.next.unwrap_or(EMPTY)
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
        let mut tally = Tally::default();
        let back = self.backing.as_ref().map(|backing| {
            let (depth, largest) = self.store_shape(backing);
            WriteBack {
                backing,
                depth,
                largest,
                group_depth: group_depth(depth),
            }
        });
        let (root, gained) = update(root, 0, &deduped, back.as_ref(), &mut tally);
        self.root = root;
        self.len = self.len.saturating_add_signed(gained);
        self.settle(tally, gained);
    }

    /// The depth subtrees are stored at in `backing`, and the most entries one holds there
    /// (a larger one is split into its children).
    fn store_shape(&self, backing: &Backing<P>) -> (usize, usize) {
        (
            self.eviction_depth(backing.per_subtree),
            backing.per_subtree.saturating_mul(16),
        )
    }

    /// Brings this version's count of where its entries are up to date with what an update
    /// (that gained `gained` entries) or an eviction did.
    fn settle(&mut self, tally: Tally, gained: isize) {
        // Entries gained in memory, those of stored subtrees that stayed in memory, less
        // those that left it.
        self.resident = (self.resident + tally.loaded)
            .saturating_add_signed(gained - tally.stored_gain)
            .saturating_sub(tally.stored);
        self.elsewhere = self.elsewhere.saturating_sub(tally.dropped_elsewhere);
        self.stored_bytes =
            self.stored_bytes.saturating_sub(tally.dropped_bytes) + tally.placed_bytes;
        self.stored_subtrees = (self.stored_subtrees + tally.parts_placed + tally.parts_expanded)
            .saturating_sub(tally.parts_left + tally.parts_grouped);
        self.stored_groups =
            (self.stored_groups + tally.groups_placed).saturating_sub(tally.groups_left);
        if let Some(e) = tally.refused {
            self.refused_write_back.get_or_insert(e);
        }
    }

    /// Why the store refused a subtree an update wrote back (it stayed in memory), if it
    /// did since this was last asked.
    pub fn take_refused_write_back(&mut self) -> Option<StoreError> {
        self.refused_write_back.take()
    }

    /// What `f` makes of the leaf under `key`, if there is one.
    fn find<R>(&self, key: &Digest, f: impl FnOnce(&Digest, &P) -> R) -> Option<R> {
        find_in(&self.root, 0, key, f)
    }

    /// The value hash stored under `key`.
    pub fn get(&self, key: &Digest) -> Option<Digest> {
        self.find(key, |h, _| *h)
    }

    /// The payload kept under `key`.
    pub fn payload(&self, key: &Digest) -> Option<P> {
        self.find(key, |_, p| p.clone())
    }

    /// What `f` makes of the payload kept under `key`, without copying it.
    pub fn with_payload<R>(&self, key: &Digest, f: impl FnOnce(&P) -> R) -> Option<R> {
        self.find(key, |_, p| f(p))
    }

    /// A proof that `key` holds its current value, or that it is absent.
    pub fn prove(&self, key: &Digest) -> SmtProof {
        let mut siblings = Vec::new();
        let leaf = prove_in(&self.root, 0, key, &mut siblings);
        SmtProof { siblings, leaf }
    }
}

fn find_in<P: Clone, R>(
    mut node: &Node<P>,
    mut depth: usize,
    key: &Digest,
    f: impl FnOnce(&Digest, &P) -> R,
) -> Option<R> {
    loop {
        match node {
            Node::Empty => return None,
            Node::Leaf(l) => return (l.key == *key).then(|| f(&l.value_hash, &l.payload)),
            Node::Internal(i) => {
                node = if bit(key, depth) { &i.right } else { &i.left };
                depth += 1;
            }
            Node::Stored(s) => return s.find(depth, key, f),
            Node::Group(g) => {
                let (part, below) = g.part_for(depth, key)?;
                return find_in(&part, below, key, f);
            }
        }
    }
}

/// Pushes the siblings of `key`'s path below `node` (at `depth`) and returns the leaf where
/// it ends.
fn prove_in<P: Clone>(
    mut node: &Node<P>,
    mut depth: usize,
    key: &Digest,
    siblings: &mut Vec<Digest>,
) -> Option<(Digest, Digest)> {
    loop {
        match node {
            Node::Empty => return None,
            Node::Leaf(l) => return Some((l.key, l.value_hash)),
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
            Node::Stored(s) => return prove_in(&s.open(depth), depth, key, siblings),
            Node::Group(g) => {
                return prove_in(&g.open(depth), depth, key, siblings);
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
        assert_eq!(old.payload(&h(3)), Some(3));
        assert_eq!(t.payload(&h(3)), Some(999));
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
                Node::Stored(_) | Node::Group(_) => return None,
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

    /// A store in memory that counts its loads, and can be told to refuse puts or to give
    /// back something else than it was given.
    /// What a [`MemStore`] keeps at a location: a subtree's entries, or a group's bytes.
    type Kept = (Vec<Entry<u64>>, Vec<u8>);

    #[derive(Debug, Default)]
    struct MemStore {
        subtrees: Mutex<Vec<Kept>>,
        loads: std::sync::atomic::AtomicUsize,
        /// Reads of one entry ([`SubtreeStore::find`]).
        finds: std::sync::atomic::AtomicUsize,
        group_loads: std::sync::atomic::AtomicUsize,
        /// Records copied out as they are kept.
        records: std::sync::atomic::AtomicUsize,
        refuse: std::sync::atomic::AtomicBool,
        /// Refuses groups' records only (so subtrees stay outside groups).
        refuse_groups: std::sync::atomic::AtomicBool,
        /// Puts of any kind taken before it refuses, if set.
        puts_left: Mutex<Option<usize>>,
        corrupt: std::sync::atomic::AtomicBool,
        /// Gives back changed entries that pass the check: a store that is wrong, not
        /// damaged.
        lie: std::sync::atomic::AtomicBool,
        /// A byte of groups' records to change as they are read back, counted from the end.
        corrupt_group_at: std::sync::atomic::AtomicUsize,
        /// The locations of the records hinted ([`SubtreeStore::prefetch`]), in order.
        hinted: Mutex<Vec<u64>>,
        /// The locations of the records copied out or of groups read back, in order.
        read: Mutex<Vec<u64>>,
    }

    /// A record of what [`MemStore`] keeps at one location, as [`SubtreeStore::record`]
    /// gives it: a kind byte (1: a group's bytes), then the entries or the bytes.
    fn mem_record(entries: &[Entry<u64>], bytes: &[u8]) -> Vec<u8> {
        let mut record = vec![u8::from(entries.is_empty())];
        for (key, value_hash, payload) in entries {
            record.extend_from_slice(key);
            record.extend_from_slice(value_hash);
            record.extend_from_slice(&payload.to_be_bytes());
        }
        record.extend_from_slice(bytes);
        record
    }

    /// [`MemStore`]'s checksum of a record.
    fn mem_check(record: &[u8]) -> u64 {
        use std::hash::Hasher as _;
        let mut hasher = std::hash::DefaultHasher::new();
        hasher.write(record);
        hasher.finish()
    }

    impl MemStore {
        /// Where `kept` went, and its checksum.
        fn keep(&self, kept: Kept, bytes: u64) -> Placed {
            let check = mem_check(&mem_record(&kept.0, &kept.1));
            let mut subtrees = self.subtrees.lock().unwrap();
            subtrees.push(kept);
            Placed {
                location: subtrees.len() as u64 - 1,
                bytes,
                check,
            }
        }

        /// The entries kept at `at`, as a store on disk reads them back: damaged if told to
        /// be (and then refused by the check), or changed and given back as if put so if
        /// told to lie.
        fn entries(&self, at: Placed) -> Vec<Entry<u64>> {
            let location = at.location;
            let mut entries = self.subtrees.lock().unwrap()[location as usize].0.clone();
            assert_eq!(
                at.bytes,
                72 * entries.len() as u64,
                "the size put at {location}"
            );
            let lie = self.lie.load(std::sync::atomic::Ordering::Relaxed);
            if lie || self.corrupt.load(std::sync::atomic::Ordering::Relaxed) {
                entries[0].2 += 1;
                entries[0].1 = h(entries[0].2);
            }
            if lie {
                // Changed entries given back as if they had been put with the check.
                return entries;
            }
            self.checked(at, (entries, Vec::new())).0
        }

        /// What is kept at `at`, checked as a store on disk checks what it reads back.
        fn checked(&self, at: Placed, (entries, bytes): Kept) -> Kept {
            if mem_check(&mem_record(&entries, &bytes)) != at.check {
                self.fail(at.location);
            }
            (entries, bytes)
        }
    }

    impl SubtreeStore<u64> for MemStore {
        fn put(&self, entries: &[Entry<u64>]) -> Result<Placed, StoreError> {
            self.take_put()?;
            Ok(self.keep((entries.to_vec(), Vec::new()), 72 * entries.len() as u64))
        }

        fn put_bytes(&self, bytes: &[u8]) -> Result<Placed, StoreError> {
            if self
                .refuse_groups
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                return Err(StoreError("no groups".into()));
            }
            self.take_put()?;
            Ok(self.keep((Vec::new(), bytes.to_vec()), bytes.len() as u64))
        }

        fn load_bytes(&self, at: Placed) -> Vec<u8> {
            let location = at.location;
            self.group_loads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.read.lock().unwrap().push(location);
            let mut bytes = self.subtrees.lock().unwrap()[location as usize].1.clone();
            assert_eq!(at.bytes, bytes.len() as u64, "the size put at {location}");
            let from_end = self
                .corrupt_group_at
                .load(std::sync::atomic::Ordering::Relaxed);
            if from_end > 0 {
                let at = bytes.len() - from_end;
                bytes[at] ^= 1;
            }
            self.checked(at, (Vec::new(), bytes)).1
        }

        fn load(&self, at: Placed) -> Vec<Entry<u64>> {
            self.loads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.entries(at)
        }

        fn find(&self, at: Placed, key: &Digest) -> Option<Entry<u64>> {
            self.finds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.entries(at).into_iter().find(|e| e.0 == *key)
        }

        fn record(&self, at: Placed) -> Vec<u8> {
            self.records
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.read.lock().unwrap().push(at.location);
            let (entries, bytes) = self.subtrees.lock().unwrap()[at.location as usize].clone();
            assert_eq!(at.bytes, (72 * entries.len() + bytes.len()) as u64);
            let (entries, bytes) = self.checked(at, (entries, bytes));
            mem_record(&entries, &bytes)
        }

        fn put_record(&self, record: &[u8]) -> Result<Placed, StoreError> {
            self.take_put()?;
            let (kind, rest) = record.split_first().expect("a record has its kind first");
            let kept: Kept = if *kind == 1 {
                (Vec::new(), rest.to_vec())
            } else {
                let entries = rest
                    .chunks(72)
                    .map(|c| {
                        let key: Digest = c[..32].try_into().unwrap();
                        let value_hash: Digest = c[32..64].try_into().unwrap();
                        (
                            key,
                            value_hash,
                            u64::from_be_bytes(c[64..].try_into().unwrap()),
                        )
                    })
                    .collect();
                (entries, Vec::new())
            };
            Ok(self.keep(kept, rest.len() as u64))
        }

        fn fail(&self, location: u64) -> ! {
            panic!("stored subtree {location} does not match its hash")
        }

        fn prefetch(&self, at: &[Placed]) {
            let mut hinted = self.hinted.lock().unwrap();
            for placed in at {
                let (entries, bytes) = &self.subtrees.lock().unwrap()[placed.location as usize];
                assert_eq!(placed.bytes, (72 * entries.len() + bytes.len()) as u64);
                hinted.push(placed.location);
            }
        }
    }

    impl MemStore {
        /// Takes one put, or refuses it (told to refuse, or out of the puts it may take).
        fn take_put(&self) -> Result<(), StoreError> {
            let mut left = self.puts_left.lock().unwrap();
            if self.refuse.load(std::sync::atomic::Ordering::Relaxed) || *left == Some(0) {
                return Err(StoreError("disk full".into()));
            }
            if let Some(n) = left.as_mut() {
                *n -= 1;
            }
            Ok(())
        }

        fn records(&self) -> usize {
            self.records.load(std::sync::atomic::Ordering::Relaxed)
        }

        fn loads(&self) -> usize {
            self.loads.load(std::sync::atomic::Ordering::Relaxed)
        }

        fn finds(&self) -> usize {
            self.finds.load(std::sync::atomic::Ordering::Relaxed)
        }

        /// Subtrees read back, whole or for one entry.
        fn reads(&self) -> usize {
            self.loads() + self.finds()
        }

        fn group_loads(&self) -> usize {
            self.group_loads.load(std::sync::atomic::Ordering::Relaxed)
        }

        /// Subtrees and groups put so far.
        fn puts(&self) -> (usize, usize) {
            let kept = self.subtrees.lock().unwrap();
            let groups = kept
                .iter()
                .filter(|(entries, _)| entries.is_empty())
                .count();
            (kept.len() - groups, groups)
        }
    }

    /// Asserts that `tree` counts its stored subtrees, groups and stored bytes as walking it
    /// does.
    fn assert_counted<P: Clone>(tree: &SparseMerkleTree<P>) {
        assert_eq!(
            (tree.stored_subtrees(), tree.stored_groups()),
            stored_subtrees(&tree.root)
        );
        assert_eq!(
            tree.stored_bytes(),
            current_bytes(&tree.root, tree.backing.as_ref())
        );
    }

    /// Bytes of the groups below `node` that `current` holds (their records only).
    fn group_bytes<P>(node: &Node<P>, current: Option<&Arc<Backing<P>>>) -> u64 {
        match node {
            Node::Group(g) if current.is_some_and(|c| Arc::ptr_eq(c, &g.backing)) => g.bytes,
            Node::Internal(i) => group_bytes(&i.left, current) + group_bytes(&i.right, current),
            _ => 0,
        }
    }

    /// Entries below `node` in subtrees a store other than `current` holds.
    fn elsewhere<P>(node: &Node<P>, current: Option<&Arc<Backing<P>>>) -> usize {
        match node {
            Node::Stored(s) if !current.is_some_and(|c| Arc::ptr_eq(c, &s.backing)) => s.len,
            Node::Group(g) if !current.is_some_and(|c| Arc::ptr_eq(c, &g.backing)) => g.len,
            Node::Internal(i) => elsewhere(&i.left, current) + elsewhere(&i.right, current),
            _ => 0,
        }
    }

    /// Bytes of the subtrees and groups below `node` that `current` holds.
    fn current_bytes<P: Clone>(node: &Node<P>, current: Option<&Arc<Backing<P>>>) -> u64 {
        fn go<P: Clone>(node: &Node<P>, depth: usize, current: Option<&Arc<Backing<P>>>) -> u64 {
            match node {
                Node::Stored(s) if current.is_some_and(|c| Arc::ptr_eq(c, &s.backing)) => s.bytes,
                Node::Group(g) if current.is_some_and(|c| Arc::ptr_eq(c, &g.backing)) => {
                    g.bytes + go(&g.open(depth), depth, current)
                }
                Node::Internal(i) => {
                    go(&i.left, depth + 1, current) + go(&i.right, depth + 1, current)
                }
                _ => 0,
            }
        }
        go(node, 0, current)
    }

    /// Stored subtrees below `node` outside groups, and groups, in any store.
    fn stored_subtrees<P>(node: &Node<P>) -> (usize, usize) {
        match node {
            Node::Empty | Node::Leaf(_) => (0, 0),
            Node::Stored(_) => (1, 0),
            Node::Group(_) => (0, 1),
            Node::Internal(i) => {
                let (a, b) = stored_subtrees(&i.left);
                let (c, d) = stored_subtrees(&i.right);
                (a + c, b + d)
            }
        }
    }

    /// Entries whose leaves `node` holds in memory.
    fn in_memory<P>(node: &Node<P>) -> usize {
        match node {
            Node::Empty | Node::Stored(_) | Node::Group(_) => 0,
            Node::Leaf(_) => 1,
            Node::Internal(i) => in_memory(&i.left) + in_memory(&i.right),
        }
    }

    /// `n` entries, with a store for subtrees of about `per_subtree` entries, and `opened`
    /// entries of them kept once read back.
    fn stored_tree(
        n: u64,
        per_subtree: usize,
        opened: usize,
    ) -> (SparseMerkleTree<u64>, Arc<MemStore>) {
        let store = Arc::new(MemStore::default());
        let tree =
            SparseMerkleTree::from_entries_with((0..n).map(|i| (h(i), h(i + 1000), i)).collect())
                .with_store(
                    Arc::clone(&store) as Arc<dyn SubtreeStore<u64>>,
                    per_subtree,
                    opened,
                );
        (tree, store)
    }

    #[test]
    fn lone_entries_are_stored_with_their_siblings() {
        // About five entries a subtree at the store's depth, so some of its subtrees there
        // are lone leaves: each goes with its sibling.
        let (mut tree, _store) = stored_tree(300, 4, 0);
        let whole = tree.clone();
        tree.evict(Evictable::All, &EMPTY, usize::MAX);
        assert_eq!((tree.resident(), in_memory(&tree.root)), (0, 0));
        for i in 0..300 {
            assert_eq!(tree.payload(&h(i)), whole.payload(&h(i)));
        }
        // New entries stay in memory only where they land outside stored subtrees, and the
        // next eviction takes them too.
        tree.apply_with((300..340).map(|i| (h(i), Some((h(i + 1000), i)))).collect());
        assert_eq!(tree.resident(), in_memory(&tree.root));
        assert!(tree.resident() <= 40);
        tree.evict(Evictable::All, &EMPTY, usize::MAX);
        assert_eq!((tree.resident(), in_memory(&tree.root)), (0, 0));
    }

    #[test]
    fn a_tree_with_stored_subtrees_answers_as_before() {
        let (mut tree, store) = stored_tree(500, 16, 0);
        let whole = tree.clone();
        assert_eq!(tree.eviction_depth(16), 4);
        let done = tree.evict(Evictable::All, &EMPTY, usize::MAX);
        assert_eq!((done.entries, done.next), (500, EMPTY));
        assert_eq!(done.subtrees, 16);
        // In two groups of eight (three levels above them).
        assert_eq!((done.groups, tree.stored_subtrees()), (2, 0));
        assert_eq!(
            tree.stored_bytes() - group_bytes(&tree.root, tree.backing.as_ref()),
            72 * 500
        );
        assert_counted(&tree);
        assert_eq!((tree.resident(), in_memory(&tree.root)), (0, 0));
        assert_eq!(tree.root(), whole.root());
        for i in 0..520 {
            let key = h(i);
            assert_eq!(tree.get(&key), whole.get(&key));
            assert_eq!(tree.payload(&key), whole.payload(&key));
            assert_eq!(tree.prove(&key), whole.prove(&key));
        }
        // Nothing is kept once read: every read went to the store, for one entry (a read)
        // or for the subtree (a proof).
        assert!(store.finds() >= 2 * 520);
        assert!(store.loads() >= 520);
        // An update reads back the subtrees it reaches, and only those.
        let loads = store.loads();
        tree.apply_with(vec![
            (h(7), Some((h(7007), 7007))),
            (h(600), Some((h(1600), 600))),
        ]);
        assert!(store.loads() - loads <= 2);
        assert_eq!(tree.resident(), in_memory(&tree.root));
        let mut rebuilt: Vec<_> = (0..500).map(|i| (h(i), h(i + 1000), i)).collect();
        rebuilt[7] = (h(7), h(7007), 7007);
        rebuilt.push((h(600), h(1600), 600));
        assert_eq!(
            tree.root(),
            SparseMerkleTree::from_entries_with(rebuilt).root()
        );
        assert_eq!(tree.payload(&h(7)), Some(7007));
        assert_eq!(whole.payload(&h(7)), Some(7));
    }

    #[test]
    fn a_stored_subtree_an_update_changes_is_written_back_at_once() {
        let (mut tree, store) = stored_tree(500, 16, 64);
        tree.evict(Evictable::All, &EMPTY, usize::MAX);
        assert_eq!(tree.resident(), 0);
        let (before, groups_before) = store.puts();
        // A new key and a changed value, in two stored subtrees (or one).
        tree.apply_with(vec![
            (h(7), Some((h(7007), 7007))),
            (h(600), Some((h(1600), 600))),
        ]);
        assert_eq!(tree.resident(), 0, "nothing of them stays in memory");
        assert_eq!(tree.resident(), in_memory(&tree.root));
        let (after, groups_after) = store.puts();
        let written = after - before;
        assert!(
            (1..=2).contains(&written),
            "{written} subtrees written back"
        );
        // With the groups they are in (one or two): updates leave groups whole.
        assert!((1..=written).contains(&(groups_after - groups_before)));
        assert_eq!(tree.stored_groups(), 2);
        assert_eq!(
            tree.stored_bytes() - group_bytes(&tree.root, tree.backing.as_ref()),
            72 * 501
        );
        let mut model: Vec<_> = (0..500).map(|i| (h(i), h(i + 1000))).collect();
        model[7] = (h(7), h(7007));
        model.push((h(600), h(1600)));
        assert_eq!(tree.root(), SparseMerkleTree::from_entries(model).root());
        // Written back in place of subtrees not read back lately, they are not kept among
        // the subtrees read back (a new key's subtree is seldom read again soon); a read of
        // one entry keeps nothing either: each asks the store for that entry.
        let (loads, finds) = (store.loads(), store.finds());
        assert_eq!(tree.payload(&h(600)), Some(600));
        assert_eq!(tree.payload(&h(600)), Some(600));
        assert_eq!((store.loads(), store.finds()), (loads, finds + 2));
        // Proved lately (a proof reads the subtree back whole, and keeps it), it is kept in
        // its new place once written back again: neither the update nor the read after it
        // asks the store.
        tree.prove(&h(600));
        let (loads, finds) = (store.loads(), store.finds());
        tree.apply_with(vec![(h(600), Some((h(2600), 2600)))]);
        assert_eq!(tree.payload(&h(600)), Some(2600));
        assert_eq!((store.loads(), store.finds()), (loads, finds));
        // A store that refuses keeps the changed subtree in memory instead.
        store
            .refuse
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(tree.take_refused_write_back(), None);
        tree.apply_with(vec![(h(9), None)]);
        assert_eq!(
            tree.take_refused_write_back(),
            Some(StoreError("disk full".into()))
        );
        assert_eq!(tree.take_refused_write_back(), None, "told once");
        assert!(tree.resident() > 0);
        assert_eq!(tree.resident(), in_memory(&tree.root));
        assert_eq!(tree.get(&h(9)), None);
        assert_eq!(tree.len(), 500);
    }

    #[test]
    fn only_subtrees_unchanged_since_the_older_version_move() {
        let (mut tree, _store) = stored_tree(400, 50, 0);
        let older = tree.clone();
        tree.apply_with(vec![(h(3), Some((h(3003), 3003)))]);
        // 50 entries a subtree: depth 3.
        let done = tree.evict(Evictable::UnchangedSince(&older), &EMPTY, usize::MAX);
        assert_eq!(done.subtrees, 7, "the eighth holds the changed entry");
        assert_eq!(tree.resident(), in_memory(&tree.root));
        assert_eq!(tree.resident(), 400 - done.entries);
        assert_eq!(tree.payload(&h(3)), Some(3003));
        // Once nothing changed since, it moves too.
        let now = tree.clone();
        let done = tree.evict(Evictable::UnchangedSince(&now), &EMPTY, usize::MAX);
        assert_eq!(done.subtrees, 1);
        assert_eq!(tree.resident(), 0);
        // Nothing is left in memory: a further call writes nothing again.
        let again = tree.evict(Evictable::All, &EMPTY, usize::MAX);
        assert_eq!((again.subtrees, again.entries, again.moved), (0, 0, 0));
    }

    #[test]
    fn eviction_resumes_where_it_stopped_and_wraps_around() {
        let (mut tree, _store) = stored_tree(1000, 31, 0);
        let root = tree.root();
        let mut start = EMPTY;
        let mut moved = 0;
        let mut calls = 0;
        loop {
            // About 31 entries a subtree: depth 5.
            let done = tree.evict(Evictable::All, &start, 100);
            assert!(done.entries >= 100 || done.next == EMPTY);
            assert!(done.entries < 100 + 1000 / 8, "stops soon after the bound");
            assert!(done.next == EMPTY || done.next > start, "goes forward");
            moved += done.entries;
            calls += 1;
            start = done.next;
            if start == EMPTY {
                break;
            }
        }
        assert_eq!(moved, 1000);
        assert!(calls >= 8);
        assert_eq!((tree.resident(), tree.root()), (0, root));
        // A start halfway through the key space moves about half.
        let (mut other, _s) = stored_tree(1000, 31, 0);
        let mut half = EMPTY;
        half[0] = 0x80;
        let done = other.evict(Evictable::All, &half, usize::MAX);
        assert!((400..600).contains(&done.entries), "{}", done.entries);
        assert_eq!(done.next, EMPTY);
    }

    #[test]
    fn a_call_looks_at_a_bounded_number_of_nodes() {
        let (mut tree, _store) = stored_tree(4000, 15, 0);
        // Every subtree changed since `older`: none qualifies, and the walk stops after
        // max / 2 + 128 nodes instead of going through all of them.
        let older = tree.clone();
        tree.apply_with((0..4000).map(|i| (h(i), Some((h(i + 7), i + 7)))).collect());
        let done = tree.evict(Evictable::UnchangedSince(&older), &EMPTY, 40);
        assert_eq!(done.entries, 0);
        assert!(done.next > EMPTY, "stopped before the end");
        let again = tree.evict(Evictable::UnchangedSince(&older), &done.next, 40);
        assert!(again.next > done.next, "and goes on from there");
    }

    #[test]
    fn crowded_keys_are_stored_in_small_subtrees() {
        // 600 keys sharing their first 16 bits, among 400 spread ones: at the eviction depth
        // their subtree holds 600 entries, more than 16 times the 25 asked for.
        let crowded = |i: u64| {
            let mut k = h(i);
            k[0] = 0xab;
            k[1] = 0xcd;
            k
        };
        let store = Arc::new(MemStore::default());
        let entries = (0..600)
            .map(|i| (crowded(i), h(i + 1000), i))
            .chain((600..1000).map(|i| (h(i), h(i + 1000), i)))
            .collect();
        let mut tree = SparseMerkleTree::from_entries_with(entries).with_store(
            Arc::clone(&store) as Arc<dyn SubtreeStore<u64>>,
            25,
            0,
        );
        let root = tree.root();
        let done = tree.evict(Evictable::All, &EMPTY, usize::MAX);
        // A few leaves left alone deep in the split are not worth a subtree of their own.
        assert!(done.entries > 990, "{}", done.entries);
        assert_eq!(tree.resident(), 1000 - done.entries);
        let largest = store
            .subtrees
            .lock()
            .unwrap()
            .iter()
            .map(|(entries, _)| entries.len())
            .max()
            .unwrap();
        assert!(
            largest <= 16 * 25,
            "a subtree of {largest} entries was stored"
        );
        assert_eq!(tree.root(), root);
        assert_eq!(tree.payload(&crowded(17)), Some(17));
    }

    #[test]
    fn subtrees_read_back_whole_are_kept_up_to_the_bound() {
        let (mut tree, store) = stored_tree(256, 32, 64);
        tree.evict(Evictable::All, &EMPTY, usize::MAX);
        let (loads, finds) = (store.loads(), store.finds());
        for _ in 0..10 {
            assert_eq!(tree.payload(&h(5)), Some(5));
        }
        assert_eq!(store.finds() - finds, 10, "a read keeps nothing");
        let finds = store.finds();
        for _ in 0..10 {
            tree.prove(&h(5));
            assert_eq!(tree.payload(&h(5)), Some(5));
        }
        assert_eq!(store.loads() - loads, 1, "proved once, then kept");
        assert_eq!(store.finds(), finds, "read from what is kept");
        // Proving every subtree in turn overflows the bound: the first is read again.
        for i in 0..256 {
            tree.prove(&h(i));
        }
        let loads = store.loads();
        tree.prove(&h(5));
        assert_eq!(store.loads() - loads, 1);
    }

    #[test]
    fn subtrees_move_to_a_new_store_and_the_old_one_is_let_go() {
        for evictable_while_moving in [false, true] {
            let (tree, first) = stored_tree(600, 37, 8);
            let mut tree = tree;
            let root = tree.root();
            // Sixteen subtrees at depth 4, outside groups (the store refuses them).
            first
                .refuse_groups
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tree.evict(Evictable::All, &EMPTY, usize::MAX);
            assert_eq!((tree.stored_subtrees(), tree.stored_groups()), (16, 0));
            let kept = tree.clone();
            let second = Arc::new(MemStore::default());
            let mut tree =
                tree.with_store(Arc::clone(&second) as Arc<dyn SubtreeStore<u64>>, 300, 8);
            assert_eq!(tree.elsewhere(), 600);
            // Still read from the first store until moved.
            assert_eq!(tree.payload(&h(11)), Some(11));
            // Moved at a shallower depth than they were stored at (as once a tree shrank):
            // found below it (by a walk that moves only, or one that evicts too and finds
            // nothing in memory there) and each moved as it is kept.
            let (reads, records) = (first.reads(), first.records());
            let mut start = EMPTY;
            loop {
                let evictable = if evictable_while_moving {
                    Evictable::All
                } else {
                    Evictable::None
                };
                let done = tree.evict(evictable, &start, 100);
                assert_eq!(done.entries, 0, "nothing was in memory");
                start = done.next;
                if start == EMPTY {
                    break;
                }
            }
            assert_eq!(first.reads(), reads, "nothing was read back to move");
            assert_eq!(first.records() - records, 16);
            assert_eq!((tree.elsewhere(), tree.resident()), (0, 0));
            assert_eq!((tree.stored_subtrees(), tree.stored_groups()), (16, 0));
            assert_eq!(tree.stored_bytes(), 72 * 600);
            assert_counted(&tree);
            assert_eq!(tree.root(), root);
            for i in 0..600 {
                assert_eq!(tree.payload(&h(i)), Some(i));
            }
            assert_eq!(first.reads(), reads, "the first store is not read any more");
            // The version kept from before still reads from the first store; once it is
            // dropped, nothing holds the first store but this test.
            assert_eq!(kept.payload(&h(11)), Some(11));
            assert!(Arc::strong_count(&first) > 1);
            drop(kept);
            assert_eq!(Arc::strong_count(&first), 1);
        }
    }

    /// Moves everything `tree` reads from other stores to its own, `max` entries a call;
    /// returns the calls.
    fn move_all(tree: &mut SparseMerkleTree<u64>, max: usize) -> usize {
        let (mut start, mut calls) = (EMPTY, 0);
        loop {
            let done = tree.evict(Evictable::None, &start, max);
            assert_eq!((done.entries, done.refused), (0, None));
            calls += 1;
            start = done.next;
            if start == EMPTY {
                return calls;
            }
        }
    }

    /// Stored subtrees below `node` in groups.
    fn grouped_parts<P>(node: &Node<P>) -> usize {
        match node {
            Node::Group(g) => g.parts,
            Node::Internal(i) => grouped_parts(&i.left) + grouped_parts(&i.right),
            Node::Empty | Node::Leaf(_) | Node::Stored(_) => 0,
        }
    }

    /// A tree of 4,000 entries in about 700 subtrees in `MemStore`, the first half of the
    /// key space outside groups (the store refused them), the rest in groups.
    fn half_grouped() -> (SparseMerkleTree<u64>, Arc<MemStore>) {
        let (mut tree, first) = stored_tree(4_000, 4, 64);
        first
            .refuse_groups
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut half = EMPTY;
        half[0] = 0x80;
        let done = tree.evict(Evictable::All, &EMPTY, 2_000);
        first
            .refuse_groups
            .store(false, std::sync::atomic::Ordering::Relaxed);
        tree.evict(Evictable::All, &done.next.max(half), usize::MAX);
        tree.evict(Evictable::All, &EMPTY, usize::MAX);
        assert!(tree.stored_subtrees() > 100, "{}", tree.stored_subtrees());
        assert!(tree.stored_groups() > 20, "{}", tree.stored_groups());
        assert_eq!(tree.resident(), 0);
        (tree, first)
    }

    #[test]
    fn a_move_reads_only_what_was_hinted_a_move_ahead() {
        let (tree, first) = half_grouped();
        let root = tree.root();
        let second = Arc::new(MemStore::default());
        let mut tree = tree.with_store(
            Arc::clone(&second) as Arc<dyn SubtreeStore<u64>>,
            4,
            100_000,
        );
        let hinted = |store: &MemStore| store.hinted.lock().unwrap().len();
        let reads = |store: &MemStore| store.read.lock().unwrap().len();
        // The locations hinted, or read, from the `from`th to the `to`th.
        let between = |log: &Mutex<Vec<u64>>, from: usize, to: usize| {
            let log = log.lock().unwrap();
            log[from..to.min(log.len())]
                .iter()
                .copied()
                .collect::<std::collections::HashSet<u64>>()
        };
        let since = |log: &Mutex<Vec<u64>>, from: usize| between(log, from, usize::MAX);
        // As a ledger calls them after each block's move: the subtrees of the next move
        // (reading its groups' records, hinted a call before), then the groups' records of
        // the one after. Returns where the first stops, and where each call's hints begin.
        let hint_ahead = |tree: &SparseMerkleTree<u64>, start: &Digest| {
            let parts_from = hinted(&first);
            let after = tree.prefetch_moves(start, 500, true);
            let groups_from = hinted(&first);
            if after != EMPTY {
                tree.prefetch_moves(&after, 500, false);
            }
            (after, parts_from, groups_from)
        };
        let (mut start, mut calls) = (EMPTY, 0);
        let (mut after, mut parts_from, mut groups_from) = hint_ahead(&tree, &start);
        // Where the hints of the two calls before a move begin.
        let mut window_from = parts_from;
        loop {
            let before = reads(&first);
            let done = tree.evict(Evictable::None, &start, 500);
            // The hints walked what the move did, and stopped where it stopped.
            assert_eq!(done.next, after, "move {calls}");
            // Every record the move copied was hinted by the two calls before it (a group
            // the move before made whole again near where it stopped, by the first).
            let read = since(&first.read, before);
            let hints = between(&first.hinted, window_from, groups_from);
            assert!(!read.is_empty(), "the move copied records");
            assert!(
                read.is_subset(&hints),
                "read, not hinted: {:?}",
                read.difference(&hints)
            );
            // And those hinted this move's subtrees, not the rest of the store.
            let parts = between(&first.hinted, parts_from, groups_from);
            assert!(
                parts.len() <= read.len() + 64,
                "{} hinted, {} read",
                parts.len(),
                read.len()
            );
            calls += 1;
            start = done.next;
            if start == EMPTY {
                break;
            }
            // The groups' records the next hints read were hinted by the call before.
            let (before, groups) = (reads(&first), since(&first.hinted, groups_from));
            window_from = groups_from;
            (after, parts_from, groups_from) = hint_ahead(&tree, &start);
            let read = since(&first.read, before);
            assert!(
                read.is_subset(&groups),
                "read, not hinted: {:?}",
                read.difference(&groups)
            );
        }
        assert!(calls > 4, "a few hundred entries a call");
        assert_eq!((tree.elsewhere(), tree.root()), (0, root));
        // Nothing of the new store was hinted, and a tree with nothing elsewhere hints nothing.
        assert!(second.hinted.lock().unwrap().is_empty());
        let hints = hinted(&first);
        assert_eq!(tree.prefetch_moves(&EMPTY, 500, true), EMPTY);
        assert_eq!(hinted(&first), hints);
    }

    #[test]
    fn subtrees_and_groups_move_as_they_are_kept_without_being_read_back() {
        let (mut tree, first) = half_grouped();
        tree.apply_with(vec![(h(7), Some((h(70), 70)))]);
        let proofs: Vec<SmtProof> = (0..4_000).step_by(13).map(|i| tree.prove(&h(i))).collect();
        let root = tree.root();
        let (subtrees, groups) = (tree.stored_subtrees(), tree.stored_groups());
        let parts = subtrees + grouped_parts(&tree.root);
        let second = Arc::new(MemStore::default());
        // Room to keep every group's places among those read back.
        let mut tree = tree.with_store(
            Arc::clone(&second) as Arc<dyn SubtreeStore<u64>>,
            4,
            100_000,
        );
        assert_eq!(tree.elsewhere(), 4_000);
        let (reads, group_loads, records) = (first.reads(), first.group_loads(), first.records());
        assert!(move_all(&mut tree, 500) > 4, "a few hundred entries a call");
        // Every subtree's record was copied once, none read back: of the groups, their
        // records were read (the places of their subtrees), not their subtrees.
        assert_eq!(first.reads(), reads);
        assert_eq!(first.records() - records, parts);
        assert!(first.group_loads() - group_loads <= groups);
        assert_eq!((tree.elsewhere(), tree.resident()), (0, 0));
        // Lone subtrees that moved are grouped in the new store where groups are made.
        assert_eq!(
            tree.stored_subtrees() + grouped_parts(&tree.root),
            parts,
            "as many subtrees as before"
        );
        assert!(tree.stored_groups() > groups);
        assert_counted(&tree);
        assert_eq!(tree.root(), root);
        // What moved reads back from the new store, checked, as it was; the groups' places
        // kept when they moved are found there without reading their records again.
        let (reads, group_loads) = (first.reads(), first.group_loads());
        let new_group_loads = second.group_loads();
        for (i, proof) in (0..4_000).step_by(13).zip(proofs) {
            let expected = if i == 7 { 70 } else { i };
            assert_eq!(tree.payload(&h(i)), Some(expected));
            assert_eq!(tree.prove(&h(i)), proof);
        }
        assert_eq!((first.reads(), first.group_loads()), (reads, group_loads));
        assert!(second.loads() > 0 && second.finds() > 0);
        assert_eq!(second.group_loads(), new_group_loads);
        // And changes there as anywhere.
        tree.apply_with(vec![(h(9), None), (h(9_001), Some((h(3), 3)))]);
        let mut expected = SparseMerkleTree::from_entries_with(
            (0..4_000)
                .filter(|i| *i != 9)
                .map(|i| (h(i), h(i + 1000), i))
                .collect(),
        );
        expected.apply_with(vec![(h(7), Some((h(70), 70))), (h(9_001), Some((h(3), 3)))]);
        assert_eq!(tree.root(), expected.root());
        assert_counted(&tree);
    }

    #[test]
    #[should_panic(expected = "does not match its hash")]
    fn a_moved_subtree_is_checked_when_read_from_the_new_store() {
        let (tree, _first) = half_grouped();
        let second = Arc::new(MemStore::default());
        let mut tree = tree.with_store(Arc::clone(&second) as Arc<dyn SubtreeStore<u64>>, 4, 0);
        move_all(&mut tree, usize::MAX);
        second
            .corrupt
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tree.payload(&h(1));
    }

    /// The first stored subtree or group below `node`, in key order.
    fn first_stored<P>(node: &Node<P>) -> Option<&Node<P>> {
        match node {
            Node::Stored(_) | Node::Group(_) => Some(node),
            Node::Internal(i) => first_stored(&i.left).or_else(|| first_stored(&i.right)),
            Node::Empty | Node::Leaf(_) => None,
        }
    }

    /// Whether the path to `key` below `node` (at `depth`) passes a group.
    fn in_a_group<P>(node: &Node<P>, depth: usize, key: &Digest) -> bool {
        match node {
            Node::Group(_) => true,
            Node::Internal(i) => {
                let child = if bit(key, depth) { &i.right } else { &i.left };
                in_a_group(child, depth + 1, key)
            }
            Node::Empty | Node::Leaf(_) | Node::Stored(_) => false,
        }
    }

    #[test]
    fn a_group_changed_while_its_store_moves_over_stays_a_group() {
        for takes in [None, Some(1)] {
            let (mut tree, first) = stored_tree(4_000, 4, 0);
            tree.evict(Evictable::All, &EMPTY, usize::MAX);
            let key = (0..4_000)
                .map(h)
                .find(|k| in_a_group(&tree.root, 0, k))
                .expect("most subtrees are grouped");
            let (subtrees, groups) = (tree.stored_subtrees(), tree.stored_groups());
            let second = Arc::new(MemStore::default());
            let mut tree = tree.with_store(Arc::clone(&second) as Arc<dyn SubtreeStore<u64>>, 4, 0);
            // With `Some(1)`, the new store takes the changed subtree and refuses the rest.
            *second.puts_left.lock().unwrap() = takes;
            let loads = first.loads();
            tree.apply_with(vec![(key, Some((h(1), 1)))]);
            assert_eq!(
                first.loads() - loads,
                1,
                "only the changed subtree is read back"
            );
            assert_counted(&tree);
            let mut expected = SparseMerkleTree::from_entries_with(
                (0..4_000).map(|i| (h(i), h(i + 1000), i)).collect(),
            );
            expected.apply_with(vec![(key, Some((h(1), 1)))]);
            assert_eq!(tree.root(), expected.root());
            assert_eq!(tree.payload(&key), Some(1));
            if takes.is_none() {
                // Its other subtrees were copied as they are kept, and it was written back
                // as a group: nothing came apart.
                assert_eq!(
                    (tree.stored_subtrees(), tree.stored_groups()),
                    (subtrees, groups)
                );
                assert!(in_a_group(&tree.root, 0, &key));
                let moved = 4_000 - tree.elsewhere();
                assert!(
                    (8..200).contains(&moved),
                    "one group's entries moved: {moved}"
                );
                assert_eq!(tree.take_refused_write_back(), None);
            } else {
                // The refusal is reported; the group's other subtrees stay in the old store,
                // outside any group, until they move.
                assert_eq!(
                    tree.take_refused_write_back(),
                    Some(StoreError("disk full".into()))
                );
                assert!(tree.stored_subtrees() > subtrees);
                assert_eq!(tree.stored_groups(), groups - 1);
                *second.puts_left.lock().unwrap() = None;
                move_all(&mut tree, usize::MAX);
                assert_eq!((tree.elsewhere(), tree.root()), (0, expected.root()));
                assert_counted(&tree);
            }
        }
    }

    #[test]
    fn a_move_the_new_store_refuses_leaves_the_old_one_read() {
        let (mut tree, first) = stored_tree(4_000, 4, 64);
        tree.evict(Evictable::All, &EMPTY, usize::MAX);
        let root = tree.root();
        let Some(Node::Group(group)) = first_stored(&tree.root) else {
            panic!("the first subtrees are grouped");
        };
        let parts = group.parts;
        let second = Arc::new(MemStore::default());
        let mut tree = tree.with_store(Arc::clone(&second) as Arc<dyn SubtreeStore<u64>>, 4, 64);
        let counts = (
            tree.stored_subtrees(),
            tree.stored_groups(),
            tree.stored_bytes(),
        );
        // The store takes all but the last of the first group's subtrees, then refuses: the
        // parts it took are left unread, and the group stays in the old store.
        *second.puts_left.lock().unwrap() = Some(parts - 1);
        let refused = tree.evict(Evictable::None, &EMPTY, usize::MAX);
        assert_eq!(refused.refused, Some(StoreError("disk full".into())));
        assert_eq!(refused.moved, 0);
        assert_eq!(second.puts(), (parts - 1, 0), "copied before the refusal");
        assert_eq!(
            (tree.elsewhere(), tree.root(), tree.len()),
            (4_000, root, 4_000)
        );
        assert_eq!(
            (
                tree.stored_subtrees(),
                tree.stored_groups(),
                tree.stored_bytes()
            ),
            counts
        );
        assert_counted(&tree);
        let finds = first.finds();
        for i in (0..4_000).step_by(41) {
            assert_eq!(tree.payload(&h(i)), Some(i));
        }
        assert!(
            first.finds() > finds,
            "what did not move is read from the old store"
        );
        *second.puts_left.lock().unwrap() = None;
        move_all(&mut tree, 2_000);
        assert_eq!((tree.elsewhere(), tree.root()), (0, root));
        assert_counted(&tree);
    }

    #[test]
    fn a_store_that_refuses_leaves_the_tree_whole() {
        let (mut tree, store) = stored_tree(300, 37, 0);
        let root = tree.root();
        store
            .refuse
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let done = tree.evict(Evictable::All, &EMPTY, usize::MAX);
        assert_eq!(done.refused, Some(StoreError("disk full".into())));
        assert!(
            done.next > EMPTY,
            "the next call starts past the refused subtree"
        );
        assert_eq!((tree.root(), tree.resident(), tree.len()), (root, 300, 300));
        assert_eq!(tree.payload(&h(9)), Some(9));
    }

    #[test]
    fn stored_subtrees_are_grouped_and_updates_leave_groups_whole() {
        // About 700 subtrees of 4 to 8 entries (stored 9 levels down), grouped 3 levels
        // above; nothing read back is kept.
        let (mut tree, store) = stored_tree(4_000, 4, 0);
        let whole = tree.clone();
        let done = tree.evict(Evictable::All, &EMPTY, usize::MAX);
        assert!(done.groups > 40, "{done:?}");
        assert_eq!(tree.stored_groups(), done.groups);
        assert_counted(&tree);
        // Nearly every subtree is in a group: one node in memory for about eight.
        assert!(tree.stored_subtrees() < done.subtrees / 10, "{done:?}");
        let (root, subtrees) = (tree.root(), done.subtrees);
        let group_loads = store.group_loads();
        for i in (0..4_000).step_by(37) {
            assert_eq!(tree.payload(&h(i)), Some(i));
            let proof = tree.prove(&h(i));
            assert_eq!(proof, whole.prove(&h(i)));
            assert_eq!(proof.verify(&root, &h(i), Some(&h(i + 1000))), Ok(()));
        }
        // Every read and proof read its group back (none is kept here).
        assert!(store.group_loads() - group_loads >= 2 * 4_000 / 37);
        // An update reads back the group on its path and the subtree below, and writes both
        // back: the tree keeps as many groups, and no more in memory.
        let groups = tree.stored_groups();
        let (subtrees_put, groups_put) = store.puts();
        let (loads, group_loads) = (store.loads(), store.group_loads());
        tree.apply_with(vec![(h(7), Some((h(70), 70))), (h(9_000), Some((h(1), 1)))]);
        assert_eq!(store.group_loads() - group_loads, 2);
        assert_eq!(store.loads() - loads, 2);
        assert_eq!(store.puts(), (subtrees_put + 2, groups_put + 2));
        assert_eq!(tree.stored_groups(), groups);
        assert_counted(&tree);
        assert_eq!((tree.resident(), in_memory(&tree.root)), (0, 0));
        // A value written again as it was, and a key removed that is not there, change
        // nothing and write nothing.
        tree.apply_with(vec![(h(7), Some((h(70), 70))), (h(9_001), None)]);
        assert_eq!(store.puts(), (subtrees_put + 2, groups_put + 2));
        assert_eq!(tree.payload(&h(7)), Some(70));
        let mut expected = whole.clone();
        expected.apply_with(vec![(h(7), Some((h(70), 70))), (h(9_000), Some((h(1), 1)))]);
        assert_eq!(tree.root(), expected.root());
        // A new store: the groups open and their subtrees move, grouped again as they go.
        let next = Arc::new(MemStore::default());
        tree = tree.with_store(Arc::clone(&next) as Arc<dyn SubtreeStore<u64>>, 4, 100);
        assert_eq!(tree.elsewhere(), 4_001);
        let done = tree.evict(Evictable::None, &EMPTY, usize::MAX);
        assert_eq!((done.moved, tree.elsewhere()), (4_001, 0));
        assert_eq!(tree.stored_groups(), groups);
        assert!(tree.stored_subtrees() < subtrees / 10, "{done:?}");
        assert_counted(&tree);
        assert_eq!(tree.root(), expected.root());
        assert_eq!(tree.payload(&h(3_999)), Some(3_999));
        // Nothing keeps a store alive but the versions that read from it: groups are kept
        // as places, not as nodes that point to the store.
        drop((whole, expected));
        assert_eq!(Arc::strong_count(&store), 1);
        drop(tree);
        assert_eq!(Arc::strong_count(&next), 1);
    }

    #[test]
    fn a_group_made_before_the_tree_grew_is_written_back_where_groups_are_made_now() {
        let (mut tree, store) = stored_tree(4_000, 4, 0);
        tree.evict(Evictable::All, &EMPTY, usize::MAX);
        let (subtrees, groups) = (tree.stored_subtrees(), tree.stored_groups());
        // Subtrees are now stored a level deeper, and grouped a level deeper.
        tree.expect_len(8_000);
        let puts = store.puts();
        tree.apply_with(vec![(h(7), Some((h(70), 70)))]);
        // The subtree written back is cut in two at the new depth (unless one half is a
        // lone entry); its group is written back as two, one level deeper, with nothing of
        // it left out.
        let (subtrees_put, groups_put) = store.puts();
        assert!((1..=2).contains(&(subtrees_put - puts.0)));
        assert_eq!(groups_put, puts.1 + 2);
        assert_eq!(
            (tree.stored_subtrees(), tree.stored_groups()),
            (subtrees, groups + 1)
        );
        assert_counted(&tree);
        assert_eq!(tree.payload(&h(7)), Some(70));
        // Three doublings more: a group of the first depth that an update reaches is written
        // back as groups as deep as its subtrees allow (those untouched are still where the
        // first depth put them), none of its subtrees left out.
        tree.expect_len(64_000);
        let far = (0..4_000).find(|i| h(*i)[0] >> 4 != h(7)[0] >> 4).unwrap();
        tree.apply_with(vec![(h(far), Some((h(1), 1)))]);
        assert_eq!(tree.stored_subtrees(), subtrees);
        assert!(tree.stored_groups() >= groups + 3);
        assert_counted(&tree);
        assert_eq!(tree.payload(&h(far)), Some(1));
    }

    #[test]
    fn where_a_group_cannot_be_written_back_whole_its_parts_are_grouped() {
        let (mut tree, _store) = stored_tree(4_000, 4, 0);
        tree.evict(Evictable::All, &EMPTY, usize::MAX);
        assert_eq!(tree.stored_subtrees(), 0);
        let groups = tree.stored_groups();
        // Every entry of one stored subtree (nine levels down) but one is removed: the one
        // left stays in memory, so its group cannot be written back whole.
        let place = |k: &Digest| (u16::from(k[0]) << 1) | u16::from(k[1] >> 7);
        let mates: Vec<u64> = (0..4_000)
            .filter(|i| place(&h(*i)) == place(&h(7)))
            .collect();
        assert!(mates.len() >= 2, "{mates:?}");
        tree.apply_with(mates.iter().skip(1).map(|i| (h(*i), None)).collect());
        assert_eq!(tree.resident(), 1);
        // The subtrees beside it are grouped below it, all but at most the one that shares
        // a node with the entry alone.
        assert!(tree.stored_subtrees() <= 1, "{}", tree.stored_subtrees());
        assert!(tree.stored_groups() > groups);
        assert_counted(&tree);
        assert_eq!(tree.payload(&h(mates[0])), Some(mates[0]));
        assert_eq!(tree.payload(&h(mates[1])), None);
    }

    #[test]
    fn groups_read_back_are_kept_as_places() {
        // Room for about 25 subtrees' places: three groups of eight.
        let (mut tree, store) = stored_tree(4_000, 4, 100);
        tree.evict(Evictable::All, &EMPTY, usize::MAX);
        // The last groups made (the walk goes in key order) are kept.
        let last = (0..4_000).max_by_key(|i| h(*i)).unwrap();
        let loads = store.group_loads();
        assert_eq!(tree.payload(&h(last)), Some(last));
        assert_eq!(store.group_loads(), loads);
        for i in 0..4_000 {
            tree.payload(&h(i));
        }
        let loads = store.group_loads();
        assert!(loads > 40);
        tree.payload(&h(5));
        tree.payload(&h(5));
        assert_eq!(store.group_loads() - loads, 2, "a read keeps nothing");
        tree.prove(&h(5));
        tree.payload(&h(5));
        tree.prove(&h(5));
        assert_eq!(
            store.group_loads() - loads,
            3,
            "a proof keeps the places it read back"
        );
    }

    #[test]
    fn a_group_that_comes_back_changed_is_caught() {
        // The last part's size in the store, its location, its entry count and its hash:
        // what the group's hash covers, and what it does not.
        for from_end in [1, 9, 17, 21, 25] {
            let (mut tree, store) = stored_tree(4_000, 4, 0);
            assert!(tree.evict(Evictable::All, &EMPTY, usize::MAX).groups > 0);
            store
                .corrupt_group_at
                .store(from_end, std::sync::atomic::Ordering::Relaxed);
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tree.get(&h(0));
            }));
            let message = read.expect_err("a changed record is refused");
            assert!(
                message
                    .downcast_ref::<String>()
                    .is_some_and(|m| m.contains("does not match its hash")),
                "{from_end}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "does not match its hash")]
    fn a_store_that_gives_back_other_entries_as_checked_is_caught_when_rebuilding() {
        let (mut tree, store) = stored_tree(300, 37, 0);
        tree.evict(Evictable::All, &EMPTY, usize::MAX);
        store.lie.store(true, std::sync::atomic::Ordering::Relaxed);
        tree.prove(&h(1));
    }

    #[test]
    #[should_panic(expected = "does not match its hash")]
    fn a_store_that_gives_back_something_else_is_caught() {
        let (mut tree, store) = stored_tree(300, 37, 0);
        tree.evict(Evictable::All, &EMPTY, usize::MAX);
        store
            .corrupt
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tree.get(&h(1));
    }

    /// A key for the property test: odd numbers crowd under one 160-bit prefix, as an
    /// index's rows of one owner do.
    fn crowded(n: u64) -> Digest {
        let mut key = h(n);
        if n % 2 == 1 {
            key[..20].fill(0x5a);
        }
        key
    }

    proptest! {
        /// Updates and evictions in any order, with older versions kept, answer as a tree
        /// rebuilt from the final map does, and so do the older versions as of theirs.
        #[test]
        fn evictions_change_no_answer(steps in prop::collection::vec(
            (prop::collection::vec((0u64..220, prop::option::of(0u64..1000)), 0..30),
             1usize..64, prop::option::of(0usize..4), any::<u64>(), 1usize..200), 1..16)) {
            let store = Arc::new(MemStore::default());
            // Keys 200..600 first, so that stored subtrees are grouped (the batches reach
            // 0..200 and a few of them).
            let mut model: BTreeMap<Digest, u64> = (200u64..600).map(|k| (crowded(k), k)).collect();
            let mut tree: SparseMerkleTree<u64> =
                SparseMerkleTree::from_entries_with(model.iter().map(|(k, v)| (*k, h(*v), *v)).collect())
                    .with_store(store as Arc<dyn SubtreeStore<u64>>, 2, 40);
            let mut versions: Vec<(SparseMerkleTree<u64>, BTreeMap<Digest, u64>)> = Vec::new();
            for (batch, per_subtree, older, start, max) in steps {
                tree.apply_with(batch.iter().map(|(k, v)| (crowded(*k), v.map(|v| (h(v), v)))).collect());
                prop_assert_eq!(tree.resident(), in_memory(&tree.root));
                prop_assert_eq!(tree.elsewhere(), elsewhere(&tree.root, tree.backing.as_ref()));
                prop_assert_eq!(tree.stored_bytes(), current_bytes(&tree.root, tree.backing.as_ref()));
                prop_assert_eq!((tree.stored_subtrees(), tree.stored_groups()), stored_subtrees(&tree.root));
                for (k, v) in &batch {
                    match v { Some(v) => { model.insert(crowded(*k), *v); } None => { model.remove(&crowded(*k)); } }
                }
                versions.push((tree.clone(), model.clone()));
                if start % 7 == 3 {
                    // A new store: what the old one holds moves over as evictions pass.
                    let next = Arc::new(MemStore::default());
                    tree = tree.with_store(next as Arc<dyn SubtreeStore<u64>>, per_subtree, 40);
                }
                let older = older.and_then(|back| versions.len().checked_sub(back + 1)).map(|i| versions[i].0.clone());
                let evictable = match (&older, start % 5) {
                    (_, 0) => Evictable::None,
                    (Some(older), _) => Evictable::UnchangedSince(older),
                    (None, _) => Evictable::All,
                };
                let mut from = EMPTY;
                from[..8].copy_from_slice(&start.to_be_bytes());
                if start % 3 == 1 {
                    // Inside the crowd.
                    from = crowded(start | 1);
                }
                let done = tree.evict(evictable, &from, max);
                prop_assert!(done.refused.is_none());
                prop_assert_eq!(tree.len(), model.len());
                prop_assert_eq!(tree.resident(), in_memory(&tree.root));
                prop_assert_eq!(tree.elsewhere(), elsewhere(&tree.root, tree.backing.as_ref()));
                prop_assert_eq!(tree.stored_bytes(), current_bytes(&tree.root, tree.backing.as_ref()));
                prop_assert_eq!((tree.stored_subtrees(), tree.stored_groups()), stored_subtrees(&tree.root));
                let rebuilt = SparseMerkleTree::from_entries(model.iter().map(|(k, v)| (*k, h(*v))).collect());
                prop_assert_eq!(tree.root(), rebuilt.root());
            }
            versions.push((tree, model));
            for (version, model) in &versions {
                let root = version.root();
                for k in (0u64..600).step_by(7) {
                    let key = crowded(k);
                    let value_hash = model.get(&key).map(|v| h(*v));
                    prop_assert_eq!(version.prove(&key).verify(&root, &key, value_hash.as_ref()), Ok(()));
                    prop_assert_eq!(version.payload(&key), model.get(&key).copied());
                }
            }
        }

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
                prop_assert_eq!(tree.payload(&key), model.get(&key).copied());
            }
        }
    }
}
