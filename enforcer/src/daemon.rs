//! `enforcer run`: start-up, the event loop (denials, reloads, control requests), and
//! `enforcer verify`.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, RingBuf};
use enforcer_common::abi::{Counter, DenialEvent, GENERATIONS};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, unix::AsyncFd},
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
};

use crate::{
    bpf::{self, Programs},
    compile,
    control::{self, Reply},
    discovery::{self, HostSystem},
    dynamic::{self, Fingerprint},
    events::{self, DenialLog},
    gate, kernel, logging,
    policy::{Policy, Resolved},
    state::{self, Generation, NamedBinary, State},
};

pub struct Options {
    pub config: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub detach_on_exit: bool,
    pub log_max_bytes: u64,
    pub log_keep: usize,
}

struct Daemon {
    programs: Programs,
    options: Options,
    state: State,
    /// The policy in force, and what `stat` said about its sockets and cgroups when the
    /// maps last learnt them.
    resolved: Option<Resolved>,
    fingerprint: Fingerprint,
    cgroup_root: Option<PathBuf>,
    /// The API gates of the rules that have one.
    gates: gate::GateSet,
    /// Refusals of the gates, for the event loop to record (taken by `serve`).
    gate_records: Option<tokio::sync::mpsc::Receiver<(String, gate::ApiDenial)>>,
}

impl Daemon {
    /// Installs a loaded and resolved policy into the inactive generation, then flips it
    /// active. On any error nothing changes and the policy in force stays.
    fn install(&mut self, policy: &Policy, resolved: &Resolved) -> Result<String> {
        let installed = self.install_with_gates(policy, resolved);
        if installed.is_err() {
            self.gates.rollback();
        }
        installed
    }

    fn install_with_gates(&mut self, policy: &Policy, resolved: &Resolved) -> Result<String> {
        for warning in &resolved.warnings {
            log::warn!("{warning}");
        }
        if !resolved.cgroups.is_empty() && self.cgroup_root.is_none() {
            anyhow::bail!(
                "{}: a rule names cgroups, but no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)",
                policy.source
            );
        }
        let fingerprint = dynamic::fingerprint(resolved, self.cgroup_root.as_deref());
        let paths: Vec<PathBuf> = resolved.binaries.keys().cloned().collect();
        let sockets = dynamic::existing_sockets(resolved);
        let gate_paths = self.gates.prepare(policy)?;
        // One probe for all: attaching and detaching it is most of its cost.
        let probed: Vec<PathBuf> =
            paths.iter().chain(sockets.keys()).chain(gate_paths.values()).cloned().collect();
        let probed_identities = self.programs.kernel_identities(&probed)?;
        let identities: std::collections::BTreeMap<PathBuf, _> = probed_identities
            .iter()
            .filter(|(path, _)| resolved.binaries.contains_key(*path))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        let cgroups = dynamic::cgroup_ids(resolved, self.cgroup_root.as_deref());
        let dynamic = dynamic::dynamic(&sockets, &probed_identities, cgroups);
        let mut gates = std::collections::BTreeMap::new();
        for (index, path) in &gate_paths {
            let identity = probed_identities
                .get(path)
                .with_context(|| format!("no kernel identity for the gate socket {}", path.display()))?;
            let upstream = policy.rules.get(*index).map(gate::upstream_of).unwrap_or_default();
            gates.insert(*index, compile::GateSocket { identity: *identity, path: path.clone(), upstream });
        }
        let compiled =
            compile::compile(policy, resolved, &identities, &dynamic::socket_aliases(resolved), &gates)?;
        let policy_state = self.programs.install_policy(&compiled, &dynamic)?;
        // In force: the gates judge by the new rules from here on.
        self.gates.commit(policy, resolved)?;
        self.resolved = Some(resolved.clone());
        self.fingerprint = fingerprint;
        let generation = policy_state.active as usize % GENERATIONS as usize;
        self.state.generations[generation] = Generation {
            rules: policy.rules.iter().map(|r| r.name.clone()).collect(),
            binaries: identities
                .iter()
                .map(|(path, id)| NamedBinary { dev: id.dev, ino: id.ino, path: path.display().to_string() })
                .collect(),
        };
        self.state.active_generation = generation as u32;
        self.state.policy_source.clone_from(&policy.source);
        self.state.policy_digest.clone_from(&policy.digest);
        self.state.mode = format!("{:?}", policy.mode).to_lowercase();
        self.state.policy_loaded = state::now_rfc3339();
        self.save_state();
        let users: Vec<String> = resolved
            .users
            .keys()
            .map(|uid| match crate::users::name_of(*uid) {
                Some(name) => format!("{name}({uid})"),
                None => uid.to_string(),
            })
            .collect();
        let list = |items: Vec<String>| if items.is_empty() { "none".to_string() } else { items.join(", ") };
        Ok(format!(
            "policy {} (sha256 {}, mode {}, {} rule(s)) in force; restricted users: {}; restricted cgroups: {}; \
             vetted binaries: {}; gated sockets: {}; gated hosts: {}",
            policy.source,
            &policy.digest[..12],
            self.state.mode,
            policy.rules.len(),
            list(users),
            list(resolved.cgroups.keys().cloned().collect()),
            list(paths.iter().map(|p| p.display().to_string()).collect()),
            list(resolved.sockets.keys().map(|p| p.display().to_string()).collect()),
            list(resolved.hosts.keys().map(crate::policy::host_text).collect()),
        ) + &format!(
            "; API gates: {}",
            list(gate_paths.values().map(|p| p.display().to_string()).collect())
        ))
    }

    /// Re-learns socket inodes and cgroup ids when `stat` says they moved (dockerd or a
    /// unit restarted), into the generation in force.
    fn refresh(&mut self) -> Result<()> {
        let Some(resolved) = &self.resolved else { return Ok(()) };
        let fingerprint = dynamic::fingerprint(resolved, self.cgroup_root.as_deref());
        if fingerprint == self.fingerprint {
            return Ok(());
        }
        let sockets = dynamic::existing_sockets(resolved);
        let cgroups = dynamic::cgroup_ids(resolved, self.cgroup_root.as_deref());
        let paths: Vec<PathBuf> = sockets.keys().cloned().collect();
        let identities = self.programs.kernel_identities(&paths)?;
        let dynamic = dynamic::dynamic(&sockets, &identities, cgroups);
        let generation = self.programs.policy_state()?.active % GENERATIONS;
        self.programs.sync_dynamic(generation, &dynamic)?;
        self.fingerprint = fingerprint;
        log::debug!("re-learnt {} socket(s) and {} cgroup(s)", dynamic.sockets.len(), dynamic.cgroups.len());
        Ok(())
    }

    fn save_state(&self) {
        if let Err(error) = state::save(&self.options.state_dir, &self.state) {
            log::error!("{error:#}");
        }
    }

    /// Reload on SIGHUP or `enforcer reload`: the error is logged and returned.
    fn reload(&mut self) -> Result<String> {
        let loaded = Policy::load(self.options.config.as_deref())
            .map_err(anyhow::Error::from)
            .and_then(|policy| Ok((policy.resolve(&discovery::discover(&policy, &HostSystem))?, policy)))
            .and_then(|(resolved, policy)| self.install(&policy, &resolved));
        match loaded {
            Ok(message) => {
                log::info!("reloaded: {message}");
                Ok(message)
            }
            Err(error) => {
                log::error!("reload failed, the policy in force is unchanged: {error:#}");
                Err(error)
            }
        }
    }

    fn record(&self, event: &DenialEvent, denial_log: &DenialLog) {
        let generation = event.generation as usize % 2;
        let names = &self.state.generations[generation];
        let denial = events::decode(event, &names.rules, |file| names.binary(file));
        log_denial(&denial, denial_log);
    }

    /// Records a request an API gate refused, and counts it.
    fn record_api(&mut self, rule: &str, denial: &gate::ApiDenial, denial_log: &DenialLog) {
        log_denial(&events::api_denial(rule, denial), denial_log);
        if let Err(error) = self.programs.count_in_userspace(Counter::ApiRefused) {
            log::error!("cannot count an API refusal: {error:#}");
        }
    }

    /// Carries out one control request. Returns the reply and whether the daemon must stop.
    fn answer(&mut self, line: &str) -> (Reply, bool) {
        let pid = std::process::id();
        match line.trim() {
            "ping" => (Reply { ok: true, pid, ..Default::default() }, false),
            "reload" => match self.reload() {
                Ok(message) => (Reply { ok: true, pid, message: Some(message), ..Default::default() }, false),
                Err(error) => {
                    let policy_error = error
                        .chain()
                        .any(<dyn std::error::Error + 'static>::is::<crate::policy::PolicyError>);
                    let error = Some(format!("{error:#}"));
                    (Reply { ok: false, pid, error, policy_error, ..Default::default() }, false)
                }
            },
            "stop" => match bpf::remove_pins() {
                Ok(_) => {
                    log::info!("stop requested: pins removed, detaching");
                    (Reply { ok: true, pid, ..Default::default() }, true)
                }
                Err(error) => {
                    (Reply { ok: false, pid, error: Some(format!("{error:#}")), ..Default::default() }, false)
                }
            },
            other => (
                Reply {
                    ok: false,
                    pid,
                    error: Some(format!("unknown request {other:?}")),
                    ..Default::default()
                },
                false,
            ),
        }
    }
}

/// Logs a denial record and appends it to the denial log.
fn log_denial(denial: &events::Denial, denial_log: &DenialLog) {
    logging::denial(denial);
    if let Err(error) = denial_log.append(denial) {
        log::error!("{error:#}");
    }
}

/// A control request read off its connection, and where its reply goes.
struct ControlRequest {
    line: String,
    writer: tokio::net::unix::OwnedWriteHalf,
}

/// Reads one control connection's request line in its own task, so a slow or idle client
/// never holds up the event loop (denials, refreshes, other clients); the loop answers it.
fn read_control(stream: UnixStream, requests: tokio::sync::mpsc::Sender<ControlRequest>) {
    tokio::spawn(async move {
        let (reader, writer) = stream.into_split();
        let mut line = String::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), BufReader::new(reader).read_line(&mut line)).await;
        if matches!(read, Ok(Ok(n)) if n > 0) {
            let _ = requests.send(ControlRequest { line, writer }).await;
        }
    });
}

/// Writes a reply in its own task (a client that does not read cannot stall the loop).
fn send_reply(mut writer: tokio::net::unix::OwnedWriteHalf, reply: &Reply) {
    let mut text = serde_json::to_string(reply).unwrap_or_default();
    text.push('\n');
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(5), writer.write_all(text.as_bytes())).await;
    });
}

/// Holds the single-instance lock (`daemon.lock` beside the control socket) for the
/// daemon's life: a second `enforcer run` would flip policy generations and remove the
/// first one's pins while both drain the ring buffer.
struct InstanceLock {
    _file: std::fs::File,
}

fn lock_instance() -> Result<InstanceLock> {
    use std::{io::Write as _, os::fd::AsRawFd as _};
    let path = control::socket_path().with_file_name("daemon.lock");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
            "cannot open {}: permission denied (enforcer needs root, or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    // SAFETY: a valid open descriptor; flock has no other preconditions.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            anyhow::bail!(
                "another enforcer daemon is already running{} (it holds {}): stop it first (`systemctl stop \
                 enforcer`, or SIGTERM: the pins keep enforcing meanwhile), or change its policy with \
                 `enforcer reload`",
                if holder.is_empty() { String::new() } else { format!(" (pid {holder})") },
                path.display()
            );
        }
        return Err(error).with_context(|| format!("cannot lock {}", path.display()));
    }
    file.set_len(0)?;
    writeln!(file, "{}", std::process::id()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(InstanceLock { _file: file })
}

/// The control socket's identity (device, inode), so that exiting removes only our own.
fn socket_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn listen_control() -> Result<UnixListener> {
    let path = control::socket_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("cannot listen on {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// The daemon's exit status after `enforcer stop` detached it: a success that systemd must
/// not answer with a restart (`RestartPreventExitStatus=3`).
pub const EXIT_DETACHED: u8 = 3;

/// Runs the daemon; returns whether it was detached by `enforcer stop`.
pub async fn run(options: Options) -> Result<bool> {
    let started = Instant::now();
    kernel::check_bpf_lsm()?;
    raise_open_files_limit();
    // Held until the daemon has shut down: see InstanceLock.
    let _lock = lock_instance()?;
    let mut daemon = start(options, started)?;
    let mut events = Events::open(&mut daemon)?;
    let ending = serve(&mut daemon, &mut events).await?;
    shut_down(daemon, events, ending)
}

/// The soft limit on open files up to the hard one: the gates' clients hold descriptors of
/// the daemon's (two each), and the daemon must keep some for its log and control socket.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
        }
    }
}

/// A `-v` start-up stage, with the time since start.
fn stage(started: Instant, name: &str) {
    log::debug!("[{:>7.1} ms] {name}", started.elapsed().as_secs_f64() * 1000.0);
}

/// Start-up: checks the policy, loads and verifies the programs, installs the policy and
/// attaches the hooks. Once it returns, the policy is enforced.
fn start(options: Options, started: Instant) -> Result<Daemon> {
    // The policy is checked before anything is loaded: a bad file changes nothing.
    let policy = Policy::load(options.config.as_deref())?;
    let resolved = policy.resolve(&discovery::discover(&policy, &HostSystem))?;
    stage(started, "policy parsed and resolved");
    let btf = kernel::read_btf()?;
    let offsets = kernel::offsets_from_btf(&btf)?;
    stage(started, "kernel offsets read from BTF");
    let mut programs = Programs::load(&offsets, &btf, &bpf::maps_dir())?;
    drop(btf);
    let adopted = programs.adopted;
    stage(
        started,
        if adopted { "BPF object loaded, pinned maps adopted" } else { "BPF object loaded, maps pinned" },
    );
    // Every program passes the verifier before the policy maps change or anything attaches.
    programs.verify_hooks()?;
    stage(started, "every enforcing program verified");
    programs.install_grammar()?;

    let state = initial_state(&options, adopted);
    let gate_dir = gate::gate_dir();
    let mut never_bind = vec![options.state_dir.clone(), PathBuf::from("/sys/fs/bpf")];
    never_bind.extend(gate_dir.parent().map(PathBuf::from));
    let (gates, gate_records) = gate::GateSet::new(gate_dir, never_bind);
    let mut daemon = Daemon {
        programs,
        options,
        state,
        resolved: None,
        fingerprint: Fingerprint::default(),
        cgroup_root: dynamic::cgroup2_root(),
        gates,
        gate_records: Some(gate_records),
    };
    let message = daemon.install(&policy, &resolved)?;
    stage(started, "policy installed");
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let (hooks, routing) = daemon.programs.attach_hooks(stamp)?;
    for hook in hooks {
        stage(
            started,
            &format!(
                "{}: verified in {:.1} ms, attached and pinned in {:.1} ms",
                hook.program,
                hook.verify.as_secs_f64() * 1000.0,
                hook.attach.as_secs_f64() * 1000.0
            ),
        );
    }
    stage(started, "hooks verified, attached and pinned");
    match &routing {
        bpf::Routing::On => log::info!(
            "connect routing on (cgroup/connect_unix): gated rules' identities reach their gate at the docker socket paths"
        ),
        bpf::Routing::Off(reason) => log::warn!(
            "connect routing off, gated rules' identities need DOCKER_HOST=unix://{}/<rule>.sock: {reason}",
            gate::gate_dir().display()
        ),
    }
    log::info!(
        "enforcing after {} ms ({}): {message}",
        started.elapsed().as_millis(),
        if adopted { "adopted the pinned maps of a previous daemon" } else { "fresh pins" }
    );
    for program in bpf::attached_programs() {
        if let Some(count) = daemon.programs.verified_instructions(program) {
            log::info!("verifier processed {count} instructions for {program}");
        }
    }
    // Start-up's BTF and object parses are freed by now; glibc keeps freed heap pages
    // unless asked, and they would stay in the daemon's RSS for its whole life.
    // SAFETY: no preconditions.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
    Ok(daemon)
}

/// The daemon's record: the rule and binary names of a previous daemon whose pinned maps
/// were adopted (the kernel's events name their indices), else a fresh one.
fn initial_state(options: &Options, adopted: bool) -> State {
    let previous = match state::load(&options.state_dir) {
        Ok(previous) => previous.filter(|_| adopted),
        Err(error) => {
            let aside = state::quarantine(&options.state_dir).map_or_else(
                |e| format!("could not move it aside: {e:#}"),
                |p| format!("moved to {}", p.display()),
            );
            log::error!("{error:#} ({aside}); starting a fresh record of rule and binary names");
            None
        }
    };
    let now = state::now_rfc3339();
    let (enforcing_since, generations) = match previous {
        Some(previous) => (previous.enforcing_since, previous.generations),
        None => (now.clone(), Default::default()),
    };
    State {
        enforcing_since,
        daemon_pid: std::process::id(),
        daemon_started: now,
        generations,
        log_keep: options.log_keep,
        ..Default::default()
    }
}

/// What the event loop listens to, opened once enforcement is in force.
struct Events {
    denial_log: DenialLog,
    ring: AsyncFd<RingBuf<MapData>>,
    listener: UnixListener,
    /// The control socket we bound, so that shutting down removes only our own.
    own_socket: Option<(u64, u64)>,
}

impl Events {
    /// Logs the denials queued in the kernel, opens the control socket, and tells systemd
    /// that the daemon is ready.
    fn open(daemon: &mut Daemon) -> Result<Events> {
        let denial_log = DenialLog::with_limits(
            &daemon.options.state_dir,
            daemon.options.log_max_bytes,
            daemon.options.log_keep,
        );
        let mut ring =
            RingBuf::try_from(daemon.programs.ebpf.take_map("EVENTS").context("map EVENTS missing")?)?;
        // Denials queued while no daemon ran are logged before anyone can ask for status.
        let mut queued = 0;
        while let Some(item) = ring.next() {
            if let Some(event) = event_of(&item) {
                daemon.record(&event, &denial_log);
                queued += 1;
            }
        }
        if queued > 0 {
            log::info!("logged {queued} denial(s) queued in the kernel while no daemon ran");
        }
        let listener = listen_control()?;
        let own_socket = socket_identity(&control::socket_path());
        // Ready only now that the control socket answers: a unit ordered after this one, or a
        // `systemctl reload` right after `systemctl start`, must find the daemon. (Sent before
        // the socket existed, `enforcer status` just after start said "daemon: not running".)
        notify_ready();
        // SAFETY: the ring buffer owns its fd and keeps it open for the AsyncFd's lifetime.
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| anyhow!("cannot poll the events ring buffer: {e}"))?;
        Ok(Events { denial_log, ring, listener, own_socket })
    }
}

/// Why the event loop ended.
#[derive(PartialEq)]
enum Ending {
    /// SIGINT or SIGTERM: the pins stay (unless --detach-on-exit).
    Signal,
    /// `enforcer stop`: the pins are gone already.
    Stopped,
}

/// The event loop: denials, socket and cgroup refreshes, reloads (SIGHUP and `enforcer
/// reload`) and control requests, until a signal or `enforcer stop` ends it.
async fn serve(daemon: &mut Daemon, events: &mut Events) -> Result<Ending> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    let (request_sender, mut requests) = tokio::sync::mpsc::channel::<ControlRequest>(16);
    let mut gate_records = daemon.gate_records.take().context("the gates' records are taken once")?;
    loop {
        tokio::select! {
            Some((rule, denial)) = gate_records.recv() => {
                daemon.record_api(&rule, &denial, &events.denial_log);
            }
            _ = refresh.tick() => {
                if let Err(error) = daemon.refresh() {
                    log::error!("cannot re-learn sockets and cgroups: {error:#}");
                }
            }
            guard = events.ring.readable_mut() => {
                let mut guard = guard?;
                while let Some(item) = guard.get_inner_mut().next() {
                    if let Some(event) = event_of(&item) {
                        daemon.record(&event, &events.denial_log);
                    }
                }
                guard.clear_ready();
            }
            _ = sighup.recv() => { let _ = daemon.reload(); }
            accepted = events.listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    read_control(stream, request_sender.clone());
                }
            }
            Some(request) = requests.recv() => {
                let (reply, stop) = daemon.answer(&request.line);
                send_reply(request.writer, &reply);
                if stop {
                    // Let the reply go out before the runtime shuts down.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Ok(Ending::Stopped);
                }
            }
            _ = sigint.recv() => return Ok(Ending::Signal),
            _ = sigterm.recv() => return Ok(Ending::Signal),
        }
    }
}

/// Shutdown: closes our descriptors (the pins keep enforcing), detaches when asked to,
/// removes our control socket, and logs the counters. Returns whether `enforcer stop`
/// ended the daemon.
fn shut_down(daemon: Daemon, events: Events, ending: Ending) -> Result<bool> {
    let stopped = ending == Ending::Stopped;
    let detach = daemon.options.detach_on_exit && !stopped; // after a stop the pins are gone already
    let counters = daemon.programs.counters()?;
    let counter = |index: Counter| counters[index as usize];
    let mut daemon = daemon;
    daemon.gates.shut_down();
    // Our own descriptors go first: with the pins gone, that detaches everything.
    drop(daemon);
    if detach {
        bpf::remove_pins()?;
        log::info!("--detach-on-exit: pins removed");
        if !bpf::wait_unloaded(Duration::from_secs(20))? {
            log::warn!("the kernel still lists enforcer programs after 20 s");
        }
    }
    // Not a socket someone else bound meanwhile: that daemon would become unreachable.
    if events.own_socket.is_some() && socket_identity(&control::socket_path()) == events.own_socket {
        let _ = std::fs::remove_file(control::socket_path());
    }
    let enforcing = !detach && bpf::read_pins().is_ok_and(|p| !p.hooks.is_empty());
    log::info!(
        "stopping (checked {}, denied {}, undecidable {}, audited {}, events dropped {}); {}",
        counter(Counter::Checked),
        counter(Counter::Denied),
        counter(Counter::Undecidable),
        counter(Counter::Audited),
        counter(Counter::EventsDropped),
        if enforcing { "the pinned programs keep enforcing" } else { "nothing enforces now" }
    );
    Ok(stopped)
}

/// A ring buffer record as an event; a short one is reported and skipped.
fn event_of(item: &[u8]) -> Option<DenialEvent> {
    if item.len() < size_of::<DenialEvent>() {
        log::warn!("short event of {} bytes ignored", item.len());
        return None;
    }
    // SAFETY: the kernel wrote a whole DenialEvent; read_unaligned copes with the ring
    // buffer's 8-byte alignment.
    Some(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) })
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
        log::warn!("cannot notify systemd: {error}");
    }
}

/// `enforcer verify`: loads every program against this kernel (maps pinned in a scratch
/// directory that is removed after), prints the verifier's instruction counts.
pub fn verify() -> Result<ExitCode> {
    kernel::check_bpf_lsm()?;
    let btf = kernel::read_btf()?;
    let offsets = kernel::offsets_from_btf(&btf)?;
    let scratch = PathBuf::from(format!("/sys/fs/bpf/enforcer-verify-{}", std::process::id()));
    let result = (|| {
        let mut programs = Programs::load(&offsets, &btf, &scratch)?;
        programs.verify_all()
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel {}", release.trim());
    for (name, count) in result? {
        match count {
            Some(count) => println!("{name}: verified, {count} instructions processed"),
            None => println!("{name}: verified (this kernel does not report the instruction count)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
