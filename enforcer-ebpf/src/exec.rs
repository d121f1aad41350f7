//! The exec check, shared by the early check (`bprm_check_security`, on the caller's
//! memory) and the re-check (`bprm_committing_creds`, on the kernel's copy), in reading
//! order: `check_exec` (is it a vetted client?) → `judge_exec` (what stops it before
//! argv?) → `decide` (argv and the environment against every rule) → `finish_exec`
//! (count, record, verdict).

mod argv;
mod loop_state;
mod scan;
mod seccomp;

use enforcer_common::{
    abi::{
        Action, BinaryInfo, Counter, DenialEvent, FileId, FileKey, Hook, KernelOffsets, MAX_ARGS, MAX_RULES,
        RuleCounter, Start, event_flag, rule_counter,
    },
    engine::{ALLOWED, ArgvScan, Decision, Reason, Scan, Verdict, judge_rule},
};

pub use self::loop_state::LoopState;
use self::{
    argv::{Caller, KernelCopy},
    loop_state::{LoopCtx, fresh, run_loop},
    scan::{read_one, scan_caller, scan_copy},
    seccomp::seccomp_refusal,
};
use crate::{
    EPERM, event,
    kernel::{file_identity, read_kernel, read_kernel_str},
    maps::{BINARIES, EXEC_GENERATION, KernelRules, OFFSETS, count, lookup},
    scratch::{Claim, with_scratch},
    task::{caller_exec, foreign_user_namespace, kill_current, traced},
};

/// Where an exec's argv and environment are read from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `bprm_check_security`: the caller's memory.
    Early,
    /// `bprm_committing_creds`: the kernel's copy.
    Commit,
}

/// Judges an exec of a restricted task at either stage; returns the LSM verdict (the
/// commit stage kills instead). `serial` is the policy serial the early check saw with
/// `generation` (unused at the commit stage).
#[inline(always)]
pub fn check_exec(bprm: u64, generation: u32, user_rules: u32, stage: Stage, serial: u32) -> i32 {
    let off = OFFSETS.load();
    let hook = if stage == Stage::Early { Hook::Exec as u32 } else { Hook::ExecCommit as u32 };
    let vetted = if off.valid == 0 {
        Err(Reason::NotConfigured)
    } else {
        vetted_exec(bprm, &off, generation, user_rules)
    };
    // Most execs of a restricted user are not of a vetted client: they end here.
    if let Ok(None) = vetted {
        return 0;
    }
    if stage == Stage::Early {
        let judged = ((serial as u64) << 32) | generation as u64;
        let _ = EXEC_GENERATION.insert(bprm, judged, 0);
    }
    // A denial at the re-check kills; so does finding the scratch space busy there.
    // (Each outcome of `vetted` is its own branch: a merged enum would carry registers
    // the verifier sees as never written.)
    let busy = || {
        if stage == Stage::Commit {
            kill_current();
        }
        -EPERM
    };
    match vetted {
        Ok(Some((identity, binary))) => {
            with_scratch!(busy(), |claim| judge_exec(
                &mut claim, bprm, generation, user_rules, stage, identity, binary
            ))
        }
        Ok(None) => 0, // returned above
        Err(reason) => with_scratch!(busy(), |claim| match event::start(&mut claim, hook, generation) {
            Some(scratch) =>
                finish_exec(&mut scratch.event, user_rules, Verdict::Undecidable(reason), stage, false),
            None => -EPERM,
        }),
    }
}

/// `check_exec` for a vetted client, with the scratch space claimed: the refusals found
/// before argv (traced, in a user namespace of its own, unfit seccomp filters), then
/// `decide`.
#[inline(always)]
fn judge_exec(
    claim: &mut Claim,
    bprm: u64,
    generation: u32,
    user_rules: u32,
    stage: Stage,
    identity: FileId,
    binary: BinaryInfo,
) -> i32 {
    let off = OFFSETS.load();
    let hook = if stage == Stage::Early { Hook::Exec as u32 } else { Hook::ExecCommit as u32 };
    let Some(scratch) = event::start(claim, hook, generation) else { return -EPERM };
    let event = &mut scratch.event;
    event.file = identity;
    if let Ok(filename) = read_kernel::<u64>(bprm, off.binprm_filename) {
        read_kernel_str(&mut event.path, filename);
    }
    let rules = binary.rules & user_rules;
    let deferred = deferred(bprm, &off);
    if stage == Stage::Early {
        count(Counter::Checked);
    }
    let pre = match (traced(&off), foreign_user_namespace(&off)) {
        (Ok(true), _) => Some(Reason::Traced),
        (_, Ok(true)) => Some(Reason::UserNamespace),
        (Ok(false), Ok(false)) => seccomp_refusal(claim, &off),
        _ => Some(Reason::NotConfigured),
    };
    if pre.is_none() && deferred && stage == Stage::Early {
        count(Counter::Deferred);
        return 0;
    }
    let verdict = decide(claim, bprm, &off, generation, rules, binary.start, stage, pre);
    // `decide` wrote the event too: take it afresh.
    let Some(event) = claim.event() else { return -EPERM };
    if stage == Stage::Commit {
        event.flags = if deferred { event_flag::DEFERRED } else { event_flag::RACE };
    }
    finish_exec(event, rules, verdict, stage, deferred)
}

/// Reads argv (and the environment) at `stage`, judges it against every rule in `rules`
/// with the shared `judge_rule`, one rule per `bpf_loop` iteration. The rule that decides
/// is recorded in the event with the rest of argv. `pre` is a refusal found before argv.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "the offsets are passed, not loaded again: each load copies them to the stack"
)]
fn decide(
    claim: &mut Claim,
    bprm: u64,
    off: &KernelOffsets,
    generation: u32,
    rules: u32,
    start: Start,
    stage: Stage,
    pre: Option<Reason>,
) -> Verdict {
    let Some(mut ctx) = LoopCtx::new(claim) else {
        return Verdict::Undecidable(Reason::NotConfigured);
    };
    *ctx.state() = LoopState {
        argv: 0,
        envp: 0,
        argc: 0,
        envc: 0,
        next: 0,
        copy_start: 0,
        cursor: 0,
        cursor_index: 0,
        env: None,
        seccomp_filter: 0,
        seccomp_insn: 0,
        seccomp_left: 0,
        seccomp_filters: 0,
        seccomp_insns: 0,
        seccomp_done: false,
        seccomp: None,
        scan: ArgvScan::new(start),
        result: None,
        rules,
        generation,
        decision: None,
    };
    let scan = match pre {
        Some(reason) => Scan::Undecidable(reason),
        None => match stage {
            Stage::Early => scan_caller(bprm, off, &mut ctx),
            Stage::Commit => scan_copy(bprm, off, &mut ctx),
        },
    };
    ctx.state().result = Some(scan);
    // One rule per iteration: a plain loop over 32 rules loses the verifier its bound.
    let ran = run_loop(MAX_RULES as u32, judge_one, &mut ctx);
    let decision = match fresh(&ctx.state().decision) {
        Some(decision) => decision,
        None if ran >= 0 => ALLOWED,
        None => Decision { verdict: Verdict::Undecidable(Reason::NotConfigured), rule: 0, audit: false },
    };
    if decision.verdict != Verdict::Allow {
        if let Some(event) = ctx.event() {
            event.rule = decision.rule;
            event.action = if decision.audit { Action::Audited as u32 } else { Action::Denied as u32 };
        }
        // argv for the log, from argv[0], when argv was read at all.
        let state = ctx.state();
        if state.argc != 0 {
            state.next = 0;
            state.cursor = state.copy_start;
            state.cursor_index = 0;
            let log = match stage {
                Stage::Early => read_one::<Caller, true>,
                Stage::Commit => read_one::<KernelCopy, true>,
            };
            run_loop(MAX_ARGS + 1, log, &mut ctx);
        }
    }
    decision.verdict
}

/// `bpf_loop` callback: judges the scan against rule `index`; stops at the first rule that
/// does not allow.
#[inline(never)]
extern "C" fn judge_one(index: u64, ctx: &mut LoopCtx<'_>) -> i64 {
    let state = ctx.state();
    let scan = match state.result {
        Some(scan) => scan,
        None => Scan::Undecidable(Reason::NotConfigured),
    };
    match judge_rule(scan, state.rules, index as u32, &KernelRules { generation: state.generation }) {
        Some(decision) => {
            state.decision = Some(decision);
            1
        }
        None => 0,
    }
}

/// Counts, records and returns the verdict of an exec check. At the commit stage a
/// denial kills the task; an audit-mode verdict there is recorded only for a deferred
/// exec (the early check recorded the others).
#[inline(always)]
fn finish_exec(event: &mut DenialEvent, rules: u32, verdict: Verdict, stage: Stage, deferred: bool) -> i32 {
    if verdict == Verdict::Allow {
        if stage == Stage::Early || deferred {
            count(Counter::Allowed);
        }
        return 0;
    }
    if event.action == 0 {
        // Refused before any rule was judged: blame the lowest rule that applies.
        event.rule = rules.trailing_zeros();
        event.action = Action::Denied as u32;
    }
    let audit = event.action == Action::Audited as u32;
    if audit && stage == Stage::Commit && !deferred {
        return 0;
    }
    let generation = event.generation;
    let rule = event.rule;
    if audit {
        count(Counter::Audited);
        count(rule_counter(generation, rule, RuleCounter::Audited));
    } else {
        if let Verdict::Undecidable(_) = verdict {
            count(Counter::Undecidable);
            count(rule_counter(generation, rule, RuleCounter::Undecidable));
        } else {
            count(Counter::Denied);
            count(rule_counter(generation, rule, RuleCounter::Denied));
        }
        if stage == Stage::Commit {
            count(Counter::Killed);
            if !deferred {
                count(Counter::Races);
            }
            event.action = Action::Killed as u32;
        }
    }
    if let Verdict::Deny { command } = verdict {
        event.command = command;
    }
    event.reason = verdict.reason() as u32;
    event::send(event);
    if audit {
        return 0;
    }
    if stage == Stage::Commit {
        kill_current();
    }
    -EPERM
}

/// The vetted binary an exec runs and the rules of the restricted caller that list it.
#[inline(always)]
fn vetted_exec(
    bprm: u64,
    off: &KernelOffsets,
    generation: u32,
    user_rules: u32,
) -> Result<Option<(FileId, BinaryInfo)>, Reason> {
    let Ok(identity) = read_kernel::<u64>(bprm, off.binprm_file).and_then(|file| file_identity(file, off))
    else {
        return Err(Reason::UnreadableFile);
    };
    match lookup(&BINARIES, &FileKey { generation, _pad: 0, file: identity }) {
        Some(binary) if binary.rules & user_rules != 0 => Ok(Some((identity, binary))),
        _ => Ok(None),
    }
}

/// Whether the caller's argv is not what the binary receives: a `#!` script or a
/// `binfmt_misc` handler rewrote it, or the exec came through an entry the early check
/// cannot read. The re-check decides those on the kernel's copy.
#[inline(always)]
fn deferred(bprm: u64, off: &KernelOffsets) -> bool {
    let filename: u64 = read_kernel(bprm, off.binprm_filename).unwrap_or(0);
    let interp: u64 = read_kernel(bprm, off.binprm_interp).unwrap_or(1);
    filename != interp || matches!(caller_exec(off), Err(Reason::UnsupportedExecPath))
}
