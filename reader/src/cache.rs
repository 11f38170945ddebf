//! Rendered responses kept in memory, keyed by the data version of the source that
//! produced them (tip and backfill generation) and the normalised request, bounded in
//! bytes. While the tip is unchanged, a repeated request is answered from here without
//! touching a database. Also: ETags and `If-None-Match` matching.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::policy::Class;

/// A rendered page.
#[derive(Debug)]
pub struct Rendered {
    /// The JSON body.
    pub body: Bytes,
    /// Its entity tag (quoted).
    pub etag: String,
    /// Which Cache-Control class it belongs to.
    pub class: Class,
}

/// The response cache.
pub type ResponseCache = moka::future::Cache<String, Arc<Rendered>>;

/// A cache bounded to about `max_bytes` of keys and bodies. Entries also expire after
/// `ttl`, a backstop for data changed below the tip by means other than backfill.
pub fn new_cache(max_bytes: u64, ttl: Duration) -> ResponseCache {
    moka::future::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|key: &String, value: &Arc<Rendered>| {
            u32::try_from(key.len() + value.body.len() + value.etag.len() + 96).unwrap_or(u32::MAX)
        })
        .time_to_live(ttl)
        .build()
}

/// A strong entity tag: `"{kind}-{digest of parts}"`.
pub fn etag(kind: char, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    format!("\"{kind}-{}\"", hex::encode(&digest[..12]))
}

/// Whether an `If-None-Match` header value matches `etag` (weak comparison, as RFC 9110
/// requires for If-None-Match; `*` matches anything).
pub fn if_none_match(header: &str, etag: &str) -> bool {
    let bare = etag.trim_start_matches("W/");
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_and_distinct() {
        let a = etag('t', &["1", "/payments?x"]);
        let b = etag('t', &["2", "/payments?x"]);
        assert!(a.starts_with("\"t-") && a.ends_with('"'));
        assert_ne!(a, b);
        assert_ne!(etag('t', &["1", "2"]), etag('t', &["12", ""]));
    }

    #[test]
    fn if_none_match_lists() {
        let e = etag('a', &["x"]);
        assert!(if_none_match(&e, &e));
        assert!(if_none_match(&format!("\"other\", W/{e}"), &e));
        assert!(if_none_match("*", &e));
        assert!(!if_none_match("\"other\"", &e));
    }
}
