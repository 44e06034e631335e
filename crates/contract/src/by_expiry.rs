//! The grants' keys in order of expiry, kept compactly: what each block walks from the front
//! to retire the grants that expired long enough ago.
//!
//! A grant stays in this queue from its issue until it is retired, an hour after it expired,
//! so the queue holds every live grant: up to a day and an hour of requests (the longest
//! lifetime is a day). A `BTreeSet` of `(expiry, id)` takes about 72 bytes for each (its
//! nodes are about half full when keys arrive in order, as expiries mostly do); this queue
//! takes about 40, the key itself, by keeping the keys in sorted chunks that a full chunk
//! passes its largest key on from, so that they stay full (a chunk's storage grows by
//! doubling as it fills, so chunks filled from the middle take up to about 53).
//!
//! Given a store ([`ByExpiry::keep_in`]), it keeps only a few chunks in memory, those a block
//! touched last: the front, which blocks retire from, and where new grants' expiries fall
//! (now plus the lifetimes clients ask for). The others go to the store
//! ([`ByExpiry::store_cold`]), and memory keeps of each its first key, its length, its place
//! and the hash of its bytes, about 120 bytes. A stored chunk takes up to [`PENDING`] keys
//! in memory before it is read back (checked against that hash) and they are merged in, so
//! that grants of lifetimes clients rarely ask for cost a read and a write of a chunk per
//! [`PENDING`] grants, not each (a full chunk passes its largest key on to a stored next
//! chunk the same way), and the chunk read back is cut in two if the keys merged in made it
//! larger than a chunk, so that such grants leave chunks at least half full. Blocks retire
//! from the front chunk, read back once.

use secnet_types::{GrantId, Hash};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

/// A grant's expiry (milliseconds since the Unix epoch) and its id.
pub(crate) type Expiring = (u64, GrantId);

/// Keys a chunk holds at most (20 KiB: a chunk's storage grows by doubling, to this).
const CHUNK: usize = 512;

/// The bytes of one key in a stored chunk: its expiry (big-endian) and its id.
const KEY_BYTES: usize = 8 + 32;

/// The most bytes a stored chunk takes ([`ExpiryStore::put`] is never given more).
pub const EXPIRY_CHUNK_BYTES: usize = CHUNK * KEY_BYTES;

/// Where the grants by expiry keep the chunks they move out of memory.
///
/// A store that cannot give back what it was given must not return from
/// [`ExpiryStore::load`]; [`ExpiryStore::fail`] is told when what it gave back is not what
/// was put. Nothing of it needs to outlive the process: the queue is rebuilt from the
/// grants when a state is loaded.
pub trait ExpiryStore: Send + Sync + fmt::Debug {
    /// Keeps `bytes` (at most [`EXPIRY_CHUNK_BYTES`]); returns where, for
    /// [`ExpiryStore::load`].
    fn put(&self, bytes: &[u8]) -> std::io::Result<u64>;

    /// The `len` bytes put at `location`.
    fn load(&self, location: u64, len: usize) -> Vec<u8>;

    /// What was put at `location` is no longer read: its place may be given again.
    fn free(&self, location: u64);

    /// Called when the bytes loaded from `location` are not those put there.
    fn fail(&self, location: u64) -> !;
}

/// A chunk a store holds; its place is freed when no version of the queue holds it.
struct StoredChunk {
    first: Expiring,
    len: u32,
    location: u64,
    hash: Hash,
    store: Arc<dyn ExpiryStore>,
}

impl Drop for StoredChunk {
    fn drop(&mut self) {
        self.store.free(self.location);
    }
}

impl fmt::Debug for StoredChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredChunk")
            .field("len", &self.len)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl StoredChunk {
    /// Its keys, read back and checked against the hash kept.
    fn keys(&self) -> VecDeque<Expiring> {
        let len = self.len as usize * KEY_BYTES;
        let bytes = self.store.load(self.location, len);
        if bytes.len() != len || Hash::digest(&bytes) != self.hash {
            self.store.fail(self.location);
        }
        let mut keys = VecDeque::with_capacity(CHUNK);
        keys.extend(bytes.chunks_exact(KEY_BYTES).filter_map(|key| {
            let (expiry, id) = key.split_first_chunk::<8>()?;
            Some((u64::from_be_bytes(*expiry), Hash(id.try_into().ok()?)))
        }));
        keys
    }
}

/// Keys a stored chunk takes in memory, without being read back, before the next one that
/// falls in it has it read back and them merged in: so that grants whose expiries fall in
/// chunks blocks did not touch lately (lifetimes clients rarely ask for) cost a read and a
/// write of a chunk per this many, not each.
const PENDING: usize = 32;

#[derive(Debug, Clone)]
enum Chunk {
    /// In memory, with when a block last touched it (the queue's `tick`).
    Held {
        keys: VecDeque<Expiring>,
        touched: u64,
    },
    /// In the store, with the keys added since (sorted; at most [`PENDING`]), merged in when
    /// it is read back.
    Stored {
        stored: Arc<StoredChunk>,
        pending: Vec<Expiring>,
    },
}

impl Chunk {
    fn first(&self) -> Option<&Expiring> {
        match self {
            Chunk::Held { keys, .. } => keys.front(),
            Chunk::Stored { stored, pending } => match pending.first() {
                Some(key) if *key < stored.first => Some(key),
                _ => Some(&stored.first),
            },
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Chunk::Held { keys, .. } => keys.len(),
            Chunk::Stored { stored, pending } => stored.len as usize + pending.len(),
        }
    }

    /// Its keys, in order (a stored chunk's read back, and not kept).
    fn keys(&self) -> Vec<Expiring> {
        match self {
            Chunk::Held { keys, .. } => keys.iter().copied().collect(),
            Chunk::Stored { stored, pending } => merged(stored.keys().into(), pending.clone()),
        }
    }
}

/// The sorted keys of `a` and `b`, sorted, each once.
fn merged(mut a: Vec<Expiring>, mut b: Vec<Expiring>) -> Vec<Expiring> {
    a.append(&mut b);
    a.sort_unstable();
    a.dedup();
    a
}

/// A chunk in memory holding `keys`, touched at `tick`, with a whole chunk's storage.
fn held(keys: Vec<Expiring>, tick: u64) -> Chunk {
    let mut deque = VecDeque::with_capacity(CHUNK);
    deque.extend(keys);
    Chunk::Held {
        keys: deque,
        touched: tick,
    }
}

/// An ordered set of [`Expiring`] keys.
///
/// INVARIANT: every chunk is non-empty and sorted; a held chunk holds at most [`CHUNK`] keys,
/// a stored one at most [`CHUNK`] in its store and [`PENDING`] more; every key of a chunk is
/// below every key of the chunks after it; a stored chunk's `first` and `len` are those of
/// the keys it was stored with; `len` is the number of keys (one added twice while its
/// chunk was stored is counted twice until the chunk is read back: a grant is added once);
/// `held_keys` is the number of keys in memory, in held chunks and pending.
#[derive(Debug, Clone, Default)]
pub(crate) struct ByExpiry {
    chunks: VecDeque<Chunk>,
    len: usize,
    held_keys: usize,
    /// Where chunks go once more than `held_chunks` are in memory.
    store: Option<Arc<dyn ExpiryStore>>,
    held_chunks: usize,
    tick: u64,
}

impl ByExpiry {
    /// How many keys it holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// How many of them are in memory (the rest are in its store).
    pub(crate) fn held_len(&self) -> usize {
        self.held_keys
    }

    /// Moves chunks to `store` from now on ([`Self::store_cold`]), keeping `held_chunks`
    /// chunks in memory.
    pub(crate) fn keep_in(&mut self, store: Arc<dyn ExpiryStore>, held_chunks: usize) {
        self.store = Some(store);
        self.held_chunks = held_chunks;
    }

    /// Moves to the store the chunks in memory past the `held_chunks` a block touched last
    /// (the first chunks, when none was touched since they were built). A chunk the store
    /// refuses stays in memory, and the first refusal is returned.
    pub(crate) fn store_cold(&mut self) -> Option<std::io::Error> {
        let store = self.store.clone()?;
        let mut held: Vec<(u64, usize)> = (self.chunks.iter().enumerate())
            .filter_map(|(i, c)| match c {
                Chunk::Held { touched, .. } => Some((*touched, i)),
                Chunk::Stored { .. } => None,
            })
            .collect();
        let cold = held
            .len()
            .checked_sub(self.held_chunks)
            .filter(|n| *n > 0)?;
        held.select_nth_unstable(cold - 1);
        for &(_, i) in held.iter().take(cold) {
            if let Err(e) = self.store_chunk(i, &store) {
                return Some(e);
            }
        }
        None
    }

    /// Moves chunk `i`, held, to `store`.
    fn store_chunk(&mut self, i: usize, store: &Arc<dyn ExpiryStore>) -> std::io::Result<()> {
        let Some(Chunk::Held { keys, .. }) = self.chunks.get(i) else {
            return Ok(());
        };
        let Some(&first) = keys.front() else {
            return Ok(());
        };
        let mut bytes = Vec::with_capacity(keys.len() * KEY_BYTES);
        for (expiry, id) in keys {
            bytes.extend_from_slice(&expiry.to_be_bytes());
            bytes.extend_from_slice(&id.0);
        }
        let len = keys.len();
        let stored = Chunk::Stored {
            stored: Arc::new(StoredChunk {
                first,
                len: len as u32,
                location: store.put(&bytes)?,
                hash: Hash::digest(&bytes),
                store: Arc::clone(store),
            }),
            pending: Vec::new(),
        };
        if let Some(chunk) = self.chunks.get_mut(i) {
            *chunk = stored;
            self.held_keys -= len;
        }
        Ok(())
    }

    /// Chunk `i`'s keys, in memory, marked as touched: a stored chunk is read back, its
    /// pending keys merged in, and cut in two if that made it larger than a chunk (the keys
    /// of chunk `i` are then the smaller half).
    fn open(&mut self, i: usize) -> Option<&mut VecDeque<Expiring>> {
        self.tick += 1;
        let tick = self.tick;
        if let Some(Chunk::Stored { stored, pending }) = self.chunks.get_mut(i) {
            let stored_len = stored.len as usize;
            let added = pending.len();
            let mut keys = merged(stored.keys().into(), std::mem::take(pending));
            let twice = stored_len + added - keys.len();
            let upper = (keys.len() > CHUNK).then(|| keys.split_off(keys.len() / 2));
            if let Some(chunk) = self.chunks.get_mut(i) {
                *chunk = held(keys, tick);
            }
            if let Some(upper) = upper {
                self.chunks.insert(i + 1, held(upper, tick));
            }
            self.len -= twice;
            self.held_keys += stored_len - twice;
        }
        match self.chunks.get_mut(i)? {
            Chunk::Held { keys, touched } => {
                *touched = tick;
                Some(keys)
            }
            Chunk::Stored { .. } => None,
        }
    }

    /// A new chunk in memory holding `keys`, touched now.
    fn new_chunk(&mut self, keys: VecDeque<Expiring>) -> Chunk {
        self.tick += 1;
        Chunk::Held {
            keys,
            touched: self.tick,
        }
    }

    /// The chunk `key` goes in: the last whose first key is at most `key` (keys arrive
    /// mostly in order, so mostly the last chunk), or the first.
    fn chunk_of(&self, key: &Expiring) -> usize {
        self.chunks
            .partition_point(|c| c.first().is_some_and(|first| first <= key))
            .saturating_sub(1)
    }

    /// Adds `key` (a key already there stays once).
    pub(crate) fn insert(&mut self, key: Expiring) {
        let mut at = self.chunk_of(&key);
        if let Some(Chunk::Stored { pending, .. }) = self.chunks.get_mut(at) {
            if pending.len() < PENDING {
                if let Err(position) = pending.binary_search(&key) {
                    pending.insert(position, key);
                    self.len += 1;
                    self.held_keys += 1;
                }
                return;
            }
            // Read back with its pending keys; if that cut it in two, `key` may go in the
            // upper half.
            self.open(at);
            at = self.chunk_of(&key);
        }
        let Some(chunk) = self.open(at) else {
            let chunk = self.new_chunk(VecDeque::from([key]));
            self.chunks.push_back(chunk);
            self.len += 1;
            self.held_keys += 1;
            return;
        };
        let position = chunk.partition_point(|k| *k < key);
        if chunk.get(position) == Some(&key) {
            return;
        }
        if chunk.len() < CHUNK {
            chunk.insert(position, key);
            self.len += 1;
            self.held_keys += 1;
            return;
        }
        // A full chunk passes its largest key (it may be `key`) on to the next chunk: so
        // chunks stay full whether keys arrive at the end, as expiries mostly do, or in the
        // middle, as a block's grants of one expiry do (they are ordered by id), and those of
        // a lifetime shorter than the longest. Taken out before `key` goes in, so that the
        // chunk's storage never grows past its keys.
        let moved = match chunk.pop_back() {
            Some(largest) if position < CHUNK => {
                chunk.insert(position, key);
                largest
            }
            Some(largest) => {
                chunk.push_back(largest);
                key
            }
            None => key,
        };
        // Wherever `moved` goes, it is in memory.
        self.len += 1;
        self.held_keys += 1;
        self.pass_on(at + 1, moved);
    }

    /// Puts `key`, below every key of chunk `i` and above those before it, at the front of
    /// chunk `i`: among its pending keys if it is stored and takes more (else it is read
    /// back first), or in a new chunk before it if it is held and full (a new last chunk,
    /// with its whole storage at once, where keys arriving in order go next, if there is no
    /// chunk `i`).
    fn pass_on(&mut self, i: usize, key: Expiring) {
        match self.chunks.get_mut(i) {
            Some(Chunk::Held { keys, .. }) if keys.len() < CHUNK => keys.push_front(key),
            Some(Chunk::Stored { pending, .. }) if pending.len() < PENDING => {
                pending.insert(0, key);
            }
            Some(Chunk::Stored { .. }) => {
                // Read back with its pending keys (and cut in two if that made it larger
                // than a chunk): `key` still goes in front of chunk `i`, now held.
                self.open(i);
                self.pass_on(i, key);
            }
            Some(Chunk::Held { .. }) => {
                let new = self.new_chunk(VecDeque::from([key]));
                self.chunks.insert(i, new);
            }
            None => {
                let mut last = VecDeque::with_capacity(CHUNK);
                last.push_back(key);
                let last = self.new_chunk(last);
                self.chunks.push_back(last);
            }
        }
    }

    /// Holds `keys`, in any order (sorted first: cheaper than inserting them one by one
    /// where they fall); given a store and how many chunks to hold, it moves the chunks there
    /// as they are made but for the last ones (which are those [`Self::store_cold`] would
    /// keep), so that loading holds the keys given and little more.
    pub(crate) fn from_keys(
        mut keys: Vec<Expiring>,
        store: Option<(Arc<dyn ExpiryStore>, usize)>,
    ) -> ByExpiry {
        keys.sort_unstable();
        keys.dedup();
        let len = keys.len();
        let count = len.div_ceil(CHUNK);
        let mut queue = ByExpiry {
            chunks: VecDeque::with_capacity(count),
            len,
            held_keys: len,
            ..ByExpiry::default()
        };
        if let Some((store, held_chunks)) = store {
            queue.keep_in(store, held_chunks);
        }
        for (i, keys) in keys.chunks(CHUNK).enumerate() {
            let chunk = queue.new_chunk(keys.iter().copied().collect());
            queue.chunks.push_back(chunk);
            if let Some(store) = (queue.store.clone()).filter(|_| i + queue.held_chunks < count) {
                // One the store refuses stays in memory: `store_cold` tries it again.
                let _ = queue.store_chunk(i, &store);
            }
        }
        queue
    }

    /// The smallest key.
    pub(crate) fn first(&self) -> Option<&Expiring> {
        self.chunks.front()?.first()
    }

    /// Removes and returns the smallest key.
    pub(crate) fn pop_first(&mut self) -> Option<Expiring> {
        let chunk = self.open(0)?;
        let key = chunk.pop_front()?;
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        self.len -= 1;
        self.held_keys -= 1;
        Some(key)
    }

    /// Every key, in order (stored chunks are read back one at a time, and not kept).
    pub(crate) fn iter(&self) -> impl Iterator<Item = Expiring> + '_ {
        self.chunks.iter().flat_map(Chunk::keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn key(expiry: u64, id: u8) -> Expiring {
        (expiry, Hash::digest(&[id]))
    }

    /// The invariant, and the same keys as `model` in the same order.
    fn check(queue: &ByExpiry, model: &BTreeSet<Expiring>) {
        assert_eq!(queue.len(), model.len());
        assert!(queue.iter().eq(model.iter().copied()));
        assert_eq!(queue.first(), model.first());
        let mut held = 0;
        for chunk in &queue.chunks {
            match chunk {
                Chunk::Held { keys, .. } => {
                    assert!(!keys.is_empty() && keys.len() <= CHUNK);
                    held += keys.len();
                }
                Chunk::Stored { stored, pending } => {
                    let keys = stored.keys();
                    assert_eq!(keys.front(), Some(&stored.first));
                    assert_eq!(keys.len(), stored.len as usize);
                    assert!(!keys.is_empty() && keys.len() <= CHUNK && pending.len() <= PENDING);
                    assert!(pending.is_sorted());
                    held += pending.len();
                }
            }
        }
        assert_eq!(queue.held_len(), held);
    }

    /// A store in memory that counts what it holds, and can be made to refuse or to give
    /// back other bytes than it was given.
    #[derive(Debug, Default)]
    struct Slots {
        held: Mutex<HashMap<u64, Vec<u8>>>,
        next: Mutex<u64>,
        refuse: AtomicBool,
        loads: AtomicUsize,
    }

    impl Slots {
        fn len(&self) -> usize {
            self.held.lock().unwrap().len()
        }
    }

    impl ExpiryStore for Slots {
        fn put(&self, bytes: &[u8]) -> std::io::Result<u64> {
            assert!(bytes.len() <= EXPIRY_CHUNK_BYTES);
            if self.refuse.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("full"));
            }
            let mut next = self.next.lock().unwrap();
            *next += 1;
            self.held.lock().unwrap().insert(*next, bytes.to_vec());
            Ok(*next)
        }

        fn load(&self, location: u64, len: usize) -> Vec<u8> {
            self.loads.fetch_add(1, Ordering::Relaxed);
            let held = self.held.lock().unwrap();
            let bytes = held.get(&location).expect("a place given and not freed");
            bytes[..len.min(bytes.len())].to_vec()
        }

        fn free(&self, location: u64) {
            assert!(
                self.held.lock().unwrap().remove(&location).is_some(),
                "freed twice"
            );
        }

        fn fail(&self, location: u64) -> ! {
            panic!("the chunk at {location} is not what was put there")
        }
    }

    /// Chunks of `queue` in its store.
    fn stored(queue: &ByExpiry) -> usize {
        (queue.chunks.iter())
            .filter(|c| matches!(c, Chunk::Stored { .. }))
            .count()
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
            let mut queue = ByExpiry::from_keys(keys, None);
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
        assert!(queue.chunks.iter().all(|c| matches!(c,
            Chunk::Held { keys, .. } if keys.len() == CHUNK && keys.capacity() == CHUNK)));
    }

    proptest! {
        /// With a store and a few chunks in memory, moved out after every step, it holds
        /// what an ordered set holds; the store holds exactly the chunks stored, so that a
        /// chunk read back, or retired, gives its place back. Keys are added once each, as
        /// grants are.
        #[test]
        fn with_a_store_it_holds_what_an_ordered_set_holds(
            held in 0usize..3,
            steps in prop::collection::vec((0u64..4, 0u64..2_000, 0usize..1_500), 1..30),
        ) {
            let slots = Arc::new(Slots::default());
            let mut queue = ByExpiry::default();
            queue.keep_in(slots.clone(), held);
            let mut model = BTreeSet::new();
            let mut clock = 0;
            let mut ids = 0u64..;
            let mut id = || Hash::digest(&ids.next().unwrap_or_default().to_be_bytes());
            for (kind, expiry, count) in steps {
                match kind {
                    // A block's worth of grants of one lifetime, after the rest.
                    0 => {
                        clock += expiry;
                        for _ in 0..count {
                            let k = (clock, id());
                            queue.insert(k);
                            model.insert(k);
                        }
                    }
                    // Grants of a few lifetimes, in the middle.
                    1 => {
                        for i in 0..count {
                            let k = (expiry + (i as u64 * 7) % 300, id());
                            queue.insert(k);
                            model.insert(k);
                        }
                    }
                    // Grants of lifetimes anywhere.
                    2 => {
                        for i in 0..count as u64 {
                            let k = ((expiry * 7919 + i * 104_729) % (clock + 2_000), id());
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
                prop_assert!(queue.store_cold().is_none());
                let in_memory = queue.chunks.len() - stored(&queue);
                prop_assert!(in_memory <= held);
                prop_assert_eq!(slots.len(), stored(&queue));
                prop_assert_eq!(queue.held_len() + (queue.chunks.iter())
                    .filter_map(|c| match c { Chunk::Stored { stored, .. } => Some(stored.len as usize), _ => None })
                    .sum::<usize>(), queue.len());
                check(&queue, &model);
            }
            drop(queue);
            prop_assert_eq!(slots.len(), 0);
        }
    }

    fn keys(n: u64) -> Vec<Expiring> {
        (0..n)
            .map(|i| (i / 3, Hash::digest(&i.to_be_bytes())))
            .collect()
    }

    #[test]
    fn built_in_a_store_it_keeps_only_the_last_chunks_in_memory() {
        let slots = Arc::new(Slots::default());
        let all = keys(10 * CHUNK as u64 + 7);
        let queue = ByExpiry::from_keys(all.clone(), Some((slots.clone(), 2)));
        assert_eq!(queue.chunks.len(), 11);
        assert_eq!(stored(&queue), 9);
        assert_eq!(slots.len(), 9);
        assert_eq!(queue.held_len(), CHUNK + 7);
        assert!(queue.iter().eq(ByExpiry::from_keys(all, None).iter()));
    }

    #[test]
    fn a_store_that_refuses_leaves_the_chunks_in_memory() {
        let slots = Arc::new(Slots::default());
        slots.refuse.store(true, Ordering::Relaxed);
        let mut queue = ByExpiry::from_keys(keys(4 * CHUNK as u64), Some((slots.clone(), 1)));
        assert_eq!(stored(&queue), 0);
        assert!(queue.store_cold().is_some());
        assert_eq!(queue.held_len(), queue.len());
        // Once it takes them again, they go.
        slots.refuse.store(false, Ordering::Relaxed);
        assert!(queue.store_cold().is_none());
        assert_eq!(stored(&queue), 3);
    }

    #[test]
    fn versions_share_stored_chunks_until_both_are_done_with_them() {
        let slots = Arc::new(Slots::default());
        let mut queue = ByExpiry::from_keys(keys(3 * CHUNK as u64), Some((slots.clone(), 0)));
        assert_eq!(slots.len(), 3);
        let copy = queue.clone();
        // Retiring the first chunk from one version reads it back; the other still reads it.
        for _ in 0..CHUNK {
            queue.pop_first();
        }
        assert_eq!(slots.len(), 3);
        assert_eq!(copy.iter().count(), 3 * CHUNK);
        drop(copy);
        assert_eq!(slots.len(), 2);
    }

    #[test]
    fn keys_falling_in_stored_chunks_cost_a_read_per_pending_keys() {
        let slots = Arc::new(Slots::default());
        let mut queue = ByExpiry::from_keys(keys(8 * CHUNK as u64), Some((slots.clone(), 0)));
        assert_eq!(stored(&queue), 8);
        let firsts: Vec<Expiring> = queue
            .chunks
            .iter()
            .filter_map(|c| c.first().copied())
            .collect();
        // Keys of other lifetimes falling in every stored chunk, as many as each takes
        // pending: none is read back.
        let mut added = 0u64;
        for first in &firsts {
            for _ in 0..PENDING {
                added += 1;
                queue.insert((first.0 + 50, Hash::digest(&added.to_le_bytes())));
            }
        }
        assert_eq!(slots.loads.load(Ordering::Relaxed), 0);
        assert_eq!(stored(&queue), 8);
        assert_eq!(queue.held_len(), 8 * PENDING);
        // One more in the fourth chunk reads it back, with its pending keys, cut in two.
        queue.insert((firsts[3].0 + 50, Hash::digest(b"one more")));
        assert_eq!(slots.loads.load(Ordering::Relaxed), 1);
        assert_eq!(queue.chunks.len(), 9);
        assert!(queue.chunks.iter().all(|c| c.len() >= CHUNK / 2));
        assert_eq!(queue.len(), 8 * CHUNK + 8 * PENDING + 1);
        assert_eq!(queue.iter().count(), queue.len());
        assert!(queue.iter().is_sorted());
    }

    #[test]
    fn a_key_added_again_while_its_chunk_is_stored_stays_once() {
        let slots = Arc::new(Slots::default());
        let mut all = keys(CHUNK as u64);
        all.sort_unstable();
        let mut queue = ByExpiry::from_keys(all.clone(), Some((slots.clone(), 0)));
        queue.insert(all[7]);
        // Counted until the chunk is read back.
        assert_eq!(queue.len(), CHUNK + 1);
        assert!(queue.iter().eq(all.iter().copied()));
        assert_eq!(queue.pop_first(), Some(all[0]));
        assert_eq!(queue.len(), CHUNK - 1);
        assert_eq!(queue.held_len(), CHUNK - 1);
    }

    /// A queue of two stored chunks whose first is read back and full again: what follows
    /// it is stored. Expiries 0, 10, 20, ...
    fn full_before_stored() -> (Arc<Slots>, ByExpiry, Vec<Expiring>) {
        let slots = Arc::new(Slots::default());
        let all: Vec<Expiring> = (0..2 * CHUNK as u64)
            .map(|i| (i * 10, Hash::digest(&i.to_be_bytes())))
            .collect();
        let mut queue = ByExpiry::from_keys(all.clone(), Some((slots.clone(), 0)));
        assert_eq!(queue.pop_first(), Some(all[0]));
        queue.insert(all[0]);
        assert!(matches!(&queue.chunks[0], Chunk::Held { keys, .. } if keys.len() == CHUNK));
        assert!(matches!(&queue.chunks[1], Chunk::Stored { .. }));
        (slots, queue, all)
    }

    #[test]
    fn a_full_chunk_passes_its_largest_key_to_a_stored_next_one_without_reading_it() {
        // Below everything, in the middle, and past the chunk's last key but before the
        // stored chunk's first.
        let cases: [fn(&[Expiring]) -> Expiring; 3] = [
            |_| (0, Hash([0; 32])),
            |all| (all[10].0 + 5, Hash([1; 32])),
            |all| (all[CHUNK - 1].0 + 5, Hash([2; 32])),
        ];
        for case in cases {
            let (slots, mut queue, all) = full_before_stored();
            let key = case(&all);
            queue.insert(key);
            assert_eq!(
                slots.loads.load(Ordering::Relaxed),
                1,
                "only the first read back"
            );
            let lens: Vec<usize> = queue.chunks.iter().map(Chunk::len).collect();
            assert_eq!(lens, [CHUNK, CHUNK + 1]);
            let mut model: BTreeSet<Expiring> = all.iter().copied().collect();
            model.insert(key);
            check(&queue, &model);
        }
        // Once the stored one takes no more, it is read back, the keys merged in, and cut
        // in two.
        let (slots, mut queue, all) = full_before_stored();
        let mut model: BTreeSet<Expiring> = all.iter().copied().collect();
        for i in 0..=PENDING as u8 {
            let key = (all[20].0 + 1, Hash([i; 32]));
            queue.insert(key);
            model.insert(key);
        }
        assert_eq!(slots.loads.load(Ordering::Relaxed), 2);
        let lens: Vec<usize> = queue.chunks.iter().map(Chunk::len).collect();
        assert_eq!(
            lens,
            [CHUNK, (CHUNK + PENDING) / 2 + 1, (CHUNK + PENDING) / 2]
        );
        check(&queue, &model);
    }

    #[test]
    fn a_key_below_a_stored_front_chunk_is_first_without_reading_it() {
        let slots = Arc::new(Slots::default());
        let mut all = keys(2 * CHUNK as u64);
        all.sort_unstable();
        let mut queue = ByExpiry::from_keys(all.clone(), Some((slots.clone(), 0)));
        let lowest = (0, Hash([0; 32]));
        queue.insert(lowest);
        assert_eq!(queue.first(), Some(&lowest));
        assert_eq!(slots.loads.load(Ordering::Relaxed), 0);
        assert_eq!(queue.pop_first(), Some(lowest));
        assert_eq!(queue.pop_first(), Some(all[0]));
        assert_eq!(queue.len(), 2 * CHUNK - 1);
    }

    #[test]
    fn a_key_pending_twice_is_counted_once() {
        let slots = Arc::new(Slots::default());
        let mut queue = ByExpiry::from_keys(keys(CHUNK as u64), Some((slots.clone(), 0)));
        let key = (100, Hash::digest(b"pending"));
        queue.insert(key);
        queue.insert(key);
        assert_eq!(queue.len(), CHUNK + 1);
        assert_eq!(queue.held_len(), 1);
        assert_eq!(queue.iter().filter(|k| *k == key).count(), 1);
    }

    #[test]
    #[should_panic(expected = "is not what was put there")]
    fn a_chunk_changed_in_its_store_is_refused() {
        let slots = Arc::new(Slots::default());
        let mut queue = ByExpiry::from_keys(keys(2 * CHUNK as u64), Some((slots.clone(), 0)));
        for bytes in slots.held.lock().unwrap().values_mut() {
            bytes[0] ^= 1;
        }
        queue.pop_first();
    }
}
