//! The ingest tier's producer (`serve --forward-to kafka`, `tail --forward-to kafka`).
//!
//! Each accepted audit event is redacted ([`crate::sinks::raw::record`]) and published to
//! the events topic, keyed by [`super::PartitionKey`], with the cluster in a header. The
//! producer is idempotent with `acks=all`, so librdkafka's own retries neither lose nor
//! duplicate nor reorder within a partition. [`EventPublisher::publish`] resolves only when
//! the brokers acknowledged every event of the batch: the webhook answers 200 after that,
//! and the API server's own retry covers every failure before it.
//!
//! While the brokers are unreachable the publisher fails fast (the webhook answers 429 with
//! Retry-After instead of holding the API server's connection for the whole ack timeout):
//! librdkafka reports "all brokers down", or a delivery times out; a probe then asks for
//! the topic's metadata every second and clears the state when a broker answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::{KafkaConfig, KafkaSetupError, PartitionKey, CLUSTER_HEADER};
use crate::model::AuditEvent;
use crate::telemetry::Metrics;

/// Tracks whether the brokers are reachable, from librdkafka's global errors.
#[derive(Clone, Default)]
pub struct ReachContext {
    down: Arc<AtomicBool>,
}

impl ClientContext for ReachContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.down.store(true, Ordering::Release);
        }
        tracing::warn!(error = %error, reason, "Kafka client error.");
    }
}

/// Why a batch was not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The brokers are unreachable or did not acknowledge in time: retry later (429).
    #[error("kafka unavailable: {0}")]
    Unavailable(String),
}

/// What a published batch came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Events acknowledged by the brokers.
    pub acked: usize,
    /// Events the brokers refused for good (too large, invalid), with the reason. They are
    /// reported to the sender like undecodable items and counted.
    pub refused: Vec<(usize, String)>,
}

/// The producer of the ingest tier.
pub struct EventPublisher {
    producer: FutureProducer<ReachContext>,
    topic: String,
    key: PartitionKey,
    down: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    probe: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl EventPublisher {
    /// An idempotent `acks=all` producer to `cfg.events_topic` (no network yet).
    pub fn new(
        cfg: &KafkaConfig,
        metrics: Arc<Metrics>,
    ) -> Result<EventPublisher, KafkaSetupError> {
        let ctx = ReachContext::default();
        let down = ctx.down.clone();
        let mut c =
            super::reliable_producer_config(&cfg.brokers, &cfg.properties, cfg.ack_timeout.0);
        // A small linger a user may override: batches form within the webhook's own batch
        // anyway.
        if !cfg.properties.contains_key("linger.ms") {
            c.set("linger.ms", "5");
        }
        let producer: FutureProducer<ReachContext> = c.create_with_context(ctx)?;
        let probe = tokio::spawn(probe(
            producer.clone(),
            cfg.events_topic.clone(),
            down.clone(),
        ));
        Ok(EventPublisher {
            producer,
            topic: cfg.events_topic.clone(),
            key: cfg.partition_key(),
            down,
            metrics,
            probe,
        })
    }

    /// Whether the brokers are currently known to be unreachable.
    pub fn unavailable(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Publishes `events` (redacted) and waits until the brokers acknowledged all of them.
    pub async fn publish(&self, events: &[AuditEvent<'static>]) -> Result<Published, PublishError> {
        if self.unavailable() {
            self.metrics.count(
                "audithawk_kafka_publish_failed_total",
                &[("reason", "unavailable")],
                1,
            );
            return Err(PublishError::Unavailable(
                "all brokers are down; retry later".into(),
            ));
        }
        let mut pending = Vec::with_capacity(events.len());
        let mut out = Published::default();
        for (i, ev) in events.iter().enumerate() {
            let Some(text) = crate::sinks::raw::redacted_text(ev) else {
                out.refused.push((
                    i,
                    "the event could not be re-encoded after redaction".into(),
                ));
                continue;
            };
            let key = self.key.of(ev);
            let mut headers = OwnedHeaders::new();
            if let Some(c) = ev.cluster.as_deref() {
                headers = headers.insert(Header {
                    key: CLUSTER_HEADER,
                    value: Some(c),
                });
            }
            let record = FutureRecord::to(&self.topic)
                .key(&key)
                .payload(text.as_ref())
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(f) => pending.push((i, f)),
                Err((e, _)) => {
                    // The local queue is full (brokers slow or away): nothing of this
                    // batch is acknowledged as a whole, so the sender retries it; what
                    // was enqueued is delivered anyway and de-duplicated downstream.
                    self.metrics.count(
                        "audithawk_kafka_publish_failed_total",
                        &[("reason", "queue_full")],
                        1,
                    );
                    return Err(PublishError::Unavailable(format!("producer queue: {e}")));
                }
            }
        }
        let mut unavailable = None;
        for (i, f) in pending {
            match f.await {
                Ok(Ok(_)) => out.acked += 1,
                Ok(Err((e, _))) if super::refused_for_good(e.rdkafka_error_code()) => {
                    out.refused.push((i, e.to_string()))
                }
                Ok(Err((e, _))) => {
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(RDKafkaErrorCode::MessageTimedOut)
                    ) {
                        self.down.store(true, Ordering::Release);
                    }
                    unavailable.get_or_insert_with(|| e.to_string());
                }
                Err(_) => {
                    unavailable.get_or_insert_with(|| "the producer was closed".to_string());
                }
            }
        }
        if let Some(why) = unavailable {
            self.metrics.count(
                "audithawk_kafka_publish_failed_total",
                &[("reason", "not_acked")],
                1,
            );
            return Err(PublishError::Unavailable(why));
        }
        self.down.store(false, Ordering::Release);
        self.metrics
            .count("audithawk_kafka_published_total", &[], out.acked as u64);
        if !out.refused.is_empty() {
            self.metrics.count(
                "audithawk_kafka_publish_failed_total",
                &[("reason", "refused")],
                out.refused.len() as u64,
            );
        }
        Ok(out)
    }

    /// Waits (at most `deadline`) for everything enqueued to be delivered.
    pub async fn shutdown(self, deadline: Duration) -> bool {
        self.probe.abort();
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(deadline)).is_ok())
            .await
            .unwrap_or(false)
    }
}

/// While the brokers are marked down, asks for the topic's metadata every second and
/// clears the mark when a broker answers.
async fn probe(producer: FutureProducer<ReachContext>, topic: String, down: Arc<AtomicBool>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if !down.load(Ordering::Acquire) {
            continue;
        }
        let p = producer.clone();
        let t = topic.clone();
        let up = tokio::task::spawn_blocking(move || {
            p.client()
                .fetch_metadata(Some(&t), Timeout::After(Duration::from_secs(2)))
                .map(|m| {
                    m.topics()
                        .iter()
                        .any(|t| t.error().is_none() && !t.partitions().is_empty())
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if up {
            tracing::info!(topic = %topic, "Kafka brokers reachable again.");
            down.store(false, Ordering::Release);
        }
    }
}
