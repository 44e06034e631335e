//! Certified state: finalization certificates and state proofs as of certified heights, for
//! clients that trust no node.

use super::chain::stored_header;
use super::{ApiResult, Node};
use crate::backend::Backend;
use crate::problem::{Problem, ProblemBody};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use secnet_certified::{CertifiedHeader, CertifiedState, HexBytes};
use secnet_contract::StateKey;
use secnet_types::BlockHeader;
use serde::Deserialize;
use std::sync::Arc;

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
        (status = 200, description = "the header's canonical bytes and the certificate, hex", body = CertifiedHeader),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no block at that height yet, or it has no certificate of its own (it was finalized through a descendant)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn block_certificate(
    State(node): Node,
    Path(height): Path<String>,
) -> ApiResult<Json<CertifiedHeader>> {
    let (height, header) = stored_header(&node, &height)?;
    let certificate = node.certificate(height).await.ok_or_else(|| {
        Problem::not_found(format!(
            "block {height} has no certificate of its own; a later block's certifies it"
        ))
    })?;
    Ok(Json(CertifiedHeader {
        header: HexBytes(header.to_bytes()),
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
pub(super) async fn newest_certified(
    node: &Arc<dyn Backend>,
    tip: u64,
) -> ApiResult<Option<(BlockHeader, Vec<u8>)>> {
    for header in node.with_ledger(|l| l.answerable_headers(tip))? {
        if let Some(certificate) = node.certificate(header.height).await {
            return Ok(Some((header, certificate)));
        }
    }
    Ok(None)
}

#[derive(Deserialize)]
pub(super) struct StateQuery {
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
        (status = 200, description = "certified header, state height and one proof per key", body = CertifiedState),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "this address is over its budget of proofs a minute: retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "no certified state yet (retry shortly)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn certified_state(
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
    let busy = || {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable",
            "too many certified-state queries at once; retry shortly",
        )
    };
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
            // The permit bounds the work (searching, proving), not the waiting.
            let permit = STATE_QUERIES.try_acquire().map_err(|_| busy())?;
            let newest = newest_certified(&node, tip).await?;
            drop(permit);
            if let Some(newest) = newest {
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
        let _permit = STATE_QUERIES.try_acquire().map_err(|_| busy())?;
        let answer = node.with_ledger(|l| l.certified_state(&header, certificate, &keys))?;
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
