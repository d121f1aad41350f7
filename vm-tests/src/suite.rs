//! Running the groups: what a group is, which VM it boots, and the suite that boots every
//! group on every kernel and prints one line per check.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;

use crate::{
    checks::{Check, Checks},
    cpio::Archive,
    groups,
    vm::{self, Artifacts, Boot, Kernel},
};

/// The kinds of VM a group can boot (docs/development.md says which group uses which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// The busybox initramfs with the mock docker API (`start_mock_api`): fast, and it
    /// logs every request with the caller's uid.
    Initramfs,
    /// The same initramfs plus Debian's real dockerd 20.10, containerd and runc
    /// (`start_dockerd` starts them and the gitea stand-in). A group opts in with this.
    RealDaemon,
    /// A Debian 12 root filesystem on `NVMe` with systemd as PID 1, docker.service, and the
    /// shipped unit installed; the script runs from a test unit once the system is up.
    Systemd,
}

impl Flavour {
    /// How long a boot may take before it is killed and fails with its console: several
    /// times the longest group's time under TCG on 2 loaded cores (commands: 90 s; the
    /// docker groups: 50-85 s; the systemd groups: 55 s, and api-gate-compose, whose
    /// Python client starts 18 times, 180-225 s), so that a hang costs CI minutes, not
    /// the run.
    pub fn timeout(self) -> Duration {
        match self {
            Flavour::Initramfs => Duration::from_mins(15),
            Flavour::RealDaemon => Duration::from_mins(8),
            Flavour::Systemd => Duration::from_mins(12),
        }
    }
}

/// A group's checks: they judge one boot's report.
pub type CheckFn = fn(&mut Checks);

/// A group of scenarios sharing one boot.
pub struct Group {
    pub name: &'static str,
    pub script: String,
    /// Extra files for the VM (path, mode, contents), put in the scenario's archive.
    pub files: Vec<(String, u32, PathBuf)>,
    /// Extra files for the systemd flavour's disk image (path, mode, contents).
    pub disk_files: Vec<vm::ImageFile>,
    pub lsm: &'static str,
    /// Which VM the group boots.
    pub flavour: Flavour,
    pub check: CheckFn,
}

/// A systemd group's image in the run's work directory (built once per run, booted on
/// each kernel).
fn systemd_image(work: &Path, group: &Group) -> PathBuf {
    work.join(format!("{}.img", group.name))
}

/// The docker flavour's archive in the run's work directory (see [`vm::build_docker_initramfs`]).
pub const DOCKER_INITRD: &str = "docker.cpio";

/// Boots one group on one kernel and runs its checks.
pub fn run_group(
    group: &Group,
    kernel: &Kernel,
    base_initrd: &Path,
    work: &Path,
    artifacts: &Artifacts,
) -> Result<Vec<Check>> {
    let dir = work.join(&kernel.label).join(group.name);
    std::fs::create_dir_all(&dir)?;
    if group.flavour == Flavour::Systemd {
        let boot = Boot {
            kernel,
            initrds: vec![],
            lsm: group.lsm,
            timeout: group.flavour.timeout(),
            work: dir,
            echo: false,
        };
        let report = vm::boot_disk(&boot, &systemd_image(work, group))?;
        let mut checks = Checks::new(&report, artifacts);
        (group.check)(&mut checks);
        return Ok(checks.results);
    }
    let mut archive = Archive::new();
    archive.file("scenario.sh", 0o644, group.script.as_bytes());
    for (path, mode, source) in &group.files {
        archive.copy(path, *mode, source)?;
    }
    if group.script.contains("loop.ko") {
        archive.copy("lib/modules/loop.ko", 0o644, &kernel.module("drivers/block/loop.ko", &dir)?)?;
    }
    if group.script.contains("overlay.ko") {
        archive.copy("lib/modules/overlay.ko", 0o644, &kernel.module("fs/overlayfs/overlay.ko", &dir)?)?;
    }
    if group.script.contains("binfmt_misc.ko") {
        archive.copy("lib/modules/binfmt_misc.ko", 0o644, &kernel.module("fs/binfmt_misc.ko", &dir)?)?;
    }
    let scenario = dir.join("scenario.cpio");
    archive.write_to(&scenario)?;
    let mut initrds = vec![base_initrd.to_path_buf()];
    if group.flavour == Flavour::RealDaemon {
        initrds.push(work.join(DOCKER_INITRD));
    }
    initrds.push(scenario);
    let report = vm::boot(&Boot {
        kernel,
        initrds,
        lsm: group.lsm,
        timeout: group.flavour.timeout(),
        work: dir,
        echo: false,
    })?;
    let mut checks = Checks::new(&report, artifacts);
    (group.check)(&mut checks);
    Ok(checks.results)
}

/// Runs every group on every kernel; prints one line per check and the totals.
/// Returns (passed, failed).
pub fn run_suite(
    kernels: &[Kernel],
    artifacts: &Artifacts,
    work: &Path,
    only: Option<&str>,
) -> Result<(usize, usize)> {
    std::fs::create_dir_all(work)?;
    let base = work.join("base.cpio");
    vm::build_base_initramfs(artifacts, &base)?;
    let groups = groups::all(work, artifacts)?;
    // `only`: one group's name, or several separated by commas.
    let selected = |g: &&Group| only.is_none_or(|o| o.split(',').any(|name| g.name == name));
    // Built once per run, and only when a selected group boots the docker flavour.
    if groups.iter().filter(selected).any(|g| g.flavour == Flavour::RealDaemon) {
        vm::build_docker_initramfs(artifacts, work, &work.join(DOCKER_INITRD))?;
    }
    for group in groups.iter().filter(selected).filter(|g| g.flavour == Flavour::Systemd) {
        let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/enforcer.service");
        let mut files = group.disk_files.clone();
        if group.script.contains("load_bridge_modules") {
            files.extend(vm::bridge_modules(kernels, work)?);
        }
        let image = vm::build_systemd_image(artifacts, &unit, &group.script, &files, work)?;
        std::fs::rename(&image, systemd_image(work, group))?;
    }
    let (mut passed, mut failed) = (0, 0);
    for kernel in kernels {
        for group in groups.iter().filter(selected) {
            let started = std::time::Instant::now();
            eprintln!("vm: {} / {} ...", kernel.label, group.name);
            let results = match run_group(group, kernel, &base, work, artifacts) {
                Ok(results) => results,
                Err(error) => vec![Check { name: "boot".into(), failure: Some(format!("{error:#}")) }],
            };
            for check in results {
                match &check.failure {
                    None => {
                        passed += 1;
                        println!("ok   [{}] {}: {}", kernel.label, group.name, check.name);
                    }
                    Some(detail) => {
                        failed += 1;
                        println!(
                            "FAIL [{}] {}: {}\n     {}",
                            kernel.label,
                            group.name,
                            check.name,
                            detail.replace('\n', "\n     ")
                        );
                    }
                }
            }
            eprintln!("vm: {} / {} took {:.1}s", kernel.label, group.name, started.elapsed().as_secs_f64());
        }
    }
    Ok((passed, failed))
}
