#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests index, unwrap and panic on fixtures they built"
)]
//! The evaluation's files and the emulation, on generated NSL-KDD-shaped records (never
//! the shared data).

use secnet_ai::rng::Rng;
use secnet_sim::emulate::{Config, parse_nsl, run, run_seed};
use secnet_sim::paper::Params;
use secnet_sim::{Figure, write_figure};
use std::fmt::Write as _;

/// Records of six attack types (three DoS) and normal traffic, each attack type with its
/// own signature in the features.
fn fixture(rows: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let kinds = [
        ("normal", "SF", 5, 0.0),
        ("neptune", "S0", 300, 1.0),
        ("smurf", "SF", 500, 0.0),
        ("back", "RSTR", 20, 0.5),
        ("ipsweep", "REJ", 40, 0.2),
        ("guess_passwd", "RSTO", 2, 0.1),
    ];
    let mut out = String::new();
    for _ in 0..rows {
        let k = if rng.uniform() < 0.5 {
            0
        } else {
            1 + rng.below(kinds.len() - 1)
        };
        let (name, flag, count, serror) = kinds[k];
        let service = ["http", "ecr_i", "private", "ftp"][rng.below(4)];
        let mut fields: Vec<String> = vec![
            "0".into(),
            if name == "smurf" { "icmp" } else { "tcp" }.into(),
            service.into(),
            flag.into(),
            (if k == 0 {
                200 + rng.below(4000)
            } else {
                rng.below(100)
            })
            .to_string(),
            rng.below(5000).to_string(),
        ];
        fields.extend((6..22).map(|i| {
            if name == "guess_passwd" && i == 10 {
                "1".to_string()
            } else {
                "0".to_string()
            }
        }));
        let c = count + rng.below(count.max(2));
        fields.push(c.to_string());
        fields.push((c / 2).to_string());
        fields.push(format!("{serror:.2}"));
        fields.push(format!("{serror:.2}"));
        fields.extend((26..41).map(|_| format!("{:.2}", rng.uniform())));
        fields.push(name.into());
        fields.push("20".into());
        writeln!(out, "{}", fields.join(",")).unwrap();
    }
    out
}

fn small() -> Config {
    Config {
        nodes: 4,
        seeds: 2,
        rows_per_node: 600,
        types_per_node: 2,
        slots: 2,
        price_weight: 0.3,
        epochs: 4,
    }
}

#[test]
fn every_figure_writes_its_csv_schema_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let p = Params::default();
    for f in [Figure::Fig4, Figure::Fig5, Figure::Fig6] {
        let files = write_figure(f, &p, dir.path()).unwrap();
        assert_eq!(files.len(), 4);
        let csv = std::fs::read_to_string(dir.path().join(format!("{}.csv", f.name()))).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some(f.header()));
        let rows: Vec<Vec<f64>> = lines
            .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
            .collect();
        assert!(rows.iter().all(|r| r.len() == 3));
        assert_eq!(rows.len() % (p.max_rules as usize + 1), 0);
        let svg = std::fs::read_to_string(dir.path().join(format!("{}.svg", f.name()))).unwrap();
        assert!(svg.contains("shared security rules (count)"));
        let png = std::fs::read(dir.path().join(format!("{}.png", f.name()))).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fig4.csv"))
            .unwrap()
            .lines()
            .next(),
        Some("lambda,shared_rules,vulnerability")
    );
    let model = std::fs::read_to_string(dir.path().join("model.md")).unwrap();
    assert!(model.contains("1 − exp(−λ (1 − c)^n)"));
}

#[test]
fn the_emulation_trades_on_the_contract_and_sharing_never_hurts() {
    let (records, bad) = parse_nsl(&fixture(3000, 1));
    assert_eq!(bad, 0);
    let cfg = small();
    let mut ticks = 0;
    let out = run(&records, &cfg, &mut || ticks += 1).unwrap();
    assert_eq!(ticks, secnet_sim::emulate::steps(&cfg));
    for arm in [&out.sharing, &out.no_sharing, &out.random_rules] {
        assert_eq!(arm.len(), (cfg.nodes + 1) * cfg.seeds as usize);
        assert!(arm.iter().all(|p| (0.0..=1.0).contains(&p.vulnerability)));
        assert!(arm.iter().all(|p| (0.0..=1.0).contains(&p.fpr)));
    }
    // Installing rules only adds detections: per seed, vulnerability never rises.
    for seed in 1..=cfg.seeds {
        let v: Vec<f64> = out
            .sharing
            .iter()
            .filter(|p| p.seed == seed)
            .map(|p| p.vulnerability)
            .collect();
        let none = out
            .no_sharing
            .iter()
            .find(|p| p.seed == seed)
            .unwrap()
            .vulnerability;
        assert!(v.iter().all(|x| *x <= none + 1e-12), "{v:?} vs {none}");
    }
    // Rules were bought: contributors earned what buyers paid, on the ledger.
    let last: Vec<_> = out
        .revenue
        .iter()
        .filter(|r| r.shared_rules == cfg.nodes)
        .collect();
    assert_eq!(last.len(), cfg.nodes * cfg.seeds as usize);
    assert!(last.iter().any(|r| r.buyers > 0));
    for r in &last {
        assert_eq!(r.revenue, r.price * r.buyers as u64, "{r:?}");
    }
    assert!(out.rules.iter().all(|r| (0.0..=1.0).contains(&r.quality)));
}

#[test]
fn the_same_seed_gives_the_same_outcome() {
    let (records, _) = parse_nsl(&fixture(2000, 2));
    let cfg = small();
    let a = run_seed(&records, &cfg, 3, &mut || {}).unwrap();
    let b = run_seed(&records, &cfg, 3, &mut || {}).unwrap();
    assert_eq!(a.sharing, b.sharing);
    assert_eq!(a.random_rules, b.random_rules);
    assert_eq!(a.revenue, b.revenue);
    assert_eq!(a.rules, b.rules);
}

#[test]
fn the_report_is_written_beside_the_plots() {
    let (records, _) = parse_nsl(&fixture(2000, 4));
    let cfg = Config {
        seeds: 1,
        ..small()
    };
    let out = run(&records, &cfg, &mut || {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = Params::default();
    for f in [Figure::Fig4, Figure::Fig5, Figure::Fig6] {
        write_figure(f, &p, dir.path()).unwrap();
    }
    secnet_sim::report::write_emulation(dir.path(), &cfg, &out, &p, "fixture").unwrap();
    for file in [
        "vulnerability.csv",
        "revenue.csv",
        "rules.csv",
        "vulnerability.svg",
        "vulnerability.png",
        "revenue.png",
        "false-positives.png",
        "report.md",
    ] {
        assert!(dir.path().join(file).exists(), "{file}");
    }
    let csv = std::fs::read_to_string(dir.path().join("vulnerability.csv")).unwrap();
    assert_eq!(
        csv.lines().next(),
        Some("seed,shared_rules,arm,vulnerability,fpr,installed")
    );
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(report.contains("**Agreement.**"));
    assert!(report.contains("**Differences.**"));
    assert!(report.contains("**Quality (Figure 5).**") && report.contains("**Price (Figure 6).**"));
}
