//! Syslog over TCP or TLS: RFC 5424 messages with octet-counting framing (RFC 6587 §3.4.1,
//! as RFC 5425 requires for TLS), the alert as JSON or as CEF in MSG. For QRadar,
//! ArcSight and syslog relays.
//!
//! A stream has no application-level acknowledgement: a write that succeeded reached the
//! kernel, not necessarily the receiver. A broken connection fails the next write, the
//! batch is retried on a new connection; at most the batch in flight may be duplicated.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::config::{DeliveryConfig, RouteConfig};
use super::http::TlsOptions;
use super::{BoxFuture, SendOutcome, Sink};
use crate::model::{Alert, Level, SharedAlert};

/// Transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Plain TCP (default).
    #[default]
    Tcp,
    /// TLS (RFC 5425).
    Tls,
}

/// What MSG holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyslogFormat {
    /// The alert as one JSON object (default).
    #[default]
    Json,
    /// ArcSight Common Event Format.
    Cef,
}

fn default_facility() -> u8 {
    10 // authpriv: security/authorization messages
}
fn default_app() -> String {
    "audithawk".into()
}

/// `type: syslog`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// Sink name (default `syslog`).
    #[serde(default)]
    pub name: Option<String>,
    /// `host:port` of the receiver.
    pub address: String,
    /// `tcp` (default) or `tls`.
    #[serde(default)]
    pub transport: Transport,
    /// Name to verify the receiver's certificate against (default: the host of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// TLS options (`ca_file` adds to the built-in web PKI roots).
    #[serde(default)]
    pub tls: TlsOptions,
    /// `json` (default) or `cef`.
    #[serde(default)]
    pub format: SyslogFormat,
    /// Facility number 0-23 (default 10, authpriv).
    #[serde(default = "default_facility")]
    pub facility: u8,
    /// APP-NAME (default `audithawk`).
    #[serde(default = "default_app")]
    pub app_name: String,
    /// HOSTNAME (default: the alert's cluster name, else `audithawk`).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Which alerts go here.
    #[serde(default)]
    pub route: RouteConfig,
    /// Batching, buffering and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl SyslogConfig {
    /// The sink name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("syslog")
    }

    /// Problems, naming the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        if split_host_port(&self.address).is_none() {
            p.push(format!(
                "`{prefix}.address` must be host:port, got {:?}",
                self.address
            ));
        }
        if self.facility > 23 {
            p.push(format!(
                "`{prefix}.facility` must be 0..=23, got {}",
                self.facility
            ));
        }
        if self.app_name.is_empty()
            || self.app_name.len() > 48
            || !self.app_name.bytes().all(|b| (33..=126).contains(&b))
        {
            p.push(format!(
                "`{prefix}.app_name` must be 1-48 printable ASCII characters without spaces"
            ));
        }
        p.extend(self.tls.validate(prefix));
        p
    }
}

fn split_host_port(a: &str) -> Option<(&str, u16)> {
    let (h, p) = a.rsplit_once(':')?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    (!h.is_empty()).then_some(())?;
    Some((h, p.parse().ok()?))
}

trait Stream: AsyncWrite + Send + Unpin {}
impl<T: AsyncWrite + Send + Unpin> Stream for T {}

/// The syslog sink.
pub struct SyslogSink {
    name: String,
    cfg: SyslogConfig,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    conn: tokio::sync::Mutex<Option<Pin<Box<dyn Stream>>>>,
}

impl std::fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSink")
            .field("name", &self.name)
            .field("address", &self.cfg.address)
            .finish()
    }
}

impl SyslogSink {
    /// Builds the sink (reads TLS files; no network yet).
    pub fn new(cfg: &SyslogConfig) -> Result<SyslogSink, String> {
        let tls = match cfg.transport {
            Transport::Tcp => None,
            Transport::Tls => {
                let host = cfg
                    .server_name
                    .clone()
                    .or_else(|| split_host_port(&cfg.address).map(|(h, _)| h.to_string()))
                    .ok_or_else(|| format!("`address` must be host:port, got {:?}", cfg.address))?;
                let sn = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("`server_name` {host:?}: {e}"))?;
                Some((
                    tokio_rustls::TlsConnector::from(Arc::new(tls_config(cfg.name(), &cfg.tls)?)),
                    sn,
                ))
            }
        };
        Ok(SyslogSink {
            name: cfg.name().to_string(),
            cfg: cfg.clone(),
            tls,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    async fn connect(&self) -> io::Result<Pin<Box<dyn Stream>>> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            TcpStream::connect(&self.cfg.address),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::pin(tcp)),
            Some((c, sn)) => Ok(Box::pin(c.connect(sn.clone(), tcp).await?)),
        }
    }

    /// The frames of a batch.
    pub fn encode(&self, batch: &[SharedAlert]) -> Vec<u8> {
        let mut out = Vec::with_capacity(batch.len() * 1200);
        for a in batch {
            let msg = rfc5424(a, &self.cfg);
            out.extend_from_slice(msg.len().to_string().as_bytes());
            out.push(b' ');
            out.extend_from_slice(msg.as_bytes());
        }
        out
    }
}

fn read_pem(p: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// A rustls client config from the sink's TLS options.
fn tls_config(name: &str, o: &TlsOptions) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &o.ca_file {
        let pem = read_pem(ca)?;
        for c in rustls_pemfile::certs(&mut pem.as_slice()) {
            let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
            roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
        }
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?;
    let b = if o.insecure_skip_verify {
        tracing::warn!(sink = %name, "TLS certificate verification is disabled (insecure_skip_verify); alerts can be intercepted.");
        b.dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify))
    } else {
        b.with_root_certificates(roots)
    };
    match (&o.cert_file, &o.key_file) {
        (Some(c), Some(k)) => {
            let cpem = read_pem(c)?;
            let certs = rustls_pemfile::certs(&mut cpem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", c.display()))?;
            let kpem = read_pem(k)?;
            let key = rustls_pemfile::private_key(&mut kpem.as_slice())
                .map_err(|e| format!("{}: {e}", k.display()))?
                .ok_or_else(|| format!("{}: no private key found", k.display()))?;
            b.with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())
        }
        _ => Ok(b.with_no_client_auth()),
    }
}

/// Accepts any certificate (`insecure_skip_verify`), still checking handshake signatures.
#[derive(Debug)]
struct NoVerify;

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Syslog severity for a level.
pub fn severity(l: Level) -> u8 {
    match l {
        Level::Critical => 2,
        Level::High => 3,
        Level::Medium => 4,
        Level::Low => 5,
        Level::Informational => 6,
    }
}

/// CEF severity (0-10) for a level.
pub fn cef_severity(l: Level) -> u8 {
    match l {
        Level::Critical => 10,
        Level::High => 8,
        Level::Medium => 5,
        Level::Low => 3,
        Level::Informational => 1,
    }
}

/// RFC 5424 header fields: printable ASCII without spaces, truncated to `max`.
fn header_field(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// SD-PARAM value escaping (RFC 5424 §6.3.3): `"`, `\` and `]`.
fn sd_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// One RFC 5424 message (without framing). The SD-ID uses 32473, the enterprise number
/// RFC 5612 reserves for documentation, as no number is registered for audithawk.
pub fn rfc5424(a: &Alert, cfg: &SyslogConfig) -> String {
    let pri = u16::from(cfg.facility) * 8 + u16::from(severity(a.rule.level));
    let ts = a
        .time()
        .unwrap_or_else(chrono::Utc::now)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let host = cfg
        .hostname
        .as_deref()
        .or(a.orchestrator.cluster.as_ref().map(|c| c.name.as_str()))
        .unwrap_or("audithawk");
    let msg = match cfg.format {
        SyslogFormat::Json => a.to_json(),
        SyslogFormat::Cef => cef(a),
    };
    format!(
        "<{pri}>1 {ts} {} {} - {} [audithawk@32473 id=\"{}\" rule=\"{}\" level=\"{}\"] {msg}",
        header_field(host, 255),
        header_field(&cfg.app_name, 48),
        if cfg.format == SyslogFormat::Cef {
            "CEF"
        } else {
            "alert"
        },
        sd_escape(&a.event.id),
        sd_escape(&a.rule.id),
        a.rule.level,
    )
}

fn cef_header(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

fn cef_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

/// ArcSight CEF:0 for an alert.
pub fn cef(a: &Alert) -> String {
    let mut ext: Vec<(&str, String)> = vec![
        (
            "rt",
            a.time()
                .map(|t| t.timestamp_millis().to_string())
                .unwrap_or_default(),
        ),
        ("externalId", a.event.id.clone()),
        ("act", a.event.action.clone()),
        ("outcome", a.event.outcome.clone()),
        ("suser", a.user.name.clone()),
        ("request", a.kubernetes.audit.request_uri.clone()),
        ("msg", a.message.clone()),
        ("cat", a.event.category.join(",")),
    ];
    if let Some(s) = &a.source {
        ext.push(("src", s.ip.clone()));
    }
    if let Some(ua) = &a.user_agent {
        ext.push(("requestClientApplication", ua.original.clone()));
    }
    if let Some(c) = &a.orchestrator.cluster {
        ext.push(("cs1Label", "cluster".into()));
        ext.push(("cs1", c.name.clone()));
    }
    if let Some(ns) = &a.orchestrator.namespace {
        ext.push(("cs2Label", "namespace".into()));
        ext.push(("cs2", ns.clone()));
    }
    let ext = ext
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", cef_value(&v)))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "CEF:0|audithawk|audithawk|{}|{}|{}|{}|{ext}",
        env!("CARGO_PKG_VERSION"),
        cef_header(&a.rule.id),
        cef_header(&a.rule.name),
        cef_severity(a.rule.level),
    )
}

impl Sink for SyslogSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [SharedAlert]) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let data = self.encode(batch);
            let mut conn = self.conn.lock().await;
            if conn.is_none() {
                match self.connect().await {
                    Ok(c) => *conn = Some(c),
                    Err(e) => {
                        return SendOutcome::Retry {
                            reason: format!("connect {}: {e}", self.cfg.address),
                            after: None,
                        }
                    }
                }
            }
            let Some(c) = conn.as_mut() else {
                return SendOutcome::Retry {
                    reason: "no connection".into(),
                    after: None,
                };
            };
            let res = async {
                c.write_all(&data).await?;
                c.flush().await
            };
            match tokio::time::timeout(Duration::from_secs(30), res).await {
                Ok(Ok(())) => SendOutcome::Done,
                Ok(Err(e)) => {
                    *conn = None;
                    SendOutcome::Retry {
                        reason: format!("write {}: {e}", self.cfg.address),
                        after: None,
                    }
                }
                Err(_) => {
                    *conn = None;
                    SendOutcome::Retry {
                        reason: format!("write {}: timed out", self.cfg.address),
                        after: None,
                    }
                }
            }
        })
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), super::HealthError>> {
        Box::pin(async move {
            // Connect (and handshake) once at start; keep the connection for the first batch.
            match self.connect().await {
                Ok(c) => {
                    *self.conn.lock().await = Some(c);
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    Err(super::HealthError::Rejected(format!(
                        "TLS handshake with {} failed: {e}; check `tls` and `server_name`",
                        self.cfg.address
                    )))
                }
                Err(e) => Err(super::HealthError::Unreachable(format!(
                    "connect {}: {e}",
                    self.cfg.address
                ))),
            }
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if let Some(c) = self.conn.lock().await.as_mut() {
                c.shutdown().await.map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(sd_escape(r#"a"b\c]"#), r#"a\"b\\c\]"#);
        assert_eq!(cef_header("a|b"), "a\\|b");
        assert_eq!(cef_value("x=y\nz"), "x\\=y\\nz");
        assert_eq!(header_field("my host", 255), "myhost");
        assert_eq!(split_host_port("[::1]:514"), Some(("::1", 514)));
        assert_eq!(split_host_port("nohost"), None);
    }
}
