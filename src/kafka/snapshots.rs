//! Per-partition detector state in a compacted Kafka topic, so that state follows a
//! partition to its next owner without a shared disk.
//!
//! A snapshot of events-topic partition `p` is the correlator's snapshot (the same JSON as
//! `state.state_dir` holds), gzip-compressed and split into chunks of at most
//! `snapshot_chunk_bytes` (brokers refuse messages over ~1 MB), written as:
//! - chunks under `<group>/<topic>/<p>/<generation>/<i>`, then
//! - the manifest under `<group>/<topic>/<p>`: offset (the next event to apply), generation,
//!   chunk count and a checksum,
//! - and, once both are acknowledged, tombstones for the previous generation's chunks
//!   ([`SnapshotStore::retire`]), so that compaction removes them. Never before: a manifest
//!   that failed would leave the previous one pointing at deleted chunks.
//!
//! A reader takes the newest manifest per partition and the chunks of its generation; a
//! manifest whose chunks are missing or fail the checksum is ignored (the partition
//! starts from its committed offset with empty windows, counted and logged), never
//! half-applied.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::future_producer::OwnedDeliveryResult;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::{KafkaConfig, KafkaSetupError};

/// Manifest format version.
const VERSION: u32 = 1;

/// What a partition's newest snapshot is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// The events-topic partition.
    pub partition: i32,
    /// The next events-topic offset to apply after restoring.
    pub offset: i64,
    /// Which chunks belong to this snapshot.
    pub generation: u64,
    /// Number of chunks.
    pub chunks: u32,
    /// xxh3-64 of the concatenated chunks.
    pub checksum: u64,
    /// When written (wall clock, informational).
    pub written_at: String,
}

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The brokers did not take it.
    #[error("state topic: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Compressing or decompressing.
    #[error("snapshot encoding: {0}")]
    Encoding(#[from] std::io::Error),
    /// A write was not acknowledged in time.
    #[error("state topic: {0}")]
    NotAcked(String),
}

/// Writes and reads snapshots in the state topic.
pub struct SnapshotStore {
    producer: FutureProducer,
    cfg: KafkaConfig,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("topic", &self.cfg.state_topic)
            .finish_non_exhaustive()
    }
}

/// Writes in flight; see [`SnapshotStore::enqueue`].
pub struct PendingWrite {
    deliveries: Vec<rdkafka::producer::DeliveryFuture>,
    /// The manifest that was written.
    pub manifest: Manifest,
}

impl PendingWrite {
    /// Waits for every message of the snapshot to be acknowledged.
    pub async fn acked(self) -> Result<Manifest, SnapshotError> {
        for d in self.deliveries {
            check(d.await)?;
        }
        Ok(self.manifest)
    }

    /// After the producer was flushed: whether everything was acknowledged (for the
    /// synchronous rebalance callback, which cannot await).
    pub fn acked_after_flush(self) -> Result<Manifest, SnapshotError> {
        for d in self.deliveries {
            match d.now_or_never() {
                Some(r) => check(r)?,
                None => return Err(SnapshotError::NotAcked("flush timed out".into())),
            }
        }
        Ok(self.manifest)
    }
}

/// `E` is the delivery future's cancellation (the producer was dropped).
fn check<E>(r: Result<OwnedDeliveryResult, E>) -> Result<(), SnapshotError> {
    match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(SnapshotError::Kafka(e)),
        Err(_) => Err(SnapshotError::NotAcked("producer closed".into())),
    }
}

impl SnapshotStore {
    /// A producer for the state topic (acks=all: a snapshot must survive a broker loss).
    pub fn new(cfg: &KafkaConfig) -> Result<SnapshotStore, KafkaSetupError> {
        let mut c = cfg.client_config();
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set(
                "message.max.bytes",
                (cfg.snapshot_chunk_bytes + 64 * 1024).to_string(),
            );
        Ok(SnapshotStore {
            producer: c.create()?,
            cfg: cfg.clone(),
        })
    }

    fn manifest_key(&self, p: i32) -> String {
        format!("{}/{}/{p}", self.cfg.group_id, self.cfg.events_topic)
    }

    fn chunk_key(&self, p: i32, generation: u64, i: u32) -> String {
        format!(
            "{}/{}/{p}/{generation:016x}/{i}",
            self.cfg.group_id, self.cfg.events_topic
        )
    }

    /// Enqueues the snapshot of partition `p` (`state`: the correlator's snapshot JSON)
    /// taken when `offset` was the next event to apply. Await [`PendingWrite::acked`] (or
    /// flush and use [`PendingWrite::acked_after_flush`]), then [`SnapshotStore::retire`]
    /// the snapshot it replaces.
    pub fn enqueue(
        &self,
        p: i32,
        offset: i64,
        state: &[u8],
    ) -> Result<PendingWrite, SnapshotError> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(state)?;
        let packed = gz.finish()?;
        let generation = fastrand::u64(..);
        let chunks: Vec<&[u8]> = packed.chunks(self.cfg.snapshot_chunk_bytes).collect();
        let manifest = Manifest {
            version: VERSION,
            partition: p,
            offset,
            generation,
            chunks: chunks.len() as u32,
            checksum: xxhash_rust::xxh3::xxh3_64(&packed),
            written_at: chrono::Utc::now().to_rfc3339(),
        };
        let topic = self.cfg.state_topic.as_str();
        let mut deliveries = Vec::with_capacity(chunks.len() + 2);
        let mut send = |key: &str, payload: Option<&[u8]>| -> Result<(), SnapshotError> {
            let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key);
            if let Some(p) = payload {
                rec = rec.payload(p);
            }
            match self.producer.send_result(rec) {
                Ok(d) => {
                    deliveries.push(d);
                    Ok(())
                }
                Err((e, _)) => Err(SnapshotError::Kafka(e)),
            }
        };
        for (i, c) in chunks.iter().enumerate() {
            send(&self.chunk_key(p, generation, i as u32), Some(c))?;
        }
        let m = serde_json::to_vec(&manifest).map_err(std::io::Error::other)?;
        send(&self.manifest_key(p), Some(&m))?;
        Ok(PendingWrite {
            deliveries,
            manifest,
        })
    }

    /// Tombstones the chunks of `old`, a snapshot of partition `p` that an acknowledged
    /// newer one replaced, so that compaction removes them. Best effort: chunks that stay
    /// are never read (no manifest names them) and only take space.
    pub fn retire(&self, p: i32, old: &Manifest) {
        for i in 0..old.chunks {
            let key = self.chunk_key(p, old.generation, i);
            let rec: FutureRecord<'_, str, [u8]> =
                FutureRecord::to(self.cfg.state_topic.as_str()).key(&key);
            if let Err((e, _)) = self.producer.send_result(rec) {
                tracing::warn!(partition = p, error = %e, "Tombstoning an old snapshot chunk failed; it stays until the next snapshot's clean-up.");
                return;
            }
        }
    }

    /// Blocks until everything enqueued is delivered, at most `deadline`.
    pub fn flush(&self, deadline: Duration) -> Result<(), SnapshotError> {
        self.producer
            .flush(Timeout::After(deadline))
            .map_err(SnapshotError::Kafka)
    }

    /// Reads the state topic from its beginning to its end (blocking) and returns, for each
    /// of `partitions` that has a complete snapshot, its manifest and the state JSON.
    pub fn load(
        &self,
        partitions: &[i32],
        deadline: Duration,
    ) -> Result<HashMap<i32, (Manifest, Vec<u8>)>, SnapshotError> {
        let started = std::time::Instant::now();
        let mut c = self.cfg.client_config();
        // No group: an assigned (not subscribed) reader that commits nothing.
        c.set("group.id", format!("{}-state-reader", self.cfg.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        let reader: BaseConsumer = c.create()?;
        let topic = self.cfg.state_topic.as_str();
        let md = reader.fetch_metadata(Some(topic), Timeout::After(deadline))?;
        let n_parts = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len() as i32);
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for sp in 0..n_parts {
            let (lo, hi) = reader.fetch_watermarks(topic, sp, Timeout::After(deadline))?;
            if hi > lo {
                tpl.add_partition_offset(topic, sp, Offset::Offset(lo))?;
                ends.insert(sp, hi);
            }
        }
        let mut latest: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        if !ends.is_empty() {
            reader.assign(&tpl)?;
            while !ends.is_empty() {
                let left = deadline.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(SnapshotError::NotAcked(format!(
                        "reading {topic} did not finish within {deadline:?}"
                    )));
                }
                let Some(m) = reader.poll(Timeout::After(left.min(Duration::from_millis(500))))
                else {
                    continue;
                };
                let m = m?;
                if let Some(k) = m.key() {
                    latest.insert(k.to_vec(), m.payload().map(<[u8]>::to_vec));
                }
                if ends
                    .get(&m.partition())
                    .is_some_and(|&hi| m.offset() + 1 >= hi)
                {
                    ends.remove(&m.partition());
                }
            }
        }
        let mut out = HashMap::new();
        for &p in partitions {
            let Some(Some(mtext)) = latest.get(self.manifest_key(p).as_bytes()) else {
                continue;
            };
            let Ok(manifest) = serde_json::from_slice::<Manifest>(mtext) else {
                tracing::warn!(partition = p, "Unreadable snapshot manifest ignored.");
                continue;
            };
            if manifest.version != VERSION || manifest.partition != p {
                tracing::warn!(
                    partition = p,
                    version = manifest.version,
                    "Snapshot manifest of another version ignored."
                );
                continue;
            }
            let mut packed = Vec::new();
            let mut complete = true;
            for i in 0..manifest.chunks {
                match latest.get(self.chunk_key(p, manifest.generation, i).as_bytes()) {
                    Some(Some(c)) => packed.extend_from_slice(c),
                    _ => {
                        complete = false;
                        break;
                    }
                }
            }
            if !complete || xxhash_rust::xxh3::xxh3_64(&packed) != manifest.checksum {
                tracing::warn!(
                    partition = p,
                    "Snapshot incomplete or corrupt; the partition starts with empty windows."
                );
                continue;
            }
            let mut state = Vec::new();
            flate2::read::GzDecoder::new(&packed[..]).read_to_end(&mut state)?;
            out.insert(p, (manifest, state));
        }
        Ok(out)
    }
}
