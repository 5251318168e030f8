//! Converting Falco rules to Sigma (`audithawk rules import-falco FILE --out DIR`).
//!
//! A rule converts when its condition (macros, lists and exceptions already expanded) is
//! and/or/not over checks that Sigma can state with the same meaning on an audit-event
//! field path. Everything else is listed with the reason, and can still run unchanged
//! with `--rules-falco FILE`. What converts and what does not is documented in
//! docs/falco.md ("Importing as Sigma").
//!
//! Two semantic points make the translation exact where it is made:
//! - A Falco comparison on a missing field is false, and so is a Sigma selection; `not`
//!   agrees too. Only `!=` differs (Falco: false when missing; Sigma's `not` of an equality
//!   would be true), so `f != v` becomes `f|exists and not f: v`.
//! - Sigma matches list values when any element matches: that is Falco's `intersects`, and
//!   its scalar operators on list fields. Falco's `in` on a list field (every element in
//!   the set) has no Sigma form.
//!
//! One difference remains and is documented: Sigma string matching is case-insensitive,
//! Falco's `=`, `contains`, `startswith`, `endswith` and `glob` are case-sensitive.

use serde_yaml_ng::{Mapping, Value as Yv};

use super::condition::Op;
use super::eval::{Check, Matcher, Node};
use super::fields::{FieldId, FieldType};
use super::{FalcoRule, FalcoRuleSet};

/// Converted rules as (file name, Sigma YAML), and the rules that were not converted as
/// (rule name, why).
pub type SigmaConversion = (Vec<(String, String)>, Vec<(String, String)>);

/// Converts what Sigma can express; lists the rest with the reason.
pub fn to_sigma(set: &FalcoRuleSet) -> SigmaConversion {
    let mut done = Vec::new();
    let mut skipped = Vec::new();
    let mut names = std::collections::HashSet::new();
    for r in set.rules() {
        match convert(r) {
            Ok(yaml) => {
                let base = slug(r.name());
                let mut file = format!("{base}.yml");
                let mut n = 2;
                while !names.insert(file.clone()) {
                    file = format!("{base}_{n}.yml");
                    n += 1;
                }
                done.push((file, yaml));
            }
            Err(why) => skipped.push((r.name().to_string(), why)),
        }
    }
    (done, skipped)
}

/// A Sigma condition over named selections.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Sel(String),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Const(bool),
}

struct Builder {
    selections: Vec<(String, Mapping)>,
}

impl Builder {
    fn sel(&mut self, key: String, value: Yv) -> Expr {
        let name = format!("sel{}", self.selections.len() + 1);
        let mut m = Mapping::new();
        m.insert(Yv::String(key), value);
        self.selections.push((name.clone(), m));
        Expr::Sel(name)
    }

    fn node(&mut self, n: &Node) -> Result<Expr, String> {
        Ok(match n {
            Node::And(v) => Expr::And(v.iter().map(|x| self.node(x)).collect::<Result<_, _>>()?),
            Node::Or(v) => Expr::Or(v.iter().map(|x| self.node(x)).collect::<Result<_, _>>()?),
            Node::Not(x) => Expr::Not(Box::new(self.node(x)?)),
            Node::Check(c) => self.check(c)?,
        })
    }

    fn check(&mut self, c: &Check) -> Result<Expr, String> {
        let def = c.field.def;
        let shown = match &c.field.arg {
            Some(a) => format!("{}[{a}]", def.name),
            None => def.name.to_string(),
        };
        let no = |why: &str| Err(format!("{shown} {} ...: {why}", c.op.as_str()));
        // Fields with no plain path of their own.
        match def.id {
            FieldId::RawTime => {
                // Every event has a time: `exists` is true; comparisons with a timestamp
                // (`jevt.rawtime=0`, the rules' "never true") are false for real events.
                return match (c.op, &c.rhs) {
                    (Op::Exists, _) => Ok(Expr::Const(true)),
                    (Op::Eq, Matcher::U64(0)) => Ok(Expr::Const(false)),
                    _ => no("comparisons on the event time have no Sigma form"),
                };
            }
            FieldId::AnyPrivileged => {
                return match (c.op, &c.rhs) {
                    (Op::Eq, Matcher::Text(t)) if t == "true" => Ok(self.sel(
                        "requestObject.spec.containers.securityContext.privileged".into(),
                        Yv::Bool(true),
                    )),
                    _ => no("only '= true' of this derived flag has a Sigma form"),
                };
            }
            FieldId::VolumeHostPathMatch => {
                let arg = c.field.arg.as_deref().unwrap_or("");
                return match (c.op, &c.rhs) {
                    (Op::Eq, Matcher::Text(t)) if t == "true" => {
                        let path = "requestObject.spec.volumes.hostPath.path";
                        Ok(match arg.strip_suffix('*') {
                            Some(pre) => self.sel(format!("{path}|startswith"), s(pre)),
                            None => self.sel(path.into(), s(arg)),
                        })
                    }
                    _ => no("only '= true' of this derived flag has a Sigma form"),
                };
            }
            _ => {}
        }
        if c.field.index.is_some() {
            return no("an element index has no Sigma form (Sigma looks at every element)");
        }
        let repository = matches!(
            def.id,
            FieldId::Container(_, super::fields::CAttr::Repository)
        );
        let path = if repository {
            // repository == r exactly when the image is r, r:<tag> or r@<digest>.
            match def.name {
                "ka.req.pod.containers.image.repository" => {
                    "requestObject.spec.containers.image".to_string()
                }
                "ka.req.pod.initContainers.image.repository" => {
                    "requestObject.spec.initContainers.image".to_string()
                }
                "ka.req.pod.ephemeralContainers.image.repository" => {
                    "requestObject.spec.ephemeralContainers.image".to_string()
                }
                _ => return no("no Sigma field"),
            }
        } else if def.id == FieldId::JsonValue {
            let ptr = c.field.arg.as_deref().unwrap_or("");
            let segs: Vec<String> = ptr
                .trim_start_matches('/')
                .split('/')
                .map(|k| k.replace("~1", "/").replace("~0", "~"))
                .collect();
            if segs
                .iter()
                .any(|k| k.is_empty() || k.chars().all(|c| c.is_ascii_digit()))
            {
                return no("a JSON pointer with an array index or empty key has no Sigma form");
            }
            segs.join(".")
        } else if def.path.is_empty() || def.ty == FieldType::U64 {
            return no("this field has no Sigma equivalent");
        } else {
            def.path.to_string()
        };
        let typed = |v: &str| typed_value(&path, v);
        if repository {
            let values: Vec<String> = match (c.op, &c.rhs) {
                (Op::Eq, Matcher::Text(t)) => vec![t.clone()],
                (Op::Intersects, Matcher::Set(set)) => sorted(set),
                (Op::In, _) => return no("'in' on a list field needs every element in the set; Sigma matches when any element does"),
                _ => return no("only '=' and 'intersects' on image repositories have a Sigma form"),
            };
            if values.iter().any(|v| v.contains(':') || v.contains('@')) {
                return no("a repository value with ':' or '@' has no exact image pattern");
            }
            if values.is_empty() {
                return Ok(Expr::Const(false));
            }
            let pats: Vec<Yv> = values
                .iter()
                .flat_map(|v| {
                    let e = escape(v);
                    [e.clone(), format!("{e}:*"), format!("{e}@*")]
                })
                .map(Yv::String)
                .collect();
            return Ok(self.sel(path, Yv::Sequence(pats)));
        }
        Ok(match (c.op, &c.rhs) {
            (Op::Exists, _) => self.sel(format!("{path}|exists"), Yv::Bool(true)),
            (Op::Eq, Matcher::Text(t)) => self.sel(path.clone(), typed(t)),
            (Op::Ne, Matcher::Text(t)) => {
                let has = self.sel(format!("{path}|exists"), Yv::Bool(true));
                let eq = self.sel(path.clone(), typed(t));
                Expr::And(vec![has, Expr::Not(Box::new(eq))])
            }
            (Op::In, Matcher::Set(set)) | (Op::Intersects, Matcher::Set(set)) => {
                if c.op == Op::In && def.list {
                    return no("'in' on a list field needs every element in the set; Sigma matches when any element does");
                }
                if set.is_empty() {
                    return Ok(Expr::Const(false));
                }
                let mut vals: Vec<Yv> = sorted(set).iter().map(|v| typed(v)).collect();
                let value = if vals.len() == 1 {
                    vals.remove(0)
                } else {
                    Yv::Sequence(vals)
                };
                self.sel(path, value)
            }
            (Op::PMatch, Matcher::Paths(paths)) => {
                let eq = self.sel(
                    path.clone(),
                    Yv::Sequence(paths.iter().map(|p| s(p)).collect()),
                );
                let under: Vec<Yv> = paths
                    .iter()
                    .map(|p| {
                        s(&if p == "/" {
                            "/".to_string()
                        } else {
                            format!("{p}/")
                        })
                    })
                    .collect();
                let sw = self.sel(format!("{path}|startswith"), Yv::Sequence(under));
                Expr::Or(vec![eq, sw])
            }
            (Op::Contains | Op::IContains, Matcher::Text(t) | Matcher::Lower(t)) => {
                self.sel(format!("{path}|contains"), s(t))
            }
            (Op::StartsWith, Matcher::Text(t))
                if path == "responseStatus.code"
                    && (1..=3).contains(&t.len())
                    && t.bytes().all(|b| b.is_ascii_digit()) =>
            {
                // The code is a number in the event: `startswith 2` (the rules'
                // response_successful) is the range [200, 300) of three-digit HTTP codes.
                let scale = 10i64.pow(3 - t.len() as u32);
                let lo = t.parse::<i64>().unwrap_or(0) * scale;
                let ge = self.sel(format!("{path}|gte"), Yv::Number(lo.into()));
                let lt = self.sel(format!("{path}|lt"), Yv::Number((lo + scale).into()));
                Expr::And(vec![ge, lt])
            }
            (Op::StartsWith, Matcher::Text(t)) => self.sel(format!("{path}|startswith"), s(t)),
            (Op::EndsWith, Matcher::Text(t)) => self.sel(format!("{path}|endswith"), s(t)),
            (Op::Glob | Op::IGlob, Matcher::Glob(g)) => {
                let p = g.as_str();
                if p.contains('[') || p.contains('\\') {
                    return no("glob character classes and escapes have no Sigma form");
                }
                // Sigma plain values use the same `*` and `?` wildcards.
                self.sel(path, Yv::String(p.to_string()))
            }
            (Op::Regex, Matcher::Regex(r)) => {
                self.sel(format!("{path}|re"), Yv::String(r.as_str().to_string()))
            }
            (Op::Lt | Op::Le | Op::Gt | Op::Ge, Matcher::Text(t)) => {
                let Ok(n) = t.trim().parse::<i64>() else {
                    return no("a non-numeric bound has no Sigma form");
                };
                let m = match c.op {
                    Op::Lt => "lt",
                    Op::Le => "lte",
                    Op::Gt => "gt",
                    _ => "gte",
                };
                self.sel(format!("{path}|{m}"), Yv::Number(n.into()))
            }
            _ => return no("this operator has no Sigma form"),
        })
    }
}

fn sorted(set: &super::eval::ValueSet) -> Vec<String> {
    let mut v: Vec<String> = set.items().to_vec();
    v.sort();
    v
}

/// A literal string for a Sigma value: `*`, `?` and `\` are wildcards/escapes there.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn s(v: &str) -> Yv {
    Yv::String(escape(v))
}

/// Falco compares the text of booleans and numbers (`true`, `201`); Sigma compares typed
/// values, so fields whose JSON is a boolean or a number get typed values.
fn typed_value(path: &str, v: &str) -> Yv {
    let last = path.rsplit('.').next().unwrap_or(path);
    let boolean = matches!(
        last,
        "hostNetwork"
            | "hostIPC"
            | "hostPID"
            | "privileged"
            | "allowPrivilegeEscalation"
            | "readOnlyRootFilesystem"
    );
    let number = matches!(
        last,
        "code" | "runAsUser" | "runAsGroup" | "fsGroup" | "supplementalGroups"
    );
    if boolean && (v == "true" || v == "false") {
        return Yv::Bool(v == "true");
    }
    if number {
        if let Ok(n) = v.parse::<i64>() {
            return Yv::Number(n.into());
        }
    }
    s(v)
}

/// Folds constants; `None` inside means "unchanged".
fn simplify(e: Expr) -> Expr {
    match e {
        Expr::And(v) => {
            let mut out = Vec::new();
            for x in v.into_iter().map(simplify) {
                match x {
                    Expr::Const(true) => {}
                    Expr::Const(false) => return Expr::Const(false),
                    Expr::And(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            match out.len() {
                0 => Expr::Const(true),
                1 => out.remove(0),
                _ => Expr::And(out),
            }
        }
        Expr::Or(v) => {
            let mut out = Vec::new();
            for x in v.into_iter().map(simplify) {
                match x {
                    Expr::Const(false) => {}
                    Expr::Const(true) => return Expr::Const(true),
                    Expr::Or(inner) => out.extend(inner),
                    other => out.push(other),
                }
            }
            match out.len() {
                0 => Expr::Const(false),
                1 => out.remove(0),
                _ => Expr::Or(out),
            }
        }
        Expr::Not(x) => match simplify(*x) {
            Expr::Const(b) => Expr::Const(!b),
            Expr::Not(y) => *y,
            other => Expr::Not(Box::new(other)),
        },
        other => other,
    }
}

fn render(e: &Expr) -> String {
    match e {
        Expr::Sel(n) => n.clone(),
        Expr::Const(b) => b.to_string(),
        Expr::Not(x) => format!("not {}", render_operand(x)),
        Expr::And(v) => v
            .iter()
            .map(render_operand)
            .collect::<Vec<_>>()
            .join(" and "),
        Expr::Or(v) => v
            .iter()
            .map(render_operand)
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

fn render_operand(e: &Expr) -> String {
    match e {
        Expr::And(_) | Expr::Or(_) => format!("({})", render(e)),
        _ => render(e),
    }
}

/// Selections the simplified condition still uses.
fn used(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Sel(n) => out.push(n.clone()),
        Expr::And(v) | Expr::Or(v) => v.iter().for_each(|x| used(x, out)),
        Expr::Not(x) => used(x, out),
        Expr::Const(_) => {}
    }
}

fn sigma_tag(t: &str) -> String {
    let lower = t.to_ascii_lowercase();
    let b = lower.as_bytes();
    if b.len() >= 5 && b[0] == b't' && b[1..5].iter().all(u8::is_ascii_digit) {
        return format!("attack.{lower}");
    }
    if let Some(tactic) = lower.strip_prefix("mitre_") {
        return format!("attack.{}", tactic.replace('_', "-"));
    }
    format!(
        "falco.{}",
        lower.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
            "_"
        )
    )
}

fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let t = out.trim_matches('_');
    if t.is_empty() {
        "rule".into()
    } else {
        format!("falco_{t}")
    }
}

fn convert(r: &FalcoRule) -> Result<String, String> {
    let mut b = Builder {
        selections: Vec::new(),
    };
    let expr = simplify(b.node(r.node())?);
    match expr {
        Expr::Const(true) => return Err("the condition matches every event".into()),
        Expr::Const(false) => {
            return Err(
                "the condition never matches (as Falco's rules intend for disabled-by-macro rules)"
                    .into(),
            )
        }
        _ => {}
    }
    let mut names = Vec::new();
    used(&expr, &mut names);
    let mut detection = Mapping::new();
    for (n, m) in b.selections {
        if names.contains(&n) {
            detection.insert(Yv::String(n), Yv::Mapping(m));
        }
    }
    detection.insert(Yv::String("condition".into()), Yv::String(render(&expr)));
    let mut doc = Mapping::new();
    let mut put = |k: &str, v: Yv| {
        doc.insert(Yv::String(k.into()), v);
    };
    put("title", Yv::String(r.name().to_string()));
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, r.meta.id.as_bytes());
    put("id", Yv::String(id.to_string()));
    put("status", Yv::String("experimental".into()));
    let mut desc = r.meta.description.clone();
    desc.push_str(&format!(
        "\n\nConverted from the Falco rule '{}' ({}, priority {}). Falco output: {}",
        r.name(),
        r.meta.source,
        r.priority,
        r.output
    ));
    put("description", Yv::String(desc));
    put("author", Yv::String("audithawk rules import-falco".into()));
    let mut tags: Vec<String> = r.meta.tags.iter().map(|t| sigma_tag(t)).collect();
    tags.dedup();
    put(
        "tags",
        Yv::Sequence(tags.into_iter().map(Yv::String).collect()),
    );
    let mut ls = Mapping::new();
    ls.insert(
        Yv::String("product".into()),
        Yv::String("kubernetes".into()),
    );
    ls.insert(Yv::String("service".into()), Yv::String("audit".into()));
    put("logsource", Yv::Mapping(ls));
    put("detection", Yv::Mapping(detection));
    put("level", Yv::String(r.meta.level.as_str().into()));
    if !r.enabled {
        put(
            "falsepositives",
            Yv::Sequence(vec![Yv::String("disabled in the Falco rules file".into())]),
        );
    }
    serde_yaml_ng::to_string(&Yv::Mapping(doc)).map_err(|e| format!("cannot write YAML: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(cond: &str) -> Result<Yv, String> {
        let text = format!(
            "- list: imgs\n  items: [nginx, 'a*b']\n- macro: always\n  condition: jevt.rawtime exists\n- macro: never\n  condition: jevt.rawtime=0\n- rule: R\n  desc: d\n  condition: {cond}\n  output: o %ka.user.name\n  priority: ERROR\n  source: k8s_audit\n  tags: [k8s, T1098, mitre_privilege_escalation]\n"
        );
        let (set, _) = FalcoRuleSet::load_texts(&[("f.yaml".into(), text)]).unwrap();
        let (done, skipped) = to_sigma(&set);
        match (done.first(), skipped.first()) {
            (Some((file, yaml)), _) => {
                assert_eq!(file, "falco_r.yml");
                Ok(serde_yaml_ng::from_str(yaml).unwrap())
            }
            (_, Some((_, why))) => Err(why.clone()),
            _ => unreachable!(),
        }
    }

    fn det(y: &Yv) -> String {
        serde_yaml_ng::to_string(&y["detection"]).unwrap()
    }

    #[test]
    fn converts_boolean_structure_and_metadata() {
        let y = conv("always and ka.verb in (create, update) and not ka.user.name startswith \"system:\" and ka.target.resource = pods").unwrap();
        assert_eq!(y["title"], "R");
        assert_eq!(y["level"], "high");
        assert_eq!(y["logsource"]["service"], "audit");
        let tags: Vec<&str> = y["tags"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(
            tags,
            ["falco.k8s", "attack.t1098", "attack.privilege-escalation"]
        );
        let d = &y["detection"];
        assert_eq!(d["condition"], "sel1 and not sel2 and sel3");
        assert_eq!(
            d["sel1"]["verb"],
            Yv::Sequence(vec!["create".into(), "update".into()])
        );
        assert_eq!(d["sel2"]["user.username|startswith"], "system:");
        assert_eq!(d["sel3"]["objectRef.resource"], "pods");
        // A branch folded away by a constant leaves no selection behind.
        let y = conv("(ka.verb = get and never) or ka.verb = list").unwrap();
        assert_eq!(y["detection"]["condition"], "sel2");
        assert!(y["detection"].get("sel1").is_none(), "{}", det(&y));
    }

    #[test]
    fn not_equal_requires_presence() {
        let y = conv("ka.target.namespace != kube-system").unwrap();
        assert_eq!(
            y["detection"]["condition"],
            "sel1 and not sel2",
            "{}",
            det(&y)
        );
        assert_eq!(y["detection"]["sel1"]["objectRef.namespace|exists"], true);
    }

    #[test]
    fn typed_values_wildcards_and_paths() {
        let y = conv("ka.req.pod.host_network = true and ka.response.code >= 400 and jevt.value[/annotations/authorization.k8s.io~1decision] = allow and ka.user.groups intersects (imgs)").unwrap();
        let d = &y["detection"];
        assert_eq!(d["sel1"]["requestObject.spec.hostNetwork"], true);
        assert_eq!(d["sel2"]["responseStatus.code|gte"], 400);
        assert_eq!(
            d["sel3"]["annotations.authorization.k8s.io/decision"],
            "allow"
        );
        assert_eq!(
            d["sel4"]["user.groups"],
            Yv::Sequence(vec!["a\\*b".into(), "nginx".into()])
        );
        let y = conv("ka.req.pod.containers.image.repository intersects (nginx)").unwrap();
        assert_eq!(
            y["detection"]["sel1"]["requestObject.spec.containers.image"],
            Yv::Sequence(vec!["nginx".into(), "nginx:*".into(), "nginx@*".into()])
        );
        let y = conv("jevt.value[/stage] in (ResponseComplete)").unwrap();
        assert_eq!(y["detection"]["sel1"]["stage"], "ResponseComplete");
        let y = conv("ka.response.code startswith 2").unwrap();
        assert_eq!(y["detection"]["condition"], "sel1 and sel2");
        assert_eq!(y["detection"]["sel1"]["responseStatus.code|gte"], 200);
        assert_eq!(y["detection"]["sel2"]["responseStatus.code|lt"], 300);
        let y = conv("ka.req.pod.volumes.hostpath pmatch (/etc)").unwrap();
        assert_eq!(y["detection"]["condition"], "sel1 or sel2");
    }

    #[test]
    fn reports_what_sigma_cannot_say() {
        for (cond, why) in [
            (
                "ka.req.pod.containers.image.repository in (imgs)",
                "every element",
            ),
            ("ka.req.container.image = nginx", "no Sigma equivalent"),
            ("ka.req.pod.containers.image[0] = nginx", "index"),
            (
                "jevt.value[/requestObject/spec/containers/0/image] = x",
                "array index",
            ),
            ("ka.user.name bcontains 41", "operator"),
            ("never and ka.verb=get", "never matches"),
            ("always", "every event"),
        ] {
            let e = conv(cond).unwrap_err();
            assert!(e.contains(why), "{cond}: {e}");
        }
    }
}
