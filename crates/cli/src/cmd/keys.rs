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
        #[command(flatten)]
        conn: super::data::Conn,
    },
    /// Write a key file from an encrypted backup (`secnet-key-backup/1`, what the browser
    /// application downloads when it creates a patient's key). The passphrase is read from
    /// SECNET_BACKUP_PASSPHRASE, or from the first line of standard input.
    Import {
        /// The backup file.
        backup: PathBuf,
        /// Where to write the key file.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Write an encrypted backup of a key file, which the browser application can restore.
    /// The passphrase (at least 12 characters) is read like `import`'s.
    Backup {
        /// The key file.
        key: PathBuf,
        /// Where to write the backup.
        #[arg(long)]
        out: PathBuf,
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
        KeysCmd::Publish { key, conn } => {
            let key = keyfile::read_key(&key)?;
            let call = secnet_types::Call::SetEncryptionKey {
                key: key.encryption_key(),
            };
            super::runtime()?.block_on(async move {
                super::print_json(&super::data::execute_call(&conn, &key, call).await?)
            })?;
        }
        KeysCmd::Import { backup, out, force } => {
            let text = read_bounded(&backup)?;
            let passphrase = passphrase()?;
            let key = secnet_node::backup::open(&text, &passphrase)
                .map_err(|e| anyhow::anyhow!("{}: {e}", backup.display()))?;
            keyfile::write_key(&out, &key, force)?;
            println!("{}", key.account());
            eprintln!("wrote {} (mode 0600)", out.display());
        }
        KeysCmd::Backup { key, out } => {
            let key = keyfile::read_key(&key)?;
            let passphrase = passphrase()?;
            anyhow::ensure!(
                passphrase.chars().count() >= 12,
                "the passphrase must have at least 12 characters"
            );
            keyfile::write_private(
                &out,
                secnet_node::backup::seal(&key, &passphrase).as_bytes(),
            )?;
            println!("{}", key.account());
            eprintln!("wrote {} (mode 0600)", out.display());
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

fn read_bounded(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut text = Vec::new();
    std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .take(secnet_node::backup::MAX_BACKUP_BYTES as u64 + 1)
        .read_to_end(&mut text)?;
    Ok(text)
}

fn passphrase() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("SECNET_BACKUP_PASSPHRASE") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let p = line.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(
        !p.is_empty(),
        "no passphrase: set SECNET_BACKUP_PASSPHRASE or write it on standard input"
    );
    Ok(p)
}
