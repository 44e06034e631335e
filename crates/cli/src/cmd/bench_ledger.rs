//! `secnet bench ledger`: the data contract's workload driven through a real network of
//! validator processes on this machine, measured as a client sees it.
//!
//! - Latency runs from just before a batch is sent to the moment the validator it was sent
//!   to reports the transaction in a finalized block.
//! - Only applied receipts count towards throughput; transactions refused at admission and
//!   receipts rejected at execution are reported separately.
//! - Throughput and percentiles come from a steady window that leaves out the first 20% of
//!   the submission period (warm-up) and everything after 90% of it (the tail and the
//!   drain); the offered rate in that window is printed beside the applied rate.
//! - Every validator is watched, and all must reach the same height and state root.
//! - The workload mixes the data contract's calls: registrations, subscriptions, grant
//!   requests, access records and transfers, on state prepared beforehand (unmeasured) so
//!   that no call depends on another one of the run.

use super::bench::peak_rss_mib;
use super::load::percentile;
use anyhow::{Context, bail, ensure};
use secnet_api::txs::BatchResult;
use secnet_client::NodeApi;
use secnet_types::{
    AccessDecision, AccessEntry, Call, DataKind, GrantId, Hash, Keypair, RegisterData,
    SignedTransaction, Transaction, verify_signatures,
};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Share of each call in the measured workload, per 20 transactions of one sender.
const MIX: [(&str, usize); 5] = [
    ("register", 2),
    ("subscribe", 2),
    ("request", 4),
    ("record_access", 2),
    ("transfer", 10),
];

/// Access entries per `RecordAccess` (a holder reports its deliveries in batches).
const ENTRIES_PER_RECORD: usize = 4;

/// Transactions per submission request.
const BATCH: usize = 200;

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerRun {
    /// The offered rate asked for (transactions per second; none: as fast as accepted).
    pub target_tx_per_s: Option<u64>,
    /// Transactions submitted in the steady window, per second.
    pub offered_tx_per_s: f64,
    /// Applied transactions finalized in the steady window, per second.
    pub applied_tx_per_s: f64,
    /// Length of the steady window, seconds.
    pub window_s: f64,
    /// Transactions submitted in the whole run.
    pub submitted: usize,
    /// Applied (their receipt is not a rejection).
    pub applied: usize,
    /// Finalized with a rejection receipt.
    pub rejected: usize,
    /// Refused at admission (never in a block).
    pub refused: usize,
    /// Submitted but not final when the run gave up.
    pub lost: usize,
    /// Submission-to-finality latency of applied transactions submitted in the window.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Every validator reached the same height and state root at the end.
    pub same_state_root: bool,
    /// The height they agreed on.
    pub final_height: u64,
    /// Per validator: peak resident memory and CPU time over the run.
    pub validators: Vec<ValidatorUsage>,
}

/// One validator process's resources.
#[derive(Debug, Clone, Serialize)]
pub struct ValidatorUsage {
    /// Peak resident memory, MiB.
    pub peak_rss_mib: Option<f64>,
    /// User plus system CPU time, seconds.
    pub cpu_s: Option<f64>,
}

/// User plus system CPU seconds of a process, from /proc (USER_HZ is 100 on Linux).
pub(super) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is parenthesised and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The workload: what prepares the state, and what is measured.
pub struct Workload {
    /// Registrations, one subscription and one grant request per account.
    pub setup: Vec<SignedTransaction>,
    /// The measured mix.
    pub measured: Vec<SignedTransaction>,
}

fn data_id(owner: usize, item: usize) -> Hash {
    Hash::digest_parts(&[
        b"bench-ledger",
        &(owner as u64).to_be_bytes(),
        &(item as u64).to_be_bytes(),
    ])
}

/// Builds the setup and the measured mix for `keys` on `chain_id`, `total` measured
/// transactions. Account `t` registers items `d(t, j)` held by account `t+1`; account `i`
/// subscribes to `d(i+7, 0)` and asks for a grant on it, which account `i+8` holds.
#[expect(
    clippy::indexing_slicing,
    reason = "every index is reduced modulo the non-empty key list"
)]
pub fn mixed_workload(keys: &[Keypair], chain_id: &str, total: usize) -> anyhow::Result<Workload> {
    let k = keys.len();
    ensure!(k >= 16, "the mixed workload needs at least 16 accounts");
    let per_sender = total.div_ceil(k);
    let subscribes_per_sender = per_sender.div_ceil(20) * 2;
    // Items per owner: the one everyone's setup grant is on, plus enough distinct ones for
    // every sender's measured subscriptions.
    let items = 2 + subscribes_per_sender.div_ceil(k - 1);
    let mut nonces = vec![0u64; k];
    let mut sign = |i: usize, call: Call| -> SignedTransaction {
        let tx = Transaction {
            chain_id: chain_id.into(),
            sender: keys[i].account(),
            nonce: nonces[i],
            call,
        };
        nonces[i] += 1;
        tx.sign(&keys[i])
    };
    let register = |owner: usize, hash: Hash, label: String| {
        Call::RegisterData(RegisterData {
            hash,
            description: format!("bench record {label}"),
            address: format!("pdc://bench/{label}"),
            price: 100,
            kind: DataKind::UserData,
            holder: keys[(owner + 1) % k].account(),
            holder_share_bps: 2_500,
        })
    };
    let mut setup = Vec::new();
    for t in 0..k {
        for j in 0..items {
            setup.push(sign(t, register(t, data_id(t, j), format!("{t}/{j}"))));
        }
    }
    let mut grants: Vec<GrantId> = Vec::with_capacity(k);
    for i in 0..k {
        setup.push(sign(
            i,
            Call::SubscribeData {
                hash: data_id((i + 7) % k, 0),
            },
        ));
        let request = sign(
            i,
            Call::RequestDataWithHash {
                hash: data_id((i + 7) % k, 0),
                purpose: "treatment".into(),
                ttl_secs: 86_400,
            },
        );
        grants.push(request.hash());
        setup.push(request);
    }

    let slots: Vec<&str> = MIX
        .iter()
        .flat_map(|(name, n)| std::iter::repeat_n(*name, *n))
        .collect();
    let mut subscribed = vec![0usize; k];
    let mut registered = vec![0usize; k];
    let mut measured = Vec::with_capacity(total);
    for n in 0..total {
        let s = n % k;
        let round = n / k;
        let call = match slots[round % slots.len()] {
            "register" => {
                registered[s] += 1;
                register(
                    s,
                    data_id(s, items + registered[s]),
                    format!("{s}/new/{}", registered[s]),
                )
            }
            "subscribe" => {
                let c = subscribed[s];
                subscribed[s] += 1;
                let owner = (s + 1 + c % (k - 1)) % k;
                Call::SubscribeData {
                    hash: data_id(owner, 1 + c / (k - 1)),
                }
            }
            "request" => Call::RequestDataWithHash {
                hash: data_id((s + 7) % k, 0),
                purpose: "treatment".into(),
                ttl_secs: 3_600,
            },
            "record_access" => {
                // `s` holds the grant of requester `s - 8`.
                let requester = (s + k - 8) % k;
                let entry = AccessEntry {
                    data: data_id((requester + 7) % k, 0),
                    grant: Some(grants[requester]),
                    requester: keys[requester].account(),
                    decision: AccessDecision::Delivered,
                    score_ppm: 1_000,
                    at_ms: 0,
                };
                Call::RecordAccess {
                    entries: vec![entry; ENTRIES_PER_RECORD],
                }
            }
            _ => Call::Transfer {
                to: keys[(s * 31 + 5 + round) % k].account(),
                amount: 1,
            },
        };
        measured.push(sign(s, call));
    }
    Ok(Workload { setup, measured })
}

/// Where a submitted transaction is.
#[derive(Debug, Clone, Copy)]
struct Track {
    node: usize,
    sent_at: Instant,
    final_at: Option<Instant>,
    applied: bool,
}

type Tracks = Arc<Mutex<HashMap<Hash, Track>>>;

/// Follows validator `v`'s finalized blocks from `from`, marking the transactions sent to it
/// as final, until `stop`. Returns the last height seen.
async fn watch(
    api: NodeApi,
    v: usize,
    from: u64,
    tracks: Tracks,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<u64> {
    let mut next = from;
    loop {
        let height = api.status().await?.height;
        while next <= height {
            let Some(block) = api.block_tx_hashes(next).await? else {
                break;
            };
            let now = Instant::now();
            let mut map = tracks
                .lock()
                .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
            for (hash, applied) in block.tx_hashes.iter().zip(&block.applied) {
                if let Some(t) = map.get_mut(hash)
                    && t.node == v
                    && t.final_at.is_none()
                {
                    t.final_at = Some(now);
                    t.applied = *applied;
                }
            }
            next += 1;
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(next.saturating_sub(1));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `queue` to `api` in batches at `rate` (none: as fast as accepted), recording each
/// batch's send time before it is sent. Returns how many were refused at admission.
async fn submit(
    api: NodeApi,
    v: usize,
    queue: Vec<SignedTransaction>,
    rate: Option<f64>,
    started: Instant,
    tracks: Tracks,
) -> anyhow::Result<usize> {
    let mut refused = 0;
    for (i, chunk) in queue.chunks(BATCH).enumerate() {
        if let Some(r) = rate {
            let due = Duration::from_secs_f64((i * BATCH) as f64 / r);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let sent_at = Instant::now();
        {
            let mut map = tracks
                .lock()
                .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
            for tx in chunk {
                map.insert(
                    tx.hash(),
                    Track {
                        node: v,
                        sent_at,
                        final_at: None,
                        applied: false,
                    },
                );
            }
        }
        let answer = api.submit_batch(chunk).await?;
        let mut map = tracks
            .lock()
            .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
        for (tx, result) in chunk.iter().zip(answer.results) {
            match result {
                BatchResult::Admitted { .. } => {}
                BatchResult::Refused { busy: true, error } => {
                    bail!(
                        "validator {v} is full ({error}): the offered rate is past what it queues"
                    )
                }
                BatchResult::Refused { error, .. } => {
                    map.remove(&tx.hash());
                    refused += 1;
                    tracing::warn!(%error, "transaction refused at admission");
                }
            }
        }
    }
    Ok(refused)
}

/// Sends transactions to the validator chosen by their sender (so that each sender's nonces
/// reach one mempool in order).
fn by_validator(txs: Vec<SignedTransaction>, n: usize) -> Vec<Vec<SignedTransaction>> {
    let mut queues = vec![Vec::new(); n];
    for tx in txs {
        let v = usize::from(tx.tx().sender.0[0]) % n;
        if let Some(q) = queues.get_mut(v) {
            q.push(tx);
        }
    }
    queues
}

/// Waits until every validator reports the same height and state root (the chain rests
/// once the load stops). Returns that height, or `None` if they still differ after 60 s.
async fn agree(apis: &[NodeApi]) -> anyhow::Result<Option<u64>> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let mut seen = Vec::new();
        for api in apis {
            let s = api.status().await?;
            seen.push((s.height, s.state_root));
        }
        if let Some(first) = seen.first()
            && seen.iter().all(|s| s == first)
        {
            return Ok(Some(first.0));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(None)
}

/// Submits the setup and waits until every one of its transactions is applied.
async fn prepare(apis: &[NodeApi], setup: Vec<SignedTransaction>) -> anyhow::Result<()> {
    let tracks: Tracks = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let start_height = apis.first().context("no validator")?.status().await?.height + 1;
    let total = setup.len();
    let mut watchers = Vec::new();
    let queues = by_validator(setup, apis.len());
    let started = Instant::now();
    let mut submitters = Vec::new();
    for (v, (api, queue)) in apis.iter().zip(queues).enumerate() {
        watchers.push(tokio::spawn(watch(
            api.clone(),
            v,
            start_height,
            tracks.clone(),
            stop.clone(),
        )));
        submitters.push(tokio::spawn(submit(
            api.clone(),
            v,
            queue,
            None,
            started,
            tracks.clone(),
        )));
    }
    for s in submitters {
        ensure!(
            s.await?? == 0,
            "a setup transaction was refused at admission"
        );
    }
    loop {
        let (done, bad) = {
            let map = tracks
                .lock()
                .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
            let done = map.values().filter(|t| t.final_at.is_some()).count();
            let bad = map
                .values()
                .filter(|t| t.final_at.is_some() && !t.applied)
                .count();
            (done, bad)
        };
        ensure!(bad == 0, "{bad} setup transactions were rejected");
        if done == total {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "the setup did not finalize in 120 s ({done} of {total})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in watchers {
        w.await??;
    }
    Ok(())
}

/// One measured run against running validators.
pub async fn measure(
    apis: &[NodeApi],
    pids: &[u32],
    measured: Vec<SignedTransaction>,
    rate: Option<u64>,
) -> anyhow::Result<LedgerRun> {
    let tracks: Tracks = Arc::new(Mutex::new(HashMap::with_capacity(measured.len())));
    let stop = Arc::new(AtomicBool::new(false));
    let start_height = apis.first().context("no validator")?.status().await?.height + 1;
    let cpu_before: Vec<Option<f64>> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    let submitted = measured.len();
    let queues = by_validator(measured, apis.len());
    let mut watchers = Vec::new();
    let mut submitters = Vec::new();
    let started = Instant::now();
    for (v, (api, queue)) in apis.iter().zip(queues).enumerate() {
        watchers.push(tokio::spawn(watch(
            api.clone(),
            v,
            start_height,
            tracks.clone(),
            stop.clone(),
        )));
        let share = rate.map(|r| r as f64 * queue.len() as f64 / submitted.max(1) as f64);
        submitters.push(tokio::spawn(submit(
            api.clone(),
            v,
            queue,
            share.map(|s| s.max(1.0)),
            started,
            tracks.clone(),
        )));
    }
    let mut refused = 0;
    for s in submitters {
        refused += s.await??;
    }
    let submit_end = started.elapsed();
    // Drain: until every admitted transaction is final, or nothing moved for 30 s.
    let mut last_progress = (Instant::now(), 0usize);
    loop {
        let (finals, pending) = {
            let map = tracks
                .lock()
                .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
            let finals = map.values().filter(|t| t.final_at.is_some()).count();
            (finals, map.len() - finals)
        };
        if pending == 0 {
            break;
        }
        if finals != last_progress.1 {
            last_progress = (Instant::now(), finals);
        } else if last_progress.0.elapsed() > Duration::from_secs(30) {
            tracing::warn!(
                pending,
                "transactions still not final after 30 s without progress"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in watchers {
        w.await??;
    }
    let final_height = agree(apis).await?;
    let cpu_after: Vec<Option<f64>> = pids.iter().map(|p| cpu_seconds(*p)).collect();

    let map = tracks
        .lock()
        .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
    let window = (
        started + submit_end.mul_f64(0.2),
        started + submit_end.mul_f64(0.9),
    );
    let window_s = (window.1 - window.0).as_secs_f64().max(1e-9);
    let in_window = |at: Instant| at >= window.0 && at < window.1;
    let offered = map.values().filter(|t| in_window(t.sent_at)).count();
    let applied_in_window = map
        .values()
        .filter(|t| t.applied && t.final_at.is_some_and(in_window))
        .count();
    let mut latencies: Vec<f64> = map
        .values()
        .filter(|t| t.applied && in_window(t.sent_at))
        .filter_map(|t| t.final_at.map(|f| (f - t.sent_at).as_secs_f64() * 1e3))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let applied = map.values().filter(|t| t.applied).count();
    let rejected = map
        .values()
        .filter(|t| t.final_at.is_some() && !t.applied)
        .count();
    let lost = map.values().filter(|t| t.final_at.is_none()).count();
    Ok(LedgerRun {
        target_tx_per_s: rate,
        offered_tx_per_s: offered as f64 / window_s,
        applied_tx_per_s: applied_in_window as f64 / window_s,
        window_s,
        submitted,
        applied,
        rejected,
        refused,
        lost,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        p999_ms: percentile(&latencies, 0.999),
        same_state_root: final_height.is_some(),
        final_height: final_height.unwrap_or(0),
        validators: pids
            .iter()
            .zip(cpu_before.iter().zip(&cpu_after))
            .map(|(pid, (b, a))| ValidatorUsage {
                peak_rss_mib: peak_rss_mib(*pid),
                cpu_s: a.zip(*b).map(|(a, b)| a - b),
            })
            .collect(),
    })
}

/// Batch ed25519 verification on one core with the function validators call at admission
/// and when checking proposals: the ceiling one core puts on admission.
pub fn sig_verify_per_s(workload: &[SignedTransaction]) -> f64 {
    let start = Instant::now();
    let mut valid = 0usize;
    for chunk in workload.chunks(5_000) {
        valid += verify_signatures(chunk).iter().filter(|ok| **ok).count();
    }
    valid as f64 / start.elapsed().as_secs_f64().max(1e-9)
}

/// Starts a fresh network, prepares its state, and measures one run at `rate`.
pub fn run_once(
    validators: usize,
    accounts: usize,
    txs: usize,
    rate: Option<u64>,
) -> anyhow::Result<(LedgerRun, f64)> {
    use super::testnet::{InitArgs, init};
    let dir = tempfile::tempdir()?;
    let p2p = super::bench::free_port_block(validators as u16)?;
    let api = super::bench::free_port_block(validators as u16)?;
    let genesis = init(&InitArgs {
        validators,
        accounts,
        dir: dir.path().to_path_buf(),
        p2p_base_port: p2p,
        api_base_port: api,
        chain_id: "secnet-bench".into(),
    })?;
    let keys = super::load::read_keys(&dir.path().join("accounts"))?;
    eprintln!("signing {txs} transactions of the mixed workload...");
    let workload = mixed_workload(&keys, &genesis.chain_id, txs)?;
    let sig_rate = sig_verify_per_s(&workload.measured);
    let (children, urls) = super::testnet::spawn_validators(dir.path(), validators)?;
    let pids: Vec<u32> = children.0.iter().map(std::process::Child::id).collect();
    let run = super::runtime()?.block_on(async {
        let apis: Vec<NodeApi> = urls
            .iter()
            .map(|u| NodeApi::new(u))
            .collect::<Result<_, _>>()?;
        let ready = Instant::now();
        loop {
            let mut up = 0;
            for a in &apis {
                up += usize::from(a.status().await.is_ok());
            }
            if up == apis.len() {
                break;
            }
            ensure!(
                ready.elapsed() < Duration::from_secs(60),
                "validators did not start; see their node.log"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "preparing state ({} transactions, not measured)...",
            workload.setup.len()
        );
        prepare(&apis, workload.setup).await?;
        eprintln!(
            "driving {txs} transactions at {}...",
            rate.map_or("the fastest accepted rate".to_string(), |r| format!(
                "{r} tx/s"
            ))
        );
        measure(&apis, &pids, workload.measured, rate).await
    })?;
    drop(children);
    Ok((run, sig_rate))
}

/// `secnet bench ledger`: one run, or with `sweep` one per rate and the latency–throughput
/// curve (JSON, and a PNG/SVG chart under `plot_dir`).
pub fn run(
    validators: usize,
    accounts: usize,
    txs: usize,
    rate: Option<u64>,
    sweep: Option<Vec<u64>>,
    plot_dir: Option<&Path>,
) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let Some(rates) = sweep else {
        let (run, sig_rate) = run_once(validators, accounts, txs, rate)?;
        ensure!(
            run.same_state_root,
            "the validators did not reach the same state root"
        );
        return super::print_json(&serde_json::json!({
            "bench": "ledger",
            "profile": profile,
            "cores": cores,
            "validators": validators,
            "accounts": accounts,
            "workload": MIX.iter().map(|(n, s)| (n.to_string(), *s as f64 / 20.0)).collect::<HashMap<_, _>>(),
            "run": run,
            "limit_sig_verify_per_s_one_core": sig_rate,
            "limit_note": "batch ed25519 verification on one core with the validators' own function (verify_signatures), measured before the network starts",
        }));
    };
    let mut runs = Vec::new();
    let mut sig_rate = 0.0;
    for r in rates {
        let (run, s) = run_once(validators, accounts, txs, Some(r))?;
        sig_rate = s;
        eprintln!(
            "offered {:.0} tx/s: applied {:.0} tx/s, p50 {:.0} ms, p99 {:.0} ms",
            run.offered_tx_per_s, run.applied_tx_per_s, run.p50_ms, run.p99_ms
        );
        runs.push(run);
    }
    if let Some(dir) = plot_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write_curve(dir, &runs)?;
    }
    super::print_json(&serde_json::json!({
        "bench": "ledger-sweep",
        "profile": profile,
        "cores": cores,
        "validators": validators,
        "accounts": accounts,
        "txs_per_run": txs,
        "runs": runs,
        "limit_sig_verify_per_s_one_core": sig_rate,
        "plot": plot_dir.map(|d| d.join("ledger-curve.png")),
    }))
}

fn write_curve(dir: &Path, runs: &[LedgerRun]) -> anyhow::Result<PathBuf> {
    use secnet_sim::plot::{Chart, Series};
    let line = |label: &str, f: fn(&LedgerRun) -> f64, dashed: bool| Series {
        label: label.into(),
        points: runs.iter().map(|r| (r.applied_tx_per_s, f(r))).collect(),
        band: None,
        dashed,
    };
    let chart = Chart {
        title: "Finality latency against applied throughput".into(),
        x_label: "applied transactions per second".into(),
        y_label: "submission to finality, ms".into(),
        series: vec![
            line("p50", |r| r.p50_ms, false),
            line("p99", |r| r.p99_ms, false),
            line("p99.9", |r| r.p999_ms, true),
        ],
    };
    secnet_sim::write_chart(dir, "ledger-curve", &chart)?;
    Ok(dir.join("ledger-curve.png"))
}
