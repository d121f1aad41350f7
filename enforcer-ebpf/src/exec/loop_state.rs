//! The state the exec path's `bpf_loop` callbacks share with their caller, and the one
//! way to run such a loop.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_loop;
use enforcer_common::{
    abi::{DenialEvent, Scratch},
    engine::{ArgvScan, Decision, Reason, Scan},
};

use crate::{maps::LOOP, scratch::Claim};

/// State shared between the programs and their `bpf_loop` callbacks (in the `LOOP` map).
pub struct LoopState {
    /// The caller's argv and envp arrays (early check).
    pub(super) argv: u64,
    pub(super) envp: u64,
    pub(super) argc: u32,
    pub(super) envc: u32,
    /// Next argument index to scan.
    pub(super) next: u32,
    /// The kernel's copy (re-check): where it starts, and the address of string
    /// `cursor_index`.
    pub(super) copy_start: u64,
    pub(super) cursor: u64,
    pub(super) cursor_index: u32,
    /// The environment walk found a loader variable, or could not finish.
    pub(super) env: Option<Reason>,
    pub(super) scan: ArgvScan,
    pub(super) result: Option<Scan>,
    /// The seccomp walk: the next filter of the chain, the next instruction of the
    /// current one and how many of its instructions are left, filters and instructions
    /// seen so far, and the verdict (None: nothing refused, once `seccomp_done`).
    pub(super) seccomp_filter: u64,
    pub(super) seccomp_insn: u64,
    pub(super) seccomp_left: u32,
    pub(super) seccomp_filters: u32,
    pub(super) seccomp_insns: u32,
    pub(super) seccomp_done: bool,
    pub(super) seccomp: Option<Reason>,
    /// Judging: the rules that apply, their generation, and the decision once found.
    pub(super) rules: u32,
    pub(super) generation: u32,
    pub(super) decision: Option<Decision>,
}

/// What `bpf_loop` hands its callbacks: the callback context must be a stack pointer on
/// 6.1, so it holds a pointer to the state in the `LOOP` map, and the run's scratch claim.
/// Passing it also tells the compiler that the callbacks write the state. The state and
/// the scratch space are borrowed from the context, so no reference to either is alive
/// while a loop (which lends the context to a callback) runs.
pub struct LoopCtx<'claim> {
    state: *mut LoopState,
    claim: &'claim mut Claim,
}

impl<'claim> LoopCtx<'claim> {
    /// The context over this CPU's loop state, which the scratch claim covers.
    #[inline(always)]
    pub fn new(claim: &'claim mut Claim) -> Option<Self> {
        LOOP.get_ptr_mut(0).map(|state| LoopCtx { state, claim })
    }

    /// The loop state.
    #[inline(always)]
    pub fn state(&mut self) -> &mut LoopState {
        // SAFETY: `state` is this CPU's `LOOP` value (see `new`), valid and aligned for
        // the whole program run and kept from other runs by the claim. It is reached only
        // through this context, of which the claim allows one at a time, and the
        // reference borrows the context, so it is the only one.
        unsafe { &mut *self.state }
    }

    /// The loop state and the scratch space; None when there is no scratch space.
    #[inline(always)]
    pub fn parts(&mut self) -> Option<(&mut LoopState, &mut Scratch)> {
        let scratch = self.claim.scratch()?;
        // SAFETY: as in `state`.
        Some((unsafe { &mut *self.state }, scratch))
    }

    /// The event in the scratch space, as it is.
    #[inline(always)]
    pub fn event(&mut self) -> Option<&mut DenialEvent> {
        self.claim.event()
    }
}

/// A `bpf_loop` callback: iteration index and the context; 0 to go on, 1 to stop.
pub type Callback = extern "C" fn(u64, &mut LoopCtx<'_>) -> i64;

/// Calls `callback` up to `iterations` times with `ctx`; the helper's result (iterations
/// run, or a negative error).
#[inline(always)]
pub fn run_loop(iterations: u32, callback: Callback, ctx: &mut LoopCtx<'_>) -> i64 {
    // SAFETY: the helper calls `callback` with `ctx` and nothing else, which is what the
    // callback's type says it takes; `ctx` outlives the call.
    unsafe {
        bpf_loop(
            iterations,
            callback as *mut c_void,
            core::ptr::from_mut::<LoopCtx<'_>>(ctx).cast::<c_void>(),
            0,
        )
    }
}

/// `value` read afresh from memory after a loop wrote it (a volatile read, so the
/// compiler reuses nothing it read before).
#[inline(always)]
pub fn fresh<T: Copy>(value: &T) -> T {
    // SAFETY: a reference is valid and aligned for reads.
    unsafe { core::ptr::read_volatile(value) }
}
