//! `secnet`: the command-line entry point. Parses arguments, then hands each command to its
//! module; every command that touches a node's data takes `--data-dir`.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "secnet",
    version,
    about = "SecNet: share data you own, record every use, get paid"
)]
struct Cli {
    /// The certificate authority (PEM; one or more certificates) whose certificates this
    /// command accepts from nodes' TLS. Default: `secnet-devnet/ca.pem` if it exists. A
    /// `secnet dev` node is its own authority: `--ca <data-dir>/tls/ca.pem`.
    #[arg(long, global = true, env = "SECNET_CA", value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

/// The devnet's authority, trusted when no `--ca` is given.
const DEVNET_CA: &str = "secnet-devnet/ca.pem";
/// Largest certificate file read (a bundle of public roots fits).
const MAX_CA_FILE: u64 = 1 << 20;

/// Trusts `--ca`, or the devnet's authority if there is one here.
fn trust_authority(ca: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let path = match ca {
        Some(p) => p,
        None if std::path::Path::new(DEVNET_CA).is_file() => std::path::Path::new(DEVNET_CA),
        None => return Ok(()),
    };
    secnet_node::tls::trust_file(path, MAX_CA_FILE)
        .with_context(|| format!("--ca {}", path.display()))
}

#[derive(Subcommand)]
enum Command {
    /// Create and inspect account keys.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCmd),
    /// Run a single-node ledger with its HTTP API.
    Dev(cmd::dev::DevArgs),
    /// Create a multi-validator network's files.
    #[command(subcommand)]
    Testnet(cmd::testnet::TestnetCmd),
    /// Run one validator.
    Node(cmd::testnet::NodeArgs),
    /// Run a whole local network of validators from one command.
    Devnet(cmd::testnet::DevnetArgs),
    /// Run the paper's medical data-sharing story against a fresh single-node ledger.
    Demo(cmd::demo::DemoArgs),
    /// Attack a fresh node the ways the system must refuse, and print what it did.
    Attack(cmd::attack::AttackArgs),
    /// Kill a node with SIGKILL at random moments while it takes writes, and check after
    /// each kill that it reopens consistent and lost nothing it acknowledged.
    Crash(cmd::crash::CrashArgs),
    /// Prove and verify entries of the access log.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCmd),
    /// Check a data directory's ledger.
    #[command(subcommand)]
    Ledger(cmd::ledger::LedgerCmd),
    /// Store, register, share, fetch and verify data; policies and access history.
    #[command(subcommand)]
    Data(cmd::data::DataCmd),
    /// Sign and submit transactions.
    #[command(subcommand)]
    Tx(cmd::tx::TxCmd),
    /// The network's certified height, state root and access-log head, verified against the
    /// genesis validators.
    Status(cmd::query::StatusArgs),
    /// A block, verified: linked to a certified block, with its certified state root.
    Block(cmd::query::BlockArgs),
    /// An account, verified against a certified state root.
    Account(cmd::query::AccountArgs),
    /// The node's own report of itself: tip, mempool, peers' heights (not verified).
    Health(cmd::query::HealthArgs),
    /// Drive signed transactions into a network and measure throughput and latency.
    Load(cmd::load::LoadArgs),
    /// Train and evaluate access-request detectors.
    #[command(subcommand)]
    Ai(cmd::ai::AiCmd),
    /// Package, sell, buy and install security rules (signed detectors).
    #[command(subcommand)]
    Rules(cmd::rules::RulesCmd),
    /// The paper's evaluation: Figures 4-6 from their models, then measured on the system.
    #[command(subcommand)]
    Sim(cmd::sim::SimCmd),
    /// Measure throughput (release builds; prints JSON).
    #[command(subcommand)]
    Bench(cmd::bench::BenchCmd),
    /// A hospital node's staff accounts for its browser application.
    #[command(subcommand)]
    Staff(cmd::staff::StaffCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SECNET_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Commands that run nodes trust their own network's authority, and make their own
    // clients; the others are clients of a network and trust `--ca`.
    let runs_nodes = matches!(
        cli.command,
        Command::Dev(_)
            | Command::Node(_)
            | Command::Devnet(_)
            | Command::Demo(_)
            | Command::Attack(_)
            | Command::Crash(_)
            | Command::Bench(_)
    );
    if !runs_nodes && let Err(e) = trust_authority(cli.ca.as_deref()) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Keys(c) => cmd::keys::run(c),
        Command::Dev(a) => cmd::dev::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Attack(a) => cmd::attack::run(a),
        Command::Crash(a) => cmd::crash::run(a),
        Command::Testnet(c) => cmd::testnet::run(c),
        Command::Node(a) => cmd::testnet::node(a),
        Command::Staff(c) => cmd::staff::run(c),
        Command::Devnet(a) => cmd::testnet::devnet(a),
        Command::Audit(c) => cmd::audit::run(c),
        Command::Ledger(c) => cmd::ledger::run(c),
        Command::Tx(c) => cmd::tx::run(c),
        Command::Data(c) => cmd::data::run(c),
        Command::Status(a) => cmd::query::status(a),
        Command::Block(a) => cmd::query::block(a),
        Command::Account(a) => cmd::query::account(a),
        Command::Health(a) => cmd::query::health(a),
        Command::Bench(c) => cmd::bench::run(c),
        Command::Ai(c) => cmd::ai::run(c),
        Command::Rules(c) => cmd::rules::run(c),
        Command::Sim(c) => cmd::sim::run(c),
        Command::Load(a) => cmd::load::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
