//! Sigma conditions: `sel and not filter`, `1 of sel_*`, `all of them`, parentheses.
//!
//! Precedence, as in Sigma: `not` binds tightest, then `and`, then `or`. `1 of x*` and
//! `all of x*` expand at parse time to an OR / AND over the matching selections, so the
//! evaluator only sees selection indices. `them` means every selection whose name does not
//! start with `_` (Sigma's convention for helper selections).

/// A parsed condition over selection indices.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    /// A selection, by index into the rule's selections.
    Sel(usize),
    /// All must hold.
    And(Vec<Cond>),
    /// One must hold.
    Or(Vec<Cond>),
    /// Negation.
    Not(Box<Cond>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    LParen,
    RParen,
    And,
    Or,
    Not,
    One,
    All,
    Of,
    Them,
    Pipe,
}

fn lex(s: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        match c {
            '(' => {
                chars.next();
                out.push(Token::LParen);
            }
            ')' => {
                chars.next();
                out.push(Token::RParen);
            }
            '|' => {
                chars.next();
                out.push(Token::Pipe);
            }
            c if c.is_alphanumeric() || matches!(c, '_' | '-' | '*' | '.' | '?') => {
                let mut end = i;
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_alphanumeric() || matches!(d, '_' | '-' | '*' | '.' | '?') {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = &s[i..end];
                out.push(match word.to_ascii_lowercase().as_str() {
                    "and" => Token::And,
                    "or" => Token::Or,
                    "not" => Token::Not,
                    "of" => Token::Of,
                    "them" => Token::Them,
                    "all" => Token::All,
                    "1" => Token::One,
                    _ => Token::Ident(word.to_string()),
                });
            }
            other => return Err(format!("unexpected character `{other}` in condition")),
        }
    }
    Ok(out)
}

/// Matches a selection name against a pattern with `*` (any run) and `?` (one char).
fn name_matches(pat: &str, name: &str) -> bool {
    let toks: Vec<super::matcher::Tok> = super::matcher::tokenize(pat);
    super::matcher::glob(&toks, name.as_bytes(), true)
}

struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    names: &'a [String],
    /// Selections the condition references (for the "never used" lint).
    used: Vec<bool>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Cond, String> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Cond::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Cond, String> {
        let mut parts = vec![self.unary()?];
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Cond::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Cond, String> {
        match self.next() {
            Some(Token::Not) => Ok(Cond::Not(Box::new(self.unary()?))),
            Some(Token::LParen) => {
                let c = self.or()?;
                match self.next() {
                    Some(Token::RParen) => Ok(c),
                    _ => Err("missing `)` in condition".into()),
                }
            }
            Some(Token::One) => self.of(false),
            Some(Token::All) => self.of(true),
            Some(Token::Ident(name)) => {
                if name.contains(['*', '?']) {
                    return Err(format!(
                        "selection pattern `{name}` needs `1 of` or `all of` in front"
                    ));
                }
                if name.chars().all(|c| c.is_ascii_digit()) {
                    return Err(format!(
                        "`{name} of` is not supported; use `1 of` or `all of`"
                    ));
                }
                match self.names.iter().position(|n| *n == name) {
                    Some(i) => {
                        self.used[i] = true;
                        Ok(Cond::Sel(i))
                    }
                    None => Err(format!("condition references undefined selection `{name}`")),
                }
            }
            Some(Token::Pipe) => Err(
                "aggregations (`| count() ...`) are not supported; write a Sigma correlation rule"
                    .into(),
            ),
            Some(t) => Err(format!("unexpected {} in condition", describe(&t))),
            None => Err("condition ends unexpectedly".into()),
        }
    }

    fn of(&mut self, all: bool) -> Result<Cond, String> {
        if self.next() != Some(Token::Of) {
            return Err("expected `of` after `1`/`all`".into());
        }
        let idx: Vec<usize> = match self.next() {
            Some(Token::Them) => (0..self.names.len())
                .filter(|&i| !self.names[i].starts_with('_'))
                .collect(),
            Some(Token::Ident(pat)) => {
                let idx: Vec<usize> = (0..self.names.len())
                    .filter(|&i| name_matches(&pat, &self.names[i]))
                    .collect();
                if idx.is_empty() {
                    return Err(format!("`of {pat}` matches no selection"));
                }
                idx
            }
            _ => return Err("expected a selection pattern or `them` after `of`".into()),
        };
        if idx.is_empty() {
            return Err("`of them` but the rule has no selections".into());
        }
        for &i in &idx {
            self.used[i] = true;
        }
        let mut parts: Vec<Cond> = idx.into_iter().map(Cond::Sel).collect();
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else if all {
            Cond::And(parts)
        } else {
            Cond::Or(parts)
        })
    }
}

fn describe(t: &Token) -> String {
    match t {
        Token::Ident(s) => format!("`{s}`"),
        Token::LParen => "`(`".into(),
        Token::RParen => "`)`".into(),
        Token::And => "`and`".into(),
        Token::Or => "`or`".into(),
        Token::Not => "`not`".into(),
        Token::One => "`1`".into(),
        Token::All => "`all`".into(),
        Token::Of => "`of`".into(),
        Token::Them => "`them`".into(),
        Token::Pipe => "`|`".into(),
    }
}

/// Parses a condition over the named selections. Returns the tree and which selections it
/// uses.
pub(crate) fn parse(cond: &str, names: &[String]) -> Result<(Cond, Vec<bool>), String> {
    if cond.contains('|') {
        return Err(
            "aggregations (`| count() ...`) are not supported; write a Sigma correlation rule"
                .into(),
        );
    }
    let toks = lex(cond)?;
    if toks.is_empty() {
        return Err("condition is empty".into());
    }
    let mut p = Parser {
        toks,
        pos: 0,
        names,
        used: vec![false; names.len()],
    };
    let c = p.or()?;
    if let Some(t) = p.peek() {
        return Err(format!("unexpected {} in condition", describe(t)));
    }
    Ok((c, p.used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["sel", "sel_a", "sel_b", "filter", "_helper"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn p(s: &str) -> Result<Cond, String> {
        parse(s, &names()).map(|x| x.0)
    }

    #[test]
    fn precedence() {
        // not > and > or
        assert_eq!(
            p("sel or sel_a and not filter").unwrap(),
            Cond::Or(vec![
                Cond::Sel(0),
                Cond::And(vec![Cond::Sel(1), Cond::Not(Box::new(Cond::Sel(3)))])
            ])
        );
        assert_eq!(
            p("(sel or sel_a) and filter").unwrap(),
            Cond::And(vec![
                Cond::Or(vec![Cond::Sel(0), Cond::Sel(1)]),
                Cond::Sel(3)
            ])
        );
        assert_eq!(
            p("SEL").unwrap_err(),
            "condition references undefined selection `SEL`"
        );
        assert!(p("Sel AND NOT filter").is_err());
        assert!(p("sel AND NOT filter").is_ok());
    }

    #[test]
    fn of_forms() {
        assert_eq!(
            p("1 of sel_*").unwrap(),
            Cond::Or(vec![Cond::Sel(1), Cond::Sel(2)])
        );
        assert_eq!(
            p("all of sel_*").unwrap(),
            Cond::And(vec![Cond::Sel(1), Cond::Sel(2)])
        );
        assert_eq!(p("1 of sel?a").unwrap(), Cond::Sel(1));
        // `them` leaves out `_helper`.
        assert_eq!(
            p("1 of them").unwrap(),
            Cond::Or(vec![Cond::Sel(0), Cond::Sel(1), Cond::Sel(2), Cond::Sel(3)])
        );
        assert!(p("1 of nothing*")
            .unwrap_err()
            .contains("matches no selection"));
        assert!(p("2 of sel_*").is_err());
        assert!(p("sel_*").unwrap_err().contains("needs `1 of`"));
    }

    #[test]
    fn errors() {
        assert!(p("").is_err());
        assert!(p("sel and").is_err());
        assert!(p("(sel").unwrap_err().contains("missing `)`"));
        assert!(p("sel sel_a").is_err());
        assert!(p("sel | count() > 5").unwrap_err().contains("correlation"));
        let (_, used) = parse("sel and not filter", &names()).unwrap();
        assert_eq!(used, vec![true, false, false, true, false]);
    }
}
