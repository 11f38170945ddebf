//! The writer's JSON-RPC client for Stellar RPC: `getHealth`, `getNetwork` and
//! `getLedgers` over jsonrpsee's HTTP client, answered into `stellar-rpc-client`'s own
//! response types.
//!
//! `stellar-rpc-client` builds its jsonrpsee client with the library's 10 MiB response
//! cap and offers no way to change it; a page of pubnet ledgers (1-3 MB of XDR each, a
//! third more in base64) is larger than that. This client sets the cap deliberately and
//! what must hold is: an answer over the cap is refused while it is read (never buffered
//! whole), and is reported as [`RpcError::TooLarge`], distinct from transport faults, so
//! the caller asks for a smaller page instead of repeating the same request forever.

use std::time::Duration;

use axum::http::uri::{Authority, Uri};
use jsonrpsee_core::client::ClientT;
use jsonrpsee_core::params::ObjectParams;
use jsonrpsee_http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder};
use stellar_rpc_client::{GetHealthResponse, GetLedgersResponse, GetNetworkResponse};

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

/// A Stellar RPC endpoint.
#[derive(Debug, Clone)]
pub struct RpcClient {
    http: HttpClient,
    url: String,
    max_response_bytes: u32,
}

/// jsonrpsee needs an explicit port; an `http(s)` URL without one gets its default.
fn with_port(url: &str) -> Result<String, RpcError> {
    let invalid =
        |e: &dyn std::fmt::Display| RpcError::Transport(format!("invalid RPC URL {url:?}: {e}"));
    let uri: Uri = url.parse().map_err(|e| invalid(&e))?;
    let mut parts = uri.into_parts();
    if let (Some(scheme), Some(authority)) = (&parts.scheme, &parts.authority) {
        let port = match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        };
        if let (None, Some(port)) = (authority.port(), port) {
            let authority: Authority = format!("{}:{port}", authority.host())
                .parse()
                .map_err(|e| invalid(&e))?;
            parts.authority = Some(authority);
        }
    }
    Ok(Uri::from_parts(parts).map_err(|e| invalid(&e))?.to_string())
}

impl RpcClient {
    /// A client for `url`; each call times out after `timeout`, and answers larger than
    /// `max_response_bytes` are refused.
    pub fn new(url: &str, timeout: Duration, max_response_bytes: u32) -> Result<Self, RpcError> {
        let url = with_port(url)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            "X-Client-Name",
            HeaderValue::from_static("stellar-payments-writer"),
        );
        headers.insert(
            "X-Client-Version",
            HeaderValue::from_static(env!("CARGO_PKG_VERSION")),
        );
        let http = HttpClientBuilder::default()
            .set_headers(headers)
            .request_timeout(timeout)
            .max_response_size(max_response_bytes)
            .build(&url)
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            url,
            max_response_bytes,
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

    fn error(&self, error: jsonrpsee_core::ClientError) -> RpcError {
        use jsonrpsee_core::http_helpers::HttpError;
        use jsonrpsee_http_client::transport::Error as TransportError;
        match error {
            jsonrpsee_core::ClientError::Call(call) => RpcError::Call {
                code: call.code(),
                message: call.message().to_owned(),
            },
            jsonrpsee_core::ClientError::Transport(inner) => {
                match inner.downcast_ref::<TransportError>() {
                    Some(TransportError::Http(HttpError::TooLarge))
                    | Some(TransportError::Rejected { status_code: 413 }) => RpcError::TooLarge {
                        cap: self.max_response_bytes,
                    },
                    _ => RpcError::Transport(inner.to_string()),
                }
            }
            other => RpcError::Transport(other.to_string()),
        }
    }

    /// `getNetwork`.
    pub async fn get_network(&self) -> Result<GetNetworkResponse, RpcError> {
        self.http
            .request("getNetwork", ObjectParams::new())
            .await
            .map_err(|e| self.error(e))
    }

    /// `getHealth`.
    pub async fn get_health(&self) -> Result<GetHealthResponse, RpcError> {
        self.http
            .request("getHealth", ObjectParams::new())
            .await
            .map_err(|e| self.error(e))
    }

    /// `getLedgers` from `start`, at most `limit` ledgers, metadata as base64 XDR.
    pub async fn get_ledgers(
        &self,
        start: u32,
        limit: usize,
    ) -> Result<GetLedgersResponse, RpcError> {
        let mut params = ObjectParams::new();
        let insert = |params: &mut ObjectParams, name: &str, value: serde_json::Value| {
            params
                .insert(name, value)
                .map_err(|e| RpcError::Transport(format!("cannot encode {name}: {e}")))
        };
        insert(&mut params, "startLedger", start.into())?;
        insert(
            &mut params,
            "pagination",
            serde_json::json!({ "limit": limit }),
        )?;
        insert(&mut params, "xdrFormat", "base64".into())?;
        self.http
            .request("getLedgers", params)
            .await
            .map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_their_default_port() {
        assert_eq!(
            with_port("http://rpc.example").ok().as_deref(),
            Some("http://rpc.example:80/")
        );
        assert_eq!(
            with_port("https://rpc.example/soroban").ok().as_deref(),
            Some("https://rpc.example:443/soroban")
        );
        assert_eq!(
            with_port("http://127.0.0.1:8000").ok().as_deref(),
            Some("http://127.0.0.1:8000/")
        );
    }
}
