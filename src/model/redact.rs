//! Redaction of secret material before anything leaves the process.
//!
//! Audit events at Request/RequestResponse level can carry a Secret's `data` and
//! `stringData`, a TokenRequest's minted token, a TokenReview's bearer token, and the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation of a Secret (which holds
//! the whole Secret again, as a string). Anything that writes event content out (raw-event
//! forwarding, rendered rule outputs, Kafka) passes the event through [`redact_event`]
//! first; alerts never copy bodies and pass the request URI through [`redact_uri`].
//!
//! Rules still see the unredacted event inside the process, so a rule can look for, say, a
//! credential pattern in a ConfigMap; only the copy that leaves is redacted.

use std::borrow::Cow;

use serde_json::Value;

/// The replacement text.
pub const REDACTED: &str = "***REDACTED***";

/// Keys whose string values are always secret, wherever they appear in a body.
const SECRET_KEYS: &[&str] = &[
    "token",
    "password",
    "passwd",
    "client-key-data",
    "private_key",
    "privateKey",
    "secret_access_key",
    "aws_secret_access_key",
    "apiKey",
    "api_key",
    "clientSecret",
    "client_secret",
    "bearerToken",
];

/// Query parameters of a request URI whose values are secret.
const SECRET_PARAMS: &[&str] = &["token", "access_token", "password", "client_secret"];

fn is_secret_key(k: &str) -> bool {
    SECRET_KEYS.iter().any(|s| s.eq_ignore_ascii_case(k))
}

/// Redacts `event` (an audit Event as JSON) in place. Returns how many values were replaced.
pub fn redact_event(event: &mut Value) -> usize {
    let resource = event
        .pointer("/objectRef/resource")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut n = 0;
    if let Some(uri) = event.get_mut("requestURI") {
        if let Some(s) = uri.as_str() {
            if let Cow::Owned(r) = redact_uri(s) {
                *uri = Value::String(r);
                n += 1;
            }
        }
    }
    for key in ["requestObject", "responseObject"] {
        if let Some(body) = event.get_mut(key) {
            n += redact_body(body, resource == "secrets");
        }
    }
    n
}

/// Redacts a request or response body. `is_secret` is true when the object is a Secret (or
/// a list of them, or a patch of one): then every `data`/`stringData` value, every JSON-patch
/// `value`, and the last-applied annotation go too.
pub fn redact_body(body: &mut Value, is_secret: bool) -> usize {
    let secret_kind = is_secret
        || matches!(
            body.get("kind").and_then(Value::as_str),
            Some("Secret" | "SecretList")
        );
    let mut n = 0;
    walk(body, secret_kind, &mut n);
    n
}

fn walk(v: &mut Value, secret: bool, n: &mut usize) {
    match v {
        Value::Object(map) => {
            let item_is_secret =
                secret || map.get("kind").and_then(Value::as_str) == Some("Secret");
            for (k, child) in map.iter_mut() {
                let whole = (item_is_secret
                    && (k == "data"
                        || k == "stringData"
                        || k == "kubectl.kubernetes.io/last-applied-configuration"
                        || (k == "value" && !child.is_object())))
                    || (is_secret_key(k) && child.is_string());
                if whole {
                    blank(child, n);
                } else {
                    walk(child, item_is_secret, n);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| walk(x, secret, n)),
        _ => {}
    }
}

/// Replaces every scalar below `v` with [`REDACTED`], keeping map keys (analysts want to
/// know *which* keys a Secret holds, not their values).
fn blank(v: &mut Value, n: &mut usize) {
    match v {
        Value::Object(m) => m.values_mut().for_each(|x| blank(x, n)),
        Value::Array(a) => a.iter_mut().for_each(|x| blank(x, n)),
        Value::Null => {}
        _ => {
            *v = Value::String(REDACTED.to_string());
            *n += 1;
        }
    }
}

/// Redacts secret query parameters (`?token=...`) in a request URI.
pub fn redact_uri(uri: &str) -> Cow<'_, str> {
    let Some((path, query)) = uri.split_once('?') else {
        return Cow::Borrowed(uri);
    };
    let mut changed = false;
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.iter().any(|s| s.eq_ignore_ascii_case(k)) => {
                changed = true;
                format!("{k}={REDACTED}")
            }
            _ => kv.to_string(),
        })
        .collect();
    if changed {
        Cow::Owned(format!("{path}?{}", parts.join("&")))
    } else {
        Cow::Borrowed(uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_data_and_last_applied() {
        let mut ev = json!({
            "objectRef": {"resource": "secrets"},
            "requestObject": {"kind": "Secret", "metadata": {"name": "db", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"pw\":\"aHVudGVyMg==\"}}"}},
                "data": {"pw": "aHVudGVyMg=="}, "stringData": {"user": "root"}},
            "responseObject": {"kind": "SecretList", "items": [{"data": {"k": "c2VjcmV0"}}]}
        });
        let n = redact_event(&mut ev);
        let s = ev.to_string();
        assert!(!s.contains("aHVudGVyMg=="), "{s}");
        assert!(!s.contains("c2VjcmV0"));
        assert!(!s.contains("root"));
        assert!(s.contains("\"pw\""), "keys stay");
        assert_eq!(ev["requestObject"]["metadata"]["name"], "db");
        assert_eq!(n, 4);
    }

    #[test]
    fn secret_patch_values() {
        let mut ev = json!({"objectRef": {"resource": "secrets"},
            "requestObject": [{"op": "replace", "path": "/data/pw", "value": "bmV3"}]});
        redact_event(&mut ev);
        assert!(!ev.to_string().contains("bmV3"));
    }

    #[test]
    fn token_request_and_review() {
        let mut ev = json!({"objectRef": {"resource": "serviceaccounts", "subresource": "token"},
            "responseObject": {"kind": "TokenRequest", "status": {"token": "eyJhbGciOi", "expirationTimestamp": "x"}}});
        redact_event(&mut ev);
        assert!(!ev.to_string().contains("eyJhbGciOi"));
        let mut tr = json!({"objectRef": {"resource": "tokenreviews"},
            "requestObject": {"kind": "TokenReview", "spec": {"token": "abc.def"}}});
        redact_event(&mut tr);
        assert!(!tr.to_string().contains("abc.def"));
    }

    #[test]
    fn configmap_data_is_kept_but_password_keys_go() {
        let mut ev = json!({"objectRef": {"resource": "configmaps"},
            "requestObject": {"kind": "ConfigMap", "data": {"mode": "fast", "password": "pw1"}}});
        redact_event(&mut ev);
        assert_eq!(ev["requestObject"]["data"]["mode"], "fast");
        assert_eq!(ev["requestObject"]["data"]["password"], REDACTED);
    }

    #[test]
    fn uri() {
        assert_eq!(redact_uri("/api?watch=1"), "/api?watch=1");
        assert_eq!(
            redact_uri("/x?token=abc&watch=1"),
            format!("/x?token={REDACTED}&watch=1")
        );
    }
}
