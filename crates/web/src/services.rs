//! What the application needs from the node it runs in: the ledger's listings and accounts,
//! a patient's records and policies in the Private Data Center, the access history of their
//! data, and reading listed data as this node. `secnet-node` implements it over its ledger
//! and PDC; tests implement it with fixed answers.

use crate::search::Listed;
use secnet_contract::LogEntry;
use secnet_types::{AccountId, Hash};
use std::future::Future;
use std::pin::Pin;

/// The listings a node serves ([`Services::listings`]).
pub type Listings = std::sync::Arc<Vec<std::sync::Arc<Listed>>>;

/// The listing registered under `hash` among `listings`.
pub fn find_listing(
    listings: &[std::sync::Arc<Listed>],
    hash: &Hash,
) -> Option<std::sync::Arc<Listed>> {
    let hex = hash.to_string();
    listings.iter().find(|l| l.hash == hex).cloned()
}

/// A future that can be sent between threads.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An organisation running a node of the network: a validator of the genesis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organisation {
    /// Its node's account.
    pub account: AccountId,
    /// Its name as the genesis gives it ("Northside Hospital"), or `node <prefix>`.
    pub name: String,
}

/// One stored object of a patient, decrypted: a FHIR resource as imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its path in the store (`fhir/Condition/<id>`).
    pub path: String,
    /// Its content.
    pub content: Vec<u8>,
}

/// What the ledger says of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountFacts {
    /// Its balance.
    pub balance: u64,
    /// Its next nonce.
    pub nonce: u64,
    /// Whether it registered an encryption key.
    pub encryption_key: bool,
}

/// An access-log entry about a patient's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryItem {
    /// Its index in the access log.
    pub index: u64,
    /// The entry.
    pub entry: LogEntry,
    /// The time of the block that logged it, ms since the Unix epoch.
    pub block_ms: u64,
}

/// Data read as this node: what was done, and the content, checked against the registered
/// hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// The listing's content hash.
    pub data: Hash,
    /// Who holds it.
    pub holder: AccountId,
    /// Each step taken, for the page ("paid 10 at height 41", …).
    pub steps: Vec<String>,
    /// The content.
    pub content: Vec<u8>,
}

/// Why data could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The holder or the ledger refused, with the reason; `steps` were done before.
    #[error("refused: {reason}")]
    Refused {
        /// What was done before the refusal.
        steps: Vec<String>,
        /// Why.
        reason: String,
    },
    /// Something failed on the way (a node unreachable, a timeout).
    #[error("{0}")]
    Failed(String),
}

/// The node's side of the application.
pub trait Services: Send + Sync + 'static {
    /// This node's account.
    fn me(&self) -> AccountId;

    /// The chain id transactions must carry.
    fn chain_id(&self) -> String;

    /// Every listing of user data, in content-hash order (each shared: a list brought up to
    /// date shares the listings that did not change).
    fn listings(&self) -> Listings;

    /// The listing of user data registered under `hash`, if any: one of
    /// [`Self::listings`], found without reading them all where the node can.
    fn listing(&self, hash: &Hash) -> Option<std::sync::Arc<Listed>> {
        find_listing(&self.listings(), hash)
    }

    /// The genesis validators, whose cosignatures certify the access log, with their names
    /// as the genesis gives them (maybe empty).
    fn validators(&self) -> Vec<(AccountId, String)> {
        Vec::new()
    }

    /// The organisations of the network, as the genesis names them.
    fn organisations(&self) -> Vec<Organisation> {
        Vec::new()
    }

    /// An account's balance, nonce and whether it has an encryption key (blocking).
    fn account(&self, _who: &AccountId) -> Result<AccountFacts, String> {
        Err("this node keeps no ledger".into())
    }

    /// The FHIR resources (`fhir/…` objects) `owner` stores here, decrypted, within a
    /// budget of objects and bytes (blocking).
    fn records(&self, _owner: &AccountId) -> Result<Vec<StoredRecord>, String> {
        Err("this node keeps no records".into())
    }

    /// `owner`'s policy text here (blocking).
    fn policy(&self, _owner: &AccountId) -> Result<String, String> {
        Err("this node keeps no policies".into())
    }

    /// Every access-log entry about data `owner` stores here or listed (blocking).
    fn history(&self, _owner: &AccountId) -> Result<Vec<HistoryItem>, String> {
        Err("this node keeps no ledger".into())
    }

    /// The last `limit` access-log entries in which `account` asked, read or paid, in log
    /// order (blocking).
    fn trail(&self, _account: &AccountId, _limit: usize) -> Result<Vec<HistoryItem>, String> {
        Err("this node keeps no ledger".into())
    }

    /// Reads the listed data `data` as this node for `purpose`: subscribes if it has not
    /// (only at `price`, the price the reader was shown), asks for a grant, fetches from the
    /// holder and checks the content against the registered hash.
    fn read(
        &self,
        _data: Hash,
        _purpose: String,
        _price: u64,
    ) -> BoxFuture<'_, Result<Reading, ReadError>> {
        Box::pin(async { Err(ReadError::Failed("this node cannot read data".into())) })
    }

    /// `owner`'s asks received here, newest first (blocking).
    fn asks(&self, _owner: &AccountId) -> Result<Vec<secnet_api::pdc::AskRecord>, String> {
        Err("this node keeps no requests".into())
    }

    /// Asks, as this node's organisation, the owner of the listing `ask.data` (through the
    /// node that holds it) for access.
    fn ask(
        &self,
        _ask: secnet_api::pdc::AccessAsk,
    ) -> BoxFuture<'_, Result<secnet_api::pdc::AskRecord, ReadError>> {
        Box::pin(async { Err(ReadError::Failed("this node cannot ask".into())) })
    }

    /// Imports a FHIR Bundle for `owner` as this organisation (its staff member `staff`):
    /// held here, owned by the patient, who is told. What was stored, in words (blocking).
    fn import_for(
        &self,
        _owner: &AccountId,
        _staff: &str,
        _bundle: &[u8],
    ) -> Result<String, String> {
        Err("this node keeps no records".into())
    }

    /// What `owner` has been told by this node, newest first (blocking).
    fn notices(&self, _owner: &AccountId) -> Result<Vec<secnet_api::pdc::Notice>, String> {
        Ok(Vec::new())
    }

    /// The request `id` this organisation sent to `owner` about listing `data`, as the
    /// listing's holder keeps it now (with the patient's answer once given).
    fn ask_status(
        &self,
        _data: Hash,
        _owner: AccountId,
        _id: Hash,
    ) -> BoxFuture<'_, Result<secnet_api::pdc::AskRecord, ReadError>> {
        Box::pin(async { Err(ReadError::Failed("this node cannot ask".into())) })
    }

    /// Emergency access to the records `owner` stores here: first the ledger records, as
    /// this node, that it reads them without consent and `reason`; then they are read.
    fn break_glass(
        &self,
        _owner: AccountId,
        _reason: String,
    ) -> BoxFuture<'_, Result<EmergencyReading, ReadError>> {
        Box::pin(async { Err(ReadError::Failed("this node keeps no records".into())) })
    }
}

/// Records read in an emergency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyReading {
    /// The height at which the break-glass record became final.
    pub height: u64,
    /// The patient's records at this node.
    pub records: Vec<StoredRecord>,
}

/// The name people see for `account`: its organisation's, or `node <prefix>`.
pub fn name_of(organisations: &[Organisation], account: &AccountId) -> String {
    organisations
        .iter()
        .find(|o| o.account == *account)
        .map(|o| o.name.clone())
        .unwrap_or_else(|| {
            let hex = account.to_string();
            format!("account {}", hex.get(..8).unwrap_or(&hex))
        })
}
