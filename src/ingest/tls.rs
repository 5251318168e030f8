//! TLS server configuration from PEM files: a certificate chain, its private key and,
//! optionally, a CA bundle that client certificates must chain to (mutual TLS).
//!
//! Used by the webhook receiver; kept free of webhook specifics so other listeners can reuse
//! it. The crypto provider is always passed explicitly (ring): relying on the process-wide
//! default would panic at start-up if another dependency ever enabled a second provider.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// The PEM files a TLS listener is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain (leaf first), PEM.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key: PathBuf,
    /// When set, clients must present a certificate that chains to one of these CAs, or the
    /// handshake fails.
    pub client_ca: Option<PathBuf>,
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("{}: invalid PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: io::Error,
    },
    /// A certificate file holds no certificate.
    #[error("{}: no certificate found (expected a PEM `CERTIFICATE` block)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key.
    #[error("{}: no private key found (expected a PKCS#8, PKCS#1 or SEC1 PEM block)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The client CA bundle is unusable.
    #[error("{}: unusable client CA bundle: {message}", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the certificate/key pair (e.g. the key does not match).
    #[error("certificate {} with key {}: {source}", cert.display(), key.display())]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
}

/// The crypto provider audithawk uses everywhere (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every certificate in a PEM file; an empty file is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = read(path)?;
    let certs = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = read(path)?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(|source| TlsError::Pem {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: path.to_path_buf(),
        })
}

/// Builds a rustls server configuration from `files`, offering `alpn` protocols in order
/// of preference (e.g. `[b"h2", b"http/1.1"]`).
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for cert in load_certs(ca_path)? {
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    path: ca_path.clone(),
                    message: e.to_string(),
                })?;
            }
            // Mandatory: a handshake without a certificate that chains to `roots` fails.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca_path.clone(),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Config {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        f
    }

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn builds_with_and_without_client_ca() {
        let (cert, key) = pair();
        let (c, k) = (file(&cert), file(&key));
        let mut files = TlsFiles {
            cert: c.path().into(),
            key: k.path().into(),
            client_ca: None,
        };
        let cfg = server_config(&files, &[b"http/1.1"]).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
        files.client_ca = Some(c.path().into());
        server_config(&files, &[]).unwrap();
    }

    #[test]
    fn errors_name_the_file() {
        let (cert, key) = pair();
        let (c, k) = (file(&cert), file(&key));
        let empty = file("hello\n");
        let missing = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: k.path().into(),
            client_ca: None,
        };
        let e = server_config(&missing, &[]).unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");

        let no_cert = TlsFiles {
            cert: empty.path().into(),
            key: k.path().into(),
            client_ca: None,
        };
        assert!(matches!(
            server_config(&no_cert, &[]).unwrap_err(),
            TlsError::NoCertificate { .. }
        ));
        // The certificate file has no key in it.
        let no_key = TlsFiles {
            cert: c.path().into(),
            key: c.path().into(),
            client_ca: None,
        };
        assert!(matches!(
            server_config(&no_key, &[]).unwrap_err(),
            TlsError::NoKey { .. }
        ));
        let bad_ca = TlsFiles {
            cert: c.path().into(),
            key: k.path().into(),
            client_ca: Some(empty.path().into()),
        };
        assert!(matches!(
            server_config(&bad_ca, &[]).unwrap_err(),
            TlsError::NoCertificate { .. }
        ));
    }

    #[test]
    fn mismatched_key_is_refused() {
        let (cert, _) = pair();
        let (_, other_key) = pair();
        let (c, k) = (file(&cert), file(&other_key));
        let files = TlsFiles {
            cert: c.path().into(),
            key: k.path().into(),
            client_ca: None,
        };
        assert!(matches!(
            server_config(&files, &[]).unwrap_err(),
            TlsError::Config { .. }
        ));
    }
}
