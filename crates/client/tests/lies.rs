//! A lying node is caught: every kind of false answer fails with its typed error, and honest
//! answers verify. Everything runs in process: a contract state, validators' keys, and the
//! answers a node would send, altered the way an attacker would.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

use proptest::prelude::*;
use secnet_certified::{
    CertificateError, CertifiedHeader, CertifiedState, CommitteeVerifier, HexBytes, certify,
};
use secnet_client::{LightClient, VerifyError};
use secnet_contract::entries::Account;
use secnet_contract::{Sandbox, StateKey, StateProofError, StateValue};
use secnet_types::{
    Allocation, Block, BlockHeader, Call, DataKind, Genesis, Hash, Keypair, RegisterData,
    StateCommitment, Validator,
};

fn validator(i: u64) -> Keypair {
    Keypair::deterministic("lies-validator", i)
}

fn network(chain_id: &str, keys: &[Keypair]) -> Genesis {
    Genesis {
        chain_id: chain_id.into(),
        genesis_time_ms: 1_700_000_000_000,
        allocations: vec![Allocation {
            account: Keypair::deterministic("lies-user", 0).account(),
            balance: 1_000,
        }],
        validators: keys
            .iter()
            .enumerate()
            .map(|(i, k)| Validator {
                key: k.account(),
                address: format!("127.0.0.1:{}", 9000 + i),
                name: String::new(),
            })
            .collect(),
    }
}

/// A network of four validators, a state with an account and a listing, and a certified
/// header committing to that state's root.
struct World {
    genesis: Genesis,
    validators: Vec<Keypair>,
    sandbox: Sandbox,
    data: Hash,
}

impl World {
    fn new() -> World {
        let validators: Vec<Keypair> = (0..4).map(validator).collect();
        let genesis = network("secnet-lies", &validators);
        let users = vec![
            Keypair::deterministic("lies-user", 0),
            Keypair::deterministic("lies-user", 1),
        ];
        let mut sandbox = Sandbox::new("secnet-lies", users, 1_000);
        let data = Hash::digest(b"a blood panel");
        sandbox
            .run(
                0,
                Call::RegisterData(RegisterData {
                    hash: data,
                    description: "blood panel".into(),
                    address: "pdc://h/1".into(),
                    price: 10,
                    kind: DataKind::UserData,
                    holder: sandbox.account(1),
                    holder_share_bps: 1000,
                }),
            )
            .unwrap();
        sandbox
            .run(
                1,
                Call::Transfer {
                    to: sandbox.account(0),
                    amount: 25,
                },
            )
            .unwrap();
        World {
            genesis,
            validators,
            sandbox,
            data,
        }
    }

    fn height(&self) -> u64 {
        self.sandbox.state.tip().height
    }

    /// The header of the block after the tip, committing to the tip's root.
    fn header(&self) -> BlockHeader {
        let tip = self.sandbox.state.tip();
        Block::new(tip.height + 1, tip.block_hash, tip.timestamp_ms + 1, vec![])
            .committing(StateCommitment {
                from: tip.height,
                roots: vec![tip.state_root],
                receipts: vec![secnet_contract::receipts_root(&[])],
            })
            .header
    }

    fn certified_by(&self, genesis: &Genesis, signers: &[&Keypair]) -> CertifiedHeader {
        let header = self.header();
        CertifiedHeader {
            certificate: HexBytes(certify(genesis, signers, &header).unwrap()),
            header: HexBytes(header.to_bytes()),
        }
    }

    fn certified(&self) -> CertifiedHeader {
        let signers: Vec<&Keypair> = self.validators.iter().take(3).collect();
        self.certified_by(&self.genesis, &signers)
    }

    /// What an honest node answers about `keys`.
    fn answer(&self, keys: &[StateKey]) -> CertifiedState {
        let snapshot = self.sandbox.state.snapshot();
        CertifiedState {
            certified: self.certified(),
            height: self.height(),
            proofs: keys.iter().map(|k| snapshot.prove(k)).collect(),
        }
    }

    fn client(&self) -> LightClient {
        LightClient::new(&self.genesis).unwrap()
    }

    fn alice(&self) -> StateKey {
        StateKey::Account(self.sandbox.account(0))
    }
}

#[test]
fn an_honest_answer_verifies() {
    let world = World::new();
    let keys = [
        world.alice(),
        StateKey::Listing(world.data),
        StateKey::Grant(Hash::digest(b"no such grant")),
    ];
    let verified = world
        .client()
        .verify_state(&world.answer(&keys), &keys)
        .unwrap();
    assert_eq!(verified.height, world.height());
    assert_eq!(verified.certified_block, world.height() + 1);
    assert_eq!(verified.state_root, world.sandbox.state.state_root());
    match verified.get(&world.alice()) {
        Some(StateValue::Account(a)) => assert_eq!(a.balance, 1_025),
        other => panic!("expected alice's account, got {other:?}"),
    }
    match verified.get(&StateKey::Listing(world.data)) {
        Some(StateValue::Listing(l)) => assert_eq!(l.price, 10),
        other => panic!("expected the listing, got {other:?}"),
    }
    assert_eq!(verified.values[2].1, None, "absence is proven too");
}

#[test]
fn an_inflated_balance_is_caught() {
    let world = World::new();
    let keys = [world.alice()];
    let mut answer = world.answer(&keys);
    let inflated = StateValue::Account(Account {
        balance: 1_000_000,
        nonce: 1,
        encryption_key: None,
    });
    answer.proofs[0].value = Some(inflated.to_bytes());
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Proof {
                source: StateProofError::Merkle(_),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_forged_listing_or_grant_is_caught() {
    let world = World::new();
    // A listing that does not exist, claimed with the value of the real one under its key.
    let forged_hash = Hash::digest(b"never registered");
    let keys = [StateKey::Listing(forged_hash)];
    let real = world.answer(&[StateKey::Listing(world.data)]);
    let mut answer = world.answer(&keys);
    answer.proofs[0].value = real.proofs[0].value.clone();
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    assert!(matches!(err, VerifyError::Proof { .. }), "{err}");

    // A grant claimed where the state has none: the real proof is of absence.
    let grant = Hash::digest(b"a grant nobody was given");
    let keys = [StateKey::Grant(grant)];
    let mut answer = world.answer(&keys);
    answer.proofs[0].value = Some(vec![0u8; 90]);
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    assert!(matches!(err, VerifyError::Proof { .. }), "{err}");
}

#[test]
fn a_proof_for_another_key_is_caught() {
    let world = World::new();
    let bob = StateKey::Account(world.sandbox.account(1));
    let keys = [world.alice()];
    // Bob's proof, labelled as Bob's.
    let mut answer = world.answer(&keys);
    answer.proofs = world.answer(std::slice::from_ref(&bob)).proofs;
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    assert!(matches!(err, VerifyError::OtherKey { .. }), "{err}");
    // Bob's proof relabelled as Alice's.
    answer.proofs[0].key = world.alice();
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    assert!(matches!(err, VerifyError::Proof { .. }), "{err}");
}

#[test]
fn an_altered_root_is_caught() {
    let world = World::new();
    let keys = [world.alice()];
    // The root inside the proof.
    let mut answer = world.answer(&keys);
    answer.proofs[0].state_root = Hash::digest(b"another root");
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Proof {
                source: StateProofError::OtherRoot { .. },
                ..
            }
        ),
        "{err}"
    );
    // The root inside the header: the certificate no longer signs it.
    let mut answer = world.answer(&keys);
    let mut header = world.header();
    header.state.roots[0] = Hash::digest(b"another root");
    answer.certified.header = HexBytes(header.to_bytes());
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Certificate(CertificateError::OtherBlock { .. })
        ),
        "{err}"
    );
    // A height the header does not commit to.
    let mut answer = world.answer(&keys);
    answer.height += 1;
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    assert!(matches!(err, VerifyError::NotCommitted { .. }), "{err}");
}

#[test]
fn a_certificate_with_too_few_signatures_is_caught() {
    let world = World::new();
    let keys = [world.alice()];
    let mut answer = world.answer(&keys);
    let two: Vec<&Keypair> = world.validators.iter().take(2).collect();
    answer.certified = world.certified_by(&world.genesis, &two);
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    assert_eq!(
        err,
        VerifyError::Certificate(CertificateError::TooFewSignatures {
            got: 2,
            need: 3,
            validators: 4
        })
    );
}

#[test]
fn a_certificate_of_keys_outside_the_set_is_caught() {
    let world = World::new();
    let keys = [world.alice()];
    // Four other keys run a network with the same chain id and sign the same header.
    let outsiders: Vec<Keypair> = (0..4)
        .map(|i| Keypair::deterministic("outsider", i))
        .collect();
    let theirs = network("secnet-lies", &outsiders);
    let signers: Vec<&Keypair> = outsiders.iter().collect();
    let mut answer = world.answer(&keys);
    answer.certified = world.certified_by(&theirs, &signers);
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    match err {
        VerifyError::Certificate(CertificateError::BadSignatures(bad)) => {
            assert_eq!(bad.len(), 4, "every signature is named")
        }
        other => panic!("expected bad signatures, got {other}"),
    }
    // A set of another size is named as such.
    let five: Vec<Keypair> = (0..5)
        .map(|i| Keypair::deterministic("outsider", i))
        .collect();
    let theirs = network("secnet-lies", &five);
    let signers: Vec<&Keypair> = five.iter().collect();
    answer.certified = world.certified_by(&theirs, &signers);
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Certificate(CertificateError::WrongCommittee {
                certificate: 5,
                genesis: 4
            })
        ),
        "{err}"
    );
}

#[test]
fn an_answer_from_a_fork_of_another_genesis_is_caught() {
    let world = World::new();
    let keys = [world.alice()];
    // The same validators run a second network (another genesis): their certificates there
    // are valid signatures, under that network's namespace.
    let mut fork = world.genesis.clone();
    fork.chain_id = "secnet-fork".into();
    let signers: Vec<&Keypair> = world.validators.iter().collect();
    let mut answer = world.answer(&keys);
    answer.certified = world.certified_by(&fork, &signers);
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Certificate(CertificateError::BadSignatures(_))
        ),
        "{err}"
    );
    // The fork's own client accepts it: the signatures are real.
    LightClient::new(&fork)
        .unwrap()
        .verify_state(&answer, &keys)
        .unwrap();
}

#[test]
fn a_stale_answer_is_refused_once_a_newer_height_is_required() {
    let world = World::new();
    let keys = [world.alice()];
    let client = world.client();
    client.verify_state(&world.answer(&keys), &keys).unwrap();
    client.require_at_least(world.height() + 1);
    let err = client
        .verify_state(&world.answer(&keys), &keys)
        .unwrap_err();
    assert!(matches!(err, VerifyError::Stale { .. }), "{err}");
}

#[test]
fn missing_and_mislabelled_proofs_are_caught() {
    let world = World::new();
    let keys = [world.alice(), StateKey::LogHead];
    let mut answer = world.answer(&keys);
    answer.proofs.pop();
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    assert!(matches!(err, VerifyError::MissingProof { .. }), "{err}");
    let mut answer = world.answer(&keys);
    answer.proofs[0].height -= 1;
    let err = world.client().verify_state(&answer, &keys).unwrap_err();
    assert!(matches!(err, VerifyError::ProofHeight { .. }), "{err}");
}

#[test]
fn truncated_oversized_and_garbage_certificates_are_typed_errors() {
    let world = World::new();
    let committee = CommitteeVerifier::from_genesis(&world.genesis).unwrap();
    let good = world.certified();
    let mut truncated = good.certificate.0.clone();
    truncated.truncate(truncated.len() - 7);
    assert!(matches!(
        committee.verify(&good.header.0, &truncated),
        Err(CertificateError::MalformedCertificate(_))
    ));
    let oversized = vec![0u8; committee.max_certificate_len() + 1];
    assert!(matches!(
        committee.verify(&good.header.0, &oversized),
        Err(CertificateError::TooLarge { .. })
    ));
    assert!(matches!(
        committee.verify(&good.header.0[..10], &good.certificate.0),
        Err(CertificateError::MalformedHeader(_))
    ));
    let mut flipped = good.certificate.0.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(committee.verify(&good.header.0, &flipped).is_err());
    assert!(
        committee
            .verify(&good.header.0, &good.certificate.0)
            .is_ok()
    );
}

#[test]
fn a_genesis_without_validators_certifies_nothing() {
    let mut genesis = World::new().genesis;
    genesis.validators.clear();
    assert_eq!(
        LightClient::new(&genesis).unwrap_err(),
        CertificateError::NoValidators
    );
}

#[test]
fn following_headers_checks_each_link() {
    let world = World::new();
    let signers: Vec<&Keypair> = world.validators.iter().take(3).collect();
    let first = world.header();
    let child = Block::new(first.height + 1, first.hash(), first.timestamp_ms, vec![]).header;
    let stranger = Block::new(
        first.height + 1,
        Hash::digest(b"x"),
        first.timestamp_ms,
        vec![],
    )
    .header;
    let certify_header = |h: &BlockHeader| CertifiedHeader {
        header: HexBytes(h.to_bytes()),
        certificate: HexBytes(certify(&world.genesis, &signers, h).unwrap()),
    };
    let client = world.client();
    assert_eq!(
        client.follow(&first, &[certify_header(&child)]).unwrap(),
        child
    );
    assert!(matches!(
        client.follow(&first, &[certify_header(&stranger)]),
        Err(VerifyError::BrokenChain { .. })
    ));
}

#[test]
fn a_false_receipt_is_caught() {
    use secnet_certified::ReceiptProof;
    use secnet_types::{Outcome, Receipt, Rejection};
    let world = World::new();
    let client = world.client();
    let receipts: Vec<Receipt> = (0..5u8)
        .map(|i| Receipt {
            tx: Hash::digest(&[i]),
            outcome: Outcome::Applied { events: vec![] },
        })
        .collect();
    let root = secnet_contract::receipts_root(&receipts);
    let proof_of = |i: usize, receipt: &Receipt| ReceiptProof {
        height: 7,
        position: i as u64,
        count: receipts.len() as u64,
        receipt: HexBytes(receipt.to_bytes()),
        path: secnet_contract::receipt_proof(&receipts, i as u64)
            .unwrap()
            .iter()
            .map(|h| HexBytes(h.to_vec()))
            .collect(),
    };
    let tx = Hash::digest(&[3u8]);
    assert_eq!(
        client
            .verify_receipt(&tx, &proof_of(3, &receipts[3]), &root)
            .unwrap(),
        receipts[3]
    );
    // A refused transaction shown as applied, or the other way round.
    let flipped = Receipt {
        tx,
        outcome: Outcome::Rejected {
            rejection: Rejection::BadSignature,
        },
    };
    assert!(matches!(
        client.verify_receipt(&tx, &proof_of(3, &flipped), &root),
        Err(VerifyError::ReceiptProof { .. })
    ));
    // Another transaction's receipt.
    assert!(matches!(
        client.verify_receipt(&tx, &proof_of(2, &receipts[2]), &root),
        Err(VerifyError::OtherTransaction { .. })
    ));
    // The right receipt at the wrong position, or against another block's root.
    let mut moved = proof_of(3, &receipts[3]);
    moved.position = 4;
    assert!(client.verify_receipt(&tx, &moved, &root).is_err());
    assert!(
        client
            .verify_receipt(&tx, &proof_of(3, &receipts[3]), &Hash::digest(b"x"))
            .is_err()
    );
}

/// Frozen formats: the header encoding (with its state commitment) and the certificate.
/// Ed25519 signatures are deterministic, so the certificate's bytes are too.
#[test]
fn header_and_certificate_formats_are_frozen() {
    let world = World::new();
    let certified = world.certified();
    assert_eq!(
        Hash::digest(&certified.header.0).to_hex(),
        "46616902223a4a0be42349eb91eded6a099857546c55350825ec31e040408f29"
    );
    assert_eq!(
        Hash::digest(&certified.certificate.0).to_hex(),
        "747f1d7d2d3207406123f17e5f38db0fc2bd854c58f123913e99ac7babdf8870"
    );
}

proptest! {
    /// Arbitrary bytes never panic the verifier and never verify.
    #[test]
    fn garbage_never_verifies(header in prop::collection::vec(any::<u8>(), 0..400),
                              certificate in prop::collection::vec(any::<u8>(), 0..600)) {
        let validators: Vec<Keypair> = (0..4).map(validator).collect();
        let committee = CommitteeVerifier::from_genesis(&network("secnet-lies", &validators)).unwrap();
        prop_assert!(committee.verify(&header, &certificate).is_err());
    }
}

#[test]
fn a_checkpoint_not_cosigned_by_a_quorum_is_caught() {
    use secnet_certified::checkpoint::log_origin;
    use secnet_certified::{Checkpoint, CheckpointError, CosignedCheckpoint};
    let w = World::new();
    let client = w.client();
    let head = Checkpoint {
        origin: log_origin(&w.genesis.chain_id),
        tree_size: 5,
        root_hash: Hash::digest(b"log root"),
    };
    let cosigned = |signers: &[Keypair], cp: &Checkpoint| {
        CosignedCheckpoint {
            checkpoint: cp.clone(),
            cosignatures: signers
                .iter()
                .map(|k| cp.cosign(k, 1_700_000_000))
                .collect(),
        }
        .note(&w.genesis.chain_id)
    };
    // Honest: three of four validators.
    let honest = cosigned(&w.validators[..3], &head);
    let (checkpoint, cosigners) = client.verify_checkpoint(&honest).unwrap();
    assert_eq!((checkpoint, cosigners.len()), (head.clone(), 3));
    // One node's word, or two validators: not a quorum.
    assert!(matches!(
        client.verify_checkpoint(&cosigned(&w.validators[..2], &head)),
        Err(VerifyError::Checkpoint(
            CheckpointError::TooFewCosignatures { got: 2, need: 3 }
        ))
    ));
    // Keys outside the set never count.
    let outsiders: Vec<Keypair> = (10..14).map(validator).collect();
    assert!(matches!(
        client.verify_checkpoint(&cosigned(&outsiders, &head)),
        Err(VerifyError::Checkpoint(
            CheckpointError::TooFewCosignatures { got: 0, .. }
        ))
    ));
    // A larger log or another root under the same cosignatures.
    let grown = honest.replace("\n5\n", "\n6\n");
    assert!(matches!(
        client.verify_checkpoint(&grown),
        Err(VerifyError::Checkpoint(CheckpointError::BadSignature(_)))
    ));
    // The same validators' cosignatures of another network's log.
    let mut other = head.clone();
    other.origin = log_origin("another-network");
    let foreign = CosignedCheckpoint {
        checkpoint: other.clone(),
        cosignatures: w.validators[..3]
            .iter()
            .map(|k| other.cosign(k, 1_700_000_000))
            .collect(),
    }
    .note("another-network");
    assert!(matches!(
        client.verify_checkpoint(&foreign),
        Err(VerifyError::Checkpoint(CheckpointError::WrongOrigin { .. }))
    ));
}
