//! Turning records into fixed-length feature vectors. An encoder is fitted on training
//! records only (vocabularies, means, deviations) and saved with the model, so that every
//! later record is encoded exactly as the training records were.

use crate::data::{Kind, NSL_KDD_FIELDS, Record};
use serde::{Deserialize, Serialize};

/// Hash buckets for the character n-grams of an HTTP parameter value.
pub const HTTP_BUCKETS: usize = 512;

/// Substrings whose presence is a feature of an HTTP parameter value.
pub const HTTP_TOKENS: &[&str] = &[
    "select",
    "union",
    "insert",
    "update",
    "delete",
    "drop",
    "from",
    "where",
    " or ",
    " and ",
    "--",
    "/*",
    "*/",
    "0x",
    "char(",
    "concat",
    "sleep(",
    "benchmark",
    "waitfor",
    "exec",
    "<script",
    "</",
    "javascript:",
    "onerror",
    "onload",
    "alert(",
    "eval(",
    "document.",
    "../",
    "..\\",
    "/etc/",
    "passwd",
    "win.ini",
    "boot.ini",
    "%2e",
    "%00",
    "|",
    ";",
    "&&",
    "`",
    "$(",
    "cmd",
    "/bin/",
    "wget",
    "curl",
];

/// Characters counted one by one in an HTTP parameter value.
const HTTP_CHARS: &[u8] = b"'\"<>()[]{};:-/\\%=&|.*#@$+,!?~^ _";

/// A fitted encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Encoder {
    /// NSL-KDD: symbolic fields one-hot over the training vocabulary (an unseen value is all
    /// zeros); continuous fields as `ln(1 + x)`; everything standardised.
    NslKdd {
        /// Per symbolic field, its vocabulary.
        vocab: Vec<Vec<String>>,
        /// Standardisation.
        scale: Scale,
    },
    /// HTTP parameter values: hashed character 1–3-grams (log counts), token presence,
    /// special character counts, length and character class ratios; standardised.
    HttpParams {
        /// Standardisation.
        scale: Scale,
    },
    /// SecNet access requests: counts as `ln(1 + x)`, the hour as a point on the unit
    /// circle, the purpose one-hot over the training vocabulary; standardised.
    AccessRequests {
        /// The purposes seen in training.
        purposes: Vec<String>,
        /// Standardisation.
        scale: Scale,
    },
}

/// What a feature column describes: the unit an attacker's perturbation is constrained by
/// (see [`crate::gan::Threat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// NSL-KDD basic connection features (fields 1–9).
    Intrinsic,
    /// NSL-KDD content features (fields 10–22).
    Content,
    /// NSL-KDD time-based traffic features (fields 23–31).
    TimeTraffic,
    /// NSL-KDD host-based traffic features (fields 32–41).
    HostTraffic,
    /// HTTP: hashed character n-gram counts.
    Grams,
    /// HTTP: presence of attack tokens.
    Tokens,
    /// HTTP: special character counts.
    Chars,
    /// HTTP: length.
    Length,
    /// HTTP: character class ratios.
    Ratios,
    /// Access requests: request rate.
    Rate,
    /// Access requests: breadth of records touched.
    Breadth,
    /// Access requests: the requester's history.
    History,
    /// Access requests: token age.
    TokenAge,
    /// Access requests: hour of day.
    Hour,
    /// Access requests: purpose.
    Purpose,
}

fn nsl_group(field: usize) -> Group {
    match field {
        0..=8 => Group::Intrinsic,
        9..=21 => Group::Content,
        22..=30 => Group::TimeTraffic,
        _ => Group::HostTraffic,
    }
}

fn access_raw(purposes: &[String], r: &Record) -> Vec<f32> {
    let num = |i: usize| -> f32 {
        r.fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |v| v.max(0.0).ln_1p() as f32)
    };
    let hour: f64 = r.fields.get(4).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let angle = hour / 24.0 * std::f64::consts::TAU;
    let purpose = r.fields.get(5).map_or("", String::as_str);
    let mut out = vec![
        num(0),
        num(1),
        num(2),
        num(3),
        angle.sin() as f32,
        angle.cos() as f32,
    ];
    out.extend(
        purposes
            .iter()
            .map(|p| if p == purpose { 1.0 } else { 0.0 }),
    );
    out
}

/// Per-feature mean and standard deviation (1 where a feature never varies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scale {
    /// Means.
    pub mean: Vec<f32>,
    /// Standard deviations.
    pub std: Vec<f32>,
}

impl Scale {
    fn fit(rows: &[Vec<f32>], dim: usize) -> Scale {
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0f64; dim];
        for r in rows {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += f64::from(*v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0f64; dim];
        for r in rows {
            for ((s, v), m) in var.iter_mut().zip(r).zip(&mean) {
                let d = f64::from(*v) - m;
                *s += d * d;
            }
        }
        Scale {
            mean: mean.iter().map(|m| *m as f32).collect(),
            std: var
                .iter()
                .map(|s| {
                    let sd = (s / n).sqrt();
                    if sd > 1e-9 { sd as f32 } else { 1.0 }
                })
                .collect(),
        }
    }

    fn apply(&self, x: &mut [f32]) {
        for ((v, m), s) in x.iter_mut().zip(&self.mean).zip(&self.std) {
            *v = (*v - m) / s;
        }
    }
}

fn symbolic_indices() -> Vec<usize> {
    NSL_KDD_FIELDS
        .iter()
        .enumerate()
        .filter(|(_, (_, s))| *s)
        .map(|(i, _)| i)
        .collect()
}

fn nsl_raw(vocab: &[Vec<String>], r: &Record) -> Vec<f32> {
    let mut out = Vec::new();
    let mut sym = 0;
    for (i, (_, symbolic)) in NSL_KDD_FIELDS.iter().enumerate() {
        let value = r.fields.get(i).map_or("", String::as_str);
        if *symbolic {
            let words = vocab.get(sym).map_or(&[][..], Vec::as_slice);
            out.extend(words.iter().map(|w| if w == value { 1.0 } else { 0.0 }));
            sym += 1;
        } else {
            let v: f64 = value.parse().unwrap_or(0.0);
            out.push(v.max(0.0).ln_1p() as f32);
        }
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The unscaled features of an HTTP parameter value.
pub fn http_raw(value: &str) -> Vec<f32> {
    let lower = value.to_lowercase();
    let bytes = lower.as_bytes();
    let mut grams = vec![0f32; HTTP_BUCKETS];
    for n in 1..=3 {
        for w in bytes.windows(n) {
            let mut key = Vec::with_capacity(n + 1);
            key.push(n as u8);
            key.extend_from_slice(w);
            let b = (fnv1a(&key) % HTTP_BUCKETS as u64) as usize;
            if let Some(g) = grams.get_mut(b) {
                *g += 1.0;
            }
        }
    }
    let mut out: Vec<f32> = grams.iter().map(|c| c.ln_1p()).collect();
    out.extend(
        HTTP_TOKENS
            .iter()
            .map(|t| if lower.contains(t) { 1.0 } else { 0.0 }),
    );
    out.extend(
        HTTP_CHARS
            .iter()
            .map(|c| (bytes.iter().filter(|b| *b == c).count() as f32).ln_1p()),
    );
    let len = bytes.len().max(1) as f32;
    let count = |f: fn(&u8) -> bool| bytes.iter().filter(|b| f(b)).count() as f32 / len;
    out.push((bytes.len() as f32).ln_1p());
    out.push(count(u8::is_ascii_digit));
    out.push(count(u8::is_ascii_alphabetic));
    out.push(count(|b| !b.is_ascii_alphanumeric()));
    out.push(count(|b| !b.is_ascii()));
    out
}

impl Encoder {
    /// Fits an encoder of `kind` on training records.
    pub fn fit(kind: Kind, records: &[Record]) -> Encoder {
        match kind {
            Kind::NslKdd => {
                let vocab: Vec<Vec<String>> = symbolic_indices()
                    .into_iter()
                    .map(|i| {
                        let mut words: Vec<String> = records
                            .iter()
                            .filter_map(|r| r.fields.get(i).cloned())
                            .collect();
                        words.sort();
                        words.dedup();
                        words
                    })
                    .collect();
                let raw: Vec<Vec<f32>> = records.iter().map(|r| nsl_raw(&vocab, r)).collect();
                let dim = raw.first().map_or(0, Vec::len);
                Encoder::NslKdd {
                    scale: Scale::fit(&raw, dim),
                    vocab,
                }
            }
            Kind::HttpParams => {
                let raw: Vec<Vec<f32>> = records
                    .iter()
                    .map(|r| http_raw(r.fields.first().map_or("", String::as_str)))
                    .collect();
                let dim = raw.first().map_or(0, Vec::len);
                Encoder::HttpParams {
                    scale: Scale::fit(&raw, dim),
                }
            }
            Kind::AccessRequests => {
                let mut purposes: Vec<String> = records
                    .iter()
                    .filter_map(|r| r.fields.get(5).cloned())
                    .collect();
                purposes.sort();
                purposes.dedup();
                let raw: Vec<Vec<f32>> = records.iter().map(|r| access_raw(&purposes, r)).collect();
                let dim = raw.first().map_or(6 + purposes.len(), Vec::len);
                Encoder::AccessRequests {
                    scale: Scale::fit(&raw, dim),
                    purposes,
                }
            }
        }
    }

    /// What each column describes.
    pub fn groups(&self) -> Vec<Group> {
        match self {
            Encoder::NslKdd { vocab, .. } => {
                let mut out = Vec::new();
                let mut sym = 0;
                for (i, (_, symbolic)) in NSL_KDD_FIELDS.iter().enumerate() {
                    let width = if *symbolic {
                        sym += 1;
                        vocab.get(sym - 1).map_or(0, Vec::len)
                    } else {
                        1
                    };
                    out.extend(std::iter::repeat_n(nsl_group(i), width));
                }
                out
            }
            Encoder::HttpParams { .. } => {
                let mut out = vec![Group::Grams; HTTP_BUCKETS];
                out.extend(std::iter::repeat_n(Group::Tokens, HTTP_TOKENS.len()));
                out.extend(std::iter::repeat_n(Group::Chars, HTTP_CHARS.len()));
                out.push(Group::Length);
                out.extend([Group::Ratios; 4]);
                out
            }
            Encoder::AccessRequests { purposes, .. } => {
                let mut out = vec![
                    Group::Rate,
                    Group::Breadth,
                    Group::History,
                    Group::TokenAge,
                    Group::Hour,
                    Group::Hour,
                ];
                out.extend(std::iter::repeat_n(Group::Purpose, purposes.len()));
                out
            }
        }
    }

    /// The kind of records it encodes.
    pub fn kind(&self) -> Kind {
        match self {
            Encoder::NslKdd { .. } => Kind::NslKdd,
            Encoder::HttpParams { .. } => Kind::HttpParams,
            Encoder::AccessRequests { .. } => Kind::AccessRequests,
        }
    }

    /// Length of a feature vector.
    pub fn dim(&self) -> usize {
        match self {
            Encoder::NslKdd { scale, .. }
            | Encoder::HttpParams { scale }
            | Encoder::AccessRequests { scale, .. } => scale.mean.len(),
        }
    }

    /// Encodes one record.
    pub fn encode(&self, r: &Record) -> Vec<f32> {
        let (mut x, scale) = match self {
            Encoder::NslKdd { vocab, scale } => (nsl_raw(vocab, r), scale),
            Encoder::HttpParams { scale } => {
                (http_raw(r.fields.first().map_or("", String::as_str)), scale)
            }
            Encoder::AccessRequests { purposes, scale } => (access_raw(purposes, r), scale),
        };
        scale.apply(&mut x);
        x
    }

    /// Encodes records into a row-major matrix.
    pub fn encode_all(&self, records: &[Record]) -> Vec<f32> {
        let mut out = Vec::with_capacity(records.len() * self.dim());
        for r in records {
            out.extend(self.encode(r));
        }
        out
    }
}
