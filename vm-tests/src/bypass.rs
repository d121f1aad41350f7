//! The bypass group: a restricted user attacks the policy the way a determined agent
//! would, one class at a time (argv races, interpreters, other exec paths, copies and
//! direct API clients, tampering with a vetted client, identity changes). Every attack has
//! a control next to it (the same tool against an unprotected target, or by an unrestricted
//! user) that succeeds, so a refusal can only come from the enforcer.

use crate::{
    scenarios::{Checks, SEED_DENY_LIST, json_step},
    vm,
};

/// The words the race attacks flip between: `stop` is allowed, `exec` denied, and both
/// reach the API when they run (`docker stop web true`, `docker exec web true`).
const RACE_ALLOWED: &str = "stop";
const RACE_DENIED: &str = "exec";

pub fn script() -> String {
    let deny = SEED_DENY_LIST.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    let long = format!("/tmp/{}/{}", "a".repeat(200), "b".repeat(200));
    format!(
        r#"
ifconfig lo 127.0.0.1 up
mount -t cgroup2 none /sys/fs/cgroup
mkdir /sys/fs/cgroup/agent.slice
echo 1 > /proc/sys/vm/unprivileged_userfaultfd
/usr/local/sbin/mock-docker-api /run/docker.sock /tmp/mock-api.log 998 --tcp 127.0.0.1:2375 >/tmp/mock-api.out 2>&1 &
# A second API whose bound name (through a symlinked directory) is not the listed path:
# only its inode gates it.
mkdir /run/alt && ln -s /run/alt /run/alt-link
/usr/local/sbin/mock-docker-api /run/alt-link/api.sock /tmp/mock-api-alt.log 998 >/dev/null 2>&1 &
ALT_PID=$!
i=0
while {{ [ ! -S /run/docker.sock ] || [ ! -S /run/alt/api.sock ]; }} && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
# A long-lived vetted client: a copy of exec-helper listed as a docker client.
cp /usr/local/bin/exec-helper /usr/local/bin/docker-stub
cat > /tmp/bypass.toml <<'POLICY'
[[rule]]
name = "agent"
users = ["ai-worker"]
cgroups = ["/agent.slice", "/late.slice/agent.service"]
binaries = ["/usr/bin/docker", {{ path = "/usr/local/bin/docker-stub", client = "docker" }}]
sockets = ["/var/run/docker.sock", "/run/alt/api.sock"]
hosts = ["127.0.0.1:2375"]
deny = [{deny}]
POLICY
start_enforcer --config /tmp/bypass.toml
step docker-ps ai-worker docker ps

# 1. argv races: the kernel copies argv, then another thread (or a fault handler) changes
# the caller's memory before the check reads it.
step race-uffd ai-worker /usr/local/bin/exec-helper uffd-race /usr/bin/docker {RACE_ALLOWED} {RACE_DENIED} docker web race-uffd
step race-flip ai-worker /usr/local/bin/exec-helper flip-race 40 /usr/bin/docker {RACE_ALLOWED} {RACE_DENIED} docker web race-flip
step race-uffd-unvetted ai-worker /usr/local/bin/exec-helper uffd-race /bin/echo {RACE_ALLOWED} {RACE_DENIED} echo unvetted

# 2. Interpreters: docker receives an argv the kernel rewrote.
printf '#!/usr/bin/docker exec\n' > /tmp/interp-exec
printf '#!/usr/bin/docker ps\n' > /tmp/interp-ps
chmod 755 /tmp/interp-exec /tmp/interp-ps
step interp-exec ai-worker /tmp/interp-exec interp
step interp-ps ai-worker /tmp/interp-ps
insmod /lib/modules/binfmt_misc.ko 2>/dev/null
mount -t binfmt_misc none /proc/sys/fs/binfmt_misc
echo ':dockerx:E::dkx::/usr/bin/docker:' > /proc/sys/fs/binfmt_misc/register
printf 'x' > /tmp/attack.dkx
chmod 755 /tmp/attack.dkx
step binfmt ai-worker /tmp/attack.dkx exec web binfmt

# 3. Other exec paths and sizes.
step compat-ps ai-worker /usr/local/bin/exec32 /usr/bin/docker ps
step compat-exec ai-worker /usr/local/bin/exec32 /usr/bin/docker exec web compat
step execveat-ps ai-worker /usr/local/bin/exec-helper execveat /usr/bin docker docker ps
step env-too-many ai-worker sh -c 'i=0; while [ $i -lt 4200 ]; do export V$i=x; i=$((i + 1)); done; exec docker ps'
step env-long-value ai-worker sh -c 'BIG=$(head -c 100000 /dev/zero | tr "\0" a) exec docker ps'
as ai-worker mkdir -p {long}
step arg-long-value ai-worker docker --config {long} ps
step arg-long-exec ai-worker docker --config {long} exec web long

# 4. Copies of docker and other clients: the socket gate admits vetted binaries only.
step copy-cp ai-worker sh -c 'cp /usr/bin/docker /tmp/docker-copy && exec /tmp/docker-copy ps'
step copy-memfd ai-worker /usr/local/bin/exec-helper memfd-exec /usr/bin/docker docker ps
step curl-socket ai-worker curl -sS --unix-socket /run/docker.sock http://docker/curl-attack
step socat-socket ai-worker sh -c 'printf "GET /socat-attack HTTP/1.0\r\n\r\n" | socat - UNIX-CONNECT:/run/docker.sock'
step raw-socket ai-worker /usr/local/bin/exec-helper connect-unix /run/docker.sock
ln -s /run/docker.sock /tmp/link.sock
step symlink-socket ai-worker /usr/local/bin/exec-helper connect-unix /tmp/link.sock
ln /run/docker.sock /run/hard.sock
step hardlink-socket ai-worker /usr/local/bin/exec-helper connect-unix /run/hard.sock
touch /mnt/bind.sock
mount --bind /run/docker.sock /mnt/bind.sock
step bind-socket ai-worker /usr/local/bin/exec-helper connect-unix /mnt/bind.sock
step alt-socket ai-worker /usr/local/bin/exec-helper connect-unix /run/alt/api.sock
# dockerd restarts: a new socket inode, learnt again by the daemon.
kill $ALT_PID
wait $ALT_PID 2>/dev/null
/usr/local/sbin/mock-docker-api /run/alt-link/api.sock /tmp/mock-api-alt.log 998 >/dev/null 2>&1 &
sleep 3
step alt-socket-recreated ai-worker /usr/local/bin/exec-helper connect-unix /run/alt/api.sock
step bob-raw-socket bob /usr/local/bin/exec-helper connect-unix /run/docker.sock
step bob-alt-socket bob /usr/local/bin/exec-helper connect-unix /run/alt/api.sock
step root-curl root curl -sS --unix-socket /run/docker.sock http://docker/root-curl
step docker-tcp ai-worker docker -H tcp://127.0.0.1:2375 ps
step curl-tcp ai-worker curl -sS http://127.0.0.1:2375/curl-tcp-attack
step tcp-any ai-worker /usr/local/bin/exec-helper connect-tcp 0.0.0.0:2375
step tcp-mapped ai-worker /usr/local/bin/exec-helper connect-tcp '[::ffff:127.0.0.1]:2375'
step bob-tcp bob /usr/local/bin/exec-helper connect-tcp 127.0.0.1:2375
# A CLI plugin in the user's own plugin directory is an unvetted executable.
as ai-worker mkdir -p /home/ai-worker/.docker/cli-plugins
cat > /home/ai-worker/.docker/cli-plugins/docker-compose <<'PLUGIN'
#!/bin/sh
if [ "$1" = docker-cli-plugin-metadata ]; then
    echo '{{"SchemaVersion":"0.1.0","Vendor":"attacker","Version":"9.9.9","ShortDescription":"x"}}'
    exit 0
fi
exec curl -sS --unix-socket /run/docker.sock http://docker/plugin-attack
PLUGIN
chmod 755 /home/ai-worker/.docker/cli-plugins/docker-compose
chown -R ai-worker:ai-worker /home/ai-worker/.docker
step plugin ai-worker docker compose ps

# 5. Tampering with a vetted client.
step tamper ai-worker /usr/local/bin/exec-helper tamper /usr/local/bin/docker-stub docker-stub ps 20
step tamper-unvetted ai-worker /usr/local/bin/exec-helper tamper /usr/local/bin/exec-helper exec-helper ps 20
step tamper-bob bob /usr/local/bin/exec-helper tamper /usr/local/bin/docker-stub docker-stub ps 20
step traceme ai-worker /usr/local/bin/exec-helper traceme /usr/bin/docker docker ps
step traceme-unvetted ai-worker /usr/local/bin/exec-helper traceme /bin/true true
step ld-preload ai-worker env LD_PRELOAD=/tmp/evil.so docker ps
step ld-audit ai-worker env LD_AUDIT=/tmp/evil.so docker ps
step ld-library-path ai-worker env LD_LIBRARY_PATH=/tmp docker ps
step ld-other ai-worker env LD_BIND_NOW=1 docker ps
step ld-preload-bob bob env LD_PRELOAD=/tmp/evil.so docker ps

# 6. Identity: a cgroup rule holds whatever the uid (root, sudo, a setuid helper).
step cgroup-root-exec root sh -c 'echo $$ > /sys/fs/cgroup/agent.slice/cgroup.procs && exec docker exec web cgroup'
step cgroup-root-socket root sh -c 'echo $$ > /sys/fs/cgroup/agent.slice/cgroup.procs && exec curl -sS --unix-socket /run/docker.sock http://docker/cgroup-attack'
mkdir /sys/fs/cgroup/agent.slice/sub
step cgroup-nested root sh -c 'echo $$ > /sys/fs/cgroup/agent.slice/sub/cgroup.procs && exec docker exec web nested'
step root-exec root docker exec web root
cp /usr/lib/util-linux/setpriv /tmp/suid-setpriv
chmod 4755 /tmp/suid-setpriv
step suid-escape root sh -c 'echo $$ > /sys/fs/cgroup/agent.slice/cgroup.procs && exec /usr/lib/util-linux/setpriv --reuid=ai-worker --regid=ai-worker --init-groups /tmp/suid-setpriv --reuid=0 --regid=0 --clear-groups /usr/bin/docker exec web suid'
step suid-escape-outside root /usr/lib/util-linux/setpriv --reuid=ai-worker --regid=ai-worker --init-groups /tmp/suid-setpriv --reuid=0 --regid=0 --clear-groups /usr/bin/docker exec web suid-outside
# A cgroup that appears after the daemon started (systemd starts the unit later).
mkdir -p /sys/fs/cgroup/late.slice/agent.service
sleep 3
step cgroup-late root sh -c 'echo $$ > /sys/fs/cgroup/late.slice/agent.service/cgroup.procs && exec docker exec web late'

step status root /usr/local/sbin/enforcer status --json --limit 0
stop_enforcer
report_file mock-api /tmp/mock-api.log
report_file mock-api-alt /tmp/mock-api-alt.log
report_file denials /var/lib/enforcer/denials.jsonl
"#
    )
}

pub fn check(c: &mut Checks) {
    c.finished();
    c.succeeded("enforcer-start");
    c.succeeded("docker-ps");
    let worker = c.api_requests(vm::AI_WORKER_UID);
    let reached = |marker: &str| worker.iter().any(|r| r.contains(marker));
    let (log, records) = c.denial_log();

    // 1. Races.
    let (rc, out) = c.step("race-uffd");
    c.check(
        "race-uffd: the caller's argv said stop when checked, the kernel's copy says exec: killed",
        rc == 137 && out.contains("argv[1] now stop"),
        || format!("exit {rc}: {out}"),
    );
    c.check("race-uffd: the allowed word did not run either (killed first)", !reached("race-uffd"), || {
        format!("{worker:?}")
    });
    c.check(
        "no exec of ai-worker reached the API in any attack (races, interpreters, i386, copies)",
        !worker.is_empty() && !worker.iter().any(|r| r.contains("/exec")),
        || format!("{worker:?}"),
    );
    c.check(
        "race-uffd: logged as a race, killed, with the command of the kernel's copy",
        records.iter().any(|r| {
            r["hook"] == "exec-recheck"
                && r["race"] == true
                && r["action"] == "killed"
                && r["command"] == "container exec"
                && r["argv"].get(3) == Some(&serde_json::json!("race-uffd"))
        }),
        || log.clone(),
    );
    let (rc, out) = c.step("race-uffd-unvetted");
    c.check(
        "control: the same race against /bin/echo runs the kernel's copy (exec unvetted)",
        rc == 0 && out.contains("exec unvetted"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step("race-flip");
    let tries = |key: &str| {
        out.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).and_then(|v| v.parse::<u32>().ok()))
            .unwrap_or(0)
    };
    c.check(
        "race-flip: 40 tries, each killed, refused or run (a run is the allowed word)",
        rc == 0 && tries("tries") == 40 && tries("killed") + tries("eperm") + tries("ran") == 40,
        || format!("exit {rc}: {out}"),
    );

    // 2. Interpreters.
    c.killed("interp-exec");
    let (rc, out) = c.step("interp-ps");
    c.check(
        "interp-ps: docker ps as a #! interpreter runs (docker itself rejects the script argument)",
        rc != 137 && rc != 126 && out.contains("accepts no arguments"),
        || format!("exit {rc}: {out}"),
    );
    c.killed("binfmt");
    c.check(
        "binfmt_misc: judged on what docker receives (the file's path is the command: unknown)",
        records.iter().any(|r| {
            r["hook"] == "exec-recheck"
                && r["reason"] == "unknown_command"
                && r["argv"].get(1) == Some(&serde_json::json!("/tmp/attack.dkx"))
        }),
        || log.clone(),
    );

    // 3. Exec paths and sizes.
    c.succeeded("compat-ps");
    c.killed("compat-exec");
    c.succeeded("execveat-ps");
    c.denied("env-too-many");
    c.check(
        "an environment too large to check is refused with its reason",
        records.iter().any(|r| r["reason"] == "too_many_strings"),
        || log.clone(),
    );
    c.succeeded("env-long-value");
    c.succeeded("arg-long-value");
    c.denied("arg-long-exec");

    // 4. Copies and direct clients.
    for step in ["copy-cp", "copy-memfd"] {
        let (rc, out) = c.step(step);
        c.check(
            format!("{step}: a copy of docker cannot connect to the API"),
            rc != 0 && out.to_lowercase().contains("operation not permitted"),
            || format!("exit {rc}: {out}"),
        );
    }
    for step in ["curl-socket", "socat-socket", "curl-tcp"] {
        let (rc, out) = c.step(step);
        c.check(format!("{step}: refused"), rc != 0 && !out.contains("OK"), || format!("exit {rc}: {out}"));
    }
    for step in [
        "raw-socket",
        "symlink-socket",
        "hardlink-socket",
        "bind-socket",
        "alt-socket",
        "alt-socket-recreated",
        "tcp-any",
        "tcp-mapped",
    ] {
        let (rc, out) = c.step(step);
        c.check(
            format!("{step}: connect refused with EPERM"),
            rc == 1 && out.contains("connect: Operation not permitted"),
            || format!("exit {rc}: {out}"),
        );
    }
    for marker in ["curl-attack", "socat-attack", "curl-tcp-attack", "plugin-attack", "cgroup-attack"] {
        let api = c.report.file("mock-api").unwrap_or("");
        c.check(format!("{marker} never reached the API"), !api.contains(marker), || api.to_string());
    }
    for step in ["bob-raw-socket", "bob-alt-socket", "bob-tcp"] {
        let (rc, out) = c.step(step);
        c.check(
            format!("control {step}: an unrestricted user connects"),
            rc == 0 && out.contains("200 OK"),
            || format!("exit {rc}: {out}"),
        );
    }
    c.succeeded("root-curl");
    c.succeeded("docker-tcp");
    let api = c.report.file("mock-api").unwrap_or("").to_string();
    c.check(
        "the vetted docker reaches the API over TCP",
        api.contains("tcp GET ") && api.contains("/containers/json"),
        || api.clone(),
    );
    let (rc, out) = c.step("plugin");
    c.check(
        "a CLI plugin from the user's directory is unvetted: its connection is refused",
        rc != 0 && !out.contains("OK"),
        || format!("exit {rc}: {out}"),
    );
    c.check(
        "socket refusals are logged with the socket, the client's command name and the reason",
        records.iter().any(|r| {
            r["hook"] == "connect-unix"
                && r["comm"] == "curl"
                && r["reason"] == "unvetted_client"
                && r["target"] == "/run/docker.sock"
        }) && records.iter().any(|r| r["hook"] == "connect-tcp" && r["target"] == "127.0.0.1:2375"),
        || log.clone(),
    );

    // 5. Tampering.
    let (rc, out) = c.step("tamper");
    c.check(
        "ptrace, /proc/PID/mem, process_vm_writev, pidfd_getfd on a running vetted client: all refused",
        rc == 0
            && out.contains("child=running")
            && out.contains("ptrace=Operation not permitted")
            && out.contains("mem=Permission denied")
            && out.contains("vm_writev=Operation not permitted")
            && out.contains("pidfd_getfd=Operation not permitted"),
        || format!("exit {rc}: {out}"),
    );
    for step in ["tamper-unvetted", "tamper-bob"] {
        let (rc, out) = c.step(step);
        c.check(
            format!("control {step}: the same tampering succeeds"),
            rc == 0 && out.contains("ptrace=OK mem=OK vm_writev=OK pidfd_getfd=OK child=running"),
            || format!("exit {rc}: {out}"),
        );
    }
    let (_, out) = c.step("traceme");
    c.check("a traced exec of docker is refused", out.contains("traceme-exec=EPERM"), || out.clone());
    let (_, out) = c.step("traceme-unvetted");
    c.check("control: a traced exec of another program runs", out.contains("traceme-exec=ran"), || {
        out.clone()
    });
    for step in ["ld-preload", "ld-audit", "ld-library-path"] {
        c.denied(step);
    }
    c.succeeded("ld-other");
    c.succeeded("ld-preload-bob");
    c.check(
        "tampering is logged: ptrace with its target, loader variables and tracing with their reasons",
        records.iter().any(|r| r["hook"] == "ptrace" && r["reason"] == "tamper_client")
            && records.iter().any(|r| r["reason"] == "loader_environment")
            && records.iter().any(|r| r["reason"] == "traced"),
        || log.clone(),
    );

    // 6. Identity.
    for step in ["cgroup-root-exec", "cgroup-nested", "suid-escape", "cgroup-late"] {
        c.denied(step);
    }
    let (rc, out) = c.step("cgroup-root-socket");
    c.check("root inside the agent's cgroup cannot use curl on the socket", rc != 0, || {
        format!("exit {rc}: {out}")
    });
    c.not_refused("root-exec", "control: root outside the cgroup is not restricted");
    c.not_refused(
        "suid-escape-outside",
        "control: outside the cgroup, a setuid helper that sets the real uid lifts a uid-only rule",
    );
    let root = c.api_requests(0);
    let root_execs = root.iter().filter(|r| r.contains("/containers/web/exec")).count();
    c.check(
        "only the two controls' execs reached the API as root (none from inside the cgroup)",
        root_execs == 2,
        || format!("{root:?}"),
    );
    let alt = c.report.file("mock-api-alt").unwrap_or("");
    c.check(
        "the inode-gated socket saw bob's connection and none of ai-worker's",
        alt.contains(&format!("uid={} ", vm::OTHER_UID))
            && !alt.contains(&format!("uid={} ", vm::AI_WORKER_UID)),
        || alt.to_string(),
    );

    let (rc, status, out) = json_step(c, "status");
    let counter = |name: &str| status["counters"][name].as_u64().unwrap_or(0);
    c.check(
        "status counts races, kills, deferred execs, refused connects and tampering",
        rc == 0
            && counter("races") >= 1
            && counter("killed") >= 4
            && counter("deferred") >= 4
            && counter("connects_refused") >= 10
            && counter("tamper_refused") >= 4,
        || out.clone(),
    );
}
