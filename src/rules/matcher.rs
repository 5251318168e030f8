//! Compiled value matchers: what one field value is tested against.
//!
//! Everything here is built once at rule load. Matching never allocates: patterns are
//! lower-cased at compile time and compared with ASCII case folding, numbers seen by string
//! patterns are rendered into a stack buffer, and `contains` lists become one Aho-Corasick
//! automaton. Non-ASCII patterns that must match case-insensitively fall back to a regex
//! with `(?i)`, because ASCII folding would silently miss `É` vs `é`.

use std::fmt::Write as _;
use std::net::IpAddr;

use aho_corasick::AhoCorasick;
use ipnet::IpNet;
use regex::Regex;

use crate::model::{Document, FieldPath, Val};

/// One token of a Sigma string value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    /// A literal byte.
    Lit(u8),
    /// `?`: exactly one character.
    One,
    /// `*`: any run of characters.
    Star,
}

/// Splits a Sigma string into tokens: `*` and `?` are wildcards, `\*` `\?` `\\` escape them,
/// and any other backslash is literal (Sigma's rule, so Windows-style paths need no doubling).
pub(crate) fn tokenize(s: &str) -> Vec<Tok> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 < b.len() && matches!(b[i + 1], b'*' | b'?' | b'\\') => {
                out.push(Tok::Lit(b[i + 1]));
                i += 2;
            }
            b'*' => {
                // Consecutive stars are one star.
                if out.last() != Some(&Tok::Star) {
                    out.push(Tok::Star);
                }
                i += 1;
            }
            b'?' => {
                out.push(Tok::One);
                i += 1;
            }
            c => {
                out.push(Tok::Lit(c));
                i += 1;
            }
        }
    }
    out
}

/// A string pattern, classified into the cheapest test that implements it.
#[derive(Debug, Clone)]
pub(crate) enum StrPat {
    /// `*`: any non-null value, objects included (`hostPath: '*'`).
    Any,
    /// Whole-value equality.
    Eq(Box<str>),
    /// `value*`
    Prefix(Box<str>),
    /// `*value`
    Suffix(Box<str>),
    /// `*value*`, or several of them merged into one automaton; the needles are kept for
    /// the literal prefilter.
    Contains(AhoCorasick, Box<[Box<str>]>),
    /// Anything else with wildcards.
    Glob(Box<[Tok]>),
    /// A regular expression (`|re`, or a case-insensitive non-ASCII pattern).
    Regex(Regex),
}

/// A string pattern and whether it is case-sensitive.
#[derive(Debug, Clone)]
pub(crate) struct StrAtom {
    pub pat: StrPat,
    pub cased: bool,
}

/// Comparison operators of `gt`, `gte`, `lt`, `lte`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// One value test; a field matches when any (or, with `|all`, every) atom matches a value.
#[derive(Debug, Clone)]
pub(crate) enum Atom {
    /// A string pattern; numbers and booleans in the event are compared as their text.
    Str(StrAtom),
    /// A YAML number: equal numbers, or strings that parse to an equal number.
    Num(f64),
    /// A YAML boolean: the boolean, or the string `true`/`false` in any case.
    Bool(bool),
    /// `gt`/`gte`/`lt`/`lte` against a number.
    Cmp(CmpOp, f64),
    /// `cidr`: the value is an IP address inside the network.
    Cidr(IpNet),
}

/// Stack buffer for rendering numbers without allocating.
struct StackBuf {
    buf: [u8; 40],
    len: usize,
}

impl StackBuf {
    fn new() -> Self {
        StackBuf {
            buf: [0; 40],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        // Only `write_str` fills the buffer, with whole `&str`s, so it is valid UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn utf8_len(b: u8) -> usize {
    match b {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Wildcard match; `?` consumes one UTF-8 character. Literals are lower-cased already when
/// `!cased`.
pub(crate) fn glob(p: &[Tok], s: &[u8], cased: bool) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                Tok::Star => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                Tok::One => {
                    si += utf8_len(s[si]);
                    pi += 1;
                    continue;
                }
                Tok::Lit(c) => {
                    let x = if cased {
                        s[si]
                    } else {
                        s[si].to_ascii_lowercase()
                    };
                    if c == x {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, ss)) => {
                let next = ss + utf8_len(s[ss]);
                star = Some((sp, next));
                pi = sp + 1;
                si = next;
            }
            None => return false,
        }
    }
    p[pi.min(p.len())..].iter().all(|t| *t == Tok::Star)
}

fn eq_ci(a: &[u8], b: &[u8], cased: bool) -> bool {
    if cased {
        a == b
    } else {
        a.eq_ignore_ascii_case(b)
    }
}

impl StrAtom {
    /// Tests one string.
    #[inline]
    pub fn matches_str(&self, s: &str) -> bool {
        let b = s.as_bytes();
        match &self.pat {
            StrPat::Any => true,
            StrPat::Eq(p) => b.len() == p.len() && eq_ci(b, p.as_bytes(), self.cased),
            StrPat::Prefix(p) => {
                b.len() >= p.len() && eq_ci(&b[..p.len()], p.as_bytes(), self.cased)
            }
            StrPat::Suffix(p) => {
                b.len() >= p.len() && eq_ci(&b[b.len() - p.len()..], p.as_bytes(), self.cased)
            }
            StrPat::Contains(ac, _) => ac.is_match(s),
            StrPat::Glob(t) => glob(t, b, self.cased),
            StrPat::Regex(r) => r.is_match(s),
        }
    }
}

fn parse_num(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok()
}

/// Renders a non-string scalar as text (numbers as JSON writes them), calling `f` with it.
pub(crate) fn with_text(v: Val<'_>, f: impl FnOnce(&str) -> bool) -> bool {
    let mut buf = StackBuf::new();
    match v {
        Val::Str(s) => return f(s),
        Val::Int(i) => {
            let _ = write!(buf, "{i}");
        }
        Val::Float(x) => {
            if write!(buf, "{x}").is_err() {
                return false;
            }
        }
        Val::Bool(b) => return f(if b { "true" } else { "false" }),
        Val::Null | Val::Object => return false,
    }
    f(buf.as_str())
}

impl Atom {
    /// Tests one value seen at a field path.
    #[inline]
    pub fn matches(&self, v: Val<'_>) -> bool {
        match self {
            Atom::Str(a) => match v {
                Val::Str(s) => a.matches_str(s),
                Val::Null => false,
                Val::Object => matches!(a.pat, StrPat::Any),
                other => with_text(other, |s| a.matches_str(s)),
            },
            Atom::Num(n) => match v {
                Val::Int(i) => (i as f64) == *n,
                Val::Float(x) => x == *n,
                Val::Str(s) => parse_num(s) == Some(*n),
                _ => false,
            },
            Atom::Bool(b) => match v {
                Val::Bool(x) => x == *b,
                Val::Str(s) => s.eq_ignore_ascii_case(if *b { "true" } else { "false" }),
                _ => false,
            },
            Atom::Cmp(op, n) => {
                let x = match v {
                    Val::Int(i) => i as f64,
                    Val::Float(x) => x,
                    Val::Str(s) => match parse_num(s) {
                        Some(x) => x,
                        None => return false,
                    },
                    _ => return false,
                };
                match op {
                    CmpOp::Gt => x > *n,
                    CmpOp::Gte => x >= *n,
                    CmpOp::Lt => x < *n,
                    CmpOp::Lte => x <= *n,
                }
            }
            Atom::Cidr(net) => match v {
                Val::Str(s) => s.trim().parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
                _ => false,
            },
        }
    }
}

/// What a field is tested for.
#[derive(Debug, Clone)]
pub(crate) enum TestKind {
    /// `field: null`: no non-null value at any path.
    Null,
    /// `field|exists: true|false`.
    Exists(bool),
    /// Some value matches some atom; or, when `null` is set, the field is absent.
    Any { atoms: Box<[Atom]>, null: bool },
    /// `|all`: every atom matches some value.
    All(Box<[Atom]>),
}

/// One `field|modifiers: values` entry of a selection, compiled.
#[derive(Debug, Clone)]
pub(crate) struct FieldTest {
    /// The field as written in the rule (before mapping).
    pub field: String,
    /// Event paths it reads; more than one when the field mapping expands it (OR).
    pub paths: Box<[FieldPath]>,
    /// The test.
    pub kind: TestKind,
}

fn visit_paths(
    doc: &dyn Document,
    paths: &[FieldPath],
    f: &mut dyn FnMut(Val<'_>) -> bool,
) -> bool {
    paths.iter().any(|p| doc.visit(p, f))
}

fn exists(doc: &dyn Document, paths: &[FieldPath]) -> bool {
    paths.iter().any(|p| doc.exists(p))
}

impl FieldTest {
    /// Evaluates the test against an event.
    #[inline]
    pub fn matches(&self, doc: &dyn Document) -> bool {
        match &self.kind {
            TestKind::Null => !exists(doc, &self.paths),
            TestKind::Exists(want) => exists(doc, &self.paths) == *want,
            TestKind::Any { atoms, null } => {
                if let [a] = &atoms[..] {
                    if visit_paths(doc, &self.paths, &mut |v| a.matches(v)) {
                        return true;
                    }
                } else if visit_paths(doc, &self.paths, &mut |v| {
                    atoms.iter().any(|a| a.matches(v))
                }) {
                    return true;
                }
                *null && !exists(doc, &self.paths)
            }
            TestKind::All(atoms) => atoms
                .iter()
                .all(|a| visit_paths(doc, &self.paths, &mut |v| a.matches(v))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(s: &str) -> Vec<Tok> {
        tokenize(s)
            .into_iter()
            .map(|t| match t {
                Tok::Lit(c) => Tok::Lit(c.to_ascii_lowercase()),
                t => t,
            })
            .collect()
    }

    #[test]
    fn glob_basics() {
        assert!(glob(&lits("a*c"), b"abbbc", false));
        assert!(glob(&lits("a*c"), b"ac", false));
        assert!(!glob(&lits("a*c"), b"acd", false));
        assert!(glob(&lits("a?c"), b"abc", false));
        assert!(!glob(&lits("a?c"), b"ac", false));
        assert!(glob(&lits("A?C"), b"aXc", false));
        assert!(!glob(&tokenize("A?C"), b"aXc", true));
        assert!(glob(&lits("*"), b"", false));
        assert!(glob(&lits("a*b*c"), b"a__b__b__c", false));
        assert!(!glob(&lits("a*b*c"), b"a__c__b", false));
        // `?` consumes a whole multi-byte character.
        assert!(glob(&lits("x?y"), "xéy".as_bytes(), false));
        assert!(!glob(&lits("x??y"), "xéy".as_bytes(), false));
    }

    #[test]
    fn escapes() {
        assert_eq!(
            tokenize(r"a\*b"),
            vec![Tok::Lit(b'a'), Tok::Lit(b'*'), Tok::Lit(b'b')]
        );
        assert_eq!(tokenize(r"a\?"), vec![Tok::Lit(b'a'), Tok::Lit(b'?')]);
        assert_eq!(
            tokenize(r"a\\*"),
            vec![Tok::Lit(b'a'), Tok::Lit(b'\\'), Tok::Star]
        );
        // A backslash before anything else is literal.
        assert_eq!(tokenize(r"\n"), vec![Tok::Lit(b'\\'), Tok::Lit(b'n')]);
        assert_eq!(tokenize("**"), vec![Tok::Star]);
    }

    #[test]
    fn numbers_render_as_text() {
        let a = Atom::Str(StrAtom {
            pat: StrPat::Eq("403".into()),
            cased: false,
        });
        assert!(a.matches(Val::Int(403)));
        assert!(!a.matches(Val::Int(4030)));
        let f = Atom::Str(StrAtom {
            pat: StrPat::Prefix("1.5".into()),
            cased: false,
        });
        assert!(f.matches(Val::Float(1.5)));
        let n = Atom::Num(403.0);
        assert!(n.matches(Val::Int(403)));
        assert!(n.matches(Val::Str("403")));
        assert!(!n.matches(Val::Str("ALLOW")));
        assert!(!n.matches(Val::Null));
    }
}
