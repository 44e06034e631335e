//! Patients sign in with the key their browser keeps: the node issues a one-time challenge,
//! the browser signs it with the patient's Ed25519 key (WebCrypto, never sent anywhere), and
//! the node checks the signature and starts a session for that account. Everything a patient
//! changes (records, policies, registrations) is signed by the same key in the browser and
//! sent to the node's API directly; the session only lets the node show the patient their
//! own records and history.
//!
//! What is signed follows the ledger's convention for namespaced Ed25519 signatures: the
//! signed bytes are the namespace's length (a LEB128 varint), the namespace, then the
//! message ([`namespaced`]).

use crate::session::Member;
use secnet_types::{AccountId, Signature};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The namespace of sign-in signatures.
pub const SIGN_IN_NAMESPACE: &[u8] = b"secnet/web/sign-in/v1";
/// How long a challenge can be answered.
pub const CHALLENGE_LIFETIME: Duration = Duration::from_secs(120);
/// Most challenges outstanding; beyond it expired ones are dropped, then issuing waits.
pub const MAX_CHALLENGES: usize = 10_000;
/// Most challenges outstanding for one source (an IPv4 address or an IPv6 /64), so that
/// one source cannot take the slots everyone else signs in with.
pub const MAX_CHALLENGES_PER_SOURCE: usize = 16;

/// The bytes an Ed25519 signature in `namespace` covers: the namespace's length as a LEB128
/// varint, the namespace, the message. What a browser signs with WebCrypto.
pub fn namespaced(namespace: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(namespace.len() + msg.len() + 2);
    let mut n = namespace.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(namespace);
    out.extend_from_slice(msg);
    out
}

/// The message a patient signs to sign in at `node` with `challenge`.
pub fn sign_in_message(node: &AccountId, challenge: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(node.as_bytes());
    m.extend_from_slice(challenge);
    m
}

/// A signed-in patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patient {
    /// Their account (the public half of the key their browser keeps).
    pub account: AccountId,
    /// The account, hex (what identifies the session's owner).
    pub hex: String,
}

impl Patient {
    /// The patient of `account`.
    pub fn new(account: AccountId) -> Patient {
        Patient {
            hex: account.to_string(),
            account,
        }
    }
}

impl Member for Patient {
    fn account_key(&self) -> &str {
        &self.hex
    }
}

/// Why a sign-in was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    /// The challenge was never issued here, was used, or expired.
    #[error("the sign-in challenge is unknown, used or expired; sign in again")]
    Challenge,
    /// The signature does not verify for the account.
    #[error("the signature does not verify for this account")]
    Signature,
    /// Malformed input.
    #[error("{0}")]
    Malformed(&'static str),
}

/// When a challenge was issued, and to which source ([`secnet_types::source::source_key`]:
/// an IPv4 address or an IPv6 /64).
type Issued = (Instant, [u8; 8]);

/// Challenges issued and not yet answered.
#[derive(Debug, Default)]
pub struct Challenges {
    issued: Mutex<HashMap<[u8; 32], Issued>>,
}

impl Challenges {
    /// A new challenge for a request from `source`, or `None` while too many are
    /// outstanding, in all or from that source.
    pub fn issue(&self, source: Option<std::net::IpAddr>) -> Option<[u8; 32]> {
        let mut issued = self.issued.lock().ok()?;
        let now = Instant::now();
        let source = secnet_types::source::source_key(source);
        let from_source = |issued: &HashMap<[u8; 32], Issued>| {
            issued.values().filter(|(_, s)| *s == source).count()
        };
        if issued.len() >= MAX_CHALLENGES || from_source(&issued) >= MAX_CHALLENGES_PER_SOURCE {
            issued.retain(|_, (at, _)| now.duration_since(*at) <= CHALLENGE_LIFETIME);
            if issued.len() >= MAX_CHALLENGES || from_source(&issued) >= MAX_CHALLENGES_PER_SOURCE {
                return None;
            }
        }
        let challenge: [u8; 32] = rand::random();
        issued.insert(challenge, (now, source));
        Some(challenge)
    }

    /// Checks a sign-in at `node`: the challenge must be outstanding (it is used up either
    /// way) and the signature `account`'s over it.
    pub fn answer(
        &self,
        node: &AccountId,
        account: &str,
        challenge: &str,
        signature: &str,
    ) -> Result<Patient, SignInError> {
        let challenge: [u8; 32] = hex::decode(challenge)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(SignInError::Malformed("the challenge is not 64 hex digits"))?;
        let account: AccountId = account
            .parse()
            .map_err(|_| SignInError::Malformed("the account is not 64 hex digits"))?;
        let signature = Signature(
            hex::decode(signature)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or(SignInError::Malformed(
                    "the signature is not 128 hex digits",
                ))?,
        );
        let (issued, _) = self
            .issued
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&challenge))
            .ok_or(SignInError::Challenge)?;
        if issued.elapsed() > CHALLENGE_LIFETIME {
            return Err(SignInError::Challenge);
        }
        if !signature.verify(
            &account,
            SIGN_IN_NAMESPACE,
            &sign_in_message(node, &challenge),
        ) {
            return Err(SignInError::Signature);
        }
        Ok(Patient::new(account))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secnet_types::Keypair;

    #[test]
    fn namespaced_bytes_are_what_the_ledger_verifies() {
        let key = Keypair::deterministic("patient", 0);
        let msg = b"hello";
        let raw = key.sign_raw(&namespaced(SIGN_IN_NAMESPACE, msg));
        assert!(raw.verify(&key.account(), SIGN_IN_NAMESPACE, msg));
        let long = vec![b'n'; 200];
        let raw = key.sign_raw(&namespaced(&long, msg));
        assert!(raw.verify(&key.account(), &long, msg));
    }

    #[test]
    fn a_challenge_signs_in_once() {
        let node = Keypair::deterministic("node", 0).account();
        let key = Keypair::deterministic("patient", 1);
        let challenges = Challenges::default();
        let c = challenges.issue(None).unwrap();
        let sig = key.sign_raw(&namespaced(SIGN_IN_NAMESPACE, &sign_in_message(&node, &c)));
        let (acct, ch, s) = (
            key.account().to_string(),
            hex::encode(c),
            hex::encode(sig.0),
        );
        let other = Keypair::deterministic("patient", 2).account().to_string();
        // Another account's claim uses the challenge up.
        assert_eq!(
            challenges.answer(&node, &other, &ch, &s),
            Err(SignInError::Signature)
        );
        assert_eq!(
            challenges.answer(&node, &acct, &ch, &s),
            Err(SignInError::Challenge)
        );
        let c = challenges.issue(None).unwrap();
        let sig = key.sign_raw(&namespaced(SIGN_IN_NAMESPACE, &sign_in_message(&node, &c)));
        let ch = hex::encode(c);
        let s = hex::encode(sig.0);
        // Signed for another node: refused.
        let elsewhere = Challenges::default();
        let c2 = elsewhere.issue(None).unwrap();
        let sig2 = key.sign_raw(&namespaced(
            SIGN_IN_NAMESPACE,
            &sign_in_message(&Keypair::deterministic("node", 9).account(), &c2),
        ));
        assert_eq!(
            elsewhere.answer(&node, &acct, &hex::encode(c2), &hex::encode(sig2.0)),
            Err(SignInError::Signature)
        );
        assert_eq!(
            challenges.answer(&node, &acct, &ch, &s).unwrap().account,
            key.account()
        );
        assert_eq!(
            challenges.answer(&node, &acct, &ch, &s),
            Err(SignInError::Challenge)
        );
        assert!(matches!(
            challenges.answer(&node, "zz", &ch, &s),
            Err(SignInError::Malformed(_))
        ));
    }

    #[test]
    fn one_source_cannot_take_every_challenge() {
        let challenges = Challenges::default();
        let greedy = Some(std::net::IpAddr::from([10, 0, 0, 1]));
        for _ in 0..MAX_CHALLENGES_PER_SOURCE {
            assert!(challenges.issue(greedy).is_some());
        }
        assert!(challenges.issue(greedy).is_none());
        assert!(
            challenges
                .issue(Some(std::net::IpAddr::from([10, 0, 0, 2])))
                .is_some()
        );
        // The addresses of one IPv6 /64 are one source.
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        for n in 0..MAX_CHALLENGES_PER_SOURCE {
            assert!(challenges.issue(ip(&format!("2001:db8::{n:x}"))).is_some());
        }
        assert!(challenges.issue(ip("2001:db8::ffff:1")).is_none());
        assert!(challenges.issue(ip("2001:db8:0:1::1")).is_some());
    }
}
