//! The executor: receives finalized blocks from marshal in height order, applies each to the
//! ledger, and only then acknowledges it. A block that cannot be applied stops the node
//! (its acknowledgement is dropped, which stops marshal) rather than being skipped.

use crate::block::ChainBlock;
use crate::chain::{COSIGN_EVERY, Chain, Executed};
use crate::engine::{MarshalMailbox, Retention};
use commonware_actor::Feedback;
use commonware_consensus::marshal::Update;
use commonware_consensus::types::Height;
use commonware_runtime::Clock;
use commonware_utils::Acknowledgement as _;
use futures::StreamExt as _;
use futures::channel::mpsc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Marshal's reporter: forwards updates to the executor task.
#[derive(Debug, Clone)]
pub struct ExecutorMailbox {
    sender: mpsc::UnboundedSender<Update<ChainBlock>>,
}

impl commonware_consensus::Reporter for ExecutorMailbox {
    type Activity = Update<ChainBlock>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        match self.sender.unbounded_send(activity) {
            Ok(()) => Feedback::Ok,
            Err(_) => Feedback::Closed,
        }
    }
}

/// Progress the executor publishes (for status reporting).
#[derive(Debug, Default)]
pub struct Progress {
    /// Highest height known finalized.
    pub finalized: AtomicU64,
    /// Highest height executed.
    pub executed: AtomicU64,
}

/// The executor task's input and its shared progress.
pub struct Executor {
    chain: Arc<Chain>,
    receiver: mpsc::UnboundedReceiver<Update<ChainBlock>>,
    progress: Arc<Progress>,
    marshal: MarshalMailbox,
    retention: Retention,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("progress", &self.progress)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// History is pruned after every height that is a multiple of this.
pub const PRUNE_EVERY: u64 = 64;

impl Executor {
    /// An executor for `chain` and the mailbox marshal reports to.
    pub fn new(
        chain: Arc<Chain>,
        progress: Arc<Progress>,
        marshal: MarshalMailbox,
        retention: Retention,
    ) -> (Executor, ExecutorMailbox) {
        let (sender, receiver) = mpsc::unbounded();
        (
            Executor {
                chain,
                receiver,
                progress,
                marshal,
                retention,
            },
            ExecutorMailbox { sender },
        )
    }

    /// Applies finalized blocks until marshal goes away or a block cannot be applied; after
    /// every [`COSIGN_EVERY`]th height, cosigns the access log's head; after every
    /// [`PRUNE_EVERY`]th, prunes history beyond the [`Retention`].
    pub async fn run(mut self, clock: impl Clock) {
        while let Some(update) = self.receiver.next().await {
            match update {
                Update::Tip(_, height, _) => {
                    self.progress
                        .finalized
                        .fetch_max(height.get(), Ordering::Relaxed);
                }
                Update::Block(block, ack) => {
                    let height = block.inner().block().header.height;
                    match self.chain.execute(block.inner()) {
                        Ok(Executed::Applied(outcome)) => {
                            tracing::debug!(height, state_root = %outcome.tip.state_root, txs = outcome.receipts.len(), "executed block");
                            if height.is_multiple_of(COSIGN_EVERY)
                                && self.chain.cosign_head(unix_seconds(&clock)).is_err()
                            {
                                tracing::error!(height, "validator state poisoned; stopping");
                                return;
                            }
                            if height.is_multiple_of(PRUNE_EVERY) {
                                self.prune(height);
                            }
                        }
                        Ok(Executed::AlreadyApplied) => {
                            tracing::debug!(height, "block already executed");
                        }
                        Err(e) => {
                            tracing::error!(height, error = %e, "cannot execute finalized block; stopping");
                            return;
                        }
                    }
                    self.progress.executed.fetch_max(height, Ordering::Relaxed);
                    self.progress.finalized.fetch_max(height, Ordering::Relaxed);
                    ack.acknowledge();
                }
            }
        }
    }
}

impl Executor {
    /// Prunes history below the retention after executing `height`: consensus archives
    /// (marshal ignores heights it has not processed) and, if configured, the ledger's
    /// blocks, a few at a time (see `PRUNE_BATCH`), so the ledger is held only briefly.
    fn prune(&self, height: u64) {
        if let Some(below) = height.checked_sub(self.retention.archive) {
            self.marshal.prune(Height::new(below));
        }
        if let Some(below) = self
            .retention
            .ledger
            .and_then(|keep| height.checked_sub(keep))
        {
            match self.chain.prune_blocks_below(below) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(height, pruned = n, below, "pruned ledger blocks"),
                Err(e) => {
                    // Pruning is housekeeping: a failure is reported, and execution goes on.
                    tracing::error!(height, error = %e, "cannot prune ledger blocks");
                }
            }
        }
    }
}

/// Seconds since the epoch on `clock`.
pub fn unix_seconds(clock: &impl Clock) -> u64 {
    clock
        .current()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
