//! The stored blocks, each cut into chunks that fill a page.
//!
//! A block with its receipts is about a hundred kilobytes under load. redb gives a value
//! larger than a page a run of pages rounded up to a power of two, so a block stored whole
//! left about a third of its pages empty (`secnet ledger usage` showed 85 MiB of 280). Cut
//! into [`CHUNK_BYTES`] pieces, each piece fills one page ([`crate::PAGE_BYTES`]) and only a
//! block's last piece leaves part of one empty.

use crate::error::LedgerError;
use crate::stored_block::MAX_STORED_BLOCK_BYTES;
use redb::{ReadableTable, Table, TableDefinition};

/// (Height, chunk) → the chunk's part of the [`crate::StoredBlock`] bytes; every stored
/// block has chunk 0.
pub(crate) const BLOCK_CHUNKS: TableDefinition<(u64, u32), &[u8]> =
    TableDefinition::new("block_chunks");

/// The most bytes of a chunk: with its key (12 bytes) and what a leaf adds, one fills a page.
pub(crate) const CHUNK_BYTES: usize = crate::PAGE_BYTES - crate::LEAF_OVERHEAD - 12;

/// The table, open for writing.
pub(crate) type BlockTable<'t> = Table<'t, (u64, u32), &'static [u8]>;

/// Stores the block at `height` (replacing any stored there); refuses one larger than any
/// block may be, which no reader would take back.
pub(crate) fn insert(
    table: &mut BlockTable<'_>,
    height: u64,
    bytes: &[u8],
) -> Result<(), LedgerError> {
    if bytes.len() > MAX_STORED_BLOCK_BYTES {
        return Err(LedgerError::Storage(format!(
            "block {height} takes {} bytes, more than any block may ({MAX_STORED_BLOCK_BYTES})",
            bytes.len()
        )));
    }
    remove_range(table, height..=height)?;
    let mut chunks = bytes.chunks(CHUNK_BYTES);
    // An empty value is still a block that is there.
    let first = chunks.next().unwrap_or_default();
    table.insert((height, 0), first)?;
    for (n, chunk) in (1u32..).zip(chunks) {
        table.insert((height, n), chunk)?;
    }
    Ok(())
}

/// The bytes of the block at `height`, if stored: every chunk but the last full, at most
/// [`MAX_STORED_BLOCK_BYTES`] in all.
pub(crate) fn get(
    table: &impl ReadableTable<(u64, u32), &'static [u8]>,
    height: u64,
) -> Result<Option<Vec<u8>>, LedgerError> {
    front(table, height, usize::MAX)
}

/// At least the first `enough` bytes of the block at `height` (all of it if shorter), if
/// stored, checked as [`get`] checks them: what is read for its header, not the whole block.
pub(crate) fn front(
    table: &impl ReadableTable<(u64, u32), &'static [u8]>,
    height: u64,
    enough: usize,
) -> Result<Option<Vec<u8>>, LedgerError> {
    let mut bytes: Option<Vec<u8>> = None;
    let mut last_len = CHUNK_BYTES;
    let damaged = |what: String| LedgerError::Corrupt(format!("block {height} {what}"));
    for (expected, row) in (0u32..).zip(table.range((height, 0)..=(height, u32::MAX))?) {
        let (key, chunk) = row?;
        let chunk = chunk.value();
        if key.value().1 != expected {
            return Err(damaged(format!("lacks chunk {expected}")));
        }
        // Every chunk before this one full.
        if last_len != CHUNK_BYTES || chunk.len() > CHUNK_BYTES {
            return Err(damaged(format!(
                "has a chunk of another size at {expected}"
            )));
        }
        let bytes = bytes.get_or_insert_with(|| Vec::with_capacity(CHUNK_BYTES));
        if bytes.len() + chunk.len() > MAX_STORED_BLOCK_BYTES {
            return Err(damaged(format!(
                "is stored in more than {MAX_STORED_BLOCK_BYTES} bytes"
            )));
        }
        bytes.extend_from_slice(chunk);
        last_len = chunk.len();
        if bytes.len() >= enough {
            break;
        }
    }
    Ok(bytes)
}

/// Removes the blocks at `heights`.
pub(crate) fn remove_range(
    table: &mut BlockTable<'_>,
    heights: std::ops::RangeInclusive<u64>,
) -> Result<(), LedgerError> {
    if !heights.is_empty() {
        table.retain_in(
            (*heights.start(), 0)..=(*heights.end(), u32::MAX),
            |_, _| false,
        )?;
    }
    Ok(())
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
            remove_range(&mut table, 3..=3).unwrap();
            assert_eq!(get(&table, 3).unwrap(), None);
            assert_eq!(get(&table, 2).unwrap().unwrap(), block(2));
            assert_eq!(get(&table, 4).unwrap().unwrap(), block(4));
            // An empty range removes nothing.
            #[expect(clippy::reversed_empty_ranges, reason = "the empty range is the point")]
            remove_range(&mut table, 4..=3).unwrap();
            assert_eq!(get(&table, 4).unwrap().unwrap(), block(4));
        }
        write.commit().unwrap();
        let read = db.begin_read().unwrap();
        let table = read.open_table(BLOCK_CHUNKS).unwrap();
        for h in [0, 1, 2, 4] {
            assert_eq!(get(&table, h as u64).unwrap().unwrap(), block(h));
            // The front: whole chunks up to what was asked, or the whole block.
            let want = (CHUNK_BYTES + 1).min(block(h).len());
            let got = front(&table, h as u64, CHUNK_BYTES + 1).unwrap().unwrap();
            assert!(got.len() >= want && block(h).starts_with(&got), "{h}");
        }
        assert_eq!(get(&table, 5).unwrap().unwrap(), block(4));
        assert_eq!(get(&table, 3).unwrap(), None);
        assert_eq!(get(&table, 6).unwrap(), None);
    }

    /// Blocks of a hundred kilobytes leave little of their pages empty (stored whole, each
    /// took a run of 128 or 256 KiB).
    #[test]
    fn chunks_fill_pages() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("b.redb")).unwrap();
        for h in 0..40u64 {
            let write = db.begin_write().unwrap();
            {
                let mut table = write.open_table(BLOCK_CHUNKS).unwrap();
                let len = 100_000 + 1_000 * h as usize;
                insert(&mut table, h, &vec![h as u8; len]).unwrap();
            }
            write.commit().unwrap();
        }
        let read = db.begin_read().unwrap();
        let stats =
            redb::ReadableTableMetadata::stats(&read.open_table(BLOCK_CHUNKS).unwrap()).unwrap();
        let empty = stats.fragmented_bytes() as f64 / stats.stored_bytes() as f64;
        assert!(empty < 0.05, "{empty:.3} of the pages empty");
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
            // A short chunk followed by another, or one too long.
            insert(&mut table, 3, &vec![7; 2 * CHUNK_BYTES]).unwrap();
            table.insert((3, 0), [7u8; 10].as_slice()).unwrap();
            let err = get(&table, 3).unwrap_err().to_string();
            assert!(
                err.contains("block 3 has a chunk of another size at 1"),
                "{err}"
            );
            // An empty one before another, likewise.
            table.insert((3, 0), [].as_slice()).unwrap();
            let err = get(&table, 3).unwrap_err().to_string();
            assert!(
                err.contains("block 3 has a chunk of another size at 1"),
                "{err}"
            );
            table
                .insert((3, 0), vec![7u8; CHUNK_BYTES + 1].as_slice())
                .unwrap();
            let err = get(&table, 3).unwrap_err().to_string();
            assert!(
                err.contains("block 3 has a chunk of another size at 0"),
                "{err}"
            );
            // Nothing larger than a block may be is written.
            let err = insert(&mut table, 4, &vec![0; MAX_STORED_BLOCK_BYTES + 1]).unwrap_err();
            assert!(err.to_string().contains("more than any block may"), "{err}");
            assert_eq!(get(&table, 4).unwrap(), None);
        }
        write.abort().unwrap();
    }
}
