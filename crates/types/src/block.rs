//! Blocks: an ordered batch of signed transactions on top of a parent.

use crate::codec::read_vec_bounded;
use crate::hash::Hash;
use crate::limits::{MAX_BLOCK_BYTES, MAX_BLOCK_TXS};
use crate::tx::{DecodeError, SignedTransaction};
use bytes::BufMut;
use commonware_codec::{
    Buf, Copying, DecodeExt, Encode, EncodeSize, Error as CodecError, FixedSize, Read, ReadExt,
    Write,
};
use serde::{Deserialize, Serialize};

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
            },
            txs,
        }
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
    }
}

impl FixedSize for BlockHeader {
    const SIZE: usize = u64::SIZE + Hash::SIZE + u64::SIZE + Hash::SIZE + u32::SIZE;
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
        BlockHeader::SIZE + self.txs.encode_size()
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
