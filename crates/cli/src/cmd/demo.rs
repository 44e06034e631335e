//! `secnet demo`: the paper's medical workflow (Section IV) end to end on a single-node
//! ledger: Alice's record held by hospital H_B is registered, hospital H_A subscribes and
//! pays (SC1: H_A → H_B, SC2: H_B → Alice), requests it, H_B checks the grant on the
//! ledger, serves the record, and records the access; an unsubscribed institute is refused
//! and the refusal is recorded too. Every access is then proven from the access log.
#![allow(
    clippy::indexing_slicing,
    reason = "indexing a serde_json::Value yields Null, never panics"
)]

use super::client::Client;
use anyhow::{Context, bail, ensure};
use clap::Args;
use secnet_contract::{AccessGrant, StateProof};
use secnet_ledger::{ConsistencyProof, InclusionProof};
use secnet_node::datadir::{DataDir, now_ms};
use secnet_node::dev::ProducerConfig;
use secnet_node::keyfile;
use secnet_types::{
    AccessDecision, AccessEntry, Allocation, Call, DataKind, Event, Hash, Keypair, Outcome,
    RefusalReason, RegisterData,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `secnet demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// The data directory (kept afterwards for `secnet audit`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address of the node's HTTP API during the demo.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

const PRICE: u64 = 500;
const HOLDER_SHARE_BPS: u16 = 2_000;

struct Party {
    name: &'static str,
    key: Keypair,
}

fn party(dir: &Path, name: &'static str) -> anyhow::Result<Party> {
    let path = dir.join("keys").join(format!("{name}.key"));
    Ok(Party {
        name,
        key: keyfile::load_or_create(&path)?,
    })
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn applied(outcome: &Outcome) -> anyhow::Result<&[Event]> {
    match outcome {
        Outcome::Applied { events } => Ok(events),
        Outcome::Rejected { rejection } => bail!("transaction refused: {rejection}"),
    }
}

/// A FHIR R4 Condition for Alice, unique per run so the demo can run again on the same data.
fn alice_record(run: u64) -> Vec<u8> {
    serde_json::json!({
        "resourceType": "Condition",
        "id": format!("alice-t2d-{run}"),
        "clinicalStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active" }] },
        "code": { "coding": [{ "system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2" }] },
        "subject": { "reference": "Patient/alice" },
        "onsetDateTime": "2019-03-14",
        "recorder": { "display": "Hospital B" }
    })
    .to_string()
    .into_bytes()
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = args.data_dir.clone();
    let alice = party(&dir, "alice")?;
    let ha = party(&dir, "hospital-a")?;
    let hb = party(&dir, "hospital-b")?;
    let institute = party(&dir, "research-institute")?;
    let funded = [
        Allocation {
            account: ha.key.account(),
            balance: 10_000,
        },
        Allocation {
            account: hb.key.account(),
            balance: 1_000,
        },
        Allocation {
            account: institute.key.account(),
            balance: 10_000,
        },
    ];
    let data = DataDir::new(&dir);
    let (genesis, node_key) = data.open_dev(&funded)?;
    for a in &funded {
        ensure!(
            genesis.allocations.iter().any(|g| g.account == a.account),
            "{} already holds a ledger from another demo setup; use an empty directory",
            dir.display()
        );
    }
    let config = ProducerConfig {
        block_interval: Duration::from_millis(50),
        ..ProducerConfig::default()
    };
    super::runtime()?.block_on(async move {
        let node = secnet_node::start_dev(&dir, &genesis, node_key, args.listen, config).await?;
        let result = story(&node.url(), &dir, &alice, &ha, &hb, &institute).await;
        node.stop().await;
        result
    })
}

async fn balances(c: &Client, parties: &[&Party]) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::new();
    for p in parties {
        out.push(c.account(&p.key.account()).await?.0);
    }
    Ok(out)
}

async fn story(
    url: &str,
    dir: &Path,
    alice: &Party,
    ha: &Party,
    hb: &Party,
    institute: &Party,
) -> anyhow::Result<()> {
    let c = Client::new(url)?;
    let status = c.get("/v1/status").await?;
    println!("SecNet medical data-sharing demo (paper Section IV)");
    println!(
        "node {url}, chain {}, height {}",
        status["chain_id"].as_str().unwrap_or("?"),
        status["height"]
    );
    for p in [alice, ha, hb, institute] {
        println!("  {:<19} {}", p.name, p.key.account());
    }

    step(
        1,
        "Every party publishes the X25519 key that data keys are sealed to",
    );
    for p in [alice, ha, hb, institute] {
        c.execute(
            &p.key,
            Call::SetEncryptionKey {
                key: p.key.encryption_key(),
            },
        )
        .await?;
    }
    println!("    4 encryption keys on the ledger");

    let run = c.get("/v1/status").await?["height"].as_u64().unwrap_or(0);
    let record = alice_record(run);
    let hash = Hash::digest(&record);
    let address = format!("pdc://hospital-b/alice/condition/{run}");
    step(
        2,
        "H_B stores Alice's record MD_Alice; Alice registers it as owner, with H_B as holder",
    );
    let (height, _, receipt) = c
        .execute(
            &alice.key,
            Call::RegisterData(RegisterData {
                hash,
                description: "Alice: type 2 diabetes (FHIR R4 Condition)".into(),
                address: address.clone(),
                price: PRICE,
                kind: DataKind::UserData,
                holder: hb.key.account(),
                holder_share_bps: HOLDER_SHARE_BPS,
            }),
        )
        .await?;
    applied(&receipt.outcome)?;
    println!("    content hash {hash}");
    println!("    address      {address}");
    println!(
        "    price {PRICE}, holder share {}%, registered at height {height}",
        HOLDER_SHARE_BPS / 100
    );

    step(
        3,
        "H_A finds the listing and subscribes: SC1 pays H_B, SC2 passes Alice her share",
    );
    let listings = c.get(&format!("/v1/listings?address={address}")).await?;
    ensure!(
        listings.as_array().is_some_and(|l| l.len() == 1),
        "listing not found by address"
    );
    let before = balances(&c, &[ha, hb, alice]).await?;
    let (_, _, receipt) = c.execute(&ha.key, Call::SubscribeData { hash }).await?;
    let events = applied(&receipt.outcome)?;
    let after = balances(&c, &[ha, hb, alice]).await?;
    for ((p, b), a) in [ha, hb, alice].iter().zip(&before).zip(&after) {
        println!(
            "    {:<11} {b:>6} -> {a:>6} ({:+})",
            p.name,
            i128::from(*a) - i128::from(*b)
        );
    }
    ensure!(
        before[0] - after[0] == PRICE,
        "H_A was not charged the price"
    );
    let holder_cut = PRICE * u64::from(HOLDER_SHARE_BPS) / 10_000;
    ensure!(
        after[1] - before[1] == holder_cut && after[2] - before[2] == PRICE - holder_cut,
        "payment split is wrong"
    );
    println!("    event: {}", serde_json::to_string(&events)?);

    step(
        4,
        "H_A requests the record by address and receives a time-limited access grant",
    );
    let (_, grant_id, receipt) = c
        .execute(
            &ha.key,
            Call::RequestDataWithAddress {
                address: address.clone(),
                purpose: "clinical trial NCT-2019-042".into(),
                ttl_secs: 900,
            },
        )
        .await?;
    applied(&receipt.outcome)?;
    println!("    grant {grant_id}");

    step(
        5,
        "H_B checks the grant against the ledger, serves the record, and records the delivery",
    );
    let g = c.get(&format!("/v1/grants/{grant_id}")).await?;
    let grant: AccessGrant = serde_json::from_value(g["grant"].clone())?;
    let proof: StateProof = serde_json::from_value(g["proof"].clone())?;
    proof.verify(&proof.state_root)?;
    ensure!(
        grant.requester == ha.key.account() && grant.holder == hb.key.account(),
        "grant names other parties"
    );
    ensure!(grant.expires_at_ms > now_ms(), "grant already expired");
    println!(
        "    grant valid until {} ms, proven against state root {}",
        grant.expires_at_ms, proof.state_root
    );
    let served = record.clone();
    ensure!(
        Hash::digest(&served) == hash,
        "served content does not match the registered hash"
    );
    println!(
        "    H_A checked {} bytes against the registered hash: intact",
        served.len()
    );
    let delivered = AccessEntry {
        data: hash,
        grant: Some(grant_id),
        requester: ha.key.account(),
        decision: AccessDecision::Delivered,
        score_ppm: 15_000,
        at_ms: now_ms(),
    };

    step(
        6,
        "An unsubscribed research institute asks H_B for the same record: refused and recorded",
    );
    let (_, _, receipt) = c
        .execute(
            &institute.key,
            Call::RequestDataWithHash {
                hash,
                purpose: "marketing".into(),
                ttl_secs: 900,
            },
        )
        .await?;
    match receipt.rejection() {
        Some(r) => println!("    the contract refuses a grant: {r}"),
        None => bail!("an unsubscribed party obtained a grant"),
    }
    let refused = AccessEntry {
        data: hash,
        grant: None,
        requester: institute.key.account(),
        decision: AccessDecision::Refused(RefusalReason::NotSubscribed),
        score_ppm: 0,
        at_ms: now_ms(),
    };
    let (height, _, receipt) = c
        .execute(
            &hb.key,
            Call::RecordAccess {
                entries: vec![delivered, refused],
            },
        )
        .await?;
    let (first, count) = applied(&receipt.outcome)?
        .iter()
        .find_map(|e| match e {
            Event::Logged { first_index, count } => Some((*first_index, *count)),
            _ => None,
        })
        .context("no log entries in the receipt")?;
    println!(
        "    H_B recorded {count} accesses at height {height}, log leaves {first}..{}",
        first + u64::from(count) - 1
    );

    step(
        7,
        "Anyone can verify: inclusion of each access, and that the log only grew",
    );
    let size = c.get("/v1/status").await?["log_size"].as_u64().unwrap_or(0);
    for leaf in first..first + u64::from(count) {
        let p: InclusionProof = serde_json::from_value(c.get(&format!("/v1/log/{leaf}")).await?)?;
        p.verify()?;
        println!(
            "    leaf {leaf}: inclusion in log of {} verified (root {})",
            p.tree_size, p.root_hash
        );
    }
    let p: ConsistencyProof = serde_json::from_value(
        c.get(&format!("/v1/log/consistency?from={first}&to={size}"))
            .await?,
    )?;
    p.verify()?;
    println!("    log of {size} extends log of {first}: consistency verified");
    let cp = c.get("/v1/checkpoint").await?;
    println!("    signed checkpoint:");
    for line in cp["note"].as_str().unwrap_or("").lines() {
        println!("      {line}");
    }

    println!(
        "\ndone. The ledger stays in {}; inspect it with:",
        dir.display()
    );
    println!("  secnet audit log --data-dir {}", dir.display());
    println!(
        "  secnet audit proof --data-dir {} --leaf {first} --json",
        dir.display()
    );
    println!(
        "  secnet audit consistency --data-dir {} --from {first} --to {size} --json",
        dir.display()
    );
    println!("  secnet ledger check --data-dir {}", dir.display());
    Ok(())
}
