//! Commands that start validator processes stop them when they are stopped themselves with
//! SIGTERM, as `kill` and service managers do (and with Ctrl-C's SIGINT): nothing is left
//! running, and a soak prints what it measured until then.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use common::{height, init_testnet, path, secnet, wait_for};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The processes that `parent` started and that still run.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // `pid (name) state ppid ...`; the name may hold spaces and parentheses.
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
                fields.first() != Some(&"Z") && fields.get(1) == Some(&parent.to_string().as_str())
            })
        })
        .collect()
}

/// Which of `pids` still run (a zombie has stopped).
fn running(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
            })
        })
        .collect()
}

/// Processes killed with SIGKILL when the test ends, whether it passed or not, so that a
/// failure leaves nothing running.
struct KillAtEnd(Vec<u32>);

impl Drop for KillAtEnd {
    fn drop(&mut self) {
        for pid in running(&self.0) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn sigterm(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits for `child` to exit; panics (killing it) past `timeout`.
fn exits_within(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("the command did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_devnet_stopped_by_sigterm_stops_its_validators() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let api = init_testnet(d, 4, 2);
    let mut devnet = secnet()
        .args(["devnet", "--validators", "4", "--dir", path(d)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let apis: Vec<String> = (0..4)
        .map(|i| format!("https://127.0.0.1:{}", api + i))
        .collect();
    wait_for("the validators to serve", Duration::from_secs(60), || {
        apis.iter().all(|a| height(a) >= 1)
    });
    let validators = KillAtEnd(children_of(devnet.id()));
    assert_eq!(validators.0.len(), 4, "{:?}", validators.0);

    sigterm(&devnet);
    let status = exits_within(&mut devnet, Duration::from_secs(30));
    let mut out = String::new();
    devnet
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "{status}: {out}");
    assert!(out.trim_end().ends_with("stopped"), "{out}");
    assert_eq!(running(&validators.0), Vec::<u32>::new());
}

#[test]
fn a_soak_stopped_by_sigterm_stops_its_validators_and_prints_its_minutes() {
    let mut soak = secnet()
        .args([
            "bench",
            "soak",
            "--minutes",
            "3",
            "--rate",
            "40",
            "--accounts",
            "16",
            "--keep",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(soak.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = stderr
            .next()
            .unwrap_or_else(|| panic!("the soak ended before holding its rate: {seen:#?}"))
            .unwrap();
        let holding = line.starts_with("holding 40 tx/s");
        seen.push(line);
        if holding {
            break;
        }
    }
    let validators = KillAtEnd(children_of(soak.id()));
    assert_eq!(validators.0.len(), 4, "{:?}", validators.0);

    sigterm(&soak);
    let status = exits_within(&mut soak, Duration::from_secs(60));
    let rest: Vec<String> = stderr.map_while(Result::ok).collect();
    let mut out = String::new();
    soak.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(!status.success(), "a stopped soak does not pass: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["stopped_by"], "SIGTERM", "{report}");
    assert_eq!(report["minutes"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["same_state_root"],
        serde_json::Value::Null,
        "{report}"
    );
    assert!(
        rest.iter()
            .any(|l| l.contains("stopped by SIGTERM after 0 of 3 minutes")),
        "{rest:#?}"
    );
    let kept = rest
        .iter()
        .find_map(|l| l.strip_prefix("the validators' directories are kept in "))
        .unwrap_or_else(|| panic!("{rest:#?}"));
    let kept = Path::new(kept);
    assert!(kept.join("node0").join("config.toml").is_file());
    assert_eq!(running(&validators.0), Vec::<u32>::new());
    std::fs::remove_dir_all(kept).unwrap();
}
