//! End to end, as a new user would try it: a proxy in front of a real node alters its
//! answers, and every verifying command run through it fails with `verification failed:`
//! instead of printing the lie; through the same proxy, told to be honest, they verify.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed lookup is a failed test"
)]

mod common;

use common::{DevNode, json, ok, path, run};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// What the proxy does to the node's answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Lie {
    /// Forwards everything as it is.
    None,
    /// Changes one byte of every proven state value (e.g. a balance).
    Value,
    /// Asks the node about another account than the one the client asked about.
    OtherKey,
    /// Changes one byte of every proven receipt (e.g. its outcome).
    Receipt,
}

struct Proxy {
    lie: Arc<AtomicU8>,
    url: String,
    _rt: tokio::runtime::Runtime,
}

impl Proxy {
    fn start(node: &str, swap: (String, String)) -> Proxy {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let lie = Arc::new(AtomicU8::new(Lie::None as u8));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (node, state) = (node.to_string(), lie.clone());
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (node, lie, swap) = (node.clone(), state.load(Ordering::SeqCst), swap.clone());
            async move { forward(&node, lie, &swap, request).await }
        });
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Proxy { lie, url, _rt: rt }
    }

    fn set(&self, lie: Lie) {
        self.lie.store(lie as u8, Ordering::SeqCst);
    }
}

/// Changes the last byte of a byte array, or the last digit of a hex string.
fn flip(v: &mut serde_json::Value) {
    if let Some(last) = v.as_array_mut().and_then(|a| a.last_mut())
        && let Some(n) = last.as_u64()
    {
        *last = serde_json::Value::from(n ^ 1);
    } else if let Some(s) = v.as_str() {
        let mut s = s.to_string();
        let last = s.pop().unwrap_or('0');
        s.push(if last == '0' { '1' } else { '0' });
        *v = serde_json::Value::String(s);
    }
}

async fn forward(
    node: &str,
    lie: u8,
    (mine, other): &(String, String),
    request: axum::extract::Request,
) -> axum::response::Response {
    let mut target = request
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    if lie == Lie::OtherKey as u8 {
        target = target.replace(mine.as_str(), other.as_str());
    }
    let method = request.method().clone();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    let answer = common::http()
        .request(method, format!("{node}{target}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let bytes = answer.bytes().await.unwrap();
    let mut out = bytes.to_vec();
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        if lie == Lie::Value as u8
            && let Some(proofs) = v.get_mut("proofs").and_then(|p| p.as_array_mut())
        {
            for p in proofs {
                flip(&mut p["value"]);
            }
        }
        if lie == Lie::Receipt as u8 && target.ends_with("/proof") {
            flip(&mut v["receipt"]);
        }
        out = serde_json::to_vec(&v).unwrap();
    }
    axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(out))
        .unwrap()
}

#[test]
fn a_proxy_that_alters_answers_is_caught_by_every_verifying_command() {
    let dir = tempfile::tempdir().unwrap();
    let node = DevNode::start(dir.path());
    let genesis = dir.path().join("genesis.json");
    let genesis = path(&genesis);
    let node_key = dir.path().join("node.key");
    let node_account = ok(&["keys", "show", path(&node_key)]).trim().to_string();
    let alice_key = dir.path().join("alice.key");
    let alice = ok(&["keys", "new", "--out", path(&alice_key)])
        .trim()
        .to_string();
    let paid = json(&[
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
    let tx = paid["hash"].as_str().unwrap().to_string();

    let proxy = Proxy::start(&node.url, (alice.clone(), node_account.clone()));
    let account = |proxy: &Proxy| {
        run(&[
            "account",
            &alice,
            "--node",
            &proxy.url,
            "--genesis",
            genesis,
            "--json",
        ])
    };
    let receipt = |proxy: &Proxy| {
        run(&[
            "tx",
            "show",
            &tx,
            "--node",
            &proxy.url,
            "--genesis",
            genesis,
        ])
    };

    // Honest: the answers verify through the proxy.
    let honest = account(&proxy);
    assert!(honest.status.success(), "{honest:?}");
    let shown: serde_json::Value = serde_json::from_slice(&honest.stdout).unwrap();
    assert_eq!(shown["verified"], true, "{shown}");
    assert_eq!(shown["balance"], 250, "{shown}");
    assert!(receipt(&proxy).status.success());

    // Each lie: a non-zero exit that says what did not verify, and no answer printed.
    for (lie, check) in [
        (Lie::Value, "account"),
        (Lie::OtherKey, "account"),
        (Lie::Receipt, "receipt"),
    ] {
        proxy.set(lie);
        let out = if check == "account" {
            account(&proxy)
        } else {
            receipt(&proxy)
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{lie:?} was believed: {out:?}");
        assert!(stderr.contains("verification failed:"), "{lie:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{lie:?} printed an answer: {out:?}");
    }
}
