//! Where the state tree's subtrees go when they leave memory: a file beside the ledger that
//! no other process sees.
//!
//! It is not the ledger's record of the state (the state table is, see `runs` and
//! `journal`); it only lets the state tree keep less in memory. It is created empty, and
//! unlinked at once, so nothing of it outlives the process or needs recovering after a
//! crash. Subtrees are appended and never rewritten in place: a subtree read back and
//! changed is appended again when it leaves memory the next time. Once most of a file is
//! such dead copies, the ledger starts a new one and the state tree moves what it still
//! holds there over, a few subtrees a block; the old file's space is freed when the last
//! state version that read from it is dropped.
//!
//! A subtree is `u32` length of what follows, `u32` entry count, then per entry its key
//! (32 bytes), value hash (32 bytes), `u32` value length and value bytes, all big-endian; a
//! group of subtrees' places (`SubtreeStore::put_bytes`) is `u32` length and the bytes the
//! tree gave. Reading is bounded by what was written; the state tree checks every subtree
//! and group it reads back against the hash it kept.

use secnet_contract::TreeStore;
use secnet_merkle::smt::{Entry, Placed, StoreError, SubtreeStore};
use sha2::{Digest as _, Sha256};
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

/// One spill file.
#[derive(Debug)]
pub(crate) struct Spill {
    file: File,
    /// Where it was created, for messages (the name is gone once created).
    path: PathBuf,
    /// Where the next subtree goes: the bytes written so far.
    end: Mutex<u64>,
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
    /// A new, empty spill file in `dir`, readable by this process only, already unlinked.
    pub(crate) fn create(dir: &Path) -> std::io::Result<Spill> {
        let (file, path) = unlinked_file(dir, "state-spill")?;
        Ok(Spill {
            file,
            path,
            end: Mutex::new(0),
        })
    }

    /// This file as the state tree's store.
    pub(crate) fn into_store(self: Arc<Self>) -> Arc<TreeStore> {
        self
    }

    /// Bytes written to it so far.
    pub(crate) fn written(&self) -> u64 {
        *self.end.lock().unwrap_or_else(PoisonError::into_inner)
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

    fn load(&self, location: u64) -> Vec<Entry<Arc<[u8]>>> {
        match self.read(location) {
            Ok(entries) => entries,
            Err(what) => self.stop(location, &what),
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

    fn load_bytes(&self, location: u64) -> Vec<u8> {
        match self.read_record(location) {
            Ok(bytes) => bytes,
            Err(what) => self.stop(location, &what),
        }
    }

    fn fail(&self, location: u64) -> ! {
        self.stop(location, "it does not hash to what was put there")
    }
}

impl Spill {
    /// Appends `bytes` (a record with its length first).
    fn append(&self, bytes: &[u8]) -> Result<Placed, StoreError> {
        // The place is taken under the lock and written outside it: a write that fails
        // gives its place back if nothing was placed after it (else it leaves a hole
        // nothing points to), so that a full disk does not make the file look fuller and
        // start a new one on the same disk.
        let location = {
            let mut end = self.end.lock().unwrap_or_else(PoisonError::into_inner);
            let location = *end;
            *end += bytes.len() as u64;
            location
        };
        if let Err(e) = self.file.write_all_at(bytes, location) {
            let mut end = self.end.lock().unwrap_or_else(PoisonError::into_inner);
            if *end == location + bytes.len() as u64 {
                *end = location;
            }
            return Err(StoreError(format!("{}: {e}", self.path.display())));
        }
        Ok(Placed {
            location,
            bytes: bytes.len() as u64,
        })
    }

    fn read(&self, location: u64) -> Result<Vec<Entry<Arc<[u8]>>>, String> {
        let bytes = self.read_record(location)?;
        decode(&bytes).ok_or_else(|| "its bytes do not decode".to_string())
    }

    /// The record at `location`, after its length: read only within what was written.
    fn read_record(&self, location: u64) -> Result<Vec<u8>, String> {
        let written = self.written();
        let mut head = [0u8; 4];
        if location.saturating_add(4) > written {
            return Err(format!("past the {written} bytes written"));
        }
        self.file
            .read_exact_at(&mut head, location)
            .map_err(|e| e.to_string())?;
        let size = u32::from_be_bytes(head) as usize;
        if size > MAX_SUBTREE_BYTES || location + 4 + size as u64 > written {
            return Err(format!(
                "a length of {size} bytes runs past what was written"
            ));
        }
        let mut bytes = vec![0u8; size];
        self.file
            .read_exact_at(&mut bytes, location + 4)
            .map_err(|e| e.to_string())?;
        Ok(bytes)
    }
}

/// A file in `dir` opened read-only, and its path: what a store cannot write to, as a full
/// disk would refuse it.
#[cfg(test)]
pub(crate) fn read_only_file(dir: &Path) -> (File, PathBuf) {
    let path = dir.join("read-only");
    std::fs::write(&path, b"").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (file, path)
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
        let (key, after) = rest.split_first_chunk::<32>()?;
        let (value_hash, after) = after.split_first_chunk::<32>()?;
        let (len, after) = after.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        let value = after.get(..len)?;
        // The tree checks keys and value hashes against the hash it kept; the value bytes
        // are checked here, against their hash.
        if <[u8; 32]>::from(Sha256::digest(value)) != *value_hash {
            return None;
        }
        entries.push((*key, *value_hash, Arc::from(value)));
        rest = after.get(len..)?;
    }
    rest.is_empty().then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u8, len: usize) -> Entry<Arc<[u8]>> {
        let value = vec![i; len];
        ([i; 32], Sha256::digest(&value).into(), Arc::from(value))
    }

    #[test]
    fn subtrees_read_back_as_put() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        // Unlinked at once: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let a = vec![entry(1, 0), entry(2, 100)];
        let b = vec![entry(3, 7), entry(4, 1), entry(5, 300)];
        let at_a = spill.put(&a).unwrap().location;
        let at_b = spill.put(&b).unwrap().location;
        assert_eq!(spill.load(at_b), b);
        assert_eq!(spill.load(at_a), a);
        assert_eq!(spill.written(), 2 * 8 + 5 * 68 + 408);
    }

    #[test]
    fn a_value_changed_on_disk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        let placed = spill.put(&[entry(1, 10), entry(2, 10)]).unwrap();
        assert_eq!(placed.bytes, spill.written());
        assert!(spill.read(placed.location).is_ok());
        // The last byte is the second entry's value's last byte.
        spill.file.write_all_at(&[9], placed.bytes - 1).unwrap();
        assert_eq!(
            spill.read(placed.location),
            Err("its bytes do not decode".to_string())
        );
    }

    #[test]
    fn a_write_that_fails_gives_its_place_back() {
        let dir = tempfile::tempdir().unwrap();
        let (file, path) = read_only_file(dir.path());
        let spill = Spill {
            file,
            path,
            end: Mutex::new(0),
        };
        assert!(spill.put(&[entry(1, 3), entry(2, 4)]).is_err());
        assert_eq!(spill.written(), 0);
        let at = spill.written();
        assert!(spill.put(&[entry(1, 3)]).is_err());
        assert!(spill.put_bytes(b"places of subtrees").is_err());
        assert_eq!(spill.written(), at);
    }

    #[test]
    fn records_of_bytes_read_back_as_put_beside_subtrees() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        let at_a = spill.put(&[entry(1, 3), entry(2, 4)]).unwrap().location;
        let group = spill.put_bytes(b"places of subtrees").unwrap();
        let empty = spill.put_bytes(&[]).unwrap();
        assert_eq!((group.bytes, empty.bytes), (4 + 18, 4));
        assert_eq!(spill.load_bytes(group.location), b"places of subtrees");
        assert!(spill.load_bytes(empty.location).is_empty());
        assert_eq!(spill.load(at_a), vec![entry(1, 3), entry(2, 4)]);
        // Bounded like a subtree: nothing past what was written is read.
        assert!(spill.read_record(spill.written()).is_err());
        assert!(spill.read_record(group.location + 1).is_err());
    }

    #[test]
    fn reads_are_bounded_by_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(dir.path()).unwrap();
        let at = spill.put(&[entry(1, 10), entry(2, 10)]).unwrap().location;
        assert!(spill.read(at + 1).is_err());
        assert!(spill.read(spill.written()).is_err());
        assert!(spill.read(u64::MAX - 2).is_err());
        // A count larger than the bytes could hold, a value running past the end, and bytes
        // left over are each refused.
        assert_eq!(decode(&u32::MAX.to_be_bytes()), None);
        let mut one = 1u32.to_be_bytes().to_vec();
        one.extend_from_slice(&[0u8; 32]);
        one.extend_from_slice(&Sha256::digest([9u8; 5]));
        one.extend_from_slice(&5u32.to_be_bytes());
        one.extend_from_slice(&[9u8; 4]);
        assert_eq!(decode(&one), None);
        one.push(9);
        assert_eq!(decode(&one).map(|e| e.len()), Some(1));
        one.push(0);
        assert_eq!(decode(&one), None);
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
