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
use std::time::{Duration, Instant};

/// A `secnet` command that trusts [`authority`] (`SECNET_CA`).
pub fn secnet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_secnet"));
    c.env(
        "SECNET_LOG",
        std::env::var("SECNET_TEST_LOG").unwrap_or_else(|_| "warn".into()),
    );
    c.env("SECNET_CA", authority().join("ca.pem"));
    c
}

/// The certificate authority (a directory with `ca.pem` and `ca.key`) that issues every
/// node's certificate in this test binary, and that every command run here and
/// [`http`] trusts: nodes serve TLS, as they do by default.
pub fn authority() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        secnet_node::tls::create_authority(dir.path(), &[]).unwrap();
        secnet_tls::trust(&std::fs::read(dir.path().join("ca.pem")).unwrap()).unwrap();
        dir
    })
    .path()
}

/// An HTTP client trusting [`authority`].
pub fn http() -> reqwest::Client {
    authority();
    secnet_tls::http_client().unwrap().build().unwrap()
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
    /// A node whose certificate is from [`authority`].
    pub fn start(dir: &Path) -> DevNode {
        DevNode::start_with(dir, &["--authority", path(authority())])
    }

    /// A node started with `extra` arguments to `secnet dev`.
    pub fn start_with(dir: &Path, extra: &[&str]) -> DevNode {
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
            .args(extra)
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

/// The first of `n` consecutive loopback ports that are free now, below the kernel's
/// ephemeral range (32768 and up on Linux), so that no outgoing connection is handed one of
/// them while a test has a validator down: a restarted validator must be able to bind its
/// ports again. No port is handed out twice in one test binary.
pub fn free_port_block(n: u16) -> u16 {
    use std::hash::{BuildHasher, RandomState};
    const LOW: u16 = 10_000;
    const HIGH: u16 = 32_000;
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let random = RandomState::new();
    let mut handed_out = HANDED_OUT.lock().unwrap();
    for attempt in 0u32.. {
        let draw = random.hash_one((std::process::id(), attempt));
        let base = LOW + u16::try_from(draw % u64::from(HIGH - n - LOW)).unwrap();
        let ports = base..base + n;
        if ports.clone().all(|p| {
            !handed_out.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        }) {
            handed_out.extend(ports);
            return base;
        }
    }
    unreachable!("some block of {n} ports is free")
}

/// Validator processes, killed on drop.
pub struct Validators(pub Vec<Option<Child>>);

impl Drop for Validators {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts validator `i` of the testnet in `dir`, logging to `dir/node<i>/<log_name>`.
pub fn start_validator(dir: &Path, i: usize, log_name: &str) -> Child {
    start_validator_with(dir, i, log_name, &[])
}

/// Starts validator `i` with more arguments to `secnet node`.
pub fn start_validator_with(dir: &Path, i: usize, log_name: &str, extra: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(format!("node{i}")).join(log_name)).unwrap();
    secnet()
        .args([
            "node",
            "--config",
            path(&dir.join(format!("node{i}")).join("config.toml")),
        ])
        .args(extra)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

pub fn status(api: &str) -> Option<serde_json::Value> {
    let out = run(&["health", "--node", api, "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

pub fn height(api: &str) -> u64 {
    status(api)
        .map(|s| s["height"].as_u64().unwrap())
        .unwrap_or(0)
}

pub fn kill(nodes: &mut Validators, i: usize) {
    let mut child = nodes.0[i].take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
}

pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    wait_for_explained(what, timeout, cond, String::new);
}

/// [`wait_for`], adding what `explain` says (e.g. a node's log) to the failure.
pub fn wait_for_explained(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() >= timeout {
            panic!("timed out waiting for {what}\n{}", explain());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last `lines` lines of the file at `path` (empty if it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `secnet testnet init` in `dir` for `validators` validators and `accounts` funded accounts,
/// on free loopback ports; returns the first validator's API port (the others follow).
pub fn init_testnet(dir: &Path, validators: u16, accounts: usize) -> u16 {
    let p2p = free_port_block(validators);
    let api = free_port_block(validators);
    ok(&[
        "testnet",
        "init",
        "--validators",
        &validators.to_string(),
        "--accounts",
        &accounts.to_string(),
        "--dir",
        path(dir),
        "--p2p-base-port",
        &p2p.to_string(),
        "--api-base-port",
        &api.to_string(),
        "--authority",
        path(authority()),
    ]);
    api
}
