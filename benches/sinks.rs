//! Sink throughput: alerts/s from `Router::dispatch` to a local strict HEC mock and a local
//! `_bulk` mock with default batching (1000 events / 1 MiB / 1 s, gzip, concurrency 2),
//! with the in-memory queue and with the disk buffer; and the CPU per forwarded raw audit
//! event (filter + redact + serialise). A plain harness: each figure is one timed run after
//! a warm-up, printed as a line.
//!
//! Run: `cargo bench --bench sinks` (set `SINKS_BENCH_N` to change the alert count).
//! The mocks run in the same process and parse every request strictly, so they compete
//! with the sink for the machine's cores: the figures are a lower bound.

#[path = "../tests/mock/mod.rs"]
mod mock;

use std::sync::Arc;
use std::time::{Duration, Instant};

use audithawk::model::{Alert, AuditEvent, Level, RuleMeta, SharedAlert};
use audithawk::sinks::config::{build_router, SinkConfig};
use audithawk::sinks::raw::{self, RawFilter};
use audithawk::telemetry::Metrics;
use mock::{bulk::Bulk, hec::Hec, Server};

fn alerts(n: usize) -> Vec<SharedAlert> {
    let meta = RuleMeta {
        id: "3b8f3c2e-9a41-4d55-9a57-0c6f0e2a7d10".into(),
        title: "Secrets read in many namespaces by one identity".into(),
        level: Level::High,
        tags: vec!["attack.credential-access".into(), "attack.t1552.007".into()],
        description: "An identity read secrets in many namespaces; check whether it should.".into(),
        references: vec!["https://attack.mitre.org/techniques/T1552/007/".into()],
        author: Some("audithawk".into()),
        source: "builtin".into(),
    };
    (0..n)
        .map(|i| {
            let ev = AuditEvent::parse(&format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{:08x}-0000-4000-8000-000000000000","stage":"ResponseComplete",
                "requestURI":"/api/v1/namespaces/ns{}/secrets/db-{i}","verb":"get","user":{{"username":"system:serviceaccount:ci:deployer","uid":"u1","groups":["system:serviceaccounts","system:authenticated"]}},
                "sourceIPs":["10.0.3.7"],"userAgent":"kubectl/v1.30.1 (linux/amd64)","objectRef":{{"resource":"secrets","namespace":"ns{}","name":"db-{i}","apiVersion":"v1"}},
                "responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"2024-05-01T10:00:00.000000Z","stageTimestamp":"2024-05-01T10:00:00.004000Z",
                "annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding"}}}}"#,
                i,
                i % 50,
                i % 50
            ))
            .unwrap()
            .into_owned();
            Arc::new(Alert::new(&meta, &ev, chrono::Utc::now()))
        })
        .collect()
}

/// CPU seconds (user + system) this process has used so far, from /proc/self/stat.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

async fn run(label: &str, yaml: String, batch: &[SharedAlert], delivered: impl Fn() -> usize) {
    // SINKS_BENCH_ONLY=<substring> runs only the matching figures (for profiling).
    if let Ok(only) = std::env::var("SINKS_BENCH_ONLY") {
        if !label.contains(&only) {
            return;
        }
    }
    let state = tempfile::tempdir().unwrap();
    let cfg: Vec<SinkConfig> = serde_yaml_ng::from_str(&yaml).unwrap();
    let router = build_router(&cfg, Arc::new(Metrics::new()), state.path())
        .await
        .unwrap();
    let t = Instant::now();
    let cpu = cpu_secs();
    for a in batch {
        router.dispatch(a.clone()).await;
    }
    assert!(router.shutdown(Duration::from_secs(300)).await);
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu;
    assert!(
        delivered() >= batch.len(),
        "{label}: only {} delivered",
        delivered()
    );
    println!(
        "{label:<44} {:>9.0} alerts/s  ({} alerts in {secs:.2} s; CPU {:.1} µs/alert incl. the mock)",
        batch.len() as f64 / secs,
        batch.len(),
        cpu * 1e6 / batch.len() as f64
    );
}

fn main() {
    let n: usize = std::env::var("SINKS_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let all = alerts(n);
    // Encoding alone (one core): the sink-side ceiling.
    {
        use audithawk::sinks::elasticsearch::encoder as es;
        use audithawk::sinks::splunk_hec::encoder as hec;
        let meta = hec::HecMeta {
            host: None,
            source: "audithawk".into(),
            sourcetype: "audithawk:alert".into(),
            index: None,
            fields: Default::default(),
            label_fields: true,
        };
        let target = es::Target::DataStream("logs-audithawk.alert-default".into());
        let time = |label: &str, f: &dyn Fn(&[SharedAlert]) -> usize| {
            let t = Instant::now();
            let mut bytes = 0;
            for chunk in all.chunks(1000) {
                bytes += f(chunk);
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{label:<44} {:>9.0} alerts/s  ({:.0} MB/s out)",
                all.len() as f64 / secs,
                bytes as f64 / secs / 1e6
            );
        };
        time("encode: HEC envelopes", &|c| hec::encode(c, &meta).len());
        time("encode: HEC envelopes + gzip", &|c| {
            audithawk::sinks::http::gzip(&hec::encode(c, &meta)).len()
        });
        time("encode: _bulk NDJSON", &|c| es::encode(c, &target).len());
        time("encode: _bulk NDJSON + gzip", &|c| {
            audithawk::sinks::http::gzip(&es::encode(c, &target)).len()
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // (mock mode, buffer): the strict mock builds every event as a JSON value like the
        // tests do; the counting mock checks auth, gzip and JSON syntax but keeps only ids.
        for (strict, buffer) in [(true, "memory"), (false, "memory"), (false, "disk")] {
            let mode = if strict { "strict" } else { "counting" };
            let mut h = Hec::new("tok");
            h.count_only = !strict;
            let hec = Server::start(h).await;
            let yaml = format!(
                "- type: splunk_hec\n  endpoint: {}\n  token: tok\n  delivery: {{buffer: {{type: {buffer}}}}}\n",
                hec.url()
            );
            run(&format!("splunk_hec ({mode} mock, {buffer} buffer)"), yaml, &all, || {
                hec.h.accepted.load(std::sync::atomic::Ordering::SeqCst) as usize
            })
            .await;
            assert!(hec.h.common.violations.lock().is_empty());
            drop(hec);
            let mut b = Bulk::new(None);
            b.count_only = !strict;
            let es = Server::start(b).await;
            let yaml = format!(
                "- type: elasticsearch\n  endpoint: {}\n  delivery: {{buffer: {{type: {buffer}}}}}\n",
                es.url()
            );
            run(&format!("elasticsearch ({mode} mock, {buffer} buffer)"), yaml, &all, || es.h.created.lock().len()).await;
            assert!(es.h.common.violations.lock().is_empty());
        }
    });

    // Raw forwarding: the CPU the forwarder adds per accepted audit event, for a
    // RequestResponse event with a body (parsed, redacted, re-serialised) and a Metadata
    // event (forwarded as received), plus the HEC envelope it then costs.
    let body_ev = |i: usize| {
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"id-{i}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/configmaps/c{i}?token=abc","verb":"update","user":{{"username":"alice","groups":["dev"]}},"sourceIPs":["10.0.0.1"],"objectRef":{{"resource":"configmaps","namespace":"prod","name":"c{i}"}},"responseStatus":{{"code":200}},"requestObject":{{"kind":"ConfigMap","data":{{"a":"1","b":"2"}}}},"stageTimestamp":"2024-05-01T10:00:00.004000Z"}}"#
        )
    };
    let meta_ev = |i: usize| {
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"id-{i}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/pods/p{i}","verb":"get","user":{{"username":"alice","groups":["dev"]}},"sourceIPs":["10.0.0.1"],"userAgent":"kubectl/v1.30.1","objectRef":{{"resource":"pods","namespace":"prod","name":"p{i}","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"2024-05-01T10:00:00.000000Z","stageTimestamp":"2024-05-01T10:00:00.004000Z","annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}}}"#
        )
    };
    let meta = audithawk::sinks::splunk_hec::encoder::HecMeta {
        host: None,
        source: "audithawk".into(),
        sourcetype: "kube:apiserver:audit".into(),
        index: None,
        fields: Default::default(),
        label_fields: false,
    };
    for (label, make) in [
        (
            "RequestResponse + body",
            &body_ev as &dyn Fn(usize) -> String,
        ),
        ("Metadata", &meta_ev),
    ] {
        let texts: Vec<String> = (0..20_000).map(make).collect();
        let events: Vec<AuditEvent<'_>> = texts
            .iter()
            .map(|t| AuditEvent::parse(t).unwrap())
            .collect();
        let filter = RawFilter::default();
        let t = Instant::now();
        let mut kept = 0;
        let mut out = Vec::new();
        for _ in 0..5 {
            for ev in &events {
                if filter.accepts(ev) {
                    if let Some(r) = raw::record(ev) {
                        kept += 1;
                        out.clear();
                        audithawk::sinks::splunk_hec::encoder::encode_one(&r, &meta, &mut out);
                    }
                }
            }
        }
        let per = t.elapsed().as_secs_f64() / kept as f64;
        println!(
            "raw forwarding, {label:<24} {:>7.2} µs/event (filter+redact+record+HEC envelope)",
            per * 1e6
        );
    }
}
