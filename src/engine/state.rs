//! Correlation state: configuration, per-cluster event-time clocks, shards, and the
//! snapshot format.
//!
//! Sharding: every piece of state belongs to exactly one shard, chosen from the group key
//! (or, for correlations that take part in a chain, from the cluster alone, so that an
//! inner correlation's firing reaches the outer one under the same lock and in event-time
//! order). Within a shard, records are applied in event-time order from a reorder buffer,
//! so the result does not depend on which thread delivered which event.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use super::baseline::{Baseline, Seen};
use super::correlate::EvRef;
use super::suppress::{SuppressSpec, SuppressState};
use super::window::Group;
use crate::rules::correlation::ExceptionDef;
use crate::telemetry::Metrics;

/// Builds hashers for maps keyed by 128-bit group hashes. The keys are already uniform
/// (xxh3-128 of cluster and values), so hashing is a fold with a per-process random
/// salt: cheap, and the table layout is not predictable from outside.
#[derive(Debug, Clone, Copy)]
pub struct KeyBuild(u64);

impl Default for KeyBuild {
    fn default() -> Self {
        KeyBuild(fastrand::u64(..))
    }
}

impl std::hash::BuildHasher for KeyBuild {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

/// See [`KeyBuild`].
#[derive(Debug, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        // One multiply spreads the salt into the high bits hashbrown uses for tags.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 ^= xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u128(&mut self, v: u128) {
        self.0 ^= (v as u64) ^ ((v >> 64) as u64);
    }
}

/// A map keyed by group hash.
pub type KeyMap<V> = HashMap<u128, V, KeyBuild>;

/// Number of shards. Fixed, so that a snapshot restores into the same layout.
pub const SHARDS: usize = 16;

/// Snapshot file name inside `state_dir`.
pub const SNAPSHOT_FILE: &str = "correlation-state.json";

/// Noise tuning from the config file: global exceptions and re-alert intervals.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// Global exceptions; each names the rules it applies to.
    pub exceptions: Vec<ExceptionDef>,
    /// Re-alert intervals for stateless rules.
    pub suppress: Vec<SuppressSpec>,
}

impl Tuning {
    /// Parses the `tuning:` section of the config (see docs/tuning.md): a mapping with
    /// optional `exceptions:` and `suppress:` lists. Returns every problem found.
    pub fn from_yaml(v: &serde_yaml_ng::Value) -> Result<Tuning, Vec<String>> {
        let mut errs = Vec::new();
        let mut t = Tuning::default();
        let Some(m) = v.as_mapping() else {
            return Err(vec!["`tuning` must be a mapping".into()]);
        };
        for (k, val) in m {
            match k.as_str() {
                Some("exceptions") => {
                    match crate::rules::correlation::parse_exceptions(val, true) {
                        Ok(e) => t.exceptions = e,
                        Err(e) => errs.extend(e.into_iter().map(|e| format!("tuning.{e}"))),
                    }
                }
                Some("suppress") => {
                    match serde_yaml_ng::from_value::<Vec<SuppressSpec>>(val.clone()) {
                        Ok(s) => t.suppress = s,
                        Err(e) => errs.push(format!("tuning.suppress: {e}")),
                    }
                }
                other => errs.push(format!(
                    "tuning: unknown key {other:?} (expected exceptions, suppress)"
                )),
            }
        }
        if errs.is_empty() {
            Ok(t)
        } else {
            Err(errs)
        }
    }
}

/// Configuration of the stateful engine.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Most groups (or baseline tuples) one correlation may hold; the stalest are evicted.
    pub max_groups_per_rule: usize,
    /// Approximate cap on all correlation state; the stalest groups are evicted beyond it.
    pub max_state_bytes: usize,
    /// How far behind the newest event of its cluster an event may arrive and still be
    /// placed in order.
    pub allowed_lateness: Duration,
    /// How often [`super::correlate::Correlator::tick`] writes a snapshot (when `state_dir`
    /// is set).
    pub snapshot_interval: Duration,
    /// Where snapshots live; `None` keeps state in memory only.
    pub state_dir: Option<PathBuf>,
    /// Re-alert interval per correlation group when the rule sets none.
    pub default_suppress: Option<Duration>,
    /// auditIDs kept per group for the alert.
    pub max_audit_ids: usize,
    /// Largest distinct set a `value_count` may need (bounds its memory).
    pub max_distinct_values: usize,
    /// Exceptions and re-alert intervals from the config.
    pub tuning: Tuning,
    /// Value lists for `|expand` in exceptions.
    pub lists: HashMap<String, Vec<String>>,
    /// Where counters go.
    pub metrics: Arc<Metrics>,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            max_groups_per_rule: 200_000,
            max_state_bytes: 512 << 20,
            // The webhook's default batch-max-wait is 30 s: a batch can hold events that old.
            allowed_lateness: Duration::from_secs(45),
            snapshot_interval: Duration::from_secs(60),
            state_dir: None,
            default_suppress: None,
            max_audit_ids: 10,
            max_distinct_values: 1_000,
            tuning: Tuning::default(),
            lists: HashMap::new(),
            metrics: Arc::new(Metrics::new()),
        }
    }
}

/// Why state could not be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the snapshot file.
    #[error("state snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A snapshot that does not parse (truncated, or another program's file).
    #[error("state snapshot {path}: not a valid snapshot: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The event-time clock of one cluster.
#[derive(Debug)]
pub struct Clock {
    /// Cluster name.
    pub name: Option<Arc<str>>,
    /// Newest event time seen (µs).
    pub max_seen: AtomicI64,
    /// Watermark forced forward by idleness or [`super::correlate::Correlator::advance_watermark`].
    pub forced: AtomicI64,
    /// (max_seen at the last tick, when it last changed) for idle detection.
    pub idle: Mutex<(i64, Option<Instant>)>,
}

/// All clusters' clocks, interned to small ids.
#[derive(Debug, Default)]
pub struct Clocks {
    ids: RwLock<HashMap<Option<Arc<str>>, u16>>,
    clocks: RwLock<Vec<Arc<Clock>>>,
}

impl Clocks {
    /// The id of `cluster`, interning it on first sight.
    pub fn intern(&self, cluster: Option<&Arc<str>>) -> u16 {
        let key = cluster.cloned();
        if let Some(id) = self.ids.read().get(&key) {
            return *id;
        }
        let mut ids = self.ids.write();
        if let Some(id) = ids.get(&key) {
            return *id;
        }
        let mut clocks = self.clocks.write();
        if clocks.len() >= u16::MAX as usize {
            // Cluster names come from config or the webhook path: this many is a
            // misconfiguration; fold the excess into the last clock rather than fail.
            return u16::MAX - 1;
        }
        let id = clocks.len() as u16;
        clocks.push(Arc::new(Clock {
            name: key.clone(),
            max_seen: AtomicI64::new(i64::MIN),
            forced: AtomicI64::new(i64::MIN),
            idle: Mutex::new((i64::MIN, None)),
        }));
        ids.insert(key, id);
        id
    }

    /// The clock of `id`.
    pub fn get(&self, id: u16) -> Option<Arc<Clock>> {
        self.clocks.read().get(id as usize).cloned()
    }

    /// All clocks.
    pub fn all(&self) -> Vec<Arc<Clock>> {
        self.clocks.read().clone()
    }

    /// The watermark of `id`: records older than this are late.
    pub fn watermark(&self, id: u16, lateness: i64) -> i64 {
        self.clocks
            .read()
            .get(id as usize)
            .map_or(i64::MIN, |c| wm_of(c, lateness))
    }
}

/// Watermark of one clock.
pub fn wm_of(c: &Clock, lateness: i64) -> i64 {
    let seen = c.max_seen.load(Ordering::Acquire);
    let natural = if seen == i64::MIN {
        i64::MIN
    } else {
        seen.saturating_sub(lateness)
    };
    natural.max(c.forced.load(Ordering::Acquire))
}

/// Order of records in the reorder buffer: event time, then a content hash so that equal
/// times order the same whatever the arrival order; later sequence steps first so that one
/// event cannot complete two consecutive steps of a `temporal_ordered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PKey {
    /// Event time (µs).
    pub t: i64,
    /// Hash of the event text.
    pub tie: u64,
    /// Correlation index.
    pub corr: u32,
    /// `u16::MAX - position`.
    pub rpos: u16,
    /// Group key.
    pub key: u128,
    /// Hash of the counted value.
    pub vhash: u64,
}

/// One event's contribution to one group of one correlation, waiting to be applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Event time (µs).
    pub t: i64,
    /// Correlation index.
    pub corr: u32,
    /// Position of the matched rule in the correlation's `rules`.
    pub pos: u16,
    /// Group key (cluster and group-by values, hashed).
    pub key: u128,
    /// Interned cluster.
    pub cluster: u16,
    /// The counted value (value_count).
    pub value: Option<Box<str>>,
    /// The event, for the alert.
    pub ev: Arc<EvRef>,
}

/// One shard of state.
#[derive(Debug, Default)]
pub struct Shard {
    /// Per correlation: group key -> window state.
    pub groups: Vec<KeyMap<Group>>,
    /// Per correlation (new_terms only): tuple -> last seen.
    pub terms: Vec<Baseline>,
    /// Per correlation: group key -> (cluster, re-alert state).
    pub supp: Vec<KeyMap<(u16, SuppressState)>>,
    /// Per cluster: the reorder buffer.
    pub pending: Vec<Pending>,
    /// Estimated bytes held.
    pub bytes: usize,
    /// Largest watermark at the last sweep.
    pub swept_at: i64,
}

impl Shard {
    /// A shard for `n` correlations.
    pub fn new(n: usize) -> Shard {
        Shard {
            groups: (0..n).map(|_| KeyMap::default()).collect(),
            terms: (0..n).map(|_| Baseline::default()).collect(),
            supp: (0..n).map(|_| KeyMap::default()).collect(),
            pending: Vec::new(),
            bytes: 0,
            swept_at: i64::MIN,
        }
    }

    /// The reorder buffer of `cluster`.
    pub fn pending_mut(&mut self, cluster: u16) -> &mut Pending {
        let i = cluster as usize;
        if self.pending.len() <= i {
            self.pending.resize_with(i + 1, Pending::default);
        }
        &mut self.pending[i]
    }
}

/// How far from the back of the sorted run an out-of-order record may still be inserted
/// into the run itself (a short move) rather than into the side map.
const RUN_INSERT_WINDOW: usize = 32;

/// One cluster's reorder buffer in one shard: records in [`PKey`] order, each key at most
/// once (a second record with the same key replaces the first, as a map would).
///
/// Records nearly always arrive in key order (an API server sends its events in time
/// order), so most go to the back of a sorted run: O(1), no allocation per record, and
/// draining pops from the front. The few that arrive out of order (batches from several
/// API servers interleaving) go to an ordered side map; popping merges the two. A single
/// `BTreeMap` cost a node search and rebalancing per insert and a split per drain, which
/// was about half of the stateful engine's time.
#[derive(Debug, Default)]
pub struct Pending {
    run: VecDeque<(PKey, Record)>,
    side: BTreeMap<PKey, Record>,
}

impl Pending {
    /// Records held.
    pub fn len(&self) -> usize {
        self.run.len() + self.side.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.run.is_empty() && self.side.is_empty()
    }

    /// Adds a record; returns the record it replaced (same key), if any.
    pub fn insert(&mut self, k: PKey, r: Record) -> Option<Record> {
        match self.run.back() {
            None if self.side.is_empty() => {
                self.run.push_back((k, r));
                return None;
            }
            Some((b, _)) if *b < k => {
                self.run.push_back((k, r));
                return None;
            }
            _ => {}
        }
        match self.run.binary_search_by(|(x, _)| x.cmp(&k)) {
            Ok(i) => self.run.get_mut(i).map(|e| std::mem::replace(&mut e.1, r)),
            Err(i) if self.run.len() - i <= RUN_INSERT_WINDOW && !self.side.contains_key(&k) => {
                self.run.insert(i, (k, r));
                None
            }
            Err(_) => self.side.insert(k, r),
        }
    }

    /// The smallest key held.
    pub fn first_key(&self) -> Option<&PKey> {
        match (self.run.front(), self.side.first_key_value()) {
            (Some((a, _)), Some((b, _))) => Some(a.min(b)),
            (Some((a, _)), None) => Some(a),
            (None, Some((b, _))) => Some(b),
            (None, None) => None,
        }
    }

    /// Removes the record with the smallest key.
    pub fn pop_first(&mut self) -> Option<(PKey, Record)> {
        let from_side = match (self.run.front(), self.side.first_key_value()) {
            (Some((a, _)), Some((b, _))) => b < a,
            (None, Some(_)) => true,
            _ => false,
        };
        if from_side {
            self.side.pop_first()
        } else {
            self.run.pop_front()
        }
    }

    /// Gives back memory after a burst: the run keeps its capacity otherwise, and a
    /// buffer that once held a flood would keep that much forever.
    pub fn trim(&mut self) {
        let cap = self.run.capacity();
        if cap > 1024 && self.run.len() < cap / 4 {
            self.run.shrink_to((self.run.len() * 2).max(1024));
        }
    }

    /// Every held record, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &Record> {
        self.run.iter().map(|(_, r)| r).chain(self.side.values())
    }
}

/// Bytes one group costs beyond its heap: the table slot (key, value, control byte at the
/// table's typical load).
pub const GROUP_SLOT_BYTES: usize = (16 + std::mem::size_of::<Group>() + 1) * 8 / 7;

/// Bytes one pending record costs (plus its event text, shared between its records).
pub const RECORD_BYTES: usize = std::mem::size_of::<PKey>() + std::mem::size_of::<Record>() + 32;

/// The snapshot file.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Format version.
    pub version: u32,
    /// When written (RFC 3339, wall clock; informational).
    pub written_at: String,
    /// Clusters in interned-id order.
    pub clusters: Vec<ClusterSnap>,
    /// Per correlation state.
    pub correlations: Vec<CorrSnap>,
}

/// A cluster clock in a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterSnap {
    /// Name.
    pub name: Option<String>,
    /// Newest event time (µs).
    pub max_seen: i64,
    /// Forced watermark (µs).
    pub forced: i64,
}

/// One correlation's state in a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct CorrSnap {
    /// Rule id.
    pub id: String,
    /// Fingerprint of the definition: state of a changed rule is dropped on restore.
    pub fingerprint: u64,
    /// Start of the learning period (new_terms), µs.
    pub learning_start: i64,
    /// Groups.
    pub groups: Vec<(u128, Group)>,
    /// Baseline tuples.
    pub terms: Vec<(u128, Seen)>,
    /// Re-alert state: (group key, cluster, state).
    pub supp: Vec<(u128, u16, SuppressState)>,
    /// Records not yet applied.
    pub pending: Vec<Record>,
}

/// Snapshot format version.
pub const SNAPSHOT_VERSION: u32 = 1;
