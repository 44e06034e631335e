//! A SecNet client that trusts no node.
//!
//! - [`light`]: the light client. It starts from a genesis, verifies finalization
//!   certificates against the genesis validators, and checks every state answer — accounts,
//!   listings, subscriptions, grants, the access log's head — against a root a certified
//!   header commits to. Pure: bytes in, verified values or a typed [`VerifyError`] out.
//! - [`api`]: the node's HTTP API, typed with `secnet-api`'s definitions (one method per
//!   route; nothing verified: the node's word, for submission and the holder's routes).
//! - [`remote`]: the light client's checks over a node's HTTP API.
//! - [`join`]: a new validator's ledger from another node's snapshot, checked against
//!   certified roots.
//! - [`pdc`]: the consumer's side of the Private Data Center protocol — token, signed fetch,
//!   unsealed data key, decryption checked against the registered hash — with the grant and
//!   the listing taken from certified state.

pub mod api;
pub mod join;
pub mod light;
pub mod pdc;
pub mod remote;

pub use api::{LogQuery, NodeApi};
pub use join::{Joined, join_from_snapshot};
pub use light::{LightClient, VerifiedState, VerifyError};
pub use pdc::{Delivery, IntegrityError};
pub use remote::{
    ClientError, CommittedRoots, ProvenListings, ReadError, RemoteNode, Verified,
    VerifiedCheckpoint, VerifiedReceipt, read_bounded,
};
