//! The policy file: parsing with exact error positions, validation, and compilation into
//! what the kernel maps hold.
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
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

use enforcer_common::{
    abi::{HostKey, MAX_CGROUP_LEVEL, MAX_RULES, Profile, RuleConfig, RuleKind, SOCKET_NAME_LEN, rule_flag},
    grammar,
};
use serde::Deserialize;
use toml::Spanned;

/// The policy used when neither `--config` nor the system policy file exists.
pub const DEFAULT_POLICY: &str = include_str!("default-policy.toml");
/// Name shown for the embedded default in messages.
pub const DEFAULT_POLICY_NAME: &str = "<embedded default policy>";
/// The system policy file.
pub const SYSTEM_POLICY_PATH: &str = "/etc/enforcer/policy.toml";

/// The docker API sockets a rule gates when it does not list `sockets`.
pub const DEFAULT_SOCKETS: &[&str] = &["/var/run/docker.sock", "/run/docker.sock"];

/// Where docker CLI plugins live; a rule without `binaries` vets the compose and buildx
/// plugins found there (the docker CLI runs them as `docker-compose [GLOBAL OPTIONS]
/// compose ...` and `docker-buildx buildx ...`).
pub const PLUGIN_DIRS: &[&str] = &[
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
    "/run/current-system/sw/libexec/docker/cli-plugins",
];

/// Where docker is looked for when a rule lists no binaries: PATH, then these.
pub const USUAL_DOCKER_DIRS: &[&str] = &[
    "/run/current-system/sw/bin",
    "/nix/var/nix/profiles/default/bin",
    "/usr/local/bin",
    "/usr/bin",
    "/bin",
    "/usr/local/sbin",
    "/usr/sbin",
    "/snap/bin",
];

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
        v4 => v4,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    users: Option<Spanned<Vec<Spanned<RawUser>>>>,
    cgroups: Option<Spanned<Vec<Spanned<String>>>>,
    sockets: Option<Spanned<Vec<Spanned<String>>>>,
    hosts: Option<Spanned<Vec<Spanned<String>>>>,
    binaries: Option<Spanned<Vec<Spanned<RawBinary>>>>,
    deny: Option<Spanned<Vec<Spanned<String>>>>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
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

fn digest(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
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
        let error = |span: Option<Range<usize>>, message: String| {
            let position = span.map(|s| {
                let p = place_of(text, s.start);
                (p.line, p.col)
            });
            PolicyError { file: source.to_string(), position, message }
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            // toml's message repeats the position in its own layout; keep its first line.
            let message = e.message().lines().next().unwrap_or("invalid TOML").to_string();
            error(e.span(), message)
        })?;

        let mode = match &raw.mode {
            None => Mode::Enforce,
            Some(mode) => match mode.get_ref().as_str() {
                "enforce" => Mode::Enforce,
                "audit" => Mode::Audit,
                other => {
                    return Err(error(
                        Some(mode.span()),
                        format!("unknown mode {other:?}: expected \"enforce\" or \"audit\""),
                    ));
                }
            },
        };
        if raw.rule.is_empty() {
            return Err(error(None, "the policy has no [[rule]]: it would restrict nobody".into()));
        }
        if raw.rule.len() > MAX_RULES {
            return Err(error(
                Some(raw.rule[MAX_RULES].span()),
                format!("too many rules: at most {MAX_RULES}"),
            ));
        }

        let mut rules = Vec::new();
        let mut names = BTreeMap::new();
        for spanned in &raw.rule {
            let rule = spanned.get_ref();
            let name = rule.name.get_ref().trim().to_string();
            if name.is_empty() {
                return Err(error(Some(rule.name.span()), "rule name is empty".into()));
            }
            if let Some(first) = names.insert(name.clone(), rule.name.span()) {
                let first = place_of(text, first.start);
                return Err(error(
                    Some(rule.name.span()),
                    format!("duplicate rule name {name:?} (first at line {})", first.line),
                ));
            }

            let mut users = Vec::new();
            let no_users: Vec<Spanned<RawUser>> = Vec::new();
            let raw_users = rule.users.as_ref().map_or(&no_users, |u| u.get_ref());
            if let Some(list) = &rule.users
                && list.get_ref().is_empty()
            {
                return Err(error(Some(list.span()), format!("rule {name:?}: users is empty")));
            }
            let mut cgroups = Vec::new();
            for cgroup in rule.cgroups.iter().flat_map(|c| c.get_ref()) {
                let path = cgroup.get_ref().trim_end_matches('/');
                let levels = path.split('/').skip(1).count() as u32;
                if !path.starts_with('/')
                    || path.split('/').skip(1).any(|c| c.is_empty() || c == "." || c == "..")
                {
                    return Err(error(
                        Some(cgroup.span()),
                        format!(
                            "cgroup {path:?} is not an absolute cgroup path such as \"/system.slice/ai-agent.service\""
                        ),
                    ));
                }
                if levels > MAX_CGROUP_LEVEL - 1 {
                    return Err(error(
                        Some(cgroup.span()),
                        format!("cgroup {path:?} is nested deeper than {} levels", MAX_CGROUP_LEVEL - 1),
                    ));
                }
                cgroups.push((path.to_string(), place_of(text, cgroup.span().start)));
            }
            if let Some(list) = &rule.cgroups
                && list.get_ref().is_empty()
            {
                return Err(error(Some(list.span()), format!("rule {name:?}: cgroups is empty")));
            }
            if raw_users.is_empty() && cgroups.is_empty() {
                return Err(error(
                    Some(rule.name.span()),
                    format!("rule {name:?} names neither users nor cgroups: it would restrict nobody"),
                ));
            }
            let sockets = match &rule.sockets {
                None => DEFAULT_SOCKETS.iter().map(PathBuf::from).collect(),
                Some(list) => {
                    if list.get_ref().is_empty() {
                        return Err(error(
                            Some(list.span()),
                            format!(
                                "rule {name:?}: sockets is empty (omit it for the default {DEFAULT_SOCKETS:?})"
                            ),
                        ));
                    }
                    let mut sockets = Vec::new();
                    for socket in list.get_ref() {
                        let path = socket.get_ref();
                        if !path.starts_with('/') || path.len() >= SOCKET_NAME_LEN {
                            return Err(error(
                                Some(socket.span()),
                                format!(
                                    "socket {path:?} is not an absolute path of at most {} bytes",
                                    SOCKET_NAME_LEN - 1
                                ),
                            ));
                        }
                        sockets.push(PathBuf::from(path));
                    }
                    sockets
                }
            };
            let mut hosts = Vec::new();
            for host in rule.hosts.iter().flat_map(|h| h.get_ref()) {
                hosts.push(parse_host(host.get_ref()).map_err(|message| error(Some(host.span()), message))?);
            }
            for user in raw_users {
                let place = place_of(text, user.span().start);
                let spec = match user.get_ref() {
                    RawUser::Uid(uid) => match u32::try_from(*uid) {
                        Ok(uid) if uid != u32::MAX => UserSpec::Uid(uid),
                        _ => {
                            return Err(error(Some(user.span()), format!("invalid uid {uid}")));
                        }
                    },
                    RawUser::Name(n) if n.is_empty() => {
                        return Err(error(Some(user.span()), "empty user name".into()));
                    }
                    RawUser::Name(n) => match n.parse::<u32>() {
                        Ok(uid) => UserSpec::Uid(uid),
                        Err(_) => UserSpec::Name(n.clone()),
                    },
                };
                users.push((spec, place));
            }

            let binaries = match &rule.binaries {
                None => None,
                Some(list) => {
                    if list.get_ref().is_empty() {
                        return Err(error(
                            Some(list.span()),
                            format!("rule {name:?}: binaries is empty (omit it to search for docker)"),
                        ));
                    }
                    let mut binaries = Vec::new();
                    for entry in list.get_ref() {
                        let (path, profile) = match entry.get_ref() {
                            RawBinary::Path(path) => (PathBuf::from(path), profile_for_path(Path::new(path))),
                            RawBinary::Table(table) => {
                                let profile = crate::grammar::profile_by_name(&table.client).ok_or_else(|| {
                                    error(
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
                            return Err(error(
                                Some(entry.span()),
                                format!("binary path {:?} is not absolute", path.display().to_string()),
                            ));
                        }
                        binaries.push(Binary { path, profile, place: place_of(text, entry.span().start) });
                    }
                    Some(binaries)
                }
            };

            let (kind, list) = match (&rule.deny, &rule.allow) {
                (Some(deny), None) => (ListKind::Deny, deny),
                (None, Some(allow)) => (ListKind::Allow, allow),
                (Some(_), Some(allow)) => {
                    return Err(error(
                        Some(allow.span()),
                        format!("rule {name:?} has both deny and allow: give one"),
                    ));
                }
                (None, None) => {
                    return Err(error(
                        Some(spanned.span()),
                        format!("rule {name:?} has neither deny nor allow"),
                    ));
                }
            };
            let mut commands = Vec::new();
            for command in list.get_ref() {
                let entry = command.get_ref().trim();
                match grammar::resolve_entry(crate::grammar::get(), entry) {
                    Some(id) => {
                        if !commands.contains(&id) {
                            commands.push(id);
                        }
                    }
                    None => {
                        return Err(error(Some(command.span()), format!("unknown docker command {entry:?}")));
                    }
                }
            }
            rules.push(Rule { name, users, binaries, kind, commands, cgroups, sockets, hosts });
        }
        Ok(Policy { source: source.to_string(), digest: digest(text), mode, rules })
    }

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

    /// The kernel's view of each rule, in rule order. A rule that denies any command also
    /// denies the raw API tunnels ([`RAW_API_TUNNELS`]), listed or not: through one, every
    /// denied request reaches the daemon from a client the kernel cannot judge.
    pub fn rule_configs(&self) -> Vec<RuleConfig> {
        self.rules
            .iter()
            .map(|rule| {
                let mut config = RuleConfig::default();
                let denies_anything = rule.kind == ListKind::Allow || !rule.commands.is_empty();
                for node in 1..grammar::node_count() {
                    let listed = rule.lists(node);
                    let tunnel = denies_anything && is_raw_tunnel(node);
                    // Deny list: the bit denies. Allow list: the bit allows.
                    let bit = match rule.kind {
                        ListKind::Deny => listed || tunnel,
                        ListKind::Allow => listed && !tunnel,
                    };
                    if bit {
                        config.set_command(node);
                    }
                }
                config.flags = match rule.kind {
                    ListKind::Deny => RuleKind::DenyList as u32,
                    ListKind::Allow => RuleKind::AllowList as u32,
                };
                if self.mode == Mode::Audit {
                    config.flags |= rule_flag::AUDIT;
                }
                config
            })
            .collect()
    }
}

/// Commands that pipe raw requests to the docker API (`docker system dial-stdio`, which
/// the CLI's `ssh://` connection helper also runs) or to its BuildKit endpoint
/// (`buildx dial-stdio`, through which a BuildKit client exports with `push=true`, past
/// the `--push` power flag): denied by every rule that denies anything, since each denied
/// request could pass through them.
pub const RAW_API_TUNNELS: &[&str] = &["system dial-stdio", "buildx dial-stdio"];

/// Whether `node` is one of the [`RAW_API_TUNNELS`] (or a spelling of one).
fn is_raw_tunnel(node: u32) -> bool {
    RAW_API_TUNNELS.iter().filter_map(|path| grammar::node_by_path(path)).any(|t| grammar::covers(t, node))
}

/// Whether `node` is a raw API tunnel that `rule` does not deny itself (denied because the
/// rule denies something else), for `enforcer check` to say why.
pub fn implicit_tunnel(rule: &Rule, node: u32) -> bool {
    is_raw_tunnel(node) && !(rule.kind == ListKind::Deny && rule.lists(node))
}

impl Rule {
    /// Whether one of the rule's command entries covers `node` (see `grammar::covers`).
    fn lists(&self, node: u32) -> bool {
        self.commands.iter().any(|&entry| grammar::covers(entry, node))
    }
}

/// How the system answers the questions resolution asks; the real one reads the user
/// database and the file system, tests use fakes.
pub trait System {
    fn uid_of(&self, name: &str) -> Option<u32>;
    fn search_path(&self) -> Vec<PathBuf>;
    /// The path with symlinks resolved, if it exists and is a regular file.
    fn resolve_file(&self, path: &Path) -> Option<PathBuf>;
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
    /// Resolves user names to uids and binary paths to existing files. An unknown user
    /// is an error (a typo must not silently restrict nobody); a missing binary is a
    /// warning, but a rule with no binary found at all is an error.
    pub fn resolve(&self, system: &dyn System) -> Result<Resolved, PolicyError> {
        let mut resolved = Resolved {
            users: BTreeMap::new(),
            binaries: BTreeMap::new(),
            cgroups: BTreeMap::new(),
            sockets: BTreeMap::new(),
            hosts: BTreeMap::new(),
            warnings: Vec::new(),
        };
        let error = |place: Option<Place>, message: String| PolicyError {
            file: self.source.clone(),
            position: place.map(|p| (p.line, p.col)),
            message,
        };
        for (index, rule) in self.rules.iter().enumerate() {
            let bit = 1u32 << index;
            for (user, place) in &rule.users {
                let uid = match user {
                    UserSpec::Uid(uid) => *uid,
                    UserSpec::Name(name) => system.uid_of(name).ok_or_else(|| {
                        error(Some(*place), format!("rule {:?}: unknown user {name:?}", rule.name))
                    })?,
                };
                *resolved.users.entry(uid).or_default() |= bit;
            }
            for (cgroup, _) in &rule.cgroups {
                *resolved.cgroups.entry(cgroup.clone()).or_default() |= bit;
            }
            for socket in &rule.sockets {
                *resolved.sockets.entry(socket.clone()).or_default() |= bit;
            }
            for host in &rule.hosts {
                *resolved.hosts.entry(*host).or_default() |= bit;
            }
            // (path, profile, place, counts as "docker found"): without `binaries`, every
            // docker and docker-compose in PATH and the usual places, and the compose plugin.
            let mut candidates: Vec<(PathBuf, u32, Option<Place>, bool)> = match &rule.binaries {
                Some(list) => list.iter().map(|b| (b.path.clone(), b.profile, Some(b.place), true)).collect(),
                None => {
                    let mut dirs = system.search_path();
                    dirs.extend(USUAL_DOCKER_DIRS.iter().map(PathBuf::from));
                    let mut candidates: Vec<_> =
                        dirs.iter().map(|d| (d.join("docker"), Profile::Docker as u32, None, true)).collect();
                    candidates.extend(
                        dirs.iter().map(|d| (d.join("docker-compose"), Profile::Compose as u32, None, false)),
                    );
                    candidates.extend(PLUGIN_DIRS.iter().map(|d| {
                        (Path::new(d).join("docker-compose"), Profile::Compose as u32, None, false)
                    }));
                    // `docker build` runs the buildx plugin as `docker-buildx buildx build ...`:
                    // the docker CLI's own grammar reads that argv. Unvetted, the socket gate
                    // would refuse the plugin's connection and break `docker build`.
                    candidates.extend(
                        PLUGIN_DIRS.iter().map(|d| {
                            (Path::new(d).join("docker-buildx"), Profile::Docker as u32, None, false)
                        }),
                    );
                    candidates
                }
            };
            let mut found = 0;
            let mut next = 0;
            while let Some((path, profile, place, counts)) = candidates.get(next).cloned() {
                next += 1;
                match system.resolve_file(&path) {
                    Some(target) => {
                        found += counts as usize;
                        // nixpkgs' bin/docker is a shell wrapper that runs libexec/docker/docker:
                        // a docker found without `binaries` brings its wrapped client along.
                        if rule.binaries.is_none()
                            && profile == Profile::Docker as u32
                            && counts
                            && let Some(prefix) = target.parent().and_then(Path::parent)
                        {
                            candidates.push((
                                prefix.join("libexec/docker/docker"),
                                Profile::Docker as u32,
                                None,
                                false,
                            ));
                        }
                        let entry = resolved.binaries.entry(target.clone()).or_insert((0, profile));
                        if entry.1 != profile {
                            return Err(error(
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
                    None => {
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
                    }
                }
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
                return Err(error(
                    rule.binaries.as_ref().and_then(|b| b.first().map(|b| b.place)),
                    format!("rule {:?}: {what}", rule.name),
                ));
            }
        }
        Ok(resolved)
    }
}

/// The real system.
pub struct HostSystem;

impl System for HostSystem {
    fn uid_of(&self, name: &str) -> Option<u32> {
        crate::users::uid_of(name)
    }

    fn search_path(&self) -> Vec<PathBuf> {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).filter(|p| p.is_absolute()).collect())
            .unwrap_or_default()
    }

    fn resolve_file(&self, path: &Path) -> Option<PathBuf> {
        let target = std::fs::canonicalize(path).ok()?;
        target.is_file().then_some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let config = &policy.rule_configs()[0];
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
        let config = &policy.rule_configs()[0];
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
        let config = policy.rule_configs()[0];
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
        let config = policy.rule_configs()[0];
        assert!(config.has_command(node("network create")));
        assert!(!config.has_command(node("network ls")));
        assert!(config.has_command(node("compose exec")));
        // A group covers all its commands; naming `compose exec` does not deny `docker exec`.
        assert!(config.has_command(node("container exec")));
        assert!(config.has_command(node("container ls")));
        let only_compose = parse("[[rule]]\nname = \"r\"\nusers = [7]\ndeny = [\"compose exec\"]\n").unwrap();
        assert!(!only_compose.rule_configs()[0].has_command(node("container exec")));
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
        let resolved = Policy::default_policy().resolve(&system).unwrap();
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
        let resolved = Policy::default_policy().resolve(&system).unwrap();
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
        let resolved_nix = Policy::default_policy().resolve(&nix).unwrap();
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
        let unknown = Policy::default_policy().resolve(&system).unwrap_err().to_string();
        assert!(unknown.contains("unknown user \"ai-worker\""), "{unknown}");

        let text = "[[rule]]\nname = \"r\"\nusers = [5]\nbinaries = [\"/usr/bin/docker\", \"/nope/docker\"]\ndeny = [\"exec\"]\n";
        let resolved = parse(text).unwrap().resolve(&system).unwrap();
        assert_eq!(resolved.warnings.len(), 1);
        assert!(resolved.warnings[0].contains("policy.toml:4:32"), "{:?}", resolved.warnings);

        let none = "[[rule]]\nname = \"r\"\nusers = [5]\nbinaries = [\"/nope/docker\"]\ndeny = [\"exec\"]\n";
        let message = parse(none).unwrap().resolve(&system).unwrap_err().to_string();
        assert_eq!(message, "policy.toml:4:13: rule \"r\": none of its binaries exists");

        let empty = FakeSystem { users: vec![("ai-worker", 1)], files: vec![], path: vec![] };
        let message = Policy::default_policy().resolve(&empty).unwrap_err().to_string();
        assert!(message.contains("no docker binary found in PATH"), "{message}");
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
}
