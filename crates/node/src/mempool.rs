//! The mempool: transactions admitted after their signature, chain id and nonce are checked,
//! deduplicated, bounded, and handed out in arrival order (which is nonce order per sender).
//!
//! What a sender may have pending is backed by what it holds: one pending transaction per
//! unit of committed balance, at most [`MAX_PENDING_PER_SENDER`]. Every sender, funded or
//! not, may have [`FREE_PENDING_PER_SENDER`] pending (a new patient registering a key has no
//! balance yet); the transactions no balance backs share one lane of
//! [`MAX_FREE_PENDING`] in the whole pool, so fresh keys can crowd that lane but never the
//! funded senders' share, and sending more at once takes proportionally more balance.

use secnet_contract::State;
use secnet_types::{AccountId, Hash, SignedTransaction};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

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
    /// The sender has as many pending as its balance backs.
    #[error(
        "sender {sender} has {pending} transactions pending and a balance of {balance}: a sender may have one pending per unit it holds ({FREE_PENDING_PER_SENDER} at least, {MAX_PENDING_PER_SENDER} at most); retry when some are committed"
    )]
    SenderBusy {
        /// The sender.
        sender: AccountId,
        /// Its pending transactions.
        pending: u64,
        /// Its committed balance.
        balance: u64,
    },
    /// What the sender's pending transactions would spend, with this one, is more than
    /// its balance: all of them cannot apply (busy, if this one alone fits the balance;
    /// wrong, if it alone spends more than the sender holds).
    #[error("{}", overspend_message(sender, *balance, *pending_spend, *spend))]
    Overspend {
        /// The sender.
        sender: AccountId,
        /// Its committed balance.
        balance: u64,
        /// What its pending transactions would spend (transfers, listing prices).
        pending_spend: u64,
        /// What this one would spend.
        spend: u64,
    },
    /// The lane of transactions no balance backs is full.
    #[error(
        "{0} transactions that no sender's balance backs are pending, the most the pool takes: retry later, or send from a funded account"
    )]
    FreeLaneFull(usize),
}

fn overspend_message(sender: &AccountId, balance: u64, pending_spend: u64, spend: u64) -> String {
    if spend > balance {
        format!("sender {sender} holds {balance}; this transaction would spend {spend}")
    } else {
        format!(
            "sender {sender} holds {balance}, and its pending transactions would spend {pending_spend} before this one's {spend}: retry when some are committed"
        )
    }
}

impl AdmitError {
    /// Whether the same transaction may be admitted later (the pool, the sender's share or
    /// the free lane was full), rather than being wrong.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            AdmitError::Full(_) | AdmitError::SenderBusy { .. } | AdmitError::FreeLaneFull(_)
        ) || matches!(self, AdmitError::Overspend { balance, spend, .. } if spend <= balance)
    }
}

/// Pending transactions any sender may have, whatever its balance.
pub const FREE_PENDING_PER_SENDER: u64 = 8;
/// Most pending transactions of one sender.
pub const MAX_PENDING_PER_SENDER: u64 = 16_384;
/// Most pending transactions in the pool that no sender's balance backs.
pub const MAX_FREE_PENDING: usize = 1_024;

/// Pending transactions.
///
/// A transaction stays in the pool until a committed block consumes its nonce: proposing it
/// does not remove it, so a proposal that never commits loses nothing.
#[derive(Debug)]
pub struct Mempool {
    /// Arrival order. A transaction that left the pool stays here, skipped, until the queue
    /// is compacted (when such entries are more than a quarter of it).
    queue: VecDeque<SignedTransaction>,
    pending: HashSet<Hash>,
    /// Per sender: its pending transactions by nonce, so that a block's senders are settled
    /// without scanning the pool.
    by_sender: HashMap<AccountId, BTreeSet<(u64, Hash)>>,
    /// Per sender: the next nonce to admit.
    next_nonce: HashMap<AccountId, u64>,
    /// Pending transactions that no balance backed when they were admitted.
    free: HashSet<Hash>,
    /// What each pending transaction would spend (a transfer's amount, a listing's price).
    spend_of: HashMap<Hash, u64>,
    /// Per sender: what its pending transactions would spend in all.
    spending: HashMap<AccountId, u64>,
    capacity: usize,
    max_free: usize,
}

impl Mempool {
    /// An empty pool holding at most `capacity` transactions.
    pub fn new(capacity: usize) -> Mempool {
        Mempool {
            queue: VecDeque::new(),
            pending: HashSet::new(),
            by_sender: HashMap::new(),
            next_nonce: HashMap::new(),
            free: HashSet::new(),
            spend_of: HashMap::new(),
            spending: HashMap::new(),
            capacity,
            max_free: MAX_FREE_PENDING.min(capacity),
        }
    }

    /// Checks `tx` against `state` and queues it.
    pub fn admit(&mut self, tx: SignedTransaction, state: &State) -> Result<Hash, AdmitError> {
        self.admit_with(tx, state, SignedTransaction::verify_signature)
    }

    /// Like [`Mempool::admit`], for a transaction whose signature the caller already checked
    /// (e.g. in a batch, outside any lock): `signature_valid` is that check's result.
    pub fn admit_checked(
        &mut self,
        tx: SignedTransaction,
        state: &State,
        signature_valid: bool,
    ) -> Result<Hash, AdmitError> {
        self.admit_with(tx, state, |_| signature_valid)
    }

    fn admit_with(
        &mut self,
        tx: SignedTransaction,
        state: &State,
        verify: impl FnOnce(&SignedTransaction) -> bool,
    ) -> Result<Hash, AdmitError> {
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
            .next_nonce
            .get(&t.sender)
            .map_or(committed, |n| (*n).max(committed));
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
        if !verify(&tx) {
            return Err(AdmitError::BadSignature(t.sender));
        }
        // Pending before this one: the nonces between the committed and this one.
        let pending = expected - committed;
        let balance = state.account(&t.sender).balance;
        let backed = balance.min(MAX_PENDING_PER_SENDER);
        if pending >= backed.max(FREE_PENDING_PER_SENDER) {
            return Err(AdmitError::SenderBusy {
                sender: t.sender,
                pending,
                balance,
            });
        }
        // Value is reserved: what pending transactions would spend cannot pass the balance,
        // so a sender cannot queue payments that cannot all apply.
        let spend = spend_of(t, state);
        let pending_spend = self.spending.get(&t.sender).copied().unwrap_or(0);
        if pending_spend.saturating_add(spend) > balance {
            return Err(AdmitError::Overspend {
                sender: t.sender,
                balance,
                pending_spend,
                spend,
            });
        }
        let free = pending >= backed;
        if free && self.free.len() >= self.max_free {
            return Err(AdmitError::FreeLaneFull(self.free.len()));
        }
        if free {
            self.free.insert(hash);
        }
        if spend > 0 {
            self.spend_of.insert(hash, spend);
            *self.spending.entry(t.sender).or_insert(0) += spend;
        }
        self.next_nonce.insert(t.sender, expected + 1);
        self.by_sender
            .entry(t.sender)
            .or_default()
            .insert((t.nonce, hash));
        self.pending.insert(hash);
        self.queue.push_back(tx);
        Ok(hash)
    }

    /// Queues `tx` without any check, to make a validator propose invalid blocks in fault
    /// tests. Never compiled into a release node.
    #[cfg(feature = "fault-injection")]
    pub fn push_unchecked(&mut self, tx: SignedTransaction) {
        if self.pending.contains(&tx.hash()) {
            return;
        }
        let hash = tx.hash();
        self.queue.retain(|t| t.hash() != hash);
        self.pending.insert(tx.hash());
        self.by_sender
            .entry(tx.tx().sender)
            .or_default()
            .insert((tx.tx().nonce, tx.hash()));
        self.queue.push_back(tx);
    }

    /// Up to `max` transactions for a proposal, in arrival order, skipping those for which
    /// `skip` is true (e.g. already in an uncommitted ancestor).
    pub fn select(&self, max: usize, skip: impl Fn(&Hash) -> bool) -> Vec<SignedTransaction> {
        self.queue
            .iter()
            .filter(|tx| self.pending.contains(&tx.hash()) && !skip(&tx.hash()))
            .take(max)
            .cloned()
            .collect()
    }

    /// Drops every transaction whose nonce the committed `state` has consumed.
    pub fn settle(&mut self, state: &State) {
        let senders: Vec<AccountId> = self.by_sender.keys().copied().collect();
        self.settle_senders(state, senders);
    }

    /// Like [`Mempool::settle`], looking only at `senders`: after a block, its senders are
    /// the only ones whose nonces moved, so settling costs what the block holds, not what
    /// the pool holds.
    pub fn settle_senders(&mut self, state: &State, senders: impl IntoIterator<Item = AccountId>) {
        let mut senders: Vec<AccountId> = senders.into_iter().collect();
        senders.sort_unstable();
        senders.dedup();
        for sender in senders {
            let Some(by_nonce) = self.by_sender.get_mut(&sender) else {
                continue;
            };
            let committed = state.account(&sender).nonce;
            let still = by_nonce.split_off(&(committed, Hash([0; 32])));
            let consumed = std::mem::replace(by_nonce, still);
            for (_, hash) in consumed {
                self.pending.remove(&hash);
                self.free.remove(&hash);
                if let Some(spend) = self.spend_of.remove(&hash)
                    && let Some(total) = self.spending.get_mut(&sender)
                {
                    *total = total.saturating_sub(spend);
                }
            }
            match by_nonce.last() {
                Some((last, _)) => {
                    self.next_nonce.insert(sender, last + 1);
                }
                None => {
                    self.by_sender.remove(&sender);
                    self.next_nonce.remove(&sender);
                }
            }
            if self.spending.get(&sender) == Some(&0) {
                self.spending.remove(&sender);
            }
        }
        // Entries that left the pool are dropped from the queue once they are more than a
        // quarter of it: the queue stays within a third more than the pool, and each
        // compaction removes at least a quarter of what it walks.
        if self.queue.len().saturating_sub(self.pending.len()) > self.queue.len() / 4 {
            let pending = &self.pending;
            self.queue.retain(|tx| pending.contains(&tx.hash()));
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
}

/// What `tx` would spend if it applied on `state`: a transfer's amount, or the price of the
/// listing it subscribes to.
fn spend_of(tx: &secnet_types::Transaction, state: &State) -> u64 {
    match &tx.call {
        secnet_types::Call::Transfer { amount, .. } => *amount,
        secnet_types::Call::SubscribeData { hash } => state.listing(hash).map_or(0, |l| l.price),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secnet_types::{Allocation, Call, Genesis, Keypair, Transaction};

    fn setup() -> (State, Keypair) {
        let key = Keypair::deterministic("mempool", 0);
        let genesis = Genesis {
            chain_id: "pool".into(),
            genesis_time_ms: 0,
            allocations: vec![Allocation {
                account: key.account(),
                balance: 100,
            }],
            validators: vec![],
        };
        (State::genesis(&genesis), key)
    }

    /// A transaction that spends nothing.
    fn tx(key: &Keypair, chain: &str, nonce: u64) -> SignedTransaction {
        Transaction {
            chain_id: chain.into(),
            sender: key.account(),
            nonce,
            call: Call::SetEncryptionKey {
                key: key.encryption_key(),
            },
        }
        .sign(key)
    }

    #[test]
    fn admission_checks_chain_nonce_signature_duplicates_and_capacity() {
        let (state, key) = setup();
        let mut pool = Mempool::new(2);
        assert!(matches!(
            pool.admit(tx(&key, "other", 0), &state),
            Err(AdmitError::WrongChain { .. })
        ));
        assert!(matches!(
            pool.admit(tx(&key, "pool", 1), &state),
            Err(AdmitError::NonceGap {
                expected: 0,
                got: 1
            })
        ));
        let first = tx(&key, "pool", 0);
        pool.admit(first.clone(), &state).unwrap();
        assert!(matches!(
            pool.admit(first, &state),
            Err(AdmitError::Duplicate(_))
        ));
        let forged = SignedTransaction::new(
            tx(&key, "pool", 1).tx().clone(),
            secnet_types::Signature([1; 64]),
        );
        assert!(matches!(
            pool.admit(forged, &state),
            Err(AdmitError::BadSignature(_))
        ));
        pool.admit(tx(&key, "pool", 1), &state).unwrap();
        assert_eq!(
            pool.admit(tx(&key, "pool", 2), &state),
            Err(AdmitError::Full(2))
        );
        assert_eq!(pool.select(10, |_| false).len(), 2);
    }

    #[test]
    fn what_a_sender_has_pending_is_backed_by_its_balance() {
        let funded = Keypair::deterministic("mempool-share", 0);
        let poor = Keypair::deterministic("mempool-share", 1);
        let genesis = Genesis {
            chain_id: "pool".into(),
            genesis_time_ms: 0,
            allocations: vec![
                Allocation {
                    account: funded.account(),
                    balance: 20,
                },
                Allocation {
                    account: poor.account(),
                    balance: 3,
                },
            ],
            validators: vec![],
        };
        let mut state = State::genesis(&genesis);
        let mut pool = Mempool::new(100_000);
        // Twenty units back twenty pending; the twenty-first waits.
        for n in 0..20 {
            pool.admit(tx(&funded, "pool", n), &state).unwrap();
        }
        assert_eq!(
            pool.admit(tx(&funded, "pool", 20), &state),
            Err(AdmitError::SenderBusy {
                sender: funded.account(),
                pending: 20,
                balance: 20
            })
        );
        // Three units: three backed, five more free, then no more.
        for n in 0..8 {
            pool.admit(tx(&poor, "pool", n), &state).unwrap();
        }
        assert!(matches!(
            pool.admit(tx(&poor, "pool", 8), &state),
            Err(AdmitError::SenderBusy { pending: 8, .. })
        ));
        // Fresh keys fill the free lane (five of it taken already), and stop there ...
        let mut fresh = 0u64;
        let refused = loop {
            let key = Keypair::deterministic("mempool-fresh", fresh);
            fresh += 1;
            if let Err(e) = pool.admit(tx(&key, "pool", 0), &state) {
                break e;
            }
        };
        assert_eq!(refused, AdmitError::FreeLaneFull(MAX_FREE_PENDING));
        assert!(refused.is_busy());
        assert_eq!(fresh - 1, MAX_FREE_PENDING as u64 - 5);
        // ... while funded senders still get in.
        let tip = state.tip();
        let first = pool.select(20, |_| false);
        state
            .apply_block(&secnet_types::Block::new(1, tip.block_hash, 1, first))
            .unwrap();
        pool.settle(&state);
        pool.admit(tx(&funded, "pool", 20), &state).unwrap();
        // Committed free transactions leave the lane.
        let tip = state.tip();
        let poor_txs: Vec<_> = pool
            .select(100_000, |_| false)
            .into_iter()
            .filter(|t| t.tx().sender == poor.account())
            .collect();
        state
            .apply_block(&secnet_types::Block::new(2, tip.block_hash, 2, poor_txs))
            .unwrap();
        pool.settle(&state);
        let key = Keypair::deterministic("mempool-fresh", fresh);
        pool.admit(tx(&key, "pool", 0), &state).unwrap();
    }

    #[test]
    fn selection_keeps_transactions_until_their_nonce_is_consumed() {
        let (mut state, key) = setup();
        let mut pool = Mempool::new(10);
        let txs: Vec<_> = (0..3).map(|n| tx(&key, "pool", n)).collect();
        for t in &txs {
            pool.admit(t.clone(), &state).unwrap();
        }
        let first = pool.select(1, |_| false);
        assert_eq!(first, txs[..1]);
        // A proposal that never commits loses nothing.
        assert_eq!(pool.select(10, |_| false).len(), 3);
        let tip = state.tip();
        let block = secnet_types::Block::new(1, tip.block_hash, 1, first);
        state.apply_block(&block).unwrap();
        pool.settle(&state);
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.select(10, |h| *h == txs[1].hash()), txs[2..]);
        assert!(matches!(
            pool.admit(txs[0].clone(), &state),
            Err(AdmitError::StaleNonce { .. })
        ));
        pool.admit(tx(&key, "pool", 3), &state).unwrap();
    }

    /// Settling only a block's senders leaves the pool exactly as settling every sender
    /// does: the same pending transactions, selection order, next nonces, reserved spends
    /// and free lane.
    #[test]
    fn settling_a_blocks_senders_agrees_with_settling_the_whole_pool() {
        let keys: Vec<Keypair> = (0..4)
            .map(|i| Keypair::deterministic("settle", i))
            .collect();
        let genesis = Genesis {
            chain_id: "pool".into(),
            genesis_time_ms: 0,
            // The last key holds nothing: its transactions take the free lane.
            allocations: keys[..3]
                .iter()
                .map(|k| Allocation {
                    account: k.account(),
                    balance: 100,
                })
                .collect(),
            validators: vec![],
        };
        let mut state = State::genesis(&genesis);
        let (mut whole, mut by_block) = (Mempool::new(1_000), Mempool::new(1_000));
        let transfer = |k: &Keypair, nonce: u64| {
            Transaction {
                chain_id: "pool".into(),
                sender: k.account(),
                nonce,
                call: Call::Transfer {
                    to: keys[0].account(),
                    amount: 1,
                },
            }
            .sign(k)
        };
        let mut next = [0u64; 4];
        for round in 0..12u64 {
            for (i, k) in keys.iter().enumerate() {
                for _ in 0..=(round + i as u64) % 3 {
                    let t = if i == 1 {
                        transfer(k, next[i])
                    } else {
                        tx(k, "pool", next[i])
                    };
                    let a = whole.admit(t.clone(), &state);
                    assert_eq!(a, by_block.admit(t, &state));
                    if a.is_ok() {
                        next[i] += 1;
                    }
                }
            }
            // Blocks take a few from the front, in arrival order, as a leader would.
            let txs = whole.select(1 + (round as usize * 5) % 9, |_| false);
            assert_eq!(
                txs,
                by_block.select(1 + (round as usize * 5) % 9, |_| false)
            );
            let tip = state.tip();
            let block = secnet_types::Block::new(tip.height + 1, tip.block_hash, round + 1, txs);
            state.apply_block(&block).unwrap();
            whole.settle(&state);
            by_block.settle_senders(&state, block.txs.iter().map(|t| t.tx().sender));
            assert_eq!(whole.len(), by_block.len(), "round {round}");
            assert_eq!(
                whole.select(usize::MAX, |_| false),
                by_block.select(usize::MAX, |_| false)
            );
            assert_eq!(whole.next_nonce, by_block.next_nonce, "round {round}");
            assert_eq!(whole.spending, by_block.spending, "round {round}");
            assert_eq!(whole.free, by_block.free, "round {round}");
            assert_eq!(whole.spend_of, by_block.spend_of, "round {round}");
            assert!(by_block.queue.len() - by_block.pending.len() <= by_block.queue.len() / 4);
        }
        assert!(
            state.account(&keys[3].account()).nonce > 0,
            "the free lane was used"
        );
    }

    #[test]
    fn pending_payments_cannot_spend_more_than_the_sender_holds() {
        let (state, key) = setup();
        let balance = state.account(&key.account()).balance;
        let mut pool = Mempool::new(100);
        let pay = |nonce: u64, amount: u64| {
            Transaction {
                chain_id: "pool".into(),
                sender: key.account(),
                nonce,
                call: Call::Transfer {
                    to: AccountId([9; 32]),
                    amount,
                },
            }
            .sign(&key)
        };
        pool.admit(pay(0, balance - 1), &state).unwrap();
        let refused = pool.admit(pay(1, 2), &state).unwrap_err();
        assert!(
            matches!(refused, AdmitError::Overspend { pending_spend, spend: 2, .. } if pending_spend == balance - 1),
            "{refused}"
        );
        assert!(
            refused.is_busy(),
            "the same transaction may be admitted later"
        );
        // What it holds is still its own to spend, and a call that spends nothing goes in.
        pool.admit(pay(1, 1), &state).unwrap();
        pool.admit(pay(2, 0), &state).unwrap();
        assert!(matches!(
            pool.admit(pay(3, 1), &state),
            Err(AdmitError::Overspend { .. })
        ));
        // Once the pending ones are committed, the reservation goes with them: one unit is
        // left, and it can be spent.
        let mut state = state;
        let tip = state.tip();
        let pending = pool.select(100, |_| false);
        state
            .apply_block(&secnet_types::Block::new(
                tip.height + 1,
                tip.block_hash,
                1,
                pending,
            ))
            .unwrap();
        pool.settle(&state);
        assert!(pool.is_empty());
        assert_eq!(state.account(&key.account()).balance, 0);
        assert!(matches!(
            pool.admit(pay(3, 1), &state),
            Err(AdmitError::Overspend {
                pending_spend: 0,
                ..
            })
        ));
    }
}
