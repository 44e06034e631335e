#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests index, unwrap and panic on fixtures they built"
)]
//! Security rules: signed artifacts, their installation and the scorer they make, with
//! detectors trained here on generated access requests.

use secnet_ai::data::Kind;
use secnet_ai::mlp::TrainConfig;
use secnet_ai::model::Detector;
use secnet_ai::{Augment, Family, requests, train_detector};
use secnet_pdc::access::{RequestFeatures, Scorer};
use secnet_rules::installed::LOCAL_DETECTOR;
use secnet_rules::{InstallError, Installed, RuleError, SecurityRule, calibrate, install};
use secnet_types::{Hash, Keypair};
use std::sync::OnceLock;

const THRESHOLD: u32 = 800_000;

fn detector() -> &'static Detector {
    static D: OnceLock<Detector> = OnceLock::new();
    D.get_or_init(|| {
        let records = requests::generate(3000, 5);
        let cfg = TrainConfig {
            epochs: 8,
            ..TrainConfig::default()
        };
        train_detector(
            Kind::AccessRequests,
            &records,
            "fixture",
            Augment::None,
            Family::Mlp,
            &cfg,
        )
        .unwrap()
    })
}

fn publisher() -> Keypair {
    Keypair::deterministic("rules-test", 1)
}

fn rule(version: u32) -> SecurityRule {
    SecurityRule::create(&publisher(), "scrape-mlp", version, "scrape", detector()).unwrap()
}

fn features(rate: u32, breadth: u32, history: u32, hour: u8, purpose: &str) -> RequestFeatures {
    RequestFeatures {
        rate_per_min: rate,
        breadth_per_hour: breadth,
        history,
        token_age_s: 30,
        hour,
        purpose: purpose.into(),
    }
}

#[test]
fn a_rule_round_trips_and_is_addressed_by_its_content() {
    let r = rule(1);
    let back = SecurityRule::from_bytes(r.bytes()).unwrap();
    assert_eq!(back.meta, r.meta);
    assert_eq!(back.hash(), r.hash());
    assert_eq!(r.meta.publisher, publisher().account());
    assert_eq!(r.meta.dataset, Kind::AccessRequests);
    assert!(r.meta.validation.f1 > 0.5, "{}", r.meta.validation.f1);
    // Another version is another artifact.
    assert_ne!(rule(2).hash(), r.hash());
}

#[test]
fn altered_or_foreign_rules_are_refused_with_the_reason() {
    let r = rule(1);
    let text = String::from_utf8(r.bytes().to_vec()).unwrap();

    // A changed version: the signature no longer verifies.
    let inflated = text.replacen("\\\"version\\\":1", "\\\"version\\\":9", 1);
    assert_ne!(inflated, text);
    assert!(matches!(
        SecurityRule::from_bytes(inflated.as_bytes()),
        Err(RuleError::BadSignature(_))
    ));
    // Claiming another publisher: refused too.
    let other = Keypair::deterministic("rules-test", 2)
        .account()
        .to_string();
    let stolen = text.replacen(&publisher().account().to_string(), &other, 1);
    assert!(matches!(
        SecurityRule::from_bytes(stolen.as_bytes()),
        Err(RuleError::BadSignature(_))
    ));
    let future = text.replacen("\"version\":1,\"body\"", "\"version\":2,\"body\"", 1);
    let e = SecurityRule::from_bytes(future.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("format 2"), "{e}");
    let e = SecurityRule::from_bytes(b"hello\nworld\n").unwrap_err();
    assert!(matches!(e, RuleError::NotARule), "{e}");
    let e = SecurityRule::create(&publisher(), "a b", 1, "dos", detector()).unwrap_err();
    assert!(e.to_string().contains("name"), "{e}");
}

#[test]
fn install_verifies_before_writing_and_keeps_the_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = rule(1);

    // Not what was registered: refused, nothing written.
    let e = install(dir.path(), v1.bytes(), Some(Hash([7; 32]))).unwrap_err();
    assert!(matches!(e, InstallError::Mismatch { .. }), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let (hash, _) = install(dir.path(), v1.bytes(), Some(v1.hash())).unwrap();
    assert!(dir.path().join(format!("{hash}.rule")).exists());
    let e = install(dir.path(), v1.bytes(), None).unwrap_err();
    assert!(matches!(e, InstallError::NotNewer { .. }), "{e}");

    let v2 = rule(2);
    install(dir.path(), v2.bytes(), Some(v2.hash())).unwrap();
    assert!(!dir.path().join(format!("{hash}.rule")).exists());
    let installed = Installed::open(dir.path(), THRESHOLD).unwrap();
    let list = installed.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].version, 2);
    assert!(list[0].scores_requests);
    let e = install(dir.path(), v1.bytes(), None).unwrap_err();
    assert!(e.to_string().contains("version 2"), "{e}");
}

#[test]
fn damaged_files_are_reported_and_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let r = rule(1);
    let (hash, _) = install(dir.path(), r.bytes(), None).unwrap();
    let installed = Installed::open(dir.path(), THRESHOLD).unwrap();
    assert_eq!(installed.list().len(), 1);

    // A byte flipped on disk.
    let path = dir.path().join(format!("{hash}.rule"));
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    // A valid rule under another name.
    std::fs::write(dir.path().join("renamed.rule"), rule(3).bytes()).unwrap();
    assert!(installed.reload());
    assert!(installed.list().is_empty());
    let refused = installed.refused();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused
            .iter()
            .any(|(f, why)| f == "renamed.rule" && why.contains("not the name")),
        "{refused:?}"
    );
    // Nothing changed: no reload.
    assert!(!installed.reload());
}

#[test]
fn installed_detectors_score_the_access_path() {
    let dir = tempfile::tempdir().unwrap();
    let installed = Installed::open(dir.path(), THRESHOLD).unwrap();
    let calm = features(3, 8, 250, 11, "treatment");
    // A slow crawl: under every rate limit of the transparent rules, but sweeping records.
    let crawl = features(6, 90, 4, 12, "marketing");
    let rules_only = installed.score(&crawl);
    assert!(rules_only < THRESHOLD, "{rules_only}");

    let r = rule(1);
    install(dir.path(), r.bytes(), None).unwrap();
    assert!(installed.reload());
    assert!(
        installed.score(&calm) < THRESHOLD,
        "{}",
        installed.score(&calm)
    );
    assert!(
        installed.score(&crawl) >= THRESHOLD,
        "{}",
        installed.score(&crawl)
    );

    // The node's own detector is combined with installed rules the same way.
    let dir2 = tempfile::tempdir().unwrap();
    detector().save(&dir2.path().join(LOCAL_DETECTOR)).unwrap();
    let local = Installed::open(dir2.path(), THRESHOLD).unwrap();
    assert_eq!(local.list()[0].hash, "local");
    assert!(local.score(&crawl) >= THRESHOLD);
}

#[test]
fn calibration_puts_each_operating_point_on_the_refusal_threshold() {
    for t in [0.1f32, 0.5, 0.93] {
        assert_eq!(calibrate(t, t, THRESHOLD), THRESHOLD);
        assert_eq!(calibrate(0.0, t, THRESHOLD), 0);
        assert_eq!(calibrate(1.0, t, THRESHOLD), 1_000_000);
        let mut last = 0;
        for k in 0..=100 {
            let c = calibrate(k as f32 / 100.0, t, THRESHOLD);
            assert!(c >= last);
            last = c;
        }
    }
    assert_eq!(calibrate(f32::NAN, 0.5, THRESHOLD), 1_000_000);
}
