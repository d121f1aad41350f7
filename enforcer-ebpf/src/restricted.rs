//! Who is restricted: the policy generation in force and the rules that name the current
//! task (by real uid, or by a cgroup it runs in).

use aya_ebpf::helpers::{bpf_get_current_uid_gid, generated::bpf_get_current_ancestor_cgroup_id};
use enforcer_common::abi::{CgroupKey, MAX_CGROUP_LEVEL, PolicyState, UserKey};

use crate::maps::{CGROUPS, POLICY, USERS, lookup};

/// The generation in force and the policy state.
#[inline(always)]
pub fn policy() -> Option<(u32, PolicyState)> {
    POLICY.get(0).map(|state| (state.active & 1, *state))
}

/// The generation in force and the rules that restrict the current task; None for everyone
/// else (one array read and one hash lookup, the path nearly every hook call takes).
#[inline(always)]
pub fn restricted() -> Option<(u32, u32)> {
    restricted_in_force().map(|(generation, rules, _)| (generation, rules))
}

/// [`restricted`], with the policy serial read in the same look at `POLICY` (the early
/// exec check records both, so they always belong to one policy).
#[inline(always)]
pub fn restricted_in_force() -> Option<(u32, u32, u32)> {
    let (generation, state) = policy()?;
    let rules = restricted_rules(&state, generation);
    if rules == 0 { None } else { Some((generation, rules, state.serial)) }
}

/// The rules of `generation` with the API gate on, and those of them whose gate admits any
/// client: `(gate_rules, any_client_rules)`. No policy: none.
#[inline(always)]
pub fn gated_rules(generation: u32) -> (u32, u32) {
    let index = (generation & 1) as usize;
    POLICY.get(0).map_or((0, 0), |state| (state.gate_rules[index], state.any_client_rules[index]))
}

/// The rules that restrict the current task in `generation`: by its real uid, and by the
/// cgroups it runs in when some rule names cgroups.
#[inline(always)]
pub fn restricted_rules(state: &PolicyState, generation: u32) -> u32 {
    let uid = bpf_get_current_uid_gid() as u32;
    let mut rules = lookup(&USERS, &UserKey { generation, uid }).unwrap_or(0);
    let levels = state.cgroup_levels[(generation & 1) as usize];
    if levels != 0 {
        rules |= cgroup_rules(generation, levels);
    }
    rules
}

/// Rules naming one of the current task's ancestor cgroups (or its own) at the levels
/// in `levels`.
#[inline(never)]
fn cgroup_rules(generation: u32, levels: u32) -> u32 {
    let mut rules = 0;
    let mut level = 0;
    while level < MAX_CGROUP_LEVEL {
        if levels & (1 << level) != 0 {
            // SAFETY: the helper takes only the level, and answers 0 past the task's depth.
            let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
            // Not `maps::lookup`: through it LLVM no longer unrolls this loop, and the
            // verifier then walks each level with its own state (+2,000 instructions per
            // hook).
            // SAFETY: as in `maps::lookup`: the value is copied out at once.
            if let Some(found) = unsafe { CGROUPS.get(CgroupKey { generation, _pad: 0, id }) } {
                rules |= *found;
            }
        }
        level += 1;
    }
    rules
}
