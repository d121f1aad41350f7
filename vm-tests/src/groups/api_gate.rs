//! The API gate group (real daemon): a rule with `api_gate = true`. Before enforcer runs,
//! the agent's allowed `docker run` reads gitea's secret and the host's root-only files
//! (the controls); with the gate, the same commands are refused with a message naming the
//! rule and the field, while the agent's own work (`ps`, `run --rm`, `run -i` with attach,
//! `logs`, `build`) still runs. The real socket is refused to the agent, other rules' and
//! unvetted clients are refused at the gate; with `api_clients = "any"`, curl and raw
//! requests meet the gate: exec refused, smuggling and a second request on a keep-alive
//! connection judged on their own. `kill -9` of the daemon: the agent has no API, root's
//! docker works.

use crate::{
    checks::Checks,
    fixtures::GITEA_SECRET,
    step::{DOCKERD_START, ENFORCER_START, GITEA_START, Step},
    suite::{Flavour, Group},
    vm,
};

const HOST_SECRET: &str = "host-root-only-s3cret";

const CONTROL_VOLUMES_FROM: Step = Step::new("control-volumes-from");
const CONTROL_HOST_ROOT: Step = Step::new("control-host-root");
const CONTROL_PRIVILEGED: Step = Step::new("control-privileged");
const GATE_SOCKET: Step = Step::new("gate-socket");
const REAL_SOCKET: Step = Step::new("real-socket");
const GATE_PS: Step = Step::new("gate-ps");
const VOLUMES_FROM: Step = Step::new("volumes-from");
const HOST_ROOT: Step = Step::new("host-root");
const PRIVILEGED: Step = Step::new("privileged");
const PID_HOST: Step = Step::new("pid-host");
const SOCKET_MOUNT: Step = Step::new("socket-mount");
const NAMED_VOLUME: Step = Step::new("named-volume");
const FORGED_LABEL: Step = Step::new("forged-label");
const EXEC_CLI: Step = Step::new("exec-cli");
const RUN_OWN: Step = Step::new("run-own");
const RUN_ATTACH: Step = Step::new("run-attach");
const RUN_DETACHED: Step = Step::new("run-detached");
const LOGS_OWN: Step = Step::new("logs-own");
const OWN_LABEL: Step = Step::new("own-label");
const OWN_VOLUME: Step = Step::new("own-volume");
const BUILD_OWN: Step = Step::new("build-own");
const CURL_VETTED_ONLY: Step = Step::new("curl-vetted-only");
const RELOAD_ANY: Step = Step::new("reload-any");
const CURL_PING: Step = Step::new("curl-ping");
const CURL_PRIVILEGED: Step = Step::new("curl-privileged");
const CURL_CASE: Step = Step::new("curl-case");
const CURL_EXEC: Step = Step::new("curl-exec");
const CURL_SPELLING: Step = Step::new("curl-spelling");
const SMUGGLE_CL_TE: Step = Step::new("smuggle-cl-te");
const SMUGGLE_TE_CL: Step = Step::new("smuggle-te-cl");
const SMUGGLE_TWO_LENGTHS: Step = Step::new("smuggle-two-lengths");
const BAD_CHUNK: Step = Step::new("bad-chunk");
const KEEPALIVE_SECOND: Step = Step::new("keepalive-second");
const OVERSIZED: Step = Step::new("oversized");
const LOAD_DIRECT: Step = Step::new("load-direct");
const LOAD_GATE: Step = Step::new("load-gate");
const RSS_BEFORE: Step = Step::new("rss-before");
const RSS_AFTER: Step = Step::new("rss-after");
const STREAMS_BEFORE: Step = Step::new("streams-before");
const STREAMS_ENDED: Step = Step::new("streams-ended");
const PS_AFTER_RESTART: Step = Step::new("ps-after-restart");
const STATUS: Step = Step::new("status");
const KILLED_AGENT: Step = Step::new("killed-agent");
const KILLED_ROOT: Step = Step::new("killed-root");
const KILLED_REAL: Step = Step::new("killed-real");

const RULE: &str = "ai-worker-docker";
/// Requests per client of the load test (64 clients). The issue's 500 take 265 s under TCG
/// for the two runs (measured once: docs/api-gate.md); the suite runs a fifth of that.
const LOAD_REQUESTS: u32 = 100;
const GATE: &str = "/run/enforcer/gate/ai-worker-docker.sock";

pub(super) fn group() -> Group {
    Group {
        name: "api-gate",
        script: script(),
        files: vec![],
        lsm: vm::DEFAULT_LSM,
        flavour: Flavour::RealDaemon,
        disk_files: vec![],
        check,
    }
}

/// The rule: the default policy's deny list, with the gate on.
fn policy(clients: &str) -> String {
    format!(
        r#"[[rule]]
name = "{RULE}"
users = ["ai-worker"]
deny = ["exec", "cp", "commit", "diff", "export", "import", "load", "save", "attach", "push", "tag",
        "system dial-stdio", "compose watch", "checkpoint create"]
api_gate = true
api_clients = "{clients}"
"#
    )
}

pub(super) fn script() -> String {
    let vetted = policy("vetted");
    let any = policy("any");
    let run = "docker run --rm --network none";
    format!(
        r#"
start_dockerd
mkdir -p /root && chmod 700 /root && echo {HOST_SECRET} > /root/host-secret && chmod 600 /root/host-secret
# The controls: where nothing defends, the agent's allowed `docker run` reaches gitea's
# volume and the host's root-only files.
step {CONTROL_VOLUMES_FROM} ai-worker {run} --volumes-from gitea local/busybox cat /data/secret
step {CONTROL_HOST_ROOT} ai-worker {run} -v /:/host local/busybox cat /host/root/host-secret
step {CONTROL_PRIVILEGED} ai-worker {run} --privileged --pid=host local/busybox cat /proc/1/root/root/host-secret
cat > /tmp/gate.toml <<'EOF'
{vetted}EOF
start_enforcer --config /tmp/gate.toml
step {GATE_SOCKET} root stat -c '%U:%G %a %F' {GATE}
export GATE_HOST=unix://{GATE}
# The real socket by a name the connect routing (6.7+) does not rewrite: a symlink, so the
# kernel's refusal by inode is what is tested on every kernel (group api-gate-route tests
# the routing).
ln -s /run/docker.sock /tmp/docker-link.sock
step {REAL_SOCKET} ai-worker env DOCKER_HOST=unix:///tmp/docker-link.sock docker ps
step {GATE_PS} ai-worker env DOCKER_HOST=$GATE_HOST docker ps --format '{{{{.Names}}}}'
step {VOLUMES_FROM} ai-worker env DOCKER_HOST=$GATE_HOST {run} --volumes-from gitea local/busybox cat /data/secret
step {HOST_ROOT} ai-worker env DOCKER_HOST=$GATE_HOST {run} -v /:/host local/busybox cat /host/root/host-secret
step {PRIVILEGED} ai-worker env DOCKER_HOST=$GATE_HOST {run} --privileged local/busybox true
step {PID_HOST} ai-worker env DOCKER_HOST=$GATE_HOST {run} --pid=host local/busybox true
step {SOCKET_MOUNT} ai-worker env DOCKER_HOST=$GATE_HOST {run} -v /run/docker.sock:/var/run/docker.sock local/busybox true
step {NAMED_VOLUME} ai-worker env DOCKER_HOST=$GATE_HOST {run} -v gitea-data:/data local/busybox cat /data/secret
step {FORGED_LABEL} ai-worker env DOCKER_HOST=$GATE_HOST {run} --label enforcer.owner={RULE} local/busybox true
step {EXEC_CLI} ai-worker env DOCKER_HOST=$GATE_HOST docker exec gitea cat /data/secret
step {RUN_OWN} ai-worker env DOCKER_HOST=$GATE_HOST {run} local/busybox echo own-container-ran
step {RUN_ATTACH} ai-worker sh -c "echo piped-through-attach | DOCKER_HOST=$GATE_HOST {run} -i local/busybox cat"
step {RUN_DETACHED} ai-worker env DOCKER_HOST=$GATE_HOST docker run -d --name own1 --network none local/busybox sh -c 'echo own-log-line; exec sleep 1000'
sleep 1
step {LOGS_OWN} ai-worker env DOCKER_HOST=$GATE_HOST docker logs own1
step {OWN_LABEL} root docker inspect --format '{{{{index .Config.Labels "enforcer.owner"}}}}' own1
step {OWN_VOLUME} ai-worker env DOCKER_HOST=$GATE_HOST {run} -v own-data:/data local/busybox sh -c 'echo mine > /data/f && cat /data/f'
mkdir -p /tmp/ctx && echo built-file > /tmp/ctx/f && printf 'FROM local/busybox\nCOPY f /f\n' > /tmp/ctx/Dockerfile
chmod -R a+rX /tmp/ctx
step {BUILD_OWN} ai-worker env DOCKER_HOST=$GATE_HOST docker build -q -t own-image /tmp/ctx
# curl is not a vetted client: the kernel keeps it off the gate under api_clients = "vetted".
step {CURL_VETTED_ONLY} ai-worker curl -sS --unix-socket {GATE} http://d/_ping
cat > /tmp/gate.toml <<'EOF'
{any}EOF
step {RELOAD_ANY} root /usr/local/sbin/enforcer reload
step {CURL_PING} ai-worker curl -sS --unix-socket {GATE} http://d/_ping
step {CURL_PRIVILEGED} ai-worker curl -sS --unix-socket {GATE} -H 'Content-Type: application/json' -d '{{"Image":"local/busybox","HostConfig":{{"Privileged":true}}}}' http://d/v1.41/containers/create
step {CURL_CASE} ai-worker curl -sS --unix-socket {GATE} -H 'Content-Type: application/json' -d '{{"Image":"local/busybox","hostconfig":{{"privileged":true}}}}' http://d/v1.41/containers/create
step {CURL_EXEC} ai-worker curl -sS --unix-socket {GATE} -H 'Content-Type: application/json' -d '{{"Cmd":["cat","/data/secret"]}}' http://d/v1.41/containers/gitea/exec
step {CURL_SPELLING} ai-worker curl -sS --path-as-is --unix-socket {GATE} -H 'Content-Type: application/json' -d '{{"Cmd":["true"]}}' 'http://d/v1.41//containers/%67itea/./exec/'
# A length and chunking together, in both orders, with a second request hidden behind the
# body a length-reader would see: read as chunked, and the connection closed after it.
step {SMUGGLE_CL_TE} ai-worker sh -c "printf 'POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 64\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /_ping HTTP/1.1\r\nHost: d\r\n\r\n' | socat -t 3 - UNIX-CONNECT:{GATE}"
step {SMUGGLE_TE_CL} ai-worker sh -c "printf 'POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\nContent-Length: 64\r\n\r\n0\r\n\r\nGET /_ping HTTP/1.1\r\nHost: d\r\n\r\n' | socat -t 3 - UNIX-CONNECT:{GATE}"
step {SMUGGLE_TWO_LENGTHS} ai-worker sh -c "printf 'POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{{}}' | socat -t 3 - UNIX-CONNECT:{GATE}"
step {BAD_CHUNK} ai-worker sh -c "printf 'POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n' | socat -t 3 - UNIX-CONNECT:{GATE}"
step {KEEPALIVE_SECOND} ai-worker sh -c "printf 'GET /_ping HTTP/1.1\r\nHost: d\r\n\r\nPOST /v1.41/containers/gitea/exec HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{{\"Cmd\":[\"true\"]}}  ' | socat -t 3 - UNIX-CONNECT:{GATE}"
head -c 2000000 /dev/zero | tr '\0' ' ' > /tmp/big.json
step {OVERSIZED} ai-worker curl -sS --unix-socket {GATE} -H 'Content-Type: application/json' --data-binary @/tmp/big.json http://d/v1.41/containers/create
# Load: 64 clients x LOAD_REQUESTS requests on keep-alive connections, straight to dockerd
# (root) and through the gate (the agent), a third of them refused at the gate (exec
# inspection: denied; dockerd itself answers 404 for the made-up id).
LOAD_PATHS="/_ping /v1.41/containers/json /v1.41/exec/0123456789ab/json"
date +%s > /tmp/load-start
step {LOAD_DIRECT} root api-load /run/docker.sock 64 {LOAD_REQUESTS} $LOAD_PATHS
step {RSS_BEFORE} root grep VmRSS /proc/$ENFORCER_PID/status
step {LOAD_GATE} ai-worker api-load {GATE} 64 {LOAD_REQUESTS} $LOAD_PATHS
step {RSS_AFTER} root sh -c "grep -E 'VmRSS|VmHWM' /proc/$ENFORCER_PID/status; echo seconds=\$((\$(date +%s) - \$(cat /tmp/load-start)))"
# dockerd restarted under streaming clients: their streams end, new requests get through.
(as ai-worker env DOCKER_HOST=$GATE_HOST docker logs -f own1 > /tmp/logs-f.out 2>&1; echo "logs-exit=$?" >> /tmp/logs-f.out) &
LOGS_PID=$!
(as ai-worker env DOCKER_HOST=$GATE_HOST docker events > /tmp/events.out 2>&1; echo "events-exit=$?" >> /tmp/events.out) &
EVENTS_PID=$!
sleep 2
step {STREAMS_BEFORE} root sh -c 'kill -0 '$LOGS_PID' && kill -0 '$EVENTS_PID' && echo streaming'
kill -TERM $DOCKERD_PID; wait $DOCKERD_PID 2>/dev/null
i=0; while [ $i -lt 100 ] && {{ kill -0 $LOGS_PID 2>/dev/null || kill -0 $EVENTS_PID 2>/dev/null; }}; do sleep 0.1; i=$((i + 1)); done
step {STREAMS_ENDED} root sh -c 'cat /tmp/logs-f.out /tmp/events.out; ! kill -0 '$LOGS_PID' 2>/dev/null && ! kill -0 '$EVENTS_PID' 2>/dev/null'
DOCKER_RAMDISK=true /usr/bin/dockerd -D --iptables=false --ip6tables=false --bridge=none \
    --storage-driver=vfs --group docker --host unix:///run/docker.sock >>/tmp/dockerd.log 2>&1 &
DOCKERD_PID=$!
i=0; while [ $i -lt 600 ] && ! /usr/bin/docker version >/dev/null 2>&1; do sleep 0.1; i=$((i + 1)); done
step {PS_AFTER_RESTART} ai-worker env DOCKER_HOST=$GATE_HOST docker ps -a --format '{{{{.Names}}}}'
step {STATUS} root /usr/local/sbin/enforcer status --json --limit 200
report_file denials /var/lib/enforcer/denials.jsonl
# The gate's daemon killed: the pins keep refusing the agent the real socket, and no one
# serves its gate; root's docker is untouched.
kill -9 $ENFORCER_PID
wait $ENFORCER_PID 2>/dev/null
step {KILLED_AGENT} ai-worker env DOCKER_HOST=$GATE_HOST docker ps
step {KILLED_ROOT} root docker ps -a --format '{{{{.Names}}}}'
step {KILLED_REAL} ai-worker env DOCKER_HOST=unix:///tmp/docker-link.sock docker ps
report_file enforcer-log /tmp/enforcer.log
/usr/local/sbin/enforcer stop >/dev/null 2>&1
stop_dockerd
"#
    )
}

/// An api-load step: its exit code, its `key=number` fields, its text.
fn load(c: &Checks, step: Step) -> (i32, std::collections::BTreeMap<String, u64>, String) {
    let (rc, out) = c.step(step);
    let fields = out
        .split_whitespace()
        .filter_map(|f| f.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect();
    (rc, fields, out)
}

/// The docker CLI's form of a refusal by `rule`'s gate, naming `field`.
pub(super) fn refused_by_gate(out: &str, rule: &str, field: &str) -> bool {
    out.contains(&format!("Error response from daemon: enforcer: rule \"{rule}\" refuses"))
        && out.contains(field)
}

pub(super) fn check(c: &mut Checks) {
    let (rc, out) = c.step(DOCKERD_START);
    c.check("the real dockerd answers", rc == 0, || format!("exit {rc}: {out}"));
    c.succeeded(GITEA_START);
    let (rc, out) = c.step(CONTROL_VOLUMES_FROM);
    c.check(
        "control: without the gate, --volumes-from gitea reads gitea's secret",
        rc == 0 && out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(CONTROL_HOST_ROOT);
    c.check(
        "control: without the gate, -v /:/host reads a root-only host file",
        rc == 0 && out.contains(HOST_SECRET),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(CONTROL_PRIVILEGED);
    c.check(
        "control: without the gate, --privileged --pid=host reaches the host's root",
        rc == 0 && out.contains(HOST_SECRET),
        || format!("exit {rc}: {out}"),
    );
    c.succeeded(ENFORCER_START);
    let (rc, out) = c.step(GATE_SOCKET);
    c.check(
        "the gate socket has dockerd's socket's owner, group and mode",
        rc == 0 && out.trim() == "root:docker 660 socket",
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(REAL_SOCKET);
    c.check(
        "the agent's docker is refused the real socket (permission denied)",
        rc != 0 && out.contains("permission denied"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(GATE_PS);
    c.check("docker ps through the gate lists gitea", rc == 0 && out.contains("gitea"), || {
        format!("exit {rc}: {out}")
    });
    for (step, field, what) in [
        (VOLUMES_FROM, "VolumesFrom", "--volumes-from gitea"),
        (HOST_ROOT, "Binds", "-v /:/host"),
        (PRIVILEGED, "Privileged", "--privileged"),
        (PID_HOST, "PidMode", "--pid=host"),
        (SOCKET_MOUNT, "Binds", "-v /run/docker.sock"),
        (NAMED_VOLUME, "Binds", "gitea's named volume"),
        (FORGED_LABEL, "Labels", "a forged owner label"),
    ] {
        let (rc, out) = c.step(step);
        c.check(
            format!("through the gate, {what} is refused with the rule and field {field}"),
            rc != 0
                && refused_by_gate(&out, RULE, field)
                && !out.contains(GITEA_SECRET)
                && !out.contains(HOST_SECRET),
            || format!("exit {rc}: {out}"),
        );
    }
    c.denied(EXEC_CLI);
    let (rc, out) = c.step(RUN_OWN);
    c.check(
        "the agent's own docker run --rm works through the gate",
        rc == 0 && out.contains("own-container-ran"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(RUN_ATTACH);
    c.check(
        "docker run -i streams stdin and stdout through the gate's upgraded attach",
        rc == 0 && out.contains("piped-through-attach"),
        || format!("exit {rc}: {out}"),
    );
    c.succeeded(RUN_DETACHED);
    let (rc, out) = c.step(LOGS_OWN);
    c.check("docker logs of the agent's container works", rc == 0 && out.contains("own-log-line"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(OWN_LABEL);
    c.check("the gate labelled the agent's container with its rule", rc == 0 && out.trim() == RULE, || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(OWN_VOLUME);
    c.check("a new named volume of the agent's mounts", rc == 0 && out.contains("mine"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(BUILD_OWN);
    c.check(
        "docker build of a small context works through the gate",
        rc == 0 && out.contains("sha256:"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(CURL_VETTED_ONLY);
    c.check(
        "api_clients = \"vetted\": curl is refused the gate socket by the kernel",
        rc != 0 && !out.contains("OK"),
        || format!("exit {rc}: {out}"),
    );
    c.succeeded(RELOAD_ANY);
    let (rc, out) = c.step(CURL_PING);
    c.check(
        "api_clients = \"any\": curl reaches dockerd through the gate",
        rc == 0 && out.trim() == "OK",
        || format!("exit {rc}: {out}"),
    );
    let message = |out: &str| -> String {
        serde_json::from_str::<serde_json::Value>(out.trim())
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    for (step, needle, what) in [
        (CURL_PRIVILEGED, "Privileged", "a privileged create"),
        (CURL_CASE, "rivileged", "a privileged create with lower-case keys (Go matches them)"),
        (CURL_EXEC, "exec", "exec in gitea"),
        (CURL_SPELLING, "exec", "exec in gitea spelt //, %67, ./ and a trailing /"),
    ] {
        let (rc, out) = c.step(step);
        let text = message(&out);
        c.check(
            format!("curl on the gate: {what} is refused with a JSON message naming the rule"),
            rc == 0 && text.contains(&format!("rule \"{RULE}\"")) && text.contains(needle),
            || format!("exit {rc}: {out}"),
        );
    }
    for (step, what) in [(SMUGGLE_CL_TE, "Content-Length first"), (SMUGGLE_TE_CL, "Transfer-Encoding first")]
    {
        let (_, out) = c.step(step);
        c.check(
            format!(
                "a length with chunking ({what}): one refusal, nothing created, the hidden request never read"
            ),
            out.matches("HTTP/1.1 ").count() == 1
                && (out.starts_with("HTTP/1.1 400") || out.starts_with("HTTP/1.1 403"))
                && !out.contains("\"Id\"")
                && !out.contains("OK"),
            || out.clone(),
        );
    }
    for (step, status, what) in
        [(SMUGGLE_TWO_LENGTHS, "400", "two Content-Lengths"), (BAD_CHUNK, "400", "a bad chunk size")]
    {
        let (_, out) = c.step(step);
        c.check(
            format!("raw request with {what}: {status}, and nothing created"),
            out.starts_with(&format!("HTTP/1.1 {status}")) && !out.contains("\"Id\""),
            || out.clone(),
        );
    }
    let (_, out) = c.step(KEEPALIVE_SECOND);
    // The ping's body ("OK") runs into the next status line: find them anywhere.
    let statuses: Vec<&str> =
        out.match_indices("HTTP/1.1 ").filter_map(|(at, _)| out.get(at..at + 12)).collect();
    c.check(
        "keep-alive: the second request (exec) is judged on its own and refused after an allowed ping",
        statuses == ["HTTP/1.1 200", "HTTP/1.1 403"] && out.contains("container exec"),
        || out.clone(),
    );
    let (rc, out) = c.step(OVERSIZED);
    c.check(
        "a create body over the gate's limit is refused (413), never forwarded",
        rc == 0 && out.contains("larger"),
        || format!("exit {rc}: {out}"),
    );
    let total = u64::from(64 * LOAD_REQUESTS);
    let (rc, direct, out) = load(c, LOAD_DIRECT);
    c.check(
        "load straight to dockerd: every request answered, no error",
        rc == 0 && direct.get("requests") == Some(&total) && direct.get("errors") == Some(&0),
        || out.clone(),
    );
    let (rc, gated, out) = load(c, LOAD_GATE);
    let refused = gated.get("refused").copied().unwrap_or(0);
    c.check(
        "load through the gate (64 clients): no error or status direct access did not give, a third refused",
        rc == 0
            && gated.get("requests") == Some(&total)
            && gated.get("errors") == Some(&0)
            && gated.get("ok") == direct.get("ok")
            && gated.get("other") == Some(&0)
            && refused == u64::from(64 * (LOAD_REQUESTS / 3)),
        || format!("{out} (direct: {direct:?})"),
    );
    let (_, before) = c.step(RSS_BEFORE);
    let (_, after) = c.step(RSS_AFTER);
    let kib = |text: &str, key: &str| -> Option<u64> {
        text.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
    };
    c.check(
        "the daemon's RSS stays bounded under load (peak below 64 MiB)",
        kib(&after, "VmHWM").is_some_and(|peak| peak < 64 * 1024),
        || format!("before: {before} after: {after}"),
    );
    let (rc, out) = c.step(STREAMS_BEFORE);
    c.check("logs -f and events stream through the gate", rc == 0 && out.contains("streaming"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(STREAMS_ENDED);
    c.check(
        "dockerd restarted: the streaming clients' streams ended",
        rc == 0 && out.contains("logs-exit=") && out.contains("events-exit=") && out.contains("own-log-line"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(PS_AFTER_RESTART);
    c.check(
        "after dockerd's restart, the gate serves new requests",
        rc == 0 && out.contains("gitea"),
        || format!("exit {rc}: {out}"),
    );
    let (_, denials) = c.denial_log();
    let logged_load = denials
        .iter()
        .filter(|d| {
            d["hook"] == "api" && d["target"].as_str().is_some_and(|t| t.ends_with("/exec/0123456789ab/json"))
        })
        .count() as u64;
    c.check("every refusal of the load is a denial record", logged_load == refused && refused > 0, || {
        format!("{logged_load} records for {refused} refusals")
    });
    let api: Vec<&serde_json::Value> = denials.iter().filter(|d| d["hook"] == "api").collect();
    c.check(
        "the gate's refusals are denial records (hook api, rule, field, target METHOD PATH)",
        api.iter().any(|d| {
            d["rule"] == RULE
                && d["user"] == "ai-worker"
                && d["field"].as_str().is_some_and(|f| f.contains("Privileged"))
                && d["target"].as_str().is_some_and(|t| t.starts_with("POST /v1.41/containers/create"))
        }) && api.iter().any(|d| d["reason"] == "endpoint"),
        || format!("{api:#?}"),
    );
    c.check(
        "the kernel's refusal of the real socket is recorded as gate_only",
        denials.iter().any(|d| d["hook"] == "connect-unix" && d["reason"] == "gate_only"),
        || format!("{denials:#?}"),
    );
    let (rc, status, out) = c.json_step(STATUS);
    c.check(
        "status counts the gate's refusals",
        rc == 0 && status["counters"]["api_refused"].as_u64().is_some_and(|n| n >= 10),
        || out.clone(),
    );
    let (rc, out) = c.step(KILLED_AGENT);
    c.check("daemon killed: the agent's gate is gone (connection refused)", rc != 0, || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(KILLED_ROOT);
    c.check("daemon killed: root's docker is unaffected", rc == 0 && out.contains("gitea"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(KILLED_REAL);
    c.check(
        "daemon killed: the pins still refuse the agent the real socket",
        rc != 0 && out.contains("permission denied"),
        || format!("exit {rc}: {out}"),
    );
    let log = c.report.file("enforcer-log").unwrap_or("");
    c.check(
        "the refused connect to the real socket is logged with the DOCKER_HOST hint",
        log.contains(&format!("DOCKER_HOST=unix://{GATE}")),
        || log.to_owned(),
    );
}
