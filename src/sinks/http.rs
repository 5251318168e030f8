//! What the HTTP sinks share: the client (TLS options), secrets, and reading responses.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::SendOutcome;

/// A secret from the config (token, password, API key). `Debug` and `Display` print `***`
/// so that it cannot leak through logs or `config show`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The value, for building a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// TLS settings of a sink.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// PEM file of CA certificates to trust in addition to the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS; needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only: logs a warning at start.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl TlsOptions {
    /// Problems with these options, naming the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.cert_file.is_some() != self.key_file.is_some() {
            p.push(format!(
                "`{prefix}.tls.cert_file` and `{prefix}.tls.key_file` must be set together"
            ));
        }
        for (k, f) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(f) = f {
                if !f.exists() {
                    p.push(format!(
                        "`{prefix}.tls.{k}`: {} does not exist",
                        f.display()
                    ));
                }
            }
        }
        p
    }
}

/// Why an HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A TLS file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A TLS file is not valid PEM, or the client could not be built.
    #[error("{0}")]
    Build(String),
}

/// Builds the pooled HTTP client of one sink.
pub fn client(
    name: &str,
    tls: &TlsOptions,
    timeout: Duration,
) -> Result<reqwest::Client, ClientError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|source| ClientError::Read {
            path: p.clone(),
            source,
        })
    };
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("audithawk/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = &tls.ca_file {
        let pem = read(ca)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ClientError::Build(format!("{}: {e}", ca.display())))?;
        if certs.is_empty() {
            return Err(ClientError::Build(format!(
                "{}: no certificate found",
                ca.display()
            )));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let mut pem = read(cert)?;
        pem.push(b'\n');
        pem.extend_from_slice(&read(key)?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
            ClientError::Build(format!("{} / {}: {e}", cert.display(), key.display()))
        })?;
        b = b.identity(id);
    }
    if tls.insecure_skip_verify {
        tracing::warn!(sink = %name, "TLS certificate verification is disabled (insecure_skip_verify); alerts can be intercepted.");
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| ClientError::Build(e.to_string()))
}

/// The server's Retry-After (seconds or an HTTP date), if any.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let d = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(d.to_std().unwrap_or(Duration::ZERO))
}

/// Whether a status is worth retrying: 408, 429 and 5xx.
pub fn retriable(status: reqwest::StatusCode) -> bool {
    status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error()
}

/// A network error (connection refused or reset, timeout): always retried.
pub fn network_error(e: &reqwest::Error) -> SendOutcome {
    SendOutcome::Retry {
        reason: format!("network: {}", error_chain(e)),
        after: None,
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The generic reading of a response: 2xx done, 408/429/5xx retry (honouring
/// Retry-After), anything else fatal with the start of the body as the reason.
pub fn classify(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
) -> SendOutcome {
    if status.is_success() {
        return SendOutcome::Done;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]).to_string();
    if retriable(status) {
        SendOutcome::Retry {
            reason: format!("HTTP {status}: {text}"),
            after: retry_after(headers),
        }
    } else {
        SendOutcome::Fatal {
            reason: format!("HTTP {status}: {text}"),
        }
    }
}

/// Gzips `data` (fast level: the network, not the CPU, is what batching saves).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// The problem with `url` as the value of `{prefix}.{key}`, unless it is an http(s) URL.
pub fn check_url(prefix: &str, key: &str, url: &str) -> Option<String> {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => None,
        _ => Some(format!(
            "`{prefix}.{key}` must be an http(s) URL, got {url:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_hidden() {
        let s = Secret::new("abc");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "abc");
    }

    #[test]
    fn retry_after_forms() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
