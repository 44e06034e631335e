//! `secnet ai`: train and evaluate access-request detectors.

use anyhow::Context;
use clap::{Args, Subcommand};
use secnet_ai::data::{Kind, load};
use secnet_ai::mlp::TrainConfig;
use secnet_ai::model::Detector;
use secnet_ai::{Augment, Family, evaluate, evasion, split, train_detector};
use sha2::{Digest as _, Sha256};
use std::path::PathBuf;
use std::time::Instant;

/// AI commands.
#[derive(Subcommand)]
pub enum AiCmd {
    /// Train a detector on a labelled file, holding out 20% of it for validation.
    Train(TrainArgs),
    /// Evaluate a detector on a labelled file, and attack it with a fresh IDSGAN attacker.
    Eval(EvalArgs),
    /// Train every augmentation arm over several seeds and report mean ± sd: accuracy,
    /// F1, AUROC, detection at fixed false-positive rates and evasion by a fresh attacker.
    Ablation(AblationArgs),
    /// Write labelled synthetic access requests (SecNet's own request features) as CSV.
    GenRequests(GenArgs),
}

/// Arguments of `secnet ai ablation`.
#[derive(Args)]
pub struct AblationArgs {
    /// The kind of data: nsl-kdd, http-params or access-requests.
    #[arg(long)]
    pub dataset: Kind,
    /// The labelled file.
    #[arg(long)]
    pub data: PathBuf,
    /// Seeds 1..=N.
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// The arms, comma-separated.
    #[arg(
        long,
        default_value = "none,dup,jitter,gan,adv-gan",
        value_delimiter = ','
    )]
    pub arms: Vec<Augment>,
    /// The classifier.
    #[arg(long, default_value = "mlp")]
    pub model: Family,
    /// Passes over the training rows.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    pub epochs: usize,
}

/// Arguments of `secnet ai gen-requests`.
#[derive(Args)]
pub struct GenArgs {
    /// Requests to write.
    #[arg(long, default_value_t = 20_000)]
    pub rows: usize,
    /// The seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The CSV file to write.
    #[arg(long)]
    pub out: PathBuf,
}

/// Arguments of `secnet ai train`.
#[derive(Args)]
pub struct TrainArgs {
    /// The kind of data: nsl-kdd, http-params or access-requests.
    #[arg(long)]
    pub dataset: Kind,
    /// The labelled file (e.g. ../shared/data/nsl-kdd/KDDTrain+_20Percent.txt).
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the detector.
    #[arg(long)]
    pub out: PathBuf,
    /// Rows added to the training attacks: none, dup (copies), jitter (noisy copies), gan
    /// (a plain GAN's samples) or adv-gan (adversarial training against an IDSGAN attacker).
    #[arg(long, default_value_t = secnet_ai::DEFAULT_AUGMENT)]
    pub augment: Augment,
    /// The classifier: mlp, logreg (logistic regression), forest (random forest) or
    /// iforest (isolation forest, trained on the normal records only).
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
    /// The seed of the attacker (its split of the file, its weights and noise).
    #[arg(long, default_value_t = 1)]
    pub attack_seed: u64,
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
            let (known, unseen) = split(&loaded.records, a.attack_seed);
            let attacked = evasion(&detector, &known, &unseen, a.attack_seed)?;
            let mut out = serde_json::to_value(&report)?;
            if let Some(o) = out.as_object_mut() {
                o.insert("evasion_rate".into(), attacked.evasion_rate.into());
                o.insert("evasion".into(), serde_json::to_value(attacked)?);
                o.insert("load".into(), serde_json::to_value(&loaded.report)?);
                o.insert(
                    "dataset".into(),
                    serde_json::to_value(detector.provenance.dataset)?,
                );
            }
            super::print_json(&out)
        }
        AiCmd::Ablation(a) => ablation(&a),
        AiCmd::GenRequests(a) => {
            let mut text = secnet_ai::requests::header();
            text.push('\n');
            for r in secnet_ai::requests::generate(a.rows, a.seed) {
                text.push_str(&secnet_ai::requests::to_row(&r));
                text.push('\n');
            }
            std::fs::write(&a.out, text).with_context(|| format!("writing {}", a.out.display()))?;
            eprintln!("wrote {} requests to {}", a.rows, a.out.display());
            Ok(())
        }
    }
}

/// The numbers of one run of the ablation.
const ABLATION_METRICS: [&str; 8] = [
    "train_seconds",
    "accuracy",
    "f1",
    "auroc",
    "dr_at_1pct_fpr",
    "dr_at_5pct_fpr",
    "evasion_rate",
    "dr_adversarial",
];

fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

fn ablation(a: &AblationArgs) -> anyhow::Result<()> {
    let loaded = load(a.dataset, &a.data)?;
    let sha = file_sha256(&a.data)?;
    let mut runs = Vec::new();
    let mut summary = serde_json::Map::new();
    for arm in &a.arms {
        let mut columns: Vec<Vec<f64>> = vec![Vec::new(); ABLATION_METRICS.len()];
        for seed in 1..=a.seeds {
            let cfg = TrainConfig {
                seed,
                epochs: a.epochs,
                ..TrainConfig::default()
            };
            let start = Instant::now();
            let detector = train_detector(a.dataset, &loaded.records, &sha, *arm, a.model, &cfg)?;
            let seconds = start.elapsed().as_secs_f64();
            let (known, unseen) = split(&loaded.records, seed);
            let attacked = evasion(&detector, &known, &unseen, seed)?;
            let v = &detector.provenance.validation;
            let row = [
                seconds,
                v.accuracy,
                v.f1,
                v.auroc,
                v.dr_at_1pct_fpr,
                v.dr_at_5pct_fpr,
                attacked.evasion_rate,
                attacked.dr_adversarial,
            ];
            eprintln!(
                "{arm} seed {seed}: {}",
                ABLATION_METRICS
                    .iter()
                    .zip(row)
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for (c, v) in columns.iter_mut().zip(row) {
                c.push(v);
            }
            runs.push(serde_json::json!({
                "arm": arm,
                "seed": seed,
                "train_seconds": seconds,
                "train_rows": detector.provenance.train_rows,
                "validation": v,
                "evasion": attacked,
            }));
        }
        let stats: serde_json::Map<String, serde_json::Value> = ABLATION_METRICS
            .iter()
            .zip(&columns)
            .map(|(k, c)| {
                let (mean, sd) = mean_sd(c);
                (
                    (*k).to_string(),
                    serde_json::json!({ "mean": mean, "sd": sd }),
                )
            })
            .collect();
        summary.insert(arm.to_string(), stats.into());
    }
    super::print_json(&serde_json::json!({
        "dataset": a.dataset,
        "model": a.model,
        "seeds": a.seeds,
        "validation": "20% of the file held out per seed, stratified; thresholds fixed on it",
        "evasion": "a fresh IDSGAN attacker trained on the training split's attacks against the detector at its 1% FPR threshold, measured on the validation attacks",
        "summary": summary,
        "runs": runs,
    }))
}
