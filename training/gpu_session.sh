#!/usr/bin/env bash
# Train prettier-edsr-v2 on a lent GPU machine (see training/README.md).
# usage: bash training/gpu_session.sh {1|2|all} DATA_ROOT [RUNS_DIR] [MINUTES]
#   phase 1: edsr-medium.json from scratch to step 30,000 (H100: ~62 steps/s, about 8 min)
#   phase 2: edsr-medium-ft.json, fine-tune of phase 1's best.pt (22,000 steps, about 6.5 min), given with
#            --init-weights: RUNS/medium/best.pt, or the pinned phase-1 best out of git history
#            (python training/lineage.py fetch 5db4a0851976 RUNS/init) when phase 1 was not run
#   all:     phase 1 then phase 2 (one command where no per-call time limit applies)
# Each phase is resumable: rerun the same command. RUNS_DIR defaults to /tmp/prettier-runs: keep it outside
# the repository copy, which a device machine replaces on every call (a run there starts again from scratch).
set -euo pipefail
PHASE=$1; DATA=$2; RUNS=${3:-/tmp/prettier-runs}; MIN=${4:-9}
if [[ $PHASE == all ]]; then
    "$0" 1 "$DATA" "$RUNS" "${4:-600}" && exec "$0" 2 "$DATA" "$RUNS" "${4:-600}"
fi
if ls .gpuwhl/*.whl >/dev/null 2>&1; then  # packages the GPU image lacks (nibabel), carried as wheels
    python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site .gpuwhl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi -L || true
mkdir -p "$RUNS"
case $PHASE in
1) python3 -m prettier_bids.cli.train --config prettier_bids/data/configs/edsr-medium.json --data-root "$DATA" \
       --out "$RUNS/medium" --steps 30000 --max-minutes "$MIN" 2>&1 | tee -a "$RUNS/medium.log" ;;
2) # the shipped config names no starting weights: phase 1's best from RUNS, else the pinned one from git history
   INIT=$RUNS/medium/best.pt
   [[ -f $INIT ]] || INIT=$(python3 training/lineage.py fetch 5db4a0851976 "$RUNS/init")
   python3 -m prettier_bids.cli.train --config prettier_bids/data/configs/edsr-medium-ft.json --data-root "$DATA" \
       --init-weights "$INIT" --out "$RUNS/medium-ft" --max-minutes "$MIN" 2>&1 \
       | tee -a "$RUNS/medium-ft.log" ;;
*) echo "usage: $0 {1|2|all} DATA_ROOT [RUNS_DIR] [MINUTES]" >&2; exit 64 ;;
esac
