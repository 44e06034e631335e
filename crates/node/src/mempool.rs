//! The mempool: transactions admitted after their signature, chain id and nonce are checked,
//! deduplicated, bounded, and handed out in arrival order (which is nonce order per sender).

use secnet_contract::State;
use secnet_types::{AccountId, Hash, SignedTransaction};
use std::collections::{HashMap, HashSet, VecDeque};

/// Why a transaction was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// For another network.
    #[error("transaction is for chain {got:?}, this node serves chain {expected:?}")]
    WrongChain {
        /// This chain.
        expected: String,
        /// The transaction's.
        got: String,
    },
    /// Not signed by the sender.
    #[error("signature does not verify for sender {0}")]
    BadSignature(AccountId),
    /// A nonce already used.
    #[error("nonce {got} was already used; the sender's next nonce is {expected}")]
    StaleNonce {
        /// The next nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// A nonce past the next one: submit the missing ones first.
    #[error("nonce {got} leaves a gap; the sender's next nonce is {expected}")]
    NonceGap {
        /// The next nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// Already pending.
    #[error("transaction {0} is already pending")]
    Duplicate(Hash),
    /// The pool is full.
    #[error("mempool is full ({0} transactions): busy, retry later")]
    Full(usize),
}

/// Pending transactions.
#[derive(Debug)]
pub struct Mempool {
    queue: VecDeque<SignedTransaction>,
    /// Hashes queued or handed to a block that is not yet applied.
    pending: HashSet<Hash>,
    /// Per sender: the next nonce to admit and how many are pending.
    senders: HashMap<AccountId, (u64, usize)>,
    capacity: usize,
}

impl Mempool {
    /// An empty pool holding at most `capacity` transactions.
    pub fn new(capacity: usize) -> Mempool {
        Mempool {
            queue: VecDeque::new(),
            pending: HashSet::new(),
            senders: HashMap::new(),
            capacity,
        }
    }

    /// Checks `tx` against `state` and queues it.
    pub fn admit(&mut self, tx: SignedTransaction, state: &State) -> Result<Hash, AdmitError> {
        let hash = tx.hash();
        if self.pending.contains(&hash) {
            return Err(AdmitError::Duplicate(hash));
        }
        if self.pending.len() >= self.capacity {
            return Err(AdmitError::Full(self.capacity));
        }
        let t = tx.tx();
        if t.chain_id != state.chain_id() {
            return Err(AdmitError::WrongChain {
                expected: state.chain_id().to_string(),
                got: t.chain_id.clone(),
            });
        }
        let committed = state.account(&t.sender).nonce;
        let expected = self
            .senders
            .get(&t.sender)
            .map_or(committed, |s| s.0.max(committed));
        if t.nonce < expected {
            return Err(AdmitError::StaleNonce {
                expected,
                got: t.nonce,
            });
        }
        if t.nonce > expected {
            return Err(AdmitError::NonceGap {
                expected,
                got: t.nonce,
            });
        }
        if !tx.verify_signature() {
            return Err(AdmitError::BadSignature(t.sender));
        }
        let entry = self.senders.entry(t.sender).or_insert((expected, 0));
        *entry = (expected + 1, entry.1 + 1);
        self.pending.insert(hash);
        self.queue.push_back(tx);
        Ok(hash)
    }

    /// Takes up to `max` transactions for the next block; they stay pending until
    /// [`Self::settle`].
    pub fn take(&mut self, max: usize) -> Vec<SignedTransaction> {
        let n = max.min(self.queue.len());
        self.queue.drain(..n).collect()
    }

    /// Forgets transactions that a block included (applied or refused).
    pub fn settle(&mut self, included: &[SignedTransaction]) {
        for tx in included {
            if self.pending.remove(&tx.hash())
                && let Some(s) = self.senders.get_mut(&tx.tx().sender)
            {
                s.1 = s.1.saturating_sub(1);
                if s.1 == 0 {
                    self.senders.remove(&tx.tx().sender);
                }
            }
        }
    }

    /// Whether `hash` is pending.
    pub fn contains(&self, hash: &Hash) -> bool {
        self.pending.contains(hash)
    }

    /// Number of pending transactions.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether transactions are waiting for a block.
    pub fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }
}
