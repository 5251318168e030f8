//! `audithawk tail`: follows JSON-lines audit logs (the API server's log backend) through
//! rotation, copytruncate and deletion, with a durable checkpoint for exactly-once resume.
//!
//! Two layers, after Vector's file source:
//! - [`Tailer`]: synchronous and deterministic. [`Tailer::poll`] reads everything available
//!   across the followed files and hands over complete lines; [`Tailer::commit`] durably
//!   records what was handed over. Tests drive it directly after each file-system action.
//! - [`run`]: the async driver. Poll (on a blocking thread), decode, submit one batch to the
//!   pipeline (waiting for room: back-pressure), wait until the pipeline reports the batch
//!   processed, and only then commit. A crash between poll and commit re-reads those lines
//!   after restart; nothing acknowledged is read twice.
//!
//! Rotation behaviour, the checkpoint and the guarantees are described in `docs/tail.md`.

mod backups;
mod generation;
mod tailer;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::ingest::checkpoint::CheckpointError;
use crate::model::{decode_value, AuditEvent, DecodeLimits, EventError, Location};
use crate::pipeline::{Batch, PipelineHandle, Source};
use crate::telemetry::Metrics;

pub use tailer::Tailer;

/// Where to start in a file that has no checkpoint entry, on the first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// Read the existing content.
    #[default]
    Beginning,
    /// Skip the existing content; only lines written from now on.
    End,
}

/// Settings for [`Tailer`] and [`run`].
#[derive(Debug, Clone)]
pub struct TailConfig {
    /// Files or glob patterns (`*`, `?`, `[...]`), re-evaluated on every poll.
    pub paths: Vec<String>,
    /// Where the checkpoint is kept.
    pub checkpoint_path: PathBuf,
    /// Start of files without a checkpoint entry at the first start.
    pub from: StartAt,
    /// Pause between polls when there was nothing more to read.
    pub poll_interval: Duration,
    /// Longest line accepted; longer lines are skipped (and counted), never held in memory.
    pub max_line_bytes: usize,
    /// Most lines handed over by one poll (one pipeline batch): bounds memory while
    /// catching up on a large backlog.
    pub max_poll_lines: usize,
    /// Cluster name attached to every event.
    pub cluster: Option<String>,
}

impl TailConfig {
    /// Defaults: from the beginning, 250 ms polls, 1 MiB lines, 1000 lines per poll.
    pub fn new(paths: Vec<String>, checkpoint_path: impl Into<PathBuf>) -> TailConfig {
        TailConfig {
            paths,
            checkpoint_path: checkpoint_path.into(),
            from: StartAt::Beginning,
            poll_interval: Duration::from_millis(250),
            max_line_bytes: 1024 * 1024,
            max_poll_lines: 1000,
            cluster: None,
        }
    }
}

/// One complete line handed over by [`Tailer::poll`].
#[derive(Debug, Clone, Copy)]
pub struct TailLine<'a> {
    /// The line without its newline (nor a trailing `\r`).
    pub text: &'a str,
    /// The followed path it belongs to.
    pub path: &'a Path,
    /// The file it was read from: the followed path, or a rotated backup being finished.
    pub file: &'a Path,
    /// 1-based line number within that file's content (relative to the start position
    /// with `--from end`).
    pub line: u64,
    /// Byte offset of the line's start within that content (uncompressed).
    pub offset: u64,
}

/// What one [`Tailer::poll`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Lines handed over.
    pub lines: u64,
    /// Bytes of those lines (with newlines).
    pub bytes: u64,
    /// Lines skipped for exceeding `max_line_bytes`.
    pub too_long: u64,
    /// Lines skipped for not being UTF-8.
    pub not_utf8: u64,
    /// Unfinished last lines of rotated files, dropped.
    pub incomplete: u64,
    /// Rotations (rename or deletion of a followed file) noticed.
    pub rotations: u64,
    /// In-place truncations (copytruncate) noticed.
    pub truncations: u64,
    /// Truncations whose unread tail could not be recovered from a copy.
    pub lost: u64,
    /// I/O problems (logged; the file is retried on the next poll).
    pub errors: u64,
    /// The line budget ran out: call `poll` again without waiting.
    pub more: bool,
}

/// Why tailing could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The settings are unusable.
    #[error("tail: {0}")]
    Config(String),
    /// A glob pattern does not parse.
    #[error("tail: glob pattern `{pattern}`: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// The parser's complaint.
        message: String,
    },
    /// Loading or writing the checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The blocking task running the tailer failed.
    #[error("tail: worker task failed: {0}")]
    Task(String),
}

/// The metric label for a rejected record.
fn reject_reason(e: &EventError) -> &'static str {
    match e {
        EventError::Invalid(_) => "invalid",
        EventError::NotAnEvent(_) => "not_an_event",
        EventError::TooLarge { .. } => "too_large",
    }
}

/// Decoded output of one poll.
#[derive(Default)]
struct Polled {
    events: Vec<AuditEvent<'static>>,
    rejected: Vec<&'static str>,
    stats: PollStats,
}

fn poll_and_decode(
    tailer: &mut Tailer,
    limits: DecodeLimits,
    cluster: &Option<Arc<str>>,
) -> Result<Polled, TailError> {
    let mut p = Polled::default();
    let events = &mut p.events;
    let rejected = &mut p.rejected;
    let stats = tailer.poll(&mut |l: TailLine<'_>| {
        let loc = Location::line(l.line);
        let mut reject = |e: &EventError| {
            let reason = reject_reason(e);
            // File and line only: the content may hold secrets.
            tracing::warn!(file = %l.file.display(), line = l.line, reason, "Rejected a line that is not a usable audit event.");
            rejected.push(reason);
        };
        let res = decode_value(l.text, &loc, limits, &mut |d| match d {
            Ok(mut ev) => {
                ev.cluster = cluster.clone();
                events.push(ev.into_owned());
            }
            Err(e) => reject(&e.error),
        });
        if let Err(e) = res {
            reject(&e.error);
        }
    })?;
    p.stats = stats;
    Ok(p)
}

fn record(metrics: &Metrics, stats: &PollStats, rejected: &[&'static str]) {
    for r in rejected {
        metrics.rejected("tail", r, 1);
    }
    for (reason, n) in [
        ("too_large", stats.too_long),
        ("not_utf8", stats.not_utf8),
        ("incomplete", stats.incomplete),
    ] {
        if n > 0 {
            metrics.rejected("tail", reason, n);
        }
    }
    for (name, n) in [
        ("audithawk_tail_rotations_total", stats.rotations),
        ("audithawk_tail_truncations_total", stats.truncations),
        ("audithawk_tail_truncation_losses_total", stats.lost),
        ("audithawk_tail_read_errors_total", stats.errors),
    ] {
        if n > 0 {
            metrics.count(name, &[], n);
        }
    }
}

fn describe(metrics: &Metrics) {
    metrics.describe(
        "audithawk_tail_rotations_total",
        "Rotations (rename or deletion) of followed files noticed by tail.",
    );
    metrics.describe(
        "audithawk_tail_truncations_total",
        "In-place truncations (copytruncate) of followed files noticed by tail.",
    );
    metrics.describe(
        "audithawk_tail_truncation_losses_total",
        "Truncations whose unread lines could not be recovered from a copy.",
    );
    metrics.describe(
        "audithawk_tail_read_errors_total",
        "I/O errors while tailing (retried on the next poll).",
    );
    metrics.describe(
        "audithawk_tail_checkpoint_errors_total",
        "Checkpoint writes that failed (lines since the last good one are re-read after a restart).",
    );
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TailError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TailError::Task(e.to_string()))
}

/// Runs `audithawk tail`: follows `cfg.paths` and submits events to `handle` until
/// `shutdown` completes. The checkpoint is committed after each batch is processed (its
/// `done` signal), so a batch in flight at a crash is read again, never lost. On shutdown
/// the batch in flight is finished and committed first.
pub async fn run(
    cfg: TailConfig,
    handle: PipelineHandle,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TailError> {
    describe(&metrics);
    let cluster: Option<Arc<str>> = cfg.cluster.as_deref().map(Arc::from);
    let limits = DecodeLimits {
        max_event_bytes: cfg.max_line_bytes,
    };
    let interval = cfg.poll_interval;
    let mut tailer = blocking(move || Tailer::new(cfg)).await??;
    tokio::pin!(shutdown);
    loop {
        // Poll and decode off the async threads: file I/O and JSON parsing are blocking work.
        let c = cluster.clone();
        let (t, polled) = blocking(move || {
            let mut t = tailer;
            let r = poll_and_decode(&mut t, limits, &c);
            (t, r)
        })
        .await?;
        tailer = t;
        let Polled {
            events,
            rejected,
            stats,
        } = polled?;
        record(&metrics, &stats, &rejected);
        let n = events.len() as u64;
        if n > 0 {
            let (tx, rx) = oneshot::channel();
            let batch = Batch {
                source: Source::Tail,
                events,
                done: Some(tx),
            };
            // Waiting here is the back-pressure: we read no further while the queue is full.
            if handle.submit(batch).await.is_err() {
                tracing::info!("Pipeline closed; tail stops without committing the last batch.");
                return Ok(());
            }
            if rx.await.is_err() {
                tracing::warn!(
                    "Batch dropped before being processed; tail stops without committing it."
                );
                return Ok(());
            }
        }
        let (t, committed) = blocking(move || {
            let mut t = tailer;
            let r = t.commit();
            (t, r)
        })
        .await?;
        tailer = t;
        if let Err(e) = committed {
            metrics.count("audithawk_tail_checkpoint_errors_total", &[], 1);
            tracing::warn!(error = %e, "Checkpoint not written; will retry after the next batch.");
        }
        metrics.received("tail", n);
        if stats.more {
            // A backlog: keep reading, but let shutdown in between batches.
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                _ = std::future::ready(()) => {}
            }
        } else {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
