#!/usr/bin/env bash
# Install the container toolchain from Debian packages (idempotent):
#   docker.io, docker-cli, docker-buildx, docker-compose from trixie, pinned at
#   priority 100 so nothing else on the machine upgrades to trixie;
#   qemu-user-static, binfmt-support, debootstrap, docker-registry, redis-server, chromium
#   (the health page's browser tests), and prometheus for its promtool (checks
#   deploy/prometheus: tests/manifests/test_prometheus.py; on a machine with a service
#   manager the package also enables a Prometheus server)
#   from the machine's own suite (bookworm).
# A second run only checks and exits.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes

TRIXIE_SOURCES=/etc/apt/sources.list.d/ci-trixie.sources
TRIXIE_PIN=/etc/apt/preferences.d/ci-trixie
TRIXIE_PKGS="docker.io docker-cli docker-buildx docker-compose"
# chromium: the real browser of the health page's e2e tests (Playwright drives it; never
# `playwright install`, which would download a browser of its own).
BOOKWORM_PKGS="qemu-user-static binfmt-support debootstrap docker-registry redis-server curl jq socat
    prometheus chromium"

log() { echo "[ci] $*"; }

missing() {
    # missing PKG... : print the packages that are not fully installed
    for p in "$@"; do
        s=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [ "$s" = installed ] || echo "$p"
    done
}

installed() {
    # installed PKG... : true when every package is fully installed
    for p in "$@"; do
        s=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
        [ "$s" = installed ] || return 1
    done
}

plugins_ok() {
    docker buildx version >/dev/null 2>&1 && docker compose version >/dev/null 2>&1
}

docker_new_enough() {
    # bookworm's docker.io is 20.10 (no buildx/compose v2): want trixie's 26+
    v=$(dpkg-query -W -f='${Version}' docker.io 2>/dev/null || true)
    major=${v%%.*}
    major=${major#*:}
    case $major in '' | *[!0-9]*) return 1 ;; esac
    [ "$major" -ge 26 ]
}

# shellcheck disable=SC2086  # word splitting of the package lists is wanted
if installed $TRIXIE_PKGS $BOOKWORM_PKGS && docker_new_enough && plugins_ok; then
    log "engine packages already installed: $(docker --version)"
    log "$(docker buildx version)"
    log "$(docker compose version)"
    exit 0
fi

# On bookworm the engine packages come from trixie (pinned low); on trixie or
# newer the machine's own suite already has them.
CODENAME=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release | tr -d '"')
if [ "$CODENAME" != bookworm ]; then
    log "host suite is '$CODENAME': installing the engine from it directly"
    # shellcheck disable=SC2086
    todo=$(missing $TRIXIE_PKGS $BOOKWORM_PKGS | tr '\n' ' ' | sed 's/ *$//')
    if [ -n "$todo" ]; then
        log "installing $todo"
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends --no-upgrade $todo >/dev/null
    fi
    plugins_ok || { echo "[ci] ERROR: docker buildx/compose plugins do not work with $(command -v docker)" >&2; exit 1; }
    log "$(docker --version); $(docker buildx version); $(docker compose version)"
    exit 0
fi

if [ ! -f "$TRIXIE_SOURCES" ]; then
    log "adding the trixie suite ($TRIXIE_SOURCES)"
    cat >"$TRIXIE_SOURCES" <<'SRC'
# Added by .ci/install-engine.sh: only for docker.io/buildx/compose (pinned low).
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
if [ ! -f "$TRIXIE_PIN" ]; then
    log "pinning trixie at priority 100 ($TRIXIE_PIN)"
    cat >"$TRIXIE_PIN" <<'PIN'
# Added by .ci/install-engine.sh: never upgrade to trixie unless asked for.
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
fi

# Refresh the lists when trixie's are missing or older than a day.
if ! ls /var/lib/apt/lists/*_dists_trixie_* >/dev/null 2>&1 ||
    [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*_dists_trixie_InRelease' -mmin +1440)" ]; then
    log "apt-get update"
    apt-get update -qq
fi

# Only what is missing, and --no-upgrade: nothing already there changes.
# shellcheck disable=SC2086
todo=$(missing $BOOKWORM_PKGS | tr '\n' ' ' | sed 's/ *$//')
if [ -n "$todo" ]; then
    log "installing $todo"
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends --no-upgrade $todo >/dev/null
fi

# shellcheck disable=SC2086
if ! installed $TRIXIE_PKGS || ! docker_new_enough || ! plugins_ok; then
    log "installing $TRIXIE_PKGS from trixie"
    # PKG/trixie, NOT '-t trixie': -t makes every dependency prefer trixie and
    # would upgrade libc6, base-files, dpkg, libstdc++6 ...  With PKG/trixie
    # only what bookworm cannot satisfy (containerd) comes from trixie.
    set --
    for p in $TRIXIE_PKGS; do set -- "$@" "$p/trixie"; done
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
fi

# The plugins must work with whichever docker is first on PATH (a docker 28.x
# client may sit in /usr/local/bin, ahead of Debian's /usr/bin/docker).
if ! plugins_ok; then
    echo "[ci] ERROR: 'docker buildx version' or 'docker compose version' fails with $(command -v docker)" >&2
    exit 1
fi
log "docker client $(command -v docker): $(docker --version)"
log "$(docker buildx version)"
log "$(docker compose version)"
