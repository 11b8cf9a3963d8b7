"""The simulation options shared by ``prettier-eval`` (:mod:`.evaluate`) and ``prettier-eval lesions``
(:mod:`.eval_lesions`): ``--axes``, ``--settings`` and ``--thickness``, checked while parsing (exit 64).

Imported by both commands and importing neither, so the dependency between them goes one way (``evaluate``
lists and dispatches to ``eval_lesions``).
"""

from __future__ import annotations

import argparse
import math

from .options import finite_float
from .sr import THICKNESS_RANGE_MM  # simulated slice thickness: the range of prettier-sr's --slice-thickness

#: Simulated slice spacing: a whole number of 1 mm voxels (the truth's rows the SR grid falls on), in the
#: app's range of thick slices (2-8 mm).
SPACING_RANGE_MM = (2, 8)
_thickness = finite_float(*THICKNESS_RANGE_MM)
#: ``prettier-eval --settings``' default: :data:`prettier_bids.evaluation.benchmark.SETTINGS` (issue 25's five
#: spacing:thickness pairs), written out here so that the parser does not import the evaluation stack.
DEFAULT_SETTINGS = "3:3,6:5,5:4,4:3,4:2"
#: ``prettier-eval lesions --settings``' default.
LESION_SETTINGS = "6:5"


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
    """``--axes``, ``--settings`` (default ``settings``; checked while parsing: exit 64) and ``--thickness``."""
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
