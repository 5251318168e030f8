//! Alerts to a file as JSON lines, rotated by size.
//!
//! Rotation renames `alerts.jsonl` to `alerts.jsonl.1` (shifting older ones up to
//! `keep`), then starts a new file, so a shipper following the path by name sees a
//! rename+create, like the API server's own log.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{BoxFuture, SendOutcome, Sink};
use crate::model::SharedAlert;

/// File sink settings.
#[derive(Debug, Clone)]
pub struct FileSinkConfig {
    /// Path of the active file.
    pub path: PathBuf,
    /// Rotate when the file would exceed this many bytes (0: never).
    pub max_bytes: u64,
    /// Rotated files to keep.
    pub keep: usize,
}

#[derive(Debug)]
struct State {
    file: File,
    size: u64,
}

/// The file sink.
#[derive(Debug)]
pub struct FileSink {
    cfg: FileSinkConfig,
    state: Arc<Mutex<State>>,
}

impl FileSink {
    /// Opens (appending) or creates the file.
    pub fn open(cfg: FileSinkConfig) -> std::io::Result<FileSink> {
        if let Some(dir) = cfg.path.parent() {
            if !dir.as_os_str().is_empty() {
                fs::create_dir_all(dir)?;
            }
        }
        let file = open_append(&cfg.path)?;
        let size = file.metadata()?.len();
        Ok(FileSink {
            cfg,
            state: Arc::new(Mutex::new(State { file, size })),
        })
    }
}

fn open_append(p: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

fn rotated(p: &Path, n: usize) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn write_batch(cfg: &FileSinkConfig, st: &mut State, data: &[u8]) -> std::io::Result<()> {
    if cfg.max_bytes > 0 && st.size > 0 && st.size + data.len() as u64 > cfg.max_bytes {
        st.file.sync_data()?;
        for n in (1..cfg.keep.max(1)).rev() {
            let from = rotated(&cfg.path, n);
            if from.exists() {
                fs::rename(&from, rotated(&cfg.path, n + 1))?;
            }
        }
        fs::rename(&cfg.path, rotated(&cfg.path, 1))?;
        st.file = open_append(&cfg.path)?;
        st.size = 0;
    }
    st.file.write_all(data)?;
    st.size += data.len() as u64;
    Ok(())
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        "file"
    }

    fn send<'a>(&'a self, batch: &'a [SharedAlert]) -> BoxFuture<'a, SendOutcome> {
        let mut data = Vec::with_capacity(batch.len() * 1024);
        for a in batch {
            data.extend_from_slice(a.to_json().as_bytes());
            data.push(b'\n');
        }
        let cfg = self.cfg.clone();
        let state = self.state.clone();
        Box::pin(async move {
            let res =
                tokio::task::spawn_blocking(move || write_batch(&cfg, &mut state.lock(), &data))
                    .await;
            match res {
                Ok(Ok(())) => SendOutcome::Done,
                Ok(Err(e)) => SendOutcome::Retry {
                    reason: e.to_string(),
                    after: None,
                },
                Err(e) => SendOutcome::Retry {
                    reason: e.to_string(),
                    after: None,
                },
            }
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), String>> {
        let state = self.state.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || state.lock().file.sync_all())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let sink = FileSink::open(FileSinkConfig {
            path: path.clone(),
            max_bytes: 3000,
            keep: 2,
        })
        .unwrap();
        let ev = crate::model::AuditEvent::parse(r#"{"auditID":"x","verb":"get"}"#).unwrap();
        let meta = crate::model::RuleMeta {
            id: "r".into(),
            title: "t".into(),
            level: crate::model::Level::Low,
            tags: vec![],
            description: String::new(),
            references: vec![],
            author: None,
            source: "test".into(),
        };
        let a: SharedAlert = Arc::new(crate::model::Alert::new(&meta, &ev, chrono::Utc::now()));
        for _ in 0..10 {
            assert_eq!(sink.send(&[a.clone(), a.clone()]).await, SendOutcome::Done);
        }
        sink.flush().await.unwrap();
        assert!(rotated(&path, 1).exists());
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists(), "keep=2");
        for p in [path.clone(), rotated(&path, 1)] {
            let text = fs::read_to_string(&p).unwrap();
            assert!(text.len() <= 3000);
            for line in text.lines() {
                serde_json::from_str::<serde_json::Value>(line).unwrap();
            }
        }
    }
}
