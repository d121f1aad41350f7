//! Denial events: started in the claimed scratch space, sent to userspace through `EVENTS`; and
//! `refuse`, the record-and-verdict of the hooks other than exec.

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::{bpf_get_current_comm, bpf_ktime_get_ns},
};
use enforcer_common::{
    abi::{Action, Counter, DenialEvent, FileId, MAX_RULES, Scratch},
    engine::{Reason, Rules},
};

use crate::{
    EPERM,
    maps::{EVENTS, KernelRules, count},
    scratch::Claim,
};

/// The scratch space with its event reset for a new decision by `hook` in `generation`;
/// None when there is no scratch space.
#[inline(always)]
pub fn start(claim: &mut Claim, hook: u32, generation: u32) -> Option<&mut Scratch> {
    let scratch = claim.scratch()?;
    reset(&mut scratch.event, hook, generation);
    Some(scratch)
}

#[inline(always)]
fn reset(event: &mut DenialEvent, hook: u32, generation: u32) {
    event.argv_len = 0;
    event.argv_truncated = 0;
    event.argc = 0;
    // The connect hooks' target is a C string: an empty one when they cannot read it.
    event.target[0] = 0;
    event.file = FileId::default();
    event.command = u32::MAX;
    event.action = 0;
    event.rule = 0;
    event.generation = generation;
    event.hook = hook;
    event.flags = 0;
    event.target_pid = 0;
    event.path[0] = 0;
    // SAFETY: the helper writes at most `comm.len()` bytes into `comm`, which has them.
    unsafe { bpf_get_current_comm(event.comm.as_mut_ptr().cast(), event.comm.len() as u32) };
}

/// Fills in who acted and when, and queues the event for userspace.
#[inline(always)]
pub fn send(event: &mut DenialEvent) {
    let pid_tgid = bpf_get_current_pid_tgid();
    event.pid = pid_tgid as u32;
    event.tgid = (pid_tgid >> 32) as u32;
    let uid_gid = bpf_get_current_uid_gid();
    event.uid = uid_gid as u32;
    event.gid = (uid_gid >> 32) as u32;
    // SAFETY: the helper takes no arguments.
    event.ktime_ns = unsafe { bpf_ktime_get_ns() };
    if EVENTS.output::<DenialEvent>(&*event, 0).is_err() {
        count(Counter::EventsDropped);
    }
}

/// Records a refusal by a non-exec hook for the lowest rule in `rules`; returns -EPERM,
/// or 0 when that rule is in audit mode. `describe` adds what was refused to the event
/// (`scratch.event`); it gets the whole scratch space, as the unix socket gate copies the
/// socket's path from it.
#[inline(always)]
pub fn refuse(
    claim: &mut Claim,
    generation: u32,
    rules: u32,
    hook: u32,
    reason: Reason,
    counter: Counter,
    describe: impl FnOnce(&mut Scratch),
) -> i32 {
    let rule = rules.trailing_zeros() & (MAX_RULES as u32 - 1);
    let audit = KernelRules { generation }.rule(rule).is_some_and(enforcer_common::abi::RuleConfig::is_audit);
    count(if audit { Counter::Audited } else { counter });
    if let Some(scratch) = start(claim, hook, generation) {
        let event = &mut scratch.event;
        event.rule = rule;
        event.action = if audit { Action::Audited as u32 } else { Action::Denied as u32 };
        event.reason = reason as u32;
        describe(scratch);
        send(&mut scratch.event);
    }
    if audit { 0 } else { -EPERM }
}
