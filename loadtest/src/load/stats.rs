//! Counting what the load got, while it runs: per class, per second of due time, and per
//! phase, an HDR histogram of latencies (microseconds, 3 significant digits) with the
//! status and edge cache status mix; plus the newest `Latest-Ledger` seen each second
//! and the streams' events.
//!
//! What must hold: each request is counted exactly once, in the second and the phase its
//! due time falls in; a latency beyond the histogram's range is clamped, never dropped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::model::Class;
use super::results::{Figures, Percentiles, Second, FAILED};

/// Longest latency kept exactly: a minute, in microseconds.
const MAX_MICROS: u64 = 60_000_000;

/// What one request got.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Its class.
    pub class: Class,
    /// Its phase's index.
    pub phase: usize,
    /// Seconds from the run's start to its due time.
    pub second: u32,
    /// From the due time to the end of the answer.
    pub latency: Duration,
    /// The HTTP status, or none for no answer.
    pub status: Option<u16>,
    /// The edge's `X-Cache-Status`.
    pub cache: Option<String>,
    /// The reader's `Latest-Ledger`.
    pub latest: Option<u32>,
}

impl Outcome {
    /// Whether this counts as an error: no answer, 5xx, or a 429 to a class that should
    /// not be refused.
    pub fn is_error(&self) -> bool {
        match self.status {
            None => true,
            Some(s) if s >= 500 => true,
            Some(429) => !self.class.expects_refusals(),
            Some(_) => false,
        }
    }
}

/// Counts and a histogram.
#[derive(Debug)]
struct Window {
    histogram: Histogram<u64>,
    errors: u64,
    status: BTreeMap<String, u64>,
    cache: BTreeMap<String, u64>,
}

impl Window {
    fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, MAX_MICROS, 3)
                .unwrap_or_else(|e| panic!("histogram bounds: {e}")),
            errors: 0,
            status: BTreeMap::new(),
            cache: BTreeMap::new(),
        }
    }

    fn add(&mut self, outcome: &Outcome) {
        let micros = (outcome.latency.as_micros() as u64).clamp(1, MAX_MICROS);
        self.histogram.saturating_record(micros);
        if outcome.is_error() {
            self.errors += 1;
        }
        let status = outcome
            .status
            .map_or_else(|| FAILED.to_owned(), |s| s.to_string());
        *self.status.entry(status).or_default() += 1;
        let cache = outcome.cache.clone().unwrap_or_else(|| "-".to_owned());
        *self.cache.entry(cache).or_default() += 1;
    }

    fn merge(&mut self, other: &Window) {
        let _ = self.histogram.add(&other.histogram);
        self.errors += other.errors;
        for (k, v) in &other.status {
            *self.status.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.cache {
            *self.cache.entry(k.clone()).or_default() += v;
        }
    }

    fn figures(&self) -> Figures {
        let h = &self.histogram;
        let ms = |micros: u64| micros as f64 / 1e3;
        let latency = if h.is_empty() {
            Percentiles::default()
        } else {
            Percentiles {
                p50: ms(h.value_at_quantile(0.5)),
                p90: ms(h.value_at_quantile(0.9)),
                p99: ms(h.value_at_quantile(0.99)),
                p999: ms(h.value_at_quantile(0.999)),
                max: ms(h.max()),
            }
        };
        Figures {
            requests: h.len(),
            errors: self.errors,
            status: self.status.clone(),
            cache: self.cache.clone(),
            latency,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    seconds: HashMap<(u32, Class), Window>,
    phases: HashMap<(usize, Class), Window>,
    latest: HashMap<u32, u32>,
}

/// The recorder, shared by every request task.
#[derive(Debug, Default)]
pub struct Recorder {
    inner: Mutex<Inner>,
    /// Events received on the streams.
    pub stream_events: AtomicU64,
    /// Streams open now.
    pub streams_open: AtomicU64,
    /// Streams that opened.
    pub streams_opened: AtomicU64,
    /// Stream openings that failed.
    pub streams_failed: AtomicU64,
    /// Requests started and not yet counted.
    pub in_flight: AtomicU64,
}

impl Recorder {
    /// Counts one request.
    pub fn record(&self, outcome: &Outcome) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner
            .seconds
            .entry((outcome.second, outcome.class))
            .or_insert_with(Window::new)
            .add(outcome);
        inner
            .phases
            .entry((outcome.phase, outcome.class))
            .or_insert_with(Window::new)
            .add(outcome);
        if let Some(latest) = outcome.latest {
            let seen = inner.latest.entry(outcome.second).or_default();
            *seen = (*seen).max(latest);
        }
    }

    /// The newest `Latest-Ledger` among answers due in `second`.
    pub fn latest_in(&self, second: u32) -> Option<u32> {
        self.inner.lock().ok()?.latest.get(&second).copied()
    }

    /// Figures of a phase, per class and for all classes together.
    pub fn phase(&self, phase: usize) -> (BTreeMap<String, Figures>, Figures) {
        let Ok(inner) = self.inner.lock() else {
            return (BTreeMap::new(), Figures::default());
        };
        let mut all = Window::new();
        let mut classes = BTreeMap::new();
        for class in Class::ALL {
            if let Some(w) = inner.phases.get(&(phase, class)) {
                all.merge(w);
                classes.insert(class.as_str().to_owned(), w.figures());
            }
        }
        (classes, all.figures())
    }

    /// The timeline: per second, each class and `all`.
    pub fn timeline(&self) -> Vec<Second> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        let last = inner.seconds.keys().map(|(s, _)| *s).max();
        let mut out = Vec::new();
        for t in 0..=last.unwrap_or(0) {
            if last.is_none() {
                break;
            }
            let mut all = Window::new();
            for class in Class::ALL {
                if let Some(w) = inner.seconds.get(&(t, class)) {
                    all.merge(w);
                    out.push(Second {
                        t,
                        class: class.as_str().to_owned(),
                        figures: w.figures(),
                    });
                }
            }
            out.push(Second {
                t,
                class: "all".to_owned(),
                figures: all.figures(),
            });
        }
        out
    }

    /// Events received so far.
    pub fn events(&self) -> u64 {
        self.stream_events.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(class: Class, second: u32, ms: u64, status: Option<u16>) -> Outcome {
        Outcome {
            class,
            phase: 0,
            second,
            latency: Duration::from_millis(ms),
            status,
            cache: Some("MISS".into()),
            latest: Some(100 + second),
        }
    }

    #[test]
    fn requests_are_counted_once_per_second_and_phase() {
        let recorder = Recorder::default();
        for ms in 1..=100 {
            recorder.record(&outcome(Class::Wallet, 0, ms, Some(200)));
        }
        recorder.record(&outcome(Class::Abusive, 1, 5, Some(429)));
        recorder.record(&outcome(Class::Wallet, 1, 5, Some(429)));
        recorder.record(&outcome(Class::Explorer, 1, 120_000, None));
        let (classes, all) = recorder.phase(0);
        assert_eq!(all.requests, 103);
        // The wallet's 429 and the failed explorer are errors; the abuser's 429 is not.
        assert_eq!(all.errors, 2);
        assert_eq!(classes["wallet"].requests, 101);
        assert!((classes["wallet"].latency.p50 - 50.0).abs() < 0.1);
        assert!((classes["wallet"].latency.p99 - 99.0).abs() < 0.1);
        // Clamped to the histogram's minute, not dropped.
        assert!((classes["explorer"].latency.max - 60_000.0).abs() < 60.0);
        assert_eq!(classes["explorer"].status[FAILED], 1);
        let timeline = recorder.timeline();
        let all_1 = timeline
            .iter()
            .find(|s| s.t == 1 && s.class == "all")
            .expect("second 1");
        assert_eq!(all_1.figures.requests, 3);
        assert_eq!(all_1.figures.status["429"], 2);
        assert_eq!(recorder.latest_in(1), Some(101));
        assert_eq!(all.hit_share(), Some(0.0));
    }
}
