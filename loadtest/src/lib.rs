//! Load testing and benchmarks for the payments indexer. Every benchmark prints its
//! figures as a ratio to a ceiling measured in the same run, because the machines that
//! run it are shared and noisy: absolute numbers alone would not be comparable.
//!
//! [`simnet`] is a Stellar RPC simulator replaying recorded ledgers as a live chain, for
//! load tests and for other crates' integration tests (in process, through
//! [`simnet::Simnet`]).
//!
//! [`synth`] generates synthetic Stellar chains of any length, with the payment records
//! each ledger must yield, and writes them as SEP-54 data lakes; simnet can serve them
//! after (or instead of) the recorded ledgers.

pub mod bench;
pub mod cli;
pub mod simnet;
pub mod stack;
pub mod synth;
