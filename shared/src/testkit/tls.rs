//! A throw-away certificate authority for servers started with TLS.
//!
//! [`TestCa`] generates (rcgen, at test time: no key is ever committed) a CA and one
//! server certificate signed by it that names `localhost` only, so a client verifying
//! host names must connect to `localhost`, and one connecting to `127.0.0.1` with host
//! name verification is refused (which tests use to see the check happen);
//! [`TestCa::for_names`] names others instead (an IP address as an IP address). The CA's
//! certificate is `ca.pem` in a fresh `/tmp/testkit-ca-*` directory, deleted on drop.
//!
//! What must hold: private keys are written with mode 0600 and, for a server that runs
//! as another OS user, copied into that server's own directory and handed to that user
//! (PostgreSQL refuses a key others can read); each server keeps its own copy, so it
//! never depends on the lifetime of the [`TestCa`].

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::{temp_dir, TestkitError};

/// A test CA and a server certificate signed by it, for `localhost` unless other names
/// were given.
#[derive(Debug)]
pub struct TestCa {
    ca_file: PathBuf,
    server_cert_pem: String,
    server_key_pem: String,
    dir: tempfile::TempDir,
}

/// Where a server's copies of its certificate and key are.
#[derive(Clone, Debug)]
pub(crate) struct ServerFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) ca: PathBuf,
}

impl TestCa {
    /// Generates a CA and a `localhost` server certificate.
    pub fn new() -> Result<Self, TestkitError> {
        Self::for_names(&["localhost"])
    }

    /// Generates a CA and a server certificate for `names` (host names, or IP addresses
    /// such as `127.0.0.1`); the first is also its common name.
    pub fn for_names(names: &[&str]) -> Result<Self, TestkitError> {
        let Some(common_name) = names.first() else {
            return Err(TestkitError::Usage(
                "a server certificate needs at least one name".into(),
            ));
        };
        let failed = |what: &str, e: rcgen::Error| {
            TestkitError::Usage(format!("generating the test {what}: {e}"))
        };
        let ca_key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("CA", e))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: two test CAs are as unrelated as two real ones.
        static MADE: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "stellar-payments test CA {}-{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        );
        ca_params.distinguished_name.push(DnType::CommonName, name);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(|e| failed("CA", e))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(|e| failed("server key", e))?;
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut server_params =
            CertificateParams::new(names).map_err(|e| failed("server certificate", e))?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, *common_name);
        server_params.is_ca = IsCa::NoCa;
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .map_err(|e| failed("server certificate", e))?;

        let dir = temp_dir("testkit-ca-")?;
        let ca_file = dir.path().join("ca.pem");
        write_file(&ca_file, ca_cert.pem().as_bytes(), 0o644)?;
        Ok(Self {
            ca_file,
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            dir,
        })
    }

    /// The CA certificate (PEM): what a client trusts.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The server certificate (PEM), for a server started in this process.
    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }

    /// The server certificate's private key (PEM).
    pub fn server_key_pem(&self) -> &str {
        &self.server_key_pem
    }

    /// The directory holding the CA file (deleted on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes the server certificate, its key (0600) and the CA certificate into `dir`,
    /// owned by `owner` when given.
    pub(crate) fn install_server_files(
        &self,
        dir: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<ServerFiles, TestkitError> {
        let files = ServerFiles {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            ca: dir.join("ca.crt"),
        };
        let ca_pem = fs::read(&self.ca_file)
            .map_err(|e| TestkitError::io(format!("reading {}", self.ca_file.display()), e))?;
        write_file(&files.cert, self.server_cert_pem.as_bytes(), 0o644)?;
        write_file(&files.key, self.server_key_pem.as_bytes(), 0o600)?;
        write_file(&files.ca, &ca_pem, 0o644)?;
        if let Some((uid, gid)) = owner {
            for path in [&files.cert, &files.key, &files.ca] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|e| TestkitError::io(format!("chown {}", path.display()), e))?;
            }
        }
        Ok(files)
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TestkitError> {
    fs::write(path, bytes)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .map_err(|e| TestkitError::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_private_and_certificates_are_pem() {
        let ca = TestCa::new().expect("CA");
        let text = fs::read_to_string(ca.ca_file()).expect("CA file");
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----"), "{text}");
        let target = temp_dir("testkit-ca-test-").expect("dir");
        let files = ca
            .install_server_files(target.path(), None)
            .expect("server files");
        let mode = fs::metadata(&files.key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = fs::read_to_string(&files.key).expect("key");
        assert!(key.contains("PRIVATE KEY"), "{key}");
    }
}
