//! The browser application in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs) against a real `secnet dev` node: a hospital
//! admin signs in, registers a staff member whose name holds a script (shown as text, never
//! run), a form posted without its CSRF token is refused, the search page answers, and
//! axe-core finds no serious accessibility violation on any page; a patient's whole story on
//! a four-validator network; and a node lying about a patient's history, caught by the
//! patient's browser. Each page's screenshot is saved under `target/tmp/browser/`.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use common::{DevNode, path, secnet};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_PASSWORD: &str = "hospital admin passphrase";

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn driver() -> Driver {
    let port = common::free_port_block(1);
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start chromedriver ({e}): install Debian's chromium and chromium-driver (./.ci/run does)")
        });
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, url }
}

/// A Chromium session that accepts the TLS certificates of the nodes whose data
/// directories are `nodes` (pinned by public key) and no other certificate.
async fn browser(driver: &Driver, nodes: &[&Path]) -> Client {
    let pins: Vec<String> = nodes
        .iter()
        .map(|d| {
            let cert = std::fs::read(d.join("tls").join("cert.pem")).unwrap();
            secnet_tls::fingerprint(&cert).unwrap()
        })
        .collect();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=412,915",
                format!("--ignore-certificate-errors-spki-list={}", pins.join(","))
            ]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(artifacts().join(format!("{name}.png")), png).unwrap();
}

/// Runs axe-core in the page and returns its serious and critical violations.
async fn serious_violations(c: &Client, axe: &str) -> Vec<Value> {
    c.execute(axe, vec![]).await.unwrap();
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document).then(r => done(r.violations
                 .filter(v => v.impact === 'serious' || v.impact === 'critical')
                 .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.html)}))));",
            vec![],
        )
        .await
        .unwrap();
    found.as_array().cloned().unwrap_or_default()
}

async fn text_of_page(c: &Client) -> String {
    c.find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_use_the_application_in_chromium_safely_and_accessibly() {
    let axe_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser/node_modules/axe-core/axe.min.js");
    let axe = std::fs::read_to_string(&axe_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `npm ci --prefix crates/cli/tests/browser` (./.ci/run does)",
            axe_path.display()
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hospital-a");
    let out = secnet()
        .args([
            "staff",
            "add",
            "--data-dir",
            path(&data),
            "--user",
            "admin",
            "--name",
            "Hospital A administrator",
            "--role",
            "admin",
        ])
        .env("SECNET_STAFF_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node = DevNode::start(&data);
    let driver = driver();
    let c = browser(&driver, &[&data]).await;
    let app = format!("{}/app", node.url);

    // Sign in.
    c.goto(&app).await.unwrap();
    c.wait()
        .for_element(Locator::Css("#username"))
        .await
        .unwrap();
    screenshot(&c, "1-sign-in").await;
    let mut violations = serious_violations(&c, &axe).await;
    c.find(Locator::Css("#username"))
        .await
        .unwrap()
        .send_keys("admin")
        .await
        .unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(ADMIN_PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::XPath("//h1[contains(., 'Welcome')]"))
        .await
        .unwrap();
    assert!(text_of_page(&c).await.contains("Hospital A administrator"));
    screenshot(&c, "2-home").await;
    violations.extend(serious_violations(&c, &axe).await);

    // Search by disease (nothing is registered on this fresh node yet).
    c.goto(&format!("{app}/search?q=E11")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("p[role=status]"))
        .await
        .unwrap();
    assert!(text_of_page(&c).await.contains("0 results."));
    screenshot(&c, "2b-search").await;
    violations.extend(serious_violations(&c, &axe).await);

    // Register a staff member whose name holds a script: shown as text, never run.
    let script_name = "<script>document.title='owned'</script> Eve";
    c.goto(&format!("{app}/staff")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("#new-username"))
        .await
        .unwrap();
    for (field, value) in [
        ("#new-username", "eve"),
        ("#new-name", script_name),
        ("#new-password", "eve's long password"),
    ] {
        c.find(Locator::Css(field))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    c.find(Locator::Css("form.card button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::XPath("//p[contains(., 'Registered eve')]"))
        .await
        .unwrap();
    let shown = c
        .execute(
            "return [...document.querySelectorAll('td')].map(td => td.textContent);",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        shown.as_array().unwrap().iter().any(|t| t == script_name),
        "the name is shown as the text it is: {shown}"
    );
    let scripts = c
        .execute("return document.scripts.length;", vec![])
        .await
        .unwrap();
    assert_eq!(
        scripts,
        json!(1),
        "only the application's own script is on the page"
    );
    assert_ne!(c.title().await.unwrap(), "owned");
    screenshot(&c, "3-staff").await;
    violations.extend(serious_violations(&c, &axe).await);

    // A form posted without its CSRF token is refused, and nothing is registered.
    c.execute(
        "const f = document.querySelector('form.card');
         f.querySelector('input[name=csrf]').remove();
         f.querySelector('#new-username').value = 'mallory';
         f.querySelector('#new-name').value = 'Mallory';
         f.querySelector('#new-password').value = 'mallory long password';
         f.submit();",
        vec![],
    )
    .await
    .unwrap();
    c.wait()
        .for_element(Locator::XPath("//h1[contains(., 'Form refused')]"))
        .await
        .unwrap();
    assert!(text_of_page(&c).await.contains("security token"));
    screenshot(&c, "4-csrf-refused").await;
    c.goto(&format!("{app}/staff")).await.unwrap();
    c.wait().for_element(Locator::Css("table")).await.unwrap();
    assert!(!text_of_page(&c).await.contains("mallory"));

    assert!(
        violations.is_empty(),
        "axe-core found serious accessibility violations: {}",
        serde_json::to_string_pretty(&violations).unwrap()
    );
    c.close().await.unwrap();
}

/// A small FHIR Bundle: a patient whose name holds a script, a condition, an observation and
/// a medication.
fn sample_bundle() -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "p1",
                "name": [{"given": ["<script>document.title='owned'</script>"], "family": "Ann"}],
                "birthDate": "1970-01-02", "gender": "female"}},
            {"fullUrl": "urn:uuid:c1", "resource": {"resourceType": "Condition", "id": "c1",
                "subject": {"reference": "urn:uuid:p1"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2"}]},
                "clinicalStatus": {"coding": [{"code": "active"}]}, "onsetDateTime": "2011-04-05"}},
            {"fullUrl": "urn:uuid:o1", "resource": {"resourceType": "Observation", "id": "o1",
                "subject": {"reference": "urn:uuid:p1"}, "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4", "display": "Hemoglobin A1c"}]},
                "valueQuantity": {"value": 7.1, "unit": "%"}, "effectiveDateTime": "2020-02-02"}},
            {"fullUrl": "urn:uuid:m1", "resource": {"resourceType": "MedicationRequest", "id": "m1",
                "subject": {"reference": "urn:uuid:p1"}, "status": "active", "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975", "display": "Metformin 500 MG"}]},
                "authoredOn": "2011-04-05"}}
        ]
    })
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn type_into(c: &Client, css: &str, text: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Waits until the page's status line says `done` (or fails on an error it shows).
async fn wait_status(c: &Client, done: &str) {
    let start = Instant::now();
    loop {
        let s = c
            .find(Locator::Css("#status"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap_or_default();
        if s.contains(done) {
            return;
        }
        let class = c
            .find(Locator::Css("#status"))
            .await
            .unwrap()
            .attr("class")
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(class != "error", "the page reports an error: {s}");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "waited for {done:?}; the page says {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The account (hex) of organisation `i` of the network in `dir`.
fn organisation(dir: &Path, i: usize) -> String {
    let genesis: secnet_types::Genesis =
        serde_json::from_slice(&std::fs::read(dir.join("genesis.json")).unwrap()).unwrap();
    genesis.validators[i].key.to_string()
}

/// A clinician signed in at `api` asks the patient of the first search hit that does not
/// name this hospital for conditions and observations, for treatment.
async fn ask_the_patient(c: &Client, api: &str) {
    c.goto(&format!("{api}/app/search?q=44054006"))
        .await
        .unwrap();
    click(c, "a[href^='/app/ask?']").await;
    c.wait().for_element(Locator::Css("#reason")).await.unwrap();
    click(c, "input[name=observations]").await;
    type_into(c, "#reason", "to continue your diabetes care with us").await;
    click(c, "form[action='/app/ask'] button[type=submit]").await;
    c.wait()
        .for_element(Locator::Css("#ask-sent"))
        .await
        .unwrap();
}

/// Waits until the page's script has verified every log entry on it; fails if any entry
/// fails verification.
async fn wait_verified(c: &Client) {
    let start = Instant::now();
    loop {
        let summary = c.find(Locator::Css("#verify-summary")).await.unwrap();
        // The class is set after the text: read it first, so the text is at least as new.
        let class = summary.attr("class").await.unwrap().unwrap_or_default();
        let text = summary.text().await.unwrap_or_default();
        assert!(class != "error", "verification failed: {text}");
        if class == "ok" {
            assert!(text.contains("entries verified"), "{text}");
            let failed = c
                .find_all(Locator::Css("td.proof:not(.verified)"))
                .await
                .unwrap();
            assert!(failed.is_empty(), "unverified rows: {text}");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the history was never verified: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Reloads `url` until its main text contains `what`.
async fn wait_page(c: &Client, url: &str, what: &str) -> String {
    let start = Instant::now();
    loop {
        c.goto(url).await.unwrap();
        let text = text_of_page(c).await;
        if text.contains(what) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{url} never showed {what:?}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn staff_sign_in(c: &Client, api: &str, user: &str, password: &str) {
    c.goto(&format!("{api}/app/login")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("#username"))
        .await
        .unwrap();
    type_into(c, "#username", user).await;
    type_into(c, "#password", password).await;
    click(c, "button[type=submit]").await;
    c.wait()
        .for_element(Locator::XPath("//h1[contains(., 'Welcome')]"))
        .await
        .unwrap();
}

/// Searches for the diabetes code and reads the first result; returns the page's text.
async fn search_and_read(c: &Client, api: &str) -> String {
    c.goto(&format!("{api}/app/search?q=44054006"))
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("p[role=status]"))
        .await
        .unwrap();
    click(c, "form[action='/app/read'] button").await;
    c.wait()
        .for_element(Locator::XPath(
            "//h1[contains(., 'Record') or contains(., 'Access refused')]",
        ))
        .await
        .unwrap();
    text_of_page(c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_consents_and_hospitals_read_or_are_refused_in_chromium() {
    let axe = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/browser/node_modules/axe-core/axe.min.js"),
    )
    .expect("axe-core: run `npm ci --prefix crates/cli/tests/browser` (./.ci/run does)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p2p = common::free_port_block(4);
    let api = common::free_port_block(4);
    common::ok(&[
        "testnet",
        "init",
        "--validators",
        "4",
        "--accounts",
        "1",
        "--dir",
        path(d),
        "--p2p-base-port",
        &p2p.to_string(),
        "--api-base-port",
        &api.to_string(),
        "--names",
        "Northside Hospital,Riverside Hospital,Institute for Clinical Research,Lakeside Clinic",
        "--authority",
        path(common::authority()),
    ]);
    for (node, user, name, role) in [
        (0, "dr.ada", "Dr Ada", "clinician"),
        (1, "dr.bob", "Dr Bob", "clinician"),
        (1, "it.admin", "Riverside administrator", "admin"),
    ] {
        let out = secnet()
            .args([
                "staff",
                "add",
                "--data-dir",
                path(&d.join(format!("node{node}"))),
                "--user",
                user,
                "--name",
                name,
                "--role",
                role,
            ])
            .env("SECNET_STAFF_PASSWORD", "a clinician's passphrase")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _nodes = common::Validators(
        (0..4)
            .map(|i| Some(common::start_validator(d, i, "node.log")))
            .collect(),
    );
    let hospital_a = format!("https://127.0.0.1:{api}");
    let hospital_b = format!("https://127.0.0.1:{}", api + 1);
    common::wait_for(
        "the validators to finalize",
        Duration::from_secs(60),
        || common::height(&hospital_a) > 0,
    );
    let bundle = d.join("my-records.json");
    std::fs::write(&bundle, sample_bundle().to_string()).unwrap();

    let driver = driver();
    let node_dirs: Vec<PathBuf> = (0..4).map(|i| d.join(format!("node{i}"))).collect();
    let pinned: Vec<&Path> = node_dirs.iter().map(PathBuf::as_path).collect();
    let c = browser(&driver, &pinned).await;
    let mut violations = Vec::new();

    // 1. A patient creates their key in the browser, signs in and imports their records.
    c.goto(&format!("{hospital_a}/app/patient")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("#create-pass"))
        .await
        .unwrap();
    violations.extend(serious_violations(&c, &axe).await);
    type_into(&c, "#create-pass", "my own long passphrase").await;
    type_into(&c, "#create-pass2", "my own long passphrase").await;
    click(&c, "#create-form button[type=submit]").await;
    c.wait()
        .for_element(Locator::XPath("//h1[contains(., 'My records')]"))
        .await
        .unwrap();
    let account = c
        .find(Locator::Css("#patient-app"))
        .await
        .unwrap()
        .attr("data-account")
        .await
        .unwrap()
        .unwrap();
    c.find(Locator::Css("#import-file"))
        .await
        .unwrap()
        .send_keys(path(&bundle))
        .await
        .unwrap();
    click(&c, "#import-form button[type=submit]").await;
    wait_status(&c, "Imported").await;
    let records = wait_page(
        &c,
        &format!("{hospital_a}/app/patient/records"),
        "Diabetes mellitus type 2",
    )
    .await;
    assert!(records.contains("SNOMED CT 44054006"), "{records}");
    assert!(
        records.contains("7.10 %") || records.contains("7.1 %"),
        "{records}"
    );
    assert!(
        records.contains("<script>document.title='owned'</script>"),
        "a name is shown as text: {records}"
    );
    assert_ne!(c.title().await.unwrap(), "owned");
    screenshot(&c, "p1-records").await;
    violations.extend(serious_violations(&c, &axe).await);

    // 2. The patient consents to hospital A for treatment: conditions and observations.
    c.goto(&format!("{hospital_a}/app/patient/consent"))
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("#consent-form"))
        .await
        .unwrap();
    click(&c, "input[name=categories][value=observations]").await;
    click(&c, "#consent-form button[type=submit]").await;
    c.wait()
        .for_element(Locator::Css("#review:not([hidden])"))
        .await
        .unwrap();
    let review = text_of_page(&c).await;
    assert!(review.contains("You are about to sign"), "{review}");
    assert!(
        review.contains("permit"),
        "the Cedar policy is shown: {review}"
    );
    screenshot(&c, "p2-consent-review").await;
    violations.extend(serious_violations(&c, &axe).await);
    click(&c, "#sign-plan").await;
    wait_status(&c, "Done").await;
    let consent = wait_page(
        &c,
        &format!("{hospital_a}/app/patient/consent"),
        "Northside Hospital",
    )
    .await;
    assert!(consent.contains("conditions, observations"), "{consent}");
    screenshot(&c, "p2-consent").await;

    // 3. A clinician at hospital A finds the record by its condition code, pays and reads it:
    // consented categories only.
    staff_sign_in(&c, &hospital_a, "dr.ada", "a clinician's passphrase").await;
    c.goto(&format!("{hospital_a}/app/search?q=44054006"))
        .await
        .unwrap();
    let listed = c
        .find(Locator::Css("form[action='/app/read'] input[name=data]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let read = search_and_read(&c, &hospital_a).await;
    assert!(read.contains("Diabetes mellitus type 2"), "{read}");
    assert!(read.contains("Hemoglobin A1c"), "{read}");
    assert!(
        !read.contains("Metformin"),
        "medications were not consented: {read}"
    );
    assert!(
        !read.contains("1970-01-02"),
        "demographics were not consented: {read}"
    );
    assert!(read.contains("paid 10"), "{read}");
    screenshot(&c, "p3-clinician-reads").await;

    // 3b. Dr Ada imports the record of a visit for the patient: held at Northside, owned by
    // the patient, who is told.
    let visit = d.join("visit.json");
    std::fs::write(
        &visit,
        json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "p1", "gender": "female"}},
            {"fullUrl": "urn:uuid:c2", "resource": {"resourceType": "Condition", "id": "c2",
                "subject": {"reference": "urn:uuid:p1"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertensive disorder"}]},
                "onsetDateTime": "2026-11-30"}}
        ]})
        .to_string(),
    )
    .unwrap();
    c.goto(&format!("{hospital_a}/app/import")).await.unwrap();
    type_into(&c, "#patient", &account).await;
    c.find(Locator::Css("#bundle"))
        .await
        .unwrap()
        .send_keys(path(&visit))
        .await
        .unwrap();
    click(&c, "form[action='/app/import'] button[type=submit]").await;
    c.wait()
        .for_element(Locator::Css("#import-done"))
        .await
        .unwrap();
    screenshot(&c, "p3b-imported-for-the-patient").await;
    violations.extend(serious_violations(&c, &axe).await);
    wait_page(
        &c,
        &format!("{hospital_a}/app/patient/records"),
        "Hypertensive disorder",
    )
    .await;
    violations.extend(serious_violations(&c, &axe).await);

    // 4. The patient sees the delivery and is paid: 10, of which the holder keeps 10 %.
    let history = wait_page(
        &c,
        &format!("{hospital_a}/app/patient/history"),
        "delivered",
    )
    .await;
    assert!(history.contains("Northside Hospital"), "{history}");
    assert!(history.contains("treatment"), "{history}");
    let history = wait_page(
        &c,
        &format!("{hospital_a}/app/patient/history"),
        "Rewards paid to you\n9",
    )
    .await;
    assert!(history.contains("delivered"), "{history}");
    // The statement of rewards: Northside paid 10 once, kept 1 as holder, 9 reached the
    // patient.
    let mut cells = Vec::new();
    for cell in c
        .find_all(Locator::Css("#statement tbody td"))
        .await
        .unwrap()
    {
        cells.push(cell.text().await.unwrap());
    }
    assert_eq!(cells.len(), 8, "one payment: {cells:?}");
    assert_eq!(
        cells[1..6],
        [
            "Northside Hospital",
            "record shared with Northside Hospital",
            "10",
            "1 (Northside Hospital)",
            "9"
        ],
        "{cells:?}"
    );
    // Every entry is verified in the browser against the log head the validators cosigned,
    // under the validators the browser pinned: the same network the genesis defines.
    wait_verified(&c).await;
    let genesis: secnet_types::Genesis =
        serde_json::from_slice(&std::fs::read(d.join("genesis.json")).unwrap()).unwrap();
    let pinned = c
        .find(Locator::Css("#network-fingerprint"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pinned, secnet_certified::network_fingerprint(&genesis));
    // The same balance, verified against the validators' certified state.
    let balance = common::json(&[
        "account",
        &account,
        "--node",
        &hospital_a,
        "--genesis",
        path(&d.join("genesis.json")),
        "--json",
    ]);
    assert_eq!(balance["balance"], 9, "{balance}");
    screenshot(&c, "p4-history").await;
    // The history as FHIR AuditEvents, asked for with the patient's key.
    click(&c, "#export-fhir").await;
    wait_status(&c, "Downloaded your history").await;
    violations.extend(serious_violations(&c, &axe).await);

    // 5. Hospital B, without consent, is refused by the holder; the patient sees it.
    staff_sign_in(&c, &hospital_b, "dr.bob", "a clinician's passphrase").await;
    c.goto(&format!("{hospital_b}/app/search?q=44054006"))
        .await
        .unwrap();
    let found = wait_page(
        &c,
        &format!("{hospital_b}/app/search?q=44054006"),
        "1 result",
    )
    .await;
    assert!(found.contains("other organisations only"), "{found}");
    let refused = search_and_read(&c, &hospital_b).await;
    assert!(refused.contains("Refused"), "{refused}");
    assert!(
        !refused.contains("Diabetes mellitus type 2 SNOMED"),
        "{refused}"
    );
    screenshot(&c, "p5-hospital-b-refused").await;

    // 5a. Dr Bob asks the patient for access; the patient denies it with their key.
    ask_the_patient(&c, &hospital_b).await;
    screenshot(&c, "p5a-ask-sent").await;
    violations.extend(serious_violations(&c, &axe).await);
    let inbox = wait_page(
        &c,
        &format!("{hospital_a}/app/patient/inbox"),
        "Riverside Hospital",
    )
    .await;
    assert!(
        inbox.contains("to continue your diabetes care with us"),
        "{inbox}"
    );
    assert!(inbox.contains("Dr Bob"), "{inbox}");
    assert!(
        inbox.contains("Northside Hospital (Dr Ada) imported 2 records on your behalf"),
        "{inbox}"
    );
    screenshot(&c, "p5a-inbox").await;
    violations.extend(serious_violations(&c, &axe).await);
    click(&c, "button.deny").await;
    wait_status(&c, "Denied").await;
    wait_page(
        &c,
        &format!("{hospital_a}/app/patient/inbox"),
        "you denied it",
    )
    .await;
    // 5b. Asked again, the patient approves for less than asked: conditions only.
    ask_the_patient(&c, &hospital_b).await;
    wait_page(
        &c,
        &format!("{hospital_a}/app/patient/inbox"),
        "waiting for your answer",
    )
    .await;
    click(&c, "a[href*='consent?ask=']").await;
    c.wait().for_element(Locator::Css("#asked")).await.unwrap();
    let selected = c
        .find(Locator::Css("#audience"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(selected, organisation(d, 1), "the asker is chosen");
    click(&c, "input[name=categories][value=observations]").await;
    click(&c, "#consent-form button[type=submit]").await;
    c.wait()
        .for_element(Locator::Css("#review:not([hidden])"))
        .await
        .unwrap();
    click(&c, "#sign-plan").await;
    wait_status(&c, "Done").await;
    let inbox = wait_page(
        &c,
        &format!("{hospital_a}/app/patient/inbox"),
        "you consented to conditions for treatment",
    )
    .await;
    assert!(inbox.contains("you denied it"), "{inbox}");
    // Riverside sees both answers, asked of the holder as Riverside.
    let sent = wait_page(
        &c,
        &format!("{hospital_b}/app/asks"),
        "approved by the patient: conditions for treatment",
    )
    .await;
    assert!(sent.contains("denied by the patient"), "{sent}");
    screenshot(&c, "p5b-requests-sent").await;
    violations.extend(serious_violations(&c, &axe).await);
    // Riverside now reads what was consented, and nothing more.
    wait_page(
        &c,
        &format!("{hospital_b}/app/search?q=44054006"),
        "this hospital",
    )
    .await;
    c.find(Locator::XPath(
        "//tr[td[normalize-space(.)='this hospital']]//form[@action='/app/read']//button",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    c.wait()
        .for_element(Locator::XPath(
            "//h1[contains(., 'Record') or contains(., 'Access refused')]",
        ))
        .await
        .unwrap();
    let read = text_of_page(&c).await;
    assert!(read.contains("Diabetes mellitus type 2"), "{read}");
    assert!(
        !read.contains("Hemoglobin A1c"),
        "observations were not consented to Riverside: {read}"
    );
    screenshot(&c, "p5b-riverside-reads").await;

    let history = wait_page(&c, &format!("{hospital_a}/app/patient/history"), "refused").await;
    assert!(history.contains("Riverside Hospital"), "{history}");
    wait_verified(&c).await;
    // Riverside's administrator sees, in its own audit, what it paid and that it was refused.
    c.goto(&format!("{hospital_b}/app/home")).await.unwrap();
    click(&c, "form[action='/app/logout'] button[type=submit]").await;
    c.wait()
        .for_element(Locator::Css("#username"))
        .await
        .unwrap();
    staff_sign_in(&c, &hospital_b, "it.admin", "a clinician's passphrase").await;
    let audit = wait_page(&c, &format!("{hospital_b}/app/audit"), "refused").await;
    assert!(audit.contains("Paid for subscriptions\n20"), "{audit}");
    assert!(
        audit.contains("paid 10: 1 to the holder, 9 to the patient"),
        "{audit}"
    );
    assert!(audit.contains("refused: policy denied"), "{audit}");
    screenshot(&c, "p5-hospital-b-audit").await;
    violations.extend(serious_violations(&c, &axe).await);

    // 6. The patient revokes; hospital A is refused from then on.
    c.goto(&format!("{hospital_a}/app/patient/consent"))
        .await
        .unwrap();
    let revoke_a = format!("button.revoke[data-audience='{}']", organisation(d, 0));
    c.wait().for_element(Locator::Css(&revoke_a)).await.unwrap();
    click(&c, &revoke_a).await;
    c.wait()
        .for_element(Locator::Css("#review:not([hidden])"))
        .await
        .unwrap();
    click(&c, "#sign-plan").await;
    wait_status(&c, "Done").await;
    let start = Instant::now();
    loop {
        c.goto(&format!("{hospital_a}/app/patient/consent"))
            .await
            .unwrap();
        if c.find_all(Locator::Css(&revoke_a))
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the consent to Northside was never withdrawn"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        text_of_page(&c).await.contains("Riverside Hospital"),
        "the other consent stays"
    );
    let search = text_of_page_at(&c, &format!("{hospital_a}/app/search?q=44054006")).await;
    assert!(
        search.contains("1 result") && search.contains("other organisations only"),
        "withdrawn: only Riverside's registration is left: {search}"
    );
    // A page opened before the revocation still posts the old record: refused.
    c.execute(
        "const f = document.createElement('form');
         f.method = 'post'; f.action = '/app/read';
         for (const [k, v] of [['csrf', document.querySelector('input[name=csrf]').value], ['data', arguments[0]], ['price', '10']]) {
           const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
         }
         document.body.appendChild(f); f.submit();",
        vec![json!(listed)],
    )
    .await
    .unwrap();
    c.wait()
        .for_element(Locator::XPath("//h1[contains(., 'Access refused')]"))
        .await
        .unwrap();
    let after = text_of_page(&c).await;
    assert!(after.contains("withdrew"), "{after}");
    screenshot(&c, "p6-after-revocation").await;

    // 7. Break-glass: a clinician at the holding hospital reads without consent, giving a
    // reason; the ledger records it first, and the patient is shown it, flagged.
    c.goto(&format!("{hospital_a}/app/emergency"))
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("#patient"))
        .await
        .unwrap();
    violations.extend(serious_violations(&c, &axe).await);
    type_into(&c, "#patient", &account).await;
    type_into(&c, "#reason", "unconscious in the emergency room").await;
    click(&c, "form[action='/app/emergency'] button[type=submit]").await;
    c.wait()
        .for_element(Locator::XPath(
            "//p[contains(., 'Emergency access recorded')]",
        ))
        .await
        .unwrap();
    let glass = text_of_page(&c).await;
    assert!(glass.contains("Diabetes mellitus type 2"), "{glass}");
    screenshot(&c, "p7-break-glass").await;
    let history = wait_page(
        &c,
        &format!("{hospital_a}/app/patient/history"),
        "in an emergency without your consent 1 time",
    )
    .await;
    assert!(
        history.contains("unconscious in the emergency room"),
        "{history}"
    );
    assert!(history.contains("Dr Ada"), "{history}");
    screenshot(&c, "p7-patient-sees-break-glass").await;
    violations.extend(serious_violations(&c, &axe).await);

    assert!(
        violations.is_empty(),
        "axe-core found serious accessibility violations: {}",
        serde_json::to_string_pretty(&violations).unwrap()
    );
    c.close().await.unwrap();
}

async fn text_of_page_at(c: &Client, url: &str) -> String {
    c.goto(url).await.unwrap();
    c.wait().for_element(Locator::Css("main")).await.unwrap();
    text_of_page(c).await
}

/// What the lying node of [`a_node_that_lies_about_a_patients_history_is_caught_in_the_browser`]
/// serves besides its pages: the true log (for proofs), the leaves it hands out, and how
/// many validators cosigned its head.
struct Served {
    log: secnet_merkle::log::MerkleLog,
    leaves: Vec<Vec<u8>>,
    cosigners: usize,
}

/// A node holding one patient's data whose pages, log answers and validator set the test
/// changes at will.
struct Liar {
    history: std::sync::Mutex<Vec<secnet_web::services::HistoryItem>>,
    validators: std::sync::Mutex<Vec<secnet_types::AccountId>>,
    names: std::sync::Mutex<Vec<secnet_web::services::Organisation>>,
}

const LIAR_CHAIN: &str = "liar-chain";

fn liar_node() -> secnet_types::AccountId {
    secnet_types::Keypair::deterministic("liar", 0).account()
}

fn validator_keys() -> Vec<secnet_types::Keypair> {
    (0..4)
        .map(|i| secnet_types::Keypair::deterministic("validator", i))
        .collect()
}

impl secnet_web::Services for Liar {
    fn me(&self) -> secnet_types::AccountId {
        liar_node()
    }
    fn chain_id(&self) -> String {
        LIAR_CHAIN.into()
    }
    fn listings(&self) -> secnet_web::services::Listings {
        std::sync::Arc::default()
    }
    fn organisations(&self) -> Vec<secnet_web::services::Organisation> {
        self.names.lock().unwrap().clone()
    }
    fn validators(&self) -> Vec<(secnet_types::AccountId, String)> {
        self.validators
            .lock()
            .unwrap()
            .iter()
            .map(|v| (*v, String::new()))
            .collect()
    }
    fn account(
        &self,
        _: &secnet_types::AccountId,
    ) -> Result<secnet_web::services::AccountFacts, String> {
        Ok(secnet_web::services::AccountFacts {
            balance: 18,
            nonce: 1,
            encryption_key: true,
        })
    }
    fn history(
        &self,
        _: &secnet_types::AccountId,
    ) -> Result<Vec<secnet_web::services::HistoryItem>, String> {
        Ok(self.history.lock().unwrap().clone())
    }
}

/// The true access log about the patient's data: a grant, its delivery and a payment.
fn true_history(patient: secnet_types::AccountId) -> Vec<secnet_web::services::HistoryItem> {
    use secnet_contract::LogEntry;
    use secnet_types::{AccessDecision, AccessEntry, Hash};
    let hospital = secnet_types::Keypair::deterministic("hospital", 1).account();
    let (data, grant) = (Hash([1; 32]), Hash([2; 32]));
    let entries = vec![
        LogEntry::Payment {
            height: 4,
            tx: Hash([3; 32]),
            data,
            consumer: hospital,
            holder: liar_node(),
            holder_amount: 2,
            owner: patient,
            owner_amount: 18,
        },
        LogEntry::Grant {
            height: 5,
            tx: grant,
            grant,
            data,
            requester: hospital,
            holder: liar_node(),
            purpose: "treatment".into(),
            expires_at_ms: 1_800_000_600_000,
        },
        LogEntry::Access {
            height: 6,
            tx: Hash([4; 32]),
            holder: liar_node(),
            entry: AccessEntry {
                data,
                grant: Some(grant),
                requester: hospital,
                decision: AccessDecision::Delivered,
                score_ppm: 1_000,
                at_ms: 1_800_000_001_000,
            },
        },
    ];
    entries
        .into_iter()
        .zip(0u64..)
        .map(|(entry, index)| secnet_web::services::HistoryItem {
            index,
            entry,
            block_ms: 1_800_000_000_000 + index,
        })
        .collect()
}

/// Serves the liar's application with `/v1/checkpoint` and `/v1/log/{index}` answered from
/// `served`; returns its base URL.
async fn serve_liar(
    web: std::sync::Arc<secnet_web::Web>,
    served: std::sync::Arc<std::sync::Mutex<Served>>,
) -> String {
    use axum::extract::{Path as UrlPath, Query, State};
    use axum::routing::get;
    type Shared = std::sync::Arc<std::sync::Mutex<Served>>;
    async fn checkpoint(State(served): State<Shared>) -> axum::Json<Value> {
        let s = served.lock().unwrap();
        let checkpoint = secnet_certified::Checkpoint {
            origin: secnet_certified::checkpoint::log_origin(LIAR_CHAIN),
            tree_size: s.log.len(),
            root_hash: secnet_types::Hash(s.log.root()),
        };
        let cosignatures = validator_keys()
            .iter()
            .take(s.cosigners)
            .map(|k| checkpoint.cosign(k, 1_800_000_000))
            .collect();
        let note = secnet_certified::CosignedCheckpoint {
            checkpoint,
            cosignatures,
        }
        .note(LIAR_CHAIN);
        axum::Json(json!({ "note": note }))
    }
    async fn log(
        State(served): State<Shared>,
        UrlPath(index): UrlPath<u64>,
        Query(q): Query<std::collections::HashMap<String, u64>>,
    ) -> axum::Json<secnet_certified::log_proof::InclusionProof> {
        let s = served.lock().unwrap();
        let size = q["size"];
        let leaf = s.leaves[index as usize].clone();
        axum::Json(secnet_certified::log_proof::InclusionProof {
            tree_size: size,
            root_hash: secnet_types::Hash(s.log.root_at(size).unwrap()),
            leaf_index: index,
            leaf_hash: secnet_types::Hash(secnet_merkle::log::leaf_hash(&leaf)),
            leaf,
            audit_path: s
                .log
                .inclusion_proof(index, size)
                .unwrap()
                .into_iter()
                .map(secnet_types::Hash)
                .collect(),
        })
    }
    let router = secnet_web::router(web).merge(
        axum::Router::new()
            .route("/v1/checkpoint", get(checkpoint))
            .route("/v1/log/{index}", get(log))
            .with_state(served),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    base
}

/// Waits until the history page's verification ends in an error; returns what it says.
async fn wait_verification_error(c: &Client) -> String {
    let start = Instant::now();
    loop {
        let summary = c.find(Locator::Css("#verify-summary")).await.unwrap();
        // The class is set after the text: read it first, so the text is at least as new.
        let class = summary.attr("class").await.unwrap().unwrap_or_default();
        let text = summary.text().await.unwrap_or_default();
        assert!(class != "ok", "a lie was verified: {text}");
        if class == "error" {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the verification never ended: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The texts of the proof cells of the history's timeline, oldest entry last.
async fn proof_cells(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for cell in c.find_all(Locator::Css("#history td.proof")).await.unwrap() {
        out.push(cell.text().await.unwrap());
    }
    out
}

/// The patient's browser checks the history itself: a node that rewrites a row, forges the
/// leaf to match, shows a head too few validators cosigned, or names another validator set
/// is caught, whatever its pages say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lies_about_a_patients_history_is_caught_in_the_browser() {
    use secnet_contract::LogEntry;
    use secnet_types::{AccessDecision, RefusalReason};
    let patient = secnet_types::Keypair::deterministic("patient", 0);
    let truth = true_history(patient.account());
    let mut log = secnet_merkle::log::MerkleLog::new();
    let leaves: Vec<Vec<u8>> = truth.iter().map(|i| i.entry.to_bytes()).collect();
    for leaf in &leaves {
        log.append(leaf);
    }
    let served = std::sync::Arc::new(std::sync::Mutex::new(Served {
        log,
        leaves,
        cosigners: 4,
    }));
    let validators: Vec<_> = validator_keys().iter().map(|k| k.account()).collect();
    let liar = std::sync::Arc::new(Liar {
        history: std::sync::Mutex::new(truth.clone()),
        validators: std::sync::Mutex::new(validators.clone()),
        names: std::sync::Mutex::new(Vec::new()),
    });
    let dir = tempfile::tempdir().unwrap();
    let web = secnet_web::Web::open(dir.path(), "Liar Clinic", liar.clone()).unwrap();
    let base = serve_liar(web, served.clone()).await;

    let driver = driver();
    let c = browser(&driver, &[]).await;
    // The patient signs in: the browser posts the signed challenge, so it holds the session.
    c.goto(&format!("{base}/app/patient")).await.unwrap();
    let http = common::http();
    let challenge: Value = http
        .post(format!("{base}/app/patient/challenge"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let challenge = challenge["challenge"].as_str().unwrap().to_string();
    let raw: [u8; 32] = hex::decode(&challenge).unwrap().try_into().unwrap();
    let signature = patient.sign(
        secnet_web::patient::SIGN_IN_NAMESPACE,
        &secnet_web::patient::sign_in_message(&liar_node(), &raw),
    );
    let body = json!({
        "account": patient.account().to_string(),
        "challenge": challenge,
        "signature": hex::encode(signature.0),
    })
    .to_string();
    let status = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/app/patient/session', {method: 'POST', headers: {'content-type': 'application/json'}, body: arguments[0]})
               .then(r => done(r.status));",
            vec![json!(body)],
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let history = format!("{base}/app/patient/history");

    // The truth verifies, and pins the validators.
    c.goto(&history).await.unwrap();
    wait_verified(&c).await;
    screenshot(&c, "liar-0-truth").await;

    // 1. The node rewrites a row (the delivery shown as a refusal): that row fails.
    liar.history.lock().unwrap()[2].entry = match truth[2].entry.clone() {
        LogEntry::Access {
            height,
            tx,
            holder,
            mut entry,
        } => {
            entry.decision = AccessDecision::Refused(RefusalReason::PolicyDenied);
            LogEntry::Access {
                height,
                tx,
                holder,
                entry,
            }
        }
        other => panic!("{other:?}"),
    };
    c.goto(&history).await.unwrap();
    let said = wait_verification_error(&c).await;
    assert!(said.contains("1 FAILED verification"), "{said}");
    let cells = proof_cells(&c).await;
    assert_eq!(
        cells[0],
        "verification failed: the row does not say what the log entry says"
    );
    assert_eq!(cells[1..], ["verified", "verified"]);
    let flagged = c
        .find_all(Locator::Css("#history tr.unverified"))
        .await
        .unwrap();
    assert_eq!(flagged.len(), 1, "the lying row is flagged as a whole");
    screenshot(&c, "liar-1-row-rewritten").await;

    // 2. It forges the leaf to match its row: the leaf is not in the cosigned log.
    let forged = liar.history.lock().unwrap()[2].entry.to_bytes();
    served.lock().unwrap().leaves[2] = forged;
    c.goto(&history).await.unwrap();
    let said = wait_verification_error(&c).await;
    assert!(said.contains("1 FAILED verification"), "{said}");
    assert_eq!(
        proof_cells(&c).await[0],
        "verification failed: the entry is not in the cosigned log"
    );

    // 3. Honest rows, but a head only 2 of the 4 validators cosigned.
    *liar.history.lock().unwrap() = truth.clone();
    {
        let mut s = served.lock().unwrap();
        s.leaves[2] = truth[2].entry.to_bytes();
        s.cosigners = 2;
    }
    c.goto(&history).await.unwrap();
    let said = wait_verification_error(&c).await;
    assert!(
        said.contains("only 2 of the 4 validators cosigned the log head; 3 are needed"),
        "{said}"
    );

    // 4. Rows that say what their entries say, but credit the access to a famous name, show
    // an entry twice, or slip in another patient's payment.
    served.lock().unwrap().cosigners = 4;
    let hospital = secnet_types::Keypair::deterministic("hospital", 1).account();
    *liar.names.lock().unwrap() = vec![secnet_web::services::Organisation {
        account: hospital,
        name: "Famous Clinic".into(),
    }];
    c.goto(&history).await.unwrap();
    wait_verification_error(&c).await;
    let cells = proof_cells(&c).await;
    assert!(
        cells
            .iter()
            .all(|c| c.starts_with("verification failed: the entry is by account ")),
        "{cells:?}"
    );
    liar.names.lock().unwrap().clear();
    let other_patient = secnet_types::Keypair::deterministic("patient", 9).account();
    let mut theirs = truth[0].clone();
    if let LogEntry::Payment { owner, .. } = &mut theirs.entry {
        *owner = other_patient;
    }
    theirs.index = 3;
    {
        let mut s = served.lock().unwrap();
        let leaf = theirs.entry.to_bytes();
        s.log.append(&leaf);
        s.leaves.push(leaf);
    }
    {
        let mut h = liar.history.lock().unwrap();
        h.push(theirs);
        let again = h[1].clone();
        h.push(again);
    }
    c.goto(&history).await.unwrap();
    let said = wait_verification_error(&c).await;
    assert!(said.contains("FAILED"), "{said}");
    let cells = proof_cells(&c).await;
    assert!(
        cells.contains(&"verification failed: the entry is shown twice".to_string()),
        "{cells:?}"
    );
    assert!(
        cells.contains(&"verification failed: the entry is about another patient".to_string()),
        "{cells:?}"
    );
    *liar.history.lock().unwrap() = truth.clone();

    // 5. A node that names validators of its own (which cosign anything it likes).
    *liar.validators.lock().unwrap() = (0..4)
        .map(|i| secnet_types::Keypair::deterministic("sybil", i).account())
        .collect();
    c.goto(&history).await.unwrap();
    let said = wait_verification_error(&c).await;
    assert!(
        said.contains("this node names another network than the one your browser pinned"),
        "{said}"
    );
    screenshot(&c, "liar-4-other-network").await;

    // And back to the truth: verified again.
    *liar.validators.lock().unwrap() = validators;
    c.goto(&history).await.unwrap();
    wait_verified(&c).await;
    c.close().await.unwrap();
}
