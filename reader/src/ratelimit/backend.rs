//! The limiter's Redis connection: one server (`redis://`, a `ConnectionManager`), a
//! Cluster (`redis+cluster://h1:p1,h2:p2`) or the master a Sentinel names
//! (`redis+sentinel://h1:p1,h2:p2/service`).
//!
//! What must hold: concurrent decisions share one multiplexed connection (a cheap clone),
//! so they pipeline rather than queue; only (re)connecting takes the lock; after a
//! failed call on Sentinel the master is looked up again.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use tokio::sync::Mutex;

/// A cloned handle of the current connection.
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Master(MultiplexedConnection),
}

enum Backend {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(
        Box<redis::sentinel::SentinelClient>,
        Option<MultiplexedConnection>,
    ),
}

/// Redis as the limiter sees it.
pub(super) struct Redis {
    url: String,
    budget: Duration,
    backend: Mutex<Option<Backend>>,
}

impl Redis {
    /// Not connected yet.
    pub(super) fn new(url: &str, budget: Duration) -> Self {
        Self {
            url: url.to_owned(),
            budget,
            backend: Mutex::new(None),
        }
    }

    /// Forgets the connection: the next call connects again.
    pub(super) async fn reset(&self) {
        *self.backend.lock().await = None;
    }

    async fn connect(&self) -> Result<Backend, redis::RedisError> {
        if let Some(rest) = self.url.strip_prefix("redis+cluster://") {
            let nodes: Vec<String> = rest.split(',').map(|n| format!("redis://{n}")).collect();
            let client = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(self.budget * 20)
                .response_timeout(self.budget * 4)
                .build()?;
            return Ok(Backend::Cluster(client.get_async_connection().await?));
        }
        if let Some(rest) = self.url.strip_prefix("redis+sentinel://") {
            let (hosts, service) = rest.split_once('/').unwrap_or((rest, "mymaster"));
            let sentinels: Vec<String> = hosts.split(',').map(|n| format!("redis://{n}")).collect();
            let mut client = redis::sentinel::SentinelClient::build(
                sentinels,
                service.to_owned(),
                None,
                redis::sentinel::SentinelServerType::Master,
            )?;
            let connection = client.get_async_connection().await?;
            return Ok(Backend::Sentinel(Box::new(client), Some(connection)));
        }
        let client = redis::Client::open(self.url.as_str())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.budget * 20)
            .set_response_timeout(self.budget * 4)
            .set_number_of_retries(0);
        Ok(Backend::Single(
            ConnectionManager::new_with_config(client, config).await?,
        ))
    }

    /// A handle on the connection: the shared multiplexed connection, cloned (cheap), so
    /// concurrent decisions are pipelined on it rather than waiting for one another.
    /// Only (re)connecting takes the lock.
    async fn connection(&self) -> Result<Conn, redis::RedisError> {
        let mut guard = self.backend.lock().await;
        if guard.is_none() {
            *guard = Some(self.connect().await?);
        }
        match guard.as_mut() {
            Some(Backend::Single(c)) => Ok(Conn::Single(c.clone())),
            Some(Backend::Cluster(c)) => Ok(Conn::Cluster(c.clone())),
            Some(Backend::Sentinel(client, connection)) => {
                if connection.is_none() {
                    *connection = Some(client.get_async_connection().await?);
                }
                connection.clone().map(Conn::Master).ok_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::IoError, "no master"))
                })
            }
            None => Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "no connection",
            ))),
        }
    }

    /// Runs a script on the current connection.
    pub(super) async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, redis::RedisError> {
        let connection = self.connection().await?;
        let result = match connection {
            Conn::Single(c) => invoke_on(c, &invocation).await,
            Conn::Cluster(c) => invoke_on(c, &invocation).await,
            Conn::Master(c) => invoke_on(c, &invocation).await,
        };
        if result.is_err() {
            // Reconnect next time (for Sentinel: ask the sentinels where the master is).
            if let Some(Backend::Sentinel(_, connection)) = self.backend.lock().await.as_mut() {
                *connection = None;
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
