//! The data contract, transaction by transaction: what each call does and how each is refused.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use common::{CHAIN, Harness, data_hash, register};
use secnet_contract::{LogEntry, State, StateKey};
use secnet_types::limits::{EXPIRED_GRANT_RETENTION_MS, MAX_DESCRIPTION, MAX_GRANT_TTL_SECS};
use secnet_types::{
    AccessDecision, AccessEntry, Block, Call, DataKind, Event, Keypair, Outcome, RefusalReason,
    RegisterData, Rejection, Signature, SignedTransaction, Transaction,
};

const PATIENT: usize = 0;
const HOLDER: usize = 1;
const CONSUMER: usize = 2;
const STRANGER: usize = 3;

fn rejected(r: &secnet_types::Receipt) -> Rejection {
    r.rejection()
        .cloned()
        .unwrap_or_else(|| panic!("expected a rejection, got {:?}", r.outcome))
}

fn request(hash: secnet_types::Hash) -> Call {
    Call::RequestDataWithHash {
        hash,
        purpose: "treatment".into(),
        ttl_secs: 600,
    }
}

/// A listing by PATIENT, held by HOLDER with a 30% share, price 100, with CONSUMER subscribed.
fn listed_and_subscribed() -> (Harness, secnet_types::Hash) {
    let mut h = Harness::new(4, 1_000);
    let d = data_hash(1);
    let holder = h.id(HOLDER);
    assert!(
        h.run(PATIENT, register(d, "pdc://hb/alice/1", 100, holder, 3_000))
            .is_applied()
    );
    assert!(
        h.run(CONSUMER, Call::SubscribeData { hash: d })
            .is_applied()
    );
    (h, d)
}

#[test]
fn transfer_moves_value_and_bumps_nonce() {
    let mut h = Harness::new(2, 500);
    let to = h.id(1);
    let r = h.run(0, Call::Transfer { to, amount: 120 });
    assert_eq!(
        r.outcome,
        Outcome::Applied {
            events: vec![Event::Transfer {
                from: h.id(0),
                to,
                amount: 120
            }]
        }
    );
    assert_eq!((h.balance(0), h.balance(1)), (380, 620));
    assert_eq!(h.state.account(&h.id(0)).nonce, 1);
}

#[test]
fn subscription_pays_holder_then_owner_once() {
    let (mut h, d) = listed_and_subscribed();
    assert_eq!(h.balance(CONSUMER), 900);
    assert_eq!(h.balance(HOLDER), 1_030);
    assert_eq!(h.balance(PATIENT), 1_070);
    let again = h.run(CONSUMER, Call::SubscribeData { hash: d });
    assert_eq!(rejected(&again), Rejection::AlreadySubscribed { hash: d });
    assert_eq!(h.balance(CONSUMER), 900, "no double charge");
    assert_eq!(h.state.total_balance(), 4_000);
    // Each payment is in the access log, with both legs; the refused second subscription
    // left nothing there.
    assert_eq!(h.state.log().len(), 1);
    let tx = h.tx(STRANGER, Call::SubscribeData { hash: d });
    let out = h.block(vec![tx]);
    assert_eq!(h.state.log().len(), 2);
    let leaf = LogEntry::from_bytes(&out.log_leaves[0]).unwrap();
    let LogEntry::Payment {
        data,
        consumer,
        holder,
        holder_amount,
        owner,
        owner_amount,
        ..
    } = leaf
    else {
        panic!("expected a payment, got {leaf:?}");
    };
    assert_eq!(
        (data, consumer, holder, owner),
        (d, h.id(STRANGER), h.id(HOLDER), h.id(PATIENT))
    );
    assert_eq!((holder_amount, owner_amount), (30, 70));
}

#[test]
fn subscribers_get_time_limited_grants_by_hash_or_address() {
    let (mut h, d) = listed_and_subscribed();
    let tx = h.tx(CONSUMER, request(d));
    let grant_id = tx.hash();
    let out = h.block(vec![tx]);
    let grant = h.state.grant(&grant_id).expect("grant written");
    assert_eq!(grant.requester, h.id(CONSUMER));
    assert_eq!(grant.holder, h.id(HOLDER));
    assert_eq!(grant.expires_at_ms, out.tip.timestamp_ms + 600_000);
    assert_eq!(out.log_leaves.len(), 1);

    let by_address = h.run(
        CONSUMER,
        Call::RequestDataWithAddress {
            address: "pdc://hb/alice/1".into(),
            purpose: "research".into(),
            ttl_secs: 60,
        },
    );
    assert!(by_address.is_applied());
    let unknown = h.run(
        CONSUMER,
        Call::RequestDataWithAddress {
            address: "pdc://nowhere".into(),
            purpose: "research".into(),
            ttl_secs: 60,
        },
    );
    assert_eq!(
        rejected(&unknown),
        Rejection::UnknownAddress {
            address: "pdc://nowhere".into()
        }
    );
}

#[test]
fn non_subscribers_and_bad_lifetimes_get_no_grant() {
    let (mut h, d) = listed_and_subscribed();
    assert_eq!(
        rejected(&h.run(STRANGER, request(d))),
        Rejection::NotSubscribed { hash: d }
    );
    let zero = h.run(
        CONSUMER,
        Call::RequestDataWithHash {
            hash: d,
            purpose: "x".into(),
            ttl_secs: 0,
        },
    );
    assert_eq!(
        rejected(&zero),
        Rejection::TtlOutOfRange {
            ttl_secs: 0,
            max: MAX_GRANT_TTL_SECS
        }
    );
    let long = h.run(
        CONSUMER,
        Call::RequestDataWithHash {
            hash: d,
            purpose: "x".into(),
            ttl_secs: MAX_GRANT_TTL_SECS + 1,
        },
    );
    assert!(matches!(rejected(&long), Rejection::TtlOutOfRange { .. }));
    assert_eq!(h.state.grants().count(), 0);
    assert_eq!(
        h.state.log().len(),
        1,
        "only the subscription's payment is logged"
    );
}

#[test]
fn only_the_owner_withdraws_and_then_no_grants() {
    let (mut h, d) = listed_and_subscribed();
    assert_eq!(
        rejected(&h.run(CONSUMER, Call::WithdrawData { hash: d })),
        Rejection::NotOwner { hash: d }
    );
    assert!(h.run(PATIENT, Call::WithdrawData { hash: d }).is_applied());
    assert!(h.state.listing(&d).is_none());
    assert!(h.state.listing_at("pdc://hb/alice/1").is_none());
    assert_eq!(
        rejected(&h.run(CONSUMER, request(d))),
        Rejection::UnknownData { hash: d }
    );
    // Registering again is a new listing: the old subscription does not carry over.
    let holder = h.id(HOLDER);
    assert!(
        h.run(PATIENT, register(d, "pdc://hb/alice/1", 100, holder, 3_000))
            .is_applied()
    );
    assert_eq!(
        rejected(&h.run(CONSUMER, request(d))),
        Rejection::NotSubscribed { hash: d }
    );
    assert!(
        h.run(CONSUMER, Call::SubscribeData { hash: d })
            .is_applied()
    );
    assert!(h.run(CONSUMER, request(d)).is_applied());
}

#[test]
fn hashes_and_addresses_register_once() {
    let (mut h, d) = listed_and_subscribed();
    let holder = h.id(HOLDER);
    assert_eq!(
        rejected(&h.run(STRANGER, register(d, "other", 1, holder, 0))),
        Rejection::AlreadyRegistered { hash: d }
    );
    assert_eq!(
        rejected(&h.run(
            STRANGER,
            register(data_hash(2), "pdc://hb/alice/1", 1, holder, 0)
        )),
        Rejection::AddressTaken {
            address: "pdc://hb/alice/1".into()
        }
    );
    assert_eq!(
        rejected(&h.run(STRANGER, register(data_hash(3), "a", 1, holder, 10_001))),
        Rejection::InvalidShare { bps: 10_001 }
    );
}

#[test]
fn a_break_glass_is_logged_against_the_owner_and_grants_nothing() {
    let mut h = Harness::new(4, 1_000);
    let owner = h.id(PATIENT);
    let before = h.state.log().len();
    let r = h.run(
        HOLDER,
        Call::BreakGlass {
            owner,
            reason: "Dr Ada: unconscious, allergies unknown".into(),
        },
    );
    assert!(r.is_applied(), "{r:?}");
    assert_eq!(h.state.log().len(), before + 1);
    let expected = secnet_contract::LogEntry::Emergency {
        height: h.state.tip().height,
        tx: r.tx,
        requester: h.id(HOLDER),
        owner,
        reason: "Dr Ada: unconscious, allergies unknown".into(),
    };
    assert_eq!(
        h.log.leaf_hash_at(before),
        Some(secnet_merkle::log::leaf_hash(&expected.to_bytes())),
        "the log holds who read whose data and why"
    );
    assert_eq!(
        secnet_contract::LogEntry::from_bytes(&expected.to_bytes()).unwrap(),
        expected
    );
    assert_eq!(h.state.grants().count(), 0);
    assert_eq!(h.state.account(&h.id(HOLDER)).balance, 1_000);
    assert_eq!(
        rejected(&h.run(
            HOLDER,
            Call::BreakGlass {
                owner,
                reason: String::new()
            }
        )),
        Rejection::EmptyField {
            field: "reason".into()
        }
    );
    assert_eq!(h.state.log().len(), before + 1);
}

#[test]
fn oversized_and_empty_fields_are_refused() {
    let mut h = Harness::new(2, 10);
    let holder = h.id(1);
    let mut call = register(data_hash(1), "addr", 1, holder, 0);
    if let Call::RegisterData(r) = &mut call {
        r.description = "x".repeat(MAX_DESCRIPTION + 1);
    }
    assert_eq!(
        rejected(&h.run(0, call)),
        Rejection::FieldTooLong {
            field: "description".into(),
            max: MAX_DESCRIPTION as u32
        }
    );
    let empty = Call::RegisterData(RegisterData {
        hash: data_hash(2),
        description: "d".into(),
        address: "a2".into(),
        price: 0,
        kind: DataKind::SecurityRule {
            category: String::new(),
        },
        holder,
        holder_share_bps: 0,
    });
    assert_eq!(
        rejected(&h.run(0, empty)),
        Rejection::EmptyField {
            field: "category".into()
        }
    );
    assert_eq!(h.listings().len(), 0);
}

#[test]
fn too_little_balance_changes_nothing_but_the_nonce() {
    let mut h = Harness::new(2, 50);
    let root_before_accounts = (h.balance(0), h.balance(1));
    let to = h.id(1);
    let r = h.run(0, Call::Transfer { to, amount: 51 });
    assert_eq!(
        rejected(&r),
        Rejection::InsufficientBalance {
            needed: 51,
            available: 50
        }
    );
    assert_eq!((h.balance(0), h.balance(1)), root_before_accounts);
    assert_eq!(h.state.account(&h.id(0)).nonce, 1);
}

#[test]
fn replays_gaps_other_chains_and_forgeries_are_refused_without_a_trace() {
    let mut h = Harness::new(2, 50);
    let to = h.id(1);
    let first = h.tx(0, Call::Transfer { to, amount: 1 });
    h.block(vec![first.clone()]);
    // Replay.
    let out = h.block(vec![first]);
    assert_eq!(
        rejected(&out.receipts[0]),
        Rejection::BadNonce {
            expected: 1,
            got: 0
        }
    );
    // Gap.
    let sender = h.id(0);
    let gap = Transaction {
        chain_id: CHAIN.into(),
        sender,
        nonce: 5,
        call: Call::Transfer { to, amount: 1 },
    }
    .sign(&h.keys[0]);
    assert_eq!(
        rejected(&h.block(vec![gap]).receipts[0]),
        Rejection::BadNonce {
            expected: 1,
            got: 5
        }
    );
    // Another network.
    let other = Transaction {
        chain_id: "other-net".into(),
        sender,
        nonce: 1,
        call: Call::Transfer { to, amount: 1 },
    }
    .sign(&h.keys[0]);
    assert_eq!(
        rejected(&h.block(vec![other]).receipts[0]),
        Rejection::WrongChain {
            expected: CHAIN.into(),
            got: "other-net".into()
        }
    );
    // Signed by someone else.
    let forged_tx = Transaction {
        chain_id: CHAIN.into(),
        sender,
        nonce: 1,
        call: Call::Transfer { to, amount: 40 },
    };
    let forged = forged_tx.sign(&h.keys[1]);
    let out = h.block(vec![forged]);
    assert_eq!(rejected(&out.receipts[0]), Rejection::BadSignature);
    // Only the first transfer ever happened, and only one nonce was used.
    assert_eq!((h.balance(0), h.balance(1)), (49, 51));
    assert_eq!(h.state.account(&sender).nonce, 1);
    assert!(out.writes.is_empty(), "a refused forgery writes nothing");
    // A stranger's transaction with the wrong nonce adds no account, not even in memory.
    let stranger = Keypair::deterministic("stranger", 0);
    let accounts = h.state.accounts().count();
    let gap = Transaction {
        chain_id: CHAIN.into(),
        sender: stranger.account(),
        nonce: 3,
        call: Call::Transfer { to, amount: 1 },
    }
    .sign(&stranger);
    let out = h.block(vec![gap]);
    assert!(matches!(
        rejected(&out.receipts[0]),
        Rejection::BadNonce {
            expected: 0,
            got: 3
        }
    ));
    assert!(out.writes.is_empty());
    assert_eq!(h.state.accounts().count(), accounts);
    assert!(
        h.state
            .get(&StateKey::Account(stranger.account()))
            .is_none()
    );
}

#[test]
fn one_bad_signature_does_not_taint_the_batch() {
    let mut h = Harness::new(3, 50);
    let to = h.id(2);
    let good0 = h.tx(0, Call::Transfer { to, amount: 1 });
    let good1 = h.tx(1, Call::Transfer { to, amount: 2 });
    let tampered = SignedTransaction::new(
        Transaction {
            nonce: 1,
            ..good0.tx().clone()
        },
        Signature([7u8; 64]),
    );
    let out = h.block(vec![good0, tampered, good1]);
    let applied: Vec<bool> = out.receipts.iter().map(|r| r.is_applied()).collect();
    assert_eq!(applied, [true, false, true]);
}

#[test]
fn holders_record_deliveries_and_refusals() {
    let (mut h, d) = listed_and_subscribed();
    let grant_tx = h.tx(CONSUMER, request(d));
    let grant = grant_tx.hash();
    h.block(vec![grant_tx]);
    let consumer = h.id(CONSUMER);
    let stranger = h.id(STRANGER);
    let delivered = AccessEntry {
        data: d,
        grant: Some(grant),
        requester: consumer,
        decision: AccessDecision::Delivered,
        score_ppm: 1_200,
        at_ms: 1,
    };
    let refused = AccessEntry {
        data: d,
        grant: None,
        requester: stranger,
        decision: AccessDecision::Refused(RefusalReason::NotSubscribed),
        score_ppm: 0,
        at_ms: 2,
    };
    let r = h.run(
        HOLDER,
        Call::RecordAccess {
            entries: vec![delivered.clone(), refused.clone()],
        },
    );
    assert_eq!(
        r.outcome,
        Outcome::Applied {
            events: vec![Event::Logged {
                first_index: 2,
                count: 2
            }]
        }
    );
    assert_eq!(h.state.log().len(), 4);

    // Not the holder.
    assert_eq!(
        rejected(&h.run(
            STRANGER,
            Call::RecordAccess {
                entries: vec![refused.clone()]
            }
        )),
        Rejection::NotHolder { hash: d }
    );
    // A grant presented for someone else.
    let wrong = AccessEntry {
        requester: stranger,
        ..delivered.clone()
    };
    assert_eq!(
        rejected(&h.run(
            HOLDER,
            Call::RecordAccess {
                entries: vec![refused, wrong]
            }
        )),
        Rejection::GrantMismatch { grant }
    );
    assert_eq!(h.state.log().len(), 4, "a refused batch appends nothing");
    let bad_score = AccessEntry {
        score_ppm: 1_000_001,
        ..delivered
    };
    assert!(matches!(
        rejected(&h.run(
            HOLDER,
            Call::RecordAccess {
                entries: vec![bad_score]
            }
        )),
        Rejection::ScoreOutOfRange { .. }
    ));
    assert!(matches!(
        rejected(&h.run(HOLDER, Call::RecordAccess { entries: vec![] })),
        Rejection::EmptyField { .. }
    ));
}

#[test]
fn every_kind_of_entry_is_provable_and_absence_too() {
    let (mut h, d) = listed_and_subscribed();
    let grant_tx = h.tx(CONSUMER, request(d));
    let grant = grant_tx.hash();
    h.block(vec![grant_tx]);
    let root = h.state.state_root();
    let keys = [
        StateKey::Account(h.id(CONSUMER)),
        StateKey::Listing(d),
        StateKey::Address("pdc://hb/alice/1".into()),
        StateKey::Subscription(d, h.id(CONSUMER)),
        StateKey::Grant(grant),
        StateKey::LogHead,
    ];
    for key in keys {
        let proof = h.state.prove(&key);
        assert!(proof.value.is_some(), "{key:?} present");
        proof
            .verify(&root)
            .unwrap_or_else(|e| panic!("{key:?}: {e}"));
        assert!(proof.decoded_value().is_some());
    }
    let absent = h.state.prove(&StateKey::Listing(data_hash(99)));
    assert!(absent.value.is_none());
    absent.verify(&root).unwrap();
    let mut lie = h.state.prove(&StateKey::Account(h.id(CONSUMER)));
    lie.value = Some(vec![0; 20]);
    assert!(lie.verify(&root).is_err());
}

#[test]
fn malformed_blocks_are_refused_whole() {
    let mut h = Harness::new(2, 50);
    let to = h.id(1);
    let tx = h.tx(0, Call::Transfer { to, amount: 1 });
    let tip = h.state.tip();
    let before = h.state.state_root();
    let wrong_height = Block::new(
        tip.height + 2,
        tip.block_hash,
        tip.timestamp_ms,
        vec![tx.clone()],
    );
    assert!(h.state.apply_block(&wrong_height).is_err());
    let wrong_parent = Block::new(
        tip.height + 1,
        data_hash(5),
        tip.timestamp_ms,
        vec![tx.clone()],
    );
    assert!(h.state.apply_block(&wrong_parent).is_err());
    let back_in_time = Block::new(
        tip.height + 1,
        tip.block_hash,
        tip.timestamp_ms - 1,
        vec![tx.clone()],
    );
    assert!(h.state.apply_block(&back_in_time).is_err());
    let mut lying_body = Block::new(
        tip.height + 1,
        tip.block_hash,
        tip.timestamp_ms,
        vec![tx.clone()],
    );
    lying_body.txs.push(tx);
    assert!(h.state.apply_block(&lying_body).is_err());
    assert_eq!(h.state.state_root(), before);
    assert_eq!(h.state.tip(), tip);
}

#[test]
fn state_rebuilt_from_its_entries_has_the_same_root() {
    let (mut h, d) = listed_and_subscribed();
    h.run(CONSUMER, request(d));
    let size = h.state.log().len();
    let rebuilt =
        State::from_entries(CHAIN.into(), h.state.tip(), h.entries(), h.frontier(size)).unwrap();
    assert_eq!(rebuilt.state_root(), h.state.state_root());
    assert_eq!(rebuilt.log(), h.state.log());
    // A stored log that is not the one the log head names is refused: one leaf short, or
    // none at all.
    for short in [size - 1, 0] {
        let refused =
            State::from_entries(CHAIN.into(), h.state.tip(), h.entries(), h.frontier(short));
        assert!(
            refused.is_err(),
            "a log of {short} leaves instead of {size}"
        );
    }
}

#[test]
fn trusting_already_checked_signatures_changes_nothing_for_honest_callers() {
    let mut h = Harness::new(3, 50);
    let to = h.id(2);
    let good = h.tx(0, Call::Transfer { to, amount: 1 });
    let forged = SignedTransaction::new(
        Transaction {
            nonce: 1,
            ..good.tx().clone()
        },
        Signature([9u8; 64]),
    );
    let tip = h.state.tip();
    let block = Block::new(
        tip.height + 1,
        tip.block_hash,
        tip.timestamp_ms + 1,
        vec![good.clone(), forged.clone()],
    );
    let mut checked = h.state.clone();
    let mut trusting = h.state.clone();
    let a = checked.apply_block(&block).unwrap();
    // The caller vouches only for the transaction it actually verified.
    let b = trusting
        .apply_block_trusting(&block, |t| t.signed_id() == good.signed_id())
        .unwrap();
    assert_eq!(a.receipts, b.receipts);
    assert_eq!(a.tip, b.tip);
    assert_eq!(rejected(&b.receipts[1]), Rejection::BadSignature);
}

#[test]
fn expired_grants_leave_the_state_an_hour_after_expiry_and_stay_in_the_log() {
    let (mut h, d) = listed_and_subscribed();
    let tx = h.tx(CONSUMER, request(d));
    let grant = tx.hash();
    let issued = h.block(vec![tx]);
    let expires = issued.tip.timestamp_ms + 600_000;
    let log_size = h.state.log().len();
    // A node that loads this state from its stored entries retires the grant just the same.
    let mut reloaded = State::from_entries(
        CHAIN.into(),
        h.state.tip(),
        h.entries(),
        h.frontier(log_size),
    )
    .unwrap();
    let reloaded_from = h.blocks.len();

    // Until an hour after expiry it can still be named by the holder's access records.
    let late = expires + EXPIRED_GRANT_RETENTION_MS - issued.tip.timestamp_ms - 1_000;
    let record = h.tx(
        HOLDER,
        Call::RecordAccess {
            entries: vec![AccessEntry {
                data: d,
                grant: Some(grant),
                requester: h.id(CONSUMER),
                decision: AccessDecision::Refused(RefusalReason::Expired),
                score_ppm: 0,
                at_ms: expires + 1,
            }],
        },
    );
    let out = h.block_after(late, vec![record]);
    assert!(out.receipts[0].is_applied(), "{:?}", out.receipts);
    assert!(h.state.grant(&grant).is_some());

    // The next block after that removes it, as a write every node persists.
    let root_before = h.state.state_root();
    let out = h.block_after(2_000, vec![]);
    assert!(h.state.grant(&grant).is_none());
    assert!(
        out.writes
            .iter()
            .any(|w| w.key == StateKey::Grant(grant).to_bytes() && w.value.is_none())
    );
    assert_ne!(h.state.state_root(), root_before);
    assert_eq!(h.state.log().len(), log_size + 1, "its log entries stay");
    let named = h.tx(
        HOLDER,
        Call::RecordAccess {
            entries: vec![AccessEntry {
                data: d,
                grant: Some(grant),
                requester: h.id(CONSUMER),
                decision: AccessDecision::Delivered,
                score_ppm: 0,
                at_ms: 1,
            }],
        },
    );
    let out = h.block(vec![named]);
    assert_eq!(
        rejected(&out.receipts[0]),
        Rejection::UnknownGrant { grant }
    );

    for block in &h.blocks[reloaded_from..] {
        reloaded.apply_block(block).unwrap();
    }
    assert_eq!(reloaded.state_root(), h.state.state_root());
}
