//! The reader: the read-only, Horizon-compatible payments API served from Postgres read
//! replicas. Its HTTP service is built on top of the writer's schema, which does not
//! exist yet; until it does, this binary refuses to start rather than pretend to serve.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "reader {}: the payments API is not available in this build (it needs the writer's \
         database schema, which comes first); nothing was started",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
