//! Access-log entries as people read them, and the claim each row makes about its entry.
//!
//! A row's *claim* is a one-line canonical summary of the log leaf it was drawn from: the
//! leaf's fields the row shows (kind, height, accounts, data, decision, score, times,
//! amounts, purpose, reason). The browser fetches the leaf with its inclusion proof, checks
//! the proof against a checkpoint cosigned by a quorum of the validators it pinned, decodes
//! the leaf itself and rebuilds the claim; a row is shown as verified only if the two are
//! equal, the organisation it names is the one the pinned genesis names for the claim's
//! account, an emergency or payment names this patient as owner, and no entry is shown
//! twice (`static/patient.js`, `verifyLog`). What the log does not hold — block times,
//! descriptions of the data — is the node's word, and a node can leave entries out.

use crate::consent::date_of_day;
use crate::services::{HistoryItem, Organisation, name_of};
use secnet_contract::LogEntry;
use secnet_types::{AccessDecision, Hash};

/// `YYYY-MM-DD HH:MM:SS UTC` of a time in ms since the Unix epoch.
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let day = u32::try_from(secs / 86_400).unwrap_or(u32::MAX);
    let s = secs % 86_400;
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        date_of_day(day),
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// `PolicyDenied` as `policy denied`.
pub(crate) fn words(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_uppercase() && !out.is_empty() {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// The canonical summary of a log entry that the browser rebuilds from the leaf bytes.
///
/// ```text
/// grant h=<height> by=<requester> data=<hash> until=<ms> purpose=<JSON string>
/// access h=<height> by=<requester> data=<hash> decision=<byte> score=<ppm> at=<ms>
/// emergency h=<height> by=<requester> owner=<account> reason=<JSON string>
/// payment h=<height> by=<consumer> data=<hash> holder=<account> holder_amount=<n> owner=<account> owner_amount=<n>
/// ```
///
/// Accounts and hashes are lower-case hex; the decision byte is the leaf's own (0 for
/// delivered, the refusal reason's code otherwise).
pub fn claim(entry: &LogEntry) -> String {
    match entry {
        LogEntry::Grant {
            height,
            data,
            requester,
            expires_at_ms,
            purpose,
            ..
        } => format!(
            "grant h={height} by={requester} data={data} until={expires_at_ms} purpose={}",
            json_text(purpose)
        ),
        LogEntry::Access { height, entry, .. } => {
            let decision = match entry.decision {
                AccessDecision::Delivered => 0u8,
                AccessDecision::Refused(r) => r as u8,
            };
            format!(
                "access h={height} by={} data={} decision={decision} score={} at={}",
                entry.requester, entry.data, entry.score_ppm, entry.at_ms
            )
        }
        LogEntry::Emergency {
            height,
            requester,
            owner,
            reason,
            ..
        } => format!(
            "emergency h={height} by={requester} owner={owner} reason={}",
            json_text(reason)
        ),
        LogEntry::Payment {
            height,
            data,
            consumer,
            holder,
            holder_amount,
            owner,
            owner_amount,
            ..
        } => format!(
            "payment h={height} by={consumer} data={data} holder={holder} \
             holder_amount={holder_amount} owner={owner} owner_amount={owner_amount}"
        ),
    }
}

/// A text as a JSON string (what `JSON.stringify` gives for the same text).
fn json_text(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Whose eyes a row is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Viewer {
    /// The data's owner: rows name who asked, read or paid.
    Owner,
    /// An organisation reading its own trail: rows name the other party, the holder.
    Requester,
}

/// One line of an access history or trail.
#[derive(Debug, Clone)]
pub(crate) struct LogRow {
    pub(crate) emergency: bool,
    pub(crate) payment: bool,
    pub(crate) refused: bool,
    pub(crate) when: String,
    pub(crate) who: String,
    pub(crate) what: String,
    pub(crate) why: String,
    pub(crate) outcome: String,
    pub(crate) score: String,
    pub(crate) index: u64,
    pub(crate) claim: String,
}

/// Rows for `items`, newest first; `describe` names a piece of data for the viewer.
pub(crate) fn log_rows(
    items: &[HistoryItem],
    organisations: &[Organisation],
    describe: &dyn Fn(&Hash) -> String,
    viewer: Viewer,
) -> Vec<LogRow> {
    let purposes: std::collections::HashMap<Hash, String> = items
        .iter()
        .filter_map(|i| match &i.entry {
            LogEntry::Grant { grant, purpose, .. } => Some((*grant, purpose.clone())),
            _ => None,
        })
        .collect();
    let name = |a| name_of(organisations, a);
    let mut rows: Vec<LogRow> = items
        .iter()
        .map(|i| {
            let mut row = LogRow {
                emergency: false,
                payment: false,
                refused: false,
                when: utc(i.block_ms),
                who: String::new(),
                what: String::new(),
                why: "—".into(),
                outcome: String::new(),
                score: "—".into(),
                index: i.index,
                claim: claim(&i.entry),
            };
            match &i.entry {
                LogEntry::Grant {
                    data,
                    requester,
                    holder,
                    purpose,
                    expires_at_ms,
                    ..
                } => {
                    row.who = match viewer {
                        Viewer::Owner => name(requester),
                        Viewer::Requester => name(holder),
                    };
                    row.what = describe(data);
                    row.why = purpose.clone();
                    row.outcome = format!("granted by the ledger until {}", utc(*expires_at_ms));
                }
                LogEntry::Access { entry, holder, .. } => {
                    row.when = utc(entry.at_ms);
                    row.who = match viewer {
                        Viewer::Owner => name(&entry.requester),
                        Viewer::Requester => name(holder),
                    };
                    row.what = describe(&entry.data);
                    if let Some(p) = entry.grant.and_then(|g| purposes.get(&g)) {
                        row.why = p.clone();
                    }
                    row.outcome = match entry.decision {
                        AccessDecision::Delivered => "delivered".into(),
                        AccessDecision::Refused(r) => {
                            row.refused = true;
                            format!("refused: {}", words(&format!("{r:?}")))
                        }
                    };
                    row.score = format!("{:.1} %", f64::from(entry.score_ppm) / 10_000.0);
                }
                LogEntry::Emergency {
                    requester,
                    owner,
                    reason,
                    ..
                } => {
                    // Anyone may put a declaration in the log; only an organisation's node
                    // holds records to read. Another account's is shown for what it is.
                    let organisation = organisations.iter().any(|o| o.account == *requester);
                    row.emergency = organisation;
                    row.why = reason.clone();
                    match viewer {
                        Viewer::Owner => {
                            row.who = name(requester);
                            row.what = if organisation {
                                "all your records at this node".into()
                            } else {
                                "nothing: this account is no organisation of the network and \
                                 holds no records"
                                    .into()
                            };
                        }
                        Viewer::Requester => {
                            row.who = "—".into();
                            row.what = format!("records of patient {}", short(&owner.to_string()));
                        }
                    }
                    row.outcome = if organisation {
                        "emergency access without consent (break-glass)".into()
                    } else {
                        "emergency declared by an outsider".into()
                    };
                }
                LogEntry::Payment {
                    data,
                    consumer,
                    holder,
                    holder_amount,
                    owner_amount,
                    ..
                } => {
                    row.payment = true;
                    row.what = describe(data);
                    row.why = "subscription".into();
                    let price = holder_amount.saturating_add(*owner_amount);
                    match viewer {
                        Viewer::Owner => {
                            row.who = name(consumer);
                            row.outcome = format!(
                                "paid {price}: {owner_amount} to you, {holder_amount} to {} (holder)",
                                name(holder)
                            );
                        }
                        Viewer::Requester => {
                            row.who = name(holder);
                            row.outcome = format!(
                                "paid {price}: {holder_amount} to the holder, {owner_amount} to the patient"
                            );
                        }
                    }
                }
            }
            row
        })
        .collect();
    rows.reverse();
    rows
}

/// The first 12 hex digits of an id.
pub(crate) fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// One payment in an owner's statement of rewards.
#[derive(Debug, Clone)]
pub(crate) struct PaymentRow {
    pub(crate) when: String,
    pub(crate) payer: String,
    pub(crate) what: String,
    pub(crate) price: u64,
    pub(crate) holder: String,
    pub(crate) holder_amount: u64,
    pub(crate) reward: u64,
    pub(crate) index: u64,
    pub(crate) claim: String,
}

/// The statement of every payment to `owner` among `items`, newest first, and its total.
pub(crate) fn statement(
    items: &[HistoryItem],
    owner: &secnet_types::AccountId,
    organisations: &[Organisation],
    describe: &dyn Fn(&Hash) -> String,
) -> (Vec<PaymentRow>, u64) {
    let mut rows: Vec<PaymentRow> = items
        .iter()
        .filter_map(|i| match &i.entry {
            LogEntry::Payment {
                data,
                consumer,
                holder,
                holder_amount,
                owner: o,
                owner_amount,
                ..
            } if o == owner => Some(PaymentRow {
                when: utc(i.block_ms),
                payer: name_of(organisations, consumer),
                what: describe(data),
                price: holder_amount.saturating_add(*owner_amount),
                holder: name_of(organisations, holder),
                holder_amount: *holder_amount,
                reward: *owner_amount,
                index: i.index,
                claim: claim(&i.entry),
            }),
            _ => None,
        })
        .collect();
    rows.reverse();
    let total = rows.iter().fold(0u64, |t, r| t.saturating_add(r.reward));
    (rows, total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use secnet_types::{AccessEntry, AccountId, RefusalReason};

    fn item(index: u64, entry: LogEntry) -> HistoryItem {
        HistoryItem {
            index,
            entry,
            block_ms: 1_764_000_000_000,
        }
    }

    #[test]
    fn claims_name_every_field_a_row_shows() {
        let a = AccountId([1; 32]);
        let access = LogEntry::Access {
            height: 7,
            tx: Hash([2; 32]),
            holder: AccountId([3; 32]),
            entry: AccessEntry {
                data: Hash([4; 32]),
                grant: None,
                requester: a,
                decision: AccessDecision::Refused(RefusalReason::PolicyDenied),
                score_ppm: 1234,
                at_ms: 99,
            },
        };
        let want = format!(
            "access h=7 by={a} data={} decision={} score=1234 at=99",
            Hash([4; 32]),
            RefusalReason::PolicyDenied as u8
        );
        assert_eq!(claim(&access), want);
    }

    #[test]
    fn a_statement_lists_each_payment_to_the_owner_once_with_the_holders_share() {
        let (owner, other) = (AccountId([1; 32]), AccountId([9; 32]));
        let hospital = AccountId([2; 32]);
        let pay = |o, amount| LogEntry::Payment {
            height: 3,
            tx: Hash([5; 32]),
            data: Hash([6; 32]),
            consumer: hospital,
            holder: AccountId([3; 32]),
            holder_amount: 1,
            owner: o,
            owner_amount: amount,
        };
        let organisations = vec![Organisation {
            account: hospital,
            name: "Northside Hospital".into(),
        }];
        let items = vec![
            item(0, pay(owner, 9)),
            item(1, pay(other, 90)),
            item(2, pay(owner, 18)),
        ];
        let (rows, total) = statement(&items, &owner, &organisations, &|_| "record".into());
        assert_eq!(rows.len(), 2);
        assert_eq!(total, 27);
        assert_eq!(rows[0].index, 2, "newest first");
        assert_eq!(rows[0].payer, "Northside Hospital");
        assert_eq!(
            (rows[0].price, rows[0].holder_amount, rows[0].reward),
            (19, 1, 18)
        );
        let timeline = log_rows(&items, &organisations, &|_| "record".into(), Viewer::Owner);
        assert!(timeline.iter().all(|r| r.payment));
        assert!(timeline[2].outcome.starts_with("paid 10: 9 to you, 1 to"));
    }
}
