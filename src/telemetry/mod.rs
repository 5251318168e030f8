//! Metrics and logging set-up.
//!
//! Hot-path counters are plain atomics (one relaxed add per event); labelled families live in
//! a small registry keyed by (name, labels) and are only touched per batch or per alert.
//! `/metrics` renders everything as Prometheus text. Labels are low-cardinality by design:
//! source, reason, rule id, level, sink, cluster, never user or namespace.

pub mod http;
pub mod logging;
pub mod otel;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use dashmap::DashMap;

use crate::model::Level;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Adds `d` (may be negative).
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

type Labels = Vec<(&'static str, String)>;

/// The registry key of `name{labels}`.
fn key(name: &'static str, labels: &[(&'static str, &str)]) -> (&'static str, Labels) {
    (
        name,
        labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
    )
}

/// Every metric audithawk exports (names and labels documented in docs/operations.md).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events skipped as exact duplicates.
    pub duplicates: Counter,
    /// Events at a stage no rule looks at.
    pub stage_skipped: Counter,
    /// Events evaluated by the rules.
    pub evaluated: Counter,
    /// Batches waiting in the pipeline queue.
    pub queue_depth: Gauge,
    counters: DashMap<(&'static str, Labels), Counter>,
    gauges: DashMap<(&'static str, Labels), Gauge>,
    help: DashMap<&'static str, &'static str>,
}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Adds `n` to the counter `name{labels}`.
    pub fn count(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        let key = key(name, labels);
        if let Some(c) = self.counters.get(&key) {
            c.add(n);
            return;
        }
        self.counters.entry(key).or_default().add(n);
    }

    /// The value of `name{labels}` (0 when never counted).
    pub fn value(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let key = key(name, labels);
        self.counters.get(&key).map_or(0, |c| c.get())
    }

    /// Adds `d` (may be negative) to the labelled gauge `name{labels}`.
    pub fn gauge_add(&self, name: &'static str, labels: &[(&'static str, &str)], d: i64) {
        let key = key(name, labels);
        self.gauges.entry(key).or_default().add(d);
    }

    /// Sets the labelled gauge `name{labels}` to `v`.
    pub fn gauge_set(&self, name: &'static str, labels: &[(&'static str, &str)], v: i64) {
        let key = key(name, labels);
        self.gauges.entry(key).or_default().set(v);
    }

    /// The value of the labelled gauge `name{labels}` (0 when never set).
    pub fn gauge_value(&self, name: &'static str, labels: &[(&'static str, &str)]) -> i64 {
        let key = key(name, labels);
        self.gauges.get(&key).map_or(0, |g| g.get())
    }

    /// Sum of `name` over all label sets.
    pub fn total(&self, name: &'static str) -> u64 {
        self.counters
            .iter()
            .filter(|e| e.key().0 == name)
            .map(|e| e.value().get())
            .sum()
    }

    /// Sum of `name` over the label sets where `label` equals `value`.
    pub fn sum_where(&self, name: &'static str, label: &str, value: &str) -> u64 {
        self.counters
            .iter()
            .filter(|e| {
                e.key().0 == name && e.key().1.iter().any(|(k, v)| *k == label && v == value)
            })
            .map(|e| e.value().get())
            .sum()
    }

    /// Registers help text for a family.
    pub fn describe(&self, name: &'static str, help: &'static str) {
        self.help.insert(name, help);
    }

    /// Events received from `source` (webhook, tail, scan).
    pub fn received(&self, source: &str, n: u64) {
        self.count("audithawk_events_received_total", &[("source", source)], n);
    }

    /// Records rejected from `source` for `reason`.
    pub fn rejected(&self, source: &str, reason: &str, n: u64) {
        self.count(
            "audithawk_events_rejected_total",
            &[("source", source), ("reason", reason)],
            n,
        );
    }

    /// One alert fired.
    pub fn alert(&self, rule_id: &str, level: Level) {
        self.count(
            "audithawk_alerts_total",
            &[("rule", rule_id), ("level", level.as_str())],
            1,
        );
    }

    /// Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let simple: [(&str, &str, &str, i128); 4] = [
            (
                "audithawk_duplicates_total",
                "counter",
                "Events dropped as exact duplicates of a recent event.",
                self.duplicates.get() as i128,
            ),
            (
                "audithawk_stage_skipped_total",
                "counter",
                "Events at a stage no rule looks at (e.g. RequestReceived).",
                self.stage_skipped.get() as i128,
            ),
            (
                "audithawk_events_evaluated_total",
                "counter",
                "Events evaluated by the rules.",
                self.evaluated.get() as i128,
            ),
            (
                "audithawk_queue_depth",
                "gauge",
                "Batches waiting in the pipeline queue.",
                self.queue_depth.get() as i128,
            ),
        ];
        for (name, kind, help, v) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        let mut families: BTreeMap<(&str, &str), Vec<(String, i128)>> = BTreeMap::new();
        let render = |labels: &Labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect::<Vec<_>>()
                .join(",")
        };
        for e in self.counters.iter() {
            let (name, labels) = e.key();
            families
                .entry((name, "counter"))
                .or_default()
                .push((render(labels), e.value().get() as i128));
        }
        for e in self.gauges.iter() {
            let (name, labels) = e.key();
            families
                .entry((name, "gauge"))
                .or_default()
                .push((render(labels), e.value().get() as i128));
        }
        for ((name, kind), mut series) in families {
            series.sort();
            let help = self
                .help
                .get(name)
                .map(|h| *h)
                .unwrap_or_else(|| default_help(name));
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in series {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
        out
    }
}

fn default_help(name: &str) -> &'static str {
    match name {
        "audithawk_events_received_total" => "Audit events accepted, by source.",
        "audithawk_events_rejected_total" => "Records rejected, by source and reason.",
        "audithawk_alerts_total" => "Alerts fired, by rule and level.",
        "audithawk_http_requests_total" => "Webhook HTTP requests, by path kind and status code.",
        _ => "audithawk counter.",
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families() {
        let m = Metrics::new();
        m.received("webhook", 3);
        m.rejected("webhook", "invalid", 1);
        m.alert("r1", Level::High);
        m.duplicates.inc();
        let t = m.render_prometheus();
        assert!(
            t.contains("audithawk_events_received_total{source=\"webhook\"} 3"),
            "{t}"
        );
        assert!(t.contains("audithawk_alerts_total{rule=\"r1\",level=\"high\"} 1"));
        assert!(t.contains("audithawk_duplicates_total 1"));
        assert_eq!(m.total("audithawk_events_received_total"), 3);
    }
}
