//! Command-line interface of the writer.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shared::Network;

/// Stellar payments writer.
#[derive(Debug, Parser)]
#[command(name = "writer", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The writer's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the payments of ledger files as JSON lines, one Horizon payment record a line
    /// (failed transactions' payments included, flagged by `transaction_successful`).
    ///
    /// Reads raw `.xdr`, gzipped `.xdr.gz`, base64 lines (`.txt`, `.txt.gz`, one ledger a
    /// line) and data-lake `.xdr.zstd` batches.
    Extract(ExtractArgs),
}

/// Network selection shared by the commands.
#[derive(Debug, Clone, clap::Args)]
pub struct NetworkArgs {
    /// Network passphrase, or `pubnet` / `testnet`.
    #[arg(
        long = "network",
        env = "STELLAR_NETWORK_PASSPHRASE",
        default_value = "pubnet"
    )]
    pub network: String,
}

impl NetworkArgs {
    /// The selected network.
    pub fn network(&self) -> Network {
        match self.network.as_str() {
            "pubnet" | "mainnet" | "public" => Network::pubnet(),
            "testnet" => Network::testnet(),
            passphrase => Network::new(passphrase),
        }
    }
}

/// Arguments of `writer extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// Ledger files to read, in order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Base URL for the records' `_links` (relative links when empty).
    #[arg(long, default_value = "")]
    pub base_url: String,
    /// Embed each record's transaction, as `join=transactions` does.
    #[arg(long)]
    pub join_transactions: bool,
    #[command(flatten)]
    pub network: NetworkArgs,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Extract(args) => crate::commands::extract::run(&args),
    }
}
