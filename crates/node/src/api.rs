//! The HTTP API: JSON at the edge, errors as RFC 9457 problem details.

use crate::dev::{NodeError, TxStatus};
use crate::mempool::AdmitError;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secnet_certified::{CertifiedHeader, CertifiedState, HexBytes, ReceiptProof};
use secnet_contract::{LogEntry, StateKey};
use secnet_ledger::{Checkpoint, verifier_key};
use secnet_types::{AccountId, BlockHeader, Hash, SignedTransaction};
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

/// An error as answered: RFC 9457 problem details (`application/problem+json`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProblemBody {
    /// Always `about:blank`: the status and title say what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, fixed summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What exactly was wrong with this request.
    pub detail: String,
    /// For refused fetches: the machine-readable reason, as recorded on the ledger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            kind: "about:blank".into(),
            title: self.title.into(),
            status: self.status.as_u16(),
            detail: self.detail,
            reason: None,
        };
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            serde_json::to_string(&body).unwrap_or_default(),
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
    /// The finalization certificate of the block at `height`, in Commonware's encoding, if
    /// this node has one (a block finalized only through a descendant has none).
    fn certificate(&self, height: u64) -> CertificateFuture<'_>;
}

/// What [`Backend::certificate`] answers.
pub type CertificateFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<u8>>> + Send + 'a>>;

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

/// The ledger's half of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "SecNet node API",
        description = "The ledger (transactions, blocks, accounts, the data contract's listings and grants, the access log with its proofs) and the Private Data Center (encrypted objects, owners' policies, tokens, signed fetches, access history). Errors are RFC 9457 problem details.",
        license(name = "Apache-2.0")
    ),
    paths(
        submit_tx, submit_txs, tx_status, tx_proof, block_header, status, block, block_tx_hashes, block_certificate,
        certified_state, account, listings,
        listing, grant, log_entries, log_consistency, log_proof, checkpoint, metrics,
        openapi_json
    ),
    components(schemas(ProblemBody, SubmitTx, SubmitTxs)),
    tags(
        (name = "ledger", description = "Transactions, blocks and accounts"),
        (name = "contract", description = "Registered data and access grants"),
        (name = "audit", description = "The access log, its proofs and signed checkpoints"),
        (name = "pdc", description = "The Private Data Center"),
        (name = "node", description = "Operations")
    )
)]
struct LedgerApi;

/// The whole API's OpenAPI document: the ledger's routes and the Private Data Center's.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    let mut doc = LedgerApi::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.merge(crate::pdc::PdcApi::openapi());
    doc
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "node",
    summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1", body = serde_json::Value))
)]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

/// The whole HTTP API of a node: the ledger's routes, the Private Data Center's, a 30 s
/// request timeout, and every error answered as problem+json.
pub fn app(node: Arc<dyn Backend>, pdc: Arc<crate::pdc::Pdc>) -> Router {
    router(node.clone())
        .merge(crate::pdc::router(node, pdc))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            std::time::Duration::from_secs(30),
        ))
        .layer(axum::middleware::map_response(problem_json))
}

/// Largest error body carried over into a problem's detail.
const MAX_ERROR_DETAIL: usize = 4 * 1024;

/// Answers every error as problem+json, including those that axum's extractors and the
/// layers produce as plain text (a malformed query, an oversized body, a timeout).
async fn problem_json(resp: Response) -> Response {
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let title = status.canonical_reason().unwrap_or("error");
    let detail = match axum::body::to_bytes(body, MAX_ERROR_DETAIL).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
        _ => title.to_string(),
    };
    let mut out = Problem::new(status, title, detail).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// The API's routes.
pub fn router(node: Arc<dyn Backend>) -> Router {
    Router::new()
        .route("/v1/tx", post(submit_tx))
        .route("/v1/tx/{hash}", get(tx_status))
        .route("/v1/tx/{hash}/proof", get(tx_proof))
        .route("/v1/headers/{height}", get(block_header))
        .route(
            "/v1/txs",
            post(submit_txs).layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)),
        )
        .route("/v1/status", get(status))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/blocks/{height}/tx-hashes", get(block_tx_hashes))
        .route("/v1/blocks/{height}/certificate", get(block_certificate))
        .route("/v1/state", get(certified_state))
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/listings", get(listings))
        .route("/v1/listings/{hash}", get(listing))
        .route("/v1/grants/{id}", get(grant))
        .route("/v1/log", get(log_entries))
        .route("/v1/log/consistency", get(log_consistency))
        .route("/v1/log/{index}", get(log_proof))
        .route("/v1/checkpoint", get(checkpoint))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .fallback(|| async {
            Problem::not_found("no such endpoint; the API is described at /openapi.json")
        })
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
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubmitTx {
    /// The signed transaction's canonical bytes, hex.
    pub tx: String,
}

#[utoipa::path(
    post,
    path = "/v1/tx",
    tag = "ledger",
    summary = "Submit one signed transaction",
    request_body = SubmitTx,
    responses(
        (status = 202, description = "admitted: its hash, pending", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "already admitted", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "refused at admission: bad signature, another chain, a stale nonce or a gap", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "mempool full: busy, retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
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
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubmitTxs {
    /// Signed transactions' canonical bytes, hex.
    pub txs: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/v1/txs",
    tag = "ledger",
    summary = "Submit a batch of signed transactions",
    request_body = SubmitTxs,
    responses(
        (status = 200, description = "one result per transaction: its hash, or why it was not admitted", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "body over the batch limit", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/tx/{hash}",
    tag = "ledger",
    summary = "Where a transaction is: pending, or committed with its receipt",
    params(
        ("hash" = String, Path, description = "transaction hash, hex"),
    ),
    responses(
        (status = 200, description = "pending, or committed with height and receipt", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "neither pending nor committed", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/tx/{hash}/proof",
    tag = "ledger",
    summary = "A committed transaction's receipt, proven against its block's receipts root",
    description = "A later header commits to the block's receipts root; a client checks that header's certificate, then this path.",
    params(
        ("hash" = String, Path, description = "transaction hash, hex"),
    ),
    responses(
        (status = 200, description = "height, position, receipt count, the receipt's bytes and its audit path (hex)", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "not committed (yet)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn tx_proof(State(node): Node, Path(hash): Path<String>) -> ApiResult<Json<ReceiptProof>> {
    let hash: Hash = parse("transaction hash", &hash)?;
    let proof = node.with_ledger(|l| -> Result<Option<ReceiptProof>, Problem> {
        let Some((height, position)) = l.tx_location(&hash)? else {
            return Ok(None);
        };
        let stored = l
            .block(height)?
            .ok_or_else(|| Problem::not_found(format!("no block at height {height}")))?;
        let receipt = stored
            .receipts
            .get(position as usize)
            .ok_or_else(|| Problem::not_found(format!("no receipt {position} at {height}")))?;
        let path = secnet_contract::receipt_proof(&stored.receipts, u64::from(position))
            .map_err(|e| Problem::bad_request(e.to_string()))?;
        Ok(Some(ReceiptProof {
            height,
            position: u64::from(position),
            count: stored.receipts.len() as u64,
            receipt: HexBytes(receipt.to_bytes()),
            path: path.iter().map(|h| HexBytes(h.to_vec())).collect(),
        }))
    })??;
    proof
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("transaction {hash} is not committed")))
}

#[utoipa::path(
    get,
    path = "/v1/headers/{height}",
    tag = "ledger",
    summary = "A block header's canonical bytes",
    params(
        ("height" = String, Path, description = "block height"),
    ),
    responses(
        (status = 200, description = "the header, hex", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no block at that height yet", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn block_header(
    State(node): Node,
    Path(height): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let height: u64 = parse("height", &height)?;
    let header = node
        .with_ledger(|l| l.header(height))??
        .ok_or_else(|| Problem::not_found(format!("no block at height {height}")))?;
    Ok(Json(
        json!({ "height": height, "header": hex::encode(header.to_bytes()) }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "ledger",
    summary = "The node's chain, height, state root, log head and validators",
    responses(
        (status = 200, description = "status", body = serde_json::Value),
    )
)]
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
#[utoipa::path(
    get,
    path = "/v1/blocks/{height}/tx-hashes",
    tag = "ledger",
    summary = "A block's transaction hashes, in order",
    params(
        ("height" = String, Path, description = "block height"),
    ),
    responses(
        (status = 200, description = "height, block hash and transaction hashes", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no block at that height yet", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/blocks/{height}",
    tag = "ledger",
    summary = "A block with its receipts and the state root after it",
    params(
        ("height" = String, Path, description = "block height"),
    ),
    responses(
        (status = 200, description = "header, transactions, receipts, state root, and the block's canonical bytes (hex) for clients that check it against a certified header", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no block at that height yet", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn block(
    State(node): Node,
    Path(height): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let (_, stored) = stored_block(&node, &height)?;
    Ok(Json(json!({
        "hash": stored.block.hash(),
        "bytes": hex::encode(stored.block.to_bytes()),
        "header": stored.block.header,
        "state_root": stored.state_root,
        "log_size": stored.log_size,
        "transactions": stored.block.txs.iter().map(|t| json!({
            "hash": t.hash(), "tx": t.tx(), "signature": t.signature(),
        })).collect::<Vec<_>>(),
        "receipts": stored.receipts,
    })))
}

/// How many of the latest blocks are searched for a certificate: a block finalized only
/// through a descendant has none of its own.
const CERTIFIED_SEARCH: u64 = 16;
/// Most state keys one certified query may ask for.
pub const MAX_STATE_KEYS: usize = 64;

#[utoipa::path(
    get,
    path = "/v1/blocks/{height}/certificate",
    tag = "ledger",
    summary = "A block header with the validators' finalization certificate over it",
    params(
        ("height" = String, Path, description = "block height"),
    ),
    responses(
        (status = 200, description = "the header's canonical bytes and the certificate, hex", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no block at that height yet, or it has no certificate of its own (it was finalized through a descendant)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn block_certificate(
    State(node): Node,
    Path(height): Path<String>,
) -> ApiResult<Json<CertifiedHeader>> {
    let (height, stored) = stored_block(&node, &height)?;
    let certificate = node.certificate(height).await.ok_or_else(|| {
        Problem::not_found(format!(
            "block {height} has no certificate of its own; a later block's certifies it"
        ))
    })?;
    Ok(Json(CertifiedHeader {
        header: HexBytes(stored.block.header.to_bytes()),
        certificate: HexBytes(certificate),
    }))
}

/// How long a certified query waits for the node's current state to be certified.
const CERTIFIED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most `/v1/state` queries served at once; more are answered 503 (retry).
const MAX_STATE_QUERIES: usize = 64;
static STATE_QUERIES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_STATE_QUERIES);

/// The newest block at or below `tip` with a certificate of its own whose header commits to
/// a height this node still has the state of: `(block height, its header, certificate)`.
async fn newest_certified(
    node: &Arc<dyn Backend>,
    tip: u64,
) -> ApiResult<Option<(BlockHeader, Vec<u8>)>> {
    for height in (tip.saturating_sub(CERTIFIED_SEARCH).max(1)..=tip).rev() {
        let header = node.with_ledger(|l| {
            let header = l.header(height).ok()??;
            let (state_height, _) = header.state.last()?;
            l.snapshot_at(state_height).map(|_| header)
        })?;
        let Some(header) = header else { continue };
        if let Some(certificate) = node.certificate(height).await {
            return Ok(Some((header, certificate)));
        }
    }
    Ok(None)
}

#[derive(Deserialize)]
struct StateQuery {
    /// State keys, hex of their canonical bytes, comma-separated.
    #[serde(default)]
    keys: String,
}

#[utoipa::path(
    get,
    path = "/v1/state",
    tag = "ledger",
    summary = "State entries proven against the newest certified state root",
    description = "Finds the newest block with a finalization certificate, takes the newest height whose state root its header commits to, and proves each asked key (present or absent) as of that height. Waits up to 5 s for the state this node had applied when asked to be certified, so a client reads its own committed writes. At most 64 such queries run at once; more are answered 503. A client checks the certificate against the genesis validators, then each proof against the committed root: nothing in the answer needs trusting this node.",
    params(
        ("keys" = Option<String>, Query, description = "state keys, hex of their canonical bytes, comma-separated (at most 64); none: just the certified header"),
    ),
    responses(
        (status = 200, description = "certified header, state height and one proof per key", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "no certified state yet (retry shortly)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
async fn certified_state(
    State(node): Node,
    Query(q): Query<StateQuery>,
) -> ApiResult<Json<CertifiedState>> {
    let keys = q
        .keys
        .split(',')
        .filter(|k| !k.is_empty())
        .map(|k| {
            let bytes = hex::decode(k)
                .map_err(|e| Problem::bad_request(format!("state key {k:?} is not hex: {e}")))?;
            StateKey::from_bytes(&bytes)
                .map_err(|e| Problem::bad_request(format!("state key {k:?}: {}", e.0)))
        })
        .collect::<ApiResult<Vec<StateKey>>>()?;
    if keys.len() > MAX_STATE_KEYS {
        return Err(Problem::bad_request(format!(
            "{} state keys asked; at most {MAX_STATE_KEYS} per query",
            keys.len()
        )));
    }
    let _permit = STATE_QUERIES.try_acquire().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable",
            "too many certified-state queries at once; retry shortly",
        )
    })?;
    // Read-your-writes: the answer must be as of the state this node had applied when asked
    // (its root, or a later height). Wait for it, re-searching only when the tip moves; past
    // the wait, answer with the newest certified state there is.
    let (wanted_height, wanted_root) = node.with_ledger(|l| {
        let tip = l.state().tip();
        (tip.height, tip.state_root)
    })?;
    let deadline = tokio::time::Instant::now() + CERTIFIED_WAIT;
    let mut searched = None;
    let mut found: Option<(BlockHeader, Vec<u8>)> = None;
    loop {
        let tip = node.with_ledger(|l| l.state().tip().height)?;
        if searched != Some(tip) {
            searched = Some(tip);
            if let Some(newest) = newest_certified(&node, tip).await? {
                found = Some(newest);
            }
        }
        let fresh = found
            .as_ref()
            .and_then(|(h, _)| h.state.last())
            .is_some_and(|(height, root)| height >= wanted_height || root == wanted_root);
        if fresh || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if let Some((header, certificate)) = found {
        let answer = node.with_ledger(|l| {
            let (state_height, _) = header.state.last()?;
            let snapshot = l.snapshot_at(state_height)?;
            Some(CertifiedState {
                certified: CertifiedHeader {
                    header: HexBytes(header.to_bytes()),
                    certificate: HexBytes(certificate),
                },
                height: state_height,
                proofs: keys.iter().map(|k| snapshot.prove(k)).collect(),
            })
        })?;
        if let Some(answer) = answer {
            return Ok(Json(answer));
        }
    }
    Err(Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "service unavailable",
        "no certified state root yet; retry shortly",
    ))
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{id}",
    tag = "ledger",
    summary = "An account's balance, nonce and encryption key, with a proof against the state root",
    params(
        ("id" = String, Path, description = "account id: 64 hex digits"),
    ),
    responses(
        (status = 200, description = "account and its state proof", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/listings",
    tag = "contract",
    summary = "Registered data",
    params(
        ("address" = Option<String>, Query, description = "only the listing registered at this address"),
    ),
    responses(
        (status = 200, description = "listings", body = serde_json::Value),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/listings/{hash}",
    tag = "contract",
    summary = "One registration, with its state proof",
    params(
        ("hash" = String, Path, description = "content hash, hex"),
    ),
    responses(
        (status = 200, description = "listing and proof", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "nothing registered with that hash", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/grants/{id}",
    tag = "contract",
    summary = "An access grant, with its state proof",
    params(
        ("id" = String, Path, description = "grant id (the request transaction hash)"),
    ),
    responses(
        (status = 200, description = "grant and proof", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no such grant", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
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
#[utoipa::path(
    get,
    path = "/v1/log",
    tag = "audit",
    summary = "Access log entries: grants, deliveries and refusals",
    params(
        ("from" = Option<u64>, Query, description = "first index"),
        ("limit" = Option<u64>, Query, description = "most entries (at most 1000)"),
        ("grant" = Option<String>, Query, description = "only entries of this grant"),
        ("data" = Option<String>, Query, description = "only entries about this content hash"),
    ),
    responses(
        (status = 200, description = "entries with their indices", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/log/{index}",
    tag = "audit",
    summary = "Inclusion proof of one log entry (RFC 9162)",
    params(
        ("index" = String, Path, description = "leaf index"),
        ("size" = Option<u64>, Query, description = "tree size to prove against (default: current)"),
    ),
    responses(
        (status = 200, description = "inclusion proof with the leaf bytes", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/log/consistency",
    tag = "audit",
    summary = "Consistency proof between two log sizes (RFC 9162)",
    params(
        ("from" = u64, Query, description = "older size"),
        ("to" = Option<u64>, Query, description = "newer size (default: current)"),
    ),
    responses(
        (status = 200, description = "consistency proof", body = serde_json::Value),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/checkpoint",
    tag = "audit",
    summary = "The log head signed by this node (C2SP signed note)",
    responses(
        (status = 200, description = "checkpoint note and its fields", body = serde_json::Value),
    )
)]
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

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
    )
)]
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
