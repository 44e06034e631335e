//! Signed requests: every call that acts as an account (storing, changing a policy, deleting,
//! reading one's history, asking for a token) carries that account's signature over the
//! method, the path with its query, the SHA-256 of the body, a timestamp and a fresh nonce,
//! in the header `SecNet-Auth: <account>.<at_ms>.<nonce>.<signature>`. The server checks the
//! signature, the clock window and that the nonce was not seen before.

use secnet_types::{AccountId, Hash, Keypair, Signature};
use std::collections::{HashSet, VecDeque};

/// Namespace of request signatures.
pub const REQUEST_NAMESPACE: &[u8] = b"secnet/pdc/request/v1";
/// How far a request's timestamp may be from the server's clock.
pub const MAX_SKEW_MS: u64 = 60_000;
/// Most nonces remembered.
const MAX_NONCES: usize = 1_000_000;

/// A signed request header, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAuth {
    /// Who signs.
    pub account: AccountId,
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
    #[error("this request must be signed: send SecNet-Auth: <account>.<at_ms>.<nonce>.<signature>")]
    Missing,
    /// The header does not parse.
    #[error("malformed SecNet-Auth header: {0}")]
    Malformed(&'static str),
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
}

fn message(
    method: &str,
    path_and_query: &str,
    body: &[u8],
    at_ms: u64,
    nonce: &[u8; 16],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(method.len() + path_and_query.len() + 2 + 32 + 8 + 16);
    m.extend_from_slice(method.as_bytes());
    m.push(b' ');
    m.extend_from_slice(path_and_query.as_bytes());
    m.push(0);
    m.extend_from_slice(&Hash::digest(body).0);
    m.extend_from_slice(&at_ms.to_be_bytes());
    m.extend_from_slice(nonce);
    m
}

impl RequestAuth {
    /// Signs a request as `key`.
    pub fn sign(
        key: &Keypair,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        at_ms: u64,
    ) -> RequestAuth {
        let nonce: [u8; 16] = rand::random();
        RequestAuth {
            account: key.account(),
            at_ms,
            nonce,
            signature: key.sign(
                REQUEST_NAMESPACE,
                &message(method, path_and_query, body, at_ms, &nonce),
            ),
        }
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.account,
            self.at_ms,
            hex::encode(self.nonce),
            hex::encode(self.signature.0)
        )
    }

    /// Parses a header value (bounded).
    pub fn from_header(s: &str) -> Result<RequestAuth, AuthError> {
        if s.len() > 64 + 1 + 20 + 1 + 32 + 1 + 128 {
            return Err(AuthError::Malformed("too long"));
        }
        let mut parts = s.split('.');
        let (Some(account), Some(at), Some(nonce), Some(sig), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(AuthError::Malformed("expected four dot-separated fields"));
        };
        Ok(RequestAuth {
            account: account
                .parse()
                .map_err(|_| AuthError::Malformed("account is not 64 hex digits"))?,
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

/// Checks signed requests and remembers their nonces for the clock window.
#[derive(Debug, Default)]
pub struct RequestGuard {
    seen: HashSet<(AccountId, [u8; 16])>,
    order: VecDeque<(u64, AccountId, [u8; 16])>,
}

impl RequestGuard {
    /// An empty guard.
    pub fn new() -> RequestGuard {
        RequestGuard::default()
    }

    /// Checks `header` for a request `method path_and_query` with `body` at `now_ms`, and
    /// returns the signing account.
    pub fn check(
        &mut self,
        header: Option<&str>,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        now_ms: u64,
    ) -> Result<AccountId, AuthError> {
        let auth = RequestAuth::from_header(header.ok_or(AuthError::Missing)?)?;
        let msg = message(method, path_and_query, body, auth.at_ms, &auth.nonce);
        if !auth
            .signature
            .verify(&auth.account, REQUEST_NAMESPACE, &msg)
        {
            return Err(AuthError::BadSignature(auth.account));
        }
        if auth.at_ms.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(AuthError::Stale {
                at_ms: auth.at_ms,
                now_ms,
            });
        }
        while self
            .order
            .front()
            .is_some_and(|(t, _, _)| now_ms.saturating_sub(*t) > 2 * MAX_SKEW_MS)
        {
            if let Some((_, a, n)) = self.order.pop_front() {
                self.seen.remove(&(a, n));
            }
        }
        if self.seen.len() >= MAX_NONCES || !self.seen.insert((auth.account, auth.nonce)) {
            return Err(AuthError::Replay);
        }
        self.order.push_back((now_ms, auth.account, auth.nonce));
        Ok(auth.account)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn signed_requests_are_checked_once() {
        let key = Keypair::deterministic("owner", 0);
        let mut guard = RequestGuard::new();
        let now = 1_700_000_000_000;
        let auth = RequestAuth::sign(&key, "PUT", "/v1/pdc/policies/x", b"permit", now);
        let h = auth.to_header();
        assert_eq!(
            guard
                .check(Some(&h), "PUT", "/v1/pdc/policies/x", b"permit", now + 5)
                .unwrap(),
            key.account()
        );
        assert_eq!(
            guard.check(Some(&h), "PUT", "/v1/pdc/policies/x", b"permit", now + 6),
            Err(AuthError::Replay)
        );
        // Another body, path or method is another message.
        for (m, p, b) in [
            ("PUT", "/v1/pdc/policies/x", &b"forbid"[..]),
            ("PUT", "/v1/pdc/policies/y", b"permit"),
            ("DELETE", "/v1/pdc/policies/x", b"permit"),
        ] {
            let h =
                RequestAuth::sign(&key, "PUT", "/v1/pdc/policies/x", b"permit", now).to_header();
            assert_eq!(
                guard.check(Some(&h), m, p, b, now),
                Err(AuthError::BadSignature(key.account()))
            );
        }
        let old = RequestAuth::sign(&key, "GET", "/", b"", now - 2 * MAX_SKEW_MS).to_header();
        assert!(matches!(
            guard.check(Some(&old), "GET", "/", b"", now),
            Err(AuthError::Stale { .. })
        ));
        assert_eq!(
            guard.check(None, "GET", "/", b"", now),
            Err(AuthError::Missing)
        );
        assert!(matches!(
            guard.check(Some("a.b"), "GET", "/", b"", now),
            Err(AuthError::Malformed(_))
        ));
    }
}
