//! The shared crate's integration tests, one binary: payment extraction proven on the
//! recorded pubnet and testnet data (`testdata/`) against independent decoders, Horizon
//! and stellar-etl output; bad input; the other ledger file formats; and the test kit's
//! servers. One binary means one link step for the whole suite.

mod bad_input;
mod cap67_amounts;
mod fast_path_equivalence;
mod muxed_and_memos;
mod other_formats;
mod participants;
mod rpc_fixtures;
mod stellar_etl_30820015;
mod summary;
mod testkit;
mod verification;
