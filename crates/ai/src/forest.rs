//! Random forest (Breiman 2001): bootstrap-sampled CART trees split on Gini impurity, each
//! split choosing among √d random features. Splits are searched over at most
//! [`MAX_BINS`] quantile cut points per feature (histogram splitting, as LightGBM and
//! scikit-learn's `HistGradientBoosting` do), so growing a node costs one pass over its rows
//! per candidate feature. Trees grow in parallel; each tree draws from its own fork of the
//! seed, so the same seed gives the same forest on any number of cores.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Candidate cut points per feature.
pub const MAX_BINS: usize = 32;

/// How to grow the forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForestConfig {
    /// Trees.
    pub trees: usize,
    /// Deepest split.
    pub max_depth: usize,
    /// Fewest rows a node needs to be split.
    pub min_split: usize,
    /// The seed of bootstrap samples and feature choices.
    pub seed: u64,
}

impl Default for ForestConfig {
    fn default() -> ForestConfig {
        ForestConfig {
            trees: 50,
            max_depth: 16,
            min_split: 4,
            seed: 1,
        }
    }
}

/// One node: a split (`x[feature] <= threshold` goes to `left`) or, when `feature` is
/// [`LEAF`], a leaf whose `value` is the share of attacks among its training rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Feature index, or [`LEAF`].
    pub feature: u32,
    /// Cut value.
    pub threshold: f32,
    /// Left child.
    pub left: u32,
    /// Right child.
    pub right: u32,
    /// Attack share (leaves).
    pub value: f32,
}

/// The `feature` of a leaf.
pub const LEAF: u32 = u32::MAX;

/// A trained forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomForest {
    /// Features per row.
    pub dim: usize,
    /// Each tree's nodes, root first.
    pub trees: Vec<Vec<Node>>,
}

/// Training rows reduced to bin indices: `bins[row * dim + f]`.
struct Binned<'a> {
    bins: Vec<u8>,
    cuts: Vec<Vec<f32>>,
    y: &'a [f32],
    dim: usize,
}

fn quantile_cuts(x: &[f32], dim: usize, f: usize) -> Vec<f32> {
    let mut values: Vec<f32> = x
        .chunks_exact(dim)
        .filter_map(|r| r.get(f).copied())
        .collect();
    values.sort_by(f32::total_cmp);
    values.dedup();
    if values.len() <= MAX_BINS {
        // Cut halfway between consecutive distinct values.
        return values
            .windows(2)
            .map(|w| w.iter().sum::<f32>() / 2.0)
            .collect();
    }
    let mut cuts: Vec<f32> = (1..MAX_BINS)
        .filter_map(|k| values.get(k * values.len() / MAX_BINS).copied())
        .collect();
    cuts.dedup();
    cuts
}

impl<'a> Binned<'a> {
    fn new(x: &[f32], y: &'a [f32], dim: usize) -> Binned<'a> {
        let cuts: Vec<Vec<f32>> = (0..dim).map(|f| quantile_cuts(x, dim, f)).collect();
        let mut bins = Vec::with_capacity(x.len());
        for row in x.chunks_exact(dim) {
            for (v, c) in row.iter().zip(&cuts) {
                let b = c.partition_point(|t| t < v);
                bins.push(u8::try_from(b).unwrap_or(u8::MAX));
            }
        }
        Binned { bins, cuts, y, dim }
    }

    fn bin(&self, row: usize, f: usize) -> usize {
        usize::from(self.bins.get(row * self.dim + f).copied().unwrap_or(0))
    }

    fn label(&self, row: usize) -> f64 {
        f64::from(self.y.get(row).copied().unwrap_or(0.0))
    }
}

fn gini(pos: f64, n: f64) -> f64 {
    if n <= 0.0 {
        return 0.0;
    }
    let p = pos / n;
    2.0 * p * (1.0 - p)
}

/// The best split of `rows` over `features`: (feature, bin, weighted impurity after).
fn best_split(data: &Binned<'_>, rows: &[usize], features: &[usize]) -> Option<(usize, usize)> {
    let n = rows.len() as f64;
    let pos: f64 = rows.iter().map(|r| data.label(*r)).sum();
    let mut best = (gini(pos, n) * n - 1e-9, None);
    for &f in features {
        let k = data.cuts.get(f).map_or(0, Vec::len);
        if k == 0 {
            continue;
        }
        let mut count = vec![0f64; k + 1];
        let mut positives = vec![0f64; k + 1];
        for &r in rows {
            let b = data.bin(r, f);
            if let (Some(c), Some(p)) = (count.get_mut(b), positives.get_mut(b)) {
                *c += 1.0;
                *p += data.label(r);
            }
        }
        let (mut nl, mut pl) = (0.0, 0.0);
        for b in 0..k {
            nl += count.get(b).copied().unwrap_or(0.0);
            pl += positives.get(b).copied().unwrap_or(0.0);
            let (nr, pr) = (n - nl, pos - pl);
            if nl < 1.0 || nr < 1.0 {
                continue;
            }
            let impurity = gini(pl, nl) * nl + gini(pr, nr) * nr;
            if impurity < best.0 {
                best = (impurity, Some((f, b)));
            }
        }
    }
    best.1
}

fn grow(data: &Binned<'_>, cfg: &ForestConfig, rng: &mut Rng) -> Vec<Node> {
    let n = data.y.len();
    let rows: Vec<usize> = (0..n).map(|_| rng.below(n.max(1))).collect();
    let tries = ((data.dim as f64).sqrt().ceil() as usize).clamp(1, data.dim.max(1));
    let mut nodes = Vec::new();
    // (node index, rows, depth): grown depth-first with an explicit stack.
    let mut stack = vec![(0usize, rows, 0usize)];
    nodes.push(leaf(data, &[]));
    while let Some((at, rows, depth)) = stack.pop() {
        let this = leaf(data, &rows);
        if let Some(slot) = nodes.get_mut(at) {
            *slot = this;
        }
        let pure = this.value <= 0.0 || this.value >= 1.0;
        if pure || depth >= cfg.max_depth || rows.len() < cfg.min_split {
            continue;
        }
        let order = rng.permutation(data.dim);
        let features = order.get(..tries).unwrap_or(&order);
        let Some((f, b)) = best_split(data, &rows, features) else {
            continue;
        };
        let (left, right): (Vec<usize>, Vec<usize>) =
            rows.iter().partition(|r| data.bin(**r, f) <= b);
        let threshold = data
            .cuts
            .get(f)
            .and_then(|c| c.get(b))
            .copied()
            .unwrap_or(0.0);
        let (l, r) = (nodes.len(), nodes.len() + 1);
        nodes.push(leaf(data, &left));
        nodes.push(leaf(data, &right));
        if let Some(slot) = nodes.get_mut(at) {
            *slot = Node {
                feature: u32::try_from(f).unwrap_or(LEAF),
                threshold,
                left: u32::try_from(l).unwrap_or(0),
                right: u32::try_from(r).unwrap_or(0),
                value: this.value,
            };
        }
        stack.push((r, right, depth + 1));
        stack.push((l, left, depth + 1));
    }
    nodes
}

fn leaf(data: &Binned<'_>, rows: &[usize]) -> Node {
    let pos: f64 = rows.iter().map(|r| data.label(*r)).sum();
    Node {
        feature: LEAF,
        threshold: 0.0,
        left: 0,
        right: 0,
        value: if rows.is_empty() {
            0.0
        } else {
            (pos / rows.len() as f64) as f32
        },
    }
}

impl RandomForest {
    /// Grows a forest on the rows of `x` (`dim` columns) labelled `y` (1 = attack).
    pub fn train(x: &[f32], y: &[f32], dim: usize, cfg: &ForestConfig) -> RandomForest {
        let data = Binned::new(x, y, dim.max(1));
        let base = Rng::new(cfg.seed).fork(7);
        let workers = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, cfg.trees.max(1));
        let mut trees: Vec<(usize, Vec<Node>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let (data, base) = (&data, &base);
                    s.spawn(move || {
                        (w..cfg.trees)
                            .step_by(workers)
                            .map(|t| (t, grow(data, cfg, &mut base.fork(t as u64))))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        trees.sort_by_key(|(t, _)| *t);
        RandomForest {
            dim,
            trees: trees.into_iter().map(|(_, t)| t).collect(),
        }
    }

    /// The mean over trees of the attack share of the leaf `x` falls in.
    pub fn score(&self, x: &[f32]) -> f32 {
        if self.trees.is_empty() {
            return 0.0;
        }
        let mut sum = 0.0;
        for tree in &self.trees {
            let mut at = 0usize;
            // A tree has fewer nodes than its length, so the walk ends; the bound guards a
            // malformed file whose children point backwards.
            for _ in 0..tree.len() {
                let Some(node) = tree.get(at) else { break };
                if node.feature == LEAF {
                    sum += node.value;
                    break;
                }
                let v = x.get(node.feature as usize).copied().unwrap_or(0.0);
                at = if v <= node.threshold {
                    node.left
                } else {
                    node.right
                } as usize;
            }
        }
        sum / self.trees.len() as f32
    }

    /// Checks that every child index points forward inside its tree and every feature is
    /// below `dim`.
    pub fn check(&self) -> Result<(), String> {
        for (t, tree) in self.trees.iter().enumerate() {
            for (i, n) in tree.iter().enumerate() {
                if n.feature == LEAF {
                    continue;
                }
                let ok = (n.feature as usize) < self.dim
                    && [n.left, n.right]
                        .iter()
                        .all(|c| (*c as usize) > i && (*c as usize) < tree.len());
                if !ok {
                    return Err(format!("tree {t} node {i} points outside its tree"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests index fixtures they built")]
mod tests {
    use super::*;

    fn xor(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(seed);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let (a, b) = (rng.uniform() as f32, rng.uniform() as f32);
            x.extend([a, b, rng.uniform() as f32]);
            y.push(if (a > 0.5) != (b > 0.5) { 1.0 } else { 0.0 });
        }
        (x, y)
    }

    #[test]
    fn learns_a_concept_no_linear_model_can() {
        let (x, y) = xor(2000, 1);
        let forest = RandomForest::train(&x, &y, 3, &ForestConfig::default());
        forest.check().unwrap();
        let (tx, ty) = xor(500, 2);
        let right = tx
            .chunks_exact(3)
            .zip(&ty)
            .filter(|(r, y)| (forest.score(r) > 0.5) == (**y > 0.5))
            .count();
        assert!(right > 480, "{right}/500");
    }

    #[test]
    fn same_seed_same_forest() {
        let (x, y) = xor(500, 3);
        let cfg = ForestConfig {
            trees: 7,
            ..ForestConfig::default()
        };
        assert_eq!(
            RandomForest::train(&x, &y, 3, &cfg),
            RandomForest::train(&x, &y, 3, &cfg)
        );
    }

    #[test]
    fn a_backward_child_is_refused() {
        let mut forest = RandomForest::train(
            &xor(200, 4).0,
            &xor(200, 4).1,
            3,
            &ForestConfig {
                trees: 1,
                ..ForestConfig::default()
            },
        );
        forest.trees[0][0].left = 0;
        assert!(forest.check().is_err());
    }
}
