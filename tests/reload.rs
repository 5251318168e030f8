//! Hot reload of a running `serve`: events POSTed continuously while rules and sinks are
//! reloaded (by trigger, as SIGHUP does, and by a file change seen by the mtime poll). Every
//! accepted event is evaluated exactly once and its alert delivered exactly once, to the
//! sink in force at that moment; a broken rule file keeps the running set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use audithawk::app::{serve_with, RunOptions};
use audithawk::config::Config;
use audithawk::reload::{Fingerprint, ReloadOutcome, ReloadSource};
use audithawk::telemetry::Metrics;
use tokio::sync::{mpsc, oneshot};

const RULE_A: &str = "\
title: Secret read (A)
id: 00000000-0000-4000-8000-00000000000a
status: test
logsource: {product: kubernetes, service: audit}
detection:
    selection:
        verb: get
        objectRef.resource: secrets
    condition: selection
level: high
";

const RULE_B: &str = "\
title: Secret read (B, added by the reload)
id: 00000000-0000-4000-8000-00000000000b
status: test
logsource: {product: kubernetes, service: audit}
detection:
    selection:
        verb: get
        objectRef.resource: secrets
    condition: selection
level: medium
";

fn config_text(rules: &Path, alerts: &Path) -> String {
    format!(
        "serve:\n  listen: \"127.0.0.1:0\"\nrules:\n  builtin: false\n  dirs: [\"{}\"]\nengine:\n  workers: 2\nsinks:\n  - type: file\n    path: \"{}\"\nshutdown_timeout: 30s\n",
        rules.display(),
        alerts.display()
    )
}

fn event(n: u64) -> serde_json::Value {
    serde_json::json!({
        "level": "Metadata",
        "auditID": format!("00000000-0000-0000-0000-{n:012}"),
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/prod/secrets/db",
        "verb": "get",
        "user": {"username": format!("user-{n}"), "groups": ["system:authenticated"]},
        "sourceIPs": ["198.51.100.7"],
        "objectRef": {"resource": "secrets", "namespace": "prod", "name": "db", "apiVersion": "v1"},
        "responseStatus": {"code": 200},
        "requestReceivedTimestamp": "2026-11-02T10:00:00.000001Z",
        "stageTimestamp": "2026-11-02T10:00:00.000002Z"
    })
}

/// (rule id, user) of every alert line in `path`.
fn alerts(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("alert JSON");
            (
                v["rule"]["id"].as_str().unwrap_or("").to_string(),
                v["user"]["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

struct Running {
    url: String,
    trigger: mpsc::Sender<()>,
    outcomes: mpsc::UnboundedReceiver<ReloadOutcome>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), audithawk::app::AppError>>,
    metrics: Arc<Metrics>,
}

async fn start(config_file: PathBuf, poll: Duration) -> Running {
    let cfg = Config::load(&config_file).expect("config");
    let metrics = Arc::new(Metrics::new());
    let (rules, falco, corr) = audithawk::reload::build_rules(&cfg, &metrics).expect("rules");
    let mut engine =
        audithawk::engine::Engine::new(rules, cfg.engine.dedup_capacity, metrics.clone())
            .with_falco(falco);
    if let Some(c) = corr {
        engine = engine.with_correlator(c);
    }
    let file = config_file.clone();
    let source = ReloadSource {
        load: Arc::new(move || {
            Config::load(&file).map_err(|e| {
                e.problems
                    .iter()
                    .map(|p| format!("{}: {p}", e.file))
                    .collect()
            })
        }),
        config_file: Some(config_file),
    };
    let (trigger, trigger_rx) = mpsc::channel(4);
    let (out_tx, outcomes) = mpsc::unbounded_channel();
    let (bound_tx, bound_rx) = oneshot::channel();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let m = metrics.clone();
    let task = tokio::spawn(async move {
        serve_with(
            &cfg,
            Arc::new(engine),
            m,
            async move {
                let _ = stop_rx.await;
            },
            RunOptions {
                reload: Some(source),
                reload_trigger: Some(trigger_rx),
                reload_outcomes: Some(out_tx),
                reload_poll: Some(poll),
                bound: Some(bound_tx),
                forward_to_kafka: false,
            },
        )
        .await
    });
    let addr = bound_rx.await.expect("server bound");
    Running {
        url: format!("http://{addr}/audit/prod?timeout=30s"),
        trigger,
        outcomes,
        stop,
        task,
        metrics,
    }
}

/// Posts batches of 5 events until `stop`; returns how many events were accepted.
fn poster(
    url: String,
    next: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    posted: mpsc::UnboundedSender<u64>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut accepted = 0;
        while !stop.load(Ordering::SeqCst) {
            let first = next.fetch_add(5, Ordering::SeqCst);
            let items: Vec<_> = (first..first + 5).map(event).collect();
            let body = serde_json::json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items});
            // Like the API server: a 429 (queue full) is retried after a pause; it was not
            // accepted, so the retry cannot duplicate anything.
            let resp = loop {
                let resp = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .expect("POST");
                if resp.status() != 429 {
                    break resp;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(resp.status(), 200, "every batch is accepted during reloads");
            let v: serde_json::Value = resp.json().await.expect("json");
            accepted += v["accepted"].as_u64().unwrap_or(0);
            let _ = posted.send(first + 5);
        }
        accepted
    })
}

/// The next reload outcome (a hang is a failure, not a stuck test).
async fn next_outcome(rx: &mut mpsc::UnboundedReceiver<ReloadOutcome>) -> ReloadOutcome {
    let o = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("a reload within 60 s")
        .expect("reloader running");
    eprintln!("reload outcome: ok={} errors={:?}", o.ok, o.errors);
    o
}

/// Waits until the poster reports at least `n` more events posted.
async fn wait_posted(rx: &mut mpsc::UnboundedReceiver<u64>, n: u64) {
    let mut seen = 0;
    while seen < n {
        rx.recv().await.expect("poster running");
        seen += 5;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing_and_applies_rules_and_sinks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/a.yml"), RULE_A).unwrap();
    let alerts1 = dir.path().join("alerts1.jsonl");
    let alerts2 = dir.path().join("alerts2.jsonl");
    let cfg_file = dir.path().join("audithawk.yaml");
    std::fs::write(&cfg_file, config_text(&dir.path().join("rules"), &alerts1)).unwrap();

    let mut run = start(cfg_file.clone(), Duration::from_millis(50)).await;
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (posted_tx, mut posted) = mpsc::unbounded_channel();
    let post = poster(run.url.clone(), next.clone(), stop.clone(), posted_tx);
    wait_posted(&mut posted, 50).await;

    // 1. New rule B and a new sink, applied by the trigger (what SIGHUP does). The file
    //    poll may see the same change first; either way exactly one reload applies it.
    // Atomic from the reloader's view: a new rules directory (A and B) and a config naming
    // it and the new sink, renamed into place. A reload reads either the old config and
    // rules or the new ones, never a mix (rule B into the old sink).
    let rules2 = dir.path().join("rules2");
    std::fs::create_dir(&rules2).unwrap();
    std::fs::write(rules2.join("a.yml"), RULE_A).unwrap();
    std::fs::write(rules2.join("b.yml"), RULE_B).unwrap();
    let tmp = dir.path().join("audithawk.yaml.tmp");
    std::fs::write(&tmp, config_text(&rules2, &alerts2)).unwrap();
    std::fs::rename(&tmp, &cfg_file).unwrap();
    run.trigger.send(()).await.unwrap();
    let first = next_outcome(&mut run.outcomes).await;
    assert!(first.ok, "reload failed: {:?}", first.errors);
    assert_eq!((first.sinks_started, first.sinks_stopped), (1, 1));
    // Drain a possible second (no-op) reload of the same change before going on.
    wait_posted(&mut posted, 50).await;
    while let Ok(o) = run.outcomes.try_recv() {
        assert!(o.ok, "{:?}", o.errors);
    }

    // 2. A broken rule file, found by the file poll: the running set stays.
    std::fs::write(
        rules2.join("broken.yml"),
        "title: broken\nid: 00000000-0000-4000-8000-0000000000ff\nlogsource: {product: kubernetes, service: audit}\ndetection:\n    selection:\n        verb|nosuchmodifier: get\n    condition: selection and missing\n",
    )
    .unwrap();
    // A reload of step 1's second write may still be reported first (at most one).
    let mut bad = next_outcome(&mut run.outcomes).await;
    if bad.ok {
        bad = next_outcome(&mut run.outcomes).await;
    }
    assert!(!bad.ok);
    let all = bad.errors.join("\n");
    assert!(
        all.contains("broken.yml"),
        "the error names the file: {all}"
    );
    wait_posted(&mut posted, 50).await;

    stop.store(true, Ordering::SeqCst);
    let accepted = post.await.unwrap();
    let _ = run.stop.send(());
    run.task.await.unwrap().expect("serve");

    let a1 = alerts(&alerts1);
    let a2 = alerts(&alerts2);
    // No event lost or evaluated twice: one A alert per accepted event, over both sinks.
    let mut a_users: HashMap<String, usize> = HashMap::new();
    for (rule, user) in a1.iter().chain(&a2) {
        if rule.ends_with('a') {
            *a_users.entry(user.clone()).or_default() += 1;
        }
    }
    assert_eq!(
        a_users.len() as u64,
        accepted,
        "every accepted event alerted"
    );
    assert!(a_users.values().all(|&n| n == 1), "no alert duplicated");
    assert_eq!(run.metrics.evaluated.get(), accepted);
    // The new rule fires after the reload, and only into the new sink.
    assert!(
        a1.iter().all(|(r, _)| r.ends_with('a')),
        "B never went to the old sink"
    );
    let b = a2.iter().filter(|(r, _)| r.ends_with('b')).count();
    assert!(
        b >= 50,
        "rule B fired after the reload (and after the failed one): {b}"
    );
    assert!(
        !a1.is_empty(),
        "the old sink got the alerts from before the reload"
    );
    assert!(
        run.metrics
            .value("audithawk_reloads_total", &[("result", "ok")])
            >= 1
    );
    assert_eq!(
        run.metrics
            .value("audithawk_reloads_total", &[("result", "error")]),
        1
    );
}

#[test]
fn fingerprint_tracks_rule_directory_contents() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let mut cfg = Config::default();
    cfg.rules.dirs = vec![dir.path().join("rules")];
    let files = audithawk::reload::watched_files(&cfg, None);
    let before = Fingerprint::of(&files);
    std::fs::write(dir.path().join("rules/new.yml"), RULE_A).unwrap();
    let files2 = audithawk::reload::watched_files(&cfg, None);
    assert!(files2.iter().any(|f| f.ends_with("new.yml")), "{files2:?}");
    assert_ne!(before, Fingerprint::of(&files2));
}

const BASE: &str = "\
title: Secret get (TITLE)
id: 00000000-0000-4000-8000-0000000000c1
name: secret_get
status: test
logsource: {product: kubernetes, service: audit}
detection:
    selection:
        verb: VERB
        objectRef.resource: secrets
    condition: selection
level: low
---
title: Three secret reads
id: 00000000-0000-4000-8000-0000000000c2
name: three_secret_reads
status: test
correlation:
  type: event_count
  rules:
    - secret_get
  group-by:
    - user.username
  timespan: 15m
  condition:
    gte: 3
level: high
";

fn corr_engine(dir: &Path, title: &str, verb: &str) -> (Config, audithawk::reload::RuleParts) {
    std::fs::write(
        dir.join("c.yml"),
        BASE.replace("TITLE", title).replace("VERB", verb),
    )
    .unwrap();
    let mut cfg = Config::default();
    cfg.rules.builtin = false;
    cfg.rules.dirs = vec![dir.to_path_buf()];
    let parts = audithawk::reload::build_rules(&cfg, &Arc::new(Metrics::new())).expect("rules");
    assert!(parts.2.is_some(), "a correlator is built");
    (cfg, parts)
}

/// Feeds events 0..n for alice and returns the correlation alerts after a flush.
fn feed(e: &audithawk::engine::Engine, range: std::ops::Range<u64>) -> usize {
    let mut out = Vec::new();
    for n in range {
        let mut v = event(n);
        v["user"]["username"] = "alice".into();
        let text = v.to_string();
        let ev = audithawk::model::AuditEvent::parse(&text).expect("event");
        e.process(&ev, chrono::Utc::now(), &mut out);
    }
    e.correlator().expect("correlator").flush(&mut out);
    out.iter().filter(|a| a.rule.id.ends_with("c2")).count()
}

/// A reload that changes only a base rule's title keeps the correlation's window (2 reads
/// before + 1 after fire); one that changes its detection resets it (no alert).
#[test]
fn correlation_windows_survive_a_reload_unless_their_rule_changed() {
    let dir = tempfile::tempdir().unwrap();
    for (title, verb, fires) in [("renamed", "get", 1), ("same", "[get, list]", 0)] {
        let (_, (r1, f1, c1)) = corr_engine(dir.path(), "same", "get");
        let m = Arc::new(Metrics::new());
        let e1 = audithawk::engine::Engine::new(r1, 1000, m)
            .with_falco(f1)
            .with_correlator(c1.unwrap());
        // Two reads: not yet three.
        let mut out = Vec::new();
        for n in 0..2 {
            let mut v = event(n);
            v["user"]["username"] = "alice".into();
            let text = v.to_string();
            let ev = audithawk::model::AuditEvent::parse(&text).unwrap();
            e1.process(&ev, chrono::Utc::now(), &mut out);
        }
        let (_, (r2, f2, c2)) = corr_engine(dir.path(), title, verb);
        let (stats, dropped) =
            audithawk::reload::carry_state(&e1, &r2, c2.as_deref()).expect("carry");
        let e2 = e1.reloaded(r2, f2, c2);
        if fires == 1 {
            assert!(dropped.is_empty(), "{dropped:?}");
            assert!(stats.groups + stats.pending > 0, "state carried: {stats:?}");
        } else {
            assert_eq!(dropped, vec!["00000000-0000-4000-8000-0000000000c2"]);
        }
        assert_eq!(feed(&e2, 2..3), fires, "title {title:?}, verb {verb:?}");
    }
}
