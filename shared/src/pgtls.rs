//! Postgres connection settings for `tokio-postgres` with TLS as libpq defines it: one
//! parse of a `postgres://` URL gives the connection settings and the rustls connector
//! that the writer's pool, its lock session, its migrations and the local tools share.
//!
//! `sslmode` (in the URL, else `$PGSSLMODE`, else `prefer`):
//! * `disable`: plain TCP only;
//! * `prefer`: TLS when the server offers it, plain otherwise; the certificate is not
//!   checked (libpq's default);
//! * `require`: TLS or no connection; the certificate is not checked;
//! * `verify-ca`: TLS, and the server's certificate must chain to a trusted root;
//! * `verify-full`: as `verify-ca`, and the certificate must name the host connected to.
//!
//! `sslrootcert=<PEM file>` (else `$PGSSLROOTCERT`) is what `verify-ca` and `verify-full`
//! trust; without it they trust the Mozilla root set built into the binary
//! (webpki-roots), which is what the reader (sqlx) does too. `allow`, and client
//! certificates (`sslcert`, `sslkey`), are refused with a clear error rather than
//! ignored.
//!
//! What must hold: the TLS parameters tokio-postgres does not know (`sslrootcert`,
//! `verify-ca`, `verify-full`) are taken out of the URL here, and every other parameter
//! reaches `tokio_postgres::Config` untouched; a mode that verifies never connects
//! without verifying. Only the URL form carries the TLS parameters; a `key=value`
//! connection string is handed to tokio-postgres as it is (`disable`, `prefer`,
//! `require` only).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The TLS stream type of a connection made with a [`PgTarget`].
pub type TlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
/// The connection half (to be spawned) of a connection made with a [`PgTarget`].
pub type Connection = tokio_postgres::Connection<Socket, TlsStream>;

/// How a connection uses TLS: libpq's `sslmode` values that tokio-postgres can honour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when offered, unverified; plain otherwise.
    Prefer,
    /// TLS, unverified.
    Require,
    /// TLS, certificate chain verified.
    VerifyCa,
    /// TLS, certificate chain and host name verified.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, PgTlsError> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            "allow" => Err(PgTlsError::Unsupported(
                "sslmode=allow (plain first, TLS as a fallback) is not supported: use prefer \
                 or disable"
                    .to_owned(),
            )),
            other => Err(PgTlsError::Unsupported(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ))),
        }
    }

    /// What tokio-postgres negotiates: the verification itself lives in the connector.
    fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            Self::Prefer => tokio_postgres::config::SslMode::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        })
    }
}

/// Why a Postgres URL cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgTlsError {
    /// tokio-postgres refused the URL (what remains of it without the TLS parameters).
    #[error("invalid database URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// A parameter or value this build does not honour.
    #[error("invalid database URL: {0}")]
    Unsupported(String),
    /// The CA file cannot be read.
    #[error("cannot read the database CA file (sslrootcert) {}: {source}", path.display())]
    RootCertRead {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("the database CA file (sslrootcert) {} holds no usable PEM certificate{detail}", path.display())]
    RootCertContent {
        /// The file.
        path: PathBuf,
        /// What was wrong, when known (starts with ": ").
        detail: String,
    },
    /// rustls refused the configuration.
    #[error("database TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// A parsed database URL: tokio-postgres settings and the TLS connector for its mode.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    mode: SslMode,
    root_cert: Option<PathBuf>,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config's Debug hides the password.
        f.debug_struct("PgTarget")
            .field("config", &self.config)
            .field("mode", &self.mode)
            .field("root_cert", &self.root_cert)
            .finish_non_exhaustive()
    }
}

impl PgTarget {
    /// Parses `url`, reads the CA file its mode needs and builds the TLS connector.
    pub fn parse(url: &str) -> Result<Self, PgTlsError> {
        Self::parse_with_env(url, |name| std::env::var(name).ok())
    }

    fn parse_with_env(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, PgTlsError> {
        let split = split_tls_params(url)?;
        let mut config: tokio_postgres::Config = split.rest.parse().map_err(PgTlsError::Url)?;
        let mode = match split.mode {
            Some(mode) => mode,
            None if split.url_form => match env("PGSSLMODE") {
                Some(mode) => SslMode::parse(&mode)?,
                None => SslMode::Prefer,
            },
            // A key=value string: tokio-postgres parsed sslmode itself.
            None => match config.get_ssl_mode() {
                tokio_postgres::config::SslMode::Disable => SslMode::Disable,
                tokio_postgres::config::SslMode::Require => SslMode::Require,
                _ => SslMode::Prefer,
            },
        };
        let root_cert = split
            .root_cert
            .or_else(|| split.url_form.then(|| env("PGSSLROOTCERT")).flatten())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        config.ssl_mode(mode.negotiation());
        let client = client_config(mode, root_cert.as_deref())?;
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(client),
            mode,
            root_cert,
        })
    }

    /// The tokio-postgres settings (TLS negotiation included).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The settings, to add session options (keepalives, application name).
    pub fn config_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.config
    }

    /// The TLS connector, for a pool manager.
    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// The `sslmode` in force.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Opens one connection; the caller spawns the [`Connection`].
    pub async fn connect(&self) -> Result<(Client, Connection), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

/// A URL with its TLS parameters taken out.
struct Split {
    /// The URL (or key=value string) tokio-postgres gets.
    rest: String,
    url_form: bool,
    mode: Option<SslMode>,
    root_cert: Option<String>,
}

fn split_tls_params(url: &str) -> Result<Split, PgTlsError> {
    let url_form = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (base, query) = match url.split_once('?') {
        Some((base, query)) if url_form => (base, query),
        _ => {
            return Ok(Split {
                rest: url.to_owned(),
                url_form,
                mode: None,
                root_cert: None,
            })
        }
    };
    let mut kept: Vec<&str> = Vec::new();
    let mut mode = None;
    let mut root_cert = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key)?;
        match key.as_str() {
            "sslmode" => mode = Some(SslMode::parse(&decode(value)?)?),
            "sslrootcert" => root_cert = Some(decode(value)?),
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(PgTlsError::Unsupported(format!(
                    "{key}: client certificates are not supported; authenticate with a \
                     password"
                )))
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(Split {
        rest,
        url_form,
        mode,
        root_cert,
    })
}

fn decode(text: &str) -> Result<String, PgTlsError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| PgTlsError::Unsupported(format!("{text:?} is not percent-encoded UTF-8")))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client configuration for `mode`: no verification for `prefer` and
/// `require`, the chain for `verify-ca`, chain and name for `verify-full`.
fn client_config(mode: SslMode, root_cert: Option<&Path>) -> Result<ClientConfig, PgTlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    Ok(match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified { provider }))
            .with_no_client_auth(),
        SslMode::VerifyCa => {
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots(root_cert)?), provider)
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly { inner }))
                .with_no_client_auth()
        }
        SslMode::VerifyFull => builder
            .with_root_certificates(roots(root_cert)?)
            .with_no_client_auth(),
    })
}

/// The CA file's certificates, or the built-in Mozilla roots without one.
fn roots(root_cert: Option<&Path>) -> Result<RootCertStore, PgTlsError> {
    let Some(path) = root_cert else {
        return Ok(RootCertStore::from_iter(
            webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
        ));
    };
    let pem = std::fs::read(path).map_err(|source| PgTlsError::RootCertRead {
        path: path.to_path_buf(),
        source,
    })?;
    let content = |detail: String| PgTlsError::RootCertContent {
        path: path.to_path_buf(),
        detail,
    };
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| content(format!(": {e}")))?;
        store.add(cert).map_err(|e| content(format!(": {e}")))?;
    }
    if store.is_empty() {
        return Err(content(String::new()));
    }
    Ok(store)
}

/// `prefer` and `require`: encryption without authentication of the server, as libpq
/// does. Handshake signatures are still checked (against the presented certificate).
#[derive(Debug)]
struct Unverified {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `verify-ca`: the WebPKI verification with the name check alone waived. WebPKI checks
/// the chain before the name, so a name mismatch means the chain was good.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn tls_parameters_leave_the_url_and_the_rest_stays() {
        let split = split_tls_params(
            "postgres://u:p@h:5432/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&connect_timeout=3",
        )
        .expect("splits");
        assert_eq!(
            split.rest,
            "postgres://u:p@h:5432/db?application_name=x&connect_timeout=3"
        );
        assert_eq!(split.mode, Some(SslMode::VerifyFull));
        assert_eq!(split.root_cert.as_deref(), Some("/tmp/ca.pem"));
        let bare = split_tls_params("postgres://h/db?sslmode=require").expect("splits");
        assert_eq!(bare.rest, "postgres://h/db");
        assert_eq!(bare.mode, Some(SslMode::Require));
    }

    #[test]
    fn modes_map_to_what_tokio_postgres_negotiates() {
        let target = PgTarget::parse_with_env("postgres://h/db", no_env).expect("parses");
        assert_eq!(target.mode(), SslMode::Prefer);
        assert_eq!(
            target.config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
        let target = PgTarget::parse_with_env("postgres://h/db?sslmode=verify-full", no_env)
            .expect("parses");
        assert_eq!(
            target.config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        let target =
            PgTarget::parse_with_env("postgres://h/db?sslmode=disable", no_env).expect("parses");
        assert_eq!(
            target.config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        let kv = PgTarget::parse_with_env("host=h dbname=db sslmode=require", no_env).expect("kv");
        assert_eq!(kv.mode(), SslMode::Require);
    }

    #[test]
    fn the_environment_fills_in_what_the_url_leaves_out() {
        let env = |name: &str| match name {
            "PGSSLMODE" => Some("require".to_owned()),
            _ => None,
        };
        let target = PgTarget::parse_with_env("postgres://h/db", env).expect("parses");
        assert_eq!(target.mode(), SslMode::Require);
        let target =
            PgTarget::parse_with_env("postgres://h/db?sslmode=disable", env).expect("parses");
        assert_eq!(target.mode(), SslMode::Disable);
    }

    #[test]
    fn unsupported_settings_are_refused_by_name() {
        for (url, expected) in [
            ("postgres://h/db?sslmode=allow", "sslmode=allow"),
            ("postgres://h/db?sslmode=bogus", "sslmode=bogus"),
            ("postgres://h/db?sslcert=/c.pem", "sslcert"),
            (
                "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
                "/nonexistent/ca.pem",
            ),
        ] {
            let error = PgTarget::parse_with_env(url, no_env)
                .expect_err(url)
                .to_string();
            assert!(error.contains(expected), "{url}: {error}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("pgtls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("empty.pem");
        std::fs::write(&file, "not a certificate\n").expect("write");
        let url = format!(
            "postgres://h/db?sslmode=verify-ca&sslrootcert={}",
            file.display()
        );
        let error = PgTarget::parse_with_env(&url, no_env).expect_err("refused");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            error
                .to_string()
                .contains("holds no usable PEM certificate"),
            "{error}"
        );
    }
}
