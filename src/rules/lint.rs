//! Lint: load problems (errors) plus rules that load but are suspect (warnings): fields the
//! audit Event does not have (the rule can never match), missing `id`/`title`/`level`/`tags`,
//! selections the condition never uses, and documents skipped for another logsource.
//! Unknown modifiers and conditions naming undefined selections stop a rule from compiling,
//! so they are errors.

use std::path::PathBuf;

use super::{LoadOptions, RuleError, RuleSet};

/// What to lint besides the given paths.
#[derive(Debug, Clone, Default)]
pub struct LintOptions {
    /// Also lint the embedded `detections/`.
    pub builtin: bool,
    /// List files/directories for `expand`.
    pub lists: Vec<PathBuf>,
}

/// The result of a lint run.
#[derive(Debug, Clone, Default)]
pub struct LintReport {
    /// Problems that stop a rule from loading.
    pub errors: Vec<RuleError>,
    /// Rules that load but are suspect.
    pub warnings: Vec<RuleError>,
    /// Rules that compiled.
    pub rules: usize,
    /// Correlation documents seen (compiled elsewhere).
    pub correlations: usize,
}

impl LintReport {
    /// Whether there are no errors.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Lints rule files/directories.
pub fn lint(paths: &[PathBuf], opts: &LintOptions) -> LintReport {
    let loaded = RuleSet::load_all(&LoadOptions {
        builtin: opts.builtin,
        dirs: paths.to_vec(),
        lists: opts.lists.clone(),
        skip_broken: true,
    });
    let mut warnings = loaded.skipped;
    for r in loaded.set.rules() {
        for n in &r.notes {
            warnings.push(RuleError {
                file: r.file.clone(),
                line: n.line.or(r.line),
                rule_id: Some(r.meta.id.clone()),
                message: n.message.clone(),
            });
        }
    }
    LintReport {
        errors: loaded.errors,
        warnings,
        rules: loaded.set.rules().len(),
        correlations: loaded.set.correlations().len(),
    }
}
