//! Generative adversarial networks against detectors, in feature space.
//!
//! - [`Attacker`] is IDSGAN (Lin, Shi and Xue 2018): a generator takes a real attack and
//!   noise and changes only the features that do not decide what the attack does (the
//!   [`Threat`] model), so the result is still the same attack; a discriminator learns to
//!   imitate the detector, which the attacker can only query (black box), and the generator
//!   learns to make the discriminator say "normal". Used to harden a detector (the
//!   `adv-gan` arm) and to measure a detector's evasion rate.
//! - [`SampleGan`] is a plain GAN that learns the distribution of the training attacks from
//!   noise alone (the `gan` arm): more attack-like rows, with no notion of evasion.
//!
//! Networks are trained with candle from the crate's seeded generator; the trained
//! generator is exported to a plain-Rust [`Mlp`] and run without candle.

use crate::features::{Encoder, Group};
use crate::mlp::{Mlp, Params, TrainError, bce_with_logits};
use crate::rng::Rng;
use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

/// How an attacker may change an attack's features without changing what it does.
#[derive(Debug, Clone, PartialEq)]
pub struct Threat {
    groups: Vec<Group>,
    /// Per column: may only grow (counts an attacker can add to, not take away from).
    grow_only: Vec<f32>,
    /// Per column: the smallest and largest value seen in training (standardised units).
    lo: Vec<f32>,
    hi: Vec<f32>,
}

/// Feature groups an attack of `category` depends on: never changed by an attacker.
///
/// NSL-KDD follows IDSGAN: DoS and probing attacks are defined by their connection's
/// intrinsic and time-based traffic features; R2L and U2R attacks by the intrinsic and
/// content features. HTTP parameter values keep their attack tokens (an attacker may add
/// characters around them). Access requests keep their rate, breadth and stated purpose
/// (what a scraper or a burst is).
pub fn functional(category: &str) -> &'static [Group] {
    match category {
        "dos" | "probe" => &[Group::Intrinsic, Group::TimeTraffic],
        "r2l" | "u2r" => &[Group::Intrinsic, Group::Content],
        "unknown" => &[
            Group::Intrinsic,
            Group::Content,
            Group::TimeTraffic,
            Group::Tokens,
        ],
        _ => &[
            Group::Intrinsic,
            Group::Tokens,
            Group::Rate,
            Group::Breadth,
            Group::Purpose,
        ],
    }
}

fn grows_only(g: Group) -> bool {
    matches!(
        g,
        Group::Grams | Group::Chars | Group::Length | Group::History
    )
}

impl Threat {
    /// The threat model of `encoder`'s features, bounded by the range of the encoded
    /// training rows `x`.
    pub fn new(encoder: &Encoder, x: &[f32]) -> Threat {
        let groups = encoder.groups();
        let dim = groups.len();
        let mut lo = vec![f32::INFINITY; dim];
        let mut hi = vec![f32::NEG_INFINITY; dim];
        for row in x.chunks_exact(dim.max(1)) {
            for ((l, h), v) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
                *l = l.min(*v);
                *h = h.max(*v);
            }
        }
        for (l, h) in lo.iter_mut().zip(hi.iter_mut()) {
            if l > h {
                (*l, *h) = (0.0, 0.0);
            }
        }
        Threat {
            grow_only: groups
                .iter()
                .map(|g| if grows_only(*g) { 1.0 } else { 0.0 })
                .collect(),
            groups,
            lo,
            hi,
        }
    }

    /// Columns.
    pub fn dim(&self) -> usize {
        self.groups.len()
    }

    /// 1 where an attack of `category` may be changed, 0 where not.
    pub fn mask(&self, category: &str) -> Vec<f32> {
        let fixed = functional(category);
        self.groups
            .iter()
            .map(|g| if fixed.contains(g) { 0.0 } else { 1.0 })
            .collect()
    }

    /// Applies a generator's raw output `delta` to the attack `x` under the mask: grow-only
    /// columns take only the positive part, and the result stays in the training range.
    pub fn apply(&self, x: &[f32], delta: &[f32], mask: &[f32]) -> Vec<f32> {
        x.iter()
            .zip(delta)
            .zip(mask)
            .zip(&self.grow_only)
            .zip(self.lo.iter().zip(&self.hi))
            .map(|((((v, d), m), g), (lo, hi))| {
                let d = if *g > 0.5 { d.max(0.0) } else { *d };
                (v + m * d).clamp(lo.min(*v), hi.max(*v))
            })
            .collect()
    }

    /// The same as [`Threat::apply`], on tensors (`x`, `delta`, `mask` are `(n, dim)`).
    fn apply_tensor(
        &self,
        x: &Tensor,
        delta: &Tensor,
        mask: &Tensor,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let dim = self.dim();
        let grow = Tensor::from_vec(self.grow_only.clone(), (1, dim), dev)?;
        let lo = Tensor::from_vec(self.lo.clone(), (1, dim), dev)?;
        let hi = Tensor::from_vec(self.hi.clone(), (1, dim), dev)?;
        // delta' = delta + grow · (relu(delta) − delta)
        let shaped = (delta + (delta.relu()? - delta)?.broadcast_mul(&grow)?)?;
        let moved = (x + (shaped * mask)?)?;
        moved
            .broadcast_maximum(&lo.broadcast_minimum(x)?)?
            .broadcast_minimum(&hi.broadcast_maximum(x)?)
    }
}

/// How to train a GAN.
#[derive(Debug, Clone, PartialEq)]
pub struct GanConfig {
    /// Passes over the attacks.
    pub epochs: usize,
    /// Rows per step.
    pub batch: usize,
    /// Width of the noise input.
    pub noise: usize,
    /// Hidden width of both networks.
    pub hidden: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// The seed.
    pub seed: u64,
}

impl Default for GanConfig {
    fn default() -> GanConfig {
        GanConfig {
            epochs: 10,
            batch: 128,
            noise: 16,
            hidden: 128,
            lr: 1e-3,
            seed: 1,
        }
    }
}

/// A generator, a discriminator over `dim` features, an Adam optimiser for each (β₁ = 0.5,
/// as GANs are usually trained) and the stream of random draws, all from one seed stream.
struct Networks {
    generator: Params,
    discriminator: Params,
    g_opt: AdamW,
    d_opt: AdamW,
    draws: Rng,
}

impl Networks {
    fn new(
        generator_dims: &[usize],
        dim: usize,
        cfg: &GanConfig,
        stream: u64,
        dev: &Device,
    ) -> Result<Networks, TrainError> {
        let rng = Rng::new(cfg.seed).fork(stream);
        let generator = Params::init(generator_dims, &mut rng.fork(1), dev)?;
        let discriminator = Params::init(&[dim, cfg.hidden / 2, 1], &mut rng.fork(2), dev)?;
        let adam = |vars| {
            AdamW::new(
                vars,
                ParamsAdamW {
                    lr: cfg.lr,
                    beta1: 0.5,
                    weight_decay: 0.0,
                    ..ParamsAdamW::default()
                },
            )
        };
        Ok(Networks {
            g_opt: adam(generator.vars())?,
            d_opt: adam(discriminator.vars())?,
            generator,
            discriminator,
            draws: rng.fork(3),
        })
    }
}

/// A black-box detector: the attack score of one encoded row, and the threshold from which
/// it flags.
pub struct BlackBox<'a> {
    /// The score.
    pub score: &'a dyn Fn(&[f32]) -> f32,
    /// Flags at or above this.
    pub threshold: f32,
}

impl std::fmt::Debug for BlackBox<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlackBox")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

impl BlackBox<'_> {
    fn flags(&self, x: &[f32]) -> bool {
        (self.score)(x) >= self.threshold
    }
}

/// Encoded rows with their categories.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// Row-major features.
    pub x: &'a [f32],
    /// Category per row.
    pub categories: &'a [String],
    /// Columns.
    pub dim: usize,
}

impl<'a> Rows<'a> {
    fn row(&self, i: usize) -> &'a [f32] {
        self.x.get(i * self.dim..(i + 1) * self.dim).unwrap_or(&[])
    }
    fn category(&self, i: usize) -> &'a str {
        self.categories.get(i).map_or("unknown", String::as_str)
    }
    /// Rows.
    pub fn len(&self) -> usize {
        self.categories.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty()
    }
}

/// A trained IDSGAN generator and the threat model it works under.
#[derive(Debug, Clone)]
pub struct Attacker {
    generator: Mlp,
    threat: Threat,
    noise: usize,
}

/// How a detector fared against an attacker.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evasion {
    /// Attacks tried.
    pub attacks: usize,
    /// Attacks the detector flagged as they were.
    pub detected: usize,
    /// Attacks the detector flagged after the attacker changed them.
    pub detected_adversarial: usize,
    /// Share of detected attacks that the attacker's version makes pass.
    pub evasion_rate: f64,
    /// Detection rate over the attacker's versions of all attacks.
    pub dr_adversarial: f64,
}

fn tensor(rows: Vec<f32>, n: usize, dim: usize, dev: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_vec(rows, (n, dim), dev)
}

fn noise(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.normal() as f32).collect()
}

impl Attacker {
    /// Trains a generator against `target` from the `attacks` it may change and `normal`
    /// rows the target is queried on. Keeps the generator of the epoch that evaded the
    /// target most often on the training attacks.
    pub fn train(
        target: &BlackBox<'_>,
        threat: &Threat,
        attacks: Rows<'_>,
        normal: Rows<'_>,
        cfg: &GanConfig,
    ) -> Result<Attacker, TrainError> {
        let dev = Device::Cpu;
        let dim = threat.dim();
        let Networks {
            generator,
            discriminator,
            mut g_opt,
            mut d_opt,
            mut draws,
        } = Networks::new(&[dim + cfg.noise, cfg.hidden, dim], dim, cfg, 21, &dev)?;
        let masks: Vec<Vec<f32>> = (0..attacks.len())
            .map(|i| threat.mask(attacks.category(i)))
            .collect();
        let mut best: Option<(usize, Mlp)> = None;
        let batch = cfg.batch.max(1);
        for _ in 0..cfg.epochs {
            for idx in draws.permutation(attacks.len()).chunks(batch) {
                let n = idx.len();
                let xa: Vec<f32> = idx.iter().flat_map(|i| attacks.row(*i).to_vec()).collect();
                let mk: Vec<f32> = idx
                    .iter()
                    .flat_map(|i| masks.get(*i).cloned().unwrap_or_default())
                    .collect();
                let z = noise(&mut draws, n * cfg.noise);
                let xa_t = tensor(xa, n, dim, &dev)?;
                let mk_t = tensor(mk, n, dim, &dev)?;
                let input = Tensor::cat(&[&xa_t, &tensor(z, n, cfg.noise, &dev)?], 1)?;
                let adversarial =
                    threat.apply_tensor(&xa_t, &generator.outputs(&input)?, &mk_t, &dev)?;

                // The discriminator learns the target's verdicts on normal rows and on the
                // generator's current attacks.
                let adv_rows = adversarial.detach().flatten_all()?.to_vec1::<f32>()?;
                let picked: Vec<usize> = (0..n).map(|_| draws.below(normal.len().max(1))).collect();
                let mut d_x: Vec<f32> = picked
                    .iter()
                    .flat_map(|i| normal.row(*i).to_vec())
                    .collect();
                d_x.extend_from_slice(&adv_rows);
                let d_y: Vec<f32> = d_x
                    .chunks_exact(dim.max(1))
                    .map(|r| if target.flags(r) { 1.0 } else { 0.0 })
                    .collect();
                let rows = d_y.len();
                if d_x.len() != rows * dim {
                    continue;
                }
                let d_loss = bce_with_logits(
                    &discriminator
                        .outputs(&tensor(d_x, rows, dim, &dev)?)?
                        .squeeze(1)?,
                    &Tensor::from_vec(d_y, rows, &dev)?,
                )?;
                d_opt.backward_step(&d_loss)?;

                // The generator learns to make the discriminator say "normal".
                let g_loss = bce_with_logits(
                    &discriminator.outputs(&adversarial)?.squeeze(1)?,
                    &Tensor::zeros(n, DType::F32, &dev)?,
                )?;
                g_opt.backward_step(&g_loss)?;
            }
            let candidate = Attacker {
                generator: generator.export()?,
                threat: threat.clone(),
                noise: cfg.noise,
            };
            let probe = Rows {
                x: attacks
                    .x
                    .get(..attacks.dim * attacks.len().min(2000))
                    .unwrap_or(&[]),
                categories: attacks
                    .categories
                    .get(..attacks.len().min(2000))
                    .unwrap_or(&[]),
                dim: attacks.dim,
            };
            let evaded = candidate
                .perturb_all(probe, cfg.seed)
                .chunks_exact(dim.max(1))
                .filter(|r| !target.flags(r))
                .count();
            if best.as_ref().is_none_or(|(e, _)| evaded > *e) {
                best = Some((evaded, candidate.generator));
            }
        }
        Ok(Attacker {
            generator: match best {
                Some((_, g)) => g,
                None => generator.export()?,
            },
            threat: threat.clone(),
            noise: cfg.noise,
        })
    }

    /// The attacker's version of one attack of `category`, with noise from `rng`.
    pub fn perturb(&self, x: &[f32], category: &str, rng: &mut Rng) -> Vec<f32> {
        let mut input = x.to_vec();
        input.extend(noise(rng, self.noise));
        let delta = self.generator.forward(&input);
        self.threat.apply(x, &delta, &self.threat.mask(category))
    }

    /// The attacker's version of every row, row-major.
    pub fn perturb_all(&self, rows: Rows<'_>, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed).fork(22);
        (0..rows.len())
            .flat_map(|i| self.perturb(rows.row(i), rows.category(i), &mut rng))
            .collect()
    }

    /// How `target` fares on `attacks` and on the attacker's versions of them.
    pub fn evasion(&self, target: &BlackBox<'_>, attacks: Rows<'_>, seed: u64) -> Evasion {
        let adversarial = self.perturb_all(attacks, seed);
        let mut detected = 0;
        let mut detected_adversarial = 0;
        let mut evaded = 0;
        for (i, adv) in adversarial.chunks_exact(attacks.dim.max(1)).enumerate() {
            let before = target.flags(attacks.row(i));
            let after = target.flags(adv);
            detected += usize::from(before);
            detected_adversarial += usize::from(after);
            evaded += usize::from(before && !after);
        }
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Evasion {
            attacks: attacks.len(),
            detected,
            detected_adversarial,
            evasion_rate: ratio(evaded, detected),
            dr_adversarial: ratio(detected_adversarial, attacks.len()),
        }
    }
}

/// A plain GAN over attack rows: noise in, an attack-like row out.
#[derive(Debug, Clone)]
pub struct SampleGan {
    generator: Mlp,
    noise: usize,
    lo: Vec<f32>,
    hi: Vec<f32>,
}

impl SampleGan {
    /// Trains on the rows of `attacks`; outputs are kept within `threat`'s training range.
    pub fn train(
        threat: &Threat,
        attacks: Rows<'_>,
        cfg: &GanConfig,
    ) -> Result<SampleGan, TrainError> {
        let dev = Device::Cpu;
        let dim = threat.dim();
        let Networks {
            generator,
            discriminator,
            mut g_opt,
            mut d_opt,
            mut draws,
        } = Networks::new(&[cfg.noise, cfg.hidden, dim], dim, cfg, 31, &dev)?;
        let lo = Tensor::from_vec(threat.lo.clone(), (1, dim), &dev)?;
        let hi = Tensor::from_vec(threat.hi.clone(), (1, dim), &dev)?;
        for _ in 0..cfg.epochs {
            for idx in draws.permutation(attacks.len()).chunks(cfg.batch.max(1)) {
                let n = idx.len();
                let real: Vec<f32> = idx.iter().flat_map(|i| attacks.row(*i).to_vec()).collect();
                if real.len() != n * dim {
                    continue;
                }
                let z = tensor(noise(&mut draws, n * cfg.noise), n, cfg.noise, &dev)?;
                let fake = generator
                    .outputs(&z)?
                    .broadcast_maximum(&lo)?
                    .broadcast_minimum(&hi)?;
                let both = Tensor::cat(&[&tensor(real, n, dim, &dev)?, &fake.detach()], 0)?;
                let mut labels = vec![1f32; n];
                labels.extend(std::iter::repeat_n(0f32, n));
                let d_loss = bce_with_logits(
                    &discriminator.outputs(&both)?.squeeze(1)?,
                    &Tensor::from_vec(labels, 2 * n, &dev)?,
                )?;
                d_opt.backward_step(&d_loss)?;
                let g_loss = bce_with_logits(
                    &discriminator.outputs(&fake)?.squeeze(1)?,
                    &Tensor::ones(n, DType::F32, &dev)?,
                )?;
                g_opt.backward_step(&g_loss)?;
            }
        }
        Ok(SampleGan {
            generator: generator.export()?,
            noise: cfg.noise,
            lo: threat.lo.clone(),
            hi: threat.hi.clone(),
        })
    }

    /// `n` generated rows, row-major.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed).fork(32);
        (0..n)
            .flat_map(|_| {
                let z = noise(&mut rng, self.noise);
                self.generator
                    .forward(&z)
                    .iter()
                    .zip(self.lo.iter().zip(&self.hi))
                    .map(|(v, (lo, hi))| v.clamp(*lo, *hi))
                    .collect::<Vec<f32>>()
            })
            .collect()
    }
}
