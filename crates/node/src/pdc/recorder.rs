//! Recording: queued fetch decisions submitted to the node's own mempool as `RecordAccess`
//! transactions, with the node's nonce kept; each entry checked against the ledger before it
//! is signed, unadmitted batches re-queued, and every submitted batch followed to its
//! receipt: one the chain rejected (the state moved between the check and the block) goes
//! back in the queue, to be checked again. An entry leaves the store's journal only once
//! the ledger applied its record (or the contract's check says it can never be recorded): a
//! crash in between records it again on restart, at least once rather than never.

use super::Pdc;
use crate::backend::{Backend, TxStatus};
use crate::mempool::AdmitError;
use secnet_pdc::record::{Queued, record_tx, recordable};
use secnet_types::Hash;
use std::sync::Arc;
use std::time::Duration;

/// A submitted batch of access records, until its receipt is read.
#[derive(Debug)]
pub(super) struct InFlight {
    tx: Hash,
    entries: Vec<Queued>,
    submitted_ms: u64,
}

/// How long a submitted batch may be neither pending nor in a block before it is submitted
/// again (it left the mempool without being included, e.g. the node restarted its pool).
const LOST_AFTER_MS: u64 = 30_000;

/// Most batches submitted and not yet in a block: a stalled chain makes the recorder wait
/// rather than fill the mempool (everyone's) with the holder's records.
const MAX_IN_FLIGHT: usize = 16;

impl InFlight {
    /// A batch submitted before the node restarted: its receipt is read on the next round,
    /// and if the transaction is neither pending nor in a block it is submitted again at
    /// once (the node's nonce keeps it from being recorded twice).
    pub(super) fn restored(tx: Hash, entries: Vec<Queued>) -> InFlight {
        InFlight {
            tx,
            entries,
            submitted_ms: 0,
        }
    }

    /// Entries it carries.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Pdc {
    /// Reads the receipts of submitted batches, re-queues the rejected and the lost, then
    /// submits queued access records as `RecordAccess` transactions. Returns how many
    /// entries were submitted.
    pub fn flush_records(&self, node: &dyn Backend) -> usize {
        let now = super::routes::now_ms();
        self.follow_receipts(node, now);
        if let Ok(mut inner) = self.inner.lock()
            && let Some(report) = inner.recorder.close_tally(now)
        {
            tracing::info!(
                refusals = report.total,
                recorded = report.recorded,
                top_sources = ?report.top_sources,
                "unauthenticated fetches refused this window"
            );
        }
        let holder = node.key().account();
        let mut submitted = 0;
        loop {
            let batch = {
                let Ok(mut inner) = self.inner.lock() else {
                    return submitted;
                };
                if inner.in_flight.len() >= MAX_IN_FLIGHT {
                    return submitted;
                }
                let Some(batch) = inner.recorder.next_batch() else {
                    return submitted;
                };
                batch
            };
            // The contract refuses a whole batch for one bad entry: check each first.
            let Ok(checked) = node.with_ledger(|l| {
                batch
                    .iter()
                    .map(|q| {
                        recordable(l.state(), holder, q.entry.clone())
                            .map(|entry| Queued {
                                journal: q.journal,
                                entry,
                            })
                            .map_err(|why| (q.journal, q.entry.requester, why))
                    })
                    .collect::<Vec<_>>()
            }) else {
                // The ledger cannot be read: the batch waits in front for the next round.
                if let Ok(mut inner) = self.inner.lock() {
                    inner.recorder.requeue(batch);
                }
                return submitted;
            };
            let mut entries = Vec::with_capacity(checked.len());
            let mut never = Vec::new();
            let mut never_by = Vec::new();
            for c in checked {
                match c {
                    Ok(q) => entries.push(q),
                    Err((journal, requester, why)) => {
                        tracing::warn!(
                            error = %why,
                            "an access entry cannot be recorded on the ledger; kept in this log only"
                        );
                        never.extend(journal);
                        never_by.push(requester);
                    }
                }
            }
            if let Ok(mut inner) = self.inner.lock() {
                inner.release(&never_by);
            }
            self.forget_journaled(&never);
            if entries.is_empty() {
                continue;
            }
            let n = entries.len();
            let result = self.submit_at_next_nonce(node, |chain_id, nonce| {
                record_tx(
                    node.key(),
                    chain_id,
                    nonce,
                    entries.iter().map(|q| q.entry.clone()).collect(),
                )
            });
            match result {
                Ok(Ok(tx)) => {
                    submitted += n;
                    // After a restart, this transaction's receipt tells whether these are
                    // recorded (a failure here only risks recording them twice).
                    let numbers: Vec<u64> = entries.iter().filter_map(|q| q.journal).collect();
                    if let Err(e) = self.store.mark_submitted(&numbers, &tx) {
                        tracing::warn!(error = %e, "cannot note a submitted batch in the access journal");
                    }
                    if let Ok(mut inner) = self.inner.lock() {
                        inner.in_flight.push_back(InFlight {
                            tx,
                            entries,
                            submitted_ms: now,
                        });
                    }
                    continue;
                }
                // The nonce was moved on to the one expected; the batch goes next time.
                Ok(Err(AdmitError::StaleNonce { .. } | AdmitError::NonceGap { .. })) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "access records not admitted; will retry"),
                Err(e) => tracing::error!(error = %e, "access records not submitted; will retry"),
            }
            // Unadmitted: back in the queue, in order.
            if let Ok(mut inner) = self.inner.lock() {
                inner.recorder.requeue(entries);
            }
            return submitted;
        }
    }

    /// Follows submitted batches: forgets the applied ones, re-queues (in their order, ahead
    /// of newer entries) those the chain rejected and those lost from the mempool.
    fn follow_receipts(&self, node: &dyn Backend, now: u64) {
        let in_flight = match self.inner.lock() {
            Ok(mut inner) => std::mem::take(&mut inner.in_flight),
            Err(_) => return,
        };
        let mut waiting = std::collections::VecDeque::new();
        let mut again = Vec::new();
        let mut recorded = Vec::new();
        let mut recorded_by = Vec::new();
        for f in in_flight {
            match node.tx_status(&f.tx) {
                Ok(TxStatus::Committed { receipt, .. }) if receipt.is_applied() => {
                    recorded.extend(f.entries.iter().filter_map(|q| q.journal));
                    recorded_by.extend(f.entries.iter().map(|q| q.entry.requester));
                }
                Ok(TxStatus::Committed {
                    receipt, height, ..
                }) => {
                    tracing::warn!(
                        tx = %f.tx,
                        height,
                        receipt = ?receipt,
                        "access records rejected by the chain; checking them again"
                    );
                    again.extend(f.entries);
                }
                Ok(TxStatus::Unknown) if now.saturating_sub(f.submitted_ms) > LOST_AFTER_MS => {
                    tracing::warn!(tx = %f.tx, "access records lost before a block; submitting again");
                    again.extend(f.entries);
                }
                Ok(_) | Err(_) => waiting.push_back(f),
            }
        }
        if let Ok(mut inner) = self.inner.lock() {
            inner.in_flight = waiting;
            if !again.is_empty() {
                inner.recorder.requeue(again);
            }
            inner.release(&recorded_by);
        }
        self.forget_journaled(&recorded);
    }

    /// Drops entries from the store's journal (their records are on the ledger, or never can
    /// be). A failure leaves them there, to be recorded again after a restart.
    fn forget_journaled(&self, numbers: &[u64]) {
        if let Err(e) = self.store.forget_recorded(numbers) {
            tracing::error!(error = %e, "cannot clear recorded entries from the access journal");
        }
    }
}

/// Submits queued access records every `every` until `shutdown` turns true, then once more.
pub async fn run_recorder(
    node: Arc<dyn Backend>,
    pdc: Arc<Pdc>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let stop = tokio::select! {
            () = tokio::time::sleep(every) => false,
            _ = shutdown.changed() => true,
        };
        let (n, p) = (node.clone(), pdc.clone());
        let _ = tokio::task::spawn_blocking(move || {
            p.reload_rules();
            p.flush_records(&*n)
        })
        .await;
        if stop || *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use crate::backend::Backend;
    use crate::datadir::DataDir;
    use crate::dev::{DevNode, ProducerConfig};
    use secnet_contract::LogEntry;
    use secnet_ledger::LogSubject;
    use secnet_types::tx::{Call, DataKind, RegisterData};
    use secnet_types::{AccessDecision, AccessEntry, AccountId, Hash, RefusalReason, Transaction};

    /// An access decision journaled by a holder that stopped before recording it is
    /// recorded after the restart, then leaves the journal.
    #[test]
    fn a_journaled_access_survives_a_stop_and_is_recorded_once_back() {
        let dir = tempfile::tempdir().unwrap();
        let (genesis, key) = DataDir::new(dir.path()).open_dev(&[]).unwrap();
        let node =
            DevNode::open(dir.path(), &genesis, key.clone(), ProducerConfig::default()).unwrap();
        let data = Hash::digest(b"a record held here");
        let register = Transaction {
            chain_id: genesis.chain_id.clone(),
            sender: key.account(),
            nonce: 0,
            call: Call::RegisterData(RegisterData {
                hash: data,
                description: "a record".into(),
                address: "pdc://here/record".into(),
                price: 1,
                kind: DataKind::UserData,
                holder: key.account(),
                holder_share_bps: 1_000,
            }),
        }
        .sign(&key);
        node.submit(register).unwrap().unwrap();
        node.produce_block().unwrap();
        let entry = AccessEntry {
            data,
            grant: None,
            requester: AccountId([7; 32]),
            decision: AccessDecision::Refused(RefusalReason::NoGrant),
            score_ppm: 0,
            at_ms: 1_700_000_000_000,
        };
        // Journaled, then the holder stops before its recorder ran.
        {
            let pdc = super::super::open(dir.path(), &key).unwrap();
            pdc.store.journal_access(&entry).unwrap();
        }
        let pdc = super::super::open(dir.path(), &key).unwrap();
        assert_eq!(pdc.store.unrecorded().unwrap().len(), 1);
        assert_eq!(pdc.flush_records(&node), 1);
        node.produce_block().unwrap();
        // The record is in a block, and the holder stops again before it read the receipt:
        // back, it reads the receipt of the transaction noted in the journal and does not
        // record the entry twice.
        drop(pdc);
        let pdc = super::super::open(dir.path(), &key).unwrap();
        assert!(matches!(
            pdc.store.unrecorded().unwrap().as_slice(),
            [(_, _, Some(_))]
        ));
        let waiting = |pdc: &crate::pdc::Pdc| {
            pdc.inner
                .lock()
                .unwrap()
                .waiting_by
                .get(&entry.requester)
                .copied()
        };
        assert_eq!(
            waiting(&pdc),
            Some(1),
            "a restored entry counts for its requester"
        );
        assert_eq!(pdc.flush_records(&node), 0);
        node.produce_block().unwrap();
        pdc.flush_records(&node);
        assert!(
            pdc.store.unrecorded().unwrap().is_empty(),
            "forgotten once applied"
        );
        assert_eq!(
            waiting(&pdc),
            None,
            "and no longer counts for its requester"
        );
        let recorded = node
            .core()
            .with_ledger(|l| {
                let indices = l.log_indices(LogSubject::Data(data)).unwrap();
                l.log_leaves(&indices)
                    .unwrap()
                    .into_iter()
                    .flatten()
                    .filter(|leaf| {
                        matches!(LogEntry::from_bytes(leaf).unwrap(),
                            LogEntry::Access { entry: e, .. } if e == entry)
                    })
                    .count()
            })
            .unwrap();
        assert_eq!(recorded, 1);
    }
}
