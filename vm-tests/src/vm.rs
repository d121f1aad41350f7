//! The VM bench: builds an initramfs around the freshly built enforcer, the real docker
//! CLI and the mock docker API, boots it in QEMU on a Debian kernel, and collects what
//! the scenario script reports over the serial console.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{cpio::Archive, report::Report};

/// A Debian kernel package unpacked under the kernel cache.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// Short name used in reports, e.g. `6.1`.
    pub label: String,
    /// Full release, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The unpacked package root (holds `boot/` and `lib/modules/`).
    pub root: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join("boot").join(format!("vmlinuz-{}", self.release))
    }

    /// An uncompressed copy of a module from the package (the initramfs has no xz).
    pub fn module(&self, relative: &str, work: &Path) -> Result<PathBuf> {
        let base = self.root.join("lib/modules").join(&self.release).join("kernel").join(relative);
        let out = work.join(format!("{}-{}", self.label, base.file_name().unwrap().to_string_lossy()));
        if base.exists() {
            std::fs::copy(&base, &out)?;
            return Ok(out);
        }
        let xz = PathBuf::from(format!("{}.xz", base.display()));
        let output = Command::new("xz")
            .arg("-dc")
            .arg(&xz)
            .output()
            .with_context(|| format!("cannot run xz on {}", xz.display()))?;
        if !output.status.success() {
            bail!("xz -dc {} failed", xz.display());
        }
        std::fs::write(&out, output.stdout)?;
        Ok(out)
    }
}

/// Host programs that go into every VM.
#[derive(Clone, Debug)]
pub struct Artifacts {
    pub enforcer: PathBuf,
    pub mock_api: PathBuf,
    /// exec-helper: execveat/fexecve from the command line.
    pub exec_helper: PathBuf,
    pub docker: PathBuf,
    /// Debian's docker.io, containerd, runc and tini unpacked (`dpkg -x`) into one root:
    /// the real daemon of the docker flavour (`cargo xtask setup` fetches them).
    pub daemon_root: PathBuf,
    /// The systemd flavour's Debian root filesystem (mmdebstrap, cached by `cargo xtask
    /// setup`); [`build_systemd_image`] makes the bootable image from it.
    pub systemd_root: PathBuf,
}

pub const AI_WORKER_UID: u32 = 1001;
pub const OTHER_UID: u32 = 1002;
pub const DOCKER_GID: u32 = 998;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh
ai-worker:x:1001:1001:AI agent:/home/ai-worker:/bin/sh
bob:x:1002:1002:Another docker user:/home/bob:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";
const GROUP: &str = "root:x:0:
docker:x:998:ai-worker,bob
ai-worker:x:1001:
bob:x:1002:
nogroup:x:65534:
";

const INIT: &str = include_str!("../vm/init.sh");
pub(crate) const HELPERS: &str = include_str!("../vm/helpers.sh");

fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{program} not found in PATH (run `cargo xtask setup`)"))
}

/// Shared libraries a dynamic binary needs, from `ldd`.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd").arg(binary).output().context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let candidate = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = candidate.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Adds a host binary (and its shared libraries) to the archive at `dest`.
pub fn add_binary(archive: &mut Archive, dest: &str, source: &Path) -> Result<()> {
    archive.copy(dest, 0o755, source)?;
    for lib in shared_libraries(source)? {
        let dest = lib.to_string_lossy().to_string();
        let real = std::fs::canonicalize(&lib)?;
        archive.copy(&dest, 0o755, &real)?;
    }
    Ok(())
}

/// Adds host binaries and their shared libraries, each library once.
fn add_binaries(archive: &mut Archive, binaries: &[(&str, &Path)]) -> Result<()> {
    let mut added = std::collections::BTreeSet::new();
    for (dest, source) in binaries {
        archive.copy(dest, 0o755, source)?;
        for lib in shared_libraries(source)? {
            if added.insert(lib.clone()) {
                let real = std::fs::canonicalize(&lib)?;
                archive.copy(&lib.to_string_lossy(), 0o755, &real)?;
            }
        }
    }
    Ok(())
}

/// Builds the initramfs every scenario shares. Scenario files go in a second archive
/// appended to it (the kernel unpacks concatenated archives in order).
pub fn build_base_initramfs(artifacts: &Artifacts, out: &Path) -> Result<()> {
    let mut archive = Archive::new();
    for dir in ["proc", "sys", "dev", "tmp", "run", "root", "etc/enforcer", "var/lib", "mnt", "usr/local/bin"]
    {
        archive.dir(dir);
    }
    archive.symlink("var/run", "/run");
    archive.dir_with("home/ai-worker", 0o700, AI_WORKER_UID, AI_WORKER_UID);
    archive.dir_with("home/bob", 0o700, OTHER_UID, OTHER_UID);

    let busybox = which("busybox")?;
    archive.copy("bin/busybox", 0o755, &busybox)?;
    let applets = Command::new(&busybox).arg("--list-full").output().context("busybox --list-full")?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "bin/busybox" {
            archive.symlink(applet, "/bin/busybox");
        }
    }
    // util-linux setpriv: busybox's lacks --reuid/--init-groups. Called by absolute path.
    add_binary(&mut archive, "usr/lib/util-linux/setpriv", Path::new("/usr/bin/setpriv"))?;
    add_binary(&mut archive, "usr/bin/docker", &artifacts.docker)?;
    add_binary(&mut archive, "usr/local/sbin/enforcer", &artifacts.enforcer)?;
    add_binary(&mut archive, "usr/local/sbin/mock-docker-api", &artifacts.mock_api)?;
    add_binary(&mut archive, "usr/local/bin/exec-helper", &artifacts.exec_helper)?;
    // The subvert attack tool is built beside exec-helper (same crate).
    add_binary(&mut archive, "usr/local/bin/subvert", &artifacts.exec_helper.with_file_name("subvert"))?;
    add_binary(&mut archive, "usr/local/bin/api-load", &artifacts.exec_helper.with_file_name("api-load"))?;
    // A static i386 program that execs its arguments (the 32-bit exec path, vm-tests/src/elf32.rs).
    archive.file("usr/local/bin/exec32", 0o755, &crate::elf32::exec_trampoline());
    // Other ways to talk to the docker API than the docker CLI (they share most libraries).
    add_binaries(&mut archive, &[("usr/bin/curl", &which("curl")?), ("usr/bin/socat", &which("socat")?)])?;
    archive.file("etc/passwd", 0o644, PASSWD.as_bytes());
    archive.file("etc/group", 0o644, GROUP.as_bytes());
    archive.file("etc/nsswitch.conf", 0o644, b"passwd: files\ngroup: files\n");
    archive.file("init", 0o755, INIT.as_bytes());
    archive.file("lib/enforcer-test.sh", 0o644, HELPERS.as_bytes());
    archive.write_to(out)
}

/// The real daemon's programs, from the unpacked Debian packages: (path in the VM, path
/// under [`Artifacts::daemon_root`]). dockerd starts containerd itself; `docker-init` is
/// tini, which `docker run --init` needs.
const DAEMON_BINARIES: &[(&str, &str)] = &[
    ("usr/bin/dockerd", "usr/sbin/dockerd"),
    ("usr/bin/containerd", "usr/bin/containerd"),
    ("usr/bin/containerd-shim-runc-v2", "usr/bin/containerd-shim-runc-v2"),
    ("usr/bin/runc", "usr/sbin/runc"),
    ("usr/bin/docker-proxy", "usr/sbin/docker-proxy"),
    ("usr/bin/docker-init", "usr/bin/tini-static"),
];

/// Image name of the busybox root filesystem the docker flavour imports.
pub const LOCAL_IMAGE: &str = "local/busybox";

/// The docker flavour's extra archive, appended after the base one: dockerd, containerd,
/// runc, tini and their libraries, and `images/busybox.tar` (a busybox root filesystem
/// for `docker import`: no registry is reachable from the VM). `start_dockerd` in
/// vm-tests/vm/helpers.sh starts it.
pub fn build_docker_initramfs(artifacts: &Artifacts, work: &Path, out: &Path) -> Result<()> {
    let mut archive = Archive::new();
    archive.dir("var/lib/docker");
    archive.dir("etc/docker");
    let mut binaries = Vec::new();
    for (dest, source) in DAEMON_BINARIES {
        let path = artifacts.daemon_root.join(source);
        if !path.is_file() {
            bail!("{} is missing (run `cargo xtask setup`)", path.display());
        }
        binaries.push((*dest, path));
    }
    let borrowed: Vec<(&str, &Path)> = binaries.iter().map(|(d, p)| (*d, p.as_path())).collect();
    add_binaries(&mut archive, &borrowed)?;
    let tar = busybox_rootfs_tar(work)?;
    archive.copy("images/busybox.tar", 0o644, &tar)?;
    archive.write_to(out)
}

/// A tar of busybox-static with its applet links: the root filesystem of the VM's only
/// image (`docker import`). Built with the host's tar, which sets owners to root.
fn busybox_rootfs_tar(work: &Path) -> Result<PathBuf> {
    let staging = work.join("busybox-rootfs");
    let _ = std::fs::remove_dir_all(&staging);
    let busybox = which("busybox")?;
    std::fs::create_dir_all(staging.join("bin"))?;
    std::fs::copy(&busybox, staging.join("bin/busybox"))?;
    for dir in ["data", "etc", "proc", "sys", "dev", "tmp", "root", "usr/bin", "usr/sbin", "sbin"] {
        std::fs::create_dir_all(staging.join(dir))?;
    }
    let applets = Command::new(&busybox).arg("--list-full").output().context("busybox --list-full")?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let link = staging.join(applet);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink("/bin/busybox", &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    std::fs::write(
        staging.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ngit:x:1000:1000:git:/data:/bin/sh\n",
    )?;
    std::fs::write(staging.join("etc/group"), "root:x:0:\ngit:x:1000:\n")?;
    let tar = work.join("busybox-rootfs.tar");
    let status = Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&staging)
        .arg(".")
        .status()
        .context("cannot run tar")?;
    if !status.success() {
        bail!("tar of the busybox root filesystem failed");
    }
    std::fs::remove_dir_all(&staging)?;
    Ok(tar)
}

/// The test unit of the systemd flavour: runs the scenario once the system is up, reports
/// on the serial console, powers off.
const SYSTEMD_TEST_UNIT: &str = "[Unit]
Description=enforcer VM scenario (vm-tests/src/groups/systemd.rs)
After=multi-user.target docker.service
Wants=docker.service

[Service]
Type=oneshot
ExecStart=/bin/sh /opt/enforcer-test/run.sh
StandardInput=null
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no

[Install]
WantedBy=multi-user.target
";

const SYSTEMD_RUN: &str = "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
. /opt/enforcer-test/helpers.sh
echo \"@@begin $(uname -r)\"
. /opt/enforcer-test/scenario.sh
echo @@done
sync
systemctl poweroff --force --force
";

/// A file put into the systemd image: (absolute path in the VM, mode, contents).
pub type ImageFile = (String, u32, Vec<u8>);

/// The systemd flavour's bootable ext4 image: the cached root filesystem plus this run's
/// enforcer at /usr/local/sbin/enforcer, the shipped unit installed and enabled as its
/// header says, the busybox image for `docker import`, the scenario and its test unit,
/// and `files`. Built once per run with `mkfs.ext4 -d` (no mount needed); boots share it
/// read-only (`snapshot=on`).
pub fn build_systemd_image(
    artifacts: &Artifacts,
    unit: &Path,
    script: &str,
    files: &[ImageFile],
    work: &Path,
) -> Result<PathBuf> {
    let root = &artifacts.systemd_root;
    if !root.join("usr/lib/systemd/systemd").is_file() {
        bail!("no systemd root filesystem at {} (run `cargo xtask setup`)", root.display());
    }
    // These paths are this run's, not the cache's inputs: rewritten every time.
    let test_dir = root.join("opt/enforcer-test");
    let _ = std::fs::remove_dir_all(&test_dir);
    std::fs::create_dir_all(&test_dir)?;
    // The files the previous image put into the cached root (a group's units, its policy)
    // go, so that an image has only its own group's: the list is kept beside the root.
    let manifest = root.with_file_name("image-files");
    if let Ok(list) = std::fs::read_to_string(&manifest) {
        for path in list.lines().filter(|l| l.starts_with('/')) {
            let _ = std::fs::remove_file(root.join(path.trim_start_matches('/')));
        }
    }
    let mut all: Vec<ImageFile> = vec![
        ("/usr/local/sbin/enforcer".into(), 0o755, std::fs::read(&artifacts.enforcer)?),
        ("/etc/systemd/system/enforcer.service".into(), 0o644, std::fs::read(unit)?),
        ("/etc/systemd/system/enforcer-test.service".into(), 0o644, SYSTEMD_TEST_UNIT.into()),
        ("/opt/enforcer-test/run.sh".into(), 0o755, SYSTEMD_RUN.into()),
        ("/opt/enforcer-test/helpers.sh".into(), 0o644, HELPERS.into()),
        ("/opt/enforcer-test/scenario.sh".into(), 0o644, script.into()),
        ("/opt/enforcer-test/busybox.tar".into(), 0o644, std::fs::read(busybox_rootfs_tar(work)?)?),
    ];
    all.extend(files.iter().cloned());
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    let extra_units: Vec<&str> = files
        .iter()
        .filter_map(|(path, _, _)| {
            path.strip_prefix("/etc/systemd/system/").filter(|name| name.ends_with(".service"))
        })
        .collect();
    let written: Vec<String> = files
        .iter()
        .map(|(path, _, _)| path.clone())
        .chain(extra_units.iter().map(|unit| format!("/etc/systemd/system/multi-user.target.wants/{unit}")))
        .collect();
    std::fs::write(&manifest, written.join("\n") + "\n")
        .with_context(|| format!("cannot write {}", manifest.display()))?;
    for (path, mode, contents) in &all {
        let dest = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap())?;
        let _ = std::fs::remove_file(&dest);
        std::fs::write(&dest, contents).with_context(|| format!("cannot write {}", dest.display()))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))?;
    }
    // `systemctl enable` of both units and the group's, done as the symlinks it would make.
    std::fs::create_dir_all(&wants)?;
    for unit in ["enforcer.service", "enforcer-test.service"].into_iter().chain(extra_units) {
        let link = wants.join(unit);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("/etc/systemd/system/{unit}"), &link)?;
    }
    let image = work.join("systemd-root.img");
    let _ = std::fs::remove_file(&image);
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "root", "-d"])
        .arg(root)
        .arg(&image)
        .arg("2G")
        .status()
        .context("cannot run mkfs.ext4 (run `cargo xtask setup`)")?;
    if !status.success() {
        bail!("mkfs.ext4 -d {} failed", root.display());
    }
    Ok(image)
}

/// What `load_bridge_modules` (vm/helpers.sh) loads, in that order (each needs the ones
/// before it): paths under a kernel package's `kernel/`.
const BRIDGE_MODULES: &[&str] =
    &["net/llc/llc.ko", "net/802/stp.ko", "net/bridge/bridge.ko", "drivers/net/veth.ko"];

/// The image files a systemd group needs for `load_bridge_modules` on each of `kernels`:
/// `/opt/enforcer-test/modules/<release>/<name>.ko`, uncompressed (one image boots every
/// kernel, so it holds each one's).
pub fn bridge_modules(kernels: &[Kernel], work: &Path) -> Result<Vec<ImageFile>> {
    let mut files = Vec::new();
    for kernel in kernels {
        for module in BRIDGE_MODULES {
            let name = Path::new(module).file_name().unwrap().to_string_lossy();
            let copy = kernel.module(module, work)?;
            let path = format!("/opt/enforcer-test/modules/{}/{name}", kernel.release);
            files.push((path, 0o644, std::fs::read(&copy)?));
            std::fs::remove_file(&copy)?;
        }
    }
    Ok(files)
}

/// How to boot one VM.
pub struct Boot<'a> {
    pub kernel: &'a Kernel,
    /// Concatenated in order into the initrd.
    pub initrds: Vec<PathBuf>,
    /// The `lsm=` list; must include `bpf` for enforcement.
    pub lsm: &'a str,
    pub timeout: Duration,
    /// Where the console transcript and initrd go.
    pub work: PathBuf,
    /// Echo the console to stderr as it arrives (for `xtask demo`).
    pub echo: bool,
}

pub const DEFAULT_LSM: &str = "landlock,lockdown,yama,integrity,apparmor,bpf";

/// Boots the VM and returns what its scenario reported. The VM powers itself off at
/// the end of the scenario; a boot that runs past the timeout is killed and fails.
pub fn boot(boot: &Boot) -> Result<Report> {
    boot_with(boot, &[])
}

/// [`boot`] with extra QEMU arguments (the bench's `-icount`).
pub fn boot_with(boot: &Boot, qemu_args: &[&str]) -> Result<Report> {
    std::fs::create_dir_all(&boot.work)?;
    let initrd = boot.work.join("initrd.cpio");
    let mut data = Vec::new();
    for part in &boot.initrds {
        data.extend(std::fs::read(part).with_context(|| format!("cannot read {}", part.display()))?);
    }
    std::fs::write(&initrd, data)?;
    let result = run_qemu(boot, &["-initrd".as_ref(), initrd.as_os_str()], "rdinit=/init", qemu_args);
    let _ = std::fs::remove_file(&initrd);
    result
}

/// Boots the systemd flavour: `disk` (an ext4 image of a Debian root filesystem, see
/// [`build_systemd_image`]) on `NVMe` as the root, systemd as PID 1, no initramfs
/// (`boot.initrds` is ignored). The image is opened with `snapshot=on`: each boot starts
/// from the same file system and writes nothing back.
pub fn boot_disk(boot: &Boot, disk: &Path) -> Result<Report> {
    let drive = format!("file={},if=none,id=root,format=raw,snapshot=on", disk.display());
    run_qemu(
        boot,
        &[
            "-drive".as_ref(),
            drive.as_ref(),
            "-device".as_ref(),
            "nvme,drive=root,serial=enforcer-root".as_ref(),
        ],
        "root=/dev/nvme0n1 rw",
        &[],
    )
}

fn run_qemu(boot: &Boot, media: &[&std::ffi::OsStr], root_args: &str, qemu_args: &[&str]) -> Result<Report> {
    // softlockup_panic=1: a soft lockup (seen once in ~35 boots running runc) panics, and
    // panic=-1 with -no-reboot ends QEMU at once instead of waiting for the timeout.
    let append =
        format!("console=ttyS0 quiet loglevel=1 panic=-1 softlockup_panic=1 lsm={} {root_args}", boot.lsm);
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-m", "2048", "-smp", "1"])
        .args(accelerator())
        .args(qemu_args)
        .arg("-kernel")
        .arg(boot.kernel.vmlinuz())
        .args(media)
        .args(["-append", &append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().context("cannot start qemu-system-x86_64 (run `cargo xtask setup`)")?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let echo = boot.echo;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if echo && !line.contains("@@") {
                eprintln!("  | {}", line.trim_end_matches('\r'));
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + boot.timeout;
    let mut console = String::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                console.push_str(&line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait()?;
    std::fs::write(boot.work.join("console.log"), &console)?;
    if timed_out {
        bail!(
            "VM on {} did not finish within {:?}; console in {}",
            boot.kernel.label,
            boot.timeout,
            boot.work.join("console.log").display()
        );
    }
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            use std::io::Read;
            let _ = err.read_to_string(&mut stderr);
        }
        bail!("qemu exited with {status}: {stderr}");
    }
    Report::parse(&console)
}

/// TCG always works here; KVM is an opt-in speed-up (`ENFORCER_VM_KVM=1`) because nested
/// KVM is broken on the machines this runs on, and it falls back to TCG if it cannot start.
fn accelerator() -> Vec<&'static str> {
    let want_kvm = std::env::var("ENFORCER_VM_KVM").is_ok_and(|v| v == "1");
    if want_kvm && Path::new("/dev/kvm").exists() {
        vec!["-accel", "kvm", "-accel", "tcg", "-cpu", "max"]
    } else {
        vec!["-accel", "tcg", "-cpu", "max"]
    }
}
