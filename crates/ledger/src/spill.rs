//! Where the state tree's subtrees go when they leave memory: a file beside the ledger that
//! no other process sees.
//!
//! It is not the ledger's record of the state (the state table is, see `runs` and
//! `journal`); it only lets the state tree keep less in memory. It is created empty, and
//! unlinked at once, so nothing of it outlives the process or needs recovering after a
//! crash. Subtrees are appended and never rewritten in place: a subtree read back and
//! changed is appended again when it leaves memory the next time. Once most of a file is
//! such dead copies, the ledger starts a new one and the state tree moves what it still
//! holds there over, a few subtrees a block, each record checked and copied as it is. When
//! the last state version that read from the old file is dropped, the file is kept (still
//! unlinked, its pages still cached) as the ledger's [`Spare`], and the next new file is
//! that one, written over from its start: writing over
//! pages the kernel caches copies bytes, while appending to a new file first has the kernel
//! find memory for every page. On a virtual machine that hands the memory its guest frees
//! back to the host, that cost forty times the copy or more (155–250 MiB/s against about
//! 9 GiB/s on this project's machine), and a bounded state tree's writes to its file went
//! at about the former speed. Nothing of the old contents is read: reads stay within what
//! the file's new records put.
//!
//! Appends go through a buffer of [`WRITE_BUFFER_BYTES`], written to the file in one call
//! when the next record would not fit (reads of what is still in the buffer copy from it):
//! an eviction or a block's write-back puts thousands of small records, and one system call
//! each cost more than copying them. A record is read back with one call too, since the tree
//! keeps its size with its location.
//!
//! A subtree is `u32` length of what follows, `u32` entry count, then per entry its key
//! (32 bytes), its value's hash (32 bytes), `u32` value length and value bytes, all
//! big-endian; a group of subtrees' places (`SubtreeStore::put_bytes`) is `u32` length and
//! the bytes the tree gave. Reading is bounded by what was put, and every record read is
//! checked against its checksum (SipHash of the record under a key drawn at random by the
//! process, [`checksum`]), which the state tree keeps beside its location: a damaged
//! record, or one read from the wrong place, stops the process before anything is answered
//! from it. Nothing is hashed as a record is read (the
//! value hashes are stored beside the values, which the checksum covers): a read of one
//! entry (`SubtreeStore::find`) makes that entry alone; a subtree read back whole is rebuilt
//! by the tree and checked against the hash it kept too.

use secnet_contract::TreeStore;
use secnet_merkle::smt::{Entry, Placed, StoreError, SubtreeStore};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The largest subtree a spill file takes (one of [`secnet_contract::STORED_SUBTREE_ENTRIES`]
/// entries is a few kilobytes; one this large stays in memory instead).
pub(crate) const MAX_SUBTREE_BYTES: usize = 64 * 1024 * 1024;

/// Bytes a stored entry takes besides its value: key, value hash, value length.
const ENTRY_OVERHEAD: usize = 32 + 32 + 4;

/// The most bytes of records that wait in memory to be written to the file together.
pub(crate) const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// One spill file.
#[derive(Debug)]
pub(crate) struct Spill {
    file: File,
    /// Where it was created, for messages (the name is gone once created).
    path: PathBuf,
    /// The records from `on_file` on, in order, not written yet. Its lock is held by every
    /// write to the file.
    buffer: Mutex<Vec<u8>>,
    /// The bytes on the file: every record below this offset was written there. Changed only
    /// under the buffer's lock; read without it by reads of records on the file.
    on_file: AtomicU64,
    /// Where the file goes once this one is dropped, for the next to be written over.
    spare: Option<Arc<Spare>>,
}

/// A spill file no state version reads any more, kept to be written over by the next one
/// (see the module's documentation); at most one.
#[derive(Debug, Default)]
pub(crate) struct Spare(Mutex<Option<(File, PathBuf)>>);

impl Spare {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<(File, PathBuf)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let Some(spare) = &self.spare else {
            return;
        };
        // The descriptor is duplicated, which keeps the unlinked file and its cached pages
        // (if that fails, the file is simply closed, as it would be without a spare). A
        // spare retired before is closed, outside the lock: the file retired last was
        // written last.
        if let Ok(file) = self.file.try_clone() {
            let older = spare.slot().replace((file, self.path.clone()));
            drop(older);
        }
    }
}

/// Files created by this process, for unique names.
static CREATED: AtomicU64 = AtomicU64::new(0);

/// A new, empty file in `dir` named after `name`, readable and writable by this process
/// only, already unlinked; and the path it had. A name a crashed process left behind (a
/// restart may get its process id) is passed over.
pub(crate) fn unlinked_file(dir: &Path, name: &str) -> std::io::Result<(File, PathBuf)> {
    let mut tries = 0;
    loop {
        let n = CREATED.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{name}-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok((file, path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 1_000 => {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

impl Spill {
    /// A new, empty spill file in `dir`, readable by this process only, already unlinked,
    /// closed when dropped.
    #[cfg(test)]
    pub(crate) fn create(dir: &Path) -> std::io::Result<Spill> {
        let (file, path) = unlinked_file(dir, "state-spill")?;
        Ok(Spill::over(file, path, None))
    }

    /// An empty spill file: the one `spare` holds, written over from its start, or a new one
    /// in `dir` (readable by this process only, already unlinked); it goes to `spare` once
    /// dropped. A spare longer than `keep_bytes` (the bound at which the file this one
    /// replaces was replaced) is cut to that first, so the disk does not keep what a larger
    /// state once needed; one that cannot be cut is closed, and a new file made.
    pub(crate) fn create_over(
        dir: &Path,
        spare: &Arc<Spare>,
        keep_bytes: u64,
    ) -> std::io::Result<Spill> {
        // A spare that cannot be cut is closed, and a new file made (outside the lock).
        let taken = spare.slot().take();
        let taken = taken.filter(|(file, _)| {
            file.metadata().is_ok_and(|m| m.len() <= keep_bytes) || file.set_len(keep_bytes).is_ok()
        });
        let (file, path) = match taken {
            Some(kept) => kept,
            None => unlinked_file(dir, "state-spill")?,
        };
        Ok(Spill::over(file, path, Some(Arc::clone(spare))))
    }

    fn over(file: File, path: PathBuf, spare: Option<Arc<Spare>>) -> Spill {
        Spill {
            file,
            path,
            buffer: Mutex::new(Vec::new()),
            on_file: AtomicU64::new(0),
            spare,
        }
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where the next record goes: the bytes put so far, given the buffer's guard.
    fn end(&self, buffer: &[u8]) -> u64 {
        self.on_file.load(Ordering::Acquire) + buffer.len() as u64
    }

    /// This file as the state tree's store.
    pub(crate) fn into_store(self: Arc<Self>) -> Arc<TreeStore> {
        self
    }

    /// Bytes put in it so far (some of them perhaps still waiting in its buffer).
    pub(crate) fn written(&self) -> u64 {
        self.end(&self.buffer())
    }

    /// Stops the process: the state tree cannot go on without the subtree at `location`,
    /// and nothing durable is lost (the next start rebuilds the tree from the ledger).
    #[cold]
    fn stop(&self, location: u64, what: &str) -> ! {
        let message = format!(
            "the state tree cannot read back the subtree at {location} of its spill file {} \
             ({what}); stopping: the next start rebuilds the tree from the ledger",
            self.path.display()
        );
        tracing::error!("{message}");
        eprintln!("{message}");
        std::process::abort()
    }
}

impl SubtreeStore<Arc<[u8]>> for Spill {
    fn put(&self, entries: &[Entry<Arc<[u8]>>]) -> Result<Placed, StoreError> {
        let size = 4 + entries
            .iter()
            .map(|(_, _, value)| ENTRY_OVERHEAD + value.len())
            .sum::<usize>();
        if size > MAX_SUBTREE_BYTES {
            return Err(StoreError(format!(
                "a subtree of {size} bytes is over the {MAX_SUBTREE_BYTES} a spill file takes"
            )));
        }
        let mut bytes = Vec::with_capacity(4 + size);
        bytes.extend_from_slice(&(size as u32).to_be_bytes());
        bytes.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for (key, value_hash, value) in entries {
            bytes.extend_from_slice(key);
            bytes.extend_from_slice(value_hash);
            bytes.extend_from_slice(&(value.len() as u32).to_be_bytes());
            bytes.extend_from_slice(value);
        }
        self.append(&bytes)
    }

    fn load(&self, at: Placed) -> Vec<Entry<Arc<[u8]>>> {
        match self.read(at) {
            Ok(entries) => entries,
            Err(what) => self.stop(at.location, &what),
        }
    }

    fn find(&self, at: Placed, key: &[u8; 32]) -> Option<Entry<Arc<[u8]>>> {
        let found = self
            .read_record(at)
            .and_then(|record| find(record.get(4..).unwrap_or_default(), key));
        match found {
            Ok(entry) => entry,
            Err(what) => self.stop(at.location, &what),
        }
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<Placed, StoreError> {
        if bytes.len() > MAX_SUBTREE_BYTES {
            return Err(StoreError(format!(
                "a record of {} bytes is over the {MAX_SUBTREE_BYTES} a spill file takes",
                bytes.len()
            )));
        }
        let mut record = Vec::with_capacity(4 + bytes.len());
        record.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        record.extend_from_slice(bytes);
        self.append(&record)
    }

    fn load_bytes(&self, at: Placed) -> Vec<u8> {
        match self.read_record(at) {
            Ok(mut record) => {
                record.drain(..4);
                record
            }
            Err(what) => self.stop(at.location, &what),
        }
    }

    fn record(&self, at: Placed) -> Vec<u8> {
        match self.read_record(at) {
            Ok(record) => record,
            Err(what) => self.stop(at.location, &what),
        }
    }

    fn put_record(&self, record: &[u8]) -> Result<Placed, StoreError> {
        let length = record
            .first_chunk::<4>()
            .map(|head| u32::from_be_bytes(*head) as usize);
        if length.is_none_or(|length| length > MAX_SUBTREE_BYTES || length + 4 != record.len()) {
            return Err(StoreError(format!(
                "{} bytes are not a record of a spill file (its length, then at most \
                 {MAX_SUBTREE_BYTES} bytes)",
                record.len()
            )));
        }
        self.append(record)
    }

    fn fail(&self, location: u64) -> ! {
        self.stop(
            location,
            "what it holds does not decode as put, or does not hash to what was put",
        )
    }

    fn prefetch(&self, at: &[Placed]) {
        read_ahead(&self.file, self.on_file.load(Ordering::Acquire), at);
    }
}

impl Spill {
    /// Appends `bytes` (a record with its length first): into the buffer, which is first
    /// written to the file if the record would not fit beside what waits there.
    ///
    /// A write that fails refuses this record and keeps the buffer, which still answers
    /// reads: nothing placed is lost, and the next append tries the write again. So a full
    /// disk refuses new records (the tree keeps those subtrees in memory) without the file
    /// looking fuller than what it holds.
    fn append(&self, bytes: &[u8]) -> Result<Placed, StoreError> {
        let mut buffer = self.buffer();
        if buffer.len() + bytes.len() > WRITE_BUFFER_BYTES {
            self.write_buffer(&mut buffer)?;
        }
        let location = self.end(&buffer);
        if bytes.len() > WRITE_BUFFER_BYTES {
            self.write_at_end(bytes)?;
        } else {
            if buffer.capacity() == 0 {
                buffer.reserve_exact(WRITE_BUFFER_BYTES);
            }
            buffer.extend_from_slice(bytes);
        }
        Ok(Placed {
            location,
            bytes: bytes.len() as u64,
            check: checksum(bytes),
        })
    }

    /// Writes what waits in `buffer` (this file's, its guard held) to the file.
    fn write_buffer(&self, buffer: &mut Vec<u8>) -> Result<(), StoreError> {
        if buffer.is_empty() {
            return Ok(());
        }
        self.write_at_end(buffer)?;
        buffer.clear();
        Ok(())
    }

    /// Writes `bytes` where the file ends and moves its end past them (with the buffer's
    /// guard held).
    fn write_at_end(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let at = self.on_file.load(Ordering::Acquire);
        self.file
            .write_all_at(bytes, at)
            .map_err(|e| StoreError(format!("{}: {e}", self.path.display())))?;
        self.on_file
            .store(at + bytes.len() as u64, Ordering::Release);
        Ok(())
    }

    fn read(&self, at: Placed) -> Result<Vec<Entry<Arc<[u8]>>>, String> {
        let record = self.read_record(at)?;
        record
            .get(4..)
            .and_then(decode)
            .ok_or_else(|| "its bytes do not decode".to_string())
    }

    /// The record `at` names, length first, read in one call: only within what was put, and
    /// only if its length is the one the record begins with.
    fn read_record(&self, at: Placed) -> Result<Vec<u8>, String> {
        let size = usize::try_from(at.bytes)
            .ok()
            .filter(|size| (4..=MAX_SUBTREE_BYTES + 4).contains(size))
            .ok_or_else(|| format!("a record of {} bytes is out of bounds", at.bytes))?;
        let mut record = vec![0u8; size];
        let end = at.location.checked_add(at.bytes);
        // A record wholly on the file is read without the lock (it is never written again);
        // one past it is looked for in the buffer, under the lock, and read from the file
        // if the buffer was written meanwhile.
        let on_file = end.is_some_and(|end| end <= self.on_file.load(Ordering::Acquire)) || {
            let buffer = self.buffer();
            let on_file = self.on_file.load(Ordering::Acquire);
            let put = self.end(&buffer);
            if end.is_none_or(|last| last > put) {
                return Err(format!("{} bytes there run past the {put} put", at.bytes));
            }
            if at.location >= on_file {
                let from = (at.location - on_file) as usize;
                let buffered = buffer
                    .get(from..from + size)
                    .ok_or_else(|| format!("{} bytes there run past the buffer", at.bytes))?;
                record.copy_from_slice(buffered);
                false
            } else if end.is_some_and(|end| end > on_file) {
                // A record never straddles the file's end and the buffer.
                return Err(format!(
                    "{} bytes there run past the {on_file} on the file",
                    at.bytes
                ));
            } else {
                true
            }
        };
        if on_file {
            self.file
                .read_exact_at(&mut record, at.location)
                .map_err(|e| e.to_string())?;
        }
        let head = record.first_chunk::<4>().copied().unwrap_or_default();
        let length = u32::from_be_bytes(head) as usize;
        if length + 4 != size {
            return Err(format!(
                "it begins with a length of {length} bytes, not the {} put",
                size - 4
            ));
        }
        if checksum(&record) != at.check {
            return Err("it does not match the checksum it was put with".to_string());
        }
        Ok(record)
    }
}

/// The checksum a record is read back against: the standard library's keyed hash (SipHash-1-3
/// as of this writing) under a key drawn at random when the process first puts a record
/// (the same for every spill file it makes, so a record copied to a new file keeps its
/// checksum). It catches damage, and a record changed on purpose by whoever can write the
/// file but not read this process's memory.
fn checksum(record: &[u8]) -> u64 {
    use std::hash::BuildHasher as _;
    static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(std::hash::RandomState::new)
        .hash_one(record)
}

/// Asks the kernel to read the pages that hold the records `at` (see [`page_runs`]). It
/// allocates the pages and queues the reads in the call, and returns without waiting for
/// them.
#[cfg(target_os = "linux")]
fn read_ahead(file: &File, on_file: u64, at: &[Placed]) {
    for (first, pages) in page_runs(on_file, at) {
        let Some(len) = std::num::NonZeroU64::new(pages * PAGE) else {
            continue;
        };
        // Only a hint: a refusal changes nothing, each record being read when it is needed.
        let _ = rustix::fs::fadvise(file, first * PAGE, Some(len), rustix::fs::Advice::WillNeed);
    }
}

/// The page size read-ahead counts in.
const PAGE: u64 = 4096;

/// The pages that hold the records `at` wholly on the file (below `on_file`), as runs of
/// adjacent pages, in order: (first page, pages).
fn page_runs(on_file: u64, at: &[Placed]) -> Vec<(u64, u64)> {
    let mut pages: Vec<(u64, u64)> = at
        .iter()
        .filter_map(|p| {
            let end = p.location.checked_add(p.bytes)?;
            (p.bytes > 0 && end <= on_file).then_some((p.location / PAGE, end.div_ceil(PAGE)))
        })
        .collect();
    pages.sort_unstable();
    let mut runs: Vec<(u64, u64)> = Vec::with_capacity(pages.len());
    for (first, end) in pages {
        match runs.last_mut() {
            Some(run) if first <= run.1 => run.1 = run.1.max(end),
            _ => runs.push((first, end)),
        }
    }
    runs.into_iter()
        .map(|(first, end)| (first, end - first))
        .collect()
}

#[cfg(not(target_os = "linux"))]
fn read_ahead(_: &File, _: u64, _: &[Placed]) {}

/// A file in `dir` opened read-only, and its path: what a store cannot write to, as a full
/// disk would refuse it.
#[cfg(test)]
pub(crate) fn read_only_file(dir: &Path) -> (File, PathBuf) {
    let path = dir.join("read-only");
    std::fs::write(&path, b"").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    read_only_file_of(dir)
}

/// The file `read-only` in `dir`, opened read-only, and its path.
#[cfg(test)]
pub(crate) fn read_only_file_of(dir: &Path) -> (File, PathBuf) {
    let path = dir.join("read-only");
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (file, path)
}

/// The entry under `key` in a subtree's bytes (after its length), if it holds one; only that
/// entry's value is copied. Keys are in order, so the search stops at the first key past
/// `key`; what it passes over must decode.
fn find(bytes: &[u8], key: &[u8; 32]) -> Result<Option<Entry<Arc<[u8]>>>, String> {
    let undecodable = || "its bytes do not decode".to_string();
    let (count, mut rest) = bytes.split_first_chunk::<4>().ok_or_else(undecodable)?;
    for _ in 0..u32::from_be_bytes(*count) {
        let ((at, value_hash, value), after) = entry_in(rest).ok_or_else(undecodable)?;
        match at.cmp(key) {
            std::cmp::Ordering::Less => rest = after,
            std::cmp::Ordering::Equal => return Ok(Some((*at, *value_hash, Arc::from(value)))),
            std::cmp::Ordering::Greater => return Ok(None),
        }
    }
    Ok(None)
}

/// The entry `bytes` begin with (key, value hash, value), and what follows it.
#[expect(clippy::type_complexity, reason = "an entry's three parts, borrowed")]
fn entry_in(bytes: &[u8]) -> Option<((&[u8; 32], &[u8; 32], &[u8]), &[u8])> {
    let (key, after) = bytes.split_first_chunk::<32>()?;
    let (value_hash, after) = after.split_first_chunk::<32>()?;
    let (len, after) = after.split_first_chunk::<4>()?;
    let (value, after) = after.split_at_checked(u32::from_be_bytes(*len) as usize)?;
    Some(((key, value_hash, value), after))
}

/// The entries of a subtree's bytes (after its length).
fn decode(bytes: &[u8]) -> Option<Vec<Entry<Arc<[u8]>>>> {
    let (count, mut rest) = bytes.split_first_chunk::<4>()?;
    let count = u32::from_be_bytes(*count) as usize;
    // Every entry takes at least its overhead: a count the bytes cannot hold is refused
    // before anything is allocated for it.
    if count > rest.len() / ENTRY_OVERHEAD {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let ((key, value_hash, value), after) = entry_in(rest)?;
        // The checksum covered the values; the tree checks keys and value hashes against the
        // hash it kept.
        entries.push((*key, *value_hash, Arc::from(value)));
        rest = after;
    }
    rest.is_empty().then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    /// A place of `bytes` at `location`, with no record's checksum.
    fn placed(location: u64, bytes: u64) -> Placed {
        Placed {
            location,
            bytes,
            check: 0,
        }
    }

    fn entry(i: u8, len: usize) -> Entry<Arc<[u8]>> {
        let value = vec![i; len];
        ([i; 32], Sha256::digest(&value).into(), Arc::from(value))
    }

    /// A subtree of `count` entries of `len`-byte values, keys from `first` on.
    fn subtree(first: u8, count: u8, len: usize) -> Vec<Entry<Arc<[u8]>>> {
        (first..first + count).map(|i| entry(i, len)).collect()
    }

    #[test]
    fn subtrees_read_back_as_put() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        // Unlinked at once: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let a = vec![entry(1, 0), entry(2, 100)];
        let b = vec![entry(3, 7), entry(4, 1), entry(5, 300)];
        let at_a = spill.put(&a).unwrap();
        let at_b = spill.put(&b).unwrap();
        assert_eq!(spill.load(at_b), b);
        assert_eq!(spill.load(at_a), a);
        assert_eq!(spill.written(), 2 * 8 + 5 * 68 + 408);
    }

    #[test]
    fn hinted_records_are_read_as_runs_of_the_pages_that_hold_them() {
        let on_file = 100 * PAGE;
        let runs = page_runs(
            on_file,
            &[
                // Out of order; two in one page, one across two pages, and pages adjacent
                // to those: one run each.
                placed(10 * PAGE + 100, 50),
                placed(3 * PAGE + 10, 20),
                placed(3 * PAGE + 4000, 200),
                placed(5 * PAGE, PAGE),
                placed(11 * PAGE, 1),
                // Ending at the file's end is on it; past it, empty or overflowing are not.
                placed(on_file - 10, 10),
                placed(on_file - 10, 11),
                placed(on_file, 1),
                placed(20 * PAGE, 0),
                placed(u64::MAX - 2, 4),
            ],
        );
        assert_eq!(runs, vec![(3, 3), (10, 2), (99, 1)]);
        assert!(page_runs(0, &[placed(0, 1)]).is_empty());
    }

    #[test]
    fn hints_of_any_place_change_nothing_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        let a = subtree(1, 3, 5_000);
        let at_a = spill.put(&a).unwrap();
        spill.write_buffer(&mut spill.buffer()).unwrap();
        let b = subtree(10, 2, 10);
        let at_b = spill.put(&b).unwrap();
        // On the file, in the buffer, past the end, overflowing, empty: only a hint.
        spill.prefetch(&[
            at_b,
            at_a,
            at_a,
            placed(at_a.location + 1, 9_000),
            placed(u64::MAX - 2, 4),
            placed(0, u64::MAX),
            placed(0, 0),
        ]);
        assert_eq!(spill.load(at_a), a);
        assert_eq!(spill.load(at_b), b);
    }

    #[test]
    fn records_read_back_alike_from_the_buffer_and_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        // About 20 KiB a subtree: the buffer is written to the file every fifty or so, and
        // one larger than the buffer goes to the file at once.
        let mut put = Vec::new();
        for n in 0..200u8 {
            let entries = subtree(n, 2, 10_000 + usize::from(n));
            put.push((spill.put(&entries).unwrap(), entries));
            if n == 120 {
                let large = subtree(n, 2, WRITE_BUFFER_BYTES / 2 + 1);
                put.push((spill.put(&large).unwrap(), large));
            }
        }
        let group = spill.put_bytes(b"places of subtrees").unwrap();
        let (on_file, waiting) = {
            let buffer = spill.buffer();
            (spill.on_file.load(Ordering::Acquire), buffer.len() as u64)
        };
        assert!(on_file > 3 * WRITE_BUFFER_BYTES as u64, "{on_file}");
        assert!(
            waiting > 0 && waiting <= WRITE_BUFFER_BYTES as u64,
            "{waiting}"
        );
        assert_eq!(spill.written(), on_file + waiting);
        for (at, entries) in put.iter().rev() {
            assert_eq!(spill.load(*at), *entries);
        }
        assert_eq!(spill.load_bytes(group), b"places of subtrees");
        // What the file holds is what was put, every record where it was placed.
        let mut file = vec![0u8; on_file as usize];
        spill.file.read_exact_at(&mut file, 0).unwrap();
        let mut records = 0;
        for (at, entries) in put.iter().filter(|(at, _)| at.location < on_file) {
            let from = at.location as usize;
            let record = &file[from..from + at.bytes as usize];
            assert_eq!(decode(&record[4..]).as_ref(), Some(entries));
            records += 1;
        }
        assert!(records > 150, "{records}");
        // A record straddling the file's end and the buffer is not one.
        let straddling = Placed {
            location: on_file - 8,
            bytes: 16,
            check: 0,
        };
        assert!(
            spill
                .read_record(straddling)
                .unwrap_err()
                .contains("on the file")
        );
    }

    #[test]
    fn a_retired_file_is_written_over_by_the_next_and_its_old_records_are_never_read() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let spare = Arc::new(Spare::default());
        let first = Spill::create_over(dir.path(), &spare, u64::MAX).unwrap();
        let old = first.put(&subtree(1, 3, 5_000)).unwrap();
        first.write_buffer(&mut first.buffer()).unwrap();
        let inode = |spill: &Spill| spill.file.metadata().unwrap().ino();
        let length = |spill: &Spill| spill.file.metadata().unwrap().len();
        let first_inode = inode(&first);
        // While the first is read, the next is a file of its own.
        let second = Spill::create_over(dir.path(), &spare, u64::MAX).unwrap();
        assert_ne!(inode(&second), first_inode);
        drop(first);
        // Once dropped, it is the next file, empty to its readers though its bytes remain.
        let third = Spill::create_over(dir.path(), &spare, u64::MAX).unwrap();
        assert_eq!(inode(&third), first_inode);
        assert_eq!(length(&third), old.bytes);
        assert_eq!(third.written(), 0);
        assert!(
            third
                .read_record(old)
                .unwrap_err()
                .contains("past the 0 put")
        );
        let small = subtree(7, 2, 10);
        let at = third.put(&small).unwrap();
        assert_eq!(at.location, 0);
        third.write_buffer(&mut third.buffer()).unwrap();
        assert_eq!(third.load(at), small);
        // Past what the new records put, the old bytes are not read either.
        let beyond = Placed {
            location: at.bytes,
            bytes: 100,
            check: 0,
        };
        assert!(third.read_record(beyond).is_err());
        // One spare at most, the last retired: the third (the first's file), not the second.
        drop(second);
        drop(third);
        let fourth = Spill::create_over(dir.path(), &spare, 1_000).unwrap();
        assert_eq!(inode(&fourth), first_inode);
        // Cut to what the next file is expected to need.
        assert_eq!(length(&fourth), 1_000);
        drop(fourth);
        assert!(spare.slot().is_some());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_spare_that_cannot_be_cut_is_closed_and_a_new_file_made() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("read-only"), [7u8; 4096]).unwrap();
        let (file, path) = read_only_file_of(files.path());
        let inode = file.metadata().unwrap().ino();
        let spare = Arc::new(Spare::default());
        *spare.slot() = Some((file, path));
        let spill = Spill::create_over(dir.path(), &spare, 1).unwrap();
        assert_ne!(spill.file.metadata().unwrap().ino(), inode);
        assert_eq!(spill.file.metadata().unwrap().len(), 0);
        assert!(spare.slot().is_none());
        let at = spill.put(&subtree(1, 2, 10)).unwrap();
        assert_eq!(spill.load(at), subtree(1, 2, 10));
    }

    #[test]
    fn a_byte_changed_on_disk_is_refused_whole_or_for_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        let put = [entry(1, 10), entry(2, 10)];
        let placed = spill.put(&put).unwrap();
        assert_eq!(placed.bytes, spill.written());
        assert_eq!(spill.read(placed).unwrap(), put);
        spill.write_buffer(&mut spill.buffer()).unwrap();
        // The second entry's value's last byte, its hash's first, its key's first: the
        // checksum covers what the tree's hash would not (a value beside its stored hash).
        for at in [placed.bytes - 1, 8 + 78 + 32, 8 + 78] {
            let mut byte = [0u8];
            spill.file.read_exact_at(&mut byte, at).unwrap();
            spill.file.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
            assert!(spill.read(placed).unwrap_err().contains("checksum"));
            spill.file.write_all_at(&byte, at).unwrap();
            assert_eq!(spill.read(placed).unwrap(), put);
        }
    }

    #[test]
    fn a_write_that_fails_refuses_the_record_and_keeps_what_waits() {
        let dir = tempfile::tempdir().unwrap();
        let (file, path) = read_only_file(dir.path());
        let spill = Spill::over(file, path, None);
        // With nothing waiting, a record larger than the buffer goes to the file, and is
        // refused there.
        assert!(spill.put(&subtree(5, 1, WRITE_BUFFER_BYTES + 1)).is_err());
        assert_eq!(spill.written(), 0);
        // What fits in the buffer is taken, and read back from it.
        let small = subtree(1, 2, 1_000);
        let at = spill.put(&small).unwrap();
        let before = spill.written();
        // A record that needs the buffer written first, or is larger than the buffer, or a
        // group's record then, is refused; nothing placed is lost, and nothing moved.
        assert!(spill.put(&subtree(3, 2, WRITE_BUFFER_BYTES / 2)).is_err());
        assert!(spill.put(&subtree(5, 1, WRITE_BUFFER_BYTES + 1)).is_err());
        assert!(spill.put_bytes(&vec![7u8; WRITE_BUFFER_BYTES]).is_err());
        assert_eq!(spill.written(), before);
        assert_eq!(spill.load(at), small);
        // A record that still fits is taken.
        let next = spill.put(&subtree(9, 2, 10)).unwrap();
        assert_eq!(next.location, before);
        assert_eq!(spill.load(next), subtree(9, 2, 10));
    }

    #[test]
    fn records_of_bytes_read_back_as_put_beside_subtrees() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        let at_a = spill.put(&[entry(1, 3), entry(2, 4)]).unwrap();
        let group = spill.put_bytes(b"places of subtrees").unwrap();
        let empty = spill.put_bytes(&[]).unwrap();
        assert_eq!((group.bytes, empty.bytes), (4 + 18, 4));
        assert_eq!(spill.load_bytes(group), b"places of subtrees");
        assert!(spill.load_bytes(empty).is_empty());
        assert_eq!(spill.load(at_a), vec![entry(1, 3), entry(2, 4)]);
    }

    #[test]
    fn records_copied_to_another_file_read_back_there_as_put() {
        let dir = tempfile::tempdir().unwrap();
        let old = Spill::create(dir.path()).unwrap();
        let new = Spill::create(dir.path()).unwrap();
        new.put_bytes(b"already there").unwrap();
        let entries = subtree(1, 3, 40);
        let at = old.put(&entries).unwrap();
        let group = old.put_bytes(b"places of subtrees").unwrap();
        // From the old file's buffer, then from the file itself.
        for flushed in [false, true] {
            if flushed {
                old.write_buffer(&mut old.buffer()).unwrap();
            }
            let copied = new.put_record(&old.record(at)).unwrap();
            assert_eq!(copied.bytes, at.bytes);
            assert_eq!(new.load(copied), entries);
            let copied = new.put_record(&old.record(group)).unwrap();
            assert_eq!(new.load_bytes(copied), b"places of subtrees");
        }
    }

    #[test]
    fn what_is_not_a_record_is_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        let record = spill.record(spill.put(&subtree(1, 2, 5)).unwrap());
        let written = spill.written();
        let mut longer = record.clone();
        longer.push(0);
        let mut oversized = vec![0u8; 4];
        oversized[..4].copy_from_slice(&(MAX_SUBTREE_BYTES as u32 + 1).to_be_bytes());
        oversized.resize(MAX_SUBTREE_BYTES + 5, 0);
        for bad in [
            &[][..],
            &[0, 0, 1][..],
            &record[..record.len() - 1],
            &longer[..],
            &oversized[..],
        ] {
            let refused = spill.put_record(bad).unwrap_err();
            assert!(refused.0.contains("not a record"), "{refused}");
        }
        assert_eq!(spill.written(), written, "nothing refused was put");
        assert_eq!(
            spill.put_record(&record).unwrap().bytes,
            record.len() as u64
        );
    }

    #[test]
    fn reads_are_bounded_by_what_was_put_and_by_the_length_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        let at = spill.put(&[entry(1, 10), entry(2, 10)]).unwrap();
        let group = spill.put_bytes(b"places").unwrap();
        for flushed in [false, true] {
            if flushed {
                spill.write_buffer(&mut spill.buffer()).unwrap();
            }
            let end = spill.written();
            let refused = |at: Placed| {
                let err = spill.read_record(at).unwrap_err();
                assert!(spill.read(at).is_err());
                err
            };
            // Past what was put, however far; a size that overflows or is not a record's.
            assert!(refused(placed(end, 4)).contains("run past"));
            assert!(refused(placed(group.location, group.bytes + 1)).contains("run past"));
            assert!(refused(placed(u64::MAX - 2, 4)).contains("run past"));
            assert!(refused(placed(0, 3)).contains("out of bounds"));
            assert!(refused(placed(0, u64::MAX)).contains("out of bounds"));
            // Inside what was put, but not where a record of that size begins.
            assert!(refused(placed(at.location + 1, at.bytes)).contains("begins with"));
            assert!(refused(placed(at.location, at.bytes - 1)).contains("begins with"));
            assert!(refused(placed(at.location, at.bytes + group.bytes)).contains("begins with"));
            assert_eq!(spill.load(at), vec![entry(1, 10), entry(2, 10)]);
        }
        // A count larger than the bytes could hold, a value running past the end, and bytes
        // left over are each refused.
        assert_eq!(decode(&u32::MAX.to_be_bytes()), None);
        let mut one = 1u32.to_be_bytes().to_vec();
        one.extend_from_slice(&[0u8; 64]);
        one.extend_from_slice(&5u32.to_be_bytes());
        one.extend_from_slice(&[9u8; 4]);
        assert_eq!(decode(&one), None);
        one.push(9);
        assert_eq!(decode(&one).map(|e| e.len()), Some(1));
        one.push(0);
        assert_eq!(decode(&one), None);
    }

    #[test]
    fn a_record_damaged_or_read_with_another_checksum_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        let a = subtree(1, 3, 40);
        let at = spill.put(&a).unwrap();
        let other = spill.put(&subtree(10, 3, 40)).unwrap();
        assert_eq!(at.bytes, other.bytes);
        spill.write_buffer(&mut spill.buffer()).unwrap();
        // The place and size of a record, with another record's checksum.
        let misplaced = Placed {
            check: other.check,
            ..at
        };
        assert!(
            spill
                .read_record(misplaced)
                .unwrap_err()
                .contains("checksum")
        );
        // One byte of a value changed on the file: the length still fits, the checksum not.
        let last = at.location + at.bytes - 1;
        let mut byte = [0u8];
        spill.file.read_exact_at(&mut byte, last).unwrap();
        spill.file.write_all_at(&[byte[0] ^ 1], last).unwrap();
        assert!(spill.read_record(at).unwrap_err().contains("checksum"));
        assert!(spill.read(at).is_err());
        assert_eq!(spill.load(other), subtree(10, 3, 40));
    }

    #[test]
    fn one_entry_is_found_as_a_whole_read_gives_it() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        let entries: Vec<_> = [2u8, 4, 6, 8]
            .iter()
            .map(|i| entry(*i, usize::from(*i) * 30))
            .collect();
        let at = spill.put(&entries).unwrap();
        for flushed in [false, true] {
            if flushed {
                spill.write_buffer(&mut spill.buffer()).unwrap();
            }
            for e in &entries {
                assert_eq!(spill.find(at, &e.0).as_ref(), Some(e));
            }
            // Before the first, between two, past the last.
            for absent in [1u8, 5, 9] {
                assert_eq!(spill.find(at, &[absent; 32]), None);
            }
        }
        // Bytes that run out before the key is reached do not decode.
        let mut cut = 2u32.to_be_bytes().to_vec();
        cut.extend_from_slice(&[1u8; 64]);
        cut.extend_from_slice(&3u32.to_be_bytes());
        cut.extend_from_slice(&[0u8; 3]);
        assert_eq!(find(&cut, &[1u8; 32]).map(|e| e.is_some()), Ok(true));
        assert!(find(&cut, &[2u8; 32]).is_err());
        assert!(find(&cut[..72], &[1u8; 32]).is_err());
    }

    #[test]
    fn a_subtree_over_the_bound_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        let big = vec![
            entry(1, MAX_SUBTREE_BYTES / 2),
            entry(2, MAX_SUBTREE_BYTES / 2),
        ];
        assert!(spill.put(&big).is_err());
        assert_eq!(spill.written(), 0);
    }
}
