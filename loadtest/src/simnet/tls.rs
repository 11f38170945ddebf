//! HTTPS for the simulator: a certificate chain and its key (PEM) make a rustls server
//! configuration ([`SimnetTls`]), and [`TlsListener`] hands axum connections that have
//! completed the TLS handshake, so the same router serves `https://`.
//!
//! What must hold: the listener never waits on one client's handshake to accept the
//! next (each handshake runs on its own task, bounded by [`HANDSHAKE_TIMEOUT`]); a
//! handshake that fails (a client that does not trust the certificate, or one speaking
//! plain HTTP to the TLS port) costs that connection only and is logged, never fatal;
//! the server offers HTTP/1.1 in ALPN, the only protocol it speaks; a certificate or key
//! that cannot be read is an error naming what is wrong, at start.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest a client may take over its handshake before its connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The simulator's TLS identity: its certificate chain and private key.
#[derive(Clone, Debug)]
pub struct SimnetTls {
    config: Arc<rustls::ServerConfig>,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

impl SimnetTls {
    /// From PEM text: `cert_chain` holds the server certificate first, then any
    /// intermediates; `key` its private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> io::Result<Self> {
        let certs = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("reading the certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(invalid("the certificate file holds no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| invalid(format!("reading the private key: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            invalid(format!(
                "the certificate and key do not make a TLS identity: {e}"
            ))
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// From PEM files, as [`SimnetTls::from_pem`].
    pub fn from_files(cert_chain: &Path, key: &Path) -> io::Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path)
                .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))
        };
        Self::from_pem(&read(cert_chain)?, &read(key)?)
    }
}

/// A TCP listener whose connections come out of a completed TLS handshake.
pub(crate) struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, tls: &SimnetTls) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(Arc::clone(&tls.config)),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, addr)) => {
                        let _ = stream.set_nodelay(true);
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => Some((tls, addr)),
                                Ok(Err(error)) => {
                                    tracing::info!(%addr, %error, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::info!(%addr, "TLS handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: let it pass, then go on.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
