"""The ``prettier-bids`` argument parser and the validation of its arguments.

:func:`build_parser` checks each value while parsing (usage errors: one line, exit 64);
:func:`validate` checks what needs the file system, in this order: the analysis level, the BIDS
dataset, the participant labels, the ``--bids-filter-file``, the output location and the work directory (its
place and, for the participant level, that no other user can have written into it).
It creates nothing; a problem is a :class:`~.options.CLIError` with its exit code from :mod:`prettier_bids.exitcodes`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import __version__, exitcodes
from ..bids import MIN_SLICE_SPACING_MM
from ..config import PROG
from .options import (
    add_batch_size_option,
    CapAtCPUs,
    CLIError,
    UsageParser,
    add_precision_option,
    add_output_grid_option,
    add_projection_option,
    not_empty,
    check_folder,
    device,
    finite_float,
    positive_int,
)

LEVELS = ("participant", "group")
CONTRASTS = ("FLAIR", "T1w", "T2w")

EPILOG = f"""\
examples:
  {PROG} /data/bids /data/bids/derivatives participant
      super-resolve every thick-slice FLAIR and T1w; outputs in /data/bids/derivatives/prettier
  {PROG} /data/bids /out participant --participant-label 01 02 --contrast FLAIR --nprocs 4
  {PROG} /data/bids /out participant --session-label 1 --write-cubic -w /scratch/work_sub01
  {PROG} /data/bids /out participant --method cubic        (cubic baseline only, no model needed)
  {PROG} /data/bids /out group                             (QC table and HTML over all outputs)

Reruns skip inputs whose outputs are complete (the main JSON sidecar is written last) and
reuse the work directory; logs/summary_<run id>.tsv lists every input as done/skipped/failed.
Use one work directory per job when running participants in parallel.

""" + exitcodes.epilog(PROG) + "\n"


#: The smallest --mem-gb: below 0.01 GB Nipype's MultiProc never starts a job (the run hung for ever).
MIN_MEM_GB = 0.1


def build_parser():
    p = UsageParser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                description="PRETTIER super-resolution of thick-slice brain MRI (2D FLAIR/T1w, 2-8 mm slices) "
                            "to ~1 mm isotropic, as a BIDS-App. Outputs form a BIDS derivatives dataset in "
                            "OUTPUT_DIR/prettier.")
    p.add_argument("bids_dir", type=not_empty, metavar="BIDS_DIR", help="the input BIDS dataset (never modified)")
    p.add_argument("output_dir", type=not_empty, metavar="OUTPUT_DIR", help="outputs go to OUTPUT_DIR/prettier")
    p.add_argument("analysis_level", metavar="{participant,group}",
                   help="participant: super-resolve; group: QC table and HTML over existing outputs")
    g = p.add_argument_group("selecting inputs")
    g.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL",
                   help="participants to process, with or without 'sub-' (default: all)")
    g.add_argument("--session-label", "--session_label", nargs="+", metavar="LABEL",
                   help="sessions to process, with or without 'ses-' (default: all)")
    g.add_argument("--contrast", nargs="+", metavar="CONTRAST", type=_contrast,
                   help="contrasts to process: FLAIR, T1w, T2w (default: FLAIR T1w)")
    g.add_argument("--bids-filter-file", "--bids_filter_file", type=not_empty, metavar="FILE",
                   help='JSON with extra pybids filters per contrast, fMRIPrep style: {"flair": {"acquisition": '
                        '"ax"}}')
    g.add_argument("--min-slice-spacing", type=finite_float(0.0, 100.0), default=MIN_SLICE_SPACING_MM, metavar="MM",
                   help="skip images whose slice spacing is below this (default: 2 mm)")
    g.add_argument("--skip-bids-validation", "--skip_bids_validation", action="store_true",
                   help="do not run the BIDS validator on the input")
    m = p.add_argument_group("super-resolution")
    mx = m.add_mutually_exclusive_group()
    mx.add_argument("--model", type=not_empty, default=None, metavar="NAME",
                    help="a shipped model for every input (default: each input's contrast gets its own: "
                         "prettier-edsr-v3-flair for FLAIR, prettier-edsr-v3 for the others)")
    mx.add_argument("--weights", type=not_empty, default=None, metavar="FILE",
                    help="a weights file (.pt) from prettier-train")
    m.add_argument("--method", choices=("model", "cubic"), default="model",
                   help="model: the network (default); cubic: only the cubic-spline baseline (no weights needed)")
    m.add_argument("--write-cubic", action="store_true", help="also write the cubic baseline (desc-cubic)")
    m.add_argument("--slice-profile", choices=("boxcar", "gaussian"), default="boxcar",
                   help="slice profile for the consistency check and projection (default: boxcar)")
    add_projection_option(m, dest="consistency_projection")
    add_output_grid_option(m)
    add_precision_option(m)
    m.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda or cuda:N")
    add_batch_size_option(m)
    r = p.add_argument_group("resources and execution")
    r.add_argument("-w", "--work-dir", type=not_empty, default="work", metavar="DIR",
                   help="Nipype work directory, reused on reruns (default: ./work); one per parallel job (a second "
                        "run on it exits 75); yours alone (one that others can write is refused)")
    r.add_argument("--nprocs", "--nthreads", "--n_cpus", type=positive_int, action=CapAtCPUs,
                   default=None, metavar="N", help="processes to run at once (default: all CPUs)")
    r.add_argument("--omp-nthreads", type=positive_int, action=CapAtCPUs, default=None, metavar="N",
                   help="threads per super-resolution process (default: min(nprocs - 1, 8), at least 1)")
    r.add_argument("--mem-gb", "--mem", "--mem_gb", type=finite_float(MIN_MEM_GB, low_inclusive=True), default=None,
                   metavar="GB", help=f"memory limit for scheduling parallel jobs (at least {MIN_MEM_GB:g})")
    r.add_argument("--strict", action="store_true",
                   help="exit 19 when an output is flagged by QC (consistency PSNR below the floor; outputs are "
                        "still written and the flag is in their sidecars)")
    r.add_argument("--stop-on-first-crash", action="store_true", help="stop at the first failed image")
    o = p.add_argument_group("reports")
    o.add_argument("--no-reportlets", dest="reportlets", action="store_false",
                   help="skip the per-output figures (flickers, consistency map, lesion view): the subject reports "
                        "then hold the QC tables only; the group level is unchanged")
    o.add_argument("--reports-only", action="store_true",
                   help="process nothing: rebuild logs/CITATION.md and the subject reports of the selected "
                        "participants from the outputs already in OUTPUT_DIR (no work directory is used)")
    r.add_argument("--notrack", action="store_true", help="accepted for compatibility: nothing is ever sent")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: Nipype's too)")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


def _contrast(text):
    by_lower = {c.lower(): c for c in CONTRASTS}
    if text.lower() not in by_lower:
        raise argparse.ArgumentTypeError(f"unknown contrast {text!r} (choose from {', '.join(CONTRASTS)})")
    return by_lower[text.lower()]


def validate(args):
    """Check the parsed ``args`` against the file system; returns the values :meth:`Config.from_args
    <prettier_bids.config.Config.from_args>` takes as ``checked``."""
    from ..bids import BIDSError, check_bids_dir, check_participant_labels, check_session_labels, load_bids_filters

    if args.analysis_level not in LEVELS:
        raise CLIError(f"unknown analysis level {args.analysis_level!r} (choose participant or group)",
                       exitcodes.BAD_LEVEL)
    if args.analysis_level == "participant" and args.method == "cubic" and (args.weights or args.model):
        raise CLIError("--weights and --model choose the network: they do not apply to --method cubic (a typo there "
                       "went unnoticed)", exitcodes.USAGE)
    bids_dir = Path(args.bids_dir).absolute()
    check_utf8_paths(("BIDS_DIR", bids_dir), ("OUTPUT_DIR", args.output_dir), ("--work-dir", args.work_dir))
    try:
        raw_description = check_bids_dir(bids_dir)
        check_participant_labels(bids_dir, args.participant_label)
        check_session_labels(args.session_label, bids_dir)
        bids_filters = load_bids_filters(args.bids_filter_file) if args.bids_filter_file else None
    except BIDSError as exc:
        raise CLIError(str(exc), exc.code) from None
    output_dir = check_output_location(args.output_dir, bids_dir)
    if args.analysis_level == "participant" and not args.reports_only:  # the group level never uses it
        work = check_work_location(args.work_dir, bids_dir, output_dir)
        check_work_outside_derivatives(work, output_dir)
        check_work_private(work)
    return {"bids_dir": bids_dir, "output_dir": output_dir, "raw_description": raw_description,
            "bids_filters": bids_filters}


def check_utf8_paths(*named):
    """A usage error (64) for a folder whose absolute path is not UTF-8 (``caf\\xe9``): pybids' index and the
    HTML reports cannot hold it (a run did its work, then exited 1 ``unexpected UnicodeEncodeError`` before the
    reports)."""
    from ..bids import is_utf8, shown_name

    for what, path in named:
        if path is not None and not is_utf8(Path(path).absolute()):
            raw = os.fsencode(str(Path(path).absolute()))
            if raw.decode("utf-8", "replace").encode("utf-8") == raw:  # valid UTF-8, read as ASCII by this Python
                raise CLIError(f"{what} {shown_name(Path(path).absolute())} has non-ASCII characters, which this "
                               f"Python decodes as {sys.getfilesystemencoding()} (an ASCII locale without UTF-8 "
                               "mode): run with PYTHONUTF8=1 or LC_ALL=C.UTF-8", exitcodes.USAGE)
            raise CLIError(f"{what} {shown_name(Path(path).absolute())} is not a UTF-8 name, which the BIDS index "
                           "and the reports cannot hold: rename it", exitcodes.USAGE)


def check_output_location(output_dir, bids_dir):
    """Check OUTPUT_DIR without creating anything (that waits until every check has passed): neither it nor
    OUTPUT_DIR/prettier may lead (symlinks resolved) into BIDS_DIR outside BIDS_DIR/derivatives/. The fix a
    refusal suggests is never the OUTPUT_DIR that was given."""
    from ..outputs import derivatives_root
    from ..paths import into_dataset

    out = Path(output_dir).absolute()
    bids = Path(bids_dir).absolute()
    if out.resolve() == bids.resolve():
        raise CLIError("OUTPUT_DIR must not be BIDS_DIR (use BIDS_DIR/derivatives)", exitcodes.USAGE)
    derivatives = bids / "derivatives"
    root = derivatives_root(out)  # OUTPUT_DIR/prettier
    if root.is_symlink() and not into_dataset(out, bids) and into_dataset(root, bids):
        raise CLIError(f"OUTPUT_DIR/prettier {root} is a symlink to {os.readlink(root)} ({root.resolve()}), inside "
                       f"BIDS_DIR {bids} (the input dataset is never written): remove that symlink (or point it "
                       "outside BIDS_DIR), or use another OUTPUT_DIR", exitcodes.USAGE)
    if into_dataset(out, bids) or into_dataset(root, bids):
        usable = derivatives.resolve() != out.resolve() and not into_dataset(derivatives, bids)
        raise CLIError(f"OUTPUT_DIR {out} puts the outputs inside BIDS_DIR but not under BIDS_DIR/derivatives/ "
                       "(a BIDS dataset may not hold other folders): use "
                       + (f"{derivatives} or a folder outside BIDS_DIR" if usable else "a folder outside BIDS_DIR"),
                       exitcodes.USAGE)
    check_folder("OUTPUT_DIR", out, exitcodes.CANTCREAT)
    return out


def check_work_location(work_dir, bids_dir, output_dir):
    """Check the work directory (``-w``, default ``./work``) without creating anything: it must not lie inside
    BIDS_DIR (Nipype would write its intermediate files into the input dataset) unless it lies inside OUTPUT_DIR
    (allowed under BIDS_DIR/derivatives/), and it must be creatable. Symlinks are resolved."""
    from ..paths import into_dataset, is_within

    work = Path(work_dir).absolute()
    bids = Path(bids_dir).absolute()
    if into_dataset(work, bids, allowed=()) and not is_within(work, output_dir):
        raise CLIError(f"the work directory {work} is inside BIDS_DIR {bids} (the input dataset is never written): "
                       "use -w with a folder outside BIDS_DIR (or inside OUTPUT_DIR)", exitcodes.USAGE)
    check_folder("the work directory", work, exitcodes.CANTCREAT)
    return work


def check_work_outside_derivatives(work, output_dir):
    """The work directory must not lie in the derivatives dataset OUTPUT_DIR/prettier (symlinks resolved): Nipype's
    folders and pickles would become part of it (and of what the validator and the group level see). CLIError(64);
    OUTPUT_DIR itself, or a folder beside OUTPUT_DIR/prettier, is fine."""
    from ..outputs import derivatives_root
    from ..paths import is_within

    root = derivatives_root(output_dir)
    if is_within(work, root):
        raise CLIError(f"the work directory {work} is inside the derivatives dataset {root} (Nipype's files would "
                       f"become part of it): use -w with a folder outside it, e.g. {Path(output_dir) / 'work'}",
                       exitcodes.USAGE)


#: The end of every refusal of a work directory that another user could have written into.
WORK_DIR_HINT = "use -w with a new folder (the run creates it) or one that only you own and can write"


def check_work_private(work):
    """An existing work directory must be the running user's own, not writable by others and hold nothing of
    another user (:func:`prettier_bids.paths.check_private_folder`): Nipype unpickles the ``result_*.pklz`` it
    finds there (their names depend only on the dataset and the options), which runs any code they hold.
    CLIError(64); a missing one passes (the run creates it). Called by :func:`validate` and again, under the
    work directory's lock, by the runner."""
    from ..paths import OutputPathError, check_private_folder

    try:
        check_private_folder("the work directory", work, WORK_DIR_HINT, exitcodes.USAGE)
    except OutputPathError as exc:
        raise CLIError(str(exc), exc.code) from None
