//! Signed checkpoints of the access log, as C2SP signed notes
//! (`tlog-checkpoint` body, Ed25519 `signed-note` signature), so that tools of the
//! transparency-log ecosystem can verify them.
//!
//! ```text
//! secnet/<chain id>/access-log
//! <tree size>
//! <base64 root hash>
//!
//! — <key name> <base64(key id || signature)>
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use secnet_types::{AccountId, Hash, Keypair, Signature};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A log size and root, for one log origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The log's name: `secnet/<chain id>/access-log`.
    pub origin: String,
    /// Number of leaves.
    pub tree_size: u64,
    /// RFC 6962 root.
    pub root_hash: Hash,
}

/// A checkpoint and its signed-note text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The signed note, ready to publish.
    pub note: String,
}

/// Why a signed checkpoint does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The text is not a signed note with a checkpoint body.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// No signature by the expected key.
    #[error("no signature by key {0}")]
    NoSignatureByKey(String),
    /// The signature does not verify.
    #[error("signature by {0} does not verify")]
    BadSignature(String),
}

/// The signed-note key id: the first 4 bytes of SHA-256(name || "\n" || 0x01 || public key).
fn key_id(name: &str, key: &AccountId) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([0x01]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 4];
    id.copy_from_slice(digest.get(..4).unwrap_or(&[0; 4]));
    id
}

/// The verifier key string of the note ecosystem: `name+hex(key id)+base64(0x01 || key)`.
pub fn verifier_key(name: &str, key: &AccountId) -> String {
    let mut raw = vec![0x01];
    raw.extend_from_slice(key.as_bytes());
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, key)),
        B64.encode(raw)
    )
}

impl Checkpoint {
    /// The note body that is signed.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.tree_size,
            B64.encode(self.root_hash.as_bytes())
        )
    }

    /// Signs as `name` with `key`.
    pub fn sign(&self, name: &str, key: &Keypair) -> SignedCheckpoint {
        let body = self.body();
        let sig = key.sign_raw(body.as_bytes());
        let mut blob = key_id(name, &key.account()).to_vec();
        blob.extend_from_slice(&sig.0);
        SignedCheckpoint {
            checkpoint: self.clone(),
            note: format!("{body}\n\u{2014} {name} {}\n", B64.encode(blob)),
        }
    }

    /// Parses and verifies a signed note against the key `name`/`key`.
    pub fn verify_note(
        note: &str,
        name: &str,
        key: &AccountId,
    ) -> Result<Checkpoint, CheckpointError> {
        let (body, sigs) = note.split_once("\n\n").ok_or(CheckpointError::Malformed(
            "no blank line before the signatures",
        ))?;
        let body = format!("{body}\n");
        let mut lines = body.lines();
        let origin = lines
            .next()
            .ok_or(CheckpointError::Malformed("no origin line"))?;
        let tree_size = lines
            .next()
            .and_then(|l| l.parse::<u64>().ok())
            .ok_or(CheckpointError::Malformed("tree size is not a number"))?;
        let root: [u8; 32] = lines
            .next()
            .and_then(|l| B64.decode(l).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or(CheckpointError::Malformed(
                "root hash is not 32 bytes of base64",
            ))?;
        let want_id = key_id(name, key);
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                continue;
            };
            let Some((signer, blob)) = rest.split_once(' ') else {
                continue;
            };
            let Ok(blob) = B64.decode(blob) else {
                continue;
            };
            if signer != name || blob.len() != 68 || blob.get(..4) != Some(&want_id[..]) {
                continue;
            }
            let mut sig = [0u8; 64];
            sig.copy_from_slice(blob.get(4..).unwrap_or(&[0; 64]));
            if !Signature(sig).verify_raw(key, body.as_bytes()) {
                return Err(CheckpointError::BadSignature(name.to_string()));
            }
            return Ok(Checkpoint {
                origin: origin.to_string(),
                tree_size,
                root_hash: Hash(root),
            });
        }
        Err(CheckpointError::NoSignatureByKey(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_notes_round_trip_and_detect_tampering() {
        let key = Keypair::deterministic("checkpoint", 0);
        let cp = Checkpoint {
            origin: "secnet/test/access-log".into(),
            tree_size: 12,
            root_hash: Hash::digest(b"root"),
        };
        let signed = cp.sign("node0", &key);
        assert!(signed.note.starts_with("secnet/test/access-log\n12\n"));
        assert_eq!(
            Checkpoint::verify_note(&signed.note, "node0", &key.account()),
            Ok(cp)
        );
        let tampered = signed.note.replace("\n12\n", "\n13\n");
        assert_eq!(
            Checkpoint::verify_note(&tampered, "node0", &key.account()),
            Err(CheckpointError::BadSignature("node0".into()))
        );
        let other = Keypair::deterministic("checkpoint", 1);
        assert!(matches!(
            Checkpoint::verify_note(&signed.note, "node0", &other.account()),
            Err(CheckpointError::NoSignatureByKey(_))
        ));
        assert!(verifier_key("node0", &key.account()).starts_with("node0+"));
    }
}
