//! Stored subtrees that sit together below one node, kept as one record in the store: what
//! stands for them in memory is one node ([`Group`]) instead of one per subtree and the
//! nodes above them.
//!
//! A group is written back at once when an update changes one of its subtrees, as a stored
//! subtree is: updates leave groups whole, so the memory a stored subtree costs does not
//! come back as the tree changes.
//!
//! A record is a `u32` count, then per subtree: its depth below the group's node (`u16`),
//! the path there (that many bits, most significant first, in whole bytes, the rest
//! zeros), its hash (32 bytes), entry count (`u32`), location (`u64`), bytes in the store
//! (`u64`) and the store's checksum of its record (`u64`), all big-endian, in key order. It
//! is read back bounded by its length, and checked by the store against the checksum it
//! gave; an update or a proof rebuilds the nodes above its subtrees and checks them against
//! the hash kept in memory too, as a stored subtree's entries are, while a read only looks
//! for the subtree its key is in.

use super::{Backing, Node, Placed, StoreError, Stored, Tally, bit};
use crate::Digest;
use std::sync::Arc;

/// Levels a group spans below its node when keys are spread evenly (so about `2^GROUP_LEVELS`
/// stored subtrees): eight subtrees a record, whose about 450 bytes an update that changes
/// one of them writes again beside it.
pub(super) const GROUP_LEVELS: usize = 3;

/// The most stored subtrees one group holds (where keys crowd, subtrees sit deeper and more
/// of them share a node: past this, none of them are grouped there).
pub(super) const MAX_GROUP_PARTS: usize = 64;

/// The places of a group's subtrees, read back and checked.
pub(super) type Parts = Arc<[Part]>;

/// The fewest bytes a subtree takes in a record (depth, hash, count, location, bytes,
/// checksum).
const MIN_PART_BYTES: usize = 2 + 32 + 4 + 8 + 8 + 8;

/// Stored subtrees that a store keeps the places and hashes of, standing where the node
/// above them was, with the same hash.
pub(super) struct Group<P> {
    pub(super) hash: Digest,
    /// Entries in its subtrees.
    pub(super) len: usize,
    /// How many stored subtrees it holds.
    pub(super) parts: usize,
    pub(super) location: u64,
    /// The bytes its record takes in the store.
    pub(super) bytes: u64,
    /// The store's checksum of its record: the places and sizes of its subtrees, which its
    /// hash does not cover, are checked too when it is read back.
    check: u64,
    pub(super) backing: Arc<Backing<P>>,
}

impl<P> std::fmt::Debug for Group<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("len", &self.len)
            .field("parts", &self.parts)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// A stored subtree's place in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part {
    /// Its depth below the group's node.
    depth: usize,
    /// The path there from the group's node, most significant bit first.
    path: Digest,
    hash: Digest,
    len: usize,
    location: u64,
    bytes: u64,
    check: u64,
}

impl Part {
    /// Where its record is in the group's store.
    fn placed(&self) -> Placed {
        Placed {
            location: self.location,
            bytes: self.bytes,
            check: self.check,
        }
    }

    /// The node that stands for this subtree.
    fn stored<P>(&self, backing: &Arc<Backing<P>>) -> Node<P> {
        Node::Stored(Arc::new(Stored {
            hash: self.hash,
            len: self.len,
            location: self.location,
            bytes: self.bytes,
            check: self.check,
            backing: Arc::clone(backing),
        }))
    }
}

/// What a group of the stored subtrees below a node would be.
struct Record {
    bytes: Vec<u8>,
    /// Entries in the subtrees.
    len: usize,
    parts: Vec<Part>,
}

/// The record of the stored subtrees below `node`, if it is made of them and the nodes
/// above them only (no leaf, no other store's subtree, no group), at least two and at most
/// [`MAX_GROUP_PARTS`], all in `backing`'s store.
fn record_of<P>(node: &Node<P>, backing: &Arc<Backing<P>>) -> Option<Record> {
    fn go<P>(
        node: &Node<P>,
        depth: usize,
        path: &mut Digest,
        backing: &Arc<Backing<P>>,
        out: &mut Vec<Part>,
    ) -> bool {
        match node {
            Node::Empty => true,
            Node::Leaf(_) | Node::Group(_) => false,
            Node::Stored(s) => {
                if !Arc::ptr_eq(&s.backing, backing) || out.len() == MAX_GROUP_PARTS {
                    return false;
                }
                out.push(Part {
                    depth,
                    path: *path,
                    hash: s.hash,
                    len: s.len,
                    location: s.location,
                    bytes: s.bytes,
                    check: s.check,
                });
                true
            }
            Node::Internal(i) => {
                let Some(byte) = path.get(depth / 8).copied() else {
                    return false;
                };
                let mask = 1u8 << (7 - depth % 8);
                let left = go(&i.left, depth + 1, path, backing, out);
                if let Some(b) = path.get_mut(depth / 8) {
                    *b = byte | mask;
                }
                let right = left && go(&i.right, depth + 1, path, backing, out);
                if let Some(b) = path.get_mut(depth / 8) {
                    *b = byte;
                }
                right
            }
        }
    }
    let mut parts = Vec::new();
    if !go(node, 0, &mut [0u8; 32], backing, &mut parts) || parts.len() < 2 {
        return None;
    }
    Some(Record {
        bytes: encode(&parts),
        len: parts.iter().map(|p| p.len).sum(),
        parts,
    })
}

fn encode(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + parts.len() * (MIN_PART_BYTES + 2));
    out.extend_from_slice(&(parts.len() as u32).to_be_bytes());
    for p in parts {
        out.extend_from_slice(&(p.depth as u16).to_be_bytes());
        out.extend_from_slice(p.path.get(..p.depth.div_ceil(8)).unwrap_or_default());
        out.extend_from_slice(&p.hash);
        out.extend_from_slice(&(p.len as u32).to_be_bytes());
        out.extend_from_slice(&p.location.to_be_bytes());
        out.extend_from_slice(&p.bytes.to_be_bytes());
        out.extend_from_slice(&p.check.to_be_bytes());
    }
    out
}

/// The parts of a record for a group at `depth`, if it decodes: no more of them than the
/// bytes can hold or [`MAX_GROUP_PARTS`], none deeper than a key is long, nothing left over.
fn decode(bytes: &[u8], depth: usize) -> Option<Vec<Part>> {
    let (count, mut rest) = bytes.split_first_chunk::<4>()?;
    let count = u32::from_be_bytes(*count) as usize;
    if count > MAX_GROUP_PARTS || count > rest.len() / MIN_PART_BYTES {
        return None;
    }
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        let (below, after) = rest.split_first_chunk::<2>()?;
        let below = usize::from(u16::from_be_bytes(*below));
        if depth + below > 256 {
            return None;
        }
        let (path_bytes, after) = after.split_at_checked(below.div_ceil(8))?;
        let mut path = [0u8; 32];
        path.get_mut(..path_bytes.len())?
            .copy_from_slice(path_bytes);
        let (hash, after) = after.split_first_chunk::<32>()?;
        let (len, after) = after.split_first_chunk::<4>()?;
        let (location, after) = after.split_first_chunk::<8>()?;
        let (stored_bytes, after) = after.split_first_chunk::<8>()?;
        let (check, after) = after.split_first_chunk::<8>()?;
        parts.push(Part {
            depth: below,
            path,
            hash: *hash,
            len: u32::from_be_bytes(*len) as usize,
            location: u64::from_be_bytes(*location),
            bytes: u64::from_be_bytes(*stored_bytes),
            check: u64::from_be_bytes(*check),
        });
        rest = after;
    }
    rest.is_empty().then_some(parts)
}

/// The subtree `parts` make below a node `below` levels under a group's node, if they make
/// one: each part where its path ends, nothing else sharing its place.
fn build<P: Clone>(below: usize, parts: &[Part], backing: &Arc<Backing<P>>) -> Option<Node<P>> {
    match parts {
        [] => Some(Node::Empty),
        [part] if part.depth == below => Some(part.stored(backing)),
        _ if below >= 256 || parts.iter().any(|p| p.depth <= below) => None,
        _ => {
            let split = parts.partition_point(|p| !bit(&p.path, below));
            let (left, right) = parts.split_at(split);
            if left.iter().any(|p| bit(&p.path, below))
                || !right.iter().all(|p| bit(&p.path, below))
            {
                return None;
            }
            let (left, right) = (
                build(below + 1, left, backing)?,
                build(below + 1, right, backing)?,
            );
            Some(Node::join(left, right))
        }
    }
}

impl<P: Clone> Group<P> {
    /// What moving it to another store reads ([`Self::copy_to`]; the group's node at
    /// `depth`): its subtrees' records if their places are kept, or if `open` (reading its
    /// record for them); else its own record.
    pub(super) fn places_to_read(&self, depth: usize, open: bool) -> Vec<Placed> {
        // (`parts` takes the kept places first, and reads the record only without them.)
        let parts = if open {
            Some(self.parts(depth))
        } else {
            self.kept_parts()
        };
        match parts {
            Some(parts) => parts.iter().map(Part::placed).collect(),
            None => vec![self.placed()],
        }
    }

    /// Where its record is in its store.
    fn placed(&self) -> Placed {
        Placed {
            location: self.location,
            bytes: self.bytes,
            check: self.check,
        }
    }

    /// The places of its subtrees, if they were read back recently and are still kept:
    /// kept once its record was checked against this group's hash (a location holds one
    /// record).
    fn kept_parts(&self) -> Option<Parts> {
        let kept = self.backing.groups().get(self.location);
        kept.map(|(parts, _)| parts)
    }

    /// The places of its subtrees (the group's node at `depth`) as its record holds them,
    /// read back (the store checks the record) and decoded, as many and holding as many
    /// entries as this group's.
    fn read_parts(&self, depth: usize) -> Vec<Part> {
        let bytes = self.backing.store.load_bytes(self.placed());
        let parts = decode(&bytes, depth).filter(|parts| {
            parts.len() == self.parts && parts.iter().map(|p| p.len).sum::<usize>() == self.len
        });
        match parts {
            Some(parts) => parts,
            None => self.backing.store.fail(self.location),
        }
    }

    /// The places of its subtrees (the group's node at `depth`): kept, or read back,
    /// rebuilt, checked against its hash, and kept.
    fn parts(&self, depth: usize) -> Parts {
        if let Some(parts) = self.kept_parts() {
            return parts;
        }
        let parts = self.read_parts(depth);
        match build(0, &parts, &self.backing) {
            Some(node @ Node::Internal(_)) if node.hash() == self.hash => {
                let parts: Parts = parts.into();
                self.backing
                    .groups()
                    .insert(self.location, Arc::clone(&parts), parts.len());
                parts
            }
            _ => self.backing.store.fail(self.location),
        }
    }

    /// The subtree it stands for (stored subtrees and the nodes above them), checked.
    pub(super) fn open(&self, depth: usize) -> Node<P> {
        match build(0, &self.parts(depth), &self.backing) {
            Some(node) => node,
            None => self.backing.store.fail(self.location),
        }
    }

    /// This group (its node at `depth`) kept by `backing`'s store too: its subtrees' records
    /// copied as they are (see [`super::SubtreeStore::record`]), and a record of their new
    /// places; and the bytes put there in all. What was copied before a refusal is left
    /// unread.
    pub(super) fn copy_to(
        &self,
        depth: usize,
        backing: &Arc<Backing<P>>,
    ) -> Result<(Group<P>, u64), StoreError> {
        let mut placed_bytes = 0;
        let mut moved = Vec::with_capacity(self.parts);
        for part in self.parts(depth).iter() {
            let record = self.backing.store.record(part.placed());
            let placed = backing.store.put_record(&record)?;
            placed_bytes += placed.bytes;
            moved.push(Part {
                location: placed.location,
                bytes: placed.bytes,
                check: placed.check,
                ..part.clone()
            });
        }
        let placed = backing.store.put_bytes(&encode(&moved))?;
        backing
            .groups()
            .insert(placed.location, moved.into(), self.parts);
        Ok((
            Group {
                hash: self.hash,
                len: self.len,
                parts: self.parts,
                location: placed.location,
                bytes: placed.bytes,
                check: placed.check,
                backing: Arc::clone(backing),
            },
            placed_bytes + placed.bytes,
        ))
    }

    /// The stored subtree of the group (whose node is at `depth`) that `key` would be in,
    /// and its depth; `None` if the key's path leaves the group's subtrees (it is not in the
    /// tree). Found by the places alone, kept or read back (checked by the store), nothing
    /// rebuilt, hashed or kept: a read reaches a group seldom read again soon.
    pub(super) fn part_for(&self, depth: usize, key: &Digest) -> Option<(Node<P>, usize)> {
        let on_path = |p: &Part| (0..p.depth).all(|i| bit(&p.path, i) == bit(key, depth + i));
        let part = match self.kept_parts() {
            Some(parts) => parts.iter().find(|p| on_path(p)).cloned(),
            None => self.read_parts(depth).into_iter().find(on_path),
        }?;
        Some((part.stored(&self.backing), depth + part.depth))
    }
}

/// `node` as a group in `backing`'s store (with `node`'s hash), if it is made of stored
/// subtrees of that store and the nodes above them only, two to [`MAX_GROUP_PARTS`]; else
/// `node` as it is. `tally` counts what moved. A store that refuses the record leaves the
/// subtrees as they are (they cost memory, not answers; a store that refuses anything
/// refuses the next subtree put, which is reported).
pub(super) fn make<P: Clone>(
    node: Node<P>,
    backing: &Arc<Backing<P>>,
    tally: &mut Tally,
) -> Node<P> {
    let Some(record) = record_of(&node, backing) else {
        return node;
    };
    let Ok(placed) = backing.store.put_bytes(&record.bytes) else {
        return node;
    };
    tally.parts_grouped += record.parts.len();
    tally.groups_placed += 1;
    tally.placed_bytes += placed.bytes;
    let group = Group {
        hash: node.hash(),
        len: record.len,
        parts: record.parts.len(),
        location: placed.location,
        bytes: placed.bytes,
        check: placed.check,
        backing: Arc::clone(backing),
    };
    let weight = record.parts.len();
    backing
        .groups()
        .insert(placed.location, record.parts.into(), weight);
    Node::Group(Arc::new(group))
}
