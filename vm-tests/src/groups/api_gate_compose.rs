//! The compose group (systemd): Debian 12's `docker-compose` (v1, Python on docker-py, an
//! SDK client: the process that connects is python3, so the rule has `api_clients = "any"`)
//! through the API gate of a rule for ai-worker, policy in place from boot. The gate socket
//! is reachable at boot (the daemon starts before `docker.socket`); the real socket is
//! refused to compose. Three compose projects that would reach gitea's secret (gitea's own
//! project with its external volume, `volumes_from: container:gitea`, a bind of `/`) read it
//! as root on the real socket (the controls) and are refused through the gate with the
//! rule and the field; `down` of root's gitea project stops nothing of root's. The agent's
//! own project (a new named volume, a service writing to it, the project's bridge network)
//! comes up, lists, runs, stays up to date on a second `up`, and `down -v` removes its
//! containers, network and volume, all of which the gate labelled with the rule. `compose
//! run` attaches with `docker start --attach` by default, which the rule's `attach` denial
//! refuses at exec; with `COMPOSE_INTERACTIVE_NO_CLI=1` docker-py attaches through the gate.
//! Under `api_clients = "vetted"` compose is refused the gate, the CLI is not. After
//! `enforcer stop`, ai-worker's compose run of gitea's project reads the secret.

use std::collections::BTreeSet;

use crate::{
    checks::Checks,
    fixtures::GITEA_SECRET,
    step::{GITEA_START, Step},
    suite::{Flavour, Group},
    vm,
};

const BRIDGE: Step = Step::new("bridge");
const BOOT_GATE: Step = Step::new("boot-gate");
const REAL_SOCKET: Step = Step::new("real-socket");
const CONTROL_RUN_VOLUME: Step = Step::new("control-run-volume");
const RUN_VOLUME: Step = Step::new("run-volume");
const CONTROL_UP_VOLUMES_FROM: Step = Step::new("control-up-volumes-from");
const UP_VOLUMES_FROM: Step = Step::new("up-volumes-from");
const CONTROL_RUN_BIND: Step = Step::new("control-run-bind");
const RUN_BIND: Step = Step::new("run-bind");
const AFTER_REFUSALS: Step = Step::new("after-refusals");
const ROOT_UP_GITEA: Step = Step::new("root-up-gitea");
const DOWN_GITEA: Step = Step::new("down-gitea");
const AFTER_DOWN_GITEA: Step = Step::new("after-down-gitea");
const OWN_UP: Step = Step::new("own-up");
const OWN_PS: Step = Step::new("own-ps");
const OWN_UP_AGAIN: Step = Step::new("own-up-again");
const OWN_RUN_CLI: Step = Step::new("own-run-cli");
const OWN_RUN_SDK: Step = Step::new("own-run-sdk");
const OWN_EXEC: Step = Step::new("own-exec");
const OWN_LABELS: Step = Step::new("own-labels");
const OWN_DOWN: Step = Step::new("own-down");
const AFTER_DOWN: Step = Step::new("after-down");
const STATUS: Step = Step::new("status");
const JOURNAL: Step = Step::new("journal");
const RELOAD_VETTED: Step = Step::new("reload-vetted");
const VETTED_COMPOSE: Step = Step::new("vetted-compose");
const VETTED_CLI: Step = Step::new("vetted-cli");
const STOP: Step = Step::new("stop");
const AFTER_STOP_RUN_VOLUME: Step = Step::new("after-stop-run-volume");

const RULE: &str = "ai-worker-docker";
const GATE: &str = "/run/enforcer/gate/ai-worker-docker.sock";
/// What the agent's own project's writer puts into its volume.
const OWN_DATA: &str = "compose-wrote-this";

pub(super) fn group() -> Group {
    Group {
        name: "api-gate-compose",
        script: script(),
        files: vec![],
        lsm: vm::DEFAULT_LSM,
        flavour: Flavour::Systemd,
        disk_files: vec![("/etc/enforcer/policy.toml".into(), 0o644, policy("any").into())],
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
    let stage = super::systemd::stage();
    let vetted = policy("vetted");
    let compose = "docker-compose --ansi never";
    let gated = format!("env DOCKER_HOST=unix://{GATE} {compose}");
    let names = "docker ps -a --format '{{.Names}}'; docker volume ls --format '{{.Name}}'; \
                 docker network ls --format '{{.Name}}'";
    let label = |of: &str| {
        format!(
            "{{{{index {of} \\\"enforcer.owner\\\"}}}} {{{{index {of} \\\"com.docker.compose.project\\\"}}}}"
        )
    };
    let (config_labels, labels) = (label(".Config.Labels"), label(".Labels"));
    format!(
        r#"
# docker's bridge networks (compose's project network) need modules the image's root lacks.
step {BRIDGE} root load_bridge_modules
# The policy is in force from boot: enforcer started before docker.socket, so its gate had
# no docker socket to take its owner, group and mode from; it has them by now.
step {BOOT_GATE} root stat -c '%n %a %U:%G' /run/enforcer /run/enforcer/gate {GATE} /run/docker.sock
{stage}
mkdir -p /srv/gitea /srv/steal /srv/bind /srv/own
# gitea's own compose project, as its admin would write it: the existing volume.
cat > /srv/gitea/docker-compose.yml <<'EOF'
version: "2.4"
services:
  gitea:
    image: local/busybox
    network_mode: none
    volumes: ["gitea-data:/data"]
    command: sleep 1000000
volumes:
  gitea-data:
    external: true
EOF
cat > /srv/steal/docker-compose.yml <<'EOF'
version: "2.4"
services:
  thief:
    image: local/busybox
    network_mode: none
    volumes_from: ["container:gitea"]
    command: cat /data/secret
EOF
cat > /srv/bind/docker-compose.yml <<'EOF'
version: "2.4"
services:
  host:
    image: local/busybox
    network_mode: none
    volumes: ["/:/host"]
    command: cat /host/var/lib/docker/volumes/gitea-data/_data/secret
EOF
# The agent's own project: a new named volume, a service that writes to it and one that
# reads it, on the project's own (bridge) network.
cat > /srv/own/docker-compose.yml <<'EOF'
version: "2.4"
services:
  writer:
    image: local/busybox
    volumes: ["data:/data"]
    command: sh -c 'echo {OWN_DATA} > /data/f && exec sleep 1000000'
  reader:
    image: local/busybox
    volumes: ["data:/data"]
    command: cat /data/f
volumes:
  data: {{}}
EOF
chmod -R a+rX /srv
# The real socket by a name the connect routing (6.7+) does not rewrite: refused by inode.
ln -s /run/docker.sock /tmp/docker-link.sock
step {REAL_SOCKET} ai-worker env DOCKER_HOST=unix:///tmp/docker-link.sock {compose} -f /srv/own/docker-compose.yml ps

# Each attack: root on the real socket first (the control), then ai-worker through the gate.
step {CONTROL_RUN_VOLUME} root {compose} -f /srv/gitea/docker-compose.yml run --rm -T gitea cat /data/secret
step {RUN_VOLUME} ai-worker {gated} -f /srv/gitea/docker-compose.yml run --rm -T gitea cat /data/secret
step {CONTROL_UP_VOLUMES_FROM} root {compose} -f /srv/steal/docker-compose.yml up
{compose} -f /srv/steal/docker-compose.yml down >/dev/null 2>&1
step {UP_VOLUMES_FROM} ai-worker {gated} -f /srv/steal/docker-compose.yml up
step {CONTROL_RUN_BIND} root {compose} -f /srv/bind/docker-compose.yml run --rm -T host
step {RUN_BIND} ai-worker {gated} -f /srv/bind/docker-compose.yml run --rm -T host
step {AFTER_REFUSALS} root sh -c "{names}"
# root deploys gitea's project; the agent's compose down of it stops and removes nothing.
step {ROOT_UP_GITEA} root {compose} -f /srv/gitea/docker-compose.yml up -d
step {DOWN_GITEA} ai-worker {gated} -f /srv/gitea/docker-compose.yml down
step {AFTER_DOWN_GITEA} root docker ps --format '{{{{.Names}}}} {{{{.State}}}}'

step {OWN_UP} ai-worker {gated} -f /srv/own/docker-compose.yml up -d writer
i=0
while [ $i -lt 100 ] && ! docker exec own_writer_1 test -s /data/f >/dev/null 2>&1; do sleep 0.2; i=$((i + 1)); done
step {OWN_PS} ai-worker {gated} -f /srv/own/docker-compose.yml ps
step {OWN_UP_AGAIN} ai-worker {gated} -f /srv/own/docker-compose.yml up -d writer
# compose run attaches with the docker CLI by default (`docker start --attach`), with
# docker-py under COMPOSE_INTERACTIVE_NO_CLI=1 (an upgraded attach through the gate).
step {OWN_RUN_CLI} ai-worker {gated} -f /srv/own/docker-compose.yml run --rm -T reader
step {OWN_RUN_SDK} ai-worker env COMPOSE_INTERACTIVE_NO_CLI=1 DOCKER_HOST=unix://{GATE} {compose} -f /srv/own/docker-compose.yml run --rm -T reader
step {OWN_EXEC} ai-worker {gated} -f /srv/own/docker-compose.yml exec -T writer cat /data/f
step {OWN_LABELS} root sh -c "docker inspect --format '{{{{.Name}}}} {config_labels}' own_writer_1; docker volume inspect --format '{{{{.Name}}}} {labels}' own_data; docker network inspect --format '{{{{.Name}}}} {labels} {{{{.Driver}}}}' own_default"
step {OWN_DOWN} ai-worker {gated} -f /srv/own/docker-compose.yml down -v
step {AFTER_DOWN} root sh -c "{names}"

step {STATUS} root /usr/local/sbin/enforcer status --json --limit 100
report_file denials /var/lib/enforcer/denials.jsonl
step {JOURNAL} root journalctl -b -u enforcer.service -o cat --no-pager --grep 'gate '
# Vetted clients only: compose (python3 connects) is refused the gate by the kernel, the CLI is not.
cat > /etc/enforcer/policy.toml <<'EOF'
{vetted}EOF
step {RELOAD_VETTED} root systemctl reload enforcer.service
step {VETTED_COMPOSE} ai-worker {gated} -f /srv/own/docker-compose.yml ps
step {VETTED_CLI} ai-worker env DOCKER_HOST=unix://{GATE} docker ps --format '{{{{.Names}}}}'
step {STOP} root /usr/local/sbin/enforcer stop
# The same user's control: with nothing enforcing, ai-worker's compose on the real socket
# gets gitea's volume.
step {AFTER_STOP_RUN_VOLUME} ai-worker {compose} -f /srv/gitea/docker-compose.yml run --rm -T gitea cat /data/secret
"#
    )
}

/// The gate's refusal as compose prints it: the gate's message, naming the rule and field.
fn refused_by_gate(out: &str, field: &str) -> bool {
    out.contains(&format!("enforcer: rule \"{RULE}\" refuses {field}"))
}

/// The lines of a step's output.
fn lines(out: &str) -> BTreeSet<&str> {
    out.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

pub(super) fn check(c: &mut Checks) {
    c.finished();
    c.succeeded(BRIDGE);
    let (rc, out) = c.step(BOOT_GATE);
    c.check(
        "from boot (enforcer before docker.socket): the gate socket has docker's socket's owner, group \
         and mode, and ai-worker may search the directories on the way",
        rc == 0
            && out.contains("/run/enforcer 711 root:root")
            && out.contains("/run/enforcer/gate 755 root:root")
            && out.contains(&format!("{GATE} 660 root:docker"))
            && out.contains("/run/docker.sock 660 root:docker"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(GITEA_START);
    c.check(
        "root created the gitea container on docker.service",
        rc == 0 && out.contains("gitea local/busybox"),
        || format!("exit {rc}: {out}"),
    );
    let (_, denials) = c.denial_log();
    let (rc, out) = c.step(REAL_SOCKET);
    c.check(
        "compose on the real socket (by a name routing does not rewrite) is refused by the kernel",
        rc != 0
            && out.contains("Operation not permitted")
            && denials.iter().any(|d| {
                d["hook"] == "connect-unix" && d["reason"] == "gate_only" && d["comm"] == "docker-compose"
            }),
        || format!("exit {rc}: {out}"),
    );
    for (control, step, field, reason, what) in [
        (
            CONTROL_RUN_VOLUME,
            RUN_VOLUME,
            "HostConfig.Binds[0]",
            "owner",
            "run of gitea's project (its external volume gitea-data)",
        ),
        (
            CONTROL_UP_VOLUMES_FROM,
            UP_VOLUMES_FROM,
            "HostConfig.VolumesFrom[0]",
            "owner",
            "up of a project with volumes_from container:gitea",
        ),
        (CONTROL_RUN_BIND, RUN_BIND, "HostConfig.Binds[0]", "field", "run of a project that binds /"),
    ] {
        let (rc, out) = c.step(control);
        c.check(
            format!("control: as root on the real socket, compose {what} reads gitea's secret"),
            rc == 0 && out.contains(GITEA_SECRET),
            || format!("exit {rc}: {out}"),
        );
        let (rc, out) = c.step(step);
        c.check(
            format!("through the gate, compose {what} is refused with the rule and field {field}, no secret"),
            rc != 0 && refused_by_gate(&out, field) && !out.contains(GITEA_SECRET),
            || format!("exit {rc}: {out}"),
        );
        c.check(
            format!("the refusal of compose {what} is a denial record (hook api, reason {reason})"),
            denials.iter().any(|d| {
                d["hook"] == "api"
                    && d["rule"] == RULE
                    && d["user"] == "ai-worker"
                    && d["comm"] == "docker-compose"
                    && d["reason"] == reason
                    && d["field"] == field
                    && d["target"] == "POST /v1.41/containers/create"
            }),
            || format!("{denials:#?}"),
        );
    }
    let (rc, out) = c.step(AFTER_REFUSALS);
    c.check(
        "the refused projects created nothing: root's docker lists only gitea, its volume and the built-in networks",
        rc == 0 && lines(&out) == BTreeSet::from(["gitea", "gitea-data", "host", "none"]),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(ROOT_UP_GITEA);
    c.check("root's compose up -d of gitea's project", rc == 0 && out.contains("gitea_gitea_1"), || {
        format!("exit {rc}: {out}")
    });
    // compose reports a container it could not stop or remove and goes on: its exit status
    // does not tell, root's docker does.
    let (rc, out) = c.step(DOWN_GITEA);
    c.check(
        "through the gate, compose down of root's gitea project is refused (the container is not the rule's)",
        refused_by_gate(&out, "docker container stop on container")
            && out.contains("it has no owner")
            && out.contains("gitea_gitea_1"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(AFTER_DOWN_GITEA);
    c.check(
        "after it, root's gitea_gitea_1 and gitea still run",
        rc == 0 && out.contains("gitea_gitea_1 running") && out.contains("gitea running"),
        || format!("exit {rc}: {out}"),
    );

    let (rc, out) = c.step(OWN_UP);
    c.check(
        "through the gate, compose up -d of the agent's own project creates its network, volume and container",
        rc == 0
            && out.contains("Creating network \"own_default\"")
            && out.contains("Creating volume \"own_data\"")
            && out.contains("Creating own_writer_1 ... done"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(OWN_PS);
    c.check(
        "compose ps through the gate lists the project's container, up",
        rc == 0 && out.lines().any(|l| l.starts_with("own_writer_1") && l.contains(" Up")),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(OWN_UP_AGAIN);
    c.check(
        "a second compose up -d leaves the container as it is (the gate's label changes no config)",
        rc == 0 && out.contains("own_writer_1 is up-to-date"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(OWN_RUN_CLI);
    c.check(
        "compose run's default attach, `docker start --attach`, is refused at exec (the rule denies attach)",
        rc != 0
            && out.contains("Operation not permitted")
            && !out.contains(OWN_DATA)
            && denials.iter().any(|d| {
                d["hook"] == "exec"
                    && d["command"] == "container attach"
                    && d["argv"][1] == "start"
                    && d["argv"][2] == "--attach"
            }),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(OWN_RUN_SDK);
    c.check(
        "compose run --rm with docker-py's attach (COMPOSE_INTERACTIVE_NO_CLI=1) reads the project's volume",
        rc == 0 && out.contains(OWN_DATA),
        || format!("exit {rc}: {out}"),
    );
    c.denied(OWN_EXEC);
    let (rc, out) = c.step(OWN_LABELS);
    c.check(
        "the gate labelled compose's container, volume and network with the rule, and kept compose's labels",
        rc == 0
            && lines(&out)
                == BTreeSet::from([
                    "/own_writer_1 ai-worker-docker own",
                    "own_data ai-worker-docker own",
                    "own_default ai-worker-docker own bridge",
                ]),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(OWN_DOWN);
    c.check(
        "compose down -v through the gate removes the project's containers, network and volume",
        rc == 0
            && out.contains("Removing own_writer_1")
            && out.contains("Removing network own_default")
            && out.contains("Removing volume own_data"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(AFTER_DOWN);
    c.check(
        "after down -v root's docker lists nothing of the project (and gitea's objects)",
        rc == 0
            && !out.contains("own_")
            && lines(&out).is_superset(&BTreeSet::from(["gitea", "gitea_gitea_1", "gitea-data"])),
        || format!("exit {rc}: {out}"),
    );

    let (rc, status, out) = c.json_step(STATUS);
    c.check(
        "status counts the gate's refusals of compose",
        rc == 0 && status["counters"]["api_refused"].as_u64().is_some_and(|n| n >= 4),
        || out.clone(),
    );
    let (_, journal) = c.step(JOURNAL);
    c.check(
        "the journal says when the gate socket took docker's socket's permissions",
        journal.contains(&format!(
            "gate {RULE}: {GATE} has the owner, group and mode of /var/run/docker.sock now"
        )),
        || journal.clone(),
    );
    c.succeeded(RELOAD_VETTED);
    let (rc, out) = c.step(VETTED_COMPOSE);
    c.check(
        "api_clients = \"vetted\": compose (python3 connects) is refused the gate by the kernel",
        rc != 0 && out.contains("Operation not permitted"),
        || format!("exit {rc}: {out}"),
    );
    let (rc, out) = c.step(VETTED_CLI);
    c.check(
        "api_clients = \"vetted\": the docker CLI still works through the gate",
        rc == 0 && out.contains("gitea_gitea_1"),
        || format!("exit {rc}: {out}"),
    );
    c.succeeded(STOP);
    let (rc, out) = c.step(AFTER_STOP_RUN_VOLUME);
    c.check(
        "control: after enforcer stop, ai-worker's compose run of gitea's project reads the secret",
        rc == 0 && out.contains(GITEA_SECRET),
        || format!("exit {rc}: {out}"),
    );
}
