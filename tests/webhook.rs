//! Black-box tests of `audithawk serve`'s webhook receiver over real sockets on 127.0.0.1.
//!
//! Requests are shaped like the API server's (PROTOCOL.md A): `POST` of an `EventList` whose
//! items carry no kind/apiVersion, Go's `\u0026`-style escapes, `?timeout=30s` in the
//! query, `Content-Type: application/json`. A detached pipeline handle shows exactly which
//! batches were accepted.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use audithawk::ingest::webhook::{Readiness, TlsFiles, WebhookConfig, WebhookError, WebhookServer};
use audithawk::pipeline::{Batch, PipelineHandle, Source};
use audithawk::telemetry::Metrics;
use common::Pki;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A running receiver with a detached pipeline.
struct Server {
    addr: SocketAddr,
    base: String,
    rx: mpsc::Receiver<Batch>,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), WebhookError>>,
}

impl Server {
    async fn start(cfg: WebhookConfig, capacity: usize) -> Server {
        let metrics = Arc::new(Metrics::new());
        let (handle, rx) = PipelineHandle::detached(capacity, metrics.clone());
        let scheme = if cfg.tls.is_some() { "https" } else { "http" };
        let cfg = WebhookConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..cfg
        };
        let server = WebhookServer::bind(cfg, handle, metrics.clone())
            .await
            .expect("bind");
        let addr = server.local_addr();
        let readiness = server.readiness();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            base: format!("{scheme}://127.0.0.1:{}", addr.port()),
            rx,
            metrics,
            readiness,
            stop: Some(stop),
            task,
        }
    }

    async fn plain(cfg: WebhookConfig) -> Server {
        Server::start(cfg, 16).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The batch queued by the last accepted request (it is queued before the 200 is sent).
    fn batch(&mut self) -> Batch {
        self.rx.try_recv().expect("a batch was queued")
    }

    fn no_batch(&mut self) {
        assert!(self.rx.try_recv().is_err(), "nothing must be queued");
    }

    async fn shutdown(mut self) -> mpsc::Receiver<Batch> {
        let _ = self.stop.take().expect("running").send(());
        self.task.await.expect("join").expect("run");
        self.rx
    }
}

fn tls_config(pki: &Pki, client_ca: bool) -> WebhookConfig {
    WebhookConfig {
        tls: Some(TlsFiles {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: client_ca.then(|| pki.ca_file.clone()),
        }),
        ..WebhookConfig::default()
    }
}

fn client(pki: Option<&Pki>, identity: Option<&common::Pem>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .tls_built_in_root_certs(false);
    if let Some(pki) = pki {
        b = b
            .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.pem().as_bytes()).unwrap());
    }
    if let Some(id) = identity {
        b = b.identity(reqwest::Identity::from_pem(&id.identity_pem()).unwrap());
    }
    b.build().unwrap()
}

/// One item as the API server encodes it: no kind/apiVersion, Go escapes for & < >.
fn item(id: &str) -> String {
    format!(
        r#"{{"level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods?labelSelector=app%3Dweb\u0026limit=500","verb":"list","user":{{"username":"system:serviceaccount:kube-system:deployment-controller","uid":"9d1f","groups":["system:serviceaccounts","system:serviceaccounts:kube-system","system:authenticated"]}},"sourceIPs":["10.0.0.12"],"userAgent":"kube-controller-manager/v1.31.0 (linux/amd64) kubernetes/6fc0a69 \u003cdev\u003e","objectRef":{{"resource":"pods","namespace":"default","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"2026-11-24T06:00:00.000001Z","stageTimestamp":"2026-11-24T06:00:00.002001Z","annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding \"system:controller:deployment-controller\""}}}}"#
    )
}

fn event_list(items: &[String]) -> String {
    format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        items.join(",")
    )
}

fn apiserver_body(ids: &[&str]) -> String {
    event_list(&ids.iter().map(|id| item(id)).collect::<Vec<_>>())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A POST as client-go sends it.
fn apiserver_post(
    c: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    c.post(format!("{url}?timeout=30s"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, */*")
        .header("User-Agent", "Go-http-client/2.0")
        .body(body)
}

async fn json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

/// Sends raw bytes and reads until the server closes the connection.
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_to_close(&mut s).await
}

async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    // A failing server must fail the test, not hang it.
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the server closed the connection");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn apiserver_batch_over_mtls_reaches_the_pipeline_with_cluster_from_path() {
    let pki = Pki::new();
    let mut srv = Server::plain(tls_config(&pki, true)).await;
    let c = client(Some(&pki), Some(&pki.client));
    let resp = apiserver_post(
        &c,
        &srv.url("/audit/prod-eu.1"),
        apiserver_body(&["a1", "a2"]),
    )
    .send()
    .await
    .unwrap();
    // Go's client negotiates HTTP/2 through ALPN; so does reqwest.
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let (status, body) = json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"accepted": 2, "rejected": 0}));

    let batch = srv.batch();
    assert_eq!(batch.source, Source::Webhook);
    let ids: Vec<_> = batch
        .events
        .iter()
        .map(|e| e.audit_id().to_string())
        .collect();
    assert_eq!(ids, ["a1", "a2"]);
    let ev = &batch.events[0];
    assert_eq!(ev.cluster.as_deref(), Some("prod-eu.1"));
    assert_eq!(ev.verb(), "list");
    assert_eq!(ev.resource(), "pods");
    assert!(ev.fields.kind.is_none(), "items carry no kind");
    assert_eq!(
        ev.fields.request_uri.as_deref(),
        Some("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb&limit=500")
    );
    assert_eq!(
        ev.fields.user_agent.as_deref(),
        Some("kube-controller-manager/v1.31.0 (linux/amd64) kubernetes/6fc0a69 <dev>")
    );
    assert_eq!(
        ev.annotation("authorization.k8s.io/decision"),
        Some("allow")
    );
    srv.no_batch();
    assert_eq!(
        srv.metrics
            .value("audithawk_events_received_total", &[("source", "webhook")]),
        2
    );
}

#[tokio::test]
async fn clients_without_a_valid_certificate_fail_the_handshake() {
    let pki = Pki::new();
    let mut srv = Server::plain(tls_config(&pki, true)).await;
    let body = apiserver_body(&["x"]);

    let no_cert = client(Some(&pki), None);
    let r = apiserver_post(&no_cert, &srv.url("/audit"), body.clone())
        .send()
        .await;
    assert!(
        r.is_err(),
        "a client without a certificate must be refused: {r:?}"
    );

    // A certificate from another CA is refused just the same.
    let rogue = common::Ca::new("rogue CA").client("kube-apiserver");
    let r = apiserver_post(
        &client(Some(&pki), Some(&rogue)),
        &srv.url("/audit"),
        body.clone(),
    )
    .send()
    .await;
    assert!(
        r.is_err(),
        "a certificate from another CA must be refused: {r:?}"
    );
    srv.no_batch();

    // The server is unharmed: the right client still gets through.
    let ok = client(Some(&pki), Some(&pki.client));
    let (status, _) = json(
        apiserver_post(&ok, &srv.url("/audit"), body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(srv.batch().events.len(), 1);
}

#[tokio::test]
async fn tls_without_client_ca_accepts_any_client_and_default_cluster_applies() {
    let pki = Pki::new();
    let cfg = WebhookConfig {
        default_cluster: Some("home".into()),
        ..tls_config(&pki, false)
    };
    let mut srv = Server::plain(cfg).await;
    let resp = apiserver_post(
        &client(Some(&pki), None),
        &srv.url("/audit"),
        apiserver_body(&["d"]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(srv.batch().events[0].cluster.as_deref(), Some("home"));
}

#[tokio::test]
async fn gzip_body_is_accepted() {
    let pki = Pki::new();
    let mut srv = Server::plain(tls_config(&pki, true)).await;
    let c = client(Some(&pki), Some(&pki.client));
    let body = gzip(apiserver_body(&["g1", "g2", "g3"]).as_bytes());
    let resp = apiserver_post(&c, &srv.url("/audit/gz"), body)
        .header("Content-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    let (status, v) = json(resp).await;
    assert_eq!((status, &v["accepted"]), (200, &Value::from(3)), "{v}");
    let batch = srv.batch();
    assert_eq!(batch.events.len(), 3);
    assert_eq!(batch.events[2].audit_id(), "g3");
    assert_eq!(batch.events[2].cluster.as_deref(), Some("gz"));
}

#[tokio::test]
async fn bearer_token_right_wrong_and_missing_together_with_mtls() {
    let pki = Pki::new();
    let cfg = WebhookConfig {
        bearer_token: Some("t0ken-Abc".into()),
        ..tls_config(&pki, true)
    };
    let mut srv = Server::plain(cfg).await;
    let c = client(Some(&pki), Some(&pki.client));
    let body = apiserver_body(&["t"]);

    let resp = apiserver_post(&c, &srv.url("/audit"), body.clone())
        .send()
        .await
        .unwrap();
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    let (status, v) = json(resp).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"], "missing bearer token");
    assert!(challenge.starts_with("Bearer"), "{challenge}");

    let resp = apiserver_post(&c, &srv.url("/audit"), body.clone())
        .bearer_auth("t0ken-Abd")
        .send()
        .await
        .unwrap();
    let (status, v) = json(resp).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (401, Some("invalid bearer token"))
    );
    // A prefix of the right token is wrong too.
    let resp = apiserver_post(&c, &srv.url("/audit"), body.clone())
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Basic auth is not a bearer token.
    let resp = apiserver_post(&c, &srv.url("/audit"), body.clone())
        .basic_auth("t0ken-Abc", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    srv.no_batch();

    // The scheme is case-insensitive (RFC 7235).
    let resp = apiserver_post(&c, &srv.url("/audit"), body)
        .header("Authorization", "bearer t0ken-Abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(srv.batch().events.len(), 1);
    assert_eq!(
        srv.metrics.value(
            "audithawk_http_requests_total",
            &[("path", "audit"), ("code", "401")]
        ),
        4
    );
}

#[tokio::test]
async fn unusable_bodies_are_400_naming_the_problem() {
    let mut srv = Server::plain(WebhookConfig::default()).await;
    let c = client(None, None);
    let url = srv.url("/audit");

    let (status, v) = json(
        apiserver_post(&c, &url, "{\"kind\":\"EventList\",")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("invalid event") && msg.contains("line 1 column"),
        "{msg}"
    );

    let (status, v) = json(
        apiserver_post(&c, &url, r#"{"hello":"world"}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        v["error"].as_str().unwrap().contains("not an audit event"),
        "{v}"
    );

    let all_bad = event_list(&[
        r#"{"auditID":5}"#.into(),
        r#"{"verb":"get","user":"bob"}"#.into(),
    ]);
    let (status, v) = json(apiserver_post(&c, &url, all_bad).send().await.unwrap()).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["rejected"], 2);
    assert_eq!(v["errors"][0]["item"], 0);
    assert_eq!(v["errors"][1]["item"], 1);

    let (status, v) = json(
        apiserver_post(&c, &url, b"{\"auditID\":\"\xff\"}".to_vec())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("UTF-8"), "{v}");

    let (status, v) = json(
        apiserver_post(&c, &url, b"not gzip at all".to_vec())
            .header("Content-Encoding", "gzip")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("gzip"), "{v}");

    srv.no_batch();
    let m = &srv.metrics;
    assert_eq!(
        m.value(
            "audithawk_events_rejected_total",
            &[("source", "webhook"), ("reason", "invalid")]
        ),
        3
    );
    assert_eq!(
        m.value(
            "audithawk_events_rejected_total",
            &[("source", "webhook"), ("reason", "not_an_event")]
        ),
        1
    );
    assert_eq!(
        m.value(
            "audithawk_events_rejected_total",
            &[("source", "webhook"), ("reason", "not_utf8")]
        ),
        1
    );
    assert_eq!(
        m.value(
            "audithawk_events_rejected_total",
            &[("source", "webhook"), ("reason", "bad_gzip")]
        ),
        1
    );
    assert_eq!(
        m.value(
            "audithawk_http_requests_total",
            &[("path", "audit"), ("code", "400")]
        ),
        5
    );
}

#[tokio::test]
async fn mixed_batch_is_accepted_and_only_bad_items_are_counted() {
    let mut srv = Server::plain(WebhookConfig::default()).await;
    let c = client(None, None);
    // Item 1 has a string where an object belongs; its value must not be echoed or logged.
    let body = event_list(&[
        item("ok-0"),
        r#"{"auditID":"bad","verb":"get","user":"hunter2-secret"}"#.into(),
        item("ok-2"),
        r#"{"kind":"Pod","apiVersion":"v1"}"#.into(),
    ]);
    let (status, v) = json(
        apiserver_post(&c, &srv.url("/audit"), body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], 2);
    assert_eq!(v["rejected"], 2);
    assert_eq!(v["errors"][0]["item"], 1);
    assert_eq!(v["errors"][1]["item"], 3);
    assert!(
        !v.to_string().contains("hunter2"),
        "event content leaked: {v}"
    );

    let ids: Vec<_> = srv
        .batch()
        .events
        .iter()
        .map(|e| e.audit_id().to_string())
        .collect();
    assert_eq!(ids, ["ok-0", "ok-2"]);
    let m = &srv.metrics;
    assert_eq!(
        m.value("audithawk_events_received_total", &[("source", "webhook")]),
        2
    );
    assert_eq!(
        m.value(
            "audithawk_events_rejected_total",
            &[("source", "webhook"), ("reason", "invalid")]
        ),
        1
    );
    assert_eq!(
        m.value(
            "audithawk_events_rejected_total",
            &[("source", "webhook"), ("reason", "not_an_event")]
        ),
        1
    );
}

#[tokio::test]
async fn oversize_bodies_are_413_plain_streamed_and_gzip_bomb() {
    let cfg = WebhookConfig {
        max_body_bytes: 16384,
        ..WebhookConfig::default()
    };
    let mut srv = Server::plain(cfg).await;
    let c = client(None, None);
    let url = srv.url("/audit");

    // Declared by Content-Length.
    let ids: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    let big = apiserver_body(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(big.len() > 16384);
    let (status, v) = json(apiserver_post(&c, &url, big.clone()).send().await.unwrap()).await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["limit_bytes"], 16384);

    // Chunked, so only the streamed count can catch it.
    let mut req = b"POST /audit?timeout=30s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for chunk in big.as_bytes().chunks(1000) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let resp = raw(srv.addr, &req).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");

    // A gzip bomb: 9 KiB on the wire, 8 MiB inflated.
    let mut bomb_text = apiserver_body(&["z"]);
    bomb_text.push_str(&" ".repeat(8 << 20));
    let bomb = gzip(bomb_text.as_bytes());
    assert!(bomb.len() < 16384, "{}", bomb.len());
    let resp = apiserver_post(&c, &url, bomb)
        .header("Content-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    // Just under the limit passes.
    let ok = apiserver_body(&["a", "b"]);
    assert!(ok.len() < 16384);
    assert_eq!(
        apiserver_post(&c, &url, ok).send().await.unwrap().status(),
        200
    );
    assert_eq!(srv.batch().events.len(), 2);
    srv.no_batch();
    assert_eq!(
        srv.metrics.value(
            "audithawk_events_rejected_total",
            &[("source", "webhook"), ("reason", "body_too_large")]
        ),
        3
    );
}

#[tokio::test]
async fn full_queue_answers_429_with_retry_after_and_recovers() {
    let cfg = WebhookConfig {
        retry_after_secs: 7,
        ..WebhookConfig::default()
    };
    let mut srv = Server::start(cfg, 1).await;
    let c = client(None, None);
    let url = srv.url("/audit");

    assert_eq!(
        apiserver_post(&c, &url, apiserver_body(&["1"]))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The one slot is taken and nobody drains it.
    let resp = apiserver_post(&c, &url, apiserver_body(&["2", "3"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["retry-after"], "7");
    let (status, v) = json(resp).await;
    assert_eq!(status, 429, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("queue is full"),
        "{v}"
    );
    // Readiness reflects it.
    assert_eq!(
        c.get(srv.url("/readyz")).send().await.unwrap().status(),
        503
    );

    assert_eq!(srv.batch().events[0].audit_id(), "1");
    // The API server re-sends the same batch after Retry-After; now there is room.
    assert_eq!(
        apiserver_post(&c, &url, apiserver_body(&["2", "3"]))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(srv.batch().events.len(), 2);
    assert_eq!(
        c.get(srv.url("/readyz")).send().await.unwrap().status(),
        200
    );
    let m = &srv.metrics;
    // Events refused with 429 are not counted as received (they come again).
    assert_eq!(
        m.value("audithawk_events_received_total", &[("source", "webhook")]),
        3
    );
    assert_eq!(
        m.value(
            "audithawk_webhook_backpressure_total",
            &[("reason", "queue_full")]
        ),
        1
    );
    assert_eq!(
        m.value(
            "audithawk_http_requests_total",
            &[("path", "audit"), ("code", "429")]
        ),
        1
    );
}

#[tokio::test]
async fn closed_pipeline_answers_503_with_retry_after() {
    let srv = Server::plain(WebhookConfig::default()).await;
    let Server {
        rx, base, metrics, ..
    } = srv;
    drop(rx);
    let c = client(None, None);
    let resp = apiserver_post(&c, &format!("{base}/audit"), apiserver_body(&["1"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["retry-after"], "5");
    assert_eq!(json(resp).await.0, 503);
    assert_eq!(
        metrics.value(
            "audithawk_webhook_backpressure_total",
            &[("reason", "shutting_down")]
        ),
        1
    );
}

#[tokio::test]
async fn metrics_endpoint_renders_the_counters() {
    let srv = Server::plain(WebhookConfig::default()).await;
    let c = client(None, None);
    assert_eq!(
        apiserver_post(&c, &srv.url("/audit"), apiserver_body(&["1", "2"]))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let resp = c.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("audithawk_events_received_total{source=\"webhook\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("audithawk_http_requests_total{path=\"audit\",code=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE audithawk_http_requests_total counter"),
        "{text}"
    );
}

#[tokio::test]
async fn health_readiness_and_drain_phase() {
    let mut srv = Server::plain(WebhookConfig::default()).await;
    let c = client(None, None);
    let (status, v) = json(c.get(srv.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    assert_eq!(
        c.get(srv.url("/readyz")).send().await.unwrap().status(),
        200
    );

    srv.readiness.mark_unready();
    let (status, v) = json(c.get(srv.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((status, v["error"].as_str()), (503, Some("shutting down")));
    assert_eq!(
        c.get(srv.url("/healthz")).send().await.unwrap().status(),
        200
    );
    // Still draining, not refusing: events keep flowing until the shutdown future fires.
    assert_eq!(
        apiserver_post(&c, &srv.url("/audit"), apiserver_body(&["late"]))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(srv.batch().events[0].audit_id(), "late");
}

#[tokio::test]
async fn routing_errors_404_405_415_and_bad_cluster() {
    let mut srv = Server::plain(WebhookConfig::default()).await;
    let c = client(None, None);
    let body = apiserver_body(&["r"]);

    for path in ["/", "/nope", "/audit/a/b", "/auditx"] {
        let (status, v) = json(
            apiserver_post(&c, &srv.url(path), body.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 404, "{path}: {v}");
        assert!(v["error"].is_string());
    }
    let resp = c.get(srv.url("/audit")).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "POST");
    assert_eq!(json(resp).await.0, 405);
    let resp = c.post(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    assert_eq!(json(resp).await.0, 405);

    let resp = c
        .post(srv.url("/audit"))
        .header("Content-Type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(json(resp).await.0, 415);
    let resp = c
        .post(srv.url("/audit"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(json(resp).await.0, 415, "no Content-Type");
    let resp = apiserver_post(&c, &srv.url("/audit"), body.clone())
        .header("Content-Encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(json(resp).await.0, 415);
    // Parameters after the media type are fine.
    let resp = c
        .post(srv.url("/audit"))
        .header("Content-Type", "Application/JSON; charset=utf-8")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        srv.batch().events[0].cluster.is_none(),
        "no default cluster configured"
    );

    for bad in [
        "/audit/bad%20name",
        "/audit/",
        &format!("/audit/{}", "x".repeat(64)),
    ] {
        let (status, v) = json(
            apiserver_post(&c, &srv.url(bad), body.clone())
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{bad}");
        assert!(v["error"].as_str().unwrap().contains("cluster name"), "{v}");
    }
    srv.no_batch();
    assert_eq!(
        srv.metrics.value(
            "audithawk_http_requests_total",
            &[("path", "other"), ("code", "404")]
        ),
        4
    );
}

#[tokio::test]
async fn bind_refuses_bad_settings_and_names_the_file() {
    let m = Arc::new(Metrics::new());
    let (h, _rx) = PipelineHandle::detached(1, m.clone());
    let cfg = WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        default_cluster: Some("no spaces".into()),
        ..WebhookConfig::default()
    };
    let e = WebhookServer::bind(cfg, h.clone(), m.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("default_cluster"), "{e}");

    let cfg = WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles {
            cert: "/nonexistent/server.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        }),
        ..WebhookConfig::default()
    };
    let e = WebhookServer::bind(cfg, h, m).await.unwrap_err();
    assert!(e.to_string().contains("/nonexistent/server.pem"), "{e}");
}

/// Graceful shutdown: a request whose body is still arriving completes with 200 and its
/// events are queued; new connections are refused once the listener is closed.
#[tokio::test]
async fn graceful_shutdown_completes_the_in_flight_request() {
    let srv = Server::plain(WebhookConfig::default()).await;
    let body = apiserver_body(&["in-flight"]);
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "POST /audit/c1?timeout=30s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // hyper answers 100 Continue when the handler starts reading the body: from here on the
    // request is in flight.
    let mut buf = [0u8; 25];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");

    let Server {
        addr,
        mut rx,
        readiness,
        stop,
        task,
        ..
    } = srv;
    stop.unwrap().send(()).unwrap();
    readiness.closed().await;
    assert!(!readiness.is_ready());
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "new connections are refused"
    );
    assert!(!task.is_finished(), "run() waits for the in-flight request");

    s.write_all(body.as_bytes()).await.unwrap();
    let resp = read_to_close(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#"{"accepted":1,"rejected":0}"#), "{resp}");
    task.await.unwrap().unwrap();
    let batch = rx.try_recv().unwrap();
    assert_eq!(batch.events[0].audit_id(), "in-flight");
    assert_eq!(batch.events[0].cluster.as_deref(), Some("c1"));
    // Every pipeline handle held by the server is gone, so the pipeline can drain.
    assert!(rx.recv().await.is_none());
}

#[tokio::test]
async fn shutdown_returns_promptly_when_idle() {
    // With an hour for every timeout, only closing idle connections at shutdown lets run()
    // return.
    let hour = Duration::from_secs(3600);
    let srv = Server::plain(WebhookConfig {
        shutdown_timeout: hour,
        header_read_timeout: hour,
        idle_timeout: hour,
        ..WebhookConfig::default()
    })
    .await;
    let c = client(None, None);
    assert_eq!(
        c.get(srv.url("/healthz")).send().await.unwrap().status(),
        200
    );
    // A keep-alive connection stays open in `c`'s pool; shutdown must still finish.
    let mut rx = tokio::time::timeout(Duration::from_secs(20), srv.shutdown())
        .await
        .expect("idle connections are closed at shutdown");
    assert!(rx.recv().await.is_none());
}

#[tokio::test]
async fn slow_clients_are_disconnected() {
    let pki = Pki::new();
    let t = Duration::from_millis(300);
    // Every other timeout is an hour, so each case proves that its own timeout fired.
    let hour = Duration::from_secs(3600);
    let patient = WebhookConfig {
        header_read_timeout: hour,
        body_read_timeout: hour,
        idle_timeout: hour,
        tls_handshake_timeout: hour,
        ..WebhookConfig::default()
    };
    // Idle: connects and sends nothing.
    let srv = Server::plain(WebhookConfig {
        idle_timeout: t,
        ..patient.clone()
    })
    .await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    assert_eq!(read_to_close(&mut s).await, "");

    // Slow head.
    let srv = Server::plain(WebhookConfig {
        header_read_timeout: t,
        ..patient.clone()
    })
    .await;
    let resp = raw(
        srv.addr,
        b"POST /audit HTTP/1.1\r\nHost: t\r\nContent-Type: application",
    )
    .await;
    assert!(!resp.contains(" 200 "), "{resp}");

    // Slow body.
    let srv = Server::plain(WebhookConfig {
        body_read_timeout: t,
        ..patient.clone()
    })
    .await;
    let resp = raw(
        srv.addr,
        b"POST /audit HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"kind\":",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");

    // Slow TLS handshake.
    let srv = Server::plain(WebhookConfig {
        tls_handshake_timeout: t,
        tls: tls_config(&pki, true).tls,
        ..patient.clone()
    })
    .await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    assert_eq!(read_to_close(&mut s).await, "");
    assert_eq!(
        srv.metrics.value(
            "audithawk_webhook_tls_handshake_failures_total",
            &[("reason", "timeout")]
        ),
        1
    );
}

#[tokio::test]
async fn connection_limit_queues_extra_clients() {
    let srv = Server::plain(WebhookConfig {
        max_connections: 1,
        ..WebhookConfig::default()
    })
    .await;
    let get = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut a = TcpStream::connect(srv.addr).await.unwrap();
    a.write_all(get).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = a.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // `a` holds the only slot; `b` waits in the backlog. There is no signal for "not served",
    // so this one negative check has to be a bounded wait.
    let mut b = TcpStream::connect(srv.addr).await.unwrap();
    b.write_all(get).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b.read(&mut buf))
            .await
            .is_err(),
        "the second connection must not be served while the first is open"
    );
    drop(a);
    let n = tokio::time::timeout(Duration::from_secs(20), b.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

/// Rough throughput of one POST path (not a benchmark; run with
/// `cargo test --release --test webhook -- --ignored --nocapture throughput`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    let metrics = Arc::new(Metrics::new());
    let (handle, mut rx) = PipelineHandle::detached(1024, metrics.clone());
    let server = WebhookServer::bind(
        WebhookConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..WebhookConfig::default()
        },
        handle,
        metrics,
    )
    .await
    .unwrap();
    let url = format!("http://{}/audit", server.local_addr());
    tokio::spawn(server.run(std::future::pending()));
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let ids: Vec<String> = (0..400).map(|i| format!("id-{i}")).collect();
    let body = apiserver_body(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    let c = client(None, None);
    let posts = 250;
    let start = std::time::Instant::now();
    for _ in 0..posts {
        let r = apiserver_post(&c, &url, body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{posts} POSTs x 400 events ({} KiB each) in {secs:.2}s: {:.0} events/s, {:.1} MiB/s",
        body.len() / 1024,
        (posts * 400) as f64 / secs,
        (posts * body.len()) as f64 / secs / (1 << 20) as f64
    );
}

/// The audit2rbac demo log (37 real v1 events from a log backend), re-shaped the way the
/// webhook backend sends them: one EventList, items without kind/apiVersion.
#[tokio::test]
async fn corpus_log_events_posted_as_a_webhook_batch() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/corpus/audit2rbac__demo.log");
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!("SKIP: {} is absent", path.display());
        return;
    };
    let mut ids = Vec::new();
    let items: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("corpus line is JSON");
            let obj = v.as_object_mut().expect("corpus line is an object");
            obj.remove("kind");
            obj.remove("apiVersion");
            ids.push(obj["auditID"].as_str().expect("auditID").to_string());
            v.to_string()
        })
        .collect();
    assert!(!items.is_empty());
    let pki = Pki::new();
    let mut srv = Server::plain(tls_config(&pki, true)).await;
    let c = client(Some(&pki), Some(&pki.client));
    let (status, v) = json(
        apiserver_post(&c, &srv.url("/audit/demo"), event_list(&items))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accepted"], items.len());
    let got: Vec<_> = srv
        .batch()
        .events
        .iter()
        .map(|e| e.audit_id().to_string())
        .collect();
    assert_eq!(got, ids);
}
