"""Real-scan benchmark (issue 12): do the models recover real clinical slices better than cubic?

    python benchmarks/real.py --data-root ../shared/data --out-dir benchmarks/results

Genuine 2D clinical scans have no 1 mm truth, but their own slices are real data (scanner noise, bias
field, skull, true slice profile). Protocol, per scan in DATA_ROOT/thick (FLAIR, T1w, T2w; the
``*_lesionchange`` masks are skipped):

1. Load the scan; slice axis from the affine (``find_slice_axis``), original spacing ``s``; the slice
   thickness is taken equal to ``s`` (the headers carry no thickness; contiguous slices assumed).
2. In-plane: the scan's own grid (``native``, what ``super_resolve`` stores by default) and the network's
   working grid (``working_grid``: kept within 0.8-1.25 mm, else cubic to 1 mm; the ``1mm`` grid, the only one of earlier versions). The
   in-plane resampling is linear and acts on other axes than the merging, so resampling the real slices is the
   same as resampling the merged input.
3. Intensities divided by ``intensity_scale`` of the working grid (foreground 99.5th percentile = 1), as
   inference does.
4. Each pair of adjacent slices (0, 1), (2, 3), ... is merged into one slice (their mean): a scan of
   thickness 2t at spacing 2s, centred between the two originals. An odd last slice is dropped.
5. Both methods reconstruct the merged scan on the same SR grid, the production one for spacing 2s
   (factor ``upsampling_factor(2s)``, rows of 2s / factor mm). Cubic: ``reconstruct.cubic_array`` on the native
   grid. Model: ``reconstruct.super_resolve_array`` on the working grid, brought onto the native grid by
   ``reconstruct.onto_output_grid`` and projected onto the merged input there (``consistency.project_onto_input``,
   boxcar of thickness 2s, alternating with the clip to the input's range, as ``super_resolve`` does by default;
   ``--no-consistency-projection`` scores the network's output as it is). For comparison the table also scores
   the earlier protocol (everything on the working grid, projection without the clip) and the earlier output (the
   working-grid output, projected there) resampled onto the native grid.
6. The reconstruction is averaged over slabs of the original thickness centred on the original slice
   centres (``evaluate.original_slab_matrix``, a boxcar from ``degrade.profile_matrix``); slices whose slab
   leaves the SR grid are dropped (at most the first).
7. Compared with the real slices (on the grid of the reconstruction) inside a head mask
   (``consistency.head_mask``: scaled intensity > 0.1, holes filled slice by slice, largest 3D component): PSNR (data range 1) and SSIM (2D, Gaussian sigma 1.5, per slice, averaged over
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

from prettier_bids import exitcodes
from prettier_bids.cli.options import add_precision_option, add_projection_option
from prettier_bids.naming import suffix_of
from prettier_bids.sr.adapt import AdaptSettings, adapt_model
from prettier_bids.sr.consistency import compare, head_mask, project_onto_input, projection_note
from prettier_bids.sr.degrade import apply_along_axis, redegrade, upsampling_factor
from prettier_bids.evaluation.benchmark import merge_adjacent_slices, original_slab_matrix
from prettier_bids.sr.io import write_text_atomic
from prettier_bids.sr.metrics import psnr
from prettier_bids.sr.models import WeightsError
from prettier_bids.sr.preprocess import (
    find_slice_axis,
    intensity_scale,
    regrid_map,
    resample_inplane,
    voxel_sizes,
    working_grid,
)
from prettier_bids.sr.precision import precision_note, resolve_precision
from prettier_bids.sr.reconstruct import (
    ModelSet,
    cubic_array,
    inference_conditions,
    load_model_set,
    load_models,
    load_volume,
    onto_output_grid,
    super_resolve_array,
)

LOGGER = logging.getLogger("prettier_bids.eval")
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
    """The scan scaled as inference scales it (offset 0, ``intensity_scale`` of its working grid), cropped
    in-plane to its head (+4 voxels), on its own grid (``native``) and on the network's working grid
    (``work``), with the working grid's voxel-index map, the slice axis, the spacing and the voxel sizes."""
    img = nib.load(str(path))
    data = load_volume(img)
    zooms = voxel_sizes(img.affine)
    axis = find_slice_axis(zooms)
    scale = np.float32(intensity_scale(working_grid(data, zooms, axis)[0]))
    native = (data / scale).astype(np.float32)
    # crop the in-plane air around the head (+4 voxels): same input for every method, less compute
    m = head_mask(native, axis)
    box = [slice(None)] * 3
    for ax in range(3):
        if ax != axis:
            keep = np.flatnonzero(np.moveaxis(m, ax, 0).any(axis=(1, 2)))
            box[ax] = slice(max(0, keep[0] - 4), min(native.shape[ax], keep[-1] + 5))
    native = np.ascontiguousarray(native[tuple(box)])
    work, imap = working_grid(native, zooms, axis)
    return native, work, imap, axis, float(zooms[axis]), zooms


def evaluate_scan(path, models, batch_size=8, device="cpu", project=True, precision="auto", adapt=None):
    native, work, imap, axis, s, zooms = prepare(path)
    factor = upsampling_factor(2 * s)
    row = {"scan": Path(path).name, "shape": list(native.shape), "zooms": [round(float(z), 3) for z in zooms],
           "slice_axis": int(axis), "spacing": round(s, 3), "merged_spacing": round(2 * s, 3), "factor": factor,
           "working_shape": list(work.shape)}
    grids = {"native": native, "1mm": work}
    merged = {g: merge_adjacent_slices(x, axis) for g, x in grids.items()}
    w, idx = original_slab_matrix(merged["native"].shape[axis], factor)
    refs = {g: np.take(x, idx, axis=axis) for g, x in grids.items()}
    masks = {g: np.take(head_mask(x, axis), idx, axis=axis) for g, x in grids.items()}
    row["n_slices_compared"] = int(len(idx))

    def score(label, grid, hr, seconds=None):
        pred = apply_along_axis(w, hr, axis)
        key = label if grid == "native" else f"{label}@1mm"
        row[key] = {"psnr": psnr(pred, refs[grid], masks[grid]),
                    "ssim": ssim_slices(pred, refs[grid], masks[grid], axis)}
        if seconds is not None:
            row[key]["seconds"] = round(seconds, 1)
        if grid == "native":  # the reconstruction put back through its own (merged) input's acquisition
            again = redegrade(hr, axis, factor, 2 * s, 2 * s)
            row[key]["native_consistency"] = compare(again, merged["native"], axis).psnr_db
        LOGGER.info("%s %s: PSNR %.2f dB SSIM %.4f", row["scan"], key, row[key]["psnr"], row[key]["ssim"])

    for grid in grids:
        t0 = time.time()
        score("cubic", grid, cubic_array(merged[grid], axis, factor), time.time() - t0)
    for label, model in models.items():
        if isinstance(model, ModelSet):  # "default": the model each contrast gets
            model = model.for_contrast(suffix_of(path))
            row.setdefault("model_of", {})[label] = model.name
        t0 = time.time()
        network = model.model
        if adapt is not None:  # --adapt: fine-tuned on the merged scan's own in-plane axes first
            network, info = adapt_model(network, merged["1mm"], axis, factor, 2 * s, 1.0, "boxcar", adapt, device,
                                        window_conditions=inference_conditions(1.0))
            row.setdefault("adaptation", {})[label] = info
        # merged slices: twice the spacing and (contiguous slices assumed) twice the thickness
        net = super_resolve_array(merged["1mm"], axis, factor, network, batch_size, device, precision,
                                  thickness_ratio=1.0)
        one = project_onto_input(net, merged["1mm"], axis, factor, 2 * s, 2 * s) if project else net
        score(label, "1mm", one)  # the earlier protocol: everything on the working grid
        if work.shape != native.shape:  # the earlier output judged on the native grid
            score(f"{label} (earlier output)", "native",
                  resample_inplane(one, regrid_map(imap, np.eye(4)), _rows(native, one, axis)))
        hr = net if work.shape == native.shape else onto_output_grid(net.copy(), merged["1mm"], merged["native"],
                                                                     axis, factor, imap, np.eye(4))
        if project:  # as super_resolve does by default, with the clip of its restore_intensity
            limits = (float(merged["native"].min()), float(merged["native"].max()))
            hr = np.clip(project_onto_input(hr, merged["native"], axis, factor, 2 * s, 2 * s, limits=limits),
                         *limits)
        score(label, "native", hr, time.time() - t0)
    for label in models:
        for suffix in ("", "@1mm", " (earlier output)"):
            base = "cubic" if suffix != "@1mm" else "cubic@1mm"
            if label + suffix in row:
                row[label + suffix]["gain_psnr"] = row[label + suffix]["psnr"] - row[base]["psnr"]
                row[label + suffix]["gain_ssim"] = row[label + suffix]["ssim"] - row[base]["ssim"]
    return row


def _rows(native, hr, axis):
    """The native grid's shape with ``hr``'s rows along ``axis``."""
    shape = list(native.shape)
    shape[axis] = hr.shape[axis]
    return tuple(shape)


def inplane_training_scans():
    """File names of the thick scans that configs with in-plane pairs train on (the shipped split's
    ``train_inplane``): a model trained that way has seen them, so the tables mark them and give the means
    over the other scans too."""
    from importlib import resources

    split = json.loads((resources.files("prettier_bids") / "data" / "splits.json").read_text())
    return {Path(f).name for f in split.get("train_inplane", [])}


def markdown(rows, models):
    head = ("| scan | s -> 2s (mm) | r | cubic PSNR / SSIM | " + " | ".join(
        f"{m} PSNR / SSIM | {m} ΔPSNR | ΔPSNR of the earlier output | ΔPSNR on the 1 mm grid (earlier protocol) | "
        "native consistency (dB)" for m in models) + " |")
    lines = ["All on the scan's own (native) grid unless said: cubic and model there; \"earlier 1 mm output\": the model's "
             "output on the 1 mm working grid, as earlier versions stored it, resampled onto the native grid; \"1 mm grid\": "
             "cubic, model and the real slices all on the working grid (the protocol of earlier versions). Native consistency: "
             "the model's output put back through the merged input's acquisition, PSNR against it in the head "
             "mask.", "", head, "|---|---|---|---|" + "---|---|---|---|---|" * len(models)]
    seen = inplane_training_scans()

    def gain(r, key):
        return f"{r[key]['gain_psnr']:+.2f}" if key in r else "same"

    for r in rows:
        cells = [f"{r[m]['psnr']:.2f} / {r[m]['ssim']:.4f} | {r[m]['gain_psnr']:+.2f} | {gain(r, m + ' (earlier output)')} "
                 f"| {r[m + '@1mm']['gain_psnr']:+.2f} | {r[m]['native_consistency']:.2f}" for m in models]
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
            old = [r[m + "@1mm"]["gain_psnr"] for r in sel]
            gs = [r[m]["gain_ssim"] for r in sel]
            parts.append(f"{m} {np.mean([r[m]['psnr'] for r in sel]):.2f} dB (ΔPSNR mean {np.mean(g):+.2f}, "
                         f"min {np.min(g):+.2f}, max {np.max(g):+.2f}; ΔSSIM mean {np.mean(gs):+.4f}; on the 1 mm "
                         f"grid ΔPSNR mean {np.mean(old):+.2f})")
        lines.append(f"- {label} (n={len(sel)}): " + "; ".join(parts))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="folder holding thick/")
    p.add_argument("--models", default="default",
                   help="comma-separated shipped model names or weights files; default: the model each contrast "
                        "gets by default")
    p.add_argument("--scans", default=None, help="comma-separated file names in thick/ (default: all but *_lesionchange)")
    p.add_argument("--out-dir", default=None, help="write real.md and real.json here")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="torch device for the models (e.g. cuda)")
    add_projection_option(p, scoring=True)
    add_precision_option(p)
    p.add_argument("--adapt-steps", type=int, default=0, help="research: adapt each model to each merged scan "
                   "first (sr.adapt) with this many steps (default 0: off)")
    p.add_argument("--adapt-lr", type=float, default=None, help="research: --adapt-steps' learning rate")
    p.add_argument("--adapt-distill", type=float, default=0.0, help="research: AdaptSettings.distill")
    args = p.parse_args(argv)
    adapt = None
    if args.adapt_steps:
        adapt = AdaptSettings(steps=args.adapt_steps, distill=args.adapt_distill,
                              **({"learning_rate": args.adapt_lr} if args.adapt_lr else {}))
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
    try:
        models = ({"default": load_model_set(device=args.device)} if args.models == "default"
                  else load_models(args.models, args.device))
    except WeightsError as exc:  # a missing or unreadable weights file
        print(f"real.py: error: {exc}", file=sys.stderr)
        return exitcodes.NOINPUT
    except ValueError as exc:  # the same model twice
        print(f"real.py: error: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    order = {"FLAIR": 0, "T1w": 1, "T2w": 2}
    scans.sort(key=lambda q: (min([v for k, v in order.items() if f"_{k}." in q.name] or [3]), q.name))
    t0 = time.time()
    rows = []
    for q in scans:
        rows.append(evaluate_scan(q, models, args.batch_size, args.device, args.project, args.precision, adapt))
        text = write_results(rows, models, args.out_dir, t0, args.project, args.precision, args.device)
    print(text)
    return exitcodes.OK


def write_results(rows, models, out_dir, t0, projected=True, precision="auto", device="cpu"):
    text = "\n".join(["## Real-scan benchmark (issue 12): adjacent slices merged, originals recovered", "",
                      "Protocol: benchmarks/real.py docstring (pairs of real slices averaged -> 2t/2s; cubic and "
                      "model on the same production SR grid; averaged over the original slabs; compared with the "
                      "real slices in a head mask).", "", markdown(rows, list(models)), "",
                      "Models: " + ", ".join(m.describe() if isinstance(m, ModelSet) else
                                             f"{key} (sha256 {m.sha256[:12]})" for key, m in models.items())
                      + f"; {projection_note(projected)}; {precision_note(precision, device)}; "
                      f"total {time.time() - t0:.0f} s."])
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(text + "\n", out / "real.md")
        payload = {"rows": rows, "models": {k: m.describe() if isinstance(m, ModelSet) else m.sha256
                                            for k, m in models.items()}, "projected": projected,
                   "precision": resolve_precision(precision, device), "seconds": time.time() - t0}
        write_text_atomic(json.dumps(payload, indent=2, default=float) + "\n", out / "real.json")
    return text


if __name__ == "__main__":
    sys.exit(main())
