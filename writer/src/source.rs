//! Ledgers from Stellar RPC (`getLedgers`), decoded and extracted, with faults sorted
//! into what to retry and what to stop on.
//!
//! Pages are sized by bytes ([`crate::paging`]): the source never asks for an answer over
//! its response cap, and an answer that still comes out too large is asked for again in
//! halves within the same fetch. Transport faults (timeouts, HTTP 5xx, JSON-RPC internal
//! errors) are retried forever with capped exponential backoff: the RPC comes back or an
//! operator intervenes. A ledger that arrives but cannot be used (malformed or truncated
//! XDR, hashes that do not match its header, a missing or out-of-order ledger) is fetched
//! again, and if it stays bad for `max_bad_attempts` fetches ingestion stops with an error
//! naming it: a ledger is never skipped, and a bad one never stored. A `getLedgers`
//! refusal of a ledger that `getHealth` then shows closed is the race of polling at the
//! tip (the ledger closed in between): it is asked for again at once, not counted as a
//! fault.

use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use shared::{Extractor, LedgerPayments};

use crate::paging::{PageBudget, PageSizer, Shrunk};
use crate::rpc::{ledgers_page, PageLedger, RpcClient, RpcError};

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
        /// Bytes the page took on the wire (about: the XDR text of its ledgers).
        bytes: usize,
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
    client: RpcClient,
    timeout: Duration,
    sizer: Mutex<PageSizer>,
    extractor: Extractor,
    /// Buffers kept from the last page for the next one.
    spare: Mutex<Buffers>,
}

/// The buffers one page is read and decoded into, reused from page to page: a fresh
/// multi-MB buffer per page costs page faults and zeroing of every page it touches. They
/// hold at most one answer (bounded by the response cap) and one ledger's XDR.
#[derive(Default)]
struct Buffers {
    /// The `getLedgers` answer as read.
    body: Vec<u8>,
    /// One ledger's `LedgerCloseMeta`, decoded from base64.
    xdr: Vec<u8>,
}

impl std::fmt::Debug for RpcSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcSource")
            .field("url", &self.client.url())
            .field("budget", &self.budget())
            .finish()
    }
}

/// JSON-RPC "invalid request": what RPC answers for a start ledger outside its range.
const INVALID_REQUEST: i32 = -32600;

fn transport(error: RpcError) -> FetchError {
    FetchError::Transport(error.to_string())
}

/// What `getLedgers` said.
enum Page {
    /// A page, extracted.
    Answer(Extracted),
    /// The start ledger is outside what the RPC serves: at the tip or before retention.
    OutOfRange(String),
}

/// A `getLedgers` answer, its ledgers extracted.
struct Extracted {
    /// The good prefix of the page.
    ledgers: Vec<LedgerPayments>,
    /// What ended the good prefix early, if anything.
    error: Option<FetchError>,
    /// Ledgers in the answer.
    served: usize,
    /// Bytes of the answer.
    bytes: usize,
    /// The RPC's newest ledger.
    rpc_latest: u32,
    /// Its close time.
    rpc_latest_close_time: i64,
}

/// What a `getLedgers` refusal of `start` meant, once `getHealth` has told the RPC's range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutOfRange {
    /// `start` is not closed yet.
    AtTip,
    /// `start` is older than the RPC keeps.
    BeforeRetention,
    /// `start` is served now: it closed between the `getLedgers` and the `getHealth`.
    /// Ask again at once; this is the normal race of polling at the tip, not a fault.
    ClosedSince,
    /// `start` is in range and was refused again: the RPC means it.
    Refused,
}

/// How many refusals of a ledger the RPC's range says is served are put down to the race
/// of a ledger closing while it was asked for (see [`OutOfRange::ClosedSince`]).
const MAX_CLOSED_SINCE: u32 = 1;

/// Sorts the `refusals`-th refusal of `start` by the range `getHealth` reported after it.
fn out_of_range(start: u32, latest: u32, oldest: u32, refusals: u32) -> OutOfRange {
    if start > latest {
        OutOfRange::AtTip
    } else if start < oldest {
        OutOfRange::BeforeRetention
    } else if refusals <= MAX_CLOSED_SINCE {
        OutOfRange::ClosedSince
    } else {
        OutOfRange::Refused
    }
}

impl RpcSource {
    /// A source for `url` sized by `budget`; each request times out after `timeout`.
    pub fn new(
        url: &str,
        timeout: Duration,
        budget: PageBudget,
        extractor: Extractor,
    ) -> Result<Self, FetchError> {
        let sizer = PageSizer::new(budget);
        let budget = sizer.budget();
        // The client's own timeout is a backstop; ours names the duration.
        let client = RpcClient::new(
            url,
            timeout + Duration::from_secs(1),
            budget.max_response_bytes,
        )
        .map_err(transport)?;
        Ok(Self {
            client,
            timeout,
            sizer: Mutex::new(sizer),
            extractor,
            spare: Mutex::new(Buffers::default()),
        })
    }

    /// The byte budget in force.
    pub fn budget(&self) -> PageBudget {
        self.sizer().budget()
    }

    fn sizer(&self) -> std::sync::MutexGuard<'_, PageSizer> {
        self.sizer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_buffers(&self) -> Buffers {
        std::mem::take(
            &mut *self
                .spare
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn keep_buffers(&self, buffers: Buffers) {
        *self
            .spare
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = buffers;
    }

    /// Bounds an RPC call by the request timeout.
    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, RpcError>>,
    ) -> Result<Result<T, RpcError>, FetchError> {
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

    /// Reads one `getLedgers` answer from `start` into `body`, as large as the byte budget
    /// allows: an answer over the response cap is asked for again with fewer ledgers.
    /// Returns the request's id.
    async fn read_page(&self, start: u32, body: &mut Vec<u8>) -> Result<u64, FetchError> {
        loop {
            let limit = self.sizer().limit();
            metrics::gauge!("writer_rpc_page_limit_ledgers").set(limit as f64);
            match self
                .timed(self.client.get_ledgers(start, limit, body))
                .await?
            {
                Ok(id) => return Ok(id),
                Err(RpcError::TooLarge { cap }) => {
                    metrics::counter!("writer_rpc_pages_too_large_total").increment(1);
                    let shrunk = self.sizer().too_large(limit);
                    match shrunk {
                        Shrunk::To(next) => {
                            tracing::warn!(
                                start,
                                asked = limit,
                                next,
                                cap,
                                "getLedgers answer over the response cap; asking for fewer ledgers"
                            );
                        }
                        Shrunk::SingleLedgerTooLarge => {
                            return Err(FetchError::Transport(format!(
                                "ledger {start} alone is larger than the response cap of {cap} bytes: \
                                 raise --rpc-max-response-mib"
                            )));
                        }
                    }
                }
                Err(e) => return Err(transport(e)),
            }
        }
    }

    /// One `getLedgers` page from `start`, read, parsed and extracted.
    async fn page(&self, start: u32) -> Result<Page, FetchError> {
        let mut buffers = self.take_buffers();
        let id = match self.read_page(start, &mut buffers.body).await {
            Ok(id) => id,
            Err(e) => {
                self.keep_buffers(buffers);
                return Err(e);
            }
        };
        let mut extractor = self.extractor.clone();
        // Parsing, decoding and extraction are CPU work: keep them off the async workers.
        let (decoded, buffers) = tokio::task::spawn_blocking(move || {
            let decoded = decode_page(&mut extractor, start, id, &mut buffers);
            (decoded, buffers)
        })
        .await
        .map_err(|e| FetchError::Transport(format!("extraction task failed: {e}")))?;
        self.keep_buffers(buffers);
        match decoded {
            Ok(page) => {
                self.sizer().answered(page.served, page.bytes);
                metrics::histogram!("writer_rpc_page_bytes").record(page.bytes as f64);
                Ok(Page::Answer(page))
            }
            Err(RpcError::Call { code, message }) if code == INVALID_REQUEST => {
                // Out of the RPC's range: the caller finds out on which side.
                Ok(Page::OutOfRange(message))
            }
            Err(e) => Err(transport(e)),
        }
    }

    /// Fetches and extracts ledgers from `start` on, at most one page.
    pub async fn fetch(&self, start: u32) -> Result<Fetched, FetchError> {
        let mut refusals = 0u32;
        let page = loop {
            match self.page(start).await? {
                Page::Answer(page) => break page,
                Page::OutOfRange(message) => {
                    refusals += 1;
                    let (latest, oldest) = self.range().await?;
                    match out_of_range(start, latest, oldest, refusals) {
                        OutOfRange::AtTip => return Ok(Fetched::AtTip { rpc_latest: latest }),
                        OutOfRange::BeforeRetention => {
                            return Ok(Fetched::BeforeRetention { rpc_oldest: oldest })
                        }
                        OutOfRange::ClosedSince => {
                            metrics::counter!("writer_rpc_closed_while_asking_total").increment(1);
                            tracing::debug!(
                                start,
                                latest,
                                "ledger closed while asking; asking again"
                            );
                        }
                        OutOfRange::Refused => {
                            return Err(FetchError::Transport(format!(
                                "getLedgers refused ledger {start}: {message}"
                            )))
                        }
                    }
                }
            }
        };
        let Extracted {
            ledgers,
            error,
            bytes,
            rpc_latest,
            rpc_latest_close_time,
            ..
        } = page;
        match (ledgers, error) {
            (good, _) if !good.is_empty() => Ok(Fetched::Ledgers {
                ledgers: good,
                bytes,
                rpc_latest,
                rpc_latest_close_time,
            }),
            (_, Some(error)) => Err(error),
            // An empty page: nothing past `start` yet.
            (_, None) => Ok(Fetched::AtTip { rpc_latest }),
        }
    }
}

/// Parses the answer to `getLedgers` request `id` (once, into strings borrowed from the
/// body) and extracts its ledgers.
fn decode_page(
    extractor: &mut Extractor,
    start: u32,
    id: u64,
    buffers: &mut Buffers,
) -> Result<Extracted, RpcError> {
    let Buffers { body, xdr } = buffers;
    let page = ledgers_page(body, id)?;
    let (ledgers, error) = extract_page(extractor, start, &page.ledgers, xdr);
    Ok(Extracted {
        ledgers,
        error,
        served: page.ledgers.len(),
        bytes: body.len(),
        rpc_latest: page.latest_ledger,
        rpc_latest_close_time: page.latest_ledger_close_time,
    })
}

/// Extracts a page in order, stopping at the first unusable ledger: returns the good
/// prefix and the error that ended it, if any. Each ledger's XDR is decoded into `xdr`.
fn extract_page(
    extractor: &mut Extractor,
    start: u32,
    page: &[PageLedger<'_>],
    xdr: &mut Vec<u8>,
) -> (Vec<LedgerPayments>, Option<FetchError>) {
    let mut out = Vec::with_capacity(page.len());
    for (offset, ledger) in page.iter().enumerate() {
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
        xdr.clear();
        if let Err(e) = base64::engine::general_purpose::STANDARD
            .decode_vec(ledger.metadata_xdr.as_bytes(), xdr)
        {
            return (out, bad(format!("metadataXdr is not base64: {e}")));
        }
        match extractor.extract_xdr(xdr) {
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
            Err(e) => {
                // Counted per fetch: a corrupted ledger served again counts again.
                metrics::counter!("writer_ledgers_refused_total", "reason" => e.label())
                    .increment(1);
                return (out, bad(e.to_string()));
            }
        }
    }
    (out, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_sorted_by_the_range_reported_after_it() {
        assert_eq!(out_of_range(11, 10, 1, 1), OutOfRange::AtTip);
        assert_eq!(out_of_range(11, 10, 1, 2), OutOfRange::AtTip);
        assert_eq!(out_of_range(1, 10, 5, 1), OutOfRange::BeforeRetention);
        // Refused, then served: it closed in between; ask again.
        assert_eq!(out_of_range(11, 11, 1, 1), OutOfRange::ClosedSince);
        // Refused twice while in range: the RPC means it.
        assert_eq!(out_of_range(11, 11, 1, 2), OutOfRange::Refused);
    }
}
