//! `loadtest bench live-latency`: how long a ledger takes from the RPC having it to its
//! rows being readable on a streaming replica, through the real writer process.
//!
//! A Postgres primary with a streaming replica, the RPC simulator and the release writer
//! binary run on this machine. The simulator closes one synthetic ledger per interval;
//! a watcher polls the replica's ingest cursor every few milliseconds. Latency is the time
//! from a ledger's close to the replica showing it. The floor measured in the same run is
//! plain replication: a row inserted on the primary until it is visible on the replica.
//!
//! Besides latency it reports what keeping up costs and whether it holds: the writer's CPU
//! per ledger and peak RSS over the measured ledgers (from `/proc`), and its lag (ledgers
//! closed but not yet on the replica) at worst over the whole run and over its last
//! fifth against the four fifths before: a writer that falls behind lags more and more, so
//! its worst lag is in the last fifth; one that keeps up has no more lag late than early
//! (2 ledgers of slack: one closing while the previous commits).
//! Synthetic chains are generated and encoded ledger by ledger into the simulator, so a
//! long high-rate profile (`--payments-per-ledger 6000 --close-interval-ms 600
//! --duration-secs 300`) holds only the encoded chain in memory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use shared::testkit::PostgresCluster;
use shared::Network;
use tokio_postgres::NoTls;

use crate::simnet::{Simnet, SimnetConfig};
use crate::synth::{generate, SynthConfig};

/// Target from the issue: p99 below 1.5 s with a 1 s poll interval.
pub const TARGET_P99: Duration = Duration::from_millis(1500);

/// Arguments of `loadtest bench live-latency`.
#[derive(Debug, clap::Args)]
pub struct LiveLatencyArgs {
    /// Ledgers to close and measure.
    #[arg(long, default_value_t = 120)]
    pub ledgers: u32,
    /// Close ledgers for this long instead of a count: `--ledgers` becomes the duration
    /// divided by the close interval (rounded up).
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Accounts in the synthetic world (Zipf-popular).
    #[arg(long, default_value_t = 50_000)]
    pub accounts: u32,
    /// Payments in each synthetic ledger.
    #[arg(long, default_value_t = 200)]
    pub payments_per_ledger: u32,
    /// Interval between ledger closes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub close_interval_ms: u64,
    /// The writer's poll interval at the tip, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub poll_interval_ms: u64,
    /// The writer binary (default: `writer` next to this binary).
    #[arg(long)]
    pub writer_bin: Option<PathBuf>,
    /// Serve pubnet-sized ledgers (copies of pubnet ledger 51000294, 1.45 MB and 541
    /// transactions each) instead of synthetic ones; `--payments-per-ledger` is ignored.
    #[arg(long)]
    pub pubnet_sized: bool,
    /// The p99 target, in milliseconds (default: 1500 ms; the pubnet-sized profile's
    /// target is 1000 ms).
    #[arg(long)]
    pub target_p99_ms: Option<u64>,
}

impl LiveLatencyArgs {
    /// Ledgers to close and measure: `--duration-secs` over the close interval, or
    /// `--ledgers`; at least 1.
    pub fn ledger_count(&self) -> u32 {
        match self.duration_secs {
            Some(secs) => {
                let ms = secs.saturating_mul(1000);
                u32::try_from(ms.div_ceil(self.close_interval_ms.max(1))).unwrap_or(u32::MAX)
            }
            None => self.ledgers,
        }
        .max(1)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The ledger the replica's ingest cursor shows, if any yet.
async fn seen(client: &tokio_postgres::Client) -> Option<u32> {
    match client
        .query_opt("SELECT last_ledger FROM ingest_cursor", &[])
        .await
    {
        Ok(Some(row)) => Some(row.get::<_, i32>(0) as u32),
        _ => None,
    }
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: &LiveLatencyArgs) -> anyhow::Result<()> {
    let writer_bin = match &args.writer_bin {
        Some(path) => path.clone(),
        None => crate::sibling_binary("writer")?,
    };
    let cluster =
        tokio::task::spawn_blocking(PostgresCluster::start_durable_with_replica).await??;
    let primary = cluster.primary_url();
    let replica = cluster.replica_url().context("replica")?;

    let first_seq = 2;
    let ledgers = args.ledger_count();
    let prepared = Instant::now();
    let sim = if args.pubnet_sized {
        let fixtures = shared::testkit::fixtures::dir();
        let copies = ledgers + 1;
        let chain = tokio::task::spawn_blocking(move || {
            crate::simnet::pubnet_replica_chain(&fixtures, first_seq, copies)
        })
        .await??;
        let mut config = SimnetConfig::new(chain);
        config.initially_closed = 1;
        Simnet::start(config).await?
    } else {
        let synthetic = generate(SynthConfig {
            first_seq,
            ledgers: ledgers + 1,
            payments_per_ledger: args.payments_per_ledger,
            accounts: args.accounts,
            seed: 7,
            network: Network::pubnet(),
            first_close_time: 1_700_000_000,
            previous_hash: [0; 32],
            zipf_exponent: 1.0,
        })
        .map(|l| l.meta);
        let mut config = SimnetConfig::new(Vec::new());
        config.initially_closed = 1;
        Simnet::start_streamed(config, synthetic).await?
    };
    eprintln!(
        "chain of {} ledgers generated and encoded in {:.1}s",
        ledgers + 1,
        prepared.elapsed().as_secs_f64()
    );

    let mut writer = std::process::Command::new(&writer_bin)
        .args([
            "run",
            "--database-url",
            &primary,
            "--rpc-url",
            &sim.url(),
            "--network",
            "pubnet",
        ])
        .args([
            "--start",
            &first_seq.to_string(),
            "--health-listen",
            "127.0.0.1:0",
        ])
        .args(["--poll-interval-ms", &args.poll_interval_ms.to_string()])
        .env("RUST_LOG", "warn")
        .spawn()
        .with_context(|| format!("starting {}", writer_bin.display()))?;
    eprintln!("writer pid {}", writer.id());
    let run = Run {
        args,
        ledgers,
        writer_pid: writer.id(),
        primary: &primary,
        replica: &replica,
        sim: &sim,
        first_seq,
    };
    let outcome = measure(&run).await;
    let _ = writer.kill();
    let _ = writer.wait();
    sim.shutdown().await;
    drop(cluster);
    outcome
}

/// One run's settings and handles.
struct Run<'a> {
    args: &'a LiveLatencyArgs,
    /// Ledgers to close and measure.
    ledgers: u32,
    writer_pid: u32,
    primary: &'a str,
    replica: &'a str,
    sim: &'a Simnet,
    first_seq: u32,
}

async fn measure(run: &Run<'_>) -> anyhow::Result<()> {
    let Run {
        args,
        ledgers,
        writer_pid,
        primary,
        replica,
        sim,
        first_seq,
    } = *run;
    let replica_client = connect(replica).await?;
    // Wait for the writer to catch the first ledger.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen(&replica_client).await.is_none_or(|l| l < first_seq) {
        if Instant::now() > deadline {
            bail!("the writer did not ingest the first ledger within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Floor: plain replication latency, same machine, same run.
    let primary_client = connect(primary).await?;
    primary_client
        .batch_execute("CREATE TABLE IF NOT EXISTS latency_probe (n int PRIMARY KEY)")
        .await?;
    let mut floor = Vec::new();
    for n in 0..100 {
        let start = Instant::now();
        primary_client
            .execute("INSERT INTO latency_probe VALUES ($1)", &[&n])
            .await?;
        loop {
            let row = replica_client
                .query_opt("SELECT 1 FROM latency_probe WHERE n = $1", &[&n])
                .await;
            if matches!(row, Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        floor.push(start.elapsed());
    }
    floor.sort();

    // Close ledgers on schedule; watch the replica.
    let interval = Duration::from_millis(args.close_interval_ms);
    let mut closed_at: HashMap<u32, Instant> = HashMap::new();
    let mut visible_at: HashMap<u32, Instant> = HashMap::new();
    let mut next_close = Instant::now();
    let mut last_seen = first_seq;
    let last = first_seq + ledgers;
    let deadline = Instant::now() + interval * (ledgers + 30);
    let cpu_start = crate::bench::catchup::cpu_seconds(writer_pid).unwrap_or(0.0);
    // Lag (closed, not yet on the replica), at worst: over the first four fifths of the
    // closes, and over the last fifth.
    let last_fifth = ledgers - ledgers / 5;
    let (mut max_lag_early, mut max_lag_late) = (0u32, 0u32);
    let mut peak = 0;
    let measured = Instant::now();
    // Past the deadline the writer did not keep up: the figures so far are still printed
    // (latencies of the ledgers it showed, and its lag), then the run fails.
    let mut fell_behind = false;
    while visible_at.len() < ledgers as usize {
        if Instant::now() > deadline {
            fell_behind = true;
            break;
        }
        if Instant::now() >= next_close && (closed_at.len() as u32) < ledgers {
            if let Some(seq) = sim.close_next() {
                closed_at.insert(seq, Instant::now());
            }
            next_close += interval;
        }
        if let Some(now_seen) = seen(&replica_client).await {
            let at = Instant::now();
            for seq in (last_seen + 1)..=now_seen.min(last) {
                visible_at.insert(seq, at);
            }
            last_seen = last_seen.max(now_seen);
        }
        let closed = closed_at.len() as u32;
        let lag = closed.saturating_sub(visible_at.len() as u32);
        if closed <= last_fifth {
            max_lag_early = max_lag_early.max(lag);
        } else if closed < ledgers {
            max_lag_late = max_lag_late.max(lag);
        }
        if let Some(rss) = crate::bench::catchup::peak_rss(writer_pid) {
            peak = peak.max(rss);
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let cpu = crate::bench::catchup::cpu_seconds(writer_pid).unwrap_or(0.0) - cpu_start;
    let measured = measured.elapsed().as_secs_f64();
    let shown = visible_at.len() as u32;
    let mut latencies: Vec<Duration> = closed_at
        .iter()
        .filter_map(|(seq, closed)| {
            visible_at
                .get(seq)
                .map(|seen| seen.saturating_duration_since(*closed))
        })
        .collect();
    latencies.sort();
    let p50 = percentile(&latencies, 50.0);
    let p90 = percentile(&latencies, 90.0);
    let p99 = percentile(&latencies, 99.0);
    let max = latencies.last().copied().unwrap_or_default();
    let size = if args.pubnet_sized {
        "pubnet-sized: 541 transactions, 1.45 MB".to_owned()
    } else {
        format!("{} payments", args.payments_per_ledger)
    };
    println!(
        "live latency over {} ledgers ({size} each), ledger every {} ms, writer poll {} ms",
        latencies.len(),
        args.close_interval_ms,
        args.poll_interval_ms
    );
    println!(
        "replication floor (insert on primary -> visible on replica): p50 {:?}, p99 {:?}",
        percentile(&floor, 50.0),
        percentile(&floor, 99.0)
    );
    println!("RPC close -> rows on replica: p50 {p50:?}, p90 {p90:?}, p99 {p99:?}, max {max:?}");
    println!(
        "writer: CPU {:.1} ms per ledger shown ({:.0}% of one core over the run), peak RSS {:.0} MiB",
        cpu * 1000.0 / f64::from(shown.max(1)),
        cpu * 100.0 / measured,
        peak as f64 / (1 << 20) as f64
    );
    println!(
        "lag (ledgers closed, not yet on the replica): max {max_lag_early} over the first four fifths, \
         max {max_lag_late} over the last fifth ({})",
        if max_lag_late <= max_lag_early.max(2) { "bounded" } else { "growing" }
    );
    println!(
        "ledgers on the replica: {shown} of {ledgers} in {measured:.1}s ({:.2} ledgers/s; closing rate {:.2}/s)",
        f64::from(shown) / measured,
        1.0 / interval.as_secs_f64()
    );
    if fell_behind {
        bail!(
            "the writer did not keep up: {shown} of {ledgers} ledgers on the replica when the run's deadline passed \
             (the latencies above are those of the ledgers it showed)"
        );
    }
    let target = args.target_p99_ms.map_or(TARGET_P99, Duration::from_millis);
    println!(
        "p99 / target {:?} = {:.3} ({})",
        target,
        p99.as_secs_f64() / target.as_secs_f64(),
        if p99 < target { "met" } else { "NOT met" }
    );
    Ok(())
}
