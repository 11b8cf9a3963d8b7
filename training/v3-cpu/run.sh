#!/usr/bin/env bash
# Issue 12, CPU ablation of the lesion/FLAIR levers: three short fine-tunes of prettier-edsr-v2 with the same
# seed, steps and learning rate (A control, B + lesions, E + lesions + conditioning + in-plane pairs), each
# judged on the validation loss and the real-scan benchmark (never on p19, the benchmarks' subject).
# Usage: bash training/v3-cpu/run.sh DATA_ROOT [RUNS=/tmp/prettier-runs/v3-cpu] [THREADS=1]
# Each training command is resumable (rerun to continue). On 2 cores run two arms at once with 1 thread each.
set -euo pipefail
DATA=${1:?DATA_ROOT (../shared/data)}
RUNS=${2:-/tmp/prettier-runs/v3-cpu}
THREADS=${3:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH=${PYTHONPATH:-$(cd "$HERE/../.." && pwd)}
for arm in A B E; do  # arm F: see README.md (FLAIR-only split)
    python -m prettier_bids.cli.train --config "$HERE/$arm.json" --data-root "$DATA" --out "$RUNS/$arm" \
        --threads "$THREADS"
done
# selection: the real-scan benchmark on the FLAIRs (p12's scans are unseen by every arm; the others were
# in-plane training data of arm E, so E is judged on p12 only)
python benchmarks/real.py --data-root "$DATA" --threads 2 --out-dir "$RUNS/real-flair" \
    --models "prettier-edsr-v2,$RUNS/A/best.pt,$RUNS/B/best.pt,$RUNS/E/best.pt" \
    --scans openms_p01_study1_FLAIR.nii.gz,openms_p01_study2_FLAIR.nii.gz,openms_p03_study1_FLAIR.nii.gz,openms_p03_study2_FLAIR.nii.gz,openms_p04_study1_FLAIR.nii.gz,openms_p12_study1_FLAIR.nii.gz,openms_p12_study2_FLAIR.nii.gz
