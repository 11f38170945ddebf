//! Connections to the primary and the schema migrations (refinery, from `migrations/`).

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Errors reaching or preparing the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is not a valid Postgres connection string.
    #[error("invalid database URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// The pool could not be built or could not hand out a connection.
    #[error("database pool: {0}")]
    Pool(String),
    /// A query failed.
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// Applying migrations failed.
    #[error("migrations: {0}")]
    Migrations(#[from] refinery::Error),
}

/// A connection pool to the primary. `size` bounds the connections the writer holds.
pub fn pool(url: &str, size: usize) -> Result<Pool, DbError> {
    let config: tokio_postgres::Config = url.parse().map_err(DbError::Url)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// Applies every pending migration; returns how many were applied.
pub async fn migrate(pool: &Pool) -> Result<usize, DbError> {
    let mut client = pool.get().await.map_err(|e| DbError::Pool(e.to_string()))?;
    // Processes may start together on a fresh database (a writer and a backfill, or both
    // colours of a blue/green pair): one migrates, the others wait and find it done.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let report = embedded::migrations::runner()
        .run_async(&mut **client)
        .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    Ok(report?.applied_migrations().len())
}

/// The advisory lock key that serialises migrations ("STELLARM").
const MIGRATION_LOCK_KEY: i64 = 0x5354_454c_4c41_524d;
