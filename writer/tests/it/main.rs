//! The writer's integration tests, one binary: live ingestion, backfill, crash safety,
//! faults, group commit, TLS (to Postgres and Redis, and HTTPS to the RPC) and the
//! `extract` command, against real Postgres (primary and streaming replica) and Redis
//! from the test kit, fed by the RPC simulator replaying the recorded ledgers. One
//! binary means one link step for the whole suite.

mod backfill;
mod crash_safety;
mod extract_command;
mod failures;
mod faults;
mod group_commit;
mod health;
mod live_ingestion;
mod lock_fencing;
mod lock_order;
mod migrations;
mod real_sizes;
mod rpc_https;
mod support;
mod tls;
mod verification;
