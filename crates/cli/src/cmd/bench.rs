//! `secnet bench`: throughput measurements printed as JSON. Run them from a release build.

use anyhow::{Context, ensure};
use clap::Subcommand;
use secnet_contract::StateKey;
use secnet_ledger::Ledger;
use secnet_merkle::log::verify_inclusion;
use secnet_node::datadir::DataDir;
use secnet_types::{
    AccessDecision, AccessEntry, AccountId, Allocation, Block, Call, DataKind, Genesis, Hash,
    Keypair, RegisterData, SignedTransaction, Transaction, verify_signatures,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCmd {
    /// Execute signed contract transactions through the durable ledger on one core.
    Apply {
        /// Transactions to execute.
        #[arg(long, default_value_t = 200_000)]
        txs: usize,
        /// Funded accounts that send them.
        #[arg(long, default_value_t = 20_000)]
        accounts: usize,
        /// Transactions per block.
        #[arg(long, default_value_t = 5_000)]
        block_txs: usize,
        /// Write the ledger here (default: a temporary directory, removed afterwards).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Print JSON (the only output format; kept for symmetry with other commands).
        #[arg(long)]
        json: bool,
    },
    /// The Private Data Center in process: access decisions and streaming through the
    /// encrypted store.
    Pdc {
        /// Access decisions to time.
        #[arg(long, default_value_t = 20_000)]
        decisions: usize,
        /// Size of the streamed object, MiB.
        #[arg(long, default_value_t = 1_024)]
        stream_mib: u64,
        /// Instead, fetch a 1 KiB FHIR resource over HTTP on loopback this many times.
        #[arg(long)]
        http_fetches: Option<usize>,
        /// Concurrent connections for `--http-fetches`.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// With `--http-fetches`, plain HTTP instead of TLS (to measure what TLS costs).
        #[arg(long)]
        plain_http: bool,
        /// Print JSON (the only output format; kept for symmetry with other commands).
        #[arg(long)]
        json: bool,
    },
    /// Train the default detector and time its scoring (batched on one core, and single).
    Ai {
        /// The kind of data: nsl-kdd or http-params.
        #[arg(long, default_value = "nsl-kdd")]
        dataset: secnet_ai::data::Kind,
        /// The labelled file.
        #[arg(long, default_value = "../shared/data/nsl-kdd/KDDTrain+_20Percent.txt")]
        data: PathBuf,
        /// Scores to time.
        #[arg(long, default_value_t = 1_000_000)]
        scores: usize,
        /// Print JSON (the only output format; kept for symmetry with other commands).
        #[arg(long)]
        json: bool,
    },
    /// Drive the data contract's workload through a real network of validator processes on
    /// this machine and measure what a client sees: applied throughput in a steady window
    /// and submission-to-finality latency.
    Ledger {
        /// Number of validators.
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Measured transactions per run.
        #[arg(long, default_value_t = 60_000)]
        txs: usize,
        /// Offered load, transactions per second, spread over the validators.
        #[arg(long, default_value_t = 8_000, conflicts_with_all = ["saturate", "sweep"])]
        rate: u64,
        /// Submit as fast as the validators accept instead of at `--rate` (finality latency
        /// then includes time spent queued).
        #[arg(long)]
        saturate: bool,
        /// One run per offered rate (comma-separated), each on a fresh network: the
        /// latency-throughput curve.
        #[arg(long, value_delimiter = ',')]
        sweep: Option<Vec<u64>>,
        /// With `--sweep`, write the curve as `ledger-curve.png` and `.svg` here.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Funded client accounts sending them.
        #[arg(long, default_value_t = 64)]
        accounts: usize,
        /// Print JSON (the only output format; kept for symmetry with other commands).
        #[arg(long)]
        json: bool,
    },
    /// Hold an offered rate with the mixed workload through a network of validator processes
    /// for many minutes: latency and memory over time, stalls, and the same roots at the end.
    Soak {
        /// Minutes to run.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Offered load, transactions per second (what this project's 2-core machine holds
        /// for minutes with four validators; short `bench ledger` runs overstate it).
        #[arg(long, default_value_t = 2_500)]
        rate: u64,
        /// Number of validators.
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Funded client accounts.
        #[arg(long, default_value_t = 64)]
        accounts: usize,
        /// Print JSON (the only output format; kept for symmetry with other commands).
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn free_port_block(n: u16) -> anyhow::Result<u16> {
    for _ in 0..100 {
        let base = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if base < 60_000
            && (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return Ok(base);
        }
    }
    anyhow::bail!("no block of {n} free ports on 127.0.0.1")
}

/// Peak resident memory of a process, in MiB, from /proc.
pub(super) fn peak_rss_mib(pid: u32) -> Option<f64> {
    proc_status_mib(pid, "VmHWM")
}

/// A memory figure of a process from /proc (`VmHWM`, `VmRSS`, ...), in MiB.
pub(super) fn proc_status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

const CHAIN: &str = "secnet-bench";

/// Builds the workload: registrations, subscriptions, grant requests and access records
/// (one tenth each of the data-contract part), the rest transfers; signed, in nonce order.
#[expect(
    clippy::indexing_slicing,
    reason = "every index is reduced modulo the non-empty key list"
)]
fn workload(keys: &[Keypair], total: usize) -> Vec<SignedTransaction> {
    let k = keys.len();
    let per_phase = (total / 10).min(k);
    let mut nonces: HashMap<AccountId, u64> = HashMap::new();
    let mut sign = |i: usize, call: Call| -> SignedTransaction {
        let key = &keys[i % k];
        let nonce = nonces.entry(key.account()).or_insert(0);
        let tx = Transaction {
            chain_id: CHAIN.into(),
            sender: key.account(),
            nonce: *nonce,
            call,
        };
        *nonce += 1;
        tx.sign(key)
    };
    let data = |i: usize| Hash::digest(&(i as u64).to_be_bytes());
    let mut txs = Vec::with_capacity(total);
    for i in 0..per_phase {
        txs.push(sign(
            i,
            Call::RegisterData(RegisterData {
                hash: data(i),
                description: format!("bench record {i}"),
                address: format!("pdc://bench/{i}"),
                price: 100,
                kind: DataKind::UserData,
                holder: keys[(i + 1) % k].account(),
                holder_share_bps: 2_500,
            }),
        ));
    }
    let consumer = |i: usize| (i + 7) % k;
    for i in 0..per_phase {
        txs.push(sign(consumer(i), Call::SubscribeData { hash: data(i) }));
    }
    let mut grants = Vec::with_capacity(per_phase);
    for i in 0..per_phase {
        let tx = sign(
            consumer(i),
            Call::RequestDataWithHash {
                hash: data(i),
                purpose: "bench".into(),
                ttl_secs: 3_600,
            },
        );
        grants.push(tx.hash());
        txs.push(tx);
    }
    for (i, grant) in grants.iter().enumerate() {
        txs.push(sign(
            (i + 1) % k,
            Call::RecordAccess {
                entries: vec![AccessEntry {
                    data: data(i),
                    grant: Some(*grant),
                    requester: keys[consumer(i)].account(),
                    decision: AccessDecision::Delivered,
                    score_ppm: 1_000,
                    at_ms: 0,
                }],
            },
        ));
    }
    let mut i = 0;
    while txs.len() < total {
        let to = keys[(i * 31 + 5) % k].account();
        txs.push(sign(i, Call::Transfer { to, amount: 1 }));
        i += 1;
    }
    txs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    let (total, accounts, block_txs, data_dir) = match cmd {
        BenchCmd::Apply {
            txs,
            accounts,
            block_txs,
            data_dir,
            json: _,
        } => (txs, accounts, block_txs, data_dir),
        BenchCmd::Ai {
            dataset,
            data,
            scores,
            json: _,
        } => return super::bench_ai::run(dataset, &data, scores),
        BenchCmd::Pdc {
            decisions,
            stream_mib,
            http_fetches,
            concurrency,
            plain_http,
            json: _,
        } => {
            return match http_fetches {
                Some(n) => super::bench_pdc::run_http(n, concurrency, plain_http),
                None => super::bench_pdc::run(decisions, stream_mib),
            };
        }
        BenchCmd::Soak {
            minutes,
            rate,
            validators,
            accounts,
            json: _,
        } => return super::bench_ledger::soak(validators, accounts, minutes, rate),
        BenchCmd::Ledger {
            validators,
            txs,
            rate,
            saturate,
            sweep,
            plot,
            accounts,
            json: _,
        } => {
            return super::bench_ledger::run(
                validators,
                accounts,
                txs,
                (!saturate).then_some(rate),
                sweep,
                plot.as_deref(),
            );
        }
    };
    ensure!(accounts >= 8, "--accounts must be at least 8");
    ensure!(
        (1..=secnet_types::limits::MAX_BLOCK_TXS).contains(&block_txs),
        "--block-txs must be 1..={}",
        secnet_types::limits::MAX_BLOCK_TXS
    );
    eprintln!("preparing {accounts} accounts and {total} signed transactions...");
    let keys: Vec<Keypair> = (0..accounts as u64)
        .map(|i| Keypair::deterministic("bench", i))
        .collect();
    let genesis = Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 1_700_000_000_000,
        allocations: keys
            .iter()
            .map(|k| Allocation {
                account: k.account(),
                balance: 1_000_000_000,
            })
            .collect(),
        validators: vec![],
    };
    let txs = workload(&keys, total);

    let tmp;
    let dir = match data_dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    DataDir::new(&dir).write_genesis(&genesis)?;
    let mut ledger = Ledger::open(&dir, &genesis)?;

    // Signature verification alone, as the ceiling: the same batches the ledger checks.
    let start = Instant::now();
    let mut valid = 0usize;
    for chunk in txs.chunks(block_txs) {
        valid += verify_signatures(chunk).iter().filter(|ok| **ok).count();
    }
    let sig_secs = start.elapsed().as_secs_f64();
    ensure!(
        valid == txs.len(),
        "{} signatures failed",
        txs.len() - valid
    );

    eprintln!("applying {} blocks...", txs.len().div_ceil(block_txs));
    let mut rejected = 0usize;
    let mut blocks = 0u64;
    let start = Instant::now();
    for chunk in txs.chunks(block_txs) {
        let tip = ledger.state().tip();
        let block = Block::new(
            tip.height + 1,
            tip.block_hash,
            tip.timestamp_ms + 1_000,
            chunk.to_vec(),
        );
        let outcome = ledger.apply_block(&block)?;
        rejected += outcome.receipts.iter().filter(|r| !r.is_applied()).count();
        blocks += 1;
    }
    let apply_secs = start.elapsed().as_secs_f64();

    // Proof generation plus verification.
    let state = ledger.state();
    let root = state.state_root();
    let mut state_us = Vec::new();
    for key in keys.iter().step_by((keys.len() / 1000).max(1)) {
        let t = Instant::now();
        let proof = state.prove(&StateKey::Account(key.account()));
        proof.verify(&root).context("state proof")?;
        state_us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let log = state.log();
    let mut log_us = Vec::new();
    let log_root = log.root();
    for index in (0..log.len()).step_by((log.len() as usize / 1000).max(1)) {
        let t = Instant::now();
        let path = log.inclusion_proof(index, log.len())?;
        let leaf = log.leaf_hash_at(index).context("leaf")?;
        verify_inclusion(&leaf, index, log.len(), &path, &log_root).context("log proof")?;
        log_us.push(t.elapsed().as_secs_f64() * 1e6);
    }

    let out = serde_json::json!({
        "bench": "apply",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "txs": txs.len(),
        "accounts": accounts,
        "blocks": blocks,
        "block_txs": block_txs,
        "rejected": rejected,
        "apply_seconds": apply_secs,
        "tx_per_s": txs.len() as f64 / apply_secs,
        "limit_sig_verify_per_s": txs.len() as f64 / sig_secs,
        "state_entries": state.entries().count(),
        "log_size": log.len(),
        "state_proof_gen_verify_us_p50": median(state_us),
        "log_proof_gen_verify_us_p50": median(log_us),
        "state_root": root,
    });
    super::print_json(&out)
}
