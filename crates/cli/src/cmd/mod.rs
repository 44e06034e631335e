//! One module per command.

pub mod ai;
pub mod attack;
pub mod audit;
pub mod bench;
pub mod bench_ai;
pub mod bench_ledger;
pub mod bench_pdc;
pub mod crash;
pub mod data;
pub mod demo;
pub mod dev;
pub mod keys;
pub mod ledger;
pub mod load;
pub mod query;
pub mod rules;
pub mod samples;
pub mod sim;
pub mod staff;
pub mod stop;
pub mod testnet;
pub mod tx;

use anyhow::{Context, bail};
use secnet_ledger::Ledger;
use secnet_node::datadir::DataDir;
use std::path::Path;

/// Opens the ledger of an existing data directory (never creates one).
pub fn open_existing_ledger(dir: &Path) -> anyhow::Result<Ledger> {
    let data = DataDir::new(dir);
    if !data.genesis_path().exists() {
        bail!(
            "{} holds no SecNet data ({} is missing)",
            dir.display(),
            data.genesis_path().display()
        );
    }
    let genesis = data.read_genesis()?;
    Ledger::open(dir, &genesis).with_context(|| {
        format!(
            "opening the ledger in {} (if a node is running on it, stop it or query it over HTTP)",
            dir.display()
        )
    })
}

/// `bytes` in MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A multi-threaded tokio runtime for commands that serve or call HTTP.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
