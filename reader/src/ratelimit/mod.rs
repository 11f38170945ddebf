//! Rate limits and quotas shared by every reader pod through Redis.
//!
//! Each client (API key or IP, see `clients`) belongs to a tier with three limits over
//! one window: a request rate with a burst (GCRA), a quota of response bytes (counted on
//! the real body size once the response is built), and credits (each request costs its
//! route's credits; large pages and streams cost more). Every decision is taken in
//! Redis: an atomic Lua script (`decide_many.lua`) reads the clock of Redis itself (so
//! pods need no clock agreement), checks all three limits and commits the request only
//! if all allow it. Decisions of concurrent requests share a round trip (`batch`): what
//! arrives while one call is in flight goes in the next, still decided one by one. Keys are `{prefix}{client}:rate` and `{prefix}{client}:quota`: the braces
//! are a Redis Cluster hash tag, so a client's keys share a slot; every key carries a
//! TTL, so idle clients leave nothing behind.
//!
//! When Redis is down or slower than its time budget, decisions fail open to a per-pod
//! in-memory limiter holding the request rate divided by the expected pod count (byte
//! and credit quotas are not enforced meanwhile). Every such decision is counted; after a
//! second, Redis is tried again, and decisions go back to it as soon as it answers.
//!
//! This file owns the decision itself; `config` the file format, `scripts` (and the
//! `.lua` files) what runs in Redis, `backend` the connection, `batch` the shared round
//! trips of concurrent decisions, `leases` hot-client batching, `headers` the response headers and `middleware` the HTTP side.
//! What must hold: a decision never waits longer than `redis_budget_ms` on Redis, and
//! never stores an API key itself (only a digest).

mod backend;
mod batch;
mod config;
mod headers;
mod leases;
pub mod middleware;
mod scripts;
mod streams;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use governor::{DefaultKeyedRateLimiter, Quota};
use sha2::{Digest, Sha256};

pub use config::{ApiKey, Costs, LimitsConfig, LimitsError, Tier, CLOUDFLARE_RANGES};
pub use headers::{policy_header, state_header};
pub use streams::StreamSlot;

use crate::clients::Client;

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

/// The shared limiter of one pod.
pub struct RateLimiter {
    config: LimitsConfig,
    keys: HashMap<String, usize>,
    redis: Arc<backend::Redis>,
    /// Started on the first decision (it needs the runtime).
    batcher: OnceLock<batch::Batcher>,
    scripts: scripts::Scripts,
    budget: Duration,
    started: Instant,
    /// Redis is not tried again before this many ms since `started`.
    retry_redis_at: AtomicU64,
    degraded: AtomicBool,
    local: HashMap<String, DefaultKeyedRateLimiter<Client>>,
    hot: leases::HotClients,
    streams: Arc<streams::OpenStreams>,
    metrics: DecisionMetrics,
    /// `RateLimit-Policy` of each tier, built once.
    policy_headers: HashMap<String, HeaderValue>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("prefix", &self.config.prefix)
            .field("degraded", &self.degraded.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The GCRA and quota keys, under `prefix`, of the client with Redis id `id`; the
/// braces are the Cluster hash tag that puts both in one slot.
fn client_keys(prefix: &str, id: &str) -> (String, String) {
    (
        format!("{prefix}{{{id}}}:rate"),
        format!("{prefix}{{{id}}}:quota"),
    )
}

/// How a key is stored: never the key itself.
fn key_id(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..10])
}

/// A tier's GCRA parameters in microseconds: emission period, burst tolerance, window.
fn gcra(tier: &Tier) -> (f64, f64, u64) {
    let window_us = u64::from(tier.window_seconds) * 1_000_000;
    let period_us = window_us as f64 / f64::from(tier.requests);
    let tolerance_us = period_us * f64::from(tier.burst - 1);
    (period_us, tolerance_us, window_us)
}

impl RateLimiter {
    /// A limiter over Redis at `url`: `redis://` or `rediss://` (one server, TLS trusting
    /// `ca`), `redis+cluster://h1:p1,h2:p2` (a cluster) or
    /// `redis+sentinel://h1:p1,h2:p2/service`.
    pub fn new(
        config: LimitsConfig,
        url: &str,
        ca: shared::redistls::RedisCa,
    ) -> Result<Self, LimitsError> {
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
        let budget = Duration::from_millis(config.redis_budget_ms.max(1));
        let connect_timeout = Duration::from_millis(config.redis_connect_timeout_ms.max(1));
        let metrics = DecisionMetrics::new(config.tiers.keys());
        let policy_headers = config
            .tiers
            .iter()
            .filter_map(|(name, tier)| {
                let value = HeaderValue::from_str(&policy_header(tier)).ok()?;
                Some((name.clone(), value))
            })
            .collect();
        Ok(Self {
            policy_headers,
            budget,
            streams: Arc::new(streams::OpenStreams::new(config.max_streams_per_client)),
            config,
            keys,
            redis: Arc::new(backend::Redis::new(url, ca, budget, connect_timeout)),
            batcher: OnceLock::new(),
            scripts: scripts::Scripts::new(),
            started: Instant::now(),
            retry_redis_at: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            local,
            metrics,
            hot: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The first connection to Redis: awaited at start, before the pod serves, so that
    /// decisions find it ready. When it fails, the pod starts with decisions failing
    /// open and `keep_connected` goes on trying.
    pub async fn connect_at_start(&self) -> bool {
        self.redis.connect_now().await
    }

    /// Keeps the Redis connection up in the background until `stop`.
    pub async fn keep_connected(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        self.redis.keep_connected(stop).await;
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

    /// The client's id in Redis (its keys' hash tag).
    fn redis_id(&self, client: &Client) -> String {
        match client {
            Client::Key(i) => format!("k:{}", key_id(&self.config.keys[*i].key)),
            Client::Ip(ip) => format!("ip:{ip}"),
        }
    }

    fn redis_keys(&self, client: &Client) -> (String, String) {
        self.keys_of(&self.redis_id(client))
    }

    /// The GCRA and quota keys of the client with Redis id `id`.
    fn keys_of(&self, id: &str) -> (String, String) {
        client_keys(&self.config.prefix, id)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Decides one request of `client` costing `cost` credits: from the client's local
    /// lease when it is hot and batching is on, else one Redis round trip.
    pub async fn decide(&self, client: &Client, cost: u64) -> Decision {
        let batching = self.config.hot_key_sync_ms > 0;
        let (hot, unsynced) = if batching {
            match self.admit_from_lease(client, cost) {
                leases::FromLease::Admitted(decision) => return decision,
                leases::FromLease::AskRedis { hot, unsynced } => (hot, unsynced),
            }
        } else {
            (false, (0, 0))
        };
        let decision = self.decide_remotely(client, cost, unsynced).await;
        if decision.local {
            // Not recorded after all: keep it for the next sync.
            self.keep_unsynced(client, unsynced);
        }
        if batching && hot && decision.allowed && !decision.local {
            self.first_lease(client, &decision);
        }
        decision
    }

    /// One decision through Redis (or the local fallback when Redis is unavailable).
    async fn decide_remotely(&self, client: &Client, cost: u64, unsynced: (u64, u64)) -> Decision {
        let (tier_name, tier) = self.tier(client);
        if self.now_ms() >= self.retry_redis_at.load(Ordering::Relaxed) {
            let (period_us, tolerance_us, window_us) = gcra(tier);
            let ask = batch::Ask {
                client: self.redis_id(client),
                limits: batch::Limits {
                    period_us,
                    tolerance_us,
                    window_us,
                    byte_quota: tier.bytes,
                    credit_quota: tier.credits,
                },
                values: [cost, unsynced.0, unsynced.1],
                deadline: tokio::time::Instant::now() + self.budget,
            };
            let started = Instant::now();
            let batcher = self.batcher.get_or_init(|| {
                batch::Batcher::start(self.redis.clone(), self.config.prefix.clone())
            });
            match batcher.decide(ask).await {
                Ok(v) => {
                    self.metrics
                        .redis_seconds
                        .get_or_init(|| metrics::histogram!("reader_ratelimit_redis_seconds"))
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
                    self.count(&decision, tier_name);
                    return decision;
                }
                Err(error) => {
                    metrics::counter!("reader_ratelimit_redis_errors_total").increment(1);
                    if !self.degraded.swap(true, Ordering::Relaxed) {
                        tracing::warn!(%error, "rate limits: Redis unavailable; limiting per pod");
                    }
                    self.retry_redis_at
                        .store(self.now_ms() + 1_000, Ordering::Relaxed);
                }
            }
        }
        self.degraded.store(true, Ordering::Relaxed);
        let decision = self.decide_locally(client, tier_name, tier);
        self.count(&decision, tier_name);
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

    /// Adds bytes sent to the client's byte quota (after the response, or as a stream
    /// sends them; not on the request's path). Returns the bytes counted in the
    /// current window, when Redis answered.
    pub async fn record_bytes(&self, client: &Client, bytes: u64) -> Option<u64> {
        if bytes == 0 || self.now_ms() < self.retry_redis_at.load(Ordering::Relaxed) {
            return None;
        }
        let (_, tier) = self.tier(client);
        if tier.bytes == 0 {
            return None;
        }
        let (_, quota_key) = self.redis_keys(client);
        let window_us = u64::from(tier.window_seconds) * 1_000_000;
        let mut invocation = self.scripts.record_bytes.prepare_invoke();
        invocation.key(&quota_key).arg(window_us).arg(bytes);
        match tokio::time::timeout(self.budget * 4, self.redis.invoke::<i64>(invocation)).await {
            Ok(Ok(total)) => Some(total.max(0) as u64),
            _ => {
                metrics::counter!("reader_ratelimit_redis_errors_total").increment(1);
                None
            }
        }
    }

    /// Redis round trips taken for decisions so far, and the decisions they carried
    /// (the second exceeds the first by what batching saved).
    pub fn decision_round_trips(&self) -> (u64, u64) {
        self.batcher
            .get()
            .map_or((0, 0), |b| (b.round_trips(), b.decisions()))
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
        policy_header(tier)
    }

    /// `RateLimit-Policy` of the tier named `tier_name`, as a header value.
    pub fn policy_header_value(&self, tier_name: &str) -> Option<HeaderValue> {
        self.policy_headers.get(tier_name).cloned()
    }

    /// `RateLimit` for a decision.
    pub fn state_header(&self, tier: &Tier, decision: &Decision) -> String {
        state_header(tier, decision)
    }
}

/// Metric handles of the decision path, looked up once (a labelled lookup per decision
/// was a visible share of its cost).
#[derive(Debug, Default)]
struct DecisionMetrics {
    /// Per tier: decisions by (local, allowed) as `2 * local + allowed`.
    decisions: HashMap<String, [OnceLock<metrics::Counter>; 4]>,
    redis_seconds: OnceLock<metrics::Histogram>,
}

impl DecisionMetrics {
    fn new<'a>(tiers: impl Iterator<Item = &'a String>) -> Self {
        Self {
            decisions: tiers.map(|t| (t.clone(), Default::default())).collect(),
            redis_seconds: OnceLock::new(),
        }
    }
}

impl RateLimiter {
    fn count(&self, decision: &Decision, tier: &str) {
        let counter = |tier: &str| {
            metrics::counter!(
                "reader_ratelimit_decisions_total",
                "backend" => if decision.local { "local" } else { "redis" },
                "outcome" => if decision.allowed { "allowed" } else { "refused" },
                "tier" => tier.to_owned(),
            )
        };
        match self.metrics.decisions.get(tier) {
            Some(slots) => slots[usize::from(decision.local) * 2 + usize::from(decision.allowed)]
                .get_or_init(|| counter(tier))
                .increment(1),
            None => counter(tier).increment(1),
        }
    }
}

/// Shared handle.
pub type SharedLimiter = Arc<RateLimiter>;

#[cfg(test)]
mod tests {
    use super::config::TEST_CONFIG;
    use super::*;

    #[test]
    fn headers_follow_the_draft() {
        let limiter = RateLimiter::new(
            LimitsConfig::parse(TEST_CONFIG).expect("valid"),
            "redis://127.0.0.1:1",
            shared::redistls::RedisCa::default(),
        )
        .expect("limiter");
        let tier = limiter.config().tiers["anonymous"].clone();
        assert_eq!(
            limiter.policy_header(&tier),
            "\"requests\";q=4;w=24, \"bytes\";q=1000;qu=\"content-bytes\";w=60"
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
            LimitsConfig::parse(TEST_CONFIG).expect("valid"),
            "redis://127.0.0.1:1",
            shared::redistls::RedisCa::default(),
        )
        .expect("limiter");
        let client = Client::at("203.0.113.1".parse().expect("ip"), 32, 64);
        let (name, tier) = limiter.tier(&client);
        let tier = tier.clone();
        let allowed = (0..10)
            .filter(|_| limiter.decide_locally(&client, name, &tier).allowed)
            .count();
        assert_eq!(allowed, 2, "burst 4 over 2 pods");
    }
}
