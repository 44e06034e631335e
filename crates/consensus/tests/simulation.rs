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
use commonware_runtime::{Clock, Quota, Runner as _, Supervisor as _, deterministic};
use commonware_utils::{NZU32, NZUsize, TryCollect as _, ordered::Set, probability};
use secnet_certified::Finalization;
use secnet_consensus::chain::Chain;
use secnet_consensus::engine::{Retention, Running, Timing, ValidatorConfig, start_validator};
use secnet_ledger::{Ledger, Snapshot};
use secnet_types::{Allocation, Call, Genesis, Hash, Keypair, SignedTransaction, Transaction};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const QUOTA: Quota = Quota::per_second(NZU32!(10_000));
const LINK: Link = Link {
    latency: Duration::from_millis(20),
    jitter: Duration::from_millis(5),
    success_rate: probability!(1.0),
};
const LOSSY: Link = Link {
    latency: Duration::from_millis(60),
    jitter: Duration::from_millis(30),
    success_rate: probability!(0.8),
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
    /// Where consensus starts for a validator installed from a snapshot.
    floor: Option<Finalization>,
}

struct Cluster {
    oracle: Oracle<ed25519::PublicKey, deterministic::Context>,
    participants: Set<ed25519::PublicKey>,
    nodes: Vec<Node>,
    genesis: Genesis,
    retention: Retention,
    _dirs: tempfile::TempDir,
}

impl Cluster {
    async fn new(context: &deterministic::Context, n: u64) -> Cluster {
        Cluster::with_link(context, n, LINK).await
    }

    async fn with_link(context: &deterministic::Context, n: u64, link: Link) -> Cluster {
        Cluster::build(context, n, n, link, Retention::default()).await
    }

    /// `n` validators of which the first `started` run, keeping `retention` of history.
    async fn build(
        context: &deterministic::Context,
        n: u64,
        started: u64,
        link: Link,
        retention: Retention,
    ) -> Cluster {
        let participants: Set<ed25519::PublicKey> = (0..n)
            .map(|i| validator_key(i).public_key())
            .try_collect()
            .unwrap();
        let (network, oracle) = Network::new_with_peers(
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
        let dirs = tempfile::tempdir().unwrap();
        let mut cluster = Cluster {
            oracle,
            participants,
            nodes: Vec::new(),
            genesis: genesis(),
            retention,
            _dirs: dirs,
        };
        cluster.link_all(link).await;
        for i in 0..n {
            let dir = cluster._dirs.path().join(format!("v{i}"));
            let chain = open_chain(&dir, &cluster.genesis);
            cluster.nodes.push(Node {
                chain,
                running: None,
                dir,
                floor: None,
            });
        }
        for i in 0..started {
            cluster.start(context, i as usize).await;
        }
        cluster
    }

    /// Links every pair of validators.
    async fn link_all(&mut self, link: Link) {
        let keys: Vec<_> = self.participants.iter().cloned().collect();
        for a in &keys {
            for b in &keys {
                if a != b {
                    let _ = self
                        .oracle
                        .add_link(a.clone(), b.clone(), link.clone())
                        .await;
                }
            }
        }
    }

    /// Cuts every link between the two groups.
    async fn partition(&mut self, left: &[usize]) {
        let keys: Vec<_> = self.participants.iter().cloned().collect();
        for (i, a) in keys.iter().enumerate() {
            for (j, b) in keys.iter().enumerate() {
                if left.contains(&i) != left.contains(&j) {
                    let _ = self.oracle.remove_link(a.clone(), b.clone()).await;
                }
            }
        }
    }

    /// Stops validator `i` as a crash would: its tasks end and its ledger is closed.
    async fn crash(&mut self, context: &deterministic::Context, i: usize) {
        if let Some(running) = self.nodes[i].running.take() {
            for h in running.handles.into_iter().chain([running.executor]) {
                h.abort();
                let _ = h.await;
            }
        }
        // Let the aborted tasks unwind and release what they hold.
        context.sleep(Duration::from_secs(1)).await;
        // Drop the last reference so the ledger file is closed, then reopen it from disk.
        let dir = self.nodes[i].dir.clone();
        self.nodes[i].chain = open_chain_after_crash(
            &dir,
            &self.genesis,
            std::mem::replace(&mut self.nodes[i].chain, placeholder()),
        );
    }

    async fn start(&mut self, context: &deterministic::Context, i: usize) {
        let key = validator_key(i as u64);
        let control = self.oracle.control(key.public_key());
        let channel = async |c: u64| control.register(c, QUOTA).await.unwrap();
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
            retention: self.retention,
            floor: self.nodes[i].floor.clone(),
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
        self.submit_to(self.nodes.len(), txs);
    }

    /// Hands every transaction to the mempools of the first `n` validators.
    fn submit_to(&self, n: usize, txs: &[SignedTransaction]) {
        for node in &self.nodes[..n] {
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
        // Blocks below a pruned or snapshot-installed ledger's first are compared by the
        // nodes that still have them.
        let mut by_height: BTreeMap<u64, (Hash, Hash)> = BTreeMap::new();
        for node in &self.nodes {
            node.chain
                .with_ledger(|l| {
                    for h in l.first_block().unwrap()..=min {
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

/// A chain that is never used: it stands in while a crashed validator's chain is reopened.
fn placeholder() -> Arc<Chain> {
    thread_local!(static DIR: tempfile::TempDir = tempfile::tempdir().unwrap());
    DIR.with(|d| {
        open_chain(
            &d.path().join(format!("{:?}", std::time::Instant::now())),
            &genesis(),
        )
    })
}

fn open_chain_after_crash(dir: &Path, genesis: &Genesis, old: Arc<Chain>) -> Arc<Chain> {
    assert_eq!(
        Arc::strong_count(&old),
        1,
        "a crashed validator's tasks still hold its chain"
    );
    drop(old);
    open_chain(dir, genesis)
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
    committed_on(cluster, cluster.nodes.len(), txs)
}

/// Whether the first `n` validators have all committed `txs`.
fn committed_on(cluster: &Cluster, n: usize, txs: &[SignedTransaction]) -> bool {
    cluster.nodes[..n].iter().all(|n| {
        n.chain
            .with_ledger(|l| {
                txs.iter()
                    .all(|t| l.tx_location(&t.hash()).unwrap().is_some())
            })
            .unwrap()
    })
}

fn runner(seed: u64) -> deterministic::Runner {
    deterministic::Runner::new(
        deterministic::Config::new()
            .with_seed(seed)
            .with_timeout(Some(Duration::from_secs(900))),
    )
}

fn all_transfers(nonces: std::ops::Range<u64>) -> Vec<SignedTransaction> {
    (0..CLIENTS)
        .flat_map(|c| transfers(c, nonces.clone()))
        .collect()
}

fn check_nonces(cluster: &Cluster, expected: u64) {
    for node in &cluster.nodes {
        node.chain
            .with_ledger(|l| {
                for c in 0..CLIENTS {
                    assert_eq!(
                        l.state().account(&client(c).account()).nonce,
                        expected,
                        "every transaction executes exactly once"
                    );
                }
            })
            .unwrap();
    }
}

fn run_transfers(seed: u64, validators: u64, link: Link) -> Hash {
    runner(seed).start(|context| async move {
        let cluster = Cluster::with_link(&context, validators, link).await;
        let txs = all_transfers(0..20);
        cluster.submit(&txs);
        cluster.wait_until(&context, |c| committed(c, &txs)).await;
        let max = (0..cluster.nodes.len())
            .map(|i| cluster.executed(i))
            .max()
            .unwrap();
        cluster
            .wait_until(&context, |c| {
                (0..c.nodes.len()).all(|i| c.executed(i) >= max)
            })
            .await;
        check_nonces(&cluster, 20);
        cluster.check_agreement()
    })
}

#[test]
fn four_validators_finalize_and_agree_over_many_seeds() {
    for seed in 1..=4 {
        assert_ne!(run_transfers(seed, 4, LINK), Hash::ZERO, "seed {seed}");
    }
}

#[test]
fn seven_validators_over_lossy_slow_links() {
    for seed in [11, 12] {
        assert_ne!(run_transfers(seed, 7, LOSSY), Hash::ZERO, "seed {seed}");
    }
}

#[test]
fn the_same_seed_gives_the_same_chain() {
    assert_eq!(run_transfers(21, 4, LOSSY), run_transfers(21, 4, LOSSY));
}

#[test]
fn a_crashed_validator_restarts_and_catches_up() {
    runner(31).start(|context| async move {
        let mut cluster = Cluster::new(&context, 4).await;
        let first = all_transfers(0..5);
        cluster.submit(&first);
        cluster.wait_until(&context, |c| committed(c, &first)).await;

        cluster.crash(&context, 3).await;
        let second = all_transfers(5..10);
        for node in &cluster.nodes[..3] {
            for tx in &second {
                let _ = node.chain.submit(tx.clone()).unwrap();
            }
        }
        let live_committed = |c: &Cluster| {
            c.nodes[..3].iter().all(|n| {
                n.chain
                    .with_ledger(|l| {
                        second
                            .iter()
                            .all(|t| l.tx_location(&t.hash()).unwrap().is_some())
                    })
                    .unwrap()
            })
        };
        cluster.wait_until(&context, live_committed).await;
        let behind = cluster.executed(3);
        let ahead = cluster.executed(0);
        assert!(
            behind < ahead,
            "the crashed validator should have fallen behind ({behind} vs {ahead})"
        );

        cluster.start(&context, 3).await;
        cluster
            .wait_until(&context, |c| c.executed(3) >= ahead)
            .await;
        check_nonces(&cluster, 10);
        cluster.check_agreement();
    });
}

#[test]
fn progress_stops_without_quorum_and_resumes_when_the_partition_heals() {
    runner(41).start(|context| async move {
        let mut cluster = Cluster::new(&context, 4).await;
        let first = all_transfers(0..3);
        cluster.submit(&first);
        cluster.wait_until(&context, |c| committed(c, &first)).await;

        cluster.partition(&[0, 1]).await;
        context.sleep(Duration::from_secs(2)).await;
        let stuck = (0..4).map(|i| cluster.executed(i)).max().unwrap();
        let second = all_transfers(3..6);
        cluster.submit(&second);
        context.sleep(Duration::from_secs(10)).await;
        let during = (0..4).map(|i| cluster.executed(i)).max().unwrap();
        assert_eq!(
            stuck, during,
            "two of four validators must not finalize alone"
        );

        cluster.link_all(LINK).await;
        cluster
            .wait_until(&context, |c| committed(c, &second))
            .await;
        check_nonces(&cluster, 6);
        cluster.check_agreement();
    });
}

#[test]
fn a_byzantine_proposer_of_invalid_blocks_is_outvoted() {
    runner(51).start(|context| async move {
        let cluster = Cluster::new(&context, 4).await;
        // Validator 0 proposes a transfer whose signature is forged.
        let honest = transfers(0, 0..1);
        let stolen = Transaction {
            call: Call::Transfer {
                to: client(5).account(),
                amount: 500_000,
            },
            ..honest[0].tx().clone()
        };
        let forged = SignedTransaction::new(stolen, secnet_types::Signature([3; 64]));
        cluster.nodes[0]
            .chain
            .inject_unchecked(forged.clone())
            .unwrap();
        let txs = all_transfers(0..8);
        cluster.submit(&txs);
        cluster.wait_until(&context, |c| committed(c, &txs)).await;
        let max = (0..4).map(|i| cluster.executed(i)).max().unwrap();
        cluster
            .wait_until(&context, |c| (0..4).all(|i| c.executed(i) >= max))
            .await;
        check_nonces(&cluster, 8);
        cluster.check_agreement();
        for node in &cluster.nodes {
            assert!(
                node.chain
                    .with_ledger(|l| l.tx_location(&forged.hash()).unwrap().is_none())
                    .unwrap(),
                "a forged transaction was finalized"
            );
        }
    });
}

#[test]
fn an_equivocating_validator_cannot_split_the_honest_ones() {
    use commonware_consensus::simplex::elector::RoundRobin;
    use commonware_consensus::simplex::mocks::{equivocator, relay::Relay};
    use commonware_consensus::types::Epoch;
    use commonware_cryptography::Sha256;
    use secnet_consensus::application::Scheme;
    runner(61).start(|context| async move {
        // Three honest validators run SecNet; the fourth member of the set equivocates: as
        // leader it sends one proposal to one validator and a conflicting one to the others.
        let mut cluster = Cluster::new(&context, 4).await;
        cluster.crash(&context, 3).await;
        let byzantine = validator_key(3);
        let namespace = secnet_certified::consensus_namespace(&cluster.genesis);
        let scheme =
            Scheme::signer(&namespace, cluster.participants.clone(), byzantine.clone()).unwrap();
        let control = cluster.oracle.control(byzantine.public_key());
        let votes = control.register(0, QUOTA).await.unwrap();
        let certificates = control.register(1, QUOTA).await.unwrap();
        let engine = equivocator::Equivocator::new(
            context.child("equivocator"),
            equivocator::Config::<_, _, Sha256> {
                scheme,
                elector: RoundRobin::<Sha256>::default(),
                epoch: Epoch::zero(),
                relay: std::sync::Arc::new(Relay::new()),
            },
        );
        let _handle = engine.start(votes, certificates);

        let txs = all_transfers(0..6);
        cluster.submit_to(3, &txs);
        cluster
            .wait_until(&context, |c| committed_on(c, 3, &txs))
            .await;
        let heights: Vec<u64> = (0..3).map(|i| cluster.executed(i)).collect();
        let min = *heights.iter().min().unwrap();
        let mut seen = BTreeMap::new();
        for node in &cluster.nodes[..3] {
            node.chain
                .with_ledger(|l| {
                    for h in 1..=min {
                        let b = l.block(h).unwrap().unwrap();
                        let entry = (b.block.hash(), b.state_root);
                        assert_eq!(
                            *seen.entry(h).or_insert(entry),
                            entry,
                            "honest validators finalized different blocks at {h}"
                        );
                    }
                })
                .unwrap();
        }
    });
}

#[test]
fn a_validator_sending_garbage_is_blocked_and_the_others_go_on() {
    use commonware_p2p::{Recipients, Sender as _};
    use commonware_runtime::Spawner as _;
    runner(73).start(|context| async move {
        // The fourth member of the validator set sends random bytes on every consensus channel.
        let mut cluster = Cluster::new(&context, 4).await;
        cluster.crash(&context, 3).await;
        let byzantine = validator_key(3);
        let control = cluster.oracle.control(byzantine.public_key());
        let mut senders = Vec::new();
        for channel in 0..5 {
            senders.push(control.register(channel, QUOTA).await.unwrap());
        }
        let _garbage = context.child("garbage").spawn(move |context| async move {
            let mut state: u64 = 73;
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            loop {
                for (sender, _receiver) in &mut senders {
                    let len = next() % 512;
                    let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    let _ = sender.send(Recipients::All, bytes, false);
                }
                context.sleep(Duration::from_millis(50)).await;
            }
        });

        let txs = all_transfers(0..4);
        cluster.submit_to(3, &txs);
        cluster
            .wait_until(&context, |c| committed_on(c, 3, &txs))
            .await;
        let blocked = cluster.oracle.blocked().await.unwrap();
        for i in 0..3 {
            let honest = validator_key(i).public_key();
            assert!(
                blocked
                    .iter()
                    .any(|(by, whom)| *by == honest && *whom == byzantine.public_key()),
                "validator {i} did not block the peer sending garbage: {blocked:?}"
            );
        }
    });
}

#[test]
fn an_idle_network_rests_and_wakes_for_transactions() {
    runner(11).start(|context| async move {
        let cluster = Cluster::new(&context, 4).await;
        let txs = all_transfers(0..2);
        cluster.submit(&txs);
        cluster.wait_until(&context, |c| committed(c, &txs)).await;
        let busy_until = cluster.executed(0);
        // A minute of simulated idleness: one block per heartbeat at most (12 at the default
        // 5 s), where an eager leader would finalize hundreds.
        let idle = Duration::from_secs(60);
        context.sleep(idle).await;
        let heartbeat = Timing::default().heartbeat;
        let produced = cluster.executed(0) - busy_until;
        let bound = idle.as_secs() / heartbeat.as_secs() + 2;
        assert!(
            produced <= bound,
            "{produced} blocks in {idle:?} of idleness; at most {bound} expected"
        );
        assert!(produced >= 1, "the chain stopped instead of resting");
        // The last state root is committed by a later header, so it can be certified.
        let root_committed = cluster.nodes[0]
            .chain
            .with_ledger(|l| {
                let tip = l.state().tip();
                let header = l.header(tip.height).unwrap().unwrap();
                header.state.last().map(|(_, root)| root) == Some(tip.state_root)
                    || l.header(tip.height - 1)
                        .unwrap()
                        .is_some_and(|h| h.state.last().map(|(_, r)| r) == Some(tip.state_root))
            })
            .unwrap();
        assert!(
            root_committed,
            "the idle chain left its last root uncommitted"
        );
        // New transactions wake it at once.
        let more = all_transfers(2..4);
        let woke_at = context.current();
        cluster.submit(&more);
        cluster.wait_until(&context, |c| committed(c, &more)).await;
        let took = context.current().duration_since(woke_at).unwrap();
        // At worst the current view is given up and the next leader proposes them.
        let limit = Timing::default().leader_timeout * 2;
        assert!(
            took < limit,
            "transactions after idleness took {took:?} to commit; at most {limit:?} expected"
        );
        check_nonces(&cluster, 4);
        cluster.check_agreement();
    });
}

/// Commits rounds of transfers (one per client) until validator `watch` executed `height`;
/// returns the next unused nonce.
async fn advance_to(
    cluster: &Cluster,
    context: &deterministic::Context,
    submit_to: usize,
    watch: usize,
    mut nonce: u64,
    height: u64,
) -> u64 {
    while cluster.executed(watch) < height {
        let txs = all_transfers(nonce..nonce + 1);
        cluster.submit_to(submit_to, &txs);
        cluster
            .wait_until(context, |c| committed_on(c, 1, &txs))
            .await;
        nonce += 1;
    }
    nonce
}

const SHORT: Retention = Retention {
    archive: 64,
    ledger: Some(64),
};

#[test]
fn a_pruned_validator_restarts_and_catches_up() {
    runner(51).start(|context| async move {
        let mut cluster = Cluster::build(&context, 4, 4, LINK, SHORT).await;
        let nonce = advance_to(&cluster, &context, 4, 0, 0, 200).await;
        let all = 4;
        cluster
            .wait_until(&context, |c| (0..all).all(|i| c.executed(i) >= 200))
            .await;
        for node in &cluster.nodes {
            let first = node
                .chain
                .with_ledger(|l| l.first_block().unwrap())
                .unwrap();
            assert!(first > 64, "the ledger kept blocks from {first} on");
        }

        cluster.crash(&context, 3).await;
        let behind = cluster.executed(3);
        let nonce = advance_to(&cluster, &context, 3, 0, nonce, behind + 40).await;
        let ahead = cluster.executed(0);
        cluster.start(&context, 3).await;
        cluster
            .wait_until(&context, |c| c.executed(3) >= ahead)
            .await;
        check_nonces(&cluster, nonce);
        cluster.check_agreement();
    });
}

#[test]
fn a_validator_joins_from_a_snapshot_and_agrees_with_those_that_replayed_everything() {
    runner(61).start(|context| async move {
        // Five validators, four running (a quorum), keeping little history.
        let mut cluster = Cluster::build(&context, 5, 4, LINK, SHORT).await;
        let nonce = advance_to(&cluster, &context, 4, 0, 0, 160).await;

        // Validator 0's state as a snapshot stream, read back and checked against the roots
        // another validator computed for that height.
        let mut bytes = Vec::new();
        let source = cluster.nodes[0]
            .chain
            .with_ledger(|l| l.snapshot_source().unwrap())
            .unwrap();
        source.write_to(&mut bytes).unwrap();
        let snapshot = Snapshot::read(bytes.as_slice(), &cluster.genesis, u64::MAX).unwrap();
        let height = snapshot.height();
        let roots = cluster.nodes[1]
            .chain
            .with_ledger(|l| l.committed_roots_at(height).unwrap())
            .unwrap();
        assert_eq!(Some(snapshot.roots()), roots);
        let marshal = &cluster.nodes[0].running.as_ref().unwrap().marshal;
        let mut floor = None;
        for h in (1..=height).rev() {
            if let Some(f) = marshal
                .get_finalization(commonware_consensus::types::Height::new(h))
                .await
            {
                floor = Some(f);
                break;
            }
        }
        let floor = floor.expect("a recent block has a finalization of its own");

        // Validator 1 goes down: three of five cannot finalize, so the network stalls until
        // validator 4 — started from the snapshot, without the blocks below it — checks
        // and votes on the very next proposals.
        cluster.crash(&context, 1).await;
        let dir = cluster.nodes[4].dir.clone();
        let old = std::mem::replace(&mut cluster.nodes[4].chain, placeholder());
        drop(old);
        std::fs::remove_dir_all(&dir).unwrap();
        let ledger = Ledger::install_snapshot(&dir, &cluster.genesis, snapshot, None).unwrap();
        cluster.nodes[4].chain = Arc::new(Chain::new(ledger, &cluster.genesis, 100_000, 2_000));
        cluster.nodes[4].floor = Some(floor);
        cluster.start(&context, 4).await;
        let nonce = advance_to(&cluster, &context, 5, 4, nonce, height + 20).await;

        // Validator 1 comes back and catches up; all five agree.
        cluster.start(&context, 1).await;
        let target = cluster.executed(4);
        cluster
            .wait_until(&context, |c| (0..5).all(|i| c.executed(i) >= target))
            .await;
        // It never had the blocks below its snapshot: nothing was replayed.
        let first = cluster.nodes[4]
            .chain
            .with_ledger(|l| l.first_block().unwrap())
            .unwrap();
        assert!(
            first + 7 >= height,
            "the joined ledger has blocks from {first}, below {height}"
        );
        check_nonces(&cluster, nonce);
        cluster.check_agreement();
    });
}
