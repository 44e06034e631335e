//! A harness that drives the contract block by block with deterministic keys.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

use secnet_contract::{BlockOutcome, Listing, State, StateKey, StateValue};
use secnet_merkle::log::{Frontier, MerkleLog};
use secnet_types::{
    AccountId, Block, Call, DataKind, Genesis, Hash, Keypair, Receipt, RegisterData,
    SignedTransaction, Transaction,
};
use std::collections::BTreeMap;

pub const CHAIN: &str = "secnet-test";
pub const START_MS: u64 = 1_700_000_000_000;

pub struct Harness {
    pub state: State,
    pub keys: Vec<Keypair>,
    pub nonces: BTreeMap<AccountId, u64>,
    pub blocks: Vec<Block>,
    pub genesis: Genesis,
    /// Every leaf the blocks appended to the access log, with every interior hash: what a
    /// ledger stores beside the state, which keeps only the log's right edge.
    pub log: MerkleLog,
    /// Every entry's key and value bytes, as the blocks' outcomes wrote them: what a ledger
    /// stores of the state.
    pub stored: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Harness {
    pub fn new(accounts: usize, balance: u64) -> Harness {
        let keys: Vec<Keypair> = (0..accounts as u64)
            .map(|i| Keypair::deterministic("harness", i))
            .collect();
        let genesis =
            Genesis::single_node(CHAIN, START_MS, keys.iter().map(Keypair::account), balance);
        let stored = State::genesis_entries(&genesis)
            .into_iter()
            .map(|(k, v)| (k.to_bytes(), v.to_bytes()))
            .collect();
        Harness {
            state: State::genesis(&genesis),
            keys,
            nonces: BTreeMap::new(),
            blocks: vec![],
            genesis,
            log: MerkleLog::new(),
            stored,
        }
    }

    /// Every stored entry, decoded, in key order.
    pub fn entries(&self) -> Vec<(StateKey, StateValue)> {
        self.stored
            .iter()
            .map(|(k, v)| {
                let key = StateKey::from_bytes(k).unwrap();
                let value = StateValue::from_bytes(&key, v).unwrap();
                (key, value)
            })
            .collect()
    }

    /// Every stored listing, in hash order.
    pub fn listings(&self) -> Vec<Listing> {
        self.entries()
            .into_iter()
            .filter_map(|(_, v)| v.into_listing())
            .collect()
    }

    /// The right edge of the first `size` leaves of the stored log, read the way a ledger
    /// reads it back: from the hashes of its complete subtrees.
    pub fn frontier(&self, size: u64) -> Frontier {
        let peaks: Vec<[u8; 32]> = Frontier::peak_positions(size)
            .into_iter()
            .map(|(level, index)| subtree(&self.log, level, index).unwrap())
            .collect();
        Frontier::from_peaks(size, &peaks).unwrap()
    }

    pub fn id(&self, i: usize) -> AccountId {
        self.keys[i].account()
    }

    pub fn balance(&self, i: usize) -> u64 {
        self.state.account(&self.id(i)).balance
    }

    /// Signs `call` from account `i` with its next nonce.
    pub fn tx(&mut self, i: usize, call: Call) -> SignedTransaction {
        let sender = self.id(i);
        let nonce = self.nonces.entry(sender).or_insert(0);
        let tx = Transaction {
            chain_id: CHAIN.into(),
            sender,
            nonce: *nonce,
            call,
        };
        *nonce += 1;
        tx.sign(&self.keys[i])
    }

    /// Applies one block holding `txs`, one second after the previous one.
    pub fn block(&mut self, txs: Vec<SignedTransaction>) -> BlockOutcome {
        self.block_after(1_000, txs)
    }

    /// Applies one block holding `txs`, `ms` after the previous one.
    pub fn block_after(&mut self, ms: u64, txs: Vec<SignedTransaction>) -> BlockOutcome {
        let tip = self.state.tip();
        let block = Block::new(tip.height + 1, tip.block_hash, tip.timestamp_ms + ms, txs);
        let outcome = self.state.apply_block(&block).expect("block applies");
        for write in &outcome.writes {
            match &write.value {
                Some(value) => self.stored.insert(write.key.clone(), value.to_vec()),
                None => self.stored.remove(&write.key),
            };
        }
        for leaf in &outcome.log_leaves {
            self.log.append(leaf);
        }
        // The interior subtrees the block reports are the log's, each once.
        let expected = (outcome.first_log_index..self.log.len())
            .map(|i| (i + 1).trailing_zeros() as usize)
            .sum::<usize>();
        assert_eq!(outcome.log_subtrees.len(), expected);
        for node in &outcome.log_subtrees {
            assert_eq!(subtree(&self.log, node.level, node.index), Some(node.hash));
        }
        self.blocks.push(block);
        outcome
    }

    /// Applies one transaction in its own block and returns its receipt.
    pub fn run(&mut self, i: usize, call: Call) -> Receipt {
        let tx = self.tx(i, call);
        let mut out = self.block(vec![tx]);
        out.receipts.remove(0)
    }
}

pub fn data_hash(n: u64) -> Hash {
    Hash::digest(&n.to_be_bytes())
}

pub fn register(hash: Hash, address: &str, price: u64, holder: AccountId, share_bps: u16) -> Call {
    Call::RegisterData(RegisterData {
        hash,
        description: format!("record {address}"),
        address: address.into(),
        price,
        kind: DataKind::UserData,
        holder,
        holder_share_bps: share_bps,
    })
}

/// The hash of the complete subtree (`level`, `index`) of `log`.
fn subtree(log: &MerkleLog, level: u32, index: u64) -> Option<[u8; 32]> {
    secnet_merkle::log::Subtrees::complete(log, level, index).ok()
}
