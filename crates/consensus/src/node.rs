//! A validator process: the Commonware tokio runtime, authenticated TCP between validators
//! (static address book from the genesis), the validator engine, transaction gossip and the
//! HTTP API.

use crate::chain::Chain;
use crate::engine::{
    Retention, Running, Timing, ValidatorConfig, channels, journal_partition, start_validator,
};
use crate::executor::Progress;
use crate::gossip::{TxGossip, start_gossip};
use commonware_codec::DecodeExt as _;
use commonware_cryptography::{ChaCha20Poly1305, ed25519};
use commonware_p2p::authenticated::lookup;
use commonware_p2p::{Address, AddressableManager as _};
use commonware_runtime::{Quota, Runner as _, Supervisor as _, tokio as cw_tokio};
use commonware_stream::cups::{self, Cups};
use commonware_stream::sake::{self, Sake};
use commonware_utils::ordered::{Map, Set};
use commonware_utils::{NZU32, NZUsize, TryCollect as _};
use secnet_api::chain::ValidatorStatus;
use secnet_ledger::{Ledger, LedgerError, StateMemory};
use secnet_node::api;
use secnet_node::backend::Backend;
use secnet_node::backend::{CertificateFuture, NodeError, TxStatus};
use secnet_node::mempool::AdmitError;
use secnet_types::{AccountId, Genesis, Hash, Keypair, SignedTransaction};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Namespace of the p2p handshake.
pub const P2P_NAMESPACE: &[u8] = b"secnet/p2p/v1";
/// Largest p2p message: a full block plus framing.
pub const MAX_P2P_MESSAGE: u32 = 20 * 1024 * 1024;
/// Prefix of a validator's storage partitions under its `consensus` directory.
const PARTITION_PREFIX: &str = "validator";

/// The peer sets a validator's network keeps: one, the genesis's validators, tracked once
/// at index 0. Tracking a second set would drop the first at once, so a change of the
/// validator set has to raise this to keep both while it is handed over.
const VALIDATOR_SETS: NonZeroUsize = NZUsize!(1);

/// Everything a validator process needs.
#[derive(Debug)]
pub struct ValidatorNodeConfig {
    /// Holds `ledger.redb` and the consensus archives.
    pub data_dir: PathBuf,
    /// The network's genesis, listing the validators and their p2p addresses.
    pub genesis: Genesis,
    /// This validator's key.
    pub key: Keypair,
    /// Where to accept validator connections.
    pub p2p_listen: SocketAddr,
    /// Where to serve the HTTP API.
    pub api_listen: SocketAddr,
    /// How to serve it: TLS with the node's certificate, or plain HTTP on loopback.
    pub transport: secnet_node::tls::Transport,
    /// The reverse proxies in front of the API, whose `X-Forwarded-For` names the client
    /// that budgets and throttles count (none: every peer is a client).
    pub trusted_proxies: secnet_tls::TrustedProxies,
    /// Consensus timeouts.
    pub timing: Timing,
    /// History kept.
    pub retention: Retention,
    /// The bound on what the state tree keeps in memory (see
    /// [`Ledger::bound_state_memory`]); `None`: all of it.
    pub state_memory: Option<StateMemory>,
}

/// A validator that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key is not a validator of this genesis.
    #[error("key {0} is not a validator of this network's genesis")]
    NotAValidator(AccountId),
    /// The genesis has no validators or a bad address.
    #[error("genesis: {0}")]
    Genesis(String),
    /// The ledger could not be opened.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The consensus floor of a ledger installed from a snapshot is unreadable, not
    /// certified by this network's validators, or above the ledger.
    #[error("{path}: {reason}")]
    Floor {
        /// The floor file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The Private Data Center or the browser application could not be opened.
    #[error("{0}")]
    Service(String),
    /// The HTTP API's address could not be bound.
    #[error("cannot serve the HTTP API on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// A part the validator cannot run without stopped; the validator stops with it.
    #[error("stopped: {0}")]
    Stopped(String),
}

/// The certified finalization a validator installed from a snapshot starts consensus from
/// (stored in its ledger with the snapshot); `None` for a ledger that grew from genesis.
pub fn read_floor(
    ledger: &Ledger,
    genesis: &Genesis,
) -> Result<Option<secnet_certified::Finalization>, StartError> {
    let bad = |reason: String| StartError::Floor {
        path: ledger.path().to_path_buf(),
        reason,
    };
    let Some(bytes) = ledger.consensus_floor()? else {
        return Ok(None);
    };
    let certified: secnet_certified::CertifiedHeader =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("consensus floor: {e}")))?;
    let committee = secnet_certified::CommitteeVerifier::from_genesis(genesis)
        .map_err(|e| bad(e.to_string()))?;
    let (header, finalization) = committee
        .verify_finalization(&certified.header.0, &certified.certificate.0)
        .map_err(|e| bad(format!("consensus floor: {e}")))?;
    let tip = ledger.state().tip().height;
    if header.height > tip.saturating_add(1) {
        return Err(bad(format!(
            "consensus floor at height {} is above the ledger's {tip}",
            header.height
        )));
    }
    Ok(Some(finalization))
}

struct ValidatorBackend {
    chain: Arc<Chain>,
    marshal: crate::engine::MarshalMailbox,
    gossip: TxGossip,
    key: Keypair,
    progress: Arc<Progress>,
    validators: Vec<AccountId>,
}

impl Backend for ValidatorBackend {
    fn submit(&self, tx: SignedTransaction) -> Result<Result<Hash, AdmitError>, NodeError> {
        let result = self
            .chain
            .submit(tx.clone())
            .map_err(|_| NodeError::Poisoned)?;
        if result.is_ok() {
            self.gossip.publish(std::slice::from_ref(&tx));
        }
        Ok(result)
    }

    fn submit_batch(
        &self,
        txs: Vec<SignedTransaction>,
    ) -> Result<Vec<Result<Hash, AdmitError>>, NodeError> {
        let results = self
            .chain
            .submit_batch(txs.clone())
            .map_err(|_| NodeError::Poisoned)?;
        let admitted: Vec<SignedTransaction> = txs
            .into_iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(tx, _)| tx)
            .collect();
        self.gossip.publish(&admitted);
        Ok(results)
    }

    fn tx_status(&self, hash: &Hash) -> Result<TxStatus, NodeError> {
        if self
            .chain
            .is_pending(hash)
            .map_err(|_| NodeError::Poisoned)?
        {
            return Ok(TxStatus::Pending);
        }
        let found = self
            .chain
            .with_ledger(|l| l.committed_receipt(hash))
            .map_err(|_| NodeError::Poisoned)??;
        Ok(TxStatus::from_committed(found))
    }

    fn visit_ledger(&self, f: &mut dyn FnMut(&Ledger)) -> Result<(), NodeError> {
        self.chain
            .with_ledger(|l| f(l))
            .map_err(|_| NodeError::Poisoned)
    }

    fn pending(&self) -> Result<usize, NodeError> {
        self.chain.pending().map_err(|_| NodeError::Poisoned)
    }

    fn key(&self) -> &Keypair {
        &self.key
    }

    fn certificate(&self, height: u64) -> CertificateFuture<'_> {
        Box::pin(async move {
            let finalization = self
                .marshal
                .get_finalization(commonware_consensus::types::Height::new(height))
                .await?;
            Some(commonware_codec::Encode::encode(&finalization).to_vec())
        })
    }

    fn cosigned_checkpoint(&self) -> Option<secnet_certified::CosignedCheckpoint> {
        self.chain.cosigned_head()
    }

    fn applied_heights(&self) -> tokio::sync::watch::Receiver<u64> {
        self.chain.applied_heights()
    }

    fn validators(&self) -> Vec<ValidatorStatus> {
        let me = self.key.account();
        let executed = self.progress.executed.load(Ordering::Relaxed);
        let finalized = self.progress.finalized.load(Ordering::Relaxed);
        self.validators
            .iter()
            .map(|v| {
                if *v == me {
                    return ValidatorStatus {
                        key: *v,
                        is_self: true,
                        height: Some(executed),
                        finalized: Some(finalized),
                        seen_unix_ms: None,
                    };
                }
                let seen = self.chain.peer(v);
                ValidatorStatus {
                    key: *v,
                    is_self: false,
                    height: seen.map(|s| s.height),
                    finalized: None,
                    seen_unix_ms: seen.map(|s| {
                        s.at.duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    }),
                }
            })
            .collect()
    }
}

/// The consensus signing key of a validator's account key (the same ed25519 seed).
pub fn consensus_key(key: &Keypair) -> ed25519::PrivateKey {
    match secnet_certified::certificate::consensus_key(key) {
        Some(k) => k,
        None => unreachable_key(),
    }
}

#[cold]
fn unreachable_key() -> ! {
    #[expect(clippy::panic, reason = "any 32-byte seed is an ed25519 key")]
    {
        panic!("a 32-byte seed is always an ed25519 key")
    }
}

fn public_key(account: &AccountId) -> Result<ed25519::PublicKey, StartError> {
    ed25519::PublicKey::decode(account.0.to_vec())
        .map_err(|_| StartError::Genesis(format!("validator {account} is not an ed25519 key")))
}

/// Runs a validator until the process is stopped.
pub fn run(config: ValidatorNodeConfig) -> Result<(), StartError> {
    let me = config.key.account();
    if !config.genesis.validators.iter().any(|v| v.key == me) {
        return Err(StartError::NotAValidator(me));
    }
    let mut book = Vec::new();
    for v in &config.genesis.validators {
        let addr: SocketAddr = v.address.parse().map_err(|_| {
            StartError::Genesis(format!(
                "validator {} has address {:?}, not host:port",
                v.key, v.address
            ))
        })?;
        book.push((public_key(&v.key)?, addr));
    }
    let participants: Set<ed25519::PublicKey> =
        book.iter()
            .map(|(k, _)| k.clone())
            .try_collect()
            .map_err(|_| StartError::Genesis("a validator is listed twice".into()))?;
    let validators: Vec<AccountId> = config.genesis.validators.iter().map(|v| v.key).collect();

    let ledger = Ledger::open_bounded(&config.data_dir, &config.genesis, config.state_memory)?;
    let floor = read_floor(&ledger, &config.genesis)?;
    let cosigner = config.key.clone();
    let chain =
        Arc::new(Chain::new(ledger, &config.genesis, 200_000, 5_000).with_cosigner(cosigner));
    let signer = consensus_key(&config.key);
    let storage = config.data_dir.join("consensus");
    let without_journal = std::fs::read_dir(storage.join(journal_partition(PARTITION_PREFIX)))
        .map_or(true, |mut entries| entries.next().is_none());
    if without_journal {
        tracing::warn!(
            "no consensus journal (a new network, or this validator lost its data): listening to the peers before voting, so as never to sign a vote that conflicts with one signed before"
        );
    }
    let runtime = cw_tokio::Runner::new(cw_tokio::Config::new().with_storage_directory(storage));
    runtime.start(async move |context| -> Result<(), StartError> {
        let mut p2p = lookup::Config::local(
            Cups::<_, ChaCha20Poly1305>::new(
                Sake {
                    signer: signer.clone(),
                    synchrony_bound: Duration::from_secs(5),
                    max_handshake_age: Duration::from_secs(10),
                    version: sake::Version::V1,
                },
                cups::Version::V1,
            ),
            P2P_NAMESPACE,
            config.p2p_listen,
            NZUsize!(book.len()),
            MAX_P2P_MESSAGE,
            NZUsize!(4096),
        );
        // Each channel's inbound mailbox holds a burst for every place in every peer set
        // tracked (this validator's own included), and the router's mailbox holds all of
        // theirs: with the default of four sets, about 100 MiB of slots per validator,
        // written at start; with one, a quarter of that.
        p2p.tracked_peer_sets = VALIDATOR_SETS;
        let (mut network, mut oracle) = lookup::Network::new(context.child("network"), p2p);
        let peers: Map<ed25519::PublicKey, Address> = book
            .iter()
            .map(|(k, a)| (k.clone(), Address::from(*a)))
            .try_collect()
            .map_err(|_| StartError::Genesis("a validator is listed twice".into()))?;
        oracle.track(0, peers);
        // Per-peer rates; each channel's inbound mailbox holds one burst per place in the
        // validator set, so these also bound memory.
        let votes = network.register(channels::VOTES, Quota::per_second(NZU32!(1_000)));
        let certificates =
            network.register(channels::CERTIFICATES, Quota::per_second(NZU32!(1_000)));
        let resolver = network.register(channels::RESOLVER, Quota::per_second(NZU32!(256)));
        let backfill = network.register(channels::BACKFILL, Quota::per_second(NZU32!(256)));
        let blocks = network.register(channels::BLOCKS, Quota::per_second(NZU32!(256)));
        let txs = network.register(channels::TXS, Quota::per_second(NZU32!(10_000)));
        let network_handle = network.start();

        let running: Running = start_validator(
            context.child("validator"),
            chain.clone(),
            ValidatorConfig {
                key: signer,
                participants,
                blocker: oracle.clone(),
                provider: oracle.clone(),
                partition_prefix: PARTITION_PREFIX.into(),
                timing: config.timing,
                retention: config.retention,
                floor,
                without_journal,
            },
            votes,
            certificates,
            resolver,
            backfill,
            blocks,
        )
        .await;
        let (gossip, _gossip_handles) =
            start_gossip(context.child("gossip"), chain.clone(), oracle.clone(), txs);

        let pdc = secnet_node::pdc::open(&config.data_dir, &config.key).map_err(|e| {
            StartError::Service(format!("cannot open the Private Data Center: {e}"))
        })?;
        let backend: Arc<dyn Backend> = Arc::new(ValidatorBackend {
            chain,
            marshal: running.marshal.clone(),
            gossip,
            key: config.key,
            progress: running.progress.clone(),
            validators,
        });
        let (_keep_recording, recording) = tokio::sync::watch::channel(false);
        tokio::spawn(secnet_node::pdc::run_recorder(
            backend.clone(),
            pdc.clone(),
            Duration::from_millis(500),
            recording,
        ));
        let services = secnet_node::webapp::WebServices::new(backend.clone(), pdc.clone())
            .map_err(|e| {
                StartError::Service(format!("cannot open the browser application: {e}"))
            })?;
        let name = services.node_name();
        let web = secnet_web::Web::open(&config.data_dir, &name, Arc::new(services))
            .map_err(|e| StartError::Service(format!("cannot open the staff accounts: {e}")))?;
        let app = api::app(backend, pdc, web);
        config
            .transport
            .check(config.api_listen)
            .map_err(|e| StartError::Service(e.to_string()))?;
        let listener = tokio::net::TcpListener::bind(config.api_listen)
            .await
            .map_err(|error| StartError::Bind {
                addr: config.api_listen,
                error,
            })?;
        let tls = config.transport.server_config();
        let http = tokio::spawn(secnet_tls::serve(
            listener,
            app,
            tls,
            secnet_tls::ServeLimits {
                proxies: config.trusted_proxies.clone(),
                ..secnet_tls::ServeLimits::default()
            },
            std::future::pending(),
        ));
        // The validator runs as long as all of its vital parts do; when one ends, the
        // process ends with an error naming it, rather than serving stale state.
        let stopped = tokio::select! {
            _ = network_handle => "the peer-to-peer network stopped".to_string(),
            _ = running.executor => {
                "block execution stopped (a finalized block could not be applied or stored; see the error above)".to_string()
            }
            served = http => match served {
                Ok(()) => "the HTTP API stopped".to_string(),
                Err(e) => format!("the HTTP API failed: {e}"),
            },
        };
        tracing::error!(reason = %stopped, "validator stopping");
        Err(StartError::Stopped(stopped))
    })
}
