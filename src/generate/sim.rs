//! The simulation core: requests, the audit policy, stage scheduling and output.
//!
//! One simulated API request ([`Req`]) becomes up to three log lines: `RequestReceived`
//! when it arrives (no status, bodies or authorization annotations yet: the audit filter
//! runs before authorization and before the body is decoded), `ResponseStarted` for
//! long-running requests (watch, exec), and `ResponseComplete` after its latency. All
//! stages go through one time-ordered heap so the log is ordered by `stageTimestamp`, as
//! a real log is, and the pair of one request is interleaved with other traffic.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::{self, Write};
use std::rc::Rc;

use fastrand::Rng;
use serde_json::Value;

use super::cluster::{uuid, Cluster};
use super::render::{to_go_json, Details, EventOut, Identity, ObjRef, Status, TimeFmt};
use super::GenStats;

/// Microseconds per second.
pub(crate) const SEC: i64 = 1_000_000;
/// Microseconds per millisecond.
pub(crate) const MS: i64 = 1_000;

/// Who sends a request: identity, source address, user agent and the RBAC reason the
/// authorizer would give for its allowed requests.
#[derive(Debug, Clone)]
pub(crate) struct Actor {
    pub id: Rc<Identity>,
    pub ip: String,
    pub ua: Rc<str>,
    pub reason: Rc<str>,
}

/// One simulated API request.
#[derive(Debug)]
pub(crate) struct Req {
    pub audit_id: String,
    pub uri: String,
    pub verb: &'static str,
    pub user: Rc<Identity>,
    pub impersonated: Option<Identity>,
    pub source_ips: Vec<String>,
    pub ua: Rc<str>,
    pub object_ref: Option<ObjRef>,
    pub status: Status,
    pub request_object: Option<Value>,
    pub response_object: Option<Value>,
    pub annotations: BTreeMap<&'static str, String>,
    pub received: i64,
    pub latency: i64,
    /// Long-running (watch, exec, attach, port-forward, log follow): has ResponseStarted.
    pub long_running: bool,
    /// Part of an injected scenario: always written, even after the event limit.
    pub scenario: bool,
    /// Level chosen by the policy (set by [`Sim::submit`]).
    pub level: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StageKind {
    Received,
    Started,
    Complete,
}

struct Pending {
    t: i64,
    seq: u64,
    stage: StageKind,
    req: Rc<Req>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.t == o.t && self.seq == o.seq
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest stage first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.t, o.seq).cmp(&(self.t, self.seq))
    }
}

/// `(apiGroup, apiVersion, Kind)` of a resource the simulation uses.
pub(crate) fn res_info(resource: &str) -> (&'static str, &'static str, &'static str) {
    match resource {
        "pods" => ("", "v1", "Pod"),
        "secrets" => ("", "v1", "Secret"),
        "configmaps" => ("", "v1", "ConfigMap"),
        "services" => ("", "v1", "Service"),
        "endpoints" => ("", "v1", "Endpoints"),
        "nodes" => ("", "v1", "Node"),
        "namespaces" => ("", "v1", "Namespace"),
        "serviceaccounts" => ("", "v1", "ServiceAccount"),
        "events" => ("", "v1", "Event"),
        "persistentvolumeclaims" => ("", "v1", "PersistentVolumeClaim"),
        "leases" => ("coordination.k8s.io", "v1", "Lease"),
        "deployments" => ("apps", "v1", "Deployment"),
        "replicasets" => ("apps", "v1", "ReplicaSet"),
        "daemonsets" => ("apps", "v1", "DaemonSet"),
        "statefulsets" => ("apps", "v1", "StatefulSet"),
        "jobs" => ("batch", "v1", "Job"),
        "cronjobs" => ("batch", "v1", "CronJob"),
        "endpointslices" => ("discovery.k8s.io", "v1", "EndpointSlice"),
        "ingresses" => ("networking.k8s.io", "v1", "Ingress"),
        "networkpolicies" => ("networking.k8s.io", "v1", "NetworkPolicy"),
        "roles" => ("rbac.authorization.k8s.io", "v1", "Role"),
        "rolebindings" => ("rbac.authorization.k8s.io", "v1", "RoleBinding"),
        "clusterroles" => ("rbac.authorization.k8s.io", "v1", "ClusterRole"),
        "clusterrolebindings" => ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"),
        "certificatesigningrequests" => ("certificates.k8s.io", "v1", "CertificateSigningRequest"),
        "mutatingwebhookconfigurations" => (
            "admissionregistration.k8s.io",
            "v1",
            "MutatingWebhookConfiguration",
        ),
        "validatingwebhookconfigurations" => (
            "admissionregistration.k8s.io",
            "v1",
            "ValidatingWebhookConfiguration",
        ),
        "selfsubjectrulesreviews" => ("authorization.k8s.io", "v1", "SelfSubjectRulesReview"),
        "selfsubjectaccessreviews" => ("authorization.k8s.io", "v1", "SelfSubjectAccessReview"),
        "subjectaccessreviews" => ("authorization.k8s.io", "v1", "SubjectAccessReview"),
        "tokenreviews" => ("authentication.k8s.io", "v1", "TokenReview"),
        "certificates" => ("cert-manager.io", "v1", "Certificate"),
        "applications" => ("argoproj.io", "v1alpha1", "Application"),
        "horizontalpodautoscalers" => ("autoscaling", "v2", "HorizontalPodAutoscaler"),
        "poddisruptionbudgets" => ("policy", "v1", "PodDisruptionBudget"),
        "customresourcedefinitions" => ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "servicemonitors" => ("monitoring.coreos.com", "v1", "ServiceMonitor"),
        _ => ("", "v1", "Unknown"),
    }
}

/// The API path of a resource request (no query string).
pub(crate) fn api_path(resource: &str, ns: &str, name: &str, sub: &str) -> String {
    let (group, version, _) = res_info(resource);
    let mut p = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    if !ns.is_empty() {
        p.push_str("/namespaces/");
        p.push_str(ns);
    }
    p.push('/');
    p.push_str(resource);
    if !name.is_empty() {
        p.push('/');
        p.push_str(name);
    }
    if !sub.is_empty() {
        p.push('/');
        p.push_str(sub);
    }
    p
}

/// The watch query client-go's reflector sends: a random 5–10 minute timeout.
pub(crate) fn watch_query(rng: &mut Rng, extra: &str) -> (String, i64) {
    let secs = 300 + rng.i64(0..300);
    let rv = 40_000_000 + rng.u64(..9_000_000);
    let q = format!(
        "?allowWatchBookmarks=true{extra}&resourceVersion={rv}&timeout={}m{}s&timeoutSeconds={secs}&watch=true",
        secs / 60,
        secs % 60
    );
    (q, secs * SEC)
}

/// Output state shared by all activities.
pub(crate) struct Sim {
    pub rng: Rng,
    pub cluster: Cluster,
    heap: BinaryHeap<Pending>,
    /// Stages scheduled so far (also the tie-breaker that keeps equal times in order).
    seq: u64,
    times: TimeFmt,
    line: Vec<u8>,
    buf: Vec<u8>,
    pub stats: GenStats,
    /// Resource version counter, so objects look like they change over time.
    pub rv: u64,
    /// When set, submitted requests are marked as scenario requests.
    pub in_scenario: bool,
}

impl Sim {
    /// A simulation over `cluster`.
    pub fn new(rng: Rng, cluster: Cluster) -> Sim {
        Sim {
            rng,
            cluster,
            heap: BinaryHeap::new(),
            seq: 0,
            times: TimeFmt::default(),
            line: Vec::with_capacity(16 * 1024),
            buf: Vec::with_capacity(256 * 1024),
            stats: GenStats::default(),
            rv: 48_211_904,
            in_scenario: false,
        }
    }

    /// A fresh resource version.
    pub fn next_rv(&mut self) -> String {
        self.rv += 1 + self.rng.u64(..40);
        self.rv.to_string()
    }

    /// A request from `actor`: a resource request when `resource` is set, else a
    /// non-resource request to `path`. Status and latency get sensible defaults for the
    /// verb; callers adjust them afterwards.
    #[allow(clippy::too_many_arguments)]
    pub fn req(
        &mut self,
        t: i64,
        actor: &Actor,
        verb: &'static str,
        resource: &str,
        ns: &str,
        name: &str,
        sub: &'static str,
        query: &str,
    ) -> Req {
        let (object_ref, uri) = if resource.is_empty() {
            (None, format!("{name}{query}"))
        } else {
            let (group, version, _) = res_info(resource);
            let oref = ObjRef {
                resource: resource.to_string(),
                namespace: ns.to_string(),
                name: name.to_string(),
                api_group: group,
                api_version: version,
                subresource: sub,
                ..ObjRef::default()
            };
            let path_name = if matches!(verb, "create") && sub.is_empty() {
                ""
            } else {
                name
            };
            (
                Some(oref),
                format!("{}{query}", api_path(resource, ns, path_name, sub)),
            )
        };
        let rng = &mut self.rng;
        let latency = match verb {
            "get" => 800 + rng.i64(0..9 * MS),
            "list" => 3 * MS + rng.i64(0..40 * MS),
            "watch" => 300 * SEC,
            "delete" | "deletecollection" => 5 * MS + rng.i64(0..30 * MS),
            _ => 3 * MS + rng.i64(0..25 * MS),
        };
        let code = if verb == "create" && sub.is_empty() && !resource.is_empty() {
            201
        } else {
            200
        };
        let mut annotations = BTreeMap::new();
        annotations.insert("authorization.k8s.io/decision", "allow".to_string());
        annotations.insert("authorization.k8s.io/reason", actor.reason.to_string());
        Req {
            audit_id: uuid(rng),
            uri,
            verb,
            user: actor.id.clone(),
            impersonated: None,
            source_ips: vec![actor.ip.clone()],
            ua: actor.ua.clone(),
            object_ref,
            status: Status::ok(code),
            request_object: None,
            response_object: None,
            annotations,
            received: t,
            latency,
            long_running: verb == "watch",
            scenario: false,
            level: "Metadata",
        }
    }

    /// Schedules all stages of `r`, applying the simulated audit policy.
    pub fn submit(&mut self, mut r: Req) {
        r.level = policy_level(&r);
        match r.level {
            "Metadata" => {
                r.request_object = None;
                r.response_object = None;
            }
            "Request" => r.response_object = None,
            _ => {}
        }
        if r.status.code >= 400 {
            r.response_object = None;
        }
        r.scenario |= self.in_scenario;
        let t0 = r.received;
        let started = r.long_running;
        let done = t0 + r.latency.max(1);
        let req = Rc::new(r);
        self.push(t0, StageKind::Received, &req);
        if started {
            let ts = t0 + 1 + self.rng.i64(0..3 * MS);
            self.push(ts, StageKind::Started, &req);
        }
        self.push(done, StageKind::Complete, &req);
    }

    /// Schedules only the ResponseStarted stage of `r` (failed authentication).
    pub(crate) fn push_only_started(&mut self, r: Req) {
        let t = r.received + r.latency.max(1);
        let req = Rc::new(r);
        self.push(t, StageKind::Started, &req);
    }

    fn push(&mut self, t: i64, stage: StageKind, req: &Rc<Req>) {
        self.seq += 1;
        self.heap.push(Pending {
            t,
            seq: self.seq,
            stage,
            req: req.clone(),
        });
    }

    /// Number of stages scheduled so far.
    pub fn scheduled(&self) -> u64 {
        self.seq
    }

    /// Time of the earliest scheduled stage.
    pub fn next_time(&self) -> Option<i64> {
        self.heap.peek().map(|p| p.t)
    }

    /// Writes the earliest scheduled stage. Returns false when nothing is scheduled.
    pub fn write_next(&mut self, out: &mut dyn Write) -> io::Result<bool> {
        let Some(p) = self.heap.pop() else {
            return Ok(false);
        };
        self.write(&p, out)?;
        Ok(true)
    }

    /// Writes the scheduled stages of scenario requests and drops the rest (requests
    /// still in flight when the log ends, as in a log cut at some instant).
    pub fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        while let Some(p) = self.heap.pop() {
            if p.req.scenario {
                self.write(&p, out)?;
            }
        }
        self.flush(out)
    }

    /// Flushes buffered lines to `out`.
    pub fn flush(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if !self.buf.is_empty() {
            out.write_all(&self.buf)?;
            self.buf.clear();
        }
        out.flush()
    }

    fn write(&mut self, p: &Pending, out: &mut dyn Write) -> io::Result<()> {
        let r = &p.req;
        let received = self.times.format(r.received);
        let stage_ts = if p.t == r.received {
            received.clone()
        } else {
            self.times.format(p.t)
        };
        let (stage, full, after_authz) = match p.stage {
            StageKind::Received => ("RequestReceived", false, false),
            StageKind::Started => ("ResponseStarted", false, true),
            StageKind::Complete => ("ResponseComplete", true, true),
        };
        // At RequestReceived the body is not decoded yet, so a create's objectRef has no
        // name (the API server fills it in from the object later).
        let unnamed;
        let object_ref = match &r.object_ref {
            Some(o)
                if p.stage == StageKind::Received
                    && r.verb == "create"
                    && o.subresource.is_empty()
                    && !o.name.is_empty() =>
            {
                unnamed = ObjRef {
                    name: String::new(),
                    ..o.clone()
                };
                Some(&unnamed)
            }
            o => o.as_ref(),
        };
        let ev = EventOut {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: r.level,
            audit_id: &r.audit_id,
            stage,
            request_uri: &r.uri,
            verb: r.verb,
            user: &r.user,
            impersonated_user: r.impersonated.as_ref(),
            source_ips: &r.source_ips,
            user_agent: &r.ua,
            object_ref,
            response_status: after_authz.then_some(&r.status),
            request_object: if full {
                r.request_object.as_ref()
            } else {
                None
            },
            response_object: if full {
                r.response_object.as_ref()
            } else {
                None
            },
            request_received_timestamp: &received,
            stage_timestamp: &stage_ts,
            annotations: (after_authz && !r.annotations.is_empty()).then_some(&r.annotations),
        };
        self.line.clear();
        to_go_json(&ev, &mut self.line).map_err(io::Error::other)?;
        self.line.push(b'\n');
        self.buf.extend_from_slice(&self.line);
        let s = &mut self.stats;
        s.events += 1;
        s.bytes += self.line.len() as u64;
        match p.stage {
            StageKind::Received => s.request_received += 1,
            StageKind::Started => s.response_started += 1,
            StageKind::Complete => s.response_complete += 1,
        }
        if r.scenario {
            s.scenario_events += 1;
        }
        if s.first_micros.is_none() {
            s.first_micros = Some(p.t);
        }
        s.last_micros = Some(p.t);
        if self.buf.len() >= 192 * 1024 {
            out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// The simulated cluster's audit policy (close to the common GKE/kOps policies, with
/// RequestReceived kept): Secrets, token and review requests and all reads at Metadata
/// (no bodies, so no secret material is ever logged); status subresources, Events and
/// ConfigMap writes at Request; other writes at RequestResponse.
fn policy_level(r: &Req) -> &'static str {
    let Some(o) = &r.object_ref else {
        return "Metadata";
    };
    let write = matches!(
        r.verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    );
    if !write {
        return "Metadata";
    }
    match (o.resource.as_str(), o.subresource) {
        ("secrets", _) | ("tokenreviews", _) | ("subjectaccessreviews", _) => "Metadata",
        (_, "token") | (_, "exec") | (_, "attach") | (_, "portforward") | (_, "proxy") => {
            "Metadata"
        }
        ("configmaps", _) | ("events", _) | (_, "status") => "Request",
        _ => "RequestResponse",
    }
}

/// Turns `r` into a 403 as the RBAC authorizer reports it.
pub(crate) fn forbid(r: &mut Req) {
    let (resource, ns, name, sub, group) = match &r.object_ref {
        Some(o) => (
            o.resource.clone(),
            o.namespace.clone(),
            o.name.clone(),
            o.subresource,
            o.api_group,
        ),
        None => (String::new(), String::new(), String::new(), "", ""),
    };
    let user = r.user.username.clone();
    let message = if resource.is_empty() {
        format!(
            "forbidden: User \"{user}\" cannot {} path \"{}\"",
            r.verb, r.uri
        )
    } else {
        let gr = if group.is_empty() {
            resource.clone()
        } else {
            format!("{resource}.{group}")
        };
        let full = if sub.is_empty() {
            resource.clone()
        } else {
            format!("{resource}/{sub}")
        };
        let subject = if name.is_empty() || r.verb == "create" && sub.is_empty() {
            gr
        } else {
            format!("{gr} \"{name}\"")
        };
        let scope = if ns.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{ns}\"")
        };
        format!(
            "{subject} is forbidden: User \"{user}\" cannot {} resource \"{full}\" in API group \"{group}\" {scope}",
            r.verb
        )
    };
    r.status = Status {
        status: "Failure",
        message,
        reason: "Forbidden",
        details: Some(Details {
            name: if r.verb == "create" {
                String::new()
            } else {
                name
            },
            group,
            kind: resource,
        }),
        code: 403,
        ..Status::default()
    };
    r.annotations
        .insert("authorization.k8s.io/decision", "forbid".into());
    r.annotations
        .insert("authorization.k8s.io/reason", String::new());
    r.request_object = None;
    r.response_object = None;
    r.long_running = false;
    r.latency = 300 + r.latency % (2 * MS);
}

/// Turns `r` into a 404 for the object it names.
pub(crate) fn not_found(r: &mut Req) {
    let (resource, name, group) = match &r.object_ref {
        Some(o) => (o.resource.clone(), o.name.clone(), o.api_group),
        None => (String::new(), String::new(), ""),
    };
    let gr = if group.is_empty() {
        resource.clone()
    } else {
        format!("{resource}.{group}")
    };
    r.status = Status {
        status: "Failure",
        message: format!("{gr} \"{name}\" not found"),
        reason: "NotFound",
        details: Some(Details {
            name,
            group,
            kind: resource,
        }),
        code: 404,
        ..Status::default()
    };
    r.response_object = None;
}

/// Turns `r` into a 409 optimistic-concurrency conflict.
pub(crate) fn conflict(r: &mut Req) {
    let (resource, name, group) = match &r.object_ref {
        Some(o) => (o.resource.clone(), o.name.clone(), o.api_group),
        None => (String::new(), String::new(), ""),
    };
    let gr = if group.is_empty() {
        resource.clone()
    } else {
        format!("{resource}.{group}")
    };
    r.status = Status {
        status: "Failure",
        message: format!("Operation cannot be fulfilled on {gr} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
        reason: "Conflict",
        details: Some(Details {
            name,
            group,
            kind: resource,
        }),
        code: 409,
        ..Status::default()
    };
    r.response_object = None;
}
