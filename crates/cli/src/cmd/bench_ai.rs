//! `secnet bench ai`: how long the default detector takes to train on this machine, and how
//! fast it scores, in batches on one core and one request at a time.

use secnet_ai::data::{Kind, load};
use secnet_ai::mlp::TrainConfig;
use secnet_ai::{DEFAULT_AUGMENT, train_detector};
use std::path::Path;
use std::time::Instant;

/// Runs the benchmark on a labelled file and prints JSON.
pub fn run(kind: Kind, data: &Path, scores: usize) -> anyhow::Result<()> {
    let loaded = load(kind, data)?;
    let start = Instant::now();
    let detector = train_detector(
        kind,
        &loaded.records,
        "bench",
        DEFAULT_AUGMENT,
        secnet_ai::Family::Mlp,
        &TrainConfig::default(),
    )?;
    let train_seconds = start.elapsed().as_secs_f64();
    let validation = detector.provenance.validation.clone();

    // Feature vectors are encoded once: scoring is what is timed.
    let dim = detector.encoder.dim();
    let encoded = detector.encoder.encode_all(&loaded.records);
    let rows = encoded.len() / dim.max(1);
    let mut batch = Vec::with_capacity(scores * dim);
    while batch.len() < scores * dim {
        let need = scores * dim - batch.len();
        batch.extend_from_slice(encoded.get(..need.min(encoded.len())).unwrap_or_default());
    }
    let start = Instant::now();
    let out = std::hint::black_box(
        detector
            .classifier
            .score_all(std::hint::black_box(&batch), dim),
    );
    let batch_seconds = start.elapsed().as_secs_f64();
    let flagged = out
        .iter()
        .filter(|s| **s >= detector.thresholds.operating)
        .count();

    let mut single = Vec::with_capacity(scores.min(100_000));
    for row in batch.chunks_exact(dim.max(1)).take(100_000) {
        let t = Instant::now();
        std::hint::black_box(detector.classifier.score(std::hint::black_box(row)));
        single.push(t.elapsed().as_secs_f64() * 1e6);
    }
    single.sort_by(f64::total_cmp);
    // A request as the access path sees it: a record encoded, then scored.
    let mut encoded_single: Vec<f64> = loaded
        .records
        .iter()
        .cycle()
        .take(100_000)
        .map(|r| {
            let t = Instant::now();
            std::hint::black_box(detector.score(std::hint::black_box(r)));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    encoded_single.sort_by(f64::total_cmp);
    // Encoding plus scoring of the whole file, in batch: nothing else (no metrics).
    let start = Instant::now();
    let features = detector
        .encoder
        .encode_all(std::hint::black_box(&loaded.records));
    std::hint::black_box(detector.classifier.score_all(&features, dim));
    let encode_and_score_per_s = rows as f64 / start.elapsed().as_secs_f64();
    super::print_json(&serde_json::json!({
        "bench": "ai",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "dataset": kind,
        "rows": rows,
        "features": dim,
        "hidden": TrainConfig::default().hidden,
        "augment": DEFAULT_AUGMENT,
        "train_seconds": train_seconds,
        "validation_auroc": validation.auroc,
        "validation_f1": validation.f1,
        "scores": scores,
        "batch_scores_per_s_one_core": scores as f64 / batch_seconds,
        "single_p50_us": super::load::percentile(&single, 0.50),
        "single_p99_us": super::load::percentile(&single, 0.99),
        "encode_and_score_per_s_one_core_batch": encode_and_score_per_s,
        "encode_and_score_p99_us": super::load::percentile(&encoded_single, 0.99),
        "flagged_share": flagged as f64 / scores.max(1) as f64,
    }))
}
