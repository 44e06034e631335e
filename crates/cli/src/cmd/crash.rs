//! `secnet crash`: crash consistency under load. A `secnet dev` node takes signed
//! transactions and uploads from several clients and is killed with SIGKILL at a random
//! moment, over and over. After every kill, with the node down, its data directory is opened
//! as the node would open it: the ledger must replay from genesis to the state root it
//! stores, every transaction whose receipt a client saw must be there with that receipt,
//! and every upload the node acknowledged must be there and decrypt to the bytes sent,
//! whatever was killed since. With `--full-disk`, a node on a small tmpfs is filled until
//! writes fail: the failure must say why, and nothing acknowledged is lost.

use anyhow::{Context, anyhow, bail, ensure};
use clap::Args;
use secnet_client::api::NodeApi;
use secnet_client::remote::RemoteNode;
use secnet_contract::LogEntry;
use secnet_ledger::{Ledger, LogSubject};
use secnet_node::datadir::DataDir;
use secnet_pdc::Store;
use secnet_types::{
    AccessDecision, AccessEntry, AccountId, Allocation, Genesis, Hash, Keypair, Outcome, Receipt,
    SignedTransaction, Transaction, tx::Call, tx::DataKind, tx::RegisterData,
};
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Arguments of `secnet crash`.
#[derive(Args)]
pub struct CrashArgs {
    /// SIGKILLs to deliver.
    #[arg(long, default_value_t = 50)]
    pub kills: u32,
    /// Seed of the kill moments and of the workload (a run replays with the same seed).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Longest a node runs before it is killed, in milliseconds; each kill comes at a
    /// random moment up to this (one in ten while the node is still starting).
    #[arg(long, default_value_t = 2_000)]
    pub max_run_ms: u64,
    /// Work in this directory (default: a temporary one, kept if something was lost).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Also fill a node's disk: a small tmpfs mounted for the purpose (needs root).
    #[arg(long)]
    pub full_disk: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Clients sending transactions, each with its own funded account.
const SENDERS: u64 = 3;
/// Clients uploading objects as their owners.
const UPLOADERS: u64 = 2;
/// The record a consumer fetches over and over (it is the first uploader's, registered with
/// this node as holder): every delivery must end up on the ledger or in the holder's
/// journal of accesses not yet recorded.
const SHARED_PATH: &str = "crash/shared-record";
const SHARED_ADDRESS: &str = "pdc://crash/shared-record";
const SHARED_RECORD: &[u8] = b"a record the consumer is allowed to read, fetched again and again";
const PURPOSE: &str = "treatment";
/// Paths each uploader writes (new versions of the same objects accumulate).
const PATHS: u64 = 4;
/// Transactions a sender submits before waiting for their receipts.
const PIPELINE: u64 = 8;
/// The largest upload, bytes.
const MAX_UPLOAD: u64 = 256 * 1024;
/// How long a client waits for a receipt before it counts the transaction as unacknowledged.
const RECEIPT_WAIT: Duration = Duration::from_secs(5);

/// A transaction whose applied receipt a client saw.
#[derive(Debug, Clone)]
struct AckedTx {
    hash: Hash,
    height: u64,
    receipt: Receipt,
}

/// An upload the node acknowledged.
#[derive(Debug, Clone)]
struct AckedUpload {
    owner: AccountId,
    path: String,
    version: u32,
    hash: Hash,
}

/// What the clients saw acknowledged, over every run of the node.
#[derive(Debug, Default)]
struct Acked {
    txs: Vec<AckedTx>,
    uploads: Vec<AckedUpload>,
    /// Deliveries of the shared record the consumer received (and verified).
    fetches: usize,
    /// The consumer's grant for it, once the ledger issued one.
    grant: Option<Hash>,
}

/// One kill and what the check after it found.
#[derive(Debug, Serialize)]
pub struct KillReport {
    /// Which kill (from 1).
    pub kill: u32,
    /// Milliseconds from starting the node to killing it.
    pub ran_ms: u64,
    /// Whether it was killed before its API answered.
    pub during_startup: bool,
    /// The ledger's height after reopening.
    pub height: u64,
    /// Transactions acknowledged while this run of the node was up.
    pub txs_acked: usize,
    /// Uploads acknowledged while it was up.
    pub uploads_acked: usize,
    /// Every acknowledged transaction so far, found with its receipt.
    pub txs_checked: usize,
    /// Every object version in the store, decrypted and checked against its hash.
    pub versions_checked: usize,
    /// Deliveries of the shared record the consumer received while this run was up.
    pub fetches_acked: usize,
    /// Deliveries of it on the ledger or in the holder's journal: at least every one
    /// received so far.
    pub deliveries_recorded: usize,
    /// What was wrong (empty: nothing).
    pub violations: Vec<String>,
}

/// The full-disk check's findings.
#[derive(Debug, Serialize)]
pub struct FullDiskReport {
    /// The tmpfs size, bytes.
    pub disk_bytes: u64,
    /// Uploads acknowledged before the disk filled.
    pub uploads_acked: usize,
    /// Transactions acknowledged before the disk filled.
    pub txs_acked: usize,
    /// What the client was told when an upload was refused.
    pub upload_refusal: String,
    /// What a client sending transactions was told once the ledger could not write (none:
    /// every transaction sent committed).
    pub ledger_refusal: Option<String>,
    /// How the node exited, if it stopped by itself (it must, with an error, once its
    /// ledger cannot write).
    pub node_exit: Option<String>,
    /// Whether the node's log says the device has no space left.
    pub log_says_why: bool,
    /// Whether, after the disk was grown, the node came back with everything acknowledged
    /// and took a new upload.
    pub recovered: bool,
    /// What was wrong (empty: nothing).
    pub violations: Vec<String>,
}

/// The whole campaign.
#[derive(Debug, Serialize)]
pub struct CrashReport {
    /// The seed that replays it.
    pub seed: u64,
    /// Kills delivered.
    pub kills: u32,
    /// Transactions acknowledged in all, all found after every later kill.
    pub txs_acked: usize,
    /// Uploads acknowledged in all.
    pub uploads_acked: usize,
    /// Deliveries the consumer received in all, each on the ledger or in the holder's
    /// journal after every later kill.
    pub fetches_acked: usize,
    /// The ledger's height at the end.
    pub final_height: u64,
    /// Kills after which something was wrong.
    pub failed_kills: usize,
    /// Seconds the campaign took.
    pub elapsed_s: f64,
    /// Each kill.
    pub runs: Vec<KillReport>,
    /// The full-disk check, if asked for.
    pub full_disk: Option<FullDiskReport>,
}

pub fn run(args: CrashArgs) -> anyhow::Result<()> {
    let (dir, temp) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    // Keep the evidence (the data directory and every run's log) of anything that failed.
    let keep = |temp: Option<tempfile::TempDir>| {
        if let Some(temp) = temp {
            eprintln!("kept for inspection: {}", temp.keep().display());
        }
    };
    let report = match campaign(&args, &dir) {
        Ok(report) => report,
        Err(e) => {
            keep(temp);
            return Err(e);
        }
    };
    let disk_failed = report
        .full_disk
        .as_ref()
        .is_some_and(|f| !f.violations.is_empty());
    if args.json {
        super::print_json(&report)?;
    } else {
        print_summary(&report);
    }
    if report.failed_kills > 0 || disk_failed {
        keep(temp);
        bail!(
            "crash consistency violated after {} of {} kills{} (seed {})",
            report.failed_kills,
            report.kills,
            if disk_failed {
                " and on a full disk"
            } else {
                ""
            },
            args.seed
        );
    }
    Ok(())
}

/// The kills, each followed by its check, then the full-disk check if asked for.
fn campaign(args: &CrashArgs, dir: &Path) -> anyhow::Result<CrashReport> {
    let started = Instant::now();
    let mut rng = SplitMix(args.seed);
    let node_dir = dir.join("node");
    let (genesis, node_key) = init(&node_dir)?;
    let runtime = super::runtime()?;
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut runs = Vec::new();
    for kill in 1..=args.kills {
        let (txs_before, uploads_before, fetches_before) = counts(&acked);
        let during_startup = rng.below(10) == 0;
        let ran_ms = if during_startup {
            rng.below(300)
        } else {
            100 + rng.below(args.max_run_ms.max(101) - 100)
        };
        let log = dir.join(format!("node-{kill}.log"));
        let mut node = NodeProcess::start(&node_dir, &log)?;
        let start = Instant::now();
        let deadline = start + Duration::from_millis(ran_ms);
        let killed = if during_startup {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            node.kill()
        } else {
            let url = node.wait_for_api(Duration::from_secs(60))?;
            let clients = spawn_clients(
                &runtime,
                &url,
                &genesis,
                node_key.account(),
                &acked,
                rng.next(),
            );
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            let killed = node.kill();
            // Every client has stopped, and recorded what it saw acknowledged, before the
            // check.
            runtime.block_on(async {
                for client in clients {
                    client.abort();
                    let _ = client.await;
                }
            });
            killed
        };
        let elapsed = start.elapsed().as_millis() as u64;
        let (txs_after, uploads_after, fetches_after) = counts(&acked);
        let snapshot = acked_snapshot(&acked);
        let found = check_node_dir(&node_dir, &genesis, &node_key, &snapshot);
        let mut violations: Vec<String> =
            killed.err().map(|e| format!("{e:#}")).into_iter().collect();
        violations.extend(found.violations);
        let report = KillReport {
            kill,
            ran_ms: elapsed,
            during_startup,
            height: found.height,
            txs_acked: txs_after - txs_before,
            uploads_acked: uploads_after - uploads_before,
            txs_checked: found.txs_checked,
            versions_checked: found.versions_checked,
            fetches_acked: fetches_after - fetches_before,
            deliveries_recorded: found.deliveries_recorded,
            violations,
        };
        if !args.json {
            print_kill(&report);
        }
        runs.push(report);
    }
    let full_disk = if args.full_disk {
        Some(full_disk(dir, &runtime, args.seed)?)
    } else {
        None
    };
    let (txs_acked, uploads_acked, fetches) = counts(&acked);
    let failed_kills = runs.iter().filter(|r| !r.violations.is_empty()).count();
    Ok(CrashReport {
        seed: args.seed,
        kills: args.kills,
        txs_acked,
        uploads_acked,
        fetches_acked: fetches,
        final_height: runs.last().map_or(0, |r| r.height),
        failed_kills,
        elapsed_s: started.elapsed().as_secs_f64(),
        runs,
        full_disk,
    })
}

/// Creates the node's data directory with a genesis funding the clients.
fn init(node_dir: &Path) -> anyhow::Result<(Genesis, Keypair)> {
    let extra: Vec<Allocation> = (0..SENDERS)
        .map(sender)
        .chain((0..UPLOADERS).map(uploader))
        .chain([consumer()])
        .map(|key| Allocation {
            account: key.account(),
            balance: 1_000_000_000,
        })
        .collect();
    Ok(DataDir::new(node_dir).open_dev(&extra)?)
}

fn sender(i: u64) -> Keypair {
    Keypair::deterministic("crash-sender", i)
}

fn uploader(i: u64) -> Keypair {
    Keypair::deterministic("crash-uploader", i)
}

fn consumer() -> Keypair {
    Keypair::deterministic("crash-consumer", 0)
}

fn counts(acked: &Mutex<Acked>) -> (usize, usize, usize) {
    let a = lock(acked);
    (a.txs.len(), a.uploads.len(), a.fetches)
}

fn acked_snapshot(acked: &Mutex<Acked>) -> Acked {
    let a = lock(acked);
    Acked {
        txs: a.txs.clone(),
        uploads: a.uploads.clone(),
        fetches: a.fetches,
        grant: a.grant,
    }
}

/// A `secnet dev` child process, killed with SIGKILL.
struct NodeProcess {
    child: Child,
    api: std::sync::mpsc::Receiver<String>,
    node_dir: std::path::PathBuf,
}

impl NodeProcess {
    fn start(node_dir: &Path, log: &Path) -> anyhow::Result<NodeProcess> {
        let log =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["dev", "--data-dir"])
            .arg(node_dir)
            .args(["--listen", "127.0.0.1:0", "--block-ms", "20"])
            .env("SECNET_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting secnet dev")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, api) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.trim().strip_prefix("api") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        Ok(NodeProcess {
            child,
            api,
            node_dir: node_dir.to_path_buf(),
        })
    }

    fn wait_for_api(&mut self, timeout: Duration) -> anyhow::Result<String> {
        match self.api.recv_timeout(timeout) {
            Ok(url) => {
                // The node made its own authority on its first start.
                let ca = self.node_dir.join(secnet_node::tls::TLS_DIR).join("ca.pem");
                secnet_node::tls::trust_file(&ca, secnet_node::tls::MAX_PEM_FILE)?;
                Ok(url)
            }
            Err(_) => {
                let status = self.child.try_wait()?;
                bail!("the node did not serve its API within {timeout:?} (exit: {status:?})")
            }
        }
    }

    /// Kills the node if it still runs; how it exited if it had stopped by itself.
    fn stop(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(Some(status));
        }
        self.child.kill().context("SIGKILL")?;
        self.child.wait()?;
        Ok(None)
    }

    /// Kills the node with SIGKILL (std's `kill` on Unix); an error if it had already
    /// exited by itself.
    fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the node exited by itself before it was killed ({status})");
        }
        self.child.kill().context("SIGKILL")?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the clients against the node at `url`; they run until aborted or the node goes.
fn spawn_clients(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    genesis: &Genesis,
    holder: AccountId,
    acked: &Arc<Mutex<Acked>>,
    seed: u64,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut handles = Vec::new();
    for i in 0..SENDERS {
        let (url, chain, acked) = (url.to_string(), genesis.chain_id.clone(), acked.clone());
        handles.push(runtime.spawn(async move {
            let _ = send_transactions(&url, &chain, sender(i), &acked, seed ^ i).await;
        }));
    }
    for i in 0..UPLOADERS {
        let (url, chain, acked) = (url.to_string(), genesis.chain_id.clone(), acked.clone());
        handles.push(runtime.spawn(async move {
            let _ = upload(&url, &chain, uploader(i), &acked, seed.rotate_left(17) ^ i).await;
        }));
    }
    let (url, genesis, acked) = (url.to_string(), genesis.clone(), acked.clone());
    handles.push(runtime.spawn(async move {
        let _ = fetch_shared(&url, &genesis, holder, &acked).await;
    }));
    handles
}

/// Submits transfers and registrations in pipelined groups and records every applied
/// receipt it sees.
async fn send_transactions(
    url: &str,
    chain_id: &str,
    key: Keypair,
    acked: &Mutex<Acked>,
    seed: u64,
) -> anyhow::Result<()> {
    let api = NodeApi::new(url)?;
    let mut rng = SplitMix(seed);
    loop {
        let nonce = api.account(&key.account()).await?.nonce;
        let txs: Vec<SignedTransaction> = (0..PIPELINE)
            .map(|k| {
                let call = if rng.below(4) == 0 {
                    Call::RegisterData(RegisterData {
                        hash: Hash::digest_parts(&[&rng.next().to_be_bytes()]),
                        description: "crash-consistency record".into(),
                        address: format!("pdc://crash/{}", rng.next()),
                        price: 1 + rng.below(100),
                        kind: DataKind::UserData,
                        holder: key.account(),
                        holder_share_bps: 1_000,
                    })
                } else {
                    Call::Transfer {
                        to: sender(rng.below(SENDERS)).account(),
                        amount: 1 + rng.below(10),
                    }
                };
                Transaction {
                    chain_id: chain_id.to_string(),
                    sender: key.account(),
                    nonce: nonce + k,
                    call,
                }
                .sign(&key)
            })
            .collect();
        api.submit_batch(&txs).await?;
        for tx in &txs {
            let hash = tx.hash();
            let (height, receipt) = api.wait(&hash, RECEIPT_WAIT).await?;
            if matches!(receipt.outcome, Outcome::Applied { .. }) {
                lock(acked).txs.push(AckedTx {
                    hash,
                    height,
                    receipt,
                });
            }
        }
    }
}

/// Shares one record with a consumer (stored, permitted, registered with this node as
/// holder, subscribed, granted; each step again after a kill until it is on the ledger),
/// then fetches it over and over with the verifying client, counting every delivery.
async fn fetch_shared(
    url: &str,
    genesis: &Genesis,
    holder: AccountId,
    acked: &Mutex<Acked>,
) -> anyhow::Result<()> {
    let api = NodeApi::new(url)?;
    let verifying = RemoteNode::new(url, genesis)?;
    let (owner, reader) = (uploader(0), consumer());
    let chain = genesis.chain_id.as_str();
    let grant = lock(acked).grant;
    let grant = match grant {
        Some(grant) => grant,
        None => {
            publish_encryption_key(&api, chain, &owner).await?;
            publish_encryption_key(&api, chain, &reader).await?;
            let hash = Hash::digest(SHARED_RECORD);
            if verifying.listing_at(SHARED_ADDRESS).await?.value.is_none() {
                api.put_object(
                    &owner,
                    &owner.account(),
                    SHARED_PATH,
                    "media_type=text/plain",
                    SHARED_RECORD.to_vec(),
                    "text/plain",
                )
                .await?;
                let policy = format!(
                    "permit (principal == SecNet::User::\"{}\", action == SecNet::Action::\"read\", \
                     resource in SecNet::Collection::\"crash\") when {{ context.purpose == \"{PURPOSE}\" }};\n",
                    reader.account()
                );
                api.set_policies(&owner, &policy).await?;
                api.execute(
                    &owner,
                    chain,
                    Call::RegisterData(RegisterData {
                        hash,
                        description: "a record shared during the crash campaign".into(),
                        address: SHARED_ADDRESS.into(),
                        price: 1,
                        kind: DataKind::UserData,
                        holder,
                        holder_share_bps: 1_000,
                    }),
                )
                .await?;
            }
            // Each step stands alone: a kill may have come between any two. A subscription
            // that already exists is refused, and that is fine.
            api.execute(&reader, chain, Call::SubscribeData { hash })
                .await?;
            let (_, _, receipt) = api
                .execute(
                    &reader,
                    chain,
                    Call::RequestDataWithAddress {
                        address: SHARED_ADDRESS.into(),
                        purpose: PURPOSE.into(),
                        ttl_secs: 24 * 3600,
                    },
                )
                .await?;
            let (grant, _) = receipt
                .issued_grant()
                .ok_or_else(|| anyhow!("no grant: {:?}", receipt.outcome))?;
            lock(acked).grant = Some(grant);
            grant
        }
    };
    loop {
        let delivery = verifying.fetch(&reader, &grant).await?;
        ensure!(
            delivery.plaintext()? == SHARED_RECORD,
            "the consumer received other content"
        );
        lock(acked).fetches += 1;
    }
}

/// Publishes `key`'s encryption key on the ledger if it is not there yet: the holder seals
/// each object's data key to its owner's.
async fn publish_encryption_key(
    api: &NodeApi,
    chain_id: &str,
    key: &Keypair,
) -> anyhow::Result<()> {
    if api.account(&key.account()).await?.encryption_key.is_none() {
        let (_, _, receipt) = api
            .execute(
                key,
                chain_id,
                Call::SetEncryptionKey {
                    key: key.encryption_key(),
                },
            )
            .await?;
        ensure!(
            matches!(receipt.outcome, Outcome::Applied { .. }),
            "publishing the encryption key was refused: {:?}",
            receipt.outcome
        );
    }
    Ok(())
}

/// Uploads new versions of a few objects and records every version the node acknowledges.
async fn upload(
    url: &str,
    chain_id: &str,
    key: Keypair,
    acked: &Mutex<Acked>,
    seed: u64,
) -> anyhow::Result<()> {
    let api = NodeApi::new(url)?;
    publish_encryption_key(&api, chain_id, &key).await?;
    let mut rng = SplitMix(seed);
    loop {
        let path = format!("crash/object-{}", rng.below(PATHS));
        let len = 1 + rng.below(MAX_UPLOAD) as usize;
        let body = rng.bytes(len);
        let sent = Hash::digest(&body);
        let stored = api
            .put_object(
                &key,
                &key.account(),
                &path,
                "media_type=application/octet-stream&source=crash",
                body,
                "application/octet-stream",
            )
            .await?;
        ensure!(stored.hash == sent, "the node stored other bytes than sent");
        lock(acked).uploads.push(AckedUpload {
            owner: key.account(),
            path,
            version: stored.version,
            hash: sent,
        });
    }
}

/// What opening a stopped node's directory found.
#[derive(Debug, Default)]
struct DirCheck {
    /// The ledger's height.
    height: u64,
    /// Acknowledged transactions found with their receipts.
    txs_checked: usize,
    /// Object versions decrypted and checked against their hashes.
    versions_checked: usize,
    /// Deliveries on the ledger or in the holder's journal.
    deliveries_recorded: usize,
    /// What was wrong (empty: nothing).
    violations: Vec<String>,
}

/// Opens the stopped node's ledger and store as the node would, and checks them against
/// everything acknowledged so far.
fn check_node_dir(
    node_dir: &Path,
    genesis: &Genesis,
    node_key: &Keypair,
    acked: &Acked,
) -> DirCheck {
    let mut found = DirCheck::default();
    match check_ledger(node_dir, genesis, acked) {
        Ok((height, checked, mut problems)) => {
            found.height = height;
            found.txs_checked = checked;
            found.violations.append(&mut problems);
        }
        Err(e) => found.violations.push(format!("ledger: {e:#}")),
    }
    match check_store(node_dir, node_key, acked) {
        Ok((checked, mut problems)) => {
            found.versions_checked = checked;
            found.violations.append(&mut problems);
        }
        Err(e) => found.violations.push(format!("store: {e:#}")),
    }
    match recorded_deliveries(node_dir, genesis, node_key) {
        Ok(recorded) => {
            found.deliveries_recorded = recorded;
            if recorded < acked.fetches {
                found.violations.push(format!(
                    "{} deliveries were received, {recorded} are on the ledger or in the holder's journal",
                    acked.fetches
                ));
            }
        }
        Err(e) => found.violations.push(format!("access records: {e:#}")),
    }
    found
}

/// Deliveries of the shared record to the consumer that are recorded on the ledger or
/// journaled by the holder and not yet recorded. More than were received: deliveries whose
/// answer the kill cut off (and, should the journal fail to note a submission, a record
/// made twice); fewer: a delivery lost.
fn recorded_deliveries(
    node_dir: &Path,
    genesis: &Genesis,
    node_key: &Keypair,
) -> anyhow::Result<usize> {
    let hash = Hash::digest(SHARED_RECORD);
    let reader = consumer().account();
    let delivered = |e: &AccessEntry| {
        e.data == hash && e.requester == reader && e.decision == AccessDecision::Delivered
    };
    let ledger = Ledger::open(node_dir, genesis).context("reopening the ledger")?;
    let indices = ledger.log_indices(LogSubject::Data(hash))?;
    let mut on_ledger = 0;
    for leaf in ledger.log_leaves(&indices)?.into_iter().flatten() {
        if let LogEntry::Access { entry, .. } = LogEntry::from_bytes(&leaf)?
            && delivered(&entry)
        {
            on_ledger += 1;
        }
    }
    // Journaled entries not yet on the ledger: never submitted, or in a transaction that
    // was not applied.
    let store =
        Store::open(&node_dir.join("pdc"), node_key.clone()).context("reopening the store")?;
    let mut journaled = 0;
    for (_, entry, tx) in store.unrecorded()? {
        let applied = match tx {
            Some(tx) => ledger
                .committed_receipt(&tx)?
                .is_some_and(|(_, _, r)| r.is_applied()),
            None => false,
        };
        if delivered(&entry) && !applied {
            journaled += 1;
        }
    }
    Ok(on_ledger + journaled)
}

/// Replays the ledger from genesis and finds every acknowledged transaction in it.
fn check_ledger(
    node_dir: &Path,
    genesis: &Genesis,
    acked: &Acked,
) -> anyhow::Result<(u64, usize, Vec<String>)> {
    let ledger = Ledger::open(node_dir, genesis).context("reopening the ledger")?;
    let replay = ledger.replay_check().context("replaying from genesis")?;
    let mut problems = Vec::new();
    if replay.replayed_root != replay.stored_root {
        problems.push(format!(
            "replaying {} blocks gives state root {}, the ledger holds {}",
            replay.blocks, replay.replayed_root, replay.stored_root
        ));
    }
    for tx in &acked.txs {
        match ledger.committed_receipt(&tx.hash)? {
            Some((height, _, receipt)) if height == tx.height && receipt == tx.receipt => {}
            Some((height, _, _)) => problems.push(format!(
                "transaction {} acknowledged at height {} is at {height} with another receipt",
                tx.hash, tx.height
            )),
            None => problems.push(format!(
                "transaction {} acknowledged at height {} is lost",
                tx.hash, tx.height
            )),
        }
    }
    Ok((ledger.state().tip().height, acked.txs.len(), problems))
}

/// Opens the store (which sweeps writes that never committed), decrypts every version of
/// every object and finds every acknowledged upload.
fn check_store(
    node_dir: &Path,
    node_key: &Keypair,
    acked: &Acked,
) -> anyhow::Result<(usize, Vec<String>)> {
    let store =
        Store::open(&node_dir.join("pdc"), node_key.clone()).context("reopening the store")?;
    let mut problems = Vec::new();
    let mut checked = 0;
    for i in 0..UPLOADERS {
        for object in store.objects_of(&uploader(i).account())? {
            for version in &object.versions {
                checked += 1;
                if let Err(e) = store.verify(&object, version) {
                    problems.push(format!(
                        "{} version {} does not read back: {e}",
                        object.object, version.version
                    ));
                }
            }
        }
    }
    for up in &acked.uploads {
        let found = store
            .object(&up.owner, &up.path)
            .ok()
            .and_then(|o| o.version(up.version).map(|v| v.content_hash));
        if found != Some(up.hash) {
            problems.push(format!(
                "upload {} version {} (acknowledged, hash {}) is {}",
                up.path,
                up.version,
                up.hash,
                found.map_or("lost".to_string(), |h| format!("now {h}"))
            ));
        }
    }
    Ok((checked, problems))
}

/// Fills a node's disk (a tmpfs of a few MiB) with uploads until they fail, then checks the
/// failure says why, grows the disk, and checks the node comes back with everything.
fn full_disk(
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    seed: u64,
) -> anyhow::Result<FullDiskReport> {
    const SIZE: u64 = 24 * 1024 * 1024;
    let mount = dir.join("full-disk");
    std::fs::create_dir_all(&mount)?;
    let mounted = Tmpfs::mount(&mount, SIZE)?;
    let node_dir = mount.join("node");
    let (genesis, node_key) = init(&node_dir)?;
    let log = dir.join("node-full-disk.log");
    let mut node = NodeProcess::start(&node_dir, &log)?;
    let url = node.wait_for_api(Duration::from_secs(60))?;
    let acked = Arc::new(Mutex::new(Acked::default()));
    let (upload_refusal, ledger_refusal) = runtime.block_on(fill(&url, &genesis, &acked, seed))?;
    // Give the node a moment to log whatever it logs about the failed write.
    std::thread::sleep(Duration::from_millis(500));
    let stopped_itself = node.stop()?;
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let log_says_why = says_disk_full(&log_text);
    let mut violations = Vec::new();
    if !says_disk_full(&upload_refusal) {
        violations.push(format!(
            "the refused upload was not told the storage is full: {upload_refusal:?}"
        ));
    }
    if ledger_refusal.is_some() && !log_says_why {
        violations.push("the ledger failed to write, and the node's log does not say why".into());
    }
    if let Some(status) = stopped_itself
        && status.success()
    {
        violations.push("the node stopped on a full disk with a success status".into());
    }
    let snapshot = acked_snapshot(&acked);
    let (txs_acked, uploads_acked) = (snapshot.txs.len(), snapshot.uploads.len());
    // Grow the disk, as an operator would, and reopen.
    mounted.resize(SIZE * 4)?;
    violations.extend(check_node_dir(&node_dir, &genesis, &node_key, &snapshot).violations);
    let mut node = NodeProcess::start(&node_dir, &dir.join("node-full-disk-grown.log"))?;
    let url = node.wait_for_api(Duration::from_secs(60))?;
    let recovered = runtime.block_on(async {
        let api = NodeApi::new(&url)?;
        let key = uploader(0);
        api.put_object(
            &key,
            &key.account(),
            "crash/after-the-disk-grew",
            "media_type=text/plain",
            b"written once the disk had room again".to_vec(),
            "text/plain",
        )
        .await?;
        transfer(&api, &genesis, &sender(0), &acked).await
    });
    if let Err(e) = &recovered {
        violations.push(format!(
            "after the disk grew, an upload or a transaction failed: {e:#}"
        ));
    }
    node.kill()?;
    drop(mounted);
    Ok(FullDiskReport {
        disk_bytes: SIZE,
        uploads_acked,
        txs_acked,
        upload_refusal,
        ledger_refusal,
        node_exit: stopped_itself.map(|s| s.to_string()),
        log_says_why,
        recovered: recovered.is_ok() && violations.is_empty(),
        violations,
    })
}

/// Uploads (and sends a transaction after each) until an upload is refused, then sends
/// transactions alone until one fails or [`FILL_TXS`] have committed; what the client was
/// told each time.
async fn fill(
    url: &str,
    genesis: &Genesis,
    acked: &Mutex<Acked>,
    seed: u64,
) -> anyhow::Result<(String, Option<String>)> {
    let api = NodeApi::new(url)?;
    let key = uploader(0);
    publish_encryption_key(&api, &genesis.chain_id, &key).await?;
    let payer = sender(0);
    let mut rng = SplitMix(seed);
    let mut k = 0u64;
    let upload_refusal = loop {
        k += 1;
        let body = rng.bytes(MAX_UPLOAD as usize);
        let sent = Hash::digest(&body);
        let path = format!("crash/fill-{k}");
        match api
            .put_object(
                &key,
                &key.account(),
                &path,
                "media_type=application/octet-stream",
                body,
                "application/octet-stream",
            )
            .await
        {
            Ok(stored) => lock(acked).uploads.push(AckedUpload {
                owner: key.account(),
                path,
                version: stored.version,
                hash: sent,
            }),
            Err(e) => break e.to_string(),
        }
        if let Err(e) = transfer(&api, genesis, &payer, acked).await {
            return Ok((format!("(uploads still accepted) {e}"), Some(e.to_string())));
        }
    };
    for _ in 0..FILL_TXS {
        if let Err(e) = transfer(&api, genesis, &payer, acked).await {
            return Ok((upload_refusal, Some(e.to_string())));
        }
    }
    Ok((upload_refusal, None))
}

/// Transactions sent to a full disk after uploads are refused, at most.
const FILL_TXS: usize = 1_500;

/// One transfer from `payer`, recorded if its applied receipt is seen.
async fn transfer(
    api: &NodeApi,
    genesis: &Genesis,
    payer: &Keypair,
    acked: &Mutex<Acked>,
) -> anyhow::Result<()> {
    let nonce = api.account(&payer.account()).await?.nonce;
    let tx = Transaction {
        chain_id: genesis.chain_id.clone(),
        sender: payer.account(),
        nonce,
        call: Call::Transfer {
            to: sender(1).account(),
            amount: 1,
        },
    }
    .sign(payer);
    let hash = api.submit(&tx).await?;
    let (height, receipt) = api.wait(&hash, RECEIPT_WAIT).await?;
    lock(acked).txs.push(AckedTx {
        hash,
        height,
        receipt,
    });
    Ok(())
}

fn lock(acked: &Mutex<Acked>) -> std::sync::MutexGuard<'_, Acked> {
    acked.lock().unwrap_or_else(|p| p.into_inner())
}

fn says_disk_full(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("no space left") || t.contains("disk is full") || t.contains("storage is full")
}

/// A tmpfs mounted for the full-disk check, unmounted on drop.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, bytes: u64) -> anyhow::Result<Tmpfs> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .status()
            .context("running mount")?;
        ensure!(
            status.success(),
            "mounting a {bytes}-byte tmpfs at {} failed ({status}): the full-disk check needs root",
            at.display()
        );
        Ok(Tmpfs {
            at: at.to_path_buf(),
        })
    }

    fn resize(&self, bytes: u64) -> anyhow::Result<()> {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.at)
            .status()?;
        ensure!(status.success(), "growing the tmpfs failed ({status})");
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}

/// SplitMix64: the campaign's only source of randomness, so a seed replays it.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough below `n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

fn print_kill(r: &KillReport) {
    println!(
        "kill {:>3} after {:>5} ms{}: height {:>5}, acknowledged {:>4} txs {:>3} uploads \
         {:>3} deliveries; checked {} txs, {} versions, {} deliveries recorded: {}",
        r.kill,
        r.ran_ms,
        if r.during_startup { " (starting)" } else { "" },
        r.height,
        r.txs_acked,
        r.uploads_acked,
        r.fetches_acked,
        r.txs_checked,
        r.versions_checked,
        r.deliveries_recorded,
        if r.violations.is_empty() {
            "consistent".to_string()
        } else {
            r.violations.join("; ")
        }
    );
}

fn print_summary(r: &CrashReport) {
    println!(
        "{} kills (seed {}) in {:.0} s: {} transactions, {} uploads and {} deliveries \
         acknowledged; {} kills found something wrong",
        r.kills, r.seed, r.elapsed_s, r.txs_acked, r.uploads_acked, r.fetches_acked, r.failed_kills
    );
    if let Some(d) = &r.full_disk {
        println!(
            "full disk ({} MiB): {} uploads and {} transactions acknowledged before it filled; \
             the refused upload was told {:?}; transactions then: {}; the node's log says why: \
             {}; recovered after growing: {}",
            d.disk_bytes / (1024 * 1024),
            d.uploads_acked,
            d.txs_acked,
            d.upload_refusal,
            d.ledger_refusal
                .as_deref()
                .map_or("all committed".to_string(), |r| format!("refused: {r:?}")),
            d.log_says_why,
            d.recovered
        );
        for v in &d.violations {
            println!("  {v}");
        }
    }
}
