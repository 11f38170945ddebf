//! The service's own routes: `/` (network, newest and oldest ledger), liveness and
//! readiness, Prometheus metrics, the OpenAPI document and `/constant` (the benchmarks'
//! reference point).
//!
//! What must hold: readiness tells the truth (fails once shutdown begins or no source is
//! usable); liveness consults nothing; none of these is cacheable by a shared cache
//! except `/` for a second.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use shared::horizon::format_time;

use super::link_base;
use crate::problem::Problem;
use crate::state::AppState;

/// GET /
#[utoipa::path(get, path = "/", tag = "meta",
    responses(
        (status = 200, description = "Network, newest and oldest ledger, version", body = crate::openapi::Root),
        (status = 503, description = "No history source", body = crate::problem::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn root(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Problem> {
    let overview = state.sources.overview();
    let Some(best) = overview.best else {
        state.sources.choose(&[])?;
        return Err(Problem::unavailable("No history source is ready."));
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
            "operation": link("/operations/{id}"),
            "transaction": link("/transactions/{hash}"),
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
    Ok(response)
}

/// GET /health: liveness only (no dependency is consulted).
#[utoipa::path(get, path = "/health", tag = "meta", responses((status = 200, description = "The process is alive")))]
pub async fn health() -> Response {
    let mut r = Json(json!({ "status": "ok" })).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// GET /health/ready: shutdown has not begun and the pod has warmed up (see
/// `Sources::readiness`: fleet-wide conditions are reported, not failed).
#[utoipa::path(get, path = "/health/ready", tag = "meta", responses(
    (status = 200, description = "Ready to serve (status degraded when no source is usable: a fleet-wide condition)"),
    (status = 503, description = "Not ready: shutting down, or no source usable since start"),
))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let overview = state.sources.overview();
    let accepting = state.ready.load(Ordering::Relaxed);
    let sources = state.sources.readiness();
    let ok = accepting && sources.ready;
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
    } else {
        sources.reason
    };
    let mut r = (
        status,
        Json(json!({
            "status": match (ok, reason) {
                (true, None) => "ready",
                (true, Some(_)) => "degraded",
                (false, _) => "not_ready",
            },
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
pub async fn render_metrics() -> Response {
    shared::telemetry::metrics_endpoint().await
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
