//! The middleware around the API: request metrics and `Latest-Ledger` on every
//! response (`observe`), rate limits and quotas (`rate_limit`), and the problem
//! documents for requests refused by load shedding or the request timeout
//! (`overloaded`), and problem documents for everything the HTTP layer itself refuses
//! (`http_problems`: over-long URIs and headers, request bodies, wrong methods), and
//! one `Vary` header out of the routes' and the CORS layer's (`merge_vary`).
//!
//! What must hold: every response carries `Latest-Ledger` when a tip is known; problem
//! documents get the error class of the Cache-Control policy; a rate-limit decision is
//! one Redis round trip and its headers are on every limited response; no error
//! leaves the reader without being `application/problem+json`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::BoxError;

use crate::policy::Class;
use crate::problem::{Problem, ProblemMarker};
use crate::state::{AppState, LATEST_LEDGER};

/// Folds the `Vary` headers of a response (a route's `Accept, Accept-Encoding` and the
/// CORS layer's `origin, access-control-request-*`) into one: each field name once,
/// compared case-insensitively, in first-seen order; `*` alone when any is `*`.
pub async fn merge_vary(mut response: Response) -> Response {
    merge_vary_headers(response.headers_mut());
    response
}

fn merge_vary_headers(headers: &mut axum::http::HeaderMap) {
    if headers.get_all(header::VARY).iter().nth(1).is_none() {
        return;
    }
    let mut names: Vec<&str> = Vec::new();
    for value in headers.get_all(header::VARY) {
        let Ok(text) = value.to_str() else { continue };
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name);
            }
        }
    }
    let merged = if names.contains(&"*") {
        "*".to_owned()
    } else {
        names.join(", ")
    };
    match HeaderValue::from_str(&merged) {
        // `insert` replaces every value of the name.
        Ok(value) => {
            headers.insert(header::VARY, value);
        }
        Err(_) => tracing::warn!(vary = %merged, "merged Vary is not a header value"),
    }
}

/// The longest request target (path and query) served; longer ones get 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) a request may carry; more get 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// The largest request body accepted (no route reads one); larger ones get 413.
pub const MAX_BODY_BYTES: u64 = 16 * 1024;

/// Refuses requests over the URI, header and body limits as problem documents (below
/// the connection layer's own, much larger, buffers), and turns every bodiless or
/// plain-text error response (a framework rejection such as 405) into one, keeping its
/// status and its `Allow` and `Retry-After`.
pub async fn http_problems(request: Request, next: Next) -> Response {
    let uri_bytes = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return Problem::http_status(
            StatusCode::URI_TOO_LONG,
            format!("The request target is {uri_bytes} bytes; at most {MAX_URI_BYTES} are served."),
        )
        .into_response();
    }
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Problem::http_status(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("The request headers are {header_bytes} bytes; at most {MAX_HEADER_BYTES} are accepted."),
        )
        .into_response();
    }
    let declared_body = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared_body.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Problem::http_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("This API takes no request body over {MAX_BODY_BYTES} bytes."),
        )
        .into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    // Framework rejections are bodiless or plain text; a JSON error document a route
    // chose (readiness's 503) stays as it is.
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|t| t.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<ProblemMarker>().is_some()
        || !plain
    {
        return response;
    }
    let (parts, _) = response.into_parts();
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => "This route does not answer that method.".to_owned(),
        _ => format!(
            "The request was refused: {}.",
            status.canonical_reason().unwrap_or("error")
        ),
    };
    let mut problem = Problem::http_status(status, detail).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            problem.headers_mut().insert(name, v.clone());
        }
    }
    problem
}

/// The problem for a request refused by load shedding (503) or the request timeout
/// (504).
pub async fn overloaded(error: BoxError) -> Response {
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
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = Instant::now();
    let mut response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    if response.extensions().get::<ProblemMarker>().is_some() {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            state.policy.current().header(&route, Class::Error),
        );
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

/// Rate limits and quotas (see `ratelimit::middleware`).
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    crate::ratelimit::middleware::enforce(state.limiter.clone(), request, next).await
}

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderMap, HeaderValue};

    use super::merge_vary_headers;

    fn vary(values: &[&'static str]) -> Vec<String> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::VARY, HeaderValue::from_static(v));
        }
        merge_vary_headers(&mut headers);
        headers
            .get_all(header::VARY)
            .iter()
            .map(|v| v.to_str().expect("text").to_owned())
            .collect()
    }

    #[test]
    fn vary_headers_become_one() {
        assert_eq!(
            vary(&[
                "Accept, Accept-Encoding",
                "origin, access-control-request-method, access-control-request-headers"
            ]),
            [
                "Accept, Accept-Encoding, origin, access-control-request-method, \
              access-control-request-headers"
            ]
        );
        assert_eq!(vary(&["Accept", "accept, Origin"]), ["Accept, Origin"]);
        assert_eq!(vary(&["Accept", "*"]), ["*"]);
        assert_eq!(
            vary(&["Accept, Accept-Encoding"]),
            ["Accept, Accept-Encoding"]
        );
        assert!(vary(&[]).is_empty());
    }
}
