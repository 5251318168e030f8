//! The typed `audit.k8s.io/v1` Event, parsed once and borrowed from the input buffer.
//!
//! Why borrowed: `scan` reads hundreds of thousands of events per second and most string
//! fields contain no JSON escapes, so `Cow<'a, str>` lets serde hand out slices of the line
//! buffer instead of allocating. The request and response bodies are kept as raw JSON and
//! parsed only when a rule asks for a field inside them (most events never need it).
//!
//! Events that must outlive their buffer (the webhook hands them to worker tasks) are
//! converted with [`AuditEvent::into_owned`].

use std::borrow::Cow;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The processing stage an event was emitted at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize)]
pub enum Stage {
    /// The API server received the request, before any handling.
    RequestReceived,
    /// Headers were sent for a long-running request (watch, exec, ...); also the only
    /// stage of a failed authentication.
    ResponseStarted,
    /// The response is complete.
    ResponseComplete,
    /// A panic happened while handling the request.
    Panic,
    /// The stage field was absent (hand-written or normalised samples).
    #[default]
    Unknown,
}

impl Stage {
    /// Parses the wire name; unknown names map to [`Stage::Unknown`].
    pub fn from_name(s: &str) -> Stage {
        match s {
            "RequestReceived" => Stage::RequestReceived,
            "ResponseStarted" => Stage::ResponseStarted,
            "ResponseComplete" => Stage::ResponseComplete,
            "Panic" => Stage::Panic,
            _ => Stage::Unknown,
        }
    }

    /// Parses a name as written in a rule or config, case-insensitively.
    pub fn parse_config(s: &str) -> Option<Stage> {
        [
            Stage::RequestReceived,
            Stage::ResponseStarted,
            Stage::ResponseComplete,
            Stage::Panic,
        ]
        .into_iter()
        .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
            Stage::Unknown => "",
        }
    }

    /// A small bit mask, so that a rule's accepted stages are one integer test.
    pub fn bit(self) -> u8 {
        match self {
            Stage::RequestReceived => 1,
            Stage::ResponseStarted => 2,
            Stage::ResponseComplete => 4,
            Stage::Panic => 8,
            Stage::Unknown => 16,
        }
    }
}

impl<'de> Deserialize<'de> for Stage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Cow<'de, str> = de_cow(d)?;
        Ok(Stage::from_name(&s))
    }
}

/// Deserializes a string, borrowing when it has no escapes.
fn de_cow<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
    }
    d.deserialize_str(V)
}

/// `null` or a string, borrowing when possible.
fn de_opt_cow<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct W<'a>(#[serde(borrow, deserialize_with = "de_cow")] Cow<'a, str>);
    Ok(Option::<W<'de>>::deserialize(d)?.map(|w| w.0))
}

/// A list of strings (null counts as empty), borrowing when possible.
fn de_cow_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct W<'a>(#[serde(borrow, deserialize_with = "de_cow")] Cow<'a, str>);
    Ok(Option::<Vec<W<'de>>>::deserialize(d)?
        .unwrap_or_default()
        .into_iter()
        .map(|w| w.0)
        .collect())
}

/// A JSON value kept as text until a rule needs to look inside it.
#[derive(Debug)]
pub struct RawJson<'a> {
    text: Cow<'a, str>,
    parsed: OnceLock<Value>,
}

impl<'a> RawJson<'a> {
    /// Wraps JSON text that is known to be valid.
    pub fn new(text: Cow<'a, str>) -> Self {
        RawJson {
            text,
            parsed: OnceLock::new(),
        }
    }
    /// The JSON text as received.
    pub fn text(&self) -> &str {
        &self.text
    }
    /// The parsed value; parsed on first use. The text was validated by serde when the
    /// event was read, so the fallback to `Null` is unreachable in practice.
    pub fn value(&self) -> &Value {
        self.parsed
            .get_or_init(|| serde_json::from_str(&self.text).unwrap_or(Value::Null))
    }
    /// Detaches from the input buffer.
    pub fn into_owned(self) -> RawJson<'static> {
        RawJson {
            text: Cow::Owned(self.text.into_owned()),
            parsed: self.parsed,
        }
    }
}

impl Clone for RawJson<'_> {
    fn clone(&self) -> Self {
        RawJson {
            text: self.text.clone(),
            parsed: self.parsed.clone(),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawJson<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        Ok(RawJson::new(Cow::Borrowed(raw.get())))
    }
}

/// `authentication/v1` UserInfo.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserInfo<'a> {
    /// The user name, e.g. `system:serviceaccount:ns:name`.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub username: Option<Cow<'a, str>>,
    /// The user's UID.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub uid: Option<Cow<'a, str>>,
    /// Group memberships.
    #[serde(borrow, default, deserialize_with = "de_cow_list")]
    pub groups: Vec<Cow<'a, str>>,
    /// Authenticator-specific extra values (EKS puts the IAM ARN here).
    #[serde(borrow, default)]
    pub extra: Option<RawJson<'a>>,
}

impl UserInfo<'_> {
    fn into_owned(self) -> UserInfo<'static> {
        UserInfo {
            username: self.username.map(own),
            uid: self.uid.map(own),
            groups: self.groups.into_iter().map(own).collect(),
            extra: self.extra.map(RawJson::into_owned),
        }
    }
}

/// The object a request refers to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef<'a> {
    /// Resource plural, e.g. `pods`.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub resource: Option<Cow<'a, str>>,
    /// Namespace, absent for cluster-scoped objects.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub namespace: Option<Cow<'a, str>>,
    /// Object name.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub name: Option<Cow<'a, str>>,
    /// Object UID.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub uid: Option<Cow<'a, str>>,
    /// API group, `""` for the core group.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub api_group: Option<Cow<'a, str>>,
    /// API version.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub api_version: Option<Cow<'a, str>>,
    /// Resource version.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub resource_version: Option<Cow<'a, str>>,
    /// Subresource, e.g. `exec`.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub subresource: Option<Cow<'a, str>>,
}

impl ObjectRef<'_> {
    fn into_owned(self) -> ObjectRef<'static> {
        ObjectRef {
            resource: self.resource.map(own),
            namespace: self.namespace.map(own),
            name: self.name.map(own),
            uid: self.uid.map(own),
            api_group: self.api_group.map(own),
            api_version: self.api_version.map(own),
            resource_version: self.resource_version.map(own),
            subresource: self.subresource.map(own),
        }
    }
}

/// The part of meta/v1 Status that rules and alerts use.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponseStatus<'a> {
    /// HTTP status code.
    #[serde(default)]
    pub code: Option<i64>,
    /// `Success` or `Failure`.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub status: Option<Cow<'a, str>>,
    /// Human-readable message.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub message: Option<Cow<'a, str>>,
    /// Machine-readable reason, e.g. `Forbidden`.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub reason: Option<Cow<'a, str>>,
}

impl ResponseStatus<'_> {
    fn into_owned(self) -> ResponseStatus<'static> {
        ResponseStatus {
            code: self.code,
            status: self.status.map(own),
            message: self.message.map(own),
            reason: self.reason.map(own),
        }
    }
}

/// The wire form of an Event: exactly the fields of `audit.k8s.io/v1` that the engine reads
/// directly. Unknown keys are ignored here and stay reachable through the raw text.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFields<'a> {
    /// `Event`, or absent in webhook EventList items.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub kind: Option<Cow<'a, str>>,
    /// `audit.k8s.io/v1` or `v1beta1`; absent in webhook items.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub api_version: Option<Cow<'a, str>>,
    /// None|Metadata|Request|RequestResponse.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub level: Option<Cow<'a, str>>,
    /// Request UID (client-controlled through the Audit-ID header: not unique).
    #[serde(borrow, default, rename = "auditID", deserialize_with = "de_opt_cow")]
    pub audit_id: Option<Cow<'a, str>>,
    /// Stage of this event.
    #[serde(default = "unknown_stage")]
    pub stage: Stage,
    /// The request URI as sent by the client.
    #[serde(
        borrow,
        default,
        rename = "requestURI",
        deserialize_with = "de_opt_cow"
    )]
    pub request_uri: Option<Cow<'a, str>>,
    /// Kubernetes verb (`get`, `list`, `create`, ...).
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub verb: Option<Cow<'a, str>>,
    /// The authenticated user.
    #[serde(borrow, default)]
    pub user: UserInfo<'a>,
    /// The user being impersonated, if any.
    #[serde(borrow, default)]
    pub impersonated_user: Option<UserInfo<'a>>,
    /// Source IPs; all but the last are client-controlled.
    #[serde(
        borrow,
        default,
        rename = "sourceIPs",
        deserialize_with = "de_cow_list"
    )]
    pub source_ips: Vec<Cow<'a, str>>,
    /// User agent as reported by the client.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub user_agent: Option<Cow<'a, str>>,
    /// The object the request refers to.
    #[serde(borrow, default)]
    pub object_ref: Option<ObjectRef<'a>>,
    /// Response status.
    #[serde(borrow, default)]
    pub response_status: Option<ResponseStatus<'a>>,
    /// Request body (Request level and above). For patches this may be a JSON array.
    #[serde(borrow, default)]
    pub request_object: Option<RawJson<'a>>,
    /// Response body (RequestResponse level).
    #[serde(borrow, default)]
    pub response_object: Option<RawJson<'a>>,
    /// When the request reached the API server.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub request_received_timestamp: Option<Cow<'a, str>>,
    /// When this stage was reached.
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub stage_timestamp: Option<Cow<'a, str>>,
    /// v1alpha1-era `timestamp` (old captures only).
    #[serde(borrow, default, deserialize_with = "de_opt_cow")]
    pub timestamp: Option<Cow<'a, str>>,
    /// Annotations, e.g. `authorization.k8s.io/decision`.
    #[serde(borrow, default)]
    pub annotations: Option<RawJson<'a>>,
}

fn unknown_stage() -> Stage {
    Stage::Unknown
}

fn own(c: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(c.into_owned())
}

/// One audit event: the typed fields, the raw text (for fields outside the typed schema) and
/// the cluster it came from.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    /// The typed fields.
    pub fields: EventFields<'a>,
    /// The whole event as JSON text (after unwrapping GKE/AKS envelopes).
    pub raw: RawJson<'a>,
    /// The cluster name (from the webhook path, config, or `None` for scan/tail without one).
    pub cluster: Option<std::sync::Arc<str>>,
}

/// Why an event could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// Not valid JSON, or a field of the wrong type.
    #[error("invalid event: {0}")]
    Invalid(String),
    /// JSON that is not an audit Event at all.
    #[error("not an audit event: {0}")]
    NotAnEvent(String),
    /// An event larger than the configured limit.
    #[error("event of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the event.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl<'a> AuditEvent<'a> {
    /// Parses one event from JSON text that holds exactly one object.
    pub fn parse(text: &'a str) -> Result<AuditEvent<'a>, EventError> {
        Self::parse_cow(Cow::Borrowed(text))
    }

    /// Parses one event from text that may be borrowed or owned.
    pub fn parse_cow(text: Cow<'a, str>) -> Result<AuditEvent<'a>, EventError> {
        match text {
            Cow::Borrowed(t) => {
                let fields: EventFields<'a> =
                    serde_json::from_str(t).map_err(|e| EventError::Invalid(e.to_string()))?;
                check_event(&fields)?;
                Ok(AuditEvent {
                    fields,
                    raw: RawJson::new(Cow::Borrowed(t)),
                    cluster: None,
                })
            }
            Cow::Owned(t) => {
                // Parse borrowed from the local string, then detach: one extra copy of the
                // strings, only on the (rare) unwrap path.
                let fields = {
                    let f: EventFields<'_> =
                        serde_json::from_str(&t).map_err(|e| EventError::Invalid(e.to_string()))?;
                    check_event(&f)?;
                    f.into_owned()
                };
                Ok(AuditEvent {
                    fields,
                    raw: RawJson::new(Cow::Owned(t)),
                    cluster: None,
                })
            }
        }
    }

    /// Detaches the event from its input buffer.
    pub fn into_owned(self) -> AuditEvent<'static> {
        AuditEvent {
            fields: self.fields.into_owned(),
            raw: self.raw.into_owned(),
            cluster: self.cluster,
        }
    }

    /// The stage.
    pub fn stage(&self) -> Stage {
        self.fields.stage
    }

    /// The verb, or `""`.
    pub fn verb(&self) -> &str {
        self.fields.verb.as_deref().unwrap_or("")
    }

    /// `objectRef.resource`, or `""`.
    pub fn resource(&self) -> &str {
        self.fields
            .object_ref
            .as_ref()
            .and_then(|o| o.resource.as_deref())
            .unwrap_or("")
    }

    /// The auditID, or `""`.
    pub fn audit_id(&self) -> &str {
        self.fields.audit_id.as_deref().unwrap_or("")
    }

    /// The acting user name, or `""`.
    pub fn username(&self) -> &str {
        self.fields.user.username.as_deref().unwrap_or("")
    }

    /// One annotation value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.fields
            .annotations
            .as_ref()
            .and_then(|a| a.value().get(key))
            .and_then(Value::as_str)
    }

    /// Event time: `stageTimestamp`, else `requestReceivedTimestamp`, else the v1alpha1
    /// `timestamp`. `None` when none parses.
    pub fn event_time(&self) -> Option<DateTime<Utc>> {
        let f = &self.fields;
        [
            &f.stage_timestamp,
            &f.request_received_timestamp,
            &f.timestamp,
        ]
        .into_iter()
        .filter_map(|t| t.as_deref())
        .find_map(parse_timestamp)
    }
}

impl EventFields<'_> {
    /// Detaches from the input buffer.
    pub fn into_owned(self) -> EventFields<'static> {
        EventFields {
            kind: self.kind.map(own),
            api_version: self.api_version.map(own),
            level: self.level.map(own),
            audit_id: self.audit_id.map(own),
            stage: self.stage,
            request_uri: self.request_uri.map(own),
            verb: self.verb.map(own),
            user: self.user.into_owned(),
            impersonated_user: self.impersonated_user.map(UserInfo::into_owned),
            source_ips: self.source_ips.into_iter().map(own).collect(),
            user_agent: self.user_agent.map(own),
            object_ref: self.object_ref.map(ObjectRef::into_owned),
            response_status: self.response_status.map(ResponseStatus::into_owned),
            request_object: self.request_object.map(RawJson::into_owned),
            response_object: self.response_object.map(RawJson::into_owned),
            request_received_timestamp: self.request_received_timestamp.map(own),
            stage_timestamp: self.stage_timestamp.map(own),
            timestamp: self.timestamp.map(own),
            annotations: self.annotations.map(RawJson::into_owned),
        }
    }
}

/// Rejects JSON objects that are clearly not audit events: a `kind` other than `Event`,
/// an `apiVersion` outside the audit group, or an object with none of the fields that
/// every audit event has.
fn check_event(f: &EventFields<'_>) -> Result<(), EventError> {
    if let Some(kind) = f.kind.as_deref() {
        if kind != "Event" {
            return Err(EventError::NotAnEvent(format!("kind is {kind:?}")));
        }
    }
    if let Some(v) = f.api_version.as_deref() {
        if !v.starts_with("audit.k8s.io/") {
            return Err(EventError::NotAnEvent(format!("apiVersion is {v:?}")));
        }
    }
    if f.verb.is_none() && f.audit_id.is_none() && f.request_uri.is_none() {
        return Err(EventError::NotAnEvent(
            "none of verb, auditID or requestURI is present".into(),
        ));
    }
    Ok(())
}

/// Parses an audit timestamp: RFC 3339 (MicroTime), or the space-separated form some
/// log pipelines rewrite it to (`2022-11-29 00:09:04.38`, read as UTC).
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|fmt| NaiveDateTime::parse_from_str(s, fmt).ok())
        .map(|n| n.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EV: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods","verb":"list","user":{"username":"alice","groups":["dev","system:authenticated"]},"sourceIPs":["10.0.0.1"],"userAgent":"kubectl/v1.30","objectRef":{"resource":"pods","namespace":"default","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-01-02T03:04:05.000001Z","stageTimestamp":"2026-01-02T03:04:05.100000Z","annotations":{"authorization.k8s.io/decision":"allow"}}"#;

    #[test]
    fn parses_and_borrows() {
        let e = AuditEvent::parse(EV).unwrap();
        assert_eq!(e.verb(), "list");
        assert_eq!(e.resource(), "pods");
        assert_eq!(e.stage(), Stage::ResponseComplete);
        assert!(matches!(e.fields.verb, Some(Cow::Borrowed(_))));
        assert_eq!(e.annotation("authorization.k8s.io/decision"), Some("allow"));
        assert_eq!(
            e.event_time().unwrap().to_rfc3339(),
            "2026-01-02T03:04:05.100+00:00"
        );
    }

    #[test]
    fn escaped_strings_are_owned_and_correct() {
        let e = AuditEvent::parse(
            r#"{"auditID":"x","verb":"get","requestURI":"/a?x=1\u0026y=\u003c"}"#,
        )
        .unwrap();
        assert_eq!(e.fields.request_uri.as_deref(), Some("/a?x=1&y=<"));
    }

    #[test]
    fn wrong_types_are_errors_not_panics() {
        for bad in [
            r#"{"kind": 0}"#,
            r#"{"verb": 5}"#,
            r#"{"verb":"get","user":"bob"}"#,
            r#"{"verb":"get","sourceIPs":"1.2.3.4"}"#,
            r#"[1,2]"#,
            r#"{"kind":"Pod","verb":"get"}"#,
            r#"{"foo":1}"#,
        ] {
            assert!(AuditEvent::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn owned_round_trip() {
        let owned = AuditEvent::parse(EV).unwrap().into_owned();
        assert_eq!(owned.username(), "alice");
        assert_eq!(owned.fields.user.groups.len(), 2);
    }

    #[test]
    fn timestamps() {
        assert!(parse_timestamp("2022-11-29 00:09:04.38").is_some());
        assert!(parse_timestamp("2017-09-11T19:55:05Z").is_some());
        assert!(parse_timestamp("yesterday").is_none());
    }
}
