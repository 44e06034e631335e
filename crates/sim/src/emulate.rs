//! The paper's experiment, measured: `N` Private Data Centers, each attacked by its own
//! stream of NSL-KDD records in which it sees only some attack types, train detectors on
//! what they saw, publish them as priced security rules on the real data contract (a
//! deterministic in-process [`Sandbox`] ledger: blocks one second apart), and buy each
//! other's rules by a policy that weighs measured quality against price.
//!
//! Each seed:
//! 1. splits the records by attack name into a node pool (60%), a market set (15%, on which
//!    rule quality is measured — no rule ever trains on it) and a test set (25%, on which
//!    vulnerability and false positives are measured);
//! 2. gives node `i` one DoS attack type and `types_per_node − 1` other attack types from the
//!    pool, with normal traffic, and trains its detector (an MLP, thresholds fixed on its own
//!    validation split at 1% false positives);
//! 3. publishes the rules one per step in a random order. A rule's price is its fair value
//!    (100 × its measured quality) times a price level (1.05, 1.5, 2 in turn). At every step
//!    every node ranks the rules on the market that it does not own by
//!    `quality − price_weight × price / 100`, keeps the best `slots` with a positive score,
//!    and subscribes (pays through the contract), gets a grant and installs any it does not
//!    have yet, after checking the rule's signature and its registered hash.
//!
//! Measured at every step: the vulnerability (share of the test set's DoS attacks that pass
//! a node's own detector and every installed rule), the false-positive rate on the test
//! set's normal traffic, and each contributor's revenue (its balance gained on the ledger).
//! Controls: no sharing (own detector only) and random rules (as many installed rules as
//! the real run, each flagging a random 1% of records).

use crate::paper::PRICE_LEVELS;
use secnet_ai::data::{NSL_KDD_CATEGORIES, Record, parse_nsl_kdd_line};
use secnet_ai::mlp::TrainConfig;
use secnet_ai::model::Detector;
use secnet_ai::rng::Rng;
use secnet_ai::{Augment, Family, train_detector};
use secnet_contract::Sandbox;
use secnet_rules::SecurityRule;
use secnet_types::{Call, DataKind, Keypair, RegisterData};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// How to run the emulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Private Data Centers.
    pub nodes: usize,
    /// Seeds 1..=seeds.
    pub seeds: u64,
    /// Records each node trains on (at most).
    pub rows_per_node: usize,
    /// Attack types each node sees (one of them DoS).
    pub types_per_node: usize,
    /// Rules a node keeps installed.
    pub slots: usize,
    /// Weight of price against quality in the buying policy.
    pub price_weight: f64,
    /// Training epochs of each detector.
    pub epochs: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            nodes: 20,
            seeds: 10,
            rows_per_node: 4000,
            types_per_node: 2,
            slots: 4,
            price_weight: 0.3,
            epochs: 8,
        }
    }
}

/// An NSL-KDD record with its attack name.
#[derive(Debug, Clone)]
pub struct Named {
    /// The attack name (`normal` for normal traffic).
    pub name: String,
    /// The record.
    pub record: Record,
}

/// Parses NSL-KDD text, keeping each record's attack name. Returns the records and the
/// number of malformed lines.
pub fn parse_nsl(text: &str) -> (Vec<Named>, usize) {
    let categories: BTreeMap<String, String> = NSL_KDD_CATEGORIES
        .iter()
        .map(|(a, c)| ((*a).to_string(), (*c).to_string()))
        .collect();
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let name = line
            .split(',')
            .nth(41)
            .unwrap_or_default()
            .trim()
            .trim_end_matches('.')
            .to_string();
        match parse_nsl_kdd_line(line, &categories) {
            Ok(record) => out.push(Named { name, record }),
            Err(_) => bad += 1,
        }
    }
    (out, bad)
}

/// One step of one seed and arm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// The seed.
    pub seed: u64,
    /// Rules published so far.
    pub shared_rules: usize,
    /// Mean over nodes of the share of test DoS attacks that pass.
    pub vulnerability: f64,
    /// Mean over nodes of the share of test normal records flagged.
    pub fpr: f64,
    /// Mean installed rules per node.
    pub installed: f64,
}

/// A contributor's revenue after a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Revenue {
    /// The seed.
    pub seed: u64,
    /// Rules published so far.
    pub shared_rules: usize,
    /// The contributor (node index).
    pub contributor: usize,
    /// Its rule's measured quality (detection rate on the market set).
    pub quality: f64,
    /// Its price level (price over fair value).
    pub price_level: f64,
    /// Its price.
    pub price: u64,
    /// What it has earned on the ledger so far.
    pub revenue: u64,
    /// Subscribers so far.
    pub buyers: usize,
}

/// A rule as the market saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleStat {
    /// The seed.
    pub seed: u64,
    /// The contributor.
    pub contributor: usize,
    /// Attack types it was trained on.
    pub trained_on: Vec<String>,
    /// Detection rate on the market set (all attack types).
    pub quality: f64,
    /// Detection rate on the test set's DoS attacks.
    pub dos_detection: f64,
    /// False-positive rate on the test set's normal records.
    pub fpr: f64,
    /// Price.
    pub price: u64,
}

/// Everything measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// Sharing through the market.
    pub sharing: Vec<Point>,
    /// Control: own detector only.
    pub no_sharing: Vec<Point>,
    /// Control: random rules.
    pub random_rules: Vec<Point>,
    /// Revenue per contributor and step.
    pub revenue: Vec<Revenue>,
    /// The rules.
    pub rules: Vec<RuleStat>,
}

const CHAIN: &str = "secnet-sim";

/// Commits the queued market transactions; any refusal is an error of the emulation.
fn commit(ledger: &mut Sandbox) -> Result<(), String> {
    let outcome = ledger
        .commit()
        .map_err(|e| format!("the simulated ledger refused a block: {e}"))?;
    if let Some(r) = outcome.receipts.iter().find_map(|r| r.rejection()) {
        return Err(format!("a market transaction was refused: {r}"));
    }
    Ok(())
}

struct Node {
    rule: SecurityRule,
    trained_on: Vec<String>,
    /// Flags on the test set at the 1%-FPR threshold.
    flags: Vec<bool>,
    quality: f64,
    price: u64,
    price_level: f64,
}

fn flags_of(d: &Detector, records: &[Record]) -> Vec<bool> {
    records
        .iter()
        .map(|r| d.score(r) >= d.thresholds.at_1pct_fpr)
        .collect()
}

fn rate(flags: &[bool], select: &[bool]) -> f64 {
    let (hit, n) = flags
        .iter()
        .zip(select)
        .filter(|(_, s)| **s)
        .fold((0usize, 0usize), |(h, n), (f, _)| {
            (h + usize::from(*f), n + 1)
        });
    if n == 0 { 0.0 } else { hit as f64 / n as f64 }
}

fn split_by_name(records: &[Named], rng: &mut Rng) -> (Vec<Named>, Vec<Named>, Vec<Named>) {
    let mut by_name: BTreeMap<&str, Vec<&Named>> = BTreeMap::new();
    for r in records {
        by_name.entry(r.name.as_str()).or_default().push(r);
    }
    let (mut pool, mut market, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for rows in by_name.values() {
        let order = rng.permutation(rows.len());
        let n = rows.len() as f64;
        for (k, i) in order.iter().enumerate() {
            let Some(r) = rows.get(*i) else { continue };
            let at = k as f64 / n;
            if at < 0.6 {
                pool.push((*r).clone());
            } else if at < 0.75 {
                market.push((*r).clone());
            } else {
                test.push((*r).clone());
            }
        }
    }
    (pool, market, test)
}

/// Runs one seed; `progress` is called after each trained node and each market step.
pub fn run_seed(
    records: &[Named],
    cfg: &Config,
    seed: u64,
    progress: &mut dyn FnMut(),
) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed).fork(41);
    let (pool, market, test) = split_by_name(records, &mut rng);
    let test_records: Vec<Record> = test.iter().map(|n| n.record.clone()).collect();
    let test_dos: Vec<bool> = test.iter().map(|n| n.record.category == "dos").collect();
    let test_normal: Vec<bool> = test.iter().map(|n| !n.record.attack).collect();
    let market_records: Vec<Record> = market.iter().map(|n| n.record.clone()).collect();
    let market_attack: Vec<bool> = market.iter().map(|n| n.record.attack).collect();

    let mut names: BTreeMap<&str, Vec<&Named>> = BTreeMap::new();
    for r in &pool {
        names.entry(r.name.as_str()).or_default().push(r);
    }
    let dos_names: Vec<&str> = names
        .iter()
        .filter(|(n, rows)| *n != &"normal" && rows.iter().any(|r| r.record.category == "dos"))
        .map(|(n, _)| *n)
        .collect();
    let attack_names: Vec<&str> = names
        .iter()
        .filter(|(n, rows)| *n != &"normal" && rows.len() >= 10)
        .map(|(n, _)| *n)
        .collect();
    let normal_rows = names.get("normal").cloned().unwrap_or_default();
    if dos_names.is_empty() || normal_rows.is_empty() {
        return Err("the data has no DoS attacks or no normal traffic".into());
    }

    let keys: Vec<Keypair> = (0..cfg.nodes as u64)
        .map(|i| Keypair::deterministic("secnet-sim", seed * 1000 + i))
        .collect();
    let mut nodes = Vec::new();
    for i in 0..cfg.nodes {
        let mut seen: Vec<&str> = vec![
            dos_names
                .get(rng.below(dos_names.len()))
                .copied()
                .unwrap_or("neptune"),
        ];
        while seen.len() < cfg.types_per_node.max(1) && seen.len() < attack_names.len() {
            let n = attack_names
                .get(rng.below(attack_names.len()))
                .copied()
                .unwrap_or("neptune");
            if !seen.contains(&n) {
                seen.push(n);
            }
        }
        let half = cfg.rows_per_node / 2;
        let mut train: Vec<Record> = Vec::new();
        let per_type = half / seen.len().max(1);
        for n in &seen {
            let rows = names.get(n).cloned().unwrap_or_default();
            for k in rng.permutation(rows.len()).into_iter().take(per_type) {
                if let Some(r) = rows.get(k) {
                    train.push(r.record.clone());
                }
            }
        }
        for k in rng.permutation(normal_rows.len()).into_iter().take(half) {
            if let Some(r) = normal_rows.get(k) {
                train.push(r.record.clone());
            }
        }
        let tc = TrainConfig {
            epochs: cfg.epochs,
            seed: seed * 1000 + i as u64,
            ..TrainConfig::default()
        };
        let detector = train_detector(
            secnet_ai::data::Kind::NslKdd,
            &train,
            "nsl-kdd pool",
            Augment::None,
            Family::Mlp,
            &tc,
        )
        .map_err(|e| e.to_string())?;
        let key = keys.get(i).ok_or_else(|| "missing node key".to_string())?;
        let rule = SecurityRule::create(key, &format!("node{i}"), 1, "dos", &detector)
            .map_err(|e| e.to_string())?;
        let quality = rate(&flags_of(&detector, &market_records), &market_attack);
        let price_level = PRICE_LEVELS
            .get(i % PRICE_LEVELS.len())
            .copied()
            .unwrap_or(1.0);
        let price = (100.0 * quality * price_level).round().max(1.0) as u64;
        nodes.push(Node {
            flags: flags_of(&detector, &test_records),
            rule,
            trained_on: seen.iter().map(|s| (*s).to_string()).collect(),
            quality,
            price,
            price_level,
        });
        progress();
    }

    let mut out = Outcome::default();
    for (i, n) in nodes.iter().enumerate() {
        out.rules.push(RuleStat {
            seed,
            contributor: i,
            trained_on: n.trained_on.clone(),
            quality: n.quality,
            dos_detection: rate(&n.flags, &test_dos),
            fpr: rate(&n.flags, &test_normal),
            price: n.price,
        });
    }

    let mut ledger = Sandbox::new(CHAIN, keys, 1_000_000_000);
    let start: Vec<u64> = (0..cfg.nodes).map(|i| ledger.balance(i)).collect();
    let order = rng.permutation(cfg.nodes);
    let mut installed: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); cfg.nodes];
    let mut bought: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); cfg.nodes];
    let mut noise = Rng::new(seed).fork(43);
    let measure =
        |installed: &[BTreeSet<usize>], extra: &dyn Fn(usize, usize) -> bool, k: usize| -> Point {
            let mut v = 0.0;
            let mut f = 0.0;
            for (j, node) in nodes.iter().enumerate() {
                let flags: Vec<bool> = (0..test_records.len())
                    .map(|t| {
                        node.flags.get(t).copied().unwrap_or(false)
                            || installed.get(j).is_some_and(|set| {
                                set.iter().any(|r| {
                                    nodes.get(*r).and_then(|n| n.flags.get(t)).copied()
                                        == Some(true)
                                })
                            })
                            || extra(j, t)
                    })
                    .collect();
                v += 1.0 - rate(&flags, &test_dos);
                f += rate(&flags, &test_normal);
            }
            let n = nodes.len().max(1) as f64;
            Point {
                seed,
                shared_rules: k,
                vulnerability: v / n,
                fpr: f / n,
                installed: installed.iter().map(BTreeSet::len).sum::<usize>() as f64 / n,
            }
        };
    let none = |_: usize, _: usize| false;
    let baseline = measure(&vec![BTreeSet::new(); cfg.nodes], &none, 0);
    out.sharing.push(baseline);
    out.random_rules.push(baseline);
    for k in 0..=cfg.nodes {
        out.no_sharing.push(Point {
            shared_rules: k,
            ..baseline
        });
    }
    for (step, &contributor) in order.iter().enumerate() {
        let Some(c) = nodes.get(contributor) else {
            continue;
        };
        let holder = ledger.account(contributor);
        ledger.submit(
            contributor,
            Call::RegisterData(RegisterData {
                hash: c.rule.hash(),
                description: format!("security rule node{contributor} against dos"),
                address: format!("pdc://node{contributor}/rules/dos/node{contributor}-v1"),
                price: c.price,
                kind: DataKind::SecurityRule {
                    category: "dos".into(),
                },
                holder,
                holder_share_bps: 0,
            }),
        );
        commit(&mut ledger)?;
        let market_now: Vec<usize> = order.get(..=step).unwrap_or_default().to_vec();
        for j in 0..cfg.nodes {
            let mut ranked: Vec<(f64, usize)> = market_now
                .iter()
                .filter(|r| **r != j)
                .filter_map(|r| {
                    let n = nodes.get(*r)?;
                    let score = n.quality - cfg.price_weight * n.price as f64 / 100.0;
                    (score > 0.0).then_some((score, *r))
                })
                .collect();
            ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let keep: BTreeSet<usize> = ranked.iter().take(cfg.slots).map(|(_, r)| *r).collect();
            for r in &keep {
                let Some(bought_j) = bought.get_mut(j) else {
                    continue;
                };
                if bought_j.insert(*r) {
                    let Some(rule) = nodes.get(*r).map(|n| &n.rule) else {
                        continue;
                    };
                    // What the buyer installs must verify and be what was registered.
                    let checked =
                        SecurityRule::from_bytes(rule.bytes()).map_err(|e| e.to_string())?;
                    if checked.hash() != rule.hash() {
                        return Err("a rule changed between registration and delivery".into());
                    }
                    ledger.submit(j, Call::SubscribeData { hash: rule.hash() });
                    ledger.submit(
                        j,
                        Call::RequestDataWithHash {
                            hash: rule.hash(),
                            purpose: "security".into(),
                            ttl_secs: 600,
                        },
                    );
                }
            }
            if let Some(slot) = installed.get_mut(j) {
                *slot = keep;
            }
        }
        commit(&mut ledger)?;
        let k = step + 1;
        out.sharing.push(measure(&installed, &none, k));
        // Control: the same number of rules per node, each flagging a random 1%.
        let random: Vec<Vec<Vec<bool>>> = installed
            .iter()
            .map(|set| {
                (0..set.len())
                    .map(|_| {
                        (0..test_records.len())
                            .map(|_| noise.uniform() < 0.01)
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let random_flag = |j: usize, t: usize| {
            random
                .get(j)
                .is_some_and(|rules| rules.iter().any(|f| f.get(t).copied().unwrap_or(false)))
        };
        out.random_rules
            .push(measure(&vec![BTreeSet::new(); cfg.nodes], &random_flag, k));
        for (i, n) in nodes.iter().enumerate() {
            out.revenue.push(Revenue {
                seed,
                shared_rules: k,
                contributor: i,
                quality: n.quality,
                price_level: n.price_level,
                price: n.price,
                // Received = balance now + what it paid for rules − balance at the start.
                revenue: (ledger.balance(i)
                    + bought.get(i).map_or(0, |b| {
                        b.iter()
                            .filter_map(|r| nodes.get(*r).map(|n| n.price))
                            .sum::<u64>()
                    }))
                .saturating_sub(start.get(i).copied().unwrap_or(0)),
                buyers: bought.iter().filter(|b| b.contains(&i)).count(),
            });
        }
        progress();
    }
    Ok(out)
}

/// Runs every seed.
pub fn run(records: &[Named], cfg: &Config, progress: &mut dyn FnMut()) -> Result<Outcome, String> {
    let mut all = Outcome::default();
    for seed in 1..=cfg.seeds {
        let o = run_seed(records, cfg, seed, progress)?;
        all.sharing.extend(o.sharing);
        all.no_sharing.extend(o.no_sharing);
        all.random_rules.extend(o.random_rules);
        all.revenue.extend(o.revenue);
        all.rules.extend(o.rules);
    }
    Ok(all)
}

/// Steps of progress a run reports.
pub fn steps(cfg: &Config) -> u64 {
    cfg.seeds * (2 * cfg.nodes as u64)
}
