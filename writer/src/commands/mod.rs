//! One module per writer command.

pub mod backfill;
pub mod extract;
pub mod gaps;
pub mod migrate;
pub mod run;

pub use shared::telemetry::init_tracing;

use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGTERM or SIGINT (handlers registered before this returns).
pub fn shutdown_on_signals() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            signal.cancel();
        }
    });
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        let signal = shutdown.clone();
        tokio::spawn(async move {
            term.recv().await;
            signal.cancel();
        });
    }
    shutdown
}
