//! OpenTelemetry logs over OTLP/HTTP (`POST {endpoint}/v1/logs`), JSON encoding.
//!
//! Why not the `opentelemetry-otlp` exporter: its batch processor keeps its own queue,
//! drops on failure and does not say which records failed, which would bypass the
//! driver's disk buffer, retries and dead letter. OTLP/HTTP with the JSON encoding (part
//! of the OTLP specification, accepted by the OpenTelemetry Collector) lets this sink make
//! one classified attempt per batch like every other sink, with no new dependency.
//! Each alert is one LogRecord: `timeUnixNano` = event time, severity from the level, the
//! alert as a structured `body`, and rule id/level/cluster as attributes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::config::{DeliveryConfig, RouteConfig};
use super::http::{self, Secret, TlsOptions};
use super::{BoxFuture, Record, SendOutcome, Sink};
use crate::model::{Level, SharedAlert};

fn default_service() -> String {
    "audithawk".into()
}
fn default_timeout() -> u64 {
    30
}

/// `type: otlp`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Sink name (default `otlp`).
    #[serde(default)]
    pub name: Option<String>,
    /// Collector base URL, e.g. `http://otel-collector:4318` (`/v1/logs` is appended).
    pub endpoint: String,
    /// `service.name` resource attribute (default `audithawk`).
    #[serde(default = "default_service")]
    pub service_name: String,
    /// Extra request headers (e.g. an auth token).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
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

impl OtlpConfig {
    /// The sink name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("otlp")
    }

    /// Problems, naming the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut p: Vec<String> = crate::sinks::http::check_url(prefix, "endpoint", &self.endpoint)
            .into_iter()
            .collect();
        for (k, v) in &self.headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(v.expose()).is_err()
            {
                p.push(format!("`{prefix}.headers.{k}` is not a valid header"));
            }
        }
        p.extend(self.tls.validate(prefix));
        p
    }
}

/// The OTLP logs sink.
#[derive(Debug)]
pub struct OtlpSink {
    name: String,
    client: reqwest::Client,
    url: String,
    service: String,
    headers: reqwest::header::HeaderMap,
}

impl OtlpSink {
    /// Builds the sink (no network yet).
    pub fn new(cfg: &OtlpConfig) -> Result<OtlpSink, http::ClientError> {
        let client = http::client(
            cfg.name(),
            &cfg.tls,
            Duration::from_secs(cfg.request_timeout_secs.max(1)),
        )?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &cfg.headers {
            let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_str(v.expose()),
            ) else {
                return Err(http::ClientError::Build(format!("invalid header {k:?}")));
            };
            headers.insert(k, v);
        }
        Ok(OtlpSink {
            name: cfg.name().to_string(),
            client,
            url: format!("{}/v1/logs", cfg.endpoint.trim_end_matches('/')),
            service: cfg.service_name.clone(),
            headers,
        })
    }
}

/// OTLP severity number for a level (INFO=9, INFO2=10, WARN=13, ERROR=17, FATAL=21).
pub fn severity_number(l: Level) -> u8 {
    match l {
        Level::Informational => 9,
        Level::Low => 10,
        Level::Medium => 13,
        Level::High => 17,
        Level::Critical => 21,
    }
}

/// A JSON value as an OTLP `AnyValue`.
pub fn any_value(v: &Value) -> Value {
    match v {
        Value::Null => json!({}),
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Number(n) => match n.as_i64() {
            // int64 is a string in the protobuf JSON mapping.
            Some(i) => json!({"intValue": i.to_string()}),
            None => json!({"doubleValue": n.as_f64()}),
        },
        Value::String(s) => json!({"stringValue": s}),
        Value::Array(a) => {
            json!({"arrayValue": {"values": a.iter().map(any_value).collect::<Vec<_>>()}})
        }
        Value::Object(o) => {
            json!({"kvlistValue": {"values": o.iter().map(|(k, v)| json!({"key": k, "value": any_value(v)})).collect::<Vec<_>>()}})
        }
    }
}

/// The ExportLogsServiceRequest of a batch.
pub fn encode(batch: &[SharedAlert], service: &str) -> Value {
    let now = chrono::Utc::now()
        .timestamp_nanos_opt()
        .unwrap_or(0)
        .to_string();
    let records: Vec<Value> = batch
        .iter()
        .map(|a| {
            let t = a
                .time()
                .and_then(|t| t.timestamp_nanos_opt())
                .map(|n| n.to_string())
                .unwrap_or_else(|| now.clone());
            let body = serde_json::to_value(&**a).unwrap_or(Value::Null);
            let attrs: Vec<Value> = a
                .labels()
                .into_iter()
                .map(|(k, v)| json!({"key": format!("audithawk.{k}"), "value": {"stringValue": v}}))
                .chain([json!({"key": "event.id", "value": {"stringValue": a.event.id}})])
                .collect();
            json!({
                "timeUnixNano": t,
                "observedTimeUnixNano": now,
                "severityNumber": severity_number(a.rule.level),
                "severityText": a.rule.level.as_str(),
                "body": any_value(&body),
                "attributes": attrs,
            })
        })
        .collect();
    json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeLogs": [{"scope": {"name": "audithawk", "version": env!("CARGO_PKG_VERSION")}, "logRecords": records}]
    }]})
}

impl Sink for OtlpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [SharedAlert]) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let body = encode(batch, &self.service);
            let res = self
                .client
                .post(&self.url)
                .headers(self.headers.clone())
                .json(&body)
                .send()
                .await;
            let r = match res {
                Ok(r) => r,
                Err(e) => return http::network_error(&e),
            };
            let status = r.status();
            let headers = r.headers().clone();
            let bytes = r.bytes().await.unwrap_or_default();
            if status.is_success() {
                // Partial success must not be retried (OTLP spec); say what was lost.
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    let rejected = &v["partialSuccess"]["rejectedLogRecords"];
                    let n = rejected
                        .as_i64()
                        .or_else(|| rejected.as_str().and_then(|s| s.parse().ok()))
                        .unwrap_or(0);
                    if n > 0 {
                        tracing::warn!(sink = %self.name, rejected = n, message = %v["partialSuccess"]["errorMessage"], "Collector rejected some log records.");
                    }
                }
                return SendOutcome::Done;
            }
            http::classify(status, &headers, &bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_value_mapping() {
        let v = any_value(&json!({"a": [1, "x", true, 1.5]}));
        assert_eq!(v["kvlistValue"]["values"][0]["key"], "a");
        let arr = &v["kvlistValue"]["values"][0]["value"]["arrayValue"]["values"];
        assert_eq!(arr[0]["intValue"], "1");
        assert_eq!(arr[1]["stringValue"], "x");
        assert_eq!(arr[2]["boolValue"], true);
        assert_eq!(arr[3]["doubleValue"], 1.5);
    }
}
