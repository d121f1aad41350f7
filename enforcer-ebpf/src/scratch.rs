//! The per-CPU scratch space (`SCRATCH`, and the exec path's `LOOP`): a hook claims it for
//! its run with `with_scratch!`, which hands the body a [`Claim`]; the space is reached
//! only through that claim, borrowed from it, so the borrow checker sees to it that no two
//! references to the space are alive at once. (Borrows, not closures: a closure the
//! compiler outlines becomes a BPF subprogram, whose frame adds to the caller's 512 bytes
//! of stack, and on 6.1 such subprograms around `bpf_loop` calls trip the JIT.)

use enforcer_common::abi::{Counter, DenialEvent, Scratch};

use crate::{
    EPERM,
    maps::{CLAIM, SCRATCH, count},
};

/// This run's claim on this CPU's scratch space (see `CLAIM`). Only `with_scratch!` makes
/// one, and a second claim in the same run fails, so there is at most one per run.
pub struct Claim(());

impl Claim {
    /// Claims the scratch space for the current program run; counts a refusal when
    /// another run holds it.
    #[inline(always)]
    pub fn take() -> Option<Claim> {
        let claimed = match CLAIM.get_ptr_mut(0) {
            // SAFETY: a per-CPU map value, valid and 8-byte aligned for the whole program
            // run; every access to it is this atomic exchange or (the release) another one.
            Some(flag) => unsafe { compare_exchange(flag, 0, 1) },
            None => false,
        };
        if claimed {
            Some(Claim(()))
        } else {
            count(Counter::ScratchBusy);
            None
        }
    }

    /// Gives the scratch space back.
    #[inline(always)]
    #[expect(clippy::unused_self, reason = "consuming the claim ends every borrow of the scratch space")]
    pub fn release(self) {
        if let Some(flag) = CLAIM.get_ptr_mut(0) {
            // SAFETY: as in `take`. Sequentially consistent, so no scratch access of this
            // run moves past it (BPF has no fence instruction to ask for that apart).
            unsafe { compare_exchange(flag, 1, 0) };
        }
    }

    /// This CPU's scratch space, for as long as the claim is borrowed; None when the map
    /// has no entry (never, in a loaded program).
    #[inline(always)]
    #[expect(clippy::unused_self, reason = "borrowing the claim is what makes the reference the only one")]
    pub fn scratch(&mut self) -> Option<&mut Scratch> {
        let scratch = scratch_ptr()?;
        // SAFETY: a per-CPU map value, valid and aligned for the whole program run. The
        // claim keeps other runs on this CPU away from it, and the reference borrows the
        // run's one claim, so it is the only one.
        Some(unsafe { &mut *scratch })
    }

    /// The event in the scratch space, as it is (`event::start` resets it).
    #[inline(always)]
    pub fn event(&mut self) -> Option<&mut DenialEvent> {
        self.scratch().map(|scratch| &mut scratch.event)
    }
}

/// The per-CPU scratch space. The pointer is read back through a volatile load, so the
/// compiler cannot compute a field's address before the null check (the verifier refuses
/// arithmetic on a pointer that may be null).
#[inline(always)]
fn scratch_ptr() -> Option<*mut Scratch> {
    let ptr = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: reads a local variable, which is valid and aligned.
    Some(unsafe { core::ptr::read_volatile(&raw const ptr) })
}

/// An LSM verdict as the kernel checks it: only 0 and -EPERM are ever returned, and saying
/// so keeps the value provably in the LSM return range (6.12 checks it).
#[inline(always)]
pub fn lsm_verdict(verdict: i32) -> i32 {
    // Hidden from the optimiser: knowing the body yields 0 or -1, LLVM computes the result
    // below as `-(verdict & 1)`, and the verifier does not track a negation's range (6.12
    // then rejects the program's return value).
    let verdict = core::hint::black_box(verdict);
    if verdict == 0 { 0 } else { -EPERM }
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

/// The host build (`cargo check` of this crate) has the stable API.
///
/// # Safety
/// As for the BPF build.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
unsafe fn compare_exchange(ptr: *mut u64, old: u64, new: u64) -> bool {
    use core::sync::atomic::{AtomicU64, Ordering};
    // SAFETY: as the caller promises.
    unsafe { AtomicU64::from_ptr(ptr) }.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst).is_ok()
}

/// Evaluates `$body` with this CPU's scratch space claimed, the claim bound to `$claim`;
/// when another run holds it, evaluates `$busy` instead (the caller's fail-closed
/// verdict). The result is normalised to 0 or -EPERM. A macro, not a function taking a
/// closure: the body must be inlined into the hook, or its stack frame adds to the hook's
/// and the two exceed the verifier's 512 bytes.
macro_rules! with_scratch {
    ($busy:expr, |$claim:ident| $body:expr $(,)?) => {{
        match $crate::scratch::Claim::take() {
            None => $busy,
            Some(mut $claim) => {
                let verdict: i32 = $body;
                $claim.release();
                $crate::scratch::lsm_verdict(verdict)
            }
        }
    }};
}
pub(crate) use with_scratch;
