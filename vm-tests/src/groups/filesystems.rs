//! The filesystems group: vetted binaries on ext4 and tmpfs (identities from `stat()`) and
//! on overlayfs (identity from the kernel's probe), the system policy path, the
//! missing-binary warning, readiness (`READY=1` on a stand-in `NOTIFY_SOCKET`), and
//! `run --detach-on-exit`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    checks::Checks,
    step::{ENFORCER_START, Step},
    suite::{Flavour, Group},
    vm,
};

// The steps, in the order the script prints them.
const MOUNTS: Step = Step::new("mounts");
const READY_EXEC: Step = Step::new("ready-exec");
const NOTIFY: Step = Step::new("notify");
const EXT4_EXEC: Step = Step::new("ext4-exec");
const TMPFS_EXEC: Step = Step::new("tmpfs-exec");
const OVERLAY_EXEC: Step = Step::new("overlay-exec");
const EXT4_PS: Step = Step::new("ext4-ps");
const TMPFS_PS: Step = Step::new("tmpfs-ps");
const OVERLAY_PS: Step = Step::new("overlay-ps");
const UNLISTED_EXEC: Step = Step::new("unlisted-exec");
const STATUS_DETACHED: Step = Step::new("status-detached");
const EXEC_DETACHED: Step = Step::new("exec-detached");

pub(super) fn group(work: &Path, docker: &Path) -> Result<Group> {
    Ok(Group {
        name: "filesystems",
        script: script(),
        files: vec![("images/docker-ext4.img".into(), 0o644, ext4_image(work, docker)?)],
        lsm: vm::DEFAULT_LSM,
        flavour: Flavour::Initramfs,
        disk_files: vec![],
        check,
    })
}

pub(super) fn script() -> String {
    format!(
        r#"
insmod /lib/modules/loop.ko
insmod /lib/modules/overlay.ko
mkdir -p /mnt/ext4 /mnt/tmpfs /mnt/overlay
mount -t ext4 -o loop,ro /images/docker-ext4.img /mnt/ext4
mount -t tmpfs tmpfs /mnt/tmpfs
cp /usr/bin/docker /mnt/tmpfs/docker
mkdir -p /mnt/tmpfs/lower /mnt/tmpfs/upper /mnt/tmpfs/work
cp /usr/bin/docker /mnt/tmpfs/lower/docker
mount -t overlay overlay -o lowerdir=/mnt/tmpfs/lower,upperdir=/mnt/tmpfs/upper,workdir=/mnt/tmpfs/work /mnt/overlay
step {MOUNTS} root sh -c 'grep -E " /mnt/(ext4|tmpfs|overlay) " /proc/mounts'
start_mock_api
cat > /etc/enforcer/policy.toml <<'POLICY'
mode = "enforce"

[[rule]]
name = "fs"
users = ["ai-worker"]
binaries = ["/mnt/ext4/docker", "/mnt/tmpfs/docker", "/mnt/overlay/docker", "/nonexistent/docker"]
deny = ["exec"]
api_gate = false # file identities, against the argv layer
POLICY
# Readiness: READY=1 reaches the notify socket only once the policy is enforced.
/usr/local/bin/exec-helper notify-wait /tmp/notify.sock > /tmp/notify.out &
NOTIFY_PID=$!
sleep 0.5
NOTIFY_SOCKET=/tmp/notify.sock /usr/local/sbin/enforcer run -v --detach-on-exit >/tmp/enforcer.log 2>&1 &
ENFORCER_PID=$!
wait $NOTIFY_PID
step {READY_EXEC} ai-worker /mnt/ext4/docker exec gitea true
step {NOTIFY} root cat /tmp/notify.out
start_enforcer_wait
step {EXT4_EXEC} ai-worker /mnt/ext4/docker exec gitea true
step {TMPFS_EXEC} ai-worker /mnt/tmpfs/docker exec gitea true
step {OVERLAY_EXEC} ai-worker /mnt/overlay/docker exec gitea true
step {EXT4_PS} ai-worker /mnt/ext4/docker ps
step {TMPFS_PS} ai-worker /mnt/tmpfs/docker ps
step {OVERLAY_PS} ai-worker /mnt/overlay/docker ps
step {UNLISTED_EXEC} ai-worker /usr/bin/docker exec gitea true
stop_enforcer
step {STATUS_DETACHED} root /usr/local/sbin/enforcer status
step {EXEC_DETACHED} ai-worker /mnt/ext4/docker exec gitea true
report_file mock-api /tmp/mock-api.log
report_file denials /var/lib/enforcer/denials.jsonl
"#
    )
}

pub(super) fn check(c: &mut Checks) {
    c.finished();
    let (_, mounts) = c.step(MOUNTS);
    c.check(
        "docker copies on ext4, tmpfs and overlayfs",
        mounts.contains("/mnt/ext4 ext4")
            && mounts.contains("/mnt/tmpfs tmpfs")
            && mounts.contains("/mnt/overlay overlay"),
        || mounts.clone(),
    );
    let (_, notify) = c.step(NOTIFY);
    c.check("READY=1 sent to NOTIFY_SOCKET", notify.trim() == "READY=1", || notify.clone());
    c.denied(READY_EXEC);
    c.succeeded(ENFORCER_START);
    c.denied(EXT4_EXEC);
    c.denied(TMPFS_EXEC);
    c.denied(OVERLAY_EXEC);
    c.succeeded(EXT4_PS);
    c.succeeded(TMPFS_PS);
    c.succeeded(OVERLAY_PS);
    let log = c.report.file("enforcer-log").unwrap_or("").to_string();
    // The denials above prove each identity is the kernel's: a wrong one would leave the
    // exec unjudged (and then refused only at the socket, not with the command's denial).
    c.check(
        "identities: stat() on ext4 and tmpfs, the kernel's probe on overlayfs",
        log.contains("identity of /mnt/ext4/docker: stat() (ext4)")
            && log.contains("identity of /mnt/tmpfs/docker: stat() (tmpfs)")
            && log.contains("identity of /mnt/overlay/docker: the kernel's probe"),
        || log.clone(),
    );
    c.check(
        "system policy file used; missing binary is a warning with file:line",
        log.contains("/etc/enforcer/policy.toml:6:77:")
            && log.contains("binary /nonexistent/docker not found, skipped"),
        || log.clone(),
    );
    // Only listed binaries are vetted: the rootfs docker is another file, so its exec is
    // not judged, and the socket gate refuses its connection.
    c.not_refused(UNLISTED_EXEC, "an unlisted docker binary is not matched by identity");
    let (_, out) = c.step(UNLISTED_EXEC);
    c.check(
        "an unlisted docker cannot connect to the API (socket gate)",
        out.to_lowercase().contains("operation not permitted"),
        || out.clone(),
    );
    c.check(
        "per-CPU counters are exact: 7 vetted execs checked, 4 denied, unlisted binary not checked",
        log.contains("stopping (checked 7, denied 4, undecidable 0, audited 0, events dropped 0)"),
        || log.clone(),
    );
    let records = c.denial_log().1;
    let execs = records.iter().filter(|r| r["hook"] == "exec").count();
    let connects = records.iter().filter(|r| r["hook"] == "connect-unix").count();
    c.check(
        "four exec denials and the unlisted docker's refused connections logged",
        execs == 4 && connects >= 1,
        || format!("{records:#?}"),
    );
    let (rc, out) = c.step(STATUS_DETACHED);
    c.check(
        "run --detach-on-exit: after SIGTERM nothing enforces",
        rc == 1 && out.contains("enforcing: NO") && log.contains("--detach-on-exit: pins removed"),
        || format!("exit {rc}: {out}"),
    );
    c.not_refused(EXEC_DETACHED, "run --detach-on-exit: the exec runs");
}

/// An ext4 image holding a copy of docker, made without mounting (mkfs.ext4 -d).
fn ext4_image(work: &Path, docker: &Path) -> Result<PathBuf> {
    let image = work.join("docker-ext4.img");
    if image.exists() {
        return Ok(image);
    }
    let staging = work.join("ext4-root");
    std::fs::create_dir_all(&staging)?;
    std::fs::copy(docker, staging.join("docker"))?;
    let size_mib = std::fs::metadata(docker)?.len() / (1024 * 1024) + 16;
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&staging)
        .arg(&image)
        .arg(format!("{size_mib}M"))
        .status()
        .context("cannot run mkfs.ext4 (run `cargo xtask setup`)")?;
    if !status.success() {
        bail!("mkfs.ext4 failed");
    }
    std::fs::remove_dir_all(&staging)?;
    Ok(image)
}
