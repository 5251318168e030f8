//! The shipped audit policies (policies/*.yaml) checked against the shipped detections
//! (the built-in rule set): what docs/policies.md promises about each is what these assert.

use std::collections::BTreeSet;
use std::path::Path;

use audithawk::model::Level;
use audithawk::policy::{self, AuditLevel, CheckReport, Verdict};
use audithawk::rules::{LoadOptions, RuleSet};

fn builtin() -> RuleSet {
    // skip_broken: a detection that fails to compile is the detections suite's failure, not
    // this one's; the policy verdicts are about the rules that load.
    let (set, warnings) = RuleSet::load(&LoadOptions {
        builtin: true,
        skip_broken: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("built-in rules failed to load: {e:?}"));
    if !warnings.is_empty() {
        eprintln!("note: {} built-in rule problems skipped", warnings.len());
    }
    assert!(
        set.rules().len() >= 20,
        "expected the built-in detections, got {} rules",
        set.rules().len()
    );
    set
}

fn check(name: &str) -> (policy::Policy, CheckReport) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(name);
    let p = policy::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.warnings.is_empty(), "{name}: {:?}", p.warnings);
    let report = policy::check(&p, &builtin());
    (p, report)
}

/// The noise carve-outs of balanced.yaml (rules 1-5: health probes, kube-proxy watches,
/// kubelet heartbeats, leader-election leases, events). Rules open on resources (anonymous
/// access, impersonation, forbidden requests) lose exactly these requests.
const BALANCED_CARVE_OUTS: [usize; 5] = [1, 2, 3, 4, 5];
/// "ConfigMap created or changed with credential-like content" reads ConfigMap bodies,
/// which balanced.yaml deliberately keeps at Metadata (they hold credentials too often).
const CONFIGMAP_BODY_RULE: &str = "7d392bc3-e9b4-48cb-a66e-2ecc55b4c543";

#[test]
fn balanced_covers_every_high_and_critical_rule_except_noise_carve_outs() {
    let (_, rep) = check("balanced.yaml");
    println!("{}", rep.render_text());
    assert!(
        rep.blind_at_or_above(Level::High).is_empty(),
        "{}",
        rep.render_text()
    );
    for r in &rep.rules {
        for b in &r.blind_spots {
            let rule = b.policy_rule.unwrap_or(0);
            let documented =
                BALANCED_CARVE_OUTS.contains(&rule) || (r.id == CONFIGMAP_BODY_RULE && rule == 6);
            assert!(
                documented,
                "{} ({}): undocumented blind spot via policy rule {rule}: {b:?}",
                r.title, r.id
            );
        }
        if r.verdict == Verdict::Blind {
            assert_eq!(r.id, CONFIGMAP_BODY_RULE, "{} is blind", r.title);
        }
    }
    // Every rule that reads bodies and is not the ConfigMap one is fully covered.
    for r in rep.rules.iter().filter(|r| r.needs >= AuditLevel::Request) {
        if r.id != CONFIGMAP_BODY_RULE {
            assert_eq!(r.verdict, Verdict::Covered, "{}", r.title);
        }
    }
}

#[test]
fn minimal_is_blind_to_body_reading_rules_and_sees_the_rest_of_high() {
    let (_, rep) = check("minimal.yaml");
    println!("{}", rep.render_text());
    let body: BTreeSet<&str> = rep
        .rules
        .iter()
        .filter(|r| r.needs >= AuditLevel::Request)
        .map(|r| r.id.as_str())
        .collect();
    assert!(!body.is_empty());
    for r in rep.rules.iter().filter(|r| body.contains(r.id.as_str())) {
        assert_eq!(r.verdict, Verdict::Blind, "{} reads bodies", r.title);
    }
    // High/critical rules that only need metadata are not blind: writes, secret access,
    // exec and node proxy are all logged.
    for r in rep
        .rules
        .iter()
        .filter(|r| r.level >= Level::High && r.needs == AuditLevel::Metadata)
    {
        assert_ne!(r.verdict, Verdict::Blind, "{}", r.title);
    }
    // Therefore --fail-on-blind fails for minimal: it lists the body readers at high+.
    let blind: BTreeSet<&str> = rep
        .blind_at_or_above(Level::High)
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert!(!blind.is_empty());
    assert!(blind.iter().all(|id| body.contains(id)), "{blind:?}");
}

#[test]
fn forensic_covers_everything() {
    let (_, rep) = check("forensic.yaml");
    assert_eq!(
        rep.count(Verdict::Covered),
        rep.rules.len(),
        "{}",
        rep.render_text()
    );
}

#[test]
fn no_shipped_policy_logs_secret_bodies() {
    use audithawk::policy::{Request, Target};
    for name in ["balanced.yaml", "minimal.yaml", "forensic.yaml"] {
        let (p, _) = check(name);
        for (verb, group, resource, sub) in [
            ("get", "", "secrets", ""),
            ("list", "", "secrets", ""),
            ("create", "", "secrets", ""),
            ("patch", "", "secrets", ""),
            ("create", "authentication.k8s.io", "tokenreviews", ""),
            ("create", "", "serviceaccounts", "token"),
        ] {
            for user in [
                "alice",
                "system:anonymous",
                "system:kube-controller-manager",
            ] {
                let d = p.evaluate(&Request {
                    user: user.into(),
                    groups: vec!["system:authenticated".into()],
                    verb: verb.into(),
                    target: Target::Resource {
                        api_group: group.into(),
                        resource: resource.into(),
                        subresource: sub.into(),
                        namespace: "default".into(),
                        name: "x".into(),
                    },
                });
                // The response of TokenRequest is the token; secrets/TokenReview bodies are
                // credentials in both directions.
                let max = if sub == "token" {
                    AuditLevel::Request
                } else {
                    AuditLevel::Metadata
                };
                assert!(
                    d.level <= max,
                    "{name}: {verb} {resource}/{sub} by {user}: {d:?}"
                );
            }
        }
    }
}

#[test]
fn run_check_exit_status_follows_fail_on_blind() {
    let rules = builtin();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let minimal = policy::run_check(&dir.join("minimal.yaml"), &rules, false, true).expect("check");
    assert_eq!(minimal.exit_code, 1);
    assert!(minimal.output.contains("FAIL: "), "{}", minimal.output);
    assert!(minimal.output.contains("Binding to cluster-admin created"));
    // Without the flag the same report exits 0.
    let lax = policy::run_check(&dir.join("minimal.yaml"), &rules, false, false).expect("check");
    assert_eq!(lax.exit_code, 0);
    assert!(!lax.output.contains("FAIL: "));
    let balanced =
        policy::run_check(&dir.join("balanced.yaml"), &rules, true, true).expect("check");
    assert_eq!(balanced.exit_code, 0);
    let v: serde_json::Value = serde_json::from_str(&balanced.output).expect("json output");
    assert_eq!(
        v["rules"].as_array().map(Vec::len),
        Some(rules.rules().len())
    );
    // A missing file is an error naming it.
    let e = policy::run_check(&dir.join("nope.yaml"), &rules, false, true).expect_err("missing");
    assert!(e.to_string().contains("nope.yaml"), "{e}");
}

/// Volume of each shipped policy, measured on the traffic generator's stream. The generator
/// logs every request (RequestReceived included, bodies on writes), so applying a policy to
/// its output shows what the policy keeps. Bodies the generator never writes (read responses)
/// are not added for forensic.yaml, so forensic's bytes are a lower bound.
/// `AUDITHAWK_VOLUME_EVENTS=1000000 cargo test --release --test policy volume -- --nocapture`
/// prints the table quoted in docs/policies.md.
#[test]
fn volume_on_generated_traffic_orders_minimal_balanced_forensic() {
    use audithawk::generate::{generate, GenConfig, Limit};
    use audithawk::model::Stage;
    use audithawk::policy::{Request, Target};

    let n: u64 = std::env::var("AUDITHAWK_VOLUME_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let cfg = GenConfig {
        limit: Limit::Events(n),
        ..GenConfig::default()
    };
    let mut log = Vec::new();
    let stats = generate(&cfg, &mut log).expect("generate");
    let text = String::from_utf8(log).expect("utf8");
    let policies: Vec<(&str, policy::Policy)> = ["minimal.yaml", "balanced.yaml", "forensic.yaml"]
        .into_iter()
        .map(|f| (f, check(f).0))
        .collect();
    // (events kept, bytes kept) per policy.
    let mut kept = vec![(0u64, 0u64); policies.len()];
    let (mut total_events, mut total_bytes) = (0u64, 0u64);
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        total_events += 1;
        total_bytes += line.len() as u64 + 1;
        let s = |p: &str| {
            v.pointer(p)
                .and_then(|x| x.as_str())
                .unwrap_or("")
                .to_string()
        };
        let target = match v.pointer("/objectRef/resource").and_then(|x| x.as_str()) {
            Some(r) => Target::Resource {
                api_group: s("/objectRef/apiGroup"),
                resource: r.to_string(),
                subresource: s("/objectRef/subresource"),
                namespace: s("/objectRef/namespace"),
                name: s("/objectRef/name"),
            },
            None => Target::NonResource {
                path: s("/requestURI").split('?').next().unwrap_or("").to_string(),
            },
        };
        let req = Request {
            user: s("/user/username"),
            groups: v
                .pointer("/user/groups")
                .and_then(|g| g.as_array())
                .map(|g| {
                    g.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            verb: s("/verb"),
            target,
        };
        let stage = Stage::from_name(&s("/stage"));
        let body_len = |k: &str| {
            v.get(k)
                .map_or(0, |b| b.to_string().len() as u64 + k.len() as u64 + 4)
        };
        for (i, (_, p)) in policies.iter().enumerate() {
            let d = p.evaluate(&req);
            if d.level == AuditLevel::None || d.omit_stages & stage.bit() != 0 {
                continue;
            }
            let mut bytes = line.len() as u64 + 1;
            if d.level < AuditLevel::Request {
                bytes = bytes.saturating_sub(body_len("requestObject"));
            }
            if d.level < AuditLevel::RequestResponse {
                bytes = bytes.saturating_sub(body_len("responseObject"));
            }
            kept[i].0 += 1;
            kept[i].1 += bytes;
        }
    }
    assert_eq!(total_events, stats.events);
    println!(
        "generated: {total_events} events, {:.1} MiB ({} RequestReceived)",
        total_bytes as f64 / 1048576.0,
        stats.request_received
    );
    for ((name, _), (e, b)) in policies.iter().zip(&kept) {
        println!(
            "{name:<14} {:>5.1}% of events, {:>5.1}% of bytes, {:>6.0} B/event",
            100.0 * *e as f64 / total_events as f64,
            100.0 * *b as f64 / total_bytes as f64,
            *b as f64 / (*e).max(1) as f64
        );
    }
    let (min, bal, fore) = (kept[0], kept[1], kept[2]);
    assert!(min.0 < bal.0 && bal.0 < fore.0, "events: {kept:?}");
    assert!(min.1 < bal.1 && bal.1 <= fore.1, "bytes: {kept:?}");
    // Every shipped policy drops RequestReceived: none keeps more than the other stages.
    assert!(fore.0 <= total_events - stats.request_received, "{kept:?}");
}
