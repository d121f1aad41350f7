//! The connect routing group (real daemon): with a gated rule for ai-worker, the agent's
//! plain `docker` (no `DOCKER_HOST`) dials `/var/run/docker.sock`. On kernels with
//! `cgroup/connect_unix` (6.7+: the 6.12 VM) enforcer routes that connect to the rule's
//! gate, so `ps` and `run` work and the gate refuses `--volumes-from gitea`; before 6.7 the
//! kernel refuses the real socket and the log gives the `DOCKER_HOST` hint. On every
//! kernel a spelling routing does not know (a symlink to the socket) is refused by inode,
//! curl routed to the gate is still refused as an unvetted client, a restricted rule
//! without the gate and root are not routed, and with the daemon killed the agent has no
//! API while root's docker works.

use super::api_gate::refused_by_gate;
use crate::{
    checks::Checks,
    fixtures::GITEA_SECRET,
    step::{DOCKERD_START, ENFORCER_START, GITEA_START, Step},
    suite::{Flavour, Group},
    vm,
};

const KERNEL: Step = Step::new("kernel");
const VERIFY: Step = Step::new("verify");
const CONTROL_PLAIN_SECRET: Step = Step::new("control-plain-secret");
const PLAIN_PS: Step = Step::new("plain-ps");
const PLAIN_VOLUMES_FROM: Step = Step::new("plain-volumes-from");
const PLAIN_RUN: Step = Step::new("plain-run");
const PLAIN_EXEC: Step = Step::new("plain-exec");
const RUN_SOCKET_NAME: Step = Step::new("run-socket-name");
const SYMLINK_SPELLING: Step = Step::new("symlink-spelling");
const OTHER_DAEMON: Step = Step::new("other-daemon");
const SANDBOX_BOB: Step = Step::new("sandbox-bob");
const SANDBOX_AGENT: Step = Step::new("sandbox-agent");
const CURL_ROUTED: Step = Step::new("curl-routed");
const UNGATED_PS: Step = Step::new("ungated-ps");
const CONTROL_ROOT_ON_GATE: Step = Step::new("control-root-on-gate");
const OTHER_GATE: Step = Step::new("other-gate");
const ROOT_PS: Step = Step::new("root-ps");
const STATUS: Step = Step::new("status");
const RELOAD_AUDIT: Step = Step::new("reload-audit");
const AUDIT_PS: Step = Step::new("audit-ps");
const AUDIT_STATUS: Step = Step::new("audit-status");
const RELOAD_ENFORCE: Step = Step::new("reload-enforce");
const KILLED_PLAIN: Step = Step::new("killed-plain");
const KILLED_ROOT: Step = Step::new("killed-root");

const RULE: &str = "ai-worker-docker";
const GATE: &str = "/run/enforcer/gate/ai-worker-docker.sock";

pub(super) fn group() -> Group {
    Group {
        name: "api-gate-route",
        script: script(),
        files: vec![],
        lsm: vm::DEFAULT_LSM,
        flavour: Flavour::RealDaemon,
        disk_files: vec![],
        check,
    }
}

/// ai-worker gated (vetted clients), bob restricted by a rule without the gate. The gated
/// rule also lists a second daemon's socket, which its gate does not serve.
const POLICY: &str = r#"[[rule]]
name = "ai-worker-docker"
users = ["ai-worker"]
sockets = ["/var/run/docker.sock", "/tmp/other.sock"]
deny = ["exec", "cp", "commit", "diff", "export", "import", "load", "save", "attach", "push", "tag",
        "system dial-stdio", "compose watch", "checkpoint create"]
api_gate = true

[[rule]]
name = "bob-docker"
users = ["bob"]
deny = ["exec"]
api_gate = false
"#;

pub(super) fn script() -> String {
    let run = "docker run --rm --network none";
    format!(
        r#"
start_dockerd
step {KERNEL} root uname -r
# The control: where nothing defends, the agent's plain docker reads gitea's secret.
step {CONTROL_PLAIN_SECRET} ai-worker {run} --volumes-from gitea local/busybox cat /data/secret
# The agent's own socket (say a rootless daemon's), which it mounts in a sandbox of its own.
printf 'HTTP/1.0 200 OK\r\nContent-Length: 19\r\nConnection: close\r\n\r\nown-socket-answered' > /tmp/own.http
socat UNIX-LISTEN:/tmp/own.sock,fork,mode=666 SYSTEM:'cat /tmp/own.http' &
# A second "daemon" the gated rule lists.
socat UNIX-LISTEN:/tmp/other.sock,fork,mode=666 SYSTEM:'echo other-daemon' &
sleep 1
cat > /tmp/route.toml <<'EOF'
{POLICY}EOF
step {VERIFY} root /usr/local/sbin/enforcer verify
start_enforcer --config /tmp/route.toml
ln -s /run/docker.sock /tmp/docker-link.sock
step {PLAIN_PS} ai-worker docker ps --format '{{{{.Names}}}}'
step {PLAIN_VOLUMES_FROM} ai-worker {run} --volumes-from gitea local/busybox cat /data/secret
step {PLAIN_RUN} ai-worker {run} local/busybox echo routed-run
step {PLAIN_EXEC} ai-worker docker exec gitea cat /data/secret
step {RUN_SOCKET_NAME} ai-worker env DOCKER_HOST=unix:///run/docker.sock docker ps --format '{{{{.Names}}}}'
step {SYMLINK_SPELLING} ai-worker env DOCKER_HOST=unix:///tmp/docker-link.sock docker ps
# In a mount namespace of the agent's own, /run/docker.sock is its own socket: not routed.
step {SANDBOX_BOB} bob unshare -Urm sh -c 'mount --bind /tmp/own.sock /run/docker.sock && curl -sS --max-time 5 --unix-socket /var/run/docker.sock http://d/_ping'
step {SANDBOX_AGENT} ai-worker unshare -Urm sh -c 'mount --bind /tmp/own.sock /run/docker.sock && curl -sS --max-time 5 --unix-socket /var/run/docker.sock http://d/_ping'
step {OTHER_DAEMON} ai-worker env DOCKER_HOST=unix:///tmp/other.sock docker ps --format '{{{{.Names}}}}'
step {CURL_ROUTED} ai-worker curl -sS --max-time 10 --unix-socket /var/run/docker.sock http://docker/_ping
step {UNGATED_PS} bob docker ps --format '{{{{.Names}}}}'
# Another rule's gate: served (root's docker on it works), but not bob's to dial.
step {CONTROL_ROOT_ON_GATE} root env DOCKER_HOST=unix://{GATE} docker ps --format '{{{{.Names}}}}'
step {OTHER_GATE} bob env DOCKER_HOST=unix://{GATE} docker ps --format '{{{{.Names}}}}'
step {ROOT_PS} root docker ps --format '{{{{.Names}}}}'
step {STATUS} root /usr/local/sbin/enforcer status --json --limit 200
# Audit mode: the rule's identities keep the real socket (not routed), and the kernel
# records the would-be refusal.
cp /tmp/route.toml /tmp/route-enforce.toml
{{ echo 'mode = "audit"'; cat /tmp/route-enforce.toml; }} > /tmp/route.toml
step {RELOAD_AUDIT} root /usr/local/sbin/enforcer reload
step {AUDIT_PS} ai-worker docker ps --format '{{{{.Names}}}}'
step {AUDIT_STATUS} root /usr/local/sbin/enforcer status --json --limit 200
cp /tmp/route-enforce.toml /tmp/route.toml
step {RELOAD_ENFORCE} root /usr/local/sbin/enforcer reload
report_file denials /var/lib/enforcer/denials.jsonl
report_file enforcer-log /tmp/enforcer.log
kill -9 $ENFORCER_PID
wait $ENFORCER_PID 2>/dev/null
step {KILLED_PLAIN} ai-worker docker ps
step {KILLED_ROOT} root docker ps --format '{{{{.Names}}}}'
/usr/local/sbin/enforcer stop >/dev/null 2>&1
stop_dockerd
"#
    )
}

/// Whether `uname -r` names a kernel with `cgroup/connect_unix` (6.7 and later).
pub(super) fn routes(release: &str) -> bool {
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (6, 7),
        _ => false,
    }
}

pub(super) fn check(c: &mut Checks) {
    let (rc, out) = c.step(DOCKERD_START);
    c.check("the real dockerd answers", rc == 0, || format!("exit {rc}: {out}"));
    c.succeeded(GITEA_START);
    let (_, release) = c.step(KERNEL);
    let routing = routes(&release);
    let (rc, out) = c.step(VERIFY);
    let verified_route = out
        .lines()
        .any(|l| l.starts_with("enforcer_route: verified, ") && l.contains("instructions processed"));
    c.check(
        if routing {
            "6.7+: enforcer verify loads the routing program and prints its instruction count"
        } else {
            "before 6.7: enforcer verify does not load the routing program"
        },
        rc == 0 && verified_route == routing && out.contains("enforcer_bprm: verified, "),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(CONTROL_PLAIN_SECRET);
    c.check(
        "control: without enforcer, the agent's plain docker run --volumes-from gitea reads the secret",
        rc == 0 && out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
    c.succeeded(ENFORCER_START);
    let log = c.report.file("enforcer-log").unwrap_or("").to_owned();
    let denied_socket = |rc: i32, out: &str| rc != 0 && out.contains("permission denied");
    let (rc, out) = c.step(PLAIN_PS);
    let (rc_vf, out_vf) = c.step(PLAIN_VOLUMES_FROM);
    let (rc_run, out_run) = c.step(PLAIN_RUN);
    let (rc_name, out_name) = c.step(RUN_SOCKET_NAME);
    let (status_rc, status, status_out) = c.json_step(STATUS);
    let routed = status["counters"]["gate_routed"].as_u64();
    if routing {
        c.check(
            "6.7+: the log says connect routing is on, with the routing program's verifier count",
            log.contains("connect routing on")
                && log.lines().any(|l| {
                    l.contains("verifier processed") && l.ends_with("instructions for enforcer_route")
                }),
            || log.clone(),
        );
        c.check(
            "6.7+: the agent's plain docker ps (no DOCKER_HOST) is routed to its gate and lists gitea",
            rc == 0 && out.contains("gitea"),
            || format!("exit {rc}: {out}"),
        );
        c.check(
            "6.7+: routed, plain docker run --volumes-from gitea is refused by the gate with the rule and field",
            rc_vf != 0 && refused_by_gate(&out_vf, RULE, "VolumesFrom") && !out_vf.contains(GITEA_SECRET),
            || format!("exit {rc_vf}: {out_vf}"),
        );
        c.check(
            "6.7+: routed, the agent's own plain docker run --rm works",
            rc_run == 0 && out_run.contains("routed-run"),
            || format!("exit {rc_run}: {out_run}"),
        );
        c.check(
            "6.7+: the socket's other name (/run/docker.sock) is routed too",
            rc_name == 0 && out_name.contains("gitea"),
            || format!("exit {rc_name}: {out_name}"),
        );
        c.check(
            "6.7+: status says routing is on and counts the routed connects",
            status_rc == 0 && status["gate_routing"] == true && routed.is_some_and(|n| n >= 3),
            || status_out.clone(),
        );
    } else {
        c.check(
            "before 6.7: the log says routing is off and why, with the DOCKER_HOST to use",
            log.contains("connect routing off")
                && log.contains("cgroup/connect_unix")
                && log.contains(&format!("DOCKER_HOST=unix://{GATE}")),
            || log.clone(),
        );
        for (what, rc, out) in [
            ("docker ps", rc, &out),
            ("docker run --volumes-from gitea", rc_vf, &out_vf),
            ("docker run --rm", rc_run, &out_run),
            ("docker ps on /run/docker.sock", rc_name, &out_name),
        ] {
            c.check(
                format!("before 6.7: the agent's plain {what} is refused the real socket"),
                denied_socket(rc, out) && !out.contains(GITEA_SECRET),
                || format!("exit {rc}: {out}"),
            );
        }
        c.check(
            "before 6.7: status says routing is off, and nothing is routed",
            status_rc == 0 && status["gate_routing"] == false && routed == Some(0),
            || status_out.clone(),
        );
    }
    let (rc, out) = c.step(PLAIN_EXEC);
    c.check(
        "the incident's docker exec gitea stays refused (argv check, before any connect)",
        rc != 0 && !out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(SYMLINK_SPELLING);
    c.check(
        "a socket spelling routing does not know (a symlink) is refused by the socket's inode",
        denied_socket(rc, &out),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(SANDBOX_BOB);
    c.check(
        "control: in a mount namespace of its own, bob's /var/run/docker.sock is his own socket",
        out.contains("own-socket-answered"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(SANDBOX_AGENT);
    c.check(
        "in a mount namespace of its own, the agent's connect to its own socket at that path is not routed to the gate",
        out.contains("own-socket-answered") && !out.contains("OK"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(OTHER_DAEMON);
    c.check(
        "another daemon's socket the rule lists is not routed to the gate (whose upstream is dockerd): refused",
        denied_socket(rc, &out) && !out.contains("gitea"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(CURL_ROUTED);
    c.check(
        "curl on the socket path is refused (routed or not, it is no vetted client)",
        rc != 0 && !out.contains("OK"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(UNGATED_PS);
    c.check(
        "a restricted rule without the gate is not routed: bob's vetted docker reaches dockerd",
        rc == 0 && out.contains("gitea"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(CONTROL_ROOT_ON_GATE);
    c.check(
        "control: the agent's gate socket is served (root's docker through it lists gitea)",
        rc == 0 && out.contains("gitea"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(OTHER_GATE);
    c.check(
        "bob's vetted docker dialing the agent's gate is refused (another rule's gate would judge him by that rule)",
        denied_socket(rc, &out) && !out.contains("gitea"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(ROOT_PS);
    c.check("root's docker is not routed and works", rc == 0 && out.contains("gitea"), || {
        format!("exit {rc}: {out}")
    });
    let (denials, records) = c.denial_log();
    let curl = if routing { "unvetted_client" } else { "gate_only" };
    c.check(
        format!("the kernel recorded curl's refused connect ({curl}) and the symlink's (gate_only)"),
        records
            .iter()
            .any(|d| d["hook"] == "connect-unix" && d["reason"] == curl && d["user"] == "ai-worker")
            && records.iter().any(|d| d["hook"] == "connect-unix" && d["reason"] == "gate_only"),
        || denials.clone(),
    );
    c.check(
        "the kernel refused bob's connect to the agent's gate itself (other_gate), not only the gate's peer check",
        records.iter().any(|d| d["hook"] == "connect-unix" && d["reason"] == "other_gate" && d["user"] == "bob"),
        || denials.clone(),
    );
    c.succeeded(RELOAD_AUDIT);
    let (rc, out) = c.step(AUDIT_PS);
    c.check("audit mode: the agent's plain docker ps works", rc == 0 && out.contains("gitea"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, audit_status, out) = c.json_step(AUDIT_STATUS);
    c.check(
        "audit mode: the connect is not routed, and the would-be gate_only refusal is recorded as audited",
        rc == 0
            && audit_status["counters"]["gate_routed"] == status["counters"]["gate_routed"]
            && records.iter().any(|d| d["reason"] == "gate_only" && d["action"] == "audited"),
        || format!("before: {status_out}\nafter: {out}"),
    );
    c.succeeded(RELOAD_ENFORCE);
    let (rc, out) = c.step(KILLED_PLAIN);
    c.check("daemon killed: the agent's plain docker has no API", rc != 0 && !out.contains("gitea"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(KILLED_ROOT);
    c.check("daemon killed: root's docker is unaffected", rc == 0 && out.contains("gitea"), || {
        format!("exit {rc}: {out}")
    });
}

#[cfg(test)]
mod tests {
    use super::routes;

    #[test]
    fn kernels_with_connect_unix_are_told_apart() {
        assert!(routes("6.12.117+deb12-cloud-amd64\n"));
        assert!(routes("6.7.0"));
        assert!(!routes("6.1.0-57-cloud-amd64"));
        assert!(!routes("6.6.30"));
        assert!(!routes(""));
    }
}
