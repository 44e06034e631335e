//! End to end: `secnet dev` accepts signed transactions over HTTP, commits them, and refuses
//! bad input with problem details while keeping its state.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use common::{DevNode, json, ok, path};

fn post(url: &str, body: &str) -> (u16, serde_json::Value, String) {
    try_post(url, body).unwrap()
}

fn try_post(url: &str, body: &str) -> Result<(u16, serde_json::Value, String), reqwest::Error> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let resp = common::http()
            .post(format!("{url}/v1/tx"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, body, ctype))
    })
}

#[test]
fn transfers_commit_and_bad_input_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path());
    let node_key = dir.path().join("node.key");
    let alice_key = dir.path().join("alice.key");
    let alice = ok(&["keys", "new", "--out", path(&alice_key)])
        .trim()
        .to_string();

    let genesis = dir.path().join("genesis.json");
    let genesis = path(&genesis);
    let receipt = json(&[
        "tx",
        "transfer",
        "--key",
        path(&node_key),
        "--to",
        &alice,
        "--amount",
        "250",
        "--node",
        &node.url,
        "--wait",
        "--genesis",
        genesis,
    ]);
    assert_eq!(receipt["receipt"]["outcome"]["status"], "applied");
    assert_eq!(receipt["verified"], true, "{receipt}");
    let account = json(&[
        "account",
        &alice,
        "--node",
        &node.url,
        "--genesis",
        genesis,
        "--json",
    ]);
    assert_eq!(account["verified"], true);
    assert_eq!(account["balance"], 250);
    let status = json(&[
        "status",
        "--node",
        &node.url,
        "--genesis",
        genesis,
        "--json",
    ]);
    assert!(status["height"].as_u64().unwrap() >= 1);
    assert_eq!(status["verified"], true);
    // A caller that wants fresh state says how old it may be.
    let fresh = json(&[
        "status",
        "--node",
        &node.url,
        "--genesis",
        genesis,
        "--max-age",
        "3600",
        "--json",
    ]);
    assert_eq!(fresh["verified"], true);
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let err = common::fails(&[
        "status",
        "--node",
        &node.url,
        "--genesis",
        genesis,
        "--max-age",
        "1",
    ]);
    assert!(
        err.contains("verification failed: the newest certified state offered was certified at"),
        "{err}"
    );
    let height = status["height"].as_u64().unwrap().to_string();
    let block = json(&[
        "block",
        "--height",
        &height,
        "--node",
        &node.url,
        "--genesis",
        genesis,
        "--json",
    ]);
    assert_eq!(block["verified"], true);
    // The transfer's receipt, proven against a certified receipts root.
    let shown = json(&[
        "tx",
        "show",
        receipt["hash"].as_str().unwrap(),
        "--node",
        &node.url,
        "--genesis",
        genesis,
    ]);
    assert_eq!(shown["verified"], true, "{shown}");
    assert_eq!(shown["receipt"]["outcome"]["status"], "applied");
    assert_eq!(block["state_root"], status["state_root"]);

    // Not enough money: refused at admission, nothing moved.
    let out = common::run(&[
        "tx",
        "transfer",
        "--key",
        path(&alice_key),
        "--to",
        &alice,
        "--amount",
        "251",
        "--node",
        &node.url,
        "--wait",
        "--genesis",
        genesis,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds 250; this transaction would spend 251"),
        "{err}"
    );

    // Garbage, a truncated transaction, and an oversized body: problem+json, no state change.
    let before = json(&["health", "--node", &node.url, "--json"]);
    let (code, body, ctype) = post(&node.url, "{\"tx\": \"zz\"}");
    assert_eq!(code, 400);
    assert_eq!(ctype, "application/problem+json");
    assert!(body["detail"].as_str().unwrap().contains("not hex"));
    let (code, body, _) = post(&node.url, "{\"tx\": \"0102\"}");
    assert_eq!(code, 400);
    assert!(
        body["detail"].as_str().unwrap().contains("malformed"),
        "{body}"
    );
    let huge = format!("{{\"tx\": \"{}\"}}", "00".repeat(200 * 1024));
    // The node answers 413 once the body passes the limit, without reading the rest, and
    // closes the connection after the answer: a client still sending may see that close
    // (a broken pipe or a reset) before it reads the answer.
    match try_post(&node.url, &huge) {
        Ok((code, _, _)) => assert_eq!(code, 413),
        Err(e) => {
            let e = format!("{e:?}");
            assert!(
                ["Broken pipe", "reset", "closed"]
                    .iter()
                    .any(|m| e.contains(m)),
                "{e}"
            );
        }
    }
    let after = json(&["health", "--node", &node.url, "--json"]);
    assert_eq!(before["state_root"], after["state_root"]);
}

#[test]
fn a_node_refuses_a_genesis_of_another_network() {
    let dir = tempfile::tempdir().unwrap();
    drop(DevNode::start(dir.path()));
    let mut other: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("genesis.json")).unwrap())
            .unwrap();
    other["chain_id"] = serde_json::json!("another-network");
    let other_file = dir.path().join("other-genesis.json");
    std::fs::write(&other_file, other.to_string()).unwrap();
    let err = common::fails(&[
        "dev",
        "--data-dir",
        path(dir.path()),
        "--genesis",
        path(&other_file),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(
        err.contains("was created for genesis") && err.contains("another-network"),
        "{err}"
    );
}

#[test]
fn a_key_survives_its_encrypted_backup_and_nothing_else_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("alice.key");
    let backup = dir.path().join("alice-backup.json");
    let account = ok(&["keys", "new", "--out", path(&key)]);
    let with = |pass: &str, args: &[&str]| {
        common::secnet()
            .args(args)
            .env("SECNET_BACKUP_PASSPHRASE", pass)
            .output()
            .unwrap()
    };
    let short = with(
        "short",
        &["keys", "backup", path(&key), "--out", path(&backup)],
    );
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("12 characters"));
    let made = with(
        "a long backup passphrase",
        &["keys", "backup", path(&key), "--out", path(&backup)],
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let restored = dir.path().join("restored.key");
    let wrong = with(
        "another passphrase!",
        &["keys", "import", path(&backup), "--out", path(&restored)],
    );
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"));
    assert!(
        !restored.exists(),
        "nothing is written for a wrong passphrase"
    );
    let imported = with(
        "a long backup passphrase",
        &["keys", "import", path(&backup), "--out", path(&restored)],
    );
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&imported.stdout), account);
    assert_eq!(
        ok(&["keys", "show", path(&restored), "--json"]),
        ok(&["keys", "show", path(&key), "--json"])
    );
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn nodes_serve_tls_that_only_their_authority_vouches_for_and_plain_http_only_on_loopback() {
    // A dev node with no --authority is its own; its secrets are its owner's alone.
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start_with(dir.path(), &[]);
    assert!(node.url.starts_with("https://127.0.0.1:"), "{}", node.url);
    let tls = dir.path().join("tls");
    assert_eq!(mode(&tls.join("key.pem")), 0o600);
    assert_eq!(mode(&tls.join("ca.key")), 0o600);
    // A command trusting another authority (the tests' own, in SECNET_CA) refuses it and
    // says what to do; given the node's authority, it is served.
    let refused = common::fails(&["health", "--node", &node.url]);
    assert!(
        refused.contains("invalid peer certificate") && refused.contains("--ca"),
        "{refused}"
    );
    let ca = tls.join("ca.pem");
    ok(&["health", "--node", &node.url, "--ca", path(&ca)]);
    // A certificate file that is not one is refused before anything is sent.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let err = common::fails(&["health", "--node", &node.url, "--ca", path(&junk)]);
    assert!(err.contains("--ca") && err.contains("junk.pem"), "{err}");
    drop(node);

    // Plain HTTP: refused on an address other machines reach, served on loopback.
    let open = tempfile::tempdir().unwrap();
    let err = common::fails(&[
        "dev",
        "--data-dir",
        path(open.path()),
        "--listen",
        "0.0.0.0:0",
        "--plain-http",
    ]);
    assert!(
        err.contains("plain HTTP is allowed only on a loopback address"),
        "{err}"
    );
    let loopback = tempfile::tempdir().unwrap();
    let plain = DevNode::start_with(loopback.path(), &["--plain-http"]);
    assert!(plain.url.starts_with("http://127.0.0.1:"), "{}", plain.url);
    ok(&["health", "--node", &plain.url]);
    assert!(
        !loopback.path().join("tls").exists(),
        "no certificate was made"
    );

    // A network's authority key stays beside its genesis, outside every node.
    let net = tempfile::tempdir().unwrap();
    ok(&[
        "testnet",
        "init",
        "--validators",
        "2",
        "--accounts",
        "1",
        "--dir",
        path(net.path()),
    ]);
    assert_eq!(mode(&net.path().join("ca.key")), 0o600);
    for i in 0..2 {
        let node_tls = net.path().join(format!("node{i}")).join("tls");
        assert_eq!(mode(&node_tls.join("key.pem")), 0o600);
        assert!(!node_tls.join("ca.key").exists());
    }

    // Renewal: every validator gets a new key and certificate by the same authority; the
    // authority of another network is refused, and nothing changes.
    let read = |p: &std::path::Path| std::fs::read(p).unwrap();
    let node0 = net.path().join("node0").join("tls");
    let (ca, cert, key) = (
        read(&net.path().join("ca.pem")),
        read(&node0.join("cert.pem")),
        read(&node0.join("key.pem")),
    );
    let other = tempfile::tempdir().unwrap();
    ok(&[
        "testnet",
        "init",
        "--validators",
        "1",
        "--accounts",
        "0",
        "--dir",
        path(other.path()),
    ]);
    let err = common::fails(&[
        "testnet",
        "renew",
        "--dir",
        path(net.path()),
        "--authority",
        path(other.path()),
    ]);
    assert!(err.contains("is not the authority of the network"), "{err}");
    assert_eq!(read(&node0.join("cert.pem")), cert);
    let out = ok(&["testnet", "renew", "--dir", path(net.path())]);
    assert!(
        out.contains("issued 2 validators new certificates"),
        "{out}"
    );
    assert_eq!(read(&net.path().join("ca.pem")), ca);
    for i in 0..2 {
        let node_tls = net.path().join(format!("node{i}")).join("tls");
        assert_eq!(read(&node_tls.join("ca.pem")), ca);
        assert_eq!(mode(&node_tls.join("key.pem")), 0o600);
    }
    assert_ne!(read(&node0.join("cert.pem")), cert);
    assert_ne!(read(&node0.join("key.pem")), key);
}
