//! Recording every access on the ledger, and showing owners their history.
//!
//! The holder turns each authorization or refusal into an `AccessEntry`, journals it in its
//! store (durably, before a delivery is served: a holder that crashes still records it once
//! it restarts) and queues it; the queue is drained in `RecordAccess` batches of at most `MAX_ACCESS_ENTRIES`, and a batch
//! that could not be submitted, or that the chain rejected, goes back to the front, so no
//! entry is lost or reordered. Before a batch is signed, each entry is checked against the
//! ledger with the contract's own check ([`recordable`]), so one entry the contract would
//! refuse never sinks the others.
//!
//! A refusal of a request that authenticated nobody (no valid token, or a fetch proof that
//! does not verify) costs its sender nothing, so it is not queued one by one: such refusals
//! are counted per data item and reason, and per source, over [`TALLY_WINDOW_MS`], and each
//! window adds one entry per data item and reason.
//! The owner's history is the access log's entries about their data, each exportable as a
//! FHIR R4 `AuditEvent`.

use crate::access::{Authorized, Refused};
use secnet_contract::{LogEntry, State};
use secnet_types::Rejection;
use secnet_types::limits::MAX_ACCESS_ENTRIES;
use secnet_types::{
    AccessDecision, AccessEntry, AccountId, Call, Hash, Keypair, RefusalReason, SignedTransaction,
    Transaction,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;

/// The ledger entry for one decided fetch of `data` at `now_ms`. `claimed` names the
/// requester when the request carried no valid token.
pub fn entry_for(
    result: &Result<Authorized, Refused>,
    data: Hash,
    claimed: AccountId,
    now_ms: u64,
) -> AccessEntry {
    match result {
        Ok(a) => AccessEntry {
            data,
            grant: Some(a.grant.id),
            requester: a.token.consumer,
            decision: AccessDecision::Delivered,
            score_ppm: a.decision.score,
            at_ms: now_ms,
        },
        Err(r) => AccessEntry {
            data,
            grant: r.grant,
            requester: r.requester.unwrap_or(claimed),
            decision: AccessDecision::Refused(r.reason),
            score_ppm: r.score,
            at_ms: now_ms,
        },
    }
}

/// Most entries waiting to be recorded; a holder with this many must refuse to serve
/// (nothing may be delivered that cannot be recorded).
pub const MAX_PENDING_RECORDS: usize = 65_536;

/// How long unauthenticated refusals are counted before their window is recorded.
pub const TALLY_WINDOW_MS: u64 = 60_000;

/// Most distinct (data, reason) pairs and sources a window counts; beyond them only the
/// total grows.
pub const MAX_TALLY_KEYS: usize = 4_096;

/// The entry `holder` can record for `entry` against `state`: the entry itself if the
/// contract accepts it; without its grant if only the grant is at fault (e.g. a valid token
/// presented for other data, or a grant retired since), which keeps the access in the data's
/// history; otherwise the contract's reason (data not listed by this holder).
pub fn recordable(
    state: &State,
    holder: AccountId,
    entry: AccessEntry,
) -> Result<AccessEntry, Rejection> {
    match state.check_access_entry(holder, &entry) {
        Ok(()) => Ok(entry),
        Err(first) if entry.grant.is_some() => {
            let bare = AccessEntry {
                grant: None,
                ..entry
            };
            state
                .check_access_entry(holder, &bare)
                .map(|()| bare)
                .map_err(|_| first)
        }
        Err(e) => Err(e),
    }
}

/// Unauthenticated refusals counted over one window.
#[derive(Debug, Default)]
struct Tally {
    since_ms: Option<u64>,
    by_data: BTreeMap<(Hash, RefusalReason), u64>,
    by_source: HashMap<IpAddr, u64>,
    total: u64,
}

/// What a closed window of unauthenticated refusals counted, for the node's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TallyReport {
    /// Refusals counted.
    pub total: u64,
    /// Distinct (data, reason) pairs recorded.
    pub recorded: usize,
    /// The sources that sent the most, most first (at most 5).
    pub top_sources: Vec<(IpAddr, u64)>,
}

/// An access entry waiting to be recorded, with its number in the store's journal of
/// unrecorded decisions (`Store::journal_access`); none for a window's count of
/// unauthenticated refusals, which is not journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its journal number, to forget once the ledger applied its record.
    pub journal: Option<u64>,
    /// The entry.
    pub entry: AccessEntry,
}

/// Access entries waiting to be recorded on the ledger.
#[derive(Debug, Default)]
pub struct Recorder {
    pending: VecDeque<Queued>,
    tally: Tally,
}

impl Recorder {
    /// An empty queue.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Queues an entry journaled as `journal`. It is always kept (it was journaled, and may
    /// have been served): check [`Self::is_full`] before deciding a fetch.
    pub fn push(&mut self, journal: u64, entry: AccessEntry) {
        self.pending.push_back(Queued {
            journal: Some(journal),
            entry,
        });
    }

    /// Counts a refusal of a request that authenticated nobody, from `source`.
    pub fn count_unauthenticated(
        &mut self,
        data: Hash,
        reason: RefusalReason,
        source: IpAddr,
        now_ms: u64,
    ) {
        let t = &mut self.tally;
        t.since_ms.get_or_insert(now_ms);
        t.total += 1;
        if let Some(n) = t.by_data.get_mut(&(data, reason)) {
            *n += 1;
        } else if t.by_data.len() < MAX_TALLY_KEYS {
            t.by_data.insert((data, reason), 1);
        }
        if let Some(n) = t.by_source.get_mut(&source) {
            *n += 1;
        } else if t.by_source.len() < MAX_TALLY_KEYS {
            t.by_source.insert(source, 1);
        }
    }

    /// Closes the window of unauthenticated refusals if it is [`TALLY_WINDOW_MS`] old:
    /// queues one entry per data item and reason (naming nobody, timed at the window's
    /// start) and says what it counted.
    pub fn close_tally(&mut self, now_ms: u64) -> Option<TallyReport> {
        let since = self.tally.since_ms?;
        if now_ms.saturating_sub(since) < TALLY_WINDOW_MS {
            return None;
        }
        let tally = std::mem::take(&mut self.tally);
        let recorded = tally.by_data.len();
        // Counted refusals are recorded even past the queue's bound, like re-queued entries.
        for (data, reason) in tally.by_data.into_keys() {
            self.pending.push_back(Queued {
                journal: None,
                entry: AccessEntry {
                    data,
                    grant: None,
                    requester: AccountId([0; 32]),
                    decision: AccessDecision::Refused(reason),
                    score_ppm: 0,
                    at_ms: since,
                },
            });
        }
        let mut top: Vec<(IpAddr, u64)> = tally.by_source.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(5);
        Some(TallyReport {
            total: tally.total,
            recorded,
            top_sources: top,
        })
    }

    /// Whether no more entries can be queued.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= MAX_PENDING_RECORDS
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next batch (oldest first), at most `MAX_ACCESS_ENTRIES`.
    pub fn next_batch(&mut self) -> Option<Vec<Queued>> {
        if self.pending.is_empty() {
            return None;
        }
        let n = self.pending.len().min(MAX_ACCESS_ENTRIES);
        Some(self.pending.drain(..n).collect())
    }

    /// Puts a batch that could not be submitted, or was rejected, back in front, in order
    /// (even past [`MAX_PENDING_RECORDS`]: these were accepted before).
    pub fn requeue(&mut self, batch: Vec<Queued>) {
        for e in batch.into_iter().rev() {
            self.pending.push_front(e);
        }
    }
}

/// The holder's `RecordAccess` transaction for a batch.
pub fn record_tx(
    holder: &Keypair,
    chain_id: &str,
    nonce: u64,
    entries: Vec<AccessEntry>,
) -> SignedTransaction {
    Transaction {
        chain_id: chain_id.to_string(),
        sender: holder.account(),
        nonce,
        call: Call::RecordAccess { entries },
    }
    .sign(holder)
}

/// A short, stable name of a refusal reason.
pub fn reason_code(r: RefusalReason) -> &'static str {
    match r {
        RefusalReason::NotSubscribed => "not-subscribed",
        RefusalReason::NoGrant => "no-grant",
        RefusalReason::Expired => "expired",
        RefusalReason::WrongKey => "wrong-key",
        RefusalReason::BadSignature => "bad-signature",
        RefusalReason::Replay => "replay",
        RefusalReason::PolicyDenied => "policy-denied",
        RefusalReason::DetectorFlagged => "detector-flagged",
        RefusalReason::Withdrawn => "withdrawn",
        RefusalReason::IntegrityFailure => "integrity-failure",
    }
}

fn instant(ms: u64) -> String {
    let secs = ms / 1000;
    let rem = secs % 86_400;
    let (y, m, d) = secnet_types::date::civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

fn account(a: &AccountId) -> Value {
    json!({ "system": "urn:secnet:account", "value": a.to_string() })
}

/// A log entry as a FHIR R4 `AuditEvent`; `index` is its position in the access log (kept as
/// an entity so the inclusion proof can be fetched), `block_time_ms` the time of the block
/// that recorded it (a grant's recording time; an access carries the holder's own).
pub fn audit_event(entry: &LogEntry, index: u64, block_time_ms: u64) -> Value {
    match entry {
        LogEntry::Grant {
            height,
            grant,
            data,
            requester,
            holder,
            purpose,
            expires_at_ms,
            ..
        } => json!({
            "resourceType": "AuditEvent",
            "id": format!("secnet-log-{index}"),
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
            "subtype": [{"system": "urn:secnet:event", "code": "grant", "display": "Access grant issued by the data contract"}],
            "action": "E",
            "recorded": instant(block_time_ms),
            "period": {"end": instant(*expires_at_ms)},
            "outcome": "0",
            "purposeOfEvent": [{"text": purpose}],
            "agent": [
                {"who": {"identifier": account(requester)}, "requestor": true},
                {"who": {"identifier": account(holder)}, "requestor": false}
            ],
            "source": {"observer": {"display": format!("SecNet ledger, block {height}")}},
            "entity": [
                {"what": {"identifier": {"system": "urn:secnet:data", "value": data.to_string()}}},
                {"what": {"identifier": {"system": "urn:secnet:grant", "value": grant.to_string()}}},
                {"what": {"identifier": {"system": "urn:secnet:log-index", "value": index.to_string()}}}
            ]
        }),
        LogEntry::Access {
            height,
            holder,
            entry: e,
            ..
        } => {
            let (outcome, desc) = match e.decision {
                AccessDecision::Delivered => ("0", "delivered".to_string()),
                AccessDecision::Refused(r) => ("4", format!("refused: {}", reason_code(r))),
            };
            let mut entities = vec![
                json!({"what": {"identifier": {"system": "urn:secnet:data", "value": e.data.to_string()}}}),
                json!({"what": {"identifier": {"system": "urn:secnet:log-index", "value": index.to_string()}}}),
            ];
            if let Some(g) = e.grant {
                entities.push(json!({"what": {"identifier": {"system": "urn:secnet:grant", "value": g.to_string()}}}));
            }
            json!({
                "resourceType": "AuditEvent",
                "id": format!("secnet-log-{index}"),
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
                "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read", "display": "read"}],
                "action": "R",
                "recorded": instant(e.at_ms),
                "outcome": outcome,
                "outcomeDesc": format!("{desc}; detector score {} ppm", e.score_ppm),
                "agent": [
                    {"who": {"identifier": account(&e.requester)}, "requestor": true},
                    {"who": {"identifier": account(holder)}, "requestor": false}
                ],
                "source": {"observer": {"identifier": account(holder), "display": format!("recorded in block {height}")}},
                "entity": entities
            })
        }
        LogEntry::Emergency {
            height,
            requester,
            owner,
            reason,
            ..
        } => json!({
            "resourceType": "AuditEvent",
            "id": format!("secnet-log-{index}"),
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
            "subtype": [{"system": "urn:secnet:event", "code": "break-glass", "display": "Emergency access without consent"}],
            "action": "R",
            "recorded": instant(block_time_ms),
            "outcome": "0",
            "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT", "display": "Emergency Treatment"}], "text": reason}],
            "agent": [{"who": {"identifier": account(requester)}, "requestor": true}],
            "source": {"observer": {"display": format!("SecNet ledger, block {height}")}},
            "entity": [
                {"what": {"identifier": {"system": "urn:secnet:owner", "value": owner.to_string()}}},
                {"what": {"identifier": {"system": "urn:secnet:log-index", "value": index.to_string()}}}
            ]
        }),
        LogEntry::Payment {
            height,
            data,
            consumer,
            holder,
            holder_amount,
            owner,
            owner_amount,
            ..
        } => json!({
            "resourceType": "AuditEvent",
            "id": format!("secnet-log-{index}"),
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
            "subtype": [{"system": "urn:secnet:event", "code": "payment", "display": "Subscription paid through the data contract"}],
            "action": "E",
            "recorded": instant(block_time_ms),
            "outcome": "0",
            "agent": [
                {"who": {"identifier": account(consumer)}, "requestor": true},
                {"who": {"identifier": account(holder)}, "requestor": false}
            ],
            "source": {"observer": {"display": format!("SecNet ledger, block {height}")}},
            "entity": [
                {"what": {"identifier": {"system": "urn:secnet:data", "value": data.to_string()}},
                 "detail": [
                    {"type": "price", "valueString": (holder_amount.saturating_add(*owner_amount)).to_string()},
                    {"type": "holder_amount", "valueString": holder_amount.to_string()},
                    {"type": "owner_amount", "valueString": owner_amount.to_string()}
                 ]},
                {"what": {"identifier": {"system": "urn:secnet:owner", "value": owner.to_string()}}},
                {"what": {"identifier": {"system": "urn:secnet:log-index", "value": index.to_string()}}}
            ]
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    fn entry(i: u64, decision: AccessDecision) -> AccessEntry {
        AccessEntry {
            data: Hash::digest(&i.to_be_bytes()),
            grant: None,
            requester: AccountId([3; 32]),
            decision,
            score_ppm: 1_000,
            at_ms: 1_700_000_000_000 + i,
        }
    }

    #[test]
    fn batches_keep_order_and_lose_nothing_on_failure() {
        let mut r = Recorder::new();
        for i in 0..600 {
            r.push(i, entry(i, AccessDecision::Delivered));
        }
        let first = r.next_batch().unwrap();
        assert_eq!(first.len(), MAX_ACCESS_ENTRIES);
        r.requeue(first);
        let mut seen = Vec::new();
        while let Some(b) = r.next_batch() {
            seen.extend(b);
        }
        assert_eq!(seen.len(), 600);
        assert!(
            seen.windows(2)
                .all(|w| w[0].entry.at_ms < w[1].entry.at_ms && w[0].journal < w[1].journal)
        );
    }

    #[test]
    fn unauthenticated_refusals_are_counted_and_recorded_once_per_window() {
        let mut r = Recorder::new();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let data = Hash::digest(b"d");
        for i in 0..1_000u64 {
            let source = if i % 10 == 0 { b } else { a };
            r.count_unauthenticated(data, RefusalReason::WrongKey, source, 1_000 + i);
        }
        r.count_unauthenticated(Hash::digest(b"e"), RefusalReason::NoGrant, b, 2_000);
        assert!(r.is_empty(), "nothing is queued one by one");
        assert_eq!(r.close_tally(1_000 + TALLY_WINDOW_MS - 1), None);
        let report = r.close_tally(1_000 + TALLY_WINDOW_MS).unwrap();
        assert_eq!(report.total, 1_001);
        assert_eq!(report.recorded, 2);
        assert_eq!(report.top_sources, vec![(a, 900), (b, 101)]);
        let batch = r.next_batch().unwrap();
        assert_eq!(batch.len(), 2);
        assert!(batch.iter().all(|q| q.journal.is_none()
            && q.entry.grant.is_none()
            && q.entry.requester == AccountId([0; 32])
            && q.entry.at_ms == 1_000));
        assert_eq!(r.close_tally(1_000_000), None, "a new window starts empty");
    }

    #[test]
    fn the_queue_says_when_it_is_full_but_keeps_what_it_accepted() {
        let mut r = Recorder::new();
        for i in 0..MAX_PENDING_RECORDS as u64 {
            assert!(!r.is_full());
            r.push(i, entry(i, AccessDecision::Delivered));
        }
        assert!(r.is_full());
        let batch = r.next_batch().unwrap();
        r.push(1, entry(1, AccessDecision::Delivered));
        r.requeue(batch);
        assert_eq!(r.len(), MAX_PENDING_RECORDS + 1);
    }

    #[test]
    fn audit_events_are_valid_fhir() {
        for decision in [
            AccessDecision::Delivered,
            AccessDecision::Refused(RefusalReason::Replay),
        ] {
            let log = LogEntry::Access {
                height: 7,
                tx: Hash::digest(b"tx"),
                holder: AccountId([1; 32]),
                entry: entry(1, decision),
            };
            let event = audit_event(&log, 42, 0);
            let bytes = serde_json::to_vec(&event).unwrap();
            assert_eq!(crate::fhir::validate(&bytes).unwrap(), "AuditEvent");
            assert_eq!(event["recorded"], "2023-11-14T22:13:20.001Z");
        }
    }

    #[test]
    fn instants_are_utc() {
        assert_eq!(instant(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(instant(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(instant(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
    }
}
