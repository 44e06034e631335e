//! Notices: what a node holding a patient's data tells the patient it did on their behalf
//! (records imported by the hospital that treated them). Kept per owner, newest
//! [`MAX_NOTICES_PER_OWNER`], each at most [`MAX_NOTICE_BYTES`] of JSON (the API's `Notice`).

use crate::store::{Store, StoreError, db_err};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use secnet_types::AccountId;

/// `owner ‖ at_ms ‖ sequence` → the notice's JSON.
pub(crate) const NOTICES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("notices");

/// Most notices kept per owner (the oldest go first).
pub const MAX_NOTICES_PER_OWNER: usize = 128;
/// Largest notice kept, in bytes.
pub const MAX_NOTICE_BYTES: usize = 4096;

fn key(owner: &AccountId, at_ms: u64, seq: u32) -> [u8; 44] {
    let mut k = [0u8; 44];
    k[..32].copy_from_slice(owner.as_bytes());
    k[32..40].copy_from_slice(&at_ms.to_be_bytes());
    k[40..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl Store {
    /// Keeps a notice for `owner` at `at_ms`, dropping the oldest beyond the bound.
    pub fn put_notice(
        &self,
        owner: &AccountId,
        at_ms: u64,
        notice: &[u8],
    ) -> Result<(), StoreError> {
        if notice.len() > MAX_NOTICE_BYTES {
            return Err(StoreError::TooLarge {
                limit: MAX_NOTICE_BYTES as u64,
            });
        }
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = w.open_table(NOTICES).map_err(db_err)?;
            let (from, to) = (key(owner, 0, 0), key(owner, u64::MAX, u32::MAX));
            let mut keys: Vec<Vec<u8>> = Vec::new();
            for row in table
                .range(from.as_slice()..=to.as_slice())
                .map_err(db_err)?
            {
                keys.push(row.map_err(db_err)?.0.value().to_vec());
            }
            let seq = keys
                .iter()
                .filter(|k| k.get(32..40) == Some(&at_ms.to_be_bytes()[..]))
                .count();
            let excess = (keys.len() + 1).saturating_sub(MAX_NOTICES_PER_OWNER);
            for old in keys.iter().take(excess) {
                table.remove(old.as_slice()).map_err(db_err)?;
            }
            table
                .insert(
                    key(owner, at_ms, u32::try_from(seq).unwrap_or(u32::MAX)).as_slice(),
                    notice,
                )
                .map_err(db_err)?;
        }
        w.commit().map_err(db_err)?;
        Ok(())
    }

    /// `owner`'s notices (JSON), newest first.
    pub fn notices_of(&self, owner: &AccountId) -> Result<Vec<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let table = r.open_table(NOTICES).map_err(db_err)?;
        let (from, to) = (key(owner, 0, 0), key(owner, u64::MAX, u32::MAX));
        let mut out = Vec::new();
        for row in table
            .range(from.as_slice()..=to.as_slice())
            .map_err(db_err)?
        {
            out.push(row.map_err(db_err)?.1.value().to_vec());
        }
        out.reverse();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use secnet_types::Keypair;

    #[test]
    fn notices_are_kept_per_owner_newest_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), Keypair::deterministic("holder", 0)).unwrap();
        let (a, b) = (AccountId([1; 32]), AccountId([2; 32]));
        s.put_notice(&a, 5, b"first").unwrap();
        s.put_notice(&a, 5, b"same time").unwrap();
        s.put_notice(&b, 6, b"other owner").unwrap();
        s.put_notice(&a, 7, b"last").unwrap();
        assert_eq!(
            s.notices_of(&a).unwrap(),
            [b"last".to_vec(), b"same time".to_vec(), b"first".to_vec()]
        );
        for i in 0..MAX_NOTICES_PER_OWNER as u64 {
            s.put_notice(&a, 100 + i, b"n").unwrap();
        }
        let kept = s.notices_of(&a).unwrap();
        assert_eq!(kept.len(), MAX_NOTICES_PER_OWNER);
        assert!(!kept.contains(&b"first".to_vec()), "the oldest went first");
        assert_eq!(s.notices_of(&b).unwrap(), [b"other owner".to_vec()]);
        assert!(
            s.put_notice(&a, 1, &vec![b' '; MAX_NOTICE_BYTES + 1])
                .is_err()
        );
    }
}
