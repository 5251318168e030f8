//! Alert delivery: the [`Sink`] trait, the shared [`driver`], and the sinks.
//!
//! A sink encodes and sends one batch and classifies the outcome ([`SendOutcome`]); it
//! never sleeps or retries itself. The driver owns everything the sinks share: the bounded
//! queue (back-pressure reaches the webhook as 429), the crash-safe [`buffer`] on disk,
//! batching by events/bytes/time, retries with capped exponential backoff and full jitter,
//! the per-sink concurrency limit, the [`dead_letter`] file, routing by level and rule, and
//! shutdown with a deadline. Every sink gains them at once.
//!
//! Sinks are generic over the [`Record`] they carry: alerts ([`SharedAlert`]) or, for
//! [`raw`] forwarding, redacted audit events ([`AuditRecord`]).
//!
//! # Layout
//! - [`config`]: `SinkConfig` (one closed enum, validated) and [`config::build_router`].
//! - [`driver`]: queue, buffer, batching, retry, concurrency, routing, shutdown.
//! - [`buffer`], [`dead_letter`]: what survives crashes and permanent rejections.
//! - [`http`]: the shared HTTP client (TLS options) and response classification.
//! - [`splunk_hec`], [`elasticsearch`], [`webhook`], [`syslog`], [`otlp`], [`kafka`],
//!   [`file`], [`stdout`]: the sinks.
//! - [`raw`]: raw audit-event forwarding.

pub mod buffer;
pub mod config;
pub mod dead_letter;
pub mod driver;
pub mod elasticsearch;
pub mod file;
pub mod http;
pub mod kafka;
pub mod otlp;
pub mod raw;
pub mod splunk_hec;
pub mod stdout;
pub mod syslog;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::model::SharedAlert;

pub use driver::{BatchPolicy, DriverOptions, RetryPolicy, Route, Router, SinkDriver};

/// A boxed future, so that sinks are object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of one attempt to deliver one batch.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// Everything was delivered.
    Done,
    /// Some items failed: `retry` may succeed later (indices into the batch); `rejected`
    /// never will (index, reason) and go to the dead-letter path.
    Partial {
        /// Indices to send again.
        retry: Vec<usize>,
        /// Indices rejected for good, with the reason.
        rejected: Vec<(usize, String)>,
    },
    /// Nothing was delivered; try the whole batch again (network error, 429, 5xx).
    Retry {
        /// Why.
        reason: String,
        /// Server-requested delay (Retry-After), if any.
        after: Option<Duration>,
    },
    /// Nothing was delivered and retrying cannot help (bad token, bad index).
    Fatal {
        /// Why.
        reason: String,
    },
}

/// Something a sink can carry: it has a stable id, a time, a JSON form, and survives a
/// round trip through the disk buffer.
pub trait Record: Clone + Send + Sync + 'static {
    /// Stable id: a re-sent record has the same id (Elasticsearch `_id`).
    fn id(&self) -> &str;
    /// Event time (Splunk `time`, dated index names); `None` when unknown.
    fn time(&self) -> Option<DateTime<Utc>>;
    /// Appends the record's JSON document to `out`.
    fn write_json(&self, out: &mut Vec<u8>);
    /// Approximate encoded size in bytes, for batching by bytes.
    fn size_hint(&self) -> usize;
    /// The bytes stored in the disk buffer.
    fn to_bytes(&self) -> Vec<u8>;
    /// Reads back what [`Record::to_bytes`] wrote.
    fn from_bytes(b: &[u8]) -> Result<Self, String>;
    /// The host (cluster) the record is about, if known (Splunk `host`).
    fn host(&self) -> Option<&str>;
    /// Low-cardinality labels (Splunk indexed `fields`, syslog structured data).
    fn labels(&self) -> Vec<(&'static str, &str)>;
    /// The document indexed in Elasticsearch (must carry `@timestamp` for data streams).
    fn write_es_doc(&self, out: &mut Vec<u8>) {
        self.write_json(out);
    }
}

impl Record for SharedAlert {
    fn id(&self) -> &str {
        &self.event.id
    }
    fn time(&self) -> Option<DateTime<Utc>> {
        crate::model::Alert::time(self)
    }
    fn write_json(&self, out: &mut Vec<u8>) {
        // Serialising plain structs of strings into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &**self);
    }
    fn size_hint(&self) -> usize {
        // Alerts are ~1 KiB of JSON; the variable parts dominate the rest.
        self.message.len()
            + self.rule.description.len()
            + self.kubernetes.audit.request_uri.len()
            + 700
    }
    fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1024);
        self.write_json(&mut v);
        v
    }
    fn from_bytes(b: &[u8]) -> Result<Self, String> {
        serde_json::from_slice::<crate::model::Alert>(b)
            .map(Arc::new)
            .map_err(|e| format!("buffered alert does not decode: {e}"))
    }
    fn host(&self) -> Option<&str> {
        self.orchestrator.cluster.as_ref().map(|c| c.name.as_str())
    }
    fn labels(&self) -> Vec<(&'static str, &str)> {
        let mut v = vec![
            ("rule_id", self.rule.id.as_str()),
            ("level", self.rule.level.as_str()),
        ];
        if let Some(c) = &self.orchestrator.cluster {
            v.push(("cluster", c.name.as_str()));
        }
        v
    }
}

/// A redacted audit event on its way to a SIEM (raw forwarding).
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditEventRecord {
    /// Stable id: `auditID` and stage, so that a re-send does not duplicate.
    pub id: String,
    /// Event time (`stageTimestamp`).
    pub time: Option<DateTime<Utc>>,
    /// The cluster, if known.
    pub cluster: Option<String>,
    /// The redacted event.
    pub event: Box<RawValue>,
}

/// A shared [`AuditEventRecord`].
pub type AuditRecord = Arc<AuditEventRecord>;

impl Record for AuditRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn time(&self) -> Option<DateTime<Utc>> {
        self.time
    }
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.event.get().as_bytes());
    }
    fn size_hint(&self) -> usize {
        self.event.get().len() + 64
    }
    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&**self).unwrap_or_default()
    }
    fn from_bytes(b: &[u8]) -> Result<Self, String> {
        serde_json::from_slice::<AuditEventRecord>(b)
            .map(Arc::new)
            .map_err(|e| format!("buffered audit event does not decode: {e}"))
    }
    fn host(&self) -> Option<&str> {
        self.cluster.as_deref()
    }
    fn labels(&self) -> Vec<(&'static str, &str)> {
        self.cluster
            .as_deref()
            .map(|c| vec![("cluster", c)])
            .unwrap_or_default()
    }
    fn write_es_doc(&self, out: &mut Vec<u8>) {
        // Data streams need `@timestamp`; the event itself sits under `kubernetes.audit`
        // as in Elastic's own Kubernetes audit integration.
        let ts = self
            .time
            .unwrap_or_else(Utc::now)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        out.extend_from_slice(b"{\"@timestamp\":\"");
        out.extend_from_slice(ts.as_bytes());
        out.extend_from_slice(
            b"\",\"event\":{\"kind\":\"event\",\"dataset\":\"audithawk.audit\",\"id\":",
        );
        let _ = serde_json::to_writer(&mut *out, &self.id);
        out.extend_from_slice(b"}");
        if let Some(c) = &self.cluster {
            out.extend_from_slice(
                b",\"orchestrator\":{\"type\":\"kubernetes\",\"cluster\":{\"name\":",
            );
            let _ = serde_json::to_writer(&mut *out, c);
            out.extend_from_slice(b"}}");
        }
        out.extend_from_slice(b",\"kubernetes\":{\"audit\":");
        out.extend_from_slice(self.event.get().as_bytes());
        out.extend_from_slice(b"}}");
    }
}

/// Something that delivers records (alerts unless said otherwise).
pub trait Sink<T = SharedAlert>: Send + Sync + 'static {
    /// A short name for logs and metrics (`stdout`, `file`, `splunk`...).
    fn name(&self) -> &str;

    /// One attempt to deliver `batch`.
    fn send<'a>(&'a self, batch: &'a [T]) -> BoxFuture<'a, SendOutcome>;

    /// Flushes buffered output (called at shutdown).
    fn flush(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// Checks at start-up that the destination is reachable and accepts our credentials.
    /// An error here is a configuration problem shown to the operator.
    fn healthcheck(&self) -> BoxFuture<'_, Result<(), HealthError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Why a start-up health check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// Not reachable now (network, 5xx, busy): start anyway, the buffer holds alerts.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The destination answered and refused us (bad token, bad index, TLS trust): a
    /// configuration error that retrying cannot fix.
    #[error("{0}")]
    Rejected(String),
}
