//! Recording: queued fetch decisions submitted to the node's own mempool as `RecordAccess`
//! transactions, with the node's nonce kept; each entry checked against the ledger before it
//! is signed, unadmitted batches re-queued, and every submitted batch followed to its
//! receipt: one the chain rejected (the state moved between the check and the block) goes
//! back in the queue, to be checked again.

use super::Pdc;
use crate::backend::{Backend, TxStatus};
use crate::mempool::AdmitError;
use secnet_pdc::record::{record_tx, recordable};
use secnet_types::{AccessEntry, Hash};
use std::sync::Arc;
use std::time::Duration;

/// A submitted batch of access records, until its receipt is read.
#[derive(Debug)]
pub(super) struct InFlight {
    tx: Hash,
    entries: Vec<AccessEntry>,
    submitted_ms: u64,
}

/// How long a submitted batch may be neither pending nor in a block before it is submitted
/// again (it left the mempool without being included, e.g. the node restarted its pool).
const LOST_AFTER_MS: u64 = 30_000;

/// Most batches submitted and not yet in a block: a stalled chain makes the recorder wait
/// rather than fill the mempool (everyone's) with the holder's records.
const MAX_IN_FLIGHT: usize = 16;

impl InFlight {
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
                    .into_iter()
                    .map(|e| recordable(l.state(), holder, e))
                    .collect::<Vec<_>>()
            }) else {
                return submitted;
            };
            let mut entries = Vec::with_capacity(checked.len());
            for c in checked {
                match c {
                    Ok(e) => entries.push(e),
                    Err(why) => tracing::warn!(
                        error = %why,
                        "an access entry cannot be recorded on the ledger; kept in this log only"
                    ),
                }
            }
            if entries.is_empty() {
                continue;
            }
            let n = entries.len();
            let result = self.submit_at_next_nonce(node, |chain_id, nonce| {
                record_tx(node.key(), chain_id, nonce, entries.clone())
            });
            match result {
                Ok(Ok(tx)) => {
                    submitted += n;
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
        for f in in_flight {
            match node.tx_status(&f.tx) {
                Ok(TxStatus::Committed { receipt, .. }) if receipt.is_applied() => {}
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
