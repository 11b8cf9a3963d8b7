#!/usr/bin/env bash
# Issue 12, one lent-GPU call: the arms named in ARMS (default "E2 F2") side by side on one GPU. A short
# calibration of all of them at once measures s/step; each arm then gets the number of steps that fits the
# call's remaining time, and --steps makes that the horizon of its cosine schedule, so the schedule ends.
# usage: [ARMS="E2 F2"] [FILL=0.92] [INIT_<arm>=weights.pt] [SPLIT_<arm>=split.json] [CONFIG_<arm>=name.json] [WORKERS=n] bash training/v3-gpu/run.sh DATA_ROOT OUT_DIR [SECONDS=540] [RUNS]
#   E2: arm E's recipe on the shipped split from prettier-edsr-v3; F2/F3: FLAIR only (v3-cpu/split-flair.json);
#   R/Rb: in-plane pairs of every contrast (split-inplane-R.json); P*: FLAIR + pseudo-FLAIR heads (split-pseudo.json).
#   SPLIT_<arm> overrides an arm's split, CONFIG_<arm> its config (a file here; default <arm>.json), WORKERS the
#   batch workers of every arm (default: each config's).
#   DATA_ROOT holds hr/ (the splits' train + validation + openms_p07_lesions) and thick/ (their train_inplane).
#   RUNS defaults to /tmp/prettier-runs/v3-gpu. What comes back: <arm>-last.pt, <arm>-best.pt, logs.tar.gz, plan.txt.
set -uo pipefail
DATA=${1:?DATA_ROOT}; OUT=${2:?OUT_DIR}; BUDGET=${3:-540}; RUNS=${4:-/tmp/prettier-runs/v3-gpu}
ARMS=${ARMS:-E2 F2}
T0=$(date +%s)
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../.." && pwd)
if ls "$ROOT"/.gpuwhl/*.whl >/dev/null 2>&1; then  # packages the GPU image lacks (nibabel), carried as wheels
    python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site "$ROOT"/.gpuwhl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$OUT" "$RUNS"
nvidia-smi -L > "$OUT/gpu.txt" 2>&1
train() {  # arm out steps minutes [extra args]
    local arm=$1 split=$ROOT/prettier_bids/data/splits.json init="INIT_$1" split_var="SPLIT_$1" cfg_var="CONFIG_$1"
    [[ $arm == F* ]] && split=$HERE/../v3-cpu/split-flair.json
    [[ $arm == P* ]] && split=$HERE/split-pseudo.json
    [[ $arm == R* ]] && split=$HERE/split-inplane-R.json
    [[ -n ${!split_var:-} ]] && split=${!split_var}
    local extra=(); [[ -n ${!init:-} ]] && extra=(--init-weights "${!init}")
    [[ -n ${WORKERS:-} ]] && extra+=(--workers "$WORKERS")
    python3 -m prettier_bids.cli.train --config "$HERE/${!cfg_var:-$arm.json}" --split "$split" --data-root "$DATA" --out "$2" \
        --steps "$3" --max-minutes "$4" --threads 2 "${extra[@]}" "${@:5}"
}
# s/step between the last two logged steps of a log (from the log lines' timestamps)
rate() { python3 - "$1" <<'PY'
import re, sys
from datetime import datetime
rows = [(datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f"), int(m[2]))
        for m in re.finditer(r"^(\S+ \S+) \S+ step (\d+)/", open(sys.argv[1]).read(), re.M)]
if len(rows) < 2:  # one logged step (a dry run): its own rounded rate
    print(re.findall(r"([0-9.]+) s/step", open(sys.argv[1]).read())[-1])
else:
    (t1, s1), (t2, s2) = rows[-2:]
    print(f"{(t2 - t1).total_seconds() / (s2 - s1):.5f}")
PY
}
# 1. calibration: CAL steps of every arm at once (logged at step 250 and at the end)
CAL=${CAL_STEPS:-500}
for a in $ARMS; do train "$a" "$RUNS/cal-$a" "$CAL" 3 --no-resume > "$OUT/cal-$a.log" 2>&1 & done
wait
LEFT=$(( BUDGET - ($(date +%s) - T0) - 60 ))  # 60 s for start-up, the last validation and the copy
CAP=${STEPS_CAP:-1000000}  # STEPS_CAP: CPU dry runs
declare -A STEPS
# the share of LEFT / rate to plan: 1-2 arms ran 98-100 % of such a plan at 0.92; three arms with 4 batch
# workers each contend for the CPUs (session 3: 84-100 %), hence 0.78 there
N_ARMS=$(wc -w <<< "$ARMS"); FILL=${FILL:-$( (( N_ARMS > 2 )) && echo 0.78 || echo 0.92 )}
for a in $ARMS; do
    r=$(rate "$OUT/cal-$a.log") || { echo "calibration of $a failed"; tail -5 "$OUT/cal-$a.log"; exit 1; }
    STEPS[$a]=$(python3 -c "print(min($CAP, max(1000, int($LEFT / $r * $FILL) // 500 * 500)))")
    echo "calibration: $a $r s/step; $LEFT s left -> ${STEPS[$a]} steps" | tee -a "$OUT/plan.txt"
done
# 2. the arms, with a time guard (stops cleanly after a validation and writes last.pt)
MIN=$(python3 -c "print(round(($LEFT + 20) / 60, 2))")
for a in $ARMS; do train "$a" "$RUNS/$a" "${STEPS[$a]}" "$MIN" > "$OUT/$a.log" 2>&1 & done
wait
# what comes back (a device call returns at most 8 files): the weights, and the logs in one archive
logs=(gpu.txt)
for a in $ARMS; do
    cp "$RUNS/$a/last.pt" "$OUT/$a-last.pt"; cp "$RUNS/$a/log.tsv" "$OUT/$a-log.tsv"; logs+=("cal-$a.log" "$a.log" "$a-log.tsv")
    [[ -f $RUNS/$a/best.pt ]] && cp "$RUNS/$a/best.pt" "$OUT/$a-best.pt"
done
echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$OUT/plan.txt"
(cd "$OUT" && cp plan.txt plan-copy.txt && tar czf logs.tar.gz "${logs[@]}" plan-copy.txt && rm -f "${logs[@]}" plan-copy.txt)
ls -la "$OUT"
