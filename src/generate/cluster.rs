//! The simulated cluster: nodes, namespaces, workloads with their pods, Secrets and
//! ConfigMaps, and the identities that act on them. Built once from the seed, so every
//! event refers to objects that "exist" and names repeat the way they do in a real log.

use std::collections::BTreeMap;
use std::rc::Rc;

use fastrand::Rng;

use super::render::Identity;

/// Kubernetes version the simulated control plane runs (appears in user agents).
pub(crate) const KVER: &str = "v1.31.4";
/// Git commit of that version, as client-go puts it in user agents.
pub(crate) const KGIT: &str = "a78aa47";

/// The alphabet Kubernetes uses for generated name suffixes (no vowels, no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A random generated-name suffix of `n` characters.
pub(crate) fn suffix(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| SUFFIX_ALPHABET[rng.usize(..SUFFIX_ALPHABET.len())] as char)
        .collect()
}

/// A random (v4-shaped) UUID drawn from the seeded generator, so output is reproducible.
pub(crate) fn uuid(rng: &mut Rng) -> String {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    uuid::Builder::from_random_bytes(b)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// One element of `items`, chosen uniformly. `items` must not be empty (all tables here
/// are built non-empty by [`Cluster::build`]).
pub(crate) fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.usize(..items.len())]
}

/// The address of pod number `k` on node `node`: a /24 per node from 10.244.0.0/14 (the
/// usual cluster CIDR), so even thousands of nodes give valid addresses.
pub(crate) fn pod_ip(node: usize, k: usize) -> String {
    format!("10.{}.{}.{}", 244 + (node / 256) % 4, node % 256, k % 256)
}

/// A worker node.
#[derive(Debug)]
pub(crate) struct Node {
    pub name: String,
    pub ip: String,
    pub uid: String,
    pub id: Rc<Identity>,
}

/// A running pod of a workload.
#[derive(Debug)]
pub(crate) struct Pod {
    pub name: String,
    pub uid: String,
    pub node: usize,
    pub ip: String,
}

/// A Deployment, DaemonSet or StatefulSet with its pods and the objects they mount.
#[derive(Debug)]
pub(crate) struct Workload {
    pub ns: String,
    pub name: String,
    pub uid: String,
    pub rs_hash: String,
    pub image: String,
    pub sa: String,
    pub sa_uid: String,
    pub pods: Vec<Pod>,
    pub secrets: Vec<String>,
    pub configmaps: Vec<String>,
    pub generation: u64,
}

/// An operator or add-on that talks to the API server with its service account.
#[derive(Debug)]
pub(crate) struct Operator {
    pub id: Rc<Identity>,
    pub ip: String,
    pub ua: Rc<str>,
    /// `RBAC: allowed by ...` reason for its requests.
    pub reason: String,
}

/// A person using kubectl.
#[derive(Debug)]
pub(crate) struct Human {
    pub id: Rc<Identity>,
    pub ip: String,
    pub ua: Rc<str>,
    /// Bound to cluster-admin through a group binding (platform team).
    pub admin: bool,
    /// Namespaces the person works in.
    pub team_ns: Vec<String>,
}

/// Everything that exists in the simulated cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub nodes: Vec<Node>,
    pub cp_ip: String,
    pub namespaces: Vec<String>,
    pub app_namespaces: Vec<String>,
    pub workloads: Vec<Workload>,
    /// Index into `workloads` of the first application workload.
    pub first_app: usize,
    pub humans: Vec<Human>,
    pub kcm: Rc<Identity>,
    pub scheduler: Rc<Identity>,
    /// kube-controller-manager controllers running with their own service accounts.
    pub controllers: BTreeMap<&'static str, Rc<Identity>>,
    pub ops: BTreeMap<&'static str, Operator>,
    pub anonymous: Rc<Identity>,
}

const APP_NS: &[&str] = &[
    "payments",
    "checkout",
    "catalog",
    "search",
    "orders",
    "inventory",
    "billing",
    "notifications",
    "accounts",
    "web",
    "analytics",
    "recommendations",
    "shipping",
    "reviews",
    "media",
    "gateway",
];
const APP_ROLES: &[&str] = &[
    "api", "worker", "web", "consumer", "cache", "sync", "grpc", "cron",
];
const SECRET_KINDS: &[&str] = &["db-credentials", "api-keys", "tls", "oauth-client", "smtp"];
const PEOPLE: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
];
pub(crate) const CONTROLLERS: &[&str] = &[
    "replicaset-controller",
    "deployment-controller",
    "endpointslice-controller",
    "endpoint-controller",
    "generic-garbage-collector",
    "daemon-set-controller",
    "job-controller",
    "cronjob-controller",
    "node-controller",
    "namespace-controller",
    "statefulset-controller",
    "resourcequota-controller",
];

/// A service-account identity as the API server reports it for a projected token mounted
/// in a pod (credential id and the bound pod in `extra`).
pub(crate) fn sa_identity(
    rng: &mut Rng,
    ns: &str,
    name: &str,
    uid: &str,
    pod: Option<(&Pod, &Node)>,
) -> Identity {
    let mut extra = BTreeMap::new();
    extra.insert(
        "authentication.kubernetes.io/credential-id".to_string(),
        vec![format!("JTI={}", uuid(rng))],
    );
    if let Some((p, n)) = pod {
        extra.insert(
            "authentication.kubernetes.io/node-name".into(),
            vec![n.name.clone()],
        );
        extra.insert(
            "authentication.kubernetes.io/node-uid".into(),
            vec![n.uid.clone()],
        );
        extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            vec![p.name.clone()],
        );
        extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            vec![p.uid.clone()],
        );
    }
    Identity {
        username: format!("system:serviceaccount:{ns}:{name}"),
        uid: uid.to_string(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
        extra,
    }
}

impl Cluster {
    /// Builds a cluster of `nodes` nodes, `app_namespaces` application namespaces and
    /// `app_workloads` application workloads (each at least 1).
    pub fn build(
        rng: &mut Rng,
        nodes: usize,
        app_namespaces: usize,
        app_workloads: usize,
    ) -> Cluster {
        let nodes: Vec<Node> = (0..nodes.max(1))
            .map(|i| {
                let ip = format!(
                    "10.0.{}.{}",
                    16 + (i % 3) * 16 + i / 3 % 16,
                    20 + rng.u8(..200)
                );
                let name = format!("ip-{}.eu-west-1.compute.internal", ip.replace('.', "-"));
                let id = Identity {
                    username: format!("system:node:{name}"),
                    groups: vec!["system:nodes".into(), "system:authenticated".into()],
                    ..Identity::default()
                };
                Node {
                    name,
                    ip,
                    uid: uuid(rng),
                    id: Rc::new(id),
                }
            })
            .collect();
        let app_ns: Vec<String> = (0..app_namespaces.max(1))
            .map(|i| match (APP_NS.get(i), i / APP_NS.len()) {
                (Some(n), _) => n.to_string(),
                (None, k) => format!("{}-{k}", APP_NS[i % APP_NS.len()]),
            })
            .collect();
        let mut namespaces: Vec<String> = [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "default",
            "ingress-nginx",
            "cert-manager",
            "argocd",
            "monitoring",
            "ci",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        namespaces.extend(app_ns.iter().cloned());

        let mut pod_seq = vec![0usize; nodes.len()];
        let mut workloads = Vec::new();
        let mut add = |rng: &mut Rng,
                       ns: &str,
                       name: &str,
                       kind: &'static str,
                       image: &str,
                       sa: &str,
                       replicas: usize,
                       secrets: Vec<String>| {
            let rs_hash = suffix(rng, 10);
            let pods = (0..replicas)
                .map(|r| {
                    let node = if kind == "DaemonSet" {
                        r
                    } else {
                        rng.usize(..nodes.len())
                    };
                    pod_seq[node] += 1;
                    let pname = match kind {
                        "Deployment" => format!("{name}-{rs_hash}-{}", suffix(rng, 5)),
                        "StatefulSet" => format!("{name}-{r}"),
                        _ => format!("{name}-{}", suffix(rng, 5)),
                    };
                    Pod {
                        name: pname,
                        uid: uuid(rng),
                        node,
                        ip: pod_ip(node, 2 + pod_seq[node] % 250),
                    }
                })
                .collect();
            workloads.push(Workload {
                ns: ns.to_string(),
                name: name.to_string(),
                uid: uuid(rng),
                rs_hash,
                image: image.to_string(),
                sa: sa.to_string(),
                sa_uid: uuid(rng),
                pods,
                secrets,
                configmaps: vec!["kube-root-ca.crt".into(), format!("{name}-config")],
                generation: 1 + rng.u64(..40),
            });
        };
        let n = nodes.len();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        add(
            rng,
            "kube-system",
            "coredns",
            "Deployment",
            "registry.k8s.io/coredns/coredns:v1.11.3",
            "coredns",
            2,
            vec![],
        );
        add(
            rng,
            "kube-system",
            "kube-proxy",
            "DaemonSet",
            "registry.k8s.io/kube-proxy:v1.31.4",
            "kube-proxy",
            n.min(6),
            vec![],
        );
        add(
            rng,
            "kube-system",
            "metrics-server",
            "Deployment",
            "registry.k8s.io/metrics-server/metrics-server:v0.7.2",
            "metrics-server",
            1,
            vec![],
        );
        add(
            rng,
            "kube-system",
            "ebs-csi-controller",
            "Deployment",
            "public.ecr.aws/ebs-csi-driver/aws-ebs-csi-driver:v1.36.0",
            "ebs-csi-controller-sa",
            2,
            vec![],
        );
        add(
            rng,
            "ingress-nginx",
            "ingress-nginx-controller",
            "Deployment",
            "registry.k8s.io/ingress-nginx/controller:v1.11.3",
            "ingress-nginx",
            2,
            s(&["ingress-nginx-admission"]),
        );
        add(
            rng,
            "cert-manager",
            "cert-manager",
            "Deployment",
            "quay.io/jetstack/cert-manager-controller:v1.16.1",
            "cert-manager",
            1,
            s(&["letsencrypt-prod-account-key"]),
        );
        add(
            rng,
            "cert-manager",
            "cert-manager-webhook",
            "Deployment",
            "quay.io/jetstack/cert-manager-webhook:v1.16.1",
            "cert-manager-webhook",
            1,
            s(&["cert-manager-webhook-ca"]),
        );
        add(
            rng,
            "argocd",
            "argocd-application-controller",
            "StatefulSet",
            "quay.io/argoproj/argocd:v2.13.1",
            "argocd-application-controller",
            1,
            s(&["argocd-secret", "argocd-redis"]),
        );
        add(
            rng,
            "argocd",
            "argocd-server",
            "Deployment",
            "quay.io/argoproj/argocd:v2.13.1",
            "argocd-server",
            2,
            s(&["argocd-secret", "argocd-server-tls"]),
        );
        add(
            rng,
            "monitoring",
            "prometheus-k8s",
            "StatefulSet",
            "quay.io/prometheus/prometheus:v2.54.1",
            "prometheus-k8s",
            2,
            s(&["prometheus-k8s-tls-assets"]),
        );
        add(
            rng,
            "monitoring",
            "kube-state-metrics",
            "Deployment",
            "registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.13.0",
            "kube-state-metrics",
            1,
            vec![],
        );
        add(
            rng,
            "ci",
            "gitlab-runner",
            "Deployment",
            "registry.gitlab.com/gitlab-org/gitlab-runner:alpine-v17.5.2",
            "gitlab-deployer",
            1,
            s(&[
                "gitlab-runner-token",
                "gitlab-deployer-token",
                "registry-credentials",
            ]),
        );
        // `add` holds `workloads` mutably; count the system workloads through it.
        let first_app = 12;
        for i in 0..app_workloads.max(1) {
            let ns = &app_ns[i % app_ns.len()];
            let role = APP_ROLES[(i / app_ns.len()) % APP_ROLES.len()];
            let name = if i / app_ns.len() < APP_ROLES.len() {
                format!("{ns}-{role}")
            } else {
                format!("{ns}-{role}-{}", i / (app_ns.len() * APP_ROLES.len()))
            };
            let mut secrets = vec![format!("{name}-{}", SECRET_KINDS[i % SECRET_KINDS.len()])];
            if rng.bool() {
                secrets.push(format!(
                    "{name}-{}",
                    SECRET_KINDS[(i + 2) % SECRET_KINDS.len()]
                ));
            }
            let image = format!(
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com/{ns}/{role}:1.{}.{}",
                rng.u8(..30),
                rng.u8(..10)
            );
            let replicas = 1 + rng.usize(..3);
            add(
                rng,
                ns,
                &name,
                "Deployment",
                &image,
                &name,
                replicas,
                secrets,
            );
        }

        debug_assert_eq!(workloads[first_app].ns, app_ns[0], "SYSTEM workload count");
        let humans = PEOPLE
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let admin = i < 2;
                let team_ns: Vec<String> = (0..2)
                    .map(|k| app_ns[(i * 2 + k) % app_ns.len()].clone())
                    .collect();
                let mut groups = if admin {
                    vec!["platform-admins".to_string()]
                } else {
                    vec![format!("team-{}", team_ns[0])]
                };
                groups.push("system:authenticated".into());
                let ua = match i % 3 {
                    0 => "kubectl/v1.31.2 (darwin/arm64) kubernetes/5864a46",
                    1 => "kubectl/v1.30.5 (linux/amd64) kubernetes/74e84a9",
                    _ => "kubectl/v1.31.1 (darwin/arm64) kubernetes/948afe5",
                };
                Human {
                    id: Rc::new(Identity {
                        username: format!("{p}@example.com"),
                        groups,
                        ..Identity::default()
                    }),
                    ip: format!("198.51.100.{}", 20 + i * 7),
                    ua: Rc::from(ua),
                    admin,
                    team_ns,
                }
            })
            .collect();

        let controllers = CONTROLLERS
            .iter()
            .map(|c| {
                let uid = uuid(rng);
                (*c, Rc::new(sa_identity(rng, "kube-system", c, &uid, None)))
            })
            .collect();

        let mut cluster = Cluster {
            nodes,
            cp_ip: "10.0.0.10".into(),
            namespaces,
            app_namespaces: app_ns,
            workloads,
            first_app,
            humans,
            kcm: Rc::new(Identity {
                username: "system:kube-controller-manager".into(),
                groups: vec!["system:authenticated".into()],
                ..Identity::default()
            }),
            scheduler: Rc::new(Identity {
                username: "system:kube-scheduler".into(),
                groups: vec!["system:authenticated".into()],
                ..Identity::default()
            }),
            controllers,
            ops: BTreeMap::new(),
            anonymous: Rc::new(Identity {
                username: "system:anonymous".into(),
                groups: vec!["system:unauthenticated".into()],
                ..Identity::default()
            }),
        };
        let op_specs: &[(&str, &str, &str, &str)] = &[
            ("coredns", "coredns", "coredns/v0.0.0 (linux/amd64) kubernetes/$Format", "ClusterRoleBinding \"system:coredns\" of ClusterRole \"system:coredns\""),
            ("kube-proxy", "kube-proxy", "kube-proxy/v1.31.4 (linux/amd64) kubernetes/a78aa47", "ClusterRoleBinding \"system:node-proxier\" of ClusterRole \"system:node-proxier\""),
            ("metrics-server", "metrics-server", "metrics-server/v0.7.2 (linux/amd64) kubernetes/$Format", "ClusterRoleBinding \"system:metrics-server\" of ClusterRole \"system:metrics-server\""),
            ("ingress-nginx-controller", "ingress-nginx", "nginx-ingress-controller/v1.11.3 (linux/amd64) ingress-nginx/0106de65cfccb74405a6dfa7d9daffc6f0a6ef1a", "ClusterRoleBinding \"ingress-nginx\" of ClusterRole \"ingress-nginx\""),
            ("cert-manager", "cert-manager", "cert-manager-controller/v1.16.1 (linux/amd64) cert-manager/4e5ab1ce7c6bd3a4b2a8b5f2d1f5d0c6e0a3b7e9", "ClusterRoleBinding \"cert-manager-controller-certificates\" of ClusterRole \"cert-manager-controller-certificates\""),
            ("argocd-application-controller", "argocd-application-controller", "argocd-application-controller/v2.13.1+af54ef8 (linux/amd64) kubernetes/$Format", "ClusterRoleBinding \"argocd-application-controller\" of ClusterRole \"argocd-application-controller\""),
            ("argocd-server", "argocd-server", "argocd-server/v2.13.1+af54ef8 (linux/amd64) kubernetes/$Format", "RoleBinding \"argocd-server/argocd\" of Role \"argocd-server\""),
            ("prometheus-k8s", "prometheus-k8s", "Prometheus/2.54.1", "ClusterRoleBinding \"prometheus-k8s\" of ClusterRole \"prometheus-k8s\""),
            ("kube-state-metrics", "kube-state-metrics", "kube-state-metrics/v2.13.0 (linux/amd64) kubernetes/f0a2c7b", "ClusterRoleBinding \"kube-state-metrics\" of ClusterRole \"kube-state-metrics\""),
            ("gitlab-runner", "gitlab-deployer", "kubectl/v1.29.3 (linux/amd64) kubernetes/6813625", "ClusterRoleBinding \"gitlab-deployer\" of ClusterRole \"gitlab-deployer\""),
        ];
        for (wname, key, ua, binding) in op_specs {
            let Some(w) = cluster.workloads.iter().find(|w| w.name == *wname) else {
                continue;
            };
            let pod = &w.pods[0];
            let node = &cluster.nodes[pod.node];
            let id = sa_identity(rng, &w.ns, &w.sa, &w.sa_uid, Some((pod, node)));
            let reason = format!(
                "RBAC: allowed by {binding} to ServiceAccount \"{}/{}\"",
                w.sa, w.ns
            );
            let op = Operator {
                id: Rc::new(id),
                ip: pod.ip.clone(),
                ua: Rc::from(*ua),
                reason,
            };
            cluster.ops.insert(key, op);
        }
        cluster
    }

    /// The application workloads.
    pub fn apps(&self) -> &[Workload] {
        &self.workloads[self.first_app..]
    }
}
