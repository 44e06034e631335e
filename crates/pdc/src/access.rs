//! The access path for a non-owner, as pure decisions over an explicit clock and ledger view.
//!
//! 1. The consumer holds a subscription and a grant on the ledger (`RequestData…`).
//! 2. The holder checks the grant against the finalized state and issues an [`AccessToken`]:
//!    short-lived, signed by the holder, bound to the consumer's account key.
//! 3. Every fetch carries a [`FetchProof`]: the consumer's signature over the token id, the
//!    request and a fresh nonce, so a stolen token alone is useless and a replayed fetch is
//!    refused.
//! 4. [`Gate::authorize`] checks token, proof, grant, listing, the request detector's score
//!    and the owner's Cedar policy, and returns either an authorization or a refusal with
//!    the reason the ledger records (`RecordAccess`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secnet_contract::{AccessGrant, State};
use secnet_policy::{
    Action, Agent, Decision, DecisionMemo, Engine, Facts, OwnerPolicies, PolicyError, Resource,
};
use secnet_types::{AccountId, EncryptionKey, Hash, Keypair, RefusalReason, Signature};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

/// Namespace of token signatures.
pub const TOKEN_NAMESPACE: &[u8] = b"secnet/pdc/token/v1";
/// Namespace of fetch signatures.
pub const FETCH_NAMESPACE: &[u8] = b"secnet/pdc/fetch/v2";
/// Longest a token lives (it never outlives its grant).
pub const TOKEN_TTL_MS: u64 = 5 * 60 * 1000;
/// How far a fetch's timestamp may be from the holder's clock.
pub const MAX_SKEW_MS: u64 = 60 * 1000;
/// Longest purpose carried in a token.
pub const MAX_PURPOSE: usize = 64;

const TOKEN_VERSION: u8 = 1;
const TOKEN_FIXED: usize = 1 + 16 + 32 * 4 + 8 + 8 + 1;
const MAX_TOKEN_BYTES: usize = TOKEN_FIXED + MAX_PURPOSE + 64;

/// A short-lived right to fetch one piece of data, issued by its holder to one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// Random id: fetches name it, replays are tracked by it.
    pub id: [u8; 16],
    /// Who issued it and serves the data.
    pub holder: AccountId,
    /// The only account whose signed fetches it admits.
    pub consumer: AccountId,
    /// The ledger grant it was issued for.
    pub grant: Hash,
    /// The registered content hash of the data.
    pub data: Hash,
    /// Issue time, ms since the Unix epoch.
    pub issued_ms: u64,
    /// Expiry, ms since the Unix epoch.
    pub expires_ms: u64,
    /// The purpose stated in the grant.
    pub purpose: String,
}

/// A token or proof that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {0}")]
pub struct Malformed(pub &'static str);

impl AccessToken {
    fn body(&self) -> Vec<u8> {
        let purpose = self.purpose.as_bytes();
        let mut out = Vec::with_capacity(TOKEN_FIXED + purpose.len());
        out.push(TOKEN_VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.holder.0);
        out.extend_from_slice(&self.consumer.0);
        out.extend_from_slice(&self.grant.0);
        out.extend_from_slice(&self.data.0);
        out.extend_from_slice(&self.issued_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.push(u8::try_from(purpose.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(purpose);
        out
    }

    /// Signs the token with the holder's key and encodes it (base64url, no padding).
    pub fn seal(&self, holder: &Keypair) -> String {
        let body = self.body();
        let sig = holder.sign(TOKEN_NAMESPACE, &body);
        let mut all = body;
        all.extend_from_slice(&sig.0);
        URL_SAFE_NO_PAD.encode(all)
    }

    /// Decodes a sealed token and checks the holder's signature. Bounded: a long or
    /// malformed string is refused before any work.
    pub fn open(sealed: &str, holder: &AccountId) -> Result<AccessToken, RefusalReason> {
        if sealed.len() > MAX_TOKEN_BYTES * 4 / 3 + 4 {
            return Err(RefusalReason::BadSignature);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| RefusalReason::BadSignature)?;
        let (body, sig) = bytes
            .split_at_checked(bytes.len().saturating_sub(64))
            .ok_or(RefusalReason::BadSignature)?;
        let token = AccessToken::decode_body(body).map_err(|_| RefusalReason::BadSignature)?;
        let sig = Signature(sig.try_into().map_err(|_| RefusalReason::BadSignature)?);
        if token.holder != *holder || !sig.verify(holder, TOKEN_NAMESPACE, body) {
            return Err(RefusalReason::BadSignature);
        }
        Ok(token)
    }

    /// Decodes a sealed token without checking its signature: only to look up what it
    /// claims before the real check.
    fn peek(sealed: &str) -> Option<AccessToken> {
        if sealed.len() > MAX_TOKEN_BYTES * 4 / 3 + 4 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        let (body, _) = bytes.split_at_checked(bytes.len().checked_sub(64)?)?;
        AccessToken::decode_body(body).ok()
    }

    fn decode_body(b: &[u8]) -> Result<AccessToken, Malformed> {
        let m = || Malformed("token");
        let take = |at: usize, n: usize| b.get(at..at + n).ok_or_else(m);
        if b.first() != Some(&TOKEN_VERSION) || b.len() < TOKEN_FIXED {
            return Err(m());
        }
        let h32 = |at: usize| -> Result<[u8; 32], Malformed> {
            take(at, 32)?.try_into().map_err(|_| m())
        };
        let u64_at = |at: usize| -> Result<u64, Malformed> {
            Ok(u64::from_be_bytes(
                take(at, 8)?.try_into().map_err(|_| m())?,
            ))
        };
        let plen = usize::from(*b.get(TOKEN_FIXED - 1).ok_or_else(m)?);
        if plen > MAX_PURPOSE || b.len() != TOKEN_FIXED + plen {
            return Err(m());
        }
        Ok(AccessToken {
            id: take(1, 16)?.try_into().map_err(|_| m())?,
            holder: AccountId(h32(17)?),
            consumer: AccountId(h32(49)?),
            grant: Hash(h32(81)?),
            data: Hash(h32(113)?),
            issued_ms: u64_at(145)?,
            expires_ms: u64_at(153)?,
            purpose: String::from_utf8(take(TOKEN_FIXED, plen)?.to_vec()).map_err(|_| m())?,
        })
    }
}

/// The consumer's signature on one fetch: over the holder it is meant for (the token's),
/// the token id, the method and path, a timestamp and a fresh nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchProof {
    /// The consumer's clock, ms since the Unix epoch.
    pub at_ms: u64,
    /// Random, never reused.
    pub nonce: [u8; 16],
    /// Signature by the token's consumer.
    pub signature: Signature,
}

fn fetch_message(
    holder: &AccountId,
    token_id: &[u8; 16],
    method: &str,
    path: &str,
    at_ms: u64,
    nonce: &[u8; 16],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + 16 + method.len() + path.len() + 2 + 8 + 16);
    m.extend_from_slice(&holder.0);
    m.extend_from_slice(token_id);
    m.extend_from_slice(method.as_bytes());
    m.push(b' ');
    m.extend_from_slice(path.as_bytes());
    m.push(0);
    m.extend_from_slice(&at_ms.to_be_bytes());
    m.extend_from_slice(nonce);
    m
}

impl FetchProof {
    /// Signs a fetch of `method path` with `token` as `consumer`.
    pub fn sign(
        consumer: &Keypair,
        token: &AccessToken,
        method: &str,
        path: &str,
        at_ms: u64,
    ) -> FetchProof {
        let nonce: [u8; 16] = rand::random();
        let signature = consumer.sign(
            FETCH_NAMESPACE,
            &fetch_message(&token.holder, &token.id, method, path, at_ms, &nonce),
        );
        FetchProof {
            at_ms,
            nonce,
            signature,
        }
    }

    /// `at_ms.nonce_hex.signature_hex`, for an HTTP header.
    pub fn to_header(&self) -> String {
        format!(
            "{}.{}.{}",
            self.at_ms,
            hex::encode(self.nonce),
            hex::encode(self.signature.0)
        )
    }

    /// Parses [`FetchProof::to_header`].
    pub fn from_header(s: &str) -> Result<FetchProof, Malformed> {
        let m = || Malformed("fetch proof");
        if s.len() > 20 + 1 + 32 + 1 + 128 {
            return Err(m());
        }
        let mut parts = s.split('.');
        let (Some(at), Some(nonce), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(m());
        };
        Ok(FetchProof {
            at_ms: at.parse().map_err(|_| m())?,
            nonce: hex::decode(nonce)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(m)?,
            signature: Signature(
                hex::decode(sig)
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(m)?,
            ),
        })
    }

    fn verify(&self, token: &AccessToken, method: &str, path: &str) -> bool {
        self.signature.verify(
            &token.consumer,
            FETCH_NAMESPACE,
            &fetch_message(
                &token.holder,
                &token.id,
                method,
                path,
                self.at_ms,
                &self.nonce,
            ),
        )
    }
}

/// What the holder needs to know from the finalized ledger state.
pub trait LedgerView {
    /// The grant with this id.
    fn grant(&self, id: &Hash) -> Option<AccessGrant>;
    /// Whether `data` is still registered (not withdrawn).
    fn is_listed(&self, data: &Hash) -> bool;
    /// The account's registered X25519 key.
    fn encryption_key(&self, account: &AccountId) -> Option<EncryptionKey>;
}

impl LedgerView for State {
    fn grant(&self, id: &Hash) -> Option<AccessGrant> {
        State::grant(self, id)
    }
    fn is_listed(&self, data: &Hash) -> bool {
        State::is_listed(self, data)
    }
    fn encryption_key(&self, account: &AccountId) -> Option<EncryptionKey> {
        self.account(account).encryption_key
    }
}

/// The ledger facts one fetch depends on, copied out of the ledger so that the decision
/// runs without holding the ledger: the grant the token names, whether its data is still
/// listed, and the requester's encryption key. Nothing here is trusted because it came with
/// the token: [`Gate::authorize`] still checks the token's signature and matches the grant
/// against it.
#[derive(Debug, Clone, Default)]
pub struct LedgerFacts {
    grant: Option<AccessGrant>,
    listed: bool,
    requester_key: Option<(AccountId, EncryptionKey)>,
}

impl LedgerFacts {
    /// Reads from `ledger` the facts a fetch with the sealed `token` needs (none if the
    /// token does not decode).
    pub fn for_token(token: &str, ledger: &impl LedgerView) -> LedgerFacts {
        let Some(grant) = AccessToken::peek(token).and_then(|t| ledger.grant(&t.grant)) else {
            return LedgerFacts::default();
        };
        LedgerFacts {
            listed: ledger.is_listed(&grant.data),
            requester_key: ledger
                .encryption_key(&grant.requester)
                .map(|k| (grant.requester, k)),
            grant: Some(grant),
        }
    }
}

impl LedgerView for LedgerFacts {
    fn grant(&self, id: &Hash) -> Option<AccessGrant> {
        self.grant.as_ref().filter(|g| g.id == *id).cloned()
    }
    fn is_listed(&self, data: &Hash) -> bool {
        self.listed && self.grant.as_ref().is_some_and(|g| g.data == *data)
    }
    fn encryption_key(&self, account: &AccountId) -> Option<EncryptionKey> {
        self.requester_key
            .filter(|(a, _)| a == account)
            .map(|(_, k)| k)
    }
}

/// What the request detector sees of one access request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestFeatures {
    /// Requests by this consumer in the last minute, this one included.
    pub rate_per_min: u32,
    /// Distinct data this consumer fetched in the last hour, this one included.
    pub breadth_per_hour: u32,
    /// Fetches this consumer made before, ever (on this holder).
    pub history: u32,
    /// Age of the token at this fetch, seconds.
    pub token_age_s: u32,
    /// Hour of day (UTC) of the request.
    pub hour: u8,
    /// The purpose stated in the grant.
    pub purpose: String,
}

/// Scores access requests: 0 (benign) to 1,000,000 (certainly malicious), in parts per
/// million. The AI component implements this with learned detectors.
pub trait Scorer: Send + Sync {
    /// The score of one request.
    fn score(&self, features: &RequestFeatures) -> u32;
}

/// Purposes the rule-based scorer considers ordinary.
pub const KNOWN_PURPOSES: &[&str] = &[
    "treatment",
    "research",
    "audit",
    "billing",
    "care-coordination",
    "public-health",
    "security",
];

/// A transparent rule-based scorer: bursts, sweeping many records, unknown purposes and
/// night-time bulk access raise the score.
#[derive(Debug, Clone, Default)]
pub struct RuleScorer;

impl Scorer for RuleScorer {
    fn score(&self, f: &RequestFeatures) -> u32 {
        let mut s: u32 = 0;
        if f.rate_per_min > 120 {
            s += 500_000;
        } else if f.rate_per_min > 30 {
            s += 200_000;
        }
        if f.breadth_per_hour > 500 {
            s += 400_000;
        } else if f.breadth_per_hour > 100 {
            s += 150_000;
        }
        if !KNOWN_PURPOSES.contains(&f.purpose.as_str()) {
            s += 200_000;
        }
        if f.hour < 6 && f.breadth_per_hour > 50 {
            s += 100_000;
        }
        if f.history == 0 && f.breadth_per_hour > 20 {
            s += 100_000;
        }
        s.min(1_000_000)
    }
}

/// A fetch to authorize.
#[derive(Debug, Clone)]
pub struct FetchAttempt<'a> {
    /// The sealed token.
    pub token: &'a str,
    /// The consumer's proof.
    pub proof: &'a FetchProof,
    /// HTTP method.
    pub method: &'a str,
    /// HTTP path (what the proof signs).
    pub path: &'a str,
    /// Content hash of the version asked for.
    pub data: Hash,
}

/// A fetch allowed.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// The token.
    pub token: AccessToken,
    /// The grant.
    pub grant: AccessGrant,
    /// The policy decision.
    pub decision: Decision,
    /// The consumer's registered encryption key, to re-seal the data key to.
    pub consumer_key: EncryptionKey,
}

/// A fetch refused: the reason recorded on the ledger, who asked (when known), the grant
/// (when known), the score and, for policy refusals, the decision.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Why.
    pub reason: RefusalReason,
    /// The consumer named by a valid token whose fetch proof verified; `None` for a
    /// request that authenticated nobody.
    pub requester: Option<AccountId>,
    /// The grant named by a valid token.
    pub grant: Option<Hash>,
    /// The detector's score (0 if not reached).
    pub score: u32,
    /// The policy decision, if reached.
    pub decision: Option<Box<Decision>>,
}

/// When a fetch nonce may be forgotten: (time, token id, nonce, consumer).
type NonceExpiry = (u64, [u8; 16], [u8; 16], AccountId);

/// Remembers fetch nonces until their token expires, and each consumer's recent requests.
#[derive(Debug, Default)]
pub struct Gate {
    seen: HashMap<([u8; 16], [u8; 16]), u64>,
    /// When each remembered nonce may be forgotten, soonest first.
    expiries: BinaryHeap<Reverse<NonceExpiry>>,
    /// Remembered nonces per consumer.
    nonces_of: HashMap<AccountId, usize>,
    recent: HashMap<AccountId, Recent>,
    served: HashMap<AccountId, u32>,
    /// Tokens whose holder signature was already checked, by the hash of their sealed form.
    opened: HashMap<Hash, AccessToken>,
    /// Policy decisions already made.
    decisions: DecisionMemo,
}

/// Most checked tokens remembered; beyond it expired ones are dropped, then all.
const MAX_OPENED: usize = 100_000;

/// Most requests remembered per consumer and window.
const MAX_RECENT: usize = 100_000;

/// One consumer's requests in the last minute and the last hour, kept incrementally so a
/// request costs O(1) amortized whatever the consumer's rate.
#[derive(Debug, Default)]
struct Recent {
    minute: VecDeque<u64>,
    hour: VecDeque<(u64, Hash)>,
    per_data: HashMap<Hash, u32>,
}

impl Recent {
    fn drop_oldest_of_hour(&mut self) {
        if let Some((_, d)) = self.hour.pop_front()
            && let Some(c) = self.per_data.get_mut(&d)
        {
            *c -= 1;
            if *c == 0 {
                self.per_data.remove(&d);
            }
        }
    }

    /// Records a request and returns (requests in the last minute, distinct data in the
    /// last hour), both including this one.
    fn record(&mut self, now_ms: u64, data: Hash) -> (usize, usize) {
        while self
            .minute
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) > 60_000)
            || self.minute.len() >= MAX_RECENT
        {
            self.minute.pop_front();
        }
        while self
            .hour
            .front()
            .is_some_and(|(t, _)| now_ms.saturating_sub(*t) > 3_600_000)
            || self.hour.len() >= MAX_RECENT
        {
            self.drop_oldest_of_hour();
        }
        self.minute.push_back(now_ms);
        self.hour.push_back((now_ms, data));
        *self.per_data.entry(data).or_insert(0) += 1;
        (self.minute.len(), self.per_data.len())
    }
}

/// Most remembered fetch nonces; beyond it fetches are refused until old ones expire.
pub const MAX_NONCES: usize = 1_000_000;
/// Most remembered fetch nonces of one consumer: no one consumer can fill [`MAX_NONCES`], and
/// each consumer needs a grant, paid for on the ledger.
pub const MAX_NONCES_PER_CONSUMER: usize = 65_536;

impl Gate {
    /// A gate with no history.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// How many fetch nonces are remembered now.
    pub fn remembered_nonces(&self) -> usize {
        self.seen.len()
    }

    /// Issues a token for `grant` to `consumer`, after checking the grant against the ledger.
    pub fn issue(
        holder: &Keypair,
        consumer: &AccountId,
        grant_id: &Hash,
        ledger: &impl LedgerView,
        now_ms: u64,
    ) -> Result<(AccessToken, String), RefusalReason> {
        let grant = ledger.grant(grant_id).ok_or(RefusalReason::NoGrant)?;
        if grant.requester != *consumer || grant.holder != holder.account() {
            return Err(RefusalReason::NoGrant);
        }
        if now_ms >= grant.expires_at_ms {
            return Err(RefusalReason::Expired);
        }
        if !ledger.is_listed(&grant.data) {
            return Err(RefusalReason::Withdrawn);
        }
        let token = AccessToken {
            id: rand::random(),
            holder: holder.account(),
            consumer: *consumer,
            grant: grant.id,
            data: grant.data,
            issued_ms: now_ms,
            expires_ms: grant.expires_at_ms.min(now_ms.saturating_add(TOKEN_TTL_MS)),
            purpose: grant.purpose.chars().take(MAX_PURPOSE).collect::<String>(),
        };
        // A multi-byte purpose cut to 64 chars may still exceed 64 bytes.
        let mut token = token;
        while token.purpose.len() > MAX_PURPOSE {
            token.purpose.pop();
        }
        let sealed = token.seal(holder);
        Ok((token, sealed))
    }

    /// Opens a sealed token, checking the holder's signature once per token.
    fn open_token(
        &mut self,
        sealed: &str,
        holder: &AccountId,
        now_ms: u64,
    ) -> Result<AccessToken, RefusalReason> {
        let key = Hash::digest(sealed.as_bytes());
        if let Some(t) = self.opened.get(&key) {
            return Ok(t.clone());
        }
        let token = AccessToken::open(sealed, holder)?;
        if self.opened.len() >= MAX_OPENED {
            self.opened.retain(|_, t| t.expires_ms > now_ms);
            if self.opened.len() >= MAX_OPENED {
                self.opened.clear();
            }
        }
        self.opened.insert(key, token.clone());
        Ok(token)
    }

    fn prune(&mut self, now_ms: u64) {
        while let Some(Reverse((exp, t, n, consumer))) = self.expiries.peek().copied() {
            if exp > now_ms {
                break;
            }
            self.seen.remove(&(t, n));
            if let Some(c) = self.nonces_of.get_mut(&consumer) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    self.nonces_of.remove(&consumer);
                }
            }
            self.expiries.pop();
        }
    }

    fn features(
        &mut self,
        consumer: &AccountId,
        data: Hash,
        token: &AccessToken,
        purpose: &str,
        now_ms: u64,
    ) -> RequestFeatures {
        let history = self.served.get(consumer).copied().unwrap_or(0);
        let (rate, breadth) = self
            .recent
            .entry(*consumer)
            .or_default()
            .record(now_ms, data);
        RequestFeatures {
            rate_per_min: u32::try_from(rate).unwrap_or(u32::MAX),
            breadth_per_hour: u32::try_from(breadth).unwrap_or(u32::MAX),
            history,
            token_age_s: u32::try_from(now_ms.saturating_sub(token.issued_ms) / 1000)
                .unwrap_or(u32::MAX),
            hour: u8::try_from((now_ms / 3_600_000) % 24).unwrap_or(0),
            purpose: purpose.to_string(),
        }
    }

    /// Decides a fetch. Checks, in order: the token's signature and expiry, the consumer's
    /// proof (signature, clock skew, replay), the grant on the ledger (exists, same consumer,
    /// same holder, same data, unexpired), the listing (not withdrawn), the detector, and the
    /// owner's policy.
    #[allow(
        clippy::too_many_arguments,
        reason = "each input is a distinct fact of the decision"
    )]
    pub fn authorize(
        &mut self,
        holder: &AccountId,
        attempt: &FetchAttempt<'_>,
        ledger: &impl LedgerView,
        engine: &Engine,
        policies: &OwnerPolicies,
        agent_of: impl FnOnce(&AccountId) -> Agent,
        resource: &Resource,
        scorer: &dyn Scorer,
        now_ms: u64,
    ) -> Result<Authorized, Refused> {
        let refuse = |reason, token: Option<&AccessToken>| Refused {
            reason,
            requester: token.map(|t| t.consumer),
            grant: token.map(|t| t.grant),
            score: 0,
            decision: None,
        };
        // Until a fresh fetch proof verifies, the request names nobody: anyone who saw a
        // token, or a whole request, could send it again, so such a refusal is not
        // attributed to the token's consumer or grant.
        let token = self
            .open_token(attempt.token, holder, now_ms)
            .map_err(|r| refuse(r, None))?;
        if !attempt.proof.verify(&token, attempt.method, attempt.path) {
            return Err(refuse(RefusalReason::WrongKey, None));
        }
        if attempt.proof.at_ms.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(refuse(RefusalReason::Replay, None));
        }
        self.prune(now_ms);
        let key = (token.id, attempt.proof.nonce);
        let of_consumer = self.nonces_of.get(&token.consumer).copied().unwrap_or(0);
        if self.seen.contains_key(&key)
            || self.seen.len() >= MAX_NONCES
            || of_consumer >= MAX_NONCES_PER_CONSUMER
        {
            return Err(refuse(RefusalReason::Replay, None));
        }
        // Remembered until neither the proof could pass the clock check (by its own time or
        // ours) nor the token its expiry: an expired token's proofs are forgotten too.
        self.seen.insert(key, token.expires_ms);
        self.nonces_of.insert(token.consumer, of_consumer + 1);
        self.expiries.push(Reverse((
            token
                .expires_ms
                .max(now_ms + MAX_SKEW_MS)
                .max(attempt.proof.at_ms.saturating_add(MAX_SKEW_MS)),
            token.id,
            attempt.proof.nonce,
            token.consumer,
        )));
        if now_ms >= token.expires_ms {
            return Err(refuse(RefusalReason::Expired, Some(&token)));
        }

        let grant = ledger
            .grant(&token.grant)
            .filter(|g| {
                g.requester == token.consumer && g.holder == *holder && g.data == token.data
            })
            .ok_or_else(|| refuse(RefusalReason::NoGrant, Some(&token)))?;
        if token.data != attempt.data {
            return Err(refuse(RefusalReason::NoGrant, Some(&token)));
        }
        if now_ms >= grant.expires_at_ms {
            return Err(refuse(RefusalReason::Expired, Some(&token)));
        }
        if !ledger.is_listed(&grant.data) {
            return Err(refuse(RefusalReason::Withdrawn, Some(&token)));
        }
        let consumer_key = ledger
            .encryption_key(&token.consumer)
            .ok_or_else(|| refuse(RefusalReason::WrongKey, Some(&token)))?;

        let features = self.features(
            &token.consumer,
            attempt.data,
            &token,
            &grant.purpose,
            now_ms,
        );
        let score = scorer.score(&features).min(1_000_000);
        let agent = agent_of(&token.consumer);
        let facts = Facts {
            purpose: grant.purpose.clone(),
            score,
            grant: true,
            day: Facts::day_of(now_ms),
        };
        let decision = engine
            .decide_remembered(
                &mut self.decisions,
                policies,
                &agent,
                Action::Read,
                resource,
                &facts,
            )
            .map_err(|_: PolicyError| Refused {
                score,
                ..refuse(RefusalReason::PolicyDenied, Some(&token))
            })?;
        if !decision.allowed() {
            let reason = if decision.policies.iter().any(|p| p == "detector") {
                RefusalReason::DetectorFlagged
            } else {
                RefusalReason::PolicyDenied
            };
            return Err(Refused {
                score,
                decision: Some(Box::new(decision)),
                ..refuse(reason, Some(&token))
            });
        }
        *self.served.entry(token.consumer).or_insert(0) += 1;
        Ok(Authorized {
            token,
            grant,
            decision,
            consumer_key,
        })
    }
}
