//! The executor: receives finalized blocks from marshal in height order, applies each to the
//! ledger, and only then acknowledges it. A block that cannot be applied stops the node
//! (its acknowledgement is dropped, which stops marshal) rather than being skipped.

use crate::block::ChainBlock;
use crate::chain::{COSIGN_EVERY, Chain, Executed};
use commonware_actor::Feedback;
use commonware_consensus::marshal::Update;
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
#[derive(Debug)]
pub struct Executor {
    chain: Arc<Chain>,
    receiver: mpsc::UnboundedReceiver<Update<ChainBlock>>,
    progress: Arc<Progress>,
}

impl Executor {
    /// An executor for `chain` and the mailbox marshal reports to.
    pub fn new(chain: Arc<Chain>, progress: Arc<Progress>) -> (Executor, ExecutorMailbox) {
        let (sender, receiver) = mpsc::unbounded();
        (
            Executor {
                chain,
                receiver,
                progress,
            },
            ExecutorMailbox { sender },
        )
    }

    /// Applies finalized blocks until marshal goes away or a block cannot be applied; after
    /// every [`COSIGN_EVERY`]th height, cosigns the access log's head.
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

/// Seconds since the epoch on `clock`.
pub fn unix_seconds(clock: &impl Clock) -> u64 {
    clock
        .current()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
