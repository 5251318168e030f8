//! The detection engine: de-duplication, stage filter, rule evaluation, alert building.
//!
//! No I/O here, except the correlation state snapshot ([`correlate::Correlator::snapshot`]).
//! The engine is shared by every worker (`&self` everywhere), so both cores can evaluate at
//! once; the shared mutable state is the de-duplication set and the sharded correlation
//! state.
//!
//! Stateful detection (docs/correlation.md, docs/tuning.md):
//! - [`correlate`]: the [`correlate::Correlator`]: Sigma correlations and first-seen
//!   baselines on event time, fed after stateless evaluation.
//! - [`window`]: per-group window state, sized by what each condition needs.
//! - [`baseline`]: first-seen tuples (`new_terms`).
//! - [`state`]: configuration, per-cluster clocks, shards and the snapshot format.
//! - [`suppress`]: exceptions and re-alert suppression.

pub mod baseline;
pub mod correlate;
pub mod dedup;
pub mod state;
pub mod suppress;
pub mod window;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::model::{Alert, AuditEvent};
use crate::rules::falco::FalcoRuleSet;
use crate::rules::RuleSet;
use crate::telemetry::Metrics;

pub use dedup::Dedup;

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Evaluated by the rules.
    Evaluated,
    /// An exact duplicate of a recent event; dropped and counted.
    Duplicate,
    /// No rule wants this stage (e.g. RequestReceived); counted, not evaluated.
    StageSkipped,
}

/// Rules plus the per-process state they need.
#[derive(Debug)]
pub struct Engine {
    rules: Arc<RuleSet>,
    /// Falco rules loaded as they are (`--rules-falco`), evaluated after the Sigma rules.
    falco: Option<Arc<FalcoRuleSet>>,
    /// Shared with the engines that replace this one on reload (re-sent batches keep being
    /// recognised across a rule change).
    dedup: Arc<Dedup>,
    stage_mask: u8,
    metrics: Arc<Metrics>,
    /// Stateful correlations, baselines, exceptions and re-alert suppression (optional).
    correlator: Option<Arc<correlate::Correlator>>,
}

impl Engine {
    /// An engine over `rules`, remembering `dedup_capacity` recent events.
    pub fn new(rules: Arc<RuleSet>, dedup_capacity: usize, metrics: Arc<Metrics>) -> Engine {
        let stage_mask = rules.stage_mask();
        Engine {
            rules,
            falco: None,
            dedup: Arc::new(Dedup::new(dedup_capacity)),
            stage_mask,
            metrics,
            correlator: None,
        }
    }

    /// Adds Falco rules. Their stages join the stage filter: Falco rules choose their stage
    /// in the condition (e.g. exec alerts on ResponseStarted).
    pub fn with_falco(mut self, falco: Option<Arc<FalcoRuleSet>>) -> Engine {
        if let Some(f) = &falco {
            self.stage_mask |= f.stage_mask();
        }
        self.falco = falco;
        self
    }

    /// Adds the stateful engine: matching events are fed to `c` after stateless
    /// evaluation, and base rules' own alerts pass its `generate`, exception and
    /// re-alert checks.
    pub fn with_correlator(mut self, c: Arc<correlate::Correlator>) -> Engine {
        self.correlator = Some(c);
        self
    }

    /// The stateful engine, if any (for ticks, flush and snapshots).
    pub fn correlator(&self) -> Option<&Arc<correlate::Correlator>> {
        self.correlator.as_ref()
    }

    /// The rule set.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// The engine that replaces this one on a reload: new rules, Falco rules and
    /// correlator, this engine's de-duplication set and metrics. The correlator should
    /// already carry this engine's state (`crate::reload::carry_state`), taken while no
    /// worker evaluates on this engine.
    pub fn reloaded(
        &self,
        rules: Arc<RuleSet>,
        falco: Option<Arc<FalcoRuleSet>>,
        correlator: Option<Arc<correlate::Correlator>>,
    ) -> Engine {
        Engine {
            stage_mask: rules.stage_mask(),
            rules,
            falco: None,
            dedup: self.dedup.clone(),
            metrics: self.metrics.clone(),
            correlator,
        }
        .with_falco(falco)
    }

    /// How many recent events the de-duplication set remembers.
    pub fn dedup_capacity(&self) -> usize {
        self.dedup.capacity()
    }

    /// An engine with the same rules and empty state of its own: a new de-duplication set
    /// remembering `dedup_capacity` events and a fresh correlator. Kafka detectors keep one
    /// per partition, so that a partition's state can move to another process on its own.
    pub fn partitioned(&self, dedup_capacity: usize) -> Engine {
        Engine {
            rules: self.rules.clone(),
            falco: self.falco.clone(),
            dedup: Arc::new(Dedup::new(dedup_capacity)),
            stage_mask: self.stage_mask,
            metrics: self.metrics.clone(),
            correlator: self.correlator.as_ref().map(|c| Arc::new(c.fresh())),
        }
    }

    /// The Falco rules, if any.
    pub fn falco(&self) -> Option<&Arc<FalcoRuleSet>> {
        self.falco.as_ref()
    }

    /// Processes one event, pushing any alerts into `out`.
    pub fn process(
        &self,
        ev: &AuditEvent<'_>,
        now: DateTime<Utc>,
        out: &mut Vec<Alert>,
    ) -> Disposition {
        let stage = ev.stage();
        let key = Dedup::key(
            ev.cluster.as_deref(),
            ev.audit_id(),
            stage.as_str(),
            ev.raw.text(),
        );
        if self.dedup.seen(key) {
            self.metrics.duplicates.inc();
            return Disposition::Duplicate;
        }
        if self.stage_mask & stage.bit() == 0 {
            self.metrics.stage_skipped.inc();
            return Disposition::StageSkipped;
        }
        let first_new = out.len();
        let mut hits = Vec::new();
        self.rules.evaluate(ev, &mut hits);
        hits.retain(|&idx| self.rules.rules()[idx].stages & stage.bit() != 0);
        for &idx in &hits {
            let rule = &self.rules.rules()[idx];
            if let Some(c) = &self.correlator {
                if c.suppressed_generate(idx) {
                    continue;
                }
            }
            let mut alert = Alert::new(&rule.meta, ev, now);
            if let Some(c) = &self.correlator {
                if !c.admit_base(idx, ev, &mut alert) {
                    continue;
                }
            }
            out.push(alert);
        }
        if let Some(c) = &self.correlator {
            c.observe(&hits, ev, out);
        }
        if let Some(falco) = &self.falco {
            hits.clear();
            falco.evaluate(ev, &mut hits);
            for idx in hits {
                let rule = &falco.rules()[idx];
                let mut alert = Alert::new(&rule.meta, ev, now);
                // Falco's output template is the message, as Falco users expect; the
                // values in it come from a redacted copy of the event.
                let output = falco.render_output(idx, ev);
                alert.message = output.clone();
                alert.event.reason = Some(output);
                out.push(alert);
            }
        }
        // Count every alert made here (stateless, correlation, Falco) in one place.
        for a in &out[first_new..] {
            self.metrics.alert(&a.rule.id, a.rule.level);
        }
        Disposition::Evaluated
    }
}
