//! Splunk HEC event envelopes: pure functions, tested without a network.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::sinks::Record;

/// Envelope metadata shared by every event of a sink.
#[derive(Debug, Clone)]
pub struct HecMeta {
    /// `host`; when `None`, the record's cluster name, else `audithawk`.
    pub host: Option<String>,
    /// `source`.
    pub source: String,
    /// `sourcetype`.
    pub sourcetype: String,
    /// `index`; when `None` the token's default index applies.
    pub index: Option<String>,
    /// Static indexed fields added to every event.
    pub fields: BTreeMap<String, String>,
    /// Whether the record's labels (rule id, level, cluster) become indexed fields.
    pub label_fields: bool,
}

/// Splunk's `time`: epoch seconds with millisecond precision, as text.
pub fn epoch_seconds(t: DateTime<Utc>) -> String {
    let ms = t.timestamp_millis();
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// Appends one envelope for `rec` (no separator) to `out`.
pub fn encode_one<T: Record>(rec: &T, meta: &HecMeta, out: &mut Vec<u8>) {
    let w = |out: &mut Vec<u8>, s: &str| {
        // Serialising a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    };
    out.extend_from_slice(b"{\"time\":");
    out.extend_from_slice(epoch_seconds(rec.time().unwrap_or_else(Utc::now)).as_bytes());
    out.extend_from_slice(b",\"host\":");
    w(
        out,
        meta.host.as_deref().or(rec.host()).unwrap_or("audithawk"),
    );
    out.extend_from_slice(b",\"source\":");
    w(out, &meta.source);
    out.extend_from_slice(b",\"sourcetype\":");
    w(out, &meta.sourcetype);
    if let Some(ix) = &meta.index {
        out.extend_from_slice(b",\"index\":");
        w(out, ix);
    }
    let labels = if meta.label_fields {
        rec.labels()
    } else {
        Vec::new()
    };
    if !labels.is_empty() || !meta.fields.is_empty() {
        out.extend_from_slice(b",\"fields\":{");
        let mut first = true;
        let mut put = |out: &mut Vec<u8>, k: &str, v: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            w(out, k);
            out.push(b':');
            w(out, v);
        };
        for (k, v) in &meta.fields {
            put(out, k, v);
        }
        for (k, v) in labels {
            if !meta.fields.contains_key(k) {
                put(out, k, v);
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b",\"event\":");
    rec.write_json(out);
    out.push(b'}');
}

/// A batch: envelopes concatenated, one per line (HEC accepts whitespace between them).
pub fn encode<T: Record>(batch: &[T], meta: &HecMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.iter().map(|r| r.size_hint() + 200).sum());
    for r in batch {
        encode_one(r, meta, &mut out);
        out.push(b'\n');
    }
    out
}

/// A HEC reply body: `{"text","code","ackId"?,"invalid-event-number"?}`.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
pub struct HecReply {
    /// Message.
    #[serde(default)]
    pub text: String,
    /// HEC status code (table in PROTOCOL.md D).
    #[serde(default)]
    pub code: Option<i64>,
    /// Ack id when indexer acknowledgement is on.
    #[serde(default, rename = "ackId")]
    pub ack_id: Option<u64>,
    /// 0-based index of the event that failed.
    #[serde(default, rename = "invalid-event-number")]
    pub invalid_event_number: Option<usize>,
}

/// What a HEC code means for delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HecMeaning {
    /// Accepted.
    Ok,
    /// Token missing, invalid or disabled: fix the config.
    BadToken,
    /// The index does not exist or the token may not write to it: fix the config.
    BadIndex,
    /// Busy or internal error: retry.
    Busy,
    /// One event in the batch was bad (data format, empty event, indexed fields).
    BadEvent,
    /// Channel / ack settings do not match the server: fix the config.
    AckConfig,
    /// Anything else (unknown code).
    Other,
}

/// Classifies a HEC code.
pub fn meaning(code: i64) -> HecMeaning {
    match code {
        0 => HecMeaning::Ok,
        1..=4 | 16 => HecMeaning::BadToken,
        7 => HecMeaning::BadIndex,
        8 | 9 => HecMeaning::Busy,
        5 | 6 | 12 | 13 | 15 => HecMeaning::BadEvent,
        10 | 11 | 14 => HecMeaning::AckConfig,
        _ => HecMeaning::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SharedAlert;
    use std::sync::Arc;

    fn alert() -> SharedAlert {
        let ev = crate::model::AuditEvent::parse(
            r#"{"auditID":"a1","verb":"get","stage":"ResponseComplete","stageTimestamp":"2024-05-01T10:00:00.123456Z","user":{"username":"bob"}}"#,
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
        Arc::new(crate::model::Alert::new(&meta, &ev, Utc::now()))
    }

    #[test]
    fn envelope_has_event_time_and_metadata() {
        let meta = HecMeta {
            host: None,
            source: "audithawk".into(),
            sourcetype: "audithawk:alert".into(),
            index: Some("k8s".into()),
            fields: [("env".to_string(), "prod".to_string())].into(),
            label_fields: true,
        };
        let a = alert();
        let out = encode(&[a.clone(), a], &meta);
        let text = String::from_utf8(out).unwrap();
        let envs: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&text)
            .into_iter()
            .map(|v| v.unwrap())
            .collect();
        assert_eq!(envs.len(), 2);
        let e = &envs[0];
        assert_eq!(e["time"].as_f64().unwrap(), 1714557600.123);
        assert_eq!(e["sourcetype"], "audithawk:alert");
        assert_eq!(e["index"], "k8s");
        assert_eq!(e["host"], "audithawk");
        assert_eq!(e["fields"]["env"], "prod");
        assert_eq!(e["fields"]["rule_id"], "r1");
        assert_eq!(e["fields"]["level"], "high");
        assert_eq!(e["event"]["rule"]["id"], "r1");
    }

    #[test]
    fn codes_by_meaning() {
        assert_eq!(meaning(4), HecMeaning::BadToken);
        assert_eq!(meaning(7), HecMeaning::BadIndex);
        assert_eq!(meaning(9), HecMeaning::Busy);
        assert_eq!(meaning(6), HecMeaning::BadEvent);
        assert_eq!(
            epoch_seconds(DateTime::from_timestamp_millis(5).unwrap()),
            "0.005"
        );
    }
}
