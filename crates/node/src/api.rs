//! The HTTP API: JSON at the edge, errors as RFC 9457 problem details.

use crate::dev::{NodeError, TxStatus};
use crate::mempool::AdmitError;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secnet_contract::{LogEntry, StateKey};
use secnet_ledger::{Checkpoint, verifier_key};
use secnet_types::{AccountId, Hash, SignedTransaction};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

/// Largest request body, in bytes (a hex-encoded transaction of the largest size fits).
pub const MAX_BODY_BYTES: usize = 160 * 1024;
/// Largest batch submission body, in bytes.
pub const MAX_BATCH_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Most transactions in one batch submission.
pub const MAX_BATCH_TXS: usize = 4_096;
/// Most log entries returned by one listing request.
const MAX_LOG_PAGE: u64 = 1_000;

/// An error answered as `application/problem+json`.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
}

impl Problem {
    pub(crate) fn new(
        status: StatusCode,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            title,
            detail: detail.into(),
        }
    }
    pub(crate) fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad request", detail)
    }
    pub(crate) fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not found", detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

impl From<NodeError> for Problem {
    fn from(e: NodeError) -> Self {
        tracing::error!(error = %e, "request failed inside the node");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            e.to_string(),
        )
    }
}

impl From<secnet_ledger::LedgerError> for Problem {
    fn from(e: secnet_ledger::LedgerError) -> Self {
        match e {
            secnet_ledger::LedgerError::Proof(p) => Problem::bad_request(p.to_string()),
            other => NodeError::from(other).into(),
        }
    }
}

type ApiResult<T> = Result<T, Problem>;
type Node = State<Arc<dyn Backend>>;

/// What the API needs from a node: a single-node ledger or a validator.
pub trait Backend: Send + Sync + 'static {
    /// Admits a transaction (and, on a validator, gossips it to the other validators).
    fn submit(&self, tx: SignedTransaction) -> Result<Result<Hash, AdmitError>, NodeError>;
    /// Admits several transactions; one result each.
    fn submit_batch(
        &self,
        txs: Vec<SignedTransaction>,
    ) -> Result<Vec<Result<Hash, AdmitError>>, NodeError> {
        txs.into_iter().map(|tx| self.submit(tx)).collect()
    }
    /// Where a transaction is.
    fn tx_status(&self, hash: &Hash) -> Result<TxStatus, NodeError>;
    /// Runs `f` with the ledger locked.
    fn visit_ledger(&self, f: &mut dyn FnMut(&secnet_ledger::Ledger)) -> Result<(), NodeError>;
    /// Number of pending transactions.
    fn pending(&self) -> Result<usize, NodeError>;
    /// The node's signing key.
    fn key(&self) -> &secnet_types::Keypair;
    /// The validators and the last height each is known to have reached.
    fn validators(&self) -> Vec<serde_json::Value>;
}

impl dyn Backend {
    /// Runs `f` with the ledger locked and returns its result.
    pub fn with_ledger<R>(
        &self,
        f: impl FnOnce(&secnet_ledger::Ledger) -> R,
    ) -> Result<R, NodeError> {
        let mut f = Some(f);
        let mut out = None;
        self.visit_ledger(&mut |l| {
            if let Some(f) = f.take() {
                out = Some(f(l));
            }
        })?;
        out.ok_or(NodeError::Poisoned)
    }
}

/// The API's routes.
pub fn router(node: Arc<dyn Backend>) -> Router {
    Router::new()
        .route("/v1/tx", post(submit_tx))
        .route("/v1/tx/{hash}", get(tx_status))
        .route(
            "/v1/txs",
            post(submit_txs).layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)),
        )
        .route("/v1/status", get(status))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/blocks/{height}/tx-hashes", get(block_tx_hashes))
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/listings", get(listings))
        .route("/v1/listings/{hash}", get(listing))
        .route("/v1/grants/{id}", get(grant))
        .route("/v1/log", get(log_entries))
        .route("/v1/log/consistency", get(log_consistency))
        .route("/v1/log/{index}", get(log_proof))
        .route("/v1/checkpoint", get(checkpoint))
        .route("/metrics", get(metrics))
        .fallback(|| async { Problem::not_found("no such endpoint; see /v1/status") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(node)
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> ApiResult<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| Problem::bad_request(format!("{what} {s:?}: {e}")))
}

/// Body of `POST /v1/tx`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitTx {
    /// The signed transaction's canonical bytes, hex.
    pub tx: String,
}

async fn submit_tx(State(node): Node, body: axum::body::Bytes) -> ApiResult<Response> {
    let req: SubmitTx = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("body must be {{\"tx\": \"<hex>\"}}: {e}")))?;
    let bytes = hex::decode(req.tx.trim())
        .map_err(|e| Problem::bad_request(format!("tx is not hex: {e}")))?;
    let tx = SignedTransaction::decode_bytes(&bytes)
        .map_err(|e| Problem::bad_request(format!("transaction rejected: {e}")))?;
    match node.submit(tx)? {
        Ok(hash) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "hash": hash, "status": "pending" })),
        )
            .into_response()),
        Err(AdmitError::Full(n)) => Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                AdmitError::Full(n).to_string(),
            ),
        )
            .into_response()),
        Err(e @ AdmitError::Duplicate(_)) => Err(Problem::new(
            StatusCode::CONFLICT,
            "duplicate",
            e.to_string(),
        )),
        Err(e) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "transaction refused",
            e.to_string(),
        )),
    }
}

/// Body of `POST /v1/txs`.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubmitTxs {
    /// Signed transactions' canonical bytes, hex.
    pub txs: Vec<String>,
}

async fn submit_txs(
    State(node): Node,
    body: axum::body::Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let req: SubmitTxs = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(format!("body must be {{\"txs\": [\"<hex>\", ...]}}: {e}"))
    })?;
    if req.txs.len() > MAX_BATCH_TXS {
        return Err(Problem::bad_request(format!(
            "{} transactions is more than the batch limit of {MAX_BATCH_TXS}",
            req.txs.len()
        )));
    }
    let mut txs = Vec::with_capacity(req.txs.len());
    for (i, t) in req.txs.iter().enumerate() {
        let bytes = hex::decode(t.trim())
            .map_err(|e| Problem::bad_request(format!("txs[{i}] is not hex: {e}")))?;
        txs.push(
            SignedTransaction::decode_bytes(&bytes)
                .map_err(|e| Problem::bad_request(format!("txs[{i}] rejected: {e}")))?,
        );
    }
    let results = node.submit_batch(txs)?;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let results: Vec<serde_json::Value> = results
        .into_iter()
        .map(|r| match r {
            Ok(hash) => json!({ "hash": hash }),
            Err(e) => json!({ "error": e.to_string(), "busy": matches!(e, AdmitError::Full(_)) }),
        })
        .collect();
    Ok(Json(json!({ "accepted": accepted, "results": results })))
}

async fn tx_status(State(node): Node, Path(hash): Path<String>) -> ApiResult<Response> {
    let hash: Hash = parse("transaction hash", &hash)?;
    let status = node.tx_status(&hash)?;
    if status == TxStatus::Unknown {
        return Err(Problem::not_found(format!(
            "transaction {hash} is neither pending nor committed"
        )));
    }
    Ok(Json(json!({ "hash": hash, "status": status })).into_response())
}

async fn status(State(node): Node) -> ApiResult<Json<serde_json::Value>> {
    let pending = node.pending()?;
    let body = node.with_ledger(|l| {
        let tip = l.state().tip();
        let log = l.state().log();
        json!({
            "chain_id": l.genesis().chain_id,
            "genesis_hash": l.genesis().hash(),
            "height": tip.height,
            "block_hash": tip.block_hash,
            "timestamp_ms": tip.timestamp_ms,
            "state_root": tip.state_root,
            "log_size": log.len(),
            "log_root": Hash(log.root()),
            "mempool": pending,
            "node": node.key().account(),
        })
    })?;
    let mut body = body;
    if let Some(fields) = body.as_object_mut() {
        fields.insert(
            "validators".into(),
            serde_json::Value::Array(node.validators()),
        );
    }
    Ok(Json(body))
}

/// The stored block at the height named in a path.
fn stored_block(
    node: &Arc<dyn Backend>,
    height: &str,
) -> ApiResult<(u64, secnet_ledger::StoredBlock)> {
    let height: u64 = parse("height", height)?;
    let stored = node
        .with_ledger(|l| l.block(height))??
        .ok_or_else(|| Problem::not_found(format!("no block at height {height}")))?;
    Ok((height, stored))
}

/// Only the hashes of a block's transactions, in order: what a client watching for its
/// transactions needs, without the cost of the full block.
async fn block_tx_hashes(
    State(node): Node,
    Path(height): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let (height, stored) = stored_block(&node, &height)?;
    Ok(Json(json!({
        "height": height,
        "hash": stored.block.hash(),
        "tx_hashes": stored.block.txs.iter().map(SignedTransaction::hash).collect::<Vec<_>>(),
    })))
}

async fn block(
    State(node): Node,
    Path(height): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let (_, stored) = stored_block(&node, &height)?;
    Ok(Json(json!({
        "hash": stored.block.hash(),
        "header": stored.block.header,
        "state_root": stored.state_root,
        "log_size": stored.log_size,
        "transactions": stored.block.txs.iter().map(|t| json!({
            "hash": t.hash(), "tx": t.tx(), "signature": t.signature(),
        })).collect::<Vec<_>>(),
        "receipts": stored.receipts,
    })))
}

async fn account(State(node): Node, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let id: AccountId = parse("account", &id)?;
    let body = node.with_ledger(|l| {
        let a = l.state().account(&id);
        json!({
            "account": id,
            "balance": a.balance,
            "nonce": a.nonce,
            "encryption_key": a.encryption_key,
            "proof": l.state().prove(&StateKey::Account(id)),
        })
    })?;
    Ok(Json(body))
}

#[derive(Deserialize)]
struct ListingQuery {
    address: Option<String>,
}

async fn listings(
    State(node): Node,
    Query(q): Query<ListingQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let body = node.with_ledger(|l| match &q.address {
        Some(address) => json!(
            l.state()
                .listing_at(address)
                .into_iter()
                .collect::<Vec<_>>()
        ),
        None => json!(l.state().listings().collect::<Vec<_>>()),
    })?;
    Ok(Json(body))
}

async fn listing(
    State(node): Node,
    Path(hash): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let hash: Hash = parse("data hash", &hash)?;
    let body = node.with_ledger(|l| {
        l.state().listing(&hash).map(|listing| {
            json!({ "listing": listing, "proof": l.state().prove(&StateKey::Listing(hash)) })
        })
    })?;
    body.map(Json)
        .ok_or_else(|| Problem::not_found(format!("no data is registered with hash {hash}")))
}

async fn grant(State(node): Node, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let id: Hash = parse("grant id", &id)?;
    let body = node.with_ledger(|l| {
        l.state()
            .grant(&id)
            .map(|g| json!({ "grant": g, "proof": l.state().prove(&StateKey::Grant(id)) }))
    })?;
    body.map(Json)
        .ok_or_else(|| Problem::not_found(format!("no access grant {id}")))
}

#[derive(Deserialize)]
struct LogQuery {
    from: Option<u64>,
    limit: Option<u64>,
    /// Only entries of this grant (the grant itself and the accesses presenting it).
    grant: Option<String>,
    /// Only entries about this data.
    data: Option<String>,
}

/// Whether a log entry is about `grant` and `data` (each when given).
fn log_entry_matches(entry: &LogEntry, grant: Option<&Hash>, data: Option<&Hash>) -> bool {
    let (g, d) = match entry {
        LogEntry::Grant { grant, data, .. } => (Some(grant), data),
        LogEntry::Access { entry, .. } => (entry.grant.as_ref(), &entry.data),
    };
    grant.is_none_or(|want| g == Some(want)) && data.is_none_or(|want| d == want)
}

/// `GET /v1/log`: entries from `from`, at most `limit`; with `grant` or `data`, only the
/// matching ones (the scan goes on from `from` until `limit` matched or the log ends).
async fn log_entries(
    State(node): Node,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let from = q.from.unwrap_or(0);
    let limit = q.limit.unwrap_or(100).min(MAX_LOG_PAGE);
    let grant: Option<Hash> = q
        .grant
        .as_deref()
        .map(|g| parse("grant id", g))
        .transpose()?;
    let data: Option<Hash> = q
        .data
        .as_deref()
        .map(|d| parse("data hash", d))
        .transpose()?;
    let filtered = grant.is_some() || data.is_some();
    let entries = node.with_ledger(
        |l| -> Result<Vec<serde_json::Value>, secnet_ledger::LedgerError> {
            let size = l.state().log().len();
            let end = if filtered {
                size
            } else {
                size.min(from.saturating_add(limit))
            };
            let mut out = Vec::new();
            for index in from..end {
                if out.len() as u64 >= limit {
                    break;
                }
                if let Some(bytes) = l.log_leaf(index)? {
                    let entry = LogEntry::from_bytes(&bytes).map_err(|e| {
                        secnet_ledger::LedgerError::Corrupt(format!("log leaf {index}: {e}"))
                    })?;
                    if log_entry_matches(&entry, grant.as_ref(), data.as_ref()) {
                        out.push(json!({ "index": index, "entry": entry }));
                    }
                }
            }
            Ok(out)
        },
    )??;
    Ok(Json(json!({ "from": from, "entries": entries })))
}

#[derive(Deserialize)]
struct SizeQuery {
    size: Option<u64>,
}

async fn log_proof(
    State(node): Node,
    Path(index): Path<String>,
    Query(q): Query<SizeQuery>,
) -> ApiResult<Json<secnet_ledger::InclusionProof>> {
    let index: u64 = parse("leaf index", &index)?;
    Ok(Json(
        node.with_ledger(|l| l.inclusion_proof(index, q.size))??,
    ))
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

async fn log_consistency(
    State(node): Node,
    Query(q): Query<ConsistencyQuery>,
) -> ApiResult<Json<secnet_ledger::ConsistencyProof>> {
    Ok(Json(node.with_ledger(|l| {
        let to = q.to.unwrap_or(l.state().log().len());
        l.consistency_proof(q.from, to)
    })??))
}

/// The name a node signs checkpoints under.
pub fn checkpoint_signer_name(key: &AccountId) -> String {
    format!("secnet-node-{}", &key.to_hex()[..16])
}

async fn checkpoint(State(node): Node) -> ApiResult<Json<serde_json::Value>> {
    let cp: Checkpoint = node.with_ledger(|l| l.checkpoint())?;
    let name = checkpoint_signer_name(&node.key().account());
    let signed = cp.sign(&name, node.key());
    Ok(Json(json!({
        "checkpoint": signed.checkpoint,
        "note": signed.note,
        "signer": name,
        "verifier_key": verifier_key(&name, &node.key().account()),
    })))
}

async fn metrics(State(node): Node) -> ApiResult<Response> {
    let pending = node.pending()?;
    let text = node.with_ledger(|l| {
        let tip = l.state().tip();
        format!(
            "# TYPE secnet_height gauge\nsecnet_height {}\n# TYPE secnet_log_size gauge\nsecnet_log_size {}\n# TYPE secnet_mempool_pending gauge\nsecnet_mempool_pending {}\n",
            tip.height,
            l.state().log().len(),
            pending
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
