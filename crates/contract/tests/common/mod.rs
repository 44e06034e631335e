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

use secnet_contract::{BlockOutcome, State};
use secnet_types::{
    AccountId, Allocation, Block, Call, DataKind, Genesis, Hash, Keypair, Receipt, RegisterData,
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
}

impl Harness {
    pub fn new(accounts: usize, balance: u64) -> Harness {
        let keys: Vec<Keypair> = (0..accounts as u64)
            .map(|i| Keypair::deterministic("harness", i))
            .collect();
        let genesis = Genesis {
            chain_id: CHAIN.into(),
            genesis_time_ms: START_MS,
            allocations: keys
                .iter()
                .map(|k| Allocation {
                    account: k.account(),
                    balance,
                })
                .collect(),
            validators: vec![],
        };
        Harness {
            state: State::genesis(&genesis),
            keys,
            nonces: BTreeMap::new(),
            blocks: vec![],
            genesis,
        }
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
