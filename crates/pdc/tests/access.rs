//! The access path on a real contract state and a real store: a permitted fetch delivers data
//! the consumer can decrypt and check against the ledger; every other case is refused with
//! the reason the ledger records.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

use secnet_contract::Sandbox;
use secnet_pdc::access::{
    AccessToken, FetchAttempt, FetchProof, Gate, RequestFeatures, RuleScorer, Scorer,
};
use secnet_pdc::crypto::DataKey;
use secnet_pdc::envelope::FHIR_JSON;
use secnet_pdc::record::recordable;
use secnet_pdc::store::{Decryptor, PutRequest, Store};
use secnet_policy::{Agent, AgentKind, AgentRef, Engine, OwnerPolicies, Resource};
use secnet_types::{
    AccessDecision, AccessEntry, AccountId, Block, Call, DataKind, Hash, Keypair, RefusalReason,
    RegisterData, Rejection,
};
use std::io::Read as _;

const PATIENT: usize = 0;
const HOLDER: usize = 1;
const CONSUMER: usize = 2;
const THIEF: usize = 3;

/// The sandbox ledger with every account's encryption key registered.
struct Ledger(Sandbox);

impl std::ops::Deref for Ledger {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.0
    }
}

impl std::ops::DerefMut for Ledger {
    fn deref_mut(&mut self) -> &mut Sandbox {
        &mut self.0
    }
}

impl Ledger {
    fn new() -> Ledger {
        let keys: Vec<Keypair> = (0..4)
            .map(|i| Keypair::deterministic("access", i))
            .collect();
        let mut l = Ledger(Sandbox::new("secnet-access", keys, 10_000));
        for i in 0..4 {
            let key = l.key(i).unwrap().encryption_key();
            l.run(i, Call::SetEncryptionKey { key });
        }
        l
    }

    fn id(&self, i: usize) -> AccountId {
        self.account(i)
    }

    fn now(&self) -> u64 {
        self.now_ms()
    }

    fn run(&mut self, i: usize, call: Call) -> secnet_types::Receipt {
        self.0.run(i, call).unwrap()
    }
}

struct World {
    ledger: Ledger,
    store: Store,
    _dir: tempfile::TempDir,
    engine: Engine,
    policies: OwnerPolicies,
    resource: Resource,
    data: Hash,
    content: Vec<u8>,
    grant: Hash,
    version: secnet_pdc::Version,
}

fn consumer_agent(account: &AccountId) -> Agent {
    Agent {
        kind: AgentKind::User,
        account: account.to_string(),
        name: "dr. b".into(),
        member_of: vec![AgentRef {
            kind: AgentKind::Organisation,
            account: "hospital-b".into(),
        }],
    }
}

const PERMIT: &str = r#"@id("hospital-b-treats")
permit (principal in SecNet::Organisation::"hospital-b", action == SecNet::Action::"read", resource in SecNet::Collection::"fhir/Condition")
when { context.purpose == "treatment" };"#;

fn world() -> World {
    let mut ledger = Ledger::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), ledger.key(HOLDER).unwrap().clone_for_test()).unwrap();
    let content = br#"{"resourceType":"Condition","id":"c1","code":{"text":"Diabetes"},"subject":{"reference":"Patient/p1"}}"#.to_vec();
    let p = ledger.key(PATIENT).unwrap();
    let (object, udi) = store
        .put(
            &PutRequest {
                owner: p.account(),
                owner_key: p.encryption_key(),
                source: "hospital-a".into(),
                object: "fhir/Condition/c1".into(),
                media_type: FHIR_JSON.into(),
            },
            content.as_slice(),
        )
        .unwrap();
    let data = udi.cid.hash();
    let holder = ledger.id(HOLDER);
    assert!(
        ledger
            .run(
                PATIENT,
                Call::RegisterData(RegisterData {
                    hash: data,
                    description: "condition".into(),
                    address: format!("pdc://hospital-a/{udi}"),
                    price: 50,
                    kind: DataKind::UserData,
                    holder,
                    holder_share_bps: 2_000,
                })
            )
            .is_applied()
    );
    assert!(
        ledger
            .run(CONSUMER, Call::SubscribeData { hash: data })
            .is_applied()
    );
    let r = ledger.run(
        CONSUMER,
        Call::RequestDataWithHash {
            hash: data,
            purpose: "treatment".into(),
            ttl_secs: 600,
        },
    );
    assert!(r.is_applied(), "{r:?}");
    let grant = ledger.state.grants().find(|g| g.data == data).unwrap().id;
    let engine = Engine::new(secnet_policy::DEFAULT_RISK_THRESHOLD).unwrap();
    let policies = engine.check(PERMIT).unwrap();
    World {
        resource: Resource {
            owner: ledger.id(PATIENT).to_string(),
            path: "fhir/Condition/c1".into(),
            media_type: FHIR_JSON.into(),
            schema: object.latest().unwrap().envelope.schema.clone(),
        },
        version: object.latest().unwrap().clone(),
        ledger,
        store,
        _dir: dir,
        engine,
        policies,
        data,
        content,
        grant,
    }
}

trait CloneForTest {
    fn clone_for_test(&self) -> Keypair;
}

impl CloneForTest for Keypair {
    fn clone_for_test(&self) -> Keypair {
        self.clone()
    }
}

impl World {
    fn token(&self) -> (AccessToken, String) {
        Gate::issue(
            self.ledger.key(HOLDER).unwrap(),
            &self.ledger.id(CONSUMER),
            &self.grant,
            &self.ledger.state,
            self.ledger.now(),
        )
        .unwrap()
    }

    fn fetch(
        &self,
        gate: &mut Gate,
        sealed: &str,
        proof: &FetchProof,
        now: u64,
    ) -> Result<secnet_pdc::access::Authorized, RefusalReason> {
        self.fetch_with(gate, sealed, proof, now, &RuleScorer)
    }

    fn fetch_with(
        &self,
        gate: &mut Gate,
        sealed: &str,
        proof: &FetchProof,
        now: u64,
        scorer: &dyn Scorer,
    ) -> Result<secnet_pdc::access::Authorized, RefusalReason> {
        gate.authorize(
            &self.ledger.id(HOLDER),
            &FetchAttempt {
                token: sealed,
                proof,
                method: "GET",
                path: "/v1/pdc/fetch",
                data: self.data,
            },
            &self.ledger.state,
            &self.engine,
            &self.policies,
            consumer_agent,
            &self.resource,
            scorer,
            now,
        )
        .map_err(|r| r.reason)
    }

    fn proof(&self, who: usize, token: &AccessToken, now: u64) -> FetchProof {
        FetchProof::sign(
            self.ledger.key(who).unwrap(),
            token,
            "GET",
            "/v1/pdc/fetch",
            now,
        )
    }
}

#[test]
fn a_permitted_fetch_delivers_data_the_consumer_can_check_against_the_ledger() {
    let w = world();
    let mut gate = Gate::new();
    let (token, sealed) = w.token();
    let now = w.ledger.now();
    let proof = FetchProof::from_header(&w.proof(CONSUMER, &token, now).to_header()).unwrap();
    let ok = w.fetch(&mut gate, &sealed, &proof, now).unwrap();
    assert_eq!(ok.decision.policies, vec!["hospital-b-treats"]);
    assert_eq!(
        ok.consumer_key,
        w.ledger.key(CONSUMER).unwrap().encryption_key()
    );

    // The holder re-seals the data key to the consumer's registered key and sends the blob.
    let sealed_key = w.store.reseal(&w.version, &ok.consumer_key).unwrap();
    let key = DataKey::open(
        &sealed_key,
        w.ledger.key(CONSUMER).unwrap(),
        w.version.blob_id(),
    )
    .unwrap();
    let registered = w.ledger.state.listing(&w.data).unwrap().hash;
    let mut plain = Vec::new();
    Decryptor::with_expected(
        w.store.blob(&w.version).unwrap(),
        &key,
        w.version.blob_id(),
        w.version.size,
        registered,
    )
    .read_to_end(&mut plain)
    .unwrap();
    assert_eq!(plain, w.content);
}

#[test]
fn fetches_with_an_expired_token_are_forgotten_like_any_other() {
    let w = world();
    let (token, sealed) = w.token();
    let mut gate = Gate::new();
    let later = token.expires_ms + 1;
    for _ in 0..10 {
        assert_eq!(
            w.fetch(&mut gate, &sealed, &w.proof(CONSUMER, &token, later), later)
                .unwrap_err(),
            RefusalReason::Expired
        );
    }
    assert_eq!(gate.remembered_nonces(), 10);
    // Past the clock window, they are forgotten: an expired token cannot pin the store.
    let much_later = later + 2 * secnet_pdc::access::MAX_SKEW_MS;
    assert_eq!(
        w.fetch(
            &mut gate,
            &sealed,
            &w.proof(CONSUMER, &token, much_later),
            much_later
        )
        .unwrap_err(),
        RefusalReason::Expired
    );
    assert_eq!(gate.remembered_nonces(), 1);
}

#[test]
fn every_bad_fetch_is_refused_with_its_reason() {
    let w = world();
    let now = w.ledger.now();
    let (token, sealed) = w.token();

    // Another key's token: a thief who stole it signs with their own key.
    let mut gate = Gate::new();
    assert_eq!(
        w.fetch(&mut gate, &sealed, &w.proof(THIEF, &token, now), now)
            .unwrap_err(),
        RefusalReason::WrongKey
    );

    // A replayed fetch.
    let proof = w.proof(CONSUMER, &token, now);
    w.fetch(&mut gate, &sealed, &proof, now).unwrap();
    assert_eq!(
        w.fetch(&mut gate, &sealed, &proof, now + 5).unwrap_err(),
        RefusalReason::Replay
    );
    // A proof from the past (outside the clock window).
    let old = w.proof(CONSUMER, &token, now - 120_000);
    assert_eq!(
        w.fetch(&mut gate, &sealed, &old, now).unwrap_err(),
        RefusalReason::Replay
    );

    // An expired token.
    let later = token.expires_ms + 1;
    assert_eq!(
        w.fetch(&mut gate, &sealed, &w.proof(CONSUMER, &token, later), later)
            .unwrap_err(),
        RefusalReason::Expired
    );

    // A forged token: one byte changed.
    let mut forged = sealed.clone().into_bytes();
    forged[30] = if forged[30] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(
        w.fetch(&mut gate, &forged, &w.proof(CONSUMER, &token, now), now)
            .unwrap_err(),
        RefusalReason::BadSignature
    );
    assert_eq!(
        w.fetch(&mut gate, "garbage!", &w.proof(CONSUMER, &token, now), now)
            .unwrap_err(),
        RefusalReason::BadSignature
    );

    // A token signed by someone other than the holder.
    let (_, self_issued) = {
        let mut t = token.clone();
        t.holder = w.ledger.id(THIEF);
        (t.clone(), t.seal(w.ledger.key(THIEF).unwrap()))
    };
    assert_eq!(
        w.fetch(
            &mut gate,
            &self_issued,
            &w.proof(CONSUMER, &token, now),
            now
        )
        .unwrap_err(),
        RefusalReason::BadSignature
    );

    // The detector flags a request.
    struct Paranoid;
    impl Scorer for Paranoid {
        fn score(&self, _: &RequestFeatures) -> u32 {
            990_000
        }
    }
    assert_eq!(
        w.fetch_with(
            &mut gate,
            &sealed,
            &w.proof(CONSUMER, &token, now),
            now,
            &Paranoid
        )
        .unwrap_err(),
        RefusalReason::DetectorFlagged
    );
}

#[test]
fn no_subscription_means_no_grant_and_no_token() {
    let mut w = world();
    // The thief never subscribed: the ledger refuses the request, so there is no grant.
    let r = w.ledger.run(
        THIEF,
        Call::RequestDataWithHash {
            hash: w.data,
            purpose: "treatment".into(),
            ttl_secs: 600,
        },
    );
    assert!(!r.is_applied());
    // And the consumer's grant does not issue a token to the thief.
    let thief = w.ledger.id(THIEF);
    assert_eq!(
        Gate::issue(
            w.ledger.key(HOLDER).unwrap(),
            &thief,
            &w.grant,
            &w.ledger.state,
            w.ledger.now()
        )
        .unwrap_err(),
        RefusalReason::NoGrant
    );
}

#[test]
fn withdrawal_and_a_policy_change_stop_access() {
    let mut w = world();
    let (token, sealed) = w.token();
    let mut gate = Gate::new();
    let now = w.ledger.now();

    // The owner's policy changes to deny.
    let permit = std::mem::replace(&mut w.policies, w.engine.check(&format!("{PERMIT}\n@id(\"no-more\") forbid (principal, action, resource in SecNet::Collection::\"fhir\");")).unwrap());
    assert_eq!(
        w.fetch(&mut gate, &sealed, &w.proof(CONSUMER, &token, now), now)
            .unwrap_err(),
        RefusalReason::PolicyDenied
    );
    w.policies = OwnerPolicies::empty();
    assert_eq!(
        w.fetch(&mut gate, &sealed, &w.proof(CONSUMER, &token, now), now)
            .unwrap_err(),
        RefusalReason::PolicyDenied
    );
    w.policies = permit;
    w.fetch(&mut gate, &sealed, &w.proof(CONSUMER, &token, now), now)
        .unwrap();

    // The owner withdraws the data.
    assert!(
        w.ledger
            .run(PATIENT, Call::WithdrawData { hash: w.data })
            .is_applied()
    );
    let now = w.ledger.now();
    assert_eq!(
        w.fetch(&mut gate, &sealed, &w.proof(CONSUMER, &token, now), now)
            .unwrap_err(),
        RefusalReason::Withdrawn
    );
    assert_eq!(
        Gate::issue(
            w.ledger.key(HOLDER).unwrap(),
            &w.ledger.id(CONSUMER),
            &w.grant,
            &w.ledger.state,
            now
        )
        .unwrap_err(),
        RefusalReason::Withdrawn
    );
}

#[test]
fn the_rule_scorer_flags_bursts_and_sweeps() {
    let calm = RequestFeatures {
        rate_per_min: 2,
        breadth_per_hour: 3,
        history: 10,
        token_age_s: 5,
        hour: 14,
        purpose: "treatment".into(),
    };
    assert_eq!(RuleScorer.score(&calm), 0);
    let sweep = RequestFeatures {
        rate_per_min: 300,
        breadth_per_hour: 900,
        history: 0,
        hour: 3,
        purpose: "curiosity".into(),
        ..calm
    };
    assert_eq!(RuleScorer.score(&sweep), 1_000_000);
}

#[test]
fn deliveries_and_refusals_are_recorded_on_the_ledger_and_provable() {
    use secnet_contract::LogEntry;
    use secnet_pdc::record::{Recorder, entry_for, record_tx};

    let mut w = world();
    let now = w.ledger.now();
    let (token, sealed) = w.token();
    let mut gate = Gate::new();
    let mut recorder = Recorder::new();
    let good = w.proof(CONSUMER, &token, now);
    for (journal, proof) in (0..).zip([&good, &good, &w.proof(THIEF, &token, now)]) {
        let result = gate.authorize(
            &w.ledger.id(HOLDER),
            &FetchAttempt {
                token: &sealed,
                proof,
                method: "GET",
                path: "/v1/pdc/fetch",
                data: w.data,
            },
            &w.ledger.state,
            &w.engine,
            &w.policies,
            consumer_agent,
            &w.resource,
            &RuleScorer,
            now,
        );
        recorder.push(journal, entry_for(&result, w.data, w.ledger.id(THIEF), now));
    }
    let batch = recorder.next_batch().unwrap();
    let holder_nonce = w.ledger.state.account(&w.ledger.id(HOLDER)).nonce;
    let tx = record_tx(
        w.ledger.key(HOLDER).unwrap(),
        "secnet-access",
        holder_nonce,
        batch.into_iter().map(|q| q.entry).collect(),
    );
    let tip = w.ledger.state.tip();
    let block = Block::new(
        tip.height + 1,
        tip.block_hash,
        tip.timestamp_ms + 1000,
        vec![tx],
    );
    let before = w.ledger.state.log().len();
    let outcome = w.ledger.apply(&block).unwrap();
    assert!(
        outcome.receipts[0].is_applied(),
        "{:?}",
        outcome.receipts[0]
    );
    assert_eq!(w.ledger.state.log().len(), before + 3);

    let decisions: Vec<AccessDecision> = outcome
        .log_leaves
        .iter()
        .map(|leaf| match LogEntry::from_bytes(leaf).unwrap() {
            LogEntry::Access { entry, .. } => entry.decision,
            other => panic!("unexpected leaf {other:?}"),
        })
        .collect();
    assert_eq!(
        decisions,
        vec![
            AccessDecision::Delivered,
            AccessDecision::Refused(RefusalReason::Replay),
            AccessDecision::Refused(RefusalReason::WrongKey),
        ]
    );
    // The consumer proves the delivery: an inclusion proof of its leaf in the log.
    let index = outcome.first_log_index;
    let log = &w.ledger.log;
    assert_eq!(log.root(), w.ledger.state.log().root());
    let proof = log.inclusion_proof(index, log.len()).unwrap();
    let leaf = secnet_merkle::log::leaf_hash(&outcome.log_leaves[0]);
    assert!(
        secnet_merkle::log::verify_inclusion(&leaf, index, log.len(), &proof, &log.root()).is_ok()
    );
}

#[test]
fn one_bad_entry_never_sinks_the_records_of_good_ones() {
    let w = world();
    let now = w.ledger.now();
    let (token, _) = w.token();
    let holder = w.ledger.id(HOLDER);
    let state = &w.ledger.state;
    let delivered = AccessEntry {
        data: w.data,
        grant: Some(token.grant),
        requester: w.ledger.id(CONSUMER),
        decision: AccessDecision::Delivered,
        score_ppm: 0,
        at_ms: now,
    };
    assert_eq!(
        recordable(state, holder, delivered.clone()),
        Ok(delivered.clone())
    );
    // A valid token presented for data this holder does not list: nothing to record.
    let elsewhere = AccessEntry {
        data: Hash::digest(b"elsewhere"),
        ..delivered.clone()
    };
    assert!(matches!(
        recordable(state, holder, elsewhere),
        Err(Rejection::GrantMismatch { .. })
    ));
    // A grant retired since: the access stays in the data's history, without it.
    let retired = AccessEntry {
        grant: Some(Hash::digest(b"retired")),
        ..delivered.clone()
    };
    assert_eq!(recordable(state, holder, retired).unwrap().grant, None);
    // Another holder cannot record accesses to this one's data.
    assert!(recordable(state, w.ledger.id(CONSUMER), delivered).is_err());
}
