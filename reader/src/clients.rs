//! Who is asking: an API key (`X-API-Key` header or `api_key` parameter) when keys are
//! configured, else the client's network (its address, IPv6 clients per /64 by default).
//!
//! Forwarding headers are believed only from whoever sets them:
//! - `X-Forwarded-For` only when the connection comes from a configured proxy, and then
//!   only as far as the chain runs through configured proxies: the client is the
//!   right-most address that is not a proxy. Entries to its left were written by the
//!   client and are ignored.
//! - `CF-Connecting-IP` only when that right-most hop is a Cloudflare address (the
//!   configured ranges, Cloudflare's published ones by default): Cloudflare overwrites
//!   the header, nobody else is believed.
//!
//! What must hold: no header sent by a client that is not a configured proxy or
//! Cloudflare changes the identity it is limited as.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The identity a limit applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// A configured API key (by its index in the key list).
    Key(usize),
    /// An anonymous client by network (an IPv4 address, an IPv6 /64, as configured).
    Ip(IpNet),
}

impl Client {
    /// The anonymous client at `ip`: its address truncated to the configured prefix
    /// (IPv6 clients usually hold a whole /64, so keying per address would let one
    /// client take 2^64 allowances).
    pub fn at(ip: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> Self {
        let ip = ip.to_canonical();
        let prefix = match ip {
            IpAddr::V4(_) => ipv4_prefix.min(32),
            IpAddr::V6(_) => ipv6_prefix.min(128),
        };
        let net = IpNet::new(ip, prefix).unwrap_or_else(|_| IpNet::from(ip));
        Self::Ip(net.trunc())
    }
}

/// Who may say where a request came from.
#[derive(Clone, Copy, Debug)]
pub struct Forwarders<'c> {
    /// Proxies of this deployment (nginx, load balancers): their `X-Forwarded-For` is
    /// believed.
    pub proxies: &'c [IpNet],
    /// Cloudflare's edge: `CF-Connecting-IP` is believed when the request reached the
    /// proxies from there.
    pub cloudflare: &'c [IpNet],
}

fn within(ip: IpAddr, nets: &[IpNet]) -> bool {
    nets.iter().any(|net| net.contains(&ip))
}

/// The client's address: the peer; or, when the peer is a configured proxy, the
/// right-most `X-Forwarded-For` address that is not a configured proxy; and when that
/// address is Cloudflare's, the `CF-Connecting-IP` Cloudflare set.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, from: Forwarders<'_>) -> IpAddr {
    let mut hop = peer.ip().to_canonical();
    if within(hop, from.proxies) {
        // Right to left: each entry was appended by the hop to its right, which is
        // believed only while it is one of ours.
        let mut chain = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(|v| v.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical()))
            .collect::<Vec<_>>()
            .into_iter()
            .rev();
        while within(hop, from.proxies) {
            match chain.next() {
                Some(Some(ip)) => hop = ip,
                // An unreadable entry: nothing to its left can be believed.
                Some(None) | None => break,
            }
        }
    }
    if within(hop, from.cloudflare) {
        if let Some(ip) = headers
            .get("cf-connecting-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            return ip.to_canonical();
        }
    }
    hop
}

/// The API key a request presents, if any: the header first, then the parameter.
pub fn presented_key<'r>(headers: &'r HeaderMap, query: Option<&'r str>) -> Option<String> {
    if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim().to_owned());
    }
    query_parameter(query?, "api_key")
}

/// One query parameter, percent-decoded as the handlers decode it (the first one, when
/// given twice: handlers refuse those anyway).
pub fn query_parameter(query: &str, name: &str) -> Option<String> {
    serde_urlencoded_pairs(query)
        .into_iter()
        .find(|(k, _)| k == name)
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

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("net")).collect()
    }

    #[test]
    fn forwarded_for_only_from_proxies_right_most_untrusted() {
        let proxies = nets(&["10.0.0.0/8"]);
        let from = Forwarders {
            proxies: &proxies,
            cloudflare: &[],
        };
        let from_proxy: SocketAddr = "10.1.2.3:5000".parse().expect("addr");
        let from_client: SocketAddr = "203.0.113.9:5000".parse().expect("addr");
        let spoof = headers(&[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(
            client_ip(from_client, &spoof, from).to_string(),
            "203.0.113.9"
        );
        assert_eq!(
            client_ip(from_proxy, &spoof, from).to_string(),
            "198.51.100.1"
        );
        // The client wrote 1.1.1.1; the proxies appended the rest.
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.9.9.9")]);
        assert_eq!(
            client_ip(from_proxy, &chain, from).to_string(),
            "198.51.100.7"
        );
        // Several header lines are one list.
        let lines = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.8"),
        ]);
        assert_eq!(
            client_ip(from_proxy, &lines, from).to_string(),
            "198.51.100.8"
        );
        // Garbage to the right stops the walk at the last proxy.
        let garbage = headers(&[("x-forwarded-for", "1.1.1.1, not-an-ip")]);
        assert_eq!(
            client_ip(from_proxy, &garbage, from).to_string(),
            "10.1.2.3"
        );
        // Only proxies: the left-most of them.
        let inner = headers(&[("x-forwarded-for", "10.0.0.7, 10.0.0.8")]);
        assert_eq!(client_ip(from_proxy, &inner, from).to_string(), "10.0.0.7");
    }

    #[test]
    fn cf_connecting_ip_only_when_the_hop_is_cloudflare() {
        let proxies = nets(&["10.0.0.0/8"]);
        let cloudflare = nets(&["173.245.48.0/20", "2606:4700::/32"]);
        let from = Forwarders {
            proxies: &proxies,
            cloudflare: &cloudflare,
        };
        let cf = |xff: &'static str| {
            headers(&[
                ("cf-connecting-ip", "2001:db8::1"),
                ("x-forwarded-for", xff),
            ])
        };
        let nginx: SocketAddr = "10.1.2.3:5000".parse().expect("addr");
        // Cloudflare -> nginx -> reader: nginx says the hop was Cloudflare.
        assert_eq!(
            client_ip(nginx, &cf("173.245.48.9"), from).to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            client_ip(nginx, &cf("2606:4700::9"), from).to_string(),
            "2001:db8::1"
        );
        // A client straight at nginx with a forged header (and a forged Cloudflare
        // address to the left): the hop is the client, the header is ignored.
        assert_eq!(
            client_ip(nginx, &cf("173.245.48.9, 198.51.100.3"), from).to_string(),
            "198.51.100.3"
        );
        // Cloudflare straight at the reader.
        let edge: SocketAddr = "173.245.48.1:443".parse().expect("addr");
        assert_eq!(
            client_ip(edge, &cf("9.9.9.9"), from).to_string(),
            "2001:db8::1"
        );
        // A stranger: nothing believed.
        let stranger: SocketAddr = "203.0.113.9:5000".parse().expect("addr");
        assert_eq!(
            client_ip(stranger, &cf("173.245.48.9"), from).to_string(),
            "203.0.113.9"
        );
        // The proxy itself is not Cloudflare: its CF-Connecting-IP is not believed.
        let only_cf = headers(&[("cf-connecting-ip", "2001:db8::1")]);
        assert_eq!(client_ip(nginx, &only_cf, from).to_string(), "10.1.2.3");
    }

    #[test]
    fn ipv6_clients_are_networks() {
        let a = Client::at("2001:db8:1:2::1".parse().expect("ip"), 32, 64);
        let b = Client::at("2001:db8:1:2:ffff::9".parse().expect("ip"), 32, 64);
        let c = Client::at("2001:db8:1:3::1".parse().expect("ip"), 32, 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(format!("{a:?}"), "Ip(2001:db8:1:2::/64)");
        let v4 = Client::at("::ffff:203.0.113.7".parse().expect("ip"), 32, 64);
        assert_eq!(v4, Client::Ip("203.0.113.7/32".parse().expect("net")));
        let v6_128 = Client::at("2001:db8::1".parse().expect("ip"), 32, 128);
        assert_ne!(
            v6_128,
            Client::at("2001:db8::2".parse().expect("ip"), 32, 128)
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
        assert_eq!(
            query_parameter("limit=%32%30%30", "limit").as_deref(),
            Some("200")
        );
    }
}
