//! Sigma correlation rules (specification v2) and the `new_terms` extension, parsed from
//! the raw YAML documents the rule loader keeps aside, and validated into typed structs.
//!
//! A correlation document is any YAML document with a top-level `correlation:` key. What
//! is checked here is everything that can be checked without the rest of the rule set:
//! the type, the timespan, the condition, `field` for `value_count`, the `new_terms` keys,
//! the audithawk extensions (`suppress`, `exceptions`, `examples`). Whether the referenced
//! rules exist is checked by [`crate::engine::correlate::Correlator`], which sees the whole
//! set. Every problem is reported at once, each naming the file, line and rule.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value as Yaml};

use crate::model::{Level, RuleMeta};
use crate::rules::RuleError;

/// The correlation types, plus the first-seen extension.
#[derive(Debug, Clone, PartialEq)]
pub enum CorrelationKind {
    /// Count matching events per group in the timespan.
    EventCount,
    /// Count distinct values of `field` per group in the timespan.
    ValueCount {
        /// The field whose distinct values are counted.
        field: String,
    },
    /// All referenced rules (or `condition` many of them) match within the timespan, any
    /// order.
    Temporal,
    /// The referenced rules match in the order listed, within the timespan.
    TemporalOrdered,
    /// audithawk extension: a tuple of field values seen for the first time after a
    /// learning period.
    NewTerms {
        /// The fields that make the tuple.
        fields: Vec<String>,
        /// How long a tuple is remembered after it was last seen (milliseconds).
        history_ms: i64,
        /// Learning period from the first event the rule sees (milliseconds).
        learning_ms: i64,
    },
}

impl CorrelationKind {
    /// The name as written in YAML.
    pub fn as_str(&self) -> &'static str {
        match self {
            CorrelationKind::EventCount => "event_count",
            CorrelationKind::ValueCount { .. } => "value_count",
            CorrelationKind::Temporal => "temporal",
            CorrelationKind::TemporalOrdered => "temporal_ordered",
            CorrelationKind::NewTerms { .. } => "new_terms",
        }
    }
}

/// `condition:` — one or two bounds, all of which must hold (a range is `gt` + `lte`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Condition {
    /// Strictly greater than.
    pub gt: Option<u64>,
    /// Greater than or equal.
    pub gte: Option<u64>,
    /// Strictly less than.
    pub lt: Option<u64>,
    /// Less than or equal.
    pub lte: Option<u64>,
    /// Equal.
    pub eq: Option<u64>,
}

impl Condition {
    /// Whether `n` satisfies every bound.
    pub fn holds(&self, n: u64) -> bool {
        self.gt.is_none_or(|b| n > b)
            && self.gte.is_none_or(|b| n >= b)
            && self.lt.is_none_or(|b| n < b)
            && self.lte.is_none_or(|b| n <= b)
            && self.eq.is_none_or(|b| n == b)
    }

    /// Whether the condition has an upper bound (`lt`, `lte`, `eq`). Such a condition can
    /// only be decided when the window has closed: more events could still push the count
    /// over the bound.
    pub fn has_upper_bound(&self) -> bool {
        self.lt.is_some() || self.lte.is_some() || self.eq.is_some()
    }

    /// The smallest count that can satisfy the lower bound (1 when there is none).
    pub fn min_count(&self) -> u64 {
        let mut m = 1;
        if let Some(b) = self.gt {
            m = m.max(b.saturating_add(1));
        }
        if let Some(b) = self.gte {
            m = m.max(b);
        }
        if let Some(b) = self.eq {
            m = m.max(b);
        }
        m
    }

    /// The count beyond which nothing changes any more: enough distinct values to decide
    /// every bound. Used to size bounded distinct sets.
    pub fn decisive_count(&self) -> u64 {
        let upper = [
            self.lt,
            self.lte.map(|b| b.saturating_add(1)),
            self.eq.map(|b| b.saturating_add(1)),
        ]
        .into_iter()
        .flatten()
        .max();
        upper.unwrap_or(0).max(self.min_count())
    }

    /// Whether some count satisfies every bound.
    pub fn satisfiable(&self) -> bool {
        let lo = self.min_count();
        let hi = [
            self.lt.map(|b| b.checked_sub(1)),
            self.lte.map(Some),
            self.eq.map(Some),
        ]
        .into_iter()
        .flatten()
        .map(|b| b.map_or(-1, |b| b as i128))
        .min()
        .unwrap_or(i128::MAX);
        (lo as i128) <= hi
    }

    /// The condition as JSON (for the alert's `correlation.condition`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("gt", self.gt),
            ("gte", self.gte),
            ("lt", self.lt),
            ("lte", self.lte),
            ("eq", self.eq),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.into());
            }
        }
        serde_json::Value::Object(m)
    }
}

/// One exception (allow-list entry): an event matching every `match` key is ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct ExceptionDef {
    /// Optional name, for logs and docs.
    pub name: Option<String>,
    /// Which rules it applies to (ids or names; `*` = all). Empty in a correlation's own
    /// `exceptions:` (it applies to that correlation).
    pub rules: Vec<String>,
    /// Field (with optional `|expand`) -> accepted values (any may match).
    pub matchers: Vec<(String, bool, Vec<String>)>,
}

/// `examples:` of a correlation: sequences of events that must (not) make it fire.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CorrelationExamples {
    /// Each sequence must produce at least one alert of this correlation.
    pub positive: Vec<Vec<serde_json::Value>>,
    /// No sequence may produce an alert of this correlation.
    pub negative: Vec<Vec<serde_json::Value>>,
}

/// A validated correlation rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationDef {
    /// Alert metadata (id, title, level, tags, ...).
    pub meta: RuleMeta,
    /// `name`, by which other correlations may reference this one.
    pub name: Option<String>,
    /// File it came from.
    pub file: String,
    /// Line of the document, where known.
    pub line: Option<usize>,
    /// The type.
    pub kind: CorrelationKind,
    /// Referenced rules (ids or names of rules or correlations), in order.
    pub rules: Vec<String>,
    /// Group-by fields or alias names.
    pub group_by: Vec<String>,
    /// alias -> (rule name or id -> field).
    pub aliases: BTreeMap<String, BTreeMap<String, String>>,
    /// Window length in milliseconds (0 for `new_terms`).
    pub timespan_ms: i64,
    /// The condition (for temporal types: the number of distinct rules; default all).
    pub condition: Condition,
    /// Whether the referenced rules also alert on their own (Sigma default: false).
    pub generate: bool,
    /// audithawk extension: re-alert interval per group (milliseconds), overriding the
    /// configured default.
    pub suppress_ms: Option<i64>,
    /// audithawk extension: allow-list entries for this correlation.
    pub exceptions: Vec<ExceptionDef>,
    /// audithawk extension: example event sequences.
    pub examples: CorrelationExamples,
}

/// Parses a Sigma duration: a number and one of `s`, `m`, `h`, `d` (and `ms`, `w` as
/// audithawk conveniences). Returns milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mult: i64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult).filter(|ms| *ms > 0)
}

/// Renders milliseconds back as the shortest exact Sigma duration.
pub fn format_duration(ms: i64) -> String {
    for (unit, m) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms % m == 0 {
            return format!("{}{unit}", ms / m);
        }
    }
    format!("{ms}ms")
}

fn key<'a>(m: &'a Mapping, k: &str) -> Option<&'a Yaml> {
    m.get(Yaml::String(k.to_string()))
}

fn text(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn str_list(v: &Yaml) -> Option<Vec<String>> {
    match v {
        Yaml::Sequence(s) => s.iter().map(text).collect(),
        other => text(other).map(|t| vec![t]),
    }
}

/// Parses one correlation document. `file`/`line` locate it for error messages.
pub fn parse_correlation(
    file: &str,
    line: Option<usize>,
    doc: &Yaml,
) -> Result<CorrelationDef, Vec<RuleError>> {
    let mut errs: Vec<String> = Vec::new();
    let Some(top) = doc.as_mapping() else {
        return Err(vec![RuleError {
            file: file.into(),
            line,
            rule_id: None,
            message: "correlation document is not a mapping".into(),
        }]);
    };
    let id = key(top, "id").and_then(text);
    let name = key(top, "name").and_then(text);
    let title = key(top, "title").and_then(text);
    if title.is_none() {
        errs.push("`title` is required".into());
    }
    let rule_id = id.clone().or_else(|| name.clone());
    if rule_id.is_none() {
        errs.push("one of `id` or `name` is required (alerts need a stable rule id)".into());
    }
    let level = match key(top, "level") {
        None => Level::Medium,
        Some(v) => match text(v).as_deref().and_then(Level::parse) {
            Some(l) => l,
            None => {
                errs.push(format!(
                    "`level` {v:?} is not one of informational, low, medium, high, critical"
                ));
                Level::Medium
            }
        },
    };
    let tags = key(top, "tags").and_then(str_list).unwrap_or_default();
    let references = key(top, "references")
        .or_else(|| key(top, "reference"))
        .and_then(str_list)
        .unwrap_or_default();
    let meta = RuleMeta {
        id: rule_id.clone().unwrap_or_default(),
        title: title.unwrap_or_default(),
        level,
        tags,
        description: key(top, "description").and_then(text).unwrap_or_default(),
        references,
        author: key(top, "author").and_then(text),
        source: file.to_string(),
    };

    let corr = key(top, "correlation").and_then(Yaml::as_mapping);
    let empty = Mapping::new();
    if corr.is_none() {
        errs.push("`correlation` must be a mapping".into());
    }
    let c = corr.unwrap_or(&empty);
    let ty = key(c, "type").and_then(text).unwrap_or_default();
    let rules = match key(c, "rules").map(str_list) {
        Some(Some(r)) if !r.is_empty() => r,
        Some(_) => {
            errs.push("`correlation.rules` must be a non-empty list of rule names or ids".into());
            Vec::new()
        }
        None => {
            errs.push("`correlation.rules` is required".into());
            Vec::new()
        }
    };
    let group_by = match key(c, "group-by") {
        None => Vec::new(),
        Some(v) => str_list(v).unwrap_or_else(|| {
            errs.push("`correlation.group-by` must be a list of field names".into());
            Vec::new()
        }),
    };
    let mut aliases = BTreeMap::new();
    if let Some(a) = key(c, "aliases") {
        match a.as_mapping() {
            Some(m) => {
                for (alias, per_rule) in m {
                    let (Some(alias), Some(per_rule)) = (text(alias), per_rule.as_mapping()) else {
                        errs.push(
                            "`correlation.aliases` must map alias -> {rule name: field}".into(),
                        );
                        continue;
                    };
                    let mut fields = BTreeMap::new();
                    for (r, f) in per_rule {
                        match (text(r), text(f)) {
                            (Some(r), Some(f)) => {
                                fields.insert(r, f);
                            }
                            _ => {
                                errs.push(format!("alias `{alias}`: entries must be `rule: field`"))
                            }
                        }
                    }
                    aliases.insert(alias, fields);
                }
            }
            None => errs.push("`correlation.aliases` must be a mapping".into()),
        }
    }
    for alias in aliases.keys() {
        if !group_by.contains(alias) {
            errs.push(format!("alias `{alias}` is not used in `group-by`"));
        }
    }

    let mut timespan_ms = 0;
    let needs_timespan = ty != "new_terms";
    match key(c, "timespan").and_then(text) {
        Some(t) => match parse_duration(&t) {
            Some(ms) => timespan_ms = ms,
            None => errs.push(format!(
                "`correlation.timespan` {t:?} is not a duration like 30s, 10m, 1h, 1d"
            )),
        },
        None if needs_timespan => errs.push("`correlation.timespan` is required".into()),
        None => {}
    }

    let mut condition = Condition::default();
    let mut cond_field = None;
    match key(c, "condition") {
        None => {}
        Some(Yaml::Mapping(m)) => {
            for (k, v) in m {
                let k = text(k).unwrap_or_default();
                if k == "field" {
                    cond_field = text(v);
                    continue;
                }
                let n = match v {
                    Yaml::Number(n) => n.as_u64(),
                    _ => None,
                };
                let Some(n) = n else {
                    errs.push(format!(
                        "`correlation.condition.{k}` must be a non-negative integer"
                    ));
                    continue;
                };
                match k.as_str() {
                    "gt" => condition.gt = Some(n),
                    "gte" => condition.gte = Some(n),
                    "lt" => condition.lt = Some(n),
                    "lte" => condition.lte = Some(n),
                    "eq" => condition.eq = Some(n),
                    other => errs.push(format!(
                        "`correlation.condition` has unknown key `{other}` (expected gt, gte, lt, lte, eq, field)"
                    )),
                }
            }
        }
        Some(_) => errs.push("`correlation.condition` must be a mapping such as {gte: 5}".into()),
    }
    let has_bound = condition != Condition::default();
    if has_bound && !condition.satisfiable() {
        errs.push("`correlation.condition` can never hold (empty range)".into());
    }

    let kind = match ty.as_str() {
        "event_count" => {
            if !has_bound {
                errs.push("`event_count` needs a `condition` such as {gte: 5}".into());
            }
            if cond_field.is_some() {
                errs.push("`condition.field` is only valid for `value_count`".into());
            }
            Some(CorrelationKind::EventCount)
        }
        "value_count" => {
            if !has_bound {
                errs.push("`value_count` needs a `condition` such as {field: objectRef.namespace, gte: 5}".into());
            }
            match cond_field.clone() {
                Some(field) => Some(CorrelationKind::ValueCount { field }),
                None => {
                    errs.push("`value_count` needs `condition.field` (the field whose distinct values are counted)".into());
                    None
                }
            }
        }
        "temporal" | "temporal_ordered" => {
            if cond_field.is_some() {
                errs.push("`condition.field` is only valid for `value_count`".into());
            }
            if ty == "temporal_ordered" && rules.len() < 2 {
                errs.push("`temporal_ordered` needs at least two rules".into());
            }
            if has_bound && ty == "temporal_ordered" {
                errs.push(
                    "`temporal_ordered` takes no `condition`: the whole sequence must occur".into(),
                );
            }
            if !has_bound {
                // Spec: the condition counts distinct rules; without one, all must match.
                condition.gte = Some(rules.len() as u64);
            }
            Some(if ty == "temporal" {
                CorrelationKind::Temporal
            } else {
                CorrelationKind::TemporalOrdered
            })
        }
        "new_terms" => {
            let fields = key(c, "fields").and_then(str_list).unwrap_or_default();
            if fields.is_empty() {
                errs.push("`new_terms` needs `correlation.fields` (the tuple of fields)".into());
            }
            let dur = |k: &str, errs: &mut Vec<String>| match key(c, k).and_then(text) {
                Some(t) => parse_duration(&t).or_else(|| {
                    errs.push(format!("`correlation.{k}` {t:?} is not a duration like 7d"));
                    None
                }),
                None => None,
            };
            let history_ms = dur("history", &mut errs).unwrap_or(7 * 86_400_000);
            let learning_ms = dur("learning", &mut errs).unwrap_or(86_400_000);
            if has_bound {
                errs.push("`new_terms` takes no `condition`".into());
            }
            if !group_by.is_empty() {
                errs.push("`new_terms` takes `fields`, not `group-by`".into());
            }
            Some(CorrelationKind::NewTerms {
                fields,
                history_ms,
                learning_ms,
            })
        }
        "" => {
            errs.push("`correlation.type` is required".into());
            None
        }
        other => {
            errs.push(format!(
                "`correlation.type` `{other}` is not one of event_count, value_count, temporal, temporal_ordered, new_terms"
            ));
            None
        }
    };

    let generate = match key(top, "generate").or_else(|| key(c, "generate")) {
        None => false,
        Some(Yaml::Bool(b)) => *b,
        Some(_) => {
            errs.push("`generate` must be true or false".into());
            false
        }
    };
    let suppress_ms = match key(top, "suppress")
        .or_else(|| key(c, "suppress"))
        .map(|v| text(v).unwrap_or_default())
    {
        None => None,
        Some(t) => match parse_duration(&t) {
            Some(ms) => Some(ms),
            None => {
                errs.push(format!("`suppress` {t:?} is not a duration like 10m"));
                None
            }
        },
    };
    let exceptions = match key(top, "exceptions") {
        None => Vec::new(),
        Some(v) => parse_exceptions(v, false).unwrap_or_else(|e| {
            errs.extend(e);
            Vec::new()
        }),
    };
    let examples = match key(top, "examples") {
        None => CorrelationExamples::default(),
        Some(v) => parse_examples(v).unwrap_or_else(|e| {
            errs.push(e);
            CorrelationExamples::default()
        }),
    };

    if !errs.is_empty() || kind.is_none() {
        return Err(errs
            .into_iter()
            .map(|message| RuleError {
                file: file.into(),
                line,
                rule_id: rule_id.clone(),
                message,
            })
            .collect());
    }
    Ok(CorrelationDef {
        meta,
        name,
        file: file.into(),
        line,
        kind: kind.unwrap_or(CorrelationKind::EventCount),
        rules,
        group_by,
        aliases,
        timespan_ms,
        condition,
        generate,
        suppress_ms,
        exceptions,
        examples,
    })
}

/// Parses an `exceptions:` list (in a correlation, or in the tuning config when
/// `with_rules` is true, where each entry says which rules it applies to).
pub fn parse_exceptions(v: &Yaml, with_rules: bool) -> Result<Vec<ExceptionDef>, Vec<String>> {
    let mut errs = Vec::new();
    let mut out = Vec::new();
    let Some(list) = v.as_sequence() else {
        return Err(vec!["`exceptions` must be a list".into()]);
    };
    for (i, e) in list.iter().enumerate() {
        let Some(m) = e.as_mapping() else {
            errs.push(format!(
                "`exceptions[{i}]` must be a mapping with a `match` key"
            ));
            continue;
        };
        let name = key(m, "name").and_then(text);
        let rules = key(m, "rules").and_then(str_list).unwrap_or_default();
        if with_rules && rules.is_empty() {
            errs.push(format!(
                "`exceptions[{i}].rules` is required (rule ids or names, or '*')"
            ));
        }
        let mut matchers = Vec::new();
        match key(m, "match").and_then(Yaml::as_mapping) {
            Some(mm) if !mm.is_empty() => {
                for (f, vals) in mm {
                    let Some(f) = text(f) else { continue };
                    let (field, expand) = match f.split_once('|') {
                        Some((field, "expand")) => (field.to_string(), true),
                        Some((_, m)) => {
                            errs.push(format!("`exceptions[{i}].match`: modifier `{m}` is not supported (only `expand`)"));
                            continue;
                        }
                        None => (f.clone(), false),
                    };
                    match str_list(vals) {
                        Some(vs) if !vs.is_empty() => matchers.push((field, expand, vs)),
                        _ => errs.push(format!(
                            "`exceptions[{i}].match.{f}` must be a value or a list of values"
                        )),
                    }
                }
            }
            _ => errs.push(format!(
                "`exceptions[{i}].match` must be a non-empty mapping of field: values"
            )),
        }
        out.push(ExceptionDef {
            name,
            rules,
            matchers,
        });
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

fn parse_examples(v: &Yaml) -> Result<CorrelationExamples, String> {
    let m = v
        .as_mapping()
        .ok_or("`examples` must be a mapping with `positive` and/or `negative`")?;
    let seqs = |k: &str| -> Result<Vec<Vec<serde_json::Value>>, String> {
        let Some(v) = key(m, k) else {
            return Ok(Vec::new());
        };
        let outer = v
            .as_sequence()
            .ok_or(format!("`examples.{k}` must be a list of event sequences"))?;
        outer
            .iter()
            .map(|seq| {
                let s = seq.as_sequence().ok_or(format!(
                    "`examples.{k}`: each entry must be a list of events"
                ))?;
                s.iter()
                    .map(|ev| serde_json::to_value(ev).map_err(|e| format!("`examples.{k}`: {e}")))
                    .collect()
            })
            .collect()
    };
    Ok(CorrelationExamples {
        positive: seqs("positive")?,
        negative: seqs("negative")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<CorrelationDef, Vec<RuleError>> {
        let doc: Yaml = serde_yaml_ng::from_str(y).unwrap();
        parse_correlation("t.yml", Some(1), &doc)
    }

    #[test]
    fn value_count_parses() {
        let d = parse(
            "title: sweep\nid: c1\ncorrelation:\n  type: value_count\n  rules: [secrets_read]\n  group-by: [user.username]\n  timespan: 10m\n  condition: {field: objectRef.namespace, gte: 5}\nlevel: high\n",
        )
        .unwrap();
        assert_eq!(
            d.kind,
            CorrelationKind::ValueCount {
                field: "objectRef.namespace".into()
            }
        );
        assert_eq!(d.timespan_ms, 600_000);
        assert_eq!(d.condition.gte, Some(5));
        assert_eq!(d.meta.level, Level::High);
        assert!(!d.generate);
    }

    #[test]
    fn errors_are_all_reported_with_location() {
        let e = parse("title: x\ncorrelation:\n  type: value_count\n  rules: []\n  timespan: 10 minutes\n  condition: {gte: -1}\n").unwrap_err();
        let msgs: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        let all = msgs.join("\n");
        assert!(all.contains("t.yml:1"), "{all}");
        assert!(all.contains("`id` or `name`"), "{all}");
        assert!(all.contains("correlation.rules"), "{all}");
        assert!(all.contains("timespan"), "{all}");
        assert!(all.contains("condition.gte"), "{all}");
        assert!(all.contains("condition.field"), "{all}");
    }

    #[test]
    fn temporal_defaults_to_all_rules() {
        let d = parse("title: t\nid: t\ncorrelation: {type: temporal, rules: [a, b, c], group-by: [user.username], timespan: 5m}\n").unwrap();
        assert_eq!(d.condition.gte, Some(3));
    }

    #[test]
    fn new_terms_parses() {
        let d = parse("title: n\nid: n\ncorrelation: {type: new_terms, rules: [exec], fields: [user.username, objectRef.namespace], history: 7d, learning: 1d}\n").unwrap();
        assert_eq!(
            d.kind,
            CorrelationKind::NewTerms {
                fields: vec!["user.username".into(), "objectRef.namespace".into()],
                history_ms: 7 * 86_400_000,
                learning_ms: 86_400_000
            }
        );
    }

    #[test]
    fn conditions_and_ranges() {
        let c = Condition {
            gt: Some(100),
            lte: Some(200),
            ..Default::default()
        };
        assert!(!c.holds(100) && c.holds(101) && c.holds(200) && !c.holds(201));
        assert!(c.has_upper_bound());
        assert_eq!(c.min_count(), 101);
        assert_eq!(c.decisive_count(), 201);
        let e = parse("title: x\nid: x\ncorrelation: {type: event_count, rules: [a], timespan: 1m, condition: {gt: 5, lt: 3}}\n").unwrap_err();
        assert!(e[0].message.contains("never hold"), "{e:?}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90m"), Some(5_400_000));
        assert_eq!(parse_duration("1d"), Some(86_400_000));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("5y"), None);
        assert_eq!(format_duration(600_000), "10m");
        assert_eq!(format_duration(1500), "1500ms");
    }

    #[test]
    fn exceptions_and_examples() {
        let d = parse(
            "title: x\nid: x\ncorrelation: {type: event_count, rules: [a], timespan: 1m, condition: {gte: 2}}\nsuppress: 10m\nexceptions:\n  - match: {user.username: [ci-bot], objectRef.namespace|expand: '%ns%'}\nexamples:\n  positive: [[{verb: get}, {verb: get}]]\n",
        )
        .unwrap();
        assert_eq!(d.suppress_ms, Some(600_000));
        assert_eq!(d.exceptions[0].matchers.len(), 2);
        assert!(d.exceptions[0].matchers[1].1);
        assert_eq!(d.examples.positive[0].len(), 2);
    }
}
