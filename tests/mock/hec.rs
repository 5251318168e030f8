//! A strict Splunk HEC mock: `/services/collector/event`, `/health`, `/ack`.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::Value;

use super::{Common, Handler, Reply, Req, Special};

/// The mock's settings and what it received.
#[derive(Debug, Default)]
pub struct Hec {
    /// Shared script/outage/violations.
    pub common: Common,
    /// The valid token.
    pub token: String,
    /// Indexes that exist (empty: any).
    pub indexes: Vec<String>,
    /// Indexer acknowledgement on.
    pub ack: bool,
    /// Ack polls answered "false" before an ack turns true.
    pub ack_delay_polls: u64,
    /// Every accepted envelope, in order.
    pub events: Mutex<Vec<Value>>,
    /// Whether any event request came gzipped.
    pub saw_gzip: AtomicBool,
    /// Event requests accepted.
    pub batches: AtomicU64,
    /// Ack polls received.
    pub ack_polls: AtomicU64,
    next_ack: AtomicU64,
    /// ackId -> polls so far.
    pending: Mutex<BTreeMap<u64, u64>>,
    /// Health endpoint answers 503 code 18 while true.
    pub unhealthy: AtomicBool,
    /// Benchmarks: check auth, gzip and that the body is JSON envelopes (parsed, one
    /// check per envelope), but keep only a count, not the events.
    pub count_only: bool,
    /// Envelopes accepted (all modes).
    pub accepted: AtomicU64,
}

impl Hec {
    /// A mock accepting `token`.
    pub fn new(token: &str) -> Hec {
        Hec {
            token: token.into(),
            ..Hec::default()
        }
    }

    /// The `event.id`s received, with repeats.
    pub fn ids(&self) -> Vec<String> {
        self.events
            .lock()
            .iter()
            .map(|e| e["event"]["event"]["id"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

fn err(status: u16, code: u32, text: &str) -> Reply {
    Reply::json(status, format!(r#"{{"text":"{text}","code":{code}}}"#))
}

impl Hec {
    fn auth(&self, r: &Req) -> Option<Reply> {
        match r.header("authorization") {
            None => Some(err(401, 2, "Token is required")),
            Some(a) => match a.strip_prefix("Splunk ") {
                Some(t) if t == self.token => None,
                Some(_) => Some(err(403, 4, "Invalid token")),
                None => Some(err(401, 3, "Invalid authorization")),
            },
        }
    }

    fn event(&self, r: &Req, special: Option<Special>) -> Reply {
        if let Some(rep) = self.auth(r) {
            return rep;
        }
        let channel = r
            .header("x-splunk-request-channel")
            .map(str::to_string)
            .or_else(|| r.query.strip_prefix("channel=").map(str::to_string));
        if self.ack && channel.is_none() {
            return err(400, 10, "Data channel is missing");
        }
        if let Some(ch) = &channel {
            if uuid::Uuid::parse_str(ch).is_err() {
                return err(400, 11, "Invalid data channel");
            }
        }
        if r.body.iter().all(|b| b.is_ascii_whitespace()) {
            return err(400, 5, "No data");
        }
        let ct = r.header("content-type").unwrap_or("");
        if !ct.starts_with("application/json") {
            self.common.violation(format!("HEC content-type {ct:?}"));
        }
        if r.header("content-encoding") == Some("gzip") {
            self.saw_gzip.store(true, Ordering::SeqCst);
        }
        if self.count_only {
            return self.count(&r.body);
        }
        // Concatenated JSON objects, optionally separated by whitespace.
        let mut envs = Vec::new();
        for (i, v) in serde_json::Deserializer::from_slice(&r.body)
            .into_iter::<Value>()
            .enumerate()
        {
            let Ok(v) = v else {
                self.common
                    .violation(format!("HEC body is not concatenated JSON (event {i})"));
                return Reply::json(
                    400,
                    format!(
                        r#"{{"text":"Invalid data format","code":6,"invalid-event-number":{i}}}"#
                    ),
                );
            };
            envs.push(v);
        }
        let mut accepted = Vec::new();
        for (i, e) in envs.iter().enumerate() {
            let bad = |code: u32, text: &str| {
                Reply::json(
                    400,
                    format!(r#"{{"text":"{text}","code":{code},"invalid-event-number":{i}}}"#),
                )
            };
            let Some(o) = e.as_object() else {
                self.common
                    .violation(format!("envelope {i} is not an object"));
                return bad(6, "Invalid data format");
            };
            match o.get("event") {
                None => {
                    self.common.violation(format!("envelope {i} has no event"));
                    return bad(12, "Event field is required");
                }
                Some(Value::String(s)) if s.is_empty() => {
                    return bad(13, "Event field cannot be blank")
                }
                Some(Value::Null) => return bad(13, "Event field cannot be blank"),
                _ => {}
            }
            if let Some(t) = o.get("time") {
                if !t.is_number() {
                    self.common
                        .violation(format!("envelope {i}: time is not a number: {t}"));
                    return bad(6, "Invalid data format");
                }
            }
            for k in ["host", "source", "sourcetype", "index"] {
                if o.get(k).is_some_and(|v| !v.is_string()) {
                    self.common
                        .violation(format!("envelope {i}: {k} is not a string"));
                    return bad(6, "Invalid data format");
                }
            }
            if let Some(f) = o.get("fields") {
                let ok = f.as_object().is_some_and(|m| {
                    m.values().all(|v| {
                        v.is_string()
                            || v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
                    })
                });
                if !ok {
                    self.common
                        .violation(format!("envelope {i}: fields must map to strings"));
                    return bad(15, "Error in handling indexed fields");
                }
            }
            if let Some(ix) = o.get("index").and_then(Value::as_str) {
                if !self.indexes.is_empty() && !self.indexes.iter().any(|x| x == ix) {
                    // Splunk refuses the request; events before it were indexed.
                    self.events
                        .lock()
                        .extend(envs[..accepted.len()].iter().cloned());
                    return bad(7, "Incorrect index");
                }
            }
            if let Some(Special::HecInvalidEvent(n)) = &special {
                if *n == i {
                    self.events
                        .lock()
                        .extend(envs[..accepted.len()].iter().cloned());
                    return bad(6, "Invalid data format");
                }
            }
            accepted.push(i);
        }
        self.accepted
            .fetch_add(accepted.len() as u64, Ordering::SeqCst);
        if !self.count_only {
            self.events
                .lock()
                .extend(envs.into_iter().take(accepted.len()));
        }
        self.batches.fetch_add(1, Ordering::SeqCst);
        if self.ack {
            let id = self.next_ack.fetch_add(1, Ordering::SeqCst);
            self.pending.lock().insert(id, 0);
            Reply::json(
                200,
                format!(r#"{{"text":"Success","code":0,"ackId":{id}}}"#),
            )
        } else {
            err(200, 0, "Success")
        }
    }

    /// The counting mode: a borrowed parse that checks each envelope's required shape
    /// without building values.
    fn count(&self, body: &[u8]) -> Reply {
        #[derive(serde::Deserialize)]
        struct Env<'a> {
            time: f64,
            #[serde(borrow)]
            event: &'a serde_json::value::RawValue,
            #[serde(borrow)]
            sourcetype: std::borrow::Cow<'a, str>,
        }
        let mut n = 0u64;
        for (i, e) in serde_json::Deserializer::from_slice(body)
            .into_iter::<Env<'_>>()
            .enumerate()
        {
            match e {
                Ok(e) if e.time > 0.0 && e.event.get().len() > 2 && !e.sourcetype.is_empty() => {
                    n += 1
                }
                _ => {
                    self.common.violation(format!("envelope {i} malformed"));
                    return Reply::json(
                        400,
                        format!(
                            r#"{{"text":"Invalid data format","code":6,"invalid-event-number":{i}}}"#
                        ),
                    );
                }
            }
        }
        self.accepted.fetch_add(n, Ordering::SeqCst);
        self.batches.fetch_add(1, Ordering::SeqCst);
        err(200, 0, "Success")
    }

    fn ack_poll(&self, r: &Req) -> Reply {
        if let Some(rep) = self.auth(r) {
            return rep;
        }
        if !self.ack {
            return err(400, 14, "ACK is disabled");
        }
        self.ack_polls.fetch_add(1, Ordering::SeqCst);
        let Ok(v) = serde_json::from_slice::<Value>(&r.body) else {
            self.common.violation("ack body is not JSON".into());
            return err(400, 6, "Invalid data format");
        };
        let mut out = serde_json::Map::new();
        let mut seen = HashSet::new();
        let mut pending = self.pending.lock();
        for a in v["acks"].as_array().cloned().unwrap_or_default() {
            let Some(id) = a.as_u64() else { continue };
            if !seen.insert(id) {
                continue;
            }
            let done = match pending.get_mut(&id) {
                Some(polls) => {
                    *polls += 1;
                    *polls > self.ack_delay_polls
                }
                None => false,
            };
            if done {
                pending.remove(&id); // read-once
            }
            out.insert(id.to_string(), Value::Bool(done));
        }
        Reply::json(200, serde_json::json!({ "acks": out }).to_string())
    }
}

impl Handler for Hec {
    fn common(&self) -> &Common {
        &self.common
    }

    fn handle(&self, r: Req, special: Option<Special>) -> Reply {
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/services/collector/health") | ("GET", "/services/collector/health/1.0") => {
                if self.unhealthy.load(Ordering::SeqCst) {
                    err(503, 18, "HEC is unhealthy, queues are full")
                } else {
                    err(200, 17, "HEC is healthy")
                }
            }
            ("POST", "/services/collector/event")
            | ("POST", "/services/collector/event/1.0")
            | ("POST", "/services/collector") => self.event(&r, special),
            ("POST", "/services/collector/ack") => self.ack_poll(&r),
            (m, p) => {
                self.common.violation(format!("HEC: unexpected {m} {p}"));
                Reply::json(
                    404,
                    r#"{"text":"The requested URL was not found on this server.","code":404}"#,
                )
            }
        }
    }
}
