//! Black-box tests of the stateful engine: Sigma correlations, baselines, event time,
//! lateness, bounded state, snapshots, suppression and exceptions.
//!
//! The stateless rule engine is not needed: tests pass the indices of the "matching" base
//! rules directly, as the engine does after stateless evaluation.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use audithawk::engine::correlate::{Correlator, ListCatalog};
use audithawk::engine::state::{StateConfig, Tuning};
use audithawk::model::{Alert, AuditEvent};
use audithawk::rules::correlation::parse_correlation;
use audithawk::telemetry::Metrics;
use proptest::prelude::*;
use serde_json::Value;

/// Base rules of the tests: index 0 `secrets_read`, 1 `denied`, 2 `exec`, 3 `bind`,
/// 4 `create_pod`, 5 `login_ok`.
fn catalog() -> ListCatalog {
    ListCatalog(
        [
            "secrets_read",
            "denied",
            "exec",
            "bind",
            "create_pod",
            "login_ok",
        ]
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("id-{i}"), Some(n.to_string())))
        .collect(),
    )
}

fn defs(yaml: &str) -> Vec<audithawk::rules::correlation::CorrelationDef> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| {
            let v: serde_yaml_ng::Value = serde::Deserialize::deserialize(d).expect("yaml");
            parse_correlation("test.yml", None, &v).expect("valid correlation")
        })
        .collect()
}

fn cfg() -> StateConfig {
    StateConfig {
        allowed_lateness: Duration::from_secs(30),
        metrics: Arc::new(Metrics::new()),
        ..StateConfig::default()
    }
}

fn correlator(yaml: &str, cfg: StateConfig) -> Correlator {
    Correlator::from_defs(defs(yaml), &catalog(), cfg).expect("correlator")
}

/// One event at `secs` after 2026-01-01T00:00:00Z (microsecond precision).
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    us: i64,
    id: String,
    user: String,
    ns: String,
    cluster: Option<String>,
    rules: Vec<usize>,
}

fn ev(secs: f64, id: &str, user: &str, ns: &str, rules: &[usize]) -> Ev {
    Ev {
        us: (secs * 1e6).round() as i64,
        id: id.into(),
        user: user.into(),
        ns: ns.into(),
        cluster: None,
        rules: rules.to_vec(),
    }
}

const BASE_US: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

fn json_of(e: &Ev) -> String {
    let ts = chrono::DateTime::from_timestamp_micros(BASE_US + e.us)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": e.id, "stage": "ResponseComplete", "verb": "get",
        "requestURI": format!("/api/v1/namespaces/{}/secrets", e.ns),
        "user": {"username": e.user, "groups": ["system:authenticated", "dev"]},
        "objectRef": {"resource": "secrets", "namespace": e.ns},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": ts, "stageTimestamp": ts,
    })
    .to_string()
}

fn feed(c: &Correlator, evs: &[Ev], out: &mut Vec<Alert>) {
    for e in evs {
        let text = json_of(e);
        let mut a = AuditEvent::parse(&text).unwrap();
        a.cluster = e.cluster.as_deref().map(Arc::from);
        c.observe(&e.rules, &a, out);
    }
}

fn run(c: &Correlator, evs: &[Ev]) -> Vec<Alert> {
    let mut out = Vec::new();
    feed(c, evs, &mut out);
    c.flush(&mut out);
    out
}

fn corr(a: &Alert) -> &Value {
    a.correlation.as_ref().expect("correlation object")
}

/// Order-independent summary of alerts: rule, alert id, correlation object.
fn summary(alerts: &[Alert]) -> BTreeSet<String> {
    alerts
        .iter()
        .map(|a| {
            format!(
                "{} {} {}",
                a.rule.id,
                a.event.id,
                a.correlation
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default()
            )
        })
        .collect()
}

const COUNT5: &str = "title: Many secret reads\nid: c-count\ncorrelation:\n  type: event_count\n  rules: [secrets_read]\n  group-by: [user.username]\n  timespan: 10m\n  condition: {gte: 5}\nlevel: high\n";

#[test]
fn event_count_fires_exactly_at_threshold_with_alert_content() {
    let c = correlator(COUNT5, cfg());
    let evs: Vec<Ev> = (0..4)
        .map(|i| {
            ev(
                i as f64 * 60.0,
                &format!("a{i}"),
                "mallory",
                &format!("ns{i}"),
                &[0],
            )
        })
        .collect();
    assert!(run(&c.fresh(), &evs).is_empty(), "4 events are below gte 5");
    let mut evs5 = evs.clone();
    evs5.push(ev(300.0, "a4", "mallory", "ns4", &[0]));
    let out = run(&c, &evs5);
    assert_eq!(out.len(), 1, "{out:?}");
    let a = &out[0];
    assert_eq!(a.rule.id, "c-count");
    assert_eq!(
        a.kubernetes.audit.audit_id, "a4",
        "built from the triggering event"
    );
    let o = corr(a);
    assert_eq!(o["type"], "event_count");
    assert_eq!(o["group"]["user.username"], "mallory");
    assert_eq!(o["count"], 5);
    assert_eq!(o["condition"]["gte"], 5);
    assert_eq!(o["window"]["start"], "2026-01-01T00:00:00.000000Z");
    assert_eq!(o["window"]["end"], "2026-01-01T00:05:00.000000Z");
    assert_eq!(
        o["auditIDs"],
        serde_json::json!(["a0", "a1", "a2", "a3", "a4"])
    );
    assert_eq!(o["auditIDsTotal"], 5);
    assert_eq!(a.timestamp, "2026-01-01T00:05:00.000000Z");
    assert!(
        a.message
            .contains("5 events for user.username=mallory within 10m"),
        "{}",
        a.message
    );
}

/// Regression guard for the window edge: an event exactly one timespan before the newest
/// one is outside the window; one microsecond later it is inside.
#[test]
fn event_exactly_at_window_edge_is_outside() {
    let c = correlator(COUNT5, cfg());
    // Events at 0, 591..593 and 600: at 600 the window is (0 s, 600 s], so the event at
    // exactly 0 is out: four events, no alert.
    let edge: Vec<Ev> = vec![ev(0.0, "e0", "u", "n", &[0])]
        .into_iter()
        .chain((1..4).map(|i| ev(590.0 + i as f64, &format!("e{i}"), "u", "n", &[0])))
        .chain([ev(600.0, "e5", "u", "n", &[0])])
        .collect();
    assert!(run(&c.fresh(), &edge).is_empty());
    let inside: Vec<Ev> = vec![ev(0.000001, "e0", "u", "n", &[0])]
        .into_iter()
        .chain((1..4).map(|i| ev(590.0 + i as f64, &format!("e{i}"), "u", "n", &[0])))
        .chain([ev(600.0, "e5", "u", "n", &[0])])
        .collect();
    assert_eq!(run(&c.fresh(), &inside).len(), 1);
}

#[test]
fn groups_are_separate_and_include_the_cluster() {
    let c = correlator(COUNT5, cfg());
    let mut evs = Vec::new();
    for i in 0..5 {
        let mut e = ev(i as f64, &format!("p{i}"), "alice", "n", &[0]);
        e.cluster = Some(if i % 2 == 0 { "prod" } else { "stage" }.into());
        evs.push(e);
        evs.push(ev(
            i as f64 + 0.5,
            &format!("b{i}"),
            if i < 3 { "bob" } else { "carol" },
            "n",
            &[0],
        ));
    }
    assert!(
        run(&c, &evs).is_empty(),
        "no single (cluster, user) reaches 5"
    );
}

const SWEEP: &str = "title: Secret sweep\nid: c-sweep\ncorrelation:\n  type: value_count\n  rules: [secrets_read]\n  group-by: [user.username]\n  timespan: 10m\n  condition: {field: objectRef.namespace, gte: 3}\nlevel: high\n";

#[test]
fn value_count_counts_distinct_values() {
    let c = correlator(SWEEP, cfg());
    let evs = vec![
        ev(0.0, "v0", "eve", "a", &[0]),
        ev(1.0, "v1", "eve", "a", &[0]),
        ev(2.0, "v2", "eve", "b", &[0]),
        ev(3.0, "v3", "eve", "b", &[0]),
    ];
    assert!(run(&c.fresh(), &evs).is_empty(), "two distinct namespaces");
    let mut evs3 = evs.clone();
    evs3.push(ev(4.0, "v4", "eve", "c", &[0]));
    let out = run(&c, &evs3);
    assert_eq!(out.len(), 1);
    let o = corr(&out[0]);
    assert_eq!(o["count"], 3);
    assert_eq!(o["field"], "objectRef.namespace");
    assert_eq!(o["values"], serde_json::json!(["a", "b", "c"]));
    assert_eq!(o["auditIDsTotal"], 5);
}

#[test]
fn group_by_a_list_field_makes_one_group_per_value() {
    let y = "title: g\nid: c-groups\ncorrelation: {type: event_count, rules: [secrets_read], group-by: [user.groups], timespan: 1m, condition: {gte: 2}}\n";
    let c = correlator(y, cfg());
    // Every event's user has groups [system:authenticated, dev]: two groups, both reach 2.
    let out = run(
        &c,
        &[ev(0.0, "x0", "a", "n", &[0]), ev(1.0, "x1", "b", "n", &[0])],
    );
    let groups: BTreeSet<String> = out
        .iter()
        .map(|a| {
            corr(a)["group"]["user.groups"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        groups,
        ["dev", "system:authenticated"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let ids: BTreeSet<&str> = out.iter().map(|a| a.event.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "distinct alert ids per group");
}

#[test]
fn temporal_and_temporal_ordered() {
    let y = "title: t\nid: c-temporal\ncorrelation: {type: temporal, rules: [bind, create_pod], group-by: [user.username], timespan: 5m}\n---\ntitle: o\nid: c-ordered\ncorrelation: {type: temporal_ordered, rules: [bind, create_pod], group-by: [user.username], timespan: 5m}\n";
    let c = correlator(y, cfg());
    // create_pod then bind: temporal fires, ordered does not.
    let out = run(
        &c.fresh(),
        &[ev(0.0, "p", "u", "n", &[4]), ev(10.0, "b", "u", "n", &[3])],
    );
    let rules: Vec<&str> = out.iter().map(|a| a.rule.id.as_str()).collect();
    assert_eq!(rules, ["c-temporal"]);
    // bind then create_pod: both.
    let out = run(
        &c.fresh(),
        &[ev(0.0, "b", "u", "n", &[3]), ev(10.0, "p", "u", "n", &[4])],
    );
    let mut rules: Vec<&str> = out.iter().map(|a| a.rule.id.as_str()).collect();
    rules.sort();
    assert_eq!(rules, ["c-ordered", "c-temporal"]);
    let seq = &corr(out.iter().find(|a| a.rule.id == "c-ordered").unwrap())["sequence"];
    assert_eq!(seq[0]["rule"], "bind");
    assert_eq!(seq[1]["auditID"], "p");
    // Exactly one timespan apart: outside.
    assert!(run(
        &c.fresh(),
        &[ev(0.0, "b", "u", "n", &[3]), ev(300.0, "p", "u", "n", &[4])]
    )
    .is_empty());
    // Different users: no correlation.
    assert!(run(
        &c.fresh(),
        &[ev(0.0, "b", "u", "n", &[3]), ev(1.0, "p", "v", "n", &[4])]
    )
    .is_empty());
}

/// The spec's flagship chain: many failures followed by a success, with the inner
/// correlation quiet on its own (`generate` defaults to false).
#[test]
fn chained_correlation_of_correlations() {
    let y = "title: Failures then success\nid: c-outer\ncorrelation:\n  type: temporal_ordered\n  rules: [many_denied, login_ok]\n  group-by: [user.username]\n  timespan: 10m\nlevel: high\n---\ntitle: Many denied\nid: c-inner\nname: many_denied\ncorrelation:\n  type: event_count\n  rules: [denied]\n  group-by: [user.username]\n  timespan: 10m\n  condition: {gte: 3}\n";
    let c = correlator(y, cfg());
    assert!(
        c.suppressed_generate(1),
        "`denied` is referenced without generate: its own alerts are suppressed"
    );
    assert!(c.suppressed_generate(5));
    assert!(!c.suppressed_generate(0));
    let evs = vec![
        ev(0.0, "d0", "u", "n", &[1]),
        ev(1.0, "d1", "u", "n", &[1]),
        ev(2.0, "d2", "u", "n", &[1]),
        ev(3.0, "ok", "u", "n", &[5]),
    ];
    let out = run(&c, &evs);
    assert_eq!(
        out.iter().map(|a| a.rule.id.as_str()).collect::<Vec<_>>(),
        ["c-outer"],
        "inner does not alert on its own"
    );
    // The success before the third failure does not complete the sequence.
    let evs = vec![
        ev(0.0, "d0", "u", "n", &[1]),
        ev(1.0, "d1", "u", "n", &[1]),
        ev(1.5, "ok", "u", "n", &[5]),
        ev(2.0, "d2", "u", "n", &[1]),
    ];
    assert!(run(&c.fresh(), &evs).is_empty());
}

#[test]
fn generate_true_keeps_referenced_rules_alerting() {
    let y = "title: t\nid: c-gen\ngenerate: true\ncorrelation: {type: event_count, rules: [denied], group-by: [user.username], timespan: 1m, condition: {gte: 2}}\n";
    let c = correlator(y, cfg());
    assert!(!c.suppressed_generate(1));
}

#[test]
fn aliases_group_across_fields() {
    let y = "title: a\nid: c-alias\ncorrelation:\n  type: temporal\n  rules: [bind, exec]\n  group-by: [who]\n  timespan: 5m\n  aliases:\n    who:\n      bind: user.username\n      exec: objectRef.namespace\n";
    let c = correlator(y, cfg());
    // bind by user "x", exec in namespace "x": same alias value.
    let out = run(
        &c,
        &[
            ev(0.0, "b", "x", "other", &[3]),
            ev(1.0, "e", "someone", "x", &[2]),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(corr(&out[0])["group"]["who"], "x");
}

#[test]
fn upper_bounded_condition_is_decided_when_the_window_closes() {
    let y = "title: few\nid: c-few\ncorrelation: {type: event_count, rules: [secrets_read], group-by: [user.username], timespan: 1m, condition: {gt: 1, lte: 2}}\n";
    let c = correlator(y, cfg());
    let mut out = Vec::new();
    feed(
        &c,
        &[
            ev(0.0, "f0", "u", "n", &[0]),
            ev(10.0, "f1", "u", "n", &[0]),
        ],
        &mut out,
    );
    assert!(out.is_empty(), "undecided while the window is open");
    // Another user's events move the watermark past the window end (0 + 60 s + lateness).
    feed(&c, &[ev(100.0, "z", "other", "n", &[0])], &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(corr(&out[0])["count"], 2);
    assert_eq!(
        corr(&out[0])["window"]["end"],
        "2026-01-01T00:01:00.000000Z"
    );
    // Three events: above the range, never fires.
    let out = run(
        &c.fresh(),
        &[
            ev(0.0, "f0", "u", "n", &[0]),
            ev(1.0, "f1", "u", "n", &[0]),
            ev(2.0, "f2", "u", "n", &[0]),
        ],
    );
    assert!(out.is_empty());
}

#[test]
fn out_of_order_within_lateness_is_placed_in_order() {
    let c = correlator(COUNT5, cfg());
    let sorted: Vec<Ev> = (0..5)
        .map(|i| ev(i as f64 * 5.0, &format!("o{i}"), "u", "n", &[0]))
        .collect();
    let mut shuffled = sorted.clone();
    shuffled.swap(0, 4); // 20 s early arrival: within the 30 s lateness
    let a = run(&c.fresh(), &sorted);
    let b = run(&c.fresh(), &shuffled);
    assert_eq!(summary(&a), summary(&b));
    assert_eq!(
        corr(&b[0])["auditIDs"],
        serde_json::json!(["o0", "o1", "o2", "o3", "o4"])
    );
}

#[test]
fn late_beyond_lateness_is_applied_if_held_else_counted() {
    let m = Arc::new(Metrics::new());
    let c = correlator(
        COUNT5,
        StateConfig {
            metrics: m.clone(),
            ..cfg()
        },
    );
    let mut out = Vec::new();
    // Four events, then time jumps 100 s ahead (watermark = 70 s).
    let mut evs: Vec<Ev> = (0..4)
        .map(|i| ev(50.0 + i as f64, &format!("l{i}"), "u", "n", &[0]))
        .collect();
    evs.push(ev(100.0, "jump", "other", "n", &[0]));
    feed(&c, &evs, &mut out);
    // 60 s is before the watermark (late), but the group still holds its window: applied.
    feed(&c, &[ev(60.0, "late", "u", "n", &[0])], &mut out);
    assert_eq!(out.len(), 1, "the late event completes the count");
    assert_eq!(
        m.value(
            "audithawk_correlation_late_total",
            &[("rule", "c-count"), ("outcome", "applied")]
        ),
        1
    );
    // An event whose whole window has passed the watermark is counted as too late.
    feed(&c, &[ev(-600.0, "ancient", "nobody", "n", &[0])], &mut out);
    assert_eq!(
        m.value(
            "audithawk_correlation_late_total",
            &[("rule", "c-count"), ("outcome", "too_late")]
        ),
        1
    );
    assert_eq!(out.len(), 1);
}

#[test]
fn new_terms_learning_first_seen_and_history() {
    let y = "title: New exec identity\nid: c-new\ncorrelation: {type: new_terms, rules: [exec], fields: [user.username, objectRef.namespace], history: 1d, learning: 1h}\nlevel: medium\n";
    let c = correlator(y, cfg());
    let h = 3600.0;
    let evs = vec![
        ev(0.0, "n0", "alice", "prod", &[2]),        // learning
        ev(h - 1.0, "n1", "bob", "prod", &[2]),      // learning
        ev(h, "n2", "alice", "prod", &[2]),          // known
        ev(h + 1.0, "n3", "alice", "dev", &[2]),     // new tuple
        ev(h + 2.0, "n4", "alice", "dev", &[2]),     // now known
        ev(h + 86_400.0, "n5", "bob", "prod", &[2]), // last seen > 1d ago: new again
    ];
    let out = run(&c, &evs);
    let ids: Vec<&str> = out
        .iter()
        .map(|a| a.kubernetes.audit.audit_id.as_str())
        .collect();
    assert_eq!(ids, ["n3", "n5"]);
    let o = corr(&out[0]);
    assert_eq!(o["type"], "new_terms");
    assert_eq!(o["fields"]["objectRef.namespace"], "dev");
    assert_eq!(o["history"], "1d");
}

#[test]
fn suppression_holds_repeats_and_reports_their_count() {
    let y = "title: s\nid: c-supp\nsuppress: 10m\ncorrelation: {type: event_count, rules: [denied], group-by: [user.username], timespan: 1m, condition: {gte: 2}}\n";
    let m = Arc::new(Metrics::new());
    let c = correlator(
        y,
        StateConfig {
            metrics: m.clone(),
            ..cfg()
        },
    );
    // Fires at 1, 3, 5 (each pair resets the group), then at 601 after the interval.
    let evs: Vec<Ev> = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 600.0, 601.0]
        .iter()
        .enumerate()
        .map(|(i, t)| ev(*t, &format!("s{i}"), "u", "n", &[1]))
        .collect();
    let out = run(&c, &evs);
    assert_eq!(
        out.len(),
        2,
        "{:?}",
        out.iter().map(|a| &a.message).collect::<Vec<_>>()
    );
    assert_eq!(corr(&out[0])["suppressedRepeats"], 0);
    assert_eq!(corr(&out[1])["suppressedRepeats"], 2);
    assert_eq!(
        m.value("audithawk_suppressed_total", &[("rule", "c-supp")]),
        2
    );
}

#[test]
fn exceptions_rule_level_and_global_with_expand() {
    let y = "title: e\nid: c-exc\ncorrelation: {type: event_count, rules: [secrets_read], group-by: [user.username], timespan: 1m, condition: {gte: 2}}\nexceptions:\n  - name: ci\n    match: {user.username: 'system:serviceaccount:ci:*'}\n";
    let mut lists = HashMap::new();
    lists.insert("backup_ns".to_string(), vec!["velero".to_string()]);
    let tuning: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "exceptions:\n  - name: backups\n    rules: ['*']\n    match:\n      objectRef.namespace|expand: '%backup_ns%'\n",
    )
    .unwrap();
    let m = Arc::new(Metrics::new());
    let c = correlator(
        y,
        StateConfig {
            tuning: Tuning::from_yaml(&tuning).unwrap(),
            lists,
            metrics: m.clone(),
            ..cfg()
        },
    );
    let pair =
        |user: &str, ns: &str| vec![ev(0.0, "x", user, ns, &[0]), ev(1.0, "y", user, ns, &[0])];
    assert!(
        run(&c.fresh(), &pair("system:serviceaccount:ci:builder", "n")).is_empty(),
        "rule-level exception"
    );
    assert!(
        run(&c.fresh(), &pair("alice", "velero")).is_empty(),
        "global exception via expand list"
    );
    assert_eq!(run(&c.fresh(), &pair("alice", "prod")).len(), 1);
    // An unknown list is a load error naming it.
    let bad: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "exceptions:\n  - rules: ['*']\n    match: {user.username|expand: '%nope%'}\n",
    )
    .unwrap();
    let e = Correlator::from_defs(
        defs(y),
        &catalog(),
        StateConfig {
            tuning: Tuning::from_yaml(&bad).unwrap(),
            ..cfg()
        },
    )
    .unwrap_err();
    assert!(e[0].message.contains("nope"), "{e:?}");
}

#[test]
fn reference_errors_are_reported() {
    let y = "title: a\nid: a\ncorrelation: {type: temporal, rules: [b, missing_rule], group-by: [user.username], timespan: 1m}\n---\ntitle: b\nid: b\ncorrelation: {type: temporal, rules: [a, exec], group-by: [user.username], timespan: 1m}\n";
    let e = Correlator::from_defs(defs(y), &catalog(), cfg()).unwrap_err();
    let all: String = e.iter().map(|e| e.to_string() + "\n").collect();
    assert!(all.contains("missing_rule"), "{all}");
    assert!(all.contains("cycle"), "{all}");
}

/// A restart in the middle of a window loses neither counts, nor held records, nor
/// baselines.
#[test]
fn restart_mid_window_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let y = format!("{COUNT5}---\ntitle: n\nid: c-new\ncorrelation: {{type: new_terms, rules: [exec], fields: [user.username], history: 7d, learning: 1m}}\n");
    let evs: Vec<Ev> = (0..5)
        .map(|i| ev(i as f64 * 10.0, &format!("r{i}"), "u", "n", &[0, 2]))
        .chain([
            ev(120.0, "r-new", "v", "n", &[2]),
            ev(130.0, "r-known", "u", "n", &[2]),
        ])
        .collect();
    let whole = run(&correlator(&y, cfg()), &evs);
    assert_eq!(whole.len(), 2, "{whole:?}");
    for cut in 1..evs.len() {
        let first = correlator(&y, cfg());
        let mut out = Vec::new();
        feed(&first, &evs[..cut], &mut out);
        first.snapshot(&path).unwrap();
        drop(first);
        let second = correlator(&y, cfg());
        let st = second.restore(&path).unwrap();
        assert_eq!(st.dropped_rules, 0);
        feed(&second, &evs[cut..], &mut out);
        second.flush(&mut out);
        assert_eq!(summary(&out), summary(&whole), "cut after {cut} events");
    }
    // A changed definition drops that rule's state instead of misreading it.
    let changed = correlator(&y.replace("gte: 5", "gte: 6"), cfg());
    assert_eq!(changed.restore(&path).unwrap().dropped_rules, 1);
    // A corrupt file is an error naming the file, not a panic.
    std::fs::write(&path, b"{not json").unwrap();
    let e = correlator(&y, cfg())
        .restore(&path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("state.json"), "{e}");
    // A missing file is an empty state.
    assert_eq!(
        correlator(&y, cfg())
            .restore(&dir.path().join("absent"))
            .unwrap()
            .groups,
        0
    );
}

#[test]
fn memory_is_bounded_under_a_flood_of_distinct_keys() {
    let m = Arc::new(Metrics::new());
    let c = correlator(
        COUNT5,
        StateConfig {
            max_groups_per_rule: 1_600,
            metrics: m.clone(),
            ..cfg()
        },
    );
    let mut out = Vec::new();
    let evs: Vec<Ev> = (0..50_000)
        .map(|i| {
            ev(
                i as f64 * 0.001,
                &format!("f{i}"),
                &format!("rand-{i}"),
                "n",
                &[0],
            )
        })
        .collect();
    feed(&c, &evs, &mut out);
    c.flush(&mut out);
    let st = c.stats();
    assert!(st.groups <= 1_600, "groups {}", st.groups);
    let ev_total = m.value(
        "audithawk_correlation_evictions_total",
        &[("rule", "c-count")],
    );
    assert!(ev_total >= 40_000, "evictions counted: {ev_total}");
    // A real attacker group still fires while the flood goes on: the stalest were evicted,
    // not the active ones.
    let attack: Vec<Ev> = (0..5)
        .map(|i| {
            ev(
                50.0 + i as f64 * 0.0005,
                &format!("atk{i}"),
                "attacker",
                "n",
                &[0],
            )
        })
        .collect();
    let mut mixed = Vec::new();
    for (i, a) in attack.into_iter().enumerate() {
        mixed.push(a);
        mixed.extend((0..100).map(|j| {
            ev(
                50.0 + i as f64 * 0.0005 + j as f64 * 0.000001,
                &format!("g{i}-{j}"),
                &format!("x{i}-{j}"),
                "n",
                &[0],
            )
        }));
    }
    feed(&c, &mixed, &mut out);
    c.flush(&mut out);
    assert!(out
        .iter()
        .any(|a| corr(a)["group"]["user.username"] == "attacker"));

    // The byte cap alone also bounds state, reorder buffers included (30 s of lateness at
    // 1000 events/s would otherwise hold 30,000 events).
    let m = Arc::new(Metrics::new());
    let c = correlator(
        COUNT5,
        StateConfig {
            max_state_bytes: 1 << 20,
            metrics: m.clone(),
            ..cfg()
        },
    );
    feed(&c, &evs, &mut Vec::new());
    assert!(c.stats().bytes <= 1 << 20, "bytes {}", c.stats().bytes);
    assert!(m.value("audithawk_correlation_early_release_total", &[]) > 0);
    assert!(
        c.stats().groups > 1_000,
        "still holding state: {:?}",
        c.stats()
    );
}

/// An idle cluster's held records are released after the lateness on the wall clock.
#[tokio::test(start_paused = true)]
async fn idle_cluster_is_flushed_after_lateness_on_the_wall_clock() {
    let c = correlator(COUNT5, cfg());
    let mut out = Vec::new();
    let evs: Vec<Ev> = (0..5)
        .map(|i| ev(i as f64, &format!("i{i}"), "u", "n", &[0]))
        .collect();
    feed(&c, &evs, &mut out);
    assert!(out.is_empty(), "held within the lateness");
    let now = || tokio::time::Instant::now().into_std();
    c.tick(now(), &mut out).unwrap();
    tokio::time::advance(Duration::from_secs(29)).await;
    c.tick(now(), &mut out).unwrap();
    assert!(out.is_empty(), "not idle for the lateness yet");
    tokio::time::advance(Duration::from_secs(1)).await;
    c.tick(now(), &mut out).unwrap();
    assert_eq!(out.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn tick_writes_periodic_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let c = correlator(
        COUNT5,
        StateConfig {
            state_dir: Some(dir.path().to_path_buf()),
            snapshot_interval: Duration::from_secs(60),
            ..cfg()
        },
    );
    let file = dir.path().join(audithawk::engine::state::SNAPSHOT_FILE);
    let now = || tokio::time::Instant::now().into_std();
    feed(&c, &[ev(0.0, "s0", "u", "n", &[0])], &mut Vec::new());
    c.tick(now(), &mut Vec::new()).unwrap();
    assert!(file.exists());
    let m1 = std::fs::metadata(&file).unwrap().len();
    feed(&c, &[ev(1.0, "s1", "v", "n", &[0])], &mut Vec::new());
    tokio::time::advance(Duration::from_secs(59)).await;
    c.tick(now(), &mut Vec::new()).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), m1, "not due yet");
    tokio::time::advance(Duration::from_secs(1)).await;
    c.tick(now(), &mut Vec::new()).unwrap();
    assert!(
        std::fs::metadata(&file).unwrap().len() > m1,
        "second group now in the snapshot"
    );
}

#[test]
fn two_threads_give_the_same_alerts_as_one() {
    let y = format!("{COUNT5}---\n{SWEEP}");
    let c1 = correlator(&y, cfg());
    let evs: Vec<Ev> = (0..4000)
        .map(|i| {
            ev(
                i as f64 * 0.01,
                &format!("t{i}"),
                &format!("user{}", i % 37),
                &format!("ns{}", i % 11),
                &[0],
            )
        })
        .collect();
    let one = run(&c1, &evs);
    assert!(!one.is_empty());
    let c2 = correlator(&y, cfg());
    let out = std::sync::Mutex::new(Vec::new());
    // Interleaved halves: each thread gets alternating chunks of 50, so both run at once
    // and events arrive at most 0.5 s out of order (within the lateness).
    std::thread::scope(|s| {
        for part in 0..2 {
            let c2 = &c2;
            let out = &out;
            let evs = &evs;
            s.spawn(move || {
                let mut local = Vec::new();
                for chunk in evs.chunks(50).skip(part).step_by(2) {
                    feed(c2, chunk, &mut local);
                }
                out.lock().unwrap().extend(local);
            });
        }
    });
    let mut two = out.into_inner().unwrap();
    c2.flush(&mut two);
    assert_eq!(summary(&one), summary(&two));
}

#[test]
fn run_examples_checks_positive_and_negative_sequences() {
    let ts = |s: i64| format!("2026-01-01T00:00:{s:02}.000000Z");
    let e = |s: i64, id: &str| {
        format!(
            "{{auditID: {id}, verb: get, user: {{username: u}}, stageTimestamp: '{}'}}",
            ts(s)
        )
    };
    let y = format!(
        "title: x\nid: c-ex\ncorrelation: {{type: event_count, rules: [secrets_read], group-by: [user.username], timespan: 1m, condition: {{gte: 2}}}}\nexamples:\n  positive: [[{}, {}]]\n  negative: [[{}], [{}, {}]]\n",
        e(0, "a"),
        e(1, "b"),
        e(0, "a"),
        e(0, "a"),
        e(5, "b")
    );
    let c = correlator(&y, cfg());
    // Stateless stand-in: every event matches rule 0 except auditID "b" in the second
    // negative sequence, which we make not match by its time.
    let eval = |ev: &AuditEvent<'_>, out: &mut Vec<usize>| {
        if !(ev.audit_id() == "b" && ev.event_time().map(|t| t.timestamp() % 60) == Some(5)) {
            out.push(0);
        }
    };
    let fails = c.run_examples(&eval);
    assert!(fails.is_empty(), "{fails:?}");
    // A stand-in that never matches makes the positive example fail, with a clear message.
    let fails = c.run_examples(&|_, _| {});
    assert_eq!(fails.len(), 1);
    assert!(
        fails[0]
            .to_string()
            .contains("positive example 0: expected an alert"),
        "{}",
        fails[0]
    );
}

fn prop_events() -> impl Strategy<Value = Vec<Ev>> {
    // Up to 120 events over 5 minutes for 4 users in 4 namespaces, rule 0 or 1 or both.
    prop::collection::vec((0i64..300_000_000, 0usize..4, 0usize..4, 0usize..3), 1..120).prop_map(
        |v| {
            let mut evs: Vec<Ev> = v
                .into_iter()
                .enumerate()
                .map(|(i, (us, u, n, r))| Ev {
                    us,
                    id: format!("p{i}"),
                    user: format!("user{u}"),
                    ns: format!("ns{n}"),
                    cluster: Some(if u % 2 == 0 { "a" } else { "b" }.into()),
                    rules: match r {
                        0 => vec![0],
                        1 => vec![1],
                        _ => vec![0, 1],
                    },
                })
                .collect();
            evs.sort_by_key(|e| e.us);
            evs
        },
    )
}

const PROP_RULES: &str = "title: c\nid: p-count\ncorrelation: {type: event_count, rules: [secrets_read], group-by: [user.username], timespan: 1m, condition: {gte: 3}}\n---\ntitle: v\nid: p-value\ncorrelation: {type: value_count, rules: [secrets_read, denied], group-by: [user.username], timespan: 2m, condition: {field: objectRef.namespace, gte: 3}}\n---\ntitle: t\nid: p-ordered\ncorrelation: {type: temporal_ordered, rules: [denied, secrets_read], group-by: [user.username], timespan: 30s}\n---\ntitle: r\nid: p-range\ncorrelation: {type: event_count, rules: [denied], group-by: [objectRef.namespace], timespan: 1m, condition: {gte: 2, lt: 4}}\n---\ntitle: n\nid: p-new\ncorrelation: {type: new_terms, rules: [denied], fields: [user.username, objectRef.namespace], history: 1m, learning: 30s}\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Scanning the events in order gives the same alerts as streaming them in any batch
    /// split, with arrival shuffled within the allowed lateness and ticks between batches.
    #[test]
    fn stream_equals_scan_for_any_split_and_shuffle_within_lateness(
        evs in prop_events(),
        jitter in prop::collection::vec(0i64..29_000_000, 120),
        cuts in prop::collection::vec(1usize..20, 1..10),
    ) {
        let c = correlator(PROP_RULES, cfg());
        let scan = run(&c.fresh(), &evs);
        // Arrival order: event time plus a jitter below the lateness, per cluster clock.
        let mut arrival: Vec<(i64, usize)> = evs.iter().enumerate().map(|(i, e)| (e.us + jitter[i % jitter.len()], i)).collect();
        arrival.sort();
        let shuffled: Vec<Ev> = arrival.iter().map(|(_, i)| evs[*i].clone()).collect();
        let stream = c.fresh();
        let mut out = Vec::new();
        let mut rest = &shuffled[..];
        let mut k = 0;
        let start = std::time::Instant::now();
        while !rest.is_empty() {
            let n = cuts[k % cuts.len()].min(rest.len());
            feed(&stream, &rest[..n], &mut out);
            // A tick between batches (wall clock not advanced: no idle flush).
            stream.tick(start, &mut out).unwrap();
            rest = &rest[n..];
            k += 1;
        }
        stream.flush(&mut out);
        prop_assert_eq!(summary(&scan), summary(&out));
    }
}

/// End to end with the real rule loader: a multi-document file with a base rule and a
/// correlation over it, evaluated by `RuleSet::evaluate`, then the correlator.
#[test]
fn with_the_rule_engine_from_a_multi_document_file() {
    let text = "title: Secrets read\nid: 3b8f3c2e-9a41-4d55-9a57-0c6f0e2a7d10\nname: secrets_read\nstatus: stable\nlevel: medium\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  read:\n    verb: [get, list, watch]\n    objectRef.resource: secrets\n  condition: read\n---\ntitle: Secret sweep across namespaces\nid: 0c1d0b6e-5d8a-4f0e-8d52-2c4c3a6b9f11\ncorrelation:\n  type: value_count\n  rules: [secrets_read]\n  group-by: [user.username]\n  timespan: 10m\n  condition: {field: objectRef.namespace, gte: 3}\nlevel: high\n";
    let (rules, _warnings) =
        audithawk::rules::RuleSet::from_texts(&[("sweep.yml", text)], &[], false)
            .expect("rules load");
    assert_eq!(rules.correlations().len(), 1);
    let c = Correlator::new(&rules, cfg()).expect("correlator");
    assert!(
        c.suppressed_generate(0),
        "the base rule is referenced without generate: true"
    );
    let mut out = Vec::new();
    let mut hits = Vec::new();
    for (i, ns) in ["a", "b", "c"].iter().enumerate() {
        let text = json_of(&ev(i as f64, &format!("w{i}"), "eve", ns, &[]));
        let e = AuditEvent::parse(&text).unwrap();
        hits.clear();
        rules.evaluate(&e, &mut hits);
        assert_eq!(hits, [0]);
        c.observe(&hits, &e, &mut out);
    }
    c.flush(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rule.id, "0c1d0b6e-5d8a-4f0e-8d52-2c4c3a6b9f11");
    assert_eq!(out[0].rule.level, audithawk::model::Level::High);
    assert_eq!(corr(&out[0])["values"], serde_json::json!(["a", "b", "c"]));
    // A correlation naming a rule that does not exist is a load error with the file.
    let bad = text.replace("rules: [secrets_read]", "rules: [nope]");
    let (rules, _) =
        audithawk::rules::RuleSet::from_texts(&[("bad.yml", &bad)], &[], false).unwrap();
    let e = Correlator::new(&rules, cfg()).unwrap_err();
    assert!(e[0].to_string().starts_with("bad.yml"), "{}", e[0]);
}

/// Through `Engine::process`: the referenced base rule does not alert on its own, the
/// correlation does, and an unreferenced rule keeps alerting.
#[test]
fn engine_process_feeds_the_correlator() {
    let text = "title: Secrets read\nid: base-read\nname: secrets_read\nlevel: low\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  read: {verb: get, objectRef.resource: secrets}\n  condition: read\n---\ntitle: Any get\nid: base-get\nlevel: informational\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  g: {verb: get}\n  condition: g\n---\ntitle: Reads\nid: corr-reads\ncorrelation: {type: event_count, rules: [secrets_read], group-by: [user.username], timespan: 1m, condition: {gte: 2}}\n";
    let (rules, _) = audithawk::rules::RuleSet::from_texts(&[("e.yml", text)], &[], false).unwrap();
    let rules = Arc::new(rules);
    let c = Arc::new(Correlator::new(&rules, cfg()).unwrap());
    let engine = audithawk::engine::Engine::new(rules, 1000, Arc::new(Metrics::new()))
        .with_correlator(c.clone());
    let mut out = Vec::new();
    for i in 0..2 {
        let t = json_of(&ev(i as f64, &format!("g{i}"), "u", "n", &[]));
        let e = AuditEvent::parse(&t).unwrap();
        engine.process(&e, chrono::Utc::now(), &mut out);
    }
    engine.correlator().unwrap().flush(&mut out);
    let mut ids: Vec<&str> = out.iter().map(|a| a.rule.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["base-get", "base-get", "corr-reads"]);
}

/// `save` at shutdown and `load` at start, through `state_dir`: held records survive and
/// fire after the restart.
#[test]
fn save_and_load_through_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let mk = || {
        correlator(
            COUNT5,
            StateConfig {
                state_dir: Some(dir.path().to_path_buf()),
                ..cfg()
            },
        )
    };
    let first = mk();
    let mut out = Vec::new();
    feed(
        &first,
        &(0..5)
            .map(|i| ev(i as f64, &format!("k{i}"), "u", "n", &[0]))
            .collect::<Vec<_>>(),
        &mut out,
    );
    assert!(out.is_empty(), "all five still held within the lateness");
    assert!(first.save().unwrap().is_some());
    drop(first);
    let second = mk();
    let st = second.load().unwrap();
    assert_eq!(st.pending, 5);
    second.flush(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(corr(&out[0])["count"], 5);
}

/// Every shipped correlation (built-in `detections/`) loads, resolves its references, and
/// behaves as its own positive and negative examples say.
#[test]
fn builtin_correlations_load_and_pass_their_examples() {
    let opts = audithawk::rules::LoadOptions {
        builtin: true,
        ..Default::default()
    };
    let (rules, _) = match audithawk::rules::RuleSet::load(&opts) {
        Ok(x) => x,
        Err(e) => panic!("built-in rules do not load: {e:?}"),
    };
    let c = match Correlator::new(&rules, StateConfig::default()) {
        Ok(c) => c,
        Err(e) => panic!(
            "built-in correlations: {}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    };
    assert_eq!(c.len(), rules.correlations().len());
    let fails = c.run_examples(&|ev, out| rules.evaluate(ev, out));
    assert!(
        fails.is_empty(),
        "{}",
        fails
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// With no lateness allowed, events are applied on arrival (no reorder buffer) and an
/// event behind the newest one is late.
#[test]
fn zero_lateness_applies_on_arrival() {
    let m = Arc::new(Metrics::new());
    let c = correlator(
        COUNT5,
        StateConfig {
            allowed_lateness: Duration::ZERO,
            metrics: m.clone(),
            ..cfg()
        },
    );
    let mut out = Vec::new();
    feed(
        &c,
        &(0..5)
            .map(|i| ev(i as f64, &format!("z{i}"), "u", "n", &[0]))
            .collect::<Vec<_>>(),
        &mut out,
    );
    assert_eq!(
        out.len(),
        1,
        "fires on the fifth event itself, nothing held"
    );
    assert_eq!(c.stats().pending, 0);
    feed(&c, &[ev(3.5, "behind", "u", "n", &[0])], &mut out);
    assert_eq!(
        m.value(
            "audithawk_correlation_late_total",
            &[("rule", "c-count"), ("outcome", "applied")]
        ),
        1
    );
}
