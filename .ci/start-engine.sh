#!/usr/bin/env bash
# Start the Docker engine (containerd image store), arm64 emulation and a local
# registry on 127.0.0.1:5000 (idempotent: whatever already answers is reused).
#   dockerd   log /var/log/dockerd-ci.log       pid /run/ci-dockerd.pid
#   registry  log /var/log/ci-registry.log      pid /run/ci-registry.pid
#             config /etc/ci-registry/config.yml, storage /var/lib/ci-registry
# Stop both with .ci/stop-engine.sh.
set -euo pipefail

DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_LOG=/var/log/dockerd-ci.log
DOCKERD_PID=/run/ci-dockerd.pid
REGISTRY_ADDR=127.0.0.1:5000
REGISTRY_CONFIG=/etc/ci-registry/config.yml
REGISTRY_STORAGE=/var/lib/ci-registry
REGISTRY_LOG=/var/log/ci-registry.log
REGISTRY_PID=/run/ci-registry.pid
TIMEOUT=${CI_ENGINE_TIMEOUT:-60}

log() { echo "[ci] $*"; }
die() {
    echo "[ci] ERROR: $*" >&2
    exit 1
}

# ---- daemon.json: keep what is there, add the containerd snapshotter --------
mkdir -p "$(dirname "$DAEMON_JSON")"
if [ -s "$DAEMON_JSON" ]; then
    current=$(cat "$DAEMON_JSON")
else
    current='{}'
fi
wanted=$(printf '%s' "$current" | jq '.features["containerd-snapshotter"] = true') ||
    die "$DAEMON_JSON is not valid JSON"
if [ "$(printf '%s' "$current" | jq -S .)" != "$(printf '%s' "$wanted" | jq -S .)" ]; then
    log "writing $DAEMON_JSON (containerd-snapshotter on)"
    printf '%s\n' "$wanted" >"$DAEMON_JSON"
fi

# ---- dockerd -----------------------------------------------------------------
uses_containerd_store() {
    # The output first, then grep: with pipefail, grep -q closing the pipe early would make
    # docker's SIGPIPE the function's status.
    status=$(docker info --format '{{json .DriverStatus}}' 2>/dev/null) || return 1
    case $status in *io.containerd.snapshotter*) return 0 ;; *) return 1 ;; esac
}

wait_for_docker() {
    i=0
    until docker info >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt "$TIMEOUT" ]; then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not answer within ${TIMEOUT}s (log: $DOCKERD_LOG)"
        fi
        if [ -f "$DOCKERD_PID" ] && ! kill -0 "$(cat "$DOCKERD_PID")" 2>/dev/null; then
            tail -n 20 "$DOCKERD_LOG" >&2 || true
            die "dockerd exited while starting (log: $DOCKERD_LOG)"
        fi
        sleep 1
    done
}

if docker info >/dev/null 2>&1; then
    if uses_containerd_store; then
        log "dockerd already answers (containerd image store)"
    elif [ -f "$DOCKERD_PID" ] && kill -0 "$(cat "$DOCKERD_PID")" 2>/dev/null; then
        log "dockerd (ours) runs without the containerd image store: restarting it"
        pid=$(cat "$DOCKERD_PID")
        kill "$pid"
        i=0
        while kill -0 "$pid" 2>/dev/null; do
            i=$((i + 1))
            [ "$i" -le "$TIMEOUT" ] || die "dockerd (pid $pid) did not stop"
            sleep 1
        done
    else
        die "a dockerd not started by these scripts runs without the containerd image store; add {\"features\":{\"containerd-snapshotter\":true}} to $DAEMON_JSON and restart it"
    fi
fi
if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || die "dockerd not found: run .ci/install-engine.sh"
    log "starting dockerd (log $DOCKERD_LOG)"
    rm -f "$DOCKERD_PID"
    # Its own session, so that it outlives the shell that started it (setsid
    # execs dockerd in place here, so $! is dockerd's pid).
    setsid dockerd </dev/null >>"$DOCKERD_LOG" 2>&1 &
    echo "$!" >"$DOCKERD_PID"
    wait_for_docker
    log "dockerd ready: server $(docker version --format '{{.Server.Version}}')"
fi
uses_containerd_store || die "dockerd answers but does not use the containerd image store"

# A swarm on an engine these scripts run can only be one that a killed run left in the data
# root (the swarm tier leaves its swarm on exit); it would keep the tier from making its own.
# Left here in CI only: elsewhere the engine may be someone's real swarm.
swarm=$(docker info --format '{{.Swarm.LocalNodeState}}')
if [ "$swarm" != inactive ] && [ "${CI:-}" = true ] && [ -f "$DOCKERD_PID" ] &&
    kill -0 "$(cat "$DOCKERD_PID")" 2>/dev/null; then
    log "the engine is in a swarm ($swarm) that a killed run left behind: leaving it"
    docker swarm leave --force >/dev/null
fi

# ---- arm64 emulation -----------------------------------------------------------
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    log "mounting binfmt_misc"
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
    log "enabling qemu-aarch64 in binfmt_misc"
    update-binfmts --enable qemu-aarch64
fi
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "qemu-aarch64 binfmt handler not enabled"
# F (fix binary) lets containers use the host's interpreter
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
    die "qemu-aarch64 binfmt handler lacks the F flag: arm64 containers would not run"

# ---- local registry ------------------------------------------------------------
registry_up() {
    curl --noproxy '*' -fsS -o /dev/null --max-time 2 "http://$REGISTRY_ADDR/v2/" 2>/dev/null
}
if registry_up; then
    log "registry already answers on http://$REGISTRY_ADDR/v2/"
else
    command -v docker-registry >/dev/null || die "docker-registry not found: run .ci/install-engine.sh"
    mkdir -p "$(dirname "$REGISTRY_CONFIG")" "$REGISTRY_STORAGE"
    cat >"$REGISTRY_CONFIG" <<CONF
# Written by .ci/start-engine.sh
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REGISTRY_STORAGE
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
CONF
    log "starting the registry on $REGISTRY_ADDR (log $REGISTRY_LOG)"
    setsid docker-registry serve "$REGISTRY_CONFIG" </dev/null >>"$REGISTRY_LOG" 2>&1 &
    echo "$!" >"$REGISTRY_PID"
    i=0
    until registry_up; do
        i=$((i + 1))
        if [ "$i" -gt "$TIMEOUT" ] || ! kill -0 "$(cat "$REGISTRY_PID")" 2>/dev/null; then
            tail -n 20 "$REGISTRY_LOG" >&2 || true
            die "registry did not answer on http://$REGISTRY_ADDR/v2/ (log: $REGISTRY_LOG)"
        fi
        sleep 1
    done
    log "registry ready"
fi
