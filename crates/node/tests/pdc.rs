//! The Private Data Center over HTTP on loopback, on a real single-node ledger: a patient
//! stores a record at a hospital's node, registers it, and writes a policy; a consumer
//! subscribes, requests, gets a token and fetches with signed requests. The permitted fetch
//! decrypts to content matching the registered hash; refusals say why; every decision is
//! recorded on the ledger and shows in the owner's history with an inclusion proof.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use base64::Engine as _;
use secnet_node::dev::ProducerConfig;
use secnet_pdc::access::{AccessToken, FetchProof};
use secnet_pdc::auth::RequestAuth;
use secnet_pdc::crypto::{BlobId, DataKey, SealedKey};
use secnet_pdc::store::Decryptor;
use secnet_types::{AccountId, Call, DataKind, Genesis, Hash, Keypair, RegisterData, Transaction};
use serde_json::{Value, json};
use std::io::Read as _;
use std::time::Duration;

const CHAIN: &str = "secnet-pdc-test";

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    /// The holder signed requests are meant for.
    holder: AccountId,
}

fn now_ms() -> u64 {
    secnet_node::datadir::now_ms()
}

impl Client {
    async fn signed(
        &self,
        key: &Keypair,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> (u16, Value) {
        let auth = RequestAuth::sign(key, &self.holder, method.as_str(), path, &body, now_ms());
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("secnet-auth", auth.to_header())
            .header("content-digest", secnet_pdc::auth::content_digest(&body))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn tx(&self, key: &Keypair, nonce: u64, call: Call) -> Hash {
        let tx = Transaction {
            chain_id: CHAIN.into(),
            sender: key.account(),
            nonce,
            call,
        }
        .sign(key);
        let r: Value = self
            .http
            .post(format!("{}/v1/tx", self.base))
            .json(&json!({ "tx": hex::encode(tx.to_bytes()) }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let hash: Hash = r["hash"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .parse()
            .unwrap();
        let mut s = Value::Null;
        for _ in 0..200 {
            s = self
                .http
                .get(format!("{}/v1/tx/{hash}", self.base))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if s["status"]["status"] == "committed" {
                assert_eq!(
                    s["status"]["receipt"]["outcome"]["status"], "applied",
                    "{s}"
                );
                return hash;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("transaction {hash} never committed: {s}");
    }

    async fn nonce(&self, key: &Keypair) -> u64 {
        let a: Value = self
            .http
            .get(format!("{}/v1/accounts/{}", self.base, key.account()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        a["nonce"].as_u64().unwrap()
    }

    /// Fetches `hash` with `token`, the fetch signed by `key` for the token `opened`.
    async fn fetch_as(
        &self,
        key: &Keypair,
        token: &str,
        opened: &AccessToken,
        hash: &Hash,
    ) -> (u16, Value) {
        let path = format!("/v1/pdc/data/{hash}");
        let proof = FetchProof::sign(key, opened, "GET", &path, now_ms());
        self.fetch(token, &proof, hash).await
    }

    async fn fetch(&self, token: &str, proof: &FetchProof, hash: &Hash) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/v1/pdc/data/{hash}", self.base))
            .header("secnet-token", token)
            .header("secnet-fetch", proof.to_header())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_shared_only_as_the_ledger_and_the_owner_allow() {
    let dir = tempfile::tempdir().unwrap();
    let hospital = Keypair::deterministic("pdc-http", 0);
    let patient = Keypair::deterministic("pdc-http", 1);
    let consumer = Keypair::deterministic("pdc-http", 2);
    let thief = Keypair::deterministic("pdc-http", 3);
    let genesis = common::funding(CHAIN, &[&hospital, &patient, &consumer, &thief], 10_000);
    let node = common::dev_node(
        dir.path(),
        &genesis,
        hospital.clone(),
        Duration::from_millis(50),
    )
    .await;
    let c = Client {
        http: secnet_tls::http_client().unwrap().build().unwrap(),
        base: node.url(),
        holder: hospital.account(),
    };
    let json_ct = "application/json";

    // Storing for an owner without a registered encryption key is refused.
    let record = br#"{"resourceType":"Condition","id":"c1","code":{"text":"Type 2 diabetes"},"subject":{"reference":"Patient/p1"}}"#.to_vec();
    let object_path = format!(
        "/v1/pdc/objects/{}/fhir/Condition/c1?media_type=application/fhir%2Bjson&source=hospital-a",
        patient.account()
    );
    let (status, body) = c
        .signed(
            &patient,
            reqwest::Method::PUT,
            &object_path,
            record.clone(),
            json_ct,
        )
        .await;
    assert_eq!(status, 409, "{body}");

    for (k, key) in [&patient, &consumer, &thief].into_iter().enumerate() {
        let _ = k;
        c.tx(
            key,
            0,
            Call::SetEncryptionKey {
                key: key.encryption_key(),
            },
        )
        .await;
    }

    // Bad input: malformed FHIR, unknown media type, a stranger writing, an unsigned request.
    let bad = br#"{"resourceType":"Condition","code":{}}"#.to_vec();
    let (status, body) = c
        .signed(&patient, reqwest::Method::PUT, &object_path, bad, json_ct)
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Condition.subject is required"),
        "{body}"
    );
    let weird = format!(
        "/v1/pdc/objects/{}/x/1?media_type=application/x-unknown",
        patient.account()
    );
    let (status, body) = c
        .signed(
            &patient,
            reqwest::Method::PUT,
            &weird,
            b"x".to_vec(),
            json_ct,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = c
        .signed(
            &thief,
            reqwest::Method::PUT,
            &object_path,
            record.clone(),
            json_ct,
        )
        .await;
    assert_eq!(status, 403);
    let r = c
        .http
        .put(format!("{}{object_path}", c.base))
        .body(record.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // The patient stores the record and registers it, held by the hospital's node.
    let (status, stored) = c
        .signed(
            &patient,
            reqwest::Method::PUT,
            &object_path,
            record.clone(),
            json_ct,
        )
        .await;
    assert_eq!(status, 201, "{stored}");
    let data: Hash = stored["hash"].as_str().unwrap().parse().unwrap();
    c.tx(
        &patient,
        1,
        Call::RegisterData(RegisterData {
            hash: data,
            description: "condition".into(),
            address: stored["udi"].as_str().unwrap().into(),
            price: 100,
            kind: DataKind::UserData,
            holder: hospital.account(),
            holder_share_bps: 2_000,
        }),
    )
    .await;

    // The consumer subscribes and requests: the grant id is the request's hash.
    c.tx(&consumer, 1, Call::SubscribeData { hash: data }).await;
    let grant = c
        .tx(
            &consumer,
            2,
            Call::RequestDataWithHash {
                hash: data,
                purpose: "treatment".into(),
                ttl_secs: 600,
            },
        )
        .await;

    // A thief cannot get a token for the consumer's grant.
    let body = serde_json::to_vec(&json!({ "grant": grant })).unwrap();
    let (status, _) = c
        .signed(
            &thief,
            reqwest::Method::POST,
            "/v1/pdc/tokens",
            body.clone(),
            json_ct,
        )
        .await;
    assert_eq!(status, 403);
    let (status, t) = c
        .signed(
            &consumer,
            reqwest::Method::POST,
            "/v1/pdc/tokens",
            body,
            json_ct,
        )
        .await;
    assert_eq!(status, 200, "{t}");
    let token = t["token"].as_str().unwrap().to_string();
    let opened = AccessToken::open(&token, &hospital.account()).unwrap();
    let path = format!("/v1/pdc/data/{data}");

    // No policy yet: default deny.
    let (status, refused) = c.fetch_as(&consumer, &token, &opened, &data).await;
    assert_eq!(
        (status, refused["reason"].as_str()),
        (403, Some("policy-denied")),
        "{refused}"
    );

    // An invalid policy is refused; a valid one permits the consumer for treatment.
    let (status, body) = c
        .signed(
            &patient,
            reqwest::Method::PUT,
            &format!("/v1/pdc/policies/{}", patient.account()),
            b"permit (principal, action, resource".to_vec(),
            "text/plain",
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let policy = format!(
        "@id(\"consumer-treats\")\npermit (principal == SecNet::User::\"{}\", action == SecNet::Action::\"read\", resource in SecNet::Collection::\"fhir/Condition\") when {{ context.purpose == \"treatment\" }};",
        consumer.account()
    );
    let (status, body) = c
        .signed(
            &patient,
            reqwest::Method::PUT,
            &format!("/v1/pdc/policies/{}", patient.account()),
            policy.into_bytes(),
            "text/plain",
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The permitted fetch: decrypt with the re-sealed key and check against the ledger.
    let proof = FetchProof::sign(&consumer, &opened, "GET", &path, now_ms());
    let (status, got) = c.fetch(&token, &proof, &data).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["decision"]["policies"], json!(["consumer-treats"]));
    let listing: Value = c
        .http
        .get(format!("{}/v1/listings/{data}", c.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let registered: Hash = listing["listing"]["hash"]
        .as_str()
        .unwrap_or_else(|| panic!("{listing}"))
        .parse()
        .unwrap();
    let blob = BlobId::from_hex(got["blob"].as_str().unwrap()).unwrap();
    let key = DataKey::open(
        &SealedKey::from_hex(got["sealed_key"].as_str().unwrap()).unwrap(),
        &consumer,
        blob,
    )
    .unwrap();
    let ciphertext = base64::engine::general_purpose::STANDARD
        .decode(got["ciphertext"].as_str().unwrap())
        .unwrap();
    let mut plain = Vec::new();
    Decryptor::with_expected(
        ciphertext.as_slice(),
        &key,
        blob,
        got["size"].as_u64().unwrap(),
        registered,
    )
    .read_to_end(&mut plain)
    .unwrap();
    assert_eq!(plain, record);

    // Replayed fetch, stolen token, forged proof: refused with their reasons.
    let (status, r) = c.fetch(&token, &proof, &data).await;
    assert_eq!((status, r["reason"].as_str()), (403, Some("replay")));
    let (status, r) = c.fetch_as(&thief, &token, &opened, &data).await;
    assert_eq!((status, r["reason"].as_str()), (403, Some("wrong-key")));

    // The owner's request meant for another holder (which could have captured it there) is
    // refused here, and names both holders.
    let elsewhere = Client {
        holder: Keypair::deterministic("pdc-elsewhere", 0).account(),
        ..c.clone()
    };
    let (status, r) = elsewhere
        .signed(
            &patient,
            reqwest::Method::GET,
            &format!("/v1/pdc/history/{}", patient.account()),
            vec![],
            json_ct,
        )
        .await;
    assert_eq!(status, 401, "{r}");
    let detail = r["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("signed for holder {}", elsewhere.holder))
            && detail.contains(&hospital.account().to_string()),
        "{detail}"
    );

    // Every decision reaches the ledger; the owner's history shows them with proofs.
    let mut history = Value::Null;
    for _ in 0..200 {
        let (status, h) = c
            .signed(
                &patient,
                reqwest::Method::GET,
                &format!("/v1/pdc/history/{}", patient.account()),
                vec![],
                json_ct,
            )
            .await;
        assert_eq!(status, 200, "{h}");
        if h["entries"].as_array().unwrap().len() >= 4 {
            history = h;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let entries = history["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("history never filled"));
    // The payment, the grant, the default-deny refusal and the delivery. The replay and the
    // stolen token's attempt authenticated nobody (anyone who saw the request or the token
    // could send them): they are counted, and recorded once per window (a minute), not one
    // entry per attempt and not in the consumer's name.
    assert_eq!(entries.len(), 4, "{history}");
    assert_eq!(entries[0]["entry"]["type"], "payment", "{history}");
    assert_eq!(entries[0]["entry"]["owner_amount"], 80, "{history}");
    assert_eq!(history["delivered"], 1);
    for e in entries {
        let proof: secnet_ledger::InclusionProof =
            serde_json::from_value(e["proof"].clone()).unwrap();
        proof.verify().unwrap();
    }
    let (status, bundle) = c
        .signed(
            &patient,
            reqwest::Method::GET,
            &format!("/v1/pdc/history/{}?format=fhir", patient.account()),
            vec![],
            json_ct,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        secnet_pdc::fhir::validate(&serde_json::to_vec(&bundle).unwrap()).unwrap(),
        "Bundle"
    );

    // The consumer tries to erase the record of its next fetch: in the same batch of
    // records, its valid token presented for data it holds no grant for, and a garbage
    // token for data stored here but not listed. Neither can be recorded as sent, and
    // before, either sank the whole batch, the delivery's record included.
    let (status, stored3) = c
        .signed(
            &patient,
            reqwest::Method::PUT,
            &format!("/v1/pdc/objects/{}/fhir/Condition/c3", patient.account()),
            br#"{"resourceType":"Condition","id":"c3","code":{"text":"Flu"},"subject":{"reference":"Patient/p1"}}"#.to_vec(),
            "application/fhir+json",
        )
        .await;
    assert_eq!(status, 201, "{stored3}");
    let unlisted: Hash = stored3["hash"].as_str().unwrap().parse().unwrap();
    let (status, r) = c.fetch_as(&consumer, &token, &opened, &unlisted).await;
    assert_eq!(
        (status, r["reason"].as_str()),
        (403, Some("no-grant")),
        "{r}"
    );
    let (status, r) = c.fetch_as(&consumer, &token, &opened, &data).await;
    assert_eq!(status, 200, "{r}");
    let (status, _) = c.fetch_as(&consumer, "garbage", &opened, &unlisted).await;
    assert_eq!(status, 403);
    let mut delivered = Value::Null;
    for _ in 0..200 {
        let (_, h) = c
            .signed(
                &patient,
                reqwest::Method::GET,
                &format!("/v1/pdc/history/{}", patient.account()),
                vec![],
                json_ct,
            )
            .await;
        delivered = h["delivered"].clone();
        if delivered == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(delivered, 2, "the second delivery was never recorded");

    // A thief who registers the patient's next record first (its hash is public once the
    // patient broadcasts the registration), naming the patient's holder, is served nothing:
    // the holder serves only the registering account's object.
    let second = br#"{"resourceType":"Condition","id":"c2","code":{"text":"Asthma"},"subject":{"reference":"Patient/p1"}}"#.to_vec();
    let (status, stored2) = c
        .signed(
            &patient,
            reqwest::Method::PUT,
            &format!("/v1/pdc/objects/{}/fhir/Condition/c2", patient.account()),
            second,
            "application/fhir+json",
        )
        .await;
    assert_eq!(status, 201, "{stored2}");
    let stolen: Hash = stored2["hash"].as_str().unwrap().parse().unwrap();
    c.tx(
        &thief,
        c.nonce(&thief).await,
        Call::RegisterData(RegisterData {
            hash: stolen,
            description: "condition".into(),
            address: format!("{}/v1/pdc/data/{stolen}", c.base),
            price: 1,
            kind: DataKind::UserData,
            holder: hospital.account(),
            holder_share_bps: 0,
        }),
    )
    .await;
    c.tx(
        &consumer,
        c.nonce(&consumer).await,
        Call::SubscribeData { hash: stolen },
    )
    .await;
    let stolen_grant = c
        .tx(
            &consumer,
            c.nonce(&consumer).await,
            Call::RequestDataWithHash {
                hash: stolen,
                purpose: "treatment".into(),
                ttl_secs: 600,
            },
        )
        .await;
    let (status, t) = c
        .signed(
            &consumer,
            reqwest::Method::POST,
            "/v1/pdc/tokens",
            serde_json::to_vec(&json!({ "grant": stolen_grant })).unwrap(),
            json_ct,
        )
        .await;
    assert_eq!(status, 200, "{t}");
    let stolen_token = t["token"].as_str().unwrap().to_string();
    let stolen_opened = AccessToken::open(&stolen_token, &hospital.account()).unwrap();
    let (status, body) = c
        .fetch_as(&consumer, &stolen_token, &stolen_opened, &stolen)
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("of the account that registered it"),
        "{body}"
    );

    // The owner deletes the record; it is gone and fetches find nothing.
    let (status, body) = c
        .signed(
            &patient,
            reqwest::Method::DELETE,
            &format!("/v1/pdc/objects/{}/fhir/Condition/c1", patient.account()),
            vec![],
            json_ct,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = c.fetch_as(&consumer, &token, &opened, &data).await;
    assert_eq!(status, 404);
    node.stop().await;
}

/// A single node with one funded account (`label`, 0), on a free loopback port.
async fn lone_node(label: &str) -> (tempfile::TempDir, secnet_node::RunningNode) {
    let dir = tempfile::tempdir().unwrap();
    let key = Keypair::deterministic(label, 0);
    let genesis = common::funding(CHAIN, &[&key], 1);
    let every = ProducerConfig::default().block_interval;
    let node = common::dev_node(dir.path(), &genesis, key, every).await;
    (dir, node)
}

/// `/openapi.json` describes the API, and every operation it describes is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_served_routes() {
    let (_dir, node) = lone_node("pdc-openapi").await;
    let http = secnet_tls::http_client().unwrap().build().unwrap();
    let doc: Value = http
        .get(format!("{}/openapi.json", node.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    let zeros = "0".repeat(64);
    let mut operations = 0;
    for (template, item) in paths {
        let path = template
            .replace("{hash}", &zeros)
            .replace("{owner}", &zeros)
            .replace("{id}", &zeros)
            .replace("{height}", "1")
            .replace("{index}", "0")
            .replace("{path}", "fhir/Condition/c1");
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {template} documents no responses"
            );
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let r = http
                .request(method.clone(), format!("{}{path}", node.url()))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert_ne!(
                status, 405,
                "{method} {template} is documented but not served"
            );
            assert!(
                !body.contains("no such endpoint"),
                "{method} {template} is documented but not served"
            );
            if status >= 400 {
                let problem: Value = serde_json::from_str(&body)
                    .unwrap_or_else(|_| panic!("{method} {template}: error is not JSON: {body}"));
                assert!(
                    problem["detail"].is_string(),
                    "{method} {template}: {problem}"
                );
            }
        }
    }
    assert!(operations >= 26, "only {operations} operations documented");
    node.stop().await;
}

/// Each route reads at most what it needs, before any signature is checked, and a flood of
/// slow uploads holds at most a few of them: the next is refused at once, unread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_bounded_per_route_and_uploads_cannot_pile_up() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (_dir, node) = lone_node("pdc-bodies").await;
    let holder = Keypair::deterministic("pdc-bodies", 0);
    let stranger = Keypair::deterministic("pdc-bodies", 1);
    let http = secnet_tls::http_client().unwrap().build().unwrap();
    let owner = holder.account();
    let send = |method: reqwest::Method, path: String, len: usize| {
        let request = http
            .request(method, format!("{}{path}", node.url()))
            .body(vec![b'x'; len]);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // A raw connection: a request's head and `sent` bytes of its body, and the answer read
    // without sending more.
    let raw = |head: String, sent: usize| {
        let url = node.url();
        async move {
            let mut s = secnet_tls::connect(&url).await.unwrap();
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(&vec![b'x'; sent]).await.unwrap();
            s
        }
    };
    let answer_now = |mut s: Box<dyn secnet_tls::Stream>| async move {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("answered before the rest of the body was sent")
            .unwrap();
        String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned()
    };
    // Unsigned, oversized: refused for their size (413) once the route's limit is read, the
    // rest never sent (a client that sends it all may see the connection close under it).
    let head_only = |method: &str, path: &str, len: usize, sent: usize| {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: {len}\r\n\r\n",
            node.addr
        );
        async move { answer_now(raw(head, sent).await).await }
    };
    let tokens = head_only("POST", "/v1/pdc/tokens", 64 * 1024, 17 * 1024).await;
    assert!(tokens.starts_with("HTTP/1.1 413"), "{tokens}");
    let policies = format!("/v1/pdc/policies/{owner}");
    let policy = head_only("PUT", &policies, 1024 * 1024, 65 * 1024).await;
    assert!(policy.starts_with("HTTP/1.1 413"), "{policy}");
    // Within the limit, the missing signature is what is refused.
    assert_eq!(send(reqwest::Method::PUT, policies, 1024).await, 401);

    // An upload's head is judged before its body is read: each of these sends its head and
    // 1 KiB of a 1 MiB body, then stalls, and is answered at once. Each asks to be told when
    // its body is wanted (`Expect: 100-continue`): the node reads a body only once the upload
    // holds its slots, so the `100 Continue` says the stalled upload holds them.
    let object_of = |o: &AccountId| {
        format!("/v1/pdc/objects/{o}/fhir/Condition/c1?media_type=application/fhir%2Bjson")
    };
    let object = object_of(&owner);
    let full = vec![b'x'; 1024 * 1024];
    let stall = |signed: Option<&Keypair>, of: AccountId| {
        let object = object_of(&of);
        let mut head = format!(
            "PUT {object} HTTP/1.1\r\nhost: {}\r\ncontent-length: {}\r\nexpect: 100-continue\r\n",
            node.addr,
            full.len()
        );
        if let Some(key) = signed {
            // Signed for this node: its account is the holder (`owner` here).
            let auth = RequestAuth::sign(key, &owner, "PUT", &object, &full, now_ms());
            head.push_str(&format!(
                "secnet-auth: {}\r\ncontent-digest: {}\r\n",
                auth.to_header(),
                secnet_pdc::auth::content_digest(&full)
            ));
        }
        raw(head + "\r\n", 1024)
    };
    // A stalled upload, once the node reads its body: it holds its slots.
    let held = |mut s: Box<dyn secnet_tls::Stream>| async move {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("100 Continue") {
            let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
                .await
                .expect("the node reads an allowed upload's body")
                .unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        s
    };
    let unsigned = answer_now(stall(None, owner).await).await;
    assert!(unsigned.starts_with("HTTP/1.1 401"), "{unsigned}");
    let not_a_writer = answer_now(stall(Some(&stranger), owner).await).await;
    assert!(not_a_writer.starts_with("HTTP/1.1 403"), "{not_a_writer}");
    // The owner, without an encryption key on the ledger yet: refused before reading too.
    let no_key = answer_now(stall(Some(&holder), owner).await).await;
    assert!(no_key.starts_with("HTTP/1.1 409"), "{no_key}");

    // Allowed writers' slow uploads hold the reading slots; more wait their turn (503).
    let c = Client {
        http: http.clone(),
        base: node.url(),
        holder: owner,
    };
    c.tx(
        &holder,
        0,
        Call::SetEncryptionKey {
            key: holder.encryption_key(),
        },
    )
    .await;
    // One upload at a time per signer: the owner's second, while its first stalls, is 429.
    let first = held(stall(Some(&holder), owner).await).await;
    let second = answer_now(stall(Some(&holder), owner).await).await;
    assert!(second.starts_with("HTTP/1.1 429"), "{second}");
    drop(first);
    // Writers with keys on the ledger (no balance needed), each stalling in its own records.
    let writers: Vec<Keypair> = (0..secnet_node::pdc::MAX_CONCURRENT_UPLOADS)
        .map(|i| Keypair::deterministic("pdc-bodies-writer", i as u64))
        .collect();
    for w in &writers {
        c.tx(
            w,
            0,
            Call::SetEncryptionKey {
                key: w.encryption_key(),
            },
        )
        .await;
    }
    let mut stalled = Vec::new();
    for w in &writers {
        stalled.push(held(stall(Some(w), w.account()).await).await);
    }
    let record = br#"{"resourceType":"Condition","id":"c1","subject":{"reference":"Patient/p1"}}"#;
    let put_record = || {
        c.signed(
            &holder,
            reqwest::Method::PUT,
            &object,
            record.to_vec(),
            "application/fhir+json",
        )
    };
    let (status, body) = put_record().await;
    assert_eq!(status, 503, "{body}");
    // When they go, uploads are read again.
    drop(stalled);
    let mut status = 0;
    for _ in 0..50 {
        (status, _) = put_record().await;
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 201);
    // Signed, but without the digest to check the signature before reading: refused.
    let auth = RequestAuth::sign(&holder, &owner, "PUT", &object, record, now_ms());
    let r = http
        .put(format!("{}{object}", node.url()))
        .header("secnet-auth", auth.to_header())
        .body(record.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // A body that is not the one signed for is refused after reading.
    let auth = RequestAuth::sign(&holder, &owner, "PUT", &object, record, now_ms());
    let r = http
        .put(format!("{}{object}", node.url()))
        .header("secnet-auth", auth.to_header())
        .header("content-digest", secnet_pdc::auth::content_digest(record))
        .body(b"{}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    node.stop().await;
}

/// An organisation asks a patient, through the node holding the patient's data, for access
/// to a listing; only organisations of the network ask, only about the patient's listings
/// held there, once at a time; only the patient lists and answers, once; the organisation
/// learns the answer and nobody else learns anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisations_ask_patients_and_only_the_patient_answers() {
    use secnet_api::pdc::{AccessAsk, AskAnswer, AskDecision, AskRecord};
    let dir = tempfile::tempdir().unwrap();
    let hospital = Keypair::deterministic("asks", 0);
    let patient = Keypair::deterministic("asks", 1);
    let riverside = Keypair::deterministic("asks", 2);
    let stranger = Keypair::deterministic("asks", 3);
    let genesis = Genesis {
        validators: [&hospital, &riverside]
            .iter()
            .map(|k| secnet_types::Validator {
                key: k.account(),
                address: String::new(),
                name: String::new(),
            })
            .collect(),
        ..common::funding(CHAIN, &[&hospital, &patient, &riverside, &stranger], 10_000)
    };
    let node = common::dev_node(
        dir.path(),
        &genesis,
        hospital.clone(),
        Duration::from_millis(50),
    )
    .await;
    let c = Client {
        http: secnet_tls::http_client().unwrap().build().unwrap(),
        base: node.url(),
        holder: hospital.account(),
    };
    let register = |hash: Hash, holder: &Keypair| {
        Call::RegisterData(RegisterData {
            hash,
            description: "condition".into(),
            address: format!("pdc://asks/{hash}"),
            price: 1,
            kind: DataKind::UserData,
            holder: holder.account(),
            holder_share_bps: 0,
        })
    };
    let (held, elsewhere) = (Hash::digest(b"held here"), Hash::digest(b"held elsewhere"));
    c.tx(&patient, 0, register(held, &hospital)).await;
    c.tx(&patient, 1, register(elsewhere, &riverside)).await;
    // Listings come a page at a time, in hash order.
    let page = |query: String| {
        let url = format!("{}/v1/listings{query}", c.base);
        let http = c.http.clone();
        async move {
            let page: Vec<secnet_contract::entries::Listing> =
                http.get(url).send().await.unwrap().json().await.unwrap();
            page.iter().map(|l| l.hash).collect::<Vec<Hash>>()
        }
    };
    let mut sorted = vec![held, elsewhere];
    sorted.sort();
    assert_eq!(page(String::new()).await, sorted);
    assert_eq!(page("?limit=1".into()).await, sorted[..1]);
    assert_eq!(
        page(format!("?limit=1&after={}", sorted[0])).await,
        sorted[1..]
    );
    assert!(page(format!("?after={}", sorted[1])).await.is_empty());

    let today = now_ms() / 86_400_000;
    let date = |days: u64| {
        let (y, m, d) = secnet_types::date::civil_from_days((today + days) as i64);
        format!("{y:04}-{m:02}-{d:02}")
    };
    let ask = |data: Hash| AccessAsk {
        data,
        purposes: vec!["treatment".into()],
        categories: vec!["conditions".into(), "medications".into()],
        until: date(30),
        reason: "follow-up of your diabetes <b>care</b>".into(),
        staff: "Dr Bob".into(),
    };
    let asks_path = format!("/v1/pdc/asks/{}", patient.account());
    let body = |a: &AccessAsk| serde_json::to_vec(a).unwrap();

    // Refused: not an organisation; a listing held elsewhere; an unknown listing; bad scope,
    // a short reason, a date in the past, a field the API does not know, an oversized body.
    let (status, b) = post(&c, &stranger, asks_path.clone(), body(&ask(held))).await;
    assert_eq!(status, 403, "{b}");
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("not an organisation"),
        "{b}"
    );
    let (status, b) = post(&c, &riverside, asks_path.clone(), body(&ask(elsewhere))).await;
    assert_eq!(status, 403, "{b}");
    let (status, _) = post(&c, &riverside, asks_path.clone(), body(&ask(Hash([9; 32])))).await;
    assert_eq!(status, 403);
    for (bad, why) in [
        (
            AccessAsk {
                categories: vec!["everything".into()],
                ..ask(held)
            },
            "unknown category",
        ),
        (
            AccessAsk {
                purposes: vec!["marketing".into()],
                ..ask(held)
            },
            "unknown purpose",
        ),
        (
            AccessAsk {
                purposes: vec![],
                ..ask(held)
            },
            "one or two purposes",
        ),
        (
            AccessAsk {
                reason: "pls".into(),
                ..ask(held)
            },
            "10 to 500 characters",
        ),
        (
            AccessAsk {
                until: "2001-01-01".into(),
                ..ask(held)
            },
            "between today",
        ),
        (
            AccessAsk {
                until: "soon".into(),
                ..ask(held)
            },
            "not a date",
        ),
        (
            AccessAsk {
                staff: "Dr\u{7}Bob".into(),
                ..ask(held)
            },
            "control or invisible",
        ),
        (
            AccessAsk {
                reason: "follow-up \u{202E}evil\u{202C} of care".into(),
                ..ask(held)
            },
            "control or invisible",
        ),
    ] {
        let (status, b) = post(&c, &riverside, asks_path.clone(), body(&bad)).await;
        assert_eq!(status, 400, "{why}: {b}");
        assert!(b["detail"].as_str().unwrap().contains(why), "{why}: {b}");
    }
    let mut extra = serde_json::to_value(ask(held)).unwrap();
    extra["price"] = json!(0);
    let (status, _) = post(
        &c,
        &riverside,
        asks_path.clone(),
        extra.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(&c, &riverside, asks_path.clone(), vec![b' '; 9 * 1024]).await;
    assert_eq!(status, 413);

    // Kept once; asking again about the same listing waits for the answer.
    let (status, b) = post(&c, &riverside, asks_path.clone(), body(&ask(held))).await;
    assert_eq!(status, 201, "{b}");
    let record: AskRecord = serde_json::from_value(b).unwrap();
    assert_eq!(
        (record.owner, record.requester),
        (patient.account(), riverside.account())
    );
    let (status, _) = post(&c, &riverside, asks_path.clone(), body(&ask(held))).await;
    assert_eq!(status, 409);

    // Only the patient lists; the asker and the patient read the ask, nobody else does.
    let (status, b) = get(&c, &patient, asks_path.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(b["asks"].as_array().unwrap().len(), 1);
    assert_eq!(
        b["asks"][0]["ask"]["reason"],
        "follow-up of your diabetes <b>care</b>"
    );
    let (status, _) = get(&c, &riverside, asks_path.clone()).await;
    assert_eq!(status, 403);
    let one = format!("{asks_path}/{}", record.id);
    assert_eq!(get(&c, &riverside, one.clone()).await.0, 200);
    assert_eq!(get(&c, &stranger, one.clone()).await.0, 404);
    assert_eq!(get(&c, &hospital, one.clone()).await.0, 404);

    // Only the patient answers, once; an approval names a valid scope, a denial none.
    let approve = AskAnswer {
        decision: AskDecision::Approved,
        categories: vec!["conditions".into()],
        purposes: vec!["treatment".into()],
        until: date(7),
    };
    let answer = |a: &AskAnswer| serde_json::to_vec(a).unwrap();
    assert_eq!(
        post(&c, &riverside, one.clone(), answer(&approve)).await.0,
        403
    );
    let (status, b) = post(
        &c,
        &patient,
        one.clone(),
        answer(&AskAnswer {
            decision: AskDecision::Denied,
            ..approve.clone()
        }),
    )
    .await;
    assert_eq!(status, 400, "{b}");
    let (status, b) = post(&c, &patient, one.clone(), answer(&approve)).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(
        post(&c, &patient, one.clone(), answer(&approve)).await.0,
        409
    );
    let (_, b) = get(&c, &riverside, one).await;
    let seen: AskRecord = serde_json::from_value(b).unwrap();
    assert_eq!(
        seen.answer,
        Some(approve),
        "the asker learns the narrower scope"
    );
    // Answered, it may ask again.
    assert_eq!(
        post(&c, &riverside, asks_path, body(&ask(held))).await.0,
        201
    );
    node.stop().await;
}

async fn post(c: &Client, key: &Keypair, path: String, body: Vec<u8>) -> (u16, Value) {
    c.signed(key, reqwest::Method::POST, &path, body, "application/json")
        .await
}

async fn get(c: &Client, key: &Keypair, path: String) -> (u16, Value) {
    c.signed(
        key,
        reqwest::Method::GET,
        &path,
        Vec::new(),
        "application/json",
    )
    .await
}
