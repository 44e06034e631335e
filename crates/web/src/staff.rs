//! A hospital's staff accounts: who may sign in to the node's application, with which role.
//! Passwords are kept only as Argon2id hashes (PHC strings) in `web.redb`.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;

const STAFF: TableDefinition<&str, &[u8]> = TableDefinition::new("staff");
/// Sequence number → a JSON [`StaffAction`].
const ACTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("staff_actions");

/// Requests this organisation sent to patients: sequence number → a JSON [`SentAsk`].
const SENT_ASKS: TableDefinition<u64, &[u8]> = TableDefinition::new("sent_asks");

/// Most sent requests kept (the oldest go first).
pub const MAX_SENT_ASKS: u64 = 10_000;

/// A request this organisation sent to a patient, to look its answer up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentAsk {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// Who sent it (the account name).
    pub username: String,
    /// The request's id at the holder.
    pub id: secnet_types::Hash,
    /// The patient asked.
    pub owner: secnet_types::AccountId,
    /// The listing asked about.
    pub data: secnet_types::Hash,
}

/// Most staff actions kept (the oldest go first).
pub const MAX_ACTIONS: u64 = 100_000;

/// Something a staff member did that changed something or read a patient's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffAction {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// Who (the account name).
    pub username: String,
    /// What (`signed in`, `read`, `asked`, `imported`, `break-glass`, `added staff`).
    pub action: String,
    /// About what, and how it ended.
    pub detail: String,
}

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (Argon2 takes any length; this bounds the work per attempt).
pub const MAX_PASSWORD: usize = 256;
/// Longest display name.
pub const MAX_DISPLAY_NAME: usize = 80;

/// What a staff member may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Treats patients: searches and reads records patients consented to for treatment.
    Clinician,
    /// Studies cohorts: reads what patients consented to for research.
    Researcher,
    /// Manages the hospital's staff accounts.
    Admin,
}

impl Role {
    /// Every role, in the order forms list them.
    pub const ALL: [Role; 3] = [Role::Clinician, Role::Researcher, Role::Admin];

    /// The role's name as forms and the command line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::Researcher => "researcher",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = StaffError;
    fn from_str(s: &str) -> Result<Role, StaffError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                StaffError::Invalid(format!(
                    "unknown role {s:?} (clinician, researcher or admin)"
                ))
            })
    }
}

/// A staff account as the application shows it (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaffMember {
    /// Sign-in name: 3–32 of `a-z 0-9 . _ -`.
    pub username: String,
    /// The name shown on pages (escaped wherever it is shown).
    pub display_name: String,
    /// What they may do.
    pub role: Role,
    /// When the account was made, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Record {
    member: StaffMember,
    /// Argon2id PHC string.
    hash: String,
}

/// Why a staff operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    /// The input is not acceptable; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// The username is taken.
    #[error("an account named {0:?} exists already")]
    Exists(String),
    /// The store could not be read or written.
    #[error("staff store: {0}")]
    Storage(String),
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StaffError {
            fn from(e: $t) -> Self {
                StaffError::Storage(e.to_string())
            }
        }
    )*};
}

storage_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The staff accounts of one node.
#[derive(Debug)]
pub struct StaffStore {
    db: Database,
    /// Most actions kept ([`MAX_ACTIONS`] unless set for a test).
    max_actions: u64,
    /// A hash verified for unknown usernames, so that a wrong name costs as much time as a
    /// wrong password and does not reveal which accounts exist.
    decoy: String,
}

fn hasher() -> Argon2<'static> {
    // OWASP's Argon2id baseline: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_password(password: &str) -> Result<String, StaffError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| StaffError::Storage(format!("salt: {e}")))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StaffError::Storage(format!("hashing: {e}")))
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Whether `username` has the form every account name has: 3 to 32 of `a-z 0-9 . _ -`.
pub fn valid_username(username: &str) -> bool {
    (3..=32).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Checks a new account's fields; the error says which is wrong and how.
pub fn check_new(username: &str, display_name: &str, password: &str) -> Result<(), StaffError> {
    if !valid_username(username) {
        return Err(StaffError::Invalid(
            "the username must be 3 to 32 characters: lower-case letters, digits, '.', '_' or '-'"
                .into(),
        ));
    }
    let name = display_name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_DISPLAY_NAME
        || name.chars().any(char::is_control)
    {
        return Err(StaffError::Invalid(format!(
            "the display name must be 1 to {MAX_DISPLAY_NAME} characters, without control characters"
        )));
    }
    if password.chars().count() < MIN_PASSWORD || password.len() > MAX_PASSWORD {
        return Err(StaffError::Invalid(format!(
            "the password must be at least {MIN_PASSWORD} characters (and at most {MAX_PASSWORD} bytes)"
        )));
    }
    Ok(())
}

impl StaffStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<StaffStore, StaffError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| StaffError::Storage(format!("{}: {e}", parent.display())))?;
        }
        let db = redb::Builder::new()
            .set_cache_size(4 * 1024 * 1024)
            .create(path)?;
        let write = db.begin_write()?;
        write.open_table(STAFF)?;
        write.open_table(ACTIONS)?;
        write.open_table(SENT_ASKS)?;
        write.commit()?;
        Ok(StaffStore {
            db,
            max_actions: MAX_ACTIONS,
            decoy: hash_password("a password no account has, verified for unknown names")?,
        })
    }

    /// Keeps at most `n` actions (the default is [`MAX_ACTIONS`]).
    pub fn with_max_actions(mut self, n: u64) -> StaffStore {
        self.max_actions = n.max(1);
        self
    }

    /// Keeps `action` in the staff's action log, dropping the oldest beyond the bound.
    pub fn keep_action(&self, action: &StaffAction) -> Result<(), StaffError> {
        self.append(ACTIONS, action, self.max_actions)
    }

    /// The newest `limit` staff actions, newest first.
    pub fn actions(&self, limit: usize) -> Result<Vec<StaffAction>, StaffError> {
        self.newest(ACTIONS, limit)
    }

    /// Keeps a request sent to a patient, dropping the oldest beyond [`MAX_SENT_ASKS`].
    pub fn keep_sent_ask(&self, sent: &SentAsk) -> Result<(), StaffError> {
        self.append(SENT_ASKS, sent, MAX_SENT_ASKS)
    }

    /// The newest `limit` requests sent to patients, newest first.
    pub fn sent_asks(&self, limit: usize) -> Result<Vec<SentAsk>, StaffError> {
        self.newest(SENT_ASKS, limit)
    }

    /// Appends `item` (JSON) to the log `table`, keeping at most `max` items.
    fn append<T: Serialize>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        item: &T,
        max: u64,
    ) -> Result<(), StaffError> {
        let bytes = serde_json::to_vec(item).map_err(|e| StaffError::Storage(e.to_string()))?;
        let write = self.db.begin_write()?;
        {
            let mut table = write.open_table(table)?;
            let next = table.last()?.map_or(0, |(k, _)| k.value() + 1);
            table.insert(next, bytes.as_slice())?;
            if next >= max {
                table.remove(next - max)?;
            }
        }
        write.commit()?;
        Ok(())
    }

    /// The newest `limit` items of the log `table`, newest first.
    fn newest<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        limit: usize,
    ) -> Result<Vec<T>, StaffError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(table)?;
        let mut out = Vec::new();
        for row in table.iter()?.rev().take(limit) {
            let (_, v) = row?;
            out.push(
                serde_json::from_slice(v.value())
                    .map_err(|e| StaffError::Storage(format!("a kept record: {e}")))?,
            );
        }
        Ok(out)
    }

    /// Adds an account. Slow on purpose (Argon2id): call it off the async runtime.
    pub fn add(
        &self,
        username: &str,
        display_name: &str,
        role: Role,
        password: &str,
        now_ms: u64,
    ) -> Result<StaffMember, StaffError> {
        check_new(username, display_name, password)?;
        let member = StaffMember {
            username: username.to_string(),
            display_name: display_name.trim().to_string(),
            role,
            created_ms: now_ms,
        };
        let record = Record {
            member: member.clone(),
            hash: hash_password(password)?,
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| StaffError::Storage(e.to_string()))?;
        let write = self.db.begin_write()?;
        {
            let mut table = write.open_table(STAFF)?;
            if table.get(username)?.is_some() {
                return Err(StaffError::Exists(username.to_string()));
            }
            table.insert(username, bytes.as_slice())?;
        }
        write.commit()?;
        Ok(member)
    }

    /// The account if `password` is its password; `None` for a wrong password or an unknown
    /// name, which take the same time. Slow on purpose: call it off the async runtime.
    pub fn verify(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<StaffMember>, StaffError> {
        if password.len() > MAX_PASSWORD {
            return Ok(None);
        }
        let record = self.record(username)?;
        match record {
            Some(r) if verify_password(&r.hash, password) => Ok(Some(r.member)),
            Some(_) => Ok(None),
            None => {
                let _ = verify_password(&self.decoy, password);
                Ok(None)
            }
        }
    }

    fn record(&self, username: &str) -> Result<Option<Record>, StaffError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(STAFF)?;
        let Some(bytes) = table.get(username)? else {
            return Ok(None);
        };
        serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(|e| StaffError::Storage(format!("account {username:?}: {e}")))
    }

    /// The account named `username`.
    pub fn get(&self, username: &str) -> Result<Option<StaffMember>, StaffError> {
        Ok(self.record(username)?.map(|r| r.member))
    }

    /// Every account, by username.
    pub fn list(&self) -> Result<Vec<StaffMember>, StaffError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(STAFF)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (name, bytes) = item?;
            let record: Record = serde_json::from_slice(bytes.value())
                .map_err(|e| StaffError::Storage(format!("account {:?}: {e}", name.value())))?;
            out.push(record.member);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn the_action_log_keeps_the_newest_actions_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = StaffStore::open(&dir.path().join("web.redb"))
            .unwrap()
            .with_max_actions(3);
        for i in 0..5u64 {
            store
                .keep_action(&StaffAction {
                    at_ms: i,
                    username: "dr.ada".into(),
                    action: "read".into(),
                    detail: format!("record {i}"),
                })
                .unwrap();
        }
        let kept: Vec<u64> = store.actions(10).unwrap().iter().map(|a| a.at_ms).collect();
        assert_eq!(kept, [4, 3, 2]);
        assert_eq!(store.actions(1).unwrap().len(), 1);
    }
}
