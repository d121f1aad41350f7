//! The program's globals and maps, and the small accessors every module reads them with.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use enforcer_common::{
    abi::{
        BinaryInfo, COUNTER_COUNT, CgroupKey, FileId, FileKey, GENERATIONS, GatePath, HostKey, KernelOffsets,
        MAX_RULES, PolicyState, RuleConfig, Scratch, SocketNameKey, Token, TokenInfo, UserKey,
    },
    engine::Rules,
    grammar::Grammar,
};

use crate::exec::LoopState;

/// Kernel struct offsets, filled in by the loader from the running kernel's BTF.
#[unsafe(no_mangle)]
pub static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    binprm_file: 0,
    binprm_argc: 0,
    binprm_filename: 0,
    binprm_interp: 0,
    file_inode: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    regs_orig_ax: 0,
    regs_si: 0,
    regs_dx: 0,
    regs_r10: 0,
    binprm_p: 0,
    binprm_envc: 0,
    task_ptrace: 0,
    task_mm: 0,
    mm_exe_file: 0,
    unix_path_dentry: 0,
    dentry_inode: 0,
    unix_addr: 0,
    unix_address_name: 0,
    task_tgid: 0,
    task_seccomp_filter: 0,
    seccomp_filter_prev: 0,
    seccomp_filter_notif: 0,
    seccomp_filter_prog: 0,
    bpf_prog_orig_prog: 0,
    fprog_len: 0,
    fprog_filter: 0,
    msghdr_name: 0,
    task_cred: 0,
    cred_user_ns: 0,
    user_ns_level: 0,
    sock_addr_uaddr: 0,
    sock_addr_uaddrlen: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    task_real_parent: 0,
    valid: 0,
});

/// Thread group whose file opens `enforcer_fopen` reports (the loader), 0 for none.
#[unsafe(no_mangle)]
pub static PROBE_TGID: Global<u32> = Global::new(0);

// The policy and state maps are pinned in bpffs (the loader sets the directory), so they
// outlive the daemon: a restarted daemon adopts them and enforcement never lapses.

/// Which policy generation is in force (one entry). A reload fills the other generation
/// of the maps below, then flips `active`.
#[map]
pub static POLICY: Array<PolicyState> = Array::pinned(1, 0);

/// (generation, restricted real uid) -> bitmask of the rules that name it.
#[map]
pub static USERS: HashMap<UserKey, u32> = HashMap::pinned(8192, 0);

/// (generation, cgroup id) -> bitmask of the rules that name the cgroup.
#[map]
pub static CGROUPS: HashMap<CgroupKey, u32> = HashMap::pinned(1024, 0);

/// (generation, vetted binary identity) -> the rules that list it and its client profile.
#[map]
pub static BINARIES: HashMap<FileKey, BinaryInfo> = HashMap::pinned(512, 0);

/// (generation, identity of a docker API socket file) -> the rules that gate it.
#[map]
pub static SOCKETS: HashMap<FileKey, u32> = HashMap::pinned(256, 0);

/// (generation, identity of an API gate socket) -> the rule whose gate it is (one bit).
#[map]
pub static GATES: HashMap<FileKey, u32> = HashMap::pinned(64, 0);

/// (generation, path a docker API socket is bound to) -> the rules that gate it.
#[map]
pub static SOCKET_NAMES: HashMap<SocketNameKey, u32> = HashMap::pinned(256, 0);

/// generation * `MAX_RULES` + rule index -> the rule's gate socket path, where the connect
/// routing program sends the rule's identities.
#[map]
pub static GATE_PATHS: Array<GatePath> = Array::pinned(GENERATIONS * MAX_RULES as u32, 0);

/// (generation, a name of a gated rule's upstream docker socket) -> the rules whose
/// identities' connects to it are routed to their gate.
#[map]
pub static ROUTE_NAMES: HashMap<SocketNameKey, u32> = HashMap::pinned(64, 0);

/// (generation, docker API TCP address) -> the rules that gate it.
#[map]
pub static HOSTS: HashMap<HostKey, u32> = HashMap::pinned(256, 0);

/// generation * `MAX_RULES` + rule index -> compiled rule.
#[map]
pub static RULES: Array<RuleConfig> = Array::pinned(GENERATIONS * MAX_RULES as u32, 0);

/// Denials (and audit-mode would-be denials) for userspace.
#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(256 * 1024, 0);

/// Exact per-CPU counters (`COUNTER_*`, then per-rule ones), exact even when events are
/// dropped.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_COUNT, 0);

/// The docker CLI grammar: (scope, word) -> option or command. Not pinned: it belongs to
/// the program that was built with it.
#[map]
pub static GRAMMAR: HashMap<Token, TokenInfo> = HashMap::with_max_entries(2048, 0);

/// Per-CPU space too large for the stack; see `scratch`.
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The argv scan's state between `bpf_loop` iterations. It lives in a map value, not on
/// the stack: kernels before 6.8 verify a `bpf_loop` callback once, with the caller's
/// stack as it was at the call, so constants there (the scanner's initial state) would let
/// the verifier prune the callback's other branches as dead code. A map value is opaque
/// to the verifier, so every branch is verified and kept.
#[map]
pub static LOOP: PerCpuArray<LoopState> = PerCpuArray::with_max_entries(1, 0);

/// Whether this CPU's `SCRATCH` and `LOOP` are in use by a program run (1) or free (0).
/// A hook that needs them claims them with an atomic compare-and-exchange and fails
/// closed when another run holds them: under `preempt=full` or `PREEMPT_RT` a program can
/// be preempted and a second one run on the same CPU.
#[map]
pub static CLAIM: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `linux_binprm` address -> the policy serial (high 32 bits) and generation (low) its
/// early check judged by, so the re-check of the same exec judges by the same generation
/// even when a reload flipped it in between (otherwise a verdict that changed with the
/// policy would look like a race). Taken out again by the re-check; LRU so execs that
/// failed in between cannot fill it, and trusted only within one reload (`serial`), so an
/// entry left by such an exec cannot speak for a later one at the same address.
#[map]
pub static EXEC_GENERATION: LruHashMap<u64, u64> = LruHashMap::with_max_entries(1024, 0);

/// Thread id -> identity of the file it last opened (identity probe results).
#[map]
pub static PROBED: HashMap<u32, FileId> = HashMap::with_max_entries(64, 0);

/// A copy of the value `map` holds for `key`.
#[inline(always)]
pub fn lookup<K, V: Copy>(map: &HashMap<K, V>, key: &K) -> Option<V> {
    // SAFETY: `get` is unsafe because the reference it returns could see the value changed
    // or deleted meanwhile. The value is copied out at once (RCU keeps the element's
    // memory valid for the program run), so no reference outlives the lookup.
    unsafe { map.get(key) }.copied()
}

/// [`lookup`] for an LRU hash map.
#[inline(always)]
pub fn lookup_lru<K, V: Copy>(map: &LruHashMap<K, V>, key: &K) -> Option<V> {
    // SAFETY: as in `lookup`: the value is copied out at once.
    unsafe { map.get(key) }.copied()
}

/// Adds one to counter `index` of this CPU (a `Counter`, or a `rule_counter` index).
#[inline(always)]
pub fn count(index: impl Into<u32>) {
    if let Some(counter) = COUNTERS.get_ptr_mut(index.into()) {
        // SAFETY: a per-CPU map slot, valid and aligned for the whole program run, and
        // written only by programs on this CPU; no reference to it exists.
        unsafe { *counter += 1 };
    }
}

/// The rules of one policy generation.
pub struct KernelRules {
    pub generation: u32,
}

impl Rules for KernelRules {
    #[inline(always)]
    fn rule(&self, index: u32) -> Option<&RuleConfig> {
        RULES.get((self.generation & 1) * MAX_RULES as u32 + (index & (MAX_RULES as u32 - 1)))
    }
}

/// The docker CLI grammar in `GRAMMAR`.
pub struct MapGrammar;

impl Grammar for MapGrammar {
    #[inline(always)]
    fn lookup(&self, token: &Token) -> Option<TokenInfo> {
        lookup(&GRAMMAR, token)
    }
}
