//! The tailer's durable checkpoint: where to resume each followed file after a restart.
//!
//! One small JSON document holds one entry per followed path:
//!
//! ```json
//! {"version":1,"files":[{"path":"/var/log/kubernetes/audit/audit.log",
//!   "reading":"/var/log/kubernetes/audit/audit.log","fingerprint":"9f0c2d4e1a7b3c55",
//!   "offset":1048576,"line":812,"known_backups":["0d1e...","77a0..."]}]}
//! ```
//!
//! - `fingerprint`: hash of the head (first line, at most 256 bytes) of the generation being
//!   read; it identifies that content again even after a rename, a gzip or an inode reuse.
//! - `offset` / `line`: end of the last complete line handed on (byte offset in the
//!   uncompressed content, and the number of lines up to there).
//! - `known_backups`: fingerprints of the rotated backups that are older than that
//!   generation; any backup not in this set at restart was rotated while we were down.
//!
//! Written atomically ([`store`]): a temporary file in the same directory, fsync, rename over
//! the old one, fsync of the directory. A crash leaves either the old or the new checkpoint,
//! never a torn one.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Version of the format written by this build.
pub const VERSION: u32 = 1;

/// A content fingerprint: xxh3 of a file's head (see [`crate::ingest::tail`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Hex text: readable, and safe from JSON tools that turn numbers into doubles.
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        u64::from_str_radix(&s, 16)
            .map(Fingerprint)
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a hex fingerprint")))
    }
}

/// The whole checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// One entry per followed path.
    pub files: Vec<FileCheckpoint>,
}

/// Resume point of one followed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCheckpoint {
    /// The followed path (what the user named or a glob matched).
    pub path: PathBuf,
    /// The file being read when the checkpoint was written (a backup while catching up);
    /// for humans only, restart matches by fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading: Option<PathBuf>,
    /// Fingerprint of the generation being read, when its head was complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// Byte offset just after the last complete line handed on.
    pub offset: u64,
    /// Number of lines up to `offset`.
    #[serde(default)]
    pub line: u64,
    /// Fingerprints of backups older than that generation.
    #[serde(default)]
    pub known_backups: Vec<Fingerprint>,
}

/// A checkpoint that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading, writing, syncing or renaming failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file exists but is not a checkpoint this build understands.
    #[error("checkpoint {path} is invalid ({message}); fix or delete it to start over")]
    Invalid {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the checkpoint at `path`; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if cp.version != VERSION {
        return Err(CheckpointError::Invalid {
            path: path.to_path_buf(),
            message: format!("version {} (this build writes {VERSION})", cp.version),
        });
    }
    Ok(Some(cp))
}

/// Writes `cp` to `path` atomically and durably (temp file, fsync, rename, fsync directory).
pub fn store(path: &Path, cp: &Checkpoint) -> Result<(), CheckpointError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| CheckpointError::Invalid {
            path: path.to_path_buf(),
            message: "the checkpoint path names no file".into(),
        })?;
    // Same directory, so the rename cannot cross file systems and stays atomic.
    let tmp = dir.join(format!(".{name}.tmp"));
    let bytes = serde_json::to_vec(cp).map_err(|e| CheckpointError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err(path))?;
    // The rename is only durable once the directory entry is on disk.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/cp.json");
        assert!(load(&p).unwrap().is_none());
        let cp = Checkpoint {
            version: VERSION,
            files: vec![FileCheckpoint {
                path: "/a/audit.log".into(),
                reading: None,
                fingerprint: Some(Fingerprint(0xdead_beef_0000_0001)),
                offset: 10,
                line: 2,
                known_backups: vec![Fingerprint(1), Fingerprint(u64::MAX)],
            }],
        };
        store(&p, &cp).unwrap();
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"deadbeef00000001\""), "{text}");
        assert!(text.contains("\"ffffffffffffffff\""), "{text}");
        assert_eq!(load(&p).unwrap(), Some(cp));
        assert!(!dir.path().join("sub/.cp.json.tmp").exists());
    }

    #[test]
    fn invalid_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cp.json");
        fs::write(
            &p,
            b"{\"version\":1,\"files\":[{\"path\":\"x\",\"offset\":\"no\"}]}",
        )
        .unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("cp.json") && e.contains("invalid"), "{e}");
        fs::write(&p, b"{\"version\":7,\"files\":[]}").unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("version 7"));
    }
}
