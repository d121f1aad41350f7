//! The audit-mode group: a policy in audit mode denies nothing and records what it would
//! have denied (undecidable execs and the re-check's included); `enforcer stop` with the
//! daemon running.

use crate::{
    checks::Checks,
    step::{ENFORCER_START, Step},
    suite::{Flavour, Group},
    vm,
};

// The steps, in the order the script prints them.
const AUDIT_EXEC: Step = Step::new("audit-exec");
const AUDIT_PS: Step = Step::new("audit-ps");
const AUDIT_UNDECIDABLE: Step = Step::new("audit-undecidable");
const AUDIT_INT80_EXEC: Step = Step::new("audit-int80-exec");
const STATUS: Step = Step::new("status");
const STOP_RUNNING: Step = Step::new("stop-running");
const DAEMON_EXIT_AFTER_STOP: Step = Step::new("daemon-exit-after-stop");
const STATUS_AFTER_STOP: Step = Step::new("status-after-stop");

pub(super) fn group() -> Group {
    Group {
        name: "audit-mode",
        script: script(),
        files: vec![],
        lsm: vm::DEFAULT_LSM,
        flavour: Flavour::Initramfs,
        disk_files: vec![],
        check,
    }
}

pub(super) fn script() -> String {
    format!(
        r#"
start_mock_api
cat > /tmp/audit.toml <<'POLICY'
mode = "audit"

[[rule]]
name = "watch-only"
users = ["ai-worker"]
deny = ["exec"]
api_gate = false # the argv layer alone (api-gate-route audits the gate)
POLICY
start_enforcer --config /tmp/audit.toml
step {AUDIT_EXEC} ai-worker docker exec gitea true
step {AUDIT_PS} ai-worker docker ps
step {AUDIT_UNDECIDABLE} ai-worker docker --no-such-flag ps
step {AUDIT_INT80_EXEC} ai-worker /usr/local/bin/exec-helper int80 /usr/bin/docker docker exec gitea int80
step {STATUS} root /usr/local/sbin/enforcer status --json
# `enforcer stop` with the daemon running: it removes the pins and exits with 3.
step {STOP_RUNNING} root /usr/local/sbin/enforcer stop
wait $ENFORCER_PID
echo "@@step {DAEMON_EXIT_AFTER_STOP} $? $(echo | base64 -w 0)"
step {STATUS_AFTER_STOP} root /usr/local/sbin/enforcer status
report_file enforcer-log /tmp/enforcer.log
report_file mock-api /tmp/mock-api.log
report_file denials /var/lib/enforcer/denials.jsonl
"#
    )
}

pub(super) fn check(c: &mut Checks) {
    c.finished();
    c.succeeded(ENFORCER_START);
    let (rc, out) = c.step(STOP_RUNNING);
    c.check(
        "enforcer stop with the daemon running: the daemon removes the pins and exits",
        rc == 0 && out.contains("removed the pins and exited"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, _) = c.step(DAEMON_EXIT_AFTER_STOP);
    c.check("the detached daemon exits with 3 (systemd: no restart)", rc == 3, || format!("exit {rc}"));
    let (rc, out) = c.step(STATUS_AFTER_STOP);
    c.check("status after enforcer stop: NO, exit 1", rc == 1 && out.contains("enforcing: NO"), || {
        format!("exit {rc}: {out}")
    });
    c.not_refused(AUDIT_EXEC, "audit mode denies nothing");
    let worker = c.api_requests(vm::AI_WORKER_UID);
    c.check(
        "audited exec reaches the API",
        worker.iter().any(|r| r.contains("/containers/gitea/exec")),
        || format!("{worker:?}"),
    );
    c.succeeded(AUDIT_PS);
    let (log, records) = c.denial_log();
    c.check(
        "the would-be denial is recorded as audited",
        records.len() == 3
            && records[0]["action"] == "audited"
            && records[0]["command"] == "container exec"
            && records[0]["rule"] == "watch-only",
        || log.clone(),
    );
    c.not_refused(AUDIT_UNDECIDABLE, "audit mode denies nothing");
    c.check(
        "an undecidable exec is audited too, with its reason",
        records.get(1).is_some_and(|r| {
            r["action"] == "audited" && r["reason"] == "unknown_global_option" && r["command"].is_null()
        }),
        || log.clone(),
    );
    let (rc, out) = c.step(AUDIT_INT80_EXEC);
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
