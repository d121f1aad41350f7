//! The bypass group: a restricted user attacks the policy the way a determined agent
//! would, one class at a time (argv races, interpreters, other exec paths, copies and
//! direct API clients, tampering with a vetted client, identity changes). Every attack has
//! a control next to it (the same tool against an unprotected target, or by an unrestricted
//! user) that succeeds, so a refusal can only come from the enforcer.

use crate::{
    checks::Checks,
    fixtures::SEED_DENY_LIST,
    step::{ENFORCER_START, Step},
    suite::{Flavour, Group},
    vm,
};

// The steps, in the order the script prints them.
const DOCKER_PS: Step = Step::new("docker-ps");
const RACE_UFFD: Step = Step::new("race-uffd");
const RACE_FLIP: Step = Step::new("race-flip");
const RACE_UFFD_UNVETTED: Step = Step::new("race-uffd-unvetted");
const INTERP_EXEC: Step = Step::new("interp-exec");
const INTERP_PS: Step = Step::new("interp-ps");
const BINFMT: Step = Step::new("binfmt");
const COMPAT_PS: Step = Step::new("compat-ps");
const COMPAT_EXEC: Step = Step::new("compat-exec");
const EXECVEAT_PS: Step = Step::new("execveat-ps");
const ENV_TOO_MANY: Step = Step::new("env-too-many");
const ENV_LONG_VALUE: Step = Step::new("env-long-value");
const ARG_LONG_VALUE: Step = Step::new("arg-long-value");
const ARG_LONG_EXEC: Step = Step::new("arg-long-exec");
const COPY_CP: Step = Step::new("copy-cp");
const COPY_MEMFD: Step = Step::new("copy-memfd");
const CURL_SOCKET: Step = Step::new("curl-socket");
const SOCAT_SOCKET: Step = Step::new("socat-socket");
const RAW_SOCKET: Step = Step::new("raw-socket");
const SYMLINK_SOCKET: Step = Step::new("symlink-socket");
const HARDLINK_SOCKET: Step = Step::new("hardlink-socket");
const BIND_SOCKET: Step = Step::new("bind-socket");
const ALT_SOCKET: Step = Step::new("alt-socket");
const ALT_SOCKET_RECREATED: Step = Step::new("alt-socket-recreated");
const BOB_RAW_SOCKET: Step = Step::new("bob-raw-socket");
const BOB_ALT_SOCKET: Step = Step::new("bob-alt-socket");
const ROOT_CURL: Step = Step::new("root-curl");
const DOCKER_TCP: Step = Step::new("docker-tcp");
const CURL_TCP: Step = Step::new("curl-tcp");
const TCP_ANY: Step = Step::new("tcp-any");
const TCP_MAPPED: Step = Step::new("tcp-mapped");
const BOB_TCP: Step = Step::new("bob-tcp");
const PLUGIN: Step = Step::new("plugin");
const TAMPER: Step = Step::new("tamper");
const TAMPER_UNVETTED: Step = Step::new("tamper-unvetted");
const TAMPER_BOB: Step = Step::new("tamper-bob");
const TRACEME: Step = Step::new("traceme");
const TRACEME_UNVETTED: Step = Step::new("traceme-unvetted");
const LD_PRELOAD: Step = Step::new("ld-preload");
const LD_AUDIT: Step = Step::new("ld-audit");
const LD_LIBRARY_PATH: Step = Step::new("ld-library-path");
const LD_OTHER: Step = Step::new("ld-other");
const LD_PRELOAD_BOB: Step = Step::new("ld-preload-bob");
const CGROUP_ROOT_EXEC: Step = Step::new("cgroup-root-exec");
const CGROUP_ROOT_SOCKET: Step = Step::new("cgroup-root-socket");
const CGROUP_NESTED: Step = Step::new("cgroup-nested");
const ROOT_EXEC: Step = Step::new("root-exec");
const SUID_ESCAPE: Step = Step::new("suid-escape");
const SUID_ESCAPE_OUTSIDE: Step = Step::new("suid-escape-outside");
const CGROUP_LATE: Step = Step::new("cgroup-late");
const STATUS: Step = Step::new("status");

/// The words the race attacks flip between: `stop` is allowed, `exec` denied, and both
/// reach the API when they run (`docker stop web true`, `docker exec web true`).
const RACE_ALLOWED: &str = "stop";
const RACE_DENIED: &str = "exec";

pub(super) fn group() -> Group {
    Group {
        name: "bypass",
        script: script(),
        files: vec![],
        lsm: vm::DEFAULT_LSM,
        flavour: Flavour::Initramfs,
        disk_files: vec![],
        check,
    }
}

pub(super) fn script() -> String {
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
api_gate = false # the argv and socket layers alone: the api-gate groups test the gate
POLICY
start_enforcer --config /tmp/bypass.toml
step {DOCKER_PS} ai-worker docker ps

# 1. argv races: the kernel copies argv, then another thread (or a fault handler) changes
# the caller's memory before the check reads it.
step {RACE_UFFD} ai-worker /usr/local/bin/exec-helper uffd-race /usr/bin/docker {RACE_ALLOWED} {RACE_DENIED} docker web race-uffd
step {RACE_FLIP} ai-worker /usr/local/bin/exec-helper flip-race 40 /usr/bin/docker {RACE_ALLOWED} {RACE_DENIED} docker web race-flip
step {RACE_UFFD_UNVETTED} ai-worker /usr/local/bin/exec-helper uffd-race /bin/echo {RACE_ALLOWED} {RACE_DENIED} echo unvetted

# 2. Interpreters: docker receives an argv the kernel rewrote.
printf '#!/usr/bin/docker exec\n' > /tmp/interp-exec
printf '#!/usr/bin/docker ps\n' > /tmp/interp-ps
chmod 755 /tmp/interp-exec /tmp/interp-ps
step {INTERP_EXEC} ai-worker /tmp/interp-exec interp
step {INTERP_PS} ai-worker /tmp/interp-ps
insmod /lib/modules/binfmt_misc.ko 2>/dev/null
mount -t binfmt_misc none /proc/sys/fs/binfmt_misc
echo ':dockerx:E::dkx::/usr/bin/docker:' > /proc/sys/fs/binfmt_misc/register
printf 'x' > /tmp/attack.dkx
chmod 755 /tmp/attack.dkx
step {BINFMT} ai-worker /tmp/attack.dkx exec web binfmt

# 3. Other exec paths and sizes.
step {COMPAT_PS} ai-worker /usr/local/bin/exec32 /usr/bin/docker ps
step {COMPAT_EXEC} ai-worker /usr/local/bin/exec32 /usr/bin/docker exec web compat
step {EXECVEAT_PS} ai-worker /usr/local/bin/exec-helper execveat /usr/bin docker docker ps
step {ENV_TOO_MANY} ai-worker sh -c 'i=0; while [ $i -lt 4200 ]; do export V$i=x; i=$((i + 1)); done; exec docker ps'
step {ENV_LONG_VALUE} ai-worker sh -c 'BIG=$(head -c 100000 /dev/zero | tr "\0" a) exec docker ps'
as ai-worker mkdir -p {long}
step {ARG_LONG_VALUE} ai-worker docker --config {long} ps
step {ARG_LONG_EXEC} ai-worker docker --config {long} exec web long

# 4. Copies of docker and other clients: the socket gate admits vetted binaries only.
step {COPY_CP} ai-worker sh -c 'cp /usr/bin/docker /tmp/docker-copy && exec /tmp/docker-copy ps'
step {COPY_MEMFD} ai-worker /usr/local/bin/exec-helper memfd-exec /usr/bin/docker docker ps
step {CURL_SOCKET} ai-worker curl -sS --unix-socket /run/docker.sock http://docker/curl-attack
step {SOCAT_SOCKET} ai-worker sh -c 'printf "GET /socat-attack HTTP/1.0\r\n\r\n" | socat - UNIX-CONNECT:/run/docker.sock'
step {RAW_SOCKET} ai-worker /usr/local/bin/exec-helper connect-unix /run/docker.sock
ln -s /run/docker.sock /tmp/link.sock
step {SYMLINK_SOCKET} ai-worker /usr/local/bin/exec-helper connect-unix /tmp/link.sock
ln /run/docker.sock /run/hard.sock
step {HARDLINK_SOCKET} ai-worker /usr/local/bin/exec-helper connect-unix /run/hard.sock
touch /mnt/bind.sock
mount --bind /run/docker.sock /mnt/bind.sock
step {BIND_SOCKET} ai-worker /usr/local/bin/exec-helper connect-unix /mnt/bind.sock
step {ALT_SOCKET} ai-worker /usr/local/bin/exec-helper connect-unix /run/alt/api.sock
# dockerd restarts: a new socket inode, learnt again by the daemon.
kill $ALT_PID
wait $ALT_PID 2>/dev/null
/usr/local/sbin/mock-docker-api /run/alt-link/api.sock /tmp/mock-api-alt.log 998 >/dev/null 2>&1 &
sleep 3
step {ALT_SOCKET_RECREATED} ai-worker /usr/local/bin/exec-helper connect-unix /run/alt/api.sock
step {BOB_RAW_SOCKET} bob /usr/local/bin/exec-helper connect-unix /run/docker.sock
step {BOB_ALT_SOCKET} bob /usr/local/bin/exec-helper connect-unix /run/alt/api.sock
step {ROOT_CURL} root curl -sS --unix-socket /run/docker.sock http://docker/root-curl
step {DOCKER_TCP} ai-worker docker -H tcp://127.0.0.1:2375 ps
step {CURL_TCP} ai-worker curl -sS http://127.0.0.1:2375/curl-tcp-attack
step {TCP_ANY} ai-worker /usr/local/bin/exec-helper connect-tcp 0.0.0.0:2375
step {TCP_MAPPED} ai-worker /usr/local/bin/exec-helper connect-tcp '[::ffff:127.0.0.1]:2375'
step {BOB_TCP} bob /usr/local/bin/exec-helper connect-tcp 127.0.0.1:2375
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
step {PLUGIN} ai-worker docker compose ps

# 5. Tampering with a vetted client.
step {TAMPER} ai-worker /usr/local/bin/exec-helper tamper /usr/local/bin/docker-stub docker-stub ps 20
step {TAMPER_UNVETTED} ai-worker /usr/local/bin/exec-helper tamper /usr/local/bin/exec-helper exec-helper ps 20
step {TAMPER_BOB} bob /usr/local/bin/exec-helper tamper /usr/local/bin/docker-stub docker-stub ps 20
step {TRACEME} ai-worker /usr/local/bin/exec-helper traceme /usr/bin/docker docker ps
step {TRACEME_UNVETTED} ai-worker /usr/local/bin/exec-helper traceme /bin/true true
step {LD_PRELOAD} ai-worker env LD_PRELOAD=/tmp/evil.so docker ps
step {LD_AUDIT} ai-worker env LD_AUDIT=/tmp/evil.so docker ps
step {LD_LIBRARY_PATH} ai-worker env LD_LIBRARY_PATH=/tmp docker ps
step {LD_OTHER} ai-worker env LD_BIND_NOW=1 docker ps
step {LD_PRELOAD_BOB} bob env LD_PRELOAD=/tmp/evil.so docker ps

# 6. Identity: a cgroup rule holds whatever the uid (root, sudo, a setuid helper).
step {CGROUP_ROOT_EXEC} root sh -c 'echo $$ > /sys/fs/cgroup/agent.slice/cgroup.procs && exec docker exec web cgroup'
step {CGROUP_ROOT_SOCKET} root sh -c 'echo $$ > /sys/fs/cgroup/agent.slice/cgroup.procs && exec curl -sS --unix-socket /run/docker.sock http://docker/cgroup-attack'
mkdir /sys/fs/cgroup/agent.slice/sub
step {CGROUP_NESTED} root sh -c 'echo $$ > /sys/fs/cgroup/agent.slice/sub/cgroup.procs && exec docker exec web nested'
step {ROOT_EXEC} root docker exec web root
cp /usr/lib/util-linux/setpriv /tmp/suid-setpriv
chmod 4755 /tmp/suid-setpriv
step {SUID_ESCAPE} root sh -c 'echo $$ > /sys/fs/cgroup/agent.slice/cgroup.procs && exec /usr/lib/util-linux/setpriv --reuid=ai-worker --regid=ai-worker --init-groups /tmp/suid-setpriv --reuid=0 --regid=0 --clear-groups /usr/bin/docker exec web suid'
step {SUID_ESCAPE_OUTSIDE} root /usr/lib/util-linux/setpriv --reuid=ai-worker --regid=ai-worker --init-groups /tmp/suid-setpriv --reuid=0 --regid=0 --clear-groups /usr/bin/docker exec web suid-outside
# A cgroup that appears after the daemon started (systemd starts the unit later).
mkdir -p /sys/fs/cgroup/late.slice/agent.service
sleep 3
step {CGROUP_LATE} root sh -c 'echo $$ > /sys/fs/cgroup/late.slice/agent.service/cgroup.procs && exec docker exec web late'

step {STATUS} root /usr/local/sbin/enforcer status --json --limit 0
stop_enforcer
report_file mock-api /tmp/mock-api.log
report_file mock-api-alt /tmp/mock-api-alt.log
report_file denials /var/lib/enforcer/denials.jsonl
"#
    )
}

pub(super) fn check(c: &mut Checks) {
    c.finished();
    c.succeeded(ENFORCER_START);
    c.succeeded(DOCKER_PS);
    let worker = c.api_requests(vm::AI_WORKER_UID);
    let reached = |marker: &str| worker.iter().any(|r| r.contains(marker));
    let (log, records) = c.denial_log();

    // 1. Races.
    let (rc, out) = c.step(RACE_UFFD);
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
    let (rc, out) = c.step(RACE_UFFD_UNVETTED);
    c.check(
        "control: the same race against /bin/echo runs the kernel's copy (exec unvetted)",
        rc == 0 && out.contains("exec unvetted"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(RACE_FLIP);
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
    c.killed(INTERP_EXEC);
    let (rc, out) = c.step(INTERP_PS);
    c.check(
        "interp-ps: docker ps as a #! interpreter runs (docker itself rejects the script argument)",
        rc != 137 && rc != 126 && out.contains("accepts no arguments"),
        || format!("exit {rc}: {out}"),
    );
    c.killed(BINFMT);
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
    c.succeeded(COMPAT_PS);
    c.killed(COMPAT_EXEC);
    c.succeeded(EXECVEAT_PS);
    c.denied(ENV_TOO_MANY);
    c.check(
        "an environment too large to check is refused with its reason",
        records.iter().any(|r| r["reason"] == "too_many_strings"),
        || log.clone(),
    );
    c.succeeded(ENV_LONG_VALUE);
    c.succeeded(ARG_LONG_VALUE);
    c.denied(ARG_LONG_EXEC);

    // 4. Copies and direct clients.
    for step in [COPY_CP, COPY_MEMFD] {
        let (rc, out) = c.step(step);
        c.check(
            format!("{step}: a copy of docker cannot connect to the API"),
            rc != 0 && out.to_lowercase().contains("operation not permitted"),
            || format!("exit {rc}: {out}"),
        );
    }
    for step in [CURL_SOCKET, SOCAT_SOCKET, CURL_TCP] {
        let (rc, out) = c.step(step);
        c.check(format!("{step}: refused"), rc != 0 && !out.contains("OK"), || format!("exit {rc}: {out}"));
    }
    for step in [
        RAW_SOCKET,
        SYMLINK_SOCKET,
        HARDLINK_SOCKET,
        BIND_SOCKET,
        ALT_SOCKET,
        ALT_SOCKET_RECREATED,
        TCP_ANY,
        TCP_MAPPED,
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
    for step in [BOB_RAW_SOCKET, BOB_ALT_SOCKET, BOB_TCP] {
        let (rc, out) = c.step(step);
        c.check(
            format!("control {step}: an unrestricted user connects"),
            rc == 0 && out.contains("200 OK"),
            || format!("exit {rc}: {out}"),
        );
    }
    c.succeeded(ROOT_CURL);
    c.succeeded(DOCKER_TCP);
    let api = c.report.file("mock-api").unwrap_or("").to_string();
    c.check(
        "the vetted docker reaches the API over TCP",
        api.contains("tcp GET ") && api.contains("/containers/json"),
        || api.clone(),
    );
    let (rc, out) = c.step(PLUGIN);
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
    let (rc, out) = c.step(TAMPER);
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
    for step in [TAMPER_UNVETTED, TAMPER_BOB] {
        let (rc, out) = c.step(step);
        c.check(
            format!("control {step}: the same tampering succeeds"),
            rc == 0 && out.contains("ptrace=OK mem=OK vm_writev=OK pidfd_getfd=OK child=running"),
            || format!("exit {rc}: {out}"),
        );
    }
    let (_, out) = c.step(TRACEME);
    c.check("a traced exec of docker is refused", out.contains("traceme-exec=EPERM"), || out.clone());
    let (_, out) = c.step(TRACEME_UNVETTED);
    c.check("control: a traced exec of another program runs", out.contains("traceme-exec=ran"), || {
        out.clone()
    });
    for step in [LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH] {
        c.denied(step);
    }
    c.succeeded(LD_OTHER);
    c.succeeded(LD_PRELOAD_BOB);
    c.check(
        "tampering is logged: ptrace with its target, loader variables and tracing with their reasons",
        records.iter().any(|r| r["hook"] == "ptrace" && r["reason"] == "tamper_client")
            && records.iter().any(|r| r["reason"] == "loader_environment")
            && records.iter().any(|r| r["reason"] == "traced"),
        || log.clone(),
    );

    // 6. Identity.
    for step in [CGROUP_ROOT_EXEC, CGROUP_NESTED, SUID_ESCAPE, CGROUP_LATE] {
        c.denied(step);
    }
    let (rc, out) = c.step(CGROUP_ROOT_SOCKET);
    c.check("root inside the agent's cgroup cannot use curl on the socket", rc != 0, || {
        format!("exit {rc}: {out}")
    });
    c.not_refused(ROOT_EXEC, "control: root outside the cgroup is not restricted");
    c.not_refused(
        SUID_ESCAPE_OUTSIDE,
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

    let (rc, status, out) = c.json_step(STATUS);
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
