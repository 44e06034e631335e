//! The HTTP API: JSON at the edge, errors as RFC 9457 problem details. One module per area:
//! transactions, the chain's blocks and state, certified state for clients that trust no
//! node, and the access log.

mod audit;
mod budget;
mod certified;
mod chain;
mod snapshot;
mod txs;

use crate::backend::Backend;
use crate::problem::{Problem, ProblemBody, problem_json};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;

pub use budget::{
    BLOCK_COST, OLD_BLOCK_TX_HASHES_COST, PROOFS_PER_SOURCE_PER_MINUTE,
    SNAPSHOTS_PER_SOURCE_PER_MINUTE,
};
pub use certified::MAX_STATE_KEYS;
pub use secnet_api::txs::{SubmitTx, SubmitTxs};
pub use snapshot::SNAPSHOT_HEIGHT_HEADER;
pub use txs::UNFUNDED_PER_SOURCE_PER_MINUTE;

/// Largest request body, in bytes (a hex-encoded transaction of the largest size fits).
pub const MAX_BODY_BYTES: usize = 160 * 1024;
/// Largest batch submission body, in bytes.
pub const MAX_BATCH_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Most transactions in one batch submission.
pub const MAX_BATCH_TXS: usize = 4_096;
/// Most log entries returned by one listing request.
const MAX_LOG_PAGE: u64 = 1_000;

type ApiResult<T> = Result<T, Problem>;
type Node = State<Arc<dyn Backend>>;

/// The ledger's half of the API document.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "SecNet node API",
        description = "The ledger (transactions, blocks, accounts, the data contract's listings and grants, the access log with its proofs) and the Private Data Center (encrypted objects, owners' policies, tokens, signed fetches, access history). Errors are RFC 9457 problem details.",
        license(name = "Apache-2.0")
    ),
    paths(
        txs::submit_tx, txs::submit_txs, txs::tx_status, txs::tx_proof,
        chain::block_header, chain::status, chain::block, chain::block_tx_hashes,
        chain::account, chain::listings, chain::listing, chain::grant, chain::metrics,
        certified::block_certificate, certified::certified_state,
        audit::log_entries, audit::log_consistency, audit::log_proof, audit::checkpoint,
        snapshot::snapshot,
        openapi_json
    ),
    components(schemas(
        ProblemBody,
        SubmitTx,
        SubmitTxs,
        secnet_certified::CertifiedHeader,
        secnet_certified::CertifiedState,
        secnet_certified::ReceiptProof
    )),
    tags(
        (name = "ledger", description = "Transactions, blocks and accounts"),
        (name = "contract", description = "Registered data and access grants"),
        (name = "audit", description = "The access log, its proofs and the checkpoint the validators cosigned"),
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

/// Everything a node serves: the ledger's routes and the Private Data Center's (every error
/// answered as problem+json), and the browser application under `/app` (errors as pages);
/// a 30 s request timeout on all.
pub fn app(node: Arc<dyn Backend>, pdc: Arc<crate::pdc::Pdc>, web: Arc<secnet_web::Web>) -> Router {
    router(node.clone())
        .merge(crate::pdc::router(node, pdc))
        .layer(axum::middleware::map_response(problem_json))
        .merge(secnet_web::router(web))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            std::time::Duration::from_secs(30),
        ))
}

/// How the application names a node to its users: its account's first eight hex digits.
pub fn node_name(account: &secnet_types::AccountId) -> String {
    let hex = account.to_string();
    format!("node {}", hex.get(..8).unwrap_or(&hex))
}

/// The API's routes. Those that prove something, pages of listings, whole blocks and the
/// transaction hashes of blocks no longer in memory are charged to their source's budget
/// ([`PROOFS_PER_SOURCE_PER_MINUTE`]); snapshots to another
/// ([`SNAPSHOTS_PER_SOURCE_PER_MINUTE`]).
pub fn router(node: Arc<dyn Backend>) -> Router {
    let proof_budget = budget::SourceBudget::per_minute(PROOFS_PER_SOURCE_PER_MINUTE);
    let proofs = Router::new()
        .route("/v1/tx/{hash}/proof", get(txs::tx_proof))
        .route("/v1/state", get(certified::certified_state))
        .route("/v1/log", get(audit::log_entries))
        .route("/v1/log/consistency", get(audit::log_consistency))
        .route("/v1/log/{index}", get(audit::log_proof))
        .route("/v1/accounts/{id}", get(chain::account))
        .route("/v1/listings", get(chain::listings))
        .route("/v1/listings/{hash}", get(chain::listing))
        .route("/v1/grants/{id}", get(chain::grant))
        .route("/v1/blocks/{height}", get(chain::block))
        .route_layer(axum::middleware::from_fn_with_state(
            proof_budget.clone(),
            budget::charge_proof,
        ));
    Router::new()
        .route("/v1/tx", post(txs::submit_tx))
        .route("/v1/tx/{hash}", get(txs::tx_status))
        .route("/v1/headers/{height}", get(chain::block_header))
        .route(
            "/v1/txs",
            post(txs::submit_txs).layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES)),
        )
        .route("/v1/status", get(chain::status))
        .route("/v1/blocks/{height}/tx-hashes", get(chain::block_tx_hashes))
        .route(
            "/v1/blocks/{height}/certificate",
            get(certified::block_certificate),
        )
        .route("/v1/checkpoint", get(audit::checkpoint))
        .route("/v1/snapshot", get(snapshot::snapshot))
        .route("/metrics", get(chain::metrics))
        .route("/openapi.json", get(openapi_json))
        .merge(proofs)
        .fallback(|| async {
            Problem::not_found("no such endpoint; the API is described at /openapi.json")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::Extension(txs::UnfundedBudget::default()))
        // The same budget for a block's transaction hashes read back from disk.
        .layer(axum::Extension(budget::ProofBudget(proof_budget)))
        // The snapshot route's budget, a budget of its own.
        .layer(axum::Extension(budget::SourceBudget::per_minute(
            SNAPSHOTS_PER_SOURCE_PER_MINUTE,
        )))
        .with_state(node)
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> ApiResult<T>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| Problem::bad_request(format!("{what} {s:?}: {e}")))
}
