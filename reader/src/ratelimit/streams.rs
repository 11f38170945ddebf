//! Event streams under the limits: a cap on the streams one client holds open on a pod
//! (`max_streams_per_client`), and the bytes a stream sends counted against the client's
//! byte quota as they go out (in batches), ending the stream once the quota is used up.
//!
//! What must hold: a slot is held exactly as long as the stream's body lives (it is
//! released when the body ends or the client goes away); every byte sent is counted,
//! those of the last unflushed batch included.

use std::collections::HashMap;
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

/// Open streams per client on this pod.
#[derive(Debug)]
pub(super) struct OpenStreams {
    cap: u32,
    open: Mutex<HashMap<Client, u32>>,
}

impl OpenStreams {
    pub(super) fn new(cap: u32) -> Self {
        Self {
            cap,
            open: Mutex::new(HashMap::new()),
        }
    }
}

/// One open stream of a client; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<OpenStreams>,
    client: Client,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.streams.open.lock() {
            if let Some(n) = open.get_mut(&self.client) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(&self.client);
                }
            }
        }
    }
}

impl RateLimiter {
    /// A slot for one more stream of `client`, or None when it holds as many as allowed.
    pub fn open_stream(&self, client: &Client) -> Option<StreamSlot> {
        let mut open = self.streams.open.lock().ok()?;
        let n = open.entry(client.clone()).or_insert(0);
        if self.streams.cap > 0 && *n >= self.streams.cap {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            streams: self.streams.clone(),
            client: client.clone(),
        })
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
