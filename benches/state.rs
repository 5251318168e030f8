//! Stateful engine benchmark: throughput with 30 correlation rules and ~1,000,000 live
//! group keys, the cost relative to stateless evaluation, and bytes of state per live
//! event_count group.
//!
//! Run: `cargo bench --bench state` (release profile). Scale with `STATE_BENCH_EVENTS`
//! (default 1,200,000) and `STATE_BENCH_USERS` (default 33,334: 30 rules x 33,334 users
//! = 1,000,020 group keys); `cargo bench --bench state -- fanout1` runs only the fan-out-1
//! scenario; `-- --pipeline BIN [fanout1]` times `audithawk scan` (the binary BIN) on the
//! same events instead. Prints one line per figure; a plain harness rather than
//! criterion because building a million live groups is the set-up, not the measured loop.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audithawk::engine::correlate::Correlator;
use audithawk::engine::state::StateConfig;
use audithawk::model::{Alert, AuditEvent};
use audithawk::rules::RuleSet;

/// Counts live heap bytes, to measure state size exactly. It wraps mimalloc, the allocator
/// the `audithawk` binary ships with (`src/main.rs`), so that the figures are the shipped
/// engine's and not glibc malloc's.
struct Counting;

static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { INNER.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const VERBS: [(&str, &str); 6] = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("create", "pods"),
    ("create", "rolebindings"),
    ("delete", "configmaps"),
    ("patch", "deployments"),
];

/// 6 base rules (one per verb/resource) and a rare one (never matched here) plus 30
/// correlations: per base rule, two event_count, one value_count, one new_terms (still
/// learning: tuples live, no alerts) and one temporal with the rare rule (groups live,
/// never complete). Alert volume stays realistic: a benchmark that alerts on most events
/// measures alert rendering, not state.
fn rules_text() -> String {
    let mut t = String::new();
    for (i, (verb, res)) in VERBS.iter().enumerate() {
        t += &format!(
            "title: base {i}\nid: base-{i}\nname: base_{i}\nlevel: low\nlogsource: {{product: kubernetes, service: audit}}\ndetection:\n  s: {{verb: {verb}, objectRef.resource: {res}}}\n  condition: s\n---\n"
        );
    }
    t += "title: rare\nid: rare\nname: rare\nlevel: high\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  s: {verb: escalate}\n  condition: s\n---\n";
    for i in 0..VERBS.len() {
        t += &format!(
            "title: count {i}\nid: count-{i}\ncorrelation: {{type: event_count, rules: [base_{i}], group-by: [user.username], timespan: 10m, condition: {{gte: 50}}}}\n---\n\
title: count ns {i}\nid: countns-{i}\ncorrelation: {{type: event_count, rules: [base_{i}], group-by: [user.username, objectRef.namespace], timespan: 10m, condition: {{gte: 20}}}}\n---\n\
title: sweep {i}\nid: sweep-{i}\ncorrelation: {{type: value_count, rules: [base_{i}], group-by: [user.username], timespan: 10m, condition: {{field: objectRef.namespace, gte: 30}}}}\n---\n\
title: new {i}\nid: new-{i}\ncorrelation: {{type: new_terms, rules: [base_{i}], fields: [user.username, userAgent], history: 7d, learning: 1d}}\n---\n\
title: pair {i}\nid: pair-{i}\ncorrelation: {{type: temporal, rules: [base_{i}, rare], group-by: [user.username], timespan: 10m}}\n---\n"
        );
    }
    t
}

const BASE_US: i64 = 1_767_225_600_000_000;

fn event(i: usize, users: usize, step_us: i64) -> String {
    let (verb, res) = VERBS[(i / users) % VERBS.len()];
    event_with(i, users, step_us, verb, res)
}

/// Event `i` of user `i % users` with the given verb and resource.
fn event_with(i: usize, users: usize, step_us: i64, verb: &str, res: &str) -> String {
    let u = i % users;
    let ts = chrono::DateTime::from_timestamp_micros(BASE_US + i as i64 * step_us)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let id = uuid::Uuid::from_u128(0x1234_5678_9abc_4def_8000_0000_0000_0000 | i as u128);
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns{ns}/{res}","verb":"{verb}","user":{{"username":"user-{u}","groups":["system:authenticated"]}},"sourceIPs":["10.0.{a}.{b}"],"userAgent":"kubectl/v1.3{ua}","objectRef":{{"resource":"{res}","namespace":"ns{ns}","name":"obj{o}","apiVersion":"v1"}},"responseStatus":{{"metadata":{{}},"code":200}},"requestReceivedTimestamp":"{ts}","stageTimestamp":"{ts}"}}"#,
        ns = i % 40,
        a = u % 250,
        b = i % 250,
        ua = u % 3,
        o = i % 1000,
    )
}

/// CPU time of this thread (Linux schedstat, ns precision): on a machine shared with
/// builds, wall time also counts the time other processes ran, CPU time does not.
fn cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Wall and CPU time since `start`.
struct Span {
    wall: Instant,
    cpu: Option<Duration>,
}

impl Span {
    fn start() -> Span {
        Span {
            wall: Instant::now(),
            cpu: cpu_time(),
        }
    }
    fn stop(&self) -> (Duration, Option<Duration>) {
        let cpu = match (self.cpu, cpu_time()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        (self.wall.elapsed(), cpu)
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small then.
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench");
    let n_events = env("STATE_BENCH_EVENTS", if quick { 20_000 } else { 1_200_000 });
    let users = env("STATE_BENCH_USERS", if quick { 500 } else { 33_334 });
    // 1 ms of event time per event: 1,000 events/s, so 1.2 M events span 20 minutes and
    // the 10-minute windows hold ~600,000 events' worth of groups at the end.
    let step_us = if quick { 10_000 } else { 1_000 };
    if let Some(bin) = args
        .iter()
        .position(|a| a == "--pipeline")
        .and_then(|i| args.get(i + 1))
    {
        let fanout1 = args.iter().any(|a| a == "fanout1");
        pipeline(std::path::Path::new(bin), n_events, users, step_us, fanout1);
        return;
    }
    let text = rules_text();
    let (rules, _) = RuleSet::from_texts(&[("bench.yml", &text)], &[], false).expect("rules");
    let rules = Arc::new(rules);
    let cfg = StateConfig {
        max_groups_per_rule: 2_000_000,
        max_state_bytes: 8 << 30,
        allowed_lateness: Duration::from_secs(env("STATE_BENCH_LATENESS_SECS", 45) as u64),
        ..StateConfig::default()
    };
    // `--only fanout1` runs the fan-out-1 scenario alone (quicker when profiling it).
    if args.iter().any(|a| a == "fanout1") {
        fanout_one(n_events, users, step_us, &cfg);
        return;
    }
    let corr = Correlator::new(&rules, cfg.clone()).expect("correlator");
    assert_eq!(corr.len(), 30);
    eprintln!("generating {n_events} events for {users} users ...");
    let events: Vec<String> = (0..n_events).map(|i| event(i, users, step_us)).collect();

    // Stateless: parse, evaluate, build alerts for the (unsuppressed) hits.
    let now = chrono::Utc::now();
    let stateless = |evs: &[String]| {
        let mut hits = Vec::new();
        let mut out: Vec<Alert> = Vec::new();
        let t0 = Span::start();
        for e in evs {
            let ev = AuditEvent::parse(e).expect("event");
            hits.clear();
            rules.evaluate(&ev, &mut hits);
            for &h in &hits {
                out.push(Alert::new(&rules.rules()[h].meta, &ev, now));
            }
            out.clear();
        }
        t0.stop()
    };
    let (sl, sl_cpu) = stateless(&events);
    let sl_rate = n_events as f64 / sl.as_secs_f64();
    println!(
        "stateless: {n_events} events in {:.2?} = {:.0} events/s",
        sl, sl_rate
    );

    // Stateful: the same plus the correlator.
    let mut hits = Vec::new();
    let mut out = Vec::new();
    let mut alerts = 0usize;
    let t0 = Span::start();
    for e in &events {
        let ev = AuditEvent::parse(e).expect("event");
        hits.clear();
        rules.evaluate(&ev, &mut hits);
        for &h in &hits {
            if !corr.suppressed_generate(h) {
                out.push(Alert::new(&rules.rules()[h].meta, &ev, now));
            }
        }
        corr.observe(&hits, &ev, &mut out);
        alerts += out.len();
        out.clear();
    }
    let (sf, sf_cpu) = t0.stop();
    let sf_rate = n_events as f64 / sf.as_secs_f64();
    let st = corr.stats();
    println!(
        "stateful (30 correlations): {n_events} events in {:.2?} = {:.0} events/s; {} correlation alerts",
        sf, sf_rate, alerts
    );
    println!(
        "live state at end: {} groups + {} baseline tuples = {} group keys; {} held records; ~{} MiB estimated",
        st.groups,
        st.tuples,
        st.groups + st.tuples,
        st.pending,
        st.bytes >> 20
    );
    println!(
        "stateful cost: {:.1}% of stateless time added (throughput {:.1}% of stateless)",
        (sf.as_secs_f64() / sl.as_secs_f64() - 1.0) * 100.0,
        sf_rate / sl_rate * 100.0
    );
    if let (Some(a), Some(b)) = (sl_cpu, sf_cpu) {
        println!(
            "on CPU time (this thread): stateless {:.2?}, stateful {:.2?}: {:.1}% added",
            a,
            b,
            (b.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0
        );
    }

    // Steady-state throughput with all keys live: one more pass over the same users,
    // continuing in time.
    let more: Vec<String> = (n_events..n_events + n_events / 4)
        .map(|i| event(i, users, step_us))
        .collect();
    let t0 = Instant::now();
    for e in &more {
        let ev = AuditEvent::parse(e).expect("event");
        hits.clear();
        rules.evaluate(&ev, &mut hits);
        corr.observe(&hits, &ev, &mut out);
        out.clear();
    }
    let el = t0.elapsed();
    let st2 = corr.stats();
    println!(
        "with {} live group keys: {} more events at {:.0} events/s",
        st2.groups + st2.tuples,
        more.len(),
        more.len() as f64 / el.as_secs_f64()
    );
    drop(more);
    drop(corr);
    drop(events);

    fanout_one(n_events, users, step_us, &cfg);

    // Bytes per live event_count group: one rule, one event per distinct user (UUID
    // auditIDs), measured with the counting allocator after the reorder buffer drained.
    let groups = if quick { 10_000 } else { 1_000_000 };
    let one = format!(
        "{}title: c\nid: c\ncorrelation: {{type: event_count, rules: [base_0], group-by: [user.username], timespan: 10m, condition: {{gte: 5}}}}\n",
        &text[..text.find("title: count 0").unwrap_or(0)]
    );
    let (rules1, _) = RuleSet::from_texts(&[("one.yml", &one)], &[], false).expect("rules");
    {
        let ids = cfg.max_audit_ids;
        let before = LIVE.load(Ordering::Relaxed);
        let c = Correlator::new(
            &rules1,
            StateConfig {
                max_audit_ids: ids,
                ..cfg.clone()
            },
        )
        .expect("correlator");
        let mut out = Vec::new();
        for i in 0..groups {
            // users = groups: every event is a new group; all on base rule 0.
            let e = event(i, groups, 100);
            let ev = AuditEvent::parse(&e).expect("event");
            c.observe(&[0], &ev, &mut out);
        }
        c.flush(&mut out);
        let st = c.stats();
        let bytes = LIVE.load(Ordering::Relaxed) - before;
        println!(
            "event_count state (max_audit_ids {ids}): {} groups, {} bytes allocated = {:.0} B per live group (estimate {:.0} B)",
            st.groups,
            bytes,
            bytes as f64 / st.groups.max(1) as f64,
            st.bytes as f64 / st.groups.max(1) as f64
        );
        drop(c);
    }
}

/// Pipeline-level comparison: the bench events as a JSON-lines file, scanned by a built
/// binary (`audithawk scan`, the whole pipeline: read, decode, dedup, engine, alert
/// rendering) with only the base rules, then with the base rules and the 30 correlations.
/// The correlations say `generate: true`, so both runs render the same base-rule alerts
/// and differ by the stateful engine alone. Runs alternate, three of each; wall and CPU
/// time (user + system of the child) are reported, best and median.
fn pipeline(bin: &std::path::Path, n_events: usize, users: usize, step_us: i64, fanout1: bool) {
    use std::io::Write as _;
    let scenario = if fanout1 { "fanout1-" } else { "" };
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench-data")
        .join(format!("state-{scenario}{n_events}-{users}-{step_us}"));
    std::fs::create_dir_all(&dir).expect("bench-data dir");
    let log = dir.join("events.jsonl");
    if !log.exists() {
        eprintln!("writing {n_events} events to {} ...", log.display());
        let tmp = dir.join("events.partial");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).expect("events file"));
        for i in 0..n_events {
            let e = if fanout1 {
                fanout1_event(i, users, step_us)
            } else {
                event(i, users, step_us)
            };
            writeln!(w, "{e}").expect("write events");
        }
        w.flush().expect("write events");
        drop(w);
        std::fs::rename(&tmp, &log).expect("rename events file");
    }
    let (base, corrs) = if fanout1 {
        fanout1_rule_parts()
    } else {
        let text = rules_text();
        let split = text.find("title: count 0").unwrap_or(text.len());
        (
            text[..split].to_string(),
            text[split..].replace("correlation: {", "generate: true\ncorrelation: {"),
        )
    };
    let base_dir = dir.join("rules-base");
    let corr_dir = dir.join("rules-corr");
    for d in [&base_dir, &corr_dir] {
        std::fs::create_dir_all(d).expect("rules dir");
    }
    std::fs::write(base_dir.join("base.yml"), &base).expect("rules");
    std::fs::write(corr_dir.join("base.yml"), &base).expect("rules");
    std::fs::write(corr_dir.join("corr.yml"), corrs).expect("rules");

    // Children's CPU time (user + system, clock ticks of 10 ms) from /proc/self/stat.
    fn child_cpu() -> Option<Duration> {
        let s = std::fs::read_to_string("/proc/self/stat").ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields 16 and 17 of stat (cutime, cstime) are 13 and 14 after the comm field.
        let ticks: u64 = f.get(13)?.parse::<u64>().ok()? + f.get(14)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ticks * 10))
    }
    let run = |rules: &std::path::Path| -> (Duration, Option<Duration>) {
        let c0 = child_cpu();
        let t0 = Instant::now();
        let st = std::process::Command::new(bin)
            .args([
                "scan",
                "-q",
                "--no-progress",
                "--no-builtin",
                "--format",
                "json",
            ])
            .arg("--rules")
            .arg(rules)
            .arg(&log)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run audithawk");
        let wall = t0.elapsed();
        assert!(
            st.success() || st.code() == Some(1),
            "audithawk scan failed: {st}"
        );
        let cpu = match (c0, child_cpu()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        (wall, cpu)
    };
    let mut base = Vec::new();
    let mut corr = Vec::new();
    for _ in 0..3 {
        base.push(run(&base_dir));
        corr.push(run(&corr_dir));
    }
    let stat = |v: &[(Duration, Option<Duration>)], cpu: bool| -> (f64, f64) {
        let mut x: Vec<f64> = v
            .iter()
            .filter_map(|(w, c)| {
                if cpu {
                    c.map(|c| c.as_secs_f64())
                } else {
                    Some(w.as_secs_f64())
                }
            })
            .collect();
        x.sort_by(f64::total_cmp);
        (
            x.first().copied().unwrap_or(f64::NAN),
            x.get(x.len() / 2).copied().unwrap_or(f64::NAN),
        )
    };
    for (what, cpu) in [("wall", false), ("cpu", true)] {
        let (bb, bm) = stat(&base, cpu);
        let (cb, cm) = stat(&corr, cpu);
        println!(
            "pipeline ({what}): scan {n_events} events, base rules only: best {bb:.2} s ({:.0} events/s), median {bm:.2} s; with 30 correlations: best {cb:.2} s ({:.0} events/s), median {cm:.2} s; added {:.1}% (best), {:.1}% (median)",
            n_events as f64 / bb,
            n_events as f64 / cb,
            (cb / bb - 1.0) * 100.0,
            (cm / bm - 1.0) * 100.0
        );
    }
}

/// The 30 (verb, resource) pairs of the fan-out-1 scenario.
const VERBS30: [&str; 6] = ["get", "list", "create", "update", "patch", "delete"];
const RES30: [&str; 5] = [
    "secrets",
    "pods",
    "configmaps",
    "rolebindings",
    "deployments",
];

/// 30 base rules (one per verb and resource) and 30 correlations, one per base rule and 6
/// of each kind; `generate: true` everywhere, so that the stateless and the stateful pass
/// build exactly the same base-rule alerts and differ by the correlator alone. Windows are
/// 30 minutes, so every group made during the run is still live at its end.
fn fanout1_rules() -> String {
    let (base, corrs) = fanout1_rule_parts();
    format!("{base}---\n{corrs}")
}

/// The fan-out-1 rules as (base rules, correlations), two YAML streams.
fn fanout1_rule_parts() -> (String, String) {
    let mut base = Vec::new();
    let mut corrs = Vec::new();
    for (k, (v, r)) in VERBS30
        .iter()
        .flat_map(|v| RES30.iter().map(move |r| (v, r)))
        .enumerate()
    {
        base.push(format!(
            "title: base {k}\nid: f1-base-{k}\nname: f1_base_{k}\nlevel: low\nlogsource: {{product: kubernetes, service: audit}}\ndetection:\n  s: {{verb: {v}, objectRef.resource: {r}}}\n  condition: s\n"
        ));
        let c = match k % 5 {
            0 => "{type: event_count, rules: [BASE], group-by: [user.username], timespan: 30m, condition: {gte: 50}, generate: true}".to_string(),
            1 => "{type: event_count, rules: [BASE], group-by: [user.username, objectRef.namespace], timespan: 30m, condition: {gte: 20}, generate: true}".to_string(),
            2 => "{type: value_count, rules: [BASE], group-by: [user.username], timespan: 30m, condition: {field: objectRef.namespace, gte: 30}, generate: true}".to_string(),
            3 => "{type: new_terms, rules: [BASE], fields: [user.username, userAgent], history: 7d, learning: 1d, generate: true}".to_string(),
            _ => "{type: temporal, rules: [BASE, f1_rare], group-by: [user.username], timespan: 30m, generate: true}".to_string(),
        };
        corrs.push(format!(
            "title: corr {k}\nid: f1-corr-{k}\ncorrelation: {}\n",
            c.replace("BASE", &format!("f1_base_{k}"))
        ));
    }
    base.push("title: rare\nid: f1-rare\nname: f1_rare\nlevel: high\nlogsource: {product: kubernetes, service: audit}\ndetection:\n  s: {verb: escalate}\n  condition: s\n".to_string());
    (base.join("---\n"), corrs.join("---\n"))
}

/// Event `i`: user `i % users`, and the pair `(i / users) % 30`, so each block of `users`
/// events feeds one correlation for every user.
fn fanout1_event(i: usize, users: usize, step_us: i64) -> String {
    let k = (i / users) % 30;
    event_with(i, users, step_us, VERBS30[k / 5], RES30[k % 5])
}

/// Fan-out 1: the issue's scenario (30 correlation rules active, about 1,000,000 live
/// group keys) with each event feeding exactly one correlation, as audit traffic does (a
/// secret read feeds the sweep, a denial the probe); the main scenario above feeds five.
fn fanout_one(n_events: usize, users: usize, step_us: i64, cfg: &StateConfig) {
    let text = fanout1_rules();
    let (rules, warnings) =
        RuleSet::from_texts(&[("fanout1.yml", &text)], &[], false).expect("rules");
    for w in warnings {
        eprintln!("fan-out 1 rules: {}", w.message);
    }
    let corr = Correlator::new(&rules, cfg.clone()).expect("correlator");
    assert_eq!(corr.len(), 30);
    let events: Vec<String> = (0..n_events)
        .map(|i| fanout1_event(i, users, step_us))
        .collect();
    let now = chrono::Utc::now();
    let run = |events: &[String], stateful: bool| {
        let mut hits = Vec::new();
        let mut out: Vec<Alert> = Vec::new();
        let mut n_alerts = 0usize;
        let t0 = Span::start();
        for e in events {
            let ev = AuditEvent::parse(e).expect("event");
            hits.clear();
            rules.evaluate(&ev, &mut hits);
            for &h in &hits {
                if !stateful || !corr.suppressed_generate(h) {
                    out.push(Alert::new(&rules.rules()[h].meta, &ev, now));
                }
            }
            if stateful {
                corr.observe(&hits, &ev, &mut out);
            }
            n_alerts += out.len();
            out.clear();
        }
        (t0.stop(), n_alerts)
    };
    // Building: from empty state to ~1 M live keys. This includes growing the group tables
    // (rehashing, and the kernel zeroing the fresh pages), a one-time cost.
    let ((sl, sl_cpu), sl_alerts) = run(&events, false);
    let ((sf, sf_cpu), sf_alerts) = run(&events, true);
    let st = corr.stats();
    println!(
        "fan-out 1 (30 correlations, each event feeds one), building: stateless {:.0} events/s ({sl_alerts} alerts), stateful {:.0} events/s ({sf_alerts} alerts); {} live group keys at end",
        n_events as f64 / sl.as_secs_f64(),
        n_events as f64 / sf.as_secs_f64(),
        st.groups + st.tuples
    );
    println!(
        "fan-out 1 building: {:.1}% of stateless time added (throughput {:.1}% of stateless)",
        (sf.as_secs_f64() / sl.as_secs_f64() - 1.0) * 100.0,
        sl.as_secs_f64() / sf.as_secs_f64() * 100.0
    );
    if let (Some(a), Some(b)) = (sl_cpu, sf_cpu) {
        println!(
            "fan-out 1 building on CPU time: {:.1}% added",
            (b.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0
        );
    }
    drop(events);
    // Steady state, the issue's figure ("throughput with 1,000,000 distinct group keys
    // live"): the stream goes on over the same users, so every event updates a live group.
    // Two rounds, stateless and stateful alternating over the same events.
    let part = n_events / 3;
    let mut totals = [(Duration::ZERO, Duration::ZERO); 2]; // (wall, cpu) stateless, stateful
    for round in 0..2 {
        let from = n_events + round * part;
        let evs: Vec<String> = (from..from + part)
            .map(|i| fanout1_event(i, users, step_us))
            .collect();
        for (slot, stateful) in [(0, false), (1, true)] {
            let ((w, c), _) = run(&evs, stateful);
            totals[slot].0 += w;
            totals[slot].1 += c.unwrap_or_default();
        }
    }
    let st = corr.stats();
    let n = (2 * part) as f64;
    let [(slw, slc), (sfw, sfc)] = totals;
    println!(
        "fan-out 1 steady state, {} live group keys: stateless {:.0} events/s, stateful {:.0} events/s; {:.1}% of stateless time added (throughput {:.1}% of stateless); on CPU time {:.1}% added",
        st.groups + st.tuples,
        n / slw.as_secs_f64(),
        n / sfw.as_secs_f64(),
        (sfw.as_secs_f64() / slw.as_secs_f64() - 1.0) * 100.0,
        slw.as_secs_f64() / sfw.as_secs_f64() * 100.0,
        (sfc.as_secs_f64() / slc.as_secs_f64().max(1e-9) - 1.0) * 100.0,
    );
}
