//! The contract state held in memory, with its sparse Merkle commitment and the right edge
//! of its access log (the log's leaves and interior hashes are the storage layer's).

use crate::entries::{
    AccessGrant, Account, CorruptEntry, Listing, LogHead, StateKey, StateValue, Subscription,
};
use crate::index::{self, INDEXES, Index, Row};
use crate::proof::StateProof;
use secnet_merkle::log::Frontier;
use secnet_merkle::smt::{Evictable, SparseMerkleTree, StoreError, SubtreeStore};
use secnet_types::{AccountId, Genesis, GrantId, Hash};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
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
/// also kept decoded; for the other kinds the keys are kept in the orders the contract and
/// its readers walk them in, in indexes that can move out of memory like the tree
/// ([`crate::index`]).
///
/// INVARIANT: `tree` holds exactly one leaf per entry (the accounts, the listings in
/// [`Index::Listed`] and [`Index::Owned`] and an address for each, the subscriptions in
/// [`Index::Subscribed`], the grants in [`Index::Expiring`], and the log head once the log
/// is non-empty), keyed by [`StateKey::tree_key`], with the SHA-256 of the value bytes and
/// the bytes themselves; while a block is applied, `staged` holds what it wrote that the
/// tree does not have yet, and `staged_rows` what it changed in the indexes.
#[derive(Debug, Clone)]
pub struct State {
    pub(crate) chain_id: String,
    pub(crate) tip: ChainTip,
    pub(crate) accounts: BTreeMap<AccountId, Account>,
    /// The access log's right edge: its size and root.
    pub(crate) log: Frontier,
    pub(crate) tree: StateTree,
    pub(crate) indexes: index::Trees,
    /// Entries the block being applied wrote (`None`: removed), until they go into the tree
    /// at its end; empty between blocks.
    pub(crate) staged: BTreeMap<StateKey, Option<StateValue>>,
    /// Rows the block being applied added (`true`) or removed, in order, until they go into
    /// the indexes at its end; empty between blocks.
    pub(crate) staged_rows: Vec<(Row, bool)>,
}

/// How many trees a state keeps: the state tree and one per index.
const TREES: usize = 1 + INDEXES;

/// Where the walks of [`State::evict`] over the state's trees stopped, one per tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvictionCursor([secnet_merkle::Digest; TREES]);

impl EvictionCursor {
    /// Whether every walk is at the start of its tree: none began, or each went round.
    pub fn at_start(&self) -> bool {
        self.0.iter().all(|next| *next == [0; 32])
    }
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
/// it are about 160 bytes); more make every read of one entry, and every write back after
/// one changed, larger (the README has what `bench apply` measured with 16 and with 4).
pub const STORED_SUBTREE_ENTRIES: usize = 4;

/// The state tree as it was after one height: enough to prove any entry as of then.
///
/// Taking one is O(1) (the tree's nodes are shared, and so are the indexes'); keeping it
/// costs only the nodes that later blocks replace.
#[derive(Debug, Clone)]
pub struct StateSnapshot {
    height: u64,
    tree: StateTree,
    indexes: index::Trees,
}

impl StateSnapshot {
    /// Its trees, the state tree first, as [`State::trees_mut`] orders them.
    fn trees(&self) -> impl Iterator<Item = &StateTree> {
        std::iter::once(&self.tree).chain(self.indexes.iter())
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
        let mut state = State {
            chain_id: genesis.chain_id.clone(),
            tip: ChainTip {
                height: 0,
                block_hash: genesis.block().hash(),
                timestamp_ms: genesis.genesis_time_ms,
                state_root: Hash::ZERO,
            },
            accounts,
            log: Frontier::default(),
            tree: StateTree::default(),
            indexes: Default::default(),
            staged: BTreeMap::new(),
            staged_rows: Vec::new(),
        };
        let entries: Vec<_> = state.entries().collect();
        state.build_tree(entries);
        state
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
        let mut state = State {
            chain_id,
            tip,
            accounts: BTreeMap::new(),
            log,
            tree: StateTree::default(),
            indexes: Default::default(),
            staged: BTreeMap::new(),
            staged_rows: Vec::new(),
        };
        let mut log_head = None;
        let mut tree_entries = Vec::new();
        let mut rows = Vec::new();
        for (key, value) in entries {
            match (&key, &value) {
                (StateKey::Account(k), StateValue::Account(v)) => {
                    state.accounts.insert(*k, v.clone());
                }
                (StateKey::Listing(k), StateValue::Listing(v)) => {
                    rows.push(Row::Owned(v.owner, *k));
                    rows.push(Row::Listed(*k));
                }
                (StateKey::Address(_), StateValue::Address(_)) => {}
                (StateKey::Subscription(h, a), StateValue::Subscription(_)) => {
                    rows.push(Row::Subscribed(*h, *a));
                }
                (StateKey::Grant(k), StateValue::Grant(v)) => {
                    rows.push(Row::Expiring(v.expires_at_ms, *k));
                }
                (StateKey::LogHead, StateValue::LogHead(v)) => log_head = Some(*v),
                (key, _) => {
                    return Err(CorruptEntry(format!(
                        "value of the wrong kind under {key:?}"
                    )));
                }
            }
            tree_entries.push((key, value));
        }
        let (head_size, head_root) = log_head.map_or((0, None), |h| (h.size, Some(h.root.0)));
        let log_root = (!state.log.is_empty()).then(|| state.log.root());
        if head_size != state.log.len() || head_root != log_root {
            return Err(CorruptEntry(format!(
                "stored log head (size {head_size}) does not match the stored log of {} leaves",
                state.log.len()
            )));
        }
        state.build_tree(tree_entries);
        state.indexes = index::build(rows);
        Ok(state)
    }

    /// Makes the tree hold exactly `entries`, and the tip commit to it.
    fn build_tree(&mut self, entries: Vec<(StateKey, StateValue)>) {
        let leaves: Vec<_> = entries
            .into_iter()
            .map(|(k, v)| {
                let bytes = v.to_bytes();
                (k.tree_key().0, Hash::digest(&bytes).0, Arc::from(bytes))
            })
            .collect();
        self.tree = StateTree::from_entries_with(leaves);
        self.tip.state_root = Hash(self.tree.root());
    }

    /// Every entry, kind by kind, in key order within each kind. Decodes every value: for
    /// exports and checks, not for serving.
    pub fn entries(&self) -> impl Iterator<Item = (StateKey, StateValue)> + '_ {
        let accounts = self
            .accounts
            .iter()
            .map(|(k, v)| (StateKey::Account(*k), StateValue::Account(v.clone())));
        let mut addresses: Vec<StateKey> = self
            .listings()
            .map(|l| StateKey::Address(l.address))
            .collect();
        addresses.sort();
        let mut subscriptions = Vec::new();
        index::walk(&self.indexes, Index::Subscribed, &[0; 32], |row| {
            if let Row::Subscribed(h, a) = row {
                subscriptions.push(StateKey::Subscription(h, a));
            }
            ControlFlow::<()>::Continue(())
        });
        subscriptions.sort();
        let keys = self
            .listed_hashes()
            .map(StateKey::Listing)
            .chain(addresses)
            .chain(subscriptions)
            .chain(self.grant_ids().into_iter().map(StateKey::Grant));
        let stored = keys.filter_map(|k| self.get(&k).map(|v| (k, v)));
        let head = self
            .log_head()
            .map(|h| (StateKey::LogHead, StateValue::LogHead(h)));
        accounts.chain(stored).chain(head)
    }

    /// How many entries the state holds.
    pub fn entry_count(&self) -> usize {
        self.tree.len()
    }

    /// From now on, subtrees of the state tree move to `store` when [`Self::evict`] says so,
    /// a stored subtree a block changes is written back to it at once, and subtrees read
    /// back from it are kept for later reads until they hold `opened_entries` entries (see
    /// [`SparseMerkleTree::with_store`]).
    ///
    /// The indexes move to `store` the same way; of the subtrees read back, the state tree
    /// keeps half of `opened_entries`, and each index an eighth.
    pub fn keep_tree_in(&mut self, store: Arc<TreeStore>, opened_entries: usize) {
        self.tree = std::mem::take(&mut self.tree).with_store(
            Arc::clone(&store),
            STORED_SUBTREE_ENTRIES,
            opened_entries / 2,
        );
        for tree in &mut self.indexes {
            *tree = std::mem::take(tree).with_store(
                Arc::clone(&store),
                STORED_SUBTREE_ENTRIES,
                opened_entries / 8,
            );
        }
    }

    /// The state's trees, the state tree first, then the indexes.
    fn trees(&self) -> impl Iterator<Item = &StateTree> {
        std::iter::once(&self.tree).chain(self.indexes.iter())
    }

    /// [`Self::trees`], to change.
    fn trees_mut(&mut self) -> impl Iterator<Item = &mut StateTree> {
        std::iter::once(&mut self.tree).chain(self.indexes.iter_mut())
    }

    /// How many rows the indexes hold (see [`crate::index`]): about one per grant and
    /// subscription, two per listing.
    pub fn index_rows(&self) -> usize {
        self.indexes.iter().map(StateTree::len).sum()
    }

    /// How many entries of the state tree, and rows of the indexes, are in memory; the rest
    /// are in their stores.
    pub fn resident_entries(&self) -> usize {
        self.trees().map(StateTree::resident).sum()
    }

    /// How many entries and rows are in subtrees that stores before the current one hold
    /// (see [`SparseMerkleTree::elsewhere`]).
    pub fn entries_in_earlier_stores(&self) -> usize {
        self.trees().map(StateTree::elsewhere).sum()
    }

    /// Why the store refused a subtree a block wrote back (it stayed in memory), if it did
    /// since this was last asked.
    pub fn take_refused_write_back(&mut self) -> Option<StoreError> {
        self.trees_mut()
            .filter_map(StateTree::take_refused_write_back)
            .reduce(|first, _| first)
    }

    /// The bytes the state's trees take in their current store (see
    /// [`SparseMerkleTree::stored_bytes`]).
    pub fn stored_bytes(&self) -> u64 {
        self.trees().map(StateTree::stored_bytes).sum()
    }

    /// Moves subtrees of about [`STORED_SUBTREE_ENTRIES`] entries out of memory, those the
    /// state as of `unchanged_since` shares with this one (`None`: none, only the subtrees
    /// an earlier store holds move to the current one), until about `max` entries have
    /// moved (see [`SparseMerkleTree::evict`]). Each tree's walk starts where `cursor`
    /// says and leaves it where it stopped; `max` is shared among the trees by what each
    /// holds in memory (or, with `None`, in earlier stores). Nothing it answers changes.
    /// Between blocks only. Returns why the store refused a subtree, if it did (what moved
    /// stays moved; the walk goes on past it next time).
    pub fn evict(
        &mut self,
        unchanged_since: Option<&StateSnapshot>,
        cursor: &mut EvictionCursor,
        max: usize,
    ) -> Option<StoreError> {
        let weights: Vec<usize> = match unchanged_since {
            Some(_) => self.trees().map(StateTree::resident).collect(),
            None => self.trees().map(StateTree::elsewhere).collect(),
        };
        let total = weights.iter().sum::<usize>().max(1);
        let older: Vec<Option<&StateTree>> = match unchanged_since {
            Some(snapshot) => snapshot.trees().map(Some).collect(),
            None => vec![None; TREES],
        };
        let mut refused = None;
        for (((tree, next), weight), older) in self
            .trees_mut()
            .zip(cursor.0.iter_mut())
            .zip(weights)
            .zip(older)
        {
            if weight == 0 {
                continue;
            }
            let share = usize::try_from(max as u128 * weight as u128 / total as u128)
                .unwrap_or(max)
                .max(1);
            let evictable = match older {
                Some(older) => Evictable::UnchangedSince(older),
                None => Evictable::None,
            };
            let done = tree.evict(evictable, next, share);
            *next = done.next;
            refused = refused.or(done.refused);
        }
        refused
    }

    /// The grants' ids, in order of expiry.
    fn grants_by_expiry(&self) -> Vec<GrantId> {
        let mut ids = Vec::new();
        index::walk(&self.indexes, Index::Expiring, &[0; 32], |row| {
            if let Row::Expiring(_, id) = row {
                ids.push(id);
            }
            ControlFlow::<()>::Continue(())
        });
        ids
    }

    /// The grants' ids, in order.
    fn grant_ids(&self) -> Vec<GrantId> {
        let mut ids = self.grants_by_expiry();
        ids.sort();
        ids
    }

    /// Adds (`true`) or removes a row of an index in the block being applied.
    pub(crate) fn stage_row(&mut self, row: Row, present: bool) {
        self.staged_rows.push((row, present));
    }

    /// The grants that expired before `cutoff_ms`, by expiry, at most `max`.
    pub(crate) fn expired_grants(&self, cutoff_ms: u64, max: usize) -> Vec<(u64, GrantId)> {
        let mut expired = Vec::new();
        index::walk(&self.indexes, Index::Expiring, &[0; 32], |row| match row {
            Row::Expiring(at, id) if at < cutoff_ms && expired.len() < max => {
                expired.push((at, id));
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Break(()),
        });
        expired
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
            indexes: self.indexes.clone(),
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

    /// The content hashes of every listing, in order, decoding nothing.
    pub fn listed_hashes(&self) -> impl Iterator<Item = Hash> + '_ {
        self.listed_hashes_after(None, usize::MAX)
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

    /// All listings, in hash order.
    pub fn listings(&self) -> impl Iterator<Item = Listing> + '_ {
        self.listings_after(None, usize::MAX)
    }

    /// The content hashes of at most `limit` listings with a hash after `after` (from the
    /// first if `None`), in order, decoding nothing: the page [`Self::listings_after`] reads.
    pub fn listed_hashes_after(
        &self,
        after: Option<&Hash>,
        limit: usize,
    ) -> impl Iterator<Item = Hash> + '_ {
        let from = match after {
            None => Some([0; 32]),
            Some(after) => index::listed_after(after),
        };
        let mut hashes = Vec::new();
        if let Some(from) = from
            && limit > 0
        {
            index::walk(&self.indexes, Index::Listed, &from, |row| {
                if let Row::Listed(hash) = row {
                    hashes.push(hash);
                }
                if hashes.len() < limit {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            });
        }
        hashes.into_iter()
    }

    /// At most `limit` listings with a hash after `after` (from the first if `None`), in
    /// hash order: a page of [`Self::listings`].
    pub fn listings_after(
        &self,
        after: Option<&Hash>,
        limit: usize,
    ) -> impl Iterator<Item = Listing> + '_ {
        self.listed_hashes_after(after, limit)
            .filter_map(|h| self.listing(&h))
    }

    /// The content hashes of the listings `owner` registered, in order, decoding nothing.
    pub fn hashes_listed_by<'a>(&'a self, owner: &AccountId) -> impl Iterator<Item = Hash> + 'a {
        let mut hashes = Vec::new();
        index::walk(
            &self.indexes,
            Index::Owned,
            &index::owned_from(owner),
            |row| match row {
                Row::Owned(o, h) if o.0[..16] == owner.0[..16] => {
                    if o == *owner {
                        hashes.push(h);
                    }
                    ControlFlow::Continue(())
                }
                _ => ControlFlow::Break(()),
            },
        );
        hashes.into_iter()
    }

    /// The listings `owner` registered, in hash order (read through an index).
    pub fn listings_of<'a>(&'a self, owner: &AccountId) -> impl Iterator<Item = Listing> + 'a {
        self.hashes_listed_by(owner)
            .filter_map(|h| self.listing(&h))
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
        self.grants_by_expiry()
            .into_iter()
            .filter_map(|id| self.grant(&id))
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
