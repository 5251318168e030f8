//! From JSON text to events: EventList, single Event, JSON array, and the cloud envelopes.
//!
//! Every input path (webhook body, a line of a tailed file, a record of a scanned file) ends
//! in [`decode_value`], so all of them accept the same shapes and report bad records the same
//! way: one [`DecodeError`] per bad line or item, and the rest continues.
//!
//! The fast path parses a record directly as an Event. Only when that fails because the
//! record is something else (an EventList, an array, a GKE or AKS envelope) do we look at
//! it a second time; plain audit logs never pay for the other shapes.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::event::{AuditEvent, EventError};
use super::wrappers;

/// Where a bad record was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 1-based line number in a file or stream, when known.
    pub line: Option<u64>,
    /// 0-based index in an EventList's `items` or a JSON array, when applicable.
    pub item: Option<usize>,
}

impl Location {
    /// A line of a JSON-lines input.
    pub fn line(n: u64) -> Location {
        Location {
            line: Some(n),
            item: None,
        }
    }
    /// A whole body (webhook).
    pub fn body() -> Location {
        Location {
            line: None,
            item: None,
        }
    }
    fn with_item(&self, i: usize) -> Location {
        Location {
            line: self.line,
            item: Some(i),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.item) {
            (Some(l), Some(i)) => write!(f, "line {l}, item {i}"),
            (Some(l), None) => write!(f, "line {l}"),
            (None, Some(i)) => write!(f, "item {i}"),
            (None, None) => write!(f, "body"),
        }
    }
}

/// A record that could not be turned into an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{location}: {error}")]
pub struct DecodeError {
    /// Where it was.
    pub location: Location,
    /// What was wrong.
    pub error: EventError,
}

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest single event, in bytes of JSON text.
    pub max_event_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        // The API server's default truncate limit is 100 KiB; allow room for the
        // (untruncated) bodies of log-backend events and EKS/GKE envelopes.
        DecodeLimits {
            max_event_bytes: 1024 * 1024,
        }
    }
}

/// Outcome of decoding one record: events and errors are delivered through `out`.
pub type Decoded<'a> = Result<AuditEvent<'a>, DecodeError>;

#[derive(Deserialize)]
struct ListShape<'a> {
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    items: Option<Vec<&'a RawValue>>,
}

/// Decodes one JSON value (an Event, an EventList, an array of either, or a cloud envelope).
/// Returns `Err` only when the text is not usable at all (not JSON, or JSON of no known
/// shape); per-item problems go to `out`.
pub fn decode_value<'a>(
    text: &'a str,
    loc: &Location,
    limits: DecodeLimits,
    out: &mut dyn FnMut(Decoded<'a>),
) -> Result<(), DecodeError> {
    let text = text.trim();
    if text.len() > limits.max_event_bytes && !text.starts_with('[') && !looks_like_list(text) {
        return Err(DecodeError {
            location: loc.clone(),
            error: EventError::TooLarge {
                size: text.len(),
                limit: limits.max_event_bytes,
            },
        });
    }
    if text.starts_with('[') {
        let items: Vec<&'a RawValue> = serde_json::from_str(text).map_err(|e| DecodeError {
            location: loc.clone(),
            error: EventError::Invalid(e.to_string()),
        })?;
        for (i, item) in items.into_iter().enumerate() {
            decode_item(item.get(), &loc.with_item(i), limits, out);
        }
        return Ok(());
    }
    // Fast path: a plain Event.
    let first_err = match AuditEvent::parse(text) {
        Ok(ev) => {
            out(Ok(ev));
            return Ok(());
        }
        Err(e) => e,
    };
    // Slow path: is it a list or an envelope?
    if let Ok(list) = serde_json::from_str::<ListShape<'a>>(text) {
        if let Some(items) = list.items {
            if list.kind.as_deref().is_none_or(|k| k.ends_with("List")) {
                for (i, item) in items.into_iter().enumerate() {
                    decode_item(item.get(), &loc.with_item(i), limits, out);
                }
                return Ok(());
            }
        }
    }
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        if let Some(unwrapped) = wrappers::unwrap(&v) {
            return match unwrapped {
                Ok(inner) => {
                    match AuditEvent::parse_cow(Cow::Owned(inner)) {
                        Ok(ev) => out(Ok(ev)),
                        Err(error) => out(Err(DecodeError {
                            location: loc.clone(),
                            error,
                        })),
                    }
                    Ok(())
                }
                Err(msg) => Err(DecodeError {
                    location: loc.clone(),
                    error: EventError::NotAnEvent(msg),
                }),
            };
        }
    }
    // Several values in one text (JSON lines posted as a body, or concatenated objects):
    // decode each, as items of the body.
    if let Some(n) = decode_stream(text, loc, limits, out) {
        if n > 0 {
            return Ok(());
        }
    }
    Err(DecodeError {
        location: loc.clone(),
        error: first_err,
    })
}

/// Decodes a text holding several JSON values one after another. Returns how many values
/// were found, or `None` when the text is a single (broken) value. A syntax error after
/// the first value is reported for the rest of the text.
fn decode_stream<'a>(
    text: &'a str,
    loc: &Location,
    limits: DecodeLimits,
    out: &mut dyn FnMut(Decoded<'a>),
) -> Option<usize> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<&'a RawValue>();
    let first = stream.next()?.ok()?;
    if stream.byte_offset() >= text.len() {
        return None;
    }
    decode_item(first.get(), &loc.with_item(0), limits, out);
    let mut n = 1;
    for item in stream {
        match item {
            Ok(v) => {
                decode_item(v.get(), &loc.with_item(n), limits, out);
                n += 1;
            }
            Err(e) => {
                out(Err(DecodeError {
                    location: loc.with_item(n),
                    error: EventError::Invalid(format!("{e}; rest of the body skipped")),
                }));
                break;
            }
        }
    }
    Some(n)
}

fn looks_like_list(text: &str) -> bool {
    // Only used to let an EventList exceed the per-event limit; each item is still checked.
    text.len() > 16 && memchr::memmem::find(text.as_bytes(), b"\"items\"").is_some()
}

/// Decodes one item of a list: an event (or envelope), never another list.
fn decode_item<'a>(
    text: &'a str,
    loc: &Location,
    limits: DecodeLimits,
    out: &mut dyn FnMut(Decoded<'a>),
) {
    if text.len() > limits.max_event_bytes {
        out(Err(DecodeError {
            location: loc.clone(),
            error: EventError::TooLarge {
                size: text.len(),
                limit: limits.max_event_bytes,
            },
        }));
        return;
    }
    if text.starts_with('[') || looks_like_list(text) && !text.contains("\"auditID\"") {
        out(Err(DecodeError {
            location: loc.clone(),
            error: EventError::NotAnEvent("nested list inside a list".into()),
        }));
        return;
    }
    if let Err(e) = decode_value(text, loc, limits, out) {
        out(Err(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (Vec<String>, Vec<String>, bool) {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        let whole = decode_value(
            text,
            &Location::body(),
            DecodeLimits::default(),
            &mut |r| match r {
                Ok(e) => ok.push(e.audit_id().to_string()),
                Err(e) => bad.push(e.to_string()),
            },
        );
        (ok, bad, whole.is_ok())
    }

    #[test]
    fn eventlist_with_bare_items_and_one_bad_item() {
        let body = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[
            {"level":"Metadata","auditID":"a","stage":"ResponseComplete","verb":"get"},
            {"auditID": 7},
            {"level":"Metadata","auditID":"c","stage":"ResponseComplete","verb":"list"}]}"#;
        let (ok, bad, whole) = run(body);
        assert!(whole);
        assert_eq!(ok, vec!["a", "c"]);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("item 1:"), "{}", bad[0]);
    }

    #[test]
    fn single_event_and_array() {
        assert_eq!(run(r#"{"auditID":"x","verb":"get"}"#).0, vec!["x"]);
        let (ok, bad, _) = run(r#"[{"auditID":"x","verb":"get"},{"kind":0}]"#);
        assert_eq!(ok, vec!["x"]);
        assert_eq!(bad.len(), 1);
    }

    #[test]
    fn concatenated_and_newline_separated_events() {
        let (ok, bad, whole) = run("{\"auditID\":\"a\",\"verb\":\"get\"}\n{\"auditID\":\"b\",\"verb\":\"get\"}{\"auditID\":\"c\",\"verb\":\"get\"}");
        assert!(whole);
        assert_eq!(ok, vec!["a", "b", "c"]);
        assert!(bad.is_empty());
        let (ok, bad, whole) = run("{\"auditID\":\"a\",\"verb\":\"get\"}\n{broken");
        assert!(whole);
        assert_eq!(ok, vec!["a"]);
        assert!(bad[0].starts_with("item 1:"), "{bad:?}");
    }

    #[test]
    fn garbage_is_unusable() {
        assert!(!run("not json").2);
        assert!(!run(r#"{"kind": 0}"#).2);
        assert!(!run(r#"{"hello":"world"}"#).2);
    }

    #[test]
    fn oversize_item_is_rejected_alone() {
        let big = "x".repeat(200);
        let body = format!(
            r#"{{"kind":"EventList","items":[{{"auditID":"a","verb":"get","userAgent":"{big}"}},{{"auditID":"b","verb":"get"}}]}}"#
        );
        let mut ok = 0;
        let mut bad = Vec::new();
        decode_value(
            &body,
            &Location::body(),
            DecodeLimits {
                max_event_bytes: 100,
            },
            &mut |r| match r {
                Ok(_) => ok += 1,
                Err(e) => bad.push(e),
            },
        )
        .unwrap();
        assert_eq!(ok, 1);
        assert!(matches!(bad[0].error, EventError::TooLarge { .. }));
    }
}
