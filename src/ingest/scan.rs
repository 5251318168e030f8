//! `audithawk scan`: offline forensics over files, directories (recursively) and stdin.
//!
//! Scanning is synchronous and single-threaded on purpose: results are deterministic
//! (correlation windows see events in file order), and memory stays flat because each
//! record is parsed borrowed from one reused line buffer and dropped after evaluation.
//! Files are ordered by the time of their first event (so rotated backups, plain or
//! gzipped, are read oldest first whatever their names), falling back to modification time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use super::reader::{read_records, ReadError};
use crate::engine::{Disposition, Engine};
use crate::model::{decode_value, Alert, DecodeLimits, Level};
use crate::telemetry::Metrics;

/// What to scan and how.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Files, directories, or `-` for stdin.
    pub paths: Vec<PathBuf>,
    /// Cluster name attached to events.
    pub cluster: Option<String>,
    /// Largest record.
    pub max_event_bytes: usize,
    /// Show a progress bar on stderr (only when stderr is a terminal).
    pub progress: bool,
}

/// Totals for a person (and for `--fail-on`).
#[derive(Debug, Clone, Default)]
pub struct ScanSummary {
    /// Inputs read.
    pub inputs: usize,
    /// Bytes read (decompressed).
    pub bytes: u64,
    /// Events decoded.
    pub events: u64,
    /// Records that were not events (bad JSON, wrong types, too large).
    pub bad_records: u64,
    /// Exact duplicates skipped.
    pub duplicates: u64,
    /// Events at stages no rule looks at.
    pub stage_skipped: u64,
    /// Alerts by (level, rule id, title).
    pub alerts: BTreeMap<(Level, String, String), u64>,
    /// Earliest event time seen.
    pub first: Option<DateTime<Utc>>,
    /// Latest event time seen.
    pub last: Option<DateTime<Utc>>,
    /// Problems, as `file:line: message` (the first 1000).
    pub problems: Vec<String>,
    /// Problems not listed because there were too many.
    pub problems_omitted: u64,
    /// Files inside directories that were skipped because they hold neither JSON nor gzip.
    pub skipped_files: Vec<PathBuf>,
}

impl ScanSummary {
    /// Highest alert level seen.
    pub fn max_level(&self) -> Option<Level> {
        self.alerts.keys().map(|(l, _, _)| *l).max()
    }

    /// Total alerts.
    pub fn alert_count(&self) -> u64 {
        self.alerts.values().sum()
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 1000 {
            self.problems.push(p);
        } else {
            self.problems_omitted += 1;
        }
    }

    /// The human-readable summary.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "── scan summary ──");
        let _ = writeln!(
            s,
            "inputs: {}   bytes: {}   events: {}   bad records: {}   duplicates: {}   stage-skipped: {}",
            self.inputs, self.bytes, self.events, self.bad_records, self.duplicates, self.stage_skipped
        );
        match (self.first, self.last) {
            (Some(a), Some(b)) => {
                let _ = writeln!(
                    s,
                    "time span: {} .. {} ({})",
                    a.to_rfc3339(),
                    b.to_rfc3339(),
                    human(b - a)
                );
            }
            _ => {
                let _ = writeln!(s, "time span: (no timestamps)");
            }
        }
        let _ = writeln!(s, "alerts: {}", self.alert_count());
        for level in Level::ALL.iter().rev() {
            let n: u64 = self
                .alerts
                .iter()
                .filter(|((l, _, _), _)| l == level)
                .map(|(_, n)| n)
                .sum();
            if n > 0 {
                let _ = writeln!(s, "  {level:<13} {n}");
            }
        }
        let mut by_rule: Vec<_> = self.alerts.iter().collect();
        by_rule.sort_by(|a, b| b.0 .0.cmp(&a.0 .0).then(b.1.cmp(a.1)));
        for ((level, id, title), n) in by_rule {
            let _ = writeln!(s, "  {n:>7}  {level:<13} {title}  ({id})");
        }
        if !self.skipped_files.is_empty() {
            let _ = writeln!(
                s,
                "skipped (not JSON or gzip): {}",
                self.skipped_files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !self.problems.is_empty() {
            let _ = writeln!(
                s,
                "problems ({}):",
                self.problems.len() as u64 + self.problems_omitted
            );
            for p in self.problems.iter().take(20) {
                let _ = writeln!(s, "  {p}");
            }
            let more = self.problems.len().saturating_sub(20) as u64 + self.problems_omitted;
            if more > 0 {
                let _ = writeln!(s, "  ... and {more} more");
            }
        }
        s
    }
}

fn human(d: chrono::TimeDelta) -> String {
    let secs = d.num_seconds();
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{:.1}h", s as f64 / 3600.0),
        s => format!("{:.1}d", s as f64 / 86400.0),
    }
}

/// One input to read.
#[derive(Debug, Clone)]
enum Input {
    Stdin,
    File(PathBuf, u64),
}

impl Input {
    fn name(&self) -> String {
        match self {
            Input::Stdin => "<stdin>".into(),
            Input::File(p, _) => p.display().to_string(),
        }
    }
}

/// Expands directories recursively and orders files by the time of their first event.
fn collect_inputs(paths: &[PathBuf], summary: &mut ScanSummary, max_record: usize) -> Vec<Input> {
    let mut files = Vec::new();
    let mut stdin = false;
    for p in paths {
        if p.as_os_str() == "-" {
            stdin = true;
        } else {
            walk(p, true, &mut files, summary);
        }
    }
    let mut keyed: Vec<(Option<DateTime<Utc>>, SystemTime, PathBuf, u64)> = files
        .into_iter()
        .map(|(p, size, mtime)| (first_event_time(&p, max_record), mtime, p, size))
        .collect();
    // Files with a first event time sort by it; files without one (empty, unreadable) go by
    // mtime after those; ties by name so the order is deterministic.
    keyed.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y).then(a.2.cmp(&b.2)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.1.cmp(&b.1).then(a.2.cmp(&b.2)),
    });
    let mut out: Vec<Input> = keyed
        .into_iter()
        .map(|(_, _, p, s)| Input::File(p, s))
        .collect();
    if stdin {
        out.push(Input::Stdin);
    }
    out
}

/// Whether a file starts like something we can read: JSON (`{`, `[`) or gzip.
fn looks_readable(p: &Path) -> bool {
    let mut head = [0u8; 512];
    let n = File::open(p)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..n];
    head.starts_with(&[0x1f, 0x8b])
        || head
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_none_or(|b| *b == b'{' || *b == b'[')
}

/// Collects regular files below `p`. Files named on the command line (`explicit`) are always
/// read; files found inside directories are read only when they look like JSON or gzip, so a
/// README or PROVENANCE file next to the logs is skipped (and listed) rather than reported
/// line by line.
fn walk(
    p: &Path,
    explicit: bool,
    out: &mut Vec<(PathBuf, u64, SystemTime)>,
    summary: &mut ScanSummary,
) {
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) => {
            summary.problem(format!("{}: {e}", p.display()));
            return;
        }
    };
    if meta.is_dir() {
        let entries = match std::fs::read_dir(p) {
            Ok(rd) => rd,
            Err(e) => {
                summary.problem(format!("{}: {e}", p.display()));
                return;
            }
        };
        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for c in children {
            let hidden = c
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if !hidden {
                walk(&c, false, out, summary);
            }
        }
    } else if meta.is_file() {
        if !explicit && !looks_readable(p) {
            summary.skipped_files.push(p.to_path_buf());
            return;
        }
        out.push((
            p.to_path_buf(),
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        ));
    }
}

/// The event time of the first decodable event in a file (reads only the first records).
fn first_event_time(p: &Path, max_record: usize) -> Option<DateTime<Utc>> {
    let f = File::open(p).ok()?;
    let mut found = None;
    let mut seen = 0;
    // Stop early: the callback cannot abort the reader, so cap the bytes instead.
    let limited = f.take(4 * 1024 * 1024);
    let _ = read_records(limited, max_record, &mut |r| {
        if found.is_some() || seen > 50 {
            return;
        }
        seen += 1;
        if let Ok((text, loc)) = r {
            let _ = decode_value(
                text,
                &loc,
                DecodeLimits {
                    max_event_bytes: max_record,
                },
                &mut |d| {
                    if found.is_none() {
                        if let Ok(ev) = d {
                            found = ev.event_time();
                        }
                    }
                },
            );
        }
    });
    found
}

/// Reader wrapper that advances a progress bar.
struct Progress<R> {
    inner: R,
    bar: Option<indicatif::ProgressBar>,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
}

/// Scans the inputs, calling `on_alert` for each alert in order. Returns the summary.
pub fn scan(
    opts: &ScanOptions,
    engine: &Engine,
    metrics: &Metrics,
    on_alert: &mut dyn FnMut(Alert),
) -> ScanSummary {
    let mut summary = ScanSummary::default();
    let inputs = collect_inputs(&opts.paths, &mut summary, opts.max_event_bytes);
    let total: u64 = inputs
        .iter()
        .map(|i| if let Input::File(_, s) = i { *s } else { 0 })
        .sum();
    // A bar only for people: when stderr is a terminal and the input is worth waiting for.
    let bar =
        (opts.progress && io::stderr().is_terminal() && total > 32 * 1024 * 1024).then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
    let cluster: Option<Arc<str>> = opts.cluster.as_deref().map(Arc::from);
    let limits = DecodeLimits {
        max_event_bytes: opts.max_event_bytes,
    };
    let now = Utc::now();
    let mut alerts = Vec::new();
    for input in inputs {
        summary.inputs += 1;
        let name = input.name();
        let reader: Box<dyn Read> = match &input {
            Input::Stdin => Box::new(io::stdin().lock()),
            Input::File(p, _) => match File::open(p) {
                Ok(f) => Box::new(Progress {
                    inner: f,
                    bar: bar.clone(),
                }),
                Err(e) => {
                    summary.problem(format!("{name}: {e}"));
                    continue;
                }
            },
        };
        let mut bad_here = 0u64;
        let result = read_records(reader, opts.max_event_bytes, &mut |rec| {
            let (text, loc) = match rec {
                Ok(r) => r,
                Err(e) => {
                    bad_here += 1;
                    summary.problem(format!("{name}: {e}"));
                    return;
                }
            };
            let whole = decode_value(text, &loc, limits, &mut |d| match d {
                Ok(mut ev) => {
                    ev.cluster = cluster.clone();
                    summary.events += 1;
                    if let Some(t) = ev.event_time() {
                        summary.first = Some(summary.first.map_or(t, |f| f.min(t)));
                        summary.last = Some(summary.last.map_or(t, |l| l.max(t)));
                    }
                    match engine.process(&ev, now, &mut alerts) {
                        Disposition::Duplicate => summary.duplicates += 1,
                        Disposition::StageSkipped => summary.stage_skipped += 1,
                        Disposition::Evaluated => {}
                    }
                    for a in alerts.drain(..) {
                        *summary
                            .alerts
                            .entry((a.rule.level, a.rule.id.clone(), a.rule.name.clone()))
                            .or_default() += 1;
                        on_alert(a);
                    }
                }
                Err(e) => {
                    bad_here += 1;
                    summary.problem(format!("{name}: {e}"));
                }
            });
            if let Err(e) = whole {
                bad_here += 1;
                summary.problem(format!("{name}: {e}"));
            }
        });
        match result {
            Ok((_, stats)) => summary.bytes += stats.bytes,
            Err(ReadError { location, message }) => {
                bad_here += 1;
                summary.problem(format!("{name}: {location}: {message}"));
            }
        }
        summary.bad_records += bad_here;
    }
    // End of input: release held records and decide open windows.
    if let Some(c) = engine.correlator() {
        c.flush(&mut alerts);
        for a in alerts.drain(..) {
            metrics.alert(&a.rule.id, a.rule.level);
            *summary
                .alerts
                .entry((a.rule.level, a.rule.id.clone(), a.rule.name.clone()))
                .or_default() += 1;
            on_alert(a);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    metrics.received("scan", summary.events);
    if summary.bad_records > 0 {
        metrics.rejected("scan", "invalid", summary.bad_records);
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn engine() -> Engine {
        let (rules, _) =
            crate::rules::RuleSet::load(&crate::rules::LoadOptions::default()).unwrap();
        Engine::new(Arc::new(rules), 1000, Arc::new(Metrics::new()))
    }

    fn line(id: &str, ts: &str) -> String {
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"{id}","stage":"ResponseComplete","verb":"get","stageTimestamp":"{ts}"}}"#
        )
    }

    #[test]
    fn orders_files_by_first_event_and_reads_gz_and_counts_bad() {
        let dir = tempfile::tempdir().unwrap();
        // Newest in a plain file named to sort first; oldest in a gz backup.
        std::fs::write(
            dir.path().join("a-current.log"),
            line("3", "2026-01-03T00:00:00Z") + "\n{broken\n",
        )
        .unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        writeln!(gz, "{}", line("1", "2026-01-01T00:00:00Z")).unwrap();
        std::fs::create_dir(dir.path().join("old")).unwrap();
        std::fs::write(dir.path().join("old/z-backup.log.gz"), gz.finish().unwrap()).unwrap();
        std::fs::write(
            dir.path().join("m.log"),
            line("2", "2026-01-02T00:00:00Z") + "\n",
        )
        .unwrap();
        let mut s = ScanSummary::default();
        let order: Vec<String> = collect_inputs(&[dir.path().to_path_buf()], &mut s, 1 << 20)
            .iter()
            .map(|i| i.name().rsplit('/').next().unwrap_or("").to_string())
            .collect();
        assert_eq!(order, vec!["z-backup.log.gz", "m.log", "a-current.log"]);
        let opts = ScanOptions {
            paths: vec![dir.path().into()],
            cluster: Some("c".into()),
            max_event_bytes: 1 << 20,
            progress: false,
        };
        let m = Metrics::new();
        let sum = scan(&opts, &engine(), &m, &mut |_| {});
        assert_eq!(sum.events, 3);
        assert_eq!(sum.bad_records, 1);
        assert!(
            sum.problems[0].contains("a-current.log: line 2"),
            "{:?}",
            sum.problems
        );
        assert_eq!(sum.first.unwrap().to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(
            m.value("audithawk_events_received_total", &[("source", "scan")]),
            3
        );
    }

    #[test]
    fn missing_path_is_a_problem_not_a_crash() {
        let opts = ScanOptions {
            paths: vec!["/no/such/file".into()],
            cluster: None,
            max_event_bytes: 1 << 20,
            progress: false,
        };
        let sum = scan(&opts, &engine(), &Metrics::new(), &mut |_| {});
        assert_eq!(sum.inputs, 0);
        assert!(sum.problems[0].contains("/no/such/file"));
    }
}
