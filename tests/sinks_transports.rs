//! Sinks over TLS, syslog framing, the webhook sink and raw audit-event forwarding.

mod mock;

use std::sync::Arc;
use std::time::Duration;

use audithawk::model::{Alert, AuditEvent, Level, RuleMeta, SharedAlert};
use audithawk::sinks::config::{build_router, SinkConfig};
use audithawk::sinks::raw::{RawForwardConfig, RawForwarder};
use audithawk::telemetry::Metrics;
use mock::{bulk::Bulk, hec::Hec, Action, Common, Handler, Pki, Reply, Req, Server, Special};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

fn alert(i: usize, level: Level) -> SharedAlert {
    let ev = AuditEvent::parse(&format!(
        r#"{{"auditID":"aud-{i}","verb":"delete","stage":"ResponseComplete","stageTimestamp":"2024-05-01T10:00:00.5Z",
            "user":{{"username":"mallory"}},"sourceIPs":["10.1.2.3"],"userAgent":"kubectl/1.30",
            "objectRef":{{"resource":"pods","namespace":"prod","name":"p{i}"}},"requestURI":"/api/v1/namespaces/prod/pods/p{i}",
            "responseStatus":{{"code":200}}}}"#
    ))
    .unwrap()
    .into_owned();
    let meta = RuleMeta {
        id: format!("rule|{i}"),
        title: "Pod deleted = bad".into(),
        level,
        tags: vec![],
        description: String::new(),
        references: vec![],
        author: None,
        source: "test".into(),
    };
    Arc::new(Alert::new(&meta, &ev, chrono::Utc::now()))
}

fn cfgs(yaml: &str) -> Vec<SinkConfig> {
    serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

const FAST: &str = "batch_timeout_ms: 20, retry_initial_ms: 5, retry_max_secs: 2";

#[tokio::test]
async fn hec_over_tls_with_a_custom_ca() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let srv = Server::start_tls(Hec::new("tok"), pki.server.clone()).await;
    let yaml = format!(
        "- type: splunk_hec\n  endpoint: {}\n  token: tok\n  tls: {{ca_file: {}}}\n  delivery: {{{FAST}}}\n",
        srv.https_url(),
        ca.display()
    );
    let router = build_router(&cfgs(&yaml), Arc::new(Metrics::new()), dir.path())
        .await
        .unwrap();
    router.dispatch(alert(1, Level::High)).await;
    assert!(router.shutdown(Duration::from_secs(5)).await);
    assert_eq!(srv.h.ids().len(), 1);

    // Without the CA the certificate is not trusted: the sink never delivers (retrying).
    let srv2 = Server::start_tls(Hec::new("tok"), pki.server.clone()).await;
    let yaml = format!(
        "- type: splunk_hec\n  name: untrusted\n  endpoint: {}\n  token: tok\n  delivery: {{{FAST}}}\n",
        srv2.https_url()
    );
    let m = Arc::new(Metrics::new());
    let router = build_router(&cfgs(&yaml), m.clone(), dir.path())
        .await
        .unwrap();
    router.dispatch(alert(2, Level::High)).await;
    assert!(!router.shutdown(Duration::from_millis(500)).await);
    assert!(srv2.h.ids().is_empty());
    assert!(
        m.value(
            "audithawk_sink_failed_total",
            &[("sink", "untrusted"), ("reason", "retriable")]
        ) > 0
    );

    // insecure_skip_verify accepts it (with a warning).
    let yaml = format!(
        "- type: splunk_hec\n  name: insecure\n  endpoint: {}\n  token: tok\n  tls: {{insecure_skip_verify: true}}\n  delivery: {{{FAST}}}\n",
        srv2.https_url()
    );
    let router = build_router(&cfgs(&yaml), Arc::new(Metrics::new()), dir.path())
        .await
        .unwrap();
    router.dispatch(alert(3, Level::High)).await;
    assert!(router.shutdown(Duration::from_secs(5)).await);
    assert_eq!(srv2.h.ids().len(), 1);
}

#[tokio::test]
async fn elasticsearch_with_a_client_certificate() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str, c: &str| {
        let f = dir.path().join(n);
        std::fs::write(&f, c).unwrap();
        f
    };
    let (ca, cert, key) = (
        p("ca.pem", &pki.ca_pem),
        p("client.pem", &pki.client_cert_pem),
        p("client.key", &pki.client_key_pem),
    );
    let srv = Server::start_tls(Bulk::new(None), pki.server_mtls.clone()).await;
    let yaml = format!(
        "- type: elasticsearch\n  endpoint: {}\n  tls: {{ca_file: {}, cert_file: {}, key_file: {}}}\n  delivery: {{{FAST}}}\n",
        srv.https_url(),
        ca.display(),
        cert.display(),
        key.display()
    );
    let router = build_router(&cfgs(&yaml), Arc::new(Metrics::new()), dir.path())
        .await
        .unwrap();
    router.dispatch(alert(1, Level::High)).await;
    assert!(router.shutdown(Duration::from_secs(5)).await);
    assert_eq!(srv.h.docs.lock().len(), 1);

    // Without the client certificate the server refuses the handshake.
    let yaml = format!(
        "- type: elasticsearch\n  name: nocert\n  endpoint: {}\n  healthcheck: false\n  tls: {{ca_file: {}}}\n  delivery: {{{FAST}}}\n",
        srv.https_url(),
        ca.display()
    );
    let m = Arc::new(Metrics::new());
    let router = build_router(&cfgs(&yaml), m.clone(), dir.path())
        .await
        .unwrap();
    router.dispatch(alert(2, Level::High)).await;
    assert!(!router.shutdown(Duration::from_millis(500)).await);
    assert_eq!(srv.h.docs.lock().len(), 1);
    assert!(
        m.value(
            "audithawk_sink_failed_total",
            &[("sink", "nocert"), ("reason", "retriable")]
        ) > 0
    );
}

/// Reads one octet-counted frame: `LEN SP MSG`.
async fn read_frame<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> Option<String> {
    let mut len = Vec::new();
    r.read_until(b' ', &mut len).await.ok()?;
    if len.is_empty() {
        return None;
    }
    let n: usize = std::str::from_utf8(&len[..len.len() - 1])
        .ok()?
        .parse()
        .unwrap_or_else(|_| panic!("bad frame length {len:?}"));
    let mut msg = vec![0u8; n];
    r.read_exact(&mut msg).await.ok()?;
    Some(String::from_utf8(msg).unwrap())
}

fn check_rfc5424(msg: &str, pri: u16) -> &str {
    let re = regex::Regex::new(
        r#"^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)) ([!-~]{1,255}) ([!-~]{1,48}) ([!-~]{1,128}) ([!-~]{1,32}) (-|\[[!-~&&[^= \]"]]{1,32}( [!-~&&[^= \]"]]{1,32}="(\\.|[^"\\\]])*")*\]) "#,
    )
    .unwrap();
    let c = re
        .captures(msg)
        .unwrap_or_else(|| panic!("not RFC 5424: {msg}"));
    assert_eq!(c[1].parse::<u16>().unwrap(), pri);
    &msg[c.get(0).unwrap().end()..]
}

#[tokio::test]
async fn syslog_tcp_rfc5424_octet_counting_json_and_cef() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "- type: syslog\n  address: {addr}\n  delivery: {{{FAST}}}\n- type: syslog\n  name: cef\n  address: {addr}\n  format: cef\n  facility: 4\n  delivery: {{{FAST}}}\n"
    );
    let router = build_router(&cfgs(&yaml), Arc::new(Metrics::new()), dir.path())
        .await
        .unwrap();
    let reader = tokio::spawn(async move {
        let mut msgs = Vec::new();
        for _ in 0..2 {
            let (s, _) = l.accept().await.unwrap();
            let mut r = BufReader::new(s);
            while let Some(m) = read_frame(&mut r).await {
                msgs.push(m);
                if msgs.len() % 2 == 0 {
                    break;
                }
            }
        }
        msgs
    });
    router.dispatch(alert(1, Level::High)).await;
    router.dispatch(alert(2, Level::Critical)).await;
    assert!(router.shutdown(Duration::from_secs(5)).await);
    let msgs = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msgs.len(), 4);
    let json: Vec<&String> = msgs.iter().filter(|m| m.contains(" alert [")).collect();
    let cef: Vec<&String> = msgs.iter().filter(|m| m.contains(" CEF [")).collect();
    assert_eq!((json.len(), cef.len()), (2, 2), "{msgs:#?}");
    for m in &json {
        // authpriv (10) * 8 + err (3) for high, crit (2) for critical.
        let high = m.contains("level=\"high\"");
        let body = check_rfc5424(m, if high { 83 } else { 82 });
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["event"]["kind"], "alert");
        assert!(m.contains(r#"rule="rule|"#));
    }
    for m in &cef {
        let high = m.contains("level=\"high\"");
        let body = check_rfc5424(m, 4 * 8 + if high { 3 } else { 2 });
        assert!(body.starts_with("CEF:0|audithawk|audithawk|"), "{body}");
        // `|` in the rule id is escaped in the header; `=` in the name is not special there.
        assert!(body.contains(r"|rule\|"), "{body}");
        assert!(body.contains("|Pod deleted = bad|"), "{body}");
        assert!(
            body.contains("suser=mallory")
                && body.contains("src=10.1.2.3")
                && body.contains("act=delete"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn syslog_over_tls() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server.clone());
    let reader = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let s = acceptor.accept(s).await.unwrap();
        let mut r = BufReader::new(s);
        read_frame(&mut r).await
    });
    let yaml = format!(
        "- type: syslog\n  address: 127.0.0.1:{port}\n  transport: tls\n  server_name: localhost\n  tls: {{ca_file: {}}}\n  delivery: {{{FAST}}}\n",
        ca.display()
    );
    let router = build_router(&cfgs(&yaml), Arc::new(Metrics::new()), dir.path())
        .await
        .unwrap();
    router.dispatch(alert(1, Level::Medium)).await;
    let msg = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    check_rfc5424(&msg, 10 * 8 + 4);
    assert!(router.shutdown(Duration::from_secs(5)).await);

    // A receiver whose certificate is not trusted is a configuration error at start.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.server.clone());
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let _ = acceptor.accept(s).await;
    });
    let yaml = format!(
        "- type: syslog\n  address: 127.0.0.1:{port}\n  transport: tls\n  server_name: localhost\n"
    );
    let err = build_router(&cfgs(&yaml), Arc::new(Metrics::new()), dir.path())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS handshake"), "{err}");
}

/// A webhook receiver that requires a token header and records bodies.
#[derive(Default)]
struct Hook {
    common: Common,
    bodies: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Handler for Hook {
    fn common(&self) -> &Common {
        &self.common
    }
    fn handle(&self, r: Req, _: Option<Special>) -> Reply {
        if r.header("x-token") != Some("s3cret") {
            return Reply::json(401, "{}");
        }
        if r.path == "/reject" {
            return Reply::json(400, r#"{"error":"bad payload"}"#);
        }
        self.bodies
            .lock()
            .push((r.header("content-type").unwrap_or("").to_string(), r.body));
        Reply::json(200, "{}")
    }
}

#[tokio::test]
async fn webhook_json_array_and_ndjson_with_headers_retries_and_dead_letter() {
    let srv = Server::start(Hook::default()).await;
    srv.h
        .common
        .script
        .push(Action::Reply(500, "oops".into(), vec![]));
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "- type: webhook\n  url: {u}/hook\n  headers: {{X-Token: s3cret}}\n  delivery: {{{FAST}}}\n\
         - type: webhook\n  name: nd\n  url: {u}/hook\n  format: ndjson\n  headers: {{X-Token: s3cret}}\n  route: {{min_level: critical}}\n  delivery: {{{FAST}}}\n\
         - type: webhook\n  name: rejecting\n  url: {u}/reject\n  headers: {{X-Token: s3cret}}\n  delivery: {{{FAST}}}\n",
        u = srv.url()
    );
    let m = Arc::new(Metrics::new());
    let router = build_router(&cfgs(&yaml), m.clone(), dir.path())
        .await
        .unwrap();
    router.dispatch(alert(1, Level::High)).await;
    router.dispatch(alert(2, Level::Critical)).await;
    assert!(router.shutdown(Duration::from_secs(5)).await);
    let bodies = srv.h.bodies.lock();
    let arrays: Vec<_> = bodies
        .iter()
        .filter(|(ct, _)| ct == "application/json")
        .collect();
    let nd: Vec<_> = bodies
        .iter()
        .filter(|(ct, _)| ct == "application/x-ndjson")
        .collect();
    let n_array: usize = arrays
        .iter()
        .map(|(_, b)| {
            serde_json::from_slice::<Vec<serde_json::Value>>(b)
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(n_array, 2, "both alerts once, after one 500");
    assert_eq!(nd.len(), 1);
    let lines: Vec<serde_json::Value> = std::str::from_utf8(&nd[0].1)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["rule"]["level"], "critical");
    assert!(m.value("audithawk_sink_retried_total", &[("sink", "webhook")]) >= 1);
    assert_eq!(
        m.value(
            "audithawk_sink_dead_lettered_total",
            &[("sink", "rejecting")]
        ),
        2
    );
    let dl = std::fs::read_to_string(dir.path().join("sinks/rejecting/dead-letter.jsonl")).unwrap();
    assert!(dl.contains("bad payload"), "{dl}");
}

#[tokio::test]
async fn raw_forwarding_filters_redacts_and_sends_to_splunk_and_elasticsearch() {
    let hec = Server::start(Hec::new("tok")).await;
    let es = Server::start(Bulk::new(None)).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
enabled: true
filter:
  verbs: {{exclude: [watch]}}
  namespaces: {{exclude: ["kube-*"]}}
  detection: {{sel: {{objectRef.resource: [secrets, pods]}}, condition: sel}}
sinks:
  - type: splunk_hec
    endpoint: {}
    token: tok
    delivery: {{{FAST}}}
  - type: elasticsearch
    endpoint: {}
    delivery: {{{FAST}}}
"#,
        hec.url(),
        es.url()
    );
    let cfg: RawForwardConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    let fwd = RawForwarder::start(&cfg, Arc::new(Metrics::new()), dir.path())
        .await
        .unwrap()
        .unwrap();
    let events = [
        r#"{"auditID":"w","stage":"ResponseComplete","verb":"watch","objectRef":{"resource":"pods","namespace":"a"}}"#,
        r#"{"auditID":"k","stage":"ResponseComplete","verb":"get","objectRef":{"resource":"pods","namespace":"kube-system"}}"#,
        r#"{"auditID":"r","stage":"RequestReceived","verb":"get","objectRef":{"resource":"pods","namespace":"a"}}"#,
        r#"{"auditID":"c","stage":"ResponseComplete","verb":"get","objectRef":{"resource":"configmaps","namespace":"a"}}"#,
        r#"{"auditID":"s","stage":"ResponseComplete","verb":"get","stageTimestamp":"2024-05-01T10:00:00.25Z",
            "objectRef":{"resource":"secrets","namespace":"prod","name":"db"},"requestURI":"/api/v1/namespaces/prod/secrets/db?token=hunter2",
            "responseObject":{"kind":"Secret","data":{"password":"c2VjcmV0"}}}"#,
    ];
    for e in events {
        fwd.offer(&AuditEvent::parse(e).unwrap()).await;
    }
    assert!(fwd.shutdown(Duration::from_secs(5)).await);
    let evs = hec.h.events.lock();
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["sourcetype"], "kube:apiserver:audit");
    assert_eq!(evs[0]["event"]["auditID"], "s");
    assert_eq!(evs[0]["time"].as_f64().unwrap(), 1714557600.25);
    let text = evs[0].to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("c2VjcmV0"),
        "{text}"
    );
    let docs = es.h.docs.lock();
    assert_eq!(docs.len(), 1);
    let (index, doc) = &docs["s/ResponseComplete"];
    assert_eq!(index, "logs-audithawk.audit-default");
    assert_eq!(doc["kubernetes"]["audit"]["auditID"], "s");
    assert!(doc["@timestamp"]
        .as_str()
        .unwrap()
        .starts_with("2024-05-01T10:00:00.25"));
    assert!(es.h.common.violations.lock().is_empty());
}

/// An OTLP/HTTP collector mock: `POST /v1/logs`, JSON encoding, checks the
/// ExportLogsServiceRequest shape.
#[derive(Default)]
struct Collector {
    common: Common,
    records: Mutex<Vec<serde_json::Value>>,
}

impl Handler for Collector {
    fn common(&self) -> &Common {
        &self.common
    }
    fn handle(&self, r: Req, _: Option<Special>) -> Reply {
        if r.method != hyper::Method::POST || r.path != "/v1/logs" {
            self.common
                .violation(format!("OTLP: {} {}", r.method, r.path));
            return Reply::json(404, "{}");
        }
        if r.header("content-type") != Some("application/json") {
            self.common
                .violation(format!("OTLP content-type {:?}", r.header("content-type")));
            return Reply::json(415, "{}");
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) else {
            self.common.violation("OTLP body is not JSON".into());
            return Reply::json(400, "{}");
        };
        let rl = &v["resourceLogs"][0];
        if rl["resource"]["attributes"][0]["key"] != "service.name" {
            self.common.violation("OTLP: no service.name".into());
        }
        let recs = rl["scopeLogs"][0]["logRecords"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for rec in &recs {
            let t = rec["timeUnixNano"].as_str().unwrap_or("");
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                self.common.violation(format!("OTLP: timeUnixNano {t:?}"));
            }
            if !(1..=24).contains(&rec["severityNumber"].as_u64().unwrap_or(0)) {
                self.common.violation("OTLP: severityNumber".into());
            }
        }
        self.records.lock().extend(recs);
        Reply::json(200, "{}")
    }
}

#[tokio::test]
async fn otlp_logs_over_http_json() {
    let srv = Server::start(Collector::default()).await;
    srv.h
        .common
        .script
        .push(Action::Reply(503, "{}".into(), vec![]));
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "- type: otlp\n  endpoint: {}\n  service_name: hawk\n  delivery: {{{FAST}}}\n",
        srv.url()
    );
    let router = build_router(&cfgs(&yaml), Arc::new(Metrics::new()), dir.path())
        .await
        .unwrap();
    router.dispatch(alert(1, Level::Critical)).await;
    router.dispatch(alert(2, Level::Low)).await;
    assert!(router.shutdown(Duration::from_secs(5)).await);
    assert!(
        srv.h.common.violations.lock().is_empty(),
        "{:?}",
        srv.h.common.violations.lock()
    );
    let recs = srv.h.records.lock();
    assert_eq!(recs.len(), 2, "delivered once after a 503");
    let crit = recs
        .iter()
        .find(|r| r["severityText"] == "critical")
        .unwrap();
    assert_eq!(crit["severityNumber"], 21);
    assert_eq!(crit["timeUnixNano"], "1714557600500000000");
    let body = &crit["body"]["kvlistValue"]["values"];
    assert!(body
        .as_array()
        .unwrap()
        .iter()
        .any(|kv| kv["key"] == "rule"));
}
