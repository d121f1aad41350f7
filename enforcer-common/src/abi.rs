//! `#[repr(C)]` types exchanged between the BPF programs and userspace through maps,
//! globals and the event ring buffer. Field order and sizes are an ABI: both sides are
//! built from this file, so they always agree.
//!
//! Tags (what a grammar word is, which hook decided, ...) are `#[repr(u32)]` enums: the
//! kernel stores them as `u32` (`Hook::Exec as u32`), and userspace decodes what it reads
//! back with `TryFrom<u32>`, so a value this build does not know is an error, not a guess.

/// A tag value read from a map or an event that no variant of its enum has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownTag {
    /// The enum's name (`"Hook"`).
    pub kind: &'static str,
    pub value: u32,
}

impl core::fmt::Display for UnknownTag {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "unknown {} tag {}", self.kind, self.value)
    }
}

/// Declares a `#[repr(u32)]` tag enum with `TryFrom<u32>` and the list of its variants.
/// A macro rather than a derive crate: the enums are compiled into the BPF object too,
/// and this keeps its dependencies at `core`.
macro_rules! tags {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident = $value:expr,)+
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$variant_meta])* $variant = $value,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
        }

        impl TryFrom<u32> for $name {
            type Error = $crate::abi::UnknownTag;

            fn try_from(value: u32) -> Result<Self, Self::Error> {
                $(if value == $value {
                    return Ok($name::$variant);
                })+
                Err($crate::abi::UnknownTag { kind: stringify!($name), value })
            }
        }

        impl From<$name> for u32 {
            fn from(tag: $name) -> u32 {
                tag as u32
            }
        }
    };
}
pub(crate) use tags;

/// Arguments after argv[0] that the engine scans before it gives up (Undecidable).
pub const MAX_ARGS: u32 = 64;
/// Bytes of one argument the kernel reads (including its NUL). A longer argument is
/// "truncated"; that only matters where the command word should be.
pub const ARG_BUF: usize = 256;
/// Longest word of the grammar (flag name or command word) plus room for a NUL.
pub const TOKEN_LEN: usize = 32;
/// Most characters in one group of short options (`-Dl`) the engine walks.
pub const MAX_SHORT_GROUP: usize = 16;
/// Rules one policy may hold: rule sets are `u32` bitmasks in the kernel.
pub const MAX_RULES: usize = 32;
/// Nodes of the command tree (`tree::NODES` plus the root): a rule's command set is a
/// bitmap of this many bits.
pub const MAX_NODES: usize = 512;
/// Policy generations kept in the kernel maps: the active one, and the one a reload fills
/// before it flips `PolicyState::active` (so no exec ever sees half a policy).
pub const GENERATIONS: u32 = 2;
/// Bytes of argv (NUL-separated) copied into a denial event for the audit log.
pub const EVENT_ARGV_LEN: usize = 512;
/// Bytes of the executed path copied into a denial event.
pub const EVENT_PATH_LEN: usize = 256;

/// `x86_64` syscall numbers (as `orig_ax` holds them) of the exec paths whose argv the
/// kernel program knows how to find. Any other exec path of a restricted user running a
/// vetted binary is undecidable and denied.
pub const NR_EXECVE: u64 = 59;
pub const NR_EXECVEAT: u64 = 322;

/// Strings (argv plus environment) the kernel walks to check a vetted client's
/// environment; an exec with more is refused (`Reason::TooManyStrings`).
pub const MAX_STRINGS: u32 = 4096;
/// Bytes of one environment string the kernel compares with the loader variables.
pub const ENV_PREFIX: usize = 32;
/// Chunk in which the kernel walks over a long string of its own argv copy to find the
/// next one. A string is at most 32 pages (`MAX_ARG_STRLEN`), so `MAX_SKIP_CHUNKS` chunks
/// always reach its end.
pub const SKIP_CHUNK: usize = 4096;
pub const MAX_SKIP_CHUNKS: u32 = 33;

/// Environment variables that make the dynamic loader run code of the caller's choice in
/// the program (glibc and musl honour them for non-setuid programs). A vetted client
/// executed with any of them is refused.
pub const LOADER_VARIABLES: [&[u8]; 3] = [b"LD_PRELOAD=", b"LD_AUDIT=", b"LD_LIBRARY_PATH="];

/// Whether an environment string (its first bytes, NUL-padded) sets a loader variable.
#[inline(always)]
pub fn is_loader_variable(prefix: &[u8; ENV_PREFIX]) -> bool {
    let mut v = 0;
    while v < LOADER_VARIABLES.len() {
        let name = LOADER_VARIABLES[v];
        let mut i = 0;
        while i < name.len() && prefix[i] == name[i] {
            i += 1;
        }
        if i == name.len() {
            return true;
        }
        v += 1;
    }
    false
}

/// Deepest cgroup level a rule's `cgroups` may name: the kernel looks up the current
/// task's ancestor at each level some rule names (a bitmask in `PolicyState`).
pub const MAX_CGROUP_LEVEL: u32 = 16;

/// `ptrace_access_check` mode bit of the accesses that can change a process
/// (`PTRACE_MODE_ATTACH`: ptrace, `/proc/PID/mem`, `process_vm_writev`, `pidfd_getfd`).
pub const PTRACE_MODE_ATTACH: u32 = 0x02;

/// Identity of a file as the kernel sees it: the superblock's `s_dev` (kernel encoding)
/// and the inode number. Userspace learns it from the kernel itself (see the identity
/// probe), never from `stat()`, whose `st_dev` differs on btrfs subvolumes and overlayfs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// Scopes of grammar words that are not a command group's node id.
pub mod scope {
    /// The root scope: the docker CLI's global options and top-level command words.
    pub const ROOT: u32 = 0;
    /// The scope a standalone `docker-compose` starts in: compose's flags and commands,
    /// the docker CLI's global options, and the word `compose` (the docker CLI runs its
    /// compose plugin as `docker-compose [GLOBAL OPTIONS] compose ...`).
    pub const COMPOSE_ENTRY: u32 = 0xffff;
}

/// A grammar word (flag spelling such as `--host` or `-H`, or a command word) in a scope:
/// the root, or the command group (by node id) whose flags and subcommands it names.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token {
    pub scope: u32,
    pub bytes: [u8; TOKEN_LEN],
}

impl Token {
    pub const fn empty(scope: u32) -> Self {
        Token { scope, bytes: [0; TOKEN_LEN] }
    }

    /// The token for `word`, or None when it does not fit (and so is no grammar word).
    pub fn from_bytes(scope: u32, word: &[u8]) -> Option<Self> {
        if word.len() >= TOKEN_LEN || word.contains(&0) {
            return None;
        }
        let mut token = Token::empty(scope);
        token.bytes[..word.len()].copy_from_slice(word);
        Some(token)
    }

    pub fn as_bytes(&self) -> &[u8] {
        let len = self.bytes.iter().position(|&b| b == 0).unwrap_or(TOKEN_LEN);
        &self.bytes[..len]
    }
}

/// What a grammar word is. Stored as the value of the kernel's grammar map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// `TokenKind` as u32.
    pub kind: u32,
    /// Node id for `TokenKind::Leaf`, `LeafPowerFlags`, `Group` and `FlagPower`, else 0.
    pub node: u32,
}

tags! {
    /// What a grammar word is (`TokenInfo::kind`).
    pub enum TokenKind {
        /// A flag that takes no value (`--debug`, `-D`).
        FlagBool = 1,
        /// A flag that takes a value (`--host h`, `--host=h`, `-Hh`, `-H h`).
        FlagValue = 2,
        /// A command without subcommands (`container exec`): the scan ends there.
        Leaf = 3,
        /// A command group (`container`, `compose`): its own flags and a subcommand may
        /// follow.
        Group = 4,
        /// A command without subcommands that has flags with another command's power
        /// (`container start -a` attaches): the scan reads its arguments for those flags.
        LeafPowerFlags = 5,
        /// In a `LeafPowerFlags` command's scope: a flag that turns it into the command
        /// `node` (`--attach` of `container start` -> `container attach`).
        FlagPower = 6,
    }
}

tags! {
    /// Which client a vetted binary is, so the engine knows where its argv starts
    /// (`BinaryInfo::profile`).
    pub enum Profile {
        /// The docker CLI.
        Docker = 0,
        /// The standalone `docker-compose` binary (or the compose plugin run by the docker
        /// CLI).
        Compose = 1,
    }
}

/// Where the scan of a client's argv starts: a scope and the node it stands for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Start {
    pub scope: u32,
    pub node: u32,
}

/// Value of the kernel's binaries map: the rules that list a vetted binary, and where the
/// engine starts reading its argv.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BinaryInfo {
    pub rules: u32,
    /// `Profile` as u32.
    pub profile: u32,
    pub start: Start,
}

/// Key of the kernel's users map: a real uid in one policy generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UserKey {
    pub generation: u32,
    pub uid: u32,
}

/// Key of the kernel's binaries and sockets maps: a file identity (a vetted client's
/// executable, a gated socket's inode) in one policy generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub generation: u32,
    pub _pad: u32,
    pub file: FileId,
}

/// The single entry of the kernel's policy state map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// The generation every exec is judged by. One aligned 4-byte store flips it.
    pub active: u32,
    /// Bumped by every load or reload, for `enforcer status`.
    pub serial: u32,
    /// Per generation: bit L set when some rule names a cgroup at level L, so the kernel
    /// looks up the current task's ancestor cgroup at that level (none: no lookup at all).
    pub cgroup_levels: [u32; GENERATIONS as usize],
    /// Per generation: the rules with the API gate on. Their identities reach the docker API
    /// only through their own rule's gate socket (the `GATES` map).
    pub gate_rules: [u32; GENERATIONS as usize],
    /// Per generation: the gated rules whose gate admits any client (`api_clients = "any"`),
    /// not only the rule's vetted binaries.
    pub any_client_rules: [u32; GENERATIONS as usize],
}

/// Key of the kernel's cgroups map: a cgroup (v2) id in one policy generation. Every
/// process in that cgroup or below it is restricted by the rules of the value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupKey {
    pub generation: u32,
    pub _pad: u32,
    pub id: u64,
}

/// Longest unix socket path (`sun_path`).
pub const SOCKET_NAME_LEN: usize = 108;

/// Key of the kernel's socket names map: the path a listening unix socket was bound to,
/// NUL-padded. It matches a socket that was re-created (the daemon restarted) before the
/// daemon re-learnt its inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketNameKey {
    pub generation: u32,
    pub name: [u8; SOCKET_NAME_LEN],
}

/// A rule's gate socket path (`sun_path`, `len` bytes, no NUL): where the connect routing
/// program (`cgroup/connect_unix`, 6.7+) sends a restricted task's connect to a docker API
/// socket. `len` 0: the rule has no gate.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatePath {
    pub len: u32,
    pub path: [u8; SOCKET_NAME_LEN],
}

/// Placeholder helper ids the routing program calls its two kfuncs by: no helper has
/// such ids, and the loader rewrites each such call into a kfunc call with the running
/// kernel's BTF id of the function (aya 0.14 cannot relocate kfunc calls itself). They
/// must fit in an `i32` (a call instruction's immediate).
pub const KFUNC_CAST_TO_KERN_CTX: u32 = 0x7e00_0001;
pub const KFUNC_SOCK_ADDR_SET_SUN_PATH: u32 = 0x7e00_0002;
/// The kernel functions the placeholders stand for, in the order of their ids.
pub const KFUNCS: [(u32, &str); 2] = [
    (KFUNC_CAST_TO_KERN_CTX, "bpf_cast_to_kern_ctx"),
    (KFUNC_SOCK_ADDR_SET_SUN_PATH, "bpf_sock_addr_set_sun_path"),
];

/// Key of the kernel's hosts map: a TCP address of the docker API. `family` is 4 or 6;
/// family 0 with a zero address stands for any address with this port (`*:2375`).
/// IPv4 addresses sit in the first 4 bytes of `addr`, the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostKey {
    pub generation: u32,
    pub port: u16,
    pub family: u16,
    pub addr: [u8; 16],
}

tags! {
    /// How a rule reads its command set (the low byte of `RuleConfig::flags`).
    pub enum RuleKind {
        /// The rule denies the commands in its set (everything else allowed).
        DenyList = 0,
        /// The rule allows only the commands in its set (everything else denied).
        AllowList = 1,
    }
}

/// Bits of `RuleConfig::flags` above its `RuleKind` byte.
pub mod rule_flag {
    /// Audit mode: record what would be denied, deny nothing.
    pub const AUDIT: u32 = 1 << 8;
}

/// One compiled rule, indexed by its position in the policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleConfig {
    /// Bitmap of node ids (see `tree::NODES`): the commands the rule lists, with every
    /// spelling, descendant and same-power command already expanded by the compiler.
    pub commands: [u64; MAX_NODES / 64],
    /// `RuleKind` as u32, or'ed with `rule_flag::*`.
    pub flags: u32,
    pub _pad: u32,
}

impl RuleConfig {
    pub fn set_command(&mut self, id: u32) {
        let id = id as usize % MAX_NODES;
        self.commands[id / 64] |= 1u64 << (id % 64);
    }

    #[inline(always)]
    pub fn has_command(&self, id: u32) -> bool {
        // Masking keeps the index provably in bounds for the verifier.
        let id = (id as usize) & (MAX_NODES - 1);
        let word = self.commands[(id >> 6) & (MAX_NODES / 64 - 1)];
        (word >> (id & 63)) & 1 == 1
    }

    pub fn is_allow_list(&self) -> bool {
        self.flags & 0xff == RuleKind::AllowList as u32
    }

    pub fn is_audit(&self) -> bool {
        self.flags & rule_flag::AUDIT != 0
    }
}

/// Byte offsets of the kernel struct fields the BPF programs read. Computed by userspace
/// from the running kernel's BTF and handed to the programs as a load-time global, so
/// nothing kernel-specific is compiled into the object.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub binprm_file: u32,
    pub binprm_argc: u32,
    pub binprm_filename: u32,
    pub binprm_interp: u32,
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    pub regs_orig_ax: u32,
    pub regs_si: u32,
    pub regs_dx: u32,
    pub regs_r10: u32,
    /// `linux_binprm.p`: the kernel's own copy of argv and the environment, in the new mm.
    pub binprm_p: u32,
    pub binprm_envc: u32,
    pub task_ptrace: u32,
    pub task_mm: u32,
    pub mm_exe_file: u32,
    /// `unix_sock.path` + `path.dentry`: the socket file a listening unix socket is bound to.
    pub unix_path_dentry: u32,
    pub dentry_inode: u32,
    pub unix_addr: u32,
    /// `unix_address.name`, a `sockaddr_un` (its `sun_path` 2 bytes further).
    pub unix_address_name: u32,
    pub task_tgid: u32,
    /// `task_struct.seccomp` + `seccomp.filter`: the newest filter of the task's chain.
    pub task_seccomp_filter: u32,
    /// `seccomp_filter.prev`, `.notif` (non-NULL while a listener fd is open), `.prog`.
    pub seccomp_filter_prev: u32,
    pub seccomp_filter_notif: u32,
    pub seccomp_filter_prog: u32,
    /// `bpf_prog.orig_prog`: the classic BPF the filter was installed as (kept on `x86_64`).
    pub bpf_prog_orig_prog: u32,
    /// `sock_fprog_kern.len` (u16) and `.filter` (`struct sock_filter *`).
    pub fprog_len: u32,
    pub fprog_filter: u32,
    /// `msghdr.msg_name`: the destination of a `sendto`/`sendmsg` (a kernel copy).
    pub msghdr_name: u32,
    /// `task_struct.cred`, `cred.user_ns`, `user_namespace.level` (0: the initial one).
    pub task_cred: u32,
    pub cred_user_ns: u32,
    pub user_ns_level: u32,
    /// `bpf_sock_addr_kern.uaddr` and `.uaddrlen`, for the connect routing program; 0 on
    /// kernels without `cgroup/connect_unix` (before 6.7), which do not load it.
    pub sock_addr_uaddr: u32,
    pub sock_addr_uaddrlen: u32,
    /// `task_struct.nsproxy`, `nsproxy.mnt_ns` (the mount namespace a task resolves paths
    /// in) and `task_struct.real_parent`, for the routing program (0: unknown).
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub task_real_parent: u32,
    /// Non-zero once userspace filled this struct in; a program that sees 0 fails closed.
    pub valid: u32,
}

tags! {
    /// Global counters: the first indices of the per-CPU counters map.
    pub enum Counter {
        Checked = 0,
        Allowed = 1,
        Denied = 2,
        Undecidable = 3,
        Audited = 4,
        EventsDropped = 5,
        /// argv or the environment changed between the early check and the kernel's copy:
        /// the authoritative re-check killed the exec.
        Races = 6,
        /// Execs the authoritative re-check killed (races, and deferred execs it denied).
        Killed = 7,
        /// Execs whose argv only the re-check can see (a `#!` interpreter, `binfmt_misc`,
        /// the 32-bit exec entry): the early check let them on to the re-check.
        Deferred = 8,
        /// Connections to a gated docker API socket or address refused to an unvetted
        /// client.
        ConnectsRefused = 9,
        /// ptrace-class accesses to a running vetted client refused.
        TamperRefused = 10,
        /// A restricted task's hook found this CPU's scratch space in use by another
        /// program run (possible under `preempt=full` or `PREEMPT_RT`) and failed closed
        /// without a record.
        ScratchBusy = 11,
        /// docker API requests the gate refused. Only the daemon writes this slot (no
        /// program touches it, so its read-modify-write races with nothing).
        ApiRefused = 12,
        /// A restricted task's connect to a docker API socket path that the routing
        /// program (`cgroup/connect_unix`, 6.7+) sent to its rule's gate socket.
        GateRouted = 13,
    }
}

/// Indices below this are global counters (`Counter`); per-rule counters follow.
pub const GLOBAL_COUNTERS: u32 = 16;

tags! {
    /// Per-rule counters, for each rule of each generation, at
    /// `GLOBAL_COUNTERS + (generation * MAX_RULES + rule) * RULE_COUNTERS + kind`.
    pub enum RuleCounter {
        Denied = 0,
        Undecidable = 1,
        Audited = 2,
    }
}

/// Per-rule counter slots (one spare).
pub const RULE_COUNTERS: u32 = 4;
pub const COUNTER_COUNT: u32 = GLOBAL_COUNTERS + GENERATIONS * MAX_RULES as u32 * RULE_COUNTERS;

/// The counter index of `kind` for `rule` in `generation`.
#[inline(always)]
pub const fn rule_counter(generation: u32, rule: u32, kind: RuleCounter) -> u32 {
    GLOBAL_COUNTERS
        + (((generation & 1) * MAX_RULES as u32 + (rule & (MAX_RULES as u32 - 1))) * RULE_COUNTERS)
        + (kind as u32 & 3)
}

tags! {
    /// What the kernel did (`DenialEvent::action`).
    pub enum Action {
        Denied = 1,
        /// Audit mode: would have been denied, was allowed.
        Audited = 2,
        /// The authoritative re-check killed the exec (SIGKILL before its first
        /// instruction).
        Killed = 3,
    }
}

tags! {
    /// The hook that decided (`DenialEvent::hook`).
    pub enum Hook {
        /// `bprm_check_security`: the early exec check.
        Exec = 0,
        /// `bprm_committing_creds`: the re-check on the kernel's copy of argv.
        ExecCommit = 1,
        UnixConnect = 2,
        InetConnect = 3,
        Ptrace = 4,
        Prctl = 5,
        /// `socket_sendmsg` with a destination (`sendto(..., MSG_FASTOPEN, addr)` connects
        /// TCP without `socket_connect`).
        InetSend = 6,
    }
}

/// `prctl` option that rewrites the memory map's fields, `mm->exe_file` among them
/// (`PR_SET_MM_EXE_FILE`, `PR_SET_MM_MAP`).
pub const PR_SET_MM: i32 = 35;

/// Seccomp filters of one chain the exec check walks; a longer chain is refused.
pub const MAX_SECCOMP_FILTERS: u32 = 128;
/// Classic BPF instructions the exec check reads across one chain: the kernel's own limit
/// for a chain (`MAX_INSNS_PER_PATH`), so a chain the kernel accepted is never too long.
pub const MAX_SECCOMP_INSNS: u32 = 32768;
/// Instructions read per step of the walk (one `sock_filter` is 8 bytes).
pub const SECCOMP_CHUNK: usize = 8;

/// Whether one classic BPF instruction of a seccomp filter can make a system call appear
/// to succeed without running it, or returns a computed action: `SECCOMP_RET_ERRNO` with
/// errno 0 returns 0 (so `socket()` "returns" fd 0), `SECCOMP_RET_TRAP` leaves the system
/// call's number in the return register (`socket()` "returns" fd 41 to a client that
/// ignores SIGSYS), `BPF_RET | BPF_A` returns whatever the filter computed. Every other
/// return action runs the call, fails it with an error, kills, or (`SECCOMP_RET_TRACE`,
/// `SECCOMP_RET_USER_NOTIF`) asks a tracer or a listener, which are checked apart.
#[inline(always)]
pub fn seccomp_insn_fakes_success(code: u16, k: u32) -> bool {
    const BPF_CLASS_RET: u16 = 0x06;
    const BPF_RVAL_MASK: u16 = 0x18;
    const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
    const SECCOMP_RET_DATA: u32 = 0x0000_ffff;
    if code & 0x07 != BPF_CLASS_RET {
        return false;
    }
    if code & BPF_RVAL_MASK != 0 {
        return true;
    }
    let action = k & SECCOMP_RET_ACTION_FULL;
    action == SECCOMP_RET_TRAP || (action == SECCOMP_RET_ERRNO && k & SECCOMP_RET_DATA == 0)
}

/// Bits of `DenialEvent::flags`.
pub mod event_flag {
    /// The early check allowed what the kernel's own copy denies.
    pub const RACE: u32 = 1;
    /// The early check could not see this exec's argv and deferred.
    pub const DEFERRED: u32 = 2;
}

/// Bytes of `DenialEvent::target`: a socket path (`sun_path`, NUL-padded) or a `HostKey`.
pub const EVENT_TARGET_LEN: usize = 112;
const _: () = assert!(SOCKET_NAME_LEN <= EVENT_TARGET_LEN && 4 + 16 <= EVENT_TARGET_LEN);

/// One record in the events ring buffer: an exec that a rule denied (or, in audit mode,
/// would have denied).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DenialEvent {
    /// `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`) when the exec was decided.
    pub ktime_ns: u64,
    pub file: FileId,
    pub pid: u32,
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Index of the rule that decided.
    pub rule: u32,
    /// `Action` as u32.
    pub action: u32,
    /// `Reason` as u32.
    pub reason: u32,
    /// Node id of the command when `reason` is `Reason::Command`.
    pub command: u32,
    /// argc as the kernel counted it.
    pub argc: u32,
    /// Bytes used in `argv` (each argument NUL-terminated).
    pub argv_len: u32,
    /// 1 when not all of argv fit into `argv`.
    pub argv_truncated: u32,
    /// The policy generation that judged.
    pub generation: u32,
    /// `Hook` as u32.
    pub hook: u32,
    /// `event_flag::*`.
    pub flags: u32,
    /// The process being traced (`Hook::Ptrace`), the `PR_SET_MM` option (`Hook::Prctl`),
    /// else 0.
    pub target_pid: u32,
    pub _pad: u32,
    /// The acting task's command name.
    pub comm: [u8; 16],
    /// `bprm->filename`: the path as the caller passed it.
    pub path: [u8; EVENT_PATH_LEN],
    /// What a connect or send was refused for: for `Hook::UnixConnect`, the socket's bound
    /// path (a C string); for `Hook::InetConnect` and `Hook::InetSend`, the `HostKey` it
    /// matched without its generation: port and family (native endian), then the 16
    /// address bytes. Empty for the other hooks.
    pub target: [u8; EVENT_TARGET_LEN],
    /// argv[0..], NUL-separated (exec hooks only). Extra `ARG_BUF` bytes of slack let the
    /// kernel copy a whole argument at any offset below `EVENT_ARGV_LEN` with bounds the
    /// verifier can prove.
    pub argv: [u8; EVENT_ARGV_LEN + ARG_BUF],
}

/// Per-CPU scratch space of the BPF program (its stack is only 512 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scratch {
    pub arg: ArgBuf,
    pub event: DenialEvent,
    /// Where the re-check walks over long strings of the kernel's argv copy.
    pub skip: [u8; SKIP_CHUNK],
    pub env: [u8; ENV_PREFIX],
    pub socket_name: SocketNameKey,
    /// Classic BPF instructions of a seccomp filter being checked (code, jt, jf, k).
    pub seccomp: [u64; SECCOMP_CHUNK],
}

/// One argument as read by the kernel: up to `ARG_BUF - 1` bytes and a NUL.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ArgBuf {
    pub bytes: [u8; ARG_BUF],
    /// Bytes before the NUL.
    pub len: u32,
    /// 0 when the argument was longer than the buffer (so `bytes` holds only its start).
    pub complete: u32,
}

impl ArgBuf {
    pub const fn new() -> Self {
        ArgBuf { bytes: [0; ARG_BUF], len: 0, complete: 1 }
    }

    /// Fill from a userspace argument (host side: `enforcer check`, tests). Mirrors what the
    /// kernel's `bpf_probe_read_user_str` into `ARG_BUF` bytes yields.
    pub fn set(&mut self, arg: &[u8]) {
        let arg = match arg.iter().position(|&b| b == 0) {
            Some(nul) => &arg[..nul],
            None => arg,
        };
        let n = if arg.len() >= ARG_BUF { ARG_BUF - 1 } else { arg.len() };
        self.bytes[..n].copy_from_slice(&arg[..n]);
        self.bytes[n] = 0;
        self.len = n as u32;
        // The kernel cannot tell an argument of exactly ARG_BUF-1 bytes from a longer one.
        self.complete = (n < ARG_BUF - 1) as u32;
    }
}

impl Default for ArgBuf {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(text: &str) -> [u8; ENV_PREFIX] {
        let mut buf = [0u8; ENV_PREFIX];
        let n = text.len().min(ENV_PREFIX - 1);
        buf[..n].copy_from_slice(&text.as_bytes()[..n]);
        buf
    }

    #[test]
    fn seccomp_returns_that_fake_success() {
        const RET_K: u16 = 0x06;
        const RET_A: u16 = 0x16;
        // ERRNO(0): the call "succeeds" with 0 without running.
        assert!(seccomp_insn_fakes_success(RET_K, 0x0005_0000));
        // A computed return could be anything.
        assert!(seccomp_insn_fakes_success(RET_A, 0));
        // A trap leaves the call's number as its result.
        assert!(seccomp_insn_fakes_success(RET_K, 0x0003_0000));
        assert!(seccomp_insn_fakes_success(RET_K, 0x0003_0007));
        // systemd's and docker's default profiles: EPERM/ENOSYS, allow, kill, log; trace and
        // user notification are judged apart.
        for k in [
            0x0005_0001,
            0x0005_0026,
            0x0005_ffff,
            0x7fff_0000,
            0x0000_0000,
            0x8000_0000,
            0x7ffc_0000,
            0x7ff0_0000,
            0x7fc0_0000,
        ] {
            assert!(!seccomp_insn_fakes_success(RET_K, k), "{k:#x}");
        }
        // Not a return: loads and jumps carry any k.
        assert!(!seccomp_insn_fakes_success(0x20, 0x0005_0000));
        assert!(!seccomp_insn_fakes_success(0x15, 0x0005_0000));
    }

    #[test]
    fn tags_decode_what_they_encode_and_nothing_else() {
        for &hook in Hook::ALL {
            assert_eq!(Hook::try_from(hook as u32), Ok(hook));
        }
        for &kind in TokenKind::ALL {
            assert_eq!(TokenKind::try_from(u32::from(kind)), Ok(kind));
        }
        assert_eq!(Counter::ALL.len(), Counter::GateRouted as usize + 1);
        assert!(Counter::ALL.iter().all(|&c| (c as u32) < GLOBAL_COUNTERS));
        assert_eq!(Hook::try_from(7), Err(UnknownTag { kind: "Hook", value: 7 }));
        assert_eq!(Action::try_from(0), Err(UnknownTag { kind: "Action", value: 0 }));
        assert_eq!(Profile::try_from(u32::MAX).map_err(|e| e.kind), Err("Profile"));
    }

    #[test]
    fn rule_counters_stay_in_their_rule_block() {
        for generation in 0..GENERATIONS {
            for rule in 0..MAX_RULES as u32 {
                for &kind in RuleCounter::ALL {
                    let index = rule_counter(generation, rule, kind);
                    let block = GLOBAL_COUNTERS + (generation * MAX_RULES as u32 + rule) * RULE_COUNTERS;
                    assert!((block..block + RULE_COUNTERS).contains(&index) && index < COUNTER_COUNT);
                }
            }
        }
    }

    #[test]
    fn loader_variables() {
        for text in ["LD_PRELOAD=/tmp/x.so", "LD_AUDIT=a", "LD_LIBRARY_PATH=", "LD_PRELOAD="] {
            assert!(is_loader_variable(&prefix(text)), "{text}");
        }
        for text in ["LD_PRELOADX=1", "LD_PRELOAD", "PATH=/bin", "XLD_PRELOAD=1", "LD_BIND_NOW=1", ""] {
            assert!(!is_loader_variable(&prefix(text)), "{text}");
        }
        // What follows the NUL (a previous, longer string in the same buffer) is ignored.
        let mut stale = prefix("LD_PRELOAD=/x");
        stale[2] = 0;
        assert!(!is_loader_variable(&stale));
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::{
        BinaryInfo, CgroupKey, FileId, FileKey, GatePath, HostKey, KernelOffsets, PolicyState, RuleConfig,
        SocketNameKey, Token, TokenInfo, UserKey,
    };

    macro_rules! pod {
        ($($name:ty),+ $(,)?) => {$(
            // SAFETY: `#[repr(C)]` structs of integers and integer arrays only: no pointers,
            // every bit pattern is a valid value, and no implicit padding (fields are laid
            // out at their natural alignment; `_pad` fields fill what alignment would leave).
            unsafe impl aya::Pod for $name {}
        )+};
    }

    pod!(
        FileId,
        Token,
        TokenInfo,
        RuleConfig,
        BinaryInfo,
        UserKey,
        FileKey,
        PolicyState,
        CgroupKey,
        SocketNameKey,
        GatePath,
        HostKey,
        KernelOffsets
    );
}
