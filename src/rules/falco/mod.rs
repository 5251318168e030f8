//! Falco rules for Kubernetes audit events, loaded as they are.
//!
//! Teams moving from Falco keep their `k8s_audit` rule files: [`FalcoRuleSet::load_files`]
//! reads them in order (later files append to or override earlier ones, as Falco does),
//! compiles every `source: k8s_audit` rule with its macros, lists and exceptions, and
//! [`FalcoRuleSet::evaluate`] runs them against an [`AuditEvent`]. The condition language
//! is in [`condition`], the `ka.*`/`jevt.*` fields in [`fields`], output templates in
//! [`output`], and the conversion to Sigma (for `rules import-falco`) in [`sigma`].
//!
//! Loading has two passes, like Falco's: first every entry of every file is collected
//! (appends and overrides applied to the stored text), then lists are expanded, macros
//! parsed and each rule compiled. So a rule may use a macro defined further down or in a
//! later file, and an appended condition is appended as text.

pub mod condition;
pub mod eval;
pub mod fields;
pub mod output;
pub mod sigma;

pub use sigma::{to_sigma, SigmaConversion};

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value as Yv};

use crate::model::{redact, AuditEvent, Level, RuleMeta};
use crate::rules::RuleError;

use condition::{Ast, Op, Rhs};
use eval::{Node, Scope};
use fields::EventCtx;

/// Falco priorities, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// `EMERGENCY`
    Emergency,
    /// `ALERT`
    Alert,
    /// `CRITICAL`
    Critical,
    /// `ERROR`
    Error,
    /// `WARNING`
    Warning,
    /// `NOTICE`
    Notice,
    /// `INFORMATIONAL` / `INFO`
    Informational,
    /// `DEBUG`
    Debug,
}

impl Priority {
    /// Parses a priority name, case-insensitively (`INFO` accepted).
    pub fn parse(s: &str) -> Option<Priority> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "emergency" => Priority::Emergency,
            "alert" => Priority::Alert,
            "critical" => Priority::Critical,
            "error" => Priority::Error,
            "warning" => Priority::Warning,
            "notice" => Priority::Notice,
            "informational" | "info" => Priority::Informational,
            "debug" => Priority::Debug,
            _ => return None,
        })
    }

    /// Falco's display name.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Emergency => "Emergency",
            Priority::Alert => "Alert",
            Priority::Critical => "Critical",
            Priority::Error => "Error",
            Priority::Warning => "Warning",
            Priority::Notice => "Notice",
            Priority::Informational => "Informational",
            Priority::Debug => "Debug",
        }
    }

    /// Our alert level for this priority (see docs/falco.md).
    pub fn level(self) -> Level {
        match self {
            Priority::Emergency | Priority::Alert | Priority::Critical => Level::Critical,
            Priority::Error => Level::High,
            Priority::Warning => Level::Medium,
            Priority::Notice => Level::Low,
            Priority::Informational | Priority::Debug => Level::Informational,
        }
    }
}

/// A non-fatal remark made while loading (ignored keys, skipped rules, version notes).
#[derive(Debug, Clone, PartialEq)]
pub struct FalcoWarning {
    /// The file.
    pub file: String,
    /// The entry (`rule X`, `macro Y`, ...), where known.
    pub entry: Option<String>,
    /// Line of the entry, where known.
    pub line: Option<usize>,
    /// What happened.
    pub message: String,
}

impl fmt::Display for FalcoWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(e) = &self.entry {
            write!(f, " ({e})")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One compiled `k8s_audit` rule.
#[derive(Debug, Clone)]
pub struct FalcoRule {
    /// Metadata for alerts: id `falco:<name>`, title = name, level from the priority,
    /// description = `desc`, source `falco:<file>`.
    pub meta: RuleMeta,
    /// Falco's priority name (`Warning`, `Informational`, ...).
    pub priority: String,
    /// The priority, typed.
    pub severity: Priority,
    /// The output template as written.
    pub output: String,
    /// Whether the rule runs.
    pub enabled: bool,
    /// The condition text after appends (exceptions not included).
    pub condition: String,
    node: Node,
    template: Vec<output::Segment>,
}

impl FalcoRule {
    /// The rule name.
    pub fn name(&self) -> &str {
        &self.meta.title
    }

    /// The compiled condition (exceptions included).
    pub fn node(&self) -> &Node {
        &self.node
    }
}

/// What a load saw, for reports and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadStats {
    /// Distinct rule names defined (any source).
    pub rules: usize,
    /// Distinct macro names.
    pub macros: usize,
    /// Distinct list names.
    pub lists: usize,
    /// Rules not loaded because their source is not `k8s_audit`: (name, source).
    pub skipped: Vec<(String, String)>,
}

/// A loaded and compiled set of Falco `k8s_audit` rules.
#[derive(Debug, Clone, Default)]
pub struct FalcoRuleSet {
    rules: Vec<FalcoRule>,
    stats: LoadStats,
}

/// Where an entry was defined.
#[derive(Debug, Clone)]
struct Loc {
    file: String,
    line: Option<usize>,
}

#[derive(Debug, Clone)]
struct ListDef {
    items: Vec<String>,
}

#[derive(Debug, Clone)]
struct MacroDef {
    cond: String,
    loc: Loc,
}

#[derive(Debug, Clone)]
struct ExcDef {
    name: String,
    fields: Option<Yv>,
    comps: Option<Yv>,
    values: Vec<Yv>,
}

#[derive(Debug, Clone)]
struct RuleDef {
    desc: String,
    cond: String,
    output: String,
    priority: Priority,
    source: String,
    tags: Vec<String>,
    enabled: bool,
    exceptions: Vec<ExcDef>,
    skip_unknown: bool,
    loc: Loc,
}

/// Named entries in definition order; a redefinition keeps the first position.
#[derive(Debug)]
struct Table<T> {
    items: Vec<(String, T)>,
    index: HashMap<String, usize>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            items: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<T> Table<T> {
    fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        let i = *self.index.get(name)?;
        Some(&mut self.items[i].1)
    }
    fn put(&mut self, name: &str, v: T) {
        match self.index.get(name) {
            Some(&i) => self.items[i].1 = v,
            None => {
                self.index.insert(name.to_string(), self.items.len());
                self.items.push((name.to_string(), v));
            }
        }
    }
}

#[derive(Default)]
struct Loader {
    lists: Table<ListDef>,
    macros: Table<MacroDef>,
    rules: Table<RuleDef>,
    errors: Vec<RuleError>,
    warnings: Vec<FalcoWarning>,
}

/// A problem with one entry, before it is given a file and line.
type EntryResult<T> = Result<T, String>;

impl FalcoRuleSet {
    /// Loads rule files in order. Returns the compiled `k8s_audit` rules and warnings, or
    /// every error found (file, entry, line where known).
    pub fn load_files(
        paths: &[PathBuf],
    ) -> Result<(FalcoRuleSet, Vec<FalcoWarning>), Vec<RuleError>> {
        let mut texts = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            match std::fs::read_to_string(p) {
                Ok(t) => texts.push((p.display().to_string(), t)),
                Err(e) => errors.push(RuleError {
                    file: p.display().to_string(),
                    line: None,
                    rule_id: None,
                    message: format!("cannot read Falco rules file: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Self::load_texts(&texts)
    }

    /// Loads rules from (file name, text) pairs, in order.
    pub fn load_texts(
        files: &[(String, String)],
    ) -> Result<(FalcoRuleSet, Vec<FalcoWarning>), Vec<RuleError>> {
        let mut l = Loader::default();
        for (name, text) in files {
            l.read_file(name, text);
        }
        // Compile even after entry errors, so that one run reports every problem.
        l.compile()
    }

    /// The compiled rules, enabled or not, in definition order.
    pub fn rules(&self) -> &[FalcoRule] {
        &self.rules
    }

    /// Counts of what was loaded.
    pub fn stats(&self) -> &LoadStats {
        &self.stats
    }

    /// Stages these rules need to see, as a [`crate::model::Stage::bit`] mask: every stage
    /// when any rule is enabled, since Falco rules select stages in their own conditions
    /// (`kevt` is ResponseComplete, `kevt_started` ResponseStarted).
    pub fn stage_mask(&self) -> u8 {
        use crate::model::Stage;
        if self.rules.iter().any(|r| r.enabled) {
            [
                Stage::RequestReceived,
                Stage::ResponseStarted,
                Stage::ResponseComplete,
                Stage::Panic,
                Stage::Unknown,
            ]
            .iter()
            .fold(0, |m, s| m | s.bit())
        } else {
            0
        }
    }

    /// Pushes the index of every enabled rule that matches `ev` into `out`.
    pub fn evaluate(&self, ev: &AuditEvent<'_>, out: &mut Vec<usize>) {
        // The typed fields answer most checks; the raw JSON (bodies included) is parsed
        // only when a rule gets as far as a field inside it.
        let view = fields::View::Event(ev);
        let ctx = ctx_of(ev);
        for (i, r) in self.rules.iter().enumerate() {
            if r.enabled && r.node.eval(&view, &ctx) {
                out.push(i);
            }
        }
    }

    /// Renders rule `idx`'s output for `ev`. Values come from a redacted copy of the event,
    /// so secret material (Secret data, tokens, `?token=` in the URI) never appears.
    pub fn render_output(&self, idx: usize, ev: &AuditEvent<'_>) -> String {
        let Some(rule) = self.rules.get(idx) else {
            return String::new();
        };
        let mut v = ev.raw.value().clone();
        redact::redact_event(&mut v);
        output::render(&rule.template, &v, &ctx_of(ev))
    }
}

fn ctx_of<'a>(ev: &'a AuditEvent<'_>) -> EventCtx<'a> {
    // Falco stamps events that carry no time with their arrival time, so `jevt.rawtime`
    // always exists (the rules' `k8s_audit_always_true` macro depends on it).
    let t = ev.event_time().unwrap_or_else(chrono::Utc::now);
    EventCtx {
        cluster: ev.cluster.as_deref(),
        time_ns: t.timestamp_nanos_opt(),
    }
}

/// Line numbers of the top-level list items (`- ` at column 0) of a YAML text.
fn item_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_end();
            l == "-" || (l.starts_with("- ") || l.starts_with("-\t"))
        })
        .map(|(i, _)| i + 1)
        .collect()
}

fn scalar(v: &Yv) -> Option<String> {
    match v {
        Yv::String(s) => Some(s.clone()),
        Yv::Number(n) => Some(n.to_string()),
        Yv::Bool(b) => Some(b.to_string()),
        Yv::Tagged(t) => scalar(&t.value),
        _ => None,
    }
}

/// `"x"` -> `x`: list items are sometimes written with condition-language quotes inside
/// YAML quotes (`'"/usr/bin/x"'`); Falco's condition parser drops them, so we do too.
fn unquote(s: &str) -> String {
    match s.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        Some(inner) if s.len() >= 2 => inner.to_string(),
        _ => s.to_string(),
    }
}

fn get<'m>(m: &'m Mapping, k: &str) -> Option<&'m Yv> {
    m.get(k)
}

fn get_str(m: &Mapping, k: &str) -> EntryResult<Option<String>> {
    match get(m, k) {
        None | Some(Yv::Null) => Ok(None),
        Some(v) => scalar(v)
            .map(Some)
            .ok_or_else(|| format!("'{k}' must be a string")),
    }
}

fn get_bool(m: &Mapping, k: &str) -> EntryResult<Option<bool>> {
    match get(m, k) {
        None | Some(Yv::Null) => Ok(None),
        Some(Yv::Bool(b)) => Ok(Some(*b)),
        Some(Yv::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
        Some(_) => Err(format!("'{k}' must be true or false")),
    }
}

fn get_strings(m: &Mapping, k: &str) -> EntryResult<Option<Vec<String>>> {
    match get(m, k) {
        None | Some(Yv::Null) => Ok(None),
        Some(Yv::Sequence(s)) => s
            .iter()
            .map(|v| {
                scalar(v)
                    .map(|s| unquote(&s))
                    .ok_or_else(|| format!("every item of '{k}' must be a string"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("'{k}' must be a list")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Append,
    Replace,
}

fn overrides(m: &Mapping) -> EntryResult<Option<Vec<(String, Mode)>>> {
    let Some(v) = get(m, "override") else {
        return Ok(None);
    };
    let Yv::Mapping(o) = v else {
        return Err("'override' must be a map of key: append|replace".into());
    };
    let mut out = Vec::new();
    for (k, v) in o {
        let k = scalar(k).ok_or("'override' keys must be strings")?;
        let mode = match scalar(v).as_deref() {
            Some("append") => Mode::Append,
            Some("replace") => Mode::Replace,
            _ => return Err(format!("override of '{k}' must be 'append' or 'replace'")),
        };
        out.push((k, mode));
    }
    Ok(Some(out))
}

fn parse_exceptions(v: &Yv) -> EntryResult<Vec<ExcDef>> {
    let Yv::Sequence(items) = v else {
        return Err("'exceptions' must be a list".into());
    };
    let mut out: Vec<ExcDef> = Vec::new();
    for it in items {
        let Yv::Mapping(m) = it else {
            return Err("each exception must be a map with name, fields, comps, values".into());
        };
        let name = get_str(m, "name")?.ok_or("an exception has no 'name'")?;
        if out.iter().any(|e| e.name == name) {
            return Err(format!("exception '{name}' is defined twice"));
        }
        let values = match get(m, "values") {
            None | Some(Yv::Null) => Vec::new(),
            Some(Yv::Sequence(s)) => s.clone(),
            Some(_) => return Err(format!("exception '{name}': 'values' must be a list")),
        };
        out.push(ExcDef {
            name,
            fields: get(m, "fields").filter(|v| !v.is_null()).cloned(),
            comps: get(m, "comps").filter(|v| !v.is_null()).cloned(),
            values,
        });
    }
    Ok(out)
}

/// Merges appended exceptions: values of an existing exception are extended; new names
/// are added.
fn append_exceptions(have: &mut Vec<ExcDef>, add: Vec<ExcDef>) -> EntryResult<()> {
    for e in add {
        match have.iter_mut().find(|h| h.name == e.name) {
            Some(h) => {
                if e.fields.is_some() || e.comps.is_some() {
                    return Err(format!(
                        "appending to exception '{}' may add values only, not fields or comps",
                        e.name
                    ));
                }
                h.values.extend(e.values);
            }
            None => have.push(e),
        }
    }
    Ok(())
}

const RULE_KEYS: &[&str] = &[
    "rule",
    "desc",
    "condition",
    "output",
    "priority",
    "source",
    "tags",
    "enabled",
    "exceptions",
    "append",
    "override",
    "skip-if-unknown-filter",
    "warn_evttypes",
    "capture",
    "capture_duration",
];

impl Loader {
    fn err(&mut self, loc: &Loc, entry: Option<&str>, msg: impl Into<String>) {
        self.errors.push(RuleError {
            file: loc.file.clone(),
            line: loc.line,
            rule_id: entry.map(str::to_string),
            message: msg.into(),
        });
    }

    fn warn(&mut self, loc: &Loc, entry: Option<&str>, msg: impl Into<String>) {
        self.warnings.push(FalcoWarning {
            file: loc.file.clone(),
            entry: entry.map(str::to_string),
            line: loc.line,
            message: msg.into(),
        });
    }

    fn read_file(&mut self, file: &str, text: &str) {
        let lines = item_lines(text);
        let mut items: Vec<Yv> = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            match Yv::deserialize(doc) {
                Ok(Yv::Null) => {}
                Ok(Yv::Sequence(s)) => items.extend(s),
                Ok(_) => {
                    let loc = Loc {
                        file: file.into(),
                        line: None,
                    };
                    self.err(
                        &loc,
                        None,
                        "a Falco rules file must be a YAML list of entries",
                    );
                    return;
                }
                Err(e) => {
                    let loc = Loc {
                        file: file.into(),
                        line: e.location().map(|l| l.line()),
                    };
                    self.err(&loc, None, format!("invalid YAML: {e}"));
                    return;
                }
            }
        }
        // Line numbers are known when every entry starts at column 0, as in Falco's files.
        let lines = (lines.len() == items.len()).then_some(lines);
        for (i, item) in items.into_iter().enumerate() {
            let loc = Loc {
                file: file.into(),
                line: lines.as_ref().map(|l| l[i]),
            };
            self.entry(&loc, item);
        }
    }

    fn entry(&mut self, loc: &Loc, item: Yv) {
        let m = match item {
            Yv::Mapping(m) => m,
            Yv::Null => {
                self.warn(loc, None, "empty entry ignored");
                return;
            }
            _ => {
                self.err(
                    loc,
                    None,
                    "each entry must be a map (- rule:, - macro:, - list:)",
                );
                return;
            }
        };
        let r = if m.contains_key("rule") {
            let name = get_str(&m, "rule").ok().flatten().unwrap_or_default();
            self.rule(loc, &m)
                .map_err(|e| (format!("rule '{name}'"), e))
        } else if m.contains_key("macro") {
            let name = get_str(&m, "macro").ok().flatten().unwrap_or_default();
            self.macro_(loc, &m)
                .map_err(|e| (format!("macro '{name}'"), e))
        } else if m.contains_key("list") {
            let name = get_str(&m, "list").ok().flatten().unwrap_or_default();
            self.list(loc, &m)
                .map_err(|e| (format!("list '{name}'"), e))
        } else if m.contains_key("required_engine_version")
            || m.contains_key("required_plugin_versions")
        {
            let k = m
                .keys()
                .next()
                .and_then(scalar)
                .unwrap_or_else(|| "required_engine_version".into());
            self.warn(loc, None, format!("'{k}' read and ignored: audithawk implements the k8saudit and json fields itself"));
            Ok(())
        } else {
            let keys: Vec<String> = m.keys().filter_map(scalar).collect();
            self.warn(
                loc,
                None,
                format!("unknown entry with keys [{}] ignored", keys.join(", ")),
            );
            Ok(())
        };
        if let Err((entry, msg)) = r {
            self.err(loc, Some(&entry), msg);
        }
    }

    fn list(&mut self, loc: &Loc, m: &Mapping) -> EntryResult<()> {
        let name = get_str(m, "list")?
            .filter(|n| !n.is_empty())
            .ok_or("a list needs a name")?;
        let items = get_strings(m, "items")?;
        let append = get_bool(m, "append")?.unwrap_or(false);
        let ov = overrides(m)?;
        let mode = match (&ov, append) {
            (Some(_), true) => return Err("use either 'append' or 'override', not both".into()),
            (Some(o), false) => match o.as_slice() {
                [(k, mode)] if k == "items" => Some(*mode),
                _ => return Err("a list may only override 'items'".into()),
            },
            (None, true) => Some(Mode::Append),
            (None, false) => None,
        };
        let items = items.ok_or("a list needs 'items'")?;
        let exists = self.lists.get_mut(&name).is_some();
        match mode {
            Some(Mode::Append) if exists => {
                if let Some(l) = self.lists.get_mut(&name) {
                    l.items.extend(items);
                }
            }
            Some(Mode::Append) => {
                // Falco rejects this. Falco's test suite appends to lists its syscall
                // ruleset defines (falco_privileged_images...), which holds no k8s_audit
                // rules and is not loaded here; creating the list keeps those overrides
                // meaningful.
                self.warn(
                    loc,
                    Some(&format!("list '{name}'")),
                    "append to a list that is not defined: defining it with the appended items",
                );
                self.lists.put(&name, ListDef { items });
            }
            Some(Mode::Replace) | None => {
                if mode == Some(Mode::Replace) && !exists {
                    return Err(format!(
                        "override of list '{name}' but no list by that name is defined"
                    ));
                }
                self.lists.put(&name, ListDef { items });
            }
        }
        Ok(())
    }

    fn macro_(&mut self, loc: &Loc, m: &Mapping) -> EntryResult<()> {
        let name = get_str(m, "macro")?
            .filter(|n| !n.is_empty())
            .ok_or("a macro needs a name")?;
        let cond = get_str(m, "condition")?.ok_or("a macro needs a 'condition'")?;
        let append = get_bool(m, "append")?.unwrap_or(false);
        let mode = match (overrides(m)?, append) {
            (Some(_), true) => return Err("use either 'append' or 'override', not both".into()),
            (Some(o), false) => match o.as_slice() {
                [(k, mode)] if k == "condition" => Some(*mode),
                _ => return Err("a macro may only override 'condition'".into()),
            },
            (None, true) => Some(Mode::Append),
            (None, false) => None,
        };
        match (mode, self.macros.get_mut(&name)) {
            (Some(Mode::Append), Some(existing)) => {
                existing.cond = format!("{} {}", existing.cond.trim_end(), cond.trim());
            }
            (Some(_), None) => {
                return Err(format!(
                    "append/override of macro '{name}' but no macro by that name is defined"
                ))
            }
            _ => self.macros.put(
                &name,
                MacroDef {
                    cond,
                    loc: loc.clone(),
                },
            ),
        }
        Ok(())
    }

    fn rule(&mut self, loc: &Loc, m: &Mapping) -> EntryResult<()> {
        let name = get_str(m, "rule")?
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .ok_or("a rule needs a name")?;
        for k in m.keys().filter_map(scalar) {
            if !RULE_KEYS.contains(&k.as_str()) {
                self.warn(
                    loc,
                    Some(&format!("rule '{name}'")),
                    format!("unknown key '{k}' ignored"),
                );
            }
        }
        let append = get_bool(m, "append")?.unwrap_or(false);
        let ov = overrides(m)?;
        if append && ov.is_some() {
            return Err("use either 'append' or 'override', not both".into());
        }
        let keys: Vec<String> = m.keys().filter_map(scalar).collect();
        let only_enabled = keys.iter().all(|k| k == "rule" || k == "enabled") && keys.len() == 2;
        if append || ov.is_some() || only_enabled {
            let Some(r) = self.rules.get_mut(&name) else {
                return Err(format!(
                    "{} rule '{name}' but no rule by that name is defined",
                    if only_enabled {
                        "enabling/disabling"
                    } else {
                        "append/override of"
                    }
                ));
            };
            if only_enabled {
                r.enabled = get_bool(m, "enabled")?.unwrap_or(true);
                return Ok(());
            }
            let plan: Vec<(String, Mode)> = match ov {
                Some(o) => {
                    for k in &keys {
                        if !matches!(k.as_str(), "rule" | "override")
                            && !o.iter().any(|(x, _)| x == k)
                        {
                            return Err(format!(
                                "key '{k}' is present but not listed under 'override'"
                            ));
                        }
                    }
                    o
                }
                None => keys
                    .iter()
                    .filter(|k| !matches!(k.as_str(), "rule" | "append"))
                    .map(|k| {
                        let mode = if k == "enabled" || k == "priority" {
                            Mode::Replace
                        } else {
                            Mode::Append
                        };
                        (k.clone(), mode)
                    })
                    .collect(),
            };
            for (k, mode) in plan {
                if get(m, &k).is_none() {
                    return Err(format!("'override' names '{k}' but the entry has no '{k}'"));
                }
                let text = || -> EntryResult<String> {
                    get_str(m, &k)?.ok_or_else(|| format!("'{k}' must be a string"))
                };
                match (k.as_str(), mode) {
                    ("condition", Mode::Append) => {
                        r.cond = format!("{} {}", r.cond.trim_end(), text()?.trim())
                    }
                    ("condition", Mode::Replace) => r.cond = text()?,
                    ("output", Mode::Append) => {
                        r.output = format!("{} {}", r.output.trim_end(), text()?.trim())
                    }
                    ("output", Mode::Replace) => r.output = text()?,
                    ("desc", Mode::Append) => {
                        r.desc = format!("{} {}", r.desc.trim_end(), text()?.trim())
                    }
                    ("desc", Mode::Replace) => r.desc = text()?,
                    ("tags", mode) => {
                        let t = get_strings(m, "tags")?.unwrap_or_default();
                        if mode == Mode::Replace {
                            r.tags = t;
                        } else {
                            r.tags.extend(t);
                        }
                    }
                    ("exceptions", mode) => {
                        let e = get(m, "exceptions")
                            .map(parse_exceptions)
                            .transpose()?
                            .unwrap_or_default();
                        if mode == Mode::Replace {
                            r.exceptions = e;
                        } else {
                            append_exceptions(&mut r.exceptions, e)?;
                        }
                    }
                    ("priority", Mode::Replace) => {
                        let p = text()?;
                        r.priority =
                            Priority::parse(&p).ok_or_else(|| format!("unknown priority '{p}'"))?;
                    }
                    ("enabled", Mode::Replace) => {
                        r.enabled = get_bool(m, "enabled")?.unwrap_or(true)
                    }
                    ("skip-if-unknown-filter", Mode::Replace) => {
                        r.skip_unknown = get_bool(m, &k)?.unwrap_or(false)
                    }
                    (
                        "warn_evttypes" | "capture" | "capture_duration" | "source",
                        Mode::Replace,
                    ) => {}
                    (other, mode) => {
                        return Err(format!(
                            "'{other}' cannot be {}",
                            if mode == Mode::Append {
                                "appended"
                            } else {
                                "overridden"
                            }
                        ))
                    }
                }
            }
            return Ok(());
        }
        let cond = get_str(m, "condition")?.ok_or("a rule needs a 'condition'")?;
        let output = get_str(m, "output")?.ok_or("a rule needs an 'output'")?;
        let p = get_str(m, "priority")?.ok_or("a rule needs a 'priority'")?;
        let priority = Priority::parse(&p).ok_or_else(|| {
            format!("unknown priority '{p}' (EMERGENCY, ALERT, CRITICAL, ERROR, WARNING, NOTICE, INFORMATIONAL, DEBUG)")
        })?;
        let def = RuleDef {
            desc: get_str(m, "desc")?.unwrap_or_default(),
            cond,
            output,
            priority,
            source: get_str(m, "source")?.unwrap_or_else(|| "syscall".into()),
            tags: get_strings(m, "tags")?.unwrap_or_default(),
            enabled: get_bool(m, "enabled")?.unwrap_or(true),
            exceptions: get(m, "exceptions")
                .map(parse_exceptions)
                .transpose()?
                .unwrap_or_default(),
            skip_unknown: get_bool(m, "skip-if-unknown-filter")?.unwrap_or(false),
            loc: loc.clone(),
        };
        self.rules.put(&name, def);
        Ok(())
    }

    /// Second pass: expand lists, parse macros, compile rules.
    fn compile(mut self) -> Result<(FalcoRuleSet, Vec<FalcoWarning>), Vec<RuleError>> {
        let lists = expand_lists(&self.lists);
        let mut macros = HashMap::new();
        for (name, m) in &self.macros.items {
            macros.insert(
                name.clone(),
                condition::parse(&m.cond).map_err(|e| e.to_string()),
            );
        }
        // A macro that does not parse is an error even when unused, as in Falco.
        let bad: Vec<(String, Loc, String)> = self
            .macros
            .items
            .iter()
            .filter_map(|(n, m)| match macros.get(n) {
                Some(Err(e)) => Some((n.clone(), m.loc.clone(), e.clone())),
                _ => None,
            })
            .collect();
        for (n, loc, e) in bad {
            self.err(
                &loc,
                Some(&format!("macro '{n}'")),
                format!("condition does not parse: {e}"),
            );
        }
        let scope = Scope {
            macros: &macros,
            lists: &lists,
        };
        let mut set = FalcoRuleSet {
            rules: Vec::new(),
            stats: LoadStats {
                rules: self.rules.items.len(),
                macros: self.macros.items.len(),
                lists: self.lists.items.len(),
                skipped: Vec::new(),
            },
        };
        let rules = std::mem::take(&mut self.rules.items);
        for (name, r) in rules {
            let entry = format!("rule '{name}'");
            if r.source != "k8s_audit" {
                self.warn(
                    &r.loc,
                    Some(&entry),
                    format!("skipped: source '{}' is not k8s_audit", r.source),
                );
                set.stats.skipped.push((name, r.source));
                continue;
            }
            let ast = match condition::parse(&r.cond) {
                Ok(a) => a,
                Err(e) => {
                    self.err(
                        &r.loc,
                        Some(&entry),
                        format!("condition does not parse: {e}"),
                    );
                    continue;
                }
            };
            let ast = match with_exceptions(ast, &r.exceptions) {
                Ok(a) => a,
                Err(e) => {
                    self.err(&r.loc, Some(&entry), e);
                    continue;
                }
            };
            let mut notes = Vec::new();
            let node = match scope.compile(&ast, &mut notes) {
                Ok(n) => n,
                Err(e) if e.unknown_field && r.skip_unknown => {
                    self.warn(
                        &r.loc,
                        Some(&entry),
                        format!("skipped (skip-if-unknown-filter): {}", e.msg),
                    );
                    continue;
                }
                Err(e) => {
                    let at = e
                        .pos
                        .map(|p| format!(" at offset {p} of the condition"))
                        .unwrap_or_default();
                    self.err(&r.loc, Some(&entry), format!("{}{at}", e.msg));
                    continue;
                }
            };
            for n in notes {
                self.warn(&r.loc, Some(&entry), n);
            }
            let template = match output::compile(&r.output) {
                Ok(t) => t,
                Err(e) => {
                    self.err(&r.loc, Some(&entry), e);
                    continue;
                }
            };
            let file = r.loc.file.clone();
            set.rules.push(FalcoRule {
                meta: RuleMeta {
                    id: format!("falco:{name}"),
                    title: name.clone(),
                    level: r.priority.level(),
                    tags: r.tags.clone(),
                    description: r.desc.trim().to_string(),
                    references: Vec::new(),
                    author: None,
                    source: format!("falco:{file}"),
                },
                priority: r.priority.as_str().to_string(),
                severity: r.priority,
                output: r.output.trim().to_string(),
                enabled: r.enabled,
                condition: r.cond.trim().to_string(),
                node,
                template,
            });
        }
        if self.errors.is_empty() {
            Ok((set, self.warnings))
        } else {
            Err(self.errors)
        }
    }
}

/// Expands list references inside lists (any depth, cycles cut).
fn expand_lists(t: &Table<ListDef>) -> HashMap<String, Vec<String>> {
    fn go(name: &str, t: &Table<ListDef>, seen: &mut Vec<String>, out: &mut Vec<String>) {
        let Some(&i) = t.index.get(name) else { return };
        seen.push(name.to_string());
        for item in &t.items[i].1.items {
            if t.index.contains_key(item) && !seen.contains(item) {
                go(item, t, seen, out);
            } else {
                out.push(item.clone());
            }
        }
        seen.pop();
    }
    let mut map = HashMap::new();
    for (name, _) in &t.items {
        let mut out = Vec::new();
        go(name, t, &mut Vec::new(), &mut out);
        map.insert(name.clone(), out);
    }
    map
}

/// Adds a rule's exceptions to its condition as Falco compiles them: for each exception,
/// `and not (tuple1 or tuple2 ...)`, each tuple being `field1 comp1 value1 and ...`.
fn with_exceptions(ast: Ast, excs: &[ExcDef]) -> Result<Ast, String> {
    let mut parts = vec![ast];
    for e in excs {
        if let Some(x) = exception_ast(e)? {
            parts.push(Ast::Not(Box::new(x)));
        }
    }
    Ok(if parts.len() == 1 {
        parts.remove(0)
    } else {
        Ast::And(parts)
    })
}

fn check(field: &str, op: Op, rhs: Rhs) -> Result<Ast, String> {
    let (name, arg) = match field.find('[') {
        Some(i) if field.ends_with(']') => (
            field[..i].to_string(),
            Some(field[i + 1..field.len() - 1].to_string()),
        ),
        _ => (field.to_string(), None),
    };
    Ok(Ast::Check {
        field: name,
        arg,
        op,
        rhs,
        pos: 0,
    })
}

fn comp(s: &str, exc: &str) -> Result<Op, String> {
    Op::parse(s.trim()).ok_or_else(|| format!("exception '{exc}': unknown comparison '{s}'"))
}

fn exception_ast(e: &ExcDef) -> Result<Option<Ast>, String> {
    let n = &e.name;
    let Some(fields) = &e.fields else {
        return Err(format!("exception '{n}' has no 'fields'"));
    };
    if let Some(field) = scalar(fields) {
        // One field: `field comp (v1, v2, ...)`; comps defaults to `in`.
        let op = match e.comps.as_ref().map(|c| scalar(c).ok_or(())) {
            None => Op::In,
            Some(Ok(c)) => comp(&c, n)?,
            Some(Err(())) => {
                return Err(format!(
                    "exception '{n}': with a single field, 'comps' must be a single operator"
                ))
            }
        };
        if e.values.is_empty() {
            return Ok(None);
        }
        let mut vals = Vec::new();
        for v in &e.values {
            vals.push(scalar(v).ok_or_else(|| {
                format!("exception '{n}': with a single field, every value must be a single item")
            })?);
        }
        if op.takes_list() {
            return Ok(Some(check(&field, op, Rhs::List(vals))?));
        }
        let alts = vals
            .into_iter()
            .map(|v| check(&field, op, Rhs::Value(v)))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(Ast::Or(alts)));
    }
    let Yv::Sequence(fs) = fields else {
        return Err(format!(
            "exception '{n}': 'fields' must be a field name or a list of them"
        ));
    };
    let fs: Vec<String> = fs
        .iter()
        .map(|f| scalar(f).ok_or_else(|| format!("exception '{n}': every field must be a name")))
        .collect::<Result<_, _>>()?;
    let ops: Vec<Op> = match &e.comps {
        None => vec![Op::Eq; fs.len()],
        Some(Yv::Sequence(cs)) => cs
            .iter()
            .map(|c| {
                scalar(c)
                    .ok_or_else(|| format!("exception '{n}': every comp must be an operator"))
                    .and_then(|c| comp(&c, n))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(format!(
                "exception '{n}': 'comps' must be a list matching 'fields'"
            ))
        }
    };
    if ops.len() != fs.len() {
        return Err(format!(
            "exception '{n}': {} fields but {} comps",
            fs.len(),
            ops.len()
        ));
    }
    let mut tuples = Vec::new();
    for v in &e.values {
        let Yv::Sequence(items) = v else {
            return Err(format!(
                "exception '{n}': each value must be a list of {} items",
                fs.len()
            ));
        };
        if items.len() != fs.len() {
            return Err(format!(
                "exception '{n}': a value has {} items but there are {} fields",
                items.len(),
                fs.len()
            ));
        }
        let mut conj = Vec::new();
        for ((f, op), item) in fs.iter().zip(&ops).zip(items) {
            let rhs = match item {
                Yv::Sequence(list) => {
                    if !op.takes_list() {
                        return Err(format!(
                            "exception '{n}': a list value needs a list operator for field '{f}', not '{}'",
                            op.as_str()
                        ));
                    }
                    Rhs::List(
                        list.iter()
                            .map(|x| {
                                scalar(x).ok_or_else(|| {
                                    format!("exception '{n}': nested value is not a string")
                                })
                            })
                            .collect::<Result<_, _>>()?,
                    )
                }
                other => {
                    let s = scalar(other)
                        .ok_or_else(|| format!("exception '{n}': value is not a string"))?;
                    if op.takes_list() {
                        Rhs::List(vec![s])
                    } else {
                        Rhs::Value(s)
                    }
                }
            };
            conj.push(check(f, *op, rhs)?);
        }
        tuples.push(Ast::And(conj));
    }
    Ok(match tuples.len() {
        0 => None,
        1 => tuples.pop(),
        _ => Some(Ast::Or(tuples)),
    })
}

#[cfg(test)]
mod tests;
