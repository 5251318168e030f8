//! Raw audit-event forwarding through the real pipeline: events POSTed to the webhook reach
//! Splunk (sourcetype kube:apiserver:audit) exactly once and redacted, even when the API
//! server re-sends a batch (the duplicate is dropped before forwarding).

mod mock;

use std::sync::Arc;

use audithawk::app::{self, RunOptions};
use audithawk::cli::{build_engine, RuleArgs};
use audithawk::config::Config;
use audithawk::telemetry::Metrics;
use mock::{hec::Hec, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_events_are_forwarded_once_and_redacted() {
    let hec = Server::start(Hec::new("tok")).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
serve:
  listen: "127.0.0.1:0"
sinks:
  - type: file
    path: {alerts}
raw_forwarding:
  enabled: true
  sinks:
    - type: splunk_hec
      endpoint: {hec}
      token: tok
      delivery: {{batch_timeout_ms: 20, retry_initial_ms: 5, retry_max_secs: 2}}
data_dir: {data}
shutdown_timeout: 10s
"#,
        alerts = dir.path().join("alerts.jsonl").display(),
        hec = hec.url(),
        data = dir.path().join("data").display(),
    );
    let cfg = Config::from_yaml(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(build_engine(&cfg, &RuleArgs::default(), &metrics).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let server = {
        let cfg = cfg.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            app::serve_with(
                &cfg,
                engine,
                metrics,
                async move {
                    let _ = stop_rx.await;
                },
                RunOptions {
                    bound: Some(bound_tx),
                    ..Default::default()
                },
            )
            .await
        })
    };
    let addr = bound_rx.await.unwrap();
    let body = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[
        {"level":"RequestResponse","auditID":"s1","stage":"ResponseComplete","verb":"get",
         "requestURI":"/api/v1/namespaces/prod/secrets/db?token=hunter2",
         "user":{"username":"mallory@example.com"},"objectRef":{"resource":"secrets","namespace":"prod","name":"db"},
         "responseStatus":{"code":200},"responseObject":{"kind":"Secret","data":{"password":"c2VjcmV0"}},
         "stageTimestamp":"2026-11-02T10:00:00.000001Z"},
        {"level":"Metadata","auditID":"p1","stage":"ResponseComplete","verb":"list",
         "user":{"username":"bob@example.com"},"objectRef":{"resource":"pods","namespace":"dev"},
         "responseStatus":{"code":200},"stageTimestamp":"2026-11-02T10:00:01.000001Z"}]}"#;
    let client = reqwest::Client::new();
    // The API server re-sends a batch after a timeout: the second copy must not be forwarded.
    for _ in 0..2 {
        let resp = client
            .post(format!("http://{addr}/audit/prod?timeout=30s"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    stop_tx.send(()).unwrap();
    server.await.unwrap().expect("serve shut down cleanly");

    let events = hec.h.events.lock();
    let mut ids: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["auditID"].as_str().unwrap_or(""))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec!["p1", "s1"],
        "each event forwarded exactly once: {events:?}"
    );
    assert!(events
        .iter()
        .all(|e| e["sourcetype"] == "kube:apiserver:audit"));
    let text = serde_json::to_string(&*events).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("c2VjcmV0"),
        "secret material forwarded: {text}"
    );
    assert!(hec.h.common.violations.lock().is_empty());
    assert_eq!(
        metrics.duplicates.get(),
        2,
        "the re-sent copies were dropped as duplicates"
    );
}
