//! Streaming record reader: splits an input into JSON records without holding it in memory.
//!
//! Formats are detected from the content, not the file name:
//! - gzip by its magic bytes (a `.gz` backup, or a compressed stream on stdin);
//! - `[` first: one JSON array, streamed element by element;
//! - `{` first and the first line is a complete JSON value: JSON lines (the log backend's
//!   format; an EventList per line also works). A bad line is reported with its number and
//!   reading continues;
//! - `{` first but the first line is incomplete: a stream of (pretty-printed) JSON values.
//!   A syntax error there ends the file (JSON cannot be re-synchronised), after reporting.
//!
//! Memory stays bounded by the longest record: lines are read into one reused buffer, and
//! a line over the limit is skipped (and reported) without being held.

use std::io::{self, BufRead, BufReader, Read};

use flate2::read::MultiGzDecoder;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::model::event::EventError;
use crate::model::{DecodeError, Location};

/// The layout detected for an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One JSON value per line.
    Lines,
    /// Concatenated (possibly pretty-printed) JSON values.
    Documents,
    /// A single JSON array.
    Array,
    /// Nothing but whitespace.
    Empty,
}

/// Counters for one input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Bytes read (after decompression).
    pub bytes: u64,
    /// Records handed to the callback.
    pub records: u64,
    /// Records that could not be read (bad UTF-8, over the size limit, broken JSON).
    pub bad: u64,
}

/// A problem that ended reading an input early (a truncated gzip stream, an I/O error, a
/// syntax error in a document stream). Records before it were delivered.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ReadError {
    /// Where reading stopped.
    pub location: Location,
    /// Why.
    pub message: String,
}

/// Callback receiving each record's text and location. Bad records are delivered as `Err`.
pub type RecordFn<'f> = dyn FnMut(Result<(&str, Location), DecodeError>) + 'f;

/// Counts bytes read through it.
struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Reads records from `input` (plain or gzip), calling `f` for each.
pub fn read_records<R: Read>(
    input: R,
    max_record: usize,
    f: &mut RecordFn<'_>,
) -> Result<(Layout, ReadStats), ReadError> {
    let mut raw = BufReader::with_capacity(256 * 1024, input);
    let head = raw.fill_buf().map_err(|e| io_err(0, e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        let gz = BufReader::with_capacity(256 * 1024, MultiGzDecoder::new(raw));
        read_plain(gz, max_record, f)
    } else {
        read_plain(raw, max_record, f)
    }
}

fn io_err(line: u64, e: io::Error) -> ReadError {
    let message = match e.kind() {
        io::ErrorKind::UnexpectedEof => "input ends early (truncated gzip?)".to_string(),
        _ => e.to_string(),
    };
    ReadError {
        location: Location::line(line.max(1)),
        message,
    }
}

fn read_plain<R: BufRead>(
    mut r: R,
    max_record: usize,
    f: &mut RecordFn<'_>,
) -> Result<(Layout, ReadStats), ReadError> {
    let mut stats = ReadStats::default();
    // Skip leading whitespace and a UTF-8 byte-order mark to find the first significant byte.
    let first = loop {
        let buf = r.fill_buf().map_err(|e| io_err(1, e))?;
        if buf.is_empty() {
            return Ok((Layout::Empty, stats));
        }
        let skip = buf
            .iter()
            .position(|b| !b" \t\r\n".contains(b) && *b != 0xEF && *b != 0xBB && *b != 0xBF);
        match skip {
            Some(i) => {
                let b = buf[i];
                // Only consume whitespace on the first line; keep line numbers honest by
                // leaving newlines for the line reader.
                if !buf[..i].contains(&b'\n') {
                    r.consume(i);
                }
                break b;
            }
            None => {
                let n = buf.len();
                if buf.contains(&b'\n') {
                    // Leading blank lines: let the line reader count them.
                    break b'\n';
                }
                r.consume(n);
            }
        }
    };
    if first == b'[' {
        return read_array(r, f, &mut stats).map(|()| (Layout::Array, stats));
    }
    // Read the first line and decide between lines and documents.
    let mut line = Vec::new();
    let mut line_no = 0u64;
    let too_long = read_line_bounded(&mut r, &mut line, max_record).map_err(|e| io_err(1, e))?;
    stats.bytes += line.len() as u64;
    let trimmed = trim(&line);
    if first == b'{' && !too_long {
        let complete = match serde_json::from_slice::<serde::de::IgnoredAny>(trimmed) {
            Ok(_) => true,
            Err(e) => e.classify() != serde_json::error::Category::Eof,
        };
        if !complete {
            let chained = io::Cursor::new(line).chain(r);
            return read_documents(chained, f, &mut stats).map(|()| (Layout::Documents, stats));
        }
    }
    line_no += 1;
    deliver_line(trimmed, too_long, line_no, max_record, f, &mut stats);
    loop {
        line.clear();
        let too_long =
            read_line_bounded(&mut r, &mut line, max_record).map_err(|e| io_err(line_no + 1, e))?;
        if line.is_empty() && !too_long {
            break;
        }
        stats.bytes += line.len() as u64;
        line_no += 1;
        deliver_line(trim(&line), too_long, line_no, max_record, f, &mut stats);
    }
    Ok((Layout::Lines, stats))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

fn deliver_line(
    text: &[u8],
    too_long: bool,
    line_no: u64,
    max_record: usize,
    f: &mut RecordFn<'_>,
    stats: &mut ReadStats,
) {
    if too_long {
        stats.bad += 1;
        f(Err(DecodeError {
            location: Location::line(line_no),
            error: EventError::TooLarge {
                size: max_record + 1,
                limit: max_record,
            },
        }));
        return;
    }
    if text.is_empty() {
        return;
    }
    match std::str::from_utf8(text) {
        Ok(s) => {
            stats.records += 1;
            f(Ok((s, Location::line(line_no))));
        }
        Err(e) => {
            stats.bad += 1;
            f(Err(DecodeError {
                location: Location::line(line_no),
                error: EventError::Invalid(format!("not UTF-8: {e}")),
            }));
        }
    }
}

/// Reads one line (up to and including `\n`) into `buf`, keeping at most `max + 1` bytes.
/// Returns true when the line was longer than `max` (the rest of it is consumed unseen).
fn read_line_bounded<R: BufRead>(r: &mut R, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    let mut too_long = false;
    loop {
        let (done, used) = {
            let avail = r.fill_buf()?;
            if avail.is_empty() {
                return Ok(too_long);
            }
            match memchr::memchr(b'\n', avail) {
                Some(i) => {
                    if !too_long {
                        buf.extend_from_slice(&avail[..=i]);
                    }
                    (true, i + 1)
                }
                None => {
                    if !too_long {
                        buf.extend_from_slice(avail);
                    }
                    (false, avail.len())
                }
            }
        };
        r.consume(used);
        if buf.len() > max + 1 {
            too_long = true;
            buf.clear();
        }
        if done {
            return Ok(too_long);
        }
    }
}

fn read_documents<R: Read>(
    r: R,
    f: &mut RecordFn<'_>,
    stats: &mut ReadStats,
) -> Result<(), ReadError> {
    let mut counting = Counting { inner: r, n: 0 };
    let mut index = 0usize;
    let result = {
        let stream =
            serde_json::Deserializer::from_reader(&mut counting).into_iter::<Box<RawValue>>();
        let mut err = None;
        for item in stream {
            match item {
                Ok(v) => {
                    stats.records += 1;
                    f(Ok((
                        v.get(),
                        Location {
                            line: None,
                            item: Some(index),
                        },
                    )));
                    index += 1;
                }
                Err(e) => {
                    stats.bad += 1;
                    err = Some(ReadError {
                        location: Location::line(e.line() as u64),
                        message: format!("invalid JSON, rest of input skipped: {e}"),
                    });
                    break;
                }
            }
        }
        err
    };
    stats.bytes = counting.n;
    match result {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

struct ArraySeed<'a, 'f> {
    f: &'a mut RecordFn<'f>,
    stats: &'a mut ReadStats,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of audit events")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        while let Some(v) = seq.next_element::<Box<RawValue>>()? {
            self.stats.records += 1;
            (self.f)(Ok((
                v.get(),
                Location {
                    line: None,
                    item: Some(i),
                },
            )));
            i += 1;
        }
        Ok(())
    }
}

fn read_array<R: Read>(r: R, f: &mut RecordFn<'_>, stats: &mut ReadStats) -> Result<(), ReadError> {
    let mut counting = Counting { inner: r, n: 0 };
    let res = {
        let mut de = serde_json::Deserializer::from_reader(&mut counting);
        ArraySeed {
            f,
            stats: &mut *stats,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
    };
    stats.bytes = counting.n;
    res.map_err(|e| {
        stats.bad += 1;
        ReadError {
            location: Location::line(e.line() as u64),
            message: format!("invalid JSON array, rest of input skipped: {e}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(input: &[u8]) -> (Layout, Vec<String>, Vec<String>, Option<String>) {
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        let res = read_records(input, 1000, &mut |r| match r {
            Ok((t, l)) => ok.push(format!("{l}={t}")),
            Err(e) => bad.push(e.to_string()),
        });
        match res {
            Ok((layout, _)) => (layout, ok, bad, None),
            Err(e) => (Layout::Empty, ok, bad, Some(e.to_string())),
        }
    }

    #[test]
    fn json_lines_with_bad_line_and_blank_lines() {
        let (l, ok, bad, err) = collect(b"{\"a\":1}\n\n{bad\n{\"b\":2}\n");
        assert_eq!(l, Layout::Lines);
        assert_eq!(
            ok,
            vec!["line 1={\"a\":1}", "line 3={bad", "line 4={\"b\":2}"]
        );
        assert!(bad.is_empty() && err.is_none());
    }

    #[test]
    fn pretty_documents() {
        let (l, ok, _, err) = collect(b"{\n  \"a\": 1\n}\n{\n \"b\": 2\n}\n");
        assert_eq!(l, Layout::Documents);
        assert_eq!(ok.len(), 2);
        assert!(err.is_none());
    }

    #[test]
    fn array_streams_elements() {
        let (l, ok, _, err) = collect(b"  [ {\"a\":1}, {\"b\":[2]} ]\n");
        assert_eq!(l, Layout::Array);
        assert_eq!(ok, vec!["item 0={\"a\":1}", "item 1={\"b\":[2]}"]);
        assert!(err.is_none());
    }

    #[test]
    fn overlong_line_is_skipped_not_held() {
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 5000));
        input.extend(b"\n{\"c\":3}\n");
        let (_, ok, bad, _) = collect(&input);
        assert_eq!(ok.len(), 2);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("line 2:"), "{bad:?}");
    }

    #[test]
    fn gzip_and_truncated_gzip() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for i in 0..200 {
            writeln!(enc, "{{\"auditID\":\"{i}\",\"verb\":\"get\"}}").unwrap();
        }
        let gz = enc.finish().unwrap();
        let (l, ok, _, err) = collect(&gz);
        assert_eq!((l, ok.len(), err), (Layout::Lines, 200, None));
        let cut = &gz[..gz.len() / 2];
        let (_, ok, _, err) = collect(cut);
        assert!(ok.len() < 200);
        assert!(
            err.unwrap().contains("truncated"),
            "truncated gzip must be reported"
        );
    }

    #[test]
    fn empty_input() {
        let (_, ok, bad, err) = collect(b"   \n\n");
        assert!(ok.is_empty() && bad.is_empty() && err.is_none());
        assert_eq!(collect(b"   ").0, Layout::Empty);
    }
}
