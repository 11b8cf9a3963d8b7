"""``prettier-sr IN.nii.gz OUT.nii.gz``: super-resolve one thick-slice NIfTI image (no BIDS needed)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from .. import __version__

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_DATAERR, EXIT_NOINPUT, EXIT_CANTCREAT = 0, 1, 64, 65, 66, 73


def build_parser():
    p = argparse.ArgumentParser(
        prog="prettier-sr",
        description="Super-resolve a thick-slice brain MRI (2D FLAIR/T1w, 2-8 mm slices) to ~1 mm isotropic.",
        epilog="examples:\n  prettier-sr sub-01_FLAIR.nii.gz sub-01_desc-prettier_FLAIR.nii.gz\n"
               "  prettier-sr in.nii.gz cubic.nii.gz --method cubic\n"
               "  prettier-sr in.nii.gz out.nii.gz --slice-thickness 5 --json out.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="3D NIfTI image with thick slices")
    p.add_argument("output", help="output NIfTI (~1 mm grid over the same field of view)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", default=None, help="name of a shipped model (default: the default model)")
    g.add_argument("--weights", default=None, help="a weights file (.pt) from prettier-train")
    p.add_argument("--method", choices=("model", "cubic"), default="model",
                   help="model: the network (default); cubic: cubic-spline baseline on the same grid")
    p.add_argument("--slice-thickness", type=float, default=None, metavar="MM",
                   help="slice thickness in mm (default: equal to the slice spacing, i.e. no gap)")
    p.add_argument("--slice-profile", choices=("boxcar", "gaussian"), default="boxcar")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (memory vs speed)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--consistency-map", default=None, metavar="FILE",
                   help="also write the consistency error map (input grid)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the run's metadata as JSON")
    p.add_argument("--force", action="store_true", help="process images that are already high resolution")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--version", action="version", version=f"prettier-sr {__version__}")
    return p


def _error(msg, code):
    print(f"prettier-sr: error: {msg}", file=sys.stderr)
    return code


class Progress:
    def __init__(self, quiet):
        self.quiet, self.last, self.t0 = quiet, -1, time.time()

    def __call__(self, frac):
        pct = int(frac * 100)
        if not self.quiet and pct >= self.last + 10:
            self.last = pct - pct % 10
            print(f"prettier-sr: {pct:3d}% ({time.time() - self.t0:.0f} s)", file=sys.stderr)


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="prettier-sr: %(message)s",
                        stream=sys.stderr)
    inp, out = Path(args.input), Path(args.output)
    if not inp.is_file():
        return _error(f"input file not found: {inp}", EXIT_NOINPUT)
    if not (out.name.endswith(".nii") or out.name.endswith(".nii.gz")):
        return _error(f"output must end in .nii or .nii.gz: {out}", EXIT_USAGE)
    out_dir = out.parent if str(out.parent) else Path(".")
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK):
        return _error(f"cannot write to output folder {out_dir}", EXIT_CANTCREAT)
    if args.batch_size < 1:
        return _error("--batch-size must be >= 1", EXIT_USAGE)

    import nibabel as nib
    import torch

    from ..sr.models import WeightsError
    from ..sr.io import save_nifti_atomic, write_text_atomic
    from ..sr.preprocess import AlreadyHighResolution, InputError
    from ..sr.reconstruct import load_model, super_resolve

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        return _error("--device cuda requested but no CUDA device is available", EXIT_USAGE)
    try:
        img = nib.load(str(inp))
    except Exception as exc:  # nibabel raises many types for non-NIfTI input
        return _error(f"cannot read {inp} as NIfTI ({exc.__class__.__name__})", EXIT_DATAERR)
    model = None
    if args.method == "model":
        try:
            model = load_model(args.model, args.weights, device=args.device)
        except WeightsError as exc:
            return _error(str(exc), EXIT_NOINPUT)
    t0 = time.time()
    try:
        res = super_resolve(img, model=model, method=args.method, slice_thickness=args.slice_thickness,
                            profile=args.slice_profile, force=args.force, device=args.device,
                            batch_size=args.batch_size, progress=Progress(args.quiet))
    except AlreadyHighResolution as exc:
        return _error(f"{inp}: {exc} (use --force to process it anyway)", EXIT_DATAERR)
    except InputError as exc:
        return _error(f"{inp}: {exc}", EXIT_DATAERR)
    try:
        save_nifti_atomic(res.image, out)
        if args.consistency_map:
            save_nifti_atomic(res.consistency_map, args.consistency_map)
        if args.json:
            write_text_atomic(json.dumps(res.sidecar(), indent=2) + "\n", args.json)
    except OSError as exc:
        return _error(f"cannot write output: {exc}", EXIT_CANTCREAT)
    info = res.info
    if not args.quiet:
        print(f"prettier-sr: wrote {out} ({'x'.join(map(str, info['OutputShape']))} voxels of "
              f"{'x'.join(f'{z:.2f}' for z in info['OutputVoxelSize'])} mm) in {time.time() - t0:.1f} s; "
              f"consistency PSNR {info['ConsistencyPSNR']:.1f} dB", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
