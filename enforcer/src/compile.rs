//! Compilation: a resolved policy into every entry the kernel's policy maps hold for it.
//! Pure (no system, no BPF object), so all of it is unit-tested on the host; the loader
//! ([`crate::bpf::Programs::install_policy`]) only writes a [`CompiledPolicy`] into the
//! inactive generation and flips it active.
//!
//! What the kernel learns from the running system and re-learns when it changes (socket
//! inodes, cgroup ids) is not here: see [`crate::dynamic`].

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use enforcer_common::{
    abi::{
        BinaryInfo, FileId, FileKey, GatePath, HostKey, MAX_RULES, RULE_COUNTERS, RuleConfig, RuleCounter,
        RuleKind, SOCKET_NAME_LEN, SocketNameKey, UserKey, rule_counter, rule_flag,
    },
    grammar::{self, profile_start},
};

use crate::policy::{ApiClients, ListKind, Mode, Policy, Resolved, Rule};

/// Everything the kernel's policy maps hold for one policy, not yet in a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// `RULES`: one slot per possible rule, in policy order, the unused ones zero (every
    /// slot is written, so no rule of an older policy outlives it in the generation).
    pub rules: Vec<RuleConfig>,
    /// `BINARIES`: the kernel's identity of each vetted file -> the rules vetting it and
    /// where its client's argv is read from. Paths that are one file (hard links) are one
    /// entry, their rules added up.
    pub binaries: BTreeMap<FileId, BinaryInfo>,
    /// `USERS`: uid -> the rules naming it.
    pub users: BTreeMap<u32, u32>,
    /// `HOSTS`: TCP endpoint (generation 0) -> the rules gating it.
    pub hosts: BTreeMap<HostKey, u32>,
    /// `SOCKET_NAMES`: socket path bytes -> the rules gating it, for each path as listed
    /// and as its symlinks resolve; a name too long for a key is left out.
    pub socket_names: BTreeMap<Vec<u8>, u32>,
    /// `POLICY.cgroup_levels` of the generation: bit L set when a rule names a cgroup at
    /// level L.
    pub cgroup_levels: u32,
    /// `GATES`: the identity of each gated rule's gate socket -> that rule's bit.
    pub gates: BTreeMap<FileId, u32>,
    /// `GATE_PATHS`: each gated rule's gate socket path, by rule index (where the connect
    /// routing sends the rule's identities); a path too long for `sun_path` is left out.
    pub gate_paths: BTreeMap<usize, Vec<u8>>,
    /// `ROUTE_NAMES`: the names of each gated rule's upstream socket (the one its gate
    /// forwards to) -> the rules routed to their gate from it. Another listed socket (a
    /// second daemon) is not routed: the gate would serve it from the wrong daemon.
    pub route_names: BTreeMap<Vec<u8>, u32>,
    /// `POLICY.gate_rules` of the generation: the rules with the API gate on.
    pub gate_rules: u32,
    /// `POLICY.any_client_rules`: the gated rules whose gate admits any client.
    pub any_client_rules: u32,
}

/// A [`CompiledPolicy`]'s entries keyed for one generation, in the order the loader
/// writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationEntries {
    /// `RULES` index -> config.
    pub rules: Vec<(u32, RuleConfig)>,
    /// `COUNTERS` indices of the generation's per-rule counters, which start at zero.
    pub rule_counters: Vec<u32>,
    pub binaries: Vec<(FileKey, BinaryInfo)>,
    pub users: Vec<(UserKey, u32)>,
    pub hosts: Vec<(HostKey, u32)>,
    pub socket_names: Vec<(SocketNameKey, u32)>,
    pub gates: Vec<(FileKey, u32)>,
    /// `GATE_PATHS` index -> path, for every rule slot (`len` 0: no gate).
    pub gate_paths: Vec<(u32, GatePath)>,
    pub route_names: Vec<(SocketNameKey, u32)>,
}

/// A gated rule's gate socket: the kernel's identity of it, its path, and the docker
/// socket it forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateSocket {
    pub identity: FileId,
    pub path: PathBuf,
    pub upstream: PathBuf,
}

/// Why a resolved policy cannot be compiled (each a fault of the system it was resolved
/// on, or of a caller: `Policy::parse` and `Policy::resolve` rule the others out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileError {
    TooManyRules,
    /// A vetted binary the kernel reported no identity for.
    NoIdentity(PathBuf),
    UnknownProfile(u32),
    /// A vetted file reached by two paths with different clients.
    SameFileOtherClient(PathBuf),
    /// A rule with the API gate on whose gate socket has no kernel identity.
    NoGate(String),
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompileError::TooManyRules => write!(f, "at most {MAX_RULES} rules"),
            CompileError::NoIdentity(path) => write!(f, "no kernel identity for {}", path.display()),
            CompileError::UnknownProfile(profile) => write!(f, "unknown client profile {profile}"),
            CompileError::SameFileOtherClient(path) => write!(
                f,
                "{} is the same file as another binary of the policy, with another client",
                path.display()
            ),
            CompileError::NoGate(rule) => {
                write!(f, "rule {rule:?}: its API gate socket has no kernel identity")
            }
        }
    }
}

impl std::error::Error for CompileError {}

/// Compiles `policy`, resolved on this system as `resolved`. `identities`: the kernel's
/// identity of each resolved binary path; `socket_aliases`: the path each listed socket
/// path resolves to through symlinks (`/var/run` -> `/run`), where it resolves; `gates`:
/// each gated rule's gate socket, by rule index.
pub fn compile(
    policy: &Policy,
    resolved: &Resolved,
    identities: &BTreeMap<PathBuf, FileId>,
    socket_aliases: &BTreeMap<PathBuf, PathBuf>,
    gates: &BTreeMap<usize, GateSocket>,
) -> Result<CompiledPolicy, CompileError> {
    let mut rules = rule_configs(policy);
    if rules.len() > MAX_RULES {
        return Err(CompileError::TooManyRules);
    }
    rules.resize(MAX_RULES, RuleConfig::default());
    let mut gate_rules = 0;
    let mut any_client_rules = 0;
    for (index, rule) in policy.rules.iter().enumerate() {
        if rule.api_gate {
            gate_rules |= 1 << index;
            if rule.api_clients == ApiClients::Any {
                any_client_rules |= 1 << index;
            }
            if !gates.contains_key(&index) {
                return Err(CompileError::NoGate(rule.name.clone()));
            }
        }
    }
    let gated = || gates.iter().filter(|(index, _)| gate_rules & (1 << **index) != 0);
    let gate_paths = gated()
        .map(|(index, gate)| (*index, path_bytes(&gate.path)))
        .filter(|(_, path)| fits_sun_path(path))
        .collect();
    let route_names = route_names(resolved, socket_aliases, gated());
    let gates = gated().map(|(index, gate)| (gate.identity, 1u32 << *index)).collect();
    Ok(CompiledPolicy {
        rules,
        binaries: binaries(resolved, identities)?,
        users: resolved.users.clone(),
        hosts: resolved.hosts.clone(),
        socket_names: socket_names(resolved, socket_aliases),
        cgroup_levels: resolved.cgroup_levels(),
        gates,
        gate_paths,
        route_names,
        gate_rules,
        any_client_rules,
    })
}

/// The binaries by kernel identity: two paths may share an inode (hard links), and then
/// their rule sets add up; one file cannot be two clients.
fn binaries(
    resolved: &Resolved,
    identities: &BTreeMap<PathBuf, FileId>,
) -> Result<BTreeMap<FileId, BinaryInfo>, CompileError> {
    let mut merged: BTreeMap<FileId, BinaryInfo> = BTreeMap::new();
    for (path, (rule_mask, profile)) in &resolved.binaries {
        let identity = identities.get(path).ok_or_else(|| CompileError::NoIdentity(path.clone()))?;
        let start = profile_start(*profile).ok_or(CompileError::UnknownProfile(*profile))?;
        let entry = merged.entry(*identity).or_insert(BinaryInfo { rules: 0, profile: *profile, start });
        if entry.profile != *profile {
            return Err(CompileError::SameFileOtherClient(path.clone()));
        }
        entry.rules |= rule_mask;
    }
    Ok(merged)
}

/// The names routed to each gated rule's gate: those of the rule's listed sockets that are
/// its gate's upstream (the same path, or the same file through symlinks), under each name.
fn route_names<'a>(
    resolved: &Resolved,
    socket_aliases: &BTreeMap<PathBuf, PathBuf>,
    gated: impl Iterator<Item = (&'a usize, &'a GateSocket)>,
) -> BTreeMap<Vec<u8>, u32> {
    let real = |path: &Path| socket_aliases.get(path).cloned().unwrap_or_else(|| path.to_path_buf());
    let mut names: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for (index, gate) in gated {
        let bit = 1u32 << *index;
        let upstream = real(&gate.upstream);
        for (path, rules) in &resolved.sockets {
            if rules & bit != 0 && real(path) == upstream {
                *names.entry(path_bytes(path)).or_default() |= bit;
                *names.entry(path_bytes(&upstream)).or_default() |= bit;
            }
        }
    }
    names.retain(|name, _| fits_sun_path(name));
    names
}

/// A path as the kernel compares it: its bytes.
fn path_bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_encoded_bytes().to_vec()
}

/// Whether a socket path fits `sun_path` with room for its NUL (the kernel-side keys).
fn fits_sun_path(path: &[u8]) -> bool {
    path.len() < SOCKET_NAME_LEN
}

/// The socket names: a listed path through a symlink (`/var/run` -> `/run`) is bound to
/// the other name, so both are gated.
fn socket_names(resolved: &Resolved, socket_aliases: &BTreeMap<PathBuf, PathBuf>) -> BTreeMap<Vec<u8>, u32> {
    let mut names: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for (path, rules) in &resolved.sockets {
        *names.entry(path_bytes(path)).or_default() |= rules;
        if let Some(real) = socket_aliases.get(path) {
            *names.entry(path_bytes(real)).or_default() |= rules;
        }
    }
    names.retain(|name, _| fits_sun_path(name));
    names
}

impl CompiledPolicy {
    /// The entries keyed for `generation`.
    pub fn entries(&self, generation: u32) -> GenerationEntries {
        let rules = (0..MAX_RULES as u32)
            .zip(&self.rules)
            .map(|(index, rule)| (generation * MAX_RULES as u32 + index, *rule))
            .collect();
        // Each rule's whole block of slots, the spare one included.
        let rule_counters = (0..MAX_RULES as u32)
            .flat_map(|rule| {
                let first = rule_counter(generation, rule, RuleCounter::Denied);
                (0..RULE_COUNTERS).map(move |slot| first + slot)
            })
            .collect();
        let binaries = self
            .binaries
            .iter()
            .map(|(file, info)| (FileKey { generation, _pad: 0, file: *file }, *info))
            .collect();
        let users =
            self.users.iter().map(|(uid, rules)| (UserKey { generation, uid: *uid }, *rules)).collect();
        let hosts =
            self.hosts.iter().map(|(host, rules)| (HostKey { generation, ..*host }, *rules)).collect();
        let name_key = |name: &Vec<u8>| {
            let mut key = SocketNameKey { generation, name: [0; SOCKET_NAME_LEN] };
            key.name[..name.len()].copy_from_slice(name);
            key
        };
        let socket_names = self.socket_names.iter().map(|(name, rules)| (name_key(name), *rules)).collect();
        let gates = self
            .gates
            .iter()
            .map(|(file, rule)| (FileKey { generation, _pad: 0, file: *file }, *rule))
            .collect();
        let gate_paths = (0..MAX_RULES)
            .map(|rule| {
                let mut gate = GatePath { len: 0, path: [0; SOCKET_NAME_LEN] };
                if let Some(path) = self.gate_paths.get(&rule) {
                    gate.path[..path.len()].copy_from_slice(path);
                    gate.len = path.len() as u32;
                }
                (generation * MAX_RULES as u32 + rule as u32, gate)
            })
            .collect();
        let route_names = self.route_names.iter().map(|(name, rules)| (name_key(name), *rules)).collect();
        GenerationEntries {
            rules,
            rule_counters,
            binaries,
            users,
            hosts,
            socket_names,
            gates,
            gate_paths,
            route_names,
        }
    }
}

/// The kernel's view of each rule, in rule order. A rule that denies any command also
/// denies the raw API tunnels ([`RAW_API_TUNNELS`]), listed or not: through one, every
/// denied request reaches the daemon from a client the kernel cannot judge.
pub fn rule_configs(policy: &Policy) -> Vec<RuleConfig> {
    policy
        .rules
        .iter()
        .map(|rule| {
            let mut config = RuleConfig::default();
            let denies_anything = rule.kind == ListKind::Allow || !rule.commands.is_empty();
            for node in 1..grammar::node_count() {
                let listed = lists(rule, node);
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
            if policy.mode == Mode::Audit {
                config.flags |= rule_flag::AUDIT;
            }
            config
        })
        .collect()
}

/// Commands that pipe raw requests to the docker API (`docker system dial-stdio`, which
/// the CLI's `ssh://` connection helper also runs) or to its `BuildKit` endpoint
/// (`buildx dial-stdio`, through which a `BuildKit` client exports with `push=true`, past
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
    is_raw_tunnel(node) && !(rule.kind == ListKind::Deny && lists(rule, node))
}

/// Whether one of `rule`'s command entries covers `node` (see `grammar::covers`).
fn lists(rule: &Rule, node: u32) -> bool {
    rule.commands.iter().any(|&entry| grammar::covers(entry, node))
}

#[cfg(test)]
mod tests {
    use enforcer_common::abi::Profile;

    use super::*;
    use crate::discovery::{Candidate, Discovery};

    const DOCKER: u32 = Profile::Docker as u32;
    const COMPOSE: u32 = Profile::Compose as u32;

    fn file(ino: u64) -> FileId {
        FileId { dev: 8, ino }
    }

    fn parse(text: &str) -> Policy {
        Policy::parse("policy.toml", text).unwrap()
    }

    fn paths<const N: usize, T: Clone>(entries: [(&str, T); N]) -> BTreeMap<PathBuf, T> {
        entries.iter().map(|(path, value)| (PathBuf::from(path), value.clone())).collect()
    }

    /// Resolution on a made-up system that has the users `uids` and the files `files`
    /// (each its own target), with docker at /usr/bin/docker for rules that search.
    fn resolve(policy: &Policy, uids: &[(&str, u32)], files: &[&str]) -> Resolved {
        let discovery = Discovery {
            uids: uids.iter().map(|(name, uid)| (name.to_string(), *uid)).collect(),
            files: files.iter().map(|f| (PathBuf::from(f), PathBuf::from(f))).collect(),
            docker_search: vec![Candidate { path: "/usr/bin/docker".into(), profile: DOCKER, counts: true }],
        };
        policy.resolve(&discovery).unwrap()
    }

    /// A gate socket for each of `policy`'s gated rules (all, unless one opts out).
    fn gates_of(policy: &Policy) -> BTreeMap<usize, GateSocket> {
        let gated = policy.rules.iter().enumerate().filter(|(_, rule)| rule.api_gate);
        gated
            .map(|(index, rule)| {
                let gate = GateSocket {
                    identity: FileId { dev: 9, ino: index as u64 },
                    path: PathBuf::from(format!("/run/enforcer/gate/{}.sock", rule.name)),
                    upstream: PathBuf::from("/var/run/docker.sock"),
                };
                (index, gate)
            })
            .collect()
    }

    fn info(rules: u32, profile: u32) -> BinaryInfo {
        BinaryInfo { rules, profile, start: profile_start(profile).unwrap() }
    }

    #[test]
    fn hard_links_are_one_entry_with_their_rules_added_up() {
        let policy = parse(
            "[[rule]]\nname = \"a\"\nusers = [1]\nbinaries = [\"/usr/bin/docker\"]\ndeny = [\"exec\"]\n\
             [[rule]]\nname = \"b\"\nusers = [2]\nbinaries = [\"/opt/docker\", \"/opt/docker-compose\"]\ndeny = [\"cp\"]\n",
        );
        let resolved = resolve(&policy, &[], &["/usr/bin/docker", "/opt/docker", "/opt/docker-compose"]);
        // /usr/bin/docker and /opt/docker are one inode.
        let identities =
            paths([("/usr/bin/docker", file(7)), ("/opt/docker", file(7)), ("/opt/docker-compose", file(9))]);
        let compiled =
            compile(&policy, &resolved, &identities, &BTreeMap::new(), &gates_of(&policy)).unwrap();
        assert_eq!(
            compiled.binaries,
            BTreeMap::from([(file(7), info(0b11, DOCKER)), (file(9), info(0b10, COMPOSE))])
        );
        let key = |file| FileKey { generation: 1, _pad: 0, file };
        assert_eq!(
            compiled.entries(1).binaries,
            [(key(file(7)), info(0b11, DOCKER)), (key(file(9)), info(0b10, COMPOSE))]
        );
    }

    #[test]
    fn one_file_cannot_be_two_clients() {
        let policy = parse(
            "[[rule]]\nname = \"r\"\nusers = [1]\n\
             binaries = [\"/usr/bin/docker\", { path = \"/opt/dc\", client = \"docker-compose\" }]\ndeny = [\"exec\"]\n",
        );
        let resolved = resolve(&policy, &[], &["/usr/bin/docker", "/opt/dc"]);
        let identities = paths([("/usr/bin/docker", file(7)), ("/opt/dc", file(7))]);
        let error =
            compile(&policy, &resolved, &identities, &BTreeMap::new(), &gates_of(&policy)).unwrap_err();
        assert_eq!(error, CompileError::SameFileOtherClient("/usr/bin/docker".into()));
        assert_eq!(
            error.to_string(),
            "/usr/bin/docker is the same file as another binary of the policy, with another client"
        );
    }

    #[test]
    fn a_binary_without_a_kernel_identity_is_an_error() {
        let policy = parse("[[rule]]\nname = \"r\"\nusers = [1]\ndeny = [\"exec\"]\n");
        let resolved = resolve(&policy, &[], &["/usr/bin/docker"]);
        let error =
            compile(&policy, &resolved, &BTreeMap::new(), &BTreeMap::new(), &gates_of(&policy)).unwrap_err();
        assert_eq!(error.to_string(), "no kernel identity for /usr/bin/docker");
    }

    #[test]
    fn more_rules_than_slots_is_an_error() {
        let one = parse("[[rule]]\nname = \"r\"\nusers = [1]\ndeny = [\"exec\"]\n");
        let resolved = resolve(&one, &[], &["/usr/bin/docker"]);
        let identities = paths([("/usr/bin/docker", file(7))]);
        assert!(compile(&one, &resolved, &identities, &BTreeMap::new(), &gates_of(&one)).is_ok());
        // `Policy::parse` refuses this many; compilation does not rely on it.
        let mut too_many = one.clone();
        too_many.rules = vec![one.rules[0].clone(); MAX_RULES + 1];
        let error =
            compile(&too_many, &resolved, &identities, &BTreeMap::new(), &BTreeMap::new()).unwrap_err();
        assert_eq!(error.to_string(), format!("at most {MAX_RULES} rules"));
    }

    #[test]
    fn sockets_are_gated_under_every_name() {
        let policy = parse(
            "[[rule]]\nname = \"a\"\nusers = [1]\nsockets = [\"/var/run/docker.sock\"]\ndeny = [\"exec\"]\n\
             [[rule]]\nname = \"b\"\nusers = [2]\nsockets = [\"/run/docker.sock\", \"/srv/d.sock\"]\ndeny = [\"exec\"]\n",
        );
        let resolved = resolve(&policy, &[], &["/usr/bin/docker"]);
        let identities = paths([("/usr/bin/docker", file(7))]);
        let too_long = format!("/srv/{}.sock", "x".repeat(SOCKET_NAME_LEN));
        let aliases = paths([
            ("/var/run/docker.sock", PathBuf::from("/run/docker.sock")),
            ("/srv/d.sock", PathBuf::from(&too_long)),
        ]);
        let compiled = compile(&policy, &resolved, &identities, &aliases, &gates_of(&policy)).unwrap();
        let names: Vec<(&str, u32)> =
            compiled.socket_names.iter().map(|(n, r)| (std::str::from_utf8(n).unwrap(), *r)).collect();
        // The alias of /var/run/docker.sock adds rule a to /run/docker.sock; the one too
        // long for a socket address is left out.
        assert_eq!(
            names,
            [("/run/docker.sock", 0b11), ("/srv/d.sock", 0b10), ("/var/run/docker.sock", 0b01)]
        );
        let entries = compiled.entries(1);
        let (key, rules) = entries.socket_names[0];
        assert_eq!((key.generation, rules), (1, 0b11));
        assert_eq!(&key.name[..16], b"/run/docker.sock");
        assert!(key.name[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn users_hosts_and_rules_per_rule() {
        let policy = parse(
            "mode = \"audit\"\n\
             [[rule]]\nname = \"a\"\nusers = [1]\nhosts = [\"127.0.0.1:2375\"]\ndeny = [\"exec\"]\n\
             [[rule]]\nname = \"b\"\nusers = [2, \"ai-worker\"]\nallow = [\"ps\"]\n\
             [[rule]]\nname = \"c\"\nusers = [\"ai-worker\"]\ncgroups = [\"/a.slice/b.service\"]\ndeny = [\"cp\"]\napi_gate = false\n",
        );
        let resolved = resolve(&policy, &[("ai-worker", 1001)], &["/usr/bin/docker"]);
        let identities = paths([("/usr/bin/docker", file(7))]);
        let compiled =
            compile(&policy, &resolved, &identities, &BTreeMap::new(), &gates_of(&policy)).unwrap();
        assert_eq!(compiled.users, BTreeMap::from([(1, 0b001), (2, 0b010), (1001, 0b110)]));
        assert_eq!(compiled.cgroup_levels, 1 << 2);
        assert_eq!(compiled.binaries, BTreeMap::from([(file(7), info(0b111, DOCKER))]));
        // Every slot, the unused ones zero.
        assert_eq!(compiled.rules.len(), MAX_RULES);
        assert_eq!(compiled.rules[..3], rule_configs(&policy)[..]);
        assert!(compiled.rules[3..].iter().all(|r| *r == RuleConfig::default()));
        assert!(compiled.rules[..3].iter().all(RuleConfig::is_audit));
        assert!(compiled.rules[1].is_allow_list());

        let entries = compiled.entries(1);
        let indices: Vec<u32> = entries.rules.iter().map(|(index, _)| *index).collect();
        assert_eq!(indices, (MAX_RULES as u32..2 * MAX_RULES as u32).collect::<Vec<_>>());
        assert_eq!(
            entries.users,
            [
                (UserKey { generation: 1, uid: 1 }, 0b001),
                (UserKey { generation: 1, uid: 2 }, 0b010),
                (UserKey { generation: 1, uid: 1001 }, 0b110)
            ]
        );
        let host = crate::policy::parse_host("127.0.0.1:2375").unwrap();
        assert_eq!(entries.hosts, [(HostKey { generation: 1, ..host }, 0b001)]);
        // Each generation zeroes its own per-rule counters, all of them, and no other's.
        let zeroed = |generation| {
            let counters = compiled.entries(generation).rule_counters;
            counters.into_iter().collect::<std::collections::BTreeSet<u32>>()
        };
        assert_eq!(zeroed(0).len(), MAX_RULES * RULE_COUNTERS as usize);
        assert_eq!(zeroed(1).len(), MAX_RULES * RULE_COUNTERS as usize);
        assert!(zeroed(0).is_disjoint(&zeroed(1)));
    }

    #[test]
    fn the_default_policys_entries() {
        let policy = Policy::default_policy();
        let discovery = Discovery {
            uids: BTreeMap::from([("ai-worker".into(), 1001)]),
            files: paths([
                ("/usr/bin/docker", PathBuf::from("/usr/bin/docker")),
                (
                    "/usr/libexec/docker/cli-plugins/docker-compose",
                    "/usr/libexec/docker/cli-plugins/docker-compose".into(),
                ),
                (
                    "/usr/libexec/docker/cli-plugins/docker-buildx",
                    "/usr/libexec/docker/cli-plugins/docker-buildx".into(),
                ),
            ]),
            docker_search: vec![
                Candidate { path: "/usr/bin/docker".into(), profile: DOCKER, counts: true },
                Candidate { path: "/usr/bin/docker-compose".into(), profile: COMPOSE, counts: false },
                Candidate {
                    path: "/usr/libexec/docker/cli-plugins/docker-compose".into(),
                    profile: COMPOSE,
                    counts: false,
                },
                Candidate {
                    path: "/usr/libexec/docker/cli-plugins/docker-buildx".into(),
                    profile: DOCKER,
                    counts: false,
                },
            ],
        };
        let resolved = policy.resolve(&discovery).unwrap();
        let identities = paths([
            ("/usr/bin/docker", file(1)),
            ("/usr/libexec/docker/cli-plugins/docker-compose", file(2)),
            ("/usr/libexec/docker/cli-plugins/docker-buildx", file(3)),
        ]);
        let aliases = paths([("/var/run/docker.sock", PathBuf::from("/run/docker.sock"))]);
        let compiled = compile(&policy, &resolved, &identities, &aliases, &gates_of(&policy)).unwrap();
        assert_eq!(
            compiled.binaries,
            BTreeMap::from([
                (file(1), info(1, DOCKER)),
                (file(2), info(1, COMPOSE)),
                (file(3), info(1, DOCKER))
            ])
        );
        assert_eq!(compiled.users, BTreeMap::from([(1001, 1)]));
        assert!(compiled.hosts.is_empty());
        assert_eq!(compiled.cgroup_levels, 0);
        assert_eq!(compiled.rules.iter().filter(|r| **r != RuleConfig::default()).count(), 1);
        // Its one rule is gated, and both names of docker's socket route to the gate.
        assert_eq!(compiled.gate_rules, 1);
        assert_eq!(compiled.route_names.len(), 2);
        let entries = compiled.entries(0);
        let counts = [
            entries.rules.len(),
            entries.rule_counters.len(),
            entries.binaries.len(),
            entries.users.len(),
            entries.hosts.len(),
            entries.socket_names.len(),
        ];
        assert_eq!(counts, [MAX_RULES, MAX_RULES * RULE_COUNTERS as usize, 3, 1, 0, 2]);
    }

    /// A deny rule denies the raw API tunnels, listed or not; an allow rule never allows
    /// them; `implicit_tunnel` tells the two apart for `enforcer check`.
    #[test]
    fn raw_tunnels_follow_the_rule() {
        let node = |path| grammar::node_by_path(path).unwrap();
        let deny = parse("[[rule]]\nname = \"r\"\nusers = [1]\ndeny = [\"exec\"]\n");
        let allow = parse("[[rule]]\nname = \"r\"\nusers = [1]\nallow = [\"system\"]\n");
        let listed = parse("[[rule]]\nname = \"r\"\nusers = [1]\ndeny = [\"system dial-stdio\"]\n");
        for tunnel in RAW_API_TUNNELS {
            assert!(rule_configs(&deny)[0].has_command(node(tunnel)), "{tunnel}");
            assert!(!rule_configs(&allow)[0].has_command(node(tunnel)), "{tunnel}");
            assert!(implicit_tunnel(&deny.rules[0], node(tunnel)), "{tunnel}");
        }
        assert!(!implicit_tunnel(&listed.rules[0], node("system dial-stdio")));
        assert!(!implicit_tunnel(&deny.rules[0], node("container exec")));
    }

    #[test]
    fn gated_rules_and_their_gate_sockets() {
        let policy = parse(
            "[[rule]]\nname = \"plain\"\nusers = [1]\ndeny = [\"exec\"]\napi_gate = false\n\
             [[rule]]\nname = \"gated\"\nusers = [2]\ndeny = [\"exec\"]\n\
             [[rule]]\nname = \"open\"\nusers = [3]\ndeny = [\"exec\"]\napi_gate = true\napi_clients = \"any\"\n",
        );
        let resolved = resolve(&policy, &[], &["/usr/bin/docker"]);
        let gate = |n| GateSocket {
            identity: file(n),
            path: PathBuf::from(format!("/run/enforcer/gate/{n}.sock")),
            upstream: PathBuf::from("/var/run/docker.sock"),
        };
        // A gate socket is required for each gated rule, and only gated rules' count.
        let identities = paths([("/usr/bin/docker", file(1))]);
        let missing =
            compile(&policy, &resolved, &identities, &BTreeMap::new(), &BTreeMap::from([(1, gate(7))]));
        assert_eq!(missing, Err(CompileError::NoGate("open".into())));
        let gates = BTreeMap::from([(0, gate(6)), (1, gate(7)), (2, gate(8))]);
        let compiled = compile(&policy, &resolved, &identities, &BTreeMap::new(), &gates).unwrap();
        assert_eq!(compiled.gate_rules, 0b110);
        assert_eq!(compiled.any_client_rules, 0b100);
        assert_eq!(compiled.gates, BTreeMap::from([(file(7), 0b10), (file(8), 0b100)]));
        let entries = compiled.entries(1);
        assert_eq!(
            entries.gates,
            [
                (FileKey { generation: 1, _pad: 0, file: file(7) }, 0b10),
                (FileKey { generation: 1, _pad: 0, file: file(8) }, 0b100)
            ]
        );
        // Every rule slot of the generation gets a gate path: the gated rules' own, the
        // others none (so an older policy's path never routes anyone).
        assert_eq!(entries.gate_paths.len(), MAX_RULES);
        let slot =
            |rule: u32| entries.gate_paths.iter().find(|(i, _)| *i == MAX_RULES as u32 + rule).unwrap().1;
        assert_eq!(slot(0).len, 0, "the ungated rule has no gate path");
        assert_eq!(&slot(1).path[..slot(1).len as usize], b"/run/enforcer/gate/7.sock");
        assert_eq!(&slot(2).path[..slot(2).len as usize], b"/run/enforcer/gate/8.sock");
        assert!(slot(2).path[slot(2).len as usize..].iter().all(|&b| b == 0));
        assert_eq!(slot(5).len, 0);
    }

    /// Only the gate's own upstream is routed to it, under each of its names; a second
    /// daemon's socket the rule lists is not (the gate would serve it from the wrong
    /// daemon), and an ungated rule's sockets are not.
    #[test]
    fn only_the_gates_upstream_is_routed() {
        let policy = parse(
            "[[rule]]\nname = \"gated\"\nusers = [1]\ndeny = [\"exec\"]\napi_gate = true\n\
             sockets = [\"/var/run/docker.sock\", \"/run/docker.sock\", \"/tmp/other.sock\"]\n\
             [[rule]]\nname = \"plain\"\nusers = [2]\ndeny = [\"exec\"]\nsockets = [\"/srv/d.sock\"]\napi_gate = false\n",
        );
        let resolved = resolve(&policy, &[], &["/usr/bin/docker"]);
        let identities = paths([("/usr/bin/docker", file(1))]);
        let aliases = paths([
            ("/var/run/docker.sock", PathBuf::from("/run/docker.sock")),
            ("/run/docker.sock", PathBuf::from("/run/docker.sock")),
            ("/tmp/other.sock", PathBuf::from("/tmp/other.sock")),
        ]);
        let gates = BTreeMap::from([(
            0,
            GateSocket {
                identity: file(9),
                path: PathBuf::from("/run/enforcer/gate/gated.sock"),
                upstream: PathBuf::from("/var/run/docker.sock"),
            },
        )]);
        let compiled = compile(&policy, &resolved, &identities, &aliases, &gates).unwrap();
        let routed: Vec<(&str, u32)> =
            compiled.route_names.iter().map(|(n, r)| (std::str::from_utf8(n).unwrap(), *r)).collect();
        assert_eq!(routed, [("/run/docker.sock", 0b1), ("/var/run/docker.sock", 0b1)]);
        // The other socket stays gated (refused to the rule's identities), just not routed.
        assert!(compiled.socket_names.contains_key(b"/tmp/other.sock".as_slice()));
        let entries = compiled.entries(0);
        assert_eq!(entries.route_names.len(), 2);
        assert!(entries.route_names.iter().all(|(key, rules)| key.generation == 0 && *rules == 0b1));
    }
}
