//! Starting and stopping a reader: sources and their poller, the policy watcher, the
//! listener, and graceful shutdown (readiness fails first, in-flight requests finish,
//! streams end, then the process exits).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cache::new_cache;
use crate::config::ReaderArgs;
use crate::policy::{Policy, PolicyHandle};
use crate::ratelimit::{LimitsConfig, RateLimiter};
use crate::router::router;
use crate::sources::Sources;
use crate::state::{AppState, Inner};

/// A running reader.
#[derive(Debug)]
pub struct RunningReader {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its state (tests inspect sources and the cache).
    pub state: AppState,
    stop: CancellationToken,
    drain: Duration,
    grace: Duration,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningReader {
    /// Begins a graceful shutdown and waits for it: readiness fails, and after the
    /// drain delay the listener stops, in-flight requests finish and streams end.
    pub async fn shutdown(self) -> std::io::Result<()> {
        begin_shutdown(&self.state, &self.stop, self.drain).await;
        self.wait().await
    }

    /// Waits until the server stops by itself (SIGTERM/SIGINT handled by `run`): once
    /// the listener has stopped, at most the shutdown grace for the connections still
    /// open, which are then abandoned.
    pub async fn wait(self) -> std::io::Result<()> {
        let mut served = self.served;
        tokio::select! {
            result = &mut served => return result.unwrap_or(Ok(())),
            _ = self.stop.cancelled() => {}
        }
        match tokio::time::timeout(self.grace, &mut served).await {
            Ok(result) => result.unwrap_or(Ok(())),
            Err(_) => {
                tracing::warn!(
                    grace_ms = self.grace.as_millis() as u64,
                    "connections still open after the shutdown grace; closing them"
                );
                metrics::counter!("reader_shutdown_abandoned_total").increment(1);
                served.abort();
                Ok(())
            }
        }
    }
}

async fn begin_shutdown(state: &AppState, stop: &CancellationToken, drain: Duration) {
    state.inner().ready.store(false, Ordering::Relaxed);
    tracing::info!(
        drain_ms = drain.as_millis() as u64,
        "shutting down: readiness fails now"
    );
    tokio::time::sleep(drain).await;
    state.inner().shutdown.cancel();
    stop.cancel();
}

/// Starts a reader on `args.listen` (port 0 picks a free one).
pub async fn start(args: &ReaderArgs) -> anyhow::Result<RunningReader> {
    let listener = TcpListener::bind(args.listen).await?;
    start_on(listener, args).await
}

/// Starts a reader on an already bound listener.
pub async fn start_on(listener: TcpListener, args: &ReaderArgs) -> anyhow::Result<RunningReader> {
    if args.replica_urls.is_empty() && args.primary_url.is_none() {
        anyhow::bail!("give at least one --replica-url or a --primary-url");
    }
    if args.replica_urls.len() + usize::from(args.primary_url.is_some())
        > crate::sources::MAX_SOURCES
    {
        anyhow::bail!(
            "at most {} history sources (replicas and primary)",
            crate::sources::MAX_SOURCES
        );
    }
    let sources_config = args.sources()?;
    let redis_ca = sources_config.redis_ca.clone();
    let sources = Arc::new(Sources::new(&sources_config)?);
    let stop = CancellationToken::new();
    let shutdown = CancellationToken::new();
    tokio::spawn(sources.clone().poll(sources_config, shutdown.clone()));

    let policy = match &args.cache_control_policy {
        Some(path) => Policy::parse(&std::fs::read_to_string(path)?)?,
        None => Policy::default_policy(),
    };
    let policy = PolicyHandle::new(policy);
    if let Some(path) = &args.cache_control_policy {
        tokio::spawn(
            policy
                .clone()
                .watch(path.clone(), Duration::from_secs(1), shutdown.clone()),
        );
    }
    let limiter = match &args.rate_limits {
        Some(path) => {
            let config = LimitsConfig::parse(&std::fs::read_to_string(path)?)?;
            let url = args
                .rate_limit_redis_url
                .clone()
                .or_else(|| args.redis_url.clone())
                .ok_or_else(|| {
                    anyhow::anyhow!("--rate-limits needs --rate-limit-redis-url or --redis-url")
                })?;
            let limiter = Arc::new(RateLimiter::new(config, &url, redis_ca)?);
            // Connected before serving, not within a decision's budget; then kept
            // connected in the background.
            limiter.connect_at_start().await;
            tokio::spawn(limiter.clone().keep_connected(shutdown.clone()));
            tokio::spawn(limiter.clone().keep_streams_open(shutdown.clone()));
            tokio::spawn(limiter.clone().sync_hot_clients(shutdown.clone()));
            let shrink = limiter.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(60)) => shrink.shrink_local(),
                    }
                }
            });
            Some(limiter)
        }
        None => None,
    };
    // Install the process-wide recorder now: what is recorded before it exists is lost.
    shared::telemetry::prometheus();
    let state = AppState::new(Inner {
        sources,
        cache: new_cache(
            args.cache_bytes,
            Duration::from_secs(args.cache_ttl_seconds),
        ),
        policy,
        settings: args.serve(),
        streams: Arc::new(Semaphore::new(args.max_streams)),
        shutdown: shutdown.clone(),
        ready: AtomicBool::new(true),
        db_queries: AtomicU64::new(0),
        limiter,
        completeness: Default::default(),
        stream_pages: crate::stream::new_stream_pages(),
    });
    // The history went backwards: nothing cached under the old history is served.
    let mut regressions = state.sources.subscribe_regressions();
    let cache = state.cache.clone();
    let stop_watch = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop_watch.cancelled() => return,
                changed = regressions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    cache.invalidate_all();
                }
            }
        }
    });
    let address = listener.local_addr()?;
    let app = router(state.clone());
    let stopped = stop.clone();
    let served = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stopped.cancelled().await })
        .await
    });
    tracing::info!(%address, "reader listening");
    Ok(RunningReader {
        address,
        state,
        stop,
        drain: Duration::from_millis(args.shutdown_drain_ms),
        grace: Duration::from_millis(args.shutdown_grace_ms),
        served,
    })
}

/// Runs a reader until SIGTERM or SIGINT, then shuts it down gracefully.
pub async fn run(args: ReaderArgs) -> anyhow::Result<()> {
    // Handlers first, so a signal during start-up is a graceful stop.
    let signals = shared::shutdown::StopSignals::register()?;
    let reader = start(&args).await?;
    let state = reader.state.clone();
    let stop = reader.stop.clone();
    let drain = reader.drain;
    tokio::spawn(async move {
        signals.recv().await;
        tracing::info!("stop requested");
        begin_shutdown(&state, &stop, drain).await;
    });
    reader.wait().await?;
    tracing::info!("reader stopped");
    Ok(())
}
