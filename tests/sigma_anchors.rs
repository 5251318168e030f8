//! SigmaHQ's `rules/application/kubernetes/audit` rules (copied unchanged to
//! ../shared/anchors/sigma) must load as they are and fire on a matching event but not on a
//! near miss. The related cloud rules (GKE/AKS/EKS logsources) must be skipped with a
//! warning, not fail. Skips with a message when ../shared is absent.

use std::path::PathBuf;

use audithawk::model::AuditEvent;
use audithawk::rules::lint::{lint, LintOptions};
use audithawk::rules::{LoadOptions, RuleSet};

fn anchors() -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/anchors/sigma");
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!(
            "SKIP: {} not found; SigmaHQ anchor tests not run",
            d.display()
        );
        None
    }
}

/// Builds an event: `verb`, `resource`, `sub`, `group`, `ns` plus extra JSON members.
fn ev(verb: &str, resource: &str, sub: &str, group: &str, ns: &str, extra: &str) -> String {
    let mut o = format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"0b1c","stage":"ResponseComplete","requestURI":"/x","verb":"{verb}","user":{{"username":"mallory","groups":["system:authenticated"]}},"sourceIPs":["10.0.0.9"],"userAgent":"kubectl/v1.30.0","objectRef":{{"resource":"{resource}","namespace":"{ns}","name":"n","apiGroup":"{group}","apiVersion":"v1""#
    );
    if !sub.is_empty() {
        o.push_str(&format!(r#","subresource":"{sub}""#));
    }
    o.push('}');
    if !extra.is_empty() {
        o.push(',');
        o.push_str(extra);
    }
    if !extra.contains("responseStatus") {
        o.push_str(r#","responseStatus":{"metadata":{},"code":200}"#);
    }
    o.push('}');
    o
}

const HOSTPATH: &str = r#""requestObject":{"kind":"Pod","spec":{"containers":[{"name":"c","image":"alpine"}],"volumes":[{"name":"root","hostPath":{"path":"/","type":""}}]}}"#;
const EMPTYDIR: &str = r#""requestObject":{"kind":"Pod","spec":{"containers":[{"name":"c","image":"alpine"}],"volumes":[{"name":"tmp","emptyDir":{}}]}}"#;
const CAPS: &str = r#""requestObject":{"kind":"Pod","spec":{"containers":[{"name":"c","image":"alpine","securityContext":{"capabilities":{"add":["SYS_ADMIN"]}}}]}}"#;
const NOCAPS: &str = r#""requestObject":{"kind":"Pod","spec":{"containers":[{"name":"c","image":"alpine","securityContext":{"runAsNonRoot":true}}]}}"#;

/// (file, positive event, near-miss event)
fn cases() -> Vec<(&'static str, String, String)> {
    let adm = "admissionregistration.k8s.io";
    let rbac = "rbac.authorization.k8s.io";
    vec![
        (
            "kubernetes_audit_change_admission_controller.yml",
            ev("create", "mutatingwebhookconfigurations", "", adm, "", ""),
            ev("get", "mutatingwebhookconfigurations", "", adm, "", ""),
        ),
        (
            "kubernetes_audit_cronjob_modification.yml",
            ev("delete", "cronjobs", "", "batch", "default", ""),
            ev("delete", "cronjobs", "", "apps", "default", ""),
        ),
        (
            "kubernetes_audit_deployment_deleted.yml",
            ev("delete", "deployments", "", "apps", "default", ""),
            ev("delete", "replicasets", "", "apps", "default", ""),
        ),
        (
            "kubernetes_audit_events_deleted.yml",
            ev("delete", "events", "", "", "default", ""),
            ev("list", "events", "", "", "default", ""),
        ),
        (
            "kubernetes_audit_exec_into_container.yml",
            ev("create", "pods", "exec", "", "default", ""),
            ev("create", "pods", "attach", "", "default", ""),
        ),
        (
            "kubernetes_audit_hostpath_mount.yml",
            ev("create", "pods", "", "", "default", HOSTPATH),
            ev("create", "pods", "", "", "default", EMPTYDIR),
        ),
        (
            "kubernetes_audit_pod_in_system_namespace.yml",
            ev("create", "pods", "", "", "kube-system", ""),
            ev("create", "pods", "", "", "default", ""),
        ),
        (
            "kubernetes_audit_privileged_pod_creation.yml",
            ev("create", "pods", "", "", "default", CAPS),
            ev("create", "pods", "", "", "default", NOCAPS),
        ),
        (
            "kubernetes_audit_rbac_permisions_listing.yml",
            ev(
                "create",
                "selfsubjectrulesreviews",
                "",
                "authorization.k8s.io",
                "",
                "",
            ),
            ev(
                "create",
                "selfsubjectaccessreviews",
                "",
                "authorization.k8s.io",
                "",
                "",
            ),
        ),
        (
            "kubernetes_audit_rolebinding_modification.yml",
            ev("patch", "clusterrolebindings", "", rbac, "", ""),
            ev("get", "clusterrolebindings", "", rbac, "", ""),
        ),
        (
            "kubernetes_audit_secrets_enumeration.yml",
            ev("list", "secrets", "", "", "default", ""),
            ev("get", "secrets", "", "", "default", ""),
        ),
        (
            "kubernetes_audit_secrets_modified_or_deleted.yml",
            ev("update", "secrets", "", "", "default", ""),
            ev("watch", "secrets", "", "", "default", ""),
        ),
        (
            "kubernetes_audit_serviceaccount_creation.yml",
            ev("create", "serviceaccounts", "", "", "default", ""),
            ev("delete", "serviceaccounts", "", "", "default", ""),
        ),
        (
            "kubernetes_audit_sidecar_injection.yml",
            ev("patch", "deployments", "", "apps", "default", ""),
            ev("update", "deployments", "", "apps", "default", ""),
        ),
        (
            "kubernetes_audit_unauthorized_unauthenticated_actions.yml",
            ev(
                "get",
                "secrets",
                "",
                "",
                "default",
                r#""responseStatus":{"metadata":{},"status":"Failure","reason":"Forbidden","code":403}"#,
            ),
            ev(
                "get",
                "secrets",
                "",
                "",
                "default",
                r#""responseStatus":{"metadata":{},"status":"Failure","reason":"NotFound","code":404}"#,
            ),
        ),
    ]
}

/// The one SigmaHQ rule that cannot fire on a real audit event: it compares
/// `responseStatus.code` (an integer in audit.k8s.io/v1) with the string `ALLOW`.
const NEVER_MATCHES: &str = "kubernetes_audit_potential_enumeration_activity.yml";

fn anchor_files(dir: &PathBuf) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn sigmahq_kubernetes_audit_rules_load_unchanged_and_fire() {
    let Some(dir) = anchors() else { return };
    let files = anchor_files(&dir);
    assert_eq!(
        files.len(),
        16,
        "expected the 16 SigmaHQ kubernetes/audit rules"
    );
    let (set, warnings) = RuleSet::load(&LoadOptions {
        builtin: false,
        dirs: files.clone(),
        lists: vec![],
        skip_broken: false,
    })
    .unwrap_or_else(|e| panic!("SigmaHQ rules failed to load: {e:#?}"));
    assert!(warnings.is_empty(), "{warnings:#?}");
    assert_eq!(set.rules().len(), 16);

    let cases = cases();
    assert_eq!(cases.len(), 15);
    for (file, pos, neg) in &cases {
        let idx = set
            .rules()
            .iter()
            .position(|r| r.file.ends_with(file))
            .unwrap_or_else(|| panic!("{file} not loaded"));
        let mut hits = Vec::new();
        let e =
            AuditEvent::parse(pos).unwrap_or_else(|e| panic!("{file}: bad positive event: {e}"));
        set.evaluate(&e, &mut hits);
        assert!(hits.contains(&idx), "{file} did not fire on {pos}");
        hits.clear();
        let e =
            AuditEvent::parse(neg).unwrap_or_else(|e| panic!("{file}: bad near-miss event: {e}"));
        set.evaluate(&e, &mut hits);
        assert!(!hits.contains(&idx), "{file} fired on near miss {neg}");
        // Index and brute force agree on these too.
        let mut all = Vec::new();
        set.evaluate_all(&e, &mut all);
        assert_eq!(hits, all, "{file}");
    }

    // The enumeration rule loads, and lint says why it can never fire; it must not fire on
    // an event whose URI does contain a shell path.
    let idx = set
        .rules()
        .iter()
        .position(|r| r.file.ends_with(NEVER_MATCHES))
        .unwrap();
    let e = ev("get", "pods", "exec", "", "default", "");
    let e = e.replace(
        "\"/x\"",
        "\"/api/v1/namespaces/default/pods/p/exec?command=%2Fbin%2Fsh\"",
    );
    let mut hits = Vec::new();
    set.evaluate(&AuditEvent::parse(&e).unwrap(), &mut hits);
    assert!(!hits.contains(&idx));
    let report = lint(&[dir.join(NEVER_MATCHES)], &LintOptions::default());
    assert!(report.errors.is_empty(), "{:#?}", report.errors);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.message.to_lowercase().contains("`allow` can never match")),
        "{:#?}",
        report.warnings
    );
}

#[test]
fn cloud_kubernetes_rules_are_skipped_not_errors() {
    let Some(dir) = anchors() else { return };
    let cloud = dir.join("cloud_k8s");
    let (set, warnings) = RuleSet::load(&LoadOptions {
        builtin: false,
        dirs: vec![cloud.clone()],
        lists: vec![],
        skip_broken: false,
    })
    .unwrap_or_else(|e| panic!("cloud rules gave errors: {e:#?}"));
    let n = anchor_files(&cloud).len();
    eprintln!(
        "cloud_k8s: {n} files, {} rules loaded, {} skipped",
        set.rules().len(),
        warnings.len()
    );
    for w in &warnings {
        eprintln!("  {w}");
    }
    assert!(n >= 15);
    assert_eq!(set.rules().len(), 0);
    assert_eq!(warnings.len(), n);
    assert!(warnings
        .iter()
        .all(|w| w.message.contains("is not kubernetes/audit") && w.line.is_some()));
}

#[test]
fn anchor_requirements_for_policy_checks() {
    let Some(dir) = anchors() else { return };
    let (set, _) = RuleSet::load(&LoadOptions {
        builtin: false,
        dirs: vec![
            dir.join("kubernetes_audit_exec_into_container.yml"),
            dir.join("kubernetes_audit_hostpath_mount.yml"),
        ],
        lists: vec![],
        skip_broken: false,
    })
    .unwrap();
    let exec = set.rules()[0].requirements();
    assert_eq!(exec.verbs, Some(vec!["create".to_string()]));
    assert_eq!(exec.resources, Some(vec!["pods/exec".to_string()]));
    assert_eq!(exec.body, audithawk::rules::BodyNeed::None);
    let hp = set.rules()[1].requirements();
    assert_eq!(hp.body, audithawk::rules::BodyNeed::Request);
}

// ---- Fixture rules in tests/fixtures/rules: loading, lists, errors, lint. ----

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rules")
        .join(p)
}

fn load_dirs(
    dirs: Vec<PathBuf>,
    lists: Vec<PathBuf>,
) -> Result<(RuleSet, Vec<audithawk::rules::RuleError>), Vec<audithawk::rules::RuleError>> {
    RuleSet::load(&LoadOptions {
        builtin: false,
        dirs,
        lists,
        skip_broken: false,
    })
}

#[test]
fn fixture_rules_load_with_lists_correlations_and_examples() {
    let (set, warnings) =
        load_dirs(vec![fixture("good")], vec![]).unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(warnings.is_empty(), "{warnings:#?}");
    assert_eq!(set.rules().len(), 3);
    assert_eq!(set.correlations().len(), 1);
    assert!(set.correlations()[0].file.ends_with("multi.yml"));
    assert_eq!(
        set.list("admins").map(|l| l.values.clone()),
        Some(vec!["alice".to_string(), "ops-*".to_string()])
    );
    let exec = set.find("exec_non_admin").expect("rule by name");
    assert_eq!(set.find("7d0c8f1e-1a2b-4c3d-8e9f-000000000001"), Some(exec));
    // `stages:` replaced the default mask (Unknown kept for stage-less samples).
    let st = set.rules()[exec].stages;
    assert_eq!(st, 2 | 4 | 16);
    let failures = audithawk::rules::examples::run(&set);
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        set.rules()[exec].meta.source,
        fixture("good/exec.yml").display().to_string()
    );
}

#[test]
fn user_list_extends_a_loaded_list() {
    let (set, _) = load_dirs(vec![fixture("good")], vec![fixture("user_lists")]).unwrap();
    assert_eq!(
        set.list("admins").unwrap().values,
        vec!["alice", "ops-*", "mallory"]
    );
    // mallory is now an admin: the exec rule's positive example no longer fires.
    let failures = audithawk::rules::examples::run(&set);
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert_eq!(failures[0].kind, "positive");
    assert!(failures[0].file.ends_with("exec.yml"));
}

#[test]
fn broken_rules_report_file_line_and_id() {
    let errs = load_dirs(vec![fixture("broken")], vec![]).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:#?}");
    let find = |f: &str| {
        errs.iter()
            .find(|e| e.file.ends_with(f))
            .unwrap_or_else(|| panic!("no error for {f}: {errs:#?}"))
    };
    let yaml = find("bad_yaml.yml");
    assert!(yaml.message.starts_with("invalid YAML"), "{yaml}");
    assert!(matches!(yaml.line, Some(6..=8)), "{yaml:?}");
    let m = find("unknown_modifier.yml");
    assert_eq!(m.line, Some(8), "{m:?}");
    assert_eq!(
        m.rule_id.as_deref(),
        Some("7d0c8f1e-1a2b-4c3d-8e9f-0000000000b2")
    );
    assert!(
        m.message.contains("selection `sel`") && m.message.contains("unknown modifier `containz`"),
        "{m}"
    );
    let u = find("undefined_selection.yml");
    let text = u.to_string();
    assert!(
        text.contains("undefined_selection.yml:8 (rule 7d0c8f1e-1a2b-4c3d-8e9f-0000000000b3)"),
        "{text}"
    );
    assert!(text.contains("undefined selection `filter`"), "{text}");

    // With skip_broken the good rules still load and the broken ones become warnings.
    let (set, warnings) = RuleSet::load(&LoadOptions {
        builtin: false,
        dirs: vec![fixture("good"), fixture("broken")],
        lists: vec![],
        skip_broken: true,
    })
    .unwrap();
    assert_eq!(set.rules().len(), 3);
    assert_eq!(warnings.len(), 3);
}

#[test]
fn lint_reports_suspect_rules() {
    let r = lint(
        &[fixture("lint"), fixture("broken/undefined_selection.yml")],
        &LintOptions::default(),
    );
    assert_eq!(r.rules, 2);
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    assert!(r.errors[0].message.contains("undefined selection"));
    let has = |needle: &str, line: Option<usize>| {
        r.warnings
            .iter()
            .any(|w| w.message.contains(needle) && (line.is_none() || w.line == line))
    };
    for w in &r.warnings {
        eprintln!("{w}");
    }
    assert!(has(
        "field `Image` is not in the audit Event schema",
        Some(8)
    ));
    assert!(has("selection `unused` is never used", Some(9)));
    assert!(has("rule has no `tags`", None));
    assert!(has("rule has no `title`", None));
    assert!(has("rule has no `level`", None));
    assert!(has(
        "field `objectRef.namespac` is not part of `objectRef`",
        Some(17)
    ));
    assert!(has("not kubernetes/audit", Some(22)));
}

#[test]
fn builtin_detections_load_and_pass_their_examples() {
    let (set, warnings) = RuleSet::load(&LoadOptions {
        builtin: true,
        ..LoadOptions::default()
    })
    .unwrap_or_else(|e| panic!("built-in detections have errors: {e:#?}"));
    eprintln!(
        "{} embedded files, {} rules, {} correlations, {} lists, {} warnings",
        audithawk::rules::builtin_files().len(),
        set.rules().len(),
        set.correlations().len(),
        set.lists().len(),
        warnings.len()
    );
    let failures = audithawk::rules::examples::run(&set);
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(set.rules().iter().all(|r| r.meta.source == "builtin"));
}
