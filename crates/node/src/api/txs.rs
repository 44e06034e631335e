//! Submitting transactions and asking where they are.

use super::MAX_BATCH_TXS;
use super::budget::SourceBuckets;
use super::{ApiResult, Node, parse};
use crate::backend::TxStatus;
use crate::mempool::AdmitError;
use crate::problem::{Problem, ProblemBody};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use secnet_api::txs::{
    BATCH_MEDIA_TYPE, BatchAnswer, BatchResult, Pending, SubmitTx, SubmitTxs, Submitted,
    TxStatusAnswer, decode_batch,
};
use secnet_certified::{HexBytes, ReceiptProof};
use secnet_types::{Hash, SignedTransaction};
use std::sync::{Arc, Mutex};

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
        (status = 429, description = "the sender has as many pending as its balance backs (one per unit; 8 at least), or its pending transactions would spend more than it holds, or its address sent its share from unfunded accounts: retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "mempool full, or its lane for transactions no balance backs: busy, retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn submit_tx(
    State(node): Node,
    Extension(budget): Extension<UnfundedBudget>,
    secnet_web::Source(source): secnet_web::Source,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
    let req: SubmitTx = serde_json::from_slice(&body)
        .map_err(|e| Problem::bad_request(format!("body must be {{\"tx\": \"<hex>\"}}: {e}")))?;
    let bytes = hex::decode(req.tx.trim())
        .map_err(|e| Problem::bad_request(format!("tx is not hex: {e}")))?;
    let tx = SignedTransaction::decode_bytes(&bytes)
        .map_err(|e| Problem::bad_request(format!("transaction rejected: {e}")))?;
    let charged = budget.charge(&*node, source, std::slice::from_ref(&tx))?;
    if let Some(over) = charged.over_budget() {
        return Ok(over.into_response());
    }
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
            let status = if matches!(
                e,
                AdmitError::SenderBusy { .. } | AdmitError::Overspend { .. }
            ) {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Ok(Problem::busy(status, 1, e.to_string()))
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
    Extension(budget): Extension<UnfundedBudget>,
    secnet_web::Source(source): secnet_web::Source,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Response> {
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
    // Checking a batch's senders and signatures takes milliseconds: off the async runtime,
    // which also runs consensus on a validator, and only a few batches at once.
    let permit = ADMISSIONS.try_acquire().map_err(|_| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            format!("{MAX_ADMISSIONS} batches are being admitted; retry shortly"),
        )
    })?;
    let results = tokio::task::spawn_blocking(move || -> ApiResult<Vec<BatchResult>> {
        let _permit = permit;
        // The source's budget covers the first of the batch's unfunded transactions; the
        // rest are refused as busy (retry later), and everything else goes on.
        let charged = budget.charge(&*node, source, &txs)?;
        let over = charged.refusal();
        let kept = txs
            .into_iter()
            .zip(&charged.covered)
            .filter(|(_, covered)| **covered)
            .map(|(tx, _)| tx)
            .collect();
        let mut admitted = node.submit_batch(kept)?.into_iter();
        // Admission answered the covered transactions, in order: each takes the next answer.
        Ok(charged
            .covered
            .iter()
            .map(|covered| {
                if !covered {
                    return BatchResult::Refused {
                        busy: true,
                        error: over.clone(),
                    };
                }
                match admitted.next() {
                    Some(Ok(hash)) => BatchResult::Admitted { hash },
                    Some(Err(e)) => BatchResult::Refused {
                        busy: e.is_busy(),
                        error: e.to_string(),
                    },
                    None => BatchResult::Refused {
                        busy: true,
                        error: "admission gave no answer for this transaction; retry".into(),
                    },
                }
            })
            .collect())
    })
    .await
    .map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            format!("admission failed: {e}"),
        )
    })??;
    let accepted = results
        .iter()
        .filter(|r| matches!(r, BatchResult::Admitted { .. }))
        .count();
    Ok(Json(BatchAnswer { accepted, results }).into_response())
}

/// Transactions from accounts that hold nothing, or too little to back all they may have
/// pending (less than [`crate::mempool::FREE_PENDING_PER_SENDER`] units) — the pool's free
/// lane takes theirs — that one network source (an IPv4 address, an IPv6 /64) may submit per minute, at most
/// this many at once and refilled evenly over the minute. Fresh keys cost nothing, so
/// without this one source could keep the free lane full and keep new patients, who join
/// with no balance, from publishing their keys and consents.
pub const UNFUNDED_PER_SOURCE_PER_MINUTE: u32 = 64;
/// What each source has left of [`UNFUNDED_PER_SOURCE_PER_MINUTE`] (one per router, so
/// nodes in one process do not share it).
#[derive(Debug, Clone)]
pub struct UnfundedBudget(Arc<Mutex<SourceBuckets>>);

impl Default for UnfundedBudget {
    fn default() -> Self {
        UnfundedBudget(Arc::new(Mutex::new(SourceBuckets::new(
            UNFUNDED_PER_SOURCE_PER_MINUTE,
        ))))
    }
}

/// What a source's budget covered of some transactions.
#[derive(Debug)]
struct Charged {
    /// Per transaction, in order: whether it may go on to admission (it is funded, or the
    /// budget covered it).
    covered: Vec<bool>,
    /// If it did not cover them all: in how many seconds it covers one more.
    retry_s: Option<u64>,
}

impl Charged {
    /// Why the uncovered transactions were refused.
    fn refusal(&self) -> String {
        format!(
            "this address may submit {UNFUNDED_PER_SOURCE_PER_MINUTE} transactions a minute from accounts that hold less than {} units; this one is over that; retry in {} s, or send from a funded account",
            crate::mempool::FREE_PENDING_PER_SENDER,
            self.retry_s.unwrap_or(1)
        )
    }

    /// The answer to a submission the budget did not cover: 429 with `Retry-After`.
    fn over_budget(&self) -> Option<Response> {
        let retry_s = self.retry_s?;
        Some(Problem::busy(
            StatusCode::TOO_MANY_REQUESTS,
            retry_s,
            self.refusal(),
        ))
    }
}

impl UnfundedBudget {
    /// Charges `source` for the transactions in `txs` whose senders hold too little to back
    /// every transaction they may have pending (less than
    /// [`crate::mempool::FREE_PENDING_PER_SENDER`]: some of theirs go to the free lane), in
    /// order, as far as its budget for this minute goes; says which it covered. It is
    /// charged before signatures are checked, so forged transactions in the names of such
    /// accounts cost a source its budget too (those naming a funded sender are checked in a
    /// batch's admission, at most [`MAX_ADMISSIONS`] batches at once).
    fn charge(
        &self,
        node: &dyn crate::backend::Backend,
        source: Option<std::net::IpAddr>,
        txs: &[SignedTransaction],
    ) -> Result<Charged, Problem> {
        let unfunded: Vec<bool> = node.with_ledger(|l| {
            txs.iter()
                .map(|t| {
                    l.state().account(&t.tx().sender).balance
                        < crate::mempool::FREE_PENDING_PER_SENDER
                })
                .collect()
        })?;
        let n = unfunded.iter().filter(|u| **u).count();
        let mut charged = Charged {
            covered: vec![true; txs.len()],
            retry_s: None,
        };
        if n == 0 {
            return Ok(charged);
        }
        let (taken, retry_s) = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(
                secnet_types::source::source_key(source),
                u32::try_from(n).unwrap_or(u32::MAX),
                crate::datadir::now_ms(),
            );
        let mut left = taken;
        for (covered, unfunded) in charged.covered.iter_mut().zip(&unfunded) {
            if *unfunded {
                *covered = left > 0;
                left = left.saturating_sub(1);
            }
        }
        charged.retry_s = retry_s;
        Ok(charged)
    }
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
        (status = 429, description = "this address is over its budget of proofs a minute: retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "not committed (yet)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn tx_proof(
    State(node): Node,
    Path(hash): Path<String>,
) -> ApiResult<Json<ReceiptProof>> {
    let hash: Hash = parse("transaction hash", &hash)?;
    // The block is read under the ledger and decoded, and the proof built, after it.
    let found = node.with_ledger(|l| -> Result<Option<(u64, u32, Vec<u8>)>, Problem> {
        let Some((height, position)) = l.tx_location(&hash)? else {
            return Ok(None);
        };
        let bytes = l
            .block_bytes(height)?
            .ok_or_else(|| Problem::not_found(format!("no block at height {height}")))?;
        Ok(Some((height, position, bytes)))
    })??;
    let proof = match found {
        None => None,
        Some((height, position, bytes)) => {
            let stored = secnet_ledger::decode_stored_block(height, &bytes)?;
            let receipt = stored
                .receipts
                .get(position as usize)
                .ok_or_else(|| Problem::not_found(format!("no receipt {position} at {height}")))?;
            let path = secnet_contract::receipt_proof(&stored.receipts, u64::from(position))
                .map_err(|e| Problem::bad_request(e.to_string()))?;
            Some(ReceiptProof {
                height,
                position: u64::from(position),
                count: stored.receipts.len() as u64,
                receipt: HexBytes(receipt.to_bytes()),
                path: path.iter().map(|h| HexBytes(h.to_vec())).collect(),
            })
        }
    };
    proof
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("transaction {hash} is not committed")))
}
