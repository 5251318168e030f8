//! Field mapping: flat Sigma field names to audit Event paths.
//!
//! SigmaHQ's `kubernetes/audit` rules use a few flat names (`hostPath`, `capabilities`,
//! `apiGroup`) that are not paths in the audit Event. They are mapped here so those rules
//! load unchanged. A name may map to several paths (a pod's containers, init containers and
//! ephemeral containers); the field then matches when any path matches (OR). Names not in
//! the table are used as written (dotted paths into the Event). Keep this table in sync with
//! the one in `docs/rule-format.md`.

use crate::model::FieldPath;

/// The mapping table: flat name, event paths.
pub const MAPPINGS: &[(&str, &[&str])] = &[
    // SigmaHQ kubernetes_audit_hostpath_mount: a pod (or a workload template) with a
    // hostPath volume.
    (
        "hostPath",
        &[
            "requestObject.spec.volumes.hostPath",
            "requestObject.spec.template.spec.volumes.hostPath",
            "requestObject.spec.jobTemplate.spec.template.spec.volumes.hostPath",
        ],
    ),
    // SigmaHQ kubernetes_audit_privileged_pod_creation: any container adding capabilities.
    (
        "capabilities",
        &[
            "requestObject.spec.containers.securityContext.capabilities",
            "requestObject.spec.initContainers.securityContext.capabilities",
            "requestObject.spec.ephemeralContainers.securityContext.capabilities",
        ],
    ),
    // SigmaHQ kubernetes_audit_rbac_permisions_listing, kubernetes_audit_sidecar_injection.
    ("apiGroup", &["objectRef.apiGroup"]),
    // Convenience names for pod-spec flags, mapped the same way.
    (
        "privileged",
        &[
            "requestObject.spec.containers.securityContext.privileged",
            "requestObject.spec.initContainers.securityContext.privileged",
            "requestObject.spec.ephemeralContainers.securityContext.privileged",
        ],
    ),
    ("hostNetwork", &["requestObject.spec.hostNetwork"]),
    ("hostPID", &["requestObject.spec.hostPID"]),
    ("hostIPC", &["requestObject.spec.hostIPC"]),
];

/// The event paths a rule field reads.
pub fn map_field(name: &str) -> Vec<FieldPath> {
    match MAPPINGS.iter().find(|(k, _)| *k == name) {
        Some((_, paths)) => paths.iter().map(|p| FieldPath::parse(p)).collect(),
        None => vec![FieldPath::parse(name)],
    }
}

/// Whether `name` is a mapped flat name.
pub fn is_mapped(name: &str) -> bool {
    MAPPINGS.iter().any(|(k, _)| *k == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_and_plain() {
        assert_eq!(map_field("apiGroup")[0].name, "objectRef.apiGroup");
        assert_eq!(map_field("capabilities").len(), 3);
        assert_eq!(
            map_field("objectRef.resource")[0].name,
            "objectRef.resource"
        );
        assert!(is_mapped("hostPath"));
        assert!(!is_mapped("verb"));
    }
}
