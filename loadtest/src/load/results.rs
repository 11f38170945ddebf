//! The results file of a load run (JSON), which `loadtest report` renders: the model,
//! the phases (a steady run, or the steps of a ramp), per-second figures per class, the
//! stack's observed state per second (lags, CPU per component), and the knee.
//!
//! What must hold: everything the report draws is in this file, so a report can be
//! rendered again later, elsewhere, from the file alone. Latencies are milliseconds
//! measured from each request's due time; statuses are HTTP codes as text, or `failed`
//! (no answer: connection error or timeout).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{Class, TrafficModel};

/// The `status` key of a request that got no answer.
pub const FAILED: &str = "failed";

/// Latency percentiles, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th.
    pub p90: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

/// Counts and latencies of one class over a span (a second, a phase).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Requests answered (or failed).
    pub requests: u64,
    /// Of those, errors: no answer, 5xx, or 429 to a class that should not get them.
    pub errors: u64,
    /// Requests per HTTP status (`failed` for no answer).
    pub status: BTreeMap<String, u64>,
    /// Requests per edge cache status (`X-Cache-Status`; `-` when absent).
    pub cache: BTreeMap<String, u64>,
    /// Latency from the due time.
    pub latency: Percentiles,
}

impl Figures {
    /// The share of answers the edge served from its cache (`HIT`, `STALE`, `UPDATING`,
    /// `REVALIDATED`) among answers that passed its cache.
    pub fn hit_share(&self) -> Option<f64> {
        let counted: u64 = self
            .cache
            .iter()
            .filter(|(k, _)| k.as_str() != "-")
            .map(|(_, v)| v)
            .sum();
        let hits: u64 = self
            .cache
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "HIT" | "STALE" | "UPDATING" | "REVALIDATED"))
            .map(|(_, v)| v)
            .sum();
        (counted > 0).then(|| hits as f64 / counted as f64)
    }
}

/// One second of one class (or of `all`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the run started (the due times in it).
    pub t: u32,
    /// The class, or `all`.
    pub class: String,
    /// What happened to the requests due in this second.
    pub figures: Figures,
}

/// One phase: a steady run, or one step of a ramp.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Phase {
    /// `steady`, `ramp` (the model's mix) or `ceiling` (`/constant`).
    pub kind: String,
    /// Arrival rate, per second.
    pub rate: f64,
    /// Start, seconds since the run started.
    pub start: f64,
    /// Length, seconds.
    pub secs: f64,
    /// Per class.
    pub classes: BTreeMap<String, Figures>,
    /// All classes together.
    pub all: Figures,
    /// Answers per second achieved.
    pub throughput: f64,
    /// p99 under the limit and no errors.
    pub good: bool,
}

/// What the stack looked like at one moment.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Observation {
    /// Seconds since the run started.
    pub t: f64,
    /// The active writer's last committed ledger.
    pub writer_last: Option<u32>,
    /// The newest ledger the writer saw at the RPC.
    pub rpc_latest: Option<u32>,
    /// The newest `Latest-Ledger` the readers answered with in the last second.
    pub reader_latest: Option<u32>,
    /// CPU per component since the last observation, in % of one core.
    pub cpu: BTreeMap<String, f64>,
    /// Events the open streams received since the last observation.
    pub stream_events: u64,
    /// Streams open.
    pub streams_open: u64,
}

impl Observation {
    /// Ledgers the writer is behind the RPC.
    pub fn writer_lag(&self) -> Option<i64> {
        Some(i64::from(self.rpc_latest?) - i64::from(self.writer_last?))
    }

    /// Ledgers the readers (serving from the replica) are behind the writer.
    pub fn reader_lag(&self) -> Option<i64> {
        Some(i64::from(self.writer_last?) - i64::from(self.reader_latest?))
    }
}

/// The knee of a ramp.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Knee {
    /// The criterion a good step meets.
    pub criterion: String,
    /// Highest good arrival rate of the model's mix.
    pub mix_rate: Option<f64>,
    /// Highest good arrival rate of `/constant` through the same edge.
    pub ceiling_rate: Option<f64>,
    /// `mix_rate / ceiling_rate`.
    pub ratio: Option<f64>,
}

/// Event streams over the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StreamSummary {
    /// Streams asked for.
    pub wanted: u64,
    /// Streams that opened (200 and an event-stream body).
    pub opened: u64,
    /// Open attempts that failed.
    pub failed: u64,
    /// Events received.
    pub events: u64,
}

/// The whole results file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// What was loaded (the edge's URL).
    pub target: String,
    /// Start, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Free text: the command, the machine.
    pub notes: String,
    /// p99 limit of a good step, milliseconds.
    pub p99_limit_ms: f64,
    /// The traffic model.
    pub model: TrafficModel,
    /// Phases, in order.
    pub phases: Vec<Phase>,
    /// Per second, per class and `all`.
    pub timeline: Vec<Second>,
    /// Per second.
    pub observations: Vec<Observation>,
    /// Streams.
    pub streams: StreamSummary,
    /// The knee, for a ramp.
    pub knee: Option<Knee>,
}

impl Results {
    /// The classes with figures in the timeline, in report order.
    pub fn classes(&self) -> Vec<Class> {
        Class::ALL
            .into_iter()
            .filter(|c| self.timeline.iter().any(|s| s.class == c.as_str()))
            .collect()
    }
}
