//! SecNet validators: the ledger of `secnet-ledger` as a Commonware application.
//!
//! Simplex consensus orders blocks; marshal disseminates them, backfills what a node missed
//! and delivers finalized blocks in height order; the executor applies each finalized block
//! to the ledger and only then acknowledges it (execute-then-acknowledge), skipping blocks
//! at or below the ledger's height after a restart. All Commonware glue lives in this crate.

pub mod application;
pub mod block;
pub mod chain;
pub mod engine;
pub mod executor;
pub mod gossip;
pub mod node;
pub mod recovery;
mod verified;
