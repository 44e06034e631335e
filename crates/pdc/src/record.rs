//! Recording every access on the ledger, and showing owners their history.
//!
//! The holder turns each authorization or refusal into an `AccessEntry` and queues it; the
//! queue is drained in `RecordAccess` batches of at most `MAX_ACCESS_ENTRIES`, and a batch
//! that could not be submitted goes back to the front, so no entry is lost or reordered.
//! The owner's history is the access log's entries about their data, each exportable as a
//! FHIR R4 `AuditEvent`.

use crate::access::{Authorized, Refused};
use secnet_contract::LogEntry;
use secnet_types::limits::MAX_ACCESS_ENTRIES;
use secnet_types::{
    AccessDecision, AccessEntry, AccountId, Call, Hash, Keypair, RefusalReason, SignedTransaction,
    Transaction,
};
use serde_json::{Value, json};
use std::collections::VecDeque;

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

/// Access entries waiting to be recorded on the ledger.
#[derive(Debug, Default)]
pub struct Recorder {
    pending: VecDeque<AccessEntry>,
}

impl Recorder {
    /// An empty queue.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Queues an entry.
    pub fn push(&mut self, entry: AccessEntry) {
        self.pending.push_back(entry);
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
    pub fn next_batch(&mut self) -> Option<Vec<AccessEntry>> {
        if self.pending.is_empty() {
            return None;
        }
        let n = self.pending.len().min(MAX_ACCESS_ENTRIES);
        Some(self.pending.drain(..n).collect())
    }

    /// Puts a batch that could not be submitted back in front, in order.
    pub fn requeue(&mut self, batch: Vec<AccessEntry>) {
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
            r.push(entry(i, AccessDecision::Delivered));
        }
        let first = r.next_batch().unwrap();
        assert_eq!(first.len(), MAX_ACCESS_ENTRIES);
        r.requeue(first);
        let mut seen = Vec::new();
        while let Some(b) = r.next_batch() {
            seen.extend(b);
        }
        assert_eq!(seen.len(), 600);
        assert!(seen.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
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
