#!/usr/bin/env bash
# Single entry point for the container toolchain: install the engine packages,
# start dockerd + arm64 emulation + the local registry, build the base image.
# Idempotent: a second run only checks (a few seconds). Clean up with
# .ci/stop-engine.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
t0=$(date +%s)
for step in install-engine start-engine base-image; do
    s=$(date +%s)
    echo "[ci] == $step"
    "$here/$step.sh"
    echo "[ci] == $step done in $(($(date +%s) - s))s"
done
echo "[ci] toolchain ready in $(($(date +%s) - t0))s"
