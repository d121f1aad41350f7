//! The judge of request bodies that create containers or change what one can reach.
//!
//! dockerd decodes these bodies with Go's `encoding/json`, which matches object keys to
//! struct fields case-insensitively (Unicode simple folding: `privileged`, `PRIVILEGED`
//! and `ſysctls` all set a field) and keeps the last of duplicate keys. The judge reads
//! fields the same way ([`fold`]), refuses bodies with two keys that fold alike (which of
//! them dockerd keeps would depend on its struct, not on the order), refuses a known field
//! of the wrong JSON type (dockerd would refuse it too, or read what the judge did not),
//! and forwards its own serialisation of what it judged, never the client's bytes, so
//! dockerd decodes exactly the value that was judged (CVE-2024-41110 was an authorization
//! plugin judging a body dockerd did not see). Unknown fields pass: dockerd ignores them.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use super::route::{BodyJudge, form_decode};

/// The label the gate puts on what a restricted identity creates: its rule's name.
pub const OWNER_LABEL: &str = "enforcer.owner";

/// The largest body the gate reads to judge (larger: 413).
pub const MAX_BODY: usize = 1 << 20;

/// A power restricted identities do not have unless their rule's `api_powers` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Power {
    Privileged,
    CapAdd,
    Devices,
    SecurityOpt,
    HostNamespaces,
    CgroupParent,
    Runtime,
    Sysctls,
    BuildInsecure,
    BuildHostNetwork,
    Plugins,
    Swarm,
    /// Log drivers that send a container's output to an address (`syslog`, `fluentd`,
    /// `gelf`, `splunk`, ...) rather than to the host's files or journal.
    LogDrivers,
    /// BuildKit's gRPC control API and session (`/grpc`, `/session`): HTTP/2 inside an
    /// upgrade, which the gate cannot judge (a solve carries its own entitlements, such as
    /// `network.host`).
    BuildKit,
}

impl Power {
    pub const ALL: &[Power] = &[
        Power::Privileged,
        Power::CapAdd,
        Power::Devices,
        Power::SecurityOpt,
        Power::HostNamespaces,
        Power::CgroupParent,
        Power::Runtime,
        Power::Sysctls,
        Power::BuildInsecure,
        Power::BuildHostNetwork,
        Power::Plugins,
        Power::Swarm,
        Power::LogDrivers,
        Power::BuildKit,
    ];

    /// The name a policy's `api_powers` uses.
    pub fn name(self) -> &'static str {
        match self {
            Power::Privileged => "privileged",
            Power::CapAdd => "cap_add",
            Power::Devices => "devices",
            Power::SecurityOpt => "security_opt",
            Power::HostNamespaces => "host_namespaces",
            Power::CgroupParent => "cgroup_parent",
            Power::Runtime => "runtime",
            Power::Sysctls => "sysctls",
            Power::BuildInsecure => "build_insecure",
            Power::BuildHostNetwork => "build_host_network",
            Power::Plugins => "plugins",
            Power::Swarm => "swarm",
            Power::LogDrivers => "log_drivers",
            Power::BuildKit => "buildkit",
        }
    }

    pub fn from_name(name: &str) -> Option<Power> {
        Power::ALL.iter().copied().find(|p| p.name() == name)
    }
}

/// What a rule lets its identities do through the gate.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub rule: String,
    /// Powers the rule grants (relaxed defaults).
    pub powers: Vec<Power>,
    /// Host directories bind mounts may come from (resolved, absolute).
    pub bind_paths: Vec<PathBuf>,
    /// Paths no bind mount may reach, whatever `bind_paths` says (the docker sockets,
    /// enforcer's own files), resolved.
    pub never_bind: Vec<PathBuf>,
}

/// A refusal: the request's field and what to change, for the 403's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// JSON path or query parameter: `HostConfig.Privileged`, `HostConfig.Binds[0]`.
    pub field: String,
    /// The whole sentence for the agent: what is refused and what to change.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

/// Objects a request names whose owner the gate must check before forwarding it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// (field, container name or id): `VolumesFrom`, `container:X` namespaces, links.
    pub containers: Vec<(String, String)>,
    /// (field, volume name): named volumes mounted.
    pub volumes: Vec<(String, String)>,
    /// (field, network name or id): user-defined networks a container joins
    /// (`NetworkMode`, `NetworkingConfig.EndpointsConfig`). The judge refuses the name
    /// `host`; the gate must also refuse a name or id (prefix) that dockerd resolves to the
    /// host network or another host-reaching driver (macvlan, ipvlan).
    pub networks: Vec<(String, String)>,
}

/// A body the gate admits: what to forward (owner label added to creates) and what to check.
#[derive(Debug, Clone, Default)]
pub struct Judged {
    pub body: Vec<u8>,
    pub needs: Needs,
}

/// docker's default capability set (moby `oci/caps/defaults.go`), without `CAP_`.
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Judges a request body of kind `kind`. `resolve` resolves a bind source as the daemon
/// will (symlinks, `..`): [`resolve_source`] in the gate, a fake in tests.
pub fn judge_body(
    kind: BodyJudge,
    body: &[u8],
    limits: &Limits,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Judged, Refusal> {
    let mut judge = Judge { limits, resolve, needs: Needs::default() };
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| judge.refuse("body", &format!("it is not valid JSON ({e})"), "send one JSON object"))?;
    judge.no_folded_duplicates(&value, "body")?;
    let root = value
        .as_object_mut()
        .ok_or_else(|| judge.refuse("body", "it is not a JSON object", "send one JSON object"))?;
    match kind {
        BodyJudge::ContainerCreate => {
            judge.container_create(root)?;
            judge.add_owner(root, "Labels")?;
        }
        BodyJudge::ContainerUpdate => judge.resources(root, "")?,
        BodyJudge::ExecCreate => {
            if judge.bool(root, "Privileged", "")? == Some(true) {
                judge.power(
                    Power::Privileged,
                    "Privileged",
                    "privileged exec processes are not allowed",
                    "drop --privileged",
                )?;
            }
        }
        BodyJudge::VolumeCreate => {
            judge.volume_create(root)?;
            judge.add_owner(root, "Labels")?;
        }
        BodyJudge::NetworkCreate => {
            judge.network_create(root)?;
            judge.add_owner(root, "Labels")?;
        }
        BodyJudge::NetworkConnect => judge.network_connect(root)?,
        BodyJudge::Stream | BodyJudge::Build => {
            return Err(judge.refuse(
                "body",
                "the gate has no judge for this request's body",
                "report this to the admin",
            ));
        }
    }
    let body = serde_json::to_vec(&value)
        .map_err(|e| judge.refuse("body", &format!("it could not be re-encoded ({e})"), "send plain JSON"))?;
    Ok(Judged { body, needs: judge.needs })
}

/// Go's case-insensitive key match (`bytes.EqualFold`, Unicode simple folding): ASCII
/// letters by case, and the two non-ASCII letters that fold to ASCII ones (`ſ` U+017F to
/// `s`, the Kelvin sign U+212A to `k`). Other non-ASCII letters never match a docker
/// field, so they are kept as they are.
fn fold(key: &str) -> String {
    key.chars().map(fold_char).collect()
}

fn fold_char(c: char) -> char {
    match c {
        '\u{17F}' => 's',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    }
}

/// `fold(a) == fold(b)` without allocating (a body may have many keys).
fn folds_equal(a: &str, b: &str) -> bool {
    a.chars().map(fold_char).eq(b.chars().map(fold_char))
}

/// `base.name`, or `name` at the top.
fn join(base: &str, name: &str) -> String {
    if base.is_empty() { name.to_owned() } else { format!("{base}.{name}") }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The key of `object` that Go would decode into the field `name`.
fn key_of(object: &Map<String, Value>, name: &str) -> Option<String> {
    object.keys().find(|k| folds_equal(k, name)).cloned()
}

/// The field `name` of `object` as Go finds it; `null` is absent (Go leaves the field
/// zero).
fn field<'v>(object: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    object.iter().find(|(k, _)| folds_equal(k, name)).map(|(_, v)| v).filter(|v| !v.is_null())
}

struct Judge<'a> {
    limits: &'a Limits,
    resolve: &'a dyn Fn(&Path) -> PathBuf,
    needs: Needs,
}

impl Judge<'_> {
    fn refuse(&self, field: &str, what: &str, change: &str) -> Refusal {
        Refusal {
            field: field.to_owned(),
            message: format!("enforcer: rule \"{}\" refuses {field}: {what}; {change}", self.limits.rule),
        }
    }

    /// Refuses unless the rule grants `power`.
    fn power(&self, power: Power, field: &str, what: &str, change: &str) -> Result<(), Refusal> {
        if self.limits.powers.contains(&power) {
            return Ok(());
        }
        Err(self.refuse(
            field,
            what,
            &format!("{change} (or an admin adds \"{}\" to the rule's api_powers)", power.name()),
        ))
    }

    fn wrong_type(&self, field: &str, want: &str, got: &Value) -> Refusal {
        self.refuse(
            field,
            &format!(
                "it is {} where docker expects {want}, and the gate forwards only what it can judge",
                json_type(got)
            ),
            &format!("send {want}"),
        )
    }

    fn no_folded_duplicates(&self, value: &Value, at: &str) -> Result<(), Refusal> {
        match value {
            Value::Object(object) => {
                let mut seen = std::collections::HashSet::with_capacity(object.len());
                for (key, inner) in object {
                    if !seen.insert(fold(key)) {
                        return Err(self.refuse(
                            &join(at, key),
                            "the object has two keys that differ only in case, and docker reads keys without case",
                            "send each key once",
                        ));
                    }
                    self.no_folded_duplicates(inner, &join(at, key))?;
                }
                Ok(())
            }
            Value::Array(items) => items.iter().try_for_each(|item| self.no_folded_duplicates(item, at)),
            _ => Ok(()),
        }
    }

    fn bool(&self, object: &Map<String, Value>, name: &str, base: &str) -> Result<Option<bool>, Refusal> {
        match field(object, name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong_type(&join(base, name), "a boolean", other)),
        }
    }

    fn string<'v>(
        &self,
        object: &'v Map<String, Value>,
        name: &str,
        base: &str,
    ) -> Result<Option<&'v str>, Refusal> {
        match field(object, name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(&join(base, name), "a string", other)),
        }
    }

    fn array<'v>(
        &self,
        object: &'v Map<String, Value>,
        name: &str,
        base: &str,
    ) -> Result<&'v [Value], Refusal> {
        match field(object, name) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(self.wrong_type(&join(base, name), "an array", other)),
        }
    }

    /// An array of strings, each with its field name (`HostConfig.Binds[0]`).
    fn strings<'v>(
        &self,
        object: &'v Map<String, Value>,
        name: &str,
        base: &str,
    ) -> Result<Vec<(String, &'v str)>, Refusal> {
        let field_name = join(base, name);
        self.array(object, name, base)?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = format!("{field_name}[{i}]");
                match item {
                    Value::String(s) => Ok((at, s.as_str())),
                    other => Err(self.wrong_type(&at, "a string", other)),
                }
            })
            .collect()
    }

    fn object<'v>(
        &self,
        object: &'v Map<String, Value>,
        name: &str,
        base: &str,
    ) -> Result<Option<&'v Map<String, Value>>, Refusal> {
        match field(object, name) {
            None => Ok(None),
            Some(Value::Object(inner)) => Ok(Some(inner)),
            Some(other) => Err(self.wrong_type(&join(base, name), "an object", other)),
        }
    }

    /// A map of strings (Go `map[string]string`), as (key, value) pairs.
    fn string_map<'v>(
        &self,
        object: &'v Map<String, Value>,
        name: &str,
        base: &str,
    ) -> Result<Vec<(&'v str, &'v str)>, Refusal> {
        let Some(map) = self.object(object, name, base)? else { return Ok(Vec::new()) };
        let field_name = join(base, name);
        map.iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.as_str(), s.as_str())),
                other => Err(self.wrong_type(&format!("{field_name}.{k}"), "a string", other)),
            })
            .collect()
    }

    /// Labels that claim an owner are refused: only the gate labels.
    fn labels(&self, object: &Map<String, Value>, name: &str, base: &str) -> Result<(), Refusal> {
        for (key, _) in self.string_map(object, name, base)? {
            let folded = fold(key);
            if folded == OWNER_LABEL || folded.starts_with("enforcer.") {
                return Err(self.refuse(
                    &format!("{}.{key}", join(base, name)),
                    "labels under \"enforcer.\" are the gate's (it labels what a rule creates with the rule's name)",
                    &format!("drop the label {key}"),
                ));
            }
        }
        Ok(())
    }

    /// Adds `Labels[OWNER_LABEL] = rule`, creating `Labels` if it is missing or null.
    fn add_owner(&self, root: &mut Map<String, Value>, name: &str) -> Result<(), Refusal> {
        let key = key_of(root, name).unwrap_or_else(|| name.to_owned());
        let labels = root.entry(key).or_insert(Value::Null);
        if labels.is_null() {
            *labels = Value::Object(Map::new());
        }
        match labels {
            Value::Object(map) => {
                map.insert(OWNER_LABEL.to_owned(), Value::String(self.limits.rule.clone()));
                Ok(())
            }
            other => Err(self.wrong_type(name, "an object", other)),
        }
    }

    fn container_create(&mut self, root: &Map<String, Value>) -> Result<(), Refusal> {
        self.labels(root, "Labels", "")?;
        if let Some(host) = self.object(root, "HostConfig", "")? {
            self.host_config(host, "HostConfig")?;
        }
        // dockerd 20.10 also reads HostConfig fields at the top level of the body (the
        // deprecated embedded HostConfig of ContainerConfigWrapper) when `HostConfig` is
        // absent, and merges some when it is present: judge them there as well.
        self.host_config(root, "")?;
        if let Some(networking) = self.object(root, "NetworkingConfig", "")? {
            self.endpoints(networking, "NetworkingConfig")?;
        }
        Ok(())
    }

    fn host_config(&mut self, host: &Map<String, Value>, base: &str) -> Result<(), Refusal> {
        let at = |name: &str| join(base, name);
        // Other log drivers make dockerd, as root in the host's network namespace, connect to
        // an address the request names (syslog, fluentd, gelf, splunk: any socket or port).
        if let Some(log) = self.object(host, "LogConfig", base)?
            && let Some(driver) = self.string(log, "Type", &at("LogConfig"))?
            && !matches!(driver, "" | "json-file" | "local" | "none" | "journald")
        {
            self.power(
                Power::LogDrivers,
                &at("LogConfig.Type"),
                &format!("log driver {driver:?} sends the container's output where the request says"),
                "use the json-file, local or journald driver (drop --log-driver)",
            )?;
        }
        if self.bool(host, "Privileged", base)? == Some(true) {
            self.power(
                Power::Privileged,
                &at("Privileged"),
                "privileged containers are not allowed",
                "drop --privileged",
            )?;
        }
        for (field_name, cap) in self.strings(host, "CapAdd", base)? {
            let upper = cap.to_ascii_uppercase();
            let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
            if !DEFAULT_CAPS.contains(&bare) {
                self.power(
                    Power::CapAdd,
                    &field_name,
                    &format!("capability {cap} is beyond docker's default set"),
                    &format!("drop --cap-add {cap}"),
                )?;
            }
        }
        if field(host, "Capabilities").is_some() {
            self.power(
                Power::CapAdd,
                &at("Capabilities"),
                "an explicit capability set is not allowed",
                "drop Capabilities (use docker's default set)",
            )?;
        }
        self.resources(host, base)?;
        for (field_name, opt) in self.strings(host, "SecurityOpt", base)? {
            if !security_opt_allowed(opt) {
                self.power(
                    Power::SecurityOpt,
                    &field_name,
                    &format!("security option {opt:?} can lift the container's confinement (only no-new-privileges, apparmor=docker-default and label=level:<level> are allowed)"),
                    &format!("drop --security-opt {opt}"),
                )?;
            }
        }
        for name in ["MaskedPaths", "ReadonlyPaths"] {
            if field(host, name).is_some() {
                self.power(
                    Power::SecurityOpt,
                    &at(name),
                    "changing the masked or read-only /proc and /sys paths unmasks the host's kernel interfaces",
                    &format!("drop {name} (docker's defaults apply)"),
                )?;
            }
        }
        self.namespace(host, base, "PidMode", "pid", &[""], true)?;
        self.namespace(host, base, "IpcMode", "ipc", &["", "none", "private", "shareable"], true)?;
        self.namespace(host, base, "UTSMode", "uts", &[""], false)?;
        self.namespace(host, base, "UsernsMode", "user", &["", "private"], false)?;
        self.namespace(host, base, "CgroupnsMode", "cgroup", &["", "private"], false)?;
        self.network_mode(host, base)?;
        if let Some(cgroup) = self.string(host, "Cgroup", base)? {
            if let Some(other) = cgroup.strip_prefix("container:") {
                self.need_container(&at("Cgroup"), other)?;
            } else if !cgroup.is_empty() {
                self.power(
                    Power::CgroupParent,
                    &at("Cgroup"),
                    "choosing the container's cgroup is not allowed",
                    "drop Cgroup",
                )?;
            }
        }
        if let Some(runtime) = self.string(host, "Runtime", base)?
            && !runtime.is_empty()
            && runtime != "runc"
        {
            self.power(
                Power::Runtime,
                &at("Runtime"),
                &format!("runtime {runtime:?} is not docker's default"),
                "drop --runtime",
            )?;
        }
        if !self.string_map(host, "Sysctls", base)?.is_empty() {
            self.power(Power::Sysctls, &at("Sysctls"), "kernel parameters are not allowed", "drop --sysctl")?;
        }
        if let Some(driver) = self.string(host, "VolumeDriver", base)?
            && !driver.is_empty()
            && driver != "local"
        {
            return Err(self.refuse(
                    &at("VolumeDriver"),
                    &format!("volume driver {driver:?} is not allowed (no api_powers entry lifts this; only the local driver)"),
                    "drop --volume-driver",
                ));
        }
        for (field_name, spec) in self.strings(host, "VolumesFrom", base)? {
            // moby's ParseVolumesFrom: the container, then an optional `:ro`/`:rw`.
            let name = spec.split_once(':').map_or(spec, |(name, _)| name);
            self.need_container(&field_name, name)?;
        }
        for (field_name, link) in self.strings(host, "Links", base)? {
            let name = link.split_once(':').map_or(link, |(name, _)| name);
            self.need_container(&field_name, name)?;
        }
        for (field_name, bind) in self.strings(host, "Binds", base)? {
            self.bind_spec(&field_name, bind)?;
        }
        let mounts = self.array(host, "Mounts", base)?;
        for (i, mount) in mounts.iter().enumerate() {
            let field_name = format!("{}[{i}]", at("Mounts"));
            match mount {
                Value::Object(mount) => self.mount(mount, &field_name)?,
                other => return Err(self.wrong_type(&field_name, "an object", other)),
            }
        }
        Ok(())
    }

    /// The fields of `Resources` (in `HostConfig`, and the body of an update) that reach the
    /// host: devices and the cgroup parent.
    fn resources(&self, object: &Map<String, Value>, base: &str) -> Result<(), Refusal> {
        for (name, flag) in [
            ("Devices", "--device"),
            ("DeviceCgroupRules", "--device-cgroup-rule"),
            ("DeviceRequests", "--gpus"),
        ] {
            if !self.array(object, name, base)?.is_empty() {
                self.power(
                    Power::Devices,
                    &join(base, name),
                    "host devices are not allowed",
                    &format!("drop {flag}"),
                )?;
            }
        }
        if let Some(parent) = self.string(object, "CgroupParent", base)?
            && !parent.is_empty()
        {
            self.power(
                Power::CgroupParent,
                &join(base, "CgroupParent"),
                "choosing the cgroup parent is not allowed",
                "drop --cgroup-parent",
            )?;
        }
        Ok(())
    }

    /// A namespace mode: `host` needs the host-namespaces power, `container:X` (where
    /// docker has it) is X's owner's to give, the listed private values pass, anything else
    /// is refused.
    fn namespace(
        &mut self,
        host: &Map<String, Value>,
        base: &str,
        name: &str,
        kind: &str,
        private: &[&str],
        container: bool,
    ) -> Result<(), Refusal> {
        let Some(mode) = self.string(host, name, base)? else { return Ok(()) };
        let at = join(base, name);
        if mode.eq_ignore_ascii_case("host") {
            return self.power(
                Power::HostNamespaces,
                &at,
                &format!("the host's {kind} namespace is not allowed"),
                &format!("drop --{kind}=host"),
            );
        }
        if container && let Some(other) = mode.strip_prefix("container:") {
            return self.need_container(&at, other);
        }
        if private.contains(&mode) {
            return Ok(());
        }
        Err(self.refuse(
            &at,
            &format!("the {kind} namespace mode {mode:?} is not one the gate knows"),
            &format!("drop --{kind}"),
        ))
    }

    fn network_mode(&mut self, host: &Map<String, Value>, base: &str) -> Result<(), Refusal> {
        let Some(mode) = self.string(host, "NetworkMode", base)? else { return Ok(()) };
        let at = join(base, "NetworkMode");
        if mode.eq_ignore_ascii_case("host") {
            return self.power(
                Power::HostNamespaces,
                &at,
                "the host's network namespace is not allowed",
                "drop --network=host",
            );
        }
        if let Some(other) = mode.strip_prefix("container:") {
            return self.need_container(&at, other);
        }
        if !matches!(mode, "" | "default" | "bridge" | "none") {
            self.needs.networks.push((at, mode.to_owned()));
        }
        Ok(())
    }

    /// `NetworkingConfig.EndpointsConfig`: the networks a new container joins, and the
    /// links each endpoint makes.
    fn endpoints(&mut self, networking: &Map<String, Value>, base: &str) -> Result<(), Refusal> {
        let Some(endpoints) = self.object(networking, "EndpointsConfig", base)? else { return Ok(()) };
        let at = join(base, "EndpointsConfig");
        for (network, settings) in endpoints {
            let field_name = format!("{at}.{network}");
            if network.eq_ignore_ascii_case("host") {
                self.power(
                    Power::HostNamespaces,
                    &field_name,
                    "the host's network namespace is not allowed",
                    "drop --network=host",
                )?;
            } else if network.to_ascii_lowercase().starts_with("container:") {
                return Err(self.refuse(
                    &field_name,
                    "a container's namespace is not a network",
                    "use --network=container:<name>",
                ));
            } else if !matches!(network.as_str(), "default" | "bridge" | "none") {
                self.needs.networks.push((field_name.clone(), network.clone()));
            }
            match settings {
                Value::Null => {}
                Value::Object(settings) => self.endpoint_settings(settings, &field_name)?,
                other => return Err(self.wrong_type(&field_name, "an object", other)),
            }
        }
        Ok(())
    }

    fn endpoint_settings(&mut self, settings: &Map<String, Value>, base: &str) -> Result<(), Refusal> {
        for (field_name, link) in self.strings(settings, "Links", base)? {
            let name = link.split_once(':').map_or(link, |(name, _)| name);
            self.need_container(&field_name, name)?;
        }
        Ok(())
    }

    fn need_container(&mut self, field_name: &str, name: &str) -> Result<(), Refusal> {
        if name.is_empty() {
            return Err(self.refuse(field_name, "it names no container", "name the container"));
        }
        self.needs.containers.push((field_name.to_owned(), name.to_owned()));
        Ok(())
    }

    /// A `Binds` entry as moby's Linux parser splits it: `dst` (an anonymous volume),
    /// `src:dst` or `src:dst:mode`; an absolute `src` is a bind, any other a named volume.
    fn bind_spec(&mut self, field_name: &str, spec: &str) -> Result<(), Refusal> {
        let parts: Vec<&str> = spec.split(':').collect();
        match parts.as_slice() {
            [_destination] => Ok(()),
            [source, _, ..] if parts.len() <= 3 => {
                if source.starts_with('/') {
                    self.bind_source(field_name, source)
                } else if source.is_empty() {
                    Err(self.refuse(field_name, &format!("{spec:?} has an empty source"), "give a source"))
                } else {
                    self.needs.volumes.push((field_name.to_owned(), (*source).to_owned()));
                    Ok(())
                }
            }
            _ => Err(self.refuse(
                field_name,
                &format!("{spec:?} is not source:destination[:options]"),
                "fix the -v spec",
            )),
        }
    }

    fn mount(&mut self, mount: &Map<String, Value>, base: &str) -> Result<(), Refusal> {
        let kind = self.string(mount, "Type", base)?.unwrap_or("");
        let source = self.string(mount, "Source", base)?.unwrap_or("");
        match kind {
            "bind" => self.bind_source(&join(base, "Source"), source),
            "volume" => {
                if !source.is_empty() {
                    self.needs.volumes.push((join(base, "Source"), source.to_owned()));
                }
                let options = join(base, "VolumeOptions");
                if let Some(volume) = self.object(mount, "VolumeOptions", base)?
                    && let Some(driver) = self.object(volume, "DriverConfig", &options)?
                {
                    let config = join(&options, "DriverConfig");
                    let name = self.string(driver, "Name", &config)?.unwrap_or("");
                    if !name.is_empty() && name != "local" {
                        return Err(self.refuse(
                                &join(&config, "Name"),
                                &format!("volume driver {name:?} is not allowed (no api_powers entry lifts this; only the local driver)"),
                                "drop the volume driver",
                            ));
                    }
                    self.local_options(driver, "Options", &config)?;
                }
                Ok(())
            }
            "tmpfs" => Ok(()),
            other => Err(self.refuse(
                &join(base, "Type"),
                &format!("mount type {other:?} is not allowed (only bind, volume and tmpfs)"),
                "use a bind, volume or tmpfs mount",
            )),
        }
    }

    /// The local volume driver's options (`type`, `o`, `device`): `o=bind` or `type=none`
    /// makes the volume a bind of `device`, which must pass the bind check; a filesystem
    /// `type` (nfs, cifs, ext4, overlay, ...) mounts what the host can reach and is refused.
    fn local_options(&self, object: &Map<String, Value>, name: &str, base: &str) -> Result<(), Refusal> {
        let options = self.string_map(object, name, base)?;
        let at = join(base, name);
        let get = |want: &str| options.iter().find(|(k, _)| k.eq_ignore_ascii_case(want)).map(|(_, v)| *v);
        if let Some((key, _)) = options
            .iter()
            .find(|(k, _)| !["type", "o", "device", "size"].iter().any(|w| k.eq_ignore_ascii_case(w)))
        {
            return Err(self.refuse(
                &format!("{at}.{key}"),
                &format!("local volume option {key:?} is not one the gate knows"),
                &format!("drop the option {key}"),
            ));
        }
        let kind = get("type").unwrap_or("").to_ascii_lowercase();
        let flags = get("o").unwrap_or("").to_ascii_lowercase();
        let device = get("device").unwrap_or("");
        if flags.contains("bind") || matches!(kind.as_str(), "none" | "bind" | "rbind") {
            return self.bind_source(&format!("{at}.device"), device);
        }
        match kind.as_str() {
            "" if device.is_empty() => Ok(()),
            "tmpfs" => Ok(()),
            "" => Err(self.refuse(&format!("{at}.device"), "a device without a filesystem type or o=bind is not one the gate can judge", "drop the device option")),
            other => Err(self.refuse(
                &format!("{at}.type"),
                &format!("local volumes of type {other:?} mount filesystems the host reaches (only plain, tmpfs and bind volumes)"),
                "drop the type option",
            )),
        }
    }

    /// The bind check: the source, resolved as dockerd will mount it, must be under one of
    /// the rule's `bind_paths` and must not reach any `never_bind` path.
    fn bind_source(&self, field_name: &str, source: &str) -> Result<(), Refusal> {
        if !source.starts_with('/') {
            return Err(self.refuse(
                field_name,
                &format!("bind source {source:?} is not an absolute path"),
                "give an absolute source path",
            ));
        }
        let resolved = lexical_clean(&(self.resolve)(Path::new(source)));
        let allowed = || {
            if self.limits.bind_paths.is_empty() {
                "the rule allows no bind mounts".to_owned()
            } else {
                let paths: Vec<String> =
                    self.limits.bind_paths.iter().map(|p| p.display().to_string()).collect();
                format!("the rule's bind_paths are {}", paths.join(", "))
            }
        };
        let shown = if resolved == Path::new(source) {
            source.to_owned()
        } else {
            format!("{source} (resolved: {})", resolved.display())
        };
        // The limits are resolved by the gate; resolving them again costs little and keeps
        // a spelling such as /var/run/docker.sock (a symlink to /run) from missing.
        for never in &self.limits.never_bind {
            for never in [lexical_clean(never), lexical_clean(&(self.resolve)(never))] {
                if resolved.starts_with(&never) || never.starts_with(&resolved) {
                    return Err(self.refuse(
                        field_name,
                        &format!(
                            "bind source {shown} reaches {}, which no container may mount",
                            never.display()
                        ),
                        &format!("mount a directory that does not contain it ({})", allowed()),
                    ));
                }
            }
        }
        if self.limits.bind_paths.iter().any(|p| resolved.starts_with(lexical_clean(&(self.resolve)(p)))) {
            return Ok(());
        }
        Err(self.refuse(
            field_name,
            &format!("bind source {shown} is outside the rule's bind_paths ({})", allowed()),
            "mount a directory under one of them, or use a named volume",
        ))
    }

    fn volume_create(&self, root: &Map<String, Value>) -> Result<(), Refusal> {
        self.labels(root, "Labels", "")?;
        if let Some(driver) = self.string(root, "Driver", "")?
            && !driver.is_empty()
            && driver != "local"
        {
            return Err(self.refuse(
                    "Driver",
                    &format!("volume driver {driver:?} is not allowed (no api_powers entry lifts this; only the local driver)"),
                    "drop --driver",
                ));
        }
        self.local_options(root, "DriverOpts", "")?;
        if field(root, "ClusterVolumeSpec").is_some() {
            self.power(
                Power::Swarm,
                "ClusterVolumeSpec",
                "cluster volumes are swarm objects",
                "create a local volume",
            )?;
        }
        Ok(())
    }

    fn network_create(&self, root: &Map<String, Value>) -> Result<(), Refusal> {
        self.labels(root, "Labels", "")?;
        match self.string(root, "Driver", "")?.unwrap_or("") {
            "" | "bridge" => {}
            driver @ ("host" | "macvlan" | "ipvlan") => self.power(
                Power::HostNamespaces,
                "Driver",
                &format!("network driver {driver:?} puts containers on the host's network"),
                "use the bridge driver",
            )?,
            driver => {
                return Err(self.refuse(
                    "Driver",
                    &format!("network driver {driver:?} is not allowed (no api_powers entry lifts this; only bridge)"),
                    "use the bridge driver",
                ));
            }
        }
        // The bridge driver adopts an existing host bridge of that name (br0 on the LAN).
        for (key, _) in self.string_map(root, "Options", "")? {
            if key.eq_ignore_ascii_case("com.docker.network.bridge.name") {
                self.power(
                    Power::HostNamespaces,
                    &format!("Options.{key}"),
                    "naming the bridge can attach containers to an existing host bridge",
                    "drop the option (docker names the bridge)",
                )?;
            }
        }
        if self.bool(root, "Ingress", "")? == Some(true) {
            self.power(Power::Swarm, "Ingress", "an ingress network is a swarm object", "drop --ingress")?;
        }
        if let Some(scope) = self.string(root, "Scope", "")?
            && !matches!(scope, "" | "local")
        {
            self.power(
                Power::Swarm,
                "Scope",
                &format!("scope {scope:?} makes a swarm network"),
                "drop --scope",
            )?;
        }
        Ok(())
    }

    fn network_connect(&mut self, root: &Map<String, Value>) -> Result<(), Refusal> {
        if let Some(container) = self.string(root, "Container", "")? {
            self.need_container("Container", container)?;
        }
        if let Some(settings) = self.object(root, "EndpointConfig", "")? {
            self.endpoint_settings(settings, "EndpointConfig")?;
        }
        Ok(())
    }
}

/// Whether a `SecurityOpt` entry keeps the container's confinement. dockerd splits an
/// entry at its first `=`, else at its first `:` (`parseSecurityOpt`).
fn security_opt_allowed(opt: &str) -> bool {
    let (key, value) = opt.split_once('=').or_else(|| opt.split_once(':')).unwrap_or((opt, ""));
    match key {
        // strconv.ParseBool's true values; `false` is the default anyway but means nothing.
        "no-new-privileges" => {
            opt == "no-new-privileges" || matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
        }
        "apparmor" => value == "docker-default",
        // Only an MCS level without a range or category range: `type:spc_t`, `user:`,
        // `role:` pick another SELinux domain (spc_t is unconfined) and a range such as
        // `s0-s0:c0.c1023` dominates every container's files. Stricter than docker needs.
        "label" => value.strip_prefix("level:").is_some_and(selinux_level_ok),
        _ => false,
    }
}

/// `s<N>` or `s<N>:c<N>(,c<N>)*`.
fn selinux_level_ok(level: &str) -> bool {
    let number = |s: &str, prefix: char| {
        s.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    match level.split_once(':') {
        None => number(level, 's'),
        Some((sensitivity, categories)) => {
            number(sensitivity, 's') && categories.split(',').all(|c| number(c, 'c'))
        }
    }
}

/// Go's `path.Clean` on an absolute path: `.` dropped, `..` removes the component before
/// (at the root it is dropped). Relative paths stay relative.
fn lexical_clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if out.file_name().is_some() {
                    out.pop();
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Judges `POST /build`'s query string and returns the query to forward (owner label added).
///
/// `BuildKit`'s entitlements (`security.insecure`, `network.host` for RUN steps) travel in
/// the build's gRPC session (`/session`, `/grpc`), not in this query; dockerd refuses them
/// unless its own configuration allows them (`builder.entitlements`), so the gate does not
/// see them here. `networkmode` is the classic builder's (and `BuildKit`'s `--network`).
///
/// The gate must refuse a `POST /build` whose `Content-Type` is
/// `application/x-www-form-urlencoded`: Go's `ParseForm` would then read parameters from
/// the body too, ahead of the query.
pub fn judge_build_query(query: &str, limits: &Limits) -> Result<String, Refusal> {
    let judge = Judge { limits, resolve: &|p: &Path| p.to_path_buf(), needs: Needs::default() };
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        // Go 1.17+ refuses `;` separators: dockerd would answer 400.
        if part.contains(';') {
            return Err(judge.refuse("query", "the query has a ';'", "separate parameters with '&'"));
        }
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let key = form_decode(key)
            .ok_or_else(|| judge.refuse("query", "the query has a bad %-escape", "encode the query"))?;
        let value = form_decode(value)
            .ok_or_else(|| judge.refuse(&key, "the value has a bad %-escape", "encode the query"))?;
        // Multi-valued parameters dockerd reads as lists; any other twice is ambiguous.
        let folded = key.to_ascii_lowercase();
        if !matches!(folded.as_str(), "t" | "extrahosts")
            && pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case(&key))
        {
            return Err(judge.refuse(&key, "the parameter is given twice", "give it once"));
        }
        pairs.push((key, value));
    }
    let mut labels = Map::new();
    for (key, value) in &pairs {
        match key.to_ascii_lowercase().as_str() {
            "networkmode" => {
                if value.eq_ignore_ascii_case("host") {
                    judge.power(
                        Power::BuildHostNetwork,
                        "networkmode",
                        "builds on the host's network are not allowed",
                        "drop --network=host",
                    )?;
                } else if value.to_ascii_lowercase().starts_with("container:") {
                    judge.power(
                        Power::HostNamespaces,
                        "networkmode",
                        "a build in another container's network namespace is not allowed",
                        "drop --network",
                    )?;
                }
            }
            // The classic builder fetches a remote context itself, as root, from the host's
            // network: the gate would be fetching for the agent.
            "remote" if !value.is_empty() => {
                return Err(judge.refuse(
                    "remote",
                    "the daemon would fetch the build context from a URL itself",
                    "build from a local context directory",
                ));
            }
            "cgroupparent" if !value.is_empty() => judge.power(
                Power::CgroupParent,
                "cgroupparent",
                "choosing the cgroup parent is not allowed",
                "drop --cgroup-parent",
            )?,
            "securityopt" => judge.power(
                Power::SecurityOpt,
                "securityopt",
                "security options for builds are not allowed",
                "drop --security-opt",
            )?,
            "labels" if !value.is_empty() => {
                let parsed: Value = serde_json::from_str(value).map_err(|_| {
                    judge.refuse("labels", "it is not a JSON object", "send labels as a JSON object")
                })?;
                judge.no_folded_duplicates(&parsed, "labels")?;
                let wrapper = Map::from_iter([("labels".to_owned(), parsed)]);
                judge.labels(&wrapper, "labels", "")?;
                if let Some(Value::Object(map)) = wrapper.get("labels") {
                    labels.clone_from(map);
                }
            }
            _ => {}
        }
    }
    labels.insert(OWNER_LABEL.to_owned(), Value::String(limits.rule.clone()));
    let labels = Value::Object(labels).to_string();
    let mut out = String::new();
    for (key, value) in pairs.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("labels")) {
        push_pair(&mut out, key, value);
    }
    push_pair(&mut out, "labels", &labels);
    Ok(out)
}

fn push_pair(out: &mut String, key: &str, value: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    form_encode(out, key);
    out.push('=');
    form_encode(out, value);
}

fn form_encode(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The image names a build query tags its result with (`t`, as dockerd reads them: the key
/// exactly, every occurrence). Undecodable values are left out: [`judge_build_query`]
/// refuses such a query.
pub fn build_tags(query: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|part| part.split_once('='))
        .filter(|(key, _)| form_decode(key).as_deref() == Some("t"))
        .filter_map(|(_, value)| form_decode(value))
        .filter(|tag| !tag.is_empty())
        .collect()
}

/// Resolves a bind mount's source as dockerd will: symlinks of the existing part followed,
/// `..` removed.
///
/// dockerd cleans the source lexically (`path.Clean` in moby's `volume/mounts` Linux
/// parser), and the kernel follows symlinks when runc mounts it; a missing source dockerd
/// creates (`-v`) or refuses (`--mount`). So: clean lexically first, then canonicalise the
/// longest prefix that exists (following its symlinks, as the mount will) and append the
/// rest, which has no `..` left and no symlinks yet. The answer holds at the time of the
/// check only: whoever can write under the source can swap a directory for a symlink
/// before dockerd mounts it.
pub fn resolve_source(path: &Path) -> PathBuf {
    let clean = lexical_clean(path);
    // A relative path would resolve against the gate's working directory, not dockerd's:
    // the bind check refuses relative sources before it resolves anything.
    if !clean.is_absolute() {
        return clean;
    }
    let mut existing = clean.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(canonical) = std::fs::canonicalize(&existing) {
            let mut out = canonical;
            out.extend(rest.iter().rev());
            return out;
        }
        match existing.file_name() {
            Some(name) => {
                rest.push(name.to_owned());
                existing.pop();
            }
            // Nothing exists (not even `/`): the lexical answer is all there is.
            None => return clean,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const RULE: &str = "ai-worker-docker";

    fn limits() -> Limits {
        Limits {
            rule: RULE.into(),
            powers: Vec::new(),
            bind_paths: vec!["/home/ai/work".into()],
            never_bind: vec!["/run/docker.sock".into(), "/var/lib/enforcer".into()],
        }
    }

    fn same(path: &Path) -> PathBuf {
        path.to_path_buf()
    }

    fn judge_with(kind: BodyJudge, body: &Value, limits: &Limits) -> Result<Judged, Refusal> {
        judge_body(kind, body.to_string().as_bytes(), limits, &same)
    }

    fn create(body: &Value) -> Result<Judged, Refusal> {
        judge_with(BodyJudge::ContainerCreate, body, &limits())
    }

    fn forwarded(judged: &Judged) -> Value {
        serde_json::from_slice(&judged.body).expect("the gate forwards JSON")
    }

    /// `body` is refused on `field`, and `control` (the same without the power) admitted.
    #[track_caller]
    fn refused_on(body: &Value, field: &str, control: &Value) {
        match create(body) {
            Err(refusal) => {
                assert_eq!(refusal.field, field, "{body}: {}", refusal.message);
                assert!(
                    refusal.message.starts_with(&format!("enforcer: rule \"{RULE}\" refuses {field}: ")),
                    "{}",
                    refusal.message
                );
            }
            Ok(_) => panic!("{body} was admitted"),
        }
        if let Err(refusal) = create(control) {
            panic!("control {control} refused: {}", refusal.message);
        }
    }

    fn host(config: &Value) -> Value {
        json!({ "Image": "busybox", "HostConfig": config })
    }

    #[test]
    fn power_names_round_trip() {
        assert_eq!(Power::ALL.len(), 14);
        for power in Power::ALL {
            assert_eq!(Power::from_name(power.name()), Some(*power));
        }
        assert_eq!(Power::from_name("host_namespaces"), Some(Power::HostNamespaces));
        assert_eq!(Power::from_name("Privileged"), None);
    }

    #[test]
    fn privileged() {
        refused_on(
            &host(&json!({"Privileged": true})),
            "HostConfig.Privileged",
            &host(&json!({"Privileged": false})),
        );
        let message = create(&host(&json!({"Privileged": true}))).unwrap_err().message;
        assert_eq!(
            message,
            "enforcer: rule \"ai-worker-docker\" refuses HostConfig.Privileged: privileged containers are not allowed; drop --privileged (or an admin adds \"privileged\" to the rule's api_powers)"
        );
    }

    #[test]
    fn keys_match_without_case_as_go_does() {
        refused_on(
            &host(&json!({"privileged": true})),
            "HostConfig.Privileged",
            &host(&json!({"privileged": false})),
        );
        refused_on(
            &json!({"hostconfig": {"PRIVILEGED": true}}),
            "HostConfig.Privileged",
            &json!({"hostconfig": {}}),
        );
        // Go's folding maps ſ (U+017F) to s and the Kelvin sign to k.
        refused_on(
            &host(&json!({"\u{17F}ysctls": {"kernel.x": "1"}})),
            "HostConfig.Sysctls",
            &host(&json!({"\u{17F}ysctls": {}})),
        );
        let judged = create(&host(&json!({"Lin\u{212A}s": ["gitea:g"]}))).unwrap();
        assert_eq!(judged.needs.containers, [("HostConfig.Links[0]".to_owned(), "gitea".to_owned())]);
    }

    #[test]
    fn duplicate_keys_that_fold_alike_are_refused() {
        for body in [
            r#"{"HostConfig":{"Privileged":false,"privileged":true}}"#,
            r#"{"Image":"a","image":"b"}"#,
            r#"{"Labels":{"a":"1","A":"2"}}"#,
            r#"{"HostConfig":{"Mounts":[{"Type":"tmpfs","type":"bind"}]}}"#,
        ] {
            let refusal =
                judge_body(BodyJudge::ContainerCreate, body.as_bytes(), &limits(), &same).unwrap_err();
            assert!(refusal.message.contains("differ only in case"), "{body}: {}", refusal.message);
        }
        // Exact duplicates: serde_json and Go both keep the last, and the gate forwards that.
        let judged = judge_body(
            BodyJudge::ContainerCreate,
            br#"{"HostConfig":{"Privileged":true,"Privileged":false}}"#,
            &limits(),
            &same,
        )
        .unwrap();
        assert_eq!(forwarded(&judged)["HostConfig"]["Privileged"], json!(false));
        assert!(
            judge_body(
                BodyJudge::ContainerCreate,
                br#"{"HostConfig":{"Privileged":false,"Privileged":true}}"#,
                &limits(),
                &same
            )
            .is_err()
        );
    }

    #[test]
    fn known_fields_of_the_wrong_type_are_refused() {
        for (config, field) in [
            (json!({"Privileged": "true"}), "HostConfig.Privileged"),
            (json!({"Privileged": 1}), "HostConfig.Privileged"),
            (json!({"Binds": "/:/host"}), "HostConfig.Binds"),
            (json!({"Binds": [["/", "/host"]]}), "HostConfig.Binds[0]"),
            (json!({"CapAdd": "SYS_ADMIN"}), "HostConfig.CapAdd"),
            (json!({"Mounts": ["/:/host"]}), "HostConfig.Mounts[0]"),
            (json!({"Sysctls": ["a=b"]}), "HostConfig.Sysctls"),
            (json!({"Sysctls": {"a": 1}}), "HostConfig.Sysctls.a"),
            (json!({"NetworkMode": ["host"]}), "HostConfig.NetworkMode"),
        ] {
            let refusal = create(&host(&config)).unwrap_err();
            assert_eq!(refusal.field, field, "{config}");
        }
        assert_eq!(create(&json!({"HostConfig": "x"})).unwrap_err().field, "HostConfig");
        assert_eq!(create(&json!({"Labels": ["a"]})).unwrap_err().field, "Labels");
        // null is absent, as in Go.
        create(&json!({"HostConfig": {"Privileged": null, "Binds": null}, "Labels": null})).unwrap();
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_refused() {
        for body in [&b""[..], b"null", b"[]", b"\"x\"", b"{", b"{\"a\":1}x", b"\xff"] {
            let refusal = judge_body(BodyJudge::ContainerCreate, body, &limits(), &same).unwrap_err();
            assert_eq!(refusal.field, "body");
        }
        let refusal = judge_body(BodyJudge::Stream, b"{}", &limits(), &same).unwrap_err();
        assert_eq!(refusal.field, "body");
    }

    #[test]
    fn top_level_host_config_fields_are_judged() {
        // dockerd 20.10 reads them when HostConfig is absent.
        refused_on(
            &json!({"Image": "x", "Privileged": true}),
            "Privileged",
            &json!({"Image": "x", "Privileged": false}),
        );
        refused_on(&json!({"Binds": ["/:/host"]}), "Binds[0]", &json!({"Binds": ["/home/ai/work:/w"]}));
        refused_on(
            &json!({"PidMode": "host", "HostConfig": {}}),
            "PidMode",
            &json!({"PidMode": "", "HostConfig": {}}),
        );
    }

    #[test]
    fn capabilities() {
        refused_on(
            &host(&json!({"CapAdd": ["SYS_ADMIN"]})),
            "HostConfig.CapAdd[0]",
            &host(&json!({"CapAdd": ["chown", "CAP_NET_RAW", "cap_kill"]})),
        );
        refused_on(
            &host(&json!({"CapAdd": ["NET_RAW", "ALL"]})),
            "HostConfig.CapAdd[1]",
            &host(&json!({"CapAdd": []})),
        );
        refused_on(
            &host(&json!({"CapAdd": ["cap_sys_ptrace"]})),
            "HostConfig.CapAdd[0]",
            &host(&json!({"CapDrop": ["ALL"]})),
        );
        refused_on(
            &host(&json!({"Capabilities": ["CAP_CHOWN"]})),
            "HostConfig.Capabilities",
            &host(&json!({"Capabilities": null})),
        );
    }

    #[test]
    fn devices() {
        let device =
            json!([{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda", "CgroupPermissions": "rwm"}]);
        refused_on(&host(&json!({"Devices": device})), "HostConfig.Devices", &host(&json!({"Devices": []})));
        refused_on(
            &host(&json!({"DeviceCgroupRules": ["b 8:* rwm"]})),
            "HostConfig.DeviceCgroupRules",
            &host(&json!({"DeviceCgroupRules": []})),
        );
        refused_on(
            &host(&json!({"DeviceRequests": [{"Count": -1}]})),
            "HostConfig.DeviceRequests",
            &host(&json!({"DeviceRequests": null})),
        );
    }

    #[test]
    fn security_options() {
        for bad in [
            "seccomp=unconfined",
            "seccomp:unconfined",
            "seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}",
            "apparmor=unconfined",
            "apparmor:my-profile",
            "label=disable",
            "label:disable",
            "label=type:spc_t",
            "label=user:system_u",
            "label=role:system_r",
            "label=level:s0-s0:c0.c1023",
            "label=level:s0:c0.c1023",
            "systempaths=unconfined",
            "writable-cgroups=true",
            "no-new-privileges=false",
            "no-new-privileges:true=x",
            "No-New-Privileges",
            "",
        ] {
            refused_on(
                &host(&json!({"SecurityOpt": ["no-new-privileges", bad]})),
                "HostConfig.SecurityOpt[1]",
                &host(&json!({"SecurityOpt": ["no-new-privileges"]})),
            );
        }
        create(&host(&json!({"SecurityOpt": [
            "no-new-privileges", "no-new-privileges:true", "no-new-privileges=true", "no-new-privileges=1",
            "apparmor=docker-default", "apparmor:docker-default",
            "label=level:s0:c100,c200", "label:level:s0", "label=level:s1:c3"
        ]})))
        .unwrap();
        refused_on(
            &host(&json!({"MaskedPaths": []})),
            "HostConfig.MaskedPaths",
            &host(&json!({"MaskedPaths": null})),
        );
        refused_on(
            &host(&json!({"ReadonlyPaths": ["/proc/sys"]})),
            "HostConfig.ReadonlyPaths",
            &host(&json!({})),
        );
    }

    #[test]
    fn host_namespaces() {
        for (name, control) in [
            ("PidMode", ""),
            ("IpcMode", "private"),
            ("UTSMode", ""),
            ("UsernsMode", ""),
            ("CgroupnsMode", "private"),
            ("NetworkMode", "bridge"),
        ] {
            refused_on(
                &host(&json!({ name: "host" })),
                &format!("HostConfig.{name}"),
                &host(&json!({ name: control })),
            );
            refused_on(&host(&json!({ name: "HOST" })), &format!("HostConfig.{name}"), &host(&json!({})));
        }
        refused_on(
            &json!({"NetworkingConfig": {"EndpointsConfig": {"host": {}}}}),
            "NetworkingConfig.EndpointsConfig.host",
            &json!({"NetworkingConfig": {"EndpointsConfig": {"bridge": {}}}}),
        );
        // Modes the gate does not know are refused, not forwarded.
        refused_on(
            &host(&json!({"PidMode": "Container:x"})),
            "HostConfig.PidMode",
            &host(&json!({"PidMode": "container:x"})),
        );
        refused_on(&host(&json!({"UTSMode": "container:x"})), "HostConfig.UTSMode", &host(&json!({})));
    }

    #[test]
    fn other_containers_are_needs() {
        let judged = create(&json!({
            "HostConfig": {
                "PidMode": "container:a",
                "IpcMode": "container:b",
                "NetworkMode": "container:c",
                "VolumesFrom": ["gitea:ro", "d"],
                "Links": ["db:database", "/e"],
                "Cgroup": "container:f",
            },
            "NetworkingConfig": {"EndpointsConfig": {"mynet": {"Links": ["g:h"]}}},
        }))
        .unwrap();
        let names: Vec<(&str, &str)> =
            judged.needs.containers.iter().map(|(f, n)| (f.as_str(), n.as_str())).collect();
        assert_eq!(
            names,
            [
                ("HostConfig.PidMode", "a"),
                ("HostConfig.IpcMode", "b"),
                ("HostConfig.NetworkMode", "c"),
                ("HostConfig.Cgroup", "f"),
                ("HostConfig.VolumesFrom[0]", "gitea"),
                ("HostConfig.VolumesFrom[1]", "d"),
                ("HostConfig.Links[0]", "db"),
                ("HostConfig.Links[1]", "/e"),
                ("NetworkingConfig.EndpointsConfig.mynet.Links[0]", "g"),
            ]
        );
        assert_eq!(
            judged.needs.networks,
            [("NetworkingConfig.EndpointsConfig.mynet".to_owned(), "mynet".to_owned())]
        );
        let judged = create(&host(&json!({"NetworkMode": "project_default"}))).unwrap();
        assert_eq!(
            judged.needs.networks,
            [("HostConfig.NetworkMode".to_owned(), "project_default".to_owned())]
        );
        refused_on(
            &host(&json!({"VolumesFrom": [":ro"]})),
            "HostConfig.VolumesFrom[0]",
            &host(&json!({"VolumesFrom": []})),
        );
    }

    #[test]
    fn cgroups_runtimes_sysctls_volume_drivers() {
        refused_on(
            &host(&json!({"CgroupParent": "/system.slice"})),
            "HostConfig.CgroupParent",
            &host(&json!({"CgroupParent": ""})),
        );
        refused_on(&host(&json!({"Cgroup": "/x"})), "HostConfig.Cgroup", &host(&json!({"Cgroup": ""})));
        refused_on(
            &host(&json!({"Runtime": "nvidia"})),
            "HostConfig.Runtime",
            &host(&json!({"Runtime": "runc"})),
        );
        refused_on(
            &host(&json!({"Sysctls": {"net.ipv4.ip_forward": "1"}})),
            "HostConfig.Sysctls",
            &host(&json!({"Sysctls": {}})),
        );
        refused_on(
            &host(&json!({"VolumeDriver": "rexray"})),
            "HostConfig.VolumeDriver",
            &host(&json!({"VolumeDriver": "local"})),
        );
        assert!(
            create(&host(&json!({"VolumeDriver": "rexray"})))
                .unwrap_err()
                .message
                .contains("no api_powers entry")
        );
    }

    #[test]
    fn binds() {
        refused_on(
            &host(&json!({"Binds": ["/:/host"]})),
            "HostConfig.Binds[0]",
            &host(&json!({"Binds": ["/home/ai/work:/w"]})),
        );
        refused_on(
            &host(&json!({"Binds": ["/home/ai/work/p:/p", "/etc:/e:ro"]})),
            "HostConfig.Binds[1]",
            &host(&json!({"Binds": ["/home/ai/work/p:/p:ro,z"]})),
        );
        // Component-wise, not a string prefix.
        refused_on(
            &host(&json!({"Binds": ["/home/ai/workshop:/w"]})),
            "HostConfig.Binds[0]",
            &host(&json!({"Binds": ["/home/ai/work/shop:/w"]})),
        );
        // `..` is resolved before the comparison.
        refused_on(
            &host(&json!({"Binds": ["/home/ai/work/../../../etc:/e"]})),
            "HostConfig.Binds[0]",
            &host(&json!({"Binds": ["/home/ai/work/a/../b:/b"]})),
        );
        refused_on(
            &host(&json!({"Binds": [":/x"]})),
            "HostConfig.Binds[0]",
            &host(&json!({"Binds": ["/anonymous"]})),
        );
        refused_on(
            &host(&json!({"Binds": ["/a:/b:ro:x"]})),
            "HostConfig.Binds[0]",
            &host(&json!({"Binds": []})),
        );
        let message = create(&host(&json!({"Binds": ["/etc:/e"]}))).unwrap_err().message;
        assert!(message.contains("/etc") && message.contains("/home/ai/work"), "{message}");
        let judged = create(&host(&json!({"Binds": ["data:/data", "cache:/c:ro"]}))).unwrap();
        assert_eq!(
            judged.needs.volumes,
            [
                ("HostConfig.Binds[0]".to_owned(), "data".to_owned()),
                ("HostConfig.Binds[1]".to_owned(), "cache".to_owned())
            ]
        );
    }

    #[test]
    fn never_bind_wins_over_bind_paths() {
        let limits = Limits { bind_paths: vec!["/".into()], ..limits() };
        let bind = |source: &str| {
            judge_with(
                BodyJudge::ContainerCreate,
                &host(&json!({"Binds": [format!("{source}:/x")]})),
                &limits,
            )
        };
        bind("/home").unwrap();
        bind("/run/user").unwrap();
        for source in
            ["/", "/run", "/run/docker.sock", "/var/lib/enforcer/maps", "/var/lib", "/run/./docker.sock"]
        {
            let refusal = bind(source).unwrap_err();
            assert!(
                refusal.message.contains("which no container may mount"),
                "{source}: {}",
                refusal.message
            );
        }
        let none = Limits { bind_paths: Vec::new(), ..self::limits() };
        let refusal =
            judge_with(BodyJudge::ContainerCreate, &host(&json!({"Binds": ["/home/ai/work:/w"]})), &none)
                .unwrap_err();
        assert!(refusal.message.contains("the rule allows no bind mounts"), "{}", refusal.message);
    }

    #[test]
    fn mounts() {
        let mount = |m: Value| host(&json!({"Mounts": [m]}));
        refused_on(
            &mount(json!({"Type": "bind", "Source": "/", "Target": "/host"})),
            "HostConfig.Mounts[0].Source",
            &mount(json!({"Type": "bind", "Source": "/home/ai/work/x", "Target": "/x"})),
        );
        refused_on(
            &mount(json!({"Type": "bind", "Source": "rel", "Target": "/x"})),
            "HostConfig.Mounts[0].Source",
            &mount(json!({"Type": "tmpfs", "Target": "/x"})),
        );
        refused_on(
            &mount(json!({"Type": "npipe", "Source": "x", "Target": "/x"})),
            "HostConfig.Mounts[0].Type",
            &mount(json!({"Type": "volume", "Target": "/x"})),
        );
        refused_on(
            &mount(json!({"Type": "Bind", "Source": "/", "Target": "/x"})),
            "HostConfig.Mounts[0].Type",
            &mount(json!({"Type": "volume", "Source": "v", "Target": "/x"})),
        );
        refused_on(
            &mount(json!({"Type": "image", "Source": "busybox", "Target": "/x"})),
            "HostConfig.Mounts[0].Type",
            &mount(json!({"Type": "tmpfs", "Target": "/x"})),
        );
        refused_on(
            &mount(json!({"Source": "/", "Target": "/x"})),
            "HostConfig.Mounts[0].Type",
            &mount(json!({"Type": "tmpfs", "Target": "/x"})),
        );
        let local = |options: Value| {
            mount(
                json!({"Type": "volume", "Target": "/x", "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": options}}}),
            )
        };
        let field = "HostConfig.Mounts[0].VolumeOptions.DriverConfig.Options.device";
        refused_on(
            &local(json!({"type": "none", "o": "bind", "device": "/"})),
            field,
            &local(json!({"type": "none", "o": "bind", "device": "/home/ai/work/v"})),
        );
        refused_on(&local(json!({"o": "rbind,ro", "device": "/etc"})), field, &local(json!({})));
        refused_on(
            &local(json!({"type": "none", "o": "bind"})),
            field,
            &local(json!({"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})),
        );
        refused_on(
            &local(json!({"type": "nfs", "o": "addr=10.0.0.1", "device": ":/export"})),
            "HostConfig.Mounts[0].VolumeOptions.DriverConfig.Options.type",
            &local(json!({"size": "1g"})),
        );
        refused_on(
            &local(json!({"type": "ext4", "device": "/dev/sda1"})),
            "HostConfig.Mounts[0].VolumeOptions.DriverConfig.Options.type",
            &local(json!({})),
        );
        refused_on(&local(json!({"device": "/dev/sda1"})), field, &local(json!({})));
        refused_on(
            &local(json!({"lowerdir": "/etc"})),
            "HostConfig.Mounts[0].VolumeOptions.DriverConfig.Options.lowerdir",
            &local(json!({})),
        );
        refused_on(
            &mount(
                json!({"Type": "volume", "Target": "/x", "VolumeOptions": {"DriverConfig": {"Name": "rexray"}}}),
            ),
            "HostConfig.Mounts[0].VolumeOptions.DriverConfig.Name",
            &mount(
                json!({"Type": "volume", "Target": "/x", "VolumeOptions": {"DriverConfig": {"Name": ""}}}),
            ),
        );
        let judged = create(&mount(json!({"Type": "volume", "Source": "data", "Target": "/x"}))).unwrap();
        assert_eq!(judged.needs.volumes, [("HostConfig.Mounts[0].Source".to_owned(), "data".to_owned())]);
    }

    #[test]
    fn the_owner_label_is_added_and_cannot_be_claimed() {
        for body in [
            json!({"Image": "x"}),
            json!({"Image": "x", "Labels": null}),
            json!({"Image": "x", "Labels": {}}),
        ] {
            let judged = create(&body).unwrap();
            assert_eq!(forwarded(&judged)["Labels"], json!({ OWNER_LABEL: RULE }), "{body}");
        }
        let judged = create(&json!({"Image": "x", "labels": {"app": "web"}, "Unknown": [1, 2]})).unwrap();
        let out = forwarded(&judged);
        assert_eq!(out["labels"], json!({"app": "web", OWNER_LABEL: RULE}));
        assert!(out.get("Labels").is_none(), "no second Labels key: {out}");
        // Unknown fields pass through.
        assert_eq!(out["Unknown"], json!([1, 2]));
        for label in [OWNER_LABEL, "Enforcer.Owner", "enforcer.other"] {
            refused_on(
                &json!({"Labels": { label: "ai-worker-docker" }}),
                &format!("Labels.{label}"),
                &json!({"Labels": {"owner": "x"}}),
            );
        }
    }

    #[test]
    fn powers_of_the_rule_admit() {
        let limits = Limits {
            powers: vec![Power::Privileged, Power::HostNamespaces, Power::CapAdd, Power::SecurityOpt],
            ..limits()
        };
        let body = host(&json!({
            "Privileged": true, "PidMode": "host", "NetworkMode": "host", "CapAdd": ["SYS_ADMIN"],
            "SecurityOpt": ["seccomp=unconfined"],
        }));
        judge_with(BodyJudge::ContainerCreate, &body, &limits).unwrap();
        // Binds stay judged whatever the powers.
        assert!(judge_with(BodyJudge::ContainerCreate, &host(&json!({"Binds": ["/:/h"]})), &limits).is_err());
    }

    #[test]
    fn container_update() {
        let update = |body: Value| judge_with(BodyJudge::ContainerUpdate, &body, &limits());
        assert_eq!(update(json!({"Devices": [{"PathOnHost": "/dev/mem"}]})).unwrap_err().field, "Devices");
        assert_eq!(
            update(json!({"DeviceCgroupRules": ["a *:* rwm"]})).unwrap_err().field,
            "DeviceCgroupRules"
        );
        assert_eq!(update(json!({"DeviceRequests": [{}]})).unwrap_err().field, "DeviceRequests");
        assert_eq!(update(json!({"cgroupparent": "/"})).unwrap_err().field, "CgroupParent");
        let judged = update(json!({"Memory": 1_048_576, "RestartPolicy": {"Name": "always"}})).unwrap();
        assert_eq!(forwarded(&judged), json!({"Memory": 1_048_576, "RestartPolicy": {"Name": "always"}}));
    }

    #[test]
    fn exec_create() {
        let exec = |body: Value| judge_with(BodyJudge::ExecCreate, &body, &limits());
        assert_eq!(exec(json!({"Cmd": ["sh"], "Privileged": true})).unwrap_err().field, "Privileged");
        assert_eq!(exec(json!({"Cmd": ["sh"], "privileged": "yes"})).unwrap_err().field, "Privileged");
        let judged = exec(json!({"Cmd": ["sh"], "Privileged": false, "User": "root"})).unwrap();
        assert_eq!(forwarded(&judged), json!({"Cmd": ["sh"], "Privileged": false, "User": "root"}));
    }

    #[test]
    fn volume_create() {
        let volume = |body: Value| judge_with(BodyJudge::VolumeCreate, &body, &limits());
        assert_eq!(volume(json!({"Name": "v", "Driver": "rexray"})).unwrap_err().field, "Driver");
        assert_eq!(
            volume(json!({"DriverOpts": {"type": "none", "o": "bind", "device": "/"}})).unwrap_err().field,
            "DriverOpts.device"
        );
        assert_eq!(
            volume(json!({"DriverOpts": {"type": "cifs", "device": "//host/share"}})).unwrap_err().field,
            "DriverOpts.type"
        );
        assert_eq!(
            volume(json!({"Labels": {OWNER_LABEL: "other"}})).unwrap_err().field,
            "Labels.enforcer.owner"
        );
        assert_eq!(volume(json!({"ClusterVolumeSpec": {}})).unwrap_err().field, "ClusterVolumeSpec");
        let judged = volume(json!({"Name": "v", "Driver": "local", "DriverOpts": {"type": "none", "o": "bind", "device": "/home/ai/work/v"}, "Labels": {"a": "b"}})).unwrap();
        assert_eq!(forwarded(&judged)["Labels"], json!({"a": "b", OWNER_LABEL: RULE}));
        let judged = volume(json!({"Name": "v"})).unwrap();
        assert_eq!(forwarded(&judged), json!({"Name": "v", "Labels": {OWNER_LABEL: RULE}}));
    }

    #[test]
    fn network_create() {
        let network = |body: Value| judge_with(BodyJudge::NetworkCreate, &body, &limits());
        for driver in ["macvlan", "ipvlan", "host", "overlay", "weird"] {
            assert_eq!(
                network(json!({"Name": "n", "Driver": driver})).unwrap_err().field,
                "Driver",
                "{driver}"
            );
        }
        assert_eq!(
            network(json!({"Name": "n", "Options": {"com.docker.network.bridge.name": "br0"}}))
                .unwrap_err()
                .field,
            "Options.com.docker.network.bridge.name"
        );
        assert_eq!(network(json!({"Name": "n", "Ingress": true})).unwrap_err().field, "Ingress");
        assert_eq!(
            network(json!({"Name": "n", "Labels": {"enforcer.owner": "x"}})).unwrap_err().field,
            "Labels.enforcer.owner"
        );
        let judged = network(json!({"Name": "n", "Driver": "bridge", "Internal": true})).unwrap();
        assert_eq!(
            forwarded(&judged),
            json!({"Name": "n", "Driver": "bridge", "Internal": true, "Labels": {OWNER_LABEL: RULE}})
        );
        network(json!({"Name": "n"})).unwrap();
    }

    #[test]
    fn network_connect() {
        let judged = judge_with(
            BodyJudge::NetworkConnect,
            &json!({"Container": "gitea", "EndpointConfig": {"Links": ["db:d"], "Aliases": ["x"]}}),
            &limits(),
        )
        .unwrap();
        assert_eq!(
            judged.needs.containers,
            [
                ("Container".to_owned(), "gitea".to_owned()),
                ("EndpointConfig.Links[0]".to_owned(), "db".to_owned())
            ]
        );
        assert!(judge_with(BodyJudge::NetworkConnect, &json!({"Container": 1}), &limits()).is_err());
    }

    #[test]
    fn build_query() {
        let build = |q: &str| judge_build_query(q, &limits());
        assert_eq!(build("networkmode=host&t=a").unwrap_err().field, "networkmode");
        assert_eq!(build("networkmode=HOST").unwrap_err().field, "networkmode");
        assert_eq!(build("networkmode=container%3Agitea").unwrap_err().field, "networkmode");
        assert_eq!(build("cgroupparent=%2F").unwrap_err().field, "cgroupparent");
        assert_eq!(build("securityopt=seccomp%3Dunconfined").unwrap_err().field, "securityopt");
        assert_eq!(build("dockerfile=a&dockerfile=b").unwrap_err().field, "dockerfile");
        assert_eq!(build("networkmode=bridge&NetworkMode=host").unwrap_err().field, "NetworkMode");
        assert_eq!(build("a=1;networkmode=host").unwrap_err().field, "query");
        assert_eq!(build("t=%zz").unwrap_err().field, "t");
        let claim = format!("labels={}", "%7B%22enforcer.owner%22%3A%22x%22%7D");
        assert_eq!(build(&claim).unwrap_err().field, "labels.enforcer.owner");
        assert_eq!(build("labels=%5B%5D").unwrap_err().field, "labels");
        assert_eq!(build("labels=nope").unwrap_err().field, "labels");

        let out =
            build("t=app%3A1&t=app%3Alatest&networkmode=default&labels=%7B%22a%22%3A%22b+c%22%7D&version=2")
                .unwrap();
        assert_eq!(
            out,
            "t=app%3A1&t=app%3Alatest&networkmode=default&version=2&labels=%7B%22a%22%3A%22b%20c%22%2C%22enforcer.owner%22%3A%22ai-worker-docker%22%7D"
        );
        assert_eq!(build("").unwrap(), "labels=%7B%22enforcer.owner%22%3A%22ai-worker-docker%22%7D");
        let granted = Limits { powers: vec![Power::BuildHostNetwork], ..limits() };
        judge_build_query("networkmode=host", &granted).unwrap();
    }

    /// A fresh directory under the system's temp dir (std only).
    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("enforcer-judge-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::canonicalize(dir).unwrap()
    }

    #[test]
    fn resolve_source_follows_symlinks_and_removes_dots() {
        let dir = tempdir("resolve");
        let work = dir.join("work");
        std::fs::create_dir_all(work.join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc", work.join("link")).unwrap();
        std::os::unix::fs::symlink("sub", work.join("rel")).unwrap();
        assert_eq!(resolve_source(&work.join("sub")), work.join("sub"));
        assert_eq!(resolve_source(&work.join("link")), std::fs::canonicalize("/etc").unwrap());
        assert_eq!(
            resolve_source(&work.join("link/x/y")),
            std::fs::canonicalize("/etc").unwrap().join("x/y")
        );
        assert_eq!(resolve_source(&work.join("rel/new/dir")), work.join("sub/new/dir"));
        assert_eq!(resolve_source(&work.join("missing/../sub/./x")), work.join("sub/x"));
        assert_eq!(resolve_source(Path::new("/../..")), PathBuf::from("/"));

        let limits = Limits { bind_paths: vec![work.clone()], ..limits() };
        let bind = |source: PathBuf| {
            let body = host(&json!({"Binds": [format!("{}:/x", source.display())]}));
            judge_body(BodyJudge::ContainerCreate, body.to_string().as_bytes(), &limits, &resolve_source)
        };
        bind(work.join("sub")).unwrap();
        bind(work.join("new")).unwrap();
        bind(work.join("rel")).unwrap();
        let refusal = bind(work.join("link")).unwrap_err();
        assert!(refusal.message.contains("resolved: "), "{}", refusal.message);
        // dockerd cleans lexically first: `link/..` is `work` itself, not `/etc/..`.
        bind(work.join("link/..")).unwrap();
        bind(work.join("sub/../..")).unwrap_err();

        // never_bind is matched resolved too: a link to a never path is refused.
        std::fs::write(work.join("secret"), "").unwrap();
        std::os::unix::fs::symlink(work.join("secret"), work.join("alias")).unwrap();
        let limits = Limits { never_bind: vec![work.join("alias")], ..limits };
        let body = host(&json!({"Binds": [format!("{}:/x", work.join("secret").display())]}));
        let refusal =
            judge_body(BodyJudge::ContainerCreate, body.to_string().as_bytes(), &limits, &resolve_source)
                .unwrap_err();
        assert!(refusal.message.contains("which no container may mount"), "{}", refusal.message);
        assert_eq!(resolve_source(Path::new("relative/../x")), PathBuf::from("x"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn large_bodies_are_judged_in_linear_time() {
        // A MAX_BODY-sized object of distinct keys, and a deep array: judged, not stuck.
        let mut object = Map::new();
        let mut i = 0;
        while object.len() * 12 < MAX_BODY {
            object.insert(format!("k{i:09}"), Value::from(1));
            i += 1;
        }
        let started = std::time::Instant::now();
        create(&Value::Object(object)).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            judge_body(BodyJudge::ContainerCreate, deep.as_bytes(), &limits(), &same).unwrap_err().field,
            "body"
        );
    }

    const KINDS: &[BodyJudge] = &[
        BodyJudge::ContainerCreate,
        BodyJudge::ContainerUpdate,
        BodyJudge::ExecCreate,
        BodyJudge::VolumeCreate,
        BodyJudge::NetworkCreate,
        BodyJudge::NetworkConnect,
        BodyJudge::Build,
        BodyJudge::Stream,
    ];

    /// JSON values built from the fields the judge knows, in any case and of any type.
    fn json_ish() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "HostConfig",
            "hostconfig",
            "Privileged",
            "PRIVILEGED",
            "Binds",
            "Mounts",
            "Type",
            "Source",
            "VolumeOptions",
            "DriverConfig",
            "Options",
            "Name",
            "Labels",
            "labels",
            "CapAdd",
            "SecurityOpt",
            "PidMode",
            "NetworkMode",
            "NetworkingConfig",
            "EndpointsConfig",
            "Links",
            "VolumesFrom",
            "Devices",
            "Sysctls",
            "\u{17F}ysctls",
            "type",
            "o",
            "device",
            "Driver",
            "DriverOpts",
            "Container",
            "EndpointConfig",
            "enforcer.owner",
            "host",
            "x",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            prop::sample::select(vec![
                "host",
                "/",
                "/home/ai/work/x",
                "bind",
                "container:x",
                "a:b:c",
                "none",
                "volume",
                "tmpfs",
                "",
                "SYS_ADMIN",
                "seccomp=unconfined"
            ])
            .prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6).prop_map(|pairs| Value::Object(
                    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn judge_body_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256), kind in prop::sample::select(KINDS)) {
            let _ = judge_body(kind, &body, &limits(), &same);
        }

        #[test]
        fn judge_body_never_panics_on_json(value in json_ish(), kind in prop::sample::select(KINDS)) {
            if let Ok(judged) = judge_body(kind, value.to_string().as_bytes(), &limits(), &same) {
                let out: Value = serde_json::from_slice(&judged.body).expect("JSON out");
                if matches!(kind, BodyJudge::ContainerCreate | BodyJudge::VolumeCreate | BodyJudge::NetworkCreate) {
                    let labels = out.as_object().and_then(|o| field(o, "Labels")).cloned();
                    prop_assert_eq!(labels.and_then(|l| l.get(OWNER_LABEL).cloned()), Some(Value::from(RULE)));
                }
                // What is forwarded is what was judged: the same value, plus the label.
                let mut expected = value.clone();
                if let Some(root) = expected.as_object_mut()
                    && matches!(kind, BodyJudge::ContainerCreate | BodyJudge::VolumeCreate | BodyJudge::NetworkCreate) {
                        let key = key_of(root, "Labels").unwrap_or_else(|| "Labels".to_owned());
                        let labels = root.entry(key).or_insert(Value::Null);
                        if labels.is_null() {
                            *labels = Value::Object(Map::new());
                        }
                        if let Some(map) = labels.as_object_mut() {
                            map.insert(OWNER_LABEL.to_owned(), Value::from(RULE));
                        }
                    }
                prop_assert_eq!(out, expected);
            }
        }

        #[test]
        fn judge_build_query_never_panics(query in "\\PC{0,64}") {
            if let Ok(out) = judge_build_query(&query, &limits()) {
                // The forwarded query carries the owner label (so judging it again is a claim).
                let again = judge_build_query(&out, &limits()).unwrap_err();
                prop_assert_eq!(again.field, format!("labels.{OWNER_LABEL}"));
            }
        }
    }

    #[test]
    fn log_drivers_that_send_to_an_address_need_the_power() {
        let syslog = json!({"Image": "x", "HostConfig": {"LogConfig": {"Type": "syslog", "Config": {"syslog-address": "unix:///root/s"}}}});
        let refused = judge_with(BodyJudge::ContainerCreate, &syslog, &limits()).unwrap_err();
        assert_eq!(refused.field, "HostConfig.LogConfig.Type");
        for driver in ["json-file", "local", "none", "journald", ""] {
            let body = json!({"Image": "x", "HostConfig": {"LogConfig": {"Type": driver}}});
            assert!(judge_with(BodyJudge::ContainerCreate, &body, &limits()).is_ok(), "{driver}");
        }
        let granted = Limits { powers: vec![Power::LogDrivers], ..limits() };
        assert!(judge_with(BodyJudge::ContainerCreate, &syslog, &granted).is_ok());
    }

    #[test]
    fn remote_contexts_are_refused_and_tags_are_listed() {
        assert_eq!(
            judge_build_query("remote=https%3A%2F%2Fx%2Fc.tar", &limits()).unwrap_err().field,
            "remote"
        );
        assert_eq!(build_tags("t=a%3A1&q=1&t=b&T=c&t="), ["a:1", "b"]);
    }
}
