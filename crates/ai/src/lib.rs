//! SecNet's learned access-request detectors (the paper's Operation Support System,
//! Section III-B): loaders for NSL-KDD and HTTP request parameters, feature encoders, an MLP
//! trained with candle, detection metrics with thresholds fixed on a validation split, and
//! versioned, checksummed detector files.
//!
//! Everything here is deterministic for a given input and seed: randomness comes from
//! [`rng::Rng`], never from candle's unseeded generator.

pub mod data;
pub mod features;
pub mod forest;
pub mod gan;
pub mod iforest;
pub mod metrics;
pub mod mlp;
pub mod model;
pub mod requests;
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
    /// Rows drawn from a plain GAN trained on the training attacks.
    Gan,
    /// Adversarial training: rounds of training the detector, training an IDSGAN attacker
    /// against it, and adding the attacker's versions of real training attacks.
    AdvGan,
}

/// Each arm and its name on the command line and in files.
const AUGMENT_NAMES: [(Augment, &str); 5] = [
    (Augment::None, "none"),
    (Augment::Dup, "dup"),
    (Augment::Jitter, "jitter"),
    (Augment::Gan, "gan"),
    (Augment::AdvGan, "adv-gan"),
];

/// Each family and its name on the command line and in files.
const FAMILY_NAMES: [(Family, &str); 4] = [
    (Family::Mlp, "mlp"),
    (Family::Logreg, "logreg"),
    (Family::Forest, "forest"),
    (Family::Iforest, "iforest"),
];

fn parse_name<T: Copy>(table: &[(T, &str)], what: &str, s: &str) -> Result<T, String> {
    table
        .iter()
        .find(|(_, n)| *n == s)
        .map(|(v, _)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(_, n)| *n).collect();
            format!("unknown {what} {s:?}: {}", names.join(", "))
        })
}

fn name_of<T: PartialEq>(table: &[(T, &'static str)], v: &T) -> &'static str {
    table.iter().find(|(t, _)| t == v).map_or("?", |(_, n)| n)
}

impl std::str::FromStr for Augment {
    type Err = String;
    fn from_str(s: &str) -> Result<Augment, String> {
        parse_name(&AUGMENT_NAMES, "augmentation", s)
    }
}

impl std::fmt::Display for Augment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(name_of(&AUGMENT_NAMES, self))
    }
}

/// The arm `secnet ai train` uses unless told otherwise: the one the ablation found best
/// (equal to the others on held-out data, and the only one that lowers a fresh attacker's
/// evasion rate).
pub const DEFAULT_AUGMENT: Augment = Augment::AdvGan;

/// Attack rows each arm adds, as a share of the training attacks.
pub const AUGMENT_SHARE: f64 = 0.5;

/// Rounds of adversarial training in the `adv-gan` arm.
pub const ADV_ROUNDS: usize = 4;

/// Attack rows an arm adds to `y`'s training rows.
pub fn augment_budget(y: &[f32]) -> usize {
    let attacks = y.iter().filter(|v| **v > 0.5).count();
    ((attacks as f64) * AUGMENT_SHARE).round() as usize
}

/// Adds copies (`dup`) or noisy copies (`jitter`) of real training attacks to an encoded
/// training matrix; the other arms add nothing here.
pub fn augment(x: &mut Vec<f32>, y: &mut Vec<f32>, dim: usize, arm: Augment, seed: u64) {
    let attacks: Vec<usize> = y
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 0.5)
        .map(|(i, _)| i)
        .collect();
    if attacks.is_empty() || !matches!(arm, Augment::Dup | Augment::Jitter) {
        return;
    }
    let mut rng = Rng::new(seed).fork(4);
    let add = augment_budget(y);
    for _ in 0..add {
        let Some(&i) = attacks.get(rng.below(attacks.len())) else {
            continue;
        };
        let Some(row) = x.get(i * dim..(i + 1) * dim).map(<[f32]>::to_vec) else {
            continue;
        };
        match arm {
            Augment::Jitter => x.extend(row.iter().map(|v| v + 0.1 * rng.normal() as f32)),
            _ => x.extend_from_slice(&row),
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
    /// A random forest.
    Forest,
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Family, String> {
        parse_name(&FAMILY_NAMES, "model", s)
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(name_of(&FAMILY_NAMES, self))
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

/// Encoded training and validation rows.
struct Encoded<'a> {
    xt: Vec<f32>,
    yt: Vec<f32>,
    categories: Vec<String>,
    xv: &'a [f32],
    yv: &'a [f32],
    dim: usize,
}

impl Encoded<'_> {
    fn attacks(&self) -> (Vec<f32>, Vec<String>) {
        let mut x = Vec::new();
        let mut c = Vec::new();
        for ((row, y), cat) in self
            .xt
            .chunks_exact(self.dim.max(1))
            .zip(&self.yt)
            .zip(&self.categories)
        {
            if *y > 0.5 {
                x.extend_from_slice(row);
                c.push(cat.clone());
            }
        }
        (x, c)
    }

    fn normal(&self) -> (Vec<f32>, Vec<String>) {
        let mut x = Vec::new();
        for (row, y) in self.xt.chunks_exact(self.dim.max(1)).zip(&self.yt) {
            if *y < 0.5 {
                x.extend_from_slice(row);
            }
        }
        let n = x.len() / self.dim.max(1);
        (x, vec!["normal".to_string(); n])
    }

    fn push(&mut self, rows: &[f32], category: &str) {
        let n = rows.len() / self.dim.max(1);
        self.xt.extend_from_slice(rows);
        self.yt.extend(std::iter::repeat_n(1.0, n));
        self.categories
            .extend(std::iter::repeat_n(category.to_string(), n));
    }
}

fn fit_classifier(
    data: &Encoded<'_>,
    family: Family,
    cfg: &TrainConfig,
) -> Result<Classifier, mlp::TrainError> {
    let dim = data.dim;
    Ok(match family {
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
                x: &data.xt,
                y: &data.yt,
                dim,
            };
            let valid = Batch {
                x: data.xv,
                y: data.yv,
                dim,
            };
            Classifier::Mlp(mlp::train(train, valid, &cfg)?)
        }
        Family::Forest => Classifier::RandomForest(forest::RandomForest::train(
            &data.xt,
            &data.yt,
            dim,
            &forest::ForestConfig {
                seed: cfg.seed,
                ..forest::ForestConfig::default()
            },
        )),
        Family::Iforest => {
            let (normal, _) = data.normal();
            Classifier::IsolationForest(iforest::IsolationForest::train(
                &normal,
                dim,
                IFOREST_TREES,
                IFOREST_SAMPLE,
                cfg.seed,
            ))
        }
    })
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
    let xv = encoder.encode_all(&valid);
    let yv = targets(&valid);
    let (attack, categories) = labels(&valid);
    let mut data = Encoded {
        xt: encoder.encode_all(&train),
        yt: targets(&train),
        categories: train.iter().map(|r| r.category.clone()).collect(),
        xv: &xv,
        yv: &yv,
        dim,
    };
    let threat = gan::Threat::new(&encoder, &data.xt);
    let budget = augment_budget(&data.yt);
    let gan_cfg = gan::GanConfig {
        seed: cfg.seed,
        ..gan::GanConfig::default()
    };
    match arm {
        Augment::None | Augment::Dup | Augment::Jitter => {
            augment(&mut data.xt, &mut data.yt, dim, arm, cfg.seed);
        }
        Augment::Gan => {
            let (x, c) = data.attacks();
            let rows = gan::Rows {
                x: &x,
                categories: &c,
                dim,
            };
            let generated =
                gan::SampleGan::train(&threat, rows, &gan_cfg)?.sample(budget, cfg.seed);
            data.push(&generated, "generated");
        }
        Augment::AdvGan => {
            let (x, c) = data.attacks();
            let (nx, nc) = data.normal();
            let mut rng = Rng::new(cfg.seed).fork(5);
            // The detectors attacked between rounds are trained for half the epochs: they
            // only have to be good enough for the attacker to find their blind spots.
            let quick = TrainConfig {
                epochs: cfg.epochs.div_ceil(2),
                ..cfg.clone()
            };
            for round in 0..ADV_ROUNDS {
                let current = fit_classifier(&data, family, &quick)?;
                let scores = current.score_all(&xv, dim);
                let target = gan::BlackBox {
                    score: &|r| current.score(r),
                    threshold: Thresholds::fit(&scores, &attack).operating,
                };
                let attacker = gan::Attacker::train(
                    &target,
                    &threat,
                    gan::Rows {
                        x: &x,
                        categories: &c,
                        dim,
                    },
                    gan::Rows {
                        x: &nx,
                        categories: &nc,
                        dim,
                    },
                    &gan::GanConfig {
                        seed: gan_cfg.seed.wrapping_add(round as u64),
                        ..gan_cfg.clone()
                    },
                )?;
                let share = budget / ADV_ROUNDS
                    + if round + 1 == ADV_ROUNDS {
                        budget % ADV_ROUNDS
                    } else {
                        0
                    };
                let mut added = Vec::with_capacity(share * dim);
                for _ in 0..share {
                    let i = rng.below(c.len().max(1));
                    let row = x.get(i * dim..(i + 1) * dim).unwrap_or(&[]);
                    let category = c.get(i).map_or("unknown", String::as_str);
                    added.extend(attacker.perturb(row, category, &mut rng));
                }
                data.push(&added, "adversarial");
            }
        }
    }
    let classifier = fit_classifier(&data, family, cfg)?;
    let scores = classifier.score_all(&xv, dim);
    let thresholds = Thresholds::fit(&scores, &attack);
    let validation = Report::new(&scores, &attack, &categories, &thresholds);
    Ok(Detector {
        encoder,
        classifier,
        thresholds,
        provenance: Provenance {
            dataset: kind,
            data_sha256: data_sha256.to_string(),
            train_rows: data.yt.len(),
            valid_rows: valid.len(),
            augment: arm.to_string(),
            family,
            seed: cfg.seed,
            validation,
        },
    })
}

/// How a detector fares against a fresh IDSGAN attacker: the attacker is trained against
/// the detector (queried at its 1%-false-positive threshold) on the attacks and normal
/// records of `known`, and measured on the attacks of `unseen`.
pub fn evasion(
    detector: &Detector,
    known: &[Record],
    unseen: &[Record],
    seed: u64,
) -> Result<gan::Evasion, mlp::TrainError> {
    let enc = &detector.encoder;
    let dim = enc.dim();
    let encode = |attack: bool, records: &[Record]| {
        let picked: Vec<Record> = records
            .iter()
            .filter(|r| r.attack == attack)
            .cloned()
            .collect();
        let categories: Vec<String> = picked.iter().map(|r| r.category.clone()).collect();
        (enc.encode_all(&picked), categories)
    };
    let (ax, ac) = encode(true, known);
    let (nx, nc) = encode(false, known);
    let (ux, uc) = encode(true, unseen);
    let mut range = ax.clone();
    range.extend_from_slice(&nx);
    let threat = gan::Threat::new(enc, &range);
    let target = gan::BlackBox {
        score: &|r| detector.classifier.score(r),
        threshold: detector.thresholds.at_1pct_fpr,
    };
    let attacker = gan::Attacker::train(
        &target,
        &threat,
        gan::Rows {
            x: &ax,
            categories: &ac,
            dim,
        },
        gan::Rows {
            x: &nx,
            categories: &nc,
            dim,
        },
        &gan::GanConfig {
            // A stream of its own, so that the attacker never shares weights or noise with
            // the attackers of adversarial training under the same seed.
            seed: Rng::new(seed).fork(99).next_u64(),
            ..gan::GanConfig::default()
        },
    )?;
    Ok(attacker.evasion(
        &target,
        gan::Rows {
            x: &ux,
            categories: &uc,
            dim,
        },
        seed,
    ))
}

/// Evaluates a detector on records.
pub fn evaluate(detector: &Detector, records: &[Record]) -> Report {
    let x = detector.encoder.encode_all(records);
    let scores = detector.classifier.score_all(&x, detector.encoder.dim());
    let (attack, categories) = labels(records);
    Report::new(&scores, &attack, &categories, &detector.thresholds)
}
