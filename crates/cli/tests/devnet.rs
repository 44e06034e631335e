//! End to end with four real validator processes on loopback: transfers commit through any
//! validator; one validator is killed with SIGKILL and restarted; it catches up, state roots
//! agree at equal heights, and the sum of balances still equals the genesis supply. A
//! validator whose data directory is wiped syncs from its peers to the same state, and one
//! that joins from a snapshot reaches the same state without replaying.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use common::{
    Validators, height, init_testnet, json, kill, ok, path, run, secnet, start_validator,
    start_validator_with, tail, wait_for, wait_for_explained,
};
use std::process::Stdio;
use std::time::Duration;

fn state_root(dir: &std::path::Path, api: &str, height: u64) -> serde_json::Value {
    let block = json(&[
        "block",
        "--height",
        &height.to_string(),
        "--node",
        api,
        "--genesis",
        path(&dir.join("genesis.json")),
        "--json",
    ]);
    assert_eq!(block["verified"], true, "{block}");
    block["state_root"].clone()
}

#[test]
fn four_processes_survive_a_sigkill_and_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let api = init_testnet(d, 4, 8);
    // Accounts 4..8 send a steady load in the background; 0..4 send single transfers.
    let load_keys = d.join("load-keys");
    std::fs::create_dir(&load_keys).unwrap();
    for j in 4..8 {
        let name = format!("account{j}.key");
        std::fs::rename(d.join("accounts").join(&name), load_keys.join(&name)).unwrap();
    }
    let apis: Vec<String> = (0..4)
        .map(|i| format!("https://127.0.0.1:{}", api + i))
        .collect();
    let mut nodes = Validators(
        (0..4)
            .map(|i| Some(start_validator(d, i, "node.log")))
            .collect(),
    );
    wait_for("all validators to serve", Duration::from_secs(60), || {
        apis.iter().all(|a| height(a) >= 1)
    });

    let accounts: Vec<String> = (0..4)
        .map(|j| {
            ok(&[
                "keys",
                "show",
                path(&d.join("accounts").join(format!("account{j}.key"))),
            ])
            .trim()
            .to_string()
        })
        .collect();
    let transfer = |from: usize, to: usize, via: &str| {
        let r = json(&[
            "tx",
            "transfer",
            "--key",
            path(&d.join("accounts").join(format!("account{from}.key"))),
            "--to",
            &accounts[to],
            "--amount",
            "7",
            "--node",
            via,
            "--wait",
            "--genesis",
            path(&d.join("genesis.json")),
        ]);
        assert_eq!(r["receipt"]["outcome"]["status"], "applied", "{r}");
    };
    for (k, api) in apis.iter().enumerate() {
        transfer(k, (k + 1) % 4, api);
    }

    // Under load (spread over validators 0..3, which stay up), SIGKILL validator 3 and keep
    // going without it.
    let load_log = std::fs::File::create(d.join("load.json")).unwrap();
    let mut load = secnet()
        .args([
            "load",
            "--node",
            &apis[..3].join(","),
            "--key-dir",
            path(&load_keys),
            "--txs",
            "3000",
            "--rate",
            "400",
            "--batch",
            "50",
            "--json",
        ])
        .stdout(Stdio::from(load_log))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    kill(&mut nodes, 3);
    for (k, api) in apis.iter().take(3).enumerate() {
        transfer(k, 3, api);
    }
    let target = height(&apis[0]);

    nodes.0[3] = Some(start_validator(d, 3, "node-restarted.log"));
    wait_for_explained(
        "the restarted validator to catch up",
        Duration::from_secs(120),
        || height(&apis[3]) >= target,
        || {
            format!(
                "target {target}; heights {:?}; the restarted validator's log ends:\n{}",
                apis.iter().map(|a| height(a)).collect::<Vec<_>>(),
                tail(&d.join("node3").join("node-restarted.log"), 40)
            )
        },
    );

    let status = load.wait().unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("load.json")).unwrap()).unwrap();
    assert!(status.success(), "load generator failed: {report}");
    assert_eq!(report["committed"], 3000, "{report}");
    let target = target.max(height(&apis[0]));
    wait_for(
        "every validator, the restarted one too, to reach the same height",
        Duration::from_secs(120),
        || apis.iter().all(|a| height(a) >= target),
    );

    // Same state root at equal heights.
    let roots: Vec<serde_json::Value> = apis.iter().map(|a| state_root(d, a, target)).collect();
    assert!(
        roots.windows(2).all(|w| w[0] == w[1]),
        "state roots differ at height {target}: {roots:?}"
    );
    // Every validator's answer verifies against the genesis validators' certificates.
    let genesis = d.join("genesis.json");
    for api in &apis {
        let status = json(&[
            "status",
            "--node",
            api,
            "--genesis",
            path(&genesis),
            "--json",
        ]);
        assert_eq!(status["verified"], true, "{status}");
        assert!(status["height"].as_u64().unwrap() >= target, "{status}");
        assert!(status["log_size"].as_u64().is_some(), "{status}");
    }
    // Every validator serves the access log's head cosigned by a quorum of validators, and
    // it verifies against the genesis alone.
    for api in &apis {
        let mut last = String::new();
        wait_for(
            "a log head cosigned by a quorum",
            Duration::from_secs(30),
            || {
                let out = run(&[
                    "audit",
                    "cosigned",
                    "--node",
                    api,
                    "--genesis",
                    path(&genesis),
                    "--json",
                ]);
                last = String::from_utf8_lossy(&out.stderr).into_owned();
                out.status.success()
                    && serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|v| {
                        v["verified"] == true
                            && v["cosigners"].as_array().is_some_and(|c| c.len() >= 3)
                            && v["note"]
                                .as_str()
                                .is_some_and(|n| n.contains("/access-log\n"))
                    })
            },
        );
        assert!(!last.contains("verification failed"), "{last}");
    }
    // A validator that lost its whole data directory syncs from its peers.
    kill(&mut nodes, 2);
    let node2 = d.join("node2");
    std::fs::remove_file(node2.join("ledger.redb")).unwrap();
    std::fs::remove_dir_all(node2.join("consensus")).unwrap();
    transfer(0, 1, &apis[0]);
    let target = height(&apis[0]);
    nodes.0[2] = Some(start_validator(d, 2, "node-wiped.log"));
    wait_for(
        "the wiped validator to sync",
        Duration::from_secs(120),
        || height(&apis[2]) >= target,
    );
    assert_eq!(
        state_root(d, &apis[2], target),
        state_root(d, &apis[0], target),
        "a validator synced from scratch disagrees at height {target}"
    );
    // Having lost its record of the votes it signed, it listened before voting again.
    assert!(
        std::fs::read_to_string(node2.join("node-wiped.log"))
            .unwrap()
            .contains("no consensus journal"),
        "{}",
        tail(&node2.join("node-wiped.log"), 20)
    );

    // Every validator hears every other one's height.
    let last = std::cell::RefCell::new(serde_json::Value::Null);
    wait_for_explained(
        "validator 0 to report its peers' heights",
        Duration::from_secs(30),
        || {
            let s = json(&["health", "--node", &apis[0], "--json"]);
            let vs = s["validators"].as_array().unwrap();
            let heard = vs.len() == 4
                && vs
                    .iter()
                    .all(|v| v["height"].as_u64().is_some_and(|h| h >= target));
            *last.borrow_mut() = s;
            heard
        },
        || {
            format!(
                "target {target}, validator 0 reports {:#}\n-- node0 --\n{}\n-- node2 --\n{}",
                last.borrow(),
                tail(&d.join("node0").join("node.log"), 60),
                tail(&node2.join("node-wiped.log"), 60),
            )
        },
    );

    // Another joins from validator 0's snapshot instead of replaying, and agrees with the
    // one that replayed everything.
    kill(&mut nodes, 1);
    let node1 = d.join("node1");
    std::fs::remove_file(node1.join("ledger.redb")).unwrap();
    std::fs::remove_dir_all(node1.join("consensus")).unwrap();
    nodes.0[1] = Some(start_validator_with(
        d,
        1,
        "node-joined.log",
        &["--join", &apis[0]],
    ));
    transfer(0, 1, &apis[0]);
    let target = height(&apis[0]);
    wait_for(
        "the validator joined from a snapshot to follow",
        Duration::from_secs(120),
        || height(&apis[1]) >= target,
    );
    assert_eq!(
        state_root(d, &apis[1], target),
        state_root(d, &apis[2], target),
        "a validator joined from a snapshot disagrees at height {target}"
    );
    let joined_log = std::fs::read_to_string(node1.join("node-joined.log")).unwrap();
    assert!(
        joined_log.contains("certified") && joined_log.contains("consensus starts at height"),
        "{joined_log}"
    );
    // It has no blocks below its snapshot: nothing was replayed.
    let first_block = run(&["block", "--height", "1", "--node", &apis[1], "--json"]);
    assert!(
        !first_block.status.success(),
        "block 1 on a joined validator"
    );

    // Value is conserved, over the single-transfer accounts and the load accounts.
    let load_accounts: Vec<String> = (4..8)
        .map(|j| {
            ok(&[
                "keys",
                "show",
                path(&load_keys.join(format!("account{j}.key"))),
            ])
            .trim()
            .to_string()
        })
        .collect();
    let total: u64 = accounts
        .iter()
        .chain(&load_accounts)
        .map(|a| {
            json(&[
                "account",
                a,
                "--node",
                &apis[3],
                "--genesis",
                path(&d.join("genesis.json")),
                "--json",
            ])["balance"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 8 * 1_000_000_000);
}

#[test]
fn a_validator_refuses_a_genesis_of_another_network() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_testnet(d, 2, 1);
    let config = d.join("node0").join("config.toml");
    let mut node = start_validator(d, 0, "node.log");
    wait_for("the ledger to be created", Duration::from_secs(30), || {
        d.join("node0").join("ledger.redb").exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    node.kill().unwrap();
    node.wait().unwrap();

    // Same validators, another chain id: another network.
    let genesis_path = d.join("genesis.json");
    let mut genesis: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&genesis_path).unwrap()).unwrap();
    genesis["chain_id"] = serde_json::json!("someone-elses-chain");
    std::fs::write(&genesis_path, genesis.to_string()).unwrap();
    let err = common::fails(&["node", "--config", path(&config)]);
    assert!(err.contains("belongs to genesis"), "{err}");

    // A key that is not a validator of the genesis.
    genesis["validators"] = serde_json::json!([]);
    genesis["chain_id"] = serde_json::json!("secnet-devnet");
    std::fs::write(&genesis_path, genesis.to_string()).unwrap();
    let err = common::fails(&["node", "--config", path(&config)]);
    assert!(err.contains("is not a validator"), "{err}");
}

#[test]
fn a_validator_that_cannot_serve_its_api_stops_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let api = init_testnet(d, 2, 1);
    // Someone else holds validator 0's API address.
    let _taken = std::net::TcpListener::bind(("127.0.0.1", api)).unwrap();
    let config = d.join("node0").join("config.toml");
    let err = common::fails(&["node", "--config", path(&config)]);
    assert!(err.contains("cannot serve the HTTP API"), "{err}");
}

#[test]
fn a_node_refuses_trusted_proxies_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    init_testnet(d, 2, 1);
    let config = d.join("node0").join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n");
    std::fs::write(&config, text).unwrap();
    let err = common::fails(&["node", "--config", path(&config)]);
    assert!(err.contains("trusted_proxies in"), "{err}");
    assert!(err.contains("at most 32 bits"), "{err}");

    // A misspelt setting is refused, not left out.
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
        "trusted_proxy = [\"10.0.0.5\"]",
    );
    std::fs::write(&config, text).unwrap();
    let err = common::fails(&["node", "--config", path(&config)]);
    assert!(err.contains("unknown field `trusted_proxy`"), "{err}");

    let dev = d.join("dev");
    let err = common::fails(&[
        "dev",
        "--data-dir",
        path(&dev),
        "--trusted-proxy",
        "proxy.example",
    ]);
    assert!(err.contains("--trusted-proxy"), "{err}");
    assert!(err.contains("is not an IP address"), "{err}");
}
