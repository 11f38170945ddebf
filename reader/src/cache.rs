//! Rendered responses kept in memory, keyed by the data version of the source that
//! produced them (tip and backfill generation) and the normalised request, bounded in
//! bytes. While the tip is unchanged, a repeated request is answered from here without
//! touching a database. Also: ETags and `If-None-Match` matching, and content
//! encodings: each cached body is compressed at most once per encoding (gzip, zstd),
//! on the first request that asks for it, and served from memory after that; each
//! encoding has its own ETag (the identity tag with `-gzip` or `-zstd` appended).

use std::io::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::policy::Class;

/// A rendered page.
#[derive(Debug)]
pub struct Rendered {
    /// The JSON body.
    pub body: Bytes,
    /// Its entity tag (quoted), for the identity encoding.
    pub etag: String,
    /// Which Cache-Control class it belongs to.
    pub class: Class,
    gzip: OnceLock<Bytes>,
    zstd: OnceLock<Bytes>,
}

/// A content coding a response can be sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// As rendered.
    Identity,
    /// gzip.
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Encoding {
    /// The coding to send for an `Accept-Encoding` value: zstd, then gzip, among those
    /// accepted with a non-zero weight; identity otherwise.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Self::Identity;
        };
        let accepted = |name: &str| {
            accept.split(',').any(|item| {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or("").trim();
                let weight = parts
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                coding.eq_ignore_ascii_case(name) && weight > 0.0
            })
        };
        if accepted("zstd") {
            Self::Zstd
        } else if accepted("gzip") {
            Self::Gzip
        } else {
            Self::Identity
        }
    }

    /// The `Content-Encoding` token.
    pub fn token(self) -> Option<&'static str> {
        match self {
            Self::Identity => None,
            Self::Gzip => Some("gzip"),
            Self::Zstd => Some("zstd"),
        }
    }
}

impl Rendered {
    /// A rendered body with its identity tag.
    pub fn new(body: Bytes, etag: String, class: Class) -> Self {
        Self {
            body,
            etag,
            class,
            gzip: OnceLock::new(),
            zstd: OnceLock::new(),
        }
    }

    /// The body in `encoding` (compressed on first use, then kept), and the encoding
    /// actually used (identity if compressing failed).
    pub fn encoded(&self, encoding: Encoding) -> (Bytes, Encoding) {
        let (slot, compress): (&OnceLock<Bytes>, Compressor) = match encoding {
            Encoding::Identity => return (self.body.clone(), Encoding::Identity),
            Encoding::Gzip => (&self.gzip, gzip),
            Encoding::Zstd => (&self.zstd, |b| zstd::encode_all(b, 3)),
        };
        if let Some(done) = slot.get() {
            return (done.clone(), encoding);
        }
        match compress(&self.body) {
            Ok(bytes) => (slot.get_or_init(|| Bytes::from(bytes)).clone(), encoding),
            Err(e) => {
                tracing::warn!(error = %e, "compression failed; sending identity");
                (self.body.clone(), Encoding::Identity)
            }
        }
    }

    /// The entity tag of the body in `encoding`.
    pub fn etag_for(&self, encoding: Encoding) -> String {
        encoded_etag(&self.etag, encoding)
    }
}

/// `etag` (quoted) for the body in `encoding`.
pub fn encoded_etag(etag: &str, encoding: Encoding) -> String {
    match encoding.token() {
        None => etag.to_owned(),
        Some(token) => format!("{}-{token}\"", etag.trim_end_matches('"')),
    }
}

/// Compresses a body into one encoding.
type Compressor = fn(&[u8]) -> std::io::Result<Vec<u8>>;

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    encoder.write_all(body)?;
    encoder.finish()
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
/// requires for If-None-Match; `*` matches anything). A tag of the same body in another
/// encoding matches too: a 304 carries no body, and the client's copy is current.
pub fn if_none_match(header: &str, etag: &str) -> bool {
    let identity = |tag: &str| -> String {
        let tag = tag.trim_start_matches("W/");
        for suffix in ["-gzip\"", "-zstd\""] {
            if let Some(stem) = tag.strip_suffix(suffix) {
                return format!("{stem}\"");
            }
        }
        tag.to_owned()
    };
    let bare = identity(etag);
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || identity(candidate) == bare)
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
    fn encodings_negotiated_and_tagged() {
        assert_eq!(Encoding::negotiate(None), Encoding::Identity);
        assert_eq!(
            Encoding::negotiate(Some("gzip, deflate, br")),
            Encoding::Gzip
        );
        assert_eq!(Encoding::negotiate(Some("gzip, zstd")), Encoding::Zstd);
        assert_eq!(Encoding::negotiate(Some("zstd;q=0, gzip")), Encoding::Gzip);
        assert_eq!(Encoding::negotiate(Some("br")), Encoding::Identity);
        let r = Rendered::new(
            Bytes::from(vec![b'a'; 5000]),
            etag('i', &["x"]),
            Class::Head,
        );
        let (gz, used) = r.encoded(Encoding::Gzip);
        assert_eq!(used, Encoding::Gzip);
        assert!(gz.len() < 200);
        let gz_tag = r.etag_for(Encoding::Gzip);
        assert_ne!(gz_tag, r.etag);
        assert!(gz_tag.ends_with("-gzip\""));
        assert!(if_none_match(&gz_tag, &r.etag));
        assert!(if_none_match(&r.etag, &r.etag_for(Encoding::Zstd)));
        // The same compressed bytes on every hit.
        assert_eq!(r.encoded(Encoding::Gzip).0.as_ptr(), gz.as_ptr());
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
