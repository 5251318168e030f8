//! The two-tier path (docs/scale-out.md) end to end on one machine: webhook ingest with
//! `--forward-to kafka` → events topic → one detector (`detect --from kafka`, all built-in
//! rules) → file sink. The broker is librdkafka's mock cluster (3 brokers, in process, real
//! Kafka protocol on loopback), so the figures include a broker on the same two cores.
//!
//! Run: `cargo bench --bench kafka` (release). Prints:
//! - full rate: events/s acknowledged by ingest (HTTP 200 after acks=all), and events/s
//!   through detection (until the detector has evaluated every event);
//! - light load (one 400-event batch at a time): the POST latency (the wait for the
//!   brokers' acknowledgement) and POST → evaluated-by-the-detector latency, p50/p99/max.
//!
//! Scale with `KAFKA_BENCH_EVENTS` (default 200,000) and `KAFKA_BENCH_CLIENTS` (4). With
//! `KAFKA_BENCH_BROKERS=host:port` it runs against that broker instead of the mock cluster
//! (docs/scale-out.md shows how to start Tansu).

use std::sync::Arc;
use std::time::{Duration, Instant};

use audithawk::app::{self, RunOptions};
use audithawk::cli::{build_engine, RuleArgs};
use audithawk::config::Config;
use audithawk::generate::{generate, GenConfig, Limit};
use audithawk::telemetry::Metrics;
use rdkafka::mocking::MockCluster;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs a small smoke version.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n_events = env("KAFKA_BENCH_EVENTS", if quick { 4_000 } else { 200_000 });
    let clients = env("KAFKA_BENCH_CLIENTS", 4);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(n_events, clients, if quick { 5 } else { 100 }));
}

/// EventList bodies of 400 generated events each.
fn batches(n: usize) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let cfg = GenConfig {
        seed: 7,
        limit: Limit::Events(n as u64),
        rate_per_sec: 500.0,
        ..GenConfig::default()
    };
    let mut buf = Vec::new();
    generate(&cfg, &mut buf).expect("generate");
    let text = String::from_utf8(buf).expect("utf8");
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    for chunk in lines.chunks(400) {
        out.push((
            format!(
                r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
                chunk.join(",")
            ),
            chunk.len(),
        ));
    }
    out
}

async fn run(n_events: usize, clients: usize, light_batches: usize) {
    // A real broker when given (KAFKA_BENCH_BROKERS=host:port; fresh topics per run, made
    // by the tiers), else librdkafka's mock cluster.
    let (_mock, brokers, topics) = match std::env::var("KAFKA_BENCH_BROKERS") {
        Ok(b) => {
            let run = format!("{:x}", fastrand::u64(..));
            eprintln!("broker: {b} (topics bench-{run}-*)");
            let t = format!(
                "  events_topic: bench-{run}-events\n  state_topic: bench-{run}-state\n  group_id: bench-{run}\n  create_topics: true\n  replication: 1\n"
            );
            (None, b, t)
        }
        Err(_) => {
            let mc = MockCluster::new(3).expect("mock cluster");
            mc.create_topic("audithawk.events", 12, 1).expect("topic");
            mc.create_topic("audithawk.state", 1, 1).expect("topic");
            eprintln!("broker: librdkafka mock cluster (3 brokers, in process)");
            let b = mc.bootstrap_servers();
            (Some(mc), b, "  create_topics: false\n".to_string())
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        r#"
serve: {{listen: "127.0.0.1:0"}}
cluster: bench
data_dir: {data}
shutdown_timeout: 30s
sinks:
  - type: file
    path: {alerts}
kafka:
  brokers: "{brokers}"
{topics}  snapshot_interval: 5s
  detect_listen: ""
"#,
        data = dir.path().join("data").display(),
        alerts = dir.path().join("alerts.jsonl").display(),
    );
    let cfg = Config::from_yaml(&yaml, "bench.yaml").expect("config");
    eprintln!("generating {n_events} events ...");
    let bodies = Arc::new(batches(n_events));
    let total: usize = bodies.iter().map(|b| b.1).sum();

    // Ingest tier.
    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(build_engine(&cfg, &RuleArgs::default(), &metrics).expect("rules"));
    let (stop_ingest, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let ingest = {
        let cfg = cfg.clone();
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
                    forward_to_kafka: true,
                    ..Default::default()
                },
            )
            .await
            .expect("ingest");
        })
    };
    let url = format!("http://{}/audit", bound_rx.await.expect("bound"));

    // Phase 1: the ingest tier alone (the detector is not running yet).
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, bodies, next) =
            (client.clone(), url.clone(), bodies.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((body, _)) = bodies.get(i) else {
                    break;
                };
                loop {
                    let r = client
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("post");
                    if r.status() == 200 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let acked = t0.elapsed();
    println!(
        "ingest tier alone ({clients} clients, {total} events in 400-event EventLists, 200 after acks=all): {:.0} events/s ({:.2?})",
        total as f64 / acked.as_secs_f64(),
        acked,
    );

    // Detector tier.
    let dmetrics = Arc::new(Metrics::new());
    let dengine = Arc::new(build_engine(&cfg, &RuleArgs::default(), &dmetrics).expect("rules"));
    let (stop_det, dstop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ctl_tx, ctl_rx) = tokio::sync::oneshot::channel();
    let detector = {
        let cfg = cfg.clone();
        let dmetrics = dmetrics.clone();
        tokio::spawn(async move {
            app::detect_kafka(
                &cfg,
                dengine,
                dmetrics,
                async move {
                    let _ = dstop_rx.await;
                },
                Some(ctl_tx),
            )
            .await
            .expect("detector");
        })
    };
    let ctl = ctl_rx.await.expect("detector started");

    // Phase 2: the detector catches up on the backlog (all built-in rules).
    let mut owned = ctl.owned();
    let _ = owned.wait_for(|o| o.len() == 12).await;
    // Timed from the assignment (the group join itself takes the broker's initial
    // rebalance delay, ~3 s, once per start).
    let t1 = Instant::now();
    let evaluated =
        |ctl: &audithawk::kafka::detect::DetectorControl| -> i64 { ctl.positions().values().sum() };
    while evaluated(&ctl) < total as i64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let through = t1.elapsed();
    println!(
        "detector tier alone (one detector, 12 partitions, backlog of {total}): {:.0} events/s ({:.2?} from the assignment)",
        total as f64 / through.as_secs_f64(),
        through,
    );

    // Phase 3, light load, both tiers running: one batch at a time, re-sending pool batches with fresh audit IDs would
    // be de-duplicated otherwise, so use the first batches again under another cluster
    // path (a different cluster is a different event).
    let mut ack_ms = Vec::new();
    let mut e2e_ms = Vec::new();
    for i in 0..light_batches {
        let (body, n) = &bodies[i % bodies.len()];
        let before = evaluated(&ctl);
        let t = Instant::now();
        let r = client
            .post(format!("{url}/light-{i}"))
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200);
        ack_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        while evaluated(&ctl) < before + *n as i64 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        e2e_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mx = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!(
        "light load ({light_batches} batches of 400, one at a time): POST (broker ack) p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; POST -> evaluated by the detector p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&mut ack_ms.clone(), 0.5),
        pct(&mut ack_ms.clone(), 0.99),
        mx(&ack_ms),
        pct(&mut e2e_ms.clone(), 0.5),
        pct(&mut e2e_ms.clone(), 0.99),
        mx(&e2e_ms),
    );
    println!("alerts: {}", dmetrics.total("audithawk_alerts_total"));
    let _ = stop_ingest.send(());
    let _ = ingest.await;
    let _ = stop_det.send(());
    let _ = detector.await;
}
