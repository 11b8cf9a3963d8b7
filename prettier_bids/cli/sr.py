"""``prettier-sr IN.nii.gz OUT.nii.gz``: super-resolve one thick-slice NIfTI image (no BIDS needed)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from .. import __version__, exitcodes
from ..sr.preprocess import MAX_SLICE_MM
from .options import (
    add_adapt_options,
    add_batch_size_option,
    adapt_settings,
    CapAtCPUs,
    CLIError,
    UsageParser,
    add_precision_option,
    add_output_grid_option,
    add_projection_option,
    apply_threads_and_device,
    device,
    not_empty,
    finite_float,
    guarded_main,
    positive_int,
    setup_logging,
)

PROG = "prettier-sr"
#: Thinner than this is not a slice thickness (mm); thicker than this is not a clinical 2D stack.
THICKNESS_RANGE_MM = (0.1, MAX_SLICE_MM)
_thickness_mm = finite_float(*THICKNESS_RANGE_MM, low_inclusive=True, what="a number of mm or 'auto'")


def thickness_or_auto(text):
    """``--slice-thickness``: ``auto`` -> None (the core estimates it from the image, else assumes it equal to
    the spacing and skips the projection onto the input), else a number of mm in :data:`THICKNESS_RANGE_MM`."""
    if text.strip().lower() == "auto":
        return None
    return _thickness_mm(text)


thickness_or_auto.__name__ = "slice thickness"


def build_parser():
    p = UsageParser(
        prog=PROG,
        description="Super-resolve a thick-slice brain MRI (2D FLAIR/T1w, 2-8 mm slices) to ~1 mm isotropic.",
        epilog="examples:\n  prettier-sr sub-01_FLAIR.nii.gz sub-01_desc-prettier_FLAIR.nii.gz\n"
               "  prettier-sr in.nii.gz cubic.nii.gz --method cubic\n"
               "  prettier-sr in.nii.gz out.nii.gz --slice-thickness 5 --json out.json\n\n"
               + exitcodes.epilog(PROG),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=not_empty, help="3D NIfTI image with thick slices")
    p.add_argument("output", type=not_empty,
                   help="output NIfTI (the input's in-plane voxels, ~1 mm rows along the slice axis, the "
                        "same field of view; see --output-grid)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", type=not_empty, default=None,
                   help="name of a shipped model (default: the default model, or the one made for the input's "
                        "contrast, read from its BIDS suffix: prettier-edsr-v3-flair for *_FLAIR.nii[.gz])")
    g.add_argument("--weights", type=not_empty, default=None, help="a weights file (.pt) from prettier-train")
    p.add_argument("--method", choices=("model", "cubic"), default="model",
                   help="model: the network (default); cubic: cubic-spline baseline on the same grid")
    p.add_argument("--slice-thickness", type=thickness_or_auto, default="auto", metavar="MM|auto",
                   help=f"slice thickness in mm ({THICKNESS_RANGE_MM[0]:g}-{THICKNESS_RANGE_MM[1]:g}), or auto "
                        "(default): estimated from the image; when it cannot be estimated confidently (always, "
                        "for now: no estimator is shipped yet) it is assumed equal to the slice spacing and the "
                        "output is not projected onto the input (the sidecar's SliceThicknessSource and "
                        "ProjectionSkipped say so). Used by the consistency check, the projection and conditioned "
                        "models")
    p.add_argument("--slice-profile", choices=("boxcar", "gaussian"), default="boxcar",
                   help="slice profile for the consistency check and projection (default: boxcar)")
    add_projection_option(p)
    add_output_grid_option(p)
    add_precision_option(p)
    p.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda or cuda:N")
    add_batch_size_option(p)
    p.add_argument("--threads", type=positive_int, action=CapAtCPUs, default=None, help="CPU threads (default: all)")
    p.add_argument("--consistency-map", type=not_empty, default=None, metavar="FILE",
                   help="also write the consistency error map (input grid)")
    p.add_argument("--json", type=not_empty, default=None, metavar="FILE",
                   help="write the run's metadata as JSON (- : on stdout)")
    add_adapt_options(p)
    p.add_argument("--force", action="store_true", help="process images that are already high resolution")
    p.add_argument("--strict", action="store_true",
                   help="exit 19 when the output is flagged by QC (it is still written; see QCFlags in --json)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("-v", "--verbose", action="store_true", help="more output (tracebacks of unexpected errors)")
    p.add_argument("--version", action="version", version=f"prettier-sr {__version__}")
    return p


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
    return guarded_main(PROG, lambda: _main(args), verbose=args.verbose)


def _main(args):
    # INFO for this package only: other libraries' INFO records (torch's FakeTensor cache stats at exit after a
    # Ctrl-C) are not this command's output
    setup_logging(PROG, level=logging.WARNING if args.quiet else logging.INFO, package_only=True)
    from ..paths import OutputPathError, check_output_paths
    from ..sr.io import clean_stale_temporaries, image_files, is_nifti_name, missing_companion, missing_content

    inp, out = Path(args.input), Path(args.output)
    json_to_stdout = args.json == "-"  # `--json -`: the sidecar on stdout, no file
    if json_to_stdout:
        args.json = None
        if sys.stdout is None:  # started with stdout closed (`>&-`): the sidecar went nowhere, exit 0
            raise CLIError("--json -: standard output is closed, so the sidecar would be lost: give a file name, or "
                           "run with stdout open", exitcodes.USAGE)
    adapt = adapt_settings(args, args.method)
    if args.method == "cubic" and (args.weights or args.model):
        raise CLIError("--weights and --model choose the network: they do not apply to --method cubic",
                       exitcodes.USAGE)
    broken = next(filter(None, map(missing_content, image_files(inp))), None)  # a NIfTI pair's two halves too
    if broken:
        raise CLIError(broken, exitcodes.NOINPUT)
    if not inp.is_file():
        raise CLIError(f"input file not found: {inp}", exitcodes.NOINPUT)
    half = missing_companion(inp)
    if half:
        raise CLIError(f"input file not found: {half} beside {inp} (a NIfTI pair needs both files)", exitcodes.NOINPUT)
    if not is_nifti_name(out):
        raise CLIError(f"output must be a file name ending in .nii or .nii.gz: {out}", exitcodes.USAGE)
    if args.consistency_map is not None and not is_nifti_name(args.consistency_map):
        raise CLIError(f"--consistency-map must be a file name ending in .nii or .nii.gz: {args.consistency_map}",
                       exitcodes.USAGE)
    outputs = [out, args.consistency_map, args.json]
    labelled = [("output", out), ("--consistency-map", args.consistency_map), ("--json", args.json)]
    # the inputs no output may replace: the image (both files of a .hdr/.img pair) and a --weights file
    inputs = image_files(inp) + ([Path(args.weights)] if args.weights else [])
    try:  # every output location is checked before any work (and none may be an input)
        check_output_paths(inputs, labelled)
    except OutputPathError as exc:
        raise CLIError(str(exc), exc.code) from None
    for path in (Path(o) for o in outputs if o is not None):  # temporaries of killed earlier runs
        clean_stale_temporaries(path.parent if str(path.parent) else Path("."), names=[path.name], keep=inputs)

    from ..sr.io import AtomicGroup, is_disk_full, suffix_of
    from ..sr.models import WeightsError, default_model
    from ..sr.preprocess import AlreadyHighResolution, InputError, load_nifti
    from ..sr.reconstruct import load_model, super_resolve

    apply_threads_and_device(args)
    try:
        img = load_nifti(inp)
    except InputError as exc:
        raise CLIError(f"{inp}: {exc}", exitcodes.DATAERR) from None
    except Exception as exc:  # nibabel raises many types for non-NIfTI input
        raise CLIError(f"cannot read {inp} as NIfTI ({exc.__class__.__name__})", exitcodes.DATAERR) from None
    model = None
    if args.method == "model":
        name = args.model or (None if args.weights else default_model(suffix_of(inp)))
        try:
            model = load_model(name, args.weights, device=args.device)
        except WeightsError as exc:
            raise CLIError(str(exc), exitcodes.NOINPUT) from None
    t0 = time.time()
    try:
        res = super_resolve(img, model=model, method=args.method, slice_thickness=args.slice_thickness,
                            thickness_source="option",
                            profile=args.slice_profile, force=args.force, device=args.device,
                            batch_size=args.batch_size, progress=Progress(args.quiet), project=args.project,
                            precision=args.precision, output_grid=args.output_grid, adapt=adapt)
    except AlreadyHighResolution as exc:
        raise CLIError(f"{inp}: {exc} (use --force to process it anyway)", exitcodes.DATAERR) from None
    except InputError as exc:
        raise CLIError(f"{inp}: {exc}", exitcodes.DATAERR) from None
    except WeightsError as exc:  # the network's output was not finite
        raise CLIError(str(exc), exitcodes.NOINPUT) from None
    info = res.info
    for warning in info.get("HeaderWarnings", []):
        print(f"{PROG}: warning: {inp}: {warning}", file=sys.stderr)
    try:  # all or nothing: no output is renamed into place until every one is complete
        with AtomicGroup() as group:
            group.nifti(res.image, out)
            if args.consistency_map:
                group.nifti(res.consistency_map, args.consistency_map)
            if args.json:
                group.text(json.dumps(res.sidecar(), indent=2) + "\n", args.json)
    except OSError as exc:
        why = "disk full" if is_disk_full(exc) else (exc.strerror or str(exc))
        raise CLIError(f"cannot write output: {why} ({getattr(exc, 'filename', None) or out}); nothing was written",
                       exitcodes.CANTCREAT) from None
    if json_to_stdout:
        try:
            print(json.dumps(res.sidecar(), indent=2), flush=True)
        except BrokenPipeError:  # the reader left (`| head`): the outputs are written; nothing more to say there
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if not args.quiet:
        print(f"{PROG}: wrote {out} ({'x'.join(map(str, info['OutputShape']))} voxels of "
              f"{'x'.join(f'{z:.2f}' for z in info['OutputVoxelSize'])} mm) in {time.time() - t0:.1f} s"
              f"{f' with {model.name}' if model is not None else ''}; "
              f"consistency PSNR {info['ConsistencyPSNR']:.1f} dB", file=sys.stderr)
    for flag in info.get("QCFlags", []):
        print(f"{PROG}: warning: QC: {out}: {flag}", file=sys.stderr)
    if info.get("QCFlags") and args.strict:
        return exitcodes.QC_FLAGGED
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
