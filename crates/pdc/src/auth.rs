//! Signed requests: every call that acts as an account (storing, changing a policy, deleting,
//! reading one's history, asking for a token) carries that account's signature over the
//! holder it is meant for (the audience), the method, the path with its query, the SHA-256 of
//! the body, a timestamp and a fresh nonce, in the header
//! `SecNet-Auth: <account>.<audience>.<at_ms>.<nonce>.<signature>`.
//!
//! The server checks the audience is itself, the clock window, that the nonce was not seen
//! before and the signature. A request meant for one holder is refused by every other, so a
//! holder cannot replay what a client sent it at another holder.
//!
//! Uploads send the body's digest ahead of the body (`Content-Digest: sha-256=:…:`, RFC 9530):
//! the signature is checked against the declared digest before a byte of the body is read,
//! and the body must then hash to it.
//!
//! Nonces are remembered for two clock windows, at most [`MAX_NONCES_PER_ACCOUNT`] for one
//! account and [`MAX_NONCES_PER_SOURCE`] from one network source (an IPv4 address or an IPv6
//! /64), so that no one account or source can fill the [`MAX_NONCES`] the guard holds in all.

use base64::Engine as _;
use secnet_types::source::source_key;
use secnet_types::{AccountId, Hash, Keypair, Signature};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

/// Namespace of request signatures.
pub const REQUEST_NAMESPACE: &[u8] = b"secnet/pdc/request/v2";
/// How far a request's timestamp may be from the server's clock.
pub const MAX_SKEW_MS: u64 = 60_000;
/// How long a nonce is remembered: a request older than the clock window is refused anyway.
const REMEMBER_MS: u64 = 2 * MAX_SKEW_MS;
/// Most nonces remembered in all.
pub const MAX_NONCES: usize = 1_000_000;
/// Most nonces remembered for one account (about 68 signed requests a second, sustained).
pub const MAX_NONCES_PER_ACCOUNT: usize = 8_192;
/// Most nonces remembered from one network source.
pub const MAX_NONCES_PER_SOURCE: usize = 65_536;

/// A signed request header, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAuth {
    /// Who signs.
    pub account: AccountId,
    /// The holder the request is meant for.
    pub audience: AccountId,
    /// The signer's clock, ms since the Unix epoch.
    pub at_ms: u64,
    /// Random, never reused.
    pub nonce: [u8; 16],
    /// The signature.
    pub signature: Signature,
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No header.
    #[error(
        "this request must be signed: send SecNet-Auth: <account>.<audience>.<at_ms>.<nonce>.<signature>"
    )]
    Missing,
    /// The header does not parse.
    #[error("malformed SecNet-Auth header: {0}")]
    Malformed(&'static str),
    /// Meant for another holder.
    #[error("this request was signed for holder {signed_for}; this node is holder {here}")]
    WrongAudience {
        /// The audience in the request.
        signed_for: AccountId,
        /// This holder.
        here: AccountId,
    },
    /// The signature does not verify.
    #[error("the SecNet-Auth signature does not verify for account {0}")]
    BadSignature(AccountId),
    /// Too far from the server's clock.
    #[error(
        "the request was signed at {at_ms} ms, more than {MAX_SKEW_MS} ms from the server's clock ({now_ms} ms)"
    )]
    Stale {
        /// Signed time.
        at_ms: u64,
        /// Server time.
        now_ms: u64,
    },
    /// Seen before.
    #[error("this signed request was already used (replay)")]
    Replay,
    /// Too many recent signed requests from one account, one source, or in all.
    #[error("too many signed requests {0} in the last {REMEMBER_MS} ms; try again shortly")]
    TooMany(&'static str),
    /// A declared body digest that does not parse.
    #[error("malformed Content-Digest: send sha-256=:<base64 of the body's SHA-256>:")]
    BadDigest,
    /// A body that does not hash to its declared digest.
    #[error("the body does not hash to the Content-Digest it was signed with")]
    BodyMismatch,
}

fn message(
    audience: &AccountId,
    method: &str,
    path_and_query: &str,
    body_digest: &Hash,
    at_ms: u64,
    nonce: &[u8; 16],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + method.len() + path_and_query.len() + 2 + 32 + 8 + 16);
    m.extend_from_slice(&audience.0);
    m.extend_from_slice(method.as_bytes());
    m.push(b' ');
    m.extend_from_slice(path_and_query.as_bytes());
    m.push(0);
    m.extend_from_slice(&body_digest.0);
    m.extend_from_slice(&at_ms.to_be_bytes());
    m.extend_from_slice(nonce);
    m
}

/// The `Content-Digest` value (RFC 9530) of a body: `sha-256=:<base64>:`.
pub fn content_digest(body: &[u8]) -> String {
    content_digest_of(&Hash::digest(body))
}

/// The `Content-Digest` value of a body whose SHA-256 is `digest`.
pub fn content_digest_of(digest: &Hash) -> String {
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(digest.0)
    )
}

/// Reads a `Content-Digest` value's SHA-256 (other algorithms are not accepted).
pub fn parse_content_digest(value: &str) -> Result<Hash, AuthError> {
    let b64 = value
        .trim()
        .strip_prefix("sha-256=:")
        .and_then(|s| s.strip_suffix(':'))
        .filter(|s| s.len() == 44)
        .ok_or(AuthError::BadDigest)?;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .map(Hash)
        .ok_or(AuthError::BadDigest)
}

impl RequestAuth {
    /// Signs a request to `audience` as `key`.
    pub fn sign(
        key: &Keypair,
        audience: &AccountId,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        at_ms: u64,
    ) -> RequestAuth {
        let nonce: [u8; 16] = rand::random();
        RequestAuth {
            account: key.account(),
            audience: *audience,
            at_ms,
            nonce,
            signature: key.sign(
                REQUEST_NAMESPACE,
                &message(
                    audience,
                    method,
                    path_and_query,
                    &Hash::digest(body),
                    at_ms,
                    &nonce,
                ),
            ),
        }
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        format!(
            "{}.{}.{}.{}.{}",
            self.account,
            self.audience,
            self.at_ms,
            hex::encode(self.nonce),
            hex::encode(self.signature.0)
        )
    }

    /// Parses a header value (bounded).
    pub fn from_header(s: &str) -> Result<RequestAuth, AuthError> {
        if s.len() > 64 + 1 + 64 + 1 + 20 + 1 + 32 + 1 + 128 {
            return Err(AuthError::Malformed("too long"));
        }
        let mut parts = s.split('.');
        let (Some(account), Some(audience), Some(at), Some(nonce), Some(sig), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(AuthError::Malformed(
                "expected five dot-separated fields: account, audience, at_ms, nonce, signature",
            ));
        };
        Ok(RequestAuth {
            account: account
                .parse()
                .map_err(|_| AuthError::Malformed("account is not 64 hex digits"))?,
            audience: audience
                .parse()
                .map_err(|_| AuthError::Malformed("audience is not 64 hex digits"))?,
            at_ms: at
                .parse()
                .map_err(|_| AuthError::Malformed("at_ms is not a number"))?,
            nonce: hex::decode(nonce)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or(AuthError::Malformed("nonce is not 32 hex digits"))?,
            signature: Signature(
                hex::decode(sig)
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .ok_or(AuthError::Malformed("signature is not 128 hex digits"))?,
            ),
        })
    }
}

/// What a signed request is, as the server received it.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The `SecNet-Auth` header, if any.
    pub header: Option<&'a str>,
    /// The HTTP method.
    pub method: &'a str,
    /// The path with its query, as sent.
    pub path_and_query: &'a str,
    /// The SHA-256 of the body (for an upload, the declared digest, checked after reading).
    pub body_digest: Hash,
    /// Where the request came from (`None` if unknown).
    pub source: Option<IpAddr>,
}

fn bump<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: K) {
    *counts.entry(key).or_insert(0) += 1;
}

fn drop_one<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(c) = counts.get_mut(key) {
        *c = c.saturating_sub(1);
        if *c == 0 {
            counts.remove(key);
        }
    }
}

/// How many nonces a [`RequestGuard`] remembers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceLimits {
    /// For one account.
    pub per_account: usize,
    /// From one network source.
    pub per_source: usize,
    /// In all.
    pub total: usize,
}

impl Default for NonceLimits {
    fn default() -> NonceLimits {
        NonceLimits {
            per_account: MAX_NONCES_PER_ACCOUNT,
            per_source: MAX_NONCES_PER_SOURCE,
            total: MAX_NONCES,
        }
    }
}

/// Checks signed requests and remembers their nonces for two clock windows.
#[derive(Debug, Default)]
pub struct RequestGuard {
    limits: NonceLimits,
    seen: HashSet<(AccountId, [u8; 16])>,
    order: VecDeque<(u64, AccountId, [u8; 16], [u8; 8])>,
    per_account: HashMap<AccountId, usize>,
    per_source: HashMap<[u8; 8], usize>,
}

impl RequestGuard {
    /// An empty guard with the default limits.
    pub fn new() -> RequestGuard {
        RequestGuard::default()
    }

    /// An empty guard with these limits.
    pub fn with_limits(limits: NonceLimits) -> RequestGuard {
        RequestGuard {
            limits,
            ..RequestGuard::default()
        }
    }

    fn forget_old(&mut self, now_ms: u64) {
        while self
            .order
            .front()
            .is_some_and(|(t, ..)| now_ms.saturating_sub(*t) > REMEMBER_MS)
        {
            if let Some((_, a, n, s)) = self.order.pop_front() {
                self.seen.remove(&(a, n));
                drop_one(&mut self.per_account, &a);
                drop_one(&mut self.per_source, &s);
            }
        }
    }

    /// Checks `request`, meant for holder `audience`, at `now_ms`, and returns the signing
    /// account. Cheap checks come first (format, audience, clock, replay, limits); the
    /// signature last; only a request that passes all is remembered.
    pub fn check(
        &mut self,
        request: &Signed<'_>,
        audience: &AccountId,
        now_ms: u64,
    ) -> Result<AccountId, AuthError> {
        let auth = RequestAuth::from_header(request.header.ok_or(AuthError::Missing)?)?;
        if auth.audience != *audience {
            return Err(AuthError::WrongAudience {
                signed_for: auth.audience,
                here: *audience,
            });
        }
        if auth.at_ms.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(AuthError::Stale {
                at_ms: auth.at_ms,
                now_ms,
            });
        }
        self.forget_old(now_ms);
        if self.seen.contains(&(auth.account, auth.nonce)) {
            return Err(AuthError::Replay);
        }
        let source = source_key(request.source);
        if self.per_account.get(&auth.account).copied().unwrap_or(0) >= self.limits.per_account {
            return Err(AuthError::TooMany("from this account"));
        }
        if self.per_source.get(&source).copied().unwrap_or(0) >= self.limits.per_source {
            return Err(AuthError::TooMany("from this network source"));
        }
        if self.seen.len() >= self.limits.total {
            return Err(AuthError::TooMany("in all"));
        }
        let msg = message(
            audience,
            request.method,
            request.path_and_query,
            &request.body_digest,
            auth.at_ms,
            &auth.nonce,
        );
        if !auth
            .signature
            .verify(&auth.account, REQUEST_NAMESPACE, &msg)
        {
            return Err(AuthError::BadSignature(auth.account));
        }
        self.seen.insert((auth.account, auth.nonce));
        bump(&mut self.per_account, auth.account);
        bump(&mut self.per_source, source);
        self.order
            .push_back((now_ms, auth.account, auth.nonce, source));
        Ok(auth.account)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn holder() -> AccountId {
        Keypair::deterministic("holder", 0).account()
    }

    fn request<'a>(header: &'a str, method: &'a str, path: &'a str, body: &[u8]) -> Signed<'a> {
        Signed {
            header: Some(header),
            method,
            path_and_query: path,
            body_digest: Hash::digest(body),
            source: Some(IpAddr::from([192, 0, 2, 1])),
        }
    }

    #[test]
    fn signed_requests_are_checked_once() {
        let key = Keypair::deterministic("owner", 0);
        let mut guard = RequestGuard::new();
        let h = RequestAuth::sign(&key, &holder(), "PUT", "/v1/pdc/policies/x", b"permit", NOW)
            .to_header();
        let r = request(&h, "PUT", "/v1/pdc/policies/x", b"permit");
        assert_eq!(guard.check(&r, &holder(), NOW + 5).unwrap(), key.account());
        assert_eq!(guard.check(&r, &holder(), NOW + 6), Err(AuthError::Replay));
        // Another body, path or method is another message.
        for (m, p, b) in [
            ("PUT", "/v1/pdc/policies/x", &b"forbid"[..]),
            ("PUT", "/v1/pdc/policies/y", b"permit"),
            ("DELETE", "/v1/pdc/policies/x", b"permit"),
        ] {
            let h = RequestAuth::sign(&key, &holder(), "PUT", "/v1/pdc/policies/x", b"permit", NOW)
                .to_header();
            assert_eq!(
                guard.check(&request(&h, m, p, b), &holder(), NOW),
                Err(AuthError::BadSignature(key.account()))
            );
        }
        let old =
            RequestAuth::sign(&key, &holder(), "GET", "/", b"", NOW - 2 * MAX_SKEW_MS).to_header();
        assert!(matches!(
            guard.check(&request(&old, "GET", "/", b""), &holder(), NOW),
            Err(AuthError::Stale { .. })
        ));
        let none = Signed {
            header: None,
            ..request("", "GET", "/", b"")
        };
        assert_eq!(guard.check(&none, &holder(), NOW), Err(AuthError::Missing));
        assert!(matches!(
            guard.check(&request("a.b", "GET", "/", b""), &holder(), NOW),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn a_request_meant_for_one_holder_is_refused_by_another() {
        let key = Keypair::deterministic("owner", 0);
        let other = Keypair::deterministic("holder", 1).account();
        let h =
            RequestAuth::sign(&key, &holder(), "GET", "/v1/pdc/history/x", b"", NOW).to_header();
        let r = request(&h, "GET", "/v1/pdc/history/x", b"");
        assert_eq!(
            RequestGuard::new().check(&r, &other, NOW),
            Err(AuthError::WrongAudience {
                signed_for: holder(),
                here: other
            })
        );
        // Rewriting the audience in the header breaks the signature.
        let forged = RequestAuth {
            audience: other,
            ..RequestAuth::from_header(&h).unwrap()
        }
        .to_header();
        assert_eq!(
            RequestGuard::new().check(
                &request(&forged, "GET", "/v1/pdc/history/x", b""),
                &other,
                NOW
            ),
            Err(AuthError::BadSignature(key.account()))
        );
        assert_eq!(
            RequestGuard::new().check(&r, &holder(), NOW),
            Ok(key.account())
        );
    }

    #[test]
    fn one_account_or_one_source_cannot_fill_the_guard() {
        let limits = NonceLimits {
            per_account: 3,
            per_source: 5,
            total: 8,
        };
        let mut guard = RequestGuard::with_limits(limits);
        let send = |guard: &mut RequestGuard, key: &Keypair, source: [u8; 4], at: u64| {
            let h = RequestAuth::sign(key, &holder(), "GET", "/", b"", at).to_header();
            let r = Signed {
                source: Some(IpAddr::from(source)),
                ..request(&h, "GET", "/", b"")
            };
            guard.check(&r, &holder(), at)
        };
        let alice = Keypair::deterministic("alice", 0);
        for _ in 0..3 {
            send(&mut guard, &alice, [192, 0, 2, 1], NOW).unwrap();
        }
        assert_eq!(
            send(&mut guard, &alice, [192, 0, 2, 9], NOW),
            Err(AuthError::TooMany("from this account"))
        );
        // Fresh keys from one source stop at the source's limit ...
        let fresh: Vec<Keypair> = (0..4).map(|i| Keypair::deterministic("fresh", i)).collect();
        send(&mut guard, &fresh[0], [192, 0, 2, 1], NOW).unwrap();
        send(&mut guard, &fresh[1], [192, 0, 2, 1], NOW).unwrap();
        assert_eq!(
            send(&mut guard, &fresh[2], [192, 0, 2, 1], NOW),
            Err(AuthError::TooMany("from this network source"))
        );
        // ... while others still get in, up to the total.
        let bob = Keypair::deterministic("bob", 0);
        send(&mut guard, &bob, [198, 51, 100, 7], NOW).unwrap();
        send(&mut guard, &bob, [198, 51, 100, 7], NOW).unwrap();
        send(&mut guard, &fresh[3], [203, 0, 113, 1], NOW).unwrap();
        assert_eq!(
            send(&mut guard, &bob, [198, 51, 100, 7], NOW),
            Err(AuthError::TooMany("in all"))
        );
        // A refused request is not remembered, and two windows later all is forgotten.
        let later = NOW + REMEMBER_MS + 1;
        for _ in 0..3 {
            send(&mut guard, &alice, [192, 0, 2, 1], later).unwrap();
        }
    }

    #[test]
    fn content_digests_round_trip_and_refuse_anything_else() {
        let d = content_digest(b"hello");
        assert_eq!(parse_content_digest(&d), Ok(Hash::digest(b"hello")));
        for bad in [
            "",
            "sha-512=:AAAA:",
            "sha-256=:not base64!:",
            "sha-256=:AAAA:",
            "sha-256=LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=",
        ] {
            assert_eq!(
                parse_content_digest(bad),
                Err(AuthError::BadDigest),
                "{bad}"
            );
        }
    }
}
