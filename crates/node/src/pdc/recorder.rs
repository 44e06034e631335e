//! Recording: queued fetch decisions submitted to the node's own mempool as `RecordAccess`
//! transactions, with the node's nonce kept and unadmitted batches re-queued.

use super::Pdc;
use crate::backend::Backend;
use crate::mempool::AdmitError;
use secnet_pdc::record::record_tx;
use std::sync::Arc;
use std::time::Duration;

impl Pdc {
    /// Submits queued access records as `RecordAccess` transactions. Returns how many
    /// entries were submitted.
    pub fn flush_records(&self, node: &dyn Backend) -> usize {
        let mut submitted = 0;
        loop {
            let batch = {
                let Ok(mut inner) = self.inner.lock() else {
                    return submitted;
                };
                let Some(batch) = inner.recorder.next_batch() else {
                    return submitted;
                };
                batch
            };
            let n = batch.len();
            let result = self.submit_at_next_nonce(node, |chain_id, nonce| {
                record_tx(node.key(), chain_id, nonce, batch.clone())
            });
            match result {
                Ok(Ok(_)) => {
                    submitted += n;
                    continue;
                }
                // The nonce was moved on to the one expected; the batch goes next time.
                Ok(Err(AdmitError::StaleNonce { .. } | AdmitError::NonceGap { .. })) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "access records not admitted; will retry"),
                Err(e) => tracing::error!(error = %e, "access records not submitted; will retry"),
            }
            // Unadmitted: back in the queue, in order.
            if let Ok(mut inner) = self.inner.lock() {
                inner.recorder.requeue(batch);
            }
            return submitted;
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
