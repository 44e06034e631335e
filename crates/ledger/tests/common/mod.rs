//! Keys, genesis and old formats the ledger's tests share.
#![allow(dead_code, reason = "each test crate uses a part of it")]

use redb::{ReadableTable as _, TableDefinition};
use secnet_types::{Genesis, Keypair};
use std::collections::BTreeMap;

/// `n` deterministic keys of network `chain`.
pub fn keys(chain: &str, n: u64) -> Vec<Keypair> {
    (0..n).map(|i| Keypair::deterministic(chain, i)).collect()
}

/// A genesis of network `chain` funding the first `n` of its [`keys`], with no validators.
pub fn genesis(chain: &str, n: u64) -> Genesis {
    Genesis::single_node(
        chain,
        1_000,
        keys(chain, n).iter().map(Keypair::account),
        1_000_000,
    )
}

/// Stores every block whole again, as ledgers of format 10 and before did (the current format
/// cuts each into chunks).
pub fn whole_blocks(w: &redb::WriteTransaction) {
    const BLOCK_CHUNKS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("block_chunks");
    const WHOLE_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
    {
        let chunks = w.open_table(BLOCK_CHUNKS).unwrap();
        let mut whole: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for row in chunks.iter().unwrap() {
            let (key, chunk) = row.unwrap();
            whole
                .entry(key.value().0)
                .or_default()
                .extend_from_slice(chunk.value());
        }
        let mut blocks = w.open_table(WHOLE_BLOCKS).unwrap();
        for (height, bytes) in whole {
            blocks.insert(height, bytes.as_slice()).unwrap();
        }
    }
    w.delete_table(BLOCK_CHUNKS).unwrap();
}
