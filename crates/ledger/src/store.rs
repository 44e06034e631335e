//! The ledger's redb database and the one write path that applies blocks.

use crate::blocks::{self, BLOCK_CHUNKS};
use crate::error::LedgerError;
use crate::expiry_file::ExpiryFile;
use crate::index::{self, IndexMarks, Pending, StateValueBytes};
use crate::journal::{self, STATE_JOURNAL};
use crate::log_tree::{self, LOG_SUBTREES, StoredLog};
use crate::parts::{self, Parts};
use crate::runs::{self, RUN_SETS, RUNS};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::spill::{Spare, Spill};
use crate::stored_block::{BlockTxs, StoredBlock};
pub use crate::unwritten::Syncer;
use crate::unwritten::{BlockRows, Unwritten, decode_location, encode_location, tx_locations};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    ReadableTableMetadata, TableDefinition,
};
use secnet_contract::{
    BlockOutcome, ChainTip, LogEntry, State, StateKey, StateLoader, StateSnapshot, StateValue,
    receipts_root,
};
use secnet_merkle::Digest;
use secnet_merkle::log::Subtrees as _;
use secnet_merkle::log::{Frontier, leaf_hash};
use secnet_types::limits::MAX_HEADER_STATE_ROOTS;
use secnet_types::{
    AccountId, Block, BlockHeader, Genesis, GrantId, Hash, Receipt, Rejection, StateCommitment,
};
use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The ledger database's page cache (redb's default, 1 GiB, would let every validator's
/// memory grow with its history).
pub const LEDGER_CACHE_BYTES: usize = 128 * 1024 * 1024;

/// How many recent heights' state trees a ledger keeps, to prove entries as of a height a
/// certificate covers (certification trails execution by a few blocks).
pub const RECENT_STATES: usize = 8;

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The state table as formats up to 7 stored it, one B-tree (key → value bytes); format 8
/// keeps it in sorted runs ([`crate::runs::Index::State`]).
const FORMAT_7_STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
/// Each block whole, as formats up to 10 stored them; format 11 cuts them into chunks
/// ([`crate::blocks`]).
const FORMAT_10_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("access_log");
/// The access log's leaves by what they are about, as formats 4 to 7 stored them: one empty
/// row per subject and leaf, keyed `subject key ‖ leaf index` ([`log_index_row`]), in one
/// B-tree. Format 8 keeps the same rows in sorted runs ([`crate::runs`]).
pub(crate) const FORMAT_7_LOG_INDEX: TableDefinition<&[u8], ()> =
    TableDefinition::new("access_log_by_subject");

/// The length of a [`LogSubject`]'s key: a tag and 32 bytes.
pub(crate) const SUBJECT_KEY_LEN: usize = 33;

/// A row of the access-log index ([`crate::runs::Index::Log`]): the subject's key, then the leaf index big-endian (every subject
/// key has the same length, so a subject's rows are exactly the keys between its index 0
/// and `u64::MAX`).
pub(crate) fn log_index_row(
    subject: &[u8; SUBJECT_KEY_LEN],
    index: u64,
) -> [u8; SUBJECT_KEY_LEN + 8] {
    let mut row = [0u8; SUBJECT_KEY_LEN + 8];
    row[..SUBJECT_KEY_LEN].copy_from_slice(subject);
    row[SUBJECT_KEY_LEN..].copy_from_slice(&index.to_be_bytes());
    row
}
/// Transaction hash → (height, position), 12 bytes big-endian, as formats up to 7 stored it
/// in one B-tree; format 8 keeps the same rows in sorted runs ([`crate::runs`]).
const FORMAT_7_TXS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tx_index");

const META_GENESIS: &str = "genesis_hash";
pub(crate) const META_TIP: &str = "tip";
const META_FORMAT: &str = "format";
/// The lowest height whose block is stored (absent: 1, every block is).
const META_FIRST_BLOCK: &str = "first_block";
/// A ledger installed from a snapshot: where its validator's consensus starts.
const META_CONSENSUS_FLOOR: &str = "consensus_floor";
/// Where each slice of the indexes and of the state table is on disk
/// ([`crate::index::IndexMarks`], [`crate::journal`]).
pub(crate) const META_INDEX_MARKS: &str = "index_marks";
pub(crate) const FORMAT_VERSION: &[u8] = b"secnet-ledger/11";
/// The format before: format 11 with each block stored whole, in a run of pages rounded up
/// to a power of two. Opening one cuts them into chunks ([`migrate_blocks`]).
const FORMAT_10: &[u8] = b"secnet-ledger/10";
/// And before: format 10 without the index of listed hashes. Opening one writes it from the
/// stored listings ([`migrate_listings`]).
const FORMAT_9: &[u8] = b"secnet-ledger/9";
/// And before: format 9 without the index of listings by owner (the contract kept it in
/// memory). Opening one writes both from the stored listings ([`migrate_listings`]).
const FORMAT_8: &[u8] = b"secnet-ledger/8";
/// And before: format 8 with each hash-keyed index and the state table in one B-tree,
/// into which each write inserted a slice's rows, so a row cost more the larger the table
/// grew. Opening one makes each slice's rows a run ([`migrate_from_format_7`]).
const FORMAT_7: &[u8] = b"secnet-ledger/7";
/// And before: format 7 without the access log's interior hashes
/// ([`crate::log_tree`]), so opening one read and hashed every leaf. Opening one writes them
/// ([`migrate_from_format_6`]).
const FORMAT_6: &[u8] = b"secnet-ledger/6";
/// And before: format 6 with every changed state entry written with each group
/// commit, so no state journal ([`crate::journal`]). Opening one records the current format
/// ([`migrate_from_format_5`]): its state table is whole.
const FORMAT_5: &[u8] = b"secnet-ledger/5";
/// And before: format 5 with every block's index rows written with it (so no
/// [`META_INDEX_MARKS`]). Opening one records that every slice is complete
/// ([`migrate_from_format_4`]).
const FORMAT_4: &[u8] = b"secnet-ledger/4";
/// And before: format 4 with the access-log index as a redb multimap
/// (`access_log_index`, subject key → leaf indices). Opening one converts the index to the
/// format-4 shape ([`migrate_from_format_3`]), then to the current format.
const FORMAT_3: &[u8] = b"secnet-ledger/3";
const FORMAT_3_LOG_INDEX: redb::MultimapTableDefinition<&[u8], u64> =
    redb::MultimapTableDefinition::new("access_log_index");

/// The file inside a data directory that holds the ledger.
pub const LEDGER_FILE: &str = "ledger.redb";

/// What a state entry the state tree holds in memory costs, for [`StateMemory::mib`]: `cargo
/// bench -p secnet-contract --bench memory` measures about 413 bytes with the entry's
/// value; the rest is for the nodes above stored subtrees and for versions kept.
pub const STATE_BYTES_PER_ENTRY: usize = 512;

/// A bound on what the state tree keeps in memory (see [`Ledger::bound_state_memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateMemory {
    /// Entries the current state tree may hold in memory; past this, subtrees that have not
    /// changed for [`RECENT_STATES`] heights move to the spill file.
    pub resident_entries: usize,
    /// Entries of subtrees read back whole from the spill file (by proofs, and by updates of
    /// subtrees kept), kept for the next reads and proofs; a read of one entry keeps nothing.
    pub opened_entries: usize,
    /// A spill file is replaced once it holds more than four times (`SPILL_FILE_TIMES_LIVE`)
    /// what the state tree still reads from it, plus this many bytes.
    pub spill_slack_bytes: u64,
    /// Chunks of 512 grants by expiry kept in memory (those blocks touched last: where they
    /// retire grants, and where new grants' expiries fall); the others move to a file
    /// beside the ledger, as the state tree's subtrees do.
    pub grant_chunks_in_memory: usize,
}

impl StateMemory {
    /// About `mib` MiB, at [`STATE_BYTES_PER_ENTRY`]: seven eighths for the tree, one eighth
    /// for subtrees read back; spill files are replaced past 64 MiB of slack.
    pub fn mib(mib: usize) -> StateMemory {
        let entries = mib.saturating_mul(1 << 20) / STATE_BYTES_PER_ENTRY;
        StateMemory {
            resident_entries: entries - entries / 8,
            opened_entries: entries / 8,
            spill_slack_bytes: 64 * 1024 * 1024,
            grant_chunks_in_memory: GRANT_CHUNKS_IN_MEMORY,
        }
    }
}

/// Chunks of grants by expiry a bounded state keeps in memory: 640 KiB, room for the front
/// and a few lifetimes' worth of places where new grants go.
pub const GRANT_CHUNKS_IN_MEMORY: usize = 32;

/// At most this many entries leave memory after one block, so that no block waits long for
/// its eviction (a block of the measured workload adds a few thousand).
const EVICT_PER_BLOCK: usize = 65_536;

/// An eviction, once one is needed, may move at least this many entries (and look at as
/// many nodes as that allows), so that the last few over the bound do not take a walk of
/// the whole tree a few nodes a block.
const EVICT_AT_LEAST: usize = 4_096;

/// At most this many entries move from an old spill file to the new one after one block:
/// a replacement moves every part the state reads from the old file, so it is spread over
/// many blocks (at 7,000 tx/s, 16,384 a block moved 800,000 entries in 58 blocks, 22
/// seconds, with p99 above a second in the minutes that held such moves).
const MOVE_PER_BLOCK: usize = 8_192;

/// A spill file is replaced once it holds more than this many times what the state reads
/// from it (plus [`StateMemory::spill_slack_bytes`]). A replacement moves every part the
/// state reads from it, so the moves cost about the rate at which dead copies pile up
/// divided by one less than this: at twice, files were replaced every 40–60 seconds at
/// 7,000 tx/s, each move as large as the state in the file. The disk holds up to this many
/// times the live parts (plus the slack), and about once more while one moves over or as the
/// file retired last, kept to be written over by the next (cut to that bound as of when it
/// is); older files stay open while versions reading them are kept.
const SPILL_FILE_TIMES_LIVE: u64 = 4;

/// The spill file the state tree moves subtrees to, and where the next eviction starts; the
/// file the grants by expiry move to.
#[derive(Debug)]
struct Spilling {
    memory: StateMemory,
    file: Arc<Spill>,
    /// The spill file retired last, which the next one writes over.
    spare: Arc<Spare>,
    grants: Arc<ExpiryFile>,
    /// Where the next eviction starts (a tree key, see [`State::evict`]).
    next: Digest,
    /// Where the next walk moving subtrees from an earlier file starts.
    moving_next: Digest,
    /// The spill file failed the last time (reported once until it works again).
    failing: bool,
    /// Spill files started: the first, then each replacement.
    started: u64,
}

/// A new spill file beside the ledger at `ledger_path`: `spare`'s, if it holds one (cut to
/// `keep_bytes`).
fn new_spill_file(
    ledger_path: &Path,
    spare: &Arc<Spare>,
    keep_bytes: u64,
) -> Result<Spill, LedgerError> {
    let dir = ledger_path.parent().unwrap_or(Path::new("."));
    Spill::create_over(dir, spare, keep_bytes).map_err(|e| {
        LedgerError::Storage(format!(
            "cannot create a state spill file in {}: {e}",
            dir.display()
        ))
    })
}

impl Spilling {
    /// New spill and grant files beside the ledger at `ledger_path`, for `memory`.
    fn new(ledger_path: &Path, memory: StateMemory) -> Result<Spilling, LedgerError> {
        let dir = ledger_path.parent().unwrap_or(Path::new("."));
        let grants = ExpiryFile::create(dir).map_err(|e| {
            LedgerError::Storage(format!(
                "cannot create a file for grants by expiry in {}: {e}",
                dir.display()
            ))
        })?;
        let spare = Arc::default();
        Ok(Spilling {
            memory,
            file: Arc::new(new_spill_file(ledger_path, &spare, 0)?),
            spare,
            grants: Arc::new(grants),
            next: [0; 32],
            moving_next: [0; 32],
            failing: false,
            started: 1,
        })
    }
}

/// A node's durable ledger.
#[derive(Debug)]
pub struct Ledger {
    db: Arc<Database>,
    state: State,
    genesis: Genesis,
    path: PathBuf,
    /// The last [`RECENT_STATES`] heights, oldest first.
    recent: VecDeque<Recent>,
    genesis_root: Hash,
    /// [`Genesis::hash`], which hashes every allocation: kept rather than recomputed for
    /// every status a node serves.
    genesis_hash: Hash,
    /// Applied blocks whose rows are not on disk yet.
    unwritten: Arc<Unwritten>,
    /// Where the state tree moves subtrees when it holds more than its bound, once one is
    /// set.
    spilling: Option<Spilling>,
    /// The listings each recent block wrote.
    listing_changes: ListingChanges,
}

/// What a [`Ledger`] keeps in memory, counted by kind ([`Ledger::footprint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LedgerFootprint {
    /// The state's.
    pub state: secnet_contract::Footprint,
    /// Recent heights whose state trees are kept (they share what the blocks since left
    /// unchanged).
    pub recent_heights: usize,
    /// Applied blocks whose rows are not on disk yet.
    pub blocks_unwritten: usize,
    /// Index rows of written blocks that wait in memory to be merged into the indexes.
    pub index_rows_waiting: usize,
    /// The bytes of the state values that wait in memory with their keys, among those rows
    /// (at most 64 MiB; past that a key waits alone).
    #[serde(default)]
    pub state_value_bytes_waiting: usize,
    /// Content hashes of the listings recent blocks wrote.
    pub listing_changes: usize,
    /// The bytes redb's page cache holds (up to [`LEDGER_CACHE_BYTES`] and its write
    /// buffer).
    pub page_cache_bytes: u64,
    /// Spill files the state tree started since the ledger was opened or bounded (the
    /// first, then one each time a file of mostly dead copies was replaced).
    #[serde(default)]
    pub spill_files_started: u64,
}

/// What an access-log leaf is about, as the ledger indexes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogSubject {
    /// The data it concerns.
    Data(Hash),
    /// The grant it issued or that was presented.
    Grant(GrantId),
    /// The owner whose data was read in an emergency, or who was paid for it.
    Owner(secnet_types::AccountId),
    /// The account that asked for data, read it, or paid for it: a consumer's own trail.
    Requester(secnet_types::AccountId),
}

impl LogSubject {
    /// What `entry` is about.
    pub fn of(entry: &LogEntry) -> Vec<LogSubject> {
        match entry {
            LogEntry::Grant {
                data,
                grant,
                requester,
                ..
            } => vec![
                LogSubject::Data(*data),
                LogSubject::Grant(*grant),
                LogSubject::Requester(*requester),
            ],
            LogEntry::Access { entry, .. } => {
                let mut out = vec![LogSubject::Data(entry.data)];
                // Only an access presenting a grant is the requester's own: the contract
                // checks that grant was issued to it. Without one, any holder of any listing
                // could write entries naming anyone as requester.
                if let Some(grant) = entry.grant {
                    out.push(LogSubject::Grant(grant));
                    out.push(LogSubject::Requester(entry.requester));
                }
                out
            }
            LogEntry::Emergency {
                owner, requester, ..
            } => vec![LogSubject::Owner(*owner), LogSubject::Requester(*requester)],
            LogEntry::Payment {
                data,
                consumer,
                owner,
                ..
            } => vec![
                LogSubject::Data(*data),
                LogSubject::Owner(*owner),
                LogSubject::Requester(*consumer),
            ],
        }
    }

    pub(crate) fn key(&self) -> [u8; SUBJECT_KEY_LEN] {
        let (tag, bytes) = match self {
            LogSubject::Data(h) => (0u8, h.as_bytes()),
            LogSubject::Grant(g) => (1u8, g.as_bytes()),
            LogSubject::Owner(a) => (2u8, a.as_bytes()),
            LogSubject::Requester(a) => (3u8, a.as_bytes()),
        };
        let mut key = [0u8; SUBJECT_KEY_LEN];
        key[0] = tag;
        key[1..].copy_from_slice(bytes);
        key
    }
}

/// What a ledger keeps of a recent height.
#[derive(Debug)]
struct Recent {
    /// The state tree after it.
    snapshot: StateSnapshot,
    /// The header of its block (none for the state a ledger was opened at: read from disk).
    header: Option<BlockHeader>,
    /// Its receipts root (likewise).
    receipts_root: Option<Hash>,
    /// Its transactions' hashes and outcomes (likewise): what clients waiting for
    /// finality ask of every new block.
    txs: Option<Arc<BlockTxs>>,
}

/// Heights whose listing writes a ledger keeps ([`Ledger::listings_changed_since`]), and the
/// most content hashes it keeps of them in all (8 MiB; older heights go first).
pub const LISTING_CHANGES_HEIGHTS: usize = 1_024;
const LISTING_CHANGES_HASHES: usize = 1 << 18;

/// The content hashes of the listings each block applied since a ledger opened wrote, for
/// the last heights ([`LISTING_CHANGES_HEIGHTS`], [`LISTING_CHANGES_HASHES`]).
#[derive(Debug, Default)]
struct ListingChanges {
    /// (Height, hashes), consecutive heights, oldest first.
    heights: VecDeque<(u64, Arc<[Hash]>)>,
    hashes: usize,
}

impl ListingChanges {
    fn push(&mut self, height: u64, hashes: Arc<[Hash]>) {
        self.hashes += hashes.len();
        self.heights.push_back((height, hashes));
        while self.heights.len() > LISTING_CHANGES_HEIGHTS
            || (self.hashes > LISTING_CHANGES_HASHES && self.heights.len() > 1)
        {
            if let Some((_, gone)) = self.heights.pop_front() {
                self.hashes -= gone.len();
            }
        }
    }
}

/// What [`Ledger::replay_check`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    /// Blocks replayed.
    pub blocks: u64,
    /// The state root after replaying them.
    pub replayed_root: Hash,
    /// The state root the ledger holds.
    pub stored_root: Hash,
}

/// Brings a format-3 ledger, which [`Ledger::load`] has just checked, to format 4 in one
/// write transaction (a crash during it leaves the format-3 ledger as it was): the old
/// index's rows are copied in the order they are stored, which is the new index's order, so
/// memory stays flat whatever the log's size; then the old index is dropped. The upgrade is
/// one-way: an older binary refuses the migrated file. Any other ledger is left alone.
fn migrate_from_format_3(db: &Database) -> Result<(), LedgerError> {
    {
        let read = db.begin_read()?;
        if stored_format(&read)?.as_deref() != Some(FORMAT_3) {
            return Ok(());
        }
        match read.open_multimap_table(FORMAT_3_LOG_INDEX) {
            Ok(_) => {}
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(LedgerError::Corrupt(
                    "a format-3 ledger without its access-log index".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let write = db.begin_write()?;
    write.delete_table(FORMAT_7_LOG_INDEX)?;
    {
        let old = write.open_multimap_table(FORMAT_3_LOG_INDEX)?;
        let mut new = write.open_table(FORMAT_7_LOG_INDEX)?;
        for item in old.iter()? {
            let (key, indices) = item?;
            let key: [u8; SUBJECT_KEY_LEN] = key.value().try_into().map_err(|_| {
                LedgerError::Corrupt(format!(
                    "format-3 access-log index key of {} bytes",
                    key.value().len()
                ))
            })?;
            for index in indices {
                new.insert(log_index_row(&key, index?.value()).as_slice(), ())?;
            }
        }
        write.open_table(META)?.insert(META_FORMAT, FORMAT_4)?;
    }
    write.delete_multimap_table(FORMAT_3_LOG_INDEX)?;
    write.commit()?;
    Ok(())
}

/// `rows` sorted by slice, then key, each once, as [`runs::adopt`] takes them.
fn sorted_by_slice(
    rows: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    slice_of: impl Fn(&[u8]) -> usize,
) -> impl Iterator<Item = Result<(usize, Vec<u8>, Vec<u8>), LedgerError>> {
    let mut rows: Vec<(usize, Vec<u8>, Vec<u8>)> = rows
        .into_iter()
        .map(|(key, value)| (slice_of(&key), key, value))
        .collect();
    // Of a key given twice the last is kept, as a state tree built from the same rows keeps
    // it.
    rows.reverse();
    rows.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    rows.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    rows.into_iter().map(Ok)
}

/// Decodes the bytes [`Ledger::block_bytes`] read for `height`.
pub fn decode_stored_block(height: u64, bytes: &[u8]) -> Result<StoredBlock, LedgerError> {
    StoredBlock::from_bytes(bytes).map_err(|e| LedgerError::Corrupt(format!("block {height}: {e}")))
}

pub(crate) fn encode_tip(tip: &ChainTip) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 32 + 8 + 32);
    out.extend_from_slice(&tip.height.to_be_bytes());
    out.extend_from_slice(tip.block_hash.as_bytes());
    out.extend_from_slice(&tip.timestamp_ms.to_be_bytes());
    out.extend_from_slice(tip.state_root.as_bytes());
    out
}

pub(crate) fn decode_tip(bytes: &[u8]) -> Result<ChainTip, LedgerError> {
    let bad = || LedgerError::Corrupt(format!("tip record of {} bytes", bytes.len()));
    if bytes.len() != 80 {
        return Err(bad());
    }
    let (h, rest) = bytes.split_at(8);
    let (bh, rest) = rest.split_at(32);
    let (ts, root) = rest.split_at(8);
    Ok(ChainTip {
        height: u64::from_be_bytes(h.try_into().map_err(|_| bad())?),
        block_hash: Hash(bh.try_into().map_err(|_| bad())?),
        timestamp_ms: u64::from_be_bytes(ts.try_into().map_err(|_| bad())?),
        state_root: Hash(root.try_into().map_err(|_| bad())?),
    })
}

/// Whether a receipt's transaction consumed its sender's nonce (it was well signed, for this
/// chain, at the right nonce), whether or not the call itself succeeded.
pub(crate) fn consumed_nonce(receipt: &Receipt) -> bool {
    !matches!(
        receipt.rejection(),
        Some(Rejection::BadSignature | Rejection::WrongChain { .. } | Rejection::BadNonce { .. })
    )
}

/// Brings a format-4 ledger to format 5: every index row of a format-4 ledger is on disk, so
/// every slice is complete up to its tip. One-way, like the step before.
fn migrate_from_format_4(db: &Database, tip: u64, log_size: u64) -> Result<(), LedgerError> {
    if stored_format(&db.begin_read()?)?.as_deref() != Some(FORMAT_4) {
        return Ok(());
    }
    let write = db.begin_write()?;
    {
        let mut meta = write.open_table(META)?;
        meta.insert(
            META_INDEX_MARKS,
            IndexMarks::all(tip, log_size).to_bytes().as_slice(),
        )?;
        meta.insert(META_FORMAT, FORMAT_5)?;
    }
    write.commit()?;
    Ok(())
}

/// Brings a format-5 ledger to format 6: its state table holds every entry as of its tip,
/// which is what a ledger with an empty state journal holds.
fn migrate_from_format_5(db: &Database) -> Result<(), LedgerError> {
    if stored_format(&db.begin_read()?)?.as_deref() != Some(FORMAT_5) {
        return Ok(());
    }
    let write = db.begin_write()?;
    write.open_table(STATE_JOURNAL)?;
    write.open_table(META)?.insert(META_FORMAT, FORMAT_6)?;
    write.commit()?;
    Ok(())
}

/// Brings a format-6 ledger to format 7: writes the interior hashes of its access
/// log, computed from every stored leaf, in one transaction (a crash before it commits leaves
/// a format-6 ledger, migrated again at the next opening). `expected` is the log the ledger
/// was loaded with: the hashes written must give the same.
fn migrate_from_format_6(db: &Database, expected: &Frontier) -> Result<(), LedgerError> {
    if stored_format(&db.begin_read()?)?.as_deref() != Some(FORMAT_6) {
        return Ok(());
    }
    let write = db.begin_write()?;
    {
        // Whatever an interrupted or older writer left in the table goes first.
        write.delete_table(LOG_SUBTREES)?;
        let leaves = write.open_table(LOG)?;
        let mut subtrees = write.open_table(LOG_SUBTREES)?;
        let rows = leaves.iter()?.map(|item| {
            item.map(|(_, leaf)| leaf.value().to_vec())
                .map_err(Into::into)
        });
        let written = log_tree::write_all(&mut subtrees, rows)?;
        if &written != expected {
            return Err(LedgerError::Corrupt(format!(
                "the access log's tree written from {} leaves has root {}, but {} leaves with \
                 root {} were loaded",
                written.len(),
                Hash(written.root()),
                expected.len(),
                Hash(expected.root())
            )));
        }
        write.open_table(META)?.insert(META_FORMAT, FORMAT_7)?;
    }
    write.commit()?;
    Ok(())
}

/// Brings a format-7 ledger to format 8 in one write transaction: each slice's
/// rows of the two indexes and of the state table become that slice's first run, copied in
/// their stored order
/// (memory stays flat whatever the indexes' size); the old tables are dropped. The marks
/// stay as they were: a slice's rows are on disk up to the same heights.
fn migrate_from_format_7(db: &Database) -> Result<(), LedgerError> {
    if stored_format(&db.begin_read()?)?.as_deref() != Some(FORMAT_7) {
        return Ok(());
    }
    let write = db.begin_write()?;
    {
        let mut runs = write.open_table(RUNS)?;
        let mut sets = write.open_table(RUN_SETS)?;
        let txs = write.open_table(FORMAT_7_TXS)?;
        runs::adopt(
            &mut runs,
            &mut sets,
            runs::Index::Txs,
            txs.iter()?.map(|item| {
                let (key, value) = item?;
                let (key, value) = (key.value().to_vec(), value.value().to_vec());
                Ok((index::tx_slice(&key), key, value))
            }),
        )?;
        let log_index = write.open_table(FORMAT_7_LOG_INDEX)?;
        runs::adopt(
            &mut runs,
            &mut sets,
            runs::Index::Log,
            log_index.iter()?.map(|item| {
                let (key, _) = item?;
                let key = key.value().to_vec();
                Ok((index::log_slice(&key), key, Vec::new()))
            }),
        )?;
        let state = write.open_table(FORMAT_7_STATE)?;
        runs::adopt(
            &mut runs,
            &mut sets,
            runs::Index::State,
            state.iter()?.map(|item| {
                let (key, value) = item?;
                let key = key.value().to_vec();
                Ok((
                    journal::state_slice(&key),
                    key,
                    runs::state_value(Some(value.value())),
                ))
            }),
        )?;
        write.open_table(META)?.insert(META_FORMAT, FORMAT_8)?;
    }
    write.delete_table(FORMAT_7_TXS)?;
    write.delete_table(FORMAT_7_LOG_INDEX)?;
    write.delete_table(FORMAT_7_STATE)?;
    write.commit()?;
    Ok(())
}

/// Brings a ledger of format 8 or 9 to format 10 in one write transaction:
/// `owned`, the owner-index rows of the listings it stores as of its tip, become each
/// slice's first run of the listings by owner (format 8 has none) and by hash (neither has
/// them). The marks stay as they were: the listings registered or withdrawn above a slice's
/// mark are in the state journal, from which opening the ledger makes the rows waiting in
/// memory again.
fn migrate_listings(db: &Database, owned: &[index::OwnedRow]) -> Result<(), LedgerError> {
    let format = stored_format(&db.begin_read()?)?;
    if format.as_deref() != Some(FORMAT_8) && format.as_deref() != Some(FORMAT_9) {
        return Ok(());
    }
    let write = db.begin_write()?;
    {
        adopt_listings(&write, owned, format.as_deref() == Some(FORMAT_8))?;
        write.open_table(META)?.insert(META_FORMAT, FORMAT_10)?;
    }
    write.commit()?;
    Ok(())
}

/// Brings a ledger of format 10 (or one an earlier migration brought there) to format 11
/// in one write transaction: each block is cut into chunks ([`crate::blocks`]), read one
/// at a time in height order, and the table of whole blocks is dropped.
fn migrate_blocks(db: &Database) -> Result<(), LedgerError> {
    if stored_format(&db.begin_read()?)?.as_deref() != Some(FORMAT_10) {
        return Ok(());
    }
    let write = db.begin_write()?;
    {
        let whole = write.open_table(FORMAT_10_BLOCKS)?;
        let mut chunks = write.open_table(BLOCK_CHUNKS)?;
        for row in whole.iter()? {
            let (height, bytes) = row?;
            blocks::insert(&mut chunks, height.value(), bytes.value())?;
        }
        write
            .open_table(META)?
            .insert(META_FORMAT, FORMAT_VERSION)?;
    }
    write.delete_table(FORMAT_10_BLOCKS)?;
    write.commit()?;
    Ok(())
}

/// The fewest rows of listed hashes read at once (about two thirds of a chunk): withdrawn
/// hashes are rows too, until their slice is merged, and are read past a page at a time.
const LISTED_READ_AT_ONCE: usize = 64;

/// Moves subtrees of a state tree holding `resident` entries in memory out with `evict`
/// (walking the key space from `start`; it answers what moved and how many stay), until
/// `bound` or fewer stay or the walk reached the end of the key space (what is left cannot
/// move yet); a subtree the spill file refuses is an error.
fn evict_down_to(
    bound: usize,
    mut start: Digest,
    mut resident: usize,
    mut evict: impl FnMut(&Digest, usize) -> (secnet_merkle::smt::Eviction, usize),
) -> Result<(), LedgerError> {
    while resident > bound {
        let (done, now) = evict(&start, resident - bound);
        if let Some(refused) = done.refused {
            return Err(LedgerError::Storage(refused.to_string()));
        }
        resident = now;
        if done.next == [0; 32] {
            break;
        }
        start = done.next;
    }
    Ok(())
}

/// What [`Ledger::load`] read.
struct Loaded {
    state: State,
    /// The entries the state journal holds beyond the state table, with their values.
    waiting: Vec<(Vec<u8>, StateValueBytes)>,
    /// For a ledger of a format before the indexes of listings: the owner index's rows of
    /// its stored listings.
    owned: Vec<index::OwnedRow>,
}

/// Makes the hashes of `owned`, the owner-index rows of every listing a ledger stores, each
/// slice's first run of the listed hashes, and with `by_owner` the rows themselves each
/// slice's first run of the listings by owner.
fn adopt_listings(
    write: &redb::WriteTransaction,
    owned: &[index::OwnedRow],
    by_owner: bool,
) -> Result<(), LedgerError> {
    let mut runs_table = write.open_table(RUNS)?;
    let mut sets = write.open_table(RUN_SETS)?;
    if by_owner {
        let rows = owned.iter().map(|row| (row.to_vec(), Vec::new()));
        let rows = sorted_by_slice(rows, index::owned_slice);
        runs::adopt(&mut runs_table, &mut sets, runs::Index::Owned, rows)?;
    }
    let listed = owned
        .iter()
        .filter_map(|row| index::owned_hash(row))
        .map(|hash| (hash.as_bytes().to_vec(), runs::state_value(Some(&[]))));
    let listed = sorted_by_slice(listed, index::listed_slice);
    runs::adopt(&mut runs_table, &mut sets, runs::Index::Listed, listed)
}

/// Whether a ledger of `format` keeps its state table and indexes in sorted runs
/// ([`crate::runs`]).
fn in_runs(format: Option<&[u8]>) -> bool {
    format_in(format, 8..=CURRENT_FORMAT)
}

/// The number of the current format, [`FORMAT_VERSION`]'s.
const CURRENT_FORMAT: u32 = 11;

/// Whether `format` (as stored) is `secnet-ledger/N` for an `N` in `range`.
fn format_in(format: Option<&[u8]>, range: std::ops::RangeInclusive<u32>) -> bool {
    format
        .and_then(|f| f.strip_prefix(b"secnet-ledger/".as_slice()))
        .and_then(|n| std::str::from_utf8(n).ok())
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| range.contains(&n) && format == Some(format_name(n).as_bytes()))
}

/// `secnet-ledger/N`.
fn format_name(n: u32) -> String {
    format!("secnet-ledger/{n}")
}

/// Where each slice of the indexes and of the state table is on disk.
fn index_marks(read: &ReadTransaction) -> Result<IndexMarks, LedgerError> {
    read.open_table(META)?
        .get(META_INDEX_MARKS)?
        .ok_or_else(|| LedgerError::Corrupt("no index marks record".into()))
        .and_then(|v| IndexMarks::from_bytes(v.value()))
}

/// What the state journal holds beyond the state table ([`journal::overlay`]); nothing for
/// a ledger of a format before the journal.
fn state_overlay(read: &ReadTransaction) -> Result<journal::Overlay, LedgerError> {
    let format = stored_format(read)?;
    if !format_in(format.as_deref(), 6..=CURRENT_FORMAT) {
        return Ok(journal::Overlay::new());
    }
    journal::overlay(read, &index_marks(read)?)
}

/// How many rows of a slice of the state table [`StateSlice`] reads at a time.
const STATE_WINDOW: usize = 4_096;

/// A slice of the state as stored: its rows in the runs (the newest of each key, removals
/// left out) with the journal's changes to that slice beyond its mark applied, ascending,
/// read [`STATE_WINDOW`] rows at a time. Memory holds a window, not the slice: one slice
/// can hold much of the state (every address's key starts `2‖p`, so all are in one).
struct StateSlice<'o> {
    runs: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    set: runs::RunSet,
    slice: usize,
    overlay: &'o journal::Overlay,
    /// Where the next window starts; `None` once the slice is read.
    from: Option<Vec<u8>>,
    window: std::vec::IntoIter<runs::Row>,
}

impl<'o> StateSlice<'o> {
    fn new(
        read: &ReadTransaction,
        slice: usize,
        overlay: &'o journal::Overlay,
    ) -> Result<StateSlice<'o>, LedgerError> {
        Ok(StateSlice {
            runs: read.open_table(RUNS)?,
            set: runs::load(&read.open_table(RUN_SETS)?, runs::Index::State, slice)?,
            slice,
            overlay,
            from: Some(Vec::new()),
            window: Vec::new().into_iter(),
        })
    }

    /// The next window's rows, the overlay's changes to its keys applied.
    fn next_window(&mut self) -> Result<Option<Vec<runs::Row>>, LedgerError> {
        let Some(from) = self.from.take() else {
            return Ok(None);
        };
        // Every state key starts with a kind byte below this one.
        let end = [0xff];
        let rows = runs::range(
            &self.runs,
            &self.set,
            runs::Index::State,
            self.slice,
            &from,
            &end,
            STATE_WINDOW,
        )?;
        // A full window may stop short of the slice's end: the overlay counts up to where it
        // stopped, the rest with the next window.
        let upto = match rows.last() {
            Some((key, _)) if rows.len() >= STATE_WINDOW => key.clone(),
            _ => end.to_vec(),
        };
        let mut stored = Vec::with_capacity(rows.len());
        for (key, value) in rows {
            if journal::state_slice(&key) != self.slice {
                return Err(LedgerError::Corrupt(format!(
                    "state entry {} stored in slice {}",
                    hex::encode(&key),
                    self.slice
                )));
            }
            if let Some(bytes) = runs::state_entry(&value)? {
                let bytes = bytes.to_vec();
                stored.push((key, bytes));
            }
        }
        let changes: journal::Overlay = self
            .overlay
            .range(from.clone()..=upto.clone())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if upto.as_slice() != end.as_slice() {
            self.from = Some([upto.as_slice(), &[0]].concat());
        }
        journal::merged(stored.into_iter().map(Ok), &changes)
            .collect::<Result<Vec<_>, LedgerError>>()
            .map(Some)
    }
}

impl Iterator for StateSlice<'_> {
    type Item = Result<runs::Row, LedgerError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(row) = self.window.next() {
                return Some(Ok(row));
            }
            match self.next_window() {
                Ok(Some(rows)) => self.window = rows.into_iter(),
                Ok(None) => return None,
                Err(e) => {
                    self.from = None;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The index rows a ledger holds beyond what its indexes have on disk (pruned blocks'
/// transactions are not indexed), with `waiting`, the state entries its journal holds beyond
/// the state table.
fn pending_index(
    db: &Database,
    state: &State,
    waiting: Vec<(Vec<u8>, StateValueBytes)>,
) -> Result<Pending, LedgerError> {
    let read = db.begin_read()?;
    let marks = index_marks(&read)?;
    let first_block = first_block_in(&read)?;
    Pending::rebuild(
        &read,
        marks,
        first_block,
        state.tip().height,
        state.log().len(),
        waiting,
    )
}

/// The format a ledger file records.
pub(crate) fn stored_format(read: &redb::ReadTransaction) -> Result<Option<Vec<u8>>, LedgerError> {
    Ok(read
        .open_table(META)?
        .get(META_FORMAT)?
        .map(|v| v.value().to_vec()))
}

/// How many leaves the stored access log holds: its rows, numbered from 0 without a gap.
fn stored_log_size(read: &ReadTransaction) -> Result<u64, LedgerError> {
    let log = read.open_table(LOG)?;
    let rows = log.len()?;
    let next = log.last()?.map_or(0, |(index, _)| index.value() + 1);
    if next != rows {
        return Err(LedgerError::Corrupt(format!(
            "the access log holds {rows} leaves numbered up to {next}"
        )));
    }
    Ok(rows)
}

/// The lowest stored height (see [`Ledger::first_block`]).
fn first_block_in(read: &redb::ReadTransaction) -> Result<u64, LedgerError> {
    first_block_of(&read.open_table(META)?)
}

/// The lowest stored height as `meta` records it.
pub(crate) fn first_block_of(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<u64, LedgerError> {
    match meta.get(META_FIRST_BLOCK)? {
        None => Ok(1),
        Some(v) => {
            let bytes: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| LedgerError::Corrupt("first-block record is not 8 bytes".into()))?;
            Ok(u64::from_be_bytes(bytes))
        }
    }
}

impl Ledger {
    /// Opens the ledger in `dir`, creating it from `genesis` if the directory is new.
    ///
    /// Refuses a directory made for another genesis, and a directory whose stored entries do
    /// not hash to the stored state root.
    pub fn open(dir: &Path, genesis: &Genesis) -> Result<Ledger, LedgerError> {
        Ledger::open_bounded(dir, genesis, None)
    }

    /// Like [`Self::open`], with the state tree kept within `memory` from the start (see
    /// [`Self::bound_state_memory`]): the stored entries are read a part of the key space at
    /// a time, and each part moves to the spill file before the next is read, so that
    /// opening holds about a sixty-fourth of the state besides the bound, not all of it.
    pub fn open_bounded(
        dir: &Path,
        genesis: &Genesis,
        memory: Option<StateMemory>,
    ) -> Result<Ledger, LedgerError> {
        genesis
            .validate()
            .map_err(|e| LedgerError::Corrupt(format!("invalid genesis: {e}")))?;
        std::fs::create_dir_all(dir)
            .map_err(|e| LedgerError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(LEDGER_FILE);
        let db = redb::Builder::new()
            .set_cache_size(LEDGER_CACHE_BYTES)
            .create(&path)?;
        let given = genesis.hash();

        let stored_genesis = {
            let read = db.begin_read()?;
            match read.open_table(META) {
                Ok(meta) => meta.get(META_GENESIS)?.map(|v| v.value().to_vec()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            }
        };
        let mut spilling = None;
        let (state, waiting) = match stored_genesis {
            None => (Self::initialise(&db, genesis)?, Vec::new()),
            Some(stored) => {
                let stored: [u8; 32] = stored
                    .as_slice()
                    .try_into()
                    .map_err(|_| LedgerError::Corrupt("genesis hash record".into()))?;
                if stored != given.0 {
                    return Err(LedgerError::GenesisMismatch {
                        stored: Hash(stored),
                        given,
                    });
                }
                if let Some(memory) = memory {
                    spilling = Some(Spilling::new(&path, memory)?);
                }
                let into = spilling.as_ref();
                let Loaded {
                    state,
                    waiting,
                    owned,
                } = Self::load(&db, genesis, into, dir)?;
                migrate_from_format_3(&db)?;
                migrate_from_format_4(&db, state.tip().height, state.log().len())?;
                migrate_from_format_5(&db)?;
                migrate_from_format_6(&db, state.log())?;
                migrate_from_format_7(&db)?;
                migrate_listings(&db, &owned)?;
                migrate_blocks(&db)?;
                (state, waiting)
            }
        };
        let pending = pending_index(&db, &state, waiting)?;
        let recent = VecDeque::from([Recent {
            snapshot: state.snapshot(),
            header: None,
            receipts_root: None,
            txs: None,
        }]);
        let mut ledger = Ledger {
            db: Arc::new(db),
            genesis: genesis.clone(),
            path,
            genesis_root: State::genesis(genesis).state_root(),
            genesis_hash: given,
            unwritten: Arc::new(Unwritten::new(state.tip().height, pending)),
            state,
            recent,
            spilling,
            listing_changes: ListingChanges::default(),
        };
        // A new ledger's state is its genesis: bound from here on.
        if let (Some(memory), None) = (memory, &ledger.spilling) {
            ledger.bound_state_memory(memory)?;
        }
        Ok(ledger)
    }

    /// Keeps the state tree within `memory` from now on: past its bound, subtrees of the
    /// state tree that have not changed for [`RECENT_STATES`] heights move to a spill file
    /// beside the ledger (see `spill`), after each block, and are read back from it (checked
    /// against their hashes) when a block or a reader needs them. What is over the bound
    /// now moves at once; a spill file that cannot be made, or that refuses it, is an
    /// error. The grants by expiry move out of memory too, after each block, all but the
    /// `grant_chunks_in_memory` chunks blocks touched last (to a second file, see
    /// `expiry_file`). Called again, it changes the bound. Roots, proofs and answers do not
    /// change; the files are gone when the process is.
    pub fn bound_state_memory(&mut self, memory: StateMemory) -> Result<(), LedgerError> {
        if let Some(spilling) = &mut self.spilling {
            spilling.memory = memory;
            self.state.keep_grants_in(
                Arc::clone(&spilling.grants).into_store(),
                memory.grant_chunks_in_memory,
            );
            return Ok(());
        }
        let spilling = Spilling::new(&self.path, memory)?;
        self.state.keep_tree_in(
            Arc::clone(&spilling.file).into_store(),
            memory.opened_entries,
        );
        self.state.keep_grants_in(
            Arc::clone(&spilling.grants).into_store(),
            memory.grant_chunks_in_memory,
        );
        self.spilling = Some(spilling);
        // Grants the file refuses stay in memory; the next blocks try again, and say so.
        let _ = self.state.store_cold_grants();
        let over = self
            .state
            .resident_entries()
            .saturating_sub(memory.resident_entries);
        if over > 0 {
            let now = self.state.snapshot();
            let state = &mut self.state;
            evict_down_to(
                memory.resident_entries,
                [0; 32],
                state.resident_entries(),
                |start, max| {
                    let done = state.evict(Some(&now), start, max);
                    (done, state.resident_entries())
                },
            )?;
            // The versions kept of this height would hold the whole tree in memory still.
            let height = self.state.tip().height;
            for recent in &mut self.recent {
                if recent.snapshot.height() == height {
                    recent.snapshot = self.state.snapshot();
                }
            }
        }
        Ok(())
    }

    /// The bound [`Self::bound_state_memory`] set, if any.
    pub fn state_memory(&self) -> Option<StateMemory> {
        self.spilling.as_ref().map(|s| s.memory)
    }

    /// After a block: while the state tree holds more than its bound, moves subtrees that
    /// have not changed since the oldest recent height to the spill file (at most
    /// [`EVICT_PER_BLOCK`] entries, from where the last call stopped); starts a new spill
    /// file once the current one is mostly copies the current state does not read, and
    /// moves what the old one holds over ([`MOVE_PER_BLOCK`] entries a block, on a walk of
    /// its own). A file that refuses a subtree leaves it in memory, reported once.
    fn spill_over_bound(&mut self) {
        let Some(spilling) = &mut self.spilling else {
            return;
        };
        // What went wrong with the spill file, or the grants' file, this block, if anything.
        let mut problem = self.state.take_refused_write_back().map(|e| e.to_string());
        problem = problem.or(self.state.store_cold_grants().map(|e| e.to_string()));
        let moving = self.state.entries_in_earlier_stores() > 0;
        // A file is replaced past `most`; the next is expected to grow to about that.
        let live = self.state.stored_bytes();
        let most = live
            .saturating_mul(SPILL_FILE_TIMES_LIVE)
            .saturating_add(spilling.memory.spill_slack_bytes);
        if !moving && spilling.file.written() > most {
            match new_spill_file(&self.path, &spilling.spare, most) {
                Ok(file) => {
                    let file = Arc::new(file);
                    self.state.keep_tree_in(
                        Arc::clone(&file).into_store(),
                        spilling.memory.opened_entries,
                    );
                    let old_bytes = spilling.file.written();
                    spilling.file = file;
                    spilling.moving_next = [0; 32];
                    spilling.started += 1;
                    tracing::info!(
                        height = self.state.tip().height,
                        old_file_bytes = old_bytes,
                        live_bytes = live,
                        entries_to_move = self.state.entries_in_earlier_stores(),
                        "started a new spill file; the old one's parts move over"
                    );
                }
                Err(e) => problem = problem.or(Some(e.to_string())),
            }
        }
        // What an earlier file holds moves over on a walk of its own, so that evictions,
        // however few, do not hold it up.
        if self.state.entries_in_earlier_stores() > 0 {
            let done = self
                .state
                .evict(None, &spilling.moving_next, MOVE_PER_BLOCK);
            spilling.moving_next = done.next;
            problem = problem.or(done.refused.map(|e| e.to_string()));
            if self.state.entries_in_earlier_stores() == 0 {
                tracing::info!(
                    height = self.state.tip().height,
                    "the old spill file's parts have moved over"
                );
            }
        }
        let over = self
            .state
            .resident_entries()
            .saturating_sub(spilling.memory.resident_entries);
        if over > 0 {
            let oldest = self.recent.front().map(|r| &r.snapshot);
            let max = (over + spilling.memory.resident_entries / 64)
                .clamp(EVICT_AT_LEAST, EVICT_PER_BLOCK);
            let done = self.state.evict(oldest, &spilling.next, max);
            spilling.next = done.next;
            problem = problem.or(done.refused.map(|e| e.to_string()));
        }
        // Read ahead of the next moves (after this block's eviction, which moves what it
        // passes of the old file too), as the old file is read one record at a time and may
        // be larger than what the system caches: the subtrees the next block's move copies
        // (their groups' records were hinted a block ago), and the groups' records of the
        // move after it. Nothing, once nothing is in an earlier file.
        let after = self
            .state
            .prefetch_moves(&spilling.moving_next, MOVE_PER_BLOCK, true);
        if after != [0; 32] {
            self.state.prefetch_moves(&after, MOVE_PER_BLOCK, false);
        }
        match problem {
            None => spilling.failing = false,
            Some(error) => {
                if !spilling.failing {
                    tracing::warn!(%error, "a part of the state stays in memory: a file beside the ledger refused it");
                }
                spilling.failing = true;
            }
        }
    }

    fn initialise(db: &Database, genesis: &Genesis) -> Result<State, LedgerError> {
        let state = State::genesis(genesis);
        let write = db.begin_write()?;
        {
            let mut meta = write.open_table(META)?;
            meta.insert(META_FORMAT, FORMAT_VERSION)?;
            meta.insert(META_GENESIS, genesis.hash().as_bytes().as_slice())?;
            meta.insert(META_TIP, encode_tip(&state.tip()).as_slice())?;
            meta.insert(
                META_INDEX_MARKS,
                IndexMarks::all(0, 0).to_bytes().as_slice(),
            )?;
            runs::adopt(
                &mut write.open_table(RUNS)?,
                &mut write.open_table(RUN_SETS)?,
                runs::Index::State,
                sorted_by_slice(
                    State::genesis_entries(genesis)
                        .into_iter()
                        .map(|(key, value)| {
                            (key.to_bytes(), runs::state_value(Some(&value.to_bytes())))
                        }),
                    journal::state_slice,
                ),
            )?;
            write.open_table(BLOCK_CHUNKS)?;
            write.open_table(LOG)?;
            write.open_table(LOG_SUBTREES)?;
            write.open_table(STATE_JOURNAL)?;
        }
        write.commit()?;
        Ok(state)
    }

    /// The stored state, the entries the state journal holds beyond the state table (with
    /// their values), and, for a ledger of a format before the owner index, that index's rows of
    /// the stored listings.
    ///
    /// With `into`, the state tree is kept in that spill file within that bound from the
    /// start: the entries are sorted into parts of the tree's key space on disk first
    /// ([`crate::parts`]), and each part moves out of memory before the next is read.
    fn load(
        db: &Database,
        genesis: &Genesis,
        into: Option<&Spilling>,
        dir: &Path,
    ) -> Result<Loaded, LedgerError> {
        let read = db.begin_read()?;
        let format = stored_format(&read)?;
        let meta = read.open_table(META)?;
        // Formats 3 to 5 differ only in their indexes, which loading does not read, in having
        // no state journal and, like format 6, no stored log tree; format 7 only in its
        // indexes, and formats 8 and 9 only in having no index of listings by owner, or by
        // hash. They are migrated once loaded.
        if !format_in(format.as_deref(), 3..=CURRENT_FORMAT) {
            return Err(LedgerError::Corrupt(format!(
                "unknown ledger format {:?}",
                format.map(|f| String::from_utf8_lossy(&f).into_owned())
            )));
        }
        let tip = decode_tip(
            meta.get(META_TIP)?
                .ok_or_else(|| LedgerError::Corrupt("no tip record".into()))?
                .value(),
        )?;
        let overlay = state_overlay(&read)?;
        let mut entries = Vec::new();
        let mut parts = into.map(|_| Parts::new(dir)).transpose()?;
        let mut waiting = Vec::new();
        let mut owned = Vec::new();
        let without_listings = !format_in(format.as_deref(), 10..=CURRENT_FORMAT);
        let mut add = |k: Vec<u8>, v: Vec<u8>| -> Result<(), LedgerError> {
            if without_listings {
                owned.extend(index::owned_row_of(&k, Some(&v))?);
            }
            if let Some(parts) = &mut parts {
                return parts.push(&k, &v);
            }
            let key = StateKey::from_bytes(&k)?;
            let value = StateValue::from_bytes(&key, &v)?;
            entries.push((key, value));
            Ok(())
        };
        if in_runs(format.as_deref()) {
            for (slice, overlay) in journal::by_slice(overlay).into_iter().enumerate() {
                for row in StateSlice::new(&read, slice, &overlay)? {
                    let (k, v) = row?;
                    add(k, v)?;
                }
                waiting.extend(
                    overlay
                        .into_iter()
                        .map(|(key, value)| (key, value.map(Arc::from))),
                );
            }
        } else {
            let table = read.open_table(FORMAT_7_STATE)?;
            let rows = table.iter()?.map(|item| {
                let (k, v) = item?;
                Ok::<_, LedgerError>((k.value().to_vec(), v.value().to_vec()))
            });
            for item in journal::merged(rows, &overlay) {
                let (k, v) = item?;
                add(k, v)?;
            }
            waiting.extend(
                overlay
                    .into_iter()
                    .map(|(key, value)| (key, value.map(Arc::from))),
            );
        }
        let log = if in_runs(format.as_deref()) || format.as_deref() == Some(FORMAT_7) {
            log_tree::frontier(&read, stored_log_size(&read)?)?
        } else {
            let mut log = Frontier::default();
            for (expected, item) in (0u64..).zip(read.open_table(LOG)?.iter()?) {
                let (index, leaf) = item?;
                if index.value() != expected {
                    return Err(LedgerError::Corrupt(format!(
                        "access log jumps from leaf {expected} to {}",
                        index.value()
                    )));
                }
                log.append(leaf.value());
            }
            log
        };
        // The state's log head, which its root commits to, checks the log.
        let mut loader = StateLoader::new(genesis.chain_id.clone(), tip, log);
        if let Some(spilling) = into {
            loader.keep_grants_in(
                Arc::clone(&spilling.grants).into_store(),
                spilling.memory.grant_chunks_in_memory,
            );
        }
        match (parts, into.map(|s| (&s.file, s.memory))) {
            (Some(parts), Some((file, memory))) => {
                loader.keep_tree_in(
                    Arc::clone(file).into_store(),
                    memory.opened_entries,
                    parts.len(),
                );
                for (part, entries) in parts.into_parts().enumerate() {
                    loader.add(entries?)?;
                    evict_down_to(
                        memory.resident_entries,
                        parts::part_start(part),
                        loader.resident_entries(),
                        |start, max| (loader.evict(start, max), loader.resident_entries()),
                    )?;
                }
            }
            _ => loader.add(entries)?,
        }
        let state = loader.finish()?;
        if state.state_root() != tip.state_root {
            return Err(LedgerError::Corrupt(format!(
                "stored entries hash to {}, but height {} recorded root {}",
                state.state_root(),
                tip.height,
                tip.state_root
            )));
        }
        Ok(Loaded {
            state,
            waiting,
            owned,
        })
    }

    /// Applies `block` to the state and persists it, atomically, with every block applied
    /// before it that was not on disk yet.
    pub fn apply_block(&mut self, block: &Block) -> Result<BlockOutcome, LedgerError> {
        self.apply_block_trusting(block, |_| false)
    }

    /// Like [`Self::apply_block`], trusting the signatures `verified` vouches for (see
    /// [`State::apply_block_trusting`]).
    pub fn apply_block_trusting(
        &mut self,
        block: &Block,
        verified: impl Fn(&secnet_types::SignedTransaction) -> bool,
    ) -> Result<BlockOutcome, LedgerError> {
        let outcome = self.apply_block_deferred(block, verified)?;
        self.unwritten.write(&self.db, Durability::Immediate)?;
        Ok(outcome)
    }

    /// Like [`Self::apply_block_trusting`], but the block's rows wait in memory for the next
    /// [`Syncer::sync`], which writes every block waiting in one durable transaction.
    /// Readers see the block at once. A crash before the sync loses it and every later
    /// deferred block, and the ledger reopens at the last block written, consistent; the
    /// caller must not tell anyone the block is stored (e.g. acknowledge it to consensus)
    /// before that sync.
    pub fn apply_block_deferred(
        &mut self,
        block: &Block,
        verified: impl Fn(&secnet_types::SignedTransaction) -> bool,
    ) -> Result<BlockOutcome, LedgerError> {
        if self.is_poisoned() {
            return Err(LedgerError::Poisoned);
        }
        let outcome = self.state.apply_block_trusting(block, verified)?;
        let mut listings: Arc<[Hash]> = Arc::new([]);
        let queued = BlockRows::of(
            block,
            &outcome,
            self.state.log().len(),
            self.state.snapshot(),
        )
        .and_then(|rows| {
            listings = rows.listed_changes().map(Hash).collect();
            self.unwritten.push(rows)
        });
        if let Err(e) = queued {
            // The in-memory state is ahead of what can be written: refuse further work.
            self.unwritten.poison();
            return Err(e);
        }
        if self.recent.len() >= RECENT_STATES {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent {
            snapshot: self.state.snapshot(),
            header: Some(block.header.clone()),
            receipts_root: Some(receipts_root(&outcome.receipts)),
            txs: Some(Arc::new(BlockTxs::of(block, &outcome.receipts))),
        });
        self.listing_changes.push(block.header.height, listings);
        self.spill_over_bound();
        Ok(outcome)
    }

    /// A handle that writes deferred blocks without holding the ledger.
    pub fn syncer(&self) -> Syncer {
        Syncer {
            db: Arc::clone(&self.db),
            unwritten: Arc::clone(&self.unwritten),
        }
    }

    /// Refuses all further writes until the ledger is reopened: the disk may be behind the
    /// state in memory (e.g. a [`Syncer::sync`] failed).
    pub fn poison(&mut self) {
        self.unwritten.poison();
    }

    /// Whether an earlier failure left memory ahead of the disk (see [`Self::poison`]).
    pub fn is_poisoned(&self) -> bool {
        self.unwritten.is_poisoned()
    }

    /// The hash of the genesis this ledger was opened with ([`Genesis::hash`]).
    pub fn genesis_hash(&self) -> Hash {
        self.genesis_hash
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Lets at most `rows` index rows wait in memory once a write committed, besides those
    /// it brought (2^19 by default): past it a
    /// write stores several slices. Until the ledger is opened again.
    pub fn limit_index_rows_waiting(&self, rows: usize) -> Result<(), LedgerError> {
        self.unwritten
            .change_pending(|pending| pending.set_row_budget(rows))
    }

    /// What this ledger keeps in memory, counted by kind.
    pub fn footprint(&self) -> Result<LedgerFootprint, LedgerError> {
        Ok(LedgerFootprint {
            state: self.state.footprint(),
            recent_heights: self.recent.len(),
            blocks_unwritten: self.unwritten.len()?,
            index_rows_waiting: self.unwritten.rows_waiting(),
            state_value_bytes_waiting: self.unwritten.value_bytes_waiting(),
            listing_changes: self.listing_changes.hashes,
            page_cache_bytes: self.db.cache_stats().used_bytes() as u64,
            spill_files_started: self.spilling.as_ref().map_or(0, |s| s.started),
        })
    }

    /// The state tree as of `height`, if it is one of the last [`RECENT_STATES`] heights.
    pub fn snapshot_at(&self, height: u64) -> Option<&StateSnapshot> {
        self.recent_at(height).map(|r| &r.snapshot)
    }

    fn recent_at(&self, height: u64) -> Option<&Recent> {
        let oldest = self.recent.front()?.snapshot.height();
        let index = usize::try_from(height.checked_sub(oldest)?).ok()?;
        self.recent
            .get(index)
            .filter(|r| r.snapshot.height() == height)
    }

    /// The tip's height, and the content hashes of the listings registered, changed or
    /// withdrawn by the blocks after `height` up to it, a slice per block (cheap to take:
    /// merge them after letting the ledger go); `None` if `height` is above the tip, or one
    /// of those blocks is not among those applied since the ledger opened whose listing
    /// writes it keeps ([`LISTING_CHANGES_HEIGHTS`]): a caller keeping the listings as of
    /// `height` then reads them all again.
    pub fn listings_changed_since(&self, height: u64) -> Option<(u64, Vec<Arc<[Hash]>>)> {
        let tip = self.state.tip().height;
        if height >= tip {
            return (height == tip).then_some((tip, Vec::new()));
        }
        let kept = &self.listing_changes.heights;
        let first = kept.front()?.0;
        if height.checked_add(1)? < first || kept.back()?.0 != tip {
            return None;
        }
        let skip = usize::try_from(height + 1 - first).ok()?;
        Some((
            tip,
            kept.iter().skip(skip).map(|(_, h)| h.clone()).collect(),
        ))
    }

    /// The transactions' hashes and outcomes of the block at `height`, if it is one of the
    /// blocks applied since the ledger opened and among the last [`RECENT_STATES`]; for
    /// others, decode [`Self::block_bytes`] (outside any lock the ledger is under).
    pub fn recent_block_txs(&self, height: u64) -> Option<Arc<BlockTxs>> {
        self.recent_at(height).and_then(|r| r.txs.clone())
    }

    /// The header of the block at `height` (recent ones from memory, others read without
    /// decoding the body).
    pub fn header(&self, height: u64) -> Result<Option<BlockHeader>, LedgerError> {
        if let Some(Recent {
            header: Some(header),
            ..
        }) = self.recent_at(height)
        {
            return Ok(Some(header.clone()));
        }
        if let Some(rows) = self.unwritten.block(height)? {
            return StoredBlock::header_of(&rows.stored)
                .map(Some)
                .map_err(|e| LedgerError::Corrupt(format!("block {height}: {e}")));
        }
        let read = self.db.begin_read()?;
        let table = read.open_table(BLOCK_CHUNKS)?;
        let Some(bytes) = blocks::front(&table, height, StoredBlock::HEADER_FRONT)? else {
            return Ok(None);
        };
        StoredBlock::header_of(&bytes)
            .map(Some)
            .map_err(|e| LedgerError::Corrupt(format!("block {height}: {e}")))
    }

    /// The state root after `height` and its receipts root, once applied (height 0: the
    /// genesis state and no receipts). Recent heights come from memory; older ones from one
    /// read of the stored block.
    pub fn committed_roots_at(&self, height: u64) -> Result<Option<(Hash, Hash)>, LedgerError> {
        if height > self.state.tip().height {
            return Ok(None);
        }
        if let Some(Recent {
            snapshot,
            receipts_root: Some(receipts),
            ..
        }) = self.recent_at(height)
        {
            return Ok(Some((snapshot.state_root(), *receipts)));
        }
        if height == 0 {
            return Ok(Some((self.genesis_root, receipts_root(&[]))));
        }
        Ok(self
            .block(height)?
            .map(|b| (b.state_root, receipts_root(&b.receipts))))
    }

    /// What a block on top of a parent committing `parent` commits to: the roots of the
    /// heights from the parent's [`StateCommitment::next`] this ledger has applied, at most
    /// [`MAX_HEADER_STATE_ROOTS`].
    pub fn commitment_after(&self, parent: &StateCommitment) -> StateCommitment {
        let from = parent.next();
        let mut commitment = StateCommitment {
            from,
            roots: Vec::new(),
            receipts: Vec::new(),
        };
        let mut height = from;
        while commitment.roots.len() < MAX_HEADER_STATE_ROOTS {
            match self.committed_roots_at(height) {
                Ok(Some((state, receipts))) => {
                    commitment.roots.push(state);
                    commitment.receipts.push(receipts);
                }
                _ => break,
            }
            height += 1;
        }
        commitment
    }

    /// The genesis this ledger was created from.
    pub fn genesis(&self) -> &Genesis {
        &self.genesis
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored block at `height`, with its receipts.
    pub fn block(&self, height: u64) -> Result<Option<StoredBlock>, LedgerError> {
        self.block_bytes(height)?
            .map(|bytes| decode_stored_block(height, &bytes))
            .transpose()
    }

    /// The [`StoredBlock`] bytes of the block at `height`, for a caller that decodes them
    /// without holding the ledger ([`decode_stored_block`]).
    pub fn block_bytes(&self, height: u64) -> Result<Option<Vec<u8>>, LedgerError> {
        if let Some(rows) = self.unwritten.block(height)? {
            return Ok(Some(rows.stored.clone()));
        }
        let read = self.db.begin_read()?;
        blocks::get(&read.open_table(BLOCK_CHUNKS)?, height)
    }

    /// Where a transaction was included: `(height, position)`.
    ///
    /// Only the inclusion that consumed the sender's nonce is indexed: a transaction hash
    /// covers sender and nonce, so there is at most one.
    pub fn tx_location(&self, hash: &Hash) -> Result<Option<(u64, u32)>, LedgerError> {
        if let Some(location) = self
            .unwritten
            .blocks()?
            .iter()
            .find_map(|b| b.tx_location(hash))
        {
            return Ok(Some(location));
        }
        if let Some(location) = self.unwritten.pending()?.tx_location(hash) {
            return Ok(Some(location));
        }
        let read = self.db.begin_read()?;
        let slice = index::tx_slice(hash.as_bytes());
        let set = runs::load(&read.open_table(RUN_SETS)?, runs::Index::Txs, slice)?;
        let runs_table = read.open_table(RUNS)?;
        let Some(v) = runs::get(&runs_table, &set, runs::Index::Txs, slice, hash.as_bytes())?
        else {
            return Ok(None);
        };
        let (height, position) = decode_location(&v)
            .ok_or_else(|| LedgerError::Corrupt(format!("index entry of transaction {hash}")))?;
        // A pruned block's rows leave the index when their run is next merged.
        if height < first_block_in(&read)? {
            return Ok(None);
        }
        Ok(Some((height, position)))
    }

    /// The committed receipt of a transaction with where it was included:
    /// `(height, position, receipt)`.
    pub fn committed_receipt(
        &self,
        hash: &Hash,
    ) -> Result<Option<(u64, u32, Receipt)>, LedgerError> {
        let Some((height, position)) = self.tx_location(hash)? else {
            return Ok(None);
        };
        let receipt = self
            .block(height)?
            .and_then(|b| b.receipts.into_iter().nth(position as usize))
            .ok_or_else(|| {
                LedgerError::Corrupt(format!("receipt of {hash} missing at height {height}"))
            })?;
        Ok(Some((height, position, receipt)))
    }

    /// The content hashes of the listings `owner` registered and still holds, ascending:
    /// read through the owner index (the rows of blocks not written yet, then those waiting
    /// in memory, then the disk), each checked against the state.
    pub fn hashes_listed_by(&self, owner: &AccountId) -> Result<Vec<Hash>, LedgerError> {
        let mut hashes: BTreeSet<Hash> = BTreeSet::new();
        for block in self.unwritten.blocks()? {
            hashes.extend(block.hashes_owned_by(owner));
        }
        hashes.extend(self.unwritten.pending()?.hashes_owned_by(owner));
        let read = self.db.begin_read()?;
        let (first, last) = index::owned_bounds(owner);
        let slice = index::owned_slice(&first);
        let set = runs::load(&read.open_table(RUN_SETS)?, runs::Index::Owned, slice)?;
        let rows = runs::range(
            &read.open_table(RUNS)?,
            &set,
            runs::Index::Owned,
            slice,
            &first,
            &last,
            usize::MAX,
        )?;
        for (row, _) in rows {
            hashes.insert(index::owned_hash(&row).ok_or_else(|| {
                LedgerError::Corrupt("owner index row of the wrong length".into())
            })?);
        }
        Ok(hashes
            .into_iter()
            .filter(|hash| self.state.listing(hash).is_some_and(|l| l.owner == *owner))
            .collect())
    }

    /// The content hashes of at most `limit` listings with a hash after `after` (from the
    /// first if `None`), ascending, as of the tip: the page [`State::listing`] reads them
    /// from. Read through the index of listed hashes (the changes of blocks not written yet,
    /// then those waiting in memory, then the disk), one slice of consecutive hashes after
    /// the other, each hash checked against the state; nothing is decoded.
    pub fn listed_hashes_after(
        &self,
        after: Option<&Hash>,
        limit: usize,
    ) -> Result<Vec<Hash>, LedgerError> {
        let mut from: [u8; 32] = match after {
            // The hash after `after`; none comes after the last one.
            Some(hash) => match index::next_hash(hash.as_bytes()) {
                Some(next) => next,
                None => return Ok(Vec::new()),
            },
            None => [0; 32],
        };
        let queued: Vec<[u8; 32]> = self
            .unwritten
            .blocks()?
            .iter()
            .flat_map(|block| block.listed_changes().collect::<Vec<_>>())
            .collect();
        let mut out = Vec::new();
        let mut slice = index::listed_slice(&from);
        while out.len() < limit && slice < index::INDEX_SLICES {
            let waiting = self.unwritten.pending()?.listed_from(slice, &from);
            let read = self.db.begin_read()?;
            let set = runs::load(&read.open_table(RUN_SETS)?, runs::Index::Listed, slice)?;
            let to = index::listed_slice_end(slice);
            // Withdrawn hashes are rows too: read past them a page at a time.
            let want = (limit - out.len()).max(LISTED_READ_AT_ONCE);
            let rows = runs::range(
                &read.open_table(RUNS)?,
                &set,
                runs::Index::Listed,
                slice,
                &from,
                &to,
                want,
            )?;
            // A full page may stop short of the slice's end: what waits in memory counts up
            // to where it stopped.
            let listed_hash = |key: &[u8]| -> Result<[u8; 32], LedgerError> {
                key.try_into()
                    .map_err(|_| LedgerError::Corrupt("listed hash of the wrong length".into()))
            };
            let upto: [u8; 32] = match rows.last() {
                Some((key, _)) if rows.len() >= want => listed_hash(key)?,
                _ => to,
            };
            let mut hashes: BTreeSet<[u8; 32]> = BTreeSet::new();
            for (key, value) in &rows {
                if runs::state_entry(value)?.is_some() {
                    hashes.insert(listed_hash(key)?);
                }
            }
            hashes.extend(waiting.into_iter().filter(|h| *h <= upto));
            hashes.extend(queued.iter().filter(|h| (from..=upto).contains(h)));
            for hash in hashes {
                let hash = Hash(hash);
                if out.len() < limit && self.state.is_listed(&hash) {
                    out.push(hash);
                }
            }
            match index::next_hash(&upto) {
                Some(next) if upto != to => from = next,
                Some(next) => {
                    from = next;
                    slice += 1;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// The indices of the access-log leaves about `subject`, ascending.
    pub fn log_indices(&self, subject: LogSubject) -> Result<Vec<u64>, LedgerError> {
        self.log_indices_page(subject, 0, usize::MAX)
    }

    /// At most `limit` indices, from `from` on, of the access-log leaves about `subject`,
    /// ascending: a page of [`Self::log_indices`], read without collecting the rest.
    pub fn log_indices_page(
        &self,
        subject: LogSubject,
        from: u64,
        limit: usize,
    ) -> Result<Vec<u64>, LedgerError> {
        let key = subject.key();
        // The queue, then the rows waiting in memory, then the disk: a block or a slice
        // written meanwhile is then seen twice, never missed.
        let unwritten = self.unwritten.blocks()?;
        let waiting = self.unwritten.pending()?.log_indices(&key, from);
        let read = self.db.begin_read()?;
        let (first, last) = (log_index_row(&key, from), log_index_row(&key, u64::MAX));
        let slice = index::log_slice(&first);
        let set = runs::load(&read.open_table(RUN_SETS)?, runs::Index::Log, slice)?;
        let rows = runs::range(
            &read.open_table(RUNS)?,
            &set,
            runs::Index::Log,
            slice,
            &first,
            &last,
            limit,
        )?;
        let mut out = Vec::new();
        for (row, _) in rows {
            let index = row
                .get(SUBJECT_KEY_LEN..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| {
                    LedgerError::Corrupt("access-log index row of the wrong length".into())
                })?;
            out.push(index);
        }
        // Leaves are appended in index order: what the disk did not show is newer than all
        // it showed.
        let after = out.last().map_or(from, |last| last + 1).max(from);
        let newer = waiting
            .into_iter()
            .chain(unwritten.iter().flat_map(|b| b.log_indices(&key)));
        for index in newer {
            if out.len() >= limit {
                break;
            }
            if out.last().is_none_or(|last| index > *last) && index >= after {
                out.push(index);
            }
        }
        Ok(out)
    }

    /// The bytes of access-log leaves `indices`, in one read (`None` for a missing leaf).
    pub fn log_leaves(&self, indices: &[u64]) -> Result<Vec<Option<Vec<u8>>>, LedgerError> {
        let log = self.log_as_stored()?;
        indices.iter().map(|i| log.find_leaf(*i)).collect()
    }

    /// The access log as far as this ledger has applied it, read from the blocks not written
    /// yet and the disk: the source of its proofs. Refused on a poisoned ledger, whose state
    /// may be ahead of what it holds.
    pub(crate) fn stored_log(&self) -> Result<StoredLog, LedgerError> {
        if self.is_poisoned() {
            return Err(LedgerError::Poisoned);
        }
        self.log_as_stored()
    }

    /// [`Self::stored_log`] whatever the ledger's health: what it holds can still be read.
    fn log_as_stored(&self) -> Result<StoredLog, LedgerError> {
        let unwritten = self.unwritten.blocks()?;
        StoredLog::open(&self.db.begin_read()?, self.state.log().len(), unwritten)
    }

    /// The bytes of access-log leaf `index`.
    pub fn log_leaf(&self, index: u64) -> Result<Option<Vec<u8>>, LedgerError> {
        Ok(self.log_leaves(&[index])?.pop().flatten())
    }

    /// The lowest height whose block this ledger stores: 1 unless it was installed from a
    /// snapshot or pruned (see [`Self::prune_blocks_below`]).
    pub fn first_block(&self) -> Result<u64, LedgerError> {
        first_block_in(&self.db.begin_read()?)
    }

    /// Drops stored blocks below `height`, at most `max` of them in one write, never the last
    /// [`RECENT_STATES`] heights nor a block not written yet: the state, the access log and
    /// the newer blocks stay. Their transactions' rows in the index are not looked for: a
    /// location below the first stored block is not one ([`Self::tx_location`]), and such
    /// rows leave as their runs are merged, so pruning costs the blocks' pages, not a
    /// rewritten index chunk per transaction. The write is not waited for (the next block
    /// write makes it durable). Returns how many were dropped.
    pub fn prune_blocks_below(&mut self, height: u64, max: u64) -> Result<u64, LedgerError> {
        if self.is_poisoned() {
            return Err(LedgerError::Poisoned);
        }
        // No write runs meanwhile: what is written bounds what may be pruned, and the first
        // stored block, read here, is replaced below.
        let written = self.unwritten.hold_writes()?;
        let keep_from = self
            .state
            .tip()
            .height
            .saturating_sub(RECENT_STATES as u64)
            .min(*written)
            .max(1);
        let first = self.first_block()?;
        let until = height.min(keep_from).min(first.saturating_add(max));
        if until <= first {
            return Ok(0);
        }
        // Not waited for: the next block write makes it durable, and a crash before then
        // only leaves the blocks to be pruned again.
        let mut write = self.db.begin_write()?;
        write
            .set_durability(Durability::None)
            .map_err(|e| LedgerError::Storage(e.to_string()))?;
        {
            blocks::remove_range(&mut write.open_table(BLOCK_CHUNKS)?, first..=until - 1)?;
            write
                .open_table(META)?
                .insert(META_FIRST_BLOCK, until.to_be_bytes().as_slice())?;
        }
        write.commit()?;
        // Only now, still holding off writes, are their transactions waiting to be indexed
        // dropped: a failed prune leaves them to be written like the rest.
        self.unwritten
            .change_pending(|pending| pending.forget_txs_below(until))?;
        drop(written);
        Ok(until - first)
    }

    /// A consistent read of the ledger as it is now, to write as a snapshot without holding
    /// the ledger (see [`SnapshotSource::write_to`]).
    pub fn snapshot_source(&self) -> Result<SnapshotSource, LedgerError> {
        Ok(SnapshotSource {
            read: self.db.begin_read()?,
            genesis: self.genesis_hash,
        })
    }

    /// Creates the ledger in `dir` from a snapshot the caller checked against certified
    /// roots, then opens it. Refuses a directory that already holds a ledger. The access
    /// log's index is rebuilt; only the snapshot's tip block is stored, so heights below
    /// it have no blocks here ([`Self::first_block`]).
    pub fn install_snapshot(
        dir: &Path,
        genesis: &Genesis,
        snapshot: Snapshot,
        floor: Option<&[u8]>,
    ) -> Result<Ledger, LedgerError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LedgerError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(LEDGER_FILE);
        if path.exists() {
            return Err(LedgerError::Storage(format!(
                "{} already holds a ledger; a snapshot is installed only into a new directory",
                dir.display()
            )));
        }
        // Built aside and renamed into place once complete: an interrupted install leaves
        // no ledger behind, only a partial file the next install replaces.
        let partial = dir.join(format!("{LEDGER_FILE}.partial"));
        let _ = std::fs::remove_file(&partial);
        let db = redb::Builder::new()
            .set_cache_size(LEDGER_CACHE_BYTES)
            .create(&partial)?;
        let tip = snapshot.tip;
        let first = snapshot
            .blocks
            .first()
            .map_or(1, |b| b.block.header.height.max(1));
        let write = db.begin_write()?;
        {
            let mut meta = write.open_table(META)?;
            meta.insert(META_FORMAT, FORMAT_VERSION)?;
            meta.insert(META_GENESIS, genesis.hash().as_bytes().as_slice())?;
            meta.insert(META_TIP, encode_tip(&tip).as_slice())?;
            meta.insert(META_FIRST_BLOCK, first.to_be_bytes().as_slice())?;
            // Every index row is written below.
            meta.insert(
                META_INDEX_MARKS,
                IndexMarks::all(tip.height, snapshot.leaves.len() as u64)
                    .to_bytes()
                    .as_slice(),
            )?;
            if let Some(floor) = floor {
                meta.insert(META_CONSENSUS_FLOOR, floor)?;
            }
            runs::adopt(
                &mut write.open_table(RUNS)?,
                &mut write.open_table(RUN_SETS)?,
                runs::Index::State,
                sorted_by_slice(
                    snapshot
                        .entries
                        .iter()
                        .map(|(key, value)| (key.clone(), runs::state_value(Some(value)))),
                    journal::state_slice,
                ),
            )?;
            let mut owned = Vec::new();
            for (key, value) in &snapshot.entries {
                owned.extend(index::owned_row_of(key, Some(value))?);
            }
            adopt_listings(&write, &owned, true)?;
            // Every slice of the state table is whole: the journal starts empty.
            write.open_table(STATE_JOURNAL)?;
            let written = log_tree::write_all(
                &mut write.open_table(LOG_SUBTREES)?,
                snapshot.leaves.iter().map(Ok),
            )?;
            if written.len() != snapshot.log_size() {
                return Err(LedgerError::Corrupt(format!(
                    "the snapshot's log tree has {} leaves, its tip names {}",
                    written.len(),
                    snapshot.log_size()
                )));
            }
            let mut log = write.open_table(LOG)?;
            let mut rows = Vec::new();
            for (index, leaf) in (0u64..).zip(&snapshot.leaves) {
                log.insert(index, leaf.as_slice())?;
                let entry = LogEntry::from_bytes(leaf)
                    .map_err(|e| LedgerError::Corrupt(format!("snapshot log leaf {index}: {e}")))?;
                rows.extend(
                    LogSubject::of(&entry)
                        .iter()
                        .map(|s| log_index_row(&s.key(), index)),
                );
            }
            let mut runs_table = write.open_table(RUNS)?;
            let mut sets = write.open_table(RUN_SETS)?;
            runs::adopt(
                &mut runs_table,
                &mut sets,
                runs::Index::Log,
                sorted_by_slice(
                    rows.into_iter().map(|row| (row.to_vec(), Vec::new())),
                    index::log_slice,
                ),
            )?;
            let mut table = write.open_table(BLOCK_CHUNKS)?;
            let mut located = Vec::new();
            for block in &snapshot.blocks {
                let height = block.block.header.height;
                blocks::insert(&mut table, height, &block.to_bytes())?;
                located.extend(tx_locations(height, &block.block.txs, &block.receipts).map(
                    |(hash, (height, position))| {
                        (
                            hash.as_bytes().to_vec(),
                            encode_location(height, position).to_vec(),
                        )
                    },
                ));
            }
            runs::adopt(
                &mut runs_table,
                &mut sets,
                runs::Index::Txs,
                sorted_by_slice(located, index::tx_slice),
            )?;
        }
        write.commit()?;
        drop(db);
        std::fs::rename(&partial, &path).map_err(|e| {
            LedgerError::Storage(format!("cannot move {} into place: {e}", partial.display()))
        })?;
        Ledger::open(dir, genesis)
    }

    /// Where consensus starts for a ledger installed from a snapshot: the certified header
    /// (JSON, as `/v1/blocks/{h}/certificate` serves it) stored with the snapshot, in the
    /// same write.
    pub fn consensus_floor(&self) -> Result<Option<Vec<u8>>, LedgerError> {
        let read = self.db.begin_read()?;
        let meta = read.open_table(META)?;
        Ok(meta.get(META_CONSENSUS_FLOOR)?.map(|v| v.value().to_vec()))
    }

    /// Replays every stored block from genesis in memory and compares each state root and
    /// receipts with the stored ones, and each access-log leaf and interior hash a block
    /// appended with the stored log.
    pub fn replay_check(&self) -> Result<ReplayReport, LedgerError> {
        let first = self.first_block()?;
        if first > 1 {
            return Err(LedgerError::Pruned {
                height: 1,
                first_block: first,
            });
        }
        let mut state = State::genesis(&self.genesis);
        let tip = self.state.tip();
        let log = self.stored_log()?;
        for height in 1..=tip.height {
            let stored = self
                .block(height)?
                .ok_or_else(|| LedgerError::Corrupt(format!("block {height} is missing")))?;
            let outcome = state.apply_block(&stored.block)?;
            if outcome.tip.state_root != stored.state_root {
                return Err(LedgerError::Corrupt(format!(
                    "replaying block {height} gives root {}, stored root is {}",
                    outcome.tip.state_root, stored.state_root
                )));
            }
            if outcome.receipts != stored.receipts {
                return Err(LedgerError::Corrupt(format!(
                    "replaying block {height} gives other receipts than stored"
                )));
            }
            // The stored log: every leaf the block appended and every interior hash they
            // completed (the proofs' material, which opening does not read).
            let leaves = (outcome.first_log_index..).zip(&outcome.log_leaves);
            for (index, leaf) in leaves {
                if log.complete(0, index)? != leaf_hash(leaf) {
                    return Err(LedgerError::Corrupt(format!(
                        "replaying block {height} appends another access log leaf {index} \
                         than stored"
                    )));
                }
            }
            for node in &outcome.log_subtrees {
                if log.complete(node.level, node.index)? != node.hash {
                    return Err(LedgerError::Corrupt(format!(
                        "the stored access log's subtree {}/{} is not the one block {height} \
                         completed",
                        node.level, node.index
                    )));
                }
            }
        }
        Ok(ReplayReport {
            blocks: tip.height,
            replayed_root: state.state_root(),
            stored_root: self.state.state_root(),
        })
    }
}

/// A consistent read of a ledger at one height, to be written as a snapshot while the
/// ledger goes on applying blocks.
pub struct SnapshotSource {
    read: ReadTransaction,
    genesis: Hash,
}

impl std::fmt::Debug for SnapshotSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotSource").finish_non_exhaustive()
    }
}

impl SnapshotSource {
    /// The height this read holds.
    pub fn height(&self) -> Result<u64, LedgerError> {
        Ok(self.tip()?.height)
    }

    fn tip(&self) -> Result<ChainTip, LedgerError> {
        let meta = self.read.open_table(META)?;
        let tip = meta
            .get(META_TIP)?
            .ok_or_else(|| LedgerError::Corrupt("no tip record".into()))?;
        decode_tip(tip.value())
    }

    /// Writes the snapshot (the format [`Snapshot::read`] reads) to `out`.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> Result<(), SnapshotError> {
        let tip = self.tip()?;
        let table = self.read.open_table(BLOCK_CHUNKS)?;
        let mut recent = Vec::new();
        if tip.height > 0 {
            let from = tip
                .height
                .saturating_sub(crate::snapshot::SNAPSHOT_BLOCKS as u64 - 1)
                .max(1);
            for height in from..=tip.height {
                // Blocks below a pruned ledger's first are simply not carried; the tip's is.
                if let Some(bytes) = blocks::get(&table, height)? {
                    recent.push(bytes);
                } else if height == tip.height {
                    return Err(LedgerError::Corrupt(format!("block {height} is missing")).into());
                } else {
                    recent.clear();
                }
            }
        }
        let log = self.read.open_table(LOG)?;
        // The state as stored with the journal's changes it lacks applied, a window of a
        // slice at a time: counted first, then read again as it is written.
        let overlays = journal::by_slice(state_overlay(&self.read)?);
        let mut count = 0u64;
        for (slice, overlay) in overlays.iter().enumerate() {
            for row in StateSlice::new(&self.read, slice, overlay)? {
                row?;
                count += 1;
            }
        }
        let read = &self.read;
        let entries =
            overlays.iter().enumerate().flat_map(|(slice, overlay)| {
                match StateSlice::new(read, slice, overlay) {
                    Ok(rows) => Box::new(rows) as Box<dyn Iterator<Item = _>>,
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            });
        let leaves = log.iter()?.map(|item| Ok(item?.1.value().to_vec()));
        crate::snapshot::write(
            out,
            &self.genesis,
            &tip,
            &recent,
            (count, entries),
            (log.len()?, leaves),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_named_and_ranged_as_stored() {
        assert_eq!(format_name(CURRENT_FORMAT).as_bytes(), FORMAT_VERSION);
        for (n, name) in [(10, FORMAT_10), (9, FORMAT_9), (8, FORMAT_8), (3, FORMAT_3)] {
            assert_eq!(format_name(n).as_bytes(), name);
        }
        assert!(format_in(Some(FORMAT_8), 8..=CURRENT_FORMAT));
        assert!(!format_in(Some(FORMAT_7), 8..=CURRENT_FORMAT));
        for odd in [
            &b"secnet-ledger/08"[..],
            b"secnet-ledger/+9",
            b"secnet-ledger/",
            b"9",
        ] {
            assert!(!format_in(Some(odd), 0..=u32::MAX), "{odd:?}");
        }
        assert!(!format_in(None, 0..=u32::MAX));
    }
}
