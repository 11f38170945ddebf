//! Redis clients for `redis://` and `rediss://` URLs, with an optional CA file.
//!
//! `rediss://host:port` connects over TLS (rustls) and verifies the server's certificate
//! and host name against the Mozilla root set built into the binary (webpki-roots), which
//! covers managed Redis services; a [`RedisEndpoint`] built with a CA file (the binaries'
//! `--redis-ca-file`) trusts that file's certificates instead, for a private CA.
//!
//! What must hold: the CA file is read and checked once, when the endpoint is made, so a
//! missing or empty file stops a binary at start with a clear error instead of failing
//! every reconnect; it applies to `rediss://` URLs only (a `redis://` URL stays plain,
//! so one file can serve a reader whose two Redis URLs differ); the rustls crypto
//! provider is ring, installed as the process default before any client is made (the
//! redis crate builds its TLS configuration from the process default).

use std::path::{Path, PathBuf};

/// Why a Redis endpoint cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisTlsError {
    /// The CA file cannot be read.
    #[error("cannot read the Redis CA file {}: {source}", path.display())]
    CaRead {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no PEM certificate.
    #[error("the Redis CA file {} holds no PEM certificate", path.display())]
    CaContent {
        /// The file.
        path: PathBuf,
    },
}

/// The CA certificates trusted for `rediss://` connections, read once.
#[derive(Clone, Debug, Default)]
pub struct RedisCa {
    pem: Option<Vec<u8>>,
}

impl RedisCa {
    /// Trust the file's certificates (PEM), or the built-in roots without a file.
    pub fn load(file: Option<&Path>) -> Result<Self, RedisTlsError> {
        let Some(path) = file else {
            return Ok(Self::default());
        };
        let pem = std::fs::read(path).map_err(|source| RedisTlsError::CaRead {
            path: path.to_path_buf(),
            source,
        })?;
        use rustls::pki_types::pem::PemObject;
        let usable = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .filter(Result::is_ok)
            .count();
        if usable == 0 {
            return Err(RedisTlsError::CaContent {
                path: path.to_path_buf(),
            });
        }
        Ok(Self { pem: Some(pem) })
    }

    /// A client for `url`: over TLS for `rediss://` (trusting this CA when one was
    /// loaded), plain for `redis://`.
    pub fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        install_crypto_provider();
        match &self.pem {
            Some(pem) if url.starts_with("rediss://") => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            _ => redis::Client::open(url),
        }
    }
}

/// Makes ring the process-wide rustls provider unless one is installed already.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing it is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_means_the_built_in_roots() {
        let ca = RedisCa::load(None).expect("no file");
        assert!(ca.pem.is_none());
        assert!(ca.client("rediss://localhost:6380").is_ok());
        assert!(ca.client("redis://localhost:6379").is_ok());
    }

    #[test]
    fn a_missing_or_empty_file_is_refused_by_name() {
        let missing = RedisCa::load(Some(Path::new("/nonexistent/redis-ca.pem")))
            .expect_err("missing")
            .to_string();
        assert!(missing.contains("/nonexistent/redis-ca.pem"), "{missing}");
        let dir = std::env::temp_dir().join(format!("redistls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("empty.pem");
        std::fs::write(&file, "nothing here\n").expect("write");
        let empty = RedisCa::load(Some(&file)).expect_err("empty").to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(empty.contains("holds no PEM certificate"), "{empty}");
    }
}
