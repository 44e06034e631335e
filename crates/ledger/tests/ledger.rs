//! The durable ledger: reopening, refusing foreign or tampered directories, audit proofs.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use secnet_contract::{LogEntry, StateKey};
use secnet_ledger::{
    BlockTxs, Checkpoint, LEDGER_FILE, Ledger, LedgerError, LogSubject, RECENT_STATES,
    SNAPSHOT_MAGIC, Snapshot, SnapshotError,
};
use secnet_types::{
    AccessDecision, AccessEntry, Block, Call, DataKind, Genesis, Hash, Keypair, RegisterData,
    SignedTransaction, StateCommitment, Transaction,
};

fn keys() -> Vec<Keypair> {
    (0..3)
        .map(|i| Keypair::deterministic("ledger-test", i))
        .collect()
}

fn genesis(chain: &str) -> Genesis {
    Genesis::single_node(chain, 1_000, keys().iter().map(Keypair::account), 1_000)
}

/// Applies a register / subscribe / request / record story plus transfers over `n` blocks,
/// each written at once; returns the blocks.
fn run_story(ledger: &mut Ledger, n: u64) -> Vec<Block> {
    let mut applied = Vec::new();
    run_story_with(ledger, n, |ledger, block| {
        applied.push(block.clone());
        ledger.apply_block(block).unwrap()
    });
    applied
}

/// [`run_story`], applying each block with `apply`.
fn run_story_with(
    ledger: &mut Ledger,
    n: u64,
    mut apply: impl FnMut(&mut Ledger, &Block) -> secnet_contract::BlockOutcome,
) {
    let k = keys();
    let mut nonces = [0u64; 3];
    let mut tx = |i: usize, call: Call| {
        let t = Transaction {
            chain_id: "ledger-test".into(),
            sender: k[i].account(),
            nonce: nonces[i],
            call,
        };
        nonces[i] += 1;
        t.sign(&k[i])
    };
    let data = Hash::digest(b"record");
    let story = vec![
        vec![tx(
            0,
            Call::RegisterData(RegisterData {
                hash: data,
                description: "record".into(),
                address: "pdc://1/record".into(),
                price: 10,
                kind: DataKind::UserData,
                holder: k[1].account(),
                holder_share_bps: 5_000,
            }),
        )],
        vec![tx(2, Call::SubscribeData { hash: data })],
        vec![tx(
            2,
            Call::RequestDataWithHash {
                hash: data,
                purpose: "study".into(),
                ttl_secs: 60,
            },
        )],
    ];
    let mut blocks = story;
    let grant = blocks[2][0].hash();
    blocks.push(vec![tx(
        1,
        Call::RecordAccess {
            entries: vec![AccessEntry {
                data,
                grant: Some(grant),
                requester: k[2].account(),
                decision: AccessDecision::Delivered,
                score_ppm: 10,
                at_ms: 5,
            }],
        },
    )]);
    for i in 0..n {
        blocks.push(vec![tx(
            (i % 3) as usize,
            Call::Transfer {
                to: k[((i + 1) % 3) as usize].account(),
                amount: 1,
            },
        )]);
    }
    for txs in blocks {
        let block = next_block(ledger, txs);
        let out = apply(ledger, &block);
        assert!(
            out.receipts.iter().all(|r| r.is_applied()),
            "{:?}",
            out.receipts
        );
    }
}

#[test]
fn reopening_restores_the_same_state_blocks_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis("ledger-test");
    let (root, tip, checkpoint) = {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        run_story(&mut ledger, 20);
        (
            ledger.state().state_root(),
            ledger.state().tip(),
            ledger.checkpoint(),
        )
    };
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    assert_eq!(ledger.state().state_root(), root);
    assert_eq!(ledger.state().tip(), tip);
    assert_eq!(ledger.checkpoint(), checkpoint);
    let report = ledger.replay_check().unwrap();
    assert_eq!(report.replayed_root, root);
    assert_eq!(report.blocks, 24);
    let stored = ledger.block(3).unwrap().unwrap();
    assert_eq!(stored.block.header.height, 3);
    assert!(stored.receipts[0].is_applied());
    // Both log entries prove against the reopened log.
    for i in 0..2 {
        ledger.inclusion_proof(i, None).unwrap().verify().unwrap();
    }
    ledger.consistency_proof(1, 2).unwrap().verify().unwrap();
    ledger
        .state()
        .prove(&StateKey::Account(keys()[0].account()))
        .verify(&root)
        .unwrap();
}

#[test]
fn a_directory_of_another_network_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Ledger::open(dir.path(), &genesis("ledger-test")).unwrap());
    let err = Ledger::open(dir.path(), &genesis("another-net")).unwrap_err();
    assert!(matches!(err, LedgerError::GenesisMismatch { .. }), "{err}");
}

#[test]
fn tampered_state_is_detected_on_open() {
    const JOURNAL: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("state_journal");
    let dir = tempfile::tempdir().unwrap();
    let g = genesis("ledger-test");
    {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        run_story(&mut ledger, 3);
        // Account 0 stays as it is while every slice of the state table is written again
        // (one per write): its row in the table is the one opening uses.
        for _ in 0..70 {
            let block = transfer_block(&ledger, 1);
            ledger.apply_block(&block).unwrap();
        }
    }
    let path = dir.path().join(LEDGER_FILE);
    let saved = std::fs::read(&path).unwrap();
    {
        // Someone with access to the disk gives themselves money.
        let db = Database::create(&path).unwrap();
        let w = db.begin_write().unwrap();
        {
            // Its newest row in the state table's runs: 1, then the account's bytes.
            let key = StateKey::Account(keys()[0].account()).to_bytes();
            let mut runs = w.open_table(RUNS).unwrap();
            type Chunk = (u64, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);
            let mut newest: Option<Chunk> = None;
            for chunk in runs.iter().unwrap() {
                let (k, v) = chunk.unwrap();
                let k = k.value().to_vec();
                if k[0] != 2 {
                    continue;
                }
                let run = u64::from_be_bytes(k[2..10].try_into().unwrap());
                let rows = chunk_rows(v.value());
                if rows.iter().any(|(row, _)| *row == key)
                    && newest.as_ref().is_none_or(|(r, ..)| run > *r)
                {
                    newest = Some((run, k, rows));
                }
            }
            let (_, chunk, mut rows) = newest.unwrap();
            let row = rows.iter_mut().find(|(row, _)| *row == key).unwrap();
            assert_eq!(row.1[0], 1);
            row.1[1] ^= 0x40;
            let mut bytes = Vec::new();
            for (k, v) in &rows {
                bytes.extend_from_slice(&(k.len() as u16).to_be_bytes());
                bytes.extend_from_slice(k);
                bytes.extend_from_slice(&(v.len() as u32).to_be_bytes());
                bytes.extend_from_slice(v);
            }
            runs.insert(chunk.as_slice(), bytes.as_slice()).unwrap();
        }
        w.commit().unwrap();
    }
    let err = Ledger::open(dir.path(), &g).unwrap_err();
    assert!(err.to_string().contains("stored entries hash to"), "{err}");

    // Or changes a byte of the journal's latest row, anywhere: refused as a row that does
    // not decode, or as a state that does not hash to the recorded root, unless the byte
    // belongs to an entry whose slice of the table was written at that height (the row's
    // copy of it is not used): the ledger never opens on another state.
    std::fs::write(&path, &saved).unwrap();
    let root = Ledger::open(dir.path(), &g).unwrap().state().state_root();
    let (at_key, row) = {
        let db = Database::create(&path).unwrap();
        let r = db.begin_read().unwrap();
        let t = r.open_table(JOURNAL).unwrap();
        let (k, v) = t.last().unwrap().unwrap();
        (k.value(), v.value().to_vec())
    };
    let mut refused = 0;
    for at in (0..row.len()).step_by(7) {
        std::fs::write(&path, &saved).unwrap();
        {
            let db = Database::create(&path).unwrap();
            let w = db.begin_write().unwrap();
            {
                let mut tampered = row.clone();
                tampered[at] ^= 0x08;
                w.open_table(JOURNAL)
                    .unwrap()
                    .insert(at_key, tampered.as_slice())
                    .unwrap();
            }
            w.commit().unwrap();
        }
        match Ledger::open(dir.path(), &g) {
            Ok(ledger) => assert_eq!(ledger.state().state_root(), root, "byte {at}"),
            Err(err) => {
                let err = err.to_string();
                assert!(
                    err.contains("stored entries hash to")
                        || err.contains("state journal of height")
                        || err.contains("value of")
                        || err.contains("key"),
                    "byte {at}: {err}"
                );
                refused += 1;
            }
        }
    }
    assert!(
        refused > row.len() / 14,
        "{refused} of {} refused",
        row.len() / 7
    );
    std::fs::write(&path, &saved).unwrap();
    assert_eq!(
        Ledger::open(dir.path(), &g).unwrap().state().state_root(),
        root
    );
}

#[test]
fn checkpoints_sign_the_log_head() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), &genesis("ledger-test")).unwrap();
    run_story(&mut ledger, 0);
    let key = Keypair::deterministic("node", 0);
    let signed = ledger.checkpoint().sign("node0", &key);
    let cp = Checkpoint::verify_note(&signed.note, "node0", &key.account()).unwrap();
    assert_eq!(cp.tree_size, 3, "the payment, the grant and the delivery");
    assert_eq!(
        cp.root_hash,
        ledger.inclusion_proof(0, None).unwrap().root_hash
    );
}

#[test]
fn proofs_beyond_the_log_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), &genesis("ledger-test")).unwrap();
    run_story(&mut ledger, 0);
    assert!(
        ledger
            .inclusion_proof(3, None)
            .unwrap_err()
            .to_string()
            .contains("outside a tree of size 3")
    );
    assert!(ledger.consistency_proof(1, 9).is_err());
}

/// The index of what log leaves are about agrees with a scan of every leaf, and survives a
/// reopen.
#[test]
fn the_log_index_agrees_with_a_full_scan() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis("ledger-test");
    {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        run_story(&mut ledger, 3);
    }
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    let scanned = scan_log(&ledger);
    assert_eq!(
        scanned.len(),
        4,
        "one data hash, one grant, one owner paid and one consumer: {scanned:?}"
    );
    for (subject, indices) in scanned {
        assert_eq!(ledger.log_indices(subject).unwrap(), indices, "{subject:?}");
    }
    assert!(
        ledger
            .log_indices(LogSubject::Data(Hash::digest(b"other")))
            .unwrap()
            .is_empty()
    );
}

/// The access-log index key of `subject` (a tag, then its 32 bytes).
fn subject_key(subject: &LogSubject) -> Vec<u8> {
    let (tag, bytes) = match subject {
        LogSubject::Data(h) => (0u8, h.as_bytes()),
        LogSubject::Grant(g) => (1u8, g.as_bytes()),
        LogSubject::Owner(a) => (2u8, a.as_bytes()),
        LogSubject::Requester(a) => (3u8, a.as_bytes()),
    };
    [&[tag][..], &bytes[..]].concat()
}

/// A ledger written in format 3 (the access-log index as a multimap) opens in the current
/// format with the same index; one whose old index is missing, or of a format this version
/// does not know, is refused.
#[test]
fn a_format_3_ledger_is_migrated_and_an_unknown_format_refused() {
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    const INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("access_log_by_subject");
    const OLD_INDEX: MultimapTableDefinition<&[u8], u64> =
        MultimapTableDefinition::new("access_log_index");
    let dir = tempfile::tempdir().unwrap();
    let g = genesis("ledger-test");
    let recorded = {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        run_story(&mut ledger, 3);
        Recorded::of(&ledger)
    };
    let Recorded {
        scanned,
        located,
        entries,
        ..
    } = &recorded;
    assert_eq!(scanned.len(), 4, "{scanned:?}");
    let stray = LogSubject::Data(Hash::digest(b"stray"));
    let path = dir.path().join(LEDGER_FILE);
    let write_format_3 = |with_old_index: bool| {
        // What this ledger looked like in format 3: its index as a multimap, and a stray
        // row left in a table of the new shape, which the migration must not keep.
        let db = Database::create(&path).unwrap();
        let w = db.begin_write().unwrap();
        w.delete_table(INDEX).unwrap();
        let mut index = w.open_table(INDEX).unwrap();
        let row = [subject_key(&stray), 0u64.to_be_bytes().to_vec()].concat();
        index.insert(row.as_slice(), ()).unwrap();
        drop(index);
        if with_old_index {
            let mut old = w.open_multimap_table(OLD_INDEX).unwrap();
            for (subject, indices) in scanned {
                for i in indices {
                    old.insert(subject_key(subject).as_slice(), i).unwrap();
                }
            }
        } else {
            w.delete_multimap_table(OLD_INDEX).unwrap();
        }
        // Every transaction indexed and every state entry written, as each block wrote
        // them then.
        write_tx_index(&w, located);
        drop_index_runs(&w);
        write_whole_state(&w, entries);
        // Nor had it the log's tree.
        w.delete_table(LOG_SUBTREES).unwrap();
        common::whole_blocks(&w);
        let mut meta = w.open_table(META).unwrap();
        meta.insert("format", b"secnet-ledger/3".as_slice())
            .unwrap();
        meta.remove("index_marks").unwrap();
        drop(meta);
        w.commit().unwrap();
    };
    write_format_3(false);
    let err = Ledger::open(dir.path(), &g).unwrap_err();
    assert!(
        err.to_string().contains("without its access-log index"),
        "{err}"
    );
    write_format_3(true);
    {
        let ledger = Ledger::open(dir.path(), &g).unwrap();
        recorded.check(&ledger);
        assert!(ledger.log_indices(stray).unwrap().is_empty());
    }
    {
        let db = Database::create(&path).unwrap();
        let r = db.begin_read().unwrap();
        assert!(
            r.open_multimap_table(OLD_INDEX).is_err(),
            "the old index is dropped"
        );
        assert_eq!(stored_format(&r), CURRENT_FORMAT);
        let w = db.begin_write().unwrap();
        w.open_table(META)
            .unwrap()
            .insert("format", b"secnet-ledger/2".as_slice())
            .unwrap();
        w.commit().unwrap();
    }
    let err = Ledger::open(dir.path(), &g).unwrap_err();
    assert!(err.to_string().contains("secnet-ledger/2"), "{err}");
}

/// The format a ledger is migrated to.
const CURRENT_FORMAT: &[u8] = b"secnet-ledger/11";

/// What a ledger held, to compare it with after a migration.
struct Recorded {
    root: Hash,
    /// Every subject's access-log indices, scanned from the log.
    scanned: std::collections::BTreeMap<LogSubject, Vec<u64>>,
    /// Where each transaction was included.
    located: Vec<(Hash, (u64, u32))>,
    /// The state table's rows.
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// The log's size and root.
    head: (u64, Hash),
    /// The listings' hashes, and each key's.
    listed: Vec<Hash>,
    owned: Vec<Vec<Hash>>,
}

impl Recorded {
    fn of(ledger: &Ledger) -> Recorded {
        let head = ledger.checkpoint();
        Recorded {
            root: ledger.state().state_root(),
            scanned: scan_log(ledger),
            located: tx_locations(ledger),
            entries: state_rows(ledger),
            head: (head.tree_size, head.root_hash),
            listed: ledger.listed_hashes_after(None, usize::MAX).unwrap(),
            owned: keys()
                .iter()
                .map(|k| ledger.hashes_listed_by(&k.account()).unwrap())
                .collect(),
        }
    }

    /// `ledger` holds the same state root, index rows, transaction locations and log.
    fn check(&self, ledger: &Ledger) {
        assert_eq!(ledger.state().state_root(), self.root);
        for (subject, indices) in &self.scanned {
            assert_eq!(
                &ledger.log_indices(*subject).unwrap(),
                indices,
                "{subject:?}"
            );
        }
        for (tx, location) in &self.located {
            assert_eq!(ledger.tx_location(tx).unwrap(), Some(*location));
        }
        check_log_proofs(ledger, &[self.head]);
        assert_eq!(
            ledger.listed_hashes_after(None, usize::MAX).unwrap(),
            self.listed
        );
        for (k, owned) in keys().iter().zip(&self.owned) {
            assert_eq!(&ledger.hashes_listed_by(&k.account()).unwrap(), owned);
        }
    }
}

/// Every state entry's key and value bytes, in key order, as a snapshot of what `ledger`
/// wrote holds them.
fn state_rows(ledger: &Ledger) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut bytes = Vec::new();
    ledger
        .snapshot_source()
        .unwrap()
        .write_to(&mut bytes)
        .unwrap();
    let snapshot = Snapshot::read(bytes.as_slice(), ledger.genesis(), u64::MAX).unwrap();
    let mut rows = snapshot.entries().to_vec();
    rows.sort();
    rows
}

/// Writes `entries` as a ledger file's whole state table, without a state journal, as
/// formats 3 to 5 stored the state.
fn write_whole_state(w: &redb::WriteTransaction, entries: &[(Vec<u8>, Vec<u8>)]) {
    const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
    const JOURNAL: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("state_journal");
    w.delete_table(STATE).unwrap();
    w.delete_table(JOURNAL).unwrap();
    let mut table = w.open_table(STATE).unwrap();
    for (k, v) in entries {
        table.insert(k.as_slice(), v.as_slice()).unwrap();
    }
}

/// Where every stored transaction was included, read from the blocks.
fn tx_locations(ledger: &Ledger) -> Vec<(Hash, (u64, u32))> {
    (ledger.first_block().unwrap()..=ledger.state().tip().height)
        .flat_map(|h| {
            let block = ledger.block(h).unwrap().unwrap().block;
            (0u32..)
                .zip(block.txs)
                .map(move |(p, tx)| (tx.hash(), (h, p)))
        })
        .collect()
}

/// The sorted runs that hold both indexes since format 8.
const RUNS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index_runs");
const RUN_SETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("index_run_sets");

/// Removes the indexes' runs, which ledgers before format 8 did not have.
fn drop_index_runs(w: &redb::WriteTransaction) {
    w.delete_table(RUNS).unwrap();
    w.delete_table(RUN_SETS).unwrap();
}

/// The rows in a ledger file's runs, as `(index, run id, row key, value)`: each chunk is
/// stored under `index ‖ slice ‖ run id ‖ its first key` and holds its rows as key length
/// (2 bytes), key, value length (4 bytes), value.
fn index_rows(
    runs: &impl ReadableTable<&'static [u8], &'static [u8]>,
) -> Vec<(u8, u64, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for chunk in runs.iter().unwrap() {
        let (key, value) = chunk.unwrap();
        let index = key.value()[0];
        let run = u64::from_be_bytes(key.value()[2..10].try_into().unwrap());
        for (k, v) in chunk_rows(value.value()) {
            out.push((index, run, k, v));
        }
    }
    out
}

/// A chunk's rows: key length (2 bytes), key, value length (4 bytes), value.
fn chunk_rows(mut at: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rows = Vec::new();
    while !at.is_empty() {
        let key_len = usize::from(u16::from_be_bytes([at[0], at[1]]));
        let k = at[2..2 + key_len].to_vec();
        at = &at[2 + key_len..];
        let value_len = u32::from_be_bytes(at[..4].try_into().unwrap()) as usize;
        let v = at[4..4 + value_len].to_vec();
        at = &at[4 + value_len..];
        rows.push((k, v));
    }
    rows
}

/// The state table a ledger file's runs hold: per key the newest run's row, removals
/// (a row `0`) left out, values without their leading `1`.
fn state_table(rows: &[(u8, u64, Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut newest: std::collections::BTreeMap<Vec<u8>, (u64, Vec<u8>)> = Default::default();
    for (index, run, key, value) in rows {
        if *index == 2 && newest.get(key).is_none_or(|(r, _)| run > r) {
            newest.insert(key.clone(), (*run, value.clone()));
        }
    }
    newest
        .into_iter()
        .filter(|(_, (_, v))| v[0] == 1)
        .map(|(k, (_, v))| (k, v[1..].to_vec()))
        .collect()
}

/// How many transaction index rows a closed ledger holds on disk.
fn tx_rows_on_disk(dir: &std::path::Path) -> u64 {
    let db = Database::create(dir.join(LEDGER_FILE)).unwrap();
    let r = db.begin_read().unwrap();
    let rows = index_rows(&r.open_table(RUNS).unwrap());
    rows.iter().filter(|(index, ..)| *index == 0).count() as u64
}

/// Writes `located` into a ledger file's transaction index, as formats 3 to 7 did.
fn write_tx_index(w: &redb::WriteTransaction, located: &[(Hash, (u64, u32))]) {
    const TXS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tx_index");
    let mut txs = w.open_table(TXS).unwrap();
    for (tx, (h, p)) in located {
        let location = [h.to_be_bytes().as_slice(), p.to_be_bytes().as_slice()].concat();
        txs.insert(tx.as_bytes().as_slice(), location.as_slice())
            .unwrap();
    }
}

/// The index rows waiting in memory, and the bytes of the state values among them.
fn waiting_of(ledger: &Ledger) -> (usize, usize) {
    let footprint = ledger.footprint().unwrap();
    (
        footprint.index_rows_waiting,
        footprint.state_value_bytes_waiting,
    )
}

#[test]
fn index_rows_waiting_in_memory_are_found_and_derived_again_on_open() {
    let g = genesis("ledger-test");
    let dir = tempfile::tempdir().unwrap();
    let mut applied;
    let waiting;
    {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        // One write per block: each writes one of the 64 slices.
        applied = run_story(&mut ledger, 150);
        check_readers(&ledger, &applied);
        waiting = waiting_of(&ledger);
    }
    // Some rows were still waiting in memory when the ledger closed, state values with them.
    let on_disk = tx_rows_on_disk(dir.path());
    let total: u64 = applied.iter().map(|b| b.txs.len() as u64).sum();
    assert!(on_disk < total, "{on_disk} of {total} indexed on disk");
    assert!(waiting.0 > 0 && waiting.1 > 0, "{waiting:?}");
    // Opening derives them again, and the ledger goes on.
    let mut ledger = Ledger::open(dir.path(), &g).unwrap();
    assert_eq!(waiting_of(&ledger), waiting);
    check_readers(&ledger, &applied);
    for i in 0..70 {
        let block = transfer_block(&ledger, i % 3);
        ledger.apply_block(&block).unwrap();
        applied.push(block);
    }
    check_readers(&ledger, &applied);

    // Pruning drops the pruned blocks' transactions whether they waited or not; what stays
    // is found, before and after reopening.
    let located = tx_locations(&ledger);
    let pruned = ledger.prune_blocks_below(u64::MAX, u64::MAX).unwrap();
    assert!(pruned > 100, "{pruned}");
    let first = ledger.first_block().unwrap();
    let check = |ledger: &Ledger| {
        for (tx, (h, p)) in &located {
            let found = ledger.tx_location(tx).unwrap();
            if *h < first {
                assert_eq!(found, None, "a transaction of pruned block {h}");
            } else {
                assert_eq!(found, Some((*h, *p)));
            }
        }
    };
    check(&ledger);
    let block = transfer_block(&ledger, 0);
    ledger.apply_block(&block).unwrap();
    drop(ledger);
    let mut ledger = Ledger::open(dir.path(), &g).unwrap();
    check(&ledger);
    check_readers(&ledger, &[block]);
    // Every slice is written again: none brings back a pruned block's transaction.
    for i in 0..64 {
        let block = transfer_block(&ledger, i % 3);
        ledger.apply_block(&block).unwrap();
    }
    check(&ledger);
}

#[test]
fn with_few_rows_let_wait_writes_store_several_slices_and_every_reader_agrees() {
    let g = genesis("ledger-test");
    let (bounded, unbounded) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut applied;
    {
        let mut ledger = Ledger::open(bounded.path(), &g).unwrap();
        ledger.limit_index_rows_waiting(4).unwrap();
        applied = run_story(&mut ledger, 150);
        check_readers(&ledger, &applied);
        let mut other = Ledger::open(unbounded.path(), &g).unwrap();
        assert_eq!(run_story(&mut other, 150), applied);
        // The same blocks leave far fewer rows waiting.
        let (few, many) = (waiting_of(&ledger).0, waiting_of(&other).0);
        assert!(few * 2 < many, "{few} rows waiting against {many}");
        drop(other);
        // None at all: each write stores every slice that had rows waiting.
        ledger.limit_index_rows_waiting(0).unwrap();
        for i in 0..40 {
            let block = transfer_block(&ledger, i % 3);
            ledger.apply_block(&block).unwrap();
            applied.push(block);
            check_readers(&ledger, &applied[applied.len() - 1..]);
        }
        check_readers(&ledger, &applied);
    }
    // Opening checks the state table against the state root, and derives what waited.
    let mut ledger = Ledger::open(bounded.path(), &g).unwrap();
    check_readers(&ledger, &applied);
    ledger.limit_index_rows_waiting(3).unwrap();
    for i in 0..70 {
        let block = transfer_block(&ledger, i % 3);
        ledger.apply_block(&block).unwrap();
        applied.push(block);
    }
    check_readers(&ledger, &applied);
    drop(ledger);
    let ledger = Ledger::open(bounded.path(), &g).unwrap();
    check_readers(&ledger, &applied);
    assert_eq!(
        ledger.replay_check().unwrap().blocks,
        ledger.state().tip().height
    );
}

#[test]
fn every_index_slice_is_written_however_often_the_ledger_reopens() {
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    let g = genesis("ledger-test");
    let dir = tempfile::tempdir().unwrap();
    let mut applied;
    {
        // A story that leaves access-log leaves, so that the log marks move too.
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        applied = run_story(&mut ledger, 0);
        assert!(!ledger.state().log().is_empty());
    }
    // 3 writes per opening, 90 in all: more than the 64 slices, fewer than 64 per opening.
    for _ in 0..30 {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        for i in 0..3 {
            let block = transfer_block(&ledger, i);
            ledger.apply_block(&block).unwrap();
            applied.push(block);
        }
    }
    let db = Database::create(dir.path().join(LEDGER_FILE)).unwrap();
    let r = db.begin_read().unwrap();
    let meta = r.open_table(META).unwrap();
    let marks = meta.get("index_marks").unwrap().unwrap().value().to_vec();
    // 64 heights, then 64 log sizes: every slice's moved past what opening a new ledger set.
    let oldest = |part: &[u8]| {
        part.chunks(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .min()
            .unwrap()
    };
    assert!(oldest(&marks[..64 * 8]) > 0, "a slice was never written");
    assert!(oldest(&marks[64 * 8..]) > 0, "a slice was never written");
    drop((meta, r, db));
    check_readers(&Ledger::open(dir.path(), &g).unwrap(), &applied);
}

/// What a closed ledger's file holds of its state.
struct StateOnDisk {
    /// The state table's rows.
    table: Vec<(Vec<u8>, Vec<u8>)>,
    /// The journal: each commit's height, and its changes' length in bytes.
    journal: std::collections::BTreeMap<u64, usize>,
    /// The index marks' 64 per-slice heights.
    marks: Vec<u64>,
}

fn state_on_disk(dir: &std::path::Path) -> StateOnDisk {
    const JOURNAL: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("state_journal");
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    let db = Database::create(dir.join(LEDGER_FILE)).unwrap();
    let r = db.begin_read().unwrap();
    let table = state_table(&index_rows(&r.open_table(RUNS).unwrap()));
    let mut journal = std::collections::BTreeMap::new();
    for row in r.open_table(JOURNAL).unwrap().iter().unwrap() {
        let (k, v) = row.unwrap();
        *journal.entry(k.value().0).or_default() += v.value().len();
    }
    let marks = r
        .open_table(META)
        .unwrap()
        .get("index_marks")
        .unwrap()
        .unwrap()
        .value()[..64 * 8]
        .chunks(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
        .collect();
    StateOnDisk {
        table,
        journal,
        marks,
    }
}

/// The state table is written a slice at a time: after a run its rows are behind the state in
/// memory, and the journal holds what they lack, no more than the rows some slice still
/// needs. Reopening, a snapshot served from the disk, and reopening again after more blocks
/// (the keys waiting derived again) all give the state in memory.
#[test]
fn the_state_table_is_written_a_slice_at_a_time_and_the_journal_keeps_it_whole() {
    let g = genesis("ledger-test");
    let dir = tempfile::tempdir().unwrap();
    let (entries, root, snapshot) = {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        // One write per block: each stores one of the 64 slices.
        run_story(&mut ledger, 150);
        (
            state_rows(&ledger),
            ledger.state().state_root(),
            snapshot_bytes(&ledger),
        )
    };
    let StateOnDisk {
        table,
        journal,
        marks,
    } = state_on_disk(dir.path());
    assert_ne!(table, entries, "every entry of the table is current");
    let oldest = *marks.iter().min().unwrap();
    assert!(!journal.is_empty());
    assert!(
        journal.len() <= 64,
        "the journal of {} commits",
        journal.len()
    );
    assert!(
        journal.keys().all(|h| *h > oldest),
        "a row every slice has caught up with is kept: {journal:?}, oldest mark {oldest}"
    );

    // Served from the disk, the snapshot holds the state in memory.
    let snapshot = Snapshot::read(snapshot.as_slice(), &g, u64::MAX).unwrap();
    let joined_dir = tempfile::tempdir().unwrap();
    let joined = Ledger::install_snapshot(joined_dir.path(), &g, snapshot, None).unwrap();
    assert_eq!(state_rows(&joined), entries);
    assert_eq!(joined.state().state_root(), root);
    drop(joined);
    let installed = state_on_disk(joined_dir.path());
    assert_eq!(
        installed.table, entries,
        "an installed ledger's table is whole"
    );
    assert!(installed.journal.is_empty());

    let ledger = Ledger::open(dir.path(), &g).unwrap();
    assert_eq!(state_rows(&ledger), entries);
    rewrite_every_slice_and_reopen(dir.path(), &g, ledger);
}

/// Applies more blocks than there are slices, one write each (so every slice is stored again
/// and every journal row from before leaves), closes `ledger`, and checks that it reopens on
/// the same state.
fn rewrite_every_slice_and_reopen(dir: &std::path::Path, g: &Genesis, mut ledger: Ledger) {
    for i in 0..70 {
        let block = transfer_block(&ledger, i % 3);
        ledger.apply_block(&block).unwrap();
    }
    let (entries, root) = (state_rows(&ledger), ledger.state().state_root());
    drop(ledger);
    let ledger = Ledger::open(dir, g).unwrap();
    assert_eq!(state_rows(&ledger), entries);
    assert_eq!(ledger.state().state_root(), root);
}

/// A ledger of format 5 (its state table whole, no journal) opens in the current format and
/// goes on.
#[test]
fn a_format_5_ledger_is_migrated() {
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    let g = genesis("ledger-test");
    let dir = tempfile::tempdir().unwrap();
    let (entries, root, head) = {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        run_story(&mut ledger, 20);
        let head = ledger.checkpoint();
        (
            state_rows(&ledger),
            ledger.state().state_root(),
            (head.tree_size, head.root_hash),
        )
    };
    {
        let db = Database::create(dir.path().join(LEDGER_FILE)).unwrap();
        let w = db.begin_write().unwrap();
        write_whole_state(&w, &entries);
        drop_index_runs(&w);
        common::whole_blocks(&w);
        w.open_table(META)
            .unwrap()
            .insert("format", b"secnet-ledger/5".as_slice())
            .unwrap();
        // Format 5 had no tree of its log either.
        w.delete_table(LOG_SUBTREES).unwrap();
        w.commit().unwrap();
    }
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    assert_eq!(ledger.state().state_root(), root);
    check_log_proofs(&ledger, &[head]);
    rewrite_every_slice_and_reopen(dir.path(), &g, ledger);
    let db = Database::create(dir.path().join(LEDGER_FILE)).unwrap();
    assert_eq!(stored_format(&db.begin_read().unwrap()), CURRENT_FORMAT);
}

/// A ledger of format 4 (every index row written with its block, no marks of where each
/// slice is, its state table whole, no journal, no log tree) opens in the current format
/// with the same indexes and goes on.
#[test]
fn a_format_4_ledger_is_migrated() {
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    const INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("access_log_by_subject");
    let g = genesis("ledger-test");
    let dir = tempfile::tempdir().unwrap();
    let recorded = {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        run_story(&mut ledger, 20);
        Recorded::of(&ledger)
    };
    {
        let db = Database::create(dir.path().join(LEDGER_FILE)).unwrap();
        let w = db.begin_write().unwrap();
        w.delete_table(INDEX).unwrap();
        let mut index = w.open_table(INDEX).unwrap();
        for (subject, indices) in &recorded.scanned {
            for i in indices {
                let row = [subject_key(subject), i.to_be_bytes().to_vec()].concat();
                index.insert(row.as_slice(), ()).unwrap();
            }
        }
        drop(index);
        write_tx_index(&w, &recorded.located);
        drop_index_runs(&w);
        write_whole_state(&w, &recorded.entries);
        w.delete_table(LOG_SUBTREES).unwrap();
        common::whole_blocks(&w);
        let mut meta = w.open_table(META).unwrap();
        meta.insert("format", b"secnet-ledger/4".as_slice())
            .unwrap();
        meta.remove("index_marks").unwrap();
        drop(meta);
        w.commit().unwrap();
    }
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    recorded.check(&ledger);
    rewrite_every_slice_and_reopen(dir.path(), &g, ledger);
    let db = Database::create(dir.path().join(LEDGER_FILE)).unwrap();
    assert_eq!(stored_format(&db.begin_read().unwrap()), CURRENT_FORMAT);
}

/// A ledger of format 7 (each index and the state table one B-tree, written a slice at a
/// time) opens in the current format with every row in runs, the old tables gone, and goes
/// on: rows that were still waiting in memory are derived again and written as runs, and the
/// journal still applies to the state table's runs.
#[test]
fn a_format_7_ledger_gets_its_indexes_and_state_table_in_runs() {
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    const INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("access_log_by_subject");
    const TXS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tx_index");
    const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
    let g = genesis("ledger-test");
    let dir = tempfile::tempdir().unwrap();
    let recorded = {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        run_story(&mut ledger, 90);
        Recorded::of(&ledger)
    };
    let on_disk = {
        // Format 7 held on disk, in one table per index, what its marks say is there: keep
        // the rows of what this ledger has on disk, and let the rest be derived again.
        let db = Database::create(dir.path().join(LEDGER_FILE)).unwrap();
        let w = db.begin_write().unwrap();
        let rows = as_format_7_tables(&w);
        common::whole_blocks(&w);
        w.open_table(META)
            .unwrap()
            .insert("format", b"secnet-ledger/7".as_slice())
            .unwrap();
        w.commit().unwrap();
        rows
    };
    assert!(on_disk > 0);
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    recorded.check(&ledger);
    drop(ledger);
    {
        let db = Database::create(dir.path().join(LEDGER_FILE)).unwrap();
        let r = db.begin_read().unwrap();
        assert!(
            r.open_table(TXS).is_err(),
            "the old transaction index is dropped"
        );
        assert!(r.open_table(INDEX).is_err(), "the old log index is dropped");
        assert!(
            r.open_table(STATE).is_err(),
            "the old state table is dropped"
        );
    }
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    rewrite_every_slice_and_reopen(dir.path(), &g, ledger);
    // Every slice was written again since: the old rows are still found, once each.
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    for (tx, location) in &recorded.located {
        assert_eq!(ledger.tx_location(tx).unwrap(), Some(*location));
    }
    for (subject, indices) in &recorded.scanned {
        let now = ledger.log_indices(*subject).unwrap();
        assert_eq!(&now[..indices.len()], indices.as_slice(), "{subject:?}");
    }
    drop(ledger);
    let db = Database::create(dir.path().join(LEDGER_FILE)).unwrap();
    assert_eq!(stored_format(&db.begin_read().unwrap()), CURRENT_FORMAT);
}

/// Rewrites a ledger file's runs as the tables of format 7 (a transaction index, an
/// access-log index and a state table, each one B-tree; the state table as its slices'
/// marks say, the journal holding the rest), drops the runs, and returns how many rows
/// they held.
fn as_format_7_tables(w: &redb::WriteTransaction) -> usize {
    const INDEX: TableDefinition<&[u8], ()> = TableDefinition::new("access_log_by_subject");
    const TXS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tx_index");
    const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
    let rows = index_rows(&w.open_table(RUNS).unwrap());
    let mut txs = w.open_table(TXS).unwrap();
    let mut index = w.open_table(INDEX).unwrap();
    let mut state = w.open_table(STATE).unwrap();
    for (which, _, key, value) in &rows {
        match which {
            0 => {
                txs.insert(key.as_slice(), value.as_slice()).unwrap();
            }
            1 => {
                index.insert(key.as_slice(), ()).unwrap();
            }
            _ => {}
        }
    }
    for (key, value) in state_table(&rows) {
        state.insert(key.as_slice(), value.as_slice()).unwrap();
    }
    drop((txs, index, state));
    drop_index_runs(w);
    rows.len()
}

/// The format a ledger file records.
fn stored_format(r: &redb::ReadTransaction) -> Vec<u8> {
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    r.open_table(META)
        .unwrap()
        .get("format")
        .unwrap()
        .unwrap()
        .value()
        .to_vec()
}

/// A transfer of `amount` from account `from` to the next one, at `from`'s next nonce.
fn transfer(ledger: &Ledger, from: usize, amount: u64) -> SignedTransaction {
    let k = keys();
    Transaction {
        chain_id: "ledger-test".into(),
        sender: k[from].account(),
        nonce: ledger.state().account(&k[from].account()).nonce,
        call: Call::Transfer {
            to: k[(from + 1) % 3].account(),
            amount,
        },
    }
    .sign(&k[from])
}

/// The next block on `ledger`'s tip, holding `txs`.
fn next_block(ledger: &Ledger, txs: Vec<SignedTransaction>) -> Block {
    let tip = ledger.state().tip();
    Block::new(tip.height + 1, tip.block_hash, tip.timestamp_ms + 1, txs)
}

/// A block of one transfer from key `from`, at the nonce the ledger expects.
fn transfer_block(ledger: &Ledger, from: usize) -> Block {
    next_block(ledger, vec![transfer(ledger, from, 1)])
}

#[test]
fn recent_blocks_summaries_match_their_stored_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis("ledger-test");
    let mut ledger = Ledger::open(dir.path(), &g).unwrap();
    run_story(&mut ledger, 12);
    // A block holding an applied transfer and one its sender cannot pay for.
    let block = next_block(
        &ledger,
        vec![transfer(&ledger, 0, 1), transfer(&ledger, 1, u64::MAX)],
    );
    ledger.apply_block(&block).unwrap();
    let tip = ledger.state().tip().height;
    let mut from_memory = 0;
    for height in 1..=tip {
        let stored = ledger.block(height).unwrap().unwrap();
        let expected = BlockTxs::of(&stored.block, &stored.receipts);
        match ledger.recent_block_txs(height) {
            Some(txs) => {
                assert_eq!(*txs, expected, "height {height}");
                from_memory += 1;
            }
            None => assert!(height + RECENT_STATES as u64 <= tip, "height {height}"),
        }
    }
    assert_eq!(from_memory, RECENT_STATES);
    let last = ledger.recent_block_txs(tip).unwrap();
    assert_eq!(last.block_hash, block.hash());
    assert_eq!(last.applied, vec![true, false]);
    assert_eq!(
        last.tx_hashes,
        vec![block.txs[0].hash(), block.txs[1].hash()]
    );
    // Heights not applied since opening are not in memory; readers decode them instead.
    // A block applied after reopening, deferred as validators apply them, is there before
    // it is written.
    drop(ledger);
    let mut ledger = Ledger::open(dir.path(), &g).unwrap();
    assert!(ledger.recent_block_txs(tip).is_none());
    let next = transfer_block(&ledger, 2);
    ledger.apply_block_deferred(&next, |_| false).unwrap();
    let txs = ledger.recent_block_txs(tip + 1).unwrap();
    assert_eq!(txs.block_hash, next.hash());
    assert_eq!(txs.tx_hashes, vec![next.txs[0].hash()]);
    assert_eq!(txs.applied, vec![true]);
    assert!(ledger.recent_block_txs(tip).is_none());
}

#[test]
fn deferred_blocks_are_readable_at_once_and_durable_after_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis("ledger-test");
    let (tip, syncer) = {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        for i in 0..5 {
            let block = transfer_block(&ledger, i % 3);
            ledger.apply_block_deferred(&block, |_| false).unwrap();
            // Readers see a deferred block at once.
            let height = block.header.height;
            assert_eq!(ledger.state().tip().height, height);
            assert_eq!(ledger.block(height).unwrap().unwrap().block, block);
            assert!(
                ledger
                    .committed_receipt(&block.txs[0].hash())
                    .unwrap()
                    .is_some()
            );
        }
        let syncer = ledger.syncer();
        syncer.sync().unwrap();
        (ledger.state().tip(), syncer)
    };
    drop(syncer);
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    assert_eq!(ledger.state().tip(), tip);
    assert_eq!(ledger.replay_check().unwrap().blocks, 5);
}

/// Every access-log leaf's index under each subject it is about, read leaf by leaf.
fn scan_log(ledger: &Ledger) -> std::collections::BTreeMap<LogSubject, Vec<u64>> {
    let mut scanned: std::collections::BTreeMap<LogSubject, Vec<u64>> = Default::default();
    for index in 0..ledger.state().log().len() {
        let entry = LogEntry::from_bytes(&ledger.log_leaf(index).unwrap().unwrap()).unwrap();
        for subject in LogSubject::of(&entry) {
            scanned.entry(subject).or_default().push(index);
        }
    }
    scanned
}

/// Every reader of `ledger` agrees with the blocks `applied` and with a scan of the access
/// log, whichever of them are still waiting to be written.
fn check_readers(ledger: &Ledger, applied: &[Block]) {
    for block in applied {
        let height = block.header.height;
        assert_eq!(ledger.block(height).unwrap().unwrap().block, *block);
        assert_eq!(ledger.header(height).unwrap().unwrap(), block.header);
        for (position, tx) in (0u32..).zip(&block.txs) {
            assert_eq!(
                ledger.tx_location(&tx.hash()).unwrap(),
                Some((height, position))
            );
            assert!(ledger.committed_receipt(&tx.hash()).unwrap().is_some());
        }
    }
    let size = ledger.state().log().len();
    let scanned = scan_log(ledger);
    assert_eq!(ledger.log_leaf(size).unwrap(), None);
    let all: Vec<u64> = (0..size).collect();
    let leaves = ledger.log_leaves(&all).unwrap();
    assert!(leaves.iter().all(Option::is_some));
    for (subject, indices) in scanned {
        assert_eq!(ledger.log_indices(subject).unwrap(), indices, "{subject:?}");
        for from in 0..=size {
            for limit in 0..=indices.len() + 1 {
                let expected: Vec<u64> = indices
                    .iter()
                    .copied()
                    .filter(|i| *i >= from)
                    .take(limit)
                    .collect();
                assert_eq!(
                    ledger.log_indices_page(subject, from, limit).unwrap(),
                    expected,
                    "{subject:?} from {from} limit {limit}"
                );
            }
        }
    }
}

#[test]
fn blocks_waiting_to_be_written_read_like_written_ones_and_a_crash_keeps_the_written() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis("ledger-test");
    let mut applied = Vec::new();
    let mut written = None;
    {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        let syncer = ledger.syncer();
        run_story_with(&mut ledger, 6, |ledger, block| {
            let out = ledger.apply_block_deferred(block, |_| false).unwrap();
            applied.push(block.clone());
            check_readers(ledger, &applied);
            // Writes cover several blocks, and split the story's log entries between the
            // disk and memory.
            if block.header.height.is_multiple_of(3) {
                syncer.sync().unwrap();
                written = Some(ledger.state().tip());
                check_readers(ledger, &applied);
            }
            out
        });
        assert!(ledger.state().tip().height > written.unwrap().height);
        // Dropped without a sync, like a process killed: the unwritten blocks are lost.
    }
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    let written = written.unwrap();
    assert_eq!(ledger.state().tip(), written);
    assert_eq!(ledger.replay_check().unwrap().blocks, written.height);
    let kept = usize::try_from(written.height).unwrap();
    check_readers(&ledger, &applied[..kept]);
}

#[test]
fn a_poisoned_ledger_refuses_blocks_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let g = genesis("ledger-test");
    let mut ledger = Ledger::open(dir.path(), &g).unwrap();
    let block = transfer_block(&ledger, 0);
    ledger.poison();
    assert!(matches!(
        ledger.apply_block_deferred(&block, |_| false),
        Err(LedgerError::Poisoned)
    ));
    assert_eq!(ledger.state().tip().height, 0);
    drop(ledger);
    let mut ledger = Ledger::open(dir.path(), &g).unwrap();
    ledger.apply_block(&block).unwrap();
}

fn snapshot_bytes(ledger: &Ledger) -> Vec<u8> {
    let mut out = Vec::new();
    ledger
        .snapshot_source()
        .unwrap()
        .write_to(&mut out)
        .unwrap();
    out
}

#[test]
fn a_ledger_installed_from_a_snapshot_continues_like_the_original() {
    let g = genesis("ledger-test");
    let source_dir = tempfile::tempdir().unwrap();
    let mut source = Ledger::open(source_dir.path(), &g).unwrap();
    run_story(&mut source, 12);
    let bytes = snapshot_bytes(&source);

    let snapshot = Snapshot::read(bytes.as_slice(), &g, u64::MAX).unwrap();
    let tip = source.state().tip();
    assert_eq!(snapshot.height(), tip.height);
    assert_eq!(
        snapshot.roots(),
        source.committed_roots_at(tip.height).unwrap().unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    // The recent blocks come along: the last eight, each its successor's parent.
    let recent = snapshot.recent();
    assert_eq!(recent.len(), 8);
    for block in &recent {
        assert_eq!(
            (block.state_root, block.receipts_root),
            source.committed_roots_at(block.height).unwrap().unwrap()
        );
    }
    let mut joined =
        Ledger::install_snapshot(dir.path(), &g, snapshot, Some(b"floor".as_slice())).unwrap();
    assert_eq!(
        joined.consensus_floor().unwrap().as_deref(),
        Some(b"floor".as_slice())
    );
    assert_eq!(source.consensus_floor().unwrap(), None);
    assert!(!dir.path().join("ledger.redb.partial").exists());
    assert_eq!(joined.state().tip(), tip);
    assert_eq!(joined.first_block().unwrap(), tip.height - 7);
    assert!(joined.block(tip.height - 8).unwrap().is_none());
    assert!(joined.block(tip.height - 7).unwrap().is_some());
    assert_eq!(
        joined.header(tip.height).unwrap(),
        source.header(tip.height).unwrap()
    );
    let data = LogSubject::Data(Hash::digest(b"record"));
    assert_eq!(
        joined.log_indices(data).unwrap(),
        source.log_indices(data).unwrap()
    );
    assert_eq!(joined.log_leaf(0).unwrap(), source.log_leaf(0).unwrap());
    assert!(matches!(
        joined.replay_check(),
        Err(LedgerError::Pruned { first_block, .. }) if first_block == tip.height - 7
    ));

    // Both apply the next blocks to the same roots, and the joined one reopens there.
    for i in 0..3 {
        let block = transfer_block(&source, i);
        let a = source.apply_block(&block).unwrap();
        let b = joined.apply_block(&block).unwrap();
        assert_eq!(a.tip, b.tip);
        assert_eq!(a.receipts, b.receipts);
    }
    let root = joined.state().state_root();
    drop(joined);
    let reopened = Ledger::open(dir.path(), &g).unwrap();
    assert_eq!(reopened.state().state_root(), root);
    // It commits the roots of the heights it executed, as the original does.
    let parent = StateCommitment {
        from: tip.height - 5,
        roots: vec![],
        receipts: vec![],
    };
    assert_eq!(reopened.commitment_after(&parent).roots.len(), 9);
    assert_eq!(
        reopened.commitment_after(&parent),
        source.commitment_after(&parent)
    );

    // Installing over an existing ledger is refused.
    let again = Snapshot::read(bytes.as_slice(), &g, u64::MAX).unwrap();
    assert!(Ledger::install_snapshot(dir.path(), &g, again, None).is_err());
}

#[test]
fn a_snapshot_that_does_not_hold_together_is_refused() {
    let g = genesis("ledger-test");
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), &g).unwrap();
    run_story(&mut ledger, 4);
    let bytes = snapshot_bytes(&ledger);
    let read = |b: &[u8]| Snapshot::read(b, &g, u64::MAX).map(|_| ());

    assert!(read(&bytes).is_ok());
    assert!(matches!(
        Snapshot::read(bytes.as_slice(), &genesis("other-chain"), u64::MAX),
        Err(SnapshotError::OtherNetwork { .. })
    ));
    assert!(matches!(
        read(b"GET / HTTP/1.1"),
        Err(SnapshotError::NotASnapshot)
    ));
    assert!(matches!(
        read(&bytes[..bytes.len() - 3]),
        Err(SnapshotError::Io(_))
    ));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(read(&longer), Err(SnapshotError::Inconsistent(_))));
    assert!(matches!(
        Snapshot::read(bytes.as_slice(), &g, bytes.len() as u64 - 1),
        Err(SnapshotError::Io(_))
    ));
    // Any flipped byte after the header is caught: by a bound, a decoder, the state root,
    // or (the tip block's receipts) by the certified roots a joining node compares.
    let header = SNAPSHOT_MAGIC.len() + 32;
    let certified = |s: &Snapshot| {
        s.height() == ledger.state().tip().height
            && s.recent().iter().all(|b| {
                Some((b.state_root, b.receipts_root))
                    == ledger.committed_roots_at(b.height).unwrap()
                    && Some(b.block_hash) == ledger.header(b.height).unwrap().map(|h| h.hash())
            })
    };
    for at in (header..bytes.len()).step_by(7) {
        let mut bad = bytes.clone();
        bad[at] ^= 0x20;
        let accepted = Snapshot::read(bad.as_slice(), &g, u64::MAX).is_ok_and(|s| certified(&s));
        assert!(!accepted, "a flipped byte at {at} went unnoticed");
    }
    // An entry given twice is refused, even with the same value (the tree would keep one
    // copy, a stored table perhaps the other).
    let entries = state_rows(&ledger);
    let count = (entries.len() as u64).to_be_bytes();
    let (at, pair) = (header..bytes.len() - 12)
        .find_map(|p| {
            if bytes[p..p + 8] != count {
                return None;
            }
            let len = u32::from_be_bytes(bytes[p + 8..p + 12].try_into().unwrap()) as usize;
            let key = bytes.get(p + 12..p + 12 + len)?;
            let (_, value) = entries.iter().find(|(k, _)| k.as_slice() == key)?;
            Some((p, bytes[p + 8..p + 12 + len + 4 + value.len()].to_vec()))
        })
        .unwrap();
    let mut twice = bytes[..at].to_vec();
    twice.extend_from_slice(&(entries.len() as u64 + 1).to_be_bytes());
    twice.extend_from_slice(&pair);
    twice.extend_from_slice(&bytes[at + 8..]);
    match read(&twice) {
        Err(SnapshotError::Inconsistent(e)) => assert!(e.contains("appears twice"), "{e}"),
        other => panic!("a repeated entry was not refused: {other:?}"),
    }
    // A length prefix of 4 GiB is refused before anything is allocated.
    let mut huge = bytes[..header + 80].to_vec();
    huge.extend_from_slice(&1u32.to_be_bytes());
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(read(&huge), Err(SnapshotError::Oversized(_))));
}

#[test]
fn pruned_blocks_are_gone_and_the_rest_stays() {
    let g = genesis("ledger-test");
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), &g).unwrap();
    run_story(&mut ledger, 30);
    let tip = ledger.state().tip();
    let first_tx = ledger.block(1).unwrap().unwrap().block.txs[0].hash();
    let late_tx = ledger.block(tip.height).unwrap().unwrap().block.txs[0].hash();
    let root = ledger.state().state_root();

    // At most `max` per call, never into the recent heights.
    assert_eq!(ledger.prune_blocks_below(10, 4).unwrap(), 4);
    assert_eq!(ledger.first_block().unwrap(), 5);
    assert_eq!(
        ledger.prune_blocks_below(u64::MAX, u64::MAX).unwrap(),
        tip.height - 8 - 5
    );
    assert_eq!(ledger.prune_blocks_below(u64::MAX, u64::MAX).unwrap(), 0);
    let first = ledger.first_block().unwrap();
    assert_eq!(first, tip.height - 8);
    assert!(ledger.block(first - 1).unwrap().is_none());
    assert!(ledger.block(first).unwrap().is_some());
    assert!(ledger.tx_location(&first_tx).unwrap().is_none());
    assert!(ledger.committed_receipt(&late_tx).unwrap().is_some());
    assert!(matches!(
        ledger.replay_check(),
        Err(LedgerError::Pruned { .. })
    ));

    // The state and the whole access log stay; it reopens and goes on.
    drop(ledger);
    let mut ledger = Ledger::open(dir.path(), &g).unwrap();
    assert_eq!(ledger.state().state_root(), root);
    assert_eq!(ledger.first_block().unwrap(), first);
    assert!(ledger.log_leaf(0).unwrap().is_some());
    let block = transfer_block(&ledger, 0);
    ledger.apply_block(&block).unwrap();
}

#[test]
fn blocks_waiting_to_be_written_are_never_pruned_and_a_durable_apply_writes_them_first() {
    let g = genesis("ledger-test");
    let dir = tempfile::tempdir().unwrap();
    let mut applied = Vec::new();
    let tip = {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        run_story_with(&mut ledger, 30, |ledger, block| {
            applied.push(block.clone());
            ledger.apply_block_deferred(block, |_| false).unwrap()
        });
        // Nothing is on disk yet: nothing may be pruned.
        assert_eq!(ledger.prune_blocks_below(u64::MAX, u64::MAX).unwrap(), 0);
        assert_eq!(ledger.first_block().unwrap(), 1);
        // A durable apply writes the waiting blocks with its own, in order.
        let block = transfer_block(&ledger, 0);
        ledger.apply_block(&block).unwrap();
        applied.push(block);
        assert!(ledger.prune_blocks_below(5, u64::MAX).unwrap() > 0);
        ledger.state().tip()
    };
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    assert_eq!(ledger.state().tip(), tip);
    check_readers(&ledger, &applied[4..]);
}

#[test]
fn readers_see_every_block_while_another_thread_writes_them() {
    let g = genesis("ledger-test");
    let dir = tempfile::tempdir().unwrap();
    let ledger = std::sync::Arc::new(std::sync::Mutex::new(Ledger::open(dir.path(), &g).unwrap()));
    let syncer = ledger.lock().unwrap().syncer();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                syncer.sync().unwrap();
                std::thread::yield_now();
            }
            syncer.sync().unwrap();
        })
    };
    let mut applied = Vec::new();
    run_story_with(&mut ledger.lock().unwrap(), 0, |ledger, block| {
        applied.push(block.clone());
        ledger.apply_block_deferred(block, |_| false).unwrap()
    });
    for _ in 0..40 {
        let mut guard = ledger.lock().unwrap();
        let block = transfer_block(&guard, applied.len() % 3);
        guard.apply_block_deferred(&block, |_| false).unwrap();
        applied.push(block);
        check_readers(&guard, &applied);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let tip = ledger.lock().unwrap().state().tip();
    drop(ledger);
    let reopened = Ledger::open(dir.path(), &g).unwrap();
    assert_eq!(reopened.state().tip(), tip);
    check_readers(&reopened, &applied);
}

/// `count` access records by the holder of the story's data ([`run_story`]), at its next
/// nonce.
fn records(ledger: &Ledger, count: usize) -> SignedTransaction {
    let k = keys();
    let entry = AccessEntry {
        data: Hash::digest(b"record"),
        grant: None,
        requester: k[2].account(),
        decision: AccessDecision::Delivered,
        score_ppm: 10,
        at_ms: 5,
    };
    Transaction {
        chain_id: "ledger-test".into(),
        sender: k[1].account(),
        nonce: ledger.state().account(&k[1].account()).nonce,
        call: Call::RecordAccess {
            entries: vec![entry; count],
        },
    }
    .sign(&k[1])
}

/// Checks every leaf's inclusion proof at the log's size and at each of `heads` (size and
/// root, as the state committed to them when the log had that size), and the consistency
/// proofs between them: each proof is checked against the recorded root, not the one it
/// carries.
fn check_log_proofs(ledger: &Ledger, heads: &[(u64, Hash)]) {
    let (size, root) = (ledger.state().log().len(), ledger.checkpoint().root_hash);
    let mut all = heads.to_vec();
    all.push((size, root));
    for &(size, root) in &all {
        for index in (0..size).step_by(7).chain([size - 1]) {
            let proof = ledger.inclusion_proof(index, Some(size)).unwrap();
            assert_eq!(proof.root_hash, root, "leaf {index} in {size}");
            proof.verify().unwrap();
        }
    }
    for pair in all.windows(2) {
        let [(first, first_root), (second, second_root)] = pair else {
            continue;
        };
        let proof = ledger.consistency_proof(*first, *second).unwrap();
        assert_eq!(
            (proof.first_root, proof.second_root),
            (*first_root, *second_root)
        );
        proof.verify().unwrap();
    }
}

const LOG_SUBTREES: TableDefinition<u64, &[u8]> = TableDefinition::new("access_log_subtrees");
type SubtreeTable<'a> = redb::Table<'a, u64, &'static [u8]>;

/// The access log's tree is stored beside its leaves, and the state keeps only its right
/// edge: proofs made while blocks wait in memory, once they are written and after reopening
/// are the same; a missing interior hash is an error, never a wrong proof; a right edge
/// that does not match the committed log head is refused on opening.
#[test]
fn the_log_tree_on_disk_proves_every_leaf_however_it_was_written() {
    use secnet_merkle::log::{Frontier, Subtree};
    let dir = tempfile::tempdir().unwrap();
    let g = genesis("ledger-test");
    let mut heads = Vec::new();
    {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        run_story(&mut ledger, 0);
        for (i, count) in [37, 64, 1, 100, 29, 200].into_iter().enumerate() {
            let block = next_block(&ledger, vec![records(&ledger, count)]);
            // Half of the blocks are written at once, the others wait in memory.
            if i < 3 {
                ledger.apply_block(&block).unwrap();
            } else {
                ledger.apply_block_deferred(&block, |_| false).unwrap();
            }
            let head = ledger.checkpoint();
            heads.push((head.tree_size, head.root_hash));
        }
        check_log_proofs(&ledger, &heads);
        ledger.syncer().sync().unwrap();
        check_log_proofs(&ledger, &heads);
    }
    let size = heads.last().unwrap().0;
    assert_eq!(size, 3 + 37 + 64 + 1 + 100 + 29 + 200);
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    check_log_proofs(&ledger, &heads);
    ledger.replay_check().unwrap();
    drop(ledger);

    let file = dir.path().join(LEDGER_FILE);
    let edit = |f: &dyn Fn(&mut SubtreeTable)| {
        let db = Database::create(&file).unwrap();
        let w = db.begin_write().unwrap();
        f(&mut w.open_table(LOG_SUBTREES).unwrap());
        w.commit().unwrap();
    };
    {
        let db = Database::create(&file).unwrap();
        let r = db.begin_read().unwrap();
        let rows = r.open_table(LOG_SUBTREES).unwrap().len().unwrap();
        assert_eq!(
            rows,
            size - u64::from(size.count_ones()),
            "one row per interior subtree"
        );
    }
    // Leaf 0's path in a log of 434 leaves reads the subtree (3, 1), which is not on the
    // right edge: without it, opening works and that proof is an error.
    let inner = Subtree::position(3, 1);
    edit(&|t| {
        t.remove(inner).unwrap();
    });
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    match ledger.inclusion_proof(0, None) {
        Err(LedgerError::Corrupt(m)) => assert!(m.contains("subtree 3/1"), "{m}"),
        other => panic!("expected a corrupt-ledger error, got {other:?}"),
    }
    ledger
        .inclusion_proof(size - 1, None)
        .unwrap()
        .verify()
        .unwrap();
    drop(ledger);
    // Altered instead: every proof is checked against the state's log root before it is
    // served, at the log's size and below it (where the stored rows alone would agree with
    // a root made from them).
    edit(&|t| {
        t.insert(inner, [9u8; 32].as_slice()).unwrap();
    });
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    for at in [None, Some(300), Some(16)] {
        match ledger.inclusion_proof(0, at) {
            Err(LedgerError::Corrupt(m)) => assert!(m.contains("stored access log"), "{m}"),
            other => panic!("expected a corrupt-ledger error at {at:?}, got {other:?}"),
        }
    }
    assert!(matches!(
        ledger.consistency_proof(8, 300),
        Err(LedgerError::Corrupt(_))
    ));
    ledger
        .inclusion_proof(size - 1, None)
        .unwrap()
        .verify()
        .unwrap();
    // `secnet ledger check`, which replays every block, names the altered row.
    match ledger.replay_check() {
        Err(LedgerError::Corrupt(m)) => assert!(m.contains("subtree 3/1"), "{m}"),
        other => panic!("expected a corrupt-ledger error, got {other:?}"),
    }
    // Proofs that do not read the altered row are served.
    ledger
        .consistency_proof(16, size)
        .unwrap()
        .verify()
        .unwrap();
    drop(ledger);
    // A right edge that is not the committed log's: opening refuses the ledger.
    let (level, index) = Frontier::peak_positions(size)[0];
    edit(&|t| {
        t.insert(Subtree::position(level, index), [7u8; 32].as_slice())
            .unwrap();
    });
    match Ledger::open(dir.path(), &g) {
        Err(LedgerError::Corrupt(m)) => assert!(m.contains("log head"), "{m}"),
        other => panic!("expected a corrupt-ledger error, got {other:?}"),
    }
}

/// A ledger of format 6 (no stored log tree: opening hashed every leaf) opens in the current
/// format, with the tree written from its leaves.
#[test]
fn a_format_6_ledger_gets_its_log_tree() {
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    let g = genesis("ledger-test");
    let dir = tempfile::tempdir().unwrap();
    let mut heads = Vec::new();
    {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        run_story(&mut ledger, 0);
        for count in [5, 60, 3] {
            let block = next_block(&ledger, vec![records(&ledger, count)]);
            ledger.apply_block(&block).unwrap();
            let head = ledger.checkpoint();
            heads.push((head.tree_size, head.root_hash));
        }
    }
    {
        let db = Database::create(dir.path().join(LEDGER_FILE)).unwrap();
        let w = db.begin_write().unwrap();
        as_format_7_tables(&w);
        w.delete_table(LOG_SUBTREES).unwrap();
        common::whole_blocks(&w);
        w.open_table(META)
            .unwrap()
            .insert("format", b"secnet-ledger/6".as_slice())
            .unwrap();
        w.commit().unwrap();
    }
    let mut ledger = Ledger::open(dir.path(), &g).unwrap();
    check_log_proofs(&ledger, &heads);
    let block = next_block(&ledger, vec![records(&ledger, 9)]);
    ledger.apply_block(&block).unwrap();
    let head = ledger.checkpoint();
    heads.push((head.tree_size, head.root_hash));
    drop(ledger);
    let ledger = Ledger::open(dir.path(), &g).unwrap();
    check_log_proofs(&ledger, &heads);
    drop(ledger);
    let db = Database::create(dir.path().join(LEDGER_FILE)).unwrap();
    assert_eq!(stored_format(&db.begin_read().unwrap()), CURRENT_FORMAT);
}
