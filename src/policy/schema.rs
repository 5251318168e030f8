//! The `audit.k8s.io/v1` Policy: decoding (strict, then lenient like the API server) and
//! validation (the checks of `k8s.io/apiserver/pkg/apis/audit/validation`).

use serde::Deserialize;

use crate::model::Stage;

use super::PolicyError;

/// How much of a request the API server records (`audit.k8s.io/v1` Level).
///
/// Ordered: `None < Metadata < Request < RequestResponse`, which is what the coverage check
/// compares against what a detection reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum AuditLevel {
    /// No event at all.
    None,
    /// User, verb, resource, response code; no bodies.
    Metadata,
    /// Metadata plus `requestObject`.
    Request,
    /// Metadata plus `requestObject` and `responseObject`.
    RequestResponse,
}

impl AuditLevel {
    /// Parses the wire name (case-sensitive, as the API server does).
    pub fn parse(s: &str) -> Option<AuditLevel> {
        match s {
            "None" => Some(AuditLevel::None),
            "Metadata" => Some(AuditLevel::Metadata),
            "Request" => Some(AuditLevel::Request),
            "RequestResponse" => Some(AuditLevel::RequestResponse),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditLevel::None => "None",
            AuditLevel::Metadata => "Metadata",
            AuditLevel::Request => "Request",
            AuditLevel::RequestResponse => "RequestResponse",
        }
    }
}

/// The stages a policy may omit, in wire order.
pub const OMITTABLE_STAGES: [Stage; 4] = [
    Stage::RequestReceived,
    Stage::ResponseStarted,
    Stage::ResponseComplete,
    Stage::Panic,
];

/// Names of the stages set in `mask`, in wire order.
pub fn stage_names(mask: u8) -> Vec<&'static str> {
    OMITTABLE_STAGES
        .iter()
        .filter(|s| mask & s.bit() != 0)
        .map(|s| s.as_str())
        .collect()
}

/// A group and its resources (`GroupResources`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupResources {
    /// API group; `""` is the core group. Matched exactly (the API server has no wildcard).
    pub group: String,
    /// Resources: `pods`, `pods/log`, `*`, `pods/*`, `*/scale`. Empty = every resource.
    pub resources: Vec<String>,
    /// Object names; empty = any name.
    pub resource_names: Vec<String>,
}

/// One policy rule, with the policy's `omitStages` already unioned in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// Level for matching requests.
    pub level: AuditLevel,
    /// Usernames; empty = any.
    pub users: Vec<String>,
    /// Groups (any one of the user's groups); empty = any.
    pub user_groups: Vec<String>,
    /// Verbs; empty = any.
    pub verbs: Vec<String>,
    /// Resources; empty (with no namespaces) = any resource request.
    pub resources: Vec<GroupResources>,
    /// Namespaces (`""` = cluster-scoped); empty = any.
    pub namespaces: Vec<String>,
    /// Non-resource URL patterns (`*`, exact, or trailing `*` prefix).
    pub non_resource_urls: Vec<String>,
    /// Stages not recorded (bit mask of [`Stage::bit`]): policy ∪ rule.
    pub omit_stages: u8,
}

/// A decoded, validated audit policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Rules in order; the first match wins.
    pub rules: Vec<PolicyRule>,
    /// Policy-level omitted stages (applies when no rule matches, too).
    pub omit_stages: u8,
    /// Non-fatal findings: unknown fields the API server's lenient decode would drop.
    pub warnings: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawPolicy {
    api_version: Option<String>,
    kind: Option<String>,
    #[allow(dead_code)] // accepted like ObjectMeta; its content does not matter here
    metadata: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    omit_stages: Vec<String>,
    #[allow(dead_code)] // affects bodies' managedFields only, not coverage
    omit_managed_fields: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    level: Option<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<RawGroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<String>,
    #[allow(dead_code)]
    omit_managed_fields: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawGroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

/// Decodes and validates a policy from YAML (or JSON) text. `file` names it in errors.
///
/// Like the API server, decoding is strict first (unknown fields are findings) and then
/// lenient: unknown fields become [`Policy::warnings`] rather than errors. Everything the
/// API server's validation would refuse is an error, all listed at once.
pub fn parse(text: &str, file: &str) -> Result<Policy, PolicyError> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    let mut unknown = Vec::new();
    let raw: RawPolicy = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
        .map_err(|e| PolicyError::Decode {
            file: file.to_string(),
            line: e.location().map(|l| l.line()),
            message: e.to_string(),
        })?;
    let mut problems = Vec::new();
    match raw.api_version.as_deref() {
        Some("audit.k8s.io/v1") => {}
        Some(v @ ("audit.k8s.io/v1beta1" | "audit.k8s.io/v1alpha1")) => problems.push(format!(
            "`apiVersion` {v} was removed in Kubernetes 1.24; use audit.k8s.io/v1"
        )),
        Some(v) => problems.push(format!("`apiVersion` must be audit.k8s.io/v1, not {v:?}")),
        None => problems.push("`apiVersion` is required (audit.k8s.io/v1)".into()),
    }
    match raw.kind.as_deref() {
        Some("Policy") => {}
        Some(k) => problems.push(format!("`kind` must be Policy, not {k:?}")),
        None => problems.push("`kind` is required (Policy)".into()),
    }
    if raw.rules.is_empty() {
        // The API server refuses a policy without rules ("loaded illegal policy with 0 rules").
        problems.push(
            "`rules` must not be empty (the API server refuses a policy with 0 rules)".into(),
        );
    }
    let omit_stages = stages_mask(&raw.omit_stages, "omitStages", &mut problems);
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, r) in raw.rules.into_iter().enumerate() {
        let at = format!("rules[{i}]");
        let level = match r.level.as_deref() {
            None | Some("") => {
                problems.push(format!("`{at}.level` is required"));
                AuditLevel::None
            }
            Some(l) => AuditLevel::parse(l).unwrap_or_else(|| {
                problems.push(format!(
                    "`{at}.level` {l:?} is not one of None, Metadata, Request, RequestResponse"
                ));
                AuditLevel::None
            }),
        };
        for (j, u) in r.non_resource_urls.iter().enumerate() {
            if u == "*" {
                continue;
            }
            if !u.starts_with('/') {
                problems.push(format!(
                    "`{at}.nonResourceURLs[{j}]` {u:?} must begin with '/'"
                ));
            }
            if !u.is_empty() && u[..u.len() - 1].contains('*') {
                problems.push(format!(
                    "`{at}.nonResourceURLs[{j}]` {u:?}: '*' may only be the final character"
                ));
            }
        }
        if !r.non_resource_urls.is_empty() && (!r.resources.is_empty() || !r.namespaces.is_empty())
        {
            problems.push(format!(
                "`{at}`: rules cannot apply to both regular resources and non-resource URLs"
            ));
        }
        for (j, g) in r.resources.iter().enumerate() {
            if !g.group.is_empty() && !is_dns_subdomain(&g.group) {
                problems.push(format!(
                    "`{at}.resources[{j}].group` {:?} is not a valid API group (a lower-case DNS \
                     subdomain; \"\" is the core group; there is no wildcard)",
                    g.group
                ));
            }
            if !g.resource_names.is_empty() && g.resources.is_empty() {
                problems.push(format!(
                    "`{at}.resources[{j}].resourceNames` requires at least one resource"
                ));
            }
        }
        let rule_omit = stages_mask(&r.omit_stages, &format!("{at}.omitStages"), &mut problems);
        rules.push(PolicyRule {
            level,
            users: r.users,
            user_groups: r.user_groups,
            verbs: r.verbs,
            resources: r
                .resources
                .into_iter()
                .map(|g| GroupResources {
                    group: g.group,
                    resources: g.resources,
                    resource_names: g.resource_names,
                })
                .collect(),
            namespaces: r.namespaces,
            non_resource_urls: r.non_resource_urls,
            omit_stages: omit_stages | rule_omit,
        });
    }
    if !problems.is_empty() {
        return Err(PolicyError::Invalid {
            file: file.to_string(),
            problems,
        });
    }
    // serde_ignored writes sequence indexes as `.0`; show them as `[0]` like the problems.
    let index = regex::Regex::new(r"\.(\d+)").ok();
    let warnings = unknown
        .into_iter()
        .map(|p| {
            let p = match &index {
                Some(re) => re.replace_all(&p, "[$1]").into_owned(),
                None => p,
            };
            format!(
                "unknown field `{p}` (the API server's strict decode fails, then it ignores the \
                 field)"
            )
        })
        .collect();
    Ok(Policy {
        rules,
        omit_stages,
        warnings,
    })
}

fn stages_mask(names: &[String], at: &str, problems: &mut Vec<String>) -> u8 {
    let mut mask = 0;
    for (i, n) in names.iter().enumerate() {
        // Case-sensitive like the API server's validation.
        match OMITTABLE_STAGES.iter().find(|s| s.as_str() == n) {
            Some(s) => mask |= s.bit(),
            None => problems.push(format!(
                "`{at}[{i}]` {n:?}: allowed stages are RequestReceived, ResponseStarted, \
                 ResponseComplete, Panic"
            )),
        }
    }
    mask
}

/// RFC 1123 subdomain: what `validation.NameIsDNSSubdomain` accepts for a group name.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}
