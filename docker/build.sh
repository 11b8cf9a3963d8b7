#!/usr/bin/env bash
# Build the prettier_bids Docker image (tags prettier:latest and prettier:VERSION).
#
#   bash docker/build.sh                                   # offline build (our machines, CI)
#   bash docker/build.sh --base python:3.11-slim-bookworm  # with a public base image
#   bash docker/build.sh --gpu                             # CUDA image (PyPI's torch 2.13.0, CUDA 13)
#   TORCH_VARIANT=cu126 bash docker/build.sh               # CUDA image from the PyTorch index
#
# Steps (each cached, so a re-run with nothing changed takes seconds):
#   1. base image: unless --base is given, prettier-base:bookworm-py311 is made by
#      docker/make_base.sh (debootstrap + docker import; needs root) when missing;
#   2. wheelhouse .whl/ from docker/make_wheelhouse.sh (pip on the host; CPU torch 2.13.0);
#   3. docker build --network=none (nothing is downloaded inside the build);
#   4. smoke test: the image's prettier-bids --version.
# Options:
#   --base IMAGE    base image (any Debian bookworm image with python3.11 + venv)
#   --tag NAME      image name (default: prettier)
#   --gpu           CUDA torch (TORCH_VARIANT=cuda: PyPI's build with its nvidia-* wheels; tags
#                   prettier:VERSION-cuda and prettier:cuda; about 9 GB; run with --gpus all)
#   --no-cache      pass --no-cache to docker build
# Environment: TORCH_VARIANT (cpu|cuNNN), PRETTIER_CACHE_DIR (default ~/.cache/prettier_bids),
#   TORCH_INDEX_URL, PYTHON (a python3.11 for the wheelhouse), DOCKER (docker client).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
DOCKER=${DOCKER:-docker}
LOCAL_BASE=prettier-base:bookworm-py311
BASE=""
NAME=prettier
TORCH_VARIANT=${TORCH_VARIANT:-cpu}
BUILD_OPTS=()

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --base) BASE=$2; shift 2 ;;
        --base=*) BASE=${1#*=}; shift ;;
        --tag) NAME=$2; shift 2 ;;
        --tag=*) NAME=${1#*=}; shift ;;
        --no-cache) BUILD_OPTS+=(--no-cache); shift ;;
        --gpu) TORCH_VARIANT=cuda; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "build.sh: unknown option $1" >&2; usage >&2; exit 64 ;;
    esac
done
log() { echo "build.sh: $*" >&2; }

"$DOCKER" info >/dev/null 2>&1 || {
    log "cannot reach the Docker daemon (start it: dockerd &, or systemctl start docker)"; exit 69; }

t0=$(date +%s)
if [[ -z "$BASE" ]]; then
    BASE=$LOCAL_BASE
    BASE_TAG=$BASE bash "$REPO/docker/make_base.sh"
fi
TORCH_VARIANT=$TORCH_VARIANT bash "$REPO/docker/make_wheelhouse.sh" "$REPO/.whl"

VERSION=$(sed -n 's/^__version__ *= *["'\'']\([^"'\'']*\)["'\''].*/\1/p' prettier_bids/__init__.py)
[[ -n "$VERSION" ]] || { log "cannot read __version__ from prettier_bids/__init__.py"; exit 1; }
VCS_REF=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ "$VCS_REF" != unknown ]] && ! git -C "$REPO" diff --quiet HEAD -- 2>/dev/null; then
    VCS_REF="$VCS_REF-dirty"
fi
if [[ "$TORCH_VARIANT" == cpu ]]; then
    TAGS=("$NAME:$VERSION" "$NAME:latest")
else
    TAGS=("$NAME:$VERSION-$TORCH_VARIANT" "$NAME:$TORCH_VARIANT")
fi
ls prettier_bids/data/weights/*.pt >/dev/null 2>&1 \
    || log "warning: no prettier_bids/data/weights/*.pt: the image will ship without model weights"

tag_args=()
for t in "${TAGS[@]}"; do tag_args+=(-t "$t"); done
log "docker build ${TAGS[*]} from $BASE (torch $TORCH_VARIANT, version $VERSION, $VCS_REF)"
t1=$(date +%s)
"$DOCKER" build --network=none "${BUILD_OPTS[@]}" \
    --build-arg BASE_IMAGE="$BASE" \
    --build-arg TORCH_VARIANT="$TORCH_VARIANT" \
    --build-arg VERSION="$VERSION" \
    --build-arg VCS_REF="$VCS_REF" \
    --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "${tag_args[@]}" "$REPO"
t2=$(date +%s)

# Smoke test: the entry point starts, offline, as the image's non-root user.
got=$("$DOCKER" run --rm --network=none "${TAGS[0]}" --version 2>&1) \
    || { log "smoke test failed: $got"; exit 1; }
log "smoke test: $got"
size=$("$DOCKER" image inspect --format '{{.Size}}' "${TAGS[0]}")
log "built ${TAGS[*]}: $((size / 1000000)) MB; docker build $((t2 - t1)) s, total $((t2 - t0)) s"
