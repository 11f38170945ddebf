//! `writer run`: the long-running writer. Serves health at once, competes for the
//! writer lock (standby until it gets it), migrates, then ingests live until SIGTERM or
//! SIGINT, after which the batch in flight commits or rolls back, the lock is released
//! and the process exits 0.

use std::time::Duration;

use anyhow::Context as _;
use shared::Extractor;
use tokio_util::sync::CancellationToken;

use crate::announce::{AnnounceConfig, TipAnnouncer};
use crate::cli::RunArgs;
use crate::live::{self, LiveConfig, LiveError};
use crate::lock::WriterLock;
use crate::source::{RetryPolicy, RpcSource};
use crate::status::{self, Role, Status};

/// Runs the writer until shutdown.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    // Register the handlers before anything else, so a signal during start-up is a
    // graceful stop, not the default termination.
    let signals = Signals::register()?;
    tokio::spawn(signals.cancel_on_signal(shutdown.clone()));
    let status = Status::new();
    let health = status::serve(args.health_listen, status.clone(), shutdown.clone())
        .await
        .with_context(|| format!("cannot serve health on {}", args.health_listen))?;
    tracing::info!(%health, "health and metrics served");
    run_until_shutdown(args, status, shutdown).await
}

/// The writer's life after its health server is up; public for in-process tests.
pub async fn run_until_shutdown(
    args: RunArgs,
    status: Status,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let network = args.network.network();
    status.set_role(Role::Starting);
    status.set_stall_after(Duration::from_secs(args.stall_after_secs.max(1)));
    let pool = crate::db::pool(&args.database.database_url, 4)?;
    loop {
        let standby_status = status.clone();
        let lock = WriterLock::acquire(
            &args.database.database_url,
            Duration::from_millis(args.standby_poll_ms),
            &shutdown,
            move || standby_status.set_role(Role::Standby),
        )
        .await
        .context("writer lock")?;
        let Some(lock) = lock else {
            status.set_role(Role::Stopping);
            return Ok(());
        };
        status.set_role(Role::Active);
        tracing::info!("writer lock taken: this writer is active");
        let applied = crate::db::migrate(&pool).await.context("migrations")?;
        if applied > 0 {
            tracing::info!(applied, "migrations applied");
        }
        let retry = RetryPolicy {
            max: Duration::from_millis(args.max_backoff_ms),
            max_bad_attempts: args.max_bad_ledger_attempts.max(1),
            ..RetryPolicy::default()
        };
        let source = RpcSource::new(
            &args.rpc_url,
            Duration::from_secs(args.rpc_timeout_secs),
            args.page_budget(),
            Extractor::new(network.clone()),
        )?;
        let announcer =
            TipAnnouncer::start(args.redis_url.clone().map(|redis_url| AnnounceConfig {
                redis_url,
                prefix: args.redis_prefix.clone(),
                timeout: Duration::from_millis(500),
            }));
        let config = LiveConfig {
            network_passphrase: network.passphrase().to_owned(),
            start: args.start,
            poll_interval: Duration::from_millis(args.poll_interval_ms),
            retry,
            retention_recheck: Duration::from_secs(30),
            prefetch_bytes: args.page_budget().in_flight_bytes,
        };
        let outcome = live::run(
            pool.clone(),
            source,
            config,
            status.clone(),
            announcer,
            lock.lost(),
            shutdown.clone(),
        )
        .await;
        match outcome {
            Ok(()) => {
                status.set_role(Role::Stopping);
                lock.release().await;
                tracing::info!("stopped; writer lock released");
                return Ok(());
            }
            Err(LiveError::LockLost) => {
                tracing::error!("writer lock lost; competing for it again");
                status.set_role(Role::Starting);
                drop(lock);
            }
            Err(error) => {
                status.set_role(Role::Failed);
                status.set_error(Some(error.to_string()));
                lock.release().await;
                return Err(error).context("live ingestion stopped");
            }
        }
    }
}

/// SIGTERM and SIGINT, registered up front.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn cancel_on_signal(mut self, shutdown: CancellationToken) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
        shutdown.cancel();
    }
}
