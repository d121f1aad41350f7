//! The seccomp walk: whether the current task's seccomp filters make it unfit to run a
//! vetted client.

use enforcer_common::{
    abi::{KernelOffsets, MAX_SECCOMP_FILTERS, MAX_SECCOMP_INSNS, SECCOMP_CHUNK, seccomp_insn_fakes_success},
    engine::Reason,
};

use super::loop_state::{LoopCtx, LoopState, fresh, run_loop};
use crate::{
    kernel::{read_kernel, read_kernel_bytes},
    maps::OFFSETS,
    scratch::Claim,
    task::current_task,
};

/// Why the current task's seccomp filters make it unfit to run a vetted client, if they
/// do: a filter with a user-notification listener (another process answers its system
/// calls), one that can fake a call's success, or a chain that cannot be walked within
/// bounds. Plain filters (allow, errno, kill, log, trap) pass.
#[inline(always)]
pub(super) fn seccomp_refusal(claim: &mut Claim, off: &KernelOffsets) -> Option<Reason> {
    let Ok(head) = read_kernel::<u64>(current_task(), off.task_seccomp_filter) else {
        return Some(Reason::SeccompUnreadable);
    };
    if head == 0 {
        return None;
    }
    let Some(mut ctx) = LoopCtx::new(claim) else { return Some(Reason::NotConfigured) };
    let state = ctx.state();
    state.seccomp_filter = head;
    state.seccomp_insn = 0;
    state.seccomp_left = 0;
    state.seccomp_filters = 0;
    state.seccomp_insns = 0;
    state.seccomp_done = false;
    state.seccomp = None;
    // Filters plus chunks of instructions, with room to spare: the walk ends by itself.
    let steps = MAX_SECCOMP_FILTERS * 2 + MAX_SECCOMP_INSNS / SECCOMP_CHUNK as u32;
    run_loop(steps, seccomp_one, &mut ctx);
    let state = ctx.state();
    match fresh(&state.seccomp) {
        Some(reason) => Some(reason),
        None if fresh(&state.seccomp_done) => None,
        None => Some(Reason::SeccompUnreadable),
    }
}

/// `bpf_loop` callback: one step of the seccomp walk: enter the next filter of the chain
/// (refusing one with a listener), or check the next chunk of the current filter's
/// instructions for returns that fake success.
#[inline(never)]
extern "C" fn seccomp_one(_: u64, ctx: &mut LoopCtx<'_>) -> i64 {
    let state = ctx.state();
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
        // `filter` is a `struct seccomp_filter *` of the current task's chain, which
        // cannot shrink while the task runs.
        let Ok(notif) = read_kernel::<u64>(filter, off.seccomp_filter_notif) else {
            return refuse(state, Reason::SeccompUnreadable);
        };
        if notif != 0 {
            return refuse(state, Reason::SeccompListener);
        }
        let program = read_kernel::<u64>(filter, off.seccomp_filter_prog).unwrap_or(0);
        let original =
            if program == 0 { 0 } else { read_kernel::<u64>(program, off.bpf_prog_orig_prog).unwrap_or(0) };
        if original == 0 {
            return refuse(state, Reason::SeccompUnreadable);
        }
        let (Ok(len), Ok(insns), Ok(prev)) = (
            read_kernel::<u16>(original, off.fprog_len),
            read_kernel::<u64>(original, off.fprog_filter),
            read_kernel::<u64>(filter, off.seccomp_filter_prev),
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
    let n = state.seccomp_left.min(SECCOMP_CHUNK as u32);
    let size = (((n - 1) & (SECCOMP_CHUNK as u32 - 1)) + 1) * 8;
    let Some((state, scratch)) = ctx.parts() else { return refuse(ctx.state(), Reason::NotConfigured) };
    let chunk = &mut scratch.seccomp;
    // SAFETY: `size` is at most the 64 bytes of `chunk`, borrowed mutably here.
    let read = unsafe { read_kernel_bytes(chunk.as_mut_ptr().cast::<u8>(), size, state.seccomp_insn) };
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
