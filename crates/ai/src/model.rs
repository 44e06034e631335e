//! A trained detector and its file: what it encodes, its weights, the thresholds fixed on
//! its validation split, and where it came from. The file says its format version and ends
//! with the SHA-256 of its body: a file from another version, or one changed after it was
//! written, is refused with the reason.

use crate::data::Kind;
use crate::features::Encoder;
use crate::forest::RandomForest;
use crate::iforest::IsolationForest;
use crate::metrics::{Report, Thresholds};
use crate::mlp::Mlp;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::Path;

/// The first line of every model file.
pub const MAGIC: &str = "secnet-detector";
/// The format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Largest model file read.
pub const MAX_MODEL_BYTES: u64 = 64 << 20;

/// Where a detector came from and how it did on its validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The dataset kind.
    pub dataset: Kind,
    /// SHA-256 of the training file.
    pub data_sha256: String,
    /// Rows trained on (after augmentation) and validated on.
    pub train_rows: usize,
    /// Rows of the validation split.
    pub valid_rows: usize,
    /// The augmentation arm.
    pub augment: String,
    /// The classifier family.
    pub family: crate::Family,
    /// The seed.
    pub seed: u64,
    /// Validation metrics at the model's thresholds.
    pub validation: Report,
}

/// The model that turns a feature vector into an attack score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "kebab-case")]
pub enum Classifier {
    /// A multilayer perceptron (with no hidden layer: logistic regression).
    Mlp(Mlp),
    /// An isolation forest trained on normal records only.
    IsolationForest(IsolationForest),
    /// A random forest.
    RandomForest(RandomForest),
}

impl Classifier {
    /// The attack score of one feature vector (higher = more likely an attack).
    pub fn score(&self, x: &[f32]) -> f32 {
        match self {
            Classifier::Mlp(m) => m.score(x),
            Classifier::IsolationForest(f) => f.score(x),
            Classifier::RandomForest(f) => f.score(x),
        }
    }

    /// Scores the rows of a row-major matrix.
    pub fn score_all(&self, x: &[f32], dim: usize) -> Vec<f32> {
        x.chunks_exact(dim.max(1)).map(|r| self.score(r)).collect()
    }

    /// Input width.
    pub fn inputs(&self) -> usize {
        match self {
            Classifier::Mlp(m) => m.inputs(),
            Classifier::IsolationForest(f) => f.dim,
            Classifier::RandomForest(f) => f.dim,
        }
    }
}

/// A trained detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detector {
    /// How records become features.
    pub encoder: Encoder,
    /// The classifier.
    pub classifier: Classifier,
    /// Operating points fixed on validation.
    pub thresholds: Thresholds,
    /// Where it came from.
    pub provenance: Provenance,
}

/// A model file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a SecNet detector at all.
    #[error("not a SecNet detector file (it does not start with {MAGIC:?})")]
    NotAModel,
    /// Written by another format version.
    #[error(
        "detector format {found}; this secnet reads format {FORMAT_VERSION}: retrain it or use a matching secnet"
    )]
    Version {
        /// The file's version.
        found: String,
    },
    /// The body does not match its checksum.
    #[error("the detector file was altered after it was written (checksum mismatch)")]
    Tampered,
    /// Too large to be a detector.
    #[error("{0} bytes is larger than any detector ({MAX_MODEL_BYTES} bytes at most)")]
    TooLarge(u64),
    /// The body does not decode, or is inconsistent.
    #[error("the detector file is malformed: {0}")]
    Malformed(String),
}

impl Detector {
    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let body = serde_json::to_vec(self).map_err(|e| ModelError::Malformed(e.to_string()))?;
        let mut out = format!("{MAGIC} {FORMAT_VERSION}\n").into_bytes();
        out.extend_from_slice(&body);
        out.push(b'\n');
        out.extend_from_slice(hex::encode(Sha256::digest(&body)).as_bytes());
        out.push(b'\n');
        Ok(out)
    }

    /// Reads a detector from its file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Detector, ModelError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ModelError::NotAModel)?;
        let (first, rest) = text.split_once('\n').ok_or(ModelError::NotAModel)?;
        let version = first
            .strip_prefix(MAGIC)
            .ok_or(ModelError::NotAModel)?
            .trim();
        if version != FORMAT_VERSION.to_string() {
            return Err(ModelError::Version {
                found: version.to_string(),
            });
        }
        let rest = rest.strip_suffix('\n').unwrap_or(rest);
        let (body, sum) = rest.rsplit_once('\n').ok_or(ModelError::Tampered)?;
        let expected = hex::encode(Sha256::digest(body.as_bytes()));
        if !constant_time_eq(expected.as_bytes(), sum.trim().as_bytes()) {
            return Err(ModelError::Tampered);
        }
        let d: Detector =
            serde_json::from_str(body).map_err(|e| ModelError::Malformed(e.to_string()))?;
        d.check()?;
        Ok(d)
    }

    fn check(&self) -> Result<(), ModelError> {
        if self.classifier.inputs() != self.encoder.dim() {
            return Err(ModelError::Malformed(format!(
                "the classifier takes {} features, the encoder makes {}",
                self.classifier.inputs(),
                self.encoder.dim()
            )));
        }
        let mlp = match &self.classifier {
            Classifier::Mlp(mlp) => mlp,
            Classifier::RandomForest(forest) => {
                return forest.check().map_err(ModelError::Malformed);
            }
            Classifier::IsolationForest(_) => return Ok(()),
        };
        let mut width = self.encoder.dim();
        for (k, l) in mlp.layers.iter().enumerate() {
            if l.inputs != width || l.w.len() != l.inputs * l.outputs || l.b.len() != l.outputs {
                return Err(ModelError::Malformed(format!(
                    "layer {k} has inconsistent shapes"
                )));
            }
            width = l.outputs;
        }
        if width != 1 {
            return Err(ModelError::Malformed(
                "the classifier must end in one output".into(),
            ));
        }
        Ok(())
    }

    /// Writes the file (atomically: a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let bytes = self.to_bytes()?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Reads a file.
    pub fn load(path: &Path) -> Result<Detector, ModelError> {
        let len = std::fs::metadata(path)?.len();
        if len > MAX_MODEL_BYTES {
            return Err(ModelError::TooLarge(len));
        }
        Detector::from_bytes(&std::fs::read(path)?)
    }

    /// The attack probability of one record.
    pub fn score(&self, record: &crate::data::Record) -> f32 {
        self.classifier.score(&self.encoder.encode(record))
    }

    /// SHA-256 of the file's bytes: the detector's content address.
    pub fn content_hash(&self) -> Result<[u8; 32], ModelError> {
        Ok(Sha256::digest(self.to_bytes()?).into())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
