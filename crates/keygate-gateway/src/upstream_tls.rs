//! TLS for `https://` upstreams of `http-proxy` routes: rustls with the system's trusted roots
//! (`rustls-native-certs`: `/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`), read once on
//! the first https request, SNI from the URI's host, ALPN `http/1.1`.
//!
//! `tlsConfig: {insecureSkipVerification: true}` on a route does what it does on API Gateway:
//! the certificate may be self-signed or from a private CA (the top of the chain the upstream
//! sends is trusted for that handshake), and the rest is still checked: the name, the validity
//! dates, every signature in the chain and the handshake's own.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;

/// The connector for verified upstreams, or why there is none (no trusted roots on the system).
pub(crate) fn verified() -> Result<TlsConnector, String> {
    static CONNECTOR: OnceLock<Result<TlsConnector, String>> = OnceLock::new();
    CONNECTOR.get_or_init(system_roots).clone()
}

/// The connector for routes with `insecureSkipVerification`.
pub(crate) fn any_issuer() -> TlsConnector {
    static CONNECTOR: OnceLock<TlsConnector> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = provider();
            let verifier = Arc::new(AnyIssuer { provider: Arc::clone(&provider) });
            let config = builder(&provider)
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            connector(config)
        })
        .clone()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn builder(
    provider: &Arc<CryptoProvider>,
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier> {
    rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default protocol versions")
}

fn connector(mut config: rustls::ClientConfig) -> TlsConnector {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

fn system_roots() -> Result<TlsConnector, String> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "cannot read some of the system's trusted certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, unusable) = roots.add_parsable_certificates(found.certs);
    if unusable > 0 {
        tracing::debug!(unusable, "system certificates rustls cannot use as roots");
    }
    if added == 0 {
        return Err("no trusted root certificates found on this system to verify https upstreams \
                    with: install the ca-certificates package or set SSL_CERT_FILE"
            .to_owned());
    }
    tracing::debug!(roots = added, "trusted roots for https upstreams loaded");
    let config = builder(&provider()).with_root_certificates(roots).with_no_client_auth();
    Ok(connector(config))
}

/// Trusts the top of the chain the upstream sent (a self-signed certificate is its own top) for
/// that one handshake, then verifies as usual against it: name, dates, signatures.
#[derive(Debug)]
struct AnyIssuer {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyIssuer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let top = intermediates.last().unwrap_or(end_entity);
        let mut roots = RootCertStore::empty();
        roots.add(top.clone().into_owned())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
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
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
