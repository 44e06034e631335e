//! Encrypted key backups (`secnet-key-backup/1`), the file a patient's browser downloads when
//! it creates their key, and what `secnet keys import` reads.
//!
//! JSON: `{"format": "secnet-key-backup/1", "account", "kdf": {"name": "PBKDF2-SHA256",
//! "iterations": 600000, "salt"}, "cipher": "AES-256-GCM", "nonce", "ciphertext"}` (bytes in
//! hex). The key is PBKDF2-HMAC-SHA256 of the passphrase (OWASP's 600,000 iterations, what
//! WebCrypto offers); the plaintext is the Ed25519 signing seed then the X25519 secret
//! (64 bytes); the associated data is the format name followed by the account, so a backup
//! cannot be passed off as another account's.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use secnet_types::{AccountId, Keypair};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The format's name.
pub const FORMAT: &str = "secnet-key-backup/1";
/// PBKDF2 iterations.
pub const ITERATIONS: u32 = 600_000;
/// Largest backup file read.
pub const MAX_BACKUP_BYTES: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct Kdf {
    name: String,
    iterations: u32,
    salt: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Backup {
    format: String,
    account: String,
    kdf: Kdf,
    cipher: String,
    nonce: String,
    ciphertext: String,
}

/// Why a backup cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    /// Not this format.
    #[error("not a SecNet key backup ({FORMAT}): {0}")]
    Format(String),
    /// The passphrase is wrong or the file was changed.
    #[error("wrong passphrase, or the backup was changed")]
    Decrypt,
    /// The key inside belongs to another account than the file says.
    #[error("the backup's key is account {inside}, but the file names {named}")]
    Account {
        /// What the key is.
        inside: AccountId,
        /// What the file says.
        named: String,
    },
}

fn derive(passphrase: &str, salt: &[u8], iterations: u32) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(passphrase.as_bytes(), salt, iterations, &mut *key);
    key
}

fn aad(account: &str) -> Vec<u8> {
    [FORMAT.as_bytes(), account.as_bytes()].concat()
}

/// Encrypts `key` under `passphrase`.
pub fn seal(key: &Keypair, passphrase: &str) -> String {
    let salt: [u8; 16] = rand::random();
    let nonce: [u8; 12] = rand::random();
    let account = key.account().to_string();
    let secret = derive(passphrase, &salt, ITERATIONS);
    let plain = Zeroizing::new(
        [
            key.signing_seed().as_slice(),
            key.encryption_seed().as_slice(),
        ]
        .concat(),
    );
    let cipher = Aes256Gcm::new_from_slice(&*secret).unwrap_or_else(|_| unreachable!());
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain.as_slice(),
                aad: &aad(&account),
            },
        )
        .unwrap_or_default();
    let backup = Backup {
        format: FORMAT.into(),
        account,
        kdf: Kdf {
            name: "PBKDF2-SHA256".into(),
            iterations: ITERATIONS,
            salt: hex::encode(salt),
        },
        cipher: "AES-256-GCM".into(),
        nonce: hex::encode(nonce),
        ciphertext: hex::encode(ciphertext),
    };
    serde_json::to_string_pretty(&backup).unwrap_or_default()
}

/// Opens a backup with `passphrase`.
pub fn open(text: &[u8], passphrase: &str) -> Result<Keypair, BackupError> {
    if text.len() > MAX_BACKUP_BYTES {
        return Err(BackupError::Format(format!(
            "{} bytes, more than a backup's {MAX_BACKUP_BYTES}",
            text.len()
        )));
    }
    let b: Backup = serde_json::from_slice(text).map_err(|e| BackupError::Format(e.to_string()))?;
    if b.format != FORMAT || b.cipher != "AES-256-GCM" || b.kdf.name != "PBKDF2-SHA256" {
        return Err(BackupError::Format(format!(
            "format {:?}, cipher {:?}, kdf {:?}",
            b.format, b.cipher, b.kdf.name
        )));
    }
    // Fewer iterations would weaken the passphrase; more would let a file stall the reader.
    if b.kdf.iterations != ITERATIONS {
        return Err(BackupError::Format(format!(
            "{} PBKDF2 iterations; this version reads {ITERATIONS}",
            b.kdf.iterations
        )));
    }
    let bytes = |s: &str, what: &str, len: Option<usize>| {
        hex::decode(s)
            .ok()
            .filter(|v| len.is_none_or(|l| v.len() == l))
            .ok_or_else(|| BackupError::Format(format!("{what} is not the right hex")))
    };
    let salt = bytes(&b.kdf.salt, "salt", None)?;
    let nonce = bytes(&b.nonce, "nonce", Some(12))?;
    let ciphertext = bytes(&b.ciphertext, "ciphertext", Some(64 + 16))?;
    let secret = derive(passphrase, &salt, b.kdf.iterations);
    let cipher = Aes256Gcm::new_from_slice(&*secret).map_err(|_| BackupError::Decrypt)?;
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad(&b.account),
                },
            )
            .map_err(|_| BackupError::Decrypt)?,
    );
    let mut signing = Zeroizing::new([0u8; 32]);
    let mut encryption = Zeroizing::new([0u8; 32]);
    signing.copy_from_slice(plain.get(..32).ok_or(BackupError::Decrypt)?);
    encryption.copy_from_slice(plain.get(32..64).ok_or(BackupError::Decrypt)?);
    let key = Keypair::from_secret_seeds(signing, encryption);
    if key.account().to_string() != b.account {
        return Err(BackupError::Account {
            inside: key.account(),
            named: b.account,
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_rfc_7914() {
        let mut out = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(b"passwd", b"salt", 1, &mut out);
        assert_eq!(
            hex::encode(out),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
        );
    }

    #[test]
    fn a_backup_opens_with_its_passphrase_only() {
        let key = Keypair::generate();
        let text = seal(&key, "a long enough passphrase");
        let opened = open(text.as_bytes(), "a long enough passphrase").unwrap();
        assert_eq!(opened.account(), key.account());
        assert_eq!(opened.encryption_key(), key.encryption_key());
        assert_eq!(
            open(text.as_bytes(), "another passphrase").unwrap_err(),
            BackupError::Decrypt
        );
        // Renamed to another account: the associated data no longer matches.
        let other = Keypair::generate().account().to_string();
        let renamed = text.replace(&key.account().to_string(), &other);
        assert_eq!(
            open(renamed.as_bytes(), "a long enough passphrase").unwrap_err(),
            BackupError::Decrypt
        );
        let weakened = text.replace("600000", "1");
        assert!(matches!(
            open(weakened.as_bytes(), "a long enough passphrase"),
            Err(BackupError::Format(_))
        ));
        assert!(matches!(open(b"{}", "x"), Err(BackupError::Format(_))));
        assert!(matches!(
            open(&vec![b' '; 5000], "x"),
            Err(BackupError::Format(_))
        ));
    }
}
