//! SecNet's core value types and their canonical, bounded binary encoding.
//!
//! Everything here is plain data: no I/O, no clocks, no global state. The bytes a
//! transaction is signed over are its canonical encoding; golden fixtures in the tests freeze
//! that encoding, so any change to it is deliberate.

pub mod account;
pub mod block;
pub mod codec;
pub mod date;
pub mod genesis;
pub mod hash;
pub mod limits;
pub mod receipt;
pub mod source;
pub mod tx;

pub use account::{AccountId, EncryptionKey, Keypair, Signature};
pub use block::{Block, BlockError, BlockHeader, StateCommitment};
pub use genesis::{Allocation, Genesis, GenesisError, Validator};
pub use hash::Hash;
pub use receipt::{Event, Outcome, Receipt, Rejection};
pub use tx::{
    AccessDecision, AccessEntry, Call, ChainId, DataKind, DecodeError, GrantId, RefusalReason,
    RegisterData, SignedTransaction, Transaction, TxHash, verify_signatures,
    verify_signatures_except, verify_signatures_in_parts,
};
