//! The load tester's integration tests, one binary: the RPC simulator against the real
//! Stellar RPC client and recorded responses, the synthetic chain generator against
//! the extractor and the data-lake reader, the load generator against a real
//! reader behind the real edge, and the local stack's failed start.

mod load;
mod simnet;
mod stack;
mod synth;
