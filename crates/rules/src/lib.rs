//! Security rules (the paper's Section III-C): learned detectors packaged as signed,
//! content-addressed, versioned artifacts that nodes publish and buy through the data
//! contract, the directory of rules a node has installed, and the access-request scorer
//! the installed rules make for the Private Data Center.

pub mod artifact;
pub mod installed;

pub use artifact::{RuleError, RuleMeta, SecurityRule};
pub use installed::{InstallError, Installed, RuleInfo, calibrate, install};
