//! The reader: a Horizon-compatible payments API served from read replicas, with
//! chain-tip caching, ETags, Cache-Control policy and event streams. It never writes.

pub mod cache;
pub mod clients;
pub mod completeness;
pub mod conditional;
pub mod config;
pub mod middleware;
pub mod openapi;
pub mod page;
pub mod params;
pub mod policy;
pub mod problem;
pub mod ratelimit;
pub mod records;
pub mod router;
pub mod routes;
pub mod server;
pub mod sources;
pub mod state;
pub mod store;
pub mod stream;

pub use shared::telemetry::init_tracing;
