//! Validators in Commonware's deterministic runtime over its simulated network: the same
//! seed gives the same run. Checked on every run: no two different blocks are finalized at
//! one height, all validators reach the same state root, every transaction executes once,
//! and value is conserved.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

use commonware_cryptography::{Signer as _, ed25519};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::{Clock, Metrics as _, Quota, Runner as _, Supervisor as _, deterministic};
use commonware_utils::{NZU32, NZUsize, TryCollect as _, ordered::Set, probability};
use secnet_consensus::chain::Chain;
use secnet_consensus::engine::{Running, Timing, ValidatorConfig, start_validator};
use secnet_ledger::Ledger;
use secnet_types::{Allocation, Call, Genesis, Hash, Keypair, SignedTransaction, Transaction};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const QUOTA: Quota = Quota::per_second(NZU32!(10_000));
const LINK: Link = Link {
    latency: Duration::from_millis(20),
    jitter: Duration::from_millis(5),
    success_rate: probability!(1.0),
};
const CHAIN: &str = "secnet-sim";
const CLIENTS: u64 = 8;
const BALANCE: u64 = 1_000_000;

fn validator_key(i: u64) -> ed25519::PrivateKey {
    ed25519::PrivateKey::from_seed(1_000 + i)
}

fn client(i: u64) -> Keypair {
    Keypair::deterministic("sim-client", i)
}

fn genesis() -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 0,
        allocations: (0..CLIENTS)
            .map(|i| Allocation {
                account: client(i).account(),
                balance: BALANCE,
            })
            .collect(),
        validators: vec![],
    }
}

struct Node {
    chain: Arc<Chain>,
    running: Option<Running>,
    dir: PathBuf,
}

struct Cluster {
    oracle: Oracle<ed25519::PublicKey, deterministic::Context>,
    participants: Set<ed25519::PublicKey>,
    nodes: Vec<Node>,
    genesis: Genesis,
    _dirs: tempfile::TempDir,
}

impl Cluster {
    async fn new(context: &deterministic::Context, n: u64) -> Cluster {
        let participants: Set<ed25519::PublicKey> = (0..n)
            .map(|i| validator_key(i).public_key())
            .try_collect()
            .unwrap();
        let (network, mut oracle) = Network::new_with_peers(
            context.child("network"),
            simulated::Config {
                max_size: 16 * 1024 * 1024,
                max_peers_per_set: NZUsize!(n as usize),
                disconnect_on_block: true,
                tracked_peer_sets: NZUsize!(1),
            },
            participants.clone(),
        )
        .await;
        network.start();
        for a in participants.iter() {
            for b in participants.iter() {
                if a != b {
                    oracle.add_link(a.clone(), b.clone(), LINK).await.unwrap();
                }
            }
        }
        let dirs = tempfile::tempdir().unwrap();
        let mut cluster = Cluster {
            oracle,
            participants,
            nodes: Vec::new(),
            genesis: genesis(),
            _dirs: dirs,
        };
        for i in 0..n {
            let dir = cluster._dirs.path().join(format!("v{i}"));
            let chain = open_chain(&dir, &cluster.genesis);
            cluster.nodes.push(Node {
                chain,
                running: None,
                dir,
            });
            cluster.start(context, i as usize).await;
        }
        cluster
    }

    async fn start(&mut self, context: &deterministic::Context, i: usize) {
        let key = validator_key(i as u64);
        let control = self.oracle.control(key.public_key());
        let mut channel = async |c: u64| control.register(c, QUOTA).await.unwrap();
        let votes = channel(0).await;
        let certificates = channel(1).await;
        let resolver = channel(2).await;
        let backfill = channel(3).await;
        let blocks = channel(4).await;
        let config = ValidatorConfig {
            key,
            participants: self.participants.clone(),
            blocker: control.clone(),
            provider: self.oracle.manager(),
            partition_prefix: format!("validator-{i}"),
            timing: Timing::default(),
        };
        let running = start_validator(
            context.child("validator").with_attribute("index", i),
            self.nodes[i].chain.clone(),
            config,
            votes,
            certificates,
            resolver,
            backfill,
            blocks,
        )
        .await;
        self.nodes[i].running = Some(running);
    }

    /// Hands every transaction to every validator's mempool, as gossip would.
    fn submit(&self, txs: &[SignedTransaction]) {
        for node in &self.nodes {
            for tx in txs {
                let _ = node.chain.submit(tx.clone()).unwrap();
            }
        }
    }

    fn executed(&self, i: usize) -> u64 {
        self.nodes[i].chain.executed_height().unwrap()
    }

    async fn wait_until(
        &self,
        context: &deterministic::Context,
        mut done: impl FnMut(&Cluster) -> bool,
    ) {
        for _ in 0..6_000 {
            if done(self) {
                return;
            }
            context.sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "cluster made no progress: executed heights {:?}",
            (0..self.nodes.len())
                .map(|i| self.executed(i))
                .collect::<Vec<_>>()
        );
    }

    /// Checks agreement: same block and state root at every height all nodes have.
    fn check_agreement(&self) -> Hash {
        let min = (0..self.nodes.len())
            .map(|i| self.executed(i))
            .min()
            .unwrap();
        let mut by_height: BTreeMap<u64, (Hash, Hash)> = BTreeMap::new();
        for node in &self.nodes {
            node.chain
                .with_ledger(|l| {
                    for h in 1..=min {
                        let b = l.block(h).unwrap().unwrap();
                        let entry = (b.block.hash(), b.state_root);
                        let seen = by_height.entry(h).or_insert(entry);
                        assert_eq!(*seen, entry, "validators disagree at height {h}");
                    }
                    assert_eq!(
                        l.state().total_balance(),
                        u128::from(CLIENTS * BALANCE),
                        "value was created or destroyed"
                    );
                })
                .unwrap();
        }
        by_height.get(&min).map(|e| e.1).unwrap_or(Hash::ZERO)
    }
}

fn open_chain(dir: &Path, genesis: &Genesis) -> Arc<Chain> {
    let ledger = Ledger::open(dir, genesis).unwrap();
    Arc::new(Chain::new(ledger, genesis, 100_000, 2_000))
}

fn transfers(from: u64, nonces: std::ops::Range<u64>) -> Vec<SignedTransaction> {
    let key = client(from);
    nonces
        .map(|nonce| {
            Transaction {
                chain_id: CHAIN.into(),
                sender: key.account(),
                nonce,
                call: Call::Transfer {
                    to: client((from + 1) % CLIENTS).account(),
                    amount: 1,
                },
            }
            .sign(&key)
        })
        .collect()
}

fn committed(cluster: &Cluster, txs: &[SignedTransaction]) -> bool {
    cluster.nodes.iter().all(|n| {
        n.chain
            .with_ledger(|l| {
                txs.iter()
                    .all(|t| l.tx_location(&t.hash()).unwrap().is_some())
            })
            .unwrap()
    })
}

fn run_transfers(seed: u64, validators: u64) -> Hash {
    let runner = deterministic::Runner::new(
        deterministic::Config::new()
            .with_seed(seed)
            .with_timeout(Some(Duration::from_secs(600))),
    );
    runner.start(|context| async move {
        let cluster = Cluster::new(&context, validators).await;
        let txs: Vec<SignedTransaction> = (0..CLIENTS).flat_map(|c| transfers(c, 0..20)).collect();
        cluster.submit(&txs);
        cluster.wait_until(&context, |c| committed(c, &txs)).await;
        let root = cluster.check_agreement();
        // Each transaction executed exactly once: every client's nonce is 20.
        cluster.nodes[0]
            .chain
            .with_ledger(|l| {
                for c in 0..CLIENTS {
                    assert_eq!(l.state().account(&client(c).account()).nonce, 20);
                }
            })
            .unwrap();
        let _ = cluster
            .nodes
            .iter()
            .map(|n| {
                n.running
                    .as_ref()
                    .map(|r| r.progress.executed.load(Ordering::Relaxed))
            })
            .count();
        root
    })
}

#[test]
fn four_validators_finalize_and_agree() {
    let a = run_transfers(1, 4);
    assert_ne!(a, Hash::ZERO);
}
