//! The access log: entries, inclusion and consistency proofs, and the checkpoint the
//! validators cosigned.

use super::MAX_LOG_PAGE;
use super::{ApiResult, Node, parse};
use crate::problem::Problem;
use crate::problem::ProblemBody;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use secnet_api::audit::{ConsistencyProof, InclusionProof, LogItem, LogPage};
use secnet_certified::CosignedCheckpointAnswer;
use secnet_contract::LogEntry;
use secnet_ledger::LogSubject;
use secnet_types::Hash;
use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct LogQuery {
    from: Option<u64>,
    limit: Option<u64>,
    /// Only entries of this grant (the grant itself and the accesses presenting it).
    grant: Option<String>,
    /// Only entries about this data.
    data: Option<String>,
}

/// Whether a log entry is about `grant` and `data` (each when given).
pub(super) fn log_entry_matches(
    entry: &LogEntry,
    grant: Option<&Hash>,
    data: Option<&Hash>,
) -> bool {
    let (g, d) = match entry {
        LogEntry::Grant { grant, data, .. } => (Some(grant), Some(data)),
        LogEntry::Access { entry, .. } => (entry.grant.as_ref(), Some(&entry.data)),
        // An emergency access names an owner, not a grant or one piece of data.
        LogEntry::Emergency { .. } => (None, None),
        LogEntry::Payment { data, .. } => (None, Some(data)),
    };
    grant.is_none_or(|want| g == Some(want)) && data.is_none_or(|want| d == Some(want))
}

/// `GET /v1/log`: entries from `from`, at most `limit`; with `grant` or `data`, only the
/// matching ones, read through the log's index (at most `limit` of them from `from`).
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
        (status = 200, description = "entries with their indices", body = LogPage),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "this address is over its budget of proofs a minute: retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn log_entries(
    State(node): Node,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<LogPage>> {
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
    let entries = node.with_ledger(|l| -> Result<Vec<LogItem>, secnet_ledger::LedgerError> {
        let size = l.state().log().len();
        // A filter reads a page of the index of what leaves are about; otherwise a page in
        // order. Either way at most `limit` leaves are read.
        let page = usize::try_from(limit).unwrap_or(usize::MAX);
        let indices: Vec<u64> = match (grant, data) {
            (Some(g), _) => l.log_indices_page(LogSubject::Grant(g), from, page)?,
            (None, Some(d)) => l.log_indices_page(LogSubject::Data(d), from, page)?,
            (None, None) => (from..size.min(from.saturating_add(limit))).collect(),
        };
        let indices: Vec<u64> = indices.into_iter().filter(|i| *i < size).collect();
        let mut out = Vec::with_capacity(indices.len());
        for (index, bytes) in indices.iter().zip(l.log_leaves(&indices)?) {
            let Some(bytes) = bytes else { continue };
            let entry = LogEntry::from_bytes(&bytes).map_err(|e| {
                secnet_ledger::LedgerError::Corrupt(format!("log leaf {index}: {e}"))
            })?;
            if log_entry_matches(&entry, grant.as_ref(), data.as_ref()) {
                out.push(LogItem {
                    index: *index,
                    entry,
                });
            }
        }
        Ok(out)
    })??;
    Ok(Json(LogPage { from, entries }))
}

#[derive(Deserialize)]
pub(super) struct SizeQuery {
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
        (status = 200, description = "inclusion proof with the leaf bytes", body = InclusionProof),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "this address is over its budget of proofs a minute: retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn log_proof(
    State(node): Node,
    Path(index): Path<String>,
    Query(q): Query<SizeQuery>,
) -> ApiResult<Json<InclusionProof>> {
    let index: u64 = parse("leaf index", &index)?;
    // The proof reads the stored log after the ledger is let go.
    let log = node.with_ledger(|l| l.log_reader())??;
    Ok(Json(log.inclusion_proof(index, q.size)?))
}

#[derive(Deserialize)]
pub(super) struct ConsistencyQuery {
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
        (status = 200, description = "consistency proof", body = ConsistencyProof),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "this address is over its budget of proofs a minute: retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn log_consistency(
    State(node): Node,
    Query(q): Query<ConsistencyQuery>,
) -> ApiResult<Json<ConsistencyProof>> {
    let log = node.with_ledger(|l| l.log_reader())??;
    let to = q.to.unwrap_or(log.size());
    Ok(Json(log.consistency_proof(q.from, to)?))
}

#[utoipa::path(
    get,
    path = "/v1/checkpoint",
    tag = "audit",
    summary = "The access log's head cosigned by a quorum of validators (C2SP tlog-cosignature)",
    description = "The largest log head that at least 2f+1 of the genesis validators cosigned, \
        as far as this node heard: a C2SP checkpoint note with one `tlog-cosignature` v1 line \
        per validator. Check it with the genesis alone (`secnet audit cosigned`).",
    responses(
        (status = 200, description = "the cosigned checkpoint", body = CosignedCheckpointAnswer),
        (status = 503, description = "no head has been cosigned by a quorum yet", body = ProblemBody),
    )
)]
pub(super) async fn checkpoint(State(node): Node) -> ApiResult<Json<CosignedCheckpointAnswer>> {
    let cosigned = node.cosigned_checkpoint().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service unavailable",
            "no log head has been cosigned by a quorum of validators yet; retry shortly",
        )
    })?;
    let (chain_id, validators) =
        node.with_ledger(|l| (l.genesis().chain_id.clone(), l.genesis().validators.len()))?;
    Ok(Json(CosignedCheckpointAnswer {
        note: cosigned.note(&chain_id),
        cosigners: cosigned.cosigners(),
        quorum: secnet_certified::quorum_of(validators),
        checkpoint: cosigned.checkpoint,
    }))
}
