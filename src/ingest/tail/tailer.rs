//! The synchronous, deterministic core: [`Tailer`] follows paths through rotation,
//! truncation and deletion, and checkpoints what it handed on.
//!
//! # Model
//!
//! Each followed path has a queue of *generations*: older contents still to be finished
//! (rotated files read through the descriptor we already hold, or backups found on disk),
//! then the *current* generation, the file at the path when we last looked. Lines are
//! handed on strictly in that order, so a rotated file is finished before the new one is
//! started.
//!
//! Backups are told apart by content fingerprint (head of the file, see
//! [`super::backups::fingerprint_of`]), not by name or inode: a gzip or a logrotate
//! renumbering keeps the fingerprint, and an inode reused after a delete does not fool it.
//! For each generation we remember the set of backups that are *older* than it
//! (`known`). Any backup outside that set appeared after the generation started, so it is
//! that generation itself, a copy of it (copytruncate) or a newer one: that is how a
//! restart after rotations, or two rotations between polls, still finds every line.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::backups::{backup_kind, dedup_twins, list_backups, Backup, FpCache, NameKind};
use super::generation::{Gen, Pump};
use super::{PollStats, StartAt, TailConfig, TailError, TailLine};
use crate::ingest::checkpoint::{self, Checkpoint, FileCheckpoint, Fingerprint};

/// The smallest accepted `max_line_bytes`: a skipped line must be long enough to fix a
/// fingerprint, so a checkpoint with an offset always has one.
const MIN_LINE_BYTES: usize = 1024;

#[derive(Debug)]
enum PathPattern {
    Literal(PathBuf),
    Glob(glob::Pattern),
}

/// What to do when a path is first seen.
#[derive(Debug, Clone)]
enum Pending {
    /// Resume from this checkpoint entry.
    Restore(FileCheckpoint),
    /// No checkpoint: start at the beginning or at the end of the existing file.
    Fresh { from_end: bool },
}

/// One followed path.
#[derive(Debug)]
struct Followed {
    path: PathBuf,
    /// Start-up work not yet done (retried on the next poll if it failed).
    pending: Option<Pending>,
    /// Older generations to finish before `current`, oldest first.
    queue: VecDeque<Gen>,
    /// The file at `path` when last checked.
    current: Option<Gen>,
    /// Fingerprints of backups older than the next generation to appear at `path`.
    known: BTreeSet<Fingerprint>,
    /// Last error reported for this path, so a persistent one is logged once.
    last_error: Option<String>,
}

/// Follows files; see the [module docs](self).
#[derive(Debug)]
pub struct Tailer {
    cfg: TailConfig,
    patterns: Vec<PathPattern>,
    followed: BTreeMap<PathBuf, Followed>,
    /// Checkpoint entries for paths not (yet) followed; kept in the next checkpoint.
    restored: HashMap<PathBuf, FileCheckpoint>,
    first_poll: bool,
    cache: FpCache,
    last_written: Option<Checkpoint>,
    /// Round-robin start, so one busy file cannot starve the others under the line budget.
    rr: usize,
}

impl Tailer {
    /// Validates `cfg` and loads its checkpoint (if any).
    pub fn new(cfg: TailConfig) -> Result<Tailer, TailError> {
        if cfg.paths.is_empty() {
            return Err(TailError::Config(
                "no file or glob pattern to follow".into(),
            ));
        }
        if cfg.max_line_bytes < MIN_LINE_BYTES {
            return Err(TailError::Config(format!(
                "`max_line_bytes` must be at least {MIN_LINE_BYTES}"
            )));
        }
        if cfg.poll_interval.is_zero() {
            return Err(TailError::Config(
                "`poll_interval` must be greater than zero".into(),
            ));
        }
        if cfg.max_poll_lines == 0 {
            return Err(TailError::Config(
                "`max_poll_lines` must be greater than zero".into(),
            ));
        }
        let mut patterns = Vec::new();
        for p in &cfg.paths {
            if p.contains(['*', '?', '[']) {
                let pat = glob::Pattern::new(p).map_err(|e| TailError::Pattern {
                    pattern: p.clone(),
                    message: e.to_string(),
                })?;
                patterns.push(PathPattern::Glob(pat));
            } else {
                patterns.push(PathPattern::Literal(PathBuf::from(p)));
            }
        }
        let restored = checkpoint::load(&cfg.checkpoint_path)?
            .map(|cp| cp.files.into_iter().map(|f| (f.path.clone(), f)).collect())
            .unwrap_or_default();
        Ok(Tailer {
            cfg,
            patterns,
            followed: BTreeMap::new(),
            restored,
            first_poll: true,
            cache: FpCache::default(),
            last_written: None,
            rr: 0,
        })
    }

    /// The paths currently followed.
    pub fn followed_paths(&self) -> Vec<PathBuf> {
        self.followed.keys().cloned().collect()
    }

    /// Reads everything currently available (up to `max_poll_lines` lines; `more` in the
    /// result says whether to call again at once), handing each complete line to `out`.
    /// Problems with single files are logged and counted in the result, not returned.
    pub fn poll(&mut self, out: &mut dyn FnMut(TailLine<'_>)) -> Result<PollStats, TailError> {
        let mut stats = PollStats::default();
        for path in self.discover() {
            if self.followed.contains_key(&path) {
                continue;
            }
            let pending = match self.restored.remove(&path) {
                Some(e) => Pending::Restore(e),
                None => Pending::Fresh {
                    // `--from end` is for what exists at the first start only; a file that
                    // shows up later is new, and all of it is wanted.
                    from_end: self.first_poll && self.cfg.from == StartAt::End,
                },
            };
            tracing::info!(path = %path.display(), "Following file.");
            self.followed.insert(
                path.clone(),
                Followed {
                    path,
                    pending: Some(pending),
                    queue: VecDeque::new(),
                    current: None,
                    known: BTreeSet::new(),
                    last_error: None,
                },
            );
        }
        self.first_poll = false;
        let mut budget = self.cfg.max_poll_lines;
        let n = self.followed.len();
        let start = if n == 0 { 0 } else { self.rr % n };
        self.rr = self.rr.wrapping_add(1);
        let max_line = self.cfg.max_line_bytes;
        let keys: Vec<PathBuf> = self.followed.keys().cloned().collect();
        for i in 0..n {
            let Some(f) = self.followed.get_mut(&keys[(start + i) % n]) else {
                continue;
            };
            let r = poll_followed(f, &mut self.cache, max_line, &mut budget, out, &mut stats);
            match r {
                Ok(()) => f.last_error = None,
                Err(e) => {
                    stats.errors += 1;
                    let msg = e.to_string();
                    if f.last_error.as_deref() != Some(msg.as_str()) {
                        tracing::warn!(path = %f.path.display(), error = %msg, "Cannot read followed file; will retry.");
                        f.last_error = Some(msg);
                    }
                }
            }
            if budget == 0 {
                stats.more = true;
                break;
            }
        }
        self.cache.sweep();
        Ok(stats)
    }

    /// The checkpoint describing everything handed on so far.
    pub fn checkpoint(&self) -> Checkpoint {
        let mut files: Vec<FileCheckpoint> = self
            .followed
            .values()
            .filter_map(Followed::checkpoint)
            .collect();
        files.extend(self.restored.values().cloned());
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Checkpoint {
            version: checkpoint::VERSION,
            files,
        }
    }

    /// Durably records everything handed on so far (no-op when nothing changed).
    pub fn commit(&mut self) -> Result<(), TailError> {
        let cp = self.checkpoint();
        if self.last_written.as_ref() == Some(&cp) {
            return Ok(());
        }
        checkpoint::store(&self.cfg.checkpoint_path, &cp)?;
        self.last_written = Some(cp);
        Ok(())
    }

    /// Evaluates the patterns: literal paths always, glob matches that are regular files,
    /// not compressed and not a rotated backup of another followed file.
    fn discover(&self) -> BTreeSet<PathBuf> {
        let mut found = BTreeSet::new();
        let mut globbed = Vec::new();
        for p in &self.patterns {
            match p {
                PathPattern::Literal(path) => {
                    found.insert(path.clone());
                }
                PathPattern::Glob(pat) => {
                    let Ok(paths) = glob::glob(pat.as_str()) else {
                        continue;
                    };
                    for path in paths.flatten() {
                        let is_file = fs::metadata(&path).is_ok_and(|m| m.is_file());
                        let gz = path.extension().is_some_and(|e| e == "gz");
                        if is_file && !gz {
                            globbed.push(path);
                        }
                    }
                }
            }
        }
        // Paths in the checkpoint that a pattern still names: their file may be gone, but
        // its backups can still hold lines we owe.
        for k in self.restored.keys() {
            let named = self.patterns.iter().any(|p| match p {
                PathPattern::Literal(l) => l == k,
                PathPattern::Glob(g) => g.matches_path(k),
            });
            if named {
                found.insert(k.clone());
            }
        }
        let bases: Vec<PathBuf> = found
            .iter()
            .chain(globbed.iter())
            .chain(self.followed.keys())
            .cloned()
            .collect();
        for g in globbed {
            let is_backup = bases.iter().any(|b| {
                b != &g
                    && b.parent() == g.parent()
                    && match (
                        b.file_name().and_then(|n| n.to_str()),
                        g.file_name().and_then(|n| n.to_str()),
                    ) {
                        (Some(bn), Some(gn)) => backup_kind(bn, gn).is_some(),
                        _ => false,
                    }
            });
            if !is_backup {
                found.insert(g);
            }
        }
        found
    }
}

impl Followed {
    /// The resume point; `None` before the first successful look at the path (an entry
    /// then would claim that every backup on disk is new).
    fn checkpoint(&self) -> Option<FileCheckpoint> {
        match &self.pending {
            Some(Pending::Restore(e)) => return Some(e.clone()),
            Some(Pending::Fresh { .. }) => return None,
            None => {}
        }
        Some(match self.queue.front().or(self.current.as_ref()) {
            Some(g) => FileCheckpoint {
                path: self.path.clone(),
                reading: Some(g.file.clone()),
                fingerprint: g.fp,
                offset: g.offset,
                line: g.line,
                known_backups: g.known_before.iter().copied().collect(),
            },
            None => FileCheckpoint {
                path: self.path.clone(),
                reading: None,
                fingerprint: None,
                offset: 0,
                line: 0,
                known_backups: self.known.iter().copied().collect(),
            },
        })
    }

    /// Queues `b` (from `offset`), recording that it is now older than what follows.
    fn enqueue(&mut self, b: &Backup, offset: u64, line: u64, stats: &mut PollStats) {
        match Gen::open_backup(b, offset, line) {
            Ok(mut g) => {
                g.known_before = self.known.clone();
                self.queue.push_back(g);
            }
            Err(e) => {
                // Pruned between listing and opening, or a broken gzip: nothing to read.
                stats.errors += 1;
                tracing::warn!(file = %b.path.display(), error = %e, "Cannot read rotated file; skipped.");
            }
        }
        if let Some(fp) = b.fp {
            self.known.insert(fp);
        }
    }

    /// Backups with a complete head that are not known yet and are not `exclude_fp` or the
    /// file with inode `exclude_ino` (the current file, if it was just renamed).
    fn unknown(
        &self,
        listing: &[Backup],
        exclude_fp: Option<Fingerprint>,
        exclude_ino: Option<(u64, u64)>,
    ) -> Vec<Backup> {
        dedup_twins(
            listing
                .iter()
                .filter(|b| b.fp.is_some_and(|fp| !self.known.contains(&fp)))
                .filter(|b| b.gz || Some((b.dev, b.ino)) != exclude_ino)
                .filter(|b| exclude_fp.is_none() || b.fp != exclude_fp)
                .cloned()
                .collect(),
        )
    }

    /// First contact with a path that has a checkpoint entry.
    fn restore(&mut self, e: &FileCheckpoint, cache: &mut FpCache) -> io::Result<()> {
        let mut cur = open_if_exists(&self.path)?;
        let listing = list_backups(&self.path, cache)?;
        self.known = e.known_backups.iter().copied().collect();
        let cur_fp = cur.as_ref().and_then(|g| g.fp);
        let cur_ino = cur.as_ref().map(|g| (g.dev, g.ino));
        let mut cands = self.unknown(&listing, cur_fp, cur_ino);
        let mut stats = PollStats::default();
        let mut resume: Option<(Backup, u64, u64)> = None;
        if e.offset > 0 {
            // The current file, when it is still the checkpointed generation.
            let same_gen = cur
                .as_mut()
                .filter(|_| e.fingerprint.is_some() && cur_fp == e.fingerprint);
            match (e.fingerprint, same_gen) {
                (Some(_), Some(g)) => {
                    if g.size()?.unwrap_or(0) >= e.offset {
                        // Not rotated while we were down: carry on where we stopped.
                        g.seek_to(e.offset, e.line)?;
                        cands.clear();
                    } else {
                        tracing::warn!(path = %self.path.display(), offset = e.offset,
                            "File is shorter than the checkpoint; reading it from the start.");
                    }
                }
                (Some(fp), None) => match cands.iter().position(|b| b.fp == Some(fp)) {
                    Some(i) => resume = Some((cands.remove(i), e.offset, e.line)),
                    None => tracing::warn!(path = %self.path.display(),
                        "The file being read at the last checkpoint is gone (deleted or pruned); its unread lines are lost."),
                },
                (None, _) => tracing::warn!(path = %self.path.display(),
                    "Checkpoint has an offset but no fingerprint; reading from the start."),
            }
        }
        if let Some((b, off, line)) = resume {
            tracing::info!(path = %self.path.display(), backup = %b.path.display(), offset = off,
                "Rotated while stopped; finishing the rotated file first.");
            self.enqueue(&b, off, line, &mut stats);
        }
        for b in &cands {
            self.enqueue(b, 0, 0, &mut stats);
        }
        self.adopt(cur, &listing);
        Ok(())
    }

    /// First contact without a checkpoint.
    fn fresh(&mut self, from_end: bool, max_line: usize, cache: &mut FpCache) -> io::Result<()> {
        let mut cur = open_if_exists(&self.path)?;
        let listing = list_backups(&self.path, cache)?;
        if from_end {
            if let Some(g) = cur.as_mut() {
                seek_to_last_line_end(g, max_line)?;
            }
        }
        // Backups already there are history: `tail` follows from now on (`scan` reads them).
        self.adopt(cur, &listing);
        Ok(())
    }

    /// Makes `cur` the current generation, with every listed backup older than it.
    fn adopt(&mut self, cur: Option<Gen>, listing: &[Backup]) {
        let cur_fp = cur.as_ref().and_then(|g| g.fp);
        self.known.extend(
            listing
                .iter()
                .filter_map(|b| b.fp)
                .filter(|fp| Some(*fp) != cur_fp),
        );
        self.current = cur.map(|mut g| {
            g.known_before = self.known.clone();
            g
        });
    }

    /// Looks for truncation, rotation and deletion, and queues what must be read.
    fn check(&mut self, cache: &mut FpCache, stats: &mut PollStats) -> io::Result<()> {
        let meta = match fs::metadata(&self.path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(cur) = self.current.as_mut() {
            let same = meta
                .as_ref()
                .is_some_and(|m| m.dev() == cur.dev && m.ino() == cur.ino);
            let truncated = cur.truncated()?;
            // We have not seen a complete head of this generation yet (nothing delivered,
            // at most a partial first line held). Its prefix cannot prove a truncation (every
            // audit line starts alike), but a copy that appeared since can: it holds content
            // truncated away before we could read it.
            let unidentified = !truncated && cur.fp.is_none();
            if truncated || unidentified {
                let listing = list_backups(&self.path, cache)?;
                let now_fp = cur.head_fp_now()?;
                let (old_fp, off, line, ino) = (cur.fp, cur.offset, cur.line, (cur.dev, cur.ino));
                let mut cands = self.unknown(&listing, now_fp, Some(ino));
                if !same {
                    // Also rotated or deleted: lumberjack-named backups are newer generations
                    // (queued after this one, below); only logrotate copies can hold this
                    // file's earlier content.
                    cands.retain(|b| b.kind == NameKind::Logrotate);
                }
                let reset = truncated || !cands.is_empty();
                if reset {
                    stats.truncations += 1;
                    tracing::info!(path = %self.path.display(), "File truncated in place (copytruncate); reading its copy, then from the start.");
                    if truncated && off > 0 {
                        match cands.iter().position(|b| b.fp == old_fp) {
                            Some(i) => {
                                let b = cands.remove(i);
                                self.enqueue(&b, off, line, stats);
                            }
                            None => {
                                stats.lost += 1;
                                tracing::warn!(path = %self.path.display(), offset = off,
                                    "Truncated in place and no copy found; lines written after our last read are lost.");
                            }
                        }
                    }
                }
                for b in &cands {
                    self.enqueue(b, 0, 0, stats);
                }
                if same {
                    // Copies that were not followed by a truncation duplicate what we read.
                    self.known.extend(
                        listing
                            .iter()
                            .filter_map(|b| b.fp)
                            .filter(|fp| Some(*fp) != now_fp),
                    );
                }
                let known = self.known.clone();
                if let Some(cur) = self.current.as_mut() {
                    if reset {
                        cur.reset()?;
                    }
                    cur.known_before = known;
                }
            }
            if !same {
                // Renamed away (rotation) or deleted: finish it through our descriptor, then
                // move on to whatever is at the path now.
                stats.rotations += 1;
                if let Some(mut old) = self.current.take() {
                    let _ = old.refresh_fp();
                    tracing::info!(path = %self.path.display(), "File rotated or deleted; finishing it first.");
                    if let Some(fp) = old.fp {
                        self.known.insert(fp);
                    }
                    self.queue.push_back(old);
                }
            }
        }
        if self.current.is_none() {
            let cur = open_if_exists(&self.path)?;
            // Everything rotated since the last generation we know of, oldest first. Also
            // while the path is absent: a file may have been created, written and rotated
            // between two polls (or a copy made just before a deletion).
            let listing = list_backups(&self.path, cache)?;
            let cands = self.unknown(
                &listing,
                cur.as_ref().and_then(|g| g.fp),
                cur.as_ref().map(|g| (g.dev, g.ino)),
            );
            for b in &cands {
                self.enqueue(b, 0, 0, stats);
            }
            self.adopt(cur, &listing);
        }
        Ok(())
    }

    /// Reads the queue, then the current file.
    fn read(
        &mut self,
        max_line: usize,
        budget: &mut usize,
        out: &mut dyn FnMut(TailLine<'_>),
        stats: &mut PollStats,
    ) -> io::Result<()> {
        while let Some(g) = self.queue.front_mut() {
            match g.pump(&self.path, max_line, budget, out, stats) {
                Ok(Pump::Eof) => {
                    g.finish(stats);
                    self.queue.pop_front();
                }
                Ok(Pump::Budget) => {
                    stats.more = true;
                    return Ok(());
                }
                Err(e) => {
                    // A truncated gzip, typically; what came before it was delivered.
                    stats.errors += 1;
                    tracing::warn!(file = %g.file.display(), line = g.line, error = %e,
                        "Reading a rotated file failed; moving on to the next one.");
                    self.queue.pop_front();
                }
            }
        }
        if let Some(g) = self.current.as_mut() {
            if g.pump(&self.path, max_line, budget, out, stats)? == Pump::Budget {
                stats.more = true;
            }
            // A first line that was skipped as over-long still fixes the fingerprint.
            g.refresh_fp()?;
        }
        Ok(())
    }
}

fn poll_followed(
    f: &mut Followed,
    cache: &mut FpCache,
    max_line: usize,
    budget: &mut usize,
    out: &mut dyn FnMut(TailLine<'_>),
    stats: &mut PollStats,
) -> io::Result<()> {
    if let Some(p) = f.pending.take() {
        let r = match &p {
            Pending::Restore(e) => f.restore(e, cache),
            Pending::Fresh { from_end } => f.fresh(*from_end, max_line, cache),
        };
        if let Err(e) = r {
            f.queue.clear();
            f.current = None;
            f.pending = Some(p);
            return Err(e);
        }
    } else {
        f.check(cache, stats)?;
    }
    f.read(max_line, budget, out, stats)
}

fn open_if_exists(path: &Path) -> io::Result<Option<Gen>> {
    match Gen::open_plain(path) {
        Ok(g) => Ok(Some(g)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `--from end`: start after the last complete line, so the line being written is still
/// delivered whole once it is finished.
fn seek_to_last_line_end(g: &mut Gen, max_line: usize) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let size = g.size()?.unwrap_or(0);
    if size == 0 {
        return Ok(());
    }
    let f = fs::File::open(&g.file)?;
    let window = (max_line as u64 + 1).min(size);
    let mut pos = size;
    let mut buf = vec![0u8; 64 * 1024];
    while pos > size - window {
        let n = ((pos - (size - window)) as usize).min(buf.len());
        let at = pos - n as u64;
        f.read_exact_at(&mut buf[..n], at)?;
        if let Some(i) = memchr::memrchr(b'\n', &buf[..n]) {
            return g.seek_to(at + i as u64 + 1, 0);
        }
        pos = at;
    }
    if size <= max_line as u64 {
        // The whole file is one unfinished line: read it when it completes.
        return Ok(());
    }
    // No line end within reach: start at the end, skipping the rest of that over-long line.
    g.seek_to(size, 0)?;
    g.skip_current_line();
    Ok(())
}
