//! Load testing and benchmarks for the payments indexer. Every benchmark prints its
//! figures as a ratio to a ceiling measured in the same run, because the machines that
//! run it are shared and noisy: absolute numbers alone would not be comparable.
//!
//! [`simnet`] is a Stellar RPC simulator replaying recorded ledgers as a live chain, for
//! load tests and for other crates' integration tests (in process, through
//! [`simnet::Simnet`]).

pub mod bench;
pub mod cli;
pub mod simnet;
