//! Key files: an account's two secrets as JSON, readable only by their owner (mode 0600).

use secnet_types::{AccountId, Keypair};
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Largest key file read, in bytes.
const MAX_KEY_FILE: u64 = 4096;

#[derive(Serialize, Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: String,
    version: u32,
    account: AccountId,
    signing_seed: String,
    encryption_seed: String,
}

/// A key file that cannot be written or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Refusing to overwrite a key.
    #[error("{0} already exists; pass --force to overwrite it")]
    Exists(PathBuf),
    /// Others can read the secret.
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a SecNet key file.
    #[error("{path} is not a SecNet key file: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `key` to `path` with mode 0600, atomically; refuses to overwrite unless `force`.
pub fn write_key(path: &Path, key: &Keypair, force: bool) -> Result<(), KeyFileError> {
    if path.exists() && !force {
        return Err(KeyFileError::Exists(path.to_path_buf()));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let file = KeyFile {
        kind: "secnet-key".into(),
        version: 1,
        account: key.account(),
        signing_seed: hex::encode(*key.signing_seed()),
        encryption_seed: hex::encode(*key.encryption_seed()),
    };
    let text = Zeroizing::new(serde_json::to_string_pretty(&file).map_err(|e| {
        KeyFileError::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?);
    let mut bytes = Zeroizing::new(text.as_bytes().to_vec());
    bytes.push(b'\n');
    write_private(path, &bytes)
}

/// Writes a secret file with mode 0600, atomically (a temporary file renamed into place).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let tmp = path.with_extension("key-tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

/// Reads a key file, refusing one that other users can read.
pub fn read_key(path: &Path) -> Result<Keypair, KeyFileError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(KeyFileError::Malformed {
            path: path.to_path_buf(),
            reason: format!("{} bytes is too large for a key file", meta.len()),
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io(path))?);
    let malformed = |reason: String| KeyFileError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    if file.kind != "secnet-key" || file.version != 1 {
        return Err(malformed(format!(
            "type {:?} version {}",
            file.kind, file.version
        )));
    }
    let seed = |s: &str| -> Result<Zeroizing<[u8; 32]>, KeyFileError> {
        let mut out = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(s, out.as_mut())
            .map_err(|_| malformed("a seed is not 64 hex characters".into()))?;
        Ok(out)
    };
    let key = Keypair::from_seeds(*seed(&file.signing_seed)?, *seed(&file.encryption_seed)?);
    if key.account() != file.account {
        return Err(malformed(
            "the account does not match the signing seed".into(),
        ));
    }
    Ok(key)
}

/// Reads the key at `path`, or creates one there if the file does not exist.
pub fn load_or_create(path: &Path) -> Result<Keypair, KeyFileError> {
    if path.exists() {
        return read_key(path);
    }
    let key = Keypair::generate();
    write_key(path, &key, false)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let key = Keypair::generate();
        write_key(&path, &key, false).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_key(&path).unwrap().account(), key.account());
        assert!(matches!(
            write_key(&path, &key, false),
            Err(KeyFileError::Exists(_))
        ));
        write_key(&path, &Keypair::generate(), true).unwrap();
    }

    #[test]
    fn readable_or_tampered_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        write_key(&path, &Keypair::generate(), false).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_key(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let other = Keypair::generate().account().to_hex();
        let start = text.find("\"account\": \"").unwrap() + 12;
        let tampered = format!("{}{}{}", &text[..start], other, &text[start + 64..]);
        fs::write(&path, tampered).unwrap();
        assert!(
            read_key(&path)
                .unwrap_err()
                .to_string()
                .contains("does not match")
        );
    }
}
