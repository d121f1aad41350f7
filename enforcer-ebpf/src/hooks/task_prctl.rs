//! `enforcer_prctl`: no `prctl(PR_SET_MM)` for a restricted task.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use enforcer_common::{
    abi::{Counter, Hook, PR_SET_MM},
    engine::Reason,
};

use crate::{EPERM, event::refuse, restricted::restricted, scratch::with_scratch};

/// `prctl(PR_SET_MM, ...)` rewrites the fields of the task's memory map, `mm->exe_file`
/// among them (`PR_SET_MM_EXE_FILE`, `PR_SET_MM_MAP` with `exe_fd`): the identity the
/// socket gate and the ptrace guard read. Linux allows it with `CAP_CHECKPOINT_RESTORE` in
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
    with_scratch!(-EPERM, |claim| {
        refuse(
            &mut claim,
            generation,
            user_rules,
            Hook::Prctl as u32,
            Reason::SetMm,
            Counter::TamperRefused,
            |scratch| {
                scratch.event.target_pid = sub_option as u32;
            },
        )
    },)
}
