//! `secnet testnet init`, `secnet node` and `secnet devnet`: a network of validators on this
//! machine, each its own process with its own data directory.

use anyhow::{Context, bail, ensure};
use clap::{Args, Subcommand};
use secnet_consensus::engine::{Retention, Timing};
use secnet_consensus::node::{ValidatorNodeConfig, run as run_validator};
use secnet_ledger::StateMemory;
use secnet_node::datadir::{DataDir, now_ms, read_genesis};
use secnet_node::keyfile;
use secnet_types::{Allocation, Genesis, Keypair, Validator};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Balance of each generated client account.
const ACCOUNT_BALANCE: u64 = 1_000_000_000;

/// Testnet commands.
#[derive(Subcommand)]
pub enum TestnetCmd {
    /// Write a genesis, validator keys and configs, and funded client accounts.
    Init(InitArgs),
    /// Issue every validator of a network a new TLS key and certificate (for the address
    /// its API listens on, and localhost) by the network's authority, e.g. before the
    /// current ones expire (they last two years); each node serves them from its next start.
    Renew(RenewArgs),
}

/// Arguments of `secnet testnet renew`.
#[derive(Args, Clone)]
pub struct RenewArgs {
    /// The network's directory, as written by `testnet init`.
    #[arg(long)]
    pub dir: PathBuf,
    /// The directory holding the network's authority (`ca.pem` and `ca.key`), if not DIR.
    #[arg(long, value_name = "DIR")]
    pub authority: Option<PathBuf>,
}

/// Arguments of `secnet testnet init`.
#[derive(Args, Clone)]
pub struct InitArgs {
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Number of funded client accounts (key files under DIR/accounts).
    #[arg(long, default_value_t = 16)]
    pub accounts: usize,
    /// Where to write everything.
    #[arg(long)]
    pub dir: PathBuf,
    /// First p2p port; validator i listens on base + i.
    #[arg(long, default_value_t = 9100)]
    pub p2p_base_port: u16,
    /// First HTTP API port; validator i serves on base + i.
    #[arg(long, default_value_t = 8100)]
    pub api_base_port: u16,
    /// Chain id.
    #[arg(long, default_value = "secnet-devnet")]
    pub chain_id: String,
    /// The organisations running the validators, in order, comma-separated (shown to
    /// people: "Northside Hospital,Riverside Hospital"); validators beyond the list have
    /// no name.
    #[arg(long, value_delimiter = ',')]
    pub names: Vec<String>,
    /// An existing certificate authority (a directory with `ca.pem` and `ca.key`) to issue
    /// the validators' certificates; by default a new one is made in DIR.
    #[arg(long, value_name = "DIR")]
    pub authority: Option<PathBuf>,
}

/// Who runs a new devnet's validators: two hospitals, a research institute, a clinic.
pub const DEVNET_NAMES: [&str; 4] = [
    "Northside Hospital",
    "Riverside Hospital",
    "Institute for Clinical Research",
    "Lakeside Clinic",
];

/// A validator's `config.toml` (paths relative to the file). A key it does not know is
/// refused, so that a misspelt setting is not silently left out.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfigFile {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The genesis file.
    pub genesis: PathBuf,
    /// The validator's key file.
    pub key: PathBuf,
    /// p2p listen address.
    pub p2p_listen: SocketAddr,
    /// HTTP API listen address.
    pub api_listen: SocketAddr,
    /// The reverse proxies in front of the API (addresses or networks such as
    /// `10.0.0.0/8`): a request through one of them counts against the budgets and throttles
    /// of the client its `X-Forwarded-For` names. None by default: every peer is a client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

pub fn run(cmd: TestnetCmd) -> anyhow::Result<()> {
    match cmd {
        TestnetCmd::Init(args) => {
            init(&args)?;
            println!(
                "wrote a {}-validator network to {}",
                args.validators,
                args.dir.display()
            );
        }
        TestnetCmd::Renew(args) => {
            let n = renew(&args)?;
            println!(
                "issued {n} validators new certificates; each serves its own from its next start"
            );
        }
    }
    Ok(())
}

/// Issues every validator of the network in `args.dir` a new key and certificate by the
/// network's authority. Returns how many.
pub fn renew(args: &RenewArgs) -> anyhow::Result<usize> {
    let genesis = DataDir::new(&args.dir)
        .read_genesis()
        .with_context(|| format!("{} holds no network", args.dir.display()))?;
    let authority = args.authority.as_deref().unwrap_or(&args.dir);
    let network_ca = std::fs::read(args.dir.join(CA_CERT))
        .with_context(|| format!("reading {}", args.dir.join(CA_CERT).display()))?;
    let given_ca = std::fs::read(authority.join(CA_CERT))
        .with_context(|| format!("reading {}", authority.join(CA_CERT).display()))?;
    // Clients trust the network's authority: certificates by another would be refused.
    ensure!(
        network_ca == given_ca,
        "{} is not the authority of the network in {} (its ca.pem differs); its certificates would not be trusted",
        authority.display(),
        args.dir.display()
    );
    let n = genesis.validators.len();
    issue_certificates(&args.dir, n, Some(authority)).with_context(|| {
        format!(
            "issuing certificates by the authority in {} (ca.pem and ca.key; --authority DIR if it is kept elsewhere); if this stopped halfway, run it again",
            authority.display()
        )
    })?;
    Ok(n)
}

/// Writes a testnet into `args.dir`.
pub fn init(args: &InitArgs) -> anyhow::Result<Genesis> {
    ensure!(
        (1..=64).contains(&args.validators),
        "--validators must be 1..=64"
    );
    ensure!(
        !args.dir.join("genesis.json").exists(),
        "{} already holds a network (genesis.json exists)",
        args.dir.display()
    );
    let mut validators = Vec::new();
    let mut keys = Vec::new();
    for i in 0..args.validators {
        let key = Keypair::generate();
        let dir = args.dir.join(format!("node{i}"));
        keyfile::write_key(&dir.join("node.key"), &key, false)?;
        let port = args
            .p2p_base_port
            .checked_add(i as u16)
            .context("p2p port out of range")?;
        validators.push(Validator {
            key: key.account(),
            address: format!("127.0.0.1:{port}"),
            name: args.names.get(i).cloned().unwrap_or_default(),
        });
        keys.push(key);
    }
    // Each validator's node account is funded too: it is the organisation's account, which
    // pays when its staff subscribe to data.
    let mut allocations: Vec<Allocation> = keys
        .iter()
        .map(|k| Allocation {
            account: k.account(),
            balance: ACCOUNT_BALANCE,
        })
        .collect();
    for j in 0..args.accounts {
        let key = Keypair::generate();
        keyfile::write_key(
            &args.dir.join("accounts").join(format!("account{j}.key")),
            &key,
            false,
        )?;
        allocations.push(Allocation {
            account: key.account(),
            balance: ACCOUNT_BALANCE,
        });
    }
    let genesis = Genesis {
        chain_id: args.chain_id.clone(),
        genesis_time_ms: now_ms(),
        allocations,
        validators,
    };
    genesis.validate()?;
    DataDir::new(&args.dir).write_genesis(&genesis)?;
    for i in 0..args.validators {
        let config = NodeConfigFile {
            data_dir: PathBuf::from("."),
            genesis: PathBuf::from("../genesis.json"),
            key: PathBuf::from("node.key"),
            p2p_listen: format!("127.0.0.1:{}", args.p2p_base_port + i as u16).parse()?,
            api_listen: format!("127.0.0.1:{}", args.api_base_port + i as u16).parse()?,
            trusted_proxies: Vec::new(),
        };
        std::fs::write(
            args.dir.join(format!("node{i}")).join("config.toml"),
            toml::to_string_pretty(&config)?,
        )?;
    }
    issue_certificates(&args.dir, args.validators, args.authority.as_deref())?;
    Ok(genesis)
}

/// Issues each of the `n` validators in `dir` a certificate for the address its API listens
/// on (and localhost), into `nodeI/tls/`: by the authority in `authority`, or by a new one
/// made in `dir` (`ca.pem`, which clients trust, and `ca.key`, outside every node's
/// directory). `dir/ca.pem` is the network's authority either way.
fn issue_certificates(dir: &Path, n: usize, authority: Option<&Path>) -> anyhow::Result<()> {
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        let config = dir.join(format!("node{i}")).join("config.toml");
        let file: NodeConfigFile = toml::from_str(&std::fs::read_to_string(&config)?)?;
        names.push(secnet_node::tls::default_names(file.api_listen));
    }
    let authority = match authority {
        Some(a) => {
            let authority = secnet_node::tls::read_authority(a)?;
            std::fs::write(dir.join(CA_CERT), authority.cert_pem())?;
            authority
        }
        None => {
            let mut all = Vec::new();
            for names in &names {
                all.extend(names.iter().cloned());
            }
            secnet_node::tls::create_authority(dir, &all)?
        }
    };
    for (i, names) in names.iter().enumerate() {
        let issued = authority.issue(names)?;
        secnet_node::tls::install(&dir.join(format!("node{i}")), authority.cert_pem(), &issued)?;
    }
    Ok(())
}

/// The network's authority certificate, beside the genesis.
const CA_CERT: &str = secnet_node::tls::AUTHORITY_CERT;

/// A validator's memory for its state tree unless `--state-memory-mib` says otherwise.
pub const DEFAULT_STATE_MEMORY_MIB: usize = 1024;

/// Arguments of `secnet node`.
#[derive(Args)]
pub struct NodeArgs {
    /// The validator's config.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Keep only the last N blocks in the ledger (the state and the whole access log stay);
    /// by default every block is kept.
    #[arg(long, value_name = "N")]
    pub keep_blocks: Option<u64>,
    /// Heights of blocks and certificates consensus keeps to serve validators that fell
    /// behind; one further behind joins again with --join.
    #[arg(long, value_name = "N", default_value_t = Retention::default().archive)]
    pub archive_heights: u64,
    /// A new validator (no ledger in its data directory yet) starts from the state of the
    /// node at this URL, checked against roots the validators certified, instead of
    /// replaying every block from genesis.
    #[arg(long, value_name = "URL")]
    pub join: Option<String>,
    /// Largest snapshot accepted by --join, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 30)]
    pub max_snapshot_bytes: u64,
    /// Memory for the state tree, in MiB (at least 16): past it, the parts of the state no
    /// block changed for a few heights move to a spill file beside the ledger, and are read
    /// back from there when needed.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_STATE_MEMORY_MIB)]
    pub state_memory_mib: usize,
    /// Serve the API over plain HTTP instead of TLS (refused unless it listens on a
    /// loopback address).
    #[arg(long)]
    pub plain_http: bool,
}

fn relative(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub fn node(args: NodeArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let file: NodeConfigFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", args.config.display()))?;
    let base = args.config.parent().unwrap_or(Path::new("."));
    let data_dir = relative(base, &file.data_dir);
    let genesis = read_genesis(&relative(base, &file.genesis))?;
    let key = keyfile::read_key(&relative(base, &file.key))?;
    let trusted_proxies = secnet_tls::TrustedProxies::parse(&file.trusted_proxies)
        .with_context(|| format!("trusted_proxies in {}", args.config.display()))?;
    println!(
        "validator {} of chain {} (genesis {})",
        key.account(),
        genesis.chain_id,
        genesis.hash()
    );
    let transport = if args.plain_http {
        // Its application still calls other holders over TLS, trusting its network.
        secnet_node::tls::trust_network(&data_dir)?;
        secnet_node::tls::Transport::Plain
    } else {
        secnet_node::tls::Transport::Tls(secnet_node::tls::load(&data_dir)?.server)
    };
    transport.check(file.api_listen)?;
    println!(
        "  p2p {}  api {}://{}",
        file.p2p_listen,
        transport.scheme(),
        file.api_listen
    );
    if !trusted_proxies.is_empty() {
        println!("  proxies {trusted_proxies} (their X-Forwarded-For names the client)");
    }
    if let Some(url) = &args.join {
        join(url, &genesis, &data_dir, args.max_snapshot_bytes)?;
    }
    ensure!(
        args.keep_blocks.is_none_or(|n| n >= 64),
        "--keep-blocks must be at least 64"
    );
    ensure!(
        args.archive_heights >= 64,
        "--archive-heights must be at least 64"
    );
    ensure!(
        args.state_memory_mib >= 16,
        "--state-memory-mib must be at least 16"
    );
    run_validator(ValidatorNodeConfig {
        data_dir,
        genesis,
        key,
        p2p_listen: file.p2p_listen,
        api_listen: file.api_listen,
        transport,
        trusted_proxies,
        timing: Timing::default(),
        retention: Retention {
            archive: args.archive_heights,
            ledger: args.keep_blocks,
            ..Retention::default()
        },
        state_memory: Some(StateMemory::mib(args.state_memory_mib)),
    })?;
    Ok(())
}

/// Installs the state of the node at `url` into a new data directory; a directory that
/// already has a ledger goes on from it.
fn join(url: &str, genesis: &Genesis, data_dir: &Path, max_bytes: u64) -> anyhow::Result<()> {
    if data_dir.join(secnet_ledger::LEDGER_FILE).exists() {
        println!("  ledger present; --join is ignored");
        return Ok(());
    }
    println!("  joining from the snapshot of {url}");
    let remote = secnet_client::RemoteNode::new(url, genesis)?;
    let joined = super::runtime()?.block_on(secnet_client::join_from_snapshot(
        &remote, genesis, data_dir, max_bytes,
    ))?;
    println!(
        "  installed height {} (state root {}, certified): {} entries, {} log leaves, {} bytes; consensus starts at height {}",
        joined.height,
        joined.state_root,
        joined.entries,
        joined.log_size,
        joined.bytes,
        joined.floor.unwrap_or(0)
    );
    Ok(())
}

/// Where `secnet devnet` keeps the sample staff sign-ins it made (0600).
const SAMPLE_LOGINS: &str = "sample-logins.txt";

/// Sample staff accounts of a new devnet: node0 and node1 are hospitals (an admin and a
/// clinician each), node2 a research institute (a researcher). Random passwords, kept in
/// `SAMPLE_LOGINS`.
fn write_sample_logins(dir: &Path, validators: usize) -> anyhow::Result<()> {
    use secnet_web::staff::{Role, StaffStore};
    let accounts = [
        (0, "admin", "Northside administrator", Role::Admin),
        (0, "dr.ada", "Dr Ada Lovelace", Role::Clinician),
        (1, "admin", "Riverside administrator", Role::Admin),
        (1, "dr.bob", "Dr Bob Kahn", Role::Clinician),
        (
            2,
            "researcher",
            "Research institute analyst",
            Role::Researcher,
        ),
    ];
    let mut lines = String::new();
    for (node, user, name, role) in accounts {
        if node >= validators {
            continue;
        }
        let node_dir = dir.join(format!("node{node}"));
        let store = StaffStore::open(&node_dir.join(secnet_web::WEB_FILE))?;
        let password = hex::encode(rand::random::<[u8; 8]>());
        store.add(user, name, role, &password, now_ms())?;
        lines.push_str(&format!("node{node}  {user}  {role}  {password}\n"));
    }
    keyfile::write_private(&dir.join(SAMPLE_LOGINS), lines.as_bytes())?;
    Ok(())
}

/// Arguments of `secnet devnet`.
#[derive(Args)]
pub struct DevnetArgs {
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Where the network lives (created on first run, reused afterwards).
    #[arg(long, default_value = "./secnet-devnet")]
    pub dir: PathBuf,
    /// Number of funded client accounts on first run.
    #[arg(long, default_value_t = 16)]
    pub accounts: usize,
    /// FHIR bundles to import as sample patients on first run (the first four *.json files:
    /// two held at each hospital); skipped if the directory does not exist.
    #[arg(long, default_value = super::samples::DEFAULT_SAMPLES)]
    pub samples: PathBuf,
    /// Serve the validators' APIs over plain HTTP on loopback instead of TLS.
    #[arg(long)]
    pub plain_http: bool,
    /// An existing certificate authority (a directory with `ca.pem` and `ca.key`) to issue
    /// the validators' certificates on first run; by default a new one is made in DIR.
    #[arg(long, value_name = "DIR")]
    pub authority: Option<PathBuf>,
}

/// Validator processes, killed when dropped.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `secnet node` for each of the `n` validators under `dir` (logs in
/// `nodeI/node.log`), over TLS unless `plain`, with `extra` arguments; returns the processes
/// and their API URLs.
pub fn spawn_validators(
    dir: &Path,
    n: usize,
    plain: bool,
    extra: &[String],
) -> anyhow::Result<(Children, Vec<String>)> {
    let exe = std::env::current_exe()?;
    let mut children = Children(Vec::new());
    let mut apis = Vec::new();
    for i in 0..n {
        let node_dir = dir.join(format!("node{i}"));
        let config = node_dir.join("config.toml");
        let file: NodeConfigFile = toml::from_str(&std::fs::read_to_string(&config)?)?;
        let log = std::fs::File::create(node_dir.join("node.log"))?;
        let mut command = Command::new(&exe);
        command.args(["node", "--config"]).arg(&config);
        if plain {
            command.arg("--plain-http");
        }
        command.args(extra);
        let child = command
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting validator {i}"))?;
        children.0.push(child);
        let scheme = if plain { "http" } else { "https" };
        apis.push(format!("{scheme}://{}", file.api_listen));
    }
    Ok((children, apis))
}

pub fn devnet(args: DevnetArgs) -> anyhow::Result<()> {
    let first_run = !args.dir.join("genesis.json").exists();
    let genesis = if !first_run {
        read_genesis(&args.dir.join("genesis.json"))?
    } else {
        let genesis = init(&InitArgs {
            validators: args.validators,
            accounts: args.accounts,
            dir: args.dir.clone(),
            p2p_base_port: 9100,
            api_base_port: 8100,
            chain_id: "secnet-devnet".into(),
            names: DEVNET_NAMES.iter().map(|n| (*n).to_string()).collect(),
            authority: args.authority.clone(),
        })?;
        write_sample_logins(&args.dir, args.validators)?;
        genesis
    };
    let n = genesis.validators.len();
    if n != args.validators {
        bail!(
            "{} holds a {n}-validator network; pass --validators {n} or another --dir",
            args.dir.display()
        );
    }
    if !args.dir.join(CA_CERT).exists() {
        // A network made before its APIs served TLS gets its authority now.
        issue_certificates(&args.dir, n, args.authority.as_deref())?;
    }
    // This process talks to its validators while it seeds the sample patients.
    secnet_node::tls::trust_file(&args.dir.join(CA_CERT), secnet_node::tls::MAX_PEM_FILE)?;
    let runtime = super::runtime()?;
    let mut stop = super::stop::Stop::catch(&runtime)?;
    let (mut children, apis) = spawn_validators(&args.dir, n, args.plain_http, &[])?;
    if first_run && args.samples.is_dir() {
        println!(
            "importing sample patients from {} (first run only)…",
            args.samples.display()
        );
        // On a thread of its own (it runs its own runtime), so that a signal meanwhile stops
        // the validators at once.
        let (done, seeded) = tokio::sync::oneshot::channel();
        let (dir, seed_apis, seed_genesis, samples) = (
            args.dir.clone(),
            apis.clone(),
            genesis.clone(),
            args.samples.clone(),
        );
        std::thread::spawn(move || {
            let _ = done.send(super::samples::seed(
                &dir,
                &seed_apis,
                &seed_genesis,
                &samples,
            ));
        });
        let seeded = runtime.block_on(async {
            tokio::select! {
                biased;
                signal = stop.received() => Err(signal),
                seeded = seeded => Ok(seeded),
            }
        });
        let seeded = match seeded {
            Ok(seeded) => seeded.context("the thread importing sample patients failed")?,
            Err(signal) => {
                drop(children);
                println!("stopped by {signal} while importing sample patients");
                return Ok(());
            }
        };
        match seeded {
            Ok(lines) => {
                let mut all = std::fs::read_to_string(args.dir.join(SAMPLE_LOGINS))?;
                for line in lines {
                    all.push_str(&line);
                    all.push('\n');
                }
                keyfile::write_private(&args.dir.join(SAMPLE_LOGINS), all.as_bytes())?;
            }
            Err(e) => eprintln!("sample patients not imported: {e:#}"),
        }
    }
    println!("secnet devnet: {n} validators, chain {}", genesis.chain_id);
    println!(
        "  network fingerprint {} (the patient's page shows the one its browser pinned)",
        secnet_certified::network_fingerprint(&genesis)
    );
    for (i, api) in apis.iter().enumerate() {
        println!(
            "  node{i}  api {api}  log {}",
            args.dir.join(format!("node{i}")).join("node.log").display()
        );
    }
    println!("  client keys in {}", args.dir.join("accounts").display());
    if !args.plain_http {
        println!(
            "  TLS: clients trust {} (`--ca`; the default for this directory)",
            args.dir.join(CA_CERT).display()
        );
    }
    if let Ok(logins) = std::fs::read_to_string(args.dir.join(SAMPLE_LOGINS)) {
        println!(
            "  the application: open {}/app (staff) or {}/app/patient (patients)",
            apis.first().map(String::as_str).unwrap_or(""),
            apis.first().map(String::as_str).unwrap_or("")
        );
        for (i, api) in apis.iter().enumerate() {
            if let Some(v) = genesis.validators.get(i).filter(|v| !v.name.is_empty()) {
                println!("    node{i} is {}: {api}/app", v.name);
            }
        }
        println!(
            "  sample sign-ins (node, username, role, password; patients: node, patient, backup file to restore in the browser, its passphrase):"
        );
        for line in logins.lines() {
            println!("    {line}");
        }
    }
    println!(
        "try: secnet status --node {} --json",
        apis.first().map(String::as_str).unwrap_or("")
    );
    println!("press Ctrl-C (or send SIGTERM) to stop");
    runtime.block_on(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = stop.received() => break,
                _ = tick.tick() => {
                    for (i, c) in children.0.iter_mut().enumerate() {
                        if let Ok(Some(status)) = c.try_wait() {
                            eprintln!("validator {i} exited ({status}); see its node.log");
                        }
                    }
                }
            }
        }
    });
    drop(children);
    println!("stopped");
    Ok(())
}
