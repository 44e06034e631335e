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

impl Drop for KeyFile {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.signing_seed.zeroize();
        self.encryption_seed.zeroize();
    }
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

/// Writes `key` to `path` with mode 0600, atomically; refuses to overwrite unless `force`
/// (also when another process creates the file meanwhile: the check and the creation are
/// one step).
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
        signing_seed: hex::encode(key.signing_seed().as_slice()),
        encryption_seed: hex::encode(key.encryption_seed().as_slice()),
    };
    let text = Zeroizing::new(serde_json::to_string_pretty(&file).map_err(|e| {
        KeyFileError::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?);
    let mut bytes = Zeroizing::new(text.as_bytes().to_vec());
    bytes.push(b'\n');
    if force {
        write_private(path, &bytes)
    } else {
        write_private_new(path, &bytes)
    }
}

/// Writes a secret file with mode 0600, atomically (a temporary file renamed into place).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let tmp = private_tmp(path, bytes)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io(path)(e)
    })
}

/// Like [`write_private`], but fails with [`KeyFileError::Exists`] if `path` exists, even if
/// it appears between any check and this write (the file is linked into place, which never
/// replaces one).
fn write_private_new(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let tmp = private_tmp(path, bytes)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(KeyFileError::Exists(path.to_path_buf()))
        }
        Err(e) => Err(io(path)(e)),
    }
}

/// `bytes` written and synced to a new 0600 file beside `path`; returns its path.
fn private_tmp(path: &Path, bytes: &[u8]) -> Result<PathBuf, KeyFileError> {
    // A name of its own, so that concurrent writers never touch each other's file.
    let tmp = path.with_extension(format!("key-tmp-{:016x}", rand::random::<u64>()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    // A secret half written is not left behind.
    if let Err(e) = f.write_all(bytes).and_then(|()| f.sync_all()) {
        drop(f);
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    Ok(tmp)
}

/// Reads a secret file of at most `max` bytes, refusing one that other users can read. The
/// permissions and size are those of the very file read (checked on the open handle, and the
/// read bounded), so a file swapped in between is never read unchecked.
pub fn read_private(path: &Path, max: u64) -> Result<Zeroizing<String>, KeyFileError> {
    use std::io::Read as _;
    let file = fs::File::open(path).map_err(io(path))?;
    let meta = file.metadata().map_err(io(path))?;
    let malformed = |reason: String| KeyFileError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    if !meta.is_file() {
        return Err(malformed("not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    if meta.len() > max {
        return Err(malformed(format!(
            "{} bytes is too large for this file",
            meta.len()
        )));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(max + 1)
        .read_to_string(&mut text)
        .map_err(io(path))?;
    if text.len() as u64 > max {
        return Err(malformed(
            "the file grew past its largest size while it was read".into(),
        ));
    }
    Ok(text)
}

/// Reads a key file, refusing one that other users can read (see [`read_private`]).
pub fn read_key(path: &Path) -> Result<Keypair, KeyFileError> {
    let text = read_private(path, MAX_KEY_FILE)?;
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
    let key = Keypair::from_secret_seeds(seed(&file.signing_seed)?, seed(&file.encryption_seed)?);
    if key.account() != file.account {
        return Err(malformed(
            "the account does not match the signing seed".into(),
        ));
    }
    Ok(key)
}

/// Reads the key at `path`, or creates one there if the file does not exist (if another
/// process creates it first, that one is read).
pub fn load_or_create(path: &Path) -> Result<Keypair, KeyFileError> {
    if path.exists() {
        return read_key(path);
    }
    let key = Keypair::generate();
    match write_key(path, &key, false) {
        Ok(()) => Ok(key),
        Err(KeyFileError::Exists(_)) => read_key(path),
        Err(e) => Err(e),
    }
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

    #[test]
    fn concurrent_creators_end_with_one_key_that_all_of_them_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let keys: Vec<AccountId> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create(&path).map(|k| k.account())))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        let stored = read_key(&path).unwrap().account();
        assert!(keys.iter().all(|k| *k == stored), "{keys:?} vs {stored}");
    }

    #[test]
    fn a_directory_or_an_oversized_file_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_key(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let big = dir.path().join("big.key");
        write_private(&big, &vec![b' '; 10_000]).unwrap();
        assert!(
            read_key(&big)
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
    }
}
