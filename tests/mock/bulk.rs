//! A strict Elasticsearch `_bulk` mock: `create` actions only, stable `_id`s (409 on a
//! second create), per-item failures on demand, `GET /` and index templates.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::{Common, Handler, Reply, Req, Special};

/// The mock's settings and what it stored.
#[derive(Debug, Default)]
pub struct Bulk {
    /// Shared script/outage/violations.
    pub common: Common,
    /// The exact Authorization header expected (None: no auth).
    pub auth: Option<String>,
    /// Documents by `_id`: (index, source).
    pub docs: Mutex<HashMap<String, (String, Value)>>,
    /// 201s answered per `_id` (must stay 1).
    pub created: Mutex<HashMap<String, u64>>,
    /// 409s answered.
    pub conflicts: AtomicU64,
    /// `_bulk` requests accepted.
    pub batches: AtomicU64,
    /// Index templates installed (name, body).
    pub templates: Mutex<Vec<(String, Value)>>,
    /// Benchmarks: validate each source as JSON without building it, keep only ids.
    pub count_only: bool,
}

impl Bulk {
    /// A mock expecting `auth` as the Authorization header.
    pub fn new(auth: Option<&str>) -> Bulk {
        Bulk {
            auth: auth.map(str::to_string),
            ..Bulk::default()
        }
    }

    fn check_auth(&self, r: &Req) -> Option<Reply> {
        let want = self.auth.as_deref()?;
        if r.header("authorization") == Some(want) {
            None
        } else {
            Some(Reply::json(
                401,
                r#"{"error":{"root_cause":[{"type":"security_exception","reason":"unable to authenticate"}],"type":"security_exception","reason":"unable to authenticate"},"status":401}"#,
            ))
        }
    }

    fn bulk(&self, r: &Req, special: Option<Special>) -> Reply {
        if let Some(rep) = self.check_auth(r) {
            return rep;
        }
        let ct = r.header("content-type").unwrap_or("");
        if !(ct.starts_with("application/x-ndjson") || ct.starts_with("application/json")) {
            self.common.violation(format!("_bulk content-type {ct:?}"));
            return Reply::json(
                406,
                r#"{"error":"Content-Type header is not supported","status":406}"#,
            );
        }
        if r.body.last() != Some(&b'\n') {
            self.common
                .violation("_bulk body must end with a newline".into());
            return Reply::json(
                400,
                r#"{"error":{"type":"illegal_argument_exception","reason":"The bulk request must be terminated by a newline [\\n]"},"status":400}"#,
            );
        }
        let text = String::from_utf8_lossy(&r.body);
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() % 2 != 0 {
            self.common.violation("_bulk: odd number of lines".into());
            return Reply::json(
                400,
                r#"{"error":{"type":"illegal_argument_exception","reason":"Malformed action/metadata line"},"status":400}"#,
            );
        }
        if self.count_only && special.is_none() {
            return self.bulk_counting(&lines);
        }
        let fail: HashMap<usize, (u16, &'static str)> = match special {
            Some(Special::BulkItems(v)) => v.into_iter().map(|(i, s, t)| (i, (s, t))).collect(),
            _ => HashMap::new(),
        };
        let mut items = Vec::new();
        let mut errors = false;
        for (i, pair) in lines.chunks(2).enumerate() {
            let action: Value = match serde_json::from_str(pair[0]) {
                Ok(v) => v,
                Err(e) => {
                    self.common
                        .violation(format!("_bulk action {i} not JSON: {e}"));
                    return Reply::json(
                        400,
                        r#"{"error":{"type":"x_content_parse_exception"},"status":400}"#,
                    );
                }
            };
            let Some(meta) = action.get("create") else {
                self.common.violation(format!(
                    "_bulk action {i} is not `create` (data streams accept only create): {action}"
                ));
                return Reply::json(
                    400,
                    r#"{"error":{"type":"illegal_argument_exception","reason":"only write ops with an op_type of create are allowed in data streams"},"status":400}"#,
                );
            };
            let (Some(index), Some(id)) = (meta["_index"].as_str(), meta["_id"].as_str()) else {
                self.common
                    .violation(format!("_bulk action {i} lacks _index or _id"));
                return Reply::json(
                    400,
                    r#"{"error":{"type":"action_request_validation_exception"},"status":400}"#,
                );
            };
            let src: Value = match serde_json::from_str(pair[1]) {
                Ok(v) => v,
                Err(e) => {
                    self.common
                        .violation(format!("_bulk source {i} not JSON: {e}"));
                    Value::Null
                }
            };
            if index.starts_with("logs-") && src.get("@timestamp").and_then(Value::as_str).is_none()
            {
                self.common.violation(format!(
                    "_bulk source {i} for a data stream lacks @timestamp"
                ));
            }
            let (status, item) = if let Some((s, t)) = fail.get(&i) {
                (
                    *s,
                    json!({"_index": index, "_id": id, "status": s, "error": {"type": t, "reason": format!("scripted {t}")}}),
                )
            } else {
                let mut docs = self.docs.lock();
                let mut created = self.created.lock();
                if docs.contains_key(id) || (self.count_only && created.contains_key(id)) {
                    self.conflicts.fetch_add(1, Ordering::SeqCst);
                    (
                        409,
                        json!({"_index": index, "_id": id, "status": 409, "error": {"type": "version_conflict_engine_exception", "reason": format!("[{id}]: version conflict, document already exists")}}),
                    )
                } else {
                    if !self.count_only {
                        docs.insert(id.to_string(), (index.to_string(), src));
                    }
                    *created.entry(id.to_string()).or_default() += 1;
                    (
                        201,
                        json!({"_index": index, "_id": id, "_version": 1, "result": "created", "status": 201}),
                    )
                }
            };
            if status >= 300 {
                errors = true;
            }
            items.push(json!({ "create": item }));
        }
        self.batches.fetch_add(1, Ordering::SeqCst);
        Reply::json(
            200,
            json!({"took": 1, "errors": errors, "items": items}).to_string(),
        )
    }
}

impl Bulk {
    /// The counting mode: borrowed parses of each action and source (still checking the
    /// shape, `create` only, `_id`, `@timestamp`), ids kept for 409s, a text-built answer.
    fn bulk_counting(&self, lines: &[&str]) -> Reply {
        #[derive(serde::Deserialize)]
        struct Meta<'a> {
            #[serde(borrow)]
            _index: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            _id: std::borrow::Cow<'a, str>,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Action<'a> {
            #[serde(borrow)]
            create: Meta<'a>,
        }
        let mut items = String::with_capacity(lines.len() * 40);
        let mut errors = false;
        let mut created = self.created.lock();
        for (i, pair) in lines.chunks(2).enumerate() {
            let Ok(a) = serde_json::from_str::<Action<'_>>(pair[0]) else {
                self.common.violation(format!(
                    "_bulk action {i} is not a create with _index and _id"
                ));
                return Reply::json(
                    400,
                    r#"{"error":{"type":"illegal_argument_exception"},"status":400}"#,
                );
            };
            if serde_json::from_str::<serde::de::IgnoredAny>(pair[1]).is_err()
                || !pair[1].starts_with("{\"@timestamp\":")
            {
                self.common.violation(format!(
                    "_bulk source {i} is not a JSON object with @timestamp"
                ));
            }
            let status = if created.contains_key(a.create._id.as_ref()) {
                self.conflicts.fetch_add(1, Ordering::SeqCst);
                errors = true;
                409
            } else {
                created.insert(a.create._id.to_string(), 1);
                201
            };
            if i > 0 {
                items.push(',');
            }
            items.push_str(&format!(
                r#"{{"create":{{"_index":{},"_id":{},"status":{status}}}}}"#,
                serde_json::to_string(a.create._index.as_ref()).unwrap_or_default(),
                serde_json::to_string(a.create._id.as_ref()).unwrap_or_default()
            ));
        }
        self.batches.fetch_add(1, Ordering::SeqCst);
        Reply::json(
            200,
            format!(r#"{{"took":1,"errors":{errors},"items":[{items}]}}"#),
        )
    }
}

impl Handler for Bulk {
    fn common(&self) -> &Common {
        &self.common
    }

    fn handle(&self, r: Req, special: Option<Special>) -> Reply {
        match (r.method.as_str(), r.path.as_str()) {
            ("POST", "/_bulk") => self.bulk(&r, special),
            ("GET", "/") => self
                .check_auth(&r)
                .unwrap_or_else(|| Reply::json(200, r#"{"name":"mock","cluster_name":"mock","version":{"number":"8.13.0"},"tagline":"You Know, for Search"}"#)),
            ("PUT", p) if p.starts_with("/_index_template/") => {
                if let Some(rep) = self.check_auth(&r) {
                    return rep;
                }
                let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
                    self.common.violation("index template body is not JSON".into());
                    return Reply::json(400, "{}");
                };
                if v["index_patterns"].as_array().is_none_or(|a| a.is_empty()) {
                    self.common.violation("index template lacks index_patterns".into());
                }
                self.templates.lock().push((p.trim_start_matches("/_index_template/").to_string(), v));
                Reply::json(200, r#"{"acknowledged":true}"#)
            }
            (m, p) => {
                self.common.violation(format!("ES: unexpected {m} {p}"));
                Reply::json(404, "{}")
            }
        }
    }
}
