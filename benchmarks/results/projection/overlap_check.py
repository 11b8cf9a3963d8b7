"""Is the projection onto the input safe for overlapping slices and noisy data? (p19 FLAIR, axial, one run)

    python benchmarks/results/projection/overlap_check.py --data-root ../shared/data

Slices every 6 mm of thickness 1.5, 5, 6 (gaussian), 9, 12 and 15 (gaussian) mm are simulated along z, Gaussian noise of
2 % of the intensity scale is added inside the head, and ``prettier-edsr-v3-flair``'s output is scored (brain
PSNR against the 1 mm truth) as it is and after the projection with the pseudo-inverse cut at ``rcond``
(``consistency.PROJECTION_RCOND`` = 0.1 is shipped; 1e-12 is the exact pseudo-inverse).
"""

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from prettier_bids.sr.degrade import apply_along_axis, centre_row, redegrade_matrix, simulate_thick_slices
from prettier_bids.evaluation.benchmark import brain_mask
from prettier_bids.sr.metrics import psnr
from prettier_bids.training.patches import load_training_volume
from prettier_bids.sr.reconstruct import load_model, super_resolve

CASES = [(9.0, "boxcar", 0.0), (9.0, "boxcar", 0.02), (12.0, "boxcar", 0.02), (6.0, "gaussian", 0.02),
         (5.0, "boxcar", 0.02), (1.5, "boxcar", 0.02), (15.0, "gaussian", 0.02)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True)
    args = p.parse_args()
    vol = load_training_volume(Path(args.data_root) / "hr/openms_p19_FLAIR.nii.gz", name="p19").data
    brain = brain_mask(vol, True)
    model = load_model("prettier-edsr-v3-flair")
    axis, s, r, first = 2, 6.0, 6, 12
    rng = np.random.default_rng(0)
    print("| t (mm), profile | noise | network | rcond 1e-12 (exact) | rcond 0.1 (shipped) | rcond 0.25 |")
    print("|---|---|---|---|---|---|")
    for t, prof, noise in CASES:
        lr = simulate_thick_slices(vol, np.eye(4), axis, t, s, profile=prof, first_centre_mm=first)
        y = lr.data + rng.normal(0, noise, lr.data.shape).astype(np.float32) * (lr.data > 0.02)
        raw = super_resolve(nib.Nifti1Image(y, lr.affine), model=model, slice_thickness=t, profile=prof,
                            project=False, precision="fp32").image.get_fdata(dtype=np.float32)
        rows = np.arange(raw.shape[axis]) + first - centre_row(r)
        rows = rows[rows < vol.shape[axis]]
        ref, br = np.take(vol, rows, axis=axis), np.take(brain, rows, axis=axis)
        w = redegrade_matrix(raw.shape[axis], r, s, t, prof).astype(np.float64)
        scores = [psnr(np.take(raw, np.arange(len(rows)), axis=axis), ref, br)]
        for rc in (1e-12, 0.1, 0.25):
            b = (w.T @ np.linalg.pinv(w @ w.T, rcond=rc, hermitian=True)).astype(np.float32)
            out = raw + apply_along_axis(b, y - apply_along_axis(w.astype(np.float32), raw, axis), axis)
            scores.append(psnr(np.take(out, np.arange(len(rows)), axis=axis), ref, br))
        print(f"| {t:g}, {prof} | {noise:.0%} | " + " | ".join(f"{v:.3f}" for v in scores) + " |", flush=True)


if __name__ == "__main__":
    main()
