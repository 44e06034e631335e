//! The state table, written a slice at a time, and the journal that keeps it whole.
//!
//! A state key is a tag byte and then, for every kind but the log head, a hash or an account
//! ([`secnet_contract::StateKey::to_bytes`]), so the entries one group commit changes land on
//! random pages of a B-tree much larger than the commit: written with every commit, nearly
//! every changed entry costs a page of its own. So the state table is written like the
//! indexes ([`crate::index`]): split by the key's second byte into [`INDEX_SLICES`] slices,
//! and each group commit stores the entries of the slice whose index rows it stores, with
//! their values as of the commit's last block. A slice's entries in the table are then as of
//! that slice's mark ([`IndexMarks::tx_height`]).
//!
//! The changes the table does not hold yet are in this journal, written with every group
//! commit: one row, keyed by the commit's last height, holding every entry its blocks changed
//! with the entry's last value. Each row lands at the right edge of its B-tree, so one commit
//! writes a few sequential pages instead of one random page per entry. The state at the tip
//! is the table with, for each slice, the journal's rows above the slice's mark applied in
//! height order ([`overlay`]); rows at or below every slice's mark are deleted.

use crate::error::LedgerError;
use crate::index::{INDEX_SLICES, IndexMarks};
use redb::{ReadTransaction, TableDefinition};
use std::collections::BTreeMap;
use std::iter::Peekable;

/// Last height of a group commit → every state entry its blocks changed ([`encode`]).
pub(crate) const STATE_JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("state_journal");

/// The slice of a state entry: its key's second byte (the first of its hash, account or
/// address), or slice 0 for a key of one byte.
pub(crate) fn state_slice(key: &[u8]) -> usize {
    usize::from(key.get(1).copied().unwrap_or(0)) % INDEX_SLICES
}

/// Changed entries: key bytes → value bytes, or `None` for a removed entry.
pub(crate) type Changes<'a> = BTreeMap<&'a [u8], Option<&'a [u8]>>;

/// One changed entry: its key bytes, and its value bytes or `None` if it was removed.
pub(crate) type Change<'a> = (&'a [u8], Option<&'a [u8]>);

/// The changes the table lacks: key bytes → value bytes at the tip, or `None` if removed.
pub(crate) type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A journal row: per entry, the key's length (4 bytes, big-endian) and bytes, then 0 for a
/// removed entry, or 1, the value's length (4 bytes, big-endian) and bytes.
pub(crate) fn encode(changes: &Changes<'_>) -> Vec<u8> {
    let size = changes
        .iter()
        .map(|(k, v)| 5 + k.len() + v.map_or(0, |v| 4 + v.len()))
        .sum();
    let mut out = Vec::with_capacity(size);
    for (key, value) in changes {
        // Both lengths fit: keys and values come from transactions of bounded size.
        out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(key);
        match value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

/// The changes in a journal row ([`encode`]), in the order written; `height` names the row in
/// the error a damaged one gets.
pub(crate) fn decode(height: u64, bytes: &[u8]) -> Result<Vec<Change<'_>>, LedgerError> {
    let corrupt = |what: &str| LedgerError::Corrupt(format!("state journal row {height}: {what}"));
    let mut rest = Cursor(bytes);
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

/// The bytes of a journal row not decoded yet.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn be_u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

/// What the journal in `read` holds beyond the state table, given each slice's mark: for
/// every entry of a slice changed above that slice's mark, its latest value.
pub(crate) fn overlay(read: &ReadTransaction, marks: &IndexMarks) -> Result<Overlay, LedgerError> {
    let journal = match read.open_table(STATE_JOURNAL) {
        Ok(table) => table,
        // A ledger of a format before the journal: its state table is whole.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Overlay::new()),
        Err(e) => return Err(e.into()),
    };
    let mut overlay = Overlay::new();
    for row in journal.range(marks.min_tx_height().saturating_add(1)..)? {
        let (height, bytes) = row?;
        let height = height.value();
        for (key, value) in decode(height, bytes.value())? {
            let behind = marks
                .tx_height
                .get(state_slice(key))
                .is_some_and(|mark| height > *mark);
            if behind {
                overlay.insert(key.to_vec(), value.map(<[u8]>::to_vec));
            }
        }
    }
    Ok(overlay)
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
        let bytes = encode(&changes);
        let decoded: Changes<'_> = decode(9, &bytes).unwrap().into_iter().collect();
        assert_eq!(decoded, changes);
        assert!(decode(9, &[]).unwrap().is_empty());
        // A cut row is refused unless it ends where an entry does: then it is those entries.
        let all = decode(9, &bytes).unwrap();
        let mut refused = 0;
        for cut in 1..bytes.len() {
            match decode(9, &bytes[..cut]) {
                Ok(prefix) => assert_eq!(prefix[..], all[..prefix.len()]),
                Err(err) => {
                    assert!(err.to_string().contains("state journal row 9"), "{err}");
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, bytes.len() - all.len());
        let mut bad_tag = encode(&[(b"\x00k".as_slice(), None)].into_iter().collect());
        *bad_tag.last_mut().unwrap() = 2;
        assert!(
            decode(1, &bad_tag)
                .unwrap_err()
                .to_string()
                .contains("unknown entry tag")
        );
        assert!(
            decode(1, &[0, 0, 0, 0, 0])
                .unwrap_err()
                .to_string()
                .contains("empty key")
        );
    }

    #[test]
    fn a_slice_is_a_range_of_keys_per_tag() {
        assert_eq!(state_slice(&[5]), 0);
        assert_eq!(state_slice(&[0, 3, 9]), 3);
        assert_eq!(state_slice(&[4, 67]), 3);
        // Keys of one slice and one tag are contiguous: a slice's rows share pages.
        assert_eq!(state_slice(&[1, 64, 0xff]), state_slice(&[1, 0, 0]));
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
