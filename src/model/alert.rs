//! Alerts: ECS-shaped JSON, one object per alert (schema in docs/alerts.md).
//!
//! An alert is built from the rule's metadata and the typed fields of the event; it never
//! copies request or response bodies, and the request URI passes through
//! [`super::redact::redact_uri`], so secret material cannot leave through an alert.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::AuditEvent;
use super::redact;

/// Sigma levels, in increasing order of severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Context only.
    Informational,
    /// Worth a look.
    Low,
    /// Suspicious.
    Medium,
    /// Likely an incident.
    High,
    /// Nearly always an incident.
    Critical,
}

impl Level {
    /// All levels, lowest first.
    pub const ALL: [Level; 5] = [
        Level::Informational,
        Level::Low,
        Level::Medium,
        Level::High,
        Level::Critical,
    ];

    /// Parses a level name (case-insensitive; `info` accepted).
    pub fn parse(s: &str) -> Option<Level> {
        match s.to_ascii_lowercase().as_str() {
            "informational" | "info" => Some(Level::Informational),
            "low" => Some(Level::Low),
            "medium" => Some(Level::Medium),
            "high" => Some(Level::High),
            "critical" => Some(Level::Critical),
            _ => None,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Informational => "informational",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }

    /// ECS `event.risk_score`, on Elastic's scale (21/47/73/99).
    pub fn risk_score(self) -> u8 {
        match self {
            Level::Informational => 1,
            Level::Low => 21,
            Level::Medium => 47,
            Level::High => 73,
            Level::Critical => 99,
        }
    }

    /// ECS `event.severity` (1 lowest).
    pub fn severity(self) -> u8 {
        self as u8 + 1
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an alert needs to know about the rule that fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleMeta {
    /// Stable rule id (a UUID for Sigma rules).
    pub id: String,
    /// Title.
    pub title: String,
    /// Level.
    pub level: Level,
    /// Sigma tags, e.g. `attack.t1552.007`.
    pub tags: Vec<String>,
    /// What the rule detects and what to check next.
    pub description: String,
    /// Reference URLs.
    pub references: Vec<String>,
    /// Author.
    pub author: Option<String>,
    /// Where the rule came from (`builtin`, a file path, `falco:<file>`).
    pub source: String,
}

impl RuleMeta {
    /// ATT&CK technique ids from the tags (`attack.t1552.007` -> `T1552.007`).
    pub fn techniques(&self) -> Vec<String> {
        self.tags
            .iter()
            .filter_map(|t| t.strip_prefix("attack."))
            .filter(|t| is_attack_id(t) && t.as_bytes()[0].eq_ignore_ascii_case(&b't'))
            .map(|t| t.to_ascii_uppercase())
            .collect()
    }

    /// ATT&CK tactic names from the tags (`attack.credential-access`): every `attack.*` tag
    /// that is not a technique, group or software id (`t1234`, `g1234`, `s1234`).
    pub fn tactics(&self) -> Vec<String> {
        self.tags
            .iter()
            .filter_map(|t| t.strip_prefix("attack."))
            .filter(|t| !is_attack_id(t))
            .map(str::to_string)
            .collect()
    }
}

/// `t1552.007`, `g0001`, `s0002`: a letter and four digits.
fn is_attack_id(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 5
        && matches!(b[0].to_ascii_lowercase(), b't' | b'g' | b's')
        && b[1..5].iter().all(u8::is_ascii_digit)
}

/// ECS `event.*` of an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Always `alert`.
    pub kind: String,
    /// Stable alert id: the same rule on the same audit event gives the same id, so that a
    /// re-sent alert de-duplicates in the SIEM.
    pub id: String,
    /// When audithawk created the alert.
    pub created: String,
    /// ECS categories.
    pub category: Vec<String>,
    /// The verb.
    pub action: String,
    /// `success`, `failure` or `unknown`, from the response code.
    pub outcome: String,
    /// `audithawk.alert`.
    pub dataset: String,
    /// 1 (informational) .. 5 (critical).
    pub severity: u8,
    /// Elastic-scale risk score.
    pub risk_score: u8,
    /// Rendered message (Falco output template, or a summary line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// ECS `rule.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    /// Rule id.
    pub id: String,
    /// Rule title.
    pub name: String,
    /// Sigma level.
    pub level: Level,
    /// Sigma tags.
    pub tags: Vec<String>,
    /// Description.
    pub description: String,
    /// First reference, as ECS has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Author.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Where the rule came from.
    pub ruleset: String,
}

/// An id (and optional name) pair as in ECS `threat.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThreatRef {
    /// The ATT&CK id, or the tactic name when no id is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// ECS `threat.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threat {
    /// `MITRE ATT&CK`.
    pub framework: String,
    /// Techniques from the rule's tags.
    pub technique: Vec<ThreatRef>,
    /// Tactics from the rule's tags.
    pub tactic: Vec<ThreatRef>,
}

/// ECS `user.*`: the acting identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertUser {
    /// User name.
    pub name: String,
    /// UID, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Groups.
    pub group: GroupNames,
    /// The impersonated identity, when impersonating.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetUser>,
}

/// ECS `user.group`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupNames {
    /// Group names.
    pub name: Vec<String>,
}

/// ECS `user.target`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetUser {
    /// Impersonated user name.
    pub name: String,
    /// Impersonated groups.
    pub group: GroupNames,
}

/// ECS `source`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The last entry of `sourceIPs`: the only one the API server saw itself.
    pub ip: String,
}

/// ECS `user_agent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserAgent {
    /// As sent.
    pub original: String,
}

/// ECS `orchestrator.resource`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrchResource {
    /// Resource plural (with `/subresource` when present).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Object name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// ECS `orchestrator.cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Cluster name.
    pub name: String,
}

/// ECS `orchestrator`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Orchestrator {
    /// Always `kubernetes`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Cluster, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cluster>,
    /// Namespace of the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object.
    pub resource: OrchResource,
    /// `group/version` of the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// `kubernetes.audit`: the audit fields an analyst needs to find the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRef {
    /// The auditID.
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// Verb.
    pub verb: String,
    /// Request URI (token-like query parameters redacted).
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// Stage.
    pub stage: String,
    /// Audit level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// objectRef as received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<Value>,
    /// responseStatus.code.
    pub response_status: ResponseCode,
    /// `authorization.k8s.io/decision`, when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
}

/// `kubernetes.audit.responseStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseCode {
    /// HTTP code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
}

/// `kubernetes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kubernetes {
    /// The audit event's identifying fields.
    pub audit: AuditRef,
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Event time of the triggering event (RFC 3339, microseconds).
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    /// ECS event fields.
    pub event: AlertEvent,
    /// The rule.
    pub rule: AlertRule,
    /// ATT&CK mapping.
    pub threat: Threat,
    /// A one-line summary for people.
    pub message: String,
    /// Acting identity.
    pub user: AlertUser,
    /// Source address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// User agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<UserAgent>,
    /// Cluster and object.
    pub orchestrator: Orchestrator,
    /// Audit fields.
    pub kubernetes: Kubernetes,
    /// For correlation rules: group values, counts, window and contributing auditIDs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Value>,
}

impl Alert {
    /// Builds the alert for `rule` matching `ev`.
    pub fn new(rule: &RuleMeta, ev: &AuditEvent<'_>, created: DateTime<Utc>) -> Alert {
        let f = &ev.fields;
        let ts = ev.event_time().unwrap_or(created);
        let code = f.response_status.as_ref().and_then(|s| s.code);
        let outcome = match code {
            Some(c) if (200..400).contains(&c) => "success",
            Some(_) => "failure",
            None => "unknown",
        };
        let obj = f.object_ref.as_ref();
        let resource_type = obj.and_then(|o| {
            o.resource
                .as_deref()
                .map(|r| match o.subresource.as_deref() {
                    Some(s) if !s.is_empty() => format!("{r}/{s}"),
                    _ => r.to_string(),
                })
        });
        let api_version =
            obj.and_then(
                |o| match (o.api_group.as_deref(), o.api_version.as_deref()) {
                    (Some(g), Some(v)) if !g.is_empty() => Some(format!("{g}/{v}")),
                    (_, Some(v)) => Some(v.to_string()),
                    _ => None,
                },
            );
        let user_name = ev.username().to_string();
        let uri = f
            .request_uri
            .as_deref()
            .map(redact::redact_uri)
            .unwrap_or_default();
        let techniques = rule.techniques();
        let id = alert_id(&rule.id, ev);
        let verb = ev.verb().to_string();
        let object = match (
            obj.and_then(|o| o.namespace.as_deref()),
            obj.and_then(|o| o.name.as_deref()),
        ) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (Some(ns), None) => format!("in {ns}"),
            (None, Some(n)) => n.to_string(),
            (None, None) => String::new(),
        };
        let what = resource_type.as_deref().unwrap_or(&uri);
        let who = if user_name.is_empty() {
            "<unknown>"
        } else {
            &user_name
        };
        let message = [rule.title.as_str(), ":", &verb, what, &object, "by", who]
            .iter()
            .filter(|p| !p.is_empty())
            .fold(String::new(), |mut acc, p| {
                if !acc.is_empty() && *p != ":" {
                    acc.push(' ');
                }
                acc.push_str(p);
                acc
            });
        Alert {
            timestamp: ts.to_rfc3339_opts(SecondsFormat::Micros, true),
            event: AlertEvent {
                kind: "alert".into(),
                id,
                created: created.to_rfc3339_opts(SecondsFormat::Micros, true),
                category: categories(ev.resource()),
                action: verb.clone(),
                outcome: outcome.into(),
                dataset: "audithawk.alert".into(),
                severity: rule.level.severity(),
                risk_score: rule.level.risk_score(),
                reason: None,
            },
            rule: AlertRule {
                id: rule.id.clone(),
                name: rule.title.clone(),
                level: rule.level,
                tags: rule.tags.clone(),
                description: rule.description.clone(),
                reference: rule.references.first().cloned(),
                author: rule.author.clone(),
                ruleset: rule.source.clone(),
            },
            threat: Threat {
                framework: "MITRE ATT&CK".into(),
                technique: techniques
                    .into_iter()
                    .map(|t| ThreatRef {
                        id: Some(t),
                        name: None,
                    })
                    .collect(),
                tactic: rule
                    .tactics()
                    .into_iter()
                    .map(|t| ThreatRef {
                        id: None,
                        name: Some(t),
                    })
                    .collect(),
            },
            message,
            user: AlertUser {
                name: user_name,
                id: f.user.uid.as_deref().map(str::to_string),
                group: GroupNames {
                    name: f.user.groups.iter().map(|g| g.to_string()).collect(),
                },
                target: f.impersonated_user.as_ref().map(|u| TargetUser {
                    name: u.username.as_deref().unwrap_or("").to_string(),
                    group: GroupNames {
                        name: u.groups.iter().map(|g| g.to_string()).collect(),
                    },
                }),
            },
            source: f.source_ips.last().map(|ip| Source { ip: ip.to_string() }),
            user_agent: f.user_agent.as_deref().map(|ua| UserAgent {
                original: ua.to_string(),
            }),
            orchestrator: Orchestrator {
                kind: "kubernetes".into(),
                cluster: ev.cluster.as_deref().map(|c| Cluster {
                    name: c.to_string(),
                }),
                namespace: obj.and_then(|o| o.namespace.as_deref()).map(str::to_string),
                resource: OrchResource {
                    kind: resource_type,
                    name: obj.and_then(|o| o.name.as_deref()).map(str::to_string),
                },
                api_version,
            },
            kubernetes: Kubernetes {
                audit: AuditRef {
                    audit_id: ev.audit_id().to_string(),
                    verb,
                    request_uri: uri.into_owned(),
                    stage: f.stage.as_str().to_string(),
                    level: f.level.as_deref().map(str::to_string),
                    object_ref: obj.map(object_ref_json),
                    response_status: ResponseCode { code },
                    decision: ev
                        .annotation("authorization.k8s.io/decision")
                        .map(str::to_string),
                },
            },
            correlation: None,
        }
    }

    /// The alert as one JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        // Serialising plain structs of strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A one-line human rendering for terminals.
    pub fn to_line(&self) -> String {
        format!(
            "{} [{}] {} (rule {}; auditID {}{})",
            self.timestamp,
            self.rule.level,
            self.message,
            self.rule.id,
            self.kubernetes.audit.audit_id,
            self.orchestrator
                .cluster
                .as_ref()
                .map(|c| format!("; cluster {}", c.name))
                .unwrap_or_default()
        )
    }

    /// Event time as a DateTime.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.timestamp)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

fn object_ref_json(o: &super::event::ObjectRef<'_>) -> Value {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: &Option<std::borrow::Cow<'_, str>>| {
        if let Some(v) = v {
            m.insert(k.to_string(), Value::String(v.to_string()));
        }
    };
    put("resource", &o.resource);
    put("namespace", &o.namespace);
    put("name", &o.name);
    put("uid", &o.uid);
    put("apiGroup", &o.api_group);
    put("apiVersion", &o.api_version);
    put("subresource", &o.subresource);
    Value::Object(m)
}

/// ECS categories by resource: RBAC and identity objects are `iam`; workload and
/// cluster objects are `configuration`; everything is `api`.
fn categories(resource: &str) -> Vec<String> {
    let extra = match resource {
        "roles"
        | "clusterroles"
        | "rolebindings"
        | "clusterrolebindings"
        | "serviceaccounts"
        | "certificatesigningrequests"
        | "tokenreviews"
        | "selfsubjectaccessreviews"
        | "selfsubjectrulesreviews"
        | "subjectaccessreviews" => Some("iam"),
        "" => None,
        _ => Some("configuration"),
    };
    let mut v = vec!["api".to_string()];
    v.extend(extra.map(str::to_string));
    v
}

/// A stable alert id: UUIDv5 over (rule id, cluster, auditID, stage, event time). The same
/// rule firing on the same event always gives the same id.
pub fn alert_id(rule_id: &str, ev: &AuditEvent<'_>) -> String {
    let f = &ev.fields;
    let key = format!(
        "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
        rule_id,
        ev.cluster.as_deref().unwrap_or(""),
        ev.audit_id(),
        f.stage.as_str(),
        f.stage_timestamp
            .as_deref()
            .or(f.request_received_timestamp.as_deref())
            .unwrap_or("")
    );
    uuid::Uuid::new_v5(&ALERT_NS, key.as_bytes()).to_string()
}

/// Namespace for alert ids (a fixed random UUID).
const ALERT_NS: uuid::Uuid = uuid::Uuid::from_u128(0x6a1e_5b7c_3f2d_4e8a_9b0c_1d2e_3f4a_5b6c);

/// Shared, immutable alert handed to several sinks.
pub type SharedAlert = Arc<Alert>;

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RuleMeta {
        RuleMeta {
            id: "r1".into(),
            title: "Test rule".into(),
            level: Level::High,
            tags: vec![
                "attack.credential-access".into(),
                "attack.t1552.007".into(),
                "attack.stealth".into(),
            ],
            description: "d".into(),
            references: vec![],
            author: None,
            source: "builtin".into(),
        }
    }

    #[test]
    fn ecs_shape() {
        let mut ev = AuditEvent::parse(
            r#"{"auditID":"a1","verb":"get","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns/secrets/s?token=abc",
            "user":{"username":"system:admin","groups":["system:masters"]},"impersonatedUser":{"username":"bob"},
            "sourceIPs":["6.6.6.6","10.0.0.1"],"objectRef":{"resource":"secrets","namespace":"ns","name":"s","apiVersion":"v1"},
            "responseStatus":{"code":200},"stageTimestamp":"2026-01-01T00:00:00.000001Z"}"#,
        )
        .unwrap();
        ev.cluster = Some("prod".into());
        let a = Alert::new(&meta(), &ev, Utc::now());
        let v: Value = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(v["@timestamp"], "2026-01-01T00:00:00.000001Z");
        assert_eq!(v["event"]["kind"], "alert");
        assert_eq!(v["rule"]["level"], "high");
        assert_eq!(v["threat"]["technique"][0]["id"], "T1552.007");
        assert_eq!(v["user"]["target"]["name"], "bob");
        assert_eq!(v["source"]["ip"], "10.0.0.1");
        assert_eq!(v["orchestrator"]["cluster"]["name"], "prod");
        assert_eq!(v["orchestrator"]["resource"]["type"], "secrets");
        assert_eq!(v["kubernetes"]["audit"]["responseStatus"]["code"], 200);
        assert!(
            !a.to_json().contains("abc"),
            "token in URI must be redacted"
        );
        // Stable id
        assert_eq!(a.event.id, Alert::new(&meta(), &ev, Utc::now()).event.id);
        assert_eq!(meta().tactics(), vec!["credential-access", "stealth"]);
    }
}
