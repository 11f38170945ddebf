//! The Cache-Control policy: which header value each route sends for each kind of
//! response, read from a TOML file and reloaded when the file changes. The defaults
//! ship in `deploy/cache-control.toml` (compiled in, used when no file is given).
//!
//! ```toml
//! [[rule]]
//! route = "/ledgers/{sequence}/payments"   # a route template, or "*"
//! class = "immutable"                      # immutable | head | error | stream
//! value = "public, max-age=31536000, immutable"
//! ```
//! The first rule matching (route, class) wins.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::HeaderValue;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// The shipped policy.
pub const DEFAULT_POLICY: &str = include_str!("../../deploy/cache-control.toml");

/// What kind of response a header is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Can never change: a closed ledger's or a transaction's payments, a full
    /// ascending page wholly below the tip.
    Immutable,
    /// Changes as ledgers close (head-of-chain feeds, account histories).
    Head,
    /// Problem documents.
    Error,
    /// Event streams.
    Stream,
}

#[derive(Clone, Debug, Deserialize)]
struct Rule {
    route: String,
    class: Class,
    value: String,
    /// `value` as a header, built once when the policy is parsed (sent on every hit).
    #[serde(skip)]
    header: Option<HeaderValue>,
}

#[derive(Clone, Debug, Deserialize)]
struct PolicyFile {
    #[serde(default)]
    rule: Vec<Rule>,
}

/// A parsed policy.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not TOML of the expected shape.
    #[error("cache-control policy: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value that is not a valid header value.
    #[error("cache-control policy: rule for {route}: invalid header value {value:?}")]
    Value {
        /// The rule's route.
        route: String,
        /// The value.
        value: String,
    },
}

impl Policy {
    /// Parses a policy document.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut file: PolicyFile = toml::from_str(text)?;
        for rule in &mut file.rule {
            rule.header = HeaderValue::from_str(&rule.value).ok();
            if rule.header.is_none() {
                return Err(PolicyError::Value {
                    route: rule.route.clone(),
                    value: rule.value.clone(),
                });
            }
        }
        Ok(Self { rules: file.rule })
    }

    /// The shipped defaults.
    pub fn default_policy() -> Self {
        Self::parse(DEFAULT_POLICY).unwrap_or(Self { rules: Vec::new() })
    }

    fn rule(&self, route: &str, class: Class) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.class == class && (r.route == route || r.route == "*"))
    }

    fn fallback(class: Class) -> &'static str {
        match class {
            Class::Error => "no-store",
            Class::Immutable => "public, max-age=31536000, immutable",
            Class::Head | Class::Stream => "no-cache",
        }
    }

    /// The header value for `route` (a template such as `/payments`) and `class`.
    pub fn value(&self, route: &str, class: Class) -> &str {
        self.rule(route, class)
            .map_or(Self::fallback(class), |r| r.value.as_str())
    }

    /// [`Policy::value`] as a header (no copy: the policy holds it built).
    pub fn header(&self, route: &str, class: Class) -> HeaderValue {
        self.rule(route, class)
            .and_then(|r| r.header.clone())
            .unwrap_or_else(|| HeaderValue::from_static(Self::fallback(class)))
    }
}

/// The current policy, replaced atomically on reload; read on every response without
/// a lock.
#[derive(Debug, Clone)]
pub struct PolicyHandle {
    current: Arc<ArcSwap<Policy>>,
}

impl PolicyHandle {
    /// A handle holding `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(policy)),
        }
    }

    /// The policy in force.
    pub fn current(&self) -> arc_swap::Guard<Arc<Policy>> {
        self.current.load()
    }

    fn replace(&self, policy: Policy) {
        self.current.store(Arc::new(policy));
    }

    /// Watches `path` (by modification time and size, every `interval`) and swaps in
    /// each valid new version; an invalid one is logged and counted, and the policy in
    /// force stays.
    pub async fn watch(self, path: PathBuf, interval: Duration, stop: CancellationToken) {
        let stamp = |path: &PathBuf| -> Option<(SystemTime, u64)> {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        let mut seen = stamp(&path);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let now = stamp(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| Policy::parse(&text).map_err(|e| e.to_string()))
            {
                Ok(policy) => {
                    self.replace(policy);
                    metrics::counter!("reader_policy_reloads_total", "outcome" => "ok")
                        .increment(1);
                    tracing::info!(path = %path.display(), "cache-control policy reloaded");
                }
                Err(e) => {
                    metrics::counter!("reader_policy_reloads_total", "outcome" => "invalid")
                        .increment(1);
                    tracing::warn!(path = %path.display(), error = %e, "cache-control policy refused; keeping the previous one");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_policy_parses_and_covers_every_class() {
        let p = Policy::parse(DEFAULT_POLICY).expect("shipped policy is valid");
        assert!(p
            .value("/ledgers/{sequence}/payments", Class::Immutable)
            .contains("immutable"));
        assert_eq!(p.value("/payments", Class::Error), "no-store");
        assert!(p.value("/payments", Class::Head).contains("max-age"));
        assert!(p
            .value("/accounts/{account_id}/payments", Class::Head)
            .contains("no-cache"));
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(Policy::parse("rule = 3").is_err());
        assert!(
            Policy::parse("[[rule]]\nroute = \"*\"\nclass = \"head\"\nvalue = \"a\\nb\"").is_err()
        );
        assert!(
            Policy::parse("[[rule]]\nroute = \"*\"\nclass = \"sometimes\"\nvalue = \"x\"").is_err()
        );
    }
}
