//! `secnet load`: drive signed transactions into a network over HTTP and measure committed
//! throughput and submission-to-finality latency.

use anyhow::{Context, bail, ensure};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use secnet_api::txs::BatchResult;
use secnet_client::NodeApi;
use secnet_node::keyfile;
use secnet_types::{Call, DataKind, Hash, Keypair, RegisterData, SignedTransaction, Transaction};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Arguments of `secnet load`.
#[derive(Args)]
pub struct LoadArgs {
    /// Validators' APIs, comma-separated; transactions are spread over them.
    #[arg(long, value_delimiter = ',', default_value = "https://127.0.0.1:8100")]
    pub node: Vec<String>,
    /// Directory of funded key files that send the transactions.
    #[arg(long)]
    pub key_dir: PathBuf,
    /// Number of transactions.
    #[arg(long, default_value_t = 10_000)]
    pub txs: usize,
    /// Target submission rate, transactions per second (default: as fast as accepted).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Transactions per HTTP request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Transactions signed and submitted.
    pub submitted: usize,
    /// Transactions refused at admission.
    pub refused: usize,
    /// Transactions committed.
    pub committed: usize,
    /// Committed transactions per second, from first submission to last commit.
    pub tx_per_s: f64,
    /// Median submission-to-finality latency.
    pub p50_ms: f64,
    /// 99th percentile submission-to-finality latency.
    pub p99_ms: f64,
    /// Seconds from first submission to last commit.
    pub seconds: f64,
}

/// Reads every `*.key` file in `dir`.
pub fn read_keys(dir: &Path) -> anyhow::Result<Vec<Keypair>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "key"))
        .collect();
    paths.sort();
    ensure!(!paths.is_empty(), "no key files in {}", dir.display());
    paths
        .iter()
        .map(|p| keyfile::read_key(p).map_err(Into::into))
        .collect()
}

/// Signs `n` transactions from `keys` starting at their current nonces: nine transfers for
/// every data registration.
pub fn sign_workload(
    keys: &[Keypair],
    nonces: &[u64],
    chain_id: &str,
    n: usize,
    salt: u64,
) -> Vec<SignedTransaction> {
    let mut next: Vec<u64> = nonces.to_vec();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let k = i % keys.len();
        let (Some(key), Some(nonce)) = (keys.get(k), next.get_mut(k)) else {
            break;
        };
        let call = if i % 10 == 9 {
            let hash = Hash::digest_parts(&[&salt.to_be_bytes(), &(i as u64).to_be_bytes()]);
            Call::RegisterData(RegisterData {
                hash,
                description: format!("load record {i}"),
                address: format!("pdc://load/{salt}/{i}"),
                price: 10,
                kind: DataKind::UserData,
                holder: key.account(),
                holder_share_bps: 1_000,
            })
        } else {
            let to = keys
                .get((k + 1) % keys.len())
                .map_or(key.account(), Keypair::account);
            Call::Transfer { to, amount: 1 }
        };
        out.push(
            Transaction {
                chain_id: chain_id.to_string(),
                sender: key.account(),
                nonce: *nonce,
                call,
            }
            .sign(key),
        );
        *nonce += 1;
    }
    out
}

pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or(f64::NAN)
}

/// Submits `txs` to `nodes` and waits until they are committed.
///
/// Each sender's transactions go to one node, in nonce order, so no node sees a nonce gap;
/// one task per node submits batches concurrently while this task watches blocks commit.
pub async fn drive(
    nodes: &[String],
    txs: Vec<SignedTransaction>,
    rate: Option<u64>,
    batch: usize,
    progress: bool,
) -> anyhow::Result<LoadReport> {
    use std::sync::{Arc, Mutex};
    ensure!(!nodes.is_empty(), "no node to send to");
    let clients: Vec<NodeApi> = nodes
        .iter()
        .map(|n| NodeApi::new(n))
        .collect::<Result<_, _>>()?;
    let watcher = clients.first().context("no node")?.clone();
    let start_height = watcher.status().await?.height;
    let total = txs.len();
    let bar = if progress {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("committed");

    let mut queues: Vec<Vec<SignedTransaction>> = vec![Vec::new(); clients.len()];
    for tx in txs {
        let node = usize::from(tx.tx().sender.0[0]) % clients.len();
        if let Some(q) = queues.get_mut(node) {
            q.push(tx);
        }
    }
    let submitted_at: Arc<Mutex<HashMap<Hash, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(total)));
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut submitters = Vec::new();
    for (client, queue) in clients.iter().cloned().zip(queues) {
        // Each node gets its share of the rate, so that all queues drain together.
        let per_node_rate =
            rate.map(|r| (r as f64 * queue.len() as f64 / total.max(1) as f64).max(1.0));
        let submitted_at = submitted_at.clone();
        let refused = refused.clone();
        let batch = batch.max(1);
        submitters.push(tokio::spawn(async move {
            for (i, chunk) in queue.chunks(batch).enumerate() {
                if let Some(r) = per_node_rate {
                    let due = Duration::from_secs_f64((i * batch) as f64 / r);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                let answer = client.submit_batch(chunk).await?;
                let now = Instant::now();
                let mut map = submitted_at
                    .lock()
                    .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
                for (tx, r) in chunk.iter().zip(answer.results) {
                    match r {
                        BatchResult::Admitted { .. } => {
                            map.insert(tx.hash(), now);
                        }
                        BatchResult::Refused { busy: true, error } => {
                            bail!("the node is busy: lower --rate ({error})");
                        }
                        BatchResult::Refused { error, .. } => {
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tracing::warn!(%error, "transaction refused");
                        }
                    }
                }
            }
            anyhow::Ok(())
        }));
    }

    let mut latencies = Vec::with_capacity(total);
    let mut next_height = start_height + 1;
    let mut last_commit = started;
    let mut idle_since = Instant::now();
    loop {
        let refused_now = refused.load(std::sync::atomic::Ordering::Relaxed);
        if latencies.len() + refused_now >= total {
            break;
        }
        // The next block, once the node applied it (the request waits for it a while).
        if let Some(block) = watcher
            .next_block_tx_hashes(next_height, Duration::from_millis(250))
            .await?
        {
            let now = Instant::now();
            let mut map = submitted_at
                .lock()
                .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
            for hash in &block.tx_hashes {
                if let Some(at) = map.remove(hash) {
                    latencies.push(now.duration_since(at).as_secs_f64() * 1e3);
                    last_commit = now;
                    idle_since = now;
                    bar.inc(1);
                }
            }
            next_height += 1;
        }
        if submitters.iter().all(|s| s.is_finished()) {
            for s in submitters.drain(..) {
                s.await??;
            }
        }
        if idle_since.elapsed() > Duration::from_secs(60) {
            bail!(
                "no transaction committed for 60 s; {} still pending",
                submitted_at.lock().map(|m| m.len()).unwrap_or(0)
            );
        }
    }
    bar.finish();
    latencies.sort_by(f64::total_cmp);
    let seconds = last_commit.duration_since(started).as_secs_f64();
    Ok(LoadReport {
        submitted: total,
        refused: refused.load(std::sync::atomic::Ordering::Relaxed),
        committed: latencies.len(),
        tx_per_s: latencies.len() as f64 / seconds.max(1e-9),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        seconds,
    })
}

pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let keys = read_keys(&args.key_dir)?;
    super::runtime()?.block_on(async move {
        let client = NodeApi::new(args.node.first().context("no --node")?)?;
        let chain_id = client.status().await?.chain_id;
        let mut nonces = Vec::new();
        for k in &keys {
            nonces.push(client.account(&k.account()).await?.nonce);
        }
        let salt = secnet_node::datadir::now_ms();
        let txs = sign_workload(&keys, &nonces, &chain_id, args.txs, salt);
        let report = drive(&args.node, txs, args.rate, args.batch, !args.json).await?;
        if args.json {
            return super::print_json(&report);
        }
        println!(
            "{} committed of {} ({} refused) in {:.2}s: {:.0} tx/s, finality p50 {:.0} ms, p99 {:.0} ms",
            report.committed, report.submitted, report.refused, report.seconds, report.tx_per_s, report.p50_ms, report.p99_ms
        );
        Ok(())
    })
}
