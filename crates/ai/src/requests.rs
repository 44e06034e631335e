//! SecNet's own access requests as labelled records: the features a Private Data Center
//! computes for every fetch (`secnet_pdc::access::RequestFeatures`), a CSV format for them,
//! and a generator of synthetic labelled traffic.
//!
//! No public dataset of access requests to medical data centres exists, so the generator is
//! a stated model, not data: clinicians in and out of working hours, research batch jobs that
//! legitimately read many records fast, and five kinds of misuse (bulk scraping, a stolen
//! token hammered in bursts, an insider browsing at night, a token used long after it was
//! issued, and a slow crawl that stays under rate limits). The classes overlap on purpose —
//! night shifts look like insiders, batch jobs look like scrapers — so a detector has to
//! weigh features together. Detectors trained on it are useful as a starting point; a node
//! retrains on its own recorded traffic, which has the same columns.

use crate::data::Record;
use crate::rng::Rng;

/// The columns of an access-request record, in order.
pub const FIELDS: [&str; 6] = [
    "rate_per_min",
    "breadth_per_hour",
    "history",
    "token_age_s",
    "hour",
    "purpose",
];

/// Purposes a grant may state that the generator uses for ordinary work.
pub const PURPOSES: &[(&str, f64)] = &[
    ("treatment", 0.58),
    ("research", 0.15),
    ("billing", 0.10),
    ("care-coordination", 0.07),
    ("audit", 0.05),
    ("public-health", 0.03),
    ("security", 0.02),
];

/// Purposes that ordinary work never states.
const ODD_PURPOSES: &[&str] = &["marketing", "other", "export", "test"];

/// One request's features, as the access path computes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Requests by the consumer in the last minute.
    pub rate_per_min: u32,
    /// Distinct data fetched in the last hour.
    pub breadth_per_hour: u32,
    /// Earlier fetches by the consumer on this holder.
    pub history: u32,
    /// Age of the token, seconds.
    pub token_age_s: u32,
    /// Hour of day, UTC.
    pub hour: u8,
    /// Purpose stated in the grant.
    pub purpose: String,
}

impl Request {
    /// The record a detector reads (unlabelled).
    pub fn to_record(&self) -> Record {
        Record {
            fields: vec![
                self.rate_per_min.to_string(),
                self.breadth_per_hour.to_string(),
                self.history.to_string(),
                self.token_age_s.to_string(),
                self.hour.to_string(),
                self.purpose.clone(),
            ],
            attack: false,
            category: "normal".into(),
        }
    }
}

/// Parses one CSV row (`FIELDS`, then `label` normal|attack, then `category`).
pub fn parse_row(cols: &[&str]) -> Result<Record, String> {
    if cols.len() != FIELDS.len() + 2 {
        return Err(format!(
            "{} columns, expected {}",
            cols.len(),
            FIELDS.len() + 2
        ));
    }
    for (i, name) in FIELDS.iter().enumerate().take(5) {
        let v = cols.get(i).copied().unwrap_or_default();
        let ok = if *name == "hour" {
            v.parse::<u8>().is_ok_and(|h| h < 24)
        } else {
            v.parse::<u32>().is_ok()
        };
        if !ok {
            return Err(format!("column {} ({name}) is not valid: {v:?}", i + 1));
        }
    }
    let purpose = cols.get(5).copied().unwrap_or_default();
    if purpose.is_empty() || purpose.len() > 64 {
        return Err("column 6 (purpose) must be 1 to 64 characters".into());
    }
    let attack = match cols.get(6).copied().unwrap_or_default() {
        "normal" => false,
        "attack" => true,
        other => return Err(format!("label {other:?}, expected normal or attack")),
    };
    let category = cols.get(7).copied().unwrap_or_default();
    if category.is_empty() {
        return Err("the category is empty".into());
    }
    Ok(Record {
        fields: cols
            .get(..FIELDS.len())
            .unwrap_or_default()
            .iter()
            .map(|c| (*c).to_string())
            .collect(),
        attack,
        category: if attack { category } else { "normal" }.to_string(),
    })
}

/// The CSV header.
pub fn header() -> String {
    format!("{},label,category", FIELDS.join(","))
}

/// One CSV row for a labelled record.
pub fn to_row(r: &Record) -> String {
    format!(
        "{},{},{}",
        r.fields.join(","),
        if r.attack { "attack" } else { "normal" },
        r.category
    )
}

fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> u32 {
    let (a, b) = (lo.max(1.0).ln(), hi.max(1.0).ln());
    (a + (b - a) * rng.uniform()).exp().round() as u32
}

fn log_normal(rng: &mut Rng, median: f64, sigma: f64) -> u32 {
    (median * (sigma * rng.normal()).exp()).round().max(0.0) as u32
}

fn purpose(rng: &mut Rng) -> String {
    let mut u = rng.uniform();
    for (p, w) in PURPOSES {
        if u < *w {
            return (*p).to_string();
        }
        u -= w;
    }
    "treatment".into()
}

fn odd_purpose(rng: &mut Rng) -> String {
    ODD_PURPOSES
        .get(rng.below(ODD_PURPOSES.len()))
        .copied()
        .unwrap_or("other")
        .to_string()
}

fn working_hour(rng: &mut Rng) -> u8 {
    ((13.0 + 3.0 * rng.normal()).round() as i64).rem_euclid(24) as u8
}

fn any_hour(rng: &mut Rng) -> u8 {
    rng.below(24) as u8
}

fn night_hour(rng: &mut Rng) -> u8 {
    ((rng.below(7) + 22) % 24) as u8
}

/// Share of generated requests that are attacks.
pub const ATTACK_SHARE: f64 = 0.2;

fn normal(rng: &mut Rng) -> (Request, &'static str) {
    let u = rng.uniform();
    let req = if u < 0.08 {
        // A research batch job: many records, fast, by a long-standing consumer.
        Request {
            rate_per_min: log_uniform(rng, 15.0, 90.0),
            breadth_per_hour: log_uniform(rng, 80.0, 800.0),
            history: log_normal(rng, 2000.0, 1.0),
            token_age_s: log_uniform(rng, 1.0, 3600.0),
            hour: any_hour(rng),
            purpose: "research".into(),
        }
    } else if u < 0.2 {
        // A night shift.
        Request {
            rate_per_min: log_uniform(rng, 1.0, 8.0),
            breadth_per_hour: log_uniform(rng, 1.0, 40.0),
            history: log_normal(rng, 150.0, 1.2),
            token_age_s: log_uniform(rng, 1.0, 3600.0),
            hour: night_hour(rng),
            purpose: purpose(rng),
        }
    } else {
        // A clinician in working hours; some are new to this holder.
        let new = rng.uniform() < 0.05;
        Request {
            rate_per_min: log_uniform(rng, 1.0, 12.0),
            breadth_per_hour: log_uniform(rng, 1.0, 60.0),
            history: if new {
                rng.below(3) as u32
            } else {
                log_normal(rng, 200.0, 1.2)
            },
            token_age_s: if rng.uniform() < 0.05 {
                log_uniform(rng, 3600.0, 86_400.0)
            } else {
                log_uniform(rng, 1.0, 3600.0)
            },
            hour: working_hour(rng),
            purpose: purpose(rng),
        }
    };
    (req, "normal")
}

fn attack(rng: &mut Rng) -> (Request, &'static str) {
    match rng.below(5) {
        0 => (
            Request {
                rate_per_min: log_uniform(rng, 10.0, 300.0),
                breadth_per_hour: log_uniform(rng, 150.0, 5000.0),
                history: log_uniform(rng, 1.0, 40.0),
                token_age_s: log_uniform(rng, 1.0, 7200.0),
                hour: any_hour(rng),
                purpose: if rng.uniform() < 0.5 {
                    purpose(rng)
                } else {
                    odd_purpose(rng)
                },
            },
            "scrape",
        ),
        1 => (
            Request {
                rate_per_min: log_uniform(rng, 60.0, 2000.0),
                breadth_per_hour: log_uniform(rng, 1.0, 10.0),
                history: log_uniform(rng, 1.0, 100.0),
                token_age_s: log_uniform(rng, 1.0, 600.0),
                hour: any_hour(rng),
                purpose: purpose(rng),
            },
            "burst",
        ),
        2 => (
            Request {
                rate_per_min: log_uniform(rng, 1.0, 10.0),
                breadth_per_hour: log_uniform(rng, 30.0, 300.0),
                history: log_normal(rng, 150.0, 1.2),
                token_age_s: log_uniform(rng, 1.0, 3600.0),
                hour: night_hour(rng),
                purpose: purpose(rng),
            },
            "insider",
        ),
        3 => (
            Request {
                rate_per_min: log_uniform(rng, 1.0, 30.0),
                breadth_per_hour: log_uniform(rng, 1.0, 50.0),
                history: rng.below(5) as u32,
                token_age_s: log_uniform(rng, 86_400.0, 30.0 * 86_400.0),
                hour: any_hour(rng),
                purpose: purpose(rng),
            },
            "stale-token",
        ),
        _ => (
            Request {
                rate_per_min: log_uniform(rng, 2.0, 12.0),
                breadth_per_hour: log_uniform(rng, 60.0, 400.0),
                history: log_uniform(rng, 1.0, 20.0),
                token_age_s: log_uniform(rng, 1.0, 3600.0),
                hour: working_hour(rng),
                purpose: if rng.uniform() < 0.3 {
                    odd_purpose(rng)
                } else {
                    purpose(rng)
                },
            },
            "crawl",
        ),
    }
}

/// `rows` labelled synthetic requests; the same seed gives the same rows.
pub fn generate(rows: usize, seed: u64) -> Vec<Record> {
    let mut rng = Rng::new(seed).fork(11);
    (0..rows)
        .map(|_| {
            let is_attack = rng.uniform() < ATTACK_SHARE;
            let (req, category) = if is_attack {
                attack(&mut rng)
            } else {
                normal(&mut rng)
            };
            Record {
                category: category.to_string(),
                attack: is_attack,
                ..req.to_record()
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn generated_rows_parse_back_as_they_were() {
        for r in generate(500, 1) {
            let row = to_row(&r);
            let cols: Vec<&str> = row.split(',').collect();
            assert_eq!(parse_row(&cols).unwrap(), r);
        }
    }

    #[test]
    fn the_generator_is_deterministic_and_mixed() {
        let a = generate(2000, 7);
        assert_eq!(a, generate(2000, 7));
        assert_ne!(a, generate(2000, 8));
        let attacks = a.iter().filter(|r| r.attack).count();
        assert!((300..500).contains(&attacks), "{attacks}");
        for c in ["scrape", "burst", "insider", "stale-token", "crawl"] {
            assert!(a.iter().any(|r| r.category == c), "{c}");
        }
    }

    #[test]
    fn bad_rows_say_what_is_wrong() {
        let e = parse_row(&["1", "2", "3", "4", "25", "x", "normal", "normal"]).unwrap_err();
        assert!(e.contains("hour"), "{e}");
        let e = parse_row(&["1", "2", "3", "4", "5", "x", "maybe", "normal"]).unwrap_err();
        assert!(e.contains("label"), "{e}");
        let e = parse_row(&["1", "2"]).unwrap_err();
        assert!(e.contains("columns"), "{e}");
    }
}
