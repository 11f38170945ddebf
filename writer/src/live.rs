//! Live ingestion: follow the RPC from the cursor to the tip and stay there.
//!
//! A fetcher task pulls `getLedgers` pages and extracts them while earlier pages are
//! being written, so network, decoding and the database overlap. What it holds ahead of
//! the database is bounded in bytes, not pages: each page takes permits for its size on
//! the wire from a semaphore of `prefetch_bytes` before it is fetched, and gives them back
//! once committed (a page larger than the whole budget still goes, alone). The committer
//! writes each page as one transaction on the writer-lock session (so a writer that lost
//! the lock cannot commit); when it finds several pages already waiting (the database is
//! behind the tip, as when ledgers close faster than one commit and its fsync take), it
//! commits them together, in order, as one transaction (group commit: one fsync and one
//! replication round for all of them; pages are added while it holds fewer than
//! [`GROUP_MAX_LEDGERS`] ledgers). It retries transient database failures with backoff
//! and deterministic ones a bounded number of times, checks that session's liveness while
//! idle, and announces the new tip. Shutdown is checked between batches and during every
//! backoff: a batch in flight commits or rolls back.

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use shared::LedgerPayments;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::announce::{Tip, TipAnnouncer};
use crate::dictionary::Dictionaries;
use crate::lock::WriterLock;
use crate::source::{FetchError, Fetched, RetryPolicy, RpcSource};
use crate::status::{RetentionGap, Status};
use crate::store::{self, StoreError};

/// Where a first run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartPolicy {
    /// The RPC's newest ledger.
    Latest,
    /// The RPC's oldest ledger.
    Oldest,
    /// A given ledger.
    Ledger(u32),
}

impl std::str::FromStr for StartPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latest" => Ok(Self::Latest),
            "oldest" => Ok(Self::Oldest),
            n => n
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 1)
                .map(Self::Ledger)
                .ok_or_else(|| format!("`{s}` is not latest, oldest or a ledger sequence above 1")),
        }
    }
}

/// Live ingestion settings.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// The network passphrase ingested.
    pub network_passphrase: String,
    /// Where a first run starts.
    pub start: StartPolicy,
    /// Pause between polls at the tip.
    pub poll_interval: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// Pause between checks while the RPC's retention is past the cursor.
    pub retention_recheck: Duration,
    /// How often the lock session's liveness is checked while no batch is committing.
    pub lock_check: Duration,
    /// Attempts at a batch that fails with a database error that may be deterministic
    /// (a constraint violation, disk full, an encoding error) before ingestion stops.
    pub max_commit_attempts: u32,
    /// Fetched pages held ahead of the database, in bytes on the wire.
    pub prefetch_bytes: usize,
}

/// Why live ingestion stopped.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// A ledger stayed unusable, the chain broke, another writer wrote, or the networks
    /// differ: an operator must look.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The source failed for good.
    #[error(transparent)]
    Source(#[from] FetchError),
    /// The writer lock's session ended: stop writing and compete for it again.
    #[error("lost the writer lock (its database session ended)")]
    LockLost,
    /// The database could not be read at start.
    #[error("database: {0}")]
    Database(String),
    /// A batch kept failing with a database error that does not pass by itself.
    #[error(
        "commit gave up: ledgers {first}-{last} failed {attempts} times with {condition}; last error: {error}"
    )]
    CommitGaveUp {
        /// First ledger of the batch.
        first: u32,
        /// Last ledger of the batch.
        last: u32,
        /// Attempts made.
        attempts: u32,
        /// The Postgres condition (`disk_full (53100)`, ...).
        condition: String,
        /// The last failure.
        error: StoreError,
    },
}

/// Most ledgers the committer puts in one transaction when pages are waiting.
pub const GROUP_MAX_LEDGERS: usize = 200;

enum FromFetcher {
    Batch {
        ledgers: Vec<LedgerPayments>,
        /// The page's share of the prefetch budget, given back once it is committed.
        permit: OwnedSemaphorePermit,
    },
    Fatal(FetchError),
}

/// Runs until `shutdown` (Ok) or an error that needs an operator (Err).
pub async fn run(
    pool: Pool,
    source: RpcSource,
    config: LiveConfig,
    status: Status,
    announcer: TipAnnouncer,
    lock: &mut WriterLock,
    shutdown: CancellationToken,
) -> Result<(), LiveError> {
    let source = std::sync::Arc::new(source);
    // The RPC must serve our network before anything is read from it.
    let mut attempt = 0;
    loop {
        match source.check_network().await {
            Ok(_) => break,
            Err(e @ FetchError::WrongNetwork { .. }) => return Err(e.into()),
            Err(e) => {
                status.set_error(Some(e.to_string()));
                tracing::warn!(error = %e, "RPC not reachable yet");
                if sleep_or_shutdown(config.retry.backoff(attempt), &shutdown).await {
                    return Ok(());
                }
                attempt += 1;
            }
        }
    }

    let client = pool
        .get()
        .await
        .map_err(|e| LiveError::Database(e.to_string()))?;
    let cursor = store::read_cursor(&**client)
        .await
        .map_err(|e| LiveError::Database(e.to_string()))?;
    drop(client);
    let next = match &cursor {
        Some(cursor) if cursor.network_passphrase != config.network_passphrase => {
            return Err(StoreError::NetworkMismatch {
                stored: cursor.network_passphrase.clone(),
                requested: config.network_passphrase.clone(),
            }
            .into());
        }
        Some(cursor) => cursor.last_ledger + 1,
        None => match config.start {
            StartPolicy::Ledger(n) => n,
            policy => {
                let mut attempt = 0;
                let (latest, oldest) = loop {
                    match source.range().await {
                        Ok(range) => break range,
                        Err(e) => {
                            tracing::warn!(error = %e, "RPC request failed; retrying");
                            if sleep_or_shutdown(config.retry.backoff(attempt), &shutdown).await {
                                return Ok(());
                            }
                            attempt += 1;
                        }
                    }
                };
                if policy == StartPolicy::Latest {
                    latest
                } else {
                    oldest
                }
            }
        },
    };
    tracing::info!(next, "live ingestion starts");

    // The semaphore bounds the pages in flight; the channel's count never binds before it.
    let (to_committer, mut from_fetcher) = mpsc::channel::<FromFetcher>(4096);
    let fetcher_stop = shutdown.child_token();
    let fetcher = tokio::spawn(fetch_loop(
        pool.clone(),
        source.clone(),
        next,
        config.clone(),
        status.clone(),
        to_committer,
        fetcher_stop.clone(),
    ));
    let dictionaries = Dictionaries::default();
    let outcome = commit_loop(
        lock,
        &dictionaries,
        &config,
        &status,
        &announcer,
        &mut from_fetcher,
        &shutdown,
    )
    .await;
    fetcher_stop.cancel();
    let _ = fetcher.await;
    outcome
}

/// Commits what the fetcher hands over, on the lock session, until shutdown or an error;
/// checks the lock session's liveness whenever it waits longer than `config.lock_check`.
async fn commit_loop(
    lock: &mut WriterLock,
    dictionaries: &Dictionaries,
    config: &LiveConfig,
    status: &Status,
    announcer: &TipAnnouncer,
    from_fetcher: &mut mpsc::Receiver<FromFetcher>,
    shutdown: &CancellationToken,
) -> Result<(), LiveError> {
    let lock_lost = lock.lost();
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = lock_lost.cancelled() => return Err(LiveError::LockLost),
            () = tokio::time::sleep(config.lock_check) => {
                if !lock.check_alive(config.lock_check.max(Duration::from_secs(2))).await {
                    lock.mark_lost();
                    return Err(LiveError::LockLost);
                }
                continue;
            }
            message = from_fetcher.recv() => message,
        };
        let Some(message) = message else {
            return Ok(());
        };
        let (mut ledgers, mut permit) = match message {
            FromFetcher::Batch {
                ledgers, permit, ..
            } => (ledgers, permit),
            FromFetcher::Fatal(error) => return Err(error.into()),
        };
        // Group commit: pages already waiting go in the same transaction. A fatal error
        // waiting behind them is returned once they are committed.
        let mut fatal = None;
        let mut pages = 1usize;
        while ledgers.len() < GROUP_MAX_LEDGERS {
            match from_fetcher.try_recv() {
                Ok(FromFetcher::Batch {
                    ledgers: more,
                    permit: more_permit,
                }) => {
                    ledgers.extend(more);
                    permit.merge(more_permit);
                    pages += 1;
                }
                Ok(FromFetcher::Fatal(error)) => {
                    fatal = Some(error);
                    break;
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("writer_batch_pages").record(pages as f64);
        let started = Instant::now();
        let Some(summary) =
            commit_with_retry(lock, dictionaries, config, status, &ledgers, shutdown).await?
        else {
            return Ok(());
        };
        metrics::histogram!("writer_batch_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("writer_batch_ledgers").record(summary.ledgers as f64);
        status.committed(
            summary.last_ledger,
            summary.last_closed_at,
            summary.ledgers,
            summary.payments,
        );
        drop(ledgers);
        drop(permit);
        announcer.announce(Tip {
            sequence: summary.last_ledger,
            hash: hex::encode(summary.last_ledger_hash),
            closed_at: summary.last_closed_at,
        });
        tracing::debug!(
            ledger = summary.last_ledger,
            ledgers = summary.ledgers,
            pages,
            payments = summary.payments,
            "batch committed"
        );
        if let Some(error) = fatal {
            return Err(error.into());
        }
    }
}

/// Commits one batch on the lock session. Transient database failures are retried for
/// as long as it takes (the transaction rolled back, so retrying is safe); failures that
/// may be deterministic get `config.max_commit_attempts` attempts; anything that says
/// the data is wrong stops ingestion at once; a lost lock or lease steps down. Every
/// backoff ends early on shutdown (`Ok(None)`: nothing committed).
async fn commit_with_retry(
    lock: &mut WriterLock,
    dictionaries: &Dictionaries,
    config: &LiveConfig,
    status: &Status,
    ledgers: &[LedgerPayments],
    shutdown: &CancellationToken,
) -> Result<Option<store::BatchSummary>, LiveError> {
    let (Some(first), Some(last)) = (ledgers.first(), ledgers.last()) else {
        return Ok(Some(store::BatchSummary::default()));
    };
    let lock_lost = lock.lost();
    let Some(epoch) = lock.epoch() else {
        return Err(LiveError::LockLost);
    };
    let mut attempt = 0;
    let mut failures = 0;
    loop {
        if lock_lost.is_cancelled() {
            return Err(LiveError::LockLost);
        }
        let result = store::commit_live_batch(
            lock.client(),
            dictionaries,
            &config.network_passphrase,
            epoch,
            ledgers,
        )
        .await;
        let error = match result {
            Ok(summary) => return Ok(Some(summary)),
            Err(e) => e,
        };
        if matches!(error, StoreError::LeaseLost { .. }) || lock.client().is_closed() {
            tracing::error!(%error, "the writer lock or lease is lost; nothing was committed");
            lock.mark_lost();
            return Err(LiveError::LockLost);
        }
        if error.is_transient() {
            // Retried for as long as it takes.
        } else if error.is_database_failure() {
            failures += 1;
            if failures >= config.max_commit_attempts.max(1) {
                metrics::counter!("writer_commit_failures_total", "reason" => "gave_up")
                    .increment(1);
                return Err(LiveError::CommitGaveUp {
                    first: first.ledger.sequence,
                    last: last.ledger.sequence,
                    attempts: failures,
                    condition: error
                        .condition()
                        .unwrap_or_else(|| "a database error".into()),
                    error,
                });
            }
        } else {
            metrics::counter!("writer_commit_failures_total", "reason" => error.label())
                .increment(1);
            return Err(error.into());
        }
        metrics::counter!("writer_commit_retries_total").increment(1);
        tracing::warn!(%error, attempt, "batch commit failed; retrying");
        status.set_error(Some(error.to_string()));
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = lock_lost.cancelled() => return Err(LiveError::LockLost),
            () = tokio::time::sleep(config.retry.backoff(attempt)) => {}
        }
        attempt += 1;
    }
}

/// The prefetch budget as semaphore permits of 1 KiB each.
struct Prefetch {
    permits: std::sync::Arc<Semaphore>,
    total: u32,
}

impl Prefetch {
    fn new(bytes: usize) -> Self {
        let total = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX >> 3)
            .max(1);
        Self {
            permits: std::sync::Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Permits for `bytes`, at most the whole budget (a page larger than the budget goes
    /// alone).
    fn permits_for(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total)
    }

    fn record(&self) {
        let held = self.total as usize - self.permits.available_permits().min(self.total as usize);
        metrics::gauge!("writer_prefetch_bytes").set((held * 1024) as f64);
    }
}

/// Waits for `n` permits; while waiting (the database is behind), keeps the RPC's tip in
/// the status fresh so lag stays true. `None` on stop.
async fn acquire(
    prefetch: &Prefetch,
    n: u32,
    source: &RpcSource,
    status: &Status,
    stop: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    loop {
        let wait = prefetch.permits.clone().acquire_many_owned(n);
        tokio::select! {
            () = stop.cancelled() => return None,
            permit = wait => return permit.ok(),
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                if let Ok((latest, _)) = source.range().await {
                    status.set_rpc_latest(latest);
                }
            }
        }
    }
}

async fn fetch_loop(
    pool: Pool,
    source: std::sync::Arc<RpcSource>,
    mut next: u32,
    config: LiveConfig,
    status: Status,
    to_committer: mpsc::Sender<FromFetcher>,
    stop: CancellationToken,
) {
    let prefetch = Prefetch::new(config.prefetch_bytes.max(source.budget().page_bytes));
    let mut transport_attempt = 0u32;
    let mut bad: Option<(u32, u32)> = None; // (ledger, attempts)
    loop {
        if stop.is_cancelled() {
            return;
        }
        // A page's budget is taken before it is fetched, so the answer being read counts.
        let want = prefetch.permits_for(source.budget().page_bytes);
        let Some(mut permit) = acquire(&prefetch, want, &source, &status, &stop).await else {
            return;
        };
        prefetch.record();
        let fetched = tokio::select! {
            () = stop.cancelled() => return,
            fetched = source.fetch(next) => fetched,
        };
        let pause = match fetched {
            Ok(Fetched::Ledgers {
                ledgers,
                bytes,
                rpc_latest,
                ..
            }) => {
                transport_attempt = 0;
                bad = None;
                status.set_retention_gap(None);
                let Some(last) = ledgers.last().map(|l| l.ledger.sequence) else {
                    continue;
                };
                status.set_rpc_latest(rpc_latest);
                // Settle the page's share at its real size.
                let need = prefetch.permits_for(bytes);
                if need < want {
                    drop(permit.split((want - need) as usize));
                } else if need > want {
                    let Some(more) = acquire(&prefetch, need - want, &source, &status, &stop).await
                    else {
                        return;
                    };
                    permit.merge(more);
                }
                prefetch.record();
                tokio::select! {
                    () = stop.cancelled() => return,
                    sent = to_committer.send(FromFetcher::Batch { ledgers, permit }) => {
                        if sent.is_err() { return; }
                    }
                }
                next = last + 1;
                None
            }
            Ok(Fetched::AtTip { rpc_latest }) => {
                transport_attempt = 0;
                status.set_rpc_latest(rpc_latest);
                Some(config.poll_interval)
            }
            Ok(Fetched::BeforeRetention { rpc_oldest }) => {
                // A backfill may have closed the gap and moved the cursor on; on an empty
                // database (a first run before the retention window) it cannot, and the
                // ledgers it stored from `next` on are followed instead: the first batch
                // creates the cursor after them.
                match stored_cursor(&pool).await {
                    Some(Some(stored)) if stored >= next => {
                        next = stored + 1;
                        status.set_retention_gap(None);
                        continue;
                    }
                    Some(None) => {
                        if let Some(top) = stored_run_end(&pool, next).await {
                            tracing::info!(
                                from = next,
                                to = top,
                                "following the ledgers a backfill stored"
                            );
                            next = top + 1;
                            status.set_retention_gap(None);
                            continue;
                        }
                    }
                    _ => {}
                }
                let cursor = next - 1;
                let remedy = format!(
                    "the RPC keeps ledgers from {rpc_oldest} on, but ingestion stands at {cursor}: fill the gap with \
                     `writer backfill --from {next} --to {} --source DATALAKE_DIR`, or restart against an RPC with \
                     a longer retention",
                    rpc_oldest.saturating_sub(1)
                );
                tracing::error!(cursor, rpc_oldest, "{remedy}");
                status.set_retention_gap(Some(RetentionGap {
                    cursor,
                    rpc_oldest,
                    remedy,
                }));
                Some(config.retention_recheck)
            }
            Err(FetchError::BadLedger { ledger, reason }) => {
                let attempts = match bad {
                    Some((l, n)) if l == ledger => n + 1,
                    _ => 1,
                };
                bad = Some((ledger, attempts));
                metrics::counter!("writer_rpc_errors_total", "kind" => "bad_ledger").increment(1);
                tracing::warn!(ledger, attempts, %reason, "unusable ledger from RPC; fetching it again");
                status.set_error(Some(format!("ledger {ledger}: {reason}")));
                if attempts >= config.retry.max_bad_attempts {
                    let error = FetchError::BadLedger {
                        ledger,
                        reason: format!("still unusable after {attempts} fetches: {reason}"),
                    };
                    let _ = to_committer.send(FromFetcher::Fatal(error)).await;
                    return;
                }
                // Ledgers before the bad one may have come in this page: resume at it.
                next = ledger.max(next);
                Some(config.retry.backoff(attempts))
            }
            Err(e @ FetchError::WrongNetwork { .. }) => {
                let _ = to_committer.send(FromFetcher::Fatal(e)).await;
                return;
            }
            Err(e) => {
                metrics::counter!("writer_rpc_errors_total", "kind" => e.label()).increment(1);
                tracing::warn!(error = %e, attempt = transport_attempt, "RPC request failed; retrying");
                status.set_error(Some(e.to_string()));
                transport_attempt += 1;
                Some(config.retry.backoff(transport_attempt))
            }
        };
        if let Some(pause) = pause {
            if sleep_or_shutdown(pause, &stop).await {
                return;
            }
        }
    }
}

/// The stored cursor's ledger (`Some(None)`: no cursor yet; `None`: unreadable).
async fn stored_cursor(pool: &Pool) -> Option<Option<u32>> {
    let client = pool.get().await.ok()?;
    store::read_cursor(&**client)
        .await
        .ok()
        .map(|cursor| cursor.map(|c| c.last_ledger))
}

/// The end of the run of stored ledgers starting at `from`, if `from` is stored.
async fn stored_run_end(pool: &Pool, from: u32) -> Option<u32> {
    let client = pool.get().await.ok()?;
    store::stored_run_end(&**client, from).await.ok().flatten()
}

/// Sleeps; `true` if `shutdown` fired first.
async fn sleep_or_shutdown(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(pause) => false,
    }
}
