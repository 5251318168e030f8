//! The crash-safe disk buffer: an append-only log of segment files plus an acked watermark.
//!
//! # Format
//! `dir/<first_seq:020>.seg` holds frames `[len: u32 LE][crc32: u32 LE][payload]`; record
//! `n` of a segment has sequence number `first_seq + n`. `dir/acked` holds the watermark: every
//! record with a lower sequence number was delivered (or dead-lettered). Segments wholly below
//! the watermark are deleted.
//!
//! # Why this survives `kill -9`
//! [`DiskBuffer::push`] returns only after the frame was written to the file with one
//! `write` call, so it sits in the kernel's page cache, which outlives the process. With
//! `fsync: always` it is also on the device (survives power loss), at a cost per push. On
//! open, every segment is scanned; a torn frame at the end (a crash mid-write) fails its
//! length or checksum and the file is truncated there. Everything at or above the
//! watermark is replayed, so a record may be delivered twice after a crash (at-least-once);
//! the sinks make that harmless with stable ids (Elasticsearch `_id`, Splunk `event.id`).
//!
//! # Size cap
//! `max_bytes` counts the segment files on disk. When a push would exceed it, the
//! [`WhenFull`] policy applies: `block` waits for deliveries to free space (back-pressure
//! reaches the webhook as 429), `drop_oldest` deletes the oldest segment and counts what
//! was lost.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::Notify;

/// Frame header: length and checksum.
const HEADER: usize = 8;
/// A frame larger than this is corruption, not data (alerts are ~1 KiB).
const MAX_FRAME: u32 = 64 * 1024 * 1024;

/// What happens when the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: ingest slows down and the webhook answers 429.
    #[default]
    Block,
    /// Delete the oldest segment; the loss is counted in `audithawk_sink_dropped_total`.
    DropOldest,
}

/// When data is forced to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Leave it to the OS: survives a process crash, not a power cut.
    #[default]
    Never,
    /// `fdatasync` after every push and ack: survives a power cut, slower.
    Always,
}

/// Disk buffer settings.
#[derive(Debug, Clone)]
pub struct DiskBufferConfig {
    /// Directory of this sink's buffer (created if missing).
    pub dir: PathBuf,
    /// Cap on the bytes of all segment files.
    pub max_bytes: u64,
    /// A new segment is started once the current one reaches this size.
    pub segment_bytes: u64,
    /// Policy when full.
    pub when_full: WhenFull,
    /// Durability policy.
    pub fsync: Fsync,
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// An I/O error on the buffer directory.
    #[error("disk buffer {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The record alone is larger than the buffer.
    #[error("record of {0} bytes does not fit in the disk buffer")]
    TooLarge(usize),
    /// The buffer was closed (shutdown).
    #[error("disk buffer closed")]
    Closed,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    /// Bytes of complete frames.
    len: u64,
    /// Records in it.
    count: u64,
    /// A write failed part-way: append no more to this one.
    sealed: bool,
}

#[derive(Debug)]
struct Inner {
    segments: VecDeque<Segment>,
    /// The file of the last segment, open for appending.
    writer: Option<File>,
    next_seq: u64,
    /// Every seq below this is delivered.
    acked: u64,
    /// Delivered ranges above the watermark (start -> end), merged as the gap closes.
    done: BTreeMap<u64, u64>,
    total_bytes: u64,
    closed: bool,
}

/// Counts reported to the driver's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Records not yet acknowledged.
    pub events: u64,
    /// Bytes of segment files on disk.
    pub bytes: u64,
}

/// The disk buffer of one sink. One writer side (many callers, serialised) and one reader.
#[derive(Debug)]
pub struct DiskBuffer {
    cfg: DiskBufferConfig,
    inner: Mutex<Inner>,
    /// Signalled when data is appended or the buffer closes (one reader: `notify_one`
    /// keeps a permit, so no wake-up is lost).
    data: Notify,
    /// Signalled when space is freed (many writers may wait).
    space: Notify,
}

fn seg_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn crc(payload: &[u8]) -> u32 {
    let mut c = flate2::Crc::new();
    c.update(payload);
    c.sum()
}

/// Scans a segment: (count, valid length). Stops at the first torn or corrupt frame.
fn scan(path: &Path) -> io::Result<(u64, u64)> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let (mut off, mut count) = (0usize, 0u64);
    while let Some((payload, next)) = frame_at(&data, off) {
        let _ = payload;
        off = next;
        count += 1;
    }
    Ok((count, off as u64))
}

/// The frame starting at `off` in `data`: (payload, offset after it), if complete and valid.
fn frame_at(data: &[u8], off: usize) -> Option<(&[u8], usize)> {
    let h = data.get(off..off + HEADER)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let sum = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len > MAX_FRAME {
        return None;
    }
    let end = off + HEADER + len as usize;
    let payload = data.get(off + HEADER..end)?;
    (crc(payload) == sum).then_some((payload, end))
}

impl DiskBuffer {
    /// Opens (recovering after a crash) or creates the buffer in `cfg.dir`.
    pub fn open(cfg: DiskBufferConfig) -> Result<Arc<DiskBuffer>, BufferError> {
        let dir = cfg.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let acked_path = dir.join("acked");
        let acked: Option<u64> = match fs::read_to_string(&acked_path) {
            Ok(s) => s.trim().parse().ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&acked_path)(e)),
        };
        let mut firsts: Vec<u64> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.strip_suffix(".seg").and_then(|s| s.parse().ok())
            })
            .collect();
        firsts.sort_unstable();
        let mut segments = VecDeque::new();
        let mut total = 0;
        for first in firsts {
            let path = seg_path(&dir, first);
            let (count, len) = scan(&path).map_err(io_err(&path))?;
            let on_disk = fs::metadata(&path).map_err(io_err(&path))?.len();
            if on_disk != len {
                tracing::warn!(path = %path.display(), valid = len, on_disk, "Torn frame at the end of a buffer segment; truncating.");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(len).map_err(io_err(&path))?;
            }
            total += len;
            segments.push_back(Segment {
                first_seq: first,
                path,
                len,
                count,
                sealed: false,
            });
        }
        let next_seq = segments.back().map_or(0, |s| s.first_seq + s.count);
        let acked = acked
            .unwrap_or_else(|| segments.front().map_or(0, |s| s.first_seq))
            .min(next_seq);
        let buf = DiskBuffer {
            cfg,
            inner: Mutex::new(Inner {
                segments,
                writer: None,
                next_seq,
                acked,
                done: BTreeMap::new(),
                total_bytes: total,
                closed: false,
            }),
            data: Notify::new(),
            space: Notify::new(),
        };
        {
            let mut inner = buf.inner.lock();
            buf.gc(&mut inner);
        }
        Ok(Arc::new(buf))
    }

    /// Appends one record; waits for room under `block`. Returns how many records were
    /// dropped to make room under `drop_oldest` (0 otherwise).
    pub async fn push(&self, payload: &[u8]) -> Result<u64, BufferError> {
        self.push_seq(payload).await.map(|(_, dropped)| dropped)
    }

    /// Like [`DiskBuffer::push`], also returning the record's sequence number.
    pub async fn push_seq(&self, payload: &[u8]) -> Result<(u64, u64), BufferError> {
        let frame_len = (HEADER + payload.len()) as u64;
        if frame_len > self.cfg.max_bytes || payload.len() as u64 > MAX_FRAME as u64 {
            return Err(BufferError::TooLarge(payload.len()));
        }
        let mut frame = Vec::with_capacity(frame_len as usize);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc(payload).to_le_bytes());
        frame.extend_from_slice(payload);
        loop {
            // Register interest before checking, so a release in between is not missed.
            let freed = self.space.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut inner = self.inner.lock();
                if inner.closed {
                    return Err(BufferError::Closed);
                }
                let mut dropped = 0;
                while inner.total_bytes + frame_len > self.cfg.max_bytes {
                    match self.cfg.when_full {
                        WhenFull::Block => break,
                        WhenFull::DropOldest => match self.drop_oldest(&mut inner)? {
                            Some(n) => dropped += n,
                            None => break,
                        },
                    }
                }
                if inner.total_bytes + frame_len <= self.cfg.max_bytes {
                    self.append(&mut inner, &frame)?;
                    let seq = inner.next_seq - 1;
                    drop(inner);
                    self.data.notify_one();
                    return Ok((seq, dropped));
                }
            }
            freed.await;
        }
    }

    fn append(&self, inner: &mut Inner, frame: &[u8]) -> Result<(), BufferError> {
        let roll = inner
            .segments
            .back()
            .is_none_or(|s| s.sealed || s.len >= self.cfg.segment_bytes);
        if roll {
            self.new_segment(inner)?;
        } else if inner.writer.is_none() {
            // After a restart: keep appending to the last segment.
            if let Some(s) = inner.segments.back() {
                let f = OpenOptions::new()
                    .append(true)
                    .open(&s.path)
                    .map_err(io_err(&s.path))?;
                inner.writer = Some(f);
            }
        }
        let (Some(seg), Some(w)) = (inner.segments.back_mut(), inner.writer.as_mut()) else {
            return Err(BufferError::Closed);
        };
        // One write call per frame: a crash leaves at most one torn frame at the end.
        let res = w.write_all(frame).and_then(|_| {
            if self.cfg.fsync == Fsync::Always {
                w.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = res {
            // The segment may now end in a partial frame past `len`; the reader never reads
            // past `len`, and sealing it makes the next push start a fresh segment.
            seg.sealed = true;
            let path = seg.path.clone();
            inner.writer = None;
            return Err(io_err(&path)(e));
        }
        seg.len += frame.len() as u64;
        seg.count += 1;
        inner.next_seq += 1;
        inner.total_bytes += frame.len() as u64;
        Ok(())
    }

    fn new_segment(&self, inner: &mut Inner) -> Result<(), BufferError> {
        let first = inner.next_seq;
        let path = seg_path(&self.cfg.dir, first);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        inner.segments.push_back(Segment {
            first_seq: first,
            path,
            len: 0,
            count: 0,
            sealed: false,
        });
        inner.writer = Some(f);
        Ok(())
    }

    /// Deletes the oldest segment; returns the unacked records lost, or `None` when there is
    /// nothing to drop.
    fn drop_oldest(&self, inner: &mut Inner) -> Result<Option<u64>, BufferError> {
        if inner.segments.len() == 1 {
            if inner.segments.back().is_some_and(|s| s.count == 0) {
                return Ok(None);
            }
            // Start a fresh segment so that the old one can go.
            self.new_segment(inner)?;
        }
        let Some(seg) = inner.segments.pop_front() else {
            return Ok(None);
        };
        let end = seg.first_seq + seg.count;
        let lost = end.saturating_sub(inner.acked.max(seg.first_seq));
        inner.acked = inner.acked.max(end);
        inner.done.retain(|_, e| *e > end);
        inner.total_bytes -= seg.len.min(inner.total_bytes);
        let _ = fs::remove_file(&seg.path);
        self.write_acked(inner);
        Ok(Some(lost))
    }

    /// Marks `[start, end)` delivered; advances the watermark and frees whole segments.
    pub fn ack(&self, start: u64, end: u64) {
        let mut inner = self.inner.lock();
        if end <= inner.acked {
            return;
        }
        let start = start.max(inner.acked);
        inner.done.insert(start, end);
        let mut moved = false;
        loop {
            let at = inner.acked;
            let Some(e) = inner.done.remove(&at) else {
                break;
            };
            inner.acked = e;
            moved = true;
        }
        if moved {
            self.write_acked(&inner);
            if self.gc(&mut inner) {
                drop(inner);
                self.space.notify_waiters();
            }
        }
    }

    /// Deletes segments wholly below the watermark (never the one being written).
    fn gc(&self, inner: &mut Inner) -> bool {
        let mut freed = false;
        while inner.segments.len() > 1 {
            let Some(s) = inner.segments.front() else {
                break;
            };
            if s.first_seq + s.count > inner.acked {
                break;
            }
            let Some(s) = inner.segments.pop_front() else {
                break;
            };
            inner.total_bytes -= s.len.min(inner.total_bytes);
            let _ = fs::remove_file(&s.path);
            freed = true;
        }
        freed
    }

    fn write_acked(&self, inner: &Inner) {
        // Write-then-rename: the watermark file is always whole, old or new.
        let tmp = self.cfg.dir.join("acked.tmp");
        let res = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(inner.acked.to_string().as_bytes())?;
            if self.cfg.fsync == Fsync::Always {
                f.sync_data()?;
            }
            fs::rename(&tmp, self.cfg.dir.join("acked"))
        })();
        if let Err(e) = res {
            // Not fatal: the worst case is a re-send after a restart.
            tracing::warn!(dir = %self.cfg.dir.display(), error = %e, "Could not record the buffer watermark.");
        }
    }

    /// No more pushes; the reader drains what is left, then ends.
    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.data.notify_one();
        self.space.notify_waiters();
    }

    /// Unacknowledged records and bytes on disk.
    pub fn stats(&self) -> BufferStats {
        let inner = self.inner.lock();
        BufferStats {
            events: inner.next_seq - inner.acked,
            bytes: inner.total_bytes,
        }
    }

    /// The reader, positioned at the watermark (everything not yet delivered). Only one
    /// reader may exist at a time.
    pub fn reader(self: &Arc<Self>) -> BufferReader {
        let next = self.inner.lock().acked;
        BufferReader {
            buf: self.clone(),
            next,
            pos: None,
        }
    }
}

/// Reads records in sequence order, waiting for new ones.
#[derive(Debug)]
pub struct BufferReader {
    buf: Arc<DiskBuffer>,
    /// Next seq to hand out.
    next: u64,
    /// (segment first seq, byte offset of `next` in it, open file).
    pos: Option<(u64, u64, Arc<File>)>,
}

impl BufferReader {
    /// Up to `max` records `(seq, payload)`, waiting when none are available; `None` once
    /// the buffer is closed and drained. Cancel-safe: the only await is the wait itself.
    pub async fn next_chunk(&mut self, max: usize) -> Option<Vec<(u64, Vec<u8>)>> {
        loop {
            let buf = self.buf.clone();
            let wake = buf.data.notified();
            match self.read_available(max) {
                Ok(v) if !v.is_empty() => return Some(v),
                Ok(_) => {
                    if self.buf.inner.lock().closed {
                        // Re-check: a push may have landed between the read and the flag.
                        match self.read_available(max) {
                            Ok(v) if !v.is_empty() => return Some(v),
                            _ => return None,
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(dir = %self.buf.cfg.dir.display(), error = %e, "Disk buffer read failed; retrying.");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            }
            wake.await;
        }
    }

    fn read_available(&mut self, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        while out.len() < max {
            // Find the segment holding `next` and how far it is written.
            let (first, len, count, path) =
                {
                    let inner = self.buf.inner.lock();
                    if self.next < inner.acked {
                        // Records were dropped (drop_oldest) under our feet: skip them.
                        self.next = inner.acked;
                        self.pos = None;
                    }
                    let Some(seg) = inner.segments.iter().find(|s| {
                        s.first_seq <= self.next && self.next < s.first_seq + s.count.max(1)
                    }) else {
                        break;
                    };
                    (seg.first_seq, seg.len, seg.count, seg.path.clone())
                };
            if self.next >= first + count {
                break; // nothing written yet
            }
            let (file, off) = match &self.pos {
                Some((f, off, file)) if *f == first => (file.clone(), *off),
                _ => {
                    let file = Arc::new(File::open(&path)?);
                    // Skip to `next` (after a restart the watermark may be mid-segment).
                    let mut off = 0u64;
                    let mut seq = first;
                    let data = read_range(&file, 0, len)?;
                    while seq < self.next {
                        match frame_at(&data, off as usize) {
                            Some((_, n)) => off = n as u64,
                            None => break,
                        }
                        seq += 1;
                    }
                    (file, off)
                }
            };
            if off >= len {
                self.pos = Some((first, off, file));
                break;
            }
            // Read a window sized for `max` records (alerts are ~1 KiB), not the rest of the
            // segment: the batcher asks often for few records. A first frame larger than
            // the window is read whole, using its length header.
            let want = ((max - out.len()) as u64 * 2048).clamp(64 * 1024, 4 * 1024 * 1024);
            let mut window = (len - off).min(want);
            if window < len - off && window >= HEADER as u64 {
                let h = read_range(&file, off, HEADER as u64)?;
                let flen = u32::from_le_bytes([h[0], h[1], h[2], h[3]]).min(MAX_FRAME) as u64;
                window = window.max(HEADER as u64 + flen).min(len - off);
            }
            let data = read_range(&file, off, window)?;
            let mut at = 0usize;
            while out.len() < max {
                let Some((payload, n)) = frame_at(&data, at) else {
                    break;
                };
                out.push((self.next, payload.to_vec()));
                self.next += 1;
                at = n;
            }
            let new_off = off + at as u64;
            if at == 0 {
                // A frame inside the written length does not verify: the segment is corrupt
                // past here. Skip the rest of it rather than stall forever.
                tracing::error!(path = %path.display(), offset = off, "Corrupt frame in the disk buffer; skipping the rest of the segment.");
                self.next = first + count;
                self.pos = None;
                continue;
            }
            self.pos = Some((first, new_off, file));
        }
        Ok(out)
    }
}

fn read_range(f: &File, off: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, max: u64, when: WhenFull) -> DiskBufferConfig {
        DiskBufferConfig {
            dir: dir.to_path_buf(),
            max_bytes: max,
            segment_bytes: 256,
            when_full: when,
            fsync: Fsync::Never,
        }
    }

    #[tokio::test]
    async fn replays_unacked_after_reopen_and_truncates_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        {
            let b = DiskBuffer::open(cfg(d.path(), 1 << 20, WhenFull::Block)).unwrap();
            for i in 0..50u32 {
                b.push(format!("record-{i:03}").as_bytes()).await.unwrap();
            }
            let mut r = b.reader();
            let got = r.next_chunk(20).await.unwrap();
            assert_eq!(got.len(), 20);
            b.ack(0, 20);
            // Acked out of order: 30..40 is done but 20..30 is not, so the watermark stays.
            b.ack(30, 40);
            assert_eq!(b.stats().events, 30);
        }
        // A crash mid-write leaves half a frame at the end of the last segment.
        let mut segs: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segs.sort();
        let last = segs.last().unwrap();
        let mut f = OpenOptions::new().append(true).open(last).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let b = DiskBuffer::open(cfg(d.path(), 1 << 20, WhenFull::Block)).unwrap();
        let mut r = b.reader();
        let got = r.next_chunk(1000).await.unwrap();
        let texts: Vec<String> = got
            .iter()
            .map(|(_, p)| String::from_utf8(p.clone()).unwrap())
            .collect();
        assert_eq!(texts.len(), 30, "{texts:?}");
        assert_eq!(texts[0], "record-020");
        assert_eq!(texts[29], "record-049");
        b.push(b"after").await.unwrap();
        let got = r.next_chunk(10).await.unwrap();
        assert_eq!(got, vec![(50, b"after".to_vec())]);
    }

    /// Regression: the reader reads a bounded window, so a record larger than the window
    /// must still be read whole (and small ones after it, across window edges).
    #[tokio::test]
    async fn reads_records_larger_than_the_read_window() {
        let d = tempfile::tempdir().unwrap();
        let mut c = cfg(d.path(), 1 << 30, WhenFull::Block);
        c.segment_bytes = 64 << 20;
        let b = DiskBuffer::open(c).unwrap();
        let big = |i: u8| vec![i; 300_000];
        let mut want = Vec::new();
        for i in 0..3u8 {
            want.push(big(i));
            for j in 0..100u32 {
                want.push(format!("{i}-{j:0>900}").into_bytes());
            }
        }
        for p in &want {
            b.push(p).await.unwrap();
        }
        let mut r = b.reader();
        let mut got = Vec::new();
        for max in [1usize, 7, 50, 1, 1000, 3].iter().cycle() {
            if got.len() == want.len() {
                break;
            }
            for (seq, p) in r.next_chunk(*max).await.unwrap() {
                assert_eq!(seq, got.len() as u64);
                got.push(p);
            }
        }
        assert!(got == want);
    }

    #[tokio::test]
    async fn drop_oldest_counts_losses_and_block_waits_for_ack() {
        let d = tempfile::tempdir().unwrap();
        let b = DiskBuffer::open(cfg(d.path(), 600, WhenFull::DropOldest)).unwrap();
        let mut dropped = 0;
        for i in 0..100u32 {
            dropped += b.push(format!("{i:040}").as_bytes()).await.unwrap();
        }
        let st = b.stats();
        assert!(st.bytes <= 600, "{st:?}");
        assert_eq!(dropped + st.events, 100);
        assert!(dropped > 0);

        let d2 = tempfile::tempdir().unwrap();
        let b = DiskBuffer::open(cfg(d2.path(), 600, WhenFull::Block)).unwrap();
        let mut n = 0u64;
        loop {
            let fut = b.push(&[7u8; 40]);
            match tokio::time::timeout(std::time::Duration::from_millis(50), fut).await {
                Ok(r) => {
                    r.unwrap();
                    n += 1;
                }
                Err(_) => break,
            }
        }
        assert!(n >= 5, "pushed {n}");
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.push(&[8u8; 40]).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a full buffer must block");
        b.ack(0, n);
        waiter.await.unwrap().unwrap();
    }
}

#[cfg(test)]
mod model_tests {
    //! The buffer against a model: any interleaving of pushes, reads, out-of-order acks,
    //! crashes (reopen) and torn tails loses no unacknowledged record and keeps order.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::time::Duration;

    #[derive(Debug, Clone)]
    enum Op {
        Push(usize),
        Take(usize),
        Ack(u64),
        Reopen,
        TornTail(Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..120).prop_map(Op::Push),
            3 => (1usize..8).prop_map(Op::Take),
            3 => any::<u64>().prop_map(Op::Ack),
            1 => Just(Op::Reopen),
            1 => proptest::collection::vec(any::<u8>(), 1..12).prop_map(Op::TornTail),
        ]
    }

    fn payload(seq: u64, len: usize) -> Vec<u8> {
        let mut v = seq.to_le_bytes().to_vec();
        v.extend((0..len).map(|i| (i as u64 ^ seq) as u8));
        v
    }

    fn open(dir: &Path) -> Arc<DiskBuffer> {
        DiskBuffer::open(DiskBufferConfig {
            dir: dir.to_path_buf(),
            max_bytes: 1 << 30,
            segment_bytes: 300,
            when_full: WhenFull::Block,
            fsync: Fsync::Never,
        })
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn no_unacked_record_is_lost(ops in proptest::collection::vec(op(), 1..80)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let d = tempfile::tempdir().unwrap();
                let mut buf = open(d.path());
                let mut reader = buf.reader();
                let mut pushed: Vec<Vec<u8>> = Vec::new();
                let mut acked: BTreeSet<u64> = BTreeSet::new();
                let mut taken: Vec<u64> = Vec::new();
                let mut next_read = 0u64;
                for op in ops {
                    match op {
                        Op::Push(len) => {
                            let p = payload(pushed.len() as u64, len);
                            buf.push(&p).await.unwrap();
                            pushed.push(p);
                        }
                        Op::Take(k) => {
                            let got = tokio::time::timeout(Duration::ZERO, reader.next_chunk(k)).await;
                            let avail = pushed.len() as u64 - next_read;
                            match got {
                                Ok(Some(v)) => {
                                    assert_eq!(v.len() as u64, avail.min(k as u64));
                                    for (seq, p) in v {
                                        assert_eq!(seq, next_read, "in order, no gap");
                                        assert_eq!(&p, &pushed[seq as usize], "intact");
                                        taken.push(seq);
                                        next_read += 1;
                                    }
                                }
                                Ok(None) => panic!("closed"),
                                Err(_) => assert_eq!(avail, 0, "data was available but not returned"),
                            }
                        }
                        Op::Ack(mask) => {
                            let mut keep = Vec::new();
                            for (i, s) in taken.iter().enumerate() {
                                if mask >> (i % 64) & 1 == 1 {
                                    buf.ack(*s, s + 1);
                                    acked.insert(*s);
                                } else {
                                    keep.push(*s);
                                }
                            }
                            taken = keep;
                        }
                        Op::Reopen | Op::TornTail(_) => {
                            drop(reader);
                            drop(buf);
                            if let Op::TornTail(junk) = &op {
                                let mut segs: Vec<_> = fs::read_dir(d.path()).unwrap()
                                    .filter_map(|e| e.ok()).map(|e| e.path())
                                    .filter(|p| p.extension().is_some_and(|x| x == "seg")).collect();
                                segs.sort();
                                if let Some(last) = segs.last() {
                                    OpenOptions::new().append(true).open(last).unwrap().write_all(junk).unwrap();
                                }
                            }
                            buf = open(d.path());
                            reader = buf.reader();
                            // Replay starts at the first record not acknowledged.
                            let w = (0..pushed.len() as u64).find(|s| !acked.contains(s)).unwrap_or(pushed.len() as u64);
                            acked.retain(|s| *s < w);
                            taken.clear();
                            next_read = w;
                            assert_eq!(buf.stats().events, pushed.len() as u64 - w);
                        }
                    }
                }
            });
        }
    }
}
