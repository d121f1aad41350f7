//! `enforcer_bprm`: the early exec check, on the caller's argv (see `exec`).

use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::{
    exec::{Stage, check_exec},
    restricted::restricted_in_force,
};

#[lsm(hook = "bprm_check_security")]
pub fn enforcer_bprm(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some((generation, user_rules, serial)) = restricted_in_force() else { return 0 };
    let bprm: u64 = ctx.arg(0);
    check_exec(bprm, generation, user_rules, Stage::Early, serial)
}
