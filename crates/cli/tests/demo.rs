//! End to end: `secnet demo` tells the paper's story against a real node, and `secnet audit`
//! proves it afterwards from the data directory alone.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use common::{fails, json, ok, path};
use std::os::unix::fs::PermissionsExt;

#[test]
fn demo_runs_the_medical_story_and_leaves_an_auditable_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let d = path(dir.path());
    let out = ok(&["demo", "--data-dir", d]);
    for step in ["[1]", "[2]", "[3]", "[4]", "[5]", "[6]", "[7]", "done."] {
        assert!(out.contains(step), "demo output lacks {step}:\n{out}");
    }
    assert!(out.contains("hospital-a   10000 ->   9500 (-500)"), "{out}");
    assert!(out.contains("(+100)"), "{out}");
    assert!(out.contains("alice            0 ->    400 (+400)"), "{out}");
    assert!(
        out.contains("refuses a grant: sender has not subscribed"),
        "{out}"
    );
    // The record went through the PDC and the verifying client; the refusal is the PDC's.
    assert!(
        out.contains("permitted by [\"hospital-a-treats\"]"),
        "{out}"
    );
    assert!(out.contains("H_B's PDC refuses"), "{out}");
    assert!(out.contains("policy-denied"), "{out}");
    assert!(
        out.contains("inclusion in the certified log verified"),
        "{out}"
    );

    // Keys are private to their owner.
    for key in ["node.key", "keys/alice.key", "keys/hospital-a.key"] {
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }

    // The access log: two grants, and the PDC's own records of a delivery and a refusal.
    let log = json(&["audit", "log", "--data-dir", d, "--json"]);
    let entries = log.as_array().unwrap();
    let count = |kind: &str| {
        entries
            .iter()
            .filter(|e| e["entry"]["type"] == kind)
            .count()
    };
    assert_eq!((count("grant"), count("access")), (2, 2), "{log}");
    let decisions: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["entry"]["type"] == "access")
        .map(|e| &e["entry"]["entry"]["decision"])
        .collect();
    assert!(
        decisions.iter().any(|d| d["decision"] == "delivered"),
        "{log}"
    );
    assert!(
        decisions.iter().any(|d| d["reason"] == "policy_denied"),
        "{log}"
    );
    // Recorded by the node that decided (its own key), with the score it gave the delivery.
    let node_key = ok(&["keys", "show", path(&dir.path().join("node.key"))])
        .trim()
        .to_string();
    let shown_score: u64 = out
        .split("detector score ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the demo shows no delivery score:\n{out}"));
    for e in entries.iter().filter(|e| e["entry"]["type"] == "access") {
        assert_eq!(e["entry"]["holder"], node_key.as_str(), "{e}");
        if e["entry"]["entry"]["decision"]["decision"] == "delivered" {
            assert_eq!(e["entry"]["entry"]["score_ppm"], shown_score, "{e}");
        }
    }

    // Inclusion proof in the documented shape, verified by the CLI.
    let proof = json(&["audit", "proof", "--data-dir", d, "--leaf", "1", "--json"]);
    for field in [
        "tree_size",
        "root_hash",
        "leaf_index",
        "leaf",
        "leaf_hash",
        "audit_path",
    ] {
        assert!(proof.get(field).is_some(), "proof lacks {field}: {proof}");
    }
    let proof_file = dir.path().join("proof.json");
    std::fs::write(&proof_file, proof.to_string()).unwrap();
    assert!(ok(&["audit", "verify", path(&proof_file)]).contains("ok: inclusion proof verified"));

    // Against the checkpoint the node cosigned as the network's single validator.
    let checkpoint = ok(&["audit", "checkpoint", "--data-dir", d]);
    let cp_file = dir.path().join("checkpoint.txt");
    std::fs::write(&cp_file, &checkpoint).unwrap();
    let genesis = dir.path().join("genesis.json");
    assert!(
        ok(&[
            "audit",
            "verify",
            path(&proof_file),
            "--checkpoint",
            path(&cp_file),
            "--genesis",
            path(&genesis)
        ])
        .contains("cosigned by 1 of 1 validators")
    );

    // Consistency.
    let cons = json(&[
        "audit",
        "consistency",
        "--data-dir",
        d,
        "--from",
        "1",
        "--to",
        "3",
        "--json",
    ]);
    for field in [
        "first_size",
        "second_size",
        "first_root",
        "second_root",
        "proof",
    ] {
        assert!(
            cons.get(field).is_some(),
            "consistency proof lacks {field}: {cons}"
        );
    }
    let cons_file = dir.path().join("cons.json");
    std::fs::write(&cons_file, cons.to_string()).unwrap();
    ok(&["audit", "verify", path(&cons_file)]);

    // A forged proof is refused.
    let mut forged = proof.clone();
    forged["leaf_index"] = serde_json::json!(2);
    std::fs::write(&proof_file, forged.to_string()).unwrap();
    let err = fails(&["audit", "verify", path(&proof_file)]);
    assert!(err.contains("error:"), "{err}");

    // Replaying every block reproduces the stored state root.
    let report = json(&["ledger", "check", "--data-dir", d, "--json"]);
    assert_eq!(report["replayed_root"], report["stored_root"]);

    // The demo runs again on the same data directory.
    assert!(ok(&["demo", "--data-dir", d]).contains("done."));
}

#[test]
fn audit_of_an_empty_directory_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&[
        "audit",
        "proof",
        "--data-dir",
        path(dir.path()),
        "--leaf",
        "0",
    ]);
    assert!(err.contains("holds no SecNet data"), "{err}");
}
