//! What the writer is doing, for `/health` and Prometheus `/metrics` on a small HTTP
//! port. Standbys serve it too, so an operator sees both colours of a blue/green pair.

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
                    last_error: None,
                },
                window: Vec::new(),
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

    /// A copy of the current state, with lags computed now.
    pub fn snapshot(&self) -> WriterState {
        self.update(|inner| {
            let mut state = inner.state.clone();
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            state.lag_seconds = state.last_closed_at.map(|closed| (now - closed).max(0));
            state
        })
    }

    /// Sets the role.
    pub fn set_role(&self, role: Role) {
        metrics::gauge!("writer_active").set(if role == Role::Active { 1.0 } else { 0.0 });
        self.update(|inner| inner.state.role = role);
    }

    /// Records the RPC's newest ledger.
    pub fn set_rpc_latest(&self, latest: u32) {
        self.update(|inner| {
            inner.state.rpc_latest = Some(latest);
            inner.state.lag_ledgers = inner.state.last_ledger.map(|l| latest.saturating_sub(l));
            if let Some(lag) = inner.state.lag_ledgers {
                metrics::gauge!("writer_lag_ledgers").set(f64::from(lag));
            }
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
        });
        metrics::gauge!("writer_last_ledger").set(f64::from(last_ledger));
        metrics::counter!("writer_ledgers_total").increment(ledgers as u64);
        metrics::counter!("writer_payments_total").increment(payments as u64);
        let lag = time::OffsetDateTime::now_utc().unix_timestamp() - last_closed_at;
        metrics::gauge!("writer_lag_seconds").set(lag.max(0) as f64);
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
    let healthy = !matches!(state.role, Role::Failed) && state.retention_gap.is_none();
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(state))
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
        .route("/metrics", get(shared::telemetry::metrics_endpoint))
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
