"""What a conditioned model should be told for an assumed slice thickness (issue 25; sr/reconstruct.py's
ASSUMED_CONDITIONING_RATIO): on non-test heads only.

    python benchmarks/assumed_ratio.py --data-root ../shared/data > assumed_ratio.jsonl

For the training head p07 FLAIR (v3-flair) and the validation head MASS t08 T1w (v3), axial thick slices with the
five settings of prettier-eval, the model without the projection onto the input is told t = r * s for each r in
``--ratios`` and the true t; one JSON line per setting with the PSNR in the brain of each. The choice: the r with
the smallest worst loss against the true ratio (docs/research/slice-profile-estimation.md, section 5).
"""

import argparse
import json
import sys

import numpy as np

from prettier_bids.evaluation.benchmark import SETTINGS, brain_mask, reconstruct_case, simulate_case
from prettier_bids.sr.metrics import psnr
from prettier_bids.training.patches import load_training_volume
from prettier_bids.sr.reconstruct import load_model

CASES = (("hr/openms_p07_FLAIR.nii.gz", "prettier-edsr-v3-flair", True),
         ("hr/mass_t08_T1w.nii.gz", "prettier-edsr-v3", False))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--ratios", type=float, nargs="+", default=[1.0, 0.85, 0.7])
    p.add_argument("--axes", type=int, nargs="+", default=[2])
    a = p.parse_args(argv)
    for rel, name, stripped in CASES:
        vol = load_training_volume(f"{a.data_root}/{rel}", name=rel).data
        mask = brain_mask(vol, stripped)
        model = load_model(name)
        for axis in a.axes:
            for s, t in SETTINGS:
                _, img, rows = simulate_case(vol, axis, s, t)
                ref, m = np.take(vol, rows, axis=axis), np.take(mask, rows, axis=axis)
                scores = {}
                for label, told in [(str(r), r * s) for r in a.ratios] + [("true", t)]:
                    out, _ = reconstruct_case(img, axis, ref.shape[axis], model, told, project=False)
                    n = np.arange(out.shape[axis])
                    scores[label] = round(psnr(out, np.take(ref, n, axis=axis), np.take(m, n, axis=axis)), 3)
                print(json.dumps({"vol": rel, "axis": axis, "s": s, "t": t, **scores}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
