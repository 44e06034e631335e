//! Certified state: what SecNet's validators sign and how anyone holding the genesis checks it.
//!
//! A block header commits to the state roots of earlier heights
//! ([`secnet_types::StateCommitment`]); simplex's finalization certificate — ed25519
//! signatures of at least 2f+1 of the genesis validators over the header's hash — certifies
//! the header, and so those roots; a sparse Merkle proof against a certified root proves any
//! state entry, including the access log's head. Nothing here trusts the node that serves the
//! answer: the validator set and the consensus namespace come from the genesis alone.
//!
//! - [`certificate`]: the certificate format, its verification with typed errors, and the
//!   single-signer certificates of a one-validator development network.
//! - [`checkpoint`]: the access log's checkpoints as C2SP signed notes, the validators'
//!   `tlog-cosignature` v1 cosignatures over them, and a quorum's verification.
//! - [`log_proof`]: RFC 9162 inclusion and consistency proofs of the access log.
//! - [`answer`]: the shapes a node answers with (hex on the wire, decoded with bounds).

pub mod answer;
pub mod certificate;
pub mod checkpoint;
pub mod log_proof;

pub use answer::{
    CertifiedHeader, CertifiedState, CosignedCheckpointAnswer, HexBytes, ReceiptProof,
};
pub use certificate::{
    CertificateError, Certifier, CommitteeVerifier, Finalization, Scheme, certify,
    consensus_namespace, digest_of, quorum_of,
};
pub use checkpoint::{
    Checkpoint, CheckpointError, CosignPool, CosignRejected, Cosignature, CosignedCheckpoint,
};

/// The network's fingerprint: the first 32 hex digits of SHA-256 over `secnet/network/v2`,
/// the chain id, and one line per validator (sorted): its key in lower-case hex, a space,
/// and its name as the genesis gives it (maybe empty).
///
/// A browser that pinned the validators shows the same value, so a patient can compare what
/// their browser checks history against with what their hospital publishes.
pub fn network_fingerprint(genesis: &secnet_types::Genesis) -> String {
    use sha2::{Digest as _, Sha256};
    let mut keys: Vec<String> = genesis
        .validators
        .iter()
        .map(|v| format!("{} {}", v.key.to_hex(), v.name))
        .collect();
    keys.sort();
    let mut text = format!("secnet/network/v2\n{}\n", genesis.chain_id);
    for k in keys {
        text.push_str(&k);
        text.push('\n');
    }
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    digest.get(..32).unwrap_or(&digest).to_string()
}
