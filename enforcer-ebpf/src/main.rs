//! The enforcer's BPF LSM programs.
//!
//! `enforcer_bprm` runs at `bprm_check_security` for every exec on the machine. The cost
//! for everyone but a restricted user is one uid lookup. For a restricted user executing
//! one of a rule's vetted docker binaries (matched by file identity), it finds the docker
//! command in argv with the shared engine and returns -EPERM when a rule denies it or the
//! engine cannot decide.
//!
//! `enforcer_fopen` runs at `file_open` only while the loader resolves binary paths: it
//! reports the identity the kernel itself uses for a file the loader opened.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    Global,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_get_current_uid_gid, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{
            bpf_loop, bpf_probe_read_kernel as probe_read_kernel_raw, bpf_probe_read_kernel_str,
            bpf_probe_read_user_str, bpf_task_pt_regs,
        },
    },
    macros::{lsm, map},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::LsmContext,
};
use enforcer_common::{
    ACTION_AUDITED, ACTION_DENIED, ALLOWED, ARG_BUF, ArgBuf, ArgSource, ArgvScan, BinaryInfo, BinaryKey,
    COUNTER_ALLOWED, COUNTER_AUDITED, COUNTER_CHECKED, COUNTER_COUNT, COUNTER_DENIED, COUNTER_EVENTS_DROPPED,
    COUNTER_UNDECIDABLE, Decision, DenialEvent, EVENT_ARGV_LEN, EVENT_PATH_LEN, FileId, GENERATIONS,
    KernelOffsets, MAX_ARGS, MAX_RULES, NR_EXECVE, NR_EXECVEAT, PolicyState, RULE_COUNTER_AUDITED,
    RULE_COUNTER_DENIED, RULE_COUNTER_UNDECIDABLE, ReadError, Reason, RuleConfig, Rules, Scan, Scratch,
    Start, Token, TokenInfo, UserKey, Verdict, grammar::Grammar, judge_rule, rule_counter,
};

const EPERM: i32 = 1;

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

/// (generation, vetted binary identity) -> the rules that list it and its client profile.
#[map]
static BINARIES: HashMap<BinaryKey, BinaryInfo> = HashMap::pinned(512, 0);

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

/// Thread id -> identity of the file it last opened (identity probe results).
#[map]
static PROBED: HashMap<u32, FileId> = HashMap::with_max_entries(64, 0);

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
fn count(index: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(index) {
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
        let ino: u64 = read_kernel(inode, off.inode_ino)?;
        let sb: u64 = read_kernel(inode, off.inode_sb)?;
        let dev: u32 = read_kernel(sb, off.sb_dev)?;
        Ok(FileId { dev: dev as u64, ino })
    }
}

/// Reads argv[i] from the exec caller's memory, and copies each argument it reads into
/// the event's argv log.
struct UserArgv {
    argv: u64,
    event: *mut DenialEvent,
}

impl UserArgv {
    #[inline(always)]
    fn log(&mut self, buf: &ArgBuf) {
        let event = unsafe { &mut *self.event };
        let offset = event.argv_len as usize;
        if offset >= EVENT_ARGV_LEN {
            event.argv_truncated = 1;
            return;
        }
        let size = (buf.len as usize + 1) & (ARG_BUF - 1);
        // The event's argv has ARG_BUF bytes of slack past EVENT_ARGV_LEN, so any offset
        // below EVENT_ARGV_LEN plus any size below ARG_BUF stays inside it.
        let dst = unsafe { event.argv.as_mut_ptr().add(offset & (EVENT_ARGV_LEN - 1)) };
        let copied =
            unsafe { probe_read_kernel_raw(dst as *mut _, size as u32, buf.bytes.as_ptr() as *const _) };
        if copied == 0 {
            event.argv_len = (offset + size) as u32;
        }
    }
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
        if n <= 0 {
            return Err(ReadError);
        }
        let n = (n as u32).min(ARG_BUF as u32);
        buf.len = n - 1;
        // A full buffer cannot tell "exactly fits" from "cut short": treat as cut short.
        buf.complete = (n < ARG_BUF as u32) as u32;
        self.log(buf);
        Ok(())
    }
}

#[lsm(hook = "bprm_check_security")]
pub fn enforcer_bprm(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let uid = bpf_get_current_uid_gid() as u32;
    let generation = match POLICY.get(0) {
        Some(state) => state.active & 1,
        None => return 0,
    };
    // The path everyone but a restricted user takes: one array read, one hash lookup.
    let user_rules = match unsafe { USERS.get(&UserKey { generation, uid }) } {
        Some(rules) => *rules,
        None => return 0,
    };
    let bprm: u64 = ctx.arg(0);
    unsafe { check_restricted(bprm, uid, generation, user_rules) }
}

#[inline(always)]
unsafe fn check_restricted(bprm: u64, uid: u32, generation: u32, user_rules: u32) -> i32 {
    let off = OFFSETS.load();
    let scratch = match SCRATCH.get_ptr_mut(0) {
        Some(ptr) => unsafe { &mut *ptr },
        None => return -EPERM,
    };
    let event = &mut scratch.event;
    event.argv_len = 0;
    event.argv_truncated = 0;
    event.argc = 0;
    event.file = FileId::default();
    event.command = u32::MAX;
    event.action = 0;
    event.rule = 0;
    event.generation = generation;
    event.path[0] = 0;

    if off.valid == 0 {
        return unsafe { finish(event, uid, user_rules, Verdict::Undecidable(Reason::NotConfigured)) };
    }
    let identity = match unsafe { read_kernel::<u64>(bprm, off.binprm_file) }
        .and_then(|file| unsafe { file_identity(file, &off) })
    {
        Ok(identity) => identity,
        Err(_) => {
            return unsafe { finish(event, uid, user_rules, Verdict::Undecidable(Reason::UnreadableFile)) };
        }
    };
    let binary = match unsafe { BINARIES.get(&BinaryKey { generation, _pad: 0, file: identity }) } {
        Some(binary) => *binary,
        None => return 0,
    };
    let rules = binary.rules & user_rules;
    if rules == 0 {
        return 0;
    }
    count(COUNTER_CHECKED);
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
    let verdict = unsafe { decide(bprm, &off, generation, rules, binary.start) };
    unsafe { finish(&mut scratch.event, uid, rules, verdict) }
}

/// State shared between the program and its `bpf_loop` callbacks (in the `LOOP` map).
pub struct LoopState {
    argv: u64,
    argc: u32,
    /// Next argument index to read.
    next: u32,
    scan: ArgvScan,
    result: Option<Scan>,
    /// Judging: the rules that apply, their generation, and the decision once found.
    rules: u32,
    generation: u32,
    decision: Option<Decision>,
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

/// The per-CPU argument buffer, and an argv reader that logs into the per-CPU event.
#[inline(always)]
fn scratch_source(state: &LoopState) -> Option<(&'static mut ArgBuf, UserArgv)> {
    let scratch = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: per-CPU map value, valid for the whole program run; no preemption here.
    unsafe { Some((&mut (*scratch).arg, UserArgv { argv: state.argv, event: &mut (*scratch).event })) }
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

/// bpf_loop callback: scans one more argument; stops the loop once the scan is decided.
#[inline(never)]
extern "C" fn scan_one(_: u64, ctx: *mut c_void) -> i64 {
    let state = loop_state(ctx);
    let Some((buf, mut source)) = scratch_source(state) else {
        state.result = Some(Scan::Undecidable(Reason::NotConfigured));
        return 1;
    };
    let index = state.next;
    state.next = index + 1;
    match state.scan.step(&mut source, state.argc, index, buf, &MapGrammar) {
        Some(result) => {
            state.result = Some(result);
            1
        }
        None => 0,
    }
}

/// bpf_loop callback: after a denial, reads the arguments the scan did not need into
/// the event's log, until argv or the log ends.
#[inline(never)]
extern "C" fn log_one(_: u64, ctx: *mut c_void) -> i64 {
    let state = loop_state(ctx);
    let Some((buf, mut source)) = scratch_source(state) else { return 1 };
    let index = state.next;
    let logged = unsafe { (*source.event).argv_len } as usize;
    if index >= state.argc || index > MAX_ARGS || logged >= EVENT_ARGV_LEN {
        return 1;
    }
    state.next = index + 1;
    if source.read(index, buf).is_err() { 1 } else { 0 }
}

/// What argv says, as the engine reads it. Every failure is an undecidable scan, so it
/// is judged by the rules like any other result (audit mode then records, not denies).
/// `ctx.state` is the loop state; it is only ever accessed through that raw pointer,
/// which the callbacks write through too.
#[inline(always)]
unsafe fn scan_exec(bprm: u64, off: &KernelOffsets, ctx: &mut LoopCtx) -> Scan {
    let state = ctx.state;
    let argc: i32 = match unsafe { read_kernel(bprm, off.binprm_argc) } {
        Ok(argc) => argc,
        Err(_) => return Scan::Undecidable(Reason::UnreadableArgv),
    };
    unsafe { (*state).argc = argc as u32 };
    if let Some(scratch) = SCRATCH.get_ptr_mut(0) {
        unsafe { (*scratch).event.argc = argc as u32 };
    }
    match unsafe { caller_argv(off) } {
        Ok(argv) => unsafe { (*state).argv = argv },
        Err(reason) => return Scan::Undecidable(reason),
    }
    // argv[0] goes to the log only.
    unsafe { bpf_loop(1, log_one as *mut c_void, ctx as *mut _ as *mut c_void, 0) };
    unsafe { (*state).next = 1 };
    // A `#!` script or binfmt_misc handler rewrote argv: the caller's argv is not what
    // the binary will receive.
    let filename: u64 = unsafe { read_kernel(bprm, off.binprm_filename) }.unwrap_or(0);
    let interp: u64 = unsafe { read_kernel(bprm, off.binprm_interp) }.unwrap_or(1);
    if filename != interp {
        return Scan::Undecidable(Reason::Interpreter);
    }
    let ran = unsafe { bpf_loop(MAX_ARGS + 1, scan_one as *mut c_void, ctx as *mut _ as *mut c_void, 0) };
    match unsafe { core::ptr::read_volatile(&(*state).result) } {
        Some(result) if ran >= 0 => result,
        // `step` always decides by index MAX_ARGS + 1, so this is a failed bpf_loop.
        _ => Scan::Undecidable(Reason::NotConfigured),
    }
}

/// Judges the exec against every rule in `rules` with the shared `judge_rule`, one rule
/// per `bpf_loop` iteration; the rule that decides is recorded in the event with the rest
/// of argv.
#[inline(always)]
unsafe fn decide(bprm: u64, off: &KernelOffsets, generation: u32, rules: u32, start: Start) -> Verdict {
    let Some(state) = LOOP.get_ptr_mut(0) else {
        return Verdict::Undecidable(Reason::NotConfigured);
    };
    unsafe {
        *state = LoopState {
            argv: 0,
            argc: 0,
            next: 0,
            scan: ArgvScan::new(start),
            result: None,
            rules,
            generation,
            decision: None,
        }
    };
    let mut ctx = LoopCtx { state };
    let scan = unsafe { scan_exec(bprm, off, &mut ctx) };
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
        if let Some(scratch) = SCRATCH.get_ptr_mut(0) {
            let event = unsafe { &mut (*scratch).event };
            event.rule = decision.rule;
            event.action = if decision.audit { ACTION_AUDITED } else { ACTION_DENIED };
        }
        if unsafe { (*state).argv } != 0 {
            unsafe { bpf_loop(MAX_ARGS + 1, log_one as *mut c_void, &mut ctx as *mut _ as *mut c_void, 0) };
        }
    }
    decision.verdict
}

/// The user address of argv in the exec syscall that is running, from its saved registers.
#[inline(always)]
unsafe fn caller_argv(off: &KernelOffsets) -> Result<u64, Reason> {
    let task = unsafe { bpf_get_current_task_btf() };
    let regs = unsafe { bpf_task_pt_regs(task) } as u64;
    if regs == 0 {
        return Err(Reason::UnsupportedExecPath);
    }
    let nr: u64 = unsafe { read_kernel(regs, off.regs_orig_ax) }.map_err(|_| Reason::UnreadableArgv)?;
    let argv_reg = if nr == NR_EXECVE {
        off.regs_si
    } else if nr == NR_EXECVEAT {
        off.regs_dx
    } else {
        return Err(Reason::UnsupportedExecPath);
    };
    unsafe { read_kernel(regs, argv_reg) }.map_err(|_| Reason::UnreadableArgv)
}

/// Counts, records and returns the LSM verdict.
#[inline(always)]
unsafe fn finish(event: &mut DenialEvent, uid: u32, rules: u32, verdict: Verdict) -> i32 {
    if verdict == Verdict::Allow {
        count(COUNTER_ALLOWED);
        return 0;
    }
    if event.action == 0 {
        // Undecidable before any rule was judged: blame the lowest rule that applies.
        event.rule = rules.trailing_zeros();
        event.action = ACTION_DENIED;
    }
    let audit = event.action == ACTION_AUDITED;
    let generation = event.generation;
    let rule = event.rule;
    if audit {
        count(COUNTER_AUDITED);
        count(rule_counter(generation, rule, RULE_COUNTER_AUDITED));
    } else if let Verdict::Undecidable(_) = verdict {
        count(COUNTER_UNDECIDABLE);
        count(rule_counter(generation, rule, RULE_COUNTER_UNDECIDABLE));
    } else {
        count(COUNTER_DENIED);
        count(rule_counter(generation, rule, RULE_COUNTER_DENIED));
    }
    if let Verdict::Deny { command } = verdict {
        event.command = command;
    }
    event.reason = verdict.reason() as u32;
    let pid_tgid = bpf_get_current_pid_tgid();
    event.pid = pid_tgid as u32;
    event.tgid = (pid_tgid >> 32) as u32;
    let uid_gid = bpf_get_current_uid_gid();
    event.uid = uid;
    event.gid = (uid_gid >> 32) as u32;
    event.ktime_ns = unsafe { bpf_ktime_get_ns() };
    if EVENTS.output::<DenialEvent>(&*event, 0).is_err() {
        count(COUNTER_EVENTS_DROPPED);
    }
    if audit { 0 } else { -EPERM }
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
