//! Merkle structures, pure and deterministic.
//!
//! - [`log`]: an append-only RFC 6962 (RFC 9162) transparency log with inclusion and
//!   consistency proofs that any Certificate Transparency verifier accepts.
//! - [`smt`]: a sparse Merkle tree over 256-bit keys whose root depends only on the set of
//!   entries (never on the order of updates), with membership and non-membership proofs.

pub mod log;
pub mod smt;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

pub(crate) fn sha256(parts: &[&[u8]]) -> Digest {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}
