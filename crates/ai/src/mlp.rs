//! The MLP detector: trained with candle (autodiff, AdamW) from weights drawn from the
//! crate's own seeded generator, and run for scoring as plain Rust over the exported
//! weights, so a score costs a few thousand multiply-adds and no framework overhead.

use crate::rng::Rng;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

/// One fully connected layer: `out = w · in + b`, `w` stored row per output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    /// Inputs.
    pub inputs: usize,
    /// Outputs.
    pub outputs: usize,
    /// `outputs × inputs`, row-major.
    pub w: Vec<f32>,
    /// `outputs`.
    pub b: Vec<f32>,
}

/// A trained MLP: ReLU between layers, one logit out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mlp {
    /// The layers, input first.
    pub layers: Vec<Dense>,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler keep the loop in vector registers.
    let mut acc = [0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let (ra, rb) = (chunks_a.remainder(), chunks_b.remainder());
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for ((s, x), y) in acc.iter_mut().zip(ca).zip(cb) {
            *s += x * y;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Mlp {
    /// The logit for one feature vector (`x.len()` must be the input width).
    pub fn logit(&self, x: &[f32]) -> f32 {
        self.forward(x).first().copied().unwrap_or(0.0)
    }

    /// Every output of the last layer for one input vector.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut cur: Vec<f32> = x.to_vec();
        let last = self.layers.len().saturating_sub(1);
        for (i, l) in self.layers.iter().enumerate() {
            let mut next = Vec::with_capacity(l.outputs);
            for (row, bias) in l.w.chunks_exact(l.inputs.max(1)).zip(&l.b) {
                let v = dot(row, &cur) + bias;
                next.push(if i < last { v.max(0.0) } else { v });
            }
            cur = next;
        }
        cur
    }

    /// The attack probability for one feature vector.
    pub fn score(&self, x: &[f32]) -> f32 {
        sigmoid(self.logit(x))
    }

    /// Input width.
    pub fn inputs(&self) -> usize {
        self.layers.first().map_or(0, |l| l.inputs)
    }
}

/// How to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per step.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// The seed of initial weights and shuffles.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            hidden: vec![64, 32],
            epochs: 20,
            batch: 128,
            lr: 2e-3,
            weight_decay: 1e-4,
            seed: 1,
        }
    }
}

/// A failure inside candle.
#[derive(Debug, thiserror::Error)]
#[error("training failed: {0}")]
pub struct TrainError(String);

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> TrainError {
        TrainError(e.to_string())
    }
}

/// Binary cross-entropy on logits in the numerically stable form
/// `max(x, 0) − x·y + ln(1 + e^(−|x|))`, averaged.
pub fn bce_with_logits(logits: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let pos = logits.relu()?;
    let xy = (logits * y)?;
    let soft = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    ((pos - xy)? + soft)?.mean_all()
}

/// Trainable weights of an MLP inside candle (ReLU between layers, linear output).
pub(crate) struct Params {
    vars: Vec<(Var, Var)>,
}

impl Params {
    /// He-uniform weights for layer widths `dims` (input first), drawn from `rng`.
    pub(crate) fn init(dims: &[usize], rng: &mut Rng, dev: &Device) -> Result<Params, TrainError> {
        let mut vars = Vec::new();
        for w in dims.windows(2) {
            let (i, o) = match w {
                [i, o] => (*i, *o),
                _ => continue,
            };
            // He-uniform for ReLU layers.
            let bound = (6.0 / i.max(1) as f64).sqrt();
            let data: Vec<f32> = (0..i * o)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                .collect();
            let wt = Var::from_tensor(&Tensor::from_vec(data, (i, o), dev)?)?;
            let b = Var::from_tensor(&Tensor::zeros(o, DType::F32, dev)?)?;
            vars.push((wt, b));
        }
        Ok(Params { vars })
    }

    /// The variables, for an optimizer.
    pub(crate) fn vars(&self) -> Vec<Var> {
        self.vars
            .iter()
            .flat_map(|(w, b)| [w.clone(), b.clone()])
            .collect()
    }

    /// The outputs, `(rows, last width)`.
    pub(crate) fn outputs(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        let last = self.vars.len().saturating_sub(1);
        for (k, (w, b)) in self.vars.iter().enumerate() {
            h = h.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
            if k < last {
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.outputs(x)?.squeeze(1)
    }

    /// The weights as a plain-Rust [`Mlp`].
    pub(crate) fn export(&self) -> Result<Mlp, TrainError> {
        let mut layers = Vec::new();
        for (w, b) in &self.vars {
            let (i, o) = w.as_tensor().dims2()?;
            // Stored transposed: one row per output, for contiguous dot products.
            let w = w
                .as_tensor()
                .t()?
                .contiguous()?
                .flatten_all()?
                .to_vec1::<f32>()?;
            layers.push(Dense {
                inputs: i,
                outputs: o,
                w,
                b: b.as_tensor().to_vec1::<f32>()?,
            });
        }
        Ok(Mlp { layers })
    }
}

/// Rows and labels to train on (row-major `x`, `dim` columns).
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Features.
    pub x: &'a [f32],
    /// Labels (1 = attack).
    pub y: &'a [f32],
    /// Columns.
    pub dim: usize,
}

impl Batch<'_> {
    /// Rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

/// Mean BCE of `model` over `data`.
pub fn loss(model: &Mlp, data: Batch<'_>) -> f64 {
    let n = data.len().max(1) as f64;
    data.x
        .chunks_exact(data.dim.max(1))
        .zip(data.y)
        .map(|(r, y)| {
            let x = f64::from(model.logit(r));
            x.max(0.0) - x * f64::from(*y) + (-x.abs()).exp().ln_1p()
        })
        .sum::<f64>()
        / n
}

/// Trains an MLP on `train`, keeping the weights of the epoch with the lowest loss on
/// `valid`. The same data, configuration and seed give the same model.
pub fn train(train: Batch<'_>, valid: Batch<'_>, cfg: &TrainConfig) -> Result<Mlp, TrainError> {
    let dev = Device::Cpu;
    let rng = Rng::new(cfg.seed);
    let mut dims = vec![train.dim];
    dims.extend(&cfg.hidden);
    dims.push(1);
    let params = Params::init(&dims, &mut rng.fork(1), &dev)?;
    let mut opt = AdamW::new(
        params.vars(),
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..ParamsAdamW::default()
        },
    )?;
    let mut shuffles = rng.fork(2);
    let mut best = (f64::INFINITY, params.export()?);
    let batch = cfg.batch.max(1);
    for _ in 0..cfg.epochs {
        let order = shuffles.permutation(train.len());
        for idx in order.chunks(batch) {
            let mut xb = Vec::with_capacity(idx.len() * train.dim);
            let mut yb = Vec::with_capacity(idx.len());
            for &i in idx {
                if let Some(row) = train.x.get(i * train.dim..(i + 1) * train.dim) {
                    xb.extend_from_slice(row);
                    yb.push(train.y.get(i).copied().unwrap_or(0.0));
                }
            }
            let n = yb.len();
            let xt = Tensor::from_vec(xb, (n, train.dim), &dev)?;
            let yt = Tensor::from_vec(yb, n, &dev)?;
            let l = bce_with_logits(&params.forward(&xt)?, &yt)?;
            opt.backward_step(&l)?;
        }
        let model = params.export()?;
        let v = if valid.is_empty() {
            loss(&model, train)
        } else {
            loss(&model, valid)
        };
        if v < best.0 {
            best = (v, model);
        }
    }
    Ok(best.1)
}
