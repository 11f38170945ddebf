//! `simnet`: a Stellar RPC simulator that replays recorded ledgers as a live chain.
//!
//! The indexer's writer follows a Stellar RPC (`getLedgers` with cursors) and checks the
//! hash links between ledgers. Tests and load tests cannot use the real network, so this
//! module serves recorded ledgers instead: [`chain::rechain`] turns far-apart recorded
//! ledgers into one contiguous chain, and [`Simnet`] serves it over JSON-RPC 2.0 with the
//! field names, types, limits and error codes of real Stellar RPC ([`rpc`]), closing one
//! more ledger at a time as a live network would. Fault knobs ([`Faults`]: latency, failed
//! requests, truncated metadata, a short retention window, a ledger closing right after
//! a refused request for it) can be set at start and changed while running, from Rust or
//! through the admin endpoints:
//!
//! - `POST /admin/faults` with a JSON object of [`Faults`] fields to change (others keep
//!   their value; `"retention": null` clears it); `GET /admin/faults` reads them;
//! - `POST /admin/close` closes the next ledger now: `{"closed": SEQ|null, "latest": SEQ}`;
//! - `GET /admin/state`: `{"latest", "oldest", "total", "closed"}`.
//!
//! Every other POST, on any path, is JSON-RPC.
//!
//! It serves plain HTTP, or HTTPS with a certificate and key given in
//! [`SimnetConfig::tls`] ([`tls`]): clients see the same API either way.
//!
//! The recorded ledgers can be continued (or replaced) by synthetic ones
//! ([`continuation`]), for load tests that need a long chain.

pub mod chain;
pub mod continuation;
pub mod replica;
pub mod rpc;
mod state;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State as AxumState};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use stellar_xdr::LedgerCloseMeta;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use chain::{load_chain, rechain, recorded_fixture_chain, ChainError};
pub use continuation::{recorded_then_synthetic, synthetic_chain, SyntheticTail};
pub use replica::{pubnet_replica_chain, replicate};
pub use tls::SimnetTls;

use state::{ServedLedger, State};

/// Largest accepted request body, in bytes.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Largest injectable latency, in milliseconds.
pub const MAX_LATENCY_MS: u64 = 60_000;
/// How long [`Simnet::shutdown`] waits for in-flight requests before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Fault injection settings. All default to "no fault".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Delay added before answering each JSON-RPC request, in milliseconds (at most
    /// [`MAX_LATENCY_MS`]).
    pub latency_ms: u64,
    /// Fraction (0..=1) of JSON-RPC requests that fail: alternately HTTP 503 and a
    /// JSON-RPC internal error (-32603).
    pub error_rate: f64,
    /// Fraction (0..=1) of the ledgers served by `getLedgers` whose `metadataXdr` is cut
    /// short (still valid base64, but not a decodable `LedgerCloseMeta`).
    pub truncate_rate: f64,
    /// Serve only the newest this-many closed ledgers (`oldestLedger = latest - N + 1`);
    /// `None` serves every closed ledger.
    pub retention: Option<u32>,
    /// After refusing a `getLedgers` for the ledger that follows the latest (not closed
    /// yet), close that ledger at once: the client's next call finds it closed, as when a
    /// ledger closes between a client's `getLedgers` and the `getHealth` that follows it.
    pub close_after_refused_tip: bool,
}

impl Faults {
    /// Checks the values, as the admin endpoint requires.
    pub fn validate(&self) -> Result<(), String> {
        let rate_ok = |r: f64| (0.0..=1.0).contains(&r);
        if !rate_ok(self.error_rate) {
            return Err(format!(
                "error_rate {} is not within 0..=1",
                self.error_rate
            ));
        }
        if !rate_ok(self.truncate_rate) {
            return Err(format!(
                "truncate_rate {} is not within 0..=1",
                self.truncate_rate
            ));
        }
        if self.retention == Some(0) {
            return Err("retention must be at least 1".into());
        }
        if self.latency_ms > MAX_LATENCY_MS {
            return Err(format!("latency_ms must not exceed {MAX_LATENCY_MS}"));
        }
        Ok(())
    }

    /// The same settings forced into range (rates clamped, NaN as 0, retention at least 1,
    /// latency at most [`MAX_LATENCY_MS`]).
    pub fn sanitized(mut self) -> Self {
        let clamp = |r: f64| if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) };
        self.error_rate = clamp(self.error_rate);
        self.truncate_rate = clamp(self.truncate_rate);
        self.retention = self.retention.map(|r| r.max(1));
        self.latency_ms = self.latency_ms.min(MAX_LATENCY_MS);
        self
    }
}

/// Everything a [`Simnet`] needs. Build with [`SimnetConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct SimnetConfig {
    /// The chain to serve: contiguous sequences (see [`rechain`]), not empty.
    pub chain: Vec<LedgerCloseMeta>,
    /// Passphrase returned by `getNetwork`.
    pub network_passphrase: String,
    /// Ledgers closed at start (at least 1, at most the chain's length).
    pub initially_closed: usize,
    /// Close one more ledger this often; `None` closes only on [`Simnet::close_next`] or
    /// `POST /admin/close`.
    pub close_interval: Option<Duration>,
    /// Initial fault settings.
    pub faults: Faults,
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Seed of the fault injection's random choices.
    pub seed: u64,
    /// Serve HTTPS with this certificate instead of plain HTTP.
    pub tls: Option<SimnetTls>,
}

impl SimnetConfig {
    /// Defaults: pubnet passphrase, 1 ledger closed, no automatic closing, no faults,
    /// `127.0.0.1:0`, plain HTTP.
    pub fn new(chain: Vec<LedgerCloseMeta>) -> Self {
        Self {
            chain,
            network_passphrase: shared::network::PUBNET_PASSPHRASE.to_owned(),
            initially_closed: 1,
            close_interval: None,
            faults: Faults::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: 0x5EED,
            tls: None,
        }
    }
}

/// A running simulator. Dropping it stops the server too, without waiting; prefer
/// [`Simnet::shutdown`].
pub struct Simnet {
    state: Arc<State>,
    addr: SocketAddr,
    https: bool,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    closer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Simnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simnet")
            .field("addr", &self.addr)
            .field("https", &self.https)
            .field("latest", &self.latest())
            .field("oldest", &self.oldest())
            .field("total", &self.total())
            .finish_non_exhaustive()
    }
}

fn invalid_input(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message.into())
}

impl Simnet {
    /// Encodes the chain, binds `config.listen` and starts serving (and closing ledgers,
    /// if `close_interval` is set). Fails if the chain is empty or not contiguous, or the
    /// address cannot be bound.
    pub async fn start(config: SimnetConfig) -> std::io::Result<Simnet> {
        Self::start_streamed(config, std::iter::empty()).await
    }

    /// As [`Simnet::start`], serving `config.chain` followed by `more`: each ledger is
    /// encoded as it comes and its decoded form dropped at once, so a long chain of large
    /// ledgers costs only its encoded size in memory, never the decoded chain as a whole.
    pub async fn start_streamed(
        config: SimnetConfig,
        more: impl Iterator<Item = LedgerCloseMeta> + Send + 'static,
    ) -> std::io::Result<Simnet> {
        let SimnetConfig {
            chain,
            network_passphrase,
            initially_closed,
            close_interval,
            faults,
            listen,
            seed,
            tls,
        } = config;
        let ledgers = tokio::task::spawn_blocking(move || {
            chain
                .into_iter()
                .chain(more)
                .map(|meta| ServedLedger::encode(&meta))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(std::io::Error::other)?
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if ledgers.is_empty() {
            return Err(invalid_input("simnet needs at least one ledger"));
        }
        let first = ledgers[0].sequence;
        for (i, ledger) in ledgers.iter().enumerate() {
            if u64::from(ledger.sequence) != u64::from(first) + i as u64 {
                return Err(invalid_input(format!(
                    "chain is not contiguous: ledger #{i} has sequence {} after {first}; \
                     re-chain it first",
                    ledger.sequence
                )));
            }
        }
        let total = ledgers.len();
        let state = Arc::new(State::new(
            ledgers,
            network_passphrase,
            initially_closed,
            faults,
            seed,
        ));

        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(Arc::clone(&state));
        let https = tls.is_some();
        let stopped = async move {
            let _ = stopped.await;
        };
        let server = match &tls {
            None => tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
            }),
            Some(identity) => {
                let listener = tls::TlsListener::new(listener, identity);
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await
                })
            }
        };
        let closer = close_interval.filter(|d| !d.is_zero()).map(|interval| {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await; // the first tick is immediate
                loop {
                    ticks.tick().await;
                    if state.close_next().is_none() {
                        tracing::info!("all ledgers closed; the chain stops growing");
                        break;
                    }
                }
            })
        });
        tracing::info!(
            %addr,
            https,
            first,
            last = u64::from(first) + total as u64 - 1,
            closed = state.window().latest + 1,
            "simnet serving"
        );
        Ok(Simnet {
            state,
            addr,
            https,
            stop: Some(stop),
            server: Some(server),
            closer,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://127.0.0.1:PORT` (`https://` when serving TLS).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Closes one more ledger now; returns its sequence, or `None` if all were closed.
    pub fn close_next(&self) -> Option<u32> {
        self.state.close_next()
    }

    /// Sequence of the latest closed ledger.
    pub fn latest(&self) -> u32 {
        self.state.ledger(self.state.window().latest).sequence
    }

    /// Sequence of the oldest ledger served (moves with retention).
    pub fn oldest(&self) -> u32 {
        self.state.ledger(self.state.window().oldest).sequence
    }

    /// The newest ledger put in a `getLedgers` answer so far (`None` before the
    /// first): how far a client has fetched, whatever it has done with the ledgers since.
    pub fn served(&self) -> Option<u32> {
        self.state.served()
    }

    /// Number of ledgers in the chain, closed or not.
    pub fn total(&self) -> usize {
        self.state.ledgers.len()
    }

    /// The current fault settings.
    pub fn faults(&self) -> Faults {
        self.state.faults()
    }

    /// Replaces the fault settings (values out of range are clamped).
    pub fn set_faults(&self, faults: Faults) {
        self.state.set_faults(faults);
    }

    /// Stops accepting connections, lets in-flight requests finish (up to a few seconds)
    /// and stops closing ledgers.
    pub async fn shutdown(mut self) {
        self.stop_tasks();
        if let Some(mut server) = self.server.take() {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => tracing::warn!(%error, "simnet server failed"),
                Ok(Err(error)) => tracing::warn!(%error, "simnet server task failed"),
                Err(_) => {
                    tracing::warn!("simnet shutdown timed out; dropping connections");
                    server.abort();
                }
            }
        }
        tracing::info!(addr = %self.addr, "simnet stopped");
    }

    fn stop_tasks(&mut self) {
        if let Some(closer) = self.closer.take() {
            closer.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Simnet {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/admin/state", get(admin_state))
        .route(
            "/admin/faults",
            get(admin_get_faults).post(admin_set_faults),
        )
        .route("/admin/close", post(admin_close))
        .fallback(rpc_endpoint)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

async fn rpc_endpoint(
    AxumState(state): AxumState<Arc<State>>,
    method: Method,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "POST")],
            "JSON-RPC requests must be POSTed\n",
        )
            .into_response();
    }
    let faults = state.faults();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let mut injected = None;
    if state.chance(faults.error_rate) {
        if state.next_failure() % 2 == 0 {
            tracing::debug!("injected HTTP 503");
            return (StatusCode::SERVICE_UNAVAILABLE, "simulated outage\n").into_response();
        }
        tracing::debug!("injected JSON-RPC internal error");
        injected = Some(rpc::RpcError::new(
            rpc::code::INTERNAL_ERROR,
            "simulated internal error",
        ));
    }
    // Building a page of large ledgers copies megabytes: keep it off the I/O threads.
    let reply =
        tokio::task::spawn_blocking(move || rpc::handle_body(&state, &body, injected.as_ref()))
            .await;
    match reply {
        Ok(rpc::Reply::Json(bytes)) => {
            ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
        Ok(rpc::Reply::Nothing) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => {
            tracing::error!(%error, "rpc handler panicked");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `GET /admin/state` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminState {
    /// Latest closed ledger.
    pub latest: u32,
    /// Oldest served ledger.
    pub oldest: u32,
    /// Ledgers in the chain.
    pub total: usize,
    /// Ledgers closed so far.
    pub closed: usize,
}

async fn admin_state(AxumState(state): AxumState<Arc<State>>) -> Json<AdminState> {
    let window = state.window();
    Json(AdminState {
        latest: state.ledger(window.latest).sequence,
        oldest: state.ledger(window.oldest).sequence,
        total: state.ledgers.len(),
        closed: window.latest + 1,
    })
}

async fn admin_get_faults(AxumState(state): AxumState<Arc<State>>) -> Json<Faults> {
    Json(state.faults())
}

async fn admin_set_faults(AxumState(state): AxumState<Arc<State>>, body: Bytes) -> Response {
    let bad = |message: String| (StatusCode::BAD_REQUEST, message + "\n").into_response();
    let patch: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(error) => return bad(format!("expected a JSON object of fault settings: {error}")),
    };
    let mut merged = match serde_json::to_value(state.faults()) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    merged.extend(patch);
    let faults: Faults = match serde_json::from_value(serde_json::Value::Object(merged)) {
        Ok(faults) => faults,
        Err(error) => return bad(format!("invalid fault settings: {error}")),
    };
    if let Err(message) = faults.validate() {
        return bad(message);
    }
    tracing::info!(?faults, "faults changed");
    state.set_faults(faults.clone());
    Json(faults).into_response()
}

async fn admin_close(AxumState(state): AxumState<Arc<State>>) -> Json<serde_json::Value> {
    let closed = state.close_next();
    let latest = state.ledger(state.window().latest).sequence;
    Json(serde_json::json!({ "closed": closed, "latest": latest }))
}

/// The `getNetwork` passphrase for a `--network` value: `pubnet`, `testnet`, or a
/// passphrase.
pub fn passphrase_for(network: &str) -> String {
    match network {
        "pubnet" | "mainnet" | "public" => shared::network::PUBNET_PASSPHRASE.to_owned(),
        "testnet" => shared::network::TESTNET_PASSPHRASE.to_owned(),
        other => other.to_owned(),
    }
}

/// Runs `loadtest simnet` until Ctrl-C or SIGTERM.
pub async fn run(config: SimnetConfig) -> anyhow::Result<()> {
    let signals = shared::shutdown::StopSignals::register()?;
    let simnet = Simnet::start(config).await?;
    tracing::info!(url = %simnet.url(), "ready; Ctrl-C or SIGTERM stops");
    signals.recv().await;
    tracing::info!("stopping");
    simnet.shutdown().await;
    Ok(())
}
