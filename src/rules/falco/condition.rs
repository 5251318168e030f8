//! Falco's condition language: lexer and parser to an AST.
//!
//! Grammar (libsinsp's filter grammar, as Falco rules use it):
//!
//! ```text
//! expr    := and ('or' and)*
//! and     := not ('and' not)*
//! not     := 'not' not | atom
//! atom    := '(' expr ')' | check | macro-name
//! check   := field unary-op | field op value | field list-op list
//! field   := name ('[' arg ']')?
//! list    := '(' (value (',' value)*)? ')' | list-name
//! value   := bare-word | "quoted" | 'quoted'
//! ```
//!
//! `and` binds tighter than `or`, `not` tighter than both. A word followed by an operator is
//! a field; a word on its own is a macro name (resolved when the rule is compiled). Errors
//! carry the byte offset in the condition text.

use std::fmt;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=` or `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `in`: the value (every value of a list field) is in the set.
    In,
    /// `intersects`: some value is in the set.
    Intersects,
    /// `pmatch`: the value is one of the paths or below one of them.
    PMatch,
    /// `contains`
    Contains,
    /// `icontains` (ASCII case-insensitive)
    IContains,
    /// `bcontains` (hex bytes)
    BContains,
    /// `startswith`
    StartsWith,
    /// `bstartswith` (hex bytes)
    BStartsWith,
    /// `endswith`
    EndsWith,
    /// `glob`
    Glob,
    /// `iglob`
    IGlob,
    /// `regex` (whole value must match)
    Regex,
    /// `exists`
    Exists,
}

impl Op {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "in",
            Op::Intersects => "intersects",
            Op::PMatch => "pmatch",
            Op::Contains => "contains",
            Op::IContains => "icontains",
            Op::BContains => "bcontains",
            Op::StartsWith => "startswith",
            Op::BStartsWith => "bstartswith",
            Op::EndsWith => "endswith",
            Op::Glob => "glob",
            Op::IGlob => "iglob",
            Op::Regex => "regex",
            Op::Exists => "exists",
        }
    }

    /// Parses an operator name or symbol.
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "=" | "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "in" => Op::In,
            "intersects" => Op::Intersects,
            "pmatch" => Op::PMatch,
            "contains" => Op::Contains,
            "icontains" => Op::IContains,
            "bcontains" => Op::BContains,
            "startswith" => Op::StartsWith,
            "bstartswith" => Op::BStartsWith,
            "endswith" => Op::EndsWith,
            "glob" => Op::Glob,
            "iglob" => Op::IGlob,
            "regex" => Op::Regex,
            "exists" => Op::Exists,
            _ => return None,
        })
    }

    /// Whether the operator takes a list of values.
    pub fn takes_list(self) -> bool {
        matches!(self, Op::In | Op::Intersects | Op::PMatch)
    }
}

/// The right-hand side of a check.
#[derive(Debug, Clone, PartialEq)]
pub enum Rhs {
    /// `exists` takes none.
    None,
    /// A single value.
    Value(String),
    /// A value list; items naming a Falco list are expanded at compile time.
    List(Vec<String>),
}

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Ast {
    /// All must hold.
    And(Vec<Ast>),
    /// One must hold.
    Or(Vec<Ast>),
    /// Negation.
    Not(Box<Ast>),
    /// A macro reference.
    Macro {
        /// Macro name.
        name: String,
        /// Byte offset in the condition.
        pos: usize,
    },
    /// A field comparison.
    Check {
        /// Field name, without the argument.
        field: String,
        /// The `[arg]`, if any.
        arg: Option<String>,
        /// Operator.
        op: Op,
        /// Right-hand side.
        rhs: Rhs,
        /// Byte offset of the field in the condition.
        pos: usize,
    },
}

/// A syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CondError {
    /// Byte offset in the condition text.
    pub pos: usize,
    /// What is wrong.
    pub msg: String,
}

impl fmt::Display for CondError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at offset {})", self.msg, self.pos)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Comma,
    Sym(&'static str),
    Word(String),
    Str(String),
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, CondError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        match c {
            b'(' => {
                out.push((Tok::LParen, i));
                i += 1;
            }
            b')' => {
                out.push((Tok::RParen, i));
                i += 1;
            }
            b',' => {
                out.push((Tok::Comma, i));
                i += 1;
            }
            b'=' | b'!' | b'<' | b'>' => {
                let two = b.get(i + 1) == Some(&b'=');
                let sym = match (c, two) {
                    (b'=', true) => "==",
                    (b'=', false) => "=",
                    (b'!', true) => "!=",
                    (b'<', true) => "<=",
                    (b'<', false) => "<",
                    (b'>', true) => ">=",
                    (b'>', false) => ">",
                    _ => {
                        return Err(CondError {
                            pos: i,
                            msg: "unexpected '!' (did you mean '!=' or 'not'?)".into(),
                        })
                    }
                };
                out.push((Tok::Sym(sym), i));
                i += if two { 2 } else { 1 };
            }
            b'"' | b'\'' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                let mut closed = false;
                while i < b.len() {
                    let ch = src[i..].chars().next().unwrap_or('\0');
                    if b[i] == quote {
                        closed = true;
                        i += 1;
                        break;
                    }
                    if b[i] == b'\\' && i + 1 < b.len() {
                        let n = b[i + 1];
                        match n {
                            b'"' | b'\'' | b'\\' => s.push(n as char),
                            b'n' => s.push('\n'),
                            b't' => s.push('\t'),
                            b'r' => s.push('\r'),
                            _ => {
                                // Unknown escapes stay as written (regexes need `\d`, `\.`).
                                s.push('\\');
                                i += 1;
                                continue;
                            }
                        }
                        i += 2;
                        continue;
                    }
                    s.push(ch);
                    i += ch.len_utf8();
                }
                if !closed {
                    return Err(CondError {
                        pos: start,
                        msg: "unterminated quoted string".into(),
                    });
                }
                out.push((Tok::Str(s), start));
            }
            _ => {
                while i < b.len() {
                    let ch = b[i];
                    if ch.is_ascii_whitespace() || b"(),=!<>\"'".contains(&ch) {
                        break;
                    }
                    if ch == b'[' {
                        // A field argument: anything up to the closing bracket.
                        match src[i..].find(']') {
                            Some(end) => {
                                i += end + 1;
                                continue;
                            }
                            None => {
                                return Err(CondError {
                                    pos: i,
                                    msg: "'[' without a closing ']'".into(),
                                })
                            }
                        }
                    }
                    i += src[i..].chars().next().map_or(1, char::len_utf8);
                }
                out.push((Tok::Word(src[start..i].to_string()), start));
            }
        }
    }
    Ok(out)
}

struct Parser<'s> {
    toks: Vec<(Tok, usize)>,
    at: usize,
    src: &'s str,
}

/// Parses a condition.
pub fn parse(src: &str) -> Result<Ast, CondError> {
    let toks = lex(src)?;
    let mut p = Parser { toks, at: 0, src };
    if p.toks.is_empty() {
        return Err(CondError {
            pos: 0,
            msg: "empty condition".into(),
        });
    }
    let e = p.or()?;
    if let Some((t, pos)) = p.toks.get(p.at) {
        return Err(CondError {
            pos: *pos,
            msg: format!("unexpected {} after a complete expression", describe(t)),
        });
    }
    Ok(e)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::Comma => "','".into(),
        Tok::Sym(s) => format!("'{s}'"),
        Tok::Word(w) => format!("'{w}'"),
        Tok::Str(s) => format!("string \"{s}\""),
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.0)
    }
    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.src.len(), |t| t.1)
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x == w)
    }
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, CondError> {
        Err(CondError {
            pos: self.pos(),
            msg: msg.into(),
        })
    }

    fn or(&mut self) -> Result<Ast, CondError> {
        let mut items = vec![self.and()?];
        while self.is_word("or") {
            self.at += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Ast::Or(items)
        })
    }

    fn and(&mut self) -> Result<Ast, CondError> {
        let mut items = vec![self.not()?];
        while self.is_word("and") {
            self.at += 1;
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Ast::And(items)
        })
    }

    fn not(&mut self) -> Result<Ast, CondError> {
        if self.is_word("not") {
            self.at += 1;
            return Ok(Ast::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Ast, CondError> {
        let pos = self.pos();
        match self.peek().cloned() {
            Some(Tok::LParen) => {
                self.at += 1;
                let e = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return self.err(format!(
                        "expected ')' to close the '(' at offset {pos}, found {}",
                        self.peek().map_or("the end".into(), describe)
                    ));
                }
                self.at += 1;
                Ok(e)
            }
            Some(Tok::Word(w)) => {
                if matches!(w.as_str(), "and" | "or") {
                    return self.err(format!("expected a field, macro or '(' before '{w}'"));
                }
                self.at += 1;
                let op = match self.peek() {
                    Some(Tok::Sym(s)) => Op::parse(s),
                    Some(Tok::Word(x)) => Op::parse(x),
                    _ => None,
                };
                let Some(op) = op else {
                    if w.contains('.') || w.contains('[') {
                        return self.err(format!("expected an operator after field '{w}'"));
                    }
                    return Ok(Ast::Macro { name: w, pos });
                };
                self.at += 1;
                let (field, arg) = split_field(&w).map_err(|msg| CondError { pos, msg })?;
                let rhs = if op == Op::Exists {
                    Rhs::None
                } else if op.takes_list() {
                    self.list()?
                } else {
                    match self.peek().cloned() {
                        Some(Tok::Word(v)) | Some(Tok::Str(v)) => {
                            self.at += 1;
                            Rhs::Value(v)
                        }
                        other => {
                            return self.err(format!(
                                "expected a value after '{}', found {}",
                                op.as_str(),
                                other.as_ref().map_or("the end".into(), describe)
                            ))
                        }
                    }
                };
                Ok(Ast::Check {
                    field,
                    arg,
                    op,
                    rhs,
                    pos,
                })
            }
            Some(t) => self.err(format!(
                "expected a field, macro or '(', found {}",
                describe(&t)
            )),
            None => self.err("unexpected end of condition"),
        }
    }

    fn list(&mut self) -> Result<Rhs, CondError> {
        match self.peek().cloned() {
            Some(Tok::Word(v)) | Some(Tok::Str(v)) => {
                // `in list_name`: a bare list reference.
                self.at += 1;
                Ok(Rhs::List(vec![v]))
            }
            Some(Tok::LParen) => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    match self.peek().cloned() {
                        Some(Tok::RParen) => {
                            self.at += 1;
                            return Ok(Rhs::List(items));
                        }
                        Some(Tok::Word(v)) | Some(Tok::Str(v)) => {
                            self.at += 1;
                            items.push(v);
                            match self.peek() {
                                Some(Tok::Comma) => self.at += 1,
                                Some(Tok::RParen) => {}
                                other => {
                                    let found = other.map_or("the end".into(), describe);
                                    return self.err(format!(
                                        "expected ',' or ')' in value list, found {found}"
                                    ));
                                }
                            }
                        }
                        other => {
                            let found = other.as_ref().map_or("the end".into(), describe);
                            return self.err(format!("expected a value in list, found {found}"));
                        }
                    }
                }
            }
            other => {
                let found = other.as_ref().map_or("the end".into(), describe);
                self.err(format!(
                    "expected a value list '(...)' or a list name, found {found}"
                ))
            }
        }
    }
}

/// `name[arg]` -> (`name`, `Some(arg)`).
fn split_field(w: &str) -> Result<(String, Option<String>), String> {
    match w.find('[') {
        None => Ok((w.to_string(), None)),
        Some(i) => {
            let Some(inner) = w[i + 1..].strip_suffix(']') else {
                return Err(format!("malformed field argument in '{w}'"));
            };
            Ok((w[..i].to_string(), Some(inner.to_string())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chk(field: &str, op: Op, rhs: Rhs) -> Ast {
        Ast::Check {
            field: field.into(),
            arg: None,
            op,
            rhs,
            pos: 0,
        }
    }

    /// Positions make equality awkward; zero them out.
    fn strip(a: Ast) -> Ast {
        match a {
            Ast::And(v) => Ast::And(v.into_iter().map(strip).collect()),
            Ast::Or(v) => Ast::Or(v.into_iter().map(strip).collect()),
            Ast::Not(b) => Ast::Not(Box::new(strip(*b))),
            Ast::Macro { name, .. } => Ast::Macro { name, pos: 0 },
            Ast::Check {
                field,
                arg,
                op,
                rhs,
                ..
            } => Ast::Check {
                field,
                arg,
                op,
                rhs,
                pos: 0,
            },
        }
    }

    fn p(s: &str) -> Ast {
        strip(parse(s).unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    fn m(n: &str) -> Ast {
        Ast::Macro {
            name: n.into(),
            pos: 0,
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(
            p("a or b and c"),
            Ast::Or(vec![m("a"), Ast::And(vec![m("b"), m("c")])])
        );
        assert_eq!(
            p("(a or b) and c"),
            Ast::And(vec![Ast::Or(vec![m("a"), m("b")]), m("c")])
        );
    }

    #[test]
    fn not_binds_tightest_and_nests() {
        assert_eq!(
            p("not a and b"),
            Ast::And(vec![Ast::Not(Box::new(m("a"))), m("b")])
        );
        assert_eq!(
            p("not not (a)"),
            Ast::Not(Box::new(Ast::Not(Box::new(m("a")))))
        );
        assert_eq!(
            p("((a and (b or (c))))"),
            Ast::And(vec![m("a"), Ast::Or(vec![m("b"), m("c")])])
        );
    }

    #[test]
    fn checks_without_spaces_and_with_quotes() {
        assert_eq!(
            p("ka.verb=create"),
            chk("ka.verb", Op::Eq, Rhs::Value("create".into()))
        );
        assert_eq!(
            p(r#"ka.target.name!="system:coredns""#),
            chk(
                "ka.target.name",
                Op::Ne,
                Rhs::Value("system:coredns".into())
            )
        );
        assert_eq!(
            p("not ka.target.subresource exists"),
            Ast::Not(Box::new(chk(
                "ka.target.subresource",
                Op::Exists,
                Rhs::None
            )))
        );
        assert_eq!(
            p(r#"ka.uri startswith /healthz? and x.y contains 'a \'b\''"#),
            Ast::And(vec![
                chk("ka.uri", Op::StartsWith, Rhs::Value("/healthz?".into())),
                chk("x.y", Op::Contains, Rhs::Value("a 'b'".into()))
            ])
        );
    }

    #[test]
    fn lists_and_field_arguments() {
        assert_eq!(
            p(r#"ka.req.role.rules.verbs intersects ("*", create,/a/b )"#),
            chk(
                "ka.req.role.rules.verbs",
                Op::Intersects,
                Rhs::List(vec!["*".into(), "create".into(), "/a/b".into()])
            )
        );
        assert_eq!(p("a.b in ()"), chk("a.b", Op::In, Rhs::List(vec![])));
        assert_eq!(
            p("a.b in some_list"),
            chk("a.b", Op::In, Rhs::List(vec!["some_list".into()]))
        );
        match p("jevt.value[/annotations/a.b~1c]=x") {
            Ast::Check { field, arg, .. } => {
                assert_eq!(field, "jevt.value");
                assert_eq!(arg.as_deref(), Some("/annotations/a.b~1c"));
            }
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        /// Arbitrary text never panics the lexer or parser (multi-byte characters, stray
        /// quotes, brackets and escapes included).
        #[test]
        fn any_text_parses_or_errors(s in "[ -~\u{e9}\u{4e2d}]{0,60}") {
            let _ = parse(&s);
            let _ = super::super::output::compile(&s);
        }
    }

    #[test]
    fn errors_name_the_problem_and_position() {
        let e = parse("ka.verb = create and").unwrap_err();
        assert_eq!(e.pos, 20);
        assert!(e.msg.contains("end"), "{e}");
        let e = parse("(a and b").unwrap_err();
        assert!(e.msg.contains("expected ')'"), "{e}");
        let e = parse("a b").unwrap_err();
        assert_eq!(e.pos, 2);
        let e = parse("ka.verb in (a b)").unwrap_err();
        assert!(e.msg.contains("expected ',' or ')'"), "{e}");
        assert_eq!(e.pos, 14);
        let e = parse("ka.verb = \"open").unwrap_err();
        assert!(e.msg.contains("unterminated"), "{e}");
        let e = parse("ka.verb").unwrap_err();
        assert!(e.msg.contains("operator"), "{e}");
        assert!(parse("").is_err());
        assert!(parse("and a").is_err());
        assert!(parse("x.y[abc = 1").is_err());
    }
}
