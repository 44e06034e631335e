//! Receipts: what happened to each transaction of a block, as typed values.

use crate::account::AccountId;
use crate::codec::{read_string, read_vec_bounded, string_size, write_string};
use crate::hash::Hash;
use crate::limits::{MAX_ACCESS_ENTRIES, MAX_ADDRESS, MAX_CHAIN_ID};
use crate::tx::{GrantId, TxHash};
use bytes::BufMut;
use commonware_codec::{Buf, EncodeSize, Error as CodecError, FixedSize, Read, ReadExt, Write};
use serde::{Deserialize, Serialize};

/// Why the contract refused a transaction. A rejected transaction changes nothing but the
/// sender's nonce (and not even that when the signature, chain or nonce is wrong).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Rejection {
    /// The signature is not the sender's over this transaction.
    #[error("signature does not verify for sender")]
    BadSignature,
    /// The transaction names another network.
    #[error("transaction is for chain {got:?}, this is chain {expected:?}")]
    WrongChain {
        /// This network.
        expected: String,
        /// The transaction's chain id.
        got: String,
    },
    /// The nonce is not the sender's next one (a replay or a gap).
    #[error("nonce {got} is not the sender's next nonce {expected}")]
    BadNonce {
        /// The next nonce the ledger accepts.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The sender cannot pay.
    #[error("balance {available} is below the {needed} required")]
    InsufficientBalance {
        /// Amount required.
        needed: u64,
        /// Sender's balance.
        available: u64,
    },
    /// No listing has this hash.
    #[error("no data is registered with hash {hash}")]
    UnknownData {
        /// The hash asked for.
        hash: Hash,
    },
    /// No listing has this address.
    #[error("no data is registered at address {address:?}")]
    UnknownAddress {
        /// The address asked for.
        address: String,
    },
    /// A listing with this hash exists.
    #[error("data with hash {hash} is already registered")]
    AlreadyRegistered {
        /// The duplicate hash.
        hash: Hash,
    },
    /// A listing with this address exists.
    #[error("address {address:?} is already registered")]
    AddressTaken {
        /// The duplicate address.
        address: String,
    },
    /// Only the owner may do this.
    #[error("only the owner of {hash} may withdraw it")]
    NotOwner {
        /// The listing.
        hash: Hash,
    },
    /// The sender has not subscribed to this listing.
    #[error("sender has not subscribed to {hash}")]
    NotSubscribed {
        /// The listing.
        hash: Hash,
    },
    /// The sender already holds a subscription; nothing is charged again.
    #[error("sender is already subscribed to {hash}")]
    AlreadySubscribed {
        /// The listing.
        hash: Hash,
    },
    /// A field is empty where a value is required.
    #[error("field {field} must not be empty")]
    EmptyField {
        /// The field's name.
        field: String,
    },
    /// The holder's share is above 100%.
    #[error("holder share {bps} basis points is above 10000")]
    InvalidShare {
        /// The share given.
        bps: u16,
    },
    /// No grant has this id.
    #[error("no access grant {grant}")]
    UnknownGrant {
        /// The id given.
        grant: GrantId,
    },
    /// Only the data's holder may record its accesses.
    #[error("sender is not the holder of {hash}")]
    NotHolder {
        /// The listing.
        hash: Hash,
    },
    /// The grant does not match the recorded entry.
    #[error("grant {grant} is not for this data and requester")]
    GrantMismatch {
        /// The grant.
        grant: GrantId,
    },
    /// A grant lifetime outside 1..=max seconds.
    #[error("grant lifetime {ttl_secs}s is outside 1..={max}s")]
    TtlOutOfRange {
        /// The lifetime asked for.
        ttl_secs: u32,
        /// The longest allowed.
        max: u32,
    },
    /// A detector score above 1,000,000 parts per million.
    #[error("detector score {score_ppm} is above 1000000 ppm")]
    ScoreOutOfRange {
        /// The score given.
        score_ppm: u32,
    },
    /// An amount would overflow.
    #[error("amount overflows")]
    Overflow,
    /// A field is longer than its limit.
    #[error("field {field} is longer than {max} bytes")]
    FieldTooLong {
        /// The field's name.
        field: String,
        /// Its limit in bytes.
        max: u32,
    },
}

/// Something a successful transaction did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// Value moved between accounts.
    Transfer {
        /// Payer.
        from: AccountId,
        /// Payee.
        to: AccountId,
        /// Amount.
        amount: u64,
    },
    /// A subscription was paid: consumer → holder (SC1) → owner (SC2).
    Payment {
        /// The listing.
        data: Hash,
        /// Who paid.
        consumer: AccountId,
        /// Who stores the data.
        holder: AccountId,
        /// The holder's part.
        holder_amount: u64,
        /// Who owns the data.
        owner: AccountId,
        /// The owner's part.
        owner_amount: u64,
    },
    /// A listing was created.
    Registered {
        /// Its hash.
        data: Hash,
    },
    /// A listing was removed.
    Withdrawn {
        /// Its hash.
        data: Hash,
    },
    /// An access grant was written.
    GrantIssued {
        /// The grant id.
        grant: GrantId,
        /// The data.
        data: Hash,
        /// Where the holder serves it.
        address: String,
        /// When the grant expires, milliseconds since the Unix epoch.
        expires_at_ms: u64,
    },
    /// Entries were appended to the access log.
    Logged {
        /// Index of the first appended leaf.
        first_index: u64,
        /// Number of leaves appended.
        count: u32,
    },
    /// An encryption key was published.
    EncryptionKeySet,
}

/// The outcome of one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Outcome {
    /// Applied, with what it did.
    Applied {
        /// The effects.
        events: Vec<Event>,
    },
    /// Refused; the state is unchanged beyond the nonce.
    Rejected {
        /// Why.
        rejection: Rejection,
    },
}

/// The receipt of one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The transaction.
    pub tx: TxHash,
    /// What happened.
    pub outcome: Outcome,
}

impl Receipt {
    /// The canonical encoding (what a receipts root is over).
    pub fn to_bytes(&self) -> Vec<u8> {
        commonware_codec::Encode::encode(self).to_vec()
    }

    /// Decodes a receipt from untrusted bytes, enforcing every bound.
    pub fn decode_bytes(bytes: &[u8]) -> Result<Receipt, crate::DecodeError> {
        if bytes.len() > crate::limits::MAX_TX_BYTES {
            return Err(crate::DecodeError::TooLarge {
                len: bytes.len(),
                max: crate::limits::MAX_TX_BYTES,
            });
        }
        <Receipt as commonware_codec::DecodeExt<()>>::decode(commonware_codec::Copying(bytes))
            .map_err(crate::DecodeError::from)
    }

    /// Whether the transaction was applied.
    pub fn is_applied(&self) -> bool {
        matches!(self.outcome, Outcome::Applied { .. })
    }

    /// The rejection, if any.
    pub fn rejection(&self) -> Option<&Rejection> {
        match &self.outcome {
            Outcome::Rejected { rejection } => Some(rejection),
            Outcome::Applied { .. } => None,
        }
    }

    /// The grant the transaction issued, and when it expires, if it issued one.
    pub fn issued_grant(&self) -> Option<(GrantId, u64)> {
        match &self.outcome {
            Outcome::Applied { events } => Event::issued_grant(events),
            Outcome::Rejected { .. } => None,
        }
    }
}

impl Event {
    /// The grant `events` issued, and when it expires (a request issues one at most).
    pub fn issued_grant(events: &[Event]) -> Option<(GrantId, u64)> {
        events.iter().find_map(|e| match e {
            Event::GrantIssued {
                grant,
                expires_at_ms,
                ..
            } => Some((*grant, *expires_at_ms)),
            _ => None,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Canonical encoding (receipts are stored with their block).

const MAX_FIELD_NAME: usize = 32;

impl Write for Rejection {
    fn write(&self, buf: &mut impl BufMut) {
        use Rejection::*;
        match self {
            BadSignature => 0u8.write(buf),
            WrongChain { expected, got } => {
                1u8.write(buf);
                write_string(expected, buf);
                write_string(got, buf);
            }
            BadNonce { expected, got } => {
                2u8.write(buf);
                expected.write(buf);
                got.write(buf);
            }
            InsufficientBalance { needed, available } => {
                3u8.write(buf);
                needed.write(buf);
                available.write(buf);
            }
            UnknownData { hash } => (4u8, *hash).write(buf),
            UnknownAddress { address } => {
                5u8.write(buf);
                write_string(address, buf);
            }
            AlreadyRegistered { hash } => (6u8, *hash).write(buf),
            AddressTaken { address } => {
                7u8.write(buf);
                write_string(address, buf);
            }
            NotOwner { hash } => (8u8, *hash).write(buf),
            NotSubscribed { hash } => (9u8, *hash).write(buf),
            AlreadySubscribed { hash } => (10u8, *hash).write(buf),
            EmptyField { field } => {
                11u8.write(buf);
                write_string(field, buf);
            }
            InvalidShare { bps } => (12u8, *bps).write(buf),
            UnknownGrant { grant } => (13u8, *grant).write(buf),
            NotHolder { hash } => (14u8, *hash).write(buf),
            GrantMismatch { grant } => (15u8, *grant).write(buf),
            TtlOutOfRange { ttl_secs, max } => (16u8, *ttl_secs, *max).write(buf),
            ScoreOutOfRange { score_ppm } => (17u8, *score_ppm).write(buf),
            Overflow => 18u8.write(buf),
            FieldTooLong { field, max } => {
                19u8.write(buf);
                write_string(field, buf);
                max.write(buf);
            }
        }
    }
}

impl EncodeSize for Rejection {
    fn encode_size(&self) -> usize {
        use Rejection::*;
        1 + match self {
            BadSignature | Overflow => 0,
            WrongChain { expected, got } => string_size(expected) + string_size(got),
            BadNonce { .. } | InsufficientBalance { .. } => 16,
            UnknownData { .. }
            | AlreadyRegistered { .. }
            | NotOwner { .. }
            | NotSubscribed { .. }
            | AlreadySubscribed { .. }
            | UnknownGrant { .. }
            | NotHolder { .. }
            | GrantMismatch { .. } => Hash::SIZE,
            UnknownAddress { address } | AddressTaken { address } => string_size(address),
            EmptyField { field } => string_size(field),
            FieldTooLong { field, .. } => string_size(field) + 4,
            InvalidShare { .. } => 2,
            TtlOutOfRange { .. } => 8,
            ScoreOutOfRange { .. } => 4,
        }
    }
}

impl Read for Rejection {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        use Rejection::*;
        Ok(match u8::read(buf)? {
            0 => BadSignature,
            1 => WrongChain {
                expected: read_string(buf, "expected", MAX_CHAIN_ID)?,
                got: read_string(buf, "got", MAX_CHAIN_ID)?,
            },
            2 => BadNonce {
                expected: u64::read(buf)?,
                got: u64::read(buf)?,
            },
            3 => InsufficientBalance {
                needed: u64::read(buf)?,
                available: u64::read(buf)?,
            },
            4 => UnknownData {
                hash: Hash::read(buf)?,
            },
            5 => UnknownAddress {
                address: read_string(buf, "address", MAX_ADDRESS)?,
            },
            6 => AlreadyRegistered {
                hash: Hash::read(buf)?,
            },
            7 => AddressTaken {
                address: read_string(buf, "address", MAX_ADDRESS)?,
            },
            8 => NotOwner {
                hash: Hash::read(buf)?,
            },
            9 => NotSubscribed {
                hash: Hash::read(buf)?,
            },
            10 => AlreadySubscribed {
                hash: Hash::read(buf)?,
            },
            11 => EmptyField {
                field: read_string(buf, "field", MAX_FIELD_NAME)?,
            },
            12 => InvalidShare {
                bps: u16::read(buf)?,
            },
            13 => UnknownGrant {
                grant: Hash::read(buf)?,
            },
            14 => NotHolder {
                hash: Hash::read(buf)?,
            },
            15 => GrantMismatch {
                grant: Hash::read(buf)?,
            },
            16 => TtlOutOfRange {
                ttl_secs: u32::read(buf)?,
                max: u32::read(buf)?,
            },
            17 => ScoreOutOfRange {
                score_ppm: u32::read(buf)?,
            },
            18 => Overflow,
            19 => FieldTooLong {
                field: read_string(buf, "field", MAX_FIELD_NAME)?,
                max: u32::read(buf)?,
            },
            tag => return Err(CodecError::InvalidEnum(tag)),
        })
    }
}

impl Write for Event {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            Event::Transfer { from, to, amount } => (0u8, *from, *to, *amount).write(buf),
            Event::Payment {
                data,
                consumer,
                holder,
                holder_amount,
                owner,
                owner_amount,
            } => {
                (1u8, *data, *consumer, *holder, *holder_amount).write(buf);
                (*owner, *owner_amount).write(buf);
            }
            Event::Registered { data } => (2u8, *data).write(buf),
            Event::Withdrawn { data } => (3u8, *data).write(buf),
            Event::GrantIssued {
                grant,
                data,
                address,
                expires_at_ms,
            } => {
                (4u8, *grant, *data).write(buf);
                write_string(address, buf);
                expires_at_ms.write(buf);
            }
            Event::Logged { first_index, count } => (5u8, *first_index, *count).write(buf),
            Event::EncryptionKeySet => 6u8.write(buf),
        }
    }
}

impl EncodeSize for Event {
    fn encode_size(&self) -> usize {
        1 + match self {
            Event::Transfer { .. } => 32 + 32 + 8,
            Event::Payment { .. } => 32 + 32 + 32 + 8 + 32 + 8,
            Event::Registered { .. } | Event::Withdrawn { .. } => 32,
            Event::GrantIssued { address, .. } => 32 + 32 + string_size(address) + 8,
            Event::Logged { .. } => 8 + 4,
            Event::EncryptionKeySet => 0,
        }
    }
}

impl Read for Event {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(match u8::read(buf)? {
            0 => Event::Transfer {
                from: AccountId::read(buf)?,
                to: AccountId::read(buf)?,
                amount: u64::read(buf)?,
            },
            1 => Event::Payment {
                data: Hash::read(buf)?,
                consumer: AccountId::read(buf)?,
                holder: AccountId::read(buf)?,
                holder_amount: u64::read(buf)?,
                owner: AccountId::read(buf)?,
                owner_amount: u64::read(buf)?,
            },
            2 => Event::Registered {
                data: Hash::read(buf)?,
            },
            3 => Event::Withdrawn {
                data: Hash::read(buf)?,
            },
            4 => Event::GrantIssued {
                grant: Hash::read(buf)?,
                data: Hash::read(buf)?,
                address: read_string(buf, "address", MAX_ADDRESS)?,
                expires_at_ms: u64::read(buf)?,
            },
            5 => Event::Logged {
                first_index: u64::read(buf)?,
                count: u32::read(buf)?,
            },
            6 => Event::EncryptionKeySet,
            tag => return Err(CodecError::InvalidEnum(tag)),
        })
    }
}

/// Most events one transaction emits.
const MAX_EVENTS: usize = MAX_ACCESS_ENTRIES + 4;

impl Write for Receipt {
    fn write(&self, buf: &mut impl BufMut) {
        self.tx.write(buf);
        match &self.outcome {
            Outcome::Applied { events } => {
                0u8.write(buf);
                events.write(buf);
            }
            Outcome::Rejected { rejection } => {
                1u8.write(buf);
                rejection.write(buf);
            }
        }
    }
}

impl EncodeSize for Receipt {
    fn encode_size(&self) -> usize {
        Hash::SIZE
            + 1
            + match &self.outcome {
                Outcome::Applied { events } => events.encode_size(),
                Outcome::Rejected { rejection } => rejection.encode_size(),
            }
    }
}

impl Read for Receipt {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let tx = Hash::read(buf)?;
        let outcome = match u8::read(buf)? {
            0 => Outcome::Applied {
                events: read_vec_bounded(buf, "events", MAX_EVENTS)?,
            },
            1 => Outcome::Rejected {
                rejection: Rejection::read(buf)?,
            },
            tag => return Err(CodecError::InvalidEnum(tag)),
        };
        Ok(Receipt { tx, outcome })
    }
}
