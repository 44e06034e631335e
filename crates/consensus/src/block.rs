//! SecNet's block as Commonware consensus sees it: digest = header hash, parent and height
//! from the header, the canonical encoding with its bounds.

use bytes::BufMut;
use commonware_codec::{Buf, EncodeSize, Error as CodecError, Read, Write};
use commonware_consensus::types::Height;
use commonware_consensus::{BoundedBlock, Heightable};
use commonware_cryptography::{Digestible, sha256};
use secnet_types::limits::MAX_BLOCK_BYTES;
use secnet_types::{Block, Hash};
use std::sync::Arc;

pub use secnet_certified::digest_of;

/// The SecNet block hash of a consensus digest.
pub fn hash_of(digest: &sha256::Digest) -> Hash {
    Hash(digest.0)
}

/// A SecNet block carried by consensus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBlock {
    block: Arc<Block>,
    hash: Hash,
}

impl ChainBlock {
    /// Wraps a block, computing its hash once.
    pub fn new(block: Block) -> ChainBlock {
        ChainBlock {
            hash: block.hash(),
            block: Arc::new(block),
        }
    }

    /// The block.
    pub fn block(&self) -> &Block {
        &self.block
    }

    /// The block hash.
    pub fn hash(&self) -> Hash {
        self.hash
    }
}

impl Digestible for ChainBlock {
    type Digest = sha256::Digest;
    fn digest(&self) -> sha256::Digest {
        digest_of(&self.hash)
    }
}

impl Heightable for ChainBlock {
    fn height(&self) -> Height {
        Height::new(self.block.header.height)
    }
}

impl commonware_consensus::Block for ChainBlock {
    fn parent(&self) -> sha256::Digest {
        digest_of(&self.block.header.parent)
    }
}

impl Write for ChainBlock {
    fn write(&self, buf: &mut impl BufMut) {
        self.block.write(buf);
    }
}

impl EncodeSize for ChainBlock {
    fn encode_size(&self) -> usize {
        self.block.encode_size()
    }
}

impl Read for ChainBlock {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(ChainBlock::new(Block::read_cfg(buf, &())?))
    }
}

impl BoundedBlock for ChainBlock {
    fn max_encode_size(_: &()) -> usize {
        MAX_BLOCK_BYTES
    }
}
