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
        BinaryInfo, FileId, FileKey, HostKey, MAX_RULES, RULE_COUNTERS, RuleConfig, RuleCounter, RuleKind,
        SOCKET_NAME_LEN, SocketNameKey, UserKey, rule_counter, rule_flag,
    },
    grammar::{self, profile_start},
};

use crate::policy::{ListKind, Mode, Policy, Resolved, Rule};

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
        }
    }
}

impl std::error::Error for CompileError {}

/// Compiles `policy`, resolved on this system as `resolved`. `identities`: the kernel's
/// identity of each resolved binary path; `socket_aliases`: the path each listed socket
/// path resolves to through symlinks (`/var/run` -> `/run`), where it resolves.
pub fn compile(
    policy: &Policy,
    resolved: &Resolved,
    identities: &BTreeMap<PathBuf, FileId>,
    socket_aliases: &BTreeMap<PathBuf, PathBuf>,
) -> Result<CompiledPolicy, CompileError> {
    let mut rules = rule_configs(policy);
    if rules.len() > MAX_RULES {
        return Err(CompileError::TooManyRules);
    }
    rules.resize(MAX_RULES, RuleConfig::default());
    Ok(CompiledPolicy {
        rules,
        binaries: binaries(resolved, identities)?,
        users: resolved.users.clone(),
        hosts: resolved.hosts.clone(),
        socket_names: socket_names(resolved, socket_aliases),
        cgroup_levels: resolved.cgroup_levels(),
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

/// The socket names: a listed path through a symlink (`/var/run` -> `/run`) is bound to
/// the other name, so both are gated.
fn socket_names(resolved: &Resolved, socket_aliases: &BTreeMap<PathBuf, PathBuf>) -> BTreeMap<Vec<u8>, u32> {
    let bytes = |path: &Path| path.as_os_str().as_encoded_bytes().to_vec();
    let mut names: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for (path, rules) in &resolved.sockets {
        *names.entry(bytes(path)).or_default() |= rules;
        if let Some(real) = socket_aliases.get(path) {
            *names.entry(bytes(real)).or_default() |= rules;
        }
    }
    names.retain(|name, _| name.len() < SOCKET_NAME_LEN);
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
        let socket_names = self
            .socket_names
            .iter()
            .map(|(name, rules)| {
                let mut key = SocketNameKey { generation, name: [0; SOCKET_NAME_LEN] };
                key.name[..name.len()].copy_from_slice(name);
                (key, *rules)
            })
            .collect();
        GenerationEntries { rules, rule_counters, binaries, users, hosts, socket_names }
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
    is_raw_tunnel(node) && !(rule.kind == ListKind::Deny && lists(rule, node))
}

/// Whether one of `rule`'s command entries covers `node` (see `grammar::covers`).
fn lists(rule: &Rule, node: u32) -> bool {
    rule.commands.iter().any(|&entry| grammar::covers(entry, node))
}
