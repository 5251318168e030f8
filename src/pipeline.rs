//! Bounded queues and worker tasks: ingest → engine → sinks, and graceful shutdown.
//!
//! Sources hand [`Batch`]es to a [`PipelineHandle`]. The queue between them is bounded
//! (`queue_capacity` batches): when it is full, [`PipelineHandle::try_submit`] fails at once,
//! which the webhook turns into `429 Retry-After` (client-go honours it and re-sends), and
//! the tailer simply waits. Nothing accepted into the queue is dropped: shutdown closes the
//! queue, lets the workers drain it, then flushes the sinks within a deadline.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
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

/// Where a handle sends batches.
#[derive(Debug, Clone)]
enum Queues {
    /// The workers' queues, one per worker.
    Workers(Arc<[mpsc::Sender<Traced>]>),
    /// One queue whose receiver the caller holds ([`PipelineHandle::detached`]).
    Detached(mpsc::Sender<Batch>),
    /// No engine here: the ingest tier publishes to Kafka ([`PipelineHandle::publishing`]).
    Publish(Arc<crate::kafka::publish::EventPublisher>),
}

/// A batch and the span it was submitted under (the webhook request's), so that the
/// engine's span is its child in traces.
type Traced = (Batch, tracing::Span);

/// The worker that owns the batch's cluster: a batch goes to the worker its cluster hashes
/// to, so one cluster's events are evaluated in order.
fn queue_index(workers: usize, batch: &Batch) -> usize {
    let cluster = batch
        .events
        .first()
        .and_then(|e| e.cluster.as_deref())
        .unwrap_or("");
    (xxhash_rust::xxh3::xxh3_64(cluster.as_bytes()) % workers as u64) as usize
}

/// Why a batch was not queued.
#[derive(Debug)]
pub enum SubmitError {
    /// The queue is full; try later.
    Full(Batch),
    /// The pipeline is shutting down.
    Closed(Batch),
    /// The Kafka brokers are unreachable or did not acknowledge; try later.
    Unavailable(Batch, String),
}

/// The sending side of the pipeline; cheap to clone.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    /// One queue per worker. A batch goes to the worker its cluster hashes to, so the events
    /// of one cluster are evaluated in arrival order by one worker: correlation windows see
    /// them in order (within the allowed lateness) however many workers run, and results
    /// are the same as with one thread. Clusters spread over the workers.
    tx: Queues,
    metrics: Arc<Metrics>,
}

impl PipelineHandle {
    /// Queues `batch` if there is room, without waiting.
    pub fn try_submit(&self, batch: Batch) -> Result<(), SubmitError> {
        use mpsc::error::TrySendError;
        match &self.tx {
            Queues::Workers(qs) => qs[queue_index(qs.len(), &batch)]
                .try_send((batch, tracing::Span::current()))
                .map_err(|e| match e {
                    TrySendError::Full((b, _)) => SubmitError::Full(b),
                    TrySendError::Closed((b, _)) => SubmitError::Closed(b),
                })?,
            Queues::Detached(q) => q.try_send(batch).map_err(|e| match e {
                TrySendError::Full(b) => SubmitError::Full(b),
                TrySendError::Closed(b) => SubmitError::Closed(b),
            })?,
            // Publishing waits for the brokers: only [`PipelineHandle::accept`] and
            // [`PipelineHandle::submit`] can do that.
            Queues::Publish(_) => return Err(SubmitError::Full(batch)),
        }
        self.metrics.queue_depth.add(1);
        Ok(())
    }

    /// What the webhook calls: queues `batch` without waiting when an engine is behind
    /// the handle, or publishes it to Kafka and waits for the brokers' acknowledgement.
    /// Returns the items the brokers refused for good (index, reason).
    pub async fn accept(&self, batch: Batch) -> Result<Vec<(usize, String)>, SubmitError> {
        match &self.tx {
            Queues::Publish(p) => match p.publish(&batch.events).await {
                Ok(published) => {
                    if let Some(done) = batch.done {
                        let _ = done.send(());
                    }
                    Ok(published.refused)
                }
                Err(e) => Err(SubmitError::Unavailable(batch, e.to_string())),
            },
            _ => self.try_submit(batch).map(|()| Vec::new()),
        }
    }

    /// A handle whose batches are published to Kafka (`--forward-to kafka`): nothing is
    /// evaluated in this process.
    pub fn publishing(
        publisher: Arc<crate::kafka::publish::EventPublisher>,
        metrics: Arc<Metrics>,
    ) -> PipelineHandle {
        PipelineHandle {
            tx: Queues::Publish(publisher),
            metrics,
        }
    }

    /// Queues `batch`, waiting for room.
    pub async fn submit(&self, batch: Batch) -> Result<(), SubmitError> {
        match &self.tx {
            Queues::Workers(qs) => qs[queue_index(qs.len(), &batch)]
                .send((batch, tracing::Span::current()))
                .await
                .map_err(|e| SubmitError::Closed(e.0 .0))?,
            Queues::Detached(q) => q.send(batch).await.map_err(|e| SubmitError::Closed(e.0))?,
            Queues::Publish(p) => {
                // The tailer has nowhere else to put lines: it waits (holding its
                // checkpoint) until the brokers take the batch.
                let mut backoff = Duration::from_millis(500);
                loop {
                    match p.publish(&batch.events).await {
                        Ok(published) => {
                            for (i, why) in &published.refused {
                                tracing::error!(item = i, reason = %why, "Kafka refused a tailed event for good; it is skipped.");
                            }
                            if let Some(done) = batch.done {
                                let _ = done.send(());
                            }
                            return Ok(());
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, retry_in = ?backoff, "Publishing tailed events failed; retrying.");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            }
        }
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
        (
            PipelineHandle {
                tx: Queues::Detached(tx),
                metrics,
            },
            rx,
        )
    }

    /// Whether every queue has room for one more batch.
    pub fn has_room(&self) -> bool {
        match &self.tx {
            Queues::Workers(qs) => qs.iter().all(|t| t.capacity() > 0),
            Queues::Detached(q) => q.capacity() > 0,
            Queues::Publish(p) => !p.unavailable(),
        }
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

    /// Stops dispatch until the returned [`RouterSwap`] is used or dropped. A reload takes
    /// this *before* it swaps the engine: an alert of a new rule can then only be
    /// dispatched after the new sink set is in place, never into a sink the new config
    /// removed. (Alerts the old engine made before the swap may still go to the new set,
    /// which is what the new config asks for.) Dropping the guard keeps the old set.
    pub async fn begin_swap(&self) -> RouterSwap<'_> {
        RouterSwap(self.0.write().await)
    }

    /// Replaces the set at once; see [`RouterSwap::replace`].
    pub async fn replace(
        &self,
        f: impl FnOnce(Vec<Router>) -> (Vec<Router>, Vec<Router>),
        deadline: Duration,
    ) -> bool {
        self.begin_swap().await.replace(f, deadline).await
    }

    /// Flushes and stops every router within `deadline` each; false if one timed out.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let routers = std::mem::take(&mut *self.0.write().await);
        let mut ok = true;
        for r in routers {
            ok &= r.shutdown(deadline).await;
        }
        ok
    }
}

/// Dispatch held off while a reload swaps the engine and the sinks; see
/// [`RouterSlot::begin_swap`].
#[derive(Debug)]
pub struct RouterSwap<'a>(tokio::sync::RwLockWriteGuard<'a, Vec<Router>>);

impl RouterSwap<'_> {
    /// Replaces the set: `f` gets the current routers and returns (new set, retired).
    /// The retired routers are flushed and stopped (within `deadline` each) before
    /// dispatch resumes, so a sink re-created with the same destination (a file path)
    /// never has two writers and keeps its order. Returns false if a flush timed out.
    pub async fn replace(
        mut self,
        f: impl FnOnce(Vec<Router>) -> (Vec<Router>, Vec<Router>),
        deadline: Duration,
    ) -> bool {
        let (new, retired) = f(std::mem::take(&mut *self.0));
        *self.0 = new;
        let mut ok = true;
        for r in retired {
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
    /// Raw audit-event forwarding, when enabled.
    forwarder: Option<Arc<crate::sinks::raw::RawForwarder>>,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// Starts `workers` evaluation tasks over a queue of `queue_capacity` batches, with one
    /// router per sink (so that a reload can keep the sinks whose settings did not change),
    /// offering every accepted, non-duplicate event to the raw forwarder when there is one
    /// (it filters and redacts).
    pub fn start_with(
        engine: Arc<Engine>,
        routers: Vec<Router>,
        forwarder: Option<crate::sinks::raw::RawForwarder>,
        workers: usize,
        queue_capacity: usize,
        metrics: Arc<Metrics>,
    ) -> (Pipeline, PipelineHandle) {
        let workers = workers.max(1);
        // The capacity is shared out so that the total queued stays `queue_capacity`.
        let per_worker = queue_capacity.div_ceil(workers).max(1);
        let router = Arc::new(RouterSlot::new(routers));
        let engine = Arc::new(EngineSlot::new(engine));
        let forwarder = forwarder.map(Arc::new);
        let mut senders = Vec::with_capacity(workers);
        let mut tasks = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, mut rx) = mpsc::channel::<Traced>(per_worker);
            senders.push(tx);
            let engine = engine.clone();
            let router = router.clone();
            let metrics = metrics.clone();
            let forwarder = forwarder.clone();
            tasks.push(tokio::spawn(async move {
                while let Some((batch, parent)) = rx.recv().await {
                    metrics.queue_depth.add(-1);
                    let span = tracing::info_span!(
                        parent: &parent,
                        crate::telemetry::otel::SPAN_ENGINE_BATCH,
                        events = batch.events.len()
                    );
                    let work = async {
                        // Evaluation is synchronous under the engine slot's read side (a
                        // reload swaps between batches); forwarding and dispatch await after.
                        let mut forward = Vec::new();
                        let alerts =
                            engine.with(|e| evaluate(e, &metrics, &batch.events, &mut forward));
                        if let Some(f) = &forwarder {
                            for i in forward {
                                f.offer(&batch.events[i]).await;
                            }
                        }
                        router.dispatch_all(alerts).await;
                        if let Some(done) = batch.done {
                            let _ = done.send(());
                        }
                    };
                    tracing::Instrument::instrument(work, span).await;
                }
            }));
        }
        let workers = tasks;
        let tx = Queues::Workers(Arc::from(senders));
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
                forwarder,
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
        if let Some(c) = self.engine.current().correlator().cloned() {
            if let Err(e) = c.save() {
                tracing::error!(error = %e, "Saving correlation state failed; windows restart empty.");
                self.metrics
                    .count("audithawk_state_save_errors_total", &[], 1);
            }
        }
        let mut ok = self.router.shutdown(deadline).await;
        if let Some(f) = self.forwarder {
            ok &= match Arc::try_unwrap(f) {
                Ok(f) => f.shutdown(deadline).await,
                Err(_) => false,
            };
        }
        ok
    }
}

/// Evaluates events, returning their alerts and counting the evaluated ones; pushes into
/// `forward` the index of every event that was not a duplicate (for raw forwarding).
pub fn evaluate(
    engine: &Engine,
    metrics: &Metrics,
    events: &[AuditEvent<'static>],
    forward: &mut Vec<usize>,
) -> Vec<crate::model::Alert> {
    let now = chrono::Utc::now();
    let mut alerts = Vec::new();
    let mut evaluated = 0u64;
    for (i, ev) in events.iter().enumerate() {
        let disposition = engine.process(ev, now, &mut alerts);
        if disposition == Disposition::Evaluated {
            evaluated += 1;
        }
        if disposition != Disposition::Duplicate {
            forward.push(i);
        }
    }
    metrics.evaluated.add(evaluated);
    alerts
}
