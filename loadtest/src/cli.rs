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
    }
}
