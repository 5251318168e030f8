//! Rotated backups of a followed file: recognising their names, ordering them, and
//! fingerprinting their content.
//!
//! Names recognised for a followed `dir/audit.log`:
//! - lumberjack (the API server): `audit-2006-01-02T15-04-05.000.log` and the same plus
//!   `.gz`; ordered by the UTC rotation time in the name;
//! - logrotate: `audit.log.1`, `audit.log-20260701` (dateext: a digit after the dash), each
//!   optionally `.gz`; ordered by modification time, since numbered names shift on every
//!   rotation.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use flate2::read::MultiGzDecoder;

use crate::ingest::checkpoint::Fingerprint;

/// How many head bytes identify a file's content. Audit lines carry the auditID (a UUID)
/// within their first ~100 bytes, so 256 bytes tell generations apart.
pub(crate) const HEAD_LEN: usize = 256;

/// Fingerprint of a head: the first line (with its newline) when it fits in [`HEAD_LEN`],
/// else the first [`HEAD_LEN`] bytes. `None` while the head is still incomplete (shorter,
/// no newline yet): such content holds no complete line, so nothing is lost by not
/// identifying it.
pub(crate) fn fingerprint_of(head: &[u8]) -> Option<Fingerprint> {
    let window = &head[..head.len().min(HEAD_LEN)];
    let n = match memchr::memchr(b'\n', window) {
        Some(i) => i + 1,
        None if window.len() >= HEAD_LEN => HEAD_LEN,
        None => return None,
    };
    Some(Fingerprint(xxhash_rust::xxh3::xxh3_64(&window[..n])))
}

/// The first [`HEAD_LEN`] bytes of an open plain file (positioned reads; the file offset is
/// untouched).
pub(crate) fn read_head_at(f: &File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; HEAD_LEN];
    let mut n = 0;
    while n < HEAD_LEN {
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// The first [`HEAD_LEN`] decompressed bytes of a gzip file. A stream that is still being
/// written yields what is there so far.
fn read_head_gz(path: &Path) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(HEAD_LEN);
    let dec = MultiGzDecoder::new(io::BufReader::new(File::open(path)?));
    match dec.take(HEAD_LEN as u64).read_to_end(&mut out) {
        Ok(_) => Ok(out),
        // A truncated stream still gives a usable head if enough came out.
        Err(_) if !out.is_empty() => Ok(out),
        Err(e) => Err(e),
    }
}

/// Splits `audit.log` into (`audit`, `.log`); a name without an extension has `""`.
fn stem_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

/// Rotation time (ms since the epoch, UTC) of a lumberjack backup name.
fn lumberjack_time(ts: &str) -> Option<i64> {
    // Fixed width: 2006-01-02T15-04-05.000
    if ts.len() != 23 {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H-%M-%S%.3f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// How a backup name relates to the followed name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameKind {
    /// lumberjack, with the rotation time from the name.
    Lumberjack(i64),
    /// logrotate (numbered or dateext); ordered by mtime.
    Logrotate,
}

/// Whether `candidate` is a rotated backup of `followed` (both plain file names).
pub(crate) fn backup_kind(followed: &str, candidate: &str) -> Option<NameKind> {
    if candidate == followed {
        return None;
    }
    let plain = candidate.strip_suffix(".gz").unwrap_or(candidate);
    let (stem, ext) = stem_ext(followed);
    if let Some(ts) = plain
        .strip_prefix(stem)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_suffix(ext))
    {
        if let Some(t) = lumberjack_time(ts) {
            return Some(NameKind::Lumberjack(t));
        }
    }
    let rest = plain.strip_prefix(followed)?;
    if let Some(n) = rest.strip_prefix('.') {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            return Some(NameKind::Logrotate);
        }
    }
    if let Some(d) = rest.strip_prefix('-') {
        // dateext (`-%Y%m%d` by default): a digit first, so `audit.log-other` stays a
        // file of its own.
        if d.starts_with(|c: char| c.is_ascii_digit()) {
            return Some(NameKind::Logrotate);
        }
    }
    None
}

/// One rotated backup found on disk.
#[derive(Debug, Clone)]
pub(crate) struct Backup {
    /// Where it is.
    pub path: PathBuf,
    /// Whether it is gzip-compressed (by name; lumberjack and logrotate both use `.gz`).
    pub gz: bool,
    /// Device and inode (of the file on disk, not of the content's original file).
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Rotation order key (ms since the epoch).
    pub order: i64,
    /// Which rotation scheme the name belongs to.
    pub kind: NameKind,
    /// Content fingerprint, when its head is complete.
    pub fp: Option<Fingerprint>,
}

/// Fingerprints of backups, remembered between polls: a backup's head does not change once
/// complete, so each file is read once rather than on every poll.
#[derive(Debug, Default)]
pub(crate) struct FpCache {
    map: HashMap<(u64, u64, u64, i64), Fingerprint>,
    touched: Vec<(u64, u64, u64, i64)>,
}

impl FpCache {
    /// Forgets entries not used since the last call (deleted or changed files).
    pub fn sweep(&mut self) {
        let keep: std::collections::HashSet<_> = self.touched.drain(..).collect();
        self.map.retain(|k, _| keep.contains(k));
    }
}

/// Lists the backups of `followed` in its directory, oldest rotation first.
pub(crate) fn list_backups(followed: &Path, cache: &mut FpCache) -> io::Result<Vec<Backup>> {
    let Some(name) = followed.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let dir = match followed.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        let fname = entry.file_name();
        let Some(fname) = fname.to_str() else {
            continue;
        };
        let Some(kind) = backup_kind(name, fname) else {
            continue;
        };
        let path = entry.path();
        // Gone between readdir and stat (pruned, or the plain one removed after gzip).
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let mtime_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        let order = match kind {
            NameKind::Lumberjack(t) => t,
            NameKind::Logrotate => mtime_ms,
        };
        let gz = fname.ends_with(".gz");
        let key = (
            meta.dev(),
            meta.ino(),
            meta.len(),
            meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
        );
        let fp = match cache.map.get(&key) {
            Some(fp) => Some(*fp),
            None => {
                let head = if gz {
                    read_head_gz(&path)
                } else {
                    File::open(&path).and_then(|f| read_head_at(&f))
                };
                let fp = head.ok().and_then(|h| fingerprint_of(&h));
                if let Some(fp) = fp {
                    cache.map.insert(key, fp);
                }
                fp
            }
        };
        cache.touched.push(key);
        out.push(Backup {
            path,
            gz,
            dev: meta.dev(),
            ino: meta.ino(),
            order,
            kind,
            fp,
        });
    }
    // Oldest first; the name breaks ties (and puts `x.log` before `x.log.gz`).
    out.sort_by(|a, b| a.order.cmp(&b.order).then_with(|| a.path.cmp(&b.path)));
    Ok(out)
}

/// Keeps one backup per fingerprint (a plain file and its `.gz` twin while lumberjack is
/// compressing hold the same content): the plain one, which is complete; drops backups
/// without a complete head (they hold no complete line).
pub(crate) fn dedup_twins(list: Vec<Backup>) -> Vec<Backup> {
    let mut out: Vec<Backup> = Vec::with_capacity(list.len());
    for b in list {
        let Some(fp) = b.fp else { continue };
        match out.iter_mut().find(|o| o.fp == Some(fp)) {
            Some(o) => {
                if o.gz && !b.gz {
                    // Keep the rotation position of the earlier entry, take the plain file.
                    let order = o.order;
                    *o = b;
                    o.order = order;
                }
            }
            None => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            backup_kind("audit.log", "audit-2026-07-01T10-20-30.123.log"),
            Some(NameKind::Lumberjack(
                lumberjack_time("2026-07-01T10-20-30.123").unwrap()
            ))
        );
        assert!(backup_kind("audit.log", "audit-2026-07-01T10-20-30.123.log.gz").is_some());
        assert_eq!(
            backup_kind("audit.log", "audit.log.1"),
            Some(NameKind::Logrotate)
        );
        assert_eq!(
            backup_kind("audit.log", "audit.log.2.gz"),
            Some(NameKind::Logrotate)
        );
        assert_eq!(
            backup_kind("audit.log", "audit.log-20260701"),
            Some(NameKind::Logrotate)
        );
        assert_eq!(backup_kind("audit.log", "audit.log"), None);
        assert_eq!(backup_kind("audit.log", "audit-other.log"), None);
        assert_eq!(backup_kind("audit.log", "audit.log.x"), None);
        assert_eq!(backup_kind("audit.log", "audit.log-other"), None);
        assert_eq!(backup_kind("audit.log", "kube-audit.log"), None);
        assert_eq!(
            backup_kind("audit", "audit-2026-07-01T10-20-30.123"),
            backup_kind("audit", "audit-2026-07-01T10-20-30.123.gz")
        );
        let a = lumberjack_time("2026-07-01T10-20-30.123").unwrap();
        let b = lumberjack_time("2026-07-01T10-20-30.124").unwrap();
        assert_eq!(b - a, 1);
    }

    #[test]
    fn fingerprints() {
        assert_eq!(fingerprint_of(b"abc"), None);
        let a = fingerprint_of(b"abc\nrest").unwrap();
        assert_eq!(fingerprint_of(b"abc\nother"), Some(a));
        assert_ne!(fingerprint_of(b"abd\n"), Some(a));
        let long = vec![b'x'; 300];
        assert!(fingerprint_of(&long).is_some());
        assert_eq!(fingerprint_of(&long[..255]), None);
        assert_eq!(fingerprint_of(&long[..256]), fingerprint_of(&long));
    }
}
