//! Blocks, headers, accounts, listings and grants as the node holds them, the node's own
//! status and its metrics.

use super::budget::{OLD_BLOCK_TX_HASHES_COST, ProofBudget};
use super::{ApiResult, Node, parse};
use crate::backend::Backend;
use crate::problem::{Problem, ProblemBody};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use secnet_api::chain::{
    AccountAnswer, BlockAnswer, BlockTxHashes, GrantAnswer, HeaderAnswer, ListingAnswer,
    MAX_BLOCK_WAIT_MS, NodeStatus, TxView,
};
use secnet_certified::HexBytes;
use secnet_client::api::MAX_LISTINGS_PAGE;
use secnet_contract::StateKey;
use secnet_contract::entries::Listing;
use secnet_ledger::BlockTxs;
use secnet_types::{AccountId, Hash};
use serde::Deserialize;
use std::sync::Arc;

#[utoipa::path(
    get,
    path = "/v1/headers/{height}",
    tag = "ledger",
    summary = "A block header's canonical bytes",
    params(
        ("height" = String, Path, description = "block height"),
    ),
    responses(
        (status = 200, description = "the header, hex", body = HeaderAnswer),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no block at that height yet", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn block_header(
    State(node): Node,
    Path(height): Path<String>,
) -> ApiResult<Json<HeaderAnswer>> {
    let (height, header) = stored_header(&node, &height)?;
    Ok(Json(HeaderAnswer {
        height,
        header: HexBytes(header.to_bytes()),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "ledger",
    summary = "The node's chain, height, state root, log head and validators",
    responses(
        (status = 200, description = "status", body = NodeStatus),
    )
)]
pub(super) async fn status(State(node): Node) -> ApiResult<Json<NodeStatus>> {
    let mempool = node.pending()?;
    let validators = node.validators();
    Ok(Json(node.with_ledger(|l| {
        let tip = l.state().tip();
        let log = l.state().log();
        NodeStatus {
            chain_id: l.genesis().chain_id.clone(),
            genesis_hash: l.genesis_hash(),
            height: tip.height,
            block_hash: tip.block_hash,
            timestamp_ms: tip.timestamp_ms,
            state_root: tip.state_root,
            log_size: log.len(),
            log_root: Hash(log.root()),
            mempool,
            state_entries: l.state().entry_count() as u64,
            state_entries_in_memory: l.state().resident_entries() as u64,
            node: node.key().account(),
            validators,
        }
    })?))
}

/// The stored block at `height`.
pub(super) fn stored_block(
    node: &Arc<dyn Backend>,
    height: u64,
) -> ApiResult<secnet_ledger::StoredBlock> {
    // Decoded after the ledger is released: a large block's decoding must not hold up
    // execution.
    let bytes = node
        .with_ledger(|l| l.block_bytes(height))??
        .ok_or_else(|| Problem::not_found(format!("no block at height {height}")))?;
    Ok(secnet_ledger::decode_stored_block(height, &bytes)?)
}

/// The header of the block at the height named in a path (read without its body).
pub(super) fn stored_header(
    node: &Arc<dyn Backend>,
    height: &str,
) -> ApiResult<(u64, secnet_types::BlockHeader)> {
    let height: u64 = parse("height", height)?;
    let header = node
        .with_ledger(|l| l.header(height))??
        .ok_or_else(|| Problem::not_found(format!("no block at height {height}")))?;
    Ok((height, header))
}

/// How long to wait for a block not applied yet.
#[derive(Deserialize)]
pub(super) struct BlockWait {
    wait_ms: Option<String>,
}

/// Waits until the ledger has applied `height`, `most` passed, or the server is stopping
/// (`stopping`: a waiting request does not hold a shutdown), whichever comes first. The
/// ledger is not held meanwhile.
async fn wait_for_block(
    node: &Arc<dyn Backend>,
    height: u64,
    most: std::time::Duration,
    stopping: Option<secnet_tls::Stopping>,
) {
    let mut applied = node.applied_heights();
    let stopped = async {
        match stopping {
            Some(stopping) => stopping.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(most, applied.wait_for(|h| *h >= height)) => {}
        () = stopped => {}
    }
}

/// Only the hashes of a block's transactions, in order: what a client watching for its
/// transactions needs, without the cost of the full block.
#[utoipa::path(
    get,
    path = "/v1/blocks/{height}/tx-hashes",
    tag = "ledger",
    summary = "A block's transaction hashes, in order, and whether each was applied",
    params(
        ("height" = String, Path, description = "block height"),
        ("wait_ms" = Option<u64>, Query, description = "if the block is not applied yet, wait for it up to this many milliseconds (at most 5000) before answering 404"),
    ),
    responses(
        (status = 200, description = "height, block hash and transaction hashes", body = BlockTxHashes),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no block at that height yet", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "the block is no longer among those kept in memory, and this address is over its budget of proofs a minute (such a block costs 10): retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn block_tx_hashes(
    State(node): Node,
    Path(height): Path<String>,
    Query(wait): Query<BlockWait>,
    stopping: Option<axum::Extension<secnet_tls::Stopping>>,
    axum::Extension(budget): axum::Extension<ProofBudget>,
    secnet_web::Source(source): secnet_web::Source,
) -> ApiResult<Response> {
    let height: u64 = parse("height", &height)?;
    if let Some(ms) = wait.wait_ms {
        let ms: u64 = parse("wait_ms", &ms)?;
        if ms > MAX_BLOCK_WAIT_MS {
            return Err(Problem::bad_request(format!(
                "wait_ms {ms}: a request waits at most {MAX_BLOCK_WAIT_MS} ms"
            )));
        }
        let stopping = stopping.map(|axum::Extension(s)| s);
        wait_for_block(
            &node,
            height,
            std::time::Duration::from_millis(ms),
            stopping,
        )
        .await;
    }
    // Blocks just applied, the ones watchers ask for, come from memory; others are decoded,
    // charged to the budget of proofs first (a height not applied yet costs nothing).
    let (recent, tip) =
        node.with_ledger(|l| (l.recent_block_txs(height), l.state().tip().height))?;
    let txs = match recent {
        Some(txs) => BlockTxs::clone(&txs),
        None => {
            if height <= tip
                && let Some(busy) = budget.charge(source, OLD_BLOCK_TX_HASHES_COST)
            {
                return Ok(busy);
            }
            let stored = stored_block(&node, height)?;
            BlockTxs::of(&stored.block, &stored.receipts)
        }
    };
    Ok(Json(BlockTxHashes {
        height,
        hash: txs.block_hash,
        tx_hashes: txs.tx_hashes,
        applied: txs.applied,
    })
    .into_response())
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
        (status = 200, description = "header, transactions, receipts, state root, and the block's canonical bytes (hex) for clients that check it against a certified header", body = BlockAnswer),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no block at that height yet", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "this address is over its budget of proofs a minute (a whole block costs 50): retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn block(
    State(node): Node,
    Path(height): Path<String>,
) -> ApiResult<Json<BlockAnswer>> {
    let stored = stored_block(&node, parse("height", &height)?)?;
    Ok(Json(BlockAnswer {
        hash: stored.block.hash(),
        bytes: HexBytes(stored.block.to_bytes()),
        transactions: stored
            .block
            .txs
            .iter()
            .map(|t| TxView {
                hash: t.hash(),
                tx: t.tx().clone(),
                signature: *t.signature(),
            })
            .collect(),
        header: stored.block.header,
        state_root: stored.state_root,
        log_size: stored.log_size,
        receipts: stored.receipts,
    }))
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
        (status = 200, description = "account and its state proof", body = AccountAnswer),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "this address is over its budget of proofs a minute: retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn account(
    State(node): Node,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountAnswer>> {
    let id: AccountId = parse("account", &id)?;
    // Only the state tree's version is taken under the ledger: a part of it that left
    // memory is read back without holding up blocks.
    let (a, snapshot) = node.with_ledger(|l| (l.state().account(&id), l.state().snapshot()))?;
    Ok(Json(AccountAnswer {
        account: id,
        balance: a.balance,
        nonce: a.nonce,
        encryption_key: a.encryption_key,
        proof: snapshot.prove(&StateKey::Account(id)),
    }))
}

#[derive(Deserialize)]
pub(super) struct ListingQuery {
    address: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/listings",
    tag = "contract",
    summary = "Registered data",
    params(
        ("address" = Option<String>, Query, description = "only the listing registered at this address"),
        ("after" = Option<String>, Query, description = "only listings whose hash sorts after this one (the last of the previous page)"),
        ("limit" = Option<usize>, Query, description = "most listings (default and at most 1000)"),
    ),
    responses(
        (status = 200, description = "listings in hash order; fewer than `limit` means the last page", body = Vec<Object>),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "this address is over its budget a minute (a page costs one, and one per 100 listings asked for): retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn listings(
    State(node): Node,
    Query(q): Query<ListingQuery>,
) -> ApiResult<Json<Vec<Listing>>> {
    let after: Option<Hash> = q
        .after
        .as_deref()
        .map(|a| parse("data hash", a))
        .transpose()?;
    let limit = q
        .limit
        .unwrap_or(MAX_LISTINGS_PAGE)
        .clamp(1, MAX_LISTINGS_PAGE);
    // Under the ledger only the state tree's version and the page's hashes are taken; the
    // listings are read from that version after it is let go.
    let (snapshot, hashes) = node.with_ledger(|l| {
        let hashes: Vec<Hash> = match &q.address {
            Some(_) => Vec::new(),
            None => l.listed_hashes_after(after.as_ref(), limit)?,
        };
        Ok::<_, secnet_ledger::LedgerError>((l.state().snapshot(), hashes))
    })??;
    Ok(Json(match &q.address {
        Some(address) => snapshot.listing_at(address).into_iter().collect(),
        None => hashes.iter().filter_map(|h| snapshot.listing(h)).collect(),
    }))
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
        (status = 200, description = "listing and proof", body = ListingAnswer),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "nothing registered with that hash", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "this address is over its budget of proofs a minute: retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn listing(
    State(node): Node,
    Path(hash): Path<String>,
) -> ApiResult<Json<ListingAnswer>> {
    let hash: Hash = parse("data hash", &hash)?;
    let snapshot = node.with_ledger(|l| l.state().snapshot())?;
    let body = snapshot.listing(&hash).map(|listing| ListingAnswer {
        listing,
        proof: snapshot.prove(&StateKey::Listing(hash)),
    });
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
        (status = 200, description = "grant and proof", body = GrantAnswer),
        (status = 400, description = "malformed input, with what was wrong", body = ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "no such grant", body = ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "this address is over its budget of proofs a minute: retry later (Retry-After)", body = ProblemBody, content_type = "application/problem+json"),
    )
)]
pub(super) async fn grant(
    State(node): Node,
    Path(id): Path<String>,
) -> ApiResult<Json<GrantAnswer>> {
    let id: Hash = parse("grant id", &id)?;
    let snapshot = node.with_ledger(|l| l.state().snapshot())?;
    let body = snapshot.grant(&id).map(|grant| GrantAnswer {
        grant,
        proof: snapshot.prove(&StateKey::Grant(id)),
    });
    body.map(Json)
        .ok_or_else(|| Problem::not_found(format!("no access grant {id}")))
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
pub(super) async fn metrics(State(node): Node) -> ApiResult<Response> {
    let pending = node.pending()?;
    let (height, log_size, footprint) = node.with_ledger(|l| {
        let footprint = l.footprint()?;
        Ok::<_, secnet_ledger::LedgerError>((
            l.state().tip().height,
            l.state().log().len(),
            footprint,
        ))
    })??;
    let state = footprint.state;
    let gauges: [(&str, &str, u64); 17] = [
        ("height", "height of the last applied block", height),
        ("log_size", "leaves of the access log", log_size),
        (
            "mempool_pending",
            "transactions waiting in the mempool",
            pending as u64,
        ),
        (
            "state_entries",
            "entries in the contract state",
            state.entries as u64,
        ),
        (
            "state_entries_in_memory",
            "state entries whose leaves the state tree holds in memory",
            state.entries_in_memory as u64,
        ),
        (
            "state_stored_subtrees",
            "subtrees of the state tree in spill files, outside groups (about 160 bytes of memory each)",
            state.stored_subtrees as u64,
        ),
        (
            "state_stored_groups",
            "groups of such subtrees whose places are in the spill file too (one node in memory each)",
            state.stored_groups as u64,
        ),
        (
            "state_entries_moving",
            "state entries in an earlier spill file, still to move to the current one",
            state.entries_moving as u64,
        ),
        (
            "state_accounts",
            "accounts, kept decoded in memory",
            state.accounts as u64,
        ),
        (
            "state_grants_by_expiry",
            "grants kept by expiry until they are retired (40 bytes each in memory or in a file)",
            state.grants_by_expiry as u64,
        ),
        (
            "state_grants_by_expiry_in_memory",
            "of the grants by expiry, those in memory (with a state memory bound, the rest are in a file)",
            state.grants_by_expiry_in_memory as u64,
        ),
        (
            "ledger_recent_heights",
            "recent heights whose state trees are kept for proofs",
            footprint.recent_heights as u64,
        ),
        (
            "ledger_blocks_unwritten",
            "applied blocks whose rows are not on disk yet",
            footprint.blocks_unwritten as u64,
        ),
        (
            "ledger_index_rows_waiting",
            "index rows waiting in memory to be merged",
            footprint.index_rows_waiting as u64,
        ),
        (
            "ledger_state_value_bytes_waiting",
            "bytes of state values waiting in memory with their keys to be written",
            footprint.state_value_bytes_waiting as u64,
        ),
        (
            "ledger_listing_changes",
            "content hashes of listings recent blocks wrote",
            footprint.listing_changes as u64,
        ),
        (
            "ledger_page_cache_bytes",
            "bytes in the ledger database's page cache and write buffer",
            footprint.page_cache_bytes,
        ),
    ];
    let counters: [(&str, &str, u64); 1] = [(
        "state_spill_files_started_total",
        "spill files the state tree started since the ledger was opened (the first, then one each time a file of mostly dead copies was replaced)",
        footprint.spill_files_started,
    )];
    let mut text = String::new();
    let kinds = gauges
        .into_iter()
        .map(|g| (g, "gauge"))
        .chain(counters.into_iter().map(|c| (c, "counter")));
    for ((name, help, value), kind) in kinds {
        text.push_str(&format!(
            "# HELP secnet_{name} {help}\n# TYPE secnet_{name} {kind}\nsecnet_{name} {value}\n"
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
