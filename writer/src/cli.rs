//! Command-line interface of the writer.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shared::Network;

use crate::live::StartPolicy;

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
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Ingest a closed range of history in parallel, from a local data lake or from RPC
    /// within its retention; resumable, and safe beside a running `writer run`.
    Backfill(BackfillArgs),
    /// List the ranges of ledgers missing from the database.
    Gaps(GapsArgs),
    /// Ingest live from Stellar RPC into the primary: the active writer holds a Postgres
    /// advisory lock; a second `run` waits as a hot standby and takes over when it dies.
    Run(RunArgs),
}

/// The database to write.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Postgres URL of the primary.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
}

/// Arguments of `writer backfill`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// First ledger to ingest.
    #[arg(long)]
    pub from: u32,
    /// Last ledger to ingest.
    #[arg(long)]
    pub to: u32,
    /// `rpc`, or the root folder of a data lake in the SEP-54 layout.
    #[arg(long, default_value = "rpc")]
    pub source: String,
    /// Stellar RPC endpoint (for `--source rpc`).
    #[arg(long, env = "STELLAR_RPC_URL")]
    pub rpc_url: Option<String>,
    /// Parallel workers.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Ledgers per chunk (one database transaction each).
    #[arg(long, default_value_t = 64)]
    pub chunk_ledgers: u32,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    /// Attempts at a chunk that fails with a database error that may be deterministic
    /// (a constraint violation, disk full, an encoding error) before the backfill stops.
    #[arg(long, env = "WRITER_MAX_COMMIT_ATTEMPTS", default_value_t = 5)]
    pub max_commit_attempts: u32,
}

/// Arguments of `writer gaps`.
#[derive(Debug, Clone, clap::Args)]
pub struct GapsArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// First ledger to consider (default: the oldest stored).
    #[arg(long)]
    pub from: Option<u32>,
    /// Last ledger to consider (default: the newest stored).
    #[arg(long)]
    pub to: Option<u32>,
}

/// Arguments of `writer run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Stellar RPC endpoint, `http://` or `https://`. An `https` RPC's certificate is
    /// verified against the system's CA bundle, or only against the PEM certificates
    /// named by the `SSL_CERT_FILE` / `SSL_CERT_DIR` environment variables when set (to
    /// trust a private CA).
    #[arg(long, env = "STELLAR_RPC_URL")]
    pub rpc_url: String,
    /// Where a first run starts: `latest`, `oldest` or a ledger sequence (ignored once the
    /// database has a cursor: ingestion always resumes right after it).
    #[arg(long, env = "WRITER_START", default_value = "latest")]
    pub start: StartPolicy,
    /// Pause between polls once at the tip, in milliseconds.
    #[arg(long, env = "WRITER_POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,
    /// Most ledgers per getLedgers page (and per database transaction), at most 200; pages
    /// are sized by `--page-mib` within this bound.
    #[arg(long, env = "WRITER_PAGE_LIMIT", default_value_t = 200)]
    pub page_limit: usize,
    /// Byte budget of one getLedgers answer, in MiB: the page size in ledgers adapts to
    /// the ledgers' size so an answer stays about this large.
    #[arg(long, env = "WRITER_PAGE_MIB", default_value_t = 16)]
    pub page_mib: u32,
    /// Largest getLedgers answer accepted, in MiB; a larger one is asked for again in
    /// smaller pages.
    #[arg(long, env = "WRITER_RPC_MAX_RESPONSE_MIB", default_value_t = 64)]
    pub rpc_max_response_mib: u32,
    /// Fetched ledgers held ahead of the database, in MiB of XDR: bounds the prefetch.
    #[arg(long, env = "WRITER_PREFETCH_MIB", default_value_t = 64)]
    pub prefetch_mib: u32,
    /// An active writer that has committed nothing for this long while the RPC has newer
    /// ledgers reports itself unhealthy (`/health` 503), in seconds.
    #[arg(long, env = "WRITER_STALL_AFTER_SECS", default_value_t = 60)]
    pub stall_after_secs: u64,
    /// RPC request timeout, in seconds.
    #[arg(long, env = "WRITER_RPC_TIMEOUT_SECS", default_value_t = 30)]
    pub rpc_timeout_secs: u64,
    /// Fetches of one unusable ledger before ingestion stops on it.
    #[arg(long, env = "WRITER_MAX_BAD_LEDGER_ATTEMPTS", default_value_t = 8)]
    pub max_bad_ledger_attempts: u32,
    /// Cap of the retry backoff, in milliseconds.
    #[arg(long, env = "WRITER_MAX_BACKOFF_MS", default_value_t = 5000)]
    pub max_backoff_ms: u64,
    /// How often a standby tries to take the writer lock, in milliseconds.
    #[arg(long, env = "WRITER_STANDBY_POLL_MS", default_value_t = 1000)]
    pub standby_poll_ms: u64,
    /// How long the active writer's lease lasts unless renewed (every quarter of it), in
    /// milliseconds: a standby evicts a holder whose lease expired (a hung process).
    #[arg(long, env = "WRITER_LEASE_TTL_MS", default_value_t = 4000)]
    pub lease_ttl_ms: u64,
    /// Attempts at a batch that fails with a database error that may be deterministic
    /// (a constraint violation, disk full, an encoding error) before the writer exits.
    #[arg(long, env = "WRITER_MAX_COMMIT_ATTEMPTS", default_value_t = 5)]
    pub max_commit_attempts: u32,
    /// Pause between checks while the RPC's retention is past the cursor, in milliseconds.
    #[arg(long, env = "WRITER_RETENTION_RECHECK_MS", default_value_t = 30_000)]
    pub retention_recheck_ms: u64,
    /// Redis for tip announcements to readers (none: readers poll the database):
    /// `redis://host:port`, or `rediss://host:port` for TLS.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// CA certificates (PEM) trusted for a `rediss://` Redis instead of the built-in
    /// public roots: for a Redis whose certificate a private CA signed.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Prefix of the Redis keys and channel.
    #[arg(long, env = "REDIS_PREFIX", default_value = "stellar-payments:")]
    pub redis_prefix: String,
    /// Address of the `/health` and `/metrics` server.
    #[arg(long, env = "WRITER_HEALTH_LISTEN", default_value = "127.0.0.1:9100")]
    pub health_listen: SocketAddr,
    /// Log as JSON lines.
    #[arg(long, env = "LOG_JSON")]
    pub log_json: bool,
}

impl RunArgs {
    /// The RPC source's byte budget from the arguments.
    pub fn page_budget(&self) -> crate::paging::PageBudget {
        let mib = |n: u32| (n as usize).saturating_mul(crate::paging::MIB);
        crate::paging::PageBudget {
            page_bytes: mib(self.page_mib),
            max_response_bytes: u32::try_from(mib(self.rpc_max_response_mib.min(4095)))
                .unwrap_or(u32::MAX),
            max_ledgers: self.page_limit,
            in_flight_bytes: mib(self.prefetch_mib),
        }
        .sanitized()
    }
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
        Command::Migrate(args) => runtime()?.block_on(crate::commands::migrate::run(&args)),
        Command::Backfill(args) => {
            crate::commands::init_tracing(false);
            runtime()?.block_on(crate::commands::backfill::run(args))
        }
        Command::Gaps(args) => runtime()?.block_on(crate::commands::gaps::run(&args)),
        Command::Run(args) => {
            crate::commands::init_tracing(args.log_json);
            runtime()?.block_on(crate::commands::run::run(args))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
