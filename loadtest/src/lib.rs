//! Load testing and benchmarks for the payments indexer. Every benchmark prints its
//! figures as a ratio to a ceiling measured in the same run, because the machines that
//! run it are shared and noisy: absolute numbers alone would not be comparable.
//!
//! [`simnet`] is a Stellar RPC simulator replaying recorded ledgers as a live chain, for
//! load tests and for other crates' integration tests (in process, through
//! [`simnet::Simnet`]).
//!
//! [`load`] is an open-loop load generator with a traffic model, for the whole stack
//! through the edge, and renders its results as an HTML report with charts.
//!
//! [`synth`] generates synthetic Stellar chains of any length, with the payment records
//! each ledger must yield, and writes them as SEP-54 data lakes; simnet can serve them
//! after (or instead of) the recorded ledgers.

pub mod bench;
pub mod cli;
pub mod edge;
pub mod load;
pub mod simnet;
pub mod stack;
pub mod synth;

/// A binary built next to this one (`writer`, `reader`), for the commands that start
/// the real processes.
pub fn sibling_binary(name: &str) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("binary folder")?.join(name);
    if !path.is_file() {
        anyhow::bail!(
            "{} not found: build it first (cargo build --release -p {name})",
            path.display()
        );
    }
    Ok(path)
}
