//! Audit proofs of the access log (`secnet_certified::log_proof` shapes) made from the
//! stored log.

use crate::error::LedgerError;
use crate::store::Ledger;
use secnet_certified::log_proof::{ConsistencyProof, InclusionProof};
use secnet_merkle::log::leaf_hash;
use secnet_types::Hash;

impl Ledger {
    /// An inclusion proof for leaf `index` in the log of `size` leaves (default: all).
    pub fn inclusion_proof(
        &self,
        index: u64,
        size: Option<u64>,
    ) -> Result<InclusionProof, LedgerError> {
        let log = self.state().log();
        let size = size.unwrap_or(log.len());
        let audit_path = log.inclusion_proof(index, size)?;
        let leaf = self
            .log_leaf(index)?
            .ok_or_else(|| LedgerError::Corrupt(format!("access log leaf {index} is missing")))?;
        Ok(InclusionProof {
            tree_size: size,
            root_hash: Hash(log.root_at(size)?),
            leaf_index: index,
            leaf_hash: Hash(leaf_hash(&leaf)),
            leaf,
            audit_path: audit_path.into_iter().map(Hash).collect(),
        })
    }

    /// A consistency proof between two sizes of the log.
    pub fn consistency_proof(
        &self,
        first: u64,
        second: u64,
    ) -> Result<ConsistencyProof, LedgerError> {
        let log = self.state().log();
        let proof = log.consistency_proof(first, second)?;
        Ok(ConsistencyProof {
            first_size: first,
            second_size: second,
            first_root: Hash(log.root_at(first)?),
            second_root: Hash(log.root_at(second)?),
            proof: proof.into_iter().map(Hash).collect(),
        })
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
