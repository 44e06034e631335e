//! The node's HTTP API, typed: one method per route, each answer decoded into the type
//! `secnet-api` defines for it, read with a size bound, and a refusal turned into an error
//! that carries the node's problem detail.
//!
//! Nothing here is verified: these are the node's word (submission, where a transaction
//! waits, a holder's own routes). Whatever a caller decides on — a balance, a listing, a
//! grant, a receipt, a log entry — it checks through [`crate::RemoteNode`] against state
//! the validators certified.

use secnet_api::ProblemBody;
use secnet_api::audit::{ConsistencyProof, InclusionProof, LogPage};
use secnet_api::chain::{AccountAnswer, BlockAnswer, BlockTxHashes, MAX_BLOCK_WAIT_MS, NodeStatus};
use secnet_api::pdc::{
    AccessAsk, AskAnswer, AskRecord, Asks, Deleted, History, Imported, ObjectVersions, PdcInfo,
    PoliciesInstalled, PolicyText, RulesAnswer, Stored, TokenAnswer, TokenRequest,
};
use secnet_api::txs::{
    BATCH_MEDIA_TYPE, BatchAnswer, SubmitTx, Submitted, TxStatus, TxStatusAnswer, encode_batch,
};
use secnet_contract::entries::Listing;
use secnet_types::{
    AccountId, Call, GrantId, Hash, Keypair, Receipt, SignedTransaction, Transaction,
};
use std::time::{Duration, Instant};

use crate::remote::{ClientError, ReadError, read_bounded};

/// Largest answer read from a node, in bytes (an owner's whole history with its proofs is
/// the largest).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The current time, milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Which access-log entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// First index.
    pub from: Option<u64>,
    /// Most entries (the node caps it at 1,000).
    pub limit: Option<u64>,
    /// Only entries of this grant.
    pub grant: Option<GrantId>,
    /// Only entries about this content hash.
    pub data: Option<Hash>,
}

/// Most listings [`NodeApi::listings`] reads.
pub const MAX_LISTINGS: usize = 100_000;
/// Most listings in one page of `GET /v1/listings`.
pub const MAX_LISTINGS_PAGE: usize = 1_000;

/// A node's API.
#[derive(Debug, Clone)]
pub struct NodeApi {
    base: String,
    http: reqwest::Client,
    /// The holder account signed requests are meant for.
    holder: std::sync::OnceLock<AccountId>,
}

/// An error and the causes in its source chain, `: `-separated (reqwest's own message
/// names only the request).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Why a request to `url` got no answer, with the causes reqwest keeps in its source chain
/// (a refused certificate is named, with what to do about it).
pub(crate) fn unreachable(url: &str, e: &reqwest::Error) -> ClientError {
    let mut why = with_causes(e);
    if why.contains("UnknownIssuer") || why.contains("BadSignature") {
        why.push_str(
            " (the node's certificate is not from an authority this command trusts: pass the network's --ca)",
        );
    } else if why.contains("NotValidForName") || why.contains("NameConstraint") {
        why.push_str(" (the node's certificate is not for this address)");
    } else if why.contains("Expired") {
        why.push_str(" (the node's certificate has expired)");
    }
    ClientError::Node(format!("cannot reach {url}: {why}"))
}

/// Times a read refused as over this address's budget is asked again ([`NodeApi::get`]).
pub const BUSY_RETRIES: u32 = 2;
/// The longest wait a node may ask for before a read is asked again; a longer one is
/// reported as the refusal it is.
pub const BUSY_WAIT_MAX: Duration = Duration::from_secs(2);

/// A refusal: the status and the problem's detail.
fn refused(status: reqwest::StatusCode, bytes: &[u8]) -> (reqwest::StatusCode, String) {
    let detail = serde_json::from_slice::<ProblemBody>(bytes)
        .map(|p| p.detail)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned());
    (status, detail)
}

impl NodeApi {
    /// The API of the node at `base` (e.g. `https://127.0.0.1:7878`). TLS trusts the
    /// authorities this process trusts ([`secnet_tls::trust`]).
    pub fn new(base: &str) -> Result<NodeApi, ClientError> {
        Ok(NodeApi {
            base: base.trim_end_matches('/').to_string(),
            http: secnet_tls::http_client()
                .map_err(|e| ClientError::Node(e.to_string()))?
                .timeout(Duration::from_secs(30))
                // Nodes close connections idle for 20 s; closing first avoids reusing one
                // the node is closing.
                .pool_idle_timeout(Duration::from_secs(10))
                // A node answers itself; a redirect would send signed requests elsewhere.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| ClientError::Node(e.to_string()))?,
            holder: std::sync::OnceLock::new(),
        })
    }

    /// The API of the node at `base`, known to hold data as `holder` (from a certified
    /// listing or grant, or the genesis): its signed requests are meant for that holder
    /// alone, and no other holder accepts them.
    pub fn for_holder(base: &str, holder: AccountId) -> Result<NodeApi, ClientError> {
        let api = NodeApi::new(base)?;
        api.holder.get_or_init(|| holder);
        Ok(api)
    }

    /// The holder account signed requests name as their audience: the one this API was made
    /// for, or else the node's own account as it states it (`GET /v1/pdc`), asked once.
    pub async fn holder(&self) -> Result<AccountId, ClientError> {
        if let Some(h) = self.holder.get() {
            return Ok(*h);
        }
        let stated = self.pdc_info().await?.holder;
        Ok(*self.holder.get_or_init(|| stated))
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends a request and reads the answer (bounded): the decoded body on success, or the
    /// status and the problem's detail.
    async fn exchange<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<Result<T, (reqwest::StatusCode, String)>, ClientError> {
        Ok(self.exchange_noting_wait(request, path).await?.0)
    }

    /// [`NodeApi::exchange`], and with a refusal as over this address's budget (429), the
    /// wait the node asked for (`Retry-After`, in seconds).
    async fn exchange_noting_wait<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<(Result<T, (reqwest::StatusCode, String)>, Option<Duration>), ClientError> {
        let url = format!("{}{path}", self.base);
        let resp = request.send().await.map_err(|e| unreachable(&url, &e))?;
        let status = resp.status();
        let wait = (status == reqwest::StatusCode::TOO_MANY_REQUESTS)
            .then(|| resp.headers().get(reqwest::header::RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = answer_bytes(resp, &url, MAX_ANSWER_BYTES).await?;
        if !status.is_success() {
            return Ok((Err(refused(status, &bytes)), wait));
        }
        serde_json::from_slice(&bytes)
            .map(|answer| (Ok(answer), None))
            .map_err(|e| ClientError::Malformed(format!("{path}: {e}")))
    }

    /// `GET path`: the decoded answer, or the status and detail of a refusal. A refusal as
    /// over this address's budget is asked again after the wait the node names, when that
    /// is at most [`BUSY_WAIT_MAX`], up to [`BUSY_RETRIES`] times (a read asked again asks
    /// for the same thing; a submission is never sent twice here).
    pub(crate) async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Result<T, (reqwest::StatusCode, String)>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut retries = 0;
        loop {
            let (answer, wait) = self.exchange_noting_wait(self.http.get(&url), path).await?;
            match wait {
                Some(wait) if retries < BUSY_RETRIES && wait <= BUSY_WAIT_MAX => {
                    retries += 1;
                    tokio::time::sleep(wait).await;
                }
                _ => return Ok(answer),
            }
        }
    }

    /// `GET path`; a refusal is an error.
    pub(crate) async fn get_ok<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ClientError> {
        self.get(path).await?.map_err(|(s, d)| node_error(s, &d))
    }

    /// `GET path`; not found is `None`, another refusal an error.
    pub(crate) async fn get_found<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<T>, ClientError> {
        match self.get(path).await? {
            Ok(v) => Ok(Some(v)),
            Err((s, _)) if s == reqwest::StatusCode::NOT_FOUND => Ok(None),
            Err((s, d)) => Err(node_error(s, &d)),
        }
    }

    /// `POST path` with a JSON body; a refusal is an error.
    async fn post_ok<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        self.exchange(self.http.post(&url).json(body), path)
            .await?
            .map_err(|(s, d)| node_error(s, &d))
    }

    /// `method path` signed by `key` (the `SecNet-Auth` header over the holder it is meant
    /// for, the method, path and query, body, time and a nonce, with the body's
    /// `Content-Digest`); the decoded answer. A refusal is
    /// [`ClientError::Refused`] with the node's detail.
    pub async fn signed<T: serde::de::DeserializeOwned>(
        &self,
        key: &Keypair,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let audience = self.holder().await?;
        let auth = secnet_pdc::auth::RequestAuth::sign(
            key,
            &audience,
            method.as_str(),
            path,
            &body,
            now_ms(),
        );
        let request = self
            .http
            .request(method, &url)
            .header("secnet-auth", auth.to_header())
            .header("content-digest", secnet_pdc::auth::content_digest(&body))
            .header("content-type", content_type)
            .body(body);
        self.exchange(request, path)
            .await?
            .map_err(|(status, detail)| {
                ClientError::Refused(format!("node answered {status}: {detail}"))
            })
    }

    /// `GET path` signed by `key`, with an empty body.
    async fn signed_get<T: serde::de::DeserializeOwned>(
        &self,
        key: &Keypair,
        path: &str,
    ) -> Result<T, ClientError> {
        self.signed(
            key,
            reqwest::Method::GET,
            path,
            Vec::new(),
            "application/json",
        )
        .await
    }

    /// The node's own report of itself.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        self.get_ok("/v1/status").await
    }

    /// The node's gauges (`GET /metrics`, Prometheus text), by name.
    pub async fn metrics(&self) -> Result<std::collections::BTreeMap<String, f64>, ClientError> {
        let url = format!("{}/metrics", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| unreachable(&url, &e))?;
        let status = resp.status();
        let bytes = answer_bytes(resp, &url, MAX_GAUGES_BYTES).await?;
        if !status.is_success() {
            let (s, d) = refused(status, &bytes);
            return Err(node_error(s, &d));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| ClientError::Malformed(format!("/metrics: {e}")))?;
        Ok(parse_gauges(text))
    }

    /// An account as of the node's tip (unverified: see `RemoteNode::account`).
    pub async fn account(&self, id: &AccountId) -> Result<AccountAnswer, ClientError> {
        self.get_ok(&format!("/v1/accounts/{id}")).await
    }

    /// Submits a signed transaction; its hash once admitted, computed here: a node that
    /// answers another hash (to have another transaction's receipt checked) is refused.
    pub async fn submit(&self, tx: &SignedTransaction) -> Result<Hash, ClientError> {
        let body = SubmitTx {
            tx: hex::encode(tx.to_bytes()),
        };
        let submitted: Submitted = self.post_ok("/v1/tx", &body).await?;
        let hash = tx.hash();
        if submitted.hash != hash {
            return Err(ClientError::Malformed(format!(
                "the node answered hash {} for transaction {hash}",
                submitted.hash
            )));
        }
        Ok(hash)
    }

    /// Submits a batch in the binary encoding (no hex, no JSON); one result per transaction.
    pub async fn submit_batch(
        &self,
        txs: &[SignedTransaction],
    ) -> Result<BatchAnswer, ClientError> {
        let url = format!("{}/v1/txs", self.base);
        let request = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, BATCH_MEDIA_TYPE)
            .body(encode_batch(txs));
        self.exchange(request, "/v1/txs")
            .await?
            .map_err(|(s, d)| node_error(s, &d))
    }

    /// Where a transaction is, as the node says (`None`: neither pending nor committed).
    pub async fn tx_status(&self, hash: &Hash) -> Result<Option<TxStatus>, ClientError> {
        Ok(self
            .get_found::<TxStatusAnswer>(&format!("/v1/tx/{hash}"))
            .await?
            .map(|a| a.status))
    }

    /// Waits until the node says `hash` is committed; its height and receipt (verify them
    /// with `RemoteNode::transaction`).
    pub async fn wait(
        &self,
        hash: &Hash,
        timeout: Duration,
    ) -> Result<(u64, Receipt), ClientError> {
        let start = Instant::now();
        loop {
            if let Some(TxStatus::Committed {
                height, receipt, ..
            }) = self.tx_status(hash).await?
            {
                return Ok((height, receipt));
            }
            if start.elapsed() > timeout {
                return Err(ClientError::Node(format!(
                    "transaction {hash} not committed after {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Signs `call` with `key` for network `chain_id` at the sender's next nonce, submits
    /// it and waits for its receipt.
    pub async fn execute(
        &self,
        key: &Keypair,
        chain_id: &str,
        call: Call,
    ) -> Result<(u64, Hash, Receipt), ClientError> {
        let nonce = self.account(&key.account()).await?.nonce;
        let tx = Transaction {
            chain_id: chain_id.to_string(),
            sender: key.account(),
            nonce,
            call,
        }
        .sign(key);
        let hash = self.submit(&tx).await?;
        let (height, receipt) = self.wait(&hash, Duration::from_secs(30)).await?;
        Ok((height, hash, receipt))
    }

    /// A block as the node stores it.
    pub async fn block(&self, height: u64) -> Result<BlockAnswer, ClientError> {
        self.get_ok(&format!("/v1/blocks/{height}")).await
    }

    /// A block's transaction hashes (`None`: no block at that height yet).
    pub async fn block_tx_hashes(&self, height: u64) -> Result<Option<BlockTxHashes>, ClientError> {
        self.get_found(&format!("/v1/blocks/{height}/tx-hashes"))
            .await
    }

    /// The same, waiting up to `wait` (at most [`MAX_BLOCK_WAIT_MS`]) for the block if the
    /// node has not applied it yet: one request a block for a client following the chain,
    /// instead of asking again and again. `None` comes back no sooner than `wait`, also from
    /// a node that answers at once (one that does not wait, or has pruned the block), so
    /// that a caller asking again in a loop does not spin.
    pub async fn next_block_tx_hashes(
        &self,
        height: u64,
        wait: Duration,
    ) -> Result<Option<BlockTxHashes>, ClientError> {
        let wait = wait.min(Duration::from_millis(MAX_BLOCK_WAIT_MS));
        let asked = Instant::now();
        let found = self
            .get_found(&format!(
                "/v1/blocks/{height}/tx-hashes?wait_ms={}",
                wait.as_millis()
            ))
            .await?;
        if found.is_none()
            && let Some(left) = wait.checked_sub(asked.elapsed())
        {
            tokio::time::sleep(left).await;
        }
        Ok(found)
    }

    /// Listings as of the node's tip, all or the one at `address` (unverified: check each
    /// with `RemoteNode::listing`).
    pub async fn listings(&self, address: Option<&str>) -> Result<Vec<Listing>, ClientError> {
        match address {
            Some(a) => {
                self.get_ok(&format!("/v1/listings?address={}", encode_query(a)))
                    .await
            }
            None => {
                // Page by page (the node answers at most a page at a time), in hash order.
                let mut all: Vec<Listing> = Vec::new();
                loop {
                    let path = match all.last() {
                        Some(last) => format!("/v1/listings?after={}", last.hash),
                        None => "/v1/listings".to_string(),
                    };
                    let page: Vec<Listing> = self.get_ok(&path).await?;
                    if page.is_empty() {
                        break;
                    }
                    // A page is at most the node's page size, strictly after the last one
                    // and in order: a node cannot make the client loop or hoard.
                    let mut last = all.last().map(|l| l.hash);
                    for l in &page {
                        if Some(l.hash) <= last {
                            return Err(ClientError::Malformed(
                                "the node's listings are not in strictly increasing hash order"
                                    .into(),
                            ));
                        }
                        last = Some(l.hash);
                    }
                    if page.len() > MAX_LISTINGS_PAGE {
                        return Err(ClientError::Malformed(format!(
                            "the node answered a page of {} listings, more than {MAX_LISTINGS_PAGE}",
                            page.len()
                        )));
                    }
                    let full = page.len() == MAX_LISTINGS_PAGE;
                    all.extend(page);
                    if all.len() > MAX_LISTINGS {
                        return Err(ClientError::Malformed(format!(
                            "the node lists more than {MAX_LISTINGS} registrations"
                        )));
                    }
                    if !full {
                        break;
                    }
                }
                Ok(all)
            }
        }
    }

    /// Access-log entries.
    pub async fn log(&self, q: &LogQuery) -> Result<LogPage, ClientError> {
        let mut params = Vec::new();
        if let Some(from) = q.from {
            params.push(format!("from={from}"));
        }
        if let Some(limit) = q.limit {
            params.push(format!("limit={limit}"));
        }
        if let Some(grant) = &q.grant {
            params.push(format!("grant={grant}"));
        }
        if let Some(data) = &q.data {
            params.push(format!("data={data}"));
        }
        self.get_ok(&format!("/v1/log?{}", params.join("&"))).await
    }

    /// The inclusion proof of leaf `index` in the log of `size` leaves.
    pub async fn log_proof(&self, index: u64, size: u64) -> Result<InclusionProof, ClientError> {
        self.get_ok(&format!("/v1/log/{index}?size={size}")).await
    }

    /// The consistency proof from the log of `from` leaves to the log of `to`.
    pub async fn log_consistency(
        &self,
        from: u64,
        to: u64,
    ) -> Result<ConsistencyProof, ClientError> {
        self.get_ok(&format!("/v1/log/consistency?from={from}&to={to}"))
            .await
    }

    /// Who holds data at this node, and its limits.
    pub async fn pdc_info(&self) -> Result<PdcInfo, ClientError> {
        self.get_ok("/v1/pdc").await
    }

    /// The detectors scoring access requests at this node.
    pub async fn pdc_rules(&self) -> Result<RulesAnswer, ClientError> {
        self.get_ok("/v1/pdc/rules").await
    }

    /// Stores a new version of `owner`'s object `path` (signed by `key`: the owner or a
    /// permitted writer). `query` is appended as is (`source=…&media_type=…`).
    pub async fn put_object(
        &self,
        key: &Keypair,
        owner: &AccountId,
        path: &str,
        query: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<Stored, ClientError> {
        let mut url = object_route(owner, path);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        self.signed(key, reqwest::Method::PUT, &url, body, content_type)
            .await
    }

    /// An object's versions (the owner only).
    pub async fn object_versions(
        &self,
        key: &Keypair,
        owner: &AccountId,
        path: &str,
    ) -> Result<ObjectVersions, ClientError> {
        let url = object_route(owner, path);
        self.signed_get(key, &url).await
    }

    /// Erases an object and its versions.
    pub async fn delete_object(
        &self,
        key: &Keypair,
        owner: &AccountId,
        path: &str,
    ) -> Result<Deleted, ClientError> {
        let url = object_route(owner, path);
        self.signed(
            key,
            reqwest::Method::DELETE,
            &url,
            Vec::new(),
            "application/json",
        )
        .await
    }

    /// Imports a FHIR R4 Bundle as `owner`'s records, produced by `source`.
    pub async fn import_bundle(
        &self,
        key: &Keypair,
        owner: &AccountId,
        source: Option<&str>,
        bundle: Vec<u8>,
    ) -> Result<Imported, ClientError> {
        let mut url = format!("/v1/pdc/import/{owner}");
        if let Some(source) = source {
            url = format!("{url}?source={}", encode_query(source));
        }
        self.signed(
            key,
            reqwest::Method::POST,
            &url,
            bundle,
            secnet_pdc::envelope::FHIR_JSON,
        )
        .await
    }

    /// Replaces `key`'s Cedar policies.
    pub async fn set_policies(
        &self,
        key: &Keypair,
        text: &str,
    ) -> Result<PoliciesInstalled, ClientError> {
        let url = format!("/v1/pdc/policies/{}", key.account());
        self.signed(
            key,
            reqwest::Method::PUT,
            &url,
            text.as_bytes().to_vec(),
            "text/plain",
        )
        .await
    }

    /// `key`'s Cedar policies and the node's built-in ones.
    pub async fn policies(&self, key: &Keypair) -> Result<PolicyText, ClientError> {
        let url = format!("/v1/pdc/policies/{}", key.account());
        self.signed_get(key, &url).await
    }

    /// `key`'s history: every log entry about its data, with inclusion proofs (check them
    /// against a certified head).
    pub async fn history(&self, key: &Keypair) -> Result<History, ClientError> {
        let url = format!("/v1/pdc/history/{}", key.account());
        self.signed_get(key, &url).await
    }

    /// `key`'s history as a FHIR R4 Bundle of `AuditEvent` resources.
    pub async fn history_fhir(&self, key: &Keypair) -> Result<serde_json::Value, ClientError> {
        let url = format!("/v1/pdc/history/{}?format=fhir", key.account());
        self.signed_get(key, &url).await
    }

    /// Asks `owner`, as the organisation whose node key is `key`, for access to a listing of
    /// theirs this node holds.
    pub async fn ask(
        &self,
        key: &Keypair,
        owner: &AccountId,
        ask: &AccessAsk,
    ) -> Result<AskRecord, ClientError> {
        let body = serde_json::to_vec(ask).map_err(|e| ClientError::Malformed(e.to_string()))?;
        self.signed(
            key,
            reqwest::Method::POST,
            &format!("/v1/pdc/asks/{owner}"),
            body,
            "application/json",
        )
        .await
    }

    /// `key`'s asks (as the owner), newest first.
    pub async fn asks(&self, key: &Keypair) -> Result<Asks, ClientError> {
        self.signed_get(key, &format!("/v1/pdc/asks/{}", key.account()))
            .await
    }

    /// One ask of `owner`, as its owner or the organisation that asked.
    pub async fn ask_status(
        &self,
        key: &Keypair,
        owner: &AccountId,
        id: &Hash,
    ) -> Result<AskRecord, ClientError> {
        self.signed_get(key, &format!("/v1/pdc/asks/{owner}/{id}"))
            .await
    }

    /// Answers one of `key`'s asks, as its owner.
    pub async fn answer_ask(
        &self,
        key: &Keypair,
        id: &Hash,
        answer: &AskAnswer,
    ) -> Result<AskRecord, ClientError> {
        let body = serde_json::to_vec(answer).map_err(|e| ClientError::Malformed(e.to_string()))?;
        self.signed(
            key,
            reqwest::Method::POST,
            &format!("/v1/pdc/asks/{}/{id}", key.account()),
            body,
            "application/json",
        )
        .await
    }

    /// A token for `grant`, signed by the holder (check it: `AccessToken::open`).
    pub async fn token(&self, key: &Keypair, grant: &GrantId) -> Result<TokenAnswer, ClientError> {
        let body = serde_json::to_vec(&TokenRequest { grant: *grant })
            .map_err(|e| ClientError::Malformed(e.to_string()))?;
        self.signed(
            key,
            reqwest::Method::POST,
            "/v1/pdc/tokens",
            body,
            "application/json",
        )
        .await
    }
}

/// The route of `owner`'s object `path`.
fn object_route(owner: &AccountId, path: &str) -> String {
    format!("/v1/pdc/objects/{owner}/{}", path.trim_start_matches('/'))
}

/// The most bytes of gauges read from a node (a few KiB are served).
const MAX_GAUGES_BYTES: usize = 1 << 20;

/// The body of an answer from `url`, read up to `max` bytes.
async fn answer_bytes(
    resp: reqwest::Response,
    url: &str,
    max: usize,
) -> Result<Vec<u8>, ClientError> {
    read_bounded(resp, max).await.map_err(|e| match e {
        ReadError::TooLarge => ClientError::Malformed(format!("answer of more than {max} bytes")),
        ReadError::Http(e) => ClientError::Node(format!("reading {url}: {e}")),
    })
}

/// A node's refusal as an error.
pub(crate) fn node_error(status: reqwest::StatusCode, detail: &str) -> ClientError {
    ClientError::Node(format!("node answered {status}: {detail}"))
}

/// Percent-encodes a query value.
pub fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The samples of Prometheus text without labels, by name: `name value` lines (comments,
/// labelled samples and values that are not numbers are left out).
pub fn parse_gauges(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, value) = (words.next()?, words.next()?);
            let plain = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            Some((name.to_string(), value.parse().ok()?)).filter(|_| plain)
        })
        .collect()
}

#[cfg(test)]
mod gauge_tests {
    use super::parse_gauges;

    #[test]
    fn gauges_are_read_by_name_and_the_rest_left_out() {
        let text = "# HELP a_b the a\n# TYPE a_b gauge\na_b 12\nc{x=\"1\"} 3\nd NaNx\ne 1.5e3 1700000000\n\n";
        let gauges = parse_gauges(text);
        assert_eq!(
            gauges.into_iter().collect::<Vec<_>>(),
            vec![("a_b".to_string(), 12.0), ("e".to_string(), 1500.0)]
        );
    }
}
