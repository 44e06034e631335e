//! Blocks applied in memory whose rows are not on disk yet, and the one write that stores
//! them.
//!
//! A ledger applying blocks for a validator executes each block in memory and queues its
//! rows here ([`crate::Ledger::apply_block_deferred`]); a [`Syncer`] then writes every
//! queued block in one redb transaction, made durable once, without holding the ledger.
//! One transaction per flush instead of one per block: a B-tree page that several blocks
//! change is copied and checksummed once, and redb's commit work (allocator state, free
//! lists, the header) is paid once.
//!
//! Readers look here first, then on disk. A block leaves the queue only after the
//! transaction holding it committed, so a reader that looked at the queue before opening
//! its read transaction always finds every block in one or the other (possibly in both,
//! which the access-log index reader accounts for). A block's index rows and the keys of the
//! state entries it changed go from here to what waits in memory ([`crate::index`]) before
//! it leaves the queue; each write stores one slice of those (the entries with their values
//! as of its last block, which wait with them) and journals every state change it holds
//! ([`crate::journal`]).

use crate::blocks::{self, BLOCK_CHUNKS};
use crate::error::LedgerError;
use crate::index::{
    IndexMarks, OwnedRow, Pending, SliceRows, StateValueBytes, WITHDRAWN, Waiting, listed_row_of,
    owned_hash, owned_row_of,
};
use crate::journal::{self, STATE_JOURNAL};
use crate::log_tree::{self, LOG_SUBTREES};
use crate::runs::{self, RUN_SETS, RUNS};
use crate::store::{
    LOG, LogSubject, META, META_INDEX_MARKS, META_TIP, SUBJECT_KEY_LEN, consumed_nonce, encode_tip,
    first_block_of, log_index_row,
};
use crate::stored_block::StoredBlock;
use redb::{Database, Durability, ReadableTable};
use secnet_contract::{BlockOutcome, LogEntry, StateSnapshot, StateWrite};
use secnet_merkle::Digest;
use secnet_types::{AccountId, Block, Hash, Receipt, SignedTransaction};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The rows one applied block adds to the database.
#[derive(Debug)]
pub(crate) struct BlockRows {
    pub(crate) height: u64,
    /// [`StoredBlock`] bytes.
    pub(crate) stored: Vec<u8>,
    tip: Vec<u8>,
    writes: Vec<StateWrite>,
    /// The state tree after this block: where a write ending with it looks up who holds the
    /// listings whose owner-index rows it merges, and the values of state entries that
    /// waited without theirs ([`Waiting::LookUp`]).
    snapshot: StateSnapshot,
    pub(crate) first_log_index: u64,
    pub(crate) log_leaves: Vec<Vec<u8>>,
    /// The log's interior subtrees these leaves completed ([`log_tree::row`]), positions
    /// ascending.
    log_subtrees: Vec<(u64, Digest)>,
    /// Subject key and leaf index, for every subject of every appended leaf.
    log_keys: Vec<([u8; SUBJECT_KEY_LEN], u64)>,
    /// The owner-index rows of the listings this block registered.
    owned: Vec<OwnedRow>,
    /// The content hashes of the listings this block registered or withdrew, and whether
    /// each is listed after it.
    listed: Vec<([u8; 32], bool)>,
    /// Transactions that consumed their sender's nonce, and where: (height, position).
    txs: Vec<(Hash, (u64, u32))>,
}

impl BlockRows {
    /// The rows of `block`, applied with `outcome`, after which the access log holds
    /// `log_size` leaves and the state tree is `snapshot`.
    pub(crate) fn of(
        block: &Block,
        outcome: &BlockOutcome,
        log_size: u64,
        snapshot: StateSnapshot,
    ) -> Result<BlockRows, LedgerError> {
        let height = block.header.height;
        let mut log_keys = Vec::new();
        for (index, leaf) in (outcome.first_log_index..).zip(&outcome.log_leaves) {
            let entry = LogEntry::from_bytes(leaf).map_err(|e| {
                LedgerError::Corrupt(format!("log leaf {index} being written: {e}"))
            })?;
            log_keys.extend(LogSubject::of(&entry).iter().map(|s| (s.key(), index)));
        }
        let txs = tx_locations(height, &block.txs, &outcome.receipts).collect();
        let mut owned = Vec::new();
        let mut listed = Vec::new();
        for write in &outcome.writes {
            owned.extend(owned_row_of(&write.key, write.value.as_deref())?);
            listed.extend(listed_row_of(&write.key, write.value.as_deref()));
        }
        let log_subtrees: Vec<(u64, Digest)> =
            outcome.log_subtrees.iter().map(log_tree::row).collect();
        debug_assert!(
            log_subtrees
                .windows(2)
                .all(|w| matches!(w, [a, b] if a.0 < b.0)),
            "a log completes its subtrees in position order"
        );
        Ok(BlockRows {
            height,
            stored: StoredBlock::encode_parts(
                block,
                &outcome.receipts,
                &outcome.tip.state_root,
                log_size,
            ),
            tip: encode_tip(&outcome.tip),
            writes: outcome.writes.clone(),
            snapshot,
            first_log_index: outcome.first_log_index,
            log_leaves: outcome.log_leaves.clone(),
            log_subtrees,
            log_keys,
            owned,
            listed,
            txs,
        })
    }

    /// Where transaction `hash` is, if this block consumed its nonce.
    pub(crate) fn tx_location(&self, hash: &Hash) -> Option<(u64, u32)> {
        self.txs.iter().find(|(h, _)| h == hash).map(|(_, at)| *at)
    }

    /// Leaf `index`, if this block appended it.
    pub(crate) fn log_leaf(&self, index: u64) -> Option<&[u8]> {
        let offset = usize::try_from(index.checked_sub(self.first_log_index)?).ok()?;
        self.log_leaves.get(offset).map(Vec::as_slice)
    }

    /// The hash of the log's subtree at `position` ([`secnet_merkle::log::Subtree::position`]),
    /// if this block's leaves completed it.
    pub(crate) fn log_subtree(&self, position: u64) -> Option<Digest> {
        let at = self
            .log_subtrees
            .binary_search_by_key(&position, |(p, _)| *p)
            .ok()?;
        self.log_subtrees.get(at).map(|(_, hash)| *hash)
    }

    /// The content hashes of the listings this block registered for `owner`.
    pub(crate) fn hashes_owned_by<'a>(
        &'a self,
        owner: &'a AccountId,
    ) -> impl Iterator<Item = Hash> + 'a {
        self.owned
            .iter()
            .filter(move |row| row.starts_with(owner.as_bytes()))
            .filter_map(|row| owned_hash(row))
    }

    /// The content hashes of the listings this block registered or withdrew.
    pub(crate) fn listed_changes(&self) -> impl Iterator<Item = [u8; 32]> + '_ {
        self.listed.iter().map(|(hash, _)| *hash)
    }

    /// The indices of the leaves this block appended about the subject with `key`.
    pub(crate) fn log_indices<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = u64> + 'a {
        self.log_keys
            .iter()
            .filter(move |(k, _)| k.as_slice() == key)
            .map(|(_, index)| *index)
    }
}

/// Where the transactions of the block at `height` that consumed their sender's nonce
/// are: hash → (height, position). Only those are indexed: a hash covers sender and nonce,
/// so each is included that way at most once.
pub(crate) fn tx_locations<'a>(
    height: u64,
    txs: &'a [SignedTransaction],
    receipts: &'a [Receipt],
) -> impl Iterator<Item = (Hash, (u64, u32))> + 'a {
    (0u32..)
        .zip(txs)
        .zip(receipts)
        .filter(|(_, receipt)| consumed_nonce(receipt))
        .map(move |((position, tx), _)| (tx.hash(), (height, position)))
}

/// The transaction index's value: 12 bytes big-endian, height then position.
pub(crate) fn encode_location(height: u64, position: u32) -> [u8; 12] {
    let mut location = [0u8; 12];
    location[..8].copy_from_slice(&height.to_be_bytes());
    location[8..].copy_from_slice(&position.to_be_bytes());
    location
}

/// `(height, position)` from [`encode_location`]'s bytes (`None` if they are not 12).
pub(crate) fn decode_location(bytes: &[u8]) -> Option<(u64, u32)> {
    let height = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let position = u32::from_be_bytes(bytes.get(8..)?.try_into().ok()?);
    Some((height, position))
}

/// The blocks a ledger applied that are not on disk yet, shared by the ledger (which adds
/// and reads them) and its [`Syncer`] (which writes them, then drops them).
pub(crate) struct Unwritten {
    blocks: Mutex<VecDeque<Arc<BlockRows>>>,
    /// The highest height on disk. Held for a whole write, so writes never overlap.
    written: Mutex<u64>,
    /// Index rows of written blocks not on disk yet (see [`crate::index`]).
    pending: Mutex<Pending>,
    /// How many rows `pending` held when it last changed, for gauges read without waiting
    /// for a write.
    rows_waiting: AtomicUsize,
    /// The state values' bytes `pending` held then.
    value_bytes_waiting: AtomicUsize,
    /// Set when memory may be ahead of what can be written (a block's rows could not be
    /// built, or a write failed): nothing more is applied or written until the ledger is
    /// reopened from disk.
    poisoned: AtomicBool,
}

impl std::fmt::Debug for Unwritten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let heights = self
            .blocks
            .lock()
            .ok()
            .map(|b| (b.front().map(|r| r.height), b.back().map(|r| r.height)));
        f.debug_struct("Unwritten")
            .field("heights", &heights)
            .field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, LedgerError> {
    mutex.lock().map_err(|_| LedgerError::Poisoned)
}

impl Unwritten {
    /// Nothing waiting; the disk holds heights up to `written`.
    pub(crate) fn new(written: u64, pending: Pending) -> Unwritten {
        Unwritten {
            blocks: Mutex::new(VecDeque::new()),
            written: Mutex::new(written),
            rows_waiting: AtomicUsize::new(pending.rows()),
            value_bytes_waiting: AtomicUsize::new(pending.state_value_bytes()),
            pending: Mutex::new(pending),
            poisoned: AtomicBool::new(false),
        }
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    pub(crate) fn push(&self, rows: BlockRows) -> Result<(), LedgerError> {
        lock(&self.blocks)?.push_back(Arc::new(rows));
        Ok(())
    }

    /// How many blocks wait.
    pub(crate) fn len(&self) -> Result<usize, LedgerError> {
        Ok(lock(&self.blocks)?.len())
    }

    /// The blocks waiting now, oldest first.
    pub(crate) fn blocks(&self) -> Result<Vec<Arc<BlockRows>>, LedgerError> {
        Ok(lock(&self.blocks)?.iter().cloned().collect())
    }

    /// The waiting block at `height`.
    pub(crate) fn block(&self, height: u64) -> Result<Option<Arc<BlockRows>>, LedgerError> {
        Ok(lock(&self.blocks)?
            .iter()
            .find(|b| b.height == height)
            .cloned())
    }

    /// Holds off writes while the guard lives; its value is the highest height on disk.
    pub(crate) fn hold_writes(&self) -> Result<MutexGuard<'_, u64>, LedgerError> {
        lock(&self.written)
    }

    /// How many index rows waited in memory when they last changed (without waiting for a
    /// write that holds them).
    pub(crate) fn rows_waiting(&self) -> usize {
        self.rows_waiting.load(Ordering::Relaxed)
    }

    /// The bytes of the state values that waited in memory with their keys when they last
    /// changed (at most [`crate::index::WAITING_VALUE_BYTES`]).
    pub(crate) fn value_bytes_waiting(&self) -> usize {
        self.value_bytes_waiting.load(Ordering::Relaxed)
    }

    /// Changes the index rows that wait in memory with `change`, and notes how many there
    /// are then.
    pub(crate) fn change_pending(
        &self,
        change: impl FnOnce(&mut Pending),
    ) -> Result<(), LedgerError> {
        let mut pending = self.pending()?;
        change(&mut pending);
        self.rows_waiting.store(pending.rows(), Ordering::Relaxed);
        self.value_bytes_waiting
            .store(pending.state_value_bytes(), Ordering::Relaxed);
        Ok(())
    }

    /// The index rows of written blocks that wait in memory. Look here after the queue and
    /// before opening a read transaction.
    pub(crate) fn pending(&self) -> Result<MutexGuard<'_, Pending>, LedgerError> {
        lock(&self.pending)
    }

    /// Writes every waiting block in one transaction with `durability`, then drops them
    /// from the queue. A failed write poisons the ledger.
    pub(crate) fn write(&self, db: &Database, durability: Durability) -> Result<(), LedgerError> {
        let mut written = lock(&self.written)?;
        if self.is_poisoned() {
            return Err(LedgerError::Poisoned);
        }
        let batch: Vec<Arc<BlockRows>> = lock(&self.blocks)?
            .iter()
            .filter(|b| b.height > *written)
            .cloned()
            .collect();
        let Some((last, log_size)) = batch
            .last()
            .map(|b| (b.height, b.first_log_index + b.log_leaves.len() as u64))
        else {
            return Ok(());
        };
        // A state entry several blocks changed once, with its last value: journaled once, and
        // handed once to the slice it waits in.
        let mut latest: BTreeMap<&[u8], &StateValueBytes> = BTreeMap::new();
        for rows in &batch {
            for w in &rows.writes {
                latest.insert(w.key.as_slice(), &w.value);
            }
        }
        let (due, wait, marks) = {
            let pending = self.pending()?;
            let (due, wait) = pending.plan(
                batch.iter().flat_map(|rows| {
                    rows.txs.iter().map(|(hash, (height, position))| {
                        (*hash.as_bytes(), encode_location(*height, *position))
                    })
                }),
                batch.iter().flat_map(|rows| {
                    rows.log_keys
                        .iter()
                        .map(|(key, index)| log_index_row(key, *index))
                }),
                batch.iter().flat_map(|rows| rows.owned.iter().copied()),
                batch.iter().flat_map(|rows| rows.listed.iter().copied()),
                latest.iter().map(|(key, value)| (*key, *value)),
            );
            let marks = pending.marks_after(&due, last, log_size);
            (due, wait, marks)
        };
        if let Err(e) = write_rows(db, &batch, &latest, durability, &due, &marks) {
            self.poison();
            return Err(e);
        }
        // The slice's rows leave memory only now that they are on disk, and the waiting
        // rows join it before their blocks leave the queue.
        self.change_pending(|pending| pending.written(&due, wait, marks))?;
        *written = last;
        lock(&self.blocks)?.retain(|b| b.height > last);
        Ok(())
    }
}

fn write_rows(
    db: &Database,
    batch: &[Arc<BlockRows>],
    changes: &BTreeMap<&[u8], &StateValueBytes>,
    durability: Durability,
    due: &[SliceRows],
    marks: &IndexMarks,
) -> Result<(), LedgerError> {
    let Some(last) = batch.last() else {
        return Ok(());
    };
    // Each table's rows in key order (the slice comes sorted): the B-trees are walked once
    // from left to right instead of at random.
    let mut write = db.begin_write()?;
    write
        .set_durability(durability)
        .map_err(|e| LedgerError::Storage(e.to_string()))?;
    {
        let mut journal = write.open_table(STATE_JOURNAL)?;
        journal::append(
            &mut journal,
            last.height,
            changes.iter().map(|(key, value)| (*key, value.as_deref())),
        )?;
        // Changes every slice of the state table has caught up with are not needed again.
        journal::prune(&mut journal, marks.min_tx_height())?;
        // Each slice's rows go in as a run of the state table and of each index, and the
        // slice's merges advance.
        let first_block = first_block_of(&write.open_table(META)?)?;
        let mut withdrawn = write.open_table(WITHDRAWN)?;
        for rows in batch {
            for (hash, _) in rows.listed.iter().filter(|(_, listed)| !listed) {
                withdrawn.insert(hash.as_slice(), ())?;
            }
        }
        let mut runs_table = write.open_table(RUNS)?;
        let mut sets = write.open_table(RUN_SETS)?;
        for due in due {
            let state: Vec<Vec<u8>> = due
                .state
                .iter()
                .map(|(key, waiting)| match waiting {
                    Waiting::Value(value) => runs::state_value(value.as_deref()),
                    Waiting::LookUp => runs::state_value(last.snapshot.value_bytes(key).as_deref()),
                })
                .collect();
            runs::append(
                &mut runs_table,
                &mut sets,
                runs::Index::State,
                due.slice,
                due.state
                    .iter()
                    .map(|(key, _)| key.as_slice())
                    .zip(state.iter().map(Vec::as_slice)),
                &|_, _| true,
            )?;
            runs::append(
                &mut runs_table,
                &mut sets,
                runs::Index::Log,
                due.slice,
                due.log_rows
                    .iter()
                    .map(|row| (row.as_slice(), [].as_slice())),
                &|_, _| true,
            )?;
            // A row of a listing its owner no longer holds is dropped as its run is merged: if
            // the owner registers it again later, that makes a new row. Only a withdrawn
            // listing can be such a one; the others are kept without reading the state.
            let snapshot = &last.snapshot;
            runs::append(
                &mut runs_table,
                &mut sets,
                runs::Index::Owned,
                due.slice,
                due.owned.iter().map(|row| (row.as_slice(), [].as_slice())),
                &|row, _| {
                    let Some(hash) = owned_hash(row) else {
                        return false;
                    };
                    // Unreadable, it is checked as if it were there.
                    let maybe_withdrawn = withdrawn
                        .get(hash.as_bytes().as_slice())
                        .map_or(true, |found| found.is_some());
                    !maybe_withdrawn
                        || snapshot
                            .listing(&hash)
                            .is_some_and(|listing| row.starts_with(listing.owner.as_bytes()))
                },
            )?;
            let listed: Vec<([u8; 32], Vec<u8>)> = due
                .listed
                .iter()
                .map(|(hash, listed)| (*hash, runs::state_value(listed.then_some(&[][..]))))
                .collect();
            runs::append(
                &mut runs_table,
                &mut sets,
                runs::Index::Listed,
                due.slice,
                listed
                    .iter()
                    .map(|(hash, value)| (hash.as_slice(), value.as_slice())),
                &|_, _| true,
            )?;
            // A pruned block's transactions are dropped as their runs are merged.
            runs::append(
                &mut runs_table,
                &mut sets,
                runs::Index::Txs,
                due.slice,
                due.txs
                    .iter()
                    .map(|(hash, location)| (hash.as_slice(), location.as_slice())),
                &|_, location| decode_location(location).is_some_and(|(h, _)| h >= first_block),
            )?;
        }
        let mut log = write.open_table(LOG)?;
        let mut subtrees = write.open_table(LOG_SUBTREES)?;
        let mut blocks = write.open_table(BLOCK_CHUNKS)?;
        for rows in batch {
            for (index, leaf) in (rows.first_log_index..).zip(&rows.log_leaves) {
                log.insert(index, leaf.as_slice())?;
            }
            for (position, hash) in &rows.log_subtrees {
                subtrees.insert(*position, hash.as_slice())?;
            }
            blocks::insert(&mut blocks, rows.height, &rows.stored)?;
        }
        let mut meta = write.open_table(META)?;
        meta.insert(META_TIP, last.tip.as_slice())?;
        meta.insert(META_INDEX_MARKS, marks.to_bytes().as_slice())?;
    }
    write.commit()?;
    Ok(())
}

/// Makes a ledger's deferred blocks durable (see [`crate::Ledger::apply_block_deferred`]);
/// it shares the database and the queue, not the ledger, so the disk is written and waited
/// for while others read.
#[derive(Debug, Clone)]
pub struct Syncer {
    pub(crate) db: Arc<Database>,
    pub(crate) unwritten: Arc<Unwritten>,
}

impl Syncer {
    /// Writes every block applied so far in one durable transaction.
    pub fn sync(&self) -> Result<(), LedgerError> {
        self.unwritten.write(&self.db, Durability::Immediate)
    }
}
