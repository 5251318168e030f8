//! Parse throughput: typed, borrowed parsing of audit events (JSON lines and EventLists).
//!
//! `cargo bench --bench parse`. The events mimic the API server's output: a metadata-level
//! read, a RequestResponse pod creation with a body, and a webhook EventList of 400 items.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use audithawk::model::{decode_value, AuditEvent, DecodeLimits, Location};

const READ: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"2b7c6a1e-8f41-4f0e-9d3c-5a0d7b2c9e11","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/payments/secrets/db-credentials","verb":"get","user":{"username":"system:serviceaccount:payments:api","uid":"6f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b","groups":["system:serviceaccounts","system:serviceaccounts:payments","system:authenticated"],"extra":{"authentication.kubernetes.io/pod-name":["api-7d9f8c6b5-x2x9q"],"authentication.kubernetes.io/pod-uid":["0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"]}},"sourceIPs":["10.244.3.17"],"userAgent":"payments-api/v2.14.1 (linux/amd64) kubernetes/$Format","objectRef":{"resource":"secrets","namespace":"payments","name":"db-credentials","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-11-02T10:15:04.120311Z","stageTimestamp":"2026-11-02T10:15:04.122904Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by RoleBinding \"api-secrets/payments\" of Role \"secret-reader\" to ServiceAccount \"api/payments\""}}"#;

const CREATE: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"9e8d7c6b-5a49-3827-1605-f4e3d2c1b0a9","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods?fieldManager=kubectl-client-side-apply\u0026fieldValidation=Strict","verb":"create","user":{"username":"alice@example.com","groups":["developers","system:authenticated"]},"sourceIPs":["203.0.113.9"],"userAgent":"kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46","objectRef":{"resource":"pods","namespace":"default","name":"debug","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},"requestObject":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"debug","namespace":"default"},"spec":{"hostPID":true,"containers":[{"name":"c","image":"busybox:1.36","command":["sleep","3600"],"securityContext":{"privileged":true}}],"volumes":[{"name":"host","hostPath":{"path":"/","type":""}}]}},"requestReceivedTimestamp":"2026-11-02T10:16:00.000001Z","stageTimestamp":"2026-11-02T10:16:00.010203Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding \"dev-admin\""}}"#;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, text) in [("metadata_read", READ), ("pod_create_with_body", CREATE)] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let ev = AuditEvent::parse(std::hint::black_box(text)).expect("valid");
                std::hint::black_box(ev.verb().len())
            })
        });
    }
    // A webhook body: EventList of 400 items without kind/apiVersion, detached to owned
    // events as the webhook does before queueing.
    let item = READ.replace(r#""kind":"Event","apiVersion":"audit.k8s.io/v1","#, "");
    let body = format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        vec![item.as_str(); 400].join(",")
    );
    g.throughput(Throughput::Elements(400));
    g.bench_function("eventlist_400_owned", |b| {
        b.iter_batched(
            || Vec::with_capacity(400),
            |mut out: Vec<AuditEvent<'static>>| {
                decode_value(
                    &body,
                    &Location::body(),
                    DecodeLimits::default(),
                    &mut |r| {
                        if let Ok(ev) = r {
                            out.push(ev.into_owned());
                        }
                    },
                )
                .expect("valid body");
                out.len()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
