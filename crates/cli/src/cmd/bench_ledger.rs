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
use super::stop::Stop;
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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// Every validator reached the same height and state root at the end (`None`: not
    /// checked after this run).
    pub same_state_root: Option<bool>,
    /// The height they agreed on.
    pub final_height: Option<u64>,
    /// Blocks validator 0 finalized from the run's first submission until its last
    /// transaction was final.
    pub blocks: u64,
    /// The most transactions any validator's mempool held when a watcher asked: how far
    /// the chain fell behind what was offered.
    pub peak_mempool: usize,
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

/// Bytes a process has caused to be written to storage so far (`write_bytes` of
/// `/proc/PID/io`), in MiB.
pub(super) fn written_mib(pid: u32) -> Option<f64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let bytes: f64 = io
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))?
        .trim()
        .parse()
        .ok()?;
    Some(bytes / (1024.0 * 1024.0))
}

/// Bytes each entry of a directory takes on disk (allocated blocks; a directory's files all
/// the way down), by name.
fn entry_bytes(dir: &std::path::Path) -> Vec<(std::ffi::OsString, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| {
            let bytes = match entry.metadata() {
                Ok(m) if m.is_dir() => entry_bytes(&entry.path()).iter().map(|e| e.1).sum(),
                Ok(m) => m.blocks() * 512,
                Err(_) => 0,
            };
            (entry.file_name(), bytes)
        })
        .collect()
}

/// Bytes the files a process holds open but has unlinked from `dir` take on disk (each file
/// once, however many descriptors it has): a validator's state spill files and its file of
/// grants by expiry (and, while a bounded ledger opens, its parts), which no directory lists.
fn unlinked_bytes(pid: u32, dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let files: std::collections::BTreeMap<(u64, u64), u64> = fds
        .flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                target.starts_with(dir) && target.to_string_lossy().ends_with(" (deleted)")
            })
        })
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| ((m.dev(), m.ino()), m.blocks() * 512))
        .collect();
    Some(files.values().sum())
}

/// Where a validator's disk goes, in MiB.
#[derive(Debug, Clone, Copy, Serialize)]
struct DiskMib {
    /// The ledger file.
    ledger: f64,
    /// Consensus's journals and archives.
    consensus: f64,
    /// The state tree's spill files and the grants' file (unlinked, so only the process sees
    /// them).
    spill: Option<f64>,
    /// The rest of its directory (web and PDC databases, logs, keys).
    other: f64,
}

impl DiskMib {
    fn of(dir: &std::path::Path, pid: u32) -> DiskMib {
        use super::mib;
        // As the kernel names the files a process holds (no symbolic link in the way).
        let dir = &dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let (mut ledger, mut consensus, mut other) = (0, 0, 0);
        for (name, bytes) in entry_bytes(dir) {
            match name.to_str() {
                Some(secnet_ledger::LEDGER_FILE) => ledger += bytes,
                Some("consensus") => consensus += bytes,
                _ => other += bytes,
            }
        }
        DiskMib {
            ledger: mib(ledger),
            consensus: mib(consensus),
            spill: unlinked_bytes(pid, dir).map(mib),
            other: mib(other),
        }
    }
}

/// The workload: what prepares the state, and what is measured.
pub struct Workload {
    /// Registrations; then one subscription and one grant request per account (each phase
    /// final before the next is sent, since it depends on the one before).
    pub setup: Vec<Vec<SignedTransaction>>,
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

/// The mixed workload, generated as it is needed: the setup it relies on, then any number
/// of measured transactions. Account `t` registers items `d(t, j)` held by account `t+1`;
/// account `i` subscribes to `d(i+7, 0)` and asks for a grant on it, which account `i+8`
/// holds; measured subscriptions go to items `j >= 1`, each (subscriber, item) once.
pub struct Mix {
    keys: Vec<Keypair>,
    chain_id: String,
    items: usize,
    nonces: Vec<u64>,
    grants: Vec<GrantId>,
    subscribed: Vec<usize>,
    registered: Vec<usize>,
    made: usize,
}

impl Mix {
    /// A mix for `keys` on `chain_id`, with enough items for `planned` measured
    /// transactions; returns it and the setup transactions.
    pub fn new(
        keys: Vec<Keypair>,
        chain_id: &str,
        planned: usize,
    ) -> anyhow::Result<(Mix, Vec<Vec<SignedTransaction>>)> {
        let k = keys.len();
        ensure!(k >= 16, "the mixed workload needs at least 16 accounts");
        let subscribes_per_sender = planned.div_ceil(k).div_ceil(20) * 2;
        let items = 2 + subscribes_per_sender.div_ceil(k - 1);
        let mut mix = Mix {
            keys,
            chain_id: chain_id.to_string(),
            items,
            nonces: vec![0; k],
            grants: Vec::with_capacity(k),
            subscribed: vec![0; k],
            registered: vec![0; k],
            made: 0,
        };
        let mut registrations = Vec::new();
        for t in 0..k {
            for j in 0..items {
                let call = mix.register(t, data_id(t, j), format!("{t}/{j}"));
                registrations.push(mix.sign(t, call));
            }
        }
        let mut setup = Vec::new();
        for i in 0..k {
            let hash = data_id((i + 7) % k, 0);
            setup.push(mix.sign(i, Call::SubscribeData { hash }));
            let request = mix.sign(
                i,
                Call::RequestDataWithHash {
                    hash,
                    purpose: "treatment".into(),
                    ttl_secs: secnet_types::limits::MAX_GRANT_TTL_SECS,
                },
            );
            mix.grants.push(request.hash());
            setup.push(request);
        }
        Ok((mix, vec![registrations, setup]))
    }

    fn sign(&mut self, i: usize, call: Call) -> SignedTransaction {
        let tx = self.unsigned(i, call);
        self.sign_as(i, tx)
    }

    /// Account `i`'s next transaction making `call` (its nonce taken), not signed yet.
    #[expect(
        clippy::indexing_slicing,
        reason = "callers pass indices below the number of keys"
    )]
    fn unsigned(&mut self, i: usize, call: Call) -> Transaction {
        let tx = Transaction {
            chain_id: self.chain_id.clone(),
            sender: self.keys[i].account(),
            nonce: self.nonces[i],
            call,
        };
        self.nonces[i] += 1;
        tx
    }

    #[expect(
        clippy::indexing_slicing,
        reason = "callers pass indices below the number of keys"
    )]
    fn sign_as(&self, i: usize, tx: Transaction) -> SignedTransaction {
        tx.sign(&self.keys[i])
    }

    /// The next `count` measured transactions, signed one after another: the reference
    /// [`Mix::next_on_every_core`] is checked against.
    #[cfg(test)]
    fn next(&mut self, count: usize) -> Vec<SignedTransaction> {
        self.next_unsigned(count)
            .into_iter()
            .map(|(i, tx)| self.sign_as(i, tx))
            .collect()
    }

    /// The next `count` measured transactions, signed on every core (in their order).
    pub fn next_on_every_core(&mut self, count: usize) -> Vec<SignedTransaction> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        self.next_on(count, cores)
    }

    /// The next `count` measured transactions, signed on `threads` threads (in their order).
    fn next_on(&mut self, count: usize, threads: usize) -> Vec<SignedTransaction> {
        let mut rest = self.next_unsigned(count);
        let share = rest.len().div_ceil(threads.max(1)).max(1);
        let mut parts = Vec::with_capacity(threads);
        while rest.len() > share {
            let tail = rest.split_off(share);
            parts.push(std::mem::replace(&mut rest, tail));
        }
        parts.push(rest);
        let this = &*self;
        std::thread::scope(|scope| {
            let signers: Vec<_> = parts
                .into_iter()
                .map(|part| {
                    scope.spawn(move || {
                        part.into_iter()
                            .map(|(i, tx)| this.sign_as(i, tx))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            signers
                .into_iter()
                .flat_map(|s| s.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }

    #[expect(clippy::indexing_slicing, reason = "reduced modulo the number of keys")]
    fn register(&self, owner: usize, hash: Hash, label: String) -> Call {
        Call::RegisterData(RegisterData {
            hash,
            description: format!("bench record {label}"),
            address: format!("pdc://bench/{label}"),
            price: 100,
            kind: DataKind::UserData,
            holder: self.keys[(owner + 1) % self.keys.len()].account(),
            holder_share_bps: 2_500,
        })
    }

    /// The next `count` measured transactions, each with its sender's index, not signed
    /// yet. Subscriptions past the planned total would repeat; they are sent as transfers
    /// instead.
    #[expect(
        clippy::indexing_slicing,
        reason = "every index is reduced modulo the number of keys"
    )]
    fn next_unsigned(&mut self, count: usize) -> Vec<(usize, Transaction)> {
        let k = self.keys.len();
        let slots: Vec<&str> = MIX
            .iter()
            .flat_map(|(name, n)| std::iter::repeat_n(*name, *n))
            .collect();
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let n = self.made;
            self.made += 1;
            let s = n % k;
            let round = n / k;
            let transfer = Call::Transfer {
                to: self.keys[(s * 31 + 5 + round) % k].account(),
                amount: 1,
            };
            let call = match slots[round % slots.len()] {
                "register" => {
                    self.registered[s] += 1;
                    let r = self.registered[s];
                    self.register(s, data_id(s, self.items + r), format!("{s}/new/{r}"))
                }
                "subscribe" => {
                    let c = self.subscribed[s];
                    let item = 1 + c / (k - 1);
                    if item >= self.items {
                        transfer
                    } else {
                        self.subscribed[s] += 1;
                        Call::SubscribeData {
                            hash: data_id((s + 1 + c % (k - 1)) % k, item),
                        }
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
                        grant: Some(self.grants[requester]),
                        requester: self.keys[requester].account(),
                        decision: AccessDecision::Delivered,
                        score_ppm: 1_000,
                        at_ms: 0,
                    };
                    Call::RecordAccess {
                        entries: vec![entry; ENTRIES_PER_RECORD],
                    }
                }
                _ => transfer,
            };
            out.push((s, self.unsigned(s, call)));
        }
        out
    }
}

/// The setup and `total` measured transactions of the mix (signed on every core).
pub fn mixed_workload(keys: &[Keypair], chain_id: &str, total: usize) -> anyhow::Result<Workload> {
    let keys = keys.to_vec();
    let (mut mix, setup) = Mix::new(keys, chain_id, total)?;
    Ok(Workload {
        setup,
        measured: mix.next_on_every_core(total),
    })
}

/// A soak's measured transactions, signed before its first minute and kept in an unnamed
/// temporary file (gone when the process ends), one minute after another in the binary
/// batch encoding: the load generator then does not sign while it measures, as `bench
/// ledger` signs before its window, and holds one minute in memory.
struct Spool {
    file: std::fs::File,
    /// Each minute's offset and length in the file.
    minutes: Vec<(u64, usize)>,
}

impl Spool {
    /// Signs `minutes` minutes of `per_minute` transactions from `mix` on every core and
    /// writes them out; stops early (with an error) once `abandoned` is set.
    fn sign(
        mut mix: Mix,
        minutes: u64,
        per_minute: usize,
        abandoned: &AtomicBool,
    ) -> anyhow::Result<Spool> {
        use std::io::Write as _;
        let file = tempfile::tempfile().context("creating the file of signed transactions")?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &file);
        let mut spool = Vec::new();
        let mut offset = 0u64;
        for _ in 0..minutes {
            ensure!(!abandoned.load(Ordering::Relaxed), "signing abandoned");
            let bytes = secnet_api::txs::encode_batch(&mix.next_on_every_core(per_minute));
            out.write_all(&bytes)
                .context("writing the signed transactions")?;
            spool.push((offset, bytes.len()));
            offset += u64::try_from(bytes.len())?;
        }
        out.flush().context("writing the signed transactions")?;
        drop(out);
        Ok(Spool {
            file,
            minutes: spool,
        })
    }

    /// Minute `m`'s transactions (0-based).
    fn minute(&self, m: usize) -> anyhow::Result<Vec<SignedTransaction>> {
        use std::os::unix::fs::FileExt as _;
        let (offset, len) = *self
            .minutes
            .get(m)
            .with_context(|| format!("no minute {m} was signed"))?;
        let mut bytes = vec![0; len];
        self.file
            .read_exact_at(&mut bytes, offset)
            .context("reading the signed transactions")?;
        secnet_api::txs::decode_batch(&bytes, usize::MAX)
            .context("decoding the signed transactions")
    }
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

/// How often a watcher reads a validator's status for the size of its mempool.
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// How long a watcher's request for the next block waits for it at the validator.
const BLOCK_WAIT: Duration = Duration::from_millis(250);

/// Follows validator `v`'s finalized blocks from `from`, marking the transactions sent to it
/// as final, until `stop`, and raises `peak_mempool` to the largest mempool it sees (read
/// every [`STATUS_EVERY`]). Each block is asked for once, the validator answering when it
/// has applied it. Returns the last height seen.
async fn watch(
    api: NodeApi,
    v: usize,
    from: u64,
    tracks: Tracks,
    stop: Arc<AtomicBool>,
    peak_mempool: Arc<AtomicUsize>,
) -> anyhow::Result<u64> {
    let mut next = from;
    let mut status_read: Option<Instant> = None;
    loop {
        if status_read.is_none_or(|at| at.elapsed() >= STATUS_EVERY) {
            status_read = Some(Instant::now());
            let status = api.status().await?;
            peak_mempool.fetch_max(status.mempool, Ordering::Relaxed);
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(next.saturating_sub(1));
        }
        let Some(block) = api.next_block_tx_hashes(next, BLOCK_WAIT).await? else {
            continue;
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

/// Submits the setup, phase after phase, each applied before the next is sent.
async fn prepare(apis: &[NodeApi], phases: Vec<Vec<SignedTransaction>>) -> anyhow::Result<()> {
    for phase in phases {
        prepare_phase(apis, phase).await?;
    }
    Ok(())
}

/// Submits one phase of the setup, the same way a measured run is driven, and requires
/// every one of its transactions to be admitted, final and applied.
async fn prepare_phase(apis: &[NodeApi], setup: Vec<SignedTransaction>) -> anyhow::Result<()> {
    let total = setup.len();
    let run = measure(apis, &[], setup, None, false).await?;
    ensure!(
        run.refused == 0 && run.rejected == 0 && run.lost == 0,
        "of {total} setup transactions, {} were refused at admission, {} rejected and {} not final",
        run.refused,
        run.rejected,
        run.lost
    );
    Ok(())
}

/// One measured run against running validators.
pub async fn measure(
    apis: &[NodeApi],
    pids: &[u32],
    measured: Vec<SignedTransaction>,
    rate: Option<u64>,
    settle: bool,
) -> anyhow::Result<LedgerRun> {
    let tracks: Tracks = Arc::new(Mutex::new(HashMap::with_capacity(measured.len())));
    let stop = Arc::new(AtomicBool::new(false));
    let peak_mempool = Arc::new(AtomicUsize::new(0));
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
            peak_mempool.clone(),
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
    let mut last_heights = Vec::new();
    for w in watchers {
        last_heights.push(w.await??);
    }
    let final_height = if settle { agree(apis).await? } else { None };
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
        same_state_root: settle.then_some(final_height.is_some()),
        final_height,
        blocks: last_heights
            .first()
            .map_or(0, |h| (h + 1).saturating_sub(start_height)),
        peak_mempool: peak_mempool.load(Ordering::Relaxed),
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

/// Transactions per batch when measuring the signature limit: larger than validators' own
/// batches (clients submit 200 at a time here, and relayed ones are checked up to 2,048 at a
/// time), so the limit is the ceiling one core puts on admission.
const LIMIT_BATCH: usize = 5_000;

/// What the limit printed beside each run is.
fn limit_note() -> String {
    format!(
        "batch ed25519 verification on one core with the validators' own function (verify_signatures), in batches of {LIMIT_BATCH} (larger than validators' own, which cost more per signature), measured before the network starts"
    )
}

/// Batch ed25519 verification on one core with the function validators call at admission
/// and when checking proposals, in batches of [`LIMIT_BATCH`]: the ceiling one core puts on
/// admission.
pub fn sig_verify_per_s(workload: &[SignedTransaction]) -> f64 {
    let start = Instant::now();
    let mut valid = 0usize;
    for chunk in workload.chunks(LIMIT_BATCH) {
        valid += verify_signatures(chunk).iter().filter(|ok| **ok).count();
    }
    valid as f64 / start.elapsed().as_secs_f64().max(1e-9)
}

/// A fresh network of validator processes in a temporary directory.
struct Net {
    /// Declared first, so dropped first: the validators stop before their directory goes.
    children: super::testnet::Children,
    dir: tempfile::TempDir,
    apis: Vec<NodeApi>,
    pids: Vec<u32>,
    chain_id: String,
}

impl Net {
    /// Writes a genesis and keys for `validators` and `accounts`, then starts the validators
    /// with `node_args`.
    fn start(validators: usize, accounts: usize, node_args: &[String]) -> anyhow::Result<Net> {
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
            names: Vec::new(),
            authority: None,
        })?;
        secnet_node::tls::trust_file(&dir.path().join("ca.pem"), secnet_node::tls::MAX_PEM_FILE)?;
        let (children, urls) =
            super::testnet::spawn_validators(dir.path(), validators, false, node_args)?;
        let pids = children.0.iter().map(std::process::Child::id).collect();
        let apis = urls
            .iter()
            .map(|u| NodeApi::new(u))
            .collect::<Result<_, _>>()?;
        Ok(Net {
            dir,
            children,
            apis,
            pids,
            chain_id: genesis.chain_id,
        })
    }

    /// The last lines of each validator's log (their directory goes when the network does).
    fn log_tails(&self) -> String {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let mut tails = String::new();
        for i in 0..self.apis.len() {
            let log = self.dir.path().join(format!("node{i}")).join("node.log");
            let mut bytes = Vec::new();
            if let Ok(mut file) = std::fs::File::open(&log) {
                let len = file.metadata().map_or(0, |m| m.len());
                let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
                let _ = file.read_to_end(&mut bytes);
            }
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let last = lines
                .get(lines.len().saturating_sub(20)..)
                .unwrap_or_default();
            tails.push_str(&format!(
                "\n--- validator {i}, the end of its node.log:\n{}",
                last.join("\n")
            ));
        }
        tails
    }

    /// `result`, or its error followed by the end of each validator's log.
    fn explain<T>(&self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        result.map_err(|e| anyhow::anyhow!("{e:#}{}", self.log_tails()))
    }

    /// Unless the validators `agreed` on a state root, says so with the end of each one's
    /// log (the run's result is still printed; the command then fails).
    fn report_disagreement(&self, agreed: bool) {
        if !agreed {
            eprintln!(
                "the validators did not reach the same state root{}",
                self.log_tails()
            );
        }
    }

    /// What each validator's files take on disk now.
    fn disk(&self) -> Vec<DiskMib> {
        self.pids
            .iter()
            .enumerate()
            .map(|(i, pid)| DiskMib::of(&self.dir.path().join(format!("node{i}")), *pid))
            .collect()
    }

    fn keys(&self) -> anyhow::Result<Vec<Keypair>> {
        super::load::read_keys(&self.dir.path().join("accounts"))
    }

    /// Waits until every validator answers.
    async fn ready(&self) -> anyhow::Result<()> {
        let since = Instant::now();
        loop {
            let mut up = 0;
            for a in &self.apis {
                up += usize::from(a.status().await.is_ok());
            }
            if up == self.apis.len() {
                return Ok(());
            }
            ensure!(
                since.elapsed() < Duration::from_secs(60),
                "validators did not start"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// How a run of `bench ledger` ended.
enum Ran {
    /// Measured, with the validators' batch verification rate on one core.
    Measured(LedgerRun, f64),
    /// Stopped by this signal.
    Stopped(&'static str),
}

/// Starts a fresh network, prepares its state, and measures one run at `rate` on `runtime`,
/// unless `stop` says to stop first (the network is then stopped).
fn run_once(
    runtime: &tokio::runtime::Runtime,
    stop: &mut Stop,
    validators: usize,
    accounts: usize,
    txs: usize,
    rate: Option<u64>,
) -> anyhow::Result<Ran> {
    let net = Net::start(validators, accounts, &[])?;
    let (keys, chain_id) = (net.keys()?, net.chain_id.clone());
    let ran = runtime.block_on(async {
        let measured = async {
            let (workload, sig_rate) = tokio::task::spawn_blocking(move || {
                eprintln!("signing {txs} transactions of the mixed workload...");
                let workload = mixed_workload(&keys, &chain_id, txs)?;
                let sig_rate = sig_verify_per_s(&workload.measured);
                anyhow::Ok((workload, sig_rate))
            })
            .await??;
            anyhow::Ok(Ran::Measured(
                drive(&net, workload, txs, rate).await?,
                sig_rate,
            ))
        };
        stop.unless(measured)
            .await
            .unwrap_or_else(|signal| Ok(Ran::Stopped(signal)))
    });
    let ran = net.explain(ran)?;
    if let Ran::Measured(run, _) = &ran {
        net.report_disagreement(run.same_state_root != Some(false));
    }
    drop(net.children);
    Ok(ran)
}

/// Prepares `net`'s state with `workload`'s setup, then measures its `txs` transactions at
/// `rate`.
async fn drive(
    net: &Net,
    workload: Workload,
    txs: usize,
    rate: Option<u64>,
) -> anyhow::Result<LedgerRun> {
    net.ready().await?;
    eprintln!(
        "preparing state ({} transactions, not measured)...",
        workload.setup.iter().map(Vec::len).sum::<usize>()
    );
    prepare(&net.apis, workload.setup).await?;
    eprintln!(
        "driving {txs} transactions at {}...",
        rate.map_or("the fastest accepted rate".to_string(), |r| format!(
            "{r} tx/s"
        ))
    );
    measure(&net.apis, &net.pids, workload.measured, rate, true).await
}

/// The machine's CPU time so far from `/proc/stat`, in clock ticks: all of it, and the
/// idle part (idle and waiting for I/O).
fn machine_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((ticks.iter().sum(), idle))
}

/// Resident memory of a process now, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    super::bench::proc_status_mib(pid, "VmRSS")
}

/// One minute of a soak.
#[derive(Debug, Clone, Serialize)]
struct SoakMinute {
    minute: u64,
    offered_tx_per_s: f64,
    applied_tx_per_s: f64,
    rejected: usize,
    refused: usize,
    lost: usize,
    p50_ms: f64,
    p99_ms: f64,
    rss_mib: Vec<Option<f64>>,
    /// Per validator at the end of the minute: entries in the contract state, and of them
    /// those its state tree holds in memory (the rest are in its spill file).
    state_entries: Vec<Option<u64>>,
    state_entries_in_memory: Vec<Option<u64>>,
    /// Per validator at the end of the minute: its gauges (`GET /metrics`, without the
    /// `secnet_` prefix), which count what it keeps in memory by kind.
    gauges: Vec<Option<std::collections::BTreeMap<String, f64>>>,
    /// Resident memory the validators gained during the minute (their mean), per
    /// transaction applied in it: the state and access log grow with what is applied, so a
    /// steady figure is growth in proportion to the data, a rising one something else.
    rss_bytes_per_applied_tx: Option<f64>,
    cpu_s: Vec<Option<f64>>,
    /// Per validator: MiB written to storage during the minute.
    written_mib: Vec<Option<f64>>,
    /// Per validator at the end of the minute: what its files take on disk.
    disk_mib: Vec<DiskMib>,
    /// Blocks finalized during the minute, and applied transactions per block.
    blocks: u64,
    txs_per_block: f64,
    /// The most transactions any validator's mempool held during the minute.
    peak_mempool: usize,
    /// CPU seconds the load generator itself took (reading the next minute's transactions,
    /// signed before the first, submitting and watching), on the same machine as the
    /// validators.
    load_generator_cpu_s: Option<f64>,
    /// Share of the machine's CPU time nobody used during the minute, percent.
    machine_idle_pct: Option<f64>,
}

/// What `bench soak` asks of each validator beyond the defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct SoakNodes {
    /// `secnet node --state-memory-mib` (`None`: the node's default).
    pub state_memory_mib: Option<usize>,
    /// `secnet node --keep-blocks` (`None`: every block is kept).
    pub keep_blocks: Option<u64>,
    /// `secnet node --archive-heights` (`None`: the node's default).
    pub archive_heights: Option<u64>,
}

impl SoakNodes {
    fn args(self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(mib) = self.state_memory_mib {
            args.extend(["--state-memory-mib".to_string(), mib.to_string()]);
        }
        if let Some(n) = self.keep_blocks {
            args.extend(["--keep-blocks".to_string(), n.to_string()]);
        }
        if let Some(n) = self.archive_heights {
            args.extend(["--archive-heights".to_string(), n.to_string()]);
        }
        args
    }
}

/// `secnet bench soak`: holds `rate` with the mixed workload for `minutes`, one measured
/// minute after another (every minute's transactions are signed before the first, see
/// [`Spool`]; the next one is read while the current one runs), and reports memory and
/// latency over time, stalls, and whether every validator ends on the same state root. The
/// validators run with `nodes`; their directories stay if `keep`.
pub fn soak(
    validators: usize,
    accounts: usize,
    minutes: u64,
    rate: u64,
    nodes: SoakNodes,
    keep: bool,
) -> anyhow::Result<()> {
    ensure!(
        minutes >= 1 && rate >= 1,
        "--minutes and --rate must be positive"
    );
    ensure!(
        nodes.keep_blocks.is_none_or(|n| n >= 64) && nodes.archive_heights.is_none_or(|n| n >= 64),
        "--keep-blocks and --archive-heights must be at least 64, as for `secnet node`"
    );
    let node_args = nodes.args();
    let runtime = super::runtime()?;
    let mut stop = Stop::catch(&runtime)?;
    let net = Net::start(validators, accounts, &node_args)?;
    let per_minute = usize::try_from(rate * 60)?;
    let planned = per_minute * usize::try_from(minutes)?;
    let (keys, chain_id) = (net.keys()?, net.chain_id.clone());
    let soaked = runtime.block_on(async {
        let abandoned = Arc::new(AtomicBool::new(false));
        let prepared = async {
            let (mix, setup) =
                tokio::task::spawn_blocking(move || Mix::new(keys, &chain_id, planned)).await??;
            net.ready().await?;
            eprintln!(
                "preparing state ({} transactions, not measured)...",
                setup.iter().map(Vec::len).sum::<usize>()
            );
            prepare(&net.apis, setup).await?;
            eprintln!("signing {planned} transactions on every core (not measured)...");
            let abandon = abandoned.clone();
            tokio::task::spawn_blocking(move || {
                let signing = Instant::now();
                let spool = Spool::sign(mix, minutes, per_minute, &abandon)?;
                eprintln!(
                    "signed in {:.0} s, {} bytes written",
                    signing.elapsed().as_secs_f64(),
                    spool.minutes.iter().map(|(_, len)| len).sum::<usize>()
                );
                let first = spool.minute(0)?;
                anyhow::Ok((Arc::new(spool), first))
            })
            .await?
        };
        let (spool, mut chunk) = match stop.unless(prepared).await {
            Ok(prepared) => prepared?,
            Err(signal) => {
                abandoned.store(true, Ordering::Relaxed);
                return Ok((Vec::new(), None, Some(signal)));
            }
        };
        eprintln!("holding {rate} tx/s for {minutes} minutes...");
        let mut rows = Vec::new();
        let mut stopped = None;
        let mut written: Vec<Option<f64>> = net.pids.iter().map(|p| written_mib(*p)).collect();
        let mut rss_before: Vec<Option<f64>> = net.pids.iter().map(|p| rss_mib(*p)).collect();
        for minute in 1..=minutes {
            let reader = {
                let spool = spool.clone();
                let next = usize::try_from(minute)?;
                tokio::task::spawn_blocking(move || {
                    (next < spool.minutes.len())
                        .then(|| spool.minute(next))
                        .transpose()
                })
            };
            let own_cpu = cpu_seconds(std::process::id());
            let machine = machine_cpu();
            // Ctrl-C in a terminal stops the validators too: their going away is then not
            // the error (see `Stop::unless`).
            let run = match stop
                .unless(measure(&net.apis, &net.pids, chunk, Some(rate), false))
                .await
            {
                Ok(run) => run?,
                Err(signal) => {
                    stopped = Some(signal);
                    break;
                }
            };
            let rss: Vec<Option<f64>> = net.pids.iter().map(|p| rss_mib(*p)).collect();
            let mut state_entries = Vec::new();
            let mut state_entries_in_memory = Vec::new();
            let mut gauges = Vec::new();
            for api in &net.apis {
                let status = api.status().await.ok();
                state_entries.push(status.as_ref().map(|s| s.state_entries));
                state_entries_in_memory.push(status.map(|s| s.state_entries_in_memory));
                gauges.push(api.metrics().await.ok().map(|g| {
                    g.into_iter()
                        .map(|(name, v)| {
                            let short = name.strip_prefix("secnet_").unwrap_or(&name);
                            (short.to_string(), v)
                        })
                        .collect()
                }));
            }
            let gained: Vec<f64> = rss
                .iter()
                .zip(&rss_before)
                .filter_map(|(now, before)| now.zip(*before).map(|(n, b)| n - b))
                .collect();
            let rss_bytes_per_applied_tx = (!gained.is_empty() && run.applied > 0).then(|| {
                gained.iter().sum::<f64>() / gained.len() as f64 * 1024.0 * 1024.0
                    / run.applied as f64
            });
            rss_before.clone_from(&rss);
            let row = SoakMinute {
                minute,
                offered_tx_per_s: run.offered_tx_per_s,
                applied_tx_per_s: run.applied_tx_per_s,
                rejected: run.rejected,
                refused: run.refused,
                lost: run.lost,
                p50_ms: run.p50_ms,
                p99_ms: run.p99_ms,
                rss_mib: rss,
                state_entries,
                state_entries_in_memory,
                gauges,
                rss_bytes_per_applied_tx,
                cpu_s: run.validators.iter().map(|v| v.cpu_s).collect(),
                written_mib: net
                    .pids
                    .iter()
                    .zip(&mut written)
                    .map(|(p, before)| {
                        let now = written_mib(*p);
                        let delta = now.zip(*before).map(|(n, b)| n - b);
                        *before = now;
                        delta
                    })
                    .collect(),
                disk_mib: net.disk(),
                blocks: run.blocks,
                txs_per_block: run.applied as f64 / run.blocks.max(1) as f64,
                peak_mempool: run.peak_mempool,
                load_generator_cpu_s: cpu_seconds(std::process::id())
                    .zip(own_cpu)
                    .map(|(a, b)| a - b),
                machine_idle_pct: machine_cpu().zip(machine).and_then(|(a, b)| {
                    let total = a.0 - b.0;
                    (total > 0.0).then(|| 100.0 * (a.1 - b.1) / total)
                }),
            };
            let rounded = |v: &[Option<f64>]| v.iter().map(|r| r.map(f64::round)).collect::<Vec<_>>();
            let gauge = |name: &str| {
                row.gauges
                    .iter()
                    .map(|g| g.as_ref().and_then(|g| g.get(name)).copied())
                    .collect::<Vec<_>>()
            };
            eprintln!(
                "minute {minute}: applied {:.0} tx/s of {:.0} offered, p99 {:.0} ms, {} blocks of {:.0} tx, peak mempool {}, rss {:?} MiB, state entries in memory {:?} of {:?}, stored subtrees {:?} and groups {:?}, entries moving {:?}, spill files started {:?}, grants by expiry {:?} ({:?} in memory), page cache {:?} MiB, written {:?} MiB, on disk {:?} MiB, machine idle {:.0}%",
                row.applied_tx_per_s,
                row.offered_tx_per_s,
                row.p99_ms,
                row.blocks,
                row.txs_per_block,
                row.peak_mempool,
                rounded(&row.rss_mib),
                row.state_entries_in_memory,
                row.state_entries,
                gauge("state_stored_subtrees"),
                gauge("state_stored_groups"),
                gauge("state_entries_moving"),
                gauge("state_spill_files_started_total"),
                gauge("state_grants_by_expiry"),
                gauge("state_grants_by_expiry_in_memory"),
                rounded(
                    &gauge("ledger_page_cache_bytes")
                        .into_iter()
                        .map(|b| b.map(|b| b / 1_048_576.0))
                        .collect::<Vec<_>>()
                ),
                rounded(&row.written_mib),
                row.disk_mib
                    .iter()
                    .map(|d| (d.ledger + d.consensus + d.spill.unwrap_or(0.0) + d.other).round())
                    .collect::<Vec<_>>(),
                row.machine_idle_pct.unwrap_or(f64::NAN),
            );
            rows.push(row);
            chunk = tokio::select! {
                biased;
                signal = stop.received() => {
                    stopped = Some(signal);
                    break;
                }
                read = reader => read
                    .context("reading the next minute's transactions")??
                    .unwrap_or_default(),
            };
        }
        let final_height = match stopped {
            Some(_) => None,
            None => tokio::select! {
                biased;
                signal = stop.received() => {
                    stopped = Some(signal);
                    None
                }
                agreed = agree(&net.apis) => agreed?,
            },
        };
        anyhow::Ok((rows, final_height, stopped))
    });
    // Signing or reading that a stop left running is not waited for.
    runtime.shutdown_background();
    let soaked = net.explain(soaked);
    if let Ok((_, final_height, None)) = &soaked {
        net.report_disagreement(final_height.is_some());
    }
    drop(net.children);
    if keep {
        eprintln!(
            "the validators' directories are kept in {}",
            net.dir.keep().display()
        );
    }
    let (rows, final_height, stopped) = soaked?;
    let stalls: Vec<u64> = rows
        .iter()
        .filter(|r| r.lost > 0 || r.applied_tx_per_s < 0.9 * r.offered_tx_per_s)
        .map(|r| r.minute)
        .collect();
    // The soak's goal, minute by minute: the offered rate applied (within 2%, nothing
    // lost), and p99 finality under a second (a minute without latencies, NaN, is not).
    let holds = |r: &SoakMinute| {
        r.lost == 0 && r.offered_tx_per_s > 0.0 && r.applied_tx_per_s >= 0.98 * r.offered_tx_per_s
    };
    let fast = |r: &SoakMinute| r.p99_ms < 1_000.0;
    let held = rows.iter().filter(|r| holds(r)).count();
    let p99_under_1s = rows.iter().filter(|r| fast(r)).count();
    let met = rows.iter().filter(|r| holds(r) && fast(r)).count();
    let growth: Vec<Option<f64>> = match (rows.first(), rows.last()) {
        (Some(a), Some(b)) => a
            .rss_mib
            .iter()
            .zip(&b.rss_mib)
            .map(|(a, b)| a.zip(*b).map(|(a, b)| b - a))
            .collect(),
        _ => Vec::new(),
    };
    super::print_json(&serde_json::json!({
        "bench": "soak",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "validators": validators,
        "rate": rate,
        "state_memory_mib": nodes.state_memory_mib,
        "keep_blocks": nodes.keep_blocks,
        "archive_heights": nodes.archive_heights,
        "minutes": rows,
        "rss_growth_mib_first_to_last_minute": growth,
        "stalled_minutes": stalls,
        "minutes_within_2pct_of_offered": held,
        "minutes_p99_under_1s": p99_under_1s,
        "minutes_meeting_both": met,
        "same_state_root": stopped.is_none().then_some(final_height.is_some()),
        "final_height": final_height,
        "stopped_by": stopped,
    }))?;
    if let Some(signal) = stopped {
        bail!(
            "stopped by {signal} after {} of {minutes} minutes; the roots were not compared",
            rows.len()
        );
    }
    ensure!(
        final_height.is_some(),
        "the validators did not reach the same state root"
    );
    Ok(())
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
    // One for every run of a sweep, so that no signal falls between two runs.
    let runtime = super::runtime()?;
    let mut stop = Stop::catch(&runtime)?;
    let ran = run_all(
        &runtime, &mut stop, validators, accounts, txs, rate, sweep, plot_dir,
    );
    // Signing that a stop left running is not waited for.
    runtime.shutdown_background();
    ran
}

/// [`run`] on `runtime`, stopping when `stop` says.
#[expect(
    clippy::too_many_arguments,
    reason = "run's arguments, and where it runs"
)]
fn run_all(
    runtime: &tokio::runtime::Runtime,
    stop: &mut Stop,
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
        let (run, sig_rate) = match run_once(runtime, stop, validators, accounts, txs, rate)? {
            Ran::Measured(run, sig_rate) => (run, sig_rate),
            Ran::Stopped(signal) => bail!("stopped by {signal}"),
        };
        ensure!(
            run.same_state_root == Some(true),
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
            "limit_note": limit_note(),
        }));
    };
    let mut runs = Vec::new();
    let mut sig_rate = 0.0;
    let mut stopped = None;
    for r in rates {
        // A signal that came while the last network stopped.
        stopped = runtime.block_on(stop.within(Duration::ZERO));
        if stopped.is_some() {
            break;
        }
        let (run, s) = match run_once(runtime, stop, validators, accounts, txs, Some(r))? {
            Ran::Measured(run, s) => (run, s),
            Ran::Stopped(signal) => {
                stopped = Some(signal);
                break;
            }
        };
        sig_rate = s;
        eprintln!(
            "offered {:.0} tx/s: applied {:.0} tx/s, p50 {:.0} ms, p99 {:.0} ms",
            run.offered_tx_per_s, run.applied_tx_per_s, run.p50_ms, run.p99_ms
        );
        runs.push(run);
    }
    if let Some(dir) = plot_dir
        && !runs.is_empty()
    {
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
        "limit_note": limit_note(),
        "plot": plot_dir.map(|d| d.join("ledger-curve.png")),
        "stopped_by": stopped,
    }))?;
    if let Some(signal) = stopped {
        bail!("stopped by {signal} after {} runs", runs.len());
    }
    let split: Vec<String> = runs
        .iter()
        .filter(|r| r.same_state_root != Some(true))
        .map(|r| {
            r.target_tx_per_s
                .map_or("the fastest accepted rate".into(), |t| format!("{t} tx/s"))
        })
        .collect();
    ensure!(
        split.is_empty(),
        "the validators did not reach the same state root in the runs at {}",
        split.join(", ")
    );
    Ok(())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use secnet_contract::{Sandbox, State};
    use secnet_types::Block;

    fn apply(state: &mut State, txs: Vec<SignedTransaction>) -> Vec<bool> {
        let mut applied = Vec::new();
        for chunk in txs.chunks(500) {
            let tip = state.tip();
            let block = Block::new(
                tip.height + 1,
                tip.block_hash,
                tip.timestamp_ms + 1_000,
                chunk.to_vec(),
            );
            let outcome = state.apply_block(&block).unwrap();
            applied.extend(outcome.receipts.iter().map(|r| r.is_applied()));
        }
        applied
    }

    #[test]
    fn every_call_of_the_mix_applies_whatever_order_senders_arrive_in() {
        let keys: Vec<Keypair> = (0..20).map(|i| Keypair::deterministic("mix", i)).collect();
        let copies = keys.to_vec();
        let mut state = Sandbox::new("secnet-mix", copies, 1_000_000_000).state;
        let total = 4_000;
        let mix_keys = keys.to_vec();
        let (mut mix, setup) = Mix::new(mix_keys, "secnet-mix", total).unwrap();
        for phase in setup {
            assert!(apply(&mut state, phase).iter().all(|a| *a));
        }
        let measured = mix.next(total);
        let mut kinds: HashMap<&str, usize> = HashMap::new();
        for tx in &measured {
            let kind = match tx.tx().call {
                Call::RegisterData(_) => "register",
                Call::SubscribeData { .. } => "subscribe",
                Call::RequestDataWithHash { .. } => "request",
                Call::RecordAccess { .. } => "record_access",
                _ => "transfer",
            };
            *kinds.entry(kind).or_default() += 1;
        }
        for (name, share) in MIX {
            let expected = total * share / 20;
            assert_eq!(kinds[name], expected, "{name}: {kinds:?}");
        }
        // Senders interleaved the other way round: each sender's nonces stay in order, as
        // one validator's mempool sees them.
        let mut by_sender: Vec<Vec<SignedTransaction>> = vec![Vec::new(); keys.len()];
        for tx in measured {
            let s = keys
                .iter()
                .position(|k| k.account() == tx.tx().sender)
                .unwrap();
            by_sender[s].push(tx);
        }
        let mut interleaved = Vec::new();
        let longest = by_sender.iter().map(Vec::len).max().unwrap();
        for i in 0..longest {
            for s in by_sender.iter().rev() {
                if let Some(tx) = s.get(i) {
                    interleaved.push(tx.clone());
                }
            }
        }
        let applied = apply(&mut state, interleaved);
        assert_eq!(applied.len(), total);
        assert!(applied.iter().all(|a| *a), "a call of the mix was rejected");
    }

    #[test]
    fn a_spool_gives_back_each_minute_as_signed_in_order_one_at_a_time() {
        let keys: Vec<Keypair> = (0..16)
            .map(|i| Keypair::deterministic("spool", i))
            .collect();
        let (mut one_by_one, _) = Mix::new(keys.clone(), "secnet-spool", 3 * 301).unwrap();
        let (mut spooled, _) = Mix::new(keys, "secnet-spool", 3 * 301).unwrap();
        // Three threads whatever the machine's cores: parts of 101, 101 and 99.
        assert_eq!(spooled.next_on(301, 3), one_by_one.next(301));
        let spool = Spool::sign(spooled, 3, 301, &AtomicBool::new(false)).unwrap();
        for m in 0..3 {
            let read = spool.minute(m).unwrap();
            assert_eq!(read, one_by_one.next(301), "minute {m}");
            assert!(verify_signatures(&read).iter().all(|ok| *ok));
        }
        assert!(spool.minute(3).is_err(), "only three minutes were signed");
        let (mix, _) = Mix::new(
            (0..16)
                .map(|i| Keypair::deterministic("spool", i))
                .collect(),
            "secnet-spool",
            10,
        )
        .unwrap();
        let error = Spool::sign(mix, 2, 5, &AtomicBool::new(true))
            .err()
            .unwrap();
        assert!(error.to_string().contains("abandoned"), "{error}");
    }
}
