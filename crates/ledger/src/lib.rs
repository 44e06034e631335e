//! The durable ledger of one node: the contract state, every block with its receipts, and
//! the access log, kept in one redb database.
//!
//! Blocks are written in redb write transactions of one or more whole blocks (a validator
//! writes every block executed since its last flush in one, see [`Syncer`]): after a crash
//! at any moment the ledger reopens at the last block whose transaction committed, and its
//! state root equals the root obtained by replaying every stored block from genesis.

mod answer;
mod audit;
mod blocks;
mod error;
mod expiry_file;
mod index;
mod journal;
mod log_tree;
mod parts;
mod runs;
mod snapshot;
mod spill;
mod store;
mod stored_block;
mod unwritten;
mod usage;

/// redb's page: a leaf whose rows fit in it takes one; a larger leaf (one row larger than a
/// page) takes a run of pages rounded up to a power of two, and such a run, once freed,
/// serves only allocations of its size. So what is written in volume is cut to fit a page.
const PAGE_BYTES: usize = 4_096;

/// What a redb leaf of one row adds to it: the leaf's header (4 bytes), and the key's and the
/// value's length (4 each, for a key or value of variable length).
const LEAF_OVERHEAD: usize = 12;

pub use answer::CERTIFIED_SEARCH;
pub use error::LedgerError;
pub use log_tree::LogReader;
pub use secnet_certified::checkpoint::{
    Checkpoint, CheckpointError, SignedCheckpoint, verifier_key,
};
pub use secnet_certified::log_proof::{AuditError, ConsistencyProof, InclusionProof};
pub use snapshot::{
    MAX_SNAPSHOT_ITEM, RecentBlock, SNAPSHOT_BLOCKS, SNAPSHOT_MAGIC, Snapshot, SnapshotError,
    read_head,
};
pub use store::{
    GRANT_CHUNKS_IN_MEMORY, LEDGER_FILE, LISTING_CHANGES_HEIGHTS, Ledger, LedgerFootprint,
    LogSubject, RECENT_STATES, ReplayReport, STATE_BYTES_PER_ENTRY, SnapshotSource, StateMemory,
    Syncer, decode_stored_block,
};
pub use stored_block::{BlockTxs, StoredBlock};
pub use usage::{DiskUsage, IndexUsage, TableUsage, disk_usage};
