//! One module per writer command.

pub mod backfill;
pub mod extract;
pub mod gaps;
pub mod migrate;
pub mod run;

pub use shared::telemetry::init_tracing;
