//! The stored blocks, each cut into chunks that fill a page.
//!
//! A block with its receipts is about a hundred kilobytes under load. redb gives a value
//! larger than a page a run of pages rounded up to a power of two, so a block stored whole
//! left about a third of its pages empty (`secnet ledger usage` showed 85 MiB of 280). Cut
//! into [`CHUNK_BYTES`] pieces, each piece fills one 4 KiB page and only a block's last
//! piece leaves part of one empty.

use crate::error::LedgerError;
use redb::{ReadableTable, Table, TableDefinition};

/// (Height, chunk) → the chunk's part of the [`crate::StoredBlock`] bytes; every stored
/// block has chunk 0.
pub(crate) const BLOCK_CHUNKS: TableDefinition<(u64, u32), &[u8]> =
    TableDefinition::new("block_chunks");

/// The most bytes of a chunk: with redb's leaf header (4 bytes), the value's length (4) and
/// the key (12), one fills a 4 KiB page.
pub(crate) const CHUNK_BYTES: usize = 4_096 - 32;

/// More bytes than any stored block takes (a block of at most
/// [`secnet_types::limits::MAX_BLOCK_BYTES`] and a receipt per transaction): chunks adding up
/// to more are damage, and reading stops there.
const MAX_STORED_BLOCK_BYTES: usize = 2 * secnet_types::limits::MAX_BLOCK_BYTES;

/// The table, open for writing.
pub(crate) type BlockTable<'t> = Table<'t, (u64, u32), &'static [u8]>;

/// Stores the block at `height` (replacing any stored there).
pub(crate) fn insert(
    table: &mut BlockTable<'_>,
    height: u64,
    bytes: &[u8],
) -> Result<(), LedgerError> {
    remove(table, height)?;
    let mut chunks = bytes.chunks(CHUNK_BYTES);
    // An empty value is still a block that is there.
    let first = chunks.next().unwrap_or_default();
    table.insert((height, 0), first)?;
    for (n, chunk) in (1u32..).zip(chunks) {
        table.insert((height, n), chunk)?;
    }
    Ok(())
}

/// The bytes of the block at `height`, if stored.
pub(crate) fn get(
    table: &impl ReadableTable<(u64, u32), &'static [u8]>,
    height: u64,
) -> Result<Option<Vec<u8>>, LedgerError> {
    let mut bytes: Option<Vec<u8>> = None;
    for (expected, row) in (0u32..).zip(table.range((height, 0)..=(height, u32::MAX))?) {
        let (key, chunk) = row?;
        if key.value().1 != expected {
            return Err(LedgerError::Corrupt(format!(
                "block {height} lacks chunk {expected}"
            )));
        }
        let bytes = bytes.get_or_insert_with(|| Vec::with_capacity(CHUNK_BYTES));
        if bytes.len() + chunk.value().len() > MAX_STORED_BLOCK_BYTES {
            return Err(LedgerError::Corrupt(format!(
                "block {height} is stored in more than {MAX_STORED_BLOCK_BYTES} bytes"
            )));
        }
        bytes.extend_from_slice(chunk.value());
    }
    Ok(bytes)
}

/// Removes the block at `height`; returns its bytes, if it was stored.
pub(crate) fn remove(
    table: &mut BlockTable<'_>,
    height: u64,
) -> Result<Option<Vec<u8>>, LedgerError> {
    let bytes = get(table, height)?;
    if bytes.is_some() {
        table.retain_in((height, 0)..=(height, u32::MAX), |_, _| false)?;
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a failed lookup is a failed test"
)]
mod tests {
    use super::*;
    use redb::ReadableDatabase as _;

    #[test]
    fn blocks_of_any_size_come_back_whole_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("b.redb")).unwrap();
        let sizes = [
            0,
            1,
            CHUNK_BYTES - 1,
            CHUNK_BYTES,
            CHUNK_BYTES + 1,
            5 * CHUNK_BYTES + 7,
        ];
        let block = |h: usize| -> Vec<u8> { (0..sizes[h]).map(|i| (i * 31 + h) as u8).collect() };
        let write = db.begin_write().unwrap();
        {
            let mut table = write.open_table(BLOCK_CHUNKS).unwrap();
            for h in 0..sizes.len() {
                insert(&mut table, h as u64, &block(h)).unwrap();
            }
            // Written again, shorter: no chunk of the longer one is left.
            insert(&mut table, 5, &block(4)).unwrap();
            assert_eq!(remove(&mut table, 3).unwrap().unwrap(), block(3));
            assert_eq!(remove(&mut table, 3).unwrap(), None);
        }
        write.commit().unwrap();
        let read = db.begin_read().unwrap();
        let table = read.open_table(BLOCK_CHUNKS).unwrap();
        for h in [0, 1, 2, 4] {
            assert_eq!(get(&table, h as u64).unwrap().unwrap(), block(h));
        }
        assert_eq!(get(&table, 5).unwrap().unwrap(), block(4));
        assert_eq!(get(&table, 3).unwrap(), None);
        assert_eq!(get(&table, 6).unwrap(), None);
    }

    #[test]
    fn a_missing_chunk_or_too_many_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("b.redb")).unwrap();
        let write = db.begin_write().unwrap();
        {
            let mut table = write.open_table(BLOCK_CHUNKS).unwrap();
            insert(&mut table, 1, &vec![7; 3 * CHUNK_BYTES]).unwrap();
            table.remove((1, 1)).unwrap();
            let err = get(&table, 1).unwrap_err().to_string();
            assert!(err.contains("block 1 lacks chunk 1"), "{err}");
            // More chunks than any block takes: reading stops at the bound.
            let chunk = vec![7; CHUNK_BYTES];
            for n in 0..=u32::try_from(MAX_STORED_BLOCK_BYTES / CHUNK_BYTES).unwrap() {
                table.insert((2, n), chunk.as_slice()).unwrap();
            }
            let err = get(&table, 2).unwrap_err().to_string();
            assert!(err.contains("block 2 is stored in more than"), "{err}");
        }
        write.abort().unwrap();
    }
}
