//! The executor: receives finalized blocks from marshal in height order, applies each to the
//! ledger, and acknowledges it once a writer has put it on disk. A block that cannot be
//! applied or written stops the node (its acknowledgement is dropped, which stops marshal)
//! rather than being skipped.

use crate::block::ChainBlock;
use crate::chain::{COSIGN_EVERY, Chain, Executed};
use crate::engine::{MarshalMailbox, Retention};
use commonware_actor::Feedback;
use commonware_consensus::marshal::Update;
use commonware_consensus::types::Height;
use commonware_runtime::{Clock, Spawner};
use commonware_utils::Acknowledgement as _;
use commonware_utils::acknowledgement::Exact;
use futures::StreamExt as _;
use futures::channel::mpsc;
use futures::future::Either;
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

/// An executed block waiting to be written, with marshal's acknowledgement of it.
type Unacknowledged = (u64, Exact);

/// A write starts once this many executed blocks wait for it (half of marshal's
/// `MAX_PENDING_ACKS`, so execution goes on with the other half meanwhile)...
pub const WRITE_BATCH: usize = crate::engine::MAX_PENDING_ACKS / 2;

/// ... or once the oldest has waited this long: fewer, larger writes cost the machine less
/// than one per block, and nothing but marshal's delivery waits for them.
pub const WRITE_LINGER: std::time::Duration = std::time::Duration::from_millis(1000);

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

    /// Applies finalized blocks until marshal goes away or a block cannot be applied or
    /// written; after every [`COSIGN_EVERY`]th height, cosigns the access log's head.
    ///
    /// Execution never waits for the disk. Each executed block is readable at once (by the
    /// API, and by consensus, which commits to its roots) and is handed to a writer on a
    /// thread of its own, which writes every block executed since its last write in one
    /// durable transaction (when [`WRITE_BATCH`] blocks wait or the oldest has waited
    /// [`WRITE_LINGER`]), then acknowledges them to marshal and prunes history after every
    /// [`PRUNE_EVERY`]th height. A crash loses at most the blocks not acknowledged yet,
    /// which marshal delivers again; marshal delivers at most `MAX_PENDING_ACKS` blocks
    /// ahead of the acknowledgements, which bounds how far execution runs ahead of the disk.
    pub async fn run<E: Clock + Spawner>(mut self, context: E) {
        let (to_writer, requests) = mpsc::unbounded();
        let writer = Writer {
            chain: self.chain.clone(),
            marshal: self.marshal.clone(),
            retention: self.retention,
        };
        let mut writer = std::pin::pin!(
            context
                .child("writer")
                .dedicated()
                .spawn(move |context| writer.run(context, requests))
        );
        loop {
            let next = std::pin::pin!(self.receiver.next());
            match futures::future::select(next, writer.as_mut()).await {
                Either::Left((Some(update), _)) => {
                    if !self.handle(update, &context, &to_writer) {
                        return;
                    }
                }
                Either::Left((None, _)) => {
                    // Marshal went away: let the writer finish what was executed, and stop.
                    drop(to_writer);
                    let _ = writer.await;
                    return;
                }
                Either::Right(_) => {
                    tracing::error!("the ledger writer stopped; stopping");
                    return;
                }
            }
        }
    }

    /// Handles one update; false if the validator must stop.
    fn handle(
        &mut self,
        update: Update<ChainBlock>,
        clock: &impl Clock,
        to_writer: &mpsc::UnboundedSender<Unacknowledged>,
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
                if to_writer.unbounded_send((height, ack)).is_err() {
                    tracing::error!(height, "the ledger writer stopped; stopping");
                    return false;
                }
            }
        }
        true
    }
}

/// Writes executed blocks to disk, then acknowledges them to marshal and prunes.
struct Writer {
    chain: Arc<Chain>,
    marshal: MarshalMailbox,
    retention: Retention,
}

impl Writer {
    /// Writes until the executor goes away or a write fails (the ledger is then poisoned,
    /// and the executor stops at once, watching this task). A write starts when
    /// [`WRITE_BATCH`] blocks wait or the oldest has waited [`WRITE_LINGER`].
    async fn run(self, clock: impl Clock, mut requests: mpsc::UnboundedReceiver<Unacknowledged>) {
        while let Some(first) = requests.next().await {
            let mut batch = vec![first];
            let deadline = clock.current() + WRITE_LINGER;
            while batch.len() < WRITE_BATCH {
                let next = std::pin::pin!(requests.next());
                let timer = std::pin::pin!(clock.sleep_until(deadline));
                match futures::future::select(next, timer).await {
                    Either::Left((Some(more), _)) => batch.push(more),
                    Either::Left((None, _)) | Either::Right(_) => break,
                }
            }
            while let Ok(more) = requests.try_recv() {
                batch.push(more);
            }
            // Every block in the batch was executed before it was sent, so this write,
            // which covers every block executed so far, holds it.
            if let Err(e) = self.chain.sync() {
                tracing::error!(error = %e, "cannot write executed blocks to disk; stopping");
                return;
            }
            for (height, ack) in batch {
                ack.acknowledge();
                if height.is_multiple_of(PRUNE_EVERY) {
                    self.prune(height);
                }
            }
        }
    }

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
