//! The writer's JSON-RPC client for Stellar RPC: `getHealth`, `getNetwork` and
//! `getLedgers`, one HTTP POST per call (hyper, with rustls and the platform's trust store
//! for `https` URLs: on Linux the system's CA bundle, or only the PEM file named by
//! `SSL_CERT_FILE` / the directories in `SSL_CERT_DIR` when set).
//!
//! Why not `stellar-rpc-client`'s own client: it is built on jsonrpsee with the library's
//! 10 MiB response cap and no way to change it, and a page of pubnet ledgers (1-3 MB of
//! XDR each, a third more in base64) is larger than that. Why not a jsonrpsee client of
//! our own: jsonrpsee reads the body into a growing buffer, copies the `result` into a raw
//! JSON value and parses it again, so each 2 MB base64 `metadataXdr` string was scanned
//! twice and copied three times; on a catch-up that was most of the writer's CPU.
//!
//! What must hold:
//! - an answer over the response cap is refused while it is read, never buffered whole
//!   (refused before reading when its `Content-Length` says so), and is reported as
//!   [`RpcError::TooLarge`], distinct from transport faults, so the caller asks for a
//!   smaller page instead of repeating the same request forever; HTTP 413 counts the same;
//! - a JSON-RPC error object is [`RpcError::Call`] with its code and message; a
//!   transport failure says why, with its causes (a refused certificate is named);
//! - `getLedgers` answers are read into a buffer the caller keeps and reuses, and parsed
//!   once, by [`ledgers_page`], into [`LedgersPage`], whose strings borrow from that
//!   buffer. `getHealth` and `getNetwork` answers are small and use `stellar-rpc-client`'s
//!   response types; its `GetLedgersResponse` owns every string, which is the copy this
//!   module exists to avoid, so `getLedgers` has its own borrowed struct.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_platform_verifier::BuilderVerifierExt as _;
use serde::{Deserialize, Serialize};
use stellar_rpc_client::{GetHealthResponse, GetNetworkResponse};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The answer was larger than the response cap.
    #[error("the RPC's answer exceeds the response cap of {cap} bytes")]
    TooLarge {
        /// The cap, in bytes.
        cap: u32,
    },
    /// The RPC answered with a JSON-RPC error.
    #[error("JSON-RPC error {code}: {message}")]
    Call {
        /// The JSON-RPC error code.
        code: i32,
        /// Its message.
        message: String,
    },
    /// The RPC could not be reached, timed out, or answered something unreadable.
    #[error("{0}")]
    Transport(String),
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A Stellar RPC endpoint.
#[derive(Debug, Clone)]
pub struct RpcClient {
    http: HttpClient,
    uri: Uri,
    url: String,
    timeout: Duration,
    max_response_bytes: u32,
    ids: Arc<AtomicU64>,
}

/// The endpoint's URI: `http` or `https`, with a host.
fn endpoint(url: &str) -> Result<Uri, RpcError> {
    let invalid =
        |e: &dyn std::fmt::Display| RpcError::Transport(format!("invalid RPC URL {url:?}: {e}"));
    let uri: Uri = url.parse().map_err(|e| invalid(&e))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid(&"the scheme must be http or https")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid(&"no host"));
    }
    Ok(uri)
}

/// The HTTP client: HTTP/1.1, keep-alive, TLS for `https` through rustls with the ring
/// provider and the platform's certificate verifier.
fn http_client() -> Result<HttpClient, RpcError> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| RpcError::Transport(format!("TLS configuration: {e}")))?
    .with_platform_verifier()
    .with_no_client_auth();
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_keepalive(Some(Duration::from_secs(30)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// An error and its causes, outermost first. hyper's own text ("client error
/// (Connect)") does not say why; its causes do (a refused connection, a certificate the
/// trust store does not accept, ...).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        // Some errors repeat their cause's text in their own.
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

/// A JSON-RPC 2.0 request.
#[derive(Serialize)]
struct Call<'a, P> {
    jsonrpc: &'static str,
    id: u64,
    method: &'a str,
    params: P,
}

/// A JSON-RPC 2.0 answer, parsed in one pass: `result` is the method's own type.
#[derive(Deserialize)]
struct Answer<T> {
    id: Option<u64>,
    result: Option<T>,
    error: Option<ErrorObject>,
}

/// A JSON-RPC error object.
#[derive(Deserialize)]
struct ErrorObject {
    code: i32,
    message: String,
}

/// Parses a JSON-RPC answer to request `id`; an error object is [`RpcError::Call`].
fn answer<'a, T: Deserialize<'a>>(body: &'a [u8], id: u64) -> Result<T, RpcError> {
    let answer: Answer<T> = serde_json::from_slice(body)
        .map_err(|e| RpcError::Transport(format!("unreadable JSON-RPC answer: {e}")))?;
    if let Some(error) = answer.error {
        return Err(RpcError::Call {
            code: error.code,
            message: error.message,
        });
    }
    if answer.id != Some(id) {
        return Err(RpcError::Transport(format!(
            "the answer's id {:?} is not the request's ({id})",
            answer.id
        )));
    }
    answer.result.ok_or_else(|| {
        RpcError::Transport("a JSON-RPC answer with neither result nor error".into())
    })
}

/// `getLedgers` parameters.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GetLedgersParams {
    start_ledger: u32,
    pagination: Pagination,
    xdr_format: &'static str,
}

#[derive(Serialize)]
struct Pagination {
    limit: usize,
}

/// No parameters: an empty object, as Stellar RPC accepts.
#[derive(Serialize)]
struct NoParams {}

/// A `getLedgers` answer, its strings borrowed from the body it was parsed from (fields
/// the writer does not use are skipped).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgersPage<'a> {
    /// The RPC's newest ledger.
    pub latest_ledger: u32,
    /// Its close time, unix seconds (a number, or a string as Stellar RPC sends it).
    #[serde(deserialize_with = "serde_aux::prelude::deserialize_number_from_string")]
    pub latest_ledger_close_time: i64,
    /// The RPC's oldest ledger.
    pub oldest_ledger: u32,
    /// The ledgers, in order.
    #[serde(borrow)]
    pub ledgers: Vec<PageLedger<'a>>,
}

/// One ledger of a [`LedgersPage`].
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageLedger<'a> {
    /// Its sequence.
    pub sequence: u32,
    /// Its `LedgerCloseMeta` as base64 XDR (borrowed unless the JSON escaped a character).
    #[serde(borrow)]
    pub metadata_xdr: Cow<'a, str>,
}

/// Parses a `getLedgers` answer read by [`RpcClient::get_ledgers`] (request `id`).
pub fn ledgers_page(body: &[u8], id: u64) -> Result<LedgersPage<'_>, RpcError> {
    answer(body, id)
}

impl RpcClient {
    /// A client for `url`; each call times out after `timeout`, and answers larger than
    /// `max_response_bytes` are refused.
    pub fn new(url: &str, timeout: Duration, max_response_bytes: u32) -> Result<Self, RpcError> {
        let uri = endpoint(url)?;
        Ok(Self {
            http: http_client()?,
            url: uri.to_string(),
            uri,
            timeout,
            max_response_bytes,
            ids: Arc::new(AtomicU64::new(1)),
        })
    }

    /// The endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The response cap, in bytes.
    pub fn max_response_bytes(&self) -> u32 {
        self.max_response_bytes
    }

    fn too_large(&self) -> RpcError {
        RpcError::TooLarge {
            cap: self.max_response_bytes,
        }
    }

    /// POSTs `method` and reads the answer into `body` (cleared first); returns the
    /// request's id. Bounded by the timeout, and by the response cap while reading.
    async fn post(
        &self,
        method: &str,
        params: impl Serialize,
        body: &mut Vec<u8>,
    ) -> Result<u64, RpcError> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let request = serde_json::to_vec(&Call {
            jsonrpc: "2.0",
            id,
            method,
            params,
        })
        .map_err(|e| RpcError::Transport(format!("cannot encode {method}: {e}")))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                "X-Client-Name",
                HeaderValue::from_static("stellar-payments-writer"),
            )
            .header(
                "X-Client-Version",
                HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(request)))
            .map_err(|e| RpcError::Transport(format!("cannot build the {method} request: {e}")))?;
        tokio::time::timeout(self.timeout, self.exchange(request, body))
            .await
            .map_err(|_| {
                RpcError::Transport(format!("{method}: no answer within {:?}", self.timeout))
            })??;
        Ok(id)
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        body: &mut Vec<u8>,
    ) -> Result<(), RpcError> {
        body.clear();
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| RpcError::Transport(with_causes(&e)))?;
        let status = response.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return Err(self.too_large());
        }
        if !status.is_success() {
            return Err(RpcError::Transport(format!("HTTP {status}")));
        }
        let cap = self.max_response_bytes as usize;
        let announced = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(length) = announced {
            if length > cap as u64 {
                return Err(self.too_large());
            }
            // Within the cap: the buffer takes the whole answer without growing.
            body.reserve(length as usize);
        }
        let mut incoming = Limited::new(response.into_body(), cap);
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    self.too_large()
                } else {
                    RpcError::Transport(format!("reading the answer: {e}"))
                }
            })?;
            if let Ok(data) = frame.into_data() {
                body.extend_from_slice(&data);
            }
        }
        Ok(())
    }

    /// A small call answered into an owned type.
    async fn call<T: serde::de::DeserializeOwned>(&self, method: &str) -> Result<T, RpcError> {
        let mut body = Vec::new();
        let id = self.post(method, NoParams {}, &mut body).await?;
        answer(&body, id)
    }

    /// `getNetwork`.
    pub async fn get_network(&self) -> Result<GetNetworkResponse, RpcError> {
        self.call("getNetwork").await
    }

    /// `getHealth`.
    pub async fn get_health(&self) -> Result<GetHealthResponse, RpcError> {
        self.call("getHealth").await
    }

    /// `getLedgers` from `start`, at most `limit` ledgers, metadata as base64 XDR: the
    /// answer is read into `body` (its capacity reused) and the request's id returned, for
    /// [`ledgers_page`] to parse. A JSON-RPC error is only seen there.
    pub async fn get_ledgers(
        &self,
        start: u32,
        limit: usize,
        body: &mut Vec<u8>,
    ) -> Result<u64, RpcError> {
        let params = GetLedgersParams {
            start_ledger: start,
            pagination: Pagination { limit },
            xdr_format: "base64",
        };
        self.post("getLedgers", params, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_name_their_causes_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Outer(std::io::Error::other(
            "invalid peer certificate: UnknownIssuer",
        ));
        assert_eq!(
            with_causes(&refused),
            "client error (Connect): invalid peer certificate: UnknownIssuer"
        );
        // A cause already in the text is not repeated.
        #[derive(Debug)]
        struct Repeating(std::io::Error);
        impl std::fmt::Display for Repeating {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "connecting: {}", self.0)
            }
        }
        impl std::error::Error for Repeating {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let repeating = Repeating(std::io::Error::other("connection refused"));
        assert_eq!(with_causes(&repeating), "connecting: connection refused");
    }

    #[test]
    fn endpoints_are_http_or_https_urls_with_a_host() {
        assert!(endpoint("http://rpc.example").is_ok());
        assert!(endpoint("https://rpc.example/soroban").is_ok());
        assert!(endpoint("http://127.0.0.1:8000").is_ok());
        assert!(endpoint("ftp://rpc.example").is_err());
        assert!(endpoint("rpc.example").is_err());
        assert!(endpoint("not a url").is_err());
    }

    #[test]
    fn answers_are_parsed_once_into_borrowed_strings() {
        let body = br#"{"jsonrpc":"2.0","id":7,"result":{"latestLedger":12,
            "latestLedgerCloseTime":"1700000000","oldestLedger":3,"oldestLedgerCloseTime":"1",
            "cursor":"11","ledgers":[{"hash":"ab","sequence":11,"ledgerCloseTime":"1",
            "headerXdr":"AAAA","metadataXdr":"AAAB"},{"sequence":12,"metadataXdr":"A\/B="}]}}"#;
        let page = ledgers_page(body, 7).expect("parses");
        assert_eq!(page.latest_ledger, 12);
        assert_eq!(page.latest_ledger_close_time, 1_700_000_000);
        assert_eq!(page.oldest_ledger, 3);
        assert_eq!(page.ledgers.len(), 2);
        assert!(matches!(
            page.ledgers[0].metadata_xdr,
            Cow::Borrowed("AAAB")
        ));
        // An escaped character cannot be borrowed: it is unescaped into its own string.
        assert_eq!(page.ledgers[1].metadata_xdr, "A/B=");
        // A numeric close time is accepted too.
        let body = br#"{"jsonrpc":"2.0","id":1,"result":{"latestLedger":1,
            "latestLedgerCloseTime":5,"oldestLedger":1,"ledgers":[]}}"#;
        assert_eq!(
            ledgers_page(body, 1)
                .map(|p| p.latest_ledger_close_time)
                .ok(),
            Some(5)
        );
    }

    #[test]
    fn error_objects_are_calls_and_strays_are_transport_faults() {
        let body = br#"{"jsonrpc":"2.0","id":3,"error":{"code":-32600,"message":"start ledger (9) must be between"}}"#;
        match ledgers_page(body, 3) {
            Err(RpcError::Call { code, message }) => {
                assert_eq!(code, -32600);
                assert!(message.starts_with("start ledger (9)"), "{message}");
            }
            other => panic!("expected a call error: {other:?}"),
        }
        // A parse error answered with a null id is still the server's error.
        let body =
            br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}"#;
        assert!(matches!(
            answer::<GetHealthResponse>(body, 4),
            Err(RpcError::Call { code: -32700, .. })
        ));
        let health = br#"{"jsonrpc":"2.0","id":5,"result":{"status":"healthy","latestLedger":9,"oldestLedger":2,"ledgerRetentionWindow":8}}"#;
        assert!(matches!(
            answer::<GetHealthResponse>(health, 6),
            Err(RpcError::Transport(_))
        ));
        assert_eq!(
            answer::<GetHealthResponse>(health, 5)
                .map(|h| h.latest_ledger)
                .ok(),
            Some(9)
        );
        for stray in [
            &br#"{"jsonrpc":"2.0","id":5}"#[..],
            b"<html>502</html>",
            b"",
        ] {
            assert!(matches!(
                answer::<GetHealthResponse>(stray, 5),
                Err(RpcError::Transport(_))
            ));
        }
    }
}
