//! OpenTelemetry: OTLP/HTTP export of audithawk's metrics, and sampled traces.
//!
//! # Design
//! The atomic counters in [`Metrics`] stay the hot-path source of truth (one relaxed add per
//! event, no SDK on the hot path). `/metrics` keeps rendering them directly
//! ([`Metrics::render_prometheus`]); OpenTelemetry sees the same values through
//! *observable* instruments whose callbacks read a snapshot of that very exposition. So:
//! - `/metrics` and OTLP can never disagree: both are the same render, parsed once per
//!   collection (a few KB every `interval`; nothing per event).
//! - `/metrics` does not depend on the OTel SDK, and keeps its names (the SDK's Prometheus
//!   path would rename: unit suffixes, `_total` handling) and works when OTLP is off.
//! - Families added by other components (sinks, tail, correlation) need no change here
//!   beyond their name in [`FAMILIES`]; a family also gets exported if it already exists
//!   when [`init`] runs.
//!
//! The alternative, rendering `/metrics` from an SDK `ManualReader`, would put every
//! measurement through SDK aggregation and needs a Prometheus encoder the OTel Rust project
//! no longer maintains (`opentelemetry-prometheus` is discontinued), for no gain.
//!
//! Traces: a [`tracing_opentelemetry`] layer turns the `tracing` spans of the webhook request
//! → engine → sink path into OTLP spans, sampled by trace-id ratio (parent-based, so a batch
//! is kept or dropped as a whole).
//!
//! Transport: OTLP over HTTP with protobuf bodies (`/v1/metrics`, `/v1/traces` under the
//! configured base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT`). The SDK exports from its own
//! background threads; the HTTP request is run on the caller's tokio runtime through a
//! small hyper client, so no second HTTP/TLS stack is linked. Plain `http://` only: the
//! collector is expected next to audithawk (sidecar, node agent or in-cluster Service).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::registry::LookupSpan;

use super::Metrics;

/// Every metric family audithawk components register (docs/operations.md lists them with
/// their labels). Families present in the exposition when [`init`] runs are exported too.
pub const FAMILIES: &[&str] = &[
    "audithawk_events_received_total",
    "audithawk_events_rejected_total",
    "audithawk_events_evaluated_total",
    "audithawk_duplicates_total",
    "audithawk_stage_skipped_total",
    "audithawk_alerts_total",
    "audithawk_queue_depth",
    "audithawk_state_save_errors_total",
    "audithawk_cluster_events_received_total",
    "audithawk_reloads_total",
    "audithawk_http_requests_total",
    "audithawk_webhook_accept_errors_total",
    "audithawk_webhook_backpressure_total",
    "audithawk_webhook_tls_handshake_failures_total",
    "audithawk_sink_sent_total",
    "audithawk_sink_failed_total",
    "audithawk_sink_retried_total",
    "audithawk_sink_dropped_total",
    "audithawk_sink_dead_lettered_total",
    "audithawk_sink_buffered_events",
    "audithawk_sink_buffered_bytes",
    "audithawk_sink_delivery_latency_seconds_bucket",
    "audithawk_sink_delivery_latency_milliseconds_sum",
    "audithawk_raw_forwarded_total",
    "audithawk_kafka_published_total",
    "audithawk_kafka_publish_failed_total",
    "audithawk_kafka_commits_total",
    "audithawk_kafka_commit_errors_total",
    "audithawk_kafka_consume_errors_total",
    "audithawk_kafka_partition_restores_total",
    "audithawk_kafka_replayed_total",
    "audithawk_kafka_snapshots_total",
    "audithawk_kafka_snapshot_errors_total",
    "audithawk_raw_forward_failed_total",
    "audithawk_tail_rotations_total",
    "audithawk_tail_truncations_total",
    "audithawk_tail_truncation_losses_total",
    "audithawk_tail_read_errors_total",
    "audithawk_tail_checkpoint_errors_total",
    "audithawk_correlation_events_total",
    "audithawk_correlation_late_total",
    "audithawk_correlation_evictions_total",
    "audithawk_correlation_early_release_total",
    "audithawk_correlation_keys_truncated_total",
    "audithawk_exceptions_total",
    "audithawk_suppressed_total",
];

/// Span names of the traced path, for the components that open them (and dashboards):
/// the webhook handler opens [`SPAN_WEBHOOK_REQUEST`] per POST; the batch carries that span
/// through the queue so the engine worker's [`SPAN_ENGINE_BATCH`] and the sink driver's
/// [`SPAN_SINK_SEND`] are its children (`info_span!(parent: &batch.span, ...)`).
pub const SPAN_WEBHOOK_REQUEST: &str = "webhook.request";
/// Engine evaluation of one queued batch.
pub const SPAN_ENGINE_BATCH: &str = "engine.batch";
/// One delivery attempt of one sink batch.
pub const SPAN_SINK_SEND: &str = "sink.send";

/// What [`init`] needs.
#[derive(Debug, Clone)]
pub struct OtelConfig {
    /// Collector base URL, e.g. `http://otel-collector:4318`; `/v1/metrics` and
    /// `/v1/traces` are appended.
    pub endpoint: String,
    /// How often metrics are exported.
    pub interval: Duration,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// Fraction of traces kept, 0.0..=1.0 (0 disables span export entirely).
    pub trace_sample_ratio: f64,
    /// Per-request timeout for the exporter.
    pub timeout: Duration,
}

impl OtelConfig {
    /// A config with the defaults: 30 s interval, `audithawk`, 1% of traces, 10 s timeout.
    pub fn new(endpoint: impl Into<String>) -> OtelConfig {
        OtelConfig {
            endpoint: endpoint.into(),
            interval: Duration::from_secs(30),
            service_name: "audithawk".into(),
            trace_sample_ratio: 0.01,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why OpenTelemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// The endpoint is not a usable `http://host[:port][/path]` URL.
    #[error("`otel.endpoint` {endpoint:?}: {reason}")]
    Endpoint {
        /// What was configured.
        endpoint: String,
        /// Why it is refused.
        reason: String,
    },
    /// A setting is out of range.
    #[error("`otel.{key}`: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// Called outside a tokio runtime (the exporter sends on the caller's runtime).
    #[error("OpenTelemetry must be initialised inside the tokio runtime")]
    NoRuntime,
    /// The OTLP exporter refused its configuration.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// Keeps the providers alive; [`OtelGuard::shutdown`] flushes and stops them.
pub struct OtelGuard {
    meter_provider: SdkMeterProvider,
    tracer_provider: SdkTracerProvider,
    tracer: SdkTracer,
    // The observable instruments must outlive the provider's collections.
    _instruments: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for OtelGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelGuard")
            .field("instruments", &self._instruments.len())
            .finish()
    }
}

impl OtelGuard {
    /// A `tracing` layer that exports spans through this guard's (sampled) tracer. Add it to
    /// the subscriber next to the fmt layer.
    pub fn tracing_layer<S>(&self) -> tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        tracing_opentelemetry::layer().with_tracer(self.tracer.clone())
    }

    /// Collects and exports metrics and pending spans now. Blocks: call it from
    /// `spawn_blocking` (the export itself runs on the runtime).
    pub fn force_flush(&self) -> Result<(), String> {
        let m = self.meter_provider.force_flush().map_err(|e| e.to_string());
        let t = self
            .tracer_provider
            .force_flush()
            .map_err(|e| e.to_string());
        m.and(t)
    }

    /// Flushes and stops both providers. Blocks like [`OtelGuard::force_flush`].
    pub fn shutdown(self) -> Result<(), String> {
        let m = self.meter_provider.shutdown().map_err(|e| e.to_string());
        let t = self.tracer_provider.shutdown().map_err(|e| e.to_string());
        m.and(t)
    }
}

/// Starts OTLP export of `metrics` (every `cfg.interval`) and a sampled tracer. Must be
/// called inside the tokio runtime that will carry the export requests.
pub fn init(cfg: OtelConfig, metrics: Arc<Metrics>) -> Result<OtelGuard, OtelError> {
    let base = validate(&cfg)?;
    let handle = tokio::runtime::Handle::try_current().map_err(|_| OtelError::NoRuntime)?;
    let client = TokioHttpClient {
        handle,
        timeout: cfg.timeout,
    };
    let resource = Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();

    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_http_client(client.clone())
        .with_endpoint(format!("{base}/v1/metrics"))
        .with_timeout(cfg.timeout)
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    let reader = PeriodicReader::builder(exporter)
        .with_interval(cfg.interval)
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource.clone())
        .build();
    let meter = meter_provider.meter("audithawk");
    let instruments = register(&meter, metrics);

    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(format!("{base}/v1/traces"))
        .with_timeout(cfg.timeout)
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(span_exporter)
        // Parent-based: the spans of one webhook request share its decision.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.trace_sample_ratio,
        ))))
        .with_resource(resource)
        .build();
    let tracer = tracer_provider.tracer("audithawk");
    Ok(OtelGuard {
        meter_provider,
        tracer_provider,
        tracer,
        _instruments: instruments,
    })
}

/// Checks the config; returns the endpoint without a trailing slash.
fn validate(cfg: &OtelConfig) -> Result<String, OtelError> {
    let bad = |reason: &str| OtelError::Endpoint {
        endpoint: cfg.endpoint.clone(),
        reason: reason.to_string(),
    };
    let uri: http::Uri = cfg
        .endpoint
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported; export to a collector on the node or in the pod \
                 over http, and let it forward with TLS",
            ))
        }
        _ => return Err(bad("must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if uri.query().is_some() {
        return Err(bad("must not have a query string"));
    }
    if !(0.0..=1.0).contains(&cfg.trace_sample_ratio) {
        return Err(OtelError::Invalid {
            key: "trace_sample_ratio",
            reason: format!("{} is not between 0 and 1", cfg.trace_sample_ratio),
        });
    }
    if cfg.interval < Duration::from_millis(100) {
        return Err(OtelError::Invalid {
            key: "interval",
            reason: "must be at least 100ms".into(),
        });
    }
    if cfg.timeout.is_zero() {
        return Err(OtelError::Invalid {
            key: "timeout",
            reason: "must be greater than zero".into(),
        });
    }
    Ok(cfg.endpoint.trim_end_matches('/').to_string())
}

// ---- metrics bridge -----------------------------------------------------------------------

/// One sample of the exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Label pairs in exposition order.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

/// A parsed exposition: family name -> (is it a gauge, samples).
pub type Exposition = HashMap<String, (bool, Vec<Sample>)>;

/// Parses the Prometheus text that [`Metrics::render_prometheus`] writes (`# TYPE` lines
/// decide counter vs gauge; samples are `name{k="v",...} value`). Lines it cannot read are
/// skipped: the input is our own renderer's output, not user data.
pub fn parse_exposition(text: &str) -> Exposition {
    let mut out: Exposition = HashMap::new();
    let mut gauges = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                if kind == "gauge" {
                    gauges.insert(name.to_string());
                }
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((name, labels, value)) = parse_sample(line) else {
            continue;
        };
        let gauge = gauges.contains(&name);
        out.entry(name)
            .or_insert_with(|| (gauge, Vec::new()))
            .1
            .push(Sample { labels, value });
    }
    out
}

type ParsedSample = (String, Vec<(String, String)>, f64);

fn parse_sample(line: &str) -> Option<ParsedSample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let close;
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    close = i;
                    break;
                }
                ',' => {}
                '=' => {
                    // Value: a quoted string with \\, \" and \n escapes.
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut val = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => val.push('\n'),
                                other => val.push(other),
                            },
                            other => val.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), val));
                }
                other => key.push(other),
            }
        }
        rest = &body[close + 1..];
    }
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// Reads the registry for the callbacks. Each callback renders and parses afresh: no cache
/// that could serve a stale value to a flush that follows an export closely (a few KB of
/// text per family every `interval` is nothing next to the event path).
struct Snapshot {
    metrics: Arc<Metrics>,
}

impl Snapshot {
    fn get(&self) -> Exposition {
        parse_exposition(&self.metrics.render_prometheus())
    }
}

fn attrs(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect()
}

/// Registers one observable instrument per family.
fn register(meter: &Meter, metrics: Arc<Metrics>) -> Vec<Box<dyn std::any::Any + Send + Sync>> {
    let now = parse_exposition(&metrics.render_prometheus());
    let snap = Arc::new(Snapshot { metrics });
    let mut names: Vec<(String, bool)> = FAMILIES
        .iter()
        .map(|n| {
            (
                n.to_string(),
                now.get(*n).map_or_else(|| !is_counter_name(n), |f| f.0),
            )
        })
        .collect();
    for (n, (gauge, _)) in &now {
        if !FAMILIES.contains(&n.as_str()) {
            names.push((n.clone(), *gauge));
        }
    }
    let mut out: Vec<Box<dyn std::any::Any + Send + Sync>> = Vec::new();
    for (name, gauge) in names {
        let s = snap.clone();
        let key = name.clone();
        if gauge {
            let g = meter
                .i64_observable_gauge(name)
                .with_callback(move |obs| {
                    if let Some((_, samples)) = s.get().get(&key) {
                        for smp in samples {
                            obs.observe(smp.value as i64, &attrs(&smp.labels));
                        }
                    }
                })
                .build();
            out.push(Box::new(g));
        } else {
            let c = meter
                .u64_observable_counter(name)
                .with_callback(move |obs| {
                    if let Some((_, samples)) = s.get().get(&key) {
                        for smp in samples.iter().filter(|s| s.value >= 0.0) {
                            obs.observe(smp.value as u64, &attrs(&smp.labels));
                        }
                    }
                })
                .build();
            out.push(Box::new(c));
        }
    }
    out
}

fn is_counter_name(n: &str) -> bool {
    n.ends_with("_total") || n.ends_with("_bucket") || n.ends_with("_sum") || n.ends_with("_count")
}

// ---- transport ----------------------------------------------------------------------------

/// Sends the exporter's requests on the tokio runtime captured at [`init`]. The SDK calls
/// `send_bytes` from its own threads under a plain executor; hyper needs tokio's reactor, so
/// the request is spawned onto the runtime and awaited through its JoinHandle (which works
/// under any executor).
#[derive(Debug, Clone)]
struct TokioHttpClient {
    handle: tokio::runtime::Handle,
    timeout: Duration,
}

/// Collector answers are tiny (an empty `Export*ServiceResponse` or a partial-success note).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[async_trait::async_trait]
impl HttpClient for TokioHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let timeout = self.timeout;
        let task = self.handle.spawn(async move {
            match tokio::time::timeout(timeout, send(request)).await {
                Ok(r) => r,
                Err(_) => Err(format!("OTLP export timed out after {timeout:?}").into()),
            }
        });
        task.await.map_err(|e| Box::new(e) as HttpError)?
    }
}

async fn send(request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
    let uri = request.uri().clone();
    let host = uri.host().ok_or("OTLP endpoint has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    // The connection future drives the socket; it ends when the response is read and the
    // sender is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let (mut parts, body) = request.into_parts();
    // HTTP/1.1 needs a Host header, and the request line wants origin-form.
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or(host);
    parts
        .headers
        .insert(http::header::HOST, http::HeaderValue::from_str(&authority)?);
    parts.uri = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()?;
    let resp = sender
        .send_request(http::Request::from_parts(parts, Full::new(body)))
        .await?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the collector's answer: {e}"))?
        .to_bytes();
    Ok(Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Level;

    #[test]
    fn parses_our_own_exposition() {
        let m = Metrics::new();
        m.received("webhook", 3);
        m.rejected("webhook", "invalid \"json\"\\x", 2);
        m.alert("r1", Level::High);
        m.queue_depth.set(-4);
        let e = parse_exposition(&m.render_prometheus());
        let (gauge, s) = &e["audithawk_events_received_total"];
        assert!(!gauge);
        assert_eq!(s[0].labels, vec![("source".into(), "webhook".into())]);
        assert_eq!(s[0].value, 3.0);
        let (_, s) = &e["audithawk_events_rejected_total"];
        assert_eq!(s[0].labels[1].1, "invalid \"json\"\\x");
        let (gauge, s) = &e["audithawk_queue_depth"];
        assert!(gauge);
        assert_eq!(s[0].value, -4.0);
        assert_eq!(e["audithawk_alerts_total"].1[0].labels.len(), 2);
    }

    #[test]
    fn every_family_the_registry_renders_is_listed() {
        let m = Metrics::new();
        m.received("scan", 1);
        m.rejected("scan", "x", 1);
        m.alert("r", Level::Low);
        for name in parse_exposition(&m.render_prometheus()).keys() {
            assert!(
                FAMILIES.contains(&name.as_str()),
                "{name} missing from FAMILIES"
            );
        }
    }

    /// Guards against a component adding a metric family that OTLP would silently miss:
    /// every `"audithawk_*"` literal in the sources must be in [`FAMILIES`].
    #[test]
    fn every_family_named_in_the_sources_is_listed() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        assert!(files.len() > 10, "sources not found");
        let re = regex::Regex::new(r#""(audithawk_[a-z_]+)""#).expect("regex");
        let mut missing = std::collections::BTreeSet::new();
        for f in files.iter().filter(|f| !f.ends_with("telemetry/otel.rs")) {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            for c in re.captures_iter(&text) {
                if !FAMILIES.contains(&&c[1]) {
                    missing.insert(format!("{} ({})", &c[1], f.display()));
                }
            }
        }
        assert!(missing.is_empty(), "add to FAMILIES: {missing:?}");
    }

    #[test]
    fn config_is_validated() {
        for (ep, needle) in [
            ("https://c:4318", "https is not supported"),
            ("c:4318", "must start with http://"),
            ("http://c:4318/?a=b", "query"),
        ] {
            let e = validate(&OtelConfig::new(ep)).expect_err(ep).to_string();
            assert!(e.contains(needle), "{ep}: {e}");
        }
        let mut c = OtelConfig::new("http://c:4318/");
        assert_eq!(validate(&c).ok().as_deref(), Some("http://c:4318"));
        c.trace_sample_ratio = 1.5;
        assert!(validate(&c).is_err());
    }
}
