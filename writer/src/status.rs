//! What the writer is doing, for `/health` and Prometheus `/metrics` on a small HTTP
//! port. Standbys serve it too, so an operator sees both colours of a blue/green pair.
//!
//! What must hold: `/health` is 200 only while the writer does its job. It is 503 when
//! ingestion failed, when the RPC no longer keeps the ledgers after the cursor, and when
//! an active writer has committed nothing for `stall_after` while the RPC has newer
//! ledgers (the reason and the last error say why). Lag in ledgers and seconds follows
//! every fetch, not only commits, so a writer that cannot commit shows its lag growing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// The writer's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Connecting, migrating.
    Starting,
    /// Waiting for the writer lock.
    Standby,
    /// Ingesting.
    Active,
    /// Shutting down.
    Stopping,
    /// Stopped on an error that needs an operator.
    Failed,
}

/// A gap between the cursor and what the RPC still keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RetentionGap {
    /// The last ledger ingested.
    pub cursor: u32,
    /// The oldest ledger the RPC keeps.
    pub rpc_oldest: u32,
    /// What to do about it.
    pub remedy: String,
}

/// An active writer making no progress while there is work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stall {
    /// Seconds since the last commit (or since the writer became active).
    pub seconds_without_commit: u64,
    /// What is wrong, in words.
    pub reason: String,
}

/// The state `/health` reports.
#[derive(Clone, Debug, Serialize)]
pub struct WriterState {
    /// Role.
    pub role: Role,
    /// Last committed ledger.
    pub last_ledger: Option<u32>,
    /// Its close time (seconds since the epoch).
    pub last_closed_at: Option<i64>,
    /// The RPC's newest ledger as last seen.
    pub rpc_latest: Option<u32>,
    /// Ledgers behind the RPC.
    pub lag_ledgers: Option<u32>,
    /// Seconds between now and the last committed ledger's close.
    pub lag_seconds: Option<i64>,
    /// Ledgers per second over the last minute.
    pub ledgers_per_second: f64,
    /// Payments per second over the last minute.
    pub payments_per_second: f64,
    /// Set when the RPC no longer has the ledgers after the cursor.
    pub retention_gap: Option<RetentionGap>,
    /// Set when an active writer has not committed for too long while the RPC is ahead.
    pub stalled: Option<Stall>,
    /// The last error, if ingestion is retrying or stopped.
    pub last_error: Option<String>,
}

/// Shared, cheaply cloned status.
#[derive(Clone, Debug)]
pub struct Status {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    state: WriterState,
    window: Vec<(Instant, u64, u64)>,
    /// The last commit, or becoming active, whichever is later.
    progress_at: Instant,
    stall_after: Duration,
}

/// How long an active writer may go without committing while the RPC is ahead.
pub const DEFAULT_STALL_AFTER: Duration = Duration::from_secs(60);

impl Inner {
    /// Lags from the newest facts, and whether the writer is stalled.
    fn refresh(&mut self) {
        let state = &mut self.state;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        state.lag_seconds = state.last_closed_at.map(|closed| (now - closed).max(0));
        if let (Some(latest), Some(last)) = (state.rpc_latest, state.last_ledger) {
            state.lag_ledgers = Some(latest.saturating_sub(last));
        }
        let behind = match (state.rpc_latest, state.last_ledger) {
            (Some(latest), Some(last)) => latest > last,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let idle = self.progress_at.elapsed();
        state.stalled =
            (state.role == Role::Active && behind && idle >= self.stall_after).then(|| {
                let ahead = match (state.rpc_latest, state.last_ledger) {
                    (Some(latest), Some(last)) => format!("{} ledgers", latest - last),
                    _ => "ledgers".to_owned(),
                };
                Stall {
                    seconds_without_commit: idle.as_secs(),
                    reason: format!(
                        "no ledger committed for {}s while the RPC is {ahead} ahead{}",
                        idle.as_secs(),
                        match &state.last_error {
                            Some(error) => format!(" (last error: {error})"),
                            None => String::new(),
                        }
                    ),
                }
            });
        metrics::gauge!("writer_stalled").set(if state.stalled.is_some() { 1.0 } else { 0.0 });
        if let Some(lag) = state.lag_ledgers {
            metrics::gauge!("writer_lag_ledgers").set(f64::from(lag));
        }
        if let Some(lag) = state.lag_seconds {
            metrics::gauge!("writer_lag_seconds").set(lag as f64);
        }
    }
}

const RATE_WINDOW: Duration = Duration::from_secs(60);

impl Default for Status {
    fn default() -> Self {
        Self::new()
    }
}

impl Status {
    /// A fresh status in the starting role.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                state: WriterState {
                    role: Role::Starting,
                    last_ledger: None,
                    last_closed_at: None,
                    rpc_latest: None,
                    lag_ledgers: None,
                    lag_seconds: None,
                    ledgers_per_second: 0.0,
                    payments_per_second: 0.0,
                    retention_gap: None,
                    stalled: None,
                    last_error: None,
                },
                window: Vec::new(),
                progress_at: Instant::now(),
                stall_after: DEFAULT_STALL_AFTER,
            })),
        }
    }

    fn update<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut inner)
    }

    /// A copy of the current state, with lags and stall computed now.
    pub fn snapshot(&self) -> WriterState {
        self.update(|inner| {
            inner.refresh();
            inner.state.clone()
        })
    }

    /// How long an active writer may go without committing while the RPC is ahead.
    pub fn set_stall_after(&self, after: Duration) {
        self.update(|inner| inner.stall_after = after);
    }

    /// Sets the role.
    pub fn set_role(&self, role: Role) {
        metrics::gauge!("writer_active").set(if role == Role::Active { 1.0 } else { 0.0 });
        self.update(|inner| {
            if role == Role::Active && inner.state.role != Role::Active {
                inner.progress_at = Instant::now();
            }
            inner.state.role = role;
            inner.refresh();
        });
    }

    /// Records the RPC's newest ledger (from every fetch).
    pub fn set_rpc_latest(&self, latest: u32) {
        self.update(|inner| {
            inner.state.rpc_latest = Some(latest);
            inner.refresh();
        });
    }

    /// Records a committed batch.
    pub fn committed(
        &self,
        last_ledger: u32,
        last_closed_at: i64,
        ledgers: usize,
        payments: usize,
    ) {
        let now = Instant::now();
        self.update(|inner| {
            inner.progress_at = now;
            let state = &mut inner.state;
            state.last_ledger = Some(last_ledger);
            state.last_closed_at = Some(last_closed_at);
            state.retention_gap = None;
            state.last_error = None;
            if let Some(latest) = state.rpc_latest {
                state.lag_ledgers = Some(latest.saturating_sub(last_ledger));
            }
            inner.window.push((now, ledgers as u64, payments as u64));
            inner
                .window
                .retain(|(at, _, _)| now.duration_since(*at) <= RATE_WINDOW);
            let span = inner.window.first().map_or(1.0, |(first, _, _)| {
                now.duration_since(*first).as_secs_f64().max(1.0)
            });
            let (l, p) = inner
                .window
                .iter()
                .fold((0, 0), |(l, p), (_, dl, dp)| (l + dl, p + dp));
            inner.state.ledgers_per_second = l as f64 / span;
            inner.state.payments_per_second = p as f64 / span;
            metrics::gauge!("writer_ledgers_per_second").set(inner.state.ledgers_per_second);
            metrics::gauge!("writer_payments_per_second").set(inner.state.payments_per_second);
            inner.refresh();
        });
        metrics::gauge!("writer_last_ledger").set(f64::from(last_ledger));
        metrics::counter!("writer_ledgers_total").increment(ledgers as u64);
        metrics::counter!("writer_payments_total").increment(payments as u64);
    }

    /// Records the RPC's retention having moved past the cursor.
    pub fn set_retention_gap(&self, gap: Option<RetentionGap>) {
        metrics::gauge!("writer_retention_gap").set(if gap.is_some() { 1.0 } else { 0.0 });
        self.update(|inner| inner.state.retention_gap = gap);
    }

    /// Records the last error.
    pub fn set_error(&self, error: Option<String>) {
        self.update(|inner| inner.state.last_error = error);
    }
}

async fn health(State(status): State<Status>) -> impl IntoResponse {
    let state = status.snapshot();
    let healthy = !matches!(state.role, Role::Failed)
        && state.retention_gap.is_none()
        && state.stalled.is_none();
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(state))
}

async fn render_metrics(State(status): State<Status>) -> axum::response::Response {
    // Lag and stall gauges are computed at scrape time, like `/health`.
    let _ = status.snapshot();
    shared::telemetry::metrics_endpoint().await
}

/// Serves `/health` and `/metrics` on `addr` until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    status: Status,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    // Install the process-wide recorder now: what is recorded before it exists is lost.
    shared::telemetry::prometheus();
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(render_metrics))
        .with_state(status);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "health server failed");
        }
    });
    Ok(bound)
}
