//! Audit proofs of the access log in the JSON shape that RFC 6962 tooling expects
//! (byte strings as lower-case hex), and their verification.

use crate::error::LedgerError;
use crate::store::Ledger;
use secnet_merkle::log::{VerifyError, leaf_hash, verify_consistency, verify_inclusion};
use secnet_types::Hash;
use serde::{Deserialize, Serialize};

/// Proof that `leaf` is entry `leaf_index` of the log of `tree_size` leaves with `root_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// Size of the tree the proof is for.
    pub tree_size: u64,
    /// Root of that tree.
    pub root_hash: Hash,
    /// Index of the leaf.
    pub leaf_index: u64,
    /// The leaf's bytes, hex.
    #[serde(with = "hex_bytes")]
    pub leaf: Vec<u8>,
    /// `SHA-256(0x00 || leaf)`.
    pub leaf_hash: Hash,
    /// Sibling hashes from the leaf upwards.
    pub audit_path: Vec<Hash>,
}

/// Proof that the log of `second_size` leaves extends the log of `first_size` leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// The older size.
    pub first_size: u64,
    /// The newer size.
    pub second_size: u64,
    /// Root at the older size.
    pub first_root: Hash,
    /// Root at the newer size.
    pub second_root: Hash,
    /// The proof hashes.
    pub proof: Vec<Hash>,
}

/// Why an audit proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The stated leaf hash is not the hash of the stated leaf.
    #[error("leaf_hash is not SHA-256(0x00 || leaf)")]
    LeafHashMismatch,
    /// The Merkle check failed.
    #[error(transparent)]
    Merkle(#[from] VerifyError),
}

fn digests(hashes: &[Hash]) -> Vec<[u8; 32]> {
    hashes.iter().map(|h| h.0).collect()
}

impl InclusionProof {
    /// Verifies the proof on its own terms (the caller compares `root_hash` with a root it
    /// trusts, e.g. from a signed checkpoint).
    pub fn verify(&self) -> Result<(), AuditError> {
        if leaf_hash(&self.leaf) != self.leaf_hash.0 {
            return Err(AuditError::LeafHashMismatch);
        }
        verify_inclusion(
            &self.leaf_hash.0,
            self.leaf_index,
            self.tree_size,
            &digests(&self.audit_path),
            &self.root_hash.0,
        )?;
        Ok(())
    }
}

impl ConsistencyProof {
    /// Verifies that the second root extends the first.
    pub fn verify(&self) -> Result<(), AuditError> {
        verify_consistency(
            self.first_size,
            self.second_size,
            &self.first_root.0,
            &self.second_root.0,
            &digests(&self.proof),
        )?;
        Ok(())
    }
}

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

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s.trim()).map_err(serde::de::Error::custom)
    }
}
