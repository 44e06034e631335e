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
use rustix::process::{Pid, Signal, kill_process};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process as `/proc` names it: its pid and when it started (a pid alone may be reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process {
    pid: i32,
    started: u64,
}

/// The state, parent and start time of process `pid` from `/proc/<pid>/stat`.
fn stat(pid: i32) -> Option<(char, i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (name) state ppid ...`: the name may hold spaces and parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    Some((
        state,
        fields.get(1)?.parse().ok()?,
        fields.get(19)?.parse().ok()?,
    ))
}

/// The processes that `parent` started and that still run.
fn children_of(parent: u32) -> Vec<Process> {
    let parent = i32::try_from(parent).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let (state, ppid, started) = stat(pid)?;
            (state != 'Z' && ppid == parent).then_some(Process { pid, started })
        })
        .collect()
}

/// Which of `processes` still run (a zombie has stopped; a pid now another process's
/// does not count).
fn running(processes: &[Process]) -> Vec<Process> {
    processes
        .iter()
        .copied()
        .filter(|p| {
            stat(p.pid).is_some_and(|(state, _, started)| state != 'Z' && started == p.started)
        })
        .collect()
}

fn signal(child: &Child, signal: Signal) {
    kill_process(Pid::from_child(child), signal).unwrap();
}

/// What a test started, stopped when it ends whether it passed or not, so that a failure
/// leaves nothing running: the command (killed), the validators it started (killed), and a
/// directory it kept (removed).
struct Cleanup {
    command: Child,
    validators: Vec<Process>,
    kept: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.validators.extend(children_of(self.command.id()));
        let _ = self.command.kill();
        let _ = self.command.wait();
        for p in running(&self.validators) {
            if let Some(pid) = Pid::from_raw(p.pid) {
                let _ = kill_process(pid, Signal::KILL);
            }
        }
        if let Some(dir) = &self.kept {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Cleanup {
    /// Starts `command`.
    fn start(command: &mut Command) -> Cleanup {
        Cleanup {
            command: command.spawn().unwrap(),
            validators: Vec::new(),
            kept: None,
        }
    }

    /// Waits for the command to exit; fails past `timeout`.
    fn exits_within(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.command.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "the command did not exit within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the command printed on standard output.
    fn stdout(&mut self) -> String {
        let mut out = String::new();
        self.command
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }
}

#[test]
fn a_devnet_stopped_by_sigterm_stops_its_validators() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let api = init_testnet(d, 4, 2);
    let mut started = Cleanup::start(
        secnet()
            .args(["devnet", "--validators", "4", "--dir", path(d)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let apis: Vec<String> = (0..4)
        .map(|i| format!("https://127.0.0.1:{}", api + i))
        .collect();
    wait_for("the validators to serve", Duration::from_secs(60), || {
        apis.iter().all(|a| height(a) >= 1)
    });
    started.validators = children_of(started.command.id());
    assert_eq!(started.validators.len(), 4, "{:?}", started.validators);

    signal(&started.command, Signal::TERM);
    let status = started.exits_within(Duration::from_secs(30));
    let out = started.stdout();
    assert!(status.success(), "{status}: {out}");
    assert!(out.trim_end().ends_with("stopped"), "{out}");
    assert_eq!(running(&started.validators), Vec::new());
}

#[test]
fn a_soak_stopped_by_sigterm_stops_its_validators_and_prints_its_minutes() {
    let mut started = Cleanup::start(
        secnet()
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
            .stderr(Stdio::piped()),
    );
    let mut stderr = BufReader::new(started.command.stderr.take().unwrap()).lines();
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
    started.validators = children_of(started.command.id());
    assert_eq!(started.validators.len(), 4, "{:?}", started.validators);

    signal(&started.command, Signal::TERM);
    let status = started.exits_within(Duration::from_secs(60));
    let rest: Vec<String> = stderr.map_while(Result::ok).collect();
    started.kept = rest
        .iter()
        .find_map(|l| l.strip_prefix("the validators' directories are kept in "))
        .map(PathBuf::from);
    let out = started.stdout();
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
    let kept = started.kept.clone().unwrap_or_else(|| panic!("{rest:#?}"));
    assert!(kept.join("node0").join("config.toml").is_file());
    assert_eq!(running(&started.validators), Vec::new());
}
