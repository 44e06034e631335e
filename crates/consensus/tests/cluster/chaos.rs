//! The fault campaign. Each seed draws its own schedule over about 40 s of simulated time:
//! network episodes one after another (partitions, lossy links, slow links), crashes and
//! restarts overlapping them, transfers submitted throughout, and one Byzantine member of
//! the validator set (an invalid proposer, an equivocator, a sender of garbage or a lying
//! API, by seed). A crash aborts the validator's tasks and drops its ledger with every block
//! not yet written; it restarts from its data directory. A light client, which trusts only
//! the genesis, reads the clients' accounts from a running honest validator at every round
//! of submissions. Then every fault heals and the run checks:
//!
//! - safety: the honest validators finalized the same block and reached the same state root
//!   at every height any two of them have, value was conserved, none of the forged
//!   transactions was finalized, and the light client believed none of the lies it was told
//!   and refused no honest answer but for being older than one it had verified;
//! - liveness: every transfer ever submitted commits on every honest validator once the
//!   faults have healed, each executes exactly once, and the light client sees that in a
//!   certified answer from every honest validator.
//!
//! A violation panics with what was violated; the same seed replays the same run.

use super::*;
use secnet_certified::{CertificateError, Certifier, HexBytes};
use secnet_client::{LightClient, VerifyError};
use secnet_contract::StateValue;
use secnet_types::BlockHeader;

/// The Byzantine member of the validator set in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Byzantine {
    /// Validator 0 proposes blocks carrying transfers with forged signatures: a new one at
    /// every round of submissions, at the nonce the honest transfer of that round uses.
    InvalidProposer,
    /// The last validator runs Commonware's equivocator: as leader it signs conflicting
    /// proposals for different validators (payloads nobody else can fetch, so honest
    /// validators see conflicting signed proposals, not two valid blocks).
    Equivocator,
    /// The last validator sends random bytes on every consensus channel (the honest ones
    /// must block it).
    Garbage,
    /// The last validator takes part in consensus honestly, but its API lies to the light
    /// client at every round of submissions (see [`Lie`]).
    LyingApi,
}

impl Byzantine {
    /// The kind a seed runs with: each in turn.
    pub fn for_seed(seed: u64) -> Byzantine {
        match seed % 4 {
            0 => Byzantine::InvalidProposer,
            1 => Byzantine::Equivocator,
            2 => Byzantine::Garbage,
            _ => Byzantine::LyingApi,
        }
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Byzantine::InvalidProposer => "invalid-proposer",
            Byzantine::Equivocator => "equivocator",
            Byzantine::Garbage => "garbage",
            Byzantine::LyingApi => "lying-api",
        }
    }

    /// Which validators run honest code: all but the last, unless the Byzantine member is
    /// validator 0's proposer.
    fn honest(self, n: usize) -> Vec<usize> {
        match self {
            Byzantine::InvalidProposer => (0..n).collect(),
            Byzantine::Equivocator | Byzantine::Garbage | Byzantine::LyingApi => {
                (0..n - 1).collect()
            }
        }
    }
}

/// How the lying API alters the true answer it would give about the clients' accounts:
/// what a node wanting a client to believe something false can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// The real certificate and header; the first account's balance raised in its proof.
    Balance,
    /// Another account's true proof where the first account's was asked for.
    OtherAccount,
    /// The first account, which exists, said to be absent.
    Absent,
    /// A header whose state root the liar made up, certified by the liar alone.
    OwnCertificate,
    /// That made-up header under the real certificate of the real header.
    BorrowedCertificate,
    /// The true proofs, said to be as of a height the header commits to no root for.
    Uncommitted,
    /// A true answer older than one the client has verified since: a rollback.
    Stale,
}

impl Lie {
    /// Every kind, in the order a run tells them.
    pub const ALL: [Lie; 7] = [
        Lie::Balance,
        Lie::OtherAccount,
        Lie::Absent,
        Lie::OwnCertificate,
        Lie::BorrowedCertificate,
        Lie::Uncommitted,
        Lie::Stale,
    ];

    /// The lie made of `honest`, the true answer as of the client's newest verified height
    /// or later (`older`: a true answer below that height, for [`Lie::Stale`]).
    fn tell(
        self,
        honest: &CertifiedState,
        older: Option<&CertifiedState>,
        liar: &Certifier,
    ) -> Option<CertifiedState> {
        let mut lie = honest.clone();
        let made_up_header = || {
            let mut header = BlockHeader::decode_bytes(&honest.certified.header.0).unwrap();
            let last = header.state.roots.last_mut().unwrap();
            *last = Hash::digest(last.as_bytes());
            header
        };
        match self {
            Lie::Balance => {
                let proof = &mut lie.proofs[0];
                let StateValue::Account(mut account) =
                    StateValue::from_bytes(&proof.key, proof.value.as_ref()?).unwrap()
                else {
                    unreachable!("an account key proves an account")
                };
                account.balance += BALANCE;
                proof.value = Some(StateValue::Account(account).to_bytes());
            }
            Lie::OtherAccount => lie.proofs.swap(0, 1),
            Lie::Absent => lie.proofs[0].value = None,
            Lie::OwnCertificate => {
                let header = made_up_header();
                lie.certified.certificate = HexBytes(liar.certify(&header).unwrap());
                lie.certified.header = HexBytes(header.to_bytes());
            }
            Lie::BorrowedCertificate => {
                lie.certified.header = HexBytes(made_up_header().to_bytes());
            }
            Lie::Uncommitted => {
                lie.height += 1;
                for proof in &mut lie.proofs {
                    proof.height = lie.height;
                }
            }
            Lie::Stale => return older.cloned(),
        }
        Some(lie)
    }

    /// Whether the light client refused the lie for what it is.
    fn caught(self, error: &VerifyError) -> bool {
        matches!(
            (self, error),
            (Lie::Balance | Lie::Absent, VerifyError::Proof { .. })
                | (Lie::OtherAccount, VerifyError::OtherKey { .. })
                | (
                    Lie::OwnCertificate,
                    VerifyError::Certificate(CertificateError::TooFewSignatures { .. })
                )
                | (
                    Lie::BorrowedCertificate,
                    VerifyError::Certificate(CertificateError::OtherBlock { .. })
                )
                | (Lie::Uncommitted, VerifyError::NotCommitted { .. })
                | (Lie::Stale, VerifyError::Stale { .. })
        )
    }
}

/// The light client of a run: it trusts the genesis only, and reads the clients' accounts.
struct Reader {
    client: LightClient,
    keys: Vec<StateKey>,
    /// The newest height it verified an answer as of.
    floor: u64,
    /// Honest answers it verified.
    verified: u64,
    /// Lies it was told (every one refused, or the run panics).
    lies: Vec<Lie>,
}

impl Reader {
    fn new(genesis: &Genesis) -> Reader {
        Reader {
            client: LightClient::new(genesis).unwrap(),
            keys: (0..CLIENTS)
                .map(|c| StateKey::Account(client(c).account()))
                .collect(),
            floor: 0,
            verified: 0,
            lies: Vec::new(),
        }
    }

    /// Reads from honest validator `i`: a true answer must verify, unless it is older than
    /// one verified before. Returns the clients' nonces when it verified.
    fn check_honest(&mut self, i: usize, answer: &CertifiedState) -> Option<Vec<u64>> {
        match self.client.verify_state(answer, &self.keys) {
            Ok(verified) => {
                self.verified += 1;
                self.floor = self.floor.max(verified.height);
                self.client.require_at_least(self.floor);
                Some(
                    verified
                        .values
                        .iter()
                        .map(|(_, v)| match v {
                            Some(StateValue::Account(a)) => a.nonce,
                            _ => 0,
                        })
                        .collect(),
                )
            }
            Err(VerifyError::Stale { .. }) => None,
            Err(e) => panic!("the light client refused validator {i}'s true answer: {e}"),
        }
    }

    /// Tells the light client `lie`; it must refuse it for what it is.
    fn check_lie(&mut self, lie: Lie, answer: &CertifiedState, second: u64) {
        self.lies.push(lie);
        match self.client.verify_state(answer, &self.keys) {
            Ok(_) => panic!("at {second} s the light client believed the lying API ({lie:?})"),
            Err(e) if lie.caught(&e) => {}
            Err(e) => panic!("at {second} s the light client refused a {lie:?} lie as: {e}"),
        }
    }
}

/// One step of a schedule, at a simulated second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Validator crashes.
    Crash(usize),
    /// A crashed validator restarts from its data directory.
    Restart(usize),
    /// Links between these validators and the others are cut.
    Partition(Vec<usize>),
    /// Every link drops 20% of messages and is slow (60 ± 30 ms).
    Lossy,
    /// Every link is slow (400 ± 200 ms) but delivers.
    Slow,
    /// Every link is back to normal (20 ± 5 ms, no loss); partitions heal.
    Heal,
    /// Each sender submits its next transfers to every running honest validator.
    Submit,
}

impl Step {
    /// What kind of step it is.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Crash(_) => "crash",
            Step::Restart(_) => "restart",
            Step::Partition(_) => "partition",
            Step::Lossy => "lossy links",
            Step::Slow => "slow links",
            Step::Heal => "heal",
            Step::Submit => "submit",
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Validators in the set, the Byzantine one included.
    pub validators: u64,
    /// The Byzantine member.
    pub byzantine: Byzantine,
    /// The schedule, in order: (simulated second, step).
    pub schedule: Vec<(u64, Step)>,
    /// The height all honest validators reached.
    pub height: u64,
    /// Their state root there.
    pub state_root: Hash,
    /// The hashes of the blocks up to that height.
    pub blocks: Vec<Hash>,
    /// Honest validators' certified answers the light client verified.
    pub verified_answers: u64,
    /// The lies the lying API told it, in order (each refused).
    pub lies_refused: Vec<Lie>,
}

/// Transfers each client submits per [`Step::Submit`].
const PER_SUBMIT: u64 = 2;

/// The schedule for `seed` with `n` validators, of which `byzantine` is the Byzantine kind.
pub fn schedule(seed: u64, n: u64, byzantine: Byzantine) -> Vec<(u64, Step)> {
    let mut next = xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n);
    let n = n as usize;
    // Which validators may crash: honest ones that are not the invalid proposer, at most
    // f = (n - 1) / 3 of them at once (liveness under faults is not required, but a
    // schedule should also let the network progress while degraded).
    let crashable: Vec<usize> = byzantine
        .honest(n)
        .into_iter()
        .filter(|v| byzantine != Byzantine::InvalidProposer || *v != 0)
        .collect();
    let f = (n - 1) / 3;
    let mut steps: Vec<(u64, Step)> = Vec::new();
    // Network episodes one after another, each between 2 and 8 s, with gaps.
    let mut t = 1 + next() % 3;
    while t < 36 {
        let length = 2 + next() % 7;
        let step = match next() % 3 {
            0 => {
                let size = 1 + (next() as usize % (n - 1));
                let mut left: Vec<usize> = (0..n).collect();
                while left.len() > size {
                    let drop = next() as usize % left.len();
                    left.remove(drop);
                }
                Step::Partition(left)
            }
            1 => Step::Lossy,
            _ => Step::Slow,
        };
        steps.push((t, step));
        steps.push((t + length, Step::Heal));
        t += length + 1 + next() % 4;
    }
    // Crashes, overlapping the network episodes, each down 2 to 10 s.
    let mut down_until = vec![0u64; n];
    for _ in 0..(2 + next() % 4) {
        let at = 1 + next() % 34;
        let v = crashable[next() as usize % crashable.len()];
        let length = 2 + next() % 9;
        let concurrent = (0..n).filter(|i| down_until[*i] > at && *i != v).count();
        if down_until[v] + 1 >= at || concurrent >= f {
            continue;
        }
        down_until[v] = at + length;
        steps.push((at, Step::Crash(v)));
        steps.push((at + length, Step::Restart(v)));
    }
    for at in (0..40).step_by(4) {
        steps.push((at, Step::Submit));
    }
    // A stable sort: a crash and its restart never share a second (length ≥ 2).
    steps.sort_by_key(|(at, _)| *at);
    steps
}

/// Runs `seed` with `n` validators; panics on a violation.
pub fn run(seed: u64, n: u64) -> Outcome {
    let byzantine = Byzantine::for_seed(seed);
    let steps = schedule(seed, n, byzantine);
    let schedule = steps.clone();
    let (height, state_root, blocks, reader) = runner(seed).start(|context| async move {
        let mut cluster = Cluster::build(&context, n, n, LINK, Retention::default()).await;
        let last = n as usize - 1;
        let honest = byzantine.honest(n as usize);
        match byzantine {
            Byzantine::InvalidProposer | Byzantine::LyingApi => {}
            Byzantine::Equivocator => cluster.become_equivocator(&context, last).await,
            Byzantine::Garbage => cluster.become_garbage_sender(&context, last, seed).await,
        }
        let mut reader = Reader::new(&cluster.genesis);
        let liar = Certifier::new(&cluster.genesis, &[&validator_keypair(last as u64)]).unwrap();
        // The next kind of lie to tell: each in turn, so that every run tells every kind.
        let mut next_lie = 0usize;
        // The lying API's true answers so far, oldest first (for rollbacks).
        let mut told: Vec<CertifiedState> = Vec::new();
        let mut forged: Vec<SignedTransaction> = Vec::new();
        let mut submitted: Vec<SignedTransaction> = Vec::new();
        let mut rounds = 0u64;
        let mut crashed: Vec<usize> = Vec::new();
        let start = context.current();
        for (at, step) in steps {
            // Steps keep their times whatever earlier steps took (a crash waits for its
            // tasks to unwind).
            context.sleep_until(start + Duration::from_secs(at)).await;
            match step {
                Step::Crash(v) => {
                    cluster.crash(&context, v).await;
                    crashed.push(v);
                }
                Step::Restart(v) => {
                    cluster.start(&context, v).await;
                    crashed.retain(|c| *c != v);
                }
                Step::Partition(left) => cluster.partition(&left).await,
                Step::Lossy => cluster.set_links(LOSSY).await,
                Step::Slow => cluster.set_links(SLOW).await,
                Step::Heal => cluster.set_links(LINK).await,
                Step::Submit => {
                    if byzantine == Byzantine::InvalidProposer {
                        forged.push(cluster.inject_forged_transfer(0, rounds * PER_SUBMIT));
                    }
                    let txs = all_transfers(rounds * PER_SUBMIT..(rounds + 1) * PER_SUBMIT);
                    rounds += 1;
                    submit_to_running(&cluster, &honest, &crashed, &txs);
                    submitted.extend(txs);
                    if let Some(i) = honest.iter().find(|i| !crashed.contains(i))
                        && let Some(answer) = cluster.certified_state(*i, &reader.keys).await
                    {
                        reader.check_honest(*i, &answer);
                    }
                    if byzantine == Byzantine::LyingApi
                        && let Some(truth) = cluster.certified_state(last, &reader.keys).await
                    {
                        // A true answer older than what the client verified is a rollback
                        // already; any other lie made of it would be refused as stale
                        // before it is looked at.
                        let (lie, older, forced) = if truth.height < reader.floor {
                            (Lie::Stale, Some(&truth), true)
                        } else {
                            let lie = Lie::ALL[next_lie % Lie::ALL.len()];
                            (lie, told.iter().find(|a| a.height < reader.floor), false)
                        };
                        // A rollback needs an answer older than the client's newest: until
                        // there is one, that kind waits for a later round.
                        if let Some(answer) = lie.tell(&truth, older, &liar) {
                            reader.check_lie(lie, &answer, at);
                            next_lie += usize::from(!forced);
                        }
                        told.push(truth);
                    }
                }
            }
        }
        // Everything heals: links, partitions, crashed validators.
        cluster.set_links(LINK).await;
        for v in std::mem::take(&mut crashed) {
            cluster.start(&context, v).await;
        }
        // Mempools of crashed validators are gone: what they alone held is handed out again.
        submit_to_running(&cluster, &honest, &crashed, &submitted);
        let last_round = all_transfers(rounds * PER_SUBMIT..(rounds + 1) * PER_SUBMIT);
        rounds += 1;
        submit_to_running(&cluster, &honest, &crashed, &last_round);
        submitted.extend(last_round);
        cluster
            .wait_until(&context, |c| {
                honest.iter().all(|i| {
                    c.nodes[*i]
                        .chain
                        .with_ledger(|l| {
                            submitted
                                .iter()
                                .all(|t| l.tx_location(&t.hash()).unwrap().is_some())
                        })
                        .unwrap()
                })
            })
            .await;
        let max = honest.iter().map(|i| cluster.executed(*i)).max().unwrap();
        cluster
            .wait_until(&context, |c| honest.iter().all(|i| c.executed(*i) >= max))
            .await;
        for i in &honest {
            cluster.nodes[*i]
                .chain
                .with_ledger(|l| {
                    for c in 0..CLIENTS {
                        assert_eq!(
                            l.state().account(&client(c).account()).nonce,
                            rounds * PER_SUBMIT,
                            "validator {i}: every transfer executes exactly once"
                        );
                    }
                    for forged in &forged {
                        assert!(
                            l.tx_location(&forged.hash()).unwrap().is_none(),
                            "validator {i} finalized a forged transaction"
                        );
                    }
                })
                .unwrap();
        }
        // The light client sees every transfer in a certified answer from each honest
        // validator — and from the lying API's validator, whose true answers verify too (so
        // its lies were refused for what was altered) — and is lied to once more.
        let expected = vec![rounds * PER_SUBMIT; CLIENTS as usize];
        let liar_too = (byzantine == Byzantine::LyingApi).then_some(last);
        for i in honest.iter().chain(&liar_too) {
            let deadline = context.current() + Duration::from_secs(60);
            loop {
                if let Some(answer) = cluster.certified_state(*i, &reader.keys).await
                    && reader.check_honest(*i, &answer).as_ref() == Some(&expected)
                {
                    break;
                }
                assert!(
                    context.current() < deadline,
                    "validator {i} gave no certified answer showing every transfer within 60 s"
                );
                context.sleep(Duration::from_millis(200)).await;
            }
        }
        if byzantine == Byzantine::LyingApi {
            let now = context
                .current()
                .duration_since(start)
                .unwrap_or_default()
                .as_secs();
            if let Some(older) = told.iter().find(|a| a.height < reader.floor) {
                reader.check_lie(Lie::Stale, &older.clone(), now);
            }
            let truth = cluster.certified_state(last, &reader.keys).await.unwrap();
            if truth.height >= reader.floor {
                let answer = Lie::Balance.tell(&truth, None, &liar).unwrap();
                reader.check_lie(Lie::Balance, &answer, now);
            }
        }
        if byzantine == Byzantine::Garbage {
            let garbage = validator_key(last as u64).public_key();
            let blocked = cluster.oracle.blocked().await.unwrap();
            assert!(
                blocked.iter().any(|(_, whom)| *whom == garbage),
                "no honest validator blocked the sender of garbage"
            );
        }
        let (height, root) = cluster.check_agreement_among(&honest);
        let blocks = cluster.nodes[honest[0]]
            .chain
            .with_ledger(|l| {
                (1..=height)
                    .map(|h| l.block(h).unwrap().unwrap().block.hash())
                    .collect()
            })
            .unwrap();
        (height, root, blocks, reader)
    });
    Outcome {
        seed,
        validators: n,
        byzantine,
        schedule,
        height,
        state_root,
        blocks,
        verified_answers: reader.verified,
        lies_refused: reader.lies,
    }
}

/// Hands `txs` to every honest validator that is running.
fn submit_to_running(
    cluster: &Cluster,
    honest: &[usize],
    crashed: &[usize],
    txs: &[SignedTransaction],
) {
    for i in honest.iter().filter(|i| !crashed.contains(i)) {
        for tx in txs {
            let _ = cluster.nodes[*i].chain.submit(tx.clone()).unwrap();
        }
    }
}
