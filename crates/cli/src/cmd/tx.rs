//! `secnet tx`: sign and submit transactions, and show a committed one's verified receipt.

use super::query::Remote;
use anyhow::bail;
use clap::Subcommand;
use secnet_client::NodeApi;
use secnet_node::keyfile;
use secnet_types::{AccountId, Call, Hash, Transaction};
use std::path::PathBuf;
use std::time::Duration;

/// Transaction commands.
#[derive(Subcommand)]
pub enum TxCmd {
    /// Move value to another account.
    Transfer {
        /// The sender's key file.
        #[arg(long)]
        key: PathBuf,
        /// The recipient account (64 hex characters).
        #[arg(long)]
        to: AccountId,
        /// The amount.
        #[arg(long)]
        amount: u64,
        /// The node's API.
        #[arg(long, default_value = "https://127.0.0.1:7878")]
        node: String,
        /// Wait for the receipt.
        #[arg(long)]
        wait: bool,
        /// With `--wait`, the receipt is verified against this network's genesis (a dev
        /// node's is `<data-dir>/genesis.json`).
        #[arg(long, default_value = DEVNET_GENESIS)]
        genesis: PathBuf,
    },
    /// A committed transaction's receipt, verified against a certified receipts root.
    Show {
        /// The transaction hash.
        hash: Hash,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Where the default devnet keeps its genesis.
const DEVNET_GENESIS: &str = "secnet-devnet/genesis.json";

pub fn run(cmd: TxCmd) -> anyhow::Result<()> {
    match cmd {
        TxCmd::Show { hash, remote } => super::runtime()?.block_on(async move {
            let node = remote.connect()?;
            let verified = node.transaction(&hash).await?;
            print_receipt(&hash, &verified)
        }),
        TxCmd::Transfer {
            key,
            to,
            amount,
            node,
            wait,
            genesis,
        } => {
            let key = keyfile::read_key(&key)?;
            let genesis = Remote {
                node: node.clone(),
                genesis,
                max_age: None,
            }
            .read_genesis()?;
            super::runtime()?.block_on(async move {
                let client = NodeApi::new(&node)?;
                let nonce = client.account(&key.account()).await?.nonce;
                let tx = Transaction {
                    chain_id: genesis.chain_id.clone(),
                    sender: key.account(),
                    nonce,
                    call: Call::Transfer { to, amount },
                }
                .sign(&key);
                let hash = client.submit(&tx).await?;
                if !wait {
                    super::print_json(&serde_json::json!({ "hash": hash, "status": "pending" }))?;
                    return Ok(());
                }
                client.wait(&hash, Duration::from_secs(60)).await?;
                let verified = secnet_client::RemoteNode::new(&node, &genesis)?
                    .transaction(&hash)
                    .await?;
                print_receipt(&hash, &verified)
            })
        }
    }
}

fn print_receipt(
    hash: &Hash,
    verified: &secnet_client::Verified<secnet_client::VerifiedReceipt>,
) -> anyhow::Result<()> {
    let receipt = &verified.value.receipt;
    super::print_json(&serde_json::json!({
        "hash": hash,
        "height": verified.value.height,
        "position": verified.value.position,
        "receipt": receipt,
        "certified_block": verified.certified_block,
        "certified_at_ms": verified.certified_at_ms,
        "verified": true,
    }))?;
    if let Some(rejection) = receipt.rejection() {
        bail!("transaction refused: {rejection}");
    }
    Ok(())
}
