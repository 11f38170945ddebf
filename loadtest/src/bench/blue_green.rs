//! `loadtest bench blue-green`: the whole local stack ([`crate::stack::Stack`]) under a
//! steady open-rate load through the edge while reader traffic moves to green, ingestion
//! is handed over from the blue to the green writer, and reader traffic moves back to
//! blue. The load is a realistic mix: wallets polling their account's history with the
//! ETag they last saw (`If-None-Match`), and explorers reading the newest payments,
//! paging on into older ones, reading ledger and transaction pages and the root
//! document.
//!
//! It prints every response by status class (429s apart), the failures (5xx, connection
//! and body errors: there must be none), the idempotent GETs retried once after a
//! keep-alive connection closed under them (apart), each switch's duration, whether the
//! stored ledgers are one contiguous chain and whether pages through the edge saw
//! ledgers advance after the handover; and the edge's own figures: from each response's
//! `X-Cache-Status` (nginx's `$upstream_cache_status`, set by the shared
//! `deploy/nginx/edge-locations.conf`), the share the edge answered without reaching a
//! reader and the share a reader revalidated with a 304, cross-checked with the
//! readers' own request counters (`/metrics`). The ceiling is the offered rate: the
//! achieved rate is printed as a ratio to it.
//!
//! What must hold: the stack's data lives in a scratch directory deleted at the end,
//! and the command fails (after printing) when any request failed, the chain is not
//! contiguous or the edge never showed a ledger ingested by the new writer.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;
use tokio::time::MissedTickBehavior;

use crate::edge::{Colour, SwitchReport};
use crate::stack::control::{chain_check, hand_over, ChainCheck, WriterHandover};
use crate::stack::{Stack, StackArgs};
use crate::synth::rng::{Rng, Zipf};

/// Arguments of `loadtest bench blue-green`.
#[derive(Debug, clap::Args)]
pub struct BlueGreenBenchArgs {
    /// Seconds of load; the switches happen at a quarter, half and three quarters.
    #[arg(long, default_value_t = 120)]
    pub duration_secs: u64,
    /// Requests started per second, whatever the answers' pace (an open model).
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// The edge's port; the stack's other parts take ports above it (readers +10..+13,
    /// Postgres +40 and +41, Redis +50, writers' health +100 and +101).
    #[arg(long, default_value_t = 18000)]
    pub port_base: u16,
    /// Simulated ledger close interval, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub close_interval_ms: u64,
    /// Synthetic ledgers the simulator serves after the recorded ones.
    #[arg(long, default_value_t = 2000)]
    pub synthetic: u32,
    /// Accounts whose wallets poll (the most active of the newest payments; Zipf-popular).
    #[arg(long, default_value_t = 500)]
    pub wallets: usize,
    /// Ledgers stored before the load starts (the samples come from their payments).
    #[arg(long, default_value_t = 30)]
    pub warmup_ledgers: u32,
    /// Scratch directory for the stack's Postgres and Redis (created, deleted at the
    /// end; default: a temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seed of the request mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What the load asks for, drawn per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// A wallet polls its account's history with its last ETag.
    Wallet,
    /// An explorer reads the newest payments.
    Newest,
    /// An explorer pages on into older payments.
    PagingOn,
    /// A recent ledger's payments.
    Ledger,
    /// A transaction's payments.
    Transaction,
    /// The root document (network, tip).
    Root,
}

impl Kind {
    /// The mix, in percent: wallets 40, newest 15, paging on 10, ledgers 15,
    /// transactions 12, root 8.
    fn draw(rng: &mut Rng) -> Self {
        match rng.below(100) {
            0..40 => Self::Wallet,
            40..55 => Self::Newest,
            55..65 => Self::PagingOn,
            65..80 => Self::Ledger,
            80..92 => Self::Transaction,
            _ => Self::Root,
        }
    }
}

/// What the load draws its requests from, collected through the edge before it starts.
#[derive(Debug)]
struct Samples {
    accounts: Vec<String>,
    transactions: Vec<String>,
    cursors: Vec<String>,
    first_ledger: u32,
}

/// Every response, counted.
#[derive(Debug, Default)]
struct Tally {
    /// By status class (`2xx` ...), or the kind of failure.
    classes: BTreeMap<String, u64>,
    /// 429 Too Many Requests (also in `4xx`).
    too_many: u64,
    /// Requests sent a second time after a closed keep-alive connection.
    retried: u64,
    /// Failures: 5xx, connection and body errors.
    failures: u64,
    /// The first few failures, for the report.
    failure_examples: Vec<String>,
    /// `X-Cache-Status` by value, with `MISS` answered 304 apart (`MISS 304`).
    cache: BTreeMap<String, u64>,
    /// Requests by kind.
    kinds: BTreeMap<String, u64>,
    /// Wallet polls answered 304.
    wallet_not_modified: u64,
    /// Milliseconds per answered request.
    latencies_ms: Vec<f64>,
}

impl Tally {
    fn answered(&self) -> u64 {
        self.classes
            .iter()
            .filter(|(class, _)| class.ends_with("xx"))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The state the request tasks share.
struct Load {
    client: reqwest::Client,
    base: String,
    samples: Samples,
    wallets: Zipf,
    etags: Mutex<HashMap<String, String>>,
    tip: AtomicU32,
    tally: Mutex<Tally>,
}

/// Runs the benchmark.
pub async fn run(args: &BlueGreenBenchArgs) -> anyhow::Result<()> {
    let scratch = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::tempdir_in(dir)?
        }
        None => tempfile::tempdir()?,
    };
    let base = args.port_base;
    let stack_args = StackArgs {
        rpc_url: None,
        network: "pubnet".into(),
        ledgers: shared::testkit::fixtures::path("ledgers/pubnet"),
        synthetic: args.synthetic,
        close_interval_ms: args.close_interval_ms,
        health_port: base + 100,
        edge_port: base,
        reader_port: base + 10,
        control_port: base + 99,
        data_dir: Some(scratch.path().join("stack")),
        fresh: false,
        pg_port: base + 40,
        redis_port: base + 50,
        rate_limits: None,
        prefill_payments: 0,
        prefill_lake: None,
    };
    let stack = Stack::start(&stack_args).await?;
    let outcome = measure(args, &stack).await;
    stack.stop().await?;
    drop(scratch);
    outcome
}

async fn measure(args: &BlueGreenBenchArgs, stack: &Stack) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    // Both colours ready, blue live.
    let edge = stack.control.edge.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut edge = edge.lock().map_err(|_| anyhow::anyhow!("edge poisoned"))?;
        for colour in [Colour::Green, Colour::Blue] {
            for reader in edge.colours().of(colour).to_vec() {
                crate::edge::wait_ready(
                    &reqwest::blocking::Client::new(),
                    reader,
                    Duration::from_secs(120),
                )?;
            }
        }
        edge.switch(Colour::Blue, Duration::from_secs(5), Duration::from_secs(5))?;
        Ok(())
    })
    .await??;
    let warmup = Instant::now();
    loop {
        let root: Value = client
            .get(format!("{}/", stack.edge_url))
            .send()
            .await?
            .json()
            .await?;
        let stored = root["history_latest_ledger"].as_u64().unwrap_or(0)
            - root["history_elder_ledger"].as_u64().unwrap_or(0);
        if stored + 1 >= u64::from(args.warmup_ledgers) {
            break;
        }
        if warmup.elapsed() > Duration::from_secs(600) {
            bail!("only {stored} ledgers stored after 10 minutes of warm-up");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let samples = collect_samples(&client, &stack.edge_url, args.wallets).await?;
    let tip = root_tip(&client, &stack.edge_url).await?;
    println!(
        "samples: {} wallets, {} transactions, {} cursors; tip {tip}",
        samples.accounts.len(),
        samples.transactions.len(),
        samples.cursors.len()
    );
    let load = Arc::new(Load {
        client: client.clone(),
        base: stack.edge_url.clone(),
        wallets: Zipf::new(samples.accounts.len() as u64, 1.0),
        samples,
        etags: Mutex::default(),
        tip: AtomicU32::new(tip),
        tally: Mutex::default(),
    });
    let readers_before = reader_counters(&client, &stack.reader_addresses).await?;

    let duration = Duration::from_secs(args.duration_secs.max(8));
    let started = Instant::now();
    let driver = {
        let load = load.clone();
        let (rate, seed) = (args.rate.max(1), args.seed);
        tokio::spawn(async move { drive(load, rate, seed, duration).await })
    };

    // The operations, at a quarter, half and three quarters of the run.
    let at = |fraction: f64| started + duration.mul_f64(fraction);
    tokio::time::sleep_until(at(0.25).into()).await;
    let to_green = switch_readers(stack, Colour::Green).await?;
    tokio::time::sleep_until(at(0.5).into()).await;
    let tip_before_handover = load.tip.load(Ordering::Relaxed);
    let handover = {
        let mut writers = stack.control.writers.lock().await;
        hand_over(&mut *writers, &stack.control.primary_url).await?
    };
    tokio::time::sleep_until(at(0.75).into()).await;
    let to_blue = switch_readers(stack, Colour::Blue).await?;

    let sent = driver.await??;
    let elapsed = started.elapsed();
    // Let the last requests finish (they time out after 10 s).
    let deadline = Instant::now() + Duration::from_secs(12);
    while Arc::strong_count(&load) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let readers_after = reader_counters(&client, &stack.reader_addresses).await?;
    let tip_after = load.tip.load(Ordering::Relaxed);
    let chain = chain_check(&stack.control.primary_url).await?;
    let tally = std::mem::take(&mut *load.tally.lock().map_err(|_| anyhow::anyhow!("tally"))?);
    report(&Report {
        args,
        sent,
        elapsed,
        tally: &tally,
        switches: [&to_green, &to_blue],
        handover: &handover,
        tips: (tip_before_handover, tip_after),
        chain,
        readers: (
            readers_after.0 - readers_before.0,
            readers_after.1 - readers_before.1,
        ),
    });
    if tally.failures > 0 {
        bail!("{} requests failed", tally.failures);
    }
    if !chain.contiguous() {
        bail!("the stored ledgers are not one chain: {chain:?}");
    }
    if tip_after <= tip_before_handover {
        bail!("no ledger after the handover showed through the edge");
    }
    Ok(())
}

/// Starts `rate` requests a second for `duration`; returns how many it started.
async fn drive(load: Arc<Load>, rate: u32, seed: u64, duration: Duration) -> anyhow::Result<u64> {
    let mut rng = Rng::new(seed);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < duration {
        ticker.tick().await;
        let kind = Kind::draw(&mut rng);
        let pick = rng.next_u64();
        let load = load.clone();
        tokio::spawn(async move { one_request(&load, kind, pick).await });
        sent += 1;
    }
    Ok(sent)
}

/// Sends one request of `kind` (choices from `pick`) and counts its outcome.
async fn one_request(load: &Load, kind: Kind, pick: u64) {
    let samples = &load.samples;
    let mut rng = Rng::new(pick);
    let mut account = None;
    let path = match kind {
        Kind::Wallet => {
            let a = &samples.accounts[load.wallets.sample(&mut rng) as usize];
            account = Some(a.clone());
            format!("/accounts/{a}/payments?order=desc&limit=10")
        }
        Kind::Newest => "/payments?order=desc&limit=20".to_owned(),
        Kind::PagingOn => format!(
            "/payments?order=desc&limit=20&cursor={}",
            samples.cursors[rng.index(samples.cursors.len())]
        ),
        Kind::Ledger => {
            let tip = load.tip.load(Ordering::Relaxed);
            let span = tip.saturating_sub(samples.first_ledger).min(100);
            let back = 1 + rng.below(u64::from(span.max(1))) as u32;
            format!(
                "/ledgers/{}/payments",
                tip.saturating_sub(back).max(samples.first_ledger)
            )
        }
        Kind::Transaction => format!(
            "/transactions/{}/payments",
            samples.transactions[rng.index(samples.transactions.len())]
        ),
        Kind::Root => "/".to_owned(),
    };
    let url = format!("{}{path}", load.base);
    let tag = account
        .as_ref()
        .and_then(|a| load.etags.lock().ok()?.get(a).cloned());
    let send = || {
        let mut request = load.client.get(&url);
        if let Some(tag) = &tag {
            request = request.header(reqwest::header::IF_NONE_MATCH, tag);
        }
        request.send()
    };
    let began = Instant::now();
    let mut retried = false;
    // An idle keep-alive connection that a reloading nginx worker closes can race a
    // request sent on it; clients retry such an idempotent request once, as browsers
    // and Cloudflare do (RFC 9112, 9.3.1). Counted apart.
    let sent = match send().await {
        Err(e) if !e.is_timeout() => {
            retried = true;
            send().await
        }
        other => other,
    };
    let mut tip_seen = None;
    let (class, status, cache, failure) = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let cache = header("x-cache-status").unwrap_or_else(|| "none".into());
            let etag = header("etag");
            match response.bytes().await {
                Ok(body) => {
                    if status == 200 {
                        if let (Some(a), Some(etag)) = (&account, etag) {
                            if let Ok(mut tags) = load.etags.lock() {
                                tags.insert(a.clone(), etag);
                            }
                        }
                        if kind == Kind::Root {
                            tip_seen = serde_json::from_slice::<Value>(&body)
                                .ok()
                                .and_then(|v| v["history_latest_ledger"].as_u64())
                                .map(|t| t as u32);
                        }
                    }
                    let class = format!("{}xx", status / 100);
                    let failure =
                        (status >= 500).then(|| format!("{status} {path} (cache {cache})"));
                    (class, Some(status), Some(cache), failure)
                }
                Err(e) => (
                    "body error".to_owned(),
                    Some(status),
                    Some(cache),
                    Some(format!("body error {path}: {e}")),
                ),
            }
        }
        Err(e) => (
            "connection error".to_owned(),
            None,
            None,
            Some(format!("connection error {path}: {e}")),
        ),
    };
    let elapsed_ms = began.elapsed().as_secs_f64() * 1000.0;
    if let Some(tip) = tip_seen {
        load.tip.fetch_max(tip, Ordering::Relaxed);
    }
    let Ok(mut tally) = load.tally.lock() else {
        return;
    };
    *tally.classes.entry(class).or_default() += 1;
    *tally.kinds.entry(format!("{kind:?}")).or_default() += 1;
    if retried {
        tally.retried += 1;
    }
    if status == Some(429) {
        tally.too_many += 1;
    }
    if kind == Kind::Wallet && status == Some(304) {
        tally.wallet_not_modified += 1;
    }
    if let Some(cache) = cache {
        let key = if cache == "MISS" && status == Some(304) {
            "MISS 304".to_owned()
        } else {
            cache
        };
        *tally.cache.entry(key).or_default() += 1;
    }
    if let Some(failure) = failure {
        tally.failures += 1;
        if tally.failure_examples.len() < 5 {
            tally.failure_examples.push(failure);
        }
    } else {
        tally.latencies_ms.push(elapsed_ms);
    }
}

/// Moves reader traffic to `to` (blocking edge calls).
async fn switch_readers(stack: &Stack, to: Colour) -> anyhow::Result<SwitchReport> {
    let edge = stack.control.edge.clone();
    tokio::task::spawn_blocking(move || {
        let mut edge = edge.lock().map_err(|_| anyhow::anyhow!("edge poisoned"))?;
        edge.switch(to, Duration::from_secs(60), Duration::from_secs(30))
    })
    .await?
}

/// The tip the root document reports through the edge.
async fn root_tip(client: &reqwest::Client, base: &str) -> anyhow::Result<u32> {
    let root: Value = client.get(format!("{base}/")).send().await?.json().await?;
    root["history_latest_ledger"]
        .as_u64()
        .map(|t| t as u32)
        .with_context(|| format!("no tip in {root}"))
}

/// Accounts (the most frequent first), transaction hashes and paging cursors from the
/// newest payments, through the edge.
async fn collect_samples(
    client: &reqwest::Client,
    base: &str,
    wallets: usize,
) -> anyhow::Result<Samples> {
    let root: Value = client.get(format!("{base}/")).send().await?.json().await?;
    let first_ledger = root["history_elder_ledger"]
        .as_u64()
        .context("no oldest ledger")? as u32;
    let mut counts: HashMap<String, u64> = HashMap::new();
    let (mut transactions, mut cursors) = (Vec::new(), Vec::new());
    let mut url = format!("{base}/payments?order=desc&limit=200");
    for _ in 0..10 {
        let page: Value = client.get(&url).send().await?.json().await?;
        let records = page["_embedded"]["records"]
            .as_array()
            .context("no records")?;
        if records.is_empty() {
            break;
        }
        for record in records {
            for field in ["from", "to", "source_account", "account"] {
                if let Some(a) = record[field].as_str() {
                    *counts.entry(a.to_owned()).or_default() += 1;
                }
            }
            if let Some(hash) = record["transaction_hash"].as_str() {
                transactions.push(hash.to_owned());
            }
            if let Some(token) = record["paging_token"].as_str() {
                cursors.push(token.to_owned());
            }
        }
        url = page["_links"]["next"]["href"]
            .as_str()
            .context("no next link")?
            .to_owned();
    }
    let mut accounts: Vec<(String, u64)> = counts.into_iter().collect();
    accounts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let accounts: Vec<String> = accounts.into_iter().take(wallets).map(|(a, _)| a).collect();
    transactions.dedup();
    if accounts.is_empty() || transactions.is_empty() || cursors.is_empty() {
        bail!("no payments to draw the load from");
    }
    Ok(Samples {
        accounts,
        transactions,
        cursors,
        first_ledger,
    })
}

/// Requests the readers answered (their `reader_requests_total`, without health probes
/// and metric scrapes) and the 304s they made, summed over `readers`.
async fn reader_counters(
    client: &reqwest::Client,
    readers: &[SocketAddr],
) -> anyhow::Result<(f64, f64)> {
    let (mut requests, mut not_modified) = (0.0, 0.0);
    for reader in readers {
        let text = client
            .get(format!("http://{reader}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        requests += text
            .lines()
            .filter(|l| l.starts_with("reader_requests_total{"))
            .filter(|l| !l.contains("route=\"/health") && !l.contains("route=\"/metrics"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        not_modified += crate::bench::reader::metric_value(
            &text,
            "reader_cache_total",
            Some("outcome=\"not_modified\""),
        );
    }
    Ok((requests, not_modified))
}

struct Report<'a> {
    args: &'a BlueGreenBenchArgs,
    sent: u64,
    elapsed: Duration,
    tally: &'a Tally,
    switches: [&'a SwitchReport; 2],
    handover: &'a WriterHandover,
    tips: (u32, u32),
    chain: ChainCheck,
    readers: (f64, f64),
}

fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

fn report(r: &Report<'_>) {
    let t = r.tally;
    let answered = t.answered() as f64;
    let offered = f64::from(r.args.rate) * r.args.duration_secs as f64;
    println!();
    println!(
        "blue-green through the edge: {} s at {} requests/s offered",
        r.args.duration_secs, r.args.rate
    );
    println!(
        "  requests started {} ({:.3} of the offered {offered:.0}), answered {}, \
         achieved {:.1}/s",
        r.sent,
        r.sent as f64 / offered,
        t.answered(),
        answered / r.elapsed.as_secs_f64()
    );
    println!("  by kind            {:?}", t.kinds);
    println!("  by status class    {:?}", t.classes);
    println!("  429 (apart)        {}", t.too_many);
    println!(
        "  retried GETs       {} (apart; sent again once after a closed keep-alive connection)",
        t.retried
    );
    println!(
        "  FAILED             {} {:?}",
        t.failures, t.failure_examples
    );
    let mut latencies = t.latencies_ms.clone();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "  latency ms         p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        at(0.5),
        at(0.9),
        at(0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
    for (name, s) in ["readers -> green", "readers -> blue"]
        .iter()
        .zip(r.switches)
    {
        println!(
            "  switch {name:<17} ready wait {} ms, reload {} ms, old workers drained {} ms; total {} ms",
            s.ready_wait.as_millis(),
            s.reload.as_millis(),
            s.drain.as_millis(),
            (s.ready_wait + s.reload + s.drain).as_millis()
        );
    }
    println!(
        "  writer handover    to {}: {} ms from stopping the old writer to the new one active",
        r.handover.active, r.handover.takeover_ms
    );
    println!(
        "  ledgers            stored {}..{} ({} rows, {} broken links): contiguous {}",
        r.chain.first,
        r.chain.last,
        r.chain.count,
        r.chain.broken_links,
        if r.chain.contiguous() { "yes" } else { "NO" }
    );
    println!(
        "  tip through edge   {} at the handover, {} at the end: advanced {}",
        r.tips.0,
        r.tips.1,
        if r.tips.1 > r.tips.0 { "yes" } else { "NO" }
    );
    let cache = |keys: &[&str]| -> f64 {
        keys.iter()
            .map(|k| t.cache.get(*k).copied().unwrap_or(0) as f64)
            .sum()
    };
    let from_edge = cache(&["HIT", "STALE", "UPDATING"]);
    let revalidated = cache(&["REVALIDATED"]);
    let passed_304 = cache(&["MISS 304"]);
    println!("  X-Cache-Status     {:?}", t.cache);
    println!(
        "  edge share         answered by the edge without a reader {:.1}% \
         (HIT {:.1}%, STALE/UPDATING {:.1}%)",
        percent(from_edge, answered),
        percent(cache(&["HIT"]), answered),
        percent(cache(&["STALE", "UPDATING"]), answered)
    );
    println!(
        "  304 share          revalidated with a reader's 304 {:.1}% (stored copies \
         REVALIDATED {:.1}%, clients' own If-None-Match passed through {:.1}%)",
        percent(revalidated + passed_304, answered),
        percent(revalidated, answered),
        percent(passed_304, answered)
    );
    let wallets = t.kinds.get("Wallet").copied().unwrap_or(0) as f64;
    println!(
        "  wallet polls       {:.1}% answered 304",
        percent(t.wallet_not_modified as f64, wallets)
    );
    println!(
        "  readers' counters  {:.0} requests reached a reader ({:.1}% of those answered at \
         the edge; background refreshes included), {:.0} answered 304",
        r.readers.0,
        percent(r.readers.0, answered),
        r.readers.1
    );
}
