//! Property tests: the contract against a small, obviously correct reference model.
//!
//! Checked after every block: each receipt is applied exactly when the model says so,
//! balances and nonces equal the model's, the sum of balances equals genesis, only owners
//! withdraw, nobody is charged twice, replays are refused, and replaying the same blocks
//! from genesis (or rebuilding from the stored entries) gives the same state root.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use common::{CHAIN, Harness, data_hash, register};
use proptest::prelude::*;
use secnet_contract::State;
use secnet_types::{Call, SignedTransaction, Transaction};
use std::collections::BTreeMap;

const ACCOUNTS: usize = 4;
const GENESIS_BALANCE: u64 = 1_000;
/// Data hashes the ops name: `data_hash(0..DATA)`.
const DATA: u64 = 3;

#[derive(Debug, Clone)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        amount: u64,
    },
    Register {
        sender: usize,
        data: u64,
        addr: u8,
        price: u64,
        holder: usize,
        share: u16,
    },
    Withdraw {
        sender: usize,
        data: u64,
    },
    Subscribe {
        sender: usize,
        data: u64,
    },
    Request {
        sender: usize,
        data: u64,
        by_address: bool,
    },
    Replay {
        index: usize,
    },
    WrongChain {
        sender: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let acct = 0..ACCOUNTS;
    prop_oneof![
        (acct.clone(), acct.clone(), 0u64..700).prop_map(|(from, to, amount)| Op::Transfer {
            from,
            to,
            amount
        }),
        (
            acct.clone(),
            0u64..DATA,
            0u8..3,
            0u64..400,
            acct.clone(),
            prop_oneof![0u16..=10_000, Just(10_001)]
        )
            .prop_map(|(sender, data, addr, price, holder, share)| Op::Register {
                sender,
                data,
                addr,
                price,
                holder,
                share
            }),
        (acct.clone(), 0u64..DATA).prop_map(|(sender, data)| Op::Withdraw { sender, data }),
        (acct.clone(), 0u64..DATA).prop_map(|(sender, data)| Op::Subscribe { sender, data }),
        (acct.clone(), 0u64..DATA, any::<bool>()).prop_map(|(sender, data, by_address)| {
            Op::Request {
                sender,
                data,
                by_address,
            }
        }),
        (0usize..1000).prop_map(|index| Op::Replay { index }),
        acct.prop_map(|sender| Op::WrongChain { sender }),
    ]
}

#[derive(Debug, Clone)]
struct ModelListing {
    owner: usize,
    holder: usize,
    share: u16,
    price: u64,
    addr: u8,
    registration: u64,
}

#[derive(Default)]
struct Model {
    balances: BTreeMap<usize, u64>,
    nonces: BTreeMap<usize, u64>,
    listings: BTreeMap<u64, ModelListing>,
    subs: BTreeMap<(u64, usize), u64>,
    registrations: u64,
}

impl Model {
    fn subscribed(&self, data: u64, who: usize) -> bool {
        matches!((self.listings.get(&data), self.subs.get(&(data, who))), (Some(l), Some(r)) if l.registration == *r)
    }

    /// Applies an op whose signature, chain and nonce are valid; returns whether it succeeds.
    fn apply(&mut self, op: &Op) -> bool {
        match *op {
            Op::Transfer { from, to, amount } => {
                if self.balances[&from] < amount {
                    return false;
                }
                *self.balances.get_mut(&from).unwrap() -= amount;
                *self.balances.get_mut(&to).unwrap() += amount;
                true
            }
            Op::Register {
                sender,
                data,
                addr,
                price,
                holder,
                share,
            } => {
                if share > 10_000
                    || self.listings.contains_key(&data)
                    || self.listings.values().any(|l| l.addr == addr)
                {
                    return false;
                }
                self.registrations += 1;
                self.listings.insert(
                    data,
                    ModelListing {
                        owner: sender,
                        holder,
                        share,
                        price,
                        addr,
                        registration: self.registrations,
                    },
                );
                true
            }
            Op::Withdraw { sender, data } => match self.listings.get(&data) {
                Some(l) if l.owner == sender => {
                    self.listings.remove(&data);
                    true
                }
                _ => false,
            },
            Op::Subscribe { sender, data } => {
                let Some(l) = self.listings.get(&data).cloned() else {
                    return false;
                };
                if self.subscribed(data, sender) || self.balances[&sender] < l.price {
                    return false;
                }
                let holder_amount = l.price * u64::from(l.share) / 10_000;
                *self.balances.get_mut(&sender).unwrap() -= l.price;
                *self.balances.get_mut(&l.holder).unwrap() += holder_amount;
                *self.balances.get_mut(&l.owner).unwrap() += l.price - holder_amount;
                self.subs.insert((data, sender), l.registration);
                true
            }
            Op::Request { sender, data, .. } => self.subscribed(data, sender),
            Op::Replay { .. } | Op::WrongChain { .. } => false,
        }
    }
}

fn addr(a: u8) -> String {
    format!("pdc://node/{a}")
}

fn call_for(h: &Harness, op: &Op) -> (usize, Call) {
    match *op {
        Op::Transfer { from, to, amount } => (
            from,
            Call::Transfer {
                to: h.id(to),
                amount,
            },
        ),
        Op::Register {
            sender,
            data,
            addr: a,
            price,
            holder,
            share,
        } => (
            sender,
            register(data_hash(data), &addr(a), price, h.id(holder), share),
        ),
        Op::Withdraw { sender, data } => (
            sender,
            Call::WithdrawData {
                hash: data_hash(data),
            },
        ),
        Op::Subscribe { sender, data } => (
            sender,
            Call::SubscribeData {
                hash: data_hash(data),
            },
        ),
        Op::Request {
            sender,
            data,
            by_address,
        } => {
            // Ask by address when the listing is known before this block; the model's answer
            // is the same either way, since an address resolves to exactly one listing.
            let listing = h.state.listing(&data_hash(data));
            match (by_address, listing) {
                (true, Some(l)) => (
                    sender,
                    Call::RequestDataWithAddress {
                        address: l.address.clone(),
                        purpose: "p".into(),
                        ttl_secs: 60,
                    },
                ),
                _ => (
                    sender,
                    Call::RequestDataWithHash {
                        hash: data_hash(data),
                        purpose: "p".into(),
                        ttl_secs: 60,
                    },
                ),
            }
        }
        Op::Replay { .. } | Op::WrongChain { .. } => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn contract_matches_reference_model(blocks in prop::collection::vec(prop::collection::vec(op(), 1..8), 1..12)) {
        let mut h = Harness::new(ACCOUNTS, GENESIS_BALANCE);
        let mut model = Model::default();
        for i in 0..ACCOUNTS { model.balances.insert(i, GENESIS_BALANCE); model.nonces.insert(i, 0); }
        let mut history: Vec<SignedTransaction> = Vec::new();

        for ops in &blocks {
            let mut txs = Vec::new();
            let mut expected = Vec::new();
            for op in ops {
                match *op {
                    Op::Replay { index } if !history.is_empty() => {
                        txs.push(history[index % history.len()].clone());
                        expected.push(false);
                    }
                    Op::Replay { .. } => {}
                    Op::WrongChain { sender } => {
                        let tx = Transaction { chain_id: "elsewhere".into(), sender: h.id(sender), nonce: model.nonces[&sender], call: Call::Transfer { to: h.id(0), amount: 1 } };
                        txs.push(tx.sign(&h.keys[sender]));
                        expected.push(false);
                    }
                    _ => {
                        // The model applies ops one at a time, as the contract does within
                        // a block; the nonce comes from the model.
                        let (sender, call) = call_for(&h, op);
                        let nonce = model.nonces[&sender];
                        let tx = Transaction { chain_id: CHAIN.into(), sender: h.id(sender), nonce, call };
                        *model.nonces.get_mut(&sender).unwrap() += 1;
                        expected.push(model.apply(op));
                        let stx = tx.sign(&h.keys[sender]);
                        history.push(stx.clone());
                        txs.push(stx);
                    }
                }
            }
            let out = h.block(txs);
            let applied: Vec<bool> = out.receipts.iter().map(|r| r.is_applied()).collect();
            prop_assert_eq!(&applied, &expected, "receipts {:?}", out.receipts);
            for i in 0..ACCOUNTS {
                let acct = h.state.account(&h.id(i));
                prop_assert_eq!(acct.balance, model.balances[&i], "balance of {}", i);
                prop_assert_eq!(acct.nonce, model.nonces[&i], "nonce of {}", i);
            }
            prop_assert_eq!(h.state.total_balance(), (ACCOUNTS as u128) * u128::from(GENESIS_BALANCE));
            // What the outcomes wrote is what the state reads: every listing, and no other.
            let stored = h.listings();
            for listing in &stored {
                prop_assert_eq!(h.state.listing(&listing.hash), Some(listing.clone()));
                prop_assert!(h.state.is_listed(&listing.hash));
            }
            for n in 0..DATA {
                let listed = stored.iter().any(|l| l.hash == data_hash(n));
                prop_assert_eq!(h.state.is_listed(&data_hash(n)), listed, "data {}", n);
            }
        }

        // Same blocks from genesis: same root.
        let mut replay = State::genesis(&h.genesis);
        for b in &h.blocks { replay.apply_block(b).unwrap(); }
        prop_assert_eq!(replay.state_root(), h.state.state_root());
        // Rebuilt from the entries the outcomes wrote: same root, same listings.
        let rebuilt = State::from_entries(
            CHAIN.into(), h.state.tip(), h.entries(), h.frontier(h.state.log().len()),
        ).unwrap();
        prop_assert_eq!(rebuilt.state_root(), h.state.state_root());
        for listing in h.listings() {
            prop_assert_eq!(rebuilt.listing(&listing.hash), Some(listing));
        }
    }
}
