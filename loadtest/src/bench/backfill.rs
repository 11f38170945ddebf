//! `loadtest bench backfill`: the real `writer backfill` path (data lake files, zstd,
//! XDR scan, extraction, binary COPY into the indexed schema) against a raw COPY of the
//! very same rows into the same tables, in the same run, on a durable Postgres (fsync,
//! full page writes and synchronous commit on).
//!
//! Steps: generate a synthetic data lake; for each worker count, backfill it into a
//! fresh database with the release writer binary, sampling the writer's peak RSS; then
//! export every table of one result with `COPY ... TO STDOUT (FORMAT binary)` and time
//! loading those bytes back with `COPY ... FROM STDIN` into a fresh, migrated database.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::{SinkExt as _, TryStreamExt as _};
use shared::testkit::PostgresCluster;
use shared::Network;
use tokio_postgres::NoTls;

use crate::synth::{write_datalake, SynthConfig};

/// Targets from the issue.
pub const TARGET_PAYMENTS_PER_SECOND: f64 = 50_000.0;
/// Backfill throughput as a share of raw COPY.
pub const TARGET_RATIO: f64 = 0.6;
/// Peak writer memory.
pub const TARGET_RSS_BYTES: u64 = 1 << 30;

/// Tables in load order, with the columns written by the writer (wall-clock defaults left
/// out). The dictionaries go in with their ids (COPY writes identity columns as given), so
/// the history rows copied after them refer to the same entries.
const TABLES: [(&str, &str); 10] = [
    ("ledgers", "sequence, hash, previous_hash, closed_at, protocol_version, transaction_count, successful_transaction_count, operation_count, payment_count"),
    ("transactions", "*"),
    ("payments", "*"),
    ("accounts", "id, address"),
    ("assets", "id, asset"),
    ("account_payments", "*"),
    ("asset_payments", "*"),
    ("account_asset_history", "*"),
    ("account_last_activity", "*"),
    ("backfill_ranges", "start_ledger, end_ledger"),
];

/// Arguments of `loadtest bench backfill`.
#[derive(Debug, clap::Args)]
pub struct BackfillBenchArgs {
    /// Payments to generate (rounded up to whole ledgers).
    #[arg(long, default_value_t = 1_000_000)]
    pub payments: u64,
    /// Payments per synthetic ledger.
    #[arg(long, default_value_t = 250)]
    pub payments_per_ledger: u32,
    /// Accounts (zipf popularity).
    #[arg(long, default_value_t = 500_000)]
    pub accounts: u32,
    /// Worker counts to measure, comma separated.
    #[arg(long, default_value = "1,2,4", value_delimiter = ',')]
    pub workers: Vec<usize>,
    /// Ledgers per backfill chunk.
    #[arg(long, default_value_t = 64)]
    pub chunk_ledgers: u32,
    /// Reuse (or create) the synthetic data lake here instead of a temporary folder.
    #[arg(long)]
    pub lake: Option<PathBuf>,
    /// The writer binary (default: `writer` next to this binary).
    #[arg(long)]
    pub writer_bin: Option<PathBuf>,
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

fn database_url(base: &str, name: &str) -> String {
    match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => format!("{base}/{name}"),
    }
}

/// The peak resident set of a running process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

struct Run {
    workers: usize,
    elapsed: Duration,
    payments: u64,
    peak_rss: u64,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: &BackfillBenchArgs) -> anyhow::Result<()> {
    let writer_bin = match &args.writer_bin {
        Some(path) => path.clone(),
        None => crate::sibling_binary("writer")?,
    };
    let ledgers = args
        .payments
        .div_ceil(u64::from(args.payments_per_ledger.max(1))) as u32;
    let temp = tempfile::tempdir()?;
    let lake_dir = args
        .lake
        .clone()
        .unwrap_or_else(|| temp.path().join("lake"));
    let first_seq = 2;
    let last_seq = first_seq + ledgers - 1;
    let generated = Instant::now();
    let summary = if lake_dir.join("config.json").is_file() {
        None
    } else {
        let lake_dir = lake_dir.clone();
        let config = SynthConfig {
            first_seq,
            ledgers,
            payments_per_ledger: args.payments_per_ledger,
            accounts: args.accounts,
            seed: 42,
            network: Network::pubnet(),
            first_close_time: 1_700_000_000,
            previous_hash: [0; 32],
            zipf_exponent: 1.0,
        };
        Some(
            tokio::task::spawn_blocking(move || write_datalake(&lake_dir, config, 1, 64_000))
                .await??,
        )
    };
    if let Some(summary) = &summary {
        println!(
            "generated {} ledgers, {} payments in {:.1}s ({})",
            summary.last - summary.first + 1,
            summary.payments,
            generated.elapsed().as_secs_f64(),
            lake_dir.display()
        );
    }

    let cluster = tokio::task::spawn_blocking(PostgresCluster::start_durable).await??;
    let admin = connect(&cluster.primary_url()).await?;

    let mut runs = Vec::new();
    for &workers in &args.workers {
        let name = format!("backfill_w{workers}");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let url = database_url(&cluster.primary_url(), &name);
        let migrate = std::process::Command::new(&writer_bin)
            .args(["migrate", "--database-url", &url])
            .output()?;
        if !migrate.status.success() {
            bail!(
                "writer migrate failed: {}",
                String::from_utf8_lossy(&migrate.stderr)
            );
        }
        let started = Instant::now();
        let mut child = std::process::Command::new(&writer_bin)
            .args([
                "backfill",
                "--database-url",
                &url,
                "--network",
                "pubnet",
                "--quiet",
            ])
            .args(["--source", lake_dir.to_str().context("lake path")?])
            .args([
                "--from",
                &first_seq.to_string(),
                "--to",
                &last_seq.to_string(),
            ])
            .args([
                "--workers",
                &workers.to_string(),
                "--chunk-ledgers",
                &args.chunk_ledgers.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut peak = 0;
        let status = loop {
            if let Some(rss) = peak_rss(child.id()) {
                peak = peak.max(rss);
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let elapsed = started.elapsed();
        if !status.success() {
            bail!("writer backfill with {workers} workers failed");
        }
        let db = connect(&url).await?;
        let payments: i64 = db
            .query_one("SELECT count(*) FROM payments", &[])
            .await?
            .get(0);
        runs.push(Run {
            workers,
            elapsed,
            payments: payments as u64,
            peak_rss: peak,
        });
        println!(
            "backfill, {workers} worker(s): {payments} payments in {:.2}s = {:.0} payments/s, peak RSS {:.0} MiB",
            elapsed.as_secs_f64(),
            payments as f64 / elapsed.as_secs_f64(),
            peak as f64 / (1 << 20) as f64
        );
    }

    // Ceiling: the same rows, raw binary COPY into the same (migrated, indexed) tables.
    let Some(best) = runs.iter().max_by(|a, b| {
        (a.payments as f64 / a.elapsed.as_secs_f64())
            .total_cmp(&(b.payments as f64 / b.elapsed.as_secs_f64()))
    }) else {
        bail!("no run");
    };
    let source = connect(&database_url(
        &cluster.primary_url(),
        &format!("backfill_w{}", best.workers),
    ))
    .await?;
    let mut exported = Vec::new();
    for (table, columns) in TABLES {
        let query = format!("COPY (SELECT {columns} FROM {table}) TO STDOUT (FORMAT binary)");
        let chunks: Vec<bytes::Bytes> =
            source.copy_out(query.as_str()).await?.try_collect().await?;
        exported.push((table, columns, chunks));
    }
    admin.batch_execute("CREATE DATABASE raw_copy").await?;
    let raw_url = database_url(&cluster.primary_url(), "raw_copy");
    let migrate = std::process::Command::new(&writer_bin)
        .args(["migrate", "--database-url", &raw_url])
        .output()?;
    if !migrate.status.success() {
        bail!(
            "writer migrate failed: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
    }
    let mut target = connect(&raw_url).await?;
    let started = Instant::now();
    let tx = target.transaction().await?;
    for (table, columns, chunks) in &exported {
        let column_list = if *columns == "*" {
            String::new()
        } else {
            format!(" ({columns})")
        };
        let sink = tx
            .copy_in(format!("COPY {table}{column_list} FROM STDIN (FORMAT binary)").as_str())
            .await?;
        futures_util::pin_mut!(sink);
        for chunk in chunks {
            sink.send(chunk.clone()).await?;
        }
        sink.finish().await?;
    }
    tx.commit().await?;
    let copy_elapsed = started.elapsed();
    let copy_rate = best.payments as f64 / copy_elapsed.as_secs_f64();
    let best_rate = best.payments as f64 / best.elapsed.as_secs_f64();
    println!(
        "raw COPY of the same rows (one transaction): {:.2}s = {copy_rate:.0} payments/s",
        copy_elapsed.as_secs_f64()
    );
    println!(
        "best backfill ({} workers): {best_rate:.0} payments/s (target >= {TARGET_PAYMENTS_PER_SECOND}: {}), \
         ratio to raw COPY {:.3} (target >= {TARGET_RATIO}: {})",
        best.workers,
        if best_rate >= TARGET_PAYMENTS_PER_SECOND { "met" } else { "NOT met" },
        best_rate / copy_rate,
        if best_rate / copy_rate >= TARGET_RATIO { "met" } else { "NOT met" }
    );
    let peak = runs.iter().map(|r| r.peak_rss).max().unwrap_or(0);
    println!(
        "peak writer RSS {:.0} MiB (target <= 1024 MiB: {})",
        peak as f64 / (1 << 20) as f64,
        if peak <= TARGET_RSS_BYTES {
            "met"
        } else {
            "NOT met"
        }
    );
    let base = runs
        .first()
        .map(|r| r.payments as f64 / r.elapsed.as_secs_f64())
        .unwrap_or(1.0);
    for r in &runs {
        let rate = r.payments as f64 / r.elapsed.as_secs_f64();
        println!(
            "scaling: {} worker(s) {:.0} payments/s = {:.2}x of 1 worker",
            r.workers,
            rate,
            rate / base
        );
    }
    Ok(())
}
