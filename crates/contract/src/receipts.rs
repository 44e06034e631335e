//! The receipts root of a block: an RFC 6962 Merkle tree over the encoded receipts in
//! transaction order, so that one receipt can be proven against the root a certified header
//! commits to.

use secnet_merkle::log::{MerkleLog, ProofError};
use secnet_types::{Hash, Receipt};

fn tree(receipts: &[Receipt]) -> MerkleLog {
    let mut log = MerkleLog::new();
    for r in receipts {
        log.append(&r.to_bytes());
    }
    log
}

/// The receipts root of a block's receipts (of no receipts: SHA-256 of nothing).
pub fn receipts_root(receipts: &[Receipt]) -> Hash {
    Hash(tree(receipts).root())
}

/// The audit path of receipt `index` among `receipts`, from the leaf upwards.
pub fn receipt_proof(receipts: &[Receipt], index: u64) -> Result<Vec<[u8; 32]>, ProofError> {
    tree(receipts).inclusion_proof(index, receipts.len() as u64)
}
