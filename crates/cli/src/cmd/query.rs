//! `secnet status | block | account`: read a node's state over HTTP.
#![allow(
    clippy::indexing_slicing,
    reason = "indexing a serde_json::Value yields Null, never panics"
)]

use super::client::Client;
use clap::Args;
use secnet_contract::StateProof;
use secnet_types::AccountId;

/// Arguments of `secnet status`.
#[derive(Args)]
pub struct StatusArgs {
    /// The node's API.
    #[arg(long, default_value = "http://127.0.0.1:7878")]
    pub node: String,
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
    /// The node's API.
    #[arg(long, default_value = "http://127.0.0.1:7878")]
    pub node: String,
    /// Print JSON (the default; kept for symmetry with the other commands).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `secnet account`.
#[derive(Args)]
pub struct AccountArgs {
    /// The account id.
    pub id: AccountId,
    /// The node's API.
    #[arg(long, default_value = "http://127.0.0.1:7878")]
    pub node: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        let s = Client::new(&args.node)?.get("/v1/status").await?;
        if args.json {
            return super::print_json(&s);
        }
        println!("chain      {}", s["chain_id"].as_str().unwrap_or("?"));
        println!("height     {}", s["height"]);
        println!("state root {}", s["state_root"].as_str().unwrap_or("?"));
        println!("log size   {}", s["log_size"]);
        println!("mempool    {}", s["mempool"]);
        if let Some(validators) = s["validators"].as_array() {
            println!("validators");
            for v in validators {
                let key = v["key"].as_str().unwrap_or("?");
                let height = v["height"]
                    .as_u64()
                    .map_or_else(|| "not heard from".to_string(), |h| format!("height {h}"));
                let me = if v["self"].as_bool() == Some(true) {
                    " (this node)"
                } else {
                    ""
                };
                println!("  {key}  {height}{me}");
            }
        }
        Ok(())
    })
}

pub fn block(args: BlockArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        let b = Client::new(&args.node)?
            .get(&format!("/v1/blocks/{}", args.height))
            .await?;
        super::print_json(&b)
    })
}

pub fn account(args: AccountArgs) -> anyhow::Result<()> {
    super::runtime()?.block_on(async move {
        let client = Client::new(&args.node)?;
        let a = client.get(&format!("/v1/accounts/{}", args.id)).await?;
        // Check the proof before showing anything.
        let proof: StateProof = serde_json::from_value(a["proof"].clone())?;
        proof.verify(&proof.state_root)?;
        if args.json {
            return super::print_json(&a);
        }
        println!("account  {}", args.id);
        println!("balance  {}", a["balance"]);
        println!("nonce    {}", a["nonce"]);
        println!(
            "proof    verified against state root {} at height {}",
            proof.state_root, proof.height
        );
        Ok(())
    })
}
