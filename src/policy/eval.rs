//! The API server's policy matching (`k8s.io/apiserver/pkg/audit/policy/checker.go`), ported
//! rule for rule so that the coverage check answers what a real cluster would log.

use super::schema::{AuditLevel, Policy, PolicyRule};

/// What a request targets: a resource or a non-resource URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A resource request (`/api/...`, `/apis/...`).
    Resource {
        /// API group (`""` = core).
        api_group: String,
        /// Resource (`pods`).
        resource: String,
        /// Subresource (`exec`), or `""`.
        subresource: String,
        /// Namespace, or `""` for cluster-scoped and all-namespace requests.
        namespace: String,
        /// Object name, or `""` for list/create.
        name: String,
    },
    /// Anything else (`/healthz`, `/version`, `/metrics`).
    NonResource {
        /// The URL path.
        path: String,
    },
}

/// The attributes of one request that a policy looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    /// Username.
    pub user: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// Verb (`get`, `create`, ...; lower-cased HTTP method for non-resource requests).
    pub verb: String,
    /// What the request targets.
    pub target: Target,
}

/// What the policy decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The level (None when no rule matches).
    pub level: AuditLevel,
    /// Stages not recorded (policy ∪ rule).
    pub omit_stages: u8,
    /// Index of the matching rule, if any.
    pub rule: Option<usize>,
}

impl Policy {
    /// The level and omitted stages for `req`: the first matching rule wins, no match = None.
    pub fn evaluate(&self, req: &Request) -> Decision {
        for (i, r) in self.rules.iter().enumerate() {
            if rule_matches(r, req) {
                return Decision {
                    level: r.level,
                    omit_stages: r.omit_stages,
                    rule: Some(i),
                };
            }
        }
        Decision {
            level: AuditLevel::None,
            omit_stages: self.omit_stages,
            rule: None,
        }
    }
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|s| s == v)
}

/// Whether every non-empty field of `r` matches `req` (`ruleMatches`).
pub fn rule_matches(r: &PolicyRule, req: &Request) -> bool {
    if !r.users.is_empty() && !has(&r.users, &req.user) {
        return false;
    }
    if !r.user_groups.is_empty() && !req.groups.iter().any(|g| has(&r.user_groups, g)) {
        return false;
    }
    if !r.verbs.is_empty() && !has(&r.verbs, &req.verb) {
        return false;
    }
    // Resource fields take precedence: a rule with namespaces or resources never matches a
    // non-resource request, even if it also lists nonResourceURLs (validation forbids both).
    if !r.namespaces.is_empty() || !r.resources.is_empty() {
        return matches_resource(r, &req.target);
    }
    if !r.non_resource_urls.is_empty() {
        return match &req.target {
            Target::NonResource { path } => r
                .non_resource_urls
                .iter()
                .any(|spec| path_matches(path, spec)),
            Target::Resource { .. } => false,
        };
    }
    true
}

/// `pathMatches`: `*`, exact, or a trailing-`*` prefix.
pub fn path_matches(path: &str, spec: &str) -> bool {
    if spec == "*" || spec == path {
        return true;
    }
    match spec.strip_suffix('*') {
        // Go's TrimRight strips every trailing '*'; validation allows only one anyway.
        Some(_) => path.starts_with(spec.trim_end_matches('*')),
        None => false,
    }
}

fn matches_resource(r: &PolicyRule, target: &Target) -> bool {
    let Target::Resource {
        api_group,
        resource,
        subresource,
        namespace,
        name,
    } = target
    else {
        return false;
    };
    if !r.namespaces.is_empty() && !has(&r.namespaces, namespace) {
        return false;
    }
    if r.resources.is_empty() {
        return true;
    }
    let combined = if subresource.is_empty() {
        resource.clone()
    } else {
        format!("{resource}/{subresource}")
    };
    for gr in &r.resources {
        if gr.group != *api_group {
            continue;
        }
        if gr.resources.is_empty() {
            return true;
        }
        if !gr.resource_names.is_empty() && !has(&gr.resource_names, name) {
            continue;
        }
        for res in &gr.resources {
            // "*" matches every resource and every subresource; "pods" alone does not match
            // "pods/log" (that needs "pods/log", "pods/*" or "*/log").
            if *res == combined || res == "*" {
                return true;
            }
            if !subresource.is_empty() && res.strip_prefix("*/") == Some(subresource.as_str()) {
                return true;
            }
            if res.strip_suffix("/*") == Some(resource.as_str()) {
                return true;
            }
        }
    }
    false
}
