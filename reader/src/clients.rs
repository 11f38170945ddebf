//! Who is asking: an API key (`X-API-Key` header or `api_key` parameter) when keys are
//! configured, else the client's IP. Proxy headers (`CF-Connecting-IP`,
//! `X-Forwarded-For`) are believed only when the connection comes from a configured
//! trusted proxy; from anyone else they are ignored, so they cannot be spoofed.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The identity a limit applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// A configured API key (by its index in the key list).
    Key(usize),
    /// An anonymous client by address.
    Ip(IpAddr),
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// The client's address: the peer, or, when the peer is a trusted proxy, what the proxy
/// says (Cloudflare's `CF-Connecting-IP` first, then the right-most address in
/// `X-Forwarded-For` that is not itself a trusted proxy).
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer = peer.ip().to_canonical();
    if !trusted(peer, proxies) {
        return peer;
    }
    if let Some(ip) = headers
        .get("cf-connecting-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return ip.to_canonical();
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|v| v.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    forwarded
        .iter()
        .rev()
        .find(|ip| !trusted(**ip, proxies))
        .copied()
        .or_else(|| forwarded.first().copied())
        .unwrap_or(peer)
}

/// The API key a request presents, if any: the header first, then the parameter.
pub fn presented_key<'r>(headers: &'r HeaderMap, query: Option<&'r str>) -> Option<String> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim().to_owned());
    }
    let query = query?;
    serde_urlencoded_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "api_key")
        .map(|(_, v)| v)
}

fn serde_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{query}").parse().unwrap_or_default(),
    )
    .map(|q| q.0)
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn proxy_headers_only_from_trusted_peers() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let from_proxy: SocketAddr = "10.1.2.3:5000".parse().expect("addr");
        let from_client: SocketAddr = "203.0.113.9:5000".parse().expect("addr");
        let spoof = headers(&[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(
            client_ip(from_client, &spoof, &proxies).to_string(),
            "203.0.113.9"
        );
        assert_eq!(
            client_ip(from_proxy, &spoof, &proxies).to_string(),
            "198.51.100.1"
        );
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.9.9.9")]);
        assert_eq!(
            client_ip(from_proxy, &chain, &proxies).to_string(),
            "198.51.100.7"
        );
        let cf = headers(&[
            ("cf-connecting-ip", "2001:db8::1"),
            ("x-forwarded-for", "9.9.9.9"),
        ]);
        assert_eq!(
            client_ip(from_proxy, &cf, &proxies).to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            client_ip(from_client, &cf, &proxies).to_string(),
            "203.0.113.9"
        );
    }

    #[test]
    fn keys_from_header_or_parameter() {
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "abc")]), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented_key(&HeaderMap::new(), Some("limit=3&api_key=k%201")).as_deref(),
            Some("k 1")
        );
        assert_eq!(presented_key(&HeaderMap::new(), Some("limit=3")), None);
    }
}
