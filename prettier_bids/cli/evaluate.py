"""``prettier-eval``: the paper's evaluation (Tables 2 and 3) of a model against cubic interpolation."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .. import __version__, exitcodes
from . import eval_lesions
from .eval_options import DEFAULT_SETTINGS, add_simulation_options
from .options import (
    add_batch_size_option,
    CapAtCPUs,
    CLIError,
    UsageParser,
    add_precision_option,
    add_projection_option,
    apply_threads_and_device,
    not_empty,
    not_empty_list,
    check_folder,
    check_folder_outputs,
    guarded_main,
    positive_int,
    setup_logging,
)
from .splits import read_split

PROG = "prettier-eval"


def build_parser():
    """The image benchmark's parser, with the sub-commands (``prettier-eval lesions``, :mod:`.eval_lesions`) as
    argparse sub-parsers: listed in ``--help``, each with its own ``--help``; ``args.run`` runs what was parsed.
    ``parser.sub_commands`` maps each name to its parser (:func:`main`: a sub-command comes first)."""
    p = UsageParser(
        prog=PROG,
        description="Evaluate a model on held-out 1 mm volumes: simulate thick slices along each axis, "
                    "reconstruct with cubic spline and the model, report PSNR/SSIM in a brain mask and patch IQMs. "
                    "Without a sub-command it runs this image benchmark; the sub-commands are listed below.",
        epilog=f"example: {PROG} --data-root ../shared/data --out-dir eval/; "
               f"lesion benchmark: {PROG} {eval_lesions.NAME} --help")
    p.add_argument("--data-root", type=not_empty, required=True, help="folder the split's file names are relative to")
    p.add_argument("--split", type=not_empty, default=None,
                   help="JSON split with a 'test' section (default: the shipped one)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", type=not_empty, default=None,
                   help="shipped model name for every contrast (default: each contrast's default model)")
    g.add_argument("--weights", type=not_empty, default=None, help="weights file")
    add_simulation_options(p, settings=DEFAULT_SETTINGS)
    p.add_argument("--contrasts", type=not_empty_list, default=None,
                   help="comma-separated subset of the split's test contrasts")
    p.add_argument("--no-patches", action="store_true", help="skip the patch-level table")
    add_projection_option(p, scoring=True)
    add_precision_option(p)
    p.add_argument("--out-dir", type=not_empty, default=None, help="write results.json, tables.md and a figure here")
    add_batch_size_option(p)
    p.add_argument("--threads", type=positive_int, action=CapAtCPUs, default=None)
    p.add_argument("-v", "--verbose", action="store_true", help="tracebacks of unexpected errors")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    p.set_defaults(run=run)
    # the usage as argparse writes it for the image benchmark, and a line for the sub-commands (argparse would
    # put "COMMAND ..." after the options; a sub-command comes first)
    p.usage = (p.format_usage().removeprefix("usage: ").rstrip()
               + f"\n       {PROG} COMMAND [options]  (see {PROG} COMMAND --help)")
    commands = p.add_subparsers(title="sub-commands", dest="command", metavar="COMMAND", prog=PROG,
                                help="run instead of the image benchmark; first on the command line")
    eval_lesions.build_parser(commands)
    p.sub_commands = commands.choices
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] in parser.sub_commands:
        # prettier-eval lesions ...: parsed by the sub-command's parser alone (the image benchmark's options, its
        # required --data-root among them, do not apply)
        args = parser.sub_commands[argv[0]].parse_args(argv[1:])
    else:
        args = parser.parse_args(argv)
        if args.command is not None:  # prettier-eval --data-root D lesions ...: options of both, mixed
            parser.error(f"the sub-command comes first: {PROG} {args.command} [options]")
    return args.run(args)


def run(args):
    """The image benchmark on parsed arguments."""
    return guarded_main(PROG, lambda: _main(args), verbose=args.verbose)


def _main(args):
    # the split and the output folder, before anything is loaded or created
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
        check_folder_outputs("--out-dir", args.out_dir, ("results.json", "tables.md"), [args.split, args.weights])
    setup_logging(PROG, timestamps=True)

    from ..evaluation import benchmark as ev
    from ..evaluation import spent
    from ..sr.consistency import projection_note
    from ..sr.io import AtomicGroup, write_text_atomic
    from ..sr.models import WeightsError
    from ..training.patches import READ_ERRORS, PatchError, load_training_volume
    from ..sr.precision import precision_note, resolve_precision
    from ..sr.reconstruct import load_model_set

    apply_threads_and_device(args)
    try:
        models = load_model_set(args.model, args.weights)  # without either: each contrast's default
    except WeightsError as exc:
        raise CLIError(str(exc), exitcodes.NOINPUT) from None
    axes, settings = args.axes, args.settings
    modes = ev.THICKNESS_MODES if args.thickness == "both" else (args.thickness,)
    out_dir = Path(args.out_dir) if args.out_dir else None
    for contrast, entries in test.items():  # a subject that trained or chose the model is no clean test of it
        spent.warn_spent(models.for_contrast(contrast).name, [e["file"] for e in entries])
    t0 = time.time()
    loaded = []  # every test volume is read and checked before any is evaluated
    for contrast, entries in test.items():
        for entry in entries:
            path = Path(args.data_root) / entry["file"]
            if not path.is_file():
                raise CLIError(f"test volume not found: {path}", exitcodes.NOINPUT)
            try:
                loaded.append((contrast, entry, load_training_volume(path, name=entry["file"])))
            except READ_ERRORS as exc:
                raise CLIError(f"cannot read test volume {path}: {exc}", exitcodes.NOINPUT) from None
    vols = {}
    for contrast, entry, vol in loaded:
        vols.setdefault(contrast, []).append(vol)
    patches = None
    if not args.no_patches:  # first (seconds): volumes too small for a patch fail before the long scoring
        patches = {}
        for contrast, cvols in vols.items():
            try:
                patches.update(ev.evaluate_patches({contrast: cvols}, models.for_contrast(contrast)))
            except PatchError:  # in the sampler's words: volumes too small, or too little foreground
                shapes = ", ".join(sorted({"x".join(map(str, v.data.shape)) for v in cvols}))
                raise CLIError(f"no patch for the patch table (paper Table 2) in the {contrast} test volumes "
                               f"({shapes} voxels): too small, or too little foreground; pass --no-patches to score "
                               "the volumes only", exitcodes.NOINPUT) from None
    scores, figures = [], []
    for contrast, entry, vol in loaded:
        mask = ev.brain_mask(vol.data, entry.get("skull_stripped", True))
        keep = (2, 6.0) if out_dir else None
        s, example = ev.evaluate_volume(vol.data, mask, entry["file"], contrast, models.for_contrast(contrast),
                                        settings, axes, args.batch_size, keep_example=keep,
                                        project=args.project, precision=args.precision, thickness_modes=modes)
        scores += s
        if example is not None and out_dir:
            figures.append((ev.render_figure(example, f"{entry['file']} (axial 5/6 mm simulated)"),
                            out_dir / f"figure_{Path(entry['file']).name.split('.')[0]}.png"))
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
    if patches is not None:
        md += ["", "## Patches, 5/6 mm (paper Table 2; the network's output, never projected)", "",
               ev.markdown_patch_table(patches)]
    used = {c: models.for_contrast(c) for c in test}
    md += ["", "; ".join(f"{c}: model {m.name} sha256 {m.sha256[:12]}" for c, m in used.items())
           + f"; {projection_note(args.project)}; {precision_note(args.precision)}; {time.time() - t0:.0f} s"]
    text = "\n".join(md)
    print(text)
    if out_dir:  # written only once every volume is scored: a failed run leaves no partial results
        out_dir.mkdir(parents=True, exist_ok=True)
        with AtomicGroup() as group:
            for png, path in figures:
                group.reserve(path).write_bytes(png)
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
