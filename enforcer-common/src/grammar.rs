//! The docker CLI's top-level grammar: its global options and its command words.
//!
//! Taken from the docker CLI 28 (`docker --help`; cobra/pflag rules). Userspace loads
//! these words into the kernel's grammar map; the engine looks words up through the
//! [`Grammar`] trait, so the kernel and `enforcer check` decide with the same table.

use crate::abi::{TOKEN_COMMAND, TOKEN_GLOBAL_BOOL, TOKEN_GLOBAL_VALUE, Token, TokenInfo};

/// Global options of the docker CLI (root command flags) and whether they take a value.
/// Every option has its long form; `short` is its one-letter shorthand, if any.
pub struct GlobalOption {
    pub long: &'static str,
    pub short: Option<u8>,
    pub takes_value: bool,
}

pub const GLOBAL_OPTIONS: &[GlobalOption] = &[
    GlobalOption { long: "config", short: None, takes_value: true },
    GlobalOption { long: "context", short: Some(b'c'), takes_value: true },
    GlobalOption { long: "debug", short: Some(b'D'), takes_value: false },
    GlobalOption { long: "host", short: Some(b'H'), takes_value: true },
    GlobalOption { long: "log-level", short: Some(b'l'), takes_value: true },
    GlobalOption { long: "tls", short: None, takes_value: false },
    GlobalOption { long: "tlscacert", short: None, takes_value: true },
    GlobalOption { long: "tlscert", short: None, takes_value: true },
    GlobalOption { long: "tlskey", short: None, takes_value: true },
    GlobalOption { long: "tlsverify", short: None, takes_value: false },
    GlobalOption { long: "version", short: Some(b'v'), takes_value: false },
    GlobalOption { long: "help", short: Some(b'h'), takes_value: false },
];

/// Top-level command words of the docker CLI, including management commands (`container`,
/// `image`, ...) and the compose and buildx plugins. A command's id is its index here; ids
/// are stable only within one build (policies name commands, never ids).
pub const COMMANDS: &[&str] = &[
    // Common commands
    "run",
    "exec",
    "ps",
    "build",
    "pull",
    "push",
    "images",
    "login",
    "logout",
    "search",
    "version",
    "info",
    // Management commands
    "builder",
    "checkpoint",
    "container",
    "context",
    "image",
    "manifest",
    "network",
    "plugin",
    "system",
    "trust",
    "volume",
    // Swarm commands
    "config",
    "node",
    "secret",
    "service",
    "stack",
    "swarm",
    // Commands
    "attach",
    "commit",
    "cp",
    "create",
    "diff",
    "events",
    "export",
    "history",
    "import",
    "inspect",
    "kill",
    "load",
    "logs",
    "pause",
    "port",
    "rename",
    "restart",
    "rm",
    "rmi",
    "save",
    "start",
    "stats",
    "stop",
    "tag",
    "top",
    "unpause",
    "update",
    "wait",
    // cobra's own commands
    "help",
    "completion",
    // CLI plugins shipped with docker
    "compose",
    "buildx",
];

/// The command id of `word`, if it is a top-level docker command.
pub fn command_id(word: &str) -> Option<u32> {
    COMMANDS.iter().position(|&c| c == word).map(|i| i as u32)
}

/// The command word of `id`.
pub fn command_name(id: u32) -> Option<&'static str> {
    COMMANDS.get(id as usize).copied()
}

/// Looks grammar words up. The kernel implements it with a hash map filled from
/// [`entries`]; userspace with [`StaticGrammar`].
pub trait Grammar {
    fn lookup(&self, token: &Token) -> Option<TokenInfo>;
}

/// Calls `f` with every (word, meaning) pair of the grammar: the long (`--host`) and short
/// (`-H`) spelling of each global option, and each command word.
pub fn entries(mut f: impl FnMut(&[u8], TokenInfo)) {
    for opt in GLOBAL_OPTIONS {
        let kind = if opt.takes_value { TOKEN_GLOBAL_VALUE } else { TOKEN_GLOBAL_BOOL };
        let info = TokenInfo { kind, command: 0 };
        let mut long = [0u8; 32];
        long[..2].copy_from_slice(b"--");
        long[2..2 + opt.long.len()].copy_from_slice(opt.long.as_bytes());
        f(&long[..2 + opt.long.len()], info);
        if let Some(short) = opt.short {
            f(&[b'-', short], info);
        }
    }
    for (id, word) in COMMANDS.iter().enumerate() {
        f(word.as_bytes(), TokenInfo { kind: TOKEN_COMMAND, command: id as u32 });
    }
}

/// The grammar as a plain table walk, for userspace.
pub struct StaticGrammar;

impl Grammar for StaticGrammar {
    fn lookup(&self, token: &Token) -> Option<TokenInfo> {
        let mut found = None;
        entries(|word, info| {
            if found.is_none() && word == token.as_bytes() {
                found = Some(info);
            }
        });
        found
    }
}
