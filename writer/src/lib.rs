//! The writer library: the only process that writes payments into Postgres.
//!
//! `live` follows Stellar RPC from the stored cursor, `store` commits each batch of
//! ledgers exactly once (`rows` encodes its rows), `lock` keeps a single active writer
//! and ties its commits to the lock, `announce` tells readers
//! about new tips through Redis, `status` serves health and metrics.

pub mod announce;
pub mod backfill;
pub mod cli;
pub mod commands;
pub mod copy;
pub mod db;
pub mod dictionary;
pub mod live;
pub mod lock;
pub mod paging;
pub mod rows;
pub mod rpc;
pub mod source;
pub mod status;
pub mod store;
