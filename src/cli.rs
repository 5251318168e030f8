//! The command line: parses arguments, loads config and rules, and runs one command.
//!
//! This is the edge of the program: errors become messages on stderr and exit codes here
//! (anyhow is used only in this module). Exit codes: 0 success; 1 the command ran and
//! found what it was asked to fail on (`scan --fail-on`, `rules test`, `rules lint`,
//! `config check`); 2 usage, configuration or rule errors that stopped it from running.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, LogFormat};
use crate::engine::Engine;
use crate::ingest::scan::{scan, ScanOptions};
use crate::model::Level;
use crate::rules::{LoadOptions, RuleSet};
use crate::sinks::stdout::{render, Format};
use crate::telemetry::{logging, Metrics};

/// audithawk: Kubernetes audit-log streaming analyzer.
#[derive(Debug, Parser)]
#[command(name = "audithawk", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (YAML); defaults are embedded (`audithawk config default`).
    #[arg(long, short = 'c', global = true, env = "AUDITHAWK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level (trace, debug, info, warn, error); AUDITHAWK_LOG overrides.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Rule sources, accepted by every command that evaluates rules.
#[derive(Debug, Clone, Args, Default)]
pub struct RuleArgs {
    /// Add a user rule directory or file (repeatable).
    #[arg(long = "rules", value_name = "DIR")]
    pub rules: Vec<PathBuf>,
    /// Add a user list file for `|expand` placeholders (repeatable).
    #[arg(long = "lists", value_name = "FILE")]
    pub lists: Vec<PathBuf>,
    /// Load a Falco rules file as it is (repeatable).
    #[arg(long = "rules-falco", value_name = "FILE")]
    pub rules_falco: Vec<PathBuf>,
    /// Do not load the built-in rules.
    #[arg(long)]
    pub no_builtin: bool,
    /// Start even if some rules are broken (they are skipped and reported).
    #[arg(long)]
    pub skip_broken_rules: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// See it work: replay a bundled attack story through the real webhook and print the alerts.
    Demo(DemoArgs),
    /// Run the webhook backend receiver: POST /audit and /audit/{cluster}.
    Serve(ServeArgs),
    /// Follow JSON-lines audit logs through rotation, resuming from a durable checkpoint.
    Tail(TailArgs),
    /// Evaluate events from Kafka as one member of a detector group (docs/scale-out.md).
    Detect(DetectArgs),
    /// Scan audit logs offline: files, directories (recursively, in time order), .gz, or `-` for stdin.
    Scan(ScanArgs),
    /// Generate realistic audit traffic (JSON lines), optionally with attack scenarios.
    Generate(crate::generate::GenArgs),
    /// Manage rules: list, test, lint.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Audit policy tools.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// `demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Alert output.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Events per EventList request (the API server sends up to 400).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Print alerts at or above this level (the story's low-level context alerts are
    /// counted in the summary either way).
    #[arg(long, value_name = "LEVEL", value_parser = parse_level, default_value = "medium")]
    pub min_level: Level,
    /// Rule sources.
    #[command(flatten)]
    pub rules: RuleArgs,
}

/// Where the ingest tier sends accepted events instead of evaluating them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardTo {
    /// The `kafka.events_topic` topic (docs/scale-out.md).
    Kafka,
}

/// Where `detect` reads events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DetectFrom {
    /// The `kafka.events_topic` topic, as a member of `kafka.group_id`.
    Kafka,
}

/// Kafka flags shared by `serve`, `tail` and `detect` (they override the `kafka:` section).
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Bootstrap servers (host:port[,host:port...]).
    #[arg(long, value_name = "HOSTS")]
    pub kafka_brokers: Option<String>,
    /// Events topic.
    #[arg(long, value_name = "TOPIC")]
    pub kafka_topic: Option<String>,
}

impl KafkaArgs {
    fn apply(&self, cfg: &mut Config) {
        if let Some(b) = &self.kafka_brokers {
            cfg.kafka.brokers = b.clone();
        }
        if let Some(t) = &self.kafka_topic {
            cfg.kafka.events_topic = t.clone();
        }
    }
}

/// `detect` arguments.
#[derive(Debug, Clone, Args)]
pub struct DetectArgs {
    /// The event source.
    #[arg(long, value_enum)]
    pub from: DetectFrom,
    /// Consumer group (default `kafka.group_id`).
    #[arg(long)]
    pub group: Option<String>,
    /// Where /metrics, /healthz and /readyz are served (default `kafka.detect_listen`,
    /// 0.0.0.0:9090; "" turns them off).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Alerts to stdout in this format (replaces the configured sinks).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Rule sources.
    #[command(flatten)]
    pub rules: RuleArgs,
}

/// `serve` arguments (they override the config file).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Listen address (default 0.0.0.0:8443).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// PEM certificate chain; with --tls-key enables TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: require client certificates signed by it.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,
    /// File holding the bearer token the API server must send.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Cluster name for `POST /audit` (the path `/audit/{cluster}` overrides it).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Alerts to stdout in this format (replaces the configured sinks).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Publish accepted events to Kafka instead of evaluating them here (the stateless
    /// ingest tier; `detect --from kafka` evaluates them).
    #[arg(long, value_enum, value_name = "DEST")]
    pub forward_to: Option<ForwardTo>,
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Rule sources.
    #[command(flatten)]
    pub rules: RuleArgs,
}

/// `tail` arguments (they override the config file).
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Files or glob patterns to follow (added to `tail.paths`).
    #[arg(value_name = "FILE|GLOB")]
    pub paths: Vec<String>,
    /// Checkpoint file (default /var/lib/audithawk/tail.checkpoint).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Where to start in a file without a checkpoint.
    #[arg(long, value_enum)]
    pub from: Option<crate::config::StartAt>,
    /// Cluster name attached to events and alerts.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Alerts to stdout in this format (replaces the configured sinks).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Publish the lines' events to Kafka instead of evaluating them here; the checkpoint
    /// advances only after the brokers acknowledged.
    #[arg(long, value_enum, value_name = "DEST")]
    pub forward_to: Option<ForwardTo>,
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Rule sources.
    #[command(flatten)]
    pub rules: RuleArgs,
}

/// `scan` arguments.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Inputs: files, directories, or `-` for stdin.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Alert output: readable lines or JSON lines.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Exit with status 1 when an alert at or above this level fired (for CI).
    #[arg(long, value_name = "LEVEL", value_parser = parse_level)]
    pub fail_on: Option<Level>,
    /// Cluster name attached to events and alerts.
    #[arg(long)]
    pub cluster: Option<String>,
    /// No progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// No summary on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Rule sources.
    #[command(flatten)]
    pub rules: RuleArgs,
}

/// `rules` subcommands.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Print the rule catalog (id, level, tactic, technique, title).
    List {
        /// Rule sources.
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// Check rules: load and compile them, warn about rules that can never match.
    Lint {
        /// Rule directories or files to lint (default: the built-in rules).
        paths: Vec<PathBuf>,
        /// Extra list files for `|expand`.
        #[arg(long = "lists", value_name = "FILE")]
        lists: Vec<PathBuf>,
    },
    /// Convert Falco rules to Sigma where they can be expressed; lists the rest with the reason.
    ImportFalco {
        /// Falco rule files (later files override and append, as in Falco).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Directory to write the Sigma rules into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Run every rule's positive and negative examples; non-zero on failure.
    Test {
        /// Rule directories or files (default: the built-in rules).
        paths: Vec<PathBuf>,
        /// Extra list files for `|expand`.
        #[arg(long = "lists", value_name = "FILE")]
        lists: Vec<PathBuf>,
    },
}

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Report, for every loaded detection, whether an audit Policy lets it see what it needs.
    Check {
        /// The audit.k8s.io/v1 Policy file.
        policy: PathBuf,
        /// Exit with status 1 when a high or critical detection is blind (for CI).
        #[arg(long)]
        fail_on_blind: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Rule sources.
        #[command(flatten)]
        rules: RuleArgs,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file, listing every problem with its line.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print the embedded default configuration (every key, documented).
    Default,
}

fn parse_level(s: &str) -> Result<Level, String> {
    Level::parse(s)
        .ok_or_else(|| format!("{s:?} is not one of informational, low, medium, high, critical"))
}

/// Runs the CLI; returns the process exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("audithawk: {e:#}");
            2
        }
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    match path {
        Some(p) => Config::load(p).map_err(|e| anyhow!("{e}")),
        None => Ok(Config::default()),
    }
}

/// Logging settings resolved from flags and config.
struct LogSettings {
    json: bool,
    level: String,
}

/// Runs a long-running command inside the runtime, with OTLP export when configured:
/// the exporter needs the runtime, and logging needs the exporter's span layer.
fn run_long<F, Fut>(cfg: &Config, metrics: Arc<Metrics>, log: &LogSettings, f: F) -> Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::app::AppError>>,
{
    let rt = runtime()?;
    rt.block_on(async {
        let guard = match &cfg.telemetry.otlp {
            Some(o) => {
                let g = crate::telemetry::otel::init(o.to_otel(), metrics)
                    .map_err(|e| anyhow!("telemetry.otlp: {e}"))?;
                logging::init_with_otel(log.json, &log.level, Some(&g));
                Some(g)
            }
            None => None,
        };
        let res = f().await;
        if let Some(g) = guard {
            // Export what is left (blocking call; the export runs on this runtime).
            let _ = tokio::task::spawn_blocking(move || g.shutdown()).await;
        }
        res.map_err(anyhow::Error::from)
    })
}

fn init_logging(cli: &Cli, cfg: &Config) {
    let json = cli.log_format.unwrap_or(cfg.logging.format) == LogFormat::Json;
    logging::init(json, cli.log_level.as_deref().unwrap_or(&cfg.logging.level));
}

/// Rule load options from config plus command-line flags (flags add to the config).
pub fn load_options(cfg: &Config, args: &RuleArgs) -> LoadOptions {
    let mut dirs = cfg.rules.dirs.clone();
    dirs.extend(args.rules.iter().cloned());
    let mut lists = cfg.rules.lists.clone();
    lists.extend(args.lists.iter().cloned());
    LoadOptions {
        builtin: cfg.rules.builtin && !args.no_builtin,
        dirs,
        lists,
        skip_broken: cfg.rules.skip_broken || args.skip_broken_rules,
    }
}

/// Loads the Falco rule files from config and flags (none: `None`), printing warnings;
/// fails listing every error.
pub fn load_falco(
    cfg: &Config,
    args: &RuleArgs,
) -> Result<Option<Arc<crate::rules::falco::FalcoRuleSet>>> {
    let mut files = cfg.rules.falco.clone();
    files.extend(args.rules_falco.iter().cloned());
    if files.is_empty() {
        return Ok(None);
    }
    match crate::rules::falco::FalcoRuleSet::load_files(&files) {
        Ok((set, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            Ok(Some(Arc::new(set)))
        }
        Err(errors) => Err(error_list("Falco rule error(s):", &errors)),
    }
}

/// Loads every rule source and builds the engine.
pub fn build_engine(cfg: &Config, args: &RuleArgs, metrics: &Arc<Metrics>) -> Result<Engine> {
    let rules = load_rules(&load_options(cfg, args))?;
    let falco = load_falco(cfg, args)?;
    let correlator = build_correlator(cfg, &rules, metrics)?;
    let mut engine =
        Engine::new(Arc::new(rules), cfg.engine.dedup_capacity, metrics.clone()).with_falco(falco);
    if let Some(c) = correlator {
        engine = engine.with_correlator(c);
    }
    Ok(engine)
}

/// The correlation engine, when anything needs it (correlation rules, or `tuning`
/// exceptions and re-alert intervals for any rule); restores its snapshot when
/// `state.state_dir` is set. `state.default_suppress` applies to correlation groups only,
/// so it alone needs no correlator.
pub fn build_correlator(
    cfg: &Config,
    rules: &RuleSet,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<crate::engine::correlate::Correlator>>> {
    let needed = !rules.correlations().is_empty() || cfg.tuning.is_some();
    if !needed {
        return Ok(None);
    }
    let c = crate::engine::correlate::Correlator::new(rules, cfg.state_config(metrics.clone()))
        .map_err(|errors| error_list("correlation rule error(s):", &errors))?;
    let restored = c
        .load()
        .map_err(|e| anyhow!("restoring correlation state: {e}"))?;
    tracing::debug!(?restored, "Correlation state restored.");
    Ok(Some(Arc::new(c)))
}

/// "N <what>" followed by every error on its own indented line.
fn error_list(what: &str, errors: &[crate::rules::RuleError]) -> anyhow::Error {
    let mut msg = format!("{} {what}", errors.len());
    for e in errors {
        msg.push_str(&format!("\n  {e}"));
    }
    anyhow!(msg)
}

/// Loads and compiles the rules, printing warnings; fails listing every error.
pub fn load_rules(opts: &LoadOptions) -> Result<RuleSet> {
    match RuleSet::load(opts) {
        Ok((set, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            Ok(set)
        }
        Err(errors) => Err(error_list(
            "rule error(s); fix them or pass --skip-broken-rules:",
            &errors,
        )),
    }
}

fn dispatch(cli: Cli) -> Result<i32> {
    let cfg = load_config(cli.config.as_ref())?;
    // The demo's own plain-HTTP loopback server would log a warning meant for production;
    // keep its terminal output to the alerts unless asked otherwise.
    if matches!(cli.command, Command::Demo(_)) && cli.log_level.is_none() {
        logging::init(false, "error");
    }
    // `serve` and `tail` install logging themselves, inside their runtime, so that the
    // OpenTelemetry span exporter can join the subscriber.
    let long_running = matches!(
        cli.command,
        Command::Serve(_) | Command::Tail(_) | Command::Detect(_)
    );
    if !long_running || cfg.telemetry.otlp.is_none() {
        init_logging(&cli, &cfg);
    }
    let log = LogSettings {
        json: cli.log_format.unwrap_or(cfg.logging.format) == LogFormat::Json,
        level: cli
            .log_level
            .clone()
            .unwrap_or_else(|| cfg.logging.level.clone()),
    };
    match cli.command {
        Command::Demo(args) => cmd_demo(cfg, args),
        Command::Generate(args) => {
            let stats = crate::generate::run_args(&args).map_err(|e| anyhow!("{e}"))?;
            tracing::info!(?stats, "Generated.");
            Ok(0)
        }
        Command::Serve(args) => cmd_serve(cfg, args, cli.config, &log),
        Command::Tail(args) => cmd_tail(cfg, args, cli.config, &log),
        Command::Detect(args) => cmd_detect(cfg, args, &log),
        Command::Scan(args) => cmd_scan(&cfg, args),
        Command::Rules(cmd) => cmd_rules(&cfg, cmd),
        Command::Policy(PolicyCommand::Check {
            policy,
            fail_on_blind,
            format,
            rules,
        }) => {
            let set = load_rules(&load_options(&cfg, &rules))?;
            let out =
                crate::policy::run_check(&policy, &set, format == Format::Json, fail_on_blind)
                    .map_err(|e| anyhow!("{e}"))?;
            print!("{}", out.output);
            Ok(out.exit_code)
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{}", crate::config::DEFAULT_YAML);
            Ok(0)
        }
        Command::Config(ConfigCommand::Check { file }) => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(0)
            }
            Err(e) => {
                eprint!("{e}");
                Ok(1)
            }
        },
    }
}

/// Replaces the configured sinks with one stdout sink when `--format` is given.
fn stdout_override(cfg: &mut Config, format: Option<Format>) {
    if let Some(format) = format {
        cfg.sinks = vec![crate::config::SinkConfig::Stdout(
            crate::sinks::config::StdoutConfig {
                format,
                route: Default::default(),
            },
        )];
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve_overrides(cfg: &mut Config, args: &ServeArgs) -> Result<()> {
    let args = args.clone();
    if let Some(l) = args.listen {
        cfg.serve.listen = l;
    }
    if args.tls_cert.is_some() {
        cfg.serve.tls.cert = args.tls_cert;
        cfg.serve.tls.key = args.tls_key;
    }
    if args.client_ca.is_some() {
        cfg.serve.tls.client_ca = args.client_ca;
    }
    if let Some(t) = args.token_file {
        cfg.serve.bearer_token = None;
        cfg.serve.bearer_token_file = Some(t);
    }
    if args.cluster.is_some() {
        cfg.cluster = args.cluster;
    }
    args.kafka.apply(cfg);
    stdout_override(cfg, args.format);
    validate_merged(cfg)
}

/// Hot reload: the config file again, with the same command-line overrides and rule flags
/// (merged into `rules`, so the reloaded config describes every rule source).
fn reload_source(
    path: Option<PathBuf>,
    apply: impl Fn(&mut Config) -> Result<()> + Send + Sync + 'static,
) -> crate::reload::ReloadSource {
    let file = path.clone();
    crate::reload::ReloadSource {
        load: Arc::new(move || {
            let mut cfg = match &file {
                Some(p) => Config::load(p).map_err(|e| {
                    e.problems
                        .iter()
                        .map(|p| format!("{}: {p}", e.file))
                        .collect::<Vec<_>>()
                })?,
                None => Config::default(),
            };
            apply(&mut cfg).map_err(|e| vec![format!("{e:#}")])?;
            Ok(cfg)
        }),
        config_file: path,
    }
}

/// Merges the rule flags into `cfg.rules` (what `build_engine` does with them).
fn merge_rule_args(cfg: &mut Config, args: &RuleArgs) {
    let o = load_options(cfg, args);
    cfg.rules.builtin = o.builtin;
    cfg.rules.dirs = o.dirs;
    cfg.rules.lists = o.lists;
    cfg.rules.skip_broken = o.skip_broken;
    cfg.rules.falco.extend(args.rules_falco.iter().cloned());
}

fn cmd_serve(
    cfg: Config,
    args: ServeArgs,
    config_path: Option<PathBuf>,
    log: &LogSettings,
) -> Result<i32> {
    let forward = args.forward_to == Some(ForwardTo::Kafka);
    cmd_long(
        LongRun::Serve {
            forward_to_kafka: forward,
        },
        cfg,
        args,
        config_path,
        log,
        serve_overrides,
        |a| &a.rules,
    )
}

/// The long-running commands.
#[derive(Debug, Clone, Copy)]
enum LongRun {
    Serve {
        /// `--forward-to kafka`: publish instead of evaluating.
        forward_to_kafka: bool,
    },
    Tail {
        /// `--forward-to kafka`: publish instead of evaluating.
        forward_to_kafka: bool,
    },
}

/// Runs `serve` or `tail` with hot reload: the config file is re-read on SIGHUP or when a
/// watched file changes, and the same command-line overrides and rule flags are applied
/// again (merged into `rules`, so the reloaded config describes every rule source).
fn cmd_long<A: Clone + Send + Sync + 'static>(
    kind: LongRun,
    mut cfg: Config,
    args: A,
    config_path: Option<PathBuf>,
    log: &LogSettings,
    overrides: fn(&mut Config, &A) -> Result<()>,
    rules: fn(&A) -> &RuleArgs,
) -> Result<i32> {
    overrides(&mut cfg, &args)?;
    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(build_engine(&cfg, rules(&args), &metrics)?);
    let reload_args = args.clone();
    let source = reload_source(config_path, move |c| {
        overrides(c, &reload_args)?;
        merge_rule_args(c, rules(&reload_args));
        Ok(())
    });
    merge_rule_args(&mut cfg, rules(&args));
    let forward_to_kafka = match kind {
        LongRun::Serve { forward_to_kafka } | LongRun::Tail { forward_to_kafka } => {
            forward_to_kafka
        }
    };
    let opts = crate::app::RunOptions {
        reload: Some(source),
        forward_to_kafka,
        ..Default::default()
    };
    let shutdown = crate::app::shutdown_signal();
    run_long(&cfg, metrics.clone(), log, || async {
        match kind {
            LongRun::Serve { .. } => {
                crate::app::serve_with(&cfg, engine, metrics, shutdown, opts).await
            }
            LongRun::Tail { .. } => {
                crate::app::tail_with(&cfg, engine, metrics, shutdown, opts).await
            }
        }
    })?;
    Ok(0)
}

/// `detect --from kafka`: one member of the detector group until SIGTERM.
fn cmd_detect(mut cfg: Config, args: DetectArgs, log: &LogSettings) -> Result<i32> {
    let DetectFrom::Kafka = args.from;
    args.kafka.apply(&mut cfg);
    if let Some(g) = &args.group {
        cfg.kafka.group_id = g.clone();
    }
    if let Some(l) = &args.listen {
        cfg.kafka.detect_listen = l.clone();
    }
    stdout_override(&mut cfg, args.format);
    // Correlation state lives in the state topic, per partition, not in `state_dir`.
    if cfg.state.state_dir.take().is_some() {
        tracing::info!("`state.state_dir` is not used by detect: state is kept per partition in `kafka.state_topic`.");
    }
    validate_merged(&cfg)?;
    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(build_engine(&cfg, &args.rules, &metrics)?);
    let shutdown = crate::app::shutdown_signal();
    run_long(&cfg, metrics.clone(), log, || async {
        crate::app::detect_kafka(&cfg, engine, metrics, shutdown, None).await
    })?;
    Ok(0)
}

fn cmd_demo(mut cfg: Config, args: DemoArgs) -> Result<i32> {
    cfg.sinks = vec![crate::config::SinkConfig::Stdout(
        crate::sinks::config::StdoutConfig {
            format: args.format,
            route: crate::config::RouteConfig {
                min_level: Some(args.min_level),
                ..Default::default()
            },
        },
    )];
    // The demo has no disk-buffered sinks; keep anything it might write out of system paths.
    cfg.data_dir = std::env::temp_dir().join(format!("audithawk-demo-{}", std::process::id()));
    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(build_engine(&cfg, &args.rules, &metrics)?);
    let report =
        runtime()?.block_on(crate::app::demo(&cfg, engine, metrics.clone(), args.batch))?;
    let alerts = metrics.total("audithawk_alerts_total");
    let mut by_level = String::new();
    for level in Level::ALL.iter().rev() {
        let n: u64 = metrics.sum_where("audithawk_alerts_total", "level", level.as_str());
        if n > 0 {
            by_level.push_str(&format!(" {n} {level},"));
        }
    }
    eprintln!(
        "\ndemo: {} events POSTed as {} EventList requests to {} ({} accepted); {} alerts:{}",
        report.events,
        report.requests,
        report.url,
        report.accepted,
        alerts,
        by_level.trim_end_matches(',')
    );
    if args.min_level > Level::Informational {
        eprintln!(
            "(alerts below {} are counted but not printed: --min-level low shows them)",
            args.min_level
        );
    }
    eprintln!("next: `audithawk scan <your audit logs>` or `audithawk serve` (docs/webhook.md)");
    Ok(0)
}

fn tail_overrides(cfg: &mut Config, args: &TailArgs) -> Result<()> {
    let args = args.clone();
    cfg.tail.paths.extend(args.paths);
    if let Some(c) = args.checkpoint {
        cfg.tail.checkpoint = c;
    }
    if let Some(f) = args.from {
        cfg.tail.from = f;
    }
    if args.cluster.is_some() {
        cfg.cluster = args.cluster;
    }
    args.kafka.apply(cfg);
    stdout_override(cfg, args.format);
    if cfg.tail.paths.is_empty() {
        return Err(anyhow!(
            "nothing to follow: give FILE|GLOB arguments or set `tail.paths`"
        ));
    }
    validate_merged(cfg)
}

fn cmd_tail(
    cfg: Config,
    args: TailArgs,
    config_path: Option<PathBuf>,
    log: &LogSettings,
) -> Result<i32> {
    let forward = args.forward_to == Some(ForwardTo::Kafka);
    cmd_long(
        LongRun::Tail {
            forward_to_kafka: forward,
        },
        cfg,
        args,
        config_path,
        log,
        tail_overrides,
        |a| &a.rules,
    )
}

/// Flags bypass the file's validation, so the merged settings are validated again.
fn validate_merged(cfg: &Config) -> Result<()> {
    let problems = cfg.validate();
    if problems.is_empty() {
        return Ok(());
    }
    Err(anyhow!(
        "invalid settings:{}",
        crate::config::problem_list(&problems)
    ))
}

fn cmd_scan(cfg: &Config, args: ScanArgs) -> Result<i32> {
    let metrics = Arc::new(Metrics::new());
    let engine = build_engine(cfg, &args.rules, &metrics)?;
    let opts = ScanOptions {
        paths: args.paths,
        cluster: args.cluster.or_else(|| cfg.cluster.clone()),
        max_event_bytes: cfg.serve.max_event_bytes,
        progress: !args.no_progress,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, stdout.lock());
    let mut write_err: Option<std::io::Error> = None;
    let summary = scan(&opts, &engine, &metrics, &mut |a| {
        if write_err.is_none() {
            if let Err(e) = writeln!(out, "{}", render(&a, args.format)) {
                write_err = Some(e);
            }
        }
    });
    if let Some(c) = engine.correlator() {
        c.save()
            .map_err(|e| anyhow!("saving correlation state: {e}"))?;
    }
    if let Err(e) = out.flush() {
        write_err.get_or_insert(e);
    }
    drop(out);
    if let Some(e) = write_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing alerts");
        }
    }
    if !args.quiet {
        eprint!("{}", summary.render());
    }
    let failed = args
        .fail_on
        .is_some_and(|min| summary.max_level().is_some_and(|l| l >= min));
    Ok(if failed { 1 } else { 0 })
}

fn cmd_rules(cfg: &Config, cmd: RulesCommand) -> Result<i32> {
    match cmd {
        RulesCommand::List { rules } => {
            let set = load_rules(&load_options(cfg, &rules))?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<38} {:<13} {:<24} {:<12} {:<16} {:<15} TITLE",
                "ID", "LEVEL", "TACTIC", "TECHNIQUE", "STATE", "AUDIT LEVEL"
            )?;
            let entries = crate::rules::catalog::catalog(&set);
            for e in &entries {
                writeln!(
                    out,
                    "{:<38} {:<13} {:<24} {:<12} {:<16} {:<15} {}",
                    e.id,
                    e.level.as_str(),
                    if e.tactic.is_empty() { "-" } else { &e.tactic },
                    if e.technique.is_empty() {
                        "-"
                    } else {
                        &e.technique
                    },
                    e.state_type.as_str(),
                    e.audit_level,
                    e.title
                )?;
            }
            writeln!(out, "{} detections", entries.len())?;
            Ok(0)
        }
        RulesCommand::ImportFalco { files, out } => {
            let set = match crate::rules::falco::FalcoRuleSet::load_files(&files) {
                Ok((set, _warnings)) => set,
                Err(errors) => {
                    for e in &errors {
                        eprintln!("error: {e}");
                    }
                    return Ok(1);
                }
            };
            let (converted, skipped) = crate::rules::falco::to_sigma(&set);
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (name, yaml) in &converted {
                let path = out.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            println!("{} rules written to {}", converted.len(), out.display());
            if !skipped.is_empty() {
                println!(
                    "{} rules not expressible in Sigma (load them with --rules-falco instead):",
                    skipped.len()
                );
                for (rule, why) in &skipped {
                    println!("  {rule}: {why}");
                }
            }
            Ok(0)
        }
        RulesCommand::Test { paths, lists } => {
            let opts = LoadOptions {
                builtin: paths.is_empty(),
                dirs: paths,
                lists,
                skip_broken: false,
            };
            let set = match RuleSet::load(&opts) {
                Ok((set, _)) => set,
                Err(errors) => {
                    for e in &errors {
                        println!("error: {e}");
                    }
                    return Ok(1);
                }
            };
            let mut failures: Vec<String> = crate::rules::examples::run(&set)
                .iter()
                .map(|f| f.to_string())
                .collect();
            let single = set.rules().len();
            match crate::engine::correlate::Correlator::new(
                &set,
                crate::engine::state::StateConfig::default(),
            ) {
                Ok(c) => failures.extend(
                    c.run_examples(&|ev, out| set.evaluate(ev, out))
                        .iter()
                        .map(|f| f.to_string()),
                ),
                Err(errors) => failures.extend(errors.iter().map(|e| e.to_string())),
            }
            for f in &failures {
                println!("FAIL {f}");
            }
            println!(
                "{} rules and {} correlations: {} example failure(s)",
                single,
                set.correlations().len(),
                failures.len()
            );
            Ok(if failures.is_empty() { 0 } else { 1 })
        }
        RulesCommand::Lint { paths, lists } => {
            let builtin = paths.is_empty();
            let report = crate::rules::lint::lint(
                &paths,
                &crate::rules::lint::LintOptions { builtin, lists },
            );
            // Correlation documents are checked too: parse and reference errors are errors.
            let mut errors: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
            if report.ok() {
                let opts = LoadOptions {
                    builtin,
                    dirs: paths,
                    lists: Vec::new(),
                    skip_broken: true,
                };
                if let Ok((set, _)) = RuleSet::load(&opts) {
                    if let Err(errs) = crate::engine::correlate::Correlator::new(
                        &set,
                        crate::engine::state::StateConfig::default(),
                    ) {
                        errors.extend(errs.iter().map(|e| e.to_string()));
                    }
                }
            }
            for e in &errors {
                println!("error: {e}");
            }
            for w in &report.warnings {
                println!("warning: {w}");
            }
            println!(
                "{} rules compiled, {} errors, {} warnings",
                report.rules,
                errors.len(),
                report.warnings.len()
            );
            Ok(if errors.is_empty() { 0 } else { 1 })
        }
    }
}
