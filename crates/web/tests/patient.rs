//! The patient's routes and the staff's read route over HTTP on loopback, against a node
//! whose services answer from fixed data: sign-in with a key (and every way it is refused),
//! the records page, consent and revocation prepared for the browser to sign, the access
//! history, and reading at the price shown.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use secnet_api::pdc::{AccessAsk, AskAnswer, AskDecision, AskRecord, Notice};
use secnet_contract::LogEntry;
use secnet_types::{AccessDecision, AccessEntry, AccountId, Hash, Keypair, RefusalReason};
use secnet_web::patient::{SIGN_IN_NAMESPACE, sign_in_message};
use secnet_web::search::{CodedDescription, Listed};
use secnet_web::services::{
    AccountFacts, BoxFuture, HistoryItem, Organisation, ReadError, Reading, StoredRecord,
};
use secnet_web::staff::Role;
use secnet_web::{Services, Web};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const PATIENT: &str = "__Host-secnet_patient-0707070707070707";
const SESSION: &str = "__Host-secnet_session-0707070707070707";
const PASSWORD: &str = "a clinician's long password";

fn me() -> AccountId {
    AccountId([7; 32])
}

fn other_hospital() -> AccountId {
    Keypair::deterministic("hospital", 1).account()
}

fn patient() -> Keypair {
    Keypair::deterministic("patient", 0)
}

/// A node holding one patient's records.
struct Clinic {
    listings: Mutex<Vec<Listed>>,
    policy: String,
    prices_read: Mutex<Vec<u64>>,
    asked: Mutex<Vec<AccessAsk>>,
    imported: Mutex<Vec<(AccountId, String, Vec<u8>)>>,
}

impl Clinic {
    /// The patient's asks: one pending from Riverside, one denied.
    fn fixed_asks() -> Vec<AskRecord> {
        let ask = AccessAsk {
            data: Hash([1; 32]),
            purposes: vec!["research".into()],
            categories: vec!["conditions".into(), "observations".into()],
            until: "2027-03-01".into(),
            reason: "a study of <script>alert(1)</script> diabetes".into(),
            staff: "Dr Bob".into(),
        };
        vec![
            AskRecord {
                id: Hash([0xb1; 32]),
                owner: patient().account(),
                requester: other_hospital(),
                ask: ask.clone(),
                at_ms: 1_800_000_005_000,
                answer: None,
                answered_at_ms: None,
            },
            AskRecord {
                id: Hash([0xb2; 32]),
                owner: patient().account(),
                requester: other_hospital(),
                ask,
                at_ms: 1_800_000_004_000,
                answer: Some(AskAnswer {
                    decision: AskDecision::Denied,
                    categories: vec![],
                    purposes: vec![],
                    until: String::new(),
                }),
                answered_at_ms: Some(1_800_000_004_500),
            },
        ]
    }

    /// The access-log entries about the patient's data.
    fn fixed_history() -> Vec<HistoryItem> {
        let data = Hash([1; 32]);
        let grant = Hash([2; 32]);
        vec![
            HistoryItem {
                index: 0,
                entry: LogEntry::Grant {
                    height: 5,
                    tx: grant,
                    grant,
                    data,
                    requester: me(),
                    holder: me(),
                    purpose: "treatment".into(),
                    expires_at_ms: 1_800_000_600_000,
                },
                block_ms: 1_800_000_000_000,
            },
            HistoryItem {
                index: 1,
                entry: LogEntry::Access {
                    height: 6,
                    tx: Hash([3; 32]),
                    holder: me(),
                    entry: AccessEntry {
                        data,
                        grant: Some(grant),
                        requester: me(),
                        decision: AccessDecision::Delivered,
                        score_ppm: 1_000,
                        at_ms: 1_800_000_001_000,
                    },
                },
                block_ms: 1_800_000_001_000,
            },
            HistoryItem {
                index: 2,
                entry: LogEntry::Access {
                    height: 7,
                    tx: Hash([4; 32]),
                    holder: me(),
                    entry: AccessEntry {
                        data,
                        grant: None,
                        requester: other_hospital(),
                        decision: AccessDecision::Refused(RefusalReason::PolicyDenied),
                        score_ppm: 0,
                        at_ms: 1_800_000_002_000,
                    },
                },
                block_ms: 1_800_000_002_000,
            },
            HistoryItem {
                index: 3,
                entry: LogEntry::Emergency {
                    height: 8,
                    tx: Hash([5; 32]),
                    requester: Keypair::deterministic("mallory", 0).account(),
                    owner: patient().account(),
                    reason: "your records were read, call +1 555".into(),
                },
                block_ms: 1_800_000_003_000,
            },
            HistoryItem {
                index: 4,
                entry: LogEntry::Payment {
                    height: 9,
                    tx: Hash([6; 32]),
                    data,
                    consumer: other_hospital(),
                    holder: me(),
                    holder_amount: 2,
                    owner: patient().account(),
                    owner_amount: 18,
                },
                block_ms: 1_800_000_004_000,
            },
        ]
    }
}

impl Services for Clinic {
    fn me(&self) -> AccountId {
        me()
    }
    fn chain_id(&self) -> String {
        "test-chain".into()
    }
    fn listings(&self) -> secnet_web::services::Listings {
        Arc::new(
            self.listings
                .lock()
                .unwrap()
                .iter()
                .cloned()
                .map(Arc::new)
                .collect(),
        )
    }
    fn organisations(&self) -> Vec<Organisation> {
        vec![
            Organisation {
                account: me(),
                name: "Northside Hospital".into(),
            },
            Organisation {
                account: other_hospital(),
                name: "Riverside Hospital".into(),
            },
        ]
    }
    fn account(&self, _: &AccountId) -> Result<AccountFacts, String> {
        Ok(AccountFacts {
            balance: 9,
            nonce: 3,
            encryption_key: true,
        })
    }
    fn records(&self, owner: &AccountId) -> Result<Vec<StoredRecord>, String> {
        if *owner != patient().account() {
            return Ok(Vec::new());
        }
        Ok(vec![
            StoredRecord {
                path: "fhir/Patient/p1".into(),
                content: json!({"resourceType": "Patient", "name": [{"text": "<script>alert(1)</script> Ann"}]})
                    .to_string()
                    .into_bytes(),
            },
            StoredRecord {
                path: "fhir/Condition/c1".into(),
                content: json!({"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2"}]}})
                .to_string()
                .into_bytes(),
            },
        ])
    }
    fn policy(&self, _: &AccountId) -> Result<String, String> {
        Ok(self.policy.clone())
    }
    fn history(&self, _: &AccountId) -> Result<Vec<HistoryItem>, String> {
        Ok(Clinic::fixed_history())
    }
    fn trail(&self, _: &AccountId, _: usize) -> Result<Vec<HistoryItem>, String> {
        Ok(Clinic::fixed_history())
    }
    fn validators(&self) -> Vec<(AccountId, String)> {
        vec![
            (me(), "Northside Hospital".into()),
            (other_hospital(), "Riverside Hospital".into()),
        ]
    }
    fn asks(&self, owner: &AccountId) -> Result<Vec<AskRecord>, String> {
        Ok(Clinic::fixed_asks()
            .into_iter()
            .filter(|a| a.owner == *owner)
            .collect())
    }
    fn import_for(&self, owner: &AccountId, staff: &str, bundle: &[u8]) -> Result<String, String> {
        let parsed: Value =
            serde_json::from_slice(bundle).map_err(|e| format!("the Bundle is not JSON: {e}"))?;
        if parsed["resourceType"] != "Bundle" {
            return Err("resourceType must be Bundle".into());
        }
        self.imported
            .lock()
            .unwrap()
            .push((*owner, staff.to_string(), bundle.to_vec()));
        Ok(format!(
            "2 records stored for {owner}: 1 Condition, 1 Patient"
        ))
    }
    fn notices(&self, owner: &AccountId) -> Result<Vec<Notice>, String> {
        Ok(if *owner == patient().account() {
            vec![Notice {
                from: me(),
                staff: "Dr <b>Ada</b>".into(),
                message: "imported 2 records on your behalf (1 Condition, 1 Patient)".into(),
                at_ms: 1_800_000_006_000,
            }]
        } else {
            Vec::new()
        })
    }
    fn ask_status(
        &self,
        data: Hash,
        owner: AccountId,
        id: Hash,
    ) -> BoxFuture<'_, Result<AskRecord, ReadError>> {
        let asked = self.asked.lock().unwrap().first().cloned();
        Box::pin(async move {
            let ask = asked.filter(|a| a.data == data).ok_or(ReadError::Refused {
                steps: vec![],
                reason: "no such request".into(),
            })?;
            Ok(AskRecord {
                id,
                owner,
                requester: me(),
                ask,
                at_ms: 1_800_000_000_000,
                answer: Some(AskAnswer {
                    decision: AskDecision::Approved,
                    categories: vec!["conditions".into()],
                    purposes: vec!["treatment".into()],
                    until: "2027-01-15".into(),
                }),
                answered_at_ms: Some(1_800_000_001_000),
            })
        })
    }
    fn ask(&self, ask: AccessAsk) -> BoxFuture<'_, Result<AskRecord, ReadError>> {
        self.asked.lock().unwrap().push(ask.clone());
        Box::pin(async move {
            if ask.reason.len() < 10 {
                return Err(ReadError::Refused {
                    steps: vec![],
                    reason: "the reason must be 10 to 500 characters".into(),
                });
            }
            Ok(AskRecord {
                id: Hash([0xa5; 32]),
                owner: patient().account(),
                requester: me(),
                ask,
                at_ms: 1_800_000_000_000,
                answer: None,
                answered_at_ms: None,
            })
        })
    }
    fn read(
        &self,
        data: Hash,
        purpose: String,
        price: u64,
    ) -> BoxFuture<'_, Result<Reading, ReadError>> {
        self.prices_read.lock().unwrap().push(price);
        Box::pin(async move {
            if price != 10 {
                return Err(ReadError::Refused {
                    steps: vec![],
                    reason: "the price is now 10".into(),
                });
            }
            Ok(Reading {
                data,
                holder: me(),
                steps: vec![format!("paid 10 for {purpose}")],
                content: json!({"resourceType": "Bundle", "type": "collection", "entry": [
                    {"resource": {"resourceType": "Condition", "code": {"text": "Asthma <i>severe</i>"}}}]})
                .to_string()
                .into_bytes(),
            })
        })
    }
}

struct App {
    base: String,
    http: reqwest::Client,
    clinic: Arc<Clinic>,
    _dir: tempfile::TempDir,
}

async fn app() -> App {
    let dir = tempfile::tempdir().unwrap();
    let clinic = Arc::new(Clinic {
        listings: Mutex::new(Vec::new()),
        policy: "@id(\"mine\")\npermit (principal == SecNet::User::\"aa\", action == SecNet::Action::\"read\", resource);\n".into(),
        prices_read: Mutex::new(Vec::new()),
        asked: Mutex::new(Vec::new()),
        imported: Mutex::new(Vec::new()),
    });
    let web = Web::open(dir.path(), "Northside Hospital", clinic.clone()).unwrap();
    web.staff()
        .add("dr.ada", "Dr Ada", Role::Clinician, PASSWORD, 1)
        .unwrap();
    web.staff()
        .add("admin", "Admin", Role::Admin, PASSWORD, 1)
        .unwrap();
    let (base, http) = common::serve(web).await;
    App {
        base,
        http,
        clinic,
        _dir: dir,
    }
}

impl App {
    /// Posts `form` to `path` in the staff session `session`: the status and the page.
    async fn staff_form(
        &self,
        path: &str,
        session: String,
        form: Vec<(&'static str, String)>,
    ) -> (StatusCode, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", format!("{SESSION}={session}"))
            .form(&form)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// Signs staff member `user` in: the session cookie's value and the home page's CSRF
    /// token.
    async fn staff_session(&self, user: &'static str) -> (String, String) {
        let app = self;
        let r = app
            .http
            .get(format!("{}/app/login", app.base))
            .send()
            .await
            .unwrap();
        let login_cookie = r
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("__Host-secnet_login-"))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let page = r.text().await.unwrap();
        let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
        let csrf = page[at..at + 64].to_string();
        let r = app
            .http
            .post(format!("{}/app/login", app.base))
            .header("cookie", login_cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("username", user),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        let session = r
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{SESSION}=")))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let home = app
            .http
            .get(format!("{}/app/home", app.base))
            .header("cookie", format!("{SESSION}={session}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let at = home.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
        (session, home[at..at + 64].to_string())
    }

    async fn challenge(&self) -> String {
        let c: Value = self
            .http
            .post(format!("{}/app/patient/challenge", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(c["node"], me().to_string());
        c["challenge"].as_str().unwrap().to_string()
    }

    async fn sign_in_as(&self, key: &Keypair, challenge: &str) -> reqwest::Response {
        let raw: [u8; 32] = hex::decode(challenge).unwrap().try_into().unwrap();
        let sig = key.sign(SIGN_IN_NAMESPACE, &sign_in_message(&me(), &raw));
        self.http
            .post(format!("{}/app/patient/session", self.base))
            .json(&json!({"account": key.account().to_string(), "challenge": challenge, "signature": hex::encode(sig.0)}))
            .send()
            .await
            .unwrap()
    }

    /// A signed-in patient: the session token and the page's CSRF token.
    async fn patient_session(&self) -> (String, String) {
        let c = self.challenge().await;
        let r = self.sign_in_as(&patient(), &c).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let cookie = r
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{PATIENT}=")))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let page = self.page("/app/patient/consent", &cookie).await.1;
        let at = page.find("data-csrf=\"").unwrap() + "data-csrf=\"".len();
        let csrf = page[at..at + 64].to_string();
        (cookie, csrf)
    }

    async fn page(&self, path: &str, cookie: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", format!("{PATIENT}={cookie}"))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn post_json(&self, path: &str, cookie: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", format!("{PATIENT}={cookie}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn a_patient_signs_in_with_their_key_once_per_challenge() {
    let app = app().await;
    let start = app
        .http
        .get(format!("{}/app/patient", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::OK);
    assert!(
        start
            .text()
            .await
            .unwrap()
            .contains("/app/static/patient.js")
    );

    // Pages need a session.
    let r = app
        .http
        .get(format!("{}/app/patient/records", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/app/patient");

    // Another key's signature, a replayed challenge, an unknown one, malformed input.
    let c = app.challenge().await;
    let raw: [u8; 32] = hex::decode(&c).unwrap().try_into().unwrap();
    let forged =
        Keypair::deterministic("mallory", 0).sign(SIGN_IN_NAMESPACE, &sign_in_message(&me(), &raw));
    let r = app
        .http
        .post(format!("{}/app/patient/session", app.base))
        .json(&json!({"account": patient().account().to_string(), "challenge": c, "signature": hex::encode(forged.0)}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.sign_in_as(&patient(), &c).await.status(),
        StatusCode::UNAUTHORIZED,
        "used up"
    );
    assert_eq!(
        app.sign_in_as(&patient(), &hex::encode([9u8; 32]))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .http
        .post(format!("{}/app/patient/session", app.base))
        .json(&json!({"account": "zz", "challenge": "00", "signature": "00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The right key: a session in this node's own cookie, HttpOnly, Secure, SameSite=Strict.
    let c = app.challenge().await;
    let r = app.sign_in_as(&patient(), &c).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(set.starts_with(&format!("{PATIENT}=")), "{set}");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    let (cookie, _) = app.patient_session().await;
    let (status, records) = app.page("/app/patient/records", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(records.contains("Diabetes mellitus type 2"), "{records}");
    assert!(records.contains("SNOMED CT 44054006"), "{records}");
    assert!(
        records.contains("&#60;script&#62;alert(1)&#60;/script&#62; Ann"),
        "escaped: {records}"
    );
    assert!(!records.contains("<script>alert"), "{records}");

    // A staff session is no patient session, and the other way round.
    let r = app
        .http
        .get(format!("{}/app/patient/records", app.base))
        .header("cookie", format!("{SESSION}={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = app
        .http
        .get(format!("{}/app/home", app.base))
        .header("cookie", format!("{SESSION}={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn consent_and_revocation_are_prepared_for_the_browser_to_sign() {
    let app = app().await;
    let (cookie, csrf) = app.patient_session().await;
    let good = json!({"csrf": csrf, "audience": other_hospital().to_string(), "categories": ["conditions"],
        "purposes": ["treatment"], "until": "2099-12-31", "price": "10"});

    // Refusals: no CSRF token, no session, an organisation not on the network, no category,
    // a date in the past, a price that is not a number.
    let mut no_csrf = good.clone();
    no_csrf["csrf"] = json!("");
    assert_eq!(
        app.post_json("/app/patient/consent/prepare", &cookie, no_csrf)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.post_json("/app/patient/consent/prepare", "nope", good.clone())
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    for (field, value, says) in [
        (
            "audience",
            json!(Keypair::deterministic("x", 0).account().to_string()),
            "organisation",
        ),
        ("categories", json!([]), "category"),
        ("until", json!("2001-01-01"), "end date"),
        ("price", json!("ten"), "price"),
        ("purposes", json!(["marketing"]), "purpose"),
    ] {
        let mut bad = good.clone();
        bad[field] = value;
        let (status, body) = app
            .post_json("/app/patient/consent/prepare", &cookie, bad)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{field}: {body}"
        );
    }

    // The plan: the shared record, the policy (the patient's own kept), the registration.
    let (status, plan) = app
        .post_json("/app/patient/consent/prepare", &cookie, good.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    assert_eq!(plan["chain_id"], "test-chain");
    assert_eq!(plan["account"], patient().account().to_string());
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{plan}");
    let owner = patient().account();
    assert_eq!(
        steps[0]["path"],
        format!("/v1/pdc/objects/{owner}/shared/{}", other_hospital())
    );
    let shared: Value = serde_json::from_str(steps[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        shared["entry"].as_array().unwrap().len(),
        1,
        "conditions only: {shared}"
    );
    assert!(
        !steps[0]["body"].as_str().unwrap().contains("Ann"),
        "no name without demographics"
    );
    let policy = steps[1]["body"].as_str().unwrap();
    assert_eq!(steps[1]["path"], format!("/v1/pdc/policies/{owner}"));
    assert!(policy.contains("@id(\"mine\")"), "{policy}");
    assert!(
        policy.contains(&format!("@id(\"consent-{}\")", other_hospital())),
        "{policy}"
    );
    assert_eq!(steps[2]["kind"], "register");
    assert_eq!(steps[2]["price"], "10");
    assert_eq!(steps[2]["holder"], me().to_string());
    assert_eq!(steps[2]["body_of"], 0);
    let description = CodedDescription::parse(steps[2]["description"].as_str().unwrap()).unwrap();
    assert_eq!(description.audience, [other_hospital().to_string()]);
    assert_eq!(description.codes[0].code, "44054006");

    // Once registered, consenting again withdraws the old registration first, and revoking
    // removes the policy and withdraws.
    app.clinic.listings.lock().unwrap().push(Listed {
        id: "1".repeat(64),
        hash: "ab".repeat(32),
        holder: me().to_string(),
        owner: owner.to_string(),
        price: 10,
        description: description.to_description(),
    });
    let (_, again) = app
        .post_json("/app/patient/consent/prepare", &cookie, good)
        .await;
    assert_eq!(again["steps"][0]["kind"], "withdraw", "{again}");
    assert_eq!(again["steps"][0]["hash"], "ab".repeat(32));
    let (status, revoke) = app
        .post_json(
            "/app/patient/consent/revoke",
            &cookie,
            json!({"csrf": csrf, "audience": other_hospital().to_string()}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revoke}");
    let kept = revoke["steps"][0]["body"].as_str().unwrap();
    assert!(
        kept.contains("@id(\"mine\")") && !kept.contains("consent-"),
        "{kept}"
    );
    assert_eq!(revoke["steps"][1]["kind"], "withdraw");
    let (_, page) = app.page("/app/patient/consent", &cookie).await;
    assert!(page.contains("Riverside Hospital"), "{page}");
    assert!(page.contains("no policy: reads are refused"), "{page}");
}

#[tokio::test]
async fn the_history_names_who_saw_what_and_why() {
    let app = app().await;
    let (cookie, _) = app.patient_session().await;
    let (status, page) = app.page("/app/patient/history", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Northside Hospital"), "{page}");
    assert!(page.contains("Riverside Hospital"), "{page}");
    assert!(page.contains("granted by the ledger"), "{page}");
    assert!(page.contains("delivered"), "{page}");
    assert!(page.contains("refused: policy denied"), "{page}");
    assert!(page.contains("0.1 %"), "{page}");
    assert!(page.contains("treatment"), "{page}");
    // A declaration of emergency access by an account that is no organisation is shown for
    // what it is, and not announced as a read.
    assert!(page.contains("emergency declared by an outsider"), "{page}");
    assert!(!page.contains("emergency-notice"), "{page}");
    // The subscription Riverside paid is in the timeline and in the statement of rewards:
    // the price, the holder's share and the patient's reward, once.
    assert!(
        page.contains("paid 20: 18 to you, 2 to Northside Hospital (holder)"),
        "{page}"
    );
    let statement = &page[page.find("id=\"statement\"").unwrap()..];
    assert!(
        statement.contains("<td class=\"who\">Riverside Hospital</td>")
            && statement.contains("<td>20</td>")
            && statement.contains("<td>2 (Northside Hospital)</td>")
            && statement.contains("<td>18</td>"),
        "{statement}"
    );
    assert!(page.contains("id=\"rewards-total\">18<"), "{page}");
    // Every row carries the claim the browser checks against the log leaf it fetches, and
    // the page names the validators whose cosignatures it checks them against.
    for item in Clinic::fixed_history() {
        let claim = secnet_web::log_view::claim(&item.entry).replace('"', "&#34;");
        assert!(
            page.contains(&format!(
                "data-index=\"{}\" data-claim=\"{claim}\"",
                item.index
            )),
            "{claim} missing from {page}"
        );
    }
    assert!(
        page.contains(&format!(
            "data-chain=\"test-chain\" data-validators=\"{},{}\" \
             data-names=\"[&#34;Northside Hospital&#34;,&#34;Riverside Hospital&#34;]\"",
            me(),
            other_hospital()
        )),
        "{page}"
    );

    let r = app
        .http
        .get(format!("{}/app/patient/history.csv", app.base))
        .header("cookie", format!("{PATIENT}={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "when,who,what,why,outcome,detector_score,log_index"
    );
    assert_eq!(lines.len(), 6, "{csv}");
    assert!(lines[1].ends_with(",4"), "newest first: {csv}");
    assert!(
        lines[3].contains("Riverside Hospital,") && lines[3].ends_with(",2"),
        "{csv}"
    );
    let r = app
        .http
        .get(format!("{}/app/patient/history.csv", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "no session, no history");
}

#[tokio::test]
async fn staff_read_at_the_price_they_were_shown() {
    let app = app().await;
    let sign_in = |user: &'static str| app.staff_session(user);
    let read = |session: String, form: Vec<(&'static str, String)>| {
        app.staff_form("/app/read", session, form)
    };
    let data = "cd".repeat(32);
    let (session, csrf) = sign_in("dr.ada").await;
    let (status, page) = read(
        session.clone(),
        vec![
            ("csrf", csrf.clone()),
            ("data", data.clone()),
            ("price", "10".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("paid 10 for treatment"), "{page}");
    assert!(
        page.contains("Asthma &#60;i&#62;severe&#60;/i&#62;"),
        "{page}"
    );

    // Another price than the ledger's: refused, shown with the reason.
    let (status, page) = read(
        session.clone(),
        vec![
            ("csrf", csrf.clone()),
            ("data", data.clone()),
            ("price", "9".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("the price is now 10"), "{page}");
    // No price, no CSRF token, an administrator: nothing is read.
    let (status, _) = read(
        session.clone(),
        vec![("csrf", csrf.clone()), ("data", data.clone())],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = read(
        session,
        vec![("data", data.clone()), ("price", "10".into())],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (admin, admin_csrf) = sign_in("admin").await;
    let (status, page) = read(
        admin,
        vec![("csrf", admin_csrf), ("data", data), ("price", "10".into())],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("Administrators"), "{page}");
    assert_eq!(*app.clinic.prices_read.lock().unwrap(), vec![10, 9]);

    // Emergency access: clinicians only, a real account and a reason, else nothing happens.
    let glass = |session: String, form: Vec<(&'static str, String)>| {
        app.staff_form("/app/emergency", session, form)
    };
    let (admin, admin_csrf) = sign_in("admin").await;
    let patient_hex = patient().account().to_string();
    let (status, _) = glass(
        admin,
        vec![
            ("csrf", admin_csrf),
            ("patient", patient_hex.clone()),
            ("reason", "unconscious, no consent possible".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (session, csrf) = sign_in("dr.ada").await;
    let (status, page) = glass(
        session.clone(),
        vec![
            ("csrf", csrf.clone()),
            ("patient", patient_hex.clone()),
            ("reason", "urgent".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("Give the reason"), "{page}");
    let (status, page) = glass(
        session.clone(),
        vec![
            ("csrf", csrf.clone()),
            ("patient", "not-an-account".into()),
            ("reason", "unconscious, no consent possible".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("64 hex digits"), "{page}");
    let (status, _) = glass(
        session,
        vec![
            ("patient", patient_hex),
            ("reason", "unconscious, no consent possible".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token");
}

#[tokio::test]
async fn only_an_administrator_reads_the_organisations_audit() {
    let app = app().await;
    let (admin, _) = app.staff_session("admin").await;
    let r = app
        .http
        .get(format!("{}/app/audit", app.base))
        .header("cookie", format!("{SESSION}={admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    // Its own trail, naming the other party (the holder) and what was paid.
    assert!(page.contains("id=\"paid-total\">20<"), "{page}");
    assert!(
        page.contains("paid 20: 2 to the holder, 18 to the patient"),
        "{page}"
    );
    assert!(page.contains("refused: policy denied"), "{page}");
    assert!(page.contains("granted by the ledger"), "{page}");
    assert!(page.contains("<td>Northside Hospital</td>"), "{page}");
    // And what its staff did here, from the node's action log.
    assert!(
        page.contains("<td>admin</td><td>signed in</td><td>as admin</td>"),
        "{page}"
    );
    // Clinicians and strangers are not shown it.
    let (clinician, _) = app.staff_session("dr.ada").await;
    let r = app
        .http
        .get(format!("{}/app/audit", app.base))
        .header("cookie", format!("{SESSION}={clinician}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Only an administrator reads the organisation")
    );
    let r = app
        .http
        .get(format!("{}/app/audit", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/app/login");
}

#[tokio::test]
async fn the_patient_sees_requests_and_answers_them_from_a_prefilled_consent_form() {
    let app = app().await;
    let (cookie, _) = app.patient_session().await;
    let (status, page) = app.page("/app/patient/inbox", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Riverside Hospital"), "{page}");
    assert!(page.contains("Dr Bob"), "{page}");
    assert!(
        page.contains("a study of &#60;script&#62;alert(1)&#60;/script&#62; diabetes"),
        "the reason is text: {page}"
    );
    assert!(page.contains("conditions, observations"), "{page}");
    let pending = Hash([0xb1; 32]).to_string();
    let denied = Hash([0xb2; 32]).to_string();
    assert!(
        page.contains(&format!("/app/patient/consent?ask={pending}")),
        "{page}"
    );
    assert!(page.contains(&format!("data-ask=\"{pending}\"")), "{page}");
    assert!(
        !page.contains(&format!("data-ask=\"{denied}\"")),
        "answered once: {page}"
    );
    assert!(page.contains("you denied it"), "{page}");
    // What was done on the patient's behalf, as text.
    assert!(page.contains("Dr &#60;b&#62;Ada&#60;/b&#62;"), "{page}");
    assert!(page.contains("imported 2 records on your behalf"), "{page}");

    // Approving opens the consent form filled in with the ask.
    let (_, form) = app
        .page(&format!("/app/patient/consent?ask={pending}"), &cookie)
        .await;
    assert!(
        form.contains(&format!("name=\"ask\" value=\"{pending}\"")),
        "{form}"
    );
    assert!(
        form.contains(&format!("<option value=\"{}\" selected>", other_hospital())),
        "{form}"
    );
    for (name, on) in [
        ("conditions", true),
        ("medications", false),
        ("observations", true),
        ("demographics", false),
    ] {
        let checked = format!("value=\"{name}\" checked");
        assert_eq!(form.contains(&checked), on, "{name}: {form}");
    }
    assert!(form.contains("value=\"research\" checked"), "{form}");
    assert!(!form.contains("value=\"treatment\" checked"), "{form}");
    assert!(form.contains("value=\"2027-03-01\""), "{form}");
    // An answered or unknown ask fills nothing in.
    for id in [denied, "zz".into()] {
        let (status, form) = app
            .page(&format!("/app/patient/consent?ask={id}"), &cookie)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(!form.contains("name=\"ask\""), "{form}");
    }
    // No session, no inbox.
    let r = app
        .http
        .get(format!("{}/app/patient/inbox", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn staff_ask_a_patient_for_what_their_role_may_use() {
    let app = app().await;
    let data = "cd".repeat(32);
    app.clinic.listings.lock().unwrap().push(Listed {
        id: "1".repeat(64),
        hash: data.clone(),
        holder: other_hospital().to_string(),
        owner: patient().account().to_string(),
        price: 10,
        description: CodedDescription::condition(
            "http://snomed.info/sct",
            "44054006",
            "Diabetes mellitus type 2",
            &["treatment"],
        )
        .to_description(),
    });
    let (session, csrf) = app.staff_session("dr.ada").await;
    let r = app
        .http
        .get(format!("{}/app/ask?data={data}", app.base))
        .header("cookie", format!("{SESSION}={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("Diabetes mellitus type 2"), "{page}");
    assert!(page.contains("held by Riverside Hospital"), "{page}");
    assert!(page.contains("<strong>treatment</strong>"), "{page}");

    let form = |csrf: &str, reason: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("data", data.clone()),
            ("conditions", "on".to_string()),
            ("observations", "on".to_string()),
            ("until", "2027-01-31".to_string()),
            ("reason", reason.to_string()),
        ]
    };
    // Without the session's token: refused, nothing sent.
    let (status, _) = app
        .staff_form(
            "/app/ask",
            session.clone(),
            form("", "to plan your treatment"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(app.clinic.asked.lock().unwrap().is_empty());
    let (status, page) = app
        .staff_form(
            "/app/ask",
            session.clone(),
            form(&csrf, "to plan your treatment"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("id=\"ask-sent\""), "{page}");
    // The organisation's requests show the patient's answer, as the holder keeps it.
    let r = app
        .http
        .get(format!("{}/app/asks", app.base))
        .header("cookie", format!("{SESSION}={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sent = r.text().await.unwrap();
    assert!(
        sent.contains("approved by the patient: conditions for treatment until 2027-01-15"),
        "{sent}"
    );
    assert!(sent.contains(&data), "{sent}");
    let sent = app.clinic.asked.lock().unwrap()[0].clone();
    assert_eq!(sent.purposes, ["treatment"]);
    assert_eq!(sent.categories, ["conditions", "observations"]);
    assert_eq!(sent.staff, "Dr Ada");
    assert_eq!(sent.until, "2027-01-31");
    // The holder's refusal is shown with its reason, the form kept.
    let (status, page) = app
        .staff_form("/app/ask", session.clone(), form(&csrf, "short"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        page.contains("Not sent: the reason must be 10 to 500 characters"),
        "{page}"
    );
    assert!(
        page.contains("name=\"observations\" value=\"on\" checked"),
        "{page}"
    );
    // An unregistered record, and an administrator: nothing sent.
    let (status, _) = app
        .staff_form(
            "/app/ask",
            session,
            vec![("csrf", csrf.clone()), ("data", "ef".repeat(32))],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (admin, admin_csrf) = app.staff_session("admin").await;
    let (status, _) = app
        .staff_form(
            "/app/ask",
            admin.clone(),
            form(&admin_csrf, "to plan your treatment"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(app.clinic.asked.lock().unwrap().len(), 2);
    // Each request, sent or not, is in the staff's action log.
    let r = app
        .http
        .get(format!("{}/app/audit", app.base))
        .header("cookie", format!("{SESSION}={admin}"))
        .send()
        .await
        .unwrap();
    let audit = r.text().await.unwrap();
    assert!(
        audit.contains(&format!(
            "<td>dr.ada</td><td>asked a patient</td><td>about record {data} for treatment: sent as request"
        )),
        "{audit}"
    );
    assert!(
        audit.contains("for treatment: not sent: the reason must be 10 to 500 characters"),
        "{audit}"
    );
}

#[tokio::test]
async fn clinicians_import_a_patients_bundle_on_their_behalf() {
    let app = app().await;
    let (session, csrf) = app.staff_session("dr.ada").await;
    let cookie = format!("{SESSION}={session}");
    let r = app
        .http
        .get(format!("{}/app/import", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("enctype=\"multipart/form-data\"")
    );
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": []}).to_string();
    let post = |csrf: &str, patient: &str, bundle: Vec<u8>, cookie: &str| {
        let form = reqwest::multipart::Form::new()
            .text("csrf", csrf.to_string())
            .text("patient", patient.to_string())
            .part(
                "bundle",
                reqwest::multipart::Part::bytes(bundle).file_name("bundle.json"),
            );
        app.http
            .post(format!("{}/app/import", app.base))
            .header("cookie", cookie.to_string())
            .multipart(form)
            .send()
    };
    let owner = patient().account().to_string();
    // Without the session's token, for a malformed account, with a malformed Bundle, too
    // large: nothing is stored, and the page says why.
    let r = post("", &owner, bundle.clone().into_bytes(), &cookie)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post(&csrf, "patient-1", bundle.clone().into_bytes(), &cookie)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("64 hex digits"));
    let r = post(&csrf, &owner, b"{not json".to_vec(), &cookie)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Nothing was stored: the Bundle is not JSON")
    );
    let r = post(&csrf, &owner, vec![b' '; 5 * 1024 * 1024], &cookie)
        .await
        .unwrap();
    assert!(
        matches!(
            r.status(),
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE
        ),
        "{}",
        r.status()
    );
    assert!(app.clinic.imported.lock().unwrap().is_empty());
    // Imported, by the clinician, for the patient.
    let r = post(&csrf, &owner, bundle.clone().into_bytes(), &cookie)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("The patient is told in their inbox")
    );
    let imported = app.clinic.imported.lock().unwrap().clone();
    assert_eq!(imported.len(), 1);
    assert_eq!(
        (
            imported[0].0,
            imported[0].1.as_str(),
            imported[0].2.as_slice()
        ),
        (patient().account(), "Dr Ada", bundle.as_bytes())
    );
    // Only clinicians import.
    let (admin, admin_csrf) = app.staff_session("admin").await;
    let r = post(
        &admin_csrf,
        &owner,
        bundle.into_bytes(),
        &format!("{SESSION}={admin}"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.clinic.imported.lock().unwrap().len(), 1);
}
