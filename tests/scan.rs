//! Black-box tests of `audithawk scan` and the other offline commands, run against the real
//! binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_audithawk"));
    c.env_remove("AUDITHAWK_CONFIG")
        .env("AUDITHAWK_LOG", "error");
    c
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scan")
}

fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: ../shared is absent (the public corpus lives there in CI)");
        None
    }
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run audithawk")
}

fn fixture_scan(extra: &[&str]) -> Output {
    let rules = fixtures().join("rules");
    let events = fixtures().join("events.jsonl");
    let mut args = vec![
        "scan",
        "--no-builtin",
        "--rules",
        rules.to_str().unwrap(),
        events.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn json_alerts_summary_and_bad_lines() {
    let out = fixture_scan(&["--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let alerts: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    // mallory's get (the RequestReceived copy is stage-skipped, the re-sent duplicate is
    // dropped) and bob's list; the kubelet is excluded by the rule.
    assert_eq!(alerts.len(), 2, "{stdout}");
    assert_eq!(alerts[0]["user"]["name"], "mallory@example.com");
    assert_eq!(
        alerts[0]["rule"]["id"],
        "7d2a4f0e-1c3b-4e5d-8f6a-0b1c2d3e4f5a"
    );
    assert_eq!(alerts[0]["threat"]["technique"][0]["id"], "T1552.007");
    assert_eq!(alerts[0]["@timestamp"], "2026-11-02T10:00:00.002001Z");
    assert_eq!(alerts[1]["user"]["name"], "bob@example.com");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("events: 5"), "{stderr}");
    assert!(stderr.contains("bad records: 2"), "{stderr}");
    assert!(stderr.contains("duplicates: 1"), "{stderr}");
    assert!(
        stderr.contains("events.jsonl: line 5: invalid event"),
        "bad line reported with its number: {stderr}"
    );
    assert!(
        stderr.contains("events.jsonl: line 7: invalid event"),
        "{stderr}"
    );
}

#[test]
fn secrets_never_reach_the_output() {
    let out = fixture_scan(&["--format", "json"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains("aHVudGVyMi1zdXBlci1zZWNyZXQ="),
        "Secret data leaked"
    );
    assert!(!all.contains("s3cr3t-t0ken"), "token in URI leaked");
    assert!(all.contains("token=***REDACTED***"));
}

#[test]
fn fail_on_sets_the_exit_status() {
    assert_eq!(
        fixture_scan(&["--fail-on", "high", "-q"]).status.code(),
        Some(1)
    );
    assert_eq!(
        fixture_scan(&["--fail-on", "critical", "-q"]).status.code(),
        Some(0)
    );
    let bad = fixture_scan(&["--fail-on", "severe"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn gzip_from_stdin() {
    let text = std::fs::read(fixtures().join("events.jsonl")).unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&text).unwrap();
    let gz = enc.finish().unwrap();
    let rules = fixtures().join("rules");
    let mut child = bin()
        .args([
            "scan",
            "--no-builtin",
            "--rules",
            rules.to_str().unwrap(),
            "--format",
            "json",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&gz).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
}

#[test]
fn broken_rule_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yml"),
        "title: broken\nid: 0b0b0b0b-0000-4000-8000-000000000000\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  sel:\n    verb|nosuchmodifier: get\n  condition: sel\nlevel: low\n",
    )
    .unwrap();
    let events = fixtures().join("events.jsonl");
    let out = run(&[
        "scan",
        "--no-builtin",
        "--rules",
        dir.path().to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml"), "{err}");
    assert!(err.contains("nosuchmodifier"), "{err}");
    // With --skip-broken-rules the scan runs.
    let ok = run(&[
        "scan",
        "--no-builtin",
        "--skip-broken-rules",
        "--rules",
        dir.path().to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let lint = run(&["rules", "lint", dir.path().to_str().unwrap()]);
    assert_eq!(lint.status.code(), Some(1));
}

#[test]
fn config_check_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        "serve:\n  listen: nowhere\n  colour: blue\nengine:\n  queue_capacity: 0\n",
    )
    .unwrap();
    let out = run(&["config", "check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2: `serve.listen`"), "{err}");
    assert!(err.contains("line 3: `serve.colour`: unknown key"), "{err}");
    assert!(err.contains("line 5: `engine.queue_capacity`"), "{err}");
    // The embedded default passes its own check.
    let def = run(&["config", "default"]);
    std::fs::write(&f, &def.stdout).unwrap();
    assert_eq!(
        run(&["config", "check", f.to_str().unwrap()]).status.code(),
        Some(0)
    );
    // A bad config stops every command with status 2.
    std::fs::write(&f, "bogus: 1\n").unwrap();
    let out = run(&["--config", f.to_str().unwrap(), "rules", "list"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Every file of the public corpus scans without crashing; each holds events, and the
/// malformed Falco trace and bad samples are counted, not fatal.
#[test]
fn scans_every_corpus_file() {
    let Some(shared) = shared() else { return };
    let corpus = shared.join("corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        if f.file_name().is_some_and(|n| n == "PROVENANCE.txt") {
            continue;
        }
        let out = run(&["scan", "--format", "json", f.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {err}", f.display());
        let events: u64 = err
            .split("events: ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(events > 0, "{}: no events decoded\n{err}", f.display());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("alert is JSON");
        }
    }
    // The Falco traces: 52 events in 47 files, one deliberately malformed.
    let traces = shared.join("anchors/falco/traces");
    if traces.is_dir() {
        let out = run(&["scan", traces.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("fal_01_003.json"),
            "the malformed trace is reported: {err}"
        );
    }
}
