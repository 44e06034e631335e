//! Checkpoints of the access log as C2SP signed notes (`tlog-checkpoint` body), and the
//! validators' cosignatures over them (`tlog-cosignature` v1, Ed25519), so that tools of the
//! transparency-log ecosystem can check them and nobody has to take one node's word.
//!
//! ```text
//! secnet/<chain id>/access-log
//! <tree size>
//! <base64 root hash>
//!
//! — secnet/<chain id>/validator/<key prefix> <base64(key id || timestamp || signature)>
//! ```
//!
//! A validator cosigns the log head it has executed, and only that: the access log's size
//! and root are contract state, so every honest validator that executed the same height
//! holds the same head. A note with cosignatures of 2f+1 of the genesis validators carries
//! at least f+1 honest ones, which is what [`verify_cosigned`] requires.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use secnet_types::{AccountId, Hash, Keypair, Signature};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, VecDeque};

/// Largest note read, in bytes.
pub const MAX_NOTE_LEN: usize = 64 * 1024;

/// Most signature lines read from one note.
pub const MAX_NOTE_SIGNATURES: usize = 256;

/// Signature type byte of a plain Ed25519 note signature (C2SP `signed-note`).
const SIG_TYPE_ED25519: u8 = 0x01;

/// Signature type byte of an Ed25519 cosignature (C2SP `tlog-cosignature` v1).
const SIG_TYPE_COSIGNATURE: u8 = 0x04;

/// A log size and root, for one log origin.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checkpoint {
    /// The log's name: `secnet/<chain id>/access-log`.
    pub origin: String,
    /// Number of leaves.
    pub tree_size: u64,
    /// RFC 6962 root.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
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

/// Why a signed or cosigned checkpoint does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The text is not a signed note with a checkpoint body.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The checkpoint is of another log.
    #[error("checkpoint of log {found:?}, expected {expected:?}")]
    WrongOrigin {
        /// The origin this network's log has.
        expected: String,
        /// The note's origin line.
        found: String,
    },
    /// No signature by the expected key.
    #[error("no signature by key {0}")]
    NoSignatureByKey(String),
    /// The signature does not verify.
    #[error("signature by {0} does not verify")]
    BadSignature(String),
    /// Fewer validators cosigned than a quorum.
    #[error("{got} of the genesis validators cosigned the checkpoint; {need} are needed")]
    TooFewCosignatures {
        /// Distinct genesis validators whose cosignature verified.
        got: usize,
        /// The quorum, 2f+1.
        need: usize,
    },
}

/// The signed-note key id: the first 4 bytes of SHA-256(name || "\n" || type || public key).
fn key_id(name: &str, sig_type: u8, key: &AccountId) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([sig_type]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 4];
    id.copy_from_slice(digest.get(..4).unwrap_or(&[0; 4]));
    id
}

/// The verifier key string of the note ecosystem: `name+hex(key id)+base64(0x01 || key)`.
pub fn verifier_key(name: &str, key: &AccountId) -> String {
    vkey(name, SIG_TYPE_ED25519, key)
}

/// The cosigner's verifier key (`vkey` with signature type 0x04), for witness tooling.
pub fn cosigner_verifier_key(name: &str, key: &AccountId) -> String {
    vkey(name, SIG_TYPE_COSIGNATURE, key)
}

fn vkey(name: &str, sig_type: u8, key: &AccountId) -> String {
    let mut raw = vec![sig_type];
    raw.extend_from_slice(key.as_bytes());
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, sig_type, key)),
        B64.encode(raw)
    )
}

/// The name a validator cosigns under: `secnet/<chain id>/validator/<first 8 bytes of its
/// key, hex>`. Anyone holding the genesis derives it.
pub fn cosigner_name(chain_id: &str, key: &AccountId) -> String {
    let hex = key.to_hex();
    format!(
        "secnet/{chain_id}/validator/{}",
        hex.get(..16).unwrap_or(&hex)
    )
}

/// The origin line of a network's access log.
pub fn log_origin(chain_id: &str) -> String {
    format!("secnet/{chain_id}/access-log")
}

/// One signature line of a note: the key name and the decoded blob.
struct SignatureLine<'a> {
    name: &'a str,
    blob: Vec<u8>,
}

/// A note split into its checkpoint, its body (with the final newline) and its signature
/// lines, with every size bounded.
fn parse_note(note: &str) -> Result<(Checkpoint, String, Vec<SignatureLine<'_>>), CheckpointError> {
    if note.len() > MAX_NOTE_LEN {
        return Err(CheckpointError::Malformed("note longer than 64 KiB"));
    }
    let (body, sigs) = note.split_once("\n\n").ok_or(CheckpointError::Malformed(
        "no blank line before the signatures",
    ))?;
    let body = format!("{body}\n");
    let mut lines = body.lines();
    let origin = lines
        .next()
        .filter(|l| !l.is_empty())
        .ok_or(CheckpointError::Malformed("no origin line"))?;
    let tree_size = lines
        .next()
        .filter(|l| !l.starts_with('0') || *l == "0")
        .and_then(|l| l.parse::<u64>().ok())
        .ok_or(CheckpointError::Malformed(
            "tree size is not a decimal number",
        ))?;
    let root: [u8; 32] = lines
        .next()
        .and_then(|l| B64.decode(l).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or(CheckpointError::Malformed(
            "root hash is not 32 bytes of base64",
        ))?;
    let checkpoint = Checkpoint {
        origin: origin.to_string(),
        tree_size,
        root_hash: Hash(root),
    };
    // What is verified is exactly what was signed: the canonical three lines, nothing more
    // (no extension lines, no `+7` or `07`, no carriage returns).
    if body != checkpoint.body() {
        return Err(CheckpointError::Malformed(
            "the body is not a canonical checkpoint: origin, decimal size, base64 root",
        ));
    }
    let mut parsed = Vec::new();
    for line in sigs.lines() {
        if line.is_empty() {
            continue;
        }
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or(CheckpointError::Malformed(
                "a signature line does not start with an em dash",
            ))?;
        let (name, blob) = rest.split_once(' ').ok_or(CheckpointError::Malformed(
            "a signature line has no signature",
        ))?;
        let blob = B64
            .decode(blob)
            .map_err(|_| CheckpointError::Malformed("a signature is not base64"))?;
        if parsed.len() == MAX_NOTE_SIGNATURES {
            return Err(CheckpointError::Malformed("more than 256 signature lines"));
        }
        parsed.push(SignatureLine { name, blob });
    }
    Ok((checkpoint, body, parsed))
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

    /// Signs as the log, named `name`, with `key` (a plain `signed-note` signature).
    pub fn sign(&self, name: &str, key: &Keypair) -> SignedCheckpoint {
        let body = self.body();
        let sig = key.sign_raw(body.as_bytes());
        let mut blob = key_id(name, SIG_TYPE_ED25519, &key.account()).to_vec();
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
        let (checkpoint, body, lines) = parse_note(note)?;
        let want_id = key_id(name, SIG_TYPE_ED25519, key);
        let line = lines
            .iter()
            .find(|l| l.name == name && l.blob.len() == 68 && l.blob.get(..4) == Some(&want_id[..]))
            .ok_or_else(|| CheckpointError::NoSignatureByKey(name.to_string()))?;
        let signature = Signature(signature_bytes(line.blob.get(4..)));
        if !signature.verify_raw(key, body.as_bytes()) {
            return Err(CheckpointError::BadSignature(name.to_string()));
        }
        Ok(checkpoint)
    }

    /// What a cosigner signs at `time`: `cosignature/v1`, the time line, then the body.
    fn cosigned_message(&self, time: u64) -> String {
        format!("cosignature/v1\ntime {time}\n{}", self.body())
    }

    /// Cosigns this checkpoint with a validator's key at `time` (seconds since the epoch).
    pub fn cosign(&self, key: &Keypair, time: u64) -> Cosignature {
        Cosignature {
            signer: key.account(),
            time,
            signature: key.sign_raw(self.cosigned_message(time).as_bytes()),
        }
    }
}

fn signature_bytes(bytes: Option<&[u8]>) -> [u8; 64] {
    let mut sig = [0u8; 64];
    if let Some(b) = bytes
        && b.len() == 64
    {
        sig.copy_from_slice(b);
    }
    sig
}

/// A validator's cosignature of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cosignature {
    /// The validator.
    pub signer: AccountId,
    /// When it cosigned, in seconds since the epoch.
    pub time: u64,
    /// Its Ed25519 signature over the cosigned message.
    pub signature: Signature,
}

impl Cosignature {
    /// Whether this is the signer's cosignature of `checkpoint`.
    pub fn verifies(&self, checkpoint: &Checkpoint) -> bool {
        self.time <= i64::MAX as u64
            && self.signature.verify_raw(
                &self.signer,
                checkpoint.cosigned_message(self.time).as_bytes(),
            )
    }

    /// The note signature line, under the signer's name on network `chain_id`.
    pub fn line(&self, chain_id: &str) -> String {
        let name = cosigner_name(chain_id, &self.signer);
        let mut blob = key_id(&name, SIG_TYPE_COSIGNATURE, &self.signer).to_vec();
        blob.extend_from_slice(&self.time.to_be_bytes());
        blob.extend_from_slice(&self.signature.0);
        format!("\u{2014} {name} {}\n", B64.encode(blob))
    }
}

/// A checkpoint with the validators' cosignatures of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// One cosignature per validator, in key order.
    pub cosignatures: Vec<Cosignature>,
}

impl CosignedCheckpoint {
    /// The note: the checkpoint body, a blank line, one line per cosignature.
    pub fn note(&self, chain_id: &str) -> String {
        let mut note = format!("{}\n", self.checkpoint.body());
        for c in &self.cosignatures {
            note.push_str(&c.line(chain_id));
        }
        note
    }

    /// The validators that cosigned.
    pub fn cosigners(&self) -> Vec<AccountId> {
        self.cosignatures.iter().map(|c| c.signer).collect()
    }
}

/// Checks a cosigned note of network `chain_id`: its origin is this network's log, and at
/// least `quorum` distinct `validators` cosigned it. Lines under other names are ignored, as
/// the note format requires; a line under a validator's name and key id whose signature does
/// not verify is a forgery and fails the whole note. Returns the checkpoint and one verified
/// cosignature per validator that cosigned (its newest, if it cosigned more than once).
pub fn verify_cosigned(
    note: &str,
    chain_id: &str,
    validators: &[AccountId],
    quorum: usize,
) -> Result<(Checkpoint, Vec<Cosignature>), CheckpointError> {
    let (checkpoint, _, lines) = parse_note(note)?;
    let expected = log_origin(chain_id);
    if checkpoint.origin != expected {
        return Err(CheckpointError::WrongOrigin {
            expected,
            found: checkpoint.origin,
        });
    }
    let mut cosigners: Vec<Cosignature> = Vec::new();
    for validator in validators {
        let name = cosigner_name(chain_id, validator);
        let id = key_id(&name, SIG_TYPE_COSIGNATURE, validator);
        let mine = lines
            .iter()
            .filter(|l| l.name == name && l.blob.len() == 76 && l.blob.get(..4) == Some(&id[..]));
        for line in mine {
            let mut time = [0u8; 8];
            time.copy_from_slice(line.blob.get(4..12).unwrap_or(&[0; 8]));
            let cosignature = Cosignature {
                signer: *validator,
                time: u64::from_be_bytes(time),
                signature: Signature(signature_bytes(line.blob.get(12..))),
            };
            if !cosignature.verifies(&checkpoint) {
                return Err(CheckpointError::BadSignature(name));
            }
            match cosigners.iter_mut().find(|c| c.signer == *validator) {
                Some(kept) if kept.time < cosignature.time => *kept = cosignature,
                Some(_) => {}
                None => cosigners.push(cosignature),
            }
        }
    }
    if cosigners.len() < quorum {
        return Err(CheckpointError::TooFewCosignatures {
            got: cosigners.len(),
            need: quorum,
        });
    }
    Ok((checkpoint, cosigners))
}

/// Cosignatures a validator keeps per peer.
const KEPT_PER_SIGNER: usize = 16;

/// What a validator has heard of the others' cosignatures: each validator's most recent
/// ones (bounded, so a faulty peer cannot grow it), and the largest checkpoint that a
/// quorum cosigned.
#[derive(Debug, Clone)]
pub struct CosignPool {
    chain_id: String,
    quorum: usize,
    recent: BTreeMap<AccountId, VecDeque<(Checkpoint, Cosignature)>>,
    best: Option<CosignedCheckpoint>,
}

/// Why a cosignature was not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignRejected {
    /// The signer is not a genesis validator.
    #[error("{0} is not a validator")]
    NotAValidator(AccountId),
    /// The checkpoint is of another log.
    #[error("checkpoint of another log: {0:?}")]
    WrongOrigin(String),
    /// The signature does not verify.
    #[error("cosignature by {0} does not verify")]
    BadSignature(AccountId),
}

impl CosignPool {
    /// An empty pool for network `chain_id` with these validators, of which `quorum` must
    /// cosign.
    pub fn new(chain_id: &str, validators: &[AccountId], quorum: usize) -> CosignPool {
        CosignPool {
            chain_id: chain_id.to_string(),
            quorum,
            recent: validators.iter().map(|v| (*v, VecDeque::new())).collect(),
            best: None,
        }
    }

    /// An empty pool for the network `genesis` defines.
    pub fn from_genesis(genesis: &secnet_types::Genesis) -> CosignPool {
        let validators: Vec<AccountId> = genesis.validators.iter().map(|v| v.key).collect();
        let quorum = crate::certificate::quorum_of(validators.len());
        CosignPool::new(&genesis.chain_id, &validators, quorum)
    }

    /// The network's chain id.
    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// Adds a cosignature after checking it. Returns whether the quorate checkpoint changed.
    pub fn add(
        &mut self,
        checkpoint: Checkpoint,
        cosignature: Cosignature,
    ) -> Result<bool, CosignRejected> {
        if !self.wants(&checkpoint, &cosignature.signer)? {
            return Ok(false);
        }
        if !cosignature.verifies(&checkpoint) {
            return Err(CosignRejected::BadSignature(cosignature.signer));
        }
        Ok(self.insert_verified(checkpoint, cosignature))
    }

    /// Whether a cosignature of `checkpoint` by `signer` would be news, checked before its
    /// signature (so that repeats cost nothing): a genesis validator, this network's log, and
    /// a checkpoint this signer's kept cosignatures do not already cover.
    pub fn wants(
        &self,
        checkpoint: &Checkpoint,
        signer: &AccountId,
    ) -> Result<bool, CosignRejected> {
        if checkpoint.origin != log_origin(&self.chain_id) {
            return Err(CosignRejected::WrongOrigin(checkpoint.origin.clone()));
        }
        let Some(kept) = self.recent.get(signer) else {
            return Err(CosignRejected::NotAValidator(*signer));
        };
        Ok(!kept.iter().any(|(c, _)| c == checkpoint))
    }

    /// Adds a cosignature whose signature the caller verified ([`Cosignature::verifies`]).
    /// Returns whether the quorate checkpoint changed.
    pub fn insert_verified(&mut self, checkpoint: Checkpoint, cosignature: Cosignature) -> bool {
        let Some(kept) = self.recent.get_mut(&cosignature.signer) else {
            return false;
        };
        if kept.iter().any(|(c, _)| *c == checkpoint) {
            return false;
        }
        if kept.len() == KEPT_PER_SIGNER {
            kept.pop_front();
        }
        kept.push_back((checkpoint.clone(), cosignature));
        let cosignatures: Vec<Cosignature> = self
            .recent
            .values()
            .filter_map(|kept| kept.iter().find(|(c, _)| *c == checkpoint).map(|(_, s)| *s))
            .collect();
        if cosignatures.len() < self.quorum {
            return false;
        }
        let better = match &self.best {
            None => true,
            Some(best) => {
                checkpoint.tree_size > best.checkpoint.tree_size
                    || (best.checkpoint == checkpoint
                        && cosignatures.len() > best.cosignatures.len())
            }
        };
        if better {
            self.best = Some(CosignedCheckpoint {
                checkpoint,
                cosignatures,
            });
        }
        better
    }

    /// The largest checkpoint a quorum has cosigned, with every cosignature heard for it.
    pub fn best(&self) -> Option<&CosignedCheckpoint> {
        self.best.as_ref()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn checkpoint(size: u64) -> Checkpoint {
        Checkpoint {
            origin: log_origin("test"),
            tree_size: size,
            root_hash: Hash::digest(&size.to_be_bytes()),
        }
    }

    fn validators(n: u64) -> Vec<Keypair> {
        (0..n)
            .map(|i| Keypair::deterministic("cosigner", i))
            .collect()
    }

    fn accounts(keys: &[Keypair]) -> Vec<AccountId> {
        keys.iter().map(Keypair::account).collect()
    }

    fn note(cp: &Checkpoint, signers: &[Keypair]) -> String {
        CosignedCheckpoint {
            checkpoint: cp.clone(),
            cosignatures: signers
                .iter()
                .map(|k| cp.cosign(k, 1_700_000_000))
                .collect(),
        }
        .note("test")
    }

    #[test]
    fn signed_notes_round_trip_and_detect_tampering() {
        let key = Keypair::deterministic("checkpoint", 0);
        let cp = checkpoint(12);
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

    #[test]
    fn a_quorum_of_cosignatures_verifies_and_fewer_do_not() {
        let keys = validators(4);
        let all = accounts(&keys);
        let cp = checkpoint(7);
        let text = note(&cp, &keys[..3]);
        assert!(text.starts_with("secnet/test/access-log\n7\n"));
        assert!(text.contains("\n\n\u{2014} secnet/test/validator/"));
        let (got, cosignatures) = verify_cosigned(&text, "test", &all, 3).unwrap();
        assert_eq!(got, cp);
        let signers: Vec<AccountId> = cosignatures.iter().map(|c| c.signer).collect();
        assert_eq!(signers, all[..3].to_vec());
        assert_eq!(
            verify_cosigned(&note(&cp, &keys[..2]), "test", &all, 3),
            Err(CheckpointError::TooFewCosignatures { got: 2, need: 3 })
        );
        // The same validator twice counts once.
        let twice = format!(
            "{}{}",
            note(&cp, &keys[..2]),
            cp.cosign(&keys[0], 5).line("test")
        );
        assert_eq!(
            verify_cosigned(&twice, "test", &all, 3),
            Err(CheckpointError::TooFewCosignatures { got: 2, need: 3 })
        );
    }

    #[test]
    fn forged_foreign_and_altered_notes_are_refused() {
        let keys = validators(4);
        let all = accounts(&keys);
        let cp = checkpoint(7);
        let text = note(&cp, &keys[..3]);
        // An altered size or root breaks every cosignature.
        let altered = text.replace("\n7\n", "\n8\n");
        assert!(matches!(
            verify_cosigned(&altered, "test", &all, 3),
            Err(CheckpointError::BadSignature(_))
        ));
        // Keys outside the validator set are ignored, so they never make a quorum.
        let outsiders = validators(8);
        let foreign = note(&cp, &outsiders[4..]);
        assert_eq!(
            verify_cosigned(&foreign, "test", &all, 3),
            Err(CheckpointError::TooFewCosignatures { got: 0, need: 3 })
        );
        // Another network's log.
        assert!(matches!(
            verify_cosigned(&text, "other", &all, 3),
            Err(CheckpointError::WrongOrigin { .. })
        ));
        // Garbage.
        for bad in [
            "",
            "x",
            "a\n1\n\n",
            "a\n01\nAAAA\n\n",
            &"a".repeat(MAX_NOTE_LEN + 1),
        ] {
            assert!(matches!(
                verify_cosigned(bad, "test", &all, 3),
                Err(CheckpointError::Malformed(_))
            ));
        }
        // Only the canonical body verifies: no extension lines, signs or carriage returns.
        for altered in [
            text.replacen("\n7\n", "\n+7\n", 1),
            text.replacen("\n7\n", "\n07\n", 1),
            text.replace('\n', "\r\n"),
            text.replacen("=\n\n", "=\nextension line\n\n", 1),
        ] {
            assert!(
                matches!(
                    verify_cosigned(&altered, "test", &all, 3),
                    Err(CheckpointError::Malformed(_))
                ),
                "{altered:?}"
            );
        }
        let bad_line = format!("{text}not a signature\n");
        assert!(matches!(
            verify_cosigned(&bad_line, "test", &all, 3),
            Err(CheckpointError::Malformed(_))
        ));
    }

    #[test]
    fn the_pool_keeps_the_largest_quorate_checkpoint_and_refuses_strangers() {
        let keys = validators(4);
        let all = accounts(&keys);
        let mut pool = CosignPool::new("test", &all, 3);
        let cp = checkpoint(3);
        assert!(!pool.add(cp.clone(), cp.cosign(&keys[0], 1)).unwrap());
        assert!(!pool.add(cp.clone(), cp.cosign(&keys[1], 1)).unwrap());
        assert!(pool.best().is_none());
        assert!(pool.add(cp.clone(), cp.cosign(&keys[2], 1)).unwrap());
        assert_eq!(pool.best().unwrap().checkpoint, cp);
        // A fourth cosignature of the same checkpoint is added to it.
        assert!(pool.add(cp.clone(), cp.cosign(&keys[3], 1)).unwrap());
        assert_eq!(pool.best().unwrap().cosignatures.len(), 4);
        // A larger checkpoint replaces it only once a quorum cosigned it.
        let next = checkpoint(9);
        pool.add(next.clone(), next.cosign(&keys[0], 2)).unwrap();
        pool.add(next.clone(), next.cosign(&keys[1], 2)).unwrap();
        assert_eq!(pool.best().unwrap().checkpoint, cp);
        pool.add(next.clone(), next.cosign(&keys[3], 2)).unwrap();
        assert_eq!(pool.best().unwrap().checkpoint, next);
        let text = pool.best().unwrap().note("test");
        assert_eq!(verify_cosigned(&text, "test", &all, 3).unwrap().0, next);
        // Strangers, forgeries and other logs are refused.
        let stranger = Keypair::deterministic("stranger", 0);
        assert_eq!(
            pool.add(next.clone(), next.cosign(&stranger, 1)),
            Err(CosignRejected::NotAValidator(stranger.account()))
        );
        let mut forged = next.cosign(&keys[2], 1);
        forged.time = 2;
        assert_eq!(
            pool.add(next.clone(), forged),
            Err(CosignRejected::BadSignature(all[2]))
        );
        let mut other = next.clone();
        other.origin = log_origin("other");
        assert!(matches!(
            pool.add(other.clone(), other.cosign(&keys[2], 1)),
            Err(CosignRejected::WrongOrigin(_))
        ));
        // A faulty validator flooding cosignatures only replaces its own.
        for size in 100..200 {
            let cp = checkpoint(size);
            pool.add(cp.clone(), cp.cosign(&keys[0], 3)).unwrap();
        }
        assert_eq!(pool.best().unwrap().checkpoint, next);
        assert!(
            pool.recent
                .values()
                .all(|kept| kept.len() <= KEPT_PER_SIGNER)
        );
    }
}
