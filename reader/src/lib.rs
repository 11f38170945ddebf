//! The reader: a Horizon-compatible payments API served from read replicas, with
//! chain-tip caching, ETags, Cache-Control policy and event streams. It never writes.

pub mod app;
pub mod cache;
pub mod clients;
pub mod config;
pub mod openapi;
pub mod page;
pub mod params;
pub mod policy;
pub mod problem;
pub mod ratelimit;
pub mod records;
pub mod server;
pub mod sources;
pub mod store;
pub mod stream;

pub use shared::telemetry::init_tracing;
