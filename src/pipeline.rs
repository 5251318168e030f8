//! Bounded queues and worker tasks: ingest → engine → sinks, and graceful shutdown.
//!
//! Sources hand [`Batch`]es to a [`PipelineHandle`]. The queue between them is bounded
//! (`queue_capacity` batches): when it is full, [`PipelineHandle::try_submit`] fails at once,
//! which the webhook turns into `429 Retry-After` (client-go honours it and re-sends), and
//! the tailer simply waits. Nothing accepted into the queue is dropped: shutdown closes the
//! queue, lets the workers drain it, then flushes the sinks within a deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

use crate::engine::{Disposition, Engine};
use crate::model::AuditEvent;
use crate::sinks::Router;
use crate::telemetry::Metrics;

/// Which ingest path a batch came from (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The webhook backend.
    Webhook,
    /// A tailed log file.
    Tail,
    /// An offline scan or the demo replay.
    Scan,
}

impl Source {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Tail => "tail",
            Source::Scan => "scan",
        }
    }
}

/// Events that travel together through the queue.
#[derive(Debug)]
pub struct Batch {
    /// Where they came from.
    pub source: Source,
    /// The events (cluster already attached).
    pub events: Vec<AuditEvent<'static>>,
    /// Signalled after every event was evaluated and its alerts queued to the sinks (the
    /// tailer commits its checkpoint only then).
    pub done: Option<oneshot::Sender<()>>,
}

/// Why a batch was not queued.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue is full; try later.
    Full(Batch),
    /// The pipeline is shutting down.
    Closed(Batch),
}

/// The sending side of the pipeline; cheap to clone.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    tx: mpsc::Sender<Batch>,
    metrics: Arc<Metrics>,
}

impl PipelineHandle {
    /// Queues `batch` if there is room, without waiting.
    pub fn try_submit(&self, batch: Batch) -> Result<(), SubmitError> {
        self.tx.try_send(batch).map_err(|e| match e {
            mpsc::error::TrySendError::Full(b) => SubmitError::Full(b),
            mpsc::error::TrySendError::Closed(b) => SubmitError::Closed(b),
        })?;
        self.metrics.queue_depth.add(1);
        Ok(())
    }

    /// Queues `batch`, waiting for room.
    pub async fn submit(&self, batch: Batch) -> Result<(), SubmitError> {
        self.tx
            .send(batch)
            .await
            .map_err(|e| SubmitError::Closed(e.0))?;
        self.metrics.queue_depth.add(1);
        Ok(())
    }

    /// A handle with no workers behind it: the caller receives the batches. For tests of
    /// sources (they assert exactly what was accepted) and for embedding.
    pub fn detached(
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> (PipelineHandle, mpsc::Receiver<Batch>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (PipelineHandle { tx, metrics }, rx)
    }

    /// Whether the queue has room for one more batch.
    pub fn has_room(&self) -> bool {
        self.tx.capacity() > 0
    }

    /// The shared metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

/// The running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    workers: Vec<JoinHandle<()>>,
    router: Arc<Router>,
    engine: Arc<Engine>,
    /// Wall-clock work of the correlation engine (idle flush, sweep, snapshots).
    ticker: Option<(JoinHandle<()>, oneshot::Sender<()>)>,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// Starts `workers` evaluation tasks over a queue of `queue_capacity` batches.
    pub fn start(
        engine: Arc<Engine>,
        router: Router,
        workers: usize,
        queue_capacity: usize,
        metrics: Arc<Metrics>,
    ) -> (Pipeline, PipelineHandle) {
        let (tx, rx) = mpsc::channel::<Batch>(queue_capacity.max(1));
        // One receiver shared by the workers: whichever is idle takes the next batch.
        let rx = Arc::new(Mutex::new(rx));
        let router = Arc::new(router);
        let workers = (0..workers.max(1))
            .map(|_| {
                let rx = rx.clone();
                let engine: Arc<Engine> = engine.clone();
                let router = router.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    loop {
                        let next = rx.lock().await.recv().await;
                        let Some(batch) = next else { break };
                        metrics.queue_depth.add(-1);
                        process_batch(&engine, &router, &metrics, batch).await;
                    }
                })
            })
            .collect();
        let ticker = engine.correlator().cloned().map(|c| {
            let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
            let router = router.clone();
            let metrics = metrics.clone();
            let task = tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = every.tick() => {}
                        _ = &mut stop_rx => break,
                    }
                    let mut alerts = Vec::new();
                    if let Err(e) = c.tick(std::time::Instant::now(), &mut alerts) {
                        tracing::warn!(error = %e, "Correlation state tick failed.");
                    }
                    for a in alerts {
                        metrics.alert(&a.rule.id, a.rule.level);
                        router.dispatch(Arc::new(a)).await;
                    }
                }
            });
            (task, stop_tx)
        });
        (
            Pipeline {
                workers,
                router,
                engine,
                ticker,
                metrics: metrics.clone(),
            },
            PipelineHandle { tx, metrics },
        )
    }

    /// Waits for the workers to drain the queue (every handle must be dropped first), then
    /// flushes the sinks within `deadline`. Returns false if the deadline passed.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        for w in self.workers {
            let _ = w.await;
        }
        if let Some((task, stop)) = self.ticker {
            let _ = stop.send(());
            let _ = task.await;
        }
        // Held correlation records are saved, not flushed: after a restart they are applied
        // in order with the events that follow.
        if let Some(c) = self.engine.correlator() {
            if let Err(e) = c.save() {
                tracing::error!(error = %e, "Saving correlation state failed; windows restart empty.");
                self.metrics
                    .count("audithawk_state_save_errors_total", &[], 1);
            }
        }
        match Arc::try_unwrap(self.router) {
            Ok(router) => router.shutdown(deadline).await,
            Err(_) => false,
        }
    }
}

/// Evaluates one batch and dispatches its alerts.
pub async fn process_batch(engine: &Engine, router: &Router, metrics: &Metrics, batch: Batch) {
    let now = chrono::Utc::now();
    let mut alerts = Vec::new();
    let mut evaluated = 0u64;
    for ev in &batch.events {
        if engine.process(ev, now, &mut alerts) == Disposition::Evaluated {
            evaluated += 1;
        }
    }
    metrics.evaluated.add(evaluated);
    for a in alerts {
        router.dispatch(Arc::new(a)).await;
    }
    if let Some(done) = batch.done {
        let _ = done.send(());
    }
}
