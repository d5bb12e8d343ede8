//! TLS termination with rustls (ring provider): the server certificate and
//! key, loaded once from PEM, and the handshake of each accepted socket.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A loaded certificate chain and key, ready to serve `https://` and `wss://`.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub(crate) server: Arc<ServerConfig>,
}

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: no PEM certificate found")]
    NoCertificate { what: String },
    #[error("{what}: not a PEM certificate chain: {detail}")]
    BadCertificate { what: String, detail: String },
    #[error("{what}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found: {detail}")]
    BadKey { what: String, detail: String },
    #[error("the certificate and key cannot be used together: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsConfig {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key.
    ///
    /// # Errors
    /// A file that cannot be read, holds no certificate or key, or a key that
    /// does not match the certificate; the message names the file.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        Self::build(
            &read(cert)?,
            &read(key)?,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    /// Like [`TlsConfig::from_pem_files`], from PEM text in memory.
    ///
    /// # Errors
    /// As [`TlsConfig::from_pem_files`].
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsConfig, TlsError> {
        Self::build(cert_pem, key_pem, "certificate", "key")
    }

    fn build(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_what: &str,
        key_what: &str,
    ) -> Result<TlsConfig, TlsError> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::BadCertificate {
                what: cert_what.into(),
                detail: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                what: cert_what.into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
            what: key_what.into(),
            detail: e.to_string(),
        })?;
        // The provider is named, not taken from the process default: the
        // binary links only ring, and a second provider pulled in by some
        // dependency would otherwise make the default ambiguous (a panic).
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        // hyper serves HTTP/1.1 only (the WebSocket upgrade is an HTTP/1.1 affair).
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig {
            server: Arc::new(server),
        })
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }
}
