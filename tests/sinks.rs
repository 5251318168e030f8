//! Black-box tests of the SIEM sinks against strict mock servers (tests/mock), through the
//! public API the pipeline uses: `build_router`, `Router::dispatch`, `Router::shutdown`.
//!
//! Network tests run on real time with millisecond backoffs: tokio's paused clock
//! auto-advances while the runtime waits on sockets, which would fire request timeouts
//! at once. Pure timing logic is tested with a paused clock in the driver's unit tests.

mod mock;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use audithawk::model::{Alert, AuditEvent, Level, RuleMeta, SharedAlert};
use audithawk::sinks::config::{build_router, SinkBuildError, SinkConfig};
use audithawk::telemetry::Metrics;
use mock::{bulk::Bulk, hec::Hec, wait_until, Action, Server, Special};

fn alert_at(i: usize, level: Level, rule: &str) -> SharedAlert {
    let ev = AuditEvent::parse(&format!(
        r#"{{"auditID":"aud-{i}","verb":"get","stage":"ResponseComplete","stageTimestamp":"2024-05-01T10:00:{:02}.{:06}Z",
            "user":{{"username":"user{i}"}},"sourceIPs":["10.0.0.{}"],"objectRef":{{"resource":"secrets","namespace":"ns","name":"s{i}"}},
            "requestURI":"/api/v1/namespaces/ns/secrets/s{i}","responseStatus":{{"code":200}}}}"#,
        i % 60,
        i % 1_000_000,
        i % 250
    ))
    .unwrap()
    .into_owned();
    let meta = RuleMeta {
        id: rule.into(),
        title: format!("rule {rule}"),
        level,
        tags: vec!["attack.credential-access".into()],
        description: "Secrets read.".into(),
        references: vec![],
        author: None,
        source: "test".into(),
    };
    Arc::new(Alert::new(&meta, &ev, chrono::Utc::now()))
}

fn alert(i: usize) -> SharedAlert {
    alert_at(i, Level::High, "r1")
}

fn cfgs(yaml: &str) -> Vec<SinkConfig> {
    serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// Fast retries so that failure tests take milliseconds.
const FAST: &str = "batch_timeout_ms: 20, retry_initial_ms: 5, retry_max_secs: 2";

/// Exactly one batch of `n` (sent when the n-th alert arrives, however slow the machine),
/// for tests whose scripted failures refer to positions in a batch.
fn one_batch(n: usize) -> String {
    format!(
        "batch_max_events: {n}, batch_timeout_ms: 60000, retry_initial_ms: 5, retry_max_secs: 2"
    )
}

fn hec_yaml(url: &str, extra: &str) -> String {
    format!(
        "- type: splunk_hec\n  endpoint: {url}\n  token: tok-123\n  delivery: {{{FAST}}}\n{extra}"
    )
}

fn assert_once(ids: &[String], n: usize) {
    let mut sorted = ids.to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), n, "distinct ids");
    assert_eq!(ids.len(), n, "{} duplicates", ids.len() - sorted.len());
}

#[tokio::test]
async fn hec_delivers_gzipped_envelopes_with_event_time() {
    let srv = Server::start(Hec::new("tok-123")).await;
    let state = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::new());
    let router = build_router(
        &cfgs(&hec_yaml(&srv.url(), "  index: main\n")),
        m.clone(),
        state.path(),
    )
    .await
    .unwrap();
    let n = 2500;
    let mut sent = Vec::new();
    for i in 0..n {
        let a = alert(i);
        sent.push(a.event.id.clone());
        router.dispatch(a).await;
    }
    assert!(router.shutdown(Duration::from_secs(10)).await);
    assert!(
        srv.h.common.violations.lock().is_empty(),
        "{:?}",
        srv.h.common.violations.lock()
    );
    assert_once(&srv.h.ids(), n);
    assert!(srv.h.saw_gzip.load(Ordering::SeqCst), "gzip is the default");
    // Batched: at most 1000 per request by default.
    assert!(srv.h.batches.load(Ordering::SeqCst) >= 3);
    let evs = srv.h.events.lock();
    let e = &evs[0];
    assert_eq!(e["sourcetype"], "audithawk:alert");
    assert_eq!(e["index"], "main");
    assert_eq!(e["source"], "audithawk");
    // `time` is the audit event's time (sub-second), not the time of sending.
    assert_eq!(e["time"].as_f64().unwrap(), 1714557600.0);
    assert_eq!(
        evs[1]["time"].as_f64().unwrap(),
        1714557601.0,
        "millisecond precision"
    );
    assert_eq!(e["fields"]["rule_id"], "r1");
    assert_eq!(
        m.value("audithawk_sink_sent_total", &[("sink", "splunk_hec")]),
        n as u64
    );
    assert_eq!(
        m.gauge_value("audithawk_sink_buffered_events", &[("sink", "splunk_hec")]),
        0
    );
    let text = m.render_prometheus();
    assert!(
        text.contains(
            "audithawk_sink_delivery_latency_seconds_bucket{sink=\"splunk_hec\",le=\"+Inf\"} 2500"
        ),
        "{text}"
    );
    assert!(text.contains("# TYPE audithawk_sink_buffered_events gauge"));
}

#[tokio::test]
async fn hec_wrong_token_fails_at_start_with_a_clear_error() {
    let srv = Server::start(Hec::new("right")).await;
    let state = tempfile::tempdir().unwrap();
    let err = build_router(
        &cfgs(&hec_yaml(&srv.url(), "")),
        Arc::new(Metrics::new()),
        state.path(),
    )
    .await
    .unwrap_err();
    match &err {
        SinkBuildError::Health { sink, reason } => {
            assert_eq!(sink, "splunk_hec");
            assert!(
                reason.contains("token") && reason.contains("code 4"),
                "{reason}"
            );
        }
        e => panic!("{e}"),
    }
    assert!(!format!("{err:?}").contains("tok-123"), "token leaked");
}

#[tokio::test]
async fn hec_unhealthy_at_start_still_starts_and_delivers_later() {
    let h = Hec::new("tok-123");
    h.unhealthy.store(true, Ordering::SeqCst);
    let srv = Server::start(h).await;
    let state = tempfile::tempdir().unwrap();
    let router = build_router(
        &cfgs(&hec_yaml(&srv.url(), "")),
        Arc::new(Metrics::new()),
        state.path(),
    )
    .await
    .unwrap();
    router.dispatch(alert(1)).await;
    assert!(router.shutdown(Duration::from_secs(5)).await);
    assert_eq!(srv.h.ids(), vec![alert(1).event.id.clone()]);
}

#[tokio::test]
async fn hec_retries_busy_throttled_dropped_and_slow_then_delivers_once() {
    let srv = Server::start(Hec::new("tok-123")).await;
    let s = &srv.h.common.script;
    // Health check and token check pass first (2 requests), then the failures.
    let state = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::new());
    let cfg = cfgs(&format!(
        "- type: splunk_hec\n  endpoint: {}\n  token: tok-123\n  request_timeout_secs: 1\n  delivery: {{{}}}\n",
        srv.url(),
        one_batch(10)
    ));
    let router = build_router(&cfg, m.clone(), state.path()).await.unwrap();
    s.push(Action::Reply(
        503,
        r#"{"text":"Server is busy","code":9}"#.into(),
        vec![],
    ));
    s.push(Action::Reply(
        429,
        "Too Many Requests".into(),
        vec![("retry-after", "1".into())],
    ));
    s.push(Action::Drop);
    s.push(Action::Delay(Duration::from_millis(1500))); // beyond the 1 s request timeout
    s.push(Action::Reply(
        500,
        r#"{"text":"Internal server error","code":8}"#.into(),
        vec![],
    ));
    let started = std::time::Instant::now();
    for i in 0..10 {
        router.dispatch(alert(i)).await;
    }
    assert!(router.shutdown(Duration::from_secs(20)).await);
    // The slow request may or may not have been indexed before the client gave up; both
    // are allowed (Splunk has no idempotency), so compare distinct ids.
    let mut ids = srv.h.ids();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert!(m.value("audithawk_sink_retried_total", &[("sink", "splunk_hec")]) >= 50);
    assert!(
        m.value(
            "audithawk_sink_failed_total",
            &[("sink", "splunk_hec"), ("reason", "retriable")]
        ) >= 50
    );
    assert_eq!(m.total("audithawk_sink_dead_lettered_total"), 0);
    assert!(srv.h.common.violations.lock().is_empty());
}

#[tokio::test]
async fn hec_bad_event_is_dead_lettered_and_the_rest_resent() {
    let srv = Server::start(Hec::new("tok-123")).await;
    let state = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::new());
    let dl = state.path().join("dl.jsonl");
    let yaml = format!(
        "- type: splunk_hec\n  endpoint: {}\n  token: tok-123\n  delivery: {{{}, dead_letter: {}}}\n",
        srv.url(),
        one_batch(10),
        dl.display()
    );
    let router = build_router(&cfgs(&yaml), m.clone(), state.path())
        .await
        .unwrap();
    srv.h
        .common
        .script
        .push(Action::Special(Special::HecInvalidEvent(4)));
    let alerts: Vec<_> = (0..10).map(alert).collect();
    for a in &alerts {
        router.dispatch(a.clone()).await;
    }
    assert!(router.shutdown(Duration::from_secs(5)).await);
    let ids = srv.h.ids();
    assert_once(&ids, 9);
    assert!(!ids.contains(&alerts[4].event.id));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&dl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0]["record"]["event"]["id"],
        alerts[4].event.id.as_str()
    );
    assert!(
        lines[0]["reason"].as_str().unwrap().contains("code 6"),
        "{}",
        lines[0]
    );
    assert_eq!(
        m.value(
            "audithawk_sink_dead_lettered_total",
            &[("sink", "splunk_hec")]
        ),
        1
    );
    assert_eq!(
        m.value("audithawk_sink_sent_total", &[("sink", "splunk_hec")]),
        9
    );
}

#[tokio::test]
async fn hec_bad_index_is_fatal_and_never_retried() {
    let mut h = Hec::new("tok-123");
    h.indexes = vec!["main".into()];
    let srv = Server::start(h).await;
    let state = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::new());
    let router = build_router(
        &cfgs(&hec_yaml(&srv.url(), "  index: nope\n")),
        m.clone(),
        state.path(),
    )
    .await
    .unwrap();
    for i in 0..5 {
        router.dispatch(alert(i)).await;
    }
    assert!(router.shutdown(Duration::from_secs(5)).await);
    assert!(srv.h.ids().is_empty());
    // Health (1) + token check (1) + one attempt: a 400 is never retried.
    assert_eq!(srv.h.common.requests.load(Ordering::SeqCst), 3);
    assert_eq!(
        m.value(
            "audithawk_sink_failed_total",
            &[("sink", "splunk_hec"), ("reason", "fatal")]
        ),
        5
    );
    let dl = state.path().join("sinks/splunk_hec/dead-letter.jsonl");
    let text = std::fs::read_to_string(dl).unwrap();
    assert_eq!(text.lines().count(), 5);
    assert!(text.contains("fix `index`"), "{text}");
}

#[tokio::test]
async fn hec_indexer_ack_polls_until_indexed() {
    let mut h = Hec::new("tok-123");
    h.ack = true;
    h.ack_delay_polls = 2;
    let srv = Server::start(h).await;
    let state = tempfile::tempdir().unwrap();
    let router = build_router(
        &cfgs(&hec_yaml(
            &srv.url(),
            "  indexer_ack: true\n  ack_poll_ms: 10\n",
        )),
        Arc::new(Metrics::new()),
        state.path(),
    )
    .await
    .unwrap();
    for i in 0..20 {
        router.dispatch(alert(i)).await;
    }
    assert!(router.shutdown(Duration::from_secs(5)).await);
    assert_once(&srv.h.ids(), 20);
    assert!(
        srv.h.ack_polls.load(Ordering::SeqCst) >= 3,
        "polled until acknowledged"
    );
    assert!(srv.h.common.violations.lock().is_empty());
}

#[tokio::test]
async fn hec_unacknowledged_batch_is_resent() {
    let mut h = Hec::new("tok-123");
    h.ack = true;
    h.ack_delay_polls = u64::MAX; // never acknowledged
    let srv = Server::start(h).await;
    let state = tempfile::tempdir().unwrap();
    let router = build_router(
        &cfgs(&hec_yaml(
            &srv.url(),
            "  indexer_ack: true\n  ack_poll_ms: 10\n  ack_timeout_secs: 1\n",
        )),
        Arc::new(Metrics::new()),
        state.path(),
    )
    .await
    .unwrap();
    router.dispatch(alert(1)).await;
    assert!(
        wait_until(Duration::from_secs(5), || srv.h.ids().len() >= 2).await,
        "re-sent after the ack timeout"
    );
    assert!(
        !router.shutdown(Duration::from_millis(100)).await,
        "still undelivered"
    );
}

fn es_yaml(url: &str, extra: &str) -> String {
    format!(
        "- type: elasticsearch\n  endpoint: {url}\n  auth: {{type: api_key, key: a2V5OnNlY3JldA==}}\n  delivery: {{{FAST}}}\n{extra}"
    )
}

#[tokio::test]
async fn es_bulk_retries_only_429_and_5xx_items_and_dead_letters_mapping_errors() {
    let srv = Server::start(Bulk::new(Some("ApiKey a2V5OnNlY3JldA=="))).await;
    let state = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::new());
    let router = build_router(
        &cfgs(&format!(
            "- type: elasticsearch\n  endpoint: {}\n  auth: {{type: api_key, key: a2V5OnNlY3JldA==}}\n  setup_template: true\n  delivery: {{{}}}\n",
            srv.url(),
            one_batch(6)
        )),
        m.clone(),
        state.path(),
    )
    .await
    .unwrap();
    assert_eq!(srv.h.templates.lock().len(), 1);
    assert!(srv.h.templates.lock()[0].1.get("data_stream").is_some());
    srv.h
        .common
        .script
        .push(Action::Special(Special::BulkItems(vec![
            (1, 429, "es_rejected_execution_exception"),
            (2, 400, "mapper_parsing_exception"),
            (3, 503, "unavailable_shards_exception"),
        ])));
    let alerts: Vec<_> = (0..6).map(alert).collect();
    for a in &alerts {
        router.dispatch(a.clone()).await;
    }
    assert!(router.shutdown(Duration::from_secs(5)).await);
    assert!(
        srv.h.common.violations.lock().is_empty(),
        "{:?}",
        srv.h.common.violations.lock()
    );
    let docs = srv.h.docs.lock();
    assert_eq!(docs.len(), 5);
    assert!(!docs.contains_key(&alerts[2].event.id));
    let (index, doc) = &docs[&alerts[0].event.id];
    assert_eq!(index, "logs-audithawk.alert-default");
    assert_eq!(doc["event"]["kind"], "alert");
    assert!(srv.h.created.lock().values().all(|&n| n == 1));
    assert_eq!(
        srv.h.batches.load(Ordering::SeqCst),
        2,
        "one retry with only the failed items"
    );
    let dl = std::fs::read_to_string(state.path().join("sinks/elasticsearch/dead-letter.jsonl"))
        .unwrap();
    assert_eq!(dl.lines().count(), 1);
    assert!(dl.contains("mapper_parsing_exception") && dl.contains(&alerts[2].event.id));
    assert_eq!(
        m.value("audithawk_sink_sent_total", &[("sink", "elasticsearch")]),
        5
    );
    assert_eq!(
        m.value("audithawk_sink_retried_total", &[("sink", "elasticsearch")]),
        2
    );
}

#[tokio::test]
async fn es_wrong_credentials_fail_at_start() {
    let srv = Server::start(Bulk::new(Some("ApiKey other"))).await;
    let state = tempfile::tempdir().unwrap();
    let err = build_router(
        &cfgs(&es_yaml(&srv.url(), "")),
        Arc::new(Metrics::new()),
        state.path(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("check `auth`"), "{err}");
}

#[tokio::test]
async fn es_basic_auth_and_dated_index_by_event_time() {
    // "elastic:changeme"
    let srv = Server::start(Bulk::new(Some("Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="))).await;
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        "- type: elasticsearch\n  endpoint: {}\n  auth: {{type: basic, username: elastic, password: changeme}}\n  mode: dated\n  index: audithawk-%Y.%m.%d\n  compression: false\n  delivery: {{{FAST}}}\n",
        srv.url()
    );
    let router = build_router(&cfgs(&yaml), Arc::new(Metrics::new()), state.path())
        .await
        .unwrap();
    router.dispatch(alert(3)).await;
    assert!(router.shutdown(Duration::from_secs(5)).await);
    let docs = srv.h.docs.lock();
    assert_eq!(docs.values().next().unwrap().0, "audithawk-2024.05.01");
}

/// An outage: the SIEM drops every connection for a while, then comes back; a request
/// that was indexed but whose answer was lost is re-sent and answered 409. Every alert is
/// stored exactly once.
#[tokio::test]
async fn es_outage_then_recovery_delivers_every_alert_exactly_once() {
    let srv = Server::start(Bulk::new(None)).await;
    let state = tempfile::tempdir().unwrap();
    let m = Arc::new(Metrics::new());
    let yaml = format!(
        "- type: elasticsearch\n  endpoint: {}\n  delivery: {{batch_max_events: 100, {FAST}, concurrency: 4, buffer: {{type: disk}}}}\n",
        srv.url()
    );
    let router = build_router(&cfgs(&yaml), m.clone(), state.path())
        .await
        .unwrap();
    srv.h.common.script.push(Action::ProcessThenDrop);
    let n = 3000;
    for i in 0..n / 2 {
        router.dispatch(alert(i)).await;
    }
    srv.h.common.set_down(true);
    for i in n / 2..n {
        router.dispatch(alert(i)).await;
    }
    assert!(
        wait_until(Duration::from_secs(5), || m.value(
            "audithawk_sink_failed_total",
            &[("sink", "elasticsearch"), ("reason", "retriable")]
        ) > 0)
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.h.common.set_down(false);
    assert!(router.shutdown(Duration::from_secs(20)).await);
    assert_eq!(srv.h.docs.lock().len(), n);
    assert!(srv.h.created.lock().values().all(|&c| c == 1));
    assert!(
        srv.h.conflicts.load(Ordering::SeqCst) > 0,
        "the dropped answer caused a re-send answered 409"
    );
    assert_eq!(
        m.value("audithawk_sink_sent_total", &[("sink", "elasticsearch")]),
        n as u64
    );
    assert_eq!(m.total("audithawk_sink_dead_lettered_total"), 0);
    assert_eq!(
        m.gauge_value(
            "audithawk_sink_buffered_events",
            &[("sink", "elasticsearch")]
        ),
        0
    );
}

/// The child half of the crash test: buffers alerts for an unreachable SIEM, then kills
/// itself with SIGKILL (no destructor, no flush runs). Only runs when the parent sets
/// AUDITHAWK_CRASH_STATE.
#[tokio::test]
#[ignore = "the child process of crash_with_alerts_in_the_disk_buffer_then_restart_delivers_all"]
async fn crash_child() {
    let Ok(state) = std::env::var("AUDITHAWK_CRASH_STATE") else {
        return;
    };
    let n: usize = std::env::var("AUDITHAWK_CRASH_N").unwrap().parse().unwrap();
    // A port nobody listens on: bind, note it, close.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let yaml = format!(
        "- type: elasticsearch\n  endpoint: {url}\n  healthcheck: false\n  delivery: {{buffer: {{type: disk}}, {FAST}}}\n"
    );
    let router = build_router(
        &cfgs(&yaml),
        Arc::new(Metrics::new()),
        std::path::Path::new(&state),
    )
    .await
    .unwrap();
    for i in 0..n {
        router.dispatch(alert(i)).await;
    }
    // Every dispatch returned: the engine considers these alerts handed over.
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status();
    std::thread::sleep(Duration::from_secs(10));
    unreachable!("kill -9 did not stop the process");
}

#[tokio::test]
async fn crash_with_alerts_in_the_disk_buffer_then_restart_delivers_all() {
    let state = tempfile::tempdir().unwrap();
    let n = 500;
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("AUDITHAWK_CRASH_STATE", state.path())
        .env("AUDITHAWK_CRASH_N", n.to_string())
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(9),
        "child must die by SIGKILL: {out:?}"
    );
    let srv = Server::start(Bulk::new(None)).await;
    let yaml = format!(
        "- type: elasticsearch\n  endpoint: {}\n  delivery: {{buffer: {{type: disk}}, {FAST}}}\n",
        srv.url()
    );
    let m = Arc::new(Metrics::new());
    let router = build_router(&cfgs(&yaml), m.clone(), state.path())
        .await
        .unwrap();
    assert_eq!(
        m.gauge_value(
            "audithawk_sink_buffered_events",
            &[("sink", "elasticsearch")]
        ),
        n as i64
    );
    assert!(router.shutdown(Duration::from_secs(10)).await);
    {
        let docs = srv.h.docs.lock();
        assert_eq!(docs.len(), n);
        for i in 0..n {
            assert!(docs.contains_key(&alert(i).event.id), "alert {i} lost");
        }
    }
    // Delivered and acknowledged: a second restart sends nothing again.
    let srv2 = Server::start(Bulk::new(None)).await;
    let yaml2 = yaml.replace(&srv.url(), &srv2.url());
    let router = build_router(&cfgs(&yaml2), Arc::new(Metrics::new()), state.path())
        .await
        .unwrap();
    assert!(router.shutdown(Duration::from_secs(5)).await);
    assert_eq!(srv2.h.docs.lock().len(), 0);
}

#[tokio::test]
async fn disk_buffer_full_blocks_dispatch_under_block_policy() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        "- type: elasticsearch\n  endpoint: {url}\n  healthcheck: false\n  delivery: {{buffer: {{type: disk, max_bytes: 1048576}}, {FAST}}}\n"
    );
    let router = build_router(&cfgs(&yaml), Arc::new(Metrics::new()), state.path())
        .await
        .unwrap();
    let mut i = 0;
    let blocked = loop {
        match tokio::time::timeout(Duration::from_millis(500), router.dispatch(alert(i))).await {
            Ok(()) => i += 1,
            Err(_) => break true,
        }
        if i > 5000 {
            break false;
        }
    };
    assert!(
        blocked,
        "1 MiB holds far fewer than 5000 alerts, so dispatch must block"
    );
    assert!(i > 100, "only {i} buffered");
    assert!(!router.shutdown(Duration::from_millis(50)).await);
}

#[tokio::test]
async fn routing_sends_critical_to_the_pager_and_everything_to_splunk() {
    let hec = Server::start(Hec::new("tok-123")).await;
    let pager = Server::start(Hec::new("pager-token")).await;
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{}- type: splunk_hec\n  name: pager\n  endpoint: {}\n  token: pager-token\n  route: {{min_level: critical}}\n  delivery: {{{FAST}}}\n",
        hec_yaml(&hec.url(), ""),
        pager.url()
    );
    let router = build_router(&cfgs(&yaml), Arc::new(Metrics::new()), state.path())
        .await
        .unwrap();
    router.dispatch(alert_at(1, Level::High, "r1")).await;
    router.dispatch(alert_at(2, Level::Critical, "r2")).await;
    router.dispatch(alert_at(3, Level::Low, "r3")).await;
    assert!(router.shutdown(Duration::from_secs(5)).await);
    assert_eq!(hec.h.ids().len(), 3);
    let p = pager.h.events.lock();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["event"]["rule"]["id"], "r2");
}
