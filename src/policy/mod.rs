//! Audit policy coverage: which detections does an `audit.k8s.io/v1` Policy blind?
//!
//! - [`schema`]: decoding (strict, then lenient like the API server) and validation.
//! - [`eval`]: the API server's matching, rule for rule (first match wins, no match = None,
//!   rule `omitStages` ∪ policy `omitStages`).
//! - [`check`]: for every loaded detection, covered / partly covered (for whom) / blind.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use audithawk::policy;
//! use audithawk::rules::{LoadOptions, RuleSet};
//! let p = policy::load("policies/balanced.yaml")?;
//! let (rules, _warnings) = RuleSet::load(&LoadOptions { builtin: true, ..Default::default() })
//!     .map_err(|e| format!("{} rule errors", e.len()))?;
//! let report = policy::check(&p, &rules);
//! print!("{}", report.render_text());
//! # Ok(()) }
//! ```

pub mod check;
pub mod eval;
pub mod schema;

#[cfg(test)]
mod tests;

use std::path::Path;

use crate::model::Level;
use crate::rules::RuleSet;

pub use check::{check, BlindSpot, CheckReport, Gap, RuleCoverage, Verdict};
pub use eval::{Decision, Request, Target};
pub use schema::{parse, AuditLevel, GroupResources, Policy, PolicyRule};

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// Path.
        file: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The YAML could not be decoded into a Policy.
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Decode {
        /// Path.
        file: String,
        /// Line, where known.
        line: Option<usize>,
        /// Decoder message.
        message: String,
    },
    /// The policy decodes but the API server would refuse it; every problem is listed.
    #[error("{file}: invalid audit policy: {}", problems.join("; "))]
    Invalid {
        /// Path.
        file: String,
        /// Each problem, naming the field (`rules[3].level`).
        problems: Vec<String>,
    },
}

/// Reads, decodes and validates the policy at `path`.
pub fn load(path: impl AsRef<Path>) -> Result<Policy, PolicyError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&text, &file)
}

/// What `audithawk policy check` prints and its exit status.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// The rendered report (text or JSON), ending in a newline.
    pub output: String,
    /// 0, or 1 when `fail_on_blind` is set and a high or critical rule is blind.
    pub exit_code: i32,
    /// The report itself.
    pub report: CheckReport,
}

/// The whole `policy check` command minus argument parsing: load the policy at `path`,
/// check it against `rules`, render as JSON (`json`) or text, and decide the exit status.
/// With `fail_on_blind`, a blind rule at level high or above makes the exit status 1 and
/// the text output ends with the list of those rules.
pub fn run_check(
    path: &Path,
    rules: &RuleSet,
    json: bool,
    fail_on_blind: bool,
) -> Result<CheckOutcome, PolicyError> {
    let policy = load(path)?;
    let report = check(&policy, rules);
    let blind: Vec<&RuleCoverage> = report.blind_at_or_above(Level::High);
    let failed = fail_on_blind && !blind.is_empty();
    let mut output = if json {
        let mut j = report.render_json();
        j.push('\n');
        j
    } else {
        report.render_text()
    };
    if failed && !json {
        output.push_str(&format!(
            "\nFAIL: {} high/critical rule(s) blind under {}:\n",
            blind.len(),
            path.display()
        ));
        for r in &blind {
            output.push_str(&format!(
                "  [{}] {} ({})\n",
                r.level.as_str(),
                r.title,
                r.id
            ));
        }
    }
    Ok(CheckOutcome {
        output,
        exit_code: i32::from(failed),
        report,
    })
}
