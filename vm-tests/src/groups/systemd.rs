//! The systemd group: the shipped unit under systemd as PID 1 (boot order, readiness, the
//! unit's hardening, kill -9 and restart, `systemctl reload` and `restart`, the journal,
//! `enforcer stop`), with the agent's own unit ordered after it.

use std::collections::BTreeMap;

use crate::{
    checks::Checks,
    fixtures::GITEA_SECRET,
    step::{GITEA_START, Step},
    suite::{Flavour, Group},
    vm,
};

// The steps, in the order the script prints them.
const BOOT_STATE: Step = Step::new("boot-state");
const BOOT_TYPE: Step = Step::new("boot-type");
const BOOT_FAILED: Step = Step::new("boot-failed");
const BOOT_ORDER: Step = Step::new("boot-order");
const AGENT_JOURNAL: Step = Step::new("agent-journal");
const STATUS_BOOT: Step = Step::new("status-boot");
const UNIT_MOUNTS: Step = Step::new("unit-mounts");
const STATUS_BOOT_JSON: Step = Step::new("status-boot-json");
const SECOND_DAEMON: Step = Step::new("second-daemon");
const STATUS_AFTER_SECOND: Step = Step::new("status-after-second");
const EXEC_DENIED: Step = Step::new("exec-denied");
const CP_DENIED: Step = Step::new("cp-denied");
const PS: Step = Step::new("ps");
const FIRST_PID: Step = Step::new("first-pid");
const EXEC_WHILE_RESTARTING: Step = Step::new("exec-while-restarting");
const AFTER_KILL_STATE: Step = Step::new("after-kill-state");
const EXEC_AFTER_RESTART: Step = Step::new("exec-after-restart");
const STATUS_AFTER_RESTART: Step = Step::new("status-after-restart");
const RELOAD: Step = Step::new("reload");
const PS_AFTER_RELOAD: Step = Step::new("ps-after-reload");
const RELOAD_BROKEN: Step = Step::new("reload-broken");
const PS_AFTER_BROKEN: Step = Step::new("ps-after-broken");
const RELOAD_DEFAULT: Step = Step::new("reload-default");
const PS_AFTER_DEFAULT: Step = Step::new("ps-after-default");
const RELOAD_GATED: Step = Step::new("reload-gated");
const GATE_DIR_MODE: Step = Step::new("gate-dir-mode");
const GATE_PS: Step = Step::new("gate-ps");
const GATE_REFUSES: Step = Step::new("gate-refuses");
const KERNEL_RELEASE: Step = Step::new("kernel-release");
const GATE_PLAIN_PS: Step = Step::new("gate-plain-ps");
const RELOAD_UNGATED: Step = Step::new("reload-ungated");
const RELOAD_STATE: Step = Step::new("reload-state");
const RESTART: Step = Step::new("restart");
const STATUS_AFTER_SYSTEMCTL_RESTART: Step = Step::new("status-after-systemctl-restart");
const RESTART_STATE: Step = Step::new("restart-state");
const RELOAD_AFTER_RESTART: Step = Step::new("reload-after-restart");
const JOURNAL: Step = Step::new("journal");
const JOURNAL_FIELDS: Step = Step::new("journal-fields");
const JOURNAL_BY_USER: Step = Step::new("journal-by-user");
const JOURNAL_ERRORS: Step = Step::new("journal-errors");
const SECURITY: Step = Step::new("security");
const STOP: Step = Step::new("stop");
const STOP_STATE: Step = Step::new("stop-state");
const EXEC_AFTER_STOP: Step = Step::new("exec-after-stop");
const STATUS_AFTER_STOP: Step = Step::new("status-after-stop");

pub(super) fn group() -> Group {
    Group {
        name: "systemd",
        script: script(),
        files: vec![],
        lsm: vm::DEFAULT_LSM,
        flavour: Flavour::Systemd,
        disk_files: vec![("/etc/systemd/system/ai-agent.service".into(), 0o644, AGENT_UNIT.into())],
        check,
    }
}

/// The incident's stage on the image's docker.service (Debian's dockerd, its CLI 20.10), as
/// root: the busybox image as `local/busybox`, and the `gitea` stand-in with its named volume
/// `gitea-data` holding the secret. Reports step `gitea-start`. Shared by the systemd groups.
pub(super) fn stage() -> String {
    format!(
        r#"docker import /opt/enforcer-test/busybox.tar local/busybox >/tmp/stage.out 2>&1
docker volume create gitea-data >>/tmp/stage.out 2>&1
docker run -d --name gitea --network none -v gitea-data:/data local/busybox \
    sh -c 'echo {GITEA_SECRET} > /data/secret && exec sleep 1000000' >>/tmp/stage.out 2>&1
i=0
while [ $i -lt 100 ] && ! docker exec gitea test -s /data/secret >/dev/null 2>&1; do sleep 0.2; i=$((i + 1)); done
step {GITEA_START} root sh -c 'cat /tmp/stage.out; docker ps --format "{{{{.Names}}}} {{{{.Image}}}}"'
"#
    )
}

pub(super) fn script() -> String {
    let stage = stage();
    format!(
        r#"
# Runs from enforcer-test.service once multi-user.target is reached (vm-tests/src/vm.rs).
unit_state() {{ systemctl show -p ActiveState -p SubState -p Result -p NRestarts -p MainPID -p ExecMainStatus enforcer.service; }}
step {BOOT_STATE} root unit_state
step {BOOT_TYPE} root systemctl show -p Type -p NotifyAccess -p StatusErrno enforcer.service
step {BOOT_FAILED} root systemctl --failed --no-legend --plain
# Ordering at boot: enforcer became active (READY=1) before docker began to start, and the
# agent's unit began after both. Monotonic timestamps in microseconds.
step {BOOT_ORDER} root sh -c 'for p in enforcer.service:ActiveEnterTimestampMonotonic docker.socket:InactiveExitTimestampMonotonic docker.service:InactiveExitTimestampMonotonic ai-agent.service:InactiveExitTimestampMonotonic; do echo "${{p%%:*}} $(systemctl show -p ${{p#*:}} --value ${{p%%:*}})"; done'
step {AGENT_JOURNAL} root journalctl -b -u ai-agent.service -o cat --no-pager
step {STATUS_BOOT} root /usr/local/sbin/enforcer status
# The daemon's own view of the file system: what the unit's hardening left writable.
step {UNIT_MOUNTS} root sh -c 'awk "{{print \$5, \$6}}" /proc/$(systemctl show -p MainPID --value enforcer.service)/mountinfo'
step {STATUS_BOOT_JSON} root /usr/local/sbin/enforcer status --json --limit 0
# A second daemon beside the unit's is refused, and the unit's stays reachable.
step {SECOND_DAEMON} root /usr/local/sbin/enforcer run
step {STATUS_AFTER_SECOND} root /usr/local/sbin/enforcer status --json --limit 0

# The incident's stage (stage()), then the agent's denied commands against it.
{stage}
# The embedded default gates the API: before 6.7 the agent needs DOCKER_HOST.
gate_env ai-worker ai-worker-docker
step {EXEC_DENIED} ai-worker docker exec gitea cat /data/secret
step {CP_DENIED} ai-worker docker cp gitea:/data/secret /tmp/secret
step {PS} ai-worker docker ps --format '{{{{.Names}}}}'
gate_env_clear ai-worker

# kill -9: systemd restarts the daemon; the pins enforce meanwhile (no gap).
FIRST_PID=$(systemctl show -p MainPID --value enforcer.service)
echo "@@step {FIRST_PID} 0 $(echo $FIRST_PID | base64 -w 0)"
kill -9 $FIRST_PID
step {EXEC_WHILE_RESTARTING} ai-worker docker exec gitea cat /data/secret
i=0
while [ $i -lt 600 ]; do
    pid=$(systemctl show -p MainPID --value enforcer.service)
    if [ "$(systemctl is-active enforcer.service)" = active ] && [ "$pid" != 0 ] && [ "$pid" != "$FIRST_PID" ]; then break; fi
    sleep 0.1; i=$((i + 1))
done
step {AFTER_KILL_STATE} root unit_state
step {EXEC_AFTER_RESTART} ai-worker docker exec gitea cat /data/secret
step {STATUS_AFTER_RESTART} root /usr/local/sbin/enforcer status --json --limit 100

# systemctl reload: a policy that also denies ps takes effect; a broken one is refused.
mkdir -p /etc/enforcer
printf '[[rule]]\nname = "agent"\nusers = ["ai-worker"]\ndeny = ["exec", "cp", "ps"]\napi_gate = false\n' > /etc/enforcer/policy.toml
step {RELOAD} root systemctl reload enforcer.service
step {PS_AFTER_RELOAD} ai-worker docker ps
printf '[[rule]]\nname = "agent"\nusers = ["ai-worker"]\ndeny = ["exec", "pss"]\napi_gate = false\n' > /etc/enforcer/policy.toml
step {RELOAD_BROKEN} root systemctl reload enforcer.service
step {PS_AFTER_BROKEN} ai-worker docker ps
rm /etc/enforcer/policy.toml
step {RELOAD_DEFAULT} root systemctl reload enforcer.service
# The embedded default gates the API: before 6.7 the agent needs DOCKER_HOST.
gate_env ai-worker ai-worker-docker
step {PS_AFTER_DEFAULT} ai-worker docker ps --format '{{{{.Names}}}}'
gate_env_clear ai-worker
# The API gate under the shipped unit: its socket is reachable from outside the unit's
# runtime directory, and it judges.
printf '[[rule]]\nname = "agent"\nusers = ["ai-worker"]\ndeny = ["exec", "cp"]\napi_gate = true\n' > /etc/enforcer/policy.toml
step {RELOAD_GATED} root systemctl reload enforcer.service
step {GATE_DIR_MODE} root stat -c '%a %U' /run/enforcer /run/enforcer/gate /run/enforcer/control.sock
step {GATE_PS} ai-worker env DOCKER_HOST=unix:///run/enforcer/gate/agent.sock docker ps --format '{{{{.Names}}}}'
step {GATE_REFUSES} ai-worker env DOCKER_HOST=unix:///run/enforcer/gate/agent.sock docker run --rm --network none --volumes-from gitea local/busybox cat /data/secret
# 6.7+: the agent's plain docker (no DOCKER_HOST) is routed to the gate under the unit too.
step {KERNEL_RELEASE} root uname -r
step {GATE_PLAIN_PS} ai-worker docker ps --format '{{{{.Names}}}}'
rm /etc/enforcer/policy.toml
step {RELOAD_UNGATED} root systemctl reload enforcer.service
step {RELOAD_STATE} root unit_state

# Right after systemctl restart returns (READY=1), the new daemon answers on its socket.
step {RESTART} root systemctl restart enforcer.service
step {STATUS_AFTER_SYSTEMCTL_RESTART} root /usr/local/sbin/enforcer status --json --limit 0
step {RESTART_STATE} root unit_state
step {RELOAD_AFTER_RESTART} root systemctl reload enforcer.service
step {JOURNAL} root journalctl -b -u enforcer.service -o cat --no-pager
step {JOURNAL_FIELDS} root journalctl -b -u enforcer.service -o verbose --no-pager --grep 'denied hook=exec'
# The native protocol: a denial's fields are journal fields, at a priority of its own (notice).
step {JOURNAL_BY_USER} root journalctl -b -u enforcer.service ENFORCER_USER=ai-worker ENFORCER_HOOK=exec -o verbose --no-pager
step {JOURNAL_ERRORS} root journalctl -b -u enforcer.service -p err -o cat --no-pager
step {SECURITY} root systemd-analyze security enforcer.service --no-pager

# enforcer stop detaches for good: exit 3, which the unit neither restarts nor counts as failure.
step {STOP} root /usr/local/sbin/enforcer stop
i=0
while [ $i -lt 300 ] && [ "$(systemctl is-active enforcer.service)" != inactive ]; do sleep 0.1; i=$((i + 1)); done
# RestartSec=1: give a (wrong) restart time to happen before looking.
sleep 3
step {STOP_STATE} root unit_state
step {EXEC_AFTER_STOP} ai-worker docker exec gitea cat /data/secret
step {STATUS_AFTER_STOP} root /usr/local/sbin/enforcer status --limit 0
"#
    )
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
# The embedded default gates the API; before Linux 6.7 this is how the agent's docker finds
# its gate (the NixOS module's gateServices writes the same line; harmless on 6.7+).
Environment=DOCKER_HOST=unix:///run/enforcer/gate/ai-worker-docker.sock
# An administrator's usual sandbox: systemd's own seccomp filters (allow list, native
# architecture only) are plain filters, under which the vetted docker still runs.
NoNewPrivileges=yes
SystemCallFilter=@system-service
SystemCallArchitectures=native
ExecStart=/bin/sh -c 'grep ^Seccomp: /proc/self/status; docker ps >/dev/null && echo agent: docker ps ok; docker exec gitea true; echo agent: docker exec exit $$?'

[Install]
WantedBy=multi-user.target
";

/// `KEY=value` lines of `systemctl show` as a map.
fn show_map(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// `status --json` names the daemon `pid` (a unit's `MainPID`, as `systemctl show` prints it).
fn same_pid(status: &serde_json::Value, pid: &str) -> bool {
    status["daemon"]["pid"].as_u64().is_some_and(|p| p > 0 && p.to_string() == pid)
}

pub(super) fn check(c: &mut Checks) {
    c.finished();
    let (_, state) = c.step(BOOT_STATE);
    let boot = show_map(&state);
    c.check(
        "the shipped unit is active at boot (running, never restarted)",
        boot.get("ActiveState").map(String::as_str) == Some("active")
            && boot.get("SubState").map(String::as_str) == Some("running")
            && boot.get("NRestarts").map(String::as_str) == Some("0"),
        || state.clone(),
    );
    let (_, types) = c.step(BOOT_TYPE);
    c.check(
        "Type=notify, NotifyAccess=main (active means READY=1 arrived)",
        types.contains("Type=notify") && types.contains("NotifyAccess=main"),
        || types.clone(),
    );
    let (rc, failed) = c.step(BOOT_FAILED);
    c.check("no unit failed at boot", rc == 0 && failed.trim().is_empty(), || failed.clone());
    let (_, order) = c.step(BOOT_ORDER);
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
    let (_, agent_log) = c.step(AGENT_JOURNAL);
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
    let (rc, table) = c.step(STATUS_BOOT);
    let main_pid = boot.get("MainPID").cloned().unwrap_or_default();
    c.check(
        "enforcer status under systemd: enforcing, daemon running with the unit's MainPID",
        rc == 0
            && table.contains("enforcing: yes")
            && table.contains(&format!("daemon:    running (pid {main_pid})")),
        || format!("exit {rc} (MainPID {main_pid}): {table}"),
    );
    let (_, mounts) = c.step(UNIT_MOUNTS);
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
    let (rc, out) = c.step(SECOND_DAEMON);
    c.check(
        "a second enforcer run beside the unit is refused",
        rc != 0 && out.contains(&format!("already running (pid {main_pid})")),
        || format!("exit {rc}: {out}"),
    );
    let (rc, status, out) = c.json_step(STATUS_AFTER_SECOND);
    c.check(
        "after it, status still reaches the unit's daemon",
        rc == 0 && same_pid(&status, &main_pid),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(GITEA_START);
    c.check(
        "root created the gitea container on docker.service",
        rc == 0 && out.contains("gitea local/busybox"),
        || format!("exit {rc}: {out}"),
    );
    c.denied(EXEC_DENIED);
    c.denied(CP_DENIED);
    let (rc, out) = c.step(PS);
    c.check("ai-worker's docker ps works and lists gitea", rc == 0 && out.trim() == "gitea", || {
        format!("exit {rc}: {out}")
    });

    c.denied(EXEC_WHILE_RESTARTING);
    let first_pid = c.step(FIRST_PID).1.trim().to_string();
    let (_, state) = c.step(AFTER_KILL_STATE);
    let after = show_map(&state);
    c.check(
        "after kill -9, systemd restarted the daemon (active, NRestarts=1, a new MainPID)",
        after.get("ActiveState").map(String::as_str) == Some("active")
            && after.get("NRestarts").map(String::as_str) == Some("1")
            && after.get("MainPID").is_some_and(|p| *p != first_pid && p != "0"),
        || format!("first pid {first_pid}: {state}"),
    );
    c.denied(EXEC_AFTER_RESTART);
    let (rc, status, out) = c.json_step(STATUS_AFTER_RESTART);
    let denials = status["denials"].as_array().cloned().unwrap_or_default();
    c.check(
        "the restarted daemon logged every denial (the agent's at boot, and the ones around the restart)",
        rc == 0
            && after.get("MainPID").is_some_and(|p| same_pid(&status, p))
            && denials.len() >= 5
            && denials.iter().all(|d| d["user"] == "ai-worker"),
        || format!("exit {rc}: {out}"),
    );
    let (_, journal) = c.step(JOURNAL);
    c.check(
        "the journal has the restart adopting the pinned maps",
        journal.contains("adopted the pinned maps of a previous daemon"),
        || journal.clone(),
    );

    let (rc, out) = c.step(RELOAD);
    c.check("systemctl reload succeeds", rc == 0, || format!("exit {rc}: {out}"));
    c.denied(PS_AFTER_RELOAD);
    let (rc, out) = c.step(RELOAD_BROKEN);
    c.check("systemctl reload of a broken policy fails", rc != 0, || format!("exit {rc}: {out}"));
    c.check(
        "the journal says why, and that the policy in force is unchanged",
        journal.contains("unknown docker command \"pss\"") && journal.contains("unchanged"),
        || journal.clone(),
    );
    c.denied(PS_AFTER_BROKEN);
    c.succeeded(RELOAD_DEFAULT);
    let (rc, out) = c.step(PS_AFTER_DEFAULT);
    c.check("back on the default policy, docker ps works", rc == 0 && out.trim() == "gitea", || {
        format!("exit {rc}: {out}")
    });
    c.succeeded(RELOAD_GATED);
    let (rc, out) = c.step(GATE_DIR_MODE);
    c.check(
        "under the unit, /run/enforcer is traversable (0711), gate/ 0755, the control socket root's (0600)",
        rc == 0 && out.lines().collect::<Vec<_>>() == ["711 root", "755 root", "600 root"],
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(GATE_PS);
    c.check(
        "under the unit, the agent's docker reaches its gate: ps lists gitea",
        rc == 0 && out.trim() == "gitea",
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(GATE_REFUSES);
    c.check(
        "under the unit, the gate refuses --volumes-from gitea with the rule's message",
        rc != 0 && out.contains("enforcer: rule \"agent\" refuses") && !out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
    let (_, release) = c.step(KERNEL_RELEASE);
    let (rc, out) = c.step(GATE_PLAIN_PS);
    if super::api_gate_route::routes(&release) {
        c.check(
            "6.7+: under the unit, the agent's plain docker ps is routed to its gate and lists gitea",
            rc == 0 && out.trim() == "gitea",
            || format!("exit {rc}: {out}"),
        );
    } else {
        c.check(
            "before 6.7: under the unit, the agent's plain docker ps is refused the real socket",
            rc != 0 && out.contains("permission denied"),
            || format!("exit {rc}: {out}"),
        );
    }
    c.succeeded(RELOAD_UNGATED);
    let (_, state) = c.step(RELOAD_STATE);
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
    let (_, fields) = c.step(JOURNAL_FIELDS);
    c.check(
        "denial records in the journal belong to the unit",
        fields.contains("_SYSTEMD_UNIT=enforcer.service")
            && fields.contains("MESSAGE=enforcer: denied hook=exec"),
        || fields.clone(),
    );
    let (_, by_user) = c.step(JOURNAL_BY_USER);
    c.check(
        "journalctl ENFORCER_USER=ai-worker: the denials, with their fields, at priority notice",
        by_user.contains("MESSAGE=enforcer: denied hook=exec")
            && by_user.contains("PRIORITY=5")
            && !by_user.contains("PRIORITY=3")
            && by_user.contains("ENFORCER_USER=ai-worker")
            && by_user.contains("ENFORCER_UID=1001")
            && by_user.contains("ENFORCER_ACTION=denied")
            && by_user.contains("ENFORCER_RULE=ai-worker-docker")
            && by_user.contains("ENFORCER_REASON=command")
            && by_user.contains("ENFORCER_COMMAND=container exec")
            && by_user.contains("ENFORCER_COMM=")
            && by_user.contains("ENFORCER_PID=")
            && by_user.contains(r#""exec","gitea","cat","/data/secret"]"#),
        || by_user.clone(),
    );
    let (_, errors) = c.step(JOURNAL_ERRORS);
    c.check(
        "journalctl -p err: the failed reload, and no denial",
        errors.contains("reload failed, the policy in force is unchanged")
            && !errors.contains("denied hook="),
        || errors.clone(),
    );
    let (_, security) = c.step(SECURITY);
    c.check(
        "systemd-analyze security in the VM: exposure OK",
        // 2.2 since the API gate's CAP_CHOWN and CAP_DAC_READ_SEARCH (1.8 before), as on the
        // host (vm-tests/tests/packaging.rs).
        security
            .split("Overall exposure level for enforcer.service: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|level| level.parse::<f64>().ok())
            .is_some_and(|level| level <= 2.2)
            && security.contains("OK"),
        || security.clone(),
    );

    c.succeeded(RESTART);
    let (_, state) = c.step(RESTART_STATE);
    let restarted = show_map(&state);
    let (rc, status, out) = c.json_step(STATUS_AFTER_SYSTEMCTL_RESTART);
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
    c.succeeded(RELOAD_AFTER_RESTART);
    let (rc, out) = c.step(STOP);
    c.check("enforcer stop under systemd detaches", rc == 0 && out.contains("nothing enforces now"), || {
        format!("exit {rc}: {out}")
    });
    let (_, state) = c.step(STOP_STATE);
    let stopped = show_map(&state);
    c.check(
        "after enforcer stop the unit stays stopped: inactive, exit 3, not failed, not restarted (NRestarts as before)",
        stopped.get("ActiveState").map(String::as_str) == Some("inactive")
            && stopped.get("Result").map(String::as_str) == Some("success")
            && stopped.get("ExecMainStatus").map(String::as_str) == Some("3")
            && stopped.get("NRestarts") == restarted.get("NRestarts"),
        || state.clone(),
    );
    let (rc, out) = c.step(EXEC_AFTER_STOP);
    c.check(
        "after enforcer stop, ai-worker's exec runs (reads the secret)",
        rc == 0 && out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(STATUS_AFTER_STOP);
    c.check("status after stop exits 1 and says NO", rc == 1 && out.contains("enforcing: NO"), || {
        format!("exit {rc}: {out}")
    });
}
