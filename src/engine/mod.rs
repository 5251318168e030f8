//! The detection engine: de-duplication, stage filter, rule evaluation, alert building.
//!
//! No I/O here. The engine is shared by every worker (`&self` everywhere), so both cores
//! can evaluate at once; the only shared mutable state is the de-duplication set.

pub mod dedup;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::model::{Alert, AuditEvent};
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
    dedup: Dedup,
    stage_mask: u8,
    metrics: Arc<Metrics>,
}

impl Engine {
    /// An engine over `rules`, remembering `dedup_capacity` recent events.
    pub fn new(rules: Arc<RuleSet>, dedup_capacity: usize, metrics: Arc<Metrics>) -> Engine {
        let stage_mask = rules.stage_mask();
        Engine {
            rules,
            dedup: Dedup::new(dedup_capacity),
            stage_mask,
            metrics,
        }
    }

    /// The rule set.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
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
        let mut hits = Vec::new();
        self.rules.evaluate(ev, &mut hits);
        for idx in hits {
            let rule = &self.rules.rules()[idx];
            if rule.stages & stage.bit() == 0 {
                continue;
            }
            let alert = Alert::new(&rule.meta, ev, now);
            self.metrics.alert(&rule.meta.id, rule.meta.level);
            out.push(alert);
        }
        Disposition::Evaluated
    }
}
