//! Loading the BPF object, learning file identities from the kernel, filling the policy
//! maps, attaching the LSM programs, and the pins in bpffs that keep enforcement in force
//! when the daemon is gone.
//!
//! Layout under `PIN_ROOT` (`/sys/fs/bpf/enforcer`):
//! - `maps-v<ABI>/`: the policy and state maps (those declared `pinned` in the BPF crate) (`POLICY`, `USERS`, `BINARIES`, `RULES`,
//!   `EVENTS`, `COUNTERS`), versioned by [`MAPS_ABI`] so an upgrade that changes a map's
//!   layout starts fresh maps instead of misreading old ones;
//! - `links/enforcer_bprm-<stamp>` and `progs/enforcer_bprm-<stamp>`: the attached exec
//!   hook of the daemon that started at `<stamp>`. A new daemon attaches its own first,
//!   then removes the older pins: two hooks for a moment, never none.

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
use enforcer_common::{
    BinaryInfo, BinaryKey, COUNTER_COUNT, FileId, GENERATIONS, KernelOffsets, MAX_RULES, PolicyState,
    RULE_COUNTERS, RuleConfig, Token, TokenInfo, UserKey, grammar::profile_start, rule_counter,
};

use crate::policy::Resolved;

static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer-ebpf"));

pub const EXEC_PROGRAM: &str = "enforcer_bprm";
const PROBE_PROGRAM: &str = "enforcer_fopen";

/// Where everything is pinned.
pub const PIN_ROOT: &str = "/sys/fs/bpf/enforcer";
/// Bumped whenever a pinned map's key, value or size changes.
pub const MAPS_ABI: u32 = 1;

pub fn maps_dir() -> PathBuf {
    Path::new(PIN_ROOT).join(format!("maps-v{MAPS_ABI}"))
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
}

fn raise_memlock_limit() {
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Mounts bpffs at /sys/fs/bpf unless it is there already.
fn ensure_bpffs() -> Result<()> {
    let target = c"/sys/fs/bpf";
    // SAFETY: valid path and out-pointer.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(target.as_ptr(), &mut fs) } == 0 && fs.f_type as i64 == BPF_FS_MAGIC {
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
        Ok(Programs { ebpf, btf, adopted })
    }

    fn lsm(&mut self, name: &str) -> Result<&mut Lsm> {
        lsm_program(&mut self.ebpf, name)
    }

    /// Loads program `name` for LSM hook `hook` (the kernel's verifier runs here).
    fn load_lsm(&mut self, name: &str, hook: &str) -> Result<&mut Lsm> {
        let program = lsm_program(&mut self.ebpf, name)?;
        program.load(hook, &self.btf).map_err(|e| verifier_error(name, e))?;
        Ok(program)
    }

    /// Loads (verifies) every program without attaching anything, and returns the
    /// instructions the verifier processed for each.
    pub fn verify_all(&mut self) -> Result<Vec<(&'static str, Option<u32>)>> {
        let mut counts = Vec::new();
        for (name, hook) in [(EXEC_PROGRAM, "bprm_check_security"), (PROBE_PROGRAM, "file_open")] {
            self.load_lsm(name, hook)?;
            counts.push((name, self.verified_instructions(name)));
        }
        Ok(counts)
    }

    /// The identity the kernel uses for each path: a `file_open` probe, attached only for
    /// this, records what the kernel sees when this process opens the file.
    pub fn kernel_identities(&mut self, paths: &[PathBuf]) -> Result<BTreeMap<PathBuf, FileId>> {
        if self.lsm(PROBE_PROGRAM)?.fd().is_err() {
            self.load_lsm(PROBE_PROGRAM, "file_open")?;
        }
        let link = self.lsm(PROBE_PROGRAM)?.attach().context("cannot attach the file identity probe")?;
        let result = self.probe_paths(paths);
        self.lsm(PROBE_PROGRAM)?.detach(link).context("cannot detach the file identity probe")?;
        result
    }

    fn probe_paths(&mut self, paths: &[PathBuf]) -> Result<BTreeMap<PathBuf, FileId>> {
        let probed: HashMap<&MapData, u32, FileId> =
            HashMap::try_from(self.ebpf.map("PROBED").context("map PROBED missing")?)?;
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let mut identities = BTreeMap::new();
        for path in paths {
            let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            let identity = probed
                .get(&tid, 0)
                .with_context(|| format!("the kernel reported no identity for {}", path.display()))?;
            drop(file);
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

    /// Writes a policy into the inactive generation, then makes it active with one store:
    /// an exec is judged either wholly by the old policy or wholly by the new one. Returns
    /// the new state.
    pub fn install_policy(
        &mut self,
        rules: &[RuleConfig],
        resolved: &Resolved,
        identities: &BTreeMap<PathBuf, FileId>,
    ) -> Result<PolicyState> {
        if rules.len() > MAX_RULES {
            bail!("at most {MAX_RULES} rules");
        }
        let old = self.policy_state()?;
        let generation = (old.active + 1) % GENERATIONS;

        let mut rule_map: Array<&mut MapData, RuleConfig> =
            Array::try_from(self.ebpf.map_mut("RULES").context("map RULES missing")?)?;
        for index in 0..MAX_RULES {
            let rule = rules.get(index).copied().unwrap_or_default();
            rule_map
                .set(generation * MAX_RULES as u32 + index as u32, rule, 0)
                .context("cannot fill the rules map")?;
        }

        // Per-rule counters of the generation being filled start at zero.
        let mut counters: PerCpuArray<&mut MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map_mut("COUNTERS").context("map COUNTERS missing")?)?;
        let cpus = nr_cpus().map_err(|(_, e)| e)?;
        for rule in 0..MAX_RULES as u32 {
            for kind in 0..RULE_COUNTERS {
                let zeros = PerCpuValues::try_from(vec![0u64; cpus])?;
                counters.set(rule_counter(generation, rule, kind), zeros, 0)?;
            }
        }

        let mut binaries: HashMap<&mut MapData, BinaryKey, BinaryInfo> =
            HashMap::try_from(self.ebpf.map_mut("BINARIES").context("map BINARIES missing")?)?;
        // A key the kernel fails to list would stay in force: an error, not a skip.
        let stale: Vec<BinaryKey> = binaries.keys().collect::<Result<Vec<_>, _>>()?;
        let stale = stale.into_iter().filter(|k| k.generation == generation);
        for key in stale {
            binaries.remove(&key).context("cannot clear the binaries map")?;
        }
        let mut merged: BTreeMap<FileId, BinaryInfo> = BTreeMap::new();
        for (path, (rule_mask, profile)) in &resolved.binaries {
            let identity =
                identities.get(path).ok_or_else(|| anyhow!("no kernel identity for {}", path.display()))?;
            let start = profile_start(*profile).ok_or_else(|| anyhow!("unknown client profile {profile}"))?;
            let entry = merged.entry(*identity).or_insert(BinaryInfo { rules: 0, profile: *profile, start });
            if entry.profile != *profile {
                bail!(
                    "{} is the same file as another binary of the policy, with another client",
                    path.display()
                );
            }
            // Two paths may share an inode (hard links): their rule sets add up.
            entry.rules |= rule_mask;
        }
        for (file, info) in &merged {
            binaries
                .insert(BinaryKey { generation, _pad: 0, file: *file }, info, 0)
                .context("cannot fill the binaries map")?;
        }

        let mut users: HashMap<&mut MapData, UserKey, u32> =
            HashMap::try_from(self.ebpf.map_mut("USERS").context("map USERS missing")?)?;
        // A key the kernel fails to list would stay in force: an error, not a skip.
        let stale: Vec<UserKey> = users.keys().collect::<Result<Vec<_>, _>>()?;
        let stale = stale.into_iter().filter(|k| k.generation == generation);
        for key in stale {
            users.remove(&key).context("cannot clear the users map")?;
        }
        for (uid, rule_mask) in &resolved.users {
            users
                .insert(UserKey { generation, uid: *uid }, rule_mask, 0)
                .context("cannot fill the users map")?;
        }

        // The flip: from the next exec on, the new generation judges.
        let state = PolicyState { active: generation, serial: old.serial.wrapping_add(1) };
        let mut policy: Array<&mut MapData, PolicyState> =
            Array::try_from(self.ebpf.map_mut("POLICY").context("map POLICY missing")?)?;
        policy.set(0, state, 0).context("cannot activate the policy")?;
        Ok(state)
    }

    /// Attaches the exec hook and pins it, then removes the pins of older hooks (an
    /// adopted daemon's): from here on the policy is enforced, whoever holds the pins.
    pub fn attach_exec_hook(&mut self, stamp: u128) -> Result<()> {
        for dir in [links_dir(), progs_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let name = format!("{EXEC_PROGRAM}-{stamp}");
        let program = self.load_lsm(EXEC_PROGRAM, "bprm_check_security")?;
        program.pin(progs_dir().join(&name)).context("cannot pin the exec hook program")?;
        let link_id = program.attach().context("cannot attach the exec hook at bprm_check_security")?;
        let link: FdLink = program.take_link(link_id)?.into();
        link.pin(links_dir().join(&name)).context("cannot pin the exec hook link")?;
        for dir in [links_dir(), progs_dir()] {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy() != name {
                    std::fs::remove_file(entry.path())
                        .with_context(|| format!("cannot remove the old pin {}", entry.path().display()))?;
                }
            }
        }
        remove_other_map_versions()?;
        Ok(())
    }

    /// Instructions the verifier processed for a loaded program, when the kernel says.
    pub fn verified_instructions(&mut self, name: &str) -> Option<u32> {
        self.lsm(name).ok()?.info().ok()?.verified_instruction_count()
    }

    /// Sums of the per-CPU counters.
    pub fn counters(&self) -> Result<Vec<u64>> {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("COUNTERS").context("map COUNTERS missing")?)?;
        sum_counters(&map)
    }
}

fn sum_counters<T: std::borrow::Borrow<MapData>>(map: &PerCpuArray<T, u64>) -> Result<Vec<u64>> {
    (0..COUNTER_COUNT).map(|index| Ok(map.get(&index, 0)?.iter().sum())).collect()
}

/// Pinned maps of another ABI version are an older enforcer's: once our hook is attached
/// nothing reads them.
fn remove_other_map_versions() -> Result<()> {
    let ours = maps_dir();
    for entry in std::fs::read_dir(PIN_ROOT)? {
        let path = entry?.path();
        let is_maps = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("maps-v"));
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
    let programs: Vec<_> = aya::programs::loaded_programs()
        .collect::<Result<_, _>>()
        .context("cannot list the kernel's BPF programs (run as root)")?;
    let ours: Vec<u32> =
        programs.iter().filter(|p| p.name_as_str() == Some(EXEC_PROGRAM)).map(|p| p.id()).collect();
    let links: Vec<_> = aya::programs::loaded_links()
        .collect::<Result<_, _>>()
        .context("cannot list the kernel's BPF links (run as root)")?;
    Ok(links.iter().any(|link| ours.contains(&link.program_id())))
}
