//! Starting a single-node network: the block producer and the HTTP server on one runtime.

use crate::api;
use crate::backend::{Backend, NodeError};
use crate::dev::{DevNode, ProducerConfig};
use crate::tls::Transport;
use secnet_types::{Genesis, Keypair};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A node serving HTTP.
#[derive(Debug)]
pub struct RunningNode {
    /// The node.
    pub node: Arc<DevNode>,
    /// The address the API listens on.
    pub addr: SocketAddr,
    scheme: &'static str,
    shutdown: watch::Sender<bool>,
    producer: JoinHandle<Result<(), String>>,
    server: JoinHandle<Result<(), String>>,
    recorder: JoinHandle<()>,
}

impl RunningNode {
    /// The API's base URL.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Stops producing blocks and serving, and waits for both.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.producer.await;
        let _ = self.server.await;
        let _ = self.recorder.await;
    }

    /// Waits until block production or the HTTP API stops on its own (a block that could
    /// not be stored, a failed listener), and says why: the node must not go on serving a
    /// ledger that no longer moves. After it returns, drop the node rather than stop it.
    pub async fn failure(&mut self) -> String {
        let (part, ended) = tokio::select! {
            r = &mut self.producer => ("block production", r),
            r = &mut self.server => ("the HTTP API", r),
        };
        match ended {
            Ok(Ok(())) => format!("{part} stopped"),
            Ok(Err(e)) => e,
            Err(e) => format!("{part} failed: {e}"),
        }
    }
}

/// Opens the ledger in `dir` and starts producing blocks and serving the API on `listen`,
/// over `transport`.
pub async fn start_dev(
    dir: &Path,
    genesis: &Genesis,
    key: Keypair,
    listen: SocketAddr,
    transport: Transport,
    config: ProducerConfig,
) -> Result<RunningNode, StartError> {
    start_dev_serving(
        dir,
        genesis,
        key,
        listen,
        transport,
        config,
        secnet_tls::ServeLimits::default(),
    )
    .await
}

/// [`start_dev`], serving its API within `limits` (and behind the reverse proxies they
/// name).
pub async fn start_dev_serving(
    dir: &Path,
    genesis: &Genesis,
    key: Keypair,
    listen: SocketAddr,
    transport: Transport,
    config: ProducerConfig,
    limits: secnet_tls::ServeLimits,
) -> Result<RunningNode, StartError> {
    transport.check(listen)?;
    let node = Arc::new(DevNode::open(dir, genesis, key, config)?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError::Bind(listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(listen, e))?;
    let (shutdown, rx) = watch::channel(false);
    let producer = tokio::spawn(node.clone().run_producer(rx.clone()));
    let backend: Arc<dyn Backend> = node.clone();
    let pdc = crate::pdc::open(dir, node.key()).map_err(StartError::Pdc)?;
    let recorder = tokio::spawn(crate::pdc::run_recorder(
        backend.clone(),
        pdc.clone(),
        std::time::Duration::from_millis(500),
        rx.clone(),
    ));
    let services =
        crate::webapp::WebServices::new(backend.clone(), pdc.clone()).map_err(StartError::Web)?;
    let web = secnet_web::Web::open(dir, &services.node_name(), Arc::new(services))
        .map_err(|e| StartError::Web(e.to_string()))?;
    let app = api::app(backend, pdc, web);
    let mut rx_http = rx;
    let scheme = transport.scheme();
    let server = tokio::spawn(async move {
        secnet_tls::serve(
            listener,
            app,
            transport.server_config(),
            limits,
            async move {
                let _ = rx_http.changed().await;
            },
        )
        .await;
        Ok(())
    });
    Ok(RunningNode {
        node,
        addr,
        scheme,
        shutdown,
        producer,
        server,
        recorder,
    })
}

/// A node that could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The ledger could not be opened.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The Private Data Center could not be opened.
    #[error("opening the Private Data Center: {0}")]
    Pdc(String),
    /// The address is unavailable.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The application's staff accounts could not be opened.
    #[error("opening the staff accounts: {0}")]
    Web(String),
    /// The TLS files are missing or unusable, or plain HTTP was asked for where it is not
    /// allowed.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsFileError),
}
