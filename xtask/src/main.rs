//! Developer and CI commands. `cargo xtask demo` and `cargo xtask test` do all set-up
//! themselves on a fresh machine (Debian 12, root); every step is skipped when done.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use vm_tests::{
    report::Report,
    vm::{self, Artifacts, Boot, Kernel},
};

mod lint;

#[derive(Parser)]
#[command(about = "enforcer developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and the VM tests need (idempotent).
    Setup,
    /// Build enforcer (with its BPF object) and the test helpers, release mode.
    Build,
    /// Boot a VM with the real docker daemon, enforce the embedded default policy, replay
    /// the incident as ai-worker, and show the API gate refusing what argv does not show.
    Demo {
        /// Kernel to boot: 6.1 or 6.12.
        #[arg(long, default_value = "6.12")]
        kernel: String,
    },
    /// Boot a VM per kernel and print the instructions the verifier processed for each BPF
    /// program (`enforcer verify`).
    Verifier,
    /// Boot a VM that runs a scenario script of your own and print its console (debugging).
    Vm {
        /// Shell script run as root inside the VM (helpers: vm-tests/vm/helpers.sh).
        script: PathBuf,
        #[arg(long, default_value = "6.12")]
        kernel: String,
        /// Boot the docker flavour: the real dockerd is in the VM (`start_dockerd`).
        #[arg(long)]
        real_daemon: bool,
    },
    /// Measure what enforcer costs, in the VM on each kernel: exec rates with and without
    /// it, start-up, memory, verifier figures. Prints a table, writes target/bench/<kernel>.json.
    Bench {
        /// Only this kernel (6.1 or 6.12).
        #[arg(long)]
        kernel: Option<String>,
        /// Interleaved rounds per boot (each figure is the median over them).
        #[arg(long, default_value_t = 8)]
        rounds: usize,
        /// Timed execs per run of the exec figures (1)-(4): with the rounds, 8,000 per figure.
        #[arg(long, default_value_t = 1000)]
        iterations: u64,
        /// Timed execs per run of the bash wrapper (5), which costs a bash start-up each.
        #[arg(long, default_value_t = 100)]
        wrapper_iterations: u64,
        /// Time by the host's wall clock instead of QEMU's instruction count (-icount):
        /// real emulation speed, but other load on the host shows in every figure.
        #[arg(long)]
        wall_clock: bool,
        /// Rounds of the API gate's boot (real dockerd: round trip, `docker ps`, upload,
        /// direct vs through the gate); 0 skips that boot.
        #[arg(long, default_value_t = 3)]
        api_rounds: usize,
        /// `GET /containers/json` round trips per run (one keep-alive connection).
        #[arg(long, default_value_t = 200)]
        api_requests: u64,
        /// `docker ps` runs per run.
        #[arg(long, default_value_t = 10)]
        ps_iterations: u64,
        /// Size of the build context's big file (MiB), one upload per run and side.
        #[arg(long, default_value_t = 200)]
        upload_mib: u64,
        /// Only the API gate's boot (skip the exec figures' boot).
        #[arg(long)]
        api_only: bool,
    },
    /// Formatting and clippy on the host crates and on the BPF crate (part of `test`).
    Lint,
    /// Lints, unit tests on the host, then every VM scenario on both kernels.
    Test {
        /// Run only the VM scenario group with this name (or these, separated by commas).
        #[arg(long)]
        group: Option<String>,
        /// Run only on this kernel (6.1 or 6.12).
        #[arg(long)]
        kernel: Option<String>,
        /// Skip the lints and the host unit tests.
        #[arg(long)]
        vm_only: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup().map(|_| ExitCode::SUCCESS),
        Cmd::Build => setup().and_then(|_| build()).map(|_| ExitCode::SUCCESS),
        Cmd::Demo { kernel } => demo(&kernel).map(|()| ExitCode::SUCCESS),
        Cmd::Vm { script, kernel, real_daemon } => {
            vm_shell(&script, &kernel, real_daemon).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Verifier => verifier().map(|()| ExitCode::SUCCESS),
        Cmd::Lint => lint::setup_components().and_then(|()| lint::lint()).map(|()| ExitCode::SUCCESS),
        Cmd::Bench {
            kernel,
            rounds,
            iterations,
            wrapper_iterations,
            wall_clock,
            api_rounds,
            api_requests,
            ps_iterations,
            upload_mib,
            api_only,
        } => {
            let config = vm_tests::bench::Config {
                rounds,
                iterations,
                wrapper_iterations,
                icount: !wall_clock,
                exec: !api_only,
                api_rounds,
                api_requests,
                ps_iterations,
                upload_mib,
            };
            bench(kernel.as_deref(), &config).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Test { group, kernel, vm_only } => test(group.as_deref(), kernel.as_deref(), vm_only),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

fn say(message: &str) {
    eprintln!("xtask: {message}");
}

fn run(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

/// Where the set-up and build steps' own output goes (apt, rustup, cargo): the terminal gets
/// one line per step, and an error points here.
fn setup_log() -> PathBuf {
    target_dir().join("xtask").join("setup.log")
}

/// Runs one set-up step with its output appended to `log`; says the step in one line. On
/// failure the error names the log and quotes its last lines.
fn quiet_in(log: &Path, step: &str, command: &mut Command) -> Result<()> {
    use std::io::Write as _;
    say(step);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let start = file.metadata()?.len();
    writeln!(file, "==== {step}: {command:?}")?;
    let status = command
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if status.success() {
        return Ok(());
    }
    // The step's own lines only, not those of earlier steps.
    let text = std::fs::read(log).unwrap_or_default();
    let ours = String::from_utf8_lossy(&text[(start as usize).min(text.len())..]).into_owned();
    let lines: Vec<&str> = ours.lines().collect();
    let tail = lines[lines.len().saturating_sub(25)..].join("\n");
    bail!("{step} failed ({status}); its output is in {}, ending with:\n{tail}", log.display())
}

fn quiet(step: &str, command: &mut Command) -> Result<()> {
    quiet_in(&setup_log(), step, command)
}

fn output(command: &mut Command) -> Result<String> {
    let out = command.output().with_context(|| format!("cannot run {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

/// Debian packages the VM bench needs: (package, a file it provides).
const APT_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    ("busybox-static", "/bin/busybox"),
    ("util-linux", "/usr/bin/setpriv"),
    ("e2fsprogs", "/sbin/mkfs.ext4"),
    ("xz-utils", "/usr/bin/xz"),
    ("nix-bin", "/usr/bin/nix-instantiate"),
    ("systemd", "/usr/bin/systemd-analyze"),
    // Libraries of the VM's dockerd and runc (copied from the host by ldd).
    ("libdevmapper1.02.1", "/lib/x86_64-linux-gnu/libdevmapper.so.1.02.1"),
    ("libseccomp2", "/lib/x86_64-linux-gnu/libseccomp.so.2"),
    ("libsystemd0", "/lib/x86_64-linux-gnu/libsystemd.so.0"),
    ("mmdebstrap", "/usr/bin/mmdebstrap"),
    ("curl", "/usr/bin/curl"),
    ("socat", "/usr/bin/socat"),
];

struct Apt {
    updated: bool,
}

impl Apt {
    fn update(&mut self) -> Result<()> {
        if !self.updated {
            quiet("apt-get update", Command::new("apt-get").args(["update"]))?;
            self.updated = true;
        }
        Ok(())
    }

    fn install(&mut self, packages: &[&str]) -> Result<()> {
        if !is_root() {
            bail!(
                "missing packages; run as root: apt-get update && apt-get install -y {}",
                packages.join(" ")
            );
        }
        self.update()?;
        quiet(
            &format!("apt-get install {}", packages.join(" ")),
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    }
}

fn setup() -> Result<Vec<Kernel>> {
    let mut apt = Apt { updated: false };
    let missing: Vec<&str> =
        APT_PACKAGES.iter().filter(|(_, file)| !Path::new(file).exists()).map(|(p, _)| *p).collect();
    if missing.is_empty() {
        say("Debian packages: present");
    } else {
        apt.install(&missing)?;
    }
    if docker_cli().is_err() {
        apt.install(&["docker.io"])?;
    }
    setup_rust_src()?;
    lint::setup_components()?;
    setup_bpf_linker()?;
    daemon_packages(&mut apt)?;
    systemd_rootfs(&mut apt)?;
    kernels(&mut apt)
}

/// The systemd flavour's Debian root filesystem: Debian 12 with systemd as PID 1 and the
/// docker packages, as an admin would install them (no recommends). Built with mmdebstrap
/// from Debian's usual suites and cached under target/vm/systemd/<digest of these inputs>:
/// changing the list, the options or the hook builds a new one.
const SYSTEMD_SUITE: &str = "bookworm";
/// apparmor: the kernel runs `AppArmor`, and dockerd then loads its profile with
/// `apparmor_parser` (Debian's docker.io recommends it); without it no container starts.
/// docker-compose: Debian 12's compose (v1, Python, on python3-docker), a real compose
/// client for the API gate (group api-gate-compose); the docker CLI 20.10 has no compose
/// plugin.
const SYSTEMD_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "docker.io",
    "containerd",
    "runc",
    "iptables",
    "kmod",
    "procps",
    "iproute2",
    "util-linux",
    "apparmor",
    "docker-compose",
];
/// Run by mmdebstrap in the new root ($1): the users of the VM bench (same uids as the
/// initramfs), docker without iptables and bridge (the image has no kernel modules: each
/// kernel series has its own), no getty on the console the scenario reports on.
const SYSTEMD_HOOK: &str = r#"set -e
chroot "$1" useradd -u 1001 -m -s /bin/sh -G docker ai-worker
chroot "$1" useradd -u 1002 -m -s /bin/sh -G docker bob
mkdir -p "$1/etc/docker"
printf '{"iptables": false, "ip6tables": false, "bridge": "none", "storage-driver": "vfs"}
' > "$1/etc/docker/daemon.json"
ln -sf /dev/null "$1/etc/systemd/system/serial-getty@ttyS0.service"
ln -sf /dev/null "$1/etc/systemd/system/getty@tty1.service"
mkdir -p "$1/usr/lib/util-linux"
ln -sf /usr/bin/setpriv "$1/usr/lib/util-linux/setpriv"
echo enforcer-vm > "$1/etc/hostname"
"#;

/// FNV-1a: a stable digest of the rootfs inputs for the cache's name (no dependency).
fn fnv1a(parts: &[&str]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// Where the root filesystem of the current inputs is (or will be) cached.
fn systemd_rootfs_path() -> PathBuf {
    let digest = fnv1a(&[SYSTEMD_SUITE, &SYSTEMD_PACKAGES.join(","), SYSTEMD_HOOK, "minbase,no-recommends"]);
    target_dir().join("vm").join("systemd").join(digest).join("root")
}

fn systemd_rootfs(apt: &mut Apt) -> Result<PathBuf> {
    let packages = SYSTEMD_PACKAGES.join(",");
    let root = systemd_rootfs_path();
    let cache = root.parent().unwrap().parent().unwrap().to_path_buf();
    let digest = root.parent().unwrap().file_name().unwrap().to_string_lossy().to_string();
    if root.join("usr/lib/systemd/systemd").is_file() && cache.join(&digest).join("complete").is_file() {
        say(&format!("systemd root filesystem: cached ({})", root.display()));
        return Ok(root);
    }
    if !Path::new("/usr/bin/mmdebstrap").exists() {
        apt.install(&["mmdebstrap"])?;
    }
    // Older digests: their inputs changed.
    if let Ok(entries) = std::fs::read_dir(&cache) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    std::fs::create_dir_all(cache.join(&digest))?;
    quiet(
        &format!("systemd root filesystem: mmdebstrap {SYSTEMD_SUITE} with {packages} (about 30 s)"),
        Command::new("mmdebstrap")
            .args(["--quiet", "--mode=root", "--variant=minbase"])
            .arg(format!("--include={packages}"))
            .arg("--aptopt=APT::Install-Recommends \"false\"")
            .arg(format!("--customize-hook={SYSTEMD_HOOK}"))
            .arg(SYSTEMD_SUITE)
            .arg(&root),
    )?;
    std::fs::write(cache.join(&digest).join("complete"), "")?;
    Ok(root)
}

/// The real docker daemon of the VM's docker flavour: Debian's packages, downloaded and
/// unpacked (`dpkg -x`, not installed: the host runs no daemon) once.
const DAEMON_PACKAGES: &[&str] = &["docker.io", "containerd", "runc", "tini"];

/// Where [`DAEMON_PACKAGES`] are unpacked.
fn daemon_root() -> PathBuf {
    target_dir().join("vm").join("docker").join("root")
}

fn daemon_packages(apt: &mut Apt) -> Result<()> {
    let root = daemon_root();
    if root.join("usr/sbin/dockerd").is_file() && root.join("usr/bin/tini-static").is_file() {
        say(&format!("docker daemon packages: unpacked in {}", root.display()));
        return Ok(());
    }
    apt.update()?;
    let download = root.with_file_name("download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    quiet(
        &format!("docker daemon packages: downloading {}", DAEMON_PACKAGES.join(" ")),
        Command::new("apt-get").args(["download", "-q"]).args(DAEMON_PACKAGES).current_dir(&download),
    )?;
    let staging = root.with_file_name("root.partial");
    let _ = std::fs::remove_dir_all(&staging);
    for entry in std::fs::read_dir(&download)? {
        let deb = entry?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            quiet(
                &format!("docker daemon packages: unpacking {}", deb.display()),
                Command::new("dpkg").arg("-x").arg(&deb).arg(&staging),
            )?;
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&staging, &root)?;
    std::fs::remove_dir_all(&download)?;
    Ok(())
}

fn setup_rust_src() -> Result<()> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("the nightly toolchain is needed to build the BPF programs")?;
    if Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core").exists() {
        say("rust-src (nightly): present");
        return Ok(());
    }
    quiet(
        "rustup component add rust-src --toolchain nightly",
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
    )
}

/// bpf-linker must use the same LLVM as the nightly rustc that emits the bitcode. Debian
/// has no matching LLVM, so it links against the libLLVM that ships inside the nightly
/// toolchain (rustup puts that toolchain's lib/ on the library path when it runs rustc).
fn setup_bpf_linker() -> Result<()> {
    let version = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm_major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .ok_or_else(|| anyhow!("cannot find the LLVM version in `rustc +nightly -vV`"))?
        .to_string();
    // It loads the toolchain's libLLVM by soname, so it only runs when the LLVM matches.
    let works = Command::new("rustup")
        .args(["run", "nightly", "bpf-linker", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        say(&format!("bpf-linker (LLVM {llvm_major}): present"));
        return Ok(());
    }
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let libllvm = std::fs::read_dir(&lib_dir)?
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("libLLVM.so.{llvm_major}")))
        })
        .ok_or_else(|| {
            anyhow!("no libLLVM.so.{llvm_major}* in {} (rustup component add llvm-tools?)", lib_dir.display())
        })?;
    let prefix = target_dir().join("tools").join("llvm-prefix");
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib").join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)?;
    quiet(
        &format!("cargo install bpf-linker against {} (about a minute)", libllvm.display()),
        Command::new("cargo")
            .args(["install", "--locked", "bpf-linker", "--no-default-features", "--features"])
            .arg(format!("llvm-{llvm_major}"))
            .env("LLVM_PREFIX", &prefix),
    )?;
    Ok(())
}

/// The docker CLI the VM runs: the machine's own (/usr/local/bin/docker), else Debian's.
fn docker_cli() -> Result<PathBuf> {
    ["/usr/local/bin/docker", "/usr/bin/docker"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("no docker CLI found"))
}

/// The kernel series the tests boot: (label, apt-cache pattern of the package).
const KERNEL_SERIES: &[(&str, &str)] = &[
    ("6.1", r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$"),
    ("6.12", r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$"),
];

/// Downloads (once) and unpacks the newest Debian cloud kernel of each series.
fn kernels(apt: &mut Apt) -> Result<Vec<Kernel>> {
    let cache = target_dir().join("vm").join("kernels");
    std::fs::create_dir_all(&cache)?;
    let mut kernels = Vec::new();
    for (label, pattern) in KERNEL_SERIES {
        let dir = cache.join(label);
        if let Some(kernel) = unpacked_kernel(label, &dir)? {
            say(&format!("kernel {label}: {} (cached)", kernel.release));
            kernels.push(kernel);
            continue;
        }
        apt.update()?;
        let search = output(Command::new("apt-cache").args(["search", "--names-only", pattern]))?;
        let mut names: Vec<String> =
            search.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect();
        names.sort_by_key(|a| version_key(a));
        let package = names.pop().ok_or_else(|| anyhow!("no Debian package matches {pattern}"))?;
        let download = cache.join("download");
        std::fs::create_dir_all(&download)?;
        quiet(
            &format!("kernel {label}: apt-get download {package}"),
            Command::new("apt-get").args(["download", &package]).current_dir(&download),
        )?;
        let deb = std::fs::read_dir(&download)?
            .filter_map(std::result::Result::ok)
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_"))))
            .ok_or_else(|| anyhow!("apt-get download left no .deb for {package}"))?;
        let staging = cache.join(format!("{label}.partial"));
        let _ = std::fs::remove_dir_all(&staging);
        quiet(&format!("kernel {label}: dpkg -x"), Command::new("dpkg").arg("-x").arg(&deb).arg(&staging))?;
        std::fs::remove_file(&deb)?;
        std::fs::rename(&staging, &dir)?;
        kernels.push(unpacked_kernel(label, &dir)?.ok_or_else(|| anyhow!("{package} holds no vmlinuz"))?);
    }
    Ok(kernels)
}

/// Numeric parts of a package name, for "newest" ordering (6.1.0-9 < 6.1.0-54).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn unpacked_kernel(label: &str, dir: &Path) -> Result<Option<Kernel>> {
    let boot = dir.join("boot");
    if !boot.is_dir() {
        return Ok(None);
    }
    for entry in std::fs::read_dir(&boot)? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok(Some(Kernel {
                label: label.to_string(),
                release: release.to_string(),
                root: dir.to_path_buf(),
            }));
        }
    }
    Ok(None)
}

fn build() -> Result<Artifacts> {
    quiet(
        "cargo build --release (enforcer + BPF object, mock docker API)",
        Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "enforcer", "-p", "vm-tests", "--bins"])
            .current_dir(workspace_root()),
    )?;
    let release = target_dir().join("release");
    // Completions and man pages, from the binary's own clap definitions (as the Nix package
    // installs them).
    let enforcer = release.join("enforcer");
    let generated = release.join("share");
    std::fs::create_dir_all(generated.join("completions"))?;
    for shell in ["bash", "zsh", "fish"] {
        let script = output(Command::new(&enforcer).args(["completions", shell]))?;
        std::fs::write(generated.join("completions").join(format!("enforcer.{shell}")), script)?;
    }
    quiet(
        "man pages: enforcer manpages",
        Command::new(&enforcer).arg("manpages").arg(generated.join("man")),
    )?;
    Ok(Artifacts {
        enforcer: release.join("enforcer"),
        mock_api: release.join("mock-docker-api"),
        exec_helper: release.join("exec-helper"),
        docker: docker_cli()?,
        daemon_root: daemon_root(),
        systemd_root: systemd_rootfs_path(),
    })
}

fn unit_tests() -> Result<()> {
    // Compiling (and the BPF build's progress) goes to the log; the tests' own report stays
    // on the terminal.
    quiet(
        "building the host tests: cargo test --workspace --no-run",
        Command::new(env!("CARGO"))
            .args(["test", "--workspace", "--exclude", "enforcer-ebpf", "--no-run"])
            .current_dir(workspace_root()),
    )?;
    say("host unit tests: cargo test --workspace (BPF crate excluded: it only builds for BPF)");
    run(Command::new(env!("CARGO"))
        .args(["test", "--workspace", "--exclude", "enforcer-ebpf"])
        .current_dir(workspace_root()))
}

fn test(group: Option<&str>, kernel: Option<&str>, vm_only: bool) -> Result<ExitCode> {
    let kernels = setup()?;
    let kernels: Vec<Kernel> = kernels.into_iter().filter(|k| kernel.is_none_or(|l| k.label == l)).collect();
    if kernels.is_empty() {
        bail!("no kernel matches {kernel:?} (known: 6.1, 6.12)");
    }
    if !vm_only {
        lint::lint()?;
        unit_tests()?;
    }
    let artifacts = build()?;
    let work = target_dir().join("vm").join("runs");
    let (passed, failed) = vm_tests::suite::run_suite(&kernels, &artifacts, &work, group)?;
    if passed + failed == 0 {
        bail!("no VM scenario ran");
    }
    println!("vm: {passed} passed, {failed} failed");
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Not part of `test`: figures are reported, not asserted (the host may be loaded). A
/// missed target is printed as MISS; the command fails only when the bench cannot run.
fn bench(kernel: Option<&str>, config: &vm_tests::bench::Config) -> Result<()> {
    if config.rounds == 0 || config.iterations == 0 || config.wrapper_iterations == 0 {
        bail!("--rounds, --iterations and --wrapper-iterations must be at least 1");
    }
    if config.api_rounds > 0
        && (config.api_requests < 2 || config.ps_iterations == 0 || config.upload_mib == 0)
    {
        bail!("--api-requests must be at least 2, --ps-iterations and --upload-mib at least 1");
    }
    if !config.exec && config.api_rounds == 0 {
        bail!("--api-only with --api-rounds 0 measures nothing");
    }
    let kernels: Vec<Kernel> = setup()?.into_iter().filter(|k| kernel.is_none_or(|l| k.label == l)).collect();
    if kernels.is_empty() {
        bail!("no kernel matches {kernel:?} (known: 6.1, 6.12)");
    }
    let artifacts = build()?;
    let work = target_dir().join("vm").join("bench");
    std::fs::create_dir_all(&work)?;
    let base = work.join("base.cpio");
    vm::build_base_initramfs(&artifacts, &base)?;
    // The API gate's boot adds the real dockerd (the docker flavour's archive).
    let docker = work.join("docker.cpio");
    if config.api_rounds > 0 {
        vm::build_docker_initramfs(&artifacts, &work, &docker)?;
    }
    let bench_exec = target_dir().join("release").join("bench-exec");
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir)?;
    for kernel in &kernels {
        if config.exec {
            say(&format!(
                "bench on Debian {} ({}): {} rounds of {} execs per figure ({} for the wrapper)",
                kernel.label, kernel.release, config.rounds, config.iterations, config.wrapper_iterations
            ));
        }
        if config.api_rounds > 0 {
            say(&format!(
                "API gate bench on Debian {} (real dockerd): {} rounds of {} round trips, {} docker ps, a {} MiB upload",
                kernel.label, config.api_rounds, config.api_requests, config.ps_iterations, config.upload_mib
            ));
        }
        let started = std::time::Instant::now();
        let docker = (config.api_rounds > 0).then_some(docker.as_path());
        let measured = vm_tests::bench::run(kernel, &base, docker, &bench_exec, &work, config)?;
        let json = vm_tests::bench::to_json(kernel, config, &measured);
        let path = out_dir.join(format!("{}.json", kernel.label));
        std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("\n{}", vm_tests::bench::table(kernel, config, &measured));
        say(&format!("wrote {} ({:.0} s in the VM)", path.display(), started.elapsed().as_secs_f64()));
    }
    Ok(())
}

const DEMO_SCRIPT: &str = r#"
start_dockerd
# Something on the host only root may read, for the -v /:/host line below.
echo "host-only: root's file on the host" > /root/host-secret
chmod 600 /root/host-secret
start_enforcer
echo "@@say enforcer is running with the embedded default policy"
# Before 6.7 the kernel cannot route the agent's docker to its gate: DOCKER_HOST, as an
# admin sets it (docs/api-gate.md); 6.7+ routes it and the agent's docker is left alone.
gate_env ai-worker ai-worker-docker
step routing root sh -c '/usr/local/sbin/enforcer status | grep routing:'
step secret-root root docker exec gitea cat /data/secret
step incident ai-worker docker exec -u git gitea gitea admin user generate-access-token -u admin
step exec-secret ai-worker docker exec gitea cat /data/secret
step cp-secret ai-worker docker cp gitea:/data/secret /tmp/secret
step ps ai-worker docker ps
step run-own ai-worker docker run --rm --network none local/busybox echo "hello from the agent's own container"
step copy ai-worker sh -c 'cp /usr/bin/docker /tmp/d && /tmp/d exec gitea cat /data/secret'
step curl ai-worker curl -sS --unix-socket /var/run/docker.sock -X POST http://docker/containers/gitea/exec
step volumes-from ai-worker docker run --rm --network none --volumes-from gitea local/busybox cat /data/secret
step host-mount ai-worker docker run --rm --network none -v /:/host local/busybox cat /host/root/host-secret
step status root /usr/local/sbin/enforcer status
stop_enforcer
stop_dockerd
"#;

/// Builds everything and boots `kernel_label` running `script`.
fn boot_script(kernel_label: &str, script: &str, name: &str, echo: bool) -> Result<Report> {
    boot_script_with(kernel_label, script, name, echo, false)
}

/// [`boot_script`], in the docker flavour (the real dockerd in the VM) when `real_daemon`.
fn boot_script_with(
    kernel_label: &str,
    script: &str,
    name: &str,
    echo: bool,
    real_daemon: bool,
) -> Result<Report> {
    let kernels = setup()?;
    let kernel = kernels
        .iter()
        .find(|k| k.label == kernel_label)
        .ok_or_else(|| anyhow!("unknown kernel {kernel_label} (known: 6.1, 6.12)"))?;
    let artifacts = build()?;
    let work = target_dir().join("vm").join(name);
    std::fs::create_dir_all(&work)?;
    let base = work.join("base.cpio");
    vm::build_base_initramfs(&artifacts, &base)?;
    let mut scenario = vm_tests::cpio::Archive::new();
    scenario.file("scenario.sh", 0o644, script.as_bytes());
    let scenario_path = work.join("scenario.cpio");
    scenario.write_to(&scenario_path)?;
    let mut initrds = vec![base];
    if real_daemon {
        let docker = work.join("docker.cpio");
        vm::build_docker_initramfs(&artifacts, &work, &docker)?;
        initrds.push(docker);
    }
    initrds.push(scenario_path);
    say(&format!(
        "booting Debian {} ({}) in QEMU with lsm=...,bpf{}",
        kernel.label,
        kernel.release,
        if real_daemon { ", dockerd 20.10 and a gitea stand-in" } else { "" }
    ));
    vm::boot(&Boot { kernel, initrds, lsm: vm::DEFAULT_LSM, timeout: Duration::from_mins(10), work, echo })
}

fn vm_shell(script: &Path, kernel_label: &str, real_daemon: bool) -> Result<()> {
    let text =
        std::fs::read_to_string(script).with_context(|| format!("cannot read {}", script.display()))?;
    let report = boot_script_with(kernel_label, &text, "shell", true, real_daemon)?;
    for (name, (rc, out)) in &report.steps {
        println!("--- step {name}: exit {rc}\n{out}");
    }
    for (name, contents) in &report.files {
        println!("--- file {name}:\n{}", contents.as_deref().unwrap_or("(missing)"));
    }
    Ok(())
}

fn verifier() -> Result<()> {
    for label in KERNEL_SERIES.iter().map(|(label, _)| *label) {
        let report =
            boot_script(label, "step verify root /usr/local/sbin/enforcer verify\n", "verifier", false)?;
        let (rc, out) = report.step("verify").cloned().unwrap_or((-1, "(did not run)".into()));
        if rc != 0 {
            bail!("enforcer verify failed on {label} (exit {rc}):\n{out}");
        }
        print!("{out}");
    }
    Ok(())
}

fn demo(kernel_label: &str) -> Result<()> {
    let report = boot_script_with(kernel_label, DEMO_SCRIPT, "demo", false, true)?;
    let step = |name: &str| report.step(name).cloned().unwrap_or((-1, "(did not run)\n".into()));
    let show = |title: &str, name: &str| {
        let (rc, out) = step(name);
        println!("\n$ {title}\n{out}[exit {rc}]");
    };
    let secret = vm_tests::fixtures::GITEA_SECRET;
    show("docker version   # the real daemon in the VM: Debian's dockerd", "dockerd-start");
    show("docker ps   # as root: the gitea stand-in, its volume holds a secret", "gitea-start");
    show("enforcer status   # as root, daemon just started", "enforcer-start");
    show("docker exec gitea cat /data/secret   # as root: the secret is there", "secret-root");
    println!("\n# --- as ai-worker (member of the docker group) ---");
    show(
        "docker exec -u git gitea gitea admin user generate-access-token -u admin   # the incident",
        "incident",
    );
    show("docker exec gitea cat /data/secret", "exec-secret");
    show("docker cp gitea:/data/secret /tmp/secret", "cp-secret");
    show("docker ps", "ps");
    show("docker run --rm --network none local/busybox echo ...   # the agent's own container", "run-own");
    show("cp /usr/bin/docker /tmp/d && /tmp/d exec gitea cat /data/secret   # a copy: another file", "copy");
    show("curl --unix-socket /var/run/docker.sock -X POST http://docker/containers/gitea/exec", "curl");
    println!("\n# --- powers argv does not show: the API gate judges each request's fields ---");
    show("enforcer status | grep routing:   # how the agent's docker reaches its gate", "routing");
    show("docker run --rm --volumes-from gitea local/busybox cat /data/secret", "volumes-from");
    show("docker run --rm -v /:/host local/busybox cat /host/root/host-secret", "host-mount");
    show("enforcer status   # as root", "status");
    let denials: Vec<&str> = report
        .file("enforcer-log")
        .unwrap_or("")
        .lines()
        .filter(|l| l.starts_with("enforcer: denied") || l.starts_with("enforcer: killed"))
        .collect();
    println!("\n# the daemon's log (journald in production):\n{}", denials.join("\n"));

    let refused = |name: &str| {
        let (rc, out) = step(name);
        rc != 0 && out.to_lowercase().contains("operation not permitted")
    };
    // The gate's refusal, as the docker CLI prints it: the rule and the field.
    let gated = |name: &str, field: &str| {
        let (rc, out) = step(name);
        rc != 0
            && out.contains("Error response from daemon: enforcer: rule \"ai-worker-docker\" refuses")
            && out.contains(field)
            && !out.contains(secret)
            && !out.contains("host-only")
    };
    let (ps_rc, _) = step("ps");
    let (own_rc, own_out) = step("run-own");
    let (root_rc, root_out) = step("secret-root");
    let (curl_rc, _) = step("curl");
    let expected = report.done
        && root_rc == 0
        && root_out.contains(secret)
        && refused("incident")
        && refused("exec-secret")
        && refused("cp-secret")
        && refused("copy")
        && curl_rc != 0
        && ps_rc == 0
        && own_rc == 0
        && own_out.contains("own container")
        && gated("volumes-from", "VolumesFrom")
        && gated("host-mount", "Binds");
    if !expected {
        bail!(
            "the demo did not go as expected; console in {}",
            target_dir().join("vm/demo/console.log").display()
        );
    }
    println!(
        "\ndemo: against the real docker daemon, the kernel refused ai-worker's docker exec and docker cp \
         (EPERM) and the copy's and curl's connections to the docker socket; the API gate refused \
         --volumes-from gitea and -v /:/host, naming the rule and the field; docker ps and the agent's own \
         docker run still work."
    );
    Ok(())
}

#[cfg(test)]
mod quiet_tests {
    use super::*;

    #[test]
    fn quiet_steps_log_their_output_and_point_to_it() {
        let dir = std::env::temp_dir().join(format!("xtask-quiet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = dir.join("setup.log");
        quiet_in(&log, "first step", Command::new("sh").args(["-c", "echo progress of the first"])).unwrap();
        let error = quiet_in(
            &log,
            "second step",
            Command::new("sh")
                .args(["-c", "echo progress; echo 'E: Unable to locate package x' >&2; exit 100"]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("second step failed"), "{error}");
        assert!(error.contains(&log.display().to_string()), "the error names the log: {error}");
        assert!(error.contains("E: Unable to locate package x"), "and quotes its end: {error}");
        assert!(!error.contains("progress of the first"), "only the failed step's lines: {error}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("==== first step") && text.contains("progress of the first"), "{text}");
        assert!(text.contains("==== second step") && text.contains("progress\n"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
