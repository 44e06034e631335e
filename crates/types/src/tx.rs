//! Transactions: what an account asks the ledger to do, in a canonical, bounded encoding.
//!
//! The bytes that are signed are exactly the transaction's encoding; the signature covers the
//! chain id and the nonce, so a transaction cannot be replayed on another network or twice.

use crate::account::{AccountId, EncryptionKey, Keypair, Signature};
use crate::codec::{read_string, read_vec_bounded, write_string};
use crate::hash::Hash;
use crate::limits::*;
use bytes::BufMut;
use commonware_codec::{
    Buf, Copying, DecodeExt, Encode, EncodeSize, Error as CodecError, FixedSize, Read, ReadExt,
    Write,
};
use serde::{Deserialize, Serialize};

/// The namespace under which transactions are signed.
pub const TX_NAMESPACE: &[u8] = b"secnet/tx/v1";

/// Identifies a network; a transaction for another network is rejected.
pub type ChainId = String;

/// Identifies a transaction: SHA-256 of its unsigned encoding.
pub type TxHash = Hash;

/// Identifies an access grant: the hash of the request transaction that created it.
pub type GrantId = Hash;

/// What kind of thing a listing offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum DataKind {
    /// Data about a person or an organisation (e.g. a medical record).
    UserData,
    /// A security rule or a trained detector, with the category it protects against.
    SecurityRule {
        /// The category name, e.g. `dos`.
        category: String,
    },
}

/// `RegisterData`: announce data for sharing (Algorithm 1), naming who stores and serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterData {
    /// Hash of the content, as the consumer will check it.
    pub hash: Hash,
    /// What the data is, for consumers browsing the ledger.
    pub description: String,
    /// Where the holder serves it.
    pub address: String,
    /// What one subscription costs.
    pub price: u64,
    /// User data or a security rule.
    pub kind: DataKind,
    /// The account of the node that stores and serves the data.
    pub holder: AccountId,
    /// The holder's share of each payment, in basis points of the price.
    pub holder_share_bps: u16,
}

/// Why a holder refused to serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum RefusalReason {
    /// The requester holds no subscription.
    NotSubscribed = 1,
    /// The requester holds no grant for this data.
    NoGrant = 2,
    /// The grant or the token has expired.
    Expired = 3,
    /// The token was issued to another key.
    WrongKey = 4,
    /// The request's signature is invalid.
    BadSignature = 5,
    /// The request was already served once.
    Replay = 6,
    /// The owner's policy denies it.
    PolicyDenied = 7,
    /// The request detector judged it malicious.
    DetectorFlagged = 8,
    /// The data was withdrawn.
    Withdrawn = 9,
    /// The stored content no longer matches the registered hash.
    IntegrityFailure = 10,
}

impl RefusalReason {
    fn from_u8(v: u8) -> Option<RefusalReason> {
        use RefusalReason::*;
        Some(match v {
            1 => NotSubscribed,
            2 => NoGrant,
            3 => Expired,
            4 => WrongKey,
            5 => BadSignature,
            6 => Replay,
            7 => PolicyDenied,
            8 => DetectorFlagged,
            9 => Withdrawn,
            10 => IntegrityFailure,
            _ => return None,
        })
    }
}

/// The outcome of one access attempt, as the holder records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision", content = "reason")]
pub enum AccessDecision {
    /// The data was served.
    Delivered,
    /// The request was refused, for this reason.
    Refused(RefusalReason),
}

/// One access attempt recorded by the holder (`RecordAccess`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// The data that was asked for.
    pub data: Hash,
    /// The grant presented, if any.
    pub grant: Option<GrantId>,
    /// Who asked.
    pub requester: AccountId,
    /// What the holder decided.
    pub decision: AccessDecision,
    /// The request detector's score, parts per million.
    pub score_ppm: u32,
    /// When the holder decided, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// The operation a transaction performs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "call")]
pub enum Call {
    /// Move `amount` from the sender to `to`.
    Transfer {
        /// Recipient.
        to: AccountId,
        /// Amount moved.
        amount: u64,
    },
    /// Publish the X25519 key that data keys are sealed to.
    SetEncryptionKey {
        /// The X25519 public key.
        key: EncryptionKey,
    },
    /// Announce data for sharing.
    RegisterData(RegisterData),
    /// Remove a listing (owner only).
    WithdrawData {
        /// The listed content hash.
        hash: Hash,
    },
    /// Pay the price of a listing and become its subscriber.
    SubscribeData {
        /// The listed content hash.
        hash: Hash,
    },
    /// Ask for a time-limited access grant, naming the data by its address.
    RequestDataWithAddress {
        /// The listed address.
        address: String,
        /// Why the data is wanted (recorded with the grant).
        purpose: String,
        /// How long the grant should last, in seconds.
        ttl_secs: u32,
    },
    /// Ask for a time-limited access grant, naming the data by its hash.
    RequestDataWithHash {
        /// The listed content hash.
        hash: Hash,
        /// Why the data is wanted (recorded with the grant).
        purpose: String,
        /// How long the grant should last, in seconds.
        ttl_secs: u32,
    },
    /// The holder records deliveries and refusals.
    RecordAccess {
        /// The recorded attempts.
        entries: Vec<AccessEntry>,
    },
    /// Emergency ("break-glass") access: the sender, a holder of `owner`'s data, declares
    /// that its staff read that data without the owner's consent, and why. It grants nothing:
    /// it puts the access and its reason in the access log, where the owner sees it.
    BreakGlass {
        /// Whose data.
        owner: AccountId,
        /// Why (who, what emergency).
        reason: String,
    },
}

/// An unsigned transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The network this transaction is for.
    pub chain_id: ChainId,
    /// Who signs and pays.
    pub sender: AccountId,
    /// The sender's next nonce: transactions of one sender execute in nonce order, once.
    pub nonce: u64,
    /// What to do.
    pub call: Call,
}

impl Transaction {
    /// The canonical bytes: what is signed and what the hash covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }

    /// The transaction hash.
    pub fn hash(&self) -> TxHash {
        Hash::digest(&self.encode())
    }

    /// Signs with `key`, whose account must be the sender.
    pub fn sign(self, key: &Keypair) -> SignedTransaction {
        let signature = key.sign(TX_NAMESPACE, &self.encode());
        SignedTransaction::new(self, signature)
    }
}

/// A transaction with the sender's signature.
///
/// Immutable once built: the canonical bytes and the hash are computed once and cached, the
/// [`Self::signed_id`] when first asked for.
#[derive(Clone, Serialize)]
pub struct SignedTransaction {
    tx: Transaction,
    signature: Signature,
    #[serde(skip)]
    hash: TxHash,
    #[serde(skip)]
    signing_bytes: Vec<u8>,
    #[serde(skip)]
    signed_id: std::sync::OnceLock<Hash>,
}

/// Equal when the transaction and the signature are: the rest is derived from them (and
/// whether the signed id was asked for yet must not matter).
impl PartialEq for SignedTransaction {
    fn eq(&self, other: &Self) -> bool {
        self.signing_bytes == other.signing_bytes && self.signature == other.signature
    }
}

impl Eq for SignedTransaction {}

/// The transaction, the signature and the hash (not whether the signed id was computed yet).
impl std::fmt::Debug for SignedTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedTransaction")
            .field("tx", &self.tx)
            .field("signature", &self.signature)
            .field("hash", &self.hash)
            .finish()
    }
}

impl<'de> Deserialize<'de> for SignedTransaction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            tx: Transaction,
            signature: Signature,
        }
        let wire = Wire::deserialize(d)?;
        Ok(SignedTransaction::new(wire.tx, wire.signature))
    }
}

impl SignedTransaction {
    /// Joins a transaction and a signature (not checked here: see [`Self::verify_signature`]).
    pub fn new(tx: Transaction, signature: Signature) -> SignedTransaction {
        let signing_bytes = tx.encode().to_vec();
        SignedTransaction {
            hash: Hash::digest(&signing_bytes),
            signing_bytes,
            tx,
            signature,
            signed_id: std::sync::OnceLock::new(),
        }
    }

    /// The transaction.
    pub fn tx(&self) -> &Transaction {
        &self.tx
    }

    /// The sender's signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// The transaction hash.
    pub fn hash(&self) -> TxHash {
        self.hash
    }

    /// The bytes the signature covers.
    pub fn signing_bytes(&self) -> &[u8] {
        &self.signing_bytes
    }

    /// Identifies this exact signed transaction (hash and signature), e.g. to remember that
    /// its signature was already checked.
    pub fn signed_id(&self) -> Hash {
        *self
            .signed_id
            .get_or_init(|| Hash::digest_parts(&[self.hash.as_bytes(), &self.signature.0]))
    }

    /// Whether the signature is the sender's over this transaction.
    pub fn verify_signature(&self) -> bool {
        self.signature
            .verify(&self.tx.sender, TX_NAMESPACE, &self.signing_bytes)
    }

    /// Decodes a signed transaction from untrusted bytes, enforcing every bound.
    pub fn decode_bytes(bytes: &[u8]) -> Result<SignedTransaction, DecodeError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_TX_BYTES,
            });
        }
        SignedTransaction::decode(Copying(bytes)).map_err(DecodeError::from)
    }

    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }
}

/// Checks the signatures of `txs`, one flag per transaction.
///
/// All signatures are first checked together as one batch; a batch that fails is halved
/// (see [`halve`]). The ed25519 rules used (ZIP-215) make batch and single verification
/// agree, so every node reaches the same flags.
pub fn verify_signatures(txs: &[SignedTransaction]) -> Vec<bool> {
    verify_signatures_except(txs, |_| false)
}

/// Like [`verify_signatures`], but trusts the transactions for which `already_verified` is
/// true (the caller checked those signatures before, e.g. at mempool admission).
pub fn verify_signatures_except(
    txs: &[SignedTransaction],
    already_verified: impl Fn(&SignedTransaction) -> bool,
) -> Vec<bool> {
    // The trusted ones pass; the others are checked in place, by index, uncopied.
    let mut flags: Vec<bool> = txs.iter().map(&already_verified).collect();
    let parsed = parse_where(txs, |i| flags.get(i) == Some(&false));
    verify_parsed(txs, &parsed, &mut flags);
    flags
}

/// Most senders' decompressed verification keys remembered; beyond it the memory is cleared.
const MAX_REMEMBERED_KEYS: usize = 1 << 16;

/// Senders' verification keys, decompressed once: decompressing a key costs about as much
/// as a quarter of a signature check, and the same senders sign again and again.
static KEYS: std::sync::LazyLock<
    std::sync::Mutex<
        std::collections::HashMap<AccountId, commonware_cryptography::ed25519::PublicKey>,
    >,
> = std::sync::LazyLock::new(Default::default);

/// The verification keys of `txs`' senders (`None` for one that is not a curve point):
/// remembered ones copied out under the lock, the others decompressed without it.
fn sender_keys(
    txs: &[&SignedTransaction],
) -> Vec<Option<commonware_cryptography::ed25519::PublicKey>> {
    let mut keys: Vec<Option<commonware_cryptography::ed25519::PublicKey>> = match KEYS.lock() {
        Ok(known) => txs
            .iter()
            .map(|t| known.get(&t.tx.sender).cloned())
            .collect(),
        Err(_) => vec![None; txs.len()],
    };
    for (key, t) in keys.iter_mut().zip(txs.iter().copied()) {
        if key.is_none() {
            *key = t.tx.sender.verification_key();
        }
    }
    keys
}

/// Remembers the keys of senders whose signatures just verified (never those of forged
/// transactions, so that they cannot flush the memory for free).
fn remember_keys<'a>(
    verified: impl Iterator<Item = (AccountId, &'a commonware_cryptography::ed25519::PublicKey)>,
) {
    let Ok(mut known) = KEYS.lock() else {
        return;
    };
    if known.len() > MAX_REMEMBERED_KEYS {
        known.clear();
    }
    for (sender, key) in verified {
        known.entry(sender).or_insert_with(|| key.clone());
    }
}

/// A transaction's index in the batch, with its sender's key and its signature parsed.
type Parsed = (
    usize,
    commonware_cryptography::ed25519::PublicKey,
    commonware_cryptography::ed25519::Signature,
);

/// Below this many signatures, a failed batch is checked one signature at a time.
const CHECK_SINGLY_BELOW: usize = 4;

/// Like [`verify_signatures`], for transactions that came in `parts` (their lengths, in
/// order) from different sources, say relayed by different peers: all are checked as one
/// batch, which costs less per signature than smaller ones; if that fails, each part is
/// checked on its own, within its own budget, so that the search for the forged signatures
/// stays within the parts that hold them: the others pay one more batch check (parts of
/// fewer than [`CHECK_SINGLY_BELOW`] are checked singly). Transactions past the parts'
/// lengths make one more part.
pub fn verify_signatures_in_parts(txs: &[SignedTransaction], parts: &[usize]) -> Vec<bool> {
    let parsed = parse(txs);
    let mut flags = vec![false; txs.len()];
    if parts.len() > 1 && parsed.len() == txs.len() && batch_passes(txs, &parsed) {
        flags.fill(true);
        return flags;
    }
    let mut ends: Vec<usize> = parts
        .iter()
        .scan(0usize, |end, len| {
            *end = end.saturating_add(*len).min(txs.len());
            Some(*end)
        })
        .collect();
    if ends.last() != Some(&txs.len()) {
        ends.push(txs.len());
    }
    let mut rest = parsed.as_slice();
    for end in ends {
        let (part, after) = rest.split_at(rest.partition_point(|(i, _, _)| *i < end));
        verify_parsed(txs, part, &mut flags);
        rest = after;
    }
    flags
}

/// The transactions whose sender is a curve point and whose signature parses, parsed, in
/// order (the others fail alone).
fn parse(txs: &[SignedTransaction]) -> Vec<Parsed> {
    parse_where(txs, |_| true)
}

/// [`parse`], of the transactions whose index is `wanted`.
fn parse_where(txs: &[SignedTransaction], wanted: impl Fn(usize) -> bool) -> Vec<Parsed> {
    let (indices, chosen): (Vec<usize>, Vec<&SignedTransaction>) =
        txs.iter().enumerate().filter(|(i, _)| wanted(*i)).unzip();
    indices
        .into_iter()
        .zip(&chosen)
        .zip(sender_keys(&chosen))
        .filter_map(|((i, t), key)| Some((i, key?, t.signature.to_commonware()?)))
        .collect()
}

/// Verifies `items` of `txs`, marking them in `flags`: as one batch, halved where it fails
/// ([`halve`], within [`halving_budget`]).
fn verify_parsed(txs: &[SignedTransaction], items: &[Parsed], flags: &mut [bool]) {
    let mut budget = halving_budget(items.len());
    halve(
        items,
        &mut budget,
        &mut |batch| batch_passes(txs, batch),
        &mut |(i, _, _)| {
            #[cfg(test)]
            SINGLE_CHECKS.with(|c| c.borrow_mut().push(*i));
            txs.get(*i).is_some_and(SignedTransaction::verify_signature)
        },
        &mut |(i, _, _), ok| {
            if let Some(f) = flags.get_mut(*i) {
                *f = ok;
            }
        },
    );
}

/// Signatures that batches may cover in all while halving `n`: what one forged signature
/// among them takes wherever it is. That is the batches down to it, about 2n, the halves
/// beside them, about n, and, where halves are odd, at most a little more per level. So one
/// forgery costs about three batch checks of `n`, and no single check but the last few.
fn halving_budget(n: usize) -> usize {
    3 * n + 2 * (usize::BITS - n.leading_zeros()) as usize
}

/// Finds which `items` pass, marking each with `mark`: checks them as one batch (`batch`)
/// and halves a batch that fails, each half checked the same way, so that k forged
/// signatures among n cost about 2k·log2(n/k) batches rather than n single checks (an
/// attacker slipping one forgery into a block must not multiply everyone's verification
/// cost). Batches may cover at most `budget` items in all; batches under
/// [`CHECK_SINGLY_BELOW`], and what is left once the budget is spent, are checked one at a
/// time (`single`). With several forgeries placed to spend the budget, the worst case is the
/// budget in batches plus every item singly, about 5.5 times a batch check of all (a single
/// check costs about two and a half times a signature's share of a batch).
fn halve<T>(
    items: &[T],
    budget: &mut usize,
    batch: &mut impl FnMut(&[T]) -> bool,
    single: &mut impl FnMut(&T) -> bool,
    mark: &mut impl FnMut(&T, bool),
) {
    if items.len() < CHECK_SINGLY_BELOW || items.len() > *budget {
        for item in items {
            let ok = single(item);
            mark(item, ok);
        }
        return;
    }
    *budget -= items.len();
    if batch(items) {
        for item in items {
            mark(item, true);
        }
        return;
    }
    let (left, right) = items.split_at(items.len() / 2);
    halve(left, budget, batch, single, mark);
    halve(right, budget, batch, single, mark);
}

#[cfg(test)]
thread_local! {
    /// The transactions (by index) this thread checked one at a time.
    static SINGLE_CHECKS: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Signatures this thread's batch checks covered.
    static BATCHED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Whether `items` of `txs` verify as one batch; if they do, their senders' keys are
/// remembered.
fn batch_passes(txs: &[SignedTransaction], items: &[Parsed]) -> bool {
    use commonware_cryptography::{BatchEntry, BatchVerifier as _, ed25519};
    #[cfg(test)]
    BATCHED.with(|c| c.set(c.get() + items.len()));
    let ok = ed25519::PublicKey::verify_batch(
        &mut rand::rng(),
        items,
        |_, (i, public_key, signature)| BatchEntry {
            namespace: TX_NAMESPACE,
            message: txs
                .get(*i)
                .map_or_else(|| keys_missing(), |t| t.signing_bytes.as_slice()),
            public_key,
            signature,
        },
        &commonware_parallel::Sequential,
    );
    if ok {
        remember_keys(
            items
                .iter()
                .filter_map(|(i, key, _)| Some((txs.get(*i)?.tx.sender, key))),
        );
    }
    ok
}

#[cold]
fn keys_missing() -> ! {
    #[expect(
        clippy::panic,
        reason = "every parsed item holds the index of a transaction of the batch"
    )]
    {
        panic!("batch projection index out of range")
    }
}

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Input longer than the bound for its kind.
    #[error("input is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// Length received.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Input that does not follow the encoding.
    #[error("malformed input: {0}")]
    Malformed(String),
}

impl From<CodecError> for DecodeError {
    fn from(e: CodecError) -> Self {
        DecodeError::Malformed(match e {
            CodecError::Invalid(field, msg) => format!("{field}: {msg}"),
            CodecError::EndOfBuffer => "input ends early".to_string(),
            CodecError::ExtraData(n) => format!("{n} unexpected bytes after the end"),
            CodecError::InvalidEnum(tag) => format!("unknown variant tag {tag}"),
            other => other.to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Canonical encoding. Tags are stable: changing one breaks the golden fixtures on purpose.

impl Write for DataKind {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            DataKind::UserData => 0u8.write(buf),
            DataKind::SecurityRule { category } => {
                1u8.write(buf);
                write_string(category, buf);
            }
        }
    }
}

impl EncodeSize for DataKind {
    fn encode_size(&self) -> usize {
        match self {
            DataKind::UserData => 1,
            DataKind::SecurityRule { category } => 1 + category.as_bytes().to_vec().encode_size(),
        }
    }
}

impl Read for DataKind {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        match u8::read(buf)? {
            0 => Ok(DataKind::UserData),
            1 => Ok(DataKind::SecurityRule {
                category: read_string(buf, "category", MAX_CATEGORY)?,
            }),
            tag => Err(CodecError::InvalidEnum(tag)),
        }
    }
}

impl Write for RegisterData {
    fn write(&self, buf: &mut impl BufMut) {
        self.hash.write(buf);
        write_string(&self.description, buf);
        write_string(&self.address, buf);
        self.price.write(buf);
        self.kind.write(buf);
        self.holder.write(buf);
        self.holder_share_bps.write(buf);
    }
}

impl EncodeSize for RegisterData {
    fn encode_size(&self) -> usize {
        Hash::SIZE
            + crate::codec::string_size(&self.description)
            + crate::codec::string_size(&self.address)
            + u64::SIZE
            + self.kind.encode_size()
            + AccountId::SIZE
            + u16::SIZE
    }
}

impl Read for RegisterData {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(RegisterData {
            hash: Hash::read(buf)?,
            description: read_string(buf, "description", MAX_DESCRIPTION)?,
            address: read_string(buf, "address", MAX_ADDRESS)?,
            price: u64::read(buf)?,
            kind: DataKind::read(buf)?,
            holder: AccountId::read(buf)?,
            holder_share_bps: u16::read(buf)?,
        })
    }
}

impl Write for AccessDecision {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            AccessDecision::Delivered => 0u8.write(buf),
            AccessDecision::Refused(reason) => (*reason as u8).write(buf),
        }
    }
}

impl FixedSize for AccessDecision {
    const SIZE: usize = 1;
}

impl Read for AccessDecision {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        match u8::read(buf)? {
            0 => Ok(AccessDecision::Delivered),
            tag => RefusalReason::from_u8(tag)
                .map(AccessDecision::Refused)
                .ok_or(CodecError::InvalidEnum(tag)),
        }
    }
}

impl Write for AccessEntry {
    fn write(&self, buf: &mut impl BufMut) {
        self.data.write(buf);
        self.grant.write(buf);
        self.requester.write(buf);
        self.decision.write(buf);
        self.score_ppm.write(buf);
        self.at_ms.write(buf);
    }
}

impl EncodeSize for AccessEntry {
    fn encode_size(&self) -> usize {
        Hash::SIZE
            + self.grant.encode_size()
            + AccountId::SIZE
            + AccessDecision::SIZE
            + u32::SIZE
            + u64::SIZE
    }
}

impl AccessEntry {
    /// The canonical encoding (as in a `RecordAccess` transaction).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }

    /// Decodes an entry, refusing trailing bytes.
    pub fn decode_bytes(bytes: &[u8]) -> Result<AccessEntry, DecodeError> {
        AccessEntry::decode(Copying(bytes)).map_err(DecodeError::from)
    }
}

impl Read for AccessEntry {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(AccessEntry {
            data: Hash::read(buf)?,
            grant: Option::<Hash>::read(buf)?,
            requester: AccountId::read(buf)?,
            decision: AccessDecision::read(buf)?,
            score_ppm: u32::read(buf)?,
            at_ms: u64::read(buf)?,
        })
    }
}

impl Write for Call {
    fn write(&self, buf: &mut impl BufMut) {
        match self {
            Call::Transfer { to, amount } => {
                0u8.write(buf);
                to.write(buf);
                amount.write(buf);
            }
            Call::SetEncryptionKey { key } => {
                1u8.write(buf);
                key.write(buf);
            }
            Call::RegisterData(r) => {
                2u8.write(buf);
                r.write(buf);
            }
            Call::WithdrawData { hash } => {
                3u8.write(buf);
                hash.write(buf);
            }
            Call::SubscribeData { hash } => {
                4u8.write(buf);
                hash.write(buf);
            }
            Call::RequestDataWithAddress {
                address,
                purpose,
                ttl_secs,
            } => {
                5u8.write(buf);
                write_string(address, buf);
                write_string(purpose, buf);
                ttl_secs.write(buf);
            }
            Call::RequestDataWithHash {
                hash,
                purpose,
                ttl_secs,
            } => {
                6u8.write(buf);
                hash.write(buf);
                write_string(purpose, buf);
                ttl_secs.write(buf);
            }
            Call::RecordAccess { entries } => {
                7u8.write(buf);
                entries.write(buf);
            }
            Call::BreakGlass { owner, reason } => {
                8u8.write(buf);
                owner.write(buf);
                write_string(reason, buf);
            }
        }
    }
}

impl EncodeSize for Call {
    fn encode_size(&self) -> usize {
        use crate::codec::string_size;
        1 + match self {
            Call::Transfer { .. } => AccountId::SIZE + u64::SIZE,
            Call::SetEncryptionKey { .. } => EncryptionKey::SIZE,
            Call::RegisterData(r) => r.encode_size(),
            Call::WithdrawData { .. } | Call::SubscribeData { .. } => Hash::SIZE,
            Call::RequestDataWithAddress {
                address, purpose, ..
            } => string_size(address) + string_size(purpose) + u32::SIZE,
            Call::RequestDataWithHash { purpose, .. } => {
                Hash::SIZE + string_size(purpose) + u32::SIZE
            }
            Call::RecordAccess { entries } => entries.encode_size(),
            Call::BreakGlass { reason, .. } => AccountId::SIZE + string_size(reason),
        }
    }
}

impl Read for Call {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        match u8::read(buf)? {
            0 => Ok(Call::Transfer {
                to: AccountId::read(buf)?,
                amount: u64::read(buf)?,
            }),
            1 => Ok(Call::SetEncryptionKey {
                key: EncryptionKey::read(buf)?,
            }),
            2 => Ok(Call::RegisterData(RegisterData::read(buf)?)),
            3 => Ok(Call::WithdrawData {
                hash: Hash::read(buf)?,
            }),
            4 => Ok(Call::SubscribeData {
                hash: Hash::read(buf)?,
            }),
            5 => Ok(Call::RequestDataWithAddress {
                address: read_string(buf, "address", MAX_ADDRESS)?,
                purpose: read_string(buf, "purpose", MAX_PURPOSE)?,
                ttl_secs: u32::read(buf)?,
            }),
            6 => Ok(Call::RequestDataWithHash {
                hash: Hash::read(buf)?,
                purpose: read_string(buf, "purpose", MAX_PURPOSE)?,
                ttl_secs: u32::read(buf)?,
            }),
            7 => Ok(Call::RecordAccess {
                entries: read_vec_bounded(buf, "entries", MAX_ACCESS_ENTRIES)?,
            }),
            8 => Ok(Call::BreakGlass {
                owner: AccountId::read(buf)?,
                reason: read_string(buf, "reason", MAX_PURPOSE)?,
            }),
            tag => Err(CodecError::InvalidEnum(tag)),
        }
    }
}

impl Write for Transaction {
    fn write(&self, buf: &mut impl BufMut) {
        write_string(&self.chain_id, buf);
        self.sender.write(buf);
        self.nonce.write(buf);
        self.call.write(buf);
    }
}

impl EncodeSize for Transaction {
    fn encode_size(&self) -> usize {
        crate::codec::string_size(&self.chain_id)
            + AccountId::SIZE
            + u64::SIZE
            + self.call.encode_size()
    }
}

impl Read for Transaction {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        Ok(Transaction {
            chain_id: read_string(buf, "chain_id", MAX_CHAIN_ID)?,
            sender: AccountId::read(buf)?,
            nonce: u64::read(buf)?,
            call: Call::read(buf)?,
        })
    }
}

/// The transaction's bytes are the ones kept at construction ([`SignedTransaction::new`]
/// encodes the transaction once), so a block or a batch is encoded without encoding each
/// transaction again.
impl Write for SignedTransaction {
    fn write(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.signing_bytes);
        self.signature.write(buf);
    }
}

impl EncodeSize for SignedTransaction {
    fn encode_size(&self) -> usize {
        debug_assert_eq!(self.signing_bytes.len(), self.tx.encode_size());
        self.signing_bytes.len() + Signature::SIZE
    }
}

/// Goes through [`SignedTransaction::new`], which encodes the decoded transaction again:
/// the bytes kept, hashed and written out later are the canonical encoding, never the bytes
/// received.
impl Read for SignedTransaction {
    type Cfg = ();
    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let tx = Transaction::read(buf)?;
        let signature = Signature::read(buf)?;
        Ok(SignedTransaction::new(tx, signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_and_truncated_inputs_are_refused_with_a_reason() {
        let too_big = vec![0u8; MAX_TX_BYTES + 1];
        let err = SignedTransaction::decode_bytes(&too_big).unwrap_err();
        assert!(err.to_string().contains("more than the limit"), "{err}");
        let err = SignedTransaction::decode_bytes(&[1, 2, 3]).unwrap_err();
        assert!(err.to_string().starts_with("malformed input"), "{err}");
    }

    #[test]
    fn a_field_over_its_limit_is_named() {
        let key = Keypair::deterministic("limits", 0);
        let tx = Transaction {
            chain_id: "c".into(),
            sender: key.account(),
            nonce: 0,
            call: Call::RequestDataWithHash {
                hash: Hash::ZERO,
                purpose: "p".repeat(MAX_PURPOSE + 1),
                ttl_secs: 1,
            },
        }
        .sign(&key);
        let err = SignedTransaction::decode_bytes(&tx.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("purpose"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let key = Keypair::deterministic("limits", 0);
        let tx = Transaction {
            chain_id: "c".into(),
            sender: key.account(),
            nonce: 0,
            call: Call::WithdrawData { hash: Hash::ZERO },
        }
        .sign(&key);
        let mut bytes = tx.to_bytes();
        bytes.push(0);
        assert!(
            SignedTransaction::decode_bytes(&bytes)
                .unwrap_err()
                .to_string()
                .contains("unexpected bytes")
        );
    }

    fn signed_batch(n: usize) -> Vec<SignedTransaction> {
        (0..n)
            .map(|i| {
                let key = Keypair::deterministic("batch", i as u64 % 7);
                Transaction {
                    chain_id: "c".into(),
                    sender: key.account(),
                    nonce: i as u64,
                    call: Call::WithdrawData { hash: Hash::ZERO },
                }
                .sign(&key)
            })
            .collect()
    }

    /// A signature that parses but is another transaction's.
    fn forged(tx: &SignedTransaction, other: &SignedTransaction) -> SignedTransaction {
        SignedTransaction::new(tx.tx().clone(), other.signature)
    }

    /// The transactions checked singly, and the signatures batches covered, while `f` runs.
    fn checks<T>(f: impl FnOnce() -> T) -> (T, Vec<usize>, usize) {
        SINGLE_CHECKS.with(|c| c.borrow_mut().clear());
        BATCHED.with(|c| c.set(0));
        let out = f();
        (
            out,
            SINGLE_CHECKS.with(|c| c.take()),
            BATCHED.with(std::cell::Cell::get),
        )
    }

    /// What halving `n` items with forgeries at `forged` (sorted) costs: items in batches,
    /// items checked singly, and whether every verdict is right.
    fn halving_cost(n: usize, forged: &[usize]) -> (usize, usize, bool) {
        let items: Vec<usize> = (0..n).collect();
        let (mut batched, mut singles, mut right) = (0, 0, true);
        let clean = |batch: &[usize]| match (batch.first(), batch.last()) {
            (Some(a), Some(b)) => {
                let from = forged.partition_point(|f| f < a);
                forged.get(from).is_none_or(|f| f > b)
            }
            _ => true,
        };
        halve(
            &items,
            &mut halving_budget(n),
            &mut |batch| {
                batched += batch.len();
                clean(batch)
            },
            &mut |item| {
                singles += 1;
                !forged.contains(item)
            },
            &mut |item, ok| right &= ok != forged.contains(item),
        );
        (batched, singles, right)
    }

    #[test]
    fn one_forgery_is_found_by_halving_wherever_it_is() {
        // Every size up to a few gossip rounds, every position; and sizes of large blocks
        // where odd halves add most, around their halves and quarters and spread over the
        // rest.
        let small = (1..=1_100).map(|n| (n, (0..n).collect::<Vec<_>>()));
        let large = [2_048, 4_097, 7_170, 14_338, 16_386, 20_000].map(|n: usize| {
            let near = [n / 4, n / 2, 3 * n / 4, n]
                .into_iter()
                .flat_map(|m| m.saturating_sub(70)..(m + 70).min(n));
            (n, (0..n).step_by(97).chain(near).collect())
        });
        for (n, positions) in small.chain(large) {
            for at in positions {
                let (batched, singles, right) = halving_cost(n, &[at]);
                assert!(right, "a wrong verdict, {n} items, forgery at {at}");
                assert!(
                    singles < 2 * CHECK_SINGLY_BELOW,
                    "{singles} checked singly of {n}, forgery at {at}"
                );
                assert!(batched <= halving_budget(n));
            }
        }
    }

    #[test]
    fn forgeries_anywhere_cost_at_most_the_budget_and_single_checks_of_all() {
        for n in [64, 301, 2_048] {
            for k in [2, 3, 8, n / 4, n] {
                for stride in [1, 3, 7, n / k.max(1)] {
                    let mut forged: Vec<usize> = (0..k).map(|j| j * stride.max(1) % n).collect();
                    forged.sort_unstable();
                    forged.dedup();
                    let (batched, singles, right) = halving_cost(n, &forged);
                    assert!(right);
                    assert!(batched <= halving_budget(n) && singles <= n);
                }
            }
        }
    }

    #[test]
    fn trusted_transactions_pass_unchecked_and_the_rest_are_checked_in_place() {
        let txs = signed_batch(40);
        let mut batch = txs.clone();
        // Forged: 3 and 4 trusted, 10 and 30 not.
        for i in [3, 4, 10, 30] {
            batch[i] = forged(&txs[i], &txs[0]);
        }
        let trusted: Vec<Hash> = [0, 3, 4, 5].map(|i| batch[i].hash()).to_vec();
        let (flags, _, batched) =
            checks(|| verify_signatures_except(&batch, |t| trusted.contains(&t.hash())));
        let failed: Vec<usize> = (0..40).filter(|i| !flags[*i]).collect();
        assert_eq!(failed, vec![10, 30]);
        assert!(batched >= 36 && batched <= halving_budget(36), "{batched}");
        // All trusted: nothing is checked; none trusted: as verify_signatures.
        let (flags, singles, batched) = checks(|| verify_signatures_except(&batch, |_| true));
        assert!(flags.iter().all(|f| *f) && singles.is_empty() && batched == 0);
        assert_eq!(
            verify_signatures_except(&batch, |_| false),
            verify_signatures(&batch)
        );
    }

    #[test]
    fn one_forged_signature_is_found_with_few_single_checks() {
        let txs = signed_batch(256);
        for at in [0, 100, 255] {
            let mut batch = txs.clone();
            batch[at] = forged(&txs[at], &txs[(at + 1) % 256]);
            let (flags, singles, batched) = checks(|| verify_signatures(&batch));
            let failed: Vec<usize> = (0..256).filter(|i| !flags[*i]).collect();
            assert_eq!(failed, vec![at]);
            assert!(
                singles.len() < 2 * CHECK_SINGLY_BELOW && singles.contains(&at),
                "{singles:?} checked singly for one forgery at {at}"
            );
            assert!(batched <= halving_budget(256), "{batched}");
        }
    }

    #[test]
    fn parts_are_checked_apart_once_their_batch_fails() {
        let txs = signed_batch(300);
        let (flags, singles, batched) = checks(|| verify_signatures_in_parts(&txs, &[100, 150]));
        assert!(flags.iter().all(|f| *f) && flags.len() == 300);
        assert_eq!(
            (singles.len(), batched),
            (0, 300),
            "one batch for all the parts"
        );

        // A forgery in the second part: the first and third are checked again once each,
        // and the search for it stays within the second.
        let mut batch = txs.clone();
        batch[150] = forged(&txs[150], &txs[0]);
        let (flags, singles, batched) = checks(|| verify_signatures_in_parts(&batch, &[100, 150]));
        let failed: Vec<usize> = (0..300).filter(|i| !flags[*i]).collect();
        assert_eq!(failed, vec![150]);
        assert!(singles.len() < 2 * CHECK_SINGLY_BELOW, "{singles:?}");
        assert!(batched <= 300 + 100 + halving_budget(150) + 50, "{batched}");
        // Many forgeries in one part send none of the others' signatures to single checks.
        let mut batch = txs.clone();
        for i in (100..250).step_by(3) {
            batch[i] = forged(&txs[i], &txs[0]);
        }
        let (flags, singles, _) = checks(|| verify_signatures_in_parts(&batch, &[100, 150]));
        assert_eq!(
            flags,
            batch
                .iter()
                .map(SignedTransaction::verify_signature)
                .collect::<Vec<_>>()
        );
        assert!(
            singles.iter().all(|i| (100..250).contains(i)),
            "checked singly outside the forger's part: {singles:?}"
        );
        // Lengths past the transactions, or none, still check every one.
        let (flags, _, _) = checks(|| verify_signatures_in_parts(&batch, &[0, 400, 7]));
        assert_eq!(flags.iter().filter(|f| !**f).count(), 50);
        let (flags, _, _) = checks(|| verify_signatures_in_parts(&txs, &[]));
        assert!(flags.iter().all(|f| *f) && flags.len() == 300);
    }

    proptest! {
        /// Batch verification with bisection gives exactly the single checks' verdicts,
        /// whatever the forged signatures and where they are.
        #[test]
        fn batches_agree_with_single_checks(
            n in 1usize..70,
            bad in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
            garbage in any::<bool>(),
        ) {
            let mut txs = signed_batch(n);
            let first = txs[0].clone();
            for b in &bad {
                let i = b.index(n);
                txs[i] = if garbage {
                    SignedTransaction::new(txs[i].tx().clone(), Signature([0xff; 64]))
                } else {
                    forged(&txs[i], &first)
                };
            }
            let single: Vec<bool> = txs.iter().map(SignedTransaction::verify_signature).collect();
            prop_assert_eq!(verify_signatures(&txs), single);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = SignedTransaction::decode_bytes(&bytes);
            let _ = crate::Block::decode_bytes(&bytes);
        }

        #[test]
        fn every_flipped_byte_breaks_decoding_or_the_signature(pos in 0usize..200, bit in 0u8..8) {
            let key = Keypair::deterministic("flip", 0);
            let tx = Transaction { chain_id: "c".into(), sender: key.account(), nonce: 3, call: Call::Transfer { to: key.account(), amount: 9 } }.sign(&key);
            let mut bytes = tx.to_bytes();
            let pos = pos % bytes.len();
            bytes[pos] ^= 1 << bit;
            if let Ok(decoded) = SignedTransaction::decode_bytes(&bytes) {
                prop_assert!(!decoded.verify_signature());
            }
        }
    }
}
