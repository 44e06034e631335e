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
use commonware_utils::acknowledgement::Exact;
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

/// Most blocks executed before the disk is flushed and they are acknowledged: marshal's
/// `max_pending_acks`, beyond which it delivers nothing more.
pub const MAX_UNSYNCED: usize = crate::engine::MAX_PENDING_ACKS;

/// Longest an executed block waits before the disk is flushed.
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

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
    ///
    /// Blocks are acknowledged only once they are on disk. Executed blocks are readable at
    /// once (by the API and by consensus, which commits to their roots), so the disk is
    /// flushed only when [`MAX_UNSYNCED`] blocks wait for it or the oldest has waited
    /// [`SYNC_INTERVAL`]: one flush covers several blocks, and pages several blocks change
    /// are written once. A crash loses at most the unflushed blocks, which consensus delivers
    /// again since they were not acknowledged.
    pub async fn run(mut self, clock: impl Clock) {
        let mut unsynced: Vec<(u64, Exact)> = Vec::new();
        let mut due = None;
        loop {
            let update = match due {
                None => self.receiver.next().await,
                Some(deadline) => {
                    let next = std::pin::pin!(self.receiver.next());
                    let timer = std::pin::pin!(clock.sleep_until(deadline));
                    match futures::future::select(next, timer).await {
                        futures::future::Either::Left((update, _)) => update,
                        futures::future::Either::Right(((), _)) => {
                            if !self.sync(&mut unsynced) {
                                return;
                            }
                            due = None;
                            continue;
                        }
                    }
                }
            };
            let Some(update) = update else {
                // Marshal went away: flush what was executed, and stop.
                if !unsynced.is_empty() {
                    self.sync(&mut unsynced);
                }
                return;
            };
            if !self.handle(update, &clock, &mut unsynced) {
                return;
            }
            if unsynced.len() >= MAX_UNSYNCED {
                if !self.sync(&mut unsynced) {
                    return;
                }
                due = None;
            } else if due.is_none() && !unsynced.is_empty() {
                due = Some(clock.current() + SYNC_INTERVAL);
            }
        }
    }

    /// Handles one update; false if the validator must stop.
    fn handle(
        &mut self,
        update: Update<ChainBlock>,
        clock: &impl Clock,
        unsynced: &mut Vec<(u64, Exact)>,
    ) -> bool {
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
                            && self.chain.cosign_head(unix_seconds(clock)).is_err()
                        {
                            tracing::error!(height, "validator state poisoned; stopping");
                            return false;
                        }
                    }
                    Ok(Executed::AlreadyApplied) => {
                        tracing::debug!(height, "block already executed");
                    }
                    Err(e) => {
                        tracing::error!(height, error = %e, "cannot execute finalized block; stopping");
                        return false;
                    }
                }
                self.progress.executed.fetch_max(height, Ordering::Relaxed);
                self.progress.finalized.fetch_max(height, Ordering::Relaxed);
                unsynced.push((height, ack));
            }
        }
        true
    }

    /// Flushes the executed blocks to disk, then acknowledges them and prunes if one of them
    /// is due; false if the validator must stop.
    fn sync(&mut self, unsynced: &mut Vec<(u64, Exact)>) -> bool {
        if let Err(e) = self.chain.sync() {
            tracing::error!(error = %e, "cannot write executed blocks to disk; stopping");
            return false;
        }
        for (height, ack) in unsynced.drain(..) {
            ack.acknowledge();
            if height.is_multiple_of(PRUNE_EVERY) {
                self.prune(height);
            }
        }
        true
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
