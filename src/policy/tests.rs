//! Unit tests: the API server's matching semantics, validation, and the coverage verdicts.

use super::*;
use crate::model::{Level, Stage};
use crate::rules::RuleSet;

fn policy(rules: &str) -> Policy {
    let text = format!("apiVersion: audit.k8s.io/v1\nkind: Policy\n{rules}");
    match parse(&text, "test.yaml") {
        Ok(p) => p,
        Err(e) => panic!("policy failed to parse: {e}\n{text}"),
    }
}

fn res(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Request {
    Request {
        user: "alice".into(),
        groups: vec!["system:authenticated".into()],
        verb: verb.into(),
        target: Target::Resource {
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        },
    }
}

fn url(verb: &str, path: &str) -> Request {
    Request {
        user: "system:anonymous".into(),
        groups: vec!["system:unauthenticated".into()],
        verb: verb.into(),
        target: Target::NonResource { path: path.into() },
    }
}

fn level(p: &Policy, r: &Request) -> AuditLevel {
    p.evaluate(r).level
}

#[test]
fn first_matching_rule_wins_and_no_match_is_none() {
    let p = policy(
        "rules:\n- level: Metadata\n  resources: [{group: \"\", resources: [secrets]}]\n\
         - level: RequestResponse\n  resources: [{group: \"\", resources: [secrets, pods]}]\n",
    );
    // Secrets match both rules; the first decides.
    assert_eq!(
        level(&p, &res("get", "", "secrets", "", "a", "s")),
        AuditLevel::Metadata
    );
    assert_eq!(
        p.evaluate(&res("get", "", "secrets", "", "a", "s")).rule,
        Some(0)
    );
    assert_eq!(
        level(&p, &res("get", "", "pods", "", "a", "p")),
        AuditLevel::RequestResponse
    );
    // Nothing matches configmaps: not logged.
    let d = p.evaluate(&res("get", "", "configmaps", "", "a", "c"));
    assert_eq!((d.level, d.rule), (AuditLevel::None, None));
}

#[test]
fn subresources_need_their_own_pattern() {
    let p = policy(
        "rules:\n- level: Request\n  resources: [{group: \"\", resources: [pods]}]\n\
         - level: RequestResponse\n  resources: [{group: \"\", resources: [pods/log]}]\n\
         - level: Metadata\n  resources: [{group: \"\", resources: [\"pods/*\"]}]\n",
    );
    assert_eq!(
        level(&p, &res("get", "", "pods", "", "a", "")),
        AuditLevel::Request
    );
    // "pods" does not cover pods/log.
    assert_eq!(
        level(&p, &res("get", "", "pods", "log", "a", "")),
        AuditLevel::RequestResponse
    );
    // "pods/*" covers any pods subresource not matched earlier.
    assert_eq!(
        level(&p, &res("create", "", "pods", "exec", "a", "")),
        AuditLevel::Metadata
    );
}

#[test]
fn wildcards_star_and_star_slash_sub() {
    let p = policy(
        "rules:\n- level: Request\n  resources: [{group: apps, resources: [\"*/scale\"]}]\n\
         - level: Metadata\n  resources: [{group: \"\", resources: [\"*\"]}]\n",
    );
    assert_eq!(
        level(&p, &res("update", "apps", "deployments", "scale", "a", "")),
        AuditLevel::Request
    );
    // */scale does not match the resource itself.
    assert_eq!(
        level(&p, &res("update", "apps", "deployments", "", "a", "")),
        AuditLevel::None
    );
    // "*" matches resources and subresources of its group only.
    assert_eq!(
        level(&p, &res("create", "", "pods", "exec", "a", "")),
        AuditLevel::Metadata
    );
    assert_eq!(
        level(&p, &res("get", "", "secrets", "", "a", "")),
        AuditLevel::Metadata
    );
}

#[test]
fn groups_match_exactly_and_empty_is_core() {
    let p = policy(
        "rules:\n- level: Metadata\n  resources: [{group: \"\", resources: [events]}]\n\
         - level: Request\n  resources: [{group: rbac.authorization.k8s.io}]\n",
    );
    assert_eq!(
        level(&p, &res("create", "", "events", "", "a", "")),
        AuditLevel::Metadata
    );
    assert_eq!(
        level(&p, &res("create", "events.k8s.io", "events", "", "a", "")),
        AuditLevel::None
    );
    // A group with no resources matches every resource of the group.
    assert_eq!(
        level(
            &p,
            &res(
                "patch",
                "rbac.authorization.k8s.io",
                "clusterroles",
                "",
                "",
                ""
            )
        ),
        AuditLevel::Request
    );
}

#[test]
fn resource_names_restrict_the_match() {
    let p = policy(
        "rules:\n- level: None\n  resources: [{group: \"\", resources: [configmaps], \
         resourceNames: [kube-root-ca.crt]}]\n- level: Metadata\n",
    );
    assert_eq!(
        level(
            &p,
            &res("get", "", "configmaps", "", "a", "kube-root-ca.crt")
        ),
        AuditLevel::None
    );
    assert_eq!(
        level(&p, &res("get", "", "configmaps", "", "a", "other")),
        AuditLevel::Metadata
    );
}

#[test]
fn namespaces_with_empty_string_mean_cluster_scoped() {
    let p = policy(
        "rules:\n- level: RequestResponse\n  namespaces: [\"\"]\n\
         - level: Request\n  namespaces: [kube-system]\n- level: Metadata\n",
    );
    assert_eq!(
        level(
            &p,
            &res(
                "create",
                "rbac.authorization.k8s.io",
                "clusterroles",
                "",
                "",
                ""
            )
        ),
        AuditLevel::RequestResponse
    );
    assert_eq!(
        level(&p, &res("create", "", "pods", "", "kube-system", "")),
        AuditLevel::Request
    );
    assert_eq!(
        level(&p, &res("create", "", "pods", "", "dev", "")),
        AuditLevel::Metadata
    );
    // A namespace rule never matches a non-resource request.
    assert_eq!(level(&p, &url("get", "/version")), AuditLevel::Metadata);
}

#[test]
fn non_resource_urls_exact_prefix_and_star() {
    let p = policy(
        "rules:\n- level: None\n  nonResourceURLs: [\"/healthz*\", /version]\n\
         - level: Request\n  nonResourceURLs: [\"*\"]\n- level: Metadata\n",
    );
    assert_eq!(level(&p, &url("get", "/healthz")), AuditLevel::None);
    assert_eq!(level(&p, &url("get", "/healthz/etcd")), AuditLevel::None);
    assert_eq!(level(&p, &url("get", "/version")), AuditLevel::None);
    // Exact only: /version/x is not /version.
    assert_eq!(level(&p, &url("get", "/version/x")), AuditLevel::Request);
    // URL rules never match resource requests.
    assert_eq!(
        level(&p, &res("get", "", "pods", "", "a", "")),
        AuditLevel::Metadata
    );
}

#[test]
fn users_groups_and_verbs() {
    let p = policy(
        "rules:\n- level: None\n  users: [system:kube-proxy]\n  verbs: [watch]\n\
         - level: Request\n  userGroups: [ops, sre]\n- level: Metadata\n",
    );
    let mut r = res("watch", "", "endpoints", "", "a", "");
    r.user = "system:kube-proxy".into();
    assert_eq!(level(&p, &r), AuditLevel::None);
    r.verb = "get".into();
    assert_eq!(level(&p, &r), AuditLevel::Metadata);
    r.groups = vec!["x".into(), "sre".into()];
    assert_eq!(level(&p, &r), AuditLevel::Request);
}

#[test]
fn omit_stages_are_the_union_of_policy_and_rule() {
    let p = policy(
        "omitStages: [RequestReceived]\nrules:\n- level: Metadata\n  verbs: [get]\n  \
         omitStages: [ResponseStarted]\n- level: Metadata\n",
    );
    let rr = Stage::RequestReceived.bit();
    let rs = Stage::ResponseStarted.bit();
    assert_eq!(
        p.evaluate(&res("get", "", "pods", "", "a", "")).omit_stages,
        rr | rs
    );
    assert_eq!(
        p.evaluate(&res("list", "", "pods", "", "a", ""))
            .omit_stages,
        rr
    );
    // No rule matched: the policy's own omitStages still apply.
    let only = policy("omitStages: [Panic]\nrules:\n- level: Metadata\n  verbs: [get]\n");
    assert_eq!(
        only.evaluate(&res("list", "", "pods", "", "a", ""))
            .omit_stages,
        Stage::Panic.bit()
    );
}

#[test]
fn validation_lists_every_problem() {
    let text = "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nomitStages: [Received]\nrules:\n\
                - level: Everything\n- level: Metadata\n  resources: [{group: \"*\"}]\n\
                - level: None\n  nonResourceURLs: [\"/a*b\", healthz]\n\
                - level: None\n  namespaces: [x]\n  nonResourceURLs: [\"/x\"]\n\
                - level: None\n  resources: [{group: \"\", resourceNames: [a]}]\n- {}\n";
    let Err(PolicyError::Invalid { problems, .. }) = parse(text, "p.yaml") else {
        panic!("policy should be invalid");
    };
    let all = problems.join("\n");
    for needle in [
        "removed in Kubernetes 1.24",
        "`omitStages[0]` \"Received\"",
        "`rules[0].level` \"Everything\"",
        "`rules[1].resources[0].group` \"*\"",
        "`rules[2].nonResourceURLs[0]`",
        "`rules[2].nonResourceURLs[1]` \"healthz\" must begin with '/'",
        "`rules[3]`: rules cannot apply to both",
        "`rules[4].resources[0].resourceNames` requires at least one resource",
        "`rules[5].level` is required",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert_eq!(problems.len(), 9, "{all}");
}

#[test]
fn zero_rules_and_decode_errors_are_refused() {
    let e = parse(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n",
        "p.yaml",
    )
    .expect_err("0 rules");
    assert!(e.to_string().contains("must not be empty"), "{e}");
    let e = parse(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: [x\n",
        "p.yaml",
    )
    .expect_err("bad yaml");
    assert!(
        matches!(e, PolicyError::Decode { line: Some(_), .. }),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("p.yaml:"), "{e}");
}

#[test]
fn unknown_fields_are_warnings_like_the_lenient_decode() {
    let p = policy("rules:\n- level: Metadata\n  resource: [{group: \"\"}]\n");
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(
        p.warnings[0].contains("rules[0].resource"),
        "{:?}",
        p.warnings
    );
    // Lenient: the misspelt field is ignored, so the rule matches everything.
    assert_eq!(level(&p, &url("get", "/x")), AuditLevel::Metadata);
}

// ---- coverage verdicts --------------------------------------------------------------------

fn rules(docs: &[&str]) -> RuleSet {
    let files: Vec<(String, String)> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            (
                format!("r{i}.yml"),
                format!(
                    "title: rule {i}\nid: r{i}\nlevel: high\nlogsource: {{product: kubernetes, \
                     service: audit}}\n{d}\n"
                ),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    match RuleSet::from_texts(&refs, &[], false) {
        Ok((s, _)) => s,
        Err(e) => panic!("rules failed to load: {e:?}"),
    }
}

const EXEC: &str = "detection:\n  sel:\n    verb: create\n    objectRef.resource: pods\n    \
                    objectRef.subresource: exec\n  condition: sel";
const PRIV: &str = "detection:\n  sel:\n    verb: create\n    objectRef.resource: pods\n    \
                    requestObject.spec.containers.securityContext.privileged: 'true'\n  \
                    condition: sel";
const ANY_SECRET: &str = "detection:\n  sel:\n    objectRef.resource: secrets\n  condition: sel";

#[test]
fn verdicts_covered_blind_for_body_and_stage() {
    let set = rules(&[EXEC, PRIV]);
    let all = check(&policy("rules:\n- level: RequestResponse\n"), &set);
    assert_eq!(all.count(Verdict::Covered), 2, "{}", all.render_text());

    // Metadata everywhere: the exec rule is fine, the privileged-pod rule lacks the body.
    let meta = check(&policy("rules:\n- level: Metadata\n"), &set);
    assert_eq!(meta.get("r0").map(|r| r.verdict), Some(Verdict::Covered));
    let r1 = meta.get("r1").expect("r1");
    assert_eq!(
        (r1.verdict, r1.needs),
        (Verdict::Blind, AuditLevel::Request)
    );
    assert_eq!(r1.blind_spots[0].gap, Gap::NoBody);
    assert_eq!(meta.blind_at_or_above(Level::High).len(), 1);
    assert_eq!(meta.blind_at_or_above(Level::Critical).len(), 0);

    // Default stages are ResponseComplete|Panic: omitting both blinds every rule.
    let stages = check(
        &policy("omitStages: [ResponseComplete, Panic]\nrules:\n- level: RequestResponse\n"),
        &set,
    );
    let r0 = stages.get("r0").expect("r0");
    assert_eq!(r0.verdict, Verdict::Blind, "{}", stages.render_text());
    assert_eq!(r0.blind_spots[0].gap, Gap::StageOmitted);
    assert_eq!(
        r0.blind_spots[0].omitted_stages,
        vec!["ResponseComplete", "Panic"]
    );
    // Omitting only one of them leaves the other: still covered.
    let one = check(
        &policy("omitStages: [Panic]\nrules:\n- level: Metadata\n"),
        &set,
    );
    assert_eq!(one.get("r0").map(|r| r.verdict), Some(Verdict::Covered));
}

#[test]
fn user_specific_none_before_catch_all_is_partial_and_names_the_user() {
    let set = rules(&[ANY_SECRET]);
    let p = policy(
        "rules:\n- level: None\n  users: [system:kube-controller-manager]\n\
         - level: None\n  userGroups: [system:nodes]\n  verbs: [get]\n- level: Metadata\n",
    );
    let rep = check(&p, &set);
    let r = rep.get("r0").expect("r0");
    assert_eq!(r.verdict, Verdict::Partial, "{}", rep.render_text());
    let who: Vec<&str> = r.blind_spots.iter().map(|b| b.principal.as_str()).collect();
    assert_eq!(
        who,
        vec!["user system:kube-controller-manager", "group system:nodes"]
    );
    assert_eq!(r.blind_spots[0].policy_rule, Some(1));
    assert_eq!(r.blind_spots[1].verbs, vec!["get"]);
    let text = rep.render_text();
    assert!(
        text.contains("user system:kube-controller-manager: not logged"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&rep.render_json()).expect("json");
    assert_eq!(json["rules"][0]["verdict"], "partial");
    assert_eq!(
        json["rules"][0]["blind_spots"][1]["principal"],
        "group system:nodes"
    );
}

#[test]
fn namespace_carve_out_is_partial_and_everyone_none_is_blind() {
    let set = rules(&[ANY_SECRET]);
    let ns = check(
        &policy("rules:\n- level: None\n  namespaces: [kube-system]\n- level: Metadata\n"),
        &set,
    );
    let r = ns.get("r0").expect("r0");
    assert_eq!(r.verdict, Verdict::Partial);
    assert_eq!(r.blind_spots[0].namespaces, vec!["kube-system"]);
    // A rule that names its namespaces is only checked there.
    let scoped = rules(&[
        "detection:\n  sel:\n    objectRef.resource: secrets\n    objectRef.namespace: prod\n  \
         condition: sel",
    ]);
    let rep = check(
        &policy("rules:\n- level: None\n  namespaces: [kube-system]\n- level: Metadata\n"),
        &scoped,
    );
    assert_eq!(rep.get("r0").map(|r| r.verdict), Some(Verdict::Covered));
    // Secrets at None for everyone: blind.
    let none = check(
        &policy(
            "rules:\n- level: None\n  resources: [{group: \"\", resources: [secrets]}]\n\
             - level: RequestResponse\n",
        ),
        &set,
    );
    assert_eq!(none.get("r0").map(|r| r.verdict), Some(Verdict::Blind));
}

#[test]
fn subresource_rules_need_the_subresource_pattern() {
    let set = rules(&[EXEC]);
    // "pods" alone does not log pods/exec; the catch-all is None.
    let rep = check(
        &policy(
            "rules:\n- level: RequestResponse\n  resources: [{group: \"\", resources: [pods]}]\n",
        ),
        &set,
    );
    assert_eq!(rep.get("r0").map(|r| r.verdict), Some(Verdict::Blind));
    let rep = check(
        &policy(
            "rules:\n- level: Metadata\n  resources: [{group: \"\", resources: [\"*/exec\"]}]\n",
        ),
        &set,
    );
    assert_eq!(rep.get("r0").map(|r| r.verdict), Some(Verdict::Covered));
}
