#!/usr/bin/env bash
# Make the local base image for offline Docker builds: a minimal Debian bookworm
# root file system with python3.11 (debootstrap), turned into an image with
# `docker import`.  Base images cannot be pulled on our build/CI machines; users
# with registry access do not need this (the Dockerfile's default BASE_IMAGE is
# the public python:3.11-slim-bookworm).
#
#   sudo bash docker/make_base.sh            # -> image prettier-base:bookworm-py311
#   BASE_TAG=my/base:1 bash docker/make_base.sh
#
# Idempotent and cached: if the image exists nothing is done; if the root file
# system tarball is in the cache ($PRETTIER_CACHE_DIR/base/) it is just imported
# (seconds); only a clean machine runs debootstrap (a few minutes).
# Needs root and a running dockerd; debootstrap is installed with apt-get when missing.
# The Debian mirror is taken from the host's apt sources (override: DEBIAN_MIRROR).
set -euo pipefail

BASE_TAG=${BASE_TAG:-prettier-base:bookworm-py311}
SUITE=${SUITE:-bookworm}
CACHE_DIR=${PRETTIER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prettier_bids}
# Bump when the package list or the clean-up below changes (invalidates the cached tarball).
RECIPE=2
TARBALL="$CACHE_DIR/base/${SUITE}-py311-r${RECIPE}.tar"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { echo "make_base: $*" >&2; }

if [[ $FORCE == 0 ]] && docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    log "$BASE_TAG exists (use --force to remake it)"
    exit 0
fi

if [[ $FORCE == 1 || ! -s "$TARBALL" ]]; then
    if [[ $(id -u) != 0 ]]; then
        log "debootstrap needs root: run as root, or build with a public base (BASE_IMAGE=python:3.11-slim-bookworm)"
        exit 1
    fi
    if ! command -v debootstrap >/dev/null && command -v apt-get >/dev/null; then
        # as docker/ci.sh does: root with apt installs what it needs
        log "installing debootstrap (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get -qq update >/dev/null 2>&1 || true
        apt-get -qq install -y --no-install-recommends debootstrap >/dev/null 2>&1 \
            || log "apt-get install debootstrap failed"
    fi
    command -v debootstrap >/dev/null || { log "debootstrap missing and not installable here (no apt-get?): install it, or build with BASE_IMAGE=python:3.11-slim-bookworm"; exit 1; }
    if [[ -z "${DEBIAN_MIRROR:-}" ]]; then
        # first deb.debian.org-style URI of the host's apt configuration (deb822 or one-line format)
        DEBIAN_MIRROR=$(grep -hsE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
                        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
        [[ -z "$DEBIAN_MIRROR" ]] && DEBIAN_MIRROR=$(grep -hsE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                        | grep -v -- '-security' | awk '{for(i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' | head -n1 || true)
        DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
    fi
    SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-${DEBIAN_MIRROR%/debian}/debian-security}
    ROOT=$(mktemp -d /tmp/prettier-base.XXXXXX)
    cleanup() {
        umount "$ROOT/proc" 2>/dev/null || true
        rm -rf --one-file-system "$ROOT"
    }
    trap cleanup EXIT
    log "debootstrap $SUITE from $DEBIAN_MIRROR into $ROOT"
    # minbase: essential + apt; python3-venv brings python3.11, ensurepip's wheels.
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$SUITE" "$ROOT" "$DEBIAN_MIRROR" >"$ROOT.log" 2>&1 \
        || { tail -n 30 "$ROOT.log" >&2; log "debootstrap failed (log: $ROOT.log)"; exit 1; }
    cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $SUITE main
deb $DEBIAN_MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
    # security/point-release updates (best effort: a mirror without them still gives a usable base)
    mount -t proc proc "$ROOT/proc"
    if chroot "$ROOT" /bin/sh -c 'apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq -y upgrade' >>"$ROOT.log" 2>&1; then
        log "applied $SUITE-updates/$SUITE-security"
    else
        log "warning: could not apply updates (see $ROOT.log); continuing with the $SUITE release"
    fi
    umount "$ROOT/proc"
    # slim it: package caches and lists, docs, man pages, non-English locales
    chroot "$ROOT" apt-get clean
    rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/log/*.log \
           "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* \
           "$ROOT"/usr/share/locale/* "$ROOT"/tmp/* "$ROOT"/var/tmp/*
    find "$ROOT/usr/lib/python3.11" -name '__pycache__' -prune -exec rm -rf {} + 2>/dev/null || true
    : >"$ROOT/etc/machine-id"
    chroot "$ROOT" python3.11 -c 'import sys; assert sys.version_info[:2] == (3, 11)'
    mkdir -p "$(dirname "$TARBALL")"
    tar --numeric-owner --xattrs -C "$ROOT" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    rm -f "$ROOT.log"
    log "root file system cached: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
fi

log "docker import $TARBALL -> $BASE_TAG"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $SUITE + python3.11 (prettier_bids docker/make_base.sh r$RECIPE)" \
    "$TARBALL" "$BASE_TAG" >/dev/null
docker image ls "$BASE_TAG"
