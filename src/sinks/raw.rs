//! Raw audit-event forwarding (off by default): the accepted audit events themselves,
//! filtered and redacted, to Splunk (`sourcetype kube:apiserver:audit`) or Elasticsearch,
//! so that analysts see the context around an alert in the same SIEM. Same driver, same
//! guarantees (disk buffer, retries, dead letter) as alerts.
//!
//! The filter is an include/exclude list per field (verbs, resources, namespaces, users,
//! stages), with `*` as a trailing wildcard, plus an optional Sigma `detection` block
//! compiled by the rule engine (same modifiers, conditions and field names as rules). It
//! is evaluated before the event is redacted, so that dropped events cost nothing more.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::config::{check_health, SinkBuildError};
use super::elasticsearch::{ElasticsearchConfig, ElasticsearchSink};
use super::splunk_hec::{SplunkHecConfig, SplunkHecSink};
use super::{AuditEventRecord, AuditRecord, Sink, SinkDriver};
use crate::model::{AuditEvent, Stage};
use crate::telemetry::Metrics;

/// Include/exclude patterns for one field. Empty `include` means everything.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Patterns {
    /// Keep only values matching one of these (`*` at the end: prefix).
    #[serde(default)]
    pub include: Vec<String>,
    /// Drop values matching one of these.
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn matches(p: &str, v: &str) -> bool {
    match p.strip_suffix('*') {
        Some(prefix) => v.starts_with(prefix),
        None => p == v,
    }
}

impl Patterns {
    /// Whether `v` passes.
    pub fn accepts(&self, v: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| matches(p, v)))
            && !self.exclude.iter().any(|p| matches(p, v))
    }
}

fn default_stages() -> Vec<String> {
    vec!["ResponseComplete".into(), "Panic".into()]
}

/// Which audit events are forwarded.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    /// Stages to forward (default `ResponseComplete` and `Panic`: one event per request).
    #[serde(default = "default_stages")]
    pub stages: Vec<String>,
    /// Verbs.
    #[serde(default)]
    pub verbs: Patterns,
    /// `objectRef.resource`.
    #[serde(default)]
    pub resources: Patterns,
    /// `objectRef.namespace` (events without a namespace are matched as `""`).
    #[serde(default)]
    pub namespaces: Patterns,
    /// `user.username`.
    #[serde(default)]
    pub users: Patterns,
    /// A Sigma `detection` block (selections and `condition`) that events must also match,
    /// e.g. `{sel: {verb: [create, delete]}, condition: sel}`.
    #[serde(default)]
    pub detection: Option<serde_yaml_ng::Value>,
}

impl Default for RawFilter {
    fn default() -> Self {
        RawFilter {
            stages: default_stages(),
            verbs: Patterns::default(),
            resources: Patterns::default(),
            namespaces: Patterns::default(),
            users: Patterns::default(),
            detection: None,
        }
    }
}

/// Compiles a Sigma `detection` block into a one-rule set.
pub fn compile_detection(det: &serde_yaml_ng::Value) -> Result<crate::rules::RuleSet, Vec<String>> {
    let det_text = serde_yaml_ng::to_string(det).map_err(|e| vec![e.to_string()])?;
    let indented: String = det_text.lines().map(|l| format!("  {l}\n")).collect();
    let doc = format!(
        "title: raw forwarding filter\nid: 00000000-0000-4000-8000-00000000f11e\nlevel: informational\nlogsource: {{product: kubernetes, service: audit}}\ndetection:\n{indented}"
    );
    let label = "raw_forwarding.filter.detection";
    match crate::rules::RuleSet::from_texts(&[(label, &doc)], &[], false) {
        Ok((set, _warnings)) if set.rules().len() == 1 => Ok(set),
        Ok((_, warnings)) => Err(if warnings.is_empty() {
            vec![format!("`{label}` did not compile into a rule")]
        } else {
            warnings
                .iter()
                .map(|w| format!("`{label}`: {}", w.message))
                .collect()
        }),
        Err(errs) => Err(errs
            .iter()
            .map(|e| format!("`{label}`: {}", e.message))
            .collect()),
    }
}

impl RawFilter {
    /// Whether `ev` is forwarded.
    pub fn accepts(&self, ev: &AuditEvent<'_>) -> bool {
        let ns = ev
            .fields
            .object_ref
            .as_ref()
            .and_then(|o| o.namespace.as_deref())
            .unwrap_or("");
        (self.stages.is_empty()
            || self
                .stages
                .iter()
                .any(|s| Stage::from_name(s) == ev.stage()))
            && self.verbs.accepts(ev.verb())
            && self.resources.accepts(ev.resource())
            && self.namespaces.accepts(ns)
            && self.users.accepts(ev.username())
    }
}

/// A destination for raw events.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawSinkConfig {
    /// Splunk HEC; the sourcetype defaults to `kube:apiserver:audit`.
    SplunkHec(SplunkHecConfig),
    /// Elasticsearch/OpenSearch; the data stream defaults to `logs-audithawk.audit-default`.
    Elasticsearch(ElasticsearchConfig),
}

/// `raw_forwarding:` in the config.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawForwardConfig {
    /// Off by default.
    #[serde(default)]
    pub enabled: bool,
    /// Which events.
    #[serde(default)]
    pub filter: RawFilter,
    /// Where to.
    #[serde(default)]
    pub sinks: Vec<RawSinkConfig>,
}

impl RawForwardConfig {
    /// Problems, naming the key under `raw_forwarding`.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.enabled && self.sinks.is_empty() {
            p.push(
                "`raw_forwarding.sinks` must name at least one sink when `enabled` is true"
                    .to_string(),
            );
        }
        if let Some(det) = &self.filter.detection {
            if let Err(e) = compile_detection(det) {
                p.extend(e);
            }
        }
        for s in &self.filter.stages {
            if Stage::parse_config(s).is_none() {
                p.push(format!(
                    "`raw_forwarding.filter.stages`: unknown stage {s:?}"
                ));
            }
        }
        for (i, s) in self.sinks.iter().enumerate() {
            let prefix = format!("raw_forwarding.sinks[{i}]");
            match s {
                RawSinkConfig::SplunkHec(c) => {
                    p.extend(c.validate(&prefix));
                    p.extend(c.delivery.validate(&prefix));
                }
                RawSinkConfig::Elasticsearch(c) => {
                    p.extend(c.validate(&prefix));
                    p.extend(c.delivery.validate(&prefix));
                }
            }
        }
        p
    }
}

/// Forwards accepted audit events to the raw sinks.
#[derive(Debug)]
pub struct RawForwarder {
    filter: RawFilter,
    /// The compiled `filter.detection`, if any.
    sigma: Option<crate::rules::RuleSet>,
    drivers: Vec<SinkDriver<AuditRecord>>,
    metrics: Arc<Metrics>,
}

impl RawForwarder {
    /// Starts the raw sinks (health checks, buffers); `None` when forwarding is off.
    pub async fn start(
        cfg: &RawForwardConfig,
        metrics: Arc<Metrics>,
        state_dir: &Path,
    ) -> Result<Option<RawForwarder>, SinkBuildError> {
        if !cfg.enabled {
            return Ok(None);
        }
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(SinkBuildError::Invalid(problems));
        }
        let mut drivers = Vec::new();
        for s in &cfg.sinks {
            let (sink, delivery, name): (Arc<dyn Sink<AuditRecord>>, _, String) = match s {
                RawSinkConfig::SplunkHec(c) => {
                    let name = format!("raw-{}", c.name());
                    let mut c2 = c.clone();
                    c2.name = Some(name.clone());
                    let st = if c.sourcetype == "audithawk:alert" {
                        "kube:apiserver:audit"
                    } else {
                        c.sourcetype.as_str()
                    };
                    let sink = SplunkHecSink::new(&c2)
                        .map_err(|e| SinkBuildError::Build {
                            sink: name.clone(),
                            reason: e.to_string(),
                        })?
                        .with_sourcetype(st);
                    (Arc::new(sink), c.delivery.clone(), name)
                }
                RawSinkConfig::Elasticsearch(c) => {
                    let name = format!("raw-{}", c.name());
                    let mut c2 = c.clone();
                    c2.name = Some(name.clone());
                    let ix = if c.index == "logs-audithawk.alert-default" {
                        "logs-audithawk.audit-default"
                    } else {
                        c.index.as_str()
                    };
                    let sink = ElasticsearchSink::new(&c2)
                        .map_err(|e| SinkBuildError::Build {
                            sink: name.clone(),
                            reason: e.to_string(),
                        })?
                        .with_index(ix, c.mode);
                    (Arc::new(sink), c.delivery.clone(), name)
                }
            };
            check_health(&*sink).await?;
            let opts = delivery.options(super::Route::default(), &name, state_dir);
            drivers.push(
                SinkDriver::start(sink, opts, metrics.clone())
                    .map_err(|source| SinkBuildError::Driver { sink: name, source })?,
            );
        }
        let sigma = match &cfg.filter.detection {
            Some(d) => Some(compile_detection(d).map_err(SinkBuildError::Invalid)?),
            None => None,
        };
        Ok(Some(RawForwarder {
            sigma,
            filter: cfg.filter.clone(),
            drivers,
            metrics,
        }))
    }

    /// Whether `ev` passes the filter.
    pub fn accepts(&self, ev: &AuditEvent<'_>) -> bool {
        self.filter.accepts(ev)
            && self
                .sigma
                .as_ref()
                .is_none_or(|s| s.rules().iter().all(|r| r.matches(ev)))
    }

    /// Filters, redacts and queues `ev` to every raw sink (waits on full buffers).
    pub async fn offer(&self, ev: &AuditEvent<'_>) {
        if !self.accepts(ev) {
            return;
        }
        let Some(rec) = record(ev) else {
            self.metrics.count(
                "audithawk_raw_forward_failed_total",
                &[("reason", "encode")],
                1,
            );
            return;
        };
        for d in &self.drivers {
            if d.submit(rec.clone()).await.is_err() {
                tracing::error!(sink = %d.name(), "Raw sink stopped; audit event not queued.");
            }
        }
        self.metrics.count("audithawk_raw_forwarded_total", &[], 1);
    }

    /// Shuts the raw sinks down within `deadline`.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        let all = self.drivers.into_iter().map(|d| d.shutdown(deadline));
        futures_util::future::join_all(all)
            .await
            .into_iter()
            .all(|ok| ok)
    }
}

/// The redacted record of `ev`. Its id is `auditID/stage`, so a re-send cannot duplicate.
pub fn record(ev: &AuditEvent<'_>) -> Option<AuditRecord> {
    let text = redacted_text(ev)?.into_owned();
    let event = RawValue::from_string(text).ok()?;
    let id = if ev.audit_id().is_empty() {
        format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(ev.raw.text().as_bytes())
        )
    } else {
        format!("{}/{}", ev.audit_id(), ev.stage().as_str())
    };
    Some(Arc::new(AuditEventRecord {
        id,
        time: ev.event_time(),
        cluster: ev.cluster.as_deref().map(str::to_string),
        event,
    }))
}

/// The event's JSON text with secrets redacted ([`crate::model::redact::redact_event`]);
/// `None` only if the redacted value cannot be re-encoded.
pub fn redacted_text<'e>(ev: &'e AuditEvent<'_>) -> Option<std::borrow::Cow<'e, str>> {
    let f = &ev.fields;
    let uri_clean = matches!(
        crate::model::redact::redact_uri(f.request_uri.as_deref().unwrap_or("")),
        std::borrow::Cow::Borrowed(_)
    );
    // Fast path: without bodies and with a clean URI there is nothing to redact (that is
    // what `redact_event` looks at), so the text as received is forwarded without a
    // parse and re-serialisation. Metadata-level events, the common case, take it.
    if f.request_object.is_none() && f.response_object.is_none() && uri_clean {
        Some(std::borrow::Cow::Borrowed(ev.raw.text()))
    } else {
        let mut v = ev.raw.value().clone();
        crate::model::redact::redact_event(&mut v);
        serde_json::to_string(&v).ok().map(std::borrow::Cow::Owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_and_redact() {
        let ev = AuditEvent::parse(
            r#"{"auditID":"a","stage":"ResponseComplete","verb":"get","user":{"username":"alice"},
               "objectRef":{"resource":"secrets","namespace":"prod"},
               "requestURI":"/api/v1/namespaces/prod/secrets/s?token=hunter2",
               "responseObject":{"kind":"Secret","data":{"k":"c2VjcmV0"}}}"#,
        )
        .unwrap();
        let mut f = RawFilter::default();
        assert!(f.accepts(&ev));
        f.namespaces.exclude = vec!["kube-*".into()];
        assert!(f.accepts(&ev));
        f.users.include = vec!["system:*".into()];
        assert!(!f.accepts(&ev));
        f.users.include.clear();
        f.stages = vec!["RequestReceived".into()];
        assert!(!f.accepts(&ev));
        let set = compile_detection(
            &serde_yaml_ng::from_str(
                "{sel: {objectRef.resource: secrets, verb|contains: ge}, condition: sel}",
            )
            .unwrap(),
        )
        .unwrap();
        assert!(set.rules()[0].matches(&ev));
        let bad = compile_detection(
            &serde_yaml_ng::from_str("{sel: {verb: get}, condition: nope}").unwrap(),
        );
        assert!(bad
            .unwrap_err()
            .join(" ")
            .contains("raw_forwarding.filter.detection"));
        let r = record(&ev).unwrap();
        let text = r.event.get();
        assert!(
            !text.contains("hunter2") && !text.contains("c2VjcmV0"),
            "{text}"
        );
        assert_eq!(r.id, "a/ResponseComplete");
        // The fast path (nothing to redact) forwards the text unchanged.
        let plain = r#"{"auditID":"b","stage":"ResponseComplete","verb":"get","requestURI":"/api/v1/pods?limit=5"}"#;
        assert_eq!(
            record(&AuditEvent::parse(plain).unwrap())
                .unwrap()
                .event
                .get(),
            plain
        );
    }
}
