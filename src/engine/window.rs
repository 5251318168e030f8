//! Per-group window state for the correlation types, sized by what the window needs.
//!
//! All times are event times in microseconds since the epoch. A window of length `span`
//! ending at `t` holds the events with time in `(t - span, t]`: an event exactly `span`
//! before the newest one has left the window (see docs/correlation.md, "Window edges").
//!
//! Memory per group is what the condition needs, never the events themselves:
//! - `event_count` with a lower bound of at most [`RING_MAX`]: the times (and auditIDs) of
//!   the most recent `max(threshold, ids)` events: exact at the window edge.
//! - `event_count` with a larger threshold: [`BUCKETS`] sub-bucket counters; the window
//!   edge is then precise to `span / (BUCKETS - 1)` and never counts an event older than
//!   the window.
//! - `value_count` with a lower bound: the `threshold` most recently seen distinct values,
//!   each with its last time. If `threshold` distinct values are in the window, these are
//!   exactly them, so the count is exact with bounded memory.
//! - Upper-bounded conditions (`lt`, `lte`, `eq`): a tumbling window from the group's
//!   first event, decided when it closes, with a count (and a distinct set capped at one
//!   more than the bound).
//! - `temporal`: the last time each referenced rule matched; `temporal_ordered`: the
//!   latest-starting partial chain for each prefix of the sequence.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Largest lower-bound threshold kept as exact timestamps.
pub const RING_MAX: u64 = 32;
/// Sub-buckets per window for large thresholds.
pub const BUCKETS: usize = 32;

/// An auditID stored compactly: UUIDs (nearly all of them) in 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompactId {
    /// A UUID.
    Uuid([u8; 16]),
    /// Anything else (the Audit-ID header is client-controlled).
    Text(Box<str>),
}

impl CompactId {
    /// Compacts an auditID.
    pub fn new(s: &str) -> CompactId {
        // Only the canonical hyphenated lowercase form round-trips exactly.
        match parse_lower_uuid(s.as_bytes()) {
            Some(b) => CompactId::Uuid(b),
            None => CompactId::Text(s.into()),
        }
    }

    /// The auditID as text.
    pub fn render(&self) -> String {
        match self {
            CompactId::Uuid(b) => uuid::Uuid::from_bytes(*b).hyphenated().to_string(),
            CompactId::Text(t) => t.to_string(),
        }
    }
}

/// The 16 bytes of a canonical lowercase hyphenated UUID, or `None` for any other text.
///
/// Written out rather than `uuid::Uuid::parse_str` (which accepts more forms, so the
/// result had to be checked again for the canonical one): this runs once per event that
/// feeds a correlation, and the general parser was a sixth of the correlator's time in a
/// profile of the state bench.
fn parse_lower_uuid(s: &[u8]) -> Option<[u8; 16]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if s.len() != 36 || s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut i = 0;
    for o in &mut out {
        if matches!(i, 8 | 13 | 18 | 23) {
            i += 1;
        }
        *o = (nibble(s[i])? << 4) | nibble(s[i + 1])?;
        i += 2;
    }
    Some(out)
}

/// One contributing event: time and auditID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    /// Event time (µs).
    pub t: i64,
    /// auditID.
    pub id: CompactId,
}

/// Inserts `h` into `v` (sorted by time) keeping at most `cap` of the most recent.
/// Returns false when `h` is older than everything kept in a full ring (not stored).
fn push_recent(v: &mut Vec<Hit>, h: Hit, cap: usize) -> bool {
    if cap == 0 {
        return false;
    }
    if v.len() >= cap {
        if v.first().is_some_and(|f| h.t < f.t) {
            return false;
        }
        v.remove(0);
    } else if v.len() == v.capacity() {
        // Grow 1, 2, 4, ... up to `cap` exactly: most groups see one or two events, and
        // the default growth would reserve four at once.
        v.reserve_exact((cap - v.len()).min(v.len().max(1)));
    }
    // Nearly always the newest: append without searching.
    let pos = if v.last().is_none_or(|l| l.t <= h.t) {
        v.len()
    } else {
        v.partition_point(|x| x.t <= h.t)
    };
    v.insert(pos, h);
    true
}

/// Index of the first hit after `window_start` in `v` (sorted by time): usually the first,
/// found without a search (nor touching the rest of a long ring).
fn first_in_window(v: &[Hit], window_start: i64) -> usize {
    if v.first().is_none_or(|f| f.t > window_start) {
        0
    } else {
        v.partition_point(|h| h.t <= window_start)
    }
}

/// Sub-bucketed counters for large `event_count` thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Buckets {
    /// Bucket width (µs).
    pub width: i64,
    /// Index (time / width) of the newest bucket.
    pub newest: i64,
    /// Counters, slot `index % BUCKETS`.
    /// Inline rather than a `Vec`: one pointer fewer to follow per update (the same
    /// JSON array in a snapshot).
    pub counts: [u32; BUCKETS],
    /// Most recent contributing events.
    pub hits: Vec<Hit>,
}

impl Buckets {
    fn new(span: i64) -> Buckets {
        Buckets {
            // BUCKETS - 1 full buckets cover the span, the current partial one fits the last slot.
            width: (span / (BUCKETS as i64 - 1)).max(1),
            newest: i64::MIN,
            counts: [0; BUCKETS],
            hits: Vec::new(),
        }
    }

    /// Adds one event at `t`; false when `t` is older than the buckets reach.
    fn add(&mut self, t: i64) -> bool {
        let bi = t.div_euclid(self.width);
        if self.newest == i64::MIN {
            self.newest = bi;
        }
        if bi > self.newest {
            let steps = (bi - self.newest).min(BUCKETS as i64);
            for k in 1..=steps {
                self.counts[(self.newest + k).rem_euclid(BUCKETS as i64) as usize] = 0;
            }
            self.newest = bi;
        }
        if bi <= self.newest - BUCKETS as i64 {
            return false;
        }
        let slot = bi.rem_euclid(BUCKETS as i64) as usize;
        self.counts[slot] = self.counts[slot].saturating_add(1);
        true
    }

    /// Events in buckets lying wholly inside `(t - span, t]`.
    fn count(&self, t: i64, span: i64) -> u64 {
        let hi = t.div_euclid(self.width).min(self.newest);
        // The bucket holding `t - span` may hold older events: exclude it.
        let lo = (t - span).div_euclid(self.width) + 1;
        let lo = lo.max(self.newest - BUCKETS as i64 + 1);
        (lo..=hi)
            .map(|b| u64::from(self.counts[b.rem_euclid(BUCKETS as i64) as usize]))
            .sum()
    }
}

/// A tumbling window for upper-bounded conditions, decided when it closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tumbling {
    /// Window start: the first event's time (µs); the window is `[start, start + span)`.
    pub start: i64,
    /// Events in the window.
    pub count: u64,
    /// Distinct values (value_count), capped at the decisive count.
    pub values: Vec<Box<str>>,
    /// Most recent contributing events.
    pub hits: Vec<Hit>,
    /// The newest event, to build the alert from when the window closes.
    pub last: Option<Arc<super::correlate::EvRef>>,
}

/// A counted value and its hash. Looking a value up in a group's set compares the hashes
/// kept inline, rather than following the pointer of every value held (a cache miss each
/// on a large state). Serialised as the plain string.
#[derive(Debug, Clone)]
pub struct Counted {
    hash: u64,
    text: Box<str>,
}

impl Counted {
    /// Wraps a value.
    pub fn new(text: &str) -> Counted {
        Counted {
            hash: xxhash_rust::xxh3::xxh3_64(text.as_bytes()),
            text: text.into(),
        }
    }

    /// Whether this is `text`, whose hash is `hash`.
    fn is(&self, hash: u64, text: &str) -> bool {
        self.hash == hash && &*self.text == text
    }

    /// The value.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Counted {
    fn eq(&self, other: &Counted) -> bool {
        self.text == other.text
    }
}

impl Serialize for Counted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Counted, D::Error> {
        let text = String::deserialize(d)?;
        Ok(Counted::new(&text))
    }
}

/// Bounded distinct set for lower-bounded `value_count`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distinct {
    /// (value, last time seen), at most the threshold many, most recent kept.
    pub values: Vec<(Counted, i64)>,
    /// Most recent contributing events.
    pub hits: Vec<Hit>,
    /// Events applied since the group started (some may have left the window since).
    #[serde(default)]
    pub seen: u64,
}

/// One partial chain of a `temporal_ordered` sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    /// Time of the first step (µs).
    pub start: i64,
    /// The steps so far.
    pub steps: Vec<Hit>,
}

/// The state of one group of one correlation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupState {
    /// Exact recent times (event_count, small lower-bound threshold).
    Ring(Vec<Hit>),
    /// Sub-bucket counters (event_count, large threshold).
    Buckets(Box<Buckets>),
    /// Upper-bounded event_count / value_count.
    Tumbling(Box<Tumbling>),
    /// Lower-bounded value_count.
    Distinct(Box<Distinct>),
    /// temporal: last hit per referenced rule position.
    /// (A `Vec`, not boxed: it fits the enum, and a box is one more pointer to follow.)
    Temporal(Vec<Option<Hit>>),
    /// temporal_ordered: best chain per prefix length.
    Ordered(Vec<Option<Chain>>),
}

/// A group: its state, the newest event time applied, and its cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Newest event time applied (µs): staleness for eviction and expiry.
    pub last: i64,
    /// Interned cluster id (the group key includes the cluster).
    pub cluster: u16,
    /// The window state.
    pub st: GroupState,
}

/// How a group is shaped, derived once per correlation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// event_count, exact ring of this many entries (threshold and ids).
    Ring {
        /// Entries kept.
        keep: usize,
    },
    /// event_count, buckets.
    Buckets,
    /// Upper-bounded (event_count or value_count with `cap` distinct values kept).
    Tumbling {
        /// Distinct values kept (0 for event_count).
        cap: usize,
    },
    /// Lower-bounded value_count keeping `cap` distinct values.
    Distinct {
        /// Distinct values kept.
        cap: usize,
    },
    /// temporal over `n` rule positions.
    Temporal {
        /// Positions.
        n: usize,
    },
    /// temporal_ordered over `n` steps.
    Ordered {
        /// Steps.
        n: usize,
    },
}

/// What applying one event to a group produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing to report.
    Quiet,
    /// The condition holds: report and reset the group.
    Fire(Firing),
    /// The event was older than anything the state can still place (counted as too late).
    TooOld,
}

/// The facts of a firing, for the alert's `correlation` object.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Firing {
    /// The count (events, distinct values or distinct rules).
    pub count: u64,
    /// Window start (µs).
    pub start: i64,
    /// Window end (µs): the triggering event's time, or the close time for tumbling windows.
    pub end: i64,
    /// Distinct values (value_count).
    pub values: Vec<String>,
    /// Contributing events, most recent last (capped).
    pub hits: Vec<Hit>,
    /// Contributing events in total.
    pub total: u64,
    /// For temporal types: the rule position of each hit.
    pub positions: Vec<usize>,
}

impl Group {
    /// A fresh group.
    pub fn new(shape: Shape, span: i64, t: i64, cluster: u16) -> Group {
        let st = match shape {
            Shape::Ring { .. } => GroupState::Ring(Vec::new()),
            Shape::Buckets => GroupState::Buckets(Box::new(Buckets::new(span))),
            Shape::Tumbling { .. } => GroupState::Tumbling(Box::new(Tumbling {
                start: t,
                count: 0,
                values: Vec::new(),
                hits: Vec::new(),
                last: None,
            })),
            Shape::Distinct { .. } => GroupState::Distinct(Box::new(Distinct {
                values: Vec::new(),
                hits: Vec::new(),
                seen: 0,
            })),
            Shape::Temporal { n } => GroupState::Temporal(vec![None; n]),
            Shape::Ordered { n } => GroupState::Ordered(vec![None; n]),
        };
        Group {
            last: t,
            cluster,
            st,
        }
    }

    /// Approximate heap bytes owned by this group (for the memory cap). Cheap, as it runs
    /// on every update: strings are estimated, not summed.
    pub fn heap_bytes(&self) -> usize {
        let hits = |v: &Vec<Hit>| v.capacity() * std::mem::size_of::<Hit>();
        match &self.st {
            GroupState::Ring(v) => hits(v),
            GroupState::Buckets(b) => std::mem::size_of::<Buckets>() + hits(&b.hits),
            GroupState::Tumbling(w) => {
                std::mem::size_of::<Tumbling>()
                    + w.values.capacity() * 40
                    + hits(&w.hits)
                    + w.last.as_ref().map_or(0, |e| e.raw.len())
            }
            GroupState::Distinct(d) => {
                std::mem::size_of::<Distinct>()
                    + d.values.capacity() * (std::mem::size_of::<(Counted, i64)>() + 24)
                    + hits(&d.hits)
            }
            GroupState::Temporal(v) => v.len() * std::mem::size_of::<Option<Hit>>(),
            GroupState::Ordered(v) => v
                .iter()
                .flatten()
                .map(|c| std::mem::size_of::<Chain>() + hits(&c.steps))
                .sum::<usize>(),
        }
    }

    /// Whether the window can still change: false once `wm - span` has passed the newest
    /// event (lower-bound types) or the tumbling window has closed.
    pub fn expired(&self, wm: i64, span: i64) -> bool {
        match &self.st {
            GroupState::Tumbling(w) => w.start.saturating_add(span) <= wm,
            _ => self.last <= wm.saturating_sub(span),
        }
    }

    /// For a tumbling window that has closed by `wm`: the firing, if the condition holds.
    pub fn close(
        &mut self,
        wm: i64,
        span: i64,
        cond: &crate::rules::correlation::Condition,
        distinct: bool,
    ) -> Option<Firing> {
        let GroupState::Tumbling(w) = &mut self.st else {
            return None;
        };
        let end = w.start.saturating_add(span);
        if end > wm {
            return None;
        }
        let n = if distinct {
            w.values.len() as u64
        } else {
            w.count
        };
        if w.count == 0 || !cond.holds(n) {
            return None;
        }
        Some(Firing {
            count: n,
            start: w.start,
            end,
            values: w.values.iter().map(|v| v.to_string()).collect(),
            hits: std::mem::take(&mut w.hits),
            total: w.count,
            positions: Vec::new(),
        })
    }

    /// Applies one event: time `t`, auditID, rule position `pos`, counted value `value`
    /// (value_count). The caller resets the group after [`Outcome::Fire`].
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        shape: Shape,
        span: i64,
        cond: &crate::rules::correlation::Condition,
        ids_cap: usize,
        t: i64,
        id: &CompactId,
        pos: usize,
        value: Option<&str>,
    ) -> Outcome {
        let newest = self.last.max(t);
        self.last = newest;
        let hit = Hit { t, id: id.clone() };
        let window_start = newest.saturating_sub(span);
        match (&mut self.st, shape) {
            (GroupState::Ring(v), Shape::Ring { keep }) => {
                if !push_recent(v, hit, keep) {
                    return Outcome::TooOld;
                }
                let count = (v.len() - first_in_window(v, window_start)) as u64;
                if count >= cond.min_count() && cond.holds(count) {
                    let inwin: Vec<Hit> =
                        v.iter().filter(|h| h.t > window_start).cloned().collect();
                    let skip = inwin.len().saturating_sub(ids_cap);
                    return Outcome::Fire(Firing {
                        count,
                        start: inwin.first().map_or(t, |h| h.t),
                        end: newest,
                        hits: inwin[skip..].to_vec(),
                        total: count,
                        ..Default::default()
                    });
                }
                Outcome::Quiet
            }
            (GroupState::Buckets(b), _) => {
                if !b.add(t) {
                    return Outcome::TooOld;
                }
                push_recent(&mut b.hits, hit, ids_cap);
                let count = b.count(newest, span);
                if cond.holds(count) {
                    let hits: Vec<Hit> = b
                        .hits
                        .iter()
                        .filter(|h| h.t > window_start)
                        .cloned()
                        .collect();
                    return Outcome::Fire(Firing {
                        count,
                        start: hits.first().map_or(window_start + 1, |h| h.t),
                        end: newest,
                        hits,
                        total: count,
                        ..Default::default()
                    });
                }
                Outcome::Quiet
            }
            (GroupState::Tumbling(w), Shape::Tumbling { cap }) => {
                if t < w.start {
                    // Late but still held: it belongs to this window if the window would
                    // have started no earlier than it.
                    if t.saturating_add(span) <= newest {
                        return Outcome::TooOld;
                    }
                    w.start = t;
                }
                w.count += 1;
                push_recent(&mut w.hits, hit, ids_cap);
                if let Some(v) = value {
                    if w.values.len() < cap && !w.values.iter().any(|x| &**x == v) {
                        w.values.push(v.into());
                    }
                }
                Outcome::Quiet
            }
            (GroupState::Distinct(d), Shape::Distinct { cap }) => {
                let Some(v) = value else {
                    return Outcome::Quiet;
                };
                d.seen += 1;
                let vh = xxhash_rust::xxh3::xxh3_64(v.as_bytes());
                match d.values.iter_mut().find(|(x, _)| x.is(vh, v)) {
                    Some(e) => e.1 = e.1.max(t),
                    None => {
                        if d.values.len() == d.values.capacity() {
                            let grow = (cap + 1 - d.values.len()).min(d.values.len().max(1));
                            d.values.reserve_exact(grow);
                        }
                        d.values.push((
                            Counted {
                                hash: vh,
                                text: v.into(),
                            },
                            t,
                        ));
                        if d.values.len() > cap {
                            // Drop the least recently seen value: if `cap` distinct values are
                            // in the window, they are the `cap` most recent ones.
                            if let Some((i, _)) =
                                d.values.iter().enumerate().min_by_key(|(_, (_, lt))| *lt)
                            {
                                d.values.swap_remove(i);
                            }
                        }
                    }
                }
                push_recent(&mut d.hits, hit, ids_cap);
                let count = d.values.iter().filter(|(_, lt)| *lt > window_start).count() as u64;
                if cond.holds(count) {
                    let mut vals: Vec<(String, i64)> = d
                        .values
                        .iter()
                        .filter(|(_, lt)| *lt > window_start)
                        .map(|(v, lt)| (v.as_str().to_string(), *lt))
                        .collect();
                    vals.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
                    let hits: Vec<Hit> = d
                        .hits
                        .iter()
                        .filter(|h| h.t > window_start)
                        .cloned()
                        .collect();
                    return Outcome::Fire(Firing {
                        count,
                        start: vals
                            .first()
                            .map_or(t, |v| v.1)
                            .min(hits.first().map_or(i64::MAX, |h| h.t)),
                        end: newest,
                        values: vals.into_iter().map(|v| v.0).collect(),
                        total: d.seen,
                        hits,
                        ..Default::default()
                    });
                }
                Outcome::Quiet
            }
            (GroupState::Temporal(last), _) => {
                if let Some(slot) = last.get_mut(pos) {
                    if slot.as_ref().is_none_or(|h| h.t <= t) {
                        *slot = Some(hit);
                    }
                }
                let live: Vec<(usize, &Hit)> = last
                    .iter()
                    .enumerate()
                    .filter_map(|(i, h)| h.as_ref().filter(|h| h.t > window_start).map(|h| (i, h)))
                    .collect();
                let count = live.len() as u64;
                if cond.holds(count) {
                    let mut hits: Vec<(usize, Hit)> =
                        live.into_iter().map(|(i, h)| (i, h.clone())).collect();
                    hits.sort_by_key(|(i, h)| (h.t, *i));
                    return Outcome::Fire(Firing {
                        count,
                        start: hits.first().map_or(t, |h| h.1.t),
                        end: newest,
                        total: hits.len() as u64,
                        positions: hits.iter().map(|h| h.0).collect(),
                        hits: hits.into_iter().map(|h| h.1).collect(),
                        ..Default::default()
                    });
                }
                Outcome::Quiet
            }
            (GroupState::Ordered(prefix), Shape::Ordered { n }) => {
                if pos == 0 {
                    // The latest start leaves the most room for the remaining steps.
                    if prefix[0].as_ref().is_none_or(|c| c.start <= t) {
                        prefix[0] = Some(Chain {
                            start: t,
                            steps: vec![hit],
                        });
                    }
                } else if pos < n {
                    let ext = prefix[pos - 1]
                        .as_ref()
                        .filter(|c| {
                            c.start > t.saturating_sub(span)
                                && c.steps.last().is_some_and(|s| s.t <= t)
                        })
                        .cloned();
                    if let Some(mut c) = ext {
                        c.steps.push(hit);
                        if pos == n - 1 {
                            let total = c.steps.len() as u64;
                            return Outcome::Fire(Firing {
                                count: total,
                                start: c.start,
                                end: t,
                                total,
                                positions: (0..n).collect(),
                                hits: c.steps,
                                ..Default::default()
                            });
                        }
                        if prefix[pos].as_ref().is_none_or(|old| old.start <= c.start) {
                            prefix[pos] = Some(c);
                        }
                    }
                }
                Outcome::Quiet
            }
            _ => Outcome::Quiet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::correlation::Condition;

    const S: i64 = 1_000_000; // one second in µs

    #[test]
    fn compact_ids_keep_exactly_the_canonical_uuid_form() {
        for _ in 0..200 {
            let u = uuid::Uuid::new_v4();
            let text = u.hyphenated().to_string();
            assert_eq!(CompactId::new(&text), CompactId::Uuid(*u.as_bytes()));
            assert_eq!(CompactId::new(&text).render(), text);
        }
        let u = uuid::Uuid::new_v4();
        // Every other form stays text, so that rendering gives back what was sent.
        for other in [
            u.hyphenated().to_string().to_uppercase(),
            u.simple().to_string(),
            u.braced().to_string(),
            u.urn().to_string(),
            "0123456-89ab-cdef-0123-456789abcdef0".to_string(), // dash one early
            "0123456789ab-cdef-0123-456789abcdefg".to_string(),
            "g1234567-89ab-cdef-0123-456789abcdef".to_string(),
            "01234567-89ab-cdef-0123-456789abcde".to_string(),
            "ünïcode-89ab-cdef-0123-456789abcdef".to_string(),
            String::new(),
        ] {
            assert_eq!(
                CompactId::new(&other),
                CompactId::Text(other.clone().into())
            );
            assert_eq!(CompactId::new(&other).render(), other);
        }
    }

    fn gte(n: u64) -> Condition {
        Condition {
            gte: Some(n),
            ..Default::default()
        }
    }

    fn run(
        shape: Shape,
        span: i64,
        cond: Condition,
        evs: &[(i64, usize, Option<&str>)],
    ) -> Vec<Option<Firing>> {
        let mut g: Option<Group> = None;
        evs.iter()
            .enumerate()
            .map(|(i, (t, pos, v))| {
                let grp = g.get_or_insert_with(|| Group::new(shape, span, *t, 0));
                match grp.apply(
                    shape,
                    span,
                    &cond,
                    10,
                    *t,
                    &CompactId::new(&format!("id{i}")),
                    *pos,
                    *v,
                ) {
                    Outcome::Fire(f) => {
                        g = None;
                        Some(f)
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// The window is `(t - span, t]`: an event exactly one span before the newest has left.
    #[test]
    fn ring_window_edge_is_exclusive() {
        let shape = Shape::Ring { keep: 10 };
        let out = run(
            shape,
            10 * S,
            gte(3),
            &[(0, 0, None), (5 * S, 0, None), (10 * S, 0, None)],
        );
        assert!(
            out.iter().all(Option::is_none),
            "event at exactly t-span must not count"
        );
        let out = run(
            shape,
            10 * S,
            gte(3),
            &[(1, 0, None), (5 * S, 0, None), (10 * S, 0, None)],
        );
        let f = out[2].as_ref().expect("fires exactly at the threshold");
        assert_eq!((f.count, f.start, f.end, f.total), (3, 1, 10 * S, 3));
        assert_eq!(
            f.hits.iter().map(|h| h.id.render()).collect::<Vec<_>>(),
            ["id0", "id1", "id2"]
        );
    }

    #[test]
    fn ring_out_of_order_and_too_old() {
        let shape = Shape::Ring { keep: 2 };
        let mut g = Group::new(shape, 10 * S, 5 * S, 0);
        assert_eq!(
            g.apply(
                shape,
                10 * S,
                &gte(3),
                2,
                5 * S,
                &CompactId::new("a"),
                0,
                None
            ),
            Outcome::Quiet
        );
        assert_eq!(
            g.apply(
                shape,
                10 * S,
                &gte(3),
                2,
                6 * S,
                &CompactId::new("b"),
                0,
                None
            ),
            Outcome::Quiet
        );
        // Older than everything in a full ring: cannot be placed.
        assert_eq!(
            g.apply(
                shape,
                10 * S,
                &gte(3),
                2,
                4 * S,
                &CompactId::new("c"),
                0,
                None
            ),
            Outcome::TooOld
        );
        let shape = Shape::Ring { keep: 5 };
        let out = run(shape, 10 * S, gte(2), &[(9 * S, 0, None), (3 * S, 0, None)]);
        assert!(
            out[1].is_some(),
            "an out-of-order event inside the window counts"
        );
    }

    #[test]
    fn buckets_count_large_thresholds_within_precision() {
        let shape = Shape::Buckets;
        let span = 31 * S; // width = 1 s
        let mut evs: Vec<(i64, usize, Option<&str>)> =
            (0..99).map(|i| (i * S / 10, 0, None)).collect();
        // 99 events within 10 s: below 100.
        assert!(run(shape, span, gte(100), &evs).iter().all(Option::is_none));
        evs.push((10 * S, 0, None));
        assert!(run(shape, span, gte(100), &evs)[99].is_some());
        // Spread the same 100 events over 40 s: never 100 in a 31 s window.
        let spread: Vec<(i64, usize, Option<&str>)> =
            (0..100).map(|i| (i * 4 * S / 10, 0, None)).collect();
        assert!(run(shape, span, gte(100), &spread)
            .iter()
            .all(Option::is_none));
    }

    #[test]
    fn distinct_is_exact_with_bounded_memory() {
        let shape = Shape::Distinct { cap: 3 };
        let evs = [
            (0, 0, Some("a")),
            (S, 0, Some("b")),
            (2 * S, 0, Some("a")),
            (3 * S, 0, Some("b")),
            (12 * S, 0, Some("c")),
            (12 * S + S / 2, 0, Some("d")),
        ];
        let out = run(shape, 10 * S, gte(3), &evs);
        // At 12 s the window (2 s, 12 s] holds b and c: a, last seen exactly at 2 s, is out.
        // At 12.5 s it holds b (3 s), c, d: three distinct.
        assert!(out[..5].iter().all(Option::is_none));
        let f = out[5].as_ref().unwrap();
        assert_eq!(f.values, ["b", "c", "d"]);
        assert_eq!(f.count, 3);
    }

    #[test]
    fn tumbling_decides_upper_bounds_at_close() {
        let cond = Condition {
            lt: Some(3),
            ..Default::default()
        };
        let shape = Shape::Tumbling { cap: 0 };
        let mut g = Group::new(shape, 10 * S, 0, 0);
        for t in [0, S] {
            assert_eq!(
                g.apply(shape, 10 * S, &cond, 5, t, &CompactId::new("x"), 0, None),
                Outcome::Quiet
            );
        }
        assert!(
            g.close(10 * S - 1, 10 * S, &cond, false).is_none(),
            "not closed yet"
        );
        let f = g.close(10 * S, 10 * S, &cond, false).unwrap();
        assert_eq!((f.count, f.start, f.end), (2, 0, 10 * S));
    }

    #[test]
    fn temporal_any_order_and_ordered_sequence() {
        let cond = gte(2);
        let out = run(
            Shape::Temporal { n: 2 },
            10 * S,
            cond,
            &[(0, 1, None), (5 * S, 0, None)],
        );
        assert_eq!(out[1].as_ref().unwrap().positions, [1, 0]);
        // Ordered: step 1 before step 0 does not complete.
        let o = Shape::Ordered { n: 2 };
        assert!(run(o, 10 * S, cond, &[(0, 1, None), (5 * S, 0, None)])
            .iter()
            .all(Option::is_none));
        let out = run(o, 10 * S, cond, &[(0, 0, None), (5 * S, 1, None)]);
        assert_eq!(out[1].as_ref().unwrap().hits.len(), 2);
        // Too far apart: exactly one span.
        assert!(run(o, 10 * S, cond, &[(0, 0, None), (10 * S, 1, None)])
            .iter()
            .all(Option::is_none));
        // A later restart of step 0 rescues the sequence.
        let out = run(
            o,
            10 * S,
            cond,
            &[(0, 0, None), (8 * S, 0, None), (15 * S, 1, None)],
        );
        assert_eq!(out[2].as_ref().unwrap().start, 8 * S);
    }

    #[test]
    fn compact_ids_round_trip() {
        for s in [
            "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
            "not-a-uuid",
            "0B1C2D3E-4F50-6172-8394-A5B6C7D8E9F0",
        ] {
            assert_eq!(CompactId::new(s).render(), s);
        }
        assert!(matches!(
            CompactId::new("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"),
            CompactId::Uuid(_)
        ));
    }
}
