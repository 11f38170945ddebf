//! Decisions of concurrent requests go to Redis together: one task takes the decisions
//! that are waiting, sends them as one call of `decide_many.lua` (one round trip, one
//! script run that reads and writes each client's keys once), answers each waiter with
//! its own result, and takes the next batch, which holds what arrived meanwhile. At low
//! load a batch is one decision; the busier the pod, the more decisions share a trip.
//!
//! What must hold: every decision is still taken in Redis, exactly (a batch is atomic
//! and decides in order, as if the decisions came one by one); a waiter is answered
//! with its own decision or an error, never another's; a decision waits no longer than
//! its deadline (then it is answered with an error and the caller fails open): a call
//! is given until the earliest deadline of its batch, and as waiters queue in the order
//! of their deadlines (one budget for all), the call before a waiter's ends before the
//! waiter's deadline too (one timer per call, none per request); against a Cluster, one
//! call only ever holds the keys of one client (one hash slot).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::backend::Redis;

/// Most decisions in one call.
const MAX_BATCH: usize = 256;
/// Values per decision in the script's answer.
const ANSWER: usize = 7;

/// One decision to take.
#[derive(Debug)]
pub(super) struct Ask {
    /// The client's Redis id: its keys' hash tag (and slot).
    pub client: String,
    /// The limits of the client's tier.
    pub limits: Limits,
    /// cost, pending requests, pending credits.
    pub values: [u64; 3],
    /// When the caller stops waiting.
    pub deadline: Instant,
}

/// A tier's limits as the script takes them: period_us, tolerance_us (the GCRA),
/// window_us, byte_quota, credit_quota. Sent once per client and call: the decisions of
/// one client in one call are decided under the limits of its first (a reloaded tier
/// applies from the next call).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Limits {
    pub period_us: f64,
    pub tolerance_us: f64,
    pub window_us: u64,
    pub byte_quota: u64,
    pub credit_quota: u64,
}

/// What Redis decided for one ask (the script's seven values), or why not.
pub(super) type Answer = Result<[i64; ANSWER], String>;

struct Waiting {
    ask: Ask,
    reply: oneshot::Sender<Answer>,
}

/// The sending side; the task ends when it is dropped.
pub(super) struct Batcher {
    queue: mpsc::UnboundedSender<Waiting>,
    round_trips: Arc<AtomicU64>,
    decisions: Arc<AtomicU64>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("round_trips", &self.round_trips.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the task (on the current runtime) over `redis`, with keys under `prefix`.
    pub(super) fn start(redis: Arc<Redis>, prefix: String) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let round_trips = Arc::new(AtomicU64::new(0));
        let decisions = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(
            redis,
            prefix,
            waiting,
            round_trips.clone(),
            decisions.clone(),
        ));
        Self {
            queue,
            round_trips,
            decisions,
        }
    }

    /// Queues `ask` and waits for its answer (by its deadline).
    pub(super) async fn decide(&self, ask: Ask) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Waiting { ask, reply })
            .map_err(|_| "the decision task has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the decision task dropped the decision".to_owned())?
    }

    /// Calls of the script so far (Redis round trips for decisions).
    pub(super) fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Decisions sent to Redis so far.
    pub(super) fn decisions(&self) -> u64 {
        self.decisions.load(Ordering::Relaxed)
    }
}

async fn run(
    redis: Arc<Redis>,
    prefix: String,
    mut waiting: mpsc::UnboundedReceiver<Waiting>,
    round_trips: Arc<AtomicU64>,
    decisions: Arc<AtomicU64>,
) {
    let script = redis::Script::new(include_str!("decide_many.lua"));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // A waiter that is gone (its request was dropped) is not sent; one whose
        // deadline has passed is answered at once.
        let now = Instant::now();
        batch.retain(|w: &Waiting| !w.reply.is_closed());
        let (late, on_time): (Vec<Waiting>, Vec<Waiting>) =
            batch.drain(..).partition(|w| w.ask.deadline <= now);
        for w in late {
            let _ = w.reply.send(Err(TOO_LATE.to_owned()));
        }
        let Some(deadline) = on_time.iter().map(|w| w.ask.deadline).min() else {
            continue;
        };
        let groups = if redis.is_cluster() {
            by_client(on_time)
        } else {
            vec![on_time]
        };
        round_trips.fetch_add(groups.len() as u64, Ordering::Relaxed);
        let sent: usize = groups.iter().map(Vec::len).sum();
        decisions.fetch_add(sent as u64, Ordering::Relaxed);
        metrics::histogram!("reader_ratelimit_batch_decisions").record(sent as f64);
        let calls = futures_util::future::join_all(
            groups.iter().map(|g| call(&redis, &script, &prefix, g)),
        );
        match tokio::time::timeout_at(deadline, calls).await {
            Ok(results) => {
                for (group, result) in groups.into_iter().zip(results) {
                    answer(group, result);
                }
            }
            Err(_) => {
                for w in groups.into_iter().flatten() {
                    let _ = w.reply.send(Err(TOO_LATE.to_owned()));
                }
            }
        }
    }
}

/// The error of a decision Redis did not answer by its deadline.
const TOO_LATE: &str = "no answer within the budget";

/// Splits a batch into one group per client, in arrival order within each.
fn by_client(batch: Vec<Waiting>) -> Vec<Vec<Waiting>> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<Waiting>> = Vec::new();
    for w in batch {
        match index.get(&w.ask.client) {
            Some(&i) => groups[i].push(w),
            None => {
                index.insert(w.ask.client.clone(), groups.len());
                groups.push(vec![w]);
            }
        }
    }
    groups
}

/// One call of the script for `group`: each client's keys and limits once, then four
/// values per waiter, in order.
async fn call(
    redis: &Redis,
    script: &redis::Script,
    prefix: &str,
    group: &[Waiting],
) -> Result<Vec<i64>, String> {
    // Key pairs in order of first appearance, and which pair each decision uses.
    let mut clients: Vec<(&str, Limits)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut which: Vec<usize> = Vec::with_capacity(group.len());
    for w in group {
        let k = *index.entry(w.ask.client.as_str()).or_insert_with(|| {
            clients.push((w.ask.client.as_str(), w.ask.limits));
            clients.len()
        });
        which.push(k);
    }
    let mut invocation = script.prepare_invoke();
    invocation.arg(clients.len());
    for (id, limits) in &clients {
        let (rate_key, quota_key) = super::client_keys(prefix, id);
        invocation
            .key(rate_key)
            .key(quota_key)
            .arg(limits.period_us)
            .arg(limits.tolerance_us)
            .arg(limits.window_us)
            .arg(limits.byte_quota)
            .arg(limits.credit_quota);
    }
    for (w, k) in group.iter().zip(which) {
        invocation.arg(k);
        for v in w.ask.values {
            invocation.arg(v);
        }
    }
    let values = redis
        .invoke::<Vec<i64>>(invocation)
        .await
        .map_err(|e| e.to_string())?;
    if values.len() != group.len() * ANSWER {
        return Err(format!(
            "unexpected script result: {} values for {} decisions",
            values.len(),
            group.len()
        ));
    }
    Ok(values)
}

/// Each waiter of `group` gets its own seven values, or the call's error.
fn answer(group: Vec<Waiting>, result: Result<Vec<i64>, String>) {
    match result {
        Ok(values) => {
            for (w, answer) in group.into_iter().zip(values.chunks_exact(ANSWER)) {
                let mut own = [0; ANSWER];
                own.copy_from_slice(answer);
                let _ = w.reply.send(Ok(own));
            }
        }
        Err(error) => {
            for w in group {
                let _ = w.reply.send(Err(error.clone()));
            }
        }
    }
}
