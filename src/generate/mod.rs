//! A realistic Kubernetes audit-traffic generator, for the demo, benchmarks and measuring
//! detection quality.
//!
//! [`generate`] writes JSON lines exactly as the API server's log backend does
//! (`audit.k8s.io/v1`, Go field order, Go's HTML-safe escaping, MicroTime timestamps):
//! kubelets renewing leases and reading their pods' Secrets, control-plane components and
//! controllers, add-on operators (ingress-nginx and kube-state-metrics listing Secrets
//! cluster-wide, cert-manager, Argo CD listing everything, Prometheus), anonymous health
//! probes, people with kubectl and a CI bot; RequestReceived + ResponseComplete pairs
//! (and ResponseStarted for long-running requests), authorization annotations, some
//! 403/404/409 responses, and request/response bodies where the simulated policy logs
//! them. Optional [`Scenario`]s inject attack stories at chosen offsets.
//!
//! Everything is drawn from one seeded PRNG and a simulated clock: the same
//! [`GenConfig`] always gives the same bytes.
//!
//! # Layout
//! - `cluster`: the simulated cluster (nodes, namespaces, workloads, identities).
//! - `sim`: requests, the audit policy, stage scheduling and output.
//! - `benign`: the weighted table of benign activities.
//! - `scenarios`: the attack stories.
//! - `bodies`: request/response objects; `render`: Go-compatible JSON output.

mod benign;
mod bodies;
mod cluster;
mod render;
mod scenarios;
mod sim;

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use fastrand::Rng;

pub use render::{to_go_json, GoFormatter};
pub use scenarios::Scenario;

/// When generation stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// After this many events (at least: injected scenarios always complete).
    Events(u64),
    /// After this much simulated time.
    Duration(Duration),
}

/// A scenario placed at an offset from the start of the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Injection {
    /// The story to inject.
    pub scenario: Scenario,
    /// Offset from the start; `None` spreads the scenarios evenly over the run.
    pub at: Option<Duration>,
}

impl FromStr for Injection {
    type Err = GenError;

    /// Parses `NAME` or `NAME@OFFSET`, e.g. `secret-sweep@15m`.
    fn from_str(s: &str) -> Result<Injection, GenError> {
        let (name, at) = match s.split_once('@') {
            Some((n, off)) => (n, Some(parse_duration(off)?)),
            None => (s, None),
        };
        let scenario = Scenario::ALL
            .iter()
            .copied()
            .find(|sc| sc.name() == name.trim())
            .ok_or_else(|| {
                GenError::Invalid(format!(
                    "unknown scenario `{name}`; known: {}",
                    Scenario::ALL
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        Ok(Injection { scenario, at })
    }
}

/// Parses a duration such as `90s`, `15m`, `1h30m`, `2d` or `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, GenError> {
    let bad = || {
        GenError::Invalid(format!(
            "`{s}` is not a duration (examples: 90s, 15m, 1h30m, 2d)"
        ))
    };
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total_ms = n
            .checked_mul(mult)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// PRNG seed: the same config gives the same bytes.
    pub seed: u64,
    /// When to stop.
    pub limit: Limit,
    /// Simulated time of the first event.
    pub start: DateTime<Utc>,
    /// Average events per simulated second.
    pub rate_per_sec: f64,
    /// Worker nodes.
    pub nodes: usize,
    /// Application namespaces (system and add-on namespaces come on top).
    pub namespaces: usize,
    /// Application workloads (Deployments) spread over the application namespaces.
    pub workloads: usize,
    /// Attack stories to inject.
    pub scenarios: Vec<Injection>,
    /// People and the CI bot follow office hours (UTC, weekdays).
    pub diurnal: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 1,
            limit: Limit::Events(100_000),
            start: default_start(),
            rate_per_sec: 100.0,
            nodes: 12,
            namespaces: 10,
            workloads: 40,
            scenarios: Vec::new(),
            diurnal: false,
        }
    }
}

fn default_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

impl GenConfig {
    /// Checks the values, listing every problem.
    pub fn validate(&self) -> Result<(), GenError> {
        let mut problems = Vec::new();
        if !(self.rate_per_sec.is_finite() && self.rate_per_sec > 0.0) {
            problems.push(format!(
                "`rate` must be a positive number, not {}",
                self.rate_per_sec
            ));
        }
        for (name, v, max) in [
            ("nodes", self.nodes, 5_000),
            ("namespaces", self.namespaces, 10_000),
            ("workloads", self.workloads, 100_000),
        ] {
            if v == 0 || v > max {
                problems.push(format!("`{name}` must be between 1 and {max}, not {v}"));
            }
        }
        match self.limit {
            Limit::Events(0) => problems.push("`events` must be greater than zero".into()),
            Limit::Duration(d) if d.is_zero() => {
                problems.push("`duration` must be greater than zero".into())
            }
            _ => {}
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(GenError::Invalid(problems.join("; ")))
        }
    }

    /// The bundled demo example (`src/demo/story.jsonl`): a quiet small cluster on
    /// 2026-11-02 with a compromised service account sweeping Secrets, a cluster-admin
    /// binding, a privileged pod with a host mount and an exec into kube-system.
    pub fn demo() -> GenConfig {
        let at = |secs| Some(Duration::from_secs(secs));
        GenConfig {
            seed: 20_261_102,
            limit: Limit::Events(300),
            start: Utc
                .with_ymd_and_hms(2026, 11, 2, 9, 0, 0)
                .single()
                .unwrap_or_default(),
            rate_per_sec: 0.45,
            nodes: 3,
            namespaces: 5,
            workloads: 8,
            scenarios: vec![
                Injection {
                    scenario: Scenario::SecretSweep,
                    at: at(60),
                },
                Injection {
                    scenario: Scenario::ClusterAdminBinding,
                    at: at(290),
                },
                Injection {
                    scenario: Scenario::PrivilegedPod,
                    at: at(350),
                },
                Injection {
                    scenario: Scenario::ExecKubeSystem,
                    at: at(385),
                },
            ],
            diurnal: false,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenStats {
    /// Lines written.
    pub events: u64,
    /// Bytes written (including newlines).
    pub bytes: u64,
    /// Lines at stage RequestReceived.
    pub request_received: u64,
    /// Lines at stage ResponseStarted.
    pub response_started: u64,
    /// Lines at stage ResponseComplete.
    pub response_complete: u64,
    /// Lines that belong to injected scenarios.
    pub scenario_events: u64,
    /// Stage time of the first line, microseconds since the epoch.
    pub first_micros: Option<i64>,
    /// Stage time of the last line, microseconds since the epoch.
    pub last_micros: Option<i64>,
}

impl GenStats {
    /// Average line size in bytes.
    pub fn avg_bytes(&self) -> f64 {
        if self.events == 0 {
            0.0
        } else {
            self.bytes as f64 / self.events as f64
        }
    }
}

impl fmt::Display for GenStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ts = |m: Option<i64>| {
            m.and_then(DateTime::from_timestamp_micros)
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "-".into())
        };
        write!(
            f,
            "{} events, {:.1} MB, {:.0} bytes/event on average ({} RequestReceived, {} ResponseStarted, {} ResponseComplete; {} from scenarios), {} .. {}",
            self.events,
            self.bytes as f64 / 1e6,
            self.avg_bytes(),
            self.request_received,
            self.response_started,
            self.response_complete,
            self.scenario_events,
            ts(self.first_micros),
            ts(self.last_micros)
        )
    }
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// A configuration value is wrong.
    #[error("invalid generator settings: {0}")]
    Invalid(String),
    /// Writing the output failed.
    #[error("cannot write generated events: {0}")]
    Io(#[from] io::Error),
}

/// Writes the events described by `cfg` to `out` as JSON lines.
pub fn generate(cfg: &GenConfig, out: &mut dyn Write) -> Result<GenStats, GenError> {
    cfg.validate()?;
    let mut rng = Rng::with_seed(cfg.seed);
    let cluster = cluster::Cluster::build(&mut rng, cfg.nodes, cfg.namespaces, cfg.workloads);
    let mut sim = sim::Sim::new(rng, cluster);
    let actors = benign::Actors::new(&sim.cluster);
    let start = cfg.start.timestamp_micros();
    let span = match cfg.limit {
        Limit::Duration(d) => d.as_micros() as i64,
        Limit::Events(n) => (n as f64 / cfg.rate_per_sec * 1e6) as i64,
    };
    let n = cfg.scenarios.len() as i64;
    let cast = scenarios::cast(&mut sim);
    for (i, inj) in cfg.scenarios.iter().enumerate() {
        let at = match inj.at {
            Some(d) => d.as_micros() as i64,
            None => span / (n + 1) * (i as i64 + 1),
        };
        scenarios::emit(&mut sim, &cast, inj.scenario, start + at);
    }
    let end = match cfg.limit {
        Limit::Duration(_) => Some(start + span),
        Limit::Events(_) => None,
    };
    let max_events = match cfg.limit {
        Limit::Events(n) => n,
        Limit::Duration(_) => u64::MAX,
    };
    let mut t = start;
    let mut last_stages = 2.0_f64;
    let mut scheduled = sim.scheduled();
    'run: loop {
        // Exponential gaps (a Poisson process) scaled by the lines the previous activity
        // produced, so that the average is `rate_per_sec` lines per simulated second.
        let u = 1.0 - sim.rng.f64();
        let gap = (-u.ln() * last_stages / cfg.rate_per_sec * 1e6) as i64;
        let t_next = t + gap.max(1);
        let horizon = end.map_or(t_next, |e| e.min(t_next));
        while sim.next_time().is_some_and(|nt| nt <= horizon) {
            sim.write_next(out)?;
            if sim.stats.events >= max_events {
                break 'run;
            }
        }
        if end.is_some_and(|e| t_next > e) {
            break;
        }
        t = t_next;
        benign::activity(&mut sim, &actors, t, cfg.diurnal);
        let now = sim.scheduled();
        last_stages = (now - scheduled) as f64;
        scheduled = now;
    }
    sim.finish(out)?;
    Ok(sim.stats.clone())
}

/// Command-line arguments of `audithawk generate` (add it to the CLI as a subcommand
/// with these args and call [`run_args`]).
#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// Number of events to write (at least: injected scenarios always complete).
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Generate this much simulated time instead of a number of events (e.g. 2h, 1d).
    #[arg(long, value_parser = parse_duration_arg, conflicts_with = "events")]
    pub duration: Option<Duration>,
    /// A realistic busy day: 24 h of benign traffic with office hours (30 events/s
    /// unless --rate is given).
    #[arg(long, conflicts_with_all = ["events", "duration"])]
    pub benign_day: bool,
    /// PRNG seed; the same arguments always give the same output.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated time of the first event (RFC 3339).
    #[arg(long, value_parser = parse_start_arg, default_value = "2026-11-02T00:00:00Z")]
    pub start: DateTime<Utc>,
    /// Average events per simulated second (default 100; 30 with --benign-day).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Worker nodes in the simulated cluster.
    #[arg(long, default_value_t = 12)]
    pub nodes: usize,
    /// Application namespaces.
    #[arg(long, default_value_t = 10)]
    pub namespaces: usize,
    /// Application workloads.
    #[arg(long, default_value_t = 40)]
    pub workloads: usize,
    /// Inject an attack scenario, NAME or NAME@OFFSET (e.g. secret-sweep@2h); repeatable.
    /// Without an offset, scenarios are spread evenly. See --list-scenarios.
    #[arg(long = "scenario", value_name = "NAME[@OFFSET]")]
    pub scenarios: Vec<String>,
    /// Inject every scenario, spread evenly over the run.
    #[arg(long)]
    pub all_scenarios: bool,
    /// Office-hours pattern for people and CI (on by default with --benign-day).
    #[arg(long)]
    pub diurnal: bool,
    /// Print the scenarios with the USE_CASES.md rows each should trigger, and exit.
    #[arg(long)]
    pub list_scenarios: bool,
    /// Output file; `-` is stdout.
    #[arg(short, long, default_value = "-")]
    pub output: PathBuf,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn parse_start_arg(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time: {e}"))
}

impl GenArgs {
    /// The generator configuration these arguments describe.
    pub fn to_config(&self) -> Result<GenConfig, GenError> {
        let mut scenarios = if self.all_scenarios {
            Scenario::ALL
                .iter()
                .map(|&scenario| Injection { scenario, at: None })
                .collect()
        } else {
            Vec::new()
        };
        for s in &self.scenarios {
            scenarios.push(s.parse()?);
        }
        let (limit, rate, diurnal) = if self.benign_day {
            (
                Limit::Duration(Duration::from_secs(86_400)),
                self.rate.unwrap_or(30.0),
                true,
            )
        } else if let Some(d) = self.duration {
            (Limit::Duration(d), self.rate.unwrap_or(100.0), self.diurnal)
        } else {
            (
                Limit::Events(self.events),
                self.rate.unwrap_or(100.0),
                self.diurnal,
            )
        };
        Ok(GenConfig {
            seed: self.seed,
            limit,
            start: self.start,
            rate_per_sec: rate,
            nodes: self.nodes,
            namespaces: self.namespaces,
            workloads: self.workloads,
            scenarios,
            diurnal,
        })
    }
}

/// The scenario catalog: one line per scenario with the rows it should trigger.
pub fn scenario_catalog() -> String {
    let mut s = String::new();
    for sc in Scenario::ALL {
        let rows: Vec<String> = sc.rows().iter().map(u32::to_string).collect();
        s.push_str(&format!("{:<24} rows {}\n", sc.name(), rows.join(", ")));
    }
    s
}

/// Runs `audithawk generate`: writes the events (or the scenario catalog) to the chosen
/// output and returns what was written. The caller prints the stats to stderr.
pub fn run_args(args: &GenArgs) -> Result<GenStats, GenError> {
    if args.list_scenarios {
        io::stdout().write_all(scenario_catalog().as_bytes())?;
        return Ok(GenStats::default());
    }
    let cfg = args.to_config()?;
    if args.output.as_os_str() == "-" {
        let stdout = io::stdout();
        let mut lock = stdout.lock();
        generate(&cfg, &mut lock)
    } else {
        let mut f = std::fs::File::create(&args.output).map_err(|e| {
            GenError::Io(io::Error::new(
                e.kind(),
                format!("{}: {e}", args.output.display()),
            ))
        })?;
        generate(&cfg, &mut f)
    }
}
