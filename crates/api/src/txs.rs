//! Submitting signed transactions and asking where they are.

use secnet_types::{Hash, Receipt};
use serde::{Deserialize, Serialize};

/// Body of `POST /v1/tx`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitTx {
    /// The signed transaction's canonical bytes, hex.
    pub tx: String,
}

/// Body of `POST /v1/txs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitTxs {
    /// Signed transactions' canonical bytes, hex.
    pub txs: Vec<String>,
}

/// Answer of `POST /v1/tx` (202): the transaction is admitted and waits for a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Submitted {
    /// The transaction's hash.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: Hash,
    /// Always `pending`.
    pub status: Pending,
}

/// The status of an admitted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Pending {
    /// Waiting for a block.
    Pending,
}

/// Answer of `POST /v1/txs`: one result per transaction, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchAnswer {
    /// How many were admitted.
    pub accepted: usize,
    /// One per transaction.
    pub results: Vec<BatchResult>,
}

/// What became of one transaction of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum BatchResult {
    /// Admitted.
    Admitted {
        /// Its hash.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        hash: Hash,
    },
    /// Not admitted.
    Refused {
        /// Why.
        error: String,
        /// Whether only because the mempool is full (retry later).
        busy: bool,
    },
}

/// Where a transaction is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum TxStatus {
    /// Waiting for a block.
    Pending,
    /// In a block.
    Committed {
        /// The block.
        height: u64,
        /// Its position in the block.
        position: u32,
        /// What happened.
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        receipt: Receipt,
    },
    /// Neither pending nor committed.
    Unknown,
}

impl TxStatus {
    /// The status of a transaction that is not pending, from the ledger's record of it.
    pub fn from_committed(found: Option<(u64, u32, Receipt)>) -> TxStatus {
        match found {
            Some((height, position, receipt)) => TxStatus::Committed {
                height,
                position,
                receipt,
            },
            None => TxStatus::Unknown,
        }
    }
}

/// `GET /v1/tx/{hash}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TxStatusAnswer {
    /// The transaction.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: Hash,
    /// Where it is.
    pub status: TxStatus,
}
