//! Proofs that a state entry has a value (or none) under a state root.

use crate::entries::{StateKey, StateValue};
use secnet_merkle::smt::{SmtProof, SmtVerifyError};
use secnet_types::Hash;
use serde::{Deserialize, Serialize};

/// A state entry with its sparse Merkle proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateProof {
    /// The height whose state root this proof is against.
    pub height: u64,
    /// The state root.
    pub state_root: Hash,
    /// The entry's key.
    pub key: StateKey,
    /// The entry's value bytes, or `None` to prove absence.
    pub value: Option<Vec<u8>>,
    /// The Merkle proof.
    pub proof: SmtProof,
}

/// Why a state proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateProofError {
    /// The proof is against another root.
    #[error("proof is against root {proof}, expected {expected}")]
    OtherRoot {
        /// Root in the proof.
        proof: Hash,
        /// Root the verifier trusts.
        expected: Hash,
    },
    /// The Merkle path does not verify.
    #[error(transparent)]
    Merkle(#[from] SmtVerifyError),
}

impl StateProof {
    /// Verifies against a state root the caller trusts (e.g. from a finalized header).
    pub fn verify(&self, trusted_root: &Hash) -> Result<(), StateProofError> {
        if &self.state_root != trusted_root {
            return Err(StateProofError::OtherRoot {
                proof: self.state_root,
                expected: *trusted_root,
            });
        }
        let value_hash = self.value.as_ref().map(|v| Hash::digest(v).0);
        self.proof
            .verify(&trusted_root.0, &self.key.tree_key().0, value_hash.as_ref())?;
        Ok(())
    }

    /// The proven value, decoded.
    pub fn decoded_value(&self) -> Option<StateValue> {
        let bytes = self.value.as_ref()?;
        StateValue::from_bytes(&self.key, bytes).ok()
    }
}
