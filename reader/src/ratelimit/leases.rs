//! Local batching of very hot clients: a client above `hot_key_threshold` decisions per
//! second on this pod is admitted from a pod-local lease (this pod's share of what Redis
//! reports left), and what the lease admitted is recorded every `hot_key_sync_ms`.
//!
//! What must hold: a single pod never admits more than Redis allows (what it admitted
//! but has not recorded comes off every new lease); admitted requests are never lost
//! (a failed sync keeps them for the next one); a lease is never granted to a client
//! whose byte quota is used up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Decision, RateLimiter};
use crate::clients::Client;

/// A client's recent decisions on this pod and, when it is hot, its local lease.
#[derive(Debug)]
pub(super) struct Hot {
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

/// Hot clients of this pod.
pub(super) type HotClients = std::sync::Mutex<HashMap<Client, Hot>>;

/// What the lease says about one request.
pub(super) enum FromLease {
    /// Admitted locally.
    Admitted(Decision),
    /// Ask Redis; `hot` says whether the client is hot, `unsynced` is what the
    /// exhausted lease admitted and has not recorded (it goes with the decision).
    AskRedis { hot: bool, unsynced: (u64, u64) },
}

impl RateLimiter {
    /// Counts a decision of `client` and admits it from its lease when it has one left.
    pub(super) fn admit_from_lease(&self, client: &Client, cost: u64) -> FromLease {
        let Ok(mut map) = self.hot.lock() else {
            return FromLease::AskRedis {
                hot: false,
                unsynced: (0, 0),
            };
        };
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
        let hot = entry.decisions >= self.config.hot_key_threshold;
        let mut unsynced = (0, 0);
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
                decision.requests.0 = decision.requests.0.saturating_sub(lease.pending_requests);
                decision.credits_left = decision.credits_left.saturating_sub(lease.pending_credits);
                let (tier_name, _) = self.tier(client);
                metrics::counter!("reader_ratelimit_batched_total", "tier" => tier_name.to_owned())
                    .increment(1);
                return FromLease::Admitted(decision);
            }
        }
        FromLease::AskRedis { hot, unsynced }
    }

    /// Puts back what a lease admitted when Redis did not record it after all.
    pub(super) fn keep_unsynced(&self, client: &Client, unsynced: (u64, u64)) {
        if unsynced == (0, 0) {
            return;
        }
        if let Ok(mut map) = self.hot.lock() {
            if let Some(lease) = map.get_mut(client).and_then(|h| h.lease.as_mut()) {
                lease.pending_requests += unsynced.0;
                lease.pending_credits += unsynced.1;
            }
        }
    }

    /// After a decision by Redis for a hot client: its first lease. Later ones come from
    /// the sync, which knows what was admitted locally meanwhile.
    pub(super) fn first_lease(&self, client: &Client, decision: &Decision) {
        let leased = self
            .hot
            .lock()
            .ok()
            .and_then(|map| map.get(client).map(|h| h.lease.is_some()))
            .unwrap_or(true);
        if !leased {
            self.grant_lease(client, decision);
        }
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
                let (period_us, tolerance_us, window_us) = super::gcra(tier);
                let mut invocation = self.scripts.consume.prepare_invoke();
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
                let result = tokio::time::timeout(
                    self.budget * 4,
                    self.redis.invoke::<Vec<i64>>(invocation),
                )
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
                    // Redis failed: keep the count for the next try; decisions go the
                    // per-request way (which fails open) meanwhile.
                    None => self.keep_unsynced(&client, (n, credits)),
                }
            }
        }
    }
}
