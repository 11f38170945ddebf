//! Rendered responses kept in memory, keyed by the data version of the source that
//! produced them (tip and backfill generation) and the request as sent (link base, path
//! and query), bounded in bytes. While the tip is unchanged, a repeated request is
//! answered from here without touching a database or parsing its query. Also: ETags and `If-None-Match` matching, and content
//! encodings: the coding is chosen by the request's `Accept-Encoding` q-values; each
//! cached body is compressed at most once per encoding (gzip, brotli, zstd), on the
//! first request that asks for it, and served from memory after that; each encoding
//! has its own ETag (the identity tag with `-gzip`, `-br` or `-zstd` appended).

use std::io::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::HeaderValue;
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
    brotli: OnceLock<Bytes>,
    zstd: OnceLock<Bytes>,
    /// The ETag header of each encoding (identity, gzip, br, zstd), built on first use.
    tags: [OnceLock<Option<HeaderValue>>; 4],
}

/// A content coding a response can be sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// As rendered.
    Identity,
    /// gzip.
    Gzip,
    /// Brotli (`br`).
    Brotli,
    /// Zstandard.
    Zstd,
}

/// The codings the reader compresses to, in its order of preference among codings the
/// client weighs equally: zstd (fastest to decode), brotli (smallest), gzip.
const PREFERENCE: [Encoding; 3] = [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip];

impl Encoding {
    /// The coding to send for an `Accept-Encoding` value (RFC 9110, 12.5.3): the one
    /// with the highest q-value among those the reader can produce, a coding not named
    /// taking the weight of `*` if given (else unacceptable); ties go by [`PREFERENCE`];
    /// identity when none has a non-zero weight. Malformed weights count as 1 (as if
    /// absent), weights are clamped to [0, 1].
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Self::Identity;
        };
        let weight_of = |name: &str| -> Option<f32> {
            accept.split(',').find_map(|item| {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or("").trim();
                coding.eq_ignore_ascii_case(name).then(|| {
                    parts
                        .find_map(|p| p.trim().strip_prefix("q="))
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .filter(|q| q.is_finite())
                        .map_or(1.0, |q| q.clamp(0.0, 1.0))
                })
            })
        };
        let any = weight_of("*").unwrap_or(0.0);
        let mut best = (Self::Identity, 0.0_f32);
        for coding in PREFERENCE {
            let weight = coding.token().and_then(&weight_of).unwrap_or(any);
            if weight > best.1 {
                best = (coding, weight);
            }
        }
        best.0
    }

    /// The `Content-Encoding` token.
    pub fn token(self) -> Option<&'static str> {
        match self {
            Self::Identity => None,
            Self::Gzip => Some("gzip"),
            Self::Brotli => Some("br"),
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
            brotli: OnceLock::new(),
            zstd: OnceLock::new(),
            tags: Default::default(),
        }
    }

    /// The body in `encoding` (compressed on first use, then kept), and the encoding
    /// actually used (identity if compressing failed).
    pub fn encoded(&self, encoding: Encoding) -> (Bytes, Encoding) {
        let (slot, compress): (&OnceLock<Bytes>, Compressor) = match encoding {
            Encoding::Identity => return (self.body.clone(), Encoding::Identity),
            Encoding::Gzip => (&self.gzip, gzip),
            Encoding::Brotli => (&self.brotli, brotli),
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

    /// [`Rendered::etag_for`] as a header value, built once per encoding and kept (a
    /// hit sends it without formatting or validating it again).
    pub fn etag_header(&self, encoding: Encoding) -> Option<HeaderValue> {
        let slot = match encoding {
            Encoding::Identity => 0,
            Encoding::Gzip => 1,
            Encoding::Brotli => 2,
            Encoding::Zstd => 3,
        };
        self.tags[slot]
            .get_or_init(|| HeaderValue::from_str(&self.etag_for(encoding)).ok())
            .clone()
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

/// Brotli at quality 5 (of 11) and a 4 MB window: about gzip's speed at level 6 with
/// smaller output on JSON pages; the higher qualities cost tens of milliseconds on a
/// 200-record page, paid on the request that first asks for the coding.
fn brotli(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let params = brotli::enc::BrotliEncoderParams {
        quality: 5,
        lgwin: 22,
        size_hint: body.len(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(body.len() / 4);
    brotli::BrotliCompress(&mut &body[..], &mut out, &params)?;
    Ok(out)
}

/// The response cache. Keys are hashed with foldhash's seeded quality hasher: several
/// times faster than SipHash on keys of a hundred bytes or more (a lookup hashes the
/// whole key on every hit) and still seeded per process, so clients cannot aim
/// collisions at it.
pub type ResponseCache = moka::future::Cache<String, Arc<Rendered>, foldhash::quality::RandomState>;

/// A cache bounded to about `max_bytes` of keys and bodies. Entries also expire after
/// `ttl`, a backstop for data changed below the tip by means other than backfill.
pub fn new_cache(max_bytes: u64, ttl: Duration) -> ResponseCache {
    moka::future::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|key: &String, value: &Arc<Rendered>| {
            u32::try_from(key.len() + value.body.len() + value.etag.len() + 96).unwrap_or(u32::MAX)
        })
        .time_to_live(ttl)
        .build_with_hasher(foldhash::quality::RandomState::default())
}

/// The cache key of a page: `fixed|{base}{target}` for a page that cannot change, else
/// `{tip}.{generation}|{base}{target}`, where `target` is the request's path and query
/// exactly as sent. A key built from the request as sent (not its parsed and
/// normalised form) can be looked up before anything is parsed, which keeps a hit to a
/// few header reads and one lookup; two spellings of one request get two entries of
/// the same page (and, their tags being built from the normalised request, one ETag).
/// The base comes in pieces (see `routes::BaseRef::parts`) so a hit builds no base
/// string of its own.
pub fn page_key(fixed: bool, tip: u32, generation: i64, base: [&str; 3], target: &str) -> String {
    use std::fmt::Write as _;
    let base_len: usize = base.iter().map(|p| p.len()).sum();
    let mut key = String::with_capacity(24 + base_len + target.len());
    if fixed {
        key.push_str("fixed");
    } else {
        let _ = write!(key, "{tip}.{generation}");
    }
    key.push('|');
    for part in base {
        key.push_str(part);
    }
    key.push_str(target);
    key
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
    let bare = identity_stem(etag);
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || identity_stem(candidate) == bare)
}

/// The identity tag of `tag` without its closing quote, and whether it had one:
/// compared without allocating (this runs on every conditional request).
fn identity_stem(tag: &str) -> (&str, bool) {
    let tag = tag.trim_start_matches("W/");
    for suffix in ["-gzip\"", "-br\"", "-zstd\""] {
        if let Some(stem) = tag.strip_suffix(suffix) {
            return (stem, true);
        }
    }
    match tag.strip_suffix('"') {
        Some(stem) => (stem, true),
        None => (tag, false),
    }
}

/// Whether an `If-None-Match` value could name an immutable page's tag (`"i-..."`):
/// when it cannot, the tag need not be computed to know it does not match.
pub fn may_name_immutable(header: &str) -> bool {
    header.contains("\"i-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_keys_spell_the_base_in_full() {
        let target = "/payments?limit=10";
        assert_eq!(
            page_key(false, 7, 2, ["https", "://", "a.test"], target),
            "7.2|https://a.test/payments?limit=10"
        );
        assert_eq!(
            page_key(true, 7, 2, ["https://p.test", "", ""], target),
            "fixed|https://p.test/payments?limit=10"
        );
        assert_eq!(
            page_key(false, 7, 2, ["", "", ""], target),
            "7.2|/payments?limit=10"
        );
        // A base split differently is the same key.
        assert_eq!(
            page_key(false, 1, 0, ["http", "://", "h"], "/x"),
            page_key(false, 1, 0, ["http://h", "", ""], "/x")
        );
    }

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
            Encoding::Brotli
        );
        assert_eq!(Encoding::negotiate(Some("gzip, zstd")), Encoding::Zstd);
        assert_eq!(Encoding::negotiate(Some("gzip, br, zstd")), Encoding::Zstd);
        assert_eq!(Encoding::negotiate(Some("zstd;q=0, gzip")), Encoding::Gzip);
        assert_eq!(Encoding::negotiate(Some("br")), Encoding::Brotli);
        assert_eq!(Encoding::negotiate(Some("BR;q=0.5")), Encoding::Brotli);
        // q-values decide before the reader's preference.
        assert_eq!(
            Encoding::negotiate(Some("zstd;q=0.2, br;q=0.9, gzip;q=0.5")),
            Encoding::Brotli
        );
        assert_eq!(
            Encoding::negotiate(Some("gzip;q=1.0, zstd;q=0.1")),
            Encoding::Gzip
        );
        // `*` weighs the codings not named; a named zero excludes one.
        assert_eq!(Encoding::negotiate(Some("*")), Encoding::Zstd);
        assert_eq!(
            Encoding::negotiate(Some("zstd;q=0, *;q=0.5")),
            Encoding::Brotli
        );
        assert_eq!(Encoding::negotiate(Some("*;q=0")), Encoding::Identity);
        assert_eq!(
            Encoding::negotiate(Some("deflate, identity")),
            Encoding::Identity
        );
        assert_eq!(
            Encoding::negotiate(Some("br;q=x, gzip;q=0.5")),
            Encoding::Brotli
        );
        assert_eq!(Encoding::negotiate(Some(",;,q=;")), Encoding::Identity);
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
        let br_tag = r.etag_for(Encoding::Brotli);
        assert!(br_tag.ends_with("-br\""));
        assert!(if_none_match(&br_tag, &r.etag));
        let (br, used) = r.encoded(Encoding::Brotli);
        assert_eq!(used, Encoding::Brotli);
        assert!(br.len() < 200);
        assert_eq!(r.encoded(Encoding::Brotli).0.as_ptr(), br.as_ptr());
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
        // Encodings of one body match each other; a tag never matches its own prefix.
        let gz = encoded_etag(&e, Encoding::Gzip);
        assert!(if_none_match(&gz, &e) && if_none_match(&e, &gz));
        assert!(!if_none_match(&e.replace('"', ""), &e));
        assert!(!if_none_match(&format!("{}\"", &e[..e.len() - 2]), &e));
        assert!(may_name_immutable(&etag('i', &["x"])));
        assert!(!may_name_immutable(&e));
    }
}
