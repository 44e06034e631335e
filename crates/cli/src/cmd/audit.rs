//! `secnet audit`: inclusion and consistency proofs of the access log, signed checkpoints,
//! and their verification. Proof JSON carries byte strings as hex, in RFC 6962 terms.

use anyhow::{Context, bail};
use clap::Subcommand;
use secnet_contract::LogEntry;
use secnet_ledger::{Checkpoint, ConsistencyProof, InclusionProof, verifier_key};
use secnet_node::api::checkpoint_signer_name;
use secnet_node::datadir::DataDir;
use secnet_node::keyfile;
use secnet_types::{AccountId, Hash};
use std::io::Read as _;
use std::path::PathBuf;

/// Audit commands.
#[derive(Subcommand)]
pub enum AuditCmd {
    /// Print the inclusion proof of one access-log leaf.
    Proof {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The leaf index.
        #[arg(long)]
        leaf: u64,
        /// The tree size to prove against (default: the whole log).
        #[arg(long)]
        size: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the consistency proof between two sizes of the access log.
    Consistency {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// The older size.
        #[arg(long)]
        from: u64,
        /// The newer size.
        #[arg(long)]
        to: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify an inclusion or consistency proof (JSON from a file, or `-` for stdin).
    Verify {
        /// The proof file.
        #[arg(default_value = "-")]
        proof: String,
        /// Require this root (the proof's `root_hash` or `second_root`).
        #[arg(long)]
        root: Option<Hash>,
        /// Require the root to be the one in this signed checkpoint note.
        #[arg(long, requires = "signer_key")]
        checkpoint: Option<PathBuf>,
        /// The checkpoint signer's account (ed25519 public key).
        #[arg(long)]
        signer_key: Option<AccountId>,
    },
    /// Print the access log's current checkpoint, signed by this node's key.
    Checkpoint {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the access log's entries.
    Log {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: AuditCmd) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Proof {
            data_dir,
            leaf,
            size,
            json,
        } => {
            let ledger = super::open_existing_ledger(&data_dir)?;
            let proof = ledger.inclusion_proof(leaf, size)?;
            if json {
                return super::print_json(&proof);
            }
            let entry = LogEntry::from_bytes(&proof.leaf).context("decoding the leaf")?;
            println!(
                "leaf {} of {} (root {})",
                proof.leaf_index, proof.tree_size, proof.root_hash
            );
            println!("{}", serde_json::to_string_pretty(&entry)?);
            println!("audit path: {} hashes", proof.audit_path.len());
            proof.verify()?;
            println!("verified");
        }
        AuditCmd::Consistency {
            data_dir,
            from,
            to,
            json,
        } => {
            let ledger = super::open_existing_ledger(&data_dir)?;
            let proof = ledger.consistency_proof(from, to)?;
            if json {
                return super::print_json(&proof);
            }
            proof.verify()?;
            println!(
                "log of {to} leaves (root {}) extends log of {from} leaves (root {}): verified",
                proof.second_root, proof.first_root
            );
        }
        AuditCmd::Verify {
            proof,
            root,
            checkpoint,
            signer_key,
        } => verify(&proof, root, checkpoint, signer_key)?,
        AuditCmd::Checkpoint { data_dir, json } => {
            let ledger = super::open_existing_ledger(&data_dir)?;
            let key = keyfile::read_key(&DataDir::new(&data_dir).node_key_path())?;
            let name = checkpoint_signer_name(&key.account());
            let signed = ledger.checkpoint().sign(&name, &key);
            if json {
                return super::print_json(&serde_json::json!({
                    "checkpoint": signed.checkpoint,
                    "note": signed.note,
                    "signer_key": key.account(),
                    "verifier_key": verifier_key(&name, &key.account()),
                }));
            }
            print!("{}", signed.note);
        }
        AuditCmd::Log { data_dir, json } => {
            let ledger = super::open_existing_ledger(&data_dir)?;
            let mut entries = Vec::new();
            for index in 0..ledger.state().log().len() {
                let bytes = ledger
                    .log_leaf(index)?
                    .with_context(|| format!("leaf {index} missing"))?;
                entries.push(
                    serde_json::json!({ "index": index, "entry": LogEntry::from_bytes(&bytes)? }),
                );
            }
            if json {
                return super::print_json(&entries);
            }
            for e in entries {
                println!("{}", e);
            }
        }
    }
    Ok(())
}

fn verify(
    source: &str,
    root: Option<Hash>,
    checkpoint: Option<PathBuf>,
    signer_key: Option<AccountId>,
) -> anyhow::Result<()> {
    let mut text = String::new();
    if source == "-" {
        std::io::stdin()
            .take(16 * 1024 * 1024)
            .read_to_string(&mut text)?;
    } else {
        text = std::fs::read_to_string(source).with_context(|| format!("reading {source}"))?;
    }
    let value: serde_json::Value = serde_json::from_str(&text).context("the proof is not JSON")?;
    let (kind, size, proven_root) = if value.get("audit_path").is_some() {
        let p: InclusionProof = serde_json::from_value(value).context("not an inclusion proof")?;
        p.verify()?;
        ("inclusion", p.tree_size, p.root_hash)
    } else if value.get("first_size").is_some() {
        let p: ConsistencyProof =
            serde_json::from_value(value).context("not a consistency proof")?;
        p.verify()?;
        ("consistency", p.second_size, p.second_root)
    } else {
        bail!(
            "not a proof: expected an inclusion proof (audit_path) or a consistency proof (first_size)"
        );
    };
    if let Some(want) = root
        && want != proven_root
    {
        bail!("{kind} proof is for root {proven_root}, not the required {want}");
    }
    if let (Some(path), Some(key)) = (checkpoint, signer_key) {
        let note = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let cp = Checkpoint::verify_note(&note, &checkpoint_signer_name(&key), &key)?;
        if cp.tree_size != size || cp.root_hash != proven_root {
            bail!(
                "{kind} proof is for size {size} root {proven_root}, the signed checkpoint says size {} root {}",
                cp.tree_size,
                cp.root_hash
            );
        }
        println!("ok: {kind} proof verified against checkpoint signed by {key}");
        return Ok(());
    }
    println!("ok: {kind} proof verified (tree size {size}, root {proven_root})");
    Ok(())
}
