//! The YAML configuration: read once, validated into typed structs, every problem reported.
//!
//! [`Config::from_yaml`] collects *all* problems at once: every unknown key (through
//! `serde_ignored`), every value of the wrong type (through `serde_path_to_error`: the bad
//! key is removed and parsing retried, so the next bad value is found too), and every
//! semantic problem from [`Config::validate`]. Each problem names its key path and, where
//! the text allows, its line. `src/config/default.yaml` documents every key with its default
//! and a test keeps it equal to [`Config::default`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_yaml_ng::Value;

/// The embedded default configuration (every key, documented).
pub const DEFAULT_YAML: &str = include_str!("default.yaml");

/// A duration written with a unit (`250ms`, `10s`, `5m`, `1h`, `7d`) or as whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Dur(Duration::from_secs(s))),
            Raw::Text(t) => parse_duration(&t)
                .map(Dur)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `250ms`, `10s`, `5m`, `1h`, `7d` (also `1.5s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {s:?} needs a unit (ms, s, m, h, d)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?} does not start with a number"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        u => {
            return Err(format!(
                "duration {s:?} has unknown unit {u:?} (ms, s, m, h, d)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A secret string whose Debug and Display print `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where rules come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct RulesConfig {
    /// Load the embedded rules.
    pub builtin: bool,
    /// User rule directories or files.
    pub dirs: Vec<PathBuf>,
    /// User list files.
    pub lists: Vec<PathBuf>,
    /// Falco rule files.
    pub falco: Vec<PathBuf>,
    /// Skip broken rules instead of refusing to start.
    pub skip_broken: bool,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            builtin: true,
            dirs: Vec::new(),
            lists: Vec::new(),
            falco: Vec::new(),
            skip_broken: false,
        }
    }
}

/// Engine sizing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// Recent events remembered for de-duplication.
    pub dedup_capacity: usize,
    /// Evaluation workers (0: one per core).
    pub workers: usize,
    /// Batches that may wait for the engine.
    pub queue_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            dedup_capacity: 100_000,
            workers: 0,
            queue_capacity: 64,
        }
    }
}

/// TLS files for the webhook server.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// PEM CA bundle for client certificates.
    pub client_ca: Option<PathBuf>,
}

/// The webhook server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ServeConfig {
    /// Listen address.
    pub listen: String,
    /// TLS.
    pub tls: TlsConfig,
    /// Bearer token.
    pub bearer_token: Option<Secret>,
    /// File holding the bearer token.
    pub bearer_token_file: Option<PathBuf>,
    /// Largest body after decompression.
    pub max_body_bytes: usize,
    /// Largest event.
    pub max_event_bytes: usize,
    /// Retry-After seconds on 429.
    pub retry_after_secs: u64,
    /// Header read timeout.
    pub header_read_timeout: Dur,
    /// Idle connection timeout.
    pub idle_timeout: Dur,
    /// Concurrent connections.
    pub max_connections: usize,
    /// Clusters identified by their API server's client certificate (multi-cluster).
    pub clusters: Vec<ClusterEntry>,
}

/// One cluster identified by a client certificate (`serve.clusters`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterEntry {
    /// Cluster name attached to its events.
    pub name: String,
    /// Certificate subject common name.
    #[serde(default)]
    pub client_cn: Option<String>,
    /// Certificate DNS subject alternative name.
    #[serde(default)]
    pub client_san_dns: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "0.0.0.0:8443".into(),
            tls: TlsConfig::default(),
            bearer_token: None,
            bearer_token_file: None,
            max_body_bytes: 64 * 1024 * 1024,
            max_event_bytes: 1024 * 1024,
            retry_after_secs: 5,
            header_read_timeout: Dur(Duration::from_secs(10)),
            idle_timeout: Dur(Duration::from_secs(90)),
            max_connections: 1024,
            clusters: Vec::new(),
        }
    }
}

/// Where `tail` starts in a file with no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// Read the whole file.
    Beginning,
    /// Only what is written from now on.
    End,
}

/// The log tailer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TailSection {
    /// Files or globs.
    pub paths: Vec<String>,
    /// Checkpoint file.
    pub checkpoint: PathBuf,
    /// Start position without checkpoint.
    pub from: StartAt,
    /// Poll interval.
    pub poll_interval: Dur,
}

impl Default for TailSection {
    fn default() -> Self {
        TailSection {
            paths: Vec::new(),
            checkpoint: PathBuf::from("/var/lib/audithawk/tail.checkpoint"),
            from: StartAt::End,
            poll_interval: Dur(Duration::from_millis(250)),
        }
    }
}

pub use crate::sinks::config::{RouteConfig, SinkConfig};

/// Correlation windows and baselines: sizes, lateness and persistence.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct StateSection {
    /// How late (event time) an event may arrive and still be placed in order.
    pub allowed_lateness: Dur,
    /// Most groups one correlation may hold; the stalest are evicted beyond it.
    pub max_groups_per_rule: usize,
    /// Approximate cap on all correlation state, in bytes.
    pub max_state_bytes: usize,
    /// auditIDs kept per group for the alert.
    pub max_audit_ids: usize,
    /// Largest distinct-value set a `value_count` keeps.
    pub max_distinct_values: usize,
    /// Re-alert interval per correlation group when the rule sets none.
    pub default_suppress: Option<Dur>,
    /// Where snapshots are written (null: in memory only, lost at restart).
    pub state_dir: Option<PathBuf>,
    /// How often a snapshot is written.
    pub snapshot_interval: Dur,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            allowed_lateness: Dur(Duration::from_secs(45)),
            max_groups_per_rule: 200_000,
            max_state_bytes: 512 << 20,
            max_audit_ids: 10,
            max_distinct_values: 1_000,
            // One alert per correlation group per 10 minutes (repeats are counted in the
            // next alert): a secret sweep is one incident, not one alert per extra read.
            default_suppress: Some(Dur(Duration::from_secs(600))),
            state_dir: None,
            snapshot_interval: Dur(Duration::from_secs(60)),
        }
    }
}

/// OpenTelemetry export.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TelemetrySection {
    /// OTLP/HTTP export of metrics and sampled traces; off when null.
    pub otlp: Option<OtlpSection>,
}

/// OTLP/HTTP exporter settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSection {
    /// Collector base URL (`http://collector:4318`); `/v1/metrics` and `/v1/traces` are appended.
    pub endpoint: String,
    /// Metric export interval.
    #[serde(default = "default_otlp_interval")]
    pub interval: Dur,
    /// `service.name`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Fraction of webhook requests traced (0 disables traces).
    #[serde(default = "default_sample_ratio")]
    pub trace_sample_ratio: f64,
    /// Export request timeout.
    #[serde(default = "default_otlp_timeout")]
    pub timeout: Dur,
}

fn default_otlp_interval() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_service_name() -> String {
    "audithawk".into()
}
fn default_sample_ratio() -> f64 {
    0.01
}
fn default_otlp_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

impl OtlpSection {
    /// The exporter's settings.
    pub fn to_otel(&self) -> crate::telemetry::otel::OtelConfig {
        crate::telemetry::otel::OtelConfig {
            endpoint: self.endpoint.clone(),
            interval: self.interval.0,
            service_name: self.service_name.clone(),
            trace_sample_ratio: self.trace_sample_ratio,
            timeout: self.timeout.0,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct LoggingConfig {
    /// text or json.
    pub format: LogFormat,
    /// Default level filter (overridden by AUDITHAWK_LOG).
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// JSON lines.
    Json,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Default cluster name.
    pub cluster: Option<String>,
    /// Rules.
    pub rules: RulesConfig,
    /// Engine.
    pub engine: EngineConfig,
    /// Webhook server.
    pub serve: ServeConfig,
    /// Tailer.
    pub tail: TailSection,
    /// Sinks.
    pub sinks: Vec<SinkConfig>,
    /// Forwarding of the (redacted) audit events themselves to a SIEM; off by default.
    pub raw_forwarding: crate::sinks::raw::RawForwardConfig,
    /// Scale-out through Kafka (`serve --forward-to kafka`, `detect --from kafka`).
    pub kafka: crate::kafka::KafkaConfig,
    /// Where sinks keep disk buffers and dead-letter files (`<data_dir>/sinks/<name>/`).
    pub data_dir: PathBuf,
    /// Correlation state.
    pub state: StateSection,
    /// Global exceptions and re-alert intervals (docs/tuning.md).
    pub tuning: Option<serde_yaml_ng::Value>,
    /// OpenTelemetry export.
    pub telemetry: TelemetrySection,
    /// Logging.
    pub logging: LoggingConfig,
    /// Shutdown deadline.
    pub shutdown_timeout: Dur,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster: None,
            rules: RulesConfig::default(),
            engine: EngineConfig::default(),
            serve: ServeConfig::default(),
            tail: TailSection::default(),
            sinks: vec![SinkConfig::Stdout(crate::sinks::config::StdoutConfig {
                format: crate::sinks::stdout::Format::Text,
                route: RouteConfig::default(),
            })],
            raw_forwarding: crate::sinks::raw::RawForwardConfig::default(),
            kafka: crate::kafka::KafkaConfig::default(),
            data_dir: PathBuf::from("/var/lib/audithawk"),
            state: StateSection::default(),
            tuning: None,
            telemetry: TelemetrySection::default(),
            logging: LoggingConfig::default(),
            shutdown_timeout: Dur(Duration::from_secs(30)),
        }
    }
}

/// `(key path, problem)` pairs from a `validate`, one indented line each, for a message
/// that continues after a colon.
pub fn problem_list(problems: &[(String, String)]) -> String {
    problems
        .iter()
        .map(|(k, m)| format!("\n  `{k}`: {m}"))
        .collect()
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path (`serve.tls.cert`), or empty for the whole file.
    pub path: String,
    /// Line in the file, where known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.path.is_empty()) {
            (Some(l), false) => write!(f, "line {l}: `{}`: {}", self.path, self.message),
            (None, false) => write!(f, "`{}`: {}", self.path, self.message),
            (Some(l), true) => write!(f, "line {l}: {}", self.message),
            (None, true) => f.write_str(&self.message),
        }
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The file (or `<inline>`).
    pub file: String,
    /// The problems, in file order where known.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} problem{}",
            self.file,
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  {}: {p}", self.file)?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: path.display().to_string(),
            problems: vec![Problem {
                path: String::new(),
                line: None,
                message: format!("cannot read: {e}"),
            }],
        })?;
        Config::from_yaml(&text, &path.display().to_string())
    }

    /// Parses and validates YAML text, reporting every problem.
    pub fn from_yaml(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let fail = |problems: Vec<Problem>| ConfigErrors {
            file: file.to_string(),
            problems,
        };
        let mut value: Value = match serde_yaml_ng::from_str(text) {
            Ok(Value::Null) => Value::Mapping(Default::default()),
            Ok(v) => v,
            Err(e) => {
                return Err(fail(vec![Problem {
                    path: String::new(),
                    line: e.location().map(|l| l.line()),
                    message: format!("invalid YAML: {e}"),
                }]))
            }
        };
        let mut problems = Vec::new();
        let mut unknown = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        // Each pass finds at most one bad value; remove it and go again. Bounded by the
        // number of keys in the file.
        let config = loop {
            unknown.clear();
            let de = value.clone();
            let mut track = serde_path_to_error::Track::new();
            let res = {
                let de = serde_path_to_error::Deserializer::new(de, &mut track);
                serde_ignored::deserialize(de, |p| unknown.push(p.to_string()))
            };
            match res {
                Ok(c) => break Some(c),
                Err(e) => {
                    let path = track.path().to_string();
                    let path = if path == "." { String::new() } else { path };
                    problems.push(Problem {
                        line: line_of(text, &path),
                        message: e.to_string(),
                        path: path.clone(),
                    });
                    if path.is_empty() || !remove_path(&mut value, &path) || problems.len() > 200 {
                        break None;
                    }
                    removed.push(path);
                }
            }
        };
        for p in unknown {
            problems.push(Problem {
                line: line_of(text, &p),
                message: "unknown key".into(),
                path: p,
            });
        }
        let Some(config): Option<Config> = config else {
            problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            return Err(fail(problems));
        };
        // Semantic checks see the config with bad values removed; skip those that are only
        // consequences of a removal (an emptied `sinks` list after a bad entry, say).
        let related = |p: &str| {
            removed
                .iter()
                .any(|r| r.starts_with(p) || p.starts_with(r.as_str()))
        };
        for (path, message) in config.validate() {
            if related(&path) {
                continue;
            }
            problems.push(Problem {
                line: line_of(text, &path),
                path,
                message,
            });
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            Err(fail(problems))
        }
    }

    /// Semantic checks that types cannot express: (key path, problem) pairs.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut bad = |k: &str, m: String| p.push((k.to_string(), m));
        if self.serve.listen.parse::<SocketAddr>().is_err() {
            bad(
                "serve.listen",
                format!(
                    "{:?} is not an address like 0.0.0.0:8443",
                    self.serve.listen
                ),
            );
        }
        let tls = &self.serve.tls;
        if tls.cert.is_some() != tls.key.is_some() {
            bad("serve.tls", "`cert` and `key` must be set together".into());
        }
        if tls.client_ca.is_some() && tls.cert.is_none() {
            bad(
                "serve.tls.client_ca",
                "client certificates need TLS: set `cert` and `key` too".into(),
            );
        }
        for (k, v) in [
            ("serve.tls.cert", &tls.cert),
            ("serve.tls.key", &tls.key),
            ("serve.tls.client_ca", &tls.client_ca),
        ] {
            if let Some(path) = v {
                if !path.is_file() {
                    bad(k, format!("file {} does not exist", path.display()));
                }
            }
        }
        if self.serve.bearer_token.is_some() && self.serve.bearer_token_file.is_some() {
            bad(
                "serve.bearer_token",
                "set `bearer_token` or `bearer_token_file`, not both".into(),
            );
        }
        if let Some(Secret(t)) = &self.serve.bearer_token {
            if t.trim().is_empty() {
                bad("serve.bearer_token", "must not be empty".into());
            }
        }
        if let Some(f) = &self.serve.bearer_token_file {
            if !f.is_file() {
                bad(
                    "serve.bearer_token_file",
                    format!("file {} does not exist", f.display()),
                );
            }
        }
        for (k, v) in [
            ("serve.max_body_bytes", self.serve.max_body_bytes),
            ("serve.max_event_bytes", self.serve.max_event_bytes),
            ("serve.max_connections", self.serve.max_connections),
            ("engine.queue_capacity", self.engine.queue_capacity),
        ] {
            if v == 0 {
                bad(k, "must be greater than zero".into());
            }
        }
        if self.serve.max_event_bytes > self.serve.max_body_bytes {
            bad(
                "serve.max_event_bytes",
                "must not exceed `serve.max_body_bytes`".into(),
            );
        }
        if self.tail.poll_interval.0.is_zero() {
            bad("tail.poll_interval", "must be greater than zero".into());
        }
        for (i, d) in self.rules.dirs.iter().enumerate() {
            if !d.exists() {
                bad(
                    &format!("rules.dirs[{i}]"),
                    format!("{} does not exist", d.display()),
                );
            }
        }
        for (i, d) in self.rules.lists.iter().enumerate() {
            if !d.exists() {
                bad(
                    &format!("rules.lists[{i}]"),
                    format!("{} does not exist", d.display()),
                );
            }
        }
        for (i, d) in self.rules.falco.iter().enumerate() {
            if !d.is_file() {
                bad(
                    &format!("rules.falco[{i}]"),
                    format!("{} does not exist", d.display()),
                );
            }
        }
        for (i, c) in self.serve.clusters.iter().enumerate() {
            if !valid_cluster_name(&c.name) {
                bad(
                    &format!("serve.clusters[{i}].name"),
                    format!("{:?} must be 1-63 characters of A-Z a-z 0-9 . _ -", c.name),
                );
            }
            if c.client_cn.is_none() && c.client_san_dns.is_none() {
                bad(
                    &format!("serve.clusters[{i}]"),
                    "set `client_cn` or `client_san_dns`".into(),
                );
            }
        }
        if !self.serve.clusters.is_empty() && self.serve.tls.client_ca.is_none() {
            bad(
                "serve.clusters",
                "client certificates identify clusters only with `serve.tls.client_ca`".into(),
            );
        }
        if let Some(c) = &self.cluster {
            if !valid_cluster_name(c) {
                bad(
                    "cluster",
                    format!("{c:?} must be 1-63 characters of A-Z a-z 0-9 . _ -"),
                );
            }
        }
        if let Some(t) = &self.tuning {
            if let Err(errs) = crate::engine::state::Tuning::from_yaml(t) {
                for e in errs {
                    bad("tuning", e);
                }
            }
        }
        if self.state.max_groups_per_rule == 0 || self.state.max_state_bytes == 0 {
            bad(
                "state",
                "`max_groups_per_rule` and `max_state_bytes` must be greater than zero".into(),
            );
        }
        if let Some(o) = &self.telemetry.otlp {
            if !o.endpoint.starts_with("http://") {
                bad(
                    "telemetry.otlp.endpoint",
                    format!(
                        "{:?} must be an http:// URL of a collector next to audithawk",
                        o.endpoint
                    ),
                );
            }
            if !(0.0..=1.0).contains(&o.trace_sample_ratio) {
                bad(
                    "telemetry.otlp.trace_sample_ratio",
                    "must be between 0 and 1".into(),
                );
            }
        }
        for problem in crate::sinks::config::validate(&self.sinks) {
            bad("sinks", problem);
        }
        for problem in self.raw_forwarding.validate() {
            bad("raw_forwarding", problem);
        }
        // Brokers are required only by the commands that use Kafka (they check again).
        for (k, problem) in self.kafka.validate(false) {
            bad(&k, problem);
        }
        if self.sinks.is_empty() {
            bad(
                "sinks",
                "at least one sink is needed, or alerts go nowhere".into(),
            );
        }
        if !["trace", "debug", "info", "warn", "error"].contains(&self.logging.level.as_str()) {
            bad(
                "logging.level",
                format!(
                    "{:?} is not one of trace, debug, info, warn, error",
                    self.logging.level
                ),
            );
        }
        p
    }

    /// The correlation engine's settings (the metrics registry is the caller's).
    pub fn state_config(
        &self,
        metrics: std::sync::Arc<crate::telemetry::Metrics>,
    ) -> crate::engine::state::StateConfig {
        let st = &self.state;
        crate::engine::state::StateConfig {
            max_groups_per_rule: st.max_groups_per_rule,
            max_state_bytes: st.max_state_bytes,
            allowed_lateness: st.allowed_lateness.0,
            snapshot_interval: st.snapshot_interval.0,
            state_dir: st.state_dir.clone(),
            default_suppress: st.default_suppress.map(|d| d.0),
            max_audit_ids: st.max_audit_ids,
            max_distinct_values: st.max_distinct_values,
            tuning: self
                .tuning
                .as_ref()
                .and_then(|t| crate::engine::state::Tuning::from_yaml(t).ok())
                .unwrap_or_default(),
            metrics,
            ..Default::default()
        }
    }

    /// The bearer token, read from `bearer_token` or `bearer_token_file`.
    pub fn bearer_token(&self) -> std::io::Result<Option<String>> {
        if let Some(Secret(t)) = &self.serve.bearer_token {
            return Ok(Some(t.clone()));
        }
        match &self.serve.bearer_token_file {
            Some(f) => Ok(Some(std::fs::read_to_string(f)?.trim().to_string())),
            None => Ok(None),
        }
    }
}

/// Cluster names: 1-63 characters of `[A-Za-z0-9._-]` (they appear in URLs and metric labels).
pub fn valid_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Removes the value at a serde path (`a.b[2].c`) from `v`; false when not found.
fn remove_path(v: &mut Value, path: &str) -> bool {
    let segs = segments(path);
    let Some((last, parents)) = segs.split_last() else {
        return false;
    };
    let mut cur = v;
    for s in parents {
        let next = match (s, cur) {
            (Seg::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str()),
            (Seg::Index(i), Value::Sequence(q)) => q.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match (last, cur) {
        (Seg::Key(k), Value::Mapping(m)) => m.remove(k.as_str()).is_some(),
        (Seg::Index(i), Value::Sequence(q)) if *i < q.len() => {
            q.remove(*i);
            true
        }
        _ => false,
    }
}

enum Seg {
    Key(String),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(Seg::Key(rest[..i].to_string()));
            }
            rest = &rest[i..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(end) = stripped.find(']') else { break };
                if let Ok(n) = stripped[..end].parse() {
                    out.push(Seg::Index(n));
                }
                rest = &stripped[end + 1..];
            }
        } else if !rest.is_empty() {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

/// Finds the line (1-based) of a dotted key path in block-style YAML by tracking the
/// indentation of keys. Sequence indices are matched positionally. `None` when the text
/// does not show the path plainly (flow style, anchors).
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let want = segments(path);
    if want.is_empty() {
        return None;
    }
    // Stack of (indent, segment) describing the current position.
    let mut stack: Vec<(usize, Seg)> = Vec::new();
    let mut seq_counters: Vec<(usize, usize)> = Vec::new(); // (indent of '-', count so far)
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
            continue;
        }
        let mut indent = line.len() - trimmed.len();
        let mut body = trimmed;
        if let Some(after) = body
            .strip_prefix("- ")
            .or_else(|| (body == "-").then_some(""))
        {
            // A sequence item: the index is the count of items at this indent.
            stack.retain(|(i, _)| *i < indent);
            seq_counters.retain(|(i, _)| *i <= indent);
            let idx = match seq_counters.iter_mut().find(|(i, _)| *i == indent) {
                Some(c) => {
                    c.1 += 1;
                    c.1
                }
                None => {
                    seq_counters.push((indent, 0));
                    0
                }
            };
            stack.push((indent, Seg::Index(idx)));
            if same_path(&stack, &want) {
                return Some(n + 1);
            }
            indent += 2;
            body = after;
        }
        let Some(colon) = body.find(':') else {
            continue;
        };
        let key = body[..colon].trim().trim_matches('"').trim_matches('\'');
        if key.is_empty() || key.contains(' ') && !key.starts_with('"') {
            continue;
        }
        stack.retain(|(i, _)| *i < indent);
        seq_counters.retain(|(i, _)| *i < indent || stack.iter().any(|(si, _)| si == i));
        stack.push((indent, Seg::Key(key.to_string())));
        if same_path(&stack, &want) {
            return Some(n + 1);
        }
    }
    None
}

fn same_path(stack: &[(usize, Seg)], want: &[Seg]) -> bool {
    stack.len() == want.len()
        && stack.iter().zip(want).all(|((_, a), b)| match (a, b) {
            (Seg::Key(x), Seg::Key(y)) => x == y,
            (Seg::Index(x), Seg::Index(y)) => x == y,
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_equals_code_default() {
        let c = Config::from_yaml(DEFAULT_YAML, "default.yaml").unwrap();
        // Sink configs carry secrets and have no PartialEq; Debug covers every field.
        assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "\
cluster: prod
serve:
  listen: nowhere
  max_body_bytes: lots
  colour: blue
engine:
  workers: -1
tail:
  poll_interval: 5 parsecs
sinks:
  - type: stdout
    format: yaml
frobnicate: true
";
        let err = Config::from_yaml(text, "c.yaml").unwrap_err();
        let msgs: Vec<String> = err.problems.iter().map(|p| p.to_string()).collect();
        let all = msgs.join("\n");
        for needle in [
            "line 4: `serve.max_body_bytes`",
            "line 5: `serve.colour`: unknown key",
            "line 7: `engine.workers`",
            "line 9: `tail.poll_interval`",
            "line 11: `sinks[0]`: unknown variant `yaml`",
            "line 13: `frobnicate`: unknown key",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert!(
            all.contains("line 3: `serve.listen`"),
            "semantic problems come too:\n{all}"
        );
        assert!(
            !all.contains("at least one sink"),
            "no follow-on noise from a removed entry"
        );
        let err = Config::from_yaml("serve:\n  listen: nowhere\n", "c.yaml").unwrap_err();
        assert_eq!(err.problems[0].line, Some(2));
        assert!(err.problems[0].message.contains("not an address"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10y").is_err());
    }

    #[test]
    fn secret_debug_is_masked() {
        let c = Config::from_yaml("serve:\n  bearer_token: hunter2\n", "x").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.bearer_token().unwrap().as_deref(), Some("hunter2"));
    }

    #[test]
    fn semantic_problems_listed_together() {
        let err = Config::from_yaml(
            "serve:\n  tls:\n    cert: /nope.pem\n  bearer_token: ''\nengine:\n  queue_capacity: 0\n",
            "x",
        )
        .unwrap_err();
        let all = err.to_string();
        assert!(
            all.contains("`serve.tls`: `cert` and `key` must be set together"),
            "{all}"
        );
        assert!(all.contains("/nope.pem does not exist"));
        assert!(all.contains("`serve.bearer_token`: must not be empty"));
        assert!(all.contains("`engine.queue_capacity`: must be greater than zero"));
    }
}
