#!/usr/bin/env bash
# Prepare the wheelhouse the Docker build installs from (the build itself uses no
# network: pip --no-index).  Run on the host, where pip reaches the package index.
#
#   bash docker/make_wheelhouse.sh [OUT_DIR]          # default OUT_DIR: .whl (the build context)
#   TORCH_VARIANT=cu126 bash docker/make_wheelhouse.sh
#
# Layout of OUT_DIR:
#   *.whl              every runtime dependency of prettier_bids[$EXTRAS] (not the package itself)
#   requirements.txt   those wheels pinned (name==version), the image's dependency layer
#   build/             pip, setuptools, wheel (to build the package from source inside the build)
#   KEY                hash of what the wheelhouse was made from
#
# Cached: wheelhouses live in $PRETTIER_CACHE_DIR/wheelhouse/<KEY>/ (KEY = hash of setup.cfg,
# constraints.txt, the torch variant, python version and this recipe); OUT_DIR is refreshed from
# the cache with hard links (or a copy) when the key is unchanged, so re-runs take seconds.
#
# torch: TORCH_VARIANT=cpu (default) asks for torch==2.13.0+cpu; the local CPU wheel pip finds
# on our machines is used, else the PyTorch CPU index (TORCH_INDEX_URL). TORCH_VARIANT=cuda
# (docker/build.sh --gpu) takes PyPI's own torch==2.13.0, the CUDA 13 build whose CUDA
# libraries come as nvidia-* wheels (~3 GB), resolved against PyPI alone (pip --isolated, so no
# local CPU wheel can satisfy it). A PyTorch-index CUDA variant (cu126, cu128, ...) takes
# torch==2.13.0+<variant> from TORCH_INDEX_URL (default https://download.pytorch.org/whl/<variant>).
# pip never falls back to the (CUDA) torch on PyPI for the CPU variant.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$REPO/.whl}
EXTRAS=${EXTRAS:-bids}
TORCH_VARIANT=${TORCH_VARIANT:-cpu}
CACHE_DIR=${PRETTIER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prettier_bids}
RECIPE=1

log() { echo "make_wheelhouse: $*" >&2; }

# The image's interpreter is CPython 3.11 on Linux: wheels must be made by a matching python.
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
    for c in python3.11 python3 python; do
        if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            PY=$c; break
        fi
    done
fi
[[ -n "$PY" ]] || { log "need a CPython 3.11 on the host (set PYTHON=/path/to/python3.11)"; exit 1; }
"$PY" - <<'EOF' || exit 1
import platform, sys
if sys.platform != "linux" or sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
    sys.exit(f"make_wheelhouse: {sys.executable} is not CPython 3.11 on Linux")
EOF
ARCH=$("$PY" -c 'import platform; print(platform.machine())')

TORCH_PIN=torch==2.13.0
[[ "$TORCH_VARIANT" =~ ^(cpu|cuda|cu[0-9]+|rocm[0-9.]+)$ ]] || { log "bad TORCH_VARIANT=$TORCH_VARIANT"; exit 64; }
if [[ "$TORCH_VARIANT" == cuda ]]; then
    TORCH_REQ=$TORCH_PIN        # PyPI's build: no local version label
    TORCH_WHEEL_GLOB="torch-2.13.0-*.whl"
else
    TORCH_REQ="$TORCH_PIN+$TORCH_VARIANT"
    TORCH_WHEEL_GLOB="torch-2.13.0+$TORCH_VARIANT-*.whl"
fi

KEY=$( { echo "recipe=$RECIPE variant=$TORCH_VARIANT extras=$EXTRAS arch=$ARCH";
         "$PY" -c 'import sys; print(sys.version.split()[0])';
         cat "$REPO/setup.cfg" "$REPO/constraints.txt" "$REPO/pyproject.toml"; } | sha256sum | cut -c1-16)
CACHED="$CACHE_DIR/wheelhouse/$KEY"

if [[ ! -f "$CACHED/requirements.txt" ]]; then
    log "building wheelhouse $KEY (prettier_bids[$EXTRAS], $TORCH_REQ) with $("$PY" --version)"
    mkdir -p "$CACHE_DIR/wheelhouse"
    TMP=$(mktemp -d "$CACHE_DIR/wheelhouse/.tmp.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT
    cons="$TMP/constraints.txt"
    { grep -v '^torch' "$REPO/constraints.txt" || true; echo "$TORCH_REQ"; } >"$cons"
    # Never ask the local index for a CUDA torch by accident: the variant is pinned with its
    # local version label, so only a matching wheel can satisfy it.
    pip_wheel() {
        "$PY" -m pip wheel --prefer-binary --wheel-dir "$TMP/wheels" -c "$cons" "$@" "${REPO}[${EXTRAS}]"
    }
    if [[ "$TORCH_VARIANT" == cpu ]] && pip_wheel >"$TMP/pip.log" 2>&1; then
        :
    elif [[ "$TORCH_VARIANT" == cuda ]]; then
        # PyPI only: --isolated drops the machine's pip config (local find-links and indexes
        # that may hold a CPU torch 2.13.0, which '==2.13.0' would also accept).
        pip_wheel --isolated --index-url "${PYPI_INDEX_URL:-https://pypi.org/simple}" >"$TMP/pip.log" 2>&1 \
            || { tail -n 30 "$TMP/pip.log" >&2; log "pip wheel failed (full log above)"; exit 1; }
    else
        idx=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/$TORCH_VARIANT}
        [[ "$TORCH_VARIANT" == cpu ]] && log "no local $TORCH_REQ wheel; trying $idx"
        pip_wheel --extra-index-url "$idx" >>"$TMP/pip.log" 2>&1 \
            || { tail -n 30 "$TMP/pip.log" >&2; log "pip wheel failed (full log above)"; exit 1; }
    fi
    rm -f "$TMP"/wheels/prettier_bids-*.whl
    # shellcheck disable=SC2086  # the glob is meant to expand
    ls "$TMP"/wheels/$TORCH_WHEEL_GLOB >/dev/null 2>&1 \
        || { log "wheelhouse has no $TORCH_WHEEL_GLOB wheel"; exit 1; }
    # pinned list of the resolved set (wheel names normalised by pip: name-version-...)
    "$PY" - "$TMP/wheels" >"$TMP/wheels/requirements.txt" <<'EOF'
import pathlib, sys
for w in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    name, version = w.name.split("-")[:2]
    print(f"{name}=={version}")
EOF
    "$PY" -m pip download --only-binary=:all: --dest "$TMP/wheels/build" \
        "pip>=23" "setuptools>=61" wheel >>"$TMP/pip.log" 2>&1 \
        || { tail -n 30 "$TMP/pip.log" >&2; exit 1; }
    echo "$KEY" >"$TMP/wheels/KEY"
    rm -rf "$CACHED"
    mv "$TMP/wheels" "$CACHED"
    log "cached in $CACHED ($(du -sh "$CACHED" | cut -f1), $(wc -l <"$CACHED/requirements.txt") wheels)"
fi

if [[ "$(cat "$OUT/KEY" 2>/dev/null)" != "$KEY" ]]; then
    rm -rf "$OUT"
    mkdir -p "$(dirname "$OUT")"
    cp -al "$CACHED" "$OUT" 2>/dev/null || cp -a "$CACHED" "$OUT"
fi
log "wheelhouse $OUT is up to date ($KEY)"
