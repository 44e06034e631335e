//! The access log's Merkle tree on disk, so that memory holds only its right edge.
//!
//! The leaves are the `access_log` table's rows; their hashes are computed when read. Every
//! complete interior subtree (level ≥ 1) is a row of [`LOG_SUBTREES`] under
//! [`Subtree::position`], the order in which the log completes them, so a write only ever
//! appends at the right edge of the B-tree. That is one 32-byte hash per leaf, written once.
//!
//! Opening reads the log's right edge (one hash per set bit of its size) instead of every
//! leaf, and the state's log head, which the state root commits to, checks it. A proof reads
//! O(log n) subtrees, from the blocks not written yet first ([`StoredLog`]).

use crate::error::LedgerError;
use crate::store::LOG;
use crate::unwritten::BlockRows;
use redb::{ReadOnlyTable, ReadTransaction, Table, TableDefinition};
use secnet_certified::log_proof::{ConsistencyProof, InclusionProof};
use secnet_merkle::Digest;
use secnet_merkle::log::{
    self, Frontier, LogError, Subtree, Subtrees, empty_root, leaf_hash, verify_consistency,
    verify_inclusion,
};
use secnet_types::Hash;
use std::sync::Arc;

/// [`Subtree::position`] → the subtree's hash (32 bytes), for every complete interior
/// subtree of the access log.
pub(crate) const LOG_SUBTREES: TableDefinition<u64, &[u8]> =
    TableDefinition::new("access_log_subtrees");

/// A subtree as a table row: its position and hash.
pub(crate) fn row(node: &Subtree) -> (u64, Digest) {
    (Subtree::position(node.level, node.index), node.hash)
}

/// Writes the interior subtrees of the log whose leaves `leaves` are (all of them, from
/// index 0, in order) and returns its right edge: how a log stored before this table, or
/// installed from a snapshot, gets its tree.
pub(crate) fn write_all<L: AsRef<[u8]>>(
    table: &mut Table<'_, u64, &[u8]>,
    leaves: impl IntoIterator<Item = Result<L, LedgerError>>,
) -> Result<Frontier, LedgerError> {
    let mut frontier = Frontier::default();
    let mut rows = Vec::new();
    for leaf in leaves {
        frontier.append_hash_with(leaf_hash(leaf?.as_ref()), |node| rows.push(row(&node)));
        for (position, hash) in rows.drain(..) {
            table.insert(position, hash.as_slice())?;
        }
    }
    Ok(frontier)
}

/// The right edge of the stored log of `size` leaves, read from its largest subtrees.
pub(crate) fn frontier(read: &ReadTransaction, size: u64) -> Result<Frontier, LedgerError> {
    let log = StoredLog::open(read, size, Vec::new())?;
    let peaks = Frontier::peak_positions(size)
        .into_iter()
        .map(|(level, index)| log.complete(level, index))
        .collect::<Result<Vec<_>, _>>()?;
    Frontier::from_peaks(size, &peaks)
        .ok_or_else(|| LedgerError::Corrupt(format!("the access log's right edge at {size}")))
}

/// The stored access log of some size, as a source of proofs: the blocks not written yet,
/// then the disk. The caller takes the unwritten blocks before opening `read` (a block
/// leaves the queue only once it is on disk, so each subtree is in one or the other).
pub(crate) struct StoredLog {
    size: u64,
    unwritten: Vec<Arc<BlockRows>>,
    leaves: ReadOnlyTable<u64, &'static [u8]>,
    subtrees: Option<ReadOnlyTable<u64, &'static [u8]>>,
}

impl StoredLog {
    /// The log of `size` leaves stored in `read` and `unwritten`. A ledger that never held a
    /// leaf may have no subtree table.
    pub(crate) fn open(
        read: &ReadTransaction,
        size: u64,
        unwritten: Vec<Arc<BlockRows>>,
    ) -> Result<StoredLog, LedgerError> {
        let subtrees = match read.open_table(LOG_SUBTREES) {
            Ok(table) => Some(table),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(StoredLog {
            size,
            unwritten,
            leaves: read.open_table(LOG)?,
            subtrees,
        })
    }

    /// The bytes of leaf `index`, from the queued blocks or the disk (`None` if neither
    /// holds it).
    pub(crate) fn find_leaf(&self, index: u64) -> Result<Option<Vec<u8>>, LedgerError> {
        if let Some(leaf) = self.unwritten.iter().find_map(|b| b.log_leaf(index)) {
            return Ok(Some(leaf.to_vec()));
        }
        Ok(self.leaves.get(index)?.map(|leaf| leaf.value().to_vec()))
    }

    /// The bytes of leaf `index`, which the log must hold.
    fn leaf(&self, index: u64) -> Result<Vec<u8>, LedgerError> {
        self.find_leaf(index)?
            .ok_or_else(|| LedgerError::Corrupt(format!("access log leaf {index} is missing")))
    }
}

impl Subtrees for StoredLog {
    type Error = LedgerError;

    fn size(&self) -> u64 {
        self.size
    }

    fn complete(&self, level: u32, index: u64) -> Result<Digest, LedgerError> {
        if level == 0 {
            return self.leaf(index).map(|leaf| leaf_hash(&leaf));
        }
        let position = Subtree::position(level, index);
        if let Some(hash) = self.unwritten.iter().find_map(|b| b.log_subtree(position)) {
            return Ok(hash);
        }
        let missing = || {
            LedgerError::Corrupt(format!(
                "access log subtree {level}/{index} (position {position}) is missing"
            ))
        };
        let stored = self.subtrees.as_ref().ok_or_else(missing)?.get(position)?;
        let bytes = stored.ok_or_else(missing)?;
        bytes.value().try_into().map_err(|_| {
            LedgerError::Corrupt(format!(
                "access log subtree {level}/{index} of {} bytes",
                bytes.value().len()
            ))
        })
    }
}

/// A proof's error as the ledger reports it.
fn ledger_error(e: LogError<LedgerError>) -> LedgerError {
    match e {
        LogError::Proof(p) => LedgerError::Proof(p),
        LogError::Source(e) => e,
    }
}

/// The access log as a ledger had applied it when this was taken, to make proofs from
/// without holding the ledger ([`crate::Ledger::log_reader`]).
///
/// Every proof is checked before it is returned against the log's root in the state, which
/// the state root commits to: a stored row that was altered gives an error naming the
/// corruption, never a proof that verifies against a root of its own making.
pub struct LogReader {
    log: StoredLog,
    root: Digest,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("size", &self.log.size)
            .finish_non_exhaustive()
    }
}

impl LogReader {
    /// `log`, whose root is `root` (the state's).
    pub(crate) fn new(log: StoredLog, root: Digest) -> LogReader {
        LogReader { log, root }
    }

    /// Leaves in the log.
    pub fn size(&self) -> u64 {
        self.log.size
    }

    /// The root of the first `size` leaves, read from storage and checked against the
    /// state's root (at the log's size, equal to it; below, by a consistency proof to it).
    fn checked_root(&self, size: u64) -> Result<Digest, LedgerError> {
        let n = self.log.size;
        let root = log::root_at(&self.log, size).map_err(ledger_error)?;
        let consistent = if size == 0 {
            root == empty_root()
        } else if size == n {
            root == self.root
        } else {
            let proof = log::consistency_proof(&self.log, size, n).map_err(ledger_error)?;
            verify_consistency(size, n, &root, &self.root, &proof).is_ok()
        };
        if !consistent {
            return Err(LedgerError::Corrupt(format!(
                "the stored access log's root at {size} leaves is not consistent with the \
                 state's log of {n}"
            )));
        }
        Ok(root)
    }

    /// An inclusion proof for leaf `index` in the log of `size` leaves (default: all).
    pub fn inclusion_proof(
        &self,
        index: u64,
        size: Option<u64>,
    ) -> Result<InclusionProof, LedgerError> {
        let size = size.unwrap_or(self.log.size);
        let path = log::inclusion_proof(&self.log, index, size).map_err(ledger_error)?;
        let root = self.checked_root(size)?;
        let leaf = self.log.leaf(index)?;
        let hash = leaf_hash(&leaf);
        if verify_inclusion(&hash, index, size, &path, &root).is_err() {
            return Err(LedgerError::Corrupt(format!(
                "the stored access log does not prove leaf {index} in {size} leaves"
            )));
        }
        Ok(InclusionProof {
            tree_size: size,
            root_hash: Hash(root),
            leaf_index: index,
            leaf_hash: Hash(hash),
            leaf,
            audit_path: path.into_iter().map(Hash).collect(),
        })
    }

    /// A consistency proof between two sizes of the log.
    pub fn consistency_proof(
        &self,
        first: u64,
        second: u64,
    ) -> Result<ConsistencyProof, LedgerError> {
        let proof = log::consistency_proof(&self.log, first, second).map_err(ledger_error)?;
        let first_root = self.checked_root(first)?;
        let second_root = self.checked_root(second)?;
        if verify_consistency(first, second, &first_root, &second_root, &proof).is_err() {
            return Err(LedgerError::Corrupt(format!(
                "the stored access log does not prove {first} leaves consistent with {second}"
            )));
        }
        Ok(ConsistencyProof {
            first_size: first,
            second_size: second,
            first_root: Hash(first_root),
            second_root: Hash(second_root),
            proof: proof.into_iter().map(Hash).collect(),
        })
    }
}
