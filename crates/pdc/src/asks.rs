//! Asks: organisations asking a patient, through the node that holds the patient's data, for
//! access to a listing; the patient approves (perhaps narrower) or denies.
//!
//! The book keeps, per owner, the asks received and their answers, bounded so that no asker
//! can fill it: one pending ask per asker and listing, at most [`MAX_PENDING_PER_OWNER`]
//! pending per owner, and at most [`MAX_KEPT_PER_OWNER`] kept (the oldest answered ones make
//! room). What an ask says is opaque here (the API's `AskRecord`, JSON, at most
//! [`MAX_ASK_RECORD_BYTES`]); the book knows who asked about what and whether it is answered.

use crate::store::{Store, StoreError, db_err};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use secnet_types::{AccountId, Hash};
use serde::{Deserialize, Serialize};

/// `owner ‖ id` → a JSON [`StoredAsk`].
pub(crate) const ASKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("asks");

/// Most unanswered asks an owner has at once.
pub const MAX_PENDING_PER_OWNER: usize = 32;
/// Most asks kept per owner, answered or not.
pub const MAX_KEPT_PER_OWNER: usize = 128;
/// Largest record kept for one ask, in bytes.
pub const MAX_ASK_RECORD_BYTES: usize = 4096;

/// An ask as the book keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAsk {
    /// Who asked.
    pub requester: AccountId,
    /// About which listing.
    pub data: Hash,
    /// When it arrived, ms since the Unix epoch.
    pub at_ms: u64,
    /// Whether the owner answered.
    pub answered: bool,
    /// The record (JSON), as the API shows it.
    pub record: Vec<u8>,
}

/// Why an ask or an answer is not kept. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The asker already waits for an answer about this listing.
    #[error("this organisation already asked about this record and waits for the patient's answer")]
    Duplicate,
    /// The owner has too many unanswered asks.
    #[error(
        "the patient has {MAX_PENDING_PER_OWNER} unanswered requests; ask again once they answered some"
    )]
    TooManyPending,
    /// The record is larger than the book keeps.
    #[error("an ask of more than {MAX_ASK_RECORD_BYTES} bytes")]
    TooLarge,
    /// No such ask of this owner.
    #[error("no such request")]
    NotFound,
    /// The ask was answered already.
    #[error("this request was answered already")]
    AlreadyAnswered,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn key(owner: &AccountId, id: &Hash) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(owner.as_bytes());
    k[32..].copy_from_slice(id.as_bytes());
    k
}

fn decode(bytes: &[u8]) -> Result<StoredAsk, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("ask: {e}")))
}

fn encode(ask: &StoredAsk) -> Result<Vec<u8>, AskError> {
    if ask.record.len() > MAX_ASK_RECORD_BYTES {
        return Err(AskError::TooLarge);
    }
    serde_json::to_vec(ask).map_err(|e| AskError::Store(StoreError::Corrupt(e.to_string())))
}

/// The owner's asks in `table`, oldest first, with their ids.
fn of_owner(
    table: &impl redb::ReadableTable<&'static [u8], &'static [u8]>,
    owner: &AccountId,
) -> Result<Vec<(Hash, StoredAsk)>, StoreError> {
    let (from, to) = (key(owner, &Hash([0; 32])), key(owner, &Hash([0xff; 32])));
    let mut out = Vec::new();
    for row in table
        .range(from.as_slice()..=to.as_slice())
        .map_err(db_err)?
    {
        let (k, v) = row.map_err(db_err)?;
        let mut id = [0u8; 32];
        id.copy_from_slice(k.value().get(32..64).unwrap_or(&[0; 32]));
        out.push((Hash(id), decode(v.value())?));
    }
    out.sort_by_key(|(id, a)| (a.at_ms, *id));
    Ok(out)
}

impl Store {
    /// Keeps a new ask for `owner` under `id`, within the book's bounds.
    pub fn put_ask(&self, owner: &AccountId, id: &Hash, ask: &StoredAsk) -> Result<(), AskError> {
        let bytes = encode(ask)?;
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = w.open_table(ASKS).map_err(db_err)?;
            let existing = of_owner(&table, owner)?;
            if existing
                .iter()
                .any(|(_, a)| !a.answered && a.requester == ask.requester && a.data == ask.data)
            {
                return Err(AskError::Duplicate);
            }
            if existing.iter().filter(|(_, a)| !a.answered).count() >= MAX_PENDING_PER_OWNER {
                return Err(AskError::TooManyPending);
            }
            // Room for the new one: the oldest answered asks go first.
            let excess = (existing.len() + 1).saturating_sub(MAX_KEPT_PER_OWNER);
            for (old, _) in existing.iter().filter(|(_, a)| a.answered).take(excess) {
                table.remove(key(owner, old).as_slice()).map_err(db_err)?;
            }
            table
                .insert(key(owner, id).as_slice(), bytes.as_slice())
                .map_err(db_err)?;
        }
        w.commit().map_err(db_err)?;
        Ok(())
    }

    /// `owner`'s asks, newest first, with their ids.
    pub fn asks_of(&self, owner: &AccountId) -> Result<Vec<(Hash, StoredAsk)>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let table = r.open_table(ASKS).map_err(db_err)?;
        let mut out = of_owner(&table, owner)?;
        out.reverse();
        Ok(out)
    }

    /// `owner`'s ask `id`.
    pub fn ask(&self, owner: &AccountId, id: &Hash) -> Result<Option<StoredAsk>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let table = r.open_table(ASKS).map_err(db_err)?;
        table
            .get(key(owner, id).as_slice())
            .map_err(db_err)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// Records the owner's answer to a pending ask: `record` replaces what is kept.
    pub fn answer_ask(
        &self,
        owner: &AccountId,
        id: &Hash,
        record: Vec<u8>,
    ) -> Result<StoredAsk, AskError> {
        let w = self.db.begin_write().map_err(db_err)?;
        let answered = {
            let mut table = w.open_table(ASKS).map_err(db_err)?;
            let mut ask = match table.get(key(owner, id).as_slice()).map_err(db_err)? {
                Some(v) => decode(v.value())?,
                None => return Err(AskError::NotFound),
            };
            if ask.answered {
                return Err(AskError::AlreadyAnswered);
            }
            ask.answered = true;
            ask.record = record;
            let bytes = encode(&ask)?;
            table
                .insert(key(owner, id).as_slice(), bytes.as_slice())
                .map_err(db_err)?;
            ask
        };
        w.commit().map_err(db_err)?;
        Ok(answered)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use secnet_types::Keypair;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), Keypair::deterministic("holder", 0)).unwrap();
        (dir, s)
    }

    fn ask(requester: u8, data: u8, at_ms: u64) -> StoredAsk {
        StoredAsk {
            requester: AccountId([requester; 32]),
            data: Hash([data; 32]),
            at_ms,
            answered: false,
            record: b"{}".to_vec(),
        }
    }

    #[test]
    fn one_pending_ask_per_asker_and_listing_and_answers_once() {
        let (_d, s) = store();
        let owner = AccountId([1; 32]);
        s.put_ask(&owner, &Hash([10; 32]), &ask(2, 5, 1)).unwrap();
        assert!(matches!(
            s.put_ask(&owner, &Hash([11; 32]), &ask(2, 5, 2)),
            Err(AskError::Duplicate)
        ));
        // Another listing, or another asker, is another ask.
        s.put_ask(&owner, &Hash([12; 32]), &ask(2, 6, 3)).unwrap();
        s.put_ask(&owner, &Hash([13; 32]), &ask(3, 5, 4)).unwrap();
        let ids: Vec<Hash> = s
            .asks_of(&owner)
            .unwrap()
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            ids,
            [Hash([13; 32]), Hash([12; 32]), Hash([10; 32])],
            "newest first"
        );
        assert!(s.asks_of(&AccountId([9; 32])).unwrap().is_empty());

        let answered = s
            .answer_ask(&owner, &Hash([10; 32]), b"{\"a\":1}".to_vec())
            .unwrap();
        assert!(answered.answered);
        assert!(matches!(
            s.answer_ask(&owner, &Hash([10; 32]), b"{}".to_vec()),
            Err(AskError::AlreadyAnswered)
        ));
        assert!(matches!(
            s.answer_ask(&AccountId([9; 32]), &Hash([10; 32]), b"{}".to_vec()),
            Err(AskError::NotFound)
        ));
        // Answered, the asker may ask again.
        s.put_ask(&owner, &Hash([14; 32]), &ask(2, 5, 5)).unwrap();
        assert_eq!(
            s.ask(&owner, &Hash([10; 32])).unwrap().unwrap().record,
            b"{\"a\":1}"
        );
    }

    #[test]
    fn the_book_stays_bounded_and_keeps_what_is_unanswered() {
        let (_d, s) = store();
        let owner = AccountId([1; 32]);
        for i in 0..MAX_PENDING_PER_OWNER {
            s.put_ask(&owner, &Hash([i as u8; 32]), &ask(2, i as u8, i as u64))
                .unwrap();
        }
        assert!(matches!(
            s.put_ask(&owner, &Hash([0xee; 32]), &ask(3, 0xee, 99)),
            Err(AskError::TooManyPending)
        ));
        let big = StoredAsk {
            record: vec![b' '; MAX_ASK_RECORD_BYTES + 1],
            ..ask(4, 1, 1)
        };
        assert!(matches!(
            s.put_ask(&AccountId([5; 32]), &Hash([1; 32]), &big),
            Err(AskError::TooLarge)
        ));
        // Answer them all, then keep asking: the oldest answered make room.
        for i in 0..MAX_PENDING_PER_OWNER {
            s.answer_ask(&owner, &Hash([i as u8; 32]), b"{}".to_vec())
                .unwrap();
        }
        for i in 0..MAX_KEPT_PER_OWNER {
            let id = Hash::digest(&(i as u64).to_be_bytes());
            let mut a = ask(6, (i % 200) as u8, 1000 + i as u64);
            a.answered = false;
            s.put_ask(&owner, &id, &a).unwrap_or_else(|e| {
                assert!(matches!(e, AskError::TooManyPending), "{e}");
            });
            if i % MAX_PENDING_PER_OWNER == MAX_PENDING_PER_OWNER - 1 {
                for (id, a) in s.asks_of(&owner).unwrap() {
                    if !a.answered {
                        s.answer_ask(&owner, &id, b"{}".to_vec()).unwrap();
                    }
                }
            }
        }
        assert!(s.asks_of(&owner).unwrap().len() <= MAX_KEPT_PER_OWNER);
    }
}
