//! `secnet staff`: a hospital node's staff accounts, for the application it serves at
//! `/app`. Run with the node stopped (the node holds `web.redb` open); once an admin
//! exists, admins register staff in the browser.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use secnet_web::staff::{Role, StaffStore};
use std::io::BufRead as _;
use std::path::PathBuf;

/// Staff commands.
#[derive(Subcommand)]
pub enum StaffCmd {
    /// Register a staff member. The password is read from SECNET_STAFF_PASSWORD, or else
    /// as one line from standard input.
    Add(AddArgs),
    /// List the staff accounts.
    List {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `secnet staff add`.
#[derive(Args)]
pub struct AddArgs {
    /// The node's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Sign-in name: 3 to 32 lower-case letters, digits, '.', '_' or '-'.
    #[arg(long)]
    pub user: String,
    /// Full name shown on pages.
    #[arg(long)]
    pub name: String,
    /// clinician, researcher or admin.
    #[arg(long)]
    pub role: Role,
}

fn store(data_dir: &std::path::Path) -> anyhow::Result<StaffStore> {
    StaffStore::open(&data_dir.join(secnet_web::WEB_FILE)).with_context(|| {
        format!(
            "opening the staff accounts in {} (is the node running? stop it first)",
            data_dir.display()
        )
    })
}

pub fn run(cmd: StaffCmd) -> anyhow::Result<()> {
    match cmd {
        StaffCmd::Add(args) => {
            let password = match std::env::var("SECNET_STAFF_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if password.is_empty() {
                bail!("no password: set SECNET_STAFF_PASSWORD or give it on standard input");
            }
            let member = store(&args.data_dir)?.add(
                &args.user,
                &args.name,
                args.role,
                &password,
                secnet_node::datadir::now_ms(),
            )?;
            println!("registered {} ({})", member.username, member.role);
        }
        StaffCmd::List { data_dir, json } => {
            let members = store(&data_dir)?.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&members)?);
            } else {
                for m in members {
                    println!("{}\t{}\t{}", m.username, m.role, m.display_name);
                }
            }
        }
    }
    Ok(())
}
