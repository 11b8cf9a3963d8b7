#!/usr/bin/env bash
# Archive batch mode: run prettier-bids over many participants, one job per participant,
# resumably, and merge the results into OUTPUT_DIR/prettier/logs/batch_summary.tsv.
#
#   prettier_batch.sh BIDS_DIR OUTPUT_DIR [options] [-- prettier-bids options]
#
#   # SLURM array, installed package, 50 tasks at a time, 2 CPUs / 8 GB each:
#   bash docker/slurm/prettier_batch.sh /archive/bids /archive/derivatives --max-parallel 50
#   # the same with the container image (Apptainer):
#   bash docker/slurm/prettier_batch.sh /archive/bids /archive/derivatives --runner apptainer --sif prettier-0.1.0.sif
#   # no scheduler (workstation), 2 participants at a time, with Docker:
#   bash docker/slurm/prettier_batch.sh /archive/bids /archive/derivatives --engine local --runner docker --max-parallel 2
#
# Resumable: rerunning the same command submits only the participants that are not complete
# (no summary yet, a failed input, or input files newer than their summary); prettier-bids itself
# also skips every image whose outputs are complete. --all submits everyone (e.g. new weights).
#
# Options:
#   --engine slurm|local     slurm (default when sbatch exists) or local (xargs -P on this machine)
#   --runner native|apptainer|singularity|docker   how a task runs prettier-bids (default native)
#   --sif FILE               the Apptainer/Singularity image (runner apptainer/singularity)
#   --image TAG              the Docker image (runner docker; default prettier:latest)
#   --participants FILE      only these participants (one label a line; default: every sub-* folder)
#   --all                    do not skip participants that look complete
#   --max-parallel N         tasks running at once (default: 50 on SLURM, 1 locally)
#   --cpus N, --mem SIZE, --time T   per task (default 2, 8G, 04:00:00)
#   --partition P, --account A, --sbatch-args "ARGS"   passed to sbatch
#   --work-root DIR          parent of the per-task work dirs (default: a new private folder, mktemp -d, in
#                            the job's $SLURM_TMPDIR or $TMPDIR, else /tmp)
#   --wait                   SLURM: wait until the array and the summary job have finished
#   --dry-run                print what would be submitted
# Exit code: local engine / --wait: 0 when every input is done or skipped, 1 otherwise;
# SLURM without --wait: 0 once submitted (job ids printed; the summary job writes the TSV).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }
log() { echo "prettier_batch: $*" >&2; }

ENGINE="" RUNNER=native SIF="" IMAGE=prettier:latest LIST="" ALL=0 PAR="" CPUS=2 MEM=8G TIME=04:00:00
PARTITION="" ACCOUNT="" SBATCH_EXTRA="" WORK_ROOT="" WAIT=0 DRY=0
POS=() APP_ARGS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --engine) ENGINE=$2; shift 2 ;;
        --runner) RUNNER=$2; shift 2 ;;
        --sif) SIF=$2; shift 2 ;;
        --image) IMAGE=$2; shift 2 ;;
        --participants) LIST=$2; shift 2 ;;
        --all) ALL=1; shift ;;
        --max-parallel) PAR=$2; shift 2 ;;
        --cpus) CPUS=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        --time) TIME=$2; shift 2 ;;
        --partition) PARTITION=$2; shift 2 ;;
        --account) ACCOUNT=$2; shift 2 ;;
        --sbatch-args) SBATCH_EXTRA=$2; shift 2 ;;
        --work-root) WORK_ROOT=$2; shift 2 ;;
        --wait) WAIT=1; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; APP_ARGS=("$@"); break ;;
        -*) log "unknown option $1"; usage >&2; exit 64 ;;
        *) POS+=("$1"); shift ;;
    esac
done
[[ ${#POS[@]} == 2 ]] || { usage >&2; exit 64; }
BIDS=$(cd "${POS[0]}" 2>/dev/null && pwd -P) || { log "no such BIDS dir: ${POS[0]}"; exit 66; }
OUT=$(realpath -m -- "${POS[1]}")
# the input dataset is never written: the checks of prettier-bids, before this script writes anything
if [[ "$OUT" == "$BIDS" ]]; then log "OUTPUT_DIR must not be BIDS_DIR (use BIDS_DIR/derivatives)"; exit 64; fi
if [[ "$OUT/" == "$BIDS/"* && "$OUT/" != "$BIDS/derivatives/"* ]]; then
    log "OUTPUT_DIR $OUT is inside BIDS_DIR but not under BIDS_DIR/derivatives/: use $BIDS/derivatives/NAME or a folder outside BIDS_DIR"
    exit 64
fi
if [[ $DRY == 0 ]]; then
    mkdir -p "$OUT" || exit 73
    OUT=$(cd "$OUT" && pwd -P)
fi
if [[ -z "$ENGINE" ]]; then
    if command -v sbatch >/dev/null; then ENGINE=slurm; else ENGINE=local; fi
fi
[[ "$ENGINE" == slurm || "$ENGINE" == local ]] || { log "--engine slurm or local"; exit 64; }
PAR=${PAR:-$([[ $ENGINE == slurm ]] && echo 50 || echo 1)}
case "$RUNNER" in
    native) ;;
    apptainer|singularity) [[ -n "$SIF" ]] || { log "--runner $RUNNER needs --sif FILE"; exit 64; }
                           SIF=$(cd "$(dirname "$SIF")" && pwd)/$(basename "$SIF") ;;
    docker) ;;
    *) log "unknown runner $RUNNER"; exit 64 ;;
esac
PY=$(command -v python3 || command -v python || true)

if [[ $DRY == 1 ]]; then  # --dry-run writes nothing: the batch's lists go to a temporary folder, removed at exit
    BATCH=$(mktemp -d "${TMPDIR:-/tmp}/prettier_batch_dry.XXXXXXXX")
    trap 'rm -rf "$BATCH"' EXIT
else
    BATCH="$OUT/prettier/logs/batch_$(date +%Y%m%d-%H%M%S)_$$"
fi
mkdir -p "$BATCH/status"
# every participant of the batch (sub-* folders, or the given list)
if [[ -n "$LIST" ]]; then
    sed -e 's/\t.*//' -e 's/^sub-//' -e '/^participant_id$/d' -e '/^#/d' -e '/^[[:space:]]*$/d' "$LIST" >"$BATCH/all.txt"
else
    find -H "$BIDS" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' -printf '%f\n' | sed 's/^sub-//' | sort >"$BATCH/all.txt"
fi
n_all=$(wc -l <"$BATCH/all.txt")
if [[ $ALL == 0 && -n "$PY" ]]; then
    "$PY" "$HERE/batch_summary.py" "$OUT" --todo --participants "$BATCH/all.txt" --bids "$BIDS" >"$BATCH/participants.txt"
else
    cp "$BATCH/all.txt" "$BATCH/participants.txt"
fi
n=$(wc -l <"$BATCH/participants.txt")
log "$n of $n_all participant(s) to process ($ENGINE engine, $RUNNER runner); batch folder $BATCH"

export PRETTIER_BIDS="$BIDS" PRETTIER_OUT="$OUT" PRETTIER_LIST="$BATCH/participants.txt"
export PRETTIER_RUNNER="$RUNNER" PRETTIER_STATUS_DIR="$BATCH/status" PRETTIER_NPROCS="$CPUS"
[[ -n "$SIF" ]] && export PRETTIER_SIF="$SIF"
[[ "$RUNNER" == docker ]] && export PRETTIER_IMAGE="$IMAGE"
if [[ -n "$WORK_ROOT" && $DRY == 0 ]]; then
    mkdir -p "$WORK_ROOT"; export PRETTIER_WORK_ROOT; PRETTIER_WORK_ROOT=$(cd "$WORK_ROOT" && pwd)
fi
summary_cmd=("$PY" "$HERE/batch_summary.py" "$OUT" --participants "$BATCH/all.txt" --status-dir "$BATCH/status")

if [[ $ENGINE == local ]]; then
    if [[ $DRY == 1 ]]; then
        log "dry run: would run $n task(s), $PAR at a time: bash $HERE/prettier_array.sbatch ${APP_ARGS[*]}"
        exit 0
    fi
    if [[ $n -gt 0 ]]; then
        # shellcheck disable=SC2016
        seq 0 $((n - 1)) | xargs -P "$PAR" -I{} bash -c \
            'SLURM_ARRAY_TASK_ID=$1 bash "$0" "${@:2}" >"$PRETTIER_STATUS_DIR/../task_$1.log" 2>&1 || true' \
            "$HERE/prettier_array.sbatch" {} "${APP_ARGS[@]}"
    fi
    [[ -n "$PY" ]] || { log "no python3: cannot merge the summaries"; exit 0; }
    "${summary_cmd[@]}" --check
    exit $?
fi

# ---- SLURM
command -v sbatch >/dev/null || { log "sbatch not found (use --engine local)"; exit 69; }
max_array=$(scontrol show config 2>/dev/null | awk '$1 == "MaxArraySize" {print $3}')
chunk=$(( ${max_array:-1001} - 1 ))
[[ $chunk -ge 1 ]] || chunk=1000
sb=(sbatch --parsable --cpus-per-task="$CPUS" --mem="$MEM" --time="$TIME" --job-name=prettier)
[[ -n "$PARTITION" ]] && sb+=(--partition="$PARTITION")
[[ -n "$ACCOUNT" ]] && sb+=(--account="$ACCOUNT")
# shellcheck disable=SC2206
[[ -n "$SBATCH_EXTRA" ]] && sb+=($SBATCH_EXTRA)
jobs=()
for ((start = 0; start < n; start += chunk)); do
    part="$BATCH/participants_$start.txt"
    sed -n "$((start + 1)),$((start + chunk))p" "$BATCH/participants.txt" >"$part"
    m=$(wc -l <"$part")
    cmd=("${sb[@]}" --array="0-$((m - 1))%$PAR" --output="$BATCH/slurm_%A_%a.log"
         "$HERE/prettier_array.sbatch" "${APP_ARGS[@]}")
    if [[ $DRY == 1 ]]; then log "dry run: PRETTIER_LIST=$part ${cmd[*]}"; continue; fi
    jid=$(PRETTIER_LIST="$part" "${cmd[@]}")
    jobs+=("${jid%%;*}")
    log "submitted array job ${jid%%;*}: $m task(s) ($PAR at a time)"
done
[[ $DRY == 1 ]] && exit 0
[[ -n "$PY" ]] || { log "no python3 here: merge later with batch_summary.py"; exit 0; }
dep=()
[[ ${#jobs[@]} -gt 0 ]] && dep=(--dependency="afterany:$(IFS=:; echo "${jobs[*]}")")
wait_opt=()
[[ $WAIT == 1 ]] && wait_opt=(--wait)
printf -v wrapped '%q ' "${summary_cmd[@]}"
set +e
sid=$(sbatch --parsable "${dep[@]}" "${wait_opt[@]}" --job-name=prettier-summary --cpus-per-task=1 --mem=1G \
        --time=00:30:00 --output="$BATCH/summary_%j.log" ${PARTITION:+--partition="$PARTITION"} \
        ${ACCOUNT:+--account="$ACCOUNT"} --wrap "$wrapped")
rc=$?
set -e
log "summary job ${sid%%;*} (after ${jobs[*]:-nothing}) writes $OUT/prettier/logs/batch_summary.tsv"
echo "${jobs[*]:-} ${sid%%;*}"
if [[ $WAIT == 1 ]]; then
    "${summary_cmd[@]}" --check
    exit $?
fi
exit "$rc"
