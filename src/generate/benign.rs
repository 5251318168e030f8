//! Benign traffic of a busy cluster: kubelets, control-plane components, controllers,
//! add-on operators, health probes, people with kubectl and a CI deploy bot.
//!
//! Each activity is one or a few API requests drawn from a weighted table. The weights
//! reflect what dominates real audit logs (kubelet lease renewals, watches, events,
//! status patches) and give an average of about 1.5 KB per line. People and the CI bot
//! follow office hours when the diurnal pattern is on.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::bodies;
use super::cluster::{pick, suffix, uuid, Cluster, KGIT, KVER};
use super::sim::{conflict, forbid, not_found, watch_query, Actor, Sim, MS, SEC};

/// Actors prepared once per run (their identities never change).
pub(crate) struct Actors {
    pub nodes: Vec<Actor>,
    pub ops: BTreeMap<&'static str, Actor>,
    pub controllers: BTreeMap<&'static str, Actor>,
    pub kcm: Actor,
    pub scheduler: Actor,
    pub probe: Actor,
    pub lb_probe: Actor,
    pub humans: Vec<Actor>,
}

impl Actors {
    /// Actors of `c`.
    pub fn new(c: &Cluster) -> Actors {
        let kubelet_ua: Rc<str> =
            Rc::from(format!("kubelet/{KVER} (linux/amd64) kubernetes/{KGIT}"));
        let empty: Rc<str> = Rc::from("");
        let nodes = c
            .nodes
            .iter()
            .map(|n| Actor {
                id: n.id.clone(),
                ip: n.ip.clone(),
                ua: kubelet_ua.clone(),
                reason: empty.clone(),
            })
            .collect();
        let ops = c
            .ops
            .iter()
            .map(|(k, o)| {
                (
                    *k,
                    Actor {
                        id: o.id.clone(),
                        ip: o.ip.clone(),
                        ua: o.ua.clone(),
                        reason: Rc::from(o.reason.as_str()),
                    },
                )
            })
            .collect();
        let controllers = c
            .controllers
            .iter()
            .map(|(k, id)| {
                (
                    *k,
                    Actor {
                        id: id.clone(),
                        ip: c.cp_ip.clone(),
                        ua: Rc::from(format!(
                            "kube-controller-manager/{KVER} (linux/amd64) kubernetes/{KGIT}/system:serviceaccount:kube-system:{k}"
                        )),
                        reason: Rc::from(format!(
                            "RBAC: allowed by ClusterRoleBinding \"system:controller:{k}\" of ClusterRole \"system:controller:{k}\" to ServiceAccount \"{k}/kube-system\""
                        )),
                    },
                )
            })
            .collect();
        let humans = c
            .humans
            .iter()
            .map(|h| Actor {
                id: h.id.clone(),
                ip: h.ip.clone(),
                ua: h.ua.clone(),
                reason: Rc::from(if h.admin {
                    "RBAC: allowed by ClusterRoleBinding \"platform-admins\" of ClusterRole \"cluster-admin\" to Group \"platform-admins\"".to_string()
                } else {
                    format!(
                        "RBAC: allowed by RoleBinding \"{g}-edit/{ns}\" of ClusterRole \"edit\" to Group \"{g}\"",
                        g = h.id.groups[0],
                        ns = h.team_ns[0]
                    )
                }),
            })
            .collect();
        Actors {
            nodes,
            ops,
            controllers,
            kcm: Actor {
                id: c.kcm.clone(),
                ip: c.cp_ip.clone(),
                ua: Rc::from(format!("kube-controller-manager/{KVER} (linux/amd64) kubernetes/{KGIT}/leader-election")),
                reason: Rc::from("RBAC: allowed by ClusterRoleBinding \"system:kube-controller-manager\" of ClusterRole \"system:kube-controller-manager\" to User \"system:kube-controller-manager\""),
            },
            scheduler: Actor {
                id: c.scheduler.clone(),
                ip: c.cp_ip.clone(),
                ua: Rc::from(format!("kube-scheduler/{KVER} (linux/amd64) kubernetes/{KGIT}/scheduler")),
                reason: Rc::from("RBAC: allowed by ClusterRoleBinding \"system:kube-scheduler\" of ClusterRole \"system:kube-scheduler\" to User \"system:kube-scheduler\""),
            },
            probe: Actor {
                id: c.anonymous.clone(),
                ip: c.cp_ip.clone(),
                ua: Rc::from("kube-probe/1.31"),
                reason: Rc::from("RBAC: allowed by ClusterRoleBinding \"system:public-info-viewer\" of ClusterRole \"system:public-info-viewer\" to Group \"system:unauthenticated\""),
            },
            lb_probe: Actor {
                id: c.anonymous.clone(),
                ip: "10.0.0.5".into(),
                ua: Rc::from("ELB-HealthChecker/2.0"),
                reason: Rc::from("RBAC: allowed by ClusterRoleBinding \"system:public-info-viewer\" of ClusterRole \"system:public-info-viewer\" to Group \"system:unauthenticated\""),
            },
            humans,
        }
    }

    /// An operator's actor (the table is built from a fixed list, so the key exists).
    fn op(&self, key: &str) -> &Actor {
        self.ops.get(key).unwrap_or(&self.kcm)
    }

    fn ctrl(&self, key: &str) -> &Actor {
        self.controllers.get(key).unwrap_or(&self.kcm)
    }
}

type Activity = fn(&mut Sim, &Actors, i64);

/// `(weight, activity, follows office hours)`.
const TABLE: &[(u32, Activity, bool)] = &[
    (200, kubelet_lease, false),
    (45, kubelet_watch_object, false),
    (45, kubelet_get_object, false),
    (60, kubelet_pod_status, false),
    (14, kubelet_node_status, false),
    (14, kubelet_token, false),
    (12, kubelet_get_node, false),
    (4, kubelet_watch_pods, false),
    (28, leader_lease, false),
    (60, endpointslice_update, false),
    (40, replicaset_status, false),
    (9, pod_rollout, false),
    (10, controller_reads, false),
    (45, event_write, false),
    (28, system_watch, false),
    (10, ingress_nginx, false),
    (7, cert_manager, false),
    (18, argocd, false),
    (8, prometheus, false),
    (5, kube_state_metrics, false),
    (2, gitlab_runner_job, false),
    (60, health_probe, false),
    (6, discovery, false),
    (1, cronjob_run, false),
    (22, human_get, true),
    (6, human_describe, true),
    (5, human_logs, true),
    (3, human_apply, true),
    (2, human_restart, true),
    (3, human_misc, true),
    (2, human_forbidden, true),
    (1, human_interactive, true),
    (4, ci_deploy, true),
];

/// Office-hours weight multiplier in `[0.1, 1]` for `t` (UTC; a European team).
fn office_factor(t: i64) -> f64 {
    let hour = t.div_euclid(3600 * SEC).rem_euclid(24);
    let dow = (t.div_euclid(86_400 * SEC) + 4).rem_euclid(7); // 0 = Sunday
    let weekend = dow == 0 || dow == 6;
    match (weekend, hour) {
        (true, _) => 0.1,
        (false, 7..=17) => 1.0,
        (false, 6 | 18..=20) => 0.4,
        _ => 0.1,
    }
}

/// Runs one benign activity at `t`.
pub(crate) fn activity(sim: &mut Sim, a: &Actors, t: i64, diurnal: bool) {
    let total: u32 = TABLE.iter().map(|e| e.0).sum();
    loop {
        let mut x = sim.rng.u32(..total);
        for &(w, f, office) in TABLE {
            if x < w {
                if office && diurnal && sim.rng.f64() > office_factor(t) {
                    break; // redraw: outside office hours people are rare
                }
                f(sim, a, t);
                return;
            }
            x -= w;
        }
    }
}

fn random_pod(sim: &mut Sim) -> (usize, usize) {
    let wi = sim.rng.usize(..sim.cluster.workloads.len());
    let pi = sim.rng.usize(..sim.cluster.workloads[wi].pods.len());
    (wi, pi)
}

fn kubelet_lease(sim: &mut Sim, a: &Actors, t: i64) {
    let n = sim.rng.usize(..a.nodes.len());
    let node = &sim.cluster.nodes[n];
    let (name, uid) = (node.name.clone(), node.uid.clone());
    let rv = sim.next_rv();
    let mut r = sim.req(
        t,
        &a.nodes[n],
        "update",
        "leases",
        "kube-node-lease",
        &name,
        "",
        "?timeout=10s",
    );
    let body = bodies::lease(
        "kube-node-lease",
        &name,
        &name,
        &uid,
        &sim.rv.to_string(),
        t,
        40,
    );
    r.request_object = Some(body);
    r.response_object = Some(bodies::lease(
        "kube-node-lease",
        &name,
        &name,
        &uid,
        &rv,
        t,
        40,
    ));
    if sim.rng.u32(..400) == 0 {
        conflict(&mut r);
    }
    sim.submit(r);
}

fn kubelet_watch_object(sim: &mut Sim, a: &Actors, t: i64) {
    let (wi, pi) = random_pod(sim);
    let w = &sim.cluster.workloads[wi];
    let n = w.pods[pi].node;
    let ns = w.ns.clone();
    let (res, name) = if !w.secrets.is_empty() && sim.rng.bool() {
        ("secrets", pick(&mut sim.rng, &w.secrets).clone())
    } else {
        ("configmaps", pick(&mut sim.rng, &w.configmaps).clone())
    };
    let (q, dur) = watch_query(
        &mut sim.rng,
        &format!("&fieldSelector=metadata.name%3D{name}"),
    );
    let mut r = sim.req(t, &a.nodes[n], "watch", res, &ns, &name, "", &q);
    r.uri = format!("/api/v1/namespaces/{ns}/{res}{q}");
    r.latency = dur;
    sim.submit(r);
}

fn kubelet_get_object(sim: &mut Sim, a: &Actors, t: i64) {
    let (wi, pi) = random_pod(sim);
    let w = &sim.cluster.workloads[wi];
    let n = w.pods[pi].node;
    let ns = w.ns.clone();
    let pod = w.pods[pi].name.clone();
    let (res, name) = match sim.rng.u8(..3) {
        0 if !w.secrets.is_empty() => ("secrets", pick(&mut sim.rng, &w.secrets).clone()),
        1 => ("pods", pod),
        _ => ("configmaps", pick(&mut sim.rng, &w.configmaps).clone()),
    };
    let mut r = sim.req(t, &a.nodes[n], "get", res, &ns, &name, "", "");
    if res == "configmaps" && sim.rng.u32(..60) == 0 {
        not_found(&mut r);
    }
    sim.submit(r);
}

fn kubelet_pod_status(sim: &mut Sim, a: &Actors, t: i64) {
    let (wi, pi) = random_pod(sim);
    let w = &sim.cluster.workloads[wi];
    let p = &w.pods[pi];
    let body = bodies::pod_status_patch(p, w, t);
    let (ns, name, n) = (w.ns.clone(), p.name.clone(), p.node);
    let mut r = sim.req(t, &a.nodes[n], "patch", "pods", &ns, &name, "status", "");
    r.request_object = Some(body);
    sim.submit(r);
}

fn kubelet_node_status(sim: &mut Sim, a: &Actors, t: i64) {
    let n = sim.rng.usize(..a.nodes.len());
    let name = sim.cluster.nodes[n].name.clone();
    let mut r = sim.req(
        t,
        &a.nodes[n],
        "patch",
        "nodes",
        "",
        &name,
        "status",
        "?timeout=10s",
    );
    r.request_object = Some(bodies::node_status_patch(t));
    sim.submit(r);
}

fn kubelet_token(sim: &mut Sim, a: &Actors, t: i64) {
    let (wi, pi) = random_pod(sim);
    let w = &sim.cluster.workloads[wi];
    let (ns, sa, n) = (w.ns.clone(), w.sa.clone(), w.pods[pi].node);
    let r = sim.req(
        t,
        &a.nodes[n],
        "create",
        "serviceaccounts",
        &ns,
        &sa,
        "token",
        "",
    );
    sim.submit(r);
}

fn kubelet_get_node(sim: &mut Sim, a: &Actors, t: i64) {
    let n = sim.rng.usize(..a.nodes.len());
    let name = sim.cluster.nodes[n].name.clone();
    let q = if sim.rng.bool() {
        "?resourceVersion=0&timeout=10s"
    } else {
        "?timeout=10s"
    };
    let r = sim.req(t, &a.nodes[n], "get", "nodes", "", &name, "", q);
    sim.submit(r);
}

fn kubelet_watch_pods(sim: &mut Sim, a: &Actors, t: i64) {
    let n = sim.rng.usize(..a.nodes.len());
    let name = sim.cluster.nodes[n].name.clone();
    let (q, dur) = watch_query(
        &mut sim.rng,
        &format!("&fieldSelector=spec.nodeName%3D{name}"),
    );
    let mut r = sim.req(t, &a.nodes[n], "watch", "pods", "", "", "", &q);
    r.latency = dur;
    sim.submit(r);
}

fn leader_lease(sim: &mut Sim, a: &Actors, t: i64) {
    let choice = sim.rng.u8(..5);
    let (actor, ns, name, holder) = match choice {
        0 => (
            &a.kcm,
            "kube-system",
            "kube-controller-manager",
            "ip-10-0-0-10_6d0c3f1e-4b7a-4d0e-9a55-2f7c1b8e9d10",
        ),
        1 => (
            &a.scheduler,
            "kube-system",
            "kube-scheduler",
            "ip-10-0-0-10_0b9e2a44-81c3-4e2f-b7d4-5a6c7e8f9012",
        ),
        2 => (
            a.op("cert-manager"),
            "kube-system",
            "cert-manager-controller",
            "cert-manager-6b8f7d9c4-x7k2p-external-cert-manager-controller",
        ),
        3 => (
            a.op("ingress-nginx"),
            "ingress-nginx",
            "ingress-nginx-leader",
            "ingress-nginx-controller-7c9d8b6f5-q4w2z",
        ),
        _ => (
            a.op("cert-manager"),
            "kube-system",
            "cert-manager-cainjector-leader-election",
            "cert-manager-cainjector-5d7b9c6f8-m2x9k_3f1e0d2c-7b6a-4e5f-9d8c-1a2b3c4d5e6f",
        ),
    };
    let uid = format!("5f2c9a1e-0b3d-4c6e-8f7a-{:012x}", choice as u64 * 7919);
    let g = sim.req(t, actor, "get", "leases", ns, name, "", "?timeout=5s");
    let glat = g.latency;
    sim.submit(g);
    let rv = sim.next_rv();
    let t2 = t + glat + 200 + sim.rng.i64(0..800);
    let mut u = sim.req(t2, actor, "update", "leases", ns, name, "", "?timeout=5s");
    u.request_object = Some(bodies::lease(
        ns,
        name,
        holder,
        &uid,
        &(sim.rv - 3).to_string(),
        t2,
        15,
    ));
    u.response_object = Some(bodies::lease(ns, name, holder, &uid, &rv, t2, 15));
    sim.submit(u);
}

fn endpointslice_update(sim: &mut Sim, a: &Actors, t: i64) {
    let wi = sim.rng.usize(..sim.cluster.workloads.len());
    let rv = sim.next_rv();
    let w = &sim.cluster.workloads[wi];
    let name = format!("{}-{}", w.name, &w.rs_hash[..5]);
    let body = bodies::endpointslice(w, &sim.cluster.nodes, &name, &rv);
    let ns = w.ns.clone();
    let mut r = sim.req(
        t,
        a.ctrl("endpointslice-controller"),
        "update",
        "endpointslices",
        &ns,
        &name,
        "",
        "",
    );
    r.request_object = Some(body.clone());
    r.response_object = Some(body);
    if sim.rng.u32(..150) == 0 {
        conflict(&mut r);
    }
    sim.submit(r);
}

fn replicaset_status(sim: &mut Sim, a: &Actors, t: i64) {
    let wi = sim.cluster.first_app + sim.rng.usize(..sim.cluster.apps().len());
    let rv = sim.next_rv();
    let w = &sim.cluster.workloads[wi];
    let body = bodies::replicaset_status(w, &rv);
    let (ns, name) = (w.ns.clone(), format!("{}-{}", w.name, w.rs_hash));
    let mut r = sim.req(
        t,
        a.ctrl("replicaset-controller"),
        "update",
        "replicasets",
        &ns,
        &name,
        "status",
        "",
    );
    r.request_object = Some(body);
    sim.submit(r);
}

/// A pod replaced during a rollout: created by the ReplicaSet controller, bound by the
/// scheduler, reported running by its kubelet, and the old pod deleted.
fn pod_rollout(sim: &mut Sim, a: &Actors, t: i64) {
    let wi = sim.cluster.first_app + sim.rng.usize(..sim.cluster.apps().len());
    let n = sim.rng.usize(..sim.cluster.nodes.len());
    let new_name = {
        let w = &sim.cluster.workloads[wi];
        format!("{}-{}-{}", w.name, w.rs_hash, suffix(&mut sim.rng, 5))
    };
    let new_pod = super::cluster::Pod {
        name: new_name.clone(),
        uid: uuid(&mut sim.rng),
        node: n,
        ip: super::cluster::pod_ip(n, 100 + sim.rng.usize(..150)),
    };
    let rv = sim.next_rv();
    let w = &sim.cluster.workloads[wi];
    let ns = w.ns.clone();
    let req_body = bodies::pod(w, &new_pod, None, "", t);
    let resp_body = bodies::pod(w, &new_pod, None, &rv, t);
    let node_name = sim.cluster.nodes[n].name.clone();
    let bind_body = bodies::binding(&new_pod, &ns, &node_name);
    let status_body = bodies::pod_status_patch(&new_pod, w, t + 4 * SEC);
    let old = w.pods[0].name.clone();

    let mut c = sim.req(
        t,
        a.ctrl("replicaset-controller"),
        "create",
        "pods",
        &ns,
        &new_name,
        "",
        "",
    );
    c.request_object = Some(req_body);
    c.response_object = Some(resp_body);
    c.annotations.insert(
        "pod-security.kubernetes.io/enforce-policy",
        "restricted:latest".into(),
    );
    sim.submit(c);
    let t2 = t + 30 * MS + sim.rng.i64(0..200 * MS);
    let mut b = sim.req(
        t2,
        &a.scheduler,
        "create",
        "pods",
        &ns,
        &new_name,
        "binding",
        "",
    );
    b.request_object = Some(bind_body);
    b.response_object = Some(bodies::status_success("pods", &new_name, ""));
    b.status.code = 201;
    sim.submit(b);
    let t3 = t + 4 * SEC + sim.rng.i64(0..3 * SEC);
    let mut s = sim.req(
        t3,
        &a.nodes[n],
        "patch",
        "pods",
        &ns,
        &new_name,
        "status",
        "",
    );
    s.request_object = Some(status_body);
    sim.submit(s);
    let t4 = t3 + SEC + sim.rng.i64(0..2 * SEC);
    let mut d = sim.req(
        t4,
        a.ctrl("replicaset-controller"),
        "delete",
        "pods",
        &ns,
        &old,
        "",
        "",
    );
    d.request_object = Some(
        serde_json::json!({"kind":"DeleteOptions","apiVersion":"v1","preconditions":{"uid":uuid(&mut sim.rng)},"propagationPolicy":"Background"}),
    );
    sim.submit(d);
}

fn controller_reads(sim: &mut Sim, a: &Actors, t: i64) {
    const RES: &[&str] = &[
        "pods",
        "replicasets",
        "deployments",
        "jobs",
        "configmaps",
        "serviceaccounts",
        "endpointslices",
        "leases",
    ];
    let res = *pick(&mut sim.rng, RES);
    let ctrl = *pick(
        &mut sim.rng,
        &[
            "generic-garbage-collector",
            "resourcequota-controller",
            "namespace-controller",
            "node-controller",
        ],
    );
    let actor = a.ctrl(ctrl);
    let r = if ctrl == "node-controller" {
        sim.req(
            t,
            actor,
            "list",
            "nodes",
            "",
            "",
            "",
            "?limit=500&resourceVersion=0",
        )
    } else {
        let ns = pick(&mut sim.rng, &sim.cluster.namespaces).clone();
        sim.req(
            t,
            actor,
            "list",
            res,
            &ns,
            "",
            "",
            "?limit=500&resourceVersion=0",
        )
    };
    sim.submit(r);
}

fn event_write(sim: &mut Sim, a: &Actors, t: i64) {
    let (wi, pi) = random_pod(sim);
    let w = &sim.cluster.workloads[wi];
    let (ns, pod, n) = (w.ns.clone(), w.pods[pi].name.clone(), w.pods[pi].node);
    let name = format!(
        "{pod}.{:x}",
        0x17f0_0000_0000_0000u64 + sim.rng.u64(..1 << 40)
    );
    let k = sim.rng.u8(..6);
    let (actor, component) = match sim.rng.u8(..4) {
        0 => (a.ctrl("replicaset-controller"), "replicaset-controller"),
        1 => (&a.scheduler, "default-scheduler"),
        _ => (&a.nodes[n], "kubelet"),
    };
    let body = bodies::event(
        &ns,
        &name,
        &w.pods[pi],
        component,
        &sim.cluster.nodes[n].name,
        t,
        k,
    );
    let verb = if sim.rng.u8(..3) == 0 {
        "patch"
    } else {
        "create"
    };
    let (res, group) = if sim.rng.bool() {
        ("events", "")
    } else {
        ("events", "events.k8s.io")
    };
    let mut r = sim.req(t, actor, verb, res, &ns, &name, "", "");
    if group == "events.k8s.io" {
        if let Some(o) = r.object_ref.as_mut() {
            o.api_group = "events.k8s.io";
        }
        let path_name = if verb == "create" {
            String::new()
        } else {
            format!("/{name}")
        };
        r.uri = format!("/apis/events.k8s.io/v1/namespaces/{ns}/events{path_name}");
    }
    r.request_object = Some(body);
    sim.submit(r);
}

const WATCHING_CONTROLLERS: &[&str] = &[
    "deployment-controller",
    "replicaset-controller",
    "daemon-set-controller",
    "statefulset-controller",
    "job-controller",
];

fn system_watch(sim: &mut Sim, a: &Actors, t: i64) {
    let (actor, res, cluster_wide) = match sim.rng.u8(..8) {
        0 => (a.op("kube-proxy"), "endpointslices", true),
        1 => (a.op("kube-proxy"), "services", true),
        2 => (a.op("coredns"), "services", true),
        3 => (a.op("coredns"), "endpointslices", true),
        4 => (a.op("coredns"), "namespaces", true),
        5 => (&a.scheduler, "pods", true),
        6 => (
            a.ctrl(pick::<&str>(&mut sim.rng, WATCHING_CONTROLLERS)),
            "pods",
            true,
        ),
        _ => (a.op("metrics-server"), "nodes", true),
    };
    let extra = if res == "endpointslices" {
        "&labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name"
    } else {
        ""
    };
    let (q, dur) = watch_query(&mut sim.rng, extra);
    let ns = if cluster_wide { "" } else { "default" };
    let mut r = sim.req(t, actor, "watch", res, ns, "", "", &q);
    r.latency = dur;
    sim.submit(r);
}

fn ingress_nginx(sim: &mut Sim, a: &Actors, t: i64) {
    let actor = a.op("ingress-nginx");
    let r = match sim.rng.u8(..4) {
        0 => {
            let (q, dur) = watch_query(&mut sim.rng, "");
            let mut r = sim.req(t, actor, "watch", "secrets", "", "", "", &q);
            r.latency = dur;
            r
        }
        1 => sim.req(
            t,
            actor,
            "list",
            "secrets",
            "",
            "",
            "",
            "?limit=500&resourceVersion=0",
        ),
        2 => sim.req(
            t,
            actor,
            "list",
            "ingresses",
            "",
            "",
            "",
            "?limit=500&resourceVersion=0",
        ),
        _ => sim.req(
            t,
            actor,
            "get",
            "configmaps",
            "ingress-nginx",
            "ingress-nginx-controller",
            "",
            "",
        ),
    };
    sim.submit(r);
}

fn cert_manager(sim: &mut Sim, a: &Actors, t: i64) {
    let actor = a.op("cert-manager");
    let r = match sim.rng.u8(..6) {
        0 => {
            let (q, dur) = watch_query(
                &mut sim.rng,
                "&labelSelector=controller.cert-manager.io%2Ffao%3Dtrue",
            );
            let mut r = sim.req(t, actor, "watch", "secrets", "", "", "", &q);
            r.latency = dur;
            r
        }
        1 => sim.req(
            t,
            actor,
            "list",
            "certificates",
            "",
            "",
            "",
            "?limit=500&resourceVersion=0",
        ),
        2 => {
            let ns = pick(&mut sim.rng, &sim.cluster.app_namespaces).clone();
            sim.req(
                t,
                actor,
                "get",
                "secrets",
                &ns,
                &format!("{ns}-tls"),
                "",
                "",
            )
        }
        3 => {
            // Certificate renewal rewrites the TLS Secret.
            let ns = pick(&mut sim.rng, &sim.cluster.app_namespaces).clone();
            sim.req(
                t,
                actor,
                "update",
                "secrets",
                &ns,
                &format!("{ns}-tls"),
                "",
                "",
            )
        }
        _ => sim.req(
            t,
            actor,
            "get",
            "certificates",
            "ingress-nginx",
            "wildcard-example-com",
            "",
            "",
        ),
    };
    sim.submit(r);
}

fn argocd(sim: &mut Sim, a: &Actors, t: i64) {
    const RES: &[&str] = &[
        "pods",
        "services",
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "configmaps",
        "secrets",
        "ingresses",
        "serviceaccounts",
        "roles",
        "rolebindings",
        "clusterroles",
        "clusterrolebindings",
        "jobs",
        "cronjobs",
        "networkpolicies",
        "horizontalpodautoscalers",
        "poddisruptionbudgets",
        "customresourcedefinitions",
        "persistentvolumeclaims",
        "endpointslices",
        "servicemonitors",
    ];
    let ctrl = a.op("argocd-application-controller");
    match sim.rng.u8(..10) {
        0..=5 => {
            let res = *pick(&mut sim.rng, RES);
            let r = sim.req(t, ctrl, "list", res, "", "", "", "?limit=500");
            sim.submit(r);
        }
        6 => {
            let (q, dur) = watch_query(&mut sim.rng, "");
            let res = *pick(&mut sim.rng, RES);
            let mut r = sim.req(t, ctrl, "watch", res, "", "", "", &q);
            r.latency = dur;
            sim.submit(r);
        }
        7 => {
            // Sync: patch a Deployment back to the desired image.
            let wi = sim.cluster.first_app + sim.rng.usize(..sim.cluster.apps().len());
            let rv = sim.next_rv();
            let w = &sim.cluster.workloads[wi];
            let (ns, name) = (w.ns.clone(), w.name.clone());
            let body = bodies::image_patch(w, &w.image);
            let resp = bodies::deployment(w, &rv, &w.image);
            let mut r = sim.req(
                t,
                ctrl,
                "patch",
                "deployments",
                &ns,
                &name,
                "",
                "?fieldManager=argocd-controller",
            );
            r.request_object = Some(body);
            r.response_object = Some(resp);
            sim.submit(r);
        }
        8 => {
            let server = a.op("argocd-server");
            let name = *pick(
                &mut sim.rng,
                &[
                    "argocd-secret",
                    "argocd-redis",
                    "argocd-initial-admin-secret",
                ],
            );
            let mut r = sim.req(t, server, "get", "secrets", "argocd", name, "", "");
            if name == "argocd-initial-admin-secret" {
                not_found(&mut r);
            }
            sim.submit(r);
        }
        _ => {
            let ns = pick(&mut sim.rng, &sim.cluster.app_namespaces).clone();
            let r = sim.req(t, ctrl, "get", "applications", "argocd", &ns, "", "");
            sim.submit(r);
        }
    }
}

fn prometheus(sim: &mut Sim, a: &Actors, t: i64) {
    let actor = a.op("prometheus-k8s");
    let r = match sim.rng.u8(..5) {
        0 => sim.req(t, actor, "get", "", "", "/metrics", "", ""),
        1 => sim.req(
            t,
            actor,
            "list",
            "nodes",
            "",
            "",
            "",
            "?limit=500&resourceVersion=0",
        ),
        k => {
            let res = ["pods", "endpoints", "services"][k as usize - 2];
            let (q, dur) = watch_query(&mut sim.rng, "");
            let mut r = sim.req(t, actor, "watch", res, "", "", "", &q);
            r.latency = dur;
            r
        }
    };
    sim.submit(r);
}

fn kube_state_metrics(sim: &mut Sim, a: &Actors, t: i64) {
    let actor = a.op("kube-state-metrics");
    let res = *pick(
        &mut sim.rng,
        &[
            "secrets",
            "configmaps",
            "pods",
            "deployments",
            "nodes",
            "leases",
            "certificatesigningrequests",
            "jobs",
        ],
    );
    let (q, dur) = watch_query(&mut sim.rng, "");
    let mut r = if sim.rng.bool() {
        sim.req(
            t,
            actor,
            "list",
            res,
            "",
            "",
            "",
            "?limit=500&resourceVersion=0",
        )
    } else {
        let mut r = sim.req(t, actor, "watch", res, "", "", "", &q);
        r.latency = dur;
        r
    };
    if sim.rng.u32(..300) == 0 {
        // The informer's list timed out under load.
        r.status.code = 504;
        r.status.status = "Failure";
        r.status.reason = "Timeout";
        r.status.message = "Timeout: request did not complete within requested timeout - context deadline exceeded".into();
    }
    sim.submit(r);
}

/// The GitLab Kubernetes executor: creates a build pod in `ci`, attaches to it to stream
/// the job script, then deletes it. Benign exec/attach by a service account.
fn gitlab_runner_job(sim: &mut Sim, a: &Actors, t: i64) {
    let actor = a.op("gitlab-deployer");
    let name = format!(
        "runner-x7hs2kqp-project-4211-concurrent-0-{}",
        suffix(&mut sim.rng, 8)
    );
    let mut c = sim.req(t, actor, "create", "pods", "ci", &name, "", "");
    c.request_object = Some(
        serde_json::json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"generateName": "runner-x7hs2kqp-project-4211-concurrent-0-", "namespace": "ci", "labels": {"pod": "runner-x7hs2kqp-project-4211-concurrent-0"}},
        "spec": {"containers": [{"name": "build", "image": "registry.gitlab.com/example/ci-images/node:20", "command": ["sh", "-c", "if [ -x /usr/local/bin/bash ]; then\n\texec /usr/local/bin/bash \nelif [ -x /bin/bash ]; then\n\texec /bin/bash \nelse\n\texec sh \nfi\n"], "stdin": true}, {"name": "helper", "image": "registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper:x86_64-v17.5.2", "stdin": true}],
                 "restartPolicy": "Never", "serviceAccountName": "default"}}),
    );
    c.annotations.insert(
        "pod-security.kubernetes.io/enforce-policy",
        "baseline:latest".into(),
    );
    sim.submit(c);
    let t2 = t + 5 * SEC;
    let mut x = sim.req(
        t2,
        actor,
        "create",
        "pods",
        "ci",
        &name,
        "attach",
        "?container=build&stdin=true&stderr=true&stdout=true",
    );
    x.status.code = 101;
    x.long_running = true;
    x.latency = 40 * SEC + sim.rng.i64(0..200 * SEC);
    let end = t2 + x.latency;
    sim.submit(x);
    let d = sim.req(end + SEC, actor, "delete", "pods", "ci", &name, "", "");
    sim.submit(d);
}

fn health_probe(sim: &mut Sim, a: &Actors, t: i64) {
    let actor = if sim.rng.bool() {
        &a.probe
    } else {
        &a.lb_probe
    };
    let path = *pick(&mut sim.rng, &["/healthz", "/livez", "/readyz"]);
    let mut r = sim.req(t, actor, "get", "", "", path, "", "");
    r.latency = 200 + sim.rng.i64(0..1500);
    sim.submit(r);
}

fn discovery(sim: &mut Sim, a: &Actors, t: i64) {
    let actor = if sim.rng.bool() {
        pick(&mut sim.rng, &a.humans).clone()
    } else {
        a.op("argocd-application-controller").clone()
    };
    let path = *pick(
        &mut sim.rng,
        &[
            "/api",
            "/apis",
            "/openapi/v3",
            "/apis/apps/v1",
            "/version",
            "/apis/metrics.k8s.io/v1beta1",
        ],
    );
    let mut r = sim.req(t, &actor, "get", "", "", path, "", "?timeout=32s");
    r.annotations.insert(
        "authorization.k8s.io/reason",
        "RBAC: allowed by ClusterRoleBinding \"system:discovery\" of ClusterRole \"system:discovery\" to Group \"system:authenticated\"".into(),
    );
    sim.submit(r);
}

fn cronjob_run(sim: &mut Sim, a: &Actors, t: i64) {
    let ns = sim
        .cluster
        .app_namespaces
        .last()
        .cloned()
        .unwrap_or_default();
    let name = format!(
        "{ns}-nightly-report-{}",
        29_000_000 + sim.rng.u32(..100_000)
    );
    let mut c = sim.req(
        t,
        a.ctrl("cronjob-controller"),
        "create",
        "jobs",
        &ns,
        &name,
        "",
        "",
    );
    let body = serde_json::json!({"kind": "Job", "apiVersion": "batch/v1", "metadata": {"name": name, "namespace": ns,
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": format!("{ns}-nightly-report"), "uid": "0f4e6b2a-9c1d-4e8f-a7b3-5d2c1e0f9a8b", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"backoffLimit": 2, "template": {"spec": {"containers": [{"name": "report", "image": format!("123456789012.dkr.ecr.eu-west-1.amazonaws.com/{ns}/report:2.4.1")}], "restartPolicy": "OnFailure"}}}});
    c.request_object = Some(body.clone());
    c.response_object = Some(body);
    sim.submit(c);
}

fn human(sim: &mut Sim, a: &Actors) -> (usize, String) {
    let h = sim.rng.usize(..a.humans.len());
    let ns = pick(&mut sim.rng, &sim.cluster.humans[h].team_ns).clone();
    (h, ns)
}

fn human_get(sim: &mut Sim, a: &Actors, t: i64) {
    let (h, ns) = human(sim, a);
    let res = *pick(
        &mut sim.rng,
        &[
            "pods",
            "pods",
            "pods",
            "deployments",
            "services",
            "ingresses",
            "jobs",
            "replicasets",
        ],
    );
    let r = sim.req(t, &a.humans[h], "list", res, &ns, "", "", "?limit=500");
    sim.submit(r);
}

fn team_workload(sim: &mut Sim, ns: &str) -> usize {
    let apps: Vec<usize> = (sim.cluster.first_app..sim.cluster.workloads.len())
        .filter(|&i| sim.cluster.workloads[i].ns == ns)
        .collect();
    if apps.is_empty() {
        sim.cluster.first_app
    } else {
        *pick(&mut sim.rng, &apps)
    }
}

fn human_describe(sim: &mut Sim, a: &Actors, t: i64) {
    let (h, ns) = human(sim, a);
    let wi = team_workload(sim, &ns);
    let w = &sim.cluster.workloads[wi];
    let p = &w.pods[0];
    let (ns, pod, uid) = (w.ns.clone(), p.name.clone(), p.uid.clone());
    let g = sim.req(t, &a.humans[h], "get", "pods", &ns, &pod, "", "");
    sim.submit(g);
    let q = format!("?fieldSelector=involvedObject.name%3D{pod}%2CinvolvedObject.namespace%3D{ns}%2CinvolvedObject.uid%3D{uid}&limit=500");
    let l = sim.req(t + 25 * MS, &a.humans[h], "list", "events", &ns, "", "", &q);
    sim.submit(l);
}

fn human_logs(sim: &mut Sim, a: &Actors, t: i64) {
    let (h, ns) = human(sim, a);
    let wi = team_workload(sim, &ns);
    let w = &sim.cluster.workloads[wi];
    let (ns, pod) = (w.ns.clone(), w.pods[0].name.clone());
    let follow = sim.rng.bool();
    let q = if follow {
        "?follow=true&tailLines=100"
    } else {
        "?tailLines=200"
    };
    let mut r = sim.req(t, &a.humans[h], "get", "pods", &ns, &pod, "log", q);
    if follow {
        r.long_running = true;
        r.latency = 10 * SEC + sim.rng.i64(0..300 * SEC);
    }
    sim.submit(r);
}

fn human_apply(sim: &mut Sim, a: &Actors, t: i64) {
    let (h, ns) = human(sim, a);
    let wi = team_workload(sim, &ns);
    let rv = sim.next_rv();
    let w = &sim.cluster.workloads[wi];
    let (ns, name) = (w.ns.clone(), w.name.clone());
    let new_image = format!("{}-rc{}", w.image, sim.rng.u8(..9));
    let patch = bodies::image_patch(w, &new_image);
    let resp = bodies::deployment(w, &rv, &new_image);
    let g = sim.req(t, &a.humans[h], "get", "deployments", &ns, &name, "", "");
    sim.submit(g);
    let mut p = sim.req(
        t + 40 * MS,
        &a.humans[h],
        "patch",
        "deployments",
        &ns,
        &name,
        "",
        "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
    );
    p.request_object = Some(patch);
    p.response_object = Some(resp);
    sim.submit(p);
}

fn human_restart(sim: &mut Sim, a: &Actors, t: i64) {
    let (h, ns) = human(sim, a);
    let wi = team_workload(sim, &ns);
    let rv = sim.next_rv();
    let w = &sim.cluster.workloads[wi];
    let (ns, name) = (w.ns.clone(), w.name.clone());
    let resp = bodies::deployment(w, &rv, &w.image);
    let mut p = sim.req(
        t,
        &a.humans[h],
        "patch",
        "deployments",
        &ns,
        &name,
        "",
        "?fieldManager=kubectl-rollout",
    );
    p.request_object = Some(bodies::restart_patch(t));
    p.response_object = Some(resp);
    sim.submit(p);
}

fn human_misc(sim: &mut Sim, a: &Actors, t: i64) {
    let (h, ns) = human(sim, a);
    let wi = team_workload(sim, &ns);
    let w = &sim.cluster.workloads[wi];
    let (ns, cm, sec) = (w.ns.clone(), w.configmaps[1].clone(), w.secrets[0].clone());
    let r = match sim.rng.u8(..5) {
        0 => sim.req(t, &a.humans[h], "get", "configmaps", &ns, &cm, "", ""),
        1 => sim.req(t, &a.humans[h], "get", "secrets", &ns, &sec, "", ""),
        2 => {
            let mut r = sim.req(t, &a.humans[h], "list", "pods", &ns, "", "", "");
            r.uri = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods");
            if let Some(o) = r.object_ref.as_mut() {
                o.api_group = "metrics.k8s.io";
                o.api_version = "v1beta1";
            }
            r
        }
        3 => sim.req(
            t,
            &a.humans[h],
            "get",
            "deployments",
            &ns,
            &w.name.clone(),
            "scale",
            "",
        ),
        _ => {
            if sim.cluster.humans[h].admin {
                let group = format!("team-{ns}");
                let body = bodies::team_rolebinding(&ns, &group);
                let mut r = sim.req(
                    t,
                    &a.humans[h],
                    "patch",
                    "rolebindings",
                    &ns,
                    &format!("{group}-edit"),
                    "",
                    "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
                );
                r.request_object = Some(body.clone());
                r.response_object = Some(body);
                r
            } else {
                sim.req(
                    t,
                    &a.humans[h],
                    "list",
                    "configmaps",
                    &ns,
                    "",
                    "",
                    "?limit=500",
                )
            }
        }
    };
    sim.submit(r);
}

/// People try things they may not do: the usual source of benign 403s.
fn human_forbidden(sim: &mut Sim, a: &Actors, t: i64) {
    // A person hits a 403 a few times a day, not every few minutes: most draws of this
    // table entry become an ordinary read.
    if sim.rng.u8(..10) != 0 {
        return human_get(sim, a, t);
    }
    let h = 2 + sim.rng.usize(..a.humans.len().saturating_sub(2).max(1));
    let h = h.min(a.humans.len() - 1);
    let mut r = match sim.rng.u8(..4) {
        0 => sim.req(t, &a.humans[h], "list", "nodes", "", "", "", "?limit=500"),
        1 => sim.req(
            t,
            &a.humans[h],
            "list",
            "pods",
            "kube-system",
            "",
            "",
            "?limit=500",
        ),
        2 => sim.req(
            t,
            &a.humans[h],
            "list",
            "namespaces",
            "",
            "",
            "",
            "?limit=500",
        ),
        _ => {
            let ns = pick(&mut sim.rng, &sim.cluster.app_namespaces).clone();
            sim.req(
                t,
                &a.humans[h],
                "list",
                "deployments",
                &ns,
                "",
                "",
                "?limit=500",
            )
        }
    };
    if !sim.cluster.humans[h].admin {
        forbid(&mut r);
    }
    sim.submit(r);
}

/// Exec and port-forward into a team's own pods (debugging), both long-running.
fn human_interactive(sim: &mut Sim, a: &Actors, t: i64) {
    let (h, ns) = human(sim, a);
    let wi = team_workload(sim, &ns);
    let w = &sim.cluster.workloads[wi];
    let (ns, pod, c) = (
        w.ns.clone(),
        w.pods[0].name.clone(),
        w.name.rsplit('-').next().unwrap_or("app").to_string(),
    );
    let mut r = if sim.rng.bool() {
        let cmd = *pick(
            &mut sim.rng,
            &[
                "env",
                "ls&command=-la&command=%2Fetc%2Fapp",
                "cat&command=%2Fetc%2Fapp%2Fconfig.yaml",
                "date",
            ],
        );
        let q = format!("?command={cmd}&container={c}&stderr=true&stdout=true");
        let mut r = sim.req(t, &a.humans[h], "get", "pods", &ns, &pod, "exec", &q);
        r.status.code = 101;
        r.latency = SEC + sim.rng.i64(0..5 * SEC);
        r
    } else {
        let mut r = sim.req(
            t,
            &a.humans[h],
            "get",
            "pods",
            &ns,
            &pod,
            "portforward",
            "?ports=8080",
        );
        r.status.code = 101;
        r.latency = 30 * SEC + sim.rng.i64(0..600 * SEC);
        r
    };
    r.long_running = true;
    sim.submit(r);
}

/// The CI bot bumps an image and polls the rollout.
fn ci_deploy(sim: &mut Sim, a: &Actors, t: i64) {
    let actor = a.op("gitlab-deployer").clone();
    let wi = sim.cluster.first_app + sim.rng.usize(..sim.cluster.apps().len());
    let rv = sim.next_rv();
    let w = &sim.cluster.workloads[wi];
    let (ns, name) = (w.ns.clone(), w.name.clone());
    let image = format!(
        "{}:{}",
        w.image.split(':').next().unwrap_or(""),
        &uuid(&mut sim.rng)[..8]
    );
    let w = &sim.cluster.workloads[wi];
    let patch = bodies::image_patch(w, &image);
    let resp = bodies::deployment(w, &rv, &image);
    let mut p = sim.req(t, &actor, "patch", "deployments", &ns, &name, "", "");
    p.request_object = Some(patch);
    p.response_object = Some(resp);
    sim.submit(p);
    for k in 1..=3 {
        let g = sim.req(
            t + k * 2 * SEC,
            &actor,
            "get",
            "deployments",
            &ns,
            &name,
            "",
            "",
        );
        sim.submit(g);
    }
}
