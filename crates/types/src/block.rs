//! Blocks: an ordered batch of signed transactions on top of a parent.

use crate::codec::read_vec_bounded;
use crate::hash::Hash;
use crate::limits::{MAX_BLOCK_BYTES, MAX_BLOCK_TXS, MAX_HEADER_STATE_ROOTS};
use crate::tx::{DecodeError, SignedTransaction};
use bytes::BufMut;
use commonware_codec::{
    Buf, Copying, DecodeExt, Encode, EncodeSize, Error as CodecError, FixedSize, Read, ReadExt,
    Write,
};
use serde::{Deserialize, Serialize};

/// What a header commits to about earlier heights: for each height `from`, `from + 1`, …
/// the state root after it and the root of its receipts (one of each per height, in order).
///
/// Execution follows finality, and a proposal usually builds on a parent that is not final
/// yet, so a block cannot carry the root after itself. Instead it carries the roots of the
/// heights its proposer had executed and no ancestor had committed yet (Tendermint's
/// `app_hash`, widened to a range for a pipelined protocol): at steady state, block `h`
/// commits the root after `h - 2`. A certificate over the header therefore certifies those
/// roots, and with them every state entry and the access log's head.
///
/// INVARIANT (checked by validators before voting): `from` equals the parent's
/// [`StateCommitment::next`], and every root equals the root the voter computed itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCommitment {
    /// The first committed height.
    pub from: u64,
    /// The state root after each height from `from` on; at most
    /// [`MAX_HEADER_STATE_ROOTS`].
    pub roots: Vec<Hash>,
    /// The receipts root of each of those heights (RFC 6962 Merkle root over the encoded
    /// receipts, in transaction order); as many as `roots`.
    pub receipts: Vec<Hash>,
}

impl StateCommitment {
    /// The first height this commitment leaves to the next block.
    pub fn next(&self) -> u64 {
        self.from.saturating_add(self.roots.len() as u64)
    }

    /// The state root committed for `height`, if this commitment covers it.
    pub fn root_at(&self, height: u64) -> Option<Hash> {
        let index = usize::try_from(height.checked_sub(self.from)?).ok()?;
        self.roots.get(index).copied()
    }

    /// The receipts root committed for `height`, if this commitment covers it.
    pub fn receipts_root_at(&self, height: u64) -> Option<Hash> {
        let index = usize::try_from(height.checked_sub(self.from)?).ok()?;
        self.receipts.get(index).copied()
    }

    /// The highest height committed here, with its root.
    pub fn last(&self) -> Option<(u64, Hash)> {
        let root = *self.roots.last()?;
        Some((self.next() - 1, root))
    }
}

impl Write for StateCommitment {
    fn write(&self, buf: &mut impl BufMut) {
        self.from.write(buf);
        self.roots.write(buf);
        self.receipts.write(buf);
    }
}

impl EncodeSize for StateCommitment {
    fn encode_size(&self) -> usize {
        u64::SIZE + self.roots.encode_size() + self.receipts.encode_size()
    }
}

impl Read for StateCommitment {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let from = u64::read(buf)?;
        let roots: Vec<Hash> = read_vec_bounded(buf, "state_roots", MAX_HEADER_STATE_ROOTS)?;
        let receipts: Vec<Hash> = read_vec_bounded(buf, "receipts_roots", MAX_HEADER_STATE_ROOTS)?;
        if receipts.len() != roots.len() {
            return Err(CodecError::Invalid(
                "receipts_roots",
                "not one receipts root per state root",
            ));
        }
        Ok(StateCommitment {
            from,
            roots,
            receipts,
        })
    }
}

/// What a block commits to; its hash is the block's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// Height: genesis state is height 0, the first block is height 1.
    pub height: u64,
    /// Hash of the parent block's header (zero for the first block).
    pub parent: Hash,
    /// Proposer's clock, milliseconds since the Unix epoch; never decreases along the chain.
    pub timestamp_ms: u64,
    /// SHA-256 over the concatenated transaction hashes, in order.
    pub tx_root: Hash,
    /// Number of transactions.
    pub tx_count: u32,
    /// State roots of earlier heights.
    pub state: StateCommitment,
}

impl BlockHeader {
    /// The block hash.
    pub fn hash(&self) -> Hash {
        Hash::digest(&self.encode())
    }
}

/// A block: header and transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// The transactions, executed in this order.
    pub txs: Vec<SignedTransaction>,
}

/// A block whose body does not match its header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The header's transaction root is not the root of the body.
    #[error("transaction root {header} in the header does not match the body's {body}")]
    TxRootMismatch {
        /// Root in the header.
        header: Hash,
        /// Root of the body.
        body: Hash,
    },
    /// The header's transaction count is not the body's.
    #[error("header says {header} transactions, body has {body}")]
    TxCountMismatch {
        /// Count in the header.
        header: u32,
        /// Count in the body.
        body: usize,
    },
}

/// SHA-256 over the concatenated hashes of `txs`.
pub fn tx_root(txs: &[SignedTransaction]) -> Hash {
    let mut concatenated = Vec::with_capacity(txs.len() * 32);
    for tx in txs {
        concatenated.extend_from_slice(tx.hash().as_bytes());
    }
    Hash::digest(&concatenated)
}

impl Block {
    /// Builds a block, computing its transaction root.
    pub fn new(height: u64, parent: Hash, timestamp_ms: u64, txs: Vec<SignedTransaction>) -> Block {
        Block {
            header: BlockHeader {
                height,
                parent,
                timestamp_ms,
                tx_root: tx_root(&txs),
                tx_count: u32::try_from(txs.len()).unwrap_or(u32::MAX),
                state: StateCommitment::default(),
            },
            txs,
        }
    }

    /// The same block committing to `state` (execution ignores the commitment; validators
    /// check it before voting).
    pub fn committing(mut self, state: StateCommitment) -> Block {
        self.header.state = state;
        self
    }

    /// The block hash (its header's hash).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// Checks that the body matches the header.
    pub fn check_body(&self) -> Result<(), BlockError> {
        if self.header.tx_count as usize != self.txs.len() {
            return Err(BlockError::TxCountMismatch {
                header: self.header.tx_count,
                body: self.txs.len(),
            });
        }
        let body = tx_root(&self.txs);
        if body != self.header.tx_root {
            return Err(BlockError::TxRootMismatch {
                header: self.header.tx_root,
                body,
            });
        }
        Ok(())
    }

    /// Decodes a block from untrusted bytes, enforcing every bound.
    pub fn decode_bytes(bytes: &[u8]) -> Result<Block, DecodeError> {
        if bytes.len() > MAX_BLOCK_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_BLOCK_BYTES,
            });
        }
        Block::decode(Copying(bytes)).map_err(DecodeError::from)
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }
}

impl Write for BlockHeader {
    fn write(&self, buf: &mut impl BufMut) {
        self.height.write(buf);
        self.parent.write(buf);
        self.timestamp_ms.write(buf);
        self.tx_root.write(buf);
        self.tx_count.write(buf);
        self.state.write(buf);
    }
}

impl EncodeSize for BlockHeader {
    fn encode_size(&self) -> usize {
        u64::SIZE + Hash::SIZE + u64::SIZE + Hash::SIZE + u32::SIZE + self.state.encode_size()
    }
}

impl BlockHeader {
    /// Decodes a header from untrusted bytes, enforcing every bound.
    pub fn decode_bytes(bytes: &[u8]) -> Result<BlockHeader, DecodeError> {
        let max =
            5 * u64::SIZE + 2 * Hash::SIZE + u32::SIZE + 2 * MAX_HEADER_STATE_ROOTS * Hash::SIZE;
        if bytes.len() > max {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        BlockHeader::decode(Copying(bytes)).map_err(DecodeError::from)
    }

    /// The canonical encoding (what the block hash is over).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }
}

impl Read for BlockHeader {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(BlockHeader {
            height: u64::read(buf)?,
            parent: Hash::read(buf)?,
            timestamp_ms: u64::read(buf)?,
            tx_root: Hash::read(buf)?,
            tx_count: u32::read(buf)?,
            state: StateCommitment::read(buf)?,
        })
    }
}

impl Write for Block {
    fn write(&self, buf: &mut impl BufMut) {
        self.header.write(buf);
        self.txs.write(buf);
    }
}

impl EncodeSize for Block {
    fn encode_size(&self) -> usize {
        self.header.encode_size() + self.txs.encode_size()
    }
}

impl Read for Block {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(Block {
            header: BlockHeader::read(buf)?,
            txs: read_vec_bounded(buf, "txs", MAX_BLOCK_TXS)?,
        })
    }
}
