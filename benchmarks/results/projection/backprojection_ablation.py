"""Which correction should make the network's output consistent with its input? (p19 FLAIR, 6/5 mm, 3 axes)

    python benchmarks/results/projection/backprojection_ablation.py --data-root ../shared/data

Each variant adds ``B (y - W x)`` to the network's output ``x`` (``W``: ``degrade.redegrade_matrix``, ``y``: the
simulated thick slices), with ``B`` the least-squares correction that is smallest in

- ``orth``: plain norm, ``Wᵀ (W Wᵀ)⁻¹`` (= ``consistency.project_onto_input``, shipped);
- ``d1`` / ``d2``: norm of the correction's first / second difference along the slice axis (+1e-4 × norm),
  a correction that is smooth across slice boundaries.

All three reproduce the input exactly. Scored as ``prettier-eval lesions`` scores (brain PSNR / SSIM gain over
cubic, lesion metrics of ``evaluation.lesions``), with ``prettier-edsr-v3-flair``.
"""

import argparse
import collections
from pathlib import Path

import nibabel as nib
import numpy as np

from prettier_bids.evaluation import lesions as L
from prettier_bids.sr.degrade import apply_along_axis, redegrade_matrix
from prettier_bids.evaluation.benchmark import brain_mask, reconstruct_case, simulate_case
from prettier_bids.sr.metrics import psnr, ssim
from prettier_bids.training.patches import load_training_volume
from prettier_bids.sr.reconstruct import load_model

SPACING, THICKNESS, R = 6.0, 5.0, 6
KEYS = ("lesion_psnr", "contrast_kept_median", "dice", "sensitivity", "precision", "invented_ml")


def correction(n, kind, eps=1e-4):
    w = redegrade_matrix(n, R, SPACING, THICKNESS).astype(np.float64)
    m = np.eye(n)
    if kind != "orth":
        d = np.diff(np.eye(n), n=1 if kind == "d1" else 2, axis=0)
        m = d.T @ d + eps * np.eye(n)
    mi = np.linalg.inv(m)
    return (mi @ w.T @ np.linalg.inv(w @ mi @ w.T)).astype(np.float32), w.astype(np.float32)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--model", default="prettier-edsr-v3-flair")
    args = p.parse_args()
    root = Path(args.data_root)
    vol = load_training_volume(root / "hr/openms_p19_FLAIR.nii.gz", name="hr/openms_p19_FLAIR.nii.gz").data
    les = np.asarray(nib.load(str(root / "hr/openms_p19_lesions.nii.gz")).dataobj) > 0
    brain = brain_mask(vol, True)
    model = load_model(args.model)
    scores = collections.defaultdict(list)
    for axis in (0, 1, 2):
        lr, img, idx = simulate_case(vol, axis, SPACING, THICKNESS)
        x, _ = reconstruct_case(img, axis, 10 ** 6, model, THICKNESS, project=False, precision="fp32")  # as measured
        outs = {"cubic": reconstruct_case(img, axis, 10 ** 6, None, THICKNESS)[0], "network": x}
        for kind in ("orth", "d1", "d2"):
            b, w = correction(x.shape[axis], kind)
            outs[kind] = x + apply_along_axis(b, lr.data - apply_along_axis(w, x, axis), axis)
        n = min(len(idx), *(o.shape[axis] for o in outs.values()))
        ref, le, br = (np.take(a, idx[:n], axis=axis) for a in (vol, les, brain))
        rings, seg_truth = L.lesion_rings(le, br), L.simple_segmentation(ref, br)
        for k, o in outs.items():
            o = np.take(o, np.arange(n), axis=axis)
            rep = L.lesion_report(o, ref, le, br, seg_truth=seg_truth, rings=rings)
            scores[k].append({"psnr": psnr(o, ref, br), "ssim": ssim(o, ref, br), **{q: rep[q] for q in KEYS}})
    mean = {k: {q: float(np.mean([s[q] for s in v])) for q in v[0]} for k, v in scores.items()}
    print("| variant | ΔPSNR | ΔSSIM | lesion PSNR | contrast kept | Dice | sensitivity | precision | invented (ml) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, m in mean.items():
        print(f"| {k} | {m['psnr'] - mean['cubic']['psnr']:+.3f} | {m['ssim'] - mean['cubic']['ssim']:+.4f} | "
              + " | ".join(f"{m[q]:.3f}" for q in KEYS) + " |")


if __name__ == "__main__":
    main()
