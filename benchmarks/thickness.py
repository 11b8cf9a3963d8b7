"""Slice thickness estimation benchmark (issue 25): is the thickness read from the image right, fast and stable?

    python benchmarks/thickness.py --data-root ../shared/data --out-dir benchmarks/results

Two parts, both scoring what ``prettier-sr`` does (``prettier_bids.sr.thickness.estimate_thickness``; no estimator
is shipped yet, so every answer is "no estimate") or, with ``--estimator FILE``, the research CNN of
``training/thickness/`` (``cnn.py``) with that weights file:

``accuracy``: each test volume of ``prettier_bids/data/splits.json`` (never seen by the estimator's training or
validation; ``--volumes`` names others) is scaled (foreground 99.5th percentile = 1), cut into thick slices along
each axis (``degrade.simulate_thick_slices``; slice phase drawn per case; Rician noise of sigma ``--noise``, 0.01
of that scale by default) with the thickness / spacing pairs of the issue (3/3, 5/6, 4/5, 3/4, 2/4 mm) for a boxcar
profile and for a Gaussian one (FWHM = thickness), and estimated with ``thickness.estimate_thickness``. Targets:
within +/-0.5 mm (boxcar) and +/-1 mm (Gaussian) of the truth.

``real``: every scan in DATA_ROOT/thick (the ``*_lesionchange`` masks skipped): the estimate, its uncertainty and
whether it is confident (the thickness is unknown there: the estimates are reported, not scored), the time it
takes on 2 threads (target: at most 3 s per clinical volume) and whether a second run gives the same estimate.

Writes ``thickness-estimation.json`` and ``thickness-estimation.md`` in ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from prettier_bids.sr.thickness import estimate_thickness
from prettier_bids.sr.degrade import simulate_thick_slices
from prettier_bids.sr.io import read_json, write_text_atomic
from prettier_bids.sr.preprocess import find_slice_axis, voxel_sizes

SETTINGS = ((3.0, 3.0), (6.0, 5.0), (5.0, 4.0), (4.0, 3.0), (4.0, 2.0))  # (spacing, thickness) mm
PROFILES = ("boxcar", "gaussian")
TOLERANCE = {"boxcar": 0.5, "gaussian": 1.0}
REPO = Path(__file__).resolve().parents[1]
SPLIT = REPO / "prettier_bids" / "data" / "splits.json"


def research_estimator(path):
    """``estimate(data, zooms, axis)`` of the research CNN (training/thickness/cnn.py) with the weights ``path``."""
    sys.path.insert(0, str(REPO / "training" / "thickness"))
    import cnn  # noqa: PLC0415

    est = cnn.load_estimator(path)
    return lambda data, zooms, axis: cnn.estimate_thickness(data, zooms, axis, estimator=est)


def load_scaled(path):
    img = nib.load(str(path))
    vol = np.asarray(img.dataobj, dtype=np.float32)
    vol /= np.percentile(vol[vol > 0], 99.5)
    return vol, np.diag(list(voxel_sizes(img.affine)) + [1.0])


def simulate(vol, affine, axis, spacing, thickness, profile, noise, seed):
    rng = np.random.default_rng(seed)
    first = float(rng.uniform(0.5 * thickness, 0.5 * thickness + spacing))
    lr = simulate_thick_slices(vol, affine, axis, thickness, spacing, profile=profile, first_centre_mm=first).data
    if noise > 0:
        lr = np.sqrt((lr + rng.normal(0, noise, lr.shape)) ** 2 + rng.normal(0, noise, lr.shape) ** 2)
    zooms = [float(affine[a, a]) for a in range(3)]
    zooms[axis] = float(spacing)
    return lr.astype(np.float32), zooms


def accuracy(volumes, estimator, noise, log):
    rows = []
    for path in volumes:
        vol, aff = load_scaled(path)
        for axis in range(3):
            for profile in PROFILES:
                for spacing, thickness in SETTINGS:
                    seed = zlib.crc32(f"{Path(path).name}/{axis}/{spacing}/{thickness}/{profile}".encode())
                    lr, zooms = simulate(vol, aff, axis, spacing, thickness, profile, noise, seed)
                    est = estimator(lr, zooms, axis)
                    err = est.thickness - thickness
                    rows.append({"volume": Path(path).name, "axis": axis, "profile": profile, "spacing": spacing,
                                 "thickness": thickness, "estimate": est.thickness,
                                 "uncertainty": round(est.uncertainty, 3), "confident": est.confident,
                                 "error": round(err, 3), "within": bool(abs(err) <= TOLERANCE[profile])})
            log(f"  {Path(path).name} axis {axis}: max |error| "
                f"{max(abs(r['error']) for r in rows if r['volume'] == Path(path).name and r['axis'] == axis):.2f} mm")
    return rows


def real(thick_dir, estimator, log):
    import torch

    torch.set_num_threads(2)
    rows = []
    for path in sorted(Path(thick_dir).glob("*.nii*")):
        if "lesionchange" in path.name:
            continue
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
        zooms = voxel_sizes(img.affine)
        axis = find_slice_axis(zooms, force=True)
        t0 = time.perf_counter()
        est = estimator(data, zooms, axis)
        seconds = time.perf_counter() - t0
        again = estimator(data, zooms, axis)
        rows.append({"scan": path.name, "shape": list(data.shape), "zooms": [round(float(z), 3) for z in zooms],
                     "axis": int(axis), "spacing": round(float(zooms[axis]), 3), "estimate": est.thickness,
                     "uncertainty": round(est.uncertainty, 3), "gap": round(est.gap, 2), "confident": est.confident,
                     "patches": est.n_features, "seconds": round(seconds, 2), "same_on_rerun": again.as_info() == est.as_info()})
        log(f"  {path.name}: spacing {zooms[axis]:.2f}, estimate {est.thickness:.2f} +/- {est.uncertainty:.2f} mm "
            f"({seconds:.2f} s)")
    return rows


def markdown(acc, reals, estimator_name):
    out = [f"# Slice thickness estimation ({estimator_name})", "",
           "Produced by `python benchmarks/thickness.py --data-root ../shared/data --out-dir benchmarks/results` (with `--estimator FILE --name thickness-estimation-cnn` for the research CNN).", ""]
    if acc:
        out += ["## Accuracy on the test volumes (simulated thick slices)", "",
                "Estimate (mm) per axis; error = estimate - truth. Targets: +/-0.5 mm boxcar, +/-1 mm Gaussian.", "",
                "| volume | profile | thickness/spacing | axis 0 | axis 1 | axis 2 | max abs error | within |",
                "|---|---|---|---|---|---|---|---|"]
        keys = []
        for r in acc:
            k = (r["volume"], r["profile"], r["thickness"], r["spacing"])
            if k not in keys:
                keys.append(k)
        for vol, profile, t, s in keys:
            rs = [r for r in acc if (r["volume"], r["profile"], r["thickness"], r["spacing"]) == (vol, profile, t, s)]
            cells = [f"{r['estimate']:.2f}{'' if r['confident'] else ' (not confident)'}" for r in rs]
            out.append(f"| {vol} | {profile} | {t:g}/{s:g} | {' | '.join(cells)} | "
                       f"{max(abs(r['error']) for r in rs):.2f} | {sum(r['within'] for r in rs)}/{len(rs)} |")
        out.append("")
        for profile in PROFILES:
            rs = [r for r in acc if r["profile"] == profile]
            errs = np.array([r["error"] for r in rs])
            out.append(f"- {profile}: {sum(r['within'] for r in rs)}/{len(rs)} within +/-{TOLERANCE[profile]} mm; "
                       f"mean error {errs.mean():+.2f} mm, RMS {np.sqrt((errs ** 2).mean()):.2f}, max "
                       f"{np.abs(errs).max():.2f}; confident {sum(r['confident'] for r in rs)}/{len(rs)}")
        out.append("")
    if reals:
        out += ["## Real clinical scans (thickness unknown: estimates reported, not scored)", "",
                "| scan | voxels (mm) | spacing | estimate +/- uncertainty | gap | confident | patches | seconds "
                "| same on rerun |", "|---|---|---|---|---|---|---|---|---|"]
        for r in reals:
            out.append(f"| {r['scan']} | {'x'.join(f'{z:g}' for z in r['zooms'])} | {r['spacing']:g} | "
                       f"{r['estimate']:.2f} +/- {r['uncertainty']:.2f} | {r['gap']:+.2f} | {r['confident']} | "
                       f"{r['patches']} | {r['seconds']:.2f} | {r['same_on_rerun']} |")
        secs = [r["seconds"] for r in reals]
        out += ["", f"Time per scan (2 threads): median {np.median(secs):.2f} s, max {max(secs):.2f} s. "
                f"Same estimate on rerun: {sum(r['same_on_rerun'] for r in reals)}/{len(reals)}.", ""]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--out-dir", default=None, help="where to write thickness-estimation.{json,md} (default: print)")
    p.add_argument("--estimator", default=None,
                   help="weights of the research CNN (training/thickness/) to score instead of the package's answer")
    p.add_argument("--volumes", nargs="*", default=None,
                   help="1 mm volumes under DATA_ROOT (default: the split's test volumes)")
    p.add_argument("--parts", default="accuracy,real")
    p.add_argument("--noise", type=float, default=0.01)
    p.add_argument("--name", default="thickness-estimation")
    a = p.parse_args(argv)
    root = Path(a.data_root)
    estimator = research_estimator(a.estimator) if a.estimator else estimate_thickness
    if a.volumes is None:
        test = read_json(SPLIT)["test"]
        a.volumes = [e["file"] for c in ("FLAIR", "T1w") for e in test[c]]
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    parts = a.parts.split(",")
    acc = accuracy([root / v for v in a.volumes], estimator, a.noise, log) if "accuracy" in parts else []
    reals = real(root / "thick", estimator, log) if "real" in parts else []
    md = markdown(acc, reals, f"research CNN {Path(a.estimator).name}" if a.estimator else "prettier_bids.sr.thickness")
    if a.out_dir:
        out = Path(a.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(json.dumps({"accuracy": acc, "real": reals}, indent=1), out / f"{a.name}.json")
        write_text_atomic(md, out / f"{a.name}.md")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
