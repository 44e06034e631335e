//! `secnet keys`: create a key file (mode 0600) and show its account.

use clap::Subcommand;
use secnet_node::keyfile;
use secnet_types::Keypair;
use std::path::PathBuf;

/// Key commands.
#[derive(Subcommand)]
pub enum KeysCmd {
    /// Generate a new account key and write it, readable only by you.
    New {
        /// Where to write the key file.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Publish the key's X25519 encryption key on the ledger, so data can be sealed to it.
    Publish {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
        /// The node's API.
        #[arg(long, default_value = "http://127.0.0.1:7878")]
        node: String,
    },
    /// Print the account id (and encryption key) of a key file.
    Show {
        /// The key file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::New { out, force } => {
            let key = Keypair::generate();
            keyfile::write_key(&out, &key, force)?;
            println!("{}", key.account());
            eprintln!("wrote {} (mode 0600)", out.display());
        }
        KeysCmd::Publish { key, node } => {
            let key = keyfile::read_key(&key)?;
            super::runtime()?.block_on(async move {
                let call = secnet_types::Call::SetEncryptionKey {
                    key: key.encryption_key(),
                };
                let api = secnet_client::NodeApi::new(&node)?;
                let chain_id = api.status().await?.chain_id;
                let (height, hash, receipt) = api.execute(&key, &chain_id, call).await?;
                super::print_json(
                    &serde_json::json!({ "tx": hash, "height": height, "receipt": receipt }),
                )?;
                match receipt.rejection() {
                    Some(r) => anyhow::bail!("transaction refused: {r}"),
                    None => Ok(()),
                }
            })?;
        }
        KeysCmd::Show { file, json } => {
            let key = keyfile::read_key(&file)?;
            if json {
                super::print_json(&serde_json::json!({
                    "account": key.account(),
                    "encryption_key": key.encryption_key(),
                }))?;
            } else {
                println!("{}", key.account());
            }
        }
    }
    Ok(())
}
