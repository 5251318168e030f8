//! Named value lists for the `expand` modifier (`%system_users%`).
//!
//! A list file holds one list per YAML document:
//!
//! ```yaml
//! name: system_users
//! description: Control-plane identities.
//! values: ['system:kube-scheduler', 'system:kube-controller-manager']
//! ```
//!
//! or several under a top-level `lists:` sequence. User list files override a built-in list
//! of the same name, or extend it when the list says `extend: true`.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::yaml::{get_str, parse_chunk, scalar_text, split_docs};
use super::RuleError;

/// One named list.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueList {
    /// The list name, referenced as `%name%`.
    pub name: String,
    /// What the list holds.
    pub description: Option<String>,
    /// The values.
    pub values: Vec<String>,
    /// File the list (or its last override) came from.
    pub source: String,
}

/// Lists by name.
pub type Lists = BTreeMap<String, ValueList>;

fn one_list(
    file: &str,
    line: Option<usize>,
    v: &Value,
    errs: &mut Vec<RuleError>,
) -> Option<(ValueList, bool)> {
    let err = |m: String| RuleError {
        file: file.to_string(),
        line,
        rule_id: None,
        message: m,
    };
    let Some(name) = get_str(v, "name") else {
        errs.push(err("list has no `name`".into()));
        return None;
    };
    let values = match v.get("values") {
        Some(Value::Sequence(s)) => {
            let mut out = Vec::with_capacity(s.len());
            for x in s {
                match scalar_text(x) {
                    Some(t) => out.push(t),
                    None => {
                        errs.push(err(format!("list `{name}`: values must be scalars")));
                        return None;
                    }
                }
            }
            out
        }
        _ => {
            errs.push(err(format!("list `{name}` has no `values` sequence")));
            return None;
        }
    };
    let extend = matches!(v.get("extend"), Some(Value::Bool(true)));
    Some((
        ValueList {
            name: name.to_string(),
            description: get_str(v, "description").map(str::to_string),
            values,
            source: file.to_string(),
        },
        extend,
    ))
}

/// Reads every list in a file: `(list, extend)` pairs. Problems go to `errs`.
pub(crate) fn parse_file(
    file: &str,
    text: &str,
    errs: &mut Vec<RuleError>,
) -> Vec<(ValueList, bool)> {
    let mut out = Vec::new();
    for chunk in split_docs(text) {
        let v = match parse_chunk(file, &chunk) {
            Ok(v) => v,
            Err(e) => {
                errs.push(e);
                continue;
            }
        };
        match v.get("lists") {
            Some(Value::Sequence(items)) => {
                for item in items {
                    let line = get_str(item, "name")
                        .and_then(|n| chunk.text_line(n, None))
                        .or(Some(chunk.first_line));
                    out.extend(one_list(file, line, item, errs));
                }
            }
            Some(_) => errs.push(RuleError {
                file: file.to_string(),
                line: chunk.key_line("lists", None),
                rule_id: None,
                message: "`lists` must be a sequence of lists".into(),
            }),
            None => out.extend(one_list(file, Some(chunk.first_line), &v, errs)),
        }
    }
    out
}

/// Adds lists to `into`: a plain list replaces one of the same name, `extend: true` appends.
pub(crate) fn merge(into: &mut Lists, lists: Vec<(ValueList, bool)>) {
    for (l, extend) in lists {
        match into.get_mut(&l.name) {
            Some(old) if extend => {
                old.values.extend(l.values);
                old.source = l.source;
            }
            _ => {
                into.insert(l.name.clone(), l);
            }
        }
    }
}

/// Expands `%name%` placeholders in `value` with every value of the named lists
/// (a cartesian product when there are several). Values without placeholders are returned
/// as they are.
pub(crate) fn expand(value: &str, lists: &Lists) -> Result<Vec<String>, String> {
    let mut out = vec![String::new()];
    let mut rest = value;
    while let Some(start) = rest.find('%') {
        let Some(len) = rest[start + 1..].find('%') else {
            break;
        };
        let name = &rest[start + 1..start + 1 + len];
        let lit = &rest[..start];
        let Some(list) = lists.get(name) else {
            return Err(format!("`expand` references unknown list `{name}`"));
        };
        let mut next = Vec::with_capacity(out.len() * list.values.len());
        for prefix in &out {
            for v in &list.values {
                next.push(format!("{prefix}{lit}{v}"));
            }
        }
        out = next;
        rest = &rest[start + len + 2..];
    }
    for o in &mut out {
        o.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists() -> Lists {
        let mut errs = Vec::new();
        let mut l = Lists::new();
        merge(
            &mut l,
            parse_file(
                "a.yml",
                "name: users\nvalues: [alice, bob]\n---\nlists:\n  - name: ns\n    values: [x, y]\n",
                &mut errs,
            ),
        );
        assert!(errs.is_empty(), "{errs:?}");
        l
    }

    #[test]
    fn expands_products() {
        let l = lists();
        assert_eq!(expand("%users%", &l).unwrap(), vec!["alice", "bob"]);
        assert_eq!(
            expand("u:%users%@%ns%!", &l).unwrap(),
            vec!["u:alice@x!", "u:alice@y!", "u:bob@x!", "u:bob@y!"]
        );
        assert_eq!(expand("plain", &l).unwrap(), vec!["plain"]);
        assert!(expand("%nope%", &l).unwrap_err().contains("`nope`"));
    }

    #[test]
    fn override_and_extend() {
        let mut l = lists();
        let mut errs = Vec::new();
        merge(
            &mut l,
            parse_file("u.yml", "name: users\nvalues: [carol]\n", &mut errs),
        );
        assert_eq!(l["users"].values, vec!["carol"]);
        merge(
            &mut l,
            parse_file("v.yml", "name: ns\nextend: true\nvalues: [z]\n", &mut errs),
        );
        assert_eq!(l["ns"].values, vec!["x", "y", "z"]);
        assert!(errs.is_empty());
        parse_file("bad.yml", "name: q\n", &mut errs);
        assert!(errs[0].message.contains("no `values`"));
    }
}
