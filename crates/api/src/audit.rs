//! The access log: pages of entries, and the RFC 9162 proofs (`secnet-certified`'s shapes,
//! re-exported) that tie them to a certified or cosigned head.

use secnet_contract::LogEntry;
use serde::{Deserialize, Serialize};

pub use secnet_certified::log_proof::{AuditError, ConsistencyProof, InclusionProof};

/// `GET /v1/log`: entries from `from` (only the matching ones, with a filter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogPage {
    /// The first index asked for.
    pub from: u64,
    /// The entries, in log order.
    pub entries: Vec<LogItem>,
}

/// One access-log entry and its index (its leaf number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogItem {
    /// The leaf index.
    pub index: u64,
    /// The entry.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub entry: LogEntry,
}
