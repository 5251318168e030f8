//! Falco output templates: `text %field text %field[arg]`.

use serde_json::Value;

use super::fields::{self, EventCtx, FieldRef, View};

/// A piece of a compiled template.
#[derive(Debug, Clone)]
pub enum Segment {
    /// Literal text.
    Lit(String),
    /// A field to substitute.
    Field(FieldRef),
}

/// Compiles a template. Field names are matched longest-first, so
/// `%ka.target.name/%ka.target.resource` and a sentence ending in `%ka.verb.` both work.
pub fn compile(tpl: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = tpl;
    while let Some(i) = rest.find('%') {
        lit.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let run = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(after.len());
        let word = &after[..run];
        if word.is_empty() || !word.as_bytes()[0].is_ascii_alphabetic() {
            lit.push('%');
            rest = after;
            continue;
        }
        // The longest known field that prefixes the word.
        let Some(name) = (1..=word.len())
            .rev()
            .map(|n| &word[..n])
            .find(|w| fields::lookup(w).is_some())
        else {
            return Err(format!("unknown field '%{word}' in output"));
        };
        let mut used = name.len();
        let mut arg = None;
        if used == word.len() && after[used..].starts_with('[') {
            match after[used..].find(']') {
                Some(end) => {
                    arg = Some(&after[used + 1..used + end]);
                    used += end + 1;
                }
                None => return Err(format!("'%{name}[' without a closing ']' in output")),
            }
        }
        let f = fields::resolve(name, arg).map_err(|e| format!("{e} (in output)"))?;
        if !lit.is_empty() {
            out.push(Segment::Lit(std::mem::take(&mut lit)));
        }
        out.push(Segment::Field(f));
        rest = &after[used..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Segment::Lit(lit));
    }
    Ok(out)
}

/// Renders a compiled template against `root` (which the caller has already redacted).
/// Missing values print as `<NA>`, lists as `(a,b)`, as Falco does.
pub fn render(tpl: &[Segment], root: &Value, ctx: &EventCtx<'_>) -> String {
    let mut s = String::new();
    for seg in tpl {
        match seg {
            Segment::Lit(l) => s.push_str(l),
            Segment::Field(f) => match fields::extract(f, &View::Json(root), ctx) {
                None => s.push_str("<NA>"),
                Some(vals) if f.def.list => {
                    s.push('(');
                    s.push_str(&vals.join(","));
                    s.push(')');
                }
                Some(vals) => s.push_str(&vals.join(",")),
            },
        }
    }
    s.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_fields_lists_and_missing() {
        let t = compile(
            "user=%ka.user.name target=%ka.target.name/%ka.target.resource groups=%ka.user.groups ns=%ka.target.namespace. cmd=%ka.uri.param[command] 100%",
        )
        .unwrap();
        let ev = json!({"user": {"username": "bob", "groups": ["a", "b"]},
            "objectRef": {"resource": "pods", "name": "p"},
            "requestURI": "/x?command=ls"});
        assert_eq!(
            render(&t, &ev, &EventCtx::default()),
            "user=bob target=p/pods groups=(a,b) ns=<NA>. cmd=ls 100%"
        );
    }

    #[test]
    fn unknown_output_fields_are_errors() {
        assert!(compile("x=%proc.name").unwrap_err().contains("proc.name"));
        assert!(compile("x=%ka.uri.param").unwrap_err().contains("requires"));
    }
}
