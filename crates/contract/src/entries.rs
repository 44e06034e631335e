//! The entries of the contract state, their keys, and their canonical encoding.
//!
//! Every entry is stored and committed as `(key bytes, value bytes)`; the state root is the
//! sparse Merkle root over `(SHA-256(key), SHA-256(value))`.

use bytes::BufMut;
use commonware_codec::{
    Buf, Copying, Encode, EncodeSize, Error as CodecError, FixedSize, Read, ReadExt, Write,
};
use secnet_types::codec::{read_string, string_size, write_string};
use secnet_types::limits::{MAX_ADDRESS, MAX_DESCRIPTION, MAX_PURPOSE};
use secnet_types::{AccountId, DataKind, EncryptionKey, GrantId, Hash, TxHash};
use serde::{Deserialize, Serialize};

/// An account's balance, nonce and published encryption key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Spendable balance.
    pub balance: u64,
    /// The next nonce the ledger accepts from this account.
    pub nonce: u64,
    /// The X25519 key that data keys are sealed to, once published.
    pub encryption_key: Option<EncryptionKey>,
}

/// Registered data (Algorithm 1's `Data[hash]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Identifies this registration: the hash of the `RegisterData` transaction. A
    /// subscription is valid only for the registration it paid for.
    pub id: TxHash,
    /// Content hash.
    pub hash: Hash,
    /// Who registered it and is paid the owner's share.
    pub owner: AccountId,
    /// Who stores and serves it and is paid the holder's share.
    pub holder: AccountId,
    /// Holder's share of each payment, in basis points.
    pub holder_share_bps: u16,
    /// Description for consumers.
    pub description: String,
    /// Where the holder serves it.
    pub address: String,
    /// Price of one subscription.
    pub price: u64,
    /// User data or security rule.
    pub kind: DataKind,
    /// Height of the block that registered it.
    pub registered_at: u64,
}

/// A paid subscription of one account to one listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The registration paid for ([`Listing::id`]).
    pub listing: TxHash,
    /// Amount paid.
    pub paid: u64,
    /// Height at which it was paid.
    pub height: u64,
}

/// A time-limited permission for one requester to fetch one piece of data from its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessGrant {
    /// Grant id: the hash of the request transaction.
    pub id: GrantId,
    /// The data.
    pub data: Hash,
    /// Where the holder serves it.
    pub address: String,
    /// Who may fetch it.
    pub requester: AccountId,
    /// Who serves it.
    pub holder: AccountId,
    /// The requester's stated purpose.
    pub purpose: String,
    /// Block time of issue, milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// Index of the grant's entry in the access log.
    pub log_index: u64,
}

/// The size and root of the access log, committed in the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHead {
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root.
    pub root: Hash,
}

/// Where an entry lives in the state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum StateKey {
    /// An account.
    Account(AccountId),
    /// A listing by content hash.
    Listing(Hash),
    /// The address index: address → content hash.
    Address(String),
    /// A subscription of an account to a content hash.
    Subscription(Hash, AccountId),
    /// An access grant.
    Grant(GrantId),
    /// The access log's head.
    LogHead,
}

/// An entry's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum StateValue {
    /// An account.
    Account(Account),
    /// A listing.
    Listing(Listing),
    /// The content hash an address points to.
    Address(Hash),
    /// A subscription.
    Subscription(Subscription),
    /// A grant.
    Grant(AccessGrant),
    /// The log head.
    LogHead(LogHead),
}

/// Stored bytes that do not decode as a state entry.
#[derive(Debug, thiserror::Error)]
#[error("corrupt state entry: {0}")]
pub struct CorruptEntry(pub String);

impl StateKey {
    /// The first byte of a listing's key bytes: a listing's key is this and its content
    /// hash, 33 bytes.
    pub const LISTING_TAG: u8 = 1;

    /// The key's canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(65);
        match self {
            StateKey::Account(a) => {
                out.push(0);
                out.extend_from_slice(a.as_bytes());
            }
            StateKey::Listing(h) => {
                out.push(StateKey::LISTING_TAG);
                out.extend_from_slice(h.as_bytes());
            }
            StateKey::Address(s) => {
                out.push(2);
                out.extend_from_slice(s.as_bytes());
            }
            StateKey::Subscription(h, a) => {
                out.push(3);
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(a.as_bytes());
            }
            StateKey::Grant(g) => {
                out.push(4);
                out.extend_from_slice(g.as_bytes());
            }
            StateKey::LogHead => out.push(5),
        }
        out
    }

    /// Parses key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<StateKey, CorruptEntry> {
        let bad = || CorruptEntry(format!("bad key of {} bytes", bytes.len()));
        let (tag, rest) = bytes.split_first().ok_or_else(bad)?;
        let h32 = |b: &[u8]| -> Result<[u8; 32], CorruptEntry> { b.try_into().map_err(|_| bad()) };
        Ok(match *tag {
            0 => StateKey::Account(AccountId(h32(rest)?)),
            StateKey::LISTING_TAG => StateKey::Listing(Hash(h32(rest)?)),
            2 => {
                if rest.len() > MAX_ADDRESS {
                    return Err(bad());
                }
                StateKey::Address(String::from_utf8(rest.to_vec()).map_err(|_| bad())?)
            }
            3 => {
                if rest.len() != 64 {
                    return Err(bad());
                }
                let (h, a) = rest.split_at(32);
                StateKey::Subscription(Hash(h32(h)?), AccountId(h32(a)?))
            }
            4 => StateKey::Grant(Hash(h32(rest)?)),
            5 if rest.is_empty() => StateKey::LogHead,
            _ => return Err(bad()),
        })
    }

    /// The key's position in the sparse Merkle tree.
    pub fn tree_key(&self) -> Hash {
        StateKey::tree_key_of(&self.to_bytes())
    }

    /// The state tree key of the key whose canonical bytes are `key`.
    pub fn tree_key_of(key: &[u8]) -> Hash {
        Hash::digest(key)
    }
}

impl StateValue {
    /// The listing, if this entry is one.
    pub fn into_listing(self) -> Option<Listing> {
        match self {
            StateValue::Listing(l) => Some(l),
            _ => None,
        }
    }

    /// The grant, if this entry is one.
    pub fn into_grant(self) -> Option<AccessGrant> {
        match self {
            StateValue::Grant(g) => Some(g),
            _ => None,
        }
    }

    /// The content hash an address entry names, if this entry is one.
    pub fn into_address(self) -> Option<Hash> {
        match self {
            StateValue::Address(h) => Some(h),
            _ => None,
        }
    }

    /// The value's canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            StateValue::Account(v) => v.encode().to_vec(),
            StateValue::Listing(v) => v.encode().to_vec(),
            StateValue::Address(v) => v.encode().to_vec(),
            StateValue::Subscription(v) => v.encode().to_vec(),
            StateValue::Grant(v) => v.encode().to_vec(),
            StateValue::LogHead(v) => v.encode().to_vec(),
        }
    }

    /// Parses value bytes stored under `key`.
    pub fn from_bytes(key: &StateKey, bytes: &[u8]) -> Result<StateValue, CorruptEntry> {
        use commonware_codec::Decode;
        let input = Copying(bytes);
        let err = |e: CodecError| CorruptEntry(format!("value of {key:?}: {e}"));
        Ok(match key {
            StateKey::Account(_) => {
                StateValue::Account(Account::decode_cfg(input, &()).map_err(err)?)
            }
            StateKey::Listing(_) => {
                StateValue::Listing(Listing::decode_cfg(input, &()).map_err(err)?)
            }
            StateKey::Address(_) => StateValue::Address(Hash::decode_cfg(input, &()).map_err(err)?),
            StateKey::Subscription(..) => {
                StateValue::Subscription(Subscription::decode_cfg(input, &()).map_err(err)?)
            }
            StateKey::Grant(_) => {
                StateValue::Grant(AccessGrant::decode_cfg(input, &()).map_err(err)?)
            }
            StateKey::LogHead => StateValue::LogHead(LogHead::decode_cfg(input, &()).map_err(err)?),
        })
    }
}

impl Write for Account {
    fn write(&self, buf: &mut impl BufMut) {
        self.balance.write(buf);
        self.nonce.write(buf);
        self.encryption_key.write(buf);
    }
}
impl EncodeSize for Account {
    fn encode_size(&self) -> usize {
        16 + self.encryption_key.encode_size()
    }
}
impl Read for Account {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(Account {
            balance: u64::read(buf)?,
            nonce: u64::read(buf)?,
            encryption_key: Option::<EncryptionKey>::read(buf)?,
        })
    }
}

impl Write for Listing {
    fn write(&self, buf: &mut impl BufMut) {
        (
            self.id,
            self.hash,
            self.owner,
            self.holder,
            self.holder_share_bps,
        )
            .write(buf);
        write_string(&self.description, buf);
        write_string(&self.address, buf);
        self.price.write(buf);
        self.kind.write(buf);
        self.registered_at.write(buf);
    }
}
impl EncodeSize for Listing {
    fn encode_size(&self) -> usize {
        32 * 4
            + 2
            + string_size(&self.description)
            + string_size(&self.address)
            + 8
            + self.kind.encode_size()
            + 8
    }
}
impl Read for Listing {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(Listing {
            id: Hash::read(buf)?,
            hash: Hash::read(buf)?,
            owner: AccountId::read(buf)?,
            holder: AccountId::read(buf)?,
            holder_share_bps: u16::read(buf)?,
            description: read_string(buf, "description", MAX_DESCRIPTION)?,
            address: read_string(buf, "address", MAX_ADDRESS)?,
            price: u64::read(buf)?,
            kind: DataKind::read(buf)?,
            registered_at: u64::read(buf)?,
        })
    }
}

impl Write for Subscription {
    fn write(&self, buf: &mut impl BufMut) {
        (self.listing, self.paid, self.height).write(buf);
    }
}
impl FixedSize for Subscription {
    const SIZE: usize = 32 + 8 + 8;
}
impl Read for Subscription {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(Subscription {
            listing: Hash::read(buf)?,
            paid: u64::read(buf)?,
            height: u64::read(buf)?,
        })
    }
}

impl Write for AccessGrant {
    fn write(&self, buf: &mut impl BufMut) {
        (self.id, self.data).write(buf);
        write_string(&self.address, buf);
        (self.requester, self.holder).write(buf);
        write_string(&self.purpose, buf);
        (self.issued_at_ms, self.expires_at_ms, self.log_index).write(buf);
    }
}
impl EncodeSize for AccessGrant {
    fn encode_size(&self) -> usize {
        64 + string_size(&self.address) + 64 + string_size(&self.purpose) + 24
    }
}
impl Read for AccessGrant {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(AccessGrant {
            id: Hash::read(buf)?,
            data: Hash::read(buf)?,
            address: read_string(buf, "address", MAX_ADDRESS)?,
            requester: AccountId::read(buf)?,
            holder: AccountId::read(buf)?,
            purpose: read_string(buf, "purpose", MAX_PURPOSE)?,
            issued_at_ms: u64::read(buf)?,
            expires_at_ms: u64::read(buf)?,
            log_index: u64::read(buf)?,
        })
    }
}

impl Write for LogHead {
    fn write(&self, buf: &mut impl BufMut) {
        (self.size, self.root).write(buf);
    }
}
impl FixedSize for LogHead {
    const SIZE: usize = 8 + 32;
}
impl Read for LogHead {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(LogHead {
            size: u64::read(buf)?,
            root: Hash::read(buf)?,
        })
    }
}
