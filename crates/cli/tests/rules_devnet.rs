//! Security rules end to end, over four real validator processes, driven by the `secnet`
//! binary: a security team trains an access-request detector, packages it as a signed rule
//! and sells it through its node (validator 0); a hospital using validator 1 cannot fetch it
//! before paying, subscribes (the price flows to the publisher and the holder), fetches it,
//! checks it against the ledger and the publisher's signature, and installs it into its
//! node's rules directory, where the node's access path picks it up. Altered rules are
//! refused before anything is installed.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use common::{Validators, fails, height, init_testnet, json, ok, path, start_validator, wait_for};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn key(dir: &Path, name: &str) -> String {
    path(&dir.join("accounts").join(format!("{name}.key"))).to_string()
}

fn account(dir: &Path, name: &str) -> String {
    ok(&["keys", "show", &key(dir, name)]).trim().to_string()
}

fn balance(dir: &Path, node: &str, id: &str) -> u64 {
    let genesis = dir.join("genesis.json");
    let answer = json(&[
        "account",
        id,
        "--node",
        node,
        "--genesis",
        path(&genesis),
        "--json",
    ]);
    assert_eq!(answer["verified"], true, "{answer}");
    answer["balance"].as_u64().unwrap()
}

fn node_account(dir: &Path, i: usize) -> String {
    secnet_node::keyfile::read_key(&dir.join(format!("node{i}")).join("node.key"))
        .unwrap()
        .account()
        .to_string()
}

#[test]
fn a_security_team_sells_a_rule_and_a_hospital_buys_and_installs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let genesis = d.join("genesis.json");
    let api = init_testnet(d, 4, 3);
    let _nodes = Validators(
        (0..4)
            .map(|i| Some(start_validator(d, i, "node.log")))
            .collect(),
    );
    let (a, b) = (
        format!("https://127.0.0.1:{api}"),
        format!("https://127.0.0.1:{}", api + 1),
    );
    let (team, hospital) = ("account0", "account1");

    // Train a detector on generated access requests and package it as a signed rule.
    let requests = d.join("requests.csv");
    ok(&[
        "ai",
        "gen-requests",
        "--rows",
        "3000",
        "--out",
        path(&requests),
    ]);
    let model = d.join("scrape.detector");
    let trained = json(&[
        "ai",
        "train",
        "--dataset",
        "access-requests",
        "--data",
        path(&requests),
        "--out",
        path(&model),
        "--epochs",
        "6",
    ]);
    assert!(
        trained["validation"]["f1"].as_f64().unwrap() > 0.5,
        "{trained}"
    );
    let rule = d.join("scrape.rule");
    let packaged = json(&[
        "rules",
        "package",
        "--key",
        &key(d, team),
        "--detector",
        path(&model),
        "--name",
        "scrape-mlp",
        "--category",
        "scrape",
        "--out",
        path(&rule),
    ]);
    let hash = packaged["hash"].as_str().unwrap().to_string();
    assert_eq!(packaged["publisher"], account(d, team));

    wait_for("the validators to serve", Duration::from_secs(60), || {
        height(&a) >= 1 && height(&b) >= 1
    });
    for (who, via) in [(team, &a), (hospital, &b)] {
        ok(&[
            "keys",
            "publish",
            "--key",
            &key(d, who),
            "--node",
            via,
            "--genesis",
            path(&genesis),
        ]);
    }

    // Only the publisher may register its rule.
    let err = fails(&[
        "rules",
        "publish",
        "--key",
        &key(d, hospital),
        "--rule",
        path(&rule),
        "--price",
        "40",
        "--node",
        &a,
        "--genesis",
        path(&genesis),
    ]);
    assert!(err.contains("only its publisher"), "{err}");
    let published = json(&[
        "rules",
        "publish",
        "--key",
        &key(d, team),
        "--rule",
        path(&rule),
        "--price",
        "40",
        "--node",
        &a,
        "--genesis",
        path(&genesis),
    ]);
    assert_eq!(
        published["receipt"]["outcome"]["status"], "applied",
        "{published}"
    );
    let listed = json(&[
        "rules",
        "list",
        "--category",
        "scrape",
        "--node",
        &b,
        "--genesis",
        path(&d.join("genesis.json")),
    ]);
    assert_eq!(listed["verified"], true, "{listed}");
    let listing = &listed["rules"][0];
    assert_eq!(listing["hash"], hash.as_str(), "{listed}");
    assert_eq!(listing["price"], 40);
    assert_eq!(listing["kind"]["category"], "scrape");
    assert!(
        listing["description"]
            .as_str()
            .unwrap()
            .contains("scrape-mlp")
    );

    // Not paid: the contract grants nothing and nothing is written.
    let out = d.join("bought.rule");
    let rules_dir = d.join("node1").join("rules");
    let fetch = || {
        common::run(&[
            "rules",
            "fetch",
            "--key",
            &key(d, hospital),
            "--hash",
            &hash,
            "--out",
            path(&out),
            "--install",
            path(&rules_dir),
            "--node",
            &a,
            "--genesis",
            path(&d.join("genesis.json")),
        ])
    };
    let r = fetch();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("refused"));
    assert!(!out.exists());

    // Paying: the price leaves the hospital and reaches the publisher and the holder.
    let (h0, t0, n0) = (
        balance(d, &b, &account(d, hospital)),
        balance(d, &b, &account(d, team)),
        balance(d, &b, &node_account(d, 0)),
    );
    json(&[
        "rules",
        "subscribe",
        "--key",
        &key(d, hospital),
        "--hash",
        &hash,
        "--node",
        &b,
        "--genesis",
        path(&genesis),
    ]);
    assert_eq!(balance(d, &b, &account(d, hospital)), h0 - 40);
    assert_eq!(balance(d, &b, &account(d, team)), t0 + 32);
    assert_eq!(balance(d, &b, &node_account(d, 0)), n0 + 8);

    // Fetched, verified and installed; the hospital's node uses it.
    let r = fetch();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Hospital A's node scored the request with its transparent rules only: a calm request.
    let first: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(first["reported_by_holder"]["score"], 0, "{first}");
    assert_eq!(first["verified"], true, "{first}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&rule).unwrap());
    assert!(rules_dir.join(format!("{hash}.rule")).exists());
    let mut shown = Value::Null;
    wait_for(
        "hospital B's node to load the rule",
        Duration::from_secs(20),
        || {
            shown = json(&["rules", "show", "--node", &b]);
            shown["rules"].as_array().is_some_and(|r| !r.is_empty())
        },
    );
    assert_eq!(shown["rules"][0]["hash"], hash.as_str(), "{shown}");
    assert_eq!(shown["rules"][0]["scores_requests"], true);
    assert_eq!(shown["rules"][0]["publisher"], account(d, team));

    // Installing again is refused (same version); an altered copy never gets installed.
    let err = fails(&[
        "rules",
        "install",
        "--rule",
        path(&out),
        "--dir",
        path(&rules_dir),
    ]);
    assert!(err.contains("already installed"), "{err}");
    let altered = d.join("altered.rule");
    let text = std::fs::read_to_string(&rule).unwrap();
    let changed = text.replacen(
        "\\\"category\\\":\\\"scrape\\\"",
        "\\\"category\\\":\\\"dos\\\"",
        1,
    );
    assert_ne!(changed, text);
    std::fs::write(&altered, changed).unwrap();
    let other_dir = d.join("other-rules");
    let err = fails(&[
        "rules",
        "install",
        "--rule",
        path(&altered),
        "--dir",
        path(&other_dir),
    ]);
    assert!(err.contains("signature"), "{err}");
    assert!(
        !other_dir.exists() || std::fs::read_dir(&other_dir).unwrap().next().is_none(),
        "nothing installed"
    );

    // The team installs its rule on its own node: the next request is scored by it too.
    ok(&[
        "rules",
        "install",
        "--rule",
        path(&rule),
        "--dir",
        path(&d.join("node0").join("rules")),
    ]);
    wait_for(
        "hospital A's node to load the rule",
        Duration::from_secs(20),
        || {
            json(&["rules", "show", "--node", &a])["rules"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        },
    );
    let again = json(&[
        "rules",
        "fetch",
        "--key",
        &key(d, hospital),
        "--hash",
        &hash,
        "--out",
        path(&d.join("again.rule")),
        "--node",
        &a,
        "--genesis",
        path(&d.join("genesis.json")),
    ]);
    let score = again["reported_by_holder"]["score"].as_u64().unwrap();
    assert!(score > 0 && score < 800_000, "{again}");

    // The delivery is recorded: the publisher's history names the hospital.
    let buyer = account(d, hospital);
    wait_for(
        "the delivery to be recorded",
        Duration::from_secs(30),
        || {
            json(&[
                "data",
                "history",
                "--key",
                &key(d, team),
                "--json",
                "--node",
                &a,
                "--genesis",
                path(&d.join("genesis.json")),
            ])
            .to_string()
            .contains(&buyer)
        },
    );
}
