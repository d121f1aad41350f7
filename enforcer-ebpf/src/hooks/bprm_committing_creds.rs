//! `enforcer_commit`: the authoritative exec re-check, on the kernel's copy of argv.

use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::{
    exec::{Stage, check_exec},
    maps::{EXEC_GENERATION, lookup_lru},
    restricted::{policy, restricted_rules},
};

/// The authoritative re-check, after the point of no return: `current->mm` is the new mm
/// and `bprm->p` the kernel's copy of argv and the environment, exactly what the client
/// receives. A denial kills the task before its first instruction.
#[lsm(hook = "bprm_committing_creds")]
pub fn enforcer_commit(ctx: LsmContext) -> i32 {
    let bprm: u64 = ctx.arg(0);
    let Some((generation, user_rules)) = restricted_for_commit(bprm) else { return 0 };
    check_exec(bprm, generation, user_rules, Stage::Commit, 0);
    0
}

/// The generation the early check of this exec judged by, else the one in force, and the
/// rules that restrict the current task in it.
#[inline(always)]
fn restricted_for_commit(bprm: u64) -> Option<(u32, u32)> {
    let (active, state) = policy()?;
    let generation = match lookup_lru(&EXEC_GENERATION, &bprm) {
        Some(judged) => {
            let _ = EXEC_GENERATION.remove(bprm);
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
