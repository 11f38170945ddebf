//! The HTTP side of rate limiting: identifies the client, prices the request, takes one
//! decision, adds `RateLimit-Policy` and `RateLimit`, refuses with 429 (or 401 for an
//! unknown key), caps the event streams a client holds open, and counts the response's
//! bytes (a stream's as it sends them) against the client's quota.
//!
//! What must hold: every API response passes through here when limits are configured
//! (the router puts it on every API route); a refused request never reaches a handler.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::SharedLimiter;
use crate::clients::{client_ip, presented_key, query_parameter, Client, Forwarders};
use crate::problem::Problem;

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"))
}

/// Applies `limiter` (when configured) to one request.
pub async fn enforce(limiter: Option<SharedLimiter>, request: Request, next: Next) -> Response {
    let Some(limiter) = limiter else {
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
        _ => {
            let config = limiter.config();
            let from = Forwarders {
                proxies: &config.trusted_proxies,
                cloudflare: &config.cloudflare_ranges,
            };
            Client::at(
                client_ip(peer, headers, from),
                config.ipv4_prefix,
                config.ipv6_prefix,
            )
        }
    };
    // Priced from the parameter as the handlers decode it (`limit=%32%30%30` is 200).
    let limit = query
        .and_then(|q| query_parameter(q, "limit"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    let stream = wants_event_stream(headers);
    let slot = if stream {
        match limiter.open_stream(&client).await {
            Some(slot) => Some(slot),
            None => {
                metrics::counter!("reader_ratelimit_stream_cap_total").increment(1);
                return Problem::rate_limited("streams", 1).into_response();
            }
        }
    } else {
        None
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", |p| p.as_str());
    let cost = limiter.cost(route, limit, stream);
    let decision = limiter.decide(&client, cost).await;
    let (tier_name, tier) = limiter.tier(&client);
    let policy = limiter.policy_header_value(tier_name);
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
    if let Some(slot) = slot.filter(|_| decision.allowed && is_event_stream(&response)) {
        // The slot lives as long as the stream, whose bytes count as they go out.
        let (parts, body) = response.into_parts();
        return Response::from_parts(parts, super::streams::metered(limiter, client, slot, body));
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
