//! The Private Data Center's routes: what a holder says about itself, objects and their
//! versions, FHIR imports, owners' policies, access tokens and deliveries.

use secnet_pdc::envelope::Envelope;
use secnet_pdc::ids::{ContentId, Udi};
use secnet_policy::Decision;
use secnet_types::{AccountId, EncryptionKey, GrantId, Hash};
use serde::{Deserialize, Serialize};

pub use secnet_pdc::import::Imported;

/// `GET /v1/pdc`: who holds data here and the limits that apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PdcInfo {
    /// The holder's account: what listings and grants name as holder.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub holder: AccountId,
    /// The holder's encryption key.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub encryption_key: EncryptionKey,
    /// Largest object stored, in bytes.
    pub max_object_bytes: usize,
    /// Largest object delivered in one answer, in bytes.
    pub max_fetch_bytes: u64,
    /// How long a token lasts, in milliseconds.
    pub token_ttl_ms: u64,
}

/// `GET /v1/pdc/rules`: the detectors scoring access requests here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RulesAnswer {
    /// Rules in use.
    pub rules: Vec<RuleInfo>,
    /// Rule files that failed to load, and why.
    pub refused: Vec<RefusedRule>,
    /// The score (parts per million) at and above which a request is flagged.
    pub threshold_ppm: u32,
}

/// One installed rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleInfo {
    /// The content hash (`local` for the node's own detector).
    pub hash: String,
    /// The rule's name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// The attack category.
    pub category: String,
    /// The publisher (none for the local detector).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub publisher: Option<AccountId>,
    /// What it scores: `nsl-kdd`, `http-params` or `access-requests`.
    pub dataset: String,
    /// Whether it scores this node's access requests.
    pub scores_requests: bool,
    /// Its validation F1.
    pub f1: f64,
    /// Detection rate at 1% false positives on its validation split.
    pub dr_at_1pct_fpr: f64,
}

/// A rule file that did not load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefusedRule {
    /// The file.
    pub file: String,
    /// Why.
    pub reason: String,
}

/// Answer of `PUT /v1/pdc/objects/{owner}/{path}` (201): the new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stored {
    /// The version's identifier.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub udi: Udi,
    /// Its version number.
    pub version: u32,
    /// Its content id (CIDv1).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub cid: ContentId,
    /// The plaintext's SHA-256: what a listing registers.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: Hash,
    /// Plaintext bytes.
    pub size: u64,
    /// What the payload is.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub envelope: Envelope,
}

/// `GET /v1/pdc/objects/{owner}/{path}`: an object's versions (owner only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ObjectVersions {
    /// The owner.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub owner: AccountId,
    /// The object's path.
    pub object: String,
    /// Its versions, oldest first.
    pub versions: Vec<VersionInfo>,
}

/// One version of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionInfo {
    /// Its identifier.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub udi: Udi,
    /// Its number.
    pub version: u32,
    /// Who produced it.
    pub source: String,
    /// Its content id.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub cid: ContentId,
    /// The plaintext's SHA-256.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: Hash,
    /// Plaintext bytes.
    pub size: u64,
    /// What the payload is.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub envelope: Envelope,
    /// When it was stored, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// Answer of `DELETE /v1/pdc/objects/{owner}/{path}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deleted {
    /// The object's path.
    pub deleted: String,
    /// How many versions were erased.
    pub versions: usize,
}

/// Answer of `PUT /v1/pdc/policies/{owner}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoliciesInstalled {
    /// The owner.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub owner: AccountId,
    /// The ids of the installed policies.
    pub policies: Vec<String>,
}

/// `GET /v1/pdc/policies/{owner}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyText {
    /// The owner.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub owner: AccountId,
    /// The owner's Cedar policies.
    pub text: String,
    /// The node's built-in policies that apply to every owner.
    pub builtin: String,
}

/// Body of `POST /v1/pdc/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRequest {
    /// The grant id on the ledger (the hash of the request transaction), hex.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub grant: GrantId,
}

/// Answer of `POST /v1/pdc/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenAnswer {
    /// The sealed token, signed by the holder.
    pub token: String,
    /// When it expires, milliseconds since the Unix epoch.
    pub expires_ms: u64,
    /// The data it opens.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub data: Hash,
    /// The grant it was issued for.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub grant: GrantId,
}

/// `GET /v1/pdc/data/{hash}` as JSON (without `Accept: application/octet-stream`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DataAnswer {
    /// The version delivered.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub udi: Udi,
    /// What the payload is.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub envelope: Envelope,
    /// Plaintext bytes.
    pub size: u64,
    /// The plaintext's SHA-256 (check it against the certified listing).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub hash: Hash,
    /// The blob id the data key is bound to, hex.
    pub blob: String,
    /// The data key sealed to the consumer's encryption key, hex.
    pub sealed_key: String,
    /// The ciphertext, base64.
    pub ciphertext: String,
    /// The access decision.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub decision: Decision,
    /// The grant presented.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub grant: GrantId,
}

/// The problem body of a refused fetch (403): RFC 9457 fields plus the reason, the
/// detector's score and the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessRefused {
    /// `about:blank`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `access refused`.
    pub title: String,
    /// 403.
    pub status: u16,
    /// `access refused: <reason>`.
    pub detail: String,
    /// The reason code (replay, wrong-key, expired, withdrawn, policy-denied, ...).
    pub reason: String,
    /// The detector's score, parts per million.
    pub score_ppm: u32,
    /// The policy decision, when one was made.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub decision: Option<Decision>,
}

/// `GET /v1/pdc/history/{owner}`: every log entry about the owner's data, with its
/// inclusion proof against the log of `size` entries and the same entry as a FHIR
/// `AuditEvent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct History {
    /// The owner.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub owner: AccountId,
    /// The entries, in log order.
    pub entries: Vec<HistoryItem>,
    /// How many of them are deliveries.
    pub delivered: usize,
}

/// One entry of an owner's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryItem {
    /// The leaf index.
    pub index: u64,
    /// The entry.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub entry: secnet_contract::LogEntry,
    /// Its inclusion proof in the holder's log (check it against a certified head).
    pub proof: secnet_certified::log_proof::InclusionProof,
    /// The entry as a FHIR R4 `AuditEvent` resource.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub audit_event: serde_json::Value,
}

/// `POST /v1/pdc/asks/{owner}`: an organisation asks a patient for access to a listing of
/// theirs held here; the patient approves (with the same or a narrower scope) or denies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccessAsk {
    /// The listing asked about (the owner's, held by this node).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub data: Hash,
    /// What for (`treatment`, `research`).
    pub purposes: Vec<String>,
    /// Which categories of the record (`conditions`, `medications`, `observations`,
    /// `demographics`).
    pub categories: Vec<String>,
    /// The last day asked for, `YYYY-MM-DD`.
    pub until: String,
    /// Why, in the asker's words (shown to the patient as text).
    pub reason: String,
    /// Who at the organisation asks (shown to the patient as text).
    pub staff: String,
}

/// The patient's answer to an ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AskDecision {
    /// Consent was given, with the scope in the answer (which may be narrower).
    Approved,
    /// Refused.
    Denied,
}

/// `POST /v1/pdc/asks/{owner}/{id}`: the owner's answer, signed by the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AskAnswer {
    /// Approved or denied.
    pub decision: AskDecision,
    /// What was consented to (approved only; empty when denied).
    #[serde(default)]
    pub categories: Vec<String>,
    /// For which purposes (approved only).
    #[serde(default)]
    pub purposes: Vec<String>,
    /// Until which day (approved only).
    #[serde(default)]
    pub until: String,
}

/// An ask as the holder keeps it: who asked what, when, and the owner's answer if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AskRecord {
    /// Its id: SHA-256 of the owner, the asker, the time and the ask.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: Hash,
    /// Whose data.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub owner: AccountId,
    /// The organisation that asked (its node's account, which signed the ask).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub requester: AccountId,
    /// What it asked.
    pub ask: AccessAsk,
    /// When the holder received it, ms since the Unix epoch.
    pub at_ms: u64,
    /// The owner's answer, once given.
    pub answer: Option<AskAnswer>,
    /// When the owner answered, ms since the Unix epoch.
    pub answered_at_ms: Option<u64>,
}

/// `GET /v1/pdc/asks/{owner}`: the owner's asks, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Asks {
    /// The asks.
    pub asks: Vec<AskRecord>,
}

/// Something the patient is told by a node holding their data (`GET /app/patient/inbox`):
/// e.g. that an organisation imported records on their behalf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notice {
    /// The organisation that acted (its node's account).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub from: AccountId,
    /// Who at the organisation acted.
    pub staff: String,
    /// What was done, in words.
    pub message: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}
