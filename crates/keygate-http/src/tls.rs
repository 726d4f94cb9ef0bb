//! TLS for keygate's listeners (rustls on `aws-lc-rs`): a certificate chain and its private key from
//! PEM files, served to every new handshake and swapped in place by [`Tls::reload`] (SIGHUP), so
//! a renewed certificate takes effect without dropping a connection: sessions already open keep
//! theirs. rustls's defaults: TLS 1.3 and 1.2 with forward-secret AEAD suites only. ALPN offers
//! `http/1.1`, and `h2` first on a listener that serves HTTP/2 ([`Tls::offering_http2`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;

use crate::transport::Stream;

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate or key could not be used. Never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: io::Error },
    #[error(
        "{} holds no certificate: give the PEM file with the server's certificate (`-----BEGIN \
         CERTIFICATE-----`) first, then its intermediates",
        path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error(
        "{} holds no private key: give a PEM file with a `PRIVATE KEY`, `RSA PRIVATE KEY` or \
         `EC PRIVATE KEY` block",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error("{} is not valid PEM: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("the TLS key {} cannot be used with the certificate {}: {source}", key.display(), cert.display())]
    Unusable { cert: PathBuf, key: PathBuf, source: rustls::Error },
}

/// A listener's TLS: the files, the certificate served now and the acceptor using it. Cheap to
/// clone (clones share the certificate a reload swaps).
#[derive(Clone)]
pub struct Tls {
    /// The certificate and key files.
    files: Arc<(PathBuf, PathBuf)>,
    current: Arc<Current>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (cert, key) = &*self.files;
        f.debug_struct("Tls").field("cert", cert).field("key", key).finish()
    }
}

/// The certificate every new handshake gets.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl Tls {
    /// Reads `cert` (the chain, leaf first) and `key`, and checks that they belong together.
    ///
    /// # Errors
    /// A file cannot be read, holds no certificate or key, or the key does not match.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let certified = certified_key(cert, key)?;
        let current = Arc::new(Current(ArcSwap::from_pointee(certified)));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Unusable {
                cert: cert.to_owned(),
                key: key.to_owned(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            files: Arc::new((cert.to_owned(), key.to_owned())),
            current,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The same certificate (reloads included) with ALPN offering `h2` before `http/1.1`: a
    /// client that speaks HTTP/2 gets it ([`crate::h2`]), any other HTTP/1.1.
    #[must_use]
    pub fn offering_http2(&self) -> Self {
        let mut config = rustls::ServerConfig::clone(self.acceptor.config());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self {
            files: Arc::clone(&self.files),
            current: Arc::clone(&self.current),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }
    }

    /// Reads the files again and serves what they hold to every new handshake; on any error
    /// the certificate served so far stays.
    ///
    /// # Errors
    /// As [`Tls::load`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let (cert, key) = &*self.files;
        self.current.0.store(Arc::new(certified_key(cert, key)?));
        Ok(())
    }

    /// The TLS handshake on an accepted connection, within [`HANDSHAKE_TIMEOUT`].
    ///
    /// # Errors
    /// The handshake failed or took too long.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        let handshake = self.acceptor.accept(tcp);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls)))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let pem_error = |path: &Path, e: rustls_pki_types::pem::Error| match e {
        rustls_pki_types::pem::Error::Io(source) => TlsError::Read {
            what: if path == cert { "certificate" } else { "key" },
            path: path.to_owned(),
            source,
        },
        other => TlsError::Pem { path: path.to_owned(), detail: format!("{other:?}") },
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.to_owned() });
    }
    let private = match PrivateKeyDer::from_pem_file(key) {
        Ok(k) => k,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey { path: key.to_owned() });
        }
        // Only the kind of error: a PEM parser's detail could quote key bytes.
        Err(rustls_pki_types::pem::Error::Io(source)) => {
            return Err(TlsError::Read { what: "key", path: key.to_owned(), source });
        }
        Err(_) => {
            return Err(TlsError::Pem { path: key.to_owned(), detail: "malformed".to_owned() });
        }
    };
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(chain, private, &provider).map_err(|source| TlsError::Unusable {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn bad_files_are_refused_with_what_to_fix_and_a_failed_reload_keeps_the_old_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a");
        let (_, other_key) = pair(dir.path(), "b");
        let tls = Tls::load(&cert, &key).unwrap();
        let err = |c: &Path, k: &Path| Tls::load(c, k).unwrap_err().to_string();
        assert!(
            err(&dir.path().join("missing.crt"), &key).contains("cannot read the TLS certificate")
        );
        assert!(err(&key, &key).contains("holds no certificate"));
        assert!(err(&cert, &cert).contains("holds no private key"));
        let mismatch = err(&cert, &other_key);
        assert!(mismatch.contains("cannot be used with the certificate"), "{mismatch}");
        // A reload that fails serves on with what was loaded.
        let before = tls.current.0.load_full();
        std::fs::write(&key, "not a key").unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.current.0.load_full()));
        // A good one swaps it.
        let (new_cert, new_key) = pair(dir.path(), "c");
        std::fs::rename(new_cert, &cert).unwrap();
        std::fs::rename(new_key, &key).unwrap();
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.current.0.load_full()));
    }
}
