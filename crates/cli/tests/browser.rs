//! The browser application in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs) against a real `secnet dev` node: a hospital
//! admin signs in, registers a staff member whose name holds a script (shown as text, never
//! run), a form posted without its CSRF token is refused, the search page answers, and
//! axe-core finds no serious accessibility violation on any page. Each page's screenshot is
//! saved under `target/tmp/browser/`.
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

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=412,915"
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
    let c = browser(&driver).await;
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
