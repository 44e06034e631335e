//! The transaction index, the access-log index, and the indexes of listings by owner and by
//! hash, written a slice at a time (the state table is written the same way, see
//! [`crate::journal`]).
//!
//! The first two are keyed by hashes, so each row lands on a random page of a B-tree much
//! larger than one write: written with every block, nearly every row costs a page of its own
//! (measured by `secnet bench apply`: the two indexes were over two thirds of the bytes
//! written). So their rows wait in memory, split by the first byte of their hash into
//! [`INDEX_SLICES`] slices, and each write stores one slice's rows, sorted, as a new run of
//! that slice ([`crate::runs`]); a slice waits about [`INDEX_SLICES`] writes, fewer while
//! more than [`ROWS_WAITING`] rows would wait (a write then stores the oldest slices that
//! bring them back to it).
//!
//! The listings' indexes are written with the same slices and marks: by owner, a row each
//! time one registers a listing, so that an owner's history does not scan every listing; by
//! hash, a row each time a hash is registered or withdrawn, in slices of consecutive hashes,
//! so that a page of listings in order reads what it returns and not the whole state table.
//!
//! Nothing is lost in a crash: the rows are derived from the blocks, the access-log leaves
//! and the state journal, which are written at once. [`IndexMarks`], written with every
//! slice, says which rows of each slice are on disk; opening a ledger derives the others
//! again ([`Pending::rebuild`]), and the state entries waiting (with their values) from the
//! state journal.
//!
//! Readers look at the waiting rows before they open their read transaction: a slice
//! written meanwhile is then seen twice, never missed, since the rows are dropped from
//! memory only once the write holding them committed.

use crate::blocks::{self, BLOCK_CHUNKS};
use crate::error::LedgerError;
use crate::journal::{self, state_slice};
use crate::store::{LOG, LogSubject, SUBJECT_KEY_LEN, consumed_nonce, log_index_row};
use crate::stored_block::StoredBlock;
use crate::unwritten::{decode_location, encode_location};
use redb::ReadTransaction;
use secnet_contract::{LogEntry, StateKey, StateValue};
use secnet_types::{AccountId, Hash};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A state entry's value bytes as of its last change, shared with the state tree's leaf,
/// or `None` if the entry was removed.
pub(crate) type StateValueBytes = Option<Arc<[u8]>>;

/// The most value bytes that wait in memory with their state keys: past this, a key waits
/// alone and the write looks its value up in the state tree, as a key always did before
/// values waited with it. The waiting values are not part of the state tree's memory bound;
/// this is their own, against a flood of large values.
pub(crate) const WAITING_VALUE_BYTES: usize = 64 << 20;

/// What waits in memory for a state entry besides its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Waiting {
    /// Its value as of its last change.
    Value(StateValueBytes),
    /// Nothing (the waiting values were at [`WAITING_VALUE_BYTES`]): the write looks the
    /// value up in the state tree as of its last block.
    LookUp,
}

impl Waiting {
    /// The value bytes it holds.
    fn bytes(&self) -> usize {
        match self {
            Waiting::Value(Some(value)) => value.len(),
            Waiting::Value(None) | Waiting::LookUp => 0,
        }
    }
}

/// How many slices each index is written in.
pub(crate) const INDEX_SLICES: usize = 64;

/// The rows that may wait in memory (about 80 bytes each) once a write committed, besides
/// those it brought. A write stores one slice, so about [`INDEX_SLICES`] / 2 writes' rows
/// wait: more as a write takes longer (a larger ledger, a busy disk), so the memory would
/// grow with the time a write takes. Past this, a write stores as many of the oldest slices
/// as bring the rows waiting back to it: each slice waits fewer writes, and a write stores
/// about as many rows as before (those that came since the last one), in smaller runs.
pub(crate) const ROWS_WAITING: usize = 1 << 19;

/// A row of the access-log index (see [`log_index_row`]).
pub(crate) type LogRow = [u8; SUBJECT_KEY_LEN + 8];

/// A row of the index of listings by owner: owner ‖ content hash, written when the owner
/// registered it. A withdrawal writes nothing: readers keep only the hashes the state still
/// lists under that owner, and a row of a listing its owner no longer holds is dropped when
/// its run is merged.
pub(crate) type OwnedRow = [u8; 64];

/// The row for `owner`'s listing of `hash`.
pub(crate) fn owned_row(owner: &AccountId, hash: &Hash) -> OwnedRow {
    let mut row = [0u8; 64];
    row[..32].copy_from_slice(owner.as_bytes());
    row[32..].copy_from_slice(hash.as_bytes());
    row
}

/// The content hashes of listings withdrawn since this table was added (`hash` → nothing):
/// the only listings whose owner-index rows can name an owner that no longer holds them (a
/// listing never changes hands; a withdrawn one may be registered again). As the owner
/// index's runs merge, a row is checked against the state only if its hash is here: a
/// lookup in a table of withdrawals, not a read of the listing from the state tree for
/// every row at every level of the merges.
pub(crate) const WITHDRAWN: redb::TableDefinition<&[u8], ()> =
    redb::TableDefinition::new("listings_withdrawn");

/// The content hash an owner-index row names.
pub(crate) fn owned_hash(row: &[u8]) -> Option<Hash> {
    Some(Hash(row.get(32..64)?.try_into().ok()?))
}

/// The slice of an owner-index row: its owner's first byte (as a transaction hash's).
pub(crate) fn owned_slice(row: &[u8]) -> usize {
    tx_slice(row)
}

/// The slice of a listed hash: consecutive hashes share one, so that listing them in order
/// reads one slice after the other.
pub(crate) fn listed_slice(hash: &[u8]) -> usize {
    usize::from(hash.first().copied().unwrap_or(0)) / (256 / INDEX_SLICES)
}

/// The last hash of slice `slice` of the listed hashes.
pub(crate) fn listed_slice_end(slice: usize) -> [u8; 32] {
    let mut hash = [0xff; 32];
    hash[0] = u8::try_from((slice + 1) * (256 / INDEX_SLICES) - 1).unwrap_or(u8::MAX);
    hash
}

/// The hash after `hash`, counted big-endian; `None` after the last.
pub(crate) fn next_hash(hash: &[u8; 32]) -> Option<[u8; 32]> {
    let mut next = *hash;
    for byte in next.iter_mut().rev() {
        let (sum, carry) = byte.overflowing_add(1);
        *byte = sum;
        if !carry {
            return Some(next);
        }
    }
    None
}

/// The row of the listed hashes a state change makes: a listing's content hash, and whether
/// it is listed after it; `None` for a change of anything else.
pub(crate) fn listed_row_of(key: &[u8], value: Option<&[u8]>) -> Option<([u8; 32], bool)> {
    match key.split_first() {
        Some((&StateKey::LISTING_TAG, hash)) => Some((hash.try_into().ok()?, value.is_some())),
        _ => None,
    }
}

/// The first and the last row `owner`'s listings can have.
pub(crate) fn owned_bounds(owner: &AccountId) -> (OwnedRow, OwnedRow) {
    (
        owned_row(owner, &Hash([0; 32])),
        owned_row(owner, &Hash([0xff; 32])),
    )
}

/// The owner-index row a state change makes: a listing's registration (key bytes `key`,
/// value bytes `value`); `None` for any other change.
pub(crate) fn owned_row_of(
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<Option<OwnedRow>, LedgerError> {
    let (Some(value), Some(StateKey::LISTING_TAG)) = (value, key.first().copied()) else {
        return Ok(None);
    };
    let key = StateKey::from_bytes(key)?;
    let listing = StateValue::from_bytes(&key, value)?
        .into_listing()
        .ok_or_else(|| LedgerError::Corrupt(format!("{key:?} holds no listing")))?;
    Ok(Some(owned_row(&listing.owner, &listing.hash)))
}

/// The slice of a transaction hash.
pub(crate) fn tx_slice(hash: &[u8]) -> usize {
    usize::from(hash.first().copied().unwrap_or(0)) % INDEX_SLICES
}

/// The slice of an access-log index row: the first byte of its subject's hash or account
/// (after the subject's tag byte).
pub(crate) fn log_slice(row: &[u8]) -> usize {
    usize::from(row.get(1).copied().unwrap_or(0)) % INDEX_SLICES
}

/// How much of each slice is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexMarks {
    /// Per slice: the transactions of every block at or below this height are in the
    /// transaction index, so are the listings registered in them in the owner index, and the
    /// slice's entries in the state table hold every change up to this height
    /// ([`crate::journal`]).
    pub(crate) tx_height: [u64; INDEX_SLICES],
    /// Per slice: the access-log leaves below this index are in the access-log index.
    pub(crate) log_size: [u64; INDEX_SLICES],
}

impl IndexMarks {
    /// Every slice complete up to `height` and `log_size`.
    pub(crate) fn all(height: u64, log_size: u64) -> IndexMarks {
        IndexMarks {
            tx_height: [height; INDEX_SLICES],
            log_size: [log_size; INDEX_SLICES],
        }
    }

    /// `tx_height` then `log_size`, each slice big-endian.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.tx_height
            .iter()
            .chain(&self.log_size)
            .flat_map(|v| v.to_be_bytes())
            .collect()
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<IndexMarks, LedgerError> {
        if bytes.len() != 2 * 8 * INDEX_SLICES {
            return Err(LedgerError::Corrupt(format!(
                "index marks record of {} bytes, expected {}",
                bytes.len(),
                2 * 8 * INDEX_SLICES
            )));
        }
        let mut values = bytes.chunks_exact(8).map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_be_bytes(b)
        });
        let mut marks = IndexMarks::all(0, 0);
        for v in &mut marks.tx_height {
            *v = values.next().unwrap_or(0);
        }
        for v in &mut marks.log_size {
            *v = values.next().unwrap_or(0);
        }
        Ok(marks)
    }

    /// Whether slice `slice` lacks what the block at `height` wrote to it (the slice is on
    /// disk only up to a lower height).
    pub(crate) fn behind(&self, slice: usize, height: u64) -> bool {
        self.tx_height.get(slice).is_some_and(|mark| height > *mark)
    }

    /// The lowest height below which every slice's transactions are on disk.
    pub(crate) fn min_tx_height(&self) -> u64 {
        self.tx_height.iter().copied().min().unwrap_or(0)
    }

    fn min_log_size(&self) -> u64 {
        self.log_size.iter().copied().min().unwrap_or(0)
    }

    /// The slices, the one written longest ago first (the first of equals first): the next
    /// write stores the first (and more, see [`Pending::plan`]), so no slice waits more than
    /// [`INDEX_SLICES`] writes, however often the node restarts.
    fn oldest(&self) -> Vec<usize> {
        let mut slices: Vec<usize> = (0..INDEX_SLICES).collect();
        slices.sort_by_key(|s| (self.tx_height.get(*s), self.log_size.get(*s)));
        slices
    }
}

/// The index rows not on disk yet, by slice, the state entries whose slice of the state
/// table is behind ([`crate::journal`]) with their last values, and the marks of what is on
/// disk.
///
/// The values wait with their keys so that a write stores them as they are, without looking
/// each up in the state tree: under a memory bound most of those would be read back from
/// the spill file, since a key waits about [`INDEX_SLICES`] writes, far longer than a
/// changed subtree is kept in memory.
#[derive(Debug)]
pub(crate) struct Pending {
    txs: Vec<BTreeMap<[u8; 32], [u8; 12]>>,
    log_rows: Vec<BTreeSet<LogRow>>,
    owned: Vec<BTreeSet<OwnedRow>>,
    /// Per slice ([`listed_slice`]): content hash → whether it is listed, as of the last
    /// change waiting.
    listed: Vec<BTreeMap<[u8; 32], bool>>,
    state: Vec<BTreeMap<Vec<u8>, Waiting>>,
    /// The value bytes `state` holds.
    state_value_bytes: usize,
    /// The most it may hold ([`WAITING_VALUE_BYTES`]).
    value_budget: usize,
    /// The rows that may wait before a write stores more than one slice ([`ROWS_WAITING`]).
    row_budget: usize,
    marks: IndexMarks,
}

/// One slice's rows, sorted, to write.
#[derive(Debug, Default)]
pub(crate) struct SliceRows {
    pub(crate) slice: usize,
    pub(crate) txs: Vec<([u8; 32], [u8; 12])>,
    pub(crate) log_rows: Vec<LogRow>,
    pub(crate) owned: Vec<OwnedRow>,
    pub(crate) listed: Vec<([u8; 32], bool)>,
    /// The state entries to store (to wait, for the rows returned to wait), keys ascending,
    /// each with its value as of the write's last block (or to look it up there).
    pub(crate) state: Vec<(Vec<u8>, Waiting)>,
}

impl Pending {
    /// How many rows wait, in all.
    pub(crate) fn rows(&self) -> usize {
        self.txs.iter().map(BTreeMap::len).sum::<usize>()
            + self.log_rows.iter().map(BTreeSet::len).sum::<usize>()
            + self.owned.iter().map(BTreeSet::len).sum::<usize>()
            + self.listed.iter().map(BTreeMap::len).sum::<usize>()
            + self.state.iter().map(BTreeMap::len).sum::<usize>()
    }

    /// Nothing waiting, with `marks` on disk.
    pub(crate) fn new(marks: IndexMarks) -> Pending {
        Pending {
            txs: vec![BTreeMap::new(); INDEX_SLICES],
            log_rows: vec![BTreeSet::new(); INDEX_SLICES],
            owned: vec![BTreeSet::new(); INDEX_SLICES],
            listed: vec![BTreeMap::new(); INDEX_SLICES],
            state: vec![BTreeMap::new(); INDEX_SLICES],
            state_value_bytes: 0,
            value_budget: WAITING_VALUE_BYTES,
            row_budget: ROWS_WAITING,
            marks,
        }
    }

    /// The rows a ledger at `tip_height` with `log_size` leaves holds beyond `marks`,
    /// derived from its stored blocks (from `first_block` on: pruned blocks' transactions
    /// leave the index), access-log leaves and the registrations its state journal holds
    /// ([`crate::journal::changes_above`]); with `state`, the state entries its journal holds
    /// beyond the state table, with their values ([`crate::journal::overlay`]).
    pub(crate) fn rebuild(
        read: &ReadTransaction,
        marks: IndexMarks,
        first_block: u64,
        tip_height: u64,
        log_size: u64,
        state: impl IntoIterator<Item = (Vec<u8>, StateValueBytes)>,
    ) -> Result<Pending, LedgerError> {
        let mut pending = Pending::new(marks);
        let table = read.open_table(BLOCK_CHUNKS)?;
        let from = pending
            .marks
            .min_tx_height()
            .saturating_add(1)
            .max(first_block);
        for height in from..=tip_height {
            let bytes = blocks::get(&table, height)?.ok_or_else(|| {
                LedgerError::Corrupt(format!(
                    "block {height} is missing, and its transactions are not indexed yet"
                ))
            })?;
            let stored = StoredBlock::from_bytes(&bytes)
                .map_err(|e| LedgerError::Corrupt(format!("block {height}: {e}")))?;
            for ((position, tx), receipt) in (0u32..).zip(&stored.block.txs).zip(&stored.receipts) {
                if !consumed_nonce(receipt) {
                    continue;
                }
                let hash = *tx.hash().as_bytes();
                let slice = tx_slice(&hash);
                if pending.marks.behind(slice, height)
                    && let Some(rows) = pending.txs.get_mut(slice)
                {
                    rows.insert(hash, encode_location(height, position));
                }
            }
        }
        let log = read.open_table(LOG)?;
        for index in pending.marks.min_log_size()..log_size {
            let leaf = log.get(index)?.ok_or_else(|| {
                LedgerError::Corrupt(format!("access-log leaf {index} is missing"))
            })?;
            let entry = LogEntry::from_bytes(leaf.value())
                .map_err(|e| LedgerError::Corrupt(format!("access-log leaf {index}: {e}")))?;
            for subject in LogSubject::of(&entry) {
                let row = log_index_row(&subject.key(), index);
                let slice = log_slice(&row);
                if pending
                    .marks
                    .log_size
                    .get(slice)
                    .is_some_and(|m| index >= *m)
                    && let Some(rows) = pending.log_rows.get_mut(slice)
                {
                    rows.insert(row);
                }
            }
        }
        let from = pending.marks.min_tx_height();
        journal::changes_above(read, from, |height, key, value| {
            // In order of height: the last change of a hash wins.
            if let Some((hash, listed)) = listed_row_of(key, value) {
                let slice = listed_slice(&hash);
                if pending.marks.behind(slice, height)
                    && let Some(rows) = pending.listed.get_mut(slice)
                {
                    rows.insert(hash, listed);
                }
            }
            if let Some(row) = owned_row_of(key, value)? {
                let slice = owned_slice(&row);
                if pending.marks.behind(slice, height)
                    && let Some(rows) = pending.owned.get_mut(slice)
                {
                    rows.insert(row);
                }
            }
            Ok(())
        })?;
        for (key, value) in state {
            pending.wait_state(key, Waiting::Value(value));
        }
        Ok(pending)
    }

    /// Makes the state entry `key` wait with `waiting`, replacing what waited for it; alone
    /// if the waiting values would be over their budget.
    fn wait_state(&mut self, key: Vec<u8>, waiting: Waiting) {
        let Some(entries) = self.state.get_mut(state_slice(&key)) else {
            return;
        };
        let replaced = entries.remove(&key).map_or(0, |w| w.bytes());
        self.state_value_bytes -= replaced;
        let waiting = if self.state_value_bytes + waiting.bytes() <= self.value_budget {
            self.state_value_bytes += waiting.bytes();
            waiting
        } else {
            Waiting::LookUp
        };
        entries.insert(key, waiting);
    }

    /// Lets at most `rows` rows wait once a write committed, besides those it brought.
    pub(crate) fn set_row_budget(&mut self, rows: usize) {
        self.row_budget = rows;
    }

    /// The value bytes waiting with their state keys.
    pub(crate) fn state_value_bytes(&self) -> usize {
        self.state_value_bytes
    }

    /// What is on disk.
    #[cfg(test)]
    pub(crate) fn marks(&self) -> &IndexMarks {
        &self.marks
    }

    /// Where a transaction waiting here was included.
    pub(crate) fn tx_location(&self, hash: &Hash) -> Option<(u64, u32)> {
        let hash = hash.as_bytes();
        decode_location(self.txs.get(tx_slice(hash))?.get(hash)?)
    }

    /// The waiting leaf indices about the subject with key `key`, from `from` on,
    /// ascending.
    pub(crate) fn log_indices(&self, key: &[u8; SUBJECT_KEY_LEN], from: u64) -> Vec<u64> {
        let first = log_index_row(key, from);
        let last = log_index_row(key, u64::MAX);
        self.log_rows
            .get(log_slice(&first))
            .into_iter()
            .flat_map(|rows| rows.range(first..=last))
            .map(|row| {
                let mut index = [0u8; 8];
                index.copy_from_slice(&row[SUBJECT_KEY_LEN..]);
                u64::from_be_bytes(index)
            })
            .collect()
    }

    /// The content hashes of the waiting owner-index rows of `owner`, ascending.
    pub(crate) fn hashes_owned_by(&self, owner: &AccountId) -> Vec<Hash> {
        let (first, last) = owned_bounds(owner);
        self.owned
            .get(owned_slice(&first))
            .into_iter()
            .flat_map(|rows| rows.range(first..=last))
            .filter_map(|row| owned_hash(row))
            .collect()
    }

    /// The content hashes from `from` on in slice `slice` of the listed hashes whose
    /// changes wait here (listed or not), ascending.
    pub(crate) fn listed_from(&self, slice: usize, from: &[u8; 32]) -> Vec<[u8; 32]> {
        self.listed
            .get(slice)
            .into_iter()
            .flat_map(|rows| rows.range(*from..))
            .map(|(hash, _)| *hash)
            .collect()
    }

    /// The rows of slice `slice` waiting.
    fn slice_rows(&self, slice: usize) -> usize {
        self.txs.get(slice).map_or(0, BTreeMap::len)
            + self.log_rows.get(slice).map_or(0, BTreeSet::len)
            + self.owned.get(slice).map_or(0, BTreeSet::len)
            + self.listed.get(slice).map_or(0, BTreeMap::len)
            + self.state.get(slice).map_or(0, BTreeMap::len)
    }

    /// The slices the next write stores: the oldest, and the next oldest as long as more
    /// than [`ROWS_WAITING`] rows would still wait without them, so that a write leaves at
    /// most that many waiting besides those it brings.
    fn slices_due(&self) -> Vec<usize> {
        let mut left = self.rows();
        let mut due = Vec::new();
        for slice in self.marks.oldest() {
            if !due.is_empty() && left <= self.row_budget {
                break;
            }
            left -= self.slice_rows(slice);
            due.push(slice);
        }
        due
    }

    /// Splits a write's new rows: those of the slices due now ([`Self::slices_due`]) join those slices' waiting rows, to be written (returned, sorted, a
    /// [`SliceRows`] per slice); the others are returned to wait. A state entry's value here
    /// replaces the one waiting, so `state` names each key once, with its value as of the
    /// write's last block. Nothing changes here until [`Self::written`].
    pub(crate) fn plan<'k>(
        &self,
        txs: impl IntoIterator<Item = ([u8; 32], [u8; 12])>,
        log_rows: impl IntoIterator<Item = LogRow>,
        owned: impl IntoIterator<Item = OwnedRow>,
        listed: impl IntoIterator<Item = ([u8; 32], bool)>,
        state: impl IntoIterator<Item = (&'k [u8], &'k StateValueBytes)>,
    ) -> (Vec<SliceRows>, SliceRows) {
        let slices = self.slices_due();
        // Where each due slice's rows go in `due`.
        let mut at = [None; INDEX_SLICES];
        for (i, slice) in slices.iter().enumerate() {
            if let Some(a) = at.get_mut(*slice) {
                *a = Some(i);
            }
        }
        let due_at = |slice: usize| at.get(slice).copied().flatten();
        let mut due: Vec<SliceRows> = slices
            .iter()
            .map(|&slice| SliceRows {
                slice,
                txs: self
                    .txs
                    .get(slice)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (*k, *v))
                    .collect(),
                log_rows: self
                    .log_rows
                    .get(slice)
                    .into_iter()
                    .flatten()
                    .copied()
                    .collect(),
                owned: self
                    .owned
                    .get(slice)
                    .into_iter()
                    .flatten()
                    .copied()
                    .collect(),
                listed: Vec::new(),
                state: Vec::new(),
            })
            .collect();
        // The last change of a hash wins.
        let mut due_listed: Vec<BTreeMap<[u8; 32], bool>> = slices
            .iter()
            .map(|slice| self.listed.get(*slice).cloned().unwrap_or_default())
            .collect();
        let mut wait_listed: BTreeMap<[u8; 32], bool> = BTreeMap::new();
        for (hash, listed) in listed {
            match due_at(listed_slice(&hash)).and_then(|i| due_listed.get_mut(i)) {
                Some(rows) => rows.insert(hash, listed),
                None => wait_listed.insert(hash, listed),
            };
        }
        let mut due_state: Vec<BTreeMap<&[u8], Waiting>> = slices
            .iter()
            .map(|slice| {
                self.state
                    .get(*slice)
                    .into_iter()
                    .flatten()
                    .map(|(key, waiting)| (key.as_slice(), waiting.clone()))
                    .collect()
            })
            .collect();
        let mut wait = SliceRows {
            listed: wait_listed.into_iter().collect(),
            ..SliceRows::default()
        };
        for (key, value) in state {
            match due_at(state_slice(key)).and_then(|i| due_state.get_mut(i)) {
                Some(entries) => {
                    entries.insert(key, Waiting::Value(value.clone()));
                }
                None => wait
                    .state
                    .push((key.to_vec(), Waiting::Value(value.clone()))),
            }
        }
        for tx in txs {
            match due_at(tx_slice(&tx.0)).and_then(|i| due.get_mut(i)) {
                Some(rows) => rows.txs.push(tx),
                None => wait.txs.push(tx),
            }
        }
        for row in log_rows {
            match due_at(log_slice(&row)).and_then(|i| due.get_mut(i)) {
                Some(rows) => rows.log_rows.push(row),
                None => wait.log_rows.push(row),
            }
        }
        for row in owned {
            match due_at(owned_slice(&row)).and_then(|i| due.get_mut(i)) {
                Some(rows) => rows.owned.push(row),
                None => wait.owned.push(row),
            }
        }
        for ((rows, listed), state) in due.iter_mut().zip(due_listed).zip(due_state) {
            rows.listed = listed.into_iter().collect();
            rows.state = state
                .into_iter()
                .map(|(key, waiting)| (key.to_vec(), waiting))
                .collect();
            rows.txs.sort_unstable();
            rows.log_rows.sort_unstable();
            rows.owned.sort_unstable();
            rows.owned.dedup();
        }
        (due, wait)
    }

    /// The marks once `due` is written with blocks up to `height` and `log_size` leaves.
    pub(crate) fn marks_after(&self, due: &[SliceRows], height: u64, log_size: u64) -> IndexMarks {
        let mut marks = self.marks.clone();
        for slice in due.iter().map(|rows| rows.slice) {
            if let Some(h) = marks.tx_height.get_mut(slice) {
                *h = height;
            }
            if let Some(s) = marks.log_size.get_mut(slice) {
                *s = log_size;
            }
        }
        marks
    }

    /// Records that `due` and `marks` committed: drops the slices' rows and keeps `wait`'s.
    pub(crate) fn written(&mut self, due: &[SliceRows], wait: SliceRows, marks: IndexMarks) {
        for slice in due.iter().map(|rows| rows.slice) {
            if let Some(rows) = self.txs.get_mut(slice) {
                rows.clear();
            }
            if let Some(rows) = self.log_rows.get_mut(slice) {
                rows.clear();
            }
            if let Some(rows) = self.owned.get_mut(slice) {
                rows.clear();
            }
            if let Some(rows) = self.listed.get_mut(slice) {
                rows.clear();
            }
            if let Some(entries) = self.state.get_mut(slice) {
                let written: usize = entries.values().map(Waiting::bytes).sum();
                self.state_value_bytes -= written;
                entries.clear();
            }
        }
        for (hash, location) in wait.txs {
            if let Some(rows) = self.txs.get_mut(tx_slice(&hash)) {
                rows.insert(hash, location);
            }
        }
        for row in wait.log_rows {
            if let Some(rows) = self.log_rows.get_mut(log_slice(&row)) {
                rows.insert(row);
            }
        }
        for row in wait.owned {
            if let Some(rows) = self.owned.get_mut(owned_slice(&row)) {
                rows.insert(row);
            }
        }
        for (hash, listed) in wait.listed {
            if let Some(rows) = self.listed.get_mut(listed_slice(&hash)) {
                rows.insert(hash, listed);
            }
        }
        for (key, waiting) in wait.state {
            self.wait_state(key, waiting);
        }
        self.marks = marks;
    }

    /// Drops the waiting transactions of blocks below `height`, which were pruned.
    pub(crate) fn forget_txs_below(&mut self, height: u64) {
        for rows in &mut self.txs {
            rows.retain(|_, location| decode_location(location).is_some_and(|(h, _)| h >= height));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_a_wrong_length_is_refused() {
        let mut marks = IndexMarks::all(7, 11);
        marks.tx_height[3] = 9;
        marks.log_size[63] = 20;
        assert_eq!(IndexMarks::from_bytes(&marks.to_bytes()).unwrap(), marks);
        assert_eq!(marks.min_tx_height(), 7);
        let err = IndexMarks::from_bytes(&[0u8; 10]).unwrap_err();
        assert!(err.to_string().contains("10 bytes"), "{err}");
    }

    #[test]
    fn a_write_takes_the_due_slice_and_the_rest_waits_until_it_committed() {
        let mut pending = Pending::new(IndexMarks::all(0, 0));
        let tx = |first: u8| {
            let mut h = [0u8; 32];
            h[0] = first;
            (h, encode_location(1, u32::from(first)))
        };
        let row = |first: u8, index: u64| {
            let mut key = [0u8; SUBJECT_KEY_LEN];
            key[1] = first;
            log_index_row(&key, index)
        };
        let value = |v: &[u8]| -> StateValueBytes { Some(Arc::from(v)) };
        let state: [(&[u8], StateValueBytes); 3] = [
            (b"\x05", value(b"five")),
            (b"\x01\x01b", value(b"b")),
            (b"\x01\x00a", None),
        ];
        let (due, wait) = pending.plan(
            [tx(0), tx(1), tx(64)],
            [row(0, 0), row(1, 1)],
            [],
            [],
            state.iter().map(|(k, v)| (*k, v)),
        );
        assert_eq!(due[0].slice, 0);
        assert_eq!(due[0].txs, vec![tx(0), tx(64)]);
        assert_eq!(due[0].log_rows, vec![row(0, 0)]);
        assert_eq!(
            due[0].state,
            vec![
                (b"\x01\x00a".to_vec(), Waiting::Value(None)),
                (b"\x05".to_vec(), Waiting::Value(value(b"five")))
            ]
        );
        // Until the write committed, nothing moved.
        assert_eq!(pending.rows(), 0);
        let marks = pending.marks_after(&due, 1, 2);
        pending.written(&due, wait, marks);
        assert_eq!(pending.marks().tx_height[0], 1);
        assert_eq!(pending.marks().tx_height[1], 0);
        assert_eq!(pending.tx_location(&Hash(tx(1).0)), Some((1, 1)));
        assert_eq!(pending.tx_location(&Hash(tx(0).0)), None);
        let mut key = [0u8; SUBJECT_KEY_LEN];
        key[1] = 1;
        assert_eq!(pending.log_indices(&key, 0), vec![1]);
        assert_eq!(pending.log_indices(&key, 2), Vec::<u64>::new());

        // The next write takes slice 1, with what waited there; a value this write brings
        // replaces the one waiting.
        let later = [
            (b"\x03\x01c".as_slice(), value(b"c")),
            (b"\x01\x01b".as_slice(), None),
        ];
        let (due, _) = pending.plan([], [], [], [], later.iter().map(|(k, v)| (*k, v)));
        assert_eq!(due[0].slice, 1);
        assert_eq!(due[0].txs, vec![tx(1)]);
        assert_eq!(due[0].log_rows, vec![row(1, 1)]);
        assert_eq!(
            due[0].state,
            vec![
                (b"\x01\x01b".to_vec(), Waiting::Value(None)),
                (b"\x03\x01c".to_vec(), Waiting::Value(value(b"c")))
            ]
        );
    }

    #[test]
    fn a_waiting_value_is_replaced_by_a_later_writes_until_its_slice_is_due() {
        let mut pending = Pending::new(IndexMarks::all(0, 0));
        let key: &[u8] = b"\x01\x07k";
        let value = |v: &[u8]| -> StateValueBytes { Some(Arc::from(v)) };
        // Slices 0 to 6 are written first; the key waits in slice 7 through all of them,
        // changed by every write.
        for (n, v) in [
            value(b"1"),
            None,
            value(b"3"),
            value(b"4"),
            None,
            value(b"6"),
            value(b"7"),
        ]
        .iter()
        .enumerate()
        {
            let (due, wait) = pending.plan([], [], [], [], [(key, v)]);
            assert_eq!(due[0].slice, n);
            assert!(due[0].state.is_empty());
            let marks = pending.marks_after(&due, n as u64 + 1, 0);
            pending.written(&due, wait, marks);
            assert_eq!(pending.rows(), 1);
        }
        let (due, _) = pending.plan([], [], [], [], []);
        assert_eq!(due[0].slice, 7);
        assert_eq!(
            due[0].state,
            vec![(key.to_vec(), Waiting::Value(value(b"7")))]
        );
    }

    /// One write with `state` changed at `height`: what it stored from the state table's
    /// slice, and that slice.
    fn write_state(
        pending: &mut Pending,
        height: u64,
        state: &[(&[u8], StateValueBytes)],
    ) -> (usize, Vec<(Vec<u8>, Waiting)>) {
        let (due, wait) = pending.plan([], [], [], [], state.iter().map(|(k, v)| (*k, v)));
        let marks = pending.marks_after(&due, height, 0);
        pending.written(&due, wait, marks);
        let [due] = <[SliceRows; 1]>::try_from(due).expect("one slice");
        (due.slice, due.state)
    }

    #[test]
    fn values_past_their_budget_wait_as_keys_alone_and_the_budget_is_given_back() {
        let mut pending = Pending::new(IndexMarks::all(0, 0));
        pending.value_budget = 10;
        let value = |len: usize| -> StateValueBytes { Some(Arc::from(vec![7u8; len])) };
        // Keys of slices 1 to 4, written by a write that stores slice 0.
        let keys: [&[u8]; 4] = [b"\x01\x01a", b"\x01\x02b", b"\x01\x03c", b"\x01\x04d"];
        let values = [value(4), value(4), value(4), None];
        let changed: Vec<_> = keys.iter().copied().zip(values).collect();
        assert_eq!(write_state(&mut pending, 1, &changed), (0, vec![]));
        // Two values fit the budget, the third waits as a key alone, a removal costs nothing.
        assert_eq!(pending.state_value_bytes(), 8);
        let stored = |n: usize, waiting| (n, vec![(keys[n - 1].to_vec(), waiting)]);
        assert_eq!(
            write_state(&mut pending, 2, &[]),
            stored(1, Waiting::Value(value(4)))
        );
        assert_eq!(pending.state_value_bytes(), 4);
        assert_eq!(
            write_state(&mut pending, 3, &[]),
            stored(2, Waiting::Value(value(4)))
        );
        assert_eq!(
            write_state(&mut pending, 4, &[]),
            stored(3, Waiting::LookUp)
        );
        assert_eq!(pending.state_value_bytes(), 0);
        // A value replacing a waiting one gives the old one's bytes back first.
        let bigger = value(9);
        assert_eq!(
            write_state(&mut pending, 5, &[(keys[3], bigger.clone())]),
            stored(4, Waiting::Value(bigger.clone()))
        );
        assert_eq!(pending.state_value_bytes(), 0);
        let later: &[u8] = b"\x01\x08f";
        write_state(&mut pending, 6, &[(later, bigger)]);
        assert_eq!(pending.state_value_bytes(), 9);
        write_state(&mut pending, 7, &[(later, value(2))]);
        assert_eq!(pending.state_value_bytes(), 2);
        assert_eq!(pending.rows(), 1);
    }

    #[test]
    fn the_slice_written_longest_ago_goes_first_after_a_restart() {
        let mut marks = IndexMarks::all(100, 500);
        marks.tx_height[40] = 60;
        marks.log_size[40] = 300;
        marks.tx_height[7] = 60;
        marks.log_size[7] = 310;
        let pending = Pending::new(marks);
        let (due, _) = pending.plan([], [], [], [], []);
        assert_eq!(due[0].slice, 40);
    }

    #[test]
    fn past_their_budget_rows_wait_fewer_writes_and_each_is_written_once() {
        let run = |budget: usize| {
            let mut pending = Pending::new(IndexMarks::all(0, 0));
            pending.row_budget = budget;
            let mut written: BTreeMap<[u8; 32], u64> = BTreeMap::new();
            let (mut most, mut most_slices) = (0, 0);
            // 200 writes of 50 transactions each, then writes of nothing until all are out.
            for height in 1..=300u64 {
                let txs: Vec<([u8; 32], [u8; 12])> = (0..if height <= 200 { 50 } else { 0 })
                    .map(|i: u32| {
                        let hash = Hash::digest(
                            &[height.to_le_bytes(), u64::from(i).to_le_bytes()].concat(),
                        );
                        (*hash.as_bytes(), encode_location(height, i))
                    })
                    .collect();
                let before = pending.marks().clone();
                let (due, wait) = pending.plan(txs, [], [], [], []);
                // The slices stored are distinct, and none waited less than one left out.
                let slices: BTreeSet<usize> = due.iter().map(|rows| rows.slice).collect();
                assert_eq!(slices.len(), due.len());
                let newest_due = slices.iter().map(|s| before.tx_height[*s]).max();
                let oldest_left = (0..INDEX_SLICES)
                    .filter(|s| !slices.contains(s))
                    .map(|s| before.tx_height[s])
                    .min();
                assert!(newest_due <= oldest_left.or(newest_due));
                for rows in &due {
                    for (hash, _) in &rows.txs {
                        assert_eq!(tx_slice(hash), rows.slice);
                        assert!(written.insert(*hash, height).is_none(), "written twice");
                    }
                }
                most_slices = most_slices.max(due.len());
                let marks = pending.marks_after(&due, height, 0);
                pending.written(&due, wait, marks);
                most = most.max(pending.rows());
            }
            assert_eq!(pending.rows(), 0);
            assert_eq!(written.len(), 200 * 50, "every row written");
            (most, most_slices)
        };
        // One slice a write: about half of 64 writes' rows wait.
        let (unbounded, slices) = run(usize::MAX);
        assert_eq!(slices, 1);
        assert!(unbounded > 1_500, "{unbounded}");
        // With a budget of 200 rows, several slices a write keep them near it.
        let (bounded, slices) = run(200);
        assert!(slices > 1);
        assert!(bounded <= 200 + 50, "{bounded}");
    }

    #[test]
    fn pruning_forgets_only_the_waiting_transactions_of_pruned_blocks() {
        let mut pending = Pending::new(IndexMarks::all(0, 0));
        let tx = |first: u8, height: u64| {
            let mut h = [0u8; 32];
            h[0] = first;
            h[1] = height as u8;
            (h, encode_location(height, 0))
        };
        let (due, wait) = pending.plan([tx(1, 3), tx(1, 4), tx(2, 5)], [], [], [], []);
        let marks = pending.marks_after(&due, 5, 0);
        pending.written(&due, wait, marks);
        pending.forget_txs_below(4);
        assert_eq!(pending.tx_location(&Hash(tx(1, 3).0)), None);
        assert!(pending.tx_location(&Hash(tx(1, 4).0)).is_some());
        assert!(pending.tx_location(&Hash(tx(2, 5).0)).is_some());
        assert_eq!(pending.rows(), 2);
    }
}
