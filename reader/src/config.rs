//! Command line and environment of `reader`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::sources::SourcesConfig;
use crate::state::ServeSettings;

/// Serves payment history from read replicas (never writes).
#[derive(Clone, Debug, Parser)]
#[command(name = "reader", version)]
pub struct ReaderArgs {
    /// Address to listen on.
    #[arg(long, env = "READER_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,
    /// A read replica (repeat, or comma-separate in the environment variable).
    #[arg(
        long = "replica-url",
        env = "READER_REPLICA_URLS",
        value_delimiter = ','
    )]
    pub replica_urls: Vec<String>,
    /// The primary: used only when no replica is usable (every such request is counted).
    #[arg(long, env = "READER_PRIMARY_URL")]
    pub primary_url: Option<String>,
    /// Redis holding the writer's tip announcement (the newest known tip):
    /// `redis://host:port`, or `rediss://host:port` for TLS.
    #[arg(long, env = "READER_REDIS_URL")]
    pub redis_url: Option<String>,
    /// CA certificates (PEM) trusted for `rediss://` URLs (tip announcements and rate
    /// limits) instead of the built-in public roots: for a private CA.
    #[arg(long, env = "READER_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Prefix of the writer's Redis keys.
    #[arg(long, env = "READER_REDIS_PREFIX", default_value = "stellar-payments:")]
    pub redis_prefix: String,
    /// A source further behind the newest known tip than this many ledgers is skipped;
    /// when all are, requests get 503 stale_history.
    #[arg(long, env = "READER_MAX_LAG_LEDGERS", default_value_t = 10)]
    pub max_lag_ledgers: u32,
    /// How often each source's tip is polled, in milliseconds.
    #[arg(long, env = "READER_POLL_MS", default_value_t = 200)]
    pub poll_ms: u64,
    /// Connections per source.
    #[arg(long, env = "READER_POOL_SIZE", default_value_t = 16)]
    pub pool_size: u32,
    /// Statement timeout on every source, in milliseconds.
    #[arg(long, env = "READER_STATEMENT_TIMEOUT_MS", default_value_t = 5_000)]
    pub statement_timeout_ms: u64,
    /// Time budget of a request, in milliseconds.
    #[arg(long, env = "READER_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Requests served at once; beyond this they get 503 at once.
    #[arg(long, env = "READER_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
    /// Open event streams allowed on this pod.
    #[arg(long, env = "READER_MAX_STREAMS", default_value_t = 1_000)]
    pub max_streams: usize,
    /// Bytes of rendered responses kept in memory.
    #[arg(long, env = "READER_CACHE_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub cache_bytes: u64,
    /// Longest life of a cached response, in seconds.
    #[arg(long, env = "READER_CACHE_TTL_SECONDS", default_value_t = 300)]
    pub cache_ttl_seconds: u64,
    /// Cache-Control policy file (TOML; reloaded when it changes). The shipped
    /// defaults apply when absent.
    #[arg(long, env = "READER_CACHE_CONTROL_POLICY")]
    pub cache_control_policy: Option<PathBuf>,
    /// Public base URL for links (default: from the request's Host header).
    #[arg(long, env = "READER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Origins allowed to call the API from a browser (CORS): `*` for any (the
    /// default), or a list of origins such as `https://wallet.example`; empty turns
    /// CORS headers off.
    #[arg(
        long = "cors-allow-origin",
        env = "READER_CORS_ALLOW_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_allow_origins: Vec<String>,
    /// On SIGTERM, how long readiness fails before the listener stops, in milliseconds
    /// (lets load balancers stop sending traffic first).
    #[arg(long, env = "READER_SHUTDOWN_DRAIN_MS", default_value_t = 5_000)]
    pub shutdown_drain_ms: u64,
    /// After the listener stops, how long in-flight responses may take to finish,
    /// in milliseconds; connections still open then (a client that stopped reading)
    /// are abandoned and the process exits.
    #[arg(long, env = "READER_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Rate limits and quotas (TOML: tiers, costs, keys, trusted proxies). Without it,
    /// nothing is limited.
    #[arg(long, env = "READER_RATE_LIMITS")]
    pub rate_limits: Option<PathBuf>,
    /// Redis for the shared rate-limit counters: `redis://host:port`,
    /// `rediss://host:port` (TLS), `redis+cluster://h1:p1,h2:p2` or
    /// `redis+sentinel://h1:p1,h2:p2/service` (default: --redis-url).
    #[arg(long, env = "READER_RATE_LIMIT_REDIS_URL")]
    pub rate_limit_redis_url: Option<String>,
    /// Log JSON lines instead of text.
    #[arg(long, env = "READER_LOG_JSON")]
    pub log_json: bool,
}

impl ReaderArgs {
    /// Source settings; fails when the Redis CA file is unusable.
    pub fn sources(&self) -> Result<SourcesConfig, shared::redistls::RedisTlsError> {
        Ok(SourcesConfig {
            primary_url: self.primary_url.clone(),
            replica_urls: self.replica_urls.clone(),
            pool_size: self.pool_size,
            statement_timeout: Duration::from_millis(self.statement_timeout_ms),
            acquire_timeout: Duration::from_millis(self.statement_timeout_ms.min(2_000)),
            poll_interval: Duration::from_millis(self.poll_ms.max(10)),
            max_lag_ledgers: self.max_lag_ledgers,
            redis_url: self.redis_url.clone(),
            redis_prefix: self.redis_prefix.clone(),
            redis_ca: shared::redistls::RedisCa::load(self.redis_ca_file.as_deref())?,
        })
    }

    /// Serving settings.
    pub fn serve(&self) -> ServeSettings {
        ServeSettings {
            public_url: self.public_url.clone(),
            max_in_flight: self.max_in_flight,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            cors_allow_origins: self
                .cors_allow_origins
                .iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }
}
