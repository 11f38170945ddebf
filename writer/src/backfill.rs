//! Backfill: ingest a closed range of history in parallel, from a local data lake
//! (SEP-54 layout) or from Stellar RPC within its retention window.
//!
//! The range is cut into chunks; chunks whose ledgers are all stored already (by an
//! earlier backfill, or by live ingestion) are skipped, so a killed backfill resumes
//! where it stopped. Each of `workers` tasks takes the next chunk, reads and extracts it
//! off the async threads, and commits it in one transaction (see
//! `store::commit_backfill_chunk`), which also records the range as completed. It can run
//! beside the live writer: ledgers either one stores are skipped by the other.
//!
//! A ledger refused by verification or extraction counts in
//! `writer_ledgers_refused_total{reason}` on both paths, as on the live path: the RPC
//! path through `source`, the data-lake path here.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use shared::datalake::DataLake;
use shared::{Extractor, LedgerPayments};
use tokio_util::sync::CancellationToken;

use crate::dictionary::Dictionaries;
use crate::source::{FetchError, Fetched, RetryPolicy, RpcSource};
use crate::store::{self, StoreError};

/// Where history comes from.
#[derive(Clone)]
pub enum HistorySource {
    /// Stellar RPC, within its retention window.
    Rpc(Arc<RpcSource>),
    /// A local data lake.
    DataLake(DataLake),
}

impl std::fmt::Debug for HistorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rpc(rpc) => write!(f, "Rpc({rpc:?})"),
            Self::DataLake(lake) => write!(f, "DataLake({:?})", lake.config()),
        }
    }
}

/// Backfill settings.
#[derive(Clone, Debug)]
pub struct BackfillConfig {
    /// First ledger (inclusive).
    pub from: u32,
    /// Last ledger (inclusive).
    pub to: u32,
    /// Parallel workers.
    pub workers: usize,
    /// Ledgers per chunk (one transaction each).
    pub chunk_ledgers: u32,
    /// The network passphrase ingested.
    pub network_passphrase: String,
    /// Retries.
    pub retry: RetryPolicy,
    /// Attempts at a chunk that fails with a database error that may be deterministic
    /// (a constraint violation, disk full, an encoding error) before the backfill stops.
    pub max_commit_attempts: u32,
}

/// What a backfill did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackfillReport {
    /// Chunks committed by this run.
    pub chunks_written: usize,
    /// Chunks found complete and skipped.
    pub chunks_skipped: usize,
    /// Ledgers written.
    pub ledgers_written: u64,
    /// Payments written.
    pub payments_written: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Why a backfill stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// The range is empty or inverted.
    #[error("invalid range {from}-{to}")]
    Range {
        /// First ledger.
        from: u32,
        /// Last ledger.
        to: u32,
    },
    /// Reading or extracting history failed for good.
    #[error("ledgers {start}-{end}: {reason}")]
    Source {
        /// Chunk start.
        start: u32,
        /// Chunk end.
        end: u32,
        /// Why.
        reason: String,
    },
    /// The database refused a chunk.
    #[error("ledgers {start}-{end}: {error}")]
    Store {
        /// Chunk start.
        start: u32,
        /// Chunk end.
        end: u32,
        /// The store's complaint.
        error: StoreError,
    },
    /// A chunk kept failing with a database error that does not pass by itself.
    #[error(
        "commit gave up: ledgers {start}-{end} failed {attempts} times with {condition}; last error: {error}"
    )]
    CommitGaveUp {
        /// Chunk start.
        start: u32,
        /// Chunk end.
        end: u32,
        /// Attempts made.
        attempts: u32,
        /// The Postgres condition (`disk_full (53100)`, ...).
        condition: String,
        /// The last failure.
        error: StoreError,
    },
    /// The database could not be reached.
    #[error("database: {0}")]
    Database(String),
    /// Stopped by a signal before the end.
    #[error("interrupted; completed chunks are kept and a rerun resumes")]
    Interrupted,
}

/// Chunks of `[from, to]`, aligned to multiples of `size` (so that reruns with the same
/// size cut the same chunks).
pub fn plan_chunks(from: u32, to: u32, size: u32) -> Vec<(u32, u32)> {
    let size = size.max(1);
    let mut out = Vec::new();
    let mut start = from;
    while start <= to {
        let aligned_end = (start / size).saturating_mul(size).saturating_add(size - 1);
        let end = aligned_end.min(to);
        out.push((start, end));
        match end.checked_add(1) {
            Some(next) => start = next,
            None => break,
        }
    }
    out
}

struct Progress {
    total: u64,
    done: AtomicU64,
    payments: AtomicU64,
    started: Instant,
}

impl Progress {
    fn line(&self) -> String {
        let done = self.done.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / elapsed;
        let payments = self.payments.load(Ordering::Relaxed) as f64 / elapsed;
        let eta = if rate > 0.0 {
            (self.total.saturating_sub(done)) as f64 / rate
        } else {
            f64::INFINITY
        };
        format!(
            "backfill: {done}/{} ledgers ({:.1}%), {rate:.0} ledgers/s, {payments:.0} payments/s, ETA {}",
            self.total,
            100.0 * done as f64 / self.total.max(1) as f64,
            if eta.is_finite() { format!("{eta:.0}s") } else { "unknown".into() },
        )
    }
}

/// Runs a backfill to completion, or until `shutdown` (then `Interrupted`).
pub async fn run(
    pool: Pool,
    source: HistorySource,
    extractor: Extractor,
    config: BackfillConfig,
    show_progress: bool,
    shutdown: CancellationToken,
) -> Result<BackfillReport, BackfillError> {
    if config.to < config.from {
        return Err(BackfillError::Range {
            from: config.from,
            to: config.to,
        });
    }
    let started = Instant::now();
    let chunks = plan_chunks(config.from, config.to, config.chunk_ledgers);
    // Stored ledgers per chunk: chunks are aligned to multiples of the size, so the
    // bucket of a chunk is `start / size`.
    let size = config.chunk_ledgers.max(1);
    let client = pool
        .get()
        .await
        .map_err(|e| BackfillError::Database(e.to_string()))?;
    let stored: std::collections::HashMap<i64, i64> = client
        .query(
            "SELECT sequence::bigint / $3, count(*) FROM ledgers WHERE sequence BETWEEN $1 AND $2 GROUP BY 1",
            &[&(config.from as i32), &(config.to as i32), &i64::from(size)],
        )
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .map_err(|e| BackfillError::Database(e.to_string()))?;
    drop(client);
    let mut report = BackfillReport::default();
    let mut queue = VecDeque::new();
    for (start, end) in chunks {
        let held = stored.get(&i64::from(start / size)).copied().unwrap_or(0);
        if held >= i64::from(end - start + 1) {
            report.chunks_skipped += 1;
        } else {
            queue.push_back((start, end));
        }
    }
    let total: u64 = queue.iter().map(|(s, e)| u64::from(e - s + 1)).sum();
    let progress = Arc::new(Progress {
        total,
        done: AtomicU64::new(0),
        payments: AtomicU64::new(0),
        started,
    });
    tracing::info!(
        from = config.from,
        to = config.to,
        chunks = queue.len(),
        skipped = report.chunks_skipped,
        workers = config.workers,
        "backfill starts"
    );
    let queue = Arc::new(Mutex::new(queue));
    let stop = shutdown.child_token();
    let reporter = tokio::spawn(report_progress(
        progress.clone(),
        show_progress,
        stop.clone(),
    ));
    // One id cache for every worker: they write into the same database.
    let dictionaries = Dictionaries::default();
    let mut tasks = Vec::new();
    for _ in 0..config.workers.max(1) {
        tasks.push(tokio::spawn(worker(
            pool.clone(),
            dictionaries.clone(),
            source.clone(),
            extractor.clone(),
            config.clone(),
            queue.clone(),
            progress.clone(),
            stop.clone(),
        )));
    }
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(written)) => report.chunks_written += written,
            Ok(Err(e)) => {
                stop.cancel();
                failure.get_or_insert(e);
            }
            Err(e) => {
                stop.cancel();
                failure.get_or_insert(BackfillError::Database(format!("worker failed: {e}")));
            }
        }
    }
    stop.cancel();
    let _ = reporter.await;
    report.ledgers_written = progress.done.load(Ordering::Relaxed);
    report.payments_written = progress.payments.load(Ordering::Relaxed);
    report.elapsed = started.elapsed();
    if let Some(e) = failure {
        return Err(e);
    }
    if shutdown.is_cancelled() {
        return Err(BackfillError::Interrupted);
    }
    Ok(report)
}

async fn report_progress(progress: Arc<Progress>, show: bool, stop: CancellationToken) {
    if !show {
        return;
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(progress.total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} ledgers {per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let every = if bar.is_some() {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    };
    loop {
        let stopped = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(every) => false,
        };
        match &bar {
            Some(bar) => {
                bar.set_position(progress.done.load(Ordering::Relaxed));
                let payments = progress.payments.load(Ordering::Relaxed) as f64
                    / progress.started.elapsed().as_secs_f64().max(0.001);
                bar.set_message(format!("{payments:.0} payments/s"));
            }
            None => eprintln!("{}", progress.line()),
        }
        if stopped {
            if let Some(bar) = &bar {
                bar.finish();
            }
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    pool: Pool,
    dictionaries: Dictionaries,
    source: HistorySource,
    mut extractor: Extractor,
    config: BackfillConfig,
    queue: Arc<Mutex<VecDeque<(u32, u32)>>>,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> Result<usize, BackfillError> {
    let mut written = 0;
    loop {
        if stop.is_cancelled() {
            return Ok(written);
        }
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        let Some((start, end)) = next else {
            return Ok(written);
        };
        let (ledgers, returned) =
            load_chunk(&source, extractor, start, end, &config.retry, &stop).await;
        extractor = returned;
        let ledgers = match ledgers {
            Ok(ledgers) => ledgers,
            Err(_) if stop.is_cancelled() => return Ok(written),
            Err(reason) => return Err(BackfillError::Source { start, end, reason }),
        };
        let (ledgers_written, payments) =
            commit_chunk(&pool, &dictionaries, &config, start, end, &ledgers, &stop).await?;
        progress
            .done
            .fetch_add(u64::from(end - start + 1), Ordering::Relaxed);
        progress
            .payments
            .fetch_add(payments as u64, Ordering::Relaxed);
        metrics::counter!("writer_backfill_ledgers_total").increment(ledgers_written as u64);
        written += 1;
    }
}

/// Commits one chunk: transient database failures are retried for as long as it takes,
/// failures that may be deterministic a bounded number of times, anything else stops
/// the backfill. Every backoff ends early on `stop`.
async fn commit_chunk(
    pool: &Pool,
    dictionaries: &Dictionaries,
    config: &BackfillConfig,
    start: u32,
    end: u32,
    ledgers: &[LedgerPayments],
    stop: &CancellationToken,
) -> Result<(usize, usize), BackfillError> {
    let mut attempt = 0;
    let mut failures = 0;
    loop {
        let result = match pool.get().await {
            Ok(mut client) => {
                store::commit_backfill_chunk(
                    &mut client,
                    dictionaries,
                    &config.network_passphrase,
                    start,
                    end,
                    ledgers,
                )
                .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "database pool; retrying");
                if sleep_or_stop(config.retry.backoff(attempt), stop).await {
                    return Err(BackfillError::Interrupted);
                }
                attempt += 1;
                continue;
            }
        };
        match result {
            Ok(counts) => return Ok(counts),
            Err(error) if error.is_transient() || error.is_database_failure() => {
                if !error.is_transient() {
                    failures += 1;
                    if failures >= config.max_commit_attempts.max(1) {
                        return Err(BackfillError::CommitGaveUp {
                            start,
                            end,
                            attempts: failures,
                            condition: error
                                .condition()
                                .unwrap_or_else(|| "a database error".into()),
                            error,
                        });
                    }
                }
                tracing::warn!(%error, start, end, "chunk commit failed; retrying");
                if sleep_or_stop(config.retry.backoff(attempt), stop).await {
                    return Err(BackfillError::Interrupted);
                }
                attempt += 1;
            }
            Err(error) => return Err(BackfillError::Store { start, end, error }),
        }
    }
}

async fn sleep_or_stop(pause: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(pause) => false,
    }
}

/// Reads and extracts `[start, end]`; gives the extractor back for reuse.
async fn load_chunk(
    source: &HistorySource,
    extractor: Extractor,
    start: u32,
    end: u32,
    retry: &RetryPolicy,
    stop: &CancellationToken,
) -> (Result<Vec<LedgerPayments>, String>, Extractor) {
    match source {
        HistorySource::DataLake(lake) => {
            let lake = lake.clone();
            let fallback = extractor.clone();
            match tokio::task::spawn_blocking(move || {
                let mut extractor = extractor;
                let result = read_from_lake(&lake, &mut extractor, start, end);
                (result, extractor)
            })
            .await
            {
                Ok(out) => out,
                Err(e) => (Err(format!("extraction task failed: {e}")), fallback),
            }
        }
        HistorySource::Rpc(rpc) => (read_from_rpc(rpc, start, end, retry, stop).await, extractor),
    }
}

fn read_from_lake(
    lake: &DataLake,
    extractor: &mut Extractor,
    start: u32,
    end: u32,
) -> Result<Vec<LedgerPayments>, String> {
    let schema = lake.schema();
    let mut out = Vec::with_capacity((end - start + 1) as usize);
    let mut batch_start = schema.batch_start(start);
    while batch_start <= end {
        let xdr = lake
            .read_batch_xdr(batch_start.max(start))
            .map_err(|e| e.to_string())?;
        let ledgers = extract_lake_batch(extractor, &xdr)?;
        out.extend(
            ledgers
                .into_iter()
                .filter(|l| (start..=end).contains(&l.ledger.sequence)),
        );
        match schema.batch_end(batch_start).checked_add(1) {
            Some(next) => batch_start = next,
            None => break,
        }
    }
    Ok(out)
}

/// Extracts one data-lake batch; a refused ledger is counted, then named in the error.
fn extract_lake_batch(
    extractor: &mut Extractor,
    xdr: &[u8],
) -> Result<Vec<LedgerPayments>, String> {
    extractor.extract_batch_xdr(xdr).map_err(|e| {
        metrics::counter!("writer_ledgers_refused_total", "reason" => e.label()).increment(1);
        e.to_string()
    })
}

async fn read_from_rpc(
    rpc: &RpcSource,
    start: u32,
    end: u32,
    retry: &RetryPolicy,
    stop: &CancellationToken,
) -> Result<Vec<LedgerPayments>, String> {
    let mut out: Vec<LedgerPayments> = Vec::with_capacity((end - start + 1) as usize);
    let mut next = start;
    let mut attempt = 0u32;
    let mut bad: Option<(u32, u32)> = None;
    while next <= end {
        if stop.is_cancelled() {
            return Err("interrupted".into());
        }
        match rpc.fetch(next).await {
            Ok(Fetched::Ledgers { ledgers, .. }) => {
                attempt = 0;
                for ledger in ledgers {
                    if ledger.ledger.sequence > end {
                        break;
                    }
                    next = ledger.ledger.sequence + 1;
                    out.push(ledger);
                }
            }
            Ok(Fetched::AtTip { rpc_latest }) => {
                return Err(format!(
                    "ledger {next} is not closed yet (the RPC is at {rpc_latest})"
                ));
            }
            Ok(Fetched::BeforeRetention { rpc_oldest }) => {
                return Err(format!(
                    "ledger {next} is older than the RPC keeps (oldest {rpc_oldest}): backfill it from a data lake \
                     with --source DATALAKE_DIR"
                ));
            }
            Err(FetchError::BadLedger { ledger, reason }) => {
                let attempts = match bad {
                    Some((l, n)) if l == ledger => n + 1,
                    _ => 1,
                };
                bad = Some((ledger, attempts));
                if attempts >= retry.max_bad_attempts {
                    return Err(format!(
                        "ledger {ledger} still unusable after {attempts} fetches: {reason}"
                    ));
                }
                if sleep_or_stop(retry.backoff(attempts), stop).await {
                    return Err("interrupted".into());
                }
            }
            Err(e @ FetchError::WrongNetwork { .. }) => return Err(e.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "RPC request failed; retrying");
                attempt += 1;
                if sleep_or_stop(retry.backoff(attempt), stop).await {
                    return Err("interrupted".into());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_aligned_and_cover_the_range() {
        assert_eq!(plan_chunks(10, 25, 8), vec![(10, 15), (16, 23), (24, 25)]);
        assert_eq!(plan_chunks(16, 16, 8), vec![(16, 16)]);
        assert_eq!(plan_chunks(0, 7, 8), vec![(0, 7)]);
        assert!(plan_chunks(5, 4, 8).is_empty());
        assert_eq!(plan_chunks(u32::MAX - 1, u32::MAX, 8).len(), 1);
    }

    #[test]
    fn a_refused_lake_batch_is_counted_by_reason() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut extractor = Extractor::new(shared::Network::pubnet());
        let outcome = metrics::with_local_recorder(&recorder, || {
            extract_lake_batch(&mut extractor, b"not a ledger batch")
        });
        let error = outcome.expect_err("refused");
        assert!(error.contains("malformed"), "{error}");
        let rendered = handle.render();
        assert!(
            rendered.contains("writer_ledgers_refused_total{reason=\"decode\"} 1"),
            "{rendered}"
        );
    }
}
