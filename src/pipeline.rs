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

/// The engine the workers evaluate with, replaceable while running (hot reload).
///
/// Workers hold the read side only while evaluating a batch (synchronously, never across
/// an await); [`EngineSlot::swap_with`] takes the write side, so the replacement is built
/// at a moment when no evaluation is in flight on the old engine: correlation state taken
/// from it then is complete, and no event is evaluated by both or by neither.
#[derive(Debug)]
pub struct EngineSlot(parking_lot::RwLock<Arc<Engine>>);

impl EngineSlot {
    /// A slot holding `engine`.
    pub fn new(engine: Arc<Engine>) -> EngineSlot {
        EngineSlot(parking_lot::RwLock::new(engine))
    }

    /// The current engine.
    pub fn current(&self) -> Arc<Engine> {
        self.0.read().clone()
    }

    /// Runs `f` on the current engine; a swap waits until `f` returns.
    pub fn with<R>(&self, f: impl FnOnce(&Engine) -> R) -> R {
        let g = self.0.read();
        f(&g)
    }

    /// Replaces the engine with what `build` makes from the old one, while no evaluation
    /// is in flight (blocks the calling thread: call it from `spawn_blocking`). On error
    /// the old engine stays. Returns the old engine.
    pub fn swap_with<E>(
        &self,
        build: impl FnOnce(&Arc<Engine>) -> Result<Engine, E>,
    ) -> Result<Arc<Engine>, E> {
        let mut g = self.0.write();
        let new = Arc::new(build(&g)?);
        Ok(std::mem::replace(&mut *g, new))
    }
}

/// The sinks, one [`Router`] per configured sink, replaceable while running.
///
/// Dispatch holds the read side across its awaits (a full sink queue is back-pressure the
/// batch must wait for anyway); [`RouterSlot::replace`] takes the write side, so every
/// alert dispatched before the swap is in an old driver's queue and every alert after it
/// goes to the new set: none is lost or sent twice.
#[derive(Debug, Default)]
pub struct RouterSlot(tokio::sync::RwLock<Vec<Router>>);

impl RouterSlot {
    /// A slot over `routers`.
    pub fn new(routers: Vec<Router>) -> RouterSlot {
        RouterSlot(tokio::sync::RwLock::new(routers))
    }

    /// Sends `alert` to every router (each applies its sinks' routes).
    pub async fn dispatch(&self, alert: crate::model::SharedAlert) {
        let g = self.0.read().await;
        for r in g.iter() {
            r.dispatch(alert.clone()).await;
        }
    }

    /// Sends a batch's alerts, holding the set for the whole batch (alerts of one batch go
    /// to one set, in order).
    pub async fn dispatch_all(&self, alerts: Vec<crate::model::Alert>) {
        if alerts.is_empty() {
            return;
        }
        let g = self.0.read().await;
        for a in alerts {
            let a = Arc::new(a);
            for r in g.iter() {
                r.dispatch(a.clone()).await;
            }
        }
    }

    /// Replaces the set: `f` gets the current routers and returns (new set, retired).
    /// The retired routers are flushed and stopped (within `deadline` each) before
    /// dispatch resumes, so a sink re-created with the same destination (a file path)
    /// never has two writers and keeps its order. Returns false if a flush timed out.
    pub async fn replace(
        &self,
        f: impl FnOnce(Vec<Router>) -> (Vec<Router>, Vec<Router>),
        deadline: Duration,
    ) -> bool {
        let mut g = self.0.write().await;
        let (new, retired) = f(std::mem::take(&mut *g));
        *g = new;
        let mut ok = true;
        for r in retired {
            ok &= r.shutdown(deadline).await;
        }
        ok
    }

    async fn shutdown(&self, deadline: Duration) -> bool {
        let routers = std::mem::take(&mut *self.0.write().await);
        let mut ok = true;
        for r in routers {
            ok &= r.shutdown(deadline).await;
        }
        ok
    }
}

/// The running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    workers: Vec<JoinHandle<()>>,
    router: Arc<RouterSlot>,
    engine: Arc<EngineSlot>,
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
        Pipeline::start_with(engine, vec![router], workers, queue_capacity, metrics)
    }

    /// Like [`Pipeline::start`] with one router per sink, so that a reload can keep the
    /// sinks whose settings did not change.
    pub fn start_with(
        engine: Arc<Engine>,
        routers: Vec<Router>,
        workers: usize,
        queue_capacity: usize,
        metrics: Arc<Metrics>,
    ) -> (Pipeline, PipelineHandle) {
        let (tx, rx) = mpsc::channel::<Batch>(queue_capacity.max(1));
        // One receiver shared by the workers: whichever is idle takes the next batch.
        let rx = Arc::new(Mutex::new(rx));
        let router = Arc::new(RouterSlot::new(routers));
        let engine = Arc::new(EngineSlot::new(engine));
        let workers = (0..workers.max(1))
            .map(|_| {
                let rx = rx.clone();
                let engine = engine.clone();
                let router = router.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    loop {
                        let next = rx.lock().await.recv().await;
                        let Some(batch) = next else { break };
                        metrics.queue_depth.add(-1);
                        let alerts = engine.with(|e| evaluate(e, &metrics, &batch.events));
                        router.dispatch_all(alerts).await;
                        if let Some(done) = batch.done {
                            let _ = done.send(());
                        }
                    }
                })
            })
            .collect();
        // Always running (one wake-up a second): a reload may add a correlator. It ticks
        // whichever correlator is current, under the engine's read side, so a tick never
        // changes state that a reload has already carried over.
        let ticker = {
            let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
            let router = router.clone();
            let engine = engine.clone();
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
                    engine.with(|e| {
                        if let Some(c) = e.correlator() {
                            if let Err(e) = c.tick(std::time::Instant::now(), &mut alerts) {
                                tracing::warn!(error = %e, "Correlation state tick failed.");
                            }
                        }
                    });
                    for a in &alerts {
                        metrics.alert(&a.rule.id, a.rule.level);
                    }
                    router.dispatch_all(alerts).await;
                }
            });
            Some((task, stop_tx))
        };
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

    /// The engine slot (for hot reload).
    pub fn engine_slot(&self) -> &Arc<EngineSlot> {
        &self.engine
    }

    /// The sink slot (for hot reload).
    pub fn router_slot(&self) -> &Arc<RouterSlot> {
        &self.router
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
        if let Some(c) = self.engine.current().correlator() {
            if let Err(e) = c.save() {
                tracing::error!(error = %e, "Saving correlation state failed; windows restart empty.");
                self.metrics
                    .count("audithawk_state_save_errors_total", &[], 1);
            }
        }
        self.router.shutdown(deadline).await
    }
}

/// Evaluates events, returning their alerts and counting the evaluated ones.
pub fn evaluate(
    engine: &Engine,
    metrics: &Metrics,
    events: &[AuditEvent<'static>],
) -> Vec<crate::model::Alert> {
    let now = chrono::Utc::now();
    let mut alerts = Vec::new();
    let mut evaluated = 0u64;
    for ev in events {
        if engine.process(ev, now, &mut alerts) == Disposition::Evaluated {
            evaluated += 1;
        }
    }
    metrics.evaluated.add(evaluated);
    alerts
}

/// Evaluates one batch and dispatches its alerts.
pub async fn process_batch(engine: &Engine, router: &Router, metrics: &Metrics, batch: Batch) {
    for a in evaluate(engine, metrics, &batch.events) {
        router.dispatch(Arc::new(a)).await;
    }
    if let Some(done) = batch.done {
        let _ = done.send(());
    }
}
