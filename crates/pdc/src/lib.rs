//! The Private Data Center (paper Section III-A): each entity's node stores its data
//! encrypted, in a uniform, self-describing representation, under uniform identifiers, and
//! serves it to others only as the owner's policy and the ledger allow.

pub mod access;
pub mod asks;
pub mod auth;
pub mod crypto;
pub mod envelope;
pub mod fhir;
pub mod ids;
pub mod import;
pub mod notices;
pub mod record;
pub mod store;

pub use crypto::{BlobId, DataKey, SealedKey};
pub use envelope::Envelope;
pub use ids::{ContentId, Udi};
pub use store::{Object, PutRequest, Store, StoreError, Version};
