//! A node's data directory: `genesis.json`, `node.key` (0600) and the ledger database.

use crate::keyfile::{self, KeyFileError};
use secnet_types::{Allocation, Genesis, Keypair, Validator};
use std::path::{Path, PathBuf};

/// Balance given to the node's own account by a development genesis.
pub const DEV_SUPPLY: u64 = 1_000_000_000_000;
/// Chain id of development networks.
pub const DEV_CHAIN_ID: &str = "secnet-dev";

/// Largest genesis file read, in bytes.
const MAX_GENESIS_FILE: u64 = 64 * 1024 * 1024;

/// A data directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The genesis file is unusable.
    #[error("{path}: {reason}")]
    Genesis {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The node key is unusable.
    #[error(transparent)]
    Key(#[from] KeyFileError),
}

/// Paths inside a data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `genesis.json`.
    pub fn genesis_path(&self) -> PathBuf {
        self.root.join("genesis.json")
    }

    /// `node.key`.
    pub fn node_key_path(&self) -> PathBuf {
        self.root.join("node.key")
    }

    /// Reads `genesis.json`.
    pub fn read_genesis(&self) -> Result<Genesis, DataDirError> {
        read_genesis(&self.genesis_path())
    }

    /// Writes `genesis.json`.
    pub fn write_genesis(&self, genesis: &Genesis) -> Result<(), DataDirError> {
        let path = self.genesis_path();
        std::fs::create_dir_all(&self.root).map_err(|source| DataDirError::Io {
            path: self.root.clone(),
            source,
        })?;
        let text = serde_json::to_string_pretty(genesis).map_err(|e| DataDirError::Genesis {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&path, text + "\n").map_err(|source| DataDirError::Io { path, source })
    }

    /// Opens a development directory: creates the node key and a genesis that funds it if
    /// they are missing, and returns both.
    pub fn open_dev(&self, extra: &[Allocation]) -> Result<(Genesis, Keypair), DataDirError> {
        std::fs::create_dir_all(&self.root).map_err(|source| DataDirError::Io {
            path: self.root.clone(),
            source,
        })?;
        let key = keyfile::load_or_create(&self.node_key_path())?;
        if self.genesis_path().exists() {
            return Ok((self.read_genesis()?, key));
        }
        let mut allocations = vec![Allocation {
            account: key.account(),
            balance: DEV_SUPPLY,
        }];
        allocations.extend(extra.iter().filter(|a| a.account != key.account()).cloned());
        let genesis = Genesis {
            chain_id: DEV_CHAIN_ID.into(),
            genesis_time_ms: now_ms(),
            allocations,
            // The node is the network's single validator: it certifies its own blocks, and
            // a client holding this genesis checks them against its key.
            validators: vec![Validator {
                key: key.account(),
                address: String::new(),
                name: String::new(),
            }],
        };
        self.write_genesis(&genesis)?;
        Ok((genesis, key))
    }
}

/// Reads and validates a genesis file.
pub fn read_genesis(path: &Path) -> Result<Genesis, DataDirError> {
    let io = |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    let bad = |reason: String| DataDirError::Genesis {
        path: path.to_path_buf(),
        reason,
    };
    if len > MAX_GENESIS_FILE {
        return Err(bad(format!(
            "{len} bytes is larger than the {MAX_GENESIS_FILE}-byte limit"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let genesis: Genesis = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    genesis.validate().map_err(|e| bad(e.to_string()))?;
    Ok(genesis)
}

/// Milliseconds since the Unix epoch by the system clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
