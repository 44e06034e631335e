//! `secnet demo`: the paper's medical workflow (Section IV) end to end on a single-node
//! network whose node is hospital H_B and its Private Data Center: Alice stores her record
//! at H_B (encrypted), permits treatment use, and registers it; hospital H_A subscribes and
//! pays (SC1: H_A → H_B, SC2: H_B → Alice), requests it, and fetches it from H_B's PDC —
//! token, signed fetch, Alice's policy, the detector's score — checked against the ledger by
//! the verifying client. A research institute is refused by the contract (not subscribed)
//! and, once it has paid, by Alice's policy. H_B's PDC records every delivery and refusal
//! itself; the client then proves them against the certified access-log head.
#![allow(
    clippy::indexing_slicing,
    reason = "indexing a serde_json::Value yields Null, never panics"
)]

use anyhow::{bail, ensure};
use clap::Args;
use secnet_client::{LogQuery, NodeApi, RemoteNode};
use secnet_contract::LogEntry;
use secnet_node::datadir::DataDir;
use secnet_node::dev::ProducerConfig;
use secnet_node::keyfile;
use secnet_types::{
    AccessDecision, Allocation, Call, DataKind, Event, Genesis, Hash, Keypair, Outcome,
    RegisterData,
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
/// The purpose Alice's policy permits.
const TREATMENT: &str = "treatment";
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

/// The events of an applied transaction; a refused one is an error.
pub(super) fn applied(outcome: &Outcome) -> anyhow::Result<&[Event]> {
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
    let institute = party(&dir, "research-institute")?;
    let funded = [
        Allocation {
            account: ha.key.account(),
            balance: 10_000,
        },
        Allocation {
            account: institute.key.account(),
            balance: 10_000,
        },
    ];
    let data = DataDir::new(&dir);
    let (genesis, node_key) = data.open_dev(&funded)?;
    // Hospital H_B is the node: its key holds the PDC's data and signs its records.
    let hb = Party {
        name: "hospital-b",
        key: keyfile::read_key(&data.node_key_path())?,
    };
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
    let (transport, _) = secnet_node::tls::dev_transport(&dir, args.listen, &Default::default())?;
    super::runtime()?.block_on(async move {
        let node = secnet_node::start_dev(&dir, &genesis, node_key, args.listen, transport, config)
            .await?;
        let result = story(&node.url(), &dir, &genesis, &alice, &ha, &hb, &institute).await;
        node.stop().await;
        result
    })
}

/// The parties' balances, verified against certified state.
async fn balances(node: &RemoteNode, parties: &[&Party]) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::new();
    for p in parties {
        out.push(node.account(&p.key.account()).await?.value.balance);
    }
    Ok(out)
}

/// Executes `call` as `party` and waits for its receipt.
async fn run_call(
    api: &NodeApi,
    genesis: &Genesis,
    party: &Party,
    call: Call,
) -> anyhow::Result<(u64, Hash, secnet_types::Receipt)> {
    Ok(api.execute(&party.key, &genesis.chain_id, call).await?)
}

async fn story(
    url: &str,
    dir: &Path,
    genesis: &Genesis,
    alice: &Party,
    ha: &Party,
    hb: &Party,
    institute: &Party,
) -> anyhow::Result<()> {
    let c = NodeApi::new(url)?;
    let verifying = RemoteNode::new(url, genesis)?;
    let status = c.status().await?;
    println!("SecNet medical data-sharing demo (paper Section IV)");
    println!(
        "node {url}, chain {}, height {}",
        status.chain_id, status.height
    );
    for p in [alice, ha, hb, institute] {
        println!("  {:<19} {}", p.name, p.key.account());
    }

    step(
        1,
        "Every party publishes the X25519 key that data keys are sealed to",
    );
    for p in [alice, ha, hb, institute] {
        run_call(
            &c,
            genesis,
            p,
            Call::SetEncryptionKey {
                key: p.key.encryption_key(),
            },
        )
        .await?;
    }
    println!("    4 encryption keys on the ledger");

    let run = c.status().await?.height;
    let record = alice_record(run);
    let object = format!("fhir/Condition/alice-t2d-{run}");
    let address = format!("pdc://hospital-b/alice/condition/{run}");
    step(
        2,
        "Alice stores her record MD_Alice at H_B's PDC (encrypted), permits treatment use, and registers it with H_B as holder",
    );
    let stored = c
        .put_object(
            &alice.key,
            &alice.key.account(),
            &object,
            "source=hospital-b",
            record.clone(),
            "application/fhir+json",
        )
        .await?;
    let hash = stored.hash;
    ensure!(
        hash == Hash::digest(&record),
        "the PDC stored other content"
    );
    println!("    stored {}", stored.udi);
    let policy = format!(
        "@id(\"hospital-a-treats\")\npermit (principal == SecNet::User::\"{}\", action == SecNet::Action::\"read\", resource in SecNet::Collection::\"fhir/Condition\") when {{ context.purpose == \"{TREATMENT}\" }};\n",
        ha.key.account()
    );
    c.set_policies(&alice.key, &policy).await?;
    println!("    Alice's policy: hospital-a may read her conditions for {TREATMENT}");
    let (height, _, receipt) = run_call(
        &c,
        genesis,
        alice,
        Call::RegisterData(RegisterData {
            hash,
            description: "type 2 diabetes (FHIR R4 Condition)".into(),
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
    let listing = verifying.listing_at(&address).await?;
    ensure!(
        listing.value.is_some_and(|l| l.hash == hash),
        "listing not found by address in certified state"
    );
    let before = balances(&verifying, &[ha, hb, alice]).await?;
    let (_, _, receipt) = run_call(&c, genesis, ha, Call::SubscribeData { hash }).await?;
    let events = applied(&receipt.outcome)?;
    let after = balances(&verifying, &[ha, hb, alice]).await?;
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
    let (_, grant_id, receipt) = run_call(
        &c,
        genesis,
        ha,
        Call::RequestDataWithAddress {
            address: address.clone(),
            purpose: TREATMENT.into(),
            ttl_secs: 900,
        },
    )
    .await?;
    applied(&receipt.outcome)?;
    println!("    grant {grant_id}");

    step(
        5,
        "H_A fetches from H_B's PDC: token, signed fetch, Alice's policy, the detector; checked against the ledger",
    );
    let delivery = verifying.fetch(&ha.key, &grant_id).await?;
    let plain = delivery.plaintext()?;
    ensure!(plain == record, "H_A received other content");
    println!(
        "    {} ({} bytes, {})",
        delivery.udi, delivery.size, delivery.media_type
    );
    println!(
        "    permitted by {:?}, detector score {} ppm",
        delivery.policies, delivery.score
    );
    println!(
        "    decrypted and checked against the hash registered on the ledger (grant and listing proven at certified height {})",
        delivery.height
    );

    step(
        6,
        "A research institute: refused by the contract unpaid, then by Alice's policy once it has paid",
    );
    let research = || Call::RequestDataWithHash {
        hash,
        purpose: "research".into(),
        ttl_secs: 900,
    };
    let (_, _, receipt) = run_call(&c, genesis, institute, research()).await?;
    match receipt.rejection() {
        Some(r) => println!("    the contract refuses a grant: {r}"),
        None => bail!("an unsubscribed party obtained a grant"),
    }
    let (_, _, receipt) = run_call(&c, genesis, institute, Call::SubscribeData { hash }).await?;
    applied(&receipt.outcome)?;
    let (_, research_grant, receipt) = run_call(&c, genesis, institute, research()).await?;
    applied(&receipt.outcome)?;
    match verifying.fetch(&institute.key, &research_grant).await {
        Ok(_) => bail!("Alice's policy did not stop research use"),
        Err(e) => println!("    paid and granted, but H_B's PDC refuses: {e}"),
    }

    // H_B's PDC records each decision on the ledger itself; wait for both.
    let query = LogQuery {
        data: Some(hash),
        limit: Some(100),
        ..LogQuery::default()
    };
    let is_access = |e: &secnet_api::audit::LogItem| matches!(e.entry, LogEntry::Access { .. });
    let entries = loop {
        let entries = c.log(&query).await?.entries;
        if entries.iter().filter(|e| is_access(e)).count() >= 2 {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for e in &entries {
        if let LogEntry::Access { entry, .. } = &e.entry {
            let decision = match entry.decision {
                AccessDecision::Delivered => "delivered".to_string(),
                AccessDecision::Refused(reason) => {
                    format!("refused ({})", secnet_pdc::record::reason_code(reason))
                }
            };
            println!(
                "    H_B recorded leaf {}: {} {decision} (score {} ppm)",
                e.index, entry.requester, entry.score_ppm
            );
        }
    }
    // The log as it was before the first recorded access: what the log must extend.
    let first = entries
        .iter()
        .filter(|e| is_access(e))
        .map(|e| e.index)
        .min()
        .unwrap_or(1)
        .max(1);

    step(
        7,
        "Anyone can verify: inclusion of each access, and that the log only grew",
    );
    // The log head from certified state: no node's word.
    let head = verifying.log_head().await?;
    let Some(certified) = head.value else {
        bail!("the certified state has no access log");
    };
    let size = certified.size;
    println!(
        "    log head certified at height {} (block {}): {size} leaves, root {}",
        head.height, head.certified_block, certified.root
    );
    // Each leaf shown above is proven in the certified log, and is what was shown.
    for e in &entries {
        let proven = super::data::proven_in_log(&c, e.index, size, certified.root).await?;
        ensure!(
            proven == e.entry,
            "verification failed: the node showed leaf {} other than the certified log holds it",
            e.index
        );
        println!(
            "    leaf {}: inclusion in the certified log verified, as shown",
            e.index
        );
    }
    let p = c.log_consistency(first, size).await?;
    p.verify()?;
    ensure!(
        p.second_root == certified.root,
        "verification failed: consistency proven to another log"
    );
    println!("    log of {size} extends log of {first}: consistency verified");
    let cosigned = verifying.checkpoint().await?;
    // The cosigned head and the certified one are views of one log: the smaller is a prefix
    // of the larger.
    let cosigned_size = cosigned.checkpoint.tree_size;
    let cosigned_root = cosigned.checkpoint.root_hash;
    if cosigned_size == size {
        ensure!(
            cosigned_root == certified.root,
            "verification failed: the cosigned checkpoint and the certified log head disagree at {size} leaves"
        );
    } else if cosigned_size > 0 {
        let ((small, small_root), (large, large_root)) = if cosigned_size < size {
            ((cosigned_size, cosigned_root), (size, certified.root))
        } else {
            ((size, certified.root), (cosigned_size, cosigned_root))
        };
        let p = c.log_consistency(small, large).await?;
        p.verify()?;
        ensure!(
            p.first_root == small_root && p.second_root == large_root,
            "verification failed: the cosigned checkpoint is not consistent with the certified log head"
        );
    }
    println!(
        "    checkpoint cosigned by {} of the validators, verified (C2SP tlog-cosignature):",
        cosigned.cosigners.len()
    );
    for line in cosigned.note.lines() {
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
