//! `secnet rules`: package trained detectors as signed security rules, sell them through
//! the data contract, buy them, and install them where a node's access path uses them.
#![allow(
    clippy::indexing_slicing,
    reason = "indexing a serde_json::Value yields Null, never panics"
)]

use super::data::{Conn, execute_call, fetch_to, register};
use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use secnet_ai::model::Detector;
use secnet_client::NodeApi;
use secnet_node::keyfile;
use secnet_rules::{SecurityRule, install};
use secnet_types::{AccountId, Call, DataKind, Hash, RegisterData};
use serde_json::{Value, json};

/// Most registrations `rules list` checks against certified state.
const MAX_LISTED: usize = 10_000;
use std::path::{Path, PathBuf};

/// The collection rules are stored under in their publisher's Private Data Center.
pub const RULES_COLLECTION: &str = "rules";
/// The id of the policy that lets paying subscribers read a publisher's rules.
pub const SELL_POLICY_ID: &str = "sell-rules";
/// The purpose a rule is requested for.
pub const PURPOSE: &str = "security";

/// Security rule commands.
#[derive(Subcommand)]
pub enum RulesCmd {
    /// Package a trained detector as a security rule signed by the publisher's key.
    Package {
        /// The publisher's key file.
        #[arg(long)]
        key: PathBuf,
        /// The detector (from `secnet ai train`).
        #[arg(long)]
        detector: PathBuf,
        /// The rule's name, e.g. `scrape-mlp`.
        #[arg(long)]
        name: String,
        /// Its version; a newer version replaces older ones where installed.
        #[arg(long, default_value_t = 1)]
        version: u32,
        /// The attack category it protects against, e.g. `dos` or `scrape`.
        #[arg(long)]
        category: String,
        /// Where to write the rule.
        #[arg(long)]
        out: PathBuf,
    },
    /// Store a rule at the node and register it on the ledger as a priced security rule;
    /// adds a policy letting paying subscribers read the publisher's rules.
    Publish {
        /// The publisher's key file (the one that signed the rule).
        #[arg(long)]
        key: PathBuf,
        /// The rule file.
        #[arg(long)]
        rule: PathBuf,
        /// The price of a subscription.
        #[arg(long)]
        price: u64,
        /// The holder's share of each payment, in basis points.
        #[arg(long, default_value_t = 2_000)]
        holder_share_bps: u16,
        #[command(flatten)]
        conn: Conn,
    },
    /// Security rules registered on the ledger, with their price and category.
    List {
        /// Only this category.
        #[arg(long)]
        category: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Subscribe to a registered rule, paying its price.
    Subscribe {
        /// The buyer's key file.
        #[arg(long)]
        key: PathBuf,
        /// The rule's content hash.
        #[arg(long)]
        hash: Hash,
        #[command(flatten)]
        conn: Conn,
    },
    /// Get access to a subscribed rule from its holder, check it against the ledger and its
    /// publisher's signature, write it and optionally install it.
    Fetch {
        /// The buyer's key file.
        #[arg(long)]
        key: PathBuf,
        /// The rule's content hash.
        #[arg(long)]
        hash: Hash,
        /// Where to write the rule.
        #[arg(long)]
        out: PathBuf,
        /// Also install it into this rules directory (a node's `<data dir>/rules`).
        #[arg(long)]
        install: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Verify a rule and install it into a rules directory; the node using that directory
    /// picks it up within seconds.
    Install {
        /// The rule file.
        #[arg(long)]
        rule: PathBuf,
        /// The rules directory (a node's `<data dir>/rules`).
        #[arg(long)]
        dir: PathBuf,
        /// The content hash it must have (as registered on the ledger).
        #[arg(long)]
        hash: Option<Hash>,
    },
    /// The rules a node uses to score access requests.
    Show {
        #[command(flatten)]
        conn: Conn,
    },
}

fn read_rule(path: &Path) -> anyhow::Result<SecurityRule> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    SecurityRule::from_bytes(&bytes)
        .with_context(|| format!("{} is not a usable rule", path.display()))
}

fn describe(rule: &SecurityRule) -> Value {
    let m = &rule.meta;
    json!({
        "hash": rule.hash(),
        "name": m.name,
        "version": m.version,
        "category": m.category,
        "publisher": m.publisher,
        "dataset": m.dataset,
        "family": m.family,
        "augment": m.augment,
        "data_sha256": m.data_sha256,
        "validation": {
            "f1": m.validation.f1,
            "auroc": m.validation.auroc,
            "dr_at_1pct_fpr": m.validation.dr_at_1pct_fpr,
            "per_category": m.validation.per_category,
        },
    })
}

pub fn run(cmd: RulesCmd) -> anyhow::Result<()> {
    match cmd {
        RulesCmd::Package {
            key,
            detector,
            name,
            version,
            category,
            out,
        } => {
            let key = keyfile::read_key(&key)?;
            let d = Detector::load(&detector)
                .with_context(|| format!("loading {}", detector.display()))?;
            let rule = SecurityRule::create(&key, &name, version, &category, &d)?;
            std::fs::write(&out, rule.bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            super::print_json(&describe(&rule))
        }
        RulesCmd::Install { rule, dir, hash } => {
            let bytes =
                std::fs::read(&rule).with_context(|| format!("reading {}", rule.display()))?;
            let (_, installed) = install(&dir, &bytes, hash)?;
            super::print_json(&json!({ "installed": describe(&installed), "dir": dir }))
        }
        other => super::runtime()?.block_on(run_remote(other)),
    }
}

async fn run_remote(cmd: RulesCmd) -> anyhow::Result<()> {
    match cmd {
        RulesCmd::Publish {
            key,
            rule,
            price,
            holder_share_bps,
            conn,
        } => publish(&conn, &key, &rule, price, holder_share_bps).await,
        RulesCmd::List { category, conn } => {
            // The node says which listings exist; each one shown is proven on certified
            // state (a node can leave some out, but not invent or alter one).
            let all = conn.api()?.listings(None).await?;
            let mut hashes: Vec<Hash> = all.iter().map(|l| l.hash).collect();
            hashes.sort();
            hashes.dedup();
            if hashes.len() > MAX_LISTED {
                bail!(
                    "the node lists {} registrations; at most {MAX_LISTED} are checked",
                    hashes.len()
                );
            }
            let proven = conn.remote()?.listings(&hashes).await?;
            let mut rules = Vec::new();
            let mut not_registered = Vec::new();
            for (hash, listing) in hashes.iter().zip(proven.listings) {
                let Some(listing) = listing else {
                    // Withdrawn since, or never registered: never shown as a listing.
                    not_registered.push(*hash);
                    continue;
                };
                let wanted = match &listing.kind {
                    DataKind::SecurityRule { category: c } => {
                        category.as_ref().is_none_or(|want| want == c)
                    }
                    _ => false,
                };
                if wanted {
                    rules.push(listing);
                }
            }
            super::print_json(&json!({
                "rules": rules,
                "verified": true,
                "certified_height": proven.height,
                "listed_but_not_registered": not_registered,
            }))
        }
        RulesCmd::Subscribe { key, hash, conn } => {
            let key = keyfile::read_key(&key)?;
            super::print_json(&execute_call(&conn, &key, Call::SubscribeData { hash }).await?)
        }
        RulesCmd::Fetch {
            key,
            hash,
            out,
            install: into,
            conn,
        } => fetch(&conn, &key, hash, &out, into.as_deref()).await,
        RulesCmd::Show { conn } => super::print_json(&conn.api()?.pdc_rules().await?),
        RulesCmd::Package { .. } | RulesCmd::Install { .. } => Ok(()),
    }
}

async fn publish(
    conn: &Conn,
    key_path: &Path,
    rule_path: &Path,
    price: u64,
    holder_share_bps: u16,
) -> anyhow::Result<()> {
    let key = keyfile::read_key(key_path)?;
    let rule = read_rule(rule_path)?;
    if rule.meta.publisher != key.account() {
        bail!(
            "the rule was signed by {}, not by this key's account {}: only its publisher registers it",
            rule.meta.publisher,
            key.account()
        );
    }
    let api = conn.api()?;
    let object = format!(
        "{RULES_COLLECTION}/{}/{}-v{}",
        rule.meta.category, rule.meta.name, rule.meta.version
    );
    let stored = api
        .put_object(
            &key,
            &key.account(),
            &object,
            &format!(
                "media_type={}",
                secnet_rules::artifact::MEDIA_TYPE.replace('+', "%2B")
            ),
            rule.bytes().to_vec(),
            secnet_rules::artifact::MEDIA_TYPE,
        )
        .await?;
    let stored_hash = stored.hash;
    if stored_hash != rule.hash() {
        bail!(
            "the node stored the rule under hash {stored_hash}, not its content hash {}",
            rule.hash()
        );
    }
    ensure_sell_policy(&api, &key).await?;
    register(
        conn,
        key_path,
        None,
        Some(rule.hash()),
        Some(stored.udi.to_string()),
        None,
        RegisterData {
            hash: Hash([0; 32]),
            description: format!(
                "security rule {} v{} against {} ({} on {}, validation F1 {:.4}, detection at 1% FPR {:.4})",
                rule.meta.name,
                rule.meta.version,
                rule.meta.category,
                rule.meta.family,
                rule.meta.dataset,
                rule.meta.validation.f1,
                rule.meta.validation.dr_at_1pct_fpr
            ),
            address: String::new(),
            price,
            kind: DataKind::SecurityRule {
                category: rule.meta.category.clone(),
            },
            holder: AccountId([0; 32]),
            holder_share_bps,
        },
    )
    .await
}

/// Adds to the publisher's policies, unless already there, one that lets anyone holding a
/// ledger grant (that is, a paying subscriber) read the publisher's rules.
async fn ensure_sell_policy(api: &NodeApi, key: &secnet_types::Keypair) -> anyhow::Result<()> {
    let text = api.policies(key).await?.text;
    if text.contains(&format!("@id(\"{SELL_POLICY_ID}\")")) {
        return Ok(());
    }
    let policy = format!(
        "{text}\n@id(\"{SELL_POLICY_ID}\")\npermit (principal, action == SecNet::Action::\"read\", resource in SecNet::Collection::\"{RULES_COLLECTION}\")\nwhen {{ context.grant }};\n"
    );
    api.set_policies(key, &policy).await?;
    Ok(())
}

async fn fetch(
    conn: &Conn,
    key_path: &Path,
    hash: Hash,
    out: &Path,
    into: Option<&Path>,
) -> anyhow::Result<()> {
    let key = keyfile::read_key(key_path)?;
    // The listing from certified state: who registered the rule decides whose signature
    // it must carry.
    let listing = conn
        .remote()?
        .listing(&hash)
        .await?
        .value
        .ok_or_else(|| anyhow!("{hash} is not registered"))?;
    if !matches!(listing.kind, DataKind::SecurityRule { .. }) {
        bail!("{hash} is registered, but not as a security rule");
    }
    let owner = listing.owner;
    let granted = execute_call(
        conn,
        &key,
        Call::RequestDataWithHash {
            hash,
            purpose: PURPOSE.into(),
            ttl_secs: 600,
        },
    )
    .await?;
    let grant = granted
        .grant
        .ok_or_else(|| anyhow!("the ledger issued no grant (transaction {})", granted.tx))?;
    let fetched = fetch_to(conn, key_path, &grant, out)
        .await?
        .ok_or_else(|| anyhow!("nothing was written"))?;
    let bytes = std::fs::read(out)?;
    let rule = match SecurityRule::from_bytes(&bytes) {
        Ok(r) if r.meta.publisher == owner => r,
        Ok(r) => {
            std::fs::remove_file(out)?;
            bail!(
                "verification failed: the rule is signed by {}, but {owner} registered it: refused and deleted",
                r.meta.publisher
            );
        }
        Err(e) => {
            std::fs::remove_file(out)?;
            bail!("what was fetched is not a usable rule ({e}): deleted");
        }
    };
    // The content hashes to the certified listing's hash and the rule carries its
    // registrant's signature; the holder's detector score is only its word, kept apart.
    let mut summary = json!({
        "rule": describe(&rule),
        "out": out,
        "grant": grant,
        "verified": true,
        "certified_height": fetched.certified_height,
        "reported_by_holder": { "score": fetched.reported_by_holder.score },
    });
    if let Some(dir) = into {
        install(dir, &bytes, Some(hash))?;
        summary["installed"] = json!(dir);
    }
    super::print_json(&summary)
}
