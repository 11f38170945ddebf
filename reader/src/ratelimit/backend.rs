//! The limiter's Redis connection: one server (`redis://`, or `rediss://` over TLS
//! trusting the configured CA, a `ConnectionManager`), a
//! Cluster (`redis+cluster://h1:p1,h2:p2`) or the master a Sentinel names
//! (`redis+sentinel://h1:p1,h2:p2/service`).
//!
//! Connecting happens off the request path: once at start (`connect_now`, awaited by
//! the server before it listens) and then in the background (`keep_connected`), with its
//! own generous timeout, whenever the connection is missing or was lost. A decision
//! only ever uses the connection there is: without one it fails at once (the caller
//! falls open) and wakes the background task.
//!
//! What must hold: no decision waits for a connect, so a slow connect (TLS, Cluster,
//! Sentinel) cannot keep the limiter failing open; concurrent decisions share one
//! multiplexed connection (a cheap clone), so they pipeline rather than queue.

use std::sync::RwLock;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A handle of the current connection (cloning shares it).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Master(MultiplexedConnection),
}

/// Redis as the limiter sees it.
pub(super) struct Redis {
    url: String,
    ca: shared::redistls::RedisCa,
    budget: Duration,
    connect_timeout: Duration,
    current: RwLock<Option<Conn>>,
    wake: Notify,
}

impl Redis {
    /// Not connected yet.
    pub(super) fn new(
        url: &str,
        ca: shared::redistls::RedisCa,
        budget: Duration,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            url: url.to_owned(),
            ca,
            budget,
            connect_timeout,
            current: RwLock::new(None),
            wake: Notify::new(),
        }
    }

    /// Whether this is a Redis Cluster (a script's keys must share one slot).
    pub(super) fn is_cluster(&self) -> bool {
        self.url.starts_with("redis+cluster://")
    }

    /// Whether a connection is held.
    pub(super) fn connected(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }

    async fn connect(&self) -> Result<Conn, redis::RedisError> {
        if let Some(rest) = self.url.strip_prefix("redis+cluster://") {
            let nodes: Vec<String> = rest.split(',').map(|n| format!("redis://{n}")).collect();
            let client = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(self.connect_timeout)
                .response_timeout(self.budget * 4)
                .build()?;
            return Ok(Conn::Cluster(client.get_async_connection().await?));
        }
        if let Some(rest) = self.url.strip_prefix("redis+sentinel://") {
            let (hosts, service) = rest.split_once('/').unwrap_or((rest, "mymaster"));
            let sentinels: Vec<String> = hosts.split(',').map(|n| format!("redis://{n}")).collect();
            // A fresh lookup each time: after a failover the master has moved.
            let mut client = redis::sentinel::SentinelClient::build(
                sentinels,
                service.to_owned(),
                None,
                redis::sentinel::SentinelServerType::Master,
            )?;
            return Ok(Conn::Master(client.get_async_connection().await?));
        }
        let client = self.ca.client(&self.url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.budget * 4)
            .set_number_of_retries(0);
        Ok(Conn::Single(
            ConnectionManager::new_with_config(client, config).await?,
        ))
    }

    /// One connection attempt within the connect timeout; true when connected.
    pub(super) async fn connect_now(&self) -> bool {
        match tokio::time::timeout(self.connect_timeout, self.connect()).await {
            Ok(Ok(conn)) => {
                if let Ok(mut current) = self.current.write() {
                    *current = Some(conn);
                }
                tracing::info!("rate limits: connected to Redis");
                true
            }
            outcome => {
                let error = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no connection within {:?}", self.connect_timeout),
                };
                metrics::counter!("reader_ratelimit_redis_connect_errors_total").increment(1);
                tracing::warn!(%error, "rate limits: cannot connect to Redis; retrying in the background");
                false
            }
        }
    }

    /// Reconnects in the background whenever the connection is missing, backing off up
    /// to 5 s between attempts, until `stop`.
    pub(super) async fn keep_connected(&self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.connected() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wake.notified() => {}
                }
                continue;
            }
            if self.connect_now().await {
                backoff = Duration::from_millis(100);
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Forgets a connection that failed and wakes the background task.
    fn lost(&self) {
        if let Ok(mut current) = self.current.write() {
            *current = None;
        }
        self.wake.notify_one();
    }

    /// Runs a script on the current connection; fails at once without one.
    pub(super) async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, redis::RedisError> {
        let connection = self.current.read().ok().and_then(|c| c.clone());
        let Some(connection) = connection else {
            self.wake.notify_one();
            return Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "not connected (connecting in the background)",
            )));
        };
        let result = match connection {
            Conn::Single(c) => invoke_on(c, &invocation).await,
            Conn::Cluster(c) => invoke_on(c, &invocation).await,
            Conn::Master(c) => invoke_on(c, &invocation).await,
        };
        if let Err(e) = &result {
            // A lost connection is replaced in the background (for Sentinel: after
            // asking the sentinels where the master is now). A slow answer is not a
            // lost connection.
            if !e.is_timeout()
                && (e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal())
            {
                self.lost();
            }
        }
        result
    }
}

async fn invoke_on<C, T>(
    mut connection: C,
    invocation: &redis::ScriptInvocation<'_>,
) -> Result<T, redis::RedisError>
where
    C: ConnectionLike + Send,
    T: redis::FromRedisValue,
{
    invocation.invoke_async(&mut connection).await
}
