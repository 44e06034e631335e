//! `secnet bench pdc`: the Private Data Center's hot paths, in process.
//!
//! - the access decision for one fetch (token signature, fetch signature and replay check,
//!   grant and listing lookup in the ledger state, request detector, Cedar), p50/p99, on two
//!   paths: cold (a consumer's first fetch: its token opened and checked, no history) and
//!   warm (its later fetches: the token remembered). Each consumer fetches once every
//!   [`FETCH_SPACING_MS`], a rate the rule scorer considers normal, so no decision is a
//!   burst refusal;
//! - Cedar alone on the same request;
//! - streaming one large object into the encrypted store and back out (decrypting and
//!   checking its hash), MB/s, with the process's peak memory before and after.

use super::bench::peak_rss_mib;
use super::load::percentile;
use anyhow::{Context, ensure};
use secnet_contract::Sandbox;
use secnet_pdc::access::{FetchAttempt, FetchProof, Gate, RuleScorer};
use secnet_pdc::envelope::{FHIR_JSON, OCTETS};
use secnet_pdc::store::{PutRequest, Store};
use secnet_policy::{Action, Agent, AgentKind, AgentRef, Engine, Facts, Resource};
use secnet_types::{Call, DataKind, Genesis, Keypair, RegisterData, Transaction};
use std::io::Read;
use std::time::Instant;

const CHAIN: &str = "secnet-bench-pdc";

/// Time between two fetches of one consumer: 20 a minute, under the rule scorer's 30.
const FETCH_SPACING_MS: u64 = 3_000;

/// Consumers, each with its own grant and token.
const CONSUMERS: usize = 256;
const POLICY: &str = r#"@id("hospital-b-treats")
permit (principal in SecNet::Organisation::"hospital-b", action == SecNet::Action::"read", resource in SecNet::Collection::"fhir/Condition")
when { context.purpose == "treatment" };
@id("no-research-on-notes")
forbid (principal, action, resource in SecNet::Collection::"notes") when { context.purpose == "research" };"#;

/// A reader of `len` pseudo-random bytes, generated on the fly.
struct Generated {
    left: u64,
    state: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let Some(out) = buf.get_mut(..n) else {
            return Ok(0);
        };
        for chunk in out.chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let bytes = self.state.to_le_bytes();
            chunk.copy_from_slice(bytes.get(..chunk.len()).unwrap_or_default());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Runs a setup call on the sandbox ledger; a refusal is an error of the benchmark.
fn setup(chain: &mut Sandbox, i: usize, call: Call) -> anyhow::Result<()> {
    let receipt = chain.run(i, call)?;
    ensure!(
        receipt.is_applied(),
        "setup transaction refused: {:?}",
        receipt.outcome
    );
    Ok(())
}

/// Runs the benchmark and prints JSON.
pub fn run(decisions: usize, stream_mib: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let keys: Vec<Keypair> = (0..2 + CONSUMERS as u64)
        .map(|i| Keypair::deterministic("bench-pdc", i))
        .collect();
    let [patient, holder] = [0usize, 1];
    let consumers: Vec<usize> = (2..2 + CONSUMERS).collect();
    let mut chain = Sandbox::new(CHAIN, keys, 1_000_000);
    for i in 0..2 + CONSUMERS {
        let key = chain.key(i).context("key")?.encryption_key();
        setup(&mut chain, i, Call::SetEncryptionKey { key })?;
    }
    // The sandbox's keys, derived again (the sandbox keeps its own).
    let k =
        |i: usize| -> anyhow::Result<Keypair> { Ok(Keypair::deterministic("bench-pdc", i as u64)) };
    let (patient_key, holder_key) = (k(patient)?, k(holder)?);
    let store = Store::open(dir.path(), holder_key.clone())?;

    // A 1 KiB FHIR Condition, registered, subscribed and granted.
    let condition = |note: &str| {
        serde_json::json!({
            "resourceType": "Condition", "id": "c1",
            "code": {"text": "Diabetes mellitus type 2"},
            "subject": {"reference": "Patient/p1"},
            "note": [{"text": note}]
        })
    };
    let pad = 1024usize.saturating_sub(serde_json::to_vec(&condition(""))?.len());
    let resource = condition(&"x".repeat(pad));
    let bytes = serde_json::to_vec(&resource)?;
    let (object, udi) = store.put(
        &PutRequest {
            owner: patient_key.account(),
            owner_key: patient_key.encryption_key(),
            source: "hospital-a".into(),
            object: "fhir/Condition/c1".into(),
            media_type: FHIR_JSON.into(),
        },
        bytes.as_slice(),
    )?;
    let version = object.latest().context("no version")?.clone();
    let data = udi.cid.hash();
    setup(
        &mut chain,
        patient,
        Call::RegisterData(RegisterData {
            hash: data,
            description: "condition".into(),
            address: format!("pdc://hospital-a/{udi}"),
            price: 10,
            kind: DataKind::UserData,
            holder: holder_key.account(),
            holder_share_bps: 2_000,
        }),
    )?;
    for &c in &consumers {
        setup(&mut chain, c, Call::SubscribeData { hash: data })?;
        setup(
            &mut chain,
            c,
            Call::RequestDataWithHash {
                hash: data,
                purpose: "treatment".into(),
                ttl_secs: 3_600,
            },
        )?;
    }

    let engine = Engine::new(secnet_policy::DEFAULT_RISK_THRESHOLD)?;
    let policies = engine.check(POLICY)?;
    let res = Resource {
        owner: patient_key.account().to_string(),
        path: "fhir/Condition/c1".into(),
        media_type: FHIR_JSON.into(),
        schema: version.envelope.schema.clone(),
    };
    let agent_of = |key: &Keypair| Agent {
        kind: AgentKind::User,
        account: key.account().to_string(),
        name: "dr. b".into(),
        member_of: vec![AgentRef {
            kind: AgentKind::Organisation,
            account: "hospital-b".into(),
        }],
    };
    let now = chain.state.tip().timestamp_ms;
    // Each consumer's key, agent and token (issued now, valid for the token lifetime).
    let mut parties = Vec::with_capacity(CONSUMERS);
    for &c in &consumers {
        let key = k(c)?;
        let grant = chain
            .state
            .grants()
            .find(|g| g.requester == key.account())
            .context("no grant")?
            .id;
        let (token, sealed) = Gate::issue(&holder_key, &key.account(), &grant, &chain.state, now)
            .map_err(|r| anyhow::anyhow!("token refused: {r:?}"))?;
        parties.push((agent_of(&key), key, token, sealed));
    }
    // Rounds: every consumer fetches once per round, FETCH_SPACING_MS apart, within the
    // tokens' lifetime.
    let max_rounds = (secnet_pdc::access::TOKEN_TTL_MS / FETCH_SPACING_MS).saturating_sub(1);
    let rounds = (decisions.div_ceil(CONSUMERS) as u64).clamp(2, max_rounds);
    // Fetch proofs are signed by the consumers beforehand: the benchmark measures the holder.
    let mut attempts = Vec::new();
    for round in 0..rounds {
        for (c, (_, key, token, _)) in parties.iter().enumerate() {
            let at = now + round * FETCH_SPACING_MS + c as u64;
            attempts.push((
                round,
                c,
                at,
                FetchProof::sign(key, token, "GET", "/v1/pdc/fetch", at),
            ));
        }
    }
    let mut gate = Gate::new();
    let (mut cold_us, mut access_us) = (Vec::new(), Vec::new());
    for (round, c, at, proof) in &attempts {
        let (agent, _, _, sealed) = parties.get(*c).context("consumer")?;
        let start = Instant::now();
        let ok = gate.authorize(
            &holder_key.account(),
            &FetchAttempt {
                token: sealed,
                proof,
                method: "GET",
                path: "/v1/pdc/fetch",
                data,
            },
            &chain.state,
            &engine,
            &policies,
            |_| agent.clone(),
            &res,
            &RuleScorer,
            *at,
        );
        let us = start.elapsed().as_secs_f64() * 1e6;
        if *round == 0 {
            cold_us.push(us);
        } else {
            access_us.push(us);
        }
        match ok {
            Ok(ok) => ensure!(
                ok.decision.score < secnet_policy::DEFAULT_RISK_THRESHOLD,
                "the detector flagged a fetch at a normal rate (score {})",
                ok.decision.score
            ),
            Err(r) => anyhow::bail!("a valid fetch was refused: {:?}", r.reason),
        }
    }
    cold_us.sort_by(f64::total_cmp);
    access_us.sort_by(f64::total_cmp);

    let facts = Facts {
        purpose: "treatment".into(),
        score: 0,
        grant: true,
        day: Facts::day_of(1_800_000_000_000),
    };
    let mut cedar_us = Vec::with_capacity(decisions);
    for _ in 0..decisions {
        let start = Instant::now();
        let agent = &parties.first().context("consumer")?.0;
        let d = engine.decide(&policies, agent, Action::Read, &res, &facts)?;
        cedar_us.push(start.elapsed().as_secs_f64() * 1e6);
        ensure!(d.allowed(), "Cedar denied the benchmark request");
    }
    cedar_us.sort_by(f64::total_cmp);

    // Streaming.
    let len = stream_mib << 20;
    let rss_before = peak_rss_mib(std::process::id());
    let start = Instant::now();
    let (big, _) = store.put(
        &PutRequest {
            owner: patient_key.account(),
            owner_key: patient_key.encryption_key(),
            source: "imaging".into(),
            object: "scans/big".into(),
            media_type: OCTETS.into(),
        },
        Generated {
            left: len,
            state: 0x9e37_79b9_7f4a_7c15,
        },
    )?;
    let put_s = start.elapsed().as_secs_f64();
    let big_version = big.latest().context("no version")?;
    let start = Instant::now();
    let mut reader = store.read(big_version)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    let get_s = start.elapsed().as_secs_f64();
    ensure!(read == len, "read back {read} of {len} bytes");
    let rss_after = peak_rss_mib(std::process::id());

    let mb = len as f64 / 1e6;
    let out = serde_json::json!({
        "bench": "pdc",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "consumers": CONSUMERS,
        "fetch_spacing_ms_per_consumer": FETCH_SPACING_MS,
        "cold_decisions": cold_us.len(),
        "cold_access_decision_p50_us": percentile(&cold_us, 0.50),
        "cold_access_decision_p99_us": percentile(&cold_us, 0.99),
        "warm_decisions": access_us.len(),
        "warm_access_decision_p50_us": percentile(&access_us, 0.50),
        "warm_access_decision_p99_us": percentile(&access_us, 0.99),
        "cedar_p50_us": percentile(&cedar_us, 0.50),
        "cedar_p99_us": percentile(&cedar_us, 0.99),
        "stream_bytes": len,
        "stream_put_mb_per_s": mb / put_s,
        "stream_get_mb_per_s": mb / get_s,
        "peak_rss_mib_before_stream": rss_before,
        "peak_rss_mib_after_stream": rss_after,
    });
    super::print_json(&out)
}

/// Fetches of a 1 KiB FHIR resource over HTTP on loopback: a single-node ledger with its PDC,
/// one grant, and `fetches` pre-signed fetch proofs sent by `concurrency` connections, over
/// TLS unless `plain`.
pub fn run_http(fetches: usize, concurrency: usize, plain: bool) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        let dir = tempfile::tempdir()?;
        let listen = "127.0.0.1:0".parse()?;
        let (transport, _) = secnet_node::tls::dev_transport(
            dir.path(),
            listen,
            &secnet_node::tls::DevTls { plain, ..Default::default() },
        )?;
        let scheme = transport.scheme();
        let keys: Vec<Keypair> = (0..3).map(|i| Keypair::deterministic("bench-pdc-http", i)).collect();
        let (holder, patient, consumer) = match keys.as_slice() {
            [h, p, c] => (h.clone(), p.clone(), c.clone()),
            _ => anyhow::bail!("three keys expected"),
        };
        let genesis = Genesis::single_node(
            CHAIN,
            secnet_node::datadir::now_ms().saturating_sub(1_000),
            keys.iter().map(Keypair::account),
            1_000_000,
        );
        let node = secnet_node::start_dev(
            dir.path(),
            &genesis,
            holder.clone(),
            listen,
            transport,
            secnet_node::dev::ProducerConfig {
                block_interval: std::time::Duration::from_millis(50),
                ..Default::default()
            },
        )
        .await?;
        let base = node.url();
        let http = secnet_tls::http_client()?.pool_max_idle_per_host(concurrency).build()?;
        let mut nonces = std::collections::HashMap::new();
        let mut submit = async |key: &Keypair, call: Call| -> anyhow::Result<secnet_types::Hash> {
            let nonce = nonces.entry(key.account()).or_insert(0u64);
            let tx = Transaction { chain_id: CHAIN.into(), sender: key.account(), nonce: *nonce, call }.sign(key);
            *nonce += 1;
            let hash = tx.hash();
            node.node.core().admit_one(tx)?.map_err(|e| anyhow::anyhow!("{e}"))?;
            for _ in 0..400 {
                if node.node.with_ledger(|l| l.tx_location(&hash))??.is_some() {
                    return Ok(hash);
                }
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            anyhow::bail!("setup transaction {hash} did not commit")
        };
        for k in [&patient, &consumer] {
            submit(k, Call::SetEncryptionKey { key: k.encryption_key() }).await?;
        }
        let condition = serde_json::json!({
            "resourceType": "Condition", "id": "c1", "code": {"text": "Diabetes mellitus type 2"},
            "subject": {"reference": "Patient/p1"}, "note": [{"text": "x".repeat(900)}]
        });
        let body = serde_json::to_vec(&condition)?;
        let api = secnet_client::NodeApi::for_holder(&base, holder.account())?;
        let data = api
            .put_object(&patient, &patient.account(), "fhir/Condition/c1", "", body.clone(), "application/fhir+json")
            .await?
            .hash;
        submit(&patient, Call::RegisterData(RegisterData {
            hash: data,
            description: "condition".into(),
            address: "pdc://bench".into(),
            price: 1,
            kind: DataKind::UserData,
            holder: holder.account(),
            holder_share_bps: 1_000,
        }))
        .await?;
        submit(&consumer, Call::SubscribeData { hash: data }).await?;
        let grant = submit(&consumer, Call::RequestDataWithHash { hash: data, purpose: "treatment".into(), ttl_secs: 3_600 }).await?;
        let policy = format!(
            "permit (principal == SecNet::User::\"{}\", action == SecNet::Action::\"read\", resource in SecNet::Collection::\"fhir\");",
            consumer.account()
        );
        api.set_policies(&patient, &policy).await?;
        let sealed = api.token(&consumer, &grant).await?.token;
        let token = secnet_pdc::access::AccessToken::open(&sealed, &holder.account())
            .map_err(|r| anyhow::anyhow!("token does not open: {r:?}"))?;
        let path = format!("/v1/pdc/data/{data}");
        let now = secnet_node::datadir::now_ms();
        let proofs: Vec<String> = (0..fetches)
            .map(|_| FetchProof::sign(&consumer, &token, "GET", &path, now).to_header())
            .collect();
        let proofs = std::sync::Arc::new(std::sync::Mutex::new(proofs));
        let start = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..concurrency.max(1) {
            let (http, proofs, url, sealed) = (http.clone(), proofs.clone(), format!("{base}{path}"), sealed.clone());
            workers.push(tokio::spawn(async move {
                let mut ok = 0usize;
                loop {
                    let next = proofs.lock().ok().and_then(|mut p| p.pop());
                    let Some(proof) = next else { break };
                    let r = http.get(&url).header("accept", secnet_pdc::envelope::OCTETS).header("secnet-token", &sealed).header("secnet-fetch", proof).send().await?;
                    if r.status().is_success() {
                        let _ = r.bytes().await?;
                        ok += 1;
                    }
                }
                anyhow::Ok(ok)
            }));
        }
        let mut ok = 0;
        for w in workers {
            ok += w.await??;
        }
        let secs = start.elapsed().as_secs_f64();
        ensure!(ok == fetches, "{} of {fetches} fetches were refused", fetches - ok);
        let out = serde_json::json!({
            "bench": "pdc-http",
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "fetches": fetches,
            "concurrency": concurrency,
            "transport": scheme,
            "resource_bytes": body.len(),
            "seconds": secs,
            "requests_per_s": fetches as f64 / secs,
        });
        node.stop().await;
        super::print_json(&out)
    })
}
