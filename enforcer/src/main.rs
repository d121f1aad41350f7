//! enforcer: denies chosen docker CLI commands to restricted users, in the kernel.

mod bpf;
mod events;
mod kernel;
mod policy;
mod users;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result};
use aya::maps::RingBuf;
use clap::{Parser, Subcommand};
use enforcer_common::{
    COUNTER_AUDITED, COUNTER_CHECKED, COUNTER_DENIED, COUNTER_EVENTS_DROPPED, COUNTER_UNDECIDABLE,
    DenialEvent, FileId,
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    bpf::Programs,
    events::{Denial, DenialLog},
    policy::{HostSystem, Policy},
};

const DEFAULT_STATE_DIR: &str = "/var/lib/enforcer";

#[derive(Parser)]
#[command(version, about = "Denies chosen docker CLI commands to restricted users, in the kernel (BPF LSM)")]
struct Cli {
    /// Where the denial log lives.
    #[arg(long, global = true, default_value = DEFAULT_STATE_DIR, env = "ENFORCER_STATE_DIR")]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the policy, attach the LSM programs and enforce until SIGINT/SIGTERM.
    Run {
        /// Policy file [default: /etc/enforcer/policy.toml if present, else the embedded default]
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print each start-up stage with its duration.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Show whether the policy is enforced and the recent denials.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// How many recent denials to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, verbose } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|rt| rt.block_on(run(config.as_deref(), &cli.state_dir, verbose)))
            .map(|()| ExitCode::SUCCESS),
        Command::Status { json, limit } => status(json, limit, &cli.state_dir),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("enforcer: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Option<&Path>, state_dir: &Path, verbose: bool) -> Result<()> {
    let started = std::time::Instant::now();
    let stage = |name: &str| {
        if verbose {
            eprintln!("enforcer: [{:>7.1} ms] {name}", started.elapsed().as_secs_f64() * 1000.0);
        }
    };
    kernel::check_bpf_lsm()?;
    let policy = Policy::load(config)?;
    let resolved = policy.resolve(&HostSystem)?;
    for warning in &resolved.warnings {
        eprintln!("enforcer: warning: {warning}");
    }
    stage("policy loaded and resolved");
    let offsets = kernel::offsets_from_btf(Path::new(kernel::VMLINUX_BTF))?;
    stage("kernel offsets read from BTF");
    let mut programs = Programs::load(&offsets)?;
    stage("BPF object loaded");
    let paths: Vec<PathBuf> = resolved.binaries.keys().cloned().collect();
    let identities = programs.kernel_identities(&paths)?;
    stage("binary identities probed");
    programs.install_policy(&policy.rule_configs(), &resolved, &identities)?;
    stage("policy maps filled");
    programs.attach_exec_hook()?;
    stage("exec hook verified and attached");

    let users: Vec<String> = resolved
        .users
        .keys()
        .map(|uid| match users::name_of(*uid) {
            Some(name) => format!("{name}({uid})"),
            None => uid.to_string(),
        })
        .collect();
    eprintln!(
        "enforcer: enforcing {} (mode {:?}, {} rule(s)) after {} ms; restricted users: {}; vetted binaries: {}",
        policy.source,
        policy.mode,
        policy.rules.len(),
        started.elapsed().as_millis(),
        users.join(", "),
        paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    if let Some(count) = programs.verified_instructions(bpf::EXEC_PROGRAM) {
        eprintln!("enforcer: verifier processed {count} instructions for {}", bpf::EXEC_PROGRAM);
    }
    notify_ready();

    let rule_names: Vec<String> = policy.rules.iter().map(|r| r.name.clone()).collect();
    let binaries: BTreeMap<FileId, PathBuf> =
        identities.iter().map(|(path, id)| (*id, path.clone())).collect();
    let log = DenialLog::new(state_dir);
    let ring = RingBuf::try_from(programs.ebpf.take_map("EVENTS").context("map EVENTS missing")?)?;
    // SAFETY: the ring buffer owns its fd and keeps it open for the AsyncFd's lifetime.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("cannot poll the events ring buffer: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                while let Some(item) = guard.get_inner_mut().next() {
                    if item.len() < size_of::<DenialEvent>() {
                        eprintln!("enforcer: warning: short event of {} bytes ignored", item.len());
                        continue;
                    }
                    // SAFETY: the kernel wrote a whole DenialEvent; read_unaligned copes with
                    // the ring buffer's 8-byte alignment.
                    let event: DenialEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    record(&events::decode(&event, &rule_names, &binaries), &log);
                }
                guard.clear_ready();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    let counters = programs.counters()?;
    let counter = |index: u32| counters[index as usize];
    eprintln!(
        "enforcer: stopping (checked {}, denied {}, undecidable {}, audited {}, events dropped {})",
        counter(COUNTER_CHECKED),
        counter(COUNTER_DENIED),
        counter(COUNTER_UNDECIDABLE),
        counter(COUNTER_AUDITED),
        counter(COUNTER_EVENTS_DROPPED)
    );
    Ok(())
}

fn record(denial: &Denial, log: &DenialLog) {
    eprintln!("{}", denial.log_line());
    if let Err(error) = log.append(denial) {
        eprintln!("enforcer: error: {error:#}");
    }
}

/// Tells systemd (Type=notify) that enforcement is in force.
fn notify_ready() {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let socket = PathBuf::from(socket);
    let Ok(sender) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let sent = if let Some(abstract_name) = socket.to_str().and_then(|s| s.strip_prefix('@')) {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|addr| sender.send_to_addr(b"READY=1", &addr))
    } else {
        sender.send_to(b"READY=1", &socket)
    };
    if let Err(error) = sent {
        eprintln!("enforcer: warning: cannot notify systemd: {error}");
    }
}

#[derive(serde::Serialize)]
struct Status {
    enforcing: bool,
    denials: Vec<Denial>,
}

fn status(json: bool, limit: usize, state_dir: &Path) -> Result<ExitCode> {
    let status =
        Status { enforcing: bpf::exec_hook_attached()?, denials: DenialLog::new(state_dir).recent(limit)? };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!("enforcing: {}", if status.enforcing { "yes" } else { "NO" });
        println!("recent denials ({}):", status.denials.len());
        if !status.denials.is_empty() {
            println!(
                "  {:<24} {:<12} {:>7} {:<18} {:<8} {:<22} argv",
                "time", "user", "pid", "rule", "action", "reason"
            );
        }
        for d in &status.denials {
            let reason = match &d.command {
                Some(command) => format!("{}:{command}", d.reason),
                None => d.reason.clone(),
            };
            println!(
                "  {:<24} {:<12} {:>7} {:<18} {:<8} {:<22} {}",
                d.time,
                d.user.clone().unwrap_or_else(|| d.uid.to_string()),
                d.pid,
                d.rule,
                d.action,
                reason,
                d.argv.join(" ")
            );
        }
    }
    Ok(if status.enforcing { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
