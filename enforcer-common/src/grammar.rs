//! The docker CLI's grammar as the engine reads it: the root's global options, and the
//! command tree of [`crate::tree`] turned into (scope, word) -> meaning entries.
//!
//! Userspace loads [`entries`] into the kernel's grammar map; the engine looks words up
//! through the [`Grammar`] trait, so the kernel and `enforcer check` decide with the same
//! table. Node ids are positions in `tree::NODES` plus one (0 is the root); they are
//! stable only within one build: policies name commands by path, never by id.

use crate::{
    abi::{MAX_NODES, Profile, Start, TOKEN_LEN, Token, TokenInfo, TokenKind, scope},
    tree::{FlagSpec, NODES, NodeSpec},
};

/// Global options of the docker CLI (root command flags, docker 28) and whether they
/// take a value.
pub const GLOBAL_OPTIONS: &[FlagSpec] = &[
    FlagSpec { long: "config", short: None, takes_value: true },
    FlagSpec { long: "context", short: Some(b'c'), takes_value: true },
    FlagSpec { long: "debug", short: Some(b'D'), takes_value: false },
    FlagSpec { long: "host", short: Some(b'H'), takes_value: true },
    FlagSpec { long: "log-level", short: Some(b'l'), takes_value: true },
    FlagSpec { long: "tls", short: None, takes_value: false },
    FlagSpec { long: "tlscacert", short: None, takes_value: true },
    FlagSpec { long: "tlscert", short: None, takes_value: true },
    FlagSpec { long: "tlskey", short: None, takes_value: true },
    FlagSpec { long: "tlsverify", short: None, takes_value: false },
    FlagSpec { long: "version", short: Some(b'v'), takes_value: false },
    FlagSpec { long: "help", short: Some(b'h'), takes_value: false },
];

/// The root node (no command): id 0.
pub const ROOT: u32 = 0;

/// Number of node ids in use, the root included.
pub fn node_count() -> u32 {
    NODES.len() as u32 + 1
}

/// The node with id `id` (not the root).
pub fn node(id: u32) -> Option<&'static NodeSpec> {
    if id == ROOT { None } else { NODES.get(id as usize - 1) }
}

/// Canonical path of a node (`"container exec"`); `""` for the root or an unknown id.
pub fn node_path(id: u32) -> &'static str {
    node(id).map_or("", |n| n.path)
}

/// The node whose canonical path is `path`.
pub fn node_by_path(path: &str) -> Option<u32> {
    NODES.iter().position(|n| n.path == path).map(|i| i as u32 + 1)
}

/// The parent of a node (the root for top-level commands).
pub fn parent_of(id: u32) -> u32 {
    match node_path(id).rsplit_once(' ') {
        Some((parent, _)) => node_by_path(parent).unwrap_or(ROOT),
        None => ROOT,
    }
}

/// The word that names a node under its parent (the last word of its path).
fn own_word(node: &NodeSpec) -> &'static str {
    node.path.rsplit_once(' ').map_or(node.path, |(_, word)| word)
}

/// Whether `child` is one word below `parent` (`""` is the root's path).
fn is_child_path(child: &str, parent: &str) -> bool {
    let rest = if parent.is_empty() {
        child
    } else {
        match child.strip_prefix(parent).and_then(|r| r.strip_prefix(' ')) {
            Some(rest) => rest,
            None => return false,
        }
    };
    !rest.is_empty() && !rest.contains(' ')
}

/// Whether a node has subcommands.
pub fn is_group(id: u32) -> bool {
    let path = node_path(id);
    id == ROOT || NODES.iter().any(|n| is_child_path(n.path, path))
}

/// Where the engine starts reading the argv of a client profile.
pub fn profile_start(profile: u32) -> Option<Start> {
    match Profile::try_from(profile) {
        Ok(Profile::Docker) => Some(Start { scope: scope::ROOT, node: ROOT }),
        Ok(Profile::Compose) => {
            node_by_path("compose").map(|node| Start { scope: scope::COMPOSE_ENTRY, node })
        }
        Err(_) => None,
    }
}

/// Whether a policy entry naming `entry` covers `node`: the node itself, its descendants,
/// and every node declared to have the same power as one of those (and their
/// descendants). `docker exec`, `docker container exec` and `docker compose exec` are all
/// covered by `exec`.
pub fn covers(entry: u32, node: u32) -> bool {
    covers_within(entry, node, 8)
}

fn covers_within(entry: u32, id: u32, depth: u32) -> bool {
    let mut current = id;
    // Paths are a few words deep; the bound only guards against a malformed table.
    for _ in 0..8 {
        if current == entry {
            return true;
        }
        if current == ROOT {
            return false;
        }
        if depth > 0
            && let Some(same) = node(current).and_then(|n| n.same_as).and_then(node_by_path)
            && covers_within(entry, same, depth - 1)
        {
            return true;
        }
        current = parent_of(current);
    }
    false
}

fn kind_of(id: u32) -> u32 {
    if is_group(id) {
        TokenKind::Group as u32
    } else if node(id).is_some_and(|n| !n.power_flags.is_empty()) {
        TokenKind::LeafPowerFlags as u32
    } else {
        TokenKind::Leaf as u32
    }
}

fn flag_kind(flag: &FlagSpec) -> u32 {
    if flag.takes_value { TokenKind::FlagValue as u32 } else { TokenKind::FlagBool as u32 }
}

/// Calls `f` with each spelling of a flag: `--long` and `-s`.
fn flag_spellings(flag: &FlagSpec, mut f: impl FnMut(&[u8])) {
    let mut long = [0u8; TOKEN_LEN];
    long[..2].copy_from_slice(b"--");
    let n = flag.long.len().min(TOKEN_LEN - 3);
    long[2..2 + n].copy_from_slice(&flag.long.as_bytes()[..n]);
    f(&long[..2 + n]);
    if let Some(short) = flag.short {
        f(&[b'-', short]);
    }
}

/// Calls `f` with every (scope, word, meaning) entry of the grammar.
pub fn entries(mut f: impl FnMut(u32, &[u8], TokenInfo)) {
    let flag = |f: &mut dyn FnMut(u32, &[u8], TokenInfo), scope: u32, spec: &FlagSpec| {
        let info = TokenInfo { kind: flag_kind(spec), node: 0 };
        flag_spellings(spec, |word| f(scope, word, info));
    };
    // The root: global options, top-level commands and their aliases, shortcuts.
    for spec in GLOBAL_OPTIONS {
        flag(&mut f, scope::ROOT, spec);
    }
    for id in 1..node_count() {
        let Some(spec) = node(id) else { continue };
        let info = TokenInfo { kind: kind_of(id), node: id };
        if !spec.path.contains(' ') {
            f(scope::ROOT, own_word(spec).as_bytes(), info);
            for alias in spec.aliases {
                f(scope::ROOT, alias.as_bytes(), info);
            }
        }
        for shortcut in spec.shortcuts {
            f(scope::ROOT, shortcut.as_bytes(), info);
        }
    }
    // Each group: its flags, its subcommands and their aliases.
    for group in 1..node_count() {
        let Some(spec) = node(group) else { continue };
        if !is_group(group) {
            continue;
        }
        for flag_spec in spec.flags {
            flag(&mut f, group, flag_spec);
        }
        children(group, |child, word, info| f(group, word, TokenInfo { node: child, ..info }));
    }
    // Each leaf with power flags: those flags, in the leaf's own scope.
    for leaf in 1..node_count() {
        let Some(spec) = node(leaf) else { continue };
        for power in spec.power_flags {
            let Some(target) = node_by_path(power.same_as) else { continue };
            let info = TokenInfo { kind: TokenKind::FlagPower as u32, node: target };
            let as_flag = FlagSpec { long: power.long, short: power.short, takes_value: false };
            flag_spellings(&as_flag, |word| f(leaf, word, info));
        }
    }
    // A standalone docker-compose: compose's flags and commands, the global options the
    // docker CLI passes to its plugins, and `compose` itself (plugin invocation).
    if let Some(start) = profile_start(Profile::Compose as u32) {
        let compose = start.node;
        let globals_have = |spelling: &[u8]| {
            let mut found = false;
            for spec in GLOBAL_OPTIONS {
                flag_spellings(spec, |word| found |= word == spelling);
            }
            found
        };
        for spec in GLOBAL_OPTIONS {
            flag(&mut f, scope::COMPOSE_ENTRY, spec);
        }
        for spec in node(compose).map_or(&[][..], |n| n.flags) {
            let info = TokenInfo { kind: flag_kind(spec), node: 0 };
            flag_spellings(spec, |word| {
                if !globals_have(word) {
                    f(scope::COMPOSE_ENTRY, word, info);
                }
            });
        }
        children(compose, |child, word, info| {
            f(scope::COMPOSE_ENTRY, word, TokenInfo { node: child, ..info });
        });
        f(scope::COMPOSE_ENTRY, b"compose", TokenInfo { kind: TokenKind::Group as u32, node: compose });
    }
}

/// Calls `f` with (child id, word, meaning) for every word naming a child of `group`.
fn children(group: u32, mut f: impl FnMut(u32, &[u8], TokenInfo)) {
    let group_path = node_path(group);
    for child in 1..node_count() {
        let Some(spec) = node(child) else { continue };
        if !is_child_path(spec.path, group_path) {
            continue;
        }
        let info = TokenInfo { kind: kind_of(child), node: child };
        f(child, own_word(spec).as_bytes(), info);
        for alias in spec.aliases {
            f(child, alias.as_bytes(), info);
        }
    }
}

/// Resolves a policy entry (`"exec"`, `"network create"`, `"compose exec"`) the way the
/// CLI resolves the same words on its command line: the first word in the root (so the
/// top-level shortcuts work), each next one among the previous word's subcommands.
pub fn resolve_entry<G: Grammar>(grammar: &G, entry: &str) -> Option<u32> {
    let mut scope = scope::ROOT;
    let mut found = None;
    for word in entry.split(' ').filter(|w| !w.is_empty()) {
        if found.is_some() && !is_group(scope) {
            return None;
        }
        let info = grammar.lookup(&Token::from_bytes(scope, word.as_bytes())?)?;
        if !matches!(
            TokenKind::try_from(info.kind),
            Ok(TokenKind::Leaf | TokenKind::LeafPowerFlags | TokenKind::Group)
        ) {
            return None;
        }
        found = Some(info.node);
        scope = info.node;
    }
    found
}

/// Looks grammar words up. The kernel implements it with a hash map filled from
/// [`entries`]; userspace with a hash map of its own, filled from the same entries.
pub trait Grammar {
    fn lookup(&self, token: &Token) -> Option<TokenInfo>;
}

/// Compile-time guard: the tree fits the kernel's bitmaps.
const _: () = assert!(NODES.len() < MAX_NODES);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_grammar::MapGrammar;

    fn grammar() -> MapGrammar {
        MapGrammar::new()
    }

    #[test]
    fn the_tree_is_well_formed() {
        let _ = grammar();
        for (i, spec) in NODES.iter().enumerate() {
            let id = i as u32 + 1;
            assert_eq!(node_by_path(spec.path), Some(id), "duplicate path {:?}", spec.path);
            assert!(!spec.path.starts_with(' ') && !spec.path.ends_with(' ') && !spec.path.contains("  "));
            if let Some((parent, _)) = spec.path.rsplit_once(' ') {
                let parent_id =
                    node_by_path(parent).unwrap_or_else(|| panic!("{:?} has no parent", spec.path));
                assert!(parent_id < id, "{:?} comes before its parent", spec.path);
            }
            if let Some(same) = spec.same_as {
                assert!(node_by_path(same).is_some(), "{:?}: same_as {same:?} is no node", spec.path);
            }
            assert!(spec.flags.is_empty() || is_group(id), "leaf {:?} has group flags", spec.path);
        }
    }

    #[test]
    fn policy_entries_resolve_like_the_command_line() {
        let g = grammar();
        let exec = node_by_path("container exec").unwrap();
        assert_eq!(resolve_entry(&g, "exec"), Some(exec));
        assert_eq!(resolve_entry(&g, "container exec"), Some(exec));
        assert_eq!(resolve_entry(&g, "ps"), node_by_path("container ls"));
        assert_eq!(resolve_entry(&g, "container ps"), node_by_path("container ls"));
        assert_eq!(resolve_entry(&g, "push"), node_by_path("image push"));
        assert_eq!(resolve_entry(&g, "network create"), node_by_path("network create"));
        assert_eq!(resolve_entry(&g, "compose exec"), node_by_path("compose exec"));
        assert_eq!(resolve_entry(&g, "compose"), node_by_path("compose"));
        for bad in ["exce", "", "--debug", "-D", "exec web", "container frobnicate", "compose -f"] {
            assert_eq!(resolve_entry(&g, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn coverage_follows_spellings_descendants_and_same_power() {
        let id = |p: &str| node_by_path(p).unwrap();
        let exec = id("container exec");
        assert!(covers(exec, exec));
        assert!(covers(exec, id("compose exec")));
        assert!(!covers(id("compose exec"), exec));
        assert!(!covers(exec, id("container ls")));
        assert!(covers(id("container"), exec));
        assert!(covers(id("compose"), id("compose exec")));
        assert!(!covers(id("compose"), exec));
        assert!(covers(id("image push"), id("compose push")));
        assert!(!covers(ROOT, exec) || is_group(ROOT));
    }

    #[test]
    fn profiles_start_where_their_client_reads_argv() {
        assert_eq!(profile_start(Profile::Docker as u32), Some(Start { scope: scope::ROOT, node: ROOT }));
        let compose = node_by_path("compose").unwrap();
        assert_eq!(
            profile_start(Profile::Compose as u32),
            Some(Start { scope: scope::COMPOSE_ENTRY, node: compose })
        );
        assert_eq!(profile_start(7), None);
    }
}
