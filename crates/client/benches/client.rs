//! The light client's costs, in process (no network: what is timed is verification alone).
//! `cargo bench -p secnet-client --bench client [-- ANSWERS ACCOUNTS HEIGHTS VALIDATORS]`
//! prints JSON.
//!
//! - One answer: a certified header plus one account's proof, checked against the genesis
//!   validators. Timed from before the call to after it, per answer: with the header already
//!   verified (the certificate amortised, as a client asking many questions at one height
//!   does) and with a fresh client each time (certificate included).
//! - Catching up: a chain of certified headers from height 1, each certificate verified and
//!   each parent link checked; certificates per second.

#![allow(
    clippy::indexing_slicing,
    clippy::expect_used,
    reason = "a benchmark: a failed lookup is a failed run"
)]

use anyhow::ensure;
use secnet_certified::{CertifiedHeader, CertifiedState, Certifier, HexBytes};
use secnet_client::LightClient;
use secnet_contract::{State, StateKey};
use secnet_types::{Allocation, Block, BlockHeader, Genesis, Keypair, StateCommitment, Validator};
use serde_json::json;
use std::time::Instant;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn stats(mut micros: Vec<f64>) -> serde_json::Value {
    micros.sort_by(f64::total_cmp);
    json!({
        "p50_us": percentile(&micros, 50.0),
        "p99_us": percentile(&micros, 99.0),
        "max_us": micros.last().copied().unwrap_or(0.0),
        "n": micros.len(),
    })
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    run(
        arg(&args, 0, 20_000),
        arg(&args, 1, 100_000),
        arg(&args, 2, 100_000),
        arg(&args, 3, 4),
    )
}

fn run(answers: usize, accounts: usize, heights: u64, validators: usize) -> anyhow::Result<()> {
    ensure!(
        answers > 0 && accounts > 0 && heights > 0,
        "counts must be positive"
    );
    ensure!(
        (1..=64).contains(&validators),
        "--validators must be 1..=64"
    );
    let keys: Vec<Keypair> = (0..validators as u64)
        .map(|i| Keypair::deterministic("bench-validator", i))
        .collect();
    let users: Vec<Keypair> = (0..accounts as u64)
        .map(|i| Keypair::deterministic("bench-user", i))
        .collect();
    let genesis = Genesis {
        chain_id: "secnet-bench".into(),
        genesis_time_ms: 1_700_000_000_000,
        allocations: users
            .iter()
            .map(|u| Allocation {
                account: u.account(),
                balance: 1_000,
            })
            .collect(),
        validators: keys
            .iter()
            .enumerate()
            .map(|(i, k)| Validator {
                key: k.account(),
                address: format!("127.0.0.1:{}", 9000 + i),
                name: String::new(),
            })
            .collect(),
    };
    let quorum = validators - (validators - 1) / 3;
    let signers: Vec<&Keypair> = keys.iter().take(quorum).collect();
    let certifier = Certifier::new(&genesis, &signers)?;
    eprintln!("building a state of {accounts} accounts...");
    let state = State::genesis(&genesis);
    let snapshot = state.snapshot();
    let header = Block::new(1, genesis.block().hash(), genesis.genesis_time_ms, vec![])
        .committing(StateCommitment {
            from: 0,
            roots: vec![state.state_root()],
            receipts: vec![secnet_contract::receipts_root(&[])],
        })
        .header;
    let certified = CertifiedHeader {
        certificate: HexBytes(certifier.certify(&header)?),
        header: HexBytes(header.to_bytes()),
    };
    let questions: Vec<(StateKey, CertifiedState)> = (0..answers)
        .map(|i| {
            let key = StateKey::Account(users[(i * 7919) % users.len()].account());
            let answer = CertifiedState {
                certified: certified.clone(),
                height: 0,
                proofs: vec![snapshot.prove(&key)],
            };
            (key, answer)
        })
        .collect();

    eprintln!("verifying {answers} answers...");
    let client = LightClient::new(&genesis)?;
    client.verify_state(&questions[0].1, std::slice::from_ref(&questions[0].0))?;
    let mut warm = Vec::with_capacity(answers);
    for (key, answer) in &questions {
        let started = Instant::now();
        client.verify_state(answer, std::slice::from_ref(key))?;
        warm.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let cold_n = answers.min(2_000);
    let mut cold = Vec::with_capacity(cold_n);
    for (key, answer) in questions.iter().take(cold_n) {
        let fresh = LightClient::new(&genesis)?;
        let started = Instant::now();
        fresh.verify_state(answer, std::slice::from_ref(key))?;
        cold.push(started.elapsed().as_secs_f64() * 1e6);
    }

    eprintln!("signing a chain of {heights} certified headers...");
    let mut chain: Vec<CertifiedHeader> = Vec::with_capacity(heights as usize);
    let mut parent: BlockHeader = genesis.block().header;
    for height in 1..=heights {
        let next = Block::new(
            height,
            parent.hash(),
            genesis.genesis_time_ms + height,
            vec![],
        )
        .committing(StateCommitment {
            from: height - 1,
            roots: vec![state.state_root()],
            receipts: vec![secnet_contract::receipts_root(&[])],
        })
        .header;
        chain.push(CertifiedHeader {
            certificate: HexBytes(certifier.certify(&next)?),
            header: HexBytes(next.to_bytes()),
        });
        parent = next;
    }
    eprintln!("catching up...");
    let follower = LightClient::new(&genesis)?;
    let started = Instant::now();
    let tip = follower.follow(&genesis.block().header, &chain)?;
    let catch_up_s = started.elapsed().as_secs_f64();
    ensure!(
        tip.height == heights,
        "caught up to {} of {heights}",
        tip.height
    );

    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "bench": "client",
            "where": "in process, one thread; verification only (no network)",
            "validators": validators,
            "signatures_per_certificate": quorum,
            "accounts": accounts,
            "one_answer_certificate_remembered": stats(warm),
            "one_answer_with_certificate": stats(cold),
            "catch_up": {
                "heights": heights,
                "seconds": catch_up_s,
                "certificates_per_s": heights as f64 / catch_up_s,
            },
        }))?
    );
    Ok(())
}
