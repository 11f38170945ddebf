//! The rate-limit configuration file (TOML): tiers, credit costs, API keys and the
//! proxies whose forwarding headers are believed.
//!
//! What must hold: a parsed configuration is consistent (an `anonymous` tier exists,
//! every tier's rate, burst and window are positive, every key names a known tier,
//! `expected_pods` is positive); nothing downstream re-checks it.

use std::collections::HashMap;

use ipnet::IpNet;
use serde::Deserialize;

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
    /// How long one attempt to connect to Redis may take, in milliseconds. Connecting
    /// happens at start and in the background, never within a decision's budget.
    #[serde(default = "connect_ms")]
    pub redis_connect_timeout_ms: u64,
    /// Event streams one client may hold open at once across all pods (0: no cap).
    #[serde(default = "streams_per_client")]
    pub max_streams_per_client: u32,
    /// Local batching of very hot clients: sync interval in milliseconds (0: off).
    #[serde(default)]
    pub hot_key_sync_ms: u64,
    /// Decisions per second on one pod above which a client counts as hot.
    #[serde(default = "hot_threshold")]
    pub hot_key_threshold: u32,
    /// Proxies of this deployment (nginx, load balancers) whose `X-Forwarded-For` is
    /// believed: the client is the right-most address in it that is not one of these.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// Cloudflare's edge: `CF-Connecting-IP` is believed only when the request reached
    /// the trusted proxies (or this reader) from one of these. Default: the ranges
    /// Cloudflare publishes (<https://www.cloudflare.com/ips/>); `[]` when not behind
    /// Cloudflare.
    #[serde(default = "cloudflare_ranges")]
    pub cloudflare_ranges: Vec<IpNet>,
    /// IPv4 clients are limited per network of this prefix length (32: per address).
    #[serde(default = "ipv4_prefix")]
    pub ipv4_prefix: u8,
    /// IPv6 clients are limited per network of this prefix length (64: per /64, what
    /// one subscriber usually holds).
    #[serde(default = "ipv6_prefix")]
    pub ipv6_prefix: u8,
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
fn connect_ms() -> u64 {
    5_000
}
fn streams_per_client() -> u32 {
    10
}
fn ipv4_prefix() -> u8 {
    32
}
fn ipv6_prefix() -> u8 {
    64
}

/// Cloudflare's published edge ranges (<https://www.cloudflare.com/ips-v4>,
/// <https://www.cloudflare.com/ips-v6>), the default of `cloudflare_ranges`: 15 IPv4 and
/// 7 IPv6 networks, checked entry for entry on 2026-11-28 against copies of the published
/// lists (the MISP `cloudflare` warning list of 2026-10-14, and a daily mirror of both
/// pages; this machine cannot fetch cloudflare.com itself). Cloudflare changes them
/// rarely; deployments should keep their list in the limits file current.
pub const CLOUDFLARE_RANGES: &[&str] = &[
    "173.245.48.0/20",
    "103.21.244.0/22",
    "103.22.200.0/22",
    "103.31.4.0/22",
    "141.101.64.0/18",
    "108.162.192.0/18",
    "190.93.240.0/20",
    "188.114.96.0/20",
    "197.234.240.0/22",
    "198.41.128.0/17",
    "162.158.0.0/15",
    "104.16.0.0/13",
    "104.24.0.0/14",
    "172.64.0.0/13",
    "131.0.72.0/22",
    "2400:cb00::/32",
    "2606:4700::/32",
    "2803:f800::/32",
    "2405:b500::/32",
    "2405:8100::/32",
    "2a06:98c0::/29",
    "2c0f:f248::/32",
];

fn cloudflare_ranges() -> Vec<IpNet> {
    CLOUDFLARE_RANGES
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect()
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
        if config.ipv4_prefix > 32 || config.ipv6_prefix > 128 {
            return Err(LimitsError::Invalid(
                "ipv4_prefix is at most 32 and ipv6_prefix at most 128".into(),
            ));
        }
        if config.expected_pods == 0 {
            return Err(LimitsError::Invalid(
                "expected_pods must be positive".into(),
            ));
        }
        Ok(config)
    }
}

/// A small configuration for unit tests.
#[cfg(test)]
pub(crate) const TEST_CONFIG: &str = r#"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_is_valid() {
        let c =
            LimitsConfig::parse(include_str!("../../../deploy/rate-limits.toml")).expect("valid");
        assert!(c.tiers.contains_key("partner"));
        assert_eq!(c.hot_key_sync_ms, 0);
        // The shipped list is Cloudflare's published one, as the default.
        assert_eq!(c.cloudflare_ranges, cloudflare_ranges());
    }

    #[test]
    fn cloudflare_ranges_default_to_the_published_list() {
        let c = LimitsConfig::parse(TEST_CONFIG).expect("valid");
        assert_eq!(c.cloudflare_ranges.len(), CLOUDFLARE_RANGES.len());
        assert!(c
            .cloudflare_ranges
            .iter()
            .any(|n| n.contains(&"2606:4700::1".parse::<std::net::IpAddr>().expect("ip"))));
        let off =
            LimitsConfig::parse(&format!("cloudflare_ranges = []\n{TEST_CONFIG}")).expect("valid");
        assert!(off.cloudflare_ranges.is_empty());
        assert_eq!((c.ipv4_prefix, c.ipv6_prefix), (32, 64));
        assert!(LimitsConfig::parse(&format!("ipv6_prefix = 129\n{TEST_CONFIG}")).is_err());
    }

    #[test]
    fn config_parses_and_is_checked() {
        let c = LimitsConfig::parse(TEST_CONFIG).expect("valid");
        assert_eq!(c.costs.large_page, 3);
        assert_eq!(c.costs.stream, 20);
        assert!(LimitsConfig::parse(
            "[tiers.partner]\nrequests = 1\nburst = 1\nwindow_seconds = 1"
        )
        .is_err());
        assert!(
            LimitsConfig::parse(&TEST_CONFIG.replace("tier = \"partner\"", "tier = \"gold\""))
                .is_err()
        );
        assert!(LimitsConfig::parse(&TEST_CONFIG.replace("burst = 4", "burst = 0")).is_err());
    }
}
