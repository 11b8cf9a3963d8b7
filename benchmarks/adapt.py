"""Per-scan adaptation (``--adapt``): gain over cubic against the number of fine-tuning steps.

Simulates thick slices from 1 mm volumes (``simulate_case``, as prettier-eval), reconstructs each with the
model as shipped and adapted for each of ``--steps`` (and ``--lr``), thickness told, the projection onto the
input on as in production, and scores PSNR/SSIM inside the brain mask against the 1 mm truth; also the
wall time of the adaptation. Choose steps and learning rate on the validation volume only
(``--split-section validation``); report the test volumes.

    python benchmarks/adapt.py --data-root ../shared/data --split-section validation \\
        --steps 0,20,40,80 --lr 1e-5,3e-5 --out benchmarks/results/adapt-validation.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np
import torch

from prettier_bids.evaluation.benchmark import brain_mask, simulate_case
from prettier_bids.sr.adapt import AdaptSettings
from prettier_bids.sr.io import read_json, suffix_of
from prettier_bids.sr.metrics import psnr, ssim
from prettier_bids.sr.models import default_model
from prettier_bids.sr.reconstruct import load_model, super_resolve
from prettier_bids.training.patches import load_training_volume
from prettier_bids.cli.splits import default_split

AXES = {"axial": 2, "coronal": 1, "sagittal": 0}


def entries(split, section):
    part = split[section]
    if isinstance(part, dict):  # test: {contrast: [{file, skull_stripped}]}
        return [(e["file"], c, e.get("skull_stripped", True)) for c, es in part.items() for e in es]
    # validation/train sections name files only: the contrast from the name (the package's rule); skull-stripped
    # is the test section's field, absent here: taken as False (deepbet masks the head), as for the MASS heads
    return [(f, suffix_of(f), False) for f in part]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--split-section", default="validation", choices=("validation", "test"))
    p.add_argument("--files", default=None, help="comma-separated subset of the section's files")
    p.add_argument("--setting", default="6/5", help="spacing/thickness in mm")
    p.add_argument("--axes", default="axial")
    p.add_argument("--steps", default="0,20,40,80")
    p.add_argument("--lr", default="2e-5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--planes", default="slices", help="comma-separated AdaptSettings.planes values")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--crop", type=int, default=0, help="centre crop of N voxels along each axis (quick runs)")
    p.add_argument("--distill", type=float, default=0.0,
                   help="AdaptSettings.distill: weight of the L1 towards the shipped model's output on the scan's own "
                        "windows (0: off)")
    p.add_argument("--params", default="all", choices=("all", "tail"), help="AdaptSettings.params")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(a.threads)
    split = read_json(a.split or default_split())
    spacing, thickness = (float(v) for v in a.setting.split("/"))
    steps = [int(s) for s in a.steps.split(",")]
    lrs = [float(v) for v in a.lr.split(",")]
    want = set(a.files.split(",")) if a.files else None
    rows = []
    for fname, contrast, stripped in entries(split, a.split_section):
        if want and fname not in want:
            continue
        vol = load_training_volume(f"{a.data_root}/{fname}", name=fname)
        mask = brain_mask(vol.data, stripped)
        if a.crop:
            sl = tuple(slice(max(0, (n - a.crop) // 2), max(0, (n - a.crop) // 2) + a.crop) for n in vol.data.shape)
            vol.data, mask = vol.data[sl], mask[sl]
        model = load_model(default_model(contrast))
        for axis_name in a.axes.split(","):
            axis = AXES[axis_name]
            lr_img, img, idx = simulate_case(vol.data, axis, spacing, thickness)
            ref = np.take(vol.data, idx, axis=axis)
            m = np.take(mask, idx, axis=axis)

            def score(out):
                n = min(out.shape[axis], ref.shape[axis])
                o, r_, mm = (np.take(v, np.arange(n), axis=axis) for v in (out, ref, m))
                return psnr(o, r_, mm), ssim(o, r_, mm)

            res = super_resolve(img, method="cubic", slice_thickness=thickness)
            cubic = score(res.image.get_fdata(dtype=np.float32))
            for planes, lr in [(pl, v) for pl in a.planes.split(",") for v in lrs]:
                for n in steps:
                    if n == 0 and (lr != lrs[0] or planes != a.planes.split(",")[0]):
                        continue
                    t0 = time.time()
                    res = super_resolve(img, model=model, slice_thickness=thickness,
                                        adapt=AdaptSettings(steps=n, learning_rate=lr, seed=a.seed, planes=planes,
                                                            distill=a.distill, params=a.params)
                                        if n else None)
                    sec = time.time() - t0
                    ps, ss = score(res.image.get_fdata(dtype=np.float32))
                    ad = res.info.get("Adaptation", {})
                    row = {"file": fname, "contrast": contrast, "axis": axis_name, "setting": a.setting,
                           "model": model.name, "planes": planes if n else None, "steps": n, "lr": lr if n else None, "psnr": round(ps, 3),
                           "ssim": round(ss, 4), "cubic_psnr": round(cubic[0], 3),
                           "gain": round(ps - cubic[0], 3), "seconds": round(sec, 1),
                           "adapt_seconds": ad.get("Seconds"), "l1": [ad.get("L1First"), ad.get("L1Last")]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    with open(a.out, "w") as f:
        json.dump({"command": " ".join(sys.argv), "threads": a.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
