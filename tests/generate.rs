//! Black-box tests of the audit traffic generator: the output is byte-for-byte
//! reproducible, parses as audit events, looks like the API server's log backend, has the
//! intended size and mix, and the injected scenarios contain what they promise.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use audithawk::generate::{
    generate, parse_duration, GenArgs, GenConfig, GenError, Injection, Limit, Scenario,
};
use audithawk::model::{decode_value, AuditEvent, DecodeLimits, Location, Stage};
use chrono::{TimeZone, Utc};
use clap::Parser;
use serde_json::Value;

fn gen(cfg: &GenConfig) -> String {
    let mut out = Vec::new();
    let stats = generate(cfg, &mut out).expect("generation succeeds");
    assert_eq!(stats.bytes, out.len() as u64);
    String::from_utf8(out).expect("output is UTF-8")
}

fn small(events: u64, seed: u64) -> GenConfig {
    GenConfig {
        seed,
        limit: Limit::Events(events),
        ..GenConfig::default()
    }
}

/// Decodes every line through the same path `scan` and `tail` use; panics naming the
/// line on any failure.
fn decode_all(text: &str) -> Vec<AuditEvent<'_>> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut n = 0;
        decode_value(
            line,
            &Location::line(i as u64 + 1),
            DecodeLimits::default(),
            &mut |r| match r {
                Ok(ev) => {
                    n += 1;
                    events.push(ev);
                }
                Err(e) => panic!("line {}: {e}", i + 1),
            },
        )
        .unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
        assert_eq!(n, 1, "line {} holds exactly one event", i + 1);
    }
    events
}

fn raw<'e>(ev: &'e AuditEvent<'_>) -> &'e Value {
    ev.raw.value()
}

fn code(ev: &AuditEvent<'_>) -> Option<i64> {
    ev.fields.response_status.as_ref().and_then(|s| s.code)
}

fn ns<'e>(ev: &'e AuditEvent<'_>) -> &'e str {
    ev.fields
        .object_ref
        .as_ref()
        .and_then(|o| o.namespace.as_deref())
        .unwrap_or("")
}

fn sub<'e>(ev: &'e AuditEvent<'_>) -> &'e str {
    ev.fields
        .object_ref
        .as_ref()
        .and_then(|o| o.subresource.as_deref())
        .unwrap_or("")
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let a = gen(&small(5_000, 7));
    let b = gen(&small(5_000, 7));
    assert!(a == b, "two runs with seed 7 differ");
    let c = gen(&small(5_000, 8));
    assert_ne!(a, c);
}

#[test]
fn every_line_is_an_audit_event_in_log_backend_format() {
    let text = gen(&small(20_000, 3));
    let events = decode_all(&text);
    assert!(events.len() >= 20_000);
    let micro = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$").unwrap();
    // Field order of the Go struct, as the log backend writes it.
    let order = [
        "\"kind\":",
        "\"apiVersion\":",
        "\"level\":",
        "\"auditID\":",
        "\"stage\":",
        "\"requestURI\":",
        "\"verb\":",
        "\"user\":",
        "\"sourceIPs\":",
        "\"userAgent\":",
        "\"objectRef\":",
        "\"responseStatus\":",
        "\"requestObject\":",
        "\"responseObject\":",
        "\"requestReceivedTimestamp\":",
        "\"stageTimestamp\":",
        "\"annotations\":",
    ];
    for (line, ev) in text.lines().zip(&events) {
        assert!(
            line.starts_with(r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":""#),
            "{line}"
        );
        // Top-level keys only: find each key outside nested bodies by scanning the
        // positions in order; nested objects use the same names rarely (`kind`), so
        // search from the previous match.
        let mut pos = 0;
        for key in order {
            if raw(ev)
                .get(key.trim_matches(|c| c == '"' || c == ':'))
                .is_some()
            {
                let at = line[pos..]
                    .find(key)
                    .unwrap_or_else(|| panic!("{key} out of order in {line}"));
                pos += at + key.len();
            }
        }
        for ts in [
            ev.fields.request_received_timestamp.as_deref(),
            ev.fields.stage_timestamp.as_deref(),
        ] {
            let ts = ts.expect("both timestamps present");
            assert!(micro.is_match(ts), "{ts}");
        }
        assert!(ev.event_time().is_some());
        let level = ev.fields.level.as_deref().unwrap_or("");
        assert!(["Metadata", "Request", "RequestResponse"].contains(&level));
        if ev.stage() == Stage::RequestReceived {
            assert!(ev.fields.response_status.is_none(), "{line}");
            assert!(ev.fields.annotations.is_none(), "{line}");
            assert!(ev.fields.request_object.is_none(), "{line}");
            assert_eq!(
                ev.fields.request_received_timestamp,
                ev.fields.stage_timestamp
            );
        } else {
            assert!(code(ev).is_some(), "{line}");
            assert!(
                ev.annotation("authorization.k8s.io/decision").is_some() || code(ev) == Some(401)
            );
        }
        if level == "Metadata" {
            assert!(ev.fields.request_object.is_none() && ev.fields.response_object.is_none());
        }
        if ev.resource() == "secrets" {
            assert!(ev.fields.request_object.is_none() && ev.fields.response_object.is_none());
        }
    }
}

#[test]
fn go_escaping_and_no_raw_html_characters() {
    let text = gen(&small(10_000, 4));
    assert!(text.contains(r"\u0026"), "watch URIs carry an escaped &");
    for (i, line) in text.lines().enumerate() {
        assert!(
            !line.contains(['&', '<', '>']),
            "line {} has an unescaped HTML character",
            i + 1
        );
    }
    // And the escapes decode back to the characters.
    let events = decode_all(&text);
    assert!(events.iter().any(|e| e
        .fields
        .request_uri
        .as_deref()
        .is_some_and(|u| u.contains("&resourceVersion="))));
}

#[test]
fn stage_and_verb_mix_looks_like_a_busy_cluster() {
    let text = gen(&small(40_000, 5));
    let events = decode_all(&text);
    let mut stages: BTreeMap<Stage, usize> = BTreeMap::new();
    let mut verbs: BTreeMap<String, usize> = BTreeMap::new();
    let mut codes: BTreeSet<i64> = BTreeSet::new();
    let mut users: BTreeSet<String> = BTreeSet::new();
    let mut bodies = 0;
    for e in &events {
        *stages.entry(e.stage()).or_default() += 1;
        if e.stage() == Stage::ResponseComplete {
            *verbs.entry(e.verb().to_string()).or_default() += 1;
            codes.extend(code(e));
            if e.fields.request_object.is_some() {
                bodies += 1;
            }
        }
        users.insert(e.username().to_string());
    }
    let n = events.len() as f64;
    let rr = stages[&Stage::RequestReceived] as f64;
    let rc = stages[&Stage::ResponseComplete] as f64;
    assert!(
        (0.4..0.55).contains(&(rr / n)),
        "RequestReceived share {}",
        rr / n
    );
    assert!(
        (0.4..0.55).contains(&(rc / n)),
        "ResponseComplete share {}",
        rc / n
    );
    assert!(
        stages.get(&Stage::ResponseStarted).copied().unwrap_or(0) > 500,
        "{stages:?}"
    );
    for v in [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ] {
        assert!(
            verbs.get(v).copied().unwrap_or(0) > 0,
            "no {v} in {verbs:?}"
        );
    }
    for c in [200, 201, 404] {
        assert!(codes.contains(&c), "no {c} in {codes:?}");
    }
    assert!(codes.contains(&403) || codes.contains(&409), "{codes:?}");
    assert!(bodies as f64 > rc * 0.1, "only {bodies} request bodies");
    for who in [
        "system:kube-controller-manager",
        "system:kube-scheduler",
        "system:anonymous",
        "system:serviceaccount:ingress-nginx:ingress-nginx",
        "system:serviceaccount:argocd:argocd-application-controller",
        "system:serviceaccount:kube-system:replicaset-controller",
    ] {
        assert!(users.contains(who), "{who} never acts");
    }
    assert!(users.iter().any(|u| u.starts_with("system:node:")));
    assert!(users.iter().any(|u| u.ends_with("@example.com")));
}

#[test]
fn request_received_and_response_complete_pair_up_in_time_order() {
    let text = gen(&small(20_000, 6));
    let events = decode_all(&text);
    let mut received: BTreeSet<&str> = BTreeSet::new();
    let mut paired = 0;
    let mut last = None;
    for e in &events {
        let t = e.event_time();
        assert!(t >= last, "lines are ordered by stageTimestamp");
        last = t;
        match e.stage() {
            Stage::RequestReceived => {
                assert!(received.insert(e.audit_id()), "auditID reused");
            }
            Stage::ResponseComplete | Stage::ResponseStarted => {
                assert!(
                    received.contains(e.audit_id()),
                    "{} has no RequestReceived",
                    e.audit_id()
                );
                paired += 1;
            }
            _ => panic!("unexpected stage"),
        }
    }
    assert!(paired > 9_000);
}

#[test]
fn average_event_size_is_about_one_and_a_half_kilobytes() {
    let mut out = Vec::new();
    let stats = generate(&small(100_000, 1), &mut out).unwrap();
    let avg = stats.avg_bytes();
    println!(
        "average event size {avg:.0} bytes over {} events",
        stats.events
    );
    assert!((1200.0..1800.0).contains(&avg), "average {avg}");
}

#[test]
fn duration_limit_stops_in_simulated_time() {
    let cfg = GenConfig {
        limit: Limit::Duration(Duration::from_secs(120)),
        rate_per_sec: 50.0,
        ..GenConfig::default()
    };
    let text = gen(&cfg);
    let events = decode_all(&text);
    let end = cfg.start + chrono::Duration::seconds(120);
    assert!(
        events.len() > 4_000 && events.len() < 8_000,
        "{}",
        events.len()
    );
    assert!(events
        .iter()
        .all(|e| e.event_time().is_some_and(|t| t <= end)));
}

fn with_scenario(s: Scenario) -> (String, GenConfig) {
    let cfg = GenConfig {
        seed: 11,
        limit: Limit::Events(3_000),
        rate_per_sec: 20.0,
        scenarios: vec![Injection {
            scenario: s,
            at: Some(Duration::from_secs(30)),
        }],
        ..GenConfig::default()
    };
    (gen(&cfg), cfg)
}

fn complete<'a>(events: &'a [AuditEvent<'a>]) -> impl Iterator<Item = &'a AuditEvent<'a>> {
    events
        .iter()
        .filter(|e| e.stage() == Stage::ResponseComplete)
}

#[test]
fn secret_sweep_touches_many_namespaces_quickly() {
    let (text, _) = with_scenario(Scenario::SecretSweep);
    let events = decode_all(&text);
    let sweeps: Vec<_> = complete(&events)
        .filter(|e| e.resource() == "secrets" && e.verb() == "list" && code(e) == Some(200))
        .filter(|e| e.fields.user_agent.as_deref() == Some("curl/8.5.0"))
        .collect();
    let users: BTreeSet<_> = sweeps.iter().map(|e| e.username()).collect();
    assert_eq!(users.len(), 1, "one identity: {users:?}");
    let user = users.iter().next().unwrap();
    assert!(
        user.starts_with("system:serviceaccount:payments:"),
        "{user}"
    );
    let namespaces: BTreeSet<_> = sweeps
        .iter()
        .map(|e| ns(e))
        .filter(|n| !n.is_empty())
        .collect();
    assert!(namespaces.len() >= 5, "{namespaces:?}");
    let first = sweeps.first().and_then(|e| e.event_time()).unwrap();
    let last = sweeps.last().and_then(|e| e.event_time()).unwrap();
    assert!(last - first <= chrono::Duration::minutes(10));
    assert!(
        sweeps.iter().any(|e| ns(e).is_empty()),
        "a cluster-wide list too"
    );
    let gets: BTreeSet<_> = complete(&events)
        .filter(|e| e.username() == *user && e.verb() == "get" && e.resource() == "secrets")
        .filter_map(|e| e.fields.object_ref.as_ref().and_then(|o| o.name.as_deref()))
        .collect();
    assert!(gets.len() >= 3, "{gets:?}");
}

/// Each scenario produces the events that define it (a predicate per scenario).
#[test]
fn every_scenario_contains_its_defining_event() {
    type Check = fn(&AuditEvent<'_>) -> bool;
    let checks: &[(Scenario, Check)] = &[
        (Scenario::ClusterAdminBinding, |e| {
            e.resource() == "clusterrolebindings"
                && e.verb() == "create"
                && raw(e)["requestObject"]["roleRef"]["name"] == "cluster-admin"
                && raw(e)["requestObject"]["subjects"][0]["kind"] == "ServiceAccount"
                && e.fields.source_ips.first().map(|s| s.as_ref()) == Some("185.220.101.47")
        }),
        (Scenario::PrivilegedPod, |e| {
            let spec = &raw(e)["requestObject"]["spec"];
            e.resource() == "pods"
                && e.verb() == "create"
                && ns(e) == "kube-system"
                && spec["containers"][0]["securityContext"]["privileged"] == true
                && spec["hostPID"] == true
                && spec["hostNetwork"] == true
                && spec["volumes"][0]["hostPath"]["path"] == "/"
        }),
        (Scenario::ExecKubeSystem, |e| {
            sub(e) == "exec"
                && ns(e) == "kube-system"
                && e.verb() == "create"
                && e.fields
                    .request_uri
                    .as_deref()
                    .is_some_and(|u| u.contains("serviceaccount%2Ftoken") && u.contains("command="))
        }),
        (Scenario::PermissionProbe, |e| {
            e.resource() == "selfsubjectrulesreviews" && e.verb() == "create"
        }),
        (Scenario::AnonymousAccess, |e| {
            e.username() == "system:anonymous"
                && e.resource() == "pods"
                && e.verb() == "create"
                && code(e) == Some(201)
        }),
        (Scenario::TokenRequest, |e| {
            sub(e) == "token"
                && e.username() == "system:serviceaccount:ci:gitlab-deployer"
                && ns(e) == "argocd"
        }),
        (Scenario::CsrApproval, |e| {
            e.resource() == "certificatesigningrequests" && sub(e) == "approval"
        }),
        (Scenario::AdmissionWebhook, |e| {
            e.resource() == "mutatingwebhookconfigurations" && e.verb() == "create"
        }),
        (Scenario::EventsDeletion, |e| {
            e.resource() == "events" && e.verb() == "deletecollection"
        }),
        (Scenario::NodePortService, |e| {
            e.resource() == "services" && raw(e)["requestObject"]["spec"]["type"] == "NodePort"
        }),
        (Scenario::HumanDaemonSet, |e| {
            e.resource() == "daemonsets"
                && e.verb() == "create"
                && e.username().ends_with("@example.com")
        }),
        (Scenario::Impersonation, |e| {
            e.fields
                .impersonated_user
                .as_ref()
                .is_some_and(|u| u.groups.iter().any(|g| g == "system:masters"))
        }),
        (Scenario::OffensiveTool, |e| {
            e.fields
                .user_agent
                .as_deref()
                .is_some_and(|u| u.starts_with("trufflehog"))
        }),
        (Scenario::EphemeralContainer, |e| {
            sub(e) == "ephemeralcontainers"
        }),
        (Scenario::NodeProxy, |e| {
            e.resource() == "nodes"
                && sub(e) == "proxy"
                && e.fields
                    .request_uri
                    .as_deref()
                    .is_some_and(|u| u.contains("/proxy/run/"))
        }),
        (Scenario::RbacThenWorkload, |e| {
            e.resource() == "clusterroles" && raw(e)["requestObject"]["rules"][0]["verbs"][0] == "*"
        }),
        (Scenario::CorednsTamper, |e| {
            e.resource() == "configmaps"
                && e.verb() == "patch"
                && e.fields.object_ref.as_ref().and_then(|o| o.name.as_deref()) == Some("coredns")
        }),
        (Scenario::CronJobBackdoor, |e| {
            e.resource() == "cronjobs" && e.verb() == "create" && ns(e) == "kube-system"
        }),
        (Scenario::ExecReverseShell, |e| {
            sub(e) == "exec"
                && e.fields
                    .request_uri
                    .as_deref()
                    .is_some_and(|u| u.contains("%2Fdev%2Ftcp%2F"))
        }),
        (Scenario::KubectlCp, |e| {
            sub(e) == "exec"
                && e.fields
                    .request_uri
                    .as_deref()
                    .is_some_and(|u| u.contains("command=tar&command=cf&command=-&"))
        }),
        (Scenario::PortForward, |e| {
            sub(e) == "portforward"
                && e.fields.source_ips.first().map(|s| s.as_ref()) == Some("185.220.101.47")
        }),
        (Scenario::DeploymentDeletion, |e| {
            e.resource() == "deployments" && e.verb() == "delete"
        }),
        (Scenario::AwsAuthTamper, |e| {
            e.resource() == "configmaps"
                && e.fields.object_ref.as_ref().and_then(|o| o.name.as_deref()) == Some("aws-auth")
                && raw(e)["requestObject"]["data"]["mapRoles"]
                    .as_str()
                    .is_some_and(|m| m.contains("system:masters"))
        }),
        (Scenario::SecretDenialBurst, |e| {
            e.resource() == "secrets" && code(e) == Some(403)
        }),
        (Scenario::DefaultSaAdmin, |e| {
            e.resource() == "rolebindings"
                && raw(e)["requestObject"]["subjects"][0]["name"] == "default"
                && raw(e)["requestObject"]["roleRef"]["name"] == "admin"
        }),
        (Scenario::ExposedDashboard, |e| {
            e.resource() == "services"
                && ns(e) == "kubernetes-dashboard"
                && raw(e)["requestObject"]["spec"]["type"] == "LoadBalancer"
        }),
        (Scenario::ConfigMapCredentials, |e| {
            e.resource() == "configmaps"
                && raw(e)["requestObject"]["data"]["aws_secret_access_key"].is_string()
        }),
        (Scenario::SystemRoleTamper, |e| {
            e.resource() == "clusterroles"
                && e.verb() == "patch"
                && raw(e)["responseObject"]["rules"][0]["resources"][0] == "*"
        }),
        (Scenario::NamespaceAndNetpol, |e| {
            e.resource() == "networkpolicies" && e.verb() == "delete"
        }),
    ];
    let covered: BTreeSet<Scenario> = checks.iter().map(|c| c.0).collect();
    for s in Scenario::ALL {
        assert!(
            covered.contains(s) || *s == Scenario::SecretSweep,
            "{s:?} has no check"
        );
        assert!(!s.rows().is_empty());
    }
    for (s, check) in checks {
        let (text, _) = with_scenario(*s);
        let events = decode_all(&text);
        assert!(
            complete(&events).any(|e| check(e)),
            "scenario {} lacks its defining event",
            s.name()
        );
        // And benign traffic alone never contains it.
        let benign = gen(&GenConfig {
            seed: 11,
            limit: Limit::Events(3_000),
            rate_per_sec: 20.0,
            ..GenConfig::default()
        });
        assert!(
            !decode_all(&benign).iter().any(|e| check(e)),
            "benign traffic matches the {} check",
            s.name()
        );
    }
}

#[test]
fn benign_traffic_has_none_of_the_attack_markers() {
    let text = gen(&small(50_000, 9));
    for marker in [
        "185.220.101.47",
        "\"privileged\":true",
        "\"hostPID\":true",
        "curl/8.5.0",
        "trufflehog",
        "system:masters",
        "node-debugger",
        "\"name\":\"cluster-admin\"",
    ] {
        assert!(!text.contains(marker), "benign traffic contains {marker}");
    }
}

#[test]
fn scenarios_complete_even_past_the_event_limit() {
    let cfg = GenConfig {
        limit: Limit::Events(500),
        rate_per_sec: 100.0,
        scenarios: vec![Injection {
            scenario: Scenario::PermissionProbe,
            at: Some(Duration::from_secs(3600)),
        }],
        ..GenConfig::default()
    };
    let mut out = Vec::new();
    let stats = generate(&cfg, &mut out).unwrap();
    assert!(stats.scenario_events >= 2 * 19, "{stats}");
    assert_eq!(stats.events, 500 + stats.scenario_events);
}

#[test]
fn scenario_names_parse_and_round_trip() {
    use clap::ValueEnum;
    for s in Scenario::ALL {
        let parsed: Injection = s.name().parse().unwrap();
        assert_eq!(parsed.scenario, *s);
        assert_eq!(Scenario::from_str(s.name(), false), Ok(*s));
    }
    let i: Injection = "secret-sweep@1h30m".parse().unwrap();
    assert_eq!(i.at, Some(Duration::from_secs(5400)));
    let err = "no-such-thing"
        .parse::<Injection>()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown scenario `no-such-thing`") && err.contains("secret-sweep"),
        "{err}"
    );
    assert!(matches!(parse_duration("15x"), Err(GenError::Invalid(_))));
    assert!(parse_duration("").is_err() && parse_duration("m").is_err());
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: GenArgs,
}

#[test]
fn cli_arguments_build_the_config() {
    let cli = Cli::try_parse_from([
        "generate",
        "--events",
        "1234",
        "--seed",
        "9",
        "--scenario",
        "csr-approval@10m",
        "--scenario",
        "node-proxy",
        "--start",
        "2026-11-03T10:00:00Z",
    ])
    .unwrap();
    let cfg = cli.args.to_config().unwrap();
    assert_eq!(cfg.limit, Limit::Events(1234));
    assert_eq!(cfg.seed, 9);
    assert_eq!(
        cfg.start,
        Utc.with_ymd_and_hms(2026, 11, 3, 10, 0, 0).unwrap()
    );
    assert_eq!(cfg.scenarios.len(), 2);
    let day = Cli::try_parse_from(["generate", "--benign-day"]).unwrap();
    let cfg = day.args.to_config().unwrap();
    assert_eq!(cfg.limit, Limit::Duration(Duration::from_secs(86_400)));
    assert!(cfg.diurnal && cfg.scenarios.is_empty());
    assert!(Cli::try_parse_from(["generate", "--benign-day", "--events", "5"]).is_err());
    let all = Cli::try_parse_from(["generate", "--all-scenarios"]).unwrap();
    assert_eq!(
        all.args.to_config().unwrap().scenarios.len(),
        Scenario::ALL.len()
    );
    let bad = Cli::try_parse_from(["generate", "--scenario", "nope"]).unwrap();
    assert!(bad.args.to_config().is_err());
}

#[test]
fn invalid_config_lists_every_problem() {
    let cfg = GenConfig {
        rate_per_sec: 0.0,
        nodes: 0,
        limit: Limit::Events(0),
        ..GenConfig::default()
    };
    let err = generate(&cfg, &mut Vec::new()).unwrap_err().to_string();
    for needle in ["`rate`", "`nodes`", "`events`"] {
        assert!(err.contains(needle), "{err}");
    }
}

const DEMO_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/demo/story.jsonl");

/// The bundled demo is exactly what the generator produces for [`GenConfig::demo`], so
/// it can be regenerated whenever the generator changes.
#[test]
fn demo_story_is_reproducible() {
    let text = gen(&GenConfig::demo());
    if std::env::var_os("AUDITHAWK_BLESS").is_some() {
        std::fs::write(DEMO_PATH, &text).unwrap();
    }
    let stored = std::fs::read_to_string(DEMO_PATH).unwrap_or_default();
    assert!(
        stored == text,
        "src/demo/story.jsonl is stale; regenerate it with:\n  AUDITHAWK_BLESS=1 cargo test --test generate demo_story_is_reproducible"
    );
}

#[test]
fn demo_story_is_short_and_tells_the_whole_story() {
    let text = gen(&GenConfig::demo());
    let events = decode_all(&text);
    assert!(events.len() <= 320, "{} events", events.len());
    let rc: Vec<_> = complete(&events).collect();
    let sweep_ns: BTreeSet<_> = rc
        .iter()
        .filter(|e| {
            e.resource() == "secrets"
                && e.verb() == "list"
                && e.username().starts_with("system:serviceaccount:payments:")
        })
        .map(|e| ns(e))
        .collect();
    assert!(sweep_ns.len() >= 5, "{sweep_ns:?}");
    assert!(rc.iter().any(|e| e.resource() == "clusterrolebindings"
        && raw(e)["requestObject"]["roleRef"]["name"] == "cluster-admin"));
    assert!(rc.iter().any(|e| e.resource() == "pods"
        && e.verb() == "create"
        && raw(e)["requestObject"]["spec"]["volumes"][0]["hostPath"]["path"] == "/"));
    assert!(rc
        .iter()
        .any(|e| sub(e) == "exec" && ns(e) == "kube-system"));
    // Normal traffic surrounds the story.
    let benign = rc
        .iter()
        .filter(|e| e.username().starts_with("system:node:"))
        .count();
    assert!(benign > 30, "{benign} kubelet events");
    let first = events.first().and_then(|e| e.event_time()).unwrap();
    assert_eq!(first.date_naive().to_string(), "2026-11-02");
}

#[test]
fn office_hours_shape_human_traffic_over_a_day() {
    let cfg = GenConfig {
        seed: 2,
        limit: Limit::Duration(Duration::from_secs(86_400)),
        rate_per_sec: 0.5,
        diurnal: true,
        // 2026-11-02 is a Monday.
        ..GenConfig::default()
    };
    let text = gen(&cfg);
    let events = decode_all(&text);
    let mut by_hour = [0usize; 24];
    for e in complete(&events).filter(|e| e.username().ends_with("@example.com")) {
        let h = e
            .event_time()
            .map(|t| t.format("%H").to_string())
            .unwrap_or_default();
        if let Ok(h) = h.parse::<usize>() {
            by_hour[h] += 1;
        }
    }
    let night: usize = by_hour[0..5].iter().sum();
    let day: usize = by_hour[9..14].iter().sum();
    assert!(
        day > 4 * night.max(1),
        "day {day} vs night {night}: {by_hour:?}"
    );
}

#[test]
fn request_received_of_a_create_has_no_object_name_yet() {
    let text = gen(&small(20_000, 12));
    let events = decode_all(&text);
    let creates: Vec<_> = events
        .iter()
        .filter(|e| e.verb() == "create" && e.resource() == "pods" && sub(e).is_empty())
        .collect();
    assert!(creates.len() >= 2, "{}", creates.len());
    for e in creates {
        let name = e.fields.object_ref.as_ref().and_then(|o| o.name.as_deref());
        match e.stage() {
            Stage::RequestReceived => assert_eq!(name, None),
            _ => assert!(name.is_some()),
        }
    }
}

/// Tiny and large clusters with every scenario: no index out of range, valid output.
#[test]
fn extreme_cluster_sizes_with_every_scenario() {
    for (nodes, namespaces, workloads) in [(1, 1, 1), (1_500, 40, 300)] {
        let cfg = GenConfig {
            limit: Limit::Events(3_000),
            nodes,
            namespaces,
            workloads,
            scenarios: Scenario::ALL
                .iter()
                .map(|&scenario| Injection { scenario, at: None })
                .collect(),
            ..GenConfig::default()
        };
        let text = gen(&cfg);
        let events = decode_all(&text);
        for e in &events {
            for ip in &e.fields.source_ips {
                assert!(ip.parse::<std::net::IpAddr>().is_ok(), "bad IP {ip}");
            }
        }
    }
}
