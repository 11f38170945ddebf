//! What each class of client sends, and how its answers are read: wallets poll their
//! account's history with the ETag of their last answer, explorers read a feed, a
//! ledger's or a transaction's payments and follow `next` links, keyed and abusive
//! clients send their API key, streams stay open and count events.
//!
//! What must hold: every request sent is counted once by the recorder, with its latency
//! from its due time (a followed page is due when the previous page arrived); bodies
//! are read to the end; links in pages are followed on the loaded base URL whatever
//! host they name; nothing a server answers (bad JSON, no links) stops the load.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::time::Instant;

use super::model::{Class, ExplorerKind, TrafficModel};
use super::popularity::Popularity;
use super::stats::{Outcome, Recorder};
use crate::synth::rng::Rng;

/// How long one request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Transaction hashes kept for explorers.
const HASHES_KEPT: usize = 4096;

/// Everything the request tasks share.
#[derive(Debug)]
pub struct Traffic {
    /// The HTTP client (one connection pool).
    pub client: reqwest::Client,
    /// The edge's base URL, without a trailing slash.
    pub base: String,
    /// The traffic model.
    pub model: TrafficModel,
    /// Accounts by popularity.
    pub popularity: Popularity,
    /// The counts.
    pub recorder: Arc<Recorder>,
    /// When the run started (second 0).
    pub run_start: Instant,
    /// The newest `Latest-Ledger` seen.
    pub tip: AtomicU32,
    etags: Mutex<HashMap<String, String>>,
    hashes: Mutex<VecDeque<String>>,
    /// The newest ledgers seen holding payments (from the paging tokens of pages read),
    /// at most the explorer's `ledger_depth`: the ledgers an explorer opens are ones the
    /// history holds, never a ledger in a gap of it.
    ledgers: Mutex<BTreeSet<u32>>,
}

impl Traffic {
    /// Shared state for a run against `base`.
    pub fn new(
        base: &str,
        model: TrafficModel,
        popularity: Popularity,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(1024)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
            model,
            popularity,
            recorder,
            run_start: Instant::now(),
            tip: AtomicU32::new(0),
            etags: Mutex::default(),
            hashes: Mutex::default(),
            ledgers: Mutex::default(),
        })
    }

    /// Remembers transaction hashes for explorers (from feed pages).
    pub fn remember_hashes(&self, page: &serde_json::Value) {
        let Ok(mut hashes) = self.hashes.lock() else {
            return;
        };
        for record in records(page) {
            if let Some(hash) = record.get("transaction_hash").and_then(|h| h.as_str()) {
                if hashes.len() >= HASHES_KEPT {
                    hashes.pop_front();
                }
                hashes.push_back(hash.to_owned());
            }
        }
    }

    /// Remembers the ledgers of a page's records (a paging token is a TOID: the ledger
    /// in its high 32 bits), keeping the newest `ledger_depth`.
    pub fn remember_ledgers(&self, page: &serde_json::Value) {
        let depth = self.model.explorer.ledger_depth as usize;
        let Ok(mut ledgers) = self.ledgers.lock() else {
            return;
        };
        for record in records(page) {
            let token = record
                .get("paging_token")
                .and_then(|t| t.as_str())
                .and_then(|t| t.parse::<i64>().ok());
            if let Some(ledger) = token.and_then(|t| u32::try_from(t >> 32).ok()) {
                ledgers.insert(ledger);
            }
        }
        while ledgers.len() > depth {
            ledgers.pop_first();
        }
    }

    /// A ledger among those remembered, uniformly.
    fn a_ledger(&self, rng: &mut Rng) -> Option<u32> {
        let ledgers = self.ledgers.lock().ok()?;
        (!ledgers.is_empty())
            .then(|| ledgers.iter().nth(rng.index(ledgers.len())).copied())
            .flatten()
    }

    fn a_hash(&self, rng: &mut Rng) -> Option<String> {
        let hashes = self.hashes.lock().ok()?;
        (!hashes.is_empty()).then(|| hashes[rng.index(hashes.len())].clone())
    }
}

/// The records of a Horizon page.
pub fn records(page: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    page.pointer("/_embedded/records")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
}

/// The path and query of a page's `next` link.
pub fn next_path(page: &serde_json::Value) -> Option<String> {
    let href = page.pointer("/_links/next/href")?.as_str()?;
    let rest = href.split_once("://").map_or(href, |(_, r)| r);
    let at = rest.find('/')?;
    Some(rest[at..].to_owned())
}

/// What one request got.
struct Answer {
    status: Option<u16>,
    body: Option<bytes::Bytes>,
}

/// Sends one request (`path` on the base URL) and counts it, latency from `due`.
async fn fetch(
    traffic: &Traffic,
    class: Class,
    phase: usize,
    due: Instant,
    path: &str,
    headers: &[(&str, &str)],
    etag_of: Option<&str>,
) -> Answer {
    let mut request = traffic
        .client
        .get(format!("{}{path}", traffic.base))
        .timeout(REQUEST_TIMEOUT);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let answer = async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let cache = header("x-cache-status");
        let latest = header("latest-ledger").and_then(|v| v.parse::<u32>().ok());
        let etag = header("etag");
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, cache, latest, etag, body))
    }
    .await;
    let second = due.saturating_duration_since(traffic.run_start).as_secs() as u32;
    let latency = due.elapsed();
    match answer {
        Ok((status, cache, latest, etag, body)) => {
            if let Some(latest) = latest {
                traffic.tip.fetch_max(latest, Ordering::Relaxed);
            }
            if let (Some(account), Some(etag), 200) = (etag_of, etag, status) {
                if let Ok(mut etags) = traffic.etags.lock() {
                    etags.insert(account.to_owned(), etag);
                }
            }
            traffic.recorder.record(&Outcome {
                class,
                phase,
                second,
                latency,
                status: Some(status),
                cache,
                latest,
            });
            Answer {
                status: Some(status),
                body: Some(body),
            }
        }
        Err(_) => {
            traffic.recorder.record(&Outcome {
                class,
                phase,
                second,
                latency,
                status: None,
                cache: None,
                latest: None,
            });
            Answer {
                status: None,
                body: None,
            }
        }
    }
}

/// One arrival of `class`, due at `due`, in `phase`; `seed` drives its choices. It is
/// counted in flight when this is called (by the dispatcher, before the request's task
/// first runs), so a phase that waits for nothing in flight never ends before its last
/// arrival is answered.
pub fn arrival(
    traffic: Arc<Traffic>,
    class: Class,
    phase: usize,
    due: Instant,
    seed: u64,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    traffic.recorder.in_flight.fetch_add(1, Ordering::Relaxed);
    async move {
        arrive(&traffic, class, phase, due, seed).await;
        traffic.recorder.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn arrive(traffic: &Arc<Traffic>, class: Class, phase: usize, due: Instant, seed: u64) {
    let mut rng = Rng::new(seed);
    let t: &Traffic = traffic;
    match class {
        Class::Wallet => {
            let account = t.popularity.draw(&mut rng).to_owned();
            let path = format!(
                "/accounts/{account}/payments?order=desc&limit={}",
                t.model.wallet.limit
            );
            let etag = t.etags.lock().ok().and_then(|e| e.get(&account).cloned());
            let headers: Vec<(&str, &str)> = etag
                .as_deref()
                .map(|e| ("if-none-match", e))
                .into_iter()
                .collect();
            fetch(t, class, phase, due, &path, &headers, Some(&account)).await;
        }
        Class::Explorer => explore(t, phase, due, &mut rng).await,
        Class::Keyed => {
            let keys = &t.model.keyed.keys;
            let key = &keys[rng.index(keys.len())];
            let account = t.popularity.draw(&mut rng).to_owned();
            let path = format!(
                "/accounts/{account}/payments?order=desc&limit={}",
                t.model.keyed.limit
            );
            fetch(t, class, phase, due, &path, &[("x-api-key", key)], None).await;
        }
        Class::Abusive => {
            let keys = &t.model.abusive.keys;
            let key = &keys[rng.index(keys.len())];
            let path = "/payments?order=desc&limit=200";
            fetch(t, class, phase, due, path, &[("x-api-key", key)], None).await;
        }
        Class::Constant => {
            fetch(t, class, phase, due, "/constant", &[], None).await;
        }
        Class::Stream => {}
    }
}

/// An explorer's visit: a first page, then `next` links.
async fn explore(t: &Traffic, phase: usize, due: Instant, rng: &mut Rng) {
    let e = &t.model.explorer;
    let first = match e.pick(rng.unit()) {
        ExplorerKind::Ledger => match t.a_ledger(rng) {
            Some(ledger) => format!("/ledgers/{ledger}/payments?limit={}", e.limit),
            None => format!("/payments?order=desc&limit={}", e.limit),
        },
        ExplorerKind::Transaction => match t.a_hash(rng) {
            Some(hash) => format!("/transactions/{hash}/payments?limit={}", e.limit),
            None => format!("/payments?order=desc&limit={}", e.limit),
        },
        _ => format!("/payments?order=desc&limit={}", e.limit),
    };
    let mut path = first;
    let mut due = due;
    for page_number in 0..e.max_pages {
        let answer = fetch(t, Class::Explorer, phase, due, &path, &[], None).await;
        let (Some(200), Some(body)) = (answer.status, answer.body) else {
            return;
        };
        let Ok(page) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return;
        };
        if page_number == 0 {
            t.remember_hashes(&page);
        }
        t.remember_ledgers(&page);
        let full = records(&page).count() >= e.limit as usize;
        match next_path(&page) {
            Some(next) if full && rng.chance(e.follow) => {
                path = next;
                due = Instant::now();
            }
            _ => return,
        }
    }
}

/// Holds one event stream open on the global feed until `stop`, counting events;
/// reopens after a second when it ends early.
pub async fn hold_stream(
    traffic: Arc<Traffic>,
    phase: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let t = &*traffic;
    let recorder = &t.recorder;
    while !*stop.borrow() {
        let due = Instant::now();
        let opened = t
            .client
            .get(format!("{}/payments?cursor=now", t.base))
            .header("accept", "text/event-stream")
            .send();
        let opened = tokio::select! {
            r = opened => r,
            _ = stop.changed() => return,
        };
        let second = due.saturating_duration_since(t.run_start).as_secs() as u32;
        let response = match opened {
            Ok(r) => r,
            Err(_) => {
                recorder.streams_failed.fetch_add(1, Ordering::Relaxed);
                recorder.record(&Outcome {
                    class: Class::Stream,
                    phase,
                    second,
                    latency: due.elapsed(),
                    status: None,
                    cache: None,
                    latest: None,
                });
                wait_or_stop(&mut stop).await;
                continue;
            }
        };
        let status = response.status().as_u16();
        let cache = response
            .headers()
            .get("x-cache-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        recorder.record(&Outcome {
            class: Class::Stream,
            phase,
            second,
            latency: due.elapsed(),
            status: Some(status),
            cache,
            latest: None,
        });
        if status != 200 {
            recorder.streams_failed.fetch_add(1, Ordering::Relaxed);
            wait_or_stop(&mut stop).await;
            continue;
        }
        recorder.streams_opened.fetch_add(1, Ordering::Relaxed);
        recorder.streams_open.fetch_add(1, Ordering::Relaxed);
        let mut body = response.bytes_stream();
        let mut counter = EventCounter::default();
        loop {
            let chunk = tokio::select! {
                c = body.next() => c,
                _ = stop.changed() => None,
            };
            match chunk {
                Some(Ok(bytes)) => {
                    let events = counter.feed(&bytes);
                    recorder.stream_events.fetch_add(events, Ordering::Relaxed);
                }
                _ => break,
            }
        }
        recorder.streams_open.fetch_sub(1, Ordering::Relaxed);
        if !*stop.borrow() {
            wait_or_stop(&mut stop).await;
        }
    }
}

async fn wait_or_stop(stop: &mut tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        _ = stop.changed() => {}
    }
}

/// Counts the record events of an SSE body fed in arbitrary chunks: lines starting with
/// `id:` (the `open` event and keep-alive comments carry none).
#[derive(Debug, Default)]
pub struct EventCounter {
    partial: Vec<u8>,
}

impl EventCounter {
    /// Feeds a chunk; returns the events completed in it.
    pub fn feed(&mut self, chunk: &[u8]) -> u64 {
        let mut events = 0;
        for &byte in chunk {
            if byte == b'\n' {
                if self.partial.starts_with(b"id:") {
                    events += 1;
                }
                self.partial.clear();
            } else if self.partial.len() < 8 {
                self.partial.push(byte);
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_taken_as_paths_on_the_loaded_base() {
        let page = serde_json::json!({
            "_links": {"next": {"href": "http://blue.test/payments?cursor=5&limit=20"}},
            "_embedded": {"records": [{"transaction_hash": "ab"}, {"transaction_hash": "cd"}]}
        });
        assert_eq!(
            next_path(&page).as_deref(),
            Some("/payments?cursor=5&limit=20")
        );
        assert_eq!(records(&page).count(), 2);
        assert_eq!(next_path(&serde_json::json!({"_links": {}})), None);
        assert_eq!(records(&serde_json::json!([1, 2])).count(), 0);
    }

    #[test]
    fn explorers_open_only_ledgers_seen_in_pages() {
        let mut model = TrafficModel::builtin();
        model.explorer.ledger_depth = 3;
        let popularity = Popularity::new([("GA".to_owned(), 1)]).expect("popularity");
        let t =
            Traffic::new("http://edge.test", model, popularity, Arc::default()).expect("traffic");
        let mut rng = Rng::new(7);
        assert_eq!(t.a_ledger(&mut rng), None);
        // Paging tokens of ledgers 8001 (prefill) and 30,820,015-30,820,017 (live): the gap
        // between them is never drawn, and only the newest three are kept.
        let token = |ledger: i64, n: i64| ((ledger << 32) | n).to_string();
        let page = serde_json::json!({"_embedded": {"records": [
            {"paging_token": token(8001, 4097)},
            {"paging_token": token(30_820_015, 1)},
            {"paging_token": token(30_820_016, 4097)},
            {"paging_token": token(30_820_017, 8193)},
            {"paging_token": "not a number"},
        ]}});
        t.remember_ledgers(&page);
        let mut drawn = BTreeSet::new();
        for _ in 0..200 {
            drawn.insert(t.a_ledger(&mut rng).expect("a ledger"));
        }
        assert_eq!(
            drawn.into_iter().collect::<Vec<_>>(),
            [30_820_015, 30_820_016, 30_820_017]
        );
    }

    #[test]
    fn events_are_counted_across_chunk_boundaries() {
        let body = b"event: open\ndata: \"hello\"\nretry: 1000\n\n\
                     id: 17\ndata: {\"a\":1}\n\n:keep-alive\n\nid: 18\ndata: {}\n\n";
        for split in 0..body.len() {
            let mut counter = EventCounter::default();
            let n = counter.feed(&body[..split]) + counter.feed(&body[split..]);
            assert_eq!(n, 2, "split at {split}");
        }
    }
}
