"""``prettier-eval``: the paper's evaluation (Tables 2 and 3) of a model against cubic interpolation."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

from .. import __version__, exitcodes
from .options import (
    add_batch_size_option,
    CapAtCPUs,
    CLIError,
    UsageParser,
    add_precision_option,
    add_projection_option,
    check_folder,
    error,
    finite_float,
    guarded_main,
    positive_int,
)
from .splits import read_split
from .sr import THICKNESS_RANGE_MM  # simulated slice thickness: the range of prettier-sr's --slice-thickness

#: Simulated slice spacing: a whole number of 1 mm voxels (the truth's rows the SR grid falls on), in the
#: app's range of thick slices (2-8 mm).
SPACING_RANGE_MM = (2, 8)
_thickness = finite_float(*THICKNESS_RANGE_MM)
#: ``--settings``' default: :data:`prettier_bids.evaluation.benchmark.SETTINGS` (issue 25's five spacing:thickness pairs),
#: written out here so that the parser does not import the evaluation stack.
DEFAULT_SETTINGS = "3:3,6:5,5:4,4:3,4:2"


def axes_list(text):
    """``--axes``: comma-separated slice axes, each 0, 1 or 2, no repeats -> a tuple."""
    parts = [a.strip() for a in text.split(",")]
    if not all(a in ("0", "1", "2") for a in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of axes 0, 1, 2")
    if len(set(parts)) != len(parts):
        raise argparse.ArgumentTypeError(f"{text!r} names an axis twice")
    return tuple(int(a) for a in parts)


def settings_list(text):
    """``--settings``: comma-separated ``spacing:thickness`` pairs in mm (spacing a whole number of mm in
    :data:`SPACING_RANGE_MM`, thickness in :data:`THICKNESS_RANGE_MM`) -> a tuple of (float, float)."""
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"{item.strip()!r} is not a spacing:thickness pair (e.g. 6:5)")
        try:
            spacing = float(parts[0])
        except ValueError:
            raise argparse.ArgumentTypeError(f"spacing {parts[0]!r} in {item.strip()!r} is not a number") from None
        low, high = SPACING_RANGE_MM
        if not (math.isfinite(spacing) and spacing == int(spacing) and low <= spacing <= high):
            raise argparse.ArgumentTypeError(f"spacing {parts[0]!r} in {item.strip()!r} must be a whole number of mm "
                                             f"from {low} to {high}")
        try:
            thickness = _thickness(parts[1])
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"thickness in {item.strip()!r}: {exc}") from None
        out.append((spacing, thickness))
    return tuple(out)


def add_simulation_options(parser, settings):
    """``--axes``, ``--settings`` (checked while parsing: exit 64) and ``--thickness``, shared with
    ``prettier-eval lesions``."""
    parser.add_argument("--axes", type=axes_list, default="0,1,2",
                        help="slice axes to simulate, comma-separated (0 sagittal, 1 coronal, 2 axial; default: "
                             "%(default)s)")
    low, high = SPACING_RANGE_MM
    parser.add_argument("--settings", type=settings_list, default=settings,
                        help=f"spacing:thickness pairs in mm, comma-separated; spacing a whole number from {low} to "
                             f"{high} (default: %(default)s)")
    parser.add_argument("--thickness", choices=("known", "hidden", "both"), default="both",
                        help="whether the pipeline is told the simulated slice thickness: known (it is given, as a "
                             "sidecar's SliceThickness would be), hidden (it is not: the pipeline estimates it from "
                             "the image, else assumes it equal to the spacing and skips the projection onto the "
                             "input), or both (default; the tables show a row for each)")


def build_parser():
    p = UsageParser(
        prog="prettier-eval",
        description="Evaluate a model on held-out 1 mm volumes: simulate thick slices along each axis, "
                    "reconstruct with cubic spline and the model, report PSNR/SSIM in a brain mask and patch IQMs.",
        epilog="example: prettier-eval --data-root ../shared/data --out-dir eval/; "
               "lesion benchmark: prettier-eval lesions --help")
    p.add_argument("--data-root", required=True, help="folder the split's file names are relative to")
    p.add_argument("--split", default=None, help="JSON split with a 'test' section (default: the shipped one)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", default=None,
                   help="shipped model name for every contrast (default: each contrast's default model)")
    g.add_argument("--weights", default=None, help="weights file")
    add_simulation_options(p, settings=DEFAULT_SETTINGS)
    p.add_argument("--contrasts", default=None, help="comma-separated subset of the split's test contrasts")
    p.add_argument("--no-patches", action="store_true", help="skip the patch-level table")
    add_projection_option(p, scoring=True)
    add_precision_option(p)
    p.add_argument("--out-dir", default=None, help="write results.json, tables.md and a figure here")
    add_batch_size_option(p)
    p.add_argument("--threads", type=positive_int, action=CapAtCPUs, default=None)
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks of unexpected errors")
    p.add_argument("--version", action="version", version=f"prettier-eval {__version__}")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lesions"]:  # prettier-eval lesions ...: the lesion benchmark (issue 12)
        from .eval_lesions import main as lesions_main

        return lesions_main(argv[1:])
    args = build_parser().parse_args(argv)
    return guarded_main("prettier-eval", lambda: _main(args), verbose=args.verbose)


def _main(args):
    try:  # the split and the output folder, before anything is loaded or created
        test = read_split(args.split, ["test"])["test"]
        if args.contrasts:
            wanted = [c.strip() for c in args.contrasts.split(",") if c.strip()]
            unknown = [c for c in wanted if c not in test]
            if unknown or not wanted:
                raise CLIError(f"argument --contrasts: {', '.join(map(repr, unknown)) or 'none given'}: not in the "
                               f"split's test contrasts ({', '.join(test)})", exitcodes.USAGE)
            test = {k: v for k, v in test.items() if k in wanted}
        if args.out_dir:
            check_folder("--out-dir", args.out_dir, exitcodes.USAGE)  # 73 is not among prettier-eval's codes
    except CLIError as exc:
        return error("prettier-eval", exc, exc.code)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    import torch

    from ..evaluation import benchmark as ev
    from ..sr.consistency import projection_note
    from ..sr.io import write_text_atomic
    from ..sr.models import WeightsError
    from ..training.patches import READ_ERRORS, load_training_volume
    from ..sr.precision import precision_note, resolve_precision
    from ..sr.reconstruct import load_model_set

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        models = load_model_set(args.model, args.weights)  # without either: each contrast's default
    except WeightsError as exc:
        print(f"prettier-eval: error: {exc}", file=sys.stderr)
        return exitcodes.NOINPUT
    axes, settings = args.axes, args.settings
    modes = ev.THICKNESS_MODES if args.thickness == "both" else (args.thickness,)
    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    scores, vols = [], {}
    for contrast, entries in test.items():
        for entry in entries:
            path = Path(args.data_root) / entry["file"]
            if not path.is_file():
                print(f"prettier-eval: error: test volume not found: {path}", file=sys.stderr)
                return exitcodes.NOINPUT
            try:
                vol = load_training_volume(path, name=entry["file"])
            except READ_ERRORS as exc:
                print(f"prettier-eval: error: cannot read test volume {path}: {exc}", file=sys.stderr)
                return exitcodes.NOINPUT
            vols.setdefault(contrast, []).append(vol)
            mask = ev.brain_mask(vol.data, entry.get("skull_stripped", True))
            keep = (2, 6.0) if out_dir else None
            s, example = ev.evaluate_volume(vol.data, mask, entry["file"], contrast, models.for_contrast(contrast),
                                            settings, axes, args.batch_size, keep_example=keep,
                                            project=args.project, precision=args.precision, thickness_modes=modes)
            scores += s
            if example is not None and out_dir:
                ev.save_figure(example, out_dir / f"figure_{Path(entry['file']).name.split('.')[0]}.png",
                               f"{entry['file']} (axial 5/6 mm simulated)")
    table = ev.summarise(scores)
    # the headline (read by benchmarks/ablation.sh) keeps its meaning: thickness known, unless only hidden ran
    head = ev.headline(scores, thickness_given="known" in modes)
    hidden_head = ev.headline(scores, thickness_given=False) if len(modes) > 1 else None
    md = ["## Volumes, brain mask (paper Table 3)", "", ev.markdown_volume_table(table), ""]
    for label, h_all in (("thickness " + ("known" if "known" in modes else "hidden"), head),
                         ("thickness hidden", hidden_head)):
        if h_all is None:
            continue
        md += [f"## Headline: mean over axes and volumes at 5/6 mm, {label}", ""]
        for contrast, h in h_all.items():
            md.append(f"- {contrast}: cubic {h['cubic_psnr']:.2f} dB / {h['cubic_ssim']:.4f} -> model "
                      f"{h['model_psnr']:.2f} dB / {h['model_ssim']:.4f}: gain {h['gain_psnr']:+.2f} dB, "
                      f"SSIM {h['gain_ssim']:+.4f} (n={h['n']})")
        md.append("")
    md.pop()
    patches = None
    if not args.no_patches:
        patches = {}
        for contrast, cvols in vols.items():
            patches.update(ev.evaluate_patches({contrast: cvols}, models.for_contrast(contrast)))
        md += ["", "## Patches, 5/6 mm (paper Table 2; the network's output, never projected)", "",
               ev.markdown_patch_table(patches)]
    used = {c: models.for_contrast(c) for c in test}
    md += ["", "; ".join(f"{c}: model {m.name} sha256 {m.sha256[:12]}" for c, m in used.items())
           + f"; {projection_note(args.project)}; {precision_note(args.precision)}; {time.time() - t0:.0f} s"]
    text = "\n".join(md)
    print(text)
    if out_dir:
        write_text_atomic(text + "\n", out_dir / "tables.md")
        write_text_atomic(json.dumps(
            {"volumes": [s.__dict__ for s in scores], "summary": table, "headline": head,
             **({"headline_hidden": hidden_head} if hidden_head is not None else {}),
             "thickness": args.thickness, "patches": patches,
             "models": {c: {"name": m.name, "sha256": m.sha256} for c, m in used.items()},
             "projected": args.project, "precision": resolve_precision(args.precision)},
            indent=2, default=float), out_dir / "results.json")
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
