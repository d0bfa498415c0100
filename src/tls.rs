//! TLS for the kick server's external (operators') API, and the pinning
//! the CLI uses to reach it.
//!
//! With a certificate of the user's own (`--tls-cert`/`--tls-key`), kick
//! serves it; without one, kick makes a self-signed one on
//! first start (rcgen), keeps it in its state directory across restarts,
//! and publishes its SHA-256 fingerprint to the artifact bucket, where the
//! CLI reads it with the user's AWS rights. The CLI then accepts exactly
//! that certificate: the fingerprint replaces the CA chain, and the TLS
//! handshake's signatures are still verified. Verification is never
//! turned off.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio_rustls::TlsAcceptor;

/// The server's certificate and key.
#[derive(Clone)]
pub struct Identity {
    /// The server's own certificate (DER).
    pub cert: Vec<u8>,
    /// Intermediate certificates sent after it, for a CA-issued pair.
    chain: Vec<Vec<u8>>,
    key: Arc<PrivateKeyDer<'static>>,
    /// Hex SHA-256 of the certificate (DER).
    pub fingerprint: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// Installs the process's default TLS crypto provider (aws-lc-rs), which
/// HTTP clients need before they are built. Safe to call more than once.
pub fn ensure_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Hex SHA-256 of bytes.
pub fn fingerprint(der: &[u8]) -> String {
    crate::digest::sha256(der)
}

/// Loads the identity kept in `dir`, or makes a self-signed one for
/// `names` and keeps it there (the key readable by its owner only).
pub fn load_or_create(dir: &Path, names: &[String]) -> io::Result<Identity> {
    let (cert_path, key_path) = (dir.join("kick-cert.der"), dir.join("kick-key.der"));
    if cert_path.exists() && key_path.exists() {
        let cert = std::fs::read(&cert_path)?;
        let key = std::fs::read(&key_path)?;
        return Ok(Identity {
            fingerprint: fingerprint(&cert),
            cert,
            chain: Vec::new(),
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key))),
        });
    }
    std::fs::create_dir_all(dir)?;
    let made = rcgen::generate_simple_self_signed(names.to_vec()).map_err(io::Error::other)?;
    let cert = made.cert.der().to_vec();
    let key = made.signing_key.serialize_der();
    write_private(&key_path, &key)?;
    std::fs::write(&cert_path, &cert)?;
    Ok(Identity {
        fingerprint: fingerprint(&cert),
        cert,
        chain: Vec::new(),
        key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key))),
    })
}

/// The user's own certificate and key (PEM files: the certificate first,
/// then any intermediates; the key in PKCS#8, PKCS#1 or SEC1). The
/// fingerprint the CLI pins is the server certificate's.
pub fn load_pem(cert_path: &Path, key_path: &Path) -> io::Result<Identity> {
    use rustls::pki_types::pem::PemObject;
    let invalid = |path: &Path, err: rustls::pki_types::pem::Error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {err}", path.display()),
        )
    };
    let mut certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| invalid(cert_path, e))?
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(cert_path, e))?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no certificate in it", cert_path.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| invalid(key_path, e))?;
    let cert = certs.remove(0);
    let identity = Identity {
        fingerprint: fingerprint(&cert),
        cert,
        chain: certs,
        key: Arc::new(key),
    };
    // A key that does not match the certificate fails here, not at the
    // first handshake.
    server_config(&identity)?;
    Ok(identity)
}

fn server_config(identity: &Identity) -> io::Result<rustls::ServerConfig> {
    let chain = std::iter::once(&identity.cert)
        .chain(&identity.chain)
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, identity.key.clone_key())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// The acceptor that serves `identity` (handshakes run per connection, in
/// [`crate::control::listener::serve`]).
pub fn acceptor(identity: &Identity) -> io::Result<TlsAcceptor> {
    Ok(TlsAcceptor::from(Arc::new(server_config(identity)?)))
}

/// A client configuration that trusts exactly the certificate with this
/// SHA-256 fingerprint.
pub fn pinned_client(fingerprint: &str) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = provider();
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint: fingerprint.trim().to_ascii_lowercase(),
                provider,
            }))
            .with_no_client_auth(),
    )
}

/// Accepts the one certificate whose fingerprint is pinned, and checks the
/// handshake's signatures with it as any verifier does.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the kick server's certificate does not match the fingerprint it published".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_own_pair_is_served_and_a_mismatched_key_is_refused() {
        let dir = std::env::temp_dir().join(format!("huxley-tls-own-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let made = |name: &str| {
            rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("a certificate")
        };
        let (ours, other) = (made("kick.acme.example.com"), made("other.example.com"));
        std::fs::write(dir.join("cert.pem"), ours.cert.pem()).expect("write");
        std::fs::write(dir.join("key.pem"), ours.signing_key.serialize_pem()).expect("write");
        std::fs::write(dir.join("other-key.pem"), other.signing_key.serialize_pem())
            .expect("write");
        let identity = load_pem(&dir.join("cert.pem"), &dir.join("key.pem")).expect("loads");
        assert_eq!(identity.fingerprint, fingerprint(ours.cert.der()));
        let mismatched = load_pem(&dir.join("cert.pem"), &dir.join("other-key.pem"));
        assert!(mismatched.is_err());
        let missing =
            load_pem(&dir.join("nope.pem"), &dir.join("key.pem")).expect_err("no such file");
        assert!(missing.to_string().contains("nope.pem"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_identity_is_kept_across_restarts_with_a_private_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("huxley-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = load_or_create(&dir, &["kick-acme.example.com".into()]).expect("made");
        let again = load_or_create(&dir, &["kick-acme.example.com".into()]).expect("loaded");
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 64);
        let mode = std::fs::metadata(dir.join("kick-key.der"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{first:?}").contains("key:"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
