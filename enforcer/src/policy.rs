//! The policy file: parsing with exact error positions and validation (one validator per
//! key), then resolution against what discovery found on this system
//! ([`crate::discovery`]); compilation into map entries is [`crate::compile`]'s.
//!
//! ```toml
//! mode = "enforce"            # or "audit"
//!
//! [[rule]]
//! name = "ai-worker-docker"
//! users = ["ai-worker"]       # names or numeric uids
//! binaries = ["/usr/bin/docker", { path = "/usr/bin/docker-compose", client = "docker-compose" }]
//! deny = ["exec", "cp", "compose exec"]   # or allow = [...]
//! cgroups = ["/system.slice/ai-agent.service"]   # every process in it, whatever its uid
//! sockets = ["/var/run/docker.sock", "/run/docker.sock"]   # the default
//! hosts = ["127.0.0.1:2375", "*:2376"]   # TCP endpoints of the docker API, gated the same way
//! ```

use std::{
    collections::BTreeMap,
    fmt::{self, Write as _},
    ops::Range,
    path::{Path, PathBuf},
};

use enforcer_common::{
    abi::{HostKey, MAX_CGROUP_LEVEL, MAX_RULES, Profile, SOCKET_NAME_LEN},
    grammar,
};
use serde::Deserialize;
use toml::Spanned;

use crate::discovery::{Discovery, USUAL_DOCKER_DIRS};

/// The policy used when neither `--config` nor the system policy file exists.
pub const DEFAULT_POLICY: &str = include_str!("default-policy.toml");
/// Name shown for the embedded default in messages.
pub const DEFAULT_POLICY_NAME: &str = "<embedded default policy>";

/// The documented hardened example (issue 15): own containers only, gitea protected.
/// Shipped as a file for admins to copy; embedded only so that its tests see the text.
#[cfg(test)]
pub const HARDENED_POLICY: &str = include_str!("hardened-policy.toml");
/// The system policy file.
pub const SYSTEM_POLICY_PATH: &str = "/etc/enforcer/policy.toml";

/// The docker API sockets a rule gates when it does not list `sockets`.
pub const DEFAULT_SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock"];

/// A policy problem, with the place in the file it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub file: String,
    /// 1-based line and column, when the problem has a place.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{}:{}: {}", self.file, line, col, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for PolicyError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Audit,
}

/// A user as the policy names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSpec {
    Name(String),
    Uid(u32),
}

impl fmt::Display for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserSpec::Name(name) => f.write_str(name),
            UserSpec::Uid(uid) => write!(f, "{uid}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Deny,
    Allow,
}

/// A validated rule; users and binaries are not resolved against the system yet.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub users: Vec<(UserSpec, Place)>,
    /// None: look for docker in PATH and the usual places.
    pub binaries: Option<Vec<Binary>>,
    pub kind: ListKind,
    /// The commands the rule names (node ids, in policy order); each covers its
    /// spellings, descendants and same-power commands (see `grammar::covers`).
    pub commands: Vec<u32>,
    /// cgroup v2 paths (from the hierarchy's root) whose processes the rule restricts.
    pub cgroups: Vec<(String, Place)>,
    /// docker API unix sockets only vetted binaries may connect to.
    pub sockets: Vec<PathBuf>,
    /// docker API TCP endpoints only vetted binaries may connect to (generation 0 in the keys).
    pub hosts: Vec<HostKey>,
    /// The API gate (on unless `api_gate = false`): the rule's identities reach the docker
    /// API only through the rule's gate socket, which judges every request.
    pub api_gate: bool,
    /// Which clients may use the rule's gate socket.
    pub api_clients: ApiClients,
    /// Host directories the gate lets bind mounts come from (absolute, as written).
    pub bind_paths: Vec<PathBuf>,
    /// Container powers the gate grants the rule (`api_powers`), beyond the defaults.
    pub api_powers: Vec<crate::gate::judge::Power>,
    /// `own_only`: commands (node ids) the argv check allows and the gate admits only on
    /// objects the rule owns (its label, put on by the gate when the rule created them).
    pub own_only: Vec<u32>,
    /// `protect`: objects the rule's identities may not even read, whatever else it allows.
    pub protect: Vec<Protect>,
    /// `see = "own"`: listings show only the rule's own objects.
    pub see_own: bool,
}

/// One `protect` entry: a container (or volume, network) name, or a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protect {
    Name(String),
    /// `label=key` (any value) or `label=key=value`.
    Label(String, Option<String>),
}

impl Protect {
    /// Whether an object with `name` (dockerd's, a container's without its leading `/`) and
    /// `labels` is protected by this entry.
    pub fn matches(&self, name: &str, labels: &serde_json::Map<String, serde_json::Value>) -> bool {
        match self {
            Protect::Name(protected) => protected == name.strip_prefix('/').unwrap_or(name),
            Protect::Label(key, value) => labels
                .get(key)
                .is_some_and(|v| value.as_deref().is_none_or(|value| v.as_str() == Some(value))),
        }
    }
}

/// `api_clients`: which clients may connect to a rule's gate socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiClients {
    /// Only the rule's vetted binaries (defence in depth: the argv check still applies).
    #[default]
    Vetted,
    /// Any program (SDKs, docker-compose v1, testcontainers): the gate alone judges.
    Any,
}

/// Parses a `hosts` entry: `IP:PORT`, `[IPv6]:PORT`, or `*:PORT` for every address.
pub fn parse_host(text: &str) -> Result<HostKey, String> {
    let invalid = || format!("invalid host {text:?}: expected IP:PORT, [IPv6]:PORT or *:PORT");
    if let Some(port) = text.strip_prefix("*:") {
        let port: u16 = port.parse().map_err(|_| invalid())?;
        return Ok(HostKey { generation: 0, port, family: 0, addr: [0; 16] });
    }
    let addr: std::net::SocketAddr = text.parse().map_err(|_| invalid())?;
    // dockerd listening on the unspecified address accepts a connection to any of this
    // host's addresses (127.0.0.2, the host's own, docker0's): gate the port on all of them.
    if addr.ip().is_unspecified() {
        return Ok(HostKey { generation: 0, port: addr.port(), family: 0, addr: [0; 16] });
    }
    let mut key = HostKey { generation: 0, port: addr.port(), family: 4, addr: [0; 16] };
    // The same normalisation as the kernel program's: mapped IPv6 is IPv4.
    let ip = match addr.ip() {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(v6),
        },
        v4 @ std::net::IpAddr::V4(_) => v4,
    };
    match ip {
        std::net::IpAddr::V4(v4) => {
            let v4 = if v4.is_unspecified() { std::net::Ipv4Addr::LOCALHOST } else { v4 };
            key.addr[..4].copy_from_slice(&v4.octets());
        }
        std::net::IpAddr::V6(v6) => {
            let v6 = if v6.is_unspecified() { std::net::Ipv6Addr::LOCALHOST } else { v6 };
            key.family = 6;
            key.addr = v6.octets();
        }
    }
    Ok(key)
}

/// The text form of a hosts key.
pub fn host_text(key: &HostKey) -> String {
    match key.family {
        4 => format!(
            "{}:{}",
            std::net::Ipv4Addr::new(key.addr[0], key.addr[1], key.addr[2], key.addr[3]),
            key.port
        ),
        6 => format!("[{}]:{}", std::net::Ipv6Addr::from(key.addr), key.port),
        _ => format!("*:{}", key.port),
    }
}

/// A vetted client binary as the policy lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    pub path: PathBuf,
    /// `Profile::Docker as u32` or `Profile::Compose as u32`: where the engine starts in its argv.
    pub profile: u32,
    pub place: Place,
}

/// The profile a binary path implies when the policy does not say: a file named
/// `docker-compose` is the compose client, anything else the docker CLI.
pub fn profile_for_path(path: &Path) -> u32 {
    match path.file_name().and_then(|n| n.to_str()) {
        Some("docker-compose") => Profile::Compose as u32,
        _ => Profile::Docker as u32,
    }
}

/// A position in the policy file, for messages about resolution (unknown user, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub line: usize,
    pub col: usize,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it came from, or `DEFAULT_POLICY_NAME`.
    pub source: String,
    /// SHA-256 of the policy text, hex: tells which policy is in force.
    pub digest: String,
    pub mode: Mode,
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    mode: Option<Spanned<String>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

/// A TOML array whose entries keep their positions.
type SpannedList<T> = Spanned<Vec<Spanned<T>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    users: Option<SpannedList<RawUser>>,
    cgroups: Option<SpannedList<String>>,
    sockets: Option<SpannedList<String>>,
    hosts: Option<SpannedList<String>>,
    binaries: Option<SpannedList<RawBinary>>,
    deny: Option<SpannedList<String>>,
    allow: Option<SpannedList<String>>,
    api_gate: Option<Spanned<bool>>,
    api_clients: Option<Spanned<String>>,
    bind_paths: Option<SpannedList<String>>,
    api_powers: Option<SpannedList<String>>,
    own_only: Option<SpannedList<String>>,
    protect: Option<SpannedList<String>>,
    see: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawBinary {
    Path(String),
    Table(RawBinaryTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBinaryTable {
    path: String,
    client: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawUser {
    Uid(i64),
    Name(String),
}

/// Whether a rule name can be its gate socket's file name as it is.
fn rule_name_is_file_name(name: &str) -> bool {
    name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn digest(text: &str) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(text.as_bytes()))
}

/// Lower-case hex of `bytes`, as the policy digest and the maps' directory name use it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

fn place_of(text: &str, offset: usize) -> Place {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    Place { line, col }
}

impl Policy {
    /// Parses and validates policy text. `source` names it in errors.
    pub fn parse(source: &str, text: &str) -> Result<Policy, PolicyError> {
        let src = Source { name: source, text };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            // toml's message repeats the position in its own layout; keep its first line.
            let message = e.message().lines().next().unwrap_or("invalid TOML").to_string();
            src.error(e.span(), message)
        })?;
        let mode = src.mode(raw.mode.as_ref())?;
        src.rule_count(&raw.rule)?;
        let mut names = BTreeMap::new();
        let rules = raw.rule.iter().map(|rule| src.rule(rule, &mut names)).collect::<Result<_, _>>()?;
        Ok(Policy { source: source.to_string(), digest: digest(text), mode, rules })
    }
}

/// The policy text being parsed: turns spans into the positions of its messages. Each
/// validator below checks one key (or group of keys) and returns its validated value;
/// `rule` calls them in a fixed order, so a rule with several faults reports the same one
/// every time.
struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Option<Range<usize>>, message: String) -> PolicyError {
        let position = span.map(|s| {
            let p = place_of(self.text, s.start);
            (p.line, p.col)
        });
        PolicyError { file: self.name.to_string(), position, message }
    }

    fn place(&self, span: Range<usize>) -> Place {
        place_of(self.text, span.start)
    }

    /// `mode`: enforce (the default) or audit.
    fn mode(&self, mode: Option<&Spanned<String>>) -> Result<Mode, PolicyError> {
        let Some(mode) = mode else { return Ok(Mode::Enforce) };
        match mode.get_ref().as_str() {
            "enforce" => Ok(Mode::Enforce),
            "audit" => Ok(Mode::Audit),
            other => Err(self.error(
                Some(mode.span()),
                format!("unknown mode {other:?}: expected \"enforce\" or \"audit\""),
            )),
        }
    }

    /// `[[rule]]`: at least one (a policy restricting nobody is a mistake), at most what
    /// the kernel's rule bitmasks hold.
    fn rule_count(&self, rules: &[Spanned<RawRule>]) -> Result<(), PolicyError> {
        if rules.is_empty() {
            return Err(self.error(None, "the policy has no [[rule]]: it would restrict nobody".into()));
        }
        if rules.len() > MAX_RULES {
            return Err(
                self.error(Some(rules[MAX_RULES].span()), format!("too many rules: at most {MAX_RULES}"))
            );
        }
        Ok(())
    }

    /// One `[[rule]]`, its keys validated in a fixed order.
    fn rule(
        &self,
        spanned: &Spanned<RawRule>,
        names: &mut BTreeMap<String, Range<usize>>,
    ) -> Result<Rule, PolicyError> {
        let rule = spanned.get_ref();
        let name = self.rule_name(&rule.name, names)?;
        let raw_users = self.users_list(rule.users.as_ref(), &name)?;
        let cgroups = self.cgroups(rule.cgroups.as_ref(), &name)?;
        if raw_users.is_empty() && cgroups.is_empty() {
            return Err(self.error(
                Some(rule.name.span()),
                format!("rule {name:?} names neither users nor cgroups: it would restrict nobody"),
            ));
        }
        let sockets = self.sockets(rule.sockets.as_ref(), &name)?;
        let hosts = self.hosts(rule.hosts.as_ref())?;
        let users = raw_users.iter().map(|user| self.user(user)).collect::<Result<_, _>>()?;
        let binaries = self.binaries(rule.binaries.as_ref(), &name)?;
        let (kind, list) = self.command_list(spanned, &name)?;
        let mut commands = self.commands(list)?;
        let own_only = match &rule.own_only {
            Some(own) => self.commands(own)?,
            None => Vec::new(),
        };
        self.own_only_allowed(&name, kind, list, rule.own_only.as_ref())?;
        if kind == ListKind::Allow {
            // The argv check lets them through; the gate decides by the object's owner.
            for &id in &own_only {
                if !commands.contains(&id) {
                    commands.push(id);
                }
            }
        }
        // On unless the rule opts out: without it, allowed commands keep their flags' power.
        let api_gate = rule.api_gate.as_ref().is_none_or(|gate| *gate.get_ref());
        let api_clients = self.api_clients(rule.api_clients.as_ref())?;
        let bind_paths = self.bind_paths(rule.bind_paths.as_ref())?;
        let api_powers = self.api_powers(rule.api_powers.as_ref())?;
        let protect = self.protect(rule.protect.as_ref())?;
        let see_own = self.see(rule.see.as_ref())?;
        if !api_gate
            && let Some(span) = [
                rule.api_clients.as_ref().map(Spanned::span),
                rule.bind_paths.as_ref().map(Spanned::span),
                rule.api_powers.as_ref().map(Spanned::span),
                rule.own_only.as_ref().map(Spanned::span),
                rule.protect.as_ref().map(Spanned::span),
                rule.see.as_ref().map(Spanned::span),
            ]
            .into_iter()
            .flatten()
            .next()
        {
            return Err(self.error(
                Some(span),
                format!(
                    "rule {name:?}: api_clients, bind_paths, api_powers, own_only, protect and see are the \
                     gate's: remove api_gate = false"
                ),
            ));
        }
        if api_gate && !rule_name_is_file_name(&name) {
            return Err(self.error(
                Some(rule.name.span()),
                format!(
                    "rule {name:?}: the name is its API gate socket's file name: use letters, digits, \
                     '-', '_' and '.' only (at most 64), or set api_gate = false"
                ),
            ));
        }
        Ok(Rule {
            name,
            users,
            binaries,
            kind,
            commands,
            cgroups,
            sockets,
            hosts,
            api_gate,
            api_clients,
            bind_paths,
            api_powers,
            own_only,
            protect,
            see_own,
        })
    }

    /// `protect`: container names (as `docker ps` shows them) or `label=key[=value]`.
    fn protect(&self, entries: Option<&SpannedList<String>>) -> Result<Vec<Protect>, PolicyError> {
        let mut out = Vec::new();
        for entry in entries.iter().flat_map(|p| p.get_ref()) {
            let text = entry.get_ref().trim();
            let bad = |why: &str| self.error(Some(entry.span()), format!("protect entry {text:?}: {why}"));
            let protect = if let Some(label) = text.strip_prefix("label=") {
                let (key, value) = match label.split_once('=') {
                    Some((key, value)) => (key, Some(value.to_owned())),
                    None => (label, None),
                };
                if key.is_empty() {
                    return Err(bad("the label key is empty (label=key or label=key=value)"));
                }
                Protect::Label(key.to_owned(), value)
            } else {
                let name = text.strip_prefix('/').unwrap_or(text);
                // dockerd's container names: [a-zA-Z0-9][a-zA-Z0-9_.-]*
                if name.is_empty()
                    || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                {
                    return Err(bad("not a container name or label=key[=value]"));
                }
                Protect::Name(name.to_owned())
            };
            out.push(protect);
        }
        Ok(out)
    }

    /// `see`: "all" (the default) or "own".
    fn see(&self, see: Option<&Spanned<String>>) -> Result<bool, PolicyError> {
        let Some(see) = see else { return Ok(false) };
        match see.get_ref().as_str() {
            "all" => Ok(false),
            "own" => Ok(true),
            other => {
                Err(self
                    .error(Some(see.span()), format!("unknown see {other:?}: expected \"all\" or \"own\"")))
            }
        }
    }

    /// `own_only` entries must reach the gate: a deny entry that covers one would refuse it
    /// in the kernel already (a contradiction the admin should see, not a silent deny).
    fn own_only_allowed(
        &self,
        name: &str,
        kind: ListKind,
        list: &SpannedList<String>,
        own_only: Option<&SpannedList<String>>,
    ) -> Result<(), PolicyError> {
        let (Some(own_only), ListKind::Deny) = (own_only, kind) else { return Ok(()) };
        let id =
            |entry: &Spanned<String>| grammar::resolve_entry(crate::grammar::get(), entry.get_ref().trim());
        for own in own_only.get_ref() {
            let Some(own_id) = id(own) else { continue };
            if let Some(denied) = list
                .get_ref()
                .iter()
                .find(|deny| id(deny).is_some_and(|deny_id| grammar::covers(deny_id, own_id)))
            {
                return Err(self.error(
                    Some(own.span()),
                    format!(
                        "rule {name:?}: own_only {:?} is denied by the deny entry {:?}: remove one of them",
                        own.get_ref().trim(),
                        denied.get_ref().trim()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `api_clients`: "vetted" (the default) or "any".
    fn api_clients(&self, clients: Option<&Spanned<String>>) -> Result<ApiClients, PolicyError> {
        let Some(clients) = clients else { return Ok(ApiClients::Vetted) };
        match clients.get_ref().as_str() {
            "vetted" => Ok(ApiClients::Vetted),
            "any" => Ok(ApiClients::Any),
            other => Err(self.error(
                Some(clients.span()),
                format!("unknown api_clients {other:?}: expected \"vetted\" or \"any\""),
            )),
        }
    }

    /// `bind_paths`: absolute, clean host directories (`/home/ai-worker/work`).
    fn bind_paths(&self, paths: Option<&SpannedList<String>>) -> Result<Vec<PathBuf>, PolicyError> {
        let mut out = Vec::new();
        for path in paths.iter().flat_map(|p| p.get_ref()) {
            let text = path.get_ref();
            let clean = text
                .strip_prefix('/')
                .is_some_and(|rest| rest.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
            if !clean {
                return Err(self.error(
                    Some(path.span()),
                    format!(
                        "bind path {text:?} is not an absolute directory path without '.', '..', '//' or a trailing '/' (and not / itself)"
                    ),
                ));
            }
            out.push(PathBuf::from(text));
        }
        Ok(out)
    }

    /// `api_powers`: names of container powers the gate grants (`privileged`, `devices`, ...).
    fn api_powers(
        &self,
        powers: Option<&SpannedList<String>>,
    ) -> Result<Vec<crate::gate::judge::Power>, PolicyError> {
        use crate::gate::judge::Power;
        let mut out = Vec::new();
        for power in powers.iter().flat_map(|p| p.get_ref()) {
            let Some(known) = Power::from_name(power.get_ref()) else {
                let names: Vec<&str> = Power::ALL.iter().map(|p| p.name()).collect();
                return Err(self.error(
                    Some(power.span()),
                    format!("unknown api power {:?}: expected one of {}", power.get_ref(), names.join(", ")),
                ));
            };
            out.push(known);
        }
        Ok(out)
    }

    /// `name`: not empty, and unique in the policy (`names`: those seen so far).
    fn rule_name(
        &self,
        name: &Spanned<String>,
        names: &mut BTreeMap<String, Range<usize>>,
    ) -> Result<String, PolicyError> {
        let trimmed = name.get_ref().trim().to_string();
        if trimmed.is_empty() {
            return Err(self.error(Some(name.span()), "rule name is empty".into()));
        }
        if let Some(first) = names.insert(trimmed.clone(), name.span()) {
            let first = self.place(first);
            return Err(self.error(
                Some(name.span()),
                format!("duplicate rule name {trimmed:?} (first at line {})", first.line),
            ));
        }
        Ok(trimmed)
    }

    /// `users`, as a list: omitted is none, but an empty list is a mistake. Its entries
    /// are validated later, by [`Source::user`].
    fn users_list<'r>(
        &self,
        users: Option<&'r SpannedList<RawUser>>,
        name: &str,
    ) -> Result<&'r [Spanned<RawUser>], PolicyError> {
        match users {
            None => Ok(&[]),
            Some(list) if list.get_ref().is_empty() => {
                Err(self.error(Some(list.span()), format!("rule {name:?}: users is empty")))
            }
            Some(list) => Ok(list.get_ref()),
        }
    }

    /// One `users` entry: a name, or a uid (a number, or a name made of digits).
    fn user(&self, user: &Spanned<RawUser>) -> Result<(UserSpec, Place), PolicyError> {
        let spec = match user.get_ref() {
            RawUser::Uid(uid) => match u32::try_from(*uid) {
                Ok(uid) if uid != u32::MAX => UserSpec::Uid(uid),
                _ => return Err(self.error(Some(user.span()), format!("invalid uid {uid}"))),
            },
            RawUser::Name(n) if n.is_empty() => {
                return Err(self.error(Some(user.span()), "empty user name".into()));
            }
            RawUser::Name(n) => match n.parse::<u32>() {
                Ok(uid) => UserSpec::Uid(uid),
                Err(_) => UserSpec::Name(n.clone()),
            },
        };
        Ok((spec, self.place(user.span())))
    }

    /// `cgroups`: absolute cgroup v2 paths, no deeper than the kernel looks; each entry
    /// first, then the list itself must not be empty.
    fn cgroups(
        &self,
        cgroups: Option<&SpannedList<String>>,
        name: &str,
    ) -> Result<Vec<(String, Place)>, PolicyError> {
        let mut paths = Vec::new();
        for cgroup in cgroups.iter().flat_map(|c| c.get_ref()) {
            paths.push((self.cgroup(cgroup)?, self.place(cgroup.span())));
        }
        if let Some(list) = cgroups
            && list.get_ref().is_empty()
        {
            return Err(self.error(Some(list.span()), format!("rule {name:?}: cgroups is empty")));
        }
        Ok(paths)
    }

    /// One `cgroups` entry, without its trailing slashes.
    fn cgroup(&self, cgroup: &Spanned<String>) -> Result<String, PolicyError> {
        let path = cgroup.get_ref().trim_end_matches('/');
        let levels = path.split('/').skip(1).count() as u32;
        if !path.starts_with('/') || path.split('/').skip(1).any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(self.error(
                Some(cgroup.span()),
                format!("cgroup {path:?} is not an absolute cgroup path such as \"/system.slice/ai-agent.service\""),
            ));
        }
        if levels > MAX_CGROUP_LEVEL - 1 {
            return Err(self.error(
                Some(cgroup.span()),
                format!("cgroup {path:?} is nested deeper than {} levels", MAX_CGROUP_LEVEL - 1),
            ));
        }
        Ok(path.to_string())
    }

    /// `sockets`: absolute paths that fit a unix socket address; omitted means
    /// [`DEFAULT_SOCKETS`], an empty list is a mistake.
    fn sockets(
        &self,
        sockets: Option<&SpannedList<String>>,
        name: &str,
    ) -> Result<Vec<PathBuf>, PolicyError> {
        let Some(list) = sockets else { return Ok(DEFAULT_SOCKETS.iter().map(PathBuf::from).collect()) };
        if list.get_ref().is_empty() {
            return Err(self.error(
                Some(list.span()),
                format!("rule {name:?}: sockets is empty (omit it for the default {DEFAULT_SOCKETS:?})"),
            ));
        }
        let mut paths = Vec::new();
        for socket in list.get_ref() {
            let path = socket.get_ref();
            if !path.starts_with('/') || path.len() >= SOCKET_NAME_LEN {
                return Err(self.error(
                    Some(socket.span()),
                    format!(
                        "socket {path:?} is not an absolute path of at most {} bytes",
                        SOCKET_NAME_LEN - 1
                    ),
                ));
            }
            paths.push(PathBuf::from(path));
        }
        Ok(paths)
    }

    /// `hosts`: TCP endpoints (see [`parse_host`]).
    fn hosts(&self, hosts: Option<&SpannedList<String>>) -> Result<Vec<HostKey>, PolicyError> {
        hosts
            .iter()
            .flat_map(|h| h.get_ref())
            .map(|host| parse_host(host.get_ref()).map_err(|message| self.error(Some(host.span()), message)))
            .collect()
    }

    /// `binaries`: omitted means "search for docker"; an empty list is a mistake.
    fn binaries(
        &self,
        binaries: Option<&SpannedList<RawBinary>>,
        name: &str,
    ) -> Result<Option<Vec<Binary>>, PolicyError> {
        let Some(list) = binaries else { return Ok(None) };
        if list.get_ref().is_empty() {
            return Err(self.error(
                Some(list.span()),
                format!("rule {name:?}: binaries is empty (omit it to search for docker)"),
            ));
        }
        list.get_ref().iter().map(|entry| self.binary(entry)).collect::<Result<_, _>>().map(Some)
    }

    /// One `binaries` entry: an absolute path, with its client named or implied by its
    /// file name.
    fn binary(&self, entry: &Spanned<RawBinary>) -> Result<Binary, PolicyError> {
        let (path, profile) = match entry.get_ref() {
            RawBinary::Path(path) => (PathBuf::from(path), profile_for_path(Path::new(path))),
            RawBinary::Table(table) => {
                let profile = crate::grammar::profile_by_name(&table.client).ok_or_else(|| {
                    self.error(
                        Some(entry.span()),
                        format!(
                            "unknown client {:?}: expected \"docker\" or \"docker-compose\"",
                            table.client
                        ),
                    )
                })?;
                (PathBuf::from(&table.path), profile)
            }
        };
        if !path.is_absolute() {
            return Err(self.error(
                Some(entry.span()),
                format!("binary path {:?} is not absolute", path.display().to_string()),
            ));
        }
        Ok(Binary { path, profile, place: self.place(entry.span()) })
    }

    /// `deny` or `allow`: exactly one of them.
    fn command_list<'r>(
        &self,
        rule: &'r Spanned<RawRule>,
        name: &str,
    ) -> Result<(ListKind, &'r SpannedList<String>), PolicyError> {
        match (&rule.get_ref().deny, &rule.get_ref().allow) {
            (Some(deny), None) => Ok((ListKind::Deny, deny)),
            (None, Some(allow)) => Ok((ListKind::Allow, allow)),
            (Some(_), Some(allow)) => {
                Err(self
                    .error(Some(allow.span()), format!("rule {name:?} has both deny and allow: give one")))
            }
            (None, None) => {
                Err(self.error(Some(rule.span()), format!("rule {name:?} has neither deny nor allow")))
            }
        }
    }

    /// The entries of `deny` or `allow`: docker commands, as node ids, without repeats.
    fn commands(&self, list: &SpannedList<String>) -> Result<Vec<u32>, PolicyError> {
        let mut commands = Vec::new();
        for command in list.get_ref() {
            let entry = command.get_ref().trim();
            let Some(id) = grammar::resolve_entry(crate::grammar::get(), entry) else {
                return Err(self.error(Some(command.span()), format!("unknown docker command {entry:?}")));
            };
            if !commands.contains(&id) {
                commands.push(id);
            }
        }
        Ok(commands)
    }
}

impl Policy {
    /// Reads and parses a policy file.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: path.display().to_string(),
            position: None,
            message: format!("cannot read: {e}"),
        })?;
        Policy::parse(&path.display().to_string(), &text)
    }

    /// The embedded default policy.
    pub fn default_policy() -> Policy {
        Policy::parse(DEFAULT_POLICY_NAME, DEFAULT_POLICY).expect("embedded default policy is valid")
    }

    /// `--config FILE`, else the system file when present, else the embedded default.
    pub fn load(config: Option<&Path>) -> Result<Policy, PolicyError> {
        match config {
            Some(path) => Policy::from_file(path),
            None if Path::new(SYSTEM_POLICY_PATH).exists() => {
                Policy::from_file(Path::new(SYSTEM_POLICY_PATH))
            }
            None => Ok(Policy::default_policy()),
        }
    }
}

/// Users and binaries of a policy, resolved on this system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// uid -> bitmask of rules naming it.
    pub users: BTreeMap<u32, u32>,
    /// Resolved binary path -> (bitmask of rules listing it, client profile).
    pub binaries: BTreeMap<PathBuf, (u32, u32)>,
    /// cgroup path -> bitmask of rules naming it. Its id is learnt (and re-learnt when the
    /// cgroup is re-created) by the daemon.
    pub cgroups: BTreeMap<String, u32>,
    /// Socket path as listed -> bitmask of rules gating it.
    pub sockets: BTreeMap<PathBuf, u32>,
    /// TCP endpoint -> bitmask of rules gating it.
    pub hosts: BTreeMap<HostKey, u32>,
    pub warnings: Vec<String>,
}

impl Resolved {
    /// Bit L set when some rule names a cgroup at level L (the root is level 0).
    pub fn cgroup_levels(&self) -> u32 {
        self.cgroups.keys().fold(0, |levels, path| levels | 1 << path.split('/').skip(1).count())
    }
}

impl Policy {
    /// Resolves user names to uids and binary paths to files, from what discovery found on
    /// this system (see [`crate::discovery::discover`]); nothing here looks at the system.
    /// An unknown user is an error (a typo must not silently restrict nobody); a missing
    /// binary is a warning, but a rule with no binary found at all is an error.
    pub fn resolve(&self, discovery: &Discovery) -> Result<Resolved, PolicyError> {
        let mut resolved = Resolved {
            users: BTreeMap::new(),
            binaries: BTreeMap::new(),
            cgroups: BTreeMap::new(),
            sockets: BTreeMap::new(),
            hosts: BTreeMap::new(),
            warnings: Vec::new(),
        };
        for (index, rule) in self.rules.iter().enumerate() {
            let bit = 1u32 << index;
            self.resolve_users(rule, bit, discovery, &mut resolved)?;
            for (cgroup, _) in &rule.cgroups {
                *resolved.cgroups.entry(cgroup.clone()).or_default() |= bit;
            }
            for socket in &rule.sockets {
                *resolved.sockets.entry(socket.clone()).or_default() |= bit;
            }
            for host in &rule.hosts {
                *resolved.hosts.entry(*host).or_default() |= bit;
            }
            self.resolve_binaries(rule, bit, discovery, &mut resolved)?;
        }
        Ok(resolved)
    }

    fn resolve_error(&self, place: Option<Place>, message: String) -> PolicyError {
        PolicyError { file: self.source.clone(), position: place.map(|p| (p.line, p.col)), message }
    }

    /// Adds `rule` (bit `bit`) to the uid of each of its users.
    fn resolve_users(
        &self,
        rule: &Rule,
        bit: u32,
        discovery: &Discovery,
        resolved: &mut Resolved,
    ) -> Result<(), PolicyError> {
        for (user, place) in &rule.users {
            let uid = match user {
                UserSpec::Uid(uid) => *uid,
                UserSpec::Name(name) => discovery.uids.get(name).copied().ok_or_else(|| {
                    self.resolve_error(Some(*place), format!("rule {:?}: unknown user {name:?}", rule.name))
                })?,
            };
            let rules = resolved.users.entry(uid).or_default();
            // The kernel admits a gated identity to one gate only (`other_gate`): under two
            // gated rules it would reach no docker API at all, a silent loss of all its work.
            if rule.api_gate
                && let Some(other) = self
                    .rules
                    .iter()
                    .enumerate()
                    .find(|(i, r)| 1 << i != bit && *rules & (1 << i) != 0 && r.api_gate)
            {
                return Err(self.resolve_error(
                    Some(*place),
                    format!(
                        "rule {:?}: user {user} (uid {uid}) is also under rule {:?}, and both have the API gate: \
                         an identity reaches docker through one gate only, so it would get none; \
                         merge the two rules or set api_gate = false on one",
                        rule.name, other.1.name
                    ),
                ));
            }
            *rules |= bit;
        }
        Ok(())
    }

    /// Adds `rule` (bit `bit`) to each file its binaries resolve to: those it lists, or
    /// without `binaries`, every docker client discovery found.
    fn resolve_binaries(
        &self,
        rule: &Rule,
        bit: u32,
        discovery: &Discovery,
        resolved: &mut Resolved,
    ) -> Result<(), PolicyError> {
        // (path, profile, place, counts as "docker found").
        let candidates: Vec<(&Path, u32, Option<Place>, bool)> = match &rule.binaries {
            Some(list) => list.iter().map(|b| (b.path.as_path(), b.profile, Some(b.place), true)).collect(),
            None => discovery
                .docker_search
                .iter()
                .map(|c| (c.path.as_path(), c.profile, None, c.counts))
                .collect(),
        };
        let mut found = 0;
        for (path, profile, place, counts) in candidates {
            let Some(target) = discovery.files.get(path) else {
                if let Some(place) = place {
                    resolved.warnings.push(format!(
                        "{}:{}:{}: rule {:?}: binary {} not found, skipped",
                        self.source,
                        place.line,
                        place.col,
                        rule.name,
                        path.display()
                    ));
                }
                continue;
            };
            found += counts as usize;
            let entry = resolved.binaries.entry(target.clone()).or_insert((0, profile));
            if entry.1 != profile {
                return Err(self.resolve_error(
                    place,
                    format!(
                        "rule {:?}: {} is listed as a {} client here and as a {} client elsewhere",
                        rule.name,
                        target.display(),
                        crate::grammar::profile_name(profile),
                        crate::grammar::profile_name(entry.1)
                    ),
                ));
            }
            entry.0 |= bit;
        }
        if found == 0 {
            let what = match &rule.binaries {
                Some(_) => "none of its binaries exists".to_string(),
                None => format!(
                    "no docker binary found in PATH or in {} (install docker, or list its path in the \
                     rule's binaries)",
                    USUAL_DOCKER_DIRS.join(", ")
                ),
            };
            return Err(self.resolve_error(
                rule.binaries.as_ref().and_then(|b| b.first().map(|b| b.place)),
                format!("rule {:?}: {what}", rule.name),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        compile::rule_configs,
        discovery::{Candidate, System, discover},
    };

    /// Discovery on `system`, then resolution: what the daemon does.
    trait ResolveOn {
        fn resolve_on(&self, system: &dyn System) -> Result<Resolved, PolicyError>;
    }

    impl ResolveOn for Policy {
        fn resolve_on(&self, system: &dyn System) -> Result<Resolved, PolicyError> {
            self.resolve(&discover(self, system))
        }
    }

    fn node(path: &str) -> u32 {
        grammar::node_by_path(path).unwrap_or_else(|| panic!("no node {path}"))
    }

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse("policy.toml", text)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn default_policy_is_the_seed_blacklist() {
        let policy = Policy::default_policy();
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.rules.len(), 1);
        let rule = &policy.rules[0];
        assert_eq!(rule.kind, ListKind::Deny);
        assert!(rule.binaries.is_none());
        assert_eq!(rule.users[0].0, UserSpec::Name("ai-worker".into()));
        let paths: Vec<_> = rule.commands.iter().map(|&id| grammar::node_path(id)).collect();
        let seed = [
            "container exec",
            "container cp",
            "container commit",
            "container diff",
            "container export",
            "image import",
            "image load",
            "image save",
            "container attach",
            "image push",
            "image tag",
        ];
        assert_eq!(paths[..seed.len()], seed);
        // Every spelling of a seed command is denied: the compiled bitmap covers them.
        let config = &rule_configs(&policy)[0];
        for path in [
            "container exec",
            "compose exec",
            "compose cp",
            "image push",
            "compose push",
            "system dial-stdio",
        ] {
            assert!(config.has_command(node(path)), "{path} is not denied");
        }
        for path in
            ["container ls", "compose ps", "container run", "image ls", "network create", "compose up"]
        {
            assert!(!config.has_command(node(path)), "{path} is denied");
        }
    }

    #[test]
    fn full_example_parses() {
        let policy = parse(
            r#"
mode = "audit"

[[rule]]
name = "ai-worker-docker"
users = ["ai-worker", 1002, "1003"]
binaries = ["/usr/bin/docker", "/run/current-system/sw/bin/docker"]
deny = ["exec", "cp"]
"#,
        )
        .unwrap();
        assert_eq!(policy.mode, Mode::Audit);
        let rule = &policy.rules[0];
        let users: Vec<_> = rule.users.iter().map(|(u, _)| u.clone()).collect();
        assert_eq!(users, [UserSpec::Name("ai-worker".into()), UserSpec::Uid(1002), UserSpec::Uid(1003)]);
        assert_eq!(rule.binaries.as_ref().unwrap().len(), 2);
        let config = &rule_configs(&policy)[0];
        assert!(config.is_audit());
        assert!(config.has_command(node("container exec")));
        assert!(!config.has_command(node("container ls")));
    }

    #[test]
    fn errors_carry_file_line_and_column() {
        let text = "mode = \"enforce\"\n\n[[rule]]\nname = \"r\"\nusers = [\"ai-worker\"]\ndeny = [\"exec\", \"exce\"]\n";
        assert_eq!(err(text), "policy.toml:6:17: unknown docker command \"exce\"");
        assert_eq!(
            err("mode = \"strict\"\n"),
            "policy.toml:1:8: unknown mode \"strict\": expected \"enforce\" or \"audit\""
        );
        let syntax = err("[[rule]]\nname = \"r\nusers = []\n");
        assert!(syntax.starts_with("policy.toml:2:"), "{syntax}");
        let unknown_field =
            err("[[rule]]\nname = \"r\"\nusers = [\"u\"]\ndeny = [\"exec\"]\nbinary = [\"/x\"]\n");
        assert!(unknown_field.starts_with("policy.toml:5:1: unknown field `binary`"), "{unknown_field}");
        let wrong_type = err("[[rule]]\nname = \"r\"\nusers = \"ai-worker\"\ndeny = [\"exec\"]\n");
        assert!(wrong_type.starts_with("policy.toml:3:9:"), "{wrong_type}");
    }

    #[test]
    fn rule_shape_is_checked() {
        assert!(err("").contains("no [[rule]]"));
        assert!(err("[[rule]]\nname = \"r\"\nusers = [\"u\"]\n").contains("neither deny nor allow"));
        assert!(
            err("[[rule]]\nname = \"r\"\nusers = [\"u\"]\ndeny = []\nallow = [\"ps\"]\n")
                .starts_with("policy.toml:5:9: rule \"r\" has both deny and allow")
        );
        assert!(err("[[rule]]\nname = \"r\"\nusers = []\ndeny = []\n").contains("users is empty"));
        assert!(
            err("[[rule]]\nname = \"r\"\nusers = [\"u\"]\nbinaries = [\"docker\"]\ndeny = []\n")
                .contains("is not absolute")
        );
        assert!(err("[[rule]]\nname = \"r\"\nusers = [-1]\ndeny = []\n").contains("invalid uid -1"));
        let dup = "[[rule]]\nname = \"r\"\nusers = [\"u\"]\ndeny = []\n[[rule]]\nname = \"r\"\nusers = [\"v\"]\ndeny = []\n";
        assert_eq!(err(dup), "policy.toml:6:8: duplicate rule name \"r\" (first at line 2)");
    }

    #[test]
    fn allow_list_compiles_to_allow_flag() {
        let policy = parse("[[rule]]\nname = \"r\"\nusers = [7]\nallow = [\"ps\", \"version\"]\n").unwrap();
        let config = rule_configs(&policy)[0];
        assert!(config.is_allow_list());
        assert!(!config.is_audit());
        assert!(config.has_command(node("container ls")));
    }

    #[test]
    fn entries_are_command_paths() {
        let policy = parse(
            "[[rule]]\nname = \"r\"\nusers = [7]\ndeny = [\"network create\", \"compose exec\", \"container\"]\n",
        )
        .unwrap();
        let config = rule_configs(&policy)[0];
        assert!(config.has_command(node("network create")));
        assert!(!config.has_command(node("network ls")));
        assert!(config.has_command(node("compose exec")));
        // A group covers all its commands; naming `compose exec` does not deny `docker exec`.
        assert!(config.has_command(node("container exec")));
        assert!(config.has_command(node("container ls")));
        let only_compose = parse("[[rule]]\nname = \"r\"\nusers = [7]\ndeny = [\"compose exec\"]\n").unwrap();
        assert!(!rule_configs(&only_compose)[0].has_command(node("container exec")));
        assert_eq!(
            err("[[rule]]\nname = \"r\"\nusers = [7]\ndeny = [\"network frobnicate\"]\n"),
            "policy.toml:4:9: unknown docker command \"network frobnicate\""
        );
    }

    #[test]
    fn binaries_carry_their_client() {
        let policy = parse(
            "[[rule]]\nname = \"r\"\nusers = [7]\nbinaries = [\"/usr/bin/docker\", \"/usr/bin/docker-compose\", { path = \"/opt/dc\", client = \"docker-compose\" }]\ndeny = [\"exec\"]\n",
        )
        .unwrap();
        let profiles: Vec<u32> =
            policy.rules[0].binaries.as_ref().unwrap().iter().map(|b| b.profile).collect();
        assert_eq!(profiles, [Profile::Docker as u32, Profile::Compose as u32, Profile::Compose as u32]);
        let bad = err(
            "[[rule]]\nname = \"r\"\nusers = [7]\nbinaries = [{ path = \"/x\", client = \"podman\" }]\ndeny = [\"exec\"]\n",
        );
        assert!(bad.starts_with("policy.toml:4:13: unknown client \"podman\""), "{bad}");
    }

    struct FakeSystem {
        users: Vec<(&'static str, u32)>,
        files: Vec<(&'static str, &'static str)>,
        path: Vec<&'static str>,
    }

    impl System for FakeSystem {
        fn uid_of(&self, name: &str) -> Option<u32> {
            self.users.iter().find(|(n, _)| *n == name).map(|(_, u)| *u)
        }
        fn search_path(&self) -> Vec<PathBuf> {
            self.path.iter().map(PathBuf::from).collect()
        }
        fn resolve_file(&self, path: &Path) -> Option<PathBuf> {
            self.files.iter().find(|(p, _)| Path::new(p) == path).map(|(_, t)| PathBuf::from(t))
        }
    }

    #[test]
    fn resolution_finds_docker_and_users() {
        let system = FakeSystem {
            users: vec![("ai-worker", 1001)],
            files: vec![
                ("/opt/bin/docker", "/nix/store/x-docker/bin/docker"),
                ("/usr/bin/docker", "/usr/bin/docker"),
            ],
            path: vec!["/opt/bin"],
        };
        let resolved = Policy::default_policy().resolve_on(&system).unwrap();
        assert_eq!(resolved.users, BTreeMap::from([(1001, 1)]));
        assert_eq!(
            resolved.binaries,
            BTreeMap::from([
                (PathBuf::from("/nix/store/x-docker/bin/docker"), (1, Profile::Docker as u32)),
                (PathBuf::from("/usr/bin/docker"), (1, Profile::Docker as u32))
            ])
        );
        // docker-compose next to docker, and the compose plugin, are vetted too.
        let system = FakeSystem {
            users: vec![("ai-worker", 1001)],
            files: vec![
                ("/usr/bin/docker", "/usr/bin/docker"),
                ("/usr/bin/docker-compose", "/usr/bin/docker-compose"),
                (
                    "/usr/libexec/docker/cli-plugins/docker-compose",
                    "/usr/libexec/docker/cli-plugins/docker-compose",
                ),
                (
                    "/usr/libexec/docker/cli-plugins/docker-buildx",
                    "/usr/libexec/docker/cli-plugins/docker-buildx",
                ),
            ],
            path: vec![],
        };
        let resolved = Policy::default_policy().resolve_on(&system).unwrap();
        // buildx reads like the docker CLI (`docker-buildx buildx build ...`).
        assert_eq!(
            resolved.binaries.get(Path::new("/usr/libexec/docker/cli-plugins/docker-buildx")),
            Some(&(1, Profile::Docker as u32))
        );
        assert_eq!(
            resolved.binaries.get(Path::new("/usr/bin/docker-compose")),
            Some(&(1, Profile::Compose as u32))
        );
        // nixpkgs: bin/docker wraps libexec/docker/docker, which is vetted too.
        let nix = FakeSystem {
            users: vec![("ai-worker", 1001)],
            files: vec![
                ("/run/current-system/sw/bin/docker", "/nix/store/abc-docker/bin/docker"),
                (
                    "/nix/store/abc-docker/libexec/docker/docker",
                    "/nix/store/abc-docker/libexec/docker/docker",
                ),
            ],
            path: vec![],
        };
        let resolved_nix = Policy::default_policy().resolve_on(&nix).unwrap();
        assert_eq!(
            resolved_nix.binaries.keys().collect::<Vec<_>>(),
            [
                Path::new("/nix/store/abc-docker/bin/docker"),
                Path::new("/nix/store/abc-docker/libexec/docker/docker")
            ]
        );
        assert_eq!(
            resolved.binaries.get(Path::new("/usr/libexec/docker/cli-plugins/docker-compose")),
            Some(&(1, Profile::Compose as u32))
        );
    }

    #[test]
    fn resolution_errors_and_warnings() {
        let system =
            FakeSystem { users: vec![], files: vec![("/usr/bin/docker", "/usr/bin/docker")], path: vec![] };
        let unknown = Policy::default_policy().resolve_on(&system).unwrap_err().to_string();
        assert!(unknown.contains("unknown user \"ai-worker\""), "{unknown}");

        let text = "[[rule]]\nname = \"r\"\nusers = [5]\nbinaries = [\"/usr/bin/docker\", \"/nope/docker\"]\ndeny = [\"exec\"]\n";
        let resolved = parse(text).unwrap().resolve_on(&system).unwrap();
        assert_eq!(resolved.warnings.len(), 1);
        assert!(resolved.warnings[0].contains("policy.toml:4:32"), "{:?}", resolved.warnings);

        let none = "[[rule]]\nname = \"r\"\nusers = [5]\nbinaries = [\"/nope/docker\"]\ndeny = [\"exec\"]\n";
        let message = parse(none).unwrap().resolve_on(&system).unwrap_err().to_string();
        assert_eq!(message, "policy.toml:4:13: rule \"r\": none of its binaries exists");

        let empty = FakeSystem { users: vec![("ai-worker", 1)], files: vec![], path: vec![] };
        let message = Policy::default_policy().resolve_on(&empty).unwrap_err().to_string();
        assert!(message.contains("no docker binary found in PATH"), "{message}");
    }

    fn candidate(path: &str, profile: u32, counts: bool) -> Candidate {
        Candidate { path: PathBuf::from(path), profile, counts }
    }

    #[test]
    fn resolve_is_a_function_of_the_discovery() {
        let policy = parse(
            "[[rule]]\nname = \"r\"\nusers = [\"ai-worker\", 7]\nbinaries = [\"/usr/bin/docker\", \"/opt/missing\"]\ndeny = [\"exec\"]\n\
             [[rule]]\nname = \"s\"\nusers = [\"ai-worker\"]\ndeny = [\"cp\"]\napi_gate = false\n",
        )
        .unwrap();
        let discovery = Discovery {
            uids: BTreeMap::from([("ai-worker".into(), 1001)]),
            files: BTreeMap::from([
                ("/usr/bin/docker".into(), "/usr/bin/docker".into()),
                ("/opt/bin/docker".into(), "/nix/store/x/bin/docker".into()),
                ("/opt/bin/docker-compose".into(), "/nix/store/x/bin/docker-compose".into()),
            ]),
            docker_search: vec![
                candidate("/opt/bin/docker", Profile::Docker as u32, true),
                candidate("/nowhere/docker", Profile::Docker as u32, true),
                candidate("/opt/bin/docker-compose", Profile::Compose as u32, false),
            ],
        };
        let resolved = policy.resolve(&discovery).unwrap();
        assert_eq!(resolved.users, BTreeMap::from([(7, 0b01), (1001, 0b11)]));
        assert_eq!(
            resolved.binaries,
            BTreeMap::from([
                (PathBuf::from("/nix/store/x/bin/docker"), (0b10, Profile::Docker as u32)),
                (PathBuf::from("/nix/store/x/bin/docker-compose"), (0b10, Profile::Compose as u32)),
                (PathBuf::from("/usr/bin/docker"), (0b01, Profile::Docker as u32)),
            ])
        );
        let sockets: BTreeMap<PathBuf, u32> =
            DEFAULT_SOCKETS.iter().map(|s| (PathBuf::from(s), 0b11)).collect();
        assert_eq!(resolved.sockets, sockets);
        // Only a listed binary that is missing is worth a warning, not a searched place.
        assert_eq!(
            resolved.warnings,
            ["policy.toml:4:32: rule \"r\": binary /opt/missing not found, skipped"]
        );
        // The same discovery, the same answer.
        assert_eq!(policy.resolve(&discovery).unwrap(), resolved);
    }

    #[test]
    fn resolve_errors_from_the_discovery() {
        let policy = parse("[[rule]]\nname = \"r\"\nusers = [\"ai-worker\"]\ndeny = [\"exec\"]\n").unwrap();
        let docker = |files: &[(&str, &str)], search: Vec<Candidate>| Discovery {
            uids: BTreeMap::from([("ai-worker".into(), 1001)]),
            files: files.iter().map(|(p, t)| (PathBuf::from(p), PathBuf::from(t))).collect(),
            docker_search: search,
        };
        let no_user = Discovery { uids: BTreeMap::new(), ..docker(&[], vec![]) };
        assert_eq!(
            policy.resolve(&no_user).unwrap_err().to_string(),
            "policy.toml:3:10: rule \"r\": unknown user \"ai-worker\""
        );
        // A compose found without a docker is no docker.
        let compose_only = docker(
            &[("/usr/bin/docker-compose", "/usr/bin/docker-compose")],
            vec![
                candidate("/usr/bin/docker", Profile::Docker as u32, true),
                candidate("/usr/bin/docker-compose", Profile::Compose as u32, false),
            ],
        );
        let message = policy.resolve(&compose_only).unwrap_err().to_string();
        assert!(message.starts_with("policy.toml: rule \"r\": no docker binary found in PATH"), "{message}");
        // docker-compose a symlink to docker: one file, two clients.
        let one_file = docker(
            &[("/usr/bin/docker", "/usr/bin/docker"), ("/usr/bin/docker-compose", "/usr/bin/docker")],
            vec![
                candidate("/usr/bin/docker", Profile::Docker as u32, true),
                candidate("/usr/bin/docker-compose", Profile::Compose as u32, false),
            ],
        );
        assert_eq!(
            policy.resolve(&one_file).unwrap_err().to_string(),
            "policy.toml: rule \"r\": /usr/bin/docker is listed as a docker-compose client here and as a docker client elsewhere"
        );
    }

    #[test]
    fn one_identity_under_two_gated_rules_is_an_error() {
        let discovery = Discovery {
            uids: BTreeMap::from([("ai-worker".into(), 1001)]),
            files: BTreeMap::from([("/usr/bin/docker".into(), "/usr/bin/docker".into())]),
            docker_search: vec![candidate("/usr/bin/docker", Profile::Docker as u32, true)],
        };
        let two = |second: &str| {
            format!(
                "[[rule]]\nname = \"a\"\nusers = [\"ai-worker\"]\ndeny = [\"exec\"]\n\
                 [[rule]]\nname = \"b\"\nusers = [{second}]\ndeny = [\"cp\"]\n"
            )
        };
        // By name and by uid alike: the kernel would admit it to neither gate.
        for second in ["\"ai-worker\"", "1001"] {
            let message = parse(&two(second)).unwrap().resolve(&discovery).unwrap_err().to_string();
            assert_eq!(
                message,
                format!(
                    "policy.toml:7:10: rule \"b\": user {} (uid 1001) is also under rule \"a\", and both have \
                     the API gate: an identity reaches docker through one gate only, so it would get none; \
                     merge the two rules or set api_gate = false on one",
                    second.trim_matches('"')
                )
            );
        }
        // One gated rule and one without the gate, or the user twice in one rule: fine.
        let mixed = format!("{}api_gate = false\n", two("\"ai-worker\""));
        assert_eq!(parse(&mixed).unwrap().resolve(&discovery).unwrap().users, BTreeMap::from([(1001, 0b11)]));
        let twice = "[[rule]]\nname = \"a\"\nusers = [\"ai-worker\", 1001]\ndeny = [\"exec\"]\n";
        assert_eq!(parse(twice).unwrap().resolve(&discovery).unwrap().users, BTreeMap::from([(1001, 0b1)]));
    }

    #[test]
    fn sockets_hosts_and_cgroups() {
        let policy = parse(
            "[[rule]]\nname = \"agent\"\ncgroups = [\"/system.slice/ai-agent.service/\"]\n\
             hosts = [\"127.0.0.1:2375\", \"[::ffff:10.0.0.1]:2376\", \"*:2377\", \"0.0.0.0:1\", \"[::]:1\"]\n\
             deny = [\"exec\"]\n",
        )
        .unwrap();
        let rule = &policy.rules[0];
        assert!(rule.users.is_empty());
        assert_eq!(rule.cgroups[0].0, "/system.slice/ai-agent.service");
        let defaults: Vec<PathBuf> = DEFAULT_SOCKETS.iter().map(PathBuf::from).collect();
        assert_eq!(rule.sockets, defaults);
        let hosts: Vec<String> = rule.hosts.iter().map(host_text).collect();
        // The unspecified address is a wildcard listener's: every address of the port.
        assert_eq!(hosts, ["127.0.0.1:2375", "10.0.0.1:2376", "*:2377", "*:1", "*:1"]);
        let sockets =
            parse("[[rule]]\nname = \"r\"\nusers = [1]\nsockets = [\"/srv/d.sock\"]\ndeny = [\"exec\"]\n")
                .unwrap();
        assert_eq!(sockets.rules[0].sockets, [PathBuf::from("/srv/d.sock")]);
    }

    #[test]
    fn api_gate_keys() {
        let base = "[[rule]]\nname = \"agent\"\nusers = [1]\ndeny = [\"exec\"]\n";
        // The gate is on unless the rule opts out.
        let default = parse(base).unwrap();
        assert!(default.rules[0].api_gate);
        assert_eq!(default.rules[0].api_clients, ApiClients::Vetted);
        assert!(parse(&format!("{base}api_gate = true\n")).unwrap().rules[0].api_gate);
        let off = parse(&format!("{base}api_gate = false\n")).unwrap();
        assert!(!off.rules[0].api_gate);
        let on = parse(&format!("{base}api_clients = \"any\"\nbind_paths = [\"/home/ai-worker/work\"]\n"))
            .unwrap();
        let rule = &on.rules[0];
        assert!(rule.api_gate);
        assert_eq!(rule.api_clients, ApiClients::Any);
        assert_eq!(rule.bind_paths, [PathBuf::from("/home/ai-worker/work")]);
        assert_eq!(
            err(&format!("{base}api_clients = \"some\"\n")),
            "policy.toml:5:15: unknown api_clients \"some\": expected \"vetted\" or \"any\""
        );
        for bad in ["relative/dir", "/", "/home/../etc", "/home/./x", "/home//x", "/home/x/"] {
            let message = err(&format!("{base}bind_paths = [\"{bad}\"]\n"));
            assert!(message.starts_with("policy.toml:5:15: bind path"), "{bad}: {message}");
        }
        // The gate's keys on a rule without the gate would silently do nothing.
        assert_eq!(
            err(&format!("{base}api_gate = false\nbind_paths = [\"/srv\"]\n")),
            "policy.toml:6:14: rule \"agent\": api_clients, bind_paths, api_powers, own_only, protect and \
             see are the gate's: remove api_gate = false"
        );
        // The rule's name is its gate socket's file name; a rule without the gate may use any.
        let slash = err("[[rule]]\nname = \"a/b\"\nusers = [1]\ndeny = [\"exec\"]\n");
        assert!(
            slash.starts_with("policy.toml:2:8: rule \"a/b\": the name is its API gate socket's"),
            "{slash}"
        );
        assert!(slash.ends_with("or set api_gate = false"), "{slash}");
        parse("[[rule]]\nname = \"a/b\"\nusers = [1]\ndeny = [\"exec\"]\napi_gate = false\n").unwrap();
        let power = err(&format!("{base}api_powers = [\"root\"]\n"));
        assert!(
            power.starts_with("policy.toml:5:15: unknown api power \"root\": expected one of"),
            "{power}"
        );
    }

    #[test]
    fn bad_sockets_hosts_and_cgroups_say_where() {
        let rule = |extra: &str| format!("[[rule]]\nname = \"r\"\nusers = [1]\n{extra}\ndeny = [\"exec\"]\n");
        assert_eq!(
            err(&rule("hosts = [\"localhost:2375\"]")),
            "policy.toml:4:10: invalid host \"localhost:2375\": expected IP:PORT, [IPv6]:PORT or *:PORT"
        );
        assert_eq!(err(&rule("sockets = [\"docker.sock\"]")).split(": ").next(), Some("policy.toml:4:12"));
        assert!(err(&rule("sockets = []")).contains("sockets is empty"));
        assert!(
            err(&rule("cgroups = [\"system.slice\"]"))
                .starts_with("policy.toml:4:12: cgroup \"system.slice\"")
        );
        assert!(err(&rule("cgroups = [\"/a/../b\"]")).contains("not an absolute cgroup path"));
        let deep = format!("cgroups = [\"{}\"]", "/x".repeat(16));
        assert!(err(&rule(&deep)).contains("nested deeper than 15 levels"));
        assert_eq!(
            err("[[rule]]\nname = \"r\"\ndeny = [\"exec\"]\n"),
            "policy.toml:2:8: rule \"r\" names neither users nor cgroups: it would restrict nobody"
        );
    }

    #[test]
    fn own_only_protect_and_see() {
        let base = "[[rule]]\nname = \"agent\"\nusers = [1]\ndeny = [\"commit\"]\n";
        let rule = parse(&format!(
            "{base}own_only = [\"exec\", \"logs\"]\nprotect = [\"gitea\", \"label=secret\", \
             \"label=tier=db\"]\nsee = \"own\"\n"
        ))
        .unwrap()
        .rules
        .remove(0);
        assert_eq!(rule.own_only, [node("container exec"), node("container logs")]);
        assert_eq!(
            rule.protect,
            [
                Protect::Name("gitea".into()),
                Protect::Label("secret".into(), None),
                Protect::Label("tier".into(), Some("db".into()))
            ]
        );
        assert!(rule.see_own);
        assert!(!parse(base).unwrap().rules[0].see_own);
        // The kernel lets own_only commands through (deny list: they are simply not denied).
        let config = rule_configs(&parse(&format!("{base}own_only = [\"exec\"]\n")).unwrap())[0];
        assert!(!config.has_command(node("container exec")));
        // In an allow list they are added to what the kernel admits.
        let allow =
            parse("[[rule]]\nname = \"a\"\nusers = [1]\nallow = [\"ps\"]\nown_only = [\"exec\"]\n").unwrap();
        assert!(allow.rules[0].commands.contains(&node("container exec")));
        assert!(rule_configs(&allow)[0].has_command(node("container exec")));
        // Errors, at the entry.
        assert_eq!(
            err(&format!("{base}own_only = [\"exec\", \"frobnicate\"]\n")),
            "policy.toml:5:21: unknown docker command \"frobnicate\""
        );
        assert_eq!(
            err("[[rule]]\nname = \"agent\"\nusers = [1]\ndeny = [\"container\"]\nown_only = [\"exec\"]\n"),
            "policy.toml:5:13: rule \"agent\": own_only \"exec\" is denied by the deny entry \"container\": \
             remove one of them"
        );
        assert_eq!(
            err(&format!("{base}see = \"some\"\n")),
            "policy.toml:5:7: unknown see \"some\": expected \"all\" or \"own\""
        );
        for bad in ["", "label=", "label==x", "-x", "a/b", "a b"] {
            let message = err(&format!("{base}protect = [\"{bad}\"]\n"));
            assert!(message.starts_with("policy.toml:5:12: protect entry"), "{bad:?}: {message}");
        }
        for key in ["own_only = [\"exec\"]", "protect = [\"gitea\"]", "see = \"own\""] {
            let message = err(&format!("{base}api_gate = false\n{key}\n"));
            assert!(message.starts_with("policy.toml:6:"), "{key}: {message}");
            assert!(message.ends_with("are the gate's: remove api_gate = false"), "{key}: {message}");
        }
    }

    #[test]
    fn protect_matches_names_and_labels() {
        let labels: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"tier":"db","secret":""}"#).unwrap();
        let none = serde_json::Map::new();
        assert!(Protect::Name("gitea".into()).matches("/gitea", &none));
        assert!(Protect::Name("gitea".into()).matches("gitea", &none));
        assert!(!Protect::Name("gitea".into()).matches("/gitea2", &none));
        assert!(Protect::Label("secret".into(), None).matches("x", &labels));
        assert!(Protect::Label("tier".into(), Some("db".into())).matches("x", &labels));
        assert!(!Protect::Label("tier".into(), Some("web".into())).matches("x", &labels));
        assert!(!Protect::Label("tier".into(), None).matches("x", &none));
    }

    #[test]
    fn hardened_policy_parses_and_compiles() {
        let policy = Policy::parse("hardened-policy.toml", HARDENED_POLICY).unwrap();
        assert_eq!(policy.mode, Mode::Enforce);
        let rule = &policy.rules[0];
        assert_eq!(rule.name, "ai-worker-docker");
        assert!(rule.api_gate);
        assert!(rule.see_own);
        assert_eq!(rule.protect, [Protect::Name("gitea".into())]);
        assert_eq!(rule.own_only.len(), 19);
        let config = rule_configs(&policy)[0];
        // own_only reaches the gate (the kernel allows it); deny stays denied in the kernel.
        for allowed in ["container exec", "container cp", "container logs", "container inspect"] {
            assert!(!config.has_command(node(allowed)), "{allowed}");
        }
        for denied in ["container commit", "image push", "image tag", "system dial-stdio"] {
            assert!(config.has_command(node(denied)), "{denied}");
        }
    }
}
