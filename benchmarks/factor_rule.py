"""Which through-plane factor for half-integer slice spacings (2.5, 3.5, 4.5 mm)?  ``degrade.upsampling_factor``.

Thick slices (boxcar, thickness = spacing) are simulated from a 1 mm volume along axis 2; each candidate factor's
output rows (``degrade.hr_rows_lr_coordinate``) are compared with the truth at the same positions (cubic-spline
samples of the 1 mm volume), inside the foreground. Two volumes: a smooth synthetic one (Gaussian-filtered noise,
sigma 1.5 mm) and ``data/test_bids/sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz`` (1 mm). Methods: cubic, and the
shipped default model (``--model``, fp32; skipped with ``--cubic-only``).

    python benchmarks/factor_rule.py [--cubic-only]   # results: benchmarks/results/factor-rule.md
"""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
from scipy import ndimage

from prettier_bids.sr.degrade import hr_rows_lr_coordinate, simulate_thick_slices
from prettier_bids.sr.metrics import psnr
from prettier_bids.sr.preprocess import foreground_threshold, intensity_scale
from prettier_bids.sr.reconstruct import cubic_array, load_model, super_resolve_array


def volumes():
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:64, :64, :80].astype(np.float32)
    ball = ((z - 32) / 28) ** 2 + ((y - 32) / 28) ** 2 + ((x - 40) / 36) ** 2 < 1
    smooth = ndimage.gaussian_filter(rng.random((64, 64, 80)), 1.5).astype(np.float32)
    smooth = np.where(ball, (smooth - smooth.min()) / np.ptp(smooth) + 0.5, 0).astype(np.float32)
    t1 = nib.load("data/test_bids/sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz").get_fdata(dtype=np.float32)
    return {"synthetic smooth": smooth, "test_bids sub-01_ses-2_T1w": t1}


def score(vol, spacing, factor, model=None):
    vol = vol / np.float32(intensity_scale(vol))
    lr = simulate_thick_slices(vol, np.eye(4), 2, spacing, spacing)
    if model is None:
        out = cubic_array(lr.data, 2, factor)
    else:
        out = super_resolve_array(lr.data, 2, factor, model.model, 8, "cpu", "fp32", thickness_ratio=1.0)
    mm = lr.first_centre_mm + spacing * hr_rows_lr_coordinate(lr.data.shape[2], factor)
    keep = (mm >= 0) & (mm <= vol.shape[2] - 1)
    grid = np.meshgrid(np.arange(vol.shape[0]), np.arange(vol.shape[1]), mm[keep], indexing="ij")
    truth = ndimage.map_coordinates(vol, grid, order=3, mode="nearest")
    mask = truth > foreground_threshold(truth)
    return psnr(out[..., keep], truth, mask)


def main(argv):
    model = None if "--cubic-only" in argv else load_model()
    rows = ["| volume | spacing (mm) | factor | output spacing (mm) | cubic PSNR (dB) | model PSNR (dB) |",
            "|---|---|---|---|---|---|"]
    for name, vol in volumes().items():
        for spacing in (2.5, 3.5, 4.5):
            for factor in (int(spacing), int(spacing) + 1):
                c = score(vol, spacing, factor)
                m = score(vol, spacing, factor, model) if model is not None else float("nan")
                rows.append(f"| {name} | {spacing} | {factor} | {spacing / factor:.3f} | {c:.2f} | {m:.2f} |")
                print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
