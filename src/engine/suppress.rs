//! Noise tuning: exceptions (allow-lists) and re-alert suppression.
//!
//! Both are keyed on event time, not wall-clock time, so that a replayed file and the live
//! stream suppress the same repeats. Syntax and semantics are documented in
//! docs/tuning.md.

use std::collections::HashMap;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::model::{AuditEvent, Document, FieldPath, Val};
use crate::rules::correlation::ExceptionDef;

/// Why a tuning entry was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TuningError {
    /// `%name%` in an `|expand` value names no list.
    #[error("exception `{exception}`: field `{field}`: no list named `{list}` for `|expand`")]
    UnknownList {
        /// The exception's name or position.
        exception: String,
        /// The field.
        field: String,
        /// The list name.
        list: String,
    },
    /// A re-alert interval that is not a duration.
    #[error("suppress[{index}]: `interval` {value:?} is not a duration like 10m")]
    BadInterval {
        /// Position in the list.
        index: usize,
        /// The value given.
        value: String,
    },
}

/// One compiled value pattern: lowercase, `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    parts: Vec<String>,
    wildcard: bool,
}

impl Pattern {
    fn new(s: &str) -> Pattern {
        let lower = s.to_lowercase();
        if lower.contains('*') {
            Pattern {
                parts: lower.split('*').map(str::to_string).collect(),
                wildcard: true,
            }
        } else {
            Pattern {
                parts: vec![lower],
                wildcard: false,
            }
        }
    }

    /// Case-insensitive match, as Sigma compares strings by default.
    fn matches(&self, v: &str) -> bool {
        let v = v.to_lowercase();
        if !self.wildcard {
            return self.parts[0] == v;
        }
        let (first, rest) = match self.parts.split_first() {
            Some(x) => x,
            None => return true,
        };
        let Some(mut tail) = v.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return tail.is_empty();
        };
        for m in middle {
            match tail.find(m.as_str()) {
                Some(i) => tail = &tail[i + m.len()..],
                None => return false,
            }
        }
        tail.len() >= last.len() && tail.ends_with(last.as_str())
    }
}

/// A compiled exception: every field must have a value matching one of its patterns.
#[derive(Debug, Clone)]
pub struct Exception {
    /// Name, for logs.
    pub name: String,
    fields: Vec<(FieldPath, Vec<Pattern>)>,
}

impl Exception {
    /// Compiles an exception, expanding `%list%` placeholders of `|expand` fields.
    pub fn compile(
        def: &ExceptionDef,
        index: usize,
        lists: &HashMap<String, Vec<String>>,
    ) -> Result<Exception, TuningError> {
        let name = def.name.clone().unwrap_or_else(|| format!("#{index}"));
        let mut fields = Vec::new();
        for (field, expand, values) in &def.matchers {
            let mut pats = Vec::new();
            for v in values {
                if *expand {
                    for e in expand_value(v, lists).map_err(|list| TuningError::UnknownList {
                        exception: name.clone(),
                        field: field.clone(),
                        list,
                    })? {
                        pats.push(Pattern::new(&e));
                    }
                } else {
                    pats.push(Pattern::new(v));
                }
            }
            fields.push((FieldPath::parse(field), pats));
        }
        Ok(Exception { name, fields })
    }

    /// Whether `ev` is allowed by this exception (all fields match).
    pub fn matches(&self, ev: &AuditEvent<'_>) -> bool {
        self.fields.iter().all(|(path, pats)| {
            ev.visit(path, &mut |v| match val_text(v) {
                Some(t) => pats.iter().any(|p| p.matches(&t)),
                None => false,
            })
        })
    }
}

/// Expands every `%name%` placeholder of `v` with each entry of the named list (Sigma
/// `|expand`). Several placeholders give the cross product. Returns the unknown list name
/// on error.
pub fn expand_value(v: &str, lists: &HashMap<String, Vec<String>>) -> Result<Vec<String>, String> {
    let mut out = vec![String::new()];
    let mut rest = v;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else { break };
        let name = &after[..end];
        let list = lists.get(name).ok_or_else(|| name.to_string())?;
        let prefix = &rest[..start];
        out = out
            .iter()
            .flat_map(|o| list.iter().map(move |item| format!("{o}{prefix}{item}")))
            .collect();
        rest = &after[end + 1..];
    }
    for o in &mut out {
        o.push_str(rest);
    }
    Ok(out)
}

/// Renders a scalar as text for matching and grouping; objects and nulls have no text.
pub fn val_text(v: Val<'_>) -> Option<String> {
    match v {
        Val::Str(s) => Some(s.to_string()),
        Val::Int(i) => Some(i.to_string()),
        Val::Float(x) => Some(x.to_string()),
        Val::Bool(b) => Some(b.to_string()),
        Val::Null | Val::Object => None,
    }
}

/// A set of exceptions.
#[derive(Debug, Clone, Default)]
pub struct Exceptions {
    list: Vec<Exception>,
}

impl Exceptions {
    /// Wraps compiled exceptions.
    pub fn new(list: Vec<Exception>) -> Exceptions {
        Exceptions { list }
    }
    /// The name of the first exception that allows `ev`, if any.
    pub fn allowed_by(&self, ev: &AuditEvent<'_>) -> Option<&str> {
        self.list
            .iter()
            .find(|e| e.matches(ev))
            .map(|e| e.name.as_str())
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// A configured re-alert interval for stateless rules (`suppress:` in the tuning config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressSpec {
    /// Rule ids or names (`*` = every rule).
    pub rules: Vec<String>,
    /// Fields whose values make the group (e.g. `user.username`); empty = one group.
    #[serde(default, rename = "group-by")]
    pub group_by: Vec<String>,
    /// At most one alert per group per this interval (e.g. `10m`).
    pub interval: String,
}

/// What the suppressor decided for one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Emit; carries how many repeats were suppressed since the last emitted alert.
    Emit {
        /// Suppressed repeats folded into this alert.
        suppressed: u64,
    },
    /// Drop this repeat (counted).
    Suppress,
}

/// Suppression state of one (rule, group): the event time until which repeats are held
/// back, and how many were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressState {
    /// Event time (µs) until which repeats are suppressed.
    pub until: i64,
    /// Repeats suppressed since the last emitted alert.
    pub count: u64,
}

impl SuppressState {
    /// Applies an alert at event time `t` with interval `iv` (µs).
    pub fn offer(&mut self, t: i64, iv: i64) -> Verdict {
        if t < self.until {
            self.count += 1;
            return Verdict::Suppress;
        }
        let suppressed = std::mem::take(&mut self.count);
        self.until = t.saturating_add(iv);
        Verdict::Emit { suppressed }
    }
}

/// Re-alert suppression for stateless rules, shared by all workers.
#[derive(Debug, Default)]
pub struct Suppressor {
    /// (rule index, group hash) -> state.
    state: DashMap<(usize, u64), SuppressState>,
}

impl Suppressor {
    /// An empty suppressor.
    pub fn new() -> Suppressor {
        Suppressor::default()
    }

    /// Offers an alert of `rule` for `group` at event time `t` (µs) with interval `iv`.
    pub fn offer(&self, rule: usize, group: u64, t: i64, iv: i64) -> Verdict {
        self.state.entry((rule, group)).or_default().offer(t, iv)
    }

    /// Forgets groups whose interval ended before `t` (µs) and that have nothing pending;
    /// bounds memory.
    pub fn expire(&self, t: i64) {
        self.state.retain(|_, s| s.until > t || s.count > 0);
    }

    /// Number of live (rule, group) entries.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_case_insensitive() {
        assert!(
            Pattern::new("system:serviceaccount:ci:*").matches("System:ServiceAccount:CI:builder")
        );
        assert!(Pattern::new("*bot*").matches("ci-bot-7"));
        assert!(Pattern::new("a*c").matches("abc"));
        assert!(!Pattern::new("a*c").matches("abd"));
        assert!(
            !Pattern::new("ab*ba").matches("aba"),
            "prefix and suffix must not overlap"
        );
        assert!(Pattern::new("*").matches(""));
        assert!(!Pattern::new("alice").matches("alice2"));
    }

    #[test]
    fn expand_cross_product_and_unknown_list() {
        let mut lists = HashMap::new();
        lists.insert("ns".to_string(), vec!["a".to_string(), "b".to_string()]);
        assert_eq!(
            expand_value("x-%ns%-y", &lists).unwrap(),
            vec!["x-a-y", "x-b-y"]
        );
        assert_eq!(expand_value("plain", &lists).unwrap(), vec!["plain"]);
        assert_eq!(expand_value("%nope%", &lists).unwrap_err(), "nope");
    }

    #[test]
    fn exception_matches_all_fields() {
        let mut lists = HashMap::new();
        lists.insert("ci".to_string(), vec!["ci-bot".to_string()]);
        let def = ExceptionDef {
            name: Some("ci".into()),
            rules: vec![],
            matchers: vec![
                ("user.username".into(), true, vec!["%ci%".into()]),
                ("objectRef.namespace".into(), false, vec!["build-*".into()]),
            ],
        };
        let ex = Exception::compile(&def, 0, &lists).unwrap();
        let ev = |u: &str, ns: &str| {
            AuditEvent::parse(&format!(r#"{{"auditID":"a","verb":"get","user":{{"username":"{u}"}},"objectRef":{{"namespace":"{ns}"}}}}"#))
                .unwrap()
                .into_owned()
        };
        assert!(ex.matches(&ev("ci-bot", "build-7")));
        assert!(!ex.matches(&ev("ci-bot", "prod")));
        assert!(!ex.matches(&ev("alice", "build-7")));
        let bad = ExceptionDef {
            matchers: vec![("user.username".into(), true, vec!["%missing%".into()])],
            ..def
        };
        assert!(matches!(
            Exception::compile(&bad, 0, &lists),
            Err(TuningError::UnknownList { .. })
        ));
    }

    #[test]
    fn suppression_counts_repeats_on_event_time() {
        let s = Suppressor::new();
        let iv = 600_000_000; // 10 minutes in µs
        assert_eq!(s.offer(1, 7, 0, iv), Verdict::Emit { suppressed: 0 });
        assert_eq!(s.offer(1, 7, 1, iv), Verdict::Suppress);
        assert_eq!(s.offer(1, 7, iv - 1, iv), Verdict::Suppress);
        // Another group is independent.
        assert_eq!(s.offer(1, 8, 5, iv), Verdict::Emit { suppressed: 0 });
        // Exactly at the end of the interval the next alert goes out with the count.
        assert_eq!(s.offer(1, 7, iv, iv), Verdict::Emit { suppressed: 2 });
        s.expire(3 * iv);
        assert!(s.is_empty());
    }
}
