//! The reader's integration tests, one binary: every route against a replica fed by the
//! real writer from the recorded ledgers, caching and ETags, event streams, replicas
//! lagging and dying, rate limits in real Redis, operations, and TLS to Postgres and
//! Redis. One binary means one link step for the whole suite.

mod api;
mod caching;
mod edge;
mod operations;
mod ratelimits;
mod replicas;
mod schema;
mod streaming;
mod support;
mod time_filters;
mod tls;
