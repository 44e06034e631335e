//! The contract state held in memory, with its sparse Merkle commitment and the right edge
//! of its access log (the log's leaves and interior hashes are the storage layer's).

use crate::entries::{
    AccessGrant, Account, CorruptEntry, Listing, LogHead, StateKey, StateValue, Subscription,
};
use crate::proof::StateProof;
use secnet_merkle::log::Frontier;
use secnet_merkle::smt::SparseMerkleTree;
use secnet_types::{AccountId, Genesis, GrantId, Hash};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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
/// INVARIANT: `tree` holds exactly one leaf per entry of the maps (and the log head once the
/// log is non-empty), keyed by [`StateKey::tree_key`] with the SHA-256 of the value bytes.
#[derive(Debug, Clone)]
pub struct State {
    pub(crate) chain_id: String,
    pub(crate) tip: ChainTip,
    pub(crate) accounts: BTreeMap<AccountId, Account>,
    pub(crate) listings: BTreeMap<Hash, Listing>,
    pub(crate) addresses: BTreeMap<String, Hash>,
    pub(crate) subscriptions: BTreeMap<(Hash, AccountId), Subscription>,
    pub(crate) grants: BTreeMap<GrantId, AccessGrant>,
    /// The grants by expiry: derived from `grants`, not committed.
    pub(crate) expiring: BTreeSet<(u64, GrantId)>,
    /// The listings by owner: derived from `listings`, not committed.
    pub(crate) owned: BTreeSet<(AccountId, Hash)>,
    /// The access log's right edge: its size and root.
    pub(crate) log: Frontier,
    pub(crate) tree: StateTree,
}

/// The state commitment: one leaf per entry, keeping the entry's value bytes beside it so
/// that a snapshot alone can prove any entry.
pub(crate) type StateTree = SparseMerkleTree<Arc<[u8]>>;

/// The state tree as it was after one height: enough to prove any entry as of then.
///
/// Taking one is O(1) (the tree's nodes are shared); keeping it costs only the nodes that
/// later blocks replace.
#[derive(Debug, Clone)]
pub struct StateSnapshot {
    height: u64,
    tree: StateTree,
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
    pub fn value_bytes(&self, key: &[u8]) -> Option<&[u8]> {
        self.tree
            .payload(&StateKey::tree_key_of(key).0)
            .map(|v| &v[..])
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
            listings: BTreeMap::new(),
            addresses: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            grants: BTreeMap::new(),
            expiring: BTreeSet::new(),
            owned: BTreeSet::new(),
            log: Frontier::default(),
            tree: StateTree::default(),
        };
        state.rebuild_tree();
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
            listings: BTreeMap::new(),
            addresses: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            grants: BTreeMap::new(),
            expiring: BTreeSet::new(),
            owned: BTreeSet::new(),
            log,
            tree: StateTree::default(),
        };
        let mut log_head = None;
        for (key, value) in entries {
            match (key, value) {
                (StateKey::Account(k), StateValue::Account(v)) => {
                    state.accounts.insert(k, v);
                }
                (StateKey::Listing(k), StateValue::Listing(v)) => {
                    state.owned.insert((v.owner, k));
                    state.listings.insert(k, v);
                }
                (StateKey::Address(k), StateValue::Address(v)) => {
                    state.addresses.insert(k, v);
                }
                (StateKey::Subscription(h, a), StateValue::Subscription(v)) => {
                    state.subscriptions.insert((h, a), v);
                }
                (StateKey::Grant(k), StateValue::Grant(v)) => {
                    state.expiring.insert((v.expires_at_ms, k));
                    state.grants.insert(k, v);
                }
                (StateKey::LogHead, StateValue::LogHead(v)) => log_head = Some(v),
                (key, _) => {
                    return Err(CorruptEntry(format!(
                        "value of the wrong kind under {key:?}"
                    )));
                }
            }
        }
        let (head_size, head_root) = log_head.map_or((0, None), |h| (h.size, Some(h.root.0)));
        let log_root = (!state.log.is_empty()).then(|| state.log.root());
        if head_size != state.log.len() || head_root != log_root {
            return Err(CorruptEntry(format!(
                "stored log head (size {head_size}) does not match the stored log of {} leaves",
                state.log.len()
            )));
        }
        state.rebuild_tree();
        Ok(state)
    }

    fn rebuild_tree(&mut self) {
        let entries: Vec<_> = self
            .entries()
            .map(|(k, v)| {
                let bytes = v.to_bytes();
                (k.tree_key().0, Hash::digest(&bytes).0, Arc::from(bytes))
            })
            .collect();
        self.tree = StateTree::from_entries_with(entries);
        self.tip.state_root = Hash(self.tree.root());
    }

    /// Every entry, in key order within each kind.
    pub fn entries(&self) -> impl Iterator<Item = (StateKey, StateValue)> + '_ {
        let accounts = self
            .accounts
            .iter()
            .map(|(k, v)| (StateKey::Account(*k), StateValue::Account(v.clone())));
        let listings = self
            .listings
            .iter()
            .map(|(k, v)| (StateKey::Listing(*k), StateValue::Listing(v.clone())));
        let addresses = self
            .addresses
            .iter()
            .map(|(k, v)| (StateKey::Address(k.clone()), StateValue::Address(*v)));
        let subs = self.subscriptions.iter().map(|((h, a), v)| {
            (
                StateKey::Subscription(*h, *a),
                StateValue::Subscription(v.clone()),
            )
        });
        let grants = self
            .grants
            .iter()
            .map(|(k, v)| (StateKey::Grant(*k), StateValue::Grant(v.clone())));
        let head = self
            .log_head()
            .map(|h| (StateKey::LogHead, StateValue::LogHead(h)));
        accounts
            .chain(listings)
            .chain(addresses)
            .chain(subs)
            .chain(grants)
            .chain(head)
    }

    /// The value under `key`, if any.
    pub fn get(&self, key: &StateKey) -> Option<StateValue> {
        match key {
            StateKey::Account(k) => self.accounts.get(k).cloned().map(StateValue::Account),
            StateKey::Listing(k) => self.listings.get(k).cloned().map(StateValue::Listing),
            StateKey::Address(k) => self.addresses.get(k).copied().map(StateValue::Address),
            StateKey::Subscription(h, a) => self
                .subscriptions
                .get(&(*h, *a))
                .cloned()
                .map(StateValue::Subscription),
            StateKey::Grant(k) => self.grants.get(k).cloned().map(StateValue::Grant),
            StateKey::LogHead => self.log_head().map(StateValue::LogHead),
        }
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
    pub fn listing(&self, hash: &Hash) -> Option<&Listing> {
        self.listings.get(hash)
    }

    /// A listing by address.
    pub fn listing_at(&self, address: &str) -> Option<&Listing> {
        self.addresses
            .get(address)
            .and_then(|h| self.listings.get(h))
    }

    /// All listings.
    pub fn listings(&self) -> impl Iterator<Item = &Listing> {
        self.listings.values()
    }

    /// At most `limit` listings with a hash after `after` (from the first if `None`), in
    /// hash order: a page of [`Self::listings`].
    pub fn listings_after(
        &self,
        after: Option<&Hash>,
        limit: usize,
    ) -> impl Iterator<Item = &Listing> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.listings
            .range((from, Bound::Unbounded))
            .map(|(_, l)| l)
            .take(limit)
    }

    /// The listings `owner` registered, in hash order (read through an index).
    pub fn listings_of<'a>(&'a self, owner: &AccountId) -> impl Iterator<Item = &'a Listing> {
        let owner = *owner;
        self.owned
            .range((owner, Hash::ZERO)..)
            .take_while(move |(o, _)| *o == owner)
            .filter_map(|(_, h)| self.listings.get(h))
    }

    /// Whether `account` holds a subscription to the current registration of `hash`.
    pub fn is_subscribed(&self, hash: &Hash, account: &AccountId) -> bool {
        match (
            self.listings.get(hash),
            self.subscriptions.get(&(*hash, *account)),
        ) {
            (Some(listing), Some(sub)) => sub.listing == listing.id,
            _ => false,
        }
    }

    /// A grant.
    pub fn grant(&self, id: &GrantId) -> Option<&AccessGrant> {
        self.grants.get(id)
    }

    /// All grants.
    pub fn grants(&self) -> impl Iterator<Item = &AccessGrant> {
        self.grants.values()
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
