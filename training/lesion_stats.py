"""Write prettier_bids/data/lesion_stats.json: statistics of the real lesions of the TRAINING subject (p07).

    python training/lesion_stats.py --data-root ../shared/data

Numbers only (diameters, placement fractions, lesion / surrounding-WM intensity ratios per contrast); no
image data. The synthetic-lesion inserter (prettier_bids.training.lesions.LesionInserter) draws from them.
The held-out subject (p19) is never read.
"""

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from prettier_bids.evaluation.lesions import estimate_lesion_stats
from prettier_bids.evaluation.benchmark import brain_mask
from prettier_bids.training.lesions import STATS_FILE
from prettier_bids.training.patches import load_training_volume

SUBJECT = "openms_p07"
CONTRASTS = {"FLAIR": "FLAIR", "T1w": "T1w", "T2w": "T2w"}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "prettier_bids" / "data" / STATS_FILE))
    args = p.parse_args(argv)
    hr = Path(args.data_root) / "hr"
    vols = {c: load_training_volume(hr / f"{SUBJECT}_{f}.nii.gz").data for c, f in CONTRASTS.items()}
    mask = np.asarray(nib.load(str(hr / f"{SUBJECT}_lesions.nii.gz")).dataobj) > 0
    stats = estimate_lesion_stats(vols, mask, brain_mask(vols["FLAIR"], True))
    stats = {"source": f"hr/{SUBJECT}_lesions.nii.gz (training subject; consensus mask) with hr/{SUBJECT}_"
                       "{FLAIR,T1w,T2w}; written by training/lesion_stats.py", **stats}
    Path(args.out).write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps({k: v for k, v in stats.items() if k != "diameter_mm"}, indent=1), stats["diameter_mm"]["median"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
