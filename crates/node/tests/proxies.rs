//! A node behind a reverse proxy it trusts, over HTTPS on loopback against a real single
//! node: each client the proxy forwards for has a budget of its own; a client cannot choose
//! whose budget it spends by writing `X-Forwarded-For` itself; and a peer that is not a
//! trusted proxy is counted as itself, whatever it claims.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

use secnet_node::api::UNFUNDED_PER_SOURCE_PER_MINUTE;
use secnet_node::dev::ProducerConfig;
use secnet_types::{Call, Genesis, Keypair, Transaction};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const CHAIN: &str = "secnet-proxies-test";

/// What a batch of transactions from fresh keys (no balance: each charged to its source's
/// budget) got: how many were admitted, and how many refused for the source's budget.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    admitted: usize,
    over_budget: usize,
}

async fn fresh_keys(
    base: &str,
    from: [u8; 4],
    forwarded_for: Option<&str>,
    count: usize,
) -> Answer {
    let http = secnet_tls::http_client()
        .unwrap()
        .local_address(IpAddr::V4(Ipv4Addr::from(from)))
        .build()
        .unwrap();
    let txs: Vec<String> = (0..count)
        .map(|_| {
            let key = Keypair::generate();
            let tx = Transaction {
                chain_id: CHAIN.into(),
                sender: key.account(),
                nonce: 0,
                call: Call::SetEncryptionKey {
                    key: key.encryption_key(),
                },
            };
            hex::encode(tx.sign(&key).to_bytes())
        })
        .collect();
    let mut request = http
        .post(format!("{base}/v1/txs"))
        .json(&json!({ "txs": txs }));
    if let Some(header) = forwarded_for {
        let value = reqwest::header::HeaderValue::from_bytes(header.as_bytes()).unwrap();
        request = request.header("x-forwarded-for", value);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let results = answer["results"].as_array().unwrap();
    let over_budget = results
        .iter()
        .filter(|r| {
            r["error"]
                .as_str()
                .is_some_and(|e| e.contains("this address may submit"))
        })
        .count();
    Answer {
        admitted: answer["accepted"].as_u64().unwrap() as usize,
        over_budget,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_a_trusted_proxy_have_budgets_of_their_own_and_cannot_pick_another() {
    let dir = tempfile::tempdir().unwrap();
    let genesis = Genesis {
        chain_id: CHAIN.into(),
        genesis_time_ms: secnet_node::datadir::now_ms() - 1_000,
        allocations: vec![],
        validators: vec![],
    };
    let listen = "127.0.0.1:0".parse().unwrap();
    let node = secnet_node::start_dev_serving(
        dir.path(),
        &genesis,
        Keypair::deterministic("proxies", 0),
        listen,
        secnet_node::tls::dev_transport(dir.path(), listen, &Default::default())
            .unwrap()
            .0,
        ProducerConfig {
            block_interval: Duration::from_secs(3_600),
            ..ProducerConfig::default()
        },
        secnet_tls::ServeLimits {
            proxies: secnet_tls::TrustedProxies::parse(&["127.0.0.2"]).unwrap(),
            ..secnet_tls::ServeLimits::default()
        },
    )
    .await
    .unwrap();
    let base = node.url().to_string();
    let share = UNFUNDED_PER_SOURCE_PER_MINUTE as usize;
    let proxy = [127, 0, 0, 2];
    let started = Instant::now();
    // The budget refills evenly over a minute: what may have come back since the start.
    let refilled = || (started.elapsed().as_secs_f64() * share as f64 / 60.0).ceil() as usize;

    // The proxy forwards for client A, who sends more than a minute's share.
    let a = fresh_keys(&base, proxy, Some("198.51.100.1"), share + 16).await;
    assert!(
        a.admitted >= share && a.admitted <= share + refilled(),
        "{a:?}"
    );
    assert_eq!(a.admitted + a.over_budget, share + 16, "{a:?}");

    // A writes another client's address into the header; the proxy appends A's own.
    let spoofed = fresh_keys(&base, proxy, Some("198.51.100.7, 198.51.100.1"), 8).await;
    assert!(spoofed.admitted <= refilled(), "{spoofed:?}");
    assert_eq!(spoofed.admitted + spoofed.over_budget, 8, "{spoofed:?}");

    // Nor do bytes that are not text in front of it make A the proxy.
    let garbled = fresh_keys(&base, proxy, Some("\u{e9}, 198.51.100.1"), 8).await;
    assert!(garbled.admitted <= refilled(), "{garbled:?}");
    assert_eq!(garbled.admitted + garbled.over_budget, 8, "{garbled:?}");

    // Client B, behind the same proxy, has its whole share; so has the proxy itself.
    let b = fresh_keys(&base, proxy, Some("198.51.100.2"), share).await;
    assert_eq!(b.admitted, share, "{b:?}");
    let own = fresh_keys(&base, proxy, None, 4).await;
    assert_eq!(own.admitted, 4, "{own:?}");

    // A peer that is not a trusted proxy is counted as itself, whatever it claims: a new
    // name in the header each time buys it nothing once its share is spent.
    let direct = [127, 0, 0, 3];
    let first = fresh_keys(&base, direct, Some("198.51.100.3"), share).await;
    assert_eq!(first.admitted, share, "{first:?}");
    let renamed = fresh_keys(&base, direct, Some("198.51.100.4"), 8).await;
    assert!(renamed.admitted <= refilled(), "{renamed:?}");
    assert_eq!(renamed.admitted + renamed.over_budget, 8, "{renamed:?}");
}
