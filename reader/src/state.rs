//! What every handler shares: the history sources, the response cache, the
//! Cache-Control policy, serving settings, stream bounds, the shutdown token and the
//! rate limiter. Built once by `server`, cloned cheaply into each request.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderName;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cache::ResponseCache;
use crate::policy::PolicyHandle;
use crate::sources::Sources;

/// The `Latest-Ledger` header.
pub static LATEST_LEDGER: HeaderName = HeaderName::from_static("latest-ledger");

/// Serving settings.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    /// The public base URL for `_links` (else taken from the request's Host).
    pub public_url: Option<String>,
    /// Requests served at once by the whole process before new ones get 503.
    pub max_in_flight: usize,
    /// Time budget of a request (until its headers).
    pub request_timeout: Duration,
    /// Origins browsers may call from (`*` for any; none: no CORS headers).
    pub cors_allow_origins: Vec<String>,
}

/// Shared state of every handler.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

/// What the handlers share.
#[derive(Debug)]
pub struct Inner {
    /// History sources.
    pub sources: Arc<Sources>,
    /// Rendered responses.
    pub cache: ResponseCache,
    /// Cache-Control policy.
    pub policy: PolicyHandle,
    /// Serving settings.
    pub settings: ServeSettings,
    /// Open event streams (bounded per pod).
    pub streams: Arc<Semaphore>,
    /// Cancelled at shutdown: streams end.
    pub shutdown: CancellationToken,
    /// False once shutdown begins (readiness fails first).
    pub ready: AtomicBool,
    /// Database queries made for requests (also a metric; this one is per instance).
    pub db_queries: AtomicU64,
    /// Rate limits and quotas shared through Redis, when configured.
    pub limiter: Option<crate::ratelimit::SharedLimiter>,
    /// Pages read for event streams, shared by the streams at one data version.
    pub stream_pages: crate::stream::StreamPages,
    /// How far each source's history is complete (for immutable pages).
    pub completeness: crate::completeness::Completeness,
}

impl AppState {
    /// Wraps the shared state.
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// The shared state.
    pub fn inner(&self) -> &Inner {
        &self.0
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
