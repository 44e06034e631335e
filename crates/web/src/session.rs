//! Signed-in staff: sessions held by the node (the browser keeps only a random token in an
//! HttpOnly cookie; the node keeps its SHA-256, so its memory does not hold usable tokens),
//! each with its own CSRF token, and the throttling of failed sign-ins.

use crate::staff::StaffMember;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// A session ends this long after its last use.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however busy.
pub const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions a node holds; beyond it, expired ones are dropped, then sign-in is refused.
pub const MAX_SESSIONS: usize = 10_000;
/// Most sessions of one account; a new sign-in ends its oldest beyond this.
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 16;

/// A 256-bit random token, hex.
pub fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn key_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Who a session belongs to.
pub trait Member: Clone + std::fmt::Debug {
    /// What identifies the account, for the limit of sessions per account.
    fn account_key(&self) -> &str;
}

impl Member for StaffMember {
    fn account_key(&self) -> &str {
        &self.username
    }
}

/// A signed-in staff member or patient, as a request sees it.
#[derive(Debug, Clone)]
pub struct Session<M = StaffMember> {
    /// Who.
    pub member: M,
    /// The token every form of this session carries.
    pub csrf: String,
}

#[derive(Debug)]
struct Held<M> {
    session: Session<M>,
    started: Instant,
    last_used: Instant,
}

impl<M> Held<M> {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.last_used) > IDLE_TIMEOUT
            || now.duration_since(self.started) > MAX_AGE
    }
}

/// The sessions of one node.
#[derive(Debug)]
pub struct Sessions<M = StaffMember> {
    held: Mutex<HashMap<[u8; 32], Held<M>>>,
}

impl<M> Default for Sessions<M> {
    fn default() -> Self {
        Sessions {
            held: Mutex::new(HashMap::new()),
        }
    }
}

impl<M: Member> Sessions<M> {
    /// Starts a session for `member`: its cookie token, or `None` if the node holds too
    /// many live sessions.
    pub fn start(&self, member: M) -> Option<String> {
        let mut held = self.held.lock().ok()?;
        let now = Instant::now();
        if held.len() >= MAX_SESSIONS {
            held.retain(|_, h| !h.expired(now));
            if held.len() >= MAX_SESSIONS {
                return None;
            }
        }
        let mine: Vec<([u8; 32], Instant)> = held
            .iter()
            .filter(|(_, h)| h.session.member.account_key() == member.account_key())
            .map(|(k, h)| (*k, h.started))
            .collect();
        if mine.len() >= MAX_SESSIONS_PER_ACCOUNT
            && let Some((oldest, _)) = mine.iter().min_by_key(|(_, started)| *started)
        {
            held.remove(oldest);
        }
        let token = new_token();
        held.insert(
            key_of(&token),
            Held {
                session: Session {
                    member,
                    csrf: new_token(),
                },
                started: now,
                last_used: now,
            },
        );
        Some(token)
    }

    /// The live session of `token`, marking it used.
    pub fn get(&self, token: &str) -> Option<Session<M>> {
        let mut held = self.held.lock().ok()?;
        let key = key_of(token);
        let now = Instant::now();
        let h = held.get_mut(&key)?;
        if h.expired(now) {
            held.remove(&key);
            return None;
        }
        h.last_used = now;
        Some(h.session.clone())
    }

    /// Ends the session of `token`.
    pub fn end(&self, token: &str) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(&key_of(token));
        }
    }
}

/// Failed sign-ins of one account from one source before the first pause.
pub const FREE_FAILURES: u32 = 5;
/// Failed sign-ins from one source, whatever the account, before the first pause.
pub const FREE_FAILURES_PER_SOURCE: u32 = 50;
/// Longest pause imposed after repeated failures.
pub const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);
/// Most keys tracked; beyond it, entries whose pause is over are dropped.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    until: Option<Instant>,
}

/// What sign-in attempts are counted against: the account as tried from one source (an IPv4
/// address or an IPv6 /64, [`secnet_types::source::source_key`]; so that a stranger's
/// guesses cannot lock the owner out from elsewhere), and the source itself (so that one
/// source cannot try account after account, nor one host with a /64 from each of its
/// addresses).
#[derive(Debug, Clone)]
pub struct AttemptKeys {
    account: String,
    source: String,
}

impl AttemptKeys {
    /// The keys of an attempt at `username` from `source`.
    pub fn new(username: &str, source: Option<std::net::IpAddr>) -> AttemptKeys {
        let source = hex::encode(secnet_types::source::source_key(source));
        AttemptKeys {
            account: format!("{username}\u{0}{source}"),
            source,
        }
    }
}

/// Throttles sign-in. Each attempt is counted as a failure before its password is checked
/// (so that parallel attempts cannot all pass the check first) and forgiven if it succeeds.
/// From the [`FREE_FAILURES`]th attempt at an account from one source, or the
/// [`FREE_FAILURES_PER_SOURCE`]th from one source, each attempt doubles a pause (from 1 s up to [`MAX_PAUSE`])
/// during which attempts are refused before any password is checked.
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, Failures>>,
}

impl Throttle {
    /// Counts an attempt; `Err(wait)` if its account or source is paused (nothing counted).
    pub fn attempt(&self, keys: &AttemptKeys) -> Result<(), Duration> {
        let Ok(mut failures) = self.failures.lock() else {
            return Err(MAX_PAUSE);
        };
        let now = Instant::now();
        for key in [&keys.account, &keys.source] {
            if let Some(until) = failures.get(key).and_then(|f| f.until)
                && until > now
            {
                return Err(until - now);
            }
        }
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, f| f.until.is_some_and(|u| u > now));
        }
        for (key, free) in [
            (&keys.account, FREE_FAILURES),
            (&keys.source, FREE_FAILURES_PER_SOURCE),
        ] {
            let f = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                until: None,
            });
            f.count = f.count.saturating_add(1);
            if f.count >= free {
                let doublings = (f.count - free).min(20);
                let pause = Duration::from_secs(1u64 << doublings).min(MAX_PAUSE);
                f.until = Some(now + pause);
            }
        }
        Ok(())
    }

    /// Forgives a successful attempt: the account's count from that source is cleared, and
    /// the source's count goes back down by the one attempt.
    pub fn succeeded(&self, keys: &AttemptKeys) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&keys.account);
            if let Some(f) = failures.get_mut(&keys.source) {
                f.count = f.count.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_addresses_of_one_ipv6_64_are_one_source() {
        let throttle = Throttle::default();
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        // Each guess from a new address of one /64, at a new account.
        for n in 0..FREE_FAILURES_PER_SOURCE {
            let keys = AttemptKeys::new(&format!("user{n}"), ip(&format!("2001:db8:1:2::{n:x}")));
            assert!(throttle.attempt(&keys).is_ok(), "attempt {n}");
        }
        let same = AttemptKeys::new("another", ip("2001:db8:1:2:ffff::1"));
        assert!(throttle.attempt(&same).is_err(), "the /64 is paused");
        let elsewhere = AttemptKeys::new("another", ip("2001:db8:1:3::1"));
        assert!(throttle.attempt(&elsewhere).is_ok(), "another /64 is not");
        let v4 = AttemptKeys::new("another", ip("192.0.2.1"));
        assert!(throttle.attempt(&v4).is_ok());
    }
}
