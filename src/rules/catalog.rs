//! The detection catalog: one entry per loaded rule and correlation (level, ATT&CK tactic and
//! technique, state type, use-case row, file), and the generated `docs/detections.md`.
//!
//! The catalog reads compiled rules for their metadata and the raw YAML for what the compiler
//! does not keep (the `usecase` extension key, correlation types), so it works the same for the
//! embedded rules and for user rule directories.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::model::Level;

use super::{BodyNeed, Lists, RuleSet};

/// The prose around the generated tables; it also holds the hand-written out-of-scope section.
const TEMPLATE: &str = include_str!("catalog_template.md");

/// How a detection keeps state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateType {
    /// One event decides.
    Stateless,
    /// A rule only referenced by correlations (does not alert on its own).
    Base,
    /// A Sigma correlation (`event_count`, `value_count`, `temporal`, `temporal_ordered`,
    /// `new_terms`, or another type as written).
    Correlation(String),
}

impl StateType {
    /// The name used in listings (`stateless`, `base`, or the correlation type).
    pub fn as_str(&self) -> &str {
        match self {
            StateType::Stateless => "stateless",
            StateType::Base => "base",
            StateType::Correlation(t) => t,
        }
    }
}

impl std::fmt::Display for StateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// Rule or correlation id.
    pub id: String,
    /// Sigma `name`, when present.
    pub name: Option<String>,
    /// Title.
    pub title: String,
    /// Level.
    pub level: Level,
    /// ATT&CK tactics from the tags (`credential-access`), comma-separated.
    pub tactic: String,
    /// ATT&CK technique ids from the tags (`T1552.007`), comma-separated.
    pub technique: String,
    /// How the detection keeps state.
    pub state_type: StateType,
    /// The use-case row(s) (extension key `usecase`), comma-separated; empty when absent.
    pub usecase: String,
    /// File the detection came from (`detections/...` for embedded rules).
    pub file: String,
    /// The audit level the detection needs (`Metadata`, `Request` or `RequestResponse`):
    /// the highest body any of its rules reads. Policies that log less make it blind.
    pub audit_level: &'static str,
}

fn level_name(b: BodyNeed) -> &'static str {
    match b {
        BodyNeed::None => "Metadata",
        BodyNeed::Request => "Request",
        BodyNeed::Response => "RequestResponse",
    }
}

/// Reads the raw documents of a rule file: for embedded rules from the embedded table, for
/// user rules from disk. A file that cannot be read or parsed yields no documents (the loader
/// has already reported it).
fn raw_docs(file: &str) -> Vec<Value> {
    let text = match file.strip_prefix("builtin:detections/") {
        Some(rel) => super::builtin_files()
            .iter()
            .find(|(p, _)| *p == rel)
            .map(|(_, t)| t.to_string()),
        None => std::fs::read_to_string(file).ok(),
    };
    let Some(text) = text else {
        return Vec::new();
    };
    serde_yaml_ng::Deserializer::from_str(&text)
        .filter_map(|d| Value::deserialize(d).ok())
        .collect()
}

/// `usecase:` as text: a string, or a list of strings joined with ", ".
fn usecase_of(doc: &Value) -> String {
    match doc.get("usecase") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Sequence(v)) => v
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    }
}

fn display_file(file: &str) -> String {
    file.strip_prefix("builtin:").unwrap_or(file).to_string()
}

fn tags_of(doc: &Value) -> Vec<String> {
    match doc.get("tags") {
        Some(Value::Sequence(v)) => v
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// `t1552.007`, `g0001`, `s0002`: a letter and four digits (the same test alerts use).
fn is_attack_id(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 5
        && matches!(b[0].to_ascii_lowercase(), b't' | b'g' | b's')
        && b[1..5].iter().all(u8::is_ascii_digit)
}

/// Tactic and technique columns from `attack.*` tags.
fn attack_columns(tags: &[String]) -> (String, String) {
    let attack: Vec<&str> = tags
        .iter()
        .filter_map(|t| t.strip_prefix("attack."))
        .collect();
    let tactics: Vec<&str> = attack
        .iter()
        .copied()
        .filter(|t| !is_attack_id(t))
        .collect();
    let techniques: Vec<String> = attack
        .iter()
        .filter(|t| is_attack_id(t) && t.as_bytes()[0].eq_ignore_ascii_case(&b't'))
        .map(|t| t.to_ascii_uppercase())
        .collect();
    (tactics.join(", "), techniques.join(", "))
}

/// Builds the catalog of every rule and correlation in `set`, in load order (embedded rules
/// are sorted by path).
pub fn catalog(set: &RuleSet) -> Vec<CatalogEntry> {
    let mut referenced: BTreeSet<String> = BTreeSet::new();
    for c in set.correlations() {
        if let Some(Value::Sequence(rs)) = c.doc.get("correlation").and_then(|c| c.get("rules")) {
            referenced.extend(rs.iter().filter_map(Value::as_str).map(str::to_string));
        }
    }
    // Raw documents by file, read once per file.
    let mut files: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut out = Vec::new();
    for r in set.rules() {
        let docs = files
            .entry(r.file.clone())
            .or_insert_with(|| raw_docs(&r.file));
        let usecase = docs
            .iter()
            .find(|d| d.get("id").and_then(Value::as_str) == Some(r.meta.id.as_str()))
            .map(usecase_of)
            .unwrap_or_default();
        let is_base = r.name.as_ref().is_some_and(|n| referenced.contains(n))
            || referenced.contains(&r.meta.id);
        let (tactic, technique) = attack_columns(&r.meta.tags);
        out.push(CatalogEntry {
            id: r.meta.id.clone(),
            name: r.name.clone(),
            title: r.meta.title.clone(),
            level: r.meta.level,
            tactic,
            technique,
            state_type: if is_base {
                StateType::Base
            } else {
                StateType::Stateless
            },
            usecase,
            file: display_file(&r.file),
            audit_level: level_name(r.requirements().body),
        });
    }
    for c in set.correlations() {
        let d = &c.doc;
        let s = |k: &str| {
            d.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let typ = d
            .get("correlation")
            .and_then(|c| c.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("correlation")
            .to_string();
        let (tactic, technique) = attack_columns(&tags_of(d));
        // A correlation sees what its base rules see: the most demanding one decides.
        let body = d
            .get("correlation")
            .and_then(|c| c.get("rules"))
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(|n| set.find(n))
            .map(|i| set.rules()[i].requirements().body)
            .max()
            .unwrap_or(BodyNeed::None);
        out.push(CatalogEntry {
            id: s("id"),
            name: d.get("name").and_then(Value::as_str).map(str::to_string),
            title: s("title"),
            level: Level::parse(&s("level")).unwrap_or(Level::Medium),
            tactic,
            technique,
            state_type: StateType::Correlation(typ),
            usecase: usecase_of(d),
            file: display_file(&c.file),
            audit_level: level_name(body),
        });
    }
    out
}

/// Escapes text for a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The tactic folder of a file (`detections/<tactic>/x.yml`), for grouping.
fn folder(file: &str) -> &str {
    let rel = file.strip_prefix("detections/").unwrap_or(file);
    rel.split_once('/').map_or("", |(f, _)| f)
}

fn level_rank(l: Level) -> usize {
    Level::ALL.iter().position(|x| *x == l).unwrap_or(0)
}

/// Renders `docs/detections.md` from a catalog and the value lists the rules use.
pub fn render_markdown(entries: &[CatalogEntry], lists: &Lists) -> String {
    let alerting: Vec<&CatalogEntry> = entries
        .iter()
        .filter(|e| e.state_type != StateType::Base)
        .collect();
    let bases: Vec<&CatalogEntry> = entries
        .iter()
        .filter(|e| e.state_type == StateType::Base)
        .collect();
    let usecases: BTreeSet<&str> = entries
        .iter()
        .flat_map(|e| e.usecase.split(", "))
        .filter(|u| !u.is_empty())
        .collect();

    // Sorted by tactic folder, then level (most severe first), then title: stable and useful.
    let mut rows = alerting.clone();
    rows.sort_by(|a, b| {
        (
            folder(&a.file),
            std::cmp::Reverse(level_rank(a.level)),
            &a.title,
            &a.id,
        )
            .cmp(&(
                folder(&b.file),
                std::cmp::Reverse(level_rank(b.level)),
                &b.title,
                &b.id,
            ))
    });
    let mut catalog = String::new();
    let mut current = None;
    for e in &rows {
        let f = folder(&e.file);
        if current != Some(f) {
            current = Some(f);
            let _ = write!(
                catalog,
                "\n### {}\n\n| title | level | tactic | technique | state | use case | audit level | id | file |\n|---|---|---|---|---|---|---|---|---|\n",
                if f.is_empty() { "other" } else { f }
            );
        }
        let _ = writeln!(
            catalog,
            "| {} | {} | {} | {} | {} | {} | {} | `{}` | [{}](../{}) |",
            cell(&e.title),
            e.level.as_str(),
            cell(&e.tactic),
            cell(&e.technique),
            e.state_type,
            cell(&e.usecase),
            e.audit_level,
            e.id,
            cell(e.file.rsplit('/').next().unwrap_or(&e.file)),
            e.file
        );
    }

    let mut base_rules = String::from("| name | title | file |\n|---|---|---|\n");
    for e in &bases {
        let _ = writeln!(
            base_rules,
            "| `{}` | {} | [{}](../{}) |",
            e.name.as_deref().unwrap_or(&e.id),
            cell(&e.title),
            cell(e.file.rsplit('/').next().unwrap_or(&e.file)),
            e.file
        );
    }

    // Level x state summary.
    let mut by_level: BTreeMap<usize, (Level, usize, usize)> = BTreeMap::new();
    for e in &alerting {
        let slot = by_level
            .entry(usize::MAX - level_rank(e.level))
            .or_insert((e.level, 0, 0));
        if e.state_type == StateType::Stateless {
            slot.1 += 1;
        } else {
            slot.2 += 1;
        }
    }
    let mut summary = String::from("| level | single-event | correlation |\n|---|---|---|\n");
    for (level, s, c) in by_level.values() {
        let _ = writeln!(summary, "| {} | {s} | {c} |", level.as_str());
    }

    let mut list_md = String::from("| list | values | what |\n|---|---|---|\n");
    let mut details = String::new();
    for l in lists.values() {
        let _ = writeln!(
            list_md,
            "| `{}` | {} | {} |",
            l.name,
            l.values.len(),
            cell(l.description.as_deref().unwrap_or(""))
        );
        if !l.values.is_empty() {
            let _ = write!(
                details,
                "\n<details><summary><code>{}</code></summary>\n\n",
                l.name
            );
            for v in &l.values {
                let _ = writeln!(details, "- `{}`", v.replace('`', "'"));
            }
            details.push_str("\n</details>\n");
        }
    }
    list_md.push_str(&details);

    let stateless = alerting
        .iter()
        .filter(|e| e.state_type == StateType::Stateless)
        .count();
    TEMPLATE
        .replace("{{RULE_COUNT}}", &alerting.len().to_string())
        .replace("{{STATELESS_COUNT}}", &stateless.to_string())
        .replace(
            "{{CORRELATION_COUNT}}",
            &(alerting.len() - stateless).to_string(),
        )
        .replace("{{USECASE_COUNT}}", &usecases.len().to_string())
        .replace("{{BASE_COUNT}}", &bases.len().to_string())
        .replace("{{SUMMARY}}", summary.trim_end())
        .replace("{{CATALOG}}", catalog.trim())
        .replace("{{BASE_RULES}}", base_rules.trim_end())
        .replace("{{LISTS}}", list_md.trim_end())
}

/// The out-of-scope rows documented in the template: (row number, use-case id).
pub fn out_of_scope() -> Vec<(u32, String)> {
    let Some((_, section)) = TEMPLATE.split_once("## Out of scope") else {
        return Vec::new();
    };
    section
        .lines()
        .filter_map(|l| {
            let mut cols = l.trim().strip_prefix('|')?.split('|').map(str::trim);
            let n = cols.next()?.parse::<u32>().ok()?;
            let id = cols.next()?.to_string();
            Some((n, id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
title: Exec into pod
id: 11111111-1111-4111-8111-111111111111
name: exec_base
usecase: EXEC
level: low
tags: [attack.execution, attack.t1609]
logsource: {product: kubernetes, service: audit}
detection:
  sel: {objectRef.subresource: exec}
  condition: sel
---
title: Many execs
id: 22222222-2222-4222-8222-222222222222
usecase: [EXEC-BURST, EXEC]
level: high
tags: [attack.execution, attack.t1609]
correlation: {type: event_count, rules: [exec_base], group-by: [user.username], timespan: 5m, condition: {gte: 3}}
---
title: Secret list
id: 33333333-3333-4333-8333-333333333333
usecase: SECRET-LIST
level: medium
tags: [attack.credential-access, attack.t1552.007]
logsource: {product: kubernetes, service: audit}
detection:
  sel: {objectRef.resource: secrets, verb: list}
  condition: sel
"#;

    fn set() -> RuleSet {
        // from_texts labels are not files on disk, so usecase comes only from correlations
        // here; the embedded path is exercised by tests/detections.rs.
        match RuleSet::from_texts(&[("t.yml", RULES)], &[], false) {
            Ok((s, _)) => s,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn states_tactics_and_techniques() {
        let c = catalog(&set());
        assert_eq!(c.len(), 3);
        let base = c.iter().find(|e| e.title == "Exec into pod").expect("base");
        assert_eq!(base.state_type, StateType::Base);
        let corr = c.iter().find(|e| e.title == "Many execs").expect("corr");
        assert_eq!(
            corr.state_type,
            StateType::Correlation("event_count".into())
        );
        assert_eq!(corr.level, Level::High);
        assert_eq!(corr.usecase, "EXEC-BURST, EXEC");
        let s = c.iter().find(|e| e.title == "Secret list").expect("rule");
        assert_eq!(s.state_type, StateType::Stateless);
        assert_eq!(s.tactic, "credential-access");
        assert_eq!(s.technique, "T1552.007");
        assert_eq!(s.audit_level, "Metadata");
    }

    #[test]
    fn audit_level_follows_the_bodies_read() {
        let rules = r#"
title: Privileged pod
id: 44444444-4444-4444-8444-444444444444
name: priv
level: informational
tags: [attack.privilege-escalation, attack.t1611]
logsource: {product: kubernetes, service: audit}
detection:
  sel: {requestObject.spec.containers.securityContext.privileged: true}
  condition: sel
---
title: Wildcard role
id: 55555555-5555-4555-8555-555555555555
level: medium
tags: [attack.privilege-escalation, attack.t1098.006]
logsource: {product: kubernetes, service: audit}
detection:
  sel: {responseObject.rules.verbs: x}
  condition: sel
---
title: Many privileged pods
id: 66666666-6666-4666-8666-666666666666
level: high
tags: [attack.privilege-escalation, attack.t1611]
correlation: {type: event_count, rules: [priv], group-by: [user.username], timespan: 5m, condition: {gte: 2}}
"#;
        let set = match RuleSet::from_texts(&[("t.yml", rules)], &[], false) {
            Ok((s, _)) => s,
            Err(e) => panic!("{e:?}"),
        };
        let c = catalog(&set);
        let by = |t: &str| c.iter().find(|e| e.title == t).map(|e| e.audit_level);
        assert_eq!(by("Privileged pod"), Some("Request"));
        assert_eq!(by("Wildcard role"), Some("RequestResponse"));
        assert_eq!(by("Many privileged pods"), Some("Request"));
    }

    #[test]
    fn markdown_has_tables_and_no_placeholders() {
        let md = render_markdown(&catalog(&set()), &Lists::new());
        assert!(!md.contains("{{"), "unreplaced placeholder");
        // Rules from memory have no file to read `usecase` from, so that column is empty here.
        assert!(md.contains(
            "| Secret list | medium | credential-access | T1552.007 | stateless |  | Metadata |"
        ));
        assert!(md.contains("| Many execs | high | execution | T1609 | event_count |"));
        // Base rules are listed separately, not in the alerting catalog.
        assert!(md.contains("| `exec_base` | Exec into pod |"));
        assert!(md.contains("2 alerting detections"));
    }

    #[test]
    fn out_of_scope_rows_parse() {
        let rows = out_of_scope();
        assert!(rows
            .iter()
            .any(|(n, id)| *n == 88 && id == "CROSS-CLOUD-SECRETS"));
        assert!(rows.iter().all(|(n, _)| *n > 0));
    }
}
