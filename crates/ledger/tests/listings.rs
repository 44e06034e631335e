//! The ledger lists the current listings, in hash order and by owner, exactly as a model of
//! registrations and withdrawals says, whether what a block changed is still in memory, waits
//! for its slice to be written, or is on disk; after a reopen; and after a ledger of a format
//! before the indexes of listings, or before blocks were cut into chunks, is opened.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use proptest::prelude::*;
use redb::{Database, ReadableTable, TableDefinition};
use secnet_ledger::{LEDGER_FILE, LISTING_CHANGES_HEIGHTS, Ledger};
use secnet_types::{
    AccountId, Block, Call, DataKind, Genesis, Hash, Keypair, RegisterData, Transaction,
};
use std::collections::BTreeMap;
use std::path::Path;

const CHAIN: &str = "listings-test";
const OWNERS: usize = 4;
/// Data hashes the ops name: `data(0..DATA)`, the first `CROWDED` of them in the first slice
/// of the listed hashes (first byte below 4), so that it holds more than is read at once.
const DATA: u64 = 160;
const CROWDED: u64 = 120;

fn keys() -> Vec<Keypair> {
    common::keys(CHAIN, OWNERS as u64)
}

fn genesis() -> Genesis {
    common::genesis(CHAIN, OWNERS as u64)
}

fn data(n: u64) -> Hash {
    let mut hash = Hash::digest_parts(&[CHAIN.as_bytes(), &n.to_be_bytes()]);
    if n < CROWDED {
        hash.0[0] = (n % 4) as u8;
    }
    hash
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Register { owner: usize, data: u64 },
    Withdraw { owner: usize, data: u64 },
}

/// How a block reaches the ledger, and what happens after it.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// Applied and written at once.
    Written,
    /// Applied; written with a later block.
    Deferred,
    /// Applied and written, then the ledger is closed and opened again.
    Reopened,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..OWNERS, 0..DATA).prop_map(|(owner, data)| Op::Register { owner, data }),
        1 => (0..OWNERS, 0..DATA).prop_map(|(owner, data)| Op::Withdraw { owner, data }),
    ]
}

fn then() -> impl Strategy<Value = Then> {
    prop_oneof![
        4 => Just(Then::Written),
        4 => Just(Then::Deferred),
        1 => Just(Then::Reopened),
    ]
}

/// One block of `ops`, each signed by its owner with the owner's next nonce.
fn block(ledger: &Ledger, ops: &[Op]) -> Block {
    let keys = keys();
    let mut nonces: BTreeMap<usize, u64> = BTreeMap::new();
    let txs = ops
        .iter()
        .map(|op| {
            let (owner, call) = match *op {
                Op::Register { owner, data: n } => (
                    owner,
                    Call::RegisterData(RegisterData {
                        hash: data(n),
                        description: format!("record {n}"),
                        address: format!("pdc://listings/{n}"),
                        price: 1,
                        kind: DataKind::UserData,
                        holder: keys[owner].account(),
                        holder_share_bps: 0,
                    }),
                ),
                Op::Withdraw { owner, data: n } => (owner, Call::WithdrawData { hash: data(n) }),
            };
            let key = &keys[owner];
            let nonce = nonces
                .entry(owner)
                .or_insert_with(|| ledger.state().account(&key.account()).nonce);
            let tx = Transaction {
                chain_id: CHAIN.into(),
                sender: key.account(),
                nonce: *nonce,
                call,
            }
            .sign(key);
            *nonce += 1;
            tx
        })
        .collect();
    let tip = ledger.state().tip();
    Block::new(
        tip.height + 1,
        tip.block_hash,
        tip.timestamp_ms + 1_000,
        txs,
    )
}

/// The model: who lists each data hash.
type Model = BTreeMap<Hash, AccountId>;

fn apply(model: &mut Model, op: Op) {
    let owner = keys()[match op {
        Op::Register { owner, .. } | Op::Withdraw { owner, .. } => owner,
    }]
    .account();
    match op {
        Op::Register { data: n, .. } => {
            model.entry(data(n)).or_insert(owner);
        }
        Op::Withdraw { data: n, .. } => {
            if model.get(&data(n)) == Some(&owner) {
                model.remove(&data(n));
            }
        }
    }
}

/// Every answer of `ledger` about listings is the model's: every page, from the first hash
/// and from each of `starts`.
fn check(
    ledger: &Ledger,
    model: &Model,
    starts: impl IntoIterator<Item = u64>,
) -> Result<(), TestCaseError> {
    let all: Vec<Hash> = model.keys().copied().collect();
    prop_assert_eq!(&ledger.listed_hashes_after(None, usize::MAX).unwrap(), &all);
    // Pages of every size cover them all, once, in order, from any starting point.
    for limit in [1, 7, 100] {
        let mut paged: Vec<Hash> = Vec::new();
        let mut after = None;
        loop {
            let page = ledger.listed_hashes_after(after.as_ref(), limit).unwrap();
            prop_assert!(page.len() <= limit);
            paged.extend(&page);
            if page.len() < limit {
                break;
            }
            after = page.last().copied();
        }
        prop_assert_eq!(&paged, &all, "pages of {}", limit);
    }
    for n in starts {
        let after: Vec<Hash> = all.iter().copied().filter(|h| *h > data(n)).collect();
        prop_assert_eq!(
            ledger
                .listed_hashes_after(Some(&data(n)), usize::MAX)
                .unwrap(),
            after
        );
    }
    for key in keys() {
        let owner = key.account();
        let mine: Vec<Hash> = model
            .iter()
            .filter(|(_, o)| **o == owner)
            .map(|(h, _)| *h)
            .collect();
        prop_assert_eq!(ledger.hashes_listed_by(&owner).unwrap(), mine);
    }
    Ok(())
}

/// Whether the ledger names every listing that changed since each height (`history`: the
/// model after each height), and says it cannot for heights before it was opened at
/// `opened_at` (the test's blocks are fewer than it keeps).
fn changes_since(ledger: &Ledger, history: &[Model], opened_at: u64) -> Result<(), TestCaseError> {
    let tip = ledger.state().tip().height;
    let now = &history[tip as usize];
    for since in 0..=tip {
        let answer = ledger.listings_changed_since(since);
        prop_assert_eq!(
            answer.is_some(),
            since >= opened_at,
            "since {} at {}",
            since,
            tip
        );
        let Some((at, changed)) = answer else {
            continue;
        };
        prop_assert_eq!(at, tip);
        let changed: std::collections::BTreeSet<Hash> =
            changed.iter().flat_map(|h| h.iter().copied()).collect();
        let then = &history[since as usize];
        for n in 0..DATA {
            let hash = data(n);
            if then.get(&hash) != now.get(&hash) {
                prop_assert!(changed.contains(&hash), "{} changed since {}", n, since);
            }
        }
    }
    prop_assert!(ledger.listings_changed_since(tip + 1).is_none());
    Ok(())
}

/// Makes the ledger in `dir` one of format 8, before the indexes of listings (their runs
/// removed), of format 9, before the index of listed hashes, or of format 10, with each
/// block stored whole.
fn as_format(dir: &Path, format: u8) {
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    const RUNS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index_runs");
    const RUN_SETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index_run_sets");
    /// The first key byte, in both tables, of the listings by owner, then by hash.
    const OWNED: u8 = 3;
    const LISTED: u8 = 4;
    let db = Database::create(dir.join(LEDGER_FILE)).unwrap();
    let w = db.begin_write().unwrap();
    for table in [RUNS, RUN_SETS] {
        if format >= 10 {
            break;
        }
        let mut t = w.open_table(table).unwrap();
        let owned: Vec<Vec<u8>> = t
            .range([if format == 8 { OWNED } else { LISTED }].as_slice()..[LISTED + 1].as_slice())
            .unwrap()
            .map(|row| row.unwrap().0.value().to_vec())
            .collect();
        for key in owned {
            t.remove(key.as_slice()).unwrap();
        }
    }
    common::whole_blocks(&w);
    w.open_table(META)
        .unwrap()
        .insert("format", format!("secnet-ledger/{format}").as_bytes())
        .unwrap();
    w.commit().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn listings_by_hash_and_by_owner_match_the_model(
        blocks in prop::collection::vec(
            (prop::collection::vec(op(), 1..12), then()),
            70..120,
        ),
        // The rows let wait: by default, or so few that writes store several slices.
        rows_waiting in prop_oneof![Just(None), (0usize..8).prop_map(Some)],
    ) {
        let g = genesis();
        let dir = tempfile::tempdir().unwrap();
        let open = |dir: &Path| {
            let ledger = Ledger::open(dir, &g).unwrap();
            if let Some(rows) = rows_waiting {
                ledger.limit_index_rows_waiting(rows).unwrap();
            }
            ledger
        };
        let mut ledger = open(dir.path());
        let mut model = Model::new();
        // First every crowded hash is registered, so that once its slice has been written
        // (every 64 writes) a page of it is read past in parts.
        let prelude: Vec<Op> = (0..CROWDED)
            .map(|data| Op::Register { owner: data as usize % OWNERS, data })
            .collect();
        let blocks = std::iter::once((prelude, Then::Written)).chain(blocks);
        // The model after each height, and the last height the ledger was opened at.
        let mut history = vec![Model::new()];
        let mut opened_at = 0;
        for (ops, then) in &blocks.collect::<Vec<_>>() {
            let block = block(&ledger, ops);
            for op in ops {
                apply(&mut model, *op);
            }
            history.push(model.clone());
            match then {
                Then::Written | Then::Reopened => {
                    ledger.apply_block(&block).unwrap();
                }
                Then::Deferred => {
                    ledger.apply_block_deferred(&block, |_| false).unwrap();
                }
            }
            let start = ledger.state().tip().height % DATA;
            check(&ledger, &model, [start, CROWDED - 1 - start % CROWDED])?;
            let tip = ledger.state().tip().height;
            changes_since(&ledger, &history, opened_at)?;
            if let Then::Reopened = then {
                drop(ledger);
                ledger = open(dir.path());
                check(&ledger, &model, 0..DATA)?;
                opened_at = tip;
                changes_since(&ledger, &history, opened_at)?;
            }
        }
        // A ledger of a format before the indexes of listings gets them from its listings,
        // and one of a format before blocks were cut into chunks keeps every block.
        ledger.syncer().sync().unwrap();
        let tip = ledger.state().tip().height;
        let stored: Vec<Vec<u8>> = (1..=tip)
            .map(|h| ledger.block_bytes(h).unwrap().unwrap())
            .collect();
        for format in [8, 9, 10] {
            drop(ledger);
            as_format(dir.path(), format);
            ledger = Ledger::open(dir.path(), &g).unwrap();
            check(&ledger, &model, 0..DATA)?;
            for (h, bytes) in (1..=tip).zip(&stored) {
                prop_assert_eq!(&ledger.block_bytes(h).unwrap().unwrap(), bytes);
            }
            prop_assert!(ledger.block_bytes(tip + 1).unwrap().is_none());
        }
    }
}

/// Rows of listings their owners withdrew leave the owner index as its runs are merged (a
/// slice is written every 64 writes, and four runs make a merge), found through the table of
/// withdrawn hashes; the rows of listings still held stay, and a hash registered again by its
/// owner is found again.
#[test]
fn the_owner_index_keeps_what_owners_hold_through_merges() {
    let g = genesis();
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), &g).unwrap();
    let mut model = Model::new();
    let mut withdrawn_hashes = std::collections::BTreeSet::new();
    for b in 0..320u64 {
        let owner = (b % OWNERS as u64) as usize;
        let mut ops = vec![Op::Register {
            owner,
            data: b % DATA,
        }];
        if b >= 8 {
            ops.push(Op::Withdraw {
                owner,
                data: (b - 8) % DATA,
            });
        }
        let block = block(&ledger, &ops);
        for op in &ops {
            let before = model.len();
            apply(&mut model, *op);
            if let Op::Withdraw { data: n, .. } = op
                && model.len() < before
            {
                withdrawn_hashes.insert(data(*n));
            }
        }
        ledger.apply_block(&block).unwrap();
    }
    check(&ledger, &model, [0, CROWDED, DATA - 1]).unwrap();
    drop(ledger);
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    check(&ledger, &model, 0..DATA).unwrap();
    drop(ledger);

    let usage = secnet_ledger::disk_usage(&dir.path().join(LEDGER_FILE)).unwrap();
    let withdrawn = usage
        .tables
        .iter()
        .find(|t| t.name == "listings_withdrawn")
        .unwrap();
    let owned = usage.runs.iter().find(|r| r.index == "Owned").unwrap();
    // Each hash withdrawn is noted once, however often; of the 320 rows written (each names
    // 64 bytes, and takes more), fewer than 100 rows' worth are left.
    assert_eq!(withdrawn.rows, withdrawn_hashes.len() as u64);
    assert!(owned.stored_bytes < 100 * 64, "{owned:?}");
}

/// `disk_usage` accounts for a ledger's file: every block is a row of the blocks table, every
/// index written has chunks in the sorted runs, and what the tables hold fits in what is
/// allocated, which fits in the file. It refuses a ledger that is open.
#[test]
fn disk_usage_accounts_for_the_file() {
    let g = genesis();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LEDGER_FILE);
    let mut ledger = Ledger::open(dir.path(), &g).unwrap();
    for b in 0..80u64 {
        let owner = (b % OWNERS as u64) as usize;
        let block = block(&ledger, &[Op::Register { owner, data: b }]);
        ledger.apply_block(&block).unwrap();
    }
    let refused = secnet_ledger::disk_usage(&path).unwrap_err().to_string();
    assert!(refused.contains("open"), "{refused}");
    drop(ledger);

    let usage = secnet_ledger::disk_usage(&path).unwrap();
    let table = |name: &str| usage.tables.iter().find(|t| t.name == name).unwrap();
    assert!(table("block_chunks").rows >= 80);
    assert!(table("index_runs").rows > 0);
    for index in ["Txs", "State", "Owned", "Listed"] {
        let runs = usage.runs.iter().find(|r| r.index == index).unwrap();
        assert!(runs.chunks > 0 && runs.stored_bytes > 0, "{runs:?}");
    }
    let held: u64 = usage.tables.iter().map(|t| t.total_bytes()).sum();
    assert!(held <= usage.allocated_bytes, "{usage:?}");
    assert!(usage.allocated_bytes <= usage.file_bytes, "{usage:?}");
    let in_runs: u64 = usage.runs.iter().map(|r| r.stored_bytes).sum();
    assert_eq!(in_runs, table("index_runs").stored_bytes);
    // A ledger of an earlier format is its node's to migrate first.
    as_format(dir.path(), 10);
    let refused = secnet_ledger::disk_usage(&path).unwrap_err().to_string();
    assert!(refused.contains("secnet-ledger/10"), "{refused}");
}

/// The listings written by the last `LISTING_CHANGES_HEIGHTS` blocks are known, not those of
/// older ones.
#[test]
fn the_listing_writes_of_the_last_heights_are_kept() {
    let g = genesis();
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), &g).unwrap();
    let blocks = LISTING_CHANGES_HEIGHTS as u64 + 3;
    for b in 0..blocks {
        let op = if b % 2 == 0 {
            Op::Register { owner: 0, data: 0 }
        } else {
            Op::Withdraw { owner: 0, data: 0 }
        };
        let block = block(&ledger, &[op]);
        ledger.apply_block_deferred(&block, |_| false).unwrap();
        if b % 256 == 0 {
            ledger.syncer().sync().unwrap();
        }
    }
    let tip = ledger.state().tip().height;
    assert_eq!(tip, blocks);
    let oldest = tip - LISTING_CHANGES_HEIGHTS as u64;
    let (at, changed) = ledger.listings_changed_since(oldest).unwrap();
    assert_eq!((at, changed.len()), (tip, LISTING_CHANGES_HEIGHTS));
    assert!(changed.iter().all(|h| h.as_ref() == [data(0)]));
    assert!(ledger.listings_changed_since(oldest - 1).is_none());
    assert!(ledger.listings_changed_since(tip + 1).is_none());
    assert_eq!(
        ledger.listings_changed_since(tip).unwrap(),
        (tip, Vec::new())
    );
}
