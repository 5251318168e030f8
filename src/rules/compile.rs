//! Compiling one Sigma rule document into a matcher.
//!
//! Rules are read as `serde_yaml_ng::Value` rather than derived structs so that every problem
//! can name the selection, field and modifier at fault and point at its line.

use std::collections::BTreeSet;

use aho_corasick::AhoCorasick;
use ipnet::IpNet;
use regex::RegexBuilder;
use serde_yaml_ng::Value;

use super::condition::{self, Cond};
use super::lists::{self, Lists};
use super::mapping;
use super::matcher::{tokenize, Atom, CmpOp, FieldTest, StrAtom, StrPat, TestKind, Tok};
use super::yaml::{get_str, Chunk};
use super::{default_stages, CompiledRule, Examples, RawCorrelation, RuleError};
use crate::model::fields::Accessor;
use crate::model::{Document, Level, RuleMeta, Stage};

/// One selection: an OR of groups, each group an AND of field tests.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    pub name: String,
    pub groups: Vec<Vec<FieldTest>>,
}

/// A compiled detection.
#[derive(Debug, Clone)]
pub(crate) struct Detection {
    pub selections: Vec<Selection>,
    pub cond: Cond,
}

impl Detection {
    fn sel_matches(&self, i: usize, doc: &dyn Document) -> bool {
        self.selections[i]
            .groups
            .iter()
            .any(|g| g.iter().all(|t| t.matches(doc)))
    }

    fn eval(&self, c: &Cond, doc: &dyn Document) -> bool {
        match c {
            Cond::Sel(i) => self.sel_matches(*i, doc),
            Cond::And(cs) => cs.iter().all(|c| self.eval(c, doc)),
            Cond::Or(cs) => cs.iter().any(|c| self.eval(c, doc)),
            Cond::Not(c) => !self.eval(c, doc),
        }
    }

    /// Whether the detection matches the event.
    pub fn matches(&self, doc: &dyn Document) -> bool {
        self.eval(&self.cond, doc)
    }

    /// Every field test of the selections the condition uses.
    pub fn tests(&self) -> impl Iterator<Item = &FieldTest> {
        self.selections
            .iter()
            .flat_map(|s| s.groups.iter().flatten())
    }

    /// The set of values `pick` allows, derived through the condition: AND narrows, OR
    /// unions, NOT gives no constraint. `None` means unconstrained.
    pub fn constraint(
        &self,
        pick: &dyn Fn(&FieldTest) -> Option<BTreeSet<String>>,
    ) -> Option<BTreeSet<String>> {
        self.cons(&self.cond, pick)
    }

    fn cons(
        &self,
        c: &Cond,
        pick: &dyn Fn(&FieldTest) -> Option<BTreeSet<String>>,
    ) -> Option<BTreeSet<String>> {
        match c {
            Cond::Sel(i) => union_all(
                self.selections[*i]
                    .groups
                    .iter()
                    .map(|g| intersect_all(g.iter().map(pick))),
            ),
            Cond::And(cs) => intersect_all(cs.iter().map(|c| self.cons(c, pick))),
            Cond::Or(cs) => union_all(cs.iter().map(|c| self.cons(c, pick))),
            Cond::Not(_) => None,
        }
    }
}

fn intersect_all(it: impl Iterator<Item = Option<BTreeSet<String>>>) -> Option<BTreeSet<String>> {
    let mut acc: Option<BTreeSet<String>> = None;
    for s in it.flatten() {
        acc = Some(match acc {
            None => s,
            Some(a) => a.intersection(&s).cloned().collect(),
        });
    }
    acc
}

fn union_all(it: impl Iterator<Item = Option<BTreeSet<String>>>) -> Option<BTreeSet<String>> {
    let mut acc = BTreeSet::new();
    for s in it {
        acc.extend(s?);
    }
    Some(acc)
}

/// The exact values (lower-cased) a test on `which` allows, if it is a plain equality test.
pub(crate) fn eq_values(t: &FieldTest, which: &Accessor) -> Option<BTreeSet<String>> {
    if t.paths.len() != 1 || &t.paths[0].accessor != which {
        return None;
    }
    let TestKind::Any { atoms, null: false } = &t.kind else {
        return None;
    };
    atoms
        .iter()
        .map(|a| match a {
            Atom::Str(StrAtom {
                pat: StrPat::Eq(s), ..
            }) => Some(s.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// What a compiled document turned out to be.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A rule.
    Rule(Box<CompiledRule>),
    /// A correlation document, kept raw.
    Correlation(RawCorrelation),
    /// Not for this engine (another logsource, a filter): a warning.
    Skip(RuleError),
    /// Broken.
    Failed(Vec<RuleError>),
}

/// Parsed modifiers of one field key.
#[derive(Debug, Default)]
struct Mods {
    contains: bool,
    startswith: bool,
    endswith: bool,
    all: bool,
    re: bool,
    re_i: bool,
    re_m: bool,
    re_s: bool,
    cidr: bool,
    exists: bool,
    cmp: Option<CmpOp>,
    expand: bool,
    cased: bool,
}

const UNSUPPORTED: &[&str] = &[
    "base64",
    "base64offset",
    "utf16le",
    "utf16be",
    "utf16",
    "wide",
    "windash",
    "fieldref",
];

fn parse_mods(field: &str, mods: &[&str]) -> Result<Mods, String> {
    let mut m = Mods::default();
    for &x in mods {
        match x {
            "contains" => m.contains = true,
            "startswith" => m.startswith = true,
            "endswith" => m.endswith = true,
            "all" => m.all = true,
            "re" => m.re = true,
            "i" | "m" | "s" if !m.re => {
                return Err(format!(
                    "modifier `{x}` on field `{field}` is a sub-modifier of `re` and must follow it"
                ))
            }
            "i" => m.re_i = true,
            "m" => m.re_m = true,
            "s" => m.re_s = true,
            "cidr" => m.cidr = true,
            "exists" => m.exists = true,
            "gt" => m.cmp = Some(CmpOp::Gt),
            "gte" => m.cmp = Some(CmpOp::Gte),
            "lt" => m.cmp = Some(CmpOp::Lt),
            "lte" => m.cmp = Some(CmpOp::Lte),
            "expand" => m.expand = true,
            "cased" => m.cased = true,
            u if UNSUPPORTED.contains(&u) => {
                return Err(format!(
                    "modifier `{u}` on field `{field}` is not supported"
                ))
            }
            u => return Err(format!("unknown modifier `{u}` on field `{field}`")),
        }
    }
    let positional = [m.contains, m.startswith, m.endswith]
        .iter()
        .filter(|b| **b)
        .count();
    if positional > 1 {
        return Err(format!(
            "field `{field}`: only one of `contains`, `startswith`, `endswith` may be used"
        ));
    }
    let kinds = [m.re, m.cidr, m.exists, m.cmp.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if kinds > 1 || (kinds == 1 && positional > 0) {
        return Err(format!(
            "field `{field}`: `re`, `cidr`, `exists` and `gt`/`gte`/`lt`/`lte` cannot be combined with each other or with `contains`/`startswith`/`endswith`"
        ));
    }
    if m.expand && (m.exists || m.cmp.is_some()) {
        return Err(format!(
            "field `{field}`: `expand` cannot be combined with `exists` or comparisons"
        ));
    }
    Ok(m)
}

/// An atom, or a `contains` needle still to be merged into an automaton.
enum Built {
    Atom(Atom),
    Needle(String, bool),
}

fn lit_run(bytes: &mut Vec<u8>, out: &mut String) {
    if !bytes.is_empty() {
        out.push_str(&regex::escape(&String::from_utf8_lossy(bytes)));
        bytes.clear();
    }
}

fn glob_regex(toks: &[Tok], cased: bool) -> Result<regex::Regex, String> {
    let mut re = String::from(if cased { "(?s)^" } else { "(?si)^" });
    let mut lit = Vec::new();
    for t in toks {
        match t {
            Tok::Lit(b) => lit.push(*b),
            Tok::One => {
                lit_run(&mut lit, &mut re);
                re.push('.');
            }
            Tok::Star => {
                lit_run(&mut lit, &mut re);
                re.push_str(".*");
            }
        }
    }
    lit_run(&mut lit, &mut re);
    re.push('$');
    regex::Regex::new(&re).map_err(|e| e.to_string())
}

fn str_atom(s: &str, m: &Mods) -> Result<Built, String> {
    let mut toks = tokenize(s);
    if (m.contains || m.endswith) && toks.first() != Some(&Tok::Star) {
        toks.insert(0, Tok::Star);
    }
    if (m.contains || m.startswith) && toks.last() != Some(&Tok::Star) {
        toks.push(Tok::Star);
    }
    let cased = m.cased;
    if !cased && !s.is_ascii() {
        // ASCII folding would miss non-ASCII case pairs: let the regex engine fold.
        return Ok(Built::Atom(Atom::Str(StrAtom {
            pat: StrPat::Regex(glob_regex(&toks, false)?),
            cased: false,
        })));
    }
    if !cased {
        for t in &mut toks {
            if let Tok::Lit(b) = t {
                *b = b.to_ascii_lowercase();
            }
        }
    }
    let lits = |ts: &[Tok]| -> Option<String> {
        let mut v = Vec::with_capacity(ts.len());
        for t in ts {
            match t {
                Tok::Lit(b) => v.push(*b),
                _ => return None,
            }
        }
        String::from_utf8(v).ok()
    };
    let n = toks.len();
    let pat = if n == 1 && toks[0] == Tok::Star {
        StrPat::Any
    } else if let Some(l) = lits(&toks) {
        StrPat::Eq(l.into())
    } else if toks[n - 1] == Tok::Star && toks[0] != Tok::Star && lits(&toks[..n - 1]).is_some() {
        StrPat::Prefix(lits(&toks[..n - 1]).unwrap_or_default().into())
    } else if toks[0] == Tok::Star && toks[n - 1] != Tok::Star && lits(&toks[1..]).is_some() {
        StrPat::Suffix(lits(&toks[1..]).unwrap_or_default().into())
    } else if n >= 3 && toks[0] == Tok::Star && toks[n - 1] == Tok::Star {
        match lits(&toks[1..n - 1]) {
            Some(needle) => return Ok(Built::Needle(needle, cased)),
            None => StrPat::Glob(toks.into()),
        }
    } else {
        StrPat::Glob(toks.into())
    };
    Ok(Built::Atom(Atom::Str(StrAtom { pat, cased })))
}

fn build_ac(needles: &[String], cased: bool) -> Result<AhoCorasick, String> {
    AhoCorasick::builder()
        .ascii_case_insensitive(!cased)
        .build(needles)
        .map_err(|e| e.to_string())
}

fn num_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Compiles one `field|modifiers: value(s)` entry.
pub(crate) fn compile_field(key: &str, value: &Value, lists: &Lists) -> Result<FieldTest, String> {
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or("").trim();
    if field.is_empty() {
        return Err(format!(
            "`{key}`: keyword searches (no field name) are not supported; name a field"
        ));
    }
    let mods: Vec<&str> = parts.collect();
    let m = parse_mods(field, &mods)?;
    let paths: Box<[_]> = mapping::map_field(field).into();
    let values: Vec<&Value> = match value {
        Value::Sequence(s) => s.iter().collect(),
        Value::Mapping(_) => {
            return Err(format!(
                "field `{field}`: value must be a scalar or a list, not a map"
            ))
        }
        v => vec![v],
    };
    for v in &values {
        if matches!(v, Value::Sequence(_) | Value::Mapping(_) | Value::Tagged(_)) {
            return Err(format!(
                "field `{field}`: nested lists or maps are not allowed as values"
            ));
        }
    }
    let mk = |kind| {
        Ok(FieldTest {
            field: field.to_string(),
            paths: paths.clone(),
            kind,
        })
    };
    if values.is_empty() {
        return Err(format!("field `{field}`: empty value list"));
    }
    if m.exists {
        return match values[..] {
            [Value::Bool(b)] => mk(TestKind::Exists(*b)),
            _ => Err(format!("field `{field}`: `exists` needs `true` or `false`")),
        };
    }
    let mut built = Vec::new();
    let mut null = false;
    for v in values {
        if let Some(op) = m.cmp {
            let n = num_of(v).ok_or_else(|| {
                format!("field `{field}`: comparison modifier needs a number, got {v:?}")
            })?;
            built.push(Built::Atom(Atom::Cmp(op, n)));
            continue;
        }
        // `cidr` and `re` values may come from lists too (`sourceIPs|expand|cidr`).
        let texts = |what: &str| -> Result<Vec<String>, String> {
            let s = super::yaml::scalar_text(v)
                .ok_or_else(|| format!("field `{field}`: `{what}` needs a string value"))?;
            if m.expand {
                lists::expand(&s, lists).map_err(|e| format!("field `{field}`: {e}"))
            } else {
                Ok(vec![s])
            }
        };
        if m.cidr {
            for s in texts("cidr")? {
                let net = s
                    .trim()
                    .parse::<IpNet>()
                    .or_else(|_| s.trim().parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("field `{field}`: `{s}` is not a valid CIDR network"))?;
                built.push(Built::Atom(Atom::Cidr(net)));
            }
            continue;
        }
        if m.re {
            for s in texts("re")? {
                let re = RegexBuilder::new(&s)
                    .case_insensitive(m.re_i)
                    .multi_line(m.re_m)
                    .dot_matches_new_line(m.re_s)
                    .build()
                    .map_err(|e| {
                        format!("field `{field}`: invalid regular expression `{s}`: {e}")
                    })?;
                built.push(Built::Atom(Atom::Str(StrAtom {
                    pat: StrPat::Regex(re),
                    cased: true,
                })));
            }
            continue;
        }
        let string_mods = m.contains || m.startswith || m.endswith || m.expand;
        match v {
            Value::Null => null = true,
            Value::Bool(b) if !string_mods => built.push(Built::Atom(Atom::Bool(*b))),
            Value::Number(n) if !string_mods => match n.as_f64() {
                Some(x) => built.push(Built::Atom(Atom::Num(x))),
                None => return Err(format!("field `{field}`: number {n} out of range")),
            },
            other => {
                let s = super::yaml::scalar_text(other)
                    .ok_or_else(|| format!("field `{field}`: unsupported value {other:?}"))?;
                let expanded = if m.expand {
                    lists::expand(&s, lists).map_err(|e| format!("field `{field}`: {e}"))?
                } else {
                    vec![s]
                };
                for s in expanded {
                    built.push(str_atom(&s, &m).map_err(|e| format!("field `{field}`: {e}"))?);
                }
            }
        }
    }
    if m.all {
        if null {
            return Err(format!(
                "field `{field}`: `all` cannot be combined with null"
            ));
        }
        let atoms = built
            .into_iter()
            .map(|b| match b {
                Built::Atom(a) => Ok(a),
                Built::Needle(n, cased) => Ok(Atom::Str(StrAtom {
                    pat: StrPat::Contains(
                        build_ac(std::slice::from_ref(&n), cased)?,
                        Box::new([n.into()]),
                    ),
                    cased,
                })),
            })
            .collect::<Result<Vec<_>, String>>()?;
        return mk(TestKind::All(atoms.into()));
    }
    // Merge every `contains` needle of one case mode into a single automaton.
    let mut atoms = Vec::new();
    let (mut ci, mut cs) = (Vec::new(), Vec::new());
    for b in built {
        match b {
            Built::Atom(a) => atoms.push(a),
            Built::Needle(n, true) => cs.push(n),
            Built::Needle(n, false) => ci.push(n),
        }
    }
    for (needles, cased) in [(ci, false), (cs, true)] {
        if !needles.is_empty() {
            atoms.push(Atom::Str(StrAtom {
                pat: StrPat::Contains(
                    build_ac(&needles, cased)?,
                    needles.iter().map(|n| n.as_str().into()).collect(),
                ),
                cased,
            }));
        }
    }
    if atoms.is_empty() && null {
        return mk(TestKind::Null);
    }
    mk(TestKind::Any {
        atoms: atoms.into(),
        null,
    })
}

/// Context of the document being compiled.
pub(crate) struct DocCtx<'a> {
    /// File label for errors.
    pub file: &'a str,
    /// `builtin` or the file path, for `RuleMeta::source`.
    pub source: &'a str,
    /// The document.
    pub chunk: Chunk<'a>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(s)) => s.iter().filter_map(super::yaml::scalar_text).collect(),
        Some(v) => super::yaml::scalar_text(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// A lint finding recorded at compile time.
#[derive(Debug, Clone)]
pub(crate) struct Note {
    pub line: Option<usize>,
    pub message: String,
}

/// Top-level Event fields (audit.k8s.io/v1 plus audithawk's `cluster`).
const EVENT_FIELDS: &[&str] = &[
    "kind",
    "apiVersion",
    "level",
    "auditID",
    "stage",
    "requestURI",
    "verb",
    "user",
    "impersonatedUser",
    "authenticationMetadata",
    "sourceIPs",
    "userAgent",
    "objectRef",
    "responseStatus",
    "requestObject",
    "responseObject",
    "requestReceivedTimestamp",
    "stageTimestamp",
    "annotations",
    "cluster",
];

/// Why a field can never have a value, if it cannot.
fn unknown_field(t: &FieldTest) -> Option<String> {
    use crate::model::fields::UserField;
    if mapping::is_mapped(&t.field) {
        return None;
    }
    let p = &t.paths[0];
    match &p.accessor {
        Accessor::Raw(segs) => {
            let head = segs.first().map(String::as_str).unwrap_or("");
            let ok = match head {
                "responseStatus" => matches!(
                    segs.get(1).map(String::as_str),
                    Some("metadata" | "details" | "status" | "message" | "reason" | "code")
                ),
                "authenticationMetadata" => true,
                // `user` / `objectRef` subfields the typed schema does not know.
                _ => false,
            };
            (!ok).then(|| {
                if EVENT_FIELDS.contains(&head) {
                    format!(
                        "field `{}` is not part of `{head}` in the audit Event",
                        t.field
                    )
                } else {
                    format!(
                        "field `{}` is not in the audit Event schema (top-level fields: {})",
                        t.field,
                        EVENT_FIELDS.join(", ")
                    )
                }
            })
        }
        Accessor::User(UserField::Other(_)) | Accessor::ImpersonatedUser(UserField::Other(_)) => {
            Some(format!(
                "field `{}` is not part of UserInfo (username, uid, groups, extra.*)",
                t.field
            ))
        }
        _ => None,
    }
}

/// Compiles one YAML document.
pub(crate) fn compile_doc(ctx: &DocCtx<'_>, doc: Value, lists: &Lists) -> Outcome {
    let file = ctx.file;
    let chunk = &ctx.chunk;
    let first = Some(chunk.first_line);
    if !doc.is_mapping() {
        return Outcome::Failed(vec![RuleError {
            file: file.into(),
            line: first,
            rule_id: None,
            message: "a rule document must be a YAML mapping".into(),
        }]);
    }
    if doc.get("correlation").is_some() {
        return Outcome::Correlation(RawCorrelation {
            file: file.to_string(),
            line: first,
            doc,
        });
    }
    let id_raw = get_str(&doc, "id").map(str::to_string);
    let title = get_str(&doc, "title").map(str::to_string);
    let label = id_raw.clone().or_else(|| title.clone());
    let err = |line: Option<usize>, message: String| RuleError {
        file: file.to_string(),
        line: line.or(first),
        rule_id: label.clone(),
        message,
    };
    let Some(detection) = doc.get("detection") else {
        if doc.get("filter").is_some() {
            return Outcome::Skip(err(
                first,
                "Sigma filter documents are not supported; skipped".into(),
            ));
        }
        if doc.get("values").is_some() && doc.get("name").is_some() {
            return Outcome::Skip(err(
                first,
                "this looks like a value list; put list files in a `lists/` directory".into(),
            ));
        }
        return Outcome::Failed(vec![err(
            chunk.key_line("title", None),
            "rule has no `detection`".into(),
        )]);
    };
    // Logsource: only Kubernetes audit logs are ours; anything else is skipped, not an error,
    // so a SigmaHQ checkout can be pointed at wholesale.
    let ls = doc.get("logsource");
    let product = ls.and_then(|l| get_str(l, "product")).unwrap_or("");
    let service = ls.and_then(|l| get_str(l, "service")).unwrap_or("");
    if !product.eq_ignore_ascii_case("kubernetes") || !service.eq_ignore_ascii_case("audit") {
        return Outcome::Skip(err(
            chunk.key_line("logsource", None),
            format!(
                "logsource product `{product}` service `{service}` is not kubernetes/audit; rule skipped"
            ),
        ));
    }

    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let det_line = chunk.key_line("detection", None);

    let level = match doc.get("level") {
        None => {
            notes.push(Note {
                line: first,
                message: "rule has no `level` (medium assumed)".into(),
            });
            Level::Medium
        }
        Some(v) => match v.as_str().and_then(Level::parse) {
            Some(l) => l,
            None => {
                errors.push(err(
                    chunk.key_line("level", None),
                    format!("invalid `level` {v:?}"),
                ));
                Level::Medium
            }
        },
    };
    let id = match &id_raw {
        Some(id) => id.clone(),
        None => {
            notes.push(Note {
                line: first,
                message: "rule has no `id` (one derived from file and title is used)".into(),
            });
            let seed = format!(
                "{file}#{}#{}",
                chunk.first_line,
                title.as_deref().unwrap_or("")
            );
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, seed.as_bytes()).to_string()
        }
    };
    if title.is_none() {
        notes.push(Note {
            line: first,
            message: "rule has no `title`".into(),
        });
    }
    let tags = strings(doc.get("tags"));
    if tags.is_empty() {
        notes.push(Note {
            line: first,
            message: "rule has no `tags` (ATT&CK tags feed the alert's threat fields)".into(),
        });
    }

    // Selections and condition.
    let mut selections = Vec::new();
    let mut cond_texts: Vec<String> = Vec::new();
    match detection {
        Value::Mapping(m) => {
            for (k, v) in m {
                let Some(name) = k.as_str() else {
                    errors.push(err(
                        det_line,
                        format!("detection key {k:?} is not a string"),
                    ));
                    continue;
                };
                match name {
                    "condition" => match v {
                        Value::String(s) => cond_texts.push(s.clone()),
                        Value::Sequence(items) => {
                            cond_texts.extend(items.iter().filter_map(|x| x.as_str().map(str::to_string)))
                        }
                        _ => errors.push(err(
                            chunk.key_line("condition", det_line),
                            "`condition` must be a string".into(),
                        )),
                    },
                    "timeframe" => errors.push(err(
                        chunk.key_line("timeframe", det_line),
                        "`timeframe` (Sigma v1 aggregation) is not supported; write a correlation rule".into(),
                    )),
                    _ => {
                        let sel_line = chunk.key_line(name, det_line);
                        match compile_selection(name, v, lists) {
                            Ok(groups) => selections.push(Selection {
                                name: name.to_string(),
                                groups,
                            }),
                            Err((key, msg)) => {
                                let line = key
                                    .as_deref()
                                    .and_then(|k| chunk.key_line(k, sel_line))
                                    .or(sel_line);
                                errors.push(err(line, format!("selection `{name}`: {msg}")));
                            }
                        }
                    }
                }
            }
        }
        _ => errors.push(err(det_line, "`detection` must be a mapping".into())),
    }
    let cond_line = chunk.key_line("condition", det_line);
    if cond_texts.is_empty() && errors.is_empty() {
        errors.push(err(det_line, "detection has no `condition`".into()));
    }
    let names: Vec<String> = selections.iter().map(|s| s.name.clone()).collect();
    let mut used = vec![false; names.len()];
    let mut conds = Vec::new();
    // A broken selection is missing from `names`; parsing the condition then would report a
    // confusing "undefined selection", so only parse when the selections compiled.
    if errors.is_empty() {
        for text in &cond_texts {
            match condition::parse(text, &names) {
                Ok((c, u)) => {
                    for (a, b) in used.iter_mut().zip(u) {
                        *a |= b;
                    }
                    conds.push(c);
                }
                Err(e) => errors.push(err(cond_line, format!("condition `{text}`: {e}"))),
            }
        }
    }
    for (i, u) in used.iter().enumerate() {
        if !u && errors.is_empty() {
            notes.push(Note {
                line: chunk.key_line(&names[i], det_line),
                message: format!("selection `{}` is never used in the condition", names[i]),
            });
        }
    }

    // Extension keys.
    let stages_line = chunk.key_line("stages", None);
    let explicit_stages = match doc.get("stages") {
        None => None,
        Some(v) => {
            let mut mask = 0u8;
            for s in strings(Some(v)) {
                match Stage::parse_config(&s) {
                    Some(st) => mask |= st.bit(),
                    None => errors.push(err(
                        stages_line,
                        format!(
                            "unknown stage `{s}` in `stages` (RequestReceived, ResponseStarted, ResponseComplete, Panic)"
                        ),
                    )),
                }
            }
            if mask == 0 {
                errors.push(err(
                    stages_line,
                    "`stages` must list at least one stage".into(),
                ));
            }
            // Events without a stage (hand-written samples) are always evaluated.
            Some(mask | Stage::Unknown.bit())
        }
    };
    let examples = match doc.get("examples") {
        None => Examples::default(),
        Some(v) => {
            let seq = |k: &str| -> Result<Vec<Value>, String> {
                match v.get(k) {
                    None => Ok(Vec::new()),
                    Some(Value::Sequence(s)) if s.iter().all(Value::is_mapping) => Ok(s.clone()),
                    Some(_) => Err(format!("`examples.{k}` must be a list of event maps")),
                }
            };
            match (seq("positive"), seq("negative")) {
                (Ok(positive), Ok(negative)) => Examples { positive, negative },
                (Err(e), _) | (_, Err(e)) => {
                    errors.push(err(chunk.key_line("examples", None), e));
                    Examples::default()
                }
            }
        }
    };

    if !errors.is_empty() {
        return Outcome::Failed(errors);
    }
    let cond = if conds.len() == 1 {
        conds.remove(0)
    } else {
        Cond::Or(conds)
    };
    let det = Detection { selections, cond };
    for t in det.tests() {
        if let Some(msg) = unknown_field(t) {
            notes.push(Note {
                line: chunk
                    .key_line(&t.field, det_line)
                    .or_else(|| chunk.text_line(&t.field, det_line)),
                message: format!("{msg}; the rule can never match it"),
            });
        }
        if t.paths[0].accessor == Accessor::ResponseCode {
            if let TestKind::Any { atoms, .. } = &t.kind {
                for a in atoms.iter() {
                    if let Atom::Str(StrAtom {
                        pat: StrPat::Eq(s), ..
                    }) = a
                    {
                        if s.parse::<i64>().is_err() {
                            notes.push(Note {
                                line: chunk.text_line(&t.field, det_line),
                                message: format!(
                                    "`{}` is a number in audit events; the value `{s}` can never match",
                                    t.field
                                ),
                            });
                        }
                    }
                }
            }
        }
    }
    let reads_stage = det
        .tests()
        .any(|t| t.paths.iter().any(|p| p.accessor == Accessor::Stage));
    let stages = explicit_stages.unwrap_or(if reads_stage { 0x1F } else { default_stages() });
    let meta = RuleMeta {
        id: id.clone(),
        title: title.unwrap_or_else(|| id.clone()),
        level,
        tags,
        description: get_str(&doc, "description")
            .unwrap_or("")
            .trim()
            .to_string(),
        references: strings(doc.get("references")),
        author: get_str(&doc, "author").map(str::to_string),
        source: ctx.source.to_string(),
    };
    Outcome::Rule(Box::new(CompiledRule {
        meta,
        stages,
        name: get_str(&doc, "name").map(str::to_string),
        status: get_str(&doc, "status").map(str::to_string),
        file: file.to_string(),
        line: chunk.key_line("title", None).or(first),
        examples,
        det,
        notes,
    }))
}

/// Compiles a selection: a map (AND) or a list of maps (OR). Errors carry the offending key.
fn compile_selection(
    name: &str,
    v: &Value,
    lists: &Lists,
) -> Result<Vec<Vec<FieldTest>>, (Option<String>, String)> {
    let group = |m: &serde_yaml_ng::Mapping| -> Result<Vec<FieldTest>, (Option<String>, String)> {
        let mut out = Vec::with_capacity(m.len());
        for (k, v) in m {
            let key = super::yaml::scalar_text(k)
                .ok_or_else(|| (None, format!("field name {k:?} is not a string")))?;
            out.push(compile_field(&key, v, lists).map_err(|e| (Some(key.clone()), e))?);
        }
        if out.is_empty() {
            return Err((None, "selection is empty".into()));
        }
        Ok(out)
    };
    match v {
        Value::Mapping(m) => Ok(vec![group(m)?]),
        Value::Sequence(items) if !items.is_empty() && items.iter().all(Value::is_mapping) => items
            .iter()
            .filter_map(Value::as_mapping)
            .map(group)
            .collect(),
        Value::Sequence(_) => Err((
            None,
            format!(
                "keyword selections (a list of plain values, `{name}: [..]`) are not supported; match a named field, e.g. `requestURI|contains: [..]`"
            ),
        )),
        _ => Err((
            None,
            "a selection must be a map of fields or a list of such maps".into(),
        )),
    }
}
