"""Pseudo-FLAIR training heads from 1 mm T1w heads (issue 12, GPU session 3).

FLAIR ground truth at 1 mm exists for one training subject (p07). This makes more FLAIR-like anatomy from the
MASS T1w heads: a lookup from the rank of a brain voxel's T1w intensity to the median FLAIR intensity of the brain
voxels of the same T1w rank in p07 (its registered T1w/FLAIR pair, lesions and their 2-voxel surroundings left
out), applied inside a deepbet brain mask of each head; outside it the output is 0, like p07 and p19. CSF comes
out dark, grey matter bright and white matter mid-grey, as in FLAIR; the head's own edges and folding are kept.
The results are written as int16 with a scale factor and are training data only (never commit them).

usage: python training/v3-gpu/pseudo_flair.py DATA_ROOT OUT_HR_DIR mass_t03 mass_t04 ...
"""
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from prettier_bids.evaluation.benchmark import brain_mask

BINS = 1000  # T1w rank bins of the lookup


def flair_lookup(t1, flair, brain):
    """Median FLAIR per T1w rank bin over ``brain`` voxels (np.interp-ready: bin centres, values)."""
    f = flair[brain]
    idx = np.minimum((_ranks(t1[brain]) * BINS).astype(int), BINS - 1)
    med = np.array([np.median(f[idx == b]) for b in range(BINS)])
    return (np.arange(BINS) + 0.5) / BINS, med


def apply_lookup(t1, brain, lut):
    """The lookup applied to the ranks of ``t1`` over ``brain``; 0 outside it."""
    out = np.zeros(t1.shape, np.float32)
    out[brain] = np.interp(_ranks(t1[brain]), *lut)
    return out


def _ranks(values):
    """Each value's rank among ``values``, as a fraction in (0, 1) (ties in their order)."""
    order = np.argsort(values, kind="stable")
    rank = np.empty(values.size)
    rank[order] = (np.arange(values.size) + 0.5) / values.size
    return rank


def save_int16(data, affine, path):
    scale = float(data.max()) / 32000 or 1.0
    img = nib.Nifti1Image(np.round(data / scale).astype(np.int16), affine)
    img.header.set_slope_inter(scale, 0.0)
    nib.save(img, str(path))


def main(root, out_dir, heads):
    hr = Path(root) / "hr"
    t1 = nib.load(hr / "openms_p07_T1w.nii.gz").get_fdata(dtype=np.float32)
    flair = nib.load(hr / "openms_p07_FLAIR.nii.gz").get_fdata(dtype=np.float32)
    les = nib.load(hr / "openms_p07_lesions.nii.gz").get_fdata() > 0.5
    brain = ndimage.binary_erosion(flair > 0, iterations=1) & (t1 > 0)
    brain &= ~ndimage.binary_dilation(les, iterations=2)
    lut = flair_lookup(t1, flair, brain)
    check = apply_lookup(t1, brain, lut)
    r = np.corrcoef(check[brain], flair[brain])[0, 1]
    print(f"p07 lookup: {brain.sum()} voxels; pseudo vs real FLAIR inside the brain r = {r:.3f}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for head in heads:
        img = nib.load(hr / f"{head}_T1w.nii.gz")
        t1_head = np.asarray(img.dataobj, np.float32)
        mask = brain_mask(t1_head, skull_stripped=False, affine=img.affine)
        pseudo = apply_lookup(t1_head, mask, lut)
        path = out_dir / f"pseudoflair_{head}_FLAIR.nii.gz"
        save_int16(pseudo, img.affine, path)
        print(f"{path.name}: brain {mask.sum() * np.prod(img.header.get_zooms()[:3]) / 1000:.0f} ml")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
