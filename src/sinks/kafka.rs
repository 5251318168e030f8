//! Alerts to a Kafka topic (`type: kafka`), for Splunk Connect for Kafka, Elastic's Kafka
//! input or any stream processor. One JSON alert per message, keyed by the alert's stable
//! id (a re-sent alert lands in the same partition with the same key, so consumers can
//! de-duplicate), with `rule_id`, `level` and `cluster` headers.
//!
//! The producer is idempotent with `acks=all`; one attempt waits for every message of the
//! batch and reports per message, so the shared driver retries only what failed and dead-
//! letters what the brokers refuse for good (too large, not authorised).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use serde::Deserialize;

use super::config::{DeliveryConfig, RouteConfig};
use super::{BoxFuture, HealthError, Record, SendOutcome, Sink};
use crate::config::Secret;
use crate::model::SharedAlert;

fn default_timeout() -> u64 {
    30
}

/// `type: kafka`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Sink name (default `kafka`).
    #[serde(default)]
    pub name: Option<String>,
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic alerts are written to.
    pub topic: String,
    /// Extra librdkafka properties (TLS, SASL); values are secrets.
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
    /// How long one attempt waits for the brokers' acknowledgement, in seconds (default
    /// 30); the driver retries after that.
    #[serde(default = "default_timeout")]
    pub request_timeout_secs: u64,
    /// Which alerts go here.
    #[serde(default)]
    pub route: RouteConfig,
    /// Batching, buffering and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

impl KafkaSinkConfig {
    /// The sink name.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("kafka")
    }

    /// Problems, naming the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.brokers.trim().is_empty() {
            p.push(format!(
                "`{prefix}.brokers` must name at least one host:port"
            ));
        }
        if let Some(m) = crate::kafka::topic_problem(&self.topic) {
            p.push(format!("`{prefix}.topic`: {m}"));
        }
        for k in ["bootstrap.servers", "acks", "enable.idempotence"] {
            if self.properties.contains_key(k) {
                p.push(format!(
                    "`{prefix}.properties.{k}` may not be set (the sink always uses an idempotent acks=all producer; brokers go in `brokers`)"
                ));
            }
        }
        if self.request_timeout_secs == 0 {
            p.push(format!(
                "`{prefix}.request_timeout_secs` must be greater than zero"
            ));
        }
        p
    }
}

/// The sink.
pub struct KafkaSink {
    name: String,
    topic: String,
    producer: FutureProducer,
}

impl KafkaSink {
    /// Creates the producer (no network yet).
    pub fn new(cfg: &KafkaSinkConfig) -> Result<KafkaSink, rdkafka::error::KafkaError> {
        let c = crate::kafka::reliable_producer_config(
            &cfg.brokers,
            &cfg.properties,
            Duration::from_secs(cfg.request_timeout_secs),
        );
        Ok(KafkaSink {
            name: cfg.name().to_string(),
            topic: cfg.topic.clone(),
            producer: c.create()?,
        })
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [SharedAlert]) -> BoxFuture<'a, SendOutcome> {
        Box::pin(async move {
            let mut pending = Vec::with_capacity(batch.len());
            let mut retry = Vec::new();
            let mut rejected = Vec::new();
            let mut buf = Vec::with_capacity(1024);
            for (i, a) in batch.iter().enumerate() {
                buf.clear();
                a.write_json(&mut buf);
                let mut headers = OwnedHeaders::new();
                for (k, v) in a.labels() {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(v),
                    });
                }
                let rec = FutureRecord::to(&self.topic)
                    .key(a.id())
                    .payload(&buf[..])
                    .headers(headers);
                match self.producer.send_result(rec) {
                    Ok(f) => pending.push((i, f)),
                    // The local queue is full: this and the rest go again later.
                    Err(_) => retry.push(i),
                }
            }
            if pending.is_empty() && !retry.is_empty() {
                return SendOutcome::Retry {
                    reason: "the producer queue is full".into(),
                    after: None,
                };
            }
            let mut last_error = None;
            for (i, f) in pending {
                match f.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) if crate::kafka::refused_for_good(e.rdkafka_error_code()) => {
                        rejected.push((i, format!("kafka refused the alert: {e}")))
                    }
                    Ok(Err((e, _))) => {
                        last_error = Some(e.to_string());
                        retry.push(i)
                    }
                    Err(_) => retry.push(i),
                }
            }
            if retry.is_empty() && rejected.is_empty() {
                SendOutcome::Done
            } else if rejected.is_empty() && retry.len() == batch.len() {
                SendOutcome::Retry {
                    reason: last_error.unwrap_or_else(|| "not acknowledged".into()),
                    after: None,
                }
            } else {
                retry.sort_unstable();
                SendOutcome::Partial { retry, rejected }
            }
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let p = self.producer.clone();
            tokio::task::spawn_blocking(move || {
                p.flush(Timeout::After(Duration::from_secs(10)))
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), HealthError>> {
        Box::pin(async move {
            let p = self.producer.clone();
            let topic = self.topic.clone();
            let md = tokio::task::spawn_blocking(move || {
                p.client()
                    .fetch_metadata(Some(&topic), Timeout::After(Duration::from_secs(5)))
                    .map(|m| {
                        m.topics()
                            .first()
                            .and_then(|t| t.error())
                            .map(RDKafkaErrorCode::from)
                    })
            })
            .await
            .map_err(|e| HealthError::Unreachable(e.to_string()))?;
            match md {
                Ok(None) => Ok(()),
                Ok(Some(RDKafkaErrorCode::TopicAuthorizationFailed)) => Err(HealthError::Rejected(
                    format!("not authorised to write to topic {:?}", self.topic),
                )),
                Ok(Some(e)) => Err(HealthError::Unreachable(format!(
                    "topic {:?}: {e}",
                    self.topic
                ))),
                Err(e) => Err(HealthError::Unreachable(e.to_string())),
            }
        })
    }
}
