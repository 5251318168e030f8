//! `rules import-falco`: every Falco rule that converts to Sigma must fire on exactly the
//! events the Falco original fires on (over Falco's own audit traces).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use audithawk::engine::Engine;
use audithawk::model::{decode_value, Alert, DecodeLimits, Location};
use audithawk::rules::falco::{to_sigma, FalcoRuleSet};
use audithawk::rules::{LoadOptions, RuleSet};
use audithawk::telemetry::Metrics;

fn alerts(engine: &Engine, traces: &Path) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut files: Vec<_> = std::fs::read_dir(traces)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let mut got: Vec<Alert> = Vec::new();
            let _ = decode_value(
                line,
                &Location::line(n as u64 + 1),
                DecodeLimits::default(),
                &mut |r| {
                    if let Ok(ev) = r {
                        engine.process(&ev, chrono::Utc::now(), &mut got);
                    }
                },
            );
            for a in got {
                out.insert((a.rule.name, a.kubernetes.audit.audit_id));
            }
        }
    }
    out
}

#[test]
fn converted_rules_fire_like_the_originals() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/anchors/falco");
    if !shared.is_dir() {
        eprintln!("SKIPPED: ../shared/anchors/falco is absent");
        return;
    }
    let (falco, _) = FalcoRuleSet::load_files(&[shared.join("k8s_audit_rules.yaml")])
        .expect("current rules load");
    let (converted, skipped) = to_sigma(&falco);
    assert!(
        converted.len() >= 30,
        "most rules convert: {} converted",
        converted.len()
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, yaml) in &converted {
        std::fs::write(dir.path().join(name), yaml).unwrap();
    }
    let (sigma, _) = RuleSet::load(&LoadOptions {
        builtin: false,
        dirs: vec![dir.path().into()],
        lists: vec![],
        skip_broken: false,
    })
    .unwrap_or_else(|e| panic!("converted rules load: {e:?}"));
    assert_eq!(sigma.rules().len(), converted.len());

    let metrics = Arc::new(Metrics::new());
    let empty = Arc::new(RuleSet::load(&LoadOptions::default()).unwrap().0);
    let via_falco = Engine::new(empty, 0, metrics.clone()).with_falco(Some(Arc::new(falco)));
    let via_sigma = Engine::new(Arc::new(sigma), 0, metrics);
    let skipped: BTreeSet<&str> = skipped.iter().map(|(r, _)| r.as_str()).collect();
    let expected: BTreeSet<_> = alerts(&via_falco, &shared.join("traces"))
        .into_iter()
        .filter(|(rule, _)| !skipped.contains(rule.as_str()))
        .collect();
    let got = alerts(&via_sigma, &shared.join("traces"));
    assert!(!expected.is_empty());
    assert_eq!(got, expected);
}
