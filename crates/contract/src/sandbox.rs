//! An in-process ledger for experiments, benchmarks and tests: funded accounts whose keys it
//! holds, transactions signed with the next nonce, and blocks applied to a [`State`] one
//! second apart. Deterministic: the same calls give the same state root.

use crate::{BlockOutcome, BlockRejected, State};
use secnet_merkle::log::MerkleLog;
use secnet_types::{
    AccountId, Block, Call, Genesis, Keypair, Receipt, SignedTransaction, Transaction,
};

/// Milliseconds between two sandbox blocks.
pub const BLOCK_INTERVAL_MS: u64 = 1000;
/// The sandbox's genesis time.
pub const GENESIS_TIME_MS: u64 = 1_700_000_000_000;

/// A ledger with its accounts' keys.
#[derive(Debug)]
pub struct Sandbox {
    /// The contract state (blocks go through [`Sandbox::commit`] or [`Sandbox::apply`],
    /// which keep [`Sandbox::log`] with it).
    pub state: State,
    /// The access log with every interior hash, which proves any leaf (the state keeps only
    /// its right edge; a node's ledger stores the rest).
    pub log: MerkleLog,
    chain_id: String,
    keys: Vec<Keypair>,
    nonces: Vec<u64>,
    pending: Vec<SignedTransaction>,
}

impl Sandbox {
    /// A ledger of chain `chain_id` where each of `keys` starts with `balance`.
    pub fn new(chain_id: &str, keys: Vec<Keypair>, balance: u64) -> Sandbox {
        let genesis = Genesis::single_node(
            chain_id,
            GENESIS_TIME_MS,
            keys.iter().map(Keypair::account),
            balance,
        );
        Sandbox {
            state: State::genesis(&genesis),
            log: MerkleLog::new(),
            chain_id: chain_id.into(),
            nonces: vec![0; keys.len()],
            keys,
            pending: Vec::new(),
        }
    }

    /// Account `i`'s key.
    pub fn key(&self, i: usize) -> Option<&Keypair> {
        self.keys.get(i)
    }

    /// Account `i` (zeros if there is no such account).
    pub fn account(&self, i: usize) -> AccountId {
        self.keys
            .get(i)
            .map_or(AccountId([0; 32]), Keypair::account)
    }

    /// Account `i`'s balance.
    pub fn balance(&self, i: usize) -> u64 {
        self.state.account(&self.account(i)).balance
    }

    /// The time of the last block.
    pub fn now_ms(&self) -> u64 {
        self.state.tip().timestamp_ms
    }

    /// Signs `call` as account `i` with its next nonce and queues it for the next block.
    /// Does nothing for an account the sandbox does not have.
    pub fn submit(&mut self, i: usize, call: Call) {
        let (Some(key), Some(nonce)) = (self.keys.get(i), self.nonces.get_mut(i)) else {
            return;
        };
        let tx = Transaction {
            chain_id: self.chain_id.clone(),
            sender: key.account(),
            nonce: *nonce,
            call,
        };
        *nonce += 1;
        self.pending.push(tx.sign(key));
    }

    /// Applies the queued transactions as the next block.
    pub fn commit(&mut self) -> Result<BlockOutcome, BlockRejected> {
        let tip = self.state.tip();
        let block = Block::new(
            tip.height + 1,
            tip.block_hash,
            tip.timestamp_ms + BLOCK_INTERVAL_MS,
            std::mem::take(&mut self.pending),
        );
        self.apply(&block)
    }

    /// Applies `block` (built by the caller) to the state and its leaves to the log.
    pub fn apply(&mut self, block: &Block) -> Result<BlockOutcome, BlockRejected> {
        let outcome = self.state.apply_block(block)?;
        for leaf in &outcome.log_leaves {
            self.log.append(leaf);
        }
        Ok(outcome)
    }

    /// Runs one call as account `i` in a block of its own and returns its receipt.
    pub fn run(&mut self, i: usize, call: Call) -> Result<Receipt, SandboxError> {
        if i >= self.keys.len() {
            return Err(SandboxError::NoAccount(i));
        }
        self.submit(i, call);
        self.commit()?
            .receipts
            .pop()
            .ok_or(SandboxError::NoAccount(i))
    }
}

/// A sandbox call that could not run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No such account.
    #[error("the sandbox has no account {0}")]
    NoAccount(usize),
    /// The block was refused.
    #[error("block refused: {0}")]
    Block(#[from] BlockRejected),
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn calls_run_in_blocks_one_interval_apart() {
        let keys = (0..2)
            .map(|i| Keypair::deterministic("sandbox", i))
            .collect();
        let mut s = Sandbox::new("secnet-sandbox", keys, 500);
        let to = s.account(1);
        let r = s.run(0, Call::Transfer { to, amount: 120 }).unwrap();
        assert!(r.is_applied());
        assert_eq!((s.balance(0), s.balance(1)), (380, 620));
        assert_eq!(s.now_ms(), GENESIS_TIME_MS + BLOCK_INTERVAL_MS);
        // Nonces follow on: a second call from the same account applies too.
        assert!(
            s.run(0, Call::Transfer { to, amount: 1 })
                .unwrap()
                .is_applied()
        );
        assert!(matches!(
            s.run(7, Call::Transfer { to, amount: 1 }),
            Err(SandboxError::NoAccount(7))
        ));
    }
}
