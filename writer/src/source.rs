//! Ledgers from Stellar RPC (`getLedgers`), decoded and extracted, with faults sorted
//! into what to retry and what to stop on.
//!
//! Transport faults (timeouts, HTTP 5xx, JSON-RPC internal errors) are retried forever
//! with capped exponential backoff: the RPC comes back or an operator intervenes. A
//! ledger that arrives but cannot be used (malformed or truncated XDR, a missing or
//! out-of-order ledger) is fetched again, and if it stays bad for `max_bad_attempts`
//! fetches ingestion stops with an error naming it: a ledger is never skipped.

use std::time::Duration;

use base64::Engine as _;
use shared::{Extractor, LedgerPayments};
use stellar_rpc_client::{Client, LedgerStart};

/// How the source retries.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// First backoff.
    pub initial: Duration,
    /// Backoff cap.
    pub max: Duration,
    /// Fetches of the same bad ledger before giving up.
    pub max_bad_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_bad_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// The backoff before attempt `attempt` (0-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// One fetch's result.
#[derive(Debug)]
pub enum Fetched {
    /// Extracted ledgers, contiguous from the requested start (possibly fewer than asked
    /// when a later ledger of the page was bad: the good prefix is kept).
    Ledgers {
        /// The ledgers.
        ledgers: Vec<LedgerPayments>,
        /// The RPC's newest ledger when it answered.
        rpc_latest: u32,
        /// Its close time.
        rpc_latest_close_time: i64,
    },
    /// The requested ledger is not closed yet.
    AtTip {
        /// The RPC's newest ledger.
        rpc_latest: u32,
    },
    /// The requested ledger is older than anything the RPC still keeps.
    BeforeRetention {
        /// The RPC's oldest ledger.
        rpc_oldest: u32,
    },
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The RPC could not be reached or answered with a server error: retry.
    #[error("RPC unavailable: {0}")]
    Transport(String),
    /// A ledger came back unusable: fetch it again, and stop if it stays so.
    #[error("ledger {ledger} is unusable: {reason}")]
    BadLedger {
        /// The ledger.
        ledger: u32,
        /// Why.
        reason: String,
    },
    /// The RPC serves another network.
    #[error("RPC serves network {rpc:?}, expected {expected:?}")]
    WrongNetwork {
        /// What the RPC reports.
        rpc: String,
        /// What we ingest.
        expected: String,
    },
}

impl FetchError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Transport(_) => "transport",
            Self::BadLedger { .. } => "bad_ledger",
            Self::WrongNetwork { .. } => "wrong_network",
        }
    }
}

/// A Stellar RPC endpoint as a source of extracted ledgers.
pub struct RpcSource {
    client: Client,
    timeout: Duration,
    page_limit: usize,
    extractor: Extractor,
}

impl std::fmt::Debug for RpcSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcSource")
            .field("url", &self.client.base_url())
            .field("page_limit", &self.page_limit)
            .finish()
    }
}

/// JSON-RPC "invalid request": what RPC answers for a start ledger outside its range.
const INVALID_REQUEST: i32 = -32600;

fn transport(error: stellar_rpc_client::Error) -> FetchError {
    FetchError::Transport(error.to_string())
}

impl RpcSource {
    /// A source for `url`; each request times out after `timeout`.
    pub fn new(
        url: &str,
        timeout: Duration,
        page_limit: usize,
        extractor: Extractor,
    ) -> Result<Self, FetchError> {
        let client = Client::new(url).map_err(transport)?;
        Ok(Self {
            client,
            timeout,
            page_limit: page_limit.clamp(1, 200),
            extractor,
        })
    }

    /// Bounds an RPC call by the request timeout.
    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, stellar_rpc_client::Error>>,
    ) -> Result<Result<T, stellar_rpc_client::Error>, FetchError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| FetchError::Transport(format!("no answer within {:?}", self.timeout)))
    }

    /// The network passphrase the RPC serves; an error if it is not ours.
    pub async fn check_network(&self) -> Result<String, FetchError> {
        let network = self
            .timed(self.client.get_network())
            .await?
            .map_err(transport)?;
        let expected = self.extractor.network().passphrase();
        if network.passphrase != expected {
            return Err(FetchError::WrongNetwork {
                rpc: network.passphrase,
                expected: expected.to_owned(),
            });
        }
        Ok(network.passphrase)
    }

    /// The RPC's newest and oldest ledgers.
    pub async fn range(&self) -> Result<(u32, u32), FetchError> {
        let health = self
            .timed(self.client.get_health())
            .await?
            .map_err(transport)?;
        Ok((health.latest_ledger, health.oldest_ledger))
    }

    /// Fetches and extracts ledgers from `start` on, at most one page.
    pub async fn fetch(&self, start: u32) -> Result<Fetched, FetchError> {
        let request =
            self.client
                .get_ledgers(LedgerStart::Ledger(start), Some(self.page_limit), None);
        let page = match self.timed(request).await? {
            Ok(page) => page,
            Err(stellar_rpc_client::Error::JsonRpc(jsonrpsee_core::ClientError::Call(call)))
                if call.code() == INVALID_REQUEST =>
            {
                // Out of the RPC's range: find out on which side.
                let (latest, oldest) = self.range().await?;
                return Ok(if start > latest {
                    Fetched::AtTip { rpc_latest: latest }
                } else if start < oldest {
                    Fetched::BeforeRetention { rpc_oldest: oldest }
                } else {
                    return Err(FetchError::Transport(format!(
                        "getLedgers refused ledger {start}: {}",
                        call.message()
                    )));
                });
            }
            Err(e) => return Err(transport(e)),
        };
        if page.ledgers.is_empty() {
            return Ok(Fetched::AtTip {
                rpc_latest: page.latest_ledger,
            });
        }
        let rpc_latest = page.latest_ledger;
        let rpc_latest_close_time = page.latest_ledger_close_time;
        let mut extractor = self.extractor.clone();
        // Decoding is CPU work: keep it off the async workers.
        let ledgers =
            tokio::task::spawn_blocking(move || extract_page(&mut extractor, start, page.ledgers))
                .await
                .map_err(|e| FetchError::Transport(format!("extraction task failed: {e}")))?;
        match ledgers {
            (good, _) if !good.is_empty() => Ok(Fetched::Ledgers {
                ledgers: good,
                rpc_latest,
                rpc_latest_close_time,
            }),
            (_, Some(error)) => Err(error),
            (_, None) => Ok(Fetched::AtTip { rpc_latest }),
        }
    }
}

/// Extracts a page in order, stopping at the first unusable ledger: returns the good
/// prefix and the error that ended it, if any.
fn extract_page(
    extractor: &mut Extractor,
    start: u32,
    page: Vec<stellar_rpc_client::Ledger>,
) -> (Vec<LedgerPayments>, Option<FetchError>) {
    let mut out = Vec::with_capacity(page.len());
    for (offset, ledger) in page.into_iter().enumerate() {
        let expected = start + offset as u32;
        let bad = |reason: String| {
            Some(FetchError::BadLedger {
                ledger: expected,
                reason,
            })
        };
        if ledger.sequence != expected {
            return (
                out,
                bad(format!(
                    "RPC returned ledger {} where {expected} was due",
                    ledger.sequence
                )),
            );
        }
        let bytes = match base64::engine::general_purpose::STANDARD
            .decode(ledger.metadata_xdr.as_bytes())
        {
            Ok(bytes) => bytes,
            Err(e) => return (out, bad(format!("metadataXdr is not base64: {e}"))),
        };
        match extractor.extract_xdr(&bytes) {
            Ok(payments) if payments.ledger.sequence == expected => out.push(payments),
            Ok(payments) => {
                return (
                    out,
                    bad(format!(
                        "metadataXdr holds ledger {}",
                        payments.ledger.sequence
                    )),
                );
            }
            Err(e) => return (out, bad(e.to_string())),
        }
    }
    (out, None)
}
