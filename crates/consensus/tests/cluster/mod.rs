//! The simulated validator network shared by the simulation tests and the chaos campaign
//! (`examples/chaos.rs`): validators in Commonware's deterministic runtime over its
//! simulated network, with crashes, partitions, link changes and checks of agreement,
//! exactly-once execution and conservation of value.
#![allow(
    dead_code,
    reason = "shared by the simulation tests and the chaos campaign, which use different parts"
)]

pub mod chaos;

use commonware_codec::Encode as _;
use commonware_consensus::types::Height;
use commonware_cryptography::{Signer as _, ed25519};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::{Clock, Handle, Quota, Runner as _, Supervisor as _, deterministic};
use commonware_utils::{NZU32, NZUsize, TryCollect as _, ordered::Set, probability};
use secnet_certified::{CertifiedState, Finalization};
use secnet_consensus::chain::Chain;
use secnet_consensus::engine::{
    Retention, Running, Timing, ValidatorConfig, channels, start_validator,
};
use secnet_consensus::gossip::{TxGossip, start_gossip};
use secnet_contract::StateKey;
use secnet_ledger::{Ledger, StateMemory};
use secnet_types::{
    AccountId, Allocation, Call, Genesis, Hash, Keypair, SignedTransaction, Transaction, Validator,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const QUOTA: Quota = Quota::per_second(NZU32!(10_000));
pub const LINK: Link = Link {
    latency: Duration::from_millis(20),
    jitter: Duration::from_millis(5),
    success_rate: probability!(1.0),
};
pub const LOSSY: Link = Link {
    latency: Duration::from_millis(60),
    jitter: Duration::from_millis(30),
    success_rate: probability!(0.8),
};
/// Slow but reliable: what a congested wide-area link looks like.
pub const SLOW: Link = Link {
    latency: Duration::from_millis(400),
    jitter: Duration::from_millis(200),
    success_rate: probability!(1.0),
};
pub const CHAIN: &str = "secnet-sim";
pub const CLIENTS: u64 = 8;
pub const BALANCE: u64 = 1_000_000;
/// Accounts the genesis funds with one unit each that never transact: state that, on the
/// validators that bound their state tree's memory (see [`open_chain`]), leaves memory.
pub const DORMANT: u64 = 1_000;

pub fn validator_key(i: u64) -> ed25519::PrivateKey {
    ed25519::PrivateKey::from_seed(1_000 + i)
}

/// Validator `i`'s public key.
fn key(i: usize) -> ed25519::PublicKey {
    validator_key(i as u64).public_key()
}

pub fn client(i: u64) -> Keypair {
    Keypair::deterministic("sim-client", i)
}

/// The genesis of a network of `n` validators (listed, so light clients can check their
/// certificates).
pub fn genesis(n: u64) -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: 0,
        allocations: (0..CLIENTS)
            .map(|i| Allocation {
                account: client(i).account(),
                balance: BALANCE,
            })
            .chain((0..DORMANT).map(|i| Allocation {
                account: Keypair::deterministic("sim-dormant", i).account(),
                balance: 1,
            }))
            .collect(),
        validators: (0..n)
            .map(|i| Validator {
                key: validator_account(i),
                address: format!("sim-validator-{i}"),
                name: String::new(),
            })
            .collect(),
    }
}

/// Validator `i`'s key as an account: the same ed25519 seed (what it signs certificates
/// with, as a [`Keypair`] can).
pub fn validator_keypair(i: u64) -> Keypair {
    let seed: [u8; 32] = validator_key(i).encode().as_ref().try_into().unwrap();
    Keypair::from_seeds(seed, [0; 32])
}

fn validator_account(i: u64) -> AccountId {
    validator_keypair(i).account()
}

pub struct Node {
    pub chain: Arc<Chain>,
    pub running: Option<Running>,
    pub dir: PathBuf,
    /// Where consensus starts for a validator installed from a snapshot.
    pub floor: Option<Finalization>,
    /// How many times it lost its storage: each loss starts on new partitions.
    pub wiped: u32,
    /// It starts without a consensus journal.
    pub without_journal: bool,
}

pub struct Cluster {
    pub oracle: Oracle<ed25519::PublicKey, deterministic::Context>,
    pub participants: Set<ed25519::PublicKey>,
    pub nodes: Vec<Node>,
    pub genesis: Genesis,
    pub retention: Retention,
    pub timing: Timing,
    pub dirs: tempfile::TempDir,
}

impl Cluster {
    pub async fn new(context: &deterministic::Context, n: u64) -> Cluster {
        Cluster::with_link(context, n, LINK).await
    }

    pub async fn with_link(context: &deterministic::Context, n: u64, link: Link) -> Cluster {
        Cluster::build(context, n, n, link, Retention::default()).await
    }

    /// `n` validators over [`LINK`] with the given timing.
    pub async fn with_timing(context: &deterministic::Context, n: u64, timing: Timing) -> Cluster {
        let mut cluster = Cluster::build(context, n, 0, LINK, Retention::default()).await;
        cluster.timing = timing;
        for i in 0..n {
            cluster.start(context, i as usize).await;
        }
        cluster
    }

    /// `n` validators of which the first `started` run, keeping `retention` of history.
    pub async fn build(
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
            genesis: genesis(n),
            retention,
            timing: Timing::default(),
            dirs,
        };
        cluster.link_all(link).await;
        for i in 0..n {
            let dir = cluster.dirs.path().join(format!("v{i}"));
            let chain = open_chain(&dir, &cluster.genesis);
            cluster.nodes.push(Node {
                chain,
                running: None,
                dir,
                floor: None,
                wiped: 0,
                without_journal: false,
            });
        }
        for i in 0..started {
            cluster.start(context, i as usize).await;
        }
        cluster
    }

    /// Every ordered pair of distinct members of the validator set, by index.
    fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
        let n = self.participants.len();
        (0..n).flat_map(move |i| (0..n).filter(move |j| *j != i).map(move |j| (i, j)))
    }

    /// Links every pair of validators.
    pub async fn link_all(&mut self, link: Link) {
        for (i, j) in self.pairs() {
            let _ = self.oracle.add_link(key(i), key(j), link.clone()).await;
        }
    }

    /// Cuts every link between validators `left` and the others.
    pub async fn partition(&mut self, left: &[usize]) {
        for (i, j) in self.pairs() {
            if left.contains(&i) != left.contains(&j) {
                let _ = self.oracle.remove_link(key(i), key(j)).await;
            }
        }
    }

    /// Stops validator `i` as a crash would: its tasks end and its ledger is closed.
    pub async fn crash(&mut self, context: &deterministic::Context, i: usize) {
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

    /// Crashes validator `i` and loses everything it stored: its ledger and its consensus
    /// partitions (journal and archives). It starts again as a validator without a journal.
    pub async fn wipe(&mut self, context: &deterministic::Context, i: usize) {
        self.crash(context, i).await;
        let old = std::mem::replace(&mut self.nodes[i].chain, placeholder());
        assert_eq!(Arc::strong_count(&old), 1);
        drop(old);
        let dir = self.nodes[i].dir.clone();
        std::fs::remove_dir_all(&dir).unwrap();
        self.nodes[i].chain = open_chain(&dir, &self.genesis);
        self.nodes[i].wiped += 1;
        self.nodes[i].without_journal = true;
        self.nodes[i].floor = None;
    }

    pub async fn start(&mut self, context: &deterministic::Context, i: usize) {
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
            partition_prefix: format!("validator-{i}-{}", self.nodes[i].wiped),
            timing: self.timing.clone(),
            retention: self.retention,
            floor: self.nodes[i].floor.clone(),
            without_journal: self.nodes[i].without_journal,
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

    /// Starts validator `i`'s transaction gossip, as a node does beside consensus: what it
    /// publishes reaches the others' gossip, which admit it to their mempools.
    pub async fn start_gossip(
        &self,
        context: &deterministic::Context,
        i: usize,
    ) -> (TxGossip, Vec<Handle<()>>) {
        let control = self.oracle.control(validator_key(i as u64).public_key());
        let channel = control.register(channels::TXS, QUOTA).await.unwrap();
        start_gossip(
            context.child("gossip").with_attribute("index", i),
            self.nodes[i].chain.clone(),
            control,
            channel,
        )
    }

    /// Whether each of the validators `by` has blocked validator `whom`.
    pub async fn blocked_by(&self, by: std::ops::Range<u64>, whom: u64) -> bool {
        let blocked = self.oracle.blocked().await.unwrap();
        let whom = validator_key(whom).public_key();
        by.map(|i| validator_key(i).public_key())
            .all(|honest| blocked.iter().any(|(b, w)| *b == honest && *w == whom))
    }

    /// Waits (a minute of simulated time at most) until validators `by` all blocked `whom`.
    pub async fn wait_blocked_by(
        &self,
        context: &deterministic::Context,
        by: std::ops::Range<u64>,
        whom: u64,
    ) {
        for _ in 0..600 {
            if self.blocked_by(by.clone(), whom).await {
                return;
            }
            context.sleep(Duration::from_millis(100)).await;
        }
        panic!("validator {whom} was not blocked by every one of {by:?}");
    }

    /// Hands `txs` to the first `n` validators' mempools, waits until they all committed
    /// them, and checks that they agree.
    pub async fn commit_among_first(
        &self,
        context: &deterministic::Context,
        n: usize,
        txs: &[SignedTransaction],
    ) {
        self.submit_to(n, txs);
        self.wait_until(context, |c| committed_on(c, n, txs)).await;
        self.check_agreement_among(&(0..n).collect::<Vec<_>>());
    }

    /// Hands every transaction to every validator's mempool, as gossip would.
    pub fn submit(&self, txs: &[SignedTransaction]) {
        self.submit_to(self.nodes.len(), txs);
    }

    /// Hands every transaction to the mempools of the first `n` validators.
    pub fn submit_to(&self, n: usize, txs: &[SignedTransaction]) {
        for node in &self.nodes[..n] {
            for tx in txs {
                let _ = node.chain.submit(tx.clone()).unwrap();
            }
        }
    }

    /// Submits `txs` to every validator and waits until all have committed them; returns how
    /// long that took in simulated time.
    pub async fn commit_timed(
        &self,
        context: &deterministic::Context,
        txs: &[SignedTransaction],
    ) -> Duration {
        let sent = context.current();
        self.submit(txs);
        self.wait_until(context, |c| committed(c, txs)).await;
        context.current().duration_since(sent).unwrap()
    }

    /// Validator `i`'s executed height, which those waiting for blocks on it see too
    /// (`Chain::applied_heights`: raised by every block executed, and from the ledger's tip
    /// when it reopens after a restart).
    pub fn executed(&self, i: usize) -> u64 {
        let chain = &self.nodes[i].chain;
        let height = chain.executed_height().unwrap();
        assert_eq!(
            *chain.applied_heights().borrow(),
            height,
            "validator {i}: the height its block waiters see is not its ledger's"
        );
        height
    }

    pub async fn wait_until(
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
    pub fn check_agreement(&self) -> Hash {
        self.check_agreement_among(&(0..self.nodes.len()).collect::<Vec<_>>())
            .1
    }

    /// What validator `i`'s API answers a certified-state query about `keys`, chosen and
    /// built as the API does (`Ledger::answerable_headers`, `Ledger::certified_state`)
    /// with the certificate its marshal holds (`None`: it is not running, or has no such
    /// block).
    pub async fn certified_state(&self, i: usize, keys: &[StateKey]) -> Option<CertifiedState> {
        let marshal = &self.nodes[i].running.as_ref()?.marshal;
        let chain = &self.nodes[i].chain;
        let tip = chain.executed_height().ok()?;
        let headers = chain.with_ledger(|l| l.answerable_headers(tip)).ok()?;
        for header in headers {
            let Some(finalization) = marshal.get_finalization(Height::new(header.height)).await
            else {
                continue;
            };
            let certificate = finalization.encode().to_vec();
            return chain
                .with_ledger(|l| l.certified_state(&header, certificate, keys))
                .ok()?;
        }
        None
    }

    /// Checks agreement among validators `among`: the same block and state root at every
    /// height any two of them have, and value conserved in each. Returns the lowest of
    /// their heights and the state root there.
    pub fn check_agreement_among(&self, among: &[usize]) -> (u64, Hash) {
        let min = among.iter().map(|i| self.executed(*i)).min().unwrap();
        // Blocks below a pruned or snapshot-installed ledger's first are compared by the
        // nodes that still have them.
        let mut by_height: BTreeMap<u64, (Hash, Hash)> = BTreeMap::new();
        for (i, node) in among.iter().map(|i| (*i, &self.nodes[*i])) {
            node.chain
                .with_ledger(|l| {
                    if l.state_memory().is_some() {
                        // The dormant accounts are in its spill file.
                        assert!(
                            l.state().resident_entries() < l.state().entry_count() / 2,
                            "validator {i} bounds its state tree's memory, yet holds {} of {} entries",
                            l.state().resident_entries(),
                            l.state().entry_count()
                        );
                    }
                    for h in l.first_block().unwrap()..=l.state().tip().height {
                        let b = l.block(h).unwrap().unwrap();
                        let entry = (b.block.hash(), b.state_root);
                        let seen = by_height.entry(h).or_insert(entry);
                        assert_eq!(*seen, entry, "validators disagree at height {h}");
                    }
                    assert_eq!(
                        l.state().total_balance(),
                        u128::from(CLIENTS * BALANCE + DORMANT),
                        "value was created or destroyed"
                    );
                })
                .unwrap();
        }
        (min, by_height.get(&min).map(|e| e.1).unwrap_or(Hash::ZERO))
    }

    /// Makes validator `i` propose a transfer of half of client 0's balance at `nonce`,
    /// under a forged signature (as a Byzantine proposer of invalid blocks would).
    pub fn inject_forged_transfer(&self, i: usize, nonce: u64) -> SignedTransaction {
        let honest = transfers(0, nonce..nonce + 1);
        let stolen = Transaction {
            call: Call::Transfer {
                to: client(CLIENTS + 1).account(),
                amount: BALANCE / 2,
            },
            ..honest[0].tx().clone()
        };
        let forged = SignedTransaction::new(stolen, secnet_types::Signature([3; 64]));
        self.nodes[i]
            .chain
            .inject_unchecked(forged.clone())
            .unwrap();
        forged
    }

    /// Replaces every link between validators with `link` (which also heals partitions).
    pub async fn set_links(&mut self, link: Link) {
        for (i, j) in self.pairs() {
            let _ = self.oracle.remove_link(key(i), key(j)).await;
        }
        self.link_all(link).await;
    }

    /// Replaces validator `i` (crashed first) with Commonware's equivocator under its key:
    /// as leader it sends one proposal to one validator and a conflicting one to the others.
    pub async fn become_equivocator(&mut self, context: &deterministic::Context, i: usize) {
        use commonware_consensus::simplex::elector::RoundRobin;
        use commonware_consensus::simplex::mocks::{equivocator, relay::Relay};
        use commonware_consensus::types::Epoch;
        use commonware_cryptography::Sha256;
        use secnet_consensus::application::Scheme;
        self.crash(context, i).await;
        let byzantine = validator_key(i as u64);
        let namespace = secnet_certified::consensus_namespace(&self.genesis);
        let scheme =
            Scheme::signer(&namespace, self.participants.clone(), byzantine.clone()).unwrap();
        let control = self.oracle.control(byzantine.public_key());
        let votes = control.register(0, QUOTA).await.unwrap();
        let certificates = control.register(1, QUOTA).await.unwrap();
        let engine = equivocator::Equivocator::new(
            context.child("equivocator"),
            equivocator::Config::<_, _, Sha256> {
                scheme,
                elector: RoundRobin::<Sha256>::default(),
                epoch: Epoch::zero(),
                relay: Arc::new(Relay::new()),
            },
        );
        let _handle = engine.start(votes, certificates);
    }

    /// Replaces validator `i` (crashed first) with a sender of random bytes (from `seed`) on
    /// every consensus channel, under its key.
    pub async fn become_garbage_sender(
        &mut self,
        context: &deterministic::Context,
        i: usize,
        seed: u64,
    ) {
        use commonware_p2p::{Recipients, Sender as _};
        use commonware_runtime::Spawner as _;
        self.crash(context, i).await;
        let control = self.oracle.control(validator_key(i as u64).public_key());
        let mut senders = Vec::new();
        for channel in 0..5 {
            senders.push(control.register(channel, QUOTA).await.unwrap());
        }
        let _garbage = context.child("garbage").spawn(move |context| async move {
            let mut next = xorshift(seed);
            loop {
                for (sender, _receiver) in &mut senders {
                    let len = next() % 512;
                    let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                    let _ = sender.send(Recipients::All, bytes, false);
                }
                context.sleep(Duration::from_millis(50)).await;
            }
        });
    }
}

/// A deterministic stream of pseudo-random numbers from `seed` (xorshift64).
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed.max(1);
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// A chain that is never used: it stands in while a crashed validator's chain is reopened.
pub fn placeholder() -> Arc<Chain> {
    thread_local!(static DIR: tempfile::TempDir = tempfile::tempdir().unwrap());
    DIR.with(|d| {
        open_chain(
            &d.path().join(format!("{:?}", std::time::Instant::now())),
            &genesis(4),
        )
    })
}

pub fn open_chain_after_crash(dir: &Path, genesis: &Genesis, old: Arc<Chain>) -> Arc<Chain> {
    assert_eq!(
        Arc::strong_count(&old),
        1,
        "a crashed validator's tasks still hold its chain"
    );
    drop(old);
    open_chain(dir, genesis)
}

/// The bound on state-tree memory of the validators of even index: a few entries, no slack
/// before a spill file is replaced.
pub const TINY_STATE_MEMORY: StateMemory = StateMemory {
    resident_entries: 4,
    opened_entries: 4,
    spill_slack_bytes: 0,
    grant_chunks_in_memory: 1,
};

/// Opens the chain in a validator's directory. Validators of even index (directories `v0`,
/// `v2`, ...) keep their state tree within a bound of a few entries from the moment their
/// ledger loads (a restart after a crash loads it a part at a time), so that it lives in
/// their spill files, and every check of agreement also compares them with validators that
/// hold it all in memory.
pub fn open_chain(dir: &Path, genesis: &Genesis) -> Arc<Chain> {
    let index = dir
        .file_name()
        .and_then(|n| n.to_str()?.strip_prefix('v')?.parse::<usize>().ok());
    let memory = index
        .is_some_and(|i| i % 2 == 0)
        .then_some(TINY_STATE_MEMORY);
    let ledger = Ledger::open_bounded(dir, genesis, memory).unwrap();
    Arc::new(Chain::new(ledger, genesis, 100_000, 2_000))
}

pub fn transfers(from: u64, nonces: std::ops::Range<u64>) -> Vec<SignedTransaction> {
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

pub fn committed(cluster: &Cluster, txs: &[SignedTransaction]) -> bool {
    committed_on(cluster, cluster.nodes.len(), txs)
}

/// Whether the first `n` validators have all committed `txs`.
pub fn committed_on(cluster: &Cluster, n: usize, txs: &[SignedTransaction]) -> bool {
    cluster.nodes[..n].iter().all(|n| {
        n.chain
            .with_ledger(|l| {
                txs.iter()
                    .all(|t| l.tx_location(&t.hash()).unwrap().is_some())
            })
            .unwrap()
    })
}

pub fn runner(seed: u64) -> deterministic::Runner {
    deterministic::Runner::new(
        deterministic::Config::new()
            .with_seed(seed)
            .with_timeout(Some(Duration::from_secs(900))),
    )
}

pub fn all_transfers(nonces: std::ops::Range<u64>) -> Vec<SignedTransaction> {
    (0..CLIENTS)
        .flat_map(|c| transfers(c, nonces.clone()))
        .collect()
}

pub fn check_nonces(cluster: &Cluster, expected: u64) {
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
