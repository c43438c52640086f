#!/usr/bin/env bash
# Build the multi-platform base image ${BASE_IMAGE:-127.0.0.1:5000/debian:bookworm-slim}
# offline (no Docker Hub): debootstrap minbase bookworm for amd64 and arm64,
# strip docs/man/locales, docker import each platform, push one tag per
# platform to the local registry and join them into one manifest list.
# Idempotent: stripped rootfs tarballs are cached under /var/cache/ci-base/,
# and nothing is rebuilt when the registry already holds the list with both
# platforms. Needs .ci/install-engine.sh and .ci/start-engine.sh first.
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-127.0.0.1:5000/debian:bookworm-slim}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
ARCHES="amd64 arm64"
CACHE=/var/cache/ci-base
# Bump when the rootfs recipe below changes, so cached tarballs are rebuilt.
RECIPE=v1

log() { echo "[ci] $*"; }
die() {
    echo "[ci] ERROR: $*" >&2
    exit 1
}

# Only ever push to a registry on this machine.
case $BASE_IMAGE in
    127.0.0.1:*/* | localhost:*/* | localhost/* | 127.0.0.1/*) ;;
    *) die "BASE_IMAGE=$BASE_IMAGE is not in the local registry (want 127.0.0.1:5000/NAME:TAG)" ;;
esac
case $BASE_IMAGE in
    *@*) die "BASE_IMAGE must be NAME:TAG, not a digest" ;;
esac

uname_for() {
    case $1 in
        amd64) echo x86_64 ;;
        arm64) echo aarch64 ;;
        *) die "unknown arch $1" ;;
    esac
}

# True when the registry has BASE_IMAGE as a list holding every platform.
manifest_complete() {
    raw=$(docker buildx imagetools inspect --raw "$BASE_IMAGE" 2>/dev/null) || return 1
    plats=$(printf '%s' "$raw" | jq -r '.manifests[]?.platform | "\(.os)/\(.architecture)"' 2>/dev/null) || return 1
    for a in $ARCHES; do
        printf '%s\n' "$plats" | grep -qx "linux/$a" || return 1
    done
}

# Write a stripped minbase rootfs tarball for one arch into the cache.
make_rootfs() {
    arch=$1
    tarball=$2
    work=$(mktemp -d "$CACHE/rootfs-$arch.XXXXXX")
    root=$work/root
    log "debootstrap --variant=minbase $SUITE ($arch) into $root"
    start=$(date +%s)
    if ! debootstrap --variant=minbase --arch="$arch" "$SUITE" "$root" "$MIRROR" \
        >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        tail -n 30 "$root/debootstrap/debootstrap.log" >&2 2>/dev/null || true
        die "debootstrap $arch failed (logs in $work)"
    fi
    log "debootstrap $arch took $(($(date +%s) - start))s"

    # APT sources like the official image: main, updates, security.
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    # Container apt/dpkg settings as in the official slim images.
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF
    echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
    echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CONF'
# No docs, man pages or translations in later installs either (copyrights stay).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
CONF

    # Strip what a container does not need.
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/usr/share/lintian" "$root/usr/share/linda"
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin "$root/var/cache/apt/archives/"*.deb
    rm -f "$root/var/cache/debconf/"*-old "$root/var/lib/dpkg/"*-old
    find "$root/var/log" -type f -delete
    # Host files that debootstrap copied in; the engine provides its own.
    : >"$root/etc/resolv.conf"
    : >"$root/etc/hostname"
    rm -f "$root/etc/machine-id"

    tar --numeric-owner -C "$root" -cf "$work/rootfs.tar" .
    mv "$work/rootfs.tar" "$tarball"
    rm -rf "$work"
    log "rootfs $arch: $(du -h "$tarball" | cut -f1) ($tarball)"
}

docker info >/dev/null 2>&1 || die "docker does not answer: run .ci/start-engine.sh first"

built=no
if manifest_complete; then
    log "base image $BASE_IMAGE already in the registry (linux/amd64 + linux/arm64)"
else
    mkdir -p "$CACHE"
    sources=""
    for arch in $ARCHES; do
        tarball=$CACHE/$SUITE-minbase-$RECIPE-$arch.tar
        if [ -s "$tarball" ]; then
            log "reusing cached rootfs $tarball"
        else
            make_rootfs "$arch" "$tarball"
        fi
        tag=$BASE_IMAGE-$arch
        log "docker import --platform linux/$arch -> $tag"
        docker import --platform "linux/$arch" --change 'CMD ["bash"]' \
            --message "debootstrap --variant=minbase $SUITE ($arch), stripped" \
            "$tarball" "$tag" >/dev/null
        log "docker push $tag"
        docker push -q "$tag" >/dev/null
        sources="$sources $tag"
    done
    log "docker buildx imagetools create -t $BASE_IMAGE$sources"
    # shellcheck disable=SC2086  # one argument per platform tag
    docker buildx imagetools create -t "$BASE_IMAGE" $sources
    manifest_complete || die "$BASE_IMAGE is not a list with linux/amd64 + linux/arm64 after imagetools create"
    built=yes
fi

# ---- checks ------------------------------------------------------------------------
digest=$(docker buildx imagetools inspect --format '{{json .Manifest}}' "$BASE_IMAGE" | jq -r .digest)
for arch in $ARCHES; do
    # Pull (cheap when present) so the local store holds this platform of the list.
    docker pull -q --platform "linux/$arch" "$BASE_IMAGE" >/dev/null
    got=$(docker run --rm --pull never --platform "linux/$arch" "$BASE_IMAGE" uname -m)
    [ "$got" = "$(uname_for "$arch")" ] || die "linux/$arch container says uname -m=$got"
    log "docker run --platform linux/$arch $BASE_IMAGE: $got"
done

# A buildx build (default docker driver) FROM the list, for both platforms, with
# apt working inside. Done once per manifest digest (stamp in the cache).
stamp=$CACHE/verified-build-$(printf '%s' "$BASE_IMAGE@$digest" | sha256sum | cut -c1-16)
if [ "$built" = no ] && [ -f "$stamp" ]; then
    log "buildx build FROM $BASE_IMAGE already verified for $digest"
else
    ctx=$(mktemp -d /tmp/ci-base-check.XXXXXX)
    cat >"$ctx/Dockerfile" <<'DOCKERFILE'
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG TARGETARCH
RUN m=$(uname -m); echo "TARGETARCH=$TARGETARCH uname -m=$m"; \
    case "$TARGETARCH:$m" in amd64:x86_64|arm64:aarch64) ;; *) exit 1 ;; esac
RUN apt-get update -qq && apt-get install -s -qq python3 >/dev/null && echo "apt ok"
DOCKERFILE
    log "docker buildx build --platform linux/amd64,linux/arm64 FROM $BASE_IMAGE (check)"
    platforms=$(for a in $ARCHES; do printf 'linux/%s,' "$a"; done)
    if ! docker buildx build --progress=plain --no-cache \
        --platform "${platforms%,}" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --output type=cacheonly \
        "$ctx" >"$ctx/build.log" 2>&1; then
        tail -n 40 "$ctx/build.log" >&2
        die "buildx build FROM $BASE_IMAGE failed (log $ctx/build.log)"
    fi
    rm -rf "$ctx"
    touch "$stamp"
    log "buildx build FROM $BASE_IMAGE works for $ARCHES"
fi
log "base image ready: $BASE_IMAGE ($digest)"
