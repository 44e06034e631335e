//! The consensus application: building proposals from the mempool and checking proposals
//! before voting for them.
//!
//! Verification is stateless with respect to uncommitted blocks: it checks the header against
//! the parent, the body against the header, the chain id and every signature. Nonces and
//! balances are checked when the finalized block executes, where a refusal becomes a receipt;
//! so every block that passes verification executes, on every node, to the same state.

use crate::block::ChainBlock;
use crate::chain::Chain;
use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::simplex::types::Context;
use commonware_cryptography::{Digested, ed25519, sha256};
use commonware_parallel::Sequential;
use commonware_runtime::Clock;
use commonware_utils::SystemTimeExt as _;
use futures::StreamExt as _;
use secnet_types::limits::MAX_BLOCK_TXS;
use secnet_types::{Block, Hash, SignedTransaction, StateCommitment, verify_signatures_except};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use secnet_certified::Scheme;

/// How far ahead of a validator's clock a proposal's timestamp may be, in milliseconds.
pub const MAX_CLOCK_SKEW_MS: u64 = 5_000;

/// The application handed to marshal's inline-verification wrapper.
#[derive(Debug, Clone)]
pub struct SecnetApp {
    chain: Arc<Chain>,
    /// How long a verifier waits to execute the heights a proposal commits to.
    commitment_wait: Duration,
    /// When a leader proposes.
    pace: Pace,
}

/// When a leader proposes: a block is worth its fixed cost (votes, a broadcast, a group
/// commit, a version of the state tree) on every validator only once it carries enough.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// A leader with at least this many transactions proposes at once.
    pub batch_txs: usize,
    /// A leader with fewer (or with only a new state root to commit) proposes once this has
    /// passed since its parent's timestamp, and at most this long into its view (a clock
    /// behind the parent's cannot hold a view up).
    pub block_interval: Duration,
    /// A leader with nothing at all proposes an empty block once this has passed since its
    /// parent's timestamp: an idle chain's block interval.
    pub heartbeat: Duration,
    /// How long a leader with nothing to propose waits in its view before giving it up.
    pub view_wait: Duration,
}

/// When a leader on a given parent, in a view begun at a given time, proposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    /// With some transactions or a new state root to commit.
    interval: SystemTime,
    /// With nothing: an empty block.
    heartbeat: SystemTime,
    /// With nothing before the heartbeat: the view is given up.
    give_up: SystemTime,
}

impl Pace {
    /// This pace within what a leader can follow: a batch of at least one transaction and at
    /// most a full block (a larger one would never be reached), and a block interval of at
    /// most half the view's wait (one as long would give views up with transactions
    /// waiting; half leaves the rest of the view for the proposal to be built and sent).
    pub fn bounded(self, max_block_txs: usize) -> Pace {
        Pace {
            batch_txs: self.batch_txs.clamp(1, max_block_txs.max(1)),
            block_interval: self.block_interval.min(self.view_wait / 2),
            ..self
        }
    }

    /// When a leader whose view began at `view_start` proposes on a parent stamped
    /// `parent_time`. The block interval counts from the parent, but never from later than
    /// the view's start: a parent stamped in the future (a clock ahead, or a Byzantine
    /// leader) cannot hold the next one up.
    fn due(&self, parent_time: SystemTime, view_start: SystemTime) -> Due {
        Due {
            interval: parent_time.min(view_start) + self.block_interval,
            heartbeat: parent_time + self.heartbeat,
            give_up: view_start + self.view_wait,
        }
    }
}

/// How often a waiting leader looks for transactions.
const PROPOSE_POLL: Duration = Duration::from_millis(10);

impl SecnetApp {
    /// An application over `chain`; a proposal committing to heights this validator has not
    /// executed yet is given `commitment_wait` to catch up before it is refused; a leader
    /// proposes as `pace` says, within [`Pace::bounded`].
    pub fn new(chain: Arc<Chain>, commitment_wait: Duration, pace: Pace) -> SecnetApp {
        let pace = pace.bounded(chain.max_block_txs());
        SecnetApp {
            chain,
            commitment_wait,
            pace,
        }
    }

    /// Whether a proposal committing `state` carries news: a state root that differs from
    /// the one already committed before it (the state after a block with transactions). An
    /// empty block leaves the root as it was, so committing it is no reason to propose.
    fn commits_news(&self, state: &StateCommitment) -> bool {
        let Some((_, last)) = state.last() else {
            return false;
        };
        let before = state
            .from
            .checked_sub(1)
            .and_then(|h| self.chain.committed_roots_at(h).ok().flatten());
        before.is_none_or(|(root, _)| root != last)
    }

    /// Checks the header's state commitment against this validator's own roots, waiting (up
    /// to `commitment_wait`) for heights it has not executed yet: they are final, so they
    /// arrive.
    async fn check_commitment<E: Clock>(
        &self,
        runtime: &E,
        block: &Block,
        parent: &Block,
    ) -> Result<(), InvalidProposal> {
        let state = &block.header.state;
        let height = block.header.height;
        if state.from != parent.header.state.next() {
            return Err(InvalidProposal::Commitment(format!(
                "commits from height {}, the parent leaves {}",
                state.from,
                parent.header.state.next()
            )));
        }
        if state.receipts.len() != state.roots.len() {
            return Err(InvalidProposal::Commitment(format!(
                "{} state roots but {} receipts roots",
                state.roots.len(),
                state.receipts.len()
            )));
        }
        if state.next() > height {
            return Err(InvalidProposal::Commitment(format!(
                "block {height} commits to the root of height {}",
                state.next() - 1
            )));
        }
        let deadline = runtime.current() + self.commitment_wait;
        for (committed, claimed) in (state.from..).zip(state.roots.iter().zip(&state.receipts)) {
            let claimed = (*claimed.0, *claimed.1);
            let own = loop {
                let own = self
                    .chain
                    .committed_roots_at(committed)
                    .map_err(|e| InvalidProposal::Commitment(e.to_string()))?;
                match own {
                    Some(root) => break root,
                    None if runtime.current() < deadline => {
                        runtime.sleep(Duration::from_millis(5)).await;
                    }
                    None => {
                        return Err(InvalidProposal::Commitment(format!(
                            "height {committed} not executed here within {:?}",
                            self.commitment_wait
                        )));
                    }
                }
            };
            if own != claimed {
                return Err(InvalidProposal::Commitment(format!(
                    "roots (state {}, receipts {}) for height {committed}, computed (state {}, receipts {})",
                    claimed.0, claimed.1, own.0, own.1
                )));
            }
        }
        Ok(())
    }
}

/// Why a proposal is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProposal {
    /// Not built on the given parent.
    #[error("block {height} does not extend its parent")]
    NotChild {
        /// Height of the block.
        height: u64,
    },
    /// Timestamp before the parent's or too far in the future.
    #[error("block timestamp {got} ms is outside [{parent}, {limit}]")]
    BadTime {
        /// The block's time.
        got: u64,
        /// The parent's time.
        parent: u64,
        /// Now plus the allowed skew.
        limit: u64,
    },
    /// Body and header disagree, or too many transactions.
    #[error("block body is invalid: {0}")]
    Body(String),
    /// A transaction for another network.
    #[error("transaction {0} is for another chain")]
    WrongChain(Hash),
    /// A transaction with an invalid signature.
    #[error("transaction {0} has an invalid signature")]
    BadSignature(Hash),
    /// State roots that do not follow the parent's or differ from this validator's own.
    #[error("state commitment refused: {0}")]
    Commitment(String),
}

/// Checks a proposal against its parent: everything that does not depend on uncommitted state.
///
/// Signatures for which `verified` is true were checked before and are not checked again.
pub fn check_proposal(
    block: &Block,
    parent: &Block,
    chain_id: &str,
    now_ms: u64,
    verified: impl Fn(&SignedTransaction) -> bool,
) -> Result<(), InvalidProposal> {
    let height = block.header.height;
    if block.header.parent != parent.hash() || height != parent.header.height + 1 {
        return Err(InvalidProposal::NotChild { height });
    }
    let limit = now_ms.saturating_add(MAX_CLOCK_SKEW_MS);
    if block.header.timestamp_ms < parent.header.timestamp_ms || block.header.timestamp_ms > limit {
        return Err(InvalidProposal::BadTime {
            got: block.header.timestamp_ms,
            parent: parent.header.timestamp_ms,
            limit,
        });
    }
    if block.txs.len() > MAX_BLOCK_TXS {
        return Err(InvalidProposal::Body(format!(
            "{} transactions",
            block.txs.len()
        )));
    }
    block
        .check_body()
        .map_err(|e| InvalidProposal::Body(e.to_string()))?;
    if let Some(tx) = block.txs.iter().find(|t| t.tx().chain_id != chain_id) {
        return Err(InvalidProposal::WrongChain(tx.hash()));
    }
    let sigs = verify_signatures_except(&block.txs, verified);
    if let Some((tx, _)) = block.txs.iter().zip(sigs).find(|(_, ok)| !ok) {
        return Err(InvalidProposal::BadSignature(tx.hash()));
    }
    Ok(())
}

impl<E> commonware_consensus::Application<E> for SecnetApp
where
    E: Clock + Send + Sync + 'static,
{
    type SigningScheme = Scheme;
    type Context = Context<sha256::Digest, ed25519::PublicKey>;
    type Block = ChainBlock;
    type Input = ();

    async fn propose(
        &mut self,
        (runtime, _context): (E, Self::Context),
        mut ancestry: impl Ancestry<Self::Block>,
        _input: (),
    ) -> Option<Digested<Self::Block>> {
        let parent = ancestry.next().await?;
        let executed = self.chain.executed_height().ok()?;
        // Transactions already in uncommitted ancestors must not be proposed again.
        let mut in_flight: HashSet<Hash> = HashSet::new();
        let mut cursor = Some(parent.clone());
        while let Some(block) = cursor {
            if block.inner().block().header.height <= executed {
                break;
            }
            in_flight.extend(block.inner().block().txs.iter().map(|t| t.hash()));
            cursor = ancestry.next().await;
        }
        let parent_header = &parent.inner().block().header;
        // Propose at once with a batch of transactions. With fewer, or with only a new state
        // root to commit (so that it is certified), propose once the block interval is due:
        // under moderate load blocks fill instead of each paying its fixed cost for a few
        // transactions. With nothing, propose an empty block once the heartbeat is due;
        // before that wait for transactions, and give the view up (the others nullify it)
        // rather than finalize an empty block: an idle chain rests.
        let parent_time = UNIX_EPOCH + Duration::from_millis(parent_header.timestamp_ms);
        let due = self.pace.due(parent_time, runtime.current());
        let (txs, state) = loop {
            let now = runtime.current();
            // Until the interval is due only a batch can make the leader propose: counting
            // the pool is enough to know there is none (the count includes what ancestors
            // hold, so it can only overstate what is left), without selecting from it.
            let pending = self.chain.pending().ok()?;
            if now < due.interval
                && now < due.heartbeat
                && now < due.give_up
                && pending < self.pace.batch_txs
            {
                runtime.sleep(PROPOSE_POLL).await;
                continue;
            }
            let txs = if pending == 0 {
                Vec::new()
            } else {
                self.chain.select(|h| in_flight.contains(h)).ok()?
            };
            let state = self.chain.commitment_after(&parent_header.state).ok()?;
            let something = !txs.is_empty() || self.commits_news(&state);
            if txs.len() >= self.pace.batch_txs
                || (something && now >= due.interval)
                || now >= due.heartbeat
            {
                break (txs, state);
            }
            if now >= due.give_up {
                return None;
            }
            runtime.sleep(PROPOSE_POLL).await;
        };
        let now = runtime.current().epoch_millis();
        let block = Block::new(
            parent_header.height + 1,
            parent.inner().hash(),
            now.max(parent_header.timestamp_ms),
            txs,
        )
        .committing(state);
        Some(Digested::compute(ChainBlock::new(block), &Sequential).await)
    }

    async fn verify(
        &mut self,
        (runtime, _context): (E, Self::Context),
        mut ancestry: impl Ancestry<Self::Block>,
    ) -> bool {
        let (Some(block), Some(parent)) = (ancestry.next().await, ancestry.next().await) else {
            return false;
        };
        let now = runtime.current().epoch_millis();
        let chain = &self.chain;
        let checked = match check_proposal(
            block.inner().block(),
            parent.inner().block(),
            chain.chain_id(),
            now,
            |t| chain.is_verified(t),
        ) {
            Ok(()) => {
                self.check_commitment(&runtime, block.inner().block(), parent.inner().block())
                    .await
            }
            Err(e) => Err(e),
        };
        match checked {
            Ok(()) => {
                let ids = block
                    .inner()
                    .block()
                    .txs
                    .iter()
                    .map(SignedTransaction::signed_id);
                chain.remember_verified(ids).is_ok()
            }
            Err(e) => {
                tracing::warn!(height = block.inner().block().header.height, error = %e, "rejected proposal");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACE: Pace = Pace {
        batch_txs: 1_000,
        block_interval: Duration::from_millis(100),
        heartbeat: Duration::from_secs(5),
        view_wait: Duration::from_millis(1_500),
    };

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn the_interval_counts_from_the_parent_but_never_from_after_the_view_began() {
        // A parent 40 ms old: 60 ms left.
        let due = PACE.due(at(10_000), at(10_040));
        assert_eq!(due.interval, at(10_100));
        assert_eq!(due.heartbeat, at(15_000));
        assert_eq!(due.give_up, at(11_540));
        // An old parent: due at once.
        assert!(PACE.due(at(1_000), at(10_000)).interval <= at(10_000));
        // A parent stamped 5 s ahead of this clock (the most a proposal may be): the
        // interval still counts from the view's start, well before the view is given up.
        let due = PACE.due(at(15_000), at(10_000));
        assert_eq!(due.interval, at(10_100));
        assert!(due.interval < due.give_up);
    }

    #[test]
    fn a_pace_is_bounded_to_what_a_leader_can_follow() {
        // A batch of nothing would propose empty blocks without pause; one larger than a
        // block would never be reached.
        let zero = Pace {
            batch_txs: 0,
            ..PACE
        };
        assert_eq!(zero.bounded(5_000).batch_txs, 1);
        assert_eq!(PACE.bounded(500).batch_txs, 500);
        assert_eq!(PACE.bounded(5_000).batch_txs, 1_000);
        // An interval past the view's wait would give views up with transactions waiting.
        let slow = Pace {
            block_interval: Duration::from_secs(3),
            ..PACE
        };
        assert_eq!(
            slow.bounded(5_000).block_interval,
            Duration::from_millis(750)
        );
        assert_eq!(PACE.bounded(5_000).block_interval, PACE.block_interval);
    }
}
