//! Unit tests of the rule engine: one test per modifier and condition form, the index
//! against brute force, stages, lists, errors.

use super::*;
use crate::model::AuditEvent;

/// Builds a rule document with the given detection body (indented by 2).
fn rule(det: &str) -> String {
    format!(
        "title: t\nid: r1\nlevel: high\ntags: [attack.t1609]\nlogsource: {{product: kubernetes, service: audit}}\ndetection:\n{det}\n"
    )
}

fn set_of(det: &str) -> RuleSet {
    match RuleSet::from_texts(&[("t.yml", &rule(det))], &[], false) {
        Ok((s, _)) => s,
        Err(e) => panic!("rule failed to load: {e:?}"),
    }
}

fn err_of(det: &str) -> Vec<RuleError> {
    match RuleSet::from_texts(&[("t.yml", &rule(det))], &[], false) {
        Ok(_) => panic!("rule loaded but should not"),
        Err(e) => e,
    }
}

fn fires(s: &RuleSet, json: &str) -> bool {
    let ev = match AuditEvent::parse(json) {
        Ok(e) => e,
        Err(e) => panic!("bad test event {json}: {e}"),
    };
    let mut out = Vec::new();
    s.evaluate(&ev, &mut out);
    let mut all = Vec::new();
    s.evaluate_all(&ev, &mut all);
    assert_eq!(out, all, "index and brute force disagree on {json}");
    !out.is_empty()
}

const POD: &str = r#"{"auditID":"a","stage":"ResponseComplete","verb":"create","user":{"username":"Alice","groups":["dev","system:authenticated"]},"sourceIPs":["10.1.2.3","2001:db8::7"],"userAgent":"kubectl/v1.30.0 (linux/amd64)","objectRef":{"resource":"pods","namespace":"kube-system","name":"evil","apiGroup":"","subresource":"exec"},"responseStatus":{"code":201},"requestURI":"/api/v1/namespaces/kube-system/pods/evil/exec?command=%2Fbin%2Fsh","requestObject":{"spec":{"hostPID":true,"volumes":[{"name":"h","hostPath":{"path":"/"}}],"containers":[{"name":"c","image":"nginx:1.25","securityContext":{"privileged":true,"capabilities":{"add":["SYS_ADMIN"]}}}]}},"annotations":{"authorization.k8s.io/decision":"allow"}}"#;

#[test]
fn plain_values_are_case_insensitive_and_whole() {
    let s = set_of("  sel:\n    verb: CREATE\n    user.username: alice\n  condition: sel");
    assert!(fires(&s, POD));
    let s = set_of("  sel:\n    verb: creat\n  condition: sel");
    assert!(!fires(&s, POD), "plain value must match the whole string");
}

#[test]
fn wildcards_and_escapes() {
    assert!(fires(
        &set_of("  sel:\n    userAgent: 'kubectl/*'\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    userAgent: '*(linux/amd64)'\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    user.username: 'a?ice'\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    user.username: 'a?ce'\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    userAgent: 'kube*v1.*linux*'\n  condition: sel"),
        POD
    ));
    // `\*` is a literal star: "kubectl*" as text does not occur.
    assert!(!fires(
        &set_of("  sel:\n    userAgent: 'kubectl\\*'\n  condition: sel"),
        POD
    ));
    let star = r#"{"auditID":"a","verb":"get","userAgent":"a*b"}"#;
    assert!(fires(
        &set_of("  sel:\n    userAgent: 'a\\*b'\n  condition: sel"),
        star
    ));
    assert!(!fires(
        &set_of("  sel:\n    userAgent: 'a\\*b'\n  condition: sel"),
        r#"{"auditID":"a","userAgent":"axxb"}"#
    ));
}

#[test]
fn contains_startswith_endswith() {
    assert!(fires(
        &set_of("  sel:\n    requestURI|contains: '/EXEC?'\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    requestURI|contains: ['nope', '%2fbin%2fsh']\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    requestURI|contains: ['nope', 'zsh']\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    userAgent|startswith: KUBECTL/\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    userAgent|startswith: linux\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    userAgent|endswith: 'amd64)'\n  condition: sel"),
        POD
    ));
    // Boundary: the needle equal to the whole value; longer than the value.
    assert!(fires(
        &set_of("  sel:\n    user.username|startswith: alice\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    user.username|endswith: xalice\n  condition: sel"),
        POD
    ));
    // Wildcards inside contains still work.
    assert!(fires(
        &set_of("  sel:\n    requestURI|contains: 'pods/*/exec'\n  condition: sel"),
        POD
    ));
}

#[test]
fn cased_modifier() {
    assert!(!fires(
        &set_of("  sel:\n    user.username|cased: alice\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    user.username|cased: Alice\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    userAgent|contains|cased: KUBECTL\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    userAgent|contains|cased: kubectl\n  condition: sel"),
        POD
    ));
}

#[test]
fn non_ascii_case_folding() {
    let ev = r#"{"auditID":"a","verb":"get","user":{"username":"ÉLODIE"}}"#;
    assert!(fires(
        &set_of("  sel:\n    user.username: élodie\n  condition: sel"),
        ev
    ));
    assert!(fires(
        &set_of("  sel:\n    user.username|startswith: 'él'\n  condition: sel"),
        ev
    ));
}

#[test]
fn all_modifier() {
    assert!(fires(
        &set_of("  sel:\n    requestURI|contains|all: [exec, command]\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    requestURI|contains|all: [exec, attach]\n  condition: sel"),
        POD
    ));
    // Across list values: each pattern may match a different element.
    assert!(fires(
        &set_of("  sel:\n    user.groups|all: [dev, 'system:*']\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    user.groups|all: [dev, ops]\n  condition: sel"),
        POD
    ));
}

#[test]
fn regex_and_sub_modifiers() {
    assert!(fires(
        &set_of("  sel:\n    userAgent|re: '^kubectl/v1\\.\\d+'\n  condition: sel"),
        POD
    ));
    // re is case-sensitive unless `i`.
    assert!(!fires(
        &set_of("  sel:\n    userAgent|re: '^KUBECTL'\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    userAgent|re|i: '^KUBECTL'\n  condition: sel"),
        POD
    ));
    let ml = r#"{"auditID":"a","verb":"get","userAgent":"first\nsecond"}"#;
    assert!(!fires(
        &set_of("  sel:\n    userAgent|re: '^second$'\n  condition: sel"),
        ml
    ));
    assert!(fires(
        &set_of("  sel:\n    userAgent|re|m: '^second$'\n  condition: sel"),
        ml
    ));
    assert!(!fires(
        &set_of("  sel:\n    userAgent|re: 'first.second'\n  condition: sel"),
        ml
    ));
    assert!(fires(
        &set_of("  sel:\n    userAgent|re|s: 'first.second'\n  condition: sel"),
        ml
    ));
    let e = err_of("  sel:\n    userAgent|re: '(unclosed'\n  condition: sel");
    assert!(e[0].message.contains("invalid regular expression"), "{e:?}");
    let e = err_of("  sel:\n    userAgent|i: 'x'\n  condition: sel");
    assert!(e[0].message.contains("sub-modifier of `re`"), "{e:?}");
}

#[test]
fn cidr_v4_v6() {
    assert!(fires(
        &set_of("  sel:\n    sourceIPs|cidr: 10.0.0.0/8\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    sourceIPs|cidr: 10.1.2.4/32\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    sourceIPs|cidr: 10.1.2.3/32\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    sourceIPs|cidr: '2001:db8::/32'\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    sourceIPs|cidr: '2001:db9::/32'\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    sourceIPs|cidr: ['192.168.0.0/16', '10.1.0.0/16']\n  condition: sel"),
        POD
    ));
    let e = err_of("  sel:\n    sourceIPs|cidr: 10.0.0.0/99\n  condition: sel");
    assert!(e[0].message.contains("not a valid CIDR"), "{e:?}");
}

#[test]
fn null_and_exists() {
    assert!(fires(
        &set_of("  sel:\n    impersonatedUser.username: null\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    user.username: null\n  condition: sel"),
        POD
    ));
    let nulls = r#"{"auditID":"a","verb":"get","userAgent":null}"#;
    assert!(fires(
        &set_of("  sel:\n    userAgent: null\n  condition: sel"),
        nulls
    ));
    // null in a list is OR'ed with the other values.
    let s = set_of("  sel:\n    userAgent: [null, 'kubectl*']\n  condition: sel");
    assert!(fires(&s, nulls));
    assert!(fires(&s, POD));
    assert!(!fires(
        &s,
        r#"{"auditID":"a","verb":"get","userAgent":"curl"}"#
    ));
    assert!(fires(
        &set_of("  sel:\n    requestObject.spec.hostPID|exists: true\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    requestObject.spec.hostIPC|exists: true\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    requestObject.spec.hostIPC|exists: false\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    requestObject.spec.hostPID|exists: false\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    userAgent|exists: false\n  condition: sel"),
        nulls
    ));
}

#[test]
fn numbers_and_booleans() {
    assert!(fires(
        &set_of("  sel:\n    responseStatus.code: 201\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    responseStatus.code: '201'\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    responseStatus.code: [401, 403]\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    responseStatus.code|startswith: '2'\n  condition: sel"),
        POD
    ));
    let s = set_of("  sel:\n    requestObject.spec.containers.securityContext.privileged: true\n  condition: sel");
    assert!(fires(&s, POD));
    assert!(fires(
        &s,
        r#"{"auditID":"a","requestObject":{"spec":{"containers":[{"securityContext":{"privileged":"TRUE"}}]}}}"#
    ));
    assert!(!fires(
        &s,
        r#"{"auditID":"a","requestObject":{"spec":{"containers":[{"securityContext":{"privileged":false}}]}}}"#
    ));
    // String field holding a number matched by a YAML number.
    assert!(fires(
        &set_of("  sel:\n    objectRef.name: 42\n  condition: sel"),
        r#"{"auditID":"a","objectRef":{"name":"42"}}"#
    ));
}

#[test]
fn comparisons() {
    assert!(fires(
        &set_of("  sel:\n    responseStatus.code|gte: 201\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    responseStatus.code|gt: 201\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    responseStatus.code|lte: 201\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    responseStatus.code|lt: 201\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    responseStatus.code|lt: '300'\n  condition: sel"),
        POD
    ));
    let e = err_of("  sel:\n    responseStatus.code|gt: abc\n  condition: sel");
    assert!(e[0].message.contains("needs a number"), "{e:?}");
}

#[test]
fn objects_match_star_only() {
    assert!(fires(
        &set_of("  sel:\n    hostPath: '*'\n  condition: sel"),
        POD
    ));
    assert!(fires(
        &set_of("  sel:\n    capabilities: '*'\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    hostPath: 'x*'\n  condition: sel"),
        POD
    ));
    assert!(!fires(
        &set_of("  sel:\n    hostPath: '*'\n  condition: sel"),
        r#"{"auditID":"a","verb":"create"}"#
    ));
}

#[test]
fn selection_forms_and_conditions() {
    // A list of maps is OR; a map is AND.
    let s = set_of("  sel:\n    - verb: delete\n    - user.username: alice\n      verb: create\n  condition: sel");
    assert!(fires(&s, POD));
    let s = set_of("  sel:\n    - verb: delete\n    - user.username: bob\n  condition: sel");
    assert!(!fires(&s, POD));
    let d = "  sel_a:\n    verb: create\n  sel_b:\n    verb: delete\n  filter:\n    objectRef.namespace: kube-system\n";
    assert!(fires(&set_of(&format!("{d}  condition: 1 of sel_*")), POD));
    assert!(!fires(
        &set_of(&format!("{d}  condition: all of sel_*")),
        POD
    ));
    assert!(!fires(
        &set_of(&format!("{d}  condition: 1 of sel_* and not filter")),
        POD
    ));
    assert!(fires(
        &set_of(&format!("{d}  condition: sel_a and (filter or sel_b)")),
        POD
    ));
    assert!(!fires(
        &set_of(&format!("{d}  condition: sel_a and not (filter or sel_b)")),
        POD
    ));
    assert!(fires(&set_of(&format!("{d}  condition: 1 of them")), POD));
    assert!(!fires(
        &set_of(&format!("{d}  condition: all of them")),
        POD
    ));
    // Condition as a list: OR.
    assert!(fires(
        &set_of(&format!("{d}  condition: [sel_b, sel_a]")),
        POD
    ));
}

#[test]
fn keyword_selection_rejected() {
    let e = err_of("  keywords:\n    - evil\n  condition: keywords");
    assert!(e[0].message.contains("keyword selections"), "{e:?}");
    assert!(e[0].message.contains("`keywords`"), "{e:?}");
}

#[test]
fn unknown_modifier_error_names_everything() {
    let e = err_of(
        "  sel:\n    verb: create\n  sel2:\n    userAgent|foo: x\n  condition: sel and sel2",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].file, "t.yml");
    assert_eq!(e[0].line, Some(10), "{e:?}");
    assert_eq!(e[0].rule_id.as_deref(), Some("r1"));
    assert!(e[0].message.contains("selection `sel2`"), "{e:?}");
    assert!(e[0].message.contains("unknown modifier `foo`"), "{e:?}");
    let e = err_of("  sel:\n    userAgent|windash: x\n  condition: sel");
    assert!(e[0].message.contains("not supported"), "{e:?}");
}

#[test]
fn undefined_selection_error() {
    let e = err_of("  sel:\n    verb: create\n  condition: sel and filter");
    assert_eq!(e[0].line, Some(9), "{e:?}");
    assert!(
        e[0].message.contains("undefined selection `filter`"),
        "{e:?}"
    );
    assert!(
        e[0].to_string().starts_with("t.yml:9 (rule r1): "),
        "{}",
        e[0]
    );
}

#[test]
fn errors_are_all_collected_and_skip_broken_keeps_the_rest() {
    let good = rule("  sel:\n    verb: create\n  condition: sel");
    let bad1 = rule("  sel:\n    verb|nope: create\n  condition: sel").replace("id: r1", "id: r2");
    let bad2 = "title: [unclosed\n";
    let files = [
        ("good.yml", good.as_str()),
        ("bad1.yml", bad1.as_str()),
        ("bad2.yml", bad2),
    ];
    let e = RuleSet::from_texts(&files, &[], false).unwrap_err();
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e
        .iter()
        .any(|x| x.file == "bad1.yml" && x.rule_id.as_deref() == Some("r2")));
    assert!(e.iter().any(|x| x.file == "bad2.yml"
        && x.message.starts_with("invalid YAML")
        && x.line.is_some()));
    let (s, warnings) = RuleSet::from_texts(&files, &[], true).unwrap();
    assert_eq!(s.rules().len(), 1);
    assert_eq!(warnings.len(), 2);
}

#[test]
fn duplicate_ids_are_errors() {
    let a = rule("  sel:\n    verb: create\n  condition: sel");
    let e = RuleSet::from_texts(&[("a.yml", &a), ("b.yml", &a)], &[], false).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].file, "b.yml");
    assert!(
        e[0].message
            .contains("duplicate rule id (first defined in a.yml:1)"),
        "{e:?}"
    );
}

#[test]
fn multi_document_and_correlations() {
    let text = format!(
        "{}name: r_one\n---\n{}---\ntitle: corr\nid: c1\ncorrelation:\n  type: event_count\n  rules: [r_one]\n",
        rule("  sel:\n    verb: create\n  condition: sel"),
        rule("  sel:\n    verb: delete\n  condition: sel").replace("id: r1", "id: r2")
    );
    let (s, w) = RuleSet::from_texts(&[("m.yml", &text)], &[], false).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(s.rules().len(), 2);
    assert_eq!(s.correlations().len(), 1);
    assert_eq!(s.correlations()[0].file, "m.yml");
    assert_eq!(s.correlations()[0].line, Some(22));
    assert_eq!(s.find("r_one"), Some(0));
    assert_eq!(s.find("r2"), Some(1));
    assert_eq!(s.find("nope"), None);
    assert_eq!(s.rules()[0].name.as_deref(), Some("r_one"));
}

#[test]
fn other_logsources_are_skipped_with_a_warning() {
    let t = rule("  sel:\n    verb: create\n  condition: sel")
        .replace("product: kubernetes", "product: gcp");
    let (s, w) = RuleSet::from_texts(&[("g.yml", &t)], &[], false).unwrap();
    assert_eq!(s.rules().len(), 0);
    assert_eq!(w.len(), 1);
    assert!(w[0].message.contains("not kubernetes/audit"), "{w:?}");
}

#[test]
fn stages_default_override_and_stage_field() {
    let rs = r#"{"auditID":"a","stage":"ResponseStarted","verb":"create"}"#;
    let rc = r#"{"auditID":"a","stage":"ResponseComplete","verb":"create"}"#;
    let s = set_of("  sel:\n    verb: create\n  condition: sel");
    assert_eq!(s.rules()[0].stages, default_stages());
    assert!(!fires(&s, rs));
    assert!(fires(&s, rc));
    let t = rule("  sel:\n    verb: create\n  condition: sel") + "stages: [ResponseStarted]\n";
    let (s, _) = RuleSet::from_texts(&[("s.yml", &t)], &[], false).unwrap();
    assert!(fires(&s, rs));
    assert!(!fires(&s, rc));
    let s = set_of("  sel:\n    stage: ResponseStarted\n  condition: sel");
    assert_eq!(s.rules()[0].stages, 0x1F);
    assert!(fires(&s, rs));
    let t = rule("  sel:\n    verb: create\n  condition: sel") + "stages: [Bogus]\n";
    let e = RuleSet::from_texts(&[("s.yml", &t)], &[], false).unwrap_err();
    assert!(e[0].message.contains("unknown stage `Bogus`"), "{e:?}");
}

#[test]
fn expand_from_lists_with_override() {
    let lists = [("lists/u.yml", "name: admins\nvalues: [alice, 'bob*']\n")];
    let t = rule("  sel:\n    user.username|expand: '%admins%'\n  condition: sel");
    let (s, _) = RuleSet::from_texts(&[("e.yml", &t)], &lists, false).unwrap();
    assert!(fires(&s, POD));
    assert!(fires(&s, r#"{"auditID":"a","user":{"username":"bobby"}}"#));
    assert!(!fires(&s, r#"{"auditID":"a","user":{"username":"carol"}}"#));
    assert_eq!(s.list("admins").map(|l| l.values.len()), Some(2));
    let e = RuleSet::from_texts(&[("e.yml", &t)], &[], false).unwrap_err();
    assert!(e[0].message.contains("unknown list `admins`"), "{e:?}");
}

#[test]
fn expand_feeds_cidr_and_re() {
    let lists = [("lists/n.yml", "name: nets\nvalues: ['10.1.0.0/16', '192.0.2.1']\n---\nname: agents\nvalues: ['^kubectl/v1\\.3']\n")];
    let t = rule("  sel:\n    sourceIPs|expand|cidr: '%nets%'\n  condition: sel");
    let (s, _) = RuleSet::from_texts(&[("e.yml", &t)], &lists, false).unwrap();
    assert!(fires(&s, POD));
    assert!(fires(&s, r#"{"auditID":"a","sourceIPs":["192.0.2.1"]}"#));
    assert!(!fires(&s, r#"{"auditID":"a","sourceIPs":["192.0.2.2"]}"#));
    let t = rule("  sel:\n    userAgent|expand|re: '%agents%'\n  condition: sel");
    let (s, _) = RuleSet::from_texts(&[("e.yml", &t)], &lists, false).unwrap();
    assert!(fires(&s, POD));
    // An empty list expands to nothing: the field can never match.
    let lists = [("lists/n.yml", "name: nets\nvalues: []\n")];
    let t = rule("  sel:\n    sourceIPs|expand|cidr: '%nets%'\n  condition: sel");
    let (s, _) = RuleSet::from_texts(&[("e.yml", &t)], &lists, false).unwrap();
    assert!(!fires(&s, POD));
}

#[test]
fn requirements_follow_the_condition() {
    let s = set_of(
        "  sel:\n    verb: [create, update]\n    objectRef.resource: pods\n    objectRef.subresource: exec\n    objectRef.namespace: kube-system\n  other:\n    verb: delete\n    apiGroup: apps\n    requestObject.spec.x: y\n  condition: sel or other",
    );
    let r = s.rules()[0].requirements();
    assert_eq!(
        r.verbs,
        Some(vec!["create".into(), "delete".into(), "update".into()])
    );
    // `other` does not constrain the resource, so neither does the OR.
    assert_eq!(r.resources, None);
    assert_eq!(r.namespaces, None);
    assert_eq!(r.body, BodyNeed::Request);
    let s = set_of("  sel:\n    verb: [create, update]\n    objectRef.resource: pods\n    objectRef.subresource: exec\n  f:\n    verb: update\n  condition: sel and not f");
    let r = s.rules()[0].requirements();
    assert_eq!(r.verbs, Some(vec!["create".into(), "update".into()]));
    assert_eq!(r.resources, Some(vec!["pods/exec".into()]));
    assert_eq!(r.body, BodyNeed::None);
    assert_eq!(r.stages, default_stages());
}

#[test]
fn index_buckets() {
    let rules = [
        rule("  sel:\n    verb: create\n    objectRef.resource: pods\n  condition: sel"),
        rule("  sel:\n    verb: delete\n  condition: sel").replace("r1", "r2"),
        rule("  sel:\n    objectRef.resource: secrets\n  condition: sel").replace("r1", "r3"),
        rule("  sel:\n    userAgent: x\n  condition: sel").replace("r1", "r4"),
        rule("  sel:\n    verb: create\n  f:\n    verb: get\n  condition: sel and f")
            .replace("r1", "r5"),
        rule("  sel:\n    verb: create\n  f:\n    verb: get\n  condition: not f")
            .replace("r1", "r6"),
    ];
    let texts: Vec<(&str, &str)> = rules.iter().map(|r| ("i.yml", r.as_str())).collect();
    let (s, _) = RuleSet::from_texts(&texts, &[], false).unwrap();
    assert_eq!(s.index_stats(), (2, 1, 1, 1, 1));
}

#[test]
fn examples_runner_reports_failures() {
    let t = rule("  sel:\n    verb: create\n  condition: sel")
        + "examples:\n  positive:\n    - {auditID: a, verb: create}\n    - {auditID: b, verb: get}\n  negative:\n    - {auditID: c, verb: delete}\n    - {auditID: d, verb: CREATE}\n";
    let (s, _) = RuleSet::from_texts(&[("x.yml", &t)], &[], false).unwrap();
    let (f, n) = examples::run_counted(&s);
    assert_eq!(n, 4);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!((f[0].kind, f[0].index), ("positive", 1));
    assert_eq!((f[1].kind, f[1].index), ("negative", 1));
    assert!(f[0]
        .to_string()
        .contains("x.yml (rule r1): positive example #1"));
}

mod index_vs_brute_force {
    use super::*;
    use proptest::prelude::*;

    const RULES: &[&str] = &[
        "  sel:\n    verb: create\n    objectRef.resource: pods\n  condition: sel",
        "  sel:\n    verb: [get, list]\n    objectRef.resource: [secrets, configmaps]\n  condition: sel",
        "  sel:\n    verb: delete\n  condition: sel",
        "  sel:\n    objectRef.resource: secrets\n  f:\n    user.username|startswith: 'system:'\n  condition: sel and not f",
        "  sel:\n    user.username: admin\n  condition: sel",
        "  a:\n    verb: create\n  b:\n    objectRef.resource: pods\n  condition: a or b",
        "  a:\n    verb: create\n  b:\n    verb: get\n  condition: a and b",
        "  a:\n    verb: create\n  condition: not a",
        "  a:\n    verb: 'cre*'\n  condition: a",
        "  a:\n    VERB: create\n  condition: a",
        "  a:\n    verb|cased: Create\n    objectRef.resource: PODS\n  condition: a",
        "  a:\n    - verb: patch\n      objectRef.resource: deployments\n    - verb: update\n  condition: a",
        "  a:\n    verb: [create, null]\n  condition: a",
        "  a:\n    stage: ResponseStarted\n    verb: watch\n  condition: a",
        "  a:\n    verb: get\n  b:\n    objectRef.resource: pods\n  condition: 1 of them",
        "  a:\n    verb: get\n  b:\n    objectRef.resource: [pods, secrets]\n  condition: all of them",
        // Rules sharing `userAgent` exercise the literal prefilter (overlapping needles).
        "  a:\n    userAgent|contains: ['curl', 'url/']\n  condition: a",
        "  a:\n    userAgent|startswith: 'Python'\n  f:\n    verb: get\n  condition: a and not f",
        "  a:\n    userAgent: '*kubectl*v1.?0*'\n  condition: a",
        "  a:\n    userAgent|contains|all: ['kube', 'ctl']\n  condition: a",
        "  a:\n    - userAgent|endswith: 'xx'\n    - userAgent|contains: 'curl'\n  condition: a",
        "  a:\n    userAgent|contains|cased: 'URL/'\n  b:\n    verb: create\n  condition: a or b",
    ];

    fn set() -> RuleSet {
        let texts: Vec<String> = RULES
            .iter()
            .enumerate()
            .map(|(i, d)| rule(d).replace("id: r1", &format!("id: r{i}")))
            .collect();
        let refs: Vec<(&str, &str)> = texts.iter().map(|t| ("p.yml", t.as_str())).collect();
        RuleSet::from_texts(&refs, &[], false).unwrap().0
    }

    fn pick(v: &[&'static str]) -> impl Strategy<Value = Option<&'static str>> {
        proptest::option::of(proptest::sample::select(v.to_vec()))
    }

    proptest! {
        #[test]
        fn same_hits(
            verb in pick(&["create", "get", "list", "delete", "patch", "update", "watch", "Create", "CREATE", "cre"]),
            res in pick(&["pods", "secrets", "configmaps", "deployments", "PODS", "Secrets", "nodes"]),
            user in pick(&["admin", "system:kube", "bob", "ADMIN"]),
            stage in pick(&["ResponseComplete", "ResponseStarted", "RequestReceived", "Panic"]),
            ua in pick(&["curl/8.0", "CURL/8", "kubectl/v1.30.0", "KUBECTL/V1.20", "python-requests/2", "Python/3", "kube-ctl", "xx", "cur", "url/", "cURL/"]),
        ) {
            let s = set();
            prop_assert!(s.prefiltered_rules() >= 5);
            let mut ev = serde_json::json!({"auditID": "x"});
            if let Some(v) = verb { ev["verb"] = v.into(); }
            if let Some(r) = res { ev["objectRef"] = serde_json::json!({"resource": r}); }
            if let Some(u) = user { ev["user"] = serde_json::json!({"username": u}); }
            if let Some(st) = stage { ev["stage"] = st.into(); }
            if let Some(u) = ua { ev["userAgent"] = u.into(); }
            let text = ev.to_string();
            let ev = AuditEvent::parse(&text).unwrap();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            s.evaluate(&ev, &mut a);
            s.evaluate_all(&ev, &mut b);
            prop_assert_eq!(a, b);
        }
    }
}
