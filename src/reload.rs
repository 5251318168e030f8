//! Hot reload: SIGHUP, an explicit trigger, or a change of a watched file reloads rules,
//! lists, Falco files, tuning, sinks and the webhook's token, default cluster and TLS
//! certificates, without dropping events.
//!
//! # How a reload works
//! 1. The configuration is produced again by the caller's loader (config file plus the
//!    command-line overrides) and every part is built *before* anything is swapped: rules,
//!    Falco rules, the correlator, TLS acceptor, new sink drivers. Any error aborts the
//!    reload: the running set stays, every error is logged, and
//!    `audithawk_reloads_total{result="error"}` counts it.
//! 2. Keys that cannot change while running (listen address, connection limits, queue and
//!    worker sizes, tail settings, logging, ...) are reported as "needs restart" and their
//!    old values are kept.
//! 3. The engine is swapped through [`EngineSlot::swap_with`]: no batch is being evaluated
//!    at that moment, so the correlation state taken from the old engine is complete; the
//!    de-duplication set is shared with the new engine; state of correlations whose
//!    identity did not change is carried over ([`carry_state`]).
//! 4. Sinks: a sink whose settings did not change keeps its driver (and queue); a new or
//!    changed one gets a new driver; the old ones are flushed before dispatch resumes
//!    ([`RouterSwap::replace`](crate::pipeline::RouterSwap::replace)), so no alert is lost or sent twice. Dispatch is held from
//!    *before* the engine swap ([`RouterSlot::begin_swap`]), so an alert of a new rule
//!    never reaches a sink the new configuration removed.
//!
//! # Why polling
//! Watched files are checked every 2 s by (path, length, mtime). That works the same on
//! every platform and on Kubernetes ConfigMap/Secret volumes, which are updated by swapping a
//! `..data` symlink (inotify watches on the old target see nothing); `metadata()` follows
//! the symlink, so the swap is seen. The cost is a few `stat` calls every 2 s.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{Config, SinkConfig};
use crate::engine::correlate::{Correlator, RestoreStats};
use crate::engine::Engine;
use crate::ingest::webhook::WebhookControl;
use crate::pipeline::{EngineSlot, RouterSlot};
use crate::rules::falco::FalcoRuleSet;
use crate::rules::{CompiledRule, LoadOptions, RuleSet};
use crate::sinks::Router;
use crate::telemetry::Metrics;

/// How often watched files are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Produces the configuration to reload to: the config file plus command-line overrides,
/// validated; every problem as one line.
pub type ConfigLoader = Arc<dyn Fn() -> Result<Config, Vec<String>> + Send + Sync>;

/// What a reload needs to know besides the running pipeline.
#[derive(Clone)]
pub struct ReloadSource {
    /// Re-reads the configuration.
    pub load: ConfigLoader,
    /// The config file (watched), if any.
    pub config_file: Option<PathBuf>,
}

impl std::fmt::Debug for ReloadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadSource")
            .field("config_file", &self.config_file)
            .finish_non_exhaustive()
    }
}

/// The result of one reload.
#[derive(Debug, Clone, Default)]
pub struct ReloadOutcome {
    /// Whether the new settings are in force.
    pub ok: bool,
    /// Every error (the running set was kept).
    pub errors: Vec<String>,
    /// Changed keys that were ignored because they need a restart.
    pub needs_restart: Vec<String>,
    /// Correlation state carried over to the new engine.
    pub carried: RestoreStats,
    /// Correlations whose state was dropped because a rule they read changed.
    pub dropped_correlations: Vec<String>,
    /// Sinks started anew (new or changed settings).
    pub sinks_started: usize,
    /// Sinks flushed and stopped (removed or changed settings).
    pub sinks_stopped: usize,
}

/// Reloads a running pipeline (and webhook receiver, when serving).
pub struct Reloader {
    source: ReloadSource,
    engine: Arc<EngineSlot>,
    router: Arc<RouterSlot>,
    webhook: Option<WebhookControl>,
    metrics: Arc<Metrics>,
    /// The settings in force, and the sink settings in the order of the routers.
    /// A tokio mutex: one reload at a time.
    current: tokio::sync::Mutex<(Config, Vec<SinkConfig>)>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// A reloader over a pipeline started with `cfg`, one router per entry of `cfg.sinks`.
    pub fn new(
        source: ReloadSource,
        cfg: Config,
        engine: Arc<EngineSlot>,
        router: Arc<RouterSlot>,
        webhook: Option<WebhookControl>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        metrics.describe(
            "audithawk_reloads_total",
            "Configuration and rule reloads, by result (ok, error).",
        );
        let sinks = cfg.sinks.clone();
        Reloader {
            source,
            engine,
            router,
            webhook,
            metrics,
            current: tokio::sync::Mutex::new((cfg, sinks)),
        }
    }

    /// The files whose change triggers a reload (config file, rule directories and the
    /// rule files in them, lists, Falco files, TLS files, token file).
    pub async fn watched(&self) -> Vec<PathBuf> {
        let cur = self.current.lock().await;
        watched_files(&cur.0, self.source.config_file.as_deref())
    }

    /// Reloads now. Never panics; on error the running set stays and every error is
    /// logged and returned.
    pub async fn reload(&self) -> ReloadOutcome {
        let mut cur = self.current.lock().await;
        let out = self.reload_locked(&mut cur).await;
        let result = if out.ok { "ok" } else { "error" };
        self.metrics
            .count("audithawk_reloads_total", &[("result", result)], 1);
        for k in &out.needs_restart {
            tracing::warn!(key = %k, "Setting changed but needs a restart; the old value stays in force.");
        }
        if out.ok {
            tracing::info!(
                groups = out.carried.groups,
                tuples = out.carried.tuples,
                pending = out.carried.pending,
                dropped = ?out.dropped_correlations,
                sinks_started = out.sinks_started,
                sinks_stopped = out.sinks_stopped,
                "Reloaded rules and settings."
            );
        } else {
            for e in &out.errors {
                tracing::error!(error = %e, "Reload failed; the running rules and settings stay in force.");
            }
        }
        out
    }

    async fn reload_locked(&self, cur: &mut (Config, Vec<SinkConfig>)) -> ReloadOutcome {
        let mut out = ReloadOutcome::default();
        let fresh = match (self.source.load)() {
            Ok(c) => c,
            Err(errors) => {
                out.errors = errors;
                return out;
            }
        };
        let (cfg, needs_restart) = keep_static(&cur.0, fresh);
        out.needs_restart = needs_restart;

        // Build everything first; swap only when all of it succeeded.
        let metrics = self.metrics.clone();
        let cfg2 = cfg.clone();
        let built = tokio::task::spawn_blocking(move || build_rules(&cfg2, &metrics)).await;
        let (rules, falco, correlator) = match built {
            Ok(Ok(parts)) => parts,
            Ok(Err(errors)) => {
                out.errors = errors;
                return out;
            }
            Err(e) => {
                out.errors = vec![format!("building rules failed unexpectedly: {e}")];
                return out;
            }
        };
        let webhook_cfg = match &self.webhook {
            Some(ctl) => match crate::app::webhook_config(&cfg) {
                Ok(w) => match ctl.check(&w) {
                    Ok(()) => Some((ctl.clone(), w)),
                    Err(e) => {
                        out.errors.push(e.to_string());
                        return out;
                    }
                },
                Err(e) => {
                    out.errors.push(e.to_string());
                    return out;
                }
            },
            None => None,
        };
        // Sinks: reuse unchanged ones, build the rest.
        let mut plan: Vec<Option<usize>> = Vec::new(); // per new sink: index of an old one kept
        let mut taken = vec![false; cur.1.len()];
        for s in &cfg.sinks {
            let keep = cur
                .1
                .iter()
                .enumerate()
                .position(|(i, o)| !taken[i] && o == s);
            if let Some(i) = keep {
                taken[i] = true;
            }
            plan.push(keep);
        }
        let mut built_sinks: HashMap<usize, Router> = HashMap::new();
        for (i, s) in cfg.sinks.iter().enumerate() {
            if plan[i].is_some() {
                continue;
            }
            match crate::sinks::config::build_router(
                std::slice::from_ref(s),
                self.metrics.clone(),
                &cfg.data_dir,
            )
            .await
            {
                Ok(r) => {
                    built_sinks.insert(i, r);
                }
                Err(e) => {
                    out.errors.push(format!("sinks[{i}]: {e}"));
                }
            }
        }
        if !out.errors.is_empty() {
            for (_, r) in built_sinks {
                r.shutdown(cfg.shutdown_timeout.0).await;
            }
            return out;
        }

        // Hold dispatch first, then swap the engine while no batch is evaluated: a batch
        // evaluated by the new rules waits for the new sinks (see RouterSlot::begin_swap).
        // No engine read guard is ever held across a dispatch, so this cannot deadlock.
        let router_swap = self.router.begin_swap().await;
        let slot = self.engine.clone();
        let swapped = tokio::task::spawn_blocking(move || {
            let mut carried = (RestoreStats::default(), Vec::new());
            let res = slot.swap_with(|old| {
                carried = carry_state(old, &rules, correlator.as_deref())?;
                Ok::<_, String>(old.reloaded(rules, falco, correlator))
            });
            res.map(|_| carried)
        })
        .await;
        match swapped {
            Ok(Ok((stats, dropped))) => {
                out.carried = stats;
                out.dropped_correlations = dropped;
            }
            Ok(Err(e)) => {
                out.errors.push(e);
                drop(router_swap); // the old set goes on
                for (_, r) in built_sinks {
                    r.shutdown(cfg.shutdown_timeout.0).await;
                }
                return out;
            }
            Err(e) => {
                out.errors
                    .push(format!("swapping the engine failed unexpectedly: {e}"));
                return out;
            }
        }
        if let Some((ctl, w)) = webhook_cfg {
            // Checked above; a failure now (a file replaced in between) keeps the old ones.
            if let Err(e) = ctl.apply(&w) {
                tracing::error!(error = %e, "Webhook settings not applied; the old ones stay.");
            }
        }
        out.sinks_started = built_sinks.len();
        out.sinks_stopped = taken.iter().filter(|t| !**t).count();
        let ok = router_swap
            .replace(
                |mut old| {
                    let mut old_opt: Vec<Option<Router>> = old.drain(..).map(Some).collect();
                    let mut new = Vec::new();
                    for (i, keep) in plan.iter().enumerate() {
                        let r = match keep {
                            Some(j) => old_opt.get_mut(*j).and_then(Option::take),
                            None => built_sinks.remove(&i),
                        };
                        new.extend(r);
                    }
                    (new, old_opt.into_iter().flatten().collect())
                },
                cfg.shutdown_timeout.0,
            )
            .await;
        if !ok {
            tracing::error!(
                "A replaced sink did not flush within shutdown_timeout; some alerts may not have been delivered."
            );
        }
        cur.1 = cfg.sinks.clone();
        cur.0 = cfg;
        out.ok = true;
        out
    }
}

/// Rules, Falco rules and correlator of a new engine.
pub type RuleParts = (
    Arc<RuleSet>,
    Option<Arc<FalcoRuleSet>>,
    Option<Arc<Correlator>>,
);

/// Builds rules, Falco rules and (when needed) a correlator from `cfg`; every error.
pub fn build_rules(cfg: &Config, metrics: &Arc<Metrics>) -> Result<RuleParts, Vec<String>> {
    let opts = LoadOptions {
        builtin: cfg.rules.builtin,
        dirs: cfg.rules.dirs.clone(),
        lists: cfg.rules.lists.clone(),
        skip_broken: cfg.rules.skip_broken,
    };
    let mut errors = Vec::new();
    let rules = match RuleSet::load(&opts) {
        Ok((set, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            Some(set)
        }
        Err(errs) => {
            errors.extend(errs.iter().map(|e| format!("rule error: {e}")));
            None
        }
    };
    let falco = if cfg.rules.falco.is_empty() {
        None
    } else {
        match FalcoRuleSet::load_files(&cfg.rules.falco) {
            Ok((set, warnings)) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                Some(Arc::new(set))
            }
            Err(errs) => {
                errors.extend(errs.iter().map(|e| format!("Falco rule error: {e}")));
                None
            }
        }
    };
    let Some(rules) = rules else {
        return Err(errors);
    };
    let needed = !rules.correlations().is_empty()
        || cfg.tuning.is_some()
        || cfg.state.default_suppress.is_some();
    let correlator = if needed {
        match Correlator::new(&rules, cfg.state_config(metrics.clone())) {
            Ok(c) => Some(Arc::new(c)),
            Err(errs) => {
                errors.extend(errs.iter().map(|e| format!("correlation error: {e}")));
                None
            }
        }
    } else {
        None
    };
    if errors.is_empty() {
        Ok((Arc::new(rules), falco, correlator))
    } else {
        Err(errors)
    }
}

/// Returns `new` with every setting that cannot change while running put back to its value
/// in `old`, and the dotted keys that differed.
pub fn keep_static(old: &Config, mut new: Config) -> (Config, Vec<String>) {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($($field:ident).+, $name:expr) => {
            if old.$($field).+ != new.$($field).+ {
                changed.push($name.to_string());
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    keep!(serve.listen, "serve.listen");
    keep!(serve.max_body_bytes, "serve.max_body_bytes");
    keep!(serve.max_event_bytes, "serve.max_event_bytes");
    keep!(serve.retry_after_secs, "serve.retry_after_secs");
    keep!(serve.header_read_timeout, "serve.header_read_timeout");
    keep!(serve.idle_timeout, "serve.idle_timeout");
    keep!(serve.max_connections, "serve.max_connections");
    keep!(engine, "engine");
    keep!(tail, "tail");
    keep!(logging, "logging");
    keep!(shutdown_timeout, "shutdown_timeout");
    keep!(raw_forwarding, "raw_forwarding");
    keep!(data_dir, "data_dir");
    keep!(telemetry, "telemetry");
    // The tailer attaches the cluster when reading; the webhook takes a new one at once.
    // Switching TLS on or off is refused by the webhook control (reported as an error).
    (new, changed)
}

/// The files a change of which triggers a reload.
pub fn watched_files(cfg: &Config, config_file: Option<&Path>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = config_file.map(Path::to_path_buf).into_iter().collect();
    for d in &cfg.rules.dirs {
        files.push(d.clone());
        if d.is_dir() {
            collect_yaml(d, &mut files, 0);
        }
    }
    files.extend(cfg.rules.lists.iter().cloned());
    for l in &cfg.rules.lists {
        if l.is_dir() {
            collect_yaml(l, &mut files, 0);
        }
    }
    files.extend(cfg.rules.falco.iter().cloned());
    let t = &cfg.serve.tls;
    files.extend(
        [&t.cert, &t.key, &t.client_ca, &cfg.serve.bearer_token_file]
            .into_iter()
            .flatten()
            .cloned(),
    );
    files
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    // Bounded: rule trees are shallow; a symlink loop must not hang the poller.
    if depth > 8 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.push(p.clone());
            collect_yaml(&p, out, depth + 1);
        } else if p
            .extension()
            .is_some_and(|e| e == "yml" || e == "yaml" || e == "json")
        {
            out.push(p);
        }
    }
}

/// What was last seen of each watched file: (length, mtime), `None` when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, Option<(u64, SystemTime)>)>);

impl Fingerprint {
    /// Takes the fingerprint of `files` now.
    pub fn of(files: &[PathBuf]) -> Fingerprint {
        Fingerprint(
            files
                .iter()
                .map(|p| {
                    let m = std::fs::metadata(p)
                        .ok()
                        .map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
                    (p.clone(), m)
                })
                .collect(),
        )
    }
}

/// Runs until `shutdown` resolves: reloads on SIGHUP, on a message on `trigger`, and when a
/// watched file changes (checked every `poll`). Each outcome is sent on `outcomes` if given.
pub async fn run(
    reloader: Arc<Reloader>,
    mut trigger: Option<tokio::sync::mpsc::Receiver<()>>,
    outcomes: Option<tokio::sync::mpsc::UnboundedSender<ReloadOutcome>>,
    poll: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    #[cfg(unix)]
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGHUP; reload on file changes only.");
            None
        }
    };
    let mut seen = Fingerprint::of(&reloader.watched().await);
    let mut every = tokio::time::interval(poll);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        #[cfg(unix)]
        let sighup = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = std::future::pending::<()>();
        let triggered = async {
            match trigger.as_mut() {
                Some(t) => {
                    if t.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let why = tokio::select! {
            _ = &mut shutdown => break,
            _ = sighup => "SIGHUP",
            _ = triggered => "trigger",
            _ = every.tick() => {
                let now = Fingerprint::of(&reloader.watched().await);
                if now == seen {
                    continue;
                }
                "file change"
            }
        };
        tracing::info!(reason = why, "Reloading.");
        // Taken before reading: a write during the reload triggers another one.
        let before = Fingerprint::of(&reloader.watched().await);
        let outcome = reloader.reload().await;
        // What the reload read is what `before` saw; a file that joined the watched set
        // (a new rule file) is marked unknown, so the next poll reloads once more in case
        // it changed while the reload read it.
        seen = if outcome.ok {
            let known: HashMap<PathBuf, Option<(u64, SystemTime)>> = before.0.into_iter().collect();
            Fingerprint(
                reloader
                    .watched()
                    .await
                    .into_iter()
                    .map(|p| {
                        let m = known
                            .get(&p)
                            .cloned()
                            .unwrap_or(Some((u64::MAX, SystemTime::UNIX_EPOCH)));
                        (p, m)
                    })
                    .collect(),
            )
        } else {
            before
        };
        if let Some(tx) = &outcomes {
            let _ = tx.send(outcome);
        }
    }
}

/// A streaming hasher usable as a `fmt::Write` target (no large string for big rules).
struct HashWriter(xxhash_rust::xxh3::Xxh3);

impl std::fmt::Write for HashWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// The identity of a rule's matching logic: a hash of its compiled detection (lists
/// expanded) and stages. Title, level and tags are not part of it: changing them keeps the
/// windows that count the rule's matches.
pub fn rule_identity(rule: &CompiledRule) -> u64 {
    use std::fmt::Write as _;
    let mut w = HashWriter(xxhash_rust::xxh3::Xxh3::new());
    let _ = write!(w, "{}|{}|{:?}", rule.meta.id, rule.stages, rule.det);
    w.0.digest()
}

/// Correlation ids (in `new`) that read, directly or through a chain, a base rule whose
/// identity differs between `old` and `new` (or that exists in only one of them).
pub fn changed_correlations(old: &RuleSet, new: &RuleSet) -> Vec<String> {
    let defs: Vec<crate::rules::correlation::CorrelationDef> = new
        .correlations()
        .iter()
        .filter_map(|r| crate::rules::correlation::parse_correlation(&r.file, r.line, &r.doc).ok())
        .collect();
    let by_name: HashMap<&str, usize> = defs
        .iter()
        .enumerate()
        .flat_map(|(i, d)| {
            std::iter::once((d.meta.id.as_str(), i)).chain(d.name.as_deref().map(|n| (n, i)))
        })
        .collect();
    let rule_changed = |name: &str| -> bool {
        match (old.find(name), new.find(name)) {
            (Some(o), Some(n)) => rule_identity(&old.rules()[o]) != rule_identity(&new.rules()[n]),
            _ => true,
        }
    };
    fn affected(
        i: usize,
        defs: &[crate::rules::correlation::CorrelationDef],
        by_name: &HashMap<&str, usize>,
        rule_changed: &dyn Fn(&str) -> bool,
        memo: &mut HashMap<usize, bool>,
        depth: usize,
    ) -> bool {
        if let Some(&m) = memo.get(&i) {
            return m;
        }
        // Cycles are rejected when the correlator is built; the bound keeps this total.
        if depth > 32 {
            return true;
        }
        let r = defs[i].rules.iter().any(|r| match by_name.get(r.as_str()) {
            Some(&j) => affected(j, defs, by_name, rule_changed, memo, depth + 1),
            None => rule_changed(r),
        });
        memo.insert(i, r);
        r
    }
    let mut memo = HashMap::new();
    let mut out: Vec<String> = (0..defs.len())
        .filter(|&i| affected(i, &defs, &by_name, &rule_changed, &mut memo, 0))
        .map(|i| defs[i].meta.id.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Moves the correlation state of `old` into `new_corr`: state of correlations whose
/// definition (id + fingerprint, checked by restore) and whose base rules' identities are
/// unchanged survives; the rest starts empty. Call it while no batch is evaluated on `old`.
///
/// HOOK for the stateful engine: this goes through the public snapshot format via a
/// private temporary directory, because `Correlator` has no in-memory export yet. An
/// in-memory `Correlator::export_state() -> SnapshotFile` / `import_state(SnapshotFile)`
/// would avoid the disk round trip; the logic here stays the same.
pub fn carry_state(
    old: &Engine,
    new_rules: &RuleSet,
    new_corr: Option<&Correlator>,
) -> Result<(RestoreStats, Vec<String>), String> {
    let (Some(old_c), Some(new_c)) = (old.correlator(), new_corr) else {
        return Ok((RestoreStats::default(), Vec::new()));
    };
    let dropped = changed_correlations(old.rules(), new_rules);
    let dir = private_tempdir().map_err(|e| format!("correlation state carry-over: {e}"))?;
    let path = dir.join(crate::engine::state::SNAPSHOT_FILE);
    let res = (|| {
        old_c
            .snapshot(&path)
            .map_err(|e| format!("correlation state carry-over: {e}"))?;
        if !dropped.is_empty() {
            let text =
                std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            let mut file: crate::engine::state::SnapshotFile = serde_json::from_slice(&text)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let drop: HashSet<&str> = dropped.iter().map(String::as_str).collect();
            file.correlations.retain(|c| !drop.contains(c.id.as_str()));
            let text = serde_json::to_vec(&file).map_err(|e| e.to_string())?;
            std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        new_c
            .restore(&path)
            .map_err(|e| format!("correlation state carry-over: {e}"))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    res.map(|s| (s, dropped))
}

/// A new directory only this user can read (the snapshot holds audit events).
fn private_tempdir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("audithawk-reload-{}", uuid::Uuid::new_v4()));
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_keys_are_kept_and_reported() {
        let old = Config::default();
        let mut new = Config::default();
        new.serve.listen = "127.0.0.1:9".into();
        new.engine.workers = 7;
        new.cluster = Some("x".into());
        let (cfg, changed) = keep_static(&old, new);
        assert_eq!(cfg.serve.listen, old.serve.listen);
        assert_eq!(cfg.engine.workers, old.engine.workers);
        assert_eq!(cfg.cluster.as_deref(), Some("x"), "reloadable keys apply");
        assert_eq!(changed, vec!["serve.listen", "engine"]);
    }

    #[test]
    fn fingerprint_sees_content_and_presence_changes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.yml");
        let files = vec![f.clone()];
        let a = Fingerprint::of(&files);
        std::fs::write(&f, "a").unwrap();
        let b = Fingerprint::of(&files);
        assert_ne!(a, b, "a new file is a change");
        std::fs::write(&f, "abc").unwrap();
        assert_ne!(b, Fingerprint::of(&files), "a longer file is a change");
    }
}
