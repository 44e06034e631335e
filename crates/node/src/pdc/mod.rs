//! The Private Data Center of a node: its state (the store, the policy engine and owners'
//! parsed policies, the installed detectors, the request guard and the access recorder),
//! the recorder that submits every fetch decision to the ledger as `RecordAccess`, and the
//! HTTP API (`routes`): storing and importing (signed by the owner, or by a writer the
//! owner's policy permits), owners' policies, tokens for grant holders, signed fetches,
//! deletion, and the owner's history.

mod asks;
mod recorder;
mod routes;

pub use recorder::run_recorder;
pub(crate) use routes::PdcApi;
pub use routes::{MAX_CONCURRENT_UPLOADS, MAX_SMALL_BODY, router};

use crate::problem::Problem;
use axum::http::StatusCode;
use secnet_pdc::access::Gate;
use secnet_pdc::auth::RequestGuard;
use secnet_pdc::record::Recorder;
use secnet_pdc::store::{Store, StoreError};
use secnet_policy::{Engine, OwnerPolicies};
use secnet_rules::Installed;
use secnet_types::{AccountId, Hash};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Largest object accepted over HTTP in one request.
pub const MAX_OBJECT_BODY: usize = 64 * 1024 * 1024;
/// Largest object delivered inline in a fetch answer.
pub const MAX_INLINE_FETCH: u64 = 64 * 1024 * 1024;

/// The most owners whose parsed policies a node keeps.
const CACHED_POLICIES: usize = 10_000;

/// The most policy text a node keeps parsed (about a tenth of what its parsed form takes).
const CACHED_POLICY_BYTES: usize = 16 * 1024 * 1024;

/// Owners' parsed policies, and how many times any owner's were set.
#[derive(Default)]
struct PolicyCache {
    parsed: HashMap<AccountId, Arc<OwnerPolicies>>,
    /// The length of the policy text of those in `parsed`.
    bytes: usize,
    /// Counts [`Pdc::set_policies`]: a policy read from the store before a set is not
    /// remembered after it (it may be the one the set replaced).
    sets: u64,
}

impl PolicyCache {
    /// Remembers `owner`'s parsed policies, emptied first if that would pass a bound.
    fn keep(&mut self, owner: AccountId, policies: Arc<OwnerPolicies>) {
        self.forget(&owner);
        let bytes = policies.text().len();
        if self.parsed.len() >= CACHED_POLICIES
            || self.bytes.saturating_add(bytes) > CACHED_POLICY_BYTES
        {
            self.parsed.clear();
            self.bytes = 0;
        }
        self.bytes += bytes;
        self.parsed.insert(owner, policies);
    }

    /// Forgets `owner`'s.
    fn forget(&mut self, owner: &AccountId) {
        if let Some(old) = self.parsed.remove(owner) {
            self.bytes -= old.text().len();
        }
    }
}

/// A node's Private Data Center.
pub struct Pdc {
    store: Store,
    engine: Engine,
    /// The node's own detector and the security rules it installed: they score every fetch.
    rules: Installed,
    inner: Mutex<Inner>,
    /// Owners' parsed and validated policies, so a fetch does not re-parse them: only of
    /// owners who stored some (an owner without is not remembered, so a request naming any
    /// account costs no memory), at most [`CACHED_POLICIES`] and [`CACHED_POLICY_BYTES`] of
    /// text (the cache empties when full).
    policies: Mutex<PolicyCache>,
    /// Held while a transaction signed by the node's key is given its nonce and submitted,
    /// so the recorder and the application never take the same nonce.
    own_txs: Mutex<()>,
    /// Slots for reading uploads' bodies.
    uploads: tokio::sync::Semaphore,
    /// Accounts whose upload is being read: one at a time each.
    uploading: Mutex<std::collections::HashSet<AccountId>>,
}

impl std::fmt::Debug for Pdc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pdc")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Inner {
    gate: Gate,
    guard: RequestGuard,
    recorder: Recorder,
    /// Submitted batches of access records whose receipts are not read yet.
    in_flight: std::collections::VecDeque<recorder::InFlight>,
    /// Decided fetches whose entries are being journaled, not yet queued.
    journaling: usize,
    /// Entries waiting to be recorded (journaling, queued or in flight), per requester.
    waiting_by: HashMap<AccountId, usize>,
    next_nonce: u64,
}

impl Inner {
    /// Access entries not yet on the ledger: being journaled, queued, or submitted and not
    /// yet applied.
    fn records_waiting(&self) -> usize {
        self.journaling
            + self.recorder.len()
            + self.in_flight.iter().map(|f| f.len()).sum::<usize>()
    }

    /// Counts one more entry waiting for `requester`, unless it already has
    /// [`MAX_WAITING_PER_REQUESTER`]: one account cannot take the whole queue, and so keep
    /// every other consumer's reads (which must be recorded before they are served) out.
    fn hold(&mut self, requester: AccountId) -> bool {
        let n = self.waiting_by.entry(requester).or_insert(0);
        if *n >= MAX_WAITING_PER_REQUESTER {
            return false;
        }
        *n += 1;
        true
    }

    /// Counts entries of these requesters as no longer waiting (recorded, or never
    /// recordable).
    fn release<'a>(&mut self, requesters: impl IntoIterator<Item = &'a AccountId>) {
        for r in requesters {
            if let Some(n) = self.waiting_by.get_mut(r) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.waiting_by.remove(r);
                }
            }
        }
    }
}

/// Most access entries one requester may have waiting to be recorded; beyond, its next
/// fetch is refused (503, nothing served) until the recorder catches up.
pub const MAX_WAITING_PER_REQUESTER: usize = 4_096;

impl Pdc {
    /// A PDC over `store`, refusing non-owners from detector score `threshold` (ppm), with
    /// the detectors installed in `rules_dir` scoring requests.
    /// Access decisions journaled and not known to be recorded (the node stopped first) are
    /// taken up again: those submitted in a transaction wait for its receipt (applied: they
    /// are recorded, and leave the journal; otherwise they are submitted again), the others
    /// are queued.
    pub fn new(store: Store, threshold: u32, rules_dir: &std::path::Path) -> Result<Pdc, String> {
        let mut inner = Inner::default();
        let journaled = store.unrecorded().map_err(|e| e.to_string())?;
        if !journaled.is_empty() {
            tracing::info!(
                entries = journaled.len(),
                "access decisions journaled before a stop are taken up again"
            );
        }
        let mut submitted: std::collections::BTreeMap<Hash, Vec<secnet_pdc::record::Queued>> =
            std::collections::BTreeMap::new();
        for (number, entry, tx) in journaled {
            // Restored entries count even past the limit: they were accepted before.
            *inner.waiting_by.entry(entry.requester).or_insert(0) += 1;
            match tx {
                Some(tx) => submitted
                    .entry(tx)
                    .or_default()
                    .push(secnet_pdc::record::Queued {
                        journal: Some(number),
                        entry,
                    }),
                None => inner.recorder.push(number, entry),
            }
        }
        for (tx, entries) in submitted {
            inner
                .in_flight
                .push_back(recorder::InFlight::restored(tx, entries));
        }
        Ok(Pdc {
            store,
            engine: Engine::new(threshold).map_err(|e| e.to_string())?,
            rules: Installed::open(rules_dir, threshold)
                .map_err(|e| format!("{}: {e}", rules_dir.display()))?,
            inner: Mutex::new(inner),
            policies: Mutex::new(PolicyCache::default()),
            own_txs: Mutex::new(()),
            uploads: tokio::sync::Semaphore::new(routes::MAX_CONCURRENT_UPLOADS),
            uploading: Mutex::new(std::collections::HashSet::new()),
        })
    }

    fn inner(&self) -> Result<std::sync::MutexGuard<'_, Inner>, Problem> {
        self.inner
            .lock()
            .map_err(|_| internal("PDC state poisoned"))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Re-reads the rules directory if it changed; returns whether it did.
    pub fn reload_rules(&self) -> bool {
        let changed = self.rules.reload();
        if changed {
            tracing::info!(rules = self.rules.list().len(), "security rules reloaded");
        }
        changed
    }

    /// Access entries waiting to be recorded.
    pub fn unrecorded(&self) -> usize {
        self.inner.lock().map(|i| i.recorder.len()).unwrap_or(0)
    }

    fn policies(&self, owner: &AccountId) -> Result<Arc<OwnerPolicies>, Problem> {
        let sets = {
            let cache = self
                .policies
                .lock()
                .map_err(|_| internal("PDC state poisoned"))?;
            if let Some(p) = cache.parsed.get(owner) {
                return Ok(Arc::clone(p));
            }
            cache.sets
        };
        let Some(text) = self.store.policy(owner).map_err(store_problem)? else {
            return Ok(Arc::new(OwnerPolicies::empty()));
        };
        let parsed = Arc::new(
            self.engine
                .check(&text)
                .map_err(|e| internal(&format!("stored policy no longer valid: {e}")))?,
        );
        if let Ok(mut cache) = self.policies.lock()
            && cache.sets == sets
        {
            cache.keep(*owner, Arc::clone(&parsed));
        }
        Ok(parsed)
    }

    /// Stores `owner`'s validated policies and makes them the ones decisions use.
    fn set_policies(&self, owner: &AccountId, checked: OwnerPolicies) -> Result<(), Problem> {
        let mut cache = self
            .policies
            .lock()
            .map_err(|_| internal("PDC state poisoned"))?;
        cache.sets += 1;
        // Forgotten first: a write that fails may still have reached the store.
        cache.forget(owner);
        self.store
            .set_policy(owner, checked.text())
            .map_err(store_problem)?;
        cache.keep(*owner, Arc::new(checked));
        Ok(())
    }
}

/// The access-log leaves at `indices` that `keep` accepts, decoded, each with its index and
/// its block's time (read once per height, from the header), in the order given. Leaves that
/// are missing or do not decode are left out.
fn timed_entries(
    l: &secnet_ledger::Ledger,
    indices: &[u64],
    keep: impl Fn(&secnet_contract::LogEntry) -> bool,
) -> Result<Vec<(u64, secnet_contract::LogEntry, u64)>, Problem> {
    let mut times: HashMap<u64, u64> = HashMap::new();
    let mut out = Vec::new();
    for (index, leaf) in indices.iter().zip(l.log_leaves(indices)?) {
        let Some(entry) = leaf.and_then(|b| secnet_contract::LogEntry::from_bytes(&b).ok()) else {
            continue;
        };
        if !keep(&entry) {
            continue;
        }
        let height = entry.height();
        let time = match times.get(&height) {
            Some(t) => *t,
            None => {
                let t = l.header(height)?.map_or(0, |h| h.timestamp_ms);
                times.insert(height, t);
                t
            }
        };
        out.push((*index, entry, time));
    }
    Ok(out)
}

impl Pdc {
    /// Every access-log entry about data `owner` stores here or listed, in log order, with
    /// its index and its block's time: read through the ledger's log index, not a scan.
    pub fn history_of(
        &self,
        l: &secnet_ledger::Ledger,
        owner: &AccountId,
    ) -> Result<Vec<(u64, secnet_contract::LogEntry, u64)>, Problem> {
        use secnet_contract::LogEntry;
        use secnet_ledger::LogSubject;
        let mut mine: std::collections::HashSet<secnet_types::Hash> = self
            .store
            .hashes_of(owner)
            .map_err(store_problem)?
            .into_iter()
            .collect();
        mine.extend(l.hashes_listed_by(owner)?);
        let size = l.state().log().len();
        let mut indices: std::collections::BTreeSet<u64> = l
            .log_indices(LogSubject::Owner(*owner))?
            .into_iter()
            .collect();
        for hash in &mine {
            indices.extend(l.log_indices(LogSubject::Data(*hash))?);
        }
        let indices: Vec<u64> = indices.into_iter().filter(|i| *i < size).collect();
        timed_entries(l, &indices, |entry| match entry {
            LogEntry::Grant { data, .. } => mine.contains(data),
            LogEntry::Access { entry, .. } => mine.contains(&entry.data),
            LogEntry::Emergency { owner: o, .. } | LogEntry::Payment { owner: o, .. } => o == owner,
        })
    }

    /// The last `limit` access-log entries in which `account` asked, read or paid (its own
    /// trail: grants it was issued, deliveries and refusals to it, emergencies it declared,
    /// subscriptions it paid), in log order, with index and block time; read through the
    /// ledger's log index.
    pub fn trail_of(
        &self,
        l: &secnet_ledger::Ledger,
        account: &AccountId,
        limit: usize,
    ) -> Result<Vec<(u64, secnet_contract::LogEntry, u64)>, Problem> {
        use secnet_ledger::LogSubject;
        let indices = l.log_indices(LogSubject::Requester(*account))?;
        let size = l.state().log().len();
        let indices: Vec<u64> = indices
            .iter()
            .rev()
            .filter(|i| **i < size)
            .take(limit)
            .copied()
            .collect();
        let mut out = timed_entries(l, &indices, |_| true)?;
        out.reverse();
        Ok(out)
    }

    /// Submits the transaction `sign` makes (from the chain id and a nonce) at the node's
    /// next nonce, holding the node's own-transaction turn, and keeps that nonce: one past
    /// it once admitted, the one the mempool expects when it was stale or ahead. The one
    /// place the node's key is given a nonce: the recorder and the application both submit
    /// through it, so they never take the same one.
    fn submit_at_next_nonce(
        &self,
        node: &dyn crate::backend::Backend,
        sign: impl FnOnce(&str, u64) -> secnet_types::SignedTransaction,
    ) -> Result<Result<secnet_types::Hash, crate::mempool::AdmitError>, crate::backend::NodeError>
    {
        use crate::backend::NodeError;
        use crate::mempool::AdmitError;
        // Lock order everywhere: the node's own submissions, the ledger, then the PDC's
        // state; never the reverse.
        let _turn = self.own_txs.lock().map_err(|_| NodeError::Poisoned)?;
        let me = node.key().account();
        let (committed, chain_id) =
            node.with_ledger(|l| (l.state().account(&me).nonce, l.genesis().chain_id.clone()))?;
        let nonce = self
            .inner
            .lock()
            .map_err(|_| NodeError::Poisoned)?
            .next_nonce
            .max(committed);
        let result = node.submit(sign(&chain_id, nonce))?;
        let mut inner = self.inner.lock().map_err(|_| NodeError::Poisoned)?;
        match &result {
            Ok(_) => inner.next_nonce = nonce + 1,
            Err(
                AdmitError::StaleNonce { expected, .. } | AdmitError::NonceGap { expected, .. },
            ) => inner.next_nonce = *expected,
            Err(_) => {}
        }
        Ok(result)
    }

    /// Signs `call` with the node's key at its next nonce and submits it to the node's own
    /// mempool, trying once more if that nonce was stale.
    pub fn submit_own(
        &self,
        node: &dyn crate::backend::Backend,
        call: secnet_types::Call,
    ) -> Result<secnet_types::Hash, String> {
        // One retry: the first answer of a stale nonce says which one is next.
        for _ in 0..2 {
            let signed = |chain_id: &str, nonce| {
                secnet_types::Transaction {
                    chain_id: chain_id.to_string(),
                    sender: node.key().account(),
                    nonce,
                    call: call.clone(),
                }
                .sign(node.key())
            };
            match self
                .submit_at_next_nonce(node, signed)
                .map_err(|e| e.to_string())?
            {
                Ok(hash) => return Ok(hash),
                Err(
                    crate::mempool::AdmitError::StaleNonce { .. }
                    | crate::mempool::AdmitError::NonceGap { .. },
                ) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the node's nonce kept moving; try again".into())
    }
}

/// Opens the PDC of the node whose data directory is `data_dir` (its store lives in
/// `data_dir/pdc`), holding data as `key`.
pub fn open(data_dir: &std::path::Path, key: &secnet_types::Keypair) -> Result<Arc<Pdc>, String> {
    let holder = key.clone();
    let store = Store::open(&data_dir.join("pdc"), holder).map_err(|e| e.to_string())?;
    Pdc::new(
        store,
        secnet_policy::DEFAULT_RISK_THRESHOLD,
        &data_dir.join("rules"),
    )
    .map(Arc::new)
}

fn internal(detail: &str) -> Problem {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error", detail)
}

fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::Envelope(e) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid payload",
            e.to_string(),
        ),
        StoreError::Id(e) => Problem::bad_request(e.to_string()),
        StoreError::TooLarge { .. } => {
            Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too large", e.to_string())
        }
        StoreError::NotFound(_) => Problem::not_found(e.to_string()),
        StoreError::Crypto(_) | StoreError::Integrity { .. } => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "integrity failure",
            e.to_string(),
        ),
        StoreError::Db(text) if text.contains("Previous I/O error") => {
            tracing::error!(
                "an earlier write to the PDC's database failed; restart the node to write again"
            );
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage failed",
                "an earlier write to the node's storage failed: nothing more is stored until its operator restarts it",
            )
        }
        full if full.is_storage_full() => {
            tracing::error!(error = %full, "PDC storage is full: nothing was stored");
            Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage full",
                "the node's storage is full: nothing was stored; try again once its operator has made room",
            )
        }
        other => {
            // The details (file paths among them) are for the operator's log, not the caller.
            tracing::error!(error = %other, "PDC storage failed");
            internal(
                "the node could not complete the operation on its storage; nothing was changed",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_requester_cannot_take_every_place_in_the_record_queue() {
        let mut inner = Inner::default();
        let (greedy, other) = (AccountId([1; 32]), AccountId([2; 32]));
        for _ in 0..MAX_WAITING_PER_REQUESTER {
            assert!(inner.hold(greedy));
        }
        assert!(!inner.hold(greedy), "refused at the limit");
        assert!(inner.hold(other), "others still have their places");
        inner.release([&greedy]);
        assert!(
            inner.hold(greedy),
            "a place freed by a recorded entry is its own again"
        );
        inner.release(std::iter::repeat_n(&greedy, MAX_WAITING_PER_REQUESTER + 5));
        assert!(
            !inner.waiting_by.contains_key(&greedy),
            "no count below zero is kept"
        );
        assert_eq!(inner.waiting_by.get(&other), Some(&1));
    }
}
