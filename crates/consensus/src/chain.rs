//! What a validator shares between its consensus application, its executor, its gossip and
//! its API: the durable ledger, the mempool, and the cosignatures of the access log's head.

use crate::block::ChainBlock;
use crate::verified::VerifiedIds;
use secnet_certified::{Checkpoint, CosignPool, CosignRejected, Cosignature, CosignedCheckpoint};
use secnet_contract::BlockOutcome;
use secnet_ledger::{Ledger, LedgerError, Syncer};
use secnet_node::backend::NodeError;
use secnet_node::core::LedgerCore;
use secnet_node::mempool::AdmitError;
use secnet_types::AccountId;
use secnet_types::{Genesis, Hash, Keypair, SignedTransaction, StateCommitment};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

/// Blocks' worth of transactions, past what the mempool holds, for which a checked
/// signature is remembered at least (see [`VerifiedIds`]).
const VERIFIED_BLOCKS: usize = 8;

/// A validator's ledger and mempool (the core every node has) and what only validators need.
/// Lock order everywhere: ledger, then mempool, then the memory of verified signatures; the
/// cosignatures' lock is never held with another.
#[derive(Debug)]
pub struct Chain {
    core: LedgerCore,
    /// Makes executed blocks durable without holding the ledger.
    syncer: Syncer,
    /// `signed_id`s of transactions whose signature this node already checked.
    verified: Mutex<VerifiedIds>,
    /// The height each peer last announced, and when.
    peers: Mutex<BTreeMap<AccountId, PeerSeen>>,
    /// This validator's key for cosigning the log head, and what it heard from the others.
    cosigning: Mutex<Cosigning>,
    genesis_block: ChainBlock,
    chain_id: String,
    namespace: Vec<u8>,
    max_block_txs: usize,
}

/// A validator cosigns the access log's head after every height that is a multiple of this,
/// and when the chain has been idle for a gossip interval: every honest validator executed
/// the same heights, so they cosign the same heads and a quorum forms.
pub const COSIGN_EVERY: u64 = 16;

#[derive(Debug)]
struct Cosigning {
    key: Option<Keypair>,
    pool: CosignPool,
    own: Option<(Checkpoint, Cosignature)>,
    /// Own cosignatures not gossiped yet (the newest [`OUTBOX`]).
    outbox: std::collections::VecDeque<(Checkpoint, Cosignature)>,
}

/// Most own cosignatures waiting to be gossiped.
const OUTBOX: usize = 32;

/// What a validator last heard from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerSeen {
    /// The peer's executed height.
    pub height: u64,
    /// When it said so.
    pub at: SystemTime,
}

/// The chain's locks were poisoned by a panic elsewhere.
#[derive(Debug, thiserror::Error)]
#[error("validator state poisoned by an earlier failure; restart the node")]
pub struct Poisoned;

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, Poisoned> {
    m.lock().map_err(|_| Poisoned)
}

/// What happened to a finalized block handed to [`Chain::execute`].
#[derive(Debug)]
pub enum Executed {
    /// Applied now.
    Applied(Box<BlockOutcome>),
    /// Already applied before (redelivery after a restart).
    AlreadyApplied,
}

impl Chain {
    /// Wraps an opened ledger.
    pub fn new(
        ledger: Ledger,
        genesis: &Genesis,
        mempool_capacity: usize,
        max_block_txs: usize,
    ) -> Chain {
        Chain {
            syncer: ledger.syncer(),
            core: LedgerCore::new(ledger, mempool_capacity),
            verified: Mutex::new(VerifiedIds::new(
                mempool_capacity.saturating_add(VERIFIED_BLOCKS.saturating_mul(max_block_txs)),
            )),
            peers: Mutex::new(BTreeMap::new()),
            cosigning: Mutex::new(Cosigning {
                key: None,
                pool: CosignPool::from_genesis(genesis),
                own: None,
                outbox: std::collections::VecDeque::new(),
            }),
            genesis_block: ChainBlock::new(genesis.block()),
            chain_id: genesis.chain_id.clone(),
            namespace: secnet_certified::consensus_namespace(genesis),
            max_block_txs,
        }
    }

    /// Cosigns the log heads this validator executes with `key` (see [`COSIGN_EVERY`]).
    pub fn with_cosigner(self, key: Keypair) -> Chain {
        if let Ok(mut c) = self.cosigning.lock() {
            c.key = Some(key);
        }
        self
    }

    /// Cosigns the access log's head as executed now, at `time` (seconds since the epoch),
    /// unless this validator already cosigned that head. Returns this validator's newest
    /// cosignature, or `None` if it has no cosigning key.
    pub fn cosign_head(&self, time: u64) -> Result<Option<(Checkpoint, Cosignature)>, Poisoned> {
        let head = self.with_ledger(|l| l.checkpoint())?;
        let mut c = lock(&self.cosigning)?;
        let Some(key) = &c.key else {
            return Ok(None);
        };
        if let Some(own) = &c.own
            && own.0 == head
        {
            return Ok(Some(own.clone()));
        }
        let cosignature = head.cosign(key, time);
        if let Err(e) = c.pool.add(head.clone(), cosignature) {
            tracing::error!(error = %e, "own cosignature refused");
            return Ok(None);
        }
        c.own = Some((head.clone(), cosignature));
        if c.outbox.len() == OUTBOX {
            c.outbox.pop_front();
        }
        c.outbox.push_back((head, cosignature));
        Ok(c.own.clone())
    }

    /// Own cosignatures made since the last call, to gossip.
    pub fn take_outbox(&self) -> Result<Vec<(Checkpoint, Cosignature)>, Poisoned> {
        Ok(lock(&self.cosigning)?.outbox.drain(..).collect())
    }

    /// This validator's newest cosignature of the log head.
    pub fn own_cosignature(&self) -> Result<Option<(Checkpoint, Cosignature)>, Poisoned> {
        Ok(lock(&self.cosigning)?.own.clone())
    }

    /// Adds another validator's cosignature of a log head. Repeats are dropped before any
    /// signature check, and the check runs without the lock.
    pub fn add_cosignature(
        &self,
        checkpoint: Checkpoint,
        cosignature: Cosignature,
    ) -> Result<bool, CosignRejected> {
        let Ok(c) = self.cosigning.lock() else {
            return Ok(false);
        };
        if !c.pool.wants(&checkpoint, &cosignature.signer)? {
            return Ok(false);
        }
        drop(c);
        if !cosignature.verifies(&checkpoint) {
            return Err(CosignRejected::BadSignature(cosignature.signer));
        }
        Ok(self
            .cosigning
            .lock()
            .is_ok_and(|mut c| c.pool.insert_verified(checkpoint, cosignature)))
    }

    /// The largest log head a quorum of validators cosigned, as far as this validator heard.
    pub fn cosigned_head(&self) -> Option<CosignedCheckpoint> {
        self.cosigning.lock().ok()?.pool.best().cloned()
    }

    /// The height-0 block.
    pub fn genesis_block(&self) -> &ChainBlock {
        &self.genesis_block
    }

    /// The namespace of this network's consensus signatures.
    pub fn namespace(&self) -> &[u8] {
        &self.namespace
    }

    /// The state roots a block on top of `parent` commits to (see
    /// [`Ledger::commitment_after`]).
    pub fn commitment_after(&self, parent: &StateCommitment) -> Result<StateCommitment, Poisoned> {
        self.with_ledger(|l| l.commitment_after(parent))
    }

    /// The state root and receipts root this node computed for `height`, once it has
    /// executed it.
    pub fn committed_roots_at(&self, height: u64) -> Result<Option<(Hash, Hash)>, Poisoned> {
        self.with_ledger(|l| l.committed_roots_at(height).ok().flatten())
    }

    /// The chain id.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// Most transactions a proposal carries.
    pub fn max_block_txs(&self) -> usize {
        self.max_block_txs
    }

    /// Runs `f` with the ledger locked.
    pub fn with_ledger<R>(&self, f: impl FnOnce(&Ledger) -> R) -> Result<R, Poisoned> {
        self.core.with_ledger(f).map_err(|_| Poisoned)
    }

    /// The height of the last block executed, and its changes (for those waiting for a block).
    pub fn applied_heights(&self) -> tokio::sync::watch::Receiver<u64> {
        self.core.applied_heights()
    }

    /// Height of the last executed block.
    pub fn executed_height(&self) -> Result<u64, Poisoned> {
        self.with_ledger(|l| l.state().tip().height)
    }

    /// Records a peer's announced height.
    pub fn saw_peer(&self, peer: AccountId, height: u64, at: SystemTime) {
        if let Ok(mut peers) = self.peers.lock() {
            peers.insert(peer, PeerSeen { height, at });
        }
    }

    /// What this validator last heard from `peer`.
    pub fn peer(&self, peer: &AccountId) -> Option<PeerSeen> {
        self.peers.lock().ok()?.get(peer).copied()
    }

    /// Admits a transaction to the mempool.
    pub fn submit(&self, tx: SignedTransaction) -> Result<Result<Hash, AdmitError>, Poisoned> {
        self.submit_batch(vec![tx])?.pop().ok_or(Poisoned)
    }

    /// Admits transactions to the mempool, checking their signatures as one batch before
    /// taking any lock. One result per transaction, in order.
    pub fn submit_batch(
        &self,
        txs: Vec<SignedTransaction>,
    ) -> Result<Vec<Result<Hash, AdmitError>>, Poisoned> {
        let valid = secnet_types::verify_signatures(&txs);
        self.submit_checked(txs, &valid)
    }

    /// [`Self::submit_batch`] for transactions whose signatures the caller checked:
    /// `valid` must be what [`secnet_types::verify_signatures`] gave for exactly these
    /// transactions, since those admitted are remembered as verified and not checked again
    /// in proposals or at execution.
    pub(crate) fn submit_checked(
        &self,
        txs: Vec<SignedTransaction>,
        valid: &[bool],
    ) -> Result<Vec<Result<Hash, AdmitError>>, Poisoned> {
        let ids: Vec<Hash> = txs.iter().map(SignedTransaction::signed_id).collect();
        let results = self.core.admit_checked(txs, valid).map_err(|_| Poisoned)?;
        self.remember_verified(
            ids.into_iter()
                .zip(&results)
                .filter(|(_, r)| r.is_ok())
                .map(|(id, _)| id),
        )?;
        Ok(results)
    }

    /// Remembers that these signed transactions' signatures are valid.
    pub fn remember_verified(&self, ids: impl IntoIterator<Item = Hash>) -> Result<(), Poisoned> {
        lock(&self.verified)?.extend(ids);
        Ok(())
    }

    /// Whether this node already checked the signature of `tx`.
    pub fn is_verified(&self, tx: &SignedTransaction) -> bool {
        self.verified
            .lock()
            .is_ok_and(|v| v.contains(&tx.signed_id()))
    }

    /// Queues a transaction without checking it, so this validator proposes invalid blocks.
    #[cfg(feature = "fault-injection")]
    pub fn inject_unchecked(&self, tx: SignedTransaction) -> Result<(), Poisoned> {
        self.core
            .mempool()
            .map_err(|_| Poisoned)?
            .push_unchecked(tx);
        Ok(())
    }

    /// Transactions for a proposal, skipping those `skip` names.
    pub fn select(&self, skip: impl Fn(&Hash) -> bool) -> Result<Vec<SignedTransaction>, Poisoned> {
        self.core
            .select(self.max_block_txs, skip)
            .map_err(|_| Poisoned)
    }

    /// Whether `hash` is pending.
    pub fn is_pending(&self, hash: &Hash) -> Result<bool, Poisoned> {
        self.core.is_pending(hash).map_err(|_| Poisoned)
    }

    /// Number of pending transactions.
    pub fn pending(&self) -> Result<usize, Poisoned> {
        self.core.pending().map_err(|_| Poisoned)
    }

    /// Applies a finalized block unless the ledger already has it, then drops from the
    /// mempool what it consumed. The block is visible to readers at once but durable only
    /// after the next [`Chain::sync`]: acknowledge it to consensus only then.
    pub fn execute(&self, block: &ChainBlock) -> Result<Executed, ExecuteError> {
        // A ledger whose write failed is refused here: memory may hold blocks the disk never
        // will, and none may be acknowledged as stored.
        let mut ledger = self.core.ledger().map_err(ExecuteError::from)?;
        let height = block.block().header.height;
        if height <= ledger.state().tip().height {
            return Ok(Executed::AlreadyApplied);
        }
        // Which signatures were checked before, read out so that the memory is not held
        // across execution (proposal checks consult it meanwhile).
        let vouched: HashSet<Hash> = {
            let verified = lock(&self.verified)?;
            let txs = &block.block().txs;
            let mut vouched = HashSet::with_capacity(txs.len());
            vouched.extend(
                txs.iter()
                    .map(SignedTransaction::signed_id)
                    .filter(|id| verified.contains(id)),
            );
            vouched
        };
        let outcome =
            ledger.apply_block_deferred(block.block(), |t| vouched.contains(&t.signed_id()))?;
        // Only the block's senders' nonces moved.
        self.core.mempool().map_err(|_| Poisoned)?.settle_senders(
            ledger.state(),
            block.block().txs.iter().map(|t| t.tx().sender),
        );
        drop(ledger);
        self.core.applied(height);
        let mut verified = lock(&self.verified)?;
        for tx in &block.block().txs {
            verified.remove(&tx.signed_id());
        }
        Ok(Executed::Applied(Box::new(outcome)))
    }
}

impl Chain {
    /// Waits until every block executed so far is on disk, without holding the ledger (one
    /// disk flush covers every block executed since the last). If it fails, the ledger
    /// refuses further blocks: the disk may be behind what was executed.
    pub fn sync(&self) -> Result<(), ExecuteError> {
        if let Err(e) = self.syncer.sync() {
            // (A ledger already poisoned is refused, and stays so.)
            if let Ok(mut ledger) = self.core.ledger() {
                ledger.poison();
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Drops the ledger's stored blocks below `height`, a bounded number at a time (see
    /// [`Ledger::prune_blocks_below`]).
    pub fn prune_blocks_below(&self, height: u64) -> Result<u64, ExecuteError> {
        let mut ledger = self.core.ledger().map_err(|_| Poisoned)?;
        Ok(ledger.prune_blocks_below(height, PRUNE_BATCH)?)
    }
}

/// Most blocks pruned from the ledger in one write, so that pruning holds the ledger only
/// briefly; after every `PRUNE_EVERY` heights, which outpaces the chain.
const PRUNE_BATCH: u64 = 128;

impl From<NodeError> for ExecuteError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Ledger(e) => ExecuteError::Ledger(e),
            NodeError::Poisoned => ExecuteError::Poisoned(Poisoned),
        }
    }
}

/// A finalized block that could not be executed: the node must stop, not skip it.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// Locks poisoned.
    #[error(transparent)]
    Poisoned(#[from] Poisoned),
    /// The ledger refused or failed to store it.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}
