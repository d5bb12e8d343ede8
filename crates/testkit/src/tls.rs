//! TLS clients for a [`crate::TestServer`] started with a test certificate:
//! `wss://` through tokio-tungstenite's rustls connector and `https://`
//! through tokio-rustls. Both trust exactly the one certificate given (the
//! server's self-signed one), with the ring provider like the broker.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{Client, WAIT};

/// A client configuration that trusts only `cert_der`.
pub fn client_config(cert_der: &[u8]) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert_der.to_vec()))
        .expect("test certificate is a valid trust anchor");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// `wss://{addr}/ws`, naming the server by IP (the test certificate has an IP SAN).
pub fn wss_url(addr: SocketAddr) -> String {
    format!("wss://{addr}/ws")
}

impl Client {
    /// Connects to a `wss://` URL trusting `cfg`'s roots.
    ///
    /// # Errors
    /// The TLS or WebSocket handshake error.
    pub async fn connect_tls(
        url: &str,
        cfg: Arc<ClientConfig>,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let req = url.into_client_request()?;
        let fut = tokio_tungstenite::connect_async_tls_with_config(
            req,
            None,
            false,
            Some(Connector::Rustls(cfg)),
        );
        let (ws, _) = tokio::time::timeout(WAIT, fut).await.map_err(|_| {
            tokio_tungstenite::tungstenite::Error::Io(std::io::Error::other("connect timed out"))
        })??;
        Ok(Client::from_stream(ws))
    }
}

/// One HTTPS request (`Connection: close`); returns status and body.
pub async fn https(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    method: &str,
    path: &str,
) -> (u16, String) {
    let fut = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        crate::http_on(tls, addr, method, path, &[], b"").await
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("HTTPS request in time")
}
