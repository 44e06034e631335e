//! Submitting transactions and asking where they are.

use super::MAX_BATCH_TXS;
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
use std::collections::HashMap;
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
    if let Err(refused) = budget.charge(&*node, source, std::slice::from_ref(&tx)) {
        return Ok(*refused);
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
    let admitted = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        budget
            .charge(&*node, source, &txs)
            .map(|()| node.submit_batch(txs))
    })
    .await
    .map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            format!("admission failed: {e}"),
        )
    })?;
    let results = match admitted {
        Ok(results) => results?,
        Err(refused) => return Ok(*refused),
    };
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
    Ok(Json(BatchAnswer { accepted, results }).into_response())
}

/// Transactions from accounts that hold nothing, or too little to back all they may have
/// pending (less than [`crate::mempool::FREE_PENDING_PER_SENDER`] units) — the pool's free
/// lane takes theirs — that one network source (an IPv4 address, an IPv6 /64) may submit per minute, at most
/// this many at once and refilled evenly over the minute. Fresh keys cost nothing, so
/// without this one source could keep the free lane full and keep new patients, who join
/// with no balance, from publishing their keys and consents.
pub const UNFUNDED_PER_SOURCE_PER_MINUTE: u32 = 64;
/// Sources counted at once; when more arrive, those whose budget is whole are forgotten,
/// and if none is, the newcomers share one budget.
const MAX_COUNTED_SOURCES: usize = 65_536;

/// What each source has left of [`UNFUNDED_PER_SOURCE_PER_MINUTE`] (one per router, so
/// nodes in one process do not share it).
#[derive(Debug, Clone, Default)]
pub struct UnfundedBudget(Arc<Mutex<SourceBuckets>>);

/// A token bucket per source: `(tokens in thousandths, when last refilled, ms)`.
#[derive(Debug, Default)]
struct SourceBuckets(HashMap<[u8; 8], (u64, u64)>);

/// A whole budget, in thousandths of a transaction.
const FULL: u64 = UNFUNDED_PER_SOURCE_PER_MINUTE as u64 * 1_000;

impl SourceBuckets {
    /// Takes `n` from `source`'s budget at `now_ms`; if it has not that much, takes nothing
    /// and says in how many seconds it will.
    fn take(&mut self, source: [u8; 8], n: u32, now_ms: u64) -> Result<(), u64> {
        let refill = |(tokens, at): (u64, u64)| -> u64 {
            // 64 a minute: 64,000 thousandths per 60,000 ms.
            let gained = now_ms.saturating_sub(at).saturating_mul(FULL) / 60_000;
            tokens.saturating_add(gained).min(FULL)
        };
        if self.0.len() >= MAX_COUNTED_SOURCES && !self.0.contains_key(&source) {
            self.0.retain(|_, bucket| refill(*bucket) < FULL);
        }
        let key = if self.0.len() >= MAX_COUNTED_SOURCES && !self.0.contains_key(&source) {
            [0xee; 8]
        } else {
            source
        };
        let bucket = self.0.entry(key).or_insert((FULL, now_ms));
        let tokens = refill(*bucket);
        let want = u64::from(n).saturating_mul(1_000);
        if want > tokens {
            let missing = want.saturating_sub(tokens);
            let wait_ms = missing.saturating_mul(60_000).div_ceil(FULL);
            *bucket = (tokens, now_ms);
            return Err(wait_ms.div_ceil(1_000).max(1));
        }
        *bucket = (tokens - want, now_ms);
        Ok(())
    }
}

impl UnfundedBudget {
    /// Charges `source` for the transactions in `txs` whose senders hold too little to back
    /// every transaction they may have pending (less than
    /// [`crate::mempool::FREE_PENDING_PER_SENDER`]: some of theirs go to the free lane); a 429
    /// answer (with `Retry-After`) if its budget for this minute does not cover them.
    fn charge(
        &self,
        node: &dyn crate::backend::Backend,
        source: Option<std::net::IpAddr>,
        txs: &[SignedTransaction],
    ) -> Result<(), Box<Response>> {
        let unfunded = node
            .with_ledger(|l| {
                txs.iter()
                    .filter(|t| {
                        l.state().account(&t.tx().sender).balance
                            < crate::mempool::FREE_PENDING_PER_SENDER
                    })
                    .count()
            })
            .map_err(|e| Box::new(Problem::from(e).into_response()))?;
        if unfunded == 0 {
            return Ok(());
        }
        let n = u32::try_from(unfunded).unwrap_or(u32::MAX);
        let now = crate::datadir::now_ms();
        let key = secnet_pdc::auth::source_key(source);
        let mut minute = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        minute.take(key, n, now).map_err(|retry_s| {
            let status = StatusCode::TOO_MANY_REQUESTS;
            let answer = (
                status,
                [(header::RETRY_AFTER, retry_s.to_string())],
                Problem::new(
                    status,
                    "busy",
                    format!(
                        "this address may submit {UNFUNDED_PER_SOURCE_PER_MINUTE} transactions a minute from accounts that hold less than {} units; {unfunded} more is over that; retry in {retry_s} s, or send from a funded account", crate::mempool::FREE_PENDING_PER_SENDER
                    ),
                ),
            )
                .into_response();
            Box::new(answer)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_spends_its_budget_and_it_refills_over_the_minute() {
        let mut m = SourceBuckets::default();
        let (a, b) = ([1; 8], [2; 8]);
        let t = 1_000_000;
        assert!(m.take(a, UNFUNDED_PER_SOURCE_PER_MINUTE - 1, t).is_ok());
        assert_eq!(
            m.take(a, 2, t),
            Err(1),
            "over budget: nothing taken; one more in ~1 s"
        );
        assert!(m.take(a, 1, t).is_ok(), "what was left is still there");
        assert!(m.take(a, 1, t).is_err());
        assert!(
            m.take(b, UNFUNDED_PER_SOURCE_PER_MINUTE, t).is_ok(),
            "another source"
        );
        // A minute's budget refills evenly: 16 after 15 s, and never more than whole.
        assert!(m.take(a, 16, t + 15_000).is_ok());
        assert!(m.take(a, 1, t + 15_000).is_err());
        assert!(
            m.take(a, UNFUNDED_PER_SOURCE_PER_MINUTE, t + 3_600_000)
                .is_ok()
        );
        assert!(m.take(a, 1, t + 3_600_000).is_err());
        assert!(m.take(a, u32::MAX, t).is_err(), "no overflow");
    }

    #[test]
    fn counted_sources_stay_bounded() {
        let mut m = SourceBuckets::default();
        for i in 0..MAX_COUNTED_SOURCES as u64 {
            m.take(i.to_be_bytes(), 1, 0).unwrap();
        }
        // Nobody's budget is whole yet: newcomers share one.
        let late = u64::MAX.to_be_bytes();
        m.take(late, UNFUNDED_PER_SOURCE_PER_MINUTE, 0).unwrap();
        assert!(
            m.take([7; 8], 1, 0).is_err(),
            "shares the late source's spent budget"
        );
        assert_eq!(m.0.len(), MAX_COUNTED_SOURCES + 1);
        // A minute later every budget is whole again, and the whole ones are forgotten.
        m.take([8; 8], 1, 60_000).unwrap();
        assert_eq!(m.0.len(), 1);
    }
}
