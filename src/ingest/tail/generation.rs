//! One generation of a followed file (the content between two rotations or truncations)
//! and the line reader over it.
//!
//! A generation is read through the file descriptor opened when it was discovered, so it
//! can still be finished after the path has been renamed, gzipped away or deleted.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::backups::{fingerprint_of, read_head_at, Backup, HEAD_LEN};
use super::{PollStats, TailLine};
use crate::ingest::checkpoint::Fingerprint;

/// Bytes read from the file per `read` call.
const CHUNK: usize = 64 * 1024;

enum Src {
    Plain(File),
    Gz(Box<MultiGzDecoder<BufReader<File>>>),
}

/// Why [`Gen::pump`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pump {
    /// Everything available was read.
    Eof,
    /// The per-poll line budget ran out; more may be available.
    Budget,
}

/// A generation being read.
pub(crate) struct Gen {
    src: Src,
    /// The file it was opened from (a backup name while catching up).
    pub file: PathBuf,
    /// Device and inode of the open file (meaningful for plain files).
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Fingerprint of the head, once complete.
    pub fp: Option<Fingerprint>,
    /// End of the last complete line consumed (delivered or skipped).
    pub offset: u64,
    /// Lines up to `offset`.
    pub line: u64,
    /// Bytes read from the source so far (uncompressed).
    pub read_pos: u64,
    /// Bytes `[start..]` are read but not yet consumed: a partial line, or complete lines
    /// left over when the budget ran out. Empty while skipping an over-long line.
    buf: Vec<u8>,
    start: usize,
    /// Inside a line longer than `max_line_bytes`: discard until its newline.
    skipping: bool,
    /// Fingerprints of backups older than this generation (for the checkpoint).
    pub known_before: BTreeSet<Fingerprint>,
}

impl std::fmt::Debug for Gen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gen")
            .field("file", &self.file)
            .field("fp", &self.fp)
            .field("offset", &self.offset)
            .field("read_pos", &self.read_pos)
            .finish()
    }
}

impl Gen {
    fn new(src: Src, file: PathBuf, dev: u64, ino: u64) -> Gen {
        Gen {
            src,
            file,
            dev,
            ino,
            fp: None,
            offset: 0,
            line: 0,
            read_pos: 0,
            buf: Vec::new(),
            start: 0,
            skipping: false,
            known_before: BTreeSet::new(),
        }
    }

    /// Opens the live file at `path` (from its start).
    pub fn open_plain(path: &Path) -> io::Result<Gen> {
        let f = File::open(path)?;
        let meta = f.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut g = Gen::new(Src::Plain(f), path.to_path_buf(), meta.dev(), meta.ino());
        g.refresh_fp()?;
        Ok(g)
    }

    /// Opens a backup, positioned at `offset` (uncompressed bytes) with `line` lines before.
    pub fn open_backup(b: &Backup, offset: u64, line: u64) -> io::Result<Gen> {
        let f = File::open(&b.path)?;
        let src = if b.gz {
            Src::Gz(Box::new(MultiGzDecoder::new(BufReader::new(f))))
        } else {
            Src::Plain(f)
        };
        let mut g = Gen::new(src, b.path.clone(), b.dev, b.ino);
        g.fp = b.fp;
        g.seek_to(offset, line)?;
        Ok(g)
    }

    /// Positions the reader at `offset` (nothing buffered).
    pub fn seek_to(&mut self, offset: u64, line: u64) -> io::Result<()> {
        match &mut self.src {
            Src::Plain(f) => {
                f.seek(SeekFrom::Start(offset))?;
            }
            Src::Gz(d) => {
                // A gzip stream cannot seek: decompress and discard.
                let skipped = io::copy(&mut d.as_mut().take(offset), &mut io::sink())?;
                if skipped < offset {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("holds {skipped} bytes, fewer than the checkpoint offset {offset}"),
                    ));
                }
            }
        }
        self.offset = offset;
        self.read_pos = offset;
        self.line = line;
        self.buf.clear();
        self.start = 0;
        self.skipping = false;
        Ok(())
    }

    /// Treats the bytes up to the next newline as the tail of an over-long line.
    pub fn skip_current_line(&mut self) {
        self.skipping = true;
    }

    /// Starts over from byte 0 (the file was truncated in place).
    pub fn reset(&mut self) -> io::Result<()> {
        self.fp = None;
        self.seek_to(0, 0)?;
        self.refresh_fp()
    }

    /// The current size of a plain file.
    pub fn size(&self) -> io::Result<Option<u64>> {
        match &self.src {
            Src::Plain(f) => Ok(Some(f.metadata()?.len())),
            Src::Gz(_) => Ok(None),
        }
    }

    /// The fingerprint of the file's head as it is on disk now (plain files only).
    pub fn head_fp_now(&self) -> io::Result<Option<Fingerprint>> {
        match &self.src {
            Src::Plain(f) => Ok(fingerprint_of(&read_head_at(f)?)),
            Src::Gz(_) => Ok(self.fp),
        }
    }

    /// Computes the fingerprint once the head is complete.
    pub fn refresh_fp(&mut self) -> io::Result<()> {
        if self.fp.is_none() {
            self.fp = self.head_fp_now()?;
        }
        Ok(())
    }

    /// Whether the file was truncated (or truncated and rewritten) since we last read it:
    /// shorter than what we read, or a head different from the one we saw.
    pub fn truncated(&self) -> io::Result<bool> {
        let Src::Plain(f) = &self.src else {
            return Ok(false);
        };
        if f.metadata()?.len() < self.read_pos {
            return Ok(true);
        }
        if let Some(fp) = self.fp {
            return Ok(fingerprint_of(&read_head_at(f)?) != Some(fp));
        }
        if self.read_pos == 0 {
            return Ok(false);
        }
        // No complete head yet: we hold every byte read so far (offset is 0, fewer than
        // HEAD_LEN bytes, no newline), so compare them with the file.
        let n = self.read_pos as usize;
        if self.offset != 0 || self.skipping || n > HEAD_LEN || self.buf.len() - self.start != n {
            return Ok(false);
        }
        let head = read_head_at(f)?;
        Ok(head.len() < n || head[..n] != self.buf[self.start..])
    }

    /// Whether a partial line (or an over-long line) is pending.
    pub fn has_partial(&self) -> bool {
        self.skipping || self.buf.len() > self.start
    }

    /// Reads what is available, handing each complete line to `out`, until end of file or
    /// until `budget` lines were consumed.
    pub fn pump(
        &mut self,
        followed: &Path,
        max_line: usize,
        budget: &mut usize,
        out: &mut dyn FnMut(TailLine<'_>),
        stats: &mut PollStats,
    ) -> io::Result<Pump> {
        loop {
            if self.skipping {
                if let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..]) {
                    // The over-long line ends here.
                    let end = self.start + i + 1;
                    let after = (self.buf.len() - end) as u64;
                    self.line += 1;
                    self.offset = self.read_pos - after;
                    self.start = end;
                    self.skipping = false;
                    stats.too_long += 1;
                    tracing::warn!(
                        file = %self.file.display(), line = self.line, limit = max_line,
                        "Skipped a line longer than the limit."
                    );
                    *budget = budget.saturating_sub(1);
                } else {
                    self.buf.clear();
                    self.start = 0;
                }
            }
            while !self.skipping {
                let Some(i) = memchr::memchr(b'\n', &self.buf[self.start..]) else {
                    break;
                };
                if *budget == 0 {
                    return Ok(Pump::Budget);
                }
                *budget -= 1;
                let end = self.start + i;
                let len = (end + 1 - self.start) as u64;
                let line_offset = self.offset;
                if self.offset == 0 && self.fp.is_none() {
                    // The first line fixes the fingerprint (same rule as for a file head).
                    self.fp = fingerprint_of(&self.buf[self.start..=end]);
                }
                self.line += 1;
                self.offset += len;
                let raw = &self.buf[self.start..end];
                let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                self.start = end + 1;
                if raw.len() > max_line {
                    stats.too_long += 1;
                    tracing::warn!(
                        file = %self.file.display(), line = self.line, limit = max_line,
                        "Skipped a line longer than the limit."
                    );
                    continue;
                }
                if raw.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match std::str::from_utf8(raw) {
                    Ok(text) => {
                        stats.lines += 1;
                        stats.bytes += len;
                        out(TailLine {
                            text,
                            path: followed,
                            file: &self.file,
                            line: self.line,
                            offset: line_offset,
                        });
                    }
                    Err(_) => {
                        stats.not_utf8 += 1;
                        tracing::warn!(
                            file = %self.file.display(), line = self.line,
                            "Skipped a line that is not UTF-8."
                        );
                    }
                }
            }
            if !self.skipping && self.buf.len() - self.start > max_line {
                // Do not hold an over-long line in memory: drop it and skip to its end.
                self.skipping = true;
                self.buf.clear();
                self.start = 0;
            }
            // Compact, then read more.
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let have = self.buf.len();
            self.buf.resize(have + CHUNK, 0);
            let n = loop {
                let r = match &mut self.src {
                    Src::Plain(f) => f.read(&mut self.buf[have..]),
                    Src::Gz(d) => d.read(&mut self.buf[have..]),
                };
                match r {
                    Ok(n) => break Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            self.buf.truncate(have + *n.as_ref().unwrap_or(&0));
            let n = n?;
            if n == 0 {
                return Ok(Pump::Eof);
            }
            self.read_pos += n as u64;
        }
    }

    /// Called when a generation is finished (rotated away and read to its end): a partial
    /// last line will never be completed.
    pub fn finish(&self, stats: &mut PollStats) {
        if self.has_partial() {
            stats.incomplete += 1;
            tracing::warn!(
                file = %self.file.display(), line = self.line + 1,
                "The last line of a rotated file has no newline; it was dropped."
            );
        }
    }
}
