//! The commands group: a standalone `docker-compose` found by the default policy, and the
//! differential test: every corpus line run as ai-worker in the VM and decided on the host
//! by `enforcer check`, which must agree with the kernel and with the corpus. The VM runs
//! the default policy's argv layer alone (`api_gate = false`), so the mock API's log shows
//! what the agent's own connections sent.

use std::{path::Path, process::Command};

use crate::{
    checks::Checks,
    corpus::{corpus, split_words},
    step::{ENFORCER_START, Step},
    suite::{Flavour, Group},
    vm,
};

// The steps, in the order the script prints them.
const DC_EXEC: Step = Step::new("dc-exec");
const DC_FLAGS_CP: Step = Step::new("dc-flags-cp");
const DC_PLUGIN_FORM: Step = Step::new("dc-plugin-form");
const DC_PS: Step = Step::new("dc-ps");
const IMAGE_PUSH: Step = Step::new("image-push");
const DIAL_STDIO: Step = Step::new("dial-stdio");
const CONTAINER_HELP_EXEC: Step = Step::new("container-help-exec");
const STATUS: Step = Step::new("status");

pub(super) fn group() -> Group {
    Group {
        name: "commands",
        script: script(),
        files: vec![(
            "corpus/argv.txt".into(),
            0o644,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/argv.txt"),
        )],
        lsm: vm::DEFAULT_LSM,
        flavour: Flavour::Initramfs,
        disk_files: vec![],
        check,
    }
}

pub(super) fn script() -> String {
    let argv_only = crate::fixtures::start_enforcer_argv_only();
    format!(
        r#"
start_mock_api
# A standalone docker-compose in PATH: found and vetted by the default policy, with the
# compose client profile. (A copy of the docker CLI under that name: the kernel judges the
# exec, whatever the program does after.)
cp /usr/bin/docker /usr/local/bin/docker-compose
# The default policy's argv layer alone (the mock cannot serve its gate).
{argv_only}
step {DC_EXEC} ai-worker docker-compose exec web sh
step {DC_FLAGS_CP} ai-worker docker-compose -f /tmp/x.yml cp web:/a /tmp/b
step {DC_PLUGIN_FORM} ai-worker docker-compose compose exec web sh
step {DC_PS} ai-worker docker-compose ps
step {IMAGE_PUSH} ai-worker docker image push gitea
step {DIAL_STDIO} ai-worker docker system dial-stdio
step {CONTAINER_HELP_EXEC} ai-worker docker container --help exec gitea true
# The differential corpus: every line run for real as ai-worker against the mock API.
n=0
while IFS= read -r line; do
    n=$((n + 1))
    case "$line" in '#'*|'') continue ;; esac
    args=${{line#*	}}
    eval "set -- $args"
    timeout -s KILL 20 $SETPRIV --reuid=ai-worker --regid=ai-worker --init-groups --reset-env /usr/bin/docker "$@" </dev/null >/tmp/line.out 2>&1
    rc=$?
    if [ $rc -eq 126 ] && grep -q "Operation not permitted" /tmp/line.out; then v=deny; else v=allow; fi
    echo "@@verdict $n $v $rc"
done < /corpus/argv.txt
step {STATUS} root /usr/local/sbin/enforcer status --json --limit 1000
stop_enforcer
report_file mock-api /tmp/mock-api.log
report_file denials /var/lib/enforcer/denials.jsonl
"#
    )
}

/// `enforcer check` on the host for one line: "allow", "deny" or "undecidable".
fn host_verdict(enforcer: &Path, policy: &Path, args: &[String]) -> String {
    let output = Command::new(enforcer)
        .args(["check", "--user", "ai-worker", "--config"])
        .arg(policy)
        .arg("--")
        .arg("docker")
        .args(args)
        .output();
    match output.map(|o| o.status.code()) {
        Ok(Some(0)) => "allow".into(),
        Ok(Some(1)) => "deny".into(),
        Ok(Some(2)) => "undecidable".into(),
        other => format!("error {other:?}"),
    }
}

pub(super) fn check(c: &mut Checks) {
    c.finished();
    c.succeeded(ENFORCER_START);
    for step in [DC_EXEC, DC_FLAGS_CP, DC_PLUGIN_FORM, IMAGE_PUSH, DIAL_STDIO, CONTAINER_HELP_EXEC] {
        c.denied(step);
    }
    c.not_refused(DC_PS, "docker-compose ps is allowed");

    let kernel: std::collections::BTreeMap<usize, String> = c
        .report
        .console
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("@@verdict ")? + "@@verdict ".len()..];
            let mut fields = rest.split_whitespace();
            Some((fields.next()?.parse().ok()?, fields.next()?.to_string()))
        })
        .collect();
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../enforcer/src/default-policy.toml");
    let lines = corpus();
    c.check(format!("the corpus has at least 200 lines ({})", lines.len()), lines.len() >= 200, String::new);
    let mut mismatches = Vec::new();
    let mut unexpected = Vec::new();
    for (number, expected, args) in &lines {
        let words = split_words(args);
        let host = host_verdict(&c.artifacts.enforcer, &policy, &words);
        if &host != expected {
            unexpected
                .push(format!("line {number}: docker {args}: check says {host}, corpus says {expected}"));
        }
        // The kernel denies both deny and undecidable with EPERM.
        let host_kernel_view = if host == "allow" { "allow" } else { "deny" };
        match kernel.get(number) {
            Some(seen) if seen == host_kernel_view => {}
            seen => mismatches.push(format!("line {number}: docker {args}: check {host}, kernel {seen:?}")),
        }
    }
    c.check(
        format!("enforcer check and the kernel agree on all {} corpus lines", lines.len()),
        mismatches.is_empty(),
        || mismatches.join("\n"),
    );
    c.check(
        "enforcer check gives the corpus's expected verdict on every line",
        unexpected.is_empty(),
        || unexpected.join("\n"),
    );
    let worker = c.api_requests(vm::AI_WORKER_UID);
    // Endpoints only the denied commands use (exec, cp, push, commit, export, attach).
    let leaked: Vec<&String> = worker
        .iter()
        .filter(|r| {
            let path = r.split('?').next().unwrap_or(r);
            ["/exec", "/archive", "/push", "/commit", "/export", "/attach", "/attach/ws"]
                .iter()
                .any(|e| path.ends_with(e))
        })
        .collect();
    c.check("no denied corpus command reached the API", leaked.is_empty(), || format!("{leaked:?}"));
}
