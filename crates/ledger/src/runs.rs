//! Sorted runs: how each slice of the indexes and of the state table is
//! stored, so that writing a row costs about the same however large the table has grown.
//!
//! A slice's rows (see [`crate::index`]) were inserted into one B-tree holding the whole
//! slice: its rows land on random pages, so each write rewrote about every page of its
//! slice, and a row cost more the larger the index grew (about N / 8,000 bytes a
//! transaction at N transactions). Now each write of a slice appends its rows as a new
//! *run*: rows sorted by key under a run id, cut into chunks (one redb value each) that fit a
//! page ([`CHUNK_BYTES`]), so that they fill fresh pages one after the other, one chunk to a
//! page, and cost one B-tree insert per chunk.
//! Runs of about the same size (the same *level*, a factor of [`FAN_OUT`] apart) are merged
//! [`FAN_OUT`] at a time into one run of the next level, a step with every write of the
//! slice: each step moves, in key order, about twice the rows that write added in all, from
//! the front of the merging runs to the back of the merged one. A row is written about once per
//! level, log4 of the slice's size over a write's rows, and never waits for a large merge:
//! no write moves more than a few times its own rows per level.
//!
//! The state table's merges (and the listed hashes') take every run of the slice instead ([`RunSet::start_merges`]):
//! a key is written again and again there, and removed, so the newest run must win and a
//! removal can only be forgotten when nothing older is left outside the merge.
//!
//! A lookup reads, in each run of the key's slice, the one chunk that would hold the key (a
//! B-tree read each: a few dozen for an index of billions of rows); a range read merges the
//! slice's runs. Chunks, runs and each slice's [`RunSet`] change only in the write
//! transaction of that slice, so a reader sees a slice as one write left it.

use crate::error::LedgerError;
use crate::index::INDEX_SLICES;
use crate::journal::Cursor;
use redb::{ReadableTable, Table, TableDefinition};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// The runs' rows, in chunks that fit a page ([`CHUNK_BYTES`]): `index ‖ slice ‖ run id
/// (big-endian) ‖ the chunk's first row key` → its rows ([`encode_chunk`]).
pub(crate) const RUNS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index_runs");

/// Each slice's [`RunSet`]: `index ‖ slice` → its bytes.
pub(crate) const RUN_SETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index_run_sets");

/// How many runs of one level are merged into one of the next.
pub(crate) const FAN_OUT: usize = 4;

/// The fewest rows a merge step moves, from all its sources (a write adding few rows still
/// advances merges).
const MIN_STEP: usize = 4_096;

/// More runs or merges than a slice can come to (a record claiming more is damaged): a
/// state-table merge moves about [`MIN_STEP`] rows a write or more, so the runs written while it
/// lasts stay below this up to slices of hundreds of millions of rows.
const MAX_RUNS: usize = 65_536;
const MAX_MERGES: usize = 64;

/// A state-table slice with this many runs is merged whatever their sizes, so that a slice
/// written with few rows at a time is not left in thousands of runs.
const STATE_MAX_RUNS: usize = 32;

/// The bytes before a chunk's first row key in its key in [`RUNS`].
const CHUNK_PREFIX: usize = 2 + 8;

/// The most bytes of a chunk's rows with its key ([`CHUNK_PREFIX`] and the first row's key)
/// and what a redb leaf adds (one row larger than that is a chunk of its own): a chunk fills
/// one page ([`crate::PAGE_BYTES`]). Chunks of 64 rows of state entries, 5–10 KiB, were
/// given runs of 8 or 16 KiB and left about a fifth of their pages empty, and the ledger file
/// a quarter free pages that only runs of their size could reuse.
const CHUNK_BYTES: usize = crate::PAGE_BYTES - crate::LEAF_OVERHEAD;

/// The bytes a row takes in a chunk ([`encode_chunk`]).
fn encoded_len(key: &[u8], value: &[u8]) -> usize {
    2 + key.len() + 4 + value.len()
}

/// Rows adopted into a slice ([`adopt`]) are stored once this many wait.
const ADOPT_BATCH: usize = 1_024;

/// A row's key and value.
pub(crate) type Row = (Vec<u8>, Vec<u8>);

/// A row's key and value, borrowed.
type RowRef<'r> = (&'r [u8], &'r [u8]);

/// The table of runs or of run sets, open for writing.
type RunTable<'t> = Table<'t, &'static [u8], &'static [u8]>;

/// Which index a run belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Index {
    /// Transaction hash → its location (`tx_index` before format 8).
    Txs = 0,
    /// Access-log rows, keyed subject ‖ leaf index, empty values (`access_log_by_subject`).
    Log = 1,
    /// The state table: key → 1 ‖ the value's bytes, or 0 for an entry removed. Its runs
    /// are merged all together (see [`RunSet::start_merges`]), so that the newest value of
    /// a key wins by run id and a removal can be forgotten once merged.
    State = 2,
    /// Listings by owner: owner ‖ content hash, empty values ([`crate::index::OwnedRow`]).
    Owned = 3,
    /// The listings' content hashes → [`state_value`] of no bytes while listed, of a
    /// removal once withdrawn, in slices of consecutive hashes
    /// ([`crate::index::listed_slice`]). Merged like the state table.
    Listed = 4,
}

impl Index {
    /// Every index, in tag order.
    pub(crate) const ALL: [Index; 5] = [
        Index::Txs,
        Index::Log,
        Index::State,
        Index::Owned,
        Index::Listed,
    ];

    /// Whether a key is written again and again, and removed: the newest run wins, and runs
    /// are merged all together ([`RunSet::start_merges`]). Otherwise each key is written
    /// once.
    fn newest_wins(self) -> bool {
        matches!(self, Index::State | Index::Listed)
    }

    /// Whether `keep` drops rows by age, so that a run's rows expire together with the
    /// runs around them: the transactions' index, whose rows leave with their pruned
    /// blocks (see [`RunSet::merge_alone_above`]).
    fn expires_by_age(self) -> bool {
        matches!(self, Index::Txs)
    }
}

/// A state row's value: the entry's bytes, or a removal.
pub(crate) fn state_value(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        Some(bytes) => [&[1u8][..], bytes].concat(),
        None => vec![0],
    }
}

/// The entry's bytes a state row holds (`None`: removed).
pub(crate) fn state_entry(value: &[u8]) -> Result<Option<&[u8]>, LedgerError> {
    match value.split_first() {
        Some((1, bytes)) => Ok(Some(bytes)),
        Some((0, [])) => Ok(None),
        _ => Err(LedgerError::Corrupt(
            "a state row neither an entry nor a removal".into(),
        )),
    }
}

/// A run: rows stored under its id, in key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) id: u64,
    pub(crate) rows: u64,
}

impl Run {
    /// log4 of its rows, rounded down (0 for none; at most 31): runs within a factor of
    /// [`FAN_OUT`] of each other are of one level and merged together, whatever size a
    /// write's runs have.
    fn level(&self) -> u8 {
        match self.rows {
            0 => 0,
            rows => ((63 - rows.leading_zeros()) / 2) as u8,
        }
    }
}

/// Runs being merged: `sources`' rows move, smallest keys first, to the end of `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Merge {
    level: u8,
    target: Run,
    sources: Vec<Run>,
}

impl Merge {
    /// Whether this merge, done, of `sources` runs, fell below the level they make together
    /// (one source: below its own level), which only rows `keep` dropped can do.
    fn shrank(&self, sources: usize) -> bool {
        match sources {
            0 => false,
            1 => self.target.level() < self.level,
            _ => self.target.level() <= self.level,
        }
    }
}

/// One slice's runs: those complete and those being merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RunSet {
    next_id: u64,
    runs: Vec<Run>,
    merges: Vec<Merge>,
}

impl RunSet {
    /// Every run holding rows of the slice: complete, merged into, and being merged.
    fn every_run(&self) -> impl Iterator<Item = &Run> {
        self.runs.iter().chain(
            self.merges
                .iter()
                .flat_map(|m| std::iter::once(&m.target).chain(&m.sources)),
        )
    }

    /// The ids of every run holding rows of the slice, newest first.
    fn all_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.every_run().map(|r| r.id).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    }

    /// Rows in all runs.
    #[cfg(test)]
    pub(crate) fn rows(&self) -> u64 {
        self.every_run().map(|r| r.rows).sum()
    }

    /// How many runs a lookup probes.
    #[cfg(test)]
    pub(crate) fn run_count(&self) -> usize {
        self.all_ids().len()
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        id
    }

    /// Starts the merges `index` calls for. The indexes (each key written once): a merge at
    /// every level holding [`FAN_OUT`] complete runs and not merging yet, of its oldest
    /// runs. The state table and the listed hashes (a key written again and again, and
    /// removed): one merge at a
    /// time, of every run, once the runs besides the oldest hold as many rows as it does (or
    /// there are [`STATE_MAX_RUNS`]); so runs made meanwhile are newer than the merged one,
    /// whose id is newer than what it merged, and a row is rewritten about twice for each
    /// change.
    fn start_merges(&mut self, index: Index) {
        if index.newest_wins() {
            let oldest = self.runs.iter().min_by_key(|r| r.id).map_or(0, |r| r.rows);
            let rest = self
                .runs
                .iter()
                .fold(0u64, |sum, r| sum.saturating_add(r.rows))
                .saturating_sub(oldest);
            if self.merges.is_empty()
                && self.runs.len() >= 2
                && (rest >= oldest || self.runs.len() >= STATE_MAX_RUNS)
            {
                let mut sources = std::mem::take(&mut self.runs);
                sources.sort_unstable_by_key(|r| r.id);
                self.begin_merge(0, sources);
            }
            return;
        }
        loop {
            let mut by_level: BTreeMap<u8, Vec<Run>> = BTreeMap::new();
            for run in &self.runs {
                by_level.entry(run.level()).or_default().push(*run);
            }
            let Some((level, mut runs)) = by_level.into_iter().find(|(level, runs)| {
                runs.len() >= FAN_OUT && !self.merges.iter().any(|m| m.level == *level)
            }) else {
                return;
            };
            runs.sort_unstable_by_key(|r| r.id);
            runs.truncate(FAN_OUT);
            self.runs.retain(|r| !runs.contains(r));
            self.begin_merge(level, runs);
        }
    }

    /// After a merge of an index whose rows expire by age ([`Index::expires_by_age`]) fell
    /// below the level its sources make ([`Merge::shrank`]: its `keep` dropped rows, most of
    /// them unless the sources' rows were just at a level's edge), merges alone the largest
    /// complete run above `level`, the level of what that merge left: its rows are older
    /// still, and runs larger than merges now make would otherwise never be merged again
    /// (made before pruning began, or while more blocks were kept). Where that run falls a
    /// level too, the next one follows; where it does not, it cost one rewrite. Called after
    /// [`Self::start_merges`], so that it takes no run a regular merge is due to take.
    fn merge_alone_above(&mut self, index: Index, level: u8) {
        if !index.expires_by_age() {
            return;
        }
        let Some(largest) = self
            .runs
            .iter()
            .filter(|r| r.level() > level && !self.merges.iter().any(|m| m.level == r.level()))
            .max_by_key(|r| r.rows)
            .copied()
        else {
            return;
        };
        self.runs.retain(|r| *r != largest);
        self.begin_merge(largest.level(), vec![largest]);
    }

    /// A merge of `sources` (taken out of the complete runs) into a new, empty run.
    fn begin_merge(&mut self, level: u8, sources: Vec<Run>) {
        let target = Run {
            id: self.new_id(),
            rows: 0,
        };
        self.merges.push(Merge {
            level,
            target,
            sources,
        });
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 16 * (self.runs.len() + 6 * self.merges.len()));
        out.extend_from_slice(&self.next_id.to_be_bytes());
        let put_runs = |out: &mut Vec<u8>, runs: &[Run]| {
            out.extend_from_slice(&(runs.len() as u32).to_be_bytes());
            for r in runs {
                out.extend_from_slice(&r.id.to_be_bytes());
                out.extend_from_slice(&r.rows.to_be_bytes());
            }
        };
        put_runs(&mut out, &self.runs);
        out.extend_from_slice(&(self.merges.len() as u32).to_be_bytes());
        for m in &self.merges {
            out.push(m.level);
            put_runs(&mut out, std::slice::from_ref(&m.target));
            put_runs(&mut out, &m.sources);
        }
        out
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<RunSet, LedgerError> {
        let corrupt = |what: &str| LedgerError::Corrupt(format!("index run set: {what}"));
        let mut at = Cursor(bytes);
        let truncated = || corrupt("truncated");
        let next_id = at.be_u64().ok_or_else(truncated)?;
        let runs_of = |at: &mut Cursor<'_>, max: usize| -> Result<Vec<Run>, LedgerError> {
            let n = at.be_u32().ok_or_else(truncated)? as usize;
            if n > max {
                return Err(corrupt(&format!("{n} runs where at most {max} may be")));
            }
            (0..n)
                .map(|_| {
                    Ok(Run {
                        id: at.be_u64().ok_or_else(truncated)?,
                        rows: at.be_u64().ok_or_else(truncated)?,
                    })
                })
                .collect()
        };
        let runs = runs_of(&mut at, MAX_RUNS)?;
        let merges_len = at.be_u32().ok_or_else(truncated)? as usize;
        if merges_len > MAX_MERGES {
            return Err(corrupt(&format!(
                "{merges_len} merges where at most {MAX_MERGES} may be"
            )));
        }
        let mut merges = Vec::with_capacity(merges_len);
        for _ in 0..merges_len {
            let level = at
                .take(1)
                .and_then(|b| b.first().copied())
                .ok_or_else(truncated)?;
            let target = runs_of(&mut at, 1)?
                .pop()
                .ok_or_else(|| corrupt("a merge without a target"))?;
            let sources = runs_of(&mut at, MAX_RUNS)?;
            merges.push(Merge {
                level,
                target,
                sources,
            });
        }
        if !at.0.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        let set = RunSet {
            next_id,
            runs,
            merges,
        };
        let mut ids = set.all_ids();
        let count = ids.len();
        ids.dedup();
        if ids.len() != count || ids.first().is_some_and(|newest| *newest >= next_id) {
            return Err(corrupt("run ids repeat or reach past the next id"));
        }
        Ok(set)
    }
}

const _: () = assert!(INDEX_SLICES <= 256, "a slice is named by one byte");

/// The key of a slice's record in [`RUN_SETS`].
fn set_key(index: Index, slice: usize) -> [u8; 2] {
    [index as u8, slice as u8]
}

/// The key of a chunk of run `id` of a slice in [`RUNS`]: the run, then the chunk's first
/// row key.
fn chunk_key(index: Index, slice: usize, id: u64, first: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHUNK_PREFIX + first.len());
    out.extend_from_slice(&set_key(index, slice));
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(first);
    out
}

/// A chunk's rows: each row's key length (2 bytes, big-endian), key, value length (4
/// bytes), value.
fn encode_chunk<'r>(
    rows: impl IntoIterator<Item = (&'r [u8], &'r [u8])>,
) -> Result<Vec<u8>, LedgerError> {
    let mut out = Vec::new();
    for (key, value) in rows {
        let too_long = |what: &str, len: usize| {
            LedgerError::Storage(format!("an index row {what} of {len} bytes"))
        };
        let key_len = u16::try_from(key.len()).map_err(|_| too_long("key", key.len()))?;
        let value_len = u32::try_from(value.len()).map_err(|_| too_long("value", value.len()))?;
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&value_len.to_be_bytes());
        out.extend_from_slice(value);
    }
    Ok(out)
}

fn decode_chunk(bytes: &[u8]) -> Result<Vec<Row>, LedgerError> {
    let mut at = Cursor(bytes);
    let mut rows = Vec::new();
    let truncated = || LedgerError::Corrupt("index chunk: truncated row".into());
    while !at.0.is_empty() {
        let key_len = at
            .take(2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_be_bytes)
            .ok_or_else(truncated)?;
        let key = at
            .take(usize::from(key_len))
            .ok_or_else(truncated)?
            .to_vec();
        let value_len = at.be_u32().ok_or_else(truncated)?;
        let value_len = usize::try_from(value_len).map_err(|_| truncated())?;
        let value = at.take(value_len).ok_or_else(truncated)?.to_vec();
        if rows.last().is_some_and(|(last, _): &Row| *last >= key) {
            return Err(LedgerError::Corrupt(
                "index chunk: rows out of order".into(),
            ));
        }
        rows.push((key, value));
    }
    if rows.is_empty() {
        return Err(LedgerError::Corrupt("index chunk: empty".into()));
    }
    Ok(rows)
}

/// A chunk as stored: its key's row part must be its first row's key.
fn chunk_rows(key: &[u8], value: &[u8]) -> Result<Vec<Row>, LedgerError> {
    let rows = decode_chunk(value)?;
    if rows.first().map(|(k, _)| k.as_slice()) != key.get(CHUNK_PREFIX..) {
        return Err(LedgerError::Corrupt(
            "index chunk: stored under another key than its first row's".into(),
        ));
    }
    Ok(rows)
}

/// Stores `rows` (sorted, each key once, all above the run's last key) at the end of run
/// `id`, in chunks that fit a page with their key ([`CHUNK_BYTES`]).
fn put_rows<'r>(
    runs: &mut RunTable<'_>,
    index: Index,
    slice: usize,
    id: u64,
    rows: &[(&'r [u8], &'r [u8])],
) -> Result<(), LedgerError> {
    let mut rest = rows;
    while let Some((first, _)) = rest.first() {
        let mut bytes = CHUNK_PREFIX + first.len();
        let ends = rest
            .iter()
            .position(|(key, value)| {
                bytes += encoded_len(key, value);
                bytes > CHUNK_BYTES
            })
            .unwrap_or(rest.len())
            .max(1);
        let (chunk, after) = rest.split_at(ends);
        runs.insert(
            chunk_key(index, slice, id, first).as_slice(),
            encode_chunk(chunk.iter().copied())?.as_slice(),
        )?;
        rest = after;
    }
    Ok(())
}

/// A slice's runs as stored (none yet: an empty set), with no merge `index` would not make:
/// at most [`FAN_OUT`] runs merged together in an index, one merge at a time in the state
/// table.
pub(crate) fn load(
    sets: &impl ReadableTable<&'static [u8], &'static [u8]>,
    index: Index,
    slice: usize,
) -> Result<RunSet, LedgerError> {
    let Some(bytes) = sets.get(set_key(index, slice).as_slice())? else {
        return Ok(RunSet::default());
    };
    let set = RunSet::from_bytes(bytes.value())?;
    let possible = match index {
        Index::State | Index::Listed => set.merges.len() <= 1,
        Index::Txs | Index::Log | Index::Owned => {
            set.merges.iter().all(|m| m.sources.len() <= FAN_OUT)
        }
    };
    if !possible {
        return Err(LedgerError::Corrupt(format!(
            "index run set of {index:?} slice {slice}: merges it does not make"
        )));
    }
    Ok(set)
}

/// The value of `key` in a slice's runs, probing the newest run first: in each, the one
/// chunk that would hold it.
pub(crate) fn get(
    runs: &impl ReadableTable<&'static [u8], &'static [u8]>,
    set: &RunSet,
    index: Index,
    slice: usize,
    key: &[u8],
) -> Result<Option<Vec<u8>>, LedgerError> {
    for id in set.all_ids() {
        if let Some(Holding { rows, at, .. }) = chunk_holding(runs, index, slice, id, key)?
            && let Some((_, value)) = rows.into_iter().nth(at)
        {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// A chunk holding a key: its rows, and where the key is among them.
struct Holding {
    rows: Vec<Row>,
    at: usize,
}

/// The chunk of run `id` that holds `key`, if one does.
fn chunk_holding(
    runs: &impl ReadableTable<&'static [u8], &'static [u8]>,
    index: Index,
    slice: usize,
    id: u64,
    key: &[u8],
) -> Result<Option<Holding>, LedgerError> {
    let lo = chunk_key(index, slice, id, &[]);
    let hi = chunk_key(index, slice, id, key);
    // The last chunk starting at or before `key`.
    let Some(chunk) = runs.range(lo.as_slice()..=hi.as_slice())?.next_back() else {
        return Ok(None);
    };
    let (k, v) = chunk?;
    let rows = chunk_rows(k.value(), v.value())?;
    Ok(rows
        .binary_search_by(|(k, _)| k.as_slice().cmp(key))
        .ok()
        .map(|at| Holding { rows, at }))
}

/// The slice's rows with keys in `from..=to`, ascending, each once, at most `limit`.
pub(crate) fn range(
    runs: &impl ReadableTable<&'static [u8], &'static [u8]>,
    set: &RunSet,
    index: Index,
    slice: usize,
    from: &[u8],
    to: &[u8],
    limit: usize,
) -> Result<Vec<Row>, LedgerError> {
    let mut found: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for id in set.all_ids() {
        let lo = chunk_key(index, slice, id, &[]);
        let hi = chunk_key(index, slice, id, to);
        // From the chunk that would hold `from` (the last starting at or before it).
        let start = match runs
            .range(lo.as_slice()..=chunk_key(index, slice, id, from).as_slice())?
            .next_back()
        {
            Some(chunk) => chunk?.0.value().to_vec(),
            None => chunk_key(index, slice, id, from),
        };
        let mut taken = 0usize;
        'chunks: for chunk in runs.range(start.as_slice()..=hi.as_slice())? {
            let (k, v) = chunk?;
            for (key, value) in chunk_rows(k.value(), v.value())? {
                if key.as_slice() < from {
                    continue;
                }
                if key.as_slice() > to || taken >= limit {
                    break 'chunks;
                }
                taken += 1;
                found.entry(key).or_insert(value);
            }
        }
        // Only the `limit` smallest can be returned: the rest need not be held.
        while found.len() > limit {
            found.pop_last();
        }
    }
    Ok(found.into_iter().collect())
}

/// Every row of a slice, ascending, each key once with its newest run's value.
#[cfg(test)]
pub(crate) fn all(
    runs: &impl ReadableTable<&'static [u8], &'static [u8]>,
    set: &RunSet,
    index: Index,
    slice: usize,
) -> Result<Vec<Row>, LedgerError> {
    let mut found: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for id in set.all_ids() {
        let lo = chunk_key(index, slice, id, &[]);
        let hi = chunk_key(index, slice, id.saturating_add(1), &[]);
        for chunk in runs.range(lo.as_slice()..hi.as_slice())? {
            let (k, v) = chunk?;
            for (key, value) in chunk_rows(k.value(), v.value())? {
                found.entry(key).or_insert(value);
            }
        }
    }
    Ok(found.into_iter().collect())
}

/// Appends `rows` (sorted by key, each key once) to a slice as a new run, then advances the
/// slice's merges by a step each; rows for which `keep` is false are dropped as they are
/// merged, and so are the state table's removals. Returns the slice's runs as they now are.
pub(crate) fn append<'k>(
    runs: &mut RunTable<'_>,
    sets: &mut RunTable<'_>,
    index: Index,
    slice: usize,
    rows: impl IntoIterator<Item = (&'k [u8], &'k [u8])>,
    keep: &dyn Fn(&[u8], &[u8]) -> bool,
) -> Result<RunSet, LedgerError> {
    let mut set = load(sets, index, slice)?;
    let rows: Vec<(&[u8], &[u8])> = rows.into_iter().collect();
    // A chunk out of order would make the slice unreadable: refuse before writing.
    if rows.windows(2).any(|w| matches!(w, [a, b] if a.0 >= b.0)) {
        return Err(LedgerError::Storage(
            "index rows to store are not sorted by key, each once".into(),
        ));
    }
    if !rows.is_empty() {
        let id = set.new_id();
        put_rows(runs, index, slice, id, &rows)?;
        set.runs.push(Run {
            id,
            rows: rows.len() as u64,
        });
    }
    set.start_merges(index);
    // Each merge moves about twice the rows this write added in all, not from each of its
    // sources: a merge then lasts about half the writes before its level's next one is due.
    // Taking that many from each source finished a merge of four runs in an eighth of them,
    // and since every slice grows at the same pace, the slices' merges of one level fell in
    // the same few dozen writes, which then took several times as long as the others.
    let step = MIN_STEP.max(rows.len().saturating_mul(2));
    let mut merges = std::mem::take(&mut set.merges);
    // The lowest level left by a merge just done that fell below its sources' level.
    let mut shrank: Option<u8> = None;
    for merge in &mut merges {
        let sources = merge.sources.len();
        advance(runs, index, slice, merge, step, keep)?;
        if merge.sources.is_empty() && merge.shrank(sources) {
            let level = merge.target.level();
            shrank = Some(shrank.map_or(level, |l| l.min(level)));
        }
    }
    for merge in merges {
        if merge.sources.is_empty() {
            if merge.target.rows > 0 {
                set.runs.push(merge.target);
            }
        } else {
            set.merges.push(merge);
        }
    }
    set.start_merges(index);
    if let Some(level) = shrank {
        set.merge_alone_above(index, level);
    }
    sets.insert(set_key(index, slice).as_slice(), set.to_bytes().as_slice())?;
    Ok(set)
}

/// Makes rows already sorted by key (`(slice, key, value)`, as a format-7 index stores
/// them) each slice's newest run, without merging: a one-time copy. A slice of the state
/// table must have no run yet (a run adopted later would be taken as newer than rows
/// written since).
pub(crate) fn adopt(
    runs: &mut RunTable<'_>,
    sets: &mut RunTable<'_>,
    index: Index,
    rows: impl Iterator<Item = Result<(usize, Vec<u8>, Vec<u8>), LedgerError>>,
) -> Result<(), LedgerError> {
    struct Adopted {
        set: RunSet,
        run: Run,
        waiting: Vec<Row>,
    }
    let flush =
        |runs: &mut RunTable<'_>, slice: usize, a: &mut Adopted| -> Result<(), LedgerError> {
            let rows: Vec<(&[u8], &[u8])> = a
                .waiting
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice()))
                .collect();
            put_rows(runs, index, slice, a.run.id, &rows)?;
            a.waiting.clear();
            Ok(())
        };
    let mut adopted: BTreeMap<usize, Adopted> = BTreeMap::new();
    for row in rows {
        let (slice, key, value) = row?;
        let a = match adopted.entry(slice) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let mut set = load(sets, index, slice)?;
                if index.newest_wins() && set != RunSet::default() {
                    return Err(LedgerError::Storage(format!(
                        "{index:?} slice {slice} already has runs: rows cannot be adopted into it"
                    )));
                }
                let id = set.new_id();
                e.insert(Adopted {
                    set,
                    run: Run { id, rows: 0 },
                    waiting: Vec::with_capacity(ADOPT_BATCH),
                })
            }
        };
        a.waiting.push((key, value));
        a.run.rows += 1;
        if a.waiting.len() >= ADOPT_BATCH {
            flush(runs, slice, a)?;
        }
    }
    for (slice, mut a) in adopted {
        flush(runs, slice, &mut a)?;
        a.set.runs.push(a.run);
        sets.insert(
            set_key(index, slice).as_slice(),
            a.set.to_bytes().as_slice(),
        )?;
    }
    Ok(())
}

/// Moves the next rows of a merge, about `step` unless the sources run out: chunks are read
/// from all sources in the order of their first keys until `step` of the rows read lie below
/// the first key of the next chunk left unread (and past every chunk starting at the same
/// key as the last one read), and those rows move to the end of the target: no row below
/// that key is left unread, whichever sources hold the keys. A chunk that moves whole is
/// removed; one that moves in part keeps its tail, stored again under the tail's first key.
/// Of rows with the same key, the newest run's moves.
fn advance(
    runs: &mut RunTable<'_>,
    index: Index,
    slice: usize,
    merge: &mut Merge,
    step: usize,
    keep: &dyn Fn(&[u8], &[u8]) -> bool,
) -> Result<(), LedgerError> {
    // Per source, the chunks read: their keys and rows.
    let mut read: Vec<Vec<(Vec<u8>, Vec<Row>)>> = vec![Vec::new(); merge.sources.len()];
    let bounds: Vec<(Vec<u8>, Vec<u8>)> = merge
        .sources
        .iter()
        .map(|s| {
            (
                chunk_key(index, slice, s.id, &[]),
                chunk_key(index, slice, s.id.saturating_add(1), &[]),
            )
        })
        .collect();
    let bound: Option<Vec<u8>> = {
        let mut sources = bounds
            .iter()
            .map(|(lo, hi)| Ok(runs.range(lo.as_slice()..hi.as_slice())?.peekable()))
            .collect::<Result<Vec<_>, LedgerError>>()?;
        // Each source's next chunk by its first key, lowest first.
        let mut next = BinaryHeap::with_capacity(sources.len());
        for (i, chunks) in sources.iter_mut().enumerate() {
            if let Some(first) = next_first_key(chunks)? {
                next.push(Reverse((first, i)));
            }
        }
        // Rows read in all, and those of chunks before each source's last one read (below
        // any bound to come: the source's next chunk starts above them).
        let mut rows_read = 0usize;
        let mut below = 0usize;
        let mut last_first: Option<Vec<u8>> = None;
        loop {
            let Some(Reverse((first, i))) = next.pop() else {
                // Every source was read to its end.
                break None;
            };
            if rows_read >= step && last_first.as_ref() != Some(&first) {
                let below_first: usize = read
                    .iter()
                    .filter_map(|chunks| chunks.last())
                    .map(|(_, rows)| rows.partition_point(|(key, _)| *key < first))
                    .sum();
                if below + below_first >= step {
                    break Some(first);
                }
            }
            let (Some(chunks), Some(taken)) = (sources.get_mut(i), read.get_mut(i)) else {
                return Err(LedgerError::Storage(format!(
                    "merge source {i} out of range"
                )));
            };
            let Some((k, v)) = chunks.next().transpose()? else {
                return Err(LedgerError::Corrupt(
                    "index run: a chunk seen ahead was gone when read".into(),
                ));
            };
            let rows = chunk_rows(k.value(), v.value())?;
            rows_read += rows.len();
            below += taken.last().map_or(0, |(_, rows)| rows.len());
            taken.push((k.value().to_vec(), rows));
            if let Some(after) = next_first_key(chunks)? {
                next.push(Reverse((after, i)));
            }
            last_first = Some(first);
        }
    };
    let moves = |key: &[u8]| bound.as_ref().is_none_or(|b| key < b.as_slice());
    // (key, newest first, value) of every row that moves.
    let mut moving: Vec<(&[u8], Reverse<u64>, &[u8])> = Vec::new();
    let mut tails: Vec<(u64, Vec<RowRef<'_>>)> = Vec::new();
    for (source, chunks) in merge.sources.iter_mut().zip(&read) {
        for (chunk, rows) in chunks {
            runs.remove(chunk.as_slice())?;
            let mut tail = Vec::new();
            for (key, value) in rows {
                if moves(key) {
                    moving.push((key, Reverse(source.id), value));
                    source.rows = source.rows.saturating_sub(1);
                } else {
                    tail.push((key.as_slice(), value.as_slice()));
                }
            }
            if !tail.is_empty() {
                tails.push((source.id, tail));
            }
        }
    }
    moving.sort_unstable();
    let mut moved: Vec<(&[u8], &[u8])> = Vec::with_capacity(moving.len());
    let mut previous: Option<&[u8]> = None;
    for (key, _, value) in moving {
        // A state merge takes every run of its slice, so nothing older than a removal is
        // left outside it: the removal is forgotten. A damaged row stays, for readers to
        // report.
        let removal = index.newest_wins() && matches!(state_entry(value), Ok(None));
        if previous != Some(key) && !removal && keep(key, value) {
            moved.push((key, value));
        }
        previous = Some(key);
    }
    put_rows(runs, index, slice, merge.target.id, &moved)?;
    merge.target.rows = merge.target.rows.saturating_add(moved.len() as u64);
    for (id, tail) in &tails {
        put_rows(runs, index, slice, *id, tail)?;
    }
    if bound.is_none() {
        // Every source was read to its end, and all of it moved.
        merge.sources.clear();
    }
    Ok(())
}

/// The first row key of the next chunk `chunks` holds, if any (a chunk's key is its run's
/// prefix and that key).
fn next_first_key(
    chunks: &mut std::iter::Peekable<redb::Range<'_, &'static [u8], &'static [u8]>>,
) -> Result<Option<Vec<u8>>, LedgerError> {
    if matches!(chunks.peek(), Some(Err(_)))
        && let Some(Err(e)) = chunks.next()
    {
        return Err(e.into());
    }
    Ok(chunks
        .peek()
        .and_then(|chunk| chunk.as_ref().ok())
        .map(|(k, _)| k.value().get(CHUNK_PREFIX..).unwrap_or_default().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redb::{Database, ReadableDatabase, backends::InMemoryBackend};

    fn db() -> Database {
        Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap()
    }

    #[test]
    fn a_run_set_round_trips_and_damage_is_refused() {
        let mut set = RunSet::default();
        for rows in [3_000, 3_500, 4_000, 2_000, 100] {
            let id = set.new_id();
            set.runs.push(Run { id, rows });
        }
        set.start_merges(Index::Txs);
        assert_eq!(set.merges.len(), 1);
        assert_eq!(set.runs.len(), 1);
        let bytes = set.to_bytes();
        assert_eq!(RunSet::from_bytes(&bytes).unwrap(), set);
        for cut in 0..bytes.len() {
            assert!(RunSet::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(RunSet::from_bytes(&longer).is_err());
        // A run id at or past the next id.
        let mut wrong = bytes;
        wrong[..8].copy_from_slice(&3u64.to_be_bytes());
        let err = RunSet::from_bytes(&wrong).unwrap_err();
        assert!(err.to_string().contains("next id"), "{err}");
    }

    #[test]
    fn a_chunk_round_trips_and_damage_is_refused() {
        let rows: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"b", b""), (b"c", b"333")];
        let bytes = encode_chunk(rows.iter().copied()).unwrap();
        let decoded = decode_chunk(&bytes).unwrap();
        assert_eq!(
            decoded,
            rows.iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect::<Vec<_>>()
        );
        for cut in 1..bytes.len() {
            if let Ok(rows) = decode_chunk(&bytes[..cut]) {
                // Only a cut between rows decodes, to fewer rows.
                assert!(rows.len() < 3, "cut at {cut}");
            }
        }
        assert!(decode_chunk(&[]).is_err(), "an empty chunk");
        let unordered = encode_chunk([(b"b".as_slice(), b"".as_slice()), (b"a", b"")]).unwrap();
        let err = decode_chunk(&unordered).unwrap_err();
        assert!(err.to_string().contains("out of order"), "{err}");
        // A chunk must be stored under its first row's key.
        let key = chunk_key(Index::Txs, 0, 0, b"b");
        let err = chunk_rows(&key, &bytes).unwrap_err();
        assert!(err.to_string().contains("another key"), "{err}");
        assert!(chunk_rows(&chunk_key(Index::Txs, 0, 0, b"a"), &bytes).is_ok());
        let long = vec![0u8; 70_000];
        assert!(encode_chunk([(long.as_slice(), b"".as_slice())]).is_err());
    }

    #[test]
    fn levels_are_a_factor_of_four_apart() {
        let level = |rows| Run { id: 0, rows }.level();
        assert_eq!(level(0), 0);
        assert_eq!(level(3), 0);
        assert_eq!(level(4), 1);
        assert_eq!(level(15), 1);
        assert_eq!(level(16), 2);
        assert_eq!(level(3_750), 5);
        assert_eq!(level(15_000), 6);
        assert_eq!(level(u64::MAX), 31);
    }

    /// Appends `rows` to a slice in a write transaction of its own, committed.
    fn append_committed(
        db: &Database,
        index: Index,
        slice: usize,
        rows: &[Row],
        keep: &dyn Fn(&[u8], &[u8]) -> bool,
    ) -> RunSet {
        let w = db.begin_write().unwrap();
        let set = {
            let mut runs = w.open_table(RUNS).unwrap();
            let mut sets = w.open_table(RUN_SETS).unwrap();
            let rows = rows.iter().map(|(k, v)| (k.as_slice(), v.as_slice()));
            append(&mut runs, &mut sets, index, slice, rows, keep).unwrap()
        };
        w.commit().unwrap();
        set
    }

    /// Runs of rows the size of state entries, or with keys as long as the longest address's,
    /// leave little of their pages empty: each chunk fills one page.
    #[test]
    fn chunks_fill_pages() {
        for key_len in [33, 257] {
            let dir = tempfile::tempdir().unwrap();
            let db = Database::create(dir.path().join("r.redb")).unwrap();
            for batch in 0..20u32 {
                let rows: Vec<Row> = (0..500u32)
                    .map(|n| {
                        let mut k = vec![0u8; key_len];
                        k[..4].copy_from_slice(&key(batch * 500 + n));
                        (k, vec![1u8; 60 + (n % 90) as usize])
                    })
                    .collect();
                let mut rows = rows;
                rows.sort();
                append_committed(&db, Index::State, 0, &rows, &|_, _| true);
            }
            let read = db.begin_read().unwrap();
            let stats =
                redb::ReadableTableMetadata::stats(&read.open_table(RUNS).unwrap()).unwrap();
            let empty = stats.fragmented_bytes() as f64 / stats.stored_bytes() as f64;
            assert!(
                empty < 0.1,
                "keys of {key_len}: {empty:.2} of the pages empty"
            );
        }
    }

    fn key(n: u32) -> Vec<u8> {
        // Spread over the key space, like hashes.
        n.wrapping_mul(2_654_435_761).to_be_bytes().to_vec()
    }

    /// Appends batches to one slice and checks every read against a map, and that the runs
    /// stay few while every row is written a bounded number of times.
    fn check_against_model(batches: &[Vec<u32>], dropped: Option<u32>) {
        let db = db();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let keep = |_: &[u8], value: &[u8]| {
            Some(value)
                != dropped
                    .map(|d| d.to_be_bytes())
                    .as_ref()
                    .map(|v| v.as_slice())
        };
        let mut max_runs = 0;
        for batch in batches {
            let mut rows: Vec<(Vec<u8>, Vec<u8>)> = batch
                .iter()
                .map(|n| (key(*n), n.to_be_bytes().to_vec()))
                .filter(|(k, _)| !model.contains_key(k))
                .collect();
            rows.sort();
            rows.dedup_by(|a, b| a.0 == b.0);
            let set = append_committed(&db, Index::Txs, 3, &rows, &keep);
            model.extend(rows);
            max_runs = max_runs.max(set.run_count());
            let r = db.begin_read().unwrap();
            let runs = r.open_table(RUNS).unwrap();
            let sets = r.open_table(RUN_SETS).unwrap();
            let stored = load(&sets, Index::Txs, 3).unwrap();
            assert_eq!(stored, set);
            // A row dropped by `keep` may still wait in a run not merged yet.
            let expected: BTreeMap<Vec<u8>, Vec<u8>> = model.clone();
            let all = range(&runs, &stored, Index::Txs, 3, &[], &[0xff; 5], usize::MAX).unwrap();
            let all: BTreeMap<_, _> = all.into_iter().collect();
            for (k, v) in expected.iter().step_by(37) {
                let found = get(&runs, &stored, Index::Txs, 3, k).unwrap();
                if dropped.is_some_and(|d| d.to_be_bytes().as_slice() == v.as_slice()) {
                    assert_eq!(found.as_ref(), all.get(k));
                } else {
                    assert_eq!(found.as_ref(), Some(v));
                    assert_eq!(all.get(k), Some(v));
                }
            }
            assert!(all.keys().all(|k| expected.contains_key(k)));
            // A page of a range is the first rows of the whole range.
            let page = range(&runs, &stored, Index::Txs, 3, &[0x40], &[0xff; 5], 7).unwrap();
            let whole: Vec<_> = all
                .iter()
                .filter(|(k, _)| k.as_slice() >= [0x40].as_slice())
                .take(7)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(page, whole);
            // No other slice or index sees them.
            assert_eq!(
                get(
                    &runs,
                    &stored,
                    Index::Log,
                    3,
                    &key(batch.first().copied().unwrap_or(0))
                )
                .unwrap(),
                None
            );
            let total = stored.rows();
            assert!(
                total <= model.len() as u64,
                "{total} rows for {}",
                model.len()
            );
        }
        assert!(max_runs <= 24, "{max_runs} runs at most");
    }

    /// Writes batches of changes (`None`: removed) to one slice of the state table, and
    /// checks after each that its rows, newest first and removals left out, are the map's.
    fn check_state_against_model(batches: &[Vec<(u16, Option<u8>)>]) {
        let db = db();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut most_runs = 0;
        for batch in batches {
            let changes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = batch
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_be_bytes().to_vec(),
                        v.map(|v| vec![v; usize::from(v % 5)]),
                    )
                })
                .collect();
            let rows: Vec<(Vec<u8>, Vec<u8>)> = changes
                .iter()
                .map(|(k, v)| (k.clone(), state_value(v.as_deref())))
                .collect();
            // No `keep`: the state table forgets removals as it merges, by itself.
            let set = append_committed(&db, Index::State, 5, &rows, &|_, _| true);
            most_runs = most_runs.max(set.run_count());
            for (k, v) in changes {
                match v {
                    Some(v) => model.insert(k, v),
                    None => model.remove(&k),
                };
            }
            let r = db.begin_read().unwrap();
            let runs = r.open_table(RUNS).unwrap();
            let stored = load(&r.open_table(RUN_SETS).unwrap(), Index::State, 5).unwrap();
            assert_eq!(stored, set);
            let now: BTreeMap<Vec<u8>, Vec<u8>> = all(&runs, &stored, Index::State, 5)
                .unwrap()
                .into_iter()
                .filter_map(|(k, v)| state_entry(&v).unwrap().map(|v| (k, v.to_vec())))
                .collect();
            assert_eq!(now, model);
            // What is stored is bounded by the keys there can be, not by the changes made.
            assert!(
                stored.rows() <= 4 * 3_000,
                "{} rows stored for {} live",
                stored.rows(),
                model.len()
            );
        }
        assert!(most_runs <= 40, "{most_runs} runs at most");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn the_state_table_reads_as_its_changes_say(
            batches in prop::collection::vec(
                prop::collection::vec((0u16..3_000, prop::option::weighted(0.8, any::<u8>())), 0..1_500),
                1..30,
            ),
        ) {
            check_state_against_model(&batches);
        }

        #[test]
        fn reads_agree_with_a_map_whatever_the_batches(
            batches in prop::collection::vec(prop::collection::vec(0u32..200_000, 0..2_000), 1..30),
            drop_one in prop::option::of(0u32..200_000),
        ) {
            check_against_model(&batches, drop_one);
        }
    }

    /// What pruning relies on: rows that `keep` no longer wants (here, those of batches
    /// older than a window, as a pruned block's transactions) leave as merges pass over
    /// them, so a slice whose rows all expire comes down to a bounded multiple of its window,
    /// even where the window begins long after the first rows (pruning turned on late: the
    /// runs made before are larger than any merge of the window makes), and every row still
    /// kept is found.
    #[test]
    fn rows_no_longer_kept_leave_as_runs_merge_and_the_slice_stays_bounded() {
        const BATCH: u32 = 200;
        const WINDOW: u32 = 8;
        const BATCHES: u32 = 1_000;
        // Every row is kept until then: 60,000 rows, the largest run 51,200.
        const WINDOW_FROM: u32 = 300;
        let db = db();
        let first_kept = std::cell::Cell::new(0u32);
        let batch_of = |value: &[u8]| value.try_into().map(u32::from_be_bytes).ok();
        let keep = |_: &[u8], value: &[u8]| batch_of(value).is_some_and(|b| b >= first_kept.get());
        let mut most_since = 0;
        let mut set = RunSet::default();
        for batch in 0..BATCHES {
            if batch >= WINDOW_FROM {
                first_kept.set(batch - WINDOW);
            }
            let mut rows: Vec<(Vec<u8>, Vec<u8>)> = (0..BATCH)
                .map(|i| (key(batch * BATCH + i), batch.to_be_bytes().to_vec()))
                .collect();
            rows.sort();
            set = append_committed(&db, Index::Txs, 5, &rows, &keep);
            if batch >= WINDOW_FROM + 100 {
                most_since = most_since.max(set.rows());
            }
            if batch % 50 == 49 {
                let r = db.begin_read().unwrap();
                let runs = r.open_table(RUNS).unwrap();
                for n in (first_kept.get() * BATCH..=batch * BATCH + BATCH - 1).step_by(13) {
                    let found = get(&runs, &set, Index::Txs, 5, &key(n)).unwrap();
                    assert_eq!(found, Some((n / BATCH).to_be_bytes().to_vec()), "row {n}");
                }
            }
        }
        let window = u64::from(WINDOW * BATCH);
        assert!(
            most_since <= 6 * window,
            "{most_since} rows at most for a window of {window} once it began, of {} written \
             and {} before it began",
            BATCHES * BATCH,
            WINDOW_FROM * BATCH
        );
        // What is left of the expired rows is what runs not merged since hold.
        let r = db.begin_read().unwrap();
        let all = range(
            &r.open_table(RUNS).unwrap(),
            &set,
            Index::Txs,
            5,
            &[],
            &[0xff; 5],
            usize::MAX,
        )
        .unwrap();
        let expired = all
            .iter()
            .filter(|(_, v)| batch_of(v).is_some_and(|b| b < first_kept.get()))
            .count() as u64;
        assert_eq!(all.len() as u64, set.rows());
        assert!(expired <= 5 * window, "{expired} expired rows left");
    }

    #[test]
    fn only_the_transactions_index_merges_a_run_alone_and_one_a_level() {
        for index in Index::ALL {
            let mut set = RunSet::default();
            for rows in [10u64, 5_000, 70_000] {
                let id = set.new_id();
                set.runs.push(Run { id, rows });
            }
            set.merge_alone_above(index, 1);
            set.merge_alone_above(index, 1);
            set.merge_alone_above(index, 1);
            let lone: Vec<(u8, Vec<Run>)> = set
                .merges
                .iter()
                .map(|m| (m.level, m.sources.clone()))
                .collect();
            if index == Index::Txs {
                // The largest first, then the next; never one at or below the level given.
                let (large, middle) = (
                    Run {
                        id: 2,
                        rows: 70_000,
                    },
                    Run { id: 1, rows: 5_000 },
                );
                assert_eq!(
                    lone,
                    vec![(large.level(), vec![large]), (middle.level(), vec![middle])]
                );
                assert_eq!(set.runs, vec![Run { id: 0, rows: 10 }]);
                assert_eq!(RunSet::from_bytes(&set.to_bytes()).unwrap(), set);
            } else {
                assert!(lone.is_empty(), "{index:?}");
            }
        }
    }

    #[test]
    fn rows_out_of_order_are_refused_before_anything_is_written() {
        let db = db();
        let w = db.begin_write().unwrap();
        let mut runs = w.open_table(RUNS).unwrap();
        let mut sets = w.open_table(RUN_SETS).unwrap();
        for rows in [
            [
                (b"b".as_slice(), b"".as_slice()),
                (b"a".as_slice(), b"".as_slice()),
            ],
            [
                (b"a".as_slice(), b"".as_slice()),
                (b"a".as_slice(), b"".as_slice()),
            ],
        ] {
            let err = append(&mut runs, &mut sets, Index::Log, 0, rows, &|_, _| true).unwrap_err();
            assert!(err.to_string().contains("not sorted"), "{err}");
        }
        assert_eq!(runs.iter().unwrap().count(), 0);
        assert_eq!(load(&sets, Index::Log, 0).unwrap(), RunSet::default());
    }

    #[test]
    fn many_writes_keep_few_runs_and_write_each_row_a_few_times() {
        let db = db();
        let writes = 200u32;
        let per_write = 500u32;
        for w in 0..writes {
            let mut rows: Vec<(Vec<u8>, Vec<u8>)> = (0..per_write)
                .map(|i| (key(w * per_write + i), Vec::new()))
                .collect();
            rows.sort();
            let set = append_committed(&db, Index::Log, 0, &rows, &|_, _| true);
            assert!(set.run_count() <= 16, "write {w}: {} runs", set.run_count());
            assert_eq!(set.rows(), u64::from((w + 1) * per_write));
        }
        let r = db.begin_read().unwrap();
        let runs = r.open_table(RUNS).unwrap();
        let sets = r.open_table(RUN_SETS).unwrap();
        let set = load(&sets, Index::Log, 0).unwrap();
        let all = range(&runs, &set, Index::Log, 0, &[], &[0xff; 5], usize::MAX).unwrap();
        assert_eq!(all.len(), (writes * per_write) as usize);
    }

    /// Every row of slice 0 of `index`, as a reader of the committed `set` finds them.
    fn rows_of(db: &Database, set: &RunSet, index: Index) -> Vec<Row> {
        let r = db.begin_read().unwrap();
        let runs = r.open_table(RUNS).unwrap();
        range(&runs, set, index, 0, &[], &[0xff; 5], usize::MAX).unwrap()
    }

    /// Keys that rise with time (a log's subject ‖ leaf index, addresses a client numbers)
    /// put each run above the ones before it. Merges read their runs in key order, so they
    /// still move about a step a write, from whichever runs hold the lowest keys: the runs
    /// stay as few as with keys spread like hashes, and every row reads back.
    #[test]
    fn runs_of_rising_keys_merge_as_fast_as_runs_of_spread_keys() {
        const WRITES: u32 = 120;
        const PER_WRITE: u32 = 1_500;
        for index in [Index::Log, Index::State] {
            let mut most = Vec::new();
            for rising in [false, true] {
                let db = db();
                let mut peak = 0;
                let mut set = RunSet::default();
                for w in 0..WRITES {
                    let mut rows: Vec<Row> = (w * PER_WRITE..(w + 1) * PER_WRITE)
                        .map(|n| {
                            let k = if rising {
                                n.to_be_bytes().to_vec()
                            } else {
                                key(n)
                            };
                            (k, state_value(Some(&n.to_be_bytes())))
                        })
                        .collect();
                    rows.sort();
                    set = append_committed(&db, index, 0, &rows, &|_, _| true);
                    peak = peak.max(set.run_count());
                }
                let all = rows_of(&db, &set, index);
                assert_eq!(all.len(), (WRITES * PER_WRITE) as usize, "{index:?}");
                most.push(peak);
            }
            let [spread, rising] = most[..] else {
                unreachable!()
            };
            assert!(
                rising <= spread + 2,
                "{index:?}: at most {rising} runs with rising keys, {spread} with spread ones"
            );
            if index == Index::Log {
                assert!(spread <= 16, "{spread} runs");
            }
        }
    }

    /// Whatever runs a merge takes, a step that does not finish it moves a step of rows or
    /// more: here a state slice's merge of 32 runs, one large and the others of a few chunks
    /// each spanning most keys (a step counting the rows it read, not those below where it
    /// stops, moved a fraction of that and left the runs to pile up).
    #[test]
    fn a_step_moves_its_rows_from_many_small_runs_of_spread_keys() {
        let db = db();
        let mut written = 0u32;
        let mut write = |rows: u32| {
            let mut batch: Vec<Row> = (written..written + rows)
                .map(|n| (key(n), state_value(Some(&[1]))))
                .collect();
            batch.sort();
            written += rows;
            append_committed(&db, Index::State, 0, &batch, &|_, _| true)
        };
        let mut set = write(50_000);
        while set.merges.is_empty() {
            set = write(300);
        }
        let sources = set.merges.first().map_or(0, |m| m.sources.len());
        assert!(sources >= STATE_MAX_RUNS, "{sources} runs merged");
        let mut steps = 0;
        while let Some(merge) = set.merges.first().cloned() {
            set = write(300);
            match set.merges.first() {
                Some(now) if now.target.id == merge.target.id => {
                    let moved = now.target.rows - merge.target.rows;
                    assert!(moved >= MIN_STEP as u64, "a step moved {moved} rows");
                    steps += 1;
                }
                _ => break,
            }
        }
        assert!(steps > 3, "{steps} steps");
        assert_eq!(set.rows(), u64::from(written));
    }

    /// A merge moves about twice the rows a write adds, however many runs it takes, so that
    /// it is spread over the writes before its level's next merge: slices grow together, and
    /// merges done in a few writes fell in all of them at once.
    #[test]
    fn a_merge_moves_about_twice_the_rows_of_each_write_from_all_its_runs() {
        const PER_WRITE: u32 = 20_000;
        for index in [Index::Log, Index::State] {
            let db = db();
            let mut written = 0u32;
            let mut write = |rows: u32| {
                let mut batch: Vec<Row> = (written..written + rows)
                    .map(|n| (key(n), state_value(Some(&n.to_be_bytes()))))
                    .collect();
                batch.sort();
                written += rows;
                append_committed(&db, index, 0, &batch, &|_, _| true)
            };
            // A log slice merges its four runs of one level; a state slice merges its five
            // runs once those after the oldest hold as many rows as it.
            let (first, sources) = match index {
                Index::State => (4 * PER_WRITE, 5),
                _ => (PER_WRITE, 4),
            };
            let mut set = write(first);
            while set.merges.is_empty() {
                set = write(PER_WRITE);
            }
            let [merge] = set.merges.as_slice() else {
                panic!("{index:?}: one merge under way, not {:?}", set.merges);
            };
            assert_eq!(merge.sources.len(), sources, "{index:?}");
            let moved = merge.target.rows;
            let step = u64::from(2 * PER_WRITE);
            assert!(
                moved > step * 3 / 4 && moved <= step * 11 / 10,
                "{index:?}: the first step moved {moved} rows, for a step of {step}"
            );
            // The merge goes on with each write, and the slice reads as every write left it.
            while !set.merges.is_empty() {
                set = write(100);
            }
            assert_eq!(set.rows(), u64::from(written));
            assert_eq!(
                rows_of(&db, &set, index).len(),
                written as usize,
                "{index:?}"
            );
        }
    }
}
