//! End to end: `secnet attack` runs each attack against a real node, and every one is
//! refused as the design says, the refusals of authenticated requests recorded.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use common::json;

#[test]
fn every_attack_is_refused_as_designed() {
    let table = json(&["attack", "--json"]);
    let rows = table.as_array().unwrap();
    assert!(rows.len() >= 18, "{table:#}");
    for row in rows {
        assert_eq!(row["refused"], true, "{row:#}");
        for field in ["attack", "expected", "observed"] {
            assert!(
                row[field].as_str().is_some_and(|s| !s.is_empty()),
                "{row:#}"
            );
        }
    }
    let attacks: Vec<&str> = rows.iter().map(|r| r["attack"].as_str().unwrap()).collect();
    for wanted in [
        "stolen token, thief's own fetch proof",
        "request signed for another holder, replayed here",
        "withdrawn record re-registered by a thief",
        "1,500 fresh keys flood the mempool from one address",
        "plain HTTP to the TLS API",
        "node impersonated with another authority's certificate",
        "slow loris: one address opens 272 connections and stalls each mid-header",
        "the refusals above, in the owner's history",
    ] {
        assert!(attacks.contains(&wanted), "{wanted} missing: {attacks:?}");
    }
}
