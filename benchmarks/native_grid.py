"""Native-grid benchmark (issue 26): does the stored output reproduce the scan the user gave?

    python benchmarks/native_grid.py --data-root ../shared/data --out-dir benchmarks/results

Per scan in DATA_ROOT/thick (``*_lesionchange`` skipped), for each output grid (``1mm``: the outputs of earlier versions;
``native``: the default), ``super_resolve`` runs with the contrast's default model in its own subprocess (wall
time and peak RSS are its own), and the output is written to a temporary file. Then, independently of the
package's forward model:

1. the output file is read back and put through the scan's acquisition: for every voxel of the scan, the output
   is averaged over the slab of the slice thickness (the spacing: the headers carry no thickness) centred on
   that voxel along the slice axis (midpoint rule, 16 points per output row the slab spans, each taking the row
   it falls in: the output voxels are boxes; points beyond the output's first or last row are left out, as for
   the last slab of an even factor, whose outermost half row the output does not store), then sampled at the
   scan's in-plane voxel centres (cubic spline, along the slice axis too, at whole slices; on the native grid
   these are the output's own voxels). Positions come from the two files' affines only;
2. it is compared with the scan inside a head mask (``consistency.head_mask``, the sidecar's mask: intensity
   above 0.1 of the scan's 99.5th foreground percentile, holes filled slice by slice, largest component): PSNR
   with that percentile as peak;
3. the table gives this PSNR, the sidecar's ``ConsistencyPSNR`` (which must agree within 1 dB) and
   ``NetworkConsistencyPSNR``, the output voxel size, time and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from prettier_bids.sr.consistency import head_mask
from prettier_bids.sr.io import write_text_atomic
from prettier_bids.sr.preprocess import OUTPUT_GRIDS, find_slice_axis, intensity_scale, voxel_sizes

#: Points of the midpoint rule per output row spanned by a slab.
SUBSAMPLES_PER_ROW = 16


def run_one(scan, grid, out_file, threads):
    """Child process: super-resolve ``scan`` onto ``grid``, write it, print the sidecar, time and peak RSS."""
    import resource

    import torch

    from prettier_bids.naming import suffix_of
    from prettier_bids.sr.reconstruct import load_model_set, super_resolve

    torch.set_num_threads(threads)
    contrast = suffix_of(scan)
    model = load_model_set(contrasts=[contrast]).for_contrast(contrast)
    t0 = time.time()
    res = super_resolve(nib.load(scan), model, output_grid=grid)
    seconds = time.time() - t0
    nib.save(res.image, out_file)
    print(json.dumps({"info": res.info, "seconds": seconds, "model": model.name,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def reacquire(out_img, scan_img, axis, thickness):
    """The output put back through the scan's acquisition, on the scan's voxels (module docstring, step 1).

    The two grids share their voxel axes (the index map between them is diagonal), so the slab average is done
    along the slice axis first (a matrix of midpoint-rule counts), then the in-plane sampling, once."""
    out = np.asarray(out_img.dataobj, dtype=np.float32)
    to_out = np.linalg.inv(out_img.affine) @ scan_img.affine  # scan voxel index -> output voxel index
    lin = to_out[:3, :3]
    if np.abs(lin - np.diag(np.diag(lin))).max() > 1e-6:
        raise ValueError("the output's voxel axes are not the scan's")
    shape = scan_img.shape[:3]
    # 1. slab average along the slice axis: scan slice k is centred on output row c_k
    centres = to_out[axis, axis] * np.arange(shape[axis]) + to_out[axis, 3]
    half = 0.5 * thickness / float(voxel_sizes(out_img.affine)[axis])  # in output rows
    n = SUBSAMPLES_PER_ROW * max(1, int(round(2 * half)))
    counts = np.zeros((shape[axis], out.shape[axis]))
    for u in (np.arange(n) + 0.5) / n * 2 - 1:
        rows = np.rint(centres + u * half).astype(int)  # the box each point falls in
        inside = (rows >= 0) & (rows < out.shape[axis])  # points beyond the output are left out
        counts[np.flatnonzero(inside), rows[inside]] += 1
    w = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    slabs = np.moveaxis(np.tensordot(w, np.moveaxis(out, axis, 0), axes=(1, 0)), 0, axis).astype(np.float32)
    # 2. in-plane: the scan's voxel centres (cubic spline; on the native grid the output's own voxels)
    pos = [np.arange(shape[a], dtype=np.float64) if a == axis else to_out[a, a] * np.arange(shape[a]) + to_out[a, 3]
           for a in range(3)]
    if all(np.allclose(p, np.round(p), atol=1e-6) for p in pos):
        return slabs[np.ix_(*[np.round(p).astype(int) for p in pos])]
    grid = np.stack(np.meshgrid(*pos, indexing="ij"), axis=0)
    return ndimage.map_coordinates(slabs, grid.reshape(3, -1), order=3, mode="nearest").reshape(shape)


def measure(out_file, scan):
    scan_img = nib.load(scan)
    data = np.asarray(scan_img.dataobj, dtype=np.float32)
    zooms = voxel_sizes(scan_img.affine)
    axis = find_slice_axis(zooms)
    peak = intensity_scale(data)
    mask = head_mask(data / peak, axis)
    again = reacquire(nib.load(out_file), scan_img, axis, float(zooms[axis]))
    mse = float(np.mean(((again - data)[mask] / peak).astype(np.float64) ** 2))
    return 10 * np.log10(1.0 / mse)


def markdown(rows):
    lines = ["| scan | in-plane (mm) | s (mm) | grid | output voxel (mm) | output shape | measured PSNR (dB) | "
             "sidecar ConsistencyPSNR | difference | NetworkConsistencyPSNR | time (s) | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        i = r["info"]
        lines.append(f"| {r['scan']} | {i['InputVoxelSize'][0]:.2f} x {i['InputVoxelSize'][1]:.2f} "
                     f"| {i['SliceSpacing']:g} | {r['grid']} | {' x '.join(f'{z:.3g}' for z in i['OutputVoxelSize'])} "
                     f"| {'x'.join(map(str, i['OutputShape']))} | {r['measured_psnr']:.2f} "
                     f"| {i['ConsistencyPSNR']:.2f} | {i['ConsistencyPSNR'] - r['measured_psnr']:+.2f} "
                     f"| {i['NetworkConsistencyPSNR']:.2f} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def summary(rows):
    out = []
    for grid in OUTPUT_GRIDS:
        sel = [r for r in rows if r["grid"] == grid]
        if not sel:
            continue
        m = [r["measured_psnr"] for r in sel]
        d = [abs(r["info"]["ConsistencyPSNR"] - r["measured_psnr"]) for r in sel]
        n = [r["info"]["NetworkConsistencyPSNR"] for r in sel]
        out.append(f"- {grid} (n={len(sel)}): measured PSNR min {min(m):.2f}, max {max(m):.2f} dB; |sidecar - "
                   f"measured| max {max(d):.2f} dB; NetworkConsistencyPSNR min {min(n):.2f}, max {max(n):.2f} dB")
    fine = {r["scan"]: r for r in rows if r["grid"] == "native" and min(r["info"]["InputVoxelSize"][:3]) < 0.8}
    ratios = [fine[s]["seconds"] / r["seconds"] for s, r in ((r["scan"], r) for r in rows if r["grid"] == "1mm")
              if s in fine]
    if ratios:
        out.append(f"- time native / 1mm on the scans finer than 0.8 mm in-plane (n={len(ratios)}): "
                   f"mean {np.mean(ratios):.2f}x, max {max(ratios):.2f}x")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", help="folder holding thick/")
    p.add_argument("--scans", default=None, help="comma-separated file names in thick/ (default: all)")
    p.add_argument("--grids", default=",".join(OUTPUT_GRIDS))
    p.add_argument("--out-dir", default=None, help="write native-grid.md and .json here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--one", nargs=3, metavar=("SCAN", "GRID", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        run_one(*args.one, args.threads)
        return 0
    thick = Path(args.data_root) / "thick"
    scans = ([thick / s for s in args.scans.split(",")] if args.scans
             else sorted(q for q in thick.glob("*.nii*") if "lesionchange" not in q.name))
    rows = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for scan in scans:
            for grid in args.grids.split(","):
                out = Path(tmp) / f"{grid}.nii.gz"
                proc = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--one", str(scan),
                                       grid, str(out)], capture_output=True, text=True, check=True)
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row.update(scan=scan.name, grid=grid, measured_psnr=measure(out, scan))
                rows.append(row)
                print(f"{scan.name} {grid}: measured {row['measured_psnr']:.2f} dB, sidecar "
                      f"{row['info']['ConsistencyPSNR']:.2f} dB, {row['seconds']:.1f} s", file=sys.stderr, flush=True)
                text = "\n\n".join(["## Native grid (issue 26): the stored output put back through the scan's "
                                    "acquisition", "Protocol: benchmarks/native_grid.py docstring; "
                                    f"{args.threads} threads; total {time.time() - t0:.0f} s.",
                                    markdown(rows), summary(rows)])
                if args.out_dir:
                    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
                    write_text_atomic(text + "\n", Path(args.out_dir) / "native-grid.md")
                    write_text_atomic(json.dumps(rows, indent=1, default=float) + "\n",
                                      Path(args.out_dir) / "native-grid.json")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
