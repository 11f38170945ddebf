//! API errors as RFC 9457 problem documents (`application/problem+json`) with Horizon's
//! fields: `type`, `title`, `status`, `detail` and `extras` (`invalid_field`, `reason`).
//! Every error carries `Cache-Control: no-store` unless the policy file says otherwise.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};

const TYPE_BASE: &str = "https://stellar.org/horizon-errors/";

/// One API error.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Horizon's error slug (`bad_request`, `not_found`, `stale_history`, ...).
    pub slug: &'static str,
    /// Short summary, fixed per slug.
    pub title: &'static str,
    /// What went wrong with this request.
    pub detail: String,
    /// Additional fields (`invalid_field`, `reason`, ...).
    pub extras: Option<Value>,
    /// Seconds after which a retry may succeed (`Retry-After`).
    pub retry_after: Option<u64>,
}

/// The problem document as serialised.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProblemDocument {
    /// A URI naming the kind of error.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind of error.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// Machine-readable details; `invalid_field` names the parameter at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub extras: Option<Value>,
}

impl Problem {
    fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            status,
            slug,
            title,
            detail,
            extras: None,
            retry_after: None,
        }
    }

    /// 400: a parameter is invalid.
    pub fn invalid_field(field: &str, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let mut p = Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Bad Request",
            "The request you sent was invalid in some way.".into(),
        );
        p.detail = format!("The request you sent was invalid in some way: {field}: {reason}");
        p.extras = Some(json!({ "invalid_field": field, "reason": reason }));
        p
    }

    /// 401: an API key that is not configured.
    pub fn unknown_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "The API key given (X-API-Key or api_key) is not known.".into(),
        )
    }

    /// 429: a rate limit or quota is exhausted; `policy` names it.
    pub fn rate_limited(policy: &str, retry_after: u64) -> Self {
        let mut p = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            "Rate Limit Exceeded",
            format!(
                "The {policy} limit of this client is exhausted; retry in {retry_after} s. \
                 See the RateLimit-Policy and RateLimit headers."
            ),
        )
        .with_extra("policy", policy);
        p.retry_after = Some(retry_after);
        p
    }

    /// 404: the ledger, transaction or route does not exist.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Resource Missing",
            detail.into(),
        )
    }

    /// 406: the Accept header asks for something this route cannot produce.
    pub fn not_acceptable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "An acceptable response content-type could not be provided for this request",
            detail.into(),
        )
    }

    /// 503: every history source lags the network beyond the threshold.
    pub fn stale_history(detail: impl Into<String>) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stale_history",
            "Historical DB Is Too Stale",
            detail.into(),
        );
        p.retry_after = Some(5);
        p
    }

    /// 503: no history source can be reached, or the pod is saturated or shutting down.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service Unavailable",
            detail.into(),
        );
        p.retry_after = Some(1);
        p
    }

    /// 504: the database did not answer within the statement timeout.
    pub fn timeout(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "Timeout",
            detail.into(),
        )
    }

    /// 500: a fault of this service (logged with the cause; the client sees no internals).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "Internal Server Error",
            "An error occurred while processing this request. It has been logged.".into(),
        )
    }

    /// A refusal by the HTTP layer itself (405, 413, 414, 431, ...): the status, its
    /// standard title, and Horizon-style slug.
    pub fn http_status(status: StatusCode, detail: impl Into<String>) -> Self {
        let slug = match status.as_u16() {
            400 => "bad_request",
            404 => "not_found",
            405 => "method_not_allowed",
            406 => "not_acceptable",
            408 => "timeout",
            413 => "payload_too_large",
            414 => "uri_too_long",
            431 => "request_header_fields_too_large",
            500..=599 => "server_error",
            _ => "bad_request",
        };
        Self::new(
            status,
            slug,
            status.canonical_reason().unwrap_or("Error"),
            detail.into(),
        )
    }

    /// Adds or replaces one member of `extras`.
    pub fn with_extra(mut self, key: &str, value: impl Into<Value>) -> Self {
        let extras = self.extras.get_or_insert_with(|| json!({}));
        if let Some(map) = extras.as_object_mut() {
            map.insert(key.to_owned(), value.into());
        }
        self
    }

    /// The serialised document.
    pub fn document(&self) -> ProblemDocument {
        ProblemDocument {
            kind: format!("{TYPE_BASE}{}", self.slug),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            extras: self.extras.clone(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.slug, self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.document()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        // Lets the policy layer recognise an error without parsing the body.
        response.extensions_mut().insert(ProblemMarker);
        response
    }
}

/// Marks a response as a problem document (for the Cache-Control policy).
#[derive(Clone, Copy, Debug)]
pub struct ProblemMarker;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_field_names_the_field() {
        let doc = Problem::invalid_field("limit", "must be between 1 and 200").document();
        let v = serde_json::to_value(doc).expect("serialises");
        assert_eq!(v["type"], "https://stellar.org/horizon-errors/bad_request");
        assert_eq!(v["status"], 400);
        assert_eq!(v["extras"]["invalid_field"], "limit");
    }
}
