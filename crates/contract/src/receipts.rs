//! The receipts root of a block: an RFC 6962 Merkle tree over the encoded receipts in
//! transaction order, so that one receipt can be proven against the root a certified header
//! commits to.

use commonware_codec::Write as _;
use secnet_merkle::log::{Frontier, MerkleLog, ProofError};
use secnet_types::{Hash, Receipt};

fn tree(receipts: &[Receipt]) -> MerkleLog {
    let mut log = MerkleLog::new();
    for r in receipts {
        log.append(&r.to_bytes());
    }
    log
}

/// The receipts root of a block's receipts (of no receipts: SHA-256 of nothing). Each
/// receipt is encoded into one reused buffer and only the tree's right edge is kept.
pub fn receipts_root(receipts: &[Receipt]) -> Hash {
    let mut frontier = Frontier::default();
    let mut bytes = Vec::new();
    for r in receipts {
        bytes.clear();
        r.write(&mut bytes);
        frontier.append(&bytes);
    }
    Hash(frontier.root())
}

/// The audit path of receipt `index` among `receipts`, from the leaf upwards.
pub fn receipt_proof(receipts: &[Receipt], index: u64) -> Result<Vec<[u8; 32]>, ProofError> {
    tree(receipts).inclusion_proof(index, receipts.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secnet_types::{Event, Outcome, Rejection};

    #[test]
    fn the_root_is_the_root_proofs_are_checked_against() {
        let mut receipts = Vec::new();
        for i in 0..40u64 {
            assert_eq!(receipts_root(&receipts), Hash(tree(&receipts).root()));
            let outcome = if i % 3 == 0 {
                Outcome::Rejected {
                    rejection: Rejection::InsufficientBalance {
                        needed: i,
                        available: 0,
                    },
                }
            } else {
                Outcome::Applied {
                    events: vec![Event::Registered {
                        data: Hash::digest(&i.to_be_bytes()),
                    }],
                }
            };
            receipts.push(Receipt {
                tx: Hash::digest(&[i as u8]),
                outcome,
            });
        }
    }
}
