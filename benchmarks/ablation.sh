#!/usr/bin/env bash
# What each training-data choice buys, measured on the held-out test subjects (issue 4).
#
#   bash benchmarks/ablation.sh DATA_ROOT [OUT_DIR] [VARIANTS...]
#
# Trains the compact model with prettier_bids/data/configs/ablation.json (2,000 steps, one cosine decay,
# same seed) once per variant of the shipped split's training list, then evaluates each on the test set at
# 6/5 mm along the three axes (volume PSNR/SSIM in a brain mask against cubic). Variants:
#   full      the shipped training list
#   no-flair  without the only 3D FLAIR (openms_p07_FLAIR): does FLAIR need FLAIR training data?
#   openms    the openms patient only (no MASS T1w heads): do extra T1w heads help?
# About 12 min per variant on 2 CPU cores. Writes OUT_DIR/<variant>/{split.json,run/,eval/} and prints a table.
set -euo pipefail
DATA=$1; OUT=${2:-/tmp/prettier-ablation}; shift $(( $# > 1 ? 2 : 1 ))
VARIANTS=${*:-full no-flair openms}
mkdir -p "$OUT"
for v in $VARIANTS; do
    mkdir -p "$OUT/$v"
    python - "$v" "$OUT/$v/split.json" <<'PY'
import json, sys
from importlib import resources
variant, dest = sys.argv[1:]
split = json.loads((resources.files("prettier_bids") / "data" / "splits.json").read_text())
keep = {"full": lambda f: True,
        "no-flair": lambda f: "FLAIR" not in f,
        "openms": lambda f: "openms" in f}[variant]
split["train"] = [f for f in split["train"] if keep(f)]
json.dump(split, open(dest, "w"), indent=2)
PY
    prettier-train --config prettier_bids/data/configs/ablation.json --data-root "$DATA" --split "$OUT/$v/split.json" \
        --out "$OUT/$v/run" --threads 2 2>>"$OUT/$v/train.log"
    prettier-eval --data-root "$DATA" --split "$OUT/$v/split.json" --weights "$OUT/$v/run/best.pt" \
        --settings 6:5 --no-patches --threads 2 --out-dir "$OUT/$v/eval" >"$OUT/$v/eval.md" 2>>"$OUT/$v/eval.log"
done
echo "| training data | FLAIR ΔPSNR / ΔSSIM | T1w ΔPSNR / ΔSSIM |"
echo "|---|---|---|"
for v in $VARIANTS; do
    python - "$v" "$OUT/$v/eval/results.json" <<'PY'
import json, sys
v, path = sys.argv[1:]
h = json.load(open(path))["headline"]
cell = lambda c: f"{h[c]['gain_psnr']:+.2f} dB / {h[c]['gain_ssim']:+.3f}" if c in h else "n/a"
print(f"| {v} | {cell('FLAIR')} | {cell('T1w')} |")
PY
done
