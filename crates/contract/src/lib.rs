//! SecNet's data contract (the paper's Algorithm 1, extended with holders, payments split
//! between holder and owner, time-limited grants and recorded accesses) as a pure state
//! machine: [`State::apply_block`] takes a block and returns receipts, the state changes to
//! persist, and the new state root.
//!
//! No I/O, no clock, no randomness that affects results: the same blocks from the same
//! genesis give the same state root on every machine.

mod apply;
mod by_expiry;
pub mod entries;
pub mod log_entry;
pub mod proof;
pub mod receipts;
pub mod sandbox;
mod state;

pub use apply::{BlockOutcome, BlockRejected, StateWrite};
pub use by_expiry::{EXPIRY_CHUNK_BYTES, ExpiryStore};
pub use entries::{
    AccessGrant, Account, CorruptEntry, Listing, LogHead, StateKey, StateValue, Subscription,
};
pub use log_entry::LogEntry;
pub use proof::{StateProof, StateProofError};
pub use receipts::{receipt_proof, receipts_root};
pub use sandbox::{Sandbox, SandboxError};
pub use state::{
    ChainTip, Footprint, STORED_SUBTREE_ENTRIES, State, StateLoader, StateSnapshot, TreeStore,
};
