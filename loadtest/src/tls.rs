//! The client side of TLS (RFC 3261 26.2.1, `--transport tls`). A load generator is pointed at
//! test servers, which mostly present a self-signed certificate (sipfront makes one at first
//! start), so by default any certificate is accepted: the handshake and the encryption are
//! real and cost what they cost, but the server is not authenticated. `--tls-ca FILE` verifies
//! the certificate against that file's certificates, and the name against the target's address
//! or `--tls-server-name`.

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How every connection of a run makes its handshake: one configuration, one server name.
pub struct Client {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl Client {
    /// `ca`: verify against these certificates (PEM) instead of accepting any. `name`: the
    /// name to verify and to send as SNI (a DNS name or an address); by default `target`'s
    /// address.
    pub fn new(ca: Option<&Path>, name: Option<&str>, target: std::net::IpAddr) -> anyhow::Result<Client> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS versions")?;
        let config = match ca {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path).with_context(|| format!("read {}", path.display()))? {
                    let cert = cert.with_context(|| format!("parse {}", path.display()))?;
                    roots.add(cert).with_context(|| format!("{}: not a usable CA certificate", path.display()))?;
                }
                anyhow::ensure!(!roots.is_empty(), "{}: no certificate", path.display());
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
        };
        let name = match name {
            Some(n) => ServerName::try_from(n.to_string()).with_context(|| format!("bad TLS server name {n:?}"))?,
            None => ServerName::IpAddress(target.into()),
        };
        Ok(Client { connector: tokio_rustls::TlsConnector::from(Arc::new(config)), name })
    }

    pub async fn connect(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}

/// Accepts whatever certificate the server shows, but still checks that the server holds its
/// key (the handshake signature), so the connection costs the server what a verified one would.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
