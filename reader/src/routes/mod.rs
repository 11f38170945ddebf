//! The API's handlers, one module per resource, and what they share: extractors whose
//! rejections are problem documents, the link base, and the response of a rendered
//! (cacheable) resource with its validators and Cache-Control.
//!
//! What must hold: every handler returns `Result<Response, Problem>`, so every error a
//! client sees is `application/problem+json`; a cacheable body depends on no request
//! header that `Vary` does not name.

pub mod meta;
pub mod operations;
pub mod payments;
pub mod transactions;

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shared::horizon::LinkBase;

use crate::cache::{Encoding, Rendered};
use crate::policy::Class;
use crate::problem::Problem;
use crate::state::{AppState, LATEST_LEDGER};

/// The media type of every rendered resource.
pub const HAL_JSON: &str = "application/hal+json; charset=utf-8";

/// One path parameter as text; a segment that is not UTF-8 (or is missing) is a 400
/// problem document naming `field`'s route parameter.
#[derive(Debug)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => {
                let field = parts
                    .extensions
                    .get::<axum::extract::MatchedPath>()
                    .and_then(|p| {
                        let p = p.as_str();
                        let start = p.find('{')?;
                        let end = p[start..].find('}')?;
                        Some(p[start + 1..start + end].to_owned())
                    })
                    .unwrap_or_else(|| "path".to_owned());
                Err(Problem::invalid_field(
                    &field,
                    format!("unreadable path parameter: {}", rejection.body_text()),
                ))
            }
        }
    }
}

/// The query string as ordered pairs, percent-decoded (lossily: bytes that are not
/// UTF-8 become U+FFFD, and a parameter the handlers check is then refused by name),
/// borrowed from the request where nothing needed decoding.
pub fn query_pairs(query: Option<&str>) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    query.map_or_else(Vec::new, |q| form_urlencoded::parse(q.as_bytes()).collect())
}

/// Where `_links` point: the configured public URL, else the request's Host (checked
/// to be a plain host name) and `X-Forwarded-Proto`.
pub fn link_base(state: &AppState, headers: &HeaderMap) -> LinkBase {
    BaseRef::of(state, headers).to_link_base()
}

/// `X-Forwarded-Proto`, named once (a name given as text is parsed on every lookup).
static X_FORWARDED_PROTO: header::HeaderName = header::HeaderName::from_static("x-forwarded-proto");

/// The bytes of a plain host name (and port, or bracketed IPv6 address): ASCII letters
/// and digits and `.-:[]`.
const HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']');
        b += 1;
    }
    table
};

/// Where `_links` point, borrowed from the settings or the request: what a cache key
/// needs without allocating. The [`LinkBase`] a body is rendered with is built from it
/// only when a page is rendered, never on a cache hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseRef<'a> {
    /// The configured public URL.
    Configured(&'a str),
    /// The request's Host under the scheme `X-Forwarded-Proto` names (else `http`).
    Host {
        /// `http` or `https`.
        scheme: &'static str,
        /// The Host header, checked to be a plain host name.
        host: &'a str,
    },
    /// No usable Host: links are relative.
    Relative,
}

impl<'a> BaseRef<'a> {
    /// The base for a request with `headers`.
    pub fn of(state: &'a AppState, headers: &'a HeaderMap) -> Self {
        if let Some(url) = &state.settings.public_url {
            return Self::Configured(url);
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.bytes().all(|b| HOST_BYTES[usize::from(b)]));
        let scheme = match headers.get(&X_FORWARDED_PROTO).map(HeaderValue::as_bytes) {
            Some(b"https") => "https",
            _ => "http",
        };
        match host {
            Some(host) => Self::Host { scheme, host },
            None => Self::Relative,
        }
    }

    /// The base's text in pieces that concatenate to the [`LinkBase`]'s.
    pub fn parts(self) -> [&'a str; 3] {
        match self {
            Self::Configured(url) => [url, "", ""],
            Self::Host { scheme, host } => [scheme, "://", host],
            Self::Relative => ["", "", ""],
        }
    }

    /// The owned base links are rendered with.
    pub fn to_link_base(self) -> LinkBase {
        LinkBase(self.parts().concat())
    }
}

/// Whether the client asks for an event stream.
pub fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"))
}

/// The `If-None-Match` header, when present and readable.
pub fn condition(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
}

/// Which cache path answered (counted in `reader_cache_total`).
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

    /// Counts one answer in `reader_cache_total`. The three counters are registered
    /// once per process, not looked up by name and label on every hit.
    fn count(self) {
        static COUNTERS: std::sync::OnceLock<[metrics::Counter; 3]> = std::sync::OnceLock::new();
        let counters = COUNTERS.get_or_init(|| {
            [Self::Hit, Self::Miss, Self::NotModified]
                .map(|o| metrics::counter!("reader_cache_total", "outcome" => o.as_str()))
        });
        counters[self as usize].increment(1);
    }
}

/// The `Accept-Encoding` coding to send.
pub fn encoding(headers: &HeaderMap) -> Encoding {
    Encoding::negotiate(
        headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|h| h.to_str().ok()),
    )
}

/// The answer from the response cache under `key`, if it holds one: 304 when
/// `condition` matches its ETag, else the stored body.
pub async fn cached_response(
    state: &AppState,
    key: &str,
    route: &str,
    tip: u32,
    condition: Option<&str>,
    encoding: Encoding,
) -> Option<Response> {
    let hit = state.cache.get(key).await?;
    let matched = condition.is_some_and(|c| crate::conditional::matches(c, &hit.etag));
    Some(rendered_response(
        state,
        route,
        &hit,
        tip,
        matched,
        CacheOutcome::Hit,
        encoding,
    ))
}

/// The response for a rendered resource of `route`: the body in `encoding` (or 304
/// when `not_modified`), the ETag of that encoding, Cache-Control for its class,
/// `Vary: Accept, Accept-Encoding` and `Latest-Ledger`.
pub fn rendered_response(
    state: &AppState,
    route: &str,
    rendered: &Rendered,
    tip: u32,
    not_modified: bool,
    outcome: CacheOutcome,
    encoding: Encoding,
) -> Response {
    // One allocation for the five to eight headers of a page and those the layers
    // outside add (CORS), not one per growth step.
    let mut headers = HeaderMap::with_capacity(16);
    let (status, body, outcome, encoding) = if not_modified {
        (
            StatusCode::NOT_MODIFIED,
            Body::empty(),
            CacheOutcome::NotModified,
            encoding,
        )
    } else {
        let (body, used) = rendered.encoded(encoding);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(HAL_JSON));
        if let Some(token) = used.token() {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(token));
        }
        (StatusCode::OK, Body::from(body), outcome, used)
    };
    outcome.count();
    if let Some(v) = rendered.etag_header(encoding) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        state.policy.current().header(route, rendered.class),
    );
    headers.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Encoding"),
    );
    headers.insert(LATEST_LEDGER.clone(), HeaderValue::from(tip));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// A 304 for `etag` of `class`.
pub fn not_modified(
    state: &AppState,
    route: &str,
    etag: String,
    class: Class,
    tip: u32,
    encoding: Encoding,
) -> Response {
    let rendered = Rendered::new(bytes::Bytes::new(), etag, class);
    rendered_response(
        state,
        route,
        &rendered,
        tip,
        true,
        CacheOutcome::NotModified,
        encoding,
    )
}

/// A problem that carries the tip it was decided at.
pub fn missing_at(problem: Problem, tip: u32) -> Response {
    let mut response = problem.into_response();
    response
        .headers_mut()
        .insert(LATEST_LEDGER.clone(), HeaderValue::from(tip));
    response
}

/// A resource that never changes once its ledger has closed (one operation, one
/// transaction), at `path` of `route`: 304 for its tag before anything is read (never
/// for `*`), else from the response cache, else read through `fetch` at the chosen
/// source (None: a 404 from `missing`), rendered, cached and sent as immutable.
pub async fn immutable_resource<F, Fut>(
    state: &AppState,
    route: &'static str,
    path: &str,
    headers: &HeaderMap,
    missing: impl Fn() -> Problem,
    fetch: F,
) -> Result<Response, Problem>
where
    F: Fn(crate::sources::Chosen, LinkBase) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Vec<u8>>, crate::store::StoreError>>,
{
    let base = BaseRef::of(state, headers);
    let condition = condition(headers);
    let encoding = encoding(headers);
    // A hit without a condition needs neither the owned base nor the tag (a SHA-256):
    // both are made only when a condition is checked or the resource is read.
    let base_text = || base.parts().concat();
    let tag_of = |base: &str| crate::cache::etag('i', &[base, path]);
    let key = crate::cache::page_key(true, 0, 0, base.parts(), path);
    let (key, base_text, tag_of) = (&key, &base_text, &tag_of);
    let missing = &missing;
    let fetch = &fetch;
    state
        .sources
        .read(|chosen| async move {
            let tip = chosen.view.tip;
            if let Some(condition) = condition {
                let tag = tag_of(&base_text());
                if crate::conditional::matches_before_reading(condition, &tag) {
                    return Ok::<_, crate::store::StoreError>(not_modified(
                        state,
                        route,
                        tag,
                        Class::Immutable,
                        tip,
                        encoding,
                    ));
                }
            }
            if let Some(hit) = cached_response(state, key, route, tip, condition, encoding).await {
                return Ok(hit);
            }
            state
                .db_queries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let base = LinkBase(base_text());
            let tag = tag_of(&base.0);
            let Some(body) = fetch(chosen, base).await? else {
                return Ok(missing_at(missing(), tip));
            };
            let rendered = std::sync::Arc::new(Rendered::new(
                bytes::Bytes::from(body),
                tag,
                Class::Immutable,
            ));
            state.cache.insert(key.clone(), rendered.clone()).await;
            let matched = condition.is_some_and(|c| crate::conditional::matches(c, &rendered.etag));
            Ok(rendered_response(
                state,
                route,
                &rendered,
                tip,
                matched,
                CacheOutcome::Miss,
                encoding,
            ))
        })
        .await
}
