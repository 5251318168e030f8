//! Loader tests: entries, overrides, exceptions, errors.

use super::*;
use crate::model::AuditEvent;

fn load(files: &[&str]) -> Result<(FalcoRuleSet, Vec<FalcoWarning>), Vec<RuleError>> {
    let files: Vec<(String, String)> = files
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("f{i}.yaml"), t.to_string()))
        .collect();
    FalcoRuleSet::load_texts(&files)
}

fn ok(files: &[&str]) -> FalcoRuleSet {
    match load(files) {
        Ok((s, _)) => s,
        Err(e) => panic!("{e:?}"),
    }
}

fn fired(set: &FalcoRuleSet, ev: &str) -> Vec<String> {
    let ev = AuditEvent::parse(ev).unwrap();
    let mut out = Vec::new();
    set.evaluate(&ev, &mut out);
    out.into_iter()
        .map(|i| set.rules()[i].name().to_string())
        .collect()
}

const BASE: &str = r#"
- required_engine_version: 15
- list: base_users
  items: [alice]
- list: users
  items: [base_users, "bob"]
- macro: kevt
  condition: (jevt.value[/stage] in (ResponseComplete))
- macro: create
  condition: ka.verb=create
- macro: kcreate
  condition: kevt and create
- rule: Known user creates
  desc: a known user created something
  condition: kcreate and ka.user.name in (users)
  output: "created by %ka.user.name (%ka.target.resource)"
  priority: NOTICE
  source: k8s_audit
  tags: [k8s, T1098]
- rule: Syscall rule
  desc: not ours
  condition: evt.type=open
  output: x
  priority: WARNING
"#;

fn ev(user: &str, verb: &str, ns: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","stage":"ResponseComplete","verb":"{verb}","requestURI":"/api/v1/namespaces/{ns}/configmaps","user":{{"username":"{user}"}},"objectRef":{{"resource":"configmaps","namespace":"{ns}","name":"c"}},"responseStatus":{{"code":201}},"stageTimestamp":"2026-01-02T03:04:05.000000Z"}}"#
    )
}

#[test]
fn lists_referencing_lists_and_macros_referencing_macros() {
    let (set, warnings) = load(&[BASE]).unwrap();
    assert_eq!(set.rules().len(), 1);
    assert_eq!(
        set.stats().skipped,
        vec![("Syscall rule".to_string(), "syscall".to_string())]
    );
    assert_eq!(
        (set.stats().rules, set.stats().macros, set.stats().lists),
        (2, 3, 2)
    );
    assert!(warnings
        .iter()
        .any(|w| w.message.contains("required_engine_version")));
    assert!(warnings.iter().any(
        |w| w.entry.as_deref() == Some("rule 'Syscall rule'") && w.message.contains("skipped")
    ));
    assert_eq!(
        fired(&set, &ev("alice", "create", "x")),
        vec!["Known user creates"]
    );
    assert_eq!(
        fired(&set, &ev("bob", "create", "x")),
        vec!["Known user creates"]
    );
    assert!(fired(&set, &ev("carol", "create", "x")).is_empty());
    assert!(fired(&set, &ev("bob", "delete", "x")).is_empty());
}

#[test]
fn rule_metadata_and_priority_mapping() {
    let set = ok(&[BASE]);
    let r = &set.rules()[0];
    assert_eq!(r.meta.id, "falco:Known user creates");
    assert_eq!(r.meta.title, "Known user creates");
    assert_eq!(r.meta.level, Level::Low);
    assert_eq!(r.meta.source, "falco:f0.yaml");
    assert_eq!(r.meta.tags, vec!["k8s", "T1098"]);
    assert_eq!(r.priority, "Notice");
    for (p, l) in [
        ("EMERGENCY", Level::Critical),
        ("alert", Level::Critical),
        ("Critical", Level::Critical),
        ("ERROR", Level::High),
        ("WARNING", Level::Medium),
        ("NOTICE", Level::Low),
        ("INFO", Level::Informational),
        ("INFORMATIONAL", Level::Informational),
        ("DEBUG", Level::Informational),
    ] {
        assert_eq!(Priority::parse(p).unwrap().level(), l, "{p}");
    }
    assert!(Priority::parse("loud").is_none());
}

#[test]
fn list_append_old_style_and_override() {
    let add_old = "- list: users\n  items: [carol]\n  append: true\n";
    let set = ok(&[BASE, add_old]);
    assert_eq!(fired(&set, &ev("carol", "create", "x")).len(), 1);
    assert_eq!(fired(&set, &ev("alice", "create", "x")).len(), 1);
    let replace = "- list: users\n  items: [dave]\n  override:\n    items: replace\n";
    let set = ok(&[BASE, replace]);
    assert_eq!(fired(&set, &ev("dave", "create", "x")).len(), 1);
    assert!(fired(&set, &ev("alice", "create", "x")).is_empty());
    let append = "- list: base_users\n  items: [erin]\n  override:\n    items: append\n";
    let set = ok(&[BASE, append]);
    assert_eq!(fired(&set, &ev("erin", "create", "x")).len(), 1);
}

#[test]
fn redefinition_replaces_and_later_files_win() {
    let redefine = "- macro: create\n  condition: ka.verb=delete\n";
    let set = ok(&[BASE, redefine]);
    assert!(fired(&set, &ev("alice", "create", "x")).is_empty());
    assert_eq!(fired(&set, &ev("alice", "delete", "x")).len(), 1);
}

#[test]
fn condition_append_is_textual_like_falco() {
    let old = "- rule: Known user creates\n  condition: and ka.target.namespace != kube-system\n  append: true\n";
    let set = ok(&[BASE, old]);
    assert_eq!(fired(&set, &ev("alice", "create", "x")).len(), 1);
    assert!(fired(&set, &ev("alice", "create", "kube-system")).is_empty());
    assert!(set.rules()[0]
        .condition
        .ends_with("and ka.target.namespace != kube-system"));
    // A macro appended with `or` changes precedence exactly as the text says.
    let m = "- macro: create\n  condition: or ka.verb=update\n  override:\n    condition: append\n";
    let set = ok(&[BASE, m]);
    assert_eq!(fired(&set, &ev("alice", "update", "x")).len(), 1);
}

#[test]
fn override_replace_of_several_keys() {
    let o = r#"
- rule: Known user creates
  condition: ka.verb=patch
  priority: CRITICAL
  output: patched by %ka.user.name
  override:
    condition: replace
    priority: replace
    output: replace
"#;
    let set = ok(&[BASE, o]);
    let r = &set.rules()[0];
    assert_eq!(r.meta.level, Level::Critical);
    assert_eq!(fired(&set, &ev("zed", "patch", "x")).len(), 1);
    let text = ev("zed", "patch", "x");
    let e = AuditEvent::parse(&text).unwrap();
    assert_eq!(set.render_output(0, &e), "patched by zed");
}

#[test]
fn enabled_toggle_and_disabled_rules_do_not_fire() {
    let off = "- rule: Known user creates\n  enabled: false\n";
    let set = ok(&[BASE, off]);
    assert!(!set.rules()[0].enabled);
    assert!(fired(&set, &ev("alice", "create", "x")).is_empty());
    assert_eq!(set.stage_mask(), 0, "no enabled rule needs any stage");
    assert_eq!(ok(&[BASE]).stage_mask(), 31);
    let on = "- rule: Known user creates\n  enabled: true\n  override:\n    enabled: replace\n";
    let set = ok(&[BASE, off, on]);
    assert_eq!(fired(&set, &ev("alice", "create", "x")).len(), 1);
}

#[test]
fn exceptions_compile_as_falco_does() {
    let rule = r#"
- list: trusted_ns
  items: [kube-system, monitoring]
- rule: Any create
  desc: d
  condition: ka.verb=create
  output: o
  priority: WARNING
  source: k8s_audit
  exceptions:
    - name: user_ns
      fields: [ka.user.name, ka.target.namespace]
      comps: [=, in]
      values:
        - [alice, team-a]
        - [bob, [team-b, team-c]]
    - name: by_ns
      fields: ka.target.namespace
      values: [trusted_ns, lab]
    - name: prefix
      fields: [ka.user.name]
      comps: [startswith]
      values:
        - ["system:"]
"#;
    let comps_in = r#"
- rule: Any create
  exceptions:
    - name: user_ns
      values:
        - [carol, team-d]
  append: true
"#;
    let set = ok(&[rule]);
    let f = |u: &str, ns: &str| fired(&set, &ev(u, "create", ns)).len();
    assert_eq!(f("alice", "team-a"), 0);
    assert_eq!(f("alice", "team-b"), 1);
    assert_eq!(f("bob", "team-c"), 0);
    assert_eq!(
        f("carol", "kube-system"),
        0,
        "list name in values is expanded"
    );
    assert_eq!(f("carol", "lab"), 0);
    assert_eq!(f("system:node:x", "prod"), 0);
    assert_eq!(f("carol", "team-d"), 1);
    let set = ok(&[rule, comps_in]);
    assert_eq!(
        fired(&set, &ev("carol", "create", "team-d")).len(),
        0,
        "appended values"
    );
}

#[test]
fn exception_errors() {
    let bad = |exc: &str| {
        let r = format!(
            "- rule: R\n  desc: d\n  condition: ka.verb=create\n  output: o\n  priority: INFO\n  source: k8s_audit\n  exceptions:\n{exc}"
        );
        let e = load(&[&r]).unwrap_err();
        e[0].message.clone()
    };
    assert!(
        bad("    - name: e\n      fields: [ka.verb, ka.uri]\n      values: [[a]]\n")
            .contains("2 fields")
    );
    assert!(
        bad("    - name: e\n      fields: [ka.verb]\n      comps: [=, =]\n      values: []\n")
            .contains("comps")
    );
    assert!(
        bad("    - name: e\n      fields: [ka.nope]\n      values: [[a]]\n")
            .contains("unknown field 'ka.nope'")
    );
    assert!(bad("    - name: e\n      values: [[a]]\n").contains("no 'fields'"));
    assert!(bad(
        "    - name: e\n      fields: [ka.verb]\n      comps: [like]\n      values: [[a]]\n"
    )
    .contains("unknown comparison"));
    assert!(
        bad("    - name: e\n      fields: [ka.verb]\n      values: [[[a, b]]]\n")
            .contains("needs a list operator")
    );
}

#[test]
fn errors_name_file_entry_and_line() {
    let text = "- macro: m\n  condition: ka.verb=create\n\n- rule: Broken\n  desc: d\n  condition: m and (ka.user.name = x\n  output: o\n  priority: WARNING\n  source: k8s_audit\n- rule: Unknown field\n  desc: d\n  condition: ka.whatever = 1\n  output: o\n  priority: WARNING\n  source: k8s_audit\n- rule: No priority\n  desc: d\n  condition: m\n  output: o\n  source: k8s_audit\n";
    let errs = load(&[text]).unwrap_err();
    let find = |r: &str| {
        errs.iter()
            .find(|e| e.rule_id.as_deref() == Some(r))
            .unwrap_or_else(|| panic!("{r}: {errs:?}"))
    };
    let e = find("rule 'Broken'");
    assert_eq!((e.file.as_str(), e.line), ("f0.yaml", Some(4)));
    assert!(e.message.contains("expected ')'"), "{}", e.message);
    let e = find("rule 'Unknown field'");
    assert_eq!(e.line, Some(10));
    assert!(e.message.contains("unknown field 'ka.whatever'") && e.message.contains("offset 0"));
    let e = find("rule 'No priority'");
    assert_eq!(e.line, Some(16));
    assert!(e.message.contains("priority"));
    // Display includes everything.
    assert!(e.to_string().starts_with("f0.yaml:16"), "{e}");
}

#[test]
fn more_load_errors() {
    let e = load(&["- rule: X\n  condition: a\n  append: true\n"]).unwrap_err();
    assert!(
        e[0].message.contains("no rule by that name"),
        "{}",
        e[0].message
    );
    let e = load(&["- macro: X\n  condition: a\n  append: true\n"]).unwrap_err();
    assert!(e[0].message.contains("no macro by that name"));
    let e = load(&["rule: X\n"]).unwrap_err();
    assert!(e[0].message.contains("YAML list"));
    let e = load(&["- rule: [\n"]).unwrap_err();
    assert!(
        e[0].message.contains("invalid YAML") && e[0].line.is_some(),
        "{e:?}"
    );
    let e = load(&["- macro: m\n  condition: (a and\n"]).unwrap_err();
    assert!(e[0].message.contains("does not parse"));
    let e = load(&["- macro: m\n  condition: m2\n- rule: R\n  desc: d\n  condition: m\n  output: o\n  priority: INFO\n  source: k8s_audit\n"]).unwrap_err();
    assert!(
        e[0].message.contains("undefined macro 'm2' (in macro 'm')"),
        "{}",
        e[0].message
    );
    let e = load(&["- rule: R\n  desc: d\n  condition: ka.verb=x\n  output: '%proc.name'\n  priority: INFO\n  source: k8s_audit\n"]).unwrap_err();
    assert!(e[0].message.contains("proc.name"));
    let e = load(&["- rule: R\n  desc: d\n  condition: ka.verb=x\n  output: o\n  priority: LOUD\n  source: k8s_audit\n"]).unwrap_err();
    assert!(e[0].message.contains("unknown priority 'LOUD'"));
    let e = load(&[
        BASE,
        "- rule: Known user creates\n  output: new\n  override:\n    condition: append\n",
    ])
    .unwrap_err();
    assert!(
        e[0].message.contains("not listed under 'override'")
            || e[0].message.contains("has no 'condition'"),
        "{}",
        e[0].message
    );
}

#[test]
fn skip_if_unknown_filter_and_null_entries() {
    let text = "-\n- rule: Future\n  desc: d\n  condition: ka.future.field = 1\n  output: o\n  priority: INFO\n  source: k8s_audit\n  skip-if-unknown-filter: true\n- foo: bar\n";
    let (set, w) = load(&[text]).unwrap();
    assert!(set.rules().is_empty());
    assert!(w.iter().any(|w| w.message.contains("empty entry")));
    assert!(w
        .iter()
        .any(|w| w.message.contains("skip-if-unknown-filter")));
    assert!(w.iter().any(|w| w.message.contains("unknown entry")));
}

#[test]
fn append_to_undefined_list_defines_it_with_a_warning() {
    let (set, w) = load(&[
        "- list: imgs\n  items: [nginx]\n  append: true\n- rule: R\n  desc: d\n  condition: ka.user.name in (imgs)\n  output: o\n  priority: INFO\n  source: k8s_audit\n",
    ])
    .unwrap();
    assert!(w.iter().any(|w| w.message.contains("not defined")));
    assert_eq!(fired(&set, &ev("nginx", "get", "x")).len(), 1);
}

#[test]
fn list_items_with_inner_quotes_and_list_field_notes() {
    let (set, w) = load(&[
        "- list: l\n  items: ['\"a b\"', c]\n- rule: R\n  desc: d\n  condition: ka.user.name in (l) and ka.user.groups contains x\n  output: o\n  priority: INFO\n  source: k8s_audit\n",
    ])
    .unwrap();
    assert!(
        w.iter()
            .any(|w| w.message.contains("list field 'ka.user.groups'")),
        "{w:?}"
    );
    let e = r#"{"auditID":"a","verb":"get","user":{"username":"a b","groups":["yxz"]}}"#;
    assert_eq!(fired(&set, e).len(), 1);
}

#[test]
fn output_is_rendered_from_a_redacted_event() {
    let text = r#"
- rule: Secret or token
  desc: d
  condition: ka.target.resource in (secrets, configmaps)
  output: "uri=%ka.uri token=%ka.uri.param[token] data=%jevt.value[/requestObject/data] cm=%ka.req.configmap.obj obj=%jevt.obj missing=%ka.impuser.name"
  priority: WARNING
  source: k8s_audit
"#;
    let set = ok(&[text]);
    let e = r#"{"auditID":"a","verb":"create","requestURI":"/api/v1/namespaces/d/secrets?token=abc123","objectRef":{"resource":"secrets","namespace":"d"},"requestObject":{"kind":"Secret","data":{"pw":"aHVudGVyMg=="}}}"#;
    let ev = AuditEvent::parse(e).unwrap();
    let mut hits = Vec::new();
    set.evaluate(&ev, &mut hits);
    assert_eq!(hits, vec![0], "rules see the unredacted event");
    let out = set.render_output(0, &ev);
    assert!(!out.contains("aHVudGVyMg=="), "{out}");
    assert!(!out.contains("abc123"), "{out}");
    assert!(out.contains("token=***REDACTED***"), "{out}");
    assert!(out.contains("missing=<NA>"), "{out}");
    let cm = r#"{"auditID":"a","verb":"create","objectRef":{"resource":"configmaps"},"requestObject":{"kind":"ConfigMap","data":{"password":"pw1","mode":"fast"}}}"#;
    let ev = AuditEvent::parse(cm).unwrap();
    let out = set.render_output(0, &ev);
    assert!(!out.contains("pw1") && out.contains("fast"), "{out}");
    assert_eq!(
        set.render_output(99, &ev),
        "",
        "a bad index renders nothing"
    );
}

proptest::proptest! {
    /// Rule files assembled from arbitrary fragments load or fail with errors, never panic.
    #[test]
    fn arbitrary_rule_files_never_panic(parts in proptest::collection::vec(proptest::sample::select(vec![
        "- rule: R\n", "- macro: m\n", "- list: l\n", "  condition: ", "ka.verb=x", " and m", " or (", ")",
        "  items: [a, l]\n", "  append: true\n", "  override:\n    condition: append\n", "  output: %ka.user.name\n",
        "  priority: INFO\n", "  source: k8s_audit\n", "  exceptions:\n    - name: e\n      fields: [ka.verb]\n      values: [[a], [[b]]]\n",
        "\n", "-\n", "---\n", "  enabled: false\n", "[", "\"", " in (l)", " exists", "  desc: d\n",
    ]), 0..24)) {
        let text: String = parts.concat();
        if let Ok((set, _)) = FalcoRuleSet::load_texts(&[("p.yaml".into(), text)]) {
            let ev = AuditEvent::parse(r#"{"auditID":"a","verb":"x","user":{"username":"u"}}"#).unwrap();
            let mut out = Vec::new();
            set.evaluate(&ev, &mut out);
            for i in out {
                let _ = set.render_output(i, &ev);
            }
            let _ = super::sigma::to_sigma(&set);
        }
    }
}

/// The engine shares one rule set between worker threads.
#[test]
fn rule_set_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<FalcoRuleSet>();
}
