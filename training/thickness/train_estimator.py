"""Train the research slice thickness estimator (cnn.py; not shipped) on thick stacks simulated from 1 mm volumes.

    python training/thickness/train_estimator.py --data-root ../shared/data --split prettier_bids/data/splits.json \
        --out /tmp/thk/thickness-estimator-v1.pt

Each training volume is cut along each axis into thick-slice stacks with a random spacing (2.5-7.5 mm), thickness /
spacing (0.35-1.25), profile (boxcar, or Gaussian with that FWHM, 30 %), slice phase, Rician noise and in-plane blur;
patches are drawn from those stacks exactly as at inference (``cnn.sample_patches`` on
``cnn.scaled_working_volume``). The target is thickness / spacing; the loss L1. The held-out error
(``CalibrationRatioError``: the RMS of estimate/spacing minus truth over the validation stacks) goes into the
file and becomes part of every estimate's uncertainty. CPU: about 13 minutes on 2 cores (2 min of simulation,
30 epochs of 21 s, 1 min of validation). Deterministic seeds. ``--cache FILE.npz`` keeps the simulated patches.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from prettier_bids.sr.degrade import simulate_thick_slices
from prettier_bids.sr.io import file_sha256, read_json, save_torch_atomic

import cnn as T  # noqa: E402 (this folder: run as a script)

SPACING_RANGE = (2.5, 7.5)
RATIO_RANGE = (0.35, 1.25)
GAUSSIAN_PROB = 0.3


def load_hr(path):
    img = nib.load(str(path))
    vol = np.asarray(img.dataobj, dtype=np.float32)
    fg = vol[vol > 0]
    vol /= np.percentile(fg, 99.5)
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    return vol, np.diag(list(zooms) + [1.0])


def degrade(vol, affine, axis, s, t, profile, rng, noise, blur):
    """A simulated thick-slice stack (array, zooms) with random phase, Rician noise and in-plane blur."""
    hr_vox = float(affine[axis, axis])
    lr = simulate_thick_slices(vol, affine, axis, t, s, profile=profile,
                               first_centre_mm=float(rng.uniform(0.5 * t, 0.5 * t + s))).data
    if blur > 0:
        sig = [blur if a != axis else 0.0 for a in range(3)]
        lr = gaussian_filter(lr, sig)
    if noise > 0:
        lr = np.sqrt((lr + rng.normal(0, noise, lr.shape)) ** 2 + rng.normal(0, noise, lr.shape) ** 2)
    zooms = [float(affine[a, a]) for a in range(3)]
    zooms[axis] = float(s)
    del hr_vox
    return lr.astype(np.float32), zooms


def make_set(paths, n_settings, n_patches, seed):
    rng = np.random.default_rng(seed)
    X, S, Y = [], [], []
    for path in paths:
        vol, aff = load_hr(path)
        for axis in range(3):
            for _ in range(n_settings):
                s = float(rng.uniform(*SPACING_RANGE))
                r = float(rng.uniform(*RATIO_RANGE))
                profile = "gaussian" if rng.random() < GAUSSIAN_PROB else "boxcar"
                lr, zooms = degrade(vol, aff, axis, s, r * s, profile, rng, float(rng.uniform(0, 0.04)),
                                    float(rng.uniform(0, 0.7)))
                x = T.scaled_working_volume(lr, zooms, axis)
                p = T.sample_patches(x, axis, n_patches, rng)
                X.append(p); S.append(np.full(len(p), s, np.float32)); Y.append(np.full(len(p), r, np.float32))
        print(f"  {Path(path).name}: {sum(len(x) for x in X)} patches so far", flush=True)
    return np.concatenate(X), np.concatenate(S), np.concatenate(Y)


def to_input(X, S):
    return np.stack([X, (S[:, None, None] - 5.0) / 2.0 * np.ones_like(X)], axis=1).astype(np.float32)


def train(X, S, Y, epochs, seed, log=print, lr=1e-3):
    torch.manual_seed(seed)
    net = T.build_net()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = len(X)
    steps = epochs * math.ceil(n / 256)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    inp = torch.from_numpy(to_input(X, S))
    tgt = torch.from_numpy(Y)
    g = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        perm = torch.randperm(n, generator=g)
        tot = 0.0
        t0 = time.time()
        for i in range(0, n, 256):
            idx = perm[i:i + 256]
            xb = inp[idx]
            if ep % 2:  # slice order reversed: the same profile
                xb = torch.flip(xb, dims=[2])
            loss = torch.nn.functional.l1_loss(net(xb), tgt[idx])
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
            tot += loss.item() * len(idx)
        log(f"epoch {ep + 1}/{epochs}: L1 {tot / n:.4f} ({time.time() - t0:.0f} s)")
    net.eval()
    return net


def evaluate(net, paths, settings, calibration=0.0):
    """Full-pipeline estimates (cnn.estimate_thickness) for each volume, axis and (s, t, profile)."""
    rows = []
    for path in paths:
        vol, aff = load_hr(path)
        for axis in range(3):
            for s, t, profile in settings:
                rng = np.random.default_rng(zlib.crc32(f"{Path(path).name}/{axis}/{s}/{t}/{profile}".encode()))
                lr, zooms = degrade(vol, aff, axis, s, t, profile, rng, 0.01, 0.0)
                est = T.estimate_thickness(lr, zooms, axis, estimator=(net, {"CalibrationRatioError": calibration}))
                rows.append({"volume": Path(path).name, "axis": axis, "spacing": s, "thickness": t, "profile": profile,
                             "estimate": est.thickness, "uncertainty": round(est.uncertainty, 3),
                             "error": round(est.thickness - t, 3), "patches": est.n_features})
    return rows


ISSUE_SETTINGS = [(3.0, 3.0, "boxcar"), (6.0, 5.0, "boxcar"), (5.0, 4.0, "boxcar"), (4.0, 3.0, "boxcar"),
                  (4.0, 2.0, "boxcar"), (6.0, 5.0, "gaussian"), (4.0, 3.0, "gaussian")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--split", required=True, help="JSON with train / validation lists (file names under data-root)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--settings-per-axis", type=int, default=24)
    ap.add_argument("--patches", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--cache", default=None, help="an .npz of the simulated patches: written once, read after")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    root = Path(a.data_root)
    split = read_json(a.split)
    train_paths = [root / f for f in split["train"]]
    val_paths = [root / f for f in split["validation"]]
    log = lambda m: print(m, flush=True)  # noqa: E731
    t0 = time.time()
    log(f"simulating training stacks from {len(train_paths)} volumes")
    if a.cache and Path(a.cache).is_file():
        with np.load(a.cache) as z:
            X, S, Y = z["X"], z["S"], z["Y"]
    else:
        X, S, Y = make_set(train_paths, a.settings_per_axis, a.patches, a.seed)
        if a.cache:
            np.savez(a.cache, X=X, S=S, Y=Y)
    log(f"{len(X)} patches in {time.time() - t0:.0f} s")
    net = train(X, S, Y, a.epochs, a.seed, log, a.lr)
    val = evaluate(net, val_paths, ISSUE_SETTINGS)
    ratio_err = [(r["estimate"] - r["thickness"]) / r["spacing"] for r in val if r["profile"] == "boxcar"]
    cal = float(np.sqrt(np.mean(np.square(ratio_err))))
    log(f"validation ({', '.join(p.name for p in val_paths)}): RMS (estimate - truth) / spacing = {cal:.4f}; "
        f"max |error| {max(abs(r['error']) for r in val if r['profile'] == 'boxcar'):.2f} mm (boxcar)")
    meta = {"CalibrationRatioError": round(cal, 4), "Train": split["train"], "Validation": split["validation"],
            "Recipe": {k: v for k, v in vars(a).items() if k not in ("data_root", "out", "threads", "cache")},
            "SpacingRange": SPACING_RANGE, "RatioRange": RATIO_RANGE, "GaussianProb": GAUSSIAN_PROB}
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_torch_atomic({"format": T.FORMAT, "state_dict": state, "meta": meta}, out)
    Path(str(out) + ".validation.json").write_text(json.dumps(val, indent=1))
    log(f"wrote {out} (sha256 {file_sha256(out)}) in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
