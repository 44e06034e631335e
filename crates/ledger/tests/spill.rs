//! A ledger whose state tree is bound to a few entries in memory answers exactly as one that
//! holds everything: same roots, same values, proofs that verify, a reopened directory that
//! loads; and the spill files it no longer needs are let go.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use secnet_contract::StateKey;
use secnet_ledger::{Ledger, RECENT_STATES, StateMemory};
use secnet_types::{
    Block, Call, DataKind, Genesis, Hash, Keypair, RegisterData, SignedTransaction, Transaction,
};
use std::collections::BTreeSet;

const CHAIN: &str = "spill-test";

/// Tests count the spill files this process holds open: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn keys() -> Vec<Keypair> {
    common::keys(CHAIN, 3)
}

fn genesis() -> Genesis {
    common::genesis(CHAIN, 3)
}

fn data(n: u64) -> Hash {
    Hash::digest_parts(&[b"spill-test", &n.to_be_bytes()])
}

/// Signs the calls of one block for key 0 from its nonce in `ledger`.
fn block(ledger: &Ledger, calls: Vec<Call>) -> Block {
    block_after(ledger, calls, 1_000)
}

/// [`block`], `after_ms` after the tip.
fn block_after(ledger: &Ledger, calls: Vec<Call>, after_ms: u64) -> Block {
    let key = &keys()[0];
    let nonce = ledger.state().account(&key.account()).nonce;
    let txs: Vec<SignedTransaction> = calls
        .into_iter()
        .zip(nonce..)
        .map(|(call, nonce)| {
            Transaction {
                chain_id: CHAIN.into(),
                sender: key.account(),
                nonce,
                call,
            }
            .sign(key)
        })
        .collect();
    let tip = ledger.state().tip();
    Block::new(
        tip.height + 1,
        tip.block_hash,
        tip.timestamp_ms + after_ms,
        txs,
    )
}

fn register(n: u64) -> Call {
    Call::RegisterData(RegisterData {
        hash: data(n),
        description: format!("record {n}"),
        address: format!("pdc://spill/{n}"),
        price: 10,
        kind: DataKind::UserData,
        holder: keys()[1].account(),
        holder_share_bps: 1_000,
    })
}

fn withdraw(n: u64) -> Call {
    Call::WithdrawData { hash: data(n) }
}

/// A tiny bound, so that nearly all of the state lives in the spill file.
fn tiny(spill_slack_bytes: u64) -> StateMemory {
    StateMemory {
        resident_entries: 64,
        opened_entries: 32,
        spill_slack_bytes,
        grant_chunks_in_memory: 1,
    }
}

/// The spill files this process holds open, by the names they had.
fn open_spill_files() -> BTreeSet<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.contains("state-spill-"))
        .collect()
}

/// The same blocks go to both ledgers; every answer of the bounded one is checked against
/// the other's.
fn apply_both(bounded: &mut Ledger, whole: &mut Ledger, calls: Vec<Call>, registered: u64) {
    let block = block(whole, calls);
    let outcome = whole.apply_block(&block).unwrap();
    assert!(outcome.receipts.iter().all(|r| r.is_applied()));
    bounded.apply_block(&block).unwrap();
    let height = block.header.height;
    assert_eq!(bounded.state().state_root(), whole.state().state_root());
    assert_eq!(bounded.state().entry_count(), whole.state().entry_count());
    // The indexes, walked in order through parts that left memory.
    let owner = keys()[0].account();
    let listed: Vec<Hash> = whole.listed_hashes_after(None, usize::MAX).unwrap();
    assert_eq!(
        bounded.listed_hashes_after(None, usize::MAX).unwrap(),
        listed
    );
    assert_eq!(
        bounded.hashes_listed_by(&owner).unwrap(),
        whole.hashes_listed_by(&owner).unwrap()
    );
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, listed, "listings are walked in hash order");
    // About forty listings, and one that never was, through the state and through proofs
    // as of this height and as of the oldest recent one.
    let oldest = height.saturating_sub(RECENT_STATES as u64 - 1).max(1);
    let step = (registered / 40).max(1) as usize;
    for n in (0..registered + 1).step_by(step).chain([registered]) {
        let key = StateKey::Listing(data(n));
        assert_eq!(
            bounded.listed_hashes_after(Some(&data(n)), 3).unwrap(),
            whole.listed_hashes_after(Some(&data(n)), 3).unwrap()
        );
        assert_eq!(
            bounded.state().listing(&data(n)),
            whole.state().listing(&data(n))
        );
        for h in [height, oldest] {
            let (Some(b), Some(w)) = (bounded.snapshot_at(h), whole.snapshot_at(h)) else {
                continue;
            };
            let proof = b.prove(&key);
            assert_eq!(proof, w.prove(&key));
            proof.verify(&w.state_root()).unwrap();
        }
    }
}

/// Two ledgers of the same genesis in new directories, the first bound to [`tiny`].
struct Pair {
    dir: tempfile::TempDir,
    _whole_dir: tempfile::TempDir,
    bounded: Ledger,
    whole: Ledger,
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let whole_dir = tempfile::tempdir().unwrap();
    let mut bounded = Ledger::open(dir.path(), &genesis()).unwrap();
    let whole = Ledger::open(whole_dir.path(), &genesis()).unwrap();
    bounded.bound_state_memory(tiny(u64::MAX)).unwrap();
    Pair {
        dir,
        _whole_dir: whole_dir,
        bounded,
        whole,
    }
}

#[test]
fn a_bounded_state_tree_answers_as_a_whole_one_and_reopens() {
    let _serial = serial();
    let Pair {
        dir,
        _whole_dir,
        mut bounded,
        mut whole,
    } = pair();
    // The spill file is open but has no name.
    assert_eq!(open_spill_files().len(), 1);
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("spill"))
    );

    let mut registered = 0;
    for _ in 0..50 {
        let calls = (registered..registered + 100).map(register).collect();
        registered += 100;
        apply_both(&mut bounded, &mut whole, calls, registered);
    }
    let entries = whole.state().entry_count();
    assert!(entries > 10_000);
    // Blocks this large change much of so small a tree, and only subtrees no block changed
    // for RECENT_STATES heights leave memory (a stored one a block changes is written back
    // at once). Once blocks change nothing, the tree settles at its bound.
    let mut empty_blocks = 0;
    while bounded.state().resident_entries() > 64 {
        apply_both(&mut bounded, &mut whole, vec![], registered);
        empty_blocks += 1;
        assert!(
            empty_blocks <= 2 * RECENT_STATES,
            "{} of {entries} entries still in memory",
            bounded.state().resident_entries()
        );
    }
    // Stored subtrees sit in groups: one node in memory for about eight.
    let grouped = |l: &Ledger| {
        let footprint = l.state().footprint();
        assert!(
            footprint.stored_groups > 0 && footprint.stored_subtrees < footprint.stored_groups,
            "{footprint:?}"
        );
        footprint.stored_groups
    };
    let groups = grouped(&bounded);
    // Small blocks, whose registrations and withdrawals reach into subtrees that left
    // memory: answers stay the same, and most of the tree stays out.
    for round in 0..20 {
        let calls = vec![register(registered), withdraw(round * 97)];
        registered += 1;
        apply_both(&mut bounded, &mut whole, calls, registered);
        let resident = bounded.state().resident_entries();
        assert!(
            resident < entries / 4,
            "{resident} of {entries} entries in memory"
        );
    }
    assert_eq!(
        whole.state().resident_entries(),
        whole.state().entry_count()
    );
    // The groups those blocks reached were written back with their subtrees.
    assert!(grouped(&bounded) >= groups);

    // Reopened without a bound, the directory loads the same state; the spill file is gone
    // with the ledger that made it.
    let root = bounded.state().state_root();
    let entries = bounded.state().entry_count();
    drop(bounded);
    assert_eq!(open_spill_files().len(), 0);
    let reopened = Ledger::open(dir.path(), &genesis()).unwrap();
    assert_eq!(reopened.state().state_root(), root);
    assert_eq!(reopened.state().entry_count(), entries);
}

/// Registers data `rounds.start * 50` to `rounds.end * 50`, 50 to a block.
fn register_rounds(ledger: &mut Ledger, rounds: std::ops::Range<u64>) {
    for round in rounds {
        let b = block(
            ledger,
            (round * 50..round * 50 + 50).map(register).collect(),
        );
        ledger.apply_block(&b).unwrap();
    }
}

#[test]
fn a_bound_set_on_a_large_state_moves_it_out_at_once() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), &genesis()).unwrap();
    register_rounds(&mut ledger, 0..10);
    let root = ledger.state().state_root();
    let entries = ledger.state().entry_count();
    ledger.bound_state_memory(tiny(u64::MAX)).unwrap();
    assert!(ledger.state().resident_entries() <= 64);
    assert_eq!(ledger.state().state_root(), root);
    assert_eq!(ledger.state().entry_count(), entries);
    let height = ledger.state().tip().height;
    let proof = ledger
        .snapshot_at(height)
        .unwrap()
        .prove(&StateKey::Listing(data(123)));
    proof.verify(&root).unwrap();
    assert_eq!(
        ledger.state().listing(&data(123)).unwrap().address,
        "pdc://spill/123"
    );
}

/// Opened with a bound, a ledger reads its state a part of the key space at a time and moves
/// each part out before the next: it ends within the bound, with the same root and answers,
/// and goes on applying blocks.
#[test]
fn a_ledger_opened_with_a_bound_loads_within_it() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (root, entries, listed) = {
        let mut ledger = Ledger::open(dir.path(), &genesis()).unwrap();
        register_rounds(&mut ledger, 0..10);
        (
            ledger.state().state_root(),
            ledger.state().entry_count(),
            ledger.listed_hashes_after(None, usize::MAX).unwrap(),
        )
    };
    let mut ledger = Ledger::open_bounded(dir.path(), &genesis(), Some(tiny(u64::MAX))).unwrap();
    assert_eq!(open_spill_files().len(), 1);
    assert!(ledger.state().resident_entries() <= 64);
    assert_eq!(ledger.state().state_root(), root);
    assert_eq!(ledger.state().entry_count(), entries);
    assert_eq!(
        ledger.listed_hashes_after(None, usize::MAX).unwrap(),
        listed
    );
    let height = ledger.state().tip().height;
    for n in [0, 123, 499] {
        let proof = ledger
            .snapshot_at(height)
            .unwrap()
            .prove(&StateKey::Listing(data(n)));
        proof.verify(&root).unwrap();
        assert_eq!(
            ledger.state().listing(&data(n)).unwrap().address,
            format!("pdc://spill/{n}")
        );
    }
    register_rounds(&mut ledger, 10..12);
    let root = ledger.state().state_root();
    drop(ledger);
    assert_eq!(open_spill_files().len(), 0);
    // What it wrote loads whole, to the same root.
    let whole = Ledger::open(dir.path(), &genesis()).unwrap();
    assert_eq!(whole.state().state_root(), root);
    assert_eq!(whole.state().entry_count(), entries + 200);
}

#[test]
fn a_spill_file_of_mostly_dead_copies_is_replaced_and_written_over_by_the_next() {
    let _serial = serial();
    let mut p = pair();
    // No slack: a file is replaced as soon as it holds `SPILL_FILE_TIMES_LIVE` times what
    // is read from it.
    p.bounded.bound_state_memory(tiny(0)).unwrap();
    let before = open_spill_files();
    assert_eq!(before.len(), 1);
    let mut registered = 0;
    // New keys land all over the tree, so subtrees are read back, changed and stored again:
    // copies pile up.
    let started = |l: &Ledger| l.footprint().unwrap().spill_files_started;
    assert_eq!(started(&p.bounded), 1);
    let mut seen = before.clone();
    for _ in 0..200 {
        let calls = (registered..registered + 20).map(register).collect();
        registered += 20;
        apply_both(&mut p.bounded, &mut p.whole, calls, registered);
        let open = open_spill_files();
        // The current file and the one moving over or retired, never more.
        assert!(open.len() <= 2, "{open:?}");
        seen.extend(open);
    }
    assert!(
        started(&p.bounded) >= 3,
        "{} files started",
        started(&p.bounded)
    );
    // Every new file after the second was the one retired last, written over.
    assert_eq!(seen.len(), 2, "{seen:?}");
    // Once everything moved and the versions that read the old file are gone, the current
    // file is open, and the old one kept for the next.
    for _ in 0..3 * RECENT_STATES {
        apply_both(
            &mut p.bounded,
            &mut p.whole,
            vec![register(registered)],
            registered,
        );
        registered += 1;
    }
    assert_eq!(p.bounded.state().entries_in_earlier_stores(), 0);
    assert_eq!(open_spill_files(), seen);
    // Dropped, the ledger closes both.
    drop(p.bounded);
    assert!(open_spill_files().is_empty());
}

#[test]
fn grants_expire_from_a_tree_that_left_memory() {
    let _serial = serial();
    let mut p = pair();
    let both = |bounded: &mut Ledger, whole: &mut Ledger, calls: Vec<Call>, after_ms: u64| {
        let block = block_after(whole, calls, after_ms);
        let outcome = whole.apply_block(&block).unwrap();
        assert!(outcome.receipts.iter().all(|r| r.is_applied()));
        bounded.apply_block(&block).unwrap();
        assert_eq!(bounded.state().state_root(), whole.state().state_root());
        let ids = |l: &Ledger| l.state().grants().map(|g| g.id).collect::<Vec<_>>();
        assert_eq!(ids(bounded), ids(whole));
        ids(whole).len()
    };
    let calls = (0..20)
        .map(register)
        .chain([Call::SubscribeData { hash: data(3) }])
        .collect();
    both(&mut p.bounded, &mut p.whole, calls, 1_000);
    // Grants made to expire over a minute, 1,500 of them (more than a block retires).
    for second in 0..60u32 {
        let calls = (0..25)
            .map(|i| Call::RequestDataWithHash {
                hash: data(3),
                purpose: format!("care {second}/{i}"),
                ttl_secs: 1 + second,
            })
            .collect();
        both(&mut p.bounded, &mut p.whole, calls, 1_000);
    }
    for _ in 0..2 * RECENT_STATES {
        both(&mut p.bounded, &mut p.whole, vec![], 1_000);
    }
    assert_eq!(p.whole.state().grants().count(), 1_500);
    assert!(p.bounded.state().resident_entries() < 1_500);
    // Their keys by expiry are in the grants' file but for one chunk of 512.
    let in_memory = |l: &Ledger| l.state().footprint().grants_by_expiry_in_memory;
    assert_eq!(in_memory(&p.whole), 1_500);
    assert!(in_memory(&p.bounded) <= 512, "{}", in_memory(&p.bounded));
    // Opened again, the bounded ledger builds them in its file as it loads.
    drop(p.bounded);
    p.bounded = Ledger::open_bounded(p.dir.path(), &genesis(), Some(tiny(u64::MAX))).unwrap();
    assert!(in_memory(&p.bounded) <= 512, "{}", in_memory(&p.bounded));
    // An hour later they are retired, oldest first, at most 1,024 a block.
    let left = both(&mut p.bounded, &mut p.whole, vec![], 3_600_000 + 30_000);
    assert!(left > 0 && left < 1_500, "{left} grants left");
    let left = both(&mut p.bounded, &mut p.whole, vec![], 1_000);
    assert!(left < 1_500 - 1_024, "{left} grants left");
    let left = both(&mut p.bounded, &mut p.whole, vec![], 60_000);
    assert_eq!(left, 0);
}
