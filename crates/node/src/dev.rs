//! A single-node network: the node admits transactions into its mempool and produces blocks
//! from them on the same apply path that validators use.

use crate::backend::{Backend, CertificateFuture, NodeError, TxStatus};
use crate::core::LedgerCore;
use crate::datadir::now_ms;
use crate::mempool::AdmitError;
use secnet_contract::BlockOutcome;
use secnet_ledger::Ledger;
use secnet_types::limits::MAX_BLOCK_TXS;
use secnet_types::{Block, Genesis, Hash, Keypair, SignedTransaction, StateCommitment};
use std::path::Path;
use std::time::Duration;

/// How a node produces blocks.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Time between blocks while transactions are waiting.
    pub block_interval: Duration,
    /// Most transactions per block.
    pub max_block_txs: usize,
    /// Most pending transactions.
    pub mempool_capacity: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            block_interval: Duration::from_millis(200),
            max_block_txs: 5_000,
            mempool_capacity: 100_000,
        }
    }
}

/// A running single-node ledger.
#[derive(Debug)]
pub struct DevNode {
    core: LedgerCore,
    key: Keypair,
    config: ProducerConfig,
    /// The node's key as the network's single validator (none if the genesis does not name
    /// it: then nothing it serves can be certified).
    certifier: Option<secnet_certified::Certifier>,
    /// The node's cosignatures of the log head, as the network's single validator.
    cosigned: std::sync::Mutex<secnet_certified::CosignPool>,
}

impl DevNode {
    /// Opens the ledger under `dir` and prepares the node.
    pub fn open(
        dir: &Path,
        genesis: &Genesis,
        key: Keypair,
        config: ProducerConfig,
    ) -> Result<DevNode, NodeError> {
        let ledger = Ledger::open(dir, genesis)?;
        let certifier = secnet_certified::Certifier::new(genesis, &[&key]).ok();
        Ok(DevNode {
            core: LedgerCore::new(ledger, config.mempool_capacity),
            key,
            config,
            certifier,
            cosigned: std::sync::Mutex::new(secnet_certified::CosignPool::from_genesis(genesis)),
        })
    }

    /// The node's signing key.
    pub fn key(&self) -> &Keypair {
        &self.key
    }

    /// The block production settings.
    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    /// The ledger and mempool.
    pub fn core(&self) -> &LedgerCore {
        &self.core
    }

    /// Runs `f` with the ledger locked.
    pub fn with_ledger<R>(&self, f: impl FnOnce(&Ledger) -> R) -> Result<R, NodeError> {
        self.core.with_ledger(f)
    }

    /// Produces one block from the mempool if anything is waiting, or an empty one if the
    /// latest state root is not committed by a header yet (so that it can be certified).
    /// Blocking: it commits to disk.
    pub fn produce_block(&self) -> Result<Option<BlockOutcome>, NodeError> {
        let max = self.config.max_block_txs.min(MAX_BLOCK_TXS);
        let txs = self.core.select(max, |_| false)?;
        let mut ledger = self.core.ledger()?;
        let tip = ledger.state().tip();
        let parent = match ledger.header(tip.height)? {
            Some(header) => header.state,
            None => StateCommitment::default(),
        };
        let uncommitted = parent.next() <= tip.height
            && parent.last().map(|(_, root)| root) != Some(tip.state_root);
        if txs.is_empty() && !uncommitted {
            return Ok(None);
        }
        let block = Block::new(
            tip.height + 1,
            tip.block_hash,
            now_ms().max(tip.timestamp_ms),
            txs,
        )
        .committing(ledger.commitment_after(&parent));
        // Every pooled transaction's signature was checked at admission.
        let outcome = ledger.apply_block_trusting(&block, |_| true)?;
        self.core
            .mempool()?
            .settle_senders(ledger.state(), block.txs.iter().map(|t| t.tx().sender));
        drop(ledger);
        self.core.applied(outcome.tip.height);
        tracing::info!(
            height = outcome.tip.height,
            txs = block.txs.len(),
            state_root = %outcome.tip.state_root,
            "block committed"
        );
        Ok(Some(outcome))
    }

    /// Produces blocks until `shutdown` fires; returns why it stopped otherwise (a block
    /// that could not be produced or stored).
    ///
    /// (Blocks are produced only while transactions wait, plus one empty block after them
    /// to commit the last state root; an idle node adds none.)
    pub async fn run_producer(
        self: std::sync::Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), String> {
        let mut tick = tokio::time::interval(self.config.block_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return Ok(()),
            }
            let node = self.clone();
            let failure = match tokio::task::spawn_blocking(move || node.produce_block()).await {
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => format!("block production stopped: {e}"),
                Err(e) => format!("block production failed: {e}"),
            };
            tracing::error!(reason = %failure, "node stopping");
            return Err(failure);
        }
    }
}

impl Backend for DevNode {
    fn submit(&self, tx: SignedTransaction) -> Result<Result<Hash, AdmitError>, NodeError> {
        self.core.admit_one(tx)
    }
    fn submit_batch(
        &self,
        txs: Vec<SignedTransaction>,
    ) -> Result<Vec<Result<Hash, AdmitError>>, NodeError> {
        self.core.admit(txs)
    }
    fn tx_status(&self, hash: &Hash) -> Result<TxStatus, NodeError> {
        self.core.tx_status(hash)
    }
    fn visit_ledger(&self, f: &mut dyn FnMut(&Ledger)) -> Result<(), NodeError> {
        self.with_ledger(|l| f(l))
    }
    fn pending(&self) -> Result<usize, NodeError> {
        self.core.pending()
    }
    fn key(&self) -> &Keypair {
        &self.key
    }
    fn certificate(&self, height: u64) -> CertificateFuture<'_> {
        // The single producer certifies its own blocks, if the genesis names it validator.
        let certificate = self.certifier.as_ref().and_then(|certifier| {
            let header = self.with_ledger(|l| l.header(height)).ok()?.ok()??;
            certifier.certify(&header).ok()
        });
        Box::pin(std::future::ready(certificate))
    }
    fn cosigned_checkpoint(&self) -> Option<secnet_certified::CosignedCheckpoint> {
        // The single validator cosigns the head it has executed when asked.
        let head = self.with_ledger(|l| l.checkpoint()).ok()?;
        let mut pool = self.cosigned.lock().ok()?;
        if pool.best().is_none_or(|best| best.checkpoint != head) {
            let time = now_ms() / 1_000;
            pool.add(head.clone(), head.cosign(&self.key, time)).ok()?;
        }
        pool.best().cloned()
    }
    fn applied_heights(&self) -> tokio::sync::watch::Receiver<u64> {
        self.core.applied_heights()
    }
    fn validators(&self) -> Vec<secnet_api::chain::ValidatorStatus> {
        let height = self.with_ledger(|l| l.state().tip().height).ok();
        vec![secnet_api::chain::ValidatorStatus {
            key: self.key.account(),
            is_self: true,
            height,
            finalized: height,
            seen_unix_ms: None,
        }]
    }
}
