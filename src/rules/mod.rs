//! Sigma rules: schema, compilation, conditions, lists and field mapping.
//!
//! STUB: the real implementation replaces this file. The API below is the contract the
//! engine, CLI and tests use.

pub mod correlation;

use std::path::PathBuf;

use crate::model::{AuditEvent, RuleMeta, Stage};

/// Where rules come from.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Load the rules embedded from `detections/`.
    pub builtin: bool,
    /// User rule directories (or files), loaded after the built-in ones.
    pub dirs: Vec<PathBuf>,
    /// User list directories/files (`detections/lists` format); override built-in lists by name.
    pub lists: Vec<PathBuf>,
    /// Skip rules that fail to compile (reporting them as warnings) instead of failing.
    pub skip_broken: bool,
}

/// A problem found while loading rules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}{}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default(), rule_id.as_ref().map(|r| format!(" (rule {r})")).unwrap_or_default())]
pub struct RuleError {
    /// File the rule came from (`builtin:<path>` for embedded rules).
    pub file: String,
    /// Line, where known.
    pub line: Option<usize>,
    /// Rule id, where known.
    pub rule_id: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// One compiled rule.
#[derive(Debug)]
pub struct CompiledRule {
    /// Metadata for alerts.
    pub meta: RuleMeta,
    /// Stages this rule sees (bit mask of [`Stage::bit`]).
    pub stages: u8,
}

/// The compiled, indexed rule set.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
}

impl RuleSet {
    /// Loads and compiles rules. Returns the set and warnings, or every error found.
    pub fn load(_opts: &LoadOptions) -> Result<(RuleSet, Vec<RuleError>), Vec<RuleError>> {
        Ok((RuleSet::default(), Vec::new()))
    }

    /// Pushes the index of every rule that matches `ev` into `out`.
    pub fn evaluate(&self, _ev: &AuditEvent<'_>, _out: &mut Vec<usize>) {}

    /// The rules, by index.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Stage mask of all rules (so the engine can drop events no rule wants early).
    pub fn stage_mask(&self) -> u8 {
        self.rules.iter().fold(0, |m, r| m | r.stages)
    }
}

/// Default stages: ResponseComplete and Panic.
pub fn default_stages() -> u8 {
    Stage::ResponseComplete.bit() | Stage::Panic.bit() | Stage::Unknown.bit()
}
