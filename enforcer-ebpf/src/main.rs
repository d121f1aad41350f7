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
//! - `enforcer_unix_connect` / `enforcer_inet_connect` / `enforcer_inet_send` admit a
//!   connection to a gated docker API socket (by inode or bound path) or TCP address only
//!   from a vetted client.
//! - `enforcer_ptrace` refuses ptrace-class access to a running vetted client, and
//!   `enforcer_prctl` refuses `PR_SET_MM`, which could forge a task's executable.
//!
//! For everyone else each hook costs one array read and one hash lookup (plus one lookup
//! per cgroup level when rules name cgroups).
//!
//! `enforcer_fopen` runs at `file_open` only while the loader resolves paths: it reports
//! the identity the kernel itself uses for a file the loader opened.
//!
//! One module per hook under `hooks/`; the exec path (`exec`) reads top-down from
//! `check_exec` to `finish_exec`.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]
// The BPF target has no atomic compare-and-exchange in `core::sync::atomic` (rustc does
// not mark it CAS-capable), but LLVM lowers the intrinsic to BPF's `cmpxchg` (ISA v3,
// which every kernel enforcer supports): the scratch claim needs it.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(
    target_arch = "bpf",
    allow(internal_features, reason = "core_intrinsics: atomic_cxchg for the scratch claim, see above")
)]

mod event;
mod exec;
mod gate;
mod hooks;
mod kernel;
mod maps;
mod restricted;
mod scratch;
mod task;

/// The LSM "operation not permitted" verdict is `-EPERM`.
const EPERM: i32 = 1;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
