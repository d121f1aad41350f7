//! The default-policy group (real daemon): the incident against dockerd (exec and cp of the
//! gitea secret refused and absent from the daemon's log; root's, bob's and, after `enforcer
//! stop`, ai-worker's exec really run), every path spelling, the seed list, the engine's
//! limits, status and the denial log, start-up errors, `check` and `verify` in the VM. The
//! default policy gates the API: the agent's allowed `docker run` that read gitea's secret
//! and the host's root-only files before enforcer ran (the controls) is refused, and the
//! real socket is not the agent's. Its plain docker reaches the gate by the kernel's routing
//! on 6.7+, by `DOCKER_HOST` (as an admin sets it) before.

use crate::{
    checks::Checks,
    fixtures::{GITEA_SECRET, SEED_DENY_LIST},
    step::{DOCKERD_START, ENFORCER_EXIT, ENFORCER_START, GITEA_START, Step},
    suite::{Flavour, Group},
    vm,
};

// The steps, in the order the script prints them.
const BAD_POLICY: Step = Step::new("bad-policy");
const UNKNOWN_USER: Step = Step::new("unknown-user");
const STATUS_BEFORE: Step = Step::new("status-before");
const INCIDENT: Step = Step::new("incident");
const EXEC_SECRET: Step = Step::new("exec-secret");
const CP_SECRET: Step = Step::new("cp-secret");
const EXEC_MARKER: Step = Step::new("exec-marker");
const EXEC_ABSOLUTE: Step = Step::new("exec-absolute");
const EXEC_SYMLINK: Step = Step::new("exec-symlink");
const EXEC_SH: Step = Step::new("exec-sh");
const EXEC_RELATIVE: Step = Step::new("exec-relative");
const EXEC_PATH_ORDER: Step = Step::new("exec-path-order");
const EXEC_ENV: Step = Step::new("exec-env");
const EXEC_PROCFD: Step = Step::new("exec-procfd");
const EXEC_GLOBALS: Step = Step::new("exec-globals");
const EXEC_FEXECVE: Step = Step::new("exec-fexecve");
const EXEC_EXECVEAT: Step = Step::new("exec-execveat");
const EXEC_INT80: Step = Step::new("exec-int80");
const INT80_OTHER_BINARY: Step = Step::new("int80-other-binary");
const EXEC_AS_INTERPRETER: Step = Step::new("exec-as-interpreter");
const UNPRIVILEGED: Step = Step::new("unprivileged");
const OTHER_BINARY: Step = Step::new("other-binary");
const FEXECVE_PS: Step = Step::new("fexecve-ps");
const PS: Step = Step::new("ps");
const VERSION: Step = Step::new("version");
const PS_LOOKALIKE: Step = Step::new("ps-lookalike");
const VERSION_FLAG: Step = Step::new("version-flag");
const GLOBALS_63: Step = Step::new("globals-63");
const GLOBALS_64: Step = Step::new("globals-64");
const UNKNOWN_GLOBAL: Step = Step::new("unknown-global");
const LONG_COMMAND: Step = Step::new("long-command");
const LONG_ARGV: Step = Step::new("long-argv");
/// `blocked-exec`, `blocked-cp`, …: one step per command of the seed list.
const BLOCKED: Step = Step::new("blocked");
const ROOT_EXEC: Step = Step::new("root-exec");
const MARKER_ABSENT: Step = Step::new("marker-absent");
const OTHER_EXEC: Step = Step::new("other-exec");
const RUN_OWN: Step = Step::new("run-own");
const PS_ALL: Step = Step::new("ps-all");
const STATUS: Step = Step::new("status");
const STATUS_TABLE: Step = Step::new("status-table");
const STATUS_LIMIT: Step = Step::new("status-limit");
const STATUS_UNPRIVILEGED: Step = Step::new("status-unprivileged");
const CONTAINER_EXEC: Step = Step::new("container-exec");
const COMPOSE_EXEC: Step = Step::new("compose-exec");
const CHECK_CLI: Step = Step::new("check-cli");
const VERIFY: Step = Step::new("verify");
const EXEC_AFTER_SIGTERM: Step = Step::new("exec-after-sigterm");
const DETACH: Step = Step::new("detach");
const STATUS_AFTER: Step = Step::new("status-after");
const EXEC_AFTER_STOP: Step = Step::new("exec-after-stop");
const CONTROL_VOLUMES_FROM: Step = Step::new("control-volumes-from");
const CONTROL_HOST_ROOT: Step = Step::new("control-host-root");
const CONTROL_REAL_SOCKET: Step = Step::new("control-real-socket");
const GATE_VOLUMES_FROM: Step = Step::new("gate-volumes-from");
const GATE_HOST_ROOT: Step = Step::new("gate-host-root");
const GATE_REAL_SOCKET: Step = Step::new("gate-real-socket");
const GATE_ROOT_SOCKET: Step = Step::new("gate-root-socket");

/// Read only by root: what `-v /:/host` gives the agent without the gate.
const HOST_SECRET: &str = "host-root-only-s3cret";

pub(super) fn group() -> Group {
    Group {
        name: "default-policy",
        script: script(),
        files: vec![],
        lsm: vm::DEFAULT_LSM,
        flavour: Flavour::RealDaemon,
        disk_files: vec![],
        check,
    }
}

#[expect(
    clippy::format_push_string,
    reason = "the script is built line by line; `write!` would add an infallible `fmt::Result` to every line, and one allocation per line does not matter here"
)]
pub(super) fn script() -> String {
    let mut script = format!(
        r#"
start_dockerd
# A broken policy and an unknown user are refused before anything is attached.
printf '[[rule]]\nname = "r"\nusers = ["ai-worker"]\ndeny = ["exec", "exce"]\n' > /tmp/bad.toml
step {BAD_POLICY} root /usr/local/sbin/enforcer run --config /tmp/bad.toml
printf '[[rule]]\nname = "r"\nusers = ["no-such-user"]\ndeny = ["exec"]\n' > /tmp/unknown-user.toml
step {UNKNOWN_USER} root /usr/local/sbin/enforcer run --config /tmp/unknown-user.toml
step {STATUS_BEFORE} root /usr/local/sbin/enforcer status --json
# The controls: before enforcer runs, the agent's allowed `docker run` reaches into gitea
# and the host, and the real socket is the agent's.
echo {HOST_SECRET} > /root/host-secret
chmod 600 /root/host-secret
step {CONTROL_VOLUMES_FROM} ai-worker docker run --rm --network none --volumes-from gitea local/busybox cat /data/secret
step {CONTROL_HOST_ROOT} ai-worker docker run --rm --network none -v /:/host local/busybox cat /host/root/host-secret
step {CONTROL_REAL_SOCKET} ai-worker curl -sS --unix-socket /run/docker.sock http://docker/_ping

start_enforcer
gate_env ai-worker ai-worker-docker
# The real daemon's debug log has one "Calling METHOD PATH" line per API request: what
# ai-worker's commands sent is the part written from here on, until root's turn below.
API_START=$(wc -c < /tmp/dockerd.log)
step {INCIDENT} ai-worker docker exec -u git gitea gitea admin user generate-access-token -u admin
step {EXEC_SECRET} ai-worker docker exec gitea cat /data/secret
step {CP_SECRET} ai-worker docker cp gitea:/data/secret /tmp/secret
step {EXEC_MARKER} ai-worker docker exec gitea sh -c 'echo ai-worker > /data/worker-was-here'
step {EXEC_ABSOLUTE} ai-worker /usr/bin/docker exec gitea true
ln -s /usr/bin/docker /tmp/dk
step {EXEC_SYMLINK} ai-worker /tmp/dk exec gitea true
step {EXEC_SH} ai-worker sh -c 'docker exec gitea true'
step {EXEC_RELATIVE} ai-worker sh -c 'cd /usr/bin && ./docker exec gitea true'
mkdir -p /tmp/evil-bin && ln -s /usr/bin/docker /tmp/evil-bin/docker
step {EXEC_PATH_ORDER} ai-worker sh -c 'PATH=/tmp/evil-bin:/usr/bin docker exec gitea true'
step {EXEC_ENV} ai-worker env docker exec gitea true
step {EXEC_PROCFD} ai-worker sh -c 'exec 3</usr/bin/docker; exec /proc/self/fd/3 exec gitea true'
step {EXEC_GLOBALS} ai-worker docker -D --log-level=debug -H unix:///run/docker.sock exec gitea true
step {EXEC_FEXECVE} ai-worker /usr/local/bin/exec-helper fexecve /usr/bin/docker docker exec gitea true
step {EXEC_EXECVEAT} ai-worker /usr/local/bin/exec-helper execveat /usr/bin docker docker exec gitea true
step {EXEC_INT80} ai-worker /usr/local/bin/exec-helper int80 /usr/bin/docker docker exec gitea true
step {INT80_OTHER_BINARY} ai-worker /usr/local/bin/exec-helper int80 /bin/ls ls /
printf '#!/usr/bin/docker\n' > /tmp/docker-script
chmod 755 /tmp/docker-script
step {EXEC_AS_INTERPRETER} ai-worker /tmp/docker-script
step {UNPRIVILEGED} bob /usr/local/sbin/enforcer run
step {OTHER_BINARY} ai-worker ls /
step {FEXECVE_PS} ai-worker /usr/local/bin/exec-helper fexecve /usr/bin/docker docker ps
step {PS} ai-worker docker ps
step {VERSION} ai-worker docker version
step {PS_LOOKALIKE} ai-worker docker ps --filter name=exec
step {VERSION_FLAG} ai-worker docker --version
# The engine's limits, in the kernel: 63 options then the command is decided, 64 are not.
step {GLOBALS_63} ai-worker docker $(for i in $(seq 63); do printf -- '-D '; done) ps
step {GLOBALS_64} ai-worker docker $(for i in $(seq 64); do printf -- '-D '; done) ps
step {UNKNOWN_GLOBAL} ai-worker docker --frobnicate ps
step {LONG_COMMAND} ai-worker docker $(for i in $(seq 300); do printf x; done)
step {LONG_ARGV} ai-worker docker exec gitea $(seq 1000 1200)
"#,
    );
    for &command in SEED_DENY_LIST {
        script.push_str(&format!("step {} ai-worker docker {command} gitea /tmp/x\n", BLOCKED.of(command)));
    }
    script.push_str(&format!(
        r"
tail -c +$((API_START + 1)) /tmp/dockerd.log > /tmp/api-worker.log
step {ROOT_EXEC} root docker exec gitea cat /data/secret
step {MARKER_ABSENT} root docker exec gitea sh -c 'test ! -e /data/worker-was-here'
step {OTHER_EXEC} bob docker exec gitea true
# The agent's own containers still run.
step {RUN_OWN} ai-worker docker run --rm --network none local/busybox echo own-container-ran
step {PS_ALL} ai-worker docker ps -a --format '{{{{.Names}}}}'
step {STATUS} root /usr/local/sbin/enforcer status --json --limit 100
step {STATUS_TABLE} root /usr/local/sbin/enforcer status --limit 100
step {STATUS_LIMIT} root /usr/local/sbin/enforcer status --json --limit 2
step {STATUS_UNPRIVILEGED} bob /usr/local/sbin/enforcer status
# The default policy's gate: the same runs as the controls, refused with the rule and field.
step {GATE_VOLUMES_FROM} ai-worker docker run --rm --network none --volumes-from gitea local/busybox cat /data/secret
step {GATE_HOST_ROOT} ai-worker docker run --rm --network none -v /:/host local/busybox cat /host/root/host-secret
step {GATE_REAL_SOCKET} ai-worker curl -sS --unix-socket /run/docker.sock http://docker/_ping
step {GATE_ROOT_SOCKET} root curl -sS --unix-socket /run/docker.sock http://docker/_ping
step {CONTAINER_EXEC} ai-worker docker container exec gitea true
step {COMPOSE_EXEC} ai-worker docker compose exec gitea sh
step {CHECK_CLI} root /usr/local/sbin/enforcer check --user ai-worker -- docker -D container exec -it web sh
step {VERIFY} root /usr/local/sbin/enforcer verify
stop_enforcer
step {EXEC_AFTER_SIGTERM} ai-worker docker exec gitea true
step {DETACH} root /usr/local/sbin/enforcer stop
step {STATUS_AFTER} root /usr/local/sbin/enforcer status --json --limit 100
gate_env_clear ai-worker
step {EXEC_AFTER_STOP} ai-worker docker exec gitea cat /data/secret
report_file api-worker /tmp/api-worker.log
report_file denials /var/lib/enforcer/denials.jsonl
stop_dockerd
",
    ));
    script
}

/// Steps of the default-policy group that exceed the engine's limits, and the reason the
/// kernel must log. (`long-argv` is decided: exec comes first; its log is cut.)
const LIMIT_DENIALS: &[(Step, &str)] = &[
    (GLOBALS_64, "too_many_args"),
    (UNKNOWN_GLOBAL, "unknown_global_option"),
    (LONG_COMMAND, "command_too_long"),
    (LONG_ARGV, "command"),
];

const KILLED_SPELLINGS: &[Step] = &[EXEC_AS_INTERPRETER, EXEC_INT80];

pub(super) fn check(c: &mut Checks) {
    c.finished();
    let (rc, out) = c.step(BAD_POLICY);
    c.check(
        "broken policy rejected with file:line, exit 65 (a policy error)",
        rc == 65 && out.contains("/tmp/bad.toml:4:17: unknown docker command \"exce\""),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(UNKNOWN_USER);
    c.check(
        "unknown user rejected, exit 65",
        rc == 65 && out.contains("unknown user \"no-such-user\""),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(STATUS_BEFORE);
    c.check(
        "status before start: not enforcing, exit 1",
        rc == 1 && out.contains("\"enforcing\": false"),
        || format!("exit {rc}: {out}"),
    );
    c.succeeded(ENFORCER_START);
    for (control, what, secret) in [
        (CONTROL_VOLUMES_FROM, "--volumes-from gitea reads gitea's secret", GITEA_SECRET),
        (CONTROL_HOST_ROOT, "-v /:/host reads a root-only host file", HOST_SECRET),
        (CONTROL_REAL_SOCKET, "the agent's curl gets the real socket's answer", "OK"),
    ] {
        let (rc, out) = c.step(control);
        c.check(format!("control: before enforcer runs, {what}"), rc == 0 && out.contains(secret), || {
            format!("exit {rc}: {out}")
        });
    }
    for (step, field, what) in
        [(GATE_VOLUMES_FROM, "VolumesFrom", "--volumes-from gitea"), (GATE_HOST_ROOT, "Binds", "-v /:/host")]
    {
        let (rc, out) = c.step(step);
        c.check(
            format!("the default policy's gate refuses {what}, naming the rule and the field {field}"),
            rc != 0
                && super::api_gate::refused_by_gate(&out, "ai-worker-docker", field)
                && !out.contains(GITEA_SECRET)
                && !out.contains(HOST_SECRET),
            || format!("exit {rc}: {out}"),
        );
    }
    let (rc, out) = c.step(GATE_REAL_SOCKET);
    c.check(
        "under the default policy the agent's curl gets no answer from the real socket",
        rc != 0 && !out.contains("OK"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(GATE_ROOT_SOCKET);
    c.check("root's curl on the real socket is unaffected", rc == 0 && out.contains("OK"), || {
        format!("exit {rc}: {out}")
    });

    let (rc, out) = c.step(DOCKERD_START);
    c.check("the real dockerd answers (20.10)", rc == 0 && out.trim().starts_with("20.10"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(GITEA_START);
    c.check("root created the gitea container", rc == 0 && out.contains("gitea local/busybox Up"), || {
        format!("exit {rc}: {out}")
    });

    const DENIED_SPELLINGS: &[Step] = &[
        INCIDENT,
        EXEC_SECRET,
        CP_SECRET,
        EXEC_MARKER,
        EXEC_ABSOLUTE,
        EXEC_SYMLINK,
        EXEC_SH,
        EXEC_RELATIVE,
        EXEC_PATH_ORDER,
        EXEC_ENV,
        EXEC_PROCFD,
        EXEC_GLOBALS,
        EXEC_FEXECVE,
        EXEC_EXECVEAT,
        CONTAINER_EXEC,
        COMPOSE_EXEC,
    ];
    for &step in DENIED_SPELLINGS {
        c.denied(step);
    }
    // argv only the re-check can see (rewritten by `#!`, or passed through the 32-bit
    // entry): decided on the kernel's copy, killed past the point of no return.
    for &step in KILLED_SPELLINGS {
        c.killed(step);
    }
    c.succeeded(OTHER_BINARY);
    c.succeeded(VERSION_FLAG);
    c.succeeded(GLOBALS_63);
    for step in LIMIT_DENIALS.iter().map(|&(step, _)| step) {
        c.denied(step);
    }
    c.succeeded(INT80_OTHER_BINARY);
    c.succeeded(FEXECVE_PS);
    let (rc, out) = c.step(UNPRIVILEGED);
    c.check(
        "unprivileged start fails and says what privilege is needed",
        rc != 0 && out.contains("needs root"),
        || format!("exit {rc}: {out}"),
    );
    for &command in SEED_DENY_LIST {
        c.denied(BLOCKED.of(command));
    }
    c.succeeded(PS);
    c.succeeded(PS_LOOKALIKE);
    c.succeeded(VERSION);
    let (_, out) = c.step(VERSION);
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
    let (rc, out) = c.step(ROOT_EXEC);
    c.check(
        "root's docker exec runs in the container (reads the secret)",
        rc == 0 && out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
    c.succeeded(MARKER_ABSENT);
    c.succeeded(OTHER_EXEC);
    let (rc, out) = c.step(RUN_OWN);
    c.check("ai-worker's own docker run --rm works", rc == 0 && out.contains("own-container-ran"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(PS_ALL);
    c.check(
        "ai-worker's docker ps -a lists gitea, and the --rm container is gone",
        rc == 0 && out.trim() == "gitea",
        || format!("exit {rc}: {out}"),
    );

    let (rc, out) = c.step(STATUS);
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
                && d["argv"].as_array().map(Vec::len) == Some(11)
        }),
        || format!("denials: {denials:#?}"),
    );
    let (_, limited) = c.step(STATUS_LIMIT);
    let limited: serde_json::Value = serde_json::from_str(&limited).unwrap_or_default();
    c.check(
        "status --limit 2 shows the two most recent denials",
        limited["denials"].as_array().is_some_and(|d| {
            d.len() == 2 && d[1]["command"] == "image tag" && d[0]["command"] == "image push"
        }),
        || format!("{limited:#}"),
    );
    let (rc, out) = c.step(STATUS_UNPRIVILEGED);
    c.check(
        "status without privilege fails instead of claiming anything",
        rc != 0 && out.contains("run as root"),
        || format!("exit {rc}: {out}"),
    );
    let (_, table) = c.step(STATUS_TABLE);
    c.check(
        "status table shows enforcing and the denial",
        table.contains("enforcing: yes") && table.contains("generate-access-token"),
        || table.clone(),
    );

    let (log, all_records) = c.denial_log();
    // The gate's two refusals and curl's refused connect; the rest are docker's execs.
    let (gate_records, records): (Vec<_>, Vec<_>) =
        all_records.into_iter().partition(|r| r["hook"] == "api" || r["hook"] == "connect-unix");
    c.check(
        "the gate's refusals are denial records (hook api, the field), and so is curl's connect",
        gate_records.len() == 3
            && gate_records.iter().filter(|r| r["hook"] == "api" && r["rule"] == "ai-worker-docker").count()
                == 2
            && gate_records.iter().any(|r| r["field"].as_str().is_some_and(|f| f.contains("VolumesFrom")))
            && gate_records
                .iter()
                .any(|r| r["hook"] == "connect-unix" && r["comm"] == "curl" && r["uid"] == 1001),
        || format!("{gate_records:#?}"),
    );
    // exec-path-order is two denials: the shell tries each PATH entry, and both are docker;
    // exec-after-sigterm is one more, logged by nobody (the daemon is gone) but counted.
    let expected =
        DENIED_SPELLINGS.len() + KILLED_SPELLINGS.len() + SEED_DENY_LIST.len() + LIMIT_DENIALS.len() + 1;
    c.check(
        format!("JSON log has one exec record per denial ({expected})"),
        records.len() == expected,
        || format!("{} records:\n{log}", records.len()),
    );
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
    let (rc, _) = c.step(ENFORCER_EXIT);
    c.check("daemon exits 0 on SIGTERM", rc == 0, || format!("exit {rc}"));
    c.denied(EXEC_AFTER_SIGTERM);
    let (rc, out) = c.step(CHECK_CLI);
    c.check(
        "enforcer check prints the verdict, rule and canonical command, exit 1 for deny",
        rc == 1
            && out.contains("verdict: deny")
            && out.contains("rule: ai-worker-docker")
            && out.contains("command: container exec"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(VERIFY);
    c.check(
        "enforcer verify prints the verifier's instruction count per program",
        rc == 0 && out.contains("enforcer_bprm: verified, ") && out.contains("instructions processed"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(DETACH);
    c.check("enforcer stop detaches", rc == 0 && out.contains("nothing enforces now"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(STATUS_AFTER);
    c.check(
        "status after stop: not enforcing, exit 1, history kept",
        rc == 1 && out.contains("\"enforcing\": false") && out.contains("generate-access-token"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(EXEC_AFTER_STOP);
    c.check(
        "after stop nothing is enforced: ai-worker's exec runs (reads the secret)",
        rc == 0 && out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
}

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
}
