//! What the API and the Private Data Center need from a node — a single-node ledger or a
//! validator — and the errors and statuses they share.

use crate::mempool::AdmitError;
use secnet_types::{Hash, SignedTransaction};

pub use secnet_api::txs::TxStatus;

/// A failure of the node itself (not of a request).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] secnet_ledger::LedgerError),
    /// A lock was poisoned by a panic in another thread.
    #[error("internal state poisoned by an earlier failure; restart the node")]
    Poisoned,
}

/// What the API needs from a node: a single-node ledger or a validator.
pub trait Backend: Send + Sync + 'static {
    /// Admits a transaction (and, on a validator, gossips it to the other validators).
    fn submit(&self, tx: SignedTransaction) -> Result<Result<Hash, AdmitError>, NodeError>;
    /// Admits several transactions; one result each.
    fn submit_batch(
        &self,
        txs: Vec<SignedTransaction>,
    ) -> Result<Vec<Result<Hash, AdmitError>>, NodeError> {
        txs.into_iter().map(|tx| self.submit(tx)).collect()
    }
    /// Where a transaction is.
    fn tx_status(&self, hash: &Hash) -> Result<TxStatus, NodeError>;
    /// Runs `f` with the ledger locked.
    fn visit_ledger(&self, f: &mut dyn FnMut(&secnet_ledger::Ledger)) -> Result<(), NodeError>;
    /// Number of pending transactions.
    fn pending(&self) -> Result<usize, NodeError>;
    /// The node's signing key.
    fn key(&self) -> &secnet_types::Keypair;
    /// The validators and the last height each is known to have reached.
    fn validators(&self) -> Vec<secnet_api::chain::ValidatorStatus>;
    /// The finalization certificate of the block at `height`, in Commonware's encoding, if
    /// this node has one (a block finalized only through a descendant has none).
    fn certificate(&self, height: u64) -> CertificateFuture<'_>;
    /// The largest access-log head a quorum of validators cosigned, as far as this node
    /// heard.
    fn cosigned_checkpoint(&self) -> Option<secnet_certified::CosignedCheckpoint>;
    /// The height of the last block the ledger applied, and its changes: what a request
    /// waiting for a block awaits instead of asking again and again.
    fn applied_heights(&self) -> tokio::sync::watch::Receiver<u64>;
}

/// What [`Backend::certificate`] answers.
pub type CertificateFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<u8>>> + Send + 'a>>;

impl dyn Backend {
    /// Runs `f` with the ledger locked and returns its result.
    pub fn with_ledger<R>(
        &self,
        f: impl FnOnce(&secnet_ledger::Ledger) -> R,
    ) -> Result<R, NodeError> {
        let mut f = Some(f);
        let mut out = None;
        self.visit_ledger(&mut |l| {
            if let Some(f) = f.take() {
                out = Some(f(l));
            }
        })?;
        out.ok_or(NodeError::Poisoned)
    }
}
