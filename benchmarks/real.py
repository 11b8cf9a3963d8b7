"""Real-scan benchmark (issue 12): do the models recover real clinical slices better than cubic?

    python benchmarks/real.py --data-root ../shared/data --out-dir benchmarks/results

Genuine 2D clinical scans have no 1 mm truth, but their own slices are real data (scanner noise, bias
field, skull, true slice profile). Protocol, per scan in DATA_ROOT/thick (FLAIR, T1w, T2w; the
``*_lesionchange`` masks are skipped):

1. Load the scan; slice axis from the affine (``find_slice_axis``), original spacing ``s``; the slice
   thickness is taken equal to ``s`` (the headers carry no thickness; contiguous slices assumed).
2. In-plane: resampled exactly as ``super_resolve`` does in production (``working_grid``: kept within
   0.8-1.25 mm, else cubic to 1 mm). The in-plane resampling is linear and acts on other axes than the
   merging, so resampling the real slices is the same as resampling the merged input; the reference
   slices below are the real slices on that in-plane grid.
3. Intensities divided by ``intensity_scale`` of the scan (foreground 99.5th percentile = 1), as inference.
4. Each pair of adjacent slices (0, 1), (2, 3), ... is merged into one slice (their mean): a scan of
   thickness 2t at spacing 2s, centred between the two originals. An odd last slice is dropped.
5. Both methods reconstruct the merged scan on the same SR grid, the production one for spacing 2s
   (factor ``upsampling_factor(2s)``, rows of 2s / factor mm, ``reconstruct.cubic_array`` and
   ``reconstruct.super_resolve_array``, the functions ``super_resolve`` calls). The model's output is then
   projected onto the merged input (``consistency.project_onto_input``, boxcar of thickness 2s), as
   ``super_resolve`` does by default; ``--no-consistency-projection`` scores the network's output as it is.
6. The reconstruction is averaged over slabs of the original thickness centred on the original slice
   centres (``evaluate.original_slab_matrix``, a boxcar from ``degrade.profile_matrix``); slices whose slab
   leaves the SR grid are dropped (at most the first).
7. Compared with the real slices inside a head mask (scaled intensity > 0.1, holes filled slice by slice,
   largest 3D component): PSNR (data range 1) and SSIM (2D, Gaussian sigma 1.5, per slice, averaged over
   the mask voxels). ΔPSNR = model - cubic per scan; the table also gives the mean.
   The in-plane air around the head mask (more than 4 voxels away) is cropped before step 4, to save time.
   Scans run FLAIR first, then T1w, T2w; results are rewritten after every scan.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from prettier_bids import exitcodes
from prettier_bids.cli.options import add_precision_option, add_projection_option
from prettier_bids.sr.consistency import project_onto_input, projection_note
from prettier_bids.sr.degrade import apply_along_axis, upsampling_factor
from prettier_bids.sr.evaluate import merge_adjacent_slices, original_slab_matrix
from prettier_bids.sr.io import write_text_atomic
from prettier_bids.sr.metrics import psnr
from prettier_bids.sr.preprocess import find_slice_axis, intensity_scale, voxel_sizes, working_grid
from prettier_bids.sr.precision import precision_note, resolve_precision
from prettier_bids.sr.reconstruct import cubic_array, load_models, load_volume, super_resolve_array

LOGGER = logging.getLogger("prettier_bids.eval")
HEAD_THRESHOLD = 0.1


def head_mask(x, axis):
    """Scaled intensity > 0.1, holes filled in each slice, largest 3D component."""
    m = x > HEAD_THRESHOLD
    m = np.moveaxis(m, axis, 0)
    m = np.stack([ndimage.binary_fill_holes(s) for s in m])
    lab, n = ndimage.label(m)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(np.argmax(sizes))
    return np.moveaxis(m, 0, axis)


def ssim_slices(pred, ref, mask, axis):
    """Mean 2D SSIM (per slice along ``axis``) over the mask voxels."""
    from skimage.metrics import structural_similarity

    total, count = 0.0, 0
    for k in range(pred.shape[axis]):
        p, r, m = (np.take(a, k, axis=axis) for a in (pred, ref, mask))
        if not m.any():
            continue
        _, smap = structural_similarity(r.astype(np.float64), p.astype(np.float64), data_range=1.0,
                                        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
        total += float(smap[m].sum())
        count += int(m.sum())
    return total / max(count, 1)


def prepare(path):
    """Scaled scan on the production in-plane grid, its slice axis and spacing, and the scan's voxel sizes."""
    img = nib.load(str(path))
    data = load_volume(img)
    zooms = voxel_sizes(img.affine)
    axis = find_slice_axis(zooms)
    work, _ = working_grid(data, zooms, axis)
    x = (work / np.float32(intensity_scale(work))).astype(np.float32)
    # crop the in-plane air around the head (+4 voxels): same input for both methods, less compute
    m = head_mask(x, axis)
    box = [slice(None)] * 3
    for ax in range(3):
        if ax != axis:
            keep = np.flatnonzero(np.moveaxis(m, ax, 0).any(axis=(1, 2)))
            box[ax] = slice(max(0, keep[0] - 4), min(x.shape[ax], keep[-1] + 5))
    return np.ascontiguousarray(x[tuple(box)]), axis, float(zooms[axis]), zooms


def evaluate_scan(path, models, batch_size=8, device="cpu", project=True, precision="auto"):
    x, axis, s, zooms = prepare(path)
    merged = merge_adjacent_slices(x, axis)
    factor = upsampling_factor(2 * s)
    w, idx = original_slab_matrix(merged.shape[axis], factor)
    ref = np.take(x, idx, axis=axis)
    mask = head_mask(x, axis)
    mask = np.take(mask, idx, axis=axis)
    row = {"scan": Path(path).name, "shape": list(x.shape), "zooms": [round(float(z), 3) for z in zooms],
           "slice_axis": int(axis), "spacing": round(s, 3), "merged_spacing": round(2 * s, 3), "factor": factor,
           "n_slices_compared": int(len(idx))}
    for label, model in {"cubic": None, **models}.items():
        t0 = time.time()
        if model is None:
            hr = cubic_array(merged, axis, factor)
        else:
            # merged slices: twice the spacing and (contiguous slices assumed) twice the thickness
            hr = super_resolve_array(merged, axis, factor, model.model, batch_size, device, precision,
                                     thickness_ratio=1.0)
            if project:  # as super_resolve does by default
                hr = project_onto_input(hr, merged, axis, factor, 2 * s, 2 * s)
        pred = apply_along_axis(w, hr, axis)
        row[label] = {"psnr": psnr(pred, ref, mask), "ssim": ssim_slices(pred, ref, mask, axis),
                      "seconds": round(time.time() - t0, 1)}
        LOGGER.info("%s %s: PSNR %.2f dB SSIM %.4f (%.0f s)", row["scan"], label, row[label]["psnr"],
                    row[label]["ssim"], row[label]["seconds"])
    for label in models:
        row[label]["gain_psnr"] = row[label]["psnr"] - row["cubic"]["psnr"]
        row[label]["gain_ssim"] = row[label]["ssim"] - row["cubic"]["ssim"]
    return row


def inplane_training_scans():
    """File names of the thick scans that configs with in-plane pairs train on (the shipped split's
    ``train_inplane``): a model trained that way has seen them, so the tables mark them and give the means
    over the other scans too."""
    from importlib import resources

    split = json.loads((resources.files("prettier_bids") / "data" / "splits.json").read_text())
    return {Path(f).name for f in split.get("train_inplane", [])}


def markdown(rows, models):
    head = "| scan | s -> 2s (mm) | r | cubic PSNR / SSIM | " + " | ".join(
        f"{m} PSNR / SSIM | {m} ΔPSNR" for m in models) + " |"
    lines = [head, "|---|---|---|---|" + "---|---|" * len(models)]
    seen = inplane_training_scans()
    for r in rows:
        cells = [f"{r[m]['psnr']:.2f} / {r[m]['ssim']:.4f} | {r[m]['gain_psnr']:+.2f}" for m in models]
        mark = " †" if r["scan"] in seen else ""
        lines.append(f"| {r['scan']}{mark} | {r['spacing']:g} -> {r['merged_spacing']:g} | {r['factor']} | "
                     f"{r['cubic']['psnr']:.2f} / {r['cubic']['ssim']:.4f} | " + " | ".join(cells) + " |")
    lines.append("")
    if any(r["scan"] in seen for r in rows):
        lines += ["† in the split's `train_inplane` (in-plane training pairs of configs with `patch.inplane`).", ""]
    groups = [(c, c, False) for c in ("FLAIR", "T1w", "T2w", "all")]
    if any(r["scan"] in seen for r in rows):
        groups += [("FLAIR", "FLAIR without †", True), ("all", "all without †", True)]
    for contrast, label, unseen in groups:
        sel = [r for r in rows if (contrast == "all" or f"_{contrast}." in r["scan"])
               and not (unseen and r["scan"] in seen)]
        if not sel:
            continue
        parts = [f"cubic {np.mean([r['cubic']['psnr'] for r in sel]):.2f} dB"]
        for m in models:
            g = [r[m]["gain_psnr"] for r in sel]
            gs = [r[m]["gain_ssim"] for r in sel]
            parts.append(f"{m} {np.mean([r[m]['psnr'] for r in sel]):.2f} dB (ΔPSNR mean {np.mean(g):+.2f}, "
                         f"min {np.min(g):+.2f}, max {np.max(g):+.2f}; ΔSSIM mean {np.mean(gs):+.4f})")
        lines.append(f"- {label} (n={len(sel)}): " + "; ".join(parts))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding thick/")
    p.add_argument("--models", default="prettier-edsr-v1,prettier-edsr-v2")
    p.add_argument("--scans", default=None, help="comma-separated file names in thick/ (default: all but *_lesionchange)")
    p.add_argument("--out-dir", default=None, help="write real.md and real.json here")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="torch device for the models (e.g. cuda)")
    add_projection_option(p, scoring=True)
    add_precision_option(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    thick = Path(args.data_root) / "thick"
    if args.scans:
        scans = [thick / s for s in args.scans.split(",")]
    else:
        scans = sorted(q for q in thick.glob("*.nii*") if "lesionchange" not in q.name)
    missing = [str(q) for q in scans if not q.is_file()]
    if not scans or missing:
        print(f"real.py: error: no scans found / missing: {missing or thick}", file=sys.stderr)
        return exitcodes.NOINPUT
    models = load_models(args.models, args.device)
    order = {"FLAIR": 0, "T1w": 1, "T2w": 2}
    scans.sort(key=lambda q: (min([v for k, v in order.items() if f"_{k}." in q.name] or [3]), q.name))
    t0 = time.time()
    rows = []
    for q in scans:
        rows.append(evaluate_scan(q, models, args.batch_size, args.device, args.project, args.precision))
        text = write_results(rows, models, args.out_dir, t0, args.project, args.precision, args.device)
    print(text)
    return exitcodes.OK


def write_results(rows, models, out_dir, t0, projected=True, precision="auto", device="cpu"):
    text = "\n".join(["## Real-scan benchmark (issue 12): adjacent slices merged, originals recovered", "",
                      "Protocol: benchmarks/real.py docstring (pairs of real slices averaged -> 2t/2s; cubic and "
                      "model on the same production SR grid; averaged over the original slabs; compared with the "
                      "real slices in a head mask).", "", markdown(rows, list(models)), "",
                      "Models: " + ", ".join(f"{m.name} (sha256 {m.sha256[:12]})" for m in models.values())
                      + f"; {projection_note(projected)}; {precision_note(precision, device)}; "
                      f"total {time.time() - t0:.0f} s."])
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(text + "\n", out / "real.md")
        payload = {"rows": rows, "models": {m.name: m.sha256 for m in models.values()}, "projected": projected,
                   "precision": resolve_precision(precision, device), "seconds": time.time() - t0}
        write_text_atomic(json.dumps(payload, indent=2, default=float) + "\n", out / "real.json")
    return text


if __name__ == "__main__":
    sys.exit(main())
