//! The daemon group (real daemon): the daemon's life cycle around a real dockerd: a second
//! daemon refused, kill -9 and adoption of the pins, status filters, `status --follow`,
//! metrics, reload (broken, good, SIGHUP), a storm of 10,000 denials, log rotation, and
//! `enforcer stop` without a daemon.

use crate::{
    checks::Checks,
    fixtures::GITEA_SECRET,
    step::{ENFORCER_START, Step},
    suite::{Flavour, Group},
    vm,
};

// The steps, in the order the script prints them.
const FIRST_EXEC: Step = Step::new("first-exec");
const STATUS_RUNNING: Step = Step::new("status-running");
const SECOND_DAEMON: Step = Step::new("second-daemon");
const STATUS_AFTER_SECOND: Step = Step::new("status-after-second");
const KILLED_EXEC: Step = Step::new("killed-exec");
const STATUS_DOWN: Step = Step::new("status-down");
const STATUS_DOWN_TABLE: Step = Step::new("status-down-table");
const STATUS_ADOPTED: Step = Step::new("status-adopted");
const STATUS_USER_BOB: Step = Step::new("status-user-bob");
const STATUS_USER_WORKER: Step = Step::new("status-user-worker");
const STATUS_SINCE_FUTURE: Step = Step::new("status-since-future");
const FOLLOW_EXEC: Step = Step::new("follow-exec");
const METRICS_STATUS: Step = Step::new("metrics-status");
const METRICS: Step = Step::new("metrics");
const METRICS_TEXTFILE: Step = Step::new("metrics-textfile");
const METRICS_HTTP: Step = Step::new("metrics-http");
const METRICS_LISTEN_TAKEN: Step = Step::new("metrics-listen-taken");
const RELOAD_BROKEN: Step = Step::new("reload-broken");
const EXEC_AFTER_BROKEN: Step = Step::new("exec-after-broken");
const PS_AFTER_BROKEN: Step = Step::new("ps-after-broken");
const RELOAD_GOOD: Step = Step::new("reload-good");
const PS_AFTER_RELOAD: Step = Step::new("ps-after-reload");
const PS_AFTER_HUP: Step = Step::new("ps-after-hup");
const STATUS_BEFORE_STORM: Step = Step::new("status-before-storm");
const STORM: Step = Step::new("storm");
const STATUS_AFTER_STORM: Step = Step::new("status-after-storm");
const LOGS: Step = Step::new("logs");
const EXEC_AFTER_SIGTERM: Step = Step::new("exec-after-sigterm");
const DETACH: Step = Step::new("detach");
const STATUS_STOPPED: Step = Step::new("status-stopped");
const EXEC_AFTER_STOP: Step = Step::new("exec-after-stop");

pub(super) fn group() -> Group {
    Group {
        name: "daemon",
        script: script(),
        files: vec![],
        lsm: vm::DEFAULT_LSM,
        flavour: Flavour::RealDaemon,
        disk_files: vec![],
        check,
    }
}

pub(super) fn script() -> String {
    format!(
        r#"
start_dockerd
cat > /tmp/policy.toml <<'POLICY'
[[rule]]
name = "agent"
users = ["ai-worker"]
deny = ["exec", "cp"]
api_gate = false # the daemon's life cycle, against the argv layer
POLICY
cp /tmp/policy.toml /tmp/good.toml
DAEMON_ARGS="--config /tmp/policy.toml --log-max-bytes 20000 --log-keep 2"
start_enforcer $DAEMON_ARGS
step {FIRST_EXEC} ai-worker docker exec gitea true
step {STATUS_RUNNING} root /usr/local/sbin/enforcer status --json
# A second daemon is refused while one runs, and leaves the first one's control socket.
step {SECOND_DAEMON} root /usr/local/sbin/enforcer run $DAEMON_ARGS
step {STATUS_AFTER_SECOND} root /usr/local/sbin/enforcer status --json --limit 0
# The daemon dies hard: the pinned programs keep enforcing.
kill -9 $ENFORCER_PID
wait $ENFORCER_PID 2>/dev/null
step {KILLED_EXEC} ai-worker docker exec gitea queued-while-down
step {STATUS_DOWN} root /usr/local/sbin/enforcer status --json
step {STATUS_DOWN_TABLE} root /usr/local/sbin/enforcer status
mv /tmp/enforcer.log /tmp/enforcer-first.log
start_enforcer $DAEMON_ARGS
step {STATUS_ADOPTED} root /usr/local/sbin/enforcer status --json --limit 100
step {STATUS_USER_BOB} root /usr/local/sbin/enforcer status --json --user bob
step {STATUS_USER_WORKER} root /usr/local/sbin/enforcer status --json --user ai-worker --since 1h
step {STATUS_SINCE_FUTURE} root /usr/local/sbin/enforcer status --json --since 2999-01-01T00:00:00Z
# Live view: followers with filters, then a denial; each follower shows it once (its backlog
# or the stream, whichever it lands in), and the filtered one never.
E=/usr/local/sbin/enforcer
$E status --follow --json --limit 100 --user ai-worker >/tmp/follow.jsonl 2>/tmp/follow.err &
FOLLOW_JSON=$!
$E status --follow --limit 100 >/tmp/follow.txt 2>&1 &
FOLLOW_TABLE=$!
$E status --follow --limit 100 --user bob >/tmp/follow-bob.txt 2>&1 &
FOLLOW_BOB=$!
step {FOLLOW_EXEC} ai-worker docker exec gitea follow-live
i=0
while [ $i -lt 300 ] && ! {{ grep -q follow-live /tmp/follow.jsonl && grep -q follow-live /tmp/follow.txt; }}; do sleep 0.1; i=$((i + 1)); done
kill $FOLLOW_JSON $FOLLOW_TABLE $FOLLOW_BOB
report_file follow-json /tmp/follow.jsonl
report_file follow-table /tmp/follow.txt
report_file follow-bob /tmp/follow-bob.txt
# Metrics: the same counters as status, on stdout, in a textfile and on a local listener.
step {METRICS_STATUS} root $E status --json --limit 0
step {METRICS} root $E metrics
mkdir -p /tmp/textfile
step {METRICS_TEXTFILE} root $E metrics --textfile /tmp/textfile/enforcer.prom
report_file metrics-prom /tmp/textfile/enforcer.prom
ifconfig lo 127.0.0.1 up
$E metrics --listen 127.0.0.1:9477 >/tmp/metrics-listen.log 2>&1 &
METRICS_PID=$!
i=0
while [ $i -lt 100 ] && ! curl -s -o /dev/null http://127.0.0.1:9477/metrics; do sleep 0.1; i=$((i + 1)); done
step {METRICS_HTTP} root curl -sS -i http://127.0.0.1:9477/metrics
step {METRICS_LISTEN_TAKEN} root $E metrics --listen 127.0.0.1:9477
kill $METRICS_PID
# A broken policy is rejected by reload; the policy in force stays.
printf '[[rule]]\nname = "agent"\nusers = ["ai-worker"]\ndeny = ["exec", "pss"]\napi_gate = false\n' > /tmp/policy.toml
step {RELOAD_BROKEN} root /usr/local/sbin/enforcer reload
step {EXEC_AFTER_BROKEN} ai-worker docker exec gitea true
step {PS_AFTER_BROKEN} ai-worker docker ps
# A reload that adds a denied command takes effect for the next exec.
printf '[[rule]]\nname = "agent"\nusers = ["ai-worker"]\ndeny = ["exec", "cp", "ps"]\napi_gate = false\n' > /tmp/policy.toml
step {RELOAD_GOOD} root /usr/local/sbin/enforcer reload
step {PS_AFTER_RELOAD} ai-worker docker ps
# SIGHUP reloads too (back to the first policy).
cp /tmp/good.toml /tmp/policy.toml
kill -HUP $ENFORCER_PID
i=0
while [ $i -lt 300 ] && [ "$(grep -c 'enforcer: reloaded' /tmp/enforcer.log)" -lt 2 ]; do sleep 0.1; i=$((i + 1)); done
step {PS_AFTER_HUP} ai-worker docker ps
step {STATUS_BEFORE_STORM} root /usr/local/sbin/enforcer status --json --limit 0
step {STORM} ai-worker /usr/local/bin/exec-helper storm 10000 /usr/bin/docker docker exec gitea storm
# Let the daemon drain the ring buffer: wait until its log stops growing.
last=-1
while [ "$(wc -c < /tmp/enforcer.log)" != "$last" ]; do last=$(wc -c < /tmp/enforcer.log); sleep 2; done
step {STATUS_AFTER_STORM} root /usr/local/sbin/enforcer status --json --limit 0
step {LOGS} root ls -l /var/lib/enforcer
stop_enforcer
step {EXEC_AFTER_SIGTERM} ai-worker docker exec gitea true
step {DETACH} root /usr/local/sbin/enforcer stop
step {STATUS_STOPPED} root /usr/local/sbin/enforcer status
step {EXEC_AFTER_STOP} ai-worker docker exec gitea cat /data/secret
report_file enforcer-first-log /tmp/enforcer-first.log
report_file denials /var/lib/enforcer/denials.jsonl
report_file denials-1 /var/lib/enforcer/denials.jsonl.1
report_file denials-2 /var/lib/enforcer/denials.jsonl.2
report_file denials-3 /var/lib/enforcer/denials.jsonl.3
stop_dockerd
"#
    )
}

pub(super) fn check(c: &mut Checks) {
    c.finished();
    c.succeeded(ENFORCER_START);
    c.denied(FIRST_EXEC);
    let (rc, status, out) = c.json_step(STATUS_RUNNING);
    c.check(
        "status: enforcing, daemon running, kernel, LSMs, policy digest, counters, per-rule counters",
        rc == 0
            && status["enforcing"] == true
            && status["daemon"]["running"] == true
            && status["enforcing_since"].is_string()
            && status["kernel"].as_str().is_some_and(|k| !k.is_empty())
            && status["lsms"].as_str().is_some_and(|l| l.contains("bpf"))
            && status["policy"]["source"] == "/tmp/policy.toml"
            && status["policy"]["digest"].as_str().is_some_and(|d| d.len() == 64)
            && status["policy"]["mode"] == "enforce"
            && status["counters"]["denied"] == 1
            && status["rules"][0]["name"] == "agent"
            && status["rules"][0]["denied"] == 1,
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(SECOND_DAEMON);
    let first = c.json_step(STATUS_RUNNING).1["daemon"]["pid"].clone();
    c.check(
        "a second enforcer run is refused and names the running daemon",
        rc != 0 && first.as_u64().is_some_and(|pid| out.contains(&format!("already running (pid {pid})"))),
        || format!("exit {rc}: {out}"),
    );
    let (rc, status, out) = c.json_step(STATUS_AFTER_SECOND);
    c.check(
        "after the refused second daemon, status still reaches the first",
        rc == 0 && status["daemon"]["running"] == true && status["daemon"]["pid"] == first,
        || format!("exit {rc}: {out}"),
    );
    c.denied(KILLED_EXEC);
    let (rc, status, out) = c.json_step(STATUS_DOWN);
    c.check(
        "status with the daemon killed: still enforcing (exit 0), daemon not running, says so",
        rc == 0
            && status["enforcing"] == true
            && status["daemon"]["running"] == false
            && status["counters"]["denied"] == 2
            && status["notes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|x| x.as_str().unwrap_or("").contains("not running"))),
        || format!("exit {rc}: {out}"),
    );
    let (_, table) = c.step(STATUS_DOWN_TABLE);
    c.check(
        "status table without the daemon",
        table.contains("enforcing: yes") && table.contains("daemon:    not running"),
        || table.clone(),
    );
    let log = c.report.file("enforcer-log").unwrap_or("").to_string();
    c.check("the restarted daemon adopts the pinned maps", log.contains("adopted the pinned maps"), || {
        log.clone()
    });
    let (rc, status, out) = c.json_step(STATUS_ADOPTED);
    let denials = status["denials"].as_array().cloned().unwrap_or_default();
    c.check(
        "after restart: history kept, the denial made while the daemon was down is logged, counters kept",
        rc == 0
            && status["daemon"]["running"] == true
            && status["counters"]["denied"] == 2
            && status["enforcing_since"] == c.json_step(STATUS_RUNNING).1["enforcing_since"]
            && denials
                .iter()
                .any(|d| d["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == "queued-while-down"))),
        || format!("exit {rc}: {out}"),
    );
    let count = |step: Step| c.json_step(step).1["denials"].as_array().map_or(usize::MAX, Vec::len);
    let counts = (count(STATUS_USER_BOB), count(STATUS_USER_WORKER), count(STATUS_SINCE_FUTURE));
    c.check(
        "status --user and --since filter the denials (bob 0, ai-worker 2, future 0)",
        counts == (0, 2, 0),
        || format!("{counts:?}"),
    );
    check_follow_and_metrics(c);
    let (rc, out) = c.step(RELOAD_BROKEN);
    c.check(
        "reload with a broken file fails with file:line (exit 65, a policy error) and keeps the old policy",
        rc == 65
            && out.contains("/tmp/policy.toml:4:17: unknown docker command \"pss\"")
            && out.contains("unchanged"),
        || format!("exit {rc}: {out}"),
    );
    c.check(
        "the daemon logged the failed reload",
        log.contains("reload failed, the policy in force is unchanged"),
        || log.clone(),
    );
    c.denied(EXEC_AFTER_BROKEN);
    c.succeeded(PS_AFTER_BROKEN);
    let (rc, out) = c.step(RELOAD_GOOD);
    c.check("reload with a good file succeeds", rc == 0 && out.contains("in force"), || {
        format!("exit {rc}: {out}")
    });
    c.denied(PS_AFTER_RELOAD);
    c.succeeded(PS_AFTER_HUP);

    let (_, before, _) = c.json_step(STATUS_BEFORE_STORM);
    let (_, after, out) = c.json_step(STATUS_AFTER_STORM);
    let (_, storm) = c.step(STORM);
    let counter = |v: &serde_json::Value, k: &str| v["counters"][k].as_u64().unwrap_or(0);
    c.check(
        "the storm: 10,000 execs, every one refused with EPERM",
        storm.trim() == "eperm=10000 ran=0 other=0",
        || storm.clone(),
    );
    let denied = counter(&after, "denied") - counter(&before, "denied");
    let dropped = counter(&after, "events_dropped") - counter(&before, "events_dropped");
    let logged = log.matches("\"storm\"]").count() as u64;
    c.check(
        format!("counters exact after the storm: denied +{denied} (10000), logged {logged} + dropped {dropped} = 10000"),
        denied == 10000 && logged + dropped == 10000,
        || out.clone(),
    );
    let (_, listing) = c.step(LOGS);
    let sizes_ok = ["denials", "denials-1", "denials-2"]
        .iter()
        .all(|f| c.report.file(f).is_some_and(|t| t.len() <= 20000));
    c.check(
        "log rotation keeps the size bound (3 files of at most 20000 bytes, no 4th)",
        sizes_ok && c.report.files.get("denials-3") == Some(&None),
        || listing.clone(),
    );
    c.denied(EXEC_AFTER_SIGTERM);
    let (rc, out) = c.step(DETACH);
    c.check(
        "enforcer stop with no daemon removes the pins",
        rc == 0 && out.contains("removed the pins"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(STATUS_STOPPED);
    c.check("status after stop exits 1 and says NO", rc == 1 && out.contains("enforcing: NO"), || {
        format!("exit {rc}: {out}")
    });
    let (rc, out) = c.step(EXEC_AFTER_STOP);
    c.check(
        "after enforcer stop, ai-worker's exec runs in the real container",
        rc == 0 && out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
}

/// `status --follow` and `metrics` against the running daemon (the daemon group).
fn check_follow_and_metrics(c: &mut Checks) {
    c.denied(FOLLOW_EXEC);
    let json = c.report.file("follow-json").unwrap_or("").to_string();
    let records: Vec<serde_json::Value> = json.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let live =
        |r: &serde_json::Value| r["argv"].as_array().is_some_and(|a| a.iter().any(|x| x == "follow-live"));
    c.check(
        "status --follow --json --user ai-worker: JSON lines, the new denial exactly once, only ai-worker's",
        !records.is_empty()
            && records.len() == json.lines().count()
            && records.iter().filter(|r| live(r)).count() == 1
            && records.iter().all(|r| r["uid"] == 1001),
        || json.clone(),
    );
    let table = c.report.file("follow-table").unwrap_or("").to_string();
    c.check(
        "status --follow: a table row for the new denial (user, rule, command, argv)",
        table.lines().filter(|l| l.contains("follow-live")).count() == 1
            && table.lines().any(|l| {
                l.contains("follow-live")
                    && l.contains("ai-worker")
                    && l.contains("agent")
                    && l.contains("exec")
            }),
        || table.clone(),
    );
    let bob = c.report.file("follow-bob").unwrap_or("").to_string();
    c.check(
        "status --follow --user bob: the header, none of ai-worker's denials",
        bob.contains("argv, or the connection") && !bob.contains("follow-live") && !bob.contains("ai-worker"),
        || bob.clone(),
    );

    let (_, status, _) = c.json_step(METRICS_STATUS);
    let (rc, metrics) = c.step(METRICS);
    let sample = |text: &str, name: &str| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    let denied = status["counters"]["denied"].as_u64();
    c.check(
        "metrics: Prometheus text, the counters equal to status's",
        rc == 0
            && metrics.contains("# TYPE enforcer_exec_verdicts_total counter")
            && sample(&metrics, "enforcer_enforcing") == Some(1)
            && sample(&metrics, "enforcer_daemon_running") == Some(1)
            && denied.is_some()
            && sample(&metrics, "enforcer_exec_verdicts_total{verdict=\"denied\"}") == denied
            && sample(&metrics, "enforcer_exec_checks_total") == status["counters"]["checked"].as_u64()
            && sample(&metrics, "enforcer_rule_verdicts_total{rule=\"agent\",verdict=\"denied\"}")
                == status["rules"][0]["denied"].as_u64()
            && sample(&metrics, "enforcer_events_dropped_total").is_some()
            && sample(&metrics, "enforcer_recheck_races_total").is_some(),
        || format!("exit {rc}: {metrics}\nstatus: {status}"),
    );
    let (rc, out) = c.step(METRICS_TEXTFILE);
    let prom = c.report.file("metrics-prom").unwrap_or("").to_string();
    c.check(
        "metrics --textfile: the same text in the file",
        rc == 0 && sample(&prom, "enforcer_exec_verdicts_total{verdict=\"denied\"}") == denied,
        || format!("exit {rc}: {out}\n{prom}"),
    );
    let (rc, http) = c.step(METRICS_HTTP);
    c.check(
        "metrics --listen: GET /metrics answers 200 with the text format",
        rc == 0
            && http.starts_with("HTTP/1.1 200")
            && http.contains("text/plain; version=0.0.4")
            && sample(&http, "enforcer_exec_verdicts_total{verdict=\"denied\"}") == denied,
        || format!("exit {rc}: {http}"),
    );
    let (rc, out) = c.step(METRICS_LISTEN_TAKEN);
    c.check(
        "metrics --listen on an address in use: exit 69",
        rc == 69 && out.contains("cannot listen"),
        || format!("exit {rc}: {out}"),
    );
}
