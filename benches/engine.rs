//! Rule matching cost: ~100 rules (the 16 SigmaHQ kubernetes/audit anchors when
//! ../shared is present, plus generated variants) over a mix of realistic events.
//!
//! Run: `cargo bench --bench engine -- --quick` (or without `--quick` for full sampling).
//! Throughput is reported per event; `parse_only` is the baseline to subtract.

use std::path::PathBuf;

use audithawk::model::AuditEvent;
use audithawk::rules::RuleSet;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const RESOURCES: &[&str] = &[
    "pods",
    "secrets",
    "configmaps",
    "deployments",
    "daemonsets",
    "statefulsets",
    "replicasets",
    "services",
    "endpoints",
    "nodes",
    "namespaces",
    "serviceaccounts",
    "roles",
    "rolebindings",
    "clusterroles",
    "clusterrolebindings",
    "cronjobs",
    "jobs",
    "ingresses",
    "networkpolicies",
    "persistentvolumes",
    "persistentvolumeclaims",
    "leases",
    "events",
    "tokenreviews",
    "certificatesigningrequests",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
    "customresourcedefinitions",
    "priorityclasses",
];

fn generated_rules(n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        let r = RESOURCES[i % RESOURCES.len()];
        let skip: Vec<usize> = std::env::var("SKIPKIND")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_default();
        let k = {
            let mut k = i % 7;
            while skip.contains(&k) {
                k = (k + 1) % 7;
            }
            k
        };
        let det = match k {
            0 => format!(
                "  sel:\n    verb: [create, update, patch]\n    objectRef.resource: {r}\n  filter:\n    user.username|startswith: ['system:serviceaccount:kube-system:', 'system:kube-']\n  condition: sel and not filter"
            ),
            1 => format!(
                "  sel:\n    verb: delete\n    objectRef.resource: {r}\n    objectRef.namespace: [kube-system, kube-public, prod-{i}]\n  condition: sel"
            ),
            2 => format!(
                "  sel:\n    verb: [get, list]\n    objectRef.resource: {r}\n    user.groups: 'system:unauthenticated'\n  condition: sel"
            ),
            3 => format!(
                "  sel:\n    objectRef.resource: pods\n    verb: create\n    requestObject.spec.containers.image|contains: ['xmrig', 'miner-{i}', 'kali']\n  condition: sel"
            ),
            4 => format!(
                "  sel:\n    userAgent|contains: ['curl/', 'python-requests', 'tool-{i}']\n  sys:\n    user.username|startswith: 'system:'\n  condition: sel and not sys"
            ),
            5 => format!(
                "  sel:\n    annotations.authorization.k8s.io/decision: forbid\n    objectRef.resource: {r}\n  condition: sel"
            ),
            _ => format!(
                "  sel:\n    verb: [create, patch]\n    objectRef.resource: {r}\n    requestURI|re: '/namespaces/[a-z0-9-]+/{r}/[^/]+/(exec|attach)-{i}'\n  condition: sel"
            ),
        };
        out.push(format!(
            "title: generated {i}\nid: gen-{i}\nlevel: medium\ntags: [attack.t1609]\nlogsource: {{product: kubernetes, service: audit}}\ndetection:\n{det}\n"
        ));
    }
    out
}

fn load() -> RuleSet {
    let mut texts: Vec<(String, String)> = Vec::new();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/anchors/sigma");
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "yml") {
                if let Ok(t) = std::fs::read_to_string(&p) {
                    texts.push((p.display().to_string(), t));
                }
            }
        }
    } else {
        eprintln!("note: {} absent; generated rules only", dir.display());
    }
    let gen = generated_rules(100 - texts.len());
    texts.extend(
        gen.into_iter()
            .enumerate()
            .map(|(i, t)| (format!("gen{i}.yml"), t)),
    );
    let refs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    match RuleSet::from_texts(&refs, &[], false) {
        Ok((s, _)) => s,
        Err(e) => panic!("bench rules failed: {e:?}"),
    }
}

fn events() -> Vec<String> {
    let mut out = Vec::new();
    let users = [
        "system:serviceaccount:kube-system:replicaset-controller",
        "system:kube-scheduler",
        "system:node:ip-10-0-1-17.ec2.internal",
        "alice@example.com",
        "system:serviceaccount:monitoring:prometheus",
    ];
    let verbs = [
        "get", "list", "watch", "get", "list", "update", "patch", "create", "delete", "get",
    ];
    let mut i = 0usize;
    while out.len() < 1000 {
        let verb = verbs[i % verbs.len()];
        let res = RESOURCES[(i * 7) % RESOURCES.len()];
        let user = users[i % users.len()];
        let ns = ["default", "kube-system", "prod", "monitoring"][i % 4];
        let body = if verb == "create" && res == "pods" || i % 13 == 0 {
            // A pod body brings the event to ~1.5 KB, like a real Request-level create.
            format!(
                r#","requestObject":{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"web-{i}","namespace":"{ns}","labels":{{"app":"web","pod-template-hash":"5d9c7b"}},"annotations":{{"kubectl.kubernetes.io/restartedAt":"2026-11-20T10:00:00Z"}}}},"spec":{{"containers":[{{"name":"web","image":"registry.example.com/web:1.{i}","ports":[{{"containerPort":8080,"protocol":"TCP"}}],"resources":{{"limits":{{"cpu":"500m","memory":"256Mi"}}}},"securityContext":{{"runAsNonRoot":true,"allowPrivilegeEscalation":false}}}}],"volumes":[{{"name":"tok","projected":{{"sources":[{{"serviceAccountToken":{{"path":"token","expirationSeconds":3607}}}}]}}}}],"serviceAccountName":"web","nodeSelector":{{"kubernetes.io/os":"linux"}}}}}}"#
            )
        } else {
            String::new()
        };
        out.push(format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"6f1c3a2e-{i:08}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/{ns}/{res}?limit=500&resourceVersion=0","verb":"{verb}","user":{{"username":"{user}","uid":"5a0e-{i}","groups":["system:serviceaccounts","system:serviceaccounts:kube-system","system:authenticated"]}},"sourceIPs":["10.0.{}.{}"],"userAgent":"kube-controller-manager/v1.30.2 (linux/amd64) kubernetes/3c1e5d2/system:serviceaccount:kube-system:replicaset-controller","objectRef":{{"resource":"{res}","namespace":"{ns}","name":"obj-{i}","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}}{body},"requestReceivedTimestamp":"2026-11-24T06:00:00.123456Z","stageTimestamp":"2026-11-24T06:00:00.125101Z","annotations":{{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding \"system:controller:replicaset-controller\" of ClusterRole \"system:controller:replicaset-controller\" to ServiceAccount \"replicaset-controller/kube-system\""}}}}"#,
            i % 256,
            (i * 31) % 256
        ));
        i += 1;
    }
    out
}

fn bench(c: &mut Criterion) {
    let set = load();
    let evs = events();
    let bytes: usize = evs.iter().map(String::len).sum();
    eprintln!(
        "{} rules, {} events, mean {} bytes/event, index buckets (always, verb, resource, pair, never) = {:?}, prefiltered {}",
        set.rules().len(),
        evs.len(),
        bytes / evs.len(),
        set.index_stats(),
        set.prefiltered_rules()
    );
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("parse_only", |b| {
        b.iter(|| {
            for e in &evs {
                black_box(AuditEvent::parse(e).ok());
            }
        })
    });
    let mut out = Vec::with_capacity(16);
    // Pre-parsed events: bodies and annotations are parsed on first use and then cached,
    // so this measures the matcher alone.
    let parsed: Vec<AuditEvent<'_>> = evs
        .iter()
        .filter_map(|e| AuditEvent::parse(e).ok())
        .collect();
    g.bench_function("evaluate_only_indexed", |b| {
        b.iter(|| {
            for ev in &parsed {
                out.clear();
                set.evaluate(ev, &mut out);
                black_box(&out);
            }
        })
    });
    g.bench_function("parse_and_evaluate_indexed", |b| {
        b.iter(|| {
            for e in &evs {
                if let Ok(ev) = AuditEvent::parse(e) {
                    out.clear();
                    set.evaluate(&ev, &mut out);
                    black_box(&out);
                }
            }
        })
    });
    g.bench_function("parse_and_evaluate_all_rules", |b| {
        b.iter(|| {
            for e in &evs {
                if let Ok(ev) = AuditEvent::parse(e) {
                    out.clear();
                    set.evaluate_all(&ev, &mut out);
                    black_box(&out);
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
