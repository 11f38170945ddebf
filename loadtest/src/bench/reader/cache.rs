//! `loadtest bench reader-cache`: requests/s of the response cache's two fast paths
//! against `/constant` on the same reader, in the same run.
//!
//! A Postgres primary with a streaming replica holds a small synthetic chain, backfilled
//! by the release writer; the release reader serves it from the replica. Three loads, at
//! the same concurrency, in interleaved rounds (a, b, c, a, b, c, ...) so drift on a
//! shared machine hits all three alike:
//!
//! * (a) `/constant`: no handler work, the ceiling;
//! * (b) cache hits: `/payments?limit=10` and the busiest account's history, repeated;
//! * (c) 304s: the same two requests with `If-None-Match` of their ETags.
//!
//! * (d) cache hits with the rate limiter on: the same requests as (b), sent to a second
//!   reader of the same build configured with `--rate-limits` (limits high enough that
//!   nothing is refused, so every request costs one Redis decision), with Redis from the
//!   test kit. Its ratio to (b) is the limiter's cost on the hottest path.
//! * (e) the same with the limiter's local batching of hot clients on (a third reader,
//!   `hot_key_sync_ms = 20`): wrk is one very hot client, so most decisions come from
//!   the pod's lease and Redis sees one batch per 20 ms.
//! * (f), (g), (h) cache hits in gzip, brotli and zstd: the requests of (b) with
//!   `Accept-Encoding: gzip` / `br` / `zstd`, answered from the compressed bodies the
//!   cache keeps beside each page.
//!
//! The reader's own counters (`/metrics`) confirm what each load exercised: (b) and (d)
//! must be all hits, (c) all 304s.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use shared::testkit::{PostgresCluster, RedisServer};

use super::wrk::{Load, WrkResult};
use super::{binary, connect, cpu_time, load_chain, median, verdict, Chain, ReaderProcess};
use super::{ReaderCounters, TARGET_RATIO};

/// Arguments of `loadtest bench reader-cache`.
#[derive(Debug, clap::Args)]
pub struct ReaderCacheBenchArgs {
    /// Ledgers of the synthetic chain.
    #[arg(long, default_value_t = 200)]
    pub ledgers: u32,
    /// Payments per ledger.
    #[arg(long, default_value_t = 100)]
    pub payments_per_ledger: u32,
    /// Accounts (zipf popularity).
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u32,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Rounds; each runs (a), (b) and (c) once.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Seconds per load per round.
    #[arg(long, default_value_t = 5)]
    pub round_secs: u64,
    /// Seconds of each load before the rounds (not measured).
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// The `wrk` program.
    #[arg(long, default_value = "wrk")]
    pub wrk: PathBuf,
    /// The writer binary (default: `writer` next to this binary).
    #[arg(long)]
    pub writer_bin: Option<PathBuf>,
    /// The reader binary (default: `reader` next to this binary).
    #[arg(long)]
    pub reader_bin: Option<PathBuf>,
}

/// The codings of (f), (g) and (h), as `Accept-Encoding` and `Content-Encoding` tokens.
const CODINGS: [&str; 3] = ["gzip", "br", "zstd"];

/// Throughput with the rate limiter on and hot-client batching (e), as a share of the
/// same path with it off (issue #6).
pub const LIMITER_TARGET_RATIO: f64 = 0.8;
/// The same with every decision exact in Redis (d) (issue #14).
pub const EXACT_LIMITER_TARGET_RATIO: f64 = 0.7;

/// Rate limits for (d): one client (wrk) far below its limits, no byte quota (so no
/// write after the response), credits counted.
const LIMITS: &str = r#"
prefix = "bench:rl:"
expected_pods = 1
redis_budget_ms = 50
[tiers.anonymous]
requests = 1000000000
burst = 1000000000
window_seconds = 3600
credits = 1000000000000
"#;

struct Variant {
    name: &'static str,
    /// Which reader serves it: 0 without, 1 with the rate limiter.
    reader: usize,
    load: Load,
    runs: Vec<WrkResult>,
    counters: ReaderCounters,
    /// Reader CPU seconds per round.
    reader_cpu: Vec<f64>,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: &ReaderCacheBenchArgs) -> anyhow::Result<()> {
    let writer_bin = binary(&args.writer_bin, "writer")?;
    let reader_bin = binary(&args.reader_bin, "reader")?;
    let chain = Chain {
        first_seq: 2,
        ledgers: args.ledgers.max(1),
        payments_per_ledger: args.payments_per_ledger,
        accounts: args.accounts,
        seed: 11,
    };
    let temp = tempfile::tempdir()?;
    let lake = temp.path().join("lake");
    chain.ensure_lake(&lake).await?;
    let cluster = tokio::task::spawn_blocking(PostgresCluster::start_with_replica).await??;
    let primary = cluster.primary_url();
    let replica = cluster.replica_url().context("replica")?;
    load_chain(&writer_bin, &primary, &lake, &chain, 2).await?;
    let db = connect(&primary).await?;
    let payments: i64 = db
        .query_one("SELECT count(*) FROM payments", &[])
        .await?
        .get(0);
    let busiest: String = db
        .query_one(
            "SELECT a.address FROM account_payments x JOIN accounts a ON a.id = x.account_id \
             WHERE a.address LIKE 'G%' GROUP BY a.address ORDER BY count(*) DESC LIMIT 1",
            &[],
        )
        .await?
        .get(0);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster
            .wait_for_replica_replay(Duration::from_secs(120))
            .map(|()| cluster)
    })
    .await??;

    let redis = tokio::task::spawn_blocking(RedisServer::start).await??;
    let limits_file = temp.path().join("limits.toml");
    std::fs::write(&limits_file, LIMITS)?;
    let reader = ReaderProcess::start(
        &reader_bin,
        &[
            "--replica-url".into(),
            replica.clone(),
            "--primary-url".into(),
            primary.clone(),
        ],
    )
    .await?;
    let limited = ReaderProcess::start(
        &reader_bin,
        &[
            "--replica-url".into(),
            replica,
            "--primary-url".into(),
            primary,
            "--redis-url".into(),
            redis.url(),
            "--rate-limits".into(),
            limits_file.display().to_string(),
        ],
    )
    .await?;
    for path in [
        "/payments?limit=10".to_owned(),
        format!("/accounts/{busiest}/payments"),
    ] {
        let response = super::get(limited.address, &path, &[]).await?;
        if response.status != 200 || response.header("ratelimit").is_none() {
            bail!(
                "GET {path} from the limited reader: status {}, no RateLimit header",
                response.status
            );
        }
    }
    let batched_file = temp.path().join("limits-batched.toml");
    std::fs::write(
        &batched_file,
        format!("hot_key_sync_ms = 20\nhot_key_threshold = 100\n{LIMITS}"),
    )?;
    let batched = ReaderProcess::start(
        &reader_bin,
        &[
            "--replica-url".into(),
            cluster.replica_url().context("replica")?,
            "--primary-url".into(),
            cluster.primary_url(),
            "--redis-url".into(),
            redis.url(),
            "--rate-limits".into(),
            batched_file.display().to_string(),
        ],
    )
    .await?;
    let readers = [&reader, &limited, &batched];
    let paths = [
        "/payments?limit=10".to_owned(),
        format!("/accounts/{busiest}/payments"),
    ];
    let mut conditional = Vec::new();
    for path in &paths {
        let response = super::get(reader.address, path, &[]).await?;
        if response.status != 200 {
            bail!("GET {path}: status {}", response.status);
        }
        let tag = response
            .header("etag")
            .with_context(|| format!("GET {path}: no ETag"))?
            .to_owned();
        let again = super::get(reader.address, path, &[("If-None-Match", &tag)]).await?;
        if again.status != 304 {
            bail!(
                "GET {path} with If-None-Match {tag}: status {}",
                again.status
            );
        }
        conditional.push((path.clone(), Some(tag)));
    }
    let plain: Vec<(String, Option<String>)> = paths.iter().map(|p| (p.clone(), None)).collect();
    for coding in CODINGS {
        for path in &paths {
            let response = super::get(reader.address, path, &[("Accept-Encoding", coding)]).await?;
            if response.status != 200 || response.header("content-encoding") != Some(coding) {
                bail!(
                    "GET {path} with Accept-Encoding {coding}: status {}, Content-Encoding {:?}",
                    response.status,
                    response.header("content-encoding")
                );
            }
        }
    }
    let dir = temp.path();
    let mut variants = vec![
        Variant::new(
            "(a) /constant",
            Load::new(dir, "constant", &[("/constant".into(), None)], 0.0, 1)?,
        ),
        Variant::new("(b) cache hits", Load::new(dir, "hits", &plain, 0.0, 1)?),
        Variant::new(
            "(c) 304 Not Modified",
            Load::new(dir, "not_modified", &conditional, 0.0, 1)?,
        ),
        Variant::new(
            "(d) cache hits, rate limiter on",
            Load::new(dir, "limited", &plain, 0.0, 1)?,
        )
        .on(1),
        Variant::new(
            "(e) cache hits, rate limiter on, hot-client batching",
            Load::new(dir, "batched", &plain, 0.0, 1)?,
        )
        .on(2),
    ];
    let names = [
        "(f) cache hits, gzip",
        "(g) cache hits, br",
        "(h) cache hits, zstd",
    ];
    for (name, coding) in names.into_iter().zip(CODINGS) {
        variants.push(Variant::new(
            name,
            Load::with_headers(
                dir,
                &format!("hits_{coding}"),
                &plain,
                0.0,
                1,
                &[("Accept-Encoding", coding)],
            )?,
        ));
    }

    println!(
        "reader cache: {payments} payments ({} ledgers of {}, {} accounts) on a primary + streaming replica; \
         release reader serving the replica; wrk, 1 thread, {} keep-alive connections",
        chain.ledgers, chain.payments_per_ledger, chain.accounts, args.connections
    );
    println!("(b)/(c) requests: {} and {}", paths[0], paths[1]);
    let warmup = Duration::from_secs(args.warmup_secs);
    if !warmup.is_zero() {
        for v in &variants {
            v.load
                .run(
                    &args.wrk,
                    readers[v.reader].address,
                    args.connections,
                    warmup,
                )
                .await?;
        }
    }
    let round = Duration::from_secs(args.round_secs.max(1));
    for n in 1..=args.rounds.max(1) {
        let mut line = format!("round {n}:");
        for v in &mut variants {
            let target = readers[v.reader];
            let before = target.counters().await?;
            let cpu_before = cpu_time(target.pid());
            let result = v
                .load
                .run(&args.wrk, target.address, args.connections, round)
                .await?;
            let cpu_after = cpu_time(target.pid());
            let after = target.counters().await?;
            if result.errors > 0 {
                bail!(
                    "{}: {} errors in {} requests",
                    v.name,
                    result.errors,
                    result.requests
                );
            }
            if let (Some(b), Some(a)) = (cpu_before, cpu_after) {
                v.reader_cpu.push((a - b).as_secs_f64());
            }
            let counted = after.since(before);
            v.counters = ReaderCounters {
                hits: v.counters.hits + counted.hits,
                misses: v.counters.misses + counted.misses,
                not_modified: v.counters.not_modified + counted.not_modified,
                db_queries: v.counters.db_queries + counted.db_queries,
            };
            line.push_str(&format!("  {} {:.0}/s", v.name, result.rate()));
            v.runs.push(result);
        }
        println!("{line}");
    }

    let rate = |v: &Variant| median(&v.runs.iter().map(WrkResult::rate).collect::<Vec<_>>());
    // Reader CPU per request, in microseconds, per round.
    let cost = |v: &Variant| {
        let per_round: Vec<f64> = v
            .reader_cpu
            .iter()
            .zip(&v.runs)
            .map(|(cpu, r)| cpu * 1e6 / r.requests.max(1) as f64)
            .collect();
        (!per_round.is_empty()).then(|| median(&per_round))
    };
    let ceiling = rate(&variants[0]);
    let ceiling_cost = cost(&variants[0]);
    for v in &variants {
        let runs = &v.runs;
        let p50 = median(
            &runs
                .iter()
                .map(|r| r.p50.as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        );
        let p99 = median(
            &runs
                .iter()
                .map(|r| r.p99.as_secs_f64() * 1e3)
                .collect::<Vec<_>>(),
        );
        let reader_cores = median(
            &v.reader_cpu
                .iter()
                .zip(runs)
                .map(|(cpu, r)| cpu / r.duration.as_secs_f64())
                .collect::<Vec<_>>(),
        );
        let client: Vec<f64> = runs
            .iter()
            .filter_map(|r| Some(r.client_cpu?.as_secs_f64() / r.duration.as_secs_f64()))
            .collect();
        let client = if client.is_empty() {
            String::new()
        } else {
            format!(", wrk {:.2} cores", median(&client))
        };
        println!(
            "{}: median {:.0} requests/s (ratio to /constant {:.3}), latency p50 {p50:.2} ms, p99 {p99:.2} ms",
            v.name,
            rate(v),
            rate(v) / ceiling
        );
        if let Some(us) = cost(v) {
            println!(
                "  reader CPU {us:.1} us/request (/constant's cost / this = {:.3}); CPU used: reader {reader_cores:.2} cores{client}",
                ceiling_cost.unwrap_or(us) / us
            );
        }
        let responses = v.counters.responses();
        if responses > 0.0 {
            println!(
                "  reader counters: {:.1}% cache hits, {:.1}% 304, {:.1}% rendered, {:.3} database queries/request",
                100.0 * v.counters.hits / responses,
                100.0 * v.counters.not_modified / responses,
                100.0 * v.counters.misses / responses,
                v.counters.db_queries / responses
            );
        }
    }
    let limiter_ratio = rate(&variants[3]) / rate(&variants[1]);
    println!(
        "(d) / (b) requests/s, rate limiter on (every decision in Redis) / off: {limiter_ratio:.3} (target >= {EXACT_LIMITER_TARGET_RATIO}: {})",
        verdict(limiter_ratio >= EXACT_LIMITER_TARGET_RATIO)
    );
    let batched_ratio = rate(&variants[4]) / rate(&variants[1]);
    println!(
        "(e) / (b) requests/s, rate limiter on with hot-client batching / off: {batched_ratio:.3} (target >= {LIMITER_TARGET_RATIO}: {})",
        verdict(batched_ratio >= LIMITER_TARGET_RATIO)
    );
    for v in variants[1..3].iter().chain(&variants[5..]) {
        let ratio = rate(v) / ceiling;
        println!(
            "{} / (a) requests/s: {ratio:.3} (target >= {TARGET_RATIO}: {})",
            v.name,
            verdict(ratio >= TARGET_RATIO)
        );
    }
    let expected = [
        (1, variants[1].counters.hits, "cache hits"),
        (2, variants[2].counters.not_modified, "304s"),
        (3, variants[3].counters.hits, "cache hits"),
        (4, variants[4].counters.hits, "cache hits"),
        (5, variants[5].counters.hits, "cache hits"),
        (6, variants[6].counters.hits, "cache hits"),
        (7, variants[7].counters.hits, "cache hits"),
    ];
    for (i, matched, what) in expected {
        let responses = variants[i].counters.responses();
        if responses > 0.0 && matched / responses < 0.99 {
            println!(
                "warning: {} answered only {:.1}% of its requests as {what}",
                variants[i].name,
                100.0 * matched / responses
            );
        }
    }
    drop(batched);
    drop(limited);
    drop(reader);
    drop(redis);
    drop(cluster);
    Ok(())
}

impl Variant {
    fn new(name: &'static str, load: Load) -> Self {
        Self {
            name,
            reader: 0,
            load,
            runs: Vec::new(),
            counters: ReaderCounters::default(),
            reader_cpu: Vec::new(),
        }
    }

    fn on(mut self, reader: usize) -> Self {
        self.reader = reader;
        self
    }
}
