//! The detector tier (`audithawk detect --from kafka`): one member of a consumer group.
//!
//! Each owned partition of the events topic has its own engine (rules shared; de-duplication
//! set and correlation state per partition), so that state can move with the partition.
//! Events of a partition are evaluated in offset order by one task, so results equal a
//! single instance reading that partition.
//!
//! # Delivery
//! An event's alerts are handed to the sink drivers (their memory queue or disk buffer)
//! before its offset counts as processed, and only processed offsets are committed (every
//! `commit_interval`, and synchronously when a partition is revoked). A crash therefore
//! re-reads, and may re-emit, the events after the last commit; alerts carry stable ids
//! (UUIDv5 of rule and event) so that SIEMs de-duplicate. The commit is as durable as the
//! sink's buffer: use `delivery.buffer.type: disk` for sinks that must survive a crash of
//! the detector (a warning says so at start).
//!
//! # State that follows partitions
//! Every `snapshot_interval` (and on a graceful revoke) each partition's correlation state
//! is written to the compacted state topic with the offset it corresponds to
//! ([`super::snapshots`]). On assignment the new owner restores the newest snapshot and
//! starts reading at its offset S. Events between S and the committed offset C were
//! already alerted on by the previous owner, so they are replayed to rebuild the windows
//! with their alerts withheld; alerts resume at C. Without a snapshot the partition starts
//! at C with empty windows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use super::snapshots::{Manifest, SnapshotStore};
use super::{KafkaConfig, KafkaSetupError, CLUSTER_HEADER};
use crate::engine::Engine;
use crate::model::AuditEvent;
use crate::pipeline::RouterSlot;
use crate::telemetry::Metrics;

/// Most events evaluated between two hand-overs to the sinks.
const MAX_BATCH: usize = 500;

/// How long an assignment may spend reading snapshots and committed offsets.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(30);

/// One owned partition.
struct Part {
    engine: Engine,
    /// Next offset to evaluate.
    next: i64,
    /// Offsets below this were alerted on by a previous owner: replayed silently.
    replay_until: i64,
    /// Last committed offset (to skip empty commits).
    committed: i64,
    /// The newest snapshot written or restored (its chunks are tombstoned when replaced).
    manifest: Option<Manifest>,
    /// Events evaluated since the last snapshot.
    dirty: bool,
}

/// State shared by the loop and the rebalance callback (which runs inside `recv`, on the
/// loop's task, between messages).
struct Shared {
    cfg: KafkaConfig,
    template: Arc<Engine>,
    store: SnapshotStore,
    parts: Mutex<HashMap<i32, Part>>,
    /// Set by [`DetectorControl::crash`]: the next revoke hands nothing over, as after a
    /// process crash (tests use it to prove recovery from snapshots alone).
    crashed: AtomicBool,
    metrics: Arc<Metrics>,
    /// Partitions currently owned (for tests and readiness).
    owned: tokio::sync::watch::Sender<Vec<i32>>,
    /// Set at the first assignment: the member has joined the group (readiness).
    joined: AtomicBool,
}

/// The consumer's context: assignment and revocation.
struct DetectContext(Arc<Shared>);

impl ClientContext for DetectContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "Kafka consumer error.");
    }
}

impl ConsumerContext for DetectContext {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.0.on_assign(base, tpl);
                self.0.joined.store(true, Ordering::Release);
                if let Err(e) = base.assign(tpl) {
                    tracing::error!(error = %e, "Assigning partitions failed.");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.0.on_revoke(base, tpl);
                if let Err(e) = base.unassign() {
                    tracing::error!(error = %e, "Unassigning partitions failed.");
                }
            }
            other => {
                tracing::error!(error = ?other, "Rebalance failed; releasing partitions.");
                self.0.on_revoke(base, tpl);
                let _ = base.unassign();
            }
        }
        let mut owned: Vec<i32> = self.0.parts.lock().keys().copied().collect();
        owned.sort_unstable();
        self.0.owned.send_replace(owned);
    }
}

fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect()
}

impl Shared {
    /// Enqueues partition `p`'s state as of `part.next`.
    fn enqueue_snapshot(
        &self,
        p: i32,
        part: &Part,
    ) -> Result<super::snapshots::PendingWrite, super::snapshots::SnapshotError> {
        let state = match part.engine.correlator() {
            Some(c) => c.snapshot_bytes(),
            None => b"{}".to_vec(),
        };
        self.store.enqueue(p, part.next, &state)
    }

    fn on_assign(&self, base: &BaseConsumer<DetectContext>, tpl: &mut TopicPartitionList) {
        let topic = self.cfg.events_topic.clone();
        let parts = partitions_of(tpl, &topic);
        let committed = base
            .committed_offsets(tpl.clone(), Timeout::After(RESTORE_TIMEOUT))
            .map_err(|e| tracing::error!(error = %e, "Reading committed offsets failed."))
            .ok();
        let committed_of = |p: i32| -> Option<i64> {
            match committed.as_ref()?.find_partition(&topic, p)?.offset() {
                Offset::Offset(n) => Some(n),
                _ => None,
            }
        };
        let mut snaps = if self.template.correlator().is_some() {
            self.store
                .load(&parts, RESTORE_TIMEOUT)
                .map_err(|e| {
                    self.metrics
                        .count("audithawk_kafka_snapshot_errors_total", &[("op", "load")], 1);
                    tracing::error!(error = %e, "Reading the state topic failed; partitions start with empty windows.");
                })
                .unwrap_or_default()
        } else {
            HashMap::new()
        };
        // The configured de-duplication capacity is shared out over the partitions taken
        // together, so that memory stays what one process would use while each partition
        // still remembers the same span of time (a re-sent batch lands in one partition).
        let cap = self.template.dedup_capacity();
        let per_part = if cap == 0 {
            0
        } else {
            (cap / parts.len().max(1)).max(1000)
        };
        let mut map = self.parts.lock();
        for p in parts {
            let engine = self.template.partitioned(per_part);
            let c = committed_of(p);
            let mut manifest = None;
            let (start, replay_until) = match snaps.remove(&p) {
                Some((m, state)) => match restore(&engine, &state) {
                    Ok(()) => {
                        self.metrics.count(
                            "audithawk_kafka_partition_restores_total",
                            &[("from", "snapshot")],
                            1,
                        );
                        let s = m.offset;
                        manifest = Some(m);
                        (Some(s), c.unwrap_or(s).max(s))
                    }
                    Err(e) => {
                        self.metrics.count(
                            "audithawk_kafka_snapshot_errors_total",
                            &[("op", "restore")],
                            1,
                        );
                        tracing::error!(partition = p, error = %e, "Restoring a snapshot failed; the partition starts with empty windows.");
                        (c, c.unwrap_or(0))
                    }
                },
                None => {
                    self.metrics.count(
                        "audithawk_kafka_partition_restores_total",
                        &[("from", "offset")],
                        1,
                    );
                    (c, c.unwrap_or(0))
                }
            };
            if let Some(s) = start {
                let _ = tpl.set_partition_offset(&topic, p, Offset::Offset(s));
            }
            tracing::info!(partition = p, start = ?start, replay_until, "Partition assigned.");
            map.insert(
                p,
                Part {
                    engine,
                    next: start.unwrap_or(0),
                    replay_until,
                    committed: c.unwrap_or(-1),
                    manifest,
                    dirty: false,
                },
            );
        }
    }

    fn on_revoke(&self, base: &BaseConsumer<DetectContext>, tpl: &TopicPartitionList) {
        let topic = self.cfg.events_topic.clone();
        let revoked = partitions_of(tpl, &topic);
        let mut map = self.parts.lock();
        if self.crashed.load(Ordering::Acquire) {
            map.clear();
            return;
        }
        // Hand over: commit what was processed and snapshot the windows, so the next owner
        // resumes exactly here.
        let mut commit = TopicPartitionList::new();
        let mut writes = Vec::new();
        for p in revoked {
            let Some(part) = map.remove(&p) else { continue };
            if part.next > part.committed {
                let _ = commit.add_partition_offset(&topic, p, Offset::Offset(part.next));
            }
            if part.dirty {
                match self.enqueue_snapshot(p, &part) {
                    Ok(w) => writes.push((p, w, part.manifest)),
                    Err(e) => {
                        tracing::error!(partition = p, error = %e, "Snapshot on revoke failed.")
                    }
                }
            }
        }
        if commit.count() > 0 {
            if let Err(e) = base.commit(&commit, CommitMode::Sync) {
                tracing::warn!(error = %e, "Commit on revoke failed; the next owner re-reads from the previous commit.");
            }
        }
        if !writes.is_empty() {
            let flushed = self.store.flush(Duration::from_secs(10));
            let mut retired = false;
            for (p, w, previous) in writes {
                let ok = flushed.is_ok() && w.acked_after_flush().is_ok();
                if let (true, Some(old)) = (ok, previous) {
                    self.store.retire(p, &old);
                    retired = true;
                }
                self.metrics.count(
                    "audithawk_kafka_snapshots_total",
                    &[("result", if ok { "ok" } else { "error" })],
                    1,
                );
            }
            if retired {
                // Best effort, briefly: the clean-up must not hold up the rebalance.
                let _ = self.store.flush(Duration::from_secs(1));
            }
        }
    }
}

/// Restores snapshot JSON into `engine`'s correlator.
fn restore(engine: &Engine, state: &[u8]) -> Result<(), String> {
    let Some(c) = engine.correlator() else {
        return Ok(());
    };
    c.restore_bytes(state, std::path::Path::new("(state topic)"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Controls a running detector.
#[derive(Clone)]
pub struct DetectorControl {
    shared: Arc<Shared>,
    probe: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for DetectorControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectorControl").finish_non_exhaustive()
    }
}

impl DetectorControl {
    /// Partitions owned now; changes on every rebalance.
    pub fn owned(&self) -> tokio::sync::watch::Receiver<Vec<i32>> {
        self.shared.owned.subscribe()
    }

    /// The same handle, knowing where the probe server listens.
    pub fn with_probe_addr(mut self, addr: Option<std::net::SocketAddr>) -> DetectorControl {
        self.probe = addr;
        self
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, if they are.
    pub fn probe_addr(&self) -> Option<std::net::SocketAddr> {
        self.probe
    }

    /// Whether the member has received its first assignment (readiness).
    pub fn joined(&self) -> bool {
        self.shared.joined.load(Ordering::Acquire)
    }

    /// Behave as a crashed process from now on: no commit and no snapshot on the way out.
    /// Abort the task running [`Detector::run`] after this.
    pub fn crash(&self) {
        self.shared.crashed.store(true, Ordering::Release);
    }

    /// Owned partitions with events evaluated since their last snapshot.
    pub fn unsnapshotted(&self) -> usize {
        self.shared
            .parts
            .lock()
            .values()
            .filter(|s| s.dirty)
            .count()
    }

    /// The next offset to evaluate of each owned partition.
    pub fn positions(&self) -> HashMap<i32, i64> {
        self.shared
            .parts
            .lock()
            .iter()
            .map(|(p, s)| (*p, s.next))
            .collect()
    }
}

/// A consumer-group member evaluating the partitions it owns.
pub struct Detector {
    consumer: StreamConsumer<DetectContext>,
    shared: Arc<Shared>,
    router: Arc<RouterSlot>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("group", &self.shared.cfg.group_id)
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// Joins `cfg.group_id` on `cfg.events_topic`. `template` supplies the rules and an
    /// empty correlator that each partition copies; `router` receives the alerts.
    pub fn start(
        cfg: &KafkaConfig,
        template: Arc<Engine>,
        router: Arc<RouterSlot>,
        metrics: Arc<Metrics>,
    ) -> Result<Detector, KafkaSetupError> {
        if let Some(path) = template.correlator().and_then(|c| c.snapshot_path()) {
            // Every partition's correlator would write the same file.
            return Err(KafkaSetupError::Engine(format!(
                "it was built with `state.state_dir` ({}); detectors keep state in the state topic, so build it without one",
                path.display()
            )));
        }
        warn_split_correlations(cfg, &template);
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            store: SnapshotStore::new(cfg)?,
            template,
            parts: Mutex::new(HashMap::new()),
            crashed: AtomicBool::new(false),
            metrics,
            owned: tokio::sync::watch::channel(Vec::new()).0,
            joined: AtomicBool::new(false),
        });
        let mut c = cfg.client_config();
        c.set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Eager assignment: a rebalance revokes everything, hands state over, then
            // assigns; simple and correct with per-partition state.
            .set("partition.assignment.strategy", "range,roundrobin");
        if !cfg.properties.contains_key("fetch.wait.max.ms") {
            // librdkafka waits up to 500 ms for a fetch to fill; at low traffic that is
            // the alert latency. 50 ms costs a few more fetch requests per second.
            c.set("fetch.wait.max.ms", "50");
        }
        if !cfg.properties.contains_key("auto.offset.reset") {
            // A new group reads the topic from its start: nothing already published is
            // skipped.
            c.set("auto.offset.reset", "earliest");
        }
        let consumer: StreamConsumer<DetectContext> =
            c.create_with_context(DetectContext(shared.clone()))?;
        consumer.subscribe(&[&cfg.events_topic])?;
        Ok(Detector {
            consumer,
            shared,
            router,
        })
    }

    /// A control handle (owned partitions, crash simulation).
    pub fn control(&self) -> DetectorControl {
        DetectorControl {
            shared: self.shared.clone(),
            probe: None,
        }
    }

    /// Evaluates until `shutdown` resolves, then commits, snapshots and leaves the group.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Detector {
            consumer,
            shared,
            router,
        } = self;
        let cfg = shared.cfg.clone();
        let mut commit_every = tokio::time::interval(cfg.commit_interval.0);
        let mut snapshot_every = tokio::time::interval(cfg.snapshot_interval.0);
        let mut tick_every = tokio::time::interval(Duration::from_secs(1));
        for i in [&mut commit_every, &mut snapshot_every, &mut tick_every] {
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                m = consumer.recv() => {
                    // Take what else is already fetched (up to a batch) before handing the
                    // alerts over: one dispatch per batch instead of one per event.
                    let mut alerts = Vec::new();
                    let mut counts = Counts::default();
                    let mut next = Some(m);
                    let mut n = 0;
                    while let Some(m) = next.take() {
                        match m {
                            Ok(m) => evaluate(&shared, &m, &mut alerts, &mut counts),
                            Err(e) => {
                                shared.metrics.count("audithawk_kafka_consume_errors_total", &[], 1);
                                tracing::warn!(error = %e, "Kafka consume error.");
                            }
                        }
                        n += 1;
                        if n < MAX_BATCH {
                            next = futures_util::FutureExt::now_or_never(consumer.recv());
                        }
                    }
                    counts.record(&shared.metrics);
                    router.dispatch_all(alerts).await;
                }
                _ = commit_every.tick() => commit(&consumer, &shared, CommitMode::Async),
                _ = snapshot_every.tick() => snapshot_all(&shared).await,
                _ = tick_every.tick() => {
                    let mut alerts = Vec::new();
                    for part in shared.parts.lock().values() {
                        if let Some(c) = part.engine.correlator() {
                            if let Err(e) = c.tick(std::time::Instant::now(), &mut alerts) {
                                tracing::warn!(error = %e, "Correlation tick failed.");
                            }
                        }
                    }
                    for a in &alerts {
                        shared.metrics.alert(&a.rule.id, a.rule.level);
                    }
                    router.dispatch_all(alerts).await;
                }
            }
        }
        // Graceful: hand every partition over as a revoke would, then leave the group.
        commit(&consumer, &shared, CommitMode::Sync);
        snapshot_all(&shared).await;
        drop(consumer);
    }
}

/// Events of one fetched batch, counted once per batch (labelled counters cost a lookup).
#[derive(Default)]
struct Counts {
    received: u64,
    evaluated: u64,
    replayed: u64,
}

impl Counts {
    fn record(&self, metrics: &Metrics) {
        metrics.received("kafka", self.received);
        metrics.evaluated.add(self.evaluated);
        if self.replayed > 0 {
            metrics.count("audithawk_kafka_replayed_total", &[], self.replayed);
        }
    }
}

/// Evaluates one message of an owned partition, pushing the alerts to deliver.
fn evaluate(
    shared: &Shared,
    m: &rdkafka::message::BorrowedMessage<'_>,
    out: &mut Vec<crate::model::Alert>,
    counts: &mut Counts,
) {
    let p = m.partition();
    let off = m.offset();
    let mut map = shared.parts.lock();
    let Some(part) = map.get_mut(&p) else {
        // A message of a partition this member no longer owns (fetched before a revoke).
        return;
    };
    if off < part.next {
        return;
    }
    part.next = off + 1;
    part.dirty = true;
    let Some(payload) = m.payload() else {
        return;
    };
    let text = match std::str::from_utf8(payload) {
        Ok(t) => t,
        Err(_) => {
            shared.metrics.rejected("kafka", "not_utf8", 1);
            return;
        }
    };
    let mut ev = match AuditEvent::parse(text) {
        Ok(ev) => ev,
        Err(e) => {
            shared.metrics.rejected("kafka", "bad_event", 1);
            tracing::warn!(partition = p, offset = off, error = %e, "Undecodable event in the events topic skipped.");
            return;
        }
    };
    ev.cluster = m
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == CLUSTER_HEADER))
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(std::sync::Arc::from);
    counts.received += 1;
    let first = out.len();
    if part.engine.process(&ev, chrono::Utc::now(), out) == crate::engine::Disposition::Evaluated {
        counts.evaluated += 1;
    }
    if off < part.replay_until {
        // Already alerted on by the previous owner: the event only rebuilds the windows.
        counts.replayed += 1;
        out.truncate(first);
    }
}

/// Commits the next offset of every owned partition that advanced.
fn commit(consumer: &StreamConsumer<DetectContext>, shared: &Shared, mode: CommitMode) {
    let topic = &shared.cfg.events_topic;
    let mut tpl = TopicPartitionList::new();
    let mut map = shared.parts.lock();
    for (p, part) in map.iter_mut() {
        if part.next > part.committed {
            let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(part.next));
            part.committed = part.next;
        }
    }
    drop(map);
    if tpl.count() == 0 {
        return;
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => shared
            .metrics
            .count("audithawk_kafka_commits_total", &[], 1),
        Err(e) => {
            shared
                .metrics
                .count("audithawk_kafka_commit_errors_total", &[], 1);
            tracing::warn!(error = %e, "Offset commit failed; events after the previous commit may be re-read.");
        }
    }
}

/// Snapshots every owned partition that changed since its last snapshot.
async fn snapshot_all(shared: &Shared) {
    if shared.template.correlator().is_none() {
        return;
    }
    let mut writes = Vec::new();
    {
        let mut map = shared.parts.lock();
        for (p, part) in map.iter_mut() {
            if !part.dirty {
                continue;
            }
            match shared.enqueue_snapshot(*p, part) {
                Ok(w) => {
                    part.dirty = false;
                    writes.push((*p, w));
                }
                Err(e) => {
                    shared.metrics.count(
                        "audithawk_kafka_snapshots_total",
                        &[("result", "error")],
                        1,
                    );
                    tracing::error!(partition = p, error = %e, "Snapshot failed.");
                }
            }
        }
    }
    for (p, w) in writes {
        match w.acked().await {
            Ok(m) => {
                let old = shared
                    .parts
                    .lock()
                    .get_mut(&p)
                    .and_then(|part| part.manifest.replace(m));
                if let Some(old) = old {
                    shared.store.retire(p, &old);
                }
                shared
                    .metrics
                    .count("audithawk_kafka_snapshots_total", &[("result", "ok")], 1);
            }
            Err(e) => {
                if let Some(part) = shared.parts.lock().get_mut(&p) {
                    part.dirty = true;
                }
                shared
                    .metrics
                    .count("audithawk_kafka_snapshots_total", &[("result", "error")], 1);
                tracing::error!(partition = p, error = %e, "Snapshot was not acknowledged.");
            }
        }
    }
}

/// Warns about correlations whose groups can span partitions: their `group-by` lacks a
/// field of the partition key, so each detector sees only its partitions' share.
fn warn_split_correlations(cfg: &KafkaConfig, template: &Engine) {
    let key = cfg.partition_key();
    let needed = key.fields();
    for c in template.rules().correlations() {
        let corr = c.doc.get("correlation");
        let fields = corr
            .and_then(|c| c.get("group-by").or_else(|| c.get("fields")))
            .and_then(|v| v.as_sequence())
            .map(|s| s.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>())
            .unwrap_or_default();
        let missing: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|f| !fields.contains(f))
            .collect();
        if !missing.is_empty() {
            let id = c.doc.get("id").and_then(|v| v.as_str()).unwrap_or("?");
            tracing::warn!(
                correlation = id,
                file = %c.file,
                missing = ?missing,
                "This correlation's groups are not keyed by the partition key: with several detectors each sees only its partitions' events for a group."
            );
        }
    }
}
