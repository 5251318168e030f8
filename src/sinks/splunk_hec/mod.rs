//! The Splunk HTTP Event Collector sink.
//!
//! `POST {endpoint}/services/collector/event` with `Authorization: Splunk <token>`, a batch
//! of concatenated JSON envelopes (gzip by default). HEC error codes are read by meaning:
//! a bad token or index is a configuration error (fatal, shown clearly, the batch goes to
//! the dead-letter file), busy (9) and 5xx are retried, a bad event is rejected alone and
//! the events after it are sent again (Splunk indexes those before the bad one). With
//! indexer acknowledgement, a send only counts once the ack poll says the batch is indexed;
//! a batch not acknowledged within `ack_timeout_secs` is sent again.

pub mod encoder;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::config::{DeliveryConfig, RouteConfig};
use super::http::{self, Secret, TlsOptions};
use super::{BoxFuture, HealthError, Record, SendOutcome, Sink};
use encoder::{HecMeaning, HecMeta, HecReply};

fn default_sourcetype() -> String {
    "audithawk:alert".into()
}
fn default_source() -> String {
    "audithawk".into()
}
fn yes() -> bool {
    true
}
fn default_ack_timeout() -> u64 {
    60
}
fn default_ack_poll() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    30
}

/// `type: splunk_hec`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplunkHecConfig {
    /// Sink name for logs and metrics (default `splunk_hec`).
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL, e.g. `https://splunk.example.com:8088`.
    pub endpoint: String,
    /// HEC token.
    pub token: Secret,
    /// Target index (default: the token's default index).
    #[serde(default)]
    pub index: Option<String>,
    /// Sourcetype (default `audithawk:alert`; raw forwarding uses `kube:apiserver:audit`).
    #[serde(default = "default_sourcetype")]
    pub sourcetype: String,
    /// Source (default `audithawk`).
    #[serde(default = "default_source")]
    pub source: String,
    /// Host (default: the alert's cluster name, else `audithawk`).
    #[serde(default)]
    pub host: Option<String>,
    /// Static indexed fields added to every event.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Gzip request bodies (default true).
    #[serde(default = "yes")]
    pub compression: bool,
    /// Use indexer acknowledgement (Splunk Enterprise; the token must have it enabled).
    #[serde(default)]
    pub indexer_ack: bool,
    /// Re-send a batch not acknowledged within this many seconds (default 60).
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_secs: u64,
    /// Ack poll interval in milliseconds (default 1000).
    #[serde(default = "default_ack_poll")]
    pub ack_poll_ms: u64,
    /// Check `/services/collector/health` and the token at start (default true).
    #[serde(default = "yes")]
    pub healthcheck: bool,
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

impl SplunkHecConfig {
    /// The sink name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("splunk_hec")
    }

    /// Problems, naming the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut p: Vec<String> = crate::sinks::http::check_url(prefix, "endpoint", &self.endpoint)
            .into_iter()
            .collect();
        if self.token.is_empty() {
            p.push(format!("`{prefix}.token` must not be empty"));
        }
        if self.sourcetype.is_empty() {
            p.push(format!("`{prefix}.sourcetype` must not be empty"));
        }
        if self.indexer_ack && self.ack_timeout_secs == 0 {
            p.push(format!(
                "`{prefix}.ack_timeout_secs` must be greater than zero"
            ));
        }
        p.extend(self.tls.validate(prefix));
        p
    }
}

/// The Splunk HEC sink.
#[derive(Debug)]
pub struct SplunkHecSink {
    name: String,
    client: reqwest::Client,
    base: String,
    token: Secret,
    meta: HecMeta,
    compression: bool,
    /// Channel GUID when indexer acknowledgement is on.
    channel: Option<String>,
    ack_timeout: Duration,
    ack_poll: Duration,
    healthcheck: bool,
}

impl SplunkHecSink {
    /// Builds the sink (no network yet).
    pub fn new(cfg: &SplunkHecConfig) -> Result<SplunkHecSink, http::ClientError> {
        let client = http::client(
            cfg.name(),
            &cfg.tls,
            Duration::from_secs(cfg.request_timeout_secs.max(1)),
        )?;
        Ok(SplunkHecSink {
            name: cfg.name().to_string(),
            client,
            base: cfg.endpoint.trim_end_matches('/').to_string(),
            token: cfg.token.clone(),
            meta: HecMeta {
                host: cfg.host.clone(),
                source: cfg.source.clone(),
                sourcetype: cfg.sourcetype.clone(),
                index: cfg.index.clone(),
                fields: cfg.fields.clone(),
                label_fields: true,
            },
            compression: cfg.compression,
            channel: cfg.indexer_ack.then(|| uuid::Uuid::new_v4().to_string()),
            ack_timeout: Duration::from_secs(cfg.ack_timeout_secs),
            ack_poll: Duration::from_millis(cfg.ack_poll_ms.max(10)),
            healthcheck: cfg.healthcheck,
        })
    }

    /// The same sink with another sourcetype (raw forwarding: `kube:apiserver:audit`).
    pub fn with_sourcetype(mut self, sourcetype: &str) -> SplunkHecSink {
        self.meta.sourcetype = sourcetype.to_string();
        self.meta.label_fields = false;
        self
    }

    fn auth(&self) -> String {
        format!("Splunk {}", self.token.expose())
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, self.auth());
        if let Some(ch) = &self.channel {
            rb = rb.header("X-Splunk-Request-Channel", ch);
        }
        rb
    }

    async fn send_batch<T: Record>(&self, batch: &[T]) -> SendOutcome {
        let body = encoder::encode(batch, &self.meta);
        let mut rb = self
            .post("/services/collector/event")
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        let body = if self.compression {
            rb = rb.header(reqwest::header::CONTENT_ENCODING, "gzip");
            http::gzip(&body)
        } else {
            body
        };
        let resp = match rb.body(body).send().await {
            Ok(r) => r,
            Err(e) => return http::network_error(&e),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return http::network_error(&e),
        };
        let reply: HecReply = serde_json::from_slice(&bytes).unwrap_or_default();
        let outcome = classify(status, &headers, &bytes, &reply, batch.len());
        match (outcome, &self.channel, reply.ack_id) {
            (SendOutcome::Done, Some(ch), Some(ack)) => self.wait_ack(ch, ack).await,
            (SendOutcome::Done, Some(_), None) => SendOutcome::Fatal {
                reason: "indexer_ack is on but Splunk returned no ackId: enable indexer acknowledgement on the token or turn `indexer_ack` off".into(),
            },
            (o, _, _) => o,
        }
    }

    /// Polls `/services/collector/ack` until `ack` is true or the timeout passes.
    async fn wait_ack(&self, channel: &str, ack: u64) -> SendOutcome {
        let deadline = tokio::time::Instant::now() + self.ack_timeout;
        loop {
            tokio::time::sleep(self.ack_poll).await;
            let res = self
                .post(&format!("/services/collector/ack?channel={channel}"))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(format!("{{\"acks\":[{ack}]}}"))
                .send()
                .await;
            if let Ok(r) = res {
                if r.status().is_success() {
                    if let Ok(v) = r.json::<serde_json::Value>().await {
                        if v["acks"][ack.to_string()].as_bool() == Some(true) {
                            return SendOutcome::Done;
                        }
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                // Not known to be indexed: send again. A duplicate is possible if the ack
                // was merely late; the alert's `event.id` lets searches de-duplicate.
                return SendOutcome::Retry {
                    reason: format!("ack {ack} not confirmed within {:?}", self.ack_timeout),
                    after: Some(Duration::ZERO),
                };
            }
        }
    }

    async fn check(&self) -> Result<(), HealthError> {
        let r = self
            .client
            .get(format!("{}/services/collector/health", self.base))
            .send()
            .await
            .map_err(|e| HealthError::Unreachable(http::error_chain(&e)))?;
        let status = r.status();
        let body: HecReply = r.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(HealthError::Unreachable(format!(
                "HEC health: HTTP {status}: {} (code {:?})",
                body.text, body.code
            )));
        }
        // An empty POST checks the token without indexing anything: a valid token gets
        // "No data" (code 5), a bad one codes 1-4.
        let r = self
            .post("/services/collector/event")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("")
            .send()
            .await
            .map_err(|e| HealthError::Unreachable(http::error_chain(&e)))?;
        let status = r.status();
        let body: HecReply = r.json().await.unwrap_or_default();
        match body.code.map(encoder::meaning) {
            Some(HecMeaning::BadToken) => Err(HealthError::Rejected(format!(
                "Splunk HEC rejected the token: {} (code {}); check `token`",
                body.text,
                body.code.unwrap_or(-1)
            ))),
            Some(HecMeaning::AckConfig) => Err(HealthError::Rejected(format!(
                "Splunk HEC channel/ack settings do not match the token: {} (code {}); check `indexer_ack`",
                body.text,
                body.code.unwrap_or(-1)
            ))),
            _ if status.is_server_error() => Err(HealthError::Unreachable(format!("HTTP {status}: {}", body.text))),
            _ => Ok(()),
        }
    }
}

/// Reads a HEC response into an outcome for a batch of `n` events.
pub fn classify(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    raw: &[u8],
    reply: &HecReply,
    n: usize,
) -> SendOutcome {
    if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE {
        // Re-sending the same batch cannot succeed: the limit is a server setting.
        return SendOutcome::Fatal {
            reason: format!(
                "HTTP 413: request larger than Splunk's max_content_length (1 MB on Splunk Cloud); lower `delivery.batch_max_bytes` (batch of {n})"
            ),
        };
    }
    let Some(code) = reply.code else {
        // No HEC body (a proxy, a load balancer): read the status alone.
        return http::classify(status, headers, raw);
    };
    let why = format!("HEC code {code}: {} (HTTP {})", reply.text, status.as_u16());
    match encoder::meaning(code) {
        HecMeaning::Ok if status.is_success() => SendOutcome::Done,
        HecMeaning::Busy => SendOutcome::Retry {
            reason: why,
            after: http::retry_after(headers),
        },
        HecMeaning::BadToken => SendOutcome::Fatal {
            reason: format!("{why}; the HEC token is wrong or disabled: fix `token`"),
        },
        HecMeaning::BadIndex => SendOutcome::Fatal {
            reason: format!(
                "{why}; the index does not exist or the token may not write to it: fix `index`"
            ),
        },
        HecMeaning::AckConfig => SendOutcome::Fatal {
            reason: format!("{why}; fix `indexer_ack` or the token's acknowledgement setting"),
        },
        HecMeaning::BadEvent => match reply.invalid_event_number {
            // Events before the bad one were indexed; the bad one never will be; those
            // after it were not looked at.
            Some(i) if i < n => SendOutcome::Partial {
                retry: (i + 1..n).collect(),
                rejected: vec![(i, why)],
            },
            _ => SendOutcome::Fatal { reason: why },
        },
        _ if http::retriable(status) => SendOutcome::Retry {
            reason: why,
            after: http::retry_after(headers),
        },
        _ => SendOutcome::Fatal { reason: why },
    }
}

impl<T: Record> Sink<T> for SplunkHecSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [T]) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_batch(batch))
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), HealthError>> {
        Box::pin(async move {
            if !self.healthcheck {
                return Ok(());
            }
            self.check().await
        })
    }
}
