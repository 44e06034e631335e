//! Crash consistency: a process applying blocks is killed with SIGKILL at arbitrary moments;
//! the ledger must reopen at its last committed block with the state root that replaying
//! every stored block from genesis gives, and keep going from there.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use common::{json, path, secnet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

fn apply_then_kill(dir: &std::path::Path, delay: Duration) {
    let mut child = secnet()
        .args([
            "bench",
            "apply",
            "--data-dir",
            path(dir),
            "--txs",
            "30000",
            "--accounts",
            "500",
            "--block-txs",
            "200",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let stderr = child.stderr.take().unwrap();
    for line in BufReader::new(stderr).lines() {
        if line.unwrap().starts_with("applying") {
            break;
        }
    }
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL the writer");
    child.wait().unwrap();
}

#[test]
fn killed_mid_write_the_ledger_reopens_consistent() {
    let mut heights = Vec::new();
    for delay_ms in [30u64, 170, 400] {
        let dir = tempfile::tempdir().unwrap();
        apply_then_kill(dir.path(), Duration::from_millis(delay_ms));
        let report = json(&["ledger", "check", "--data-dir", path(dir.path()), "--json"]);
        assert_eq!(
            report["replayed_root"], report["stored_root"],
            "after a kill at {delay_ms} ms"
        );
        heights.push(report["blocks"].as_u64().unwrap());
    }
    assert!(
        heights.iter().any(|h| *h > 0),
        "no kill landed after a commit: {heights:?}"
    );
}

/// `secnet crash` kills a node taking transactions, uploads and fetches from several clients,
/// checks after each kill that the ledger replays to its root, every acknowledged transaction
/// and upload is there and every delivery is recorded or journaled; where it may mount a
/// tmpfs, it also fills one and checks the node says why and recovers.
#[test]
fn a_node_killed_under_load_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "crash",
        "--kills",
        "4",
        "--seed",
        "7",
        "--max-run-ms",
        "5000",
        "--data-dir",
        path(dir.path()),
        "--json",
    ];
    // The full-disk check mounts a tmpfs: only where this process may.
    let probe = tempfile::tempdir().unwrap();
    let root = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(probe.path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if root {
        let _ = std::process::Command::new("umount")
            .arg(probe.path())
            .status();
        args.push("--full-disk");
    } else {
        eprintln!("cannot mount a tmpfs here: the full-disk check is left out");
    }
    let report = json(&args);
    assert_eq!(report["failed_kills"], 0, "{report:#}");
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    assert!(
        report["txs_acked"].as_u64().unwrap() > 0 && report["uploads_acked"].as_u64().unwrap() > 0,
        "the clients got nothing acknowledged: {report:#}"
    );
    // After every kill, every transaction acknowledged so far (in any earlier run) is
    // checked, and every delivery received so far is recorded or journaled.
    let (mut acked, mut delivered) = (0, 0);
    for run in runs {
        acked += run["txs_acked"].as_u64().unwrap();
        delivered += run["fetches_acked"].as_u64().unwrap();
        assert_eq!(run["txs_checked"], acked, "{run:#}");
        assert!(
            run["deliveries_recorded"].as_u64().unwrap() >= delivered,
            "{run:#}"
        );
        assert!(run["violations"].as_array().unwrap().is_empty(), "{run:#}");
    }
    assert!(delivered > 0, "the consumer received nothing: {report:#}");
    if root {
        let disk = &report["full_disk"];
        assert!(
            disk["violations"].as_array().unwrap().is_empty(),
            "{disk:#}"
        );
        assert_eq!(disk["recovered"], true, "{disk:#}");
        assert!(
            disk["node_exit"].is_string(),
            "the node must stop once its ledger cannot write: {disk:#}"
        );
        assert!(disk["uploads_acked"].as_u64().unwrap() > 0, "{disk:#}");
    }
}
