//! The HTTP surface: state, handlers and the router.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{BoxError, Json, Router};
use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use shared::horizon::{format_time, LinkBase};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use crate::cache::{etag, if_none_match, Rendered, ResponseCache};
use crate::clients::{client_ip, presented_key, Client};
use crate::params::{self, Cursor, Order, PageRequest, Scope};
use crate::policy::{Class, PolicyHandle};
use crate::problem::{Problem, ProblemMarker};
use crate::sources::{is_source_failure, is_timeout, Chosen, Sources};
use crate::store::{self, PageResult, StoreError};
use crate::stream;

/// The `Latest-Ledger` header.
pub static LATEST_LEDGER: HeaderName = HeaderName::from_static("latest-ledger");
const HAL_JSON: &str = "application/hal+json; charset=utf-8";

/// Serving settings.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    /// The public base URL for `_links` (else taken from the request's Host).
    pub public_url: Option<String>,
    /// Requests served at once before new ones get 503.
    pub max_in_flight: usize,
    /// Time budget of a request (until its headers).
    pub request_timeout: Duration,
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
    /// Prometheus rendering.
    pub metrics: PrometheusHandle,
    /// Database queries made for requests (also a metric; this one is per instance).
    pub db_queries: AtomicU64,
    /// Rate limits and quotas shared through Redis, when configured.
    pub limiter: Option<crate::ratelimit::SharedLimiter>,
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

/// Which cache path answered (for metrics and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served from the response cache.
    Hit,
    /// Rendered from the database.
    Miss,
    /// 304 Not Modified.
    NotModified,
}

impl CacheOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::NotModified => "not_modified",
        }
    }
}

type QueryPairs = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

fn pairs(query: QueryPairs) -> Result<Vec<(String, String)>, Problem> {
    query
        .map(|Query(q)| q)
        .map_err(|e| Problem::invalid_field("query", format!("unreadable query string: {e}")))
}

fn link_base(state: &AppState, headers: &HeaderMap) -> LinkBase {
    if let Some(url) = &state.settings.public_url {
        return LinkBase(url.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    match host {
        Some(host) => LinkBase(format!("{proto}://{host}")),
        None => LinkBase(String::new()),
    }
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

/// GET /payments
#[utoipa::path(get, path = "/payments", tag = "payments",
    params(crate::openapi::PageParams),
    responses(
        (status = 200, description = "A page of payments (or an event stream with Accept: text/event-stream)", body = crate::openapi::PaymentsPage, content_type = "application/hal+json"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 400, description = "Invalid parameter", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Stale history, no source, saturated or too many streams", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 504, description = "Statement timeout", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn all_payments(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Response {
    payments(state, Ok(Scope::All), query, headers).await
}

/// GET /accounts/{account_id}/payments
#[utoipa::path(get, path = "/accounts/{account_id}/payments", tag = "payments",
    params(("account_id" = String, Path, description = "A G... account or a C... contract"), crate::openapi::AccountPageParams),
    responses(
        (status = 200, description = "A page of the account's payments", body = crate::openapi::PaymentsPage, content_type = "application/hal+json"),
        (status = 304, description = "Not modified: the account has no new payments"),
        (status = 400, description = "Invalid account id or parameter", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Stale history or no source", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn account_payments(
    State(state): State<AppState>,
    Path(account): Path<String>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Response {
    payments(
        state,
        params::parse_account(&account).map(Scope::Account),
        query,
        headers,
    )
    .await
}

/// GET /ledgers/{sequence}/payments
#[utoipa::path(get, path = "/ledgers/{sequence}/payments", tag = "payments",
    params(("sequence" = u32, Path, description = "Ledger sequence"), crate::openapi::PageParams),
    responses(
        (status = 200, description = "The ledger's payments", body = crate::openapi::PaymentsPage, content_type = "application/hal+json"),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Invalid sequence or parameter", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "Unknown ledger", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Stale history or no source", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn ledger_payments(
    State(state): State<AppState>,
    Path(sequence): Path<String>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Response {
    payments(
        state,
        params::parse_ledger(&sequence).map(Scope::Ledger),
        query,
        headers,
    )
    .await
}

/// GET /transactions/{hash}/payments
#[utoipa::path(get, path = "/transactions/{hash}/payments", tag = "payments",
    params(("hash" = String, Path, description = "Transaction hash, 64 hex digits: a fee bump's own or that of the transaction it wraps"), crate::openapi::PageParams),
    responses(
        (status = 200, description = "The transaction's payments (failed ones included)", body = crate::openapi::PaymentsPage, content_type = "application/hal+json"),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Invalid hash or parameter", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "Unknown transaction", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Stale history or no source", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn transaction_payments(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    headers: HeaderMap,
    query: QueryPairs,
) -> Response {
    let hash = hash.to_ascii_lowercase();
    payments(
        state,
        params::parse_hash(&hash).map(Scope::Transaction),
        query,
        headers,
    )
    .await
}

async fn payments(
    state: AppState,
    scope: Result<Scope, Problem>,
    query: QueryPairs,
    headers: HeaderMap,
) -> Response {
    let request = match scope.and_then(|scope| {
        let last_event_id = headers.get("last-event-id").and_then(|h| h.to_str().ok());
        PageRequest::parse(scope, &pairs(query)?, last_event_id)
    }) {
        Ok(r) => r,
        Err(problem) => return problem.into_response(),
    };
    let base = link_base(&state, &headers);
    if wants_event_stream(&headers) {
        return stream::open(state, request, base).await;
    }
    let condition = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let mut failed: Vec<String> = Vec::new();
    loop {
        let chosen = match state.sources.choose(&failed) {
            Ok(c) => c,
            Err(problem) => return problem.into_response(),
        };
        match page_response(&state, &chosen, &request, &base, condition.as_deref()).await {
            Ok(response) => return response,
            Err(StoreError::Database(e)) if is_source_failure(&e) => {
                tracing::warn!(source = %chosen.source.name, error = %e, "source failed; retrying on another");
                metrics::counter!("reader_source_failures_total", "source" => chosen.source.name.clone())
                    .increment(1);
                chosen.source.mark_down(&e.to_string());
                failed.push(chosen.source.name.clone());
            }
            Err(StoreError::Database(e)) if is_timeout(&e) => {
                return Problem::timeout("The query took longer than the statement timeout.")
                    .into_response()
            }
            Err(e) => {
                tracing::error!(error = %e, request = %request.normalized(), "page query failed");
                return Problem::internal().into_response();
            }
        }
    }
}

fn page_headers(
    state: &AppState,
    response: &mut Response,
    route: &str,
    etag: &str,
    class: Class,
    tip: u32,
) {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(state.policy.current().value(route, class)) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    headers.insert(LATEST_LEDGER.clone(), HeaderValue::from(tip));
}

fn respond(
    state: &AppState,
    request: &PageRequest,
    rendered: &Rendered,
    tip: u32,
    not_modified: bool,
    outcome: CacheOutcome,
) -> Response {
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (StatusCode::OK, rendered.body.clone()).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(HAL_JSON));
        r
    };
    let outcome = if not_modified {
        CacheOutcome::NotModified
    } else {
        outcome
    };
    metrics::counter!("reader_cache_total", "outcome" => outcome.as_str()).increment(1);
    response.extensions_mut().insert(outcome);
    page_headers(
        state,
        &mut response,
        request.scope.route(),
        &rendered.etag,
        rendered.class,
        tip,
    );
    response
}

fn not_modified(
    state: &AppState,
    request: &PageRequest,
    etag: String,
    class: Class,
    tip: u32,
) -> Response {
    let rendered = Rendered {
        body: Bytes::new(),
        etag,
        class,
    };
    respond(
        state,
        request,
        &rendered,
        tip,
        true,
        CacheOutcome::NotModified,
    )
}

/// One page: from a conditional match, from the cache, or from the database.
async fn page_response(
    state: &AppState,
    chosen: &Chosen,
    request: &PageRequest,
    base: &LinkBase,
    condition: Option<&str>,
) -> Result<Response, StoreError> {
    let view = chosen.view;
    let tip = view.tip;
    let generation = view.generation.to_string();
    let normalized = request.normalized();
    // A closed ledger's and a transaction's payments never change: neither their key
    // nor their tag depends on the tip.
    let fixed = match request.scope {
        Scope::Ledger(seq) => seq <= tip,
        Scope::Transaction(_) => true,
        _ => false,
    };
    let fixed_etag = || {
        if fixed {
            etag('i', &[&base.0, &normalized])
        } else {
            etag('i', &[&base.0, &normalized, &generation])
        }
    };
    if let Some(condition) = condition {
        let tag = fixed_etag();
        if if_none_match(condition, &tag) {
            // Only ever issued for a page that cannot change.
            return Ok(not_modified(state, request, tag, Class::Immutable, tip));
        }
    }
    let key = if fixed {
        format!("fixed|{}|{normalized}", base.0)
    } else {
        format!("{tip}.{generation}|{}|{normalized}", base.0)
    };
    if let Some(hit) = state.cache.get(&key).await {
        let matched = condition.is_some_and(|c| if_none_match(c, &hit.etag));
        return Ok(respond(
            state,
            request,
            &hit,
            tip,
            matched,
            CacheOutcome::Hit,
        ));
    }

    // Per-account tags follow the account's own activity, so they survive tips that did
    // not touch it. `cursor=now` pages depend on the tip itself.
    let account = match &request.scope {
        Scope::Account(a) if request.cursor != Cursor::Now => Some(a.as_str()),
        _ => None,
    };
    let head_etag = |activity: Option<(i64, u32)>| match (account, activity) {
        (Some(_), None) => etag('a', &[&base.0, &normalized, &generation, "none"]),
        (Some(_), Some((id, ledger))) if ledger <= tip => {
            etag('a', &[&base.0, &normalized, &generation, &id.to_string()])
        }
        _ => etag('t', &[&base.0, &normalized, &generation, &tip.to_string()]),
    };
    let pool = &chosen.source.pool;
    let lookup_activity = || async {
        match account {
            Some(a) => {
                state.db_queries.fetch_add(1, Ordering::Relaxed);
                store::account_activity(pool, a).await
            }
            None => Ok(None),
        }
    };
    let read_page = || async {
        state.db_queries.fetch_add(1, Ordering::Relaxed);
        store::page(pool, request, tip).await
    };
    let (activity, page) = match condition {
        // Conditional: the tag first, and rows only if it does not match.
        Some(condition) => {
            let activity = lookup_activity().await?;
            let tag = head_etag(activity);
            if !fixed && if_none_match(condition, &tag) {
                return Ok(not_modified(state, request, tag, Class::Head, tip));
            }
            (activity, read_page().await?)
        }
        // Unconditional: both at once, on two connections.
        None => {
            let (activity, page) = tokio::join!(lookup_activity(), read_page());
            (activity?, page?)
        }
    };
    let records = match page {
        PageResult::Records(r) => r,
        PageResult::Missing(problem) => {
            let mut response = problem.into_response();
            response
                .headers_mut()
                .insert(LATEST_LEDGER.clone(), HeaderValue::from(tip));
            return Ok(response);
        }
    };
    let full_and_closed = request.order == Order::Asc
        && request.cursor != Cursor::Now
        && records.len() == request.limit as usize
        && records.last().is_some_and(|r| r.id.ledger_seq < tip);
    let (class, tag) = if fixed || full_and_closed {
        (Class::Immutable, fixed_etag())
    } else {
        (Class::Head, head_etag(activity))
    };
    let body = serde_json::to_vec(&crate::page::render(request, &records, base)).map_err(|e| {
        StoreError::Corrupt(crate::records::CorruptRow {
            id: -1,
            reason: e.to_string(),
        })
    })?;
    let rendered = Arc::new(Rendered {
        body: Bytes::from(body),
        etag: tag,
        class,
    });
    state.cache.insert(key, rendered.clone()).await;
    let matched = condition.is_some_and(|c| if_none_match(c, &rendered.etag));
    Ok(respond(
        state,
        request,
        &rendered,
        tip,
        matched,
        CacheOutcome::Miss,
    ))
}

/// GET /
#[utoipa::path(get, path = "/", tag = "meta",
    responses(
        (status = 200, description = "Network, newest and oldest ledger, version", body = crate::openapi::Root),
        (status = 503, description = "No history source", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn root(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let overview = state.sources.overview();
    let Some(best) = overview.best else {
        return match state.sources.choose(&[]) {
            Err(problem) => problem.into_response(),
            Ok(_) => Problem::unavailable("No history source is ready.").into_response(),
        };
    };
    let base = link_base(&state, &headers);
    let link = |path: &str| json!({ "href": format!("{}{path}", base.0), "templated": path.contains('{') });
    let mut response = Json(json!({
        "_links": {
            "self": link("/"),
            "payments": link("/payments{?cursor,limit,order,include_failed,join,asset,from_time,to_time}"),
            "account_payments": link("/accounts/{account_id}/payments{?cursor,limit,order,include_failed,join,asset,direction,from_time,to_time}"),
            "ledger_payments": link("/ledgers/{sequence}/payments{?cursor,limit,order,include_failed,join,asset}"),
            "transaction_payments": link("/transactions/{hash}/payments{?cursor,limit,order,join,asset}"),
            "openapi": link("/openapi.json"),
        },
        "network_passphrase": overview.network,
        "history_latest_ledger": best.tip,
        "history_latest_ledger_closed_at": format_time(best.tip_closed_at),
        "history_elder_ledger": best.oldest,
        "network_latest_ledger": overview.newest_tip,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=1"),
    );
    response
}

/// GET /health: liveness only (no dependency is consulted).
#[utoipa::path(get, path = "/health", tag = "meta", responses((status = 200, description = "The process is alive")))]
pub async fn health() -> Response {
    let mut r = Json(json!({ "status": "ok" })).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// GET /health/ready: a source is reachable and fresh, and shutdown has not begun.
#[utoipa::path(get, path = "/health/ready", tag = "meta", responses(
    (status = 200, description = "Ready to serve"),
    (status = 503, description = "Not ready: shutting down, or no fresh source"),
))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let overview = state.sources.overview();
    let accepting = state.ready.load(Ordering::Relaxed);
    let ok = accepting && overview.best.is_some();
    let limiter = match &state.limiter {
        None => "off",
        Some(l) if l.degraded() => "degraded",
        Some(_) => "ok",
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let reason = if !accepting {
        Some("shutting down")
    } else if overview.best.is_none() {
        Some("no reachable source within the lag threshold")
    } else {
        None
    };
    let mut r = (
        status,
        Json(json!({
            "status": if ok { "ready" } else { "not_ready" },
            "reason": reason,
            "newest_ledger": overview.newest_tip,
            "rate_limiter": limiter,
            "sources": overview.sources,
        })),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// GET /metrics (Prometheus text format).
#[utoipa::path(get, path = "/metrics", tag = "meta", responses((status = 200, description = "Prometheus metrics", content_type = "text/plain")))]
pub async fn render_metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// GET /openapi.json
#[utoipa::path(get, path = "/openapi.json", tag = "meta", responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn openapi_document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_bytes(),
    )
        .into_response()
}

/// GET /constant: a route that does no work, the benchmarks' reference point.
#[utoipa::path(get, path = "/constant", tag = "meta", responses((status = 200, description = "The text ok", content_type = "text/plain")))]
pub async fn constant() -> &'static str {
    "ok"
}

async fn fallback() -> Response {
    Problem::not_found("There is no such route.").into_response()
}

async fn overloaded(error: BoxError) -> Response {
    if error.is::<tower::load_shed::error::Overloaded>() {
        metrics::counter!("reader_rejected_total", "reason" => "saturated").increment(1);
        Problem::unavailable("This reader is at its concurrency limit; retry shortly.")
            .into_response()
    } else if error.is::<tower::timeout::error::Elapsed>() {
        metrics::counter!("reader_rejected_total", "reason" => "timeout").increment(1);
        Problem::timeout("The request took longer than the request timeout.").into_response()
    } else {
        tracing::error!(%error, "request failed");
        Problem::internal().into_response()
    }
}

/// Request metrics, `Latest-Ledger` on every response, and the error class of the
/// Cache-Control policy on problem documents.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = Instant::now();
    let mut response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    if response.extensions().get::<ProblemMarker>().is_some() {
        if let Ok(v) = HeaderValue::from_str(state.policy.current().value(&route, Class::Error)) {
            response.headers_mut().insert(header::CACHE_CONTROL, v);
        }
    }
    if !response.headers().contains_key(&LATEST_LEDGER) {
        if let Some(tip) = state.sources.best_tip() {
            response
                .headers_mut()
                .insert(LATEST_LEDGER.clone(), HeaderValue::from(tip));
        }
    }
    metrics::counter!("reader_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("reader_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Rate limits: identifies the client, takes one decision (one Redis round trip), adds
/// `RateLimit-Policy` and `RateLimit` to the response, refuses with 429 (or 401 for an
/// unknown key), and counts the response's bytes against the client's quota.
async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(limiter) = state.limiter.clone() else {
        return next.run(request).await;
    };
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let headers = request.headers();
    let query = request.uri().query();
    let client = match presented_key(headers, query) {
        Some(key) if !limiter.config().keys.is_empty() => match limiter.client_for_key(&key) {
            Some(client) => client,
            None => {
                metrics::counter!("reader_ratelimit_unknown_keys_total").increment(1);
                return Problem::unknown_api_key().into_response();
            }
        },
        _ => Client::Ip(client_ip(peer, headers, &limiter.config().trusted_proxies)),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let limit = query.and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("limit="))
            .and_then(|v| v.parse::<u32>().ok())
    });
    let cost = limiter.cost(&route, limit, wants_event_stream(headers));
    let decision = limiter.decide(&client, cost).await;
    let (_, tier) = limiter.tier(&client);
    let policy = HeaderValue::from_str(&limiter.policy_header(tier)).ok();
    let current = HeaderValue::from_str(&limiter.state_header(tier, &decision)).ok();
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        Problem::rate_limited(
            decision.refused_by.unwrap_or("requests"),
            decision.retry_after,
        )
        .into_response()
    };
    let out = response.headers_mut();
    if let Some(v) = policy {
        out.insert("ratelimit-policy", v);
    }
    if let Some(v) = current {
        out.insert("ratelimit", v);
    }
    if decision.allowed && tier.bytes > 0 {
        if let Some(bytes) = axum::body::HttpBody::size_hint(response.body()).exact() {
            if bytes > 0 {
                tokio::spawn(async move { limiter.record_bytes(&client, bytes).await });
            }
        }
    }
    response
}

/// The router: API routes behind load shedding, a concurrency limit and a timeout;
/// operational routes outside them.
pub fn router(state: AppState) -> Router {
    let limits = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(state.settings.max_in_flight.max(1))
        .timeout(state.settings.request_timeout);
    let api = Router::new()
        .route("/", get(root))
        .route("/payments", get(all_payments))
        .route("/accounts/{account_id}/payments", get(account_payments))
        .route("/ledgers/{sequence}/payments", get(ledger_payments))
        .route("/transactions/{hash}/payments", get(transaction_payments))
        .route("/constant", get(constant))
        .route_layer(limits)
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    let ops = Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .route("/openapi.json", get(openapi_document));
    api.merge(ops)
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}
