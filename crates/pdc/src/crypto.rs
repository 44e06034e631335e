//! Encryption at rest: a random data key per object version, content encrypted with
//! ChaCha20-Poly1305 in fixed-size chunks, and the data key sealed with HPKE (RFC 9180,
//! X25519-HKDF-SHA256 / ChaCha20-Poly1305, base mode) to each party that may open it.
//!
//! Chunk `i` is encrypted under the nonce `i (8 bytes, big-endian) ‖ 0 0 0 last`, with the
//! blob id as associated data. A data key encrypts exactly one blob, so nonces never repeat;
//! the `last` flag makes a truncated blob fail to decrypt instead of looking complete.

use chacha20poly1305::aead::{AeadInOut as _, KeyInit as _};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hpke::{Deserializable as _, Serializable as _};
use secnet_types::{EncryptionKey, Keypair};
use zeroize::Zeroizing;

/// Plaintext bytes per chunk.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// Bytes an encrypted chunk adds: the Poly1305 tag.
pub const TAG_SIZE: usize = 16;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

const CHUNK_AAD: &[u8] = b"secnet/pdc/chunk/v1";
const SEAL_INFO: &[u8] = b"secnet/pdc/data-key/v1";

/// A failed cryptographic operation. Deliberately says no more than what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// A chunk's tag did not verify: the stored bytes were altered, truncated or reordered.
    #[error("chunk {0} failed authentication: the stored object was altered")]
    Chunk(u64),
    /// The sealed key did not open with this key.
    #[error("the data key is not sealed to this key, or the sealed key was altered")]
    Unseal,
    /// The recipient key or sealed bytes are malformed.
    #[error("malformed sealed key")]
    Malformed,
}

/// Identifies one encrypted blob (one version of one object) on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 16]);

impl BlobId {
    /// A fresh random id.
    pub fn random() -> BlobId {
        BlobId(rand::random())
    }

    /// Lower-case hex, the blob's file name.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Parses [`BlobId::to_hex`].
    pub fn from_hex(s: &str) -> Option<BlobId> {
        let bytes = hex::decode(s).ok()?;
        Some(BlobId(bytes.try_into().ok()?))
    }
}

/// The symmetric key of one blob. Zeroized on drop, never printed.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// A data key sealed to one recipient's X25519 key: the HPKE encapsulated key and the
/// encrypted data key with its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedKey {
    /// HPKE encapsulated key (32 bytes).
    pub enc: [u8; 32],
    /// The data key encrypted to the recipient (32 bytes and a 16-byte tag).
    pub ciphertext: [u8; 48],
}

impl SealedKey {
    /// Length of [`SealedKey::to_bytes`].
    pub const LEN: usize = 80;

    /// `enc ‖ ciphertext`.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let (a, b) = out.split_at_mut(32);
        a.copy_from_slice(&self.enc);
        b.copy_from_slice(&self.ciphertext);
        out
    }

    /// Parses [`SealedKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<SealedKey, CryptoError> {
        if bytes.len() != Self::LEN {
            return Err(CryptoError::Malformed);
        }
        let (a, b) = bytes.split_at(32);
        Ok(SealedKey {
            enc: a.try_into().map_err(|_| CryptoError::Malformed)?,
            ciphertext: b.try_into().map_err(|_| CryptoError::Malformed)?,
        })
    }

    /// Lower-case hex of [`SealedKey::to_bytes`], for JSON.
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    /// Parses [`SealedKey::to_hex`].
    pub fn from_hex(s: &str) -> Result<SealedKey, CryptoError> {
        SealedKey::from_bytes(&hex::decode(s).map_err(|_| CryptoError::Malformed)?)
    }
}

impl DataKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> DataKey {
        DataKey(Zeroizing::new(rand::random()))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&Key::from(*self.0))
    }

    /// Seals this key to `recipient`, bound to `blob` (it opens only for that blob).
    pub fn seal_to(
        &self,
        recipient: &EncryptionKey,
        blob: BlobId,
    ) -> Result<SealedKey, CryptoError> {
        let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(recipient.as_bytes())
            .map_err(|_| CryptoError::Malformed)?;
        let (enc, ct) = hpke::single_shot_seal::<Aead, Kdf, Kem>(
            &hpke::OpModeS::Base,
            &pk,
            SEAL_INFO,
            &self.0[..],
            &blob.0,
        )
        .map_err(|_| CryptoError::Malformed)?;
        let mut enc_bytes = [0u8; 32];
        enc_bytes.copy_from_slice(&enc.to_bytes());
        Ok(SealedKey {
            enc: enc_bytes,
            ciphertext: ct
                .as_slice()
                .try_into()
                .map_err(|_| CryptoError::Malformed)?,
        })
    }

    /// Opens a key sealed to `key`'s encryption key for `blob`.
    pub fn open(sealed: &SealedKey, key: &Keypair, blob: BlobId) -> Result<DataKey, CryptoError> {
        let seed = key.encryption_seed();
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&seed[..])
            .map_err(|_| CryptoError::Malformed)?;
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed.enc)
            .map_err(|_| CryptoError::Unseal)?;
        let plain = Zeroizing::new(
            hpke::single_shot_open::<Aead, Kdf, Kem>(
                &hpke::OpModeR::Base,
                &sk,
                &enc,
                SEAL_INFO,
                &sealed.ciphertext,
                &blob.0,
            )
            .map_err(|_| CryptoError::Unseal)?,
        );
        let bytes: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Unseal)?;
        Ok(DataKey(Zeroizing::new(bytes)))
    }
}

fn nonce(index: u64, last: bool) -> Nonce {
    let i = index.to_be_bytes();
    Nonce::from([
        i[0],
        i[1],
        i[2],
        i[3],
        i[4],
        i[5],
        i[6],
        i[7],
        0,
        0,
        0,
        u8::from(last),
    ])
}

fn aad(blob: BlobId) -> Vec<u8> {
    [CHUNK_AAD, blob.0.as_slice()].concat()
}

/// Encrypts chunks of one blob.
#[derive(Debug)]
pub struct ChunkCipher {
    cipher: ChaCha20Poly1305,
    aad: Vec<u8>,
}

impl ChunkCipher {
    /// The cipher of `blob` under `key`.
    pub fn new(key: &DataKey, blob: BlobId) -> ChunkCipher {
        ChunkCipher {
            cipher: key.cipher(),
            aad: aad(blob),
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal(&self, index: u64, last: bool, buf: &mut [u8]) -> [u8; TAG_SIZE] {
        match self
            .cipher
            .encrypt_inout_detached(&nonce(index, last), &self.aad, buf.into())
        {
            Ok(tag) => tag.into(),
            // INVARIANT: ChaCha20-Poly1305 fails only for messages over 256 GiB; a chunk is
            // CHUNK_SIZE bytes.
            Err(_) => [0u8; TAG_SIZE],
        }
    }

    /// Decrypts `buf` in place after checking `tag`.
    pub fn open(
        &self,
        index: u64,
        last: bool,
        buf: &mut [u8],
        tag: &[u8; TAG_SIZE],
    ) -> Result<(), CryptoError> {
        self.cipher
            .decrypt_inout_detached(&nonce(index, last), &self.aad, buf.into(), &Tag::from(*tag))
            .map_err(|_| CryptoError::Chunk(index))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_for_its_recipient_and_blob() {
        let alice = Keypair::deterministic("alice", 0);
        let bob = Keypair::deterministic("bob", 0);
        let key = DataKey::generate();
        let blob = BlobId::random();
        let sealed = key.seal_to(&alice.encryption_key(), blob).unwrap();
        let opened = DataKey::open(&sealed, &alice, blob).unwrap();
        assert_eq!(*opened.0, *key.0);
        assert_eq!(
            DataKey::open(&sealed, &bob, blob).unwrap_err(),
            CryptoError::Unseal
        );
        assert_eq!(
            DataKey::open(&sealed, &alice, BlobId::random()).unwrap_err(),
            CryptoError::Unseal
        );
        let mut bytes = sealed.to_bytes();
        bytes[40] ^= 1;
        let altered = SealedKey::from_bytes(&bytes).unwrap();
        assert!(DataKey::open(&altered, &alice, blob).is_err());
        assert_eq!(SealedKey::from_hex(&sealed.to_hex()).unwrap(), sealed);
    }

    #[test]
    fn chunks_detect_alteration_reordering_and_truncation() {
        let key = DataKey::generate();
        let blob = BlobId::random();
        let c = ChunkCipher::new(&key, blob);
        let mut a = b"first chunk".to_vec();
        let tag_a = c.seal(0, false, &mut a);
        let mut b = b"last chunk".to_vec();
        let tag_b = c.seal(1, true, &mut b);

        let mut ok = a.clone();
        c.open(0, false, &mut ok, &tag_a).unwrap();
        assert_eq!(ok, b"first chunk");
        let mut flipped = a.clone();
        flipped[0] ^= 1;
        assert_eq!(
            c.open(0, false, &mut flipped, &tag_a),
            Err(CryptoError::Chunk(0))
        );
        // Moved to another position.
        assert!(c.open(1, true, &mut b.clone(), &tag_a).is_err());
        // The first chunk presented as the last (the rest cut off).
        assert!(c.open(0, true, &mut a.clone(), &tag_a).is_err());
        // Another blob's cipher.
        let other = ChunkCipher::new(&key, BlobId::random());
        assert!(other.open(1, true, &mut b.clone(), &tag_b).is_err());
    }
}
