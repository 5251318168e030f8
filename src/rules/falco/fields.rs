//! The fields of Falco's k8saudit and json plugins (`ka.*`, `jevt.*`), extracted from the
//! audit event's JSON.
//!
//! Extraction follows the k8saudit plugin (falcosecurity/plugins `plugins/k8saudit`): every
//! field is either a string or a list of strings (only `jevt.rawtime` is a number), a value
//! that is not a JSON string is rendered as compact JSON (`true`, `201`, `{"a":1}`), and a
//! field whose path is absent is *not available*: every comparison on it is false. Lists
//! that come out empty are not available either, as for Falco, where a plugin that sets no
//! value makes the field absent.
//!
//! Deliberate readings where the plugin's code and its documentation disagree are listed in
//! docs/falco.md ("Field notes").

use std::borrow::Cow;

use serde_json::Value;

/// The type of a field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// Text.
    Str,
    /// An unsigned integer (`jevt.rawtime`).
    U64,
}

/// What goes between the brackets of `field[arg]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// No argument allowed.
    None,
    /// An optional numeric index (`ka.req.pod.containers.image[0]`).
    Index,
    /// A required key (`ka.uri.param[command]`, `jevt.value[/stage]`).
    Key,
}

/// Which container list of a pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containers {
    /// `spec.containers`
    Main,
    /// `spec.initContainers`
    Init,
    /// `spec.ephemeralContainers`
    Ephemeral,
}

impl Containers {
    fn key(self) -> &'static str {
        match self {
            Containers::Main => "containers",
            Containers::Init => "initContainers",
            Containers::Ephemeral => "ephemeralContainers",
        }
    }
}

/// A per-container attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CAttr {
    /// `name`
    Name,
    /// `image`
    Image,
    /// `image` without tag and digest.
    Repository,
    /// `command` (flattened)
    Command,
    /// `args` (flattened)
    Args,
    /// `securityContext.privileged`
    Privileged,
    /// `securityContext.allowPrivilegeEscalation`
    AllowPrivEsc,
    /// `securityContext.readOnlyRootFilesystem`
    ReadOnlyFs,
    /// `securityContext.runAsUser`
    RunAsUser,
    /// container `runAsUser`, else the pod's, else 0
    EffRunAsUser,
    /// `securityContext.runAsGroup`
    RunAsGroup,
    /// container `runAsGroup`, else the pod's, else 0
    EffRunAsGroup,
    /// `securityContext.procMount`
    ProcMount,
    /// `securityContext.capabilities.add` (flattened)
    AddCapabilities,
    /// `ports[].hostPort`, else `containerPort`
    HostPort,
}

/// Every supported field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldId {
    /// A field read from fixed keys of the event.
    Keys(&'static [&'static str]),
    /// A list field read from fixed keys (each element rendered as text).
    KeysList(&'static [&'static str]),
    /// `ka.uri.param[key]`
    UriParam,
    /// `ka.target.pod.name`
    TargetPodName,
    /// `ka.req.binding.subjects.*_names`: subjects of one kind.
    SubjectNames(&'static str, bool),
    /// `ka.req.binding.subject.has_name[x]` (deprecated, constant).
    SubjectHasName,
    /// `ka.req.pod.<containers>.<attr>`
    Container(Containers, CAttr),
    /// `ka.req.container.image` (first container)
    FirstImage,
    /// `ka.req.container.image.repository` (first container)
    FirstRepository,
    /// `ka.req.container.privileged` (any container privileged)
    AnyPrivileged,
    /// `ka.req.role.rules.<key>` (flattened)
    RoleRules(&'static str),
    /// `ka.req.service.ports`
    ServicePorts,
    /// `ka.req.pod.volumes.hostpath`
    VolumeHostPaths,
    /// `ka.req.volume.hostpath[path]`: "true" when a volume uses the path (prefix with `*`).
    VolumeHostPathMatch,
    /// `ka.req.pod.volumes.flexvolume_driver`
    FlexVolumeDrivers,
    /// `ka.req.pod.volumes.volume_type`
    VolumeTypes,
    /// `ka.sourceips`
    SourceIps,
    /// `ka.cluster.name`
    ClusterName,
    /// `jevt.value[/json/pointer]`
    JsonValue,
    /// `jevt.obj`
    JsonObj,
    /// `jevt.rawtime`: event time in nanoseconds since the epoch.
    RawTime,
    /// `jevt.time`: event time as RFC 3339 with nanoseconds.
    Time,
}

/// A field's static description.
#[derive(Debug, Clone, Copy)]
pub struct FieldDef {
    /// Canonical name.
    pub name: &'static str,
    /// Value type.
    pub ty: FieldType,
    /// Whether the field yields a list.
    pub list: bool,
    /// Argument kind.
    pub arg: ArgKind,
    /// How to extract it.
    pub id: FieldId,
    /// Where it comes from, for the docs table and the Sigma mapping.
    pub path: &'static str,
}

const fn s(name: &'static str, keys: &'static [&'static str], path: &'static str) -> FieldDef {
    FieldDef {
        name,
        ty: FieldType::Str,
        list: false,
        arg: ArgKind::None,
        id: FieldId::Keys(keys),
        path,
    }
}

const fn f(
    name: &'static str,
    list: bool,
    arg: ArgKind,
    id: FieldId,
    path: &'static str,
) -> FieldDef {
    FieldDef {
        name,
        ty: FieldType::Str,
        list,
        arg,
        id,
        path,
    }
}

macro_rules! containers {
    ($set:expr, $p:literal, $sig:literal) => {
        [
            f(
                concat!("ka.req.pod.", $p, ".name"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::Name),
                concat!("requestObject.spec.", $sig, ".name"),
            ),
            f(
                concat!("ka.req.pod.", $p, ".image"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::Image),
                concat!("requestObject.spec.", $sig, ".image"),
            ),
            f(
                concat!("ka.req.pod.", $p, ".image.repository"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::Repository),
                "",
            ),
            f(
                concat!("ka.req.pod.", $p, ".command"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::Command),
                concat!("requestObject.spec.", $sig, ".command"),
            ),
            f(
                concat!("ka.req.pod.", $p, ".args"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::Args),
                concat!("requestObject.spec.", $sig, ".args"),
            ),
            f(
                concat!("ka.req.pod.", $p, ".privileged"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::Privileged),
                concat!("requestObject.spec.", $sig, ".securityContext.privileged"),
            ),
            f(
                concat!("ka.req.pod.", $p, ".allow_privilege_escalation"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::AllowPrivEsc),
                concat!(
                    "requestObject.spec.",
                    $sig,
                    ".securityContext.allowPrivilegeEscalation"
                ),
            ),
            f(
                concat!("ka.req.pod.", $p, ".read_only_fs"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::ReadOnlyFs),
                concat!(
                    "requestObject.spec.",
                    $sig,
                    ".securityContext.readOnlyRootFilesystem"
                ),
            ),
            f(
                concat!("ka.req.pod.", $p, ".run_as_user"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::RunAsUser),
                concat!("requestObject.spec.", $sig, ".securityContext.runAsUser"),
            ),
            f(
                concat!("ka.req.pod.", $p, ".eff_run_as_user"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::EffRunAsUser),
                "",
            ),
            f(
                concat!("ka.req.pod.", $p, ".run_as_group"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::RunAsGroup),
                concat!("requestObject.spec.", $sig, ".securityContext.runAsGroup"),
            ),
            f(
                concat!("ka.req.pod.", $p, ".eff_run_as_group"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::EffRunAsGroup),
                "",
            ),
            f(
                concat!("ka.req.pod.", $p, ".proc_mount"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::ProcMount),
                concat!("requestObject.spec.", $sig, ".securityContext.procMount"),
            ),
            f(
                concat!("ka.req.pod.", $p, ".add_capabilities"),
                true,
                ArgKind::Index,
                FieldId::Container($set, CAttr::AddCapabilities),
                concat!(
                    "requestObject.spec.",
                    $sig,
                    ".securityContext.capabilities.add"
                ),
            ),
        ]
    };
}

const MAIN: [FieldDef; 14] = containers!(Containers::Main, "containers", "containers");
const INIT: [FieldDef; 14] = containers!(Containers::Init, "initContainers", "initContainers");
const EPHEMERAL: [FieldDef; 14] = containers!(
    Containers::Ephemeral,
    "ephemeralContainers",
    "ephemeralContainers"
);

const OTHER: &[FieldDef] = &[
    s("ka.auditid", &["auditID"], "auditID"),
    s("ka.stage", &["stage"], "stage"),
    s(
        "ka.auth.decision",
        &["annotations", "authorization.k8s.io/decision"],
        "annotations.authorization.k8s.io/decision",
    ),
    s(
        "ka.auth.reason",
        &["annotations", "authorization.k8s.io/reason"],
        "annotations.authorization.k8s.io/reason",
    ),
    s(
        "ka.auth.openshift.decision",
        &["annotations", "authentication.openshift.io/decision"],
        "annotations.authentication.openshift.io/decision",
    ),
    s(
        "ka.validations.admission.policy.failure",
        &[
            "annotations",
            "validation.policy.admission.k8s.io/validation_failure",
        ],
        "annotations.validation.policy.admission.k8s.io/validation_failure",
    ),
    s(
        "ka.security.pod.violations",
        &["annotations", "pod-security.kubernetes.io/audit-violations"],
        "annotations.pod-security.kubernetes.io/audit-violations",
    ),
    s(
        "ka.auth.openshift.username",
        &["annotations", "authentication.openshift.io/username"],
        "annotations.authentication.openshift.io/username",
    ),
    s("ka.user.name", &["user", "username"], "user.username"),
    f(
        "ka.user.groups",
        true,
        ArgKind::None,
        FieldId::KeysList(&["user", "groups"]),
        "user.groups",
    ),
    s(
        "ka.impuser.name",
        &["impersonatedUser", "username"],
        "impersonatedUser.username",
    ),
    s("ka.verb", &["verb"], "verb"),
    s("ka.uri", &["requestURI"], "requestURI"),
    f("ka.uri.param", false, ArgKind::Key, FieldId::UriParam, ""),
    s("ka.target.name", &["objectRef", "name"], "objectRef.name"),
    s(
        "ka.target.namespace",
        &["objectRef", "namespace"],
        "objectRef.namespace",
    ),
    s(
        "ka.target.resource",
        &["objectRef", "resource"],
        "objectRef.resource",
    ),
    s(
        "ka.target.subresource",
        &["objectRef", "subresource"],
        "objectRef.subresource",
    ),
    f(
        "ka.target.pod.name",
        false,
        ArgKind::None,
        FieldId::TargetPodName,
        "",
    ),
    f(
        "ka.req.binding.subjects",
        true,
        ArgKind::None,
        FieldId::KeysList(&["requestObject", "subjects"]),
        "",
    ),
    f(
        "ka.req.binding.subjects.user_names",
        true,
        ArgKind::None,
        FieldId::SubjectNames("User", false),
        "",
    ),
    f(
        "ka.req.binding.subjects.serviceaccount_names",
        true,
        ArgKind::None,
        FieldId::SubjectNames("ServiceAccount", false),
        "",
    ),
    f(
        "ka.req.binding.subjects.serviceaccount_ns_names",
        true,
        ArgKind::None,
        FieldId::SubjectNames("ServiceAccount", true),
        "",
    ),
    f(
        "ka.req.binding.subjects.group_names",
        true,
        ArgKind::None,
        FieldId::SubjectNames("Group", false),
        "",
    ),
    s(
        "ka.req.binding.role",
        &["requestObject", "roleRef", "name"],
        "requestObject.roleRef.name",
    ),
    f(
        "ka.req.binding.subject.has_name",
        false,
        ArgKind::Key,
        FieldId::SubjectHasName,
        "",
    ),
    s(
        "ka.req.configmap.name",
        &["objectRef", "name"],
        "objectRef.name",
    ),
    s("ka.req.configmap.obj", &["requestObject", "data"], ""),
    f(
        "ka.req.container.image",
        false,
        ArgKind::None,
        FieldId::FirstImage,
        "",
    ),
    f(
        "ka.req.container.image.repository",
        false,
        ArgKind::None,
        FieldId::FirstRepository,
        "",
    ),
    s(
        "ka.req.pod.host_ipc",
        &["requestObject", "spec", "hostIPC"],
        "requestObject.spec.hostIPC",
    ),
    s(
        "ka.req.pod.host_network",
        &["requestObject", "spec", "hostNetwork"],
        "requestObject.spec.hostNetwork",
    ),
    s(
        "ka.req.container.host_network",
        &["requestObject", "spec", "hostNetwork"],
        "requestObject.spec.hostNetwork",
    ),
    s(
        "ka.req.pod.host_pid",
        &["requestObject", "spec", "hostPID"],
        "requestObject.spec.hostPID",
    ),
    f(
        "ka.req.pod.containers.host_port",
        true,
        ArgKind::Index,
        FieldId::Container(Containers::Main, CAttr::HostPort),
        "",
    ),
    f(
        "ka.req.pod.initContainers.host_port",
        true,
        ArgKind::Index,
        FieldId::Container(Containers::Init, CAttr::HostPort),
        "",
    ),
    f(
        "ka.req.container.privileged",
        false,
        ArgKind::None,
        FieldId::AnyPrivileged,
        "",
    ),
    s(
        "ka.req.pod.run_as_user",
        &["requestObject", "spec", "securityContext", "runAsUser"],
        "requestObject.spec.securityContext.runAsUser",
    ),
    s(
        "ka.req.pod.run_as_group",
        &["requestObject", "spec", "securityContext", "runAsGroup"],
        "requestObject.spec.securityContext.runAsGroup",
    ),
    f(
        "ka.req.role.rules",
        true,
        ArgKind::None,
        FieldId::KeysList(&["requestObject", "rules"]),
        "",
    ),
    f(
        "ka.req.role.rules.apiGroups",
        true,
        ArgKind::Index,
        FieldId::RoleRules("apiGroups"),
        "requestObject.rules.apiGroups",
    ),
    f(
        "ka.req.role.rules.nonResourceURLs",
        true,
        ArgKind::Index,
        FieldId::RoleRules("nonResourceURLs"),
        "requestObject.rules.nonResourceURLs",
    ),
    f(
        "ka.req.role.rules.verbs",
        true,
        ArgKind::Index,
        FieldId::RoleRules("verbs"),
        "requestObject.rules.verbs",
    ),
    f(
        "ka.req.role.rules.resources",
        true,
        ArgKind::Index,
        FieldId::RoleRules("resources"),
        "requestObject.rules.resources",
    ),
    s(
        "ka.req.pod.fs_group",
        &["requestObject", "spec", "securityContext", "fsGroup"],
        "requestObject.spec.securityContext.fsGroup",
    ),
    f(
        "ka.req.pod.supplemental_groups",
        true,
        ArgKind::None,
        FieldId::KeysList(&[
            "requestObject",
            "spec",
            "securityContext",
            "supplementalGroups",
        ]),
        "requestObject.spec.securityContext.supplementalGroups",
    ),
    s(
        "ka.req.service.type",
        &["requestObject", "spec", "type"],
        "requestObject.spec.type",
    ),
    f(
        "ka.req.service.ports",
        true,
        ArgKind::Index,
        FieldId::ServicePorts,
        "",
    ),
    f(
        "ka.req.pod.volumes.hostpath",
        true,
        ArgKind::Index,
        FieldId::VolumeHostPaths,
        "requestObject.spec.volumes.hostPath.path",
    ),
    f(
        "ka.req.volume.hostpath",
        false,
        ArgKind::Key,
        FieldId::VolumeHostPathMatch,
        "",
    ),
    f(
        "ka.req.pod.volumes.flexvolume_driver",
        true,
        ArgKind::Index,
        FieldId::FlexVolumeDrivers,
        "requestObject.spec.volumes.flexVolume.driver",
    ),
    f(
        "ka.req.pod.volumes.volume_type",
        true,
        ArgKind::Index,
        FieldId::VolumeTypes,
        "",
    ),
    s(
        "ka.resp.name",
        &["responseObject", "metadata", "name"],
        "responseObject.metadata.name",
    ),
    s(
        "ka.response.code",
        &["responseStatus", "code"],
        "responseStatus.code",
    ),
    s(
        "ka.response.reason",
        &["responseStatus", "reason"],
        "responseStatus.reason",
    ),
    s("ka.useragent", &["userAgent"], "userAgent"),
    f(
        "ka.sourceips",
        true,
        ArgKind::Index,
        FieldId::SourceIps,
        "sourceIPs",
    ),
    f(
        "ka.cluster.name",
        false,
        ArgKind::None,
        FieldId::ClusterName,
        "cluster",
    ),
    f("jevt.value", false, ArgKind::Key, FieldId::JsonValue, ""),
    f("jevt.obj", false, ArgKind::None, FieldId::JsonObj, ""),
    FieldDef {
        name: "jevt.rawtime",
        ty: FieldType::U64,
        list: false,
        arg: ArgKind::None,
        id: FieldId::RawTime,
        path: "",
    },
    f("jevt.time", false, ArgKind::None, FieldId::Time, ""),
];

/// Aliases: the json plugin's `json.*` names for the `jevt.*` fields.
const ALIASES: &[(&str, &str)] = &[
    ("json.value", "jevt.value"),
    ("json.obj", "jevt.obj"),
    ("json.rawtime", "jevt.rawtime"),
    ("jevt.time.iso8601", "jevt.time"),
    // Falco's generic event fields that make sense for an audit event.
    ("evt.time", "jevt.time"),
    ("evt.time.iso8601", "jevt.time"),
    ("evt.rawtime", "jevt.rawtime"),
];

/// Every field definition, in documentation order.
pub fn all_fields() -> impl Iterator<Item = &'static FieldDef> {
    OTHER
        .iter()
        .chain(MAIN.iter())
        .chain(INIT.iter())
        .chain(EPHEMERAL.iter())
}

/// Looks a field up by name (aliases accepted).
pub fn lookup(name: &str) -> Option<&'static FieldDef> {
    let name = ALIASES
        .iter()
        .find(|(a, _)| *a == name)
        .map(|(_, c)| *c)
        .unwrap_or(name);
    all_fields().find(|d| d.name == name)
}

/// What the event carries besides its JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventCtx<'a> {
    /// Cluster name, for `ka.cluster.name`.
    pub cluster: Option<&'a str>,
    /// Event time in nanoseconds since the epoch, for `jevt.rawtime`/`jevt.time`.
    pub time_ns: Option<i64>,
}

/// A resolved field reference: definition plus argument.
#[derive(Debug, Clone)]
pub struct FieldRef {
    /// The definition.
    pub def: &'static FieldDef,
    /// The argument as written (without brackets).
    pub arg: Option<String>,
    /// `arg` as an index, for index fields.
    pub index: Option<usize>,
    /// `arg` as JSON-pointer keys (unescaped), for `jevt.value`.
    pub pointer: Option<Vec<String>>,
}

/// Why a field reference is invalid.
pub fn resolve(name: &str, arg: Option<&str>) -> Result<FieldRef, String> {
    let def = lookup(name).ok_or_else(|| format!("unknown field '{name}'"))?;
    let mut index = None;
    match (def.arg, arg) {
        (ArgKind::None, Some(a)) => {
            return Err(format!("field '{name}' takes no argument, got [{a}]"));
        }
        (ArgKind::Key, None) => {
            return Err(format!(
                "field '{name}' requires an argument, e.g. {name}[key]"
            ));
        }
        (ArgKind::Key, Some("")) => {
            return Err(format!("field '{name}' requires a non-empty argument"));
        }
        (ArgKind::Index, Some(a)) => {
            index = Some(
                a.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("field '{name}' takes a numeric index, got [{a}]"))?,
            );
        }
        _ => {}
    }
    let pointer = (def.id == FieldId::JsonValue).then(|| {
        let p = arg.unwrap_or("");
        p.strip_prefix('/')
            .unwrap_or(p)
            .split('/')
            .map(|k| k.replace("~1", "/").replace("~0", "~"))
            .collect()
    });
    Ok(FieldRef {
        def,
        arg: arg.map(str::to_string),
        index,
        pointer,
    })
}

/// Extracted values (the field is available). Most fields have one value, which needs
/// no list allocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Values<'v> {
    /// A single value.
    One(Cow<'v, str>),
    /// A list (never empty).
    Many(Vec<Cow<'v, str>>),
}

impl Values<'_> {
    /// The values as text.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            Values::One(v) => (Some(v.as_ref()), None),
            Values::Many(v) => (None, Some(v.iter().map(|c| c.as_ref()))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// The values joined by `sep`.
    pub fn join(&self, sep: &str) -> String {
        self.iter().collect::<Vec<_>>().join(sep)
    }

    /// Owned copies of the values.
    pub fn to_strings(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

/// `Some(values)`, or `None` when the field is not available.
type Got<'v> = Option<Values<'v>>;

/// What extraction reads: a decoded event (typed fields first, the raw JSON parsed only
/// when a field needs it) or a JSON value (the redacted copy used for outputs).
#[derive(Debug, Clone, Copy)]
pub enum View<'a> {
    /// A decoded event.
    Event(&'a crate::model::AuditEvent<'a>),
    /// A whole audit event as JSON.
    Json(&'a Value),
}

impl<'a> View<'a> {
    /// The event as JSON (parsed on first use for [`View::Event`]).
    pub fn root(&self) -> &'a Value {
        match self {
            View::Event(ev) => ev.raw.value(),
            View::Json(v) => v,
        }
    }
}

/// Top-level fields that the typed event already holds, so that most checks never parse
/// the request and response bodies. `None`: not a typed path, read the JSON.
fn typed<'a, S: AsRef<str>>(
    ev: &'a crate::model::AuditEvent<'a>,
    keys: &[S],
) -> Option<Option<Cow<'a, str>>> {
    use crate::model::Stage;
    let f = &ev.fields;
    let b = |o: &'a Option<Cow<'a, str>>| o.as_deref().map(Cow::Borrowed);
    let k = |i: usize| keys.get(i).map(AsRef::as_ref);
    Some(match (keys.len(), k(0)?, k(1).unwrap_or("")) {
        (1, "auditID", _) => b(&f.audit_id),
        (1, "verb", _) => b(&f.verb),
        (1, "requestURI", _) => b(&f.request_uri),
        (1, "userAgent", _) => b(&f.user_agent),
        (1, "stage", _) if f.stage != Stage::Unknown => Some(Cow::Borrowed(f.stage.as_str())),
        (2, "user", "username") => b(&f.user.username),
        (2, "impersonatedUser", "username") => f
            .impersonated_user
            .as_ref()
            .and_then(|u| u.username.as_deref())
            .map(Cow::Borrowed),
        (2, "objectRef", key) => {
            let Some(o) = f.object_ref.as_ref() else {
                return Some(None);
            };
            let v = match key {
                "resource" => &o.resource,
                "namespace" => &o.namespace,
                "name" => &o.name,
                "subresource" => &o.subresource,
                "apiGroup" => &o.api_group,
                "apiVersion" => &o.api_version,
                _ => return None,
            };
            v.as_deref().map(Cow::Borrowed)
        }
        (2, "responseStatus", "code") => f
            .response_status
            .as_ref()
            .and_then(|r| r.code)
            .map(|c| Cow::Owned(c.to_string())),
        (2, "responseStatus", "reason") => f
            .response_status
            .as_ref()
            .and_then(|r| r.reason.as_deref())
            .map(Cow::Borrowed),
        (2, "annotations", key) => ev.annotation(key).map(Cow::Borrowed),
        _ => return None,
    })
}

/// `Get(keys...)` as fastjson does it: object keys, and numeric keys index arrays.
fn get<'v>(mut v: &'v Value, keys: &[&str]) -> Option<&'v Value> {
    for k in keys {
        v = step(v, k)?;
    }
    Some(v)
}

fn step<'v>(v: &'v Value, k: &str) -> Option<&'v Value> {
    match v {
        Value::Object(m) => m.get(k),
        Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    }
}

/// A JSON value as the plugins render it: strings bare, anything else as compact JSON.
pub fn text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s.as_str()),
        other => Cow::Owned(other.to_string()),
    }
}

/// The plugin's `getValuesRecursive`: walks `keys`, fanning out over every array met on the
/// way (or picking element `index` of each), and records `None` for elements where the rest
/// of the path is absent.
fn values_rec<'v>(
    mut v: &'v Value,
    index: Option<usize>,
    keys: &[&str],
) -> Option<Vec<Option<&'v Value>>> {
    for (i, k) in keys.iter().enumerate() {
        if let Value::Array(arr) = v {
            match index {
                None => {
                    let mut out = Vec::new();
                    for e in arr {
                        match values_rec(e, index, &keys[i..]) {
                            Some(vals) => out.extend(vals),
                            None => out.push(None),
                        }
                    }
                    return Some(out);
                }
                Some(ix) => v = arr.get(ix)?,
            }
        }
        v = step(v, k)?;
    }
    Some(vec![Some(v)])
}

fn skip_nil<'v>(vals: Vec<Option<&'v Value>>) -> Vec<Cow<'v, str>> {
    vals.into_iter().flatten().map(text).collect()
}

/// Like [`skip_nil`], but array values contribute their elements (`command`, `args`,
/// `capabilities.add` are arrays per container).
fn skip_nil_flat<'v>(vals: Vec<Option<&'v Value>>) -> Vec<Cow<'v, str>> {
    let mut out = Vec::new();
    for v in vals.into_iter().flatten() {
        match v {
            Value::Array(items) => out.extend(items.iter().map(text)),
            other => out.push(text(other)),
        }
    }
    out
}

fn non_empty(v: Vec<Cow<'_, str>>) -> Got<'_> {
    if v.is_empty() {
        None
    } else {
        Some(Values::Many(v))
    }
}

/// The repository part of an image reference, exactly as the plugin cuts it: everything
/// before the first `:`, then before the first `@`.
pub fn repository(image: &str) -> &str {
    let a = image.split(':').next().unwrap_or(image);
    a.split('@').next().unwrap_or(a)
}

fn images<'v>(root: &'v Value, c: Containers, index: Option<usize>) -> Got<'v> {
    let vals = values_rec(root, index, &["requestObject", "spec", c.key(), "image"])?;
    // The plugin's arrayAsStrings fails on a container without an image: the field is then
    // unavailable as a whole.
    let mut out = Vec::with_capacity(vals.len());
    for v in vals {
        out.push(text(v?));
    }
    non_empty(out)
}

fn container_attr<'v>(root: &'v Value, c: Containers, a: CAttr, index: Option<usize>) -> Got<'v> {
    let base = ["requestObject", "spec", c.key()];
    let path = |rest: &[&'static str]| -> Vec<&'static str> {
        let mut p: Vec<&'static str> = Vec::with_capacity(3 + rest.len());
        p.extend_from_slice(&["requestObject", "spec", c.key()]);
        p.extend_from_slice(rest);
        p
    };
    let sc = |k: &'static str| path(&["securityContext", k]);
    match a {
        CAttr::Image => images(root, c, index),
        CAttr::Repository => {
            let imgs = images(root, c, index)?;
            non_empty(
                imgs.iter()
                    .map(|i| Cow::Owned(repository(i).to_string()))
                    .collect(),
            )
        }
        CAttr::Name => {
            let vals = values_rec(root, index, &path(&["name"]))?;
            non_empty(skip_nil(vals))
        }
        CAttr::Command | CAttr::Args => {
            let k = if a == CAttr::Command {
                "command"
            } else {
                "args"
            };
            non_empty(skip_nil_flat(values_rec(root, index, &path(&[k]))?))
        }
        CAttr::AddCapabilities => non_empty(skip_nil_flat(values_rec(
            root,
            index,
            &path(&["securityContext", "capabilities", "add"]),
        )?)),
        CAttr::Privileged => non_empty(skip_nil(values_rec(root, index, &sc("privileged"))?)),
        CAttr::AllowPrivEsc => non_empty(skip_nil(values_rec(
            root,
            index,
            &sc("allowPrivilegeEscalation"),
        )?)),
        CAttr::ReadOnlyFs => non_empty(skip_nil(values_rec(
            root,
            index,
            &sc("readOnlyRootFilesystem"),
        )?)),
        CAttr::RunAsUser => non_empty(skip_nil(values_rec(root, index, &sc("runAsUser"))?)),
        CAttr::RunAsGroup => non_empty(skip_nil(values_rec(root, index, &sc("runAsGroup"))?)),
        CAttr::ProcMount => non_empty(skip_nil(values_rec(root, index, &sc("procMount"))?)),
        CAttr::EffRunAsUser | CAttr::EffRunAsGroup => {
            let k = if a == CAttr::EffRunAsUser {
                "runAsUser"
            } else {
                "runAsGroup"
            };
            let pod = get(root, &["requestObject", "spec", "securityContext", k])
                .map(text)
                .unwrap_or(Cow::Borrowed("0"));
            let vals = values_rec(root, index, &sc(k))?;
            non_empty(
                vals.into_iter()
                    .map(|v| v.map(text).unwrap_or_else(|| pod.clone()))
                    .collect(),
            )
        }
        CAttr::HostPort => {
            let ports = values_rec(root, index, &[base[0], base[1], base[2], "ports"])?;
            let mut out = Vec::new();
            for p in ports.into_iter().flatten() {
                let Value::Array(items) = p else {
                    return None;
                };
                for port in items {
                    if let Some(h) = port.get("hostPort") {
                        out.push(text(h));
                    } else if let Some(c) = port.get("containerPort") {
                        // With hostNetwork the container port is the host port.
                        out.push(text(c));
                    }
                }
            }
            non_empty(out)
        }
    }
}

/// Extracts `field` from the event; `None` when it is not available.
pub fn extract<'v>(field: &FieldRef, view: &View<'v>, ctx: &EventCtx<'_>) -> Got<'v> {
    let index = field.index;
    let arg = field.arg.as_deref().unwrap_or("");
    if let View::Event(ev) = view {
        let hit = match (field.def.id, &field.pointer) {
            (FieldId::Keys(keys), _) => typed(ev, keys),
            (FieldId::JsonValue, Some(p)) => typed(ev, p),
            _ => None,
        };
        if let Some(v) = hit {
            return v.map(Values::One);
        }
    }
    if let FieldId::RawTime = field.def.id {
        return Some(Values::One(Cow::Owned(
            ctx.time_ns.unwrap_or(0).max(0).to_string(),
        )));
    }
    if let FieldId::ClusterName = field.def.id {
        return ctx.cluster.map(|c| Values::One(Cow::Owned(c.to_string())));
    }
    let root = view.root();
    match field.def.id {
        FieldId::Keys(keys) => get(root, keys).map(|v| Values::One(text(v))),
        FieldId::KeysList(keys) => match get(root, keys)? {
            Value::Array(items) => non_empty(items.iter().map(text).collect()),
            _ => None,
        },
        FieldId::UriParam => {
            let uri = get(root, &["requestURI"])?.as_str()?;
            let (_, query) = uri.split_once('?')?;
            let query = query.split('#').next().unwrap_or(query);
            for pair in query.split(['&', ';']) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if decode_query(k) == arg {
                    return Some(Values::One(Cow::Owned(decode_query(v))));
                }
            }
            None
        }
        FieldId::TargetPodName => {
            if get(root, &["objectRef", "resource"])?.as_str()? != "pods" {
                return None;
            }
            get(root, &["objectRef", "name"]).map(|v| Values::One(text(v)))
        }
        FieldId::SubjectNames(kind, with_ns) => {
            let Value::Array(subjects) = get(root, &["requestObject", "subjects"])? else {
                return None;
            };
            let mut out = Vec::new();
            for s in subjects {
                if s.get("kind").and_then(Value::as_str) != Some(kind) {
                    continue;
                }
                let Some(name) = s.get("name") else { continue };
                if with_ns {
                    let ns = s.get("namespace").map(text).unwrap_or_default();
                    out.push(Cow::Owned(format!("{ns}:{}", text(name))));
                } else {
                    out.push(text(name));
                }
            }
            non_empty(out)
        }
        FieldId::SubjectHasName => Some(Values::One(Cow::Borrowed("N/A"))),
        FieldId::Container(c, a) => container_attr(root, c, a, index),
        FieldId::FirstImage => images(root, Containers::Main, Some(0)),
        FieldId::FirstRepository => {
            container_attr(root, Containers::Main, CAttr::Repository, Some(0))
        }
        FieldId::AnyPrivileged => {
            let vals = values_rec(
                root,
                None,
                &[
                    "requestObject",
                    "spec",
                    "containers",
                    "securityContext",
                    "privileged",
                ],
            )?;
            let any = vals.iter().any(|v| matches!(v, Some(Value::Bool(true))));
            Some(Values::One(Cow::Borrowed(if any {
                "true"
            } else {
                "false"
            })))
        }
        FieldId::RoleRules(key) => {
            let vals = values_rec(root, index, &["requestObject", "rules", key])?;
            let mut out = Vec::new();
            for v in vals.into_iter().flatten() {
                if let Value::Array(items) = v {
                    out.extend(items.iter().map(text));
                }
            }
            non_empty(out)
        }
        FieldId::ServicePorts => match get(root, &["requestObject", "spec", "ports"])? {
            // One JSON object per port, as Falco prints them.
            Value::Array(items) => match index {
                Some(i) => items.get(i).map(|v| Values::One(text(v))),
                None => non_empty(items.iter().map(text).collect()),
            },
            _ => None,
        },
        FieldId::VolumeHostPaths => non_empty(skip_nil(values_rec(
            root,
            index,
            &["requestObject", "spec", "volumes", "hostPath", "path"],
        )?)),
        FieldId::VolumeHostPathMatch => {
            let vals = values_rec(
                root,
                None,
                &["requestObject", "spec", "volumes", "hostPath", "path"],
            )?;
            let prefix = arg.strip_suffix('*');
            let hit = skip_nil(vals).iter().any(|p| match prefix {
                Some(pre) => p.starts_with(pre),
                None => p == arg,
            });
            Some(Values::One(Cow::Borrowed(if hit {
                "true"
            } else {
                "false"
            })))
        }
        FieldId::FlexVolumeDrivers => non_empty(skip_nil(values_rec(
            root,
            index,
            &["requestObject", "spec", "volumes", "flexVolume", "driver"],
        )?)),
        FieldId::VolumeTypes => {
            let Value::Array(vols) = get(root, &["requestObject", "spec", "volumes"])? else {
                return None;
            };
            let pick: Vec<&Value> = match index {
                Some(i) => vec![vols.get(i)?],
                None => vols.iter().collect(),
            };
            let mut out = Vec::new();
            for v in pick {
                if let Value::Object(m) = v {
                    out.extend(
                        m.keys()
                            .filter(|k| k.as_str() != "name")
                            .map(|k| Cow::Borrowed(k.as_str())),
                    );
                }
            }
            non_empty(out)
        }
        FieldId::SourceIps => match get(root, &["sourceIPs"])? {
            Value::Array(items) => match index {
                Some(i) => items.get(i).map(|v| Values::One(text(v))),
                None => non_empty(items.iter().map(text).collect()),
            },
            _ => None,
        },
        FieldId::JsonValue => match &field.pointer {
            Some(p) => get_owned(root, p).map(|v| Values::One(text(v))),
            None => json_pointer(root, arg).map(|v| Values::One(text(v))),
        },
        FieldId::JsonObj => serde_json::to_string_pretty(root)
            .ok()
            .map(|s| Values::One(Cow::Owned(s))),
        FieldId::Time => {
            let ns = ctx.time_ns?;
            let t = chrono::DateTime::from_timestamp_nanos(ns);
            Some(Values::One(Cow::Owned(
                t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            )))
        }
        // Handled before the JSON is touched.
        FieldId::RawTime | FieldId::ClusterName => None,
    }
}

fn get_owned<'v>(mut v: &'v Value, keys: &[String]) -> Option<&'v Value> {
    for k in keys {
        v = step(v, k)?;
    }
    Some(v)
}

/// RFC 6901 pointer lookup as the json plugin does it (leading `/` optional).
pub fn json_pointer<'v>(root: &'v Value, pointer: &str) -> Option<&'v Value> {
    let p = pointer.strip_prefix('/').unwrap_or(pointer);
    let mut v = root;
    for key in p.split('/') {
        v = if key.contains('~') {
            step(v, &key.replace("~1", "/").replace("~0", "~"))?
        } else {
            step(v, key)?
        };
    }
    Some(v)
}

/// `url.ParseQuery` decoding: `+` is a space, then percent-decoding.
fn decode_query(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ex(name: &str, arg: Option<&str>, v: &Value) -> Option<Vec<String>> {
        let f = resolve(name, arg).unwrap();
        let json = extract(&f, &View::Json(v), &EventCtx::default()).map(|v| v.to_strings());
        // The typed fast path must agree with the JSON path.
        let text = v.to_string();
        let ev = crate::model::AuditEvent::parse(&text).unwrap();
        let typed = extract(&f, &View::Event(&ev), &EventCtx::default()).map(|v| v.to_strings());
        assert_eq!(json, typed, "{name}");
        json
    }

    fn pod() -> Value {
        json!({
            "auditID": "a", "stage": "ResponseComplete", "verb": "create",
            "requestURI": "/api/v1/namespaces/default/pods/p/exec?command=ls&command=-l&container=c%201&stdin=true",
            "user": {"username": "alice", "groups": ["dev", "system:authenticated"]},
            "objectRef": {"resource": "pods", "namespace": "default", "name": "p"},
            "annotations": {"authorization.k8s.io/decision": "allow"},
            "responseStatus": {"code": 201},
            "requestObject": {"spec": {
                "securityContext": {"runAsUser": 1000},
                "hostNetwork": true,
                "containers": [
                    {"name": "a", "image": "nginx:1.19@sha256:abc", "command": ["sh", "-c"],
                     "ports": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 8081}]},
                    {"name": "b", "image": "docker.io/library/busybox",
                     "securityContext": {"privileged": true, "runAsUser": 0, "capabilities": {"add": ["NET_ADMIN", "SYS_TIME"]}}}
                ],
                "volumes": [{"name": "v1", "hostPath": {"path": "/var/run/docker.sock"}}, {"name": "v2", "emptyDir": {}}]
            }},
            "responseObject": {"metadata": {"name": "p"}}
        })
    }

    #[test]
    fn scalar_fields_render_non_strings_as_json() {
        let p = pod();
        assert_eq!(ex("ka.response.code", None, &p).unwrap(), vec!["201"]);
        assert_eq!(
            ex("ka.req.pod.host_network", None, &p).unwrap(),
            vec!["true"]
        );
        assert_eq!(ex("ka.auth.decision", None, &p).unwrap(), vec!["allow"]);
        assert_eq!(
            ex("ka.user.groups", None, &p).unwrap(),
            vec!["dev", "system:authenticated"]
        );
        assert!(ex("ka.target.subresource", None, &p).is_none());
        assert!(ex("ka.impuser.name", None, &p).is_none());
    }

    #[test]
    fn container_lists_and_indexes() {
        let p = pod();
        assert_eq!(
            ex("ka.req.pod.containers.image.repository", None, &p).unwrap(),
            vec!["nginx", "docker.io/library/busybox"]
        );
        assert_eq!(
            ex("ka.req.pod.containers.image", Some("1"), &p).unwrap(),
            vec!["docker.io/library/busybox"]
        );
        assert!(ex("ka.req.pod.containers.image", Some("7"), &p).is_none());
        // Only the second container sets the flag: nil elements are skipped.
        assert_eq!(
            ex("ka.req.pod.containers.privileged", None, &p).unwrap(),
            vec!["true"]
        );
        assert_eq!(
            ex("ka.req.container.privileged", None, &p).unwrap(),
            vec!["true"]
        );
        assert_eq!(
            ex("ka.req.container.image", None, &p).unwrap(),
            vec!["nginx:1.19@sha256:abc"]
        );
        assert_eq!(
            ex("ka.req.pod.containers.add_capabilities", None, &p).unwrap(),
            vec!["NET_ADMIN", "SYS_TIME"]
        );
        assert_eq!(
            ex("ka.req.pod.containers.command", None, &p).unwrap(),
            vec!["sh", "-c"]
        );
        assert_eq!(
            ex("ka.req.pod.containers.host_port", None, &p).unwrap(),
            vec!["80", "8081"]
        );
        assert_eq!(
            ex("ka.req.pod.containers.eff_run_as_user", None, &p).unwrap(),
            vec!["1000", "0"]
        );
        assert!(ex("ka.req.pod.initContainers.image", None, &p).is_none());
    }

    #[test]
    fn volumes_and_hostpath_match() {
        let p = pod();
        assert_eq!(
            ex("ka.req.pod.volumes.hostpath", None, &p).unwrap(),
            vec!["/var/run/docker.sock"]
        );
        assert_eq!(
            ex("ka.req.volume.hostpath", Some("/var/run*"), &p).unwrap(),
            vec!["true"]
        );
        assert_eq!(
            ex("ka.req.volume.hostpath", Some("/var"), &p).unwrap(),
            vec!["false"]
        );
        assert_eq!(
            ex("ka.req.pod.volumes.volume_type", None, &p).unwrap(),
            vec!["hostPath", "emptyDir"]
        );
    }

    #[test]
    fn uri_params_and_pointers() {
        let p = pod();
        assert_eq!(ex("ka.uri.param", Some("command"), &p).unwrap(), vec!["ls"]);
        assert_eq!(
            ex("ka.uri.param", Some("container"), &p).unwrap(),
            vec!["c 1"]
        );
        assert!(ex("ka.uri.param", Some("nope"), &p).is_none());
        assert_eq!(
            ex(
                "jevt.value",
                Some("/annotations/authorization.k8s.io~1decision"),
                &p
            )
            .unwrap(),
            vec!["allow"]
        );
        assert_eq!(
            ex(
                "jevt.value",
                Some("/requestObject/spec/containers/1/name"),
                &p
            )
            .unwrap(),
            vec!["b"]
        );
        assert_eq!(
            ex("jevt.value", Some("/responseStatus"), &p).unwrap(),
            vec![r#"{"code":201}"#]
        );
        assert!(ex("jevt.value", Some("/a~1~0b"), &p).is_none());
    }

    #[test]
    fn argument_validation() {
        assert!(resolve("ka.uri.param", None)
            .unwrap_err()
            .contains("requires"));
        assert!(resolve("ka.verb", Some("x"))
            .unwrap_err()
            .contains("no argument"));
        assert!(resolve("ka.req.pod.containers.image", Some("x"))
            .unwrap_err()
            .contains("index"));
        assert!(resolve("ka.nope", None)
            .unwrap_err()
            .contains("unknown field"));
        assert_eq!(
            resolve("json.value", Some("/a")).unwrap().def.name,
            "jevt.value"
        );
    }

    #[test]
    fn repository_cut() {
        assert_eq!(repository("nginx"), "nginx");
        assert_eq!(repository("nginx:1.2"), "nginx");
        assert_eq!(repository("a/b@sha256:00"), "a/b");
    }
}
