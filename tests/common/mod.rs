//! Helpers shared by the black-box tests: a throw-away PKI (CA, server certificate for
//! 127.0.0.1/localhost, client certificates) written to a temporary directory.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, PEM.
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// The private key (PKCS#8).
    pub key: String,
}

impl Pem {
    /// Certificate and key in one buffer, as `reqwest::Identity::from_pem` wants it.
    pub fn identity_pem(&self) -> Vec<u8> {
        format!("{}{}", self.cert, self.key).into_bytes()
    }
}

/// A CA that can issue certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    /// A new self-signed CA.
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        Ca { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    fn issue(&self, sans: &[&str], cn: &str, eku: ExtendedKeyUsagePurpose) -> Pem {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![eku];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf cert");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self) -> Pem {
        self.issue(
            &["127.0.0.1", "localhost"],
            "audithawk",
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate (what the API server presents).
    pub fn client(&self, cn: &str) -> Pem {
        self.issue(&[], cn, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A CA, a server certificate and a client certificate, with the server side on disk.
pub struct Pki {
    /// Holds the files; deleted on drop.
    pub dir: tempfile::TempDir,
    /// The CA (issues both server and client certificates).
    pub ca: Ca,
    /// The server certificate file.
    pub server_cert: PathBuf,
    /// The server key file.
    pub server_key: PathBuf,
    /// The CA certificate file (client CA for the server).
    pub ca_file: PathBuf,
    /// A client certificate issued by the CA.
    pub client: Pem,
}

impl Pki {
    /// Generates everything into a new temporary directory.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("audithawk test CA");
        let server = ca.server();
        let client = ca.client("kube-apiserver");
        let server_cert = dir.path().join("server.pem");
        let server_key = dir.path().join("server-key.pem");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&server_cert, &server.cert).expect("write");
        std::fs::write(&server_key, &server.key).expect("write");
        std::fs::write(&ca_file, ca.pem()).expect("write");
        Pki {
            dir,
            ca,
            server_cert,
            server_key,
            ca_file,
            client,
        }
    }
}
