//! Every bound the ledger enforces, in one place. Decoders and the contract both use these.

/// Longest chain id, in bytes.
pub const MAX_CHAIN_ID: usize = 32;
/// Longest data description, in bytes.
pub const MAX_DESCRIPTION: usize = 1024;
/// Longest data address, in bytes.
pub const MAX_ADDRESS: usize = 256;
/// Longest security-rule category name, in bytes.
pub const MAX_CATEGORY: usize = 64;
/// Longest stated purpose of an access request, in bytes.
pub const MAX_PURPOSE: usize = 256;
/// Most access entries one `RecordAccess` transaction may carry.
pub const MAX_ACCESS_ENTRIES: usize = 256;
/// Largest encoded signed transaction, in bytes.
pub const MAX_TX_BYTES: usize = 64 * 1024;
/// Most transactions in one block.
pub const MAX_BLOCK_TXS: usize = 20_000;
/// Largest encoded block, in bytes.
pub const MAX_BLOCK_BYTES: usize = 16 * 1024 * 1024;
/// Most state roots one block header commits to (see `StateCommitment`).
pub const MAX_HEADER_STATE_ROOTS: usize = 64;
/// Longest lifetime of an access grant, in seconds (one day).
pub const MAX_GRANT_TTL_SECS: u32 = 86_400;
/// How long an expired grant stays in the state, in milliseconds of block time (one hour):
/// a holder's records of late accesses can still name it. Then block execution removes it;
/// its issue stays in the access log.
pub const EXPIRED_GRANT_RETENTION_MS: u64 = 3_600_000;
/// Most expired grants one block removes from the state (the rest go in later blocks), so
/// that grants made to expire together cannot make one block's execution spike.
pub const MAX_GRANTS_RETIRED_PER_BLOCK: usize = 1_024;
/// The holder's share of a payment is expressed in basis points of the price.
pub const BASIS_POINTS: u16 = 10_000;
/// Detector scores are parts per million: 0 is surely benign, 1,000,000 surely malicious.
pub const MAX_SCORE_PPM: u32 = 1_000_000;
