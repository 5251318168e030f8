//! The README's first command: `audithawk demo` replays the bundled attack story through the
//! real webhook. Its alerts are checked against a golden file, and must equal what `scan`
//! finds in the same story read as a file (the webhook path and the file path agree).
//!
//! Regenerate the golden file after a deliberate rule change with
//! `AUDITHAWK_REGEN=1 cargo test --test demo`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use audithawk::app;
use audithawk::cli::{build_engine, RuleArgs};
use audithawk::config::{Config, RouteConfig, SinkConfig};
use audithawk::ingest::scan::{scan, ScanOptions};
use audithawk::telemetry::Metrics;

fn key(v: &serde_json::Value) -> String {
    format!(
        "{:<13} {} {} {}",
        v["rule"]["level"].as_str().unwrap_or(""),
        v["rule"]["id"].as_str().unwrap_or(""),
        v["kubernetes"]["audit"]["auditID"].as_str().unwrap_or(""),
        v["rule"]["name"].as_str().unwrap_or("")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_alerts_match_golden_and_scan() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alerts.jsonl");
    let cfg = Config {
        sinks: vec![SinkConfig::File(audithawk::sinks::config::FileConfig {
            name: None,
            path: out.clone(),
            max_bytes: 0,
            keep: 1,
            route: RouteConfig::default(),
            delivery: Default::default(),
        })],
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let metrics = Arc::new(Metrics::new());
    let engine =
        Arc::new(build_engine(&cfg, &RuleArgs::default(), &metrics).expect("built-in rules load"));
    let report = app::demo(&cfg, engine, metrics.clone(), 100)
        .await
        .expect("demo runs");
    assert_eq!(report.events, 301);
    assert_eq!(report.accepted, 301, "every story event accepted over HTTP");
    assert_eq!(report.requests, 4);

    let text = std::fs::read_to_string(&out).unwrap();
    let via_webhook: BTreeSet<String> = text
        .lines()
        .map(|l| key(&serde_json::from_str(l).expect("alert JSON")))
        .collect();
    assert_eq!(
        text.lines().count(),
        via_webhook.len(),
        "no alert delivered twice"
    );

    // The same story as a file, through scan.
    let story = dir.path().join("story.jsonl");
    std::fs::write(&story, app::DEMO_STORY).unwrap();
    let scan_metrics = Arc::new(Metrics::new());
    let scan_cfg = Config {
        cluster: Some("demo".into()),
        ..Config::default()
    };
    let engine = build_engine(&scan_cfg, &RuleArgs::default(), &scan_metrics).unwrap();
    let opts = ScanOptions {
        paths: vec![story],
        cluster: Some("demo".into()),
        max_event_bytes: 1 << 20,
        progress: false,
    };
    let mut via_scan = BTreeSet::new();
    scan(&opts, &engine, &scan_metrics, &mut |a| {
        via_scan.insert(key(&serde_json::to_value(&a).unwrap()));
    });
    assert_eq!(via_webhook, via_scan, "webhook and scan disagree");

    // The attack story is caught: the sweep, the cluster-admin binding, the privileged pod
    // with a host mount, the exec into kube-system.
    let names: Vec<&str> = via_webhook
        .iter()
        .map(|k| k.splitn(4, ' ').last().unwrap_or(""))
        .collect();
    let all = names.join("\n");
    for needle in [
        "Secrets read in many namespaces",
        "Binding to cluster-admin",
        "sensitive host path",
        "Privileged container",
        "Exec into a pod in kube-system",
    ] {
        assert!(
            all.contains(needle),
            "story step not detected: {needle}\n{all}"
        );
    }

    let golden_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/demo_alerts.txt");
    let rendered: String = via_webhook
        .iter()
        .map(|k| format!("{}\n", k.trim_end()))
        .collect();
    if std::env::var_os("AUDITHAWK_REGEN").is_some() {
        std::fs::write(&golden_path, &rendered).unwrap();
    }
    let golden = std::fs::read_to_string(&golden_path).unwrap_or_default();
    assert_eq!(
        rendered, golden,
        "demo alerts changed; if intended, regenerate: AUDITHAWK_REGEN=1 cargo test --test demo"
    );
}
