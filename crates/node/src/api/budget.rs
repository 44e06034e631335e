//! Budgets per network source (an IPv4 address, an IPv6 /64) for what any anonymous caller
//! can ask of a node: a token bucket each, refilled evenly over a minute.

use crate::problem::Problem;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Sources counted at once; when more arrive, those whose budget is whole are forgotten,
/// and if none is, the newcomers share one budget.
pub(super) const MAX_COUNTED_SOURCES: usize = 65_536;

/// A token bucket per source, `per_minute` tokens whole, refilled evenly over the minute.
#[derive(Debug)]
pub(super) struct SourceBuckets {
    per_minute: u32,
    /// Per source: `(tokens in thousandths, when last refilled, ms)`.
    buckets: HashMap<[u8; 8], (u64, u64)>,
}

impl SourceBuckets {
    /// Budgets of `per_minute` tokens a source.
    pub(super) fn new(per_minute: u32) -> SourceBuckets {
        SourceBuckets {
            per_minute,
            buckets: HashMap::new(),
        }
    }

    /// A whole budget, in thousandths of a token.
    fn full(&self) -> u64 {
        u64::from(self.per_minute) * 1_000
    }

    /// `source`'s bucket (the one newcomers share, when too many sources are counted),
    /// refilled to `now_ms`: `(tokens in thousandths, now_ms)`.
    fn refilled(&mut self, source: [u8; 8], now_ms: u64) -> &mut (u64, u64) {
        let full = self.full();
        let refill = |(tokens, at): (u64, u64)| -> u64 {
            let gained = now_ms.saturating_sub(at).saturating_mul(full) / 60_000;
            tokens.saturating_add(gained).min(full)
        };
        if self.buckets.len() >= MAX_COUNTED_SOURCES && !self.buckets.contains_key(&source) {
            self.buckets.retain(|_, bucket| refill(*bucket) < full);
        }
        let key =
            if self.buckets.len() >= MAX_COUNTED_SOURCES && !self.buckets.contains_key(&source) {
                [0xee; 8]
            } else {
                source
            };
        let bucket = self.buckets.entry(key).or_insert((full, now_ms));
        *bucket = (refill(*bucket), now_ms);
        bucket
    }

    /// In how many seconds a bucket holding `left` thousandths holds `n` tokens.
    fn wait_s(&self, left: u64, n: u32) -> u64 {
        let wait_ms = (u64::from(n) * 1_000)
            .saturating_sub(left)
            .saturating_mul(60_000)
            .div_ceil(self.full().max(1));
        wait_ms.div_ceil(1_000).max(1)
    }

    /// Takes as much of `n` as `source`'s budget holds at `now_ms`: how many it took and, if
    /// fewer than `n`, in how many seconds one more will be there.
    pub(super) fn take(&mut self, source: [u8; 8], n: u32, now_ms: u64) -> (u32, Option<u64>) {
        let bucket = self.refilled(source, now_ms);
        let taken = (bucket.0 / 1_000).min(u64::from(n));
        bucket.0 -= taken * 1_000;
        let left = bucket.0;
        if taken == u64::from(n) {
            return (n, None);
        }
        // `taken` < `n`, a u32.
        let taken = u32::try_from(taken).unwrap_or(n);
        (taken, Some(self.wait_s(left, 1)))
    }

    /// Takes `n` (at most a whole budget) from `source`'s budget at `now_ms` if it holds
    /// them all, and nothing if not: a request is served whole or not at all. `None` if
    /// taken, else in how many seconds it will hold them.
    pub(super) fn take_all(&mut self, source: [u8; 8], n: u32, now_ms: u64) -> Option<u64> {
        let n = n.min(self.per_minute);
        let bucket = self.refilled(source, now_ms);
        let wanted = u64::from(n) * 1_000;
        if bucket.0 >= wanted {
            bucket.0 -= wanted;
            return None;
        }
        let left = bucket.0;
        Some(self.wait_s(left, n))
    }

    #[cfg(test)]
    pub(super) fn counted(&self) -> usize {
        self.buckets.len()
    }
}

/// Proofs (a receipt's, an access-log entry's, the log's consistency, certified state) that
/// one source may ask for a minute, at most this many at once. A single proof costs a few
/// B-tree reads and hashes (tens of microseconds); a page of the log counts one per 100
/// entries asked for and certified state one per 8 keys, on top of the request's one. The
/// budget keeps one source from spending more than a small share of a core on them, while a
/// client checking every answer it gets stays well within it.
pub const PROOFS_PER_SOURCE_PER_MINUTE: u32 = 12_000;

/// What a proof request costs: one, and for a page of the log one per 100 entries asked
/// for (100 unless said: 2; at most 1,000: 11), for certified state one per 8 keys (64 keys:
/// 9).
fn cost(uri: &axum::http::Uri) -> u32 {
    let param = |name: &str| {
        uri.query()?
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    match uri.path() {
        "/v1/log" => {
            let limit = param("limit")
                .and_then(|l| l.parse::<u64>().ok())
                .unwrap_or(100)
                .min(1_000);
            1 + u32::try_from(limit.div_ceil(100)).unwrap_or(10)
        }
        "/v1/state" => {
            let keys = param("keys").map_or(0, |k| k.split(',').filter(|k| !k.is_empty()).count());
            1 + u32::try_from(keys.div_ceil(8)).unwrap_or(8)
        }
        _ => 1,
    }
}

/// What each source has left of [`PROOFS_PER_SOURCE_PER_MINUTE`] (one per router, so nodes
/// in one process do not share it).
#[derive(Debug, Clone)]
pub(super) struct ProofBudget(Arc<Mutex<SourceBuckets>>);

impl Default for ProofBudget {
    fn default() -> Self {
        ProofBudget(Arc::new(Mutex::new(SourceBuckets::new(
            PROOFS_PER_SOURCE_PER_MINUTE,
        ))))
    }
}

/// Charges a proof request ([`cost`]) to its source's budget; over it, answers 429 with
/// `Retry-After` without doing the work.
pub(super) async fn charge_proof(
    State(budget): State<ProofBudget>,
    secnet_web::Source(source): secnet_web::Source,
    request: Request,
    next: Next,
) -> Response {
    let refused = budget
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take_all(
            secnet_pdc::auth::source_key(source),
            cost(request.uri()),
            crate::datadir::now_ms(),
        );
    let Some(retry_s) = refused else {
        return next.run(request).await;
    };
    let status = StatusCode::TOO_MANY_REQUESTS;
    (
        status,
        [(header::RETRY_AFTER, retry_s.to_string())],
        Problem::new(
            status,
            "busy",
            format!(
                "this address may ask for {PROOFS_PER_SOURCE_PER_MINUTE} proofs a minute and is over that; retry in {retry_s} s"
            ),
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER_MINUTE: u32 = 64;

    #[test]
    fn a_source_spends_its_budget_and_it_refills_over_the_minute() {
        let mut m = SourceBuckets::new(PER_MINUTE);
        let (a, b) = ([1; 8], [2; 8]);
        let t = 1_000_000;
        let all = |n: u32| (n, None);
        assert_eq!(m.take(a, PER_MINUTE - 2, t), all(62));
        assert_eq!(
            m.take(a, 3, t),
            (2, Some(1)),
            "over budget: what was left is taken; one more in ~1 s"
        );
        assert_eq!(m.take(a, 1, t), (0, Some(1)));
        assert_eq!(m.take(b, PER_MINUTE, t), all(64), "another source");
        // A minute's budget refills evenly: 16 after 15 s, and never more than whole.
        assert_eq!(m.take(a, 16, t + 15_000), all(16));
        assert_eq!(m.take(a, 1, t + 15_000).0, 0);
        assert_eq!(m.take(a, 1_000, t + 3_600_000), (64, Some(1)));
        assert_eq!(m.take(a, u32::MAX, t + 3_600_000).0, 0, "no overflow");
        // A part-refilled token is kept and waited for, not rounded away.
        assert_eq!(m.take(a, 1, t + 3_600_500), (0, Some(1)));
        assert_eq!(m.take(a, 1, t + 3_601_000), all(1));
    }

    #[test]
    fn a_larger_budget_refills_at_its_own_rate() {
        let mut m = SourceBuckets::new(PROOFS_PER_SOURCE_PER_MINUTE);
        let a = [3; 8];
        assert_eq!(
            m.take(a, PROOFS_PER_SOURCE_PER_MINUTE, 0),
            (PROOFS_PER_SOURCE_PER_MINUTE, None)
        );
        // 200 a second.
        assert_eq!(m.take(a, 1, 0), (0, Some(1)));
        assert_eq!(m.take(a, 300, 1_000), (200, Some(1)));
    }

    #[test]
    fn a_request_is_charged_whole_or_not_at_all() {
        let mut m = SourceBuckets::new(PER_MINUTE);
        let a = [4; 8];
        assert_eq!(m.take(a, 60, 0), (60, None));
        // 4 left: a request of 11 is refused and takes nothing; one of 4 is served.
        let wait = m.take_all(a, 11, 0).unwrap();
        assert!((7..=8).contains(&wait), "{wait}");
        assert_eq!(m.take_all(a, 4, 0), None);
        assert_eq!(m.take_all(a, 1, 0), Some(1));
    }

    #[test]
    fn pages_and_many_keys_cost_more() {
        let cost = |uri: &str| cost(&uri.parse().unwrap());
        assert_eq!(cost("/v1/log/7?size=9"), 1);
        assert_eq!(cost("/v1/log"), 2);
        assert_eq!(cost("/v1/log?from=3&limit=1"), 2);
        assert_eq!(cost("/v1/log?limit=1000"), 11);
        assert_eq!(cost("/v1/log?limit=99999999999"), 11);
        assert_eq!(cost("/v1/state?keys="), 1);
        assert_eq!(cost("/v1/state?keys=a,b,c"), 2);
        let many = vec!["k"; 64].join(",");
        assert_eq!(cost(&format!("/v1/state?keys={many}")), 9);
        assert_eq!(cost("/v1/tx/ab/proof"), 1);
    }

    #[test]
    fn counted_sources_stay_bounded() {
        let mut m = SourceBuckets::new(PER_MINUTE);
        for i in 0..MAX_COUNTED_SOURCES as u64 {
            assert_eq!(m.take(i.to_be_bytes(), 1, 0), (1, None));
        }
        // Nobody's budget is whole yet: newcomers share one.
        let late = u64::MAX.to_be_bytes();
        assert_eq!(m.take(late, PER_MINUTE, 0).1, None);
        assert_eq!(
            m.take([7; 8], 1, 0).0,
            0,
            "shares the late source's spent budget"
        );
        assert_eq!(m.counted(), MAX_COUNTED_SOURCES + 1);
        // A minute later every budget is whole again, and the whole ones are forgotten.
        assert_eq!(m.take([8; 8], 1, 60_000), (1, None));
        assert_eq!(m.counted(), 1);
    }
}
