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
