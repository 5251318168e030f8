//! One receiver, several clusters: the client certificate's identity names the cluster and
//! wins over the URL path; a path naming another cluster is refused with 403; events are
//! counted per cluster with a bounded label.

mod common;

use std::sync::Arc;

use audithawk::ingest::webhook::{ClusterIdentity, TlsFiles, WebhookConfig, WebhookServer};
use audithawk::pipeline::PipelineHandle;
use audithawk::telemetry::Metrics;
use common::{Pem, Pki};

fn client(pki: &Pki, id: &Pem) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.pem().as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(&id.identity_pem()).unwrap())
        .build()
        .unwrap()
}

fn body(id: &str) -> String {
    format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{{"level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/secrets/db","verb":"get","user":{{"username":"alice"}},"objectRef":{{"resource":"secrets","namespace":"prod","name":"db","apiVersion":"v1"}},"responseStatus":{{"code":200}},"requestReceivedTimestamp":"2026-11-24T06:00:00.000001Z","stageTimestamp":"2026-11-24T06:00:00.002001Z"}}]}}"#
    )
}

#[tokio::test]
async fn certificates_name_their_cluster_and_cannot_claim_another() {
    let pki = Pki::new();
    let prod = pki.ca.client("apiserver-prod-eu");
    let staging = pki.ca.client("apiserver-staging");
    let unmapped = pki.ca.client("apiserver-lab");
    let metrics = Arc::new(Metrics::new());
    let (handle, mut rx) = PipelineHandle::detached(16, metrics.clone());
    let cfg = WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: Some(pki.ca_file.clone()),
        }),
        clusters: vec![
            ClusterIdentity {
                name: "prod-eu".into(),
                client_cn: Some("apiserver-prod-eu".into()),
                client_san_dns: None,
            },
            ClusterIdentity {
                name: "staging".into(),
                client_cn: Some("apiserver-staging".into()),
                client_san_dns: None,
            },
        ],
        ..WebhookConfig::default()
    };
    let server = WebhookServer::bind(cfg, handle, metrics.clone())
        .await
        .expect("bind");
    let base = format!("https://127.0.0.1:{}", server.local_addr().port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let post = |c: reqwest::Client, path: &str, id: &str| {
        let url = format!("{base}{path}?timeout=30s");
        let b = body(id);
        async move {
            c.post(url)
                .header("Content-Type", "application/json")
                .body(b)
                .send()
                .await
                .expect("POST")
                .status()
                .as_u16()
        }
    };
    let cluster_of = |rx: &mut tokio::sync::mpsc::Receiver<audithawk::pipeline::Batch>| {
        let b = rx.try_recv().expect("a batch was queued");
        b.events[0].cluster.as_deref().map(str::to_string)
    };

    // The certificate names the cluster on /audit...
    assert_eq!(post(client(&pki, &prod), "/audit", "a1").await, 200);
    assert_eq!(cluster_of(&mut rx).as_deref(), Some("prod-eu"));
    assert_eq!(post(client(&pki, &staging), "/audit", "a2").await, 200);
    assert_eq!(cluster_of(&mut rx).as_deref(), Some("staging"));
    // ...and agrees with a path that names the same cluster.
    assert_eq!(
        post(client(&pki, &staging), "/audit/staging", "a3").await,
        200
    );
    assert_eq!(cluster_of(&mut rx).as_deref(), Some("staging"));
    // A certificate cannot claim another cluster's path.
    assert_eq!(post(client(&pki, &prod), "/audit/staging", "a4").await, 403);
    assert!(
        rx.try_recv().is_err(),
        "nothing queued for a refused request"
    );
    // An unmapped certificate (still signed by the CA) uses the path as before.
    assert_eq!(
        post(client(&pki, &unmapped), "/audit/lab-1", "a5").await,
        200
    );
    assert_eq!(cluster_of(&mut rx).as_deref(), Some("lab-1"));

    let per = |c: &str| metrics.value("audithawk_cluster_events_received_total", &[("cluster", c)]);
    assert_eq!((per("prod-eu"), per("staging"), per("other")), (1, 2, 1));
    assert_eq!(
        per("lab-1"),
        0,
        "path-named clusters share the label \"other\""
    );
    assert_eq!(
        metrics.value(
            "audithawk_events_rejected_total",
            &[("source", "webhook"), ("reason", "cluster_mismatch")]
        ),
        1
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
