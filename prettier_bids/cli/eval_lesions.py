"""``prettier-eval lesions``: does super-resolution keep MS lesions? (issue 12; ``benchmarks/lesions.py``)

Protocol, per test FLAIR that has a consensus lesion mask (default: the split's test FLAIRs that its
``lesion_masks`` names a mask for; in the shipped split, the held-out subject p19):

1. The 1 mm FLAIR is scaled as in training (foreground 99.5th percentile = 1); brain mask as in
   ``prettier-eval`` (foreground, closed, filled).
2. Thick slices are simulated along each axis (default 5 mm slices every 6 mm; ``--settings``
   adds 4/4 and 3/3) with :func:`prettier_bids.evaluation.benchmark.simulate_case`, reconstructed with
   cubic and each model through ``super_resolve`` (:func:`prettier_bids.evaluation.benchmark.reconstruct_case`;
   model outputs projected onto the input, as by default, unless ``--no-consistency-projection``),
   and compared with the truth over the rows the SR grid covers. ``--thickness`` (default ``both``): each model
   runs told the simulated thickness (``known``) and not told it (``hidden``: the core estimates it from the
   image, row ``MODEL (thickness hidden)``), as ``prettier-eval`` does (issue 25).
3. Metrics (:mod:`prettier_bids.evaluation.lesions`): lesion-region PSNR (mask dilated by 1 voxel),
   median per-lesion contrast kept (lesions >= 10 voxels, 2-voxel ring of brain, other lesions
   excluded), the fixed simple segmentation (brain z-score > 1.6, brain eroded by 3 voxels,
   components >= 10 voxels) applied identically to truth and reconstructions: Dice, lesion-wise
   sensitivity and precision against the consensus mask, and the volume it marks in a
   reconstruction more than 1 voxel away from what it marks in the truth (invented, ml).
   Rows are means over the axes. Real lesions only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from .. import exitcodes
from ..sr.consistency import projection_note
from ..sr.io import write_text_atomic
from ..sr.precision import BATCH_SIZE
from .eval_options import LESION_SETTINGS, add_simulation_options
from .options import (
    add_batch_size_option,
    CapAtCPUs,
    CLIError,
    UsageParser,
    add_precision_option,
    add_projection_option,
    apply_threads_and_device,
    check_folder,
    check_folder_outputs,
    device,
    guarded_main,
    not_empty,
    not_empty_list,
    positive_int,
    setup_logging,
)
from .splits import default_split, read_split

#: The sub-command's name under ``prettier-eval`` (:mod:`.evaluate` lists it in its ``--help``).
NAME = "lesions"
PROG = "prettier-eval lesions"
#: Its line in ``prettier-eval --help``.
SUMMARY = "the lesion benchmark: do the models keep MS lesions? (FLAIR with a consensus lesion mask)"
LOGGER = logging.getLogger("prettier_bids.eval")

#: The method label of a model run without being told the simulated slice thickness.
HIDDEN_LABEL = "{} (thickness hidden)"
KEYS = ("lesion_psnr", "contrast_kept_median", "dice", "sensitivity", "precision", "invented_ml", "volume_ml",
        "n_found")


def build_parser(subparsers=None):
    """The parser of ``prettier-eval lesions``: its own (``subparsers`` None), or added to ``subparsers`` (those of
    ``prettier-eval``'s parser, :func:`prettier_bids.cli.evaluate.build_parser`); either way ``args.run`` is
    :func:`run`."""
    make = UsageParser if subparsers is None else lambda **kw: subparsers.add_parser(NAME, help=SUMMARY, **kw)
    p = make(
        prog=PROG,
        description="Lesion benchmark: simulate thick FLAIR slices of a test subject with a consensus lesion mask, "
                    "reconstruct with cubic and each model, report lesion PSNR, contrast kept, a simple "
                    "segmentation's Dice / lesion-wise sensitivity / precision, and invented hyperintense volume.",
        epilog="example: prettier-eval lesions --data-root ../shared/data --out-dir benchmarks/results")
    p.add_argument("--data-root", type=not_empty, required=True, help="folder the case paths are relative to")
    p.add_argument("--case", action="append", default=None, metavar="FLAIR:LESIONS",
                   help="FLAIR and lesion mask, relative to --data-root, repeatable (default: each test FLAIR of "
                        "--split with a mask in its lesion_masks)")
    p.add_argument("--split", type=not_empty, default=None,
                   help="JSON split whose test FLAIRs and lesion_masks give the default cases (default: the "
                        "shipped prettier_bids/data/splits.json)")
    p.add_argument("--models", type=not_empty_list, default=None,
                   help="comma-separated shipped model names or weights files (default: the model prettier-sr and "
                        "prettier-bids use for FLAIR)")
    add_simulation_options(p, settings=LESION_SETTINGS)
    p.add_argument("--out-dir", type=not_empty, default=None, help="write lesions.md and lesions.json here")
    add_projection_option(p, scoring=True)
    add_precision_option(p)
    add_batch_size_option(p)
    p.add_argument("--threads", type=positive_int, action=CapAtCPUs, default=None)
    p.add_argument("--device", type=device, default="cpu", help="torch device for the models (e.g. cuda)")
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks of unexpected errors")
    p.set_defaults(run=run)
    return p


def _finite(obj):
    """NaN / inf -> None, so the JSON is strict (no NaN literals)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def evaluate_case(vol, lesions, brain, models, axes, settings, batch_size=BATCH_SIZE, name="", device="cpu", project=True,
                  precision="auto", thickness_modes=("known",)):
    """Rows of per-axis metrics for the truth, cubic and each model; each model runs once per thickness mode
    (``known``: told the simulated thickness; ``hidden``: not told, the core estimates it, labelled
    :data:`HIDDEN_LABEL`)."""
    from ..evaluation import lesions as L
    from ..evaluation.benchmark import AXIS_NAMES, reconstruct_case, simulate_case

    rows = []
    for spacing, thickness in settings:
        for axis in axes:
            _, img, idx = simulate_case(vol, axis, spacing, thickness)
            runs = [("cubic", None, thickness)]
            for label, model in models.items():
                runs += [(label if mode == "known" else HIDDEN_LABEL.format(label), model,
                          thickness if mode == "known" else None) for mode in thickness_modes]
            outs, secs = {}, {}
            for label, model, given in runs:
                t0 = time.time()
                outs[label], _ = reconstruct_case(img, axis, len(idx), model, given, batch_size, device, project,
                                                  precision)
                secs[label] = time.time() - t0
            n = min(o.shape[axis] for o in outs.values())
            take = lambda a: np.take(a, idx[:n], axis=axis)  # noqa: E731
            ref, les, br = take(vol), take(lesions), take(brain)
            rings = L.lesion_rings(les, br)
            seg_truth = L.simple_segmentation(ref, br)
            truth = L.segmentation_scores(seg_truth, les)
            rows.append({"case": name, "axis": AXIS_NAMES[axis], "spacing": spacing, "thickness": thickness,
                         "method": "truth (1 mm)", "lesion_psnr": float("nan"), "contrast_kept_median": 1.0,
                         "n_contrast_lesions": len(rings), "invented_ml": 0.0, "seconds": 0.0, **truth})
            for label, out in outs.items():
                out = np.take(out, np.arange(n), axis=axis)
                r = L.lesion_report(out, ref, les, br, seg_truth=seg_truth, rings=rings)
                rows.append({"case": name, "axis": AXIS_NAMES[axis], "spacing": spacing, "thickness": thickness,
                             "method": label, "seconds": secs[label], **r})
                LOGGER.info("%s %s s/t=%g/%g %s: lesion PSNR %.2f, contrast kept %.3f, Dice %.3f, sens %.3f, "
                            "prec %.3f, invented %.2f ml (%.0f s)", name, AXIS_NAMES[axis], spacing, thickness,
                            label, r["lesion_psnr"], r["contrast_kept_median"], r["dice"], r["sensitivity"],
                            r["precision"], r["invented_ml"], secs[label])
    return rows


def summarise(rows):
    """Mean over axes (and cases) per (setting, method), in first-seen method order."""
    groups = {}
    for r in rows:
        groups.setdefault((r["spacing"], r["thickness"], r["method"]), []).append(r)
    table = []
    for (s, t, m), rs in groups.items():
        row = {"spacing": s, "thickness": t, "method": m, "n": len(rs)}
        for k in KEYS + ("seconds",):
            vals = [x[k] for x in rs if np.isfinite(x[k])]
            row[k] = float(np.mean(vals)) if vals else float("nan")
        table.append(row)
    return table


def markdown(table):
    lines = ["| s / t (mm) | method | n | lesion PSNR (dB) | contrast kept (median) | Dice | lesion sensitivity "
             "| lesion precision | segmented (ml) | invented (ml) | s / volume |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, f: "n/a" if not np.isfinite(v) else format(v, f)  # noqa: E731
    for r in table:
        lines.append(f"| {r['spacing']:g} / {r['thickness']:g} | {r['method']} | {r['n']} | "
                     f"{fmt(r['lesion_psnr'], '.2f')} | {fmt(r['contrast_kept_median'], '.3f')} | "
                     f"{fmt(r['dice'], '.3f')} | {fmt(r['sensitivity'], '.3f')} | {fmt(r['precision'], '.3f')} | "
                     f"{fmt(r['volume_ml'], '.2f')} | {fmt(r['invented_ml'], '.2f')} | {fmt(r['seconds'], '.0f')} |")
    return "\n".join(lines)


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run(args)


def default_cases(split_path):
    """``FLAIR:LESIONS`` of every test FLAIR of the split that its ``lesion_masks`` gives a mask (CLIError if none)."""
    split = read_split(split_path, ["test"])
    masks = split.get("lesion_masks") or {}
    cases = [f"{e['file']}:{masks[e['file']]}" for e in split["test"].get("FLAIR", []) if e["file"] in masks]
    if not cases:
        raise CLIError(f"--split {split_path or default_split()} names no test FLAIR with a lesion mask "
                       "(lesion_masks); give --case FLAIR:LESIONS", exitcodes.USAGE)
    return cases


def run(args):
    """The benchmark on arguments parsed by either parser of :func:`build_parser` (``prettier-eval lesions ...``
    comes here from :func:`prettier_bids.cli.evaluate.main`, through ``args.run``)."""
    return guarded_main(PROG, lambda: _main(args), verbose=args.verbose)


def _main(args):
    if args.out_dir:  # before any work (it failed after the whole benchmark, exit 1 FileExistsError)
        check_folder("--out-dir", args.out_dir, exitcodes.USAGE)
        check_folder_outputs("--out-dir", args.out_dir, ("lesions.md", "lesions.json"),
                             [args.split, *(args.models or [])])
    setup_logging(PROG, timestamps=True)
    from ..evaluation import lesions as L
    from ..evaluation import spent
    from ..evaluation.benchmark import brain_mask
    from ..sr.models import WeightsError, default_model
    from ..sr.precision import precision_note, resolve_precision
    from ..sr.preprocess import load_nifti
    from ..sr.reconstruct import load_models
    from ..training.patches import READ_ERRORS, load_training_volume

    apply_threads_and_device(args)
    axes, settings = args.axes, args.settings
    modes = ("known", "hidden") if args.thickness == "both" else (args.thickness,)
    try:
        models = load_models(args.models or default_model("FLAIR"), args.device)
    except WeightsError as exc:
        raise CLIError(str(exc), exitcodes.NOINPUT) from None
    except ValueError as exc:  # the same model twice
        raise CLIError(str(exc), exitcodes.USAGE) from None
    t_all = time.time()
    rows = []
    cases = args.case or default_cases(args.split)
    for m in models.values():  # a subject that trained or chose the model is no clean test of it
        spent.warn_spent(m.name, [c.split(":")[0] for c in cases])
    for case in cases:
        try:
            flair_rel, les_rel = case.split(":")
        except ValueError:
            raise CLIError(f"--case must be FLAIR:LESIONS, got {case!r}", exitcodes.USAGE) from None
        flair, les = Path(args.data_root) / flair_rel, Path(args.data_root) / les_rel
        for p in (flair, les):
            if not p.is_file():
                raise CLIError(f"not found: {p}", exitcodes.NOINPUT)
        try:
            vol = load_training_volume(flair, name=flair_rel).data
            mask_img, flair_affine = load_nifti(les), load_nifti(flair).affine
            lesions = np.asarray(mask_img.dataobj) > 0
        except READ_ERRORS as exc:
            raise CLIError(f"cannot read {flair} or {les}: {exc}", exitcodes.NOINPUT) from None
        if lesions.shape != vol.shape or not np.allclose(mask_img.affine, flair_affine, atol=1e-3):
            raise CLIError(f"lesion mask {les_rel} {lesions.shape} is not on the grid of FLAIR {flair_rel} "
                           f"{vol.shape} (both must be 1 mm, same shape and affine)", exitcodes.NOINPUT)
        if not lesions.any():  # every lesion measure would be NaN
            raise CLIError(f"lesion mask {les_rel} holds no lesion voxel", exitcodes.NOINPUT)
        brain = brain_mask(vol, True)
        rows += evaluate_case(vol, lesions, brain, models, axes, settings, args.batch_size, name=flair_rel,
                              device=args.device, project=args.project, precision=args.precision,
                              thickness_modes=modes)
    table = summarise(rows)
    text = "\n".join([
        "## Lesion benchmark (issue 12): mean over slice axes " + ", ".join(sorted({r['axis'] for r in rows})), "",
        "Cases: " + ", ".join(cases) + ". Simple segmentation: brain z-score > "
        f"{L.SEG_Z}, brain eroded by {L.SEG_ERODE} voxels, components >= {L.SEG_MIN_VOXELS} voxels; "
        "invented = volume it marks > 1 voxel from what it marks in the truth. Contrast kept: median over "
        f"lesions >= {L.CONTRAST_MIN_VOXELS} voxels. Protocol: prettier_bids/cli/eval_lesions.py.", "",
        markdown(table), "",
        "Models: " + ", ".join(f"{key} (sha256 {m.sha256[:12]})" for key, m in models.items())
        + f"; {projection_note(args.project)}; {precision_note(args.precision, args.device)}; "
        f"total {time.time() - t_all:.0f} s."])
    print(text)
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(text + "\n", out / "lesions.md")
        payload = {"rows": rows, "summary": table, "models": {key: m.sha256 for key, m in models.items()},
                   "segmentation": {"z": L.SEG_Z, "erode": L.SEG_ERODE, "min_voxels": L.SEG_MIN_VOXELS},
                   "projected": args.project, "thickness": args.thickness, "precision": resolve_precision(args.precision, args.device),
                   "seconds": time.time() - t_all}
        write_text_atomic(json.dumps(_finite(payload), indent=2, allow_nan=False) + "\n", out / "lesions.json")
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
