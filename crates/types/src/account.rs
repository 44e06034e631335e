//! Accounts and their keys: an account is an ed25519 public key; it may also publish an
//! X25519 key that data keys are sealed to.

use crate::hash::{ParseHexError, parse_hex32};
use bytes::BufMut;
use commonware_codec::{Buf, Copying, Error as CodecError, FixedSize, Read, ReadExt, Write};
use commonware_cryptography::{Signer as _, ed25519};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use zeroize::Zeroizing;

macro_rules! bytes32_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// Lower-case hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl FromStr for $name {
            type Err = ParseHexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32(s).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl Write for $name {
            fn write(&self, buf: &mut impl BufMut) {
                buf.put_slice(&self.0);
            }
        }

        impl FixedSize for $name {
            const SIZE: usize = 32;
        }

        impl Read for $name {
            type Cfg = ();
            fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
                <[u8; 32]>::read(buf).map($name)
            }
        }
    };
}

bytes32_newtype!(
    /// An account: the 32 bytes of its ed25519 public key.
    AccountId
);

bytes32_newtype!(
    /// An X25519 public key that an account registers so that data keys can be sealed to it.
    EncryptionKey
);

impl AccountId {
    /// The ed25519 verification key, or `None` if the bytes are not a valid curve point.
    pub fn verification_key(&self) -> Option<ed25519::PublicKey> {
        ed25519::PublicKey::read(&mut Copying(&self.0[..])).ok()
    }

    /// The account of an ed25519 verification key.
    pub fn of_key(key: &ed25519::PublicKey) -> AccountId {
        let mut bytes = Vec::with_capacity(32);
        key.write(&mut bytes);
        let mut account = [0u8; 32];
        account.copy_from_slice(bytes.get(..32).unwrap_or(&[0u8; 32]));
        AccountId(account)
    }
}

/// An account's secrets: the ed25519 signing key and the X25519 decryption key.
///
/// Secrets are zeroized on drop and never printed: `Debug` shows only the account id.
pub struct Keypair {
    signing: ed25519::PrivateKey,
    signing_seed: Zeroizing<[u8; 32]>,
    encryption: x25519_dalek::StaticSecret,
    account: AccountId,
}

/// A copy of the same secrets; every copy wipes its secrets when dropped.
impl Clone for Keypair {
    fn clone(&self) -> Keypair {
        Keypair {
            signing: self.signing.clone(),
            signing_seed: self.signing_seed.clone(),
            encryption: self.encryption.clone(),
            account: self.account,
        }
    }
}

impl Keypair {
    /// A fresh keypair from the operating system's random source.
    pub fn generate() -> Keypair {
        let mut signing_seed = Zeroizing::new([0u8; 32]);
        let mut encryption_seed = Zeroizing::new([0u8; 32]);
        rand::fill(&mut signing_seed[..]);
        rand::fill(&mut encryption_seed[..]);
        Keypair::from_secret_seeds(signing_seed, encryption_seed)
    }

    /// Rebuilds a keypair from its two 32-byte secrets (as stored in a key file).
    pub fn from_seeds(signing_seed: [u8; 32], encryption_seed: [u8; 32]) -> Keypair {
        Keypair::from_secret_seeds(
            Zeroizing::new(signing_seed),
            Zeroizing::new(encryption_seed),
        )
    }

    /// Like [`Self::from_seeds`], from seeds held where they are wiped after use.
    pub fn from_secret_seeds(
        signing_seed: Zeroizing<[u8; 32]>,
        encryption_seed: Zeroizing<[u8; 32]>,
    ) -> Keypair {
        let signing = match ed25519::PrivateKey::read(&mut Copying(&signing_seed[..])) {
            Ok(key) => key,
            // INVARIANT: any 32 bytes are a valid ed25519 seed; reading a fixed array of
            // exactly 32 bytes cannot run out of input.
            Err(_) => unreachable_seed(),
        };
        let mut pk = Vec::with_capacity(32);
        signing.public_key().write(&mut pk);
        let mut account = [0u8; 32];
        account.copy_from_slice(&pk);
        Keypair {
            signing,
            signing_seed,
            encryption: x25519_dalek::StaticSecret::from(*encryption_seed),
            account: AccountId(account),
        }
    }

    /// A deterministic keypair for tests, simulations and benchmarks: never for real funds.
    pub fn deterministic(label: &str, index: u64) -> Keypair {
        let base = crate::Hash::digest_parts(&[
            b"secnet/deterministic-key/",
            label.as_bytes(),
            &index.to_be_bytes(),
        ]);
        let enc = crate::Hash::digest_parts(&[b"secnet/deterministic-enc/", base.as_bytes()]);
        Keypair::from_seeds(base.0, enc.0)
    }

    /// The account id (ed25519 public key).
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// The X25519 public key derived from the encryption secret.
    pub fn encryption_key(&self) -> EncryptionKey {
        EncryptionKey(x25519_dalek::PublicKey::from(&self.encryption).to_bytes())
    }

    /// The X25519 secret, for opening sealed data keys.
    pub fn encryption_secret(&self) -> &x25519_dalek::StaticSecret {
        &self.encryption
    }

    /// The ed25519 signing key (Commonware's type, which consensus signs with).
    pub fn signing_key(&self) -> &ed25519::PrivateKey {
        &self.signing
    }

    /// The signing seed, for writing a key file.
    pub fn signing_seed(&self) -> Zeroizing<[u8; 32]> {
        self.signing_seed.clone()
    }

    /// The encryption seed, for writing a key file.
    pub fn encryption_seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.encryption.to_bytes())
    }

    /// Signs `msg` with plain RFC 8032 Ed25519, for formats verified by other tools (signed
    /// notes and checkpoints). Ledger messages use [`Self::sign`], which separates domains.
    pub fn sign_raw(&self, msg: &[u8]) -> Signature {
        use ed25519_dalek::Signer as _;
        let key = ed25519_dalek::SigningKey::from_bytes(&self.signing_seed);
        Signature(key.sign(msg).to_bytes())
    }

    /// Signs `msg` under `namespace` (domain separation between signing contexts).
    pub fn sign(&self, namespace: &[u8], msg: &[u8]) -> Signature {
        let sig = self.signing.sign(namespace, msg);
        let mut raw = Vec::with_capacity(64);
        sig.write(&mut raw);
        let mut out = [0u8; 64];
        out.copy_from_slice(&raw);
        Signature(out)
    }
}

#[cold]
fn unreachable_seed() -> ! {
    #[expect(clippy::panic, reason = "a 32-byte ed25519 seed always decodes")]
    {
        panic!("a 32-byte ed25519 seed always decodes")
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({})", self.account)
    }
}

/// A 64-byte ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// Checks this signature by `account` over `msg` in `namespace`.
    pub fn verify(&self, account: &AccountId, namespace: &[u8], msg: &[u8]) -> bool {
        use commonware_cryptography::Verifier as _;
        let (Some(key), Some(sig)) = (account.verification_key(), self.to_commonware()) else {
            return false;
        };
        key.verify(namespace, msg, &sig)
    }

    /// Checks a plain RFC 8032 Ed25519 signature (see [`Keypair::sign_raw`]).
    pub fn verify_raw(&self, account: &AccountId, msg: &[u8]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&account.0) else {
            return false;
        };
        key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&self.0))
            .is_ok()
    }

    pub(crate) fn to_commonware(self) -> Option<ed25519::Signature> {
        ed25519::Signature::read(&mut Copying(&self.0[..])).ok()
    }

    /// Lower-case hex, 128 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 64];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|_| serde::de::Error::custom("expected 128 hex characters (64 bytes)"))?;
        Ok(Signature(out))
    }
}

impl Write for Signature {
    fn write(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }
}

impl FixedSize for Signature {
    const SIZE: usize = 64;
}

impl Read for Signature {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        <[u8; 64]>::read(buf).map(Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_with_namespace() {
        let kp = Keypair::deterministic("test", 1);
        let sig = kp.sign(b"ns", b"hello");
        assert!(sig.verify(&kp.account(), b"ns", b"hello"));
        assert!(!sig.verify(&kp.account(), b"other", b"hello"));
        assert!(!sig.verify(&kp.account(), b"ns", b"hellO"));
        let other = Keypair::deterministic("test", 2);
        assert!(!sig.verify(&other.account(), b"ns", b"hello"));
    }

    #[test]
    fn raw_signatures_are_plain_ed25519() {
        let kp = Keypair::deterministic("test", 4);
        let sig = kp.sign_raw(b"note");
        assert!(sig.verify_raw(&kp.account(), b"note"));
        assert!(!sig.verify_raw(&kp.account(), b"note!"));
        assert!(
            !sig.verify(&kp.account(), b"", b"note"),
            "raw and namespaced never mix"
        );
    }

    #[test]
    fn seeds_round_trip() {
        let kp = Keypair::generate();
        let again = Keypair::from_secret_seeds(kp.signing_seed(), kp.encryption_seed());
        assert_eq!(kp.account(), again.account());
        assert_eq!(kp.encryption_key(), again.encryption_key());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let kp = Keypair::deterministic("test", 3);
        let shown = format!("{kp:?}");
        assert!(!shown.contains(&hex::encode(*kp.signing_seed())));
        assert!(shown.contains(&kp.account().to_hex()));
    }
}
