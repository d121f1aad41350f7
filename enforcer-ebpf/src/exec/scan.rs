//! Reading an exec's argv and environment: the scan of argv for the docker command (with
//! the shared scanner, one argument per `bpf_loop` iteration) and the walk of the
//! environment for loader variables, on the caller's memory or on the kernel's copy.

use enforcer_common::{
    abi::{ENV_PREFIX, EVENT_ARGV_LEN, KernelOffsets, MAX_ARGS, MAX_STRINGS, Scratch, is_loader_variable},
    engine::{ArgSource, Reason, Scan},
};

use super::{
    argv::{Caller, KernelCopy, LoopSource, string_end},
    loop_state::{Callback, LoopCtx, LoopState, fresh, run_loop},
};
use crate::{
    kernel::{read_kernel, read_user, read_user_str},
    maps::MapGrammar,
    task::caller_exec,
};

/// The scan of the caller's argv (early check), after its environment.
#[inline(always)]
pub(super) fn scan_caller(bprm: u64, off: &KernelOffsets, ctx: &mut LoopCtx<'_>) -> Scan {
    if let Err(reason) = read_counts(bprm, off, ctx) {
        return Scan::Undecidable(reason);
    }
    match caller_exec(off) {
        Ok((argv, envp)) => {
            let state = ctx.state();
            state.argv = argv;
            state.envp = envp;
        }
        Err(reason) => return Scan::Undecidable(reason),
    }
    let envc = ctx.state().envc;
    let walked = run_loop(envc, env_user_one, ctx);
    // argv[0] is the program name, which docker ignores.
    ctx.state().next = 1;
    if let Some(reason) = fresh(&ctx.state().env) {
        return Scan::Undecidable(reason);
    }
    if walked < 0 {
        return Scan::Undecidable(Reason::NotConfigured);
    }
    run_scan(ctx, scan_one::<Caller>)
}

/// The scan of the kernel's copy (re-check), after its environment.
#[inline(always)]
pub(super) fn scan_copy(bprm: u64, off: &KernelOffsets, ctx: &mut LoopCtx<'_>) -> Scan {
    if let Err(reason) = read_counts(bprm, off, ctx) {
        return Scan::Undecidable(reason);
    }
    let Ok(p) = read_kernel::<u64>(bprm, off.binprm_p) else {
        return Scan::Undecidable(Reason::UnreadableArgv);
    };
    let state = ctx.state();
    state.copy_start = p;
    state.cursor = p;
    state.cursor_index = 0;
    // Step over argv[0], scan argv, then walk on from where the scan stopped, over the
    // rest of argv and through the environment: each string is read once.
    run_loop(1, read_one::<KernelCopy, false>, ctx);
    ctx.state().next = 1;
    let scan = run_scan(ctx, scan_one::<KernelCopy>);
    let walked = run_loop(MAX_STRINGS, env_copy_one, ctx);
    if let Some(reason) = fresh(&ctx.state().env) {
        return Scan::Undecidable(reason);
    }
    if walked < 0 {
        return Scan::Undecidable(Reason::NotConfigured);
    }
    scan
}

/// Reads argc and envc (after `#!` or `binfmt_misc`, argv is the kernel's, which only the
/// re-check reads): stores them in the state, and argc in the event.
#[inline(always)]
fn read_counts(bprm: u64, off: &KernelOffsets, ctx: &mut LoopCtx<'_>) -> Result<(), Reason> {
    let argc: i32 = read_kernel(bprm, off.binprm_argc).map_err(|_| Reason::UnreadableArgv)?;
    let envc: i32 = read_kernel(bprm, off.binprm_envc).map_err(|_| Reason::UnreadableArgv)?;
    if argc < 0 || envc < 0 || argc as u32 + envc as u32 > MAX_STRINGS {
        return Err(Reason::TooManyStrings);
    }
    let state = ctx.state();
    state.argc = argc as u32;
    state.envc = envc as u32;
    if let Some(event) = ctx.event() {
        event.argc = argc as u32;
    }
    Ok(())
}

/// Runs the argv scan, one `callback` per argument, to its result.
#[inline(always)]
fn run_scan(ctx: &mut LoopCtx<'_>, callback: Callback) -> Scan {
    let ran = run_loop(MAX_ARGS + 1, callback, ctx);
    match fresh(&ctx.state().result) {
        Some(result) if ran >= 0 => result,
        // `step` always decides by index MAX_ARGS + 1, so this is a failed bpf_loop.
        _ => Scan::Undecidable(Reason::NotConfigured),
    }
}

/// `bpf_loop` callback: scans one more argument; stops the loop once the scan is decided.
#[inline(never)]
extern "C" fn scan_one<S: LoopSource>(_: u64, ctx: &mut LoopCtx<'_>) -> i64 {
    let Some((state, scratch)) = ctx.parts() else {
        ctx.state().result = Some(Scan::Undecidable(Reason::NotConfigured));
        return 1;
    };
    let Scratch { arg, event, skip, .. } = scratch;
    let mut source = S::load(state, event, skip, false);
    let index = state.next;
    state.next = index + 1;
    let result = state.scan.step(&mut source, state.argc, index, arg, &MapGrammar);
    S::store(&source, state);
    match result {
        Some(result) => {
            state.result = Some(result);
            1
        }
        None => 0,
    }
}

/// `bpf_loop` callback: reads one more argument, into the event's log when `LOG` (after a
/// denial, from argv[0] on), until argv or the log ends. Without `LOG` it only steps over
/// argv[0] of the kernel's copy, which can only be read in order.
#[inline(never)]
pub(super) extern "C" fn read_one<S: LoopSource, const LOG: bool>(_: u64, ctx: &mut LoopCtx<'_>) -> i64 {
    let Some((state, scratch)) = ctx.parts() else { return 1 };
    let Scratch { arg, event, skip, .. } = scratch;
    let index = state.next;
    let logged = event.argv_len as usize;
    if index >= state.argc || index > MAX_ARGS || logged >= EVENT_ARGV_LEN {
        return 1;
    }
    state.next = index + 1;
    let mut source = S::load(state, event, skip, LOG);
    let read = source.read(index, arg);
    S::store(&source, state);
    i64::from(read.is_err())
}

/// `bpf_loop` callback: checks the caller's environment string `index`.
#[inline(never)]
extern "C" fn env_user_one(index: u64, ctx: &mut LoopCtx<'_>) -> i64 {
    if index as u32 >= ctx.state().envc {
        return 1;
    }
    let Some((state, scratch)) = ctx.parts() else {
        ctx.state().env = Some(Reason::NotConfigured);
        return 1;
    };
    let index = index & 0xffff;
    let Ok(ptr) = read_user::<u64>(state.envp + 8 * index) else {
        state.env = Some(Reason::UnreadableArgv);
        return 1;
    };
    i64::from(env_string_refused(state, &mut scratch.env, ptr))
}

/// `bpf_loop` callback: walks one string of the kernel's copy: argv strings are stepped
/// over, environment strings checked.
#[inline(never)]
extern "C" fn env_copy_one(_: u64, ctx: &mut LoopCtx<'_>) -> i64 {
    let state = ctx.state();
    if state.cursor_index >= state.argc + state.envc {
        return 1;
    }
    let Some((state, scratch)) = ctx.parts() else {
        ctx.state().env = Some(Reason::NotConfigured);
        return 1;
    };
    let cursor = state.cursor;
    if state.cursor_index >= state.argc && env_string_refused(state, &mut scratch.env, cursor) {
        return 1;
    }
    if let Ok(end) = string_end(state.cursor, &mut scratch.skip) {
        state.cursor = end;
        state.cursor_index += 1;
        0
    } else {
        state.env = Some(Reason::UnreadableArgv);
        1
    }
}

/// Reads the start of the environment string at `ptr` (in the current mm) into `prefix`
/// and records why it ends the walk, if it does: unreadable, or a loader variable.
#[inline(always)]
fn env_string_refused(state: &mut LoopState, prefix: &mut [u8; ENV_PREFIX], ptr: u64) -> bool {
    let n = read_user_str(prefix, ptr);
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
