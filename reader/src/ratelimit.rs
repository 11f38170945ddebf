//! Rate limits and quotas shared by every reader pod through Redis.
//!
//! Each client (API key or IP, see `clients`) belongs to a tier with three limits over
//! one window: a request rate with a burst (GCRA), a quota of response bytes (counted on
//! the real body size once the response is built), and credits (each request costs its
//! route's credits; large pages and streams cost more). One decision is one Redis round
//! trip: an atomic Lua script reads the clock of Redis itself (so pods need no clock
//! agreement), checks all three limits and commits the request only if all allow it.
//! Keys are `{prefix}{client}:rate` and `{prefix}{client}:quota`: the braces are a Redis
//! Cluster hash tag, so a client's keys share a slot; every key carries a TTL, so idle
//! clients leave nothing behind.
//!
//! When Redis is down or slower than its time budget, decisions fail open to a per-pod
//! in-memory limiter holding the request rate divided by the expected pod count (byte
//! and credit quotas are not enforced meanwhile). Every such decision is counted; after a
//! second, Redis is tried again, and decisions go back to it as soon as it answers.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota};
use ipnet::IpNet;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::Script;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::clients::Client;

/// Limits of one tier.
#[derive(Clone, Debug, Deserialize)]
pub struct Tier {
    /// Requests per window (the sustained rate).
    pub requests: u32,
    /// Requests allowed at once above the sustained rate's spacing (>= 1).
    pub burst: u32,
    /// The window, in seconds.
    pub window_seconds: u32,
    /// Response bytes per window (0: unlimited).
    #[serde(default)]
    pub bytes: u64,
    /// Credits per window (0: unlimited).
    #[serde(default)]
    pub credits: u64,
}

/// Credits per request.
#[derive(Clone, Debug, Deserialize)]
pub struct Costs {
    /// A request's cost unless a rule below applies.
    #[serde(default = "one")]
    pub default: u64,
    /// Per route template (`/payments`, ...), replacing `default`.
    #[serde(default)]
    pub routes: HashMap<String, u64>,
    /// Pages with a `limit` above this are large.
    #[serde(default = "fifty")]
    pub large_page_limit: u32,
    /// What a large page costs.
    #[serde(default = "five")]
    pub large_page: u64,
    /// What opening an event stream costs.
    #[serde(default = "twenty")]
    pub stream: u64,
}

fn one() -> u64 {
    1
}
fn fifty() -> u32 {
    50
}
fn five() -> u64 {
    5
}
fn twenty() -> u64 {
    20
}

impl Default for Costs {
    fn default() -> Self {
        Self {
            default: 1,
            routes: HashMap::new(),
            large_page_limit: 50,
            large_page: 5,
            stream: 20,
        }
    }
}

/// One configured API key.
#[derive(Clone, Debug, Deserialize)]
pub struct ApiKey {
    /// The key as clients send it.
    pub key: String,
    /// Its tier.
    pub tier: String,
}

/// The rate-limit configuration file (TOML).
#[derive(Clone, Debug, Deserialize)]
pub struct LimitsConfig {
    /// Redis key prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// How many reader pods share the limits (the fail-open limiter's divisor).
    #[serde(default = "one_u32")]
    pub expected_pods: u32,
    /// Time budget of one Redis decision, in milliseconds.
    #[serde(default = "five_ms")]
    pub redis_budget_ms: u64,
    /// Local batching of very hot clients: sync interval in milliseconds (0: off).
    #[serde(default)]
    pub hot_key_sync_ms: u64,
    /// Decisions per second on one pod above which a client counts as hot.
    #[serde(default = "hot_threshold")]
    pub hot_key_threshold: u32,
    /// Proxies whose CF-Connecting-IP / X-Forwarded-For headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// Tiers by name; `anonymous` applies to clients without a key.
    pub tiers: HashMap<String, Tier>,
    /// Credits per request.
    #[serde(default)]
    pub costs: Costs,
    /// API keys.
    #[serde(default)]
    pub keys: Vec<ApiKey>,
}

fn default_prefix() -> String {
    "stellar-payments:rl:".into()
}
fn one_u32() -> u32 {
    1
}
fn hot_threshold() -> u32 {
    200
}
fn five_ms() -> u64 {
    5
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// Not TOML of the expected shape.
    #[error("rate limits: {0}")]
    Parse(#[from] toml::de::Error),
    /// Inconsistent values.
    #[error("rate limits: {0}")]
    Invalid(String),
    /// Redis URL.
    #[error("rate limits: redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl LimitsConfig {
    /// Parses and checks a configuration.
    pub fn parse(text: &str) -> Result<Self, LimitsError> {
        let config: Self = toml::from_str(text)?;
        if !config.tiers.contains_key("anonymous") {
            return Err(LimitsError::Invalid(
                "a tier named anonymous is required".into(),
            ));
        }
        for (name, tier) in &config.tiers {
            if tier.requests == 0 || tier.burst == 0 || tier.window_seconds == 0 {
                return Err(LimitsError::Invalid(format!(
                    "tier {name}: requests, burst and window_seconds must be positive"
                )));
            }
        }
        for key in &config.keys {
            if !config.tiers.contains_key(&key.tier) {
                return Err(LimitsError::Invalid(format!(
                    "a key names unknown tier {}",
                    key.tier
                )));
            }
        }
        if config.expected_pods == 0 {
            return Err(LimitsError::Invalid(
                "expected_pods must be positive".into(),
            ));
        }
        Ok(config)
    }
}

/// What a decision says.
#[derive(Clone, Debug)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The policy that refused it.
    pub refused_by: Option<&'static str>,
    /// Seconds until a retry can succeed (when refused).
    pub retry_after: u64,
    /// Requests left in the burst, and seconds until it is full again.
    pub requests: (u64, u64),
    /// Bytes left in the window.
    pub bytes_left: u64,
    /// Credits left in the window.
    pub credits_left: u64,
    /// Seconds until the quota window resets.
    pub window_reset: u64,
    /// Whether the per-pod fallback decided (Redis unavailable).
    pub local: bool,
}

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

/// One decision. ARGV 7 and 8 are requests and credits this pod admitted from a lease
/// and not yet recorded: they are committed first, whatever the decision.
const DECIDE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local byte_quota = tonumber(ARGV[4])
local credit_quota = tonumber(ARGV[5])
local cost = tonumber(ARGV[6])
local pending = tonumber(ARGV[7])
local pending_credits = tonumber(ARGV[8])
local wid = math.floor(now / window)
local window_end = (wid + 1) * window
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local q = redis.call('HMGET', KEYS[2], 'w', 'bytes', 'credits')
local bytes = 0
local credits = 0
local current = tonumber(q[1]) == wid
if current then
  bytes = tonumber(q[2]) or 0
  credits = tonumber(q[3]) or 0
end
local function commit(added_requests, added_credits)
  tat = tat + period * added_requests
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
  if not current then
    redis.call('HSET', KEYS[2], 'w', string.format('%.0f', wid), 'bytes', 0, 'credits', 0)
    current = true
  end
  credits = credits + added_credits
  redis.call('HINCRBY', KEYS[2], 'credits', added_credits)
  redis.call('PEXPIRE', KEYS[2], math.floor(window / 1000) * 2)
end
if pending > 0 or pending_credits > 0 then commit(pending, pending_credits) end
local refused = 0
local retry = 0
if tat - now > tolerance then
  refused = 1
  retry = tat - tolerance - now
end
if refused == 0 and byte_quota > 0 and bytes >= byte_quota then
  refused = 2
  retry = window_end - now
end
if refused == 0 and credit_quota > 0 and credits + cost > credit_quota then
  refused = 3
  retry = window_end - now
end
if refused == 0 then commit(1, cost) end
local remaining = math.floor((now + tolerance - tat) / period) + 1
if refused > 0 or remaining < 0 then remaining = 0 end
return {refused, math.floor(retry), remaining, math.floor(tat - now), math.max(byte_quota - bytes, 0), math.max(credit_quota - credits, 0), math.floor(window_end - now)}
";

/// Records `n` requests admitted locally (hot-client batching) and reports what is left.
const CONSUME: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local byte_quota = tonumber(ARGV[4])
local credit_quota = tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local cost = tonumber(ARGV[7])
local wid = math.floor(now / window)
local window_end = (wid + 1) * window
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + period * n
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1000)
local q = redis.call('HMGET', KEYS[2], 'w', 'bytes', 'credits')
local bytes = 0
local credits = 0
if tonumber(q[1]) == wid then
  bytes = tonumber(q[2]) or 0
  credits = tonumber(q[3]) or 0
else
  redis.call('HSET', KEYS[2], 'w', string.format('%.0f', wid), 'bytes', 0, 'credits', 0)
end
credits = credits + cost
redis.call('HINCRBY', KEYS[2], 'credits', cost)
redis.call('PEXPIRE', KEYS[2], math.floor(window / 1000) * 2)
local remaining = math.floor((now + tolerance - new_tat) / period) + 1
if remaining < 0 then remaining = 0 end
return {remaining, math.floor(new_tat - now), math.max(byte_quota - bytes, 0), math.max(credit_quota - credits, 0), math.floor(window_end - now)}
";

const RECORD_BYTES: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local wid = math.floor(now / window)
if tonumber(redis.call('HGET', KEYS[1], 'w')) ~= wid then
  redis.call('HSET', KEYS[1], 'w', string.format('%.0f', wid), 'bytes', 0, 'credits', 0)
end
redis.call('HINCRBY', KEYS[1], 'bytes', ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.floor(window / 1000) * 2)
return 1
";

/// The shared limiter of one pod.
pub struct RateLimiter {
    config: LimitsConfig,
    keys: HashMap<String, usize>,
    url: String,
    backend: Mutex<Option<Backend>>,
    decide: Script,
    record: Script,
    budget: Duration,
    started: Instant,
    /// Redis is not tried again before this many ms since `started`.
    retry_redis_at: AtomicU64,
    degraded: AtomicBool,
    local: HashMap<String, DefaultKeyedRateLimiter<Client>>,
    consume: Script,
    hot: std::sync::Mutex<HashMap<Client, Hot>>,
}

/// A client's recent decisions on this pod and, when it is hot, its local lease.
#[derive(Debug)]
struct Hot {
    second: Instant,
    decisions: u32,
    lease: Option<Lease>,
}

/// Requests and credits this pod may admit without asking Redis, until the next sync.
#[derive(Debug, Clone)]
struct Lease {
    requests: u64,
    credits: u64,
    pending_requests: u64,
    pending_credits: u64,
    snapshot: Decision,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("prefix", &self.config.prefix)
            .field("degraded", &self.degraded.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// How a key is stored: never the key itself.
fn key_id(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..10])
}

impl RateLimiter {
    /// A limiter over Redis at `url`: `redis://` (one server),
    /// `redis+cluster://h1:p1,h2:p2` (a cluster) or `redis+sentinel://h1:p1,h2:p2/service`.
    pub fn new(config: LimitsConfig, url: &str) -> Result<Self, LimitsError> {
        let keys = config
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.key.clone(), i))
            .collect();
        let pods = config.expected_pods;
        let local = config
            .tiers
            .iter()
            .map(|(name, tier)| {
                let period = Duration::from_secs(u64::from(tier.window_seconds))
                    .mul_f64(f64::from(pods) / f64::from(tier.requests));
                let burst = NonZeroU32::new((tier.burst / pods).max(1)).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(burst);
                (name.clone(), governor::RateLimiter::keyed(quota))
            })
            .collect();
        Ok(Self {
            budget: Duration::from_millis(config.redis_budget_ms.max(1)),
            config,
            keys,
            url: url.to_owned(),
            backend: Mutex::new(None),
            decide: Script::new(DECIDE),
            record: Script::new(RECORD_BYTES),
            started: Instant::now(),
            retry_redis_at: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            local,
            consume: Script::new(CONSUME),
            hot: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Whether the last decision fell back to the local limiter.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Resolves a presented key: Some(client) for a configured key, None for an unknown
    /// one.
    pub fn client_for_key(&self, key: &str) -> Option<Client> {
        self.keys.get(key).map(|i| Client::Key(*i))
    }

    /// The tier a client belongs to.
    pub fn tier(&self, client: &Client) -> (&str, &Tier) {
        let name = match client {
            Client::Key(i) => self.config.keys[*i].tier.as_str(),
            Client::Ip(_) => "anonymous",
        };
        match self.config.tiers.get_key_value(name) {
            Some((n, t)) => (n.as_str(), t),
            None => {
                let (n, t) = self
                    .config
                    .tiers
                    .get_key_value("anonymous")
                    .expect("checked at parse time");
                (n.as_str(), t)
            }
        }
    }

    /// What a request costs.
    pub fn cost(&self, route: &str, limit: Option<u32>, stream: bool) -> u64 {
        let costs = &self.config.costs;
        if stream {
            return costs.stream;
        }
        if limit.is_some_and(|l| l > costs.large_page_limit) {
            return costs.large_page;
        }
        costs.routes.get(route).copied().unwrap_or(costs.default)
    }

    fn redis_keys(&self, client: &Client) -> (String, String) {
        let id = match client {
            Client::Key(i) => format!("k:{}", key_id(&self.config.keys[*i].key)),
            Client::Ip(ip) => format!("ip:{ip}"),
        };
        (
            format!("{}{{{id}}}:rate", self.config.prefix),
            format!("{}{{{id}}}:quota", self.config.prefix),
        )
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
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

    async fn invoke<T: redis::FromRedisValue>(
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

    /// Decides one request of `client` costing `cost` credits: from the client's local
    /// lease when it is hot and batching is on, else one Redis round trip.
    pub async fn decide(&self, client: &Client, cost: u64) -> Decision {
        let batching = self.config.hot_key_sync_ms > 0;
        let mut hot = false;
        let mut unsynced = (0u64, 0u64);
        if batching {
            if let Ok(mut map) = self.hot.lock() {
                let entry = map.entry(client.clone()).or_insert_with(|| Hot {
                    second: Instant::now(),
                    decisions: 0,
                    lease: None,
                });
                if entry.second.elapsed() >= Duration::from_secs(1) {
                    entry.second = Instant::now();
                    entry.decisions = 0;
                }
                entry.decisions = entry.decisions.saturating_add(1);
                hot = entry.decisions >= self.config.hot_key_threshold;
                if let Some(lease) = entry.lease.as_mut() {
                    if lease.requests < 1 || lease.credits < cost {
                        // Exhausted: what was admitted locally goes with this decision.
                        unsynced = (lease.pending_requests, lease.pending_credits);
                        lease.pending_requests = 0;
                        lease.pending_credits = 0;
                    } else {
                        lease.requests -= 1;
                        lease.credits -= cost;
                        lease.pending_requests += 1;
                        lease.pending_credits += cost;
                        let mut decision = lease.snapshot.clone();
                        decision.requests.0 =
                            decision.requests.0.saturating_sub(lease.pending_requests);
                        decision.credits_left =
                            decision.credits_left.saturating_sub(lease.pending_credits);
                        let (tier_name, _) = self.tier(client);
                        metrics::counter!("reader_ratelimit_batched_total", "tier" => tier_name.to_owned())
                            .increment(1);
                        return decision;
                    }
                }
            }
        }
        let decision = self.decide_remotely(client, cost, unsynced).await;
        if decision.local && unsynced != (0, 0) {
            // Not recorded after all: keep it for the next sync.
            if let Ok(mut map) = self.hot.lock() {
                if let Some(lease) = map.get_mut(client).and_then(|h| h.lease.as_mut()) {
                    lease.pending_requests += unsynced.0;
                    lease.pending_credits += unsynced.1;
                }
            }
        }
        if batching && hot && decision.allowed && !decision.local {
            // The first lease only: later ones come from the sync, which knows what was
            // admitted locally meanwhile.
            let leased = self
                .hot
                .lock()
                .ok()
                .and_then(|map| map.get(client).map(|h| h.lease.is_some()))
                .unwrap_or(true);
            if !leased {
                self.grant_lease(client, &decision);
            }
        }
        decision
    }

    /// A lease from what Redis reports left: this pod's share of it.
    fn grant_lease(&self, client: &Client, decision: &Decision) {
        let (_, tier) = self.tier(client);
        if tier.bytes > 0 && decision.bytes_left == 0 {
            return;
        }
        let pods = u64::from(self.config.expected_pods);
        let lease = Lease {
            requests: decision.requests.0 / pods,
            credits: if tier.credits == 0 {
                u64::MAX
            } else {
                decision.credits_left / pods
            },
            pending_requests: 0,
            pending_credits: 0,
            snapshot: decision.clone(),
        };
        if let Ok(mut map) = self.hot.lock() {
            if let Some(entry) = map.get_mut(client) {
                let pending = entry
                    .lease
                    .as_ref()
                    .map_or((0, 0), |l| (l.pending_requests, l.pending_credits));
                // What this pod admitted but Redis has not seen yet comes off the lease:
                // a single pod never admits more than Redis allows, and n pods at most
                // (n - 1) unsynced leases more.
                let mut lease = lease;
                lease.pending_requests = pending.0;
                lease.pending_credits = pending.1;
                lease.requests = lease.requests.saturating_sub(pending.0);
                lease.credits = lease.credits.saturating_sub(pending.1);
                entry.lease = Some(lease);
            }
        }
    }

    /// Every `hot_key_sync_ms`: records what hot clients were admitted locally and
    /// renews their leases from what Redis then reports; forgets idle clients.
    pub async fn sync_hot_clients(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if self.config.hot_key_sync_ms == 0 {
            return;
        }
        let interval = Duration::from_millis(self.config.hot_key_sync_ms);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let batches: Vec<(Client, u64, u64)> = match self.hot.lock() {
                Ok(mut map) => {
                    map.retain(|_, h| {
                        h.second.elapsed() < Duration::from_secs(10)
                            || h.lease.as_ref().is_some_and(|l| l.pending_requests > 0)
                    });
                    map.iter_mut()
                        .filter_map(|(client, h)| {
                            let lease = h.lease.as_mut()?;
                            let batch = (
                                client.clone(),
                                lease.pending_requests,
                                lease.pending_credits,
                            );
                            lease.pending_requests = 0;
                            lease.pending_credits = 0;
                            // Until Redis answers, nothing more is admitted locally.
                            lease.requests = 0;
                            Some(batch)
                        })
                        .collect()
                }
                Err(_) => continue,
            };
            for (client, n, credits) in batches {
                let (_, tier) = self.tier(&client);
                let (rate_key, quota_key) = self.redis_keys(&client);
                let window_us = u64::from(tier.window_seconds) * 1_000_000;
                let period_us = window_us as f64 / f64::from(tier.requests);
                let tolerance_us = period_us * f64::from(tier.burst - 1);
                let mut invocation = self.consume.prepare_invoke();
                invocation
                    .key(&rate_key)
                    .key(&quota_key)
                    .arg(period_us)
                    .arg(tolerance_us)
                    .arg(window_us)
                    .arg(tier.bytes)
                    .arg(tier.credits)
                    .arg(n)
                    .arg(credits);
                let result =
                    tokio::time::timeout(self.budget * 4, self.invoke::<Vec<i64>>(invocation))
                        .await;
                let renewed = match result {
                    Ok(Ok(v)) if v.len() == 5 => {
                        let secs = |us: i64| (us.max(0) as u64).div_ceil(1_000_000);
                        Some(Decision {
                            allowed: true,
                            refused_by: None,
                            retry_after: 0,
                            requests: (v[0].max(0) as u64, secs(v[1])),
                            bytes_left: v[2].max(0) as u64,
                            credits_left: v[3].max(0) as u64,
                            window_reset: secs(v[4]),
                            local: false,
                        })
                    }
                    _ => {
                        metrics::counter!("reader_ratelimit_redis_errors_total").increment(1);
                        None
                    }
                };
                match renewed {
                    Some(decision) => self.grant_lease(&client, &decision),
                    None => {
                        // Redis failed: drop the lease and keep the count for the next try;
                        // decisions go the per-request way (which fails open) meanwhile.
                        if let Ok(mut map) = self.hot.lock() {
                            if let Some(lease) = map.get_mut(&client).and_then(|h| h.lease.as_mut())
                            {
                                lease.pending_requests += n;
                                lease.pending_credits += credits;
                            }
                        }
                    }
                }
            }
        }
    }

    /// One decision through Redis (or the local fallback when Redis is unavailable).
    async fn decide_remotely(&self, client: &Client, cost: u64, unsynced: (u64, u64)) -> Decision {
        let (tier_name, tier) = self.tier(client);
        if self.now_ms() >= self.retry_redis_at.load(Ordering::Relaxed) {
            let (rate_key, quota_key) = self.redis_keys(client);
            let window_us = u64::from(tier.window_seconds) * 1_000_000;
            let period_us = window_us as f64 / f64::from(tier.requests);
            let tolerance_us = period_us * f64::from(tier.burst - 1);
            let mut invocation = self.decide.prepare_invoke();
            invocation
                .key(&rate_key)
                .key(&quota_key)
                .arg(period_us)
                .arg(tolerance_us)
                .arg(window_us)
                .arg(tier.bytes)
                .arg(tier.credits)
                .arg(cost)
                .arg(unsynced.0)
                .arg(unsynced.1);
            let started = Instant::now();
            match tokio::time::timeout(self.budget, self.invoke::<Vec<i64>>(invocation)).await {
                Ok(Ok(v)) if v.len() == 7 => {
                    metrics::histogram!("reader_ratelimit_redis_seconds")
                        .record(started.elapsed().as_secs_f64());
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!("rate limits: Redis is back");
                    }
                    let secs = |us: i64| (us.max(0) as u64).div_ceil(1_000_000);
                    let refused_by = match v[0] {
                        1 => Some("requests"),
                        2 => Some("bytes"),
                        3 => Some("credits"),
                        _ => None,
                    };
                    let decision = Decision {
                        allowed: refused_by.is_none(),
                        refused_by,
                        retry_after: secs(v[1]).max(u64::from(refused_by.is_some())),
                        requests: (v[2].max(0) as u64, secs(v[3])),
                        bytes_left: v[4].max(0) as u64,
                        credits_left: v[5].max(0) as u64,
                        window_reset: secs(v[6]),
                        local: false,
                    };
                    count(&decision, tier_name);
                    return decision;
                }
                outcome => {
                    let error = match outcome {
                        Ok(Ok(_)) => "unexpected script result".to_owned(),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("no answer within {:?}", self.budget),
                    };
                    metrics::counter!("reader_ratelimit_redis_errors_total").increment(1);
                    if !self.degraded.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%error, "rate limits: Redis unavailable; limiting per pod");
                    }
                    // Drop the connection when it failed outright; a timeout keeps it.
                    if !error.starts_with("no answer") {
                        *self.backend.lock().await = None;
                    }
                    self.retry_redis_at
                        .store(self.now_ms() + 1_000, Ordering::Relaxed);
                }
            }
        }
        self.degraded.store(true, Ordering::Relaxed);
        let decision = self.decide_locally(client, tier_name, tier);
        count(&decision, tier_name);
        decision
    }

    fn decide_locally(&self, client: &Client, tier_name: &str, tier: &Tier) -> Decision {
        let limiter = self.local.get(tier_name);
        let verdict = limiter.map(|l| l.check_key(client));
        let pods = u64::from(self.config.expected_pods);
        let refused_wait = match verdict {
            Some(Err(not_until)) => Some(not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))),
            _ => None,
        };
        Decision {
            allowed: refused_wait.is_none(),
            refused_by: refused_wait.map(|_| "requests"),
            retry_after: refused_wait.map_or(0, |w| w.as_secs().max(1)),
            requests: (
                if refused_wait.is_some() {
                    0
                } else {
                    u64::from(tier.burst) / pods
                },
                1,
            ),
            bytes_left: tier.bytes,
            credits_left: tier.credits,
            window_reset: u64::from(tier.window_seconds),
            local: true,
        }
    }

    /// Adds a response's body size to the client's byte quota (after the response; not
    /// on the request's path).
    pub async fn record_bytes(&self, client: &Client, bytes: u64) {
        if bytes == 0 || self.now_ms() < self.retry_redis_at.load(Ordering::Relaxed) {
            return;
        }
        let (tier_name, tier) = self.tier(client);
        if tier.bytes == 0 {
            return;
        }
        let _ = tier_name;
        let (_, quota_key) = self.redis_keys(client);
        let window_us = u64::from(tier.window_seconds) * 1_000_000;
        let mut invocation = self.record.prepare_invoke();
        invocation.key(&quota_key).arg(window_us).arg(bytes);
        match tokio::time::timeout(self.budget * 4, self.invoke::<i64>(invocation)).await {
            Ok(Ok(_)) => {}
            _ => metrics::counter!("reader_ratelimit_redis_errors_total").increment(1),
        }
    }

    /// Forgets idle clients of the local limiter (call now and then).
    pub fn shrink_local(&self) {
        for limiter in self.local.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// `RateLimit-Policy` for a tier (IETF draft-ietf-httpapi-ratelimit-headers).
    pub fn policy_header(&self, tier: &Tier) -> String {
        let mut out = format!("\"requests\";q={};w={}", tier.requests, tier.window_seconds);
        if tier.bytes > 0 {
            out.push_str(&format!(
                ", \"bytes\";q={};qu=\"content-bytes\";w={}",
                tier.bytes, tier.window_seconds
            ));
        }
        if tier.credits > 0 {
            out.push_str(&format!(
                ", \"credits\";q={};w={}",
                tier.credits, tier.window_seconds
            ));
        }
        out
    }

    /// `RateLimit` for a decision.
    pub fn state_header(&self, tier: &Tier, decision: &Decision) -> String {
        let mut out = format!(
            "\"requests\";r={};t={}",
            decision.requests.0, decision.requests.1
        );
        if tier.bytes > 0 {
            out.push_str(&format!(
                ", \"bytes\";r={};t={}",
                decision.bytes_left, decision.window_reset
            ));
        }
        if tier.credits > 0 {
            out.push_str(&format!(
                ", \"credits\";r={};t={}",
                decision.credits_left, decision.window_reset
            ));
        }
        out
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

fn count(decision: &Decision, tier: &str) {
    metrics::counter!(
        "reader_ratelimit_decisions_total",
        "backend" => if decision.local { "local" } else { "redis" },
        "outcome" => if decision.allowed { "allowed" } else { "refused" },
        "tier" => tier.to_owned(),
    )
    .increment(1);
}

/// Shared handle.
pub type SharedLimiter = Arc<RateLimiter>;

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
        expected_pods = 2
        trusted_proxies = ["10.0.0.0/8"]
        [tiers.anonymous]
        requests = 10
        burst = 4
        window_seconds = 60
        bytes = 1000
        [tiers.partner]
        requests = 100
        burst = 10
        window_seconds = 60
        credits = 50
        [costs]
        large_page = 3
        [[keys]]
        key = "secret"
        tier = "partner"
    "#;

    #[test]
    fn the_shipped_example_is_valid() {
        let c = LimitsConfig::parse(include_str!("../../deploy/rate-limits.toml")).expect("valid");
        assert!(c.tiers.contains_key("partner"));
        assert_eq!(c.hot_key_sync_ms, 0);
    }

    #[test]
    fn config_parses_and_is_checked() {
        let c = LimitsConfig::parse(CONFIG).expect("valid");
        assert_eq!(c.costs.large_page, 3);
        assert_eq!(c.costs.stream, 20);
        assert!(LimitsConfig::parse(
            "[tiers.partner]\nrequests = 1\nburst = 1\nwindow_seconds = 1"
        )
        .is_err());
        assert!(
            LimitsConfig::parse(&CONFIG.replace("tier = \"partner\"", "tier = \"gold\"")).is_err()
        );
        assert!(LimitsConfig::parse(&CONFIG.replace("burst = 4", "burst = 0")).is_err());
    }

    #[test]
    fn headers_follow_the_draft() {
        let limiter = RateLimiter::new(
            LimitsConfig::parse(CONFIG).expect("valid"),
            "redis://127.0.0.1:1",
        )
        .expect("limiter");
        let tier = limiter.config().tiers["anonymous"].clone();
        assert_eq!(
            limiter.policy_header(&tier),
            "\"requests\";q=10;w=60, \"bytes\";q=1000;qu=\"content-bytes\";w=60"
        );
        assert_eq!(limiter.cost("/payments", Some(200), false), 3);
        assert_eq!(limiter.cost("/payments", Some(10), true), 20);
        assert_eq!(limiter.cost("/payments", None, false), 1);
        assert!(limiter.client_for_key("secret").is_some());
        assert!(limiter.client_for_key("guess").is_none());
    }

    #[test]
    fn the_local_fallback_divides_by_pods() {
        let limiter = RateLimiter::new(
            LimitsConfig::parse(CONFIG).expect("valid"),
            "redis://127.0.0.1:1",
        )
        .expect("limiter");
        let client = Client::Ip("203.0.113.1".parse().expect("ip"));
        let (name, tier) = limiter.tier(&client);
        let tier = tier.clone();
        let allowed = (0..10)
            .filter(|_| limiter.decide_locally(&client, name, &tier).allowed)
            .count();
        assert_eq!(allowed, 2, "burst 4 over 2 pods");
    }
}
