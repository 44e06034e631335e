//! `secnet tx`: sign and submit transactions.

use super::client::Client;
use anyhow::bail;
use clap::Subcommand;
use secnet_node::keyfile;
use secnet_types::{AccountId, Call, Transaction};
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
        #[arg(long, default_value = "http://127.0.0.1:7878")]
        node: String,
        /// Wait for the receipt.
        #[arg(long)]
        wait: bool,
    },
}

pub fn run(cmd: TxCmd) -> anyhow::Result<()> {
    let TxCmd::Transfer {
        key,
        to,
        amount,
        node,
        wait,
    } = cmd;
    let key = keyfile::read_key(&key)?;
    super::runtime()?.block_on(async move {
        let client = Client::new(&node)?;
        let chain_id = client.chain_id().await?;
        let (_, nonce) = client.account(&key.account()).await?;
        let tx = Transaction {
            chain_id,
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
        let (height, receipt) = client.wait(&hash, Duration::from_secs(60)).await?;
        super::print_json(
            &serde_json::json!({ "hash": hash, "height": height, "receipt": receipt }),
        )?;
        if let Some(rejection) = receipt.rejection() {
            bail!("transaction refused: {rejection}");
        }
        Ok(())
    })
}
