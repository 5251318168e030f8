//! Cloud-logging envelopes around audit events, normalised to the audit Event schema.
//!
//! - **AKS** diagnostic logs (`kube-audit`, `kube-audit-admin`) carry the event in
//!   `properties.log`, as a JSON string or (in some exports) an object.
//! - **GKE** Cloud Logging entries carry a `google.cloud.audit.AuditLog` in `protoPayload`
//!   with `serviceName: k8s.io`. We map it back to an Event the way Falco's `k8sauditgke`
//!   converter does: verb from the last segment of `methodName`, objectRef from
//!   `resourceName`, user from `principalEmail`, annotations from `labels`, and the HTTP code
//!   from the gRPC status.
//! - **EKS** CloudWatch exports carry the audit line unchanged in `message`.

use serde_json::{json, Map, Value};

/// If `v` is a known envelope, returns the inner event as JSON text (or why it cannot be
/// unwrapped). `None` when `v` is no envelope we know.
pub fn unwrap(v: &Value) -> Option<Result<String, String>> {
    let obj = v.as_object()?;
    if let Some(log) = obj.get("properties").and_then(|p| p.get("log")) {
        return Some(match log {
            Value::String(s) => Ok(s.clone()),
            Value::Object(_) => Ok(log.to_string()),
            _ => Err("AKS properties.log is neither a string nor an object".into()),
        });
    }
    if let Some(pp) = obj.get("protoPayload") {
        if pp.get("serviceName").and_then(Value::as_str) == Some("k8s.io") {
            return Some(Ok(gke_to_event(obj, pp).to_string()));
        }
        return Some(Err("protoPayload of a service other than k8s.io".into()));
    }
    if let Some(Value::String(msg)) = obj.get("message") {
        if msg.trim_start().starts_with('{') && msg.contains("audit.k8s.io") {
            return Some(Ok(msg.clone()));
        }
    }
    None
}

/// gRPC status code to HTTP code, as the API server would have answered.
fn grpc_to_http(code: i64) -> i64 {
    match code {
        0 => 200,
        3 => 400,
        5 => 404,
        6 => 409,
        7 => 403,
        8 => 429,
        9 => 400,
        10 => 409,
        12 => 501,
        13 => 500,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

fn gke_to_event(entry: &Map<String, Value>, pp: &Value) -> Value {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let method = s(pp.get("methodName")).unwrap_or_default();
    // io.k8s.core.v1.pods.exec.create -> verb "create"; io.k8s.get -> "get".
    let verb = method.rsplit('.').next().unwrap_or("").to_string();
    let resource_name = s(pp.get("resourceName")).unwrap_or_default();
    let mut object_ref = Map::new();
    // core/v1/namespaces/NS/pods/NAME[/sub] or apps/v1/namespaces/NS/daemonsets/NAME
    let parts: Vec<&str> = resource_name.split('/').collect();
    let mut request_uri = format!("/{resource_name}");
    if parts.len() >= 3 && parts[1].starts_with('v') {
        let group = if parts[0] == "core" { "" } else { parts[0] };
        object_ref.insert("apiGroup".into(), json!(group));
        object_ref.insert("apiVersion".into(), json!(parts[1]));
        let mut rest = &parts[2..];
        if rest.len() >= 2 && rest[0] == "namespaces" && rest.len() > 2 {
            object_ref.insert("namespace".into(), json!(rest[1]));
            rest = &rest[2..];
        }
        if let Some(r) = rest.first() {
            object_ref.insert("resource".into(), json!(r));
        }
        if let Some(n) = rest.get(1) {
            object_ref.insert("name".into(), json!(n));
        }
        if let Some(sub) = rest.get(2) {
            object_ref.insert("subresource".into(), json!(sub));
        }
        let prefix = if group.is_empty() {
            "/api".to_string()
        } else {
            format!("/apis/{group}")
        };
        request_uri = format!("{prefix}/{}/{}", parts[1], parts[2..].join("/"));
    }
    let code = pp
        .get("status")
        .and_then(|st| st.get("code"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut ev = Map::new();
    ev.insert("kind".into(), json!("Event"));
    ev.insert("apiVersion".into(), json!("audit.k8s.io/v1"));
    // Cloud Logging does not carry the audit level; a body means Request or more.
    let level = if pp.get("response").is_some() {
        "RequestResponse"
    } else if pp.get("request").is_some() {
        "Request"
    } else {
        "Metadata"
    };
    ev.insert("level".into(), json!(level));
    let audit_id = entry
        .get("operation")
        .and_then(|o| o.get("id"))
        .or_else(|| entry.get("insertId"))
        .cloned()
        .unwrap_or(Value::Null);
    ev.insert("auditID".into(), audit_id);
    ev.insert("stage".into(), json!("ResponseComplete"));
    ev.insert("requestURI".into(), json!(request_uri));
    ev.insert("verb".into(), json!(verb));
    let principal = pp
        .get("authenticationInfo")
        .and_then(|a| a.get("principalEmail"))
        .cloned()
        .unwrap_or(Value::Null);
    ev.insert("user".into(), json!({ "username": principal }));
    let meta = pp.get("requestMetadata");
    let ip = meta.and_then(|m| m.get("callerIp").or_else(|| m.get("callerIP")));
    if let Some(ip) = ip {
        ev.insert("sourceIPs".into(), json!([ip]));
    }
    if let Some(ua) = meta.and_then(|m| m.get("callerSuppliedUserAgent")) {
        ev.insert("userAgent".into(), ua.clone());
    }
    if !object_ref.is_empty() {
        ev.insert("objectRef".into(), Value::Object(object_ref));
    }
    ev.insert(
        "responseStatus".into(),
        json!({ "metadata": {}, "code": grpc_to_http(code) }),
    );
    if let Some(r) = pp.get("request") {
        ev.insert("requestObject".into(), r.clone());
    }
    if let Some(r) = pp.get("response") {
        ev.insert("responseObject".into(), r.clone());
    }
    if let Some(ts) = entry.get("timestamp") {
        ev.insert("requestReceivedTimestamp".into(), ts.clone());
        ev.insert("stageTimestamp".into(), ts.clone());
    }
    if let Some(l) = entry.get("labels") {
        ev.insert("annotations".into(), l.clone());
    }
    if let Some(cluster) = entry
        .get("resource")
        .and_then(|r| r.get("labels"))
        .and_then(|l| l.get("cluster_name"))
    {
        ev.insert("gkeClusterName".into(), cluster.clone());
    }
    Value::Object(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::AuditEvent;

    #[test]
    fn gke_pod_exec() {
        let v: Value = serde_json::from_str(
            r#"{"protoPayload":{"serviceName":"k8s.io","methodName":"io.k8s.core.v1.pods.exec.create",
            "resourceName":"core/v1/namespaces/kube-system/pods/etcd-0/exec",
            "authenticationInfo":{"principalEmail":"eve@example.com"},
            "requestMetadata":{"callerIp":"1.2.3.4","callerSuppliedUserAgent":"kubectl"},
            "status":{"code":7}},"insertId":"i1","timestamp":"2025-07-13T08:38:39.127266Z",
            "labels":{"authorization.k8s.io/decision":"forbid"}}"#,
        )
        .unwrap();
        let text = unwrap(&v).unwrap().unwrap();
        let e = AuditEvent::parse(&text).unwrap();
        assert_eq!(e.verb(), "create");
        assert_eq!(e.resource(), "pods");
        let o = e.fields.object_ref.as_ref().unwrap();
        assert_eq!(o.namespace.as_deref(), Some("kube-system"));
        assert_eq!(o.subresource.as_deref(), Some("exec"));
        assert_eq!(e.fields.response_status.as_ref().unwrap().code, Some(403));
        assert_eq!(
            e.annotation("authorization.k8s.io/decision"),
            Some("forbid")
        );
        assert_eq!(
            e.fields.request_uri.as_deref(),
            Some("/api/v1/namespaces/kube-system/pods/etcd-0/exec")
        );
    }

    #[test]
    fn aks_string_and_object() {
        let inner = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"z","verb":"get"}"#;
        let s: Value = json!({"category":"kube-audit","properties":{"log": inner}});
        assert_eq!(unwrap(&s).unwrap().unwrap(), inner);
        let o: Value = json!({"properties":{"log": serde_json::from_str::<Value>(inner).unwrap()}});
        assert!(AuditEvent::parse(&unwrap(&o).unwrap().unwrap()).is_ok());
    }
}
