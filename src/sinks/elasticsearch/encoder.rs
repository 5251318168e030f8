//! `_bulk` request bodies and responses: pure functions, tested without a network.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::sinks::{Record, SendOutcome};

/// Where documents go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One data stream (or alias).
    DataStream(String),
    /// A dated index: the pattern is formatted with the record's event time (chrono
    /// `strftime`, e.g. `audithawk-alerts-%Y.%m.%d`).
    Dated(String),
}

impl Target {
    /// The index for a record at `t`.
    pub fn index_for(&self, t: Option<DateTime<Utc>>) -> String {
        match self {
            Target::DataStream(n) => n.clone(),
            Target::Dated(p) => {
                use std::fmt::Write;
                let mut s = String::new();
                // An invalid pattern is rejected by validation; never panic on one here.
                match write!(s, "{}", t.unwrap_or_else(Utc::now).format(p)) {
                    Ok(()) => s,
                    Err(_) => p.replace('%', ""),
                }
            }
        }
    }
}

/// NDJSON: a `create` action (stable `_id`) and the document per record, final newline.
pub fn encode<T: Record>(batch: &[T], target: &Target) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.iter().map(|r| r.size_hint() + 128).sum());
    for r in batch {
        out.extend_from_slice(b"{\"create\":{\"_index\":");
        // Serialising a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, &target.index_for(r.time()));
        out.extend_from_slice(b",\"_id\":");
        let _ = serde_json::to_writer(&mut out, r.id());
        out.extend_from_slice(b"}}\n");
        r.write_es_doc(&mut out);
        out.push(b'\n');
    }
    out
}

/// The parts of a `_bulk` response we read.
#[derive(Debug, Deserialize, PartialEq)]
pub struct BulkResponse {
    /// Whether any item failed.
    pub errors: bool,
    /// One object per action, in order: `{"create": {...}}`.
    #[serde(default)]
    pub items: Vec<BTreeMap<String, BulkItem>>,
}

/// One item result.
#[derive(Debug, Deserialize, PartialEq)]
pub struct BulkItem {
    /// HTTP-like status of this item.
    pub status: u16,
    /// The error, if it failed.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

/// Reads a 200 `_bulk` response for a batch of `n`: ok and 409 (already there: our `_id`
/// is stable, so this is a re-send of something delivered) count as delivered; 429 and 5xx
/// are retried; other failures (mapping errors) are rejected with the reason.
pub fn classify_items(body: &[u8], n: usize) -> SendOutcome {
    /// First pass: `errors` only; the items stay unparsed text, as they are not needed
    /// when nothing failed (the common case, and a 1000-item answer is large).
    #[derive(Deserialize)]
    struct Head<'a> {
        errors: bool,
        #[serde(borrow, default)]
        #[allow(dead_code)]
        items: Option<&'a serde_json::value::RawValue>,
    }
    match serde_json::from_slice::<Head<'_>>(body) {
        Ok(h) if !h.errors => return SendOutcome::Done,
        Ok(_) => {}
        Err(e) => {
            return SendOutcome::Retry {
                reason: format!("unreadable _bulk response: {e}"),
                after: None,
            }
        }
    }
    let resp: BulkResponse = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return SendOutcome::Retry {
                reason: format!("unreadable _bulk response: {e}"),
                after: None,
            }
        }
    };
    if !resp.errors {
        return SendOutcome::Done;
    }
    if resp.items.len() != n {
        // Cannot tell which failed: send all again; stable ids make that harmless.
        return SendOutcome::Retry {
            reason: format!("_bulk answered {} items for {n} actions", resp.items.len()),
            after: None,
        };
    }
    let (mut retry, mut rejected) = (Vec::new(), Vec::new());
    for (i, item) in resp.items.iter().enumerate() {
        let Some(it) = item.values().next() else {
            continue;
        };
        match it.status {
            s if s < 300 || s == 409 => {}
            s if s == 429 || s >= 500 => retry.push(i),
            s => {
                let e = it.error.as_ref();
                let kind = e.and_then(|e| e["type"].as_str()).unwrap_or("error");
                let reason = e.and_then(|e| e["reason"].as_str()).unwrap_or("");
                rejected.push((i, format!("{s} {kind}: {reason}")));
            }
        }
    }
    if retry.is_empty() && rejected.is_empty() {
        SendOutcome::Done
    } else {
        SendOutcome::Partial { retry, rejected }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SharedAlert;
    use std::sync::Arc;

    fn alert(id: &str) -> SharedAlert {
        let ev = crate::model::AuditEvent::parse(
            r#"{"auditID":"a1","verb":"get","stageTimestamp":"2024-05-01T10:00:00Z"}"#,
        )
        .unwrap();
        let meta = crate::model::RuleMeta {
            id: "r1".into(),
            title: "t".into(),
            level: crate::model::Level::High,
            tags: vec![],
            description: String::new(),
            references: vec![],
            author: None,
            source: "test".into(),
        };
        let mut a = crate::model::Alert::new(&meta, &ev, Utc::now());
        a.event.id = id.into();
        Arc::new(a)
    }

    #[test]
    fn ndjson_create_with_stable_id_and_dated_index() {
        let body = encode(
            &[alert("x1"), alert("x2")],
            &Target::Dated("aa-%Y.%m.%d".into()),
        );
        let text = String::from_utf8(body).unwrap();
        assert!(text.ends_with('\n'));
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["create"]["_index"], "aa-2024.05.01");
        assert_eq!(lines[0]["create"]["_id"], "x1");
        assert_eq!(lines[1]["event"]["id"], "x1");
        assert_eq!(lines[3]["@timestamp"], lines[1]["@timestamp"]);
    }

    #[test]
    fn items_by_status() {
        let body = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"i","_id":"a","status":201}},
            {"create":{"_index":"i","_id":"b","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
            {"create":{"_index":"i","_id":"c","status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
            {"create":{"_index":"i","_id":"d","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [x]"}}},
            {"create":{"_index":"i","_id":"e","status":503,"error":{"type":"unavailable_shards_exception","reason":"x"}}}]}"#;
        match classify_items(body, 5) {
            SendOutcome::Partial { retry, rejected } => {
                assert_eq!(retry, vec![2, 4]);
                assert_eq!(rejected.len(), 1);
                assert_eq!(rejected[0].0, 3);
                assert!(rejected[0].1.contains("mapper_parsing_exception"));
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(
            classify_items(br#"{"errors":false,"items":[]}"#, 3),
            SendOutcome::Done
        );
    }
}
