//! Errors of the durable ledger.

use secnet_contract::{BlockRejected, CorruptEntry};
use secnet_types::Hash;

/// What went wrong opening or writing the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database could not be read or written.
    #[error("storage error: {0}")]
    Storage(String),
    /// The data directory belongs to another network.
    #[error("data directory belongs to genesis {stored}, not to this genesis {given}")]
    GenesisMismatch {
        /// Genesis hash stored in the directory.
        stored: Hash,
        /// Genesis hash given.
        given: Hash,
    },
    /// The stored data is inconsistent.
    #[error("stored ledger is corrupt: {0}")]
    Corrupt(String),
    /// The block cannot be applied.
    #[error("block refused: {0}")]
    BlockRejected(#[from] BlockRejected),
    /// An earlier write failed; the in-memory state may be ahead of the disk.
    #[error("an earlier write failed; restart the node to reload the ledger from disk")]
    Poisoned,
    /// The block at a height was pruned from this ledger.
    #[error(
        "block {height} is not kept here: this ledger stores blocks from height {first_block} on"
    )]
    Pruned {
        /// The height asked for.
        height: u64,
        /// The lowest height whose block is stored.
        first_block: u64,
    },
    /// A proof was asked for something the log does not have.
    #[error(transparent)]
    Proof(#[from] secnet_merkle::log::ProofError),
}

impl From<CorruptEntry> for LedgerError {
    fn from(e: CorruptEntry) -> Self {
        LedgerError::Corrupt(e.to_string())
    }
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for LedgerError {
            fn from(e: $t) -> Self {
                LedgerError::Storage(e.to_string())
            }
        }
    )*};
}

storage_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
