//! The shared sink driver: queue, disk buffer, batching, retry, concurrency, dead letter,
//! routing, shutdown.
//!
//! ```text
//! submit ──▶ in-memory queue (bounded)  ─┐
//!        └─▶ disk buffer (size-capped)  ─┴─▶ batcher ──▶ N deliveries in flight ──▶ sink
//!                                                         │ retry: backoff + jitter
//!                                                         ├─ rejected ─▶ dead-letter file
//!                                                         └─ ack ─▶ buffer watermark
//! ```
//! With a disk buffer, [`SinkDriver::submit`] returns once the record is in the buffer
//! file, so an alert the engine handed over survives a crash of the process; it is removed
//! only after the sink confirmed delivery (or it was dead-lettered).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::buffer::{BufferReader, DiskBuffer, DiskBufferConfig};
use super::dead_letter::DeadLetter;
use super::{Record, SendOutcome, Sink};
use crate::model::{Level, SharedAlert};
use crate::telemetry::Metrics;

/// When a batch is sent.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Send when this many records are waiting.
    pub max_events: usize,
    /// Send when the records reach this many bytes (estimated by [`Record::size_hint`]).
    pub max_bytes: usize,
    /// Send at the latest this long after the first record of a batch arrived.
    pub timeout: Duration,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_events: 1000,
            max_bytes: 1024 * 1024,
            timeout: Duration::from_secs(1),
        }
    }
}

/// How failed sends are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First backoff.
    pub initial: Duration,
    /// Backoff cap (also caps a server's Retry-After).
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Full-jitter backoff for attempt `n` (0-based): uniform in [0, min(max, initial·2ⁿ)].
    /// Full jitter spreads the retries of many instances after a shared SIEM outage.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        cap.mul_f64(fastrand::f64())
    }
}

/// Which alerts go to a sink.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// Minimum level.
    pub min_level: Option<Level>,
    /// Only these rule ids (empty: all).
    pub rules: Vec<String>,
    /// Only rules carrying one of these tags (empty: all).
    pub tags: Vec<String>,
}

impl Route {
    /// Whether `alert` goes through this route.
    pub fn accepts(&self, alert: &crate::model::Alert) -> bool {
        self.min_level.is_none_or(|m| alert.rule.level >= m)
            && (self.rules.is_empty() || self.rules.contains(&alert.rule.id))
            && (self.tags.is_empty() || self.tags.iter().any(|t| alert.rule.tags.contains(t)))
    }
}

/// Everything the driver needs besides the sink.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Which alerts this sink receives (used by the [`Router`]).
    pub route: Route,
    /// Batching.
    pub batch: BatchPolicy,
    /// Retries.
    pub retry: RetryPolicy,
    /// In-memory queue capacity (records), used without a disk buffer.
    pub capacity: usize,
    /// Batches in flight at once.
    pub concurrency: usize,
    /// The disk buffer, if any.
    pub disk: Option<DiskBufferConfig>,
    /// The dead-letter file, if any (without one, rejects are only logged and counted).
    pub dead_letter: Option<std::path::PathBuf>,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            route: Route::default(),
            batch: BatchPolicy::default(),
            retry: RetryPolicy::default(),
            capacity: 10_000,
            concurrency: 2,
            disk: None,
            dead_letter: None,
        }
    }
}

/// Why a driver could not start.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The disk buffer could not be opened.
    #[error(transparent)]
    Buffer(#[from] super::buffer::BufferError),
    /// The dead-letter file could not be opened.
    #[error("dead-letter file {path}: {source}")]
    DeadLetter {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A record and when the driver took it.
struct Entry<T> {
    item: T,
    /// Its buffer sequence number (disk mode).
    seq: Option<u64>,
    since: Instant,
}

/// Records recently written to the disk buffer, by sequence number, kept in memory so that
/// the reader need not decode them again (the common case: the reader is not far behind).
/// Bounded; after a restart or a long outage the reader decodes from disk instead.
struct Recent<T> {
    items: Mutex<BTreeMap<u64, (T, Instant)>>,
    cap: usize,
}

impl<T> Recent<T> {
    fn put(&self, seq: u64, item: T) {
        let mut m = self.items.lock();
        m.insert(seq, (item, Instant::now()));
        while m.len() > self.cap {
            m.pop_first();
        }
    }

    /// The record `seq` if still held; drops older ones (already read).
    fn take(&self, seq: u64) -> Option<(T, Instant)> {
        let mut m = self.items.lock();
        while m.first_key_value().is_some_and(|(k, _)| *k < seq) {
            m.pop_first();
        }
        m.remove(&seq)
    }
}

enum Input<T> {
    Memory(mpsc::Sender<Entry<T>>),
    Disk(Arc<DiskBuffer>, Arc<Recent<T>>),
}

enum Source<T> {
    Memory(mpsc::Receiver<Entry<T>>),
    Disk(BufferReader, Arc<Recent<T>>),
}

/// A running sink: its queue and its task.
pub struct SinkDriver<T: Record = SharedAlert> {
    name: String,
    route: Route,
    input: Option<Input<T>>,
    task: JoinHandle<()>,
    metrics: Arc<Metrics>,
    /// Records queued and not finished (memory mode) / pushes so far (disk mode).
    pending: Arc<AtomicI64>,
}

impl<T: Record> std::fmt::Debug for SinkDriver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkDriver")
            .field("name", &self.name)
            .field("route", &self.route)
            .finish()
    }
}

impl SinkDriver<SharedAlert> {
    /// Starts a driver with an in-memory queue of `capacity` alerts and one batch in flight.
    pub fn spawn(
        sink: Arc<dyn Sink>,
        route: Route,
        batch: BatchPolicy,
        retry: RetryPolicy,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> SinkDriver {
        let opts = DriverOptions {
            route,
            batch,
            retry,
            capacity,
            concurrency: 1,
            ..DriverOptions::default()
        };
        // Without a disk buffer or dead-letter file nothing can fail to open.
        match SinkDriver::start(sink, opts, metrics) {
            Ok(d) => d,
            Err(e) => unreachable!("memory-only driver cannot fail: {e}"),
        }
    }
}

impl<T: Record> SinkDriver<T> {
    /// Starts the driver task for `sink` with `opts` (opens the disk buffer and the
    /// dead-letter file; replays what the buffer holds from a previous run).
    pub fn start(
        sink: Arc<dyn Sink<T>>,
        opts: DriverOptions,
        metrics: Arc<Metrics>,
    ) -> Result<SinkDriver<T>, DriverError> {
        let name = sink.name().to_string();
        let dead = match &opts.dead_letter {
            Some(p) => Some(Arc::new(DeadLetter::open(p).map_err(|source| {
                DriverError::DeadLetter {
                    path: p.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        let (input, source) = match &opts.disk {
            Some(cfg) => {
                let buf = DiskBuffer::open(cfg.clone())?;
                let st = buf.stats();
                if st.events > 0 {
                    tracing::info!(sink = %name, events = st.events, bytes = st.bytes, "Replaying alerts kept in the disk buffer.");
                }
                metrics.gauge_set(
                    "audithawk_sink_buffered_events",
                    &[("sink", &name)],
                    st.events as i64,
                );
                metrics.gauge_set(
                    "audithawk_sink_buffered_bytes",
                    &[("sink", &name)],
                    st.bytes as i64,
                );
                let reader = buf.reader();
                let recent = Arc::new(Recent {
                    items: Mutex::new(BTreeMap::new()),
                    cap: if opts.capacity == 0 {
                        10_000
                    } else {
                        opts.capacity
                    },
                });
                (
                    Input::Disk(buf, recent.clone()),
                    Source::Disk(reader, recent),
                )
            }
            None => {
                let (tx, rx) = mpsc::channel(opts.capacity.max(1));
                (Input::Memory(tx), Source::Memory(rx))
            }
        };
        let pending = Arc::new(AtomicI64::new(0));
        let ctx = Arc::new(Ctx {
            pending: pending.clone(),
            sink,
            name: name.clone(),
            retry: opts.retry,
            metrics: metrics.clone(),
            dead,
            buffer: match &input {
                Input::Disk(b, _) => Some(b.clone()),
                Input::Memory(_) => None,
            },
        });
        let task = tokio::spawn(run(ctx, source, opts.batch, opts.concurrency.max(1)));
        Ok(SinkDriver {
            name,
            route: opts.route,
            input: Some(input),
            task,
            metrics,
            pending,
        })
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route of this sink.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// Queues a record: into the disk buffer (returns once it is written) or the in-memory
    /// queue; waits while either is full (back-pressure). Errs when the driver has stopped
    /// or the buffer cannot be written.
    pub async fn submit(&self, item: T) -> Result<(), T> {
        match &self.input {
            Some(Input::Memory(tx)) => {
                let n = self.pending.fetch_add(1, Ordering::Relaxed) + 1;
                // Publishing the gauge costs a registry lookup: do it every 64 records.
                if n % 64 == 1 {
                    self.metrics.gauge_set(
                        "audithawk_sink_buffered_events",
                        &[("sink", &self.name)],
                        n,
                    );
                }
                tx.send(Entry {
                    item,
                    seq: None,
                    since: Instant::now(),
                })
                .await
                .map_err(|e| {
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                    e.0.item
                })
            }
            Some(Input::Disk(buf, recent)) => match buf.push_seq(&item.to_bytes()).await {
                Ok((seq, dropped)) => {
                    recent.put(seq, item);
                    if dropped > 0 {
                        self.metrics.count(
                            "audithawk_sink_dropped_total",
                            &[("sink", &self.name)],
                            dropped,
                        );
                        tracing::warn!(sink = %self.name, dropped, "Disk buffer full: oldest alerts dropped.");
                    }
                    let n = self.pending.fetch_add(1, Ordering::Relaxed);
                    if n % 64 == 0 || dropped > 0 {
                        let st = buf.stats();
                        self.metrics.gauge_set(
                            "audithawk_sink_buffered_events",
                            &[("sink", &self.name)],
                            st.events as i64,
                        );
                        self.metrics.gauge_set(
                            "audithawk_sink_buffered_bytes",
                            &[("sink", &self.name)],
                            st.bytes as i64,
                        );
                    }
                    Ok(())
                }
                Err(e) => {
                    self.metrics.count(
                        "audithawk_sink_failed_total",
                        &[("sink", &self.name), ("reason", "buffer")],
                        1,
                    );
                    tracing::error!(sink = %self.name, error = %e, "Alert could not be buffered.");
                    Err(item)
                }
            },
            None => Err(item),
        }
    }

    /// Stops taking records and waits (up to `deadline`) for the driver to deliver what it
    /// holds. Returns false if the deadline passed: then what is still in the disk buffer
    /// is delivered after the next start; without one it is lost (and logged).
    pub async fn shutdown(mut self, deadline: Duration) -> bool {
        if let Some(Input::Disk(buf, _)) = &self.input {
            buf.close();
        }
        self.input = None;
        match tokio::time::timeout(deadline, &mut self.task).await {
            Ok(_) => true,
            Err(_) => {
                self.task.abort();
                let left = self
                    .metrics
                    .gauge_value("audithawk_sink_buffered_events", &[("sink", &self.name)]);
                tracing::warn!(sink = %self.name, left, "Shutdown deadline passed with alerts undelivered.");
                false
            }
        }
    }
}

/// What the delivery tasks share.
struct Ctx<T: Record> {
    sink: Arc<dyn Sink<T>>,
    name: String,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
    dead: Option<Arc<DeadLetter>>,
    buffer: Option<Arc<DiskBuffer>>,
    pending: Arc<AtomicI64>,
}

impl<T: Record> Source<T> {
    /// Up to `max` entries; `None` when the input is closed and drained. Cancel-safe.
    async fn next(&mut self, max: usize, ctx: &Ctx<T>) -> Option<Vec<Entry<T>>> {
        match self {
            Source::Memory(rx) => {
                let first = rx.recv().await?;
                let mut v = vec![first];
                while v.len() < max {
                    match rx.try_recv() {
                        Ok(e) => v.push(e),
                        Err(_) => break,
                    }
                }
                Some(v)
            }
            Source::Disk(r, recent) => {
                let raw = r.next_chunk(max).await?;
                let now = Instant::now();
                let mut v = Vec::with_capacity(raw.len());
                for (seq, bytes) in raw {
                    if let Some((item, since)) = recent.take(seq) {
                        v.push(Entry {
                            item,
                            seq: Some(seq),
                            since,
                        });
                        continue;
                    }
                    match T::from_bytes(&bytes) {
                        Ok(item) => v.push(Entry {
                            item,
                            seq: Some(seq),
                            since: now,
                        }),
                        Err(e) => {
                            // Only possible after a format change or disk corruption that the
                            // checksum missed: keep the bytes for a human, move on.
                            ctx.reject_bytes(&e, &bytes);
                            if let Some(b) = &ctx.buffer {
                                b.ack(seq, seq + 1);
                            }
                        }
                    }
                }
                Some(v)
            }
        }
    }
}

async fn run<T: Record>(
    ctx: Arc<Ctx<T>>,
    mut source: Source<T>,
    policy: BatchPolicy,
    concurrency: usize,
) {
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut inflight = JoinSet::new();
    let mut batch: Vec<Entry<T>> = Vec::new();
    let mut bytes = 0usize;
    let mut deadline: Option<Instant> = None;
    loop {
        let room = policy.max_events.saturating_sub(batch.len()).max(1);
        let next = match deadline {
            Some(d) => tokio::select! {
                m = source.next(room, &ctx) => Some(m),
                _ = tokio::time::sleep_until(d) => None,
            },
            None => Some(source.next(room, &ctx).await),
        };
        let closed = match next {
            Some(Some(entries)) => {
                if batch.is_empty() && !entries.is_empty() {
                    deadline = Some(Instant::now() + policy.timeout);
                }
                for e in entries {
                    bytes += e.item.size_hint();
                    batch.push(e);
                }
                if batch.len() < policy.max_events && bytes < policy.max_bytes {
                    continue;
                }
                false
            }
            Some(None) => true,
            None => false,
        };
        if !batch.is_empty() {
            // Waiting for a permit here is the concurrency limit, and it stops the batcher
            // from reading ahead without bound.
            let Ok(permit) = sem.clone().acquire_owned().await else {
                break;
            };
            let ctx = ctx.clone();
            let b = std::mem::take(&mut batch);
            inflight.spawn(async move {
                deliver(&ctx, b).await;
                drop(permit);
            });
            // Reap finished deliveries so the set stays small.
            while inflight.try_join_next().is_some() {}
        }
        bytes = 0;
        deadline = None;
        if closed {
            break;
        }
    }
    while inflight.join_next().await.is_some() {}
    if let Err(e) = ctx.sink.flush().await {
        tracing::warn!(sink = %ctx.name, error = %e, "Flush at shutdown failed.");
    }
}

/// Latency histogram bounds, seconds.
const LATENCY_BUCKETS: [(f64, &str); 8] = [
    (0.01, "0.01"),
    (0.05, "0.05"),
    (0.1, "0.1"),
    (0.5, "0.5"),
    (1.0, "1"),
    (5.0, "5"),
    (30.0, "30"),
    (300.0, "300"),
];

impl<T: Record> Ctx<T> {
    fn labels(&self) -> [(&'static str, &str); 1] {
        [("sink", self.name.as_str())]
    }

    fn delivered(&self, entries: &[Entry<T>]) {
        if entries.is_empty() {
            return;
        }
        self.metrics.count(
            "audithawk_sink_sent_total",
            &self.labels(),
            entries.len() as u64,
        );
        // Aggregate the batch first: one registry update per bucket, not per record.
        let now = Instant::now();
        let mut counts = [0u64; LATENCY_BUCKETS.len()];
        let mut sum_ms = 0u64;
        for e in entries {
            let secs = now.saturating_duration_since(e.since).as_secs_f64();
            sum_ms += (secs * 1000.0) as u64;
            for (i, (le, _)) in LATENCY_BUCKETS.iter().enumerate() {
                if secs <= *le {
                    counts[i] += 1;
                }
            }
        }
        for (i, (_, label)) in LATENCY_BUCKETS.iter().enumerate() {
            self.metrics.count(
                "audithawk_sink_delivery_latency_seconds_bucket",
                &[("sink", &self.name), ("le", label)],
                counts[i],
            );
        }
        self.metrics.count(
            "audithawk_sink_delivery_latency_seconds_bucket",
            &[("sink", &self.name), ("le", "+Inf")],
            entries.len() as u64,
        );
        self.metrics.count(
            "audithawk_sink_delivery_latency_milliseconds_sum",
            &self.labels(),
            sum_ms,
        );
    }

    fn reject(&self, entry: &Entry<T>, reason: &str) {
        let mut json = Vec::new();
        entry.item.write_json(&mut json);
        self.reject_bytes(reason, &json);
    }

    fn reject_bytes(&self, reason: &str, json: &[u8]) {
        self.metrics.count(
            "audithawk_sink_failed_total",
            &[("sink", &self.name), ("reason", "rejected")],
            1,
        );
        match &self.dead {
            Some(d) => match d.write(&self.name, reason, json) {
                Ok(()) => {
                    self.metrics
                        .count("audithawk_sink_dead_lettered_total", &self.labels(), 1)
                }
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, reason, "Rejected record could not be written to the dead-letter file.")
                }
            },
            None => {
                tracing::error!(sink = %self.name, reason, "Record rejected by the sink (no dead-letter file configured).")
            }
        }
    }

    /// Marks entries as finished (delivered or dead-lettered) in the buffer.
    fn finish(&self, entries: &[Entry<T>]) {
        match &self.buffer {
            Some(b) => {
                // Ack runs of consecutive sequence numbers: one watermark write per run.
                let mut run: Option<(u64, u64)> = None;
                for s in entries.iter().filter_map(|e| e.seq) {
                    run = match run {
                        Some((a, e)) if e == s => Some((a, s + 1)),
                        Some((a, e)) => {
                            b.ack(a, e);
                            Some((s, s + 1))
                        }
                        None => Some((s, s + 1)),
                    };
                }
                if let Some((a, e)) = run {
                    b.ack(a, e);
                }
                let st = b.stats();
                self.metrics.gauge_set(
                    "audithawk_sink_buffered_events",
                    &self.labels(),
                    st.events as i64,
                );
                self.metrics.gauge_set(
                    "audithawk_sink_buffered_bytes",
                    &self.labels(),
                    st.bytes as i64,
                );
            }
            None => {
                let n = self
                    .pending
                    .fetch_sub(entries.len() as i64, Ordering::Relaxed)
                    - entries.len() as i64;
                self.metrics
                    .gauge_set("audithawk_sink_buffered_events", &self.labels(), n);
            }
        }
    }
}

/// Sends one batch until every record is delivered or rejected for good.
async fn deliver<T: Record>(ctx: &Ctx<T>, mut batch: Vec<Entry<T>>) {
    let name = ctx.name.as_str();
    let mut attempt = 0u32;
    let mut items: Vec<T> = batch.iter().map(|e| e.item.clone()).collect();
    while !batch.is_empty() {
        // One span per attempt (exported when OTLP tracing is on, sampled).
        let span = tracing::info_span!(
            crate::telemetry::otel::SPAN_SINK_SEND,
            sink = %ctx.name,
            items = items.len()
        );
        let outcome = tracing::Instrument::instrument(ctx.sink.send(&items), span).await;
        match outcome {
            SendOutcome::Done => {
                ctx.delivered(&batch);
                ctx.finish(&batch);
                return;
            }
            SendOutcome::Partial {
                retry: again,
                rejected,
            } => {
                let mut keep = vec![0u8; batch.len()]; // 0 delivered, 1 retry, 2 rejected
                for &i in &again {
                    if let Some(k) = keep.get_mut(i) {
                        *k = 1;
                    }
                }
                for (i, reason) in &rejected {
                    if let (Some(k), Some(e)) = (keep.get_mut(*i), batch.get(*i)) {
                        *k = 2;
                        tracing::error!(sink = %name, id = %e.item.id(), reason = %reason, "Record rejected by the sink.");
                        ctx.reject(e, reason);
                    }
                }
                let (mut retry_entries, mut sent, mut dropped) =
                    (Vec::new(), Vec::new(), Vec::new());
                for (e, k) in batch.into_iter().zip(keep) {
                    match k {
                        0 => sent.push(e),
                        1 => retry_entries.push(e),
                        _ => dropped.push(e),
                    }
                }
                ctx.delivered(&sent);
                ctx.finish(&sent);
                ctx.finish(&dropped);
                batch = retry_entries;
                items = batch.iter().map(|e| e.item.clone()).collect();
                if !batch.is_empty() {
                    ctx.metrics.count(
                        "audithawk_sink_retried_total",
                        &ctx.labels(),
                        batch.len() as u64,
                    );
                    tokio::time::sleep(ctx.retry.backoff(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
            SendOutcome::Retry { reason, after } => {
                ctx.metrics.count(
                    "audithawk_sink_retried_total",
                    &ctx.labels(),
                    batch.len() as u64,
                );
                ctx.metrics.count(
                    "audithawk_sink_failed_total",
                    &[("sink", name), ("reason", "retriable")],
                    batch.len() as u64,
                );
                tracing::warn!(sink = %name, attempt, reason = %reason, "Delivery failed; retrying.");
                let wait = after
                    .unwrap_or_else(|| ctx.retry.backoff(attempt))
                    .min(ctx.retry.max);
                tokio::time::sleep(wait).await;
                attempt = attempt.saturating_add(1);
            }
            SendOutcome::Fatal { reason } => {
                ctx.metrics.count(
                    "audithawk_sink_failed_total",
                    &[("sink", name), ("reason", "fatal")],
                    batch.len() as u64,
                );
                tracing::error!(sink = %name, count = batch.len(), reason = %reason, "Alerts could not be delivered; keeping them in the dead-letter file.");
                for e in &batch {
                    ctx.reject(e, &reason);
                }
                ctx.finish(&batch);
                return;
            }
        }
    }
}

/// Fans alerts out to every sink whose route accepts them.
#[derive(Debug, Default)]
pub struct Router {
    drivers: Vec<SinkDriver>,
}

impl Router {
    /// A router over `drivers`.
    pub fn new(drivers: Vec<SinkDriver>) -> Router {
        Router { drivers }
    }

    /// The sinks' names, in order.
    pub fn sink_names(&self) -> Vec<&str> {
        self.drivers.iter().map(|d| d.name()).collect()
    }

    /// Sends `alert` to every matching sink (waiting on full queues and buffers).
    pub async fn dispatch(&self, alert: SharedAlert) {
        for d in &self.drivers {
            if d.route.accepts(&alert) && d.submit(alert.clone()).await.is_err() {
                tracing::error!(sink = %d.name, "Sink driver stopped; alert not queued.");
            }
        }
    }

    /// Shuts every driver down within `deadline` (in parallel); returns false if any timed
    /// out.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        let all = self.drivers.into_iter().map(|d| d.shutdown(deadline));
        futures_util::future::join_all(all)
            .await
            .into_iter()
            .all(|ok| ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::BoxFuture;
    use parking_lot::Mutex;

    /// Fails the first `fail` attempts with Retry, then accepts.
    struct Flaky {
        fail: Mutex<u32>,
        got: Mutex<Vec<String>>,
    }

    impl Sink for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn send<'a>(&'a self, batch: &'a [SharedAlert]) -> BoxFuture<'a, SendOutcome> {
            Box::pin(async move {
                let mut f = self.fail.lock();
                if *f > 0 {
                    *f -= 1;
                    return SendOutcome::Retry {
                        reason: "down".into(),
                        after: None,
                    };
                }
                self.got
                    .lock()
                    .extend(batch.iter().map(|a| a.event.id.clone()));
                SendOutcome::Done
            })
        }
    }

    fn alert(id: &str) -> SharedAlert {
        let ev = crate::model::AuditEvent::parse(r#"{"auditID":"x","verb":"get"}"#).unwrap();
        let meta = crate::model::RuleMeta {
            id: "r".into(),
            title: "t".into(),
            level: Level::Low,
            tags: vec![],
            description: String::new(),
            references: vec![],
            author: None,
            source: "test".into(),
        };
        let mut a = crate::model::Alert::new(&meta, &ev, chrono::Utc::now());
        a.event.id = id.into();
        Arc::new(a)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_delivered_and_batches_by_time() {
        let sink = Arc::new(Flaky {
            fail: Mutex::new(3),
            got: Mutex::new(vec![]),
        });
        let m = Arc::new(Metrics::new());
        let d = SinkDriver::spawn(
            sink.clone(),
            Route::default(),
            BatchPolicy::default(),
            RetryPolicy::default(),
            10,
            m.clone(),
        );
        d.submit(alert("a")).await.unwrap();
        d.submit(alert("b")).await.unwrap();
        assert!(d.shutdown(Duration::from_secs(600)).await);
        assert_eq!(*sink.got.lock(), vec!["a", "b"]);
        assert_eq!(
            m.value("audithawk_sink_retried_total", &[("sink", "flaky")]),
            6
        );
        assert_eq!(
            m.value("audithawk_sink_sent_total", &[("sink", "flaky")]),
            2
        );
    }

    #[test]
    fn backoff_is_capped() {
        let r = RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
        };
        for n in 0..40 {
            assert!(r.backoff(n) <= Duration::from_secs(5));
        }
    }

    #[test]
    fn route_filters() {
        let a = alert("a");
        assert!(Route::default().accepts(&a));
        assert!(!Route {
            min_level: Some(Level::High),
            ..Default::default()
        }
        .accepts(&a));
        assert!(Route {
            rules: vec!["r".into()],
            ..Default::default()
        }
        .accepts(&a));
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;
    use crate::sinks::BoxFuture;
    use parking_lot::Mutex;
    use std::sync::atomic::AtomicUsize;

    fn alert(id: &str) -> SharedAlert {
        let ev = crate::model::AuditEvent::parse(r#"{"auditID":"x","verb":"get"}"#).unwrap();
        let meta = crate::model::RuleMeta {
            id: "r".into(),
            title: "t".into(),
            level: Level::Low,
            tags: vec![],
            description: String::new(),
            references: vec![],
            author: None,
            source: "test".into(),
        };
        let mut a = crate::model::Alert::new(&meta, &ev, chrono::Utc::now());
        a.event.id = id.into();
        Arc::new(a)
    }

    /// Records when each attempt happened; answers from a script, then Done.
    struct Scripted {
        script: Mutex<Vec<SendOutcome>>,
        attempts: Mutex<Vec<Instant>>,
        inflight: AtomicUsize,
        max_inflight: AtomicUsize,
        hold: Duration,
    }

    impl Scripted {
        fn new(mut script: Vec<SendOutcome>, hold: Duration) -> Scripted {
            script.reverse();
            Scripted {
                script: Mutex::new(script),
                attempts: Mutex::new(vec![]),
                inflight: AtomicUsize::new(0),
                max_inflight: AtomicUsize::new(0),
                hold,
            }
        }
    }

    impl Sink for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn send<'a>(&'a self, _batch: &'a [SharedAlert]) -> BoxFuture<'a, SendOutcome> {
            Box::pin(async move {
                self.attempts.lock().push(Instant::now());
                let now = self.inflight.fetch_add(1, Ordering::SeqCst) + 1;
                self.max_inflight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(self.hold).await;
                self.inflight.fetch_sub(1, Ordering::SeqCst);
                self.script.lock().pop().unwrap_or(SendOutcome::Done)
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_and_capped() {
        let sink = Arc::new(Scripted::new(
            vec![
                SendOutcome::Retry {
                    reason: "429".into(),
                    after: Some(Duration::from_secs(7)),
                },
                SendOutcome::Retry {
                    reason: "429".into(),
                    after: Some(Duration::from_secs(3600)),
                },
            ],
            Duration::ZERO,
        ));
        let opts = DriverOptions {
            retry: RetryPolicy {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(60),
            },
            ..DriverOptions::default()
        };
        let d = SinkDriver::start(
            sink.clone() as Arc<dyn Sink>,
            opts,
            Arc::new(Metrics::new()),
        )
        .unwrap();
        d.submit(alert("a")).await.unwrap();
        assert!(d.shutdown(Duration::from_secs(600)).await);
        let t = sink.attempts.lock().clone();
        assert_eq!(t.len(), 3);
        assert_eq!(t[1] - t[0], Duration::from_secs(7), "Retry-After: 7");
        assert_eq!(
            t[2] - t[1],
            Duration::from_secs(60),
            "a 1 h Retry-After is capped at retry.max"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_limited() {
        let sink = Arc::new(Scripted::new(vec![], Duration::from_secs(1)));
        let m = Arc::new(Metrics::new());
        let opts = DriverOptions {
            batch: BatchPolicy {
                max_events: 1,
                ..BatchPolicy::default()
            },
            concurrency: 3,
            ..DriverOptions::default()
        };
        let d = SinkDriver::start(sink.clone() as Arc<dyn Sink>, opts, m.clone()).unwrap();
        for i in 0..12 {
            d.submit(alert(&i.to_string())).await.unwrap();
        }
        let start = Instant::now();
        assert!(d.shutdown(Duration::from_secs(600)).await);
        assert_eq!(sink.max_inflight.load(Ordering::SeqCst), 3);
        // 12 one-second sends, three at a time.
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        assert_eq!(
            m.value("audithawk_sink_sent_total", &[("sink", "scripted")]),
            12
        );
        assert_eq!(
            m.gauge_value("audithawk_sink_buffered_events", &[("sink", "scripted")]),
            0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_deadline_is_kept_while_the_sink_is_down() {
        let sink = Arc::new(Scripted::new(
            (0..1000)
                .map(|_| SendOutcome::Retry {
                    reason: "down".into(),
                    after: None,
                })
                .collect(),
            Duration::ZERO,
        ));
        let d = SinkDriver::start(
            sink as Arc<dyn Sink>,
            DriverOptions::default(),
            Arc::new(Metrics::new()),
        )
        .unwrap();
        d.submit(alert("a")).await.unwrap();
        let start = Instant::now();
        assert!(!d.shutdown(Duration::from_secs(5)).await);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn drop_oldest_never_blocks_and_counts_losses() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Scripted::new(
            (0..100_000)
                .map(|_| SendOutcome::Retry {
                    reason: "down".into(),
                    after: Some(Duration::from_secs(3600)),
                })
                .collect(),
            Duration::ZERO,
        ));
        let m = Arc::new(Metrics::new());
        let opts = DriverOptions {
            disk: Some(DiskBufferConfig {
                dir: dir.path().to_path_buf(),
                max_bytes: 256 * 1024,
                segment_bytes: 32 * 1024,
                when_full: super::super::buffer::WhenFull::DropOldest,
                fsync: super::super::buffer::Fsync::Never,
            }),
            ..DriverOptions::default()
        };
        let d = SinkDriver::start(sink as Arc<dyn Sink>, opts, m.clone()).unwrap();
        for i in 0..2000 {
            d.submit(alert(&i.to_string())).await.unwrap();
        }
        let dropped = m.value("audithawk_sink_dropped_total", &[("sink", "scripted")]);
        assert!(dropped > 0, "2000 alerts do not fit in 256 KiB");
        assert!(
            m.gauge_value("audithawk_sink_buffered_bytes", &[("sink", "scripted")]) <= 256 * 1024
        );
        assert!(!d.shutdown(Duration::from_millis(10)).await);
    }
}
