//! Command-line interface of the load tester.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Load tests and benchmarks for the Stellar payments indexer.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The load tester's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// A Stellar RPC simulator: serves recorded ledgers, re-chained into one contiguous
    /// chain, over JSON-RPC, closing one more ledger at a time.
    Simnet(SimnetArgs),
}

/// Arguments of `loadtest simnet`.
#[derive(Debug, clap::Args)]
pub struct SimnetArgs {
    /// Directory of ledger files (.xdr, .xdr.gz, base64 .txt/.txt.gz, data-lake .xdr.zstd).
    #[arg(long, env = "SIMNET_LEDGERS")]
    pub ledgers: PathBuf,
    /// Address to listen on (loopback by default).
    #[arg(long, env = "SIMNET_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: std::net::SocketAddr,
    /// Network passphrase served by getNetwork, or `pubnet` / `testnet`.
    #[arg(long, default_value = "pubnet")]
    pub network: String,
    /// Sequence of the first re-chained ledger (default: the lowest recorded one).
    #[arg(long)]
    pub first_seq: Option<u32>,
    /// Ledgers already closed at start.
    #[arg(long, default_value_t = 1)]
    pub initially_closed: usize,
    /// Close one more ledger every this many milliseconds (0: only on POST /admin/close).
    #[arg(long, default_value_t = 1000)]
    pub close_interval_ms: u64,
    /// Delay added to every JSON-RPC request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fraction (0..=1) of requests that fail, alternately HTTP 503 and JSON-RPC -32603.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fraction (0..=1) of getLedgers ledgers whose metadataXdr is cut short.
    #[arg(long, default_value_t = 0.0)]
    pub truncate_rate: f64,
    /// Serve only the newest N closed ledgers.
    #[arg(long)]
    pub retention: Option<u32>,
    /// Seed of the fault injection's random choices.
    #[arg(long, default_value_t = 0x5EED)]
    pub seed: u64,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Decode + extract of one ledger against bare XDR decode of the same bytes, on one
    /// core, in the same run.
    Extract(ExtractBenchArgs),
}

/// Arguments of `loadtest bench extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractBenchArgs {
    /// The ledger file to measure (any supported format; its first ledger is used).
    #[arg(
        long,
        env = "BENCH_LEDGER",
        default_value = "../shared/fixtures/ledgers/pubnet/ledger-51000294.xdr.gz"
    )]
    pub ledger: PathBuf,
    /// Network passphrase, or `pubnet` / `testnet`.
    #[arg(long, default_value = "pubnet")]
    pub network: String,
    /// Measurement rounds; each times both variants, alternating which goes first.
    #[arg(long, default_value_t = 9)]
    pub rounds: u32,
    /// Wall time per variant per round, in milliseconds.
    #[arg(long, default_value_t = 600)]
    pub round_ms: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(BenchCommand::Extract(args)) => crate::bench::extract::run(&args),
        Command::Simnet(args) => run_simnet(args),
    }
}

fn run_simnet(args: SimnetArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;

    use crate::simnet::{Faults, SimnetConfig};

    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let faults = Faults {
        latency_ms: args.latency_ms,
        error_rate: args.error_rate,
        truncate_rate: args.truncate_rate,
        retention: args.retention,
    };
    faults.validate().map_err(anyhow::Error::msg)?;
    let chain = crate::simnet::load_chain(&args.ledgers, args.first_seq)
        .with_context(|| format!("loading ledgers from {}", args.ledgers.display()))?;
    let mut config = SimnetConfig::new(chain);
    config.network_passphrase = crate::simnet::passphrase_for(&args.network);
    config.initially_closed = args.initially_closed;
    config.close_interval = (args.close_interval_ms > 0)
        .then(|| std::time::Duration::from_millis(args.close_interval_ms));
    config.faults = faults;
    config.listen = args.listen;
    config.seed = args.seed;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(crate::simnet::run(config))
}
