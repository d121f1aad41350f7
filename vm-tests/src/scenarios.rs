//! The VM scenarios: one boot per group, a shell script that runs inside the VM and only
//! observes, and host-side checks that judge what it reported.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cpio::Archive,
    vm::{self, Artifacts, Boot, Kernel, Report},
};

/// The seed blacklist of the wrapper script enforcer replaces (the default policy).
pub const SEED_DENY_LIST: &[&str] =
    &["exec", "cp", "commit", "diff", "export", "import", "load", "save", "attach", "push", "tag"];

/// One named check's outcome.
pub struct Check {
    pub name: String,
    pub failure: Option<String>,
}

/// Collects checks against one report.
pub struct Checks<'a> {
    pub report: &'a Report,
    pub artifacts: &'a Artifacts,
    pub results: Vec<Check>,
}

impl<'a> Checks<'a> {
    fn new(report: &'a Report, artifacts: &'a Artifacts) -> Self {
        Checks { report, artifacts, results: Vec::new() }
    }

    pub(crate) fn check(&mut self, name: impl Into<String>, ok: bool, detail: impl FnOnce() -> String) {
        let failure = if ok { None } else { Some(detail()) };
        self.results.push(Check { name: name.into(), failure });
    }

    pub(crate) fn step(&self, name: &str) -> (i32, String) {
        self.report.step(name).cloned().unwrap_or((-999, format!("step {name} did not run")))
    }

    /// The exec was refused by the kernel with EPERM.
    pub(crate) fn denied(&mut self, step: &str) {
        let (rc, out) = self.step(step);
        self.check(
            format!("{step}: refused with EPERM"),
            rc != 0 && out.contains("Operation not permitted"),
            || format!("exit {rc}, output: {out}"),
        );
    }

    /// The kernel let the exec through (the command may still fail on its own: the mock API
    /// answers few requests).
    pub(crate) fn not_refused(&mut self, step: &str, what: &str) {
        let (rc, out) = self.step(step);
        self.check(format!("{step}: {what}"), rc != 126 && !out.contains("Operation not permitted"), || {
            format!("exit {rc}, output: {out}")
        });
    }

    /// The kernel's re-check killed the exec (SIGKILL before its first instruction: the
    /// shell reports 128 + 9 and the program printed nothing).
    pub(crate) fn killed(&mut self, step: &str) {
        let (rc, out) = self.step(step);
        self.check(format!("{step}: killed by the re-check"), rc == 137, || {
            format!("exit {rc}, output: {out}")
        });
    }

    /// The command ran and exited 0.
    pub(crate) fn succeeded(&mut self, step: &str) {
        let (rc, out) = self.step(step);
        self.check(format!("{step}: succeeds"), rc == 0, || format!("exit {rc}, output: {out}"));
    }

    /// The mock API log lines from `uid`.
    pub(crate) fn api_requests(&self, uid: u32) -> Vec<String> {
        let prefix = format!("uid={uid} ");
        self.report
            .file("mock-api")
            .unwrap_or("")
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// The JSON denial log the VM reported (file "denials"): its text and its records.
    pub(crate) fn denial_log(&self) -> (String, Vec<serde_json::Value>) {
        let log = self.report.file("denials").unwrap_or("").to_string();
        let records = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        (log, records)
    }

    pub(crate) fn finished(&mut self) {
        let done = self.report.done;
        let tail: String = {
            let lines: Vec<&str> = self.report.console.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        self.check("scenario ran to completion", done, || format!("console tail:\n{tail}"));
    }
}

/// The kinds of VM a group can boot (docs/development.md says which group uses which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// The busybox initramfs with the mock docker API (`start_mock_api`): fast, and it
    /// logs every request with the caller's uid.
    Initramfs,
    /// The same initramfs plus Debian's real dockerd 20.10, containerd and runc
    /// (`start_dockerd` starts them and the gitea stand-in). A group opts in with this.
    RealDaemon,
    /// A Debian 12 root filesystem on NVMe with systemd as PID 1, docker.service, and the
    /// shipped unit installed; the script runs from a test unit once the system is up.
    Systemd,
}

impl Flavour {
    /// How long a boot may take before it is killed and fails with its console: several
    /// times the longest group's time under TCG on 2 loaded cores (commands: 90 s; the
    /// docker and systemd groups: 50-85 s), so that a hang costs CI minutes, not the run.
    pub fn timeout(self) -> Duration {
        match self {
            Flavour::Initramfs => Duration::from_secs(900),
            Flavour::RealDaemon | Flavour::Systemd => Duration::from_secs(480),
        }
    }
}

/// A group of scenarios sharing one boot.
pub struct Group {
    pub name: &'static str,
    pub script: String,
    /// Extra files for the VM (path, mode, contents), put in the scenario's archive.
    pub files: Vec<(String, u32, PathBuf)>,
    pub lsm: &'static str,
    /// Which VM the group boots.
    pub flavour: Flavour,
    pub check: fn(&mut Checks),
}

fn default_policy_script() -> String {
    let mut script = String::from(
        r#"
start_dockerd
# A broken policy and an unknown user are refused before anything is attached.
printf '[[rule]]\nname = "r"\nusers = ["ai-worker"]\ndeny = ["exec", "exce"]\n' > /tmp/bad.toml
step bad-policy root /usr/local/sbin/enforcer run --config /tmp/bad.toml
printf '[[rule]]\nname = "r"\nusers = ["no-such-user"]\ndeny = ["exec"]\n' > /tmp/unknown-user.toml
step unknown-user root /usr/local/sbin/enforcer run --config /tmp/unknown-user.toml
step status-before root /usr/local/sbin/enforcer status --json

start_enforcer
# The real daemon's debug log has one "Calling METHOD PATH" line per API request: what
# ai-worker's commands sent is the part written from here on, until root's turn below.
API_START=$(wc -c < /tmp/dockerd.log)
step incident ai-worker docker exec -u git gitea gitea admin user generate-access-token -u admin
step exec-secret ai-worker docker exec gitea cat /data/secret
step cp-secret ai-worker docker cp gitea:/data/secret /tmp/secret
step exec-marker ai-worker docker exec gitea sh -c 'echo ai-worker > /data/worker-was-here'
step exec-absolute ai-worker /usr/bin/docker exec gitea true
ln -s /usr/bin/docker /tmp/dk
step exec-symlink ai-worker /tmp/dk exec gitea true
step exec-sh ai-worker sh -c 'docker exec gitea true'
step exec-relative ai-worker sh -c 'cd /usr/bin && ./docker exec gitea true'
mkdir -p /tmp/evil-bin && ln -s /usr/bin/docker /tmp/evil-bin/docker
step exec-path-order ai-worker sh -c 'PATH=/tmp/evil-bin:/usr/bin docker exec gitea true'
step exec-env ai-worker env docker exec gitea true
step exec-procfd ai-worker sh -c 'exec 3</usr/bin/docker; exec /proc/self/fd/3 exec gitea true'
step exec-globals ai-worker docker -D --log-level=debug -H unix:///run/docker.sock exec gitea true
step exec-fexecve ai-worker /usr/local/bin/exec-helper fexecve /usr/bin/docker docker exec gitea true
step exec-execveat ai-worker /usr/local/bin/exec-helper execveat /usr/bin docker docker exec gitea true
step exec-int80 ai-worker /usr/local/bin/exec-helper int80 /usr/bin/docker docker exec gitea true
step int80-other-binary ai-worker /usr/local/bin/exec-helper int80 /bin/ls ls /
printf '#!/usr/bin/docker\n' > /tmp/docker-script
chmod 755 /tmp/docker-script
step exec-as-interpreter ai-worker /tmp/docker-script
step unprivileged bob /usr/local/sbin/enforcer run
step other-binary ai-worker ls /
step fexecve-ps ai-worker /usr/local/bin/exec-helper fexecve /usr/bin/docker docker ps
step ps ai-worker docker ps
step version ai-worker docker version
step ps-lookalike ai-worker docker ps --filter name=exec
step version-flag ai-worker docker --version
# The engine's limits, in the kernel: 63 options then the command is decided, 64 are not.
step globals-63 ai-worker docker $(for i in $(seq 63); do printf -- '-D '; done) ps
step globals-64 ai-worker docker $(for i in $(seq 64); do printf -- '-D '; done) ps
step unknown-global ai-worker docker --frobnicate ps
step long-command ai-worker docker $(for i in $(seq 300); do printf x; done)
step long-argv ai-worker docker exec gitea $(seq 1000 1200)
"#,
    );
    for command in SEED_DENY_LIST {
        script.push_str(&format!("step blocked-{command} ai-worker docker {command} gitea /tmp/x\n"));
    }
    script.push_str(
        r#"
tail -c +$((API_START + 1)) /tmp/dockerd.log > /tmp/api-worker.log
step root-exec root docker exec gitea cat /data/secret
step marker-absent root docker exec gitea sh -c 'test ! -e /data/worker-was-here'
step other-exec bob docker exec gitea true
# The agent's own containers still run.
step run-own ai-worker docker run --rm --network none local/busybox echo own-container-ran
step ps-all ai-worker docker ps -a --format '{{.Names}}'
step status root /usr/local/sbin/enforcer status --json --limit 100
step status-table root /usr/local/sbin/enforcer status --limit 100
step status-limit root /usr/local/sbin/enforcer status --json --limit 2
step status-unprivileged bob /usr/local/sbin/enforcer status
step container-exec ai-worker docker container exec gitea true
step compose-exec ai-worker docker compose exec gitea sh
step check-cli root /usr/local/sbin/enforcer check --user ai-worker -- docker -D container exec -it web sh
step verify root /usr/local/sbin/enforcer verify
stop_enforcer
step exec-after-sigterm ai-worker docker exec gitea true
step detach root /usr/local/sbin/enforcer stop
step status-after root /usr/local/sbin/enforcer status --json --limit 100
step exec-after-stop ai-worker docker exec gitea cat /data/secret
report_file api-worker /tmp/api-worker.log
report_file denials /var/lib/enforcer/denials.jsonl
stop_dockerd
"#,
    );
    script
}

/// Steps of the default-policy group that exceed the engine's limits, and the reason the
/// kernel must log. (`long-argv` is decided: exec comes first; its log is cut.)
const LIMIT_DENIALS: &[(&str, &str)] = &[
    ("globals-64", "too_many_args"),
    ("unknown-global", "unknown_global_option"),
    ("long-command", "command_too_long"),
    ("long-argv", "command"),
];

const KILLED_SPELLINGS: &[&str] = &["exec-as-interpreter", "exec-int80"];

fn check_default_policy(c: &mut Checks) {
    c.finished();
    let (rc, out) = c.step("bad-policy");
    c.check(
        "broken policy rejected with file:line, exit 65 (a policy error)",
        rc == 65 && out.contains("/tmp/bad.toml:4:17: unknown docker command \"exce\""),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step("unknown-user");
    c.check(
        "unknown user rejected, exit 65",
        rc == 65 && out.contains("unknown user \"no-such-user\""),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step("status-before");
    c.check(
        "status before start: not enforcing, exit 1",
        rc == 1 && out.contains("\"enforcing\": false"),
        || format!("exit {rc}: {out}"),
    );
    c.succeeded("enforcer-start");

    let (rc, out) = c.step("dockerd-start");
    c.check("the real dockerd answers (20.10)", rc == 0 && out.trim().starts_with("20.10"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step("gitea-start");
    c.check("root created the gitea container", rc == 0 && out.contains("gitea local/busybox Up"), || {
        format!("exit {rc}: {out}")
    });

    const DENIED_SPELLINGS: &[&str] = &[
        "incident",
        "exec-secret",
        "cp-secret",
        "exec-marker",
        "exec-absolute",
        "exec-symlink",
        "exec-sh",
        "exec-relative",
        "exec-path-order",
        "exec-env",
        "exec-procfd",
        "exec-globals",
        "exec-fexecve",
        "exec-execveat",
        "container-exec",
        "compose-exec",
    ];
    for step in DENIED_SPELLINGS {
        c.denied(step);
    }
    // argv only the re-check can see (rewritten by `#!`, or passed through the 32-bit
    // entry): decided on the kernel's copy, killed past the point of no return.
    for step in KILLED_SPELLINGS {
        c.killed(step);
    }
    c.succeeded("other-binary");
    c.succeeded("version-flag");
    c.succeeded("globals-63");
    for step in LIMIT_DENIALS.iter().map(|(step, _)| step) {
        c.denied(step);
    }
    c.succeeded("int80-other-binary");
    c.succeeded("fexecve-ps");
    let (rc, out) = c.step("unprivileged");
    c.check(
        "unprivileged start fails and says what privilege is needed",
        rc != 0 && out.contains("needs root"),
        || format!("exit {rc}: {out}"),
    );
    for command in SEED_DENY_LIST {
        c.denied(&format!("blocked-{command}"));
    }
    c.succeeded("ps");
    c.succeeded("ps-lookalike");
    c.succeeded("version");
    let (_, out) = c.step("version");
    c.check(
        "docker version reached the real daemon",
        out.contains("Server") && out.contains("20.10"),
        || out.clone(),
    );

    let worker = daemon_calls(c.report.file("api-worker").unwrap_or(""));
    let leaked: Vec<&String> = worker
        .iter()
        .filter(|r| !(r.ends_with("/_ping") || r.ends_with("/version") || r.contains("/containers/json")))
        .collect();
    c.check(
        "ai-worker's denied commands never reached the daemon (only ping, version, ps did)",
        leaked.is_empty() && worker.iter().any(|r| r.contains("/containers/json")),
        || format!("requests while ai-worker ran: {worker:?}"),
    );
    let (rc, out) = c.step("root-exec");
    c.check(
        "root's docker exec runs in the container (reads the secret)",
        rc == 0 && out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
    c.succeeded("marker-absent");
    c.succeeded("other-exec");
    let (rc, out) = c.step("run-own");
    c.check("ai-worker's own docker run --rm works", rc == 0 && out.contains("own-container-ran"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step("ps-all");
    c.check(
        "ai-worker's docker ps -a lists gitea, and the --rm container is gone",
        rc == 0 && out.trim() == "gitea",
        || format!("exit {rc}: {out}"),
    );

    let (rc, out) = c.step("status");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    c.check("status --json: enforcing", rc == 0 && status["enforcing"] == true, || {
        format!("exit {rc}: {out}")
    });
    let denials = status["denials"].as_array().cloned().unwrap_or_default();
    let incident = denials
        .iter()
        .find(|d| d["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == "generate-access-token")));
    c.check(
        "status --json lists the incident's denial",
        incident.is_some_and(|d| {
            d["user"] == "ai-worker"
                && d["uid"] == 1001
                && d["command"] == "container exec"
                && d["rule"] == "ai-worker-docker"
                && d["reason"] == "command"
                && d["action"] == "denied"
                && d["binary"] == "/usr/bin/docker"
                && d["argv"][0] == "docker"
                && d["argv"].as_array().map(|a| a.len()) == Some(11)
        }),
        || format!("denials: {denials:#?}"),
    );
    let (_, limited) = c.step("status-limit");
    let limited: serde_json::Value = serde_json::from_str(&limited).unwrap_or_default();
    c.check(
        "status --limit 2 shows the two most recent denials",
        limited["denials"].as_array().is_some_and(|d| {
            d.len() == 2 && d[1]["command"] == "image tag" && d[0]["command"] == "image push"
        }),
        || format!("{limited:#}"),
    );
    let (rc, out) = c.step("status-unprivileged");
    c.check(
        "status without privilege fails instead of claiming anything",
        rc != 0 && out.contains("run as root"),
        || format!("exit {rc}: {out}"),
    );
    let (_, table) = c.step("status-table");
    c.check(
        "status table shows enforcing and the denial",
        table.contains("enforcing: yes") && table.contains("generate-access-token"),
        || table.clone(),
    );

    let (log, records) = c.denial_log();
    // exec-path-order is two denials: the shell tries each PATH entry, and both are docker;
    // exec-after-sigterm is one more, logged by nobody (the daemon is gone) but counted.
    let expected =
        DENIED_SPELLINGS.len() + KILLED_SPELLINGS.len() + SEED_DENY_LIST.len() + LIMIT_DENIALS.len() + 1;
    c.check(format!("JSON log has one record per denial ({expected})"), records.len() == expected, || {
        format!("{} records:\n{log}", records.len())
    });
    c.check(
        "JSON log records carry uid, user, pid, binary, argv, rule, reason, time",
        !records.is_empty()
            && records.iter().all(|r| {
                r["uid"] == 1001
                    && r["user"] == "ai-worker"
                    && r["pid"].as_u64().is_some_and(|p| p > 1)
                    && r["binary"] == "/usr/bin/docker"
                    && r["argv"].is_array()
                    && r["rule"] == "ai-worker-docker"
                    && r["reason"].is_string()
                    && r["time"].as_str().is_some_and(|t| t.ends_with('Z'))
            }),
        || log.clone(),
    );
    let paths: Vec<&str> = records.iter().filter_map(|r| r["path"].as_str()).collect();
    c.check(
        "the log keeps the path each denial was called by",
        paths.contains(&"/tmp/dk")
            && paths.iter().any(|p| p.starts_with("/proc/self/fd/"))
            && paths.iter().any(|p| p.starts_with("/dev/fd/")),
        || format!("{paths:?}"),
    );
    let interpreter =
        records.iter().find(|r| r["argv"].get(1) == Some(&serde_json::json!("/tmp/docker-script")));
    c.check(
        "docker as a #! interpreter is judged on the argv it receives (the script path: unknown command)",
        interpreter.is_some_and(|r| {
            r["reason"] == "unknown_command"
                && r["hook"] == "exec-recheck"
                && r["action"] == "killed"
                && r["race"] == false
        }),
        || log.clone(),
    );
    for (step, reason) in LIMIT_DENIALS {
        c.check(
            format!("{step}: logged with reason {reason}"),
            records.iter().any(|r| r["reason"] == *reason),
            || log.clone(),
        );
    }
    let long = records.iter().find(|r| r["argv"].get(3) == Some(&serde_json::json!("1000")));
    c.check(
        "a long argv is logged truncated, with its start",
        long.is_some_and(|r| {
            r["argv_truncated"] == true
                && r["command"] == "container exec"
                && r["argv"].as_array().is_some_and(|a| a.len() > 50 && a.len() < 203)
        }),
        || format!("{long:?}"),
    );
    let compat = records.iter().find(|r| r["hook"] == "exec-recheck" && r["command"] == "container exec");
    c.check(
        "the i386 execve is judged on the kernel's copy of argv (container exec, killed)",
        compat.is_some_and(|r| r["action"] == "killed"),
        || log.clone(),
    );

    let daemon_log = c.report.file("enforcer-log").unwrap_or("").to_string();
    c.check("daemon logs one structured line per denial", daemon_log.lines().filter(|l| (l.starts_with("enforcer: denied hook=exec ") || l.starts_with("enforcer: killed hook=exec-recheck ")) && l.contains(" uid=1001 user=ai-worker ")).count() == expected
        && daemon_log.contains("rule=\"ai-worker-docker\" reason=command command=\"container exec\" binary=/usr/bin/docker argv=[\"docker\",\"exec\",\"-u\""), || daemon_log.clone());
    let (rc, _) = c.step("enforcer-exit");
    c.check("daemon exits 0 on SIGTERM", rc == 0, || format!("exit {rc}"));
    c.denied("exec-after-sigterm");
    let (rc, out) = c.step("check-cli");
    c.check(
        "enforcer check prints the verdict, rule and canonical command, exit 1 for deny",
        rc == 1
            && out.contains("verdict: deny")
            && out.contains("rule: ai-worker-docker")
            && out.contains("command: container exec"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step("verify");
    c.check(
        "enforcer verify prints the verifier's instruction count per program",
        rc == 0 && out.contains("enforcer_bprm: verified, ") && out.contains("instructions processed"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step("detach");
    c.check("enforcer stop detaches", rc == 0 && out.contains("nothing enforces now"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step("status-after");
    c.check(
        "status after stop: not enforcing, exit 1, history kept",
        rc == 1 && out.contains("\"enforcing\": false") && out.contains("generate-access-token"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step("exec-after-stop");
    c.check(
        "after stop nothing is enforced: ai-worker's exec runs (reads the secret)",
        rc == 0 && out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
}

/// What `start_dockerd` (vm-tests/vm/helpers.sh) writes into the gitea container's volume.
pub const GITEA_SECRET: &str = "gitea-admin-token-s3cret";

/// The API requests in a dockerd debug log: "METHOD PATH" per `Calling METHOD PATH` line,
/// the API version prefix removed ("POST /containers/gitea/exec").
pub fn daemon_calls(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("msg=\"Calling ").map(|(_, rest)| rest.trim_end_matches('"')))
        .map(|call| {
            let (method, path) = call.split_once(' ').unwrap_or((call, ""));
            let path = match path.strip_prefix("/v1.") {
                Some(rest) => rest.find('/').map_or(path, |i| &rest[i..]),
                None => path,
            };
            format!("{method} {path}")
        })
        .collect()
}

fn filesystems_script() -> String {
    r#"
insmod /lib/modules/loop.ko
mkdir -p /mnt/ext4 /mnt/tmpfs
mount -t ext4 -o loop,ro /images/docker-ext4.img /mnt/ext4
mount -t tmpfs tmpfs /mnt/tmpfs
cp /usr/bin/docker /mnt/tmpfs/docker
step mounts root sh -c 'grep -E " /mnt/(ext4|tmpfs) " /proc/mounts'
start_mock_api
cat > /etc/enforcer/policy.toml <<'POLICY'
mode = "enforce"

[[rule]]
name = "fs"
users = ["ai-worker"]
binaries = ["/mnt/ext4/docker", "/mnt/tmpfs/docker", "/nonexistent/docker"]
deny = ["exec"]
POLICY
# Readiness: READY=1 reaches the notify socket only once the policy is enforced.
/usr/local/bin/exec-helper notify-wait /tmp/notify.sock > /tmp/notify.out &
NOTIFY_PID=$!
sleep 0.5
NOTIFY_SOCKET=/tmp/notify.sock /usr/local/sbin/enforcer run --detach-on-exit >/tmp/enforcer.log 2>&1 &
ENFORCER_PID=$!
wait $NOTIFY_PID
step ready-exec ai-worker /mnt/ext4/docker exec gitea true
step notify root cat /tmp/notify.out
start_enforcer_wait
step ext4-exec ai-worker /mnt/ext4/docker exec gitea true
step tmpfs-exec ai-worker /mnt/tmpfs/docker exec gitea true
step ext4-ps ai-worker /mnt/ext4/docker ps
step tmpfs-ps ai-worker /mnt/tmpfs/docker ps
step unlisted-exec ai-worker /usr/bin/docker exec gitea true
stop_enforcer
step status-detached root /usr/local/sbin/enforcer status
step exec-detached ai-worker /mnt/ext4/docker exec gitea true
report_file mock-api /tmp/mock-api.log
report_file denials /var/lib/enforcer/denials.jsonl
"#
    .to_string()
}

fn check_filesystems(c: &mut Checks) {
    c.finished();
    let (_, mounts) = c.step("mounts");
    c.check(
        "docker copies on ext4 and tmpfs",
        mounts.contains("/mnt/ext4 ext4") && mounts.contains("/mnt/tmpfs tmpfs"),
        || mounts.clone(),
    );
    let (_, notify) = c.step("notify");
    c.check("READY=1 sent to NOTIFY_SOCKET", notify.trim() == "READY=1", || notify.clone());
    c.denied("ready-exec");
    c.succeeded("enforcer-start");
    c.denied("ext4-exec");
    c.denied("tmpfs-exec");
    c.succeeded("ext4-ps");
    c.succeeded("tmpfs-ps");
    let log = c.report.file("enforcer-log").unwrap_or("").to_string();
    c.check(
        "system policy file used; missing binary is a warning with file:line",
        log.contains("/etc/enforcer/policy.toml:6:54:")
            && log.contains("binary /nonexistent/docker not found, skipped"),
        || log.clone(),
    );
    // Only listed binaries are vetted: the rootfs docker is another file, so its exec is
    // not judged, and the socket gate refuses its connection.
    c.not_refused("unlisted-exec", "an unlisted docker binary is not matched by identity");
    let (_, out) = c.step("unlisted-exec");
    c.check(
        "an unlisted docker cannot connect to the API (socket gate)",
        out.to_lowercase().contains("operation not permitted"),
        || out.clone(),
    );
    c.check(
        "per-CPU counters are exact: 5 vetted execs checked, 3 denied, unlisted binary not checked",
        log.contains("stopping (checked 5, denied 3, undecidable 0, audited 0, events dropped 0)"),
        || log.clone(),
    );
    let records = c.denial_log().1;
    let execs = records.iter().filter(|r| r["hook"] == "exec").count();
    let connects = records.iter().filter(|r| r["hook"] == "connect-unix").count();
    c.check(
        "three exec denials and the unlisted docker's refused connections logged",
        execs == 3 && connects >= 1,
        || format!("{records:#?}"),
    );
    let (rc, out) = c.step("status-detached");
    c.check(
        "run --detach-on-exit: after SIGTERM nothing enforces",
        rc == 1 && out.contains("enforcing: NO") && log.contains("--detach-on-exit: pins removed"),
        || format!("exit {rc}: {out}"),
    );
    c.not_refused("exec-detached", "run --detach-on-exit: the exec runs");
}

fn audit_mode_script() -> String {
    r#"
start_mock_api
cat > /tmp/audit.toml <<'POLICY'
mode = "audit"

[[rule]]
name = "watch-only"
users = ["ai-worker"]
deny = ["exec"]
POLICY
start_enforcer --config /tmp/audit.toml
step audit-exec ai-worker docker exec gitea true
step audit-ps ai-worker docker ps
step audit-undecidable ai-worker docker --no-such-flag ps
step audit-int80-exec ai-worker /usr/local/bin/exec-helper int80 /usr/bin/docker docker exec gitea int80
step status root /usr/local/sbin/enforcer status --json
# `enforcer stop` with the daemon running: it removes the pins and exits with 3.
step stop-running root /usr/local/sbin/enforcer stop
wait $ENFORCER_PID
echo "@@step daemon-exit-after-stop $? $(echo | base64 -w 0)"
step status-after-stop root /usr/local/sbin/enforcer status
report_file enforcer-log /tmp/enforcer.log
report_file mock-api /tmp/mock-api.log
report_file denials /var/lib/enforcer/denials.jsonl
"#
    .to_string()
}

fn check_audit_mode(c: &mut Checks) {
    c.finished();
    c.succeeded("enforcer-start");
    let (rc, out) = c.step("stop-running");
    c.check(
        "enforcer stop with the daemon running: the daemon removes the pins and exits",
        rc == 0 && out.contains("removed the pins and exited"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, _) = c.step("daemon-exit-after-stop");
    c.check("the detached daemon exits with 3 (systemd: no restart)", rc == 3, || format!("exit {rc}"));
    let (rc, out) = c.step("status-after-stop");
    c.check("status after enforcer stop: NO, exit 1", rc == 1 && out.contains("enforcing: NO"), || {
        format!("exit {rc}: {out}")
    });
    c.not_refused("audit-exec", "audit mode denies nothing");
    let worker = c.api_requests(vm::AI_WORKER_UID);
    c.check(
        "audited exec reaches the API",
        worker.iter().any(|r| r.contains("/containers/gitea/exec")),
        || format!("{worker:?}"),
    );
    c.succeeded("audit-ps");
    let (log, records) = c.denial_log();
    c.check(
        "the would-be denial is recorded as audited",
        records.len() == 3
            && records[0]["action"] == "audited"
            && records[0]["command"] == "container exec"
            && records[0]["rule"] == "watch-only",
        || log.clone(),
    );
    c.not_refused("audit-undecidable", "audit mode denies nothing");
    c.check(
        "an undecidable exec is audited too, with its reason",
        records.get(1).is_some_and(|r| {
            r["action"] == "audited" && r["reason"] == "unknown_global_option" && r["command"].is_null()
        }),
        || log.clone(),
    );
    let (rc, out) = c.step("audit-int80-exec");
    c.check("audit mode: the re-check kills nothing", rc != 137, || format!("exit {rc}: {out}"));
    c.check(
        "audit mode: an exec only the re-check sees is audited by it",
        records.get(2).is_some_and(|r| {
            r["action"] == "audited" && r["hook"] == "exec-recheck" && r["command"] == "container exec"
        }),
        || log.clone(),
    );
    let daemon_log = c.report.file("enforcer-log").unwrap_or("").to_string();
    c.check(
        "daemon logs one structured line for it",
        daemon_log.contains("enforcer: audited hook=exec uid=1001 user=ai-worker")
            && daemon_log.contains("command=\"container exec\""),
        || daemon_log.clone(),
    );
}

fn no_bpf_lsm_script() -> String {
    "step run-without-bpf-lsm root /usr/local/sbin/enforcer run\nstep status root /usr/local/sbin/enforcer status\n".to_string()
}

fn check_no_bpf_lsm(c: &mut Checks) {
    c.finished();
    let (rc, out) = c.step("run-without-bpf-lsm");
    c.check(
        "refuses to start without the BPF LSM, and says how to fix it",
        rc != 0 && out.contains("the BPF LSM is not active") && out.contains("lsm="),
        || format!("exit {rc}: {out}"),
    );
    let (rc, _) = c.step("status");
    c.check("status exits non-zero when nothing enforces", rc != 0, || format!("exit {rc}"));
}

/// The differential corpus: `<verdict>\t<args after docker>` per line.
pub const CORPUS: &str = include_str!("../corpus/argv.txt");

/// Splits a corpus line's arguments: words separated by spaces, a word may be
/// single-quoted (`''` is an empty word, `'a b'` one word with a space).
pub fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                }
                in_word = false;
            }
            _ => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The corpus lines that are not comments: (line number, expected verdict, arguments).
pub fn corpus() -> Vec<(usize, String, String)> {
    CORPUS
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
        .map(|(i, l)| {
            let (verdict, args) = l.split_once('\t').unwrap_or((l, ""));
            (i + 1, verdict.to_string(), args.to_string())
        })
        .collect()
}

fn commands_script() -> String {
    r#"
start_mock_api
# A standalone docker-compose in PATH: found and vetted by the default policy, with the
# compose client profile. (A copy of the docker CLI under that name: the kernel judges the
# exec, whatever the program does after.)
cp /usr/bin/docker /usr/local/bin/docker-compose
start_enforcer
step dc-exec ai-worker docker-compose exec web sh
step dc-flags-cp ai-worker docker-compose -f /tmp/x.yml cp web:/a /tmp/b
step dc-plugin-form ai-worker docker-compose compose exec web sh
step dc-ps ai-worker docker-compose ps
step image-push ai-worker docker image push gitea
step dial-stdio ai-worker docker system dial-stdio
step container-help-exec ai-worker docker container --help exec gitea true
# The differential corpus: every line run for real as ai-worker against the mock API.
n=0
while IFS= read -r line; do
    n=$((n + 1))
    case "$line" in '#'*|'') continue ;; esac
    args=${line#*	}
    eval "set -- $args"
    timeout -s KILL 20 $SETPRIV --reuid=ai-worker --regid=ai-worker --init-groups --reset-env /usr/bin/docker "$@" </dev/null >/tmp/line.out 2>&1
    rc=$?
    if [ $rc -eq 126 ] && grep -q "Operation not permitted" /tmp/line.out; then v=deny; else v=allow; fi
    echo "@@verdict $n $v $rc"
done < /corpus/argv.txt
step status root /usr/local/sbin/enforcer status --json --limit 1000
stop_enforcer
report_file mock-api /tmp/mock-api.log
report_file denials /var/lib/enforcer/denials.jsonl
"#
    .to_string()
}

/// `enforcer check` on the host for one line: "allow", "deny" or "undecidable".
fn host_verdict(enforcer: &Path, policy: &Path, args: &[String]) -> String {
    let output = Command::new(enforcer)
        .args(["check", "--user", "ai-worker", "--config"])
        .arg(policy)
        .arg("--")
        .arg("docker")
        .args(args)
        .output();
    match output.map(|o| o.status.code()) {
        Ok(Some(0)) => "allow".into(),
        Ok(Some(1)) => "deny".into(),
        Ok(Some(2)) => "undecidable".into(),
        other => format!("error {other:?}"),
    }
}

fn check_commands(c: &mut Checks) {
    c.finished();
    c.succeeded("enforcer-start");
    for step in
        ["dc-exec", "dc-flags-cp", "dc-plugin-form", "image-push", "dial-stdio", "container-help-exec"]
    {
        c.denied(step);
    }
    c.not_refused("dc-ps", "docker-compose ps is allowed");

    let kernel: std::collections::BTreeMap<usize, String> = c
        .report
        .console
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("@@verdict ")? + "@@verdict ".len()..];
            let mut fields = rest.split_whitespace();
            Some((fields.next()?.parse().ok()?, fields.next()?.to_string()))
        })
        .collect();
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../enforcer/src/default-policy.toml");
    let lines = corpus();
    c.check(format!("the corpus has at least 200 lines ({})", lines.len()), lines.len() >= 200, String::new);
    let mut mismatches = Vec::new();
    let mut unexpected = Vec::new();
    for (number, expected, args) in &lines {
        let words = split_words(args);
        let host = host_verdict(&c.artifacts.enforcer, &policy, &words);
        if &host != expected {
            unexpected
                .push(format!("line {number}: docker {args}: check says {host}, corpus says {expected}"));
        }
        // The kernel denies both deny and undecidable with EPERM.
        let host_kernel_view = if host == "allow" { "allow" } else { "deny" };
        match kernel.get(number) {
            Some(seen) if seen == host_kernel_view => {}
            seen => mismatches.push(format!("line {number}: docker {args}: check {host}, kernel {seen:?}")),
        }
    }
    c.check(
        format!("enforcer check and the kernel agree on all {} corpus lines", lines.len()),
        mismatches.is_empty(),
        || mismatches.join("\n"),
    );
    c.check(
        "enforcer check gives the corpus's expected verdict on every line",
        unexpected.is_empty(),
        || unexpected.join("\n"),
    );
    let worker = c.api_requests(vm::AI_WORKER_UID);
    // Endpoints only the denied commands use (exec, cp, push, commit, export, attach).
    let leaked: Vec<&String> = worker
        .iter()
        .filter(|r| {
            let path = r.split('?').next().unwrap_or(r);
            ["/exec", "/archive", "/push", "/commit", "/export", "/attach", "/attach/ws"]
                .iter()
                .any(|e| path.ends_with(e))
        })
        .collect();
    c.check("no denied corpus command reached the API", leaked.is_empty(), || format!("{leaked:?}"));
}

fn daemon_script() -> String {
    r#"
start_dockerd
cat > /tmp/policy.toml <<'POLICY'
[[rule]]
name = "agent"
users = ["ai-worker"]
deny = ["exec", "cp"]
POLICY
cp /tmp/policy.toml /tmp/good.toml
DAEMON_ARGS="--config /tmp/policy.toml --log-max-bytes 20000 --log-keep 2"
start_enforcer $DAEMON_ARGS
step first-exec ai-worker docker exec gitea true
step status-running root /usr/local/sbin/enforcer status --json
# A second daemon is refused while one runs, and leaves the first one's control socket.
step second-daemon root /usr/local/sbin/enforcer run $DAEMON_ARGS
step status-after-second root /usr/local/sbin/enforcer status --json --limit 0
# The daemon dies hard: the pinned programs keep enforcing.
kill -9 $ENFORCER_PID
wait $ENFORCER_PID 2>/dev/null
step killed-exec ai-worker docker exec gitea queued-while-down
step status-down root /usr/local/sbin/enforcer status --json
step status-down-table root /usr/local/sbin/enforcer status
mv /tmp/enforcer.log /tmp/enforcer-first.log
start_enforcer $DAEMON_ARGS
step status-adopted root /usr/local/sbin/enforcer status --json --limit 100
step status-user-bob root /usr/local/sbin/enforcer status --json --user bob
step status-user-worker root /usr/local/sbin/enforcer status --json --user ai-worker --since 1h
step status-since-future root /usr/local/sbin/enforcer status --json --since 2999-01-01T00:00:00Z
# Live view: followers with filters, then a denial; each follower shows it once (its backlog
# or the stream, whichever it lands in), and the filtered one never.
E=/usr/local/sbin/enforcer
$E status --follow --json --limit 100 --user ai-worker >/tmp/follow.jsonl 2>/tmp/follow.err &
FOLLOW_JSON=$!
$E status --follow --limit 100 >/tmp/follow.txt 2>&1 &
FOLLOW_TABLE=$!
$E status --follow --limit 100 --user bob >/tmp/follow-bob.txt 2>&1 &
FOLLOW_BOB=$!
step follow-exec ai-worker docker exec gitea follow-live
i=0
while [ $i -lt 300 ] && ! { grep -q follow-live /tmp/follow.jsonl && grep -q follow-live /tmp/follow.txt; }; do sleep 0.1; i=$((i + 1)); done
kill $FOLLOW_JSON $FOLLOW_TABLE $FOLLOW_BOB
report_file follow-json /tmp/follow.jsonl
report_file follow-table /tmp/follow.txt
report_file follow-bob /tmp/follow-bob.txt
# Metrics: the same counters as status, on stdout, in a textfile and on a local listener.
step metrics-status root $E status --json --limit 0
step metrics root $E metrics
mkdir -p /tmp/textfile
step metrics-textfile root $E metrics --textfile /tmp/textfile/enforcer.prom
report_file metrics-prom /tmp/textfile/enforcer.prom
ifconfig lo 127.0.0.1 up
$E metrics --listen 127.0.0.1:9477 >/tmp/metrics-listen.log 2>&1 &
METRICS_PID=$!
i=0
while [ $i -lt 100 ] && ! curl -s -o /dev/null http://127.0.0.1:9477/metrics; do sleep 0.1; i=$((i + 1)); done
step metrics-http root curl -sS -i http://127.0.0.1:9477/metrics
step metrics-listen-taken root $E metrics --listen 127.0.0.1:9477
kill $METRICS_PID
# A broken policy is rejected by reload; the policy in force stays.
printf '[[rule]]\nname = "agent"\nusers = ["ai-worker"]\ndeny = ["exec", "pss"]\n' > /tmp/policy.toml
step reload-broken root /usr/local/sbin/enforcer reload
step exec-after-broken ai-worker docker exec gitea true
step ps-after-broken ai-worker docker ps
# A reload that adds a denied command takes effect for the next exec.
printf '[[rule]]\nname = "agent"\nusers = ["ai-worker"]\ndeny = ["exec", "cp", "ps"]\n' > /tmp/policy.toml
step reload-good root /usr/local/sbin/enforcer reload
step ps-after-reload ai-worker docker ps
# SIGHUP reloads too (back to the first policy).
cp /tmp/good.toml /tmp/policy.toml
kill -HUP $ENFORCER_PID
i=0
while [ $i -lt 300 ] && [ "$(grep -c 'enforcer: reloaded' /tmp/enforcer.log)" -lt 2 ]; do sleep 0.1; i=$((i + 1)); done
step ps-after-hup ai-worker docker ps
step status-before-storm root /usr/local/sbin/enforcer status --json --limit 0
step storm ai-worker /usr/local/bin/exec-helper storm 10000 /usr/bin/docker docker exec gitea storm
# Let the daemon drain the ring buffer: wait until its log stops growing.
last=-1
while [ "$(wc -c < /tmp/enforcer.log)" != "$last" ]; do last=$(wc -c < /tmp/enforcer.log); sleep 2; done
step status-after-storm root /usr/local/sbin/enforcer status --json --limit 0
step logs root ls -l /var/lib/enforcer
stop_enforcer
step exec-after-sigterm ai-worker docker exec gitea true
step detach root /usr/local/sbin/enforcer stop
step status-stopped root /usr/local/sbin/enforcer status
step exec-after-stop ai-worker docker exec gitea cat /data/secret
report_file enforcer-first-log /tmp/enforcer-first.log
report_file denials /var/lib/enforcer/denials.jsonl
report_file denials-1 /var/lib/enforcer/denials.jsonl.1
report_file denials-2 /var/lib/enforcer/denials.jsonl.2
report_file denials-3 /var/lib/enforcer/denials.jsonl.3
stop_dockerd
"#
    .to_string()
}

pub(crate) fn json_step(c: &Checks, step: &str) -> (i32, serde_json::Value, String) {
    let (rc, out) = c.step(step);
    (rc, serde_json::from_str(&out).unwrap_or_default(), out)
}

fn check_daemon(c: &mut Checks) {
    c.finished();
    c.succeeded("enforcer-start");
    c.denied("first-exec");
    let (rc, status, out) = json_step(c, "status-running");
    c.check(
        "status: enforcing, daemon running, kernel, LSMs, policy digest, counters, per-rule counters",
        rc == 0
            && status["enforcing"] == true
            && status["daemon"]["running"] == true
            && status["enforcing_since"].is_string()
            && status["kernel"].as_str().is_some_and(|k| !k.is_empty())
            && status["lsms"].as_str().is_some_and(|l| l.contains("bpf"))
            && status["policy"]["source"] == "/tmp/policy.toml"
            && status["policy"]["digest"].as_str().is_some_and(|d| d.len() == 64)
            && status["policy"]["mode"] == "enforce"
            && status["counters"]["denied"] == 1
            && status["rules"][0]["name"] == "agent"
            && status["rules"][0]["denied"] == 1,
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step("second-daemon");
    let first = json_step(c, "status-running").1["daemon"]["pid"].clone();
    c.check(
        "a second enforcer run is refused and names the running daemon",
        rc != 0 && first.as_u64().is_some_and(|pid| out.contains(&format!("already running (pid {pid})"))),
        || format!("exit {rc}: {out}"),
    );
    let (rc, status, out) = json_step(c, "status-after-second");
    c.check(
        "after the refused second daemon, status still reaches the first",
        rc == 0 && status["daemon"]["running"] == true && status["daemon"]["pid"] == first,
        || format!("exit {rc}: {out}"),
    );
    c.denied("killed-exec");
    let (rc, status, out) = json_step(c, "status-down");
    c.check(
        "status with the daemon killed: still enforcing (exit 0), daemon not running, says so",
        rc == 0
            && status["enforcing"] == true
            && status["daemon"]["running"] == false
            && status["counters"]["denied"] == 2
            && status["notes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|x| x.as_str().unwrap_or("").contains("not running"))),
        || format!("exit {rc}: {out}"),
    );
    let (_, table) = c.step("status-down-table");
    c.check(
        "status table without the daemon",
        table.contains("enforcing: yes") && table.contains("daemon:    not running"),
        || table.clone(),
    );
    let log = c.report.file("enforcer-log").unwrap_or("").to_string();
    c.check("the restarted daemon adopts the pinned maps", log.contains("adopted the pinned maps"), || {
        log.clone()
    });
    let (rc, status, out) = json_step(c, "status-adopted");
    let denials = status["denials"].as_array().cloned().unwrap_or_default();
    c.check(
        "after restart: history kept, the denial made while the daemon was down is logged, counters kept",
        rc == 0
            && status["daemon"]["running"] == true
            && status["counters"]["denied"] == 2
            && status["enforcing_since"] == json_step(c, "status-running").1["enforcing_since"]
            && denials
                .iter()
                .any(|d| d["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == "queued-while-down"))),
        || format!("exit {rc}: {out}"),
    );
    let count = |step: &str| json_step(c, step).1["denials"].as_array().map_or(usize::MAX, Vec::len);
    let counts = (count("status-user-bob"), count("status-user-worker"), count("status-since-future"));
    c.check(
        "status --user and --since filter the denials (bob 0, ai-worker 2, future 0)",
        counts == (0, 2, 0),
        || format!("{counts:?}"),
    );
    check_follow_and_metrics(c);
    let (rc, out) = c.step("reload-broken");
    c.check(
        "reload with a broken file fails with file:line (exit 65, a policy error) and keeps the old policy",
        rc == 65
            && out.contains("/tmp/policy.toml:4:17: unknown docker command \"pss\"")
            && out.contains("unchanged"),
        || format!("exit {rc}: {out}"),
    );
    c.check(
        "the daemon logged the failed reload",
        log.contains("reload failed, the policy in force is unchanged"),
        || log.clone(),
    );
    c.denied("exec-after-broken");
    c.succeeded("ps-after-broken");
    let (rc, out) = c.step("reload-good");
    c.check("reload with a good file succeeds", rc == 0 && out.contains("in force"), || {
        format!("exit {rc}: {out}")
    });
    c.denied("ps-after-reload");
    c.succeeded("ps-after-hup");

    let (_, before, _) = json_step(c, "status-before-storm");
    let (_, after, out) = json_step(c, "status-after-storm");
    let (_, storm) = c.step("storm");
    let counter = |v: &serde_json::Value, k: &str| v["counters"][k].as_u64().unwrap_or(0);
    c.check(
        "the storm: 10,000 execs, every one refused with EPERM",
        storm.trim() == "eperm=10000 ran=0 other=0",
        || storm.clone(),
    );
    let denied = counter(&after, "denied") - counter(&before, "denied");
    let dropped = counter(&after, "events_dropped") - counter(&before, "events_dropped");
    let logged = log.matches("\"storm\"]").count() as u64;
    c.check(
        format!("counters exact after the storm: denied +{denied} (10000), logged {logged} + dropped {dropped} = 10000"),
        denied == 10000 && logged + dropped == 10000,
        || out.clone(),
    );
    let (_, listing) = c.step("logs");
    let sizes_ok = ["denials", "denials-1", "denials-2"]
        .iter()
        .all(|f| c.report.file(f).is_some_and(|t| t.len() <= 20000));
    c.check(
        "log rotation keeps the size bound (3 files of at most 20000 bytes, no 4th)",
        sizes_ok && c.report.files.get("denials-3") == Some(&None),
        || listing.clone(),
    );
    c.denied("exec-after-sigterm");
    let (rc, out) = c.step("detach");
    c.check(
        "enforcer stop with no daemon removes the pins",
        rc == 0 && out.contains("removed the pins"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step("status-stopped");
    c.check("status after stop exits 1 and says NO", rc == 1 && out.contains("enforcing: NO"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step("exec-after-stop");
    c.check(
        "after enforcer stop, ai-worker's exec runs in the real container",
        rc == 0 && out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
}

/// `status --follow` and `metrics` against the running daemon (the daemon group).
fn check_follow_and_metrics(c: &mut Checks) {
    c.denied("follow-exec");
    let json = c.report.file("follow-json").unwrap_or("").to_string();
    let records: Vec<serde_json::Value> = json.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let live =
        |r: &serde_json::Value| r["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == "follow-live"));
    c.check(
        "status --follow --json --user ai-worker: JSON lines, the new denial exactly once, only ai-worker's",
        !records.is_empty()
            && records.len() == json.lines().count()
            && records.iter().filter(|r| live(r)).count() == 1
            && records.iter().all(|r| r["uid"] == 1001),
        || json.clone(),
    );
    let table = c.report.file("follow-table").unwrap_or("").to_string();
    c.check(
        "status --follow: a table row for the new denial (user, rule, command, argv)",
        table.lines().filter(|l| l.contains("follow-live")).count() == 1
            && table.lines().any(|l| {
                l.contains("follow-live")
                    && l.contains("ai-worker")
                    && l.contains("agent")
                    && l.contains("exec")
            }),
        || table.clone(),
    );
    let bob = c.report.file("follow-bob").unwrap_or("").to_string();
    c.check(
        "status --follow --user bob: the header, none of ai-worker's denials",
        bob.contains("argv, or the connection") && !bob.contains("follow-live") && !bob.contains("ai-worker"),
        || bob.clone(),
    );

    let (_, status, _) = json_step(c, "metrics-status");
    let (rc, metrics) = c.step("metrics");
    let sample = |text: &str, name: &str| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    let denied = status["counters"]["denied"].as_u64();
    c.check(
        "metrics: Prometheus text, the counters equal to status's",
        rc == 0
            && metrics.contains("# TYPE enforcer_exec_verdicts_total counter")
            && sample(&metrics, "enforcer_enforcing") == Some(1)
            && sample(&metrics, "enforcer_daemon_running") == Some(1)
            && denied.is_some()
            && sample(&metrics, "enforcer_exec_verdicts_total{verdict=\"denied\"}") == denied
            && sample(&metrics, "enforcer_exec_checks_total") == status["counters"]["checked"].as_u64()
            && sample(&metrics, "enforcer_rule_verdicts_total{rule=\"agent\",verdict=\"denied\"}")
                == status["rules"][0]["denied"].as_u64()
            && sample(&metrics, "enforcer_events_dropped_total").is_some()
            && sample(&metrics, "enforcer_recheck_races_total").is_some(),
        || format!("exit {rc}: {metrics}\nstatus: {status}"),
    );
    let (rc, out) = c.step("metrics-textfile");
    let prom = c.report.file("metrics-prom").unwrap_or("").to_string();
    c.check(
        "metrics --textfile: the same text in the file",
        rc == 0 && sample(&prom, "enforcer_exec_verdicts_total{verdict=\"denied\"}") == denied,
        || format!("exit {rc}: {out}\n{prom}"),
    );
    let (rc, http) = c.step("metrics-http");
    c.check(
        "metrics --listen: GET /metrics answers 200 with the text format",
        rc == 0
            && http.starts_with("HTTP/1.1 200")
            && http.contains("text/plain; version=0.0.4")
            && sample(&http, "enforcer_exec_verdicts_total{verdict=\"denied\"}") == denied,
        || format!("exit {rc}: {http}"),
    );
    let (rc, out) = c.step("metrics-listen-taken");
    c.check(
        "metrics --listen on an address in use: exit 69",
        rc == 69 && out.contains("cannot listen"),
        || format!("exit {rc}: {out}"),
    );
}

fn systemd_script() -> String {
    r#"
# Runs from enforcer-test.service once multi-user.target is reached (tests/src/vm.rs).
unit_state() { systemctl show -p ActiveState -p SubState -p Result -p NRestarts -p MainPID -p ExecMainStatus enforcer.service; }
step boot-state root unit_state
step boot-type root systemctl show -p Type -p NotifyAccess -p StatusErrno enforcer.service
step boot-failed root systemctl --failed --no-legend --plain
# Ordering at boot: enforcer became active (READY=1) before docker began to start, and the
# agent's unit began after both. Monotonic timestamps in microseconds.
step boot-order root sh -c 'for p in enforcer.service:ActiveEnterTimestampMonotonic docker.socket:InactiveExitTimestampMonotonic docker.service:InactiveExitTimestampMonotonic ai-agent.service:InactiveExitTimestampMonotonic; do echo "${p%%:*} $(systemctl show -p ${p#*:} --value ${p%%:*})"; done'
step agent-journal root journalctl -b -u ai-agent.service -o cat --no-pager
step status-boot root /usr/local/sbin/enforcer status
# The daemon's own view of the file system: what the unit's hardening left writable.
step unit-mounts root sh -c 'awk "{print \$5, \$6}" /proc/$(systemctl show -p MainPID --value enforcer.service)/mountinfo'
step status-boot-json root /usr/local/sbin/enforcer status --json --limit 0
# A second daemon beside the unit's is refused, and the unit's stays reachable.
step second-daemon root /usr/local/sbin/enforcer run
step status-after-second root /usr/local/sbin/enforcer status --json --limit 0

# The incident's stage on the image's docker.service (Debian's dockerd, its CLI 20.10).
docker import /opt/enforcer-test/busybox.tar local/busybox >/tmp/stage.out 2>&1
docker volume create gitea-data >>/tmp/stage.out 2>&1
docker run -d --name gitea --network none -v gitea-data:/data local/busybox \
    sh -c 'echo gitea-admin-token-s3cret > /data/secret && exec sleep 1000000' >>/tmp/stage.out 2>&1
i=0
while [ $i -lt 100 ] && ! docker exec gitea test -s /data/secret >/dev/null 2>&1; do sleep 0.2; i=$((i + 1)); done
step gitea-start root sh -c 'cat /tmp/stage.out; docker ps --format "{{.Names}} {{.Image}}"'
step exec-denied ai-worker docker exec gitea cat /data/secret
step cp-denied ai-worker docker cp gitea:/data/secret /tmp/secret
step ps ai-worker docker ps --format '{{.Names}}'

# kill -9: systemd restarts the daemon; the pins enforce meanwhile (no gap).
FIRST_PID=$(systemctl show -p MainPID --value enforcer.service)
echo "@@step first-pid 0 $(echo $FIRST_PID | base64 -w 0)"
kill -9 $FIRST_PID
step exec-while-restarting ai-worker docker exec gitea cat /data/secret
i=0
while [ $i -lt 600 ]; do
    pid=$(systemctl show -p MainPID --value enforcer.service)
    if [ "$(systemctl is-active enforcer.service)" = active ] && [ "$pid" != 0 ] && [ "$pid" != "$FIRST_PID" ]; then break; fi
    sleep 0.1; i=$((i + 1))
done
step after-kill-state root unit_state
step exec-after-restart ai-worker docker exec gitea cat /data/secret
step status-after-restart root /usr/local/sbin/enforcer status --json --limit 100

# systemctl reload: a policy that also denies ps takes effect; a broken one is refused.
mkdir -p /etc/enforcer
printf '[[rule]]\nname = "agent"\nusers = ["ai-worker"]\ndeny = ["exec", "cp", "ps"]\n' > /etc/enforcer/policy.toml
step reload root systemctl reload enforcer.service
step ps-after-reload ai-worker docker ps
printf '[[rule]]\nname = "agent"\nusers = ["ai-worker"]\ndeny = ["exec", "pss"]\n' > /etc/enforcer/policy.toml
step reload-broken root systemctl reload enforcer.service
step ps-after-broken ai-worker docker ps
rm /etc/enforcer/policy.toml
step reload-default root systemctl reload enforcer.service
step ps-after-default ai-worker docker ps --format '{{.Names}}'
step reload-state root unit_state

# Right after systemctl restart returns (READY=1), the new daemon answers on its socket.
step restart root systemctl restart enforcer.service
step status-after-systemctl-restart root /usr/local/sbin/enforcer status --json --limit 0
step restart-state root unit_state
step reload-after-restart root systemctl reload enforcer.service
step journal root journalctl -b -u enforcer.service -o cat --no-pager
step journal-fields root journalctl -b -u enforcer.service -o verbose --no-pager --grep 'denied hook=exec'
step security root systemd-analyze security enforcer.service --no-pager

# enforcer stop detaches for good: exit 3, which the unit neither restarts nor counts as failure.
step stop root /usr/local/sbin/enforcer stop
i=0
while [ $i -lt 300 ] && [ "$(systemctl is-active enforcer.service)" != inactive ]; do sleep 0.1; i=$((i + 1)); done
# RestartSec=1: give a (wrong) restart time to happen before looking.
sleep 3
step stop-state root unit_state
step exec-after-stop ai-worker docker exec gitea cat /data/secret
step status-after-stop root /usr/local/sbin/enforcer status --limit 0
"#
    .to_string()
}

/// The agent's own unit: runs as ai-worker, ordered after enforcer (and refusing to start
/// unless something enforces), as docs/development.md recommends.
const AGENT_UNIT: &str = "[Unit]
Description=AI agent (stand-in): runs as ai-worker once enforcement is in force
Wants=enforcer.service docker.service
After=enforcer.service docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
# As root (+): exits 1 when nothing enforces, and then the agent does not start.
ExecStartPre=+/usr/local/sbin/enforcer status --limit 0
User=ai-worker
# An administrator's usual sandbox: systemd's own seccomp filters (allow list, native
# architecture only) are plain filters, under which the vetted docker still runs.
NoNewPrivileges=yes
SystemCallFilter=@system-service
SystemCallArchitectures=native
ExecStart=/bin/sh -c 'grep ^Seccomp: /proc/self/status; docker ps >/dev/null && echo agent: docker ps ok; docker exec gitea true; echo agent: docker exec exit $$?'

[Install]
WantedBy=multi-user.target
";

fn systemd_files() -> Vec<vm::ImageFile> {
    vec![("/etc/systemd/system/ai-agent.service".into(), 0o644, AGENT_UNIT.into())]
}

/// `KEY=value` lines of `systemctl show` as a map.
fn show_map(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// `status --json` names the daemon `pid` (a unit's MainPID, as `systemctl show` prints it).
fn same_pid(status: &serde_json::Value, pid: &str) -> bool {
    status["daemon"]["pid"].as_u64().is_some_and(|p| p > 0 && p.to_string() == pid)
}

fn check_systemd(c: &mut Checks) {
    c.finished();
    let (_, state) = c.step("boot-state");
    let boot = show_map(&state);
    c.check(
        "the shipped unit is active at boot (running, never restarted)",
        boot.get("ActiveState").map(String::as_str) == Some("active")
            && boot.get("SubState").map(String::as_str) == Some("running")
            && boot.get("NRestarts").map(String::as_str) == Some("0"),
        || state.clone(),
    );
    let (_, types) = c.step("boot-type");
    c.check(
        "Type=notify, NotifyAccess=main (active means READY=1 arrived)",
        types.contains("Type=notify") && types.contains("NotifyAccess=main"),
        || types.clone(),
    );
    let (rc, failed) = c.step("boot-failed");
    c.check("no unit failed at boot", rc == 0 && failed.trim().is_empty(), || failed.clone());
    let (_, order) = c.step("boot-order");
    let at = |unit: &str| {
        order
            .lines()
            .find_map(|l| l.strip_prefix(unit).and_then(|t| t.trim().parse::<u64>().ok()))
            .unwrap_or(0)
    };
    let (enforcer, socket, docker, agent) =
        (at("enforcer.service"), at("docker.socket"), at("docker.service"), at("ai-agent.service"));
    c.check(
        "enforcer was ready before docker.socket and docker.service began, and the agent after it",
        enforcer > 0 && enforcer <= socket && enforcer <= docker && enforcer <= agent,
        || order.clone(),
    );
    let (_, agent_log) = c.step("agent-journal");
    c.check(
        "the agent runs under systemd's seccomp filters (SystemCallFilter=, SystemCallArchitectures=)",
        agent_log.contains("Seccomp:\t2") || agent_log.contains("Seccomp: 2"),
        || agent_log.clone(),
    );
    c.check(
        "the agent's unit ran after enforcement: its docker ps worked, its docker exec was refused",
        agent_log.contains("agent: docker ps ok")
            && agent_log.contains("Operation not permitted")
            && agent_log.contains("agent: docker exec exit 126"),
        || agent_log.clone(),
    );
    let (rc, table) = c.step("status-boot");
    let main_pid = boot.get("MainPID").cloned().unwrap_or_default();
    c.check(
        "enforcer status under systemd: enforcing, daemon running with the unit's MainPID",
        rc == 0
            && table.contains("enforcing: yes")
            && table.contains(&format!("daemon:    running (pid {main_pid})")),
        || format!("exit {rc} (MainPID {main_pid}): {table}"),
    );
    let (_, mounts) = c.step("unit-mounts");
    let options = |path: &str| {
        mounts
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(path).and_then(|o| o.strip_prefix(' ')))
            .unwrap_or("")
    };
    let ro = |path: &str| options(path).split(',').next() == Some("ro");
    c.check(
        "in the unit: /sys, /proc/sys, securityfs and / read-only, /sys/fs/bpf writable",
        ro("/sys")
            && ro("/proc/sys")
            && ro("/sys/kernel/security")
            && ro("/")
            && options("/sys/fs/bpf").starts_with("rw"),
        || mounts.clone(),
    );
    let (rc, out) = c.step("second-daemon");
    c.check(
        "a second enforcer run beside the unit is refused",
        rc != 0 && out.contains(&format!("already running (pid {main_pid})")),
        || format!("exit {rc}: {out}"),
    );
    let (rc, status, out) = json_step(c, "status-after-second");
    c.check(
        "after it, status still reaches the unit's daemon",
        rc == 0 && same_pid(&status, &main_pid),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step("gitea-start");
    c.check(
        "root created the gitea container on docker.service",
        rc == 0 && out.contains("gitea local/busybox"),
        || format!("exit {rc}: {out}"),
    );
    c.denied("exec-denied");
    c.denied("cp-denied");
    let (rc, out) = c.step("ps");
    c.check("ai-worker's docker ps works and lists gitea", rc == 0 && out.trim() == "gitea", || {
        format!("exit {rc}: {out}")
    });

    c.denied("exec-while-restarting");
    let first_pid = c.step("first-pid").1.trim().to_string();
    let (_, state) = c.step("after-kill-state");
    let after = show_map(&state);
    c.check(
        "after kill -9, systemd restarted the daemon (active, NRestarts=1, a new MainPID)",
        after.get("ActiveState").map(String::as_str) == Some("active")
            && after.get("NRestarts").map(String::as_str) == Some("1")
            && after.get("MainPID").is_some_and(|p| *p != first_pid && p != "0"),
        || format!("first pid {first_pid}: {state}"),
    );
    c.denied("exec-after-restart");
    let (rc, status, out) = json_step(c, "status-after-restart");
    let denials = status["denials"].as_array().cloned().unwrap_or_default();
    c.check(
        "the restarted daemon logged every denial (the agent's at boot, and the ones around the restart)",
        rc == 0
            && after.get("MainPID").is_some_and(|p| same_pid(&status, p))
            && denials.len() >= 5
            && denials.iter().all(|d| d["user"] == "ai-worker"),
        || format!("exit {rc}: {out}"),
    );
    let (_, journal) = c.step("journal");
    c.check(
        "the journal has the restart adopting the pinned maps",
        journal.contains("adopted the pinned maps of a previous daemon"),
        || journal.clone(),
    );

    let (rc, out) = c.step("reload");
    c.check("systemctl reload succeeds", rc == 0, || format!("exit {rc}: {out}"));
    c.denied("ps-after-reload");
    let (rc, out) = c.step("reload-broken");
    c.check("systemctl reload of a broken policy fails", rc != 0, || format!("exit {rc}: {out}"));
    c.check(
        "the journal says why, and that the policy in force is unchanged",
        journal.contains("unknown docker command \"pss\"") && journal.contains("unchanged"),
        || journal.clone(),
    );
    c.denied("ps-after-broken");
    c.succeeded("reload-default");
    let (rc, out) = c.step("ps-after-default");
    c.check("back on the default policy, docker ps works", rc == 0 && out.trim() == "gitea", || {
        format!("exit {rc}: {out}")
    });
    let (_, state) = c.step("reload-state");
    c.check(
        "reloads restart nothing (NRestarts still 1)",
        show_map(&state).get("NRestarts").map(String::as_str) == Some("1"),
        || state.clone(),
    );

    c.check(
        "the journal has the start, the structured denial lines and the reloads",
        journal.contains("enforcer: enforcing after")
            && journal.lines().any(|l| {
                l.starts_with("enforcer: denied hook=exec ") && l.contains("uid=1001 user=ai-worker")
            })
            && journal.matches("enforcer: reloaded").count() >= 2,
        || journal.clone(),
    );
    let (_, fields) = c.step("journal-fields");
    c.check(
        "denial records in the journal belong to the unit",
        fields.contains("_SYSTEMD_UNIT=enforcer.service")
            && fields.contains("MESSAGE=enforcer: denied hook=exec"),
        || fields.clone(),
    );
    let (_, security) = c.step("security");
    c.check(
        "systemd-analyze security in the VM: exposure OK",
        security.contains("Overall exposure level for enforcer.service: 1.") && security.contains("OK"),
        || security.clone(),
    );

    c.succeeded("restart");
    let (_, state) = c.step("restart-state");
    let restarted = show_map(&state);
    let (rc, status, out) = json_step(c, "status-after-systemctl-restart");
    c.check(
        "once systemctl restart returns (READY=1), status finds the new daemon on its socket",
        rc == 0 && restarted.get("MainPID").is_some_and(|p| same_pid(&status, p)),
        || {
            format!(
                "exit {rc}: {out}
{state}"
            )
        },
    );
    c.succeeded("reload-after-restart");
    let (rc, out) = c.step("stop");
    c.check("enforcer stop under systemd detaches", rc == 0 && out.contains("nothing enforces now"), || {
        format!("exit {rc}: {out}")
    });
    let (_, state) = c.step("stop-state");
    let stopped = show_map(&state);
    c.check(
        "after enforcer stop the unit stays stopped: inactive, exit 3, not failed, not restarted (NRestarts as before)",
        stopped.get("ActiveState").map(String::as_str) == Some("inactive")
            && stopped.get("Result").map(String::as_str) == Some("success")
            && stopped.get("ExecMainStatus").map(String::as_str) == Some("3")
            && stopped.get("NRestarts") == restarted.get("NRestarts"),
        || state.clone(),
    );
    let (rc, out) = c.step("exec-after-stop");
    c.check(
        "after enforcer stop, ai-worker's exec runs (reads the secret)",
        rc == 0 && out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step("status-after-stop");
    c.check("status after stop exits 1 and says NO", rc == 1 && out.contains("enforcing: NO"), || {
        format!("exit {rc}: {out}")
    });
}

/// The lsm= list without bpf, as on a kernel booted without it.
const LSM_WITHOUT_BPF: &str = "landlock,lockdown,yama,integrity,apparmor";

pub fn groups(work: &Path, artifacts: &Artifacts) -> Result<Vec<Group>> {
    Ok(vec![
        Group {
            name: "default-policy",
            script: default_policy_script(),
            files: vec![],
            lsm: vm::DEFAULT_LSM,
            flavour: Flavour::RealDaemon,
            check: check_default_policy,
        },
        Group {
            name: "filesystems",
            script: filesystems_script(),
            files: vec![("images/docker-ext4.img".into(), 0o644, ext4_image(work, &artifacts.docker)?)],
            lsm: vm::DEFAULT_LSM,
            flavour: Flavour::Initramfs,
            check: check_filesystems,
        },
        Group {
            name: "audit-mode",
            script: audit_mode_script(),
            files: vec![],
            lsm: vm::DEFAULT_LSM,
            flavour: Flavour::Initramfs,
            check: check_audit_mode,
        },
        Group {
            name: "commands",
            script: commands_script(),
            files: vec![(
                "corpus/argv.txt".into(),
                0o644,
                Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/argv.txt"),
            )],
            lsm: vm::DEFAULT_LSM,
            flavour: Flavour::Initramfs,
            check: check_commands,
        },
        Group {
            name: "daemon",
            script: daemon_script(),
            files: vec![],
            lsm: vm::DEFAULT_LSM,
            flavour: Flavour::RealDaemon,
            check: check_daemon,
        },
        Group {
            name: "bypass",
            script: crate::bypass::script(),
            files: vec![],
            lsm: vm::DEFAULT_LSM,
            flavour: Flavour::Initramfs,
            check: crate::bypass::check,
        },
        Group {
            name: "subvert",
            script: crate::subvert::script(),
            files: vec![("attack/fake-ld".into(), 0o755, crate::subvert::fake_loader(work)?)],
            lsm: vm::DEFAULT_LSM,
            flavour: Flavour::Initramfs,
            check: crate::subvert::check,
        },
        Group {
            name: "systemd",
            script: systemd_script(),
            files: vec![],
            lsm: vm::DEFAULT_LSM,
            flavour: Flavour::Systemd,
            check: check_systemd,
        },
        Group {
            name: "no-bpf-lsm",
            script: no_bpf_lsm_script(),
            files: vec![],
            lsm: LSM_WITHOUT_BPF,
            flavour: Flavour::Initramfs,
            check: check_no_bpf_lsm,
        },
    ])
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
    let groups = groups(work, artifacts)?;
    let selected = |g: &&Group| only.is_none_or(|o| g.name == o);
    // Built once per run, and only when a selected group boots the docker flavour.
    if groups.iter().filter(selected).any(|g| g.flavour == Flavour::RealDaemon) {
        vm::build_docker_initramfs(artifacts, work, &work.join(DOCKER_INITRD))?;
    }
    for group in groups.iter().filter(selected).filter(|g| g.flavour == Flavour::Systemd) {
        let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/enforcer.service");
        let image = vm::build_systemd_image(artifacts, &unit, &group.script, &systemd_files(), work)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_calls_from_a_dockerd_debug_log() {
        let log = r#"time="2026-12-01T18:19:14Z" level=debug msg="Calling HEAD /_ping"
time="2026-12-01T18:19:14Z" level=info msg="Loading containers: start."
time="2026-12-01T18:19:15Z" level=debug msg="Calling POST /v1.41/containers/gitea/exec"
time="2026-12-01T18:19:15Z" level=debug msg="Calling GET /v1.41/containers/json?all=1"
"#;
        assert_eq!(
            daemon_calls(log),
            ["HEAD /_ping", "POST /containers/gitea/exec", "GET /containers/json?all=1"]
        );
        assert!(daemon_calls("").is_empty());
    }

    #[test]
    fn corpus_words_split_like_the_vm_shell() {
        assert_eq!(split_words("exec -it web sh"), ["exec", "-it", "web", "sh"]);
        assert_eq!(split_words("'' exec"), ["", "exec"]);
        assert_eq!(split_words("--host='a b' ps"), ["--host=a b", "ps"]);
        assert!(split_words("").is_empty());
    }
}
