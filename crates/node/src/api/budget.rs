//! Budgets per network source (an IPv4 address, an IPv6 /64) for what any anonymous caller
//! can ask of a node: a token bucket each, refilled evenly over a minute.
//!
//! Budgets are counted for at most [`MAX_COUNTED_SOURCES`] holders. Once half of that is
//! counted, a network block whose addresses already hold many budgets shares one among its
//! newcomers ([`blocks`]), so that one allocation (an IPv6 /32 holds 2³² /64s) cannot fill
//! the table and push everyone else into the one budget newcomers share when it is full.

use crate::problem::Problem;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Budgets counted at once; when more are asked for, those that are whole are forgotten,
/// and if none is, the newcomers share one budget.
pub(super) const MAX_COUNTED_SOURCES: usize = 65_536;

/// From this many budgets counted on, network blocks share ([`blocks`]). Below it every
/// source has its own, however many of its neighbours came before.
const CROWDED: usize = MAX_COUNTED_SOURCES / 2;

/// In a crowded table, budgets of their own that the sources of one narrow block (an IPv6
/// /48, an IPv4 /24) may hold; its later newcomers share one.
const PER_BLOCK: usize = 64;

/// In a crowded table, budgets that one wide block (an IPv6 /32, an IPv4 /16) may hold, its
/// sources' and its narrow blocks' together; its later newcomers share one.
const PER_WIDE_BLOCK: usize = 256;

/// Forgetting whole budgets walks the table: at most once a second, so newcomers arriving
/// in a crowd cannot make every request pay for a walk.
const SWEEP_EVERY_MS: u64 = 1_000;

/// Who a budget belongs to: a source key ([`secnet_types::source::source_key`]) cut to its
/// first `.1` bytes (8: the source itself; fewer: a network block; 0: every newcomer once
/// the table is full).
type Holder = ([u8; 8], u8);

/// `source` cut to its first `bytes` bytes.
fn cut(source: [u8; 8], bytes: u8) -> Holder {
    let mut key = [0u8; 8];
    for (to, from) in key.iter_mut().zip(source).take(usize::from(bytes)) {
        *to = from;
    }
    (key, bytes)
}

/// The narrow and the wide network block of a source key: an IPv4 address's /24 and /16
/// (its key is the address after four zero bytes), an IPv6 /64's /48 and /32.
fn blocks(source: [u8; 8]) -> (Holder, Holder) {
    if source[..4] == [0; 4] {
        (cut(source, 7), cut(source, 6))
    } else {
        (cut(source, 6), cut(source, 4))
    }
}

/// The blocks a holder's budget counts in: a source's narrow and wide block, a narrow
/// block's wide one.
fn within(holder: Holder) -> Vec<Holder> {
    let (narrow, wide) = blocks(holder.0);
    match holder.1 {
        8 => vec![narrow, wide],
        b if b == narrow.1 => vec![wide],
        _ => Vec::new(),
    }
}

/// Counts `holder`'s budget in the blocks it lies within.
fn count(members: &mut HashMap<Holder, usize>, holder: Holder) {
    for block in within(holder) {
        *members.entry(block).or_insert(0) += 1;
    }
}

/// A bucket of at most `full` thousandths that held `tokens` at `at_ms`, refilled evenly
/// over a minute to `now_ms`.
fn refill(full: u64, (tokens, at_ms): (u64, u64), now_ms: u64) -> u64 {
    let gained = now_ms.saturating_sub(at_ms).saturating_mul(full) / 60_000;
    tokens.saturating_add(gained).min(full)
}

/// A token bucket per source, `per_minute` tokens whole, refilled evenly over the minute.
#[derive(Debug)]
pub(super) struct SourceBuckets {
    per_minute: u32,
    /// Per holder: `(tokens in thousandths, when last refilled, ms)`.
    buckets: HashMap<Holder, (u64, u64)>,
    /// Per network block: how many of the budgets counted are held inside it.
    members: HashMap<Holder, usize>,
    /// When whole budgets were last forgotten, ms.
    swept_ms: Option<u64>,
}

impl SourceBuckets {
    /// Budgets of `per_minute` tokens a source.
    pub(super) fn new(per_minute: u32) -> SourceBuckets {
        SourceBuckets {
            per_minute,
            buckets: HashMap::new(),
            members: HashMap::new(),
            swept_ms: None,
        }
    }

    /// A whole budget, in thousandths of a token.
    fn full(&self) -> u64 {
        u64::from(self.per_minute) * 1_000
    }

    fn members(&self, block: &Holder) -> usize {
        self.members.get(block).copied().unwrap_or(0)
    }

    /// Forgets the budgets that are whole again (at most once every [`SWEEP_EVERY_MS`]).
    fn sweep(&mut self, now_ms: u64) {
        if self
            .swept_ms
            .is_some_and(|at| now_ms < at.saturating_add(SWEEP_EVERY_MS))
        {
            return;
        }
        self.swept_ms = Some(now_ms);
        let full = self.full();
        self.buckets
            .retain(|_, bucket| refill(full, *bucket, now_ms) < full);
        self.members.clear();
        for holder in self.buckets.keys() {
            count(&mut self.members, *holder);
        }
    }

    /// Whose budget a source without one of its own draws on.
    fn holder_for(&mut self, source: [u8; 8], now_ms: u64) -> Holder {
        let own = (source, 8);
        if self.buckets.len() >= CROWDED {
            self.sweep(now_ms);
        }
        if self.buckets.len() < CROWDED {
            return own;
        }
        let (narrow, wide) = blocks(source);
        let wide_has_room = self.members(&wide) < PER_WIDE_BLOCK;
        let holder = if wide_has_room && self.members(&narrow) < PER_BLOCK {
            own
        } else if wide_has_room || self.buckets.contains_key(&narrow) {
            narrow
        } else {
            wide
        };
        if self.buckets.len() >= MAX_COUNTED_SOURCES && !self.buckets.contains_key(&holder) {
            ([0; 8], 0)
        } else {
            holder
        }
    }

    /// `source`'s bucket (or the one it shares, see [`Self::holder_for`]), refilled to
    /// `now_ms`: `(tokens in thousandths, now_ms)`.
    fn refilled(&mut self, source: [u8; 8], now_ms: u64) -> &mut (u64, u64) {
        let own = (source, 8);
        let holder = if self.buckets.contains_key(&own) {
            own
        } else {
            self.holder_for(source, now_ms)
        };
        let full = self.full();
        let bucket = self.buckets.entry(holder).or_insert_with(|| {
            count(&mut self.members, holder);
            (full, now_ms)
        });
        *bucket = (refill(full, *bucket, now_ms), now_ms);
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
/// client checking every answer it gets stays well within it. Whole blocks are charged to
/// it too ([`BLOCK_COST`] each).
pub const PROOFS_PER_SOURCE_PER_MINUTE: u32 = 12_000;

/// What a whole block (`/v1/blocks/{height}`) costs of that budget, whatever it holds: one
/// of 5,000 transactions is read back, decoded and answered as about 5 MB of JSON, so that
/// one source may have 240 a minute.
pub const BLOCK_COST: u32 = 50;

/// What the transaction hashes of a block no longer among those kept in memory
/// (`/v1/blocks/{height}/tx-hashes`) cost of that budget: the block is read back and decoded,
/// every transaction hashed, and only hashes answered. A client following the chain asks
/// for blocks just applied, which cost nothing.
pub const OLD_BLOCK_TX_HASHES_COST: u32 = 10;

/// The proofs budget, for a handler that charges it only on the way that costs
/// ([`OLD_BLOCK_TX_HASHES_COST`]).
#[derive(Debug, Clone)]
pub(super) struct ProofBudget(pub(super) SourceBudget);

impl ProofBudget {
    /// Charges `n` to `source`: `None` if charged, else the answer to give (429 with
    /// `Retry-After`), nothing taken.
    pub(super) fn charge(&self, source: Option<std::net::IpAddr>, n: u32) -> Option<Response> {
        self.0.charge(source, n).map(over_budget)
    }
}

/// 429: `retry_s` until the budget of proofs holds enough again.
fn over_budget(retry_s: u64) -> Response {
    Problem::busy(
        StatusCode::TOO_MANY_REQUESTS,
        retry_s,
        format!(
            "this address may ask for {PROOFS_PER_SOURCE_PER_MINUTE} proofs a minute and is over that; retry in {retry_s} s"
        ),
    )
}

/// What a proof request costs: one, and for a page of the log one per 100 entries asked
/// for (100 unless said: 2; at most 1,000: 11), for a page of listings the same (1,000
/// unless said: 11; one by address: 1), for certified state one per 8 keys (64 keys: 9), for
/// a whole block [`BLOCK_COST`]. The query is read
/// decoded, as the handlers read it; one that does not decode costs one, and its handler
/// refuses it.
fn cost(uri: &axum::http::Uri) -> u32 {
    let query = axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let page = |unless_said: u64| {
        let limit = query
            .get("limit")
            .and_then(|l| l.trim().parse::<u64>().ok())
            .unwrap_or(unless_said)
            .min(1_000);
        1 + u32::try_from(limit.div_ceil(100)).unwrap_or(10)
    };
    match uri.path() {
        "/v1/log" => page(100),
        // By address: one listing at most.
        "/v1/listings" if query.contains_key("address") => 1,
        "/v1/listings" => page(secnet_client::api::MAX_LISTINGS_PAGE as u64),
        "/v1/state" => {
            let keys = query
                .get("keys")
                .map_or(0, |k| k.split(',').filter(|k| !k.is_empty()).count());
            1 + u32::try_from(keys.div_ceil(8)).unwrap_or(8)
        }
        // A whole block (`/v1/blocks/{height}`), not what lies below it.
        path if path
            .strip_prefix("/v1/blocks/")
            .is_some_and(|height| !height.contains('/')) =>
        {
            BLOCK_COST
        }
        _ => 1,
    }
}

/// What each source has left of a budget per minute: [`PROOFS_PER_SOURCE_PER_MINUTE`],
/// [`SNAPSHOTS_PER_SOURCE_PER_MINUTE`] (one per router, so nodes in one process do not share
/// it).
#[derive(Debug, Clone)]
pub(super) struct SourceBudget(Arc<Mutex<SourceBuckets>>);

impl SourceBudget {
    pub(super) fn per_minute(n: u32) -> SourceBudget {
        SourceBudget(Arc::new(Mutex::new(SourceBuckets::new(n))))
    }

    /// Takes `n` from `source`'s budget if it holds them all: `None` if taken, else in how
    /// many seconds it will.
    pub(super) fn charge(&self, source: Option<std::net::IpAddr>, n: u32) -> Option<u64> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take_all(
                secnet_types::source::source_key(source),
                n,
                crate::datadir::now_ms(),
            )
    }
}

/// Charges a proof request ([`cost`]) to its source's budget; over it, answers 429 with
/// `Retry-After` without doing the work.
pub(super) async fn charge_proof(
    State(budget): State<SourceBudget>,
    secnet_web::Source(source): secnet_web::Source,
    request: Request,
    next: Next,
) -> Response {
    match budget.charge(source, cost(request.uri())) {
        None => next.run(request).await,
        Some(retry_s) => over_budget(retry_s),
    }
}

/// Snapshots (`/v1/snapshot`) one source may start a minute. Only one is streamed at a time,
/// so a source that started one after the other would keep everyone else out. A caller
/// turned away because another snapshot is streaming is not charged.
pub const SNAPSHOTS_PER_SOURCE_PER_MINUTE: u32 = 1;

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
        assert_eq!(cost("/v1/listings"), 11);
        assert_eq!(cost("/v1/listings?after=ab&limit=1"), 2);
        assert_eq!(cost("/v1/listings?address=pdc://a/b"), 1);
        assert_eq!(cost("/v1/listings/ab"), 1);
        assert_eq!(cost("/v1/blocks/7"), BLOCK_COST);
        assert_eq!(cost("/v1/blocks/7?limit=1"), BLOCK_COST);
        assert_eq!(cost("/v1/blocks/7/tx-hashes"), 1);
        // Read as the handlers read them: decoded.
        assert_eq!(cost("/v1/log?l%69mit=1000"), 11);
        assert_eq!(cost("/v1/log?limit=%31000"), 11);
        let many = vec!["k"; 64].join("%2C");
        assert_eq!(cost(&format!("/v1/state?k%65ys={many}")), 9);
        assert_eq!(cost("/v1/state?keys=a,%20,b"), 2);
    }

    /// An IPv6 source key: a /64 in the /32 `wide`, the /48 `narrow`, number `n` in it.
    fn v6(wide: u16, narrow: u16, n: u16) -> [u8; 8] {
        let [w0, w1] = wide.to_be_bytes();
        let [a, b] = narrow.to_be_bytes();
        let [c, d] = n.to_be_bytes();
        [0x20, 0x01, w0, w1, a, b, c, d]
    }

    #[test]
    fn below_a_crowd_every_source_has_its_own_budget() {
        let mut m = SourceBuckets::new(PER_MINUTE);
        // 1,000 hosts of one IPv4 /24 and /16, and of one IPv6 /48.
        for i in 0..1_000u16 {
            let [c, d] = i.to_be_bytes();
            assert_eq!(
                m.take([0, 0, 0, 0, 10, 1, c, d], PER_MINUTE, 0),
                (PER_MINUTE, None)
            );
            assert_eq!(m.take(v6(1, 1, i), PER_MINUTE, 0), (PER_MINUTE, None));
        }
        assert_eq!(m.counted(), 2_000);
    }

    #[test]
    fn one_allocation_cannot_crowd_out_everyone_else() {
        let mut m = SourceBuckets::new(PER_MINUTE);
        let t = 1_000_000;
        // An attacker holding one IPv6 /32 spends the budget of every /64 of it it can.
        let mut attacker = (0u16..).flat_map(|narrow| (0u16..256).map(move |n| v6(7, narrow, n)));
        for _ in 0..CROWDED {
            let source = attacker.next().unwrap();
            assert_eq!(m.take(source, PER_MINUTE, t).0, PER_MINUTE);
        }
        // The table is crowded: the attacker's newcomers share its /48's budget, then
        // its /32's, and that is all they get however many more /64s it uses.
        let mut got = 0;
        for _ in 0..10_000 {
            got += m.take(attacker.next().unwrap(), PER_MINUTE, t).0;
        }
        let more = (0u16..1_000).map(|narrow| v6(7, 40_000 + narrow, 0));
        for source in more {
            got += m.take(source, PER_MINUTE, t).0;
        }
        assert_eq!(got, PER_MINUTE, "one shared budget");
        assert!(m.counted() <= CROWDED + 2, "{}", m.counted());
        // Everyone else still has a budget of their own, and so do the first sources of
        // another block in a crowded table.
        for i in 0..200u16 {
            assert_eq!(m.take(v6(8, i, 1), PER_MINUTE, t), (PER_MINUTE, None));
            let [c, d] = i.to_be_bytes();
            assert_eq!(m.take([0, 0, 0, 0, 192, c, d, 1], 1, t), (1, None));
        }
        // Past its share, a block of them shares too.
        for i in 0..PER_BLOCK as u16 {
            assert_eq!(m.take(v6(9, 1, i), PER_MINUTE, t), (PER_MINUTE, None));
        }
        assert_eq!(m.take(v6(9, 1, 1_000), PER_MINUTE, t), (PER_MINUTE, None));
        assert_eq!(m.take(v6(9, 1, 1_001), 1, t).0, 0, "shares its /48's");
        assert_eq!(
            m.take(v6(9, 2, 0), 1, t),
            (1, None),
            "the next /48 of the /32"
        );
    }

    #[test]
    fn counted_sources_stay_bounded() {
        let mut m = SourceBuckets::new(PER_MINUTE);
        // Each in a /32 of its own: no block is over its share.
        let spread = |i: u32| {
            let [_, b, c, d] = i.to_be_bytes();
            [0x20, b, c, d, 0, 0, 0, 1]
        };
        for i in 0..MAX_COUNTED_SOURCES as u32 {
            assert_eq!(m.take(spread(i), 1, 0), (1, None));
        }
        // Nobody's budget is whole yet: newcomers share one.
        let late = spread(u32::MAX);
        assert_eq!(m.take(late, PER_MINUTE, 0).1, None);
        assert_eq!(
            m.take(spread(u32::MAX - 1), 1, 500).0,
            0,
            "shares the late source's spent budget"
        );
        assert_eq!(m.counted(), MAX_COUNTED_SOURCES + 1);
        // A minute later every budget is whole again, and the whole ones are forgotten.
        assert_eq!(m.take([8; 8], 1, 60_500), (1, None));
        assert_eq!(m.counted(), 1);
    }

    #[test]
    fn a_crowd_of_newcomers_walks_the_table_at_most_once_a_second() {
        let mut m = SourceBuckets::new(PER_MINUTE);
        for i in 0..CROWDED as u32 {
            let [_, b, c, d] = i.to_be_bytes();
            m.take([0x20, b, c, d, 0, 0, 0, 1], 1, 0);
        }
        // 1,000 newcomers in the first second: one walk.
        for i in 0..1_000u16 {
            m.take(v6(3, i, 0), 1, u64::from(i));
        }
        assert_eq!(m.swept_ms, Some(0));
        // Every budget is whole a minute after it was last drawn on; the next walk forgets
        // them.
        m.take(v6(4, 0, 0), 1, 61_000);
        assert_eq!(m.counted(), 1);
        assert_eq!(m.swept_ms, Some(61_000));
    }
}
