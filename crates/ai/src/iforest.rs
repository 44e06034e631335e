//! Isolation forest (Liu, Ting and Zhou 2008): trained on normal records only, it scores a
//! record by how quickly random axis-aligned cuts isolate it; anomalies are isolated in few
//! cuts. The unsupervised baseline: it never sees an attack.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// One node of an isolation tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Node {
    /// A cut: `feature < value` goes left.
    Split {
        /// Feature index.
        feature: usize,
        /// Cut value.
        value: f32,
        /// Index of the left child.
        left: usize,
        /// Index of the right child.
        right: usize,
    },
    /// A leaf holding `size` training rows.
    Leaf {
        /// Rows that reached it.
        size: usize,
    },
}

/// A trained isolation forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsolationForest {
    /// Each tree's nodes, root first.
    pub trees: Vec<Vec<Node>>,
    /// Rows sampled per tree (ψ).
    pub sample: usize,
    /// Features per row.
    pub dim: usize,
}

/// Average path length of an unsuccessful search in a binary search tree of `n` nodes:
/// the normalisation `c(n)` of the paper.
pub fn c(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
        }
    }
}

fn build(
    x: &[f32],
    dim: usize,
    rows: &mut [usize],
    depth: usize,
    limit: usize,
    rng: &mut Rng,
    nodes: &mut Vec<Node>,
) -> usize {
    let at = nodes.len();
    nodes.push(Node::Leaf { size: rows.len() });
    if rows.len() <= 1 || depth >= limit {
        return at;
    }
    // Pick a feature that still varies among these rows (a few tries), then a cut in range.
    for _ in 0..8 {
        let feature = rng.below(dim.max(1));
        let value_of = |r: usize| x.get(r * dim + feature).copied().unwrap_or(0.0);
        let (lo, hi) = rows
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), r| {
                let v = value_of(*r);
                (lo.min(v), hi.max(v))
            });
        if hi - lo <= f32::EPSILON {
            continue;
        }
        let value = lo + (hi - lo) * rng.uniform() as f32;
        rows.sort_by_key(|r| value_of(*r) >= value);
        let cut = rows.iter().take_while(|r| value_of(**r) < value).count();
        let (l, r) = rows.split_at_mut(cut);
        let left = build(x, dim, l, depth + 1, limit, rng, nodes);
        let right = build(x, dim, r, depth + 1, limit, rng, nodes);
        if let Some(n) = nodes.get_mut(at) {
            *n = Node::Split {
                feature,
                value,
                left,
                right,
            };
        }
        return at;
    }
    at
}

impl IsolationForest {
    /// Trains `trees` trees of `sample` rows each on the rows of `x` (row-major, `dim`
    /// columns), which should be normal records only.
    pub fn train(x: &[f32], dim: usize, trees: usize, sample: usize, seed: u64) -> IsolationForest {
        let n = x.len() / dim.max(1);
        let sample = sample.min(n).max(1);
        let limit = (sample as f64).log2().ceil() as usize;
        let mut rng = Rng::new(seed).fork(5);
        let forest = (0..trees)
            .map(|_| {
                let mut rows: Vec<usize> = (0..sample).map(|_| rng.below(n.max(1))).collect();
                let mut nodes = Vec::new();
                build(x, dim, &mut rows, 0, limit, &mut rng, &mut nodes);
                nodes
            })
            .collect();
        IsolationForest {
            trees: forest,
            sample,
            dim,
        }
    }

    fn path_length(tree: &[Node], row: &[f32]) -> f64 {
        let mut at = 0;
        let mut depth = 0.0;
        loop {
            match tree.get(at) {
                Some(Node::Split {
                    feature,
                    value,
                    left,
                    right,
                }) => {
                    at = if row.get(*feature).copied().unwrap_or(0.0) < *value {
                        *left
                    } else {
                        *right
                    };
                    depth += 1.0;
                }
                Some(Node::Leaf { size }) => return depth + c(*size),
                None => return depth,
            }
        }
    }

    /// The anomaly score in (0, 1]: `2^(−E[h(x)] / c(ψ))`; near 1 is anomalous, well below
    /// 0.5 is normal.
    pub fn score(&self, row: &[f32]) -> f32 {
        if self.trees.is_empty() {
            return 0.5;
        }
        let mean = self
            .trees
            .iter()
            .map(|t| IsolationForest::path_length(t, row))
            .sum::<f64>()
            / self.trees.len() as f64;
        let norm = c(self.sample).max(f64::MIN_POSITIVE);
        2f64.powf(-mean / norm) as f32
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::{IsolationForest, c};
    use crate::rng::Rng;

    #[test]
    fn outliers_score_higher_than_the_bulk() {
        let mut rng = Rng::new(3);
        let dim = 4;
        let normal: Vec<f32> = (0..2_000 * dim).map(|_| rng.normal() as f32).collect();
        let forest = IsolationForest::train(&normal, dim, 100, 256, 9);
        let inlier = forest.score(&[0.1, -0.2, 0.0, 0.3]);
        let outlier = forest.score(&[6.0, -6.0, 5.0, 7.0]);
        assert!(
            outlier > 0.6 && inlier < 0.5,
            "inlier {inlier}, outlier {outlier}"
        );
        assert_eq!(forest, IsolationForest::train(&normal, dim, 100, 256, 9));
    }

    #[test]
    fn the_normalisation_matches_the_paper() {
        assert!((c(2) - 1.0).abs() < 1e-12);
        // c(256) ≈ 10.24 (harmonic-number approximation).
        assert!((c(256) - 10.24).abs() < 0.01, "{}", c(256));
    }
}
