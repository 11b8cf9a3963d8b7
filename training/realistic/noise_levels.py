"""Noise levels of the real thick scans against thick stacks simulated from the 1 mm training volumes (issue 28,
item 3): where the ``realistic.noise`` range of the training configs comes from.

    python training/realistic/noise_levels.py --data-root ../shared/data --out training/realistic/noise-levels.md

Each image as training and inference see it: on the network's in-plane working grid, scaled so that the
foreground's 99.5th percentile is 1 (``patches.load_inplane_volume`` for the real scans; the 1 mm volumes of the
split's ``train`` list are cut into 6 mm slices of 5 mm with ``degrade.simulate_thick_slices`` along each axis).
Sigma: ``degradations.noise_sigma`` (Immerkær's Laplacian difference, median) on every slice, inside the head mask
(``consistency.head_mask``). The added sigma that makes a simulated stack as noisy as a real scan of the same
contrast is ``sqrt(real^2 - simulated^2)`` (Gaussian noise adds in variance), over every pair of a real scan and a
simulated stack of that contrast (T1w: ce-gd T1w counted as T1w). Measurements only; no model is chosen here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from prettier_bids.sr.consistency import head_mask  # noqa: E402
from prettier_bids.sr.degrade import simulate_thick_slices  # noqa: E402
from prettier_bids.sr.io import suffix_of  # noqa: E402
from prettier_bids.training.degradations import noise_sigma  # noqa: E402
from prettier_bids.training.patches import _scaled, load_inplane_volume, load_training_volume  # noqa: E402


def sigma_of(data, axis):
    """Noise sigma of the slices along ``axis`` (scaled intensities), inside the head mask."""
    mask = head_mask(data, axis)
    return noise_sigma(np.moveaxis(data, axis, 0), np.moveaxis(mask, axis, 0))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="markdown table to write")
    args = ap.parse_args(argv)
    split = json.loads((REPO / "prettier_bids" / "data" / "splits.json").read_text())
    rows = []
    for path in sorted((args.data_root / "thick").glob("*.nii*")):
        if "lesionchange" in path.name:
            continue
        vol = load_inplane_volume(path)
        rows.append(("real", path.name, vol.thick_axis, sigma_of(vol.data, vol.thick_axis)))
        print(rows[-1], file=sys.stderr)
    for rel in split["train"]:
        vol = load_training_volume(args.data_root / rel)
        for axis in range(3):
            thick = simulate_thick_slices(vol.data, axis=axis, thickness=5.0, spacing=6.0).data
            rows.append(("simulated 6/5", Path(rel).name, axis, sigma_of(_scaled(thick), axis)))
            print(rows[-1], file=sys.stderr)
    q = lambda a, p: float(np.percentile(a, p))  # noqa: E731
    lines = ["# Noise levels: real thick scans and simulated stacks", "",
             "Written by `python training/realistic/noise_levels.py --data-root ../shared/data --out "
             "training/realistic/noise-levels.md` (method in its docstring). Sigma on scaled intensities "
             "(foreground 99.5th percentile = 1), in-plane, inside the head mask.", "",
             "| kind | file | slice axis | sigma |", "|---|---|---|---|"]
    lines += [f"| {k} | {n} | {a} | {s:.4f} |" for k, n, a, s in rows]
    lines += ["", "| contrast | real scans: n, median (range) | simulated 6/5 mm stacks: n, median (range) | "
              "added sigma within the contrast: median, 90th percentile, max |", "|---|---|---|---|"]
    for c in ("FLAIR", "T1w", "T2w"):
        real = np.array([r[3] for r in rows if r[0] == "real" and suffix_of(r[1]) == c])
        sim = np.array([r[3] for r in rows if r[0] != "real" and suffix_of(r[1]) == c])
        if not len(real) or not len(sim):
            continue
        added = np.sqrt(np.clip(real[:, None] ** 2 - sim[None, :] ** 2, 0, None)).ravel()
        lines.append(f"| {c} | {len(real)}, {np.median(real):.4f} ({real.min():.4f}-{real.max():.4f}) | "
                     f"{len(sim)}, {np.median(sim):.4f} ({sim.min():.4f}-{sim.max():.4f}) | "
                     f"{np.median(added):.4f}, {q(added, 90):.4f}, {added.max():.4f} |")
    lines.append("")
    args.out.write_text("\n".join(lines))
    print("\n".join(lines[-6:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
