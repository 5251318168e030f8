//! The dead-letter file: records a SIEM rejected for good, with the reason, as JSON lines.
//!
//! Nothing is dropped silently: a mapping error in Elasticsearch or a bad index in Splunk
//! lands here, where an operator can fix the cause and replay the file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// An append-only JSON-lines file of rejected records. The file is created on the first
/// rejection, so sinks that never reject leave nothing behind.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl DeadLetter {
    /// A dead-letter file at `path` (created, with its directory, on first use).
    pub fn open(path: &Path) -> std::io::Result<DeadLetter> {
        if path.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is a directory",
                path.display()
            )));
        }
        Ok(DeadLetter {
            path: path.to_path_buf(),
            file: Mutex::new(None),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line: `{"time","sink","reason","record"}` where `record` is the JSON
    /// document that was rejected.
    pub fn write(&self, sink: &str, reason: &str, record_json: &[u8]) -> std::io::Result<()> {
        let record: &serde_json::value::RawValue = match std::str::from_utf8(record_json)
            .ok()
            .and_then(|s| serde_json::from_str(s).ok())
        {
            Some(r) => r,
            None => return self.write_line(sink, reason, &serde_json::Value::Null),
        };
        self.write_line(sink, reason, record)
    }

    fn write_line<T: serde::Serialize + ?Sized>(
        &self,
        sink: &str,
        reason: &str,
        record: &T,
    ) -> std::io::Result<()> {
        let line = serde_json::json!({
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "sink": sink,
            "reason": reason,
            "record": record,
        });
        let mut s = line.to_string();
        s.push('\n');
        let mut f = self.file.lock();
        if f.is_none() {
            if let Some(d) = self.path.parent() {
                if !d.as_os_str().is_empty() {
                    std::fs::create_dir_all(d)?;
                }
            }
            *f = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        match f.as_mut() {
            Some(file) => file.write_all(s.as_bytes()),
            None => Err(std::io::Error::other("dead-letter file not open")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reason_and_record() {
        let d = tempfile::tempdir().unwrap();
        let dl = DeadLetter::open(&d.path().join("x/dead.jsonl")).unwrap();
        dl.write("es", "mapper_parsing_exception: bad", br#"{"a":1}"#)
            .unwrap();
        let t = std::fs::read_to_string(dl.path()).unwrap();
        let v: serde_json::Value = serde_json::from_str(t.trim()).unwrap();
        assert_eq!(v["sink"], "es");
        assert_eq!(v["record"]["a"], 1);
        assert!(v["reason"].as_str().unwrap().contains("mapper_parsing"));
    }
}
