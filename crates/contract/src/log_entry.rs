//! Leaves of the access log: every grant issued, every access recorded, every emergency
//! declared and every subscription paid.
//!
//! A leaf's bytes are its canonical encoding below; its RFC 6962 leaf hash is
//! `SHA-256(0x00 || bytes)`, so any CT verifier can check inclusion given these bytes.

use bytes::BufMut;
use commonware_codec::{
    Buf, Copying, Decode, Encode, EncodeSize, Error as CodecError, Read, ReadExt, Write,
};
use secnet_types::codec::{read_string, string_size, write_string};
use secnet_types::limits::MAX_PURPOSE;
use secnet_types::{AccessEntry, AccountId, GrantId, Hash, TxHash};
use serde::{Deserialize, Serialize};

/// Format version written as the first byte of every leaf.
pub const LOG_ENTRY_VERSION: u8 = 1;

/// One leaf of the access log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum LogEntry {
    /// An access grant was issued by the contract.
    Grant {
        /// Block height.
        height: u64,
        /// The request transaction (also the grant id).
        tx: TxHash,
        /// The grant id.
        grant: GrantId,
        /// The data.
        data: Hash,
        /// Who may fetch.
        requester: AccountId,
        /// Who serves.
        holder: AccountId,
        /// The stated purpose.
        purpose: String,
        /// Expiry, milliseconds since the Unix epoch.
        expires_at_ms: u64,
    },
    /// The holder recorded a delivery or a refusal.
    Access {
        /// Block height.
        height: u64,
        /// The `RecordAccess` transaction.
        tx: TxHash,
        /// The recording holder.
        holder: AccountId,
        /// What was recorded.
        entry: AccessEntry,
    },
    /// A holder declared emergency access to an owner's data (`BreakGlass`).
    Emergency {
        /// Block height.
        height: u64,
        /// The `BreakGlass` transaction.
        tx: TxHash,
        /// Who read.
        requester: AccountId,
        /// Whose data.
        owner: AccountId,
        /// Why.
        reason: String,
    },
    /// A subscription was paid (`SubscribeData`): the consumer paid the holder the price
    /// (SC1) and the holder passed the owner's part on (SC2).
    Payment {
        /// Block height.
        height: u64,
        /// The `SubscribeData` transaction.
        tx: TxHash,
        /// The listing.
        data: Hash,
        /// Who paid.
        consumer: AccountId,
        /// Who stores the data.
        holder: AccountId,
        /// The holder's part of the price.
        holder_amount: u64,
        /// Who owns the data.
        owner: AccountId,
        /// The owner's part of the price.
        owner_amount: u64,
    },
}

impl LogEntry {
    /// The leaf bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }

    /// Parses leaf bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<LogEntry, CodecError> {
        LogEntry::decode_cfg(Copying(bytes), &())
    }

    /// The height of the block that logged it.
    pub fn height(&self) -> u64 {
        match self {
            LogEntry::Grant { height, .. }
            | LogEntry::Access { height, .. }
            | LogEntry::Emergency { height, .. }
            | LogEntry::Payment { height, .. } => *height,
        }
    }
}

impl Write for LogEntry {
    fn write(&self, buf: &mut impl BufMut) {
        LOG_ENTRY_VERSION.write(buf);
        match self {
            LogEntry::Grant {
                height,
                tx,
                grant,
                data,
                requester,
                holder,
                purpose,
                expires_at_ms,
            } => {
                (0u8, *height, *tx, *grant, *data, *requester, *holder).write(buf);
                write_string(purpose, buf);
                expires_at_ms.write(buf);
            }
            LogEntry::Access {
                height,
                tx,
                holder,
                entry,
            } => {
                (1u8, *height, *tx, *holder).write(buf);
                entry.write(buf);
            }
            LogEntry::Emergency {
                height,
                tx,
                requester,
                owner,
                reason,
            } => {
                (2u8, *height, *tx, *requester, *owner).write(buf);
                write_string(reason, buf);
            }
            LogEntry::Payment {
                height,
                tx,
                data,
                consumer,
                holder,
                holder_amount,
                owner,
                owner_amount,
            } => {
                (3u8, *height, *tx, *data, *consumer, *holder).write(buf);
                (*holder_amount, *owner, *owner_amount).write(buf);
            }
        }
    }
}

impl EncodeSize for LogEntry {
    fn encode_size(&self) -> usize {
        2 + match self {
            LogEntry::Grant { purpose, .. } => 8 + 32 * 5 + string_size(purpose) + 8,
            LogEntry::Access { entry, .. } => 8 + 32 + 32 + entry.encode_size(),
            LogEntry::Emergency { reason, .. } => 8 + 32 * 3 + string_size(reason),
            LogEntry::Payment { .. } => 8 + 32 * 4 + 8 + 32 + 8,
        }
    }
}

impl Read for LogEntry {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let version = u8::read(buf)?;
        if version != LOG_ENTRY_VERSION {
            return Err(CodecError::Invalid("log entry", "unknown format version"));
        }
        match u8::read(buf)? {
            0 => Ok(LogEntry::Grant {
                height: u64::read(buf)?,
                tx: Hash::read(buf)?,
                grant: Hash::read(buf)?,
                data: Hash::read(buf)?,
                requester: AccountId::read(buf)?,
                holder: AccountId::read(buf)?,
                purpose: read_string(buf, "purpose", MAX_PURPOSE)?,
                expires_at_ms: u64::read(buf)?,
            }),
            1 => Ok(LogEntry::Access {
                height: u64::read(buf)?,
                tx: Hash::read(buf)?,
                holder: AccountId::read(buf)?,
                entry: AccessEntry::read(buf)?,
            }),
            2 => Ok(LogEntry::Emergency {
                height: u64::read(buf)?,
                tx: Hash::read(buf)?,
                requester: AccountId::read(buf)?,
                owner: AccountId::read(buf)?,
                reason: read_string(buf, "reason", MAX_PURPOSE)?,
            }),
            3 => Ok(LogEntry::Payment {
                height: u64::read(buf)?,
                tx: Hash::read(buf)?,
                data: Hash::read(buf)?,
                consumer: AccountId::read(buf)?,
                holder: AccountId::read(buf)?,
                holder_amount: u64::read(buf)?,
                owner: AccountId::read(buf)?,
                owner_amount: u64::read(buf)?,
            }),
            tag => Err(CodecError::InvalidEnum(tag)),
        }
    }
}
