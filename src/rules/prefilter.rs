//! The literal prefilter: rules the verb/resource index cannot narrow (user-agent and URI
//! rules, say) usually still need some text to occur in one field. For each such rule the
//! compiler derives a set of needles, one of which must occur (ASCII case-insensitively)
//! in the field for the rule to match. All needles on one field go into a single
//! Aho-Corasick automaton, scanned at most once per event and only when a candidate rule
//! asks, so twenty `userAgent|contains` rules cost one scan instead of twenty.
//!
//! Like the index this only over-approximates: a rule that passes is evaluated in full.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aho_corasick::AhoCorasick;

use super::compile::Detection;
use super::condition::Cond;
use super::matcher::{with_text, Atom, FieldTest, StrAtom, StrPat, TestKind, Tok};
use crate::model::fields::{Accessor, RefField};
use crate::model::{Document, FieldPath};

/// Distinct fields with a prefilter; state per event is a fixed array, so both are capped.
const MAX_FIELDS: usize = 8;
/// Rules per prefilter field (bits in the per-event state).
const MAX_SLOTS: usize = 256;
/// A field is scanned for the prefilter only when at least this many rules share it:
/// for one or two rules, evaluating them directly is cheaper than an overlapping scan.
const MIN_SHARED: usize = 3;

/// "Field `path` contains one of `needles`" (lower-case).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Need {
    pub path: FieldPath,
    pub needles: BTreeSet<String>,
}

impl Need {
    fn score(&self) -> usize {
        self.needles.iter().map(String::len).min().unwrap_or(0)
    }
}

fn longest_lit(toks: &[Tok]) -> String {
    let mut best: &[Tok] = &[];
    for run in toks.split(|t| !matches!(t, Tok::Lit(_))) {
        if run.len() > best.len() {
            best = run;
        }
    }
    let bytes: Vec<u8> = best
        .iter()
        .filter_map(|t| match t {
            Tok::Lit(b) => Some(b.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    // A run split inside a multi-byte character is still a valid byte needle, but the
    // automaton wants text; drop such runs (the rule simply gets no prefilter).
    String::from_utf8(bytes).unwrap_or_default()
}

fn atom_needles(a: &Atom) -> Option<Vec<String>> {
    let Atom::Str(StrAtom { pat, .. }) = a else {
        return None;
    };
    let v = match pat {
        StrPat::Eq(s) | StrPat::Prefix(s) | StrPat::Suffix(s) => vec![s.to_ascii_lowercase()],
        StrPat::Contains(_, ns) => ns.iter().map(|n| n.to_ascii_lowercase()).collect(),
        StrPat::Glob(t) => vec![longest_lit(t)],
        StrPat::Any | StrPat::Regex(_) => return None,
    };
    (!v.iter().any(String::is_empty)).then_some(v)
}

fn test_need(t: &FieldTest) -> Option<Need> {
    if t.paths.len() != 1 {
        return None;
    }
    let path = &t.paths[0];
    // Verb and resource are the index's job; scanning them would only add work.
    if matches!(
        path.accessor,
        Accessor::Verb | Accessor::ObjectRef(RefField::Resource)
    ) {
        return None;
    }
    let needles: BTreeSet<String> = match &t.kind {
        TestKind::Any { atoms, null: false } => {
            let mut all = BTreeSet::new();
            for a in atoms.iter() {
                all.extend(atom_needles(a)?);
            }
            all
        }
        // Every atom must match: any one atom's needles are required.
        TestKind::All(atoms) => atoms
            .iter()
            .filter_map(atom_needles)
            .max_by_key(|v| v.iter().map(String::len).min().unwrap_or(0))?
            .into_iter()
            .collect(),
        _ => return None,
    };
    (!needles.is_empty()).then(|| Need {
        path: path.clone(),
        needles,
    })
}

fn best(it: impl Iterator<Item = Option<Need>>) -> Option<Need> {
    it.flatten().max_by_key(Need::score)
}

fn union(it: impl Iterator<Item = Option<Need>>) -> Option<Need> {
    let mut acc: Option<Need> = None;
    for n in it {
        let n = n?;
        match &mut acc {
            None => acc = Some(n),
            Some(a) if a.path == n.path => a.needles.extend(n.needles),
            Some(_) => return None,
        }
    }
    acc
}

fn cond_need(det: &Detection, c: &Cond) -> Option<Need> {
    match c {
        Cond::Sel(i) => union(
            det.selections[*i]
                .groups
                .iter()
                .map(|g| best(g.iter().map(test_need))),
        ),
        Cond::And(cs) => best(cs.iter().map(|c| cond_need(det, c))),
        Cond::Or(cs) => union(cs.iter().map(|c| cond_need(det, c))),
        Cond::Not(_) => None,
    }
}

/// The needle requirement of a detection, if it has one worth checking.
pub(crate) fn need(det: &Detection) -> Option<Need> {
    cond_need(det, &det.cond).filter(|n| n.score() >= 2)
}

#[derive(Debug)]
struct PfField {
    path: FieldPath,
    ac: AhoCorasick,
    /// Pattern id -> slots of the rules needing it.
    pat_slots: Vec<Vec<u16>>,
}

/// Needle automatons per field and each rule's (field, slot).
#[derive(Debug, Default)]
pub(crate) struct Prefilter {
    fields: Vec<PfField>,
    req: Vec<Option<(u8, u16)>>,
}

/// Per-event scan results; lives on the stack.
pub(crate) struct PfState {
    done: u8,
    bits: [[u64; MAX_SLOTS / 64]; MAX_FIELDS],
}

impl PfState {
    /// Nothing scanned yet.
    pub fn new() -> Self {
        PfState {
            done: 0,
            bits: [[0; MAX_SLOTS / 64]; MAX_FIELDS],
        }
    }
}

impl Prefilter {
    /// Builds the prefilter from each rule's requirement.
    pub fn build(needs: Vec<Option<Need>>) -> Prefilter {
        let mut by_path: HashMap<FieldPath, Vec<usize>> = HashMap::new();
        for (i, n) in needs.iter().enumerate() {
            if let Some(n) = n {
                by_path.entry(n.path.clone()).or_default().push(i);
            }
        }
        let mut paths: Vec<(FieldPath, Vec<usize>)> = by_path.into_iter().collect();
        // Fields shared by the most rules first; ties by name for a stable order.
        paths.sort_by(|a, b| {
            b.1.len()
                .cmp(&a.1.len())
                .then_with(|| a.0.name.cmp(&b.0.name))
        });
        let mut req = vec![None; needs.len()];
        let mut fields = Vec::new();
        for (path, rules) in paths
            .into_iter()
            .filter(|(_, r)| r.len() >= MIN_SHARED)
            .take(MAX_FIELDS)
        {
            let mut pats: BTreeMap<&str, Vec<u16>> = BTreeMap::new();
            let mut slotted = Vec::new();
            for (slot, &r) in rules.iter().take(MAX_SLOTS).enumerate() {
                if let Some(n) = &needs[r] {
                    for nd in &n.needles {
                        pats.entry(nd.as_str()).or_default().push(slot as u16);
                    }
                    slotted.push((r, slot as u16));
                }
            }
            let (names, slots): (Vec<&str>, Vec<Vec<u16>>) = pats.into_iter().unzip();
            let Ok(ac) = AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .kind(Some(aho_corasick::AhoCorasickKind::DFA))
                .build(&names)
            else {
                // Too large an automaton: these rules just run unfiltered.
                continue;
            };
            let f = fields.len() as u8;
            for (r, slot) in slotted {
                req[r] = Some((f, slot));
            }
            fields.push(PfField {
                path,
                ac,
                pat_slots: slots,
            });
        }
        Prefilter { fields, req }
    }

    /// Whether rule `rule` may match: its needles occur in its field (scanning the field on
    /// first use in this event). Rules without a requirement always pass.
    #[inline]
    pub fn pass(&self, rule: usize, st: &mut PfState, doc: &dyn Document) -> bool {
        let Some((f, slot)) = self.req.get(rule).copied().flatten() else {
            return true;
        };
        let fi = f as usize;
        if st.done & (1 << f) == 0 {
            st.done |= 1 << f;
            let field = &self.fields[fi];
            let bits = &mut st.bits[fi];
            doc.visit(&field.path, &mut |v| {
                with_text(v, |s| {
                    // Most values contain no needle: the non-overlapping test uses the
                    // automaton's fast prefilter, the overlapping scan only runs on a hit.
                    if !field.ac.is_match(s) {
                        return false;
                    }
                    for m in field.ac.find_overlapping_iter(s) {
                        for &sl in &field.pat_slots[m.pattern().as_usize()] {
                            bits[sl as usize / 64] |= 1 << (sl % 64);
                        }
                    }
                    false
                });
                false
            });
        }
        st.bits[fi][slot as usize / 64] & (1 << (slot % 64)) != 0
    }

    /// Number of rules with a prefilter.
    pub fn rules_covered(&self) -> usize {
        self.req.iter().filter(|r| r.is_some()).count()
    }
}
