//! Throughput harness (not a criterion bench): end-to-end figures for `scan` and `serve`
//! on a realistic generated audit log.
//!
//! ```text
//! cargo bench --bench harness -- [--events N] [--out DIR]            # scan
//! cargo bench --bench harness -- --serve [--seconds N] [--clients N]   # serve
//! cargo bench --bench harness -- --gen-only                           # just the log
//! ```
//!
//! Scan mode generates (once) a log of N events (default 1,000,000, about 1.5 GB) under
//! `target/bench-data/` or `--out`, never in the repository, then times
//! `audithawk scan --format json FILE > /dev/null` with the release binary and reports
//! events/s, MB/s, wall time and peak RSS (from `/usr/bin/time -v` when present, else by
//! polling `/proc/<pid>/status` VmHWM).
//!
//! Serve mode starts `audithawk serve --listen 127.0.0.1:PORT --format json` (plain HTTP)
//! and POSTs 400-event EventLists exactly as the API server's webhook backend sends them
//! (items without kind/apiVersion) from concurrent clients: first at full rate (events/s
//! accepted), then at half that rate, where each batch carries one `exec` event with a
//! unique auditID that fires a known rule; the latency from sending the request to
//! reading that alert on the server's stdout gives the p50/p99/max. The clients run on
//! the same two cores as the server, so the serve figures are a lower bound; "accepted"
//! counts events the server answered 200 for (queued), and the half-rate phase shows
//! whether processing keeps up (markers without an alert).

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use audithawk::generate::{generate, GenConfig, Injection, Limit, Scenario};
use clap::Parser;
use parking_lot::Mutex;

#[derive(Parser, Debug)]
#[command(about = "audithawk throughput harness")]
struct Args {
    /// Events in the generated log (scan mode) or in the batch pool (serve mode).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Directory for the generated log (default: <target dir>/bench-data).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The audithawk binary (default: <target dir>/release/audithawk, built if missing).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Benchmark `serve` instead of `scan`.
    #[arg(long)]
    serve: bool,
    /// Seconds per serve phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent HTTP clients in serve mode.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Only generate the log and report generation speed.
    #[arg(long)]
    gen_only: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harness: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, String>;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn bench_config(events: u64) -> GenConfig {
    GenConfig {
        seed: 1,
        limit: Limit::Events(events),
        rate_per_sec: 500.0,
        // Every story once, so that the rules have something to find.
        scenarios: Scenario::ALL
            .iter()
            .map(|&scenario| Injection { scenario, at: None })
            .collect(),
        ..GenConfig::default()
    }
}

/// Generates the log unless a complete one is already there.
fn ensure_log(args: &Args) -> Res<PathBuf> {
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("bench-data"));
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The file name carries a fingerprint of the generator's output, so a changed
    // generator never reuses a stale log.
    let mut probe = Vec::new();
    let mut probe_cfg = bench_config(2_000);
    probe_cfg.scenarios.truncate(1);
    generate(&probe_cfg, &mut probe).map_err(|e| e.to_string())?;
    let fp = xxhash_rust::xxh3::xxh3_64(&probe) as u32;
    let path = dir.join(format!("audit-{}-{fp:08x}.jsonl", args.events));
    let done = path.with_extension("done");
    if path.exists() && done.exists() {
        println!("using {}", path.display());
        return Ok(path);
    }
    println!(
        "generating {} events into {} ...",
        args.events,
        path.display()
    );
    let tmp = path.with_extension("partial");
    let f = fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let t = Instant::now();
    let stats = generate(&bench_config(args.events), &mut w).map_err(|e| e.to_string())?;
    w.flush().map_err(|e| e.to_string())?;
    let el = t.elapsed().as_secs_f64();
    println!("generated: {stats}");
    println!(
        "generation: {:.1} s, {:.0} events/s, {:.0} MB/s",
        el,
        stats.events as f64 / el,
        stats.bytes as f64 / 1e6 / el
    );
    fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
    fs::write(&done, stats.to_string()).map_err(|e| e.to_string())?;
    Ok(path)
}

/// The release binary, built if missing; errors when its CLI lacks the subcommand.
fn binary(args: &Args, sub: &str) -> Res<PathBuf> {
    let bin = args
        .bin
        .clone()
        .unwrap_or_else(|| target_dir().join("release").join("audithawk"));
    if !bin.exists() {
        println!("building the release binary ...");
        let st = Command::new(env!("CARGO"))
            .args(["build", "--release", "--bin", "audithawk"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .map_err(|e| format!("cargo build: {e}"))?;
        if !st.success() {
            return Err("cargo build --release failed".into());
        }
    }
    if let Ok(age) = fs::metadata(&bin)
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().unwrap_or_default())
    {
        println!(
            "using {} (built {} min ago; run `cargo build --release` first if it is stale)",
            bin.display(),
            age.as_secs() / 60
        );
    }
    let help = Command::new(&bin)
        .args([sub, "--help"])
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&help.stdout);
    if !help.status.success() || !text.contains("--format") {
        return Err(format!(
            "{} has no usable `{sub}` subcommand yet (`{sub} --help` printed no --format flag); cannot time it",
            bin.display()
        ));
    }
    Ok(bin)
}

fn run(args: &Args) -> Res<()> {
    if args.serve {
        return serve_bench(args);
    }
    let log = ensure_log(args)?;
    if args.gen_only {
        return Ok(());
    }
    let bin = binary(args, "scan")?;
    let size = fs::metadata(&log).map_err(|e| e.to_string())?.len();
    let events = count_lines(&log)?;
    let time = Path::new("/usr/bin/time");
    let t = Instant::now();
    let (status, rss_kb, stderr) = if time.exists() {
        let out = Command::new(time)
            .arg("-v")
            .arg(&bin)
            .args(["scan", "--format", "json"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        let rss = err
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Maximum resident set size (kbytes): ")
            })
            .and_then(|v| v.trim().parse::<u64>().ok());
        (out.status, rss, err)
    } else {
        let mut child = Command::new(&bin)
            .args(["scan", "--format", "json"])
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let status_path = format!("/proc/{}/status", child.id());
        let mut peak = None;
        let status = loop {
            if let Ok(s) = fs::read_to_string(&status_path) {
                let hwm = s
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
                peak = peak.max(hwm);
            }
            if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
                break st;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        (status, peak, err)
    };
    let wall = t.elapsed().as_secs_f64();
    // `--fail-on` is not passed, so any non-zero exit is a failure of the run itself.
    if !status.success() {
        return Err(format!("scan exited with {status}; stderr:\n{stderr}"));
    }
    // audithawk's own summary (stderr), without /usr/bin/time's report.
    for line in stderr
        .lines()
        .take_while(|l| !l.starts_with("\tCommand being timed"))
        .take(40)
    {
        println!("  | {line}");
    }
    println!("scan --format json {}", log.display());
    println!("  events      {events}");
    println!("  wall time   {wall:.2} s");
    println!(
        "  throughput  {:.0} events/s, {:.1} MB/s",
        events as f64 / wall,
        size as f64 / 1e6 / wall
    );
    match rss_kb {
        Some(kb) => println!("  peak RSS    {:.1} MB", kb as f64 / 1024.0),
        None => println!("  peak RSS    unknown"),
    }
    Ok(())
}

fn count_lines(p: &Path) -> Res<u64> {
    let f = fs::File::open(p).map_err(|e| e.to_string())?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut n = 0u64;
    loop {
        let buf = r.fill_buf().map_err(|e| e.to_string())?;
        if buf.is_empty() {
            break;
        }
        n += memchr::memchr_iter(b'\n', buf).count() as u64;
        let len = buf.len();
        r.consume(len);
    }
    Ok(n)
}

/// A prepared EventList body and where its auditIDs are, so every send can make them
/// unique (the server drops exact duplicates of (auditID, stage), which would flatter a
/// benchmark that re-sends the same pool).
struct Batch {
    body: Vec<u8>,
    id_offsets: Vec<usize>,
    marker_offset: usize,
    events: u64,
}

const MARKER_PREFIX: &str = "hawkbench";

/// Builds 400-event batches from generated traffic, each with one marker event: the
/// ResponseStarted stage of an exec into a kube-system pod (the exec rules match that
/// stage, written when the stream opens), whose auditID is
/// `hawkbench-NNNNNNNNNNNN-...` so its alert can be matched to the batch.
fn build_batches(events: u64) -> Res<Vec<Batch>> {
    let mut batches = Vec::new();
    let mut out = Vec::new();
    let cfg = GenConfig {
        limit: Limit::Events(events),
        rate_per_sec: 500.0,
        ..GenConfig::default()
    };
    generate(&cfg, &mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8(out).map_err(|e| e.to_string())?;
    let marker = r#"{"level":"Metadata","auditID":"hawkbench-000000000000-0000-0000-000000000000","stage":"ResponseStarted","requestURI":"/api/v1/namespaces/kube-system/pods/coredns-7db6d8ff4d-x2x9k/exec?command=sh\u0026container=coredns\u0026stdin=true\u0026stdout=true\u0026tty=true","verb":"create","user":{"username":"mallory@example.com","groups":["system:authenticated"]},"sourceIPs":["203.0.113.9"],"userAgent":"kubectl/v1.29.2 (linux/amd64) kubernetes/4b8e819","objectRef":{"resource":"pods","namespace":"kube-system","name":"coredns-7db6d8ff4d-x2x9k","apiVersion":"v1","subresource":"exec"},"responseStatus":{"metadata":{},"code":101},"requestReceivedTimestamp":"2026-11-02T09:00:00.000000Z","stageTimestamp":"2026-11-02T09:00:01.000000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}"#;
    let prefix = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","#;
    let lines: Vec<&str> = text.lines().collect();
    for chunk in lines.chunks(399) {
        let mut body = Vec::with_capacity(chunk.len() * 1600);
        let mut id_offsets = Vec::with_capacity(chunk.len());
        body.extend_from_slice(
            br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#,
        );
        for (i, line) in chunk.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            // The webhook backend sends items without kind/apiVersion.
            let item = line
                .strip_prefix(prefix)
                .map(|rest| format!("{{{rest}"))
                .unwrap_or_else(|| line.to_string());
            if let Some(at) = item.find(r#""auditID":""#) {
                id_offsets.push(body.len() + at + r#""auditID":""#.len());
            }
            body.extend_from_slice(item.as_bytes());
        }
        body.push(b',');
        let marker_offset =
            body.len() + marker.find(MARKER_PREFIX).unwrap_or(0) + MARKER_PREFIX.len() + 1;
        body.extend_from_slice(marker.as_bytes());
        body.extend_from_slice(b"]}");
        batches.push(Batch {
            body,
            id_offsets,
            marker_offset,
            events: chunk.len() as u64 + 1,
        });
    }
    Ok(batches)
}

impl Batch {
    /// The body for send number `seq`: auditIDs made unique for this send and the
    /// marker's id set to `seq`.
    fn body_for(&self, seq: u64) -> Vec<u8> {
        let mut body = self.body.clone();
        let tag = format!("{:08x}", seq as u32);
        for &at in &self.id_offsets {
            if let Some(dst) = body.get_mut(at..at + 8) {
                dst.copy_from_slice(tag.as_bytes());
            }
        }
        let m = format!("{seq:012}");
        if let Some(dst) = body.get_mut(self.marker_offset..self.marker_offset + 12) {
            dst.copy_from_slice(m.as_bytes());
        }
        body
    }
}

fn free_port() -> Res<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Kills the server when the harness returns, however it returns.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Default)]
struct Tally {
    accepted_events: AtomicU64,
    batches_ok: AtomicU64,
    throttled: AtomicU64,
    failed: AtomicU64,
}

fn serve_bench(args: &Args) -> Res<()> {
    let bin = binary(args, "serve")?;
    let pool = args.events.clamp(4_000, 100_000);
    println!("preparing {pool} events in 400-event batches ...");
    let batches = Arc::new(build_batches(pool)?);
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let dir = args
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("bench-data"));
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let log_path = dir.join("serve-stderr.log");
    let log = fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", &addr, "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let guard = ChildGuard(child);

    // Alert reader: matches marker alerts to the send time of their batch.
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let alerts = Arc::new(AtomicU64::new(0));
    {
        let (sent, latencies, alerts) = (sent.clone(), latencies.clone(), alerts.clone());
        std::thread::spawn(move || {
            let needle = format!("{MARKER_PREFIX}-");
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let now = Instant::now();
                alerts.fetch_add(1, Ordering::Relaxed);
                let Some(at) = line.find(&needle) else {
                    continue;
                };
                let digits = &line[at + needle.len()..];
                let Some(seq) = digits.get(..12).and_then(|d| d.parse::<u64>().ok()) else {
                    continue;
                };
                if let Some(t) = sent.lock().remove(&seq) {
                    latencies.lock().push(now - t);
                }
            }
        });
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(args.clients * 2)
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("http://{addr}/audit?timeout=30s");
        wait_ready(&client, &format!("http://{addr}/healthz")).await?;

        // Phase 1: full rate.
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let seq = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..args.clients {
            let (client, url, batches, tally, stop, seq) = (
                client.clone(),
                url.clone(),
                batches.clone(),
                tally.clone(),
                stop.clone(),
                seq.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let b = &batches[(n % batches.len() as u64) as usize];
                    post(&client, &url, b.body_for(n), b.events, &tally).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(args.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        let el = t0.elapsed().as_secs_f64();
        let full_rate = tally.accepted_events.load(Ordering::Relaxed) as f64 / el;
        println!("serve, full rate ({} clients, {} s):", args.clients, args.seconds);
        println!(
            "  accepted    {:.0} events/s ({} batches ok, {} throttled with 429, {} failed)",
            full_rate,
            tally.batches_ok.load(Ordering::Relaxed),
            tally.throttled.load(Ordering::Relaxed),
            tally.failed.load(Ordering::Relaxed)
        );
        if full_rate <= 0.0 {
            return Err("no batch was accepted".to_string());
        }

        // Phase 2: half that rate, paced; latency of the marker alerts.
        tokio::time::sleep(Duration::from_secs(2)).await;
        latencies.lock().clear();
        sent.lock().clear();
        let rate = full_rate / 2.0;
        let interval = Duration::from_secs_f64(400.0 / rate);
        let tally = Arc::new(Tally::default());
        let limit = Arc::new(tokio::sync::Semaphore::new(args.clients * 4));
        let start = tokio::time::Instant::now();
        let mut k = 0u64;
        let mut tasks = Vec::new();
        let base = seq.load(Ordering::Relaxed) + 1;
        while start.elapsed() < Duration::from_secs(args.seconds) {
            tokio::time::sleep_until(start + interval * k as u32).await;
            let Ok(permit) = limit.clone().acquire_owned().await else { break };
            let n = base + k;
            k += 1;
            let b = &batches[(n % batches.len() as u64) as usize];
            let body = b.body_for(n);
            let events = b.events;
            let (client, url, tally, sent) = (client.clone(), url.clone(), tally.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                sent.lock().insert(n, Instant::now());
                post(&client, &url, body, events, &tally).await;
                drop(permit);
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        // Let the pipeline drain before reading the figures.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut lat = latencies.lock().clone();
        lat.sort();
        let missing = sent.lock().len();
        println!("serve, half rate ({rate:.0} events/s target, {k} batches):");
        println!(
            "  accepted    {} events ({} throttled, {} failed)",
            tally.accepted_events.load(Ordering::Relaxed),
            tally.throttled.load(Ordering::Relaxed),
            tally.failed.load(Ordering::Relaxed)
        );
        if lat.is_empty() {
            println!("  latency     no marker alert seen on stdout ({} alert lines in all); is the exec-into-container rule loaded?", alerts.load(Ordering::Relaxed));
        } else {
            let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
            println!(
                "  latency     request sent -> alert written: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} markers, {missing} without alert)",
                pct(0.50).as_secs_f64() * 1e3,
                pct(0.99).as_secs_f64() * 1e3,
                lat[lat.len() - 1].as_secs_f64() * 1e3,
                lat.len()
            );
        }
        Ok(())
    });
    drop(guard);
    println!("server log: {}", log_path.display());
    result
}

async fn wait_ready(client: &reqwest::Client, url: &str) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("server not ready at {url} after 15 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>, events: u64, tally: &Tally) {
    let res = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => {
            let _ = r.bytes().await;
            tally.accepted_events.fetch_add(events, Ordering::Relaxed);
            tally.batches_ok.fetch_add(1, Ordering::Relaxed);
        }
        Ok(r) if r.status().as_u16() == 429 => {
            tally.throttled.fetch_add(1, Ordering::Relaxed);
            // Honour a short back-off, as client-go does with Retry-After.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        _ => {
            tally.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
