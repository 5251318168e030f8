//! Scale-out through Kafka, against librdkafka's in-process mock cluster (real Kafka
//! protocol on loopback ports): the ingest tier answers 200 only after the brokers
//! acknowledged and 429 while they are down; detectors in a group keep state per partition,
//! and killing one in the middle of a secret sweep still gives exactly one alert; the alert
//! sink delivers and retries.
//!
//! With `AUDITHAWK_KAFKA_BROKERS=host:port` set, `real_broker_round_trip` runs the two tiers
//! against that broker (Tansu: `cargo install tansu --features dynostore && tansu broker
//! --storage-engine memory://tansu/`; docs/scale-out.md), and skips otherwise.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audithawk::app::{self, RunOptions};
use audithawk::cli::{build_engine, RuleArgs};
use audithawk::config::Config;
use audithawk::kafka::detect::DetectorControl;
use audithawk::telemetry::Metrics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const EVENTS: &str = "audithawk.events";
const STATE: &str = "audithawk.state";
const ALERTS: &str = "audithawk.alerts";

/// A mock cluster of three brokers with the topics created.
fn cluster(partitions: i32) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mc = MockCluster::new(3).expect("mock cluster");
    mc.create_topic(EVENTS, partitions, 1).unwrap();
    mc.create_topic(STATE, 1, 1).unwrap();
    mc.create_topic(ALERTS, 2, 1).unwrap();
    mc
}

/// Waits for `cond`, checking every 20 ms, failing after `limit`. (The condition is state
/// in librdkafka's threads or a consumer group, which offers no signal to wait on.)
async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn event(n: usize, user: &str, verb: &str, resource: &str, ns: &str) -> serde_json::Value {
    let ts = format!("2026-11-24T10:{:02}:{:02}.000000Z", (n / 60) % 60, n % 60);
    let mut ev = serde_json::json!({
        "level": "RequestResponse",
        "auditID": format!("00000000-0000-4000-8000-{n:012}"),
        "stage": "ResponseComplete",
        "requestURI": format!("/api/v1/namespaces/{ns}/{resource}/obj{n}"),
        "verb": verb,
        "user": {"username": user, "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.7"],
        "userAgent": "kubectl/v1.31.0",
        "objectRef": {"resource": resource, "namespace": ns, "name": format!("obj{n}"), "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": ts,
        "stageTimestamp": ts,
    });
    if resource == "secrets" {
        ev["responseObject"] = serde_json::json!({
            "kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": format!("obj{n}"), "namespace": ns},
            "data": {"password": "aHVudGVyMg=="}
        });
    }
    ev
}

/// POSTs `items` as one EventList, as the API server's webhook backend does.
async fn post_events(url: &str, items: &[serde_json::Value]) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json")
        .body(event_list(items))
        .send()
        .await
        .unwrap()
}

/// Waits (at most 30 s) until the partitions `d` owns satisfy `pred`.
async fn wait_owned(d: &Det, what: &str, pred: impl FnMut(&Vec<i32>) -> bool) {
    let mut owned = d.control.owned();
    tokio::time::timeout(Duration::from_secs(30), owned.wait_for(pred))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"))
        .unwrap();
}

fn event_list(items: &[serde_json::Value]) -> String {
    serde_json::json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})
        .to_string()
}

/// The test configuration; `kafka_extra` (indented lines of the `kafka:` section) replaces
/// the defaults `create_topics: false` (the mock cluster's topics are made by `cluster`),
/// `commit_interval: 100ms` and `snapshot_interval: 150ms`.
fn base_yaml(brokers: &str, dir: &Path, kafka_extra: &str, extra: &str) -> String {
    let kafka_extra = if kafka_extra.is_empty() {
        "  create_topics: false\n  commit_interval: 100ms\n  snapshot_interval: 150ms\n"
    } else {
        kafka_extra
    };
    format!(
        r#"
serve:
  listen: "127.0.0.1:0"
cluster: prod
data_dir: {data}
shutdown_timeout: 10s
kafka:
  brokers: "{brokers}"
{kafka_extra}  ack_timeout: 1500ms
  detect_listen: "127.0.0.1:0"
  properties:
    session.timeout.ms: "6000"
    heartbeat.interval.ms: "300"
    topic.metadata.refresh.interval.ms: "500"
{extra}"#,
        data = dir.join("data").display(),
    )
}

/// A running ingest tier: its URL (serve only) and stop signal.
struct Ingest {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

/// Runs `serve --forward-to kafka`, or `tail --forward-to kafka` when `tail`.
async fn start_forwarder(cfg: &Config, tail: bool) -> Ingest {
    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(build_engine(cfg, &RuleArgs::default(), &metrics).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let task = {
        let cfg = cfg.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop_rx.await;
            };
            let opts = RunOptions {
                bound: Some(bound_tx),
                forward_to_kafka: true,
                ..Default::default()
            };
            if tail {
                app::tail_with(&cfg, engine, metrics, shutdown, opts).await
            } else {
                app::serve_with(&cfg, engine, metrics, shutdown, opts).await
            }
            .unwrap();
        })
    };
    let url = match tail {
        true => String::new(),
        false => format!("http://{}/audit", bound_rx.await.unwrap()),
    };
    Ingest {
        url,
        stop: stop_tx,
        task,
        metrics,
    }
}

/// One consumed message: (partition, key, headers, payload).
type Msg = (i32, String, Vec<(String, String)>, String);

/// Every message of `topic` now (no waiting for more).
fn read_all(brokers: &str, topic: &str) -> Vec<Msg> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(5)))
        .unwrap();
    let parts = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut left = 0i64;
    for p in 0..parts {
        let (lo, hi) = c
            .fetch_watermarks(topic, p, Timeout::After(Duration::from_secs(5)))
            .unwrap();
        left += hi - lo;
        tpl.add_partition_offset(topic, p, Offset::Offset(lo))
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    while left > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "reading {topic} timed out"
        );
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                m.partition(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into(),
                headers,
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into(),
            ));
            left -= 1;
        }
    }
    out
}

/// Messages acknowledged so far in `topic` (sum of high watermarks).
fn acked(brokers: &str, topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Timeout::After(Duration::from_secs(5)))
        .unwrap();
    (0..md.topics()[0].partitions().len() as i32)
        .map(|p| {
            c.fetch_watermarks(topic, p, Timeout::After(Duration::from_secs(5)))
                .unwrap()
                .1
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_answers_200_only_after_the_brokers_acknowledged_keyed_and_redacted() {
    let mc = cluster(4);
    let brokers = mc.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_yaml(&base_yaml(&brokers, dir.path(), "", ""), "t.yaml").unwrap();
    let Ingest {
        url,
        stop,
        task,
        metrics,
    } = start_forwarder(&cfg, false).await;

    let mut items = Vec::new();
    for i in 0..40 {
        let user = ["alice", "bob", "carol", "dave"][i % 4];
        items.push(event(i, user, "get", "secrets", &format!("ns{i}")));
    }
    let resp = post_events(&format!("{url}/prod"), &items).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["accepted"], 40);
    // The 200 came after the acknowledgement: every event is already in the log.
    assert_eq!(acked(&brokers, EVENTS), 40);
    assert_eq!(metrics.total("audithawk_kafka_published_total"), 40);

    let msgs = read_all(&brokers, EVENTS);
    assert_eq!(msgs.len(), 40);
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    for (p, key, headers, payload) in &msgs {
        // Keyed by cluster and acting user: a user's events share one partition.
        let user = key
            .strip_prefix("prod\u{1f}")
            .expect("key starts with the cluster");
        assert!(["alice", "bob", "carol", "dave"].contains(&user), "{key}");
        assert_eq!(*partition_of.entry(user.to_string()).or_insert(*p), *p);
        assert!(headers.contains(&("audithawk-cluster".into(), "prod".into())));
        // Redacted before it left the process; the keys stay.
        assert!(!payload.contains("aHVudGVyMg=="), "{payload}");
        assert!(
            payload.contains(r#""password":"***REDACTED***""#),
            "{payload}"
        );
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert_eq!(v["user"]["username"], user);
    }
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_answers_429_with_retry_after_while_the_brokers_are_down() {
    let mc = cluster(2);
    let brokers = mc.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_yaml(&base_yaml(&brokers, dir.path(), "", ""), "t.yaml").unwrap();
    let Ingest {
        url,
        stop,
        task,
        metrics,
    } = start_forwarder(&cfg, false).await;
    let post = |n: usize| {
        let url = url.clone();
        async move { post_events(&url, &[event(n, "alice", "list", "pods", "default")]).await }
    };
    assert_eq!(post(0).await.status(), 200);

    for b in 1..=3 {
        mc.broker_down(b).unwrap();
    }
    // The first batch waits for the acknowledgement (ack_timeout), then gives up.
    let r = post(1).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("Kafka"), "{body}");
    // Later ones are told at once, without holding the API server's connection.
    let t = Instant::now();
    let r = post(2).await;
    assert_eq!(r.status(), 429);
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    assert!(metrics.total("audithawk_kafka_publish_failed_total") >= 2);

    for b in 1..=3 {
        mc.broker_up(b).unwrap();
    }
    // The API server retries; once the brokers are back the batch is taken.
    let start = Instant::now();
    loop {
        let r = post(3).await;
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(start.elapsed() < Duration::from_secs(30), "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(());
    task.await.unwrap();
    // Nothing answered 200 is missing (the unacknowledged batches may also be there: the
    // API server re-sends them and the detectors de-duplicate).
    let ids: Vec<String> = read_all(&brokers, EVENTS)
        .into_iter()
        .map(|(_, _, _, p)| {
            serde_json::from_str::<serde_json::Value>(&p).unwrap()["auditID"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for n in [0usize, 3] {
        assert!(ids.contains(&format!("00000000-0000-4000-8000-{n:012}")));
    }
}

/// The sweep: one base rule and a distinct-namespace count per user.
const SWEEP_RULES: &str = r#"title: secret read
id: 6f0c3b1e-0000-4000-8000-000000000001
name: secret_read
level: low
logsource: {product: kubernetes, service: audit}
detection:
  sel: {verb: get, objectRef.resource: secrets}
  condition: sel
---
title: secret sweep
id: 6f0c3b1e-0000-4000-8000-000000000002
level: high
correlation:
  type: value_count
  rules: [secret_read]
  group-by: [user.username]
  timespan: 30m
  condition: {field: objectRef.namespace, gte: 10}
"#;

struct Det {
    control: DetectorControl,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    alerts: std::path::PathBuf,
}

async fn start_detector(
    brokers: &str,
    kafka_extra: &str,
    dir: &Path,
    name: &str,
    rules: &Path,
) -> Det {
    let alerts = dir.join(format!("{name}.jsonl"));
    let extra = format!(
        "rules: {{builtin: false, dirs: [{}]}}\nstate: {{allowed_lateness: 1s}}\nsinks:\n  - type: file\n    path: {}\n    delivery: {{batch_timeout_ms: 10}}\n",
        rules.display(),
        alerts.display()
    );
    let mut cfg = Config::from_yaml(
        &base_yaml(brokers, &dir.join(name), kafka_extra, &extra),
        "t.yaml",
    )
    .unwrap();
    cfg.state.state_dir = None;
    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(build_engine(&cfg, &RuleArgs::default(), &metrics).unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ctl_tx, ctl_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        app::detect_kafka(
            &cfg,
            engine,
            metrics,
            async move {
                let _ = stop_rx.await;
            },
            Some(ctl_tx),
        )
        .await
        .unwrap();
    });
    Det {
        control: ctl_rx.await.unwrap(),
        stop: Some(stop_tx),
        task,
        alerts,
    }
}

fn sweep_alerts(paths: &[&Path]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for p in paths {
        let Ok(text) = std::fs::read_to_string(p) else {
            continue;
        };
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            if v["rule"]["id"] == "6f0c3b1e-0000-4000-8000-000000000002" {
                out.push(v);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_detector_mid_sweep_still_gives_exactly_one_alert() {
    let mc = cluster(4);
    let brokers = mc.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("sweep.yml"), SWEEP_RULES).unwrap();
    let ingest_cfg = Config::from_yaml(&base_yaml(&brokers, dir.path(), "", ""), "t.yaml").unwrap();
    let Ingest {
        url,
        stop: stop_ingest,
        task: ingest,
        ..
    } = start_forwarder(&ingest_cfg, false).await;
    let mut n = 0usize;
    // Sends sweep reads by mallory in namespaces `nss`, mixed with other users' reads.
    let mut send = |nss: std::ops::Range<usize>| {
        let mut items = Vec::new();
        for i in nss {
            items.push(event(n, "mallory", "get", "secrets", &format!("team-{i}")));
            n += 1;
            items.push(event(
                n,
                &format!("dev{}", n % 5),
                "get",
                "secrets",
                "shared",
            ));
            n += 1;
        }
        let url = url.clone();
        async move {
            let r = post_events(&format!("{url}/prod"), &items).await;
            assert_eq!(r.status(), 200);
        }
    };
    let all = || {
        let mut v: Vec<i32> = (0..4).collect();
        v.sort_unstable();
        v
    };

    // Detector A alone takes every partition and sees the first 4 namespaces.
    let a = start_detector(&brokers, "", dir.path(), "a", &rules).await;
    wait_owned(&a, "A owns every partition", |o| *o == all()).await;
    send(0..4).await;

    // B joins: A hands every partition over (commit + snapshot), then they share.
    let b = start_detector(&brokers, "", dir.path(), "b", &rules).await;
    wait_owned(&b, "B gets partitions", |o| !o.is_empty()).await;
    wait_owned(&a, "A keeps some partitions", |o| {
        !o.is_empty() && o.len() < 4
    })
    .await;

    // 4 more namespaces, evaluated by whoever owns mallory's partition, and snapshotted.
    send(4..8).await;
    let end = acked(&brokers, EVENTS);
    until(
        "both detectors evaluated and snapshotted everything",
        Duration::from_secs(30),
        || {
            let (pa, pb) = (a.control.positions(), b.control.positions());
            pa.values().chain(pb.values()).sum::<i64>() == end
                && a.control.unsnapshotted() == 0
                && b.control.unsnapshotted() == 0
        },
    )
    .await;
    assert!(
        sweep_alerts(&[&a.alerts, &b.alerts]).is_empty(),
        "8 namespaces is below the threshold"
    );

    // Kill the owner of mallory's partition: no commit, no snapshot, no goodbye.
    let mallory_partition = read_all(&brokers, EVENTS)
        .into_iter()
        .find(|(_, k, _, _)| k.ends_with("mallory"))
        .unwrap()
        .0;
    let (victim, mut survivor) = if a.control.positions().contains_key(&mallory_partition) {
        (a, b)
    } else {
        (b, a)
    };
    victim.control.crash();
    victim.task.abort();
    let _ = victim.task.await;
    wait_owned(&survivor, "the survivor takes every partition", |o| {
        *o == all()
    })
    .await;

    // The last 4 namespaces reach 12 >= 10 on the survivor, which restored the windows.
    send(8..12).await;
    let end = acked(&brokers, EVENTS);
    until(
        "the survivor evaluated everything",
        Duration::from_secs(30),
        || survivor.control.positions().values().sum::<i64>() == end,
    )
    .await;
    // Held for the allowed lateness (1 s of idle), then decided.
    let paths = [victim.alerts.clone(), survivor.alerts.clone()];
    until("the sweep alert", Duration::from_secs(30), || {
        !sweep_alerts(&[&paths[0], &paths[1]]).is_empty()
    })
    .await;
    let _ = survivor.stop.take().unwrap().send(());
    survivor.task.await.unwrap();
    let _ = stop_ingest.send(());
    ingest.await.unwrap();

    let found = sweep_alerts(&[&victim.alerts, &survivor.alerts]);
    assert_eq!(found.len(), 1, "{found:#?}");
    let corr = &found[0]["correlation"];
    assert!(corr.to_string().contains("mallory"), "{corr}");
    // Offsets are committed: a restarted group member does not start over.
    drop(victim.stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_sink_delivers_keyed_by_alert_id_and_retries_while_down() {
    use audithawk::sinks::kafka::{KafkaSink, KafkaSinkConfig};
    use audithawk::sinks::{SendOutcome, Sink};
    let mc = cluster(2);
    let brokers = mc.bootstrap_servers();
    let cfg: KafkaSinkConfig = serde_yaml_ng::from_str(&format!(
        "{{brokers: \"{brokers}\", topic: {ALERTS}, request_timeout_secs: 2}}"
    ))
    .unwrap();
    assert!(cfg.validate("sinks[0]").is_empty());
    let sink = KafkaSink::new(&cfg).unwrap();
    sink.healthcheck().await.unwrap();

    let text = event(1, "alice", "get", "secrets", "prod").to_string();
    let ev = audithawk::model::AuditEvent::parse(&text).unwrap();
    let rules = audithawk::rules::RuleSet::from_texts(
        &[("r.yml", SWEEP_RULES.split("---").next().unwrap())],
        &[],
        false,
    )
    .unwrap()
    .0;
    let meta = &rules.rules()[0].meta;
    let alerts: Vec<audithawk::model::SharedAlert> = (0..5)
        .map(|i| {
            let mut a = audithawk::model::Alert::new(meta, &ev, chrono::Utc::now());
            a.event.id = format!("alert-{i}");
            Arc::new(a)
        })
        .collect();
    assert_eq!(sink.send(&alerts).await, SendOutcome::Done);
    let msgs = read_all(&brokers, ALERTS);
    assert_eq!(msgs.len(), 5);
    for (_, key, headers, payload) in &msgs {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert_eq!(v["event"]["id"], key.as_str());
        assert!(headers.contains(&(
            "rule_id".into(),
            "6f0c3b1e-0000-4000-8000-000000000001".into()
        )));
    }

    for b in 1..=3 {
        mc.broker_down(b).unwrap();
    }
    match sink.send(&alerts[..2]).await {
        SendOutcome::Retry { .. } => {}
        other => panic!("expected a retry while the brokers are down, got {other:?}"),
    }

    // Bad settings are named.
    let bad: KafkaSinkConfig =
        serde_yaml_ng::from_str("{brokers: \"\", topic: \"no spaces\", properties: {acks: \"1\"}}")
            .unwrap();
    let p = bad.validate("sinks[1]").join("\n");
    for needle in [
        "sinks[1].brokers",
        "sinks[1].topic",
        "sinks[1].properties.acks",
    ] {
        assert!(p.contains(needle), "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_broker_round_trip() {
    let Ok(brokers) = std::env::var("AUDITHAWK_KAFKA_BROKERS") else {
        eprintln!("skipped: set AUDITHAWK_KAFKA_BROKERS=host:port to run against a real Kafka-API broker (docs/scale-out.md)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("sweep.yml"), SWEEP_RULES).unwrap();
    // Unique topics and group per run, created by the tiers themselves.
    let run = format!("{:x}", fastrand::u64(..));
    let kafka_extra = format!(
        "  events_topic: it-{run}-events\n  state_topic: it-{run}-state\n  group_id: it-{run}\n  create_topics: true\n  partitions: 2\n  replication: 1\n  commit_interval: 100ms\n  snapshot_interval: 150ms\n"
    );
    let yaml = base_yaml(&brokers, dir.path(), &kafka_extra, "");
    let cfg = Config::from_yaml(&yaml, "t.yaml").unwrap();
    let Ingest {
        url, stop, task, ..
    } = start_forwarder(&cfg, false).await;
    let items: Vec<_> = (0..12)
        .map(|i| event(i, "mallory", "get", "secrets", &format!("team-{i}")))
        .collect();
    let r = post_events(&format!("{url}/prod"), &items).await;
    assert_eq!(r.status(), 200);
    let mut det = start_detector(&brokers, &kafka_extra, dir.path(), "det", &rules).await;
    until("the sweep alert", Duration::from_secs(60), || {
        det.control.positions().values().sum::<i64>() >= 12
            && !sweep_alerts(&[&det.alerts]).is_empty()
    })
    .await;
    let _ = det.stop.take().unwrap().send(());
    det.task.await.unwrap();
    let _ = stop.send(());
    task.await.unwrap();
    assert_eq!(sweep_alerts(&[&det.alerts]).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_forwards_lines_and_checkpoints_after_the_acknowledgement() {
    let mc = cluster(2);
    let brokers = mc.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let lines: Vec<String> = (0..3)
        .map(|i| event(i, "erin", "get", "secrets", "prod").to_string())
        .collect();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let checkpoint = dir.path().join("tail.checkpoint");
    let extra = format!(
        "tail:\n  paths: [{}]\n  checkpoint: {}\n  from: beginning\n  poll_interval: 50ms\n",
        log.display(),
        checkpoint.display()
    );
    let cfg = Config::from_yaml(&base_yaml(&brokers, dir.path(), "", &extra), "t.yaml").unwrap();
    let ingest = start_forwarder(&cfg, true).await;
    until("three lines in the topic", Duration::from_secs(30), || {
        acked(&brokers, EVENTS) == 3
    })
    .await;
    let _ = ingest.stop.send(());
    ingest.task.await.unwrap();
    let msgs = read_all(&brokers, EVENTS);
    assert_eq!(msgs.len(), 3);
    for (_, key, headers, payload) in &msgs {
        assert_eq!(key, "prod\u{1f}erin");
        assert!(headers.contains(&("audithawk-cluster".into(), "prod".into())));
        assert!(payload.contains("***REDACTED***"), "{payload}");
    }
    // The checkpoint covers the three lines: a restart does not publish them again.
    let cp = std::fs::read_to_string(&checkpoint).unwrap();
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(cp.contains(&format!("\"offset\":{len},")), "{cp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_commit_re_emits_the_same_alerts_rather_than_losing_them() {
    let mc = cluster(2);
    let brokers = mc.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    // The single-event rule alone, at high: every matching event alerts.
    let single = SWEEP_RULES
        .split("---")
        .next()
        .unwrap()
        .replace("level: low", "level: high");
    std::fs::write(rules.join("read.yml"), single).unwrap();
    let ingest_cfg = Config::from_yaml(&base_yaml(&brokers, dir.path(), "", ""), "t.yaml").unwrap();
    let ingest = start_forwarder(&ingest_cfg, false).await;
    let items: Vec<_> = (0..6)
        .map(|i| event(i, &format!("user{i}"), "get", "secrets", "prod"))
        .collect();
    let r = post_events(&format!("{}/prod", ingest.url), &items).await;
    assert_eq!(r.status(), 200);

    // Nothing is committed or snapshotted within the test: A's work is all in its sink.
    let never = "  create_topics: false\n  commit_interval: 1h\n  snapshot_interval: 1h\n";
    let ids = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    let a = start_detector(&brokers, never, dir.path(), "a", &rules).await;
    until("A delivered six alerts", Duration::from_secs(30), || {
        ids(&a.alerts).len() == 6
    })
    .await;
    // A answers probes and scrapes while it runs.
    let probe = format!("http://{}", a.control.probe_addr().expect("probe server"));
    let get = |path: &str| reqwest::get(format!("{probe}{path}"));
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    assert_eq!(get("/nowhere").await.unwrap().status(), 404);
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        text.contains(r#"audithawk_events_received_total{source="kafka"} 6"#),
        "{text}"
    );
    assert!(
        text.contains("audithawk_kafka_partition_restores_total"),
        "{text}"
    );

    a.control.crash();
    a.task.abort();
    let _ = a.task.await;

    // B finds no commit: it reads the partitions again and alerts again, with the same ids.
    let b = start_detector(&brokers, never, dir.path(), "b", &rules).await;
    until("B delivered six alerts", Duration::from_secs(30), || {
        ids(&b.alerts).len() == 6
    })
    .await;
    assert_eq!(ids(&a.alerts), ids(&b.alerts));

    // B stops gracefully and commits: C starts after the six and alerts on the new one only.
    let mut b = b;
    let _ = b.stop.take().unwrap().send(());
    b.task.await.unwrap();
    let c = start_detector(&brokers, never, dir.path(), "c", &rules).await;
    let r = post_events(
        &format!("{}/prod", ingest.url),
        &[event(6, "user6", "get", "secrets", "prod")],
    )
    .await;
    assert_eq!(r.status(), 200);
    until(
        "C evaluated the seventh event",
        Duration::from_secs(30),
        || c.control.positions().values().sum::<i64>() == 7 && !ids(&c.alerts).is_empty(),
    )
    .await;
    assert_eq!(ids(&c.alerts).len(), 1);
    let _ = ingest.stop.send(());
    ingest.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_snapshot_is_tombstoned_after_the_new_manifest_and_the_newest_loads() {
    use audithawk::kafka::snapshots::SnapshotStore;
    let mc = cluster(1);
    let brokers = mc.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_yaml(&base_yaml(&brokers, dir.path(), "", ""), "t.yaml").unwrap();
    let store = SnapshotStore::new(&cfg.kafka).unwrap();
    let first = store
        .enqueue(0, 10, b"{\"one\":1}")
        .unwrap()
        .acked()
        .await
        .unwrap();
    let second = store
        .enqueue(0, 20, b"{\"two\":2}")
        .unwrap()
        .acked()
        .await
        .unwrap();
    store.retire(0, &first);
    store.flush(Duration::from_secs(10)).unwrap();

    let loaded = store.load(&[0], Duration::from_secs(10)).unwrap();
    assert_eq!(loaded[&0].0, second);
    assert_eq!(loaded[&0].1, b"{\"two\":2}");
    // The state topic, in order: first chunks, first manifest, second chunks, second
    // manifest, then the tombstones (no payload) of the first chunks.
    let msgs = read_all(&brokers, STATE);
    let manifest_key = "audithawk-detect/audithawk.events/0";
    let second_manifest_at = msgs
        .iter()
        .rposition(|(_, k, _, v)| k == manifest_key && v.contains("\"offset\":20"))
        .expect("second manifest");
    let first_chunks = format!("{manifest_key}/{:016x}/", first.generation);
    let tombstones: Vec<usize> = msgs
        .iter()
        .enumerate()
        .filter(|(_, (_, k, _, v))| k.starts_with(&first_chunks) && v.is_empty())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(tombstones.len(), first.chunks as usize);
    assert!(
        tombstones.iter().all(|&i| i > second_manifest_at),
        "{msgs:?}"
    );
}
