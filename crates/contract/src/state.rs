//! The contract state held in memory, with its sparse Merkle commitment and the right edge
//! of its access log (the log's leaves and interior hashes are the storage layer's).

use crate::by_expiry::{ByExpiry, ExpiryStore};
use crate::entries::{
    AccessGrant, Account, CorruptEntry, Listing, LogHead, StateKey, StateValue, Subscription,
};
use crate::proof::StateProof;
use secnet_merkle::Digest;
use secnet_merkle::log::Frontier;
use secnet_merkle::smt::{Evictable, Eviction, SparseMerkleTree, SubtreeStore};
use secnet_types::{AccountId, Genesis, GrantId, Hash};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The last applied block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainTip {
    /// Height of the last applied block (0 at genesis).
    pub height: u64,
    /// Its hash (at height 0, the hash of [`Genesis::block`]).
    pub block_hash: Hash,
    /// Its timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The state root after it.
    pub state_root: Hash,
}

/// The whole contract state.
///
/// The state tree is where the entries are: each leaf keeps its entry's value bytes, which
/// are read (and decoded) from there. Only the accounts, which every transaction reads, are
/// also kept decoded, and the grants' keys in order of expiry, which each block walks to
/// retire the expired ones (they leave an hour after expiry, so these are as many as a few
/// hours of requests). Nothing else grows in memory with the state: listings and
/// subscriptions are found through the tree by key, and listed in order by the ledger that
/// stores the entries (`secnet-ledger`).
///
/// INVARIANT: `tree` holds exactly one leaf per entry (the accounts, the listings and an
/// address for each, the subscriptions, the grants in `expiring`, and the log head once the
/// log is non-empty), keyed by [`StateKey::tree_key`], with the SHA-256 of the value bytes
/// and the bytes themselves; while a block is applied, `staged` holds what it wrote that the
/// tree does not have yet.
#[derive(Debug, Clone)]
pub struct State {
    pub(crate) chain_id: String,
    pub(crate) tip: ChainTip,
    pub(crate) accounts: BTreeMap<AccountId, Account>,
    /// The grants by expiry.
    pub(crate) expiring: ByExpiry,
    /// The access log's right edge: its size and root.
    pub(crate) log: Frontier,
    pub(crate) tree: StateTree,
    /// Entries the block being applied wrote (`None`: removed), until they go into the tree
    /// at its end; empty between blocks.
    pub(crate) staged: BTreeMap<StateKey, Option<StateValue>>,
}

/// What a [`State`] keeps in memory, counted by kind: what an operator watches to see what
/// a node's memory grows with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footprint {
    /// Entries in the state.
    pub entries: usize,
    /// Of them, those whose leaves the state tree holds in memory (the rest are in its
    /// stores).
    pub entries_in_memory: usize,
    /// Subtrees the tree's stores hold, outside groups: each keeps about 160 bytes in
    /// memory (its node and its share of the nodes above it).
    pub stored_subtrees: usize,
    /// Groups of such subtrees whose places the stores hold too: one node in memory for
    /// about eight subtrees.
    pub stored_groups: usize,
    /// Entries in subtrees a store before the current one holds, still to move over.
    #[serde(default)]
    pub entries_moving: usize,
    /// Accounts, kept decoded.
    pub accounts: usize,
    /// Grants, each kept by its expiry until it is retired.
    pub grants_by_expiry: usize,
    /// Of them, those whose keys are in memory (the rest are in the queue's store).
    pub grants_by_expiry_in_memory: usize,
}

/// The state commitment: one leaf per entry, keeping the entry's value bytes beside it so
/// that a snapshot alone can prove any entry.
pub(crate) type StateTree = SparseMerkleTree<Arc<[u8]>>;

/// Where the state tree keeps the subtrees it moves out of memory: each entry with its
/// value bytes.
pub type TreeStore = dyn SubtreeStore<Arc<[u8]>>;

/// About how many entries a subtree the state tree moves out of memory holds (between this
/// and twice this on average; never more than sixteen times this, however keys crowd).
/// Fewer make more of them to keep track of in memory (a stored subtree and the node above
/// it are about 160 bytes, about 12 in a group of eight); more make every read of one
/// entry, and every write back after one changed, larger (the README has what `bench
/// apply` measured with 16 and with 4).
pub const STORED_SUBTREE_ENTRIES: usize = 4;

/// The state tree as it was after one height: enough to prove any entry as of then.
///
/// Taking one is O(1) (the tree's nodes are shared); keeping it costs only the nodes that
/// later blocks replace.
#[derive(Debug, Clone)]
pub struct StateSnapshot {
    height: u64,
    tree: StateTree,
}

/// The state tree's leaves of `entries`: tree key, value hash and value bytes.
fn leaves_of(entries: Vec<(StateKey, StateValue)>) -> Vec<(Digest, Digest, Arc<[u8]>)> {
    entries
        .into_iter()
        .map(|(k, v)| {
            let bytes = v.to_bytes();
            (k.tree_key().0, Hash::digest(&bytes).0, Arc::from(bytes))
        })
        .collect()
}

/// Rebuilds a [`State`] from its stored entries a part of the key space at a time: each
/// batch's tree keys ([`StateKey::tree_key`]) come after every earlier batch's, so that a
/// tree kept in a store ([`Self::keep_tree_in`]) can move each part out of memory
/// ([`Self::evict`]) before the next is read, and loading never holds much more than one
/// part. [`State::from_entries`] is one batch.
#[derive(Debug)]
pub struct StateLoader {
    state: State,
    log_head: Option<LogHead>,
    /// The grants' keys by expiry, in the order loaded (random: by tree key).
    expiring: Vec<(u64, GrantId)>,
    /// The largest tree key added so far.
    last: Option<Digest>,
    /// Where the grants by expiry go, and how many of their chunks stay in memory.
    expiry_store: Option<(Arc<dyn ExpiryStore>, usize)>,
}

impl StateLoader {
    /// Nothing loaded yet of the state after `tip`, whose access log's right edge is `log`.
    pub fn new(chain_id: String, tip: ChainTip, log: Frontier) -> StateLoader {
        StateLoader {
            state: State {
                chain_id,
                tip,
                accounts: BTreeMap::new(),
                expiring: ByExpiry::default(),
                log,
                tree: StateTree::default(),
                staged: BTreeMap::new(),
            },
            log_head: None,
            expiring: Vec::new(),
            last: None,
            expiry_store: None,
        }
    }

    /// Keeps the grants by expiry in `store` from now on, as [`State::keep_grants_in`]
    /// does: the queue is built there as it is made.
    pub fn keep_grants_in(&mut self, store: Arc<dyn ExpiryStore>, held_chunks: usize) {
        self.expiry_store = Some((store, held_chunks));
    }

    /// Keeps the tree in `store` from now on, as [`State::keep_tree_in`] does, moving out
    /// subtrees the size they will have once the `expected_entries` are loaded.
    pub fn keep_tree_in(
        &mut self,
        store: Arc<TreeStore>,
        opened_entries: usize,
        expected_entries: usize,
    ) {
        self.state.keep_tree_in(store, opened_entries);
        self.state.tree.expect_len(expected_entries);
    }

    /// Adds `entries`, whose tree keys must all come after those of every entry added
    /// before; refuses a value of the wrong kind for its key, and a batch out of order.
    pub fn add(&mut self, entries: Vec<(StateKey, StateValue)>) -> Result<(), CorruptEntry> {
        for (key, value) in &entries {
            match (key, value) {
                (StateKey::Account(k), StateValue::Account(v)) => {
                    self.state.accounts.insert(*k, v.clone());
                }
                (StateKey::Listing(_), StateValue::Listing(_))
                | (StateKey::Address(_), StateValue::Address(_))
                | (StateKey::Subscription(..), StateValue::Subscription(_)) => {}
                (StateKey::Grant(k), StateValue::Grant(v)) => {
                    self.expiring.push((v.expires_at_ms, *k));
                }
                (StateKey::LogHead, StateValue::LogHead(v)) => self.log_head = Some(*v),
                (key, _) => {
                    return Err(CorruptEntry(format!(
                        "value of the wrong kind under {key:?}"
                    )));
                }
            }
        }
        let mut leaves = leaves_of(entries);
        leaves.sort_by_key(|(key, _, _)| *key);
        let (Some(first), Some(last)) = (leaves.first(), leaves.last()) else {
            return Ok(());
        };
        if self.last.is_some_and(|before| first.0 <= before) {
            return Err(CorruptEntry(
                "entries loaded out of order of their tree keys".into(),
            ));
        }
        self.last = Some(last.0);
        self.state.tree.apply_with(
            leaves
                .into_iter()
                .map(|(key, hash, bytes)| (key, Some((hash, bytes))))
                .collect(),
        );
        Ok(())
    }

    /// How many entries the tree holds in memory.
    pub fn resident_entries(&self) -> usize {
        self.state.tree.resident()
    }

    /// Moves subtrees of the tree to its store, walking the key space from the tree key
    /// `start` until `max` entries have moved (see [`SparseMerkleTree::evict`]).
    pub fn evict(&mut self, start: &Digest, max: usize) -> Eviction {
        self.state.tree.evict(Evictable::All, start, max)
    }

    /// The state: its root recomputed from the entries added, which the caller compares
    /// with the root it stored. Refuses a log that is not the one the stored log head
    /// names.
    pub fn finish(mut self) -> Result<State, CorruptEntry> {
        let log = &self.state.log;
        let (head_size, head_root) = self
            .log_head
            .map_or((0, None), |h| (h.size, Some(h.root.0)));
        let log_root = (!log.is_empty()).then(|| log.root());
        if head_size != log.len() || head_root != log_root {
            return Err(CorruptEntry(format!(
                "stored log head (size {head_size}) does not match the stored log of {} leaves",
                log.len()
            )));
        }
        self.state.tip.state_root = Hash(self.state.tree.root());
        self.state.expiring = ByExpiry::from_keys(self.expiring, self.expiry_store);
        Ok(self.state)
    }
}

/// The value under `key` in `tree`, decoded.
fn value_in(tree: &StateTree, key: &StateKey) -> Option<StateValue> {
    tree.with_payload(&key.tree_key().0, |bytes| {
        // INVARIANT: the tree holds only bytes `StateValue::to_bytes` made for this key
        // (checked against the root when loaded); they decode.
        let value = StateValue::from_bytes(key, bytes);
        debug_assert!(value.is_ok(), "undecodable state entry under {key:?}");
        value.ok()
    })?
}

impl StateSnapshot {
    /// The height this snapshot is the state after.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// Its state root.
    pub fn state_root(&self) -> Hash {
        Hash(self.tree.root())
    }

    /// The stored bytes ([`StateValue::to_bytes`]) of the value under the key whose bytes
    /// ([`StateKey::to_bytes`]) are `key`, as of this height; `None` if there is none.
    pub fn value_bytes(&self, key: &[u8]) -> Option<Arc<[u8]>> {
        self.tree.payload(&StateKey::tree_key_of(key).0)
    }

    /// The value under `key` as of this height, decoded.
    pub fn get(&self, key: &StateKey) -> Option<StateValue> {
        value_in(&self.tree, key)
    }

    /// The listing of `hash` as of this height.
    pub fn listing(&self, hash: &Hash) -> Option<Listing> {
        self.get(&StateKey::Listing(*hash))?.into_listing()
    }

    /// The listing registered at `address` as of this height.
    pub fn listing_at(&self, address: &str) -> Option<Listing> {
        let hash = self
            .get(&StateKey::Address(address.to_string()))?
            .into_address()?;
        self.listing(&hash)
    }

    /// A grant as of this height.
    pub fn grant(&self, id: &GrantId) -> Option<AccessGrant> {
        self.get(&StateKey::Grant(*id))?.into_grant()
    }

    /// A proof of the value under `key` (or of its absence) as of this height.
    pub fn prove(&self, key: &StateKey) -> StateProof {
        let tree_key = key.tree_key().0;
        StateProof {
            height: self.height,
            state_root: self.state_root(),
            key: key.clone(),
            value: self.tree.payload(&tree_key).map(|v| v.to_vec()),
            proof: self.tree.prove(&tree_key),
        }
    }
}

impl State {
    /// The state at height 0. The genesis must be valid ([`Genesis::validate`]).
    pub fn genesis(genesis: &Genesis) -> State {
        let entries = State::genesis_entries(genesis);
        let accounts = entries
            .iter()
            .filter_map(|(key, value)| match (key, value) {
                (StateKey::Account(k), StateValue::Account(v)) => Some((*k, v.clone())),
                _ => None,
            })
            .collect();
        let mut state = State {
            chain_id: genesis.chain_id.clone(),
            tip: ChainTip {
                height: 0,
                block_hash: genesis.block().hash(),
                timestamp_ms: genesis.genesis_time_ms,
                state_root: Hash::ZERO,
            },
            accounts,
            expiring: ByExpiry::default(),
            log: Frontier::default(),
            tree: StateTree::default(),
            staged: BTreeMap::new(),
        };
        state.build_tree(entries);
        state
    }

    /// The entries of the state at height 0: an account for each allocation, in key order.
    pub fn genesis_entries(genesis: &Genesis) -> Vec<(StateKey, StateValue)> {
        let accounts: BTreeMap<AccountId, Account> = genesis
            .allocations
            .iter()
            .map(|a| {
                (
                    a.account,
                    Account {
                        balance: a.balance,
                        ..Account::default()
                    },
                )
            })
            .collect();
        accounts
            .into_iter()
            .map(|(k, v)| (StateKey::Account(k), StateValue::Account(v)))
            .collect()
    }

    /// Rebuilds a state from its stored entries, the right edge of its access log and tip.
    ///
    /// The state root is recomputed from the entries; the caller compares it with the root
    /// it stored to detect corruption. The log must be the one the stored log head names.
    pub fn from_entries(
        chain_id: String,
        tip: ChainTip,
        entries: impl IntoIterator<Item = (StateKey, StateValue)>,
        log: Frontier,
    ) -> Result<State, CorruptEntry> {
        let mut loader = StateLoader::new(chain_id, tip, log);
        loader.add(entries.into_iter().collect())?;
        loader.finish()
    }

    /// Makes the tree hold exactly `entries`, and the tip commit to it.
    fn build_tree(&mut self, entries: Vec<(StateKey, StateValue)>) {
        self.tree = StateTree::from_entries_with(leaves_of(entries));
        self.tip.state_root = Hash(self.tree.root());
    }

    /// How many entries the state holds.
    pub fn entry_count(&self) -> usize {
        self.tree.len()
    }

    /// From now on, subtrees of the state tree move to `store` when [`Self::evict`] says so,
    /// a stored subtree a block changes is written back to it at once, and subtrees read
    /// back whole from it (by proofs) are kept for later reads and proofs until they hold
    /// `opened_entries` entries (see [`SparseMerkleTree::with_store`]).
    pub fn keep_tree_in(&mut self, store: Arc<TreeStore>, opened_entries: usize) {
        self.tree = std::mem::take(&mut self.tree).with_store(
            store,
            STORED_SUBTREE_ENTRIES,
            opened_entries,
        );
    }

    /// Keeps the grants by expiry (what blocks retire expired grants from) in `store` from
    /// now on, all but the `held_chunks` chunks of 512 that blocks touched last: once moved
    /// ([`Self::store_cold_grants`]), a chunk keeps about 120 bytes of memory for its 256 to
    /// 512 grants, and up to 32 grants added since it was stored, 40 bytes each, until a
    /// block reads it back.
    pub fn keep_grants_in(&mut self, store: Arc<dyn ExpiryStore>, held_chunks: usize) {
        self.expiring.keep_in(store, held_chunks);
    }

    /// Moves the chunks of grants by expiry that blocks did not touch lately to their store
    /// (see [`Self::keep_grants_in`]); a chunk the store refuses stays in memory, and the
    /// first refusal is returned.
    pub fn store_cold_grants(&mut self) -> Option<std::io::Error> {
        self.expiring.store_cold()
    }

    /// How many entries the state tree holds in memory; the rest are in its stores.
    pub fn resident_entries(&self) -> usize {
        self.tree.resident()
    }

    /// What the state keeps in memory, counted by kind.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            entries: self.tree.len(),
            entries_in_memory: self.tree.resident(),
            stored_subtrees: self.tree.stored_subtrees(),
            stored_groups: self.tree.stored_groups(),
            entries_moving: self.entries_in_earlier_stores(),
            accounts: self.accounts.len(),
            grants_by_expiry: self.expiring.len(),
            grants_by_expiry_in_memory: self.expiring.held_len(),
        }
    }

    /// How many entries are in subtrees that stores before the current one hold (see
    /// [`SparseMerkleTree::elsewhere`]).
    pub fn entries_in_earlier_stores(&self) -> usize {
        self.tree.elsewhere()
    }

    /// Why the state tree's store refused a subtree a block wrote back (it stayed in
    /// memory), if it did since this was last asked.
    pub fn take_refused_write_back(&mut self) -> Option<secnet_merkle::smt::StoreError> {
        self.tree.take_refused_write_back()
    }

    /// The bytes the state tree's subtrees take in its current store (see
    /// [`SparseMerkleTree::stored_bytes`]).
    pub fn stored_bytes(&self) -> u64 {
        self.tree.stored_bytes()
    }

    /// Moves subtrees of about [`STORED_SUBTREE_ENTRIES`] entries out of memory, those the
    /// state as of `unchanged_since` shares with this one (`None`: none, only the subtrees
    /// an earlier store holds move to the current one), walking the key space from the tree
    /// key `start` until `max` entries have moved (see [`SparseMerkleTree::evict`]). Nothing
    /// it answers changes. Between blocks only.
    pub fn evict(
        &mut self,
        unchanged_since: Option<&StateSnapshot>,
        start: &Digest,
        max: usize,
    ) -> Eviction {
        let evictable = match unchanged_since {
            Some(snapshot) => Evictable::UnchangedSince(&snapshot.tree),
            None => Evictable::None,
        };
        self.tree.evict(evictable, start, max)
    }

    /// Hints to the spill files before the current one what the next moves read (see
    /// [`SparseMerkleTree::prefetch_moves`]): the records [`Self::evict`] with `None` from the
    /// tree key `start` would read to move `max` entries (of a group, its subtrees' if their
    /// places are kept or `open_groups`, else its own record). Returns where that move would
    /// stop.
    pub fn prefetch_moves(&self, start: &Digest, max: usize, open_groups: bool) -> Digest {
        self.tree.prefetch_moves(start, max, open_groups)
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &StateKey) -> Option<StateValue> {
        match key {
            StateKey::Account(k) => self.accounts.get(k).cloned().map(StateValue::Account),
            StateKey::LogHead => self.log_head().map(StateValue::LogHead),
            _ => match self.staged.get(key) {
                Some(staged) => staged.clone(),
                None => value_in(&self.tree, key),
            },
        }
    }

    /// Whether there is a value under `key`, without decoding it.
    pub(crate) fn contains(&self, key: &StateKey) -> bool {
        match self.staged.get(key) {
            Some(staged) => staged.is_some(),
            None => self.tree.get(&key.tree_key().0).is_some(),
        }
    }

    /// Writes `value` under `key` (`None`: removes it) in the block being applied.
    pub(crate) fn stage(&mut self, key: StateKey, value: Option<StateValue>) {
        self.staged.insert(key, value);
    }

    /// A proof of the value under `key` (or of its absence) against the current state root.
    pub fn prove(&self, key: &StateKey) -> StateProof {
        self.snapshot().prove(key)
    }

    /// The state tree as of the last applied block, to prove entries later.
    pub fn snapshot(&self) -> StateSnapshot {
        StateSnapshot {
            height: self.tip.height,
            tree: self.tree.clone(),
        }
    }

    /// The network's chain id.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// The last applied block.
    pub fn tip(&self) -> ChainTip {
        self.tip
    }

    /// The state root after the last applied block.
    pub fn state_root(&self) -> Hash {
        self.tip.state_root
    }

    /// An account (absent accounts have zero balance and nonce).
    pub fn account(&self, id: &AccountId) -> Account {
        self.accounts.get(id).cloned().unwrap_or_default()
    }

    /// All accounts.
    pub fn accounts(&self) -> impl Iterator<Item = (&AccountId, &Account)> {
        self.accounts.iter()
    }

    /// A listing by content hash.
    pub fn listing(&self, hash: &Hash) -> Option<Listing> {
        self.get(&StateKey::Listing(*hash))?.into_listing()
    }

    /// Whether `hash` is registered (not withdrawn).
    pub fn is_listed(&self, hash: &Hash) -> bool {
        self.contains(&StateKey::Listing(*hash))
    }

    /// A listing by address.
    pub fn listing_at(&self, address: &str) -> Option<Listing> {
        let hash = self
            .get(&StateKey::Address(address.to_string()))?
            .into_address()?;
        self.listing(&hash)
    }

    /// `account`'s subscription to `hash`, whichever registration it paid for.
    pub fn subscription(&self, hash: &Hash, account: &AccountId) -> Option<Subscription> {
        match self.get(&StateKey::Subscription(*hash, *account))? {
            StateValue::Subscription(s) => Some(s),
            _ => None,
        }
    }

    /// Whether `account` holds a subscription to the current registration of `hash`.
    pub fn is_subscribed(&self, hash: &Hash, account: &AccountId) -> bool {
        self.listing(hash)
            .is_some_and(|listing| self.is_subscribed_to(&listing, account))
    }

    /// Whether `account` holds a subscription to `listing`, a current registration (one
    /// paid for an earlier registration of its hash does not count).
    pub fn is_subscribed_to(&self, listing: &Listing, account: &AccountId) -> bool {
        self.subscription(&listing.hash, account)
            .is_some_and(|sub| sub.listing == listing.id)
    }

    /// A grant.
    pub fn grant(&self, id: &GrantId) -> Option<AccessGrant> {
        self.get(&StateKey::Grant(*id))?.into_grant()
    }

    /// All grants, in order of expiry.
    pub fn grants(&self) -> impl Iterator<Item = AccessGrant> + '_ {
        self.expiring.iter().filter_map(|(_, id)| self.grant(&id))
    }

    /// The access log's right edge: its size and root (its leaves and the interior hashes
    /// that prove them are stored by the ledger).
    pub fn log(&self) -> &Frontier {
        &self.log
    }

    /// The access log's head, once it has leaves.
    pub fn log_head(&self) -> Option<LogHead> {
        (!self.log.is_empty()).then(|| LogHead {
            size: self.log.len(),
            root: Hash(self.log.root()),
        })
    }

    /// The sum of all balances; constant from genesis on.
    pub fn total_balance(&self) -> u128 {
        self.accounts.values().map(|a| u128::from(a.balance)).sum()
    }
}
