//! Wiring one validator: block broadcast, marshal (with its archives and backfill resolver),
//! the inline-verification wrapper around the application, simplex consensus, and the
//! executor. Generic over the runtime (deterministic simulation or tokio) and the network
//! (simulated or authenticated TCP).

use crate::application::{Pace, Scheme, SecnetApp};
use crate::block::{ChainBlock, digest_of};
use crate::chain::Chain;
use crate::executor::{Executor, Progress};
use crate::recovery::{GuardedReceiver, GuardedSender, Held, Recovery, Watching};
use commonware_broadcast::buffered;
use commonware_consensus::marshal::{
    self, core::Actor as Marshal, resolver::p2p as marshal_resolver, standard::Inline,
};
use commonware_consensus::simplex::{self, ForwardPolicy, SkipPolicy, elector::RoundRobin};
use commonware_consensus::types::{Epoch, FixedEpocher, ViewDelta};
use commonware_cryptography::certificate::{ConstantProvider, Verifier};
use commonware_cryptography::{Digested, Sha256, Signer as _, ed25519};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::{immutable, prunable};
use commonware_storage::translator::EightCap;
use commonware_utils::ordered::Set;
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize};
use rand_core::CryptoRng;
use secnet_certified::Finalization;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

/// The p2p channels a validator uses.
pub mod channels {
    /// Simplex votes.
    pub const VOTES: u64 = 0;
    /// Simplex certificates.
    pub const CERTIFICATES: u64 = 1;
    /// Simplex's resolver of missing certificates.
    pub const RESOLVER: u64 = 2;
    /// Marshal's backfill of missing blocks.
    pub const BACKFILL: u64 = 3;
    /// Full-block broadcast.
    pub const BLOCKS: u64 = 4;
    /// Transaction gossip.
    pub const TXS: u64 = 5;
}

/// Timeouts and sizes of one validator.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How long to wait for a leader's proposal.
    pub leader_timeout: Duration,
    /// How long to wait for a certificate once a proposal is seen.
    pub certification_timeout: Duration,
    /// How often to retry a nullify vote.
    pub timeout_retry: Duration,
    /// How long a fetch from a peer may take.
    pub fetch_timeout: Duration,
    /// An idle chain adds one empty block per heartbeat: a leader with no transactions and
    /// no new state root to commit proposes only once this long has passed since its
    /// parent's timestamp. Before that it waits for transactions for most of its view and
    /// then lets the view be skipped (nullified), which costs a few votes and no block.
    pub heartbeat: Duration,
    /// A leader with fewer than [`Self::batch_txs`] transactions proposes once this has
    /// passed since its parent: blocks per second under moderate load, and the most a
    /// transaction waits for a block beyond the pipeline's own pace. At most 3/8 of
    /// [`Self::leader_timeout`] (half of the wait a leader gives its view): a longer one is
    /// lowered to that.
    pub block_interval: Duration,
    /// A leader with at least this many transactions proposes at once; between one and a
    /// full block.
    pub batch_txs: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            leader_timeout: Duration::from_secs(2),
            certification_timeout: Duration::from_secs(3),
            timeout_retry: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(2),
            heartbeat: Duration::from_secs(5),
            block_interval: Duration::from_millis(100),
            batch_txs: 1_000,
        }
    }
}

/// How much history a validator keeps below the height it executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Heights of finalized blocks and certificates consensus keeps, to serve peers that
    /// fell behind (the ledger keeps its own copy of blocks). A peer further behind than
    /// this joins again from a snapshot.
    pub archive: u64,
    /// Heights of blocks the ledger keeps; `None` keeps every block (an archive node).
    pub ledger: Option<u64>,
    /// Heights in one section of consensus's archives: they are dropped a section at a
    /// time, so up to this many more than `archive` are kept. Fixed for the life of a data
    /// directory (archives written with another size do not open).
    pub archive_section: u64,
}

/// [`Retention::archive_section`] unless a test needs sections small enough to see go.
pub const ARCHIVE_SECTION: u64 = 1_024;

impl Default for Retention {
    fn default() -> Self {
        Retention {
            archive: 16_384,
            ledger: None,
            archive_section: ARCHIVE_SECTION,
        }
    }
}

/// One validator's identity and environment.
pub struct ValidatorConfig<B, P> {
    /// Its signing key.
    pub key: ed25519::PrivateKey,
    /// All validators.
    pub participants: Set<ed25519::PublicKey>,
    /// Disconnects misbehaving peers.
    pub blocker: B,
    /// Supplies the peer set.
    pub provider: P,
    /// Prefix of its storage partitions.
    pub partition_prefix: String,
    /// Timeouts.
    pub timing: Timing,
    /// History kept.
    pub retention: Retention,
    /// Where a validator installed from a snapshot starts consensus: a verified
    /// finalization at or below the snapshot's height. `None` starts from genesis (or from
    /// wherever this validator's archives already are).
    pub floor: Option<Finalization>,
    /// It starts without its consensus journal (a new network, a lost data directory, a
    /// join from a snapshot): it listens before it votes (see [`crate::recovery`]).
    pub without_journal: bool,
}

impl<B, P> std::fmt::Debug for ValidatorConfig<B, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatorConfig")
            .field("key", &self.key.public_key())
            .field("partition_prefix", &self.partition_prefix)
            .finish_non_exhaustive()
    }
}

/// A network channel: its sender and receiver.
pub type Channel<S, R> = (S, R);

/// Marshal's mailbox: where finalization certificates are read from.
pub type MarshalMailbox = marshal::core::Mailbox<Scheme, marshal::standard::Standard<ChainBlock>>;

/// The running parts of a validator.
pub struct Running {
    /// Finalized and executed heights.
    pub progress: Arc<Progress>,
    /// Marshal, for the certificates of finalized blocks.
    pub marshal: MarshalMailbox,
    /// The tasks: broadcast, marshal, consensus.
    pub handles: Vec<Handle<()>>,
    /// The executor: it ends only when a finalized block cannot be applied or stored (or
    /// marshal went away), and the validator must then stop.
    pub executor: Handle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

impl Running {
    /// Stops every task of this validator (as a crash would).
    pub fn abort(self) {
        for h in self.handles {
            h.abort();
        }
        self.executor.abort();
    }
}

const MAILBOX: NonZeroUsize = NZUsize!(1024);
/// Finalized blocks marshal hands the executor ahead of its acknowledgements.
pub const MAX_PENDING_ACKS: usize = 32;
const PAGE_CACHE_PAGE: std::num::NonZeroU16 = NZU16!(4096);
const PAGE_CACHE_PAGES: NonZeroUsize = NZUsize!(4096);

/// The archive of finalization certificates by height. Every one is kept (a few hundred
/// bytes a height): a certified read of any height the ledger holds needs one within the
/// next 64 heights, and the ledger keeps none of its own.
fn certificates_config<C>(
    prefix: &str,
    page_cache: &CacheRef,
    codec_config: C,
) -> immutable::Config<C> {
    let name = "finalizations";
    immutable::Config {
        metadata_partition: format!("{prefix}-{name}-metadata"),
        freezer_table_partition: format!("{prefix}-{name}-freezer-table"),
        freezer_table_initial_size: 1024,
        freezer_table_resize_frequency: 4,
        freezer_table_resize_chunk_size: 1024,
        freezer_key_partition: format!("{prefix}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_value_partition: format!("{prefix}-{name}-freezer-value"),
        freezer_value_target_size: 64 * 1024 * 1024,
        freezer_value_compression: None,
        ordinal_partition: format!("{prefix}-{name}-ordinal"),
        items_per_section: NZU64!(4096),
        codec_config,
        replay_buffer: NZUsize!(1024 * 1024),
        freezer_key_write_buffer: NZUsize!(1024 * 1024),
        freezer_value_write_buffer: NZUsize!(1024 * 1024),
        ordinal_write_buffer: NZUsize!(1024 * 1024),
    }
}

/// The archive of finalized blocks by height, dropped a section at a time below what
/// [`Retention::archive`] keeps (block digests, its keys, are hashes: spread evenly, as its
/// index of keys needs).
fn blocks_config(
    prefix: &str,
    page_cache: &CacheRef,
    section: u64,
) -> prunable::Config<EightCap, ()> {
    prunable::Config {
        translator: EightCap,
        metadata_partition: blocks_partition(prefix, "metadata"),
        key_partition: blocks_partition(prefix, "key"),
        key_page_cache: page_cache.clone(),
        value_partition: blocks_partition(prefix, "value"),
        compression: None,
        codec_config: (),
        items_per_section: std::num::NonZeroU64::new(section).unwrap_or(NZU64!(ARCHIVE_SECTION)),
        key_write_buffer: NZUsize!(1024 * 1024),
        value_write_buffer: NZUsize!(1024 * 1024),
        replay_buffer: NZUsize!(1024 * 1024),
    }
}

/// The storage partition `part` of the archive of finalized blocks of a validator whose
/// partitions start with `prefix`.
pub fn blocks_partition(prefix: &str, part: &str) -> String {
    format!("{prefix}-blocks-recent-{part}")
}

/// The partitions of the archive of blocks of earlier versions, which kept every height:
/// never read, removed at start.
fn unpruned_blocks_partitions(prefix: &str) -> Vec<String> {
    [
        "metadata",
        "freezer-table",
        "freezer-key",
        "freezer-value",
        "ordinal",
    ]
    .iter()
    .map(|part| format!("{prefix}-blocks-{part}"))
    .collect()
}

/// The storage partition of the consensus journal of a validator whose partitions start with
/// `prefix`: the record of the votes it signed.
pub fn journal_partition(prefix: &str) -> String {
    format!("{prefix}-consensus")
}

/// Starts a validator over `chain` with the given network channels.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per network channel"
)]
pub async fn start_validator<E, B, P, S, R>(
    context: E,
    chain: Arc<Chain>,
    config: ValidatorConfig<B, P>,
    votes: Channel<S, R>,
    certificates: Channel<S, R>,
    resolver: Channel<S, R>,
    backfill: Channel<S, R>,
    blocks: Channel<S, R>,
) -> Running
where
    E: Clock + CryptoRng + Spawner + Storage + Metrics,
    B: Blocker<PublicKey = ed25519::PublicKey>,
    P: Provider<PublicKey = ed25519::PublicKey>,
    S: Sender<PublicKey = ed25519::PublicKey>,
    R: Receiver<PublicKey = ed25519::PublicKey>,
{
    let me = config.key.public_key();
    let prefix = config.partition_prefix.clone();
    let page_cache = CacheRef::new(PAGE_CACHE_PAGE, PAGE_CACHE_PAGES);
    let scheme = Scheme::signer(
        chain.namespace(),
        config.participants.clone(),
        config.key.clone(),
    )
    .unwrap_or_else(|| not_a_validator());

    // Full-block broadcast.
    let (buffer, buffer_mailbox) = buffered::Engine::new(
        context.child("buffer"),
        buffered::Config {
            public_key: me.clone(),
            mailbox_size: MAILBOX,
            deque_size: 16,
            priority: false,
            codec_config: (),
            peer_provider: config.provider.clone(),
            strategy: Sequential,
        },
    );

    // Marshal and its archives.
    for partition in unpruned_blocks_partitions(&prefix) {
        match context.remove(&partition, None).await {
            Ok(()) | Err(commonware_runtime::Error::PartitionMissing(_)) => {}
            Err(e) => tracing::warn!(%partition, error = %e, "an old archive was not removed"),
        }
    }
    let section = config.retention.archive_section;
    let finalizations = immutable::Archive::init(
        context.child("finalizations_by_height"),
        certificates_config(
            &prefix,
            &page_cache,
            <Scheme as Verifier>::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .unwrap_or_else(|e| storage_failed(&e));
    let finalized_blocks = prunable::Archive::init(
        context.child("finalized_blocks"),
        blocks_config(&prefix, &page_cache, section),
    )
    .await
    .unwrap_or_else(|e| storage_failed(&e));
    let epocher = FixedEpocher::new(NZU64!(u64::MAX));
    let (marshal_actor, marshal_mailbox, _floor) = Marshal::init(
        context.child("marshal"),
        finalizations,
        finalized_blocks,
        marshal::Config {
            provider: ConstantProvider::new(scheme.clone()),
            epocher: epocher.clone(),
            start: match config.floor.clone() {
                Some(finalization) => marshal::Start::Floor(finalization),
                None => marshal::Start::Genesis(Digested::precomputed(
                    chain.genesis_block().clone(),
                    digest_of(&chain.genesis_block().hash()),
                )),
            },
            partition_prefix: format!("{prefix}-marshal"),
            mailbox_size: MAILBOX,
            view_retention: ViewDelta::new(64),
            prunable_items_per_section: NZU64!(1024),
            page_cache: page_cache.clone(),
            replay_buffer: NZUsize!(1024 * 1024),
            key_write_buffer: NZUsize!(1024 * 1024),
            value_write_buffer: NZUsize!(1024 * 1024),
            block_codec_config: (),
            max_repair: NZUsize!(16),
            max_pending_acks: NZUsize!(MAX_PENDING_ACKS),
            strategy: Sequential,
        },
    )
    .await;
    let backfill_resolver = marshal_resolver::init(
        context.child("backfill"),
        marshal_resolver::Config {
            public_key: me.clone(),
            peer_provider: config.provider.clone(),
            blocker: config.blocker.clone(),
            mailbox_size: MAILBOX,
            fetch_timeout: NZDuration!(Duration::from_secs(2)),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        backfill,
    );

    // Execution of finalized blocks.
    let progress = Arc::new(Progress::default());
    let (executor, executor_mailbox) = Executor::new(
        chain.clone(),
        progress.clone(),
        marshal_mailbox.clone(),
        config.retention,
    );

    // Consensus over the application.
    let app = Inline::new(
        context.child("application"),
        SecnetApp::new(
            chain.clone(),
            config.timing.certification_timeout,
            Pace {
                batch_txs: config.timing.batch_txs,
                block_interval: config.timing.block_interval,
                heartbeat: config.timing.heartbeat,
                view_wait: config.timing.leader_timeout.mul_f64(0.75),
            },
        ),
        marshal_mailbox.clone(),
        epocher,
    );
    // A validator without its journal sits views out before it signs (see `recovery`).
    let recovery = config.without_journal.then(|| {
        Recovery::new(
            context.current(),
            Recovery::listen(config.timing.leader_timeout),
            config.participants.len(),
        )
    });
    let consensus = simplex::Engine::new(
        context.child("consensus"),
        simplex::Config {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker: config.blocker,
            automaton: Held::new(app.clone(), recovery.clone(), context.child("held")),
            relay: app.clone(),
            reporter: Watching::new(app, recovery.clone()),
            strategy: Sequential,
            partition: journal_partition(&prefix),
            mailbox_size: MAILBOX,
            epoch: Epoch::zero(),
            floor: match config.floor {
                Some(finalization) => simplex::Floor::Finalized(finalization),
                None => simplex::Floor::Genesis(digest_of(&chain.genesis_block().hash())),
            },
            replay_buffer: NZUsize!(1024 * 1024),
            write_buffer: NZUsize!(1024 * 1024),
            page_cache,
            leader_timeout: config.timing.leader_timeout,
            certification_timeout: config.timing.certification_timeout,
            timeout_retry: config.timing.timeout_retry,
            view_retention: ViewDelta::new(64),
            skip: SkipPolicy::Enabled {
                timeout: config.timing.timeout_retry * 2,
                budget: simplex::SkipBudget::Participants,
            },
            fetch_timeout: NZDuration!(config.timing.fetch_timeout),
            fetch_retry_delay: Duration::from_millis(100),
            forward: ForwardPolicy::Disabled,
            track_historical_votes: false,
        },
    );

    // Execution holds its thread (contract, state tree, the ledger's write and flush), so
    // it runs on a thread of its own rather than one of the runtime's shared workers.
    let executor_handle = context
        .child("executor")
        .dedicated()
        .spawn(move |context| executor.run(context));
    let buffer_handle = buffer.start(blocks);
    let marshal_handle = marshal_actor.start(executor_mailbox, buffer_mailbox, backfill_resolver);
    let votes = (
        GuardedSender::new(votes.0, recovery.clone(), context.child("votes")),
        GuardedReceiver::new(votes.1, recovery, context.child("votes")),
    );
    let consensus_handle = consensus.start(votes, certificates, resolver);
    Running {
        progress,
        marshal: marshal_mailbox,
        handles: vec![buffer_handle, marshal_handle, consensus_handle],
        executor: executor_handle,
    }
}

#[cold]
fn not_a_validator() -> ! {
    #[expect(
        clippy::panic,
        reason = "callers check membership before starting a validator"
    )]
    {
        panic!("this key is not in the validator set")
    }
}

#[cold]
fn storage_failed(e: &dyn std::fmt::Display) -> ! {
    #[expect(
        clippy::panic,
        reason = "a validator cannot run without its block archives"
    )]
    {
        panic!("cannot open block archives: {e}")
    }
}
