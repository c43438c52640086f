#!/usr/bin/env bash
# Stop the registry and dockerd that .ci/start-engine.sh started (pid files
# /run/ci-registry.pid and /run/ci-dockerd.pid). Processes started by anyone
# else are left alone. Never fails when nothing runs.
set -euo pipefail

log() { echo "[ci] $*"; }

# stop NAME PIDFILE EXPECTED_COMM TIMEOUT
stop() {
    name=$1 pidfile=$2 comm=$3 timeout=$4
    if [ ! -f "$pidfile" ]; then
        log "$name: no pid file ($pidfile), nothing to stop"
        return 0
    fi
    pid=$(cat "$pidfile" 2>/dev/null || true)
    case $pid in '' | *[!0-9]*)
        log "$name: bad pid file $pidfile, removing it"
        rm -f "$pidfile"
        return 0
        ;;
    esac
    # Guard against a recycled pid: only stop the process we started.
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" != "$comm" ]; then
        log "$name: pid $pid is not running (stale pid file)"
        rm -f "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt "$timeout" ]; then
            log "$name did not stop in ${timeout}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 1
    done
    rm -f "$pidfile"
    log "$name stopped"
}

stop registry /run/ci-registry.pid docker-registry 15
# dockerd stops its containers and its managed containerd first: give it time.
stop dockerd /run/ci-dockerd.pid dockerd 45
