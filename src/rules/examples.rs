//! Running each rule's own examples (extension key `examples`): positive events must fire
//! the rule, negative events must not. Used by `audithawk rules test` and the detections
//! test.

use crate::model::AuditEvent;

use super::RuleSet;

/// One example that did not behave as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleFailure {
    /// Rule id.
    pub rule_id: String,
    /// Rule file.
    pub file: String,
    /// `positive` or `negative`.
    pub kind: &'static str,
    /// Index of the example in its list.
    pub index: usize,
    /// What went wrong.
    pub message: String,
}

impl std::fmt::Display for ExampleFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (rule {}): {} example #{}: {}",
            self.file, self.rule_id, self.kind, self.index, self.message
        )
    }
}

/// Evaluates every rule's examples through the whole set (index and stage filter
/// included) and lists those that fail. Returns also how many examples ran.
pub fn run_counted(set: &RuleSet) -> (Vec<ExampleFailure>, usize) {
    let mut failures = Vec::new();
    let mut count = 0;
    let mut hits = Vec::new();
    for (i, rule) in set.rules().iter().enumerate() {
        let lists = [
            ("positive", &rule.examples.positive, true),
            ("negative", &rule.examples.negative, false),
        ];
        for (kind, list, want) in lists {
            for (n, ex) in list.iter().enumerate() {
                count += 1;
                let fail = |message: String| ExampleFailure {
                    rule_id: rule.meta.id.clone(),
                    file: rule.file.clone(),
                    kind,
                    index: n,
                    message,
                };
                let json = match serde_json::to_string(ex) {
                    Ok(j) => j,
                    Err(e) => {
                        failures.push(fail(format!("cannot convert the example to JSON: {e}")));
                        continue;
                    }
                };
                let ev = match AuditEvent::parse(&json) {
                    Ok(ev) => ev,
                    Err(e) => {
                        failures.push(fail(format!("not a valid audit event: {e}")));
                        continue;
                    }
                };
                hits.clear();
                set.evaluate(&ev, &mut hits);
                let fired = hits.contains(&i);
                if fired != want {
                    failures.push(fail(if want {
                        "the rule did not fire".into()
                    } else {
                        "the rule fired".into()
                    }));
                }
            }
        }
    }
    (failures, count)
}

/// Evaluates every rule's examples; see [`run_counted`].
pub fn run(set: &RuleSet) -> Vec<ExampleFailure> {
    run_counted(set).0
}
