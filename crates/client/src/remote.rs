//! The light client over a node's HTTP API: every answer is checked before it is returned.

use crate::api::{NodeApi, node_error};
use crate::light::{LightClient, VerifiedState, VerifyError};
use secnet_api::chain::HeaderAnswer;
use secnet_certified::{CertificateError, CertifiedHeader, CertifiedState, ReceiptProof};
use secnet_contract::entries::{AccessGrant, Account, Listing, LogHead, Subscription};
use secnet_contract::{StateKey, StateValue};
use secnet_types::{AccountId, BlockHeader, Genesis, GrantId, Hash, Receipt, Rejection};
use std::time::{Duration, Instant};

/// How long to wait for a node that has no certified state yet.
const CERTIFIED_WAIT: Duration = Duration::from_secs(15);

/// Why a remote query failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The answer does not verify: the node (or something between) lied or is broken.
    #[error("verification failed: {0}")]
    Verification(#[from] VerifyError),
    /// The node could not be reached or answered with an error.
    #[error("{0}")]
    Node(String),
    /// The answer is not the shape the API defines.
    #[error("the node's answer is malformed: {0}")]
    Malformed(String),
    /// What the ledger or the holder refuses (no grant, not yours, withdrawn, denied).
    #[error("{0}")]
    Refused(String),
}

impl From<CertificateError> for ClientError {
    fn from(e: CertificateError) -> Self {
        ClientError::Verification(VerifyError::Certificate(e))
    }
}

/// Why an answer could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// More bytes than allowed.
    TooLarge,
    /// The transfer failed.
    Http(reqwest::Error),
}

/// Reads an answer's body, stopping as soon as it exceeds `max` bytes (whatever its
/// `Content-Length` claims, and for chunked answers too).
pub async fn read_bounded(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, ReadError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Http)? {
        if body.len() + chunk.len() > max {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A value checked against certified state, with the height it is as of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T> {
    /// The value.
    pub value: T,
    /// The height it is as of.
    pub height: u64,
    /// That height's certified state root.
    pub state_root: Hash,
    /// The certified block committing to that root.
    pub certified_block: u64,
    /// That block's timestamp (its proposer's clock, milliseconds since the Unix epoch):
    /// how fresh the answer is.
    pub certified_at_ms: u64,
}

impl<T> Verified<T> {
    fn from_state(state: &VerifiedState, value: T) -> Verified<T> {
        Verified {
            value,
            height: state.height,
            state_root: state.state_root,
            certified_block: state.certified_block,
            certified_at_ms: state.certified_at_ms,
        }
    }
}

/// Most state keys one query asks for (the node's bound).
pub const MAX_KEYS: usize = 64;

/// How many headers past a height are walked for a certified one that covers it.
const WALK: u64 = 64;

/// The roots of one height, as a certified header (or one linked to it) commits to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedRoots {
    /// The height.
    pub height: u64,
    /// The state root after it.
    pub state_root: Hash,
    /// Its receipts root.
    pub receipts_root: Hash,
    /// The header of the block at `height` (linked to the certified one), if `height` > 0.
    pub header: Option<BlockHeader>,
    /// The certified block the walk ended at.
    pub certified_block: u64,
    /// Its timestamp (milliseconds since the Unix epoch).
    pub certified_at_ms: u64,
}

/// A transaction's receipt and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReceipt {
    /// Its block.
    pub height: u64,
    /// Its position in the block.
    pub position: u64,
    /// The receipt.
    pub receipt: Receipt,
}

/// Listings proven in certified state, in the order asked for (`None`: not registered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenListings {
    /// One per hash asked for.
    pub listings: Vec<Option<Listing>>,
    /// The oldest certified height they are as of (`None` if none was asked for).
    pub height: Option<u64>,
}

/// The access log's head, cosigned by a quorum of validators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The log's size and root.
    pub checkpoint: secnet_certified::Checkpoint,
    /// The genesis validators whose cosignature verified, newest cosignature first.
    pub cosigners: Vec<AccountId>,
    /// When the quorum had cosigned (the quorum-th newest cosignature's time, seconds since
    /// the Unix epoch).
    pub cosigned_at: u64,
    /// The C2SP note.
    pub note: String,
}

/// A node, asked through the light client.
#[derive(Debug)]
pub struct RemoteNode {
    api: NodeApi,
    light: LightClient,
    max_age: Option<Duration>,
    /// The largest object `fetch` downloads.
    pub(crate) max_fetch: usize,
    /// The largest access-log checkpoint verified so far.
    checkpoint_floor: std::sync::atomic::AtomicU64,
}

impl RemoteNode {
    /// A client of the node at `base` (e.g. `https://127.0.0.1:7878`) on the network
    /// `genesis` defines.
    pub fn new(base: &str, genesis: &Genesis) -> Result<RemoteNode, ClientError> {
        Ok(RemoteNode {
            api: NodeApi::new(base)?,
            light: LightClient::new(genesis)?,
            max_age: None,
            max_fetch: crate::pdc::MAX_FETCH_BYTES,
            checkpoint_floor: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A client of the node at `base`, known (from certified state or the genesis) to hold
    /// data as `holder`: its signed requests are meant for that holder alone.
    pub fn for_holder(
        base: &str,
        genesis: &Genesis,
        holder: AccountId,
    ) -> Result<RemoteNode, ClientError> {
        Ok(RemoteNode {
            api: NodeApi::for_holder(base, holder)?,
            ..RemoteNode::new(base, genesis)?
        })
    }

    /// Refuses, before downloading, an object larger than `max_bytes` (plaintext).
    pub fn with_max_fetch(mut self, max_bytes: usize) -> RemoteNode {
        self.max_fetch = max_bytes.min(crate::pdc::MAX_FETCH_BYTES);
        self
    }

    /// Refuses certified state whose certifying block is older than `max_age` by this
    /// machine's clock. A node can otherwise answer a fresh client with state that was
    /// certified once and is true of its height, but old; on a chain that rests when idle the
    /// newest certified block can be old and still current, so this is the caller's choice.
    pub fn with_max_age(mut self, max_age: Duration) -> RemoteNode {
        self.max_age = Some(max_age);
        self
    }

    /// Refuses what was certified (or cosigned) at `at_ms` if that is older than the
    /// caller's `max_age`.
    fn check_age(&self, at_ms: u64) -> Result<(), ClientError> {
        let Some(max_age) = self.max_age else {
            return Ok(());
        };
        let now = crate::api::now_ms();
        let max_age_ms = u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(at_ms) > max_age_ms {
            return Err(VerifyError::TooOld {
                certified_at_ms: at_ms,
                now_ms: now,
                max_age_ms,
            }
            .into());
        }
        Ok(())
    }

    /// The light client doing the checks.
    pub fn light(&self) -> &LightClient {
        &self.light
    }

    /// The node's API, unverified: submission, the holder's routes, the node's own report.
    pub fn api(&self) -> &NodeApi {
        &self.api
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        self.api.base()
    }

    /// The state entries under `keys`, verified, as of the newest certified height the node
    /// offers (waiting a little for a node that has none yet).
    ///
    /// Answers never go back in time: each verified answer raises the height later answers
    /// must reach, so a node cannot roll this client back from one question to the next.
    pub async fn state(&self, keys: &[StateKey]) -> Result<VerifiedState, ClientError> {
        let list: Vec<String> = keys.iter().map(|k| hex::encode(k.to_bytes())).collect();
        let path = format!("/v1/state?keys={}", list.join(","));
        let started = Instant::now();
        loop {
            match self.api.get::<CertifiedState>(&path).await? {
                Ok(answer) => {
                    let verified = self.light.verify_state(&answer, keys)?;
                    self.check_age(verified.certified_at_ms)?;
                    self.light.require_at_least(verified.height);
                    return Ok(verified);
                }
                Err((status, _))
                    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                        && started.elapsed() < CERTIFIED_WAIT =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err((status, detail)) => return Err(node_error(status, &detail)),
            }
        }
    }

    async fn one(&self, key: StateKey) -> Result<(VerifiedState, Option<StateValue>), ClientError> {
        let state = self.state(std::slice::from_ref(&key)).await?;
        let value = state.get(&key).cloned();
        Ok((state, value))
    }

    /// An account (absent accounts have zero balance and nonce).
    pub async fn account(&self, id: &AccountId) -> Result<Verified<Account>, ClientError> {
        let (state, value) = self.one(StateKey::Account(*id)).await?;
        let account = match value {
            Some(StateValue::Account(a)) => a,
            _ => Account::default(),
        };
        Ok(Verified::from_state(&state, account))
    }

    /// The listing registered with `hash`, if any.
    pub async fn listing(&self, hash: &Hash) -> Result<Verified<Option<Listing>>, ClientError> {
        let (state, value) = self.one(StateKey::Listing(*hash)).await?;
        let listing = match value {
            Some(StateValue::Listing(l)) => Some(l),
            _ => None,
        };
        Ok(Verified::from_state(&state, listing))
    }

    /// The listings registered with `hashes` (each `None` if not registered), verified in
    /// batches of [`MAX_KEYS`]. A node answering a listing query can leave listings out;
    /// it cannot invent or alter one that this proves.
    pub async fn listings(&self, hashes: &[Hash]) -> Result<ProvenListings, ClientError> {
        let mut out = ProvenListings {
            listings: Vec::with_capacity(hashes.len()),
            height: None,
        };
        for chunk in hashes.chunks(MAX_KEYS) {
            let keys: Vec<StateKey> = chunk.iter().map(|h| StateKey::Listing(*h)).collect();
            let state = self.state(&keys).await?;
            // Later chunks are never older (`require_at_least`): the first height is the
            // oldest the answer is as of.
            out.height.get_or_insert(state.height);
            for key in &keys {
                out.listings.push(match state.get(key) {
                    Some(StateValue::Listing(l)) => Some(l.clone()),
                    _ => None,
                });
            }
        }
        Ok(out)
    }

    /// The listing registered at `address`, if any (two proofs: address → hash → listing).
    pub async fn listing_at(
        &self,
        address: &str,
    ) -> Result<Verified<Option<Listing>>, ClientError> {
        let (state, value) = self.one(StateKey::Address(address.to_string())).await?;
        match value {
            Some(StateValue::Address(hash)) => self.listing(&hash).await,
            _ => Ok(Verified::from_state(&state, None)),
        }
    }

    /// `account`'s subscription to the data registered with `hash`, if any.
    pub async fn subscription(
        &self,
        hash: &Hash,
        account: &AccountId,
    ) -> Result<Verified<Option<Subscription>>, ClientError> {
        let (state, value) = self.one(StateKey::Subscription(*hash, *account)).await?;
        let sub = match value {
            Some(StateValue::Subscription(s)) => Some(s),
            _ => None,
        };
        Ok(Verified::from_state(&state, sub))
    }

    /// An access grant, if any.
    pub async fn grant(&self, id: &GrantId) -> Result<Verified<Option<AccessGrant>>, ClientError> {
        let (state, value) = self.one(StateKey::Grant(*id)).await?;
        let grant = match value {
            Some(StateValue::Grant(g)) => Some(g),
            _ => None,
        };
        Ok(Verified::from_state(&state, grant))
    }

    /// The access log's size and root, if it has entries.
    pub async fn log_head(&self) -> Result<Verified<Option<LogHead>>, ClientError> {
        let (state, value) = self.one(StateKey::LogHead).await?;
        let head = match value {
            Some(StateValue::LogHead(h)) => Some(h),
            _ => None,
        };
        Ok(Verified::from_state(&state, head))
    }

    /// The access log's head as a quorum of validators cosigned it, verified from the note
    /// alone (the answer's other fields are ignored). Returns the checkpoint, its cosigners
    /// and the note, which any C2SP verifier can check again.
    pub async fn checkpoint(&self) -> Result<VerifiedCheckpoint, ClientError> {
        let answer: secnet_certified::CosignedCheckpointAnswer =
            self.api.get_ok("/v1/checkpoint").await?;
        let (checkpoint, mut cosignatures) = self.light.verify_checkpoint(&answer.note)?;
        let floor = self
            .checkpoint_floor
            .load(std::sync::atomic::Ordering::Relaxed);
        if checkpoint.tree_size < floor {
            return Err(VerifyError::OlderCheckpoint {
                size: checkpoint.tree_size,
                floor,
            }
            .into());
        }
        // As fresh as the quorum's oldest member: the quorum-th newest cosignature.
        cosignatures.sort_by_key(|c| std::cmp::Reverse(c.time));
        let quorum = self.light.committee().quorum();
        let quorum_time = cosignatures
            .get(quorum.saturating_sub(1))
            .map_or(0, |c| c.time);
        self.check_age(quorum_time.saturating_mul(1_000))?;
        self.checkpoint_floor
            .fetch_max(checkpoint.tree_size, std::sync::atomic::Ordering::Relaxed);
        Ok(VerifiedCheckpoint {
            checkpoint,
            cosigners: cosignatures.iter().map(|c| c.signer).collect(),
            cosigned_at: quorum_time,
            note: answer.note,
        })
    }

    /// A block header as the node states it (not verified: see [`Self::committed_roots`]).
    async fn header(&self, height: u64) -> Result<Option<BlockHeader>, ClientError> {
        let Some(answer) = self
            .api
            .get_found::<HeaderAnswer>(&format!("/v1/headers/{height}"))
            .await?
        else {
            return Ok(None);
        };
        let header = BlockHeader::decode_bytes(&answer.header.0)
            .map_err(|e| ClientError::Malformed(format!("header {height}: {e}")))?;
        if header.height != height {
            return Err(VerifyError::OtherHeight {
                asked: height,
                got: header.height,
            }
            .into());
        }
        Ok(Some(header))
    }

    /// The state root and receipts root of `height`, as committed by a header that is, or
    /// links by parent hashes to, a certified one. Waits (up to 15 s) for a height just
    /// executed to be committed and certified.
    pub async fn committed_roots(&self, height: u64) -> Result<CommittedRoots, ClientError> {
        let started = Instant::now();
        loop {
            if let Some(found) = self.try_committed_roots(height).await? {
                return Ok(found);
            }
            if started.elapsed() > CERTIFIED_WAIT {
                return Err(VerifyError::Uncertified { height }.into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_committed_roots(
        &self,
        height: u64,
    ) -> Result<Option<CommittedRoots>, ClientError> {
        let anchor = if height == 0 {
            None
        } else {
            match self.header(height).await? {
                Some(h) => Some(h),
                None => return Ok(None),
            }
        };
        let mut last: Option<BlockHeader> = anchor.clone();
        let mut roots = None;
        for k in height.saturating_add(1)..height.saturating_add(1 + WALK) {
            let Some(next) = self.header(k).await? else {
                return Ok(None);
            };
            if let Some(prev) = &last
                && next.parent != prev.hash()
            {
                return Err(VerifyError::BrokenChain { height: k }.into());
            }
            if roots.is_none() {
                roots = next
                    .state
                    .root_at(height)
                    .zip(next.state.receipts_root_at(height));
            }
            last = Some(next);
            let Some((state_root, receipts_root)) = roots else {
                continue;
            };
            let certified = match self.certified_header(k).await {
                Ok(certified) => certified,
                // A certificate that does not verify is a lie, not a gap.
                Err(ClientError::Verification(e)) => return Err(e.into()),
                Err(_) => continue,
            };
            {
                if Some(&certified) != last.as_ref() {
                    return Err(VerifyError::BrokenChain { height: k }.into());
                }
                return Ok(Some(CommittedRoots {
                    height,
                    state_root,
                    receipts_root,
                    header: anchor,
                    certified_block: k,
                    certified_at_ms: certified.timestamp_ms,
                }));
            }
        }
        Ok(None)
    }

    /// A committed transaction's receipt, verified: in its block's receipts root, which a
    /// certified header commits to.
    pub async fn transaction(&self, hash: &Hash) -> Result<Verified<VerifiedReceipt>, ClientError> {
        let proof: ReceiptProof = self.api.get_ok(&format!("/v1/tx/{hash}/proof")).await?;
        let roots = self.committed_roots(proof.height).await?;
        // The leaf count is the block's transaction count, from its linked header: with it
        // fixed, a path proves one position only.
        let tx_count = roots.header.as_ref().map(|h| u64::from(h.tx_count));
        if tx_count != Some(proof.count) {
            return Err(VerifyError::ReceiptProof {
                tx: *hash,
                height: proof.height,
                reason: format!(
                    "the proof counts {} receipts, the block has {tx_count:?}",
                    proof.count
                ),
            }
            .into());
        }
        let receipt = self
            .light
            .verify_receipt(hash, &proof, &roots.receipts_root)?;
        // A receipt that did not consume the sender's nonce (a replayed or misdirected copy)
        // says nothing about whether the transaction ran elsewhere: not conclusive.
        if let Some(
            rejection @ (Rejection::BadNonce { .. }
            | Rejection::WrongChain { .. }
            | Rejection::BadSignature),
        ) = receipt.rejection()
        {
            return Err(VerifyError::ReceiptProof {
                tx: *hash,
                height: proof.height,
                reason: format!(
                    "this inclusion was refused ({rejection}) without consuming the sender's \
                     nonce; it does not show whether the transaction ran elsewhere"
                ),
            }
            .into());
        }
        Ok(Verified {
            value: VerifiedReceipt {
                height: proof.height,
                position: proof.position,
                receipt,
            },
            height: proof.height,
            state_root: roots.state_root,
            certified_block: roots.certified_block,
            certified_at_ms: roots.certified_at_ms,
        })
    }

    /// The certified header of block `height` (an error if that block has no certificate of
    /// its own).
    pub async fn certified_header(&self, height: u64) -> Result<BlockHeader, ClientError> {
        let certified: CertifiedHeader = self
            .api
            .get_ok(&format!("/v1/blocks/{height}/certificate"))
            .await?;
        Ok(self.light.verify_header_at(height, &certified)?)
    }
}
