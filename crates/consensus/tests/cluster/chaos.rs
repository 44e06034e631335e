//! The fault campaign. Each seed draws its own schedule over about 40 s of simulated time:
//! network episodes one after another (partitions, lossy links, slow links), crashes and
//! restarts overlapping them, transfers submitted throughout, and one Byzantine member of
//! the validator set (an invalid proposer, an equivocator or a sender of garbage, by seed).
//! A crash aborts the validator's tasks and drops its ledger with every block not yet
//! written; it restarts from its data directory. Then every fault heals and the run checks:
//!
//! - safety: the honest validators finalized the same block and reached the same state root
//!   at every height any two of them have, value was conserved, and none of the forged
//!   transactions was finalized;
//! - liveness: every transfer ever submitted commits on every honest validator once the
//!   faults have healed, and each executes exactly once.
//!
//! A violation panics with what was violated; the same seed replays the same run.

use super::*;

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
}

impl Byzantine {
    /// The kind a seed runs with: each in turn.
    pub fn for_seed(seed: u64) -> Byzantine {
        match seed % 3 {
            0 => Byzantine::InvalidProposer,
            1 => Byzantine::Equivocator,
            _ => Byzantine::Garbage,
        }
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Byzantine::InvalidProposer => "invalid-proposer",
            Byzantine::Equivocator => "equivocator",
            Byzantine::Garbage => "garbage",
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
    let crashable: Vec<usize> = match byzantine {
        Byzantine::InvalidProposer => (1..n).collect(),
        Byzantine::Equivocator | Byzantine::Garbage => (0..n - 1).collect(),
    };
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
    let (height, state_root, blocks) = runner(seed).start(|context| async move {
        let mut cluster = Cluster::build(&context, n, n, LINK, Retention::default()).await;
        let last = n as usize - 1;
        let honest: Vec<usize> = match byzantine {
            Byzantine::InvalidProposer => (0..n as usize).collect(),
            Byzantine::Equivocator | Byzantine::Garbage => (0..last).collect(),
        };
        match byzantine {
            Byzantine::InvalidProposer => {}
            Byzantine::Equivocator => cluster.become_equivocator(&context, last).await,
            Byzantine::Garbage => cluster.become_garbage_sender(&context, last, seed).await,
        }
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
        (height, root, blocks)
    });
    Outcome {
        seed,
        validators: n,
        byzantine,
        schedule,
        height,
        state_root,
        blocks,
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
