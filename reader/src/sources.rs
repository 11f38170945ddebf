//! History sources: any number of read replicas and, optionally, the primary as a
//! fallback. Each source's applied tip is polled (about every 200 ms) and compared with
//! the newest tip known anywhere (the writer's Redis announcement, the primary, the
//! other sources). Requests go round-robin to replicas within the lag threshold; the
//! primary serves only when no replica does (counted); when every source is behind,
//! requests get 503 `stale_history`. A source whose queries fail at the connection
//! level is marked down at once and retried by the next poll. A busy source (its pool
//! exhausted, `too many connections`, a recovery conflict on a replica) is not down: the
//! request is retried on another source and the busy one stays in rotation.
//!
//! The tracked newest tip never goes back on its own (a source that was ahead and died
//! still counts). It goes back only when the history itself went backwards (a database
//! restore, a testnet reset, a wrong announcement): every reachable source is behind it
//! by more than the lag threshold, and a source's own tip went backwards or the primary
//! (where the writer writes) is that far behind too. Then the lower tip is tracked, the
//! announcement that contradicts it is ignored until it changes, and the backfill
//! generation of every view moves on so that nothing cached under the old history
//! (cache keys, ETags) is reused (`reader_tip_regressions_total`; `subscribe_regressions`
//! lets the server drop its response cache).
//!
//! Readiness (`readiness`) fails only for what is this pod's own: before any source was
//! ever usable. A history that is stale or unreachable everywhere is fleet-wide: pods stay
//! ready and answer 503 problem documents, rather than all leaving the load balancer at
//! once.
//!
//! Each source's tip is probed on a dedicated connection of its own, never one of the
//! request pool, so a saturated pool cannot make a healthy source look unreachable.
//! What must hold: only a connection failure (of a query or of the probe) marks a
//! source down.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, PgConnection, PgPool, Row as _};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::problem::Problem;

/// What a source is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A read replica: serves requests.
    Replica,
    /// The primary: serves only when no replica can.
    Primary,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Self::Replica => "replica",
            Self::Primary => "primary",
        }
    }
}

/// What one poll learnt about a source's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct View {
    /// The last ledger applied (the writer's cursor as this source sees it).
    pub tip: u32,
    /// That ledger's close time, seconds since the epoch.
    pub tip_closed_at: i64,
    /// The oldest ledger held.
    pub oldest: u32,
    /// Changes whenever backfill adds ledgers below the tip (part of cache keys and
    /// ETags, so that filled gaps are never hidden by a cached page).
    pub generation: i64,
}

/// A source's last known state.
#[derive(Clone, Debug, Default)]
struct Health {
    reachable: bool,
    view: Option<View>,
    network: Option<String>,
    error: Option<String>,
}

/// The most sources (replicas and primary) a reader takes: a request chooses among
/// them without allocating.
pub const MAX_SOURCES: usize = 32;

/// `Sources::newest` before any tip is known.
const NO_TIP: u64 = u64::MAX;

/// One database a reader can serve from.
#[derive(Debug)]
pub struct Source {
    /// Name in metrics and logs (`replica-0`, `primary`).
    pub name: String,
    /// Replica or primary.
    pub role: Role,
    /// Its connection pool.
    pub pool: PgPool,
    /// Read on every request: a lock-free swap, never a lock.
    health: ArcSwap<Health>,
    /// How to open the probe's own connection.
    probe_options: PgConnectOptions,
    /// When the source was last found down: pooled connections older than that are
    /// discarded on acquire (they died with it).
    down: Arc<DownMark>,
    /// The probe's dedicated connection (not from `pool`).
    probe: tokio::sync::Mutex<Option<PgConnection>>,
    /// Whether its payments keep their transaction's hash (migration V6), as the last
    /// probe found: a reader deployed before its writer has migrated reads the hash
    /// from `transactions` until the column appears.
    hash_kept: AtomicBool,
}

impl Source {
    /// Whether the last probe found `payments.transaction_hash` (migration V6).
    pub fn hash_kept(&self) -> bool {
        self.hash_kept.load(Ordering::Relaxed)
    }

    fn health(&self) -> Arc<Health> {
        self.health.load_full()
    }

    fn set_health(&self, health: Health) {
        self.health.store(Arc::new(health));
    }

    /// Marks the source down after a connection-level failure; the next poll decides
    /// when it is back.
    pub fn mark_down(&self, error: &str) {
        self.down.mark();
        self.health.rcu(|h| {
            let mut down = Health::clone(h);
            down.reachable = false;
            down.error = Some(error.to_owned());
            down
        });
        metrics::gauge!("reader_source_up", "source" => self.name.clone()).set(0.0);
    }

    /// Takes note of a query that failed on this source: a connection failure marks it
    /// down, a busy source is only counted. Returns how the failure was classified
    /// (None: not the source's fault, do not retry elsewhere).
    pub fn failed(&self, error: &sqlx::Error) -> Option<Failure> {
        let failure = classify(error)?;
        match failure {
            Failure::Down => self.mark_down(&error.to_string()),
            Failure::Busy(reason) => {
                metrics::counter!("reader_source_busy_total", "source" => self.name.clone(), "reason" => reason)
                    .increment(1);
            }
        }
        Some(failure)
    }

    /// One probe on the dedicated connection (opened on first use, and again after a
    /// failure), within `budget`.
    async fn probe(&self, budget: Duration) -> Result<(Option<View>, Option<String>), String> {
        let mut connection = self.probe.lock().await;
        let outcome = tokio::time::timeout(budget, async {
            if connection.is_none() {
                *connection = Some(self.probe_options.connect().await?);
            }
            match connection.as_mut() {
                Some(c) => probe(c).await,
                None => Err(sqlx::Error::PoolClosed),
            }
        })
        .await;
        match outcome {
            Ok(Ok((found, hash_kept))) => {
                self.hash_kept.store(hash_kept, Ordering::Relaxed);
                Ok(found)
            }
            Ok(Err(e)) => {
                *connection = None;
                Err(e.to_string())
            }
            Err(_) => {
                // Whatever the connection was doing, it is not reused.
                *connection = None;
                Err(format!("no answer within {budget:?}"))
            }
        }
    }
}

/// When a source was last found down, for its pool's acquire check.
#[derive(Debug)]
struct DownMark {
    base: Instant,
    /// Milliseconds after `base`, plus one (0: never).
    at: AtomicU64,
}

impl DownMark {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    fn mark(&self) {
        self.at.store(
            self.base.elapsed().as_millis() as u64 + 1,
            Ordering::Relaxed,
        );
    }

    /// Whether a connection of this age was opened before the last mark.
    fn predates(&self, age: Duration) -> bool {
        let at = self.at.load(Ordering::Relaxed);
        at > 0 && (self.base.elapsed().saturating_sub(age).as_millis() as u64) < at
    }
}

/// Why a query failed on a source, when the source (not the query) is to blame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The source cannot be reached: mark it down, retry elsewhere.
    Down,
    /// The source is there but busy: retry elsewhere, keep it in rotation.
    Busy(&'static str),
}

/// How a query's error reflects on its source.
pub fn classify(error: &sqlx::Error) -> Option<Failure> {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Some(Failure::Down),
        sqlx::Error::PoolTimedOut => Some(Failure::Busy("pool_timeout")),
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // A replica cancels queries that conflict with the WAL it replays
            // (serialization_failure, or a shutdown-class code with this message):
            // the replica is fine, the query may go elsewhere.
            if code == "40001" || db.message().contains("conflict with recovery") {
                Some(Failure::Busy("recovery_conflict"))
            } else if code == "53300" {
                Some(Failure::Busy("too_many_connections"))
            } else if code.starts_with("08") || code.starts_with("57P") {
                Some(Failure::Down)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Pool and polling settings.
#[derive(Clone, Debug)]
pub struct SourcesConfig {
    /// The primary, used only as a fallback.
    pub primary_url: Option<String>,
    /// The read replicas.
    pub replica_urls: Vec<String>,
    /// Connections per source.
    pub pool_size: u32,
    /// Server-side limit on any statement.
    pub statement_timeout: Duration,
    /// How long a request waits for a connection.
    pub acquire_timeout: Duration,
    /// How often tips are polled.
    pub poll_interval: Duration,
    /// Largest acceptable lag behind the newest known tip, in ledgers.
    pub max_lag_ledgers: u32,
    /// Where the writer announces its tip (`{prefix}tip`), when configured.
    pub redis_url: Option<String>,
    /// The announcement key prefix.
    pub redis_prefix: String,
    /// CA certificates trusted for a `rediss://` URL.
    pub redis_ca: shared::redistls::RedisCa,
}

/// The source a request was given and what it held at the last poll.
#[derive(Clone, Debug)]
pub struct Chosen {
    /// The source.
    pub source: Arc<Source>,
    /// Its data as of the last poll: queries are bounded by `view.tip`, so a response
    /// is a function of (view, request) alone.
    pub view: View,
}

/// A snapshot for `/`, `/health/ready` and headers.
#[derive(Clone, Debug, Default)]
pub struct Overview {
    /// The newest tip known anywhere.
    pub newest_tip: Option<u32>,
    /// The best view among usable sources.
    pub best: Option<View>,
    /// The network passphrase the data belongs to.
    pub network: Option<String>,
    /// Per source: name, role, reachable, tip, lag, usable.
    pub sources: Vec<SourceReport>,
}

/// One source in `/health/ready`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SourceReport {
    /// Name.
    pub name: String,
    /// replica or primary.
    pub role: &'static str,
    /// Whether the last poll reached it.
    pub reachable: bool,
    /// Its tip.
    pub tip: Option<u32>,
    /// Ledgers behind the newest known tip.
    pub lag: Option<u32>,
    /// Whether requests may go to it.
    pub usable: bool,
    /// The last error, when unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// All sources and the newest known tip.
#[derive(Debug)]
pub struct Sources {
    sources: Vec<Arc<Source>>,
    max_lag: u32,
    next: AtomicUsize,
    /// The newest tip known anywhere ([`NO_TIP`] before any), read on every request.
    newest: AtomicU64,
    best_tip: watch::Sender<u32>,
    fallbacks: AtomicU64,
    /// Counts the times the history went backwards.
    regressions: watch::Sender<u64>,
    /// A source's tip went backwards since the tracked tip last agreed with the sources.
    went_back: AtomicBool,
    /// An announced tip that contradicted the sources when the history went backwards.
    ignored_announcement: RwLock<Option<u32>>,
    /// Some source was usable at least once since start.
    warmed: AtomicBool,
}

/// Whether the pod should receive traffic, and what is degraded.
#[derive(Clone, Copy, Debug)]
pub struct Readiness {
    /// Ready for traffic.
    pub ready: bool,
    /// Why not ready, or what is degraded while ready.
    pub reason: Option<&'static str>,
}

/// Generations move on by this much each time the history goes backwards (backfill
/// counts stay far below it).
const REGRESSION_GENERATION: i64 = 1 << 40;

#[derive(Deserialize)]
struct Announcement {
    sequence: u32,
}

fn connect_options(url: &str, config: &SourcesConfig) -> Result<PgConnectOptions, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let timeout_ms = config.statement_timeout.as_millis().to_string();
    Ok(options
        .application_name("stellar-payments-reader")
        .options([("statement_timeout", timeout_ms.as_str())]))
}

fn source(
    name: String,
    role: Role,
    url: &str,
    config: &SourcesConfig,
) -> Result<Arc<Source>, sqlx::Error> {
    let options = connect_options(url, config)?;
    let down = Arc::new(DownMark::new());
    Ok(Arc::new(Source {
        name,
        role,
        pool: pool(options.clone(), config, down.clone()),
        down,
        health: ArcSwap::from_pointee(Health::default()),
        probe_options: options.application_name("stellar-payments-reader-probe"),
        probe: tokio::sync::Mutex::new(None),
        hash_kept: AtomicBool::new(false),
    }))
}

fn pool(options: PgConnectOptions, config: &SourcesConfig, down: Arc<DownMark>) -> PgPool {
    PgPoolOptions::new()
        // Connections opened before the source was last found down are dead: dropped
        // without a round trip, so a source that comes back serves at once.
        .before_acquire(move |_, meta| {
            let alive = !down.predates(meta.age);
            Box::pin(async move { Ok(alive) })
        })
        .max_connections(config.pool_size)
        .min_connections(0)
        .acquire_timeout(config.acquire_timeout)
        // A failed query marks the source down and is retried elsewhere; a ping before
        // every query would double the round trips of the hot path.
        .test_before_acquire(false)
        .idle_timeout(Some(Duration::from_secs(60)))
        .connect_lazy_with(options)
}

impl Sources {
    /// Builds the pools (lazily connected: a source that is down at start-up comes in
    /// when it is reachable).
    pub fn new(config: &SourcesConfig) -> Result<Self, sqlx::Error> {
        let mut sources = Vec::new();
        for (i, url) in config.replica_urls.iter().enumerate() {
            sources.push(source(format!("replica-{i}"), Role::Replica, url, config)?);
        }
        if let Some(url) = &config.primary_url {
            sources.push(source("primary".into(), Role::Primary, url, config)?);
        }
        let (best_tip, _) = watch::channel(0);
        let (regressions, _) = watch::channel(0);
        Ok(Self {
            regressions,
            went_back: AtomicBool::new(false),
            ignored_announcement: RwLock::new(None),
            warmed: AtomicBool::new(false),
            sources,
            max_lag: config.max_lag_ledgers,
            next: AtomicUsize::new(0),
            newest: AtomicU64::new(NO_TIP),
            best_tip,
            fallbacks: AtomicU64::new(0),
        })
    }

    /// Requests this instance sent to the primary because no replica was usable.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// The newest tip among usable sources as of the last poll (None before the first
    /// poll finds one).
    pub fn best_tip(&self) -> Option<u32> {
        Some(*self.best_tip.borrow()).filter(|t| *t > 0)
    }

    /// Changes each time the history went backwards (tip-keyed state must go).
    pub fn subscribe_regressions(&self) -> watch::Receiver<u64> {
        self.regressions.subscribe()
    }

    /// Readiness: not ready only before any source was ever usable (this pod has not
    /// warmed up). Once it has, a history stale or unreachable on every source is a
    /// fleet-wide condition, reported but not failing readiness: every pod would fail
    /// together and the whole fleet would leave the load balancer at once.
    pub fn readiness(&self) -> Readiness {
        if self.overview().best.is_some() {
            return Readiness {
                ready: true,
                reason: None,
            };
        }
        if !self.warmed.load(Ordering::Relaxed) {
            return Readiness {
                ready: false,
                reason: Some("no source has been usable since start"),
            };
        }
        Readiness {
            ready: true,
            reason: Some(
                "degraded: no reachable source within the lag threshold; requests get 503 \
                 until one is (fleet-wide, so readiness holds)",
            ),
        }
    }

    /// Every source.
    pub fn all(&self) -> &[Arc<Source>] {
        &self.sources
    }

    /// Changes whenever the best usable tip moves (streams wait on it).
    pub fn subscribe_tip(&self) -> watch::Receiver<u32> {
        self.best_tip.subscribe()
    }

    fn newest(&self) -> Option<u32> {
        match self.newest.load(Ordering::Acquire) {
            NO_TIP => None,
            n => u32::try_from(n).ok(),
        }
    }

    fn usable(&self, health: &Health, newest: Option<u32>) -> Option<(View, u32)> {
        if !health.reachable {
            return None;
        }
        let view = health.view?;
        let lag = newest.map_or(0, |n| n.saturating_sub(view.tip));
        (lag <= self.max_lag).then_some((view, lag))
    }

    /// Picks a source for a request: the next usable replica, else the primary, else a
    /// 503 saying why. `skip` lists sources that already failed this request.
    pub fn choose(&self, skip: &[String]) -> Result<Chosen, Problem> {
        // On every request: no allocation, each source's health read once.
        let newest = self.newest();
        let mut usable: [Option<View>; MAX_SOURCES] = [None; MAX_SOURCES];
        let mut replicas = 0;
        let mut primary = None;
        for (i, s) in self.sources.iter().enumerate() {
            if skip.iter().any(|n| *n == s.name) {
                continue;
            }
            let Some((view, _)) = self.usable(&s.health.load(), newest) else {
                continue;
            };
            match s.role {
                Role::Replica if i < MAX_SOURCES => {
                    usable[i] = Some(view);
                    replicas += 1;
                }
                Role::Replica => {}
                Role::Primary => primary = primary.or(Some((i, view))),
            }
        }
        if replicas > 0 {
            let nth = self.next.fetch_add(1, Ordering::Relaxed) % replicas;
            if let Some((i, view)) = usable
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i, v)))
                .nth(nth)
            {
                return Ok(Chosen {
                    source: self.sources[i].clone(),
                    view,
                });
            }
        }
        if let Some((i, view)) = primary {
            if self.sources.iter().any(|s| s.role == Role::Replica) {
                metrics::counter!("reader_primary_fallbacks_total").increment(1);
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(Chosen {
                source: self.sources[i].clone(),
                view,
            });
        }
        let reachable: Vec<Arc<Health>> = self
            .sources
            .iter()
            .map(|s| s.health())
            .filter(|h| h.reachable && h.view.is_some())
            .collect();
        if reachable.is_empty() {
            Err(Problem::unavailable(
                "No history database can be reached at the moment.",
            ))
        } else {
            let best = reachable
                .iter()
                .filter_map(|h| h.view.map(|v| v.tip))
                .max()
                .unwrap_or(0);
            Err(Problem::stale_history(format!(
                "This reader's history is behind the network: its newest ledger is {best}, \
                 the network's is {}; more than {} ledgers.",
                newest.unwrap_or(0),
                self.max_lag
            ))
            .with_extra("newest_ledger", newest.unwrap_or(0))
            .with_extra("history_latest_ledger", best))
        }
    }

    /// Runs `attempt` on a chosen source and, when it fails because that source failed
    /// or is busy (see [`Source::failed`]: only a dead source is marked down), runs it
    /// again on another, until one answers or none is left (then the 503 `choose`
    /// gives). Any other error ends the read as the error's own problem.
    pub async fn read<T, E, F, Fut>(&self, attempt: F) -> Result<T, Problem>
    where
        E: ReadFailure,
        F: FnMut(Chosen) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        self.read_from(self.choose(&[])?, attempt).await
    }

    /// [`Sources::read`] starting at `first`, a source the caller already chose for
    /// this request (so a request that looked in the cache first does not advance the
    /// round-robin twice and always land its queries on the same replica).
    pub async fn read_from<T, E, F, Fut>(&self, first: Chosen, mut attempt: F) -> Result<T, Problem>
    where
        E: ReadFailure,
        F: FnMut(Chosen) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut failed: Vec<String> = Vec::new();
        let mut chosen = first;
        loop {
            let source = chosen.source.clone();
            match attempt(chosen).await {
                Ok(value) => return Ok(value),
                Err(error) => match error.database().filter(|e| is_source_failure(e)) {
                    Some(e) => {
                        tracing::warn!(source = %source.name, error = %e, "source failed or busy; retrying on another");
                        metrics::counter!("reader_source_failures_total", "source" => source.name.clone())
                            .increment(1);
                        source.failed(e);
                        failed.push(source.name.clone());
                        chosen = self.choose(&failed)?;
                    }
                    None => return Err(error.into_problem()),
                },
            }
        }
    }

    /// The state of every source.
    pub fn overview(&self) -> Overview {
        let newest = self.newest();
        let mut out = Overview {
            newest_tip: newest,
            ..Overview::default()
        };
        for s in &self.sources {
            let h = s.health();
            let usable = self.usable(&h, newest);
            if let Some((view, _)) = usable {
                if out.best.is_none_or(|b| view.tip > b.tip) {
                    out.best = Some(view);
                }
            }
            if out.network.is_none() {
                out.network.clone_from(&h.network);
            }
            out.sources.push(SourceReport {
                name: s.name.clone(),
                role: s.role.as_str(),
                reachable: h.reachable,
                tip: h.view.map(|v| v.tip),
                lag: h.view.and_then(|v| newest.map(|n| n.saturating_sub(v.tip))),
                usable: usable.is_some(),
                error: if h.reachable { None } else { h.error.clone() },
            });
        }
        out
    }

    /// Polls every source and the announced tip until `stop` is cancelled.
    pub async fn poll(self: Arc<Self>, config: SourcesConfig, stop: CancellationToken) {
        let mut redis: Option<redis::aio::ConnectionManager> = None;
        let tip_key = format!("{}tip", config.redis_prefix);
        let mut ticker = tokio::time::interval(config.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let budget = config.poll_interval.max(Duration::from_millis(100)) * 4;
            let checks = self
                .sources
                .iter()
                .map(|s| async move { (s, s.probe(budget).await) });
            let results = futures_util::future::join_all(checks).await;
            let epoch = *self.regressions.borrow() as i64;
            let mut newest: Option<u32> = None;
            for (source, result) in results {
                let health = match result {
                    Ok((view, network)) => Health {
                        reachable: true,
                        view: view.map(|mut v| {
                            v.generation += epoch * REGRESSION_GENERATION;
                            v
                        }),
                        network,
                        error: None,
                    },
                    Err(error) => {
                        source.down.mark();
                        Health {
                            reachable: false,
                            view: source.health().view,
                            network: None,
                            error: Some(error),
                        }
                    }
                };
                if health.reachable != source.health().reachable {
                    if health.reachable {
                        tracing::info!(source = %source.name, "history source reachable");
                    } else {
                        tracing::warn!(source = %source.name, error = ?health.error, "history source unreachable");
                    }
                }
                metrics::gauge!("reader_source_up", "source" => source.name.clone())
                    .set(if health.reachable { 1.0 } else { 0.0 });
                if health.reachable {
                    if let Some(view) = health.view {
                        newest = newest.max(Some(view.tip));
                        if source
                            .health()
                            .view
                            .is_some_and(|before| view.tip < before.tip)
                        {
                            tracing::warn!(source = %source.name, tip = view.tip, "a source's tip went backwards");
                            self.went_back.store(true, Ordering::Relaxed);
                        }
                    }
                }
                source.set_health(health);
            }
            let sources_newest = newest;
            let mut announced = None;
            if let Some(url) = &config.redis_url {
                announced = announced_tip(url, &config.redis_ca, &tip_key, &mut redis).await;
                if let Some(a) = announced {
                    let ignored = self.ignored_announcement.read().ok().and_then(|i| *i);
                    if ignored == Some(a) {
                        // Still the announcement the sources contradicted.
                    } else {
                        if ignored.is_some() {
                            if let Ok(mut i) = self.ignored_announcement.write() {
                                *i = None;
                            }
                        }
                        newest = newest.max(Some(a));
                    }
                }
            }
            if !self.history_went_backwards(sources_newest, announced) {
                // The newest tip never goes back by itself (a source that was ahead
                // and died must still count: others are behind that tip).
                if let Some(newest) = self.newest().max(newest) {
                    self.newest.store(u64::from(newest), Ordering::Release);
                }
            }
            let newest = self.newest();
            let mut best = 0;
            for s in &self.sources {
                let h = s.health();
                if let Some(view) = h.view {
                    let lag = newest.map_or(0, |n| n.saturating_sub(view.tip));
                    metrics::gauge!("reader_source_lag_ledgers", "source" => s.name.clone())
                        .set(f64::from(lag));
                }
                if let Some((view, _)) = self.usable(&h, newest) {
                    best = best.max(view.tip);
                }
            }
            if best > 0 {
                self.warmed.store(true, Ordering::Relaxed);
            }
            self.best_tip.send_if_modified(|b| {
                let changed = *b != best;
                *b = best;
                changed
            });
        }
    }

    /// After a poll: when every reachable source is behind the tracked tip by more
    /// than the lag threshold, and a source went backwards or the primary itself is
    /// that far behind, the history went backwards: track the sources' tip instead,
    /// ignore the announcement that contradicts it, and move every view's generation
    /// on. True when it did.
    fn history_went_backwards(&self, sources_newest: Option<u32>, announced: Option<u32>) -> bool {
        let (Some(tracked), Some(lower)) = (self.newest(), sources_newest) else {
            return false;
        };
        let all_behind = lower.saturating_add(self.max_lag) < tracked;
        if !all_behind {
            self.went_back.store(false, Ordering::Relaxed);
            return false;
        }
        let primary_behind = self.sources.iter().any(|s| {
            let h = s.health();
            s.role == Role::Primary
                && h.reachable
                && h.view
                    .is_some_and(|v| v.tip.saturating_add(self.max_lag) < tracked)
        });
        if !(self.went_back.load(Ordering::Relaxed) || primary_behind) {
            return false;
        }
        let mut newest = lower;
        match announced {
            Some(a) if a > lower.saturating_add(self.max_lag) => {
                if let Ok(mut i) = self.ignored_announcement.write() {
                    *i = Some(a);
                }
            }
            Some(a) => newest = newest.max(a),
            None => {}
        }
        self.newest.store(u64::from(newest), Ordering::Release);
        self.went_back.store(false, Ordering::Relaxed);
        for s in &self.sources {
            let mut h = Health::clone(&s.health());
            if let Some(v) = h.view.as_mut() {
                v.generation += REGRESSION_GENERATION;
            }
            s.set_health(h);
        }
        self.regressions.send_modify(|n| *n += 1);
        metrics::counter!("reader_tip_regressions_total").increment(1);
        tracing::warn!(
            from = tracked,
            to = newest,
            "the history went backwards (a restore, a network reset or a wrong announcement): \
             tracking the lower tip, dropping what was cached under the old one"
        );
        true
    }
}

/// One poll of one source: its tip, oldest ledger, backfill generation and network,
/// and whether `payments` has the `transaction_hash` column yet. The tip is the live
/// writer's cursor; a database filled by backfill alone (no cursor yet) is served up to
/// its newest ledger.
async fn probe(
    connection: &mut PgConnection,
) -> Result<((Option<View>, Option<String>), bool), sqlx::Error> {
    let row = sqlx::query(
        "SELECT t.last_ledger, t.network_passphrase, \
                EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('payments') \
                        AND attname = 'transaction_hash' AND NOT attisdropped) AS hash_kept, \
                (SELECT extract(epoch FROM closed_at)::bigint FROM ledgers WHERE sequence = t.last_ledger) AS closed, \
                (SELECT min(sequence) FROM ledgers) AS oldest, \
                (SELECT count(*) FROM backfill_ranges) AS generation \
         FROM (SELECT coalesce((SELECT last_ledger FROM ingest_cursor), \
                               (SELECT max(sequence) FROM ledgers)) AS last_ledger, \
                      (SELECT network_passphrase FROM ingest_cursor) AS network_passphrase) t",
    )
    .fetch_one(connection)
    .await?;
    let hash_kept: bool = row.try_get("hash_kept")?;
    let Some(tip) = row.try_get::<Option<i32>, _>("last_ledger")? else {
        return Ok(((None, None), hash_kept));
    };
    let oldest: Option<i32> = row.try_get("oldest")?;
    Ok((
        (
            Some(View {
                tip: tip as u32,
                tip_closed_at: row.try_get::<Option<i64>, _>("closed")?.unwrap_or(0),
                oldest: oldest.unwrap_or(tip) as u32,
                generation: row.try_get("generation")?,
            }),
            row.try_get("network_passphrase")?,
        ),
        hash_kept,
    ))
}

/// The writer's announced tip, when Redis answers within a short budget.
async fn announced_tip(
    url: &str,
    ca: &shared::redistls::RedisCa,
    key: &str,
    connection: &mut Option<redis::aio::ConnectionManager>,
) -> Option<u32> {
    let budget = Duration::from_millis(100);
    if connection.is_none() {
        let client = ca.client(url).ok()?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(budget)
            .set_response_timeout(budget)
            .set_number_of_retries(1);
        *connection = tokio::time::timeout(
            budget * 2,
            redis::aio::ConnectionManager::new_with_config(client, config),
        )
        .await
        .ok()?
        .ok();
    }
    let conn = connection.as_mut()?;
    let started = Instant::now();
    let value: Option<String> =
        match tokio::time::timeout(budget, redis::cmd("GET").arg(key).query_async(conn)).await {
            Ok(Ok(v)) => v,
            _ => {
                metrics::counter!("reader_tip_announcement_errors_total").increment(1);
                return None;
            }
        };
    metrics::histogram!("reader_redis_tip_seconds").record(started.elapsed().as_secs_f64());
    serde_json::from_str::<Announcement>(&value?)
        .ok()
        .map(|a| a.sequence)
}

/// An error of a read run through [`Sources::read`].
pub trait ReadFailure {
    /// The database error, when there is one (a source failure is retried elsewhere).
    fn database(&self) -> Option<&sqlx::Error>;
    /// The problem the client sees when the read ends with this error.
    fn into_problem(self) -> Problem;
}

/// Whether an error means the source itself failed or is busy (retry elsewhere) rather
/// than the query.
pub fn is_source_failure(error: &sqlx::Error) -> bool {
    classify(error).is_some()
}

/// Whether the statement timeout cancelled the query.
pub fn is_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}
