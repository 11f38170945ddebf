//! Stop signals for every long-running binary (feature `shutdown`): the writer's `run`
//! and `backfill`, the reader, the RPC simulator and the local stack.
//!
//! What must hold: the handlers for SIGTERM and SIGINT are registered before the process
//! does anything that a signal should stop gracefully ([`StopSignals::register`] is
//! synchronous and called first), so a signal during start-up is a graceful stop and never
//! the default termination. Either signal means the same thing: stop accepting work,
//! finish or roll back what is in flight, exit 0.

use std::io;

use tokio_util::sync::CancellationToken;

/// SIGTERM and SIGINT (Ctrl-C), registered up front.
#[derive(Debug)]
pub struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers now; from here on neither signal kills the process. Must be
    /// called inside a tokio runtime.
    pub fn register() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the first SIGTERM or SIGINT.
    pub async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }

    /// Cancels `token` on the first signal, from a task of its own.
    pub fn cancel_on_signal(self, token: CancellationToken) {
        tokio::spawn(async move {
            self.recv().await;
            token.cancel();
        });
    }
}

/// A fresh token that is cancelled by SIGTERM or SIGINT: the usual start of a binary's
/// `main`. Registers the handlers before returning.
pub fn stop_token() -> io::Result<CancellationToken> {
    let token = CancellationToken::new();
    StopSignals::register()?.cancel_on_signal(token.clone());
    Ok(token)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_cancels_the_token_and_does_not_kill_the_process() {
        let token = stop_token().expect("signal handlers");
        assert!(!token.is_cancelled());
        // SIGINT to ourselves: with the handler installed the process lives on.
        let status = std::process::Command::new("kill")
            .arg("-INT")
            .arg(std::process::id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        tokio::time::timeout(std::time::Duration::from_secs(10), token.cancelled())
            .await
            .expect("the token is cancelled by the signal");
    }
}
