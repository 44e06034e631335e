//! Golden fixtures: the SHA-256 of the canonical encoding of one value of every kind.
//!
//! A failure here means the wire or storage format changed. That breaks signatures, stored
//! blocks and other nodes: change a fixture only as a deliberate, reviewed format change.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

use secnet_types::{
    AccessDecision, AccessEntry, Block, Call, DataKind, EncryptionKey, Event, Hash, Keypair,
    Outcome, Receipt, RefusalReason, RegisterData, Rejection, SignedTransaction, StateCommitment,
    Transaction,
};

fn key() -> Keypair {
    Keypair::deterministic("golden", 0)
}

fn calls() -> Vec<Call> {
    let other = Keypair::deterministic("golden", 1).account();
    let h = Hash::digest(b"golden data");
    vec![
        Call::Transfer {
            to: other,
            amount: 42,
        },
        Call::SetEncryptionKey {
            key: EncryptionKey([9u8; 32]),
        },
        Call::RegisterData(RegisterData {
            hash: h,
            description: "Alice: blood panel 2019".into(),
            address: "pdc://hb/alice/obs/1".into(),
            price: 100,
            kind: DataKind::UserData,
            holder: other,
            holder_share_bps: 3000,
        }),
        Call::RegisterData(RegisterData {
            hash: Hash::digest(b"rule"),
            description: "DoS detector".into(),
            address: "pdc://sec/rules/dos".into(),
            price: 7,
            kind: DataKind::SecurityRule {
                category: "dos".into(),
            },
            holder: other,
            holder_share_bps: 0,
        }),
        Call::WithdrawData { hash: h },
        Call::SubscribeData { hash: h },
        Call::RequestDataWithAddress {
            address: "pdc://hb/alice/obs/1".into(),
            purpose: "trial".into(),
            ttl_secs: 600,
        },
        Call::RequestDataWithHash {
            hash: h,
            purpose: "trial".into(),
            ttl_secs: 600,
        },
        Call::RecordAccess {
            entries: vec![
                AccessEntry {
                    data: h,
                    grant: Some(Hash::digest(b"g")),
                    requester: other,
                    decision: AccessDecision::Delivered,
                    score_ppm: 1234,
                    at_ms: 1_700_000_000_000,
                },
                AccessEntry {
                    data: h,
                    grant: None,
                    requester: other,
                    decision: AccessDecision::Refused(RefusalReason::PolicyDenied),
                    score_ppm: 0,
                    at_ms: 1_700_000_000_001,
                },
            ],
        },
        Call::BreakGlass {
            owner: other,
            reason: "Dr Ada (dr.ada): unconscious in the emergency room".into(),
        },
    ]
}

fn signed() -> Vec<SignedTransaction> {
    let k = key();
    calls()
        .into_iter()
        .enumerate()
        .map(|(i, call)| {
            Transaction {
                chain_id: "secnet-golden".into(),
                sender: k.account(),
                nonce: i as u64,
                call,
            }
            .sign(&k)
        })
        .collect()
}

const TX_FIXTURES: [&str; 10] = [
    "1d7242db1307fd79034c6be7e46f64afacb0996547cb7b62ca697e20a8e10b72",
    "166d227bc43d97632f0bdda36c7a194a5846f97395bccf0e5f1d90a7b5104f2b",
    "0c70c6ec736cb552341d6c28b0a22204060a185f1e2d64e921137cbb7536d9ab",
    "41a05822a1bb75cb931975cc94884084da81904a8e3e7c5a7258fc726e118f01",
    "cea1845086489973181ec0c485e5d7ae4b6862d0d09be9752b6135b2f354bb13",
    "54f791e5d3d9a67770bde12601786f1b32cdc0e2d4993f80222277306d887100",
    "099a51f282a5476ef8345d97720bc490f44510fc92ba5c1d78998ad89560cc29",
    "99ac9ac0f7829c385e28ddac00f9d885f71469dab755bb6e652cee51a96d8ced",
    "6743d963c5ed4794dbd2861a5f4f1bca8dff79776a27849e5a7de942a68723f4",
    "c60a8d4e2fcf60451a4d57387b8bd99294a090eb7d33fb425e1230786b851555",
];

#[test]
fn transaction_encodings_are_frozen() {
    let got: Vec<String> = signed()
        .iter()
        .map(|t| Hash::digest(&t.to_bytes()).to_hex())
        .collect();
    assert_eq!(got, TX_FIXTURES, "signed transaction encodings changed");
}

#[test]
fn block_and_receipt_encodings_are_frozen() {
    // The transactions the block fixture was made with (calls added later have their own).
    let txs: Vec<SignedTransaction> = signed().into_iter().take(9).collect();
    let block = Block::new(7, Hash::digest(b"parent"), 1_700_000_000_000, txs).committing(
        StateCommitment {
            from: 4,
            roots: vec![Hash::digest(b"root 4"), Hash::digest(b"root 5")],
            receipts: vec![Hash::digest(b"receipts 4"), Hash::digest(b"receipts 5")],
        },
    );
    assert_eq!(
        block.hash().to_hex(),
        "e405aae18a4f66f6807165b46937cdb609541fe526e2be8d98ac36b5968080d9"
    );
    assert_eq!(
        Hash::digest(&block.to_bytes()).to_hex(),
        "d5502b4af6380e68010c5c509b0054b411dbfd34b73d7d8a475dc0e13fef565c"
    );
    let receipts = [
        Receipt {
            tx: Hash::digest(b"a"),
            outcome: Outcome::Applied {
                events: vec![
                    Event::Transfer {
                        from: key().account(),
                        to: key().account(),
                        amount: 1,
                    },
                    Event::Logged {
                        first_index: 3,
                        count: 2,
                    },
                ],
            },
        },
        Receipt {
            tx: Hash::digest(b"b"),
            outcome: Outcome::Rejected {
                rejection: Rejection::BadNonce {
                    expected: 1,
                    got: 5,
                },
            },
        },
    ];
    use commonware_codec::Encode;
    let bytes: Vec<u8> = receipts.iter().flat_map(|r| r.encode().to_vec()).collect();
    assert_eq!(
        Hash::digest(&bytes).to_hex(),
        "8b9cce5b444049a3a098ad691fd0268ca543b44710313a90328b5acd86106108"
    );
}

#[test]
fn every_fixture_decodes_back_and_verifies() {
    for tx in signed() {
        let back = SignedTransaction::decode_bytes(&tx.to_bytes()).unwrap();
        assert_eq!(back, tx);
        assert!(back.verify_signature());
    }
    let block = Block::new(1, Hash::ZERO, 5, signed());
    assert_eq!(Block::decode_bytes(&block.to_bytes()).unwrap(), block);
}
