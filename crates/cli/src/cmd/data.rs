//! `secnet data`: store, share and fetch data through a node's Private Data Center and the
//! ledger's data contract. Every request that acts as an account is signed with its key file;
//! fetched data is decrypted here and checked against the hash registered on the ledger
//! before it is written anywhere.
#![allow(
    clippy::indexing_slicing,
    reason = "indexing a serde_json::Value yields Null, never panics"
)]

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use secnet_api::audit::InclusionProof;
use secnet_api::pdc::HistoryItem;
use secnet_client::{LogQuery, NodeApi};
use secnet_contract::LogEntry;
use secnet_ledger::LogSubject;
use secnet_node::keyfile;
use secnet_types::{
    AccessDecision, AccountId, Call, DataKind, GrantId, Hash, Keypair, Receipt, RegisterData,
};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Where the node is and who acts.
#[derive(Args, Clone)]
pub struct Conn {
    /// The node's API (for `fetch`, the node that holds the data).
    #[arg(long, default_value = "https://127.0.0.1:7878", global = true)]
    pub node: String,
    /// The network's genesis: what is read from the ledger (grants, listings, the access
    /// log's head) is checked against state its validators certified.
    #[arg(long, default_value = "secnet-devnet/genesis.json", global = true)]
    pub genesis: PathBuf,
    /// The holder account of the node (as its listings name it): signed requests are meant
    /// for that holder alone, and every other node refuses them. Default: the account the
    /// node states at `GET /v1/pdc`.
    #[arg(long, global = true)]
    pub node_account: Option<AccountId>,
}

impl Conn {
    fn query(&self) -> super::query::Remote {
        super::query::Remote {
            node: self.node.clone(),
            genesis: self.genesis.clone(),
            max_age: None,
        }
    }

    /// A verifying client of the node.
    pub fn remote(&self) -> anyhow::Result<secnet_client::RemoteNode> {
        self.query().connect()
    }

    /// The network's genesis, read and validated.
    pub fn genesis(&self) -> anyhow::Result<secnet_types::Genesis> {
        self.query().read_genesis()
    }

    /// The node's API, unverified: submission and the holder's routes.
    pub fn api(&self) -> anyhow::Result<NodeApi> {
        Ok(match self.node_account {
            Some(holder) => NodeApi::for_holder(&self.node, holder)?,
            None => NodeApi::new(&self.node)?,
        })
    }
}

/// Data commands.
#[derive(Subcommand)]
pub enum DataCmd {
    /// Store a file as an object at the node, encrypted, as a new version.
    Put {
        /// The key file of the account that writes (the owner, or a writer the owner permits).
        #[arg(long)]
        key: PathBuf,
        /// The owner (default: the key's account).
        #[arg(long)]
        owner: Option<AccountId>,
        /// The object's path, e.g. `fhir/Condition/c1` or `notes/2026-11`.
        #[arg(long)]
        path: String,
        /// What the payload is (default: guessed from the file name: .json → application/json,
        /// .csv → text/csv, .txt → text/plain; FHIR needs `application/fhir+json`).
        #[arg(long)]
        media_type: Option<String>,
        /// Where the data comes from (a name), recorded in its identifier.
        #[arg(long)]
        source: Option<String>,
        /// The file (`-` for standard input).
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Import a FHIR R4 Bundle: each resource becomes an object owned by the patient.
    ImportFhir {
        /// The key file of the owner (or a permitted writer).
        #[arg(long)]
        key: PathBuf,
        /// The owner (default: the key's account).
        #[arg(long)]
        owner: Option<AccountId>,
        /// The source recorded in the identifiers.
        #[arg(long)]
        source: Option<String>,
        /// The Bundle (JSON).
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// List an object's versions (owner only).
    Show {
        /// The owner's key file.
        #[arg(long)]
        key: PathBuf,
        /// The object's path.
        #[arg(long)]
        path: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Register data on the ledger for sharing (the contract's `RegisterData`).
    Register {
        /// The owner's key file.
        #[arg(long)]
        key: PathBuf,
        /// The stored object to register (its latest version); or give --hash and --address.
        #[arg(long, conflicts_with = "hash")]
        path: Option<String>,
        /// The content hash, for data not stored at this node.
        #[arg(long, requires = "address")]
        hash: Option<Hash>,
        /// Where the data can be asked for (default: the version's identifier).
        #[arg(long)]
        address: Option<String>,
        /// The price a subscriber pays.
        #[arg(long)]
        price: u64,
        /// What the data is, for people looking for it.
        #[arg(long)]
        description: String,
        /// The holder that serves it (default: the node's account).
        #[arg(long)]
        holder: Option<AccountId>,
        /// The holder's share of each payment, in basis points.
        #[arg(long, default_value_t = 2_000)]
        holder_share_bps: u16,
        /// Register a security rule (a detector or rule set) protecting against this
        /// attack category, e.g. `dos`, instead of user data.
        #[arg(long, value_name = "CATEGORY")]
        security_rule: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Withdraw a registration (owner only): no new grants, no more deliveries.
    Withdraw {
        /// The owner's key file.
        #[arg(long)]
        key: PathBuf,
        /// The registered content hash.
        #[arg(long)]
        hash: Hash,
        #[command(flatten)]
        conn: Conn,
    },
    /// Subscribe to registered data, paying its price.
    Subscribe {
        /// The subscriber's key file.
        #[arg(long)]
        key: PathBuf,
        /// The registered content hash.
        #[arg(long)]
        hash: Hash,
        #[command(flatten)]
        conn: Conn,
    },
    /// Ask for time-limited access to subscribed data; prints the grant id.
    Request {
        /// The subscriber's key file.
        #[arg(long)]
        key: PathBuf,
        /// The content hash (request by hash).
        #[arg(long, conflicts_with = "address", required_unless_present = "address")]
        hash: Option<Hash>,
        /// The registered address (request by address).
        #[arg(long)]
        address: Option<String>,
        /// Why the data is needed (owners' policies decide on it).
        #[arg(long, default_value = "treatment")]
        purpose: String,
        /// How long the grant lasts, in seconds.
        #[arg(long, default_value_t = 600)]
        ttl_secs: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Fetch granted data from its holder, decrypt it and check it against the ledger.
    Fetch {
        /// The key file of the account the grant was issued to.
        #[arg(long)]
        key: PathBuf,
        /// The grant id (printed by `request`).
        #[arg(long)]
        grant: Hash,
        /// Where to write the data (`-` for standard output). Written only once verified.
        #[arg(long, default_value = "-")]
        out: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Check a grant's recorded accesses (with inclusion proofs) and, given a file, that
    /// its content is what was registered.
    Verify {
        /// The grant id.
        #[arg(long)]
        grant: Hash,
        /// A file to check against the registered hash.
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show or set the owner's access policies (Cedar).
    Policy {
        /// The owner's key file.
        #[arg(long)]
        key: PathBuf,
        /// A Cedar policy file to install; without it, the current policies are shown.
        #[arg(long)]
        set: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Who accessed my data, when, why and how it was decided, with inclusion proofs.
    History {
        /// The owner's key file.
        #[arg(long)]
        key: PathBuf,
        /// Print FHIR AuditEvent resources (a Bundle) instead.
        #[arg(long)]
        fhir: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete an object: every version's keys and chunks are destroyed.
    Delete {
        /// The key file of the owner (or an account the owner lets control it).
        #[arg(long)]
        key: PathBuf,
        /// The owner (default: the key's account).
        #[arg(long)]
        owner: Option<AccountId>,
        /// The object's path.
        #[arg(long)]
        path: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub fn run(cmd: DataCmd) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        match cmd {
            DataCmd::Put {
                key,
                owner,
                path,
                media_type,
                source,
                file,
                conn,
            } => put(&conn, &key, owner, &path, media_type, source, &file).await,
            DataCmd::ImportFhir {
                key,
                owner,
                source,
                file,
                conn,
            } => import_fhir(&conn, &key, owner, source, &file).await,
            DataCmd::Show { key, path, conn } => {
                let key = keyfile::read_key(&key)?;
                let object = conn
                    .api()?
                    .object_versions(&key, &key.account(), &path)
                    .await?;
                super::print_json(&object)
            }
            DataCmd::Register {
                key,
                path,
                hash,
                address,
                price,
                description,
                holder,
                holder_share_bps,
                security_rule,
                conn,
            } => {
                register(
                    &conn,
                    &key,
                    path.as_deref(),
                    hash,
                    address,
                    holder,
                    RegisterData {
                        hash: Hash([0; 32]),
                        description,
                        address: String::new(),
                        price,
                        kind: match security_rule {
                            None => DataKind::UserData,
                            Some(category) => DataKind::SecurityRule { category },
                        },
                        holder: AccountId([0; 32]),
                        holder_share_bps,
                    },
                )
                .await
            }
            DataCmd::Withdraw { key, hash, conn } => {
                let key = keyfile::read_key(&key)?;
                execute(&conn, &key, Call::WithdrawData { hash }).await
            }
            DataCmd::Subscribe { key, hash, conn } => {
                let key = keyfile::read_key(&key)?;
                execute(&conn, &key, Call::SubscribeData { hash }).await
            }
            DataCmd::Request {
                key,
                hash,
                address,
                purpose,
                ttl_secs,
                conn,
            } => {
                let key = keyfile::read_key(&key)?;
                let call = match (hash, address) {
                    (Some(hash), _) => Call::RequestDataWithHash {
                        hash,
                        purpose,
                        ttl_secs,
                    },
                    (None, Some(address)) => Call::RequestDataWithAddress {
                        address,
                        purpose,
                        ttl_secs,
                    },
                    (None, None) => bail!("say what to request: --hash or --address"),
                };
                execute(&conn, &key, call).await
            }
            DataCmd::Fetch {
                key,
                grant,
                out,
                conn,
            } => match fetch_to(&conn, &key, &grant, &out).await? {
                Some(summary) => super::print_json(&summary),
                None => Ok(()),
            },
            DataCmd::Verify { grant, file, conn } => verify(&conn, &grant, file.as_deref()).await,
            DataCmd::Policy { key, set, conn } => policy(&conn, &key, set.as_deref()).await,
            DataCmd::History {
                key,
                fhir,
                json,
                conn,
            } => history(&conn, &key, fhir, json).await,
            DataCmd::Delete {
                key,
                owner,
                path,
                conn,
            } => {
                let key = keyfile::read_key(&key)?;
                let owner = owner.unwrap_or_else(|| key.account());
                let answer = conn.api()?.delete_object(&key, &owner, &path).await?;
                super::print_json(&answer)
            }
        }
    })
}

fn query_string(query: &[(&str, &str)]) -> String {
    query
        .iter()
        .map(|(name, value)| format!("{name}={}", secnet_client::api::encode_query(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn guess_media_type(file: &Path) -> Option<&'static str> {
    match file.extension()?.to_str()? {
        "json" => Some(secnet_pdc::envelope::JSON),
        "csv" => Some(secnet_pdc::envelope::CSV),
        "txt" | "md" => Some(secnet_pdc::envelope::TEXT),
        _ => None,
    }
}

fn read_input(file: &Path) -> anyhow::Result<Vec<u8>> {
    if file == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        return Ok(buf);
    }
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

async fn put(
    conn: &Conn,
    key: &Path,
    owner: Option<AccountId>,
    path: &str,
    media_type: Option<String>,
    source: Option<String>,
    file: &Path,
) -> anyhow::Result<()> {
    let key = keyfile::read_key(key)?;
    let owner = owner.unwrap_or_else(|| key.account());
    let media_type = media_type
        .or_else(|| guess_media_type(file).map(str::to_string))
        .ok_or_else(|| anyhow!("say what {} is: --media-type", file.display()))?;
    let body = read_input(file)?;
    let mut query = vec![("media_type", media_type.as_str())];
    if let Some(s) = source.as_deref() {
        query.push(("source", s));
    }
    let sent = Hash::digest(&body);
    let answer = conn
        .api()?
        .put_object(&key, &owner, path, &query_string(&query), body, &media_type)
        .await?;
    if answer.hash != sent {
        bail!(
            "verification failed: the node says it stored content hashing to {}, but the file hashes to {sent}",
            answer.hash
        );
    }
    super::print_json(&answer)
}

async fn import_fhir(
    conn: &Conn,
    key: &Path,
    owner: Option<AccountId>,
    source: Option<String>,
    file: &Path,
) -> anyhow::Result<()> {
    let key = keyfile::read_key(key)?;
    let owner = owner.unwrap_or_else(|| key.account());
    let answer = conn
        .api()?
        .import_bundle(&key, &owner, source.as_deref(), read_input(file)?)
        .await?;
    super::print_json(&answer)
}

/// What an executed call left: its transaction, block and receipt, and the grant it issued,
/// if any.
#[derive(Debug, Serialize)]
pub(super) struct Executed {
    /// The transaction.
    pub tx: Hash,
    /// Its block.
    pub height: u64,
    /// Its position in the block.
    pub position: u64,
    /// Its receipt, proven in the block's certified receipts root.
    pub receipt: Receipt,
    /// The grant it issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantId>,
    /// When that grant expires, milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// The certified block that commits to the receipt's block.
    pub certified_block: u64,
    /// Always true: a receipt that does not verify is an error.
    pub verified: bool,
}

/// Executes `call` signed by `key` and returns its receipt (and the grant it issued, if
/// any), proven against state the genesis validators certified: the node's own word about
/// the outcome is not used. Fails, after printing the receipt, if it was refused.
pub(super) async fn execute_call(
    conn: &Conn,
    key: &Keypair,
    call: Call,
) -> anyhow::Result<Executed> {
    let genesis = conn.genesis()?;
    let remote = secnet_client::RemoteNode::new(&conn.node, &genesis)?;
    let (_, tx, _) = conn.api()?.execute(key, &genesis.chain_id, call).await?;
    let verified = remote.transaction(&tx).await?;
    let issued = verified.value.receipt.issued_grant();
    let out = Executed {
        tx,
        height: verified.value.height,
        position: verified.value.position,
        receipt: verified.value.receipt,
        grant: issued.map(|(grant, _)| grant),
        expires_at_ms: issued.map(|(_, expires)| expires),
        certified_block: verified.certified_block,
        verified: true,
    };
    if let Some(rejection) = out.receipt.rejection() {
        super::print_json(&out)?;
        bail!("transaction refused: {rejection}");
    }
    Ok(out)
}

async fn execute(conn: &Conn, key: &Keypair, call: Call) -> anyhow::Result<()> {
    super::print_json(&execute_call(conn, key, call).await?)
}

pub(super) async fn register(
    conn: &Conn,
    key: &Path,
    path: Option<&str>,
    hash: Option<Hash>,
    address: Option<String>,
    holder: Option<AccountId>,
    mut reg: RegisterData,
) -> anyhow::Result<()> {
    let key = keyfile::read_key(key)?;
    let api = conn.api()?;
    let (hash, default_address) = match (path, hash) {
        (Some(path), _) => {
            let object = api.object_versions(&key, &key.account(), path).await?;
            let latest = object
                .versions
                .last()
                .ok_or_else(|| anyhow!("{path} has no stored version"))?;
            (latest.hash, Some(latest.udi.to_string()))
        }
        (None, Some(hash)) => (hash, None),
        (None, None) => bail!("say what to register: --path of a stored object, or --hash"),
    };
    reg.hash = hash;
    reg.address = address
        .or(default_address)
        .ok_or_else(|| anyhow!("say where the data can be asked for: --address"))?;
    reg.holder = match holder {
        Some(h) => h,
        None => api.holder().await?,
    };
    execute(conn, &key, Call::RegisterData(reg)).await
}

/// Fetches the data of `grant_id` from its holder, decrypts it and checks it against the
/// registered hash before writing `out` (`-`: standard output). Returns what was written.
/// The grant and the listing come from certified state (`secnet-client`), not the holder.
pub(super) async fn fetch_to(
    conn: &Conn,
    key: &Path,
    grant_id: &Hash,
    out: &Path,
) -> anyhow::Result<Option<Fetched>> {
    let key = keyfile::read_key(key)?;
    let delivery = conn.remote()?.fetch(&key, grant_id).await?;
    let nothing_written = |e: secnet_client::IntegrityError| {
        anyhow!("{e}; served by {}; nothing was written", conn.node)
    };
    if out == Path::new("-") {
        let plain = delivery.plaintext().map_err(nothing_written)?;
        std::io::stdout().write_all(&plain)?;
        return Ok(None);
    }
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    delivery
        .decrypt_to(tmp.as_file_mut())
        .map_err(nothing_written)?;
    tmp.as_file().sync_all()?;
    tmp.persist(out)?;
    Ok(Some(Fetched {
        hash: delivery.registered,
        size: delivery.size,
        grant: *grant_id,
        verified: true,
        certified_height: delivery.height,
        out: out.to_path_buf(),
        reported_by_holder: HolderReport {
            udi: delivery.udi,
            media_type: delivery.media_type,
            policies: delivery.policies,
            score: delivery.score,
        },
    }))
}

/// What `data fetch` wrote, and what was verified about it.
#[derive(Debug, Serialize)]
pub(super) struct Fetched {
    /// The registered hash the plaintext was checked against.
    pub hash: Hash,
    /// Plaintext bytes.
    pub size: u64,
    /// The grant presented.
    pub grant: GrantId,
    /// The grant and listing were certified, the content hashes to the registered hash.
    pub verified: bool,
    /// The certified height the grant and listing are as of.
    pub certified_height: u64,
    /// Where it was written.
    pub out: PathBuf,
    /// What only the holder vouches for.
    pub reported_by_holder: HolderReport,
}

/// What the holder says of a delivery, unverifiable by the consumer.
#[derive(Debug, Serialize)]
pub(super) struct HolderReport {
    /// The version delivered.
    pub udi: String,
    /// Its media type.
    pub media_type: String,
    /// The policies that allowed it.
    pub policies: Vec<String>,
    /// The detector's score.
    pub score: u32,
}

fn file_hash(path: &Path) -> anyhow::Result<Hash> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
    Ok(Hash(h.finalize().into()))
}

async fn verify(conn: &Conn, grant_id: &Hash, file: Option<&Path>) -> anyhow::Result<()> {
    let remote = conn.remote()?;
    let grant = remote
        .grant(grant_id)
        .await?
        .value
        .ok_or_else(|| anyhow!("no grant {grant_id} on the ledger"))?;
    let data = grant.data;
    // The log head comes from certified state: every proof is checked against it.
    let head = remote.log_head().await?;
    let (size, root) = head.value.map_or((0, Hash::ZERO), |h| (h.size, h.root));
    let api = conn.api()?;
    let entries = api
        .log(&LogQuery {
            grant: Some(*grant_id),
            limit: Some(1_000),
            ..LogQuery::default()
        })
        .await?
        .entries;
    let mut records = Vec::new();
    let mut pending = 0usize;
    for e in entries {
        let index = e.index;
        if index >= size {
            pending += 1;
            continue;
        }
        let entry = proven_in_log(&api, index, size, root).await?;
        if !LogSubject::of(&entry).contains(&LogSubject::Grant(*grant_id)) {
            bail!("verification failed: log entry {index} is not about grant {grant_id}");
        }
        // What is shown is the proven leaf, never the node's rendering of it.
        records.push(json!({
            "index": index,
            "entry": entry,
            "proven": true,
        }));
    }
    let file_check = match file {
        Some(path) => {
            let got = file_hash(path)?;
            Some((got == data, got))
        }
        None => None,
    };
    super::print_json(&json!({
        "grant": grant_id,
        "data": data,
        "log_size": size,
        "log_root": root,
        "certified_height": head.height,
        "verified": true,
        "records": records,
        "pending_past_certified_head": pending,
        "file": file_check.map(|(ok, got)| json!({ "hash": got, "matches_registered": ok })),
    }))?;
    if let Some((false, got)) = file_check {
        bail!("verification failed: the file's hash {got} is not the registered {data}");
    }
    Ok(())
}

async fn policy(conn: &Conn, key: &Path, set: Option<&Path>) -> anyhow::Result<()> {
    let key = keyfile::read_key(key)?;
    let api = conn.api()?;
    match set {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            super::print_json(&api.set_policies(&key, &text).await?)
        }
        None => super::print_json(&api.policies(&key).await?),
    }
}

/// The log entry an inclusion proof proves, once the proof verifies and is for leaf `index`.
fn proven_leaf(proof: &InclusionProof, index: u64) -> anyhow::Result<LogEntry> {
    proof
        .verify()
        .map_err(|err| anyhow!("verification failed: log entry {index}: inclusion proof: {err}"))?;
    if proof.leaf_index != index {
        bail!(
            "verification failed: the proof offered for log entry {index} is of entry {}",
            proof.leaf_index
        );
    }
    LogEntry::from_bytes(&proof.leaf)
        .map_err(|err| anyhow!("verification failed: log entry {index} does not decode: {err}"))
}

/// Access-log leaf `index`, fetched with its inclusion proof in the log of `size` leaves and
/// checked against `root` (a certified log head's): the proven entry.
pub(super) async fn proven_in_log(
    api: &NodeApi,
    index: u64,
    size: u64,
    root: Hash,
) -> anyhow::Result<LogEntry> {
    let proof = api.log_proof(index, size).await?;
    let entry = proven_leaf(&proof, index)?;
    if proof.root_hash != root || proof.tree_size != size {
        bail!(
            "verification failed: log entry {index} is proven against a log other than the \
             certified one (size {size}, root {root})"
        );
    }
    Ok(entry)
}

/// How an entry of the owner's history stands against the certified access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proven {
    /// In the certified log.
    Verified,
    /// Appended after the certified head: proven again once a later head is certified.
    Pending,
}

/// Checks the history's inclusion proofs against the access-log head on certified state:
/// every proof must verify against the node's log root, and that log must extend the
/// certified one (a consistency proof), so each entry below the certified size is in the
/// certified log. A history answered against a log older than the certified head (the chain
/// moved between the two reads) has its entries proven again in the certified log itself.
/// Entries past the certified size are pending.
async fn prove_history(
    conn: &Conn,
    entries: &[HistoryItem],
) -> anyhow::Result<(Vec<Proven>, u64, u64)> {
    let head = conn.remote()?.log_head().await?;
    let (size, root) = head.value.map_or((0, Hash::ZERO), |h| (h.size, h.root));
    let api = conn.api()?;
    let mut extends: Option<(u64, Hash)> = None;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let proof = &e.proof;
        let index = e.index;
        let entry = proven_leaf(proof, index)?;
        if entry != e.entry {
            bail!("verification failed: the node shows log entry {index} other than it is");
        }
        if proof.leaf_index >= size {
            out.push(Proven::Pending);
            continue;
        }
        let node_log = (proof.tree_size, proof.root_hash);
        if node_log == (size, root) {
            out.push(Proven::Verified);
            continue;
        }
        if proof.tree_size < size {
            // The history was answered before the head now certified: prove the entry
            // again in the certified log itself.
            if proven_in_log(&api, index, size, root).await? != e.entry {
                bail!("verification failed: the node shows log entry {index} other than it is");
            }
            out.push(Proven::Verified);
            continue;
        }
        if extends != Some(node_log) {
            let cons = api.log_consistency(size, proof.tree_size).await?;
            cons.verify()
                .map_err(|err| anyhow!("verification failed: consistency: {err}"))?;
            if cons.first_root != root
                || cons.second_root != proof.root_hash
                || cons.first_size != size
                || cons.second_size != proof.tree_size
            {
                bail!(
                    "verification failed: the node's log of {} leaves does not extend the certified one",
                    proof.tree_size
                );
            }
            extends = Some(node_log);
        }
        out.push(Proven::Verified);
    }
    Ok((out, size, head.height))
}

async fn history(conn: &Conn, key: &Path, fhir: bool, as_json: bool) -> anyhow::Result<()> {
    let key = keyfile::read_key(key)?;
    let api = conn.api()?;
    if fhir {
        return super::print_json(&api.history_fhir(&key).await?);
    }
    let answer = api.history(&key).await?;
    if answer.owner != key.account() {
        bail!(
            "verification failed: asked for the history of {}, the node answered {}'s",
            key.account(),
            answer.owner
        );
    }
    // Each entry once, in log order; entries that name their owner must name this one. (An
    // access or grant names the data, not its owner: that the node left none out, and that
    // each is about this owner's data, is its word.)
    let mut last: Option<u64> = None;
    for e in &answer.entries {
        if last.is_some_and(|l| e.index <= l) {
            bail!(
                "verification failed: the history shows log entry {} out of order or twice",
                e.index
            );
        }
        last = Some(e.index);
        if let LogEntry::Emergency { owner, .. } | LogEntry::Payment { owner, .. } = &e.entry
            && *owner != key.account()
        {
            bail!(
                "verification failed: log entry {} is about {owner}'s data, not {}'s",
                e.index,
                key.account()
            );
        }
    }
    let (proven, certified_size, certified_height) = prove_history(conn, &answer.entries).await?;
    // Deliveries counted from entries proven in the certified log (each entry shown was
    // checked equal to its proven leaf), not the node's own count.
    let is_delivery = |e: &HistoryItem| {
        matches!(
            &e.entry,
            LogEntry::Access { entry, .. } if entry.decision == AccessDecision::Delivered
        )
    };
    let delivered_verified = answer
        .entries
        .iter()
        .zip(&proven)
        .filter(|(e, p)| **p == Proven::Verified && is_delivery(e))
        .count();
    if as_json {
        // Only what was proven: the node's renderings (times, AuditEvents) and its own counts
        // are left out, and entries past the certified head are only named.
        let (verified, pending): (Vec<_>, Vec<_>) = answer
            .entries
            .iter()
            .zip(&proven)
            .partition(|(_, p)| **p == Proven::Verified);
        let entries: Vec<serde_json::Value> = verified
            .iter()
            .map(|(e, _)| json!({ "index": e.index, "entry": e.entry, "proof": e.proof }))
            .collect();
        let pending: Vec<u64> = pending.iter().map(|(e, _)| e.index).collect();
        return super::print_json(&json!({
            "owner": key.account(),
            "entries": entries,
            "pending_indices": pending,
            "delivered": delivered_verified,
            "certified_log_size": certified_size,
            "certified_height": certified_height,
            "verified": true,
        }));
    }
    println!(
        "{:>6}  {:<24}  {:<16}  {:<10}  {:<20}  proof",
        "index", "when (UTC)", "who", "what", "purpose / reason"
    );
    for (e, proven) in answer.entries.iter().zip(&proven) {
        let when = e
            .audit_event
            .get("recorded")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("?");
        let (who, what, why) = match &e.entry {
            LogEntry::Grant {
                requester, purpose, ..
            } => (requester.to_hex(), "granted".to_string(), purpose.clone()),
            LogEntry::Access { entry, .. } => match entry.decision {
                AccessDecision::Delivered => {
                    (entry.requester.to_hex(), "delivered".into(), String::new())
                }
                AccessDecision::Refused(reason) => (
                    entry.requester.to_hex(),
                    "refused".into(),
                    secnet_pdc::record::reason_code(reason).to_string(),
                ),
            },
            LogEntry::Emergency {
                requester, reason, ..
            } => (requester.to_hex(), "EMERGENCY".into(), reason.clone()),
            LogEntry::Payment {
                consumer,
                holder_amount,
                owner_amount,
                ..
            } => (
                consumer.to_hex(),
                "paid".into(),
                format!("{owner_amount} to owner, {holder_amount} to holder"),
            ),
        };
        println!(
            "{:>6}  {:<24}  {:<16}  {:<10}  {:<20}  {}",
            e.index,
            when,
            who.get(..16).unwrap_or(&who),
            what,
            why,
            match proven {
                Proven::Verified => "verified",
                Proven::Pending => "pending certification",
            }
        );
    }
    println!(
        "{} entries, {delivered_verified} deliveries verified in the certified log (the node \
         counts {})",
        answer.entries.len(),
        answer.delivered
    );
    Ok(())
}
