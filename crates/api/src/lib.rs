//! The node's HTTP API as types: every request body and every answer, defined once and used
//! by the node (which serialises them), its OpenAPI document (behind the `openapi` feature)
//! and `secnet-client` (which deserialises them). JSON lives only at this edge; byte strings
//! are lower-case hex, ciphertext base64.
//!
//! - [`chain`]: status, blocks, headers, accounts, listings, grants.
//! - [`txs`]: submitting transactions and where they are.
//! - [`audit`]: access-log pages, RFC 9162 inclusion and consistency proofs.
//! - [`pdc`]: the Private Data Center's routes.
//! - The certified answers (`CertifiedState`, `CertifiedHeader`, `ReceiptProof`,
//!   `CosignedCheckpointAnswer`) are `secnet-certified`'s, re-exported here.

pub mod audit;
pub mod chain;
pub mod pdc;
pub mod txs;

use serde::{Deserialize, Serialize};

/// An error as answered: RFC 9457 problem details (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProblemBody {
    /// Always `about:blank`: the status and title say what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, fixed summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What exactly was wrong with this request.
    pub detail: String,
    /// For refused fetches: the machine-readable reason, as recorded on the ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub use secnet_certified::{
    CertifiedHeader, CertifiedState, CosignedCheckpointAnswer, HexBytes, ReceiptProof,
};
