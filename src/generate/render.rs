//! Writing events exactly as the API server's log backend does.
//!
//! Why not plain `serde_json::to_writer`: Go's `encoding/json` escapes `&`, `<`, `>` (as
//! `\u0026`, `\u003c`, `\u003e`) and U+2028/U+2029, and real audit lines therefore contain
//! `\u0026` in nearly every watch URI. Readers must cope with that, so the generator must
//! produce it. Field order follows the Go struct (`pkg/apis/audit/v1/types.go`) because
//! serde serialises struct fields in declaration order; maps (annotations, `user.extra`)
//! are `BTreeMap`s because Go sorts map keys when it encodes them.

use std::collections::BTreeMap;
use std::io;

use chrono::DateTime;
use serde::Serialize;
use serde_json::ser::{Formatter, Serializer};
use serde_json::Value;

/// A `serde_json` formatter that escapes like Go's `encoding/json` (HTML-safe escaping).
#[derive(Debug, Default, Clone, Copy)]
pub struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_go_fragment(w, fragment)
    }
}

/// Writes a string fragment (already free of `"`, `\` and control characters, which
/// serde_json escapes itself) with Go's extra escapes.
fn write_go_fragment<W: ?Sized + io::Write>(w: &mut W, s: &str) -> io::Result<()> {
    let b = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let (esc, len): (&[u8], usize) = match b[i] {
            b'&' => (b"\\u0026", 1),
            b'<' => (b"\\u003c", 1),
            b'>' => (b"\\u003e", 1),
            // U+2028 / U+2029 are E2 80 A8 / E2 80 A9 in UTF-8.
            0xE2 if b.get(i + 1) == Some(&0x80) && b.get(i + 2) == Some(&0xA8) => (b"\\u2028", 3),
            0xE2 if b.get(i + 1) == Some(&0x80) && b.get(i + 2) == Some(&0xA9) => (b"\\u2029", 3),
            _ => {
                i += 1;
                continue;
            }
        };
        w.write_all(&b[start..i])?;
        w.write_all(esc)?;
        i += len;
        start = i;
    }
    w.write_all(&b[start..])
}

/// Serialises `v` as compact JSON with Go's escaping, appending to `out`.
pub fn to_go_json<T: Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let mut ser = Serializer::with_formatter(out, GoFormatter);
    v.serialize(&mut ser)
}

/// `authentication/v1` UserInfo; every field is `omitempty` in Go.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Identity {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The audit ObjectReference; core-group `apiGroup` is omitted as Go's `omitempty` does.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjRef {
    pub resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub api_group: &'static str,
    pub api_version: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub subresource: &'static str,
}

/// `metav1.StatusDetails`.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Details {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub group: &'static str,
    pub kind: String,
}

/// `metav1.Status` as the audit backend writes it (`metadata` always present).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Status {
    pub metadata: BTreeMap<(), ()>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Details>,
    pub code: u16,
}

impl Status {
    /// A success status with only a code, as the API server writes for 2xx and 101.
    pub fn ok(code: u16) -> Status {
        Status {
            code,
            ..Status::default()
        }
    }
}

/// One line of the log, borrowing everything from the request it describes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventOut<'a> {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub level: &'static str,
    #[serde(rename = "auditID")]
    pub audit_id: &'a str,
    pub stage: &'static str,
    #[serde(rename = "requestURI")]
    pub request_uri: &'a str,
    pub verb: &'a str,
    pub user: &'a Identity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<&'a Identity>,
    #[serde(rename = "sourceIPs")]
    pub source_ips: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    pub user_agent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<&'a ObjRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<&'a Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_object: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_object: Option<&'a Value>,
    pub request_received_timestamp: &'a str,
    pub stage_timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<&'a BTreeMap<&'static str, String>>,
}

/// Formats microsecond timestamps as MicroTime (`2006-01-02T15:04:05.000000Z`), caching
/// the date-and-second prefix because consecutive events share it.
#[derive(Debug, Default)]
pub(crate) struct TimeFmt {
    second: i64,
    prefix: String,
}

impl TimeFmt {
    /// The MicroTime text of `micros` since the Unix epoch.
    pub fn format(&mut self, micros: i64) -> String {
        let sec = micros.div_euclid(1_000_000);
        let frac = micros.rem_euclid(1_000_000);
        if self.prefix.is_empty() || sec != self.second {
            self.second = sec;
            self.prefix = DateTime::from_timestamp(sec, 0)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
                .unwrap_or_else(|| "1970-01-01T00:00:00".to_string());
        }
        format!("{}.{frac:06}Z", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_escaping_of_html_characters_and_line_separators() {
        let mut out = Vec::new();
        to_go_json(&"a&b<c>d\u{2028}e\"f\\g\n", &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""a\u0026b\u003cc\u003ed\u2028e\"f\\g\n""#
        );
    }

    #[test]
    fn microtime_has_six_fraction_digits() {
        let mut f = TimeFmt::default();
        // 2026-11-02T09:00:00Z
        let base = 1_793_610_000_i64 * 1_000_000;
        assert_eq!(f.format(base + 42), "2026-11-02T09:00:00.000042Z");
        assert_eq!(f.format(base + 1_500_000), "2026-11-02T09:00:01.500000Z");
    }

    #[test]
    fn empty_status_metadata_and_omitempty() {
        let mut out = Vec::new();
        to_go_json(&Status::ok(200), &mut out).unwrap();
        assert_eq!(out, br#"{"metadata":{},"code":200}"#);
        let mut out = Vec::new();
        to_go_json(&Identity::default(), &mut out).unwrap();
        assert_eq!(out, b"{}");
    }
}
