//! Scale-out through Kafka (docs/scale-out.md): stateless ingest replicas publish the
//! accepted audit events to a topic keyed so that every event a window needs lands in one
//! partition; detectors in a consumer group evaluate the partitions they own, with
//! correlation state kept per partition and snapshotted to a compacted topic so that it
//! follows a partition to its next owner.
//!
//! ```text
//! API servers ──POST──▶ serve --forward-to kafka ──▶ events topic (key: cluster + user)
//!                         (200 only after acks=all)        │ partitions
//!                                                          ▼
//!                          detect --from kafka (consumer group, state per partition)
//!                              │ alerts                     │ snapshots
//!                              ▼                            ▼
//!                            sinks (HEC, _bulk, kafka...)  state topic (compacted)
//! ```
//!
//! # Layout
//! - this module: the `kafka:` configuration section and client settings;
//! - [`publish`]: the producer behind `serve`/`tail --forward-to kafka`;
//! - [`detect`]: the consumer group behind `detect --from kafka`;
//! - [`snapshots`]: per-partition state in the compacted state topic;
//! - the alert sink is [`crate::sinks::kafka`], driven like every other sink.
//!
//! Why librdkafka (the `rdkafka` crate): it is the reference client that Kafka-API brokers
//! (Redpanda, MSK, Confluent, WarpStream, Tansu) test against, with an idempotent producer,
//! consumer groups and an in-process mock cluster that the tests use.

pub mod detect;
pub mod publish;
pub mod snapshots;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::config::{Dur, Secret};
use crate::model::fields::{Document, FieldPath, Val};
use crate::model::AuditEvent;

/// Header carrying the cluster name of a forwarded event (the event JSON itself has none).
pub const CLUSTER_HEADER: &str = "audithawk-cluster";

/// The `kafka:` section: where the brokers are and how the two tiers use them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]` (empty: Kafka is not used).
    pub brokers: String,
    /// Extra librdkafka client properties for every client (`security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`, `ssl.ca.location`...). Values
    /// are secrets: they never appear in logs.
    pub properties: BTreeMap<String, Secret>,
    /// The topic the ingest tier publishes audit events to.
    pub events_topic: String,
    /// The compacted topic holding per-partition detector state.
    pub state_topic: String,
    /// The detectors' consumer group.
    pub group_id: String,
    /// Fields whose values make an event's key (partition). `cluster` is the cluster name;
    /// anything else is an event field path. Every correlation whose `group-by` contains
    /// these fields sees all of its events in one partition.
    pub key: Vec<String>,
    /// How long the ingest tier waits for the brokers to acknowledge a batch before it
    /// answers 429 (librdkafka `message.timeout.ms`).
    pub ack_timeout: Dur,
    /// How often a detector commits the offsets of events whose alerts are in the sinks.
    pub commit_interval: Dur,
    /// How often a detector snapshots each owned partition's state to `state_topic`.
    pub snapshot_interval: Dur,
    /// Largest snapshot message; bigger snapshots are split into chunks.
    pub snapshot_chunk_bytes: usize,
    /// Creates the topics at start when missing (`events_topic` with `partitions`, the
    /// state topic compacted). Off when the platform team manages topics.
    pub create_topics: bool,
    /// Partitions of a created events topic (the most detectors that can share work).
    pub partitions: i32,
    /// Replication factor of created topics.
    pub replication: i32,
    /// Where a detector answers `/metrics`, `/healthz` and `/readyz` (plain HTTP; empty:
    /// off). Ready once the group has given it an assignment.
    pub detect_listen: String,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            properties: BTreeMap::new(),
            events_topic: "audithawk.events".into(),
            state_topic: "audithawk.state".into(),
            group_id: "audithawk-detect".into(),
            key: vec!["cluster".into(), "user.username".into()],
            ack_timeout: Dur(Duration::from_secs(10)),
            commit_interval: Dur(Duration::from_secs(1)),
            snapshot_interval: Dur(Duration::from_secs(30)),
            snapshot_chunk_bytes: 512 * 1024,
            create_topics: true,
            partitions: 12,
            replication: 3,
            detect_listen: "0.0.0.0:9090".into(),
        }
    }
}

/// Properties the tiers set themselves; a user value would break a guarantee.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set `kafka.brokers` instead"),
    (
        "enable.idempotence",
        "the ingest tier's producer is always idempotent",
    ),
    (
        "acks",
        "the ingest tier always waits for all in-sync replicas (acks=all)",
    ),
    (
        "enable.auto.commit",
        "detectors commit only after alerts are in the sinks",
    ),
    ("group.id", "set `kafka.group_id` instead"),
];

impl KafkaConfig {
    /// Whether Kafka is configured at all.
    pub fn enabled(&self) -> bool {
        !self.brokers.trim().is_empty()
    }

    /// Every problem, naming keys under `kafka.`. `needed` says whether a command uses
    /// Kafka (then `brokers` must be set).
    pub fn validate(&self, needed: bool) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut bad = |k: &str, m: String| p.push((format!("kafka.{k}"), m));
        if needed && !self.enabled() {
            bad(
                "brokers",
                "is empty; set the bootstrap servers (host:port) to use Kafka".into(),
            );
        }
        for (k, why) in RESERVED {
            if self.properties.contains_key(*k) {
                bad(&format!("properties.{k}"), format!("may not be set: {why}"));
            }
        }
        for (name, topic) in [
            ("events_topic", &self.events_topic),
            ("state_topic", &self.state_topic),
        ] {
            if let Some(m) = topic_problem(topic) {
                bad(name, m);
            }
        }
        if self.events_topic == self.state_topic {
            bad(
                "state_topic",
                "must differ from `events_topic` (it is compacted)".into(),
            );
        }
        if self.group_id.trim().is_empty() {
            bad("group_id", "must not be empty".into());
        }
        if self.key.is_empty() {
            bad(
                "key",
                "needs at least one field (default: [cluster, user.username])".into(),
            );
        }
        if self.ack_timeout.0 < Duration::from_millis(100) {
            bad("ack_timeout", "must be at least 100ms".into());
        }
        if self.commit_interval.0.is_zero() || self.snapshot_interval.0.is_zero() {
            bad(
                "commit_interval",
                "and `snapshot_interval` must be greater than zero".into(),
            );
        }
        if self.snapshot_chunk_bytes < 1024 {
            bad("snapshot_chunk_bytes", "must be at least 1024".into());
        }
        if !self.detect_listen.is_empty()
            && self.detect_listen.parse::<std::net::SocketAddr>().is_err()
        {
            bad(
                "detect_listen",
                format!(
                    "{:?} is not an address like 0.0.0.0:9090",
                    self.detect_listen
                ),
            );
        }
        if self.partitions < 1 || self.replication < 1 {
            bad("partitions", "and `replication` must be at least 1".into());
        }
        p
    }

    /// Client settings shared by every client: brokers and the user's properties.
    pub fn client_config(&self) -> ClientConfig {
        client_config(&self.brokers, &self.properties)
    }

    /// The compiled partition key.
    pub fn partition_key(&self) -> PartitionKey {
        PartitionKey::new(&self.key)
    }
}

/// Settings for a client of `brokers` with the user's extra librdkafka `properties`.
pub fn client_config(brokers: &str, properties: &BTreeMap<String, Secret>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers.trim());
    for (k, v) in properties {
        c.set(k, v.0.as_str());
    }
    // librdkafka logs through the `log` facade; keep its chatter out of ours.
    c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    c
}

/// Settings for a producer that neither loses, duplicates nor reorders within a partition
/// (idempotent, `acks=all`), giving up on a message after `timeout` so that the caller
/// decides what a retry means; lz4 unless the user chose a compression (it shrinks audit
/// JSON about 5x cheaply).
pub fn reliable_producer_config(
    brokers: &str,
    properties: &BTreeMap<String, Secret>,
    timeout: Duration,
) -> ClientConfig {
    let mut c = client_config(brokers, properties);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", timeout.as_millis().to_string());
    if !properties.contains_key("compression.type") {
        c.set("compression.type", "lz4");
    }
    c
}

/// Kafka's topic-name rule: 1–249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn topic_problem(t: &str) -> Option<String> {
    let ok_chars = t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if t.is_empty() || t.len() > 249 || !ok_chars || t == "." || t == ".." {
        Some(format!(
            "{t:?} is not a valid topic name (1-249 characters of a-z A-Z 0-9 . _ -)"
        ))
    } else {
        None
    }
}

/// The fields an event's Kafka key is made of.
#[derive(Debug, Clone)]
pub struct PartitionKey {
    parts: Vec<KeyPart>,
}

#[derive(Debug, Clone)]
enum KeyPart {
    Cluster,
    Field(FieldPath),
}

impl PartitionKey {
    /// Compiles `fields` (`cluster` or event field paths).
    pub fn new(fields: &[String]) -> PartitionKey {
        PartitionKey {
            parts: fields
                .iter()
                .map(|f| match f.as_str() {
                    "cluster" => KeyPart::Cluster,
                    other => KeyPart::Field(FieldPath::parse(other)),
                })
                .collect(),
        }
    }

    /// The key of `ev`: the values joined by `\u{1f}` (a missing value is empty; a list
    /// field contributes its first value).
    pub fn of(&self, ev: &AuditEvent<'_>) -> String {
        let mut key = String::new();
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                key.push('\u{1f}');
            }
            match p {
                KeyPart::Cluster => key.push_str(ev.cluster.as_deref().unwrap_or("")),
                KeyPart::Field(path) => {
                    ev.visit(path, &mut |v| {
                        match v {
                            Val::Str(s) => key.push_str(s),
                            Val::Int(n) => key.push_str(&n.to_string()),
                            Val::Bool(b) => key.push_str(if b { "true" } else { "false" }),
                            Val::Float(f) => key.push_str(&f.to_string()),
                            Val::Null | Val::Object => {}
                        }
                        true
                    });
                }
            }
        }
        key
    }

    /// The event fields in the key (without `cluster`), for the group-by check.
    pub fn fields(&self) -> Vec<&str> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                KeyPart::Field(f) => Some(f.name.as_str()),
                KeyPart::Cluster => None,
            })
            .collect()
    }
}

/// Whether the brokers will never take a message that failed with `code` (too large,
/// malformed, not authorised): retrying cannot help.
pub fn refused_for_good(code: Option<rdkafka::types::RDKafkaErrorCode>) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        code,
        Some(
            C::MessageSizeTooLarge
                | C::InvalidMessage
                | C::InvalidMessageSize
                | C::InvalidRecord
                | C::MessageBatchTooLarge
                | C::TopicAuthorizationFailed
        )
    )
}

/// Why a Kafka client could not start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// librdkafka refused the settings (unknown property, bad value).
    #[error("kafka client settings: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// The engine handed to a detector cannot keep per-partition state.
    #[error("detector engine: {0}")]
    Engine(String),
    /// A topic could not be created or checked.
    #[error("kafka topic {topic}: {message}")]
    Topic {
        /// The topic.
        topic: String,
        /// Why.
        message: String,
    },
}

/// Creates the events topic (`partitions`, `replication`) and the compacted state topic
/// when they are missing; existing topics are left as they are.
pub async fn ensure_topics(cfg: &KafkaConfig) -> Result<(), KafkaSetupError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    if !cfg.create_topics {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = cfg.client_config().create()?;
    let events = NewTopic::new(
        &cfg.events_topic,
        cfg.partitions,
        TopicReplication::Fixed(cfg.replication),
    );
    // Compacted: only the newest value per key (partition manifest, chunk) is kept.
    let state = NewTopic::new(
        &cfg.state_topic,
        1,
        TopicReplication::Fixed(cfg.replication),
    )
    .set("cleanup.policy", "compact");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&events, &state], &opts).await?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaSetupError::Topic {
                    topic,
                    message: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_joins_cluster_and_user() {
        let mut ev = AuditEvent::parse(
            r#"{"auditID":"a","verb":"get","user":{"username":"alice","groups":["g1","g2"]}}"#,
        )
        .unwrap();
        ev.cluster = Some("prod".into());
        let k = PartitionKey::new(&["cluster".into(), "user.username".into()]);
        assert_eq!(k.of(&ev), "prod\u{1f}alice");
        let k = PartitionKey::new(&["user.groups".into(), "objectRef.namespace".into()]);
        assert_eq!(k.of(&ev), "g1\u{1f}");
        assert_eq!(k.fields(), vec!["user.groups", "objectRef.namespace"]);
    }

    #[test]
    fn validation_names_every_problem() {
        let mut c = KafkaConfig::default();
        c.properties.insert("acks".into(), Secret("1".into()));
        c.events_topic = "bad topic".into();
        c.key.clear();
        let p = c.validate(true);
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "kafka.brokers",
                "kafka.properties.acks",
                "kafka.events_topic",
                "kafka.key"
            ]
        );
        assert!(KafkaConfig::default().validate(false).is_empty());
    }
}
