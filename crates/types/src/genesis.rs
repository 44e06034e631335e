//! The genesis file: a network's chain id, its validators and its initial balances.

use crate::account::AccountId;
use crate::hash::Hash;
use crate::limits::MAX_CHAIN_ID;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// An initial balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// The funded account.
    pub account: AccountId,
    /// Its balance at height 0.
    pub balance: u64,
}

/// A validator of the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validator {
    /// Its ed25519 public key (also its account).
    pub key: AccountId,
    /// Where its peers reach it (`host:port`).
    pub address: String,
    /// The organisation that runs it, as people see it ("Northside Hospital"); may be empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Everything that defines height 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// The network's name; every transaction carries it.
    pub chain_id: String,
    /// The timestamp of height 0, milliseconds since the Unix epoch.
    pub genesis_time_ms: u64,
    /// Initial balances.
    pub allocations: Vec<Allocation>,
    /// The validator set (empty in single-node mode, where the node key produces blocks).
    #[serde(default)]
    pub validators: Vec<Validator>,
}

/// A genesis that cannot start a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    /// Chain id empty or too long.
    #[error("chain id must be 1..={MAX_CHAIN_ID} bytes, got {0:?}")]
    BadChainId(String),
    /// An account funded twice.
    #[error("account {0} is allocated twice")]
    DuplicateAllocation(AccountId),
    /// Balances that do not fit in 64 bits.
    #[error("the allocations sum to more than 2^64 - 1")]
    SupplyOverflow,
    /// A validator listed twice.
    #[error("validator {0} is listed twice")]
    DuplicateValidator(AccountId),
    /// A validator's name is too long or holds control characters.
    #[error(
        "validator {0}'s name must be at most {MAX_VALIDATOR_NAME} bytes without control characters"
    )]
    BadName(AccountId),
}

/// Longest validator name.
pub const MAX_VALIDATOR_NAME: usize = 64;

impl Genesis {
    /// A single node's genesis (no validators: the node key produces blocks) of chain
    /// `chain_id` at `genesis_time_ms`, where each of `accounts` starts with `balance`.
    pub fn single_node(
        chain_id: &str,
        genesis_time_ms: u64,
        accounts: impl IntoIterator<Item = AccountId>,
        balance: u64,
    ) -> Genesis {
        Genesis {
            chain_id: chain_id.into(),
            genesis_time_ms,
            allocations: accounts
                .into_iter()
                .map(|account| Allocation { account, balance })
                .collect(),
            validators: vec![],
        }
    }

    /// Checks the genesis is usable.
    pub fn validate(&self) -> Result<(), GenesisError> {
        // The chain id names the access log in checkpoint notes and the validators' cosigner
        // names: letters, digits, `-`, `_` and `.` only.
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if self.chain_id.is_empty()
            || self.chain_id.len() > MAX_CHAIN_ID
            || !self.chain_id.chars().all(allowed)
        {
            return Err(GenesisError::BadChainId(self.chain_id.clone()));
        }
        let mut seen = BTreeSet::new();
        let mut supply: u64 = 0;
        for a in &self.allocations {
            if !seen.insert(a.account) {
                return Err(GenesisError::DuplicateAllocation(a.account));
            }
            supply = supply
                .checked_add(a.balance)
                .ok_or(GenesisError::SupplyOverflow)?;
        }
        let mut validators = BTreeSet::new();
        for v in &self.validators {
            if !validators.insert(v.key) {
                return Err(GenesisError::DuplicateValidator(v.key));
            }
            if v.name.len() > MAX_VALIDATOR_NAME || v.name.chars().any(char::is_control) {
                return Err(GenesisError::BadName(v.key));
            }
        }
        Ok(())
    }

    /// The total supply: the sum of all allocations.
    pub fn total_supply(&self) -> u64 {
        self.allocations
            .iter()
            .fold(0u64, |acc, a| acc.saturating_add(a.balance))
    }

    /// The block at height 0: no transactions, its parent field set to the genesis hash so
    /// that every network's chain starts from a different block.
    pub fn block(&self) -> crate::Block {
        crate::Block::new(0, self.hash(), self.genesis_time_ms, Vec::new())
    }

    /// A hash that identifies this network: two nodes with different genesis hashes refuse
    /// to talk to each other.
    pub fn hash(&self) -> Hash {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"secnet/genesis/v1");
        bytes.extend_from_slice(&(self.chain_id.len() as u64).to_be_bytes());
        bytes.extend_from_slice(self.chain_id.as_bytes());
        bytes.extend_from_slice(&self.genesis_time_ms.to_be_bytes());
        bytes.extend_from_slice(&(self.allocations.len() as u64).to_be_bytes());
        for a in &self.allocations {
            bytes.extend_from_slice(a.account.as_bytes());
            bytes.extend_from_slice(&a.balance.to_be_bytes());
        }
        bytes.extend_from_slice(&(self.validators.len() as u64).to_be_bytes());
        for v in &self.validators {
            bytes.extend_from_slice(v.key.as_bytes());
            bytes.extend_from_slice(&(v.address.len() as u64).to_be_bytes());
            bytes.extend_from_slice(v.address.as_bytes());
        }
        // Names were added later: a genesis without any hashes as it always did.
        if self.validators.iter().any(|v| !v.name.is_empty()) {
            bytes.extend_from_slice(b"names");
            for v in &self.validators {
                bytes.extend_from_slice(&(v.name.len() as u64).to_be_bytes());
                bytes.extend_from_slice(v.name.as_bytes());
            }
        }
        Hash::digest(&bytes)
    }
}
