//! The own-containers-only group (real daemon, issue 15): a gated rule with `own_only`.
//! The agent runs a container, execs into it, copies a file out, reads its logs and
//! removes it; the same commands against `gitea` (created by root, so no owner) are refused
//! by the gate with the rule, the command and "no owner", while root's (the controls) work.
//! Spellings: the id prefix and full id of gitea, an exec instance root created on gitea
//! and started by the agent, a container renamed after creation. A forged owner label at
//! create is refused (root's works). dockerd's own log shows that the gate forwards by the
//! full id it judged, never the name the client sent (the race defence). Then, reloaded
//! with `protect = ["gitea"]` and `see = "own"` and no `own_only`: `inspect gitea` and `logs
//! gitea` refused as protected (root's inspect works), `docker ps` and a raw listing whose
//! `filters` key is spelt `filter%73` list only the agent's own containers (with `see =
//! "all"` before, gitea was listed: the control).

use super::api_gate::refused_by_gate;
use crate::{
    checks::Checks,
    fixtures::GITEA_SECRET,
    step::{DOCKERD_START, ENFORCER_START, GITEA_START, Step},
    suite::{Flavour, Group},
    vm,
};

const CONTROL_ROOT_EXEC: Step = Step::new("control-root-exec");
const CONTROL_ROOT_LOGS: Step = Step::new("control-root-logs");
const CONTROL_ROOT_CP: Step = Step::new("control-root-cp");
const CONTROL_ROOT_EXEC_ID: Step = Step::new("control-root-exec-id");
const CONTROL_ROOT_FORGED: Step = Step::new("control-root-forged");
const RUN_OWN: Step = Step::new("run-own");
const EXEC_OWN: Step = Step::new("exec-own");
const EXEC_OWN_PREFIX: Step = Step::new("exec-own-prefix");
const CP_OWN: Step = Step::new("cp-own");
const LOGS_OWN: Step = Step::new("logs-own");
const INSPECT_OWN: Step = Step::new("inspect-own");
const PS_ALL: Step = Step::new("ps-all");
const EXEC_GITEA: Step = Step::new("exec-gitea");
const CP_GITEA: Step = Step::new("cp-gitea");
const LOGS_GITEA: Step = Step::new("logs-gitea");
const INSPECT_GITEA: Step = Step::new("inspect-gitea");
const STOP_GITEA: Step = Step::new("stop-gitea");
const RM_GITEA: Step = Step::new("rm-gitea");
const EXEC_GITEA_PREFIX: Step = Step::new("exec-gitea-prefix");
const LOGS_GITEA_ID: Step = Step::new("logs-gitea-id");
const EXEC_ID_GITEA: Step = Step::new("exec-id-gitea");
const CURL_EXEC_GITEA: Step = Step::new("curl-exec-gitea");
const RENAME_OWN: Step = Step::new("rename-own");
const EXEC_RENAMED_OWN: Step = Step::new("exec-renamed-own");
const ROOT_RENAME_GITEA: Step = Step::new("root-rename-gitea");
const EXEC_RENAMED_GITEA: Step = Step::new("exec-renamed-gitea");
const FORGED_LABEL: Step = Step::new("forged-label");
const RM_OWN: Step = Step::new("rm-own");
const RELOAD_PROTECT: Step = Step::new("reload-protect");
const INSPECT_GITEA_PROTECTED: Step = Step::new("inspect-gitea-protected");
const LOGS_GITEA_PROTECTED: Step = Step::new("logs-gitea-protected");
const CONTROL_ROOT_INSPECT: Step = Step::new("control-root-inspect");
const INSPECT_OWN_UNPROTECTED: Step = Step::new("inspect-own-unprotected");
const PS_OWN: Step = Step::new("ps-own");
const RAW_LIST_SPELT: Step = Step::new("raw-list-spelt");
const RAW_LIST_CASE: Step = Step::new("raw-list-case");
const CONTROL_ROOT_RAW_LIST: Step = Step::new("control-root-raw-list");

const MINE_ID: Step = Step::new("mine-id");

const RULE: &str = "ai-worker-docker";
const GATE: &str = "/run/enforcer/gate/ai-worker-docker.sock";

pub(super) fn group() -> Group {
    Group {
        name: "api-gate-own",
        script: script(),
        files: vec![],
        lsm: vm::DEFAULT_LSM,
        flavour: Flavour::RealDaemon,
        disk_files: vec![],
        check,
    }
}

/// The hardened example's rule (enforcer/src/hardened-policy.toml) without its protect and
/// see (the second phase tests those), with `api_clients = "any"` so that curl can start an
/// exec instance by id through the gate.
const OWN_POLICY: &str = r#"[[rule]]
name = "ai-worker-docker"
users = ["ai-worker"]
deny = ["commit", "export", "import", "load", "save", "push", "tag", "system dial-stdio"]
own_only = ["exec", "cp", "attach", "diff", "logs", "inspect", "rm", "stop", "kill", "restart",
            "start", "update", "rename", "pause", "unpause", "wait", "port", "top", "stats"]
api_clients = "any"
"#;

/// The second phase: gitea protected, listings narrowed, nothing `own_only`.
const PROTECT_POLICY: &str = r#"[[rule]]
name = "ai-worker-docker"
users = ["ai-worker"]
deny = ["commit", "export", "import", "load", "save", "push", "tag", "system dial-stdio"]
protect = ["gitea"]
see = "own"
api_clients = "any"
"#;

pub(super) fn script() -> String {
    let d = format!("env DOCKER_HOST=unix://{GATE} docker");
    format!(
        r#"
start_dockerd
GITEA_ID=$(/usr/bin/docker inspect --format '{{{{.Id}}}}' gitea)
GITEA_PREFIX=$(echo $GITEA_ID | cut -c1-12)
# Controls: root, on the real socket, does to gitea what the agent will be refused.
step {CONTROL_ROOT_EXEC} root docker exec gitea cat /data/secret
step {CONTROL_ROOT_LOGS} root docker logs gitea
step {CONTROL_ROOT_CP} root docker cp gitea:/data/secret -
# An exec instance on gitea, created by root; the agent will try to start the other one.
new_exec() {{
    curl -sS --unix-socket /run/docker.sock -H 'Content-Type: application/json' \
        -d '{{"Cmd":["cat","/data/secret"],"AttachStdout":true,"AttachStderr":true}}' \
        http://d/containers/gitea/exec | sed -n 's/.*"Id":"\([0-9a-f]*\)".*/\1/p'
}}
CONTROL_EXEC_ID=$(new_exec)
GITEA_EXEC_ID=$(new_exec)
step {CONTROL_ROOT_EXEC_ID} root curl -sS --unix-socket /run/docker.sock -H 'Content-Type: application/json' -d '{{"Detach":false,"Tty":true}}' http://d/exec/$CONTROL_EXEC_ID/start
step {CONTROL_ROOT_FORGED} root docker run --rm --network none --label enforcer.owner={RULE} local/busybox echo root-may-label
cat > /tmp/own.toml <<'EOF'
{OWN_POLICY}EOF
start_enforcer --config /tmp/own.toml
# The agent's own container: everything works on it.
step {RUN_OWN} ai-worker {d} run -d --name mine --network none local/busybox sh -c 'echo own-file > /f; echo my-log-line; exec sleep 100000'
sleep 2
MINE_PREFIX=$(/usr/bin/docker inspect --format '{{{{.Id}}}}' mine | cut -c1-12)
step {MINE_ID} root /usr/bin/docker inspect --format '{{{{.Id}}}}' mine
step {EXEC_OWN} ai-worker {d} exec mine cat /f
step {EXEC_OWN_PREFIX} ai-worker {d} exec $MINE_PREFIX echo own-prefix-exec
step {CP_OWN} ai-worker {d} cp mine:/f -
step {LOGS_OWN} ai-worker {d} logs mine
step {INSPECT_OWN} ai-worker {d} inspect --format '{{{{index .Config.Labels "enforcer.owner"}}}}' mine
step {PS_ALL} ai-worker {d} ps -a --format '{{{{.Names}}}}'
# gitea, root's: refused with the rule, the command and "no owner".
step {EXEC_GITEA} ai-worker {d} exec gitea cat /data/secret
step {CP_GITEA} ai-worker {d} cp gitea:/data/secret -
step {LOGS_GITEA} ai-worker {d} logs gitea
step {INSPECT_GITEA} ai-worker {d} container inspect gitea
step {STOP_GITEA} ai-worker {d} stop -t 1 gitea
step {RM_GITEA} ai-worker {d} rm -f gitea
step {EXEC_GITEA_PREFIX} ai-worker {d} exec $GITEA_PREFIX cat /data/secret
step {LOGS_GITEA_ID} ai-worker {d} logs $GITEA_ID
step {EXEC_ID_GITEA} ai-worker curl -sS --unix-socket {GATE} -H 'Content-Type: application/json' -d '{{"Detach":false,"Tty":true}}' http://d/exec/$GITEA_EXEC_ID/start
# The exec create itself (the CLI's inspect comes first and is refused before it).
step {CURL_EXEC_GITEA} ai-worker curl -sS --unix-socket {GATE} -H 'Content-Type: application/json' -d '{{"Cmd":["cat","/data/secret"],"AttachStdout":true}}' http://d/containers/gitea/exec
# Renamed after creation: ownership goes with the container, not the name.
step {RENAME_OWN} ai-worker {d} rename mine mine-renamed
step {EXEC_RENAMED_OWN} ai-worker {d} exec mine-renamed cat /f
step {ROOT_RENAME_GITEA} root docker rename gitea web
step {EXEC_RENAMED_GITEA} ai-worker {d} exec web cat /data/secret
/usr/bin/docker rename web gitea
step {FORGED_LABEL} ai-worker {d} run --rm --network none --label enforcer.owner={RULE} local/busybox true
step {RM_OWN} ai-worker {d} rm -f mine-renamed
report_file dockerd-requests /tmp/dockerd.log
# Second phase: protect and see.
step {RUN_OWN}-2 ai-worker {d} run -d --name mine2 --network none local/busybox sleep 100000
cat > /tmp/own.toml <<'EOF'
{PROTECT_POLICY}EOF
step {RELOAD_PROTECT} root /usr/local/sbin/enforcer reload
step {INSPECT_GITEA_PROTECTED} ai-worker {d} inspect gitea
step {LOGS_GITEA_PROTECTED} ai-worker {d} logs gitea
step {CONTROL_ROOT_INSPECT} root docker inspect --format '{{{{.Name}}}}' gitea
step {INSPECT_OWN_UNPROTECTED} ai-worker {d} inspect --format '{{{{.Name}}}}' mine2
step {PS_OWN} ai-worker {d} ps -a --format '{{{{.Names}}}}'
step {RAW_LIST_SPELT} ai-worker curl -sS --unix-socket {GATE} 'http://d/containers/json?all=1&filter%73=%7B%7D'
step {RAW_LIST_CASE} ai-worker curl -sS --unix-socket {GATE} 'http://d/containers/json?all=1&Filters=%7B%7D'
step {CONTROL_ROOT_RAW_LIST} root curl -sS --unix-socket /run/docker.sock 'http://d/containers/json?all=1&filter%73=%7B%7D'
report_file denials /var/lib/enforcer/denials.jsonl
report_file enforcer-log /tmp/enforcer.log
/usr/local/sbin/enforcer stop >/dev/null 2>&1
stop_dockerd
"#
    )
}

/// A refusal by the gate's ownership check: the rule, the command, the object, "no owner".
/// The CLI's `exec` and `logs` inspect the container first, so their refusal names the
/// inspect (`docker inspect`): the request the gate refused, the one the CLI sent.
fn refused_not_owned(out: &str, command: &str, object: &str) -> bool {
    let command = if matches!(command, "exec" | "logs") { "docker inspect" } else { command };
    refused_by_gate(out, RULE, object) && out.contains(command) && out.contains("no owner")
}

pub(super) fn check(c: &mut Checks) {
    let (rc, out) = c.step(DOCKERD_START);
    c.check("the real dockerd answers", rc == 0, || format!("exit {rc}: {out}"));
    c.succeeded(GITEA_START);
    for (step, what) in [
        (CONTROL_ROOT_EXEC, "docker exec gitea"),
        (CONTROL_ROOT_LOGS, "docker logs gitea"),
        (CONTROL_ROOT_CP, "docker cp gitea:/data/secret"),
        (CONTROL_ROOT_EXEC_ID, "starting an exec instance on gitea by id"),
    ] {
        let (rc, out) = c.step(step);
        let ok = rc == 0 && (step == CONTROL_ROOT_LOGS || out.contains(GITEA_SECRET));
        c.check(format!("control: root's {what} works on the real socket"), ok, || {
            format!("exit {rc}: {out}")
        });
    }
    let (rc, out) = c.step(CONTROL_ROOT_FORGED);
    c.check(
        "control: root may create a container with an enforcer.owner label (the gate is what refuses it)",
        rc == 0 && out.contains("root-may-label"),
        || format!("exit {rc}: {out}"),
    );
    c.succeeded(ENFORCER_START);
    c.succeeded(RUN_OWN);
    for (step, what, expect) in [
        (EXEC_OWN, "exec into its own container", "own-file"),
        (EXEC_OWN_PREFIX, "exec into its own container by id prefix", "own-prefix-exec"),
        (CP_OWN, "docker cp a file out of its own container", "own-file"),
        (LOGS_OWN, "read its own container's logs", "my-log-line"),
        (INSPECT_OWN, "inspect its own container (owner label shown)", RULE),
        (EXEC_RENAMED_OWN, "exec into its own container after renaming it", "own-file"),
    ] {
        let (rc, out) = c.step(step);
        c.check(format!("own_only: the agent may {what}"), rc == 0 && out.contains(expect), || {
            format!("exit {rc}: {out}")
        });
    }
    c.succeeded(RENAME_OWN);
    c.succeeded(RM_OWN);
    let (rc, out) = c.step(PS_ALL);
    c.check(
        "control for see: with see = \"all\", the agent's docker ps lists gitea",
        rc == 0 && out.contains("gitea"),
        || format!("exit {rc}: {out}"),
    );
    for (step, command, object) in [
        (EXEC_GITEA, "exec", "\"gitea\""),
        (LOGS_GITEA, "logs", "\"gitea\""),
        (INSPECT_GITEA, "inspect", "\"gitea\""),
        (STOP_GITEA, "stop", "\"gitea\""),
        (RM_GITEA, "rm", "\"gitea\""),
        (EXEC_GITEA_PREFIX, "exec", "container"),
        (LOGS_GITEA_ID, "logs", "container"),
        (EXEC_RENAMED_GITEA, "exec", "\"web\""),
    ] {
        let (rc, out) = c.step(step);
        c.check(
            format!("own_only: the agent's {step} is refused naming the rule, `{command}` and gitea's missing owner"),
            rc != 0 && refused_not_owned(&out, command, object) && !out.contains(GITEA_SECRET),
            || format!("exit {rc}: {out}"),
        );
    }
    // `docker cp` asks with HEAD first, whose 403 has no body to carry the message: the
    // refusal shows in the denial log (checked below).
    let (rc, out) = c.step(CP_GITEA);
    c.check(
        "own_only: the agent's docker cp out of gitea fails without the secret",
        rc != 0 && !out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(EXEC_ID_GITEA);
    c.check(
        "own_only: starting root's exec instance on gitea by its id is refused (resolved to its container)",
        rc == 0 && out.contains("exec instance") && out.contains("no owner") && !out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(CURL_EXEC_GITEA);
    c.check(
        "own_only: creating an exec instance on gitea (POST /containers/gitea/exec) is refused naming docker container exec",
        rc == 0 && out.contains("docker container exec") && out.contains("gitea") && out.contains("no owner"),
        || format!("exit {rc}: {out}"),
    );
    c.succeeded(ROOT_RENAME_GITEA);
    let (rc, out) = c.step(FORGED_LABEL);
    c.check(
        "a forged enforcer.owner label at create is refused by the gate",
        rc != 0 && refused_by_gate(&out, RULE, "enforcer.owner"),
        || format!("exit {rc}: {out}"),
    );
    // The race defence: what dockerd was asked for is the full id, never the spelling.
    let dockerd = c.report.file("dockerd-requests").unwrap_or("").to_owned();
    let calls: Vec<&str> = dockerd.lines().filter(|l| l.contains("Calling ")).collect();
    let (_, mine_id) = c.step(MINE_ID);
    let mine_id = mine_id.trim().to_owned();
    // The gate's own inspect (`/containers/mine/json`) is by name: that is the look-up.
    let by_name = calls.iter().any(|l| {
        ["/containers/mine/", "/containers/mine-renamed/"]
            .iter()
            .any(|name| l.contains(name) && !l.contains(&format!("{name}json")))
    });
    c.check(
        "forward by id: dockerd saw the agent's logs, exec and cp on its container's full id, never the name",
        mine_id.len() == 64
            && ["/logs", "/exec", "/archive"].iter().all(|what| {
                calls.iter().any(|l| l.contains(what) && l.contains(&format!("/containers/{mine_id}/")))
            })
            && !by_name,
        || format!("mine: {mine_id}\n{}", calls.join("\n")),
    );
    c.succeeded(RELOAD_PROTECT);
    for step in [INSPECT_GITEA_PROTECTED, LOGS_GITEA_PROTECTED] {
        let (rc, out) = c.step(step);
        c.check(
            format!("protect: the agent's {step} is refused as protected"),
            rc != 0 && refused_by_gate(&out, RULE, "protect = [\"gitea\"]") && !out.contains(GITEA_SECRET),
            || format!("exit {rc}: {out}"),
        );
    }
    let (rc, out) = c.step(CONTROL_ROOT_INSPECT);
    c.check("control: root's inspect gitea works", rc == 0 && out.contains("/gitea"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(INSPECT_OWN_UNPROTECTED);
    c.check("protect: the agent still inspects its own container", rc == 0 && out.contains("/mine2"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(PS_OWN);
    c.check(
        "see = \"own\": the agent's docker ps -a lists only its own container",
        rc == 0 && out.contains("mine2") && !out.contains("gitea"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(RAW_LIST_SPELT);
    c.check(
        "see = \"own\": a listing whose filters key is spelt filter%73 is narrowed too",
        rc == 0 && out.contains("/mine2") && !out.contains("/gitea"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(RAW_LIST_CASE);
    c.check(
        "see = \"own\": a listing with a differently spelt Filters key is refused",
        rc == 0 && out.contains("filters") && !out.contains("/gitea"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(CONTROL_ROOT_RAW_LIST);
    c.check(
        "control: root's raw listing on the real socket lists gitea",
        rc == 0 && out.contains("/gitea"),
        || format!("exit {rc}: {out}"),
    );
    let (denials, records) = c.denial_log();
    c.check(
        "the refusals are denial records (hook api) with reasons owner and protect and the command",
        records
            .iter()
            .any(|d| d["reason"] == "owner" && d["command"].as_str().is_some_and(|s| s.contains("exec")))
            && records
                .iter()
                .any(|d| d["reason"] == "owner" && d["command"].as_str().is_some_and(|s| s.contains("cp")))
            && records.iter().any(|d| d["reason"] == "protect"),
        || denials.clone(),
    );
    c.finished();
}
