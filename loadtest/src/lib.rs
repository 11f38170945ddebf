//! Load testing and benchmarks for the payments indexer. Every benchmark prints its
//! figures as a ratio to a ceiling measured in the same run, because the machines that
//! run it are shared and noisy: absolute numbers alone would not be comparable.

pub mod bench;
pub mod cli;
