//! A ledger's state at one height as one stream: what a new node needs to start there
//! instead of replaying every block from genesis.
//!
//! ```text
//! "secnet-snapshot/1\n"  genesis hash (32)  tip (80)
//! recent blocks: u32 count (1 to 8; 0 at height 0), then u32 length ‖ stored block,
//!                ascending, the last being the tip's
//! entries:       u64 count, then u32 ‖ key ‖ u32 ‖ value
//! log leaves:    u64 count, then u32 ‖ leaf
//! ```
//!
//! Reading checks everything the stream can check about itself: the entries and the log
//! leaves hash to the tip's state root, the last block is the tip's and ends at that root,
//! and each earlier block is its successor's parent. What it cannot check is whether those
//! roots are the network's: the caller reads the head first ([`read_head`]) and compares
//! each block's roots ([`Snapshot::recent`]) with roots a validator quorum certified before
//! installing it ([`crate::Ledger::install_snapshot`]). The recent blocks let the new node
//! check and make the state commitments of the next proposals, which name the roots of
//! heights just below the tip.

use crate::error::LedgerError;
use crate::store::{RECENT_STATES, decode_tip, encode_tip};
use crate::stored_block::StoredBlock;
use secnet_contract::{ChainTip, State, StateKey, StateValue, receipts_root};
use secnet_merkle::log::Frontier;
use secnet_types::{Genesis, Hash};
use std::io::{Read, Write};

/// The first bytes of every snapshot.
pub const SNAPSHOT_MAGIC: &[u8] = b"secnet-snapshot/1\n";
/// Largest state key, state value or log leaf a snapshot may hold.
pub const MAX_SNAPSHOT_ITEM: usize = 1024 * 1024;
/// Most recent blocks a snapshot carries.
pub const SNAPSHOT_BLOCKS: usize = RECENT_STATES;

/// A snapshot that cannot be read or does not hold together.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the stream failed (or it ended early).
    #[error("snapshot stream: {0}")]
    Io(#[from] std::io::Error),
    /// The stream is not a snapshot of this format.
    #[error("not a SecNet snapshot (format secnet-snapshot/1)")]
    NotASnapshot,
    /// It belongs to another network.
    #[error("snapshot of genesis {found}, not of this network's {expected}")]
    OtherNetwork {
        /// The genesis hash it names.
        found: Hash,
        /// This network's.
        expected: Hash,
    },
    /// An item is larger than any the ledger writes.
    #[error("snapshot item of {0} bytes exceeds the {MAX_SNAPSHOT_ITEM}-byte bound")]
    Oversized(usize),
    /// Its content does not hold together.
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
    /// The ledger could not be read.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// One of a snapshot's recent blocks, as the caller checks it against certified roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentBlock {
    /// Its height.
    pub height: u64,
    /// Its hash.
    pub block_hash: Hash,
    /// The state root after it.
    pub state_root: Hash,
    /// Its receipts root.
    pub receipts_root: Hash,
}

/// A snapshot read and checked against itself, not yet against certified roots.
#[derive(Debug)]
pub struct Snapshot {
    pub(crate) tip: ChainTip,
    /// The recent blocks, ascending, ending with the tip's (none at height 0).
    pub(crate) blocks: Vec<StoredBlock>,
    /// Canonical bytes of the state entries.
    pub(crate) entries: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) leaves: Vec<Vec<u8>>,
}

/// Reads a snapshot's head: checks the format and the network, and returns the tip it
/// claims, so that the caller can compare it with certified roots before reading the rest.
pub fn read_head(mut reader: impl Read, genesis: &Genesis) -> Result<ChainTip, SnapshotError> {
    let mut magic = vec![0u8; SNAPSHOT_MAGIC.len()];
    reader
        .read_exact(&mut magic)
        .map_err(|_| SnapshotError::NotASnapshot)?;
    if magic != SNAPSHOT_MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let found = Hash(read_array(&mut reader)?);
    let expected = genesis.hash();
    if found != expected {
        return Err(SnapshotError::OtherNetwork { found, expected });
    }
    let tip_bytes: [u8; 80] = read_array(&mut reader)?;
    decode_tip(&tip_bytes).map_err(|e| SnapshotError::Inconsistent(format!("tip: {e}")))
}

impl Snapshot {
    /// The key and value bytes of every state entry it holds ([`secnet_contract::StateKey::to_bytes`],
    /// [`secnet_contract::StateValue::to_bytes`]).
    pub fn entries(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.entries
    }

    /// The height whose state it holds.
    pub fn height(&self) -> u64 {
        self.tip.height
    }

    /// The state root after that height and the receipts root of its block (of no receipts
    /// at height 0): what a certified header must commit to for this snapshot to be the
    /// network's.
    pub fn roots(&self) -> (Hash, Hash) {
        let receipts = self
            .blocks
            .last()
            .map_or_else(|| receipts_root(&[]), |b| receipts_root(&b.receipts));
        (self.tip.state_root, receipts)
    }

    /// The hash of the block at that height (the genesis block's at height 0).
    pub fn block_hash(&self) -> Hash {
        self.tip.block_hash
    }

    /// The recent blocks' heights, hashes and roots, ascending, ending with the tip's: each
    /// to compare with certified roots.
    pub fn recent(&self) -> Vec<RecentBlock> {
        self.blocks
            .iter()
            .map(|b| RecentBlock {
                height: b.block.header.height,
                block_hash: b.block.hash(),
                state_root: b.state_root,
                receipts_root: receipts_root(&b.receipts),
            })
            .collect()
    }

    /// Number of state entries.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Number of access-log leaves.
    pub fn log_size(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// Reads a snapshot of `genesis`'s network and checks it against itself. Every item is
    /// bounded, none may be empty (nothing the ledger stores is), and `max_bytes` bounds the
    /// whole stream.
    pub fn read(
        reader: impl Read,
        genesis: &Genesis,
        max_bytes: u64,
    ) -> Result<Snapshot, SnapshotError> {
        let mut r = reader.take(max_bytes);
        let tip = read_head(&mut r, genesis)?;
        let block_count = u32::from_be_bytes(read_array(&mut r)?) as usize;
        let allowed = if tip.height == 0 {
            0..=0
        } else {
            1..=SNAPSHOT_BLOCKS
        };
        if !allowed.contains(&block_count) {
            return Err(SnapshotError::Inconsistent(format!(
                "{block_count} recent blocks for height {}",
                tip.height
            )));
        }
        let mut blocks = Vec::with_capacity(block_count);
        for _ in 0..block_count {
            let bytes = read_item(&mut r, crate::stored_block::MAX_STORED_BLOCK_BYTES)?;
            blocks.push(
                StoredBlock::from_bytes(&bytes)
                    .map_err(|e| SnapshotError::Inconsistent(format!("recent block: {e}")))?,
            );
        }
        let entry_count = read_u64(&mut r)?;
        let mut entries = Vec::new();
        for _ in 0..entry_count {
            let key = read_nonempty(&mut r)?;
            let value = read_nonempty(&mut r)?;
            entries.push((key, value));
        }
        let leaf_count = read_u64(&mut r)?;
        let mut leaves = Vec::new();
        for _ in 0..leaf_count {
            leaves.push(read_nonempty(&mut r)?);
        }
        let mut rest = [0u8; 1];
        if r.read(&mut rest)? != 0 {
            return Err(SnapshotError::Inconsistent(
                "bytes follow the last log leaf".into(),
            ));
        }
        let mut snapshot = Snapshot {
            tip,
            blocks,
            entries,
            leaves,
        };
        snapshot.check(genesis)?;
        Ok(snapshot)
    }

    /// The entries and leaves hash to the tip's root, the last block is the tip's, each
    /// earlier block is its successor's parent; entries are kept in canonical form.
    fn check(&mut self, genesis: &Genesis) -> Result<(), SnapshotError> {
        let bad = |m: String| Err(SnapshotError::Inconsistent(m));
        // Each entry once: the tree would keep one copy and the stored table another.
        let mut keys: Vec<&[u8]> = self.entries.iter().map(|(k, _)| k.as_slice()).collect();
        keys.sort_unstable();
        if let Some([key, _]) = keys.windows(2).find(|w| matches!(w, [a, b] if a == b)) {
            return bad(format!("state entry {} appears twice", hex::encode(key)));
        }
        let mut decoded = Vec::with_capacity(self.entries.len());
        for (k, v) in &self.entries {
            let key = StateKey::from_bytes(k).map_err(LedgerError::from)?;
            let value = StateValue::from_bytes(&key, v).map_err(LedgerError::from)?;
            decoded.push((key, value));
        }
        self.entries = decoded
            .iter()
            .map(|(k, v)| (k.to_bytes(), v.to_bytes()))
            .collect();
        let mut log = Frontier::default();
        for leaf in &self.leaves {
            log.append(leaf);
        }
        let state = State::from_entries(genesis.chain_id.clone(), self.tip, decoded, log)
            .map_err(LedgerError::from)?;
        if state.state_root() != self.tip.state_root {
            return bad(format!(
                "its entries hash to {}, its tip names {}",
                state.state_root(),
                self.tip.state_root
            ));
        }
        let Some(tip_block) = self.blocks.last() else {
            if self.tip.block_hash != genesis.block().hash()
                || self.tip.timestamp_ms != genesis.genesis_time_ms
            {
                return bad("a height-0 snapshot not at the genesis block".into());
            }
            return Ok(());
        };
        let header = &tip_block.block.header;
        if header.height != self.tip.height
            || tip_block.block.hash() != self.tip.block_hash
            || header.timestamp_ms != self.tip.timestamp_ms
            || tip_block.state_root != self.tip.state_root
            || tip_block.log_size != self.log_size()
        {
            return bad(format!(
                "the last block given is not the tip's (height {})",
                self.tip.height
            ));
        }
        for pair in self.blocks.windows(2) {
            let [earlier, later] = pair else { continue };
            if later.block.header.parent != earlier.block.hash()
                || later.block.header.height != earlier.block.header.height + 1
                || earlier.log_size > later.log_size
            {
                return bad(format!(
                    "block {} is not the parent of the block after it",
                    earlier.block.header.height
                ));
            }
        }
        for block in &self.blocks {
            let height = block.block.header.height;
            if let Err(e) = block.block.check_body() {
                return bad(format!("block {height}'s body: {e}"));
            }
            if block.receipts.len() != block.block.txs.len() {
                return bad(format!(
                    "block {height} has other receipts than transactions"
                ));
            }
            // Signatures are not under the header's hash: each must be as its receipt says.
            let valid = secnet_types::tx::verify_signatures(&block.block.txs);
            let claimed = block
                .receipts
                .iter()
                .map(|r| !matches!(r.rejection(), Some(secnet_types::Rejection::BadSignature)));
            if !valid.iter().copied().eq(claimed) {
                return bad(format!(
                    "a signature in block {height} disagrees with its receipt"
                ));
            }
        }
        Ok(())
    }
}

/// Writes a snapshot from a consistent read of the ledger: `tip`, the recent blocks'
/// stored bytes (ascending, ending with the tip's), and the rows with how many there are.
pub(crate) fn write(
    out: &mut impl Write,
    genesis: &Hash,
    tip: &ChainTip,
    blocks: &[Vec<u8>],
    entries: (
        u64,
        impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), LedgerError>>,
    ),
    leaves: (u64, impl Iterator<Item = Result<Vec<u8>, LedgerError>>),
) -> Result<(), SnapshotError> {
    out.write_all(SNAPSHOT_MAGIC)?;
    out.write_all(genesis.as_bytes())?;
    out.write_all(&encode_tip(tip))?;
    let count = u32::try_from(blocks.len()).map_err(|_| SnapshotError::Oversized(blocks.len()))?;
    out.write_all(&count.to_be_bytes())?;
    for block in blocks {
        write_item(out, block)?;
    }
    let (entry_count, entries) = entries;
    out.write_all(&entry_count.to_be_bytes())?;
    let mut written = 0u64;
    for entry in entries {
        let (k, v) = entry?;
        write_item(out, &k)?;
        write_item(out, &v)?;
        written += 1;
    }
    if written != entry_count {
        return Err(SnapshotError::Inconsistent(format!(
            "{written} state entries read, {entry_count} counted"
        )));
    }
    let (leaf_count, leaves) = leaves;
    out.write_all(&leaf_count.to_be_bytes())?;
    let mut written = 0u64;
    for leaf in leaves {
        write_item(out, &leaf?)?;
        written += 1;
    }
    if written != leaf_count {
        return Err(SnapshotError::Inconsistent(format!(
            "{written} log leaves read, {leaf_count} counted"
        )));
    }
    out.flush()?;
    Ok(())
}

fn write_item(out: &mut impl Write, bytes: &[u8]) -> Result<(), SnapshotError> {
    let len = u32::try_from(bytes.len()).map_err(|_| SnapshotError::Oversized(bytes.len()))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)?;
    Ok(())
}

fn read_array<const N: usize>(r: &mut impl Read) -> Result<[u8; N], SnapshotError> {
    let mut out = [0u8; N];
    r.read_exact(&mut out)?;
    Ok(out)
}

fn read_u64(r: &mut impl Read) -> Result<u64, SnapshotError> {
    Ok(u64::from_be_bytes(read_array(r)?))
}

/// An item that may not be empty: nothing the ledger stores is, and refusing empty items
/// bounds the memory a stream of them could take to a small multiple of its length.
fn read_nonempty(r: &mut impl Read) -> Result<Vec<u8>, SnapshotError> {
    let item = read_item(r, MAX_SNAPSHOT_ITEM)?;
    if item.is_empty() {
        return Err(SnapshotError::Inconsistent("an empty item".into()));
    }
    Ok(item)
}

fn read_item(r: &mut impl Read, max: usize) -> Result<Vec<u8>, SnapshotError> {
    let len = u32::from_be_bytes(read_array(r)?) as usize;
    if len > max {
        return Err(SnapshotError::Oversized(len));
    }
    let mut out = vec![0u8; len];
    r.read_exact(&mut out)?;
    Ok(out)
}

impl From<redb::TableError> for SnapshotError {
    fn from(e: redb::TableError) -> Self {
        SnapshotError::Ledger(e.into())
    }
}

impl From<redb::StorageError> for SnapshotError {
    fn from(e: redb::StorageError) -> Self {
        SnapshotError::Ledger(e.into())
    }
}
