//! The subvert group (bypass resistance, round 2): a restricted user subverts the vetted
//! client itself instead of going around it (its executable identity through
//! `PR_SET_MM`, its system calls through seccomp), uses same-power spellings and raw API
//! tunnels, connects over TCP fast open; and the robustness of the daemon and programs
//! (scratch space, all-or-none start, single instance, argv records, idle control clients,
//! a corrupt state file). Each attack has a control that succeeds where nothing defends.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::{
    checks::Checks,
    step::{ENFORCER_START, Step},
    suite::{Flavour, Group},
    vm,
};

// The steps, in the order the script prints them.
const REFUSED_FRESH: Step = Step::new("refused-fresh");
const REFUSED_FRESH_STATUS: Step = Step::new("refused-fresh-status");
const SECOND_DAEMON: Step = Step::new("second-daemon");
const AFTER_SECOND: Step = Step::new("after-second");
const STATUS_AFTER_SECOND: Step = Step::new("status-after-second");
const SET_MM: Step = Step::new("set-mm");
const SET_MM_BOB: Step = Step::new("set-mm-bob");
const NOTIFY: Step = Step::new("notify");
const NOTIFY_BOB: Step = Step::new("notify-bob");
const ERRNO0: Step = Step::new("errno0");
const ERRNO0_BOB: Step = Step::new("errno0-bob");
const PLAIN_FILTERS: Step = Step::new("plain-filters");
const PLAIN_FILTERS_40: Step = Step::new("plain-filters-40");
const FILTERS_UNBOUNDED: Step = Step::new("filters-unbounded");
const FILTERS_UNBOUNDED_BOB: Step = Step::new("filters-unbounded-bob");
const START_ATTACH: Step = Step::new("start-attach");
const START_ATTACH_LONG: Step = Step::new("start-attach-long");
const START_INTERACTIVE: Step = Step::new("start-interactive");
const START_ATTACH_AFTER: Step = Step::new("start-attach-after");
const START_PLAIN: Step = Step::new("start-plain");
const BUILD_PUSH: Step = Step::new("build-push");
const CHECK_START: Step = Step::new("check-start");
const LONG_ARG: Step = Step::new("long-arg");
const JAM: Step = Step::new("jam");
const JAMMED_PS: Step = Step::new("jammed-ps");
const JAMMED_OTHER: Step = Step::new("jammed-other");
const JAMMED_BOB: Step = Step::new("jammed-bob");
const UNJAM: Step = Step::new("unjam");
const UNJAMMED_PS: Step = Step::new("unjammed-ps");
const IDLE_DENIED: Step = Step::new("idle-denied");
const IDLE_LOGGED: Step = Step::new("idle-logged");
const IDLE_PING: Step = Step::new("idle-ping");
const REFUSED_RESTART: Step = Step::new("refused-restart");
const OLD_PINS_EXEC: Step = Step::new("old-pins-exec");
const OLD_PINS_SOCKET: Step = Step::new("old-pins-socket");
const OLD_PINS_STATUS: Step = Step::new("old-pins-status");
const DIAL_STDIO: Step = Step::new("dial-stdio");
const DIAL_STDIO_BOB: Step = Step::new("dial-stdio-bob");
const SSH_TUNNEL: Step = Step::new("ssh-tunnel");
const SSH_TUNNEL_BOB: Step = Step::new("ssh-tunnel-bob");
const CHECK_TUNNEL: Step = Step::new("check-tunnel");
const FAKE_LOADER: Step = Step::new("fake-loader");
const FAKE_LOADER_BOB: Step = Step::new("fake-loader-bob");
const USERNS_PS: Step = Step::new("userns-ps");
const USERNS_OTHER: Step = Step::new("userns-other");
const FASTOPEN: Step = Step::new("fastopen");
const FASTOPEN_BOB: Step = Step::new("fastopen-bob");
const RELOAD_RACE: Step = Step::new("reload-race");
const STOP_AFTER_RELOAD: Step = Step::new("stop-after-reload");
const STATUS: Step = Step::new("status");

/// The fake dynamic loader (`crate::elf64`) for the VM's docker socket, written into `work`.
fn fake_loader(work: &Path) -> Result<PathBuf> {
    let path = work.join("fake-ld");
    std::fs::write(&path, crate::elf64::fake_loader("/run/docker.sock"))?;
    Ok(path)
}

/// The wrapper script's words exactly, as a user would write them into a policy.
const WRAPPER_WORDS: &str =
    r#""exec", "cp", "commit", "diff", "export", "import", "load", "save", "attach", "push", "tag""#;

pub(super) fn group(work: &Path) -> Result<Group> {
    Ok(Group {
        name: "subvert",
        script: script(),
        files: vec![("attack/fake-ld".into(), 0o755, fake_loader(work)?)],
        lsm: vm::DEFAULT_LSM,
        flavour: Flavour::Initramfs,
        disk_files: vec![],
        check,
    })
}

pub(super) fn script() -> String {
    let argv_only = crate::fixtures::start_enforcer_argv_only();
    let long_arg = "x".repeat(255);
    format!(
        r#"
ifconfig lo 127.0.0.1 up
/usr/local/sbin/mock-docker-api /run/docker.sock /tmp/mock-api.log 998 --tcp 127.0.0.1:2375 >/tmp/mock-api.out 2>&1 &
i=0
while [ ! -S /run/docker.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done

# All or none: a start whose sixth program the kernel refuses attaches nothing at all.
step {REFUSED_FRESH} root env ENFORCER_TEST_REFUSE_PROGRAM=enforcer_prctl /usr/local/sbin/enforcer run
step {REFUSED_FRESH_STATUS} root /usr/local/sbin/enforcer status --json --limit 0

# A state file cut short by a crash: reported, moved aside, a fresh record started.
mkdir -p /var/lib/enforcer
printf '{{"enforcing_since": "2026' > /var/lib/enforcer/state.json
# The default policy's argv layer alone (the mock cannot serve its gate).
{argv_only}
FIRST_PID=$ENFORCER_PID
report_file state-corrupt /var/lib/enforcer/state.json.corrupt
# One daemon at a time.
step {SECOND_DAEMON} root /usr/local/sbin/enforcer run
step {AFTER_SECOND} ai-worker docker exec gitea after-second
step {STATUS_AFTER_SECOND} root /usr/local/sbin/enforcer status --json --limit 0

# 1. The executable identity, rewritten by the process itself (PR_SET_MM_MAP with exe_fd,
# allowed with CAP_CHECKPOINT_RESTORE in a user namespace of its own).
step {SET_MM} ai-worker /usr/local/bin/subvert set-mm-exe /usr/bin/docker /run/docker.sock
step {SET_MM_BOB} bob /usr/local/bin/subvert set-mm-exe /usr/bin/docker /run/docker.sock

# 2. seccomp: a supervisor answers the vetted client's socket() with a socket it shares.
step {NOTIFY} ai-worker /usr/local/bin/subvert seccomp-notify /usr/bin/docker docker version
step {NOTIFY_BOB} bob /usr/local/bin/subvert seccomp-notify /usr/bin/docker docker version
step {ERRNO0} ai-worker /usr/local/bin/subvert seccomp-errno0 /usr/bin/docker docker version
step {ERRNO0_BOB} bob /usr/local/bin/subvert seccomp-errno0 /usr/bin/docker docker version
# Plain filters (systemd's SystemCallFilter=, a runtime's default profile) keep working.
step {PLAIN_FILTERS} ai-worker /usr/local/bin/subvert seccomp-plain 3 /usr/bin/docker docker ps
step {PLAIN_FILTERS_40} ai-worker /usr/local/bin/subvert seccomp-plain 40 /usr/bin/docker docker ps
step {FILTERS_UNBOUNDED} ai-worker /usr/local/bin/subvert seccomp-plain 130 /usr/bin/docker docker ps
step {FILTERS_UNBOUNDED_BOB} bob /usr/local/bin/subvert seccomp-plain 130 /usr/bin/docker docker ps

# 3. Same-power flags of allowed commands.
step {START_ATTACH} ai-worker docker start -a gitea
step {START_ATTACH_LONG} ai-worker docker -D container start --attach gitea
step {START_INTERACTIVE} ai-worker docker start -ai gitea
step {START_ATTACH_AFTER} ai-worker docker start gitea -a
step {START_PLAIN} ai-worker docker start gitea
step {BUILD_PUSH} ai-worker docker build --push /tmp
step {CHECK_START} root /usr/local/sbin/enforcer check --user ai-worker -- docker start -i gitea

# An argument of 255 bytes and more is recorded whole (up to the buffer), in its place.
step {LONG_ARG} ai-worker docker exec gitea {long_arg} after-long

# 4. Scratch space held by a preempted run: restricted execs of docker fail closed, nobody
# else notices.
step {JAM} root /usr/local/bin/subvert jam-scratch 1
step {JAMMED_PS} ai-worker docker ps
step {JAMMED_OTHER} ai-worker ls /
step {JAMMED_BOB} bob docker ps
step {UNJAM} root /usr/local/bin/subvert jam-scratch 0
step {UNJAMMED_PS} ai-worker docker ps

# 5. Twenty idle control clients do not hold up the daemon: a denial is logged at once.
i=0
while [ $i -lt 20 ]; do
    (sleep 60 | socat - UNIX-CONNECT:/run/enforcer/control.sock >/dev/null 2>&1) &
    i=$((i + 1))
done
sleep 1
step {IDLE_DENIED} ai-worker docker exec gitea while-idle
step {IDLE_LOGGED} root sh -c 'i=0; while [ $i -lt 30 ]; do grep -q while-idle /var/lib/enforcer/denials.jsonl && exit 0; sleep 0.1; i=$((i + 1)); done; exit 1'
step {IDLE_PING} root /usr/local/sbin/enforcer status --json --limit 0
busybox killall socat 2>/dev/null
cp /tmp/enforcer.log /tmp/enforcer-first.log
report_file enforcer-first-log /tmp/enforcer-first.log

# 6. A failed restart leaves the previous pins enforcing, exec hooks and socket gate alike.
kill -9 $ENFORCER_PID
wait $ENFORCER_PID 2>/dev/null
step {REFUSED_RESTART} root env ENFORCER_TEST_REFUSE_PROGRAM=enforcer_inet_send /usr/local/sbin/enforcer run
step {OLD_PINS_EXEC} ai-worker docker exec gitea old-pins
step {OLD_PINS_SOCKET} ai-worker /usr/local/bin/exec-helper connect-unix /run/docker.sock
step {OLD_PINS_STATUS} root /usr/local/sbin/enforcer status --json --limit 0

# 7. A policy that lists exactly the wrapper's words: raw API tunnels are denied anyway.
cp /usr/local/bin/exec-helper /usr/local/bin/docker-stub
cat > /tmp/wrapper.toml <<'POLICY'
[[rule]]
name = "wrapper-words"
users = ["ai-worker"]
binaries = ["/usr/bin/docker", {{ path = "/usr/local/bin/docker-stub", client = "docker" }}]
hosts = ["127.0.0.1:2375"]
deny = [{WRAPPER_WORDS}]
api_gate = false # the argv layer alone: the api-gate groups test the gate
POLICY
start_enforcer --config /tmp/wrapper.toml
printf 'POST /v1.41/containers/gitea/exec?via=dial-stdio HTTP/1.1\r\nHost: docker\r\nContent-Length: 2\r\n\r\n{{}}' > /tmp/exec.http
step {DIAL_STDIO} ai-worker sh -c 'docker system dial-stdio < /tmp/exec.http'
step {DIAL_STDIO_BOB} bob sh -c 'docker system dial-stdio < /tmp/exec.http'
mkdir -p /tmp/fake-ssh
printf '#!/bin/sh\nexec docker system dial-stdio\n' > /tmp/fake-ssh/ssh
chmod 755 /tmp/fake-ssh/ssh
step {SSH_TUNNEL} ai-worker sh -c 'PATH=/tmp/fake-ssh:$PATH docker -H ssh://agent@elsewhere ps'
step {SSH_TUNNEL_BOB} bob sh -c 'PATH=/tmp/fake-ssh:$PATH docker -H ssh://agent@elsewhere ps'
step {CHECK_TUNNEL} root /usr/local/sbin/enforcer check --config /tmp/wrapper.toml --user ai-worker -- docker system dial-stdio

# 8. A dynamically linked vetted client runs the caller's loader in a user and mount
# namespace of the caller's own (exe_file stays the client's): refused to run there.
step {FAKE_LOADER} ai-worker unshare -Urm sh -c 'mount --bind /attack/fake-ld /lib64/ld-linux-x86-64.so.2 && exec /usr/local/bin/docker-stub ps'
step {FAKE_LOADER_BOB} bob unshare -Urm sh -c 'mount --bind /attack/fake-ld /lib64/ld-linux-x86-64.so.2 && exec /usr/local/bin/docker-stub ps'
step {USERNS_PS} ai-worker unshare -Ur docker ps
step {USERNS_OTHER} ai-worker unshare -Ur ls /

# 9. TCP fast open connects inside sendto(), not through connect().
step {FASTOPEN} ai-worker /usr/local/bin/subvert fastopen 127.0.0.1:2375
step {FASTOPEN_BOB} bob /usr/local/bin/subvert fastopen 127.0.0.1:2375

# 10. A reload between an exec's two checks: the early check allows `stop` under the
# policy in force, a reload to one that denies it lands while the exec waits between the
# checks (held by a fanotify permission event on the loader), and the re-check judges by
# the generation the early check used: no kill, no "race".
sed 's/^deny = \[/deny = ["stop", /' /tmp/wrapper.toml > /tmp/wrapper-stop.toml
/usr/local/bin/subvert reload-race /tmp/wrapper.toml /tmp/wrapper-stop.toml /tmp/race-ready 1001 > /tmp/reload-race.out 2>&1 &
RACE_PID=$!
i=0
while [ ! -e /tmp/race-ready ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
step {RELOAD_RACE} ai-worker /usr/local/bin/docker-stub stop web
wait $RACE_PID
report_file reload-race /tmp/reload-race.out
step {STOP_AFTER_RELOAD} ai-worker /usr/local/bin/docker-stub stop web

step {STATUS} root /usr/local/sbin/enforcer status --json --limit 0
stop_enforcer
report_file mock-api /tmp/mock-api.log
report_file denials /var/lib/enforcer/denials.jsonl
"#
    )
}

pub(super) fn check(c: &mut Checks) {
    c.finished();
    let (log, records) = c.denial_log();
    let api = c.report.file("mock-api").unwrap_or("").to_string();
    let reached = |uid: u32, via: &str| {
        api.lines().any(|l| l.starts_with(&format!("uid={uid} ")) && l.contains(&format!("via={via}")))
    };
    let tcp_reached =
        |via: &str| api.lines().any(|l| l.starts_with("tcp ") && l.contains(&format!("via={via}")));

    // All or none.
    let (rc, out) = c.step(REFUSED_FRESH);
    c.check(
        "a start whose sixth program is refused fails with the program named",
        rc != 0 && out.contains("refused program enforcer_prctl"),
        || format!("exit {rc}: {out}"),
    );
    let (_, status, out) = c.json_step(REFUSED_FRESH_STATUS);
    c.check(
        "after that failed start nothing is attached (not half a set of hooks)",
        status["enforcing"] == false,
        || out.clone(),
    );

    // Corrupt state, single instance.
    c.succeeded(ENFORCER_START);
    let enforcer_log = c.report.file("enforcer-first-log").unwrap_or("").to_string();
    c.check(
        "a corrupt state.json is reported and moved aside",
        enforcer_log.contains("state.json is corrupt") && c.report.file("state-corrupt").is_some(),
        || enforcer_log.clone(),
    );
    let (rc, out) = c.step(SECOND_DAEMON);
    c.check(
        "a second daemon is refused with the first one's pid",
        rc != 0 && out.contains("another enforcer daemon is already running (pid "),
        || format!("exit {rc}: {out}"),
    );
    c.denied(AFTER_SECOND);
    let (_, status, out) = c.json_step(STATUS_AFTER_SECOND);
    c.check(
        "the first daemon still answers and enforces",
        status["enforcing"] == true && status["daemon"]["running"] == true,
        || out.clone(),
    );

    // 1. PR_SET_MM.
    let (_, out) = c.step(SET_MM_BOB);
    c.check(
        "control: the PR_SET_MM tool makes /usr/bin/docker the executable where nothing defends",
        out.contains("set_mm=OK exe=/usr/bin/docker request=HTTP/1.1"),
        || out.clone(),
    );
    c.check("control: its request reaches the API", reached(vm::OTHER_UID, "set-mm-exe"), || api.clone());
    let (_, out) = c.step(SET_MM);
    c.check(
        "PR_SET_MM is refused to a restricted user: the executable stays the tool, the socket refuses it",
        out.contains("set_mm=Operation_not_permitted")
            && out.contains("exe=/usr/local/bin/subvert")
            && out.contains("request=Operation not permitted"),
        || out.clone(),
    );
    c.check(
        "PR_SET_MM: the incident's exec never reached the API",
        !reached(vm::AI_WORKER_UID, "set-mm-exe"),
        || api.clone(),
    );
    c.check(
        "PR_SET_MM refusals are logged (hook prctl, reason set_mm)",
        records.iter().any(|r| r["hook"] == "prctl" && r["reason"] == "set_mm"),
        || log.clone(),
    );

    // 2. seccomp.
    let (_, out) = c.step(NOTIFY_BOB);
    c.check(
        "control: the seccomp supervisor injects its socket and sends its own request where nothing defends",
        out.contains("injected=OK request="),
        || out.clone(),
    );
    c.check(
        "control: the supervisor's request reaches the API",
        reached(vm::OTHER_UID, "seccomp-notify"),
        || api.clone(),
    );
    let (_, out) = c.step(NOTIFY);
    c.check(
        "a vetted client under a seccomp listener is refused at exec",
        out.contains("child=exec-EPERM") && !out.contains("injected=OK"),
        || out.clone(),
    );
    c.check(
        "seccomp listener: nothing reached the API",
        !reached(vm::AI_WORKER_UID, "seccomp-notify"),
        || api.clone(),
    );
    let (_, out) = c.step(ERRNO0_BOB);
    c.check(
        "control: a plain ERRNO(0) filter hands docker a shared socket where nothing defends",
        out.lines().last().is_some_and(|l| l.starts_with("request=") && !l.contains("not-connected")),
        || out.clone(),
    );
    c.check(
        "control: the ERRNO(0) attack's request reaches the API",
        reached(vm::OTHER_UID, "seccomp-errno0"),
        || api.clone(),
    );
    let (_, out) = c.step(ERRNO0);
    c.check(
        "a vetted client under a fake-success filter is refused at exec",
        out.contains("child=exec-EPERM"),
        || out.clone(),
    );
    c.check(
        "seccomp ERRNO(0): nothing reached the API",
        !reached(vm::AI_WORKER_UID, "seccomp-errno0"),
        || api.clone(),
    );
    for step in [PLAIN_FILTERS, PLAIN_FILTERS_40] {
        let (_, out) = c.step(step);
        c.check(
            format!("{step}: docker ps runs under plain seccomp filters"),
            out.contains("child=exit=0"),
            || out.clone(),
        );
    }
    let (_, out) = c.step(FILTERS_UNBOUNDED);
    c.check(
        "a filter chain longer than the walk's bound is refused",
        out.contains("child=exec-EPERM"),
        || out.clone(),
    );
    let (_, out) = c.step(FILTERS_UNBOUNDED_BOB);
    c.check(
        "control: the same chain does not stop an unrestricted user",
        out.contains("child=exit=0"),
        || out.clone(),
    );
    c.check(
        "seccomp refusals are logged with their reasons",
        ["seccomp_listener", "seccomp_fake_success", "seccomp_unreadable"]
            .iter()
            .all(|reason| records.iter().any(|r| r["reason"] == *reason)),
        || log.clone(),
    );

    // 3. Same-power flags.
    for step in [START_ATTACH, START_ATTACH_LONG, START_INTERACTIVE, START_ATTACH_AFTER, BUILD_PUSH] {
        c.denied(step);
    }
    c.not_refused(START_PLAIN, "docker start without attaching is allowed");
    c.check(
        "no attach reached the API",
        !api.lines().any(|l| l.starts_with(&format!("uid={} ", vm::AI_WORKER_UID)) && l.contains("/attach")),
        || api.clone(),
    );
    let (rc, out) = c.step(CHECK_START);
    c.check(
        "enforcer check names start -i as an attach",
        rc == 1 && out.contains("verdict: deny") && out.contains("command: container attach"),
        || format!("exit {rc}: {out}"),
    );

    // Long arguments in the record.
    c.denied(LONG_ARG);
    let long = "x".repeat(255);
    c.check(
        "a 255-byte argument is recorded, and the next argument after it",
        records.iter().any(|r| {
            r["argv"].get(3) == Some(&serde_json::json!(long))
                && r["argv"].get(4) == Some(&serde_json::json!("after-long"))
        }),
        || log.clone(),
    );

    // Scratch space busy.
    let (rc, out) = c.step(JAM);
    c.check("the scratch claim was jammed on the VM's CPU", rc == 0 && out.contains("jammed=1"), || {
        format!("exit {rc}: {out}")
    });
    c.denied(JAMMED_PS);
    c.succeeded(JAMMED_OTHER);
    c.succeeded(JAMMED_BOB);
    c.succeeded(UNJAMMED_PS);

    // Idle control clients.
    c.denied(IDLE_DENIED);
    c.succeeded(IDLE_LOGGED);
    let (_, status, out) = c.json_step(IDLE_PING);
    c.check(
        "the daemon answers status while twenty control clients idle",
        status["daemon"]["running"] == true,
        || out.clone(),
    );

    // A failed restart keeps the old pins.
    let (rc, out) = c.step(REFUSED_RESTART);
    c.check(
        "a restart whose programs are refused fails",
        rc != 0 && out.contains("refused program enforcer_inet_send"),
        || format!("exit {rc}: {out}"),
    );
    c.denied(OLD_PINS_EXEC);
    let (rc, out) = c.step(OLD_PINS_SOCKET);
    c.check(
        "the previous pins' socket gate still refuses an unvetted client",
        rc == 1 && out.contains("connect: Operation not permitted"),
        || format!("exit {rc}: {out}"),
    );
    let (_, status, out) = c.json_step(OLD_PINS_STATUS);
    c.check("status: still enforcing after the failed restart", status["enforcing"] == true, || out.clone());

    // Raw API tunnels.
    c.denied(DIAL_STDIO);
    c.check(
        "dial-stdio: the exec request never reached the API",
        !reached(vm::AI_WORKER_UID, "dial-stdio"),
        || api.clone(),
    );
    c.check(
        "control: bob's dial-stdio carries the same request to the API",
        reached(vm::OTHER_UID, "dial-stdio"),
        || api.clone(),
    );
    let (rc, out) = c.step(SSH_TUNNEL);
    c.check(
        "docker -H ssh:// with a fake ssh cannot tunnel: its dial-stdio is refused",
        rc != 0 && !out.contains("CONTAINER ID"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(SSH_TUNNEL_BOB);
    c.check("control: the fake ssh tunnel works for bob", rc == 0 && out.contains("CONTAINER ID"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(CHECK_TUNNEL);
    c.check(
        "enforcer check says why dial-stdio is denied under a policy that does not list it",
        rc == 1 && out.contains("verdict: deny") && out.contains("why: system dial-stdio pipes raw requests"),
        || format!("exit {rc}: {out}"),
    );

    // The caller's own loader under a vetted dynamically linked client.
    let (rc, out) = c.step(FAKE_LOADER_BOB);
    c.check(
        "control: in a user and mount namespace of its own, the fake loader runs as the vetted client and its request reaches the API",
        rc == 0 && out.contains("HTTP/1.1") && reached(vm::OTHER_UID, "fake-loader"),
        || format!("exit {rc}: {out}\n{api}"),
    );
    c.denied(FAKE_LOADER);
    c.check("fake loader: nothing reached the API", !reached(vm::AI_WORKER_UID, "fake-loader"), || {
        api.clone()
    });
    c.denied(USERNS_PS);
    c.succeeded(USERNS_OTHER);
    c.check(
        "user-namespace refusals are logged (reason user_namespace)",
        records.iter().any(|r| r["reason"] == "user_namespace"),
        || log.clone(),
    );

    // TCP fast open.
    let (_, out) = c.step(FASTOPEN_BOB);
    c.check(
        "control: a fast-open sendto reaches the TCP API for bob",
        out.contains("sendto=OK request=HTTP/1.1"),
        || out.clone(),
    );
    c.check("control: bob's fast-open request is in the API log", tcp_reached("fastopen"), || api.clone());
    let (_, out) = c.step(FASTOPEN);
    c.check(
        "a fast-open sendto to a gated address is refused",
        out.contains("sendto=Operation_not_permitted"),
        || out.clone(),
    );
    let tcp_requests = api.lines().filter(|l| l.starts_with("tcp ") && l.contains("via=fastopen")).count();
    c.check("only bob's fast-open request reached the TCP API", tcp_requests == 1, || api.clone());
    c.check(
        "fast-open refusals are logged (hook send-tcp, the address)",
        records.iter().any(|r| r["hook"] == "send-tcp" && r["target"] == "127.0.0.1:2375"),
        || log.clone(),
    );

    // A reload between the two checks of one exec.
    let race = c.report.file("reload-race").unwrap_or("").to_string();
    c.check(
        "the reload landed while the exec waited between its checks",
        race.contains("reloaded=OK held=1"),
        || race.clone(),
    );
    let (rc, out) = c.step(RELOAD_RACE);
    c.check(
        "an exec allowed by its early check is not killed by a reload before its re-check",
        rc != 137 && !out.contains("Operation not permitted"),
        || format!("exit {rc}: {out}"),
    );
    c.check(
        "no race is recorded for it",
        !records.iter().any(|r| r["race"] == true && r["argv"].get(1) == Some(&serde_json::json!("stop"))),
        || log.clone(),
    );
    c.denied(STOP_AFTER_RELOAD);

    let (rc, status, out) = c.json_step(STATUS);
    let counter = |name: &str| status["counters"][name].as_u64().unwrap_or(0);
    c.check(
        "status counts the refused tampering, connections and the busy scratch space",
        rc == 0
            && counter("tamper_refused") >= 1
            && counter("connects_refused") >= 1
            && counter("scratch_busy") >= 1,
        || out.clone(),
    );
}
