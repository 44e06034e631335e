//! `secnet bench`: throughput measurements printed as JSON. Run them from a release build.

use anyhow::{Context, ensure};
use clap::Subcommand;
use secnet_contract::StateKey;
use secnet_ledger::Ledger;
use secnet_merkle::log::{leaf_hash, verify_inclusion};
use secnet_node::datadir::DataDir;
use secnet_types::{Block, Genesis, Keypair, SignedTransaction, verify_signatures};
use std::path::PathBuf;
use std::time::Instant;

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCmd {
    /// Execute the data contract's mixed workload through the durable ledger on one core:
    /// throughput, and memory per state entry added.
    Apply {
        /// Transactions to execute (after the setup they rely on, which is not timed).
        #[arg(long, default_value_t = 200_000)]
        txs: usize,
        /// Funded accounts that send them.
        #[arg(long, default_value_t = 2_000)]
        accounts: usize,
        /// Transactions per block.
        #[arg(long, default_value_t = 5_000)]
        block_txs: usize,
        /// Write the ledger here (default: a temporary directory, removed afterwards).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Bound the state tree's memory to this many MiB, as validators do (`secnet node
        /// --state-memory-mib`); by default it holds everything.
        #[arg(long, value_name = "MIB")]
        state_memory_mib: Option<usize>,
        /// Print JSON (the only output format; kept for symmetry with other commands).
        #[arg(long)]
        json: bool,
    },
    /// Open a ledger a node or `bench apply --data-dir` wrote, in this fresh process: how
    /// long it takes, and the peak memory it needs (a validator restarting). A ledger of an
    /// earlier format is migrated, as a node opening it would.
    Open {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Open it with the state tree bound to this many MiB, as validators do (`secnet node
        /// --state-memory-mib`); by default it holds everything.
        #[arg(long, value_name = "MIB")]
        state_memory_mib: Option<usize>,
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
        /// Memory for each validator's state tree, in MiB (`secnet node --state-memory-mib`;
        /// by default theirs): a soak that outgrows it shows the spill file at work.
        #[arg(long, value_name = "MIB")]
        state_memory_mib: Option<usize>,
        /// Each validator keeps only its last N blocks (`secnet node --keep-blocks`; by
        /// default every block): a soak of an hour or more then needs a fraction of the disk.
        #[arg(long, value_name = "N")]
        keep_blocks: Option<u64>,
        /// Heights of blocks and certificates each validator's consensus keeps for peers
        /// that fell behind (`secnet node --archive-heights`; by default theirs).
        #[arg(long, value_name = "N")]
        archive_heights: Option<u64>,
        /// Keep the validators' directories after the run (their path is printed on stderr),
        /// for `secnet ledger usage --data-dir DIR/node0`.
        #[arg(long)]
        keep: bool,
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

/// `bench open`: opens the ledger in `dir` once, in this process, and reports the time and
/// this process's peak resident memory (`VmHWM`, which includes the few MiB the process had
/// before).
fn open(dir: &std::path::Path, state_memory_mib: Option<usize>) -> anyhow::Result<()> {
    let genesis = DataDir::new(dir)
        .read_genesis()
        .with_context(|| format!("reading the genesis in {}", dir.display()))?;
    let pid = std::process::id();
    let rss_before = proc_status_mib(pid, "VmRSS");
    let start = Instant::now();
    let ledger = Ledger::open_bounded(
        dir,
        &genesis,
        state_memory_mib.map(secnet_ledger::StateMemory::mib),
    )
    .with_context(|| format!("opening the ledger in {}", dir.display()))?;
    let open_secs = start.elapsed().as_secs_f64();
    let state = ledger.state();
    let out = serde_json::json!({
        "bench": "open",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "open_seconds": open_secs,
        "height": state.tip().height,
        "state_root": state.state_root(),
        "state_entries": state.entry_count(),
        "state_memory_mib": state_memory_mib,
        "state_entries_in_memory": state.resident_entries(),
        "rss_mib_before": rss_before,
        "rss_mib_after": proc_status_mib(pid, "VmRSS"),
        "rss_mib_peak": proc_status_mib(pid, "VmHWM"),
    });
    super::print_json(&out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    let (total, accounts, block_txs, data_dir, state_memory_mib) = match cmd {
        BenchCmd::Apply {
            txs,
            accounts,
            block_txs,
            data_dir,
            state_memory_mib,
            json: _,
        } => (txs, accounts, block_txs, data_dir, state_memory_mib),
        BenchCmd::Open {
            data_dir,
            state_memory_mib,
            json: _,
        } => return open(&data_dir, state_memory_mib),
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
            state_memory_mib,
            keep_blocks,
            archive_heights,
            keep,
            json: _,
        } => {
            return super::bench_ledger::soak(
                validators,
                accounts,
                minutes,
                rate,
                super::bench_ledger::SoakNodes {
                    state_memory_mib,
                    keep_blocks,
                    archive_heights,
                },
                keep,
            );
        }
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
    ensure!(accounts >= 16, "--accounts must be at least 16");
    ensure!(
        (1..=secnet_types::limits::MAX_BLOCK_TXS).contains(&block_txs),
        "--block-txs must be 1..={}",
        secnet_types::limits::MAX_BLOCK_TXS
    );
    eprintln!("preparing {accounts} accounts and {total} signed transactions...");
    let keys: Vec<Keypair> = (0..accounts as u64)
        .map(|i| Keypair::deterministic("bench", i))
        .collect();
    let genesis = Genesis::single_node(
        CHAIN,
        1_700_000_000_000,
        keys.iter().map(Keypair::account),
        1_000_000_000,
    );
    let super::bench_ledger::Workload {
        setup,
        measured: txs,
    } = super::bench_ledger::mixed_workload(&keys, CHAIN, total)?;

    let tmp;
    let dir = match data_dir {
        Some(d) => d,
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    DataDir::new(&dir).write_genesis(&genesis)?;
    let mut ledger = Ledger::open_bounded(
        &dir,
        &genesis,
        state_memory_mib.map(secnet_ledger::StateMemory::mib),
    )?;
    let apply = |ledger: &mut Ledger, txs: &[SignedTransaction]| -> anyhow::Result<usize> {
        let mut rejected = 0;
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
        }
        Ok(rejected)
    };
    eprintln!("applying the setup (not timed)...");
    for phase in &setup {
        let rejected = apply(&mut ledger, phase)?;
        ensure!(rejected == 0, "{rejected} setup transactions were rejected");
    }

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

    let entries_before = ledger.state().entry_count();
    let log_before = ledger.state().log().len();
    let height_before = ledger.state().tip().height;
    let pid = std::process::id();
    let rss_before = proc_status_mib(pid, "VmRSS");
    let written_before = super::bench_ledger::written_mib(pid);
    eprintln!("applying {} blocks...", txs.len().div_ceil(block_txs));
    // Ten windows of whole blocks: the rate and the bytes written as the state grows, and
    // whether a spill file was being replaced in each.
    let window_txs = txs.len().div_ceil(10).div_ceil(block_txs).max(1) * block_txs;
    let mut windows = Vec::new();
    let mut rejected = 0;
    let start = Instant::now();
    for window in txs.chunks(window_txs) {
        let entries_at_start = ledger.state().entry_count();
        let moving_at_start = ledger.state().entries_in_earlier_stores();
        let written_at_start = super::bench_ledger::written_mib(pid);
        let t = Instant::now();
        rejected += apply(&mut ledger, window)?;
        let secs = t.elapsed().as_secs_f64();
        let written = super::bench_ledger::written_mib(pid)
            .zip(written_at_start)
            .map(|(end, start)| end - start);
        windows.push(serde_json::json!({
            "state_entries_at_start": entries_at_start,
            "state_entries_moving_at_start": moving_at_start,
            "state_entries_moving_at_end": ledger.state().entries_in_earlier_stores(),
            "txs": window.len(),
            "tx_per_s": window.len() as f64 / secs,
            "written_kib_per_tx": written.map(|w| w * 1024.0 / window.len() as f64),
        }));
    }
    let apply_secs = start.elapsed().as_secs_f64();
    let blocks = ledger.state().tip().height - height_before;
    let rss_after = proc_status_mib(pid, "VmRSS");
    let written = super::bench_ledger::written_mib(pid)
        .zip(written_before)
        .map(|(a, b)| a - b);
    let entries_added = ledger.state().entry_count().saturating_sub(entries_before);
    let log_added = ledger.state().log().len().saturating_sub(log_before);
    let grown_bytes_per_item = match (rss_before, rss_after) {
        (Some(b), Some(a)) if entries_added as u64 + log_added > 0 => {
            Some((a - b) * 1024.0 * 1024.0 / (entries_added as u64 + log_added) as f64)
        }
        _ => None,
    };

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
    // The log's proofs are read from the stored tree (the state holds only its right edge);
    // each is checked against the root the state commits to.
    let (log_size, log_root) = (state.log().len(), state.log().root());
    let mut log_us = Vec::new();
    for index in (0..log_size).step_by((log_size as usize / 1000).max(1)) {
        let t = Instant::now();
        let proof = ledger.inclusion_proof(index, Some(log_size))?;
        let path: Vec<[u8; 32]> = proof.audit_path.iter().map(|h| h.0).collect();
        verify_inclusion(&leaf_hash(&proof.leaf), index, log_size, &path, &log_root)
            .context("log proof")?;
        log_us.push(t.elapsed().as_secs_f64() * 1e6);
    }

    let out = serde_json::json!({
        "bench": "apply",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "txs": txs.len(),
        "workload": "the data contract's mix, as bench ledger offers it",
        "accounts": accounts,
        "blocks": blocks,
        "block_txs": block_txs,
        "rejected": rejected,
        "apply_seconds": apply_secs,
        "tx_per_s": txs.len() as f64 / apply_secs,
        "windows": windows,
        "limit_sig_verify_per_s": txs.len() as f64 / sig_secs,
        "state_entries": state.entry_count(),
        "state_memory_mib": state_memory_mib,
        "state_entries_in_memory": state.resident_entries(),
        "log_size": log_size,
        "state_entries_added": entries_added,
        "log_leaves_added": log_added,
        "written_mib": written,
        "written_kib_per_tx": written.map(|w| w * 1024.0 / txs.len() as f64),
        "rss_mib_before": rss_before,
        "rss_mib_after": rss_after,
        "rss_growth_bytes_per_added_entry_or_leaf": grown_bytes_per_item,
        "state_proof_gen_verify_us_p50": median(state_us),
        "log_proof_gen_verify_us_p50": median(log_us),
        "state_root": root,
    });
    super::print_json(&out)
}
