//! `secnet status | block | account`: read a node's state over HTTP, and believe only what
//! verifies against state certified by the genesis validators.

use clap::Args;
use secnet_client::{ClientError, RemoteNode, VerifyError};
use secnet_node::datadir::read_genesis;
use secnet_types::{AccountId, Block, Genesis};
use serde_json::json;
use std::path::PathBuf;

/// Where a verifying command asks, and what it trusts.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// The node's API.
    #[arg(long, default_value = "https://127.0.0.1:7878")]
    pub node: String,
    /// The network's genesis: answers are checked against its validators. Defaults to the
    /// default devnet's (`secnet-devnet/genesis.json`); a dev node's is
    /// `<data-dir>/genesis.json`.
    #[arg(long, default_value = "secnet-devnet/genesis.json")]
    pub genesis: PathBuf,
    /// Refuse current state certified longer ago than this many seconds by this machine's
    /// clock (`status`, `account`, `audit cosigned`: the cosigning quorum's time; answers
    /// about a given height are not current state and ignore it).
    #[arg(long)]
    pub max_age: Option<u64>,
}

impl Remote {
    /// The genesis file, read and validated.
    pub fn read_genesis(&self) -> anyhow::Result<Genesis> {
        if !self.genesis.exists() {
            anyhow::bail!(
                "no genesis to verify answers against at {}: pass --genesis FILE (a devnet's is \
                 <dir>/genesis.json, a dev node's <data-dir>/genesis.json)",
                self.genesis.display()
            );
        }
        Ok(read_genesis(&self.genesis)?)
    }

    /// A verifying client of the node.
    pub fn connect(&self) -> anyhow::Result<RemoteNode> {
        let node = RemoteNode::new(&self.node, &self.read_genesis()?)?;
        Ok(match self.max_age {
            Some(secs) => node.with_max_age(std::time::Duration::from_secs(secs)),
            None => node,
        })
    }
}

/// Arguments of `secnet status`.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub remote: Remote,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `secnet block`.
#[derive(Args)]
pub struct BlockArgs {
    /// The height.
    #[arg(long)]
    pub height: u64,
    #[command(flatten)]
    pub remote: Remote,
    /// Print JSON (the default; kept for symmetry with the other commands).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `secnet account`.
#[derive(Args)]
pub struct AccountArgs {
    /// The account id.
    pub id: AccountId,
    #[command(flatten)]
    pub remote: Remote,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        let genesis = args.remote.read_genesis()?;
        let node = args.remote.connect()?;
        let head = node.log_head().await?;
        let (log_size, log_root) = head.value.map_or((0, None), |h| (h.size, Some(h.root)));
        let out = json!({
            "chain_id": genesis.chain_id,
            "genesis_hash": genesis.hash(),
            "height": head.height,
            "state_root": head.state_root,
            "certified_block": head.certified_block,
            "certified_at_ms": head.certified_at_ms,
            "log_size": log_size,
            "log_root": log_root,
            "validators": node.light().committee().len(),
            "quorum": node.light().committee().quorum(),
            "verified": true,
        });
        if args.json {
            return super::print_json(&out);
        }
        println!("chain           {}", genesis.chain_id);
        println!(
            "height          {} (certified by block {})",
            head.height, head.certified_block
        );
        println!("state root      {}", head.state_root);
        println!("log size        {log_size}");
        println!(
            "validators      {} (a certificate needs {})",
            node.light().committee().len(),
            node.light().committee().quorum()
        );
        println!("verified        yes: certificate checked against the genesis validators");
        Ok(())
    })
}

fn block_failure(height: u64, reason: impl std::fmt::Display) -> anyhow::Error {
    ClientError::Verification(VerifyError::Undecodable {
        key: format!("block {height}"),
        reason: reason.to_string(),
    })
    .into()
}

pub fn block(args: BlockArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        let node = args.remote.connect()?;
        let node = &node;
        let fetch = |height: u64| async move {
            let answer = node.api().block(height).await?;
            let block =
                Block::decode_bytes(&answer.bytes.0).map_err(|e| block_failure(height, e))?;
            block.check_body().map_err(|e| block_failure(height, e))?;
            if block.header.height != height {
                return Err(anyhow::Error::new(ClientError::Verification(
                    VerifyError::OtherHeight {
                        asked: height,
                        got: block.header.height,
                    },
                )));
            }
            anyhow::Ok(block)
        };
        let block = fetch(args.height).await?;
        // The block's header must be the one a certified header links back to.
        let roots = node.committed_roots(args.height).await?;
        if roots.header.as_ref() != Some(&block.header) {
            return Err(ClientError::Verification(VerifyError::BrokenChain {
                height: args.height,
            })
            .into());
        }
        let (certified_by, state_root) = (roots.certified_block, roots.state_root);
        super::print_json(&json!({
            "height": block.header.height,
            "hash": block.hash(),
            "header": block.header,
            "state_root": state_root,
            "transactions": block.txs.iter().map(|t| json!({
                "hash": t.hash(), "tx": t.tx(), "signature": t.signature(),
            })).collect::<Vec<_>>(),
            "receipts_root": roots.receipts_root,
            "certified_block": certified_by,
            "certified_at_ms": roots.certified_at_ms,
            "verified": true,
        }))
    })
}

/// Arguments of `secnet health`.
#[derive(Args)]
pub struct HealthArgs {
    /// The node's API.
    #[arg(long, default_value = "https://127.0.0.1:7878")]
    pub node: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The node's own report of itself — its tip, mempool and what it heard from its peers.
/// Operational information, not verified: `secnet status` is the verified view.
pub fn health(args: HealthArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        let s = secnet_client::NodeApi::new(&args.node)?.status().await?;
        if args.json {
            return super::print_json(&s);
        }
        println!("(the node's own report, not verified; `secnet status` verifies)");
        println!("chain_id    {}", s.chain_id);
        println!("height      {}", s.height);
        println!("state_root  {}", s.state_root);
        println!("log_size    {}", s.log_size);
        println!("mempool     {}", s.mempool);
        println!("validators");
        for v in &s.validators {
            let height = v.height.map_or("unknown".to_string(), |h| h.to_string());
            println!("  {}  height {height}", v.key);
        }
        Ok(())
    })
}

pub fn account(args: AccountArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        let node = args.remote.connect()?;
        let a = node.account(&args.id).await?;
        let out = json!({
            "account": args.id,
            "balance": a.value.balance,
            "nonce": a.value.nonce,
            "encryption_key": a.value.encryption_key,
            "height": a.height,
            "state_root": a.state_root,
            "certified_block": a.certified_block,
            "certified_at_ms": a.certified_at_ms,
            "verified": true,
        });
        if args.json {
            return super::print_json(&out);
        }
        println!("account   {}", args.id);
        println!("balance   {}", a.value.balance);
        println!("nonce     {}", a.value.nonce);
        println!(
            "verified  against the state root of height {} certified by block {}",
            a.height, a.certified_block
        );
        Ok(())
    })
}
