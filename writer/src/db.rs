//! Connections to the primary and the schema migrations (refinery, from `migrations/`).
//!
//! What must hold: migrations are applied only by a session holding the writer lock
//! (`lock::WRITER_LOCK_KEY`), so a newer binary never changes a table while an older
//! writer commits into it: `writer run` migrates right after taking the lock, and
//! `writer migrate` and `writer backfill` wait for the lock when anything is pending.
//! The migration lock of earlier versions is taken too, inside it, so an older
//! `writer migrate` running at the same moment waits as well.
//!
//! Refinery runs each migration in a transaction. Changes to large tables must not: an
//! index on a big table is an [`OnlineStep`] (`CREATE INDEX CONCURRENTLY`, one statement,
//! outside any transaction), applied after the transactional migrations, once, by name;
//! a build that failed half-way leaves an invalid index, which the next run drops and
//! builds again.
//!
//! Every connection (pool, lock session, migrations) is made from one
//! [`shared::pgtls::PgTarget`], so the URL's `sslmode` and `sslrootcert` apply alike.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use shared::pgtls::{PgTarget, PgTlsError};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::lock::LockSession;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Errors reaching or preparing the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is not a usable Postgres connection string (TLS settings included).
    #[error("{0}")]
    Url(#[from] PgTlsError),
    /// The pool could not be built or could not hand out a connection.
    #[error("database pool: {0}")]
    Pool(String),
    /// A query failed.
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// Applying migrations failed.
    #[error("migrations: {0}")]
    Migrations(#[from] refinery::Error),
    /// Stopped by a signal while waiting for the writer lock.
    #[error("interrupted while waiting for the writer lock")]
    Interrupted,
}

/// A connection pool to the primary. `size` bounds the connections the writer holds.
pub fn pool(url: &str, size: usize) -> Result<Pool, DbError> {
    pool_for(&PgTarget::parse(url)?, size)
}

/// A connection pool to a parsed target.
pub fn pool_for(target: &PgTarget, size: usize) -> Result<Pool, DbError> {
    let manager = Manager::from_config(
        target.config().clone(),
        target.tls(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// A schema change that must run outside a transaction: one statement (typically
/// `CREATE INDEX CONCURRENTLY`), applied once, recorded by `name` in `online_migrations`.
#[derive(Clone, Copy, Debug)]
pub struct OnlineStep {
    /// Unique name, recorded once applied.
    pub name: &'static str,
    /// The index the statement builds, if it builds one: an invalid copy left by a failed
    /// build is dropped before the statement runs again.
    pub index: Option<&'static str>,
    /// The statement.
    pub sql: &'static str,
}

/// The online steps, in order, applied after the transactional migrations. Add a step
/// here (never a transactional migration) for any index on `payments`, `transactions`,
/// the history tables or `ledgers`.
pub const ONLINE_STEPS: &[OnlineStep] = &[];

/// Applies the steps of `steps` not recorded yet, in order, each outside any
/// transaction; returns how many ran.
pub async fn apply_online_steps(client: &Client, steps: &[OnlineStep]) -> Result<usize, DbError> {
    let mut applied = 0;
    for step in steps {
        let done = client
            .query_opt(
                "SELECT 1 FROM online_migrations WHERE name = $1",
                &[&step.name],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        if let Some(index) = step.index {
            let invalid = client
                .query_opt(
                    "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                     WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace \
                       AND NOT i.indisvalid",
                    &[&index],
                )
                .await?
                .is_some();
            if invalid {
                tracing::warn!(index, "dropping an index a failed build left invalid");
                client
                    .batch_execute(&format!("DROP INDEX CONCURRENTLY IF EXISTS \"{index}\""))
                    .await?;
            }
        }
        tracing::info!(step = step.name, "applying an online migration step");
        client.batch_execute(step.sql).await?;
        client
            .execute(
                "INSERT INTO online_migrations (name) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&step.name],
            )
            .await?;
        applied += 1;
    }
    Ok(applied)
}

/// The versions of the embedded migrations the database has not applied yet.
pub async fn pending(client: &Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let applied: Vec<i32> = if exists {
        client
            .query("SELECT version FROM refinery_schema_history", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    Ok(embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version() as i32)
        .filter(|v| !applied.contains(v))
        .collect())
}

/// How many of [`ONLINE_STEPS`] the database has not applied.
async fn pending_online_steps(client: &Client) -> Result<usize, tokio_postgres::Error> {
    if ONLINE_STEPS.is_empty() {
        return Ok(0);
    }
    let exists: bool = client
        .query_one("SELECT to_regclass('online_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(ONLINE_STEPS.len());
    }
    let names: Vec<&str> = ONLINE_STEPS.iter().map(|s| s.name).collect();
    let done: i64 = client
        .query_one(
            "SELECT count(*) FROM online_migrations WHERE name = ANY($1)",
            &[&names],
        )
        .await?
        .get(0);
    Ok(names.len().saturating_sub(done as usize))
}

/// Applies every pending migration on `client`, which must be the session holding the
/// writer lock; returns how many were applied.
pub async fn migrate_holding_lock(client: &mut Client) -> Result<usize, DbError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let report = embedded::migrations::runner().run_async(client).await;
    let online = match &report {
        Ok(_) => apply_online_steps(client, ONLINE_STEPS).await,
        Err(_) => Ok(0),
    };
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    Ok(report?.applied_migrations().len() + online?)
}

/// Applies pending migrations for a command that does not hold the writer lock (`writer
/// migrate`, `writer backfill`): while anything is pending, waits for the writer lock
/// (calling `on_wait` once if a writer holds it), then migrates on the lock's session and
/// releases it. A running writer of the same version applies them itself, so the wait
/// also ends once nothing is pending any more. Returns how many were applied.
pub async fn migrate_when_unlocked(
    url: &str,
    shutdown: &CancellationToken,
    mut on_wait: impl FnMut(),
) -> Result<usize, DbError> {
    let target = PgTarget::parse(url)?;
    let mut session = LockSession::open(&target).await?;
    let mut announced = false;
    loop {
        let pending =
            pending(session.client()).await?.len() + pending_online_steps(session.client()).await?;
        if pending == 0 {
            return Ok(0);
        }
        session = match session.try_take().await? {
            Ok(mut lock) => {
                let applied = migrate_holding_lock(lock.client()).await;
                lock.release().await;
                return applied;
            }
            Err(session) => session,
        };
        if !announced {
            on_wait();
            announced = true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Err(DbError::Interrupted),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// The advisory lock key that serialises migrations ("STELLARM").
const MIGRATION_LOCK_KEY: i64 = 0x5354_454c_4c41_524d;
