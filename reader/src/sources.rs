//! History sources: any number of read replicas and, optionally, the primary as a
//! fallback. Each source's applied tip is polled (about every 200 ms) and compared with
//! the newest tip known anywhere (the writer's Redis announcement, the primary, the
//! other sources). Requests go round-robin to replicas within the lag threshold; the
//! primary serves only when no replica does (counted); when every source is behind,
//! requests get 503 `stale_history`. A source whose queries fail at the connection
//! level is marked down at once and retried by the next poll.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row as _};
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

/// One database a reader can serve from.
#[derive(Debug)]
pub struct Source {
    /// Name in metrics and logs (`replica-0`, `primary`).
    pub name: String,
    /// Replica or primary.
    pub role: Role,
    /// Its connection pool.
    pub pool: PgPool,
    health: RwLock<Arc<Health>>,
}

impl Source {
    fn health(&self) -> Arc<Health> {
        self.health.read().map(|h| h.clone()).unwrap_or_default()
    }

    fn set_health(&self, health: Health) {
        if let Ok(mut h) = self.health.write() {
            *h = Arc::new(health);
        }
    }

    /// Marks the source down after a connection-level failure; the next poll decides
    /// when it is back.
    pub fn mark_down(&self, error: &str) {
        if let Ok(mut h) = self.health.write() {
            let mut down = Health::clone(&h);
            down.reachable = false;
            down.error = Some(error.to_owned());
            *h = Arc::new(down);
        }
        metrics::gauge!("reader_source_up", "source" => self.name.clone()).set(0.0);
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
    newest: RwLock<Option<u32>>,
    best_tip: watch::Sender<u32>,
    fallbacks: AtomicU64,
}

#[derive(Deserialize)]
struct Announcement {
    sequence: u32,
}

fn pool(url: &str, config: &SourcesConfig) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let timeout_ms = config.statement_timeout.as_millis().to_string();
    let options = options
        .application_name("stellar-payments-reader")
        .options([("statement_timeout", timeout_ms.as_str())]);
    Ok(PgPoolOptions::new()
        .max_connections(config.pool_size)
        .min_connections(0)
        .acquire_timeout(config.acquire_timeout)
        // A failed query marks the source down and is retried elsewhere; a ping before
        // every query would double the round trips of the hot path.
        .test_before_acquire(false)
        .idle_timeout(Some(Duration::from_secs(60)))
        .connect_lazy_with(options))
}

impl Sources {
    /// Builds the pools (lazily connected: a source that is down at start-up comes in
    /// when it is reachable).
    pub fn new(config: &SourcesConfig) -> Result<Self, sqlx::Error> {
        let mut sources = Vec::new();
        for (i, url) in config.replica_urls.iter().enumerate() {
            sources.push(Arc::new(Source {
                name: format!("replica-{i}"),
                role: Role::Replica,
                pool: pool(url, config)?,
                health: RwLock::new(Arc::new(Health::default())),
            }));
        }
        if let Some(url) = &config.primary_url {
            sources.push(Arc::new(Source {
                name: "primary".into(),
                role: Role::Primary,
                pool: pool(url, config)?,
                health: RwLock::new(Arc::new(Health::default())),
            }));
        }
        let (best_tip, _) = watch::channel(0);
        Ok(Self {
            sources,
            max_lag: config.max_lag_ledgers,
            next: AtomicUsize::new(0),
            newest: RwLock::new(None),
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

    /// Every source.
    pub fn all(&self) -> &[Arc<Source>] {
        &self.sources
    }

    /// Changes whenever the best usable tip moves (streams wait on it).
    pub fn subscribe_tip(&self) -> watch::Receiver<u32> {
        self.best_tip.subscribe()
    }

    fn newest(&self) -> Option<u32> {
        self.newest.read().ok().and_then(|n| *n)
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
        let newest = self.newest();
        let candidates: Vec<(Arc<Source>, View)> = self
            .sources
            .iter()
            .filter(|s| !skip.contains(&s.name))
            .filter_map(|s| {
                self.usable(&s.health(), newest)
                    .map(|(v, _)| (s.clone(), v))
            })
            .collect();
        let replicas: Vec<_> = candidates
            .iter()
            .filter(|(s, _)| s.role == Role::Replica)
            .collect();
        if !replicas.is_empty() {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % replicas.len();
            let (source, view) = replicas[i];
            return Ok(Chosen {
                source: source.clone(),
                view: *view,
            });
        }
        if let Some((source, view)) = candidates
            .into_iter()
            .find(|(s, _)| s.role == Role::Primary)
        {
            if self.sources.iter().any(|s| s.role == Role::Replica) {
                metrics::counter!("reader_primary_fallbacks_total").increment(1);
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(Chosen { source, view });
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
    /// (see [`is_source_failure`]), marks the source down and runs it again on another,
    /// until one answers or none is left (then the 503 `choose` gives). Any other error
    /// ends the read as the error's own problem.
    pub async fn read<T, E, F, Fut>(&self, mut attempt: F) -> Result<T, Problem>
    where
        E: ReadFailure,
        F: FnMut(Chosen) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut failed: Vec<String> = Vec::new();
        loop {
            let chosen = self.choose(&failed)?;
            let source = chosen.source.clone();
            match attempt(chosen).await {
                Ok(value) => return Ok(value),
                Err(error) => match error.database().filter(|e| is_source_failure(e)) {
                    Some(e) => {
                        tracing::warn!(source = %source.name, error = %e, "source failed; retrying on another");
                        metrics::counter!("reader_source_failures_total", "source" => source.name.clone())
                            .increment(1);
                        source.mark_down(&e.to_string());
                        failed.push(source.name.clone());
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
                .map(|s| async move { (s, tokio::time::timeout(budget, probe(&s.pool)).await) });
            let results = futures_util::future::join_all(checks).await;
            let mut newest: Option<u32> = None;
            for (source, result) in results {
                let health = match result {
                    Ok(Ok((view, network))) => Health {
                        reachable: true,
                        view,
                        network,
                        error: None,
                    },
                    Ok(Err(e)) => Health {
                        reachable: false,
                        view: source.health().view,
                        network: None,
                        error: Some(e.to_string()),
                    },
                    Err(_) => Health {
                        reachable: false,
                        view: source.health().view,
                        network: None,
                        error: Some(format!("no answer within {budget:?}")),
                    },
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
                    }
                }
                source.set_health(health);
            }
            if let Some(url) = &config.redis_url {
                if let Some(announced) = announced_tip(url, &tip_key, &mut redis).await {
                    newest = newest.max(Some(announced));
                }
            }
            if let Ok(mut n) = self.newest.write() {
                // The newest tip never goes back within a process (a source that was
                // ahead and died must still count: others are behind that tip).
                *n = (*n).max(newest);
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
            self.best_tip.send_if_modified(|b| {
                let changed = *b != best;
                *b = best;
                changed
            });
        }
    }
}

/// One poll of one source: its tip, oldest ledger, backfill generation and network.
/// The tip is the live writer's cursor; a database filled by backfill alone (no cursor
/// yet) is served up to its newest ledger.
async fn probe(pool: &PgPool) -> Result<(Option<View>, Option<String>), sqlx::Error> {
    let row = sqlx::query(
        "SELECT t.last_ledger, t.network_passphrase, \
                (SELECT extract(epoch FROM closed_at)::bigint FROM ledgers WHERE sequence = t.last_ledger) AS closed, \
                (SELECT min(sequence) FROM ledgers) AS oldest, \
                (SELECT count(*) FROM backfill_ranges) AS generation \
         FROM (SELECT coalesce((SELECT last_ledger FROM ingest_cursor), \
                               (SELECT max(sequence) FROM ledgers)) AS last_ledger, \
                      (SELECT network_passphrase FROM ingest_cursor) AS network_passphrase) t",
    )
    .fetch_one(pool)
    .await?;
    let Some(tip) = row.try_get::<Option<i32>, _>("last_ledger")? else {
        return Ok((None, None));
    };
    let oldest: Option<i32> = row.try_get("oldest")?;
    Ok((
        Some(View {
            tip: tip as u32,
            tip_closed_at: row.try_get::<Option<i64>, _>("closed")?.unwrap_or(0),
            oldest: oldest.unwrap_or(tip) as u32,
            generation: row.try_get("generation")?,
        }),
        row.try_get("network_passphrase")?,
    ))
}

/// The writer's announced tip, when Redis answers within a short budget.
async fn announced_tip(
    url: &str,
    key: &str,
    connection: &mut Option<redis::aio::ConnectionManager>,
) -> Option<u32> {
    let budget = Duration::from_millis(100);
    if connection.is_none() {
        let client = redis::Client::open(url).ok()?;
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

/// Whether an error means the source itself failed (retry elsewhere, mark it down)
/// rather than the query.
pub fn is_source_failure(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // Connection exceptions, shutdowns, too many connections, and recovery
            // conflicts on a replica (serialization_failure): another source may answer.
            code.starts_with("08") || code.starts_with("57P") || code == "53300" || code == "40001"
        }
        _ => false,
    }
}

/// Whether the statement timeout cancelled the query.
pub fn is_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("57014"))
}
