//! `enforcer status`: works with and without the daemon, from the kernel's view of the
//! attached programs, the pinned maps, the daemon's state file and the denial log.

use std::{path::Path, process::ExitCode, time::Duration};

use anyhow::Result;
use enforcer_common::abi::{Counter, RuleCounter, rule_counter};
use serde::Serialize;

use crate::{
    bpf, control,
    events::{DEFAULT_LOG_KEEP, DEFAULT_LOG_MAX_BYTES, Denial, DenialLog, Filter},
    exit::Usage,
    state,
};

pub struct Query {
    pub json: bool,
    pub limit: usize,
    pub since: Option<String>,
    pub user: Option<String>,
}

#[derive(Serialize)]
pub struct Daemon {
    pub running: bool,
    pub pid: Option<u32>,
}

#[derive(Serialize)]
pub struct PolicyInfo {
    pub source: String,
    pub digest: String,
    pub mode: String,
    pub loaded: String,
    pub generation: u32,
}

#[derive(Serialize, Default)]
pub struct Counters {
    pub checked: u64,
    pub allowed: u64,
    pub denied: u64,
    pub undecidable: u64,
    pub audited: u64,
    pub races: u64,
    pub killed: u64,
    pub deferred: u64,
    pub connects_refused: u64,
    pub tamper_refused: u64,
    pub scratch_busy: u64,
    pub events_dropped: u64,
    /// docker API requests the gates refused.
    pub api_refused: u64,
    /// Restricted connects to a docker socket path routed to their gate (6.7+).
    pub gate_routed: u64,
}

#[derive(Serialize)]
pub struct RuleCounters {
    pub name: String,
    pub denied: u64,
    pub undecidable: u64,
    pub audited: u64,
}

#[derive(Serialize)]
pub struct Status {
    pub enforcing: bool,
    pub enforcing_since: Option<String>,
    pub daemon: Daemon,
    pub kernel: String,
    pub lsms: String,
    /// Whether gated identities' connects to the docker socket paths are routed to their
    /// gates (`cgroup/connect_unix`, 6.7+), from the pins.
    pub gate_routing: bool,
    pub policy: Option<PolicyInfo>,
    pub counters: Option<Counters>,
    pub rules: Vec<RuleCounters>,
    /// Per loaded enforcing program: invocations and run time, counted by the kernel while
    /// `kernel.bpf_stats_enabled` is 1 (`sysctl kernel.bpf_stats_enabled=1`), else zero.
    pub programs: Vec<ProgramStats>,
    pub denials: Vec<Denial>,
    pub notes: Vec<String>,
}

#[derive(Serialize)]
pub struct ProgramStats {
    pub name: String,
    pub run_count: u64,
    pub run_time_ns: u64,
}

fn parse_since(text: &str) -> Result<std::time::SystemTime> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    let age: Duration = humantime::parse_duration(text).map_err(|_| {
        Usage(format!("--since {text:?}: expected RFC 3339 (2026-11-27T10:00:00Z) or an age (10m)"))
    })?;
    Ok(std::time::SystemTime::now() - age)
}

fn parse_user(text: &str) -> Result<u32> {
    if let Ok(uid) = text.parse() {
        return Ok(uid);
    }
    match crate::users::uid_of(text) {
        Some(uid) => Ok(uid),
        None => Err(Usage(format!("--user {text:?}: no such user")).into()),
    }
}

/// The denials `query` selects (the filters shared by `status` and `status --follow`).
pub fn filter_of(query: &Query) -> Result<Filter> {
    Ok(Filter {
        since: query.since.as_deref().map(parse_since).transpose()?,
        uid: query.user.as_deref().map(parse_user).transpose()?,
    })
}

pub fn status(query: &Query, state_dir: &Path) -> Result<ExitCode> {
    let filter = filter_of(query)?;
    let status = collect(state_dir, query.limit, &filter)?;
    if query.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_table(&status);
    }
    Ok(ExitCode::from(if status.enforcing { crate::exit::OK } else { crate::exit::DENY }))
}

/// What `status` shows (and `metrics` exports): from the kernel, the pins, the daemon's
/// state and the denial log.
pub fn collect(state_dir: &Path, limit: usize, filter: &Filter) -> Result<Status> {
    let enforcing = bpf::exec_hook_attached()?;
    let pins = bpf::read_pins()?;
    let daemon_reply = control::request("ping", Duration::from_secs(5)).unwrap_or(None);
    let mut notes = Vec::new();
    let saved = match state::load(state_dir) {
        Ok(saved) => saved,
        Err(error) => {
            notes.push(format!("{error:#}: rule and binary names below may be missing"));
            None
        }
    };
    if daemon_reply.is_none() {
        if enforcing {
            notes.push(
                "the daemon is not running: the pinned programs keep enforcing, and denials wait in the \
                 kernel's ring buffer until it starts again (the log below may lag)"
                    .to_string(),
            );
        } else {
            notes.push(
                "the daemon is not running and no program is attached: NOTHING IS ENFORCED".to_string(),
            );
        }
    }
    let counters = pins.counters.as_ref().map(|c| {
        let at = |i: Counter| c.get(i as usize).copied().unwrap_or(0);
        Counters {
            checked: at(Counter::Checked),
            allowed: at(Counter::Allowed),
            denied: at(Counter::Denied),
            undecidable: at(Counter::Undecidable),
            audited: at(Counter::Audited),
            races: at(Counter::Races),
            killed: at(Counter::Killed),
            deferred: at(Counter::Deferred),
            connects_refused: at(Counter::ConnectsRefused),
            tamper_refused: at(Counter::TamperRefused),
            scratch_busy: at(Counter::ScratchBusy),
            events_dropped: at(Counter::EventsDropped),
            api_refused: at(Counter::ApiRefused),
            gate_routed: at(Counter::GateRouted),
        }
    });
    let mut rules = Vec::new();
    if let (Some(c), Some(saved), Some(policy_state)) = (&pins.counters, &saved, &pins.state) {
        let generation = policy_state.active;
        let at = |rule: u32, kind: RuleCounter| {
            c.get(rule_counter(generation, rule, kind) as usize).copied().unwrap_or(0)
        };
        for (index, name) in saved.generations[generation as usize % 2].rules.iter().enumerate() {
            let index = index as u32;
            rules.push(RuleCounters {
                name: name.clone(),
                denied: at(index, RuleCounter::Denied),
                undecidable: at(index, RuleCounter::Undecidable),
                audited: at(index, RuleCounter::Audited),
            });
        }
    }
    let policy = saved.as_ref().filter(|_| pins.state.is_some()).map(|s| PolicyInfo {
        source: s.policy_source.clone(),
        digest: s.policy_digest.clone(),
        mode: s.mode.clone(),
        loaded: s.policy_loaded.clone(),
        generation: s.active_generation,
    });
    let status = Status {
        enforcing,
        enforcing_since: saved.as_ref().filter(|_| enforcing).map(|s| s.enforcing_since.clone()),
        daemon: Daemon { running: daemon_reply.is_some(), pid: daemon_reply.map(|r| r.pid) },
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        lsms: std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default().trim().to_string(),
        gate_routing: pins.hooks.iter().any(|pin| {
            pin.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(crate::routing::ROUTE_PROGRAM))
        }),
        policy,
        counters,
        rules,
        programs: bpf::program_stats()?
            .into_iter()
            .map(|(name, run_count, run_time_ns)| ProgramStats {
                name: name.to_string(),
                run_count,
                run_time_ns,
            })
            .collect(),
        denials: DenialLog::with_limits(
            state_dir,
            DEFAULT_LOG_MAX_BYTES,
            saved.as_ref().map_or(DEFAULT_LOG_KEEP, |s| s.log_keep),
        )
        .recent(limit, filter)?,
        notes,
    };
    Ok(status)
}

fn print_table(status: &Status) {
    match (&status.enforcing, &status.enforcing_since) {
        (true, Some(since)) => println!("enforcing: yes (since {since})"),
        (true, None) => println!("enforcing: yes"),
        (false, _) => println!("enforcing: NO"),
    }
    match status.daemon.pid {
        Some(pid) => println!("daemon:    running (pid {pid})"),
        None => println!("daemon:    not running"),
    }
    println!("kernel:    {} (LSMs: {})", status.kernel, status.lsms);
    println!(
        "routing:   {}",
        if status.gate_routing {
            "on: gated identities' connects to the docker socket reach their gate"
        } else {
            "off: gated identities need DOCKER_HOST (docs/api-gate.md)"
        }
    );
    if let Some(p) = &status.policy {
        println!(
            "policy:    {} (sha256 {}, mode {}, loaded {})",
            p.source,
            &p.digest[..p.digest.len().min(12)],
            p.mode,
            p.loaded
        );
    }
    if let Some(c) = &status.counters {
        println!(
            "counters:  checked {}, allowed {}, denied {}, undecidable {}, audited {}, events dropped {}",
            c.checked, c.allowed, c.denied, c.undecidable, c.audited, c.events_dropped
        );
        println!(
            "bypasses:  killed on re-check {} (races {}), deferred to re-check {}, connects refused {}, \
             tampering refused {}, refused with scratch busy {}",
            c.killed, c.races, c.deferred, c.connects_refused, c.tamper_refused, c.scratch_busy
        );
        println!(
            "api gate:  requests refused {}, connects routed to the gate {}",
            c.api_refused, c.gate_routed
        );
    }
    for rule in &status.rules {
        println!(
            "rule {:<20} denied {}, undecidable {}, audited {}",
            format!("{:?}:", rule.name),
            rule.denied,
            rule.undecidable,
            rule.audited
        );
    }
    for program in status.programs.iter().filter(|p| p.run_count > 0) {
        #[expect(clippy::cast_precision_loss, reason = "an average for display, rounded to whole ns")]
        let per_run = program.run_time_ns as f64 / program.run_count as f64;
        println!("program {:<22} {} runs, {per_run:.0} ns per run", program.name, program.run_count);
    }
    for note in &status.notes {
        println!("note:      {note}");
    }
    println!("recent denials ({}):", status.denials.len());
    if !status.denials.is_empty() {
        println!("{}", denial_header());
    }
    for d in &status.denials {
        println!("{}", denial_row(d));
    }
}

/// The column titles of the denial table (`status`, `status --follow`).
pub fn denial_header() -> String {
    format!(
        "  {:<24} {:<12} {:>7} {:<18} {:<8} {:<28} argv, or the connection or ptrace attempt",
        "time", "user", "pid", "rule", "action", "reason"
    )
}

/// One denial as a table row.
pub fn denial_row(d: &Denial) -> String {
    let reason = match &d.command {
        Some(command) => format!("{}:{command}", d.reason),
        None => d.reason.clone(),
    };
    format!(
        "  {:<24} {:<12} {:>7} {:<18} {:<8} {:<28} {}",
        d.time,
        d.user.clone().unwrap_or_else(|| d.uid.to_string()),
        d.pid,
        d.rule,
        d.action,
        reason,
        d.attempt()
    )
}
