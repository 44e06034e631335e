//! Helpers for end-to-end tests that run the real `secnet` binary.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the helpers"
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

pub fn secnet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_secnet"));
    c.env("SECNET_LOG", "warn");
    c
}

/// Runs `secnet args...`, asserting success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "secnet {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `secnet args...`, asserting failure; returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        !out.status.success(),
        "secnet {args:?} unexpectedly succeeded"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn run(args: &[&str]) -> Output {
    secnet().args(args).output().expect("run secnet")
}

pub fn json(args: &[&str]) -> serde_json::Value {
    let out = ok(args);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("secnet {args:?} printed no JSON ({e}): {out}"))
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A `secnet dev` node on a free loopback port, killed on drop.
pub struct DevNode {
    pub child: Child,
    pub url: String,
}

impl DevNode {
    pub fn start(dir: &Path) -> DevNode {
        let mut child = secnet()
            .args([
                "dev",
                "--data-dir",
                path(dir),
                "--listen",
                "127.0.0.1:0",
                "--block-ms",
                "20",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start secnet dev");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("secnet dev exited before printing its API address")
                .expect("read");
            if let Some(rest) = line.trim().strip_prefix("api") {
                break rest.trim().to_string();
            }
        };
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        DevNode { child, url }
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
