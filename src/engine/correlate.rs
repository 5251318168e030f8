//! The stateful engine: Sigma correlations and first-seen baselines over event time.
//!
//! Flow per event ([`Correlator::observe`], called after stateless evaluation with the
//! indices of the matching base rules):
//! 1. The cluster's clock moves to the event's time; its watermark is that minus the
//!    allowed lateness.
//! 2. For each correlation that references a matching rule (and whose exceptions do not
//!    allow the event), the event becomes one record per group key (and per counted value).
//! 3. A record at or after the watermark goes into its shard's reorder buffer; a record
//!    before it is late: applied at once if its group still holds that part of the window,
//!    otherwise counted as too late.
//! 4. Buffered records older than the watermark are applied in event-time order; a
//!    correlation whose condition holds fires, resets its group, passes re-alert
//!    suppression and emits an alert, and feeds any correlation that references it.
//!
//! Why a reorder buffer: the webhook delivers batches from several API servers that
//! interleave by up to `batch-max-wait`. Applying records in event-time order within the
//! lateness makes the alerts independent of batch boundaries, arrival order and of which
//! worker thread delivered which event, at the price of holding alerts back by the
//! lateness (or until [`Correlator::tick`] finds the cluster idle).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::baseline::ENTRY_BYTES;
use super::state::{
    wm_of, Clocks, ClusterSnap, CorrSnap, Held, Record, Shard, SnapRecord, SnapshotFile,
    StateConfig, StateError, TextLog, TextRef, GROUP_SLOT_BYTES, SHARDS, SNAPSHOT_FILE,
    SNAPSHOT_VERSION,
};
use super::suppress::{Exception, Exceptions, Verdict};
use super::window::{CompactId, Firing, Group, GroupState, Hit, Outcome, Shape, RING_MAX};
use crate::model::{Alert, AuditEvent, Document, FieldPath};
use crate::rules::correlation::{format_duration, CorrelationDef, CorrelationKind};
use crate::rules::RuleError;

/// Most group-key combinations one event may produce (group-by over several list fields
/// multiplies); beyond it the combinations are truncated and counted.
pub const MAX_COMBOS: usize = 64;

/// The event an alert is built from, detached from its input buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvRef {
    /// The event's JSON text.
    pub raw: Box<str>,
    /// Its cluster.
    pub cluster: Option<Arc<str>>,
    /// Its auditID.
    pub audit: CompactId,
    /// Orders records with equal times the same whatever the arrival order ([`tie_of`]).
    /// Computed once per event, shared by all its records.
    pub tie: u64,
}

/// The tie-break of records with equal event times: the same for an event whatever the
/// arrival order. An event is named by its auditID and stage (unique per request stage, and
/// what de-duplication keys on), which is several times cheaper to hash than the whole
/// text; an event without an auditID falls back to its text.
fn tie_of(ev: &AuditEvent<'_>) -> u64 {
    let id = ev.audit_id();
    if id.is_empty() {
        xxhash_rust::xxh3::xxh3_64(ev.raw.text().as_bytes())
    } else {
        xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), ev.stage() as u64)
    }
}

/// What every record of one event shares.
struct RecSrc {
    audit: CompactId,
    tie: u64,
    /// `None` for the event being observed (see [`Live`]); chained firings share theirs.
    text: Option<Held>,
}

/// The event being observed, for its records applied at once: an [`EvRef`] (a copy of
/// the text) is made only if one of them fires.
struct Live<'e, 'a> {
    ev: &'e AuditEvent<'a>,
    src: &'e RecSrc,
    made: std::cell::OnceCell<Arc<EvRef>>,
}

impl Live<'_, '_> {
    /// The observed event as an [`EvRef`], copied once however often it is asked for.
    fn event(&self) -> Arc<EvRef> {
        self.made
            .get_or_init(|| {
                Arc::new(EvRef {
                    raw: self.ev.raw.text().into(),
                    cluster: self.ev.cluster.clone(),
                    audit: self.src.audit.clone(),
                    tie: self.src.tie,
                })
            })
            .clone()
    }
}

/// What the correlator needs to know about the base rules.
pub trait RuleCatalog {
    /// The index of the rule with this `name` or `id`.
    fn find(&self, name_or_id: &str) -> Option<usize>;
    /// Number of base rules.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The id and (if any) name of rule `idx`, for alias lookup.
    fn names(&self, idx: usize) -> Vec<String>;
}

/// A catalog from a plain list of (id, name) pairs: for tests and tools.
#[derive(Debug, Clone, Default)]
pub struct ListCatalog(pub Vec<(String, Option<String>)>);

impl RuleCatalog for ListCatalog {
    fn find(&self, s: &str) -> Option<usize> {
        self.0
            .iter()
            .position(|(id, name)| id == s || name.as_deref() == Some(s))
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn names(&self, idx: usize) -> Vec<String> {
        self.0
            .get(idx)
            .map(|(id, n)| std::iter::once(id.clone()).chain(n.clone()).collect())
            .unwrap_or_default()
    }
}

impl RuleCatalog for crate::rules::RuleSet {
    fn find(&self, s: &str) -> Option<usize> {
        crate::rules::RuleSet::find(self, s)
    }
    fn len(&self) -> usize {
        self.rules().len()
    }
    fn names(&self, idx: usize) -> Vec<String> {
        self.rules()
            .get(idx)
            .map(|r| {
                std::iter::once(r.meta.id.clone())
                    .chain(r.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What a correlation references at one position of its `rules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Rule(usize),
    Corr(usize),
}

/// A validated, compiled correlation.
#[derive(Debug)]
struct Compiled {
    def: CorrelationDef,
    shape: Shape,
    span: i64,
    /// Per position: group-by paths (aliases resolved).
    group_paths: Vec<Vec<FieldPath>>,
    value_path: Option<FieldPath>,
    term_paths: Vec<FieldPath>,
    chained: bool,
    emits: bool,
    exceptions: Exceptions,
    suppress_us: Option<i64>,
    salt: u64,
    fingerprint: u64,
    history: i64,
    learning: i64,
}

/// The immutable, compiled part shared by a correlator and its fresh copies.
#[derive(Debug)]
struct Plan {
    corrs: Vec<Compiled>,
    /// Base rule -> (correlation, position).
    by_rule: Vec<Vec<(u32, u16)>>,
    /// Correlation -> (referencing correlation, position).
    parents: Vec<Vec<(u32, u16)>>,
    /// Base rules whose own alerts are suppressed (`generate` false).
    quiet_rules: Vec<bool>,
    /// Base rule -> global exceptions applying to it.
    rule_exceptions: Vec<Exceptions>,
    /// Base rule -> (interval µs, group-by paths) for re-alert suppression.
    rule_suppress: Vec<Option<(i64, Vec<FieldPath>)>>,
}

/// Counts for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateStats {
    /// Live groups (all correlations).
    pub groups: usize,
    /// Live baseline tuples.
    pub tuples: usize,
    /// Records waiting in reorder buffers.
    pub pending: usize,
    /// Estimated bytes of state.
    pub bytes: usize,
}

/// Result of restoring a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Groups restored.
    pub groups: usize,
    /// Baseline tuples restored.
    pub tuples: usize,
    /// Pending records restored.
    pub pending: usize,
    /// Correlations whose state was dropped (rule removed or changed).
    pub dropped_rules: usize,
}

/// The stateful engine. `&self` everywhere: workers share one correlator.
#[derive(Debug)]
pub struct Correlator {
    plan: Arc<Plan>,
    cfg: StateConfig,
    clocks: Clocks,
    shards: Box<[Mutex<Shard>]>,
    learning_start: Vec<AtomicI64>,
    lateness: i64,
    last_snapshot: Mutex<Option<Instant>>,
    /// Examples mode: every correlation emits (even inner ones of a chain).
    emit_all: bool,
    /// Re-alert state of stateless rules.
    base_supp: super::suppress::Suppressor,
    /// Event time between sweeps of a shard (µs).
    sweep_every: i64,
}

fn hash128(parts: &[&[u8]]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for p in parts {
        h.update(&(p.len() as u32).to_le_bytes());
        h.update(p);
    }
    h.digest128()
}

/// All values of `path` in `ev`, deduplicated and sorted (so the group key does not depend
/// on list order).
fn values(ev: &AuditEvent<'_>, path: &FieldPath) -> Vec<String> {
    let mut out = Vec::new();
    ev.visit(path, &mut |v| {
        if let Some(t) = super::suppress::val_text(v) {
            out.push(t);
        }
        false
    });
    out.sort();
    out.dedup();
    out
}

/// One group-key combination: the values (None = field missing) and their hash.
type Combo = (Vec<Option<String>>, u128);

/// Every combination of the values of `paths` (one group per value of a list field),
/// as (values, key). A missing field is one `None` value.
fn combos(ev: &AuditEvent<'_>, cluster: Option<&str>, paths: &[FieldPath]) -> (Vec<Combo>, bool) {
    let mut acc: Vec<Vec<Option<String>>> = vec![Vec::new()];
    let mut truncated = false;
    for p in paths {
        let vals = values(ev, p);
        let opts: Vec<Option<String>> = if vals.is_empty() {
            vec![None]
        } else {
            vals.into_iter().map(Some).collect()
        };
        let mut next = Vec::with_capacity(acc.len() * opts.len());
        'outer: for a in &acc {
            for o in &opts {
                if next.len() >= MAX_COMBOS {
                    truncated = true;
                    break 'outer;
                }
                let mut v = a.clone();
                v.push(o.clone());
                next.push(v);
            }
        }
        acc = next;
    }
    let out = acc
        .into_iter()
        .map(|vals| {
            let mut parts: Vec<&[u8]> = vec![cluster.unwrap_or("\u{0}").as_bytes()];
            for v in &vals {
                // A missing value hashes differently from every string, including "".
                parts.push(v.as_deref().map_or(&[0xff][..], str::as_bytes));
            }
            let key = hash128(&parts);
            (vals, key)
        })
        .collect();
    (out, truncated)
}

/// Reusable buffers for [`keys_into`]: the hot path builds group keys without allocating.
#[derive(Default)]
struct Scratch {
    buf: String,
    spans: Vec<(usize, usize)>,
    per: Vec<(usize, usize)>,
    idx: Vec<usize>,
    /// The hashed bytes of one combination, laid out as the streaming hash in
    /// [`hash128`] sees them: one-shot xxh3 over them gives the same key, several times
    /// faster than the streaming state for inputs this short.
    key: Vec<u8>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
    /// One event's records with their shards, reused by [`Correlator::observe`].
    static RECS: std::cell::RefCell<Vec<(usize, Record)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The group keys of `ev` over `paths` (same keys as [`combos`], without building the
/// value strings). Returns whether the combinations were truncated.
fn keys_into(
    ev: &AuditEvent<'_>,
    cluster: Option<&str>,
    paths: &[FieldPath],
    out: &mut dyn FnMut(u128),
) -> bool {
    use std::fmt::Write as _;
    SCRATCH.with(|cell| {
        let mut guard = cell.borrow_mut();
        let Scratch {
            buf,
            spans,
            per,
            idx,
            key,
        } = &mut *guard;
        buf.clear();
        spans.clear();
        per.clear();
        for p in paths {
            let start = spans.len();
            ev.visit(p, &mut |v| {
                let b = buf.len();
                match v {
                    crate::model::Val::Str(x) => buf.push_str(x),
                    crate::model::Val::Int(i) => {
                        let _ = write!(buf, "{i}");
                    }
                    crate::model::Val::Float(x) => {
                        let _ = write!(buf, "{x}");
                    }
                    crate::model::Val::Bool(x) => {
                        let _ = write!(buf, "{x}");
                    }
                    crate::model::Val::Null | crate::model::Val::Object => return false,
                }
                spans.push((b, buf.len()));
                false
            });
            if spans.len() - start > 1 {
                let b = &*buf;
                spans[start..].sort_by(|x, y| b[x.0..x.1].cmp(&b[y.0..y.1]));
                let mut w = start + 1;
                for r in start + 1..spans.len() {
                    if b[spans[r].0..spans[r].1] != b[spans[w - 1].0..spans[w - 1].1] {
                        spans[w] = spans[r];
                        w += 1;
                    }
                }
                spans.truncate(w);
            }
            per.push((start, spans.len()));
        }
        // Odometer over the value lists (an empty list is the single "missing" value).
        idx.clear();
        idx.resize(paths.len(), 0);
        let mut n = 0;
        loop {
            if n == MAX_COMBOS {
                return true;
            }
            key.clear();
            let c = cluster.unwrap_or("\u{0}").as_bytes();
            key.extend_from_slice(&(c.len() as u32).to_le_bytes());
            key.extend_from_slice(c);
            for (k, &(a, b)) in per.iter().enumerate() {
                let bytes: &[u8] = if a == b {
                    &[0xff]
                } else {
                    let (x, y) = spans[a + idx[k]];
                    &buf.as_bytes()[x..y]
                };
                key.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                key.extend_from_slice(bytes);
            }
            out(xxhash_rust::xxh3::xxh3_128(key));
            n += 1;
            // Advance the last position first, as `combos` nests.
            let mut k = paths.len();
            loop {
                if k == 0 {
                    return false;
                }
                k -= 1;
                let (a, b) = per[k];
                let len = (b - a).max(1);
                idx[k] += 1;
                if idx[k] < len {
                    break;
                }
                idx[k] = 0;
            }
        }
    })
}

fn micros_to_rfc3339(us: i64) -> String {
    Utc.timestamp_micros(us)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn err(def: &CorrelationDef, message: String) -> RuleError {
    RuleError {
        file: def.file.clone(),
        line: def.line,
        rule_id: Some(def.meta.id.clone()),
        message,
    }
}

impl Correlator {
    /// Builds a correlator over the rule set's correlation documents (every YAML document
    /// with a top-level `correlation:` key). The rule set's value lists serve `|expand` in
    /// exceptions, unless `cfg.lists` already has a list of that name. Parse and reference
    /// errors are returned all at once, each with file, line and rule.
    pub fn new(
        rules: &crate::rules::RuleSet,
        mut cfg: StateConfig,
    ) -> Result<Correlator, Vec<RuleError>> {
        let mut defs = Vec::new();
        let mut errs = Vec::new();
        for raw in rules.correlations() {
            match crate::rules::correlation::parse_correlation(&raw.file, raw.line, &raw.doc) {
                Ok(d) => defs.push(d),
                Err(e) => errs.extend(e),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        for (name, list) in rules.lists() {
            cfg.lists
                .entry(name.clone())
                .or_insert_with(|| list.values.clone());
        }
        Correlator::from_defs(defs, rules, cfg)
    }

    /// Builds a correlator from parsed definitions, resolving references against `catalog`
    /// and against each other (chains).
    pub fn from_defs(
        defs: Vec<CorrelationDef>,
        catalog: &dyn RuleCatalog,
        cfg: StateConfig,
    ) -> Result<Correlator, Vec<RuleError>> {
        let mut errs = Vec::new();
        let n = defs.len();
        // Correlation names and ids.
        let mut corr_ix: HashMap<&str, usize> = HashMap::new();
        for (i, d) in defs.iter().enumerate() {
            for k in std::iter::once(d.meta.id.as_str()).chain(d.name.as_deref()) {
                if let Some(prev) = corr_ix.insert(k, i) {
                    if prev != i {
                        errs.push(err(
                            d,
                            format!("correlation id or name `{k}` is used twice"),
                        ));
                    }
                }
            }
        }
        let resolve = |s: &str| -> Option<Target> {
            corr_ix
                .get(s)
                .map(|&i| Target::Corr(i))
                .or_else(|| catalog.find(s).map(Target::Rule))
        };
        let mut targets: Vec<Vec<Target>> = Vec::with_capacity(n);
        for d in &defs {
            let mut t = Vec::new();
            for r in &d.rules {
                match resolve(r) {
                    Some(x) => t.push(x),
                    None => errs.push(err(
                        d,
                        format!(
                            "`correlation.rules`: no rule or correlation with name or id `{r}`"
                        ),
                    )),
                }
            }
            targets.push(t);
        }
        // Cycles among correlations.
        fn visit(i: usize, targets: &[Vec<Target>], state: &mut [u8]) -> bool {
            if state[i] == 1 {
                return false;
            }
            if state[i] == 2 {
                return true;
            }
            state[i] = 1;
            for t in &targets[i] {
                if let Target::Corr(j) = t {
                    if !visit(*j, targets, state) {
                        return false;
                    }
                }
            }
            state[i] = 2;
            true
        }
        let mut st = vec![0u8; n];
        for (i, d) in defs.iter().enumerate() {
            if !visit(i, &targets, &mut st) {
                errs.push(err(
                    d,
                    "correlation chain refers back to itself (a cycle)".into(),
                ));
                break;
            }
        }
        let mut parents: Vec<Vec<(u32, u16)>> = vec![Vec::new(); n];
        let mut by_rule: Vec<Vec<(u32, u16)>> = vec![Vec::new(); catalog.len()];
        let mut rule_refd = vec![false; catalog.len()];
        let mut rule_gen = vec![false; catalog.len()];
        let mut corr_refd = vec![false; n];
        let mut corr_gen = vec![false; n];
        for (i, ts) in targets.iter().enumerate() {
            for (pos, t) in ts.iter().enumerate() {
                match *t {
                    Target::Rule(r) => {
                        by_rule[r].push((i as u32, pos as u16));
                        rule_refd[r] = true;
                        rule_gen[r] |= defs[i].generate;
                    }
                    Target::Corr(c) => {
                        parents[c].push((i as u32, pos as u16));
                        corr_refd[c] = true;
                        corr_gen[c] |= defs[i].generate;
                    }
                }
            }
        }
        let names_of = |t: &Target| -> Vec<String> {
            match *t {
                Target::Rule(r) => catalog.names(r),
                Target::Corr(c) => std::iter::once(defs[c].meta.id.clone())
                    .chain(defs[c].name.clone())
                    .collect(),
            }
        };
        // Tuning: global exceptions and suppression, resolved to rules and correlations.
        let mut rule_ex: Vec<Vec<Exception>> = vec![Vec::new(); catalog.len()];
        let mut corr_ex: Vec<Vec<Exception>> = vec![Vec::new(); n];
        let tune_err = |message: String| RuleError {
            file: "config:tuning".into(),
            line: None,
            rule_id: None,
            message,
        };
        for (i, e) in cfg.tuning.exceptions.iter().enumerate() {
            let ex = match Exception::compile(e, i, &cfg.lists) {
                Ok(x) => x,
                Err(e) => {
                    errs.push(tune_err(e.to_string()));
                    continue;
                }
            };
            for r in &e.rules {
                if r == "*" {
                    rule_ex.iter_mut().for_each(|v| v.push(ex.clone()));
                    corr_ex.iter_mut().for_each(|v| v.push(ex.clone()));
                } else {
                    match resolve(r) {
                        Some(Target::Rule(x)) => rule_ex[x].push(ex.clone()),
                        Some(Target::Corr(x)) => corr_ex[x].push(ex.clone()),
                        None => {
                            errs.push(tune_err(format!("exception `{}`: no rule `{r}`", ex.name)))
                        }
                    }
                }
            }
        }
        let mut rule_suppress: Vec<Option<(i64, Vec<FieldPath>)>> = vec![None; catalog.len()];
        let mut corr_suppress: Vec<Option<i64>> = defs
            .iter()
            .map(|d| {
                d.suppress_ms
                    .map(|ms| ms * 1000)
                    .or(cfg.default_suppress.map(|d| d.as_micros() as i64))
            })
            .collect();
        for (i, s) in cfg.tuning.suppress.iter().enumerate() {
            let Some(ms) = crate::rules::correlation::parse_duration(&s.interval) else {
                errs.push(tune_err(
                    super::suppress::TuningError::BadInterval {
                        index: i,
                        value: s.interval.clone(),
                    }
                    .to_string(),
                ));
                continue;
            };
            let paths: Vec<FieldPath> = s.group_by.iter().map(|g| FieldPath::parse(g)).collect();
            for r in &s.rules {
                if r == "*" {
                    rule_suppress
                        .iter_mut()
                        .for_each(|x| *x = Some((ms * 1000, paths.clone())));
                } else {
                    match resolve(r) {
                        Some(Target::Rule(x)) => {
                            rule_suppress[x] = Some((ms * 1000, paths.clone()))
                        }
                        Some(Target::Corr(x)) => corr_suppress[x] = Some(ms * 1000),
                        None => errs.push(tune_err(format!("suppress[{i}]: no rule `{r}`"))),
                    }
                }
            }
        }

        let mut corrs = Vec::with_capacity(n);
        for (i, d) in defs.iter().enumerate() {
            let span = d.timespan_ms.saturating_mul(1000);
            let cond = d.condition;
            let (shape, value_path, term_paths, history, learning) = match &d.kind {
                CorrelationKind::EventCount => {
                    let shape = if cond.has_upper_bound() {
                        Shape::Tumbling { cap: 0 }
                    } else if cond.min_count() <= RING_MAX {
                        Shape::Ring {
                            keep: (cond.min_count() as usize).max(cfg.max_audit_ids).max(1),
                        }
                    } else {
                        Shape::Buckets
                    };
                    (shape, None, Vec::new(), 0, 0)
                }
                CorrelationKind::ValueCount { field } => {
                    let need = cond.decisive_count() as usize;
                    if need > cfg.max_distinct_values {
                        errs.push(err(
                            d,
                            format!(
                                "`value_count` condition needs {need} distinct values, above max_distinct_values ({})",
                                cfg.max_distinct_values
                            ),
                        ));
                    }
                    let shape = if cond.has_upper_bound() {
                        Shape::Tumbling { cap: need }
                    } else {
                        Shape::Distinct { cap: need.max(1) }
                    };
                    (shape, Some(FieldPath::parse(field)), Vec::new(), 0, 0)
                }
                CorrelationKind::Temporal => {
                    (Shape::Temporal { n: d.rules.len() }, None, Vec::new(), 0, 0)
                }
                CorrelationKind::TemporalOrdered => {
                    (Shape::Ordered { n: d.rules.len() }, None, Vec::new(), 0, 0)
                }
                CorrelationKind::NewTerms {
                    fields,
                    history_ms,
                    learning_ms,
                } => (
                    Shape::Temporal { n: 0 },
                    None,
                    fields.iter().map(|f| FieldPath::parse(f)).collect(),
                    history_ms.saturating_mul(1000),
                    learning_ms.saturating_mul(1000),
                ),
            };
            // Aliases: alias -> per referenced rule field.
            for (alias, per) in &d.aliases {
                for r in per.keys() {
                    let known = d
                        .rules
                        .iter()
                        .zip(&targets[i])
                        .any(|(w, t)| w == r || names_of(t).contains(r));
                    if !known {
                        errs.push(err(
                            d,
                            format!(
                                "alias `{alias}` names `{r}`, which is not in `correlation.rules`"
                            ),
                        ));
                    }
                }
            }
            let group_paths = d
                .rules
                .iter()
                .zip(targets.get(i).cloned().unwrap_or_default())
                .map(|(written, t)| {
                    let names = names_of(&t);
                    d.group_by
                        .iter()
                        .map(|g| {
                            let field = d
                                .aliases
                                .get(g)
                                .and_then(|per| {
                                    per.get(written)
                                        .or_else(|| names.iter().find_map(|nm| per.get(nm)))
                                })
                                .unwrap_or(g);
                            FieldPath::parse(field)
                        })
                        .collect()
                })
                .collect();
            let mut exs = Vec::new();
            for (k, e) in d.exceptions.iter().enumerate() {
                match Exception::compile(e, k, &cfg.lists) {
                    Ok(x) => exs.push(x),
                    Err(e) => errs.push(err(d, e.to_string())),
                }
            }
            exs.append(&mut corr_ex[i]);
            let chained =
                !parents[i].is_empty() || targets[i].iter().any(|t| matches!(t, Target::Corr(_)));
            let fingerprint = xxhash_rust::xxh3::xxh3_64(
                format!(
                    "{:?}|{:?}|{:?}|{:?}|{}|{:?}|{}",
                    d.kind,
                    d.rules,
                    d.group_by,
                    d.aliases,
                    d.timespan_ms,
                    d.condition,
                    cfg.max_audit_ids
                )
                .as_bytes(),
            );
            corrs.push(Compiled {
                def: d.clone(),
                shape,
                span,
                group_paths,
                value_path,
                term_paths,
                chained,
                emits: !corr_refd[i] || corr_gen[i],
                exceptions: Exceptions::new(exs),
                suppress_us: corr_suppress[i],
                salt: xxhash_rust::xxh3::xxh3_64(d.meta.id.as_bytes()),
                fingerprint,
                history,
                learning,
            });
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let lateness = cfg.allowed_lateness.as_micros() as i64;
        let sweep_every = Correlator::sweep_every(&corrs);
        Ok(Correlator {
            plan: Arc::new(Plan {
                corrs,
                by_rule,
                parents,
                quiet_rules: rule_refd
                    .iter()
                    .zip(&rule_gen)
                    .map(|(r, g)| *r && !*g)
                    .collect(),
                rule_exceptions: rule_ex.into_iter().map(Exceptions::new).collect(),
                rule_suppress,
            }),
            learning_start: (0..n).map(|_| AtomicI64::new(i64::MAX)).collect(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard::new(n, (cfg.max_state_bytes / SHARDS).max(1))))
                .collect(),
            clocks: Clocks::default(),
            lateness,
            last_snapshot: Mutex::new(None),
            emit_all: false,
            base_supp: Default::default(),
            sweep_every,
            cfg,
        })
    }

    /// A correlator with the same rules and configuration and empty state.
    pub fn fresh(&self) -> Correlator {
        let n = self.plan.corrs.len();
        Correlator {
            plan: self.plan.clone(),
            cfg: self.cfg.clone(),
            clocks: Clocks::default(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard::new(n, (self.cfg.max_state_bytes / SHARDS).max(1))))
                .collect(),
            learning_start: (0..n).map(|_| AtomicI64::new(i64::MAX)).collect(),
            lateness: self.lateness,
            last_snapshot: Mutex::new(None),
            emit_all: self.emit_all,
            base_supp: Default::default(),
            sweep_every: self.sweep_every,
        }
    }

    /// Number of correlations loaded.
    pub fn len(&self) -> usize {
        self.plan.corrs.len()
    }

    /// Whether no correlation is loaded (then `observe` is a no-op beyond the clock).
    pub fn is_empty(&self) -> bool {
        self.plan.corrs.is_empty()
    }

    /// Whether base rule `rule_idx`'s own alerts are suppressed: it is referenced by a
    /// correlation and none of those says `generate: true` (Sigma v2 default).
    pub fn suppressed_generate(&self, rule_idx: usize) -> bool {
        self.plan
            .quiet_rules
            .get(rule_idx)
            .copied()
            .unwrap_or(false)
    }

    /// Applies global exceptions and re-alert suppression to a stateless rule's alert.
    /// Returns false to drop it; on keep, a re-alert that folds suppressed repeats gets a
    /// `correlation` object `{"type": "suppression", "suppressedRepeats": n, ...}`.
    pub fn admit_base(&self, rule_idx: usize, ev: &AuditEvent<'_>, alert: &mut Alert) -> bool {
        let m = &self.cfg.metrics;
        if let Some(name) = self
            .plan
            .rule_exceptions
            .get(rule_idx)
            .and_then(|e| e.allowed_by(ev))
        {
            let _ = name;
            m.count("audithawk_exceptions_total", &[("rule", &alert.rule.id)], 1);
            return false;
        }
        let Some(Some((iv, paths))) = self.plan.rule_suppress.get(rule_idx) else {
            return true;
        };
        let Some(t) = ev.event_time().map(|d| d.timestamp_micros()) else {
            return true;
        };
        let (cs, _) = combos(ev, ev.cluster.as_deref(), paths);
        let Some((vals, key)) = cs.into_iter().next() else {
            return true;
        };
        match self.base_supp.offer(rule_idx, key as u64, t, *iv) {
            Verdict::Suppress => {
                m.count("audithawk_suppressed_total", &[("rule", &alert.rule.id)], 1);
                false
            }
            Verdict::Emit { suppressed } => {
                if suppressed > 0 {
                    let group: serde_json::Map<String, Value> = paths
                        .iter()
                        .zip(vals)
                        .map(|(p, v)| (p.name.clone(), v.map_or(Value::Null, Value::String)))
                        .collect();
                    alert.correlation = Some(json!({
                        "type": "suppression",
                        "group": group,
                        "suppressedRepeats": suppressed,
                        "interval": format_duration(iv / 1000),
                    }));
                }
                true
            }
        }
    }
}

/// Drain every shard when the watermark crosses a multiple of this (µs of event time), so
/// records in shards no recent event touched are not held back for long.
const DRAIN_STEP: i64 = 1_000_000;

impl Correlator {
    fn route(&self, corr: usize, key: u128, cluster: Option<&str>) -> usize {
        let c = &self.plan.corrs[corr];
        let h = if c.chained {
            // One shard per cluster for chained correlations: the inner firing feeds the
            // outer correlation under the same lock, in event-time order.
            xxhash_rust::xxh3::xxh3_64(cluster.unwrap_or("").as_bytes())
        } else {
            (key as u64) ^ (key >> 64) as u64 ^ c.salt
        };
        (h % SHARDS as u64) as usize
    }

    fn group_cap(&self, corr: usize) -> usize {
        if self.plan.corrs[corr].chained {
            self.cfg.max_groups_per_rule.max(1)
        } else {
            (self.cfg.max_groups_per_rule / SHARDS).max(1)
        }
    }

    /// The records event `ev` contributes to correlation `corr` at rule position `pos`,
    /// each with its shard.
    #[allow(clippy::too_many_arguments)]
    fn records_for(
        &self,
        corr: usize,
        pos: usize,
        ev: &AuditEvent<'_>,
        t: i64,
        cluster: u16,
        src: &RecSrc,
        out: &mut Vec<(usize, Record)>,
    ) {
        let c = &self.plan.corrs[corr];
        let cl = ev.cluster.as_deref();
        let paths: &[FieldPath] = if matches!(c.def.kind, CorrelationKind::NewTerms { .. }) {
            &c.term_paths
        } else {
            c.group_paths.get(pos).map_or(&[][..], Vec::as_slice)
        };
        // value_count: one record per group key and counted value.
        let mut vals: Vec<Box<str>> = Vec::new();
        if let Some(p) = &c.value_path {
            vals = values(ev, p)
                .into_iter()
                .map(String::into_boxed_str)
                .collect();
        }
        let counted = c.value_path.is_some();
        let nv = if counted { vals.len() } else { 1 };
        let start = out.len();
        let truncated = keys_into(ev, cl, paths, &mut |key| {
            let shard = self.route(corr, key, cl);
            for _ in 0..nv {
                out.push((
                    shard,
                    Record {
                        t,
                        corr: corr as u32,
                        pos: pos as u16,
                        key,
                        cluster,
                        value: None,
                        vhash: 0,
                        audit: src.audit.clone(),
                        tie: src.tie,
                        text: src.text.clone(),
                    },
                ));
            }
        });
        if counted && nv > 0 {
            // Copies for every key but the last, which takes the values themselves.
            let recs = &mut out[start..];
            let keys = recs.len() / nv;
            let hashes: Vec<u64> = vals.iter().map(|v| Record::value_hash(Some(v))).collect();
            for (ki, chunk) in recs.chunks_mut(nv).enumerate() {
                for (((_, r), v), h) in chunk.iter_mut().zip(vals.iter_mut()).zip(&hashes) {
                    r.vhash = *h;
                    r.value = Some(if ki + 1 == keys {
                        std::mem::take(v)
                    } else {
                        v.clone()
                    });
                }
            }
        }
        if truncated {
            self.cfg.metrics.count(
                "audithawk_correlation_keys_truncated_total",
                &[("rule", &c.def.meta.id)],
                1,
            );
        }
    }

    /// Feeds one event, after stateless evaluation: `matched` are the indices of the base
    /// rules that matched it. Alerts of correlations that fire are pushed into `out`
    /// (possibly for earlier events, released by this event's watermark).
    pub fn observe(&self, matched: &[usize], ev: &AuditEvent<'_>, out: &mut Vec<Alert>) {
        let relevant = matched
            .iter()
            .any(|&r| self.plan.by_rule.get(r).is_some_and(|v| !v.is_empty()));
        let Some(t) = ev.event_time().map(|d| d.timestamp_micros()) else {
            if relevant {
                self.cfg.metrics.count(
                    "audithawk_correlation_events_total",
                    &[("outcome", "no_time")],
                    1,
                );
            }
            return;
        };
        let cid = self.clocks.intern(ev.cluster.as_ref());
        let Some(clock) = self.clocks.get(cid) else {
            return;
        };
        let before = wm_of(&clock, self.lateness);
        clock.max_seen.fetch_max(t, Ordering::AcqRel);
        let wm = wm_of(&clock, self.lateness);
        let mut touched = [false; SHARDS];
        if relevant {
            // Reused across events: no allocation per event for the list itself.
            let mut recs = RECS.with(|c| std::mem::take(&mut *c.borrow_mut()));
            recs.clear();
            // No copy of the event yet: a record applied at once reads it from `ev`, a
            // held one from its shard's text log (copied there once per shard).
            let src = RecSrc {
                audit: CompactId::new(ev.audit_id()),
                tie: tie_of(ev),
                text: None,
            };
            let live = Live {
                ev,
                src: &src,
                made: std::cell::OnceCell::new(),
            };
            for &r in matched {
                for &(corr, pos) in self.plan.by_rule.get(r).map_or(&[][..], Vec::as_slice) {
                    let c = &self.plan.corrs[corr as usize];
                    if c.exceptions.allowed_by(ev).is_some() {
                        self.cfg.metrics.count(
                            "audithawk_exceptions_total",
                            &[("rule", &c.def.meta.id)],
                            1,
                        );
                        continue;
                    }
                    if matches!(c.def.kind, CorrelationKind::NewTerms { .. }) {
                        self.learning_start[corr as usize].fetch_min(t, Ordering::AcqRel);
                    }
                    self.records_for(corr as usize, pos as usize, ev, t, cid, &src, &mut recs);
                }
            }
            // Stable: records of one shard keep their order.
            recs.sort_by_key(|(s, _)| *s);
            // An event whose records all go to one shard keeps its text in that shard's
            // log; one that feeds several shards shares one copy between them instead
            // (copying it into every shard's log cost more than the allocation).
            let one_shard = recs.first().map(|(s, _)| *s) == recs.last().map(|(s, _)| *s);
            let mut it = recs.drain(..).peekable();
            while let Some((s, first)) = it.next() {
                touched[s] = true;
                let mut sh = self.shards[s].lock();
                let mut next = Some(first);
                // This event's text in this shard's log, once any of its records is held.
                let mut logged: Option<TextRef> = None;
                while let Some(mut r) = next.take() {
                    if r.t < wm {
                        self.apply(&mut sh, r, Some(&live), true, wm, out);
                    } else if self.lateness == 0
                        && sh.pending.get(cid as usize).is_none_or(|p| p.is_empty())
                    {
                        // No lateness allowed: an event at or after the newest one is in
                        // order by definition, so the reorder buffer is skipped.
                        self.apply(&mut sh, r, Some(&live), false, wm, out);
                    } else {
                        r.text = Some(if one_shard {
                            Held::Log(match logged {
                                Some(at) => {
                                    sh.log.retain(at);
                                    at
                                }
                                None => *logged.insert(sh.log.push(ev.raw.text(), 1)),
                            })
                        } else {
                            Held::Shared(live.event())
                        });
                        sh.bytes += r.held_bytes();
                        if let Some(old) = sh.pending_mut(cid).insert(r) {
                            Self::unhold(&mut sh, &old);
                        }
                    }
                    if it.peek().is_some_and(|(s2, _)| *s2 == s) {
                        next = it.next().map(|(_, r)| r);
                    }
                }
                self.drain(&mut sh, Some((cid, wm)), out);
                self.shed(&mut sh, out);
            }
            drop(it);
            RECS.with(|c| *c.borrow_mut() = recs);
        }
        let crossed =
            before == i64::MIN || before.div_euclid(DRAIN_STEP) != wm.div_euclid(DRAIN_STEP);
        if crossed {
            for (s, was) in touched.iter().enumerate() {
                if !was {
                    let mut sh = self.shards[s].lock();
                    self.drain(&mut sh, Some((cid, wm)), out);
                }
            }
        }
    }

    /// Applies every buffered record older than its cluster's watermark, in order, then
    /// sweeps expired state when the watermark has moved on enough. `known` is a
    /// cluster whose watermark the caller has just read: it spares a lock on the clocks
    /// per call on the hot path.
    fn drain(&self, sh: &mut Shard, known: Option<(u16, i64)>, out: &mut Vec<Alert>) {
        let mut wmax = i64::MIN;
        for c in 0..sh.pending.len() {
            let wm = match known {
                Some((k, wm)) if k as usize == c => wm,
                _ => self.clocks.watermark(c as u16, self.lateness),
            };
            wmax = wmax.max(wm);
            // Every record before the watermark leaves the buffer, in order. Applying
            // never adds to the buffer (chained records are applied inline).
            while sh.pending[c].first_time().is_some_and(|t| t < wm) {
                let Some(r) = sh.pending[c].pop_first() else {
                    break;
                };
                sh.bytes = sh.bytes.saturating_sub(r.held_bytes());
                self.apply(sh, r, None, false, wm, out);
            }
            sh.pending[c].trim();
        }
        let every = self.sweep_every;
        if wmax != i64::MIN
            && (sh.swept_at == i64::MIN || wmax >= sh.swept_at.saturating_add(every))
        {
            sh.swept_at = wmax;
            self.sweep(sh, false, out);
        }
    }

    /// Under memory pressure, applies the oldest held records early (giving up some of the
    /// allowed lateness, counted) rather than letting the reorder buffer grow without
    /// bound: at a high event rate, the lateness times the rate can exceed the byte cap.
    fn shed(&self, sh: &mut Shard, out: &mut Vec<Alert>) {
        let cap = (self.cfg.max_state_bytes / SHARDS).max(1);
        let mut released = 0u64;
        while sh.bytes + sh.log.bytes() > cap {
            let oldest = (0..sh.pending.len())
                .filter_map(|c| sh.pending[c].first_time().map(|t| (t, c)))
                .min();
            let Some((_, c)) = oldest else { break };
            let Some(r) = sh.pending[c].pop_first() else {
                break;
            };
            sh.bytes = sh.bytes.saturating_sub(r.held_bytes());
            let wm = self.clocks.watermark(c as u16, self.lateness);
            self.apply(sh, r, None, false, wm, out);
            released += 1;
        }
        if released > 0 {
            self.cfg
                .metrics
                .count("audithawk_correlation_early_release_total", &[], released);
        }
    }

    fn sweep_every(corrs: &[Compiled]) -> i64 {
        let min_span = corrs
            .iter()
            .map(|c| if c.span > 0 { c.span } else { c.history })
            .filter(|s| *s > 0)
            .min()
            .unwrap_or(60_000_000);
        (min_span / 4).max(1_000_000)
    }

    /// Removes expired groups and forgotten tuples; closes tumbling windows (all of them
    /// when `close_all`, at end of input).
    fn sweep(&self, sh: &mut Shard, close_all: bool, out: &mut Vec<Alert>) {
        let wms: Vec<i64> = self
            .clocks
            .all()
            .iter()
            .map(|c| wm_of(c, self.lateness))
            .collect();
        let wm = |c: u16| wms.get(c as usize).copied().unwrap_or(i64::MIN);
        let wmax = wms.iter().copied().max().unwrap_or(i64::MIN);
        for corr in 0..self.plan.corrs.len() {
            let c = &self.plan.corrs[corr];
            if matches!(c.def.kind, CorrelationKind::NewTerms { .. }) {
                let before = sh.terms[corr].seen.len();
                sh.terms[corr].expire(wm, c.history);
                let gone = before - sh.terms[corr].seen.len();
                sh.bytes = sh.bytes.saturating_sub(gone * ENTRY_BYTES);
                continue;
            }
            let span = c.span;
            let mut closing = Vec::new();
            let mut freed = 0;
            sh.groups[corr].retain(|k, g| {
                let tumbling = matches!(g.st, GroupState::Tumbling(_));
                // At end of input only undecided (tumbling) windows are closed early; the
                // others keep their state (a snapshot after a scan stays useful).
                let w = if close_all && tumbling {
                    i64::MAX
                } else {
                    wm(g.cluster)
                };
                if !g.expired(w, span) {
                    return true;
                }
                freed += GROUP_SLOT_BYTES + g.heap_bytes();
                if matches!(g.st, GroupState::Tumbling(_)) {
                    closing.push((*k, g.clone()));
                }
                false
            });
            sh.bytes = sh.bytes.saturating_sub(freed);
            closing.sort_by_key(|(k, g)| (g.last, *k));
            for (key, mut g) in closing {
                let w = if close_all { i64::MAX } else { wm(g.cluster) };
                // (closing holds tumbling groups only.)
                let distinct = matches!(c.def.kind, CorrelationKind::ValueCount { .. });
                let last = match &g.st {
                    GroupState::Tumbling(tw) => tw.last.clone(),
                    _ => None,
                };
                if let (Some(f), Some(ev)) = (g.close(w, span, &c.def.condition, distinct), last) {
                    let mut f = f;
                    if close_all {
                        f.end = f.end.min(g.last);
                    }
                    self.fire(sh, corr, 0, key, &ev, f, out);
                }
            }
            sh.supp[corr].retain(|_, (_, s)| s.until > wmax || s.count > 0);
        }
    }

    fn evict(&self, sh: &mut Shard, corr: usize, n: usize) {
        let evicted = if matches!(
            self.plan.corrs[corr].def.kind,
            CorrelationKind::NewTerms { .. }
        ) {
            let e = sh.terms[corr].evict_stalest(n);
            sh.bytes = sh.bytes.saturating_sub(e * ENTRY_BYTES);
            e
        } else {
            let map = &mut sh.groups[corr];
            if map.is_empty() || n == 0 {
                return;
            }
            let mut times: Vec<(i64, u128)> = map.iter().map(|(k, g)| (g.last, *k)).collect();
            let k = n.min(times.len());
            times.select_nth_unstable(k - 1);
            let mut freed = 0;
            for (_, key) in &times[..k] {
                if let Some(g) = map.remove(key) {
                    freed += GROUP_SLOT_BYTES + g.heap_bytes();
                }
            }
            sh.bytes = sh.bytes.saturating_sub(freed);
            k
        };
        if evicted > 0 {
            self.cfg.metrics.count(
                "audithawk_correlation_evictions_total",
                &[("rule", &self.plan.corrs[corr].def.meta.id)],
                evicted as u64,
            );
        }
    }

    /// Makes room for one more group of `corr`: the per-rule cap, then the byte cap (evicting
    /// from the biggest correlation of this shard). Evicts the stalest tenth at once so that
    /// the selection cost is amortised.
    fn make_room(&self, sh: &mut Shard, corr: usize) {
        let is_terms = matches!(
            self.plan.corrs[corr].def.kind,
            CorrelationKind::NewTerms { .. }
        );
        let len = if is_terms {
            sh.terms[corr].seen.len()
        } else {
            sh.groups[corr].len()
        };
        let cap = self.group_cap(corr);
        if len >= cap {
            self.evict(sh, corr, (cap / 10).max(1).max(len + 1 - cap));
        }
        let byte_cap = (self.cfg.max_state_bytes / SHARDS).max(1);
        let mut guard = 0;
        while sh.bytes + sh.log.bytes() > byte_cap && guard < 64 {
            guard += 1;
            let big = (0..self.plan.corrs.len())
                .max_by_key(|&i| sh.groups[i].len() + sh.terms[i].seen.len());
            let Some(big) = big else { break };
            let n = sh.groups[big].len() + sh.terms[big].seen.len();
            if n == 0 {
                break;
            }
            self.evict(sh, big, (n / 10).max(1));
        }
    }

    /// Applies one record to its group; fires when the condition holds.
    fn apply(
        &self,
        sh: &mut Shard,
        rec: Record,
        live: Option<&Live<'_, '_>>,
        late: bool,
        wm: i64,
        out: &mut Vec<Alert>,
    ) {
        let logged = rec.log_ref();
        if let Some(at) = logged {
            sh.log.uncount(at);
        }
        self.apply_held(sh, rec, live, late, wm, out);
        // The text stays readable until the record is done with (a firing reads it).
        if let Some(at) = logged {
            sh.log.release(at);
        }
    }

    /// A held record replaced by another with the same key: its bytes and text go.
    fn unhold(sh: &mut Shard, old: &Record) {
        sh.bytes = sh.bytes.saturating_sub(old.held_bytes());
        if let Some(at) = old.log_ref() {
            sh.log.uncount(at);
            sh.log.release(at);
        }
    }

    /// The event of `rec`, for an alert (made only when something fires or a tumbling
    /// window must remember it).
    fn held_event(
        &self,
        log: &TextLog,
        rec: &Record,
        live: Option<&Live<'_, '_>>,
    ) -> Option<Arc<EvRef>> {
        match &rec.text {
            Some(Held::Shared(e)) => Some(e.clone()),
            Some(Held::Log(at)) => Some(Arc::new(EvRef {
                raw: log.get(*at)?.into(),
                cluster: self.clocks.get(rec.cluster).and_then(|c| c.name.clone()),
                audit: rec.audit.clone(),
                tie: rec.tie,
            })),
            None => live.map(Live::event),
        }
    }

    fn apply_held(
        &self,
        sh: &mut Shard,
        rec: Record,
        live: Option<&Live<'_, '_>>,
        late: bool,
        wm: i64,
        out: &mut Vec<Alert>,
    ) {
        let corr = rec.corr as usize;
        let c = &self.plan.corrs[corr];
        let m = &self.cfg.metrics;
        let id = c.def.meta.id.as_str();
        if let CorrelationKind::NewTerms { .. } = c.def.kind {
            if late && rec.t <= wm.saturating_sub(c.history) {
                m.count(
                    "audithawk_correlation_late_total",
                    &[("rule", id), ("outcome", "too_late")],
                    1,
                );
                return;
            }
            if !sh.terms[corr].seen.contains_key(&rec.key) {
                self.make_room(sh, corr);
                sh.bytes += ENTRY_BYTES;
            }
            let learning_end = self.learning_start[corr]
                .load(Ordering::Acquire)
                .saturating_add(c.learning);
            let new = sh.terms[corr].observe(rec.key, rec.t, rec.cluster, learning_end, c.history);
            if late {
                m.count(
                    "audithawk_correlation_late_total",
                    &[("rule", id), ("outcome", "applied")],
                    1,
                );
            }
            if new {
                let f = Firing {
                    count: 1,
                    start: rec.t,
                    end: rec.t,
                    hits: vec![Hit {
                        t: rec.t,
                        id: rec.audit.clone(),
                    }],
                    total: 1,
                    ..Default::default()
                };
                if let Some(ev) = self.held_event(&sh.log, &rec, live) {
                    self.fire(sh, corr, rec.pos as usize, rec.key, &ev, f, out);
                }
            }
            return;
        }
        let span = c.span;
        // One table lookup on the common path: the group exists and the record belongs to
        // its current window.
        let g: &mut Group = match sh.groups[corr].get_mut(&rec.key) {
            Some(g) if late || !g.expired(rec.t, span) => g,
            cur => {
                if cur.is_some() {
                    // In order: a window that the new event has left behind is decided
                    // (tumbling) or simply restarted.
                    if let Some(mut g) = sh.groups[corr].remove(&rec.key) {
                        sh.bytes = sh.bytes.saturating_sub(GROUP_SLOT_BYTES + g.heap_bytes());
                        let last = match &g.st {
                            GroupState::Tumbling(tw) => tw.last.clone(),
                            _ => None,
                        };
                        let distinct = matches!(c.def.kind, CorrelationKind::ValueCount { .. });
                        if let (Some(f), Some(ev)) =
                            (g.close(rec.t, span, &c.def.condition, distinct), last)
                        {
                            self.fire(sh, corr, rec.pos as usize, rec.key, &ev, f, out);
                        }
                    }
                } else {
                    if late && rec.t <= wm.saturating_sub(span) {
                        m.count(
                            "audithawk_correlation_late_total",
                            &[("rule", id), ("outcome", "too_late")],
                            1,
                        );
                        return;
                    }
                    self.make_room(sh, corr);
                }
                let g = Group::new(c.shape, span, rec.t, rec.cluster);
                sh.bytes += GROUP_SLOT_BYTES + g.heap_bytes();
                sh.groups[corr].entry(rec.key).insert_entry(g).into_mut()
            }
        };
        let before = g.heap_bytes();
        let outcome = g.apply(
            c.shape,
            span,
            &c.def.condition,
            self.cfg.max_audit_ids,
            rec.t,
            &rec.audit,
            rec.pos as usize,
            rec.value.as_deref(),
        );
        if let GroupState::Tumbling(tw) = &mut g.st {
            if !late || tw.last.is_none() {
                tw.last = self.held_event(&sh.log, &rec, live).or(tw.last.take());
            }
        }
        let after = g.heap_bytes();
        sh.bytes = (sh.bytes + after).saturating_sub(before);
        if late && outcome != Outcome::TooOld {
            m.count(
                "audithawk_correlation_late_total",
                &[("rule", id), ("outcome", "applied")],
                1,
            );
        }
        match outcome {
            Outcome::Quiet => {}
            Outcome::TooOld => {
                m.count(
                    "audithawk_correlation_late_total",
                    &[("rule", id), ("outcome", "too_late")],
                    1,
                );
            }
            Outcome::Fire(f) => {
                if let Some(g) = sh.groups[corr].remove(&rec.key) {
                    sh.bytes = sh.bytes.saturating_sub(GROUP_SLOT_BYTES + g.heap_bytes());
                }
                if let Some(ev) = self.held_event(&sh.log, &rec, live) {
                    self.fire(sh, corr, rec.pos as usize, rec.key, &ev, f, out);
                }
            }
        }
    }

    /// A correlation fired for group `key`: suppression, the alert, and the chain.
    #[allow(clippy::too_many_arguments)]
    fn fire(
        &self,
        sh: &mut Shard,
        corr: usize,
        pos: usize,
        key: u128,
        ev: &Arc<EvRef>,
        f: Firing,
        out: &mut Vec<Alert>,
    ) {
        let c = &self.plan.corrs[corr];
        let Ok(mut parsed) = AuditEvent::parse(&ev.raw) else {
            // The text was parsed once already; this cannot fail short of memory corruption.
            return;
        };
        parsed.cluster = ev.cluster.clone();
        let cid = self.clocks.intern(ev.cluster.as_ref());
        let mut emit = c.emits || self.emit_all;
        let mut suppressed = 0;
        if let Some(iv) = c.suppress_us {
            let entry = sh.supp[corr]
                .entry(key)
                .or_insert((cid, Default::default()));
            match entry.1.offer(f.end, iv) {
                Verdict::Suppress => {
                    emit = false;
                    self.cfg.metrics.count(
                        "audithawk_suppressed_total",
                        &[("rule", &c.def.meta.id)],
                        1,
                    );
                }
                Verdict::Emit { suppressed: n } => suppressed = n,
            }
        }
        if emit {
            let a = self.build_alert(corr, pos, key, &parsed, &f, suppressed);
            // Counted in audithawk_alerts_total by whoever takes it from `out` (engine,
            // ticker, flush), like every other alert.
            out.push(a);
        }
        // Chain: the firing is an event of every correlation that references this one. It
        // is applied here, under the same shard lock, so the outer correlation sees it in
        // event-time order relative to its other inputs.
        let parents = self.plan.parents[corr].clone();
        let src = RecSrc {
            audit: ev.audit.clone(),
            tie: ev.tie,
            text: Some(Held::Shared(ev.clone())),
        };
        for (p, ppos) in parents {
            let mut recs = Vec::new();
            self.records_for(
                p as usize,
                ppos as usize,
                &parsed,
                f.end,
                cid,
                &src,
                &mut recs,
            );
            // Chained correlations share one shard per cluster: this one.
            for (_, r) in recs {
                let wm = self.clocks.watermark(cid, self.lateness);
                self.apply(sh, r, None, false, wm, out);
            }
        }
    }

    fn build_alert(
        &self,
        corr: usize,
        pos: usize,
        key: u128,
        ev: &AuditEvent<'_>,
        f: &Firing,
        suppressed: u64,
    ) -> Alert {
        let c = &self.plan.corrs[corr];
        let mut a = Alert::new(&c.def.meta, ev, Utc::now());
        let new_terms = matches!(c.def.kind, CorrelationKind::NewTerms { .. });
        let (names, paths): (Vec<&String>, &[FieldPath]) = if new_terms {
            match &c.def.kind {
                CorrelationKind::NewTerms { fields, .. } => {
                    (fields.iter().collect(), &c.term_paths)
                }
                _ => (Vec::new(), &[]),
            }
        } else {
            (
                c.def.group_by.iter().collect(),
                c.group_paths.get(pos).map_or(&[][..], Vec::as_slice),
            )
        };
        let (cs, _) = combos(ev, ev.cluster.as_deref(), paths);
        let vals = cs
            .into_iter()
            .find(|(_, k)| *k == key)
            .map(|(v, _)| v)
            .unwrap_or_default();
        let mut group = serde_json::Map::new();
        for (i, n) in names.iter().enumerate() {
            let v = vals.get(i).cloned().flatten();
            group.insert((*n).clone(), v.map_or(Value::Null, Value::String));
        }
        let ids: Vec<String> = f
            .hits
            .iter()
            .rev()
            .take(self.cfg.max_audit_ids)
            .rev()
            .map(|h| h.id.render())
            .collect();
        let mut o = serde_json::Map::new();
        o.insert("type".into(), c.def.kind.as_str().into());
        o.insert("rules".into(), json!(c.def.rules));
        if new_terms {
            o.insert("fields".into(), Value::Object(group.clone()));
            o.insert("history".into(), format_duration(c.history / 1000).into());
            o.insert("firstSeen".into(), micros_to_rfc3339(f.end).into());
        } else {
            o.insert("group".into(), Value::Object(group.clone()));
            o.insert("timespan".into(), format_duration(c.def.timespan_ms).into());
            o.insert("condition".into(), c.def.condition.to_json());
            o.insert("count".into(), f.count.into());
            o.insert(
                "window".into(),
                json!({"start": micros_to_rfc3339(f.start), "end": micros_to_rfc3339(f.end)}),
            );
        }
        if let CorrelationKind::ValueCount { field } = &c.def.kind {
            o.insert("field".into(), field.clone().into());
            o.insert(
                "values".into(),
                json!(f.values.iter().take(32).collect::<Vec<_>>()),
            );
        }
        if matches!(
            c.def.kind,
            CorrelationKind::Temporal | CorrelationKind::TemporalOrdered
        ) {
            let seq: Vec<Value> = f
                .hits
                .iter()
                .zip(&f.positions)
                .map(|(h, p)| {
                    json!({"rule": c.def.rules.get(*p), "time": micros_to_rfc3339(h.t), "auditID": h.id.render()})
                })
                .collect();
            o.insert("sequence".into(), Value::Array(seq));
        }
        o.insert("auditIDs".into(), json!(ids));
        o.insert("auditIDsTotal".into(), f.total.into());
        o.insert("suppressedRepeats".into(), suppressed.into());
        a.timestamp = micros_to_rfc3339(f.end);
        let key_text = format!(
            "{}\u{0}{key:x}\u{0}{}\u{0}{}",
            c.def.meta.id, f.start, f.end
        );
        a.event.id = uuid::Uuid::new_v5(&CORR_NS, key_text.as_bytes()).to_string();
        let group_desc = group
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("<none>")))
            .collect::<Vec<_>>()
            .join(", ");
        a.message = match &c.def.kind {
            CorrelationKind::EventCount => {
                format!(
                    "{}: {} events for {group_desc} within {}",
                    c.def.meta.title,
                    f.count,
                    format_duration(c.def.timespan_ms)
                )
            }
            CorrelationKind::ValueCount { field } => format!(
                "{}: {} distinct {field} for {group_desc} within {}",
                c.def.meta.title,
                f.count,
                format_duration(c.def.timespan_ms)
            ),
            CorrelationKind::Temporal | CorrelationKind::TemporalOrdered => format!(
                "{}: {} of {} rules matched for {group_desc} within {}",
                c.def.meta.title,
                f.count,
                c.def.rules.len(),
                format_duration(c.def.timespan_ms)
            ),
            CorrelationKind::NewTerms { .. } => {
                format!("{}: first seen {group_desc}", c.def.meta.title)
            }
        };
        a.correlation = Some(Value::Object(o));
        a
    }

    /// Forces `cluster`'s watermark to at least `t` (for a source that knows no earlier
    /// event can follow) and applies what that releases.
    pub fn advance_watermark(&self, cluster: Option<&str>, t: DateTime<Utc>, out: &mut Vec<Alert>) {
        let name: Option<Arc<str>> = cluster.map(Arc::from);
        let cid = self.clocks.intern(name.as_ref());
        if let Some(c) = self.clocks.get(cid) {
            c.forced.fetch_max(t.timestamp_micros(), Ordering::AcqRel);
        }
        self.drain_all(out);
    }

    fn drain_all(&self, out: &mut Vec<Alert>) {
        for s in self.shards.iter() {
            let mut sh = s.lock();
            self.drain(&mut sh, None, out);
        }
    }

    /// Periodic work on the wall clock (call every second or so): a cluster whose newest
    /// event time has not moved for the allowed lateness is idle, and its held records are
    /// released; expired state is swept; a snapshot is written every `snapshot_interval`.
    pub fn tick(&self, now: Instant, out: &mut Vec<Alert>) -> Result<(), StateError> {
        let lateness = self.cfg.allowed_lateness;
        for c in self.clocks.all() {
            let seen = c.max_seen.load(Ordering::Acquire);
            let mut idle = c.idle.lock();
            match idle.1 {
                Some(since) if idle.0 == seen => {
                    if now.saturating_duration_since(since) >= lateness && seen != i64::MIN {
                        c.forced.fetch_max(seen.saturating_add(1), Ordering::AcqRel);
                    }
                }
                _ => *idle = (seen, Some(now)),
            }
        }
        self.drain_all(out);
        if let Some(dir) = &self.cfg.state_dir {
            let due = self
                .last_snapshot
                .lock()
                .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.snapshot_interval);
            if due {
                *self.last_snapshot.lock() = Some(now);
                self.snapshot(&dir.join(SNAPSHOT_FILE))?;
            }
        }
        Ok(())
    }

    /// End of input (a scanned file, or a test): releases every held record and decides
    /// every open upper-bounded window.
    pub fn flush(&self, out: &mut Vec<Alert>) {
        for c in self.clocks.all() {
            let seen = c.max_seen.load(Ordering::Acquire);
            if seen != i64::MIN {
                c.forced.fetch_max(seen.saturating_add(1), Ordering::AcqRel);
            }
        }
        self.drain_all(out);
        for s in self.shards.iter() {
            let mut sh = s.lock();
            self.sweep(&mut sh, true, out);
        }
    }

    /// The snapshot file under `state_dir`, if state is persisted.
    pub fn snapshot_path(&self) -> Option<std::path::PathBuf> {
        self.cfg.state_dir.as_ref().map(|d| d.join(SNAPSHOT_FILE))
    }

    /// At start: restores the snapshot under `state_dir` (no-op without one).
    pub fn load(&self) -> Result<RestoreStats, StateError> {
        match self.snapshot_path() {
            Some(p) => self.restore(&p),
            None => Ok(RestoreStats::default()),
        }
    }

    /// At shutdown: writes the snapshot under `state_dir` (no-op without one). Held
    /// records are saved, not flushed, so they are applied in order after the restart.
    pub fn save(&self) -> Result<Option<StateStats>, StateError> {
        match self.snapshot_path() {
            Some(p) => self.snapshot(&p).map(Some),
            None => Ok(None),
        }
    }

    /// Current size of the state.
    pub fn stats(&self) -> StateStats {
        let mut st = StateStats::default();
        for s in self.shards.iter() {
            let sh = s.lock();
            st.groups += sh.groups.iter().map(HashMap::len).sum::<usize>();
            st.tuples += sh.terms.iter().map(|t| t.seen.len()).sum::<usize>();
            st.pending += sh
                .pending
                .iter()
                .map(super::state::Pending::len)
                .sum::<usize>();
            st.bytes += sh.bytes + sh.log.bytes();
        }
        st
    }

    /// Writes all state (groups, baselines, suppression, held records, clocks) to `path`
    /// atomically (temporary file, fsync, rename).
    pub fn snapshot(&self, path: &Path) -> Result<StateStats, StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = self.snapshot_file();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        {
            let f = std::fs::File::create(&tmp).map_err(io)?;
            let mut w = std::io::BufWriter::new(f);
            serde_json::to_writer(&mut w, &file).map_err(|e| io(std::io::Error::other(e)))?;
            let f = w.into_inner().map_err(|e| io(e.into_error()))?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(self.stats())
    }

    /// The same snapshot as [`Correlator::snapshot`] writes, as JSON bytes (Kafka detectors
    /// keep it in the state topic).
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        // Plain structs of numbers and strings: serialising into a Vec cannot fail.
        serde_json::to_vec(&self.snapshot_file()).unwrap_or_default()
    }

    fn snapshot_file(&self) -> SnapshotFile {
        let clocks = self.clocks.all();
        let mut corrs: Vec<CorrSnap> = self
            .plan
            .corrs
            .iter()
            .enumerate()
            .map(|(i, c)| CorrSnap {
                id: c.def.meta.id.clone(),
                fingerprint: c.fingerprint,
                learning_start: self.learning_start[i].load(Ordering::Acquire),
                groups: Vec::new(),
                terms: Vec::new(),
                supp: Vec::new(),
                pending: Vec::new(),
            })
            .collect();
        for s in self.shards.iter() {
            let sh = s.lock();
            for (i, cs) in corrs.iter_mut().enumerate() {
                cs.groups
                    .extend(sh.groups[i].iter().map(|(k, g)| (*k, g.clone())));
                cs.terms
                    .extend(sh.terms[i].seen.iter().map(|(k, v)| (*k, *v)));
                cs.supp
                    .extend(sh.supp[i].iter().map(|(k, (c, s))| (*k, *c, *s)));
            }
            for p in &sh.pending {
                for r in p.values() {
                    let Some(ev) = self.held_event(&sh.log, r, None) else {
                        continue;
                    };
                    if let Some(cs) = corrs.get_mut(r.corr as usize) {
                        cs.pending.push(SnapRecord {
                            t: r.t,
                            corr: r.corr,
                            pos: r.pos,
                            key: r.key,
                            cluster: r.cluster,
                            value: r.value.clone(),
                            ev,
                        });
                    }
                }
            }
        }
        SnapshotFile {
            version: SNAPSHOT_VERSION,
            written_at: Utc::now().to_rfc3339(),
            clusters: clocks
                .iter()
                .map(|c| ClusterSnap {
                    name: c.name.as_deref().map(str::to_string),
                    max_seen: c.max_seen.load(Ordering::Acquire),
                    forced: c.forced.load(Ordering::Acquire),
                })
                .collect(),
            correlations: corrs,
        }
    }

    /// Restores state written by [`Correlator::snapshot`]. A missing file is an empty
    /// restore; state of correlations that no longer exist or whose definition changed is
    /// dropped (counted in the result).
    pub fn restore(&self, path: &Path) -> Result<RestoreStats, StateError> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RestoreStats::default())
            }
            Err(source) => {
                return Err(StateError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        self.restore_bytes(&text, path)
    }

    /// Restores a snapshot held in memory (`origin` names it in errors).
    pub fn restore_bytes(&self, text: &[u8], origin: &Path) -> Result<RestoreStats, StateError> {
        let path = origin;
        let file: SnapshotFile = serde_json::from_slice(text).map_err(|e| StateError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if file.version != SNAPSHOT_VERSION {
            return Err(StateError::Corrupt {
                path: path.to_path_buf(),
                message: format!("version {} (expected {SNAPSHOT_VERSION})", file.version),
            });
        }
        // Remap interned cluster ids.
        let mut cmap: Vec<(u16, Option<Arc<str>>)> = Vec::new();
        for c in &file.clusters {
            let name: Option<Arc<str>> = c.name.as_deref().map(Arc::from);
            let id = self.clocks.intern(name.as_ref());
            if let Some(clock) = self.clocks.get(id) {
                clock.max_seen.fetch_max(c.max_seen, Ordering::AcqRel);
                clock.forced.fetch_max(c.forced, Ordering::AcqRel);
            }
            cmap.push((id, name));
        }
        let remap = |c: u16| cmap.get(c as usize).cloned().unwrap_or((c, None));
        let mut st = RestoreStats::default();
        let by_id: HashMap<&str, usize> = self
            .plan
            .corrs
            .iter()
            .enumerate()
            .map(|(i, c)| (c.def.meta.id.as_str(), i))
            .collect();
        for cs in file.correlations {
            let Some(&i) = by_id
                .get(cs.id.as_str())
                .filter(|&&i| self.plan.corrs[i].fingerprint == cs.fingerprint)
            else {
                st.dropped_rules += 1;
                continue;
            };
            self.learning_start[i].fetch_min(cs.learning_start, Ordering::AcqRel);
            for (k, mut g) in cs.groups {
                let (cid, name) = remap(g.cluster);
                g.cluster = cid;
                let s = self.route(i, k, name.as_deref());
                let mut sh = self.shards[s].lock();
                sh.bytes += GROUP_SLOT_BYTES + g.heap_bytes();
                sh.groups[i].insert(k, g);
                st.groups += 1;
            }
            for (k, mut seen) in cs.terms {
                let (cid, name) = remap(seen.cluster);
                seen.cluster = cid;
                let s = self.route(i, k, name.as_deref());
                let mut sh = self.shards[s].lock();
                sh.bytes += ENTRY_BYTES;
                sh.terms[i].seen.insert(k, seen);
                st.tuples += 1;
            }
            for (k, c, s) in cs.supp {
                let (cid, name) = remap(c);
                let sidx = self.route(i, k, name.as_deref());
                self.shards[sidx].lock().supp[i].insert(k, (cid, s));
            }
            for r in cs.pending {
                let mut r = r.into_record();
                let (cid, name) = remap(r.cluster);
                r.cluster = cid;
                r.corr = i as u32;
                let s = self.route(i, r.key, name.as_deref());
                let mut sh = self.shards[s].lock();
                sh.bytes += r.held_bytes();
                match sh.pending_mut(cid).insert(r) {
                    Some(old) => Self::unhold(&mut sh, &old),
                    None => st.pending += 1,
                }
            }
        }
        Ok(st)
    }

    /// Runs every correlation's `examples` (see docs/correlation.md) with a fresh state per
    /// sequence: `evaluate` is the stateless rule evaluation (`RuleSet::evaluate`). Each
    /// positive sequence must make the correlation alert; no negative one may.
    pub fn run_examples(
        &self,
        evaluate: &dyn Fn(&AuditEvent<'_>, &mut Vec<usize>),
    ) -> Vec<ExampleFailure> {
        let mut fails = Vec::new();
        for c in &self.plan.corrs {
            let ex = &c.def.examples;
            for (positive, seqs) in [(true, &ex.positive), (false, &ex.negative)] {
                for (i, seq) in seqs.iter().enumerate() {
                    let fail = |message: String| ExampleFailure {
                        rule_id: c.def.meta.id.clone(),
                        file: c.def.file.clone(),
                        positive,
                        index: i,
                        message,
                    };
                    let mut fresh = self.fresh();
                    fresh.emit_all = true;
                    let mut out = Vec::new();
                    let mut hits = Vec::new();
                    let mut bad = None;
                    for (j, v) in seq.iter().enumerate() {
                        let text = v.to_string();
                        let ev = match AuditEvent::parse(&text) {
                            Ok(e) => e,
                            Err(e) => {
                                bad = Some(format!("event {j}: {e}"));
                                break;
                            }
                        };
                        if ev.event_time().is_none() {
                            bad = Some(format!(
                                "event {j}: no stageTimestamp or requestReceivedTimestamp"
                            ));
                            break;
                        }
                        hits.clear();
                        evaluate(&ev, &mut hits);
                        fresh.observe(&hits, &ev, &mut out);
                    }
                    if let Some(b) = bad {
                        fails.push(fail(b));
                        continue;
                    }
                    fresh.flush(&mut out);
                    let fired = out.iter().any(|a| a.rule.id == c.def.meta.id);
                    if fired != positive {
                        fails.push(fail(if positive {
                            "expected an alert, got none".into()
                        } else {
                            format!(
                                "expected no alert, got: {}",
                                out.iter()
                                    .find(|a| a.rule.id == c.def.meta.id)
                                    .map(|a| a.message.clone())
                                    .unwrap_or_default()
                            )
                        }));
                    }
                }
            }
        }
        fails
    }
}

/// A correlation example that did not behave as declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExampleFailure {
    /// The correlation.
    pub rule_id: String,
    /// Its file.
    pub file: String,
    /// A positive (must alert) or negative (must not) example.
    pub positive: bool,
    /// Index of the sequence.
    pub index: usize,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for ExampleFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: correlation {}: {} example {}: {}",
            self.file,
            self.rule_id,
            if self.positive {
                "positive"
            } else {
                "negative"
            },
            self.index,
            self.message
        )
    }
}

/// Namespace of correlation alert ids (a fixed random UUID).
const CORR_NS: uuid::Uuid = uuid::Uuid::from_u128(0x3c5e_77a1_9d0b_4f62_8e14_a2b3_c4d5_e6f7);

#[cfg(test)]
mod tests {
    use super::*;

    /// The hot-path key builder and the alert-side combination builder must agree, or an
    /// alert could not name its group.
    #[test]
    fn keys_into_matches_combos() {
        let ev = AuditEvent::parse(
            r#"{"auditID":"a","verb":"get","user":{"username":"u","groups":["b","a","b"]},"sourceIPs":["1.1.1.1","2.2.2.2"],"responseStatus":{"code":403}}"#,
        )
        .unwrap();
        for paths in [
            vec!["user.username"],
            vec!["user.groups"],
            vec!["user.groups", "sourceIPs", "responseStatus.code"],
            vec!["objectRef.namespace", "user.username"],
            vec![],
        ] {
            let paths: Vec<FieldPath> = paths.into_iter().map(FieldPath::parse).collect();
            for cluster in [None, Some("prod")] {
                let (cs, t1) = combos(&ev, cluster, &paths);
                let mut keys = Vec::new();
                let t2 = keys_into(&ev, cluster, &paths, &mut |k| keys.push(k));
                assert_eq!(
                    cs.iter().map(|c| c.1).collect::<Vec<_>>(),
                    keys,
                    "{paths:?}"
                );
                assert_eq!(t1, t2);
            }
        }
        let (cs, _) = combos(
            &ev,
            None,
            &[
                FieldPath::parse("user.groups"),
                FieldPath::parse("sourceIPs"),
            ],
        );
        assert_eq!(cs.len(), 4, "2 distinct groups x 2 IPs");
        assert_eq!(
            cs[0].0,
            [Some("a".to_string()), Some("1.1.1.1".to_string())]
        );
    }
}
