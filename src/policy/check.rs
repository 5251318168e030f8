//! Coverage check: for every detection, which of the requests it needs does the policy log,
//! at a level that carries the fields it reads, at a stage it looks at?
//!
//! A detection's [`Requirements`] constrain some dimensions (verbs, resources, groups,
//! namespaces) and leave the rest open. The check enumerates probe requests: the constrained
//! values as given, and for an open dimension every value the policy itself singles out plus
//! one "any other" value, so that each policy rule that could carve out a blind spot is hit
//! and the catch-all is hit too. Each probe is evaluated for every principal the policy names
//! (each `users` entry, each `userGroups` entry) and for "everyone else". The real matching
//! code ([`Policy::evaluate`]) decides each probe; nothing here re-implements it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::model::{Level, Stage};
use crate::rules::{BodyNeed, Requirements, RuleSet};

use super::eval::{Request, Target};
use super::schema::{stage_names, AuditLevel, Policy};

/// Placeholder values for "anything the policy does not name". They cannot collide with
/// real names (angle brackets are not valid in Kubernetes names).
const OTHER_NS: &str = "<other-namespace>";
const OTHER_RESOURCE: &str = "<other-resource>";
const OTHER_GROUP: &str = "<other-group>";
const OTHER_NAME: &str = "<other-name>";
const OTHER_PATH: &str = "/<other-path>";
const OTHER_USER: &str = "<any-user>";
const EVERYONE: &str = "everyone";

/// Verbs probed when a rule does not constrain them.
const RESOURCE_VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
/// Verbs of non-resource requests (lower-cased HTTP methods).
const NON_RESOURCE_VERBS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
/// Verbs whose request carries a body (`requestObject`); a rule reading the request body
/// loses nothing on a `get` logged at Metadata, because that request has no body.
const BODY_VERBS: [&str; 4] = ["create", "update", "patch", "deletecollection"];

/// Coverage verdict for one detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every request the rule needs is logged with what it reads.
    Covered,
    /// Some requests are not (see the blind spots).
    Partial,
    /// For everyone not singled out by the policy, nothing the rule needs is logged usably.
    Blind,
}

impl Verdict {
    /// Display name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Covered => "covered",
            Verdict::Partial => "partly covered",
            Verdict::Blind => "blind",
        }
    }
}

/// Why a probe request is not usable by the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gap {
    /// The policy logs nothing (level None).
    NotLogged,
    /// Logged, but without the body the rule reads.
    NoBody,
    /// Logged, but only at stages the rule does not look at.
    StageOmitted,
}

impl Gap {
    fn describe(self) -> &'static str {
        match self {
            Gap::NotLogged => "not logged",
            Gap::NoBody => "logged without the body the rule reads",
            Gap::StageOmitted => "only logged at stages the rule ignores",
        }
    }
}

/// A set of requests one principal loses for one reason (grouped for the report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlindSpot {
    /// `everyone`, `user NAME` or `group NAME`.
    pub principal: String,
    /// Why.
    pub gap: Gap,
    /// Level the policy gives these requests.
    pub level: AuditLevel,
    /// 1-based index of the policy rule that decides (None = no rule matched).
    pub policy_rule: Option<usize>,
    /// Verbs affected.
    pub verbs: Vec<String>,
    /// Resources affected (`group/resource[/sub]`, core group as `resource`), or URL paths.
    pub resources: Vec<String>,
    /// Namespaces affected (`""` = cluster-scoped).
    pub namespaces: Vec<String>,
    /// For [`Gap::StageOmitted`]: the stages the policy omits.
    pub omitted_stages: Vec<String>,
}

/// Coverage of one detection.
#[derive(Debug, Clone, Serialize)]
pub struct RuleCoverage {
    /// Rule id.
    pub id: String,
    /// Rule title.
    pub title: String,
    /// Rule level.
    pub level: Level,
    /// Verdict.
    pub verdict: Verdict,
    /// Minimum audit level the rule needs for the requests that carry what it reads.
    pub needs: AuditLevel,
    /// What is lost, grouped.
    pub blind_spots: Vec<BlindSpot>,
}

/// The result of checking a policy against a rule set.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// One entry per detection, in rule-set order.
    pub rules: Vec<RuleCoverage>,
    /// Policy decode warnings (unknown fields).
    pub warnings: Vec<String>,
}

impl CheckReport {
    /// Number of rules with `verdict`.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.rules.iter().filter(|r| r.verdict == verdict).count()
    }

    /// Blind rules whose level is `level` or higher (for `--fail-on-blind`).
    pub fn blind_at_or_above(&self, level: Level) -> Vec<&RuleCoverage> {
        self.rules
            .iter()
            .filter(|r| r.verdict == Verdict::Blind && r.level >= level)
            .collect()
    }

    /// Coverage of the rule with `id`.
    pub fn get(&self, id: &str) -> Option<&RuleCoverage> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// A human-readable report: a summary, a table, then the blind spots of each rule that
    /// is not covered (worst first).
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let _ = writeln!(
            out,
            "{} rules: {} covered, {} partly covered, {} blind\n",
            self.rules.len(),
            self.count(Verdict::Covered),
            self.count(Verdict::Partial),
            self.count(Verdict::Blind)
        );
        let mut rows: Vec<&RuleCoverage> = self.rules.iter().collect();
        // Worst first: blind before partial before covered, then by severity.
        rows.sort_by(|a, b| {
            b.verdict
                .cmp(&a.verdict)
                .then(b.level.cmp(&a.level))
                .then(a.title.cmp(&b.title))
        });
        let _ = writeln!(
            out,
            "{:<15} {:<8} {:<15} {:<36} TITLE",
            "VERDICT", "LEVEL", "NEEDS", "ID"
        );
        for r in &rows {
            let _ = writeln!(
                out,
                "{:<15} {:<8} {:<15} {:<36} {}",
                r.verdict.as_str(),
                r.level.as_str(),
                r.needs.as_str(),
                r.id,
                r.title
            );
        }
        for r in rows.iter().filter(|r| r.verdict != Verdict::Covered) {
            let _ = writeln!(
                out,
                "\n{} [{}] {}",
                r.verdict.as_str(),
                r.level.as_str(),
                r.title
            );
            for b in &r.blind_spots {
                let rule = b.policy_rule.map_or("no rule matches".to_string(), |i| {
                    format!("policy rule {i}")
                });
                let gap = if b.omitted_stages.is_empty() {
                    b.gap.describe().to_string()
                } else {
                    format!(
                        "{} (omits {})",
                        b.gap.describe(),
                        b.omitted_stages.join(",")
                    )
                };
                let _ = writeln!(
                    out,
                    "  - {}: {} (level {}, {}): verbs {}; resources {}{}",
                    b.principal,
                    gap,
                    b.level.as_str(),
                    rule,
                    b.verbs.join(","),
                    b.resources.join(","),
                    if b.namespaces.iter().all(|n| n == OTHER_NS) {
                        String::new()
                    } else {
                        let ns: Vec<&str> = b
                            .namespaces
                            .iter()
                            .map(|n| if n.is_empty() { "(cluster-scoped)" } else { n })
                            .collect();
                        format!("; namespaces {}", ns.join(","))
                    }
                );
            }
        }
        out
    }

    /// The report as JSON (stable field names: see [`RuleCoverage`], [`BlindSpot`]).
    pub fn render_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// One principal: a username and its groups, with a label for the report.
struct Principal {
    label: String,
    user: String,
    groups: Vec<String>,
}

/// Values the policy singles out, per dimension; the enumeration domain for open dimensions.
struct Domain {
    principals: Vec<Principal>,
    namespaces: BTreeSet<String>,
    /// (group, resource-with-optional-subresource) pairs named by the policy.
    group_resources: BTreeSet<(String, String)>,
    verbs: BTreeSet<String>,
    paths: BTreeSet<String>,
    /// (group, resource, name) for resourceNames carve-outs.
    names: BTreeSet<(String, String, String)>,
}

impl Domain {
    fn of(policy: &Policy) -> Domain {
        let mut principals = vec![Principal {
            label: EVERYONE.into(),
            user: OTHER_USER.into(),
            groups: vec!["system:authenticated".into()],
        }];
        let mut users = BTreeSet::new();
        let mut groups = BTreeSet::new();
        let mut d = Domain {
            principals: Vec::new(),
            namespaces: BTreeSet::new(),
            group_resources: BTreeSet::new(),
            verbs: BTreeSet::new(),
            paths: BTreeSet::new(),
            names: BTreeSet::new(),
        };
        for r in &policy.rules {
            users.extend(r.users.iter().cloned());
            groups.extend(r.user_groups.iter().cloned());
            d.namespaces.extend(r.namespaces.iter().cloned());
            d.verbs.extend(r.verbs.iter().cloned());
            for u in &r.non_resource_urls {
                // A path the pattern matches: the prefix itself (with a suffix when the prefix
                // ends in '/', so that "/apis/*" yields "/apis/x").
                let p = u.trim_end_matches('*');
                let p = if p.is_empty() || p.ends_with('/') {
                    format!("{p}x")
                } else {
                    p.to_string()
                };
                d.paths.insert(p);
            }
            for gr in &r.resources {
                for res in &gr.resources {
                    d.group_resources.insert((gr.group.clone(), res.clone()));
                    for n in &gr.resource_names {
                        d.names.insert((gr.group.clone(), res.clone(), n.clone()));
                    }
                }
            }
        }
        // Anonymous requests are their own population: rules scoped to system:authenticated
        // never match them, and several detections are about exactly them.
        users.insert("system:anonymous".to_string());
        for u in users {
            // The API server puts the anonymous user in system:unauthenticated only.
            let g = if u == "system:anonymous" {
                "system:unauthenticated"
            } else {
                "system:authenticated"
            };
            principals.push(Principal {
                label: format!("user {u}"),
                groups: vec![g.into()],
                user: u,
            });
        }
        for g in groups.into_iter().filter(|g| g != "system:authenticated") {
            principals.push(Principal {
                label: format!("group {g}"),
                user: OTHER_USER.into(),
                groups: vec![g],
            });
        }
        d.principals = principals;
        d
    }
}

/// A probe before principals are applied.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Probe {
    verb: String,
    target: Target,
}

/// Checks `policy` against every rule in `rules`.
pub fn check(policy: &Policy, rules: &RuleSet) -> CheckReport {
    let domain = Domain::of(policy);
    let out = rules
        .rules()
        .iter()
        .map(|r| {
            check_requirements(
                policy,
                &domain,
                &r.meta.id,
                &r.meta.title,
                r.meta.level,
                &r.requirements(),
            )
        })
        .collect();
    CheckReport {
        rules: out,
        warnings: policy.warnings.clone(),
    }
}

/// The minimum level for a verb given what the rule reads.
fn needed_level(body: BodyNeed, verb: &str, non_resource: bool) -> AuditLevel {
    match body {
        // Non-resource requests never carry bodies, so asking for more than Metadata there
        // would flag a loss that cannot happen.
        _ if non_resource => AuditLevel::Metadata,
        BodyNeed::None => AuditLevel::Metadata,
        BodyNeed::Request if BODY_VERBS.contains(&verb) => AuditLevel::Request,
        // Connect-style subresources (exec, attach, portforward) come as create; other
        // verbs carry no request body.
        BodyNeed::Request => AuditLevel::Metadata,
        BodyNeed::Response => AuditLevel::RequestResponse,
    }
}

fn check_requirements(
    policy: &Policy,
    d: &Domain,
    id: &str,
    title: &str,
    level: Level,
    req: &Requirements,
) -> RuleCoverage {
    let probes = probes(d, req);
    // Stages the rule can see on a real API server ("Unknown" only exists in normalised
    // samples); a rule that only wants Unknown is not a policy problem.
    let real_stages = req.stages & !Stage::Unknown.bit();
    let mut needs = AuditLevel::Metadata;
    // (principal, gap, level, rule) -> (verbs, resources, namespaces)
    type Acc = (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>);
    type Key = (usize, Gap, AuditLevel, Option<usize>, u8);
    let mut gaps: BTreeMap<Key, Acc> = BTreeMap::new();
    let mut everyone_ok = 0usize;
    for p in &probes {
        let non_resource = matches!(p.target, Target::NonResource { .. });
        let need = needed_level(req.body, &p.verb, non_resource);
        needs = needs.max(need);
        let mut everyone: Option<(Option<usize>, Option<Gap>)> = None;
        for (pi, who) in d.principals.iter().enumerate() {
            let dec = policy.evaluate(&Request {
                user: who.user.clone(),
                groups: who.groups.clone(),
                verb: p.verb.clone(),
                target: p.target.clone(),
            });
            let gap = if dec.level == AuditLevel::None {
                Some(Gap::NotLogged)
            } else if dec.level < need {
                Some(Gap::NoBody)
            } else if real_stages != 0 && real_stages & !dec.omit_stages == 0 {
                Some(Gap::StageOmitted)
            } else {
                None
            };
            if pi == 0 {
                everyone = Some((dec.rule, gap));
            } else if everyone == Some((dec.rule, gap)) {
                // Same rule, same outcome as for everyone else: already reported once.
                continue;
            }
            match gap {
                None if pi == 0 => everyone_ok += 1,
                None => {}
                Some(g) => {
                    let omitted = if g == Gap::StageOmitted {
                        dec.omit_stages
                    } else {
                        0
                    };
                    let e = gaps
                        .entry((pi, g, dec.level, dec.rule, omitted))
                        .or_default();
                    e.0.insert(p.verb.clone());
                    match &p.target {
                        Target::Resource {
                            api_group,
                            resource,
                            subresource,
                            namespace,
                            name,
                        } => {
                            let mut r = if api_group.is_empty() {
                                resource.clone()
                            } else {
                                format!("{api_group}/{resource}")
                            };
                            if !subresource.is_empty() {
                                r = format!("{r}/{subresource}");
                            }
                            if name != OTHER_NAME {
                                r = format!("{r} named {name}");
                            }
                            e.1.insert(r);
                            e.2.insert(namespace.clone());
                        }
                        Target::NonResource { path } => {
                            e.1.insert(path.clone());
                        }
                    }
                }
            }
        }
    }
    let blind_spots: Vec<BlindSpot> = gaps
        .into_iter()
        .map(|((pi, gap, lvl, rule, omitted), (v, r, n))| BlindSpot {
            omitted_stages: stage_names(omitted).into_iter().map(String::from).collect(),
            principal: d.principals[pi].label.clone(),
            gap,
            level: lvl,
            policy_rule: rule.map(|i| i + 1),
            verbs: v.into_iter().collect(),
            resources: r.into_iter().collect(),
            namespaces: n.into_iter().collect(),
        })
        .collect();
    let verdict = if blind_spots.is_empty() {
        Verdict::Covered
    } else if everyone_ok == 0 {
        Verdict::Blind
    } else {
        Verdict::Partial
    };
    RuleCoverage {
        id: id.to_string(),
        title: title.to_string(),
        level,
        verdict,
        needs,
        blind_spots,
    }
}

/// Well-known API group of a resource, for rules that name resources but not groups.
fn known_groups(resource: &str) -> Option<&'static [&'static str]> {
    Some(match resource {
        "pods"
        | "services"
        | "secrets"
        | "configmaps"
        | "serviceaccounts"
        | "nodes"
        | "namespaces"
        | "endpoints"
        | "persistentvolumes"
        | "persistentvolumeclaims"
        | "replicationcontrollers"
        | "limitranges"
        | "resourcequotas"
        | "componentstatuses"
        | "bindings"
        | "podtemplates" => &[""],
        "events" => &["", "events.k8s.io"],
        "deployments" | "daemonsets" | "statefulsets" | "replicasets" | "controllerrevisions" => {
            &["apps"]
        }
        "jobs" | "cronjobs" => &["batch"],
        "roles" | "rolebindings" | "clusterroles" | "clusterrolebindings" => {
            &["rbac.authorization.k8s.io"]
        }
        "mutatingwebhookconfigurations"
        | "validatingwebhookconfigurations"
        | "validatingadmissionpolicies"
        | "validatingadmissionpolicybindings"
        | "mutatingadmissionpolicies"
        | "mutatingadmissionpolicybindings" => &["admissionregistration.k8s.io"],
        "certificatesigningrequests" => &["certificates.k8s.io"],
        "tokenreviews" | "selfsubjectreviews" => &["authentication.k8s.io"],
        "subjectaccessreviews"
        | "selfsubjectaccessreviews"
        | "selfsubjectrulesreviews"
        | "localsubjectaccessreviews" => &["authorization.k8s.io"],
        "leases" => &["coordination.k8s.io"],
        "networkpolicies" | "ingresses" | "ingressclasses" => &["networking.k8s.io"],
        "poddisruptionbudgets" | "podsecuritypolicies" => &["policy"],
        "storageclasses" | "csidrivers" | "csinodes" | "volumeattachments" => &["storage.k8s.io"],
        "customresourcedefinitions" => &["apiextensions.k8s.io"],
        "apiservices" => &["apiregistration.k8s.io"],
        "endpointslices" => &["discovery.k8s.io"],
        "priorityclasses" => &["scheduling.k8s.io"],
        "runtimeclasses" => &["node.k8s.io"],
        "horizontalpodautoscalers" => &["autoscaling"],
        "flowschemas" | "prioritylevelconfigurations" => &["flowcontrol.apiserver.k8s.io"],
        _ => return None,
    })
}

/// Cluster-scoped resources: their requests have namespace `""`.
fn cluster_scoped(resource: &str) -> Option<bool> {
    let cluster = matches!(
        resource,
        "nodes"
            | "namespaces"
            | "persistentvolumes"
            | "componentstatuses"
            | "clusterroles"
            | "clusterrolebindings"
            | "mutatingwebhookconfigurations"
            | "validatingwebhookconfigurations"
            | "validatingadmissionpolicies"
            | "validatingadmissionpolicybindings"
            | "mutatingadmissionpolicies"
            | "mutatingadmissionpolicybindings"
            | "certificatesigningrequests"
            | "tokenreviews"
            | "selfsubjectreviews"
            | "subjectaccessreviews"
            | "selfsubjectaccessreviews"
            | "selfsubjectrulesreviews"
            | "ingressclasses"
            | "podsecuritypolicies"
            | "storageclasses"
            | "csidrivers"
            | "csinodes"
            | "volumeattachments"
            | "customresourcedefinitions"
            | "apiservices"
            | "priorityclasses"
            | "runtimeclasses"
            | "flowschemas"
            | "prioritylevelconfigurations"
    );
    if cluster {
        Some(true)
    } else if known_groups(resource).is_some() {
        Some(false)
    } else {
        None
    }
}

/// Resources a subresource belongs to, for rules that name only the subresource (`*/exec`).
fn parents_of(sub: &str) -> &'static [&'static str] {
    match sub {
        "exec"
        | "attach"
        | "portforward"
        | "ephemeralcontainers"
        | "log"
        | "eviction"
        | "binding" => &["pods"],
        "proxy" => &["pods", "services", "nodes"],
        "token" => &["serviceaccounts"],
        "approval" => &["certificatesigningrequests"],
        "scale" => &[
            "deployments",
            "statefulsets",
            "replicasets",
            "replicationcontrollers",
        ],
        "status" => &["pods", "nodes", "deployments", "certificatesigningrequests"],
        _ => &[OTHER_RESOURCE],
    }
}

/// The probe requests for one rule's requirements.
fn probes(d: &Domain, req: &Requirements) -> Vec<Probe> {
    let lower = |v: &Vec<String>| v.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>();
    // (resource, subresource) pairs.
    let mut res: BTreeSet<(String, String)> = BTreeSet::new();
    match &req.resources {
        Some(list) => {
            for r in lower(list) {
                let (base, sub) = r.split_once('/').unwrap_or((r.as_str(), ""));
                if base == "*" {
                    for p in parents_of(sub) {
                        res.insert((p.to_string(), sub.to_string()));
                    }
                } else {
                    res.insert((base.to_string(), sub.to_string()));
                }
            }
        }
        None => {
            for (_, r) in &d.group_resources {
                let (base, sub) = r.split_once('/').unwrap_or((r.as_str(), ""));
                match (base, sub) {
                    ("*", "") => {}
                    ("*", s) => {
                        for p in parents_of(s) {
                            res.insert((p.to_string(), s.to_string()));
                        }
                    }
                    (b, "*") => {
                        res.insert((b.to_string(), String::new()));
                    }
                    (b, s) => {
                        res.insert((b.to_string(), s.to_string()));
                    }
                }
            }
            res.insert((OTHER_RESOURCE.to_string(), String::new()));
        }
    }
    let verbs: Vec<String> = match &req.verbs {
        Some(v) => lower(v),
        None => RESOURCE_VERBS
            .iter()
            .map(|s| s.to_string())
            .chain(d.verbs.iter().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let mut out = BTreeSet::new();
    for (resource, sub) in &res {
        let groups: Vec<String> = match &req.api_groups {
            Some(g) => g.clone(),
            None => match known_groups(resource) {
                Some(g) => g.iter().map(|s| s.to_string()).collect(),
                None => {
                    // Unknown (custom) resource: every group the policy pairs with it, plus one
                    // it does not name.
                    let mut g: BTreeSet<String> = d
                        .group_resources
                        .iter()
                        .filter(|(_, r)| r == resource || r.starts_with(&format!("{resource}/")))
                        .map(|(g, _)| g.clone())
                        .collect();
                    g.insert(OTHER_GROUP.to_string());
                    g.into_iter().collect()
                }
            },
        };
        let namespaces: Vec<String> = match &req.namespaces {
            Some(n) => n.clone(),
            None => {
                let scoped = cluster_scoped(resource);
                let mut n = BTreeSet::new();
                if scoped != Some(false) {
                    n.insert(String::new());
                }
                if scoped != Some(true) {
                    n.extend(d.namespaces.iter().filter(|s| !s.is_empty()).cloned());
                    n.insert(OTHER_NS.to_string());
                }
                n.into_iter().collect()
            }
        };
        for g in &groups {
            let mut names = vec![OTHER_NAME.to_string()];
            for (ng, nr, n) in &d.names {
                let combined = if sub.is_empty() {
                    resource.clone()
                } else {
                    format!("{resource}/{sub}")
                };
                if ng == g && (*nr == combined || nr == "*" || nr == &format!("{resource}/*")) {
                    names.push(n.clone());
                }
            }
            for ns in &namespaces {
                for name in &names {
                    for v in &verbs {
                        out.insert(Probe {
                            verb: v.clone(),
                            target: Target::Resource {
                                api_group: g.clone(),
                                resource: resource.clone(),
                                subresource: sub.clone(),
                                namespace: ns.clone(),
                                name: name.clone(),
                            },
                        });
                    }
                }
            }
        }
    }
    // A rule open on resources, groups and namespaces can also match non-resource requests
    // (e.g. anonymous access to /version).
    if req.resources.is_none() && req.api_groups.is_none() && req.namespaces.is_none() {
        let nr_verbs: Vec<String> = match &req.verbs {
            Some(v) => lower(v)
                .into_iter()
                .filter(|v| NON_RESOURCE_VERBS.contains(&v.as_str()))
                .collect(),
            None => NON_RESOURCE_VERBS.iter().map(|s| s.to_string()).collect(),
        };
        for p in d.paths.iter().cloned().chain([OTHER_PATH.to_string()]) {
            for v in &nr_verbs {
                out.insert(Probe {
                    verb: v.clone(),
                    target: Target::NonResource { path: p.clone() },
                });
            }
        }
    }
    out.into_iter().collect()
}
