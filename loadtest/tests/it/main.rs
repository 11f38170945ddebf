//! The load tester's integration tests, one binary: the RPC simulator against the real
//! Stellar RPC client and recorded responses, and the synthetic chain generator against
//! the extractor and the data-lake reader.

mod simnet;
mod synth;
