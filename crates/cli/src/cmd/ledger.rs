//! `secnet ledger check`: replay every stored block and compare state roots.

use clap::Subcommand;
use std::path::PathBuf;

/// Ledger commands.
#[derive(Subcommand)]
pub enum LedgerCmd {
    /// Reopen the ledger (which checks the stored state against its root), then replay
    /// every block from genesis and compare each state root, receipt and access-log leaf
    /// and hash with what is stored.
    Check {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: LedgerCmd) -> anyhow::Result<()> {
    let LedgerCmd::Check { data_dir, json } = cmd;
    let ledger = super::open_existing_ledger(&data_dir)?;
    let report = ledger.replay_check()?;
    if json {
        return super::print_json(&report);
    }
    println!(
        "ok: {} blocks replayed from genesis; state root {} matches",
        report.blocks, report.replayed_root
    );
    Ok(())
}
