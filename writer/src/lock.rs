//! The single-writer guarantee: the active writer holds a Postgres session-level
//! advisory lock on a dedicated connection for as long as it runs. Another writer (the
//! other colour of a blue/green pair) polls for the lock as a hot standby and takes over
//! as soon as the active one's session ends (a crash closes its socket, which ends the
//! session and frees the lock). The lock alone is not trusted for correctness: the
//! fencing condition in the store refuses any batch that does not follow the cursor.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

/// The lock key: one writer per database.
pub const WRITER_LOCK_KEY: i64 = 0x5354_454c_4c41_5250; // "STELLARP"

/// A held writer lock. Dropping it ends the session, which releases the lock.
pub struct WriterLock {
    client: tokio_postgres::Client,
    connection: JoinHandle<()>,
    lost: CancellationToken,
}

impl std::fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterLock")
            .field("lost", &self.lost.is_cancelled())
            .finish()
    }
}

impl WriterLock {
    /// Waits until the lock is held (returns it) or `shutdown` fires (returns `None`),
    /// polling every `poll`; `on_standby` runs once when the lock is first found taken.
    pub async fn acquire(
        url: &str,
        poll: Duration,
        shutdown: &CancellationToken,
        mut on_standby: impl FnMut(),
    ) -> Result<Option<Self>, tokio_postgres::Error> {
        let mut announced = false;
        loop {
            match Self::try_acquire(url).await {
                Ok(Some(lock)) => return Ok(Some(lock)),
                Ok(None) => {
                    if !announced {
                        tracing::info!("another writer holds the lock: waiting as a hot standby");
                        on_standby();
                        announced = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the database for the writer lock; retrying")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    async fn try_acquire(url: &str) -> Result<Option<Self>, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        let lost = CancellationToken::new();
        let lost_signal = lost.clone();
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!(error = %e, "writer lock connection failed");
            }
            lost_signal.cancel();
        });
        let held: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK_KEY])
            .await?
            .get(0);
        if held {
            Ok(Some(Self {
                client,
                connection,
                lost,
            }))
        } else {
            connection.abort();
            Ok(None)
        }
    }

    /// Fires if the lock's session ends under us (database restart, network cut): the
    /// writer must stop writing and compete for the lock again.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Releases the lock explicitly (dropping does too, by ending the session).
    pub async fn release(self) {
        let _ = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&WRITER_LOCK_KEY])
            .await;
        self.connection.abort();
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        self.connection.abort();
    }
}
