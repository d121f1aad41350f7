//! `enforcer_ptrace`: no ptrace-class access from a restricted task to a vetted client.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::{
    abi::{Counter, FileKey, Hook, PTRACE_MODE_ATTACH},
    engine::Reason,
};

use crate::{
    EPERM,
    event::refuse,
    kernel::{exe_identity, read_kernel},
    maps::{BINARIES, OFFSETS, lookup},
    restricted::restricted,
    scratch::with_scratch,
};

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
    let Ok(identity) = exe_identity(child, &off) else { return 0 };
    let Some(binary) = lookup(&BINARIES, &FileKey { generation, _pad: 0, file: identity }) else {
        return 0;
    };
    let rules = if binary.rules & user_rules != 0 { binary.rules & user_rules } else { user_rules };
    let target: u32 = read_kernel(child, off.task_tgid).unwrap_or(0);
    with_scratch!(-EPERM, |claim| {
        refuse(
            &mut claim,
            generation,
            rules,
            Hook::Ptrace as u32,
            Reason::TamperClient,
            Counter::TamperRefused,
            |scratch| {
                scratch.event.file = identity;
                scratch.event.target_pid = target;
            },
        )
    },)
}
