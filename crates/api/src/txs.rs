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

/// The media type of a binary batch for `POST /v1/txs`: each signed transaction's canonical
/// bytes, preceded by their length as a 4-byte big-endian integer. For clients that send many
/// transactions: no hex, no JSON.
pub const BATCH_MEDIA_TYPE: &str = "application/vnd.secnet.tx-batch";

/// Encodes a binary batch ([`BATCH_MEDIA_TYPE`]).
pub fn encode_batch(txs: &[secnet_types::SignedTransaction]) -> Vec<u8> {
    let mut out = Vec::new();
    for tx in txs {
        let bytes = tx.to_bytes();
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// Why a binary batch does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchDecodeError {
    /// More transactions than allowed.
    #[error("more than {max} transactions in one batch")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// The body ends inside a length prefix or a transaction.
    #[error("the batch ends inside transaction {index}")]
    Truncated {
        /// Position in the batch.
        index: usize,
    },
    /// A transaction is refused by the decoder.
    #[error("transaction {index}: {error}")]
    Transaction {
        /// Position in the batch.
        index: usize,
        /// What was wrong.
        error: String,
    },
}

/// Decodes a binary batch of at most `max` transactions; every transaction is decoded with
/// its bounds, and a length prefix beyond the body is refused before anything is copied.
pub fn decode_batch(
    mut body: &[u8],
    max: usize,
) -> Result<Vec<secnet_types::SignedTransaction>, BatchDecodeError> {
    let mut txs = Vec::new();
    while !body.is_empty() {
        let index = txs.len();
        if index == max {
            return Err(BatchDecodeError::TooMany { max });
        }
        let (len, rest) = body
            .split_first_chunk::<4>()
            .ok_or(BatchDecodeError::Truncated { index })?;
        let len = u32::from_be_bytes(*len) as usize;
        let (tx, rest) = rest
            .split_at_checked(len)
            .ok_or(BatchDecodeError::Truncated { index })?;
        txs.push(
            secnet_types::SignedTransaction::decode_bytes(tx).map_err(|e| {
                BatchDecodeError::Transaction {
                    index,
                    error: e.to_string(),
                }
            })?,
        );
        body = rest;
    }
    Ok(txs)
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
