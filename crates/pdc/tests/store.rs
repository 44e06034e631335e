//! The encrypted object store on a real redb file and real files: round trips of every size,
//! versions, sealing to owner and consumer, tampering, deletion that leaves nothing
//! recoverable, and writes that fail without leaving anything behind.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

use proptest::prelude::*;
use secnet_pdc::crypto::{CHUNK_SIZE, DataKey};
use secnet_pdc::envelope::{FHIR_JSON, OCTETS, TEXT};
use secnet_pdc::import::import_bundle;
use secnet_pdc::store::{Decryptor, PutRequest, Store, StoreError};
use secnet_types::{Hash, Keypair};
use std::io::Read as _;
use std::path::Path;

fn holder() -> Keypair {
    Keypair::deterministic("hospital", 0)
}

fn patient() -> Keypair {
    Keypair::deterministic("patient", 0)
}

fn req(object: &str, media_type: &str) -> PutRequest {
    let p = patient();
    PutRequest {
        owner: p.account(),
        owner_key: p.encryption_key(),
        source: "hospital-a".into(),
        object: object.into(),
        media_type: media_type.into(),
    }
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Every file under `dir`, recursively, with its bytes.
fn all_bytes(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_content_round_trips(len in prop_oneof![0usize..300, (CHUNK_SIZE - 2)..(CHUNK_SIZE + 2), (2 * CHUNK_SIZE)..(3 * CHUNK_SIZE + 7)], seed: u8) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), holder()).unwrap();
        let data = content(len, seed);
        let (object, udi) = store.put(&req("blob/x", OCTETS), data.as_slice()).unwrap();
        let v = object.latest().unwrap();
        prop_assert_eq!(v.size, len as u64);
        prop_assert_eq!(udi.cid.hash(), Hash::digest(&data));
        let mut back = Vec::new();
        store.read(v).unwrap().read_to_end(&mut back).unwrap();
        prop_assert_eq!(&back, &data);
        prop_assert_eq!(std::fs::metadata(dir.path().join("blobs").join(format!("{}.bin", v.blob_id().to_hex()))).unwrap().len(), v.blob_size());
    }
}

#[test]
fn versions_stay_readable_and_are_found_by_udi_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), holder()).unwrap();
    let (_, v1) = store
        .put(&req("notes/visit", TEXT), &b"first visit"[..])
        .unwrap();
    let (object, v2) = store
        .put(&req("notes/visit", TEXT), &b"second visit"[..])
        .unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    assert_eq!(object.versions.len(), 2);
    for (udi, text) in [(&v1, "first visit"), (&v2, "second visit")] {
        let (_, version) = store.resolve(udi).unwrap();
        let mut s = String::new();
        store
            .read(&version)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, text);
        assert_eq!(store.by_hash(&udi.cid.hash()).unwrap(), vec![udi.clone()]);
    }
    // A UDI with the right version but another content id names nothing.
    let mut forged = v1.clone();
    forged.cid = v2.cid;
    assert!(matches!(
        store.resolve(&forged),
        Err(StoreError::NotFound(_))
    ));
    // Reopening keeps everything.
    drop(store);
    let store = Store::open(dir.path(), holder()).unwrap();
    assert_eq!(
        store
            .object(&patient().account(), "notes/visit")
            .unwrap()
            .versions
            .len(),
        2
    );
    assert_eq!(store.objects_of(&patient().account()).unwrap().len(), 1);
}

#[test]
fn the_owner_and_a_consumer_can_open_what_is_sealed_to_them_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), holder()).unwrap();
    let data = content(3 * CHUNK_SIZE / 2, 9);
    let (object, _) = store.put(&req("scan/1", OCTETS), data.as_slice()).unwrap();
    let v = object.latest().unwrap();

    // The owner opens the key sealed to them and decrypts the blob.
    let key = DataKey::open(&store.owner_sealed_key(v).unwrap(), &patient(), v.blob_id()).unwrap();
    let mut back = Vec::new();
    Decryptor::new(store.blob(v).unwrap(), &key, v)
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, data);

    // A consumer gets the key re-sealed to their registered key; nobody else can open it.
    let consumer = Keypair::deterministic("institute", 0);
    let sealed = store.reseal(v, &consumer.encryption_key()).unwrap();
    let key = DataKey::open(&sealed, &consumer, v.blob_id()).unwrap();
    let mut back = Vec::new();
    Decryptor::with_expected(
        store.blob(v).unwrap(),
        &key,
        v.blob_id(),
        v.size,
        Hash::digest(&data),
    )
    .read_to_end(&mut back)
    .unwrap();
    assert_eq!(back, data);
    assert!(DataKey::open(&sealed, &Keypair::deterministic("thief", 0), v.blob_id()).is_err());

    // The plaintext is nowhere on disk.
    for (path, bytes) in all_bytes(dir.path()) {
        assert!(
            !contains(&bytes, &data[..64]),
            "plaintext in {}",
            path.display()
        );
    }
}

#[test]
fn a_flipped_byte_on_disk_is_detected_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), holder()).unwrap();
    let data = content(2 * CHUNK_SIZE + 100, 1);
    let (object, _) = store.put(&req("scan/2", OCTETS), data.as_slice()).unwrap();
    let v = object.latest().unwrap().clone();
    store.verify(&object, &v).unwrap();

    let path = dir
        .path()
        .join("blobs")
        .join(format!("{}.bin", v.blob_id().to_hex()));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[CHUNK_SIZE + 16 + 5] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = store.verify(&object, &v).unwrap_err().to_string();
    assert!(err.contains("chunk 1 failed authentication"), "{err}");
    // A reader hands out the intact first chunk, then fails: never the altered bytes.
    let mut r = store.read(&v).unwrap();
    let mut out = Vec::new();
    let e = r.read_to_end(&mut out).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(out, data[..CHUNK_SIZE]);

    // A truncated blob is refused too.
    std::fs::write(&path, &bytes[..CHUNK_SIZE + 16]).unwrap();
    assert!(store.verify(&object, &v).is_err());
}

#[test]
fn deleted_data_cannot_be_recovered_from_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), holder()).unwrap();
    let data = content(100_000, 3);
    store.put(&req("lab/7", OCTETS), data.as_slice()).unwrap();
    let (object, _) = store.put(&req("lab/7", OCTETS), &data[..5000]).unwrap();
    let sealed: Vec<Vec<u8>> = object
        .versions
        .iter()
        .map(|v| store.owner_sealed_key(v).unwrap().to_bytes().to_vec())
        .collect();
    let ciphertext_sample = std::fs::read(
        dir.path()
            .join("blobs")
            .join(format!("{}.bin", object.versions[0].blob_id().to_hex())),
    )
    .unwrap()[..64]
        .to_vec();

    let deleted = store.delete(&patient().account(), "lab/7").unwrap();
    assert_eq!(deleted.versions.len(), 2);
    assert!(matches!(
        store.object(&patient().account(), "lab/7"),
        Err(StoreError::NotFound(_))
    ));
    drop(store);
    assert_eq!(files_in(&dir.path().join("keys")), 0);
    assert_eq!(files_in(&dir.path().join("blobs")), 0);
    for (path, bytes) in all_bytes(dir.path()) {
        for s in &sealed {
            assert!(
                !contains(&bytes, s),
                "a sealed key survives in {}",
                path.display()
            );
        }
        assert!(
            !contains(&bytes, &ciphertext_sample),
            "ciphertext survives in {}",
            path.display()
        );
        assert!(
            !contains(&bytes, &data[..64]),
            "plaintext in {}",
            path.display()
        );
    }
}

#[test]
fn refused_writes_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), holder())
        .unwrap()
        .with_max_object_bytes(CHUNK_SIZE as u64 * 2);
    let cases: Vec<(PutRequest, Vec<u8>, &str)> = vec![
        (
            req("fhir/Observation/1", FHIR_JSON),
            br#"{"resourceType":"Observation","code":{}}"#.to_vec(),
            "Observation.status is required",
        ),
        (
            req("fhir/Observation/2", FHIR_JSON),
            b"{not json".to_vec(),
            "not valid JSON",
        ),
        (
            req("x/1", "application/x-shockwave-flash"),
            b"...".to_vec(),
            "unknown media type",
        ),
        (
            req("x/2", TEXT),
            [b"fine ".as_slice(), &[0xc3, 0x28]].concat(),
            "invalid UTF-8 at byte 5",
        ),
        (
            req("x/3", OCTETS),
            content(CHUNK_SIZE * 2 + 1, 0),
            "object of more than",
        ),
        (req("../escape", OCTETS), b"x".to_vec(), "bad name"),
    ];
    for (r, payload, expected) in cases {
        let err = store.put(&r, payload.as_slice()).unwrap_err().to_string();
        assert!(err.contains(expected), "{}: {err}", r.object);
    }
    assert_eq!(files_in(&dir.path().join("keys")), 0);
    assert_eq!(files_in(&dir.path().join("blobs")), 0);
    assert!(store.objects_of(&patient().account()).unwrap().is_empty());
}

#[test]
fn files_of_an_interrupted_write_are_swept_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), holder()).unwrap();
    let (object, _) = store.put(&req("kept", OCTETS), &b"kept"[..]).unwrap();
    drop(store);
    // What a write killed between its file writes and its commit leaves.
    std::fs::write(
        dir.path()
            .join("blobs/00112233445566778899aabbccddeeff.tmp"),
        b"partial",
    )
    .unwrap();
    std::fs::write(
        dir.path()
            .join("blobs/00112233445566778899aabbccddeeff.bin"),
        b"orphan",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("keys/00112233445566778899aabbccddeeff.key"),
        b"orphan",
    )
    .unwrap();
    let store = Store::open(dir.path(), holder()).unwrap();
    assert_eq!(files_in(&dir.path().join("keys")), 1);
    assert_eq!(files_in(&dir.path().join("blobs")), 1);
    let v = object.latest().unwrap();
    let mut s = String::new();
    store.read(v).unwrap().read_to_string(&mut s).unwrap();
    assert_eq!(s, "kept");
}

#[test]
fn a_bundle_is_stored_as_one_object_per_resource() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), holder()).unwrap();
    let bundle = serde_json::json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001",
             "resource": {"resourceType": "Patient", "gender": "male", "birthDate": "1970-01-02"}},
            {"fullUrl": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000002",
             "resource": {"resourceType": "Condition", "code": {"text": "Asthma"},
                          "subject": {"reference": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001"}}},
            {"fullUrl": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000003",
             "resource": {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                          "medicationCodeableConcept": {"text": "Salbutamol"},
                          "subject": {"reference": "urn:uuid:aaaaaaaa-0000-4000-8000-000000000001"}}}
        ]
    });
    let p = patient();
    let imported = import_bundle(
        &store,
        p.account(),
        p.encryption_key(),
        "hospital-a",
        &serde_json::to_vec(&bundle).unwrap(),
    )
    .unwrap();
    assert_eq!(imported.objects.len(), 3);
    assert_eq!(imported.counts["Condition"], 1);
    let condition = &imported.objects[1];
    assert_eq!(
        condition.object,
        "fhir/Condition/aaaaaaaa-0000-4000-8000-000000000002"
    );
    assert_eq!(condition.owner, p.account());
    let (_, v) = store.resolve(condition).unwrap();
    assert_eq!(
        v.envelope.schema,
        "http://hl7.org/fhir/StructureDefinition/Condition"
    );
    assert_eq!(v.envelope.schema_version, "4.0.1");
    let mut json = String::new();
    store.read(&v).unwrap().read_to_string(&mut json).unwrap();
    let resource: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        resource["subject"]["reference"],
        "Patient/aaaaaaaa-0000-4000-8000-000000000001"
    );

    // One bad resource refuses the whole Bundle.
    let mut bad = bundle.clone();
    bad["entry"][2]["resource"]["intent"] = serde_json::json!("wish");
    bad["entry"][0]["fullUrl"] = serde_json::json!("urn:uuid:bbbbbbbb-0000-4000-8000-000000000001");
    let err = import_bundle(
        &store,
        p.account(),
        p.encryption_key(),
        "hospital-a",
        &serde_json::to_vec(&bad).unwrap(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("Bundle.entry[2].resource.intent"),
        "{err}"
    );
    assert_eq!(store.objects_of(&p.account()).unwrap().len(), 3);
}

/// The real synthetic patients in `../shared/data/fhir/bundles`, when present: every Bundle
/// validates and decomposes with one Patient.
#[test]
fn the_shared_fhir_bundles_validate_when_present() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/fhir/bundles");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("skipped: {} not present", dir.display());
        return;
    };
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let d = secnet_pdc::fhir::decompose(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(d.patient.is_some(), "{}", path.display());
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn policies_and_the_agent_directory_persist() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), holder()).unwrap();
    let p = patient().account();
    assert_eq!(store.policy(&p).unwrap(), None);
    store
        .set_policy(&p, "permit (principal, action, resource);")
        .unwrap();
    let unknown = store.agent(&p).unwrap();
    assert_eq!(unknown.kind, secnet_policy::AgentKind::User);
    assert!(unknown.member_of.is_empty());
    let doctor = secnet_policy::Agent {
        kind: secnet_policy::AgentKind::User,
        account: holder().account().to_string(),
        name: "Dr. B".into(),
        member_of: vec![secnet_policy::AgentRef {
            kind: secnet_policy::AgentKind::Organisation,
            account: "hospital-b".into(),
        }],
    };
    store.set_agent(&doctor).unwrap();
    drop(store);
    let store = Store::open(dir.path(), holder()).unwrap();
    assert_eq!(
        store.policy(&p).unwrap().as_deref(),
        Some("permit (principal, action, resource);")
    );
    assert_eq!(store.agent(&holder().account()).unwrap(), doctor);
}

#[test]
fn the_access_journal_survives_a_reopen_in_order_until_forgotten() {
    use secnet_types::{AccessDecision, AccessEntry, AccountId, RefusalReason};
    let dir = tempfile::tempdir().unwrap();
    let entry = |i: u64| AccessEntry {
        data: Hash::digest(&i.to_be_bytes()),
        grant: None,
        requester: AccountId([9; 32]),
        decision: if i.is_multiple_of(2) {
            AccessDecision::Delivered
        } else {
            AccessDecision::Refused(RefusalReason::PolicyDenied)
        },
        score_ppm: 10,
        at_ms: 1_700_000_000_000 + i,
    };
    let numbers: Vec<u64> = {
        let store = Store::open(dir.path(), holder()).unwrap();
        (0..5)
            .map(|i| store.journal_access(&entry(i)).unwrap())
            .collect()
    };
    assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    let store = Store::open(dir.path(), holder()).unwrap();
    let journaled = store.unrecorded().unwrap();
    assert_eq!(
        journaled,
        numbers
            .iter()
            .copied()
            .zip((0..5).map(entry))
            .map(|(n, e)| (n, e, None))
            .collect::<Vec<_>>()
    );
    // A submitted batch is noted with its transaction, across a reopen.
    let tx = Hash::digest(b"the RecordAccess transaction");
    store.mark_submitted(&numbers[1..3], &tx).unwrap();
    drop(store);
    let store = Store::open(dir.path(), holder()).unwrap();
    let submitted: Vec<Option<Hash>> = store
        .unrecorded()
        .unwrap()
        .into_iter()
        .map(|(_, _, tx)| tx)
        .collect();
    assert_eq!(submitted, vec![None, Some(tx), Some(tx), None, None]);
    store.forget_recorded(&numbers[..3]).unwrap();
    let rest: Vec<(u64, Option<Hash>)> = store
        .unrecorded()
        .unwrap()
        .into_iter()
        .map(|(n, _, tx)| (n, tx))
        .collect();
    assert_eq!(rest, vec![(numbers[3], None), (numbers[4], None)]);
    // New entries never take a number still journaled.
    let next = store.journal_access(&entry(9)).unwrap();
    assert!(next > numbers[4]);
}
