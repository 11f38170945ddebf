//! Tells readers about each new tip through Redis: a PUBLISH on the tip channel and the
//! same JSON under the tip key (for readers that start between announcements). Best
//! effort by design: ingestion hands the newest tip to a watch channel and never waits;
//! a background task publishes the newest value whenever Redis is reachable.
//! `rediss://` URLs connect over TLS (`shared::redistls`).

use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

/// The tip as announced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tip {
    /// Ledger sequence.
    pub sequence: u32,
    /// Ledger hash, hex.
    pub hash: String,
    /// Close time, seconds since the epoch.
    pub closed_at: i64,
}

/// Where announcements go.
#[derive(Clone, Debug)]
pub struct AnnounceConfig {
    /// Redis URL (`redis://` or `rediss://`).
    pub redis_url: String,
    /// Trusted CA certificates for `rediss://`.
    pub ca: shared::redistls::RedisCa,
    /// Key prefix; the channel and key are `{prefix}tip`.
    pub prefix: String,
    /// Time budget of one publication.
    pub timeout: Duration,
}

/// Handle to the announcer task.
#[derive(Debug, Clone)]
pub struct TipAnnouncer {
    newest: watch::Sender<Option<Tip>>,
}

impl TipAnnouncer {
    /// Starts the background publisher (or a no-op announcer without Redis).
    pub fn start(config: Option<AnnounceConfig>) -> Self {
        let (newest, mut changes) = watch::channel(None::<Tip>);
        if let Some(config) = config {
            tokio::spawn(async move {
                let mut connection: Option<redis::aio::MultiplexedConnection> = None;
                while changes.changed().await.is_ok() {
                    let Some(tip) = changes.borrow_and_update().clone() else {
                        continue;
                    };
                    match tokio::time::timeout(
                        config.timeout,
                        publish(&config, &mut connection, &tip),
                    )
                    .await
                    {
                        Ok(Ok(())) => {
                            metrics::counter!("writer_tip_announcements_total", "outcome" => "ok")
                                .increment(1)
                        }
                        Ok(Err(e)) => {
                            connection = None;
                            metrics::counter!("writer_tip_announcements_total", "outcome" => "error").increment(1);
                            tracing::warn!(error = %e, ledger = tip.sequence, "tip announcement failed");
                        }
                        Err(_) => {
                            connection = None;
                            metrics::counter!("writer_tip_announcements_total", "outcome" => "timeout").increment(1);
                            tracing::warn!(ledger = tip.sequence, "tip announcement timed out");
                        }
                    }
                }
            });
        }
        Self { newest }
    }

    /// Hands over the newest tip; returns at once.
    pub fn announce(&self, tip: Tip) {
        self.newest.send_replace(Some(tip));
    }
}

async fn publish(
    config: &AnnounceConfig,
    connection: &mut Option<redis::aio::MultiplexedConnection>,
    tip: &Tip,
) -> redis::RedisResult<()> {
    if connection.is_none() {
        let client = config.ca.client(&config.redis_url)?;
        *connection = Some(client.get_multiplexed_async_connection().await?);
    }
    let Some(con) = connection.as_mut() else {
        return Ok(());
    };
    let key = format!("{}tip", config.prefix);
    let payload = serde_json::to_string(tip).unwrap_or_default();
    redis::pipe()
        .cmd("SET")
        .arg(&key)
        .arg(&payload)
        .ignore()
        .cmd("PUBLISH")
        .arg(&key)
        .arg(&payload)
        .ignore()
        .query_async::<()>(con)
        .await
}
