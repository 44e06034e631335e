//! SecNet's learned access-request detectors (the paper's Operation Support System,
//! Section III-B): loaders for NSL-KDD and HTTP request parameters, feature encoders, an MLP
//! trained with candle, detection metrics with thresholds fixed on a validation split, and
//! versioned, checksummed detector files.
//!
//! Everything here is deterministic for a given input and seed: randomness comes from
//! [`rng::Rng`], never from candle's unseeded generator.

pub mod data;
pub mod features;
pub mod iforest;
pub mod metrics;
pub mod mlp;
pub mod model;
pub mod rng;

use data::{Kind, Record};
use features::Encoder;
use metrics::{Report, Thresholds};
use mlp::{Batch, TrainConfig};
use model::{Classifier, Detector, Provenance};
use rng::Rng;
use serde::{Deserialize, Serialize};

/// Share of the given file held out for validation.
pub const VALIDATION_SHARE: f64 = 0.2;

/// Splits records into training and validation sets, stratified by category so that rare
/// attack categories appear in both; the same seed gives the same split.
pub fn split(records: &[Record], seed: u64) -> (Vec<Record>, Vec<Record>) {
    let mut by_category: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, r) in records.iter().enumerate() {
        by_category.entry(r.category.as_str()).or_default().push(i);
    }
    let mut rng = Rng::new(seed).fork(3);
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for idx in by_category.values() {
        let order = rng.permutation(idx.len());
        let n_valid = ((idx.len() as f64) * VALIDATION_SHARE).round() as usize;
        for (k, o) in order.iter().enumerate() {
            if let Some(r) = idx.get(*o).and_then(|i| records.get(*i)) {
                if k < n_valid {
                    valid.push(r.clone());
                } else {
                    train.push(r.clone());
                }
            }
        }
    }
    (train, valid)
}

/// What is added to the training rows before training (each arm adds the same number of
/// attack rows, so arms differ only in what the rows are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    /// Nothing.
    None,
    /// Copies of real training attacks.
    Dup,
    /// Real training attacks with Gaussian noise (σ = 0.1 in standardised units).
    Jitter,
}

impl std::str::FromStr for Augment {
    type Err = String;
    fn from_str(s: &str) -> Result<Augment, String> {
        match s {
            "none" => Ok(Augment::None),
            "dup" => Ok(Augment::Dup),
            "jitter" => Ok(Augment::Jitter),
            other => Err(format!(
                "unknown augmentation {other:?}: none, dup or jitter"
            )),
        }
    }
}

impl std::fmt::Display for Augment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Augment::None => "none",
            Augment::Dup => "dup",
            Augment::Jitter => "jitter",
        })
    }
}

/// Attack rows each arm adds, as a share of the training attacks.
pub const AUGMENT_SHARE: f64 = 0.5;

/// Adds augmented attack rows to an encoded training matrix.
pub fn augment(x: &mut Vec<f32>, y: &mut Vec<f32>, dim: usize, arm: Augment, seed: u64) {
    let attacks: Vec<usize> = y
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 0.5)
        .map(|(i, _)| i)
        .collect();
    if attacks.is_empty() || arm == Augment::None {
        return;
    }
    let mut rng = Rng::new(seed).fork(4);
    let add = ((attacks.len() as f64) * AUGMENT_SHARE).round() as usize;
    for _ in 0..add {
        let Some(&i) = attacks.get(rng.below(attacks.len())) else {
            continue;
        };
        let Some(row) = x.get(i * dim..(i + 1) * dim).map(<[f32]>::to_vec) else {
            continue;
        };
        match arm {
            Augment::Dup | Augment::None => x.extend_from_slice(&row),
            Augment::Jitter => x.extend(row.iter().map(|v| v + 0.1 * rng.normal() as f32)),
        }
        y.push(1.0);
    }
}

/// What kind of classifier to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// The MLP (the default).
    Mlp,
    /// Logistic regression: the MLP with no hidden layer.
    Logreg,
    /// An isolation forest trained on the normal training records only.
    Iforest,
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Family, String> {
        match s {
            "mlp" => Ok(Family::Mlp),
            "logreg" => Ok(Family::Logreg),
            "iforest" => Ok(Family::Iforest),
            other => Err(format!("unknown model {other:?}: mlp, logreg or iforest")),
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Mlp => "mlp",
            Family::Logreg => "logreg",
            Family::Iforest => "iforest",
        })
    }
}

/// Trees of the isolation forest baseline.
pub const IFOREST_TREES: usize = 100;
/// Rows sampled per tree of the isolation forest baseline.
pub const IFOREST_SAMPLE: usize = 256;

/// Labels as training targets.
pub fn targets(records: &[Record]) -> Vec<f32> {
    records
        .iter()
        .map(|r| if r.attack { 1.0 } else { 0.0 })
        .collect()
}

/// Whether each record is an attack, and its category.
fn labels(records: &[Record]) -> (Vec<bool>, Vec<String>) {
    records
        .iter()
        .map(|r| (r.attack, r.category.clone()))
        .unzip()
}

/// Trains a detector on `records` (all from one file): splits off validation, fits the
/// encoder on the training part, augments, trains, and fixes thresholds on validation.
pub fn train_detector(
    kind: Kind,
    records: &[Record],
    data_sha256: &str,
    arm: Augment,
    family: Family,
    cfg: &TrainConfig,
) -> Result<Detector, mlp::TrainError> {
    let (train, valid) = split(records, cfg.seed);
    let encoder = Encoder::fit(kind, &train);
    let dim = encoder.dim();
    let mut xt = encoder.encode_all(&train);
    let mut yt = targets(&train);
    augment(&mut xt, &mut yt, dim, arm, cfg.seed);
    let xv = encoder.encode_all(&valid);
    let yv = targets(&valid);
    let classifier = match family {
        Family::Mlp | Family::Logreg => {
            let cfg = TrainConfig {
                hidden: if family == Family::Logreg {
                    Vec::new()
                } else {
                    cfg.hidden.clone()
                },
                ..cfg.clone()
            };
            let train = Batch {
                x: &xt,
                y: &yt,
                dim,
            };
            let valid = Batch {
                x: &xv,
                y: &yv,
                dim,
            };
            Classifier::Mlp(mlp::train(train, valid, &cfg)?)
        }
        Family::Iforest => {
            let normal: Vec<f32> = xt
                .chunks_exact(dim.max(1))
                .zip(&yt)
                .filter(|(_, y)| **y < 0.5)
                .flat_map(|(r, _)| r.iter().copied())
                .collect();
            Classifier::IsolationForest(iforest::IsolationForest::train(
                &normal,
                dim,
                IFOREST_TREES,
                IFOREST_SAMPLE,
                cfg.seed,
            ))
        }
    };
    let scores = classifier.score_all(&xv, dim);
    let (attack, categories) = labels(&valid);
    let thresholds = Thresholds::fit(&scores, &attack);
    let validation = Report::new(&scores, &attack, &categories, &thresholds);
    Ok(Detector {
        encoder,
        classifier,
        thresholds,
        provenance: Provenance {
            dataset: kind,
            data_sha256: data_sha256.to_string(),
            train_rows: yt.len(),
            valid_rows: valid.len(),
            augment: arm.to_string(),
            family,
            seed: cfg.seed,
            validation,
        },
    })
}

/// Evaluates a detector on records.
pub fn evaluate(detector: &Detector, records: &[Record]) -> Report {
    let x = detector.encoder.encode_all(records);
    let scores = detector.classifier.score_all(&x, detector.encoder.dim());
    let (attack, categories) = labels(records);
    Report::new(&scores, &attack, &categories, &detector.thresholds)
}
