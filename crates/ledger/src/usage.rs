//! What a ledger file's bytes hold: each table's share, each index's share of the sorted
//! runs, and the pages redb has freed but not yet reused — to see where the disk goes.

use crate::blocks::BLOCK_CHUNKS;
use crate::error::LedgerError;
use crate::journal::STATE_JOURNAL;
use crate::log_tree::LOG_SUBTREES;
use crate::runs::{Index, RUN_SETS, RUNS};
use crate::store::{LOG, META};
use redb::{
    Database, Key, ReadTransaction, ReadableDatabase, ReadableTableMetadata, TableHandle as _,
    Value,
};
use std::path::Path;

/// One table's use of the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableUsage {
    /// The table.
    pub name: String,
    /// Its rows.
    pub rows: u64,
    /// Keys and values, as stored in leaf pages.
    pub stored_bytes: u64,
    /// The B-tree's own bytes (page headers, branch pages' keys and child pointers).
    pub metadata_bytes: u64,
    /// Bytes of its pages that hold nothing.
    pub fragmented_bytes: u64,
}

impl TableUsage {
    /// What the table occupies in the file.
    pub fn total_bytes(&self) -> u64 {
        self.stored_bytes + self.metadata_bytes + self.fragmented_bytes
    }
}

/// One index's share of the sorted runs ([`crate::runs`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndexUsage {
    /// The index.
    pub index: String,
    /// Its chunks (one redb row each).
    pub chunks: u64,
    /// Their keys' and values' bytes.
    pub stored_bytes: u64,
}

/// Where a ledger file's bytes are ([`disk_usage`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskUsage {
    /// The file's length.
    pub file_bytes: u64,
    /// Pages the database has allocated; the rest of the file is free for reuse.
    pub allocated_bytes: u64,
    /// Every table of the current format, largest first.
    pub tables: Vec<TableUsage>,
    /// The sorted runs by index, largest first.
    pub runs: Vec<IndexUsage>,
}

/// Reads where the ledger file at `path` spends its bytes. It opens the file itself, so
/// the node using it must be stopped (a file its node did not close is repaired first, as
/// opening it would); it reads every row of the sorted runs once. A ledger of an earlier
/// format is refused: its node migrates it when it starts.
pub fn disk_usage(path: &Path) -> Result<DiskUsage, LedgerError> {
    let file_bytes = std::fs::metadata(path)
        .map_err(|e| LedgerError::Storage(format!("{}: {e}", path.display())))?
        .len();
    let db = Database::open(path)?;
    let format = crate::store::stored_format(&db.begin_read()?)?;
    if format.as_deref() != Some(crate::store::FORMAT_VERSION) {
        return Err(LedgerError::Storage(format!(
            "a ledger of format {:?}; its node brings it to {:?} when it starts",
            format.map(|f| String::from_utf8_lossy(&f).into_owned()),
            String::from_utf8_lossy(crate::store::FORMAT_VERSION),
        )));
    }
    let allocated_bytes = {
        let write = db.begin_write()?;
        let stats = write.stats()?;
        write.abort()?;
        stats.allocated_pages() * stats.page_size() as u64
    };
    let read = db.begin_read()?;
    let mut tables = vec![
        table_usage(&read, META)?,
        table_usage(&read, BLOCK_CHUNKS)?,
        table_usage(&read, LOG)?,
        table_usage(&read, LOG_SUBTREES)?,
        table_usage(&read, STATE_JOURNAL)?,
        table_usage(&read, RUNS)?,
        table_usage(&read, RUN_SETS)?,
        table_usage(&read, crate::index::WITHDRAWN)?,
    ];
    tables.sort_by_key(|t| std::cmp::Reverse(t.total_bytes()));
    let mut runs: Vec<IndexUsage> = Index::ALL
        .iter()
        .map(|index| IndexUsage {
            index: format!("{index:?}"),
            chunks: 0,
            stored_bytes: 0,
        })
        .collect();
    let table = read.open_table(RUNS)?;
    for row in redb::ReadableTable::iter(&table)? {
        let (key, value) = row?;
        let tag = key.value().first().copied();
        let usage = Index::ALL
            .iter()
            .position(|i| Some(*i as u8) == tag)
            .and_then(|at| runs.get_mut(at))
            .ok_or_else(|| LedgerError::Corrupt("a run chunk of no known index".into()))?;
        usage.chunks += 1;
        usage.stored_bytes += (key.value().len() + value.value().len()) as u64;
    }
    runs.sort_by_key(|r| std::cmp::Reverse(r.stored_bytes));
    Ok(DiskUsage {
        file_bytes,
        allocated_bytes,
        tables,
        runs,
    })
}

/// `definition`'s use of the file (nothing, if the table has never been written).
fn table_usage<K: Key + 'static, V: Value + 'static>(
    read: &ReadTransaction,
    definition: redb::TableDefinition<K, V>,
) -> Result<TableUsage, LedgerError> {
    let name = definition.name().to_string();
    let table = match read.open_table(definition) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Ok(TableUsage {
                name,
                rows: 0,
                stored_bytes: 0,
                metadata_bytes: 0,
                fragmented_bytes: 0,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let stats = table.stats()?;
    Ok(TableUsage {
        name,
        rows: table.len()?,
        stored_bytes: stats.stored_bytes(),
        metadata_bytes: stats.metadata_bytes(),
        fragmented_bytes: stats.fragmented_bytes(),
    })
}
