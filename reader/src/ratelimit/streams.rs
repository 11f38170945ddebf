//! Event streams under the limits: a cap on the streams one client holds open
//! (`max_streams_per_client`), fleet-wide through Redis, and the bytes a stream sends
//! counted against the client's byte quota as they go out (in batches), ending the
//! stream once the quota is used up.
//!
//! Each open stream is registered in the client's Redis set (`open_stream.lua`) with a
//! lease that its pod renews every `STREAM_TTL / 3`, and removed when it ends; a pod that
//! dies stops renewing, so its streams stop counting after `STREAM_TTL`. When Redis is
//! unavailable the cap is enforced per pod only (fail open, like the other limits).
//!
//! What must hold: a slot is held exactly as long as the stream's body lives (it is
//! released, here and in Redis, when the body ends or the client goes away); every byte
//! sent is counted, those of the last unflushed batch included.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::StreamExt;

use super::{RateLimiter, SharedLimiter};
use crate::clients::Client;

/// Bytes sent are recorded once this many are pending, or this long after the last
/// record.
const FLUSH_BYTES: u64 = 16 * 1024;
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long a registered stream counts without being renewed.
const STREAM_TTL: Duration = Duration::from_secs(30);

/// Open streams of this pod.
#[derive(Debug)]
pub(super) struct OpenStreams {
    cap: u32,
    /// Per client, on this pod (the cap when Redis is unavailable).
    open: Mutex<HashMap<Client, u32>>,
    /// Streams registered in Redis: id -> client (renewed by `keep_streams_open`).
    registered: Mutex<HashMap<String, Client>>,
    /// Makes stream ids unique across pods and restarts.
    pod: u64,
    next: AtomicU64,
}

impl OpenStreams {
    pub(super) fn new(cap: u32) -> Self {
        let mut nonce = std::collections::hash_map::RandomState::new().build_hasher();
        nonce.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        Self {
            cap,
            open: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
            pod: nonce.finish(),
            next: AtomicU64::new(0),
        }
    }
}

/// One open stream of a client; dropping it frees the slot.
pub struct StreamSlot {
    limiter: SharedLimiter,
    client: Client,
    /// Its id in Redis, when registered there.
    id: Option<String>,
}

impl std::fmt::Debug for StreamSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSlot")
            .field("client", &self.client)
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let streams = &self.limiter.streams;
        if let Ok(mut open) = streams.open.lock() {
            if let Some(n) = open.get_mut(&self.client) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&self.client);
                }
            }
        }
        let Some(id) = self.id.take() else {
            return;
        };
        if let Ok(mut registered) = streams.registered.lock() {
            registered.remove(&id);
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (limiter, client) = (self.limiter.clone(), self.client.clone());
            runtime.spawn(async move {
                let key = limiter.streams_key(&client);
                let mut invocation = limiter.scripts.close_stream.prepare_invoke();
                invocation.key(&key).arg(&id);
                if !matches!(
                    tokio::time::timeout(
                        limiter.budget * 4,
                        limiter.redis.invoke::<i64>(invocation)
                    )
                    .await,
                    Ok(Ok(_))
                ) {
                    // It expires after STREAM_TTL anyway.
                    metrics::counter!("reader_ratelimit_redis_errors_total").increment(1);
                }
            });
        }
    }
}

impl RateLimiter {
    fn streams_key(&self, client: &Client) -> String {
        let (rate, _) = self.redis_keys(client);
        format!("{}:streams", rate.trim_end_matches(":rate"))
    }

    /// Registers `id` as an open stream of `client` in Redis, within `cap` (0: renew
    /// without a check). None when Redis did not answer.
    async fn register_stream(&self, client: &Client, id: &str, cap: u32) -> Option<bool> {
        if self.now_ms() < self.retry_redis_at.load(Ordering::Relaxed) {
            return None;
        }
        let key = self.streams_key(client);
        let mut invocation = self.scripts.open_stream.prepare_invoke();
        invocation
            .key(&key)
            .arg(id)
            .arg(cap)
            .arg(STREAM_TTL.as_millis() as u64);
        match tokio::time::timeout(self.budget, self.redis.invoke::<i64>(invocation)).await {
            Ok(Ok(n)) => Some(n == 1),
            _ => {
                metrics::counter!("reader_ratelimit_redis_errors_total").increment(1);
                None
            }
        }
    }

    /// A slot for one more stream of `client`, or None when it holds as many as allowed
    /// (across the fleet while Redis answers, on this pod otherwise).
    pub async fn open_stream(self: &Arc<Self>, client: &Client) -> Option<StreamSlot> {
        let cap = self.streams.cap;
        {
            let mut open = self.streams.open.lock().ok()?;
            let n = open.entry(client.clone()).or_insert(0);
            if cap > 0 && *n >= cap {
                return None;
            }
            *n += 1;
        }
        let mut slot = StreamSlot {
            limiter: self.clone(),
            client: client.clone(),
            id: None,
        };
        if cap == 0 {
            return Some(slot);
        }
        let id = format!(
            "{:016x}:{}",
            self.streams.pod,
            self.streams.next.fetch_add(1, Ordering::Relaxed)
        );
        match self.register_stream(client, &id, cap).await {
            // Over the fleet-wide cap: dropping the slot frees the local count.
            Some(false) => None,
            Some(true) => {
                if let Ok(mut registered) = self.streams.registered.lock() {
                    registered.insert(id.clone(), client.clone());
                }
                slot.id = Some(id);
                Some(slot)
            }
            // Redis unavailable: the per-pod cap only.
            None => Some(slot),
        }
    }

    /// Renews this pod's registered streams every third of their TTL, until `stop`.
    pub async fn keep_streams_open(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if self.streams.cap == 0 {
            return;
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(STREAM_TTL / 3) => {}
            }
            let open: Vec<(String, Client)> = match self.streams.registered.lock() {
                Ok(registered) => registered
                    .iter()
                    .map(|(id, c)| (id.clone(), c.clone()))
                    .collect(),
                Err(_) => continue,
            };
            for (id, client) in open {
                self.register_stream(&client, &id, 0).await;
            }
        }
    }

    /// Streams open on this pod for `client`.
    pub fn open_streams(&self, client: &Client) -> u32 {
        self.streams
            .open
            .lock()
            .ok()
            .and_then(|open| open.get(client).copied())
            .unwrap_or(0)
    }
}

/// Bytes a stream has sent and not yet recorded; recorded when it goes away.
struct Meter {
    limiter: SharedLimiter,
    client: Client,
    quota: u64,
    unrecorded: u64,
    last: Instant,
    _slot: StreamSlot,
}

impl Meter {
    /// Records what is pending; true when the byte quota is now used up.
    async fn flush(&mut self) -> bool {
        let bytes = std::mem::take(&mut self.unrecorded);
        self.last = Instant::now();
        match self.limiter.record_bytes(&self.client, bytes).await {
            Some(total) => self.quota > 0 && total >= self.quota,
            None => false,
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.unrecorded == 0 {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (limiter, client, bytes) =
                (self.limiter.clone(), self.client.clone(), self.unrecorded);
            runtime.spawn(async move { limiter.record_bytes(&client, bytes).await });
        }
    }
}

/// The body of a stream of `client`, holding `slot` while it lives and counting what
/// it sends against the byte quota; it ends once the quota is used up (the client's
/// reconnection is then refused with 429 until the window resets).
pub fn metered(limiter: SharedLimiter, client: Client, slot: StreamSlot, body: Body) -> Body {
    let (_, tier) = limiter.tier(&client);
    let meter = Meter {
        quota: tier.bytes,
        limiter: limiter.clone(),
        client,
        unrecorded: 0,
        last: Instant::now(),
        _slot: slot,
    };
    let chunks = futures_util::stream::unfold(
        (body.into_data_stream(), meter, false),
        |(mut inner, mut meter, exhausted)| async move {
            if exhausted {
                metrics::counter!("reader_ratelimit_streams_ended_total", "policy" => "bytes")
                    .increment(1);
                return None;
            }
            let chunk = inner.next().await?;
            let mut exhausted = false;
            if let Ok(bytes) = &chunk {
                meter.unrecorded += bytes.len() as u64;
                if meter.unrecorded >= FLUSH_BYTES || meter.last.elapsed() >= FLUSH_EVERY {
                    exhausted = meter.flush().await;
                }
            }
            Some((chunk, (inner, meter, exhausted)))
        },
    );
    Body::from_stream(chunks)
}
