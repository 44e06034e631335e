//! The proof routes' budget per source, over HTTPS on loopback against a real single node:
//! one address that asks for more proofs than its budget gets 429 with `Retry-After`,
//! everywhere the budget applies and nowhere else, while another address is still served;
//! the client library waits as asked and is served; a whole block costs `BLOCK_COST` proofs,
//! the transaction hashes of one no longer kept in memory `OLD_BLOCK_TX_HASHES_COST`.
//! Snapshots have a budget of their own: one a minute per address.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use secnet_node::api::{
    BLOCK_COST, OLD_BLOCK_TX_HASHES_COST, PROOFS_PER_SOURCE_PER_MINUTE,
    SNAPSHOTS_PER_SOURCE_PER_MINUTE,
};
use secnet_types::Keypair;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A development node with no validators, over HTTPS on loopback, in `dir`.
async fn dev_node(dir: &std::path::Path) -> secnet_node::RunningNode {
    let genesis = common::funding("secnet-budget-test", &[], 0);
    let key = Keypair::deterministic("budget", 0);
    common::dev_node(dir, &genesis, key, Duration::from_secs(3_600)).await
}

/// An HTTPS client whose requests come from `ip`.
fn from(ip: [u8; 4]) -> reqwest::Client {
    secnet_tls::http_client()
        .unwrap()
        .local_address(IpAddr::V4(Ipv4Addr::from(ip)))
        .build()
        .unwrap()
}

/// Asks `http` for `url` (answered `status` while within budget) until refused, and checks
/// that each answer took `cost` of the budget: the whole budget's worth were served, and no
/// more than what refilled meanwhile.
async fn asks_until_refused(http: &reqwest::Client, url: &str, status: u16, cost: u32) {
    let whole = PROOFS_PER_SOURCE_PER_MINUTE / cost;
    let started = Instant::now();
    let mut served = 0u32;
    loop {
        let r = http.get(url).send().await.unwrap();
        match r.status().as_u16() {
            429 => break,
            s if s == status => {
                served += 1;
                assert!(served < 10 * whole, "{url} is not charged {cost}");
            }
            other => panic!("{other}: {}", r.text().await.unwrap()),
        }
    }
    let refilled = f64::from(PROOFS_PER_SOURCE_PER_MINUTE) / 60.0 * started.elapsed().as_secs_f64();
    assert!(served >= whole, "{url}: refused after {served}");
    assert!(
        f64::from(served) <= f64::from(whole) + refilled / f64::from(cost) + 1.0,
        "{url}: served {served}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_over_its_proof_budget_is_refused_and_another_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = dev_node(dir.path()).await;
    let base = node.url().to_string();

    // 127.0.0.1 asks for pages of the log (2 each: the request, and up to 100 entries) until
    // it is refused.
    let started = Instant::now();
    let served = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (http, url) = (from([127, 0, 0, 1]), format!("{base}/v1/log?limit=1"));
        let (served, refused) = (served.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            while !refused.load(Ordering::Relaxed) {
                let r = http.get(&url).send().await.unwrap();
                match r.status().as_u16() {
                    200 => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    429 => refused.store(true, Ordering::Relaxed),
                    other => panic!("{other}: {}", r.text().await.unwrap()),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let served = served.load(Ordering::Relaxed) as f64;
    let budget = f64::from(PROOFS_PER_SOURCE_PER_MINUTE);
    // Its whole budget, plus what refilled while it spent it (200 a second); in flight at the
    // refusal, at most one request per task more.
    assert!(served >= budget / 2.0, "refused after {served}");
    assert!(
        served <= (budget + budget / 60.0 * elapsed) / 2.0 + 16.0,
        "served {served} in {elapsed:.1} s"
    );

    // Refused on every proof route, with when to come back, and served elsewhere. (The
    // budget refills 200 a second, so a route may serve a request or two first: each asks
    // for something that does not exist or does not parse, so that one served is a quick
    // client error. A well-formed state query would wait for a certified root this
    // validator-less node never has, and the budget would refill meanwhile.)
    let http = from([127, 0, 0, 1]);
    for route in [
        "/v1/log/0?size=1",
        "/v1/log/consistency?from=0&to=0",
        "/v1/state?keys=zz",
        "/v1/tx/00/proof",
        "/v1/blocks/999999",
    ] {
        let mut tries = 0;
        let r = loop {
            // The budget refills a token every 5 ms; a large page (11) first keeps it spent
            // however slow the round trips.
            http.get(format!("{base}/v1/log?limit=1000"))
                .send()
                .await
                .unwrap();
            let r = http.get(format!("{base}{route}")).send().await.unwrap();
            if r.status() == 429 {
                break r;
            }
            assert!(r.status().is_client_error(), "{route}: {}", r.status());
            tries += 1;
            assert!(tries < 1_000, "{route} is not charged");
        };
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let problem: Value = r.json().await.unwrap();
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("proofs a minute"),
            "{problem}"
        );
    }
    let status = http.get(format!("{base}/v1/status")).send().await.unwrap();
    assert_eq!(status.status(), 200, "not a proof route");

    // The client library, from the same address, waits as asked and is served. Its
    // connection is made first; then the address spends its budget on the largest pages
    // (11 each), and the library asks for one at once, before 11 have refilled (55 ms).
    let api = secnet_client::NodeApi::new(&base).unwrap();
    api.status().await.unwrap();
    loop {
        let r = http
            .get(format!("{base}/v1/log?limit=1000"))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            break;
        }
    }
    let page = secnet_client::LogQuery {
        limit: Some(1_000),
        ..Default::default()
    };
    if let Err(e) = api.log(&page).await {
        panic!("the library gave up on a busy node: {e}");
    }

    // A whole block costs BLOCK_COST of the budget: a fresh address is refused after about
    // the budget's worth of blocks (a missing one is charged as much: it is charged first).
    asks_until_refused(
        &from([127, 0, 0, 4]),
        &format!("{base}/v1/blocks/999999"),
        404,
        BLOCK_COST,
    )
    .await;

    // Another address has its own budget.
    let other = from([127, 0, 0, 2]);
    let r = other
        .get(format!("{base}/v1/log?limit=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The transaction hashes of a block no longer among those kept in memory are read back and
/// decoded: they cost `OLD_BLOCK_TX_HASHES_COST` of the budget; those of a block kept in
/// memory, and of a height not applied yet, cost nothing, even over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hashes_of_a_block_read_back_are_charged_and_a_later_height_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let payer = Keypair::deterministic("budget", 1);
    let genesis = common::funding("secnet-budget-test", &[&payer], 1_000);
    let key = Keypair::deterministic("budget", 0);
    let node = common::dev_node(dir.path(), &genesis, key, Duration::from_millis(20)).await;
    let base = node.url().to_string();
    let api = secnet_client::NodeApi::new(&base).unwrap();
    // A block a transfer, past the blocks kept in memory.
    for _ in 0..12 {
        let call = secnet_types::Call::Transfer {
            to: Keypair::deterministic("budget", 2).account(),
            amount: 1,
        };
        let (_, _, receipt) = api
            .execute(&payer, "secnet-budget-test", call)
            .await
            .unwrap();
        assert!(receipt.is_applied(), "{receipt:?}");
    }
    let old = from([127, 0, 0, 5]);
    asks_until_refused(
        &old,
        &format!("{base}/v1/blocks/1/tx-hashes"),
        200,
        OLD_BLOCK_TX_HASHES_COST,
    )
    .await;
    // Over its budget, the address is still told of the blocks kept in memory, and that a
    // later height is not applied yet.
    let tip = api.status().await.unwrap().height;
    let recent = old
        .get(format!("{base}/v1/blocks/{tip}/tx-hashes"))
        .send()
        .await
        .unwrap();
    assert_eq!(recent.status(), 200);
    let ahead = old
        .get(format!("{base}/v1/blocks/999999/tx-hashes"))
        .send()
        .await
        .unwrap();
    assert_eq!(ahead.status(), 404);
}

/// An address that started a snapshot is refused the next within the minute, told when to
/// come back; another address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_starts_one_snapshot_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let node = dev_node(dir.path()).await;
    let url = format!("{}/v1/snapshot", node.url());
    let snapshot = |ip: [u8; 4]| {
        let url = url.clone();
        async move { from(ip).get(&url).send().await.unwrap() }
    };
    for _ in 0..SNAPSHOTS_PER_SOURCE_PER_MINUTE {
        let served = snapshot([127, 0, 0, 3]).await;
        assert_eq!(served.status(), 200);
        assert!(!served.bytes().await.unwrap().is_empty());
    }
    let refused = snapshot([127, 0, 0, 3]).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("snapshot a minute"),
        "{problem}"
    );
    assert_eq!(
        snapshot([127, 0, 0, 4]).await.status(),
        200,
        "another address"
    );
}
