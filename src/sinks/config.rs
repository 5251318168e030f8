//! Sink configuration: one closed enum, validated with every problem listed, then built
//! into a [`Router`] (health checks and set-up run there).
//!
//! ```yaml
//! sinks:
//!   - type: splunk_hec
//!     endpoint: https://splunk.example.com:8088
//!     token: 6f1e0c2a-7b1d-4c55-9c0e-2f1f2a6b9d10
//!     index: k8s_alerts
//!     delivery: {buffer: {type: disk, max_bytes: 1073741824}}
//!   - type: webhook
//!     name: pager
//!     url: https://relay.example.com/hook
//!     route: {min_level: critical}
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::buffer::{DiskBufferConfig, Fsync, WhenFull};
use super::driver::{BatchPolicy, DriverOptions, RetryPolicy, Route};
use super::elasticsearch::{ElasticsearchConfig, ElasticsearchSink};
use super::file::{FileSink, FileSinkConfig};
use super::kafka::{KafkaSink, KafkaSinkConfig};
use super::otlp::{OtlpConfig, OtlpSink};
use super::splunk_hec::{SplunkHecConfig, SplunkHecSink};
use super::stdout::{Format, StdoutSink};
use super::syslog::{SyslogConfig, SyslogSink};
use super::webhook::{WebhookConfig, WebhookSink};
use super::{HealthError, Record, Router, Sink, SinkDriver};
use crate::model::{Level, SharedAlert};
use crate::telemetry::Metrics;

/// Which alerts a sink receives.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Minimum level (`informational` .. `critical`); default: all.
    #[serde(default)]
    pub min_level: Option<Level>,
    /// Only these rule ids; default: all.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Only rules with one of these tags (e.g. `attack.credential-access`); default: all.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl RouteConfig {
    /// The driver's route.
    pub fn to_route(&self) -> Route {
        Route {
            min_level: self.min_level,
            rules: self.rules.clone(),
            tags: self.tags.clone(),
        }
    }
}

/// Where queued records wait.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BufferConfig {
    /// An in-memory queue: fast, lost on a crash.
    Memory {
        /// Capacity in records (default 10000); when full, ingest waits.
        #[serde(default = "default_capacity")]
        max_events: usize,
    },
    /// A disk buffer under `<state_dir>/sinks/<name>/buffer`: survives `kill -9`.
    Disk {
        /// Cap on its size in bytes (default 256 MiB).
        #[serde(default = "default_disk_bytes")]
        max_bytes: u64,
        /// `block` (default: ingest waits, the webhook answers 429) or `drop_oldest`.
        #[serde(default)]
        when_full: WhenFull,
        /// `never` (default: survives a process crash) or `always` (also a power cut).
        #[serde(default)]
        fsync: Fsync,
    },
}

fn default_capacity() -> usize {
    10_000
}
fn default_disk_bytes() -> u64 {
    256 * 1024 * 1024
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig::Memory {
            max_events: default_capacity(),
        }
    }
}

/// Batching, buffering, retries and concurrency of one sink.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Most records per request (default 1000).
    pub batch_max_events: usize,
    /// Most bytes per request before compression (default 1 MiB, Splunk's recommendation).
    pub batch_max_bytes: usize,
    /// Longest wait before a partial batch is sent, in milliseconds (default 1000).
    pub batch_timeout_ms: u64,
    /// Requests in flight at once (default 2).
    pub concurrency: usize,
    /// First retry backoff in milliseconds (default 200); doubles up to `retry_max_secs`.
    pub retry_initial_ms: u64,
    /// Backoff cap in seconds (default 30); also caps a server's Retry-After.
    pub retry_max_secs: u64,
    /// The queue.
    pub buffer: BufferConfig,
    /// Dead-letter file (default `<state_dir>/sinks/<name>/dead-letter.jsonl`).
    pub dead_letter: Option<PathBuf>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            batch_max_events: 1000,
            batch_max_bytes: 1024 * 1024,
            batch_timeout_ms: 1000,
            concurrency: 2,
            retry_initial_ms: 200,
            retry_max_secs: 30,
            buffer: BufferConfig::default(),
            dead_letter: None,
        }
    }
}

impl DeliveryConfig {
    /// Problems, naming the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        let mut pos = |v: u64, k: &str| {
            if v == 0 {
                p.push(format!("`{prefix}.delivery.{k}` must be greater than zero"));
            }
        };
        pos(self.batch_max_events as u64, "batch_max_events");
        pos(self.batch_max_bytes as u64, "batch_max_bytes");
        pos(self.batch_timeout_ms, "batch_timeout_ms");
        pos(self.concurrency as u64, "concurrency");
        pos(self.retry_initial_ms, "retry_initial_ms");
        pos(self.retry_max_secs, "retry_max_secs");
        match &self.buffer {
            BufferConfig::Memory { max_events } => pos(*max_events as u64, "buffer.max_events"),
            BufferConfig::Disk { max_bytes, .. } => {
                if *max_bytes < 1024 * 1024 {
                    p.push(format!(
                        "`{prefix}.delivery.buffer.max_bytes` must be at least 1048576 (1 MiB)"
                    ));
                }
            }
        }
        p
    }

    /// Driver options for sink `name`, with its state under `state_dir/sinks/<name>`.
    pub fn options(&self, route: Route, name: &str, state_dir: &Path) -> DriverOptions {
        let dir = state_dir.join("sinks").join(sanitize(name));
        let disk = match &self.buffer {
            BufferConfig::Memory { .. } => None,
            BufferConfig::Disk {
                max_bytes,
                when_full,
                fsync,
            } => Some(DiskBufferConfig {
                dir: dir.join("buffer"),
                max_bytes: *max_bytes,
                segment_bytes: (*max_bytes / 16).clamp(64 * 1024, 32 * 1024 * 1024),
                when_full: *when_full,
                fsync: *fsync,
            }),
        };
        DriverOptions {
            route,
            batch: BatchPolicy {
                max_events: self.batch_max_events.max(1),
                max_bytes: self.batch_max_bytes.max(1),
                timeout: Duration::from_millis(self.batch_timeout_ms.max(1)),
            },
            retry: RetryPolicy {
                initial: Duration::from_millis(self.retry_initial_ms.max(1)),
                max: Duration::from_secs(self.retry_max_secs.max(1)),
            },
            capacity: match &self.buffer {
                BufferConfig::Memory { max_events } => *max_events,
                BufferConfig::Disk { .. } => 0,
            },
            concurrency: self.concurrency.max(1),
            disk,
            dead_letter: Some(
                self.dead_letter
                    .clone()
                    .unwrap_or_else(|| dir.join("dead-letter.jsonl")),
            ),
        }
    }
}

/// A file-system-safe form of a sink name.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `type: stdout`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: Format,
    /// Which alerts go here.
    #[serde(default)]
    pub route: RouteConfig,
}

/// `type: file`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Sink name (default `file`).
    #[serde(default)]
    pub name: Option<String>,
    /// Path of the JSON-lines file.
    pub path: PathBuf,
    /// Rotate at this size in bytes (default 100 MiB; 0: never).
    #[serde(default = "default_file_max")]
    pub max_bytes: u64,
    /// Rotated files to keep (default 5).
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Which alerts go here.
    #[serde(default)]
    pub route: RouteConfig,
    /// Batching, buffering and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_file_max() -> u64 {
    100 * 1024 * 1024
}
fn default_keep() -> usize {
    5
}

/// One configured sink.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Standard output.
    Stdout(StdoutConfig),
    /// A JSON-lines file, rotated by size.
    File(FileConfig),
    /// Splunk HTTP Event Collector.
    SplunkHec(SplunkHecConfig),
    /// Elasticsearch or OpenSearch `_bulk`.
    Elasticsearch(ElasticsearchConfig),
    /// A generic HTTP webhook.
    Webhook(WebhookConfig),
    /// Syslog (RFC 5424 over TCP or TLS; CEF optional).
    Syslog(SyslogConfig),
    /// OpenTelemetry logs (OTLP/HTTP).
    Otlp(OtlpConfig),
    /// A Kafka topic (for Splunk Connect for Kafka, Elastic's Kafka input).
    Kafka(KafkaSinkConfig),
}

impl SinkConfig {
    /// The sink's name (unique among sinks).
    pub fn name(&self) -> &str {
        match self {
            SinkConfig::Stdout(_) => "stdout",
            SinkConfig::File(c) => c.name.as_deref().unwrap_or("file"),
            SinkConfig::SplunkHec(c) => c.name(),
            SinkConfig::Elasticsearch(c) => c.name(),
            SinkConfig::Webhook(c) => c.name(),
            SinkConfig::Syslog(c) => c.name(),
            SinkConfig::Otlp(c) => c.name(),
            SinkConfig::Kafka(c) => c.name(),
        }
    }

    /// The route.
    pub fn route(&self) -> &RouteConfig {
        match self {
            SinkConfig::Stdout(c) => &c.route,
            SinkConfig::File(c) => &c.route,
            SinkConfig::SplunkHec(c) => &c.route,
            SinkConfig::Elasticsearch(c) => &c.route,
            SinkConfig::Webhook(c) => &c.route,
            SinkConfig::Syslog(c) => &c.route,
            SinkConfig::Otlp(c) => &c.route,
            SinkConfig::Kafka(c) => &c.route,
        }
    }

    /// The delivery settings (stdout: defaults with a small memory queue).
    pub fn delivery(&self) -> DeliveryConfig {
        match self {
            SinkConfig::Stdout(_) => DeliveryConfig {
                // A terminal or pipe gains nothing from waiting: 10 ms keeps alert latency low.
                batch_timeout_ms: 10,
                concurrency: 1,
                ..DeliveryConfig::default()
            },
            SinkConfig::File(c) => DeliveryConfig {
                concurrency: 1,
                ..c.delivery.clone()
            },
            SinkConfig::SplunkHec(c) => c.delivery.clone(),
            SinkConfig::Elasticsearch(c) => c.delivery.clone(),
            SinkConfig::Webhook(c) => c.delivery.clone(),
            // One connection: order matters on a stream.
            SinkConfig::Syslog(c) => DeliveryConfig {
                concurrency: 1,
                ..c.delivery.clone()
            },
            SinkConfig::Otlp(c) => c.delivery.clone(),
            SinkConfig::Kafka(c) => c.delivery.clone(),
        }
    }

    /// Every problem with this sink, naming the key under `prefix` (e.g. `sinks[0]`).
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut p = match self {
            SinkConfig::Stdout(_) => Vec::new(),
            SinkConfig::File(c) => {
                let mut p = c.delivery.validate(prefix);
                if c.path.as_os_str().is_empty() {
                    p.push(format!("`{prefix}.path` must not be empty"));
                }
                p
            }
            SinkConfig::SplunkHec(c) => c.validate(prefix),
            SinkConfig::Elasticsearch(c) => c.validate(prefix),
            SinkConfig::Webhook(c) => c.validate(prefix),
            SinkConfig::Syslog(c) => c.validate(prefix),
            SinkConfig::Otlp(c) => c.validate(prefix),
            SinkConfig::Kafka(c) => c.validate(prefix),
        };
        if !matches!(self, SinkConfig::Stdout(_) | SinkConfig::File(_)) {
            p.extend(self.delivery().validate(prefix));
        }
        p
    }
}

/// Every problem with a list of sinks (including duplicate names).
pub fn validate(cfgs: &[SinkConfig]) -> Vec<String> {
    let mut p = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, c) in cfgs.iter().enumerate() {
        let prefix = format!("sinks[{i}]");
        p.extend(c.validate(&prefix));
        if !seen.insert(c.name().to_string()) {
            p.push(format!(
                "`{prefix}.name`: {:?} is used by another sink; give each sink a unique `name`",
                c.name()
            ));
        }
    }
    p
}

/// Why the sinks could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SinkBuildError {
    /// The configuration is invalid.
    #[error("invalid sink configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
    /// A sink could not be built (TLS files, file sink path).
    #[error("sink {sink}: {reason}")]
    Build {
        /// The sink.
        sink: String,
        /// Why.
        reason: String,
    },
    /// A health check or set-up step was refused by the destination.
    #[error("sink {sink}: {reason}")]
    Health {
        /// The sink.
        sink: String,
        /// Why.
        reason: String,
    },
    /// The driver (disk buffer, dead-letter file) could not start.
    #[error("sink {sink}: {source}")]
    Driver {
        /// The sink.
        sink: String,
        /// The error.
        source: super::driver::DriverError,
    },
}

fn build_err(sink: &str) -> impl FnOnce(String) -> SinkBuildError + '_ {
    move |reason| SinkBuildError::Build {
        sink: sink.to_string(),
        reason,
    }
}

/// Runs a sink's health check: refusals are errors, unreachable destinations a warning
/// (the buffer holds alerts until the destination is back).
pub async fn check_health<T: Record>(sink: &dyn Sink<T>) -> Result<(), SinkBuildError> {
    match sink.healthcheck().await {
        Ok(()) => Ok(()),
        Err(HealthError::Unreachable(e)) => {
            tracing::warn!(sink = %sink.name(), error = %e, "Sink health check failed; starting anyway, alerts are queued until it is reachable.");
            Ok(())
        }
        Err(HealthError::Rejected(reason)) => Err(SinkBuildError::Health {
            sink: sink.name().to_string(),
            reason,
        }),
    }
}

/// Builds one alert sink (no network).
pub fn build_sink(cfg: &SinkConfig) -> Result<Arc<dyn Sink<SharedAlert>>, SinkBuildError> {
    let name = cfg.name();
    Ok(match cfg {
        SinkConfig::Stdout(c) => Arc::new(StdoutSink::new(c.format)),
        SinkConfig::File(c) => Arc::new(
            FileSink::open(FileSinkConfig {
                path: c.path.clone(),
                max_bytes: c.max_bytes,
                keep: c.keep,
            })
            .map_err(|e| build_err(name)(format!("{}: {e}", c.path.display())))?,
        ),
        SinkConfig::SplunkHec(c) => {
            Arc::new(SplunkHecSink::new(c).map_err(|e| build_err(name)(e.to_string()))?)
        }
        SinkConfig::Elasticsearch(c) => {
            Arc::new(ElasticsearchSink::new(c).map_err(|e| build_err(name)(e.to_string()))?)
        }
        SinkConfig::Webhook(c) => {
            Arc::new(WebhookSink::new(c).map_err(|e| build_err(name)(e.to_string()))?)
        }
        SinkConfig::Syslog(c) => Arc::new(SyslogSink::new(c).map_err(build_err(name))?),
        SinkConfig::Otlp(c) => {
            Arc::new(OtlpSink::new(c).map_err(|e| build_err(name)(e.to_string()))?)
        }
        SinkConfig::Kafka(c) => {
            Arc::new(KafkaSink::new(c).map_err(|e| build_err(name)(e.to_string()))?)
        }
    })
}

/// Validates `cfgs`, builds every sink, runs health checks and set-up (index templates),
/// opens disk buffers (replaying what a previous run left) and starts the drivers.
pub async fn build_router(
    cfgs: &[SinkConfig],
    metrics: Arc<Metrics>,
    state_dir: &Path,
) -> Result<Router, SinkBuildError> {
    let problems = validate(cfgs);
    if !problems.is_empty() {
        return Err(SinkBuildError::Invalid(problems));
    }
    describe_metrics(&metrics);
    let mut drivers = Vec::with_capacity(cfgs.len());
    for cfg in cfgs {
        let sink = build_sink(cfg)?;
        check_health(&*sink).await?;
        let opts = cfg
            .delivery()
            .options(cfg.route().to_route(), cfg.name(), state_dir);
        let d = SinkDriver::start(sink, opts, metrics.clone()).map_err(|source| {
            SinkBuildError::Driver {
                sink: cfg.name().to_string(),
                source,
            }
        })?;
        drivers.push(d);
    }
    Ok(Router::new(drivers))
}

/// Help text of the sink metric families.
pub fn describe_metrics(m: &Metrics) {
    m.describe("audithawk_sink_sent_total", "Records delivered, by sink.");
    m.describe(
        "audithawk_sink_failed_total",
        "Records that failed, by sink and reason (retriable, rejected, fatal, buffer).",
    );
    m.describe(
        "audithawk_sink_retried_total",
        "Records sent again after a failure, by sink.",
    );
    m.describe(
        "audithawk_sink_dead_lettered_total",
        "Records written to the dead-letter file, by sink.",
    );
    m.describe(
        "audithawk_sink_dropped_total",
        "Records dropped by the drop_oldest policy of a full disk buffer, by sink.",
    );
    m.describe(
        "audithawk_sink_buffered_events",
        "Records queued or buffered and not yet delivered, by sink.",
    );
    m.describe(
        "audithawk_sink_buffered_bytes",
        "Bytes of the disk buffer on disk, by sink.",
    );
    m.describe(
        "audithawk_sink_delivery_latency_seconds_bucket",
        "Records delivered within `le` seconds of entering the driver (cumulative), by sink.",
    );
    m.describe(
        "audithawk_sink_delivery_latency_milliseconds_sum",
        "Sum of delivery latencies in milliseconds, by sink.",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let y = r#"
- type: splunk_hec
  endpoint: https://splunk:8088
  token: abc
  route: {min_level: high}
  delivery: {batch_max_events: 10, buffer: {type: disk, max_bytes: 10485760, when_full: drop_oldest}}
- type: stdout
"#;
        let c: Vec<SinkConfig> = serde_yaml_ng::from_str(y).unwrap();
        assert!(validate(&c).is_empty(), "{:?}", validate(&c));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("abc"), "token leaked: {dbg}");
        let bad = "- type: splunk_hec\n  endpoint: https://s\n  token: x\n  tokn: y\n";
        let e = serde_yaml_ng::from_str::<Vec<SinkConfig>>(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokn"), "{e}");
    }

    #[test]
    fn validation_names_keys() {
        let y = r#"
- type: splunk_hec
  endpoint: "splunk:8088"
  token: ""
  delivery: {batch_max_events: 0}
- type: splunk_hec
  endpoint: https://x
  token: t
"#;
        let c: Vec<SinkConfig> = serde_yaml_ng::from_str(y).unwrap();
        let p = validate(&c).join("\n");
        assert!(p.contains("`sinks[0].endpoint`"), "{p}");
        assert!(p.contains("`sinks[0].token`"), "{p}");
        assert!(p.contains("`sinks[0].delivery.batch_max_events`"), "{p}");
        assert!(p.contains("`sinks[1].name`"), "{p}");
    }
}
