"""Speed benchmark: wall time and peak RSS per clinical volume, default model vs paper EDSR vs cubic.

    python benchmarks/speed.py [--threads 2] [--shape 256 256 24] [--zooms 0.9 0.9 6] [--precision auto]

A method may name its output grid after ``#`` (``default#1mm``, ``cubic#native``; otherwise ``--output-grid``,
default ``native``) and its network arithmetic after ``@`` (``default@fp32``, ``model:NAME#1mm@bf16``) to compare
them in one run; otherwise ``--precision`` (default ``auto``, what prettier-sr and prettier-bids run: bf16 where the
CPU computes it natively, else fp32) applies. The table gives the arithmetic that ran.

Each method runs in its own subprocess (so peak RSS is its own). The default model is the shipped
weights when installed (else the same architecture, randomly initialised: speed does not depend on
the weights). The paper EDSR (32 blocks x 256 features, ~43 M parameters) is timed on a few windows
and extrapolated to the whole volume. The synthetic volume's slice thickness is not given, so ``super_resolve``
asks its estimator; the "thickness estimate" column is that part of the wall time (issue 25: at most 3 s).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from prettier_bids.sr.precision import PRECISIONS


def synthetic_clinical(shape, zooms, seed=0):
    import nibabel as nib
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    data = ndimage.gaussian_filter(rng.random(shape).astype(np.float32), (3, 3, 0.7)) * 3000
    return nib.Nifti1Image(data.astype(np.int16), np.diag(list(zooms) + [1.0]))


def run_one(method, shape, zooms, threads, batch_size, paper_windows, precision="auto", grid="native"):
    import torch

    from prettier_bids.sr.models import build_model
    from prettier_bids.sr.precision import resolve_precision
    from prettier_bids.sr.reconstruct import LoadedModel, load_model, prepare_for_inference, super_resolve, sweep

    torch.set_num_threads(threads)
    img = synthetic_clinical(shape, zooms)
    out = {"method": method}
    method, _, named = method.partition("@")
    precision = named or precision
    method, _, named_grid = method.partition("#")
    out["grid"] = grid = named_grid or grid
    out["precision"] = resolve_precision(precision) if method != "cubic" else "fp32"
    t0 = time.time()
    if method == "cubic":
        res = super_resolve(img, method="cubic", output_grid=grid)
        out["seconds"] = time.time() - t0
        out["output_shape"] = res.info["OutputShape"]
        out["thickness_seconds"] = res.info.get("ThicknessEstimationSeconds")
    elif method == "default" or method.startswith("model:"):
        name = method.split(":", 1)[1] if ":" in method else None
        try:
            model = load_model(name)
            out["weights"] = f"shipped {model.name}"
        except Exception:
            if name:
                raise
            net = prepare_for_inference(build_model("edsr-compact")[0])
            model = LoadedModel(net, "edsr-compact (random init)", "", "")
            out["weights"] = "random init (no shipped weights)"
        t0 = time.time()
        res = super_resolve(img, model=model, batch_size=batch_size, precision=precision, output_grid=grid)
        out["seconds"] = time.time() - t0
        out["output_shape"] = res.info["OutputShape"]
        out["thickness_seconds"] = res.info.get("ThicknessEstimationSeconds")
    elif method == "paper":
        model = prepare_for_inference(build_model("edsr-paper")[0])
        axis = int(np.argmax(zooms))
        factor = int(round(zooms[axis]))
        n_windows = sum(shape[a] - 2 for a in range(3) if a != axis)
        planes = np.random.default_rng(0).random((paper_windows + 2, shape[axis], shape[1])).astype(np.float32)
        sweep(planes[:3], model, factor, batch_size=1, precision=precision)  # warm-up
        t0 = time.time()
        sweep(planes, model, factor, batch_size=min(batch_size, paper_windows), precision=precision)
        per_window = (time.time() - t0) / paper_windows
        out["seconds"] = per_window * n_windows
        out["extrapolated_from_windows"] = paper_windows
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=[256, 256, 24])
    p.add_argument("--zooms", type=float, nargs=3, default=[0.9, 0.9, 6.0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--paper-windows", type=int, default=6)
    p.add_argument("--methods", default="cubic,default,model:prettier-edsr-v1,paper",
                   help="comma-separated: cubic, default, model:NAME (a shipped model), paper")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="the network's arithmetic for methods without @PRECISION (default: auto, as shipped)")
    p.add_argument("--output-grid", choices=("native", "1mm"), default="native",
                   help="the output grid for methods without #GRID (default: native, as shipped)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.shape, args.zooms, args.threads, args.batch_size, args.paper_windows,
                                 args.precision, args.output_grid)))
        return 0
    rows = []
    for method in args.methods.split(","):
        cmd = [sys.executable, __file__, "--one", method, "--shape", *map(str, args.shape), "--zooms",
               *map(str, args.zooms), "--threads", str(args.threads), "--batch-size", str(args.batch_size),
               "--paper-windows", str(args.paper_windows), "--precision", args.precision,
               "--output-grid", args.output_grid]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    geom = f"{'x'.join(map(str, args.shape))} at {'x'.join(f'{z:g}' for z in args.zooms)} mm"
    print(f"## Speed per clinical volume ({geom}), {args.threads} threads\n")
    print("| method | grid | arithmetic | wall time (s) | of which thickness estimate (s) | peak RSS (MB) | output shape "
          "| notes |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        note = r.get("weights", "") or (f"extrapolated from {r['extrapolated_from_windows']} windows"
                                         if "extrapolated_from_windows" in r else "")
        shape = "x".join(map(str, r.get("output_shape", []))) or "n/a"
        est = r.get("thickness_seconds")
        print(f"| {r['method']} | {r.get('grid', 'n/a')} | {r['precision']} | {r['seconds']:.1f} | "
              f"{'n/a' if est is None else format(est, '.2f')} | "
              f"{r['peak_rss_mb']:.0f} | {shape} | {note} |")
    by = {r["method"]: r for r in rows}
    if "default" in by and "paper" in by:
        print(f"\npaper EDSR / default: {by['paper']['seconds'] / by['default']['seconds']:.1f}x slower")
    return 0


if __name__ == "__main__":
    sys.exit(main())
