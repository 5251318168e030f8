//! Compiling a parsed condition (macros and lists resolved, fields checked) into a tree that
//! evaluates against one event.

use std::collections::{HashMap, HashSet};

use super::condition::{Ast, Op, Rhs};
use super::fields::{self, EventCtx, FieldRef, FieldType, View};

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Node {
    /// All must hold.
    And(Vec<Node>),
    /// One must hold.
    Or(Vec<Node>),
    /// Negation.
    Not(Box<Node>),
    /// A field comparison.
    Check(Box<Check>),
}

/// One compiled comparison.
#[derive(Debug, Clone)]
pub struct Check {
    /// The field.
    pub field: FieldRef,
    /// The operator.
    pub op: Op,
    /// The prepared right-hand side.
    pub rhs: Matcher,
}

/// A right-hand side prepared for fast comparison.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// `exists`.
    None,
    /// A text value.
    Text(String),
    /// Lowercased text (`icontains`).
    Lower(String),
    /// Bytes (`bcontains`, `bstartswith`).
    Bytes(Vec<u8>),
    /// A number (numeric fields).
    U64(u64),
    /// A set (`in`, `intersects`).
    Set(ValueSet),
    /// Paths (`pmatch`), without trailing slashes.
    Paths(Vec<String>),
    /// A regex, anchored at both ends.
    Regex(regex::Regex),
    /// A glob pattern.
    Glob(glob::Pattern),
}

/// The values of an `in`/`intersects` list. Small sets (most of them) are scanned, which
/// beats hashing for a handful of short strings; large ones are hashed.
#[derive(Debug, Clone)]
pub struct ValueSet {
    items: Vec<String>,
    hashed: Option<HashSet<String>>,
}

impl ValueSet {
    const SCAN_MAX: usize = 12;

    /// Builds the set (duplicates removed, first occurrence kept).
    pub fn new(items: Vec<String>) -> ValueSet {
        let mut seen = HashSet::new();
        let items: Vec<String> = items
            .into_iter()
            .filter(|i| seen.insert(i.clone()))
            .collect();
        let hashed = (items.len() > Self::SCAN_MAX).then_some(seen);
        ValueSet { items, hashed }
    }

    /// Whether `v` is in the set.
    pub fn contains(&self, v: &str) -> bool {
        match &self.hashed {
            Some(h) => h.contains(v),
            None => self.items.iter().any(|i| i == v),
        }
    }

    /// The values, in first-seen order.
    pub fn items(&self) -> &[String] {
        &self.items
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// What a condition may refer to.
pub struct Scope<'a> {
    /// Parsed macros by name.
    pub macros: &'a HashMap<String, Result<Ast, String>>,
    /// Lists by name, already expanded.
    pub lists: &'a HashMap<String, Vec<String>>,
}

/// Why a condition does not compile.
#[derive(Debug, Clone)]
pub struct CompileError {
    /// What is wrong.
    pub msg: String,
    /// Offset in the rule's own condition, when the problem is there (not inside a macro).
    pub pos: Option<usize>,
    /// The problem is an unknown field (rules with `skip-if-unknown-filter` are skipped).
    pub unknown_field: bool,
}

impl Scope<'_> {
    /// Compiles `ast`; `notes` collects non-fatal remarks.
    pub fn compile(&self, ast: &Ast, notes: &mut Vec<String>) -> Result<Node, CompileError> {
        let mut stack = Vec::new();
        self.node(ast, &mut stack, notes)
    }

    fn node(
        &self,
        ast: &Ast,
        stack: &mut Vec<String>,
        notes: &mut Vec<String>,
    ) -> Result<Node, CompileError> {
        // Positions are only meaningful at the top level: inside a macro they refer to the
        // macro's own text, so they are reported with the macro's name instead.
        let at = |pos: usize| if stack.is_empty() { Some(pos) } else { None };
        let within = |stack: &Vec<String>| match stack.last() {
            Some(m) => format!(" (in macro '{m}')"),
            None => String::new(),
        };
        Ok(match ast {
            Ast::And(v) => Node::And(
                v.iter()
                    .map(|a| self.node(a, stack, notes))
                    .collect::<Result<_, _>>()?,
            ),
            Ast::Or(v) => Node::Or(
                v.iter()
                    .map(|a| self.node(a, stack, notes))
                    .collect::<Result<_, _>>()?,
            ),
            Ast::Not(a) => Node::Not(Box::new(self.node(a, stack, notes)?)),
            Ast::Macro { name, pos } => {
                if stack.iter().any(|m| m == name) {
                    return Err(CompileError {
                        msg: format!(
                            "macro '{name}' refers to itself: {} -> {name}",
                            stack.join(" -> ")
                        ),
                        pos: at(*pos),
                        unknown_field: false,
                    });
                }
                let body = match self.macros.get(name) {
                    Some(Ok(body)) => body,
                    Some(Err(e)) => {
                        return Err(CompileError {
                            msg: format!("macro '{name}' does not parse: {e}"),
                            pos: at(*pos),
                            unknown_field: false,
                        })
                    }
                    None => {
                        return Err(CompileError {
                            msg: format!("undefined macro '{name}'{}", within(stack)),
                            pos: at(*pos),
                            unknown_field: false,
                        })
                    }
                };
                stack.push(name.clone());
                let n = self.node(body, stack, notes);
                stack.pop();
                n?
            }
            Ast::Check {
                field,
                arg,
                op,
                rhs,
                pos,
            } => {
                let fref = fields::resolve(field, arg.as_deref()).map_err(|msg| CompileError {
                    unknown_field: msg.starts_with("unknown field"),
                    msg: format!("{msg}{}", within(stack)),
                    pos: at(*pos),
                })?;
                let rhs = self
                    .matcher(&fref, *op, rhs, notes)
                    .map_err(|msg| CompileError {
                        msg: format!("{msg}{}", within(stack)),
                        pos: at(*pos),
                        unknown_field: false,
                    })?;
                Node::Check(Box::new(Check {
                    field: fref,
                    op: *op,
                    rhs,
                }))
            }
        })
    }

    /// Expands list names in a value list (recursively; the lists are pre-expanded).
    fn expand(&self, items: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for i in items {
            match self.lists.get(i) {
                Some(l) => out.extend(l.iter().cloned()),
                None => out.push(i.clone()),
            }
        }
        out
    }

    fn matcher(
        &self,
        f: &FieldRef,
        op: Op,
        rhs: &Rhs,
        notes: &mut Vec<String>,
    ) -> Result<Matcher, String> {
        let name = f.def.name;
        if f.def.list && !matches!(op, Op::In | Op::Intersects | Op::Exists | Op::PMatch) {
            // Falco (libs >= 0.14) rejects this at load time; older versions failed when
            // the check ran. A value matches here when any element matches.
            notes.push(format!(
                "operator '{}' on list field '{name}': Falco accepts only in, intersects and exists on list fields; audithawk matches when any element matches",
                op.as_str()
            ));
        }
        let single = |what: &str| -> Result<String, String> {
            match rhs {
                Rhs::Value(v) => Ok(v.clone()),
                _ => Err(format!("operator '{what}' needs a single value")),
            }
        };
        Ok(match op {
            Op::Exists => Matcher::None,
            Op::In | Op::Intersects | Op::PMatch => {
                let Rhs::List(items) = rhs else {
                    return Err(format!("operator '{}' needs a value list", op.as_str()));
                };
                let items = self.expand(items);
                if f.def.ty == FieldType::U64 {
                    for i in &items {
                        i.parse::<u64>().map_err(|_| {
                            format!("'{i}' is not a number, and field '{name}' is numeric")
                        })?;
                    }
                }
                if op == Op::PMatch {
                    Matcher::Paths(
                        items
                            .into_iter()
                            .map(|p| {
                                let t = p.trim_end_matches('/');
                                if t.is_empty() {
                                    "/".to_string()
                                } else {
                                    t.to_string()
                                }
                            })
                            .collect(),
                    )
                } else {
                    Matcher::Set(ValueSet::new(items))
                }
            }
            Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge if f.def.ty == FieldType::U64 => {
                let v = single(op.as_str())?;
                Matcher::U64(
                    v.trim().parse::<u64>().map_err(|_| {
                        format!("'{v}' is not a number, and field '{name}' is numeric")
                    })?,
                )
            }
            Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                Matcher::Text(single(op.as_str())?)
            }
            Op::Contains | Op::StartsWith | Op::EndsWith => Matcher::Text(single(op.as_str())?),
            Op::IContains => Matcher::Lower(single("icontains")?.to_ascii_lowercase()),
            Op::BContains | Op::BStartsWith => {
                let v = single(op.as_str())?;
                Matcher::Bytes(hex(&v).ok_or_else(|| {
                    format!(
                        "'{v}' is not an even-length hex string, as '{}' needs",
                        op.as_str()
                    )
                })?)
            }
            Op::Glob | Op::IGlob => {
                let v = single("glob")?;
                let v = if op == Op::IGlob {
                    v.to_ascii_lowercase()
                } else {
                    v
                };
                Matcher::Glob(
                    glob::Pattern::new(&v).map_err(|e| format!("bad glob pattern '{v}': {e}"))?,
                )
            }
            Op::Regex => {
                let v = single("regex")?;
                Matcher::Regex(
                    regex::Regex::new(&format!("^(?:{v})$"))
                        .map_err(|e| format!("bad regex '{v}': {e}"))?,
                )
            }
        })
    }
}

fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Node {
    /// Evaluates against an event.
    pub fn eval(&self, root: &View<'_>, ctx: &EventCtx<'_>) -> bool {
        match self {
            Node::And(v) => v.iter().all(|n| n.eval(root, ctx)),
            Node::Or(v) => v.iter().any(|n| n.eval(root, ctx)),
            Node::Not(n) => !n.eval(root, ctx),
            Node::Check(c) => c.eval(root, ctx),
        }
    }

    /// Calls `f` for every check in the tree.
    pub fn visit_checks(&self, f: &mut dyn FnMut(&Check)) {
        match self {
            Node::And(v) | Node::Or(v) => v.iter().for_each(|n| n.visit_checks(f)),
            Node::Not(n) => n.visit_checks(f),
            Node::Check(c) => f(c),
        }
    }
}

impl Check {
    /// Evaluates one comparison; a field that is not available makes it false.
    pub fn eval(&self, root: &View<'_>, ctx: &EventCtx<'_>) -> bool {
        if self.op == Op::Exists && self.field.def.id == fields::FieldId::RawTime {
            // Every event has a time (`k8s_audit_always_true`, in nearly every rule).
            return ctx.time_ns.is_some();
        }
        let Some(vals) = fields::extract(&self.field, root, ctx) else {
            return false;
        };
        match (&self.rhs, self.op) {
            (_, Op::Exists) => true,
            (Matcher::Set(set), Op::In) => {
                // For a list field every value must be in the set; for a single value
                // this is plain membership.
                vals.iter().all(|v| set.contains(v))
            }
            (Matcher::Set(set), _) => vals.iter().any(|v| set.contains(v)),
            (Matcher::Paths(paths), _) => vals.iter().any(|v| pmatch(paths, v)),
            (rhs, op) => vals.iter().any(|v| cmp(op, rhs, v)),
        }
    }
}

fn pmatch(paths: &[String], v: &str) -> bool {
    paths.iter().any(|p| {
        p == "/"
            || v == p
            || (v.len() > p.len() && v.starts_with(p.as_str()) && v.as_bytes()[p.len()] == b'/')
    })
}

fn cmp(op: Op, rhs: &Matcher, v: &str) -> bool {
    match (op, rhs) {
        (_, Matcher::U64(n)) => {
            let Ok(x) = v.trim().parse::<u64>() else {
                return false;
            };
            match op {
                Op::Eq => x == *n,
                Op::Ne => x != *n,
                Op::Lt => x < *n,
                Op::Le => x <= *n,
                Op::Gt => x > *n,
                Op::Ge => x >= *n,
                _ => false,
            }
        }
        (Op::Eq, Matcher::Text(t)) => v == t,
        (Op::Ne, Matcher::Text(t)) => v != t,
        (Op::Lt | Op::Le | Op::Gt | Op::Ge, Matcher::Text(t)) => {
            // String fields that hold numbers (ka.response.code): compare as numbers;
            // anything else does not compare.
            let (Ok(a), Ok(b)) = (v.trim().parse::<f64>(), t.trim().parse::<f64>()) else {
                return false;
            };
            match op {
                Op::Lt => a < b,
                Op::Le => a <= b,
                Op::Gt => a > b,
                _ => a >= b,
            }
        }
        (Op::Contains, Matcher::Text(t)) => v.contains(t.as_str()),
        (Op::StartsWith, Matcher::Text(t)) => v.starts_with(t.as_str()),
        (Op::EndsWith, Matcher::Text(t)) => v.ends_with(t.as_str()),
        (Op::IContains, Matcher::Lower(t)) => v.to_ascii_lowercase().contains(t.as_str()),
        (Op::BContains, Matcher::Bytes(b)) => memchr::memmem::find(v.as_bytes(), b).is_some(),
        (Op::BStartsWith, Matcher::Bytes(b)) => v.as_bytes().starts_with(b),
        (Op::Glob, Matcher::Glob(g)) => g.matches(v),
        (Op::IGlob, Matcher::Glob(g)) => g.matches(&v.to_ascii_lowercase()),
        (Op::Regex, Matcher::Regex(r)) => r.is_match(v),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::condition::parse;
    use super::*;
    use serde_json::{json, Value};

    fn scope_eval(cond: &str, ev: &Value) -> bool {
        let macros = HashMap::new();
        let mut lists = HashMap::new();
        lists.insert(
            "imgs".to_string(),
            vec!["nginx".to_string(), "busybox".to_string()],
        );
        let s = Scope {
            macros: &macros,
            lists: &lists,
        };
        let mut notes = Vec::new();
        let n = s
            .compile(&parse(cond).unwrap(), &mut notes)
            .unwrap_or_else(|e| panic!("{cond}: {}", e.msg));
        n.eval(&View::Json(ev), &EventCtx::default())
    }

    fn ev() -> Value {
        json!({"auditID": "x", "verb": "create", "requestURI": "/api/v1/namespaces/foo/pods",
            "user": {"username": "Alice", "groups": ["dev", "ops"]},
            "objectRef": {"resource": "pods", "namespace": "foo"},
            "responseStatus": {"code": 201},
            "requestObject": {"spec": {"containers": [
                {"image": "nginx:1", "securityContext": {"privileged": false}},
                {"image": "busybox", "securityContext": {"privileged": true}}],
                "volumes": [{"hostPath": {"path": "/var/lib/kubelet/pki"}}]}}})
    }

    #[test]
    fn operators() {
        let e = ev();
        for (c, want) in [
            ("ka.verb = create", true),
            ("ka.verb == create", true),
            ("ka.verb != create", false),
            ("ka.user.name = alice", false),
            ("ka.user.name icontains ALI", true),
            ("ka.user.name contains lic", true),
            ("ka.uri startswith /api/", true),
            ("ka.uri endswith /pods", true),
            ("ka.uri glob '/api/*/pods'", true),
            ("ka.uri glob '/apis/*'", false),
            ("ka.user.name iglob 'al*'", true),
            ("ka.uri regex '/api/v[0-9]+/.*'", true),
            ("ka.uri regex 'v1'", false),
            ("ka.response.code >= 200 and ka.response.code < 300", true),
            ("ka.response.code > 201", false),
            ("ka.response.code startswith 2", true),
            ("ka.verb in (get, create)", true),
            ("ka.verb in (get)", false),
            ("ka.verb intersects (create)", true),
            ("ka.user.name bcontains 6c69", true),
            ("ka.user.name bstartswith 416c", true),
        ] {
            assert_eq!(scope_eval(c, &e), want, "{c}");
        }
    }

    #[test]
    fn list_fields_in_and_intersects() {
        let e = ev();
        assert!(scope_eval(
            "ka.req.pod.containers.privileged intersects (true)",
            &e
        ));
        assert!(!scope_eval(
            "ka.req.pod.containers.privileged in (true)",
            &e
        ));
        assert!(scope_eval(
            "ka.req.pod.containers.image.repository in (imgs)",
            &e
        ));
        assert!(!scope_eval(
            "ka.req.pod.containers.image.repository in (nginx)",
            &e
        ));
        assert!(scope_eval(
            "ka.req.pod.containers.image.repository intersects (nginx, x)",
            &e
        ));
        assert!(scope_eval("ka.user.groups intersects (ops)", &e));
        assert!(scope_eval(
            "ka.req.pod.volumes.hostpath pmatch (/var/lib/kubelet)",
            &e
        ));
        assert!(!scope_eval(
            "ka.req.pod.volumes.hostpath pmatch (/var/lib/kube)",
            &e
        ));
        assert!(scope_eval("ka.req.pod.volumes.hostpath pmatch (/)", &e));
    }

    #[test]
    fn missing_values_make_every_comparison_false() {
        let e = ev();
        for c in [
            "ka.target.name = x",
            "ka.target.name != x",
            "ka.target.name in (x)",
            "ka.target.name contains x",
            "ka.target.name exists",
            "ka.req.pod.initContainers.privileged intersects (true)",
        ] {
            assert!(!scope_eval(c, &e), "{c}");
        }
        assert!(scope_eval("not ka.target.name = x", &e));
        assert!(scope_eval("not ka.target.subresource exists", &e));
        assert!(scope_eval("ka.target.namespace exists", &e));
    }

    #[test]
    fn numeric_field_needs_numbers() {
        let macros = HashMap::new();
        let lists = HashMap::new();
        let s = Scope {
            macros: &macros,
            lists: &lists,
        };
        let err = s
            .compile(&parse("jevt.rawtime = abc").unwrap(), &mut Vec::new())
            .unwrap_err();
        assert!(err.msg.contains("not a number"), "{}", err.msg);
        let n = s
            .compile(&parse("jevt.rawtime > 5").unwrap(), &mut Vec::new())
            .unwrap();
        let ctx = EventCtx {
            cluster: None,
            time_ns: Some(10),
        };
        assert!(n.eval(&View::Json(&ev()), &ctx));
    }

    #[test]
    fn macros_resolve_and_cycles_are_errors() {
        let mut macros = HashMap::new();
        macros.insert("a".to_string(), Ok(parse("b and ka.verb=create").unwrap()));
        macros.insert("b".to_string(), Ok(parse("ka.user.name exists").unwrap()));
        macros.insert("loop1".to_string(), Ok(parse("loop2").unwrap()));
        macros.insert("loop2".to_string(), Ok(parse("loop1").unwrap()));
        let lists = HashMap::new();
        let s = Scope {
            macros: &macros,
            lists: &lists,
        };
        let n = s
            .compile(&parse("not not a").unwrap(), &mut Vec::new())
            .unwrap();
        assert!(n.eval(&View::Json(&ev()), &EventCtx::default()));
        let e = s
            .compile(&parse("loop1").unwrap(), &mut Vec::new())
            .unwrap_err();
        assert!(e.msg.contains("refers to itself"), "{}", e.msg);
        let e = s
            .compile(&parse("ka.verb=x and nope").unwrap(), &mut Vec::new())
            .unwrap_err();
        assert!(e.msg.contains("undefined macro 'nope'"), "{}", e.msg);
        assert_eq!(e.pos, Some(14));
    }
}
