//! The router: API routes behind the rate limiter, load shedding, the process-wide
//! concurrency limit and the request timeout; operational routes outside them; problem
//! documents for unknown routes and for whatever the HTTP layer refuses; metrics around
//! everything; CORS outermost, so browsers can read every response, refusals included
//! (with its `Vary` merged into the routes' one).

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Router};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::middleware::{http_problems, observe, overloaded, rate_limit};
use crate::problem::Problem;
use crate::routes::{meta, operations, payments, transactions};
use crate::state::{AppState, LATEST_LEDGER};

/// CORS for browsers: the configured origins (or any), preflights answered for a day,
/// and the headers a page's script needs to read exposed.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let any = origins.iter().any(|o| o == "*");
    let allow = if any {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    // `*` is the same answer for every origin and every preflight (the allowed methods
    // and headers are fixed lists): nothing varies, so no `Vary` is added. A list of
    // origins echoes the request's `Origin`: then it must be named.
    let vary: Vec<HeaderName> = if any {
        Vec::new()
    } else {
        tower_http::cors::preflight_request_headers().collect()
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .vary(vary)
            .allow_methods([Method::GET, Method::HEAD, Method::OPTIONS])
            .allow_headers([
                header::ACCEPT,
                header::CACHE_CONTROL,
                header::IF_NONE_MATCH,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("x-api-key"),
            ])
            .expose_headers([
                LATEST_LEDGER.clone(),
                header::ETAG,
                HeaderName::from_static("ratelimit"),
                HeaderName::from_static("ratelimit-policy"),
                header::RETRY_AFTER,
            ])
            .max_age(Duration::from_secs(86_400)),
    )
}

async fn fallback() -> Response {
    Problem::not_found("There is no such route.").into_response()
}

/// The application.
pub fn router(state: AppState) -> Router {
    // `route_layer` builds the stack once per route: the limit must be one semaphore
    // for the whole process, shared by every clone (a per-route `concurrency_limit`
    // would give each route its own).
    let limits = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(
            state.settings.max_in_flight.max(1),
        ))
        .timeout(state.settings.request_timeout);
    let api = Router::new()
        .route("/", get(meta::root))
        .route("/payments", get(payments::all_payments))
        .route(
            "/accounts/{account_id}/payments",
            get(payments::account_payments),
        )
        .route(
            "/ledgers/{sequence}/payments",
            get(payments::ledger_payments),
        )
        .route(
            "/transactions/{hash}/payments",
            get(payments::transaction_payments),
        )
        .route("/operations/{id}", get(operations::operation))
        .route("/transactions/{hash}", get(transactions::transaction))
        .route("/constant", get(meta::constant))
        .route_layer(limits)
        .route_layer(middleware::from_fn_with_state(state.clone(), rate_limit));
    let ops = Router::new()
        .route("/health", get(meta::health))
        .route("/health/ready", get(meta::ready))
        .route("/metrics", get(meta::render_metrics))
        .route("/openapi.json", get(meta::openapi_document));
    let app = api
        .merge(ops)
        .fallback(fallback)
        .layer(middleware::from_fn(http_problems))
        .layer(middleware::from_fn_with_state(state.clone(), observe));
    // Outermost: preflights are answered before any limit, and refusals (429, 503)
    // carry the CORS headers a browser needs to read them.
    let origins = &state.settings.cors_allow_origins;
    let app = match cors(origins) {
        // For a list of origins the CORS layer appends its own `Vary`: one header
        // leaves the reader.
        Some(cors) if !origins.iter().any(|o| o == "*") => app
            .layer(cors)
            .layer(middleware::map_response(crate::middleware::merge_vary)),
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.with_state(state)
}
