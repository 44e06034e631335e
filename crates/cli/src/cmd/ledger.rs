//! `secnet ledger check`: replay every stored block and compare state roots; `secnet
//! ledger usage`: where the ledger file's bytes are.

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
    /// Where the ledger file's bytes are: each table, each index of the sorted runs, and
    /// the pages free for reuse. The node must be stopped.
    Usage {
        /// The data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: LedgerCmd) -> anyhow::Result<()> {
    match cmd {
        LedgerCmd::Check { data_dir, json } => check(&data_dir, json),
        LedgerCmd::Usage { data_dir, json } => usage(&data_dir, json),
    }
}

fn check(data_dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let ledger = super::open_existing_ledger(data_dir)?;
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

fn usage(data_dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let path = data_dir.join(secnet_ledger::LEDGER_FILE);
    let usage = secnet_ledger::disk_usage(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e} (is its node still running?)", path.display()))?;
    if json {
        return super::print_json(&usage);
    }
    let mib = super::mib;
    println!(
        "{}: {:.1} MiB, of which {:.1} MiB allocated",
        path.display(),
        mib(usage.file_bytes),
        mib(usage.allocated_bytes)
    );
    println!(
        "{:<22} {:>12} {:>12} {:>12} {:>12}",
        "table", "rows", "stored MiB", "tree MiB", "unused MiB"
    );
    for t in &usage.tables {
        println!(
            "{:<22} {:>12} {:>12.1} {:>12.1} {:>12.1}",
            t.name,
            t.rows,
            mib(t.stored_bytes),
            mib(t.metadata_bytes),
            mib(t.fragmented_bytes)
        );
    }
    println!(
        "{:<22} {:>12} {:>12}",
        "index (runs)", "chunks", "stored MiB"
    );
    for r in &usage.runs {
        println!(
            "{:<22} {:>12} {:>12.1}",
            r.index,
            r.chunks,
            mib(r.stored_bytes)
        );
    }
    Ok(())
}
