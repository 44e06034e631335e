//! The state entries of a ledger opened with a bound on its state tree's memory, sorted on
//! disk into parts of the tree's key space, so that the tree is built one part after the
//! other and each part moves out of memory before the next is read
//! ([`secnet_contract::StateLoader`]): opening holds about one part of the state, not all
//! of it.
//!
//! Each part is a file beside the ledger, readable by this process only and unlinked at
//! once (nothing is left behind by a crash). An entry is its key's length (`u32`
//! big-endian), its key bytes, its value's length and its value bytes, as the state table
//! stores them.

use crate::error::LedgerError;
use crate::spill::unlinked_file;
use secnet_contract::{StateKey, StateValue};
use std::fs::File;
use std::io::{BufWriter, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

/// How many parts the key space is split into: each holds about 1/64 of the entries.
pub(crate) const PARTS: usize = 64;

/// The part of the tree's key space that `tree_key` is in: its first byte's top six bits.
fn part_of(tree_key: &[u8; 32]) -> usize {
    usize::from(tree_key[0]) * PARTS / 256
}

/// The first tree key of part `part`.
pub(crate) fn part_start(part: usize) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[0] = u8::try_from(part * 256 / PARTS).unwrap_or(u8::MAX);
    key
}

/// The entries of a state being opened, written part by part.
pub(crate) struct Parts {
    files: Vec<BufWriter<File>>,
    /// Entries written.
    len: usize,
}

fn io_error(what: &str, e: std::io::Error) -> LedgerError {
    LedgerError::Storage(format!("{what} a part of the state being opened: {e}"))
}

impl Parts {
    /// [`PARTS`] empty files in `dir`.
    pub(crate) fn new(dir: &Path) -> Result<Parts, LedgerError> {
        let files = (0..PARTS)
            .map(|_| {
                unlinked_file(dir, "state-part")
                    .map(|(file, _)| BufWriter::new(file))
                    .map_err(|e| io_error("cannot create a file for", e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Parts { files, len: 0 })
    }

    /// How many entries were written.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Writes the entry with key bytes `key` and value bytes `value` to its part.
    pub(crate) fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), LedgerError> {
        let part = part_of(&StateKey::tree_key_of(key).0);
        let file = self
            .files
            .get_mut(part)
            .ok_or_else(|| LedgerError::Storage(format!("no part {part}")))?;
        for bytes in [key, value] {
            let len = u32::try_from(bytes.len())
                .map_err(|_| LedgerError::Corrupt("a state entry of over 4 GiB".into()))?;
            file.write_all(&len.to_be_bytes())
                .and_then(|()| file.write_all(bytes))
                .map_err(|e| io_error("cannot write", e))?;
        }
        self.len += 1;
        Ok(())
    }

    /// Each part's entries, decoded, in order of the parts' key ranges; one part is read
    /// when the one before has been taken.
    pub(crate) fn into_parts(
        self,
    ) -> impl Iterator<Item = Result<Vec<(StateKey, StateValue)>, LedgerError>> {
        self.files.into_iter().map(|file| {
            let mut file = file
                .into_inner()
                .map_err(|e| io_error("cannot write", e.into_error()))?;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| io_error("cannot read", e))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| io_error("cannot read", e))?;
            decode(&bytes)
        })
    }
}

/// The entries of a part's bytes.
fn decode(mut bytes: &[u8]) -> Result<Vec<(StateKey, StateValue)>, LedgerError> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let key = StateKey::from_bytes(field(&mut bytes)?)?;
        let value = StateValue::from_bytes(&key, field(&mut bytes)?)?;
        entries.push((key, value));
    }
    Ok(entries)
}

/// The next length-prefixed field of `bytes`, which move past it.
fn field<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], LedgerError> {
    let short = || LedgerError::Corrupt("a part of the state being opened ends early".into());
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(short)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| short())?;
    let (field, rest) = rest.split_at_checked(len).ok_or_else(short)?;
    *bytes = rest;
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secnet_contract::Account;
    use secnet_types::AccountId;

    #[test]
    fn entries_come_back_by_part_in_key_order_of_the_parts() {
        let dir = tempfile::tempdir().unwrap();
        let mut parts = Parts::new(dir.path()).unwrap();
        // Nothing is left in the directory: the files are unlinked.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let entries: Vec<(StateKey, StateValue)> = (0..500u64)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&i.to_be_bytes());
                (
                    StateKey::Account(AccountId(id)),
                    StateValue::Account(Account {
                        balance: i,
                        ..Account::default()
                    }),
                )
            })
            .collect();
        for (k, v) in &entries {
            parts.push(&k.to_bytes(), &v.to_bytes()).unwrap();
        }
        let mut seen = 0;
        let mut last_part = None;
        for (part, got) in parts.into_parts().enumerate() {
            let got = got.unwrap();
            for (k, _) in &got {
                assert_eq!(part_of(&k.tree_key().0), part);
                assert!(k.tree_key().0 >= part_start(part));
            }
            seen += got.len();
            last_part = Some(part);
        }
        assert_eq!(seen, entries.len());
        assert_eq!(last_part, Some(PARTS - 1));
    }

    #[test]
    fn a_part_cut_short_is_refused() {
        let key = StateKey::LogHead.to_bytes();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(key.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&key);
        bytes.extend_from_slice(&100u32.to_be_bytes());
        bytes.extend_from_slice(b"short");
        let err = decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("ends early"), "{err}");
    }
}
