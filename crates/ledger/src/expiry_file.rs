//! Where the grants by expiry go when they leave memory (see
//! [`secnet_contract::ExpiryStore`]): a file beside the ledger that no other process sees.
//!
//! Like the spill file, it is not a record of anything: it is created empty and unlinked at
//! once, and the queue is rebuilt from the state's grants at the next start. The file is cut
//! into slots of [`EXPIRY_CHUNK_BYTES`], one chunk each; a slot the queue frees (its chunk
//! was read back, or retired) is given to the next chunk stored, so that the file is as
//! large as the most chunks stored at once: 40 to 80 bytes a grant (chunks are full where
//! grants' expiries arrive in order, at least half full elsewhere). The queue checks every
//! chunk it reads back against the hash it kept. A read that fails, or a chunk that does not
//! check, stops the validator: its next start rebuilds the queue.

use crate::spill::unlinked_file;
use secnet_contract::{EXPIRY_CHUNK_BYTES, ExpiryStore};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// A slot's bytes: one chunk at most.
const SLOT_BYTES: u64 = EXPIRY_CHUNK_BYTES as u64;

/// The file of the grants by expiry.
#[derive(Debug)]
pub(crate) struct ExpiryFile {
    file: File,
    /// Where it was created, for messages (the name is gone once created).
    path: PathBuf,
    slots: Mutex<Slots>,
}

/// The slots given and those free.
#[derive(Debug, Default)]
struct Slots {
    /// Slots the file has: every slot below is given or free.
    end: u64,
    free: Vec<u64>,
}

impl ExpiryFile {
    /// A new, empty file in `dir`, readable by this process only, already unlinked.
    pub(crate) fn create(dir: &Path) -> std::io::Result<ExpiryFile> {
        let (file, path) = unlinked_file(dir, "grant-expiries")?;
        Ok(ExpiryFile {
            file,
            path,
            slots: Mutex::new(Slots::default()),
        })
    }

    /// This file as the grants' store.
    pub(crate) fn into_store(self: Arc<Self>) -> Arc<dyn ExpiryStore> {
        self
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Slots given and not freed.
    #[cfg(test)]
    fn given(&self) -> u64 {
        let slots = self.slots();
        slots.end - slots.free.len() as u64
    }

    /// Stops the process: the queue cannot go on without the chunk in `slot`, and nothing
    /// durable is lost (the next start rebuilds it from the ledger).
    #[cold]
    fn stop(&self, slot: u64, what: &str) -> ! {
        let message = format!(
            "the grants by expiry cannot read back slot {slot} of {} ({what}); stopping: the \
             next start rebuilds them from the ledger",
            self.path.display()
        );
        tracing::error!("{message}");
        eprintln!("{message}");
        std::process::abort()
    }

    fn read(&self, slot: u64, len: usize) -> Result<Vec<u8>, String> {
        if slot >= self.slots().end || len as u64 > SLOT_BYTES {
            return Err(format!("{len} bytes of a slot the file does not have"));
        }
        let mut bytes = vec![0u8; len];
        self.file
            .read_exact_at(&mut bytes, slot * SLOT_BYTES)
            .map_err(|e| e.to_string())?;
        Ok(bytes)
    }
}

impl ExpiryStore for ExpiryFile {
    fn put(&self, bytes: &[u8]) -> std::io::Result<u64> {
        if bytes.len() as u64 > SLOT_BYTES {
            return Err(std::io::Error::other(format!(
                "a chunk of {} bytes is over a slot's {SLOT_BYTES}",
                bytes.len()
            )));
        }
        let slot = {
            let mut slots = self.slots();
            match slots.free.pop() {
                Some(slot) => slot,
                None => {
                    slots.end += 1;
                    slots.end - 1
                }
            }
        };
        // A slot whose write failed is free again: a full disk leaves the chunk in memory
        // and nothing pointing at the slot.
        self.file
            .write_all_at(bytes, slot * SLOT_BYTES)
            .map_err(|e| {
                self.free(slot);
                std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
            })?;
        Ok(slot)
    }

    fn load(&self, location: u64, len: usize) -> Vec<u8> {
        self.read(location, len)
            .unwrap_or_else(|what| self.stop(location, &what))
    }

    fn free(&self, location: u64) {
        self.slots().free.push(location);
    }

    fn fail(&self, location: u64) -> ! {
        self.stop(location, "it is not what was put there")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_read_back_as_put_and_freed_slots_are_given_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = ExpiryFile::create(dir.path()).unwrap();
        // Unlinked at once: nothing is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let a = vec![1u8; EXPIRY_CHUNK_BYTES];
        let b = vec![2u8; 40];
        let at_a = file.put(&a).unwrap();
        let at_b = file.put(&b).unwrap();
        assert_eq!(file.load(at_a, a.len()), a);
        assert_eq!(file.load(at_b, b.len()), b);
        assert_eq!(file.given(), 2);
        file.free(at_a);
        assert_eq!(file.given(), 1);
        let c = vec![3u8; 80];
        assert_eq!(file.put(&c).unwrap(), at_a);
        assert_eq!(file.load(at_a, c.len()), c);
        assert_eq!(file.load(at_b, b.len()), b);
        assert_eq!(file.slots().end, 2);
    }

    #[test]
    fn reads_and_writes_are_bounded_by_a_slot() {
        let dir = tempfile::tempdir().unwrap();
        let file = ExpiryFile::create(dir.path()).unwrap();
        assert!(file.put(&vec![0u8; EXPIRY_CHUNK_BYTES + 1]).is_err());
        assert_eq!(file.given(), 0);
        let at = file.put(&[7u8; 40]).unwrap();
        assert!(file.read(at + 1, 40).is_err());
        assert!(file.read(at, EXPIRY_CHUNK_BYTES + 1).is_err());
        assert!(file.read(u64::MAX, 40).is_err());
        assert_eq!(file.read(at, 40), Ok(vec![7u8; 40]));
    }

    #[test]
    fn a_write_that_fails_frees_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let (file, path) = crate::spill::read_only_file(dir.path());
        let file = ExpiryFile {
            file,
            path,
            slots: Mutex::new(Slots::default()),
        };
        assert!(file.put(&[1u8; 40]).is_err());
        assert!(file.put(&[1u8; 40]).is_err());
        assert_eq!(file.given(), 0);
        assert_eq!(file.slots().end, 1);
    }
}
