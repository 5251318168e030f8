//! Request and response bodies of the objects the simulation writes.
//!
//! They are shaped like what the API server logs at Request/RequestResponse level (with
//! managedFields omitted, as most policies set `omitManagedFields`). Keys come out
//! sorted because `serde_json::Value` keeps a sorted map; Go keeps struct order. No
//! consumer may depend on key order, so this is the honest simplification.

use chrono::DateTime;
use serde_json::{json, Value};

use super::cluster::{Node, Pod, Workload};

/// RFC 3339 seconds (metav1.Time) of `micros` since the epoch.
pub(crate) fn ts(micros: i64) -> String {
    DateTime::from_timestamp(micros.div_euclid(1_000_000), 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// One `metadata.managedFields` entry. The simulated policy keeps managed fields (the
/// API server default, `omitManagedFields: false`), which is much of a real body's size.
fn managed(
    manager: &str,
    operation: &str,
    api_version: &str,
    time: &str,
    sub: Option<&str>,
    fields: Value,
) -> Value {
    let mut m = json!({"manager": manager, "operation": operation, "apiVersion": api_version, "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields});
    if let Some(sub) = sub {
        m["subresource"] = json!(sub);
    }
    m
}

/// Standard labels of a workload's pods.
fn labels(w: &Workload) -> Value {
    json!({"app.kubernetes.io/name": w.name, "app.kubernetes.io/part-of": w.ns, "pod-template-hash": w.rs_hash})
}

fn container(w: &Workload) -> Value {
    json!({
        "name": w.name.rsplit('-').next().unwrap_or("app"),
        "image": w.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}, {"containerPort": 9090, "name": "metrics", "protocol": "TCP"}],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"key": "password", "name": w.secrets.first().cloned().unwrap_or_default()}}}
        ],
        "resources": {"limits": {"memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "256Mi"}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http", "scheme": "HTTP"}, "periodSeconds": 10, "failureThreshold": 3, "successThreshold": 1, "timeoutSeconds": 1},
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true, "runAsNonRoot": true, "runAsUser": 10001},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "volumeMounts": [
            {"mountPath": "/etc/app", "name": "config", "readOnly": true},
            {"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "name": "kube-api-access-x2k9p", "readOnly": true}
        ]
    })
}

fn pod_volumes(w: &Workload) -> Value {
    json!([
        {"name": "config", "configMap": {"defaultMode": 420, "name": format!("{}-config", w.name)}},
        {"name": "kube-api-access-x2k9p", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}], "name": "kube-root-ca.crt"}},
            {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}}
        ]}}
    ])
}

/// The Pod spec of a workload's template.
fn pod_spec(w: &Workload) -> Value {
    json!({
        "containers": [container(w)],
        "dnsPolicy": "ClusterFirst",
        "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": 0,
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "securityContext": {"fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "serviceAccount": w.sa,
        "serviceAccountName": w.sa,
        "terminationGracePeriodSeconds": 30,
        "tolerations": [
            {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
            {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300}
        ],
        "volumes": pod_volumes(w)
    })
}

/// A full Pod object as the replicaset controller creates it (request) or the API server
/// returns it (response, with uid and resourceVersion).
pub(crate) fn pod(w: &Workload, p: &Pod, node: Option<&Node>, rv: &str, now: i64) -> Value {
    let mut spec = pod_spec(w);
    if let Some(n) = node {
        spec["nodeName"] = json!(n.name);
    }
    let mut v = json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": p.name,
            "generateName": format!("{}-{}-", w.name, w.rs_hash),
            "namespace": w.ns,
            "uid": p.uid,
            "resourceVersion": rv,
            "creationTimestamp": ts(now),
            "labels": labels(w),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{}-{}", w.name, w.rs_hash), "uid": w.uid, "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": "Burstable"}
    });
    if !rv.is_empty() {
        v["metadata"]["managedFields"] = json!([managed(
            "kube-controller-manager",
            "Update",
            "v1",
            &ts(now),
            None,
            json!({
                "f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app.kubernetes.io/name": {}, "f:app.kubernetes.io/part-of": {}, "f:pod-template-hash": {}}, "f:ownerReferences": {".": {}, "k:{\"uid\":\"x\"}": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:env": {".": {}, "k:{\"name\":\"LOG_LEVEL\"}": {".": {}, "f:name": {}, "f:value": {}}}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {}, "f:readinessProbe": {}, "f:resources": {}, "f:securityContext": {}, "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}, "f:volumeMounts": {}}},
                    "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {}, "f:serviceAccount": {}, "f:serviceAccountName": {}, "f:terminationGracePeriodSeconds": {}, "f:volumes": {}}
            })
        )]);
    }
    v
}

/// The strategic-merge patch a kubelet sends to `pods/status`.
pub(crate) fn pod_status_patch(p: &Pod, w: &Workload, now: i64) -> Value {
    let t = ts(now);
    json!({
        "metadata": {"uid": p.uid},
        "status": {
            "$setElementOrder/conditions": [{"type": "PodReadyToStartContainers"}, {"type": "Initialized"}, {"type": "Ready"}, {"type": "ContainersReady"}, {"type": "PodScheduled"}],
            "conditions": [{"lastProbeTime": null, "lastTransitionTime": t, "status": "True", "type": "Ready"}, {"lastProbeTime": null, "lastTransitionTime": t, "status": "True", "type": "ContainersReady"}],
            "containerStatuses": [{
                "containerID": format!("containerd://{}", p.uid.replace('-', "")),
                "image": w.image,
                "imageID": format!("{}@sha256:{}{}", w.image.split(':').next().unwrap_or(""), w.uid.replace('-', ""), p.uid.replace('-', "")),
                "lastState": {},
                "name": w.name.rsplit('-').next().unwrap_or("app"),
                "ready": true,
                "restartCount": 0,
                "started": true,
                "state": {"running": {"startedAt": t}},
                "volumeMounts": [{"mountPath": "/etc/app", "name": "config", "readOnly": true, "recursiveReadOnly": "Disabled"}]
            }],
            "hostIP": format!("10.0.{}.{}", 16 + p.node % 3 * 16, 20 + p.node),
            "hostIPs": [{"ip": format!("10.0.{}.{}", 16 + p.node % 3 * 16, 20 + p.node)}],
            "phase": "Running",
            "podIP": p.ip,
            "podIPs": [{"ip": p.ip}],
            "startTime": t
        }
    })
}

/// The heartbeat patch a kubelet sends to `nodes/status`.
pub(crate) fn node_status_patch(now: i64) -> Value {
    let t = ts(now);
    let cond = |ty: &str, reason: &str, msg: &str, st: &str| json!({"lastHeartbeatTime": t, "message": msg, "reason": reason, "status": st, "type": ty});
    json!({"status": {
        "$setElementOrder/conditions": [{"type": "MemoryPressure"}, {"type": "DiskPressure"}, {"type": "PIDPressure"}, {"type": "Ready"}],
        "conditions": [
            cond("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available", "False"),
            cond("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", "False"),
            cond("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available", "False"),
            cond("Ready", "KubeletReady", "kubelet is posting ready status", "True")
        ]
    }})
}

/// A coordination.k8s.io Lease as its holder renews it.
pub(crate) fn lease(
    ns: &str,
    name: &str,
    holder: &str,
    uid: &str,
    rv: &str,
    now: i64,
    secs: u32,
) -> Value {
    let base = ts(now);
    let micro = format!(
        "{}.{:06}Z",
        base.trim_end_matches('Z'),
        now.rem_euclid(1_000_000)
    );
    json!({
        "kind": "Lease",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": rv, "creationTimestamp": "2026-09-14T07:41:12Z",
            "managedFields": [managed(if ns == "kube-node-lease" { "kubelet" } else { holder.split(['_', '-']).next().unwrap_or(holder) }, "Update", "coordination.k8s.io/v1", &base, None,
                json!({"f:metadata": {"f:ownerReferences": {".": {}, "k:{\"uid\":\"0e4b3a2f-8c1d-4f6e-9a7b-5c2d1e0f3a4b\"}": {}}}, "f:spec": {"f:holderIdentity": {}, "f:leaseDurationSeconds": {}, "f:renewTime": {}}}))]},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": secs, "acquireTime": "2026-10-30T02:11:48.201734Z", "renewTime": micro, "leaseTransitions": 3}
    })
}

/// A Deployment as the API server returns it.
pub(crate) fn deployment(w: &Workload, rv: &str, image: &str) -> Value {
    let mut spec = pod_spec(w);
    spec["containers"][0]["image"] = json!(image);
    json!({
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {
            "name": w.name, "namespace": w.ns, "uid": w.uid, "resourceVersion": rv, "generation": w.generation,
            "creationTimestamp": "2026-08-21T13:02:44Z",
            "labels": {"app.kubernetes.io/name": w.name, "app.kubernetes.io/part-of": w.ns, "app.kubernetes.io/managed-by": "argocd"},
            "annotations": {"deployment.kubernetes.io/revision": (w.generation / 2 + 1).to_string()},
            "managedFields": [
                managed("argocd-controller", "Apply", "apps/v1", "2026-10-28T16:20:11Z", None, json!({"f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}, "f:app.kubernetes.io/name": {}, "f:app.kubernetes.io/part-of": {}}},
                    "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {"f:metadata": {"f:labels": {"f:app.kubernetes.io/name": {}, "f:app.kubernetes.io/part-of": {}}}, "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:env": {}, "f:image": {}, "f:name": {}, "f:ports": {}, "f:readinessProbe": {}, "f:resources": {}, "f:securityContext": {}, "f:volumeMounts": {}}}, "f:securityContext": {}, "f:serviceAccountName": {}, "f:volumes": {}}}}})),
                managed("kube-controller-manager", "Update", "apps/v1", "2026-11-01T22:02:51Z", Some("status"), json!({"f:metadata": {"f:annotations": {".": {}, "f:deployment.kubernetes.io/revision": {}}},
                    "f:status": {"f:availableReplicas": {}, "f:conditions": {".": {}, "k:{\"type\":\"Available\"}": {".": {}, "f:lastTransitionTime": {}, "f:lastUpdateTime": {}, "f:message": {}, "f:reason": {}, "f:status": {}, "f:type": {}}, "k:{\"type\":\"Progressing\"}": {".": {}, "f:lastTransitionTime": {}, "f:lastUpdateTime": {}, "f:message": {}, "f:reason": {}, "f:status": {}, "f:type": {}}}, "f:observedGeneration": {}, "f:readyReplicas": {}, "f:replicas": {}, "f:updatedReplicas": {}}}))
            ]
        },
        "spec": {
            "replicas": w.pods.len(),
            "selector": {"matchLabels": {"app.kubernetes.io/name": w.name}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": w.name, "app.kubernetes.io/part-of": w.ns}}, "spec": spec}
        },
        "status": {"observedGeneration": w.generation, "replicas": w.pods.len(), "updatedReplicas": w.pods.len(), "readyReplicas": w.pods.len(), "availableReplicas": w.pods.len(),
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."}]}
    })
}

/// `kubectl set image` / CI image bump patch.
pub(crate) fn image_patch(w: &Workload, image: &str) -> Value {
    json!({"spec": {"template": {"spec": {"containers": [{"image": image, "name": w.name.rsplit('-').next().unwrap_or("app")}]}}}})
}

/// `kubectl rollout restart` patch.
pub(crate) fn restart_patch(now: i64) -> Value {
    json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": ts(now)}}}}})
}

/// An EndpointSlice for a workload's pods.
pub(crate) fn endpointslice(w: &Workload, nodes: &[Node], name: &str, rv: &str) -> Value {
    let eps: Vec<Value> = w
        .pods
        .iter()
        .map(|p| {
            json!({"addresses": [p.ip], "conditions": {"ready": true, "serving": true, "terminating": false},
                   "nodeName": nodes.get(p.node).map(|n| n.name.as_str()).unwrap_or(""), "targetRef": {"kind": "Pod", "name": p.name, "namespace": w.ns, "uid": p.uid}, "zone": "eu-west-1a"})
        })
        .collect();
    json!({
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": name, "generateName": format!("{}-", w.name), "namespace": w.ns, "resourceVersion": rv,
            "labels": {"endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io", "kubernetes.io/service-name": w.name},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": w.name, "uid": w.sa_uid, "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [managed("kube-controller-manager", "Update", "discovery.k8s.io/v1", "2026-11-01T22:02:51Z", None, json!({"f:addressType": {}, "f:endpoints": {}, "f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:endpointslice.kubernetes.io/managed-by": {}, "f:kubernetes.io/service-name": {}}, "f:ownerReferences": {".": {}, "k:{\"uid\":\"x\"}": {}}}, "f:ports": {}}))]},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

/// The scheduler's pods/binding request.
pub(crate) fn binding(p: &Pod, ns: &str, node: &str) -> Value {
    json!({"kind": "Binding", "apiVersion": "v1", "metadata": {"name": p.name, "namespace": ns, "uid": p.uid, "creationTimestamp": null}, "target": {"kind": "Node", "name": node}})
}

/// A `Status` success body (responses to delete and binding).
pub(crate) fn status_success(kind: &str, name: &str, group: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": name, "group": group, "kind": kind}})
}

/// A ReplicaSet status update.
pub(crate) fn replicaset_status(w: &Workload, rv: &str) -> Value {
    json!({"kind": "ReplicaSet", "apiVersion": "apps/v1",
        "metadata": {"name": format!("{}-{}", w.name, w.rs_hash), "namespace": w.ns, "uid": w.uid, "resourceVersion": rv, "generation": w.generation,
            "labels": labels(w),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": w.name, "uid": w.uid, "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"replicas": w.pods.len(), "selector": {"matchLabels": labels(w)}, "template": {"metadata": {"labels": labels(w)}, "spec": pod_spec(w)}},
        "status": {"replicas": w.pods.len(), "fullyLabeledReplicas": w.pods.len(), "readyReplicas": w.pods.len(), "availableReplicas": w.pods.len(), "observedGeneration": w.generation}})
}

/// A RoleBinding granting a team edit rights in its namespace (human `kubectl apply`).
pub(crate) fn team_rolebinding(ns: &str, group: &str) -> Value {
    json!({"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": format!("{group}-edit"), "namespace": ns,
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": format!("{{\"apiVersion\":\"rbac.authorization.k8s.io/v1\",\"kind\":\"RoleBinding\",\"metadata\":{{\"annotations\":{{}},\"name\":\"{group}-edit\",\"namespace\":\"{ns}\"}},\"roleRef\":{{\"apiGroup\":\"rbac.authorization.k8s.io\",\"kind\":\"ClusterRole\",\"name\":\"edit\"}},\"subjects\":[{{\"apiGroup\":\"rbac.authorization.k8s.io\",\"kind\":\"Group\",\"name\":\"{group}\"}}]}}\n")}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]})
}

/// A core/v1 Event about a pod, as kubelets and controllers record them.
pub(crate) fn event(
    ns: &str,
    name: &str,
    pod: &Pod,
    component: &str,
    host: &str,
    now: i64,
    k: u8,
) -> Value {
    let (reason, message, ty) = match k % 6 {
        0 => ("Pulled", "Container image already present on machine", "Normal"),
        1 => ("Created", "Created container: app", "Normal"),
        2 => ("Started", "Started container app", "Normal"),
        3 => ("Unhealthy", "Readiness probe failed: Get \"http://10.244.1.17:8080/readyz\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)", "Warning"),
        4 => ("Scheduled", "Successfully assigned pod to node", "Normal"),
        _ => ("BackOff", "Back-off restarting failed container app in pod", "Warning"),
    };
    let t = ts(now);
    json!({"kind": "Event", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "involvedObject": {"kind": "Pod", "namespace": ns, "name": pod.name, "uid": pod.uid, "apiVersion": "v1", "resourceVersion": "48211001", "fieldPath": "spec.containers{app}"},
        "reason": reason, "message": message,
        "source": {"component": component, "host": host},
        "firstTimestamp": t, "lastTimestamp": t, "count": 1, "type": ty,
        "eventTime": null, "reportingComponent": component, "reportingInstance": host})
}
