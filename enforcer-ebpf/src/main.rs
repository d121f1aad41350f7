//! The enforcer's BPF LSM programs.
//!
//! A process is *restricted* when its real uid is in a rule, or it runs in (or below) a
//! cgroup a rule names. For a restricted process:
//!
//! - `enforcer_bprm` (`bprm_check_security`, every exec) finds the docker command in the
//!   argv of an exec of a vetted client (matched by file identity) with the shared engine,
//!   and returns -EPERM when a rule denies it, the engine cannot decide, the exec is traced
//!   or its environment loads code. It reads the caller's memory, which another thread can
//!   change after the kernel copied it: this check gives the clean error, it is not the
//!   authority.
//! - `enforcer_commit` (`bprm_committing_creds`, past the point of no return) judges the
//!   kernel's own copy of argv and the environment, which is exactly what the client
//!   receives, and kills the task before its first instruction when that is denied.
//! - `enforcer_unix_connect` / `enforcer_inet_connect` admit a connection to a gated docker
//!   API socket (by inode or bound path) or TCP address only from a vetted client.
//! - `enforcer_ptrace` refuses ptrace-class access to a running vetted client.
//!
//! For everyone else each hook costs one array read and one hash lookup (plus one lookup
//! per cgroup level when rules name cgroups).
//!
//! `enforcer_fopen` runs at `file_open` only while the loader resolves paths: it reports
//! the identity the kernel itself uses for a file the loader opened.
#![no_std]
#![no_main]
// The BPF target has no atomic compare-and-exchange in `core::sync::atomic` (rustc does
// not mark it CAS-capable), but LLVM lowers the intrinsic to BPF's `cmpxchg` (ISA v3,
// which every kernel enforcer supports): the scratch claim needs it.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(
    target_arch = "bpf",
    allow(internal_features, reason = "core_intrinsics: atomic_cxchg for the scratch claim, see above")
)]

use core::ffi::c_void;

use aya_ebpf::{
    Global,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_get_current_uid_gid, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm, bpf_loop,
            bpf_probe_read_kernel as probe_read_kernel_raw, bpf_probe_read_kernel_str,
            bpf_probe_read_user_str, bpf_send_signal, bpf_task_pt_regs,
        },
    },
    macros::{lsm, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::LsmContext,
};
use enforcer_common::{
    abi::{
        ARG_BUF, Action, ArgBuf, BinaryInfo, COUNTER_COUNT, CgroupKey, Counter, DenialEvent, ENV_PREFIX,
        EVENT_ARGV_LEN, EVENT_PATH_LEN, FileId, FileKey, GENERATIONS, Hook, HostKey, KernelOffsets, MAX_ARGS,
        MAX_CGROUP_LEVEL, MAX_RULES, MAX_SECCOMP_FILTERS, MAX_SECCOMP_INSNS, MAX_SKIP_CHUNKS, MAX_STRINGS,
        NR_EXECVE, NR_EXECVEAT, PR_SET_MM, PTRACE_MODE_ATTACH, PolicyState, RuleConfig, RuleCounter,
        SECCOMP_CHUNK, SKIP_CHUNK, SOCKET_NAME_LEN, Scratch, SocketNameKey, Start, Token, TokenInfo, UserKey,
        event_flag, is_loader_variable, rule_counter, seccomp_insn_fakes_success,
    },
    engine::{ALLOWED, ArgSource, ArgvScan, Decision, ReadError, Reason, Rules, Scan, Verdict, judge_rule},
    grammar::Grammar,
};

const EPERM: i32 = 1;
const SIGKILL: u32 = 9;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Kernel struct offsets, filled in by the loader from the running kernel's BTF.
#[unsafe(no_mangle)]
static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
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
    valid: 0,
});

/// Thread group whose file opens `enforcer_fopen` reports (the loader), 0 for none.
#[unsafe(no_mangle)]
static PROBE_TGID: Global<u32> = Global::new(0);

// The policy and state maps are pinned in bpffs (the loader sets the directory), so they
// outlive the daemon: a restarted daemon adopts them and enforcement never lapses.

/// Which policy generation is in force (one entry). A reload fills the other generation
/// of the maps below, then flips `active`.
#[map]
static POLICY: Array<PolicyState> = Array::pinned(1, 0);

/// (generation, restricted real uid) -> bitmask of the rules that name it.
#[map]
static USERS: HashMap<UserKey, u32> = HashMap::pinned(8192, 0);

/// (generation, cgroup id) -> bitmask of the rules that name the cgroup.
#[map]
static CGROUPS: HashMap<CgroupKey, u32> = HashMap::pinned(1024, 0);

/// (generation, vetted binary identity) -> the rules that list it and its client profile.
#[map]
static BINARIES: HashMap<FileKey, BinaryInfo> = HashMap::pinned(512, 0);

/// (generation, identity of a docker API socket file) -> the rules that gate it.
#[map]
static SOCKETS: HashMap<FileKey, u32> = HashMap::pinned(256, 0);

/// (generation, path a docker API socket is bound to) -> the rules that gate it.
#[map]
static SOCKET_NAMES: HashMap<SocketNameKey, u32> = HashMap::pinned(256, 0);

/// (generation, docker API TCP address) -> the rules that gate it.
#[map]
static HOSTS: HashMap<HostKey, u32> = HashMap::pinned(256, 0);

/// generation * MAX_RULES + rule index -> compiled rule.
#[map]
static RULES: Array<RuleConfig> = Array::pinned(GENERATIONS * MAX_RULES as u32, 0);

/// Denials (and audit-mode would-be denials) for userspace.
#[map]
static EVENTS: RingBuf = RingBuf::pinned(256 * 1024, 0);

/// Exact per-CPU counters (`COUNTER_*`, then per-rule ones), exact even when events are
/// dropped.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(COUNTER_COUNT, 0);

/// The docker CLI grammar: (scope, word) -> option or command. Not pinned: it belongs to
/// the program that was built with it.
#[map]
static GRAMMAR: HashMap<Token, TokenInfo> = HashMap::with_max_entries(2048, 0);

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The argv scan's state between `bpf_loop` iterations. It lives in a map value, not on
/// the stack: kernels before 6.8 verify a `bpf_loop` callback once, with the caller's
/// stack as it was at the call, so constants there (the scanner's initial state) would let
/// the verifier prune the callback's other branches as dead code. A map value is opaque
/// to the verifier, so every branch is verified and kept.
#[map]
static LOOP: PerCpuArray<LoopState> = PerCpuArray::with_max_entries(1, 0);

/// Whether this CPU's `SCRATCH` and `LOOP` are in use by a program run (1) or free (0).
/// A hook that needs them claims them with an atomic compare-and-exchange and fails
/// closed when another run holds them: under `preempt=full` or PREEMPT_RT a program can
/// be preempted and a second one run on the same CPU.
#[map]
static CLAIM: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `linux_binprm` address -> the policy serial (high 32 bits) and generation (low) its
/// early check judged by, so the re-check of the same exec judges by the same generation
/// even when a reload flipped it in between (otherwise a verdict that changed with the
/// policy would look like a race). Taken out again by the re-check; LRU so execs that
/// failed in between cannot fill it, and trusted only within one reload (`serial`), so an
/// entry left by such an exec cannot speak for a later one at the same address.
#[map]
static EXEC_GENERATION: LruHashMap<u64, u64> = LruHashMap::with_max_entries(1024, 0);

/// Thread id -> identity of the file it last opened (identity probe results).
#[map]
static PROBED: HashMap<u32, FileId> = HashMap::with_max_entries(64, 0);

/// The per-CPU scratch space. The pointer is read back through a volatile load, so the
/// compiler cannot compute a field's address before the null check (the verifier refuses
/// arithmetic on a pointer that may be null).
#[inline(always)]
fn scratch_ptr() -> Option<*mut Scratch> {
    let ptr = SCRATCH.get_ptr_mut(0)?;
    Some(unsafe { core::ptr::read_volatile(&ptr) })
}

/// Claims this CPU's scratch space for the current program run (see `CLAIM`).
#[inline(always)]
fn claim_scratch() -> bool {
    let Some(flag) = CLAIM.get_ptr_mut(0) else { return false };
    // SAFETY: a per-CPU map value, valid and 8-byte aligned for the whole program run;
    // every access to it is this atomic exchange or (the release) a store by the holder.
    unsafe { compare_exchange(flag, 0, 1) }
}

/// Atomically replaces `*ptr` by `new` when it is `old`; whether it was.
///
/// # Safety
/// `ptr` is valid and 8-byte aligned, and accessed only atomically meanwhile.
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn compare_exchange(ptr: *mut u64, old: u64, new: u64) -> bool {
    use core::intrinsics::{AtomicOrdering, atomic_cxchg};
    // SAFETY: as the caller promises.
    unsafe { atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(ptr, old, new).1 }
}

/// The host build (unit tests of this crate) has the stable API.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
unsafe fn compare_exchange(ptr: *mut u64, old: u64, new: u64) -> bool {
    use core::sync::atomic::{AtomicU64, Ordering};
    // SAFETY: as the caller promises.
    unsafe { AtomicU64::from_ptr(ptr) }.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst).is_ok()
}

/// Releases what `claim_scratch` claimed.
#[inline(always)]
fn release_scratch() {
    if let Some(flag) = CLAIM.get_ptr_mut(0) {
        // SAFETY: as in `claim_scratch`. Sequentially consistent, so no scratch access of
        // this run moves past it (BPF has no fence instruction to ask for that apart).
        unsafe { compare_exchange(flag, 1, 0) };
    }
}

/// Evaluates `$body` with this CPU's scratch space claimed; when another run holds it,
/// counts that and evaluates `$busy` instead (the caller's fail-closed verdict). A macro,
/// not a function taking closures: the body must be inlined into the hook, or its stack
/// frame adds to the hook's and the two exceed the verifier's 512 bytes.
macro_rules! with_scratch {
    ($busy:expr, $body:expr $(,)?) => {{
        if !claim_scratch() {
            count(Counter::ScratchBusy);
            $busy
        } else {
            // Hidden from the optimiser: knowing the body yields 0 or -1, LLVM computes
            // the result below as `-(verdict & 1)`, and the verifier does not track a
            // negation's range (6.12 then rejects the program's return value).
            let verdict: i32 = core::hint::black_box($body);
            release_scratch();
            // Only 0 and -EPERM are ever returned; saying so keeps the value provably in
            // the LSM return range (6.12 checks it).
            if verdict == 0 { 0 } else { -EPERM }
        }
    }};
}

/// The rules of one policy generation.
struct KernelRules {
    generation: u32,
}

impl Rules for KernelRules {
    #[inline(always)]
    fn rule(&self, index: u32) -> Option<&RuleConfig> {
        RULES.get((self.generation & 1) * MAX_RULES as u32 + (index & (MAX_RULES as u32 - 1)))
    }
}

struct MapGrammar;

impl Grammar for MapGrammar {
    #[inline(always)]
    fn lookup(&self, token: &Token) -> Option<TokenInfo> {
        unsafe { GRAMMAR.get(token) }.copied()
    }
}

#[inline(always)]
fn count(index: impl Into<u32>) {
    if let Some(counter) = COUNTERS.get_ptr_mut(index.into()) {
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
unsafe fn read_kernel<T: Copy>(base: u64, offset: u32) -> Result<T, i32> {
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }
}

/// The identity of `file` (a `struct file *`).
#[inline(always)]
unsafe fn file_identity(file: u64, off: &KernelOffsets) -> Result<FileId, i32> {
    unsafe {
        let inode: u64 = read_kernel(file, off.file_inode)?;
        inode_identity(inode, off)
    }
}

#[inline(always)]
unsafe fn inode_identity(inode: u64, off: &KernelOffsets) -> Result<FileId, i32> {
    if inode == 0 {
        return Err(-1);
    }
    unsafe {
        let ino: u64 = read_kernel(inode, off.inode_ino)?;
        let sb: u64 = read_kernel(inode, off.inode_sb)?;
        let dev: u32 = read_kernel(sb, off.sb_dev)?;
        Ok(FileId { dev: dev as u64, ino })
    }
}

/// The identity of the executable `task` runs (`task->mm->exe_file`).
#[inline(always)]
unsafe fn exe_identity(task: u64, off: &KernelOffsets) -> Result<FileId, i32> {
    unsafe {
        let mm: u64 = read_kernel(task, off.task_mm)?;
        if mm == 0 {
            return Err(-1);
        }
        let exe: u64 = read_kernel(mm, off.mm_exe_file)?;
        if exe == 0 {
            return Err(-1);
        }
        file_identity(exe, off)
    }
}

/// The generation in force and the policy state.
#[inline(always)]
fn policy() -> Option<(u32, PolicyState)> {
    POLICY.get(0).map(|state| (state.active & 1, *state))
}

/// The rules that restrict the current task in `generation`: by its real uid, and by the
/// cgroups it runs in when some rule names cgroups.
#[inline(always)]
fn restricted_rules(state: &PolicyState, generation: u32) -> u32 {
    let uid = bpf_get_current_uid_gid() as u32;
    let mut rules = match unsafe { USERS.get(&UserKey { generation, uid }) } {
        Some(rules) => *rules,
        None => 0,
    };
    let levels = state.cgroup_levels[(generation & 1) as usize];
    if levels != 0 {
        rules |= cgroup_rules(generation, levels);
    }
    rules
}

/// The generation in force and the rules that restrict the current task; None for everyone
/// else (one array read and one hash lookup, the path nearly every hook call takes).
#[inline(always)]
fn restricted() -> Option<(u32, u32)> {
    restricted_in_force().map(|(generation, rules, _)| (generation, rules))
}

/// [`restricted`], with the policy serial read in the same look at `POLICY` (the early
/// exec check records both, so they always belong to one policy).
#[inline(always)]
fn restricted_in_force() -> Option<(u32, u32, u32)> {
    let (generation, state) = policy()?;
    let rules = restricted_rules(&state, generation);
    if rules == 0 { None } else { Some((generation, rules, state.serial)) }
}

/// Rules naming one of the current task's ancestor cgroups (or its own) at the levels
/// in `levels`.
#[inline(never)]
fn cgroup_rules(generation: u32, levels: u32) -> u32 {
    let mut rules = 0;
    let mut level = 0;
    while level < MAX_CGROUP_LEVEL {
        if levels & (1 << level) != 0 {
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
            if let Some(found) = unsafe { CGROUPS.get(&CgroupKey { generation, _pad: 0, id }) } {
                rules |= *found;
            }
        }
        level += 1;
    }
    rules
}

/// The per-CPU event, reset for a new decision.
#[inline(always)]
fn begin_event(hook: u32, generation: u32) -> Option<&'static mut DenialEvent> {
    let scratch = scratch_ptr()?;
    // SAFETY: per-CPU map value, valid for the whole program run; no preemption here.
    let event = unsafe { &mut (*scratch).event };
    event.argv_len = 0;
    event.argv_truncated = 0;
    event.argc = 0;
    // The connect hooks' target is a C string: an empty one when they cannot read it.
    event.target[0] = 0;
    event.file = FileId::default();
    event.command = u32::MAX;
    event.action = 0;
    event.rule = 0;
    event.generation = generation;
    event.hook = hook;
    event.flags = 0;
    event.target_pid = 0;
    event.path[0] = 0;
    unsafe { bpf_get_current_comm(event.comm.as_mut_ptr() as *mut _, event.comm.len() as u32) };
    Some(event)
}

/// Fills in who acted and when, and queues the event for userspace.
#[inline(always)]
fn send_event(event: &mut DenialEvent) {
    let pid_tgid = bpf_get_current_pid_tgid();
    event.pid = pid_tgid as u32;
    event.tgid = (pid_tgid >> 32) as u32;
    let uid_gid = bpf_get_current_uid_gid();
    event.uid = uid_gid as u32;
    event.gid = (uid_gid >> 32) as u32;
    event.ktime_ns = unsafe { bpf_ktime_get_ns() };
    if EVENTS.output::<DenialEvent>(&*event, 0).is_err() {
        count(Counter::EventsDropped);
    }
}

/// Reads argv[i] from the exec caller's memory; with `log`, copies each argument it reads
/// into the event's argv log (only done after a denial, so an allowed exec pays nothing).
struct UserArgv {
    argv: u64,
    event: *mut DenialEvent,
    log: bool,
}

/// Reads argv from the kernel's own copy at `bprm->p` (in the new mm, current at
/// `bprm_committing_creds`): NUL-terminated strings one after the other, so it can only
/// be read in order.
struct CopyArgv {
    cursor: u64,
    index: u32,
    event: *mut DenialEvent,
    log: bool,
}

#[inline(always)]
fn log_arg(event: *mut DenialEvent, buf: &ArgBuf) {
    let event = unsafe { &mut *event };
    let offset = event.argv_len as usize;
    if offset >= EVENT_ARGV_LEN {
        event.argv_truncated = 1;
        return;
    }
    // The argument and its NUL: 1..=ARG_BUF bytes (a cut-short argument fills the buffer).
    let size = (buf.len as usize).min(ARG_BUF - 1) + 1;
    // The event's argv has ARG_BUF bytes of slack past EVENT_ARGV_LEN, so any offset
    // below EVENT_ARGV_LEN plus any size below ARG_BUF stays inside it.
    let dst = unsafe { event.argv.as_mut_ptr().add(offset & (EVENT_ARGV_LEN - 1)) };
    let copied = unsafe { probe_read_kernel_raw(dst as *mut _, size as u32, buf.bytes.as_ptr() as *const _) };
    if copied == 0 {
        event.argv_len = (offset + size) as u32;
    }
}

/// Sets the buffer's length from what `bpf_probe_read_user_str` returned.
#[inline(always)]
fn fill_len(buf: &mut ArgBuf, n: i64) -> Result<(), ReadError> {
    if n <= 0 {
        return Err(ReadError);
    }
    let n = (n as u32).min(ARG_BUF as u32);
    buf.len = n - 1;
    // A full buffer cannot tell "exactly fits" from "cut short": treat as cut short.
    buf.complete = (n < ARG_BUF as u32) as u32;
    Ok(())
}

impl ArgSource for UserArgv {
    #[inline(always)]
    fn read(&mut self, index: u32, buf: &mut ArgBuf) -> Result<(), ReadError> {
        let index = index & 0xffff;
        let ptr: u64 = unsafe { bpf_probe_read_user((self.argv + 8 * index as u64) as *const u64) }
            .map_err(|_| ReadError)?;
        let n = unsafe {
            bpf_probe_read_user_str(buf.bytes.as_mut_ptr() as *mut _, ARG_BUF as u32, ptr as *const _)
        };
        fill_len(buf, n)?;
        if self.log {
            log_arg(self.event, buf);
        }
        Ok(())
    }
}

/// The address just past the NUL of the string at `pos` in the current mm, reading it in
/// `SKIP_CHUNK` pieces.
#[inline(always)]
fn string_end(mut pos: u64) -> Result<u64, ReadError> {
    let scratch = scratch_ptr().ok_or(ReadError)?;
    let chunk = unsafe { (*scratch).skip.as_mut_ptr() };
    let mut i = 0;
    while i < MAX_SKIP_CHUNKS {
        let n = unsafe { bpf_probe_read_user_str(chunk as *mut _, SKIP_CHUNK as u32, pos as *const _) };
        if n <= 0 {
            return Err(ReadError);
        }
        if (n as usize) < SKIP_CHUNK {
            return Ok(pos + n as u64);
        }
        // No NUL among the first SKIP_CHUNK - 1 bytes (the helper wrote its own last).
        pos += SKIP_CHUNK as u64 - 1;
        i += 1;
    }
    Err(ReadError)
}

impl ArgSource for CopyArgv {
    #[inline(always)]
    fn read(&mut self, index: u32, buf: &mut ArgBuf) -> Result<(), ReadError> {
        if index != self.index {
            return Err(ReadError);
        }
        let n = unsafe {
            bpf_probe_read_user_str(buf.bytes.as_mut_ptr() as *mut _, ARG_BUF as u32, self.cursor as *const _)
        };
        fill_len(buf, n)?;
        self.cursor = if buf.complete != 0 {
            self.cursor + n as u64
        } else {
            string_end(self.cursor + ARG_BUF as u64 - 1)?
        };
        self.index += 1;
        if self.log {
            log_arg(self.event, buf);
        }
        Ok(())
    }
}

/// An argv source that lives in the loop state between `bpf_loop` iterations.
trait LoopSource: ArgSource {
    fn load(state: &LoopState, event: *mut DenialEvent, log: bool) -> Self;
    fn store(&self, state: &mut LoopState);
}

impl LoopSource for UserArgv {
    #[inline(always)]
    fn load(state: &LoopState, event: *mut DenialEvent, log: bool) -> Self {
        UserArgv { argv: state.argv, event, log }
    }

    #[inline(always)]
    fn store(&self, _: &mut LoopState) {}
}

impl LoopSource for CopyArgv {
    #[inline(always)]
    fn load(state: &LoopState, event: *mut DenialEvent, log: bool) -> Self {
        CopyArgv { cursor: state.cursor, index: state.cursor_index, event, log }
    }

    #[inline(always)]
    fn store(&self, state: &mut LoopState) {
        state.cursor = self.cursor;
        state.cursor_index = self.index;
    }
}

/// State shared between the programs and their `bpf_loop` callbacks (in the `LOOP` map).
pub struct LoopState {
    /// The caller's argv and envp arrays (early check).
    argv: u64,
    envp: u64,
    argc: u32,
    envc: u32,
    /// Next argument index to scan.
    next: u32,
    /// The kernel's copy (re-check): where it starts, and the address of string
    /// `cursor_index`.
    copy_start: u64,
    cursor: u64,
    cursor_index: u32,
    /// The environment walk found a loader variable, or could not finish.
    env: Option<Reason>,
    scan: ArgvScan,
    result: Option<Scan>,
    /// The seccomp walk: the next filter of the chain, the next instruction of the
    /// current one and how many of its instructions are left, filters and instructions
    /// seen so far, and the verdict (None: nothing refused, once `seccomp_done`).
    seccomp_filter: u64,
    seccomp_insn: u64,
    seccomp_left: u32,
    seccomp_filters: u32,
    seccomp_insns: u32,
    seccomp_done: bool,
    seccomp: Option<Reason>,
    /// Judging: the rules that apply, their generation, and the decision once found.
    rules: u32,
    generation: u32,
    decision: Option<Decision>,
}

/// What `bpf_loop` hands its callbacks: the callback context must be a stack pointer on
/// 6.1, so it holds a pointer to the state in the `LOOP` map. Passing it also tells the
/// compiler that the callbacks write the state.
struct LoopCtx {
    state: *mut LoopState,
}

/// The loop state behind a callback's context.
#[inline(always)]
fn loop_state(ctx: *mut c_void) -> &'static mut LoopState {
    // SAFETY: `ctx` is the `LoopCtx` on the caller's stack, pointing at the per-CPU map
    // value, which is valid for the whole program run (no preemption here).
    unsafe { &mut *(*(ctx as *mut LoopCtx)).state }
}

/// The per-CPU argument buffer and event.
#[inline(always)]
fn scratch_parts() -> Option<(&'static mut ArgBuf, *mut DenialEvent)> {
    let scratch = scratch_ptr()?;
    // SAFETY: per-CPU map value, valid for the whole program run; no preemption here.
    unsafe { Some((&mut (*scratch).arg, &mut (*scratch).event as *mut DenialEvent)) }
}

/// bpf_loop callback: judges the scan against rule `index`; stops at the first rule that
/// does not allow.
#[inline(never)]
extern "C" fn judge_one(index: u64, ctx: *mut c_void) -> i64 {
    let state = loop_state(ctx);
    let scan = match state.result {
        Some(scan) => scan,
        None => Scan::Undecidable(Reason::NotConfigured),
    };
    match judge_rule(scan, state.rules, index as u32, &KernelRules { generation: state.generation }) {
        Some(decision) => {
            state.decision = Some(decision);
            1
        }
        None => 0,
    }
}

/// bpf_loop callback: scans one more argument; stops the loop once the scan is decided.
#[inline(never)]
extern "C" fn scan_one<S: LoopSource>(_: u64, ctx: *mut c_void) -> i64 {
    let state = loop_state(ctx);
    let Some((buf, event)) = scratch_parts() else {
        state.result = Some(Scan::Undecidable(Reason::NotConfigured));
        return 1;
    };
    let mut source = S::load(state, event, false);
    let index = state.next;
    state.next = index + 1;
    let result = state.scan.step(&mut source, state.argc, index, buf, &MapGrammar);
    source.store(state);
    match result {
        Some(result) => {
            state.result = Some(result);
            1
        }
        None => 0,
    }
}

/// bpf_loop callback: reads one more argument, into the event's log when `LOG` (after a
/// denial, from argv[0] on), until argv or the log ends. Without `LOG` it only steps over
/// argv[0] of the kernel's copy, which can only be read in order.
#[inline(never)]
extern "C" fn read_one<S: LoopSource, const LOG: bool>(_: u64, ctx: *mut c_void) -> i64 {
    let state = loop_state(ctx);
    let Some((buf, event)) = scratch_parts() else { return 1 };
    let index = state.next;
    let logged = unsafe { (*event).argv_len } as usize;
    if index >= state.argc || index > MAX_ARGS || logged >= EVENT_ARGV_LEN {
        return 1;
    }
    state.next = index + 1;
    let mut source = S::load(state, event, LOG);
    let read = source.read(index, buf);
    source.store(state);
    if read.is_err() { 1 } else { 0 }
}

/// bpf_loop callback: checks the caller's environment string `index`.
#[inline(never)]
extern "C" fn env_user_one(index: u64, ctx: *mut c_void) -> i64 {
    let state = loop_state(ctx);
    if index as u32 >= state.envc {
        return 1;
    }
    let Some(scratch) = scratch_ptr() else {
        state.env = Some(Reason::NotConfigured);
        return 1;
    };
    let index = index & 0xffff;
    let Ok(ptr) = (unsafe { bpf_probe_read_user::<u64>((state.envp + 8 * index) as *const u64) }) else {
        state.env = Some(Reason::UnreadableArgv);
        return 1;
    };
    if env_string_refused(state, scratch, ptr) { 1 } else { 0 }
}

/// Reads the start of the environment string at `ptr` (in the current mm) and records why
/// it ends the walk, if it does: unreadable, or a loader variable.
#[inline(always)]
fn env_string_refused(state: &mut LoopState, scratch: *mut Scratch, ptr: u64) -> bool {
    let prefix = unsafe { &mut (*scratch).env };
    let n =
        unsafe { bpf_probe_read_user_str(prefix.as_mut_ptr() as *mut _, ENV_PREFIX as u32, ptr as *const _) };
    if n <= 0 {
        state.env = Some(Reason::UnreadableArgv);
        return true;
    }
    if is_loader_variable(prefix) {
        state.env = Some(Reason::LoaderEnvironment);
        return true;
    }
    false
}

/// bpf_loop callback: walks one string of the kernel's copy: argv strings are stepped
/// over, environment strings checked.
#[inline(never)]
extern "C" fn env_copy_one(_: u64, ctx: *mut c_void) -> i64 {
    let state = loop_state(ctx);
    if state.cursor_index >= state.argc + state.envc {
        return 1;
    }
    let Some(scratch) = scratch_ptr() else {
        state.env = Some(Reason::NotConfigured);
        return 1;
    };
    if state.cursor_index >= state.argc && env_string_refused(state, scratch, state.cursor) {
        return 1;
    }
    match string_end(state.cursor) {
        Ok(end) => {
            state.cursor = end;
            state.cursor_index += 1;
            0
        }
        Err(_) => {
            state.env = Some(Reason::UnreadableArgv);
            1
        }
    }
}

/// bpf_loop callback: one step of the seccomp walk: enter the next filter of the chain
/// (refusing one with a listener), or check the next chunk of the current filter's
/// instructions for returns that fake success.
#[inline(never)]
extern "C" fn seccomp_one(_: u64, ctx: *mut c_void) -> i64 {
    let state = loop_state(ctx);
    let off = OFFSETS.load();
    let refuse = |state: &mut LoopState, reason: Reason| {
        state.seccomp = Some(reason);
        1
    };
    if state.seccomp_left == 0 {
        let filter = state.seccomp_filter;
        if filter == 0 {
            state.seccomp_done = true;
            return 1;
        }
        if state.seccomp_filters >= MAX_SECCOMP_FILTERS {
            return refuse(state, Reason::SeccompUnreadable);
        }
        state.seccomp_filters += 1;
        // SAFETY (these reads): `filter` is a `struct seccomp_filter *` of the current
        // task's chain, which cannot shrink while the task runs; the helper checks it.
        let Ok(notif) = (unsafe { read_kernel::<u64>(filter, off.seccomp_filter_notif) }) else {
            return refuse(state, Reason::SeccompUnreadable);
        };
        if notif != 0 {
            return refuse(state, Reason::SeccompListener);
        }
        let program = unsafe { read_kernel::<u64>(filter, off.seccomp_filter_prog) }.unwrap_or(0);
        let original = if program == 0 {
            0
        } else {
            unsafe { read_kernel::<u64>(program, off.bpf_prog_orig_prog) }.unwrap_or(0)
        };
        if original == 0 {
            return refuse(state, Reason::SeccompUnreadable);
        }
        let (Ok(len), Ok(insns), Ok(prev)) = (
            unsafe { read_kernel::<u16>(original, off.fprog_len) },
            unsafe { read_kernel::<u64>(original, off.fprog_filter) },
            unsafe { read_kernel::<u64>(filter, off.seccomp_filter_prev) },
        ) else {
            return refuse(state, Reason::SeccompUnreadable);
        };
        state.seccomp_insns += len as u32;
        if state.seccomp_insns > MAX_SECCOMP_INSNS || insns == 0 {
            return refuse(state, Reason::SeccompUnreadable);
        }
        state.seccomp_insn = insns;
        state.seccomp_left = len as u32;
        state.seccomp_filter = prev;
        return 0;
    }
    let Some(scratch) = scratch_ptr() else { return refuse(state, Reason::NotConfigured) };
    let n = state.seccomp_left.min(SECCOMP_CHUNK as u32);
    let size = (((n - 1) & (SECCOMP_CHUNK as u32 - 1)) + 1) * 8;
    // SAFETY: the scratch map value is this run's (claimed); `size` is at most its
    // `seccomp` array's 64 bytes.
    let chunk = unsafe { &mut (*scratch).seccomp };
    let read = unsafe {
        probe_read_kernel_raw(chunk.as_mut_ptr() as *mut _, size, state.seccomp_insn as *const c_void)
    };
    if read != 0 {
        return refuse(state, Reason::SeccompUnreadable);
    }
    let mut i = 0;
    while i < SECCOMP_CHUNK {
        if i as u32 >= n {
            break;
        }
        // `struct sock_filter`: u16 code, u8 jt, u8 jf, u32 k (little-endian).
        let insn = chunk[i];
        if seccomp_insn_fakes_success(insn as u16, (insn >> 32) as u32) {
            return refuse(state, Reason::SeccompFakeSuccess);
        }
        i += 1;
    }
    state.seccomp_insn += size as u64;
    state.seccomp_left -= n;
    0
}

/// Why the current task's seccomp filters make it unfit to run a vetted client, if they
/// do: a filter with a user-notification listener (another process answers its system
/// calls), one that can fake a call's success, or a chain that cannot be walked within
/// bounds. Plain filters (allow, errno, kill, log, trap) pass.
#[inline(always)]
unsafe fn seccomp_refusal(off: &KernelOffsets) -> Option<Reason> {
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    let Ok(head) = (unsafe { read_kernel::<u64>(task, off.task_seccomp_filter) }) else {
        return Some(Reason::SeccompUnreadable);
    };
    if head == 0 {
        return None;
    }
    let Some(state) = LOOP.get_ptr_mut(0) else { return Some(Reason::NotConfigured) };
    unsafe {
        (*state).seccomp_filter = head;
        (*state).seccomp_insn = 0;
        (*state).seccomp_left = 0;
        (*state).seccomp_filters = 0;
        (*state).seccomp_insns = 0;
        (*state).seccomp_done = false;
        (*state).seccomp = None;
    }
    let mut ctx = LoopCtx { state };
    // Filters plus chunks of instructions, with room to spare: the walk ends by itself.
    let steps = MAX_SECCOMP_FILTERS * 2 + MAX_SECCOMP_INSNS / SECCOMP_CHUNK as u32;
    unsafe { bpf_loop(steps, seccomp_one as *mut c_void, &mut ctx as *mut _ as *mut c_void, 0) };
    match unsafe { core::ptr::read_volatile(&(*state).seccomp) } {
        Some(reason) => Some(reason),
        None if unsafe { core::ptr::read_volatile(&(*state).seccomp_done) } => None,
        None => Some(Reason::SeccompUnreadable),
    }
}

/// The caller's argv and envp, from the saved registers of the exec syscall running.
/// `UnsupportedExecPath` for an exec entry whose registers the program does not know
/// (the 32-bit one): only the re-check can see that exec's argv.
#[inline(always)]
unsafe fn caller_exec(off: &KernelOffsets) -> Result<(u64, u64), Reason> {
    let task = unsafe { bpf_get_current_task_btf() };
    let regs = unsafe { bpf_task_pt_regs(task) } as u64;
    if regs == 0 {
        return Err(Reason::UnsupportedExecPath);
    }
    let nr: u64 = unsafe { read_kernel(regs, off.regs_orig_ax) }.map_err(|_| Reason::UnreadableArgv)?;
    let (argv_reg, envp_reg) = if nr == NR_EXECVE {
        (off.regs_si, off.regs_dx)
    } else if nr == NR_EXECVEAT {
        (off.regs_dx, off.regs_r10)
    } else {
        return Err(Reason::UnsupportedExecPath);
    };
    let argv = unsafe { read_kernel(regs, argv_reg) }.map_err(|_| Reason::UnreadableArgv)?;
    let envp = unsafe { read_kernel(regs, envp_reg) }.map_err(|_| Reason::UnreadableArgv)?;
    Ok((argv, envp))
}

/// Whether the caller's argv is not what the binary receives: a `#!` script or a
/// binfmt_misc handler rewrote it, or the exec came through an entry the early check
/// cannot read. The re-check decides those on the kernel's copy.
#[inline(always)]
unsafe fn deferred(bprm: u64, off: &KernelOffsets) -> bool {
    let filename: u64 = unsafe { read_kernel(bprm, off.binprm_filename) }.unwrap_or(0);
    let interp: u64 = unsafe { read_kernel(bprm, off.binprm_interp) }.unwrap_or(1);
    filename != interp || matches!(unsafe { caller_exec(off) }, Err(Reason::UnsupportedExecPath))
}

/// Whether the current task runs in a user namespace other than the initial one, where it
/// can mount over (or chroot away from) the loader and libraries a vetted client loads.
/// The check holds for namespaces created by the caller and for ones it joined alike: an
/// unprivileged task can change its mount namespace or root only inside a user namespace
/// of its own (`mntns_install` and `chroot` need the capability in the initial one
/// otherwise), and `setns`/`unshare` of a user namespace need an unshared `fs_struct`.
#[inline(always)]
unsafe fn foreign_user_namespace(off: &KernelOffsets) -> Result<bool, i32> {
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    let cred: u64 = unsafe { read_kernel(task, off.task_cred) }?;
    let user_ns: u64 = unsafe { read_kernel(cred, off.cred_user_ns) }?;
    let level: u32 = unsafe { read_kernel(user_ns, off.user_ns_level) }?;
    Ok(level != 0)
}

/// Whether the current task is being traced (its tracer could rewrite the client).
#[inline(always)]
unsafe fn traced(off: &KernelOffsets) -> Result<bool, i32> {
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    let ptrace: u32 = unsafe { read_kernel(task, off.task_ptrace) }?;
    Ok(ptrace != 0)
}

/// Where an exec's argv and environment are read from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `bprm_check_security`: the caller's memory.
    Early,
    /// `bprm_committing_creds`: the kernel's copy.
    Commit,
}

/// The vetted binary an exec runs and the rules of the restricted caller that list it.
#[inline(always)]
unsafe fn vetted_exec(
    bprm: u64,
    off: &KernelOffsets,
    generation: u32,
    user_rules: u32,
) -> Result<Option<(FileId, BinaryInfo)>, Reason> {
    let identity = match unsafe { read_kernel::<u64>(bprm, off.binprm_file) }
        .and_then(|file| unsafe { file_identity(file, off) })
    {
        Ok(identity) => identity,
        Err(_) => return Err(Reason::UnreadableFile),
    };
    match unsafe { BINARIES.get(&FileKey { generation, _pad: 0, file: identity }) } {
        Some(binary) if binary.rules & user_rules != 0 => Ok(Some((identity, *binary))),
        _ => Ok(None),
    }
}

#[lsm(hook = "bprm_check_security")]
pub fn enforcer_bprm(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some((generation, user_rules, serial)) = restricted_in_force() else { return 0 };
    let bprm: u64 = ctx.arg(0);
    unsafe { check_exec(bprm, generation, user_rules, Stage::Early, serial) }
}

/// The generation the early check of this exec judged by, else the one in force, and the
/// rules that restrict the current task in it.
#[inline(always)]
fn restricted_for_commit(bprm: u64) -> Option<(u32, u32)> {
    let (active, state) = policy()?;
    // SAFETY: a plain value copied out of the map.
    let generation = match unsafe { EXEC_GENERATION.get(&bprm) }.copied() {
        Some(judged) => {
            let _ = EXEC_GENERATION.remove(&bprm);
            let serial = (judged >> 32) as u32;
            if serial == state.serial || serial.wrapping_add(1) == state.serial {
                judged as u32 & 1
            } else {
                active
            }
        }
        None => active,
    };
    let rules = restricted_rules(&state, generation);
    if rules == 0 { None } else { Some((generation, rules)) }
}

/// The authoritative re-check, after the point of no return: `current->mm` is the new mm
/// and `bprm->p` the kernel's copy of argv and the environment, exactly what the client
/// receives. A denial kills the task before its first instruction.
#[lsm(hook = "bprm_committing_creds")]
pub fn enforcer_commit(ctx: LsmContext) -> i32 {
    let bprm: u64 = ctx.arg(0);
    let Some((generation, user_rules)) = restricted_for_commit(bprm) else { return 0 };
    unsafe { check_exec(bprm, generation, user_rules, Stage::Commit, 0) };
    0
}

/// Judges an exec of a restricted task at either stage; returns the LSM verdict (the
/// commit stage kills instead). `serial` is the policy serial the early check saw with
/// `generation` (unused at the commit stage).
#[inline(always)]
unsafe fn check_exec(bprm: u64, generation: u32, user_rules: u32, stage: Stage, serial: u32) -> i32 {
    let off = OFFSETS.load();
    let hook = if stage == Stage::Early { Hook::Exec as u32 } else { Hook::ExecCommit as u32 };
    let vetted = if off.valid == 0 {
        Err(Reason::NotConfigured)
    } else {
        unsafe { vetted_exec(bprm, &off, generation, user_rules) }
    };
    // Most execs of a restricted user are not of a vetted client: they end here.
    if let Ok(None) = vetted {
        return 0;
    }
    if stage == Stage::Early {
        let judged = ((serial as u64) << 32) | generation as u64;
        let _ = EXEC_GENERATION.insert(&bprm, &judged, 0);
    }
    // A denial at the re-check kills; so does finding the scratch space busy there.
    // (Each outcome of `vetted` is its own branch: a merged enum would carry registers
    // the verifier sees as never written.)
    let busy = || {
        if stage == Stage::Commit {
            unsafe { bpf_send_signal(SIGKILL) };
        }
        -EPERM
    };
    match vetted {
        Ok(Some((identity, binary))) => {
            with_scratch!(busy(), unsafe {
                judge_exec(bprm, generation, user_rules, stage, identity, binary)
            })
        }
        Ok(None) => 0, // returned above
        Err(reason) => with_scratch!(busy(), {
            match begin_event(hook, generation) {
                Some(event) => unsafe {
                    finish_exec(event, user_rules, Verdict::Undecidable(reason), stage, false)
                },
                None => -EPERM,
            }
        }),
    }
}

/// `check_exec` for a vetted client, with the scratch space claimed.
#[inline(always)]
unsafe fn judge_exec(
    bprm: u64,
    generation: u32,
    user_rules: u32,
    stage: Stage,
    identity: FileId,
    binary: BinaryInfo,
) -> i32 {
    let off = OFFSETS.load();
    let hook = if stage == Stage::Early { Hook::Exec as u32 } else { Hook::ExecCommit as u32 };
    let Some(event) = begin_event(hook, generation) else { return -EPERM };
    let rules = binary.rules & user_rules;
    let deferred = unsafe { deferred(bprm, &off) };
    if stage == Stage::Early {
        count(Counter::Checked);
    }
    event.file = identity;
    if let Ok(filename) = unsafe { read_kernel::<u64>(bprm, off.binprm_filename) } {
        unsafe {
            bpf_probe_read_kernel_str(
                event.path.as_mut_ptr() as *mut _,
                EVENT_PATH_LEN as u32,
                filename as *const _,
            )
        };
    }
    let pre = match (unsafe { traced(&off) }, unsafe { foreign_user_namespace(&off) }) {
        (Ok(true), _) => Some(Reason::Traced),
        (_, Ok(true)) => Some(Reason::UserNamespace),
        (Ok(false), Ok(false)) => unsafe { seccomp_refusal(&off) },
        _ => Some(Reason::NotConfigured),
    };
    if pre.is_none() && deferred && stage == Stage::Early {
        count(Counter::Deferred);
        return 0;
    }
    let verdict = unsafe { decide(bprm, &off, generation, rules, binary.start, stage, pre) };
    // `decide` wrote the event through the scratch map: take it afresh.
    let Some(event) = begin_event_keep() else { return -EPERM };
    if stage == Stage::Commit {
        event.flags = if deferred { event_flag::DEFERRED } else { event_flag::RACE };
    }
    unsafe { finish_exec(event, rules, verdict, stage, deferred) }
}

/// The per-CPU event as it is (not reset).
#[inline(always)]
fn begin_event_keep() -> Option<&'static mut DenialEvent> {
    let scratch = scratch_ptr()?;
    // SAFETY: per-CPU map value, valid for the whole program run; no preemption here.
    Some(unsafe { &mut (*scratch).event })
}

/// Reads argv (and the environment) at `stage`, judges it against every rule in `rules`
/// with the shared `judge_rule`, one rule per `bpf_loop` iteration. The rule that decides
/// is recorded in the event with the rest of argv. `pre` is a refusal found before argv.
#[inline(always)]
unsafe fn decide(
    bprm: u64,
    off: &KernelOffsets,
    generation: u32,
    rules: u32,
    start: Start,
    stage: Stage,
    pre: Option<Reason>,
) -> Verdict {
    let Some(state) = LOOP.get_ptr_mut(0) else {
        return Verdict::Undecidable(Reason::NotConfigured);
    };
    unsafe {
        *state = LoopState {
            argv: 0,
            envp: 0,
            argc: 0,
            envc: 0,
            next: 0,
            copy_start: 0,
            cursor: 0,
            cursor_index: 0,
            env: None,
            seccomp_filter: 0,
            seccomp_insn: 0,
            seccomp_left: 0,
            seccomp_filters: 0,
            seccomp_insns: 0,
            seccomp_done: false,
            seccomp: None,
            scan: ArgvScan::new(start),
            result: None,
            rules,
            generation,
            decision: None,
        }
    };
    let mut ctx = LoopCtx { state };
    let scan = match pre {
        Some(reason) => Scan::Undecidable(reason),
        None => match stage {
            Stage::Early => unsafe { scan_caller(bprm, off, &mut ctx) },
            Stage::Commit => unsafe { scan_copy(bprm, off, &mut ctx) },
        },
    };
    unsafe { (*state).result = Some(scan) };
    // One rule per iteration: a plain loop over 32 rules loses the verifier its bound.
    let ran =
        unsafe { bpf_loop(MAX_RULES as u32, judge_one as *mut c_void, &mut ctx as *mut _ as *mut c_void, 0) };
    let decision = match unsafe { core::ptr::read_volatile(&(*state).decision) } {
        Some(decision) => decision,
        None if ran >= 0 => ALLOWED,
        None => Decision { verdict: Verdict::Undecidable(Reason::NotConfigured), rule: 0, audit: false },
    };
    if decision.verdict != Verdict::Allow {
        if let Some(event) = begin_event_keep() {
            event.rule = decision.rule;
            event.action = if decision.audit { Action::Audited as u32 } else { Action::Denied as u32 };
        }
        // argv for the log, from argv[0], when argv was read at all.
        if unsafe { (*state).argc } != 0 {
            unsafe {
                (*state).next = 0;
                (*state).cursor = (*state).copy_start;
                (*state).cursor_index = 0;
            }
            let log = match stage {
                Stage::Early => read_one::<UserArgv, true> as *mut c_void,
                Stage::Commit => read_one::<CopyArgv, true> as *mut c_void,
            };
            unsafe { bpf_loop(MAX_ARGS + 1, log, &mut ctx as *mut _ as *mut c_void, 0) };
        }
    }
    decision.verdict
}

/// Reads argc and, after `#!` or binfmt_misc, nothing else: stores argc in the state and
/// the event.
#[inline(always)]
unsafe fn read_counts(bprm: u64, off: &KernelOffsets, state: *mut LoopState) -> Result<(), Reason> {
    let argc: i32 = unsafe { read_kernel(bprm, off.binprm_argc) }.map_err(|_| Reason::UnreadableArgv)?;
    let envc: i32 = unsafe { read_kernel(bprm, off.binprm_envc) }.map_err(|_| Reason::UnreadableArgv)?;
    if argc < 0 || envc < 0 || argc as u32 + envc as u32 > MAX_STRINGS {
        return Err(Reason::TooManyStrings);
    }
    unsafe {
        (*state).argc = argc as u32;
        (*state).envc = envc as u32;
    }
    if let Some(event) = begin_event_keep() {
        event.argc = argc as u32;
    }
    Ok(())
}

/// The scan of the caller's argv (early check), after its environment.
#[inline(always)]
unsafe fn scan_caller(bprm: u64, off: &KernelOffsets, ctx: &mut LoopCtx) -> Scan {
    let state = ctx.state;
    if let Err(reason) = unsafe { read_counts(bprm, off, state) } {
        return Scan::Undecidable(reason);
    }
    match unsafe { caller_exec(off) } {
        Ok((argv, envp)) => unsafe {
            (*state).argv = argv;
            (*state).envp = envp;
        },
        Err(reason) => return Scan::Undecidable(reason),
    }
    let envc = unsafe { (*state).envc };
    let walked = unsafe { bpf_loop(envc, env_user_one as *mut c_void, ctx as *mut _ as *mut c_void, 0) };
    // argv[0] is the program name, which docker ignores.
    unsafe { (*state).next = 1 };
    if let Some(reason) = unsafe { core::ptr::read_volatile(&(*state).env) } {
        return Scan::Undecidable(reason);
    }
    if walked < 0 {
        return Scan::Undecidable(Reason::NotConfigured);
    }
    unsafe { run_scan(ctx, scan_one::<UserArgv> as *mut c_void) }
}

/// The scan of the kernel's copy (re-check), after its environment.
#[inline(always)]
unsafe fn scan_copy(bprm: u64, off: &KernelOffsets, ctx: &mut LoopCtx) -> Scan {
    let state = ctx.state;
    if let Err(reason) = unsafe { read_counts(bprm, off, state) } {
        return Scan::Undecidable(reason);
    }
    let Ok(p) = (unsafe { read_kernel::<u64>(bprm, off.binprm_p) }) else {
        return Scan::Undecidable(Reason::UnreadableArgv);
    };
    unsafe {
        (*state).copy_start = p;
        (*state).cursor = p;
        (*state).cursor_index = 0;
    }
    // Step over argv[0], scan argv, then walk on from where the scan stopped, over the
    // rest of argv and through the environment: each string is read once.
    unsafe { bpf_loop(1, read_one::<CopyArgv, false> as *mut c_void, ctx as *mut _ as *mut c_void, 0) };
    unsafe { (*state).next = 1 };
    let scan = unsafe { run_scan(ctx, scan_one::<CopyArgv> as *mut c_void) };
    let walked =
        unsafe { bpf_loop(MAX_STRINGS, env_copy_one as *mut c_void, ctx as *mut _ as *mut c_void, 0) };
    if let Some(reason) = unsafe { core::ptr::read_volatile(&(*state).env) } {
        return Scan::Undecidable(reason);
    }
    if walked < 0 {
        return Scan::Undecidable(Reason::NotConfigured);
    }
    scan
}

#[inline(always)]
unsafe fn run_scan(ctx: &mut LoopCtx, callback: *mut c_void) -> Scan {
    let state = ctx.state;
    let ran = unsafe { bpf_loop(MAX_ARGS + 1, callback, ctx as *mut _ as *mut c_void, 0) };
    match unsafe { core::ptr::read_volatile(&(*state).result) } {
        Some(result) if ran >= 0 => result,
        // `step` always decides by index MAX_ARGS + 1, so this is a failed bpf_loop.
        _ => Scan::Undecidable(Reason::NotConfigured),
    }
}

/// Counts, records and returns the verdict of an exec check. At the commit stage a
/// denial kills the task; an audit-mode verdict there is recorded only for a deferred
/// exec (the early check recorded the others).
#[inline(always)]
unsafe fn finish_exec(
    event: &mut DenialEvent,
    rules: u32,
    verdict: Verdict,
    stage: Stage,
    deferred: bool,
) -> i32 {
    if verdict == Verdict::Allow {
        if stage == Stage::Early || deferred {
            count(Counter::Allowed);
        }
        return 0;
    }
    if event.action == 0 {
        // Refused before any rule was judged: blame the lowest rule that applies.
        event.rule = rules.trailing_zeros();
        event.action = Action::Denied as u32;
    }
    let audit = event.action == Action::Audited as u32;
    if audit && stage == Stage::Commit && !deferred {
        return 0;
    }
    let generation = event.generation;
    let rule = event.rule;
    if audit {
        count(Counter::Audited);
        count(rule_counter(generation, rule, RuleCounter::Audited));
    } else {
        if let Verdict::Undecidable(_) = verdict {
            count(Counter::Undecidable);
            count(rule_counter(generation, rule, RuleCounter::Undecidable));
        } else {
            count(Counter::Denied);
            count(rule_counter(generation, rule, RuleCounter::Denied));
        }
        if stage == Stage::Commit {
            count(Counter::Killed);
            if !deferred {
                count(Counter::Races);
            }
            event.action = Action::Killed as u32;
        }
    }
    if let Verdict::Deny { command } = verdict {
        event.command = command;
    }
    event.reason = verdict.reason() as u32;
    send_event(event);
    if audit {
        return 0;
    }
    if stage == Stage::Commit {
        unsafe { bpf_send_signal(SIGKILL) };
    }
    -EPERM
}

/// Admits a connection to a gated docker API endpoint (gated by `gating`, the rules of the
/// restricted task that list it) only from a client every one of those rules vets.
/// `describe` writes what was connected to into the event.
#[inline(always)]
fn gate_client(generation: u32, gating: u32, hook: u32, describe: impl FnOnce(&mut DenialEvent)) -> i32 {
    let off = OFFSETS.load();
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    let identity = unsafe { exe_identity(task, &off) };
    let vetted_for = match identity {
        Ok(file) => match unsafe { BINARIES.get(&FileKey { generation, _pad: 0, file }) } {
            Some(binary) => binary.rules,
            None => 0,
        },
        Err(_) => 0,
    };
    if vetted_for & gating == gating {
        return 0;
    }
    let missing = gating & !vetted_for;
    refuse(generation, missing, hook, Reason::UnvettedClient, Counter::ConnectsRefused, |event| {
        event.file = identity.unwrap_or_default();
        describe(event);
    })
}

/// Records a refusal by a non-exec hook for the lowest rule in `rules`; returns -EPERM,
/// or 0 when that rule is in audit mode.
#[inline(always)]
fn refuse(
    generation: u32,
    rules: u32,
    hook: u32,
    reason: Reason,
    counter: Counter,
    describe: impl FnOnce(&mut DenialEvent),
) -> i32 {
    let rule = rules.trailing_zeros() & (MAX_RULES as u32 - 1);
    let audit = KernelRules { generation }.rule(rule).is_some_and(|r| r.is_audit());
    count(if audit { Counter::Audited } else { counter });
    if let Some(event) = begin_event(hook, generation) {
        event.rule = rule;
        event.action = if audit { Action::Audited as u32 } else { Action::Denied as u32 };
        event.reason = reason as u32;
        describe(event);
        send_event(event);
    }
    if audit { 0 } else { -EPERM }
}

#[lsm(hook = "unix_stream_connect")]
pub fn enforcer_unix_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some((generation, user_rules)) = restricted() else { return 0 };
    let other: u64 = ctx.arg(1);
    with_scratch!(-EPERM, unix_connect(other, generation, user_rules))
}

/// `enforcer_unix_connect` for a restricted task, with the scratch space claimed.
#[inline(always)]
fn unix_connect(other: u64, generation: u32, user_rules: u32) -> i32 {
    let off = OFFSETS.load();
    let mut socket_rules = 0;
    // The socket file's inode: symlinks, hard links and bind mounts all lead to it.
    if let Ok(dentry) = unsafe { read_kernel::<u64>(other, off.unix_path_dentry) }
        && dentry != 0
        && let Ok(inode) = unsafe { read_kernel::<u64>(dentry, off.dentry_inode) }
        && let Ok(identity) = unsafe { inode_identity(inode, &off) }
        && let Some(rules) = unsafe { SOCKETS.get(&FileKey { generation, _pad: 0, file: identity }) }
    {
        socket_rules |= *rules;
    }
    // The path it was bound to: covers a socket re-created since the daemon learnt its
    // inode.
    let Some(scratch) = scratch_ptr() else { return -EPERM };
    let key = unsafe { &mut (*scratch).socket_name };
    key.generation = generation;
    key.name = [0; SOCKET_NAME_LEN];
    if let Ok(addr) = unsafe { read_kernel::<u64>(other, off.unix_addr) }
        && addr != 0
    {
        let path = addr + off.unix_address_name as u64 + 2;
        let n = unsafe {
            bpf_probe_read_kernel_str(
                key.name.as_mut_ptr() as *mut _,
                SOCKET_NAME_LEN as u32,
                path as *const _,
            )
        };
        if n > 1
            && let Some(rules) = unsafe { SOCKET_NAMES.get(&*key) }
        {
            socket_rules |= *rules;
        }
    }
    let gating = socket_rules & user_rules;
    if gating == 0 {
        return 0;
    }
    gate_client(generation, gating, Hook::UnixConnect as u32, |event| {
        let name = unsafe { &(*scratch).socket_name.name };
        let n = unsafe {
            bpf_probe_read_kernel_str(
                event.target.as_mut_ptr() as *mut _,
                SOCKET_NAME_LEN as u32,
                name.as_ptr() as *const _,
            )
        };
        if n <= 0 {
            event.target[0] = 0;
        }
    })
}

#[lsm(hook = "socket_connect")]
pub fn enforcer_inet_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some((generation, user_rules)) = restricted() else { return 0 };
    let address: u64 = ctx.arg(1);
    unsafe { gate_host(address, generation, user_rules, Hook::InetConnect as u32) }
}

/// `sendto`/`sendmsg` with a destination: `MSG_FASTOPEN` on a TCP socket connects to it
/// inside the send (`tcp_sendmsg_fastopen`), never through `socket_connect`, so a gated
/// address is gated here too. Sends without a destination (nearly all) cost one read.
#[lsm(hook = "socket_sendmsg")]
pub fn enforcer_inet_send(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let msg: u64 = ctx.arg(1);
    let off = OFFSETS.load();
    // SAFETY: `msg` is the hook's `struct msghdr *`; the helper checks the read.
    let Ok(name) = (unsafe { read_kernel::<u64>(msg, off.msghdr_name) }) else { return 0 };
    if name == 0 {
        return 0;
    }
    let Some((generation, user_rules)) = restricted() else { return 0 };
    unsafe { gate_host(name, generation, user_rules, Hook::InetSend as u32) }
}

/// Admits a TCP connection (or fast-open send) to `address` (a kernel `sockaddr`) from a
/// restricted task only when the client is vetted for every rule that gates the address.
#[inline(always)]
unsafe fn gate_host(address: u64, generation: u32, user_rules: u32, hook: u32) -> i32 {
    let Some(key) = (unsafe { host_key(address, generation) }) else { return 0 };
    let mut host_rules = 0;
    if let Some(rules) = unsafe { HOSTS.get(&key) } {
        host_rules |= *rules;
    }
    let any = HostKey { generation, port: key.port, family: 0, addr: [0; 16] };
    if let Some(rules) = unsafe { HOSTS.get(&any) } {
        host_rules |= *rules;
    }
    let gating = host_rules & user_rules;
    if gating == 0 {
        return 0;
    }
    with_scratch!(-EPERM, {
        gate_client(generation, gating, hook, |event| {
            let bytes = [key.port.to_ne_bytes(), key.family.to_ne_bytes()];
            event.target[0] = bytes[0][0];
            event.target[1] = bytes[0][1];
            event.target[2] = bytes[1][0];
            event.target[3] = bytes[1][1];
            let mut i = 0;
            while i < 16 {
                event.target[4 + i] = key.addr[i];
                i += 1;
            }
        })
    },)
}

/// The hosts-map key of a connect address, normalised the way the kernel routes it: an
/// IPv4-mapped IPv6 address is IPv4, and the unspecified address means this host.
#[inline(always)]
unsafe fn host_key(address: u64, generation: u32) -> Option<HostKey> {
    let family: u16 = unsafe { read_kernel(address, 0) }.ok()?;
    let port: u16 = u16::from_be(unsafe { read_kernel(address, 2) }.ok()?);
    let mut key = HostKey { generation, port, family: 4, addr: [0; 16] };
    if family == AF_INET {
        let v4: [u8; 4] = unsafe { read_kernel(address, 4) }.ok()?;
        key.addr[..4].copy_from_slice(&v4);
    } else if family == AF_INET6 {
        let v6: [u8; 16] = unsafe { read_kernel(address, 8) }.ok()?;
        let mapped = v6[..10].iter().all(|&b| b == 0) && v6[10] == 0xff && v6[11] == 0xff;
        if mapped {
            key.addr[..4].copy_from_slice(&v6[12..]);
        } else {
            key.family = 6;
            key.addr = v6;
            if v6.iter().all(|&b| b == 0) {
                key.addr[15] = 1;
            }
            return Some(key);
        }
    } else {
        return None;
    }
    if key.addr[..4] == [0, 0, 0, 0] {
        key.addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    }
    Some(key)
}

/// ptrace, `/proc/PID/mem`, `process_vm_writev` and `pidfd_getfd` all ask this hook with
/// `PTRACE_MODE_ATTACH`: a restricted task gets none of them against a vetted client.
#[lsm(hook = "ptrace_access_check")]
pub fn enforcer_ptrace(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let mode: u32 = ctx.arg(1);
    if mode & PTRACE_MODE_ATTACH == 0 {
        return 0;
    }
    let Some((generation, user_rules)) = restricted() else { return 0 };
    let child: u64 = ctx.arg(0);
    let off = OFFSETS.load();
    let Ok(identity) = (unsafe { exe_identity(child, &off) }) else { return 0 };
    let Some(binary) = (unsafe { BINARIES.get(&FileKey { generation, _pad: 0, file: identity }) }) else {
        return 0;
    };
    let rules = if binary.rules & user_rules != 0 { binary.rules & user_rules } else { user_rules };
    let target: u32 = unsafe { read_kernel(child, off.task_tgid) }.unwrap_or(0);
    with_scratch!(-EPERM, {
        refuse(
            generation,
            rules,
            Hook::Ptrace as u32,
            Reason::TamperClient,
            Counter::TamperRefused,
            |event| {
                event.file = identity;
                event.target_pid = target;
            },
        )
    },)
}

/// `prctl(PR_SET_MM, ...)` rewrites the fields of the task's memory map, `mm->exe_file`
/// among them (`PR_SET_MM_EXE_FILE`, `PR_SET_MM_MAP` with `exe_fd`): the identity the
/// socket gate and the ptrace guard read. Linux allows it with CAP_CHECKPOINT_RESTORE in
/// the task's own user namespace, which `unshare(CLONE_NEWUSER)` gives anyone. Besides an
/// exec, which the exec checks judge, it is the only way `exe_file` changes, so no
/// restricted task gets it. (Returning 0 leaves the kernel's default, "not handled",
/// in place for every other option.)
#[lsm(hook = "task_prctl")]
pub fn enforcer_prctl(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(5);
    if previous != 0 {
        return previous;
    }
    let option: i32 = ctx.arg(0);
    if option != PR_SET_MM {
        return 0;
    }
    let Some((generation, user_rules)) = restricted() else { return 0 };
    let sub_option: u64 = ctx.arg(1);
    with_scratch!(-EPERM, {
        refuse(generation, user_rules, Hook::Prctl as u32, Reason::SetMm, Counter::TamperRefused, |event| {
            event.target_pid = sub_option as u32;
        })
    },)
}

#[lsm(hook = "file_open")]
pub fn enforcer_fopen(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 != PROBE_TGID.load() {
        return previous;
    }
    let off = OFFSETS.load();
    let file: u64 = ctx.arg(0);
    if let Ok(identity) = unsafe { file_identity(file, &off) } {
        let _ = PROBED.insert(&(pid_tgid as u32), &identity, 0);
    }
    previous
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
