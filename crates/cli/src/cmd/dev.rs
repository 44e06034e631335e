//! `secnet dev`: one node that accepts signed transactions over HTTP and produces blocks.

use anyhow::Context as _;
use clap::Args;
use secnet_node::datadir::DataDir;
use secnet_node::dev::ProducerConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `secnet dev`.
#[derive(Args)]
pub struct DevArgs {
    /// The node's data directory (created with a development genesis if new).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// Start a new data directory from this genesis file instead of a development genesis
    /// (a directory made for another genesis is refused).
    #[arg(long)]
    pub genesis: Option<PathBuf>,
    /// Milliseconds between blocks while transactions wait.
    #[arg(long, default_value_t = 200)]
    pub block_ms: u64,
    /// Further names or addresses the node's certificate carries (on first start), besides
    /// localhost and the listening address.
    #[arg(long, value_name = "NAME")]
    pub tls_name: Vec<String>,
    /// The certificate authority (a directory with `ca.pem` and `ca.key`, as `secnet
    /// testnet init` writes) that issues the node's certificate on first start; by default
    /// the node becomes an authority of its own.
    #[arg(long, value_name = "DIR")]
    pub authority: Option<PathBuf>,
    /// Serve plain HTTP instead of TLS (refused unless --listen is a loopback address).
    #[arg(long)]
    pub plain_http: bool,
    /// A reverse proxy in front of the API (an address, or a network such as 10.0.0.0/8;
    /// repeatable): a request through one counts against the budgets and throttles of the
    /// client its X-Forwarded-For names. None by default: every peer is a client.
    #[arg(long, value_name = "NET")]
    pub trusted_proxy: Vec<String>,
}

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let data = DataDir::new(&args.data_dir);
    if let Some(path) = &args.genesis {
        let given = secnet_node::datadir::read_genesis(path)?;
        if data.genesis_path().exists() {
            let stored = data.read_genesis()?;
            anyhow::ensure!(
                stored.hash() == given.hash(),
                "{} was created for genesis {} (chain {:?}), not for {} (chain {:?}) from {}",
                args.data_dir.display(),
                stored.hash(),
                stored.chain_id,
                given.hash(),
                given.chain_id,
                path.display()
            );
        } else {
            data.write_genesis(&given)?;
        }
    }
    let (genesis, key) = data.open_dev(&[])?;
    let config = ProducerConfig {
        block_interval: Duration::from_millis(args.block_ms.max(1)),
        ..ProducerConfig::default()
    };
    let (transport, tls) = secnet_node::tls::dev_transport(
        &args.data_dir,
        args.listen,
        &secnet_node::tls::DevTls {
            plain: args.plain_http,
            extra_names: args.tls_name.clone(),
            authority: args.authority.clone(),
        },
    )?;
    let proxies =
        secnet_tls::TrustedProxies::parse(&args.trusted_proxy).context("--trusted-proxy")?;
    let limits = secnet_tls::ServeLimits {
        proxies: proxies.clone(),
        ..secnet_tls::ServeLimits::default()
    };
    let runtime = super::runtime()?;
    let mut stop = super::stop::Stop::catch(&runtime)?;
    runtime.block_on(async move {
        let mut running = secnet_node::start_dev_serving(
            &args.data_dir,
            &genesis,
            key,
            args.listen,
            transport,
            config,
            limits,
        )
        .await?;
        let height = running.node.with_ledger(|l| l.state().tip().height)?;
        println!("secnet dev node");
        println!("  chain       {}", genesis.chain_id);
        println!("  data dir    {}", args.data_dir.display());
        println!("  api         {}", running.url());
        match &tls {
            Some(tls) => {
                println!("  clients     --ca {}", tls.ca_path.display());
                println!("  certificate public key sha256/{}", tls.fingerprint);
            }
            None => println!("  plain HTTP  on loopback only, as --plain-http asked"),
        }
        if !proxies.is_empty() {
            println!("  proxies     {proxies} (their X-Forwarded-For names the client)");
        }
        println!(
            "  node key    {} (funded account {})",
            data.node_key_path().display(),
            running.node.key().account()
        );
        println!("  height      {height}");
        println!("press Ctrl-C (or send SIGTERM) to stop");
        tokio::select! {
            _ = stop.received() => {}
            reason = running.failure() => anyhow::bail!("the node stopped: {reason}"),
        }
        running.stop().await;
        println!("stopped");
        anyhow::Ok(())
    })
}
