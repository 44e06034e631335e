//! Joining a network from a snapshot: a new validator downloads another node's state (to
//! disk, bounded), checks the tip it claims against a certified header before reading the
//! rest, checks every recent block's roots the same way, and installs it as its ledger
//! together with a certified finalization at or below the snapshot's height where its
//! consensus starts (one write, moved into place when complete). The serving node is
//! trusted for nothing but availability.

use crate::VerifyError;
use crate::remote::{ClientError, RemoteNode};
use secnet_certified::CertifiedHeader;
use secnet_ledger::{LEDGER_FILE, Ledger, Snapshot};
use secnet_types::{BlockHeader, Genesis, Hash};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How far below the snapshot's height a block with a certificate of its own is searched
/// for (a block finalized only through a descendant has none).
const FLOOR_SEARCH: u64 = 64;
/// The partial download, removed once the snapshot is installed.
const PARTIAL: &str = "snapshot.partial";

/// A ledger installed from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The snapshot's height.
    pub height: u64,
    /// Its state root, as certified.
    pub state_root: Hash,
    /// The height consensus starts from (none at height 0: genesis).
    pub floor: Option<u64>,
    /// State entries installed.
    pub entries: usize,
    /// Access-log leaves installed.
    pub log_size: u64,
    /// Bytes downloaded.
    pub bytes: u64,
}

/// Downloads the state of the node `remote` speaks to into the new data directory `dir`,
/// checks it against certified roots and installs it; see the module documentation.
/// Refuses a directory that already has a ledger. `max_bytes` bounds the download.
pub async fn join_from_snapshot(
    remote: &RemoteNode,
    genesis: &Genesis,
    dir: &Path,
    max_bytes: u64,
) -> Result<Joined, ClientError> {
    if dir.join(LEDGER_FILE).exists() {
        return Err(ClientError::Refused(format!(
            "{} already holds a ledger; a snapshot is installed only into a new directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| ClientError::Node(format!("cannot create {}: {e}", dir.display())))?;
    let partial = dir.join(PARTIAL);
    let bytes = download(remote, &partial, max_bytes).await?;
    let open = || {
        std::fs::File::open(&partial)
            .map(std::io::BufReader::new)
            .map_err(|e| ClientError::Node(format!("{}: {e}", partial.display())))
    };

    // The tip it claims must be certified before the rest is read into memory.
    let tip = secnet_ledger::read_head(open()?, genesis)
        .map_err(|e| ClientError::Malformed(e.to_string()))?;
    check_certified(remote, genesis, tip.height, tip.state_root, tip.block_hash).await?;

    let snapshot = {
        let reader = open()?;
        let genesis = genesis.clone();
        tokio::task::spawn_blocking(move || Snapshot::read(reader, &genesis, max_bytes))
            .await
            .map_err(|e| ClientError::Node(e.to_string()))?
            .map_err(|e| ClientError::Malformed(e.to_string()))?
    };
    let height = snapshot.height();
    // Every recent block's roots must be the certified ones: the next proposals commit
    // to them, and this validator will check and make those commitments.
    for block in snapshot.recent() {
        let certified = remote.committed_roots(block.height).await?;
        let header_hash = certified.header.as_ref().map(BlockHeader::hash);
        if (certified.state_root, certified.receipts_root, header_hash)
            != (
                block.state_root,
                block.receipts_root,
                Some(block.block_hash),
            )
        {
            return Err(VerifyError::Snapshot {
                height: block.height,
                reason: format!(
                    "its block {} with state root {} and receipts root {} is not the \
                     certified one",
                    block.block_hash, block.state_root, block.receipts_root
                ),
            }
            .into());
        }
    }
    // The tip's block is the last recent one, checked above (at height 0 there is none: the
    // head's check covered the genesis state).
    let (state_root, _) = snapshot.roots();
    let floor = if height == 0 {
        None
    } else {
        Some(certified_floor(remote, height).await?)
    };
    let floor_bytes = floor
        .as_ref()
        .map(|(_, certified)| serde_json::to_vec(certified))
        .transpose()
        .map_err(|e| ClientError::Malformed(e.to_string()))?;

    let entries = snapshot.entry_count();
    let log_size = snapshot.log_size();
    {
        let dir = dir.to_path_buf();
        let genesis = genesis.clone();
        tokio::task::spawn_blocking(move || {
            Ledger::install_snapshot(&dir, &genesis, snapshot, floor_bytes.as_deref())
        })
        .await
        .map_err(|e| ClientError::Node(e.to_string()))?
        .map_err(|e| ClientError::Node(format!("installing the snapshot: {e}")))?;
    }
    let _ = std::fs::remove_file(&partial);
    Ok(Joined {
        height,
        state_root,
        floor: floor.map(|(h, _)| h),
        entries,
        log_size,
        bytes,
    })
}

/// Whether the state root and block hash a snapshot claims for `height` are the ones a
/// certified header commits to.
async fn check_certified(
    remote: &RemoteNode,
    genesis: &Genesis,
    height: u64,
    state_root: Hash,
    block_hash: Hash,
) -> Result<(), ClientError> {
    let certified = remote.committed_roots(height).await?;
    let certified_hash = certified
        .header
        .as_ref()
        .map_or_else(|| genesis.block().hash(), BlockHeader::hash);
    if (certified.state_root, certified_hash) != (state_root, block_hash) {
        return Err(VerifyError::Snapshot {
            height,
            reason: format!(
                "it claims block {block_hash} and state root {state_root}; the certified ones \
                 are {certified_hash} and {}",
                certified.state_root
            ),
        }
        .into());
    }
    Ok(())
}

/// The newest block at or below `height` with a certificate of its own, verified.
async fn certified_floor(
    remote: &RemoteNode,
    height: u64,
) -> Result<(u64, CertifiedHeader), ClientError> {
    for h in (height.saturating_sub(FLOOR_SEARCH).max(1)..=height).rev() {
        let Some(certified) = remote
            .api()
            .get_found::<CertifiedHeader>(&format!("/v1/blocks/{h}/certificate"))
            .await?
        else {
            continue;
        };
        // The certificate itself is checked, not only its header (which the light client
        // may know already, and would then take without looking at the certificate): it
        // becomes the validator's consensus floor, which must verify at every start.
        let header = remote
            .light()
            .committee()
            .verify(&certified.header.0, &certified.certificate.0)
            .map_err(VerifyError::from)?;
        if header.height != h {
            return Err(VerifyError::OtherHeight {
                asked: h,
                got: header.height,
            }
            .into());
        }
        return Ok((h, certified));
    }
    Err(ClientError::Node(format!(
        "no block between heights {} and {height} has a certificate of its own at {}",
        height.saturating_sub(FLOOR_SEARCH).max(1),
        remote.base()
    )))
}

/// How long a join waits, in all, for a node busy streaming another snapshot or asked for
/// them too often by this source, before it gives up: a little longer than a node lets one
/// stream last (30 minutes).
const SNAPSHOT_BUSY_PATIENCE: Duration = Duration::from_secs(31 * 60);
/// Seconds waited before asking again when the node does not say (`Retry-After`), and the
/// most waited at once whatever it says.
const SNAPSHOT_RETRY_DEFAULT_S: u64 = 5;
const SNAPSHOT_RETRY_MAX_S: u64 = 60;

/// Streams `/v1/snapshot` into `path`, at most `max_bytes`; waits while the node is busy
/// ([`SNAPSHOT_BUSY_PATIENCE`]).
async fn download(remote: &RemoteNode, path: &PathBuf, max_bytes: u64) -> Result<u64, ClientError> {
    let url = format!("{}/v1/snapshot", remote.base());
    // No overall timeout: a large state takes long; a stalled transfer does not.
    let http = secnet_tls::http_client()
        .map_err(|e| ClientError::Node(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| ClientError::Node(e.to_string()))?;
    let mut waited = Duration::ZERO;
    let mut resp = loop {
        let resp = http
            .get(&url)
            .send()
            .await
            .map_err(|e| crate::api::unreachable(&url, &e))?;
        // Busy streaming another snapshot, or this source asked too often: wait as told.
        let status = resp.status();
        let busy = status == reqwest::StatusCode::SERVICE_UNAVAILABLE
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        let wait = Duration::from_secs(
            resp.headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(SNAPSHOT_RETRY_DEFAULT_S)
                .clamp(1, SNAPSHOT_RETRY_MAX_S),
        );
        if !busy {
            break resp;
        }
        if waited + wait > SNAPSHOT_BUSY_PATIENCE {
            return Err(ClientError::Node(format!(
                "{url} was busy for {} s ({status}); try again later or join from another node",
                waited.as_secs()
            )));
        }
        drop(resp);
        waited += wait;
        tokio::time::sleep(wait).await;
    };
    if !resp.status().is_success() {
        let status = resp.status();
        let body = crate::read_bounded(resp, 64 * 1024)
            .await
            .unwrap_or_default();
        return Err(crate::api::node_error(
            status,
            &String::from_utf8_lossy(&body),
        ));
    }
    let mut file = std::fs::File::create(path)
        .map_err(|e| ClientError::Node(format!("{}: {e}", path.display())))?;
    let mut written = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ClientError::Node(format!("reading {url}: {e}")))?
    {
        written += chunk.len() as u64;
        if written > max_bytes {
            return Err(ClientError::Malformed(format!(
                "the snapshot exceeds {max_bytes} bytes"
            )));
        }
        file.write_all(&chunk)
            .map_err(|e| ClientError::Node(format!("{}: {e}", path.display())))?;
    }
    file.sync_all()
        .map_err(|e| ClientError::Node(format!("{}: {e}", path.display())))?;
    Ok(written)
}
