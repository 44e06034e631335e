//! A block as stored: the block, its receipts and the state root after it.

use bytes::BufMut;
use commonware_codec::{
    Buf, Copying, Decode, Encode, EncodeSize, Error as CodecError, Read, ReadExt, Write,
};
use secnet_types::codec::read_vec_bounded;
use secnet_types::limits::MAX_BLOCK_TXS;
use secnet_types::{Block, BlockHeader, Hash, Receipt, SignedTransaction};
use serde::Serialize;

const STORED_BLOCK_VERSION: u8 = 1;

/// More bytes than a stored block takes: a block of at most
/// [`secnet_types::limits::MAX_BLOCK_BYTES`] and a receipt per transaction (a hash and a few
/// events of at most a few hundred bytes each, for at most [`MAX_BLOCK_TXS`]: well under
/// another `MAX_BLOCK_BYTES`), with room to spare, so that no executed block is refused for
/// its size. Readers of stored blocks refuse more.
pub const MAX_STORED_BLOCK_BYTES: usize = 4 * secnet_types::limits::MAX_BLOCK_BYTES;

/// An applied block and what it produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredBlock {
    /// The block.
    pub block: Block,
    /// One receipt per transaction.
    pub receipts: Vec<Receipt>,
    /// The state root after the block.
    pub state_root: Hash,
    /// The access log's size after the block.
    pub log_size: u64,
}

/// What a client waiting for its transactions needs of a block: its hash, its transactions'
/// hashes in order, and whether each was applied (`false`: its receipt is a rejection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockTxs {
    /// The block's hash.
    pub block_hash: Hash,
    /// Its transactions' hashes, in order.
    pub tx_hashes: Vec<Hash>,
    /// For each, whether it was applied.
    pub applied: Vec<bool>,
}

impl BlockTxs {
    /// The summary of `block`, which produced `receipts`.
    pub fn of(block: &Block, receipts: &[Receipt]) -> BlockTxs {
        BlockTxs {
            block_hash: block.hash(),
            tx_hashes: block.txs.iter().map(SignedTransaction::hash).collect(),
            applied: receipts.iter().map(|r| r.rejection().is_none()).collect(),
        }
    }
}

impl StoredBlock {
    /// The stored bytes' front that holds the header ([`Self::header_of`] reads no more).
    pub const HEADER_FRONT: usize = 8 * 1024;

    /// The stored bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }

    /// The stored bytes of a block and its results, without assembling a `StoredBlock`.
    pub fn encode_parts(
        block: &Block,
        receipts: &[Receipt],
        state_root: &Hash,
        log_size: u64,
    ) -> Vec<u8> {
        let size = 1
            + block.encode_size()
            + receipts.len().encode_size()
            + receipts.iter().map(EncodeSize::encode_size).sum::<usize>()
            + 40;
        let mut buf = Vec::with_capacity(size);
        STORED_BLOCK_VERSION.write(&mut buf);
        block.write(&mut buf);
        receipts.len().write(&mut buf);
        for r in receipts {
            r.write(&mut buf);
        }
        state_root.write(&mut buf);
        log_size.write(&mut buf);
        buf
    }

    /// The block header alone, read from the front of stored bytes.
    pub fn header_of(bytes: &[u8]) -> Result<BlockHeader, CodecError> {
        // A header is at most a few KiB: copy only the front of the stored bytes.
        let front = bytes
            .get(..bytes.len().min(Self::HEADER_FRONT))
            .unwrap_or(bytes);
        let mut buf = bytes::Bytes::copy_from_slice(front);
        let version = u8::read(&mut buf)?;
        if version != STORED_BLOCK_VERSION {
            return Err(CodecError::Invalid("stored block", "unknown version"));
        }
        BlockHeader::read(&mut buf)
    }

    /// Parses stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<StoredBlock, CodecError> {
        StoredBlock::decode_cfg(Copying(bytes), &())
    }
}

impl Write for StoredBlock {
    fn write(&self, buf: &mut impl BufMut) {
        buf.put_slice(&StoredBlock::encode_parts(
            &self.block,
            &self.receipts,
            &self.state_root,
            self.log_size,
        ));
    }
}

impl EncodeSize for StoredBlock {
    fn encode_size(&self) -> usize {
        1 + self.block.encode_size() + self.receipts.encode_size() + 32 + 8
    }
}

impl Read for StoredBlock {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        if u8::read(buf)? != STORED_BLOCK_VERSION {
            return Err(CodecError::Invalid(
                "stored block",
                "unknown format version",
            ));
        }
        Ok(StoredBlock {
            block: Block::read(buf)?,
            receipts: read_vec_bounded(buf, "receipts", MAX_BLOCK_TXS)?,
            state_root: Hash::read(buf)?,
            log_size: u64::read(buf)?,
        })
    }
}
