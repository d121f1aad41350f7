//! Loading the BPF object, learning file identities from the kernel, filling the policy
//! maps, attaching the LSM programs, and the pins in bpffs that keep enforcement in force
//! when the daemon is gone.
//!
//! Layout under `PIN_ROOT` (`/sys/fs/bpf/enforcer`):
//! - `maps-<digest>/`: the policy and state maps (those declared `pinned` in the BPF crate) (`POLICY`, `USERS`, `BINARIES`, `RULES`,
//!   `EVENTS`, `COUNTERS`), named by [`maps_digest`] so an upgrade that changes a map's
//!   layout starts fresh maps instead of misreading old ones;
//! - `links/<program>-<stamp>` and `progs/<program>-<stamp>`: the attached hooks (see
//!   [`HOOKS`]) of the daemon that started at `<stamp>`. A new daemon attaches its own
//!   first, then removes the older pins: two of each hook for a moment, never none.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader, Endianness,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuValues},
    programs::{Lsm, links::FdLink},
    util::nr_cpus,
};
use enforcer_common::abi::{
    BinaryInfo, COUNTER_COUNT, CgroupKey, FileId, FileKey, GENERATIONS, GatePath, HostKey, KernelOffsets,
    MAX_RULES, PolicyState, RULE_COUNTERS, RuleConfig, SocketNameKey, Token, TokenInfo, UserKey,
};

use crate::{compile::CompiledPolicy, dynamic::Dynamic, identity, routing};

/// The BPF object the daemon loads (the routing loader parses it again).
pub(crate) static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer-ebpf"));

pub const EXEC_PROGRAM: &str = "enforcer_bprm";
const PROBE_PROGRAM: &str = "enforcer_fopen";

/// The enforcing programs and their LSM hooks, in attach order: the exec check first, so
/// that nothing a later hook admits was executed unchecked.
pub const HOOKS: &[(&str, &str)] = &[
    (EXEC_PROGRAM, "bprm_check_security"),
    ("enforcer_commit", "bprm_committing_creds"),
    ("enforcer_unix_connect", "unix_stream_connect"),
    ("enforcer_inet_connect", "socket_connect"),
    ("enforcer_ptrace", "ptrace_access_check"),
    ("enforcer_prctl", "task_prctl"),
    ("enforcer_inet_send", "socket_sendmsg"),
];

/// Every program a daemon attaches, by name: the LSM hooks, then the connect routing
/// (6.7+ kernels only).
pub fn attached_programs() -> impl Iterator<Item = &'static str> {
    HOOKS.iter().map(|(name, _)| *name).chain([routing::ROUTE_PROGRAM])
}

/// Where everything is pinned.
pub const PIN_ROOT: &str = "/sys/fs/bpf/enforcer";
/// Bumped whenever a pinned map's meaning changes in a way [`maps_digest`] cannot see.
pub const MAPS_ABI: u32 = 3;

/// The pinned maps' directory, named by [`maps_digest`]: programs of a build that encodes
/// the maps differently never read another build's maps, not even during an upgrade,
/// while both builds' programs are attached.
pub fn maps_dir() -> PathBuf {
    Path::new(PIN_ROOT).join(format!("maps-{}", maps_digest()))
}

/// A digest of everything the pinned maps encode: the ABI version, the size of every
/// pinned key and value, the counters' layout, and the command tree (rules store node ids,
/// which are positions in it, local to a build).
pub fn maps_digest() -> &'static str {
    static DIGEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DIGEST.get_or_init(|| {
        let paths: Vec<&str> = enforcer_common::tree::NODES.iter().map(|n| n.path).collect();
        digest_of(&paths)
    })
}

fn digest_of(node_paths: &[&str]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut hash = Sha256::new();
    hash.update(MAPS_ABI.to_le_bytes());
    for size in [
        size_of::<PolicyState>(),
        size_of::<UserKey>(),
        size_of::<CgroupKey>(),
        size_of::<FileKey>(),
        size_of::<BinaryInfo>(),
        size_of::<SocketNameKey>(),
        size_of::<GatePath>(),
        size_of::<HostKey>(),
        size_of::<RuleConfig>(),
        size_of::<enforcer_common::abi::DenialEvent>(),
        COUNTER_COUNT as usize,
        RULE_COUNTERS as usize,
        MAX_RULES,
    ] {
        hash.update((size as u64).to_le_bytes());
    }
    for path in node_paths {
        hash.update(path.as_bytes());
        hash.update([0]);
    }
    crate::policy::hex(&hash.finalize()[..8])
}

fn links_dir() -> PathBuf {
    Path::new(PIN_ROOT).join("links")
}

fn progs_dir() -> PathBuf {
    Path::new(PIN_ROOT).join("progs")
}

/// The loaded BPF object and the kernel's BTF it was loaded against.
pub struct Programs {
    pub ebpf: Ebpf,
    btf: Btf,
    /// The maps came from a previous daemon's pins.
    pub adopted: bool,
    /// How long the verifier took for each of [`HOOKS`] (once loaded).
    verify_times: Vec<std::time::Duration>,
    /// The routing program's kfuncs in this kernel, or why this kernel cannot route.
    routing: Result<routing::Kfuncs, String>,
    /// Where the maps are pinned (`enforcer verify` pins its routing program there).
    map_dir: PathBuf,
    /// The routing program's pin, once attached.
    route_pin: Option<PathBuf>,
}

/// Whether restricted connects are routed to the gates, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// `enforcer_route` is attached at `cgroup/connect_unix`.
    On,
    /// Not routed (gated identities need `DOCKER_HOST`): the reason.
    Off(String),
}

fn raise_memlock_limit() {
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) };
}

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Mounts bpffs at /sys/fs/bpf unless it is there already.
fn ensure_bpffs() -> Result<()> {
    let target = c"/sys/fs/bpf";
    // SAFETY: `statfs` is plain data, for which all zero bytes are a valid value.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    if unsafe { libc::statfs(target.as_ptr(), &raw mut fs) } == 0 && fs.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    // SAFETY: constant, NUL-terminated arguments.
    let rc = unsafe { libc::mount(c"bpf".as_ptr(), target.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        bail!(
            "bpffs is not mounted at /sys/fs/bpf and mounting it failed: {} (mount -t bpf bpf /sys/fs/bpf)",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

impl Programs {
    /// Loads the object with this kernel's offsets, reusing pinned maps when a previous
    /// daemon left them. Nothing is attached yet.
    pub fn load(offsets: &KernelOffsets, kernel_btf: &crate::btf::Btf, dir: &Path) -> Result<Programs> {
        raise_memlock_limit();
        ensure_bpffs()?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let adopted = dir.join("POLICY").exists();
        // The loader parses the kernel's BTF itself (for relocations). Loading a program
        // only needs its hook's function id, from a trimmed copy: a second full parse cost
        // about 300 ms under emulation.
        let btf = Btf::parse(&kernel_btf.lsm_hooks(), Endianness::default())
            .context("cannot parse the kernel's LSM hook functions from its BTF")?;
        let tgid = std::process::id();
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(dir)
            .override_global("OFFSETS", offsets, true)
            .override_global("PROBE_TGID", &tgid, true)
            .load(BPF_OBJECT)
            .map_err(|e| {
                let hint = if matches!(e, aya::EbpfError::MapError(_)) || e.to_string().contains("EPERM") {
                    " (enforcer needs root, or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)"
                } else {
                    ""
                };
                anyhow!("cannot load the BPF object: {e}{hint}")
            })?;
        let routing = routing::Kfuncs::find(kernel_btf, offsets);
        Ok(Programs {
            ebpf,
            btf,
            adopted,
            verify_times: vec![std::time::Duration::ZERO; HOOKS.len()],
            routing,
            map_dir: dir.to_path_buf(),
            route_pin: None,
        })
    }

    fn lsm(&mut self, name: &str) -> Result<&mut Lsm> {
        lsm_program(&mut self.ebpf, name)
    }

    /// Loads program `name` for LSM hook `hook` (the kernel's verifier runs here).
    fn load_lsm(&mut self, name: &str, hook: &str) -> Result<&mut Lsm> {
        // Test hook: the VM tests make one program fail as a verifier rejection would, to
        // show that start-up then attaches nothing (root sets a daemon's environment).
        if std::env::var_os("ENFORCER_TEST_REFUSE_PROGRAM").is_some_and(|refused| refused == name) {
            bail!("the kernel refused program {name}: refused by ENFORCER_TEST_REFUSE_PROGRAM (a test)");
        }
        let program = lsm_program(&mut self.ebpf, name)?;
        program.load(hook, &self.btf).map_err(|e| verifier_error(name, e))?;
        Ok(program)
    }

    /// Loads (verifies) every program without attaching anything, and returns the
    /// instructions the verifier processed for each.
    pub fn verify_all(&mut self) -> Result<Vec<(&'static str, Option<u32>)>> {
        self.verify_hooks()?;
        self.load_lsm(PROBE_PROGRAM, "file_open")?;
        let names = HOOKS.iter().map(|(name, _)| *name).chain([PROBE_PROGRAM]);
        let mut counts: Vec<_> = names.map(|name| (name, self.verified_instructions(name))).collect();
        // The routing program where this kernel has its hook; elsewhere it is not loaded.
        if let Ok(kfuncs) = &self.routing {
            let program = routing::load(&self.ebpf, BPF_OBJECT, kfuncs)?;
            let pin = self.map_dir.join(routing::ROUTE_PROGRAM);
            routing::pin(&program, &pin)?;
            counts.push((routing::ROUTE_PROGRAM, pinned_instructions(&pin)));
            std::fs::remove_file(&pin).with_context(|| format!("cannot remove {}", pin.display()))?;
        }
        Ok(counts)
    }

    /// The identity the kernel uses for each path: from `stat()` where the filesystem is
    /// known to report the kernel's own (`identity::by_stat`), else from a `file_open`
    /// probe, attached only for this, which records what the kernel sees when this process
    /// opens the file. The probe is not even loaded when no path needs it.
    pub fn kernel_identities(&mut self, paths: &[PathBuf]) -> Result<BTreeMap<PathBuf, FileId>> {
        let mut identities = BTreeMap::new();
        let mut for_probe = Vec::new();
        for path in paths {
            match identity::by_stat(path) {
                Some((id, filesystem)) => {
                    log::debug!("identity of {}: stat() ({filesystem})", path.display());
                    identities.insert(path.clone(), id);
                }
                None => for_probe.push(path.clone()),
            }
        }
        if for_probe.is_empty() {
            return Ok(identities);
        }
        if self.lsm(PROBE_PROGRAM)?.fd().is_err() {
            self.load_lsm(PROBE_PROGRAM, "file_open")?;
        }
        let link = self.lsm(PROBE_PROGRAM)?.attach().context("cannot attach the file identity probe")?;
        let result = self.probe_paths(&for_probe);
        self.lsm(PROBE_PROGRAM)?.detach(link).context("cannot detach the file identity probe")?;
        for (path, id) in result? {
            log::debug!("identity of {}: the kernel's probe", path.display());
            identities.insert(path, id);
        }
        Ok(identities)
    }

    fn probe_paths(&mut self, paths: &[PathBuf]) -> Result<BTreeMap<PathBuf, FileId>> {
        let mut probed: HashMap<&mut MapData, u32, FileId> =
            HashMap::try_from(self.ebpf.map_mut("PROBED").context("map PROBED missing")?)?;
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let mut identities = BTreeMap::new();
        for path in paths {
            // A stale answer must not stand in for this file's.
            if let Err(e) = probed.remove(&tid)
                && probed.get(&tid, 0).is_ok()
            {
                return Err(e).context("cannot clear the identity probe's answer");
            }
            let opened = File::open(path);
            // A socket cannot be opened (ENXIO), but the kernel runs file_open first.
            let usable = match &opened {
                Ok(_) => true,
                Err(e) => e.raw_os_error() == Some(libc::ENXIO),
            };
            let identity = match (usable.then(|| probed.get(&tid, 0).ok()).flatten(), opened) {
                (Some(identity), _) => identity,
                (None, Err(e)) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
                (None, Ok(_)) => bail!("the kernel reported no identity for {}", path.display()),
            };
            identities.insert(path.clone(), identity);
        }
        Ok(identities)
    }

    /// Fills the grammar map (this program's own, not pinned).
    pub fn install_grammar(&mut self) -> Result<()> {
        let mut grammar_map: HashMap<&mut MapData, Token, TokenInfo> =
            HashMap::try_from(self.ebpf.map_mut("GRAMMAR").context("map GRAMMAR missing")?)?;
        for (token, info) in crate::grammar::get().entries() {
            grammar_map.insert(token, info, 0).context("cannot fill the grammar map")?;
        }
        Ok(())
    }

    /// The policy state: which generation is active.
    pub fn policy_state(&self) -> Result<PolicyState> {
        let map: Array<&MapData, PolicyState> =
            Array::try_from(self.ebpf.map("POLICY").context("map POLICY missing")?)?;
        Ok(map.get(&0, 0)?)
    }

    /// Writes a compiled policy into the inactive generation, then makes it active with one
    /// store: an exec is judged either wholly by the old policy or wholly by the new one.
    /// Returns the new state.
    pub fn install_policy(&mut self, compiled: &CompiledPolicy, dynamic: &Dynamic) -> Result<PolicyState> {
        let old = self.policy_state()?;
        let generation = (old.active + 1) % GENERATIONS;
        let entries = compiled.entries(generation);

        let mut rule_map: Array<&mut MapData, RuleConfig> =
            Array::try_from(self.ebpf.map_mut("RULES").context("map RULES missing")?)?;
        for (index, rule) in &entries.rules {
            rule_map.set(*index, *rule, 0).context("cannot fill the rules map")?;
        }

        // Per-rule counters of the generation being filled start at zero.
        let mut counters: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map_mut("COUNTERS").context("map COUNTERS missing")?)?;
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        for index in &entries.rule_counters {
            let zeros = PerCpuValues::try_from(vec![0u64; cpus])?;
            counters.set(*index, zeros, 0)?;
        }

        self.replace_generation("BINARIES", generation, |k: &FileKey| k.generation, &entries.binaries)?;
        self.replace_generation("USERS", generation, |k: &UserKey| k.generation, &entries.users)?;
        self.replace_generation("HOSTS", generation, |k: &HostKey| k.generation, &entries.hosts)?;
        self.replace_generation(
            "SOCKET_NAMES",
            generation,
            |k: &SocketNameKey| k.generation,
            &entries.socket_names,
        )?;
        self.replace_generation("GATES", generation, |k: &FileKey| k.generation, &entries.gates)?;
        self.replace_generation(
            "ROUTE_NAMES",
            generation,
            |k: &SocketNameKey| k.generation,
            &entries.route_names,
        )?;
        let mut gate_paths: Array<&mut MapData, GatePath> =
            Array::try_from(self.ebpf.map_mut("GATE_PATHS").context("map GATE_PATHS missing")?)?;
        for (index, path) in &entries.gate_paths {
            gate_paths.set(*index, *path, 0).context("cannot fill the gate paths map")?;
        }
        self.sync_dynamic(generation, dynamic)?;

        // The new generation's cgroup levels and gate rules first, then the flip: from the
        // next exec on, the new generation judges.
        let index = generation as usize;
        let mut filled = old;
        filled.cgroup_levels[index] = compiled.cgroup_levels;
        filled.gate_rules[index] = compiled.gate_rules;
        filled.any_client_rules[index] = compiled.any_client_rules;
        let mut policy: Array<&mut MapData, PolicyState> =
            Array::try_from(self.ebpf.map_mut("POLICY").context("map POLICY missing")?)?;
        policy.set(0, filled, 0).context("cannot fill the policy state")?;
        let state = PolicyState { active: generation, serial: old.serial.wrapping_add(1), ..filled };
        policy.set(0, state, 0).context("cannot activate the policy")?;
        Ok(state)
    }

    /// Puts what was learnt from the running system (socket inodes, cgroup ids) into
    /// `generation`: new entries first, then the stale ones go.
    pub fn sync_dynamic(&mut self, generation: u32, dynamic: &Dynamic) -> Result<()> {
        let entries = dynamic.entries(generation);
        self.replace_generation("SOCKETS", generation, |k: &FileKey| k.generation, &entries.sockets)?;
        self.replace_generation("CGROUPS", generation, |k: &CgroupKey| k.generation, &entries.cgroups)
    }

    /// Makes `generation`'s entries of hash map `name` exactly `entries`: inserts them, then
    /// removes the generation's other keys.
    fn replace_generation<K: aya::Pod + PartialEq, V: aya::Pod>(
        &mut self,
        name: &str,
        generation: u32,
        generation_of: impl Fn(&K) -> u32,
        entries: &[(K, V)],
    ) -> Result<()> {
        let mut map: HashMap<&mut MapData, K, V> =
            HashMap::try_from(self.ebpf.map_mut(name).ok_or_else(|| anyhow!("map {name} missing"))?)?;
        for (key, value) in entries {
            map.insert(key, value, 0).with_context(|| format!("cannot fill the {name} map"))?;
        }
        // A key the kernel fails to list would stay in force: an error, not a skip.
        let keys: Vec<K> = map.keys().collect::<Result<Vec<_>, _>>()?;
        for key in keys {
            if generation_of(&key) == generation && !entries.iter().any(|(k, _)| *k == key) {
                map.remove(&key).with_context(|| format!("cannot clear the {name} map"))?;
            }
        }
        Ok(())
    }

    /// Attaches every hook and pins it, then removes the pins of older hooks (an adopted
    /// daemon's): from here on the policy is enforced, whoever holds the pins.
    /// Returns how long each program took to verify and to attach.
    pub fn attach_hooks(&mut self, stamp: u128) -> Result<(Vec<HookTiming>, Routing)> {
        for dir in [links_dir(), progs_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut ours: Vec<String> = HOOKS.iter().map(|(program, _)| format!("{program}-{stamp}")).collect();
        self.verify_hooks()?;
        let verified = self.verify_times.clone();
        let mut timings = Vec::new();
        for (((program_name, hook), name), verify) in HOOKS.iter().zip(&ours).zip(verified) {
            let started = std::time::Instant::now();
            if let Err(error) = self.attach_one(program_name, hook, name) {
                // All or none: ours go again; an older daemon's pins were not touched.
                for name in &ours {
                    let _ = std::fs::remove_file(links_dir().join(name));
                    let _ = std::fs::remove_file(progs_dir().join(name));
                }
                return Err(error);
            }
            timings.push(HookTiming { program: program_name, verify, attach: started.elapsed() });
        }
        // Routing only spares the agent `DOCKER_HOST`: the hooks above refuse the real
        // sockets either way, so a kernel that will not take it is a warning, not a stop.
        let route_name = format!("{}-{stamp}", routing::ROUTE_PROGRAM);
        let routing = match self.attach_route(&route_name) {
            Ok(()) => {
                ours.push(route_name);
                Routing::On
            }
            Err(reason) => Routing::Off(reason),
        };
        for dir in [links_dir(), progs_dir()] {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                if !ours.iter().any(|name| entry.file_name().to_string_lossy() == name.as_str()) {
                    std::fs::remove_file(entry.path())
                        .with_context(|| format!("cannot remove the old pin {}", entry.path().display()))?;
                }
            }
        }
        remove_other_map_versions()?;
        Ok((timings, routing))
    }

    /// Loads `enforcer_route`, attaches it at `cgroup/connect_unix` and pins it as `name`;
    /// why not, when this kernel cannot or will not.
    fn attach_route(&mut self, name: &str) -> Result<(), String> {
        let kfuncs = self.routing.clone()?;
        let attached = (|| {
            let program = routing::load(&self.ebpf, BPF_OBJECT, &kfuncs)?;
            routing::pin(&program, &progs_dir().join(name))?;
            let link = routing::attach(&program)?;
            routing::pin(&link, &links_dir().join(name))
        })();
        match attached {
            Ok(()) => {
                self.route_pin = Some(progs_dir().join(name));
                Ok(())
            }
            Err(error) => {
                let _ = std::fs::remove_file(progs_dir().join(name));
                Err(format!("{error:#}"))
            }
        }
    }

    /// Loads (verifies) every enforcing program not loaded yet, attaching none: start-up
    /// calls this before it touches the policy maps, so a rejection leaves what was in
    /// force (an older daemon's pins and policy, or nothing) exactly as it was, never half
    /// a set.
    pub fn verify_hooks(&mut self) -> Result<()> {
        for (index, (program_name, hook)) in HOOKS.iter().enumerate() {
            if self.lsm(program_name)?.fd().is_err() {
                let started = std::time::Instant::now();
                self.load_lsm(program_name, hook)?;
                self.verify_times[index] = started.elapsed();
            }
        }
        Ok(())
    }

    /// Pins loaded program `program_name`, attaches it at `hook` and pins the link as `name`.
    fn attach_one(&mut self, program_name: &str, hook: &str, name: &str) -> Result<()> {
        let program = self.lsm(program_name)?;
        program.pin(progs_dir().join(name)).with_context(|| format!("cannot pin program {program_name}"))?;
        let link_id = program.attach().with_context(|| format!("cannot attach {program_name} at {hook}"))?;
        let link: FdLink = program.take_link(link_id)?.into();
        link.pin(links_dir().join(name)).with_context(|| format!("cannot pin the link of {program_name}"))?;
        Ok(())
    }

    /// Instructions the verifier processed for a loaded program, when the kernel says (the
    /// routing program: once attached by this daemon).
    pub fn verified_instructions(&mut self, name: &str) -> Option<u32> {
        if name == routing::ROUTE_PROGRAM {
            return self.route_pin.as_deref().and_then(pinned_instructions);
        }
        self.lsm(name).ok()?.info().ok()?.verified_instruction_count()
    }

    /// Sums of the per-CPU counters.
    pub fn counters(&self) -> Result<Vec<u64>> {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("COUNTERS").context("map COUNTERS missing")?)?;
        sum_counters(&map)
    }

    /// Adds one to a counter only userspace writes (`Counter::ApiRefused`): its per-CPU
    /// values are read, the first one bumped, and written back; no program writes the slot,
    /// so nothing is lost in between.
    pub fn count_in_userspace(&mut self, counter: enforcer_common::abi::Counter) -> Result<()> {
        let mut map: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map_mut("COUNTERS").context("map COUNTERS missing")?)?;
        let index = counter as u32;
        let mut values: Vec<u64> = map.get(&index, 0)?.iter().copied().collect();
        if let Some(first) = values.first_mut() {
            *first = first.wrapping_add(1);
        }
        map.set(index, PerCpuValues::try_from(values)?, 0).context("cannot write the counters map")
    }
}

fn sum_counters<T: std::borrow::Borrow<MapData>>(map: &PerCpuArray<T, u64>) -> Result<Vec<u64>> {
    (0..COUNTER_COUNT).map(|index| Ok(map.get(&index, 0)?.iter().sum())).collect()
}

/// How long the kernel took to verify a program (load) and to attach it.
pub struct HookTiming {
    pub program: &'static str,
    pub verify: std::time::Duration,
    pub attach: std::time::Duration,
}

/// Pinned maps of another ABI version are an older enforcer's: once our hook is attached
/// nothing reads them.
fn remove_other_map_versions() -> Result<()> {
    let ours = maps_dir();
    for entry in std::fs::read_dir(PIN_ROOT)? {
        let path = entry?.path();
        let is_maps = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("maps-"));
        if is_maps && path != ours {
            std::fs::remove_dir_all(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// What the pins say, without the daemon: whether a hook is pinned, and the counters and
/// policy state of the pinned maps.
pub struct Pinned {
    pub hooks: Vec<PathBuf>,
    pub counters: Option<Vec<u64>>,
    pub state: Option<PolicyState>,
}

pub fn read_pins() -> Result<Pinned> {
    let hooks = match std::fs::read_dir(links_dir()) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            bail!("cannot read {} (run as root)", links_dir().display())
        }
        Err(e) => return Err(e).context("cannot read the pinned links"),
    };
    let counters_path = maps_dir().join("COUNTERS");
    let counters = if counters_path.exists() {
        let map = PerCpuArray::<MapData, u64>::try_from(Map::PerCpuArray(
            MapData::from_pin(&counters_path).context("cannot open the pinned counters (run as root)")?,
        ))?;
        Some(sum_counters(&map)?)
    } else {
        None
    };
    let policy_path = maps_dir().join("POLICY");
    let state = if policy_path.exists() {
        let map = Array::<MapData, PolicyState>::try_from(Map::Array(
            MapData::from_pin(&policy_path).context("cannot open the pinned policy state")?,
        ))?;
        Some(map.get(&0, 0)?)
    } else {
        None
    };
    Ok(Pinned { hooks, counters, state })
}

/// Removes every pin: once the daemon (if any) closes its descriptors, nothing enforces.
pub fn remove_pins() -> Result<bool> {
    let root = Path::new(PIN_ROOT);
    if !root.exists() {
        return Ok(false);
    }
    std::fs::remove_dir_all(root).with_context(|| format!("cannot remove {}", root.display()))?;
    Ok(true)
}

/// Instructions the verifier processed for the program pinned at `pin`, when the kernel says.
fn pinned_instructions(pin: &Path) -> Option<u32> {
    aya::programs::ProgramInfo::from_pin(pin).ok()?.verified_instruction_count()
}

/// Program `name` of the object, as an LSM program. A free function so that callers can
/// borrow the object and the BTF separately.
fn lsm_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Lsm> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the BPF object"))?
        .try_into()
        .with_context(|| format!("program {name} is not an LSM program"))
}

fn verifier_error(name: &str, error: aya::programs::ProgramError) -> anyhow::Error {
    match &error {
        aya::programs::ProgramError::LoadError { verifier_log, .. } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            anyhow!(
                "the kernel refused program {name}: {error}\nverifier log (last lines):\n{}",
                tail.join("\n")
            )
        }
        _ => anyhow!("cannot load program {name}: {error}"),
    }
}

/// Whether the exec hook of some enforcer instance is attached right now. Listing the
/// kernel's programs and links needs privilege; that failure is an error, not a "no".
pub fn exec_hook_attached() -> Result<bool> {
    let ours: Vec<u32> =
        our_programs()?.iter().filter(|(name, _)| *name == EXEC_PROGRAM).map(|(_, p)| p.id()).collect();
    Ok(loaded_links()?.iter().any(|link| ours.contains(&link.program_id())))
}

/// Whether any enforcing program of some enforcer instance is still loaded. Dropping the
/// last reference to a link detaches it asynchronously; its program goes only once the
/// hook no longer runs it, so this, not the link list, says when enforcement is over.
pub fn any_program_loaded() -> Result<bool> {
    Ok(!our_programs()?.is_empty())
}

/// Waits until no enforcing program is loaded (up to `timeout`); false if one still is.
pub fn wait_unloaded(timeout: std::time::Duration) -> Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    while any_program_loaded()? {
        if std::time::Instant::now() > deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(true)
}

/// Invocations and run time of each enforcing program loaded now: (program, run count,
/// run time in ns). The kernel counts them only while `kernel.bpf_stats_enabled` is 1.
pub fn program_stats() -> Result<Vec<(&'static str, u64, u64)>> {
    Ok(our_programs()?
        .iter()
        .map(|(name, p)| (*name, p.run_count(), p.run_time().as_nanos() as u64))
        .collect())
}

/// The enforcing programs loaded in the kernel (any enforcer instance's), by their name in
/// `HOOKS` or the routing program's (the kernel keeps only the first 15 bytes of a name).
fn our_programs() -> Result<Vec<(&'static str, aya::programs::ProgramInfo)>> {
    Ok(loaded_programs()?
        .into_iter()
        .filter_map(|p| {
            let kernel_name = p.name_as_str()?;
            let name = attached_programs().find(|name| name[..name.len().min(15)] == *kernel_name)?;
            Some((name, p))
        })
        .collect())
}

/// Whether a listing error is an object that went away between its id and its fd (a
/// program or link being released as we look): skipped, not an error.
fn vanished(error: &aya::sys::SyscallError) -> bool {
    error.io_error.kind() == std::io::ErrorKind::NotFound
}

/// The kernel's BPF programs. Listing needs privilege; that failure is an error, not "none".
fn loaded_programs() -> Result<Vec<aya::programs::ProgramInfo>> {
    let mut programs = Vec::new();
    for program in aya::programs::loaded_programs() {
        match program {
            Ok(program) => programs.push(program),
            Err(aya::programs::ProgramError::SyscallError(e)) if vanished(&e) => {}
            Err(e) => return Err(e).context("cannot list the kernel's BPF programs (run as root)"),
        }
    }
    Ok(programs)
}

/// The kernel's BPF links (see [`loaded_programs`]).
fn loaded_links() -> Result<Vec<aya::programs::links::LinkInfo>> {
    let mut links = Vec::new();
    for link in aya::programs::loaded_links() {
        match link {
            Ok(link) => links.push(link),
            Err(aya::programs::links::LinkError::SyscallError(e)) if vanished(&e) => {}
            Err(e) => return Err(e).context("cannot list the kernel's BPF links (run as root)"),
        }
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node ids are positions in the tree: any change to it is a new maps directory.
    #[test]
    fn maps_digest_follows_the_tree() {
        let paths: Vec<&str> = enforcer_common::tree::NODES.iter().map(|n| n.path).collect();
        assert_eq!(digest_of(&paths), maps_digest());
        assert_eq!(maps_digest().len(), 16);
        let mut reordered = paths.clone();
        reordered.swap(0, 1);
        assert_ne!(digest_of(&reordered), maps_digest());
        let mut grown = paths.clone();
        grown.push("container teleport");
        assert_ne!(digest_of(&grown), maps_digest());
        assert!(maps_dir().starts_with(PIN_ROOT));
    }
}
