//! The Private Data Center end to end, over four real validator processes, driven by the
//! `secnet` binary: hospital A runs validator 0 and holds a patient's records; hospital B
//! (an account using validator 1) subscribes, asks for access and fetches. A permitted fetch
//! succeeds, is recorded and is provable; each refusal (no subscription, default deny, an
//! expired token, another key's token, a replayed fetch, a policy changed to deny, a withdrawn
//! registration) is recorded and the data never leaves; a byte flipped on hospital A's disk is
//! detected by the consumer; a deleted record cannot be found in hospital A's data directory.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use common::{Validators, fails, height, init_testnet, json, ok, path, start_validator, wait_for};
use secnet_pdc::access::{AccessToken, FetchProof};
use secnet_pdc::auth::RequestAuth;
use secnet_types::{AccountId, Keypair};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

const PATIENT_ID: &str = "7d0f6a5e-2b1c-4c8e-9a3d-5e6f7a8b9c0d";
const CONDITION_ID: &str = "3b9e1c2d-4f5a-4b6c-8d7e-9f0a1b2c3d4e";
const DIAGNOSIS: &str = "Moderate persistent asthma, nocturnal symptoms";

fn bundle() -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": format!("urn:uuid:{PATIENT_ID}"),
                "resource": {
                    "resourceType": "Patient",
                    "name": [{"family": "Rivera", "given": ["Ana"]}],
                    "gender": "female",
                    "birthDate": "1984-03-09"
                },
                "request": {"method": "POST", "url": "Patient"}
            },
            {
                "fullUrl": format!("urn:uuid:{CONDITION_ID}"),
                "resource": {
                    "resourceType": "Condition",
                    "subject": {"reference": format!("urn:uuid:{PATIENT_ID}")},
                    "code": {"text": DIAGNOSIS},
                    "onsetDateTime": "2019-05-02T10:00:00+02:00"
                },
                "request": {"method": "POST", "url": "Condition"}
            }
        ]
    })
}

struct Net {
    dir: PathBuf,
    a: String,
    b: String,
}

impl Net {
    fn key(&self, name: &str) -> String {
        path(&self.dir.join("accounts").join(format!("{name}.key"))).to_string()
    }

    fn account(&self, name: &str) -> AccountId {
        ok(&["keys", "show", &self.key(name)])
            .trim()
            .parse()
            .unwrap()
    }

    fn keypair(&self, name: &str) -> Keypair {
        secnet_node::keyfile::read_key(Path::new(&self.key(name))).unwrap()
    }
}

/// What hospital A's node answers to raw requests (for what the CLI never sends).
struct Raw {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    holder: AccountId,
}

impl Raw {
    fn token(&self, key: &Keypair, grant: &str) -> (String, AccessToken) {
        let body = serde_json::to_vec(&json!({ "grant": grant })).unwrap();
        let auth = RequestAuth::sign(key, &self.holder, "POST", "/v1/pdc/tokens", &body, now_ms());
        let t: Value = self.rt.block_on(async {
            self.http
                .post(format!("{}/v1/pdc/tokens", self.base))
                .header("secnet-auth", auth.to_header())
                .body(body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        });
        let sealed = t["token"]
            .as_str()
            .unwrap_or_else(|| panic!("{t}"))
            .to_string();
        let token = AccessToken::open(&sealed, &self.holder).unwrap();
        (sealed, token)
    }

    /// A fetch with a sealed token and a signed proof.
    fn fetch(&self, token: &str, proof: &str, data: &str) -> (u16, Value) {
        self.rt.block_on(async {
            let r = self
                .http
                .get(format!("{}/v1/pdc/data/{data}", self.base))
                .header("secnet-token", token)
                .header("secnet-fetch", proof)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        })
    }
}

fn now_ms() -> u64 {
    secnet_node::datadir::now_ms()
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn two_hospitals_and_a_patient_share_only_as_the_ledger_and_the_owner_allow() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let genesis = path(&d.join("genesis.json")).to_string();
    let api = init_testnet(d, 4, 3);
    let _nodes = Validators(
        (0..4)
            .map(|i| Some(start_validator(d, i, "node.log")))
            .collect(),
    );
    let net = Net {
        dir: d.to_path_buf(),
        a: format!("https://127.0.0.1:{api}"),
        b: format!("https://127.0.0.1:{}", api + 1),
    };
    wait_for("the validators to serve", Duration::from_secs(60), || {
        height(&net.a) >= 1 && height(&net.b) >= 1
    });
    let (patient, hospital_b, thief) = ("account0", "account1", "account2");
    let raw = Raw {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        http: common::http(),
        base: net.a.clone(),
        holder: secnet_node::keyfile::read_key(&d.join("node0").join("node.key"))
            .unwrap()
            .account(),
    };

    // Everyone publishes an encryption key (through either hospital's node).
    for (who, via) in [(patient, &net.a), (hospital_b, &net.b), (thief, &net.b)] {
        ok(&[
            "keys",
            "publish",
            "--key",
            &net.key(who),
            "--node",
            via,
            "--genesis",
            &genesis,
        ]);
    }

    // The patient imports a Bundle at hospital A: one object per resource.
    let bundle_file = d.join("bundle.json");
    std::fs::write(&bundle_file, serde_json::to_vec(&bundle()).unwrap()).unwrap();
    let imported = json(&[
        "data",
        "import-fhir",
        "--key",
        &net.key(patient),
        "--source",
        "hospital-a",
        path(&bundle_file),
        "--node",
        &net.a,
    ]);
    assert_eq!(
        imported["counts"],
        json!({"Condition": 1, "Patient": 1}),
        "{imported}"
    );
    let condition = format!("fhir/Condition/{CONDITION_ID}");

    // Malformed FHIR stores nothing and says why.
    let bad = d.join("bad.json");
    std::fs::write(&bad, br#"{"resourceType":"Condition","code":{}}"#).unwrap();
    let err = fails(&[
        "data",
        "put",
        "--key",
        &net.key(patient),
        "--path",
        "fhir/Condition/bad",
        "--media-type",
        "application/fhir+json",
        path(&bad),
        "--node",
        &net.a,
    ]);
    assert!(err.contains("Condition.subject is required"), "{err}");

    // Registered on the ledger, held by hospital A's node.
    let reg = json(&[
        "data",
        "register",
        "--key",
        &net.key(patient),
        "--path",
        &condition,
        "--price",
        "50",
        "--description",
        "asthma diagnosis",
        "--node",
        &net.a,
        "--genesis",
        &genesis,
    ]);
    assert_eq!(reg["receipt"]["outcome"]["status"], "applied", "{reg}");
    let shown = json(&[
        "data",
        "show",
        "--key",
        &net.key(patient),
        "--path",
        &condition,
        "--node",
        &net.a,
    ]);
    let data = shown["versions"][0]["hash"].as_str().unwrap().to_string();

    // No subscription: the contract refuses the request; no grant exists.
    let err = fails(&[
        "data",
        "request",
        "--key",
        &net.key(hospital_b),
        "--hash",
        &data,
        "--node",
        &net.b,
        "--genesis",
        &genesis,
    ]);
    assert!(err.contains("refused"), "{err}");

    // Hospital B subscribes and asks, through its own validator.
    json(&[
        "data",
        "subscribe",
        "--key",
        &net.key(hospital_b),
        "--hash",
        &data,
        "--node",
        &net.b,
        "--genesis",
        &genesis,
    ]);
    let request = |ttl: &str| -> String {
        let r = json(&[
            "data",
            "request",
            "--key",
            &net.key(hospital_b),
            "--hash",
            &data,
            "--purpose",
            "treatment",
            "--ttl-secs",
            ttl,
            "--node",
            &net.b,
            "--genesis",
            &genesis,
        ]);
        r["grant"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_string()
    };
    let grant = request("600");
    let out = d.join("fetched.json");
    let fetch = |grant: &str, out: &Path| {
        common::run(&[
            "data",
            "fetch",
            "--key",
            &net.key(hospital_b),
            "--grant",
            grant,
            "--out",
            path(out),
            "--node",
            &net.a,
            "--genesis",
            &genesis,
        ])
    };

    // Default deny: refused, and nothing written.
    let r = fetch(&grant, &out);
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("policy-denied"));
    assert!(!out.exists());

    // The patient permits hospital B to read conditions for treatment.
    let policy = d.join("policy.cedar");
    let set_policy = |text: String| -> serde_json::Value {
        std::fs::write(&policy, text).unwrap();
        json(&[
            "data",
            "policy",
            "--key",
            &net.key(patient),
            "--set",
            path(&policy),
            "--node",
            &net.a,
        ])
    };
    let set = set_policy(format!(
        "@id(\"hospital-b-treats\")\npermit (principal == SecNet::User::\"{}\", action == SecNet::Action::\"read\", resource in SecNet::Collection::\"fhir/Condition\") when {{ context.purpose == \"treatment\" }};\n",
        net.account(hospital_b)
    ));
    assert_eq!(set["policies"], json!(["hospital-b-treats"]));

    // The permitted fetch: decrypted, checked against the ledger, written.
    let r = fetch(&grant, &out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let got: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(got["code"]["text"], DIAGNOSIS);
    assert_eq!(got["subject"]["reference"], format!("Patient/{PATIENT_ID}"));

    // Another key's token and a replayed fetch, sent raw: refused with their reasons.
    let b_key = net.keypair(hospital_b);
    let (sealed, token) = raw.token(&b_key, &grant);
    let fetch_path = format!("/v1/pdc/data/{data}");
    let stolen = FetchProof::sign(&net.keypair(thief), &token, "GET", &fetch_path, now_ms());
    let (status, body) = raw.fetch(&sealed, &stolen.to_header(), &data);
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("wrong-key")),
        "{body}"
    );
    let proof = FetchProof::sign(&b_key, &token, "GET", &fetch_path, now_ms()).to_header();
    let (status, body) = raw.fetch(&sealed, &proof, &data);
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw.fetch(&sealed, &proof, &data);
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("replay")),
        "{body}"
    );
    // The thief cannot even get a token for hospital B's grant.
    let err = fails(&[
        "data",
        "fetch",
        "--key",
        &net.key(thief),
        "--grant",
        &grant,
        "--node",
        &net.a,
        "--genesis",
        &genesis,
    ]);
    assert!(err.contains("was issued to"), "{err}");

    // An expired token: a grant of 10 s (a shorter one may lapse on a slow machine before
    // its token is issued), fetched after it lapsed.
    let short = request("10");
    let (sealed_short, token_short) = raw.token(&b_key, &short);
    std::thread::sleep(Duration::from_millis(
        token_short.expires_ms.saturating_sub(now_ms()) + 200,
    ));
    let proof = FetchProof::sign(&b_key, &token_short, "GET", &fetch_path, now_ms()).to_header();
    let (status, body) = raw.fetch(&sealed_short, &proof, &data);
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("expired")),
        "{body}"
    );

    // A byte flipped on hospital A's disk: the consumer detects it and writes nothing.
    let blob_dir = d.join("node0").join("pdc").join("blobs");
    let flip_all = || {
        for e in std::fs::read_dir(&blob_dir).unwrap() {
            let p = e.unwrap().path();
            let mut bytes = std::fs::read(&p).unwrap();
            bytes[40] ^= 0x01;
            std::fs::write(&p, &bytes).unwrap();
        }
    };
    flip_all();
    let tampered_out = d.join("tampered.json");
    let r = fetch(&grant, &tampered_out);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("integrity failure"), "{err}");
    assert!(!tampered_out.exists());
    flip_all();

    // The patient changes the policy to deny: refused.
    set_policy(format!(
        "@id(\"no-one-else\")\nforbid (principal == SecNet::User::\"{}\", action, resource);\n",
        net.account(hospital_b)
    ));
    let r = fetch(&grant, &out);
    assert!(String::from_utf8_lossy(&r.stderr).contains("policy-denied"));

    // Withdrawn: refused even with a valid token, whatever the policy.
    json(&[
        "data",
        "withdraw",
        "--key",
        &net.key(patient),
        "--hash",
        &data,
        "--node",
        &net.a,
        "--genesis",
        &genesis,
    ]);
    let proof = FetchProof::sign(&b_key, &token, "GET", &fetch_path, now_ms()).to_header();
    let (status, body) = raw.fetch(&sealed, &proof, &data);
    assert_eq!(
        (status, body["reason"].as_str()),
        (403, Some("withdrawn")),
        "{body}"
    );

    // Every decision of an authenticated request reached the ledger: the owner's history
    // lists them, each with a proof that verifies; the consumer proves its own accesses.
    // The stolen token and the replay authenticated nobody (anyone who saw the token or the
    // request could send them): they are counted and recorded once a minute, naming nobody.
    let wanted = ["policy_denied", "expired", "withdrawn"];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let history = loop {
        let h = json(&[
            "data",
            "history",
            "--key",
            &net.key(patient),
            "--json",
            "--node",
            &net.a,
            "--genesis",
            &genesis,
        ]);
        let found = reasons(&h);
        if wanted.iter().all(|r| found.iter().any(|f| f == r)) {
            break h;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "refusals missing from the history: found {found:?} in {h}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    // Once the refusals are certified, so are the deliveries logged before them.
    assert_eq!(history["delivered"], 3, "{history}");
    assert_eq!(history["verified"], true, "{history}");
    let certified = history["certified_log_size"].as_u64().unwrap();
    for e in history["entries"].as_array().unwrap() {
        let proof: secnet_ledger::InclusionProof =
            serde_json::from_value(e["proof"].clone()).unwrap();
        proof.verify().unwrap();
        assert!(
            e["index"].as_u64().unwrap() < certified,
            "an entry past the certified log is shown as verified: {e}"
        );
    }
    for i in history["pending_indices"].as_array().unwrap() {
        assert!(i.as_u64().unwrap() >= certified, "{history}");
    }
    let fhir = json(&[
        "data",
        "history",
        "--key",
        &net.key(patient),
        "--fhir",
        "--node",
        &net.a,
    ]);
    // The same request, signed for hospital B's node, is refused by A's: a holder cannot
    // replay at another what a client sent it.
    let b_account = secnet_node::keyfile::read_key(&net.dir.join("node1").join("node.key"))
        .unwrap()
        .account()
        .to_string();
    let err = fails(&[
        "data",
        "history",
        "--key",
        &net.key(patient),
        "--node",
        &net.a,
        "--genesis",
        &genesis,
        "--node-account",
        &b_account,
    ]);
    assert!(
        err.contains(&format!("signed for holder {b_account}")),
        "{err}"
    );
    assert_eq!(fhir["resourceType"], "Bundle");
    assert!(
        fhir["entry"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["resource"]["resourceType"] == "AuditEvent")
    );
    let verified = json(&[
        "data",
        "verify",
        "--grant",
        &grant,
        "--file",
        path(&out),
        "--node",
        &net.b,
        "--genesis",
        &genesis,
    ]);
    assert_eq!(verified["verified"], true, "{verified}");
    assert_eq!(verified["file"]["matches_registered"], true);
    assert!(
        verified["records"].as_array().unwrap().len() >= 4,
        "{verified}"
    );

    // Deleted over HTTP: no key, chunk or plaintext of the record is left in hospital A's
    // data directory.
    let pdc_dir = d.join("node0").join("pdc");
    let before: Vec<(PathBuf, Vec<u8>)> = files(&pdc_dir.join("blobs"))
        .into_iter()
        .chain(files(&pdc_dir.join("keys")))
        .collect();
    let deleted = json(&[
        "data",
        "delete",
        "--key",
        &net.key(patient),
        "--path",
        &condition,
        "--node",
        &net.a,
    ]);
    assert_eq!(deleted["versions"], 1, "{deleted}");
    let gone: Vec<&Vec<u8>> = before
        .iter()
        .filter(|(p, _)| !p.exists())
        .map(|(_, bytes)| bytes)
        .collect();
    assert_eq!(
        gone.len(),
        2,
        "the record's blob and its sealed keys are removed"
    );
    let remaining = files(&d.join("node0"));
    for (file, bytes) in &remaining {
        assert!(
            !contains(bytes, DIAGNOSIS.as_bytes()),
            "{} holds the plaintext",
            file.display()
        );
        for g in &gone {
            let piece = &g[..g.len().min(64)];
            assert!(
                !contains(bytes, piece),
                "{} still holds part of the deleted record",
                file.display()
            );
        }
    }
}

/// The refusal reasons in an owner's history.
fn reasons(history: &Value) -> Vec<String> {
    history["entries"]
        .as_array()
        .map(|es| {
            es.iter()
                .filter_map(|e| e["entry"]["entry"]["decision"]["reason"].as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
