//! A generic HTTP webhook sink: a JSON array or NDJSON per batch, custom headers. For
//! Slack-like relays, pagers and custom receivers.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::config::{DeliveryConfig, RouteConfig};
use super::http::{self, Secret, TlsOptions};
use super::{BoxFuture, Record, SendOutcome, Sink};

/// Body format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `[alert, alert, ...]` with `Content-Type: application/json` (default).
    #[default]
    JsonArray,
    /// One alert per line with `Content-Type: application/x-ndjson`.
    Ndjson,
}

fn default_timeout() -> u64 {
    30
}

/// `type: webhook`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Sink name (default `webhook`).
    #[serde(default)]
    pub name: Option<String>,
    /// The URL to POST to.
    pub url: String,
    /// Body format.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Extra headers (values are secrets: they often carry tokens).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Gzip request bodies (default false: many receivers do not accept it).
    #[serde(default)]
    pub compression: bool,
    /// Request timeout in seconds (default 30).
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    /// TLS options.
    #[serde(default)]
    pub tls: TlsOptions,
    /// Which alerts go here.
    #[serde(default)]
    pub route: RouteConfig,
    /// Batching, buffering and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl WebhookConfig {
    /// The sink name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("webhook")
    }

    /// Problems, naming the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut p: Vec<String> = crate::sinks::http::check_url(prefix, "url", &self.url)
            .into_iter()
            .collect();
        for (k, v) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                p.push(format!(
                    "`{prefix}.headers`: {k:?} is not a valid header name"
                ));
            }
            if reqwest::header::HeaderValue::from_str(v.expose()).is_err() {
                p.push(format!(
                    "`{prefix}.headers.{k}` is not a valid header value"
                ));
            }
        }
        p.extend(self.tls.validate(prefix));
        p
    }
}

/// The webhook sink.
#[derive(Debug)]
pub struct WebhookSink {
    name: String,
    client: reqwest::Client,
    url: String,
    format: WebhookFormat,
    headers: reqwest::header::HeaderMap,
    compression: bool,
}

impl WebhookSink {
    /// Builds the sink (no network yet). Invalid headers were reported by `validate`.
    pub fn new(cfg: &WebhookConfig) -> Result<WebhookSink, http::ClientError> {
        let client = http::client(
            cfg.name(),
            &cfg.tls,
            Duration::from_secs(cfg.request_timeout_secs.max(1)),
        )?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &cfg.headers {
            let (Ok(k), Ok(mut v)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(v.expose()),
            ) else {
                return Err(http::ClientError::Build(format!("invalid header {k:?}")));
            };
            v.set_sensitive(true);
            headers.insert(k, v);
        }
        Ok(WebhookSink {
            name: cfg.name().to_string(),
            client,
            url: cfg.url.clone(),
            format: cfg.format,
            headers,
            compression: cfg.compression,
        })
    }
}

/// The body of a batch in `format`.
pub fn encode<T: Record>(batch: &[T], format: WebhookFormat) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.iter().map(|r| r.size_hint() + 2).sum());
    match format {
        WebhookFormat::JsonArray => {
            out.push(b'[');
            for (i, r) in batch.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                r.write_json(&mut out);
            }
            out.push(b']');
        }
        WebhookFormat::Ndjson => {
            for r in batch {
                r.write_json(&mut out);
                out.push(b'\n');
            }
        }
    }
    out
}

impl<T: Record> Sink<T> for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [T]) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let body = encode(batch, self.format);
            let ct = match self.format {
                WebhookFormat::JsonArray => "application/json",
                WebhookFormat::Ndjson => "application/x-ndjson",
            };
            let mut rb = self
                .client
                .post(&self.url)
                .headers(self.headers.clone())
                .header(reqwest::header::CONTENT_TYPE, ct);
            let body = if self.compression {
                rb = rb.header(reqwest::header::CONTENT_ENCODING, "gzip");
                http::gzip(&body)
            } else {
                body
            };
            match rb.body(body).send().await {
                Ok(r) => {
                    let status = r.status();
                    let headers = r.headers().clone();
                    let body = r.bytes().await.unwrap_or_default();
                    http::classify(status, &headers, &body)
                }
                Err(e) => http::network_error(&e),
            }
        })
    }
}
