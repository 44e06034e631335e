//! Submitting transactions and asking where they are.

use super::MAX_BATCH_TXS;
use super::{ApiResult, Node, parse};
use crate::backend::TxStatus;
use crate::mempool::AdmitError;
use crate::problem::{Problem, ProblemBody};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use secnet_api::txs::{
    BATCH_MEDIA_TYPE, BatchAnswer, BatchResult, Pending, SubmitTx, SubmitTxs, Submitted,
    TxStatusAnswer, decode_batch,
};
use secnet_certified::{HexBytes, ReceiptProof};
use secnet_types::{Hash, SignedTransaction};

#[utoipa::path(
    post,
    path = "/v1/tx",
    tag = "ledger",
    summary = "Submit one signed transaction",
    request_body = SubmitTx,
    responses(
        (status = 202, description = "admitted: its hash, pending", body = Submitted),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "already admitted", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "refused at admission: bad signature, another chain, a stale nonce or a gap", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "the sender has as many pending as its balance backs (one per unit; 8 at least): retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "mempool full, or its lane for transactions no balance backs: busy, retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn submit_tx(State(node): Node, body: axum::body::Bytes) -> ApiResult<Response> {
    let req: SubmitTx = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("body must be {{\"tx\": \"<hex>\"}}: {e}")))?;
    let bytes = hex::decode(req.tx.trim())
        .map_err(|e| Problem::bad_request(format!("tx is not hex: {e}")))?;
    let tx = SignedTransaction::decode_bytes(&bytes)
        .map_err(|e| Problem::bad_request(format!("transaction rejected: {e}")))?;
    match node.submit(tx)? {
        Ok(hash) => Ok((
            StatusCode::ACCEPTED,
            Json(Submitted {
                hash,
                status: Pending::Pending,
            }),
        )
            .into_response()),
        Err(e) if e.is_busy() => {
            let status = if matches!(e, AdmitError::SenderBusy { .. }) {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Ok((
                status,
                [(header::RETRY_AFTER, "1")],
                Problem::new(status, "busy", e.to_string()),
            )
                .into_response())
        }
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

#[utoipa::path(
    post,
    path = "/v1/txs",
    tag = "ledger",
    summary = "Submit a batch of signed transactions",
    description = "JSON (hex transactions), or binary with Content-Type application/vnd.secnet.tx-batch: each transaction's canonical bytes preceded by their length, 4 bytes big-endian. At most 4,096 transactions and 8 MiB.",
    request_body(content(
        (SubmitTxs = "application/json"),
        (Vec<u8> = "application/vnd.secnet.tx-batch")
    )),
    responses(
        (status = 200, description = "one result per transaction: its hash, or why it was not admitted", body = BatchAnswer),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "body over the batch limit", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "too many batches being admitted at once: retry", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn submit_txs(
    State(node): Node,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<BatchAnswer>> {
    let binary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(BATCH_MEDIA_TYPE));
    let txs = if binary {
        decode_batch(&body, MAX_BATCH_TXS)
            .map_err(|e| Problem::bad_request(format!("binary batch rejected: {e}")))?
    } else {
        decode_json_batch(&body)?
    };
    // Checking a batch's signatures takes milliseconds: off the async runtime, which also
    // runs consensus on a validator, and only a few batches at once.
    let permit = ADMISSIONS.try_acquire().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{MAX_ADMISSIONS} batches are being admitted; retry shortly"),
        )
    })?;
    let results = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        node.submit_batch(txs)
    })
    .await
    .map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            format!("admission failed: {e}"),
        )
    })??;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let results = results
        .into_iter()
        .map(|r| match r {
            Ok(hash) => BatchResult::Admitted { hash },
            Err(e) => BatchResult::Refused {
                busy: e.is_busy(),
                error: e.to_string(),
            },
        })
        .collect();
    Ok(Json(BatchAnswer { accepted, results }))
}

/// Batches admitted at once; more are answered 503 (retry).
const MAX_ADMISSIONS: usize = 8;
static ADMISSIONS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_ADMISSIONS);

fn decode_json_batch(body: &[u8]) -> ApiResult<Vec<SignedTransaction>> {
    let req: SubmitTxs = serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(format!(
            "body must be {{\"txs\": [\"<hex>\", ...]}} (or Content-Type {BATCH_MEDIA_TYPE}): {e}"
        ))
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
    Ok(txs)
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
        (status = 200, description = "pending, or committed with height and receipt", body = TxStatusAnswer),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "neither pending nor committed", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn tx_status(State(node): Node, Path(hash): Path<String>) -> ApiResult<Response> {
    let hash: Hash = parse("transaction hash", &hash)?;
    let status = node.tx_status(&hash)?;
    if status == TxStatus::Unknown {
        return Err(Problem::not_found(format!(
            "transaction {hash} is neither pending nor committed"
        )));
    }
    Ok(Json(TxStatusAnswer { hash, status }).into_response())
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
        (status = 200, description = "height, position, receipt count, the receipt's bytes and its audit path (hex)", body = ReceiptProof),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "not committed (yet)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn tx_proof(
    State(node): Node,
    Path(hash): Path<String>,
) -> ApiResult<Json<ReceiptProof>> {
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
