//! The rule index: which rules can possibly match an event, by verb and resource.
//!
//! Most rules pin the verb and/or `objectRef.resource` with plain equality. The index keeps
//! each rule in exactly one kind of bucket: (verb, resource) pairs, verb only, resource only,
//! or always. An event looks up one bucket of each kind, so a rule is visited at most once
//! and only rules that could match are evaluated. The index is a pre-filter: a rule found
//! through it is still evaluated in full, so it may only ever over-approximate.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash (rustc's hasher): keys are short verb/resource names chosen by rule authors, not
/// attacker-controlled map growth, so SipHash's DoS resistance buys nothing and costs a
/// noticeable share of the per-event lookup.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Above this many (verb, resource) pairs a rule goes into verb buckets only, to keep the
/// index small.
const MAX_PAIRS: usize = 64;

/// Lookup keys are lower-cased into a stack buffer of this size; longer event values cannot
/// equal an indexed key that is shorter, and no indexed key is longer.
const KEY_BUF: usize = 96;

#[derive(Debug, Default)]
struct VerbEntry {
    only: Vec<u32>,
    by_resource: FxMap<Box<str>, Vec<u32>>,
}

/// Rule indices bucketed by the verbs and resources they can match.
#[derive(Debug, Default)]
pub(crate) struct Index {
    always: Vec<u32>,
    by_verb: FxMap<Box<str>, VerbEntry>,
    by_resource: FxMap<Box<str>, Vec<u32>>,
    /// Rules whose constraints are contradictory (empty sets): never evaluated.
    never: Vec<u32>,
    /// Longest key, so longer event values skip the lookup.
    max_key: usize,
}

/// Lower-cases `s` into `buf` when it has ASCII upper-case letters; `None` when too long
/// to be any indexed key.
fn lower<'b>(s: &'b str, buf: &'b mut [u8; KEY_BUF], max: usize) -> Option<&'b str> {
    if s.len() > max || s.len() > KEY_BUF {
        return None;
    }
    if !s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(s);
    }
    let out = &mut buf[..s.len()];
    out.copy_from_slice(s.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

impl Index {
    /// Adds rule `i` with its verb and resource constraints (lower-cased value sets).
    pub fn add(
        &mut self,
        i: usize,
        verbs: Option<&BTreeSet<String>>,
        resources: Option<&BTreeSet<String>>,
    ) {
        let i = i as u32;
        let mut note = |s: &String| self.max_key = self.max_key.max(s.len());
        if let Some(v) = verbs {
            v.iter().for_each(&mut note);
        }
        if let Some(r) = resources {
            r.iter().for_each(&mut note);
        }
        match (verbs, resources) {
            (Some(v), _) if v.is_empty() => self.never.push(i),
            (_, Some(r)) if r.is_empty() => self.never.push(i),
            (Some(v), Some(r)) if v.len() * r.len() <= MAX_PAIRS => {
                for verb in v {
                    let e = self.by_verb.entry(verb.as_str().into()).or_default();
                    for res in r {
                        e.by_resource
                            .entry(res.as_str().into())
                            .or_default()
                            .push(i);
                    }
                }
            }
            (Some(v), _) => {
                for verb in v {
                    self.by_verb
                        .entry(verb.as_str().into())
                        .or_default()
                        .only
                        .push(i);
                }
            }
            (None, Some(r)) => {
                for res in r {
                    self.by_resource
                        .entry(res.as_str().into())
                        .or_default()
                        .push(i);
                }
            }
            (None, None) => self.always.push(i),
        }
    }

    /// Calls `f` with every candidate rule for an event with this verb and resource.
    #[inline]
    pub fn candidates(&self, verb: Option<&str>, resource: Option<&str>, mut f: impl FnMut(usize)) {
        for &i in &self.always {
            f(i as usize);
        }
        let mut rbuf = [0u8; KEY_BUF];
        let res = resource.and_then(|r| lower(r, &mut rbuf, self.max_key));
        if let Some(r) = res {
            if let Some(list) = self.by_resource.get(r) {
                for &i in list {
                    f(i as usize);
                }
            }
        }
        let mut vbuf = [0u8; KEY_BUF];
        if let Some(v) = verb.and_then(|v| lower(v, &mut vbuf, self.max_key)) {
            if let Some(e) = self.by_verb.get(v) {
                for &i in &e.only {
                    f(i as usize);
                }
                if let Some(r) = res {
                    if let Some(list) = e.by_resource.get(r) {
                        for &i in list {
                            f(i as usize);
                        }
                    }
                }
            }
        }
    }

    /// Counts of rules per bucket kind: (always, verb only, resource only, pairs, never),
    /// for diagnostics and tests.
    pub fn stats(&self) -> (usize, usize, usize, usize, usize) {
        let uniq = |it: &mut dyn Iterator<Item = u32>| it.collect::<BTreeSet<u32>>().len();
        (
            self.always.len(),
            uniq(&mut self.by_verb.values().flat_map(|e| e.only.iter().copied())),
            uniq(&mut self.by_resource.values().flatten().copied()),
            uniq(
                &mut self
                    .by_verb
                    .values()
                    .flat_map(|e| e.by_resource.values().flatten().copied()),
            ),
            self.never.len(),
        )
    }
}
