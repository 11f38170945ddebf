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
use crate::lock::{LockConfig, WriterLock};
use crate::source::{RetryPolicy, RpcSource};
use crate::status::{self, Role, Status};

/// Runs the writer until shutdown.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Register the handlers before anything else, so a signal during start-up is a
    // graceful stop, not the default termination.
    let shutdown = shared::shutdown::stop_token()?;
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
    let target = shared::pgtls::PgTarget::parse(&args.database.database_url)?;
    let redis_ca = shared::redistls::RedisCa::load(args.redis_ca_file.as_deref())?;
    let pool = crate::db::pool_for(&target, 4)?;
    let poll = Duration::from_millis(args.standby_poll_ms);
    let lock_config = LockConfig {
        target,
        poll,
        lease_ttl: Duration::from_millis(args.lease_ttl_ms.max(100)),
    };
    let mut lost_before = false;
    loop {
        if lost_before {
            // A writer that just lost the lock lets a healthy standby take it first.
            tokio::select! {
                () = shutdown.cancelled() => {
                    status.set_role(Role::Stopping);
                    return Ok(());
                }
                () = tokio::time::sleep(poll * 3) => {}
            }
        }
        let standby_status = status.clone();
        let lock = WriterLock::acquire(&lock_config, &shutdown, move || {
            standby_status.set_role(Role::Standby)
        })
        .await
        .context("writer lock")?;
        let Some(mut lock) = lock else {
            status.set_role(Role::Stopping);
            return Ok(());
        };
        tracing::info!("writer lock taken");
        // Migrations run on the lock session: nothing else writes meanwhile.
        let prepared = match crate::db::migrate_holding_lock(lock.client()).await {
            Ok(applied) => {
                if applied > 0 {
                    tracing::info!(applied, "migrations applied");
                }
                lock.take_lease(pool.clone(), lock_config.lease_ttl)
                    .await
                    .map_err(crate::db::DbError::from)
            }
            Err(e) => Err(e),
        };
        match prepared {
            Ok(epoch) => tracing::info!(epoch, "writer lease taken: this writer is active"),
            Err(e) if lock.lost().is_cancelled() || lock.client().is_closed() => {
                tracing::error!(error = %e, "writer lock lost while starting; competing again");
                status.set_role(Role::Starting);
                lost_before = true;
                continue;
            }
            Err(e) => {
                status.set_role(Role::Failed);
                status.set_error(Some(e.to_string()));
                lock.release().await;
                return Err(e).context("migrations");
            }
        }
        status.set_role(Role::Active);
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
                ca: redis_ca.clone(),
                prefix: args.redis_prefix.clone(),
                timeout: Duration::from_millis(500),
            }));
        let config = LiveConfig {
            network_passphrase: network.passphrase().to_owned(),
            start: args.start,
            poll_interval: Duration::from_millis(args.poll_interval_ms),
            retry,
            retention_recheck: Duration::from_millis(args.retention_recheck_ms),
            lock_check: (lock_config.lease_ttl / 4).max(Duration::from_millis(250)),
            max_commit_attempts: args.max_commit_attempts.max(1),
            prefetch_bytes: args.page_budget().in_flight_bytes,
        };
        let outcome = live::run(
            pool.clone(),
            source,
            config,
            status.clone(),
            announcer,
            &mut lock,
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
                lost_before = true;
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
