//! The state table, written a slice at a time, and the journal that keeps it whole.
//!
//! A state key is a tag byte and then a hash, an account or an address (the log head's is
//! the tag alone; [`secnet_contract::StateKey::to_bytes`]), so the entries one group commit
//! changes would land on random pages of a B-tree much larger than the commit. So the state
//! table is written like the indexes ([`crate::index`]): split by the key's second byte into
//! [`INDEX_SLICES`] slices, and each group commit stores the entries of the slice whose
//! index rows it stores, with their values as of the commit's last block, as a new run of
//! that slice ([`crate::runs::Index::State`]; format 7 kept one B-tree and rewrote a
//! sixty-fourth of it with every commit). A slice's entries in the table then hold every
//! change up to that slice's mark ([`IndexMarks::tx_height`]), and none of a block the disk
//! does not hold (a table migrated from format 5 is as of its tip, which may be above the
//! marks).
//!
//! The changes the table does not hold yet are in this journal, written with every group
//! commit: every entry its blocks changed with the entry's last value ([`encode`]), keyed by
//! the commit's last height and cut into rows of at most [`JOURNAL_CHUNK`] bytes. The rows
//! land at the right edge of their B-tree, so one commit writes a few sequential pages
//! instead of one random page per entry; and two rows fit a page, since deleting a value
//! larger than a page made redb write about as much again as the rest of the commit (see
//! the README's measurements).
//! The state at the tip is the table with, for each slice, the journal's changes above the
//! slice's mark applied in height order ([`overlay`]); rows at or below every slice's mark
//! are deleted ([`prune`]).

use crate::error::LedgerError;
use crate::index::{INDEX_SLICES, IndexMarks};
use redb::{ReadTransaction, Table, TableDefinition};
use std::collections::BTreeMap;
use std::iter::Peekable;

/// (Last height of a group commit, chunk) → the chunk's part of every state entry its
/// blocks changed ([`encode`]).
pub(crate) const STATE_JOURNAL: TableDefinition<(u64, u32), &[u8]> =
    TableDefinition::new("state_journal");

/// The most bytes of one journal row: two fit a 4 KiB page.
pub(crate) const JOURNAL_CHUNK: usize = 2_000;

/// Appends the changes of the group commit ending at `height` (each entry once, keys
/// ascending).
pub(crate) fn append<'a>(
    journal: &mut Table<'_, (u64, u32), &[u8]>,
    height: u64,
    changes: impl Iterator<Item = Change<'a>> + Clone,
) -> Result<(), LedgerError> {
    if changes.clone().next().is_none() {
        return Ok(());
    }
    for (chunk, bytes) in (0u32..).zip(encode(changes)?.chunks(JOURNAL_CHUNK)) {
        journal.insert((height, chunk), bytes)?;
    }
    Ok(())
}

/// Deletes the changes of the group commits ending at or below `height`.
pub(crate) fn prune(
    journal: &mut Table<'_, (u64, u32), &[u8]>,
    height: u64,
) -> Result<(), LedgerError> {
    journal.retain_in(..=(height, u32::MAX), |_, _| false)?;
    Ok(())
}

/// The slice of a state entry: its key's second byte (the first of its hash, account or
/// address) modulo [`INDEX_SLICES`], or slice 0 for a key of one byte. Hashes and accounts
/// spread evenly; addresses by their first character, so most share a slice.
pub(crate) fn state_slice(key: &[u8]) -> usize {
    usize::from(key.get(1).copied().unwrap_or(0)) % INDEX_SLICES
}

/// One changed entry: its key bytes, and its value bytes or `None` if it was removed.
pub(crate) type Change<'a> = (&'a [u8], Option<&'a [u8]>);

/// The changes the table lacks: key bytes → value bytes at the tip, or `None` if removed.
pub(crate) type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// `overlay` split by the slice of its keys ([`state_slice`]), one map per slice.
pub(crate) fn by_slice(overlay: Overlay) -> Vec<Overlay> {
    let mut slices = vec![Overlay::new(); INDEX_SLICES];
    for (key, value) in overlay {
        if let Some(slice) = slices.get_mut(state_slice(&key)) {
            slice.insert(key, value);
        }
    }
    slices
}

/// A commit's journal: the length of what follows (8 bytes, big-endian), then per entry the
/// key's length (4 bytes, big-endian) and bytes, then 0 for a removed entry, or 1, the
/// value's length (4 bytes, big-endian) and bytes.
pub(crate) fn encode<'a>(
    changes: impl Iterator<Item = Change<'a>> + Clone,
) -> Result<Vec<u8>, LedgerError> {
    let size: usize = changes
        .clone()
        .map(|(k, v)| 5 + k.len() + v.map_or(0, |v| 4 + v.len()))
        .sum();
    let too_long = |what: &str, len: usize| {
        LedgerError::Storage(format!("a state {what} of {len} bytes cannot be journaled"))
    };
    let mut out = Vec::with_capacity(8 + size);
    out.extend_from_slice(&(size as u64).to_be_bytes());
    for (key, value) in changes {
        let len = u32::try_from(key.len()).map_err(|_| too_long("key", key.len()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(key);
        match value {
            None => out.push(0),
            Some(v) => {
                let len = u32::try_from(v.len()).map_err(|_| too_long("value", v.len()))?;
                out.push(1);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    Ok(out)
}

/// The changes in a commit's journal ([`encode`]), in the order written; `height` names the
/// commit in the error a damaged one gets.
pub(crate) fn decode(height: u64, bytes: &[u8]) -> Result<Vec<Change<'_>>, LedgerError> {
    let corrupt =
        |what: &str| LedgerError::Corrupt(format!("state journal of height {height}: {what}"));
    let mut rest = Cursor(bytes);
    let length = rest.be_u64().ok_or_else(|| corrupt("truncated length"))?;
    if u64::try_from(rest.0.len()).ok() != Some(length) {
        return Err(corrupt(&format!(
            "{} bytes of changes, {length} recorded",
            rest.0.len()
        )));
    }
    let mut changes = Vec::new();
    while !rest.0.is_empty() {
        let len = rest
            .be_u32()
            .ok_or_else(|| corrupt("truncated key length"))?;
        let len = usize::try_from(len).map_err(|_| corrupt("key length"))?;
        let key = rest.take(len).ok_or_else(|| corrupt("truncated key"))?;
        if key.is_empty() {
            return Err(corrupt("empty key"));
        }
        let value = match rest.take(1).ok_or_else(|| corrupt("truncated entry"))? {
            [0] => None,
            [1] => {
                let len = rest
                    .be_u32()
                    .ok_or_else(|| corrupt("truncated value length"))?;
                let len = usize::try_from(len).map_err(|_| corrupt("value length"))?;
                Some(rest.take(len).ok_or_else(|| corrupt("truncated value"))?)
            }
            _ => return Err(corrupt("unknown entry tag")),
        };
        changes.push((key, value));
    }
    Ok(changes)
}

/// The bytes of a record not decoded yet (a commit's journal, a slice's runs).
pub(crate) struct Cursor<'a>(pub(crate) &'a [u8]);

impl<'a> Cursor<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    pub(crate) fn be_u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    pub(crate) fn be_u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// What the journal in `read` holds beyond the state table, given each slice's mark: for
/// every entry of a slice changed above that slice's mark, its latest value.
pub(crate) fn overlay(read: &ReadTransaction, marks: &IndexMarks) -> Result<Overlay, LedgerError> {
    let mut overlay = Overlay::new();
    changes_above(read, marks.min_tx_height(), |height, key, value| {
        if marks.behind(state_slice(key), height) {
            overlay.insert(key.to_vec(), value.map(<[u8]>::to_vec));
        }
        Ok(())
    })?;
    Ok(overlay)
}

/// Calls `visit` with every change the journal in `read` holds of heights above `from`, in
/// order of height: the height, the key bytes, and the value bytes (`None`: removed).
pub(crate) fn changes_above(
    read: &ReadTransaction,
    from: u64,
    mut visit: impl FnMut(u64, &[u8], Option<&[u8]>) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    let journal = match read.open_table(STATE_JOURNAL) {
        Ok(table) => table,
        // A ledger of a format before the journal: its state table is whole.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut apply = |height: u64, bytes: &[u8]| -> Result<(), LedgerError> {
        for (key, value) in decode(height, bytes)? {
            visit(height, key, value)?;
        }
        Ok(())
    };
    // One commit's chunks, joined.
    let mut commit: Option<(u64, Vec<u8>)> = None;
    for row in journal.range((from.saturating_add(1), 0)..)? {
        let (key, bytes) = row?;
        let (height, chunk) = key.value();
        match &mut commit {
            Some((h, joined)) if *h == height => {
                if u64::from(chunk) != (joined.len() / JOURNAL_CHUNK) as u64
                    || joined.len() % JOURNAL_CHUNK != 0
                {
                    return Err(LedgerError::Corrupt(format!(
                        "state journal of height {height}: chunk {chunk} out of place"
                    )));
                }
                joined.extend_from_slice(bytes.value());
            }
            _ => {
                if let Some((h, joined)) = commit.take() {
                    apply(h, &joined)?;
                }
                if chunk != 0 {
                    return Err(LedgerError::Corrupt(format!(
                        "state journal of height {height}: starts at chunk {chunk}"
                    )));
                }
                commit = Some((height, bytes.value().to_vec()));
            }
        }
    }
    if let Some((h, joined)) = commit {
        apply(h, &joined)?;
    }
    Ok(())
}

/// The state table's entries (`base`, ascending by key) with `overlay` applied: ascending by
/// key, without the removed ones.
pub(crate) fn merged<'o, E, I>(
    base: I,
    overlay: &'o Overlay,
) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), E>> + 'o
where
    I: Iterator<Item = Result<(Vec<u8>, Vec<u8>), E>> + 'o,
    E: 'o,
{
    Merged {
        base: base.peekable(),
        overlay: overlay.iter().peekable(),
    }
}

struct Merged<'o, I: Iterator> {
    base: Peekable<I>,
    overlay: Peekable<std::collections::btree_map::Iter<'o, Vec<u8>, Option<Vec<u8>>>>,
}

impl<'o, E, I> Iterator for Merged<'o, I>
where
    I: Iterator<Item = Result<(Vec<u8>, Vec<u8>), E>>,
{
    type Item = Result<(Vec<u8>, Vec<u8>), E>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.base.peek(), self.overlay.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(Ok(_)), None) => return self.base.next(),
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(Ok((base, _))), Some((changed, _))) => base.as_slice().cmp(changed),
            };
            if order == std::cmp::Ordering::Less {
                return self.base.next();
            }
            if order == std::cmp::Ordering::Equal {
                self.base.next();
            }
            if let Some((key, Some(value))) = self.overlay.next() {
                return Some(Ok((key.clone(), value.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

    /// Changed entries: key bytes → value bytes, or `None` for a removed entry.
    type Changes<'a> = BTreeMap<&'a [u8], Option<&'a [u8]>>;

    fn each<'a>(changes: &'a Changes<'a>) -> impl Iterator<Item = Change<'a>> + Clone {
        changes.iter().map(|(key, value)| (*key, *value))
    }

    #[test]
    fn rows_round_trip_and_damaged_ones_are_refused() {
        let long = vec![7u8; 300];
        let changes: Changes<'_> = [
            (b"\x00abc".as_slice(), Some(b"value".as_slice())),
            (b"\x02pdc://x".as_slice(), None),
            (b"\x05".as_slice(), Some(long.as_slice())),
            (b"\x04g".as_slice(), Some(b"".as_slice())),
        ]
        .into_iter()
        .collect();
        let bytes = encode(each(&changes)).unwrap();
        let decoded: Changes<'_> = decode(9, &bytes).unwrap().into_iter().collect();
        assert_eq!(decoded, changes);
        let empty = encode(each(&Changes::new())).unwrap();
        assert!(decode(9, &empty).unwrap().is_empty());
        // A cut is refused wherever it falls, an entry's end included (a commit whose last
        // rows are lost must not pass for a commit of fewer changes); so is a longer one.
        for cut in 0..bytes.len() {
            let err = decode(9, &bytes[..cut]).unwrap_err();
            assert!(
                err.to_string().contains("state journal of height 9"),
                "{err}"
            );
        }
        let longer = [bytes.as_slice(), &[0]].concat();
        assert!(
            decode(9, &longer)
                .unwrap_err()
                .to_string()
                .contains("recorded")
        );
        let entry = |body: &[u8]| [&(body.len() as u64).to_be_bytes()[..], body].concat();
        assert!(
            decode(1, &entry(&[0, 0, 0, 1, 7, 2]))
                .unwrap_err()
                .to_string()
                .contains("unknown entry tag")
        );
        assert!(
            decode(1, &entry(&[0, 0, 0, 0, 0]))
                .unwrap_err()
                .to_string()
                .contains("empty key")
        );
    }

    #[test]
    fn a_slice_is_four_ranges_of_keys_per_tag() {
        assert_eq!(state_slice(&[5]), 0);
        assert_eq!(state_slice(&[0, 3, 9]), 3);
        assert_eq!(state_slice(&[4, 67]), 3);
        // One slice of one tag: the keys whose second byte is b, b+64, b+128 or b+192, four
        // contiguous ranges whose rows share pages.
        for second in [0u8, 64, 128, 192] {
            assert_eq!(state_slice(&[1, second, 0xff]), state_slice(&[1, 0, 0]));
        }
        assert_ne!(state_slice(&[1, 1]), state_slice(&[1, 0]));
    }

    /// Commits' changes cut into rows come back whole and in height order; only a slice's
    /// changes above its mark count; a missing row is refused; pruning keeps later commits.
    #[test]
    fn chunked_commits_make_the_overlay_and_a_missing_chunk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("j.redb")).unwrap();
        let value = vec![9u8; 700];
        let keys: Vec<Vec<u8>> = (0u8..20).map(|i| vec![1, i, i]).collect();
        let first: Changes<'_> = keys
            .iter()
            .map(|k| (k.as_slice(), Some(value.as_slice())))
            .collect();
        let mut second = Changes::new();
        second.insert(keys[1].as_slice(), None);
        second.insert(keys[2].as_slice(), Some(b"new".as_slice()));
        let w = db.begin_write().unwrap();
        {
            let mut journal = w.open_table(STATE_JOURNAL).unwrap();
            append(&mut journal, 5, each(&first)).unwrap();
            append(&mut journal, 8, each(&second)).unwrap();
            assert!(
                journal.len().unwrap() > 4,
                "{} rows",
                journal.len().unwrap()
            );
        }
        w.commit().unwrap();
        // Slice 2 was written at height 8: its entry's changes do not count.
        let mut marks = IndexMarks::all(0, 0);
        marks.tx_height[2] = 8;
        let overlay = overlay(&db.begin_read().unwrap(), &marks).unwrap();
        assert_eq!(overlay.len(), 19);
        assert_eq!(overlay.get(&keys[1]), Some(&None));
        assert_eq!(overlay.get(&keys[0]), Some(&Some(value.clone())));
        assert!(!overlay.contains_key(&keys[2]));

        let w = db.begin_write().unwrap();
        w.open_table(STATE_JOURNAL).unwrap().remove((5, 1)).unwrap();
        w.commit().unwrap();
        let err = super::overlay(&db.begin_read().unwrap(), &marks).unwrap_err();
        assert!(
            err.to_string().contains("state journal of height 5"),
            "{err}"
        );

        let w = db.begin_write().unwrap();
        {
            let mut journal = w.open_table(STATE_JOURNAL).unwrap();
            prune(&mut journal, 5).unwrap();
            let left: Vec<(u64, u32)> = journal
                .iter()
                .unwrap()
                .map(|r| r.unwrap().0.value())
                .collect();
            assert_eq!(left, vec![(8, 0)]);
        }
        w.commit().unwrap();
    }

    proptest! {
        /// Merging equals applying the overlay to a map.
        #[test]
        fn merging_applies_the_overlay(
            base in proptest::collection::btree_map(proptest::collection::vec(0u8..4, 1..4), any::<u8>(), 0..40),
            overlay in proptest::collection::btree_map(
                proptest::collection::vec(0u8..4, 1..4),
                proptest::option::of(any::<u8>()),
                0..40,
            ),
        ) {
            let mut model = base.clone();
            for (k, v) in &overlay {
                match v {
                    Some(v) => { model.insert(k.clone(), *v); }
                    None => { model.remove(k); }
                }
            }
            let overlay: Overlay = overlay.into_iter().map(|(k, v)| (k, v.map(|v| vec![v]))).collect();
            let base = base.into_iter().map(|(k, v)| Ok::<_, ()>((k, vec![v])));
            let got: Vec<(Vec<u8>, Vec<u8>)> = merged(base, &overlay).map(Result::unwrap).collect();
            let want: Vec<(Vec<u8>, Vec<u8>)> = model.into_iter().map(|(k, v)| (k, vec![v])).collect();
            prop_assert_eq!(got, want);
        }
    }
}
