//! The API gate: one docker API socket per rule (unless it sets `api_gate = false`)
//! (`/run/enforcer/gate/<rule>.sock`). The kernel admits a restricted identity only to its
//! own rule's gate socket (and refuses it the real docker sockets), so every request that
//! arrives on a gate is that rule's, whatever client sent it; the gate judges each one by
//! the rule before it reaches dockerd.

pub mod judge;
pub mod route;
mod serve;

use std::{
    collections::BTreeMap,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use anyhow::{Context as _, Result, bail};
use enforcer_common::{abi::RuleConfig, grammar};
use tokio::{net::UnixListener, sync::mpsc, task::JoinHandle};

use crate::policy::{Policy, Resolved, Rule};

/// The directory of the gate sockets: `gate/` beside the control socket.
pub fn gate_dir() -> PathBuf {
    crate::control::socket_path()
        .parent()
        .map_or_else(|| PathBuf::from("/run/enforcer"), Path::to_path_buf)
        .join("gate")
}

/// Where `rule`'s gate socket is.
pub fn socket_path(rule: &str) -> PathBuf {
    serve::socket_path(&gate_dir(), rule)
}

pub use serve::ContainerFacts;

/// The container dockerd resolves `container` (a name, id or id prefix) to, as the gate
/// would judge it, for `enforcer check`.
pub async fn inspect_container(upstream: &Path, container: &str) -> Result<ContainerFacts> {
    serve::inspect_container(upstream, container).await
}

/// A request the gate refused, for the denial log, `status` and the counters.
#[derive(Debug, Clone)]
pub struct ApiDenial {
    pub peer: serve::Peer,
    pub method: String,
    pub path: String,
    pub field: Option<String>,
    /// `endpoint`, `field`, `owner`, `framing`, `body_too_large`, `upstream`, `peer`.
    pub reason: &'static str,
    pub command: Option<String>,
}

impl ApiDenial {
    pub fn uid(&self) -> u32 {
        self.peer.uid
    }
    pub fn pid(&self) -> u32 {
        self.peer.pid
    }
    pub fn comm(&self) -> &str {
        &self.peer.comm
    }
}

/// What one rule's gate judges by: the policy's view of the rule at the last install.
#[derive(Debug)]
pub struct RuleGate {
    pub name: String,
    pub limits: judge::Limits,
    /// dockerd's socket: the first of the rule's sockets that exists.
    pub upstream: PathBuf,
    /// The kernel's compiled form of the rule's command list (coverage expanded).
    config: RuleConfig,
    /// `own_only`: commands (node ids) admitted only on objects the rule owns.
    own_only: Vec<u32>,
    /// uids the rule names; `None` when it also names cgroups (any uid may be in them).
    uids: Option<Vec<u32>>,
    records: mpsc::Sender<(String, ApiDenial)>,
    /// Held by each of the rule's requests that checks or changes what names refer to
    /// (creates, renames, removals, ownership checks) until dockerd answered it: one gate's
    /// checks and the changes they depend on never interleave. Kept across reloads.
    pub serial: Arc<tokio::sync::Mutex<()>>,
    /// Set when a reload removed the rule (or renamed it): the connections still open on
    /// its gate get 503 from then on, never a judgement by a rule no longer in force.
    pub retired: std::sync::atomic::AtomicBool,
    /// `protect`: objects the rule's identities may not even read.
    pub protect: Vec<crate::policy::Protect>,
    /// `see = "own"`: listings are narrowed to the rule's own objects.
    pub see_own: bool,
}

impl RuleGate {
    /// Whether some command of the CLI tree that uses `endpoint` (with this `query`) is
    /// allowed by the rule.
    pub fn admits_endpoint(&self, endpoint: &route::Endpoint, query: &str) -> bool {
        endpoint.any_command() || route::commands_for(endpoint, query).iter().any(|path| self.allows(path))
    }

    /// Whether the endpoint's own command (the first it lists) is one the rule denies, while
    /// another command that uses it on the way is allowed (`attach`: `docker attach` is
    /// denied, `docker run` attaches to the container it created): then the rule's
    /// identities may use it only on their own containers, as the allowed command does.
    pub fn own_command_denied(&self, endpoint: &route::Endpoint, query: &str) -> bool {
        !endpoint.any_command()
            && route::commands_for(endpoint, query).first().is_some_and(|path| !self.allows(path))
    }

    /// A command using `endpoint` that the rule names in `own_only`: then the endpoint is
    /// admitted only on the rule's own objects (`exec` there: `POST /containers/{name}/exec`
    /// on a container the rule created, never on gitea), whichever command sends it. Any of
    /// the endpoint's commands is enough, not only its first: `docker container inspect` and
    /// `docker inspect` send the same request, and `own_only = ["container inspect"]` must
    /// not be undone by the other spelling. Others that use it on the way (`compose up`
    /// reads logs) do so on their own project's containers, which the rule owns.
    pub fn own_only_command(&self, endpoint: &route::Endpoint, query: &str) -> Option<&'static str> {
        if self.own_only.is_empty() || endpoint.any_command() {
            return None;
        }
        route::commands_for(endpoint, query).iter().copied().find(|path| {
            grammar::node_by_path(path)
                .is_some_and(|node| self.own_only.iter().any(|&entry| grammar::covers(entry, node)))
        })
    }

    /// A command that uses `endpoint` and that the rule denies, for the refusal's message.
    pub fn denied_command(&self, endpoint: &route::Endpoint, query: &str) -> Option<&'static str> {
        route::commands_for(endpoint, query).iter().copied().find(|path| !self.allows(path))
    }

    /// Whether the rule allows the command at canonical `path` (unknown: no).
    fn allows(&self, path: &str) -> bool {
        grammar::node_by_path(path).is_some_and(|node| {
            let listed = self.config.has_command(node);
            if self.config.is_allow_list() { listed } else { !listed }
        })
    }

    /// Whether `uid` may use this gate at all: one the rule restricts, or root (the
    /// administrator testing it). Anyone else has the real socket, and must not make
    /// objects the rule would then own.
    fn admits_peer(&self, uid: u32) -> bool {
        uid == 0 || self.uids.as_ref().is_none_or(|uids| uids.contains(&uid))
    }

    /// Hands a refusal to the daemon's event loop. A full queue makes the refused request
    /// wait (every refusal is recorded; the queue bounds the memory it takes).
    pub async fn record(&self, denial: ApiDenial) {
        if self.records.send((self.name.clone(), denial)).await.is_err() {
            log::error!("gate {}: the event loop is gone, a refusal was not recorded", self.name);
        }
    }
}

#[cfg(test)]
impl RuleGate {
    /// A gate with `protect` entries and an empty command list.
    pub(crate) fn for_tests_with_protect(protect: Vec<crate::policy::Protect>) -> RuleGate {
        RuleGate { protect, ..RuleGate::for_tests("test", RuleConfig::default()) }
    }

    /// A gate judging by `config` alone: no upstream, no limits, records dropped.
    fn for_tests(name: &str, config: RuleConfig) -> RuleGate {
        RuleGate {
            name: name.to_owned(),
            limits: judge::Limits::default(),
            upstream: PathBuf::new(),
            config,
            own_only: Vec::new(),
            uids: None,
            records: mpsc::channel(1).0,
            serial: Arc::default(),
            retired: std::sync::atomic::AtomicBool::new(false),
            protect: Vec::new(),
            see_own: false,
        }
    }
}

/// A running gate: its socket, the identity of its file, the task accepting on it and the
/// one that keeps its permissions those of dockerd's socket.
struct Running {
    path: PathBuf,
    identity: (u64, u64),
    shared: Arc<RwLock<Arc<RuleGate>>>,
    task: JoinHandle<()>,
    watch: JoinHandle<()>,
}

impl Running {
    /// Stops accepting and following dockerd's socket, retires the rule for the
    /// connections still open on the gate, and removes its socket (if still ours).
    fn stop(self) {
        self.task.abort();
        self.watch.abort();
        let gate = self.shared.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        gate.retired.store(true, std::sync::atomic::Ordering::SeqCst);
        remove_own(&self.path, self.identity);
    }
}

/// A gate bound for a policy being installed, not serving yet.
struct Pending {
    path: PathBuf,
    identity: (u64, u64),
    listener: std::os::unix::net::UnixListener,
}

/// Every gate of the policy in force.
pub struct GateSet {
    dir: PathBuf,
    running: BTreeMap<String, Running>,
    pending: BTreeMap<String, Pending>,
    records: mpsc::Sender<(String, ApiDenial)>,
    never_bind: Vec<PathBuf>,
}

impl GateSet {
    /// `dir`: where the sockets go; `never_bind`: enforcer's own files, which no bind mount
    /// may reach. Refusals arrive on the returned receiver.
    pub fn new(dir: PathBuf, never_bind: Vec<PathBuf>) -> (GateSet, mpsc::Receiver<(String, ApiDenial)>) {
        let (records, receiver) = mpsc::channel(1024);
        (GateSet { dir, running: BTreeMap::new(), pending: BTreeMap::new(), records, never_bind }, receiver)
    }

    /// Binds the socket of each gated rule of `policy` that has none yet (not serving until
    /// [`GateSet::commit`]), and returns every gated rule's socket path by rule index.
    pub fn prepare(&mut self, policy: &Policy) -> Result<BTreeMap<usize, PathBuf>> {
        self.rollback();
        let mut paths = BTreeMap::new();
        for (index, rule) in policy.rules.iter().enumerate().filter(|(_, r)| r.api_gate) {
            if let Some(running) = self.running.get(&rule.name) {
                paths.insert(index, running.path.clone());
                continue;
            }
            open_gate_dir(&self.dir)?;
            let path = serve::socket_path(&self.dir, &rule.name);
            let _ = std::fs::remove_file(&path);
            let listener = std::os::unix::net::UnixListener::bind(&path)
                .with_context(|| format!("cannot listen on {}", path.display()))?;
            // Nobody may connect before the policy it serves is in force.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            listener.set_nonblocking(true)?;
            let meta = std::fs::symlink_metadata(&path)?;
            paths.insert(index, path.clone());
            self.pending
                .insert(rule.name.clone(), Pending { path, identity: (meta.dev(), meta.ino()), listener });
        }
        Ok(paths)
    }

    /// Drops the gates [`GateSet::prepare`] bound for a policy that was not installed.
    pub fn rollback(&mut self) {
        for (_, pending) in std::mem::take(&mut self.pending) {
            remove_own(&pending.path, pending.identity);
        }
    }

    /// The installed policy's gates serve: the new ones start, the kept ones judge by the
    /// new rule from their next request, the ones the policy no longer has stop.
    pub fn commit(&mut self, policy: &Policy, resolved: &Resolved) -> Result<()> {
        let configs = crate::compile::rule_configs(policy);
        let mut wanted = BTreeMap::new();
        for (index, rule) in policy.rules.iter().enumerate().filter(|(_, r)| r.api_gate) {
            let gate = self.rule_gate(rule, index, configs.get(index).copied().unwrap_or_default(), resolved);
            wanted.insert(rule.name.clone(), gate);
        }
        let stale: Vec<String> =
            self.running.keys().filter(|name| !wanted.contains_key(*name)).cloned().collect();
        for name in stale {
            if let Some(running) = self.running.remove(&name) {
                running.stop();
                log::info!("gate {name}: stopped");
            }
        }
        for (name, gate) in wanted {
            mirror_permissions(&gate.upstream, &self.path_of(&name))?;
            if let Some(running) = self.running.get(&name) {
                let mut current = running.shared.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                let gate = RuleGate { serial: Arc::clone(&current.serial), ..gate };
                *current = Arc::new(gate);
                continue;
            }
            let gate = Arc::new(gate);
            let Some(pending) = self.pending.remove(&name) else { continue };
            let listener = UnixListener::from_std(pending.listener)?;
            let shared = Arc::new(RwLock::new(gate));
            let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
            let watch = tokio::spawn(follow_upstream(
                pending.path.clone(),
                pending.identity,
                Arc::clone(&shared),
                FOLLOW_INTERVAL,
            ));
            log::info!("gate {name}: serving {}", pending.path.display());
            self.running.insert(
                name,
                Running { path: pending.path, identity: pending.identity, shared, task, watch },
            );
        }
        Ok(())
    }

    fn path_of(&self, name: &str) -> PathBuf {
        serve::socket_path(&self.dir, name)
    }

    fn rule_gate(&self, rule: &Rule, index: usize, config: RuleConfig, resolved: &Resolved) -> RuleGate {
        let bit = 1u32 << index;
        let sockets: Vec<&PathBuf> =
            resolved.sockets.iter().filter(|(_, rules)| **rules & bit != 0).map(|(path, _)| path).collect();
        let upstream = upstream_of(rule);
        let mut never_bind = self.never_bind.clone();
        never_bind.push(self.dir.clone());
        for socket in sockets {
            never_bind.push(socket.clone());
            if let Ok(real) = std::fs::canonicalize(socket) {
                never_bind.push(real);
            }
        }
        let bind_paths = rule.bind_paths.iter().map(|p| judge::resolve_source(p)).collect();
        let uids = if rule.cgroups.is_empty() {
            Some(resolved.users.iter().filter(|(_, rules)| **rules & bit != 0).map(|(uid, _)| *uid).collect())
        } else {
            None
        };
        RuleGate {
            name: rule.name.clone(),
            limits: judge::Limits {
                rule: rule.name.clone(),
                powers: rule.api_powers.clone(),
                bind_paths,
                never_bind,
            },
            upstream,
            config,
            uids,
            records: self.records.clone(),
            serial: Arc::default(),
            retired: std::sync::atomic::AtomicBool::new(false),
            own_only: rule.own_only.clone(),
            protect: rule.protect.clone(),
            see_own: rule.see_own,
        }
    }

    /// Stops every gate and removes its socket (the daemon exits: restricted identities get
    /// no API until it is back).
    pub fn shut_down(&mut self) {
        self.rollback();
        for (_, running) in std::mem::take(&mut self.running) {
            running.stop();
        }
    }
}

/// Connections one gate serves at once, upgraded streams included, and those of one peer uid;
/// more are closed at once. Each holds two file descriptors of the daemon's, which must keep
/// some for its own work (the soft limit is raised to the hard one, 4096 at the least on
/// Debian and under systemd); the share per uid keeps one flooding client from starving the
/// rule's other users.
const MAX_CONNECTIONS: usize = 1024;
const MAX_CONNECTIONS_PER_UID: usize = 256;

/// Accepts connections on one gate until the gate stops.
async fn accept_loop(listener: UnixListener, shared: Arc<RwLock<Arc<RuleGate>>>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut shares: BTreeMap<u32, Arc<tokio::sync::Semaphore>> = BTreeMap::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                log::warn!("gate: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let gate = Arc::clone(&shared.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let Some(peer) = peer_of(&stream) else {
            log::warn!("gate {}: a connection without peer credentials was closed", gate.name);
            continue;
        };
        if !gate.admits_peer(peer.uid) {
            gate.record(ApiDenial {
                peer,
                method: String::new(),
                path: String::new(),
                field: None,
                reason: "peer",
                command: None,
            })
            .await;
            continue;
        }
        // Shares nobody holds any more are forgotten (their uids' connections all ended).
        shares.retain(|_, share| share.available_permits() < MAX_CONNECTIONS_PER_UID);
        let share = shares
            .entry(peer.uid)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS_PER_UID)));
        let (Ok(own), Ok(all)) =
            (Arc::clone(share).try_acquire_owned(), Arc::clone(&slots).try_acquire_owned())
        else {
            log::warn!(
                "gate {}: uid {} has {MAX_CONNECTIONS_PER_UID} connections open (or the gate {MAX_CONNECTIONS}), one more closed",
                gate.name,
                peer.uid
            );
            continue;
        };
        tokio::spawn(serve::connection(stream, Arc::clone(&shared), peer, Arc::new((own, all))));
    }
}

fn peer_of(stream: &tokio::net::UnixStream) -> Option<serve::Peer> {
    let cred = stream.peer_cred().ok()?;
    let pid = cred.pid().and_then(|pid| u32::try_from(pid).ok()).unwrap_or(0);
    let comm =
        std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim().to_owned()).unwrap_or_default();
    Some(serve::Peer { uid: cred.uid(), pid, comm })
}

/// The docker socket `rule`'s gate forwards to: the first of its sockets that exists (the
/// order the rule lists them in decides, as the docker CLI's default would).
pub fn upstream_of(rule: &Rule) -> PathBuf {
    rule.sockets
        .iter()
        .find(|path| path.exists())
        .or(rule.sockets.first())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// Creates the gate directory (0755) and makes the directory above it traversable (0711:
/// the control socket there stays root's), after checking that every directory on the way
/// is root's and writable by root alone: whoever could replace a gate socket would receive
/// the requests the kernel routes or admits to it.
fn open_gate_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for ancestor in dir.ancestors() {
        let meta = std::fs::symlink_metadata(ancestor)
            .with_context(|| format!("cannot inspect {}", ancestor.display()))?;
        let mode = meta.mode();
        // A sticky directory (/tmp) is writable by all, but no one else may replace what
        // root made in it.
        let sticky = mode & 0o1000 != 0;
        if meta.file_type().is_symlink() || meta.uid() != 0 || (mode & 0o022 != 0 && !sticky) {
            bail!(
                "{} must be a directory of root's that only root can write (the gate sockets live under it): \
                 owner {}, mode {:o}",
                ancestor.display(),
                meta.uid(),
                mode & 0o7777
            );
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    if let Some(parent) = dir.parent() {
        let mode = std::fs::metadata(parent)?.mode() & 0o7777;
        if mode & 0o011 != 0o011 {
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode | 0o711))
                .with_context(|| format!("cannot make {} traversable", parent.display()))?;
        }
    }
    Ok(())
}

/// The gate socket gets the owner, group and mode of dockerd's: whoever could not reach
/// dockerd cannot reach the gate either. No dockerd socket yet: root only (and
/// [`follow_upstream`] gives it dockerd's once that socket exists).
fn mirror_permissions(upstream: &Path, gate: &Path) -> Result<()> {
    let (uid, gid, mode) = upstream_permissions(upstream).unwrap_or((0, 0, 0o600));
    set_permissions(gate, uid, gid, mode)
}

/// The owner, group and mode (read and write bits only) a gate socket takes from dockerd's
/// socket at `upstream`; `None` while there is none.
fn upstream_permissions(upstream: &Path) -> Option<(u32, u32, u32)> {
    std::fs::metadata(upstream).ok().map(|meta| (meta.uid(), meta.gid(), meta.mode() & 0o660))
}

/// Gives `gate` its owner, group and mode without ever granting more than either the old
/// or the new ones did: first only the bits both have, then the owner, then the new mode.
fn set_permissions(gate: &Path, uid: u32, gid: u32, mode: u32) -> Result<()> {
    let current =
        std::fs::symlink_metadata(gate).with_context(|| format!("cannot read {}", gate.display()))?.mode()
            & 0o7777;
    std::fs::set_permissions(gate, std::fs::Permissions::from_mode(current & mode))
        .with_context(|| format!("cannot set the mode of {}", gate.display()))?;
    std::os::unix::fs::chown(gate, Some(uid), Some(gid))
        .with_context(|| format!("cannot give {} its owner", gate.display()))?;
    std::fs::set_permissions(gate, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", gate.display()))
}

/// How often a running gate compares its socket's permissions with dockerd's socket's.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Keeps the gate socket at `path` (while it is still the file we bound, `identity`) at the
/// owner, group and mode of its rule's dockerd socket. The daemon starts before docker
/// (the shipped unit is ordered before `docker.socket`), so at boot there is no dockerd
/// socket to copy and the gate socket is root's alone ([`mirror_permissions`]); without this
/// it stayed so until the next reload, and the rule's users had no API at all. It also
/// follows a socket docker re-creates with another group or mode. While dockerd's socket
/// is missing the gate keeps what it has: it only ever takes permissions dockerd's socket
/// has itself.
async fn follow_upstream(
    path: PathBuf,
    identity: (u64, u64),
    shared: Arc<RwLock<Arc<RuleGate>>>,
    interval: std::time::Duration,
) {
    loop {
        tokio::time::sleep(interval).await;
        let (name, upstream) = {
            let gate = shared.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            (gate.name.clone(), gate.upstream.clone())
        };
        let Ok(meta) = std::fs::symlink_metadata(&path) else { return };
        if (meta.dev(), meta.ino()) != identity {
            return;
        }
        let Some((uid, gid, mode)) = upstream_permissions(&upstream) else { continue };
        if (meta.uid(), meta.gid(), meta.mode() & 0o7777) == (uid, gid, mode) {
            continue;
        }
        match set_permissions(&path, uid, gid, mode) {
            Ok(()) => log::info!(
                "gate {name}: {} has the owner, group and mode of {} now ({uid}:{gid} {mode:o})",
                path.display(),
                upstream.display()
            ),
            Err(error) => {
                log::warn!("gate {name}: {error:#}");
                return;
            }
        }
    }
}

/// Removes the socket at `path` only if it is still the one we bound.
fn remove_own(path: &Path, identity: (u64, u64)) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == identity) {
        let _ = std::fs::remove_file(path);
    }
}

/// docs/api-endpoints.md: every endpoint the gate knows, the commands of the CLI tree that
/// use it, and the verdict under `policy`'s first rule with the gate on (the commands part:
/// bodies are judged on top). The test below writes and checks it.
#[cfg(test)]
fn endpoint_table(policy: &Policy) -> String {
    use std::fmt::Write as _;
    let configs = crate::compile::rule_configs(policy);
    let rule = RuleGate::for_tests(&policy.rules[0].name, configs[0]);
    let mut out = String::from(
        "# The docker API endpoints the gate knows\n\n\
         Generated from `enforcer/src/gate/route.rs` by `ENFORCER_BLESS=1 cargo test -p enforcer \
         endpoint_table` (a test fails when this file is stale). The verdict is the embedded default \
         policy's (its rule gated, as every rule is unless it opts out): *admitted* endpoints still have their bodies \
         judged (docs/api-gate.md). An endpoint no command uses is refused. Paths are dockerd's routes \
         without the `/v1.NN` prefix (API 1.41, dockerd 20.10, to 1.51, dockerd 28).\n\n\
         | method | path | commands that use it | default policy |\n| --- | --- | --- | --- |\n",
    );
    for endpoint in route::ENDPOINTS {
        let commands = if endpoint.any_command() {
            "every command".to_owned()
        } else if endpoint.commands.is_empty() {
            "none".to_owned()
        } else {
            endpoint.commands.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
        };
        let verdict = if !rule.admits_endpoint(endpoint, "") {
            "refused".to_owned()
        } else if let Some(power) = endpoint.power {
            format!("refused (needs `{}`)", power.name())
        } else if endpoint.pattern.starts_with("/containers/{name")
            && (!matches!(endpoint.method, "GET" | "HEAD") || rule.own_command_denied(endpoint, ""))
        {
            "own containers only".to_owned()
        } else if endpoint.method == "DELETE"
            && ["/images/", "/volumes/", "/networks/"].iter().any(|p| endpoint.pattern.starts_with(p))
        {
            "own objects only".to_owned()
        } else if endpoint.body == route::BodyJudge::Stream {
            "admitted".to_owned()
        } else {
            "admitted, body judged".to_owned()
        };
        let _ = writeln!(out, "| {} | `{}` | {commands} | {verdict} |", endpoint.method, endpoint.pattern);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_table_in_the_docs_is_current() {
        let table = endpoint_table(&Policy::default_policy());
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api-endpoints.md");
        if std::env::var_os("ENFORCER_BLESS").is_some() {
            std::fs::write(&path, &table).unwrap();
        }
        let docs = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            table
                .lines()
                .filter(|l| l.starts_with("| ") && !l.starts_with("| method") && !l.starts_with("| ---"))
                .count(),
            route::ENDPOINTS.len()
        );
        assert!(table.contains("| GET | `/_ping` | every command | admitted |"), "{table}");
        assert!(
            docs == table,
            "docs/api-endpoints.md is stale: run ENFORCER_BLESS=1 cargo test -p enforcer endpoint_table"
        );
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("enforcer-gate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn permissions(path: &Path) -> (u32, u32, u32) {
        let meta = std::fs::metadata(path).unwrap();
        (meta.uid(), meta.gid(), meta.mode() & 0o7777)
    }

    /// At boot the daemon starts before docker.socket: the gate socket is root's alone until
    /// dockerd's socket exists, then it takes that socket's owner, group and mode (and
    /// follows a change of them), and it never takes any other.
    #[tokio::test]
    async fn a_gate_takes_dockerds_permissions_once_its_socket_exists() {
        let dir = temp_dir("follow");
        let (upstream, gate_path) = (dir.join("docker.sock"), dir.join("gate.sock"));
        let listener = std::os::unix::net::UnixListener::bind(&gate_path).unwrap();
        mirror_permissions(&upstream, &gate_path).unwrap();
        assert_eq!(permissions(&gate_path).2, 0o600, "no dockerd socket: root only");
        let meta = std::fs::symlink_metadata(&gate_path).unwrap();
        let gate = RuleGate { upstream: upstream.clone(), ..RuleGate::for_tests("r", RuleConfig::default()) };
        let shared = Arc::new(RwLock::new(Arc::new(gate)));
        let interval = std::time::Duration::from_millis(5);
        let watch =
            tokio::spawn(follow_upstream(gate_path.clone(), (meta.dev(), meta.ino()), shared, interval));
        let settle = || tokio::time::sleep(std::time::Duration::from_millis(100));
        settle().await;
        assert_eq!(permissions(&gate_path).2, 0o600, "still no dockerd socket: unchanged");
        // dockerd's socket appears (docker.socket started): 0660 plus bits the gate never copies.
        std::fs::write(&upstream, "").unwrap();
        std::fs::set_permissions(&upstream, std::fs::Permissions::from_mode(0o4667)).unwrap();
        let wanted = {
            let (uid, gid, _) = permissions(&upstream);
            (uid, gid, 0o660)
        };
        for _ in 0..200 {
            if permissions(&gate_path) == wanted {
                break;
            }
            settle().await;
        }
        assert_eq!(permissions(&gate_path), wanted);
        // Tightened by its admin: the gate follows.
        std::fs::set_permissions(&upstream, std::fs::Permissions::from_mode(0o600)).unwrap();
        for _ in 0..200 {
            if permissions(&gate_path).2 == 0o600 {
                break;
            }
            settle().await;
        }
        assert_eq!(permissions(&gate_path).2, 0o600);
        // Removed: the gate keeps what it has (it answers 502 meanwhile).
        std::fs::remove_file(&upstream).unwrap();
        settle().await;
        assert_eq!(permissions(&gate_path).2, 0o600);
        // A file that is no longer the one bound is left alone, and the watch ends (made
        // before the socket goes, so that it cannot get the socket's inode number).
        let other = dir.join("other");
        std::fs::write(&other, "").unwrap();
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&other, &gate_path).unwrap();
        std::fs::write(&upstream, "").unwrap();
        std::fs::set_permissions(&upstream, std::fs::Permissions::from_mode(0o660)).unwrap();
        for _ in 0..50 {
            if watch.is_finished() {
                break;
            }
            settle().await;
        }
        assert!(watch.is_finished());
        assert_eq!(permissions(&gate_path).2, 0o644);
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_default_deny_list_refuses_exec_and_keeps_run() {
        let policy = Policy::default_policy();
        let configs = crate::compile::rule_configs(&policy);
        let gate = RuleGate::for_tests("r", configs[0]);
        let find = |method: &str, path: &str| {
            route::route(method, path).map(|r| gate.admits_endpoint(r.endpoint, ""))
        };
        assert_eq!(find("POST", "/v1.41/containers/gitea/exec"), Ok(false));
        assert_eq!(find("POST", "/exec/abc/start"), Ok(false));
        assert_eq!(find("PUT", "/containers/gitea/archive"), Ok(false));
        assert_eq!(find("POST", "/containers/create"), Ok(true));
        assert_eq!(find("POST", "/containers/abc/attach"), Ok(true), "docker run attaches");
        assert_eq!(find("GET", "/containers/json"), Ok(true));
        assert_eq!(find("GET", "/_ping"), Ok(true));
        let attach = route::route("POST", "/containers/abc/attach").unwrap();
        assert!(gate.own_command_denied(attach.endpoint, ""), "attach: own containers only");
        let create = route::route("POST", "/containers/create").unwrap();
        assert!(!gate.own_command_denied(create.endpoint, ""));
        let inspect = route::route("GET", "/containers/gitea/json").unwrap();
        assert!(!gate.own_command_denied(inspect.endpoint, ""), "docker inspect stays allowed");
        let import = route::route("POST", "/images/create").unwrap();
        assert!(gate.admits_endpoint(import.endpoint, "fromImage=busybox"));
        assert!(!gate.admits_endpoint(import.endpoint, "fromSrc=-"), "deny import refuses fromSrc");
    }
}
