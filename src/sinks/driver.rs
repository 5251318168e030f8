//! The shared sink driver: queue, batching, retry, routing, shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{SendOutcome, Sink};
use crate::model::{Level, SharedAlert};
use crate::telemetry::Metrics;

/// When a batch is sent.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Send when this many alerts are waiting.
    pub max_events: usize,
    /// Send when the encoded alerts reach this many bytes (estimated from JSON size).
    pub max_bytes: usize,
    /// Send at the latest this long after the first alert of a batch arrived.
    pub timeout: Duration,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_events: 500,
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
    /// Backoff cap.
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

/// A running sink: its queue and its task.
#[derive(Debug)]
pub struct SinkDriver {
    name: String,
    route: Route,
    tx: mpsc::Sender<SharedAlert>,
    task: JoinHandle<()>,
}

impl SinkDriver {
    /// Starts the driver task for `sink` with a queue of `capacity` alerts.
    pub fn spawn(
        sink: Arc<dyn Sink>,
        route: Route,
        batch: BatchPolicy,
        retry: RetryPolicy,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> SinkDriver {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let name = sink.name().to_string();
        let task = tokio::spawn(run(sink, rx, batch, retry, metrics));
        SinkDriver {
            name,
            route,
            tx,
            task,
        }
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues an alert, waiting while the queue is full (back-pressure).
    pub async fn submit(&self, alert: SharedAlert) -> Result<(), SharedAlert> {
        self.tx.send(alert).await.map_err(|e| e.0)
    }

    /// Closes the queue and waits (up to `deadline`) for the driver to send what it holds.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        drop(self.tx);
        tokio::time::timeout(deadline, self.task).await.is_ok()
    }
}

async fn run(
    sink: Arc<dyn Sink>,
    mut rx: mpsc::Receiver<SharedAlert>,
    policy: BatchPolicy,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
) {
    let name = sink.name().to_string();
    let mut batch: Vec<SharedAlert> = Vec::new();
    let mut bytes = 0usize;
    let mut deadline: Option<Instant> = None;
    loop {
        let next = match deadline {
            Some(d) => tokio::select! {
                m = rx.recv() => Some(m),
                _ = tokio::time::sleep_until(d) => None,
            },
            None => Some(rx.recv().await),
        };
        let closed = match next {
            Some(Some(a)) => {
                // Estimate: alerts are ~1 KiB of JSON; exact sizes are the sink's concern.
                bytes += a.message.len() + a.rule.description.len() + 600;
                if batch.is_empty() {
                    deadline = Some(Instant::now() + policy.timeout);
                }
                batch.push(a);
                if batch.len() < policy.max_events && bytes < policy.max_bytes {
                    continue;
                }
                false
            }
            Some(None) => true,
            None => false,
        };
        if !batch.is_empty() {
            deliver(&*sink, &name, std::mem::take(&mut batch), retry, &metrics).await;
        }
        bytes = 0;
        deadline = None;
        if closed {
            break;
        }
    }
    if let Err(e) = sink.flush().await {
        tracing::warn!(sink = %name, error = %e, "Flush at shutdown failed.");
    }
}

/// Sends one batch until it is delivered or rejected for good.
async fn deliver(
    sink: &dyn Sink,
    name: &str,
    mut batch: Vec<SharedAlert>,
    retry: RetryPolicy,
    metrics: &Metrics,
) {
    let mut attempt = 0u32;
    while !batch.is_empty() {
        let outcome = sink.send(&batch).await;
        match outcome {
            SendOutcome::Done => {
                metrics.count(
                    "audithawk_sink_sent_total",
                    &[("sink", name)],
                    batch.len() as u64,
                );
                return;
            }
            SendOutcome::Partial {
                retry: again,
                rejected,
            } => {
                let sent = batch.len() - again.len() - rejected.len();
                metrics.count("audithawk_sink_sent_total", &[("sink", name)], sent as u64);
                for (i, reason) in &rejected {
                    metrics.count(
                        "audithawk_sink_failed_total",
                        &[("sink", name), ("reason", "rejected")],
                        1,
                    );
                    tracing::error!(sink = %name, alert = %batch.get(*i).map(|a| a.event.id.as_str()).unwrap_or(""), reason = %reason, "Alert rejected by the sink.");
                }
                batch = again
                    .into_iter()
                    .filter_map(|i| batch.get(i).cloned())
                    .collect();
                if !batch.is_empty() {
                    metrics.count(
                        "audithawk_sink_retried_total",
                        &[("sink", name)],
                        batch.len() as u64,
                    );
                    tokio::time::sleep(retry.backoff(attempt)).await;
                    attempt += 1;
                }
            }
            SendOutcome::Retry { reason, after } => {
                metrics.count(
                    "audithawk_sink_retried_total",
                    &[("sink", name)],
                    batch.len() as u64,
                );
                tracing::warn!(sink = %name, attempt, reason = %reason, "Delivery failed; retrying.");
                let wait = after
                    .unwrap_or_else(|| retry.backoff(attempt))
                    .min(retry.max);
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            SendOutcome::Fatal { reason } => {
                metrics.count(
                    "audithawk_sink_failed_total",
                    &[("sink", name), ("reason", "fatal")],
                    batch.len() as u64,
                );
                tracing::error!(sink = %name, count = batch.len(), reason = %reason, "Alerts could not be delivered.");
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

    /// Sends `alert` to every matching sink (waiting on full queues).
    pub async fn dispatch(&self, alert: SharedAlert) {
        for d in &self.drivers {
            if d.route.accepts(&alert) && d.submit(alert.clone()).await.is_err() {
                tracing::error!(sink = %d.name, "Sink driver stopped; alert not queued.");
            }
        }
    }

    /// Shuts every driver down within `deadline`; returns false if any timed out.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        let mut ok = true;
        for d in self.drivers {
            ok &= d.shutdown(deadline).await;
        }
        ok
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
