# Helpers for VM scenario scripts. Every observation goes to the console as one line:
#   @@step NAME EXIT BASE64(stdout+stderr)    @@file NAME BASE64|-
# The host decodes them and asserts; the VM itself judges nothing.

SETPRIV=/usr/lib/util-linux/setpriv

# as USER CMD...: run CMD as USER (root, or a user of /etc/passwd with their groups), in
# the environment `gate_env` gave USER, if any.
as() {
    user=$1
    shift
    if [ "$user" = root ]; then
        "$@"
    elif [ -f "/run/agent-env/$user" ]; then
        # One VAR=value word per line of the file.
        $SETPRIV --reuid="$user" --regid="$user" --init-groups --reset-env env $(cat "/run/agent-env/$user") "$@"
    else
        $SETPRIV --reuid="$user" --regid="$user" --init-groups --reset-env "$@"
    fi
}

# gate_env USER RULE: what an admin gives the agent's environment before Linux 6.7
# (docs/api-gate.md): DOCKER_HOST to RULE's gate, if the running daemon does not route
# docker's socket to the gate in the kernel. Where it routes, nothing: USER's plain docker
# then proves the routing. `gate_env_clear USER` takes it away (enforcer uninstalled).
gate_env() {
    if /usr/local/sbin/enforcer status --json | grep -q '"gate_routing": false'; then
        mkdir -p /run/agent-env
        echo "DOCKER_HOST=unix:///run/enforcer/gate/$2.sock" > "/run/agent-env/$1"
    fi
}

gate_env_clear() {
    rm -f "/run/agent-env/$1"
}

# step NAME USER CMD...: run CMD as USER and report its exit code and output.
step() {
    name=$1
    user=$2
    shift 2
    as "$user" "$@" </dev/null >/tmp/step.out 2>&1
    rc=$?
    echo "@@step $name $rc $(base64 -w 0 /tmp/step.out)"
}

# report_file NAME PATH: report a file's contents ("-" when it does not exist).
report_file() {
    if [ -f "$2" ]; then
        echo "@@file $1 $(base64 -w 0 "$2")"
    else
        echo "@@file $1 -"
    fi
}

# start_mock_api: the mock docker daemon on /run/docker.sock (root:docker 0660).
start_mock_api() {
    /usr/local/sbin/mock-docker-api /run/docker.sock /tmp/mock-api.log 998 >/tmp/mock-api.out 2>&1 &
    i=0
    while [ ! -S /run/docker.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
}

# start_enforcer ARGS...: `enforcer run ARGS` in the background, waiting until it
# enforces (status exits 0) or dies. Reports the start as step "enforcer-start".
start_enforcer() {
    /usr/local/sbin/enforcer run "$@" >/tmp/enforcer.log 2>&1 &
    ENFORCER_PID=$!
    start_enforcer_wait
}

# start_enforcer_wait: wait for the daemon $ENFORCER_PID (started by hand) as above.
start_enforcer_wait() {
    i=0
    while [ $i -lt 600 ]; do
        if ! kill -0 $ENFORCER_PID 2>/dev/null; then
            break
        fi
        # Ready when this daemon answers on its control socket (a previous daemon's pins
        # may be enforcing already, so `status` exiting 0 is not enough).
        if /usr/local/sbin/enforcer status --json --limit 0 2>/dev/null | grep -qE "\"pid\": $ENFORCER_PID,?$"; then
            break
        fi
        sleep 0.1
        i=$((i + 1))
    done
    step enforcer-start root /usr/local/sbin/enforcer status
}

# stop_enforcer: SIGTERM the daemon and wait for it; its log becomes file "enforcer-log".
stop_enforcer() {
    kill -TERM $ENFORCER_PID 2>/dev/null
    wait $ENFORCER_PID
    echo "@@step enforcer-exit $? $(echo | base64 -w 0)"
    report_file enforcer-log /tmp/enforcer.log
}

# start_dockerd: the real docker daemon (docker flavour: Debian's dockerd 20.10, containerd,
# runc), then the incident's stage: the busybox image imported as local/busybox and a
# `gitea` stand-in container, created by root, with a named volume holding a secret.
# Reports steps "dockerd-start" (docker version) and "gitea-start".
start_dockerd() {
    # dockerd needs cgroup v2 mounted ("Devices cgroup isn't mounted" otherwise).
    mkdir -p /sys/fs/cgroup
    mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
    mount -t tmpfs -o mode=711 tmpfs /var/lib/docker
    # The kernel runs AppArmor (lsm=...), but the VM has no apparmor_parser to load
    # docker's profile: tell dockerd (and runc) that AppArmor is off, as on a host without it.
    echo N > /run/apparmor-enabled
    mount --bind /run/apparmor-enabled /sys/module/apparmor/parameters/enabled 2>/dev/null
    # The initramfs root cannot be pivot_root'ed: DOCKER_RAMDISK makes runc use
    # MS_MOVE + chroot. No iptables and no bridge: containers run with --network none.
    DOCKER_RAMDISK=true /usr/bin/dockerd -D --iptables=false --ip6tables=false --bridge=none \
        --storage-driver=vfs --group docker --host unix:///run/docker.sock \
        >/tmp/dockerd.log 2>&1 &
    DOCKERD_PID=$!
    i=0
    while [ $i -lt 600 ] && ! /usr/bin/docker version >/dev/null 2>&1; do sleep 0.1; i=$((i + 1)); done
    step dockerd-start root /usr/bin/docker version --format '{{.Server.Version}}'
    /usr/bin/docker import /images/busybox.tar local/busybox >/tmp/gitea.out 2>&1
    /usr/bin/docker volume create gitea-data >>/tmp/gitea.out 2>&1
    /usr/bin/docker run -d --name gitea --network none -v gitea-data:/data local/busybox \
        sh -c 'echo gitea-admin-token-s3cret > /data/secret && exec sleep 1000000' >>/tmp/gitea.out 2>&1
    # `docker run -d` returns once the container started; wait for the secret to be written.
    i=0
    while [ $i -lt 100 ] && ! /usr/bin/docker exec gitea test -s /data/secret >/dev/null 2>&1; do
        sleep 0.2; i=$((i + 1))
    done
    step gitea-start root /usr/bin/docker ps --format '{{.Names}} {{.Image}} {{.Status}}'
}

# stop_dockerd: SIGTERM dockerd and report its log as file "dockerd-log".
stop_dockerd() {
    kill -TERM $DOCKERD_PID 2>/dev/null
    wait $DOCKERD_PID 2>/dev/null
    report_file dockerd-log /tmp/dockerd.log
}

# load_bridge_modules: llc, stp, bridge and veth for this kernel (systemd flavour), which
# docker's bridge networks need and the image's root has not (each kernel has its own
# modules): a group whose script calls this gets them in its image (vm::bridge_modules).
load_bridge_modules() {
    for module in llc stp bridge veth; do
        insmod /opt/enforcer-test/modules/$(uname -r)/$module.ko || return 1
    done
}
