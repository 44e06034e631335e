//! Audit proofs of the access log (`secnet_certified::log_proof` shapes) made from the
//! stored log ([`crate::log_tree`]).

use crate::error::LedgerError;
use crate::log_tree::LogReader;
use crate::store::Ledger;
use secnet_certified::log_proof::{ConsistencyProof, InclusionProof};
use secnet_types::Hash;

impl Ledger {
    /// An inclusion proof for leaf `index` in the log of `size` leaves (default: all),
    /// checked against the state's log root (see [`LogReader`]).
    pub fn inclusion_proof(
        &self,
        index: u64,
        size: Option<u64>,
    ) -> Result<InclusionProof, LedgerError> {
        self.log_reader()?.inclusion_proof(index, size)
    }

    /// A consistency proof between two sizes of the log, checked like
    /// [`Self::inclusion_proof`].
    pub fn consistency_proof(
        &self,
        first: u64,
        second: u64,
    ) -> Result<ConsistencyProof, LedgerError> {
        self.log_reader()?.consistency_proof(first, second)
    }

    /// The access log as applied now, to make proofs from after letting go of the ledger: a
    /// node makes many of them (an owner's history) without holding up blocks.
    pub fn log_reader(&self) -> Result<LogReader, LedgerError> {
        Ok(LogReader::new(
            self.stored_log()?,
            self.state().log().root(),
        ))
    }

    /// The current checkpoint of the access log.
    pub fn checkpoint(&self) -> crate::Checkpoint {
        let log = self.state().log();
        crate::Checkpoint {
            origin: secnet_certified::checkpoint::log_origin(&self.genesis().chain_id),
            tree_size: log.len(),
            root_hash: Hash(log.root()),
        }
    }
}
