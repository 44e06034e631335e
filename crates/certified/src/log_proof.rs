//! Proofs of the access log in the JSON shape that RFC 6962 tooling expects (byte strings
//! as lower-case hex), and their verification.

use secnet_merkle::log::{VerifyError, leaf_hash, verify_consistency, verify_inclusion};
use secnet_types::Hash;
use serde::{Deserialize, Serialize};

/// Proof that `leaf` is entry `leaf_index` of the log of `tree_size` leaves with `root_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InclusionProof {
    /// Size of the tree the proof is for.
    pub tree_size: u64,
    /// Root of that tree.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub root_hash: Hash,
    /// Index of the leaf.
    pub leaf_index: u64,
    /// The leaf's bytes, hex.
    #[serde(with = "hex_bytes")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub leaf: Vec<u8>,
    /// `SHA-256(0x00 || leaf)`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub leaf_hash: Hash,
    /// Sibling hashes from the leaf upwards.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub audit_path: Vec<Hash>,
}

/// Proof that the log of `second_size` leaves extends the log of `first_size` leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsistencyProof {
    /// The older size.
    pub first_size: u64,
    /// The newer size.
    pub second_size: u64,
    /// Root at the older size.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub first_root: Hash,
    /// Root at the newer size.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub second_root: Hash,
    /// The proof hashes.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
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
