//! Field access by Sigma-style dotted path.
//!
//! A rule names fields as text (`objectRef.resource`, `user.groups`,
//! `annotations.authorization.k8s.io/decision`, `requestObject.spec.containers.image`).
//! [`FieldPath::parse`] turns that text into a typed accessor once, at rule compile time, so
//! evaluating a rule never compares field names. The engine reads events only through the
//! [`Document`] trait, so it does not care whether an event came from the webhook, a file or
//! a test.
//!
//! Semantics, as Sigma expects: a path that crosses a list visits every element, and a
//! value matches when any visited value matches. Keys that themselves contain dots
//! (annotation keys, `user.extra` keys, label keys such as `app.kubernetes.io/name`) are
//! found by trying the next segment alone first and then longer joins of the remaining
//! segments.

use serde_json::Value;

use super::event::AuditEvent;

/// One scalar seen at a field path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'v> {
    /// A string.
    Str(&'v str),
    /// An integer.
    Int(i64),
    /// A non-integer number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// JSON null.
    Null,
    /// A present object (not a scalar): matches only "exists"-style tests and `*`.
    Object,
}

impl<'v> Val<'v> {
    /// Converts a JSON scalar; arrays are flattened by the caller.
    pub fn from_json(v: &'v Value) -> Val<'v> {
        match v {
            Value::String(s) => Val::Str(s),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Val::Int(i),
                None => Val::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::Bool(b) => Val::Bool(*b),
            Value::Null => Val::Null,
            Value::Object(_) | Value::Array(_) => Val::Object,
        }
    }
}

/// Read access to an event by compiled field path.
pub trait Document {
    /// Calls `f` for each value at `path` (lists flattened) until `f` returns `true`;
    /// returns whether it did. A missing field calls `f` never.
    fn visit(&self, path: &FieldPath, f: &mut dyn FnMut(Val<'_>) -> bool) -> bool;

    /// Whether the field has at least one non-null value.
    fn exists(&self, path: &FieldPath) -> bool {
        self.visit(path, &mut |v| !matches!(v, Val::Null))
    }

    /// The first string value at `path`, rendered as text (numbers and booleans included).
    fn first_text(&self, path: &FieldPath) -> Option<String> {
        let mut out = None;
        self.visit(path, &mut |v| {
            out = match v {
                Val::Str(s) => Some(s.to_string()),
                Val::Int(i) => Some(i.to_string()),
                Val::Float(x) => Some(x.to_string()),
                Val::Bool(b) => Some(b.to_string()),
                Val::Null | Val::Object => None,
            };
            out.is_some()
        });
        out
    }
}

/// Which part of a UserInfo a path names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserField {
    /// `username`
    Username,
    /// `uid`
    Uid,
    /// `groups` (a list)
    Groups,
    /// `extra.<key>`: the key may contain dots and slashes.
    Extra(String),
    /// Anything else below the user object.
    Other(Vec<String>),
}

/// Which part of `objectRef` a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefField {
    /// `resource`
    Resource,
    /// `namespace`
    Namespace,
    /// `name`
    Name,
    /// `uid`
    Uid,
    /// `apiGroup`
    ApiGroup,
    /// `apiVersion`
    ApiVersion,
    /// `resourceVersion`
    ResourceVersion,
    /// `subresource`
    Subresource,
}

/// A compiled accessor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Accessor {
    /// `kind`
    Kind,
    /// `apiVersion`
    ApiVersion,
    /// `level`
    Level,
    /// `auditID`
    AuditId,
    /// `stage`
    Stage,
    /// `requestURI`
    RequestUri,
    /// `verb`
    Verb,
    /// `user.*`
    User(UserField),
    /// `impersonatedUser.*`
    ImpersonatedUser(UserField),
    /// `sourceIPs`
    SourceIps,
    /// `userAgent`
    UserAgent,
    /// `objectRef.*`
    ObjectRef(RefField),
    /// `responseStatus.code`
    ResponseCode,
    /// `responseStatus.status|message|reason`
    ResponseText(StatusText),
    /// `requestObject[.path]`
    RequestObject(Vec<String>),
    /// `responseObject[.path]`
    ResponseObject(Vec<String>),
    /// `annotations.<key>`: the key is everything after the first dot.
    Annotation(String),
    /// `requestReceivedTimestamp`
    RequestReceivedTimestamp,
    /// `stageTimestamp`
    StageTimestamp,
    /// The cluster the event came from (`cluster`), an audithawk addition.
    Cluster,
    /// Any other path, looked up in the raw event.
    Raw(Vec<String>),
}

/// Text fields of `responseStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusText {
    /// `status`
    Status,
    /// `message`
    Message,
    /// `reason`
    Reason,
}

/// A field path as written in a rule, compiled to an accessor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    /// The path as written.
    pub name: String,
    /// The compiled accessor.
    pub accessor: Accessor,
}

impl FieldPath {
    /// Compiles a dotted path. Every path is accepted: unknown top-level names are looked up
    /// in the raw event, so rules can use fields this schema does not model.
    pub fn parse(name: &str) -> FieldPath {
        FieldPath {
            name: name.to_string(),
            accessor: compile(name),
        }
    }

    /// Whether this path reads the request or response body (needs audit level Request+).
    pub fn reads_body(&self) -> Option<&'static str> {
        match self.accessor {
            Accessor::RequestObject(_) => Some("requestObject"),
            Accessor::ResponseObject(_) => Some("responseObject"),
            _ => None,
        }
    }
}

fn split(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('.').map(str::to_string).collect()
    }
}

fn user_field(rest: &str) -> Option<UserField> {
    Some(match rest {
        "username" => UserField::Username,
        "uid" => UserField::Uid,
        "groups" => UserField::Groups,
        _ => match rest.strip_prefix("extra.") {
            Some(key) => UserField::Extra(key.to_string()),
            None => UserField::Other(split(rest)),
        },
    })
}

fn compile(name: &str) -> Accessor {
    let (head, rest) = match name.split_once('.') {
        Some((h, r)) => (h, r),
        None => (name, ""),
    };
    match (head, rest) {
        ("kind", "") => Accessor::Kind,
        ("apiVersion", "") => Accessor::ApiVersion,
        ("level", "") => Accessor::Level,
        ("auditID", "") => Accessor::AuditId,
        ("stage", "") => Accessor::Stage,
        ("requestURI", "") => Accessor::RequestUri,
        ("verb", "") => Accessor::Verb,
        ("sourceIPs", "") => Accessor::SourceIps,
        ("userAgent", "") => Accessor::UserAgent,
        ("cluster", "") => Accessor::Cluster,
        ("requestReceivedTimestamp", "") => Accessor::RequestReceivedTimestamp,
        ("stageTimestamp", "") => Accessor::StageTimestamp,
        ("user", r) if !r.is_empty() => {
            user_field(r).map_or(Accessor::Raw(split(name)), Accessor::User)
        }
        ("impersonatedUser", r) if !r.is_empty() => {
            user_field(r).map_or(Accessor::Raw(split(name)), Accessor::ImpersonatedUser)
        }
        ("objectRef", r) => match r {
            "resource" => Accessor::ObjectRef(RefField::Resource),
            "namespace" => Accessor::ObjectRef(RefField::Namespace),
            "name" => Accessor::ObjectRef(RefField::Name),
            "uid" => Accessor::ObjectRef(RefField::Uid),
            "apiGroup" => Accessor::ObjectRef(RefField::ApiGroup),
            "apiVersion" => Accessor::ObjectRef(RefField::ApiVersion),
            "resourceVersion" => Accessor::ObjectRef(RefField::ResourceVersion),
            "subresource" => Accessor::ObjectRef(RefField::Subresource),
            _ => Accessor::Raw(split(name)),
        },
        ("responseStatus", "code") => Accessor::ResponseCode,
        ("responseStatus", "status") => Accessor::ResponseText(StatusText::Status),
        ("responseStatus", "message") => Accessor::ResponseText(StatusText::Message),
        ("responseStatus", "reason") => Accessor::ResponseText(StatusText::Reason),
        ("requestObject", r) => Accessor::RequestObject(split(r)),
        ("responseObject", r) => Accessor::ResponseObject(split(r)),
        ("annotations", r) if !r.is_empty() => Accessor::Annotation(r.to_string()),
        _ => Accessor::Raw(split(name)),
    }
}

/// Visits every value at `path` below `v`, flattening arrays. Keys containing dots are found
/// by joining segments when the single segment is absent.
pub fn visit_json<'v>(v: &'v Value, path: &[String], f: &mut dyn FnMut(Val<'v>) -> bool) -> bool {
    match v {
        Value::Array(items) => {
            // A numeric segment indexes into the list; otherwise the path applies to each item.
            if let Some(first) = path.first() {
                if let Ok(i) = first.parse::<usize>() {
                    return items.get(i).is_some_and(|x| visit_json(x, &path[1..], f));
                }
            }
            items.iter().any(|x| visit_json(x, path, f))
        }
        Value::Object(map) if !path.is_empty() => {
            if let Some(x) = map.get(path[0].as_str()) {
                if visit_json(x, &path[1..], f) {
                    return true;
                }
            }
            let mut key = path[0].clone();
            for k in 1..path.len() {
                key.push('.');
                key.push_str(&path[k]);
                if let Some(x) = map.get(key.as_str()) {
                    if visit_json(x, &path[k + 1..], f) {
                        return true;
                    }
                }
            }
            false
        }
        _ if path.is_empty() => f(Val::from_json(v)),
        _ => false,
    }
}

fn visit_opt(s: Option<&str>, f: &mut dyn FnMut(Val<'_>) -> bool) -> bool {
    s.is_some_and(|s| f(Val::Str(s)))
}

fn visit_user(
    u: &super::event::UserInfo<'_>,
    which: &UserField,
    f: &mut dyn FnMut(Val<'_>) -> bool,
) -> bool {
    match which {
        UserField::Username => visit_opt(u.username.as_deref(), f),
        UserField::Uid => visit_opt(u.uid.as_deref(), f),
        UserField::Groups => u.groups.iter().any(|g| f(Val::Str(g))),
        UserField::Extra(key) => u.extra.as_ref().is_some_and(|x| match x.value() {
            // The key is taken whole (extra keys contain dots and slashes), then the list.
            Value::Object(m) => m.get(key.as_str()).is_some_and(|v| visit_json(v, &[], f)),
            _ => false,
        }),
        UserField::Other(_) => false,
    }
}

impl Document for AuditEvent<'_> {
    fn visit(&self, path: &FieldPath, f: &mut dyn FnMut(Val<'_>) -> bool) -> bool {
        let e = &self.fields;
        match &path.accessor {
            Accessor::Kind => visit_opt(e.kind.as_deref(), f),
            Accessor::ApiVersion => visit_opt(e.api_version.as_deref(), f),
            Accessor::Level => visit_opt(e.level.as_deref(), f),
            Accessor::AuditId => visit_opt(e.audit_id.as_deref(), f),
            Accessor::Stage => match e.stage {
                super::event::Stage::Unknown => false,
                s => f(Val::Str(s.as_str())),
            },
            Accessor::RequestUri => visit_opt(e.request_uri.as_deref(), f),
            Accessor::Verb => visit_opt(e.verb.as_deref(), f),
            Accessor::User(w) => visit_user(&e.user, w, f),
            Accessor::ImpersonatedUser(w) => e
                .impersonated_user
                .as_ref()
                .is_some_and(|u| visit_user(u, w, f)),
            Accessor::SourceIps => e.source_ips.iter().any(|ip| f(Val::Str(ip))),
            Accessor::UserAgent => visit_opt(e.user_agent.as_deref(), f),
            Accessor::ObjectRef(r) => {
                let Some(o) = e.object_ref.as_ref() else {
                    return false;
                };
                let v = match r {
                    RefField::Resource => &o.resource,
                    RefField::Namespace => &o.namespace,
                    RefField::Name => &o.name,
                    RefField::Uid => &o.uid,
                    RefField::ApiGroup => &o.api_group,
                    RefField::ApiVersion => &o.api_version,
                    RefField::ResourceVersion => &o.resource_version,
                    RefField::Subresource => &o.subresource,
                };
                visit_opt(v.as_deref(), f)
            }
            Accessor::ResponseCode => e
                .response_status
                .as_ref()
                .and_then(|s| s.code)
                .is_some_and(|c| f(Val::Int(c))),
            Accessor::ResponseText(t) => e.response_status.as_ref().is_some_and(|s| {
                let v = match t {
                    StatusText::Status => &s.status,
                    StatusText::Message => &s.message,
                    StatusText::Reason => &s.reason,
                };
                visit_opt(v.as_deref(), f)
            }),
            Accessor::RequestObject(p) => e
                .request_object
                .as_ref()
                .is_some_and(|o| visit_json(o.value(), p, f)),
            Accessor::ResponseObject(p) => e
                .response_object
                .as_ref()
                .is_some_and(|o| visit_json(o.value(), p, f)),
            Accessor::Annotation(key) => visit_opt(self.annotation(key), f),
            Accessor::RequestReceivedTimestamp => {
                visit_opt(e.request_received_timestamp.as_deref(), f)
            }
            Accessor::StageTimestamp => visit_opt(e.stage_timestamp.as_deref(), f),
            Accessor::Cluster => visit_opt(self.cluster.as_deref(), f),
            Accessor::Raw(p) => visit_json(self.raw.value(), p, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> AuditEvent<'static> {
        AuditEvent::parse(
            r#"{"auditID":"1","verb":"create","stage":"ResponseComplete",
            "user":{"username":"bob","groups":["a","system:masters"],"extra":{"authentication.kubernetes.io/pod-name":["p1"]}},
            "sourceIPs":["1.1.1.1","10.0.0.2"],
            "objectRef":{"resource":"pods","namespace":"kube-system"},
            "annotations":{"authorization.k8s.io/decision":"allow"},
            "requestObject":{"metadata":{"labels":{"app.kubernetes.io/name":"x"}},
              "spec":{"hostNetwork":true,"containers":[{"image":"nginx","securityContext":{"privileged":false}},
                                          {"image":"evil","securityContext":{"privileged":true}}],
                      "volumes":[{"name":"h","hostPath":{"path":"/"}}]}},
            "responseStatus":{"code":201},
            "somethingNew":{"deep":["q"]}}"#,
        )
        .unwrap()
        .into_owned()
    }

    fn all(e: &AuditEvent<'_>, p: &str) -> Vec<String> {
        let mut out = Vec::new();
        e.visit(&FieldPath::parse(p), &mut |v| {
            out.push(format!("{v:?}"));
            false
        });
        out
    }

    #[test]
    fn typed_paths() {
        let e = ev();
        assert_eq!(all(&e, "verb"), vec![r#"Str("create")"#]);
        assert_eq!(all(&e, "user.groups").len(), 2);
        assert_eq!(all(&e, "sourceIPs").len(), 2);
        assert_eq!(all(&e, "responseStatus.code"), vec!["Int(201)"]);
        assert_eq!(
            all(&e, "annotations.authorization.k8s.io/decision"),
            vec![r#"Str("allow")"#]
        );
        assert_eq!(
            all(&e, "user.extra.authentication.kubernetes.io/pod-name"),
            vec![r#"Str("p1")"#]
        );
        assert_eq!(
            all(&e, "objectRef.namespace"),
            vec![r#"Str("kube-system")"#]
        );
        assert!(all(&e, "objectRef.subresource").is_empty());
    }

    #[test]
    fn nested_lists_flatten() {
        let e = ev();
        assert_eq!(
            all(
                &e,
                "requestObject.spec.containers.securityContext.privileged"
            ),
            vec!["Bool(false)", "Bool(true)"]
        );
        assert_eq!(
            all(&e, "requestObject.spec.containers.1.image"),
            vec![r#"Str("evil")"#]
        );
        assert_eq!(
            all(&e, "requestObject.spec.volumes.hostPath"),
            vec!["Object"]
        );
        assert_eq!(
            all(&e, "requestObject.metadata.labels.app.kubernetes.io/name"),
            vec![r#"Str("x")"#]
        );
        assert_eq!(all(&e, "somethingNew.deep"), vec![r#"Str("q")"#]);
        assert!(e.exists(&FieldPath::parse("requestObject.spec.hostNetwork")));
        assert!(!e.exists(&FieldPath::parse("requestObject.spec.hostPID")));
    }
}
