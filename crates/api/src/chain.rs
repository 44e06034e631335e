//! Status, blocks, headers, accounts, listings and grants as one node holds them. None of
//! these is proof of anything by itself: a client that trusts no node asks `/v1/state` and
//! checks the answer against a certified root.

use secnet_certified::HexBytes;
use secnet_contract::StateProof;
use secnet_contract::entries::{AccessGrant, Listing};
use secnet_types::{AccountId, BlockHeader, EncryptionKey, Hash, Receipt, Signature, Transaction};
use serde::{Deserialize, Serialize};

/// `GET /v1/status`: the node's own report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeStatus {
    /// The network.
    pub chain_id: String,
    /// The genesis' hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub genesis_hash: Hash,
    /// The last executed height.
    pub height: u64,
    /// Its block's hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub block_hash: Hash,
    /// Its block's timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The state root after it.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub state_root: Hash,
    /// Entries in the access log.
    pub log_size: u64,
    /// The access log's RFC 6962 root.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub log_root: Hash,
    /// Transactions waiting for a block.
    pub mempool: usize,
    /// Entries in the contract state.
    #[serde(default)]
    pub state_entries: u64,
    /// Of them, those whose leaves the node's state tree holds in memory; the rest are in
    /// its spill file.
    #[serde(default)]
    pub state_entries_in_memory: u64,
    /// This node's account.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub node: AccountId,
    /// The validators and how far each is known to be.
    pub validators: Vec<ValidatorStatus>,
}

/// One validator as a node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidatorStatus {
    /// The validator's key.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub key: AccountId,
    /// Whether it is the node answering.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Its executed height, if known.
    pub height: Option<u64>,
    /// The highest height it knows finalized (the answering node only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalized: Option<u64>,
    /// When it last announced its height, milliseconds since the Unix epoch (peers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_unix_ms: Option<u64>,
}

/// `GET /v1/headers/{height}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeaderAnswer {
    /// The height.
    pub height: u64,
    /// The header's canonical encoding, hex.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub header: HexBytes,
}

/// The longest a request for a block not applied yet waits for it
/// (`GET /v1/blocks/{height}/tx-hashes?wait_ms=`): a waiting request holds only a
/// connection and a small task, and this bounds how long.
pub const MAX_BLOCK_WAIT_MS: u64 = 5_000;

/// `GET /v1/blocks/{height}/tx-hashes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockTxHashes {
    /// The height.
    pub height: u64,
    /// The block's hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: Hash,
    /// Its transactions' hashes, in order.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub tx_hashes: Vec<Hash>,
    /// For each, whether it was applied (`false`: its receipt is a rejection).
    pub applied: Vec<bool>,
}

/// `GET /v1/blocks/{height}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockAnswer {
    /// The block's hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: Hash,
    /// The block's canonical bytes, hex, for clients that check it against a certified
    /// header.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub bytes: HexBytes,
    /// The header.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub header: BlockHeader,
    /// The state root after the block.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub state_root: Hash,
    /// Entries in the access log after the block.
    pub log_size: u64,
    /// The transactions.
    pub transactions: Vec<TxView>,
    /// One receipt per transaction.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub receipts: Vec<Receipt>,
}

/// A transaction in a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TxView {
    /// Its hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: Hash,
    /// What it says.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub tx: Transaction,
    /// The sender's signature.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub signature: Signature,
}

/// `GET /v1/accounts/{id}`: the account as of the node's tip, with a proof against the tip's
/// root (which only a certified root makes worth anything).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountAnswer {
    /// The account.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub account: AccountId,
    /// Its balance.
    pub balance: u64,
    /// Its next nonce.
    pub nonce: u64,
    /// Its registered encryption key.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub encryption_key: Option<EncryptionKey>,
    /// The state proof.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub proof: StateProof,
}

/// `GET /v1/listings/{hash}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListingAnswer {
    /// The registration.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub listing: Listing,
    /// Its state proof against the node's tip.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub proof: StateProof,
}

/// `GET /v1/grants/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrantAnswer {
    /// The grant.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub grant: AccessGrant,
    /// Its state proof against the node's tip.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub proof: StateProof,
}
