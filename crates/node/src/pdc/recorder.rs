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
            // Lock order everywhere: the node's own submissions, the ledger, then the PDC's
            // state; never the reverse.
            let Ok(_turn) = self.own_txs.lock() else {
                return submitted;
            };
            let committed = node
                .with_ledger(|l| l.state().account(&node.key().account()).nonce)
                .unwrap_or(0);
            let (batch, nonce) = {
                let Ok(mut inner) = self.inner.lock() else {
                    return submitted;
                };
                let Some(batch) = inner.recorder.next_batch() else {
                    return submitted;
                };
                (batch, inner.next_nonce.max(committed))
            };
            let chain_id = node
                .with_ledger(|l| l.genesis().chain_id.clone())
                .unwrap_or_default();
            let n = batch.len();
            let tx = record_tx(node.key(), &chain_id, nonce, batch.clone());
            let result = node.submit(tx);
            let Ok(mut inner) = self.inner.lock() else {
                return submitted;
            };
            match result {
                Ok(Ok(_)) => {
                    inner.next_nonce = nonce + 1;
                    submitted += n;
                }
                Ok(Err(
                    AdmitError::StaleNonce { expected, .. } | AdmitError::NonceGap { expected, .. },
                )) => {
                    inner.next_nonce = expected;
                    inner.recorder.requeue(batch);
                    return submitted;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "access records not admitted; will retry");
                    inner.recorder.requeue(batch);
                    return submitted;
                }
                Err(e) => {
                    tracing::error!(error = %e, "access records not submitted; will retry");
                    inner.recorder.requeue(batch);
                    return submitted;
                }
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
