//! YAML helpers: multi-document splitting with line numbers, and finding the line of a key
//! for semantic errors (serde only knows lines of syntax errors).

use serde_yaml_ng::Value;

use super::RuleError;

/// One YAML document of a file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk<'a> {
    /// The document text.
    pub text: &'a str,
    /// 1-based line of the document's first line in the file.
    pub first_line: usize,
}

impl Chunk<'_> {
    /// The file line of the first line in this document whose key is `key` (as written,
    /// possibly quoted), searching from file line `from` on.
    pub fn key_line(&self, key: &str, from: Option<usize>) -> Option<usize> {
        let from = from.unwrap_or(self.first_line);
        self.text.lines().enumerate().find_map(|(i, line)| {
            let n = self.first_line + i;
            if n < from {
                return None;
            }
            let t = line.trim_start();
            let t = t.strip_prefix("- ").map(str::trim_start).unwrap_or(t);
            let t = t
                .strip_prefix('\'')
                .or_else(|| t.strip_prefix('"'))
                .unwrap_or(t);
            let rest = t.strip_prefix(key)?;
            let rest = rest.trim_start_matches(['\'', '"']);
            rest.trim_start().starts_with(':').then_some(n)
        })
    }

    /// The file line of the first line at or after `from` that contains `needle`.
    pub fn text_line(&self, needle: &str, from: Option<usize>) -> Option<usize> {
        let from = from.unwrap_or(self.first_line);
        self.text.lines().enumerate().find_map(|(i, line)| {
            let n = self.first_line + i;
            (n >= from && line.contains(needle)).then_some(n)
        })
    }
}

/// Splits a file into documents at `---` lines (and `...` end markers).
pub(crate) fn split_docs(text: &str) -> Vec<Chunk<'_>> {
    let mut out = Vec::new();
    let mut start = 0usize; // byte offset of the current document
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (line_no, line) in (1usize..).zip(text.split_inclusive('\n')) {
        let t = line.trim_end_matches(['\n', '\r']);
        let is_start = t == "---" || t.starts_with("--- ") || t.starts_with("---\t");
        let is_end = t == "...";
        if is_start || is_end {
            out.push(Chunk {
                text: &text[start..offset],
                first_line: start_line,
            });
            start = offset + line.len();
            start_line = line_no + 1;
        }
        offset += line.len();
    }
    out.push(Chunk {
        text: &text[start..],
        first_line: start_line,
    });
    // Documents that hold only comments or whitespace are not documents.
    out.retain(|c| {
        c.text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    out
}

/// Parses one document, turning a syntax error into a [`RuleError`] with the file line.
pub(crate) fn parse_chunk(file: &str, chunk: &Chunk<'_>) -> Result<Value, RuleError> {
    serde_yaml_ng::from_str::<Value>(chunk.text).map_err(|e| {
        let line = e.location().map(|l| l.line() + chunk.first_line - 1);
        let mut msg = e.to_string();
        // serde's text carries the document-relative position; the line is reported
        // separately, file-relative.
        if let Some(i) = msg.find(" at line ") {
            msg.truncate(i);
        }
        RuleError {
            file: file.to_string(),
            line: line.or(Some(chunk.first_line)),
            rule_id: None,
            message: format!("invalid YAML: {msg}"),
        }
    })
}

/// A string field of a mapping.
pub(crate) fn get_str<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// A scalar rendered as text (strings, numbers, booleans); `None` for others.
pub(crate) fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_lines() {
        let t = "# c\na: 1\n---\nb: 2\n\n--- \n# only comment\n---\nc: 3\n";
        let d = split_docs(t);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].first_line, 1);
        assert_eq!(d[1].first_line, 4);
        assert_eq!(d[2].first_line, 9);
        assert_eq!(d[2].key_line("c", None), Some(9));
    }

    #[test]
    fn syntax_error_line_is_file_relative() {
        let t = "a: 1\n---\nb: 2\nc: [\n";
        let d = split_docs(t);
        let e = parse_chunk("f.yml", &d[1]).unwrap_err();
        assert!(e.line.unwrap() >= 4, "{e:?}");
        assert!(!e.message.contains(" at line "));
    }

    #[test]
    fn key_lines() {
        let t = "detection:\n  sel:\n    'verb|foo': x\n  condition: sel\n";
        let c = split_docs(t)[0];
        assert_eq!(c.key_line("verb|foo", None), Some(3));
        assert_eq!(c.key_line("condition", None), Some(4));
        assert_eq!(c.key_line("sel", Some(3)), None);
    }
}
