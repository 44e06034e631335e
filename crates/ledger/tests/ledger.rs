//! The durable ledger: reopening, refusing foreign or tampered directories, audit proofs.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

use redb::{Database, ReadableTable, TableDefinition};
use secnet_contract::{LogEntry, StateKey};
use secnet_ledger::{Checkpoint, LEDGER_FILE, Ledger, LedgerError, LogSubject};
use secnet_types::{
    AccessDecision, AccessEntry, Allocation, Block, Call, DataKind, Genesis, Hash, Keypair,
    RegisterData, Transaction,
};

fn keys() -> Vec<Keypair> {
    (0..3)
        .map(|i| Keypair::deterministic("ledger-test", i))
        .collect()
}

fn genesis(chain: &str) -> Genesis {
    Genesis {
        chain_id: chain.into(),
        genesis_time_ms: 1_000,
        allocations: keys()
            .iter()
            .map(|k| Allocation {
                account: k.account(),
                balance: 1_000,
            })
            .collect(),
        validators: vec![],
    }
}

/// Applies a register / subscribe / request / record story plus transfers over `n` blocks.
fn run_story(ledger: &mut Ledger, n: u64) {
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
        let tip = ledger.state().tip();
        let block = Block::new(tip.height + 1, tip.block_hash, tip.timestamp_ms + 1, txs);
        let out = ledger.apply_block(&block).unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let g = genesis("ledger-test");
    {
        let mut ledger = Ledger::open(dir.path(), &g).unwrap();
        run_story(&mut ledger, 3);
    }
    {
        // Someone with access to the disk gives themselves money.
        const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
        let db = Database::create(dir.path().join(LEDGER_FILE)).unwrap();
        let w = db.begin_write().unwrap();
        {
            let mut t = w.open_table(STATE).unwrap();
            let key = StateKey::Account(keys()[0].account()).to_bytes();
            let mut value = t.get(key.as_slice()).unwrap().unwrap().value().to_vec();
            value[0] ^= 0x40;
            t.insert(key.as_slice(), value.as_slice()).unwrap();
        }
        w.commit().unwrap();
    }
    let err = Ledger::open(dir.path(), &g).unwrap_err();
    assert!(err.to_string().contains("stored entries hash to"), "{err}");
}

#[test]
fn checkpoints_sign_the_log_head() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(dir.path(), &genesis("ledger-test")).unwrap();
    run_story(&mut ledger, 0);
    let key = Keypair::deterministic("node", 0);
    let signed = ledger.checkpoint().sign("node0", &key);
    let cp = Checkpoint::verify_note(&signed.note, "node0", &key.account()).unwrap();
    assert_eq!(cp.tree_size, 2);
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
            .inclusion_proof(2, None)
            .unwrap_err()
            .to_string()
            .contains("outside a tree of size 2")
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
    let size = ledger.state().log().len();
    let mut scanned: std::collections::BTreeMap<LogSubject, Vec<u64>> = Default::default();
    for index in 0..size {
        let entry = LogEntry::from_bytes(&ledger.log_leaf(index).unwrap().unwrap()).unwrap();
        for subject in LogSubject::of(&entry) {
            scanned.entry(subject).or_default().push(index);
        }
    }
    assert_eq!(scanned.len(), 2, "one data hash and one grant: {scanned:?}");
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
