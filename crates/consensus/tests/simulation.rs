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

mod cluster;

use cluster::*;
use commonware_cryptography::Signer as _;
use commonware_p2p::simulated::Link;
use commonware_runtime::{Clock, Runner as _, Storage as _, deterministic};
use secnet_consensus::chain::Chain;
use secnet_consensus::engine::{Retention, Timing, blocks_partition};
use secnet_ledger::{Ledger, Snapshot};
use secnet_types::{Hash, Signature, SignedTransaction};
use std::sync::Arc;
use std::time::Duration;

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
        cluster.submit_to(3, &second);
        cluster
            .wait_until(&context, |c| committed_on(c, 3, &second))
            .await;
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

/// Whether any validator blocked validator `i` (as an equivocator, or for anything else).
async fn blocked_by_anyone(cluster: &Cluster, i: u64) -> Vec<String> {
    let whom = validator_key(i).public_key();
    cluster
        .oracle
        .blocked()
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, w)| *w == whom)
        .map(|(by, _)| by.to_string())
        .collect()
}

#[test]
fn a_validator_that_lost_its_storage_returns_without_equivocating() {
    runner(37).start(|context| async move {
        // A young network: the peers still hold the votes of every view so far, including
        // those validator 2 signed as a leader. (Were it to vote at once after losing its
        // journal, it would propose anew in such a view and all three would block it as an
        // equivocator: it would never sync.)
        let mut cluster = Cluster::new(&context, 4).await;
        let first = all_transfers(0..5);
        cluster.submit(&first);
        cluster.wait_until(&context, |c| committed(c, &first)).await;

        // It loses its ledger and its consensus journal, and starts again at once.
        cluster.wipe(&context, 2).await;
        cluster.start(&context, 2).await;
        let second = all_transfers(5..10);
        cluster.submit(&second);
        cluster.wait_until(&context, |c| committed(c, &second)).await;
        let ahead = cluster.executed(0);
        cluster.wait_until(&context, |c| c.executed(2) >= ahead).await;

        // It votes again: with validator 3 down, validators 0 and 1 need it for a quorum.
        cluster.crash(&context, 3).await;
        let third = all_transfers(10..15);
        cluster.submit_to(3, &third);
        cluster
            .wait_until(&context, |c| committed_on(c, 3, &third))
            .await;
        cluster.check_agreement_among(&[0, 1, 2]);
        let blockers = blocked_by_anyone(&cluster, 2).await;
        assert!(
            blockers.is_empty(),
            "validator 2 signed votes that conflict with those it signed before it lost its journal; blocked by {blockers:?}"
        );
    });
}

#[test]
fn a_validator_that_lost_its_storage_and_an_equivocating_leader_cannot_split_the_honest_ones() {
    runner(39).start(|context| async move {
        // Validator 3 turns equivocator (as leader, one proposal to one validator and a
        // conflicting one to the others) while validator 2, having lost its journal,
        // returns: 0 and 1 need it for every quorum, and the equivocator may lead a view 2
        // voted in before.
        let mut cluster = Cluster::new(&context, 4).await;
        let first = all_transfers(0..5);
        cluster.submit(&first);
        cluster.wait_until(&context, |c| committed(c, &first)).await;
        cluster.become_equivocator(&context, 3).await;
        cluster.wipe(&context, 2).await;
        cluster.start(&context, 2).await;

        let second = all_transfers(5..15);
        cluster.submit_to(3, &second);
        cluster
            .wait_until(&context, |c| committed_on(c, 3, &second))
            .await;
        cluster.check_agreement_among(&[0, 1, 2]);
        let honest = [validator_key(0), validator_key(1)].map(|k| k.public_key().to_string());
        let blockers: Vec<String> = blocked_by_anyone(&cluster, 2)
            .await
            .into_iter()
            .filter(|by| honest.contains(by))
            .collect();
        assert!(
            blockers.is_empty(),
            "honest validators {blockers:?} saw validator 2 sign conflicting votes"
        );
    });
}

#[test]
fn a_new_network_of_validators_without_journals_starts() {
    runner(38).start(|context| async move {
        // Every validator listens before it votes; the first views pass as nullifications.
        let mut cluster = Cluster::build(&context, 4, 0, LINK, Retention::default()).await;
        for i in 0..4 {
            cluster.nodes[i].without_journal = true;
            cluster.start(&context, i).await;
        }
        let txs = all_transfers(0..5);
        cluster.submit(&txs);
        cluster.wait_until(&context, |c| committed(c, &txs)).await;
        check_nonces(&cluster, 5);
        cluster.check_agreement();
        for i in 0..4 {
            assert!(blocked_by_anyone(&cluster, i).await.is_empty());
        }
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
        let forged = cluster.inject_forged_transfer(0, 0);
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
    runner(61).start(|context| async move {
        // Three honest validators run SecNet; the fourth member of the set equivocates: as
        // leader it sends one proposal to one validator and a conflicting one to the others.
        let mut cluster = Cluster::new(&context, 4).await;
        cluster.become_equivocator(&context, 3).await;

        cluster
            .commit_among_first(&context, 3, &all_transfers(0..6))
            .await;
    });
}

#[test]
fn a_validator_sending_garbage_is_blocked_and_the_others_go_on() {
    runner(73).start(|context| async move {
        // The fourth member of the validator set sends random bytes on every consensus channel.
        let mut cluster = Cluster::new(&context, 4).await;
        cluster.become_garbage_sender(&context, 3, 73).await;
        cluster
            .commit_among_first(&context, 3, &all_transfers(0..4))
            .await;
        assert!(
            cluster.blocked_by(0..3, 3).await,
            "not every honest validator blocked the peer sending garbage: {:?}",
            cluster.oracle.blocked().await.unwrap()
        );
    });
}

/// Validator 3 relays `forged` by gossip to the three others: each blocks it, none admits
/// what it relayed, and they go on without it. Before, what validator 3 relays honestly
/// (also a transaction that can no longer be admitted) blocks no one.
fn a_relayer_of(seed: u64, forged: SignedTransaction) {
    runner(seed).start(|context| async move {
        let cluster = Cluster::new(&context, 4).await;
        let mut gossip = Vec::new();
        for i in 0..4 {
            gossip.push(cluster.start_gossip(&context, i).await);
        }
        // Relayed honestly, a transfer reaches the others' mempools and a block; relayed
        // again once its nonce is used, it is refused. No one is blocked for either.
        let relayed = transfers(0, 0..1);
        gossip[3].0.publish(&relayed);
        cluster
            .wait_until(&context, |c| committed_on(c, 3, &relayed))
            .await;
        gossip[3].0.publish(&relayed);
        context.sleep(Duration::from_secs(2)).await;
        assert!(cluster.oracle.blocked().await.unwrap().is_empty());

        // Then the forged one, in a batch with a transaction that would be admitted.
        let companion = transfers(2, 0..1).remove(0);
        gossip[3].0.publish(&[companion.clone(), forged]);
        cluster.wait_blocked_by(&context, 0..3, 3).await;
        for i in 0..3 {
            let chain = &cluster.nodes[i].chain;
            let committed = chain
                .with_ledger(|l| l.tx_location(&companion.hash()).unwrap().is_some())
                .unwrap();
            assert!(
                chain.pending().unwrap() == 0 && !committed,
                "validator {i} admitted from a batch with a forged transaction"
            );
        }

        // And the three go on without it.
        cluster
            .commit_among_first(&context, 3, &all_transfers(0..4))
            .await;
    });
}

#[test]
fn a_validator_relaying_a_transaction_its_sender_did_not_sign_is_blocked() {
    // With a nonce already used: admission would refuse it for that before its signature.
    let used = transfers(0, 0..1).remove(0);
    a_relayer_of(
        29,
        SignedTransaction::new(used.tx().clone(), Signature([7; 64])),
    );
}

#[test]
fn a_validator_relaying_another_chains_transaction_is_blocked() {
    let mut tx = transfers(1, 0..1).remove(0).tx().clone();
    tx.chain_id = "another-chain".into();
    a_relayer_of(31, tx.sign(&client(1)));
}

/// Batches relayed at once by honest validators and a forger (read together where they wait
/// together): the forger is blocked, and what the others relayed is admitted and committed
/// all the same.
#[test]
fn a_forger_among_honest_relayers_is_blocked_and_what_they_relayed_is_committed() {
    runner(37).start(|context| async move {
        let cluster = Cluster::new(&context, 4).await;
        let mut gossip = Vec::new();
        for i in 0..4 {
            gossip.push(cluster.start_gossip(&context, i).await);
        }
        let (first, second) = (transfers(1, 0..3), transfers(2, 0..3));
        let unsigned = transfers(3, 0..1).remove(0);
        let forged = SignedTransaction::new(unsigned.tx().clone(), Signature([7; 64]));
        gossip[1].0.publish(&first);
        gossip[3].0.publish(&[transfers(0, 0..1).remove(0), forged]);
        gossip[2].0.publish(&second);
        let honest = [first, second].concat();
        cluster
            .wait_until(&context, |c| committed_on(c, 3, &honest))
            .await;
        cluster.wait_blocked_by(&context, 0..3, 3).await;
        let blocked = cluster.oracle.blocked().await.unwrap();
        assert!(
            blocked
                .iter()
                .all(|(_, peer)| *peer == validator_key(3).public_key()),
            "an honest relayer was blocked: {blocked:?}"
        );
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
        let took = cluster.commit_timed(&context, &more).await;
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

#[test]
fn a_trickle_of_transactions_fills_blocks_instead_of_multiplying_them() {
    runner(12).start(|context| async move {
        // Eight transactions every 20 ms for ten seconds: far fewer than a batch per block
        // interval, while a view on these 20 ms links takes about 70 ms. An eager leader
        // finalizes about 150 blocks of a few transactions; a paced one at most one per
        // interval.
        let cluster = Cluster::new(&context, 4).await;
        let start = cluster.executed(0);
        let began = context.current();
        let rounds = 500u64;
        for nonce in 0..rounds {
            cluster.submit(&all_transfers(nonce..nonce + 1));
            context.sleep(Duration::from_millis(20)).await;
        }
        let last = all_transfers(rounds - 1..rounds);
        cluster.wait_until(&context, |c| committed(c, &last)).await;
        let elapsed = context.current().duration_since(began).unwrap();
        let produced = cluster.executed(0) - start;
        let interval = Timing::default().block_interval;
        let bound = (elapsed.as_millis() / interval.as_millis()) as u64 + 5;
        assert!(
            produced <= bound,
            "{produced} blocks in {elapsed:?} of a trickle; at most {bound} expected"
        );
        // And the blocks still come about once an interval: the trickle is not held back.
        assert!(
            elapsed < Duration::from_millis(20 * rounds) + 4 * interval,
            "the last transactions took until {elapsed:?}"
        );
        check_nonces(&cluster, rounds);
        cluster.check_agreement();
    });
}

#[test]
fn a_batch_is_proposed_at_once_and_fewer_transactions_wait_for_the_interval() {
    runner(13).start(|context| async move {
        // A long interval and a batch of two rounds (16 transactions), so that the two
        // cases differ by far more than a view on these 20 ms links takes; a leader timeout
        // long enough that the interval is kept as it is.
        let timing = Timing {
            block_interval: Duration::from_secs(1),
            batch_txs: 2 * CLIENTS as usize,
            leader_timeout: Duration::from_secs(4),
            certification_timeout: Duration::from_secs(6),
            ..Timing::default()
        };
        let interval = timing.block_interval;
        let cluster = Cluster::with_timing(&context, 4, timing).await;
        let first = all_transfers(0..1);
        cluster.submit(&first);
        cluster.wait_until(&context, |c| committed(c, &first)).await;

        // Just after a block: a batch goes into the next one at once.
        let took = cluster.commit_timed(&context, &all_transfers(1..3)).await;
        assert!(
            took < interval / 2,
            "a batch took {took:?} to commit; a leader should not have waited for the interval"
        );

        // Just after a block: fewer than a batch wait for the interval since it.
        let few = all_transfers(3..4);
        let took = cluster.commit_timed(&context, &few).await;
        assert!(
            took >= interval / 2,
            "{} transactions took {took:?} to commit; they should have waited for the interval",
            few.len()
        );
        assert!(took < 2 * interval, "{took:?} is past the interval");
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
    archive_section: 16,
};

/// The sections (first heights) of node `i`'s consensus archive of blocks that are on disk.
async fn archive_sections(
    context: &deterministic::Context,
    cluster: &Cluster,
    i: usize,
) -> Vec<(String, Vec<u64>)> {
    let prefix = format!("validator-{i}-{}", cluster.nodes[i].wiped);
    let mut out = Vec::new();
    for part in ["key", "value"] {
        let partition = blocks_partition(&prefix, part);
        let mut sections: Vec<u64> = context
            .scan(&partition)
            .await
            .unwrap_or_default()
            .iter()
            .map(|blob| u64::from_be_bytes(blob.as_slice().try_into().unwrap()))
            .collect();
        sections.sort();
        out.push((partition, sections));
    }
    out
}

#[test]
fn a_pruned_validator_restarts_and_catches_up() {
    runner(51).start(|context| async move {
        let mut cluster = Cluster::build(&context, 4, 4, LINK, SHORT).await;
        let nonce = advance_to(&cluster, &context, 4, 0, 0, 200).await;
        let all = 4;
        cluster
            .wait_until(&context, |c| (0..all).all(|i| c.executed(i) >= 200))
            .await;
        // Blocks are pruned once the writer has put a later one on disk, which trails
        // execution by up to a write's linger.
        cluster
            .wait_until(&context, |c| {
                c.nodes
                    .iter()
                    .all(|n| n.chain.with_ledger(|l| l.first_block().unwrap()).unwrap() > 64)
            })
            .await;

        // Consensus's archive of blocks is pruned with the ledger's blocks (both keep 64
        // heights here): at most the section of 16 that holds the oldest kept height is
        // older.
        let mut old = Vec::new();
        for _ in 0..60 {
            old.clear();
            for i in 0..all {
                let first = cluster.nodes[i]
                    .chain
                    .with_ledger(|l| l.first_block().unwrap())
                    .unwrap();
                for (partition, sections) in archive_sections(&context, &cluster, i).await {
                    assert!(!sections.is_empty(), "{partition} holds nothing");
                    if sections.first().is_some_and(|oldest| oldest + 16 <= first) {
                        old.push((partition, first, sections));
                    }
                }
            }
            if old.is_empty() {
                break;
            }
            context.sleep(Duration::from_secs(1)).await;
        }
        assert!(old.is_empty(), "sections kept too long: {old:?}");

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
        let mut ledger = Ledger::install_snapshot(&dir, &cluster.genesis, snapshot, None).unwrap();
        // Like the harness's other even validators, it reads its state from a spill file.
        ledger.bound_state_memory(TINY_STATE_MEMORY).unwrap();
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

/// A handful of the fault campaign's seeds (`examples/chaos.rs` runs hundreds): each kind of
/// Byzantine member, with crashes, partitions and bad links, keeps safety and liveness.
#[test]
fn a_handful_of_chaos_seeds_keep_safety_and_liveness() {
    use cluster::chaos::{Byzantine, Lie, Step, run};
    let mut steps = Vec::new();
    let mut kinds = Vec::new();
    let (mut lies, mut verified) = (Vec::new(), 0);
    for (seed, validators) in [(1, 4), (2, 4), (3, 4), (4, 7)] {
        let outcome = run(seed, validators);
        assert!(outcome.height > 0, "seed {seed}");
        if seed == 1 {
            let again = run(seed, validators);
            assert_eq!(
                (again.blocks, again.state_root),
                (outcome.blocks.clone(), outcome.state_root),
                "the same seed must replay the same run"
            );
        }
        kinds.push(outcome.byzantine);
        lies.extend(outcome.lies_refused);
        verified += outcome.verified_answers;
        steps.extend(outcome.schedule.into_iter().map(|(_, s)| s));
    }
    for kind in [
        Byzantine::InvalidProposer,
        Byzantine::Equivocator,
        Byzantine::Garbage,
        Byzantine::LyingApi,
    ] {
        assert!(kinds.contains(&kind), "{kind:?} never ran");
    }
    for lie in Lie::ALL {
        assert!(
            lies.contains(&lie),
            "the lying API never told a {lie:?} lie"
        );
    }
    assert!(verified > 0, "the light client verified no answer");
    for (what, happened) in [
        ("crash", steps.iter().any(|s| matches!(s, Step::Crash(_)))),
        (
            "partition",
            steps.iter().any(|s| matches!(s, Step::Partition(_))),
        ),
        (
            "bad links",
            steps.iter().any(|s| matches!(s, Step::Lossy | Step::Slow)),
        ),
    ] {
        assert!(happened, "no {what} in these schedules");
    }
}
