//! The fault campaign over the simulated validator network (see `tests/cluster/chaos.rs`):
//!
//! ```sh
//! cargo run --release -p secnet-consensus --features campaign --example chaos -- --seeds 200
//! cargo run --release -p secnet-consensus --features campaign --example chaos -- --seed 17 --validators 7
//! ```
//!
//! `--seeds N` runs seeds 1..=N with 4 and with 7 validators (`--validators` to choose) and
//! prints each violation with its seed, then a JSON summary; `--seed S` replays one seed,
//! printing its schedule. It exits non-zero if any run violated safety or liveness.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "the simulation harness is test code: a failed lookup is a failed run"
)]

#[path = "../tests/cluster/mod.rs"]
mod cluster;

use cluster::chaos::{self, Byzantine};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::Instant;

struct Args {
    seeds: u64,
    seed: Option<u64>,
    validators: Vec<u64>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: 200,
        seed: None,
        validators: vec![4, 7],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seeds" => args.seeds = value()?.parse().map_err(|e| format!("--seeds: {e}"))?,
            "--seed" => args.seed = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "--validators" => {
                args.validators = value()?
                    .split(',')
                    .map(|v| v.trim().parse().map_err(|e| format!("--validators: {e}")))
                    .collect::<Result<_, _>>()?;
                if let Some(bad) = args.validators.iter().find(|n| **n < 4) {
                    return Err(format!(
                        "--validators: {bad} is too few to tolerate a fault"
                    ));
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// Runs one seed, turning a violation (a panic) into its message.
fn run(seed: u64, n: u64) -> Result<chaos::Outcome, String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| chaos::run(seed, n))).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

fn main() {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("chaos: {e}");
            std::process::exit(2);
        }
    };
    if let Some(seed) = args.seed {
        let mut failed = false;
        for &n in &args.validators {
            let byzantine = Byzantine::for_seed(seed);
            println!(
                "seed {seed}, {n} validators, byzantine {}:",
                byzantine.name()
            );
            for (at, step) in chaos::schedule(seed, n, byzantine) {
                println!("  {at:>3} s  {step:?}");
            }
            match run(seed, n) {
                Ok(o) => println!(
                    "  ok: honest validators agree at height {} on root {}; the light client \
                     verified {} answers and refused {} lies",
                    o.height,
                    o.state_root,
                    o.verified_answers,
                    o.lies_refused.len()
                ),
                Err(e) => {
                    failed = true;
                    println!("  VIOLATION: {e}");
                }
            }
        }
        std::process::exit(i32::from(failed));
    }
    // Violations are reported by the campaign, not by the default panic printer (a replay
    // of one seed keeps it, for the file and line).
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut runs = 0u64;
    let mut violations = Vec::new();
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    let mut steps: BTreeMap<&str, u64> = BTreeMap::new();
    let mut verified_answers = 0u64;
    let mut lies_refused: BTreeMap<String, u64> = BTreeMap::new();
    for seed in 1..=args.seeds {
        for &n in &args.validators {
            runs += 1;
            *by_kind.entry(Byzantine::for_seed(seed).name()).or_default() += 1;
            match run(seed, n) {
                Ok(o) => {
                    for (_, step) in &o.schedule {
                        *steps.entry(step.kind()).or_default() += 1;
                    }
                    verified_answers += o.verified_answers;
                    for lie in &o.lies_refused {
                        *lies_refused.entry(format!("{lie:?}")).or_default() += 1;
                    }
                }
                Err(e) => {
                    eprintln!("seed {seed}, {n} validators: VIOLATION: {e}");
                    violations.push(serde_json::json!({
                        "seed": seed,
                        "validators": n,
                        "byzantine": Byzantine::for_seed(seed).name(),
                        "violation": e,
                        "replay": format!(
                            "cargo run --release -p secnet-consensus --features campaign --example chaos -- --seed {seed} --validators {n}"
                        ),
                    }));
                }
            }
        }
        if seed % 20 == 0 {
            eprintln!(
                "{seed} seeds, {runs} runs, {} violations, {:.0} s",
                violations.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let summary = serde_json::json!({
        "campaign": "chaos",
        "seeds": args.seeds,
        "validators": args.validators,
        "runs": runs,
        "runs_by_byzantine_kind": by_kind,
        "steps_run": steps,
        "light_client_verified_answers": verified_answers,
        "light_client_lies_refused_by_kind": lies_refused,
        "violations": violations,
        "wall_s": started.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&summary).unwrap());
    std::process::exit(i32::from(!violations.is_empty()));
}
