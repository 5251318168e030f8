//! From a request body (bytes, maybe gzip) to owned events and per-item errors.
//!
//! Pure and synchronous: the handler runs it on the blocking pool, because inflating and
//! parsing a 40 MiB batch takes tens of milliseconds of CPU that must not stall the
//! connections served by the same runtime thread.

use std::io::Read;
use std::sync::Arc;

use flate2::read::MultiGzDecoder;

use crate::model::{decode_value, AuditEvent, DecodeError, DecodeLimits, EventError, Location};

/// Why a whole body was refused (as opposed to single bad items).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Larger than the limit once inflated.
    #[error("request body exceeds the limit of {limit} bytes after gzip decompression")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// `Content-Encoding: gzip` but the data is not valid gzip.
    #[error("invalid gzip body: {0}")]
    Gzip(std::io::Error),
    /// Not UTF-8 text.
    #[error("request body is not valid UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Offset of the first invalid byte.
        offset: usize,
    },
    /// Not JSON, or JSON of no known shape.
    #[error("{}", scrub(&.0.error.to_string()))]
    Unusable(DecodeError),
}

impl BodyError {
    /// The `reason` label for `audithawk_events_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "body_too_large",
            BodyError::Gzip(_) => "bad_gzip",
            BodyError::NotUtf8 { .. } => "not_utf8",
            BodyError::Unusable(e) => error_reason(&e.error),
        }
    }
}

/// What a body held.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Events, cluster attached, detached from the body.
    pub events: Vec<AuditEvent<'static>>,
    /// Items that could not be read, in order.
    pub errors: Vec<DecodeError>,
}

/// The `reason` label for one bad item.
pub fn error_reason(e: &EventError) -> &'static str {
    match e {
        EventError::Invalid(_) => "invalid",
        EventError::NotAnEvent(_) => "not_an_event",
        EventError::TooLarge { .. } => "too_large",
    }
}

/// Replaces the contents of every double-quoted string in an error message by `…`.
///
/// Why: serde's messages quote the offending value (`invalid type: string "…"`), and a
/// value from an audit event may be a secret; logs and metrics must never carry event
/// content. Field names are quoted with backticks by serde_json and survive.
pub fn scrub(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut inside = false;
    for c in msg.chars() {
        if c == '"' {
            if inside {
                out.push('…');
            }
            inside = !inside;
            out.push(c);
        } else if !inside {
            out.push(c);
        }
    }
    if inside {
        out.push('…');
    }
    out
}

/// Inflates (when `gzip`), checks UTF-8 and decodes `body`, attaching `cluster` to every
/// event.
pub fn decode_body(
    body: &[u8],
    gzip: bool,
    max_body_bytes: usize,
    limits: DecodeLimits,
    cluster: Option<Arc<str>>,
) -> Result<Decoded, BodyError> {
    let inflated;
    let bytes = if gzip {
        inflated = inflate(body, max_body_bytes)?;
        &inflated[..]
    } else {
        body
    };
    let text = std::str::from_utf8(bytes).map_err(|e| BodyError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let mut out = Decoded::default();
    decode_value(text, &Location::body(), limits, &mut |r| match r {
        Ok(mut ev) => {
            ev.cluster = cluster.clone();
            out.events.push(ev.into_owned());
        }
        Err(e) => out.errors.push(e),
    })
    .map_err(BodyError::Unusable)?;
    Ok(out)
}

/// Inflates gzip data, stopping one byte past `max` so that a gzip bomb costs at most
/// `max` bytes of memory before it is refused.
fn inflate(data: &[u8], max: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max));
    MultiGzDecoder::new(data)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(BodyError::Gzip)?;
    if out.len() > max {
        return Err(BodyError::TooLarge { limit: max });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    const LIST: &str = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[{"auditID":"a","verb":"get","requestURI":"/x?a=1\u0026b=2"},{"auditID":5}]}"#;

    #[test]
    fn decodes_plain_and_gzip_alike() {
        for (bytes, gzip) in [
            (LIST.as_bytes().to_vec(), false),
            (gz(LIST.as_bytes()), true),
        ] {
            let d = decode_body(
                &bytes,
                gzip,
                1 << 20,
                DecodeLimits::default(),
                Some("c1".into()),
            )
            .unwrap();
            assert_eq!(d.events.len(), 1);
            assert_eq!(d.events[0].cluster.as_deref(), Some("c1"));
            assert_eq!(
                d.events[0].fields.request_uri.as_deref(),
                Some("/x?a=1&b=2")
            );
            assert_eq!(d.errors.len(), 1);
            assert_eq!(d.errors[0].location.item, Some(1));
        }
    }

    #[test]
    fn gzip_bomb_is_refused_at_the_limit() {
        let bomb = gz(&vec![b' '; 10 << 20]);
        assert!(bomb.len() < 64 << 10);
        let e = decode_body(&bomb, true, 1 << 20, DecodeLimits::default(), None).unwrap_err();
        assert!(matches!(e, BodyError::TooLarge { limit } if limit == 1 << 20));
        // Exactly at the limit is fine (and then fails only as JSON).
        let exact = gz(&vec![b' '; 1 << 20]);
        let e = decode_body(&exact, true, 1 << 20, DecodeLimits::default(), None).unwrap_err();
        assert!(matches!(e, BodyError::Unusable(_)), "{e}");
    }

    #[test]
    fn whole_body_errors() {
        let lim = DecodeLimits::default();
        assert!(matches!(
            decode_body(b"\x1f\x8bnot", true, 100, lim, None),
            Err(BodyError::Gzip(_))
        ));
        assert!(matches!(
            decode_body(b"{\"a\":\"\xff\"}", false, 100, lim, None),
            Err(BodyError::NotUtf8 { offset: 6 })
        ));
        let e = decode_body(b"not json", false, 100, lim, None).unwrap_err();
        assert_eq!(e.reason(), "invalid");
        assert!(e.to_string().contains("expected"), "{e}");
    }

    #[test]
    fn scrub_hides_quoted_values_but_keeps_field_names() {
        assert_eq!(
            scrub(r#"invalid type: string "hunter2", expected `groups` at line 1"#),
            r#"invalid type: string "…", expected `groups` at line 1"#
        );
        assert_eq!(scrub(r#"kind is "Pod""#), r#"kind is "…""#);
        assert_eq!(scrub(r#"open "quote"#), r#"open "…"#);
    }
}
