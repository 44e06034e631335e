//! A security rule as a file: a trained detector with metadata (what it protects against,
//! what it was trained on, how it measured), signed by its publisher. The file's SHA-256 is
//! its content address — the hash registered on the ledger — so a buyer checks what it
//! fetched against the registration, and the signature against the registering account.
//!
//! The file is one JSON document (media type `application/vnd.secnet.security-rule+json`),
//! whose signed body is kept as the exact string that was signed:
//!
//! ```text
//! {"format":"secnet-rule","version":1,
//!  "body":"{\"meta\":{…},\"detector\":\"<the detector file, as text>\"}",
//!  "signature":"<ed25519 by meta.publisher over SHA-256 of body, hex>"}
//! ```

use secnet_ai::data::Kind;
use secnet_ai::metrics::Report;
use secnet_ai::model::{Detector, ModelError};
use secnet_types::{AccountId, Hash, Keypair, Signature};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The `format` of every rule file.
pub const MAGIC: &str = "secnet-rule";
/// The format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The namespace rule signatures are made under.
pub const NAMESPACE: &[u8] = b"secnet/rule/v1";
/// Largest rule file read.
pub const MAX_RULE_BYTES: usize = 64 << 20;
/// Longest name or category.
pub const MAX_LABEL: usize = 64;
/// The media type rules are stored and served as.
pub const MEDIA_TYPE: &str = secnet_pdc::envelope::SECURITY_RULE;

/// What a rule says about itself. Everything here is covered by the publisher's signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleMeta {
    /// A name chosen by the publisher, e.g. `dos-mlp`.
    pub name: String,
    /// The publisher's version of this name; a newer rule has a larger version.
    pub version: u32,
    /// The attack category it protects against (`dos`, `scrape`, `any`, …).
    pub category: String,
    /// The publishing account.
    pub publisher: AccountId,
    /// The kind of records it scores.
    pub dataset: Kind,
    /// SHA-256 of the file it was trained on.
    pub data_sha256: String,
    /// Rows it was trained on.
    pub train_rows: usize,
    /// Classifier family and augmentation arm.
    pub family: String,
    /// The augmentation arm.
    pub augment: String,
    /// How it measured on its validation split.
    pub validation: Report,
    /// SHA-256 of the embedded detector file.
    pub detector_sha256: String,
}

/// A rule file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// Not a SecNet rule.
    #[error("not a SecNet security rule (not a JSON document of format {MAGIC:?})")]
    NotARule,
    /// Another format version.
    #[error("security rule format {found}; this secnet reads format {FORMAT_VERSION}")]
    Version {
        /// The file's version.
        found: String,
    },
    /// Larger than any rule.
    #[error("{0} bytes is larger than any security rule ({MAX_RULE_BYTES} bytes at most)")]
    TooLarge(usize),
    /// The signature does not verify against the named publisher.
    #[error(
        "the rule's signature does not verify against its publisher {0}: it was altered or not signed by them"
    )]
    BadSignature(AccountId),
    /// The embedded detector is unusable.
    #[error("the rule's detector: {0}")]
    Detector(#[from] ModelError),
    /// The body does not decode or contradicts itself.
    #[error("the security rule is malformed: {0}")]
    Malformed(String),
}

#[derive(Serialize, Deserialize)]
struct File {
    format: String,
    version: serde_json::Value,
    body: String,
    signature: String,
}

#[derive(Serialize, Deserialize)]
struct Body {
    meta: RuleMeta,
    detector: String,
}

/// A verified security rule.
#[derive(Debug, Clone)]
pub struct SecurityRule {
    /// Its metadata.
    pub meta: RuleMeta,
    /// The detector.
    pub detector: Detector,
    bytes: Vec<u8>,
}

fn label(what: &str, s: &str) -> Result<(), RuleError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_LABEL
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RuleError::Malformed(format!(
            "the {what} {s:?} must be 1 to {MAX_LABEL} letters, digits, '-', '_' or '.'"
        )))
    }
}

impl SecurityRule {
    /// Packages and signs `detector` as a rule published by `key`.
    pub fn create(
        key: &Keypair,
        name: &str,
        version: u32,
        category: &str,
        detector: &Detector,
    ) -> Result<SecurityRule, RuleError> {
        label("name", name)?;
        label("category", category)?;
        let detector_bytes = detector.to_bytes()?;
        let detector_text = String::from_utf8(detector_bytes.clone())
            .map_err(|_| RuleError::Malformed("the detector file is not text".into()))?;
        let p = &detector.provenance;
        let meta = RuleMeta {
            name: name.to_string(),
            version,
            category: category.to_string(),
            publisher: key.account(),
            dataset: p.dataset,
            data_sha256: p.data_sha256.clone(),
            train_rows: p.train_rows,
            family: p.family.to_string(),
            augment: p.augment.clone(),
            validation: p.validation.clone(),
            detector_sha256: hex::encode(Sha256::digest(&detector_bytes)),
        };
        let body = serde_json::to_string(&Body {
            meta,
            detector: detector_text,
        })
        .map_err(|e| RuleError::Malformed(e.to_string()))?;
        let signature = key.sign(NAMESPACE, &Sha256::digest(body.as_bytes()));
        let bytes = serde_json::to_vec(&File {
            format: MAGIC.into(),
            version: FORMAT_VERSION.into(),
            body,
            signature: signature.to_hex(),
        })
        .map_err(|e| RuleError::Malformed(e.to_string()))?;
        SecurityRule::from_bytes(&bytes)
    }

    /// Reads and verifies a rule: format, signature by its publisher, the embedded
    /// detector's own checksum and that the metadata names that detector.
    pub fn from_bytes(bytes: &[u8]) -> Result<SecurityRule, RuleError> {
        if bytes.len() > MAX_RULE_BYTES {
            return Err(RuleError::TooLarge(bytes.len()));
        }
        let file: File = serde_json::from_slice(bytes).map_err(|_| RuleError::NotARule)?;
        if file.format != MAGIC {
            return Err(RuleError::NotARule);
        }
        if file.version != FORMAT_VERSION {
            return Err(RuleError::Version {
                found: file.version.to_string(),
            });
        }
        let body = file.body.as_str();
        let parsed: Body =
            serde_json::from_str(body).map_err(|e| RuleError::Malformed(e.to_string()))?;
        let signature: Signature =
            serde_json::from_value(serde_json::Value::String(file.signature))
                .map_err(|e| RuleError::Malformed(format!("signature: {e}")))?;
        let meta = parsed.meta;
        if !signature.verify(&meta.publisher, NAMESPACE, &Sha256::digest(body.as_bytes())) {
            return Err(RuleError::BadSignature(meta.publisher));
        }
        label("name", &meta.name)?;
        label("category", &meta.category)?;
        let detector = Detector::from_bytes(parsed.detector.as_bytes())?;
        if hex::encode(Sha256::digest(parsed.detector.as_bytes())) != meta.detector_sha256 {
            return Err(RuleError::Malformed(
                "the metadata names another detector than the one inside".into(),
            ));
        }
        if detector.provenance.dataset != meta.dataset {
            return Err(RuleError::Malformed(format!(
                "the metadata says it scores {} records, the detector scores {}",
                meta.dataset, detector.provenance.dataset
            )));
        }
        Ok(SecurityRule {
            meta,
            detector,
            bytes: bytes.to_vec(),
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The content address: SHA-256 of the file.
    pub fn hash(&self) -> Hash {
        Hash(Sha256::digest(&self.bytes).into())
    }
}
