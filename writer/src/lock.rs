//! The single-writer guarantee: the active writer holds a Postgres session-level
//! advisory lock on one dedicated session (the lock session) for as long as it runs,
//! and commits every live batch on that very session, so a writer whose session ended
//! cannot commit anything. Another writer (the other colour of a blue/green pair) waits
//! as a hot standby on one reused connection and takes over when the lock frees.
//!
//! What must hold:
//! - The lock session has TCP keepalives on both ends (client socket options and the
//!   server's `tcp_keepalives_*` / `tcp_user_timeout`), so a dead host or a partition
//!   frees the lock in seconds, not hours; the committer also checks the session's
//!   liveness when idle (see `live`).
//! - A hung holder (a SIGSTOPped process: its kernel still answers keepalives) is noticed
//!   through the lease row `writer_lease`: the holder renews `expires_at` every quarter
//!   of the lease time from a separate connection; a standby that finds the lease expired
//!   while the lease's holder backend still holds the lock terminates that backend
//!   (`pg_terminate_backend`) and takes the lock. Taking the lease bumps its `epoch`, and
//!   every live batch checks the epoch it took in its fencing condition.
//! - A holder that cannot renew its lease for a whole lease time, or finds another epoch
//!   stored, reports the lock lost and stops committing.

use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use shared::pgtls::PgTarget;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

/// The lock key: one writer per database ("STELLARP").
pub const WRITER_LOCK_KEY: i64 = 0x5354_454c_4c41_5250;

/// How the lock and its lease behave.
#[derive(Clone, Debug)]
pub struct LockConfig {
    /// The primary (URL parsed, TLS settings included).
    pub target: PgTarget,
    /// How often a standby tries to take the lock.
    pub poll: Duration,
    /// How long a lease lasts unless renewed.
    pub lease_ttl: Duration,
}

/// A connection with keepalives on both ends, and the task driving it.
struct Session {
    client: Client,
    connection: JoinHandle<()>,
    closed: CancellationToken,
}

impl Session {
    /// Connects with client-side TCP keepalives and asks the server for its own
    /// keepalives and a user timeout on this session.
    async fn open(target: &PgTarget, role: &str) -> Result<Self, tokio_postgres::Error> {
        let mut target = target.clone();
        target
            .config_mut()
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(5)
            .tcp_user_timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(10))
            .application_name(role);
        let (client, connection) = target.connect().await?;
        let closed = CancellationToken::new();
        let signal = closed.clone();
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "writer lock session failed");
            }
            signal.cancel();
        });
        client
            .batch_execute(
                "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 1; \
                 SET tcp_keepalives_count = 5; SET tcp_user_timeout = 10000",
            )
            .await?;
        Ok(Self {
            client,
            connection,
            closed,
        })
    }

    fn is_closed(&self) -> bool {
        self.closed.is_cancelled() || self.client.is_closed()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// A session that may take the writer lock, for commands that need it briefly and
/// without a lease (migrations): see `db::migrate_when_unlocked`.
pub struct LockSession(Session);

impl std::fmt::Debug for LockSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockSession")
            .field("closed", &self.0.is_closed())
            .finish()
    }
}

impl LockSession {
    /// Opens the session (with keepalives, as the lock session of `writer run`).
    pub async fn open(target: &PgTarget) -> Result<Self, tokio_postgres::Error> {
        Ok(Self(Session::open(target, "stellar-writer migrate").await?))
    }

    /// The session, for queries before the lock is taken.
    pub fn client(&self) -> &Client {
        &self.0.client
    }

    /// Takes the lock if it is free (`Ok(Ok(lock))`), or hands the session back.
    pub async fn try_take(self) -> Result<Result<WriterLock, Self>, tokio_postgres::Error> {
        if try_lock(&self.0.client).await? {
            Ok(Ok(WriterLock {
                session: self.0,
                lost: CancellationToken::new(),
                epoch: None,
                renewer: None,
            }))
        } else {
            Ok(Err(self))
        }
    }
}

/// A held writer lock. Dropping it ends the session, which releases the lock.
pub struct WriterLock {
    session: Session,
    lost: CancellationToken,
    epoch: Option<i64>,
    renewer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterLock")
            .field("epoch", &self.epoch)
            .field("lost", &self.lost.is_cancelled())
            .finish()
    }
}

impl WriterLock {
    /// Waits until the lock is held (returns it) or `shutdown` fires (returns `None`),
    /// trying every `config.poll` on one reused connection; `on_standby` runs once when
    /// the lock is first found taken. While waiting, a holder whose lease has expired is
    /// evicted.
    pub async fn acquire(
        config: &LockConfig,
        shutdown: &CancellationToken,
        mut on_standby: impl FnMut(),
    ) -> Result<Option<Self>, tokio_postgres::Error> {
        let mut announced = false;
        let mut session: Option<Session> = None;
        loop {
            if session.as_ref().is_none_or(Session::is_closed) {
                session = match Session::open(&config.target, "stellar-writer lock").await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        // With its causes: "error performing TLS handshake" alone does
                        // not say that the CA or the host name is wrong.
                        let error = format!("{:#}", anyhow::Error::from(e));
                        tracing::warn!(%error, "cannot reach the database for the writer lock; retrying");
                        None
                    }
                };
            }
            if let Some(open) = &session {
                match try_lock(&open.client).await {
                    Ok(true) => {
                        let session = session.take().expect("open session");
                        let lost = CancellationToken::new();
                        let signal = lost.clone();
                        let closed = session.closed.clone();
                        tokio::spawn(async move {
                            closed.cancelled().await;
                            signal.cancel();
                        });
                        return Ok(Some(Self {
                            session,
                            lost,
                            epoch: None,
                            renewer: None,
                        }));
                    }
                    Ok(false) => {
                        if !announced {
                            tracing::info!(
                                "another writer holds the lock: waiting as a hot standby"
                            );
                            on_standby();
                            announced = true;
                        }
                        match evict_expired_holder(&open.client).await {
                            Ok(Some(pid)) => {
                                tracing::warn!(
                                    pid,
                                    "the active writer's lease expired: terminated its lock session"
                                );
                                metrics::counter!("writer_evictions_total").increment(1);
                                // Its backend exits within milliseconds: try again soon.
                                if sleep_or_shutdown(Duration::from_millis(50), shutdown).await {
                                    return Ok(None);
                                }
                                continue;
                            }
                            Ok(None) => {}
                            Err(e) => tracing::debug!(error = %e, "lease check failed"),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "writer lock query failed; reconnecting");
                        session = None;
                    }
                }
            }
            if sleep_or_shutdown(config.poll, shutdown).await {
                return Ok(None);
            }
        }
    }

    /// Takes the lease (a new epoch, this session's backend as holder) and starts
    /// renewing it from `pool` every quarter of `ttl`. Call after migrations, which
    /// create the lease table.
    pub async fn take_lease(
        &mut self,
        pool: Pool,
        ttl: Duration,
    ) -> Result<i64, tokio_postgres::Error> {
        let holder = format!(
            "{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "writer".into()),
            std::process::id()
        );
        let ttl_ms = ttl.as_millis().min(i64::MAX as u128) as i64;
        let row = self
            .session
            .client
            .query_one(
                "INSERT INTO writer_lease (singleton, epoch, holder_pid, holder, renewed_at, expires_at) \
                 VALUES (true, 1, pg_backend_pid(), $1, now(), now() + $2::bigint * interval '1 millisecond') \
                 ON CONFLICT (singleton) DO UPDATE SET epoch = writer_lease.epoch + 1, \
                   holder_pid = EXCLUDED.holder_pid, holder = EXCLUDED.holder, \
                   renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at \
                 RETURNING epoch, holder_pid",
                &[&holder, &ttl_ms],
            )
            .await?;
        let epoch: i64 = row.get(0);
        let pid: i32 = row.get(1);
        self.epoch = Some(epoch);
        self.renewer = Some(tokio::spawn(renew(
            pool,
            epoch,
            pid,
            ttl,
            self.lost.clone(),
        )));
        Ok(epoch)
    }

    /// The lease epoch this writer holds (after `take_lease`).
    pub fn epoch(&self) -> Option<i64> {
        self.epoch
    }

    /// The lock session: live batches commit on it.
    pub fn client(&mut self) -> &mut Client {
        &mut self.session.client
    }

    /// Fires if the lock's session ends under us (database restart, network cut, eviction)
    /// or the lease is lost: the writer must stop writing and compete for the lock again.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether the lock session still answers within `timeout` (and so still holds the
    /// lock, which only ends with it). Call only between transactions.
    pub async fn check_alive(&self, timeout: Duration) -> bool {
        if self.lost.is_cancelled() || self.session.is_closed() {
            return false;
        }
        matches!(
            tokio::time::timeout(timeout, self.session.client.simple_query("SELECT 1")).await,
            Ok(Ok(_))
        )
    }

    /// Marks the lock lost (the session failed a check).
    pub fn mark_lost(&self) {
        self.lost.cancel();
    }

    /// Releases the lock explicitly (dropping does too, by ending the session). The lease
    /// is handed back by expiring it at once, so a standby need not wait for it.
    pub async fn release(mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if let Some(epoch) = self.epoch {
            let _ = self
                .session
                .client
                .execute(
                    "UPDATE writer_lease SET expires_at = now() WHERE epoch = $1",
                    &[&epoch],
                )
                .await;
        }
        let _ = self
            .session
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&WRITER_LOCK_KEY])
            .await;
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

async fn try_lock(client: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK_KEY])
        .await?
        .get(0))
}

/// Terminates the lock session of a holder whose lease has expired, if the lease's
/// holder backend is the one holding the lock (never a newer holder that has not taken
/// its lease yet). Returns the terminated backend's pid.
async fn evict_expired_holder(client: &Client) -> Result<Option<i32>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT l.pid, pg_terminate_backend(l.pid) \
             FROM writer_lease w JOIN pg_locks l ON l.pid = w.holder_pid \
             WHERE w.expires_at < now() AND l.locktype = 'advisory' AND l.granted \
               AND l.classid = (($1::bigint >> 32) & 4294967295)::oid \
               AND l.objid = ($1::bigint & 4294967295)::oid AND l.objsubid = 1",
            &[&WRITER_LOCK_KEY],
        )
        .await?;
    Ok(row.filter(|r| r.get::<_, bool>(1)).map(|r| r.get(0)))
}

/// Renews the lease until it is lost: another epoch stored (taken over), or no renewal
/// confirmed for a whole `ttl` (then the lease may have expired and been taken).
async fn renew(pool: Pool, epoch: i64, pid: i32, ttl: Duration, lost: CancellationToken) {
    let every = ttl / 4;
    let ttl_ms = ttl.as_millis().min(i64::MAX as u128) as i64;
    let mut confirmed = Instant::now();
    loop {
        tokio::select! {
            () = lost.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let sent = Instant::now();
        let renewal = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            client
                .execute(
                    "UPDATE writer_lease SET renewed_at = now(), \
                       expires_at = now() + $3::bigint * interval '1 millisecond' \
                     WHERE epoch = $1 AND holder_pid = $2",
                    &[&epoch, &pid, &ttl_ms],
                )
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(every.max(Duration::from_millis(100)), renewal).await {
            Ok(Ok(1)) => confirmed = sent,
            Ok(Ok(_)) => {
                tracing::error!(epoch, "the writer lease was taken over");
                lost.cancel();
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "writer lease renewal failed"),
            Err(_) => tracing::warn!("writer lease renewal timed out"),
        }
        if confirmed.elapsed() >= ttl {
            tracing::error!(epoch, "the writer lease could not be renewed in time");
            lost.cancel();
            return;
        }
    }
}

/// Sleeps; `true` if `shutdown` fired first.
async fn sleep_or_shutdown(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(pause) => false,
    }
}
