//! `loadtest bench catchup`: the release writer catching up over pubnet-sized ledgers
//! (copies of pubnet ledger 51000294: 1.45 MB of XDR, 541 transactions each) served by
//! the RPC simulator, against the extraction ceiling measured in the same run.
//!
//! The ceiling is what one core does with the same ledgers without network or database:
//! `extract_xdr` (scan, verify, extract) over their XDR, back to back. The writer's rate is
//! timed from its first committed ledger to its last, on a durable Postgres (fsync on),
//! with its peak RSS sampled from `/proc`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use shared::testkit::PostgresCluster;
use shared::{Extractor, Network};
use stellar_xdr::{Limits, WriteXdr};
use tokio_postgres::NoTls;

use crate::simnet::{pubnet_replica_chain, Simnet, SimnetConfig};

/// Target from the issue: catch-up at half the extraction ceiling or better.
pub const TARGET_RATIO: f64 = 0.5;

/// Arguments of `loadtest bench catchup`.
#[derive(Debug, clap::Args)]
pub struct CatchupBenchArgs {
    /// Pubnet-sized ledgers to catch up over.
    #[arg(long, default_value_t = 200)]
    pub ledgers: u32,
    /// The writer's `--page-mib`.
    #[arg(long, default_value_t = 16)]
    pub page_mib: u32,
    /// The writer's `--prefetch-mib`.
    #[arg(long, default_value_t = 64)]
    pub prefetch_mib: u32,
    /// The writer binary (default: `writer` next to this binary).
    #[arg(long)]
    pub writer_bin: Option<PathBuf>,
}

/// The peak resident set of a running process (VmHWM), in bytes.
pub(crate) fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after ") ".
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

async fn cursor(client: &tokio_postgres::Client) -> Option<u32> {
    match client
        .query_opt("SELECT last_ledger FROM ingest_cursor", &[])
        .await
    {
        Ok(Some(row)) => Some(row.get::<_, i32>(0) as u32),
        _ => None,
    }
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: &CatchupBenchArgs) -> anyhow::Result<()> {
    let writer_bin = match &args.writer_bin {
        Some(path) => path.clone(),
        None => crate::sibling_binary("writer")?,
    };
    let first_seq = 2;
    let count = args.ledgers.max(2);
    let last_seq = first_seq + count - 1;
    let fixtures = shared::testkit::fixtures::dir();
    let chain =
        tokio::task::spawn_blocking(move || pubnet_replica_chain(&fixtures, first_seq, count))
            .await??;

    // Ceiling: extraction alone, one core, the same ledgers.
    let (ceiling_ledgers, ceiling_payments, wire_mib) = {
        let xdrs: Vec<Vec<u8>> = chain
            .iter()
            .map(|l| l.to_xdr(Limits::none()))
            .collect::<Result<_, _>>()?;
        let wire_mib = xdrs.iter().map(Vec::len).sum::<usize>() as f64 / (1 << 20) as f64;
        tokio::task::spawn_blocking(move || -> anyhow::Result<(f64, f64, f64)> {
            let mut extractor = Extractor::new(Network::pubnet());
            let started = Instant::now();
            let mut payments = 0usize;
            for xdr in &xdrs {
                payments += extractor.extract_xdr(xdr)?.payments.len();
            }
            let secs = started.elapsed().as_secs_f64();
            Ok((xdrs.len() as f64 / secs, payments as f64 / secs, wire_mib))
        })
        .await??
    };

    let cluster = tokio::task::spawn_blocking(PostgresCluster::start_durable).await??;
    let primary = cluster.primary_url();
    let mut config = SimnetConfig::new(chain);
    config.initially_closed = count as usize;
    let sim = Simnet::start(config).await?;

    let mut writer = std::process::Command::new(&writer_bin)
        .args(["run", "--database-url", &primary, "--rpc-url", &sim.url()])
        .args(["--network", "pubnet", "--start", &first_seq.to_string()])
        .args([
            "--health-listen",
            "127.0.0.1:0",
            "--poll-interval-ms",
            "100",
        ])
        .args(["--page-mib", &args.page_mib.to_string()])
        .args(["--prefetch-mib", &args.prefetch_mib.to_string()])
        .env("RUST_LOG", "warn")
        .spawn()
        .with_context(|| format!("starting {}", writer_bin.display()))?;
    let outcome = async {
        let (client, connection) = tokio_postgres::connect(&primary, NoTls).await?;
        tokio::spawn(connection);
        let deadline = Instant::now() + Duration::from_secs(60 + u64::from(count));
        let mut first_commit: Option<(Instant, u32, f64)> = None;
        let mut peak = 0;
        loop {
            if Instant::now() > deadline {
                bail!("the writer did not catch up in time");
            }
            if let Some(rss) = peak_rss(writer.id()) {
                peak = peak.max(rss);
            }
            if let Some(status) = writer.try_wait()? {
                bail!("the writer exited: {status}");
            }
            let at = cursor(&client).await;
            if let (None, Some(seen)) = (first_commit, at) {
                let cpu = cpu_seconds(writer.id()).unwrap_or(0.0);
                first_commit = Some((Instant::now(), seen, cpu));
            }
            if at == Some(last_seq) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (started, from, cpu_start) = first_commit.context("no commit")?;
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(writer.id()).unwrap_or(0.0) - cpu_start;
        let ledgers = f64::from(last_seq - from);
        let payments: i64 = client
            .query_one(
                "SELECT count(*) FROM payments WHERE ledger_sequence > $1",
                &[&(from as i32)],
            )
            .await?
            .get(0);
        let ledger_rate = ledgers / elapsed;
        let payment_rate = payments as f64 / elapsed;
        println!(
            "catch-up over {count} pubnet-sized ledgers ({wire_mib:.0} MiB of XDR), writer --page-mib {} --prefetch-mib {}",
            args.page_mib, args.prefetch_mib
        );
        println!(
            "extraction ceiling (one core, no network or database): {ceiling_ledgers:.1} ledgers/s, {ceiling_payments:.0} payments/s"
        );
        println!(
            "writer: {ledger_rate:.1} ledgers/s, {payment_rate:.0} payments/s ({ledgers} ledgers in {elapsed:.1}s), \
             CPU {:.0} ms per ledger, peak RSS {:.0} MiB",
            cpu * 1000.0 / ledgers,
            peak as f64 / (1 << 20) as f64
        );
        let ratio = ledger_rate / ceiling_ledgers;
        println!(
            "ratio to the extraction ceiling {ratio:.3} (target >= {TARGET_RATIO}: {})",
            if ratio >= TARGET_RATIO { "met" } else { "NOT met" }
        );
        Ok(())
    }
    .await;
    let _ = writer.kill();
    let _ = writer.wait();
    sim.shutdown().await;
    drop(cluster);
    outcome
}
