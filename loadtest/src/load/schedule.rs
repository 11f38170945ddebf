//! The open-loop arrival schedule: request `i` is due at `start + i / rate`, whatever
//! happened to the requests before it. The dispatcher starts each request on its own
//! task at its due time and never waits for an answer, so a slow server does not slow
//! the arrivals (no coordinated omission); each request's latency is measured from its
//! due time, so time spent queued behind a late dispatcher counts too.
//!
//! What must hold: the due times depend only on the start, the rate and the index; the
//! dispatcher calls `send` exactly once per due time in `[start, end)`, in order, and
//! only waits for the clock.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// A fixed arrival rate from a start time.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    start: Instant,
    rate: f64,
}

impl Schedule {
    /// Arrivals at `rate` per second (> 0) from `start`.
    pub fn new(start: Instant, rate: f64) -> Self {
        Self {
            start,
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                1.0
            },
        }
    }

    /// The rate per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When request `i` is due.
    pub fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// Requests due in `[start, start + length)`.
    pub fn count_within(&self, length: Duration) -> u64 {
        (length.as_secs_f64() * self.rate).ceil() as u64
    }
}

/// Starts `send(i, due)` on a task of its own at each due time before `start + length`,
/// and returns once the last one is started (not finished): the tasks' handles are
/// dropped, so whoever counts results must wait for them separately.
pub async fn dispatch<F, Fut>(schedule: Schedule, length: Duration, mut send: F) -> u64
where
    F: FnMut(u64, Instant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let count = schedule.count_within(length);
    for i in 0..count {
        let due = schedule.due(i);
        tokio::time::sleep_until(due).await;
        tokio::spawn(send(i, due));
    }
    count
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn due_times_depend_on_the_index_only() {
        let start = Instant::now();
        let s = Schedule::new(start, 200.0);
        assert_eq!(s.due(0), start);
        assert_eq!(s.due(200), start + Duration::from_secs(1));
        assert_eq!(s.due(1) - s.due(0), Duration::from_millis(5));
        assert_eq!(s.count_within(Duration::from_secs(3)), 600);
        assert_eq!(Schedule::new(start, f64::NAN).rate(), 1.0);
    }

    /// With the clock paused, virtual time moves only when every task waits: each
    /// request takes 800 ms to answer, far longer than the 10 ms between arrivals, and
    /// still every request starts exactly at its due time, and all 100 start within the
    /// one second the schedule spans.
    #[tokio::test(start_paused = true)]
    async fn slow_answers_do_not_slow_the_arrivals() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 100.0);
        let started: Arc<Mutex<Vec<(u64, Duration, Duration)>>> = Arc::default();
        let finished = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let log = started.clone();
        let done = finished.clone();
        let count = dispatch(schedule, Duration::from_secs(1), move |i, due| {
            let log = log.clone();
            let done = done.clone();
            async move {
                let now = Instant::now();
                log.lock().expect("log").push((i, due - start, now - start));
                tokio::time::sleep(Duration::from_millis(800)).await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .await;
        assert_eq!(count, 100);
        // The dispatcher returned at the last due time, not after the answers.
        assert!(Instant::now() - start < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(finished.load(std::sync::atomic::Ordering::SeqCst), 100);
        let started = started.lock().expect("log");
        assert_eq!(started.len(), 100);
        for (i, due, at) in started.iter() {
            assert_eq!(*due, Duration::from_millis(10 * i));
            assert_eq!(at, due, "request {i} started late");
        }
    }
}
