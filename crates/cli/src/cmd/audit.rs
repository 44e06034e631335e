//! `secnet audit`: inclusion and consistency proofs of the access log, checkpoints cosigned
//! by the validators (C2SP `tlog-cosignature`), and their verification. Proof JSON carries
//! byte strings as hex, in RFC 6962 terms.

use anyhow::{Context, bail};
use clap::Subcommand;
use secnet_certified::CommitteeVerifier;
use secnet_certified::checkpoint::{CosignedCheckpoint, cosigner_name, cosigner_verifier_key};
use secnet_contract::LogEntry;
use secnet_ledger::{ConsistencyProof, InclusionProof};
use secnet_node::datadir::{DataDir, now_ms, read_genesis};
use secnet_node::keyfile;
use secnet_types::Hash;
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
        /// Require the root to be the one in this checkpoint note, cosigned by a quorum of the
        /// validators of `--genesis`.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The genesis whose validators must have cosigned `--checkpoint`.
        #[arg(long, default_value = "secnet-devnet/genesis.json")]
        genesis: PathBuf,
    },
    /// Print this node's cosignature of the access log's head (a C2SP note with one
    /// `tlog-cosignature` line, under the node's key as a validator).
    Checkpoint {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch the access log's head that a quorum of validators cosigned, and verify it
    /// against the genesis validators.
    Cosigned {
        #[command(flatten)]
        remote: super::query::Remote,
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
            genesis,
        } => verify(&proof, root, checkpoint, &genesis)?,
        AuditCmd::Checkpoint { data_dir, json } => {
            let ledger = super::open_existing_ledger(&data_dir)?;
            let key = keyfile::read_key(&DataDir::new(&data_dir).node_key_path())?;
            let head = ledger.checkpoint();
            let chain_id = ledger.genesis().chain_id.clone();
            let cosigned = CosignedCheckpoint {
                cosignatures: vec![head.cosign(&key, now_ms() / 1_000)],
                checkpoint: head,
            };
            let note = cosigned.note(&chain_id);
            if json {
                let name = cosigner_name(&chain_id, &key.account());
                return super::print_json(&serde_json::json!({
                    "checkpoint": cosigned.checkpoint,
                    "note": note,
                    "cosigner": key.account(),
                    "verifier_key": cosigner_verifier_key(&name, &key.account()),
                }));
            }
            print!("{note}");
        }
        AuditCmd::Cosigned { remote, json } => {
            super::runtime()?.block_on(async move {
                let node = remote.connect()?;
                let cosigned = node.checkpoint().await?;
                if json {
                    return super::print_json(&serde_json::json!({
                        "checkpoint": cosigned.checkpoint,
                        "cosigners": cosigned.cosigners,
                        "cosigned_at": cosigned.cosigned_at,
                        "quorum": node.light().committee().quorum(),
                        "note": cosigned.note,
                        "verified": true,
                    }));
                }
                print!("{}", cosigned.note);
                eprintln!(
                    "verified: cosigned by {} of {} validators (a quorum is {})",
                    cosigned.cosigners.len(),
                    node.light().committee().len(),
                    node.light().committee().quorum()
                );
                Ok::<_, anyhow::Error>(())
            })?;
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
    genesis: &std::path::Path,
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
    if let Some(path) = checkpoint {
        let note = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let committee = CommitteeVerifier::from_genesis(&read_genesis(genesis)?)?;
        let (cp, cosigners) = committee
            .verify_checkpoint(&note)
            .context("verification failed")?;
        if cp.tree_size != size || cp.root_hash != proven_root {
            bail!(
                "verification failed: {kind} proof is for size {size} root {proven_root}, the cosigned checkpoint says size {} root {}",
                cp.tree_size,
                cp.root_hash
            );
        }
        println!(
            "ok: {kind} proof verified against a checkpoint cosigned by {} of {} validators",
            cosigners.len(),
            committee.len()
        );
        return Ok(());
    }
    println!("ok: {kind} proof verified (tree size {size}, root {proven_root})");
    Ok(())
}
