//! Loading the BPF object, learning file identities from the kernel, filling the policy
//! maps and attaching the LSM programs.

use std::{collections::BTreeMap, fs::File, path::PathBuf};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::Lsm,
};
use enforcer_common::{COUNTER_COUNT, FileId, KernelOffsets, RuleConfig, Token, TokenInfo, grammar};

use crate::policy::Resolved;

static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer-ebpf"));

pub const EXEC_PROGRAM: &str = "enforcer_bprm";
const PROBE_PROGRAM: &str = "enforcer_fopen";

/// The loaded BPF object and the kernel's BTF it was loaded against.
pub struct Programs {
    pub ebpf: Ebpf,
    btf: Btf,
}

fn raise_memlock_limit() {
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid struct.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

impl Programs {
    /// Loads the object with this kernel's offsets. Nothing is attached yet.
    pub fn load(offsets: &KernelOffsets) -> Result<Programs> {
        raise_memlock_limit();
        let btf = Btf::from_sys_fs().context("cannot read the kernel's BTF")?;
        let tgid = std::process::id();
        let ebpf = EbpfLoader::new()
            .btf(Some(&btf))
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
        Ok(Programs { ebpf, btf })
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

    /// The identity the kernel uses for each path: a `file_open` probe, attached only for
    /// this, records what the kernel sees when this process opens the file.
    pub fn kernel_identities(&mut self, paths: &[PathBuf]) -> Result<BTreeMap<PathBuf, FileId>> {
        let link = self
            .load_lsm(PROBE_PROGRAM, "file_open")?
            .attach()
            .context("cannot attach the file identity probe")?;
        let result = self.probe_paths(paths);
        let program = self.lsm(PROBE_PROGRAM)?;
        program.detach(link).context("cannot detach the file identity probe")?;
        program.unload().ok();
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

    /// Fills the grammar, rules, users and binaries maps. Call before `attach_exec_hook`,
    /// so the hook never runs against a partial policy.
    pub fn install_policy(
        &mut self,
        rules: &[RuleConfig],
        resolved: &Resolved,
        identities: &BTreeMap<PathBuf, FileId>,
    ) -> Result<()> {
        let mut grammar_map: HashMap<&mut MapData, Token, TokenInfo> =
            HashMap::try_from(self.ebpf.map_mut("GRAMMAR").context("map GRAMMAR missing")?)?;
        let mut failure = None;
        grammar::entries(|word, info| {
            let token = Token::from_bytes(word).expect("grammar words fit a token");
            if let Err(e) = grammar_map.insert(token, info, 0) {
                failure.get_or_insert(e);
            }
        });
        if let Some(e) = failure {
            return Err(e).context("cannot fill the grammar map");
        }

        let mut rule_map: Array<&mut MapData, RuleConfig> =
            Array::try_from(self.ebpf.map_mut("RULES").context("map RULES missing")?)?;
        for (index, rule) in rules.iter().enumerate() {
            rule_map.set(index as u32, rule, 0).context("cannot fill the rules map")?;
        }

        let mut binaries: HashMap<&mut MapData, FileId, u32> =
            HashMap::try_from(self.ebpf.map_mut("BINARIES").context("map BINARIES missing")?)?;
        for (path, rule_mask) in &resolved.binaries {
            let identity =
                identities.get(path).ok_or_else(|| anyhow!("no kernel identity for {}", path.display()))?;
            // Two paths may share an inode (hard links): their rule sets add up.
            let mask = binaries.get(identity, 0).unwrap_or(0) | rule_mask;
            binaries.insert(identity, mask, 0).context("cannot fill the binaries map")?;
        }

        // Users last: until a uid is in this map, the hook does nothing for it.
        let mut users: HashMap<&mut MapData, u32, u32> =
            HashMap::try_from(self.ebpf.map_mut("USERS").context("map USERS missing")?)?;
        for (uid, rule_mask) in &resolved.users {
            users.insert(uid, rule_mask, 0).context("cannot fill the users map")?;
        }
        Ok(())
    }

    /// Attaches the exec hook: from here on, the policy is enforced.
    pub fn attach_exec_hook(&mut self) -> Result<()> {
        self.load_lsm(EXEC_PROGRAM, "bprm_check_security")?
            .attach()
            .context("cannot attach the exec hook at bprm_check_security")?;
        Ok(())
    }

    /// Instructions the verifier processed for a loaded program, when the kernel says.
    pub fn verified_instructions(&mut self, name: &str) -> Option<u32> {
        self.lsm(name).ok()?.info().ok()?.verified_instruction_count()
    }

    /// Sums of the per-CPU counters.
    pub fn counters(&self) -> Result<[u64; COUNTER_COUNT as usize]> {
        let map: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("COUNTERS").context("map COUNTERS missing")?)?;
        let mut sums = [0u64; COUNTER_COUNT as usize];
        for (index, sum) in sums.iter_mut().enumerate() {
            *sum = map.get(&(index as u32), 0)?.iter().sum();
        }
        Ok(sums)
    }
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
