//! Command-line interface of the load tester.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shared::testkit::fixtures;

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
    /// chain (optionally continued by synthetic ones), over JSON-RPC, closing one more
    /// ledger at a time.
    Simnet(SimnetArgs),
    /// Synthetic Stellar chains.
    #[command(subcommand)]
    Synth(SynthCommand),
    /// The whole system on this machine: Postgres primary + streaming replica, Redis, the
    /// RPC simulator (or a real RPC), a blue/green writer pair, blue and green reader
    /// pairs and the nginx edge in front of them, until Ctrl-C.
    Stack(crate::stack::StackArgs),
    /// Operator commands for a running stack: move reader traffic between colours at
    /// the edge, or hand ingestion over to the standby writer.
    Switch(crate::stack::control::SwitchArgs),
    /// An open-loop load of wallets, explorers, keyed and abusive clients and event
    /// streams through the edge, at a steady rate or ramped to the knee; writes a JSON
    /// results file.
    Load(crate::load::LoadArgs),
    /// Renders a `loadtest load` results file as a self-contained HTML page of charts
    /// and tables.
    Report(ReportArgs),
}

/// Arguments of `loadtest report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The results file of `loadtest load`.
    pub results: PathBuf,
    /// The HTML page to write.
    #[arg(long, short = 'o', default_value = "report.html")]
    pub out: PathBuf,
}

/// Arguments of `loadtest simnet`.
#[derive(Debug, clap::Args)]
pub struct SimnetArgs {
    /// Directory of ledger files (.xdr, .xdr.gz, base64 .txt/.txt.gz, data-lake .xdr.zstd).
    /// May be omitted with `--synthetic`: the chain is then purely synthetic.
    #[arg(long, env = "SIMNET_LEDGERS")]
    pub ledgers: Option<PathBuf>,
    /// Synthetic ledgers appended after the recorded ones (the first follows the last
    /// recorded one: next sequence, linked to its hash, closing 5 s later); without
    /// `--ledgers`, the whole chain, from `--first-seq` (default 2).
    #[arg(long, default_value_t = 0)]
    pub synthetic: u32,
    /// Payment records per synthetic ledger.
    #[arg(long, default_value_t = 100)]
    pub synthetic_payments: u32,
    /// Accounts in the synthetic world.
    #[arg(long, default_value_t = 10_000)]
    pub synthetic_accounts: u32,
    /// Seed of the synthetic ledgers.
    #[arg(long, default_value_t = 1)]
    pub synthetic_seed: u64,
    /// Address to listen on (loopback by default).
    #[arg(long, env = "SIMNET_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: std::net::SocketAddr,
    /// Network passphrase served by getNetwork, or `pubnet` / `testnet`.
    #[arg(long, default_value = "pubnet")]
    pub network: String,
    /// Sequence of the first re-chained ledger (default: the lowest recorded one; 2 for a
    /// purely synthetic chain).
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
    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first);
    /// needs `--tls-key`.
    #[arg(long, env = "SIMNET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, env = "SIMNET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The synthetic chain commands.
#[derive(Debug, Subcommand)]
pub enum SynthCommand {
    /// Writes a synthetic chain as a SEP-54 data lake (zstd `LedgerCloseMetaBatch` files
    /// and `config.json`), streaming, in constant memory.
    Datalake(SynthDatalakeArgs),
    /// Prints the strkeys (G...) of a synthetic world's accounts, one a line, in index
    /// order: valid addresses for databases filled directly in SQL
    /// (`scripts/scale-db.sh`).
    Accounts(SynthAccountsArgs),
}

/// Arguments of `loadtest synth accounts`.
#[derive(Debug, clap::Args)]
pub struct SynthAccountsArgs {
    /// Accounts to print.
    #[arg(long, default_value_t = 1_000)]
    pub count: u64,
    /// Seed of the world (the same as `synth datalake --seed` gives the same keys).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Arguments of `loadtest synth datalake`.
#[derive(Debug, clap::Args)]
pub struct SynthDatalakeArgs {
    /// The data lake's root directory (created; must be empty unless `--force`).
    #[arg(long)]
    pub out: PathBuf,
    /// Ledgers to write (rounded up to whole batches).
    #[arg(long, default_value_t = 1_000)]
    pub ledgers: u32,
    /// Payment records per ledger.
    #[arg(long, default_value_t = 100)]
    pub payments_per_ledger: u32,
    /// Accounts in the synthetic world (Zipf-popular).
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u32,
    /// Ledgers per batch file.
    #[arg(long, default_value_t = 1)]
    pub ledgers_per_batch: u32,
    /// Batch files per partition folder.
    #[arg(long, default_value_t = 64_000)]
    pub batches_per_partition: u32,
    /// Sequence of the first ledger (must start a batch).
    #[arg(long, default_value_t = 2)]
    pub first_seq: u32,
    /// Seed: the same seed and settings write the same ledgers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Network passphrase, or `pubnet` / `testnet`.
    #[arg(long, default_value = "pubnet")]
    pub network: String,
    /// Zipf exponent of account popularity (0: uniform).
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// zstd compression level.
    #[arg(long, default_value_t = 3)]
    pub zstd_level: i32,
    /// Close time of the first ledger, unix seconds (default: the generator's).
    #[arg(long)]
    pub first_close_time: Option<i64>,
    /// Write into a non-empty directory (files of the same names are replaced).
    #[arg(long)]
    pub force: bool,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Decode + extract of one ledger against bare XDR decode of the same bytes, on one
    /// core, in the same run.
    Extract(ExtractBenchArgs),
    /// Live latency from the RPC closing a ledger to its rows on a streaming replica,
    /// through the real writer, against plain replication latency in the same run.
    LiveLatency(crate::bench::live_latency::LiveLatencyArgs),
    /// Catch-up of the real writer over pubnet-sized ledgers from the RPC simulator, against
    /// the extraction ceiling of the same ledgers, with peak RSS and CPU per ledger.
    Catchup(crate::bench::catchup::CatchupBenchArgs),
    /// Backfill throughput of a synthetic data lake through the real writer, against a raw
    /// COPY of the same rows, with peak RSS and 1, 2, 4 workers.
    Backfill(crate::bench::backfill::BackfillBenchArgs),
    /// Reader requests/s on response-cache hits and 304s against `/constant` on the same
    /// reader, driven by wrk.
    ReaderCache(crate::bench::reader::cache::ReaderCacheBenchArgs),
    /// Uncached account history on millions of payments (throughput and latency
    /// percentiles), against `/constant` at the same concurrency, driven by wrk.
    ReaderHistory(crate::bench::reader::history::ReaderHistoryBenchArgs),
    /// The local stack under steady open-rate load through the edge across a reader
    /// switch, a writer handover and a switch back: every response counted (failures
    /// must be 0), each switch timed, the chain checked, and the edge's cache shares.
    BlueGreen(crate::bench::blue_green::BlueGreenBenchArgs),
}

/// Arguments of `loadtest bench extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractBenchArgs {
    /// The ledger file to measure (any supported format; its first ledger is used).
    #[arg(
        long,
        env = "BENCH_LEDGER",
        default_value_os_t = fixtures::pubnet_ledger_path(fixtures::LARGE_PUBNET_LEDGER)
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
        Command::Synth(SynthCommand::Datalake(args)) => run_synth_datalake(&args),
        Command::Synth(SynthCommand::Accounts(args)) => {
            use std::io::Write as _;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for index in 0..args.count {
                writeln!(out, "{}", crate::synth::account_strkey(args.seed, index))?;
            }
            out.flush()?;
            Ok(())
        }
        Command::Bench(BenchCommand::LiveLatency(args)) => {
            async_runtime()?.block_on(crate::bench::live_latency::run(&args))
        }
        Command::Bench(BenchCommand::Catchup(args)) => {
            async_runtime()?.block_on(crate::bench::catchup::run(&args))
        }
        Command::Bench(BenchCommand::Backfill(args)) => {
            async_runtime()?.block_on(crate::bench::backfill::run(&args))
        }
        Command::Bench(BenchCommand::ReaderCache(args)) => {
            async_runtime()?.block_on(crate::bench::reader::cache::run(&args))
        }
        Command::Bench(BenchCommand::ReaderHistory(args)) => {
            async_runtime()?.block_on(crate::bench::reader::history::run(&args))
        }
        Command::Bench(BenchCommand::BlueGreen(args)) => {
            async_runtime()?.block_on(crate::bench::blue_green::run(&args))
        }
        Command::Stack(args) => async_runtime()?.block_on(crate::stack::run(&args)),
        Command::Switch(args) => crate::stack::control::run_switch(&args),
        Command::Load(args) => async_runtime()?.block_on(crate::load::run_command(&args)),
        Command::Report(args) => run_report(&args),
    }
}

fn run_report(args: &ReportArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let text = std::fs::read(&args.results)
        .with_context(|| format!("reading {}", args.results.display()))?;
    let results: crate::load::results::Results = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a load results file", args.results.display()))?;
    std::fs::write(&args.out, crate::load::report::render(&results))
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn async_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run_synth_datalake(args: &SynthDatalakeArgs) -> anyhow::Result<()> {
    use crate::synth::{datalake, DatalakeOptions, SynthConfig};

    let non_empty = std::fs::read_dir(&args.out)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if non_empty && !args.force {
        anyhow::bail!(
            "{} is not empty; choose another directory or pass --force",
            args.out.display()
        );
    }
    let defaults = SynthConfig::default();
    let config = SynthConfig {
        first_seq: args.first_seq,
        ledgers: args.ledgers,
        payments_per_ledger: args.payments_per_ledger,
        accounts: args.accounts,
        seed: args.seed,
        network: shared::Network::new(crate::simnet::passphrase_for(&args.network)),
        first_close_time: args.first_close_time.unwrap_or(defaults.first_close_time),
        previous_hash: defaults.previous_hash,
        zipf_exponent: args.zipf,
    };
    let options = DatalakeOptions {
        ledgers_per_batch: args.ledgers_per_batch,
        batches_per_partition: args.batches_per_partition,
        zstd_level: args.zstd_level,
    };
    let target = u64::from(args.ledgers);
    let started = std::time::Instant::now();
    let mut reported = started;
    let summary = datalake::write_datalake_with(&args.out, config, options, |progress| {
        if reported.elapsed() >= std::time::Duration::from_secs(2) {
            reported = std::time::Instant::now();
            let (ledgers_per_s, payments_per_s) = datalake::rates(progress, started);
            eprintln!(
                "ledger {} ({}/{target}), {} payments, {ledgers_per_s:.0} ledgers/s, \
                 {payments_per_s:.0} payments/s",
                progress.last, progress.ledgers, progress.payments
            );
        }
    })?;
    let (ledgers_per_s, payments_per_s) = datalake::rates(&summary, started);
    println!(
        "wrote ledgers {}-{} ({} ledgers, {} payments, {:.1} MB) to {} in {:.1} s: \
         {ledgers_per_s:.0} ledgers/s, {payments_per_s:.0} payments/s",
        summary.first,
        summary.last,
        summary.ledgers,
        summary.payments,
        summary.bytes as f64 / 1e6,
        args.out.display(),
        started.elapsed().as_secs_f64(),
    );
    Ok(())
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
        close_after_refused_tip: false,
    };
    faults.validate().map_err(anyhow::Error::msg)?;
    let passphrase = crate::simnet::passphrase_for(&args.network);
    let network = shared::Network::new(passphrase.clone());
    let tail = crate::simnet::SyntheticTail {
        payments_per_ledger: args.synthetic_payments,
        accounts: args.synthetic_accounts,
        seed: args.synthetic_seed,
    };
    let chain = match &args.ledgers {
        Some(dir) => {
            let recorded = crate::simnet::load_chain(dir, args.first_seq)
                .with_context(|| format!("loading ledgers from {}", dir.display()))?;
            if args.synthetic > 0 {
                crate::simnet::recorded_then_synthetic(
                    recorded,
                    args.synthetic,
                    tail.payments_per_ledger,
                    tail.accounts,
                    tail.seed,
                    network,
                )?
            } else {
                recorded
            }
        }
        None if args.synthetic > 0 => crate::simnet::synthetic_chain(
            args.first_seq.unwrap_or(2),
            args.synthetic,
            tail,
            network,
        )?,
        None => anyhow::bail!("give --ledgers DIR (or SIMNET_LEDGERS), --synthetic N, or both"),
    };
    let mut config = SimnetConfig::new(chain);
    config.network_passphrase = passphrase;
    config.initially_closed = args.initially_closed;
    config.close_interval = (args.close_interval_ms > 0)
        .then(|| std::time::Duration::from_millis(args.close_interval_ms));
    config.faults = faults;
    config.listen = args.listen;
    config.seed = args.seed;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(crate::simnet::SimnetTls::from_files(cert, key)?);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(crate::simnet::run(config))
}
