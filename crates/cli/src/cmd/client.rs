//! A small HTTP client of the node API.
#![allow(
    clippy::indexing_slicing,
    reason = "indexing a serde_json::Value yields Null, never panics"
)]

use anyhow::{Context, anyhow, bail};
use secnet_types::{AccountId, Call, Hash, Keypair, Receipt, SignedTransaction, Transaction};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Largest JSON answer read from a node, in bytes (a fetched object's bytes are read
/// separately, streamed to a file).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// A node's API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client of the node at `base` (e.g. `http://127.0.0.1:7878`).
    pub fn new(base: &str) -> anyhow::Result<Client> {
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        })
    }

    async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
        let status = resp.status();
        let bytes = secnet_client::read_bounded(resp, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                secnet_client::ReadError::TooLarge => {
                    anyhow!("the node's answer is larger than {MAX_ANSWER_BYTES} bytes")
                }
                secnet_client::ReadError::Http(e) => {
                    anyhow::Error::new(e).context("reading the node's answer")
                }
            })?;
        let text = String::from_utf8_lossy(&bytes);
        let body: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) if !status.is_success() => bail!("node answered {status}: {text}"),
            Err(e) => return Err(e).context("the node's answer is not JSON"),
        };
        if !status.is_success() {
            let detail = body
                .get("detail")
                .and_then(Value::as_str)
                .unwrap_or("no detail");
            bail!("node answered {status}: {detail}");
        }
        Ok(body)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        Self::answer(resp).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        Self::answer(resp).await
    }

    /// Sends `method path` signed by `key` (the `SecNet-Auth` header over the method, path,
    /// body, time and a nonce) and returns the JSON answer.
    pub async fn signed(
        &self,
        key: &Keypair,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = secnet_pdc::auth::RequestAuth::sign(
            key,
            method.as_str(),
            path,
            &body,
            secnet_node::datadir::now_ms(),
        );
        let resp = self
            .http
            .request(method, &url)
            .header("secnet-auth", auth.to_header())
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        Self::answer(resp).await
    }

    /// Submits a signed transaction; returns its hash.
    pub async fn submit(&self, tx: &SignedTransaction) -> anyhow::Result<Hash> {
        let url = format!("{}/v1/tx", self.base);
        let resp = self
            .http
            .post(&url)
            .json(&serde_json::json!({ "tx": hex::encode(tx.to_bytes()) }))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let body = Self::answer(resp).await?;
        serde_json::from_value(body["hash"].clone()).context("node answered without a hash")
    }

    /// Waits until `hash` is committed and returns its receipt.
    pub async fn wait(&self, hash: &Hash, timeout: Duration) -> anyhow::Result<(u64, Receipt)> {
        let start = Instant::now();
        loop {
            let body = self.get(&format!("/v1/tx/{hash}")).await?;
            if body["status"]["status"] == "committed" {
                let height = body["status"]["height"].as_u64().unwrap_or(0);
                let receipt = serde_json::from_value(body["status"]["receipt"].clone())?;
                return Ok((height, receipt));
            }
            if start.elapsed() > timeout {
                bail!("transaction {hash} not committed after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The node's chain id.
    pub async fn chain_id(&self) -> anyhow::Result<String> {
        let status = self.get("/v1/status").await?;
        status["chain_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("status has no chain_id"))
    }

    /// An account's balance and next nonce.
    pub async fn account(&self, id: &AccountId) -> anyhow::Result<(u64, u64)> {
        let a = self.get(&format!("/v1/accounts/{id}")).await?;
        Ok((
            a["balance"].as_u64().unwrap_or(0),
            a["nonce"].as_u64().unwrap_or(0),
        ))
    }

    /// Signs `call` with `key` at its next nonce, submits it and waits for the receipt.
    pub async fn execute(&self, key: &Keypair, call: Call) -> anyhow::Result<(u64, Hash, Receipt)> {
        let chain_id = self.chain_id().await?;
        let (_, nonce) = self.account(&key.account()).await?;
        let tx = Transaction {
            chain_id,
            sender: key.account(),
            nonce,
            call,
        }
        .sign(key);
        let hash = self.submit(&tx).await?;
        let (height, receipt) = self.wait(&hash, Duration::from_secs(30)).await?;
        Ok((height, hash, receipt))
    }
}
