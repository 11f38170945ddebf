//! Benchmarks, one module each.

pub mod backfill;
pub mod blue_green;
pub mod catchup;
pub mod extract;
pub mod live_latency;
pub mod reader;

use std::time::{Duration, Instant};

/// Runs `work` repeatedly for about `budget` and returns operations per second.
pub fn rate(budget: Duration, mut work: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < budget {
        work();
        done += 1;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// The median of a non-empty list.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}
