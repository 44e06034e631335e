//! Transactions over HTTP on loopback, on a real single-node ledger: the JSON and the
//! binary encodings of a batch admit the same transactions with the same per-transaction
//! results, and a malformed binary batch is refused whole, saying what was wrong, with
//! nothing admitted; what the node applied shows in its gauges.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use secnet_api::txs::{BATCH_MEDIA_TYPE, BatchAnswer, BatchResult, encode_batch};
use secnet_types::{Call, Keypair, SignedTransaction, Transaction};
use serde_json::{Value, json};
use std::time::Duration;

const CHAIN: &str = "secnet-txs-test";

fn transfer(key: &Keypair, to: &Keypair, nonce: u64) -> SignedTransaction {
    Transaction {
        chain_id: CHAIN.into(),
        sender: key.account(),
        nonce,
        call: Call::Transfer {
            to: to.account(),
            amount: 1,
        },
    }
    .sign(key)
}

/// A transfer whose signature's last byte is flipped.
fn forged(key: &Keypair, to: &Keypair, nonce: u64) -> SignedTransaction {
    let mut bytes = transfer(key, to, nonce).to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    SignedTransaction::decode_bytes(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_binary_batches_admit_alike_and_a_malformed_one_admits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node_key = Keypair::deterministic("txs-http", 0);
    let a = Keypair::deterministic("txs-http", 1);
    let b = Keypair::deterministic("txs-http", 2);
    let genesis = common::funding(CHAIN, &[&a, &b], 10_000);
    let node = common::dev_node(dir.path(), &genesis, node_key, Duration::from_secs(3_600)).await;
    let http = secnet_tls::http_client().unwrap().build().unwrap();
    let url = format!("{}/v1/txs", node.url());
    let post_binary = async |body: Vec<u8>| {
        let r = http
            .post(&url)
            .header("content-type", BATCH_MEDIA_TYPE)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };

    // The same kinds of batch, one per encoding: two good, one with a bad signature.
    let json_batch = [transfer(&a, &b, 0), transfer(&a, &b, 1), forged(&a, &b, 2)];
    let r: Value = http
        .post(&url)
        .json(&json!({ "txs": json_batch.iter().map(|t| hex::encode(t.to_bytes())).collect::<Vec<_>>() }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let from_json: BatchAnswer = serde_json::from_value(r).unwrap();
    let binary_batch = [transfer(&b, &a, 0), transfer(&b, &a, 1), forged(&b, &a, 2)];
    let (status, r) = post_binary(encode_batch(&binary_batch)).await;
    assert_eq!(status, 200, "{r}");
    let from_binary: BatchAnswer = serde_json::from_value(r).unwrap();
    for answer in [&from_json, &from_binary] {
        assert_eq!(answer.accepted, 2);
        assert!(matches!(answer.results[0], BatchResult::Admitted { .. }));
        assert!(matches!(answer.results[1], BatchResult::Admitted { .. }));
        assert!(
            matches!(&answer.results[2], BatchResult::Refused { busy: false, error } if error.contains("signature")),
            "{:?}",
            answer.results[2]
        );
    }
    let BatchResult::Admitted { hash } = &from_binary.results[0] else {
        unreachable!()
    };
    assert_eq!(*hash, binary_batch[0].hash());

    // Fresh keys past the address's budget are refused busy, one by one; funded senders
    // in the same batch are admitted, each answer in its transaction's place.
    let fresh: Vec<Keypair> = (0..70)
        .map(|i| Keypair::deterministic("txs-fresh", i))
        .collect();
    let publish_key = |k: &Keypair| {
        Transaction {
            chain_id: CHAIN.into(),
            sender: k.account(),
            nonce: 0,
            call: Call::SetEncryptionKey {
                key: k.encryption_key(),
            },
        }
        .sign(k)
    };
    let mut mixed: Vec<SignedTransaction> = fresh.iter().map(publish_key).collect();
    mixed.insert(66, transfer(&a, &b, 2));
    mixed.push(transfer(&a, &b, 3));
    let (status, r) = post_binary(encode_batch(&mixed)).await;
    assert_eq!(status, 200, "{r}");
    let answer: BatchAnswer = serde_json::from_value(r).unwrap();
    assert_eq!(answer.results.len(), mixed.len());
    for (i, (tx, result)) in mixed.iter().zip(&answer.results).enumerate() {
        let funded = tx.tx().sender == a.account();
        match result {
            BatchResult::Admitted { hash } => {
                assert_eq!(*hash, tx.hash(), "answer {i} is another transaction's");
                assert!(funded || i < 64, "fresh key {i} past the budget admitted");
            }
            BatchResult::Refused { error, busy } => {
                assert!(!funded, "funded transfer {i} refused: {error}");
                assert!(
                    *busy && error.contains("this address may submit"),
                    "{error}"
                );
            }
        }
    }
    assert_eq!(answer.accepted, 64 + 2);

    // Malformed binary batches: refused whole, with what was wrong, and nothing admitted.
    let good = encode_batch(&[transfer(&a, &b, 2)]);
    let pending_before = node_pending(&http, &node.url()).await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (good[..good.len() - 1].to_vec(), "ends inside transaction 0"),
        (
            [good.clone(), vec![0, 0]].concat(),
            "ends inside transaction 1",
        ),
        (
            [good.clone(), u32::MAX.to_be_bytes().to_vec()].concat(),
            "ends inside transaction 1",
        ),
        (
            [good.clone(), 3u32.to_be_bytes().to_vec(), vec![1, 2, 3]].concat(),
            "transaction 1:",
        ),
        (
            encode_batch(&vec![transfer(&a, &b, 2); 4_097]),
            "more than 4096 transactions",
        ),
    ];
    for (body, says) in cases {
        let (status, r) = post_binary(body).await;
        assert_eq!(status, 400, "{r}");
        let detail = r["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{detail:?} should say {says:?}");
    }
    assert_eq!(node_pending(&http, &node.url()).await, pending_before);
    let (status, r) = post_binary(Vec::new()).await;
    assert_eq!((status, r["accepted"].as_u64()), (200, Some(0)), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gauges_count_what_the_applied_transactions_keep() {
    let dir = tempfile::tempdir().unwrap();
    let node_key = Keypair::deterministic("txs-gauges", 0);
    let owner = Keypair::deterministic("txs-gauges", 1);
    let reader = Keypair::deterministic("txs-gauges", 2);
    let genesis = common::funding(CHAIN, &[&owner, &reader], 10_000);
    let node = common::dev_node(dir.path(), &genesis, node_key, Duration::from_millis(50)).await;
    let api = secnet_client::NodeApi::new(&node.url()).unwrap();
    let before = api.metrics().await.unwrap();
    assert_eq!(before["secnet_state_grants_by_expiry"], 0.0);
    assert_eq!(before["secnet_state_accounts"], 2.0);

    // A listing (and its address), a subscription and a grant: four entries, one grant.
    let hash = secnet_types::Hash::digest(b"gauged record");
    let calls = [
        Call::RegisterData(secnet_types::RegisterData {
            hash,
            description: "a gauged record".into(),
            address: "pdc://gauges/1".into(),
            price: 5,
            kind: secnet_types::DataKind::UserData,
            holder: owner.account(),
            holder_share_bps: 0,
        }),
        Call::SubscribeData { hash },
        Call::RequestDataWithHash {
            hash,
            purpose: "treatment".into(),
            ttl_secs: 60,
        },
    ];
    for (call, key) in calls.into_iter().zip([&owner, &reader, &reader]) {
        let (_, _, receipt) = api.execute(key, CHAIN, call).await.unwrap();
        assert!(receipt.is_applied(), "{receipt:?}");
    }
    let status = api.status().await.unwrap();
    let after = api.metrics().await.unwrap();
    assert!(after["secnet_height"] >= status.height as f64);
    assert_eq!(after["secnet_state_grants_by_expiry"], 1.0);
    // A node without a state memory bound keeps them all in memory.
    assert_eq!(after["secnet_state_grants_by_expiry_in_memory"], 1.0);
    assert_eq!(
        after["secnet_state_entries"] - before["secnet_state_entries"],
        4.0 + 1.0,
        "four entries and the access log's head"
    );
    // Nothing is bounded here: every entry stays in memory and nothing is stored.
    assert_eq!(
        after["secnet_state_entries_in_memory"],
        after["secnet_state_entries"]
    );
    assert_eq!(after["secnet_state_stored_subtrees"], 0.0);
    assert_eq!(after["secnet_state_stored_groups"], 0.0);
    assert_eq!(after["secnet_state_entries_moving"], 0.0);
    assert_eq!(after["secnet_state_spill_files_started_total"], 0.0);
    assert!(after["secnet_ledger_recent_heights"] >= 1.0);
    assert!(after["secnet_ledger_page_cache_bytes"] > 0.0);
    assert!(after.contains_key("secnet_ledger_index_rows_waiting"));
    assert!(after.contains_key("secnet_ledger_state_value_bytes_waiting"));
    assert!(after.contains_key("secnet_ledger_blocks_unwritten"));
    assert_eq!(after["secnet_ledger_listing_changes"], 1.0);
}

async fn node_pending(http: &reqwest::Client, base: &str) -> u64 {
    let s: Value = http
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    s["mempool"].as_u64().unwrap_or_else(|| panic!("{s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_the_next_block_ends_when_it_comes_the_wait_passes_or_the_node_stops() {
    let dir = tempfile::tempdir().unwrap();
    let node_key = Keypair::deterministic("txs-wait", 0);
    let a = Keypair::deterministic("txs-wait", 1);
    let b = Keypair::deterministic("txs-wait", 2);
    let genesis = common::funding(CHAIN, &[&a, &b], 10_000);
    let node = common::dev_node(dir.path(), &genesis, node_key, Duration::from_millis(50)).await;
    let api = secnet_client::NodeApi::new(&node.url()).unwrap();
    let http = secnet_tls::http_client().unwrap().build().unwrap();
    let get = async |path: String| {
        let r = http
            .get(format!("{}{path}", node.url()))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    // An idle node makes no block: the next one is not there, and asking without waiting,
    // or waiting less than it takes to come, answers that.
    let next = api.status().await.unwrap().height + 1;
    let (status, r) = get(format!("/v1/blocks/{next}/tx-hashes")).await;
    assert_eq!(status, 404, "{r}");
    let (status, r) = get(format!("/v1/blocks/{next}/tx-hashes?wait_ms=100")).await;
    assert_eq!(status, 404, "{r}");

    // Asked for before the transaction that makes it is sent, the block is answered once
    // the node applies it, with that transaction.
    let waiting = {
        let api = api.clone();
        tokio::spawn(async move {
            api.next_block_tx_hashes(next, Duration::from_secs(5))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "answered before the block existed");
    let tx = transfer(&a, &b, 0);
    api.submit(&tx).await.unwrap();
    let block = waiting.await.unwrap().expect("the block it waited for");
    assert_eq!(block.height, next);
    assert_eq!(block.tx_hashes, vec![tx.hash()]);
    assert_eq!(block.applied, vec![true]);
    // A block already applied is answered at once, however long the request would wait.
    let (status, r) = get(format!("/v1/blocks/{next}/tx-hashes?wait_ms=5000")).await;
    assert_eq!((status, r["height"].as_u64()), (200, Some(next)), "{r}");

    // A wait longer than the node grants, or one that is not a number, is refused, saying so.
    for (query, says) in [
        ("wait_ms=5001", "at most"),
        ("wait_ms=soon", "wait_ms"),
        ("wait_ms=-1", "wait_ms"),
    ] {
        let (status, r) = get(format!("/v1/blocks/{}/tx-hashes?{query}", next + 1)).await;
        assert_eq!(status, 400, "{r}");
        let detail = r["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{detail:?} should say {says:?}");
    }

    // A request still waiting when the node stops answers then (the block is not there):
    // the shutdown does not wait out its 5 s.
    let far = next + 1_000;
    let url = format!("{}/v1/blocks/{far}/tx-hashes?wait_ms=5000", node.url());
    let waiting = tokio::spawn(async move {
        let r = http.get(url).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "answered before the node stopped");
    let stopping = std::time::Instant::now();
    node.stop().await;
    let stopped_in = stopping.elapsed();
    let (status, r) = waiting.await.unwrap();
    assert_eq!(status, 404, "{r}");
    assert!(
        stopped_in < Duration::from_secs(4),
        "the shutdown took {stopped_in:?}: it waited for the request's wait to pass"
    );
}
