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
use super::window::{CompactId, Group};
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
#[derive(Debug)]
pub struct Clocks {
    ids: RwLock<HashMap<Option<Arc<str>>, u16>>,
    clocks: RwLock<Vec<Arc<Clock>>>,
    /// Tells this instance's entries in [`LAST_CLUSTER`] from another's.
    uid: u64,
}

impl Default for Clocks {
    fn default() -> Clocks {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Clocks {
            ids: RwLock::default(),
            clocks: RwLock::default(),
            uid: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// A thread's last interned cluster: (clocks uid, cluster, id).
type LastCluster = Option<(u64, Option<Arc<str>>, u16)>;

thread_local! {
    /// Nearly every event of a batch has the cluster of the one before: this spares the
    /// map's shared lock (a cache line both workers write) and a string hash per event.
    /// It holds the `Arc`, so a pointer match cannot come from a freed and reused address.
    static LAST_CLUSTER: std::cell::RefCell<LastCluster> = const { std::cell::RefCell::new(None) };
}

impl Clocks {
    /// The id of `cluster`, interning it on first sight.
    pub fn intern(&self, cluster: Option<&Arc<str>>) -> u16 {
        let hit = LAST_CLUSTER.with(|l| match &*l.borrow() {
            Some((uid, c, id)) if *uid == self.uid => match (c, cluster) {
                (None, None) => Some(*id),
                (Some(a), Some(b)) if Arc::ptr_eq(a, b) => Some(*id),
                _ => None,
            },
            _ => None,
        });
        if let Some(id) = hit {
            return id;
        }
        let id = self.intern_slow(cluster);
        LAST_CLUSTER.with(|l| *l.borrow_mut() = Some((self.uid, cluster.cloned(), id)));
        id
    }

    fn intern_slow(&self, cluster: Option<&Arc<str>>) -> u16 {
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
    /// Tie-break of equal times (see [`EvRef::tie`]).
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
///
/// It carries what applying needs (time, key, auditID, counted value) but not the event
/// text, which only a firing needs: a held record points into its shard's [`TextLog`]
/// (or, rarely, shares an [`EvRef`]), so holding records for the allowed lateness costs
/// no allocation per event and applying one touches no cold event copy.
#[derive(Debug, Clone, PartialEq)]
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
    /// Hash of the counted value (0 without one): part of the buffer order.
    pub vhash: u64,
    /// The event's auditID.
    pub audit: CompactId,
    /// Tie-break of equal times (see [`EvRef::tie`]).
    pub tie: u64,
    /// Where the event text is; `None` only while a record is applied straight from the
    /// event being observed (it is never held like that).
    pub text: Option<Held>,
}

impl Record {
    /// Its place in the reorder buffer. Derived rather than stored beside the record: a
    /// held record's size is most of the buffer's memory traffic (in the state bench,
    /// 64 bytes more per record cost 6–8 points of stateless time).
    pub fn pkey(&self) -> PKey {
        PKey {
            t: self.t,
            tie: self.tie,
            corr: self.corr,
            rpos: u16::MAX - self.pos,
            key: self.key,
            vhash: self.vhash,
        }
    }

    /// The hash a counted value orders by.
    pub fn value_hash(value: Option<&str>) -> u64 {
        value.map_or(0, |v| xxhash_rust::xxh3::xxh3_64(v.as_bytes()))
    }

    /// What a held record counts against the byte cap beyond its log text: itself, and a
    /// shared event's text (counted per record, as the log counts its texts).
    pub fn held_bytes(&self) -> usize {
        RECORD_BYTES
            + match &self.text {
                Some(Held::Shared(e)) => e.raw.len(),
                _ => 0,
            }
    }

    /// The text-log entry this record keeps alive, if any.
    pub fn log_ref(&self) -> Option<TextRef> {
        match self.text {
            Some(Held::Log(r)) => Some(r),
            _ => None,
        }
    }
}

/// Where a held record's event text is.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// In the shard's text log.
    Log(TextRef),
    /// Shared: records restored from a snapshot and chained firings.
    Shared(Arc<EvRef>),
}

/// A held record as a snapshot stores it: with its event (the format of snapshot version 1,
/// unchanged since records stopped carrying the event themselves).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapRecord {
    /// Event time (µs).
    pub t: i64,
    /// Correlation index.
    pub corr: u32,
    /// Position of the matched rule in the correlation's `rules`.
    pub pos: u16,
    /// Group key.
    pub key: u128,
    /// Interned cluster.
    pub cluster: u16,
    /// The counted value (value_count).
    pub value: Option<Box<str>>,
    /// The event.
    pub ev: Arc<EvRef>,
}

impl SnapRecord {
    /// The record to hold again after a restore.
    pub fn into_record(self) -> Record {
        Record {
            t: self.t,
            corr: self.corr,
            pos: self.pos,
            key: self.key,
            cluster: self.cluster,
            vhash: Record::value_hash(self.value.as_deref()),
            value: self.value,
            audit: self.ev.audit.clone(),
            tie: self.ev.tie,
            text: Some(Held::Shared(self.ev)),
        }
    }
}

/// Position of one event text in a [`TextLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRef {
    chunk: u64,
    off: u32,
    len: u32,
}

/// Largest text-log chunk (a larger event gets a chunk of its own).
const LOG_CHUNK_MAX: usize = 256 * 1024;
/// Smallest text-log chunk.
const LOG_CHUNK_MIN: usize = 4 * 1024;

/// The event texts of a shard's held records, appended in arrival order into large
/// chunks. Each chunk counts the records that point into it and is recycled once none
/// does and every older chunk is gone. Records leave the reorder buffer nearly in arrival
/// order, so chunks free in order; a straggler keeps its chunk (and the later ones) only
/// until it is applied, which the allowed lateness bounds.
///
/// Why not an `Arc` per event: with the default 45 s lateness every record is held, and
/// an allocation, a copy, and later a cold reference-count drop and free per event were
/// about a third of the stateful engine's cost in the state bench. Appending to a chunk is
/// a sequential copy, and releasing is a counter in a chunk header that stays in cache.
/// An event whose records go to several shards still shares one `Arc` ([`Held::Shared`]):
/// a copy into each shard's log cost more than that.
#[derive(Debug)]
pub struct TextLog {
    /// Live chunks: (bytes, records pointing in); `chunks[i]` has id `base + i`.
    chunks: VecDeque<(Vec<u8>, u32)>,
    base: u64,
    /// One emptied chunk kept for reuse, so a steady stream allocates nothing.
    spare: Option<Vec<u8>>,
    /// Bytes of chunk capacity held (spare included).
    chunk_bytes: usize,
    /// Text bytes of the records pointing in, counted per record (as the state's byte cap
    /// has always counted a held record's event).
    held: usize,
    /// Size of a chunk.
    chunk: usize,
}

impl Default for TextLog {
    fn default() -> TextLog {
        TextLog::new(LOG_CHUNK_MAX * 16)
    }
}

impl TextLog {
    /// A log whose chunks are a sixteenth of `cap` (a shard's share of the state's byte
    /// cap), within 4 KiB..256 KiB: a small cap is not used up by one chunk.
    pub fn new(cap: usize) -> TextLog {
        TextLog {
            chunk: (cap / 16).clamp(LOG_CHUNK_MIN, LOG_CHUNK_MAX),
            chunks: VecDeque::new(),
            base: 0,
            spare: None,
            chunk_bytes: 0,
            held: 0,
        }
    }

    /// Appends `text` for `refs` records; returns its position.
    pub fn push(&mut self, text: &str, refs: u32) -> TextRef {
        let b = text.as_bytes();
        let fits = self
            .chunks
            .back()
            .is_some_and(|(c, _)| c.capacity() - c.len() >= b.len());
        if !fits {
            let want = b.len().max(self.chunk);
            let buf = match self.spare.take() {
                // Already counted in `bytes`.
                Some(mut v) if v.capacity() >= want => {
                    v.clear();
                    v
                }
                other => {
                    if let Some(v) = other {
                        self.chunk_bytes -= v.capacity();
                    }
                    let v = Vec::with_capacity(want);
                    self.chunk_bytes += v.capacity();
                    v
                }
            };
            self.chunks.push_back((buf, 0));
        }
        let id = self.base + self.chunks.len() as u64 - 1;
        let (buf, live) = self.chunks.back_mut().expect("a chunk was just ensured");
        let off = buf.len() as u32;
        buf.extend_from_slice(b);
        *live += refs;
        self.held += b.len() * refs as usize;
        TextRef {
            chunk: id,
            off,
            len: b.len() as u32,
        }
    }

    /// One more record points at `r`.
    pub fn retain(&mut self, r: TextRef) {
        let i = r.chunk.checked_sub(self.base);
        if let Some((_, live)) = i.and_then(|i| self.chunks.get_mut(i as usize)) {
            *live += 1;
            self.held += r.len as usize;
        }
    }

    /// The text at `r` (`None` if it was released, which would be a bookkeeping bug).
    pub fn get(&self, r: TextRef) -> Option<&str> {
        let i = r.chunk.checked_sub(self.base)? as usize;
        let (buf, _) = self.chunks.get(i)?;
        let bytes = buf.get(r.off as usize..(r.off as usize).checked_add(r.len as usize)?)?;
        std::str::from_utf8(bytes).ok()
    }

    /// A record pointing at `r` is being applied: its text no longer counts against the
    /// byte cap (so that applying it does not evict groups for it), though it stays
    /// readable until [`TextLog::release`].
    pub fn uncount(&mut self, r: TextRef) {
        self.held = self.held.saturating_sub(r.len as usize);
    }

    /// One record pointing at `r` is gone (after [`TextLog::uncount`]); frees the chunks
    /// nothing points into any more.
    pub fn release(&mut self, r: TextRef) {
        let Some(i) = r.chunk.checked_sub(self.base) else {
            return;
        };
        if let Some((_, live)) = self.chunks.get_mut(i as usize) {
            *live = live.saturating_sub(1);
        }
        // Chunk ids only grow, so a ref can never point at a later text.
        while let Some((_, 0)) = self.chunks.front() {
            let Some((buf, _)) = self.chunks.pop_front() else {
                break;
            };
            self.base += 1;
            if self.spare.is_none() && buf.capacity() == self.chunk {
                self.spare = Some(buf);
            } else {
                self.chunk_bytes -= buf.capacity();
            }
        }
    }

    /// What the held records' texts count against the state's byte cap: their lengths,
    /// per record. The chunks around them cost a little more (the one being filled, one
    /// spare, and chunks a straggler keeps until it is applied): see [`TextLog::capacity`].
    pub fn bytes(&self) -> usize {
        self.held
    }

    /// Bytes of chunk memory held (spare included).
    pub fn capacity(&self) -> usize {
        self.chunk_bytes
    }
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
    /// Event texts of the held records.
    pub log: TextLog,
    /// Estimated bytes held.
    pub bytes: usize,
    /// Largest watermark at the last sweep.
    pub swept_at: i64,
}

impl Shard {
    /// A shard for `n` correlations, with `cap` bytes its share of the state's cap.
    pub fn new(n: usize, cap: usize) -> Shard {
        Shard {
            groups: (0..n).map(|_| KeyMap::default()).collect(),
            terms: (0..n).map(|_| Baseline::default()).collect(),
            supp: (0..n).map(|_| KeyMap::default()).collect(),
            pending: Vec::new(),
            log: TextLog::new(cap),
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
    run: VecDeque<Record>,
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
    pub fn insert(&mut self, r: Record) -> Option<Record> {
        let k = r.pkey();
        match self.run.back() {
            None if self.side.is_empty() => {
                self.run.push_back(r);
                return None;
            }
            Some(b) if b.pkey() < k => {
                self.run.push_back(r);
                return None;
            }
            _ => {}
        }
        match self.run.binary_search_by(|x| x.pkey().cmp(&k)) {
            Ok(i) => self.run.get_mut(i).map(|e| std::mem::replace(e, r)),
            Err(i) if self.run.len() - i <= RUN_INSERT_WINDOW && !self.side.contains_key(&k) => {
                self.run.insert(i, r);
                None
            }
            Err(_) => self.side.insert(k, r),
        }
    }

    /// The smallest time held (what draining and shedding look at).
    pub fn first_time(&self) -> Option<i64> {
        match (self.run.front(), self.side.first_key_value()) {
            (Some(a), Some((b, _))) => Some(a.t.min(b.t)),
            (Some(a), None) => Some(a.t),
            (None, Some((b, _))) => Some(b.t),
            (None, None) => None,
        }
    }

    /// Removes the record with the smallest key.
    pub fn pop_first(&mut self) -> Option<Record> {
        let from_side = match (self.run.front(), self.side.first_key_value()) {
            (Some(a), Some((b, _))) => *b < a.pkey(),
            (None, Some(_)) => true,
            _ => false,
        };
        if from_side {
            self.side.pop_first().map(|(_, r)| r)
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
        self.run.iter().chain(self.side.values())
    }
}

/// Bytes one group costs beyond its heap: the table slot (key, value, control byte at the
/// table's typical load).
pub const GROUP_SLOT_BYTES: usize = (16 + std::mem::size_of::<Group>() + 1) * 8 / 7;

/// Bytes one pending record costs (its event text is counted in the shard's text log).
pub const RECORD_BYTES: usize = std::mem::size_of::<Record>();

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
    pub pending: Vec<SnapRecord>,
}

/// Snapshot format version.
pub const SNAPSHOT_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_log_reads_back_and_frees_chunks_in_order() {
        // 4 KiB chunks.
        let mut log = TextLog::new(64 * 1024);
        let texts: Vec<String> = (0..100).map(|i| format!("{i:04}").repeat(100)).collect();
        let refs: Vec<TextRef> = texts.iter().map(|t| log.push(t, 1)).collect();
        for (t, r) in texts.iter().zip(&refs) {
            assert_eq!(log.get(*r), Some(t.as_str()));
        }
        assert_eq!(log.bytes(), 100 * 400);
        let chunks = log.chunks.len();
        assert!(chunks >= 10, "{chunks} chunks of 4 KiB for 40 kB");
        // A straggler in the first chunk keeps every chunk.
        for r in &refs[1..50] {
            log.uncount(*r);
            log.release(*r);
        }
        assert_eq!(log.chunks.len(), chunks);
        assert_eq!(log.get(refs[0]).map(str::len), Some(400));
        log.uncount(refs[0]);
        log.release(refs[0]);
        assert!(log.chunks.len() < chunks, "released chunks are freed");
        // A freed text is gone; a newer one is still there.
        assert_eq!(log.get(refs[0]), None);
        assert_eq!(log.get(refs[60]), Some(texts[60].as_str()));
        for r in &refs[50..] {
            log.uncount(*r);
            log.release(*r);
        }
        assert_eq!(log.bytes(), 0);
        assert!(log.chunks.is_empty());
        // One emptied chunk is kept for reuse, no more.
        assert_eq!(log.capacity(), 4 * 1024);
        let r = log.push("again", 2);
        assert_eq!(log.capacity(), 4 * 1024, "the spare chunk was reused");
        assert_eq!(log.get(r), Some("again"));
        assert_eq!(log.get(refs[99]), None, "ids never repeat");
        assert_eq!(log.bytes(), 10, "counted once per record");
        log.retain(r);
        assert_eq!(log.bytes(), 15);
        for _ in 0..3 {
            log.uncount(r);
            log.release(r);
        }
        assert_eq!(log.bytes(), 0);
        assert!(log.chunks.is_empty());
    }

    #[test]
    fn a_held_record_stays_small() {
        // Its size is most of the reorder buffer's memory traffic (see Record::pkey).
        eprintln!("Record: {} B", std::mem::size_of::<Record>());
        assert!(std::mem::size_of::<Record>() <= 112);
    }

    #[test]
    fn interning_is_per_instance_and_by_name() {
        let (a, b) = (Clocks::default(), Clocks::default());
        let x: Arc<str> = Arc::from("x");
        let y: Arc<str> = Arc::from("y");
        assert_eq!(a.intern(None), 0);
        assert_eq!(a.intern(Some(&x)), 1);
        // The same name in another Arc is the same cluster.
        assert_eq!(a.intern(Some(&Arc::from("x"))), 1);
        // Another instance on the same thread does not see the first one's last cluster.
        assert_eq!(b.intern(Some(&y)), 0);
        assert_eq!(a.intern(Some(&y)), 2);
        assert_eq!(b.intern(Some(&x)), 1);
        assert_eq!(a.intern(Some(&x)), 1);
        assert_eq!(a.intern(None), 0);
        assert_eq!(b.intern(None), 2);
    }

    #[test]
    fn a_text_larger_than_a_chunk_gets_its_own() {
        let mut log = TextLog::new(64 * 1024);
        let big = "x".repeat(10_000);
        let a = log.push("small", 1);
        let b = log.push(&big, 1);
        let c = log.push("after", 1);
        assert_eq!(log.get(a), Some("small"));
        assert_eq!(log.get(b), Some(big.as_str()));
        assert_eq!(log.get(c), Some("after"));
        for r in [b, c, a] {
            log.uncount(r);
            log.release(r);
        }
        // The big chunk is not kept as the spare.
        assert!(log.capacity() <= 4 * 1024, "{}", log.capacity());
    }
}
