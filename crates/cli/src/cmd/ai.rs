//! `secnet ai`: train and evaluate access-request detectors.

use anyhow::Context;
use clap::{Args, Subcommand};
use secnet_ai::data::{Kind, load};
use secnet_ai::mlp::TrainConfig;
use secnet_ai::model::Detector;
use secnet_ai::{Augment, Family, evaluate, train_detector};
use sha2::{Digest as _, Sha256};
use std::path::PathBuf;
use std::time::Instant;

/// AI commands.
#[derive(Subcommand)]
pub enum AiCmd {
    /// Train a detector on a labelled file, holding out 20% of it for validation.
    Train(TrainArgs),
    /// Evaluate a detector on a labelled file.
    Eval(EvalArgs),
}

/// Arguments of `secnet ai train`.
#[derive(Args)]
pub struct TrainArgs {
    /// The kind of data: nsl-kdd or http-params.
    #[arg(long)]
    pub dataset: Kind,
    /// The labelled file (e.g. ../shared/data/nsl-kdd/KDDTrain+_20Percent.txt).
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the detector.
    #[arg(long)]
    pub out: PathBuf,
    /// Rows added to the training attacks: none, dup (copies) or jitter (noisy copies).
    #[arg(long, default_value = "none")]
    pub augment: Augment,
    /// The classifier: mlp, logreg (logistic regression) or iforest (isolation forest,
    /// trained on the normal records only).
    #[arg(long, default_value = "mlp")]
    pub model: Family,
    /// The seed of the split, the initial weights and the shuffles.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Passes over the training rows.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
}

/// Arguments of `secnet ai eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// The detector file.
    #[arg(long)]
    pub model: PathBuf,
    /// The labelled file.
    #[arg(long)]
    pub data: PathBuf,
    /// Print JSON (the default; kept for symmetry with the other commands).
    #[arg(long)]
    pub json: bool,
}

fn file_sha256(path: &std::path::Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

pub fn run(cmd: AiCmd) -> anyhow::Result<()> {
    match cmd {
        AiCmd::Train(a) => {
            let loaded = load(a.dataset, &a.data)?;
            if loaded.report.malformed > 0 {
                eprintln!(
                    "warning: {} of {} rows of {} are malformed and were not used (first: {:?})",
                    loaded.report.malformed,
                    loaded.report.rows,
                    a.data.display(),
                    loaded.report.examples.first()
                );
            }
            let cfg = TrainConfig {
                seed: a.seed,
                epochs: a.epochs,
                ..TrainConfig::default()
            };
            let start = Instant::now();
            let detector = train_detector(
                a.dataset,
                &loaded.records,
                &file_sha256(&a.data)?,
                a.augment,
                a.model,
                &cfg,
            )?;
            let seconds = start.elapsed().as_secs_f64();
            detector.save(&a.out)?;
            super::print_json(&serde_json::json!({
                "model": a.out,
                "dataset": a.dataset,
                "augment": a.augment,
                "family": a.model,
                "seed": a.seed,
                "train_seconds": seconds,
                "load": loaded.report,
                "train_rows": detector.provenance.train_rows,
                "valid_rows": detector.provenance.valid_rows,
                "thresholds": detector.thresholds,
                "validation": detector.provenance.validation,
            }))
        }
        AiCmd::Eval(a) => {
            let detector = Detector::load(&a.model)
                .with_context(|| format!("loading {}", a.model.display()))?;
            let loaded = load(detector.provenance.dataset, &a.data)?;
            let report = evaluate(&detector, &loaded.records);
            let mut out = serde_json::to_value(&report)?;
            if let Some(o) = out.as_object_mut() {
                o.insert("load".into(), serde_json::to_value(&loaded.report)?);
                o.insert(
                    "dataset".into(),
                    serde_json::to_value(detector.provenance.dataset)?,
                );
            }
            super::print_json(&out)
        }
    }
}
