//! The encrypted object store of one Private Data Center.
//!
//! Layout of `<dir>`:
//! - `pdc.redb`: object records (owner, path, versions with their envelope, content hash,
//!   size and blob id) and an index from content hash to object;
//! - `blobs/<blob>.bin`: one version's content, encrypted chunk by chunk
//!   (see [`crate::crypto`]);
//! - `keys/<blob>.key`: that version's data key, sealed to the owner and to this holder.
//!
//! A write streams into temporary files, makes them durable, renames them into place and
//! only then commits the record, so a crash or a refused payload leaves no half-stored
//! object; files no record names are swept when the store opens. Deleting an object
//! overwrites and removes its key files before its blobs: without the key nothing left on
//! disk, in a file or in a free page, decrypts.

use crate::crypto::{BlobId, CHUNK_SIZE, ChunkCipher, CryptoError, DataKey, SealedKey, TAG_SIZE};
use crate::envelope::{self, Envelope, EnvelopeError, Utf8Check, Validation};
use crate::ids::{ContentId, IdError, Udi, check_name, check_object_path};
use redb::{
    Database, MultimapTableDefinition, ReadableDatabase as _, ReadableTable as _, TableDefinition,
};
use secnet_types::{AccountId, EncryptionKey, Hash, Keypair};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const BY_HASH: MultimapTableDefinition<&[u8; 32], &str> = MultimapTableDefinition::new("by_hash");
const POLICIES: TableDefinition<&str, &str> = TableDefinition::new("policies");
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// Content hashes of every version an owner ever stored here, deleted ones included, so
/// the owner's access history stays complete after a deletion. A hash is what the ledger
/// already records forever; it brings nothing of the content back.
const HELD: MultimapTableDefinition<&[u8; 32], &[u8; 32]> = MultimapTableDefinition::new("held");
/// Access decisions (deliveries and refusals) not yet recorded on the ledger, by journal
/// number: written before a delivery is served, forgotten once the ledger applied their
/// record, so a holder that crashes in between records them when it restarts.
const UNRECORDED: TableDefinition<u64, &[u8]> = TableDefinition::new("unrecorded");
/// The `RecordAccess` transaction a journaled decision was last submitted in: after a
/// restart its receipt says whether the decision is already recorded.
const SUBMITTED: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("unrecorded_submitted");
const KEY_MAGIC: &[u8; 4] = b"SNK1";
const KEY_FILE_LEN: usize = 4 + 2 * SealedKey::LEN;

/// One stored version of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// 1, 2, …
    pub version: u32,
    /// Who produced this version.
    pub source: String,
    /// SHA-256 of the plaintext content.
    pub content_hash: Hash,
    /// Plaintext size in bytes.
    pub size: u64,
    /// What the content is.
    pub envelope: Envelope,
    /// When it was stored (Unix ms).
    pub created_ms: u64,
    /// Where its encrypted content and sealed keys are.
    pub blob: [u8; 16],
}

impl Version {
    /// The content id.
    pub fn cid(&self) -> ContentId {
        ContentId::from_hash(self.content_hash)
    }

    /// The blob holding the content.
    pub fn blob_id(&self) -> BlobId {
        BlobId(self.blob)
    }

    /// Number of encrypted chunks (an empty content has one empty chunk).
    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(CHUNK_SIZE as u64).max(1)
    }

    /// Size of the encrypted blob.
    pub fn blob_size(&self) -> u64 {
        self.size + self.chunks() * TAG_SIZE as u64
    }
}

/// An object: owner, path and every version still stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// The owning account.
    pub owner: AccountId,
    /// The object's path.
    pub object: String,
    /// Versions, oldest first.
    pub versions: Vec<Version>,
}

impl Object {
    /// The latest version.
    pub fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    /// Version `v`.
    pub fn version(&self, v: u32) -> Option<&Version> {
        self.versions.iter().find(|x| x.version == v)
    }

    /// The identifier of version `v`.
    pub fn udi(&self, v: &Version) -> Udi {
        Udi {
            owner: self.owner,
            source: v.source.clone(),
            object: self.object.clone(),
            version: v.version,
            cid: v.cid(),
        }
    }
}

/// A store operation that failed. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing files.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Reading the payload from its source.
    #[error("reading the payload: {0}")]
    Input(io::Error),
    /// The metadata database.
    #[error("metadata database: {0}")]
    Db(String),
    /// A stored record that does not decode.
    #[error("corrupt record for {0}")]
    Corrupt(String),
    /// The payload does not fit its declared representation.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// A bad name or identifier.
    #[error(transparent)]
    Id(#[from] IdError),
    /// Larger than the store accepts.
    #[error("object of more than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// No such object or version.
    #[error("no such object: {0}")]
    NotFound(String),
    /// Decryption or authentication failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The stored content does not match its registered hash.
    #[error("content of {udi} does not match its hash: stored data was altered")]
    Integrity {
        /// The version.
        udi: String,
    },
}

impl StoreError {
    /// Whether the disk (or the owner's quota on it) is full: the operator must make room,
    /// and the request may be retried once there is.
    pub fn is_storage_full(&self) -> bool {
        /// ENOSPC and EDQUOT on Linux.
        const FULL: [i32; 2] = [28, 122];
        match self {
            StoreError::Io { source, .. } => {
                source.kind() == io::ErrorKind::StorageFull
                    || source.kind() == io::ErrorKind::QuotaExceeded
                    || source.raw_os_error().is_some_and(|c| FULL.contains(&c))
            }
            // The metadata database's errors arrive as text (redb's I/O errors included).
            StoreError::Db(text) => {
                text.contains("No space left on device") || text.contains("Disk quota exceeded")
            }
            _ => false,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// What to store.
#[derive(Debug, Clone)]
pub struct PutRequest {
    /// The owning account.
    pub owner: AccountId,
    /// The owner's X25519 key, to which the data key is sealed.
    pub owner_key: EncryptionKey,
    /// Who produced the data.
    pub source: String,
    /// The object's path; a new version if it exists.
    pub object: String,
    /// The payload's media type.
    pub media_type: String,
}

/// The encrypted object store.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    pub(crate) db: Database,
    holder: Keypair,
    max_object_bytes: u64,
    /// Data keys already re-sealed to a consumer's key, by blob and recipient: a consumer
    /// fetching the same version again gets the same sealed key without two more X25519
    /// operations. Entries of a deleted object are dropped with it.
    resealed: Mutex<HashMap<(BlobId, EncryptionKey), SealedKey>>,
}

/// Most re-sealed keys remembered; beyond it the memory is cleared.
const MAX_RESEALED: usize = 65_536;

/// Default largest object: 64 GiB.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 64 << 30;

fn object_key(owner: &AccountId, object: &str) -> String {
    format!("{owner}/{object}")
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl Store {
    /// Opens (or creates) the store in `dir`, holding data as `holder`. Files of writes that
    /// never committed are removed.
    pub fn open(dir: &Path, holder: Keypair) -> Result<Store, StoreError> {
        for sub in ["blobs", "keys"] {
            fs::create_dir_all(dir.join(sub)).map_err(io_err(dir))?;
        }
        let db_path = dir.join("pdc.redb");
        // Objects are streamed from blob files; the database holds only their metadata, so a
        // small page cache suffices (redb's default is 1 GiB).
        let db = redb::Builder::new()
            .set_cache_size(32 * 1024 * 1024)
            .create(&db_path)
            .map_err(db_err)?;
        {
            let w = db.begin_write().map_err(db_err)?;
            w.open_table(OBJECTS).map_err(db_err)?;
            w.open_multimap_table(BY_HASH).map_err(db_err)?;
            w.open_table(POLICIES).map_err(db_err)?;
            w.open_table(AGENTS).map_err(db_err)?;
            w.open_multimap_table(HELD).map_err(db_err)?;
            w.open_table(UNRECORDED).map_err(db_err)?;
            w.open_table(SUBMITTED).map_err(db_err)?;
            w.open_table(crate::asks::ASKS).map_err(db_err)?;
            w.open_table(crate::notices::NOTICES).map_err(db_err)?;
            w.commit().map_err(db_err)?;
        }
        let store = Store {
            dir: dir.to_path_buf(),
            db,
            holder,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            resealed: Mutex::new(HashMap::new()),
        };
        store.sweep()?;
        Ok(store)
    }

    /// Sets the largest object accepted.
    pub fn with_max_object_bytes(mut self, limit: u64) -> Store {
        self.max_object_bytes = limit;
        self
    }

    /// The holder's key.
    pub fn holder(&self) -> &Keypair {
        &self.holder
    }

    /// Removes blob and key files that no committed record names.
    fn sweep(&self) -> Result<(), StoreError> {
        let mut live = std::collections::HashSet::new();
        for object in self.all_objects()? {
            for v in object.versions {
                live.insert(BlobId(v.blob).to_hex());
            }
        }
        for (sub, ext) in [("keys", "key"), ("blobs", "bin")] {
            let d = self.dir.join(sub);
            for entry in fs::read_dir(&d).map_err(io_err(&d))? {
                let path = entry.map_err(io_err(&d))?.path();
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default();
                let is_live =
                    path.extension().and_then(|e| e.to_str()) == Some(ext) && live.contains(stem);
                if !is_live {
                    if sub == "keys" {
                        shred(&path)?;
                    } else {
                        fs::remove_file(&path).map_err(io_err(&path))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn blob_path(&self, blob: BlobId) -> PathBuf {
        self.dir
            .join("blobs")
            .join(format!("{}.bin", blob.to_hex()))
    }

    fn key_path(&self, blob: BlobId) -> PathBuf {
        self.dir.join("keys").join(format!("{}.key", blob.to_hex()))
    }

    /// Stores `payload` as a new version of `req.object`, validating it against its media
    /// type, and returns the object with the new version last.
    pub fn put(&self, req: &PutRequest, payload: impl Read) -> Result<(Object, Udi), StoreError> {
        check_name(&req.source)?;
        check_object_path(&req.object)?;
        let validation = envelope::validation(&req.media_type)?;
        let blob = BlobId::random();
        let result = self.write_blob(req, validation, blob, payload);
        match result {
            Ok((envelope, hash, size)) => self.commit_version(req, envelope, hash, size, blob),
            Err(e) => {
                self.discard(blob);
                Err(e)
            }
        }
    }

    /// Removes the files of a write that failed.
    fn discard(&self, blob: BlobId) {
        let _ = shred(&self.key_path(blob).with_extension("tmp"));
        let _ = shred(&self.key_path(blob));
        let _ = fs::remove_file(self.blob_path(blob).with_extension("tmp"));
        let _ = fs::remove_file(self.blob_path(blob));
    }

    fn write_blob(
        &self,
        req: &PutRequest,
        validation: Validation,
        blob: BlobId,
        mut payload: impl Read,
    ) -> Result<(Envelope, Hash, u64), StoreError> {
        // Structured payloads are validated whole before anything is written.
        let (envelope, mut source): (Envelope, Box<dyn Read + '_>) = match validation {
            Validation::Structured => {
                let mut doc = Vec::new();
                (&mut payload)
                    .take(envelope::MAX_STRUCTURED_BYTES as u64 + 1)
                    .read_to_end(&mut doc)
                    .map_err(StoreError::Input)?;
                let env = envelope::validate_structured(&req.media_type, &doc)?;
                (env, Box::new(io::Cursor::new(doc)))
            }
            Validation::Text | Validation::Opaque => {
                (envelope::streamed(&req.media_type), Box::new(payload))
            }
        };
        let key = DataKey::generate();
        let cipher = ChunkCipher::new(&key, blob);
        let tmp = self.blob_path(blob).with_extension("tmp");
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut out = BufWriter::with_capacity(4 * CHUNK_SIZE, file);
        let mut hasher = Sha256::new();
        let mut utf8 = (validation == Validation::Text).then(Utf8Check::default);
        let mut cur = vec![0u8; CHUNK_SIZE];
        let mut next = vec![0u8; CHUNK_SIZE];
        let mut n = read_full(&mut source, &mut cur).map_err(StoreError::Input)?;
        let mut index = 0u64;
        let mut size = 0u64;
        loop {
            let m = if n == CHUNK_SIZE {
                read_full(&mut source, &mut next).map_err(StoreError::Input)?
            } else {
                0
            };
            let last = m == 0;
            let chunk = cur.get_mut(..n).unwrap_or_default();
            size += n as u64;
            if size > self.max_object_bytes {
                return Err(StoreError::TooLarge {
                    limit: self.max_object_bytes,
                });
            }
            hasher.update(&*chunk);
            if let Some(check) = utf8.as_mut() {
                check.feed(chunk)?;
            }
            let tag = cipher.seal(index, last, chunk);
            out.write_all(chunk).map_err(io_err(&tmp))?;
            out.write_all(&tag).map_err(io_err(&tmp))?;
            if last {
                break;
            }
            std::mem::swap(&mut cur, &mut next);
            n = m;
            index += 1;
        }
        if let Some(check) = utf8 {
            check.finish()?;
        }
        let file = out.into_inner().map_err(|e| StoreError::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);

        let mut sealed = Vec::with_capacity(KEY_FILE_LEN);
        sealed.extend_from_slice(KEY_MAGIC);
        sealed.extend_from_slice(&key.seal_to(&req.owner_key, blob)?.to_bytes());
        sealed.extend_from_slice(&key.seal_to(&self.holder.encryption_key(), blob)?.to_bytes());
        let key_tmp = self.key_path(blob).with_extension("tmp");
        write_private(&key_tmp, &sealed)?;
        let key_path = self.key_path(blob);
        fs::rename(&key_tmp, &key_path).map_err(io_err(&key_path))?;
        let blob_path = self.blob_path(blob);
        fs::rename(&tmp, &blob_path).map_err(io_err(&blob_path))?;
        fsync_dir(&self.dir.join("keys"))?;
        fsync_dir(&self.dir.join("blobs"))?;
        let hash = Hash(hasher.finalize().into());
        Ok((envelope, hash, size))
    }

    fn commit_version(
        &self,
        req: &PutRequest,
        envelope: Envelope,
        hash: Hash,
        size: u64,
        blob: BlobId,
    ) -> Result<(Object, Udi), StoreError> {
        let key = object_key(&req.owner, &req.object);
        let w = self.db.begin_write().map_err(db_err)?;
        let object = {
            let mut objects = w.open_table(OBJECTS).map_err(db_err)?;
            let mut object = match objects.get(key.as_str()).map_err(db_err)? {
                Some(bytes) => decode_object(&key, bytes.value())?,
                None => Object {
                    owner: req.owner,
                    object: req.object.clone(),
                    versions: Vec::new(),
                },
            };
            let version = object.latest().map_or(1, |v| v.version.saturating_add(1));
            object.versions.push(Version {
                version,
                source: req.source.clone(),
                content_hash: hash,
                size,
                envelope,
                created_ms: now_ms(),
                blob: blob.0,
            });
            let bytes = postcard::to_allocvec(&object).map_err(db_err)?;
            objects
                .insert(key.as_str(), bytes.as_slice())
                .map_err(db_err)?;
            let mut by_hash = w.open_multimap_table(BY_HASH).map_err(db_err)?;
            by_hash.insert(&hash.0, key.as_str()).map_err(db_err)?;
            let mut held = w.open_multimap_table(HELD).map_err(db_err)?;
            held.insert(&req.owner.0, &hash.0).map_err(db_err)?;
            object
        };
        w.commit().map_err(db_err)?;
        let udi = match object.latest() {
            Some(v) => object.udi(v),
            None => return Err(StoreError::Corrupt(key)),
        };
        Ok((object, udi))
    }

    /// The object `object` of `owner`.
    pub fn object(&self, owner: &AccountId, object: &str) -> Result<Object, StoreError> {
        let key = object_key(owner, object);
        let r = self.db.begin_read().map_err(db_err)?;
        let objects = r.open_table(OBJECTS).map_err(db_err)?;
        let bytes = objects
            .get(key.as_str())
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
        decode_object(&key, bytes.value())
    }

    /// The object and version a UDI names, checking that its content id matches.
    pub fn resolve(&self, udi: &Udi) -> Result<(Object, Version), StoreError> {
        let object = self.object(&udi.owner, &udi.object)?;
        let version = object
            .version(udi.version)
            .filter(|v| v.cid() == udi.cid && v.source == udi.source)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(udi.to_string()))?;
        Ok((object, version))
    }

    /// Every stored version whose content hash is `hash`.
    pub fn by_hash(&self, hash: &Hash) -> Result<Vec<Udi>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let index = r.open_multimap_table(BY_HASH).map_err(db_err)?;
        let objects = r.open_table(OBJECTS).map_err(db_err)?;
        let mut out = Vec::new();
        for key in index.get(&hash.0).map_err(db_err)? {
            let key = key.map_err(db_err)?.value().to_string();
            if let Some(bytes) = objects.get(key.as_str()).map_err(db_err)? {
                let object = decode_object(&key, bytes.value())?;
                for v in object.versions.iter().filter(|v| v.content_hash == *hash) {
                    out.push(object.udi(v));
                }
            }
        }
        Ok(out)
    }

    /// Every object of `owner`, by path.
    pub fn objects_of(&self, owner: &AccountId) -> Result<Vec<Object>, StoreError> {
        let prefix = format!("{owner}/");
        let r = self.db.begin_read().map_err(db_err)?;
        let objects = r.open_table(OBJECTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in objects.range(prefix.as_str()..).map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            out.push(decode_object(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// The content hash of every version `owner` ever stored here, deleted ones included.
    pub fn hashes_of(&self, owner: &AccountId) -> Result<Vec<Hash>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let held = r.open_multimap_table(HELD).map_err(db_err)?;
        let mut out = Vec::new();
        for h in held.get(&owner.0).map_err(db_err)? {
            out.push(Hash(*h.map_err(db_err)?.value()));
        }
        Ok(out)
    }

    fn all_objects(&self) -> Result<Vec<Object>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let objects = r.open_table(OBJECTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in objects.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            out.push(decode_object(k.value(), v.value())?);
        }
        Ok(out)
    }

    fn sealed_keys(&self, blob: BlobId) -> Result<(SealedKey, SealedKey), StoreError> {
        let path = self.key_path(blob);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        if bytes.len() != KEY_FILE_LEN || bytes.get(..4) != Some(KEY_MAGIC.as_slice()) {
            return Err(StoreError::Corrupt(path.display().to_string()));
        }
        let owner = SealedKey::from_bytes(bytes.get(4..4 + SealedKey::LEN).unwrap_or_default())?;
        let holder = SealedKey::from_bytes(bytes.get(4 + SealedKey::LEN..).unwrap_or_default())?;
        Ok((owner, holder))
    }

    /// The version's data key, opened with the holder's key.
    fn data_key(&self, version: &Version) -> Result<DataKey, StoreError> {
        let (_, holder) = self.sealed_keys(version.blob_id())?;
        Ok(DataKey::open(&holder, &self.holder, version.blob_id())?)
    }

    /// The version's data key sealed to `recipient` (for delivery to a consumer).
    pub fn reseal(
        &self,
        version: &Version,
        recipient: &EncryptionKey,
    ) -> Result<SealedKey, StoreError> {
        let key = (version.blob_id(), *recipient);
        if let Some(sealed) = self.resealed.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(sealed);
        }
        let sealed = self
            .data_key(version)?
            .seal_to(recipient, version.blob_id())?;
        if let Ok(mut memory) = self.resealed.lock() {
            if memory.len() >= MAX_RESEALED {
                memory.clear();
            }
            memory.insert(key, sealed.clone());
        }
        Ok(sealed)
    }

    /// The data key as sealed to the owner.
    pub fn owner_sealed_key(&self, version: &Version) -> Result<SealedKey, StoreError> {
        Ok(self.sealed_keys(version.blob_id())?.0)
    }

    /// The encrypted blob of a version, as stored (what a consumer receives).
    pub fn blob(&self, version: &Version) -> Result<File, StoreError> {
        let path = self.blob_path(version.blob_id());
        File::open(&path).map_err(io_err(&path))
    }

    /// A reader of the version's plaintext, decrypted with the holder's key and checked
    /// against the content hash.
    pub fn read(&self, version: &Version) -> Result<Decryptor<File>, StoreError> {
        Ok(Decryptor::new(
            self.blob(version)?,
            &self.data_key(version)?,
            version,
        ))
    }

    /// Decrypts the whole version and checks it against its content hash.
    pub fn verify(&self, object: &Object, version: &Version) -> Result<(), StoreError> {
        let mut r = self.read(version)?;
        io::copy(&mut r, &mut io::sink()).map_err(|e| match e.into_inner() {
            Some(inner) => match inner.downcast::<CryptoError>() {
                Ok(c) => StoreError::Crypto(*c),
                Err(_) => StoreError::Integrity {
                    udi: object.udi(version).to_string(),
                },
            },
            None => StoreError::Integrity {
                udi: object.udi(version).to_string(),
            },
        })?;
        Ok(())
    }

    /// Deletes every version of an object: keys are overwritten and removed, then blobs,
    /// then the record. Returns the versions that were deleted.
    pub fn delete(&self, owner: &AccountId, object: &str) -> Result<Object, StoreError> {
        let record = self.object(owner, object)?;
        if let Ok(mut memory) = self.resealed.lock() {
            let blobs: HashSet<BlobId> = record.versions.iter().map(Version::blob_id).collect();
            memory.retain(|(blob, _), _| !blobs.contains(blob));
        }
        for v in &record.versions {
            shred(&self.key_path(v.blob_id()))?;
        }
        fsync_dir(&self.dir.join("keys"))?;
        for v in &record.versions {
            let path = self.blob_path(v.blob_id());
            shred(&path)?;
        }
        fsync_dir(&self.dir.join("blobs"))?;
        let key = object_key(owner, object);
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut objects = w.open_table(OBJECTS).map_err(db_err)?;
            objects.remove(key.as_str()).map_err(db_err)?;
            let mut by_hash = w.open_multimap_table(BY_HASH).map_err(db_err)?;
            for v in &record.versions {
                by_hash
                    .remove(&v.content_hash.0, key.as_str())
                    .map_err(db_err)?;
            }
        }
        w.commit().map_err(db_err)?;
        Ok(record)
    }
}

impl Store {
    /// Replaces `owner`'s policy text (the caller validated it).
    pub fn set_policy(&self, owner: &AccountId, text: &str) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(POLICIES).map_err(db_err)?;
            t.insert(owner.to_string().as_str(), text).map_err(db_err)?;
        }
        w.commit().map_err(db_err)
    }

    /// Journals an access decision durably, before it takes effect; its journal number.
    pub fn journal_access(&self, entry: &secnet_types::AccessEntry) -> Result<u64, StoreError> {
        let bytes = entry.to_bytes();
        let w = self.db.begin_write().map_err(db_err)?;
        let number = {
            let mut t = w.open_table(UNRECORDED).map_err(db_err)?;
            let next = t
                .last()
                .map_err(db_err)?
                .map_or(0, |(k, _)| k.value().saturating_add(1));
            t.insert(next, bytes.as_slice()).map_err(db_err)?;
            next
        };
        w.commit().map_err(db_err)?;
        Ok(number)
    }

    /// Every journaled access decision not yet known to be recorded on the ledger, oldest
    /// first, with the transaction it was last submitted in, if any.
    #[allow(clippy::type_complexity, reason = "a number, an entry and a hash")]
    pub fn unrecorded(
        &self,
    ) -> Result<Vec<(u64, secnet_types::AccessEntry, Option<Hash>)>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(UNRECORDED).map_err(db_err)?;
        let submitted = r.open_table(SUBMITTED).map_err(db_err)?;
        t.iter()
            .map_err(db_err)?
            .map(|row| {
                let (k, v) = row.map_err(db_err)?;
                let entry = secnet_types::AccessEntry::decode_bytes(v.value())
                    .map_err(|_| StoreError::Corrupt(format!("journaled access {}", k.value())))?;
                let tx = submitted
                    .get(k.value())
                    .map_err(db_err)?
                    .map(|h| Hash(*h.value()));
                Ok((k.value(), entry, tx))
            })
            .collect()
    }

    /// Notes that journaled decisions were submitted in transaction `tx`.
    pub fn mark_submitted(&self, numbers: &[u64], tx: &Hash) -> Result<(), StoreError> {
        if numbers.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(SUBMITTED).map_err(db_err)?;
            for n in numbers {
                t.insert(n, &tx.0).map_err(db_err)?;
            }
        }
        w.commit().map_err(db_err)?;
        Ok(())
    }

    /// Forgets journaled access decisions whose records the ledger applied.
    pub fn forget_recorded(&self, numbers: &[u64]) -> Result<(), StoreError> {
        if numbers.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(UNRECORDED).map_err(db_err)?;
            let mut submitted = w.open_table(SUBMITTED).map_err(db_err)?;
            for n in numbers {
                t.remove(n).map_err(db_err)?;
                submitted.remove(n).map_err(db_err)?;
            }
        }
        w.commit().map_err(db_err)?;
        Ok(())
    }

    /// `owner`'s policy text, if they set one.
    pub fn policy(&self, owner: &AccountId) -> Result<Option<String>, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(POLICIES).map_err(db_err)?;
        Ok(t.get(owner.to_string().as_str())
            .map_err(db_err)?
            .map(|v| v.value().to_string()))
    }

    /// Records what an account is (kind, name, memberships) in this node's directory.
    pub fn set_agent(&self, agent: &secnet_policy::Agent) -> Result<(), StoreError> {
        let bytes = postcard::to_allocvec(agent).map_err(db_err)?;
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(AGENTS).map_err(db_err)?;
            t.insert(agent.account.as_str(), bytes.as_slice())
                .map_err(db_err)?;
        }
        w.commit().map_err(db_err)
    }

    /// What this node's directory says an account is; unknown accounts are plain users
    /// belonging to nothing.
    pub fn agent(&self, account: &AccountId) -> Result<secnet_policy::Agent, StoreError> {
        let key = account.to_string();
        let r = self.db.begin_read().map_err(db_err)?;
        let t = r.open_table(AGENTS).map_err(db_err)?;
        match t.get(key.as_str()).map_err(db_err)? {
            Some(v) => postcard::from_bytes(v.value())
                .map_err(|_| StoreError::Corrupt(format!("agent {key}"))),
            None => Ok(secnet_policy::Agent {
                kind: secnet_policy::AgentKind::User,
                account: key,
                name: String::new(),
                member_of: Vec::new(),
            }),
        }
    }
}

fn decode_object(key: &str, bytes: &[u8]) -> Result<Object, StoreError> {
    postcard::from_bytes(bytes).map_err(|_| StoreError::Corrupt(key.to_string()))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Writes a file readable by its owner only, durably.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Overwrites a file with zeros, makes that durable, and removes it. A missing file is fine.
fn shred(path: &Path) -> Result<(), StoreError> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let zeros = vec![0u8; CHUNK_SIZE];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK_SIZE as u64) as usize;
        f.write_all(zeros.get(..n).unwrap_or_default())
            .map_err(io_err(path))?;
        left -= n as u64;
    }
    f.sync_all().map_err(io_err(path))?;
    drop(f);
    fs::remove_file(path).map_err(io_err(path))
}

/// Decrypts a blob chunk by chunk: each chunk is authenticated before any of it is returned,
/// and at the end the whole content is checked against the expected hash. Memory stays at
/// one chunk whatever the size.
#[derive(Debug)]
pub struct Decryptor<R> {
    inner: R,
    cipher: ChunkCipher,
    expected: Hash,
    size: u64,
    chunks: u64,
    index: u64,
    hasher: Sha256,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> Decryptor<R> {
    /// Decrypts `inner`, the blob of `version`, with `key`.
    pub fn new(inner: R, key: &DataKey, version: &Version) -> Decryptor<R> {
        Decryptor::with_expected(
            inner,
            key,
            version.blob_id(),
            version.size,
            version.content_hash,
        )
    }

    /// Decrypts a blob of known id, plaintext size and content hash (what a consumer knows
    /// from the holder's answer and the ledger).
    pub fn with_expected(
        inner: R,
        key: &DataKey,
        blob: BlobId,
        size: u64,
        expected: Hash,
    ) -> Decryptor<R> {
        Decryptor {
            inner,
            cipher: ChunkCipher::new(key, blob),
            expected,
            size,
            chunks: size.div_ceil(CHUNK_SIZE as u64).max(1),
            index: 0,
            hasher: Sha256::new(),
            buf: Vec::with_capacity(CHUNK_SIZE + TAG_SIZE),
            pos: 0,
            done: false,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let last = self.index + 1 == self.chunks;
        let plain_len = if last {
            (self.size - self.index * CHUNK_SIZE as u64) as usize
        } else {
            CHUNK_SIZE
        };
        self.buf.resize(plain_len + TAG_SIZE, 0);
        let n = read_full(&mut self.inner, &mut self.buf)?;
        if n != self.buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                CryptoError::Chunk(self.index),
            ));
        }
        let mut tag = [0u8; TAG_SIZE];
        tag.copy_from_slice(self.buf.get(plain_len..).unwrap_or_default());
        self.buf.truncate(plain_len);
        self.cipher
            .open(self.index, last, &mut self.buf, &tag)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.hasher.update(&self.buf);
        self.pos = 0;
        self.index += 1;
        if last {
            let mut extra = [0u8; 1];
            if read_full(&mut self.inner, &mut extra)? != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bytes after the last chunk",
                ));
            }
            let got = Hash(std::mem::take(&mut self.hasher).finalize().into());
            if got != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "content hash {got} does not match the expected {}",
                        self.expected
                    ),
                ));
            }
            self.done = true;
        }
        Ok(())
    }
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.fill()?;
        }
        let avail = self.buf.get(self.pos..).unwrap_or_default();
        let n = avail.len().min(out.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), avail.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
        Ok(n)
    }
}
