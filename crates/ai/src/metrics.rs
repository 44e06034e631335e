//! Detection metrics from scores (higher = more likely an attack) and labels.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counts at one threshold (score ≥ threshold → flagged as an attack).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confusion {
    /// Attacks flagged.
    pub tp: usize,
    /// Normal records flagged.
    pub fp: usize,
    /// Normal records passed.
    pub tn: usize,
    /// Attacks passed.
    pub fn_: usize,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl Confusion {
    /// Counts at `threshold`.
    pub fn at(scores: &[f32], attack: &[bool], threshold: f32) -> Confusion {
        let mut c = Confusion::default();
        for (s, a) in scores.iter().zip(attack) {
            match (*s >= threshold, *a) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, false) => c.tn += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }
    /// Share of records decided right.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.tp + self.tn + self.fp + self.fn_)
    }
    /// Share of flagged records that are attacks.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    /// Share of attacks flagged (detection rate).
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
    /// Share of normal records flagged.
    pub fn fpr(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }
}

/// Area under the ROC curve: the probability that a random attack scores above a random
/// normal record (ties count half). 0.5 when either class is missing.
pub fn auroc(scores: &[f32], attack: &[bool]) -> f64 {
    let mut pairs: Vec<(f32, bool)> = scores.iter().copied().zip(attack.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = pairs.iter().filter(|p| p.1).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return 0.5;
    }
    // Sum of the (average, for ties) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs.get(j).map(|p| p.0) == pairs.get(i).map(|p| p.0) {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0;
        let pos_here = pairs
            .get(i..j)
            .map_or(0, |s| s.iter().filter(|p| p.1).count());
        rank_sum += avg_rank * pos_here as f64;
        i = j;
    }
    let p = positives as f64;
    (rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64)
}

/// The lowest threshold at which at most `max_fpr` of the normal records are flagged.
pub fn threshold_at_fpr(scores: &[f32], attack: &[bool], max_fpr: f64) -> f32 {
    let mut normal: Vec<f32> = scores
        .iter()
        .zip(attack)
        .filter(|(_, a)| !**a)
        .map(|(s, _)| *s)
        .collect();
    if normal.is_empty() {
        return 0.5;
    }
    normal.sort_by(|a, b| b.total_cmp(a));
    let allowed = (max_fpr * normal.len() as f64).floor() as usize;
    // Flag strictly above the (allowed+1)-th highest normal score.
    match normal.get(allowed) {
        Some(s) => next_up(*s),
        None => f32::MIN,
    }
}

fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    let bits = x.to_bits();
    let next = if x == 0.0 {
        1
    } else if x > 0.0 {
        bits + 1
    } else {
        bits - 1
    };
    f32::from_bits(next)
}

/// The threshold that maximises F1 over the given scores.
pub fn threshold_max_f1(scores: &[f32], attack: &[bool]) -> f32 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| {
        scores
            .get(*b)
            .unwrap_or(&0.0)
            .total_cmp(scores.get(*a).unwrap_or(&0.0))
    });
    let positives = attack.iter().filter(|a| **a).count();
    let (mut tp, mut fp) = (0usize, 0usize);
    let (mut best, mut best_t) = (-1.0, 0.5);
    let mut k = 0;
    while k < order.len() {
        let s = order
            .get(k)
            .and_then(|i| scores.get(*i))
            .copied()
            .unwrap_or(0.0);
        while k < order.len() && order.get(k).and_then(|i| scores.get(*i)).copied() == Some(s) {
            if order
                .get(k)
                .and_then(|i| attack.get(*i))
                .copied()
                .unwrap_or(false)
            {
                tp += 1;
            } else {
                fp += 1;
            }
            k += 1;
        }
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, positives);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        if f1 > best {
            best = f1;
            best_t = s;
        }
    }
    best_t
}

/// The operating points a model keeps, fixed on its validation split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// The one that maximised F1 on validation: what the detector flags at.
    pub operating: f32,
    /// At most 1% of validation's normal records flagged.
    pub at_1pct_fpr: f32,
    /// At most 5% of validation's normal records flagged.
    pub at_5pct_fpr: f32,
}

impl Thresholds {
    /// Fixes the thresholds on validation scores.
    pub fn fit(scores: &[f32], attack: &[bool]) -> Thresholds {
        Thresholds {
            operating: threshold_max_f1(scores, attack),
            at_1pct_fpr: threshold_at_fpr(scores, attack, 0.01),
            at_5pct_fpr: threshold_at_fpr(scores, attack, 0.05),
        }
    }
}

/// What `secnet ai eval` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Records evaluated.
    pub records: usize,
    /// At the operating threshold.
    pub accuracy: f64,
    /// At the operating threshold.
    pub precision: f64,
    /// At the operating threshold.
    pub recall: f64,
    /// At the operating threshold.
    pub f1: f64,
    /// At the operating threshold.
    pub fpr: f64,
    /// Threshold-free.
    pub auroc: f64,
    /// Detection rate at the threshold that flagged 1% of validation's normal records.
    pub dr_at_1pct_fpr: f64,
    /// The false-positive rate that threshold gives on these records.
    pub fpr_at_1pct_threshold: f64,
    /// Detection rate at the threshold that flagged 5% of validation's normal records.
    pub dr_at_5pct_fpr: f64,
    /// The false-positive rate that threshold gives on these records.
    pub fpr_at_5pct_threshold: f64,
    /// Detection rate per attack category, at the operating threshold.
    pub per_category: BTreeMap<String, f64>,
}

impl Report {
    /// Evaluates scores at the model's thresholds.
    pub fn new(scores: &[f32], attack: &[bool], categories: &[String], t: &Thresholds) -> Report {
        let c = Confusion::at(scores, attack, t.operating);
        let c1 = Confusion::at(scores, attack, t.at_1pct_fpr);
        let c5 = Confusion::at(scores, attack, t.at_5pct_fpr);
        let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for ((s, a), cat) in scores.iter().zip(attack).zip(categories) {
            if *a {
                let e = seen.entry(cat.clone()).or_insert((0, 0));
                e.1 += 1;
                if *s >= t.operating {
                    e.0 += 1;
                }
            }
        }
        Report {
            records: scores.len(),
            accuracy: c.accuracy(),
            precision: c.precision(),
            recall: c.recall(),
            f1: c.f1(),
            fpr: c.fpr(),
            auroc: auroc(scores, attack),
            dr_at_1pct_fpr: c1.recall(),
            fpr_at_1pct_threshold: c1.fpr(),
            dr_at_5pct_fpr: c5.recall(),
            fpr_at_5pct_threshold: c5.fpr(),
            per_category: seen
                .into_iter()
                .map(|(k, (hit, all))| (k, ratio(hit, all)))
                .collect(),
        }
    }
}
