"""``prettier-bids BIDS_DIR OUTPUT_DIR {participant,group}``: the BIDS-App.

Exit codes: the one table of :mod:`prettier_bids.exitcodes` (BIDS execution spec / sysexits).
Nothing is created before the inputs, the options, the output location and (unless skipped) the
BIDS validation have been checked.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .. import __version__, exitcodes
from .options import UsageParser, check_device_available, device, finite_float, guarded_main, positive_int

PROG = "prettier-bids"
LEVELS = ("participant", "group")
CONTRASTS = ("FLAIR", "T1w", "T2w")
VALIDATORS = ("bids-validator-deno", "bids-validator")

LOGGER = logging.getLogger("prettier_bids")

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


def build_parser():
    p = UsageParser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                description="PRETTIER super-resolution of thick-slice brain MRI (2D FLAIR/T1w, 2-8 mm slices) "
                            "to ~1 mm isotropic, as a BIDS-App. Outputs form a BIDS derivatives dataset in "
                            "OUTPUT_DIR/prettier.")
    p.add_argument("bids_dir", metavar="BIDS_DIR", help="the input BIDS dataset (never modified)")
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="outputs go to OUTPUT_DIR/prettier")
    p.add_argument("analysis_level", metavar="{participant,group}",
                   help="participant: super-resolve; group: QC table and HTML over existing outputs")
    g = p.add_argument_group("selecting inputs")
    g.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL",
                   help="participants to process, with or without 'sub-' (default: all)")
    g.add_argument("--session-label", "--session_label", nargs="+", metavar="LABEL",
                   help="sessions to process, with or without 'ses-' (default: all)")
    g.add_argument("--contrast", nargs="+", metavar="CONTRAST", type=_contrast,
                   help="contrasts to process: FLAIR, T1w, T2w (default: FLAIR T1w)")
    g.add_argument("--bids-filter-file", "--bids_filter_file", metavar="FILE",
                   help='JSON with extra pybids filters per contrast, fMRIPrep style: {"flair": {"acquisition": '
                        '"ax"}}')
    g.add_argument("--min-slice-spacing", type=finite_float(0.0, 100.0), default=2.0, metavar="MM",
                   help="skip images whose slice spacing is below this (default: 2 mm)")
    g.add_argument("--skip-bids-validation", "--skip_bids_validation", action="store_true",
                   help="do not run the BIDS validator on the input")
    m = p.add_argument_group("super-resolution")
    mx = m.add_mutually_exclusive_group()
    mx.add_argument("--model", default=None, metavar="NAME", help="a shipped model (default: the default model)")
    mx.add_argument("--weights", default=None, metavar="FILE", help="a weights file (.pt) from prettier-train")
    m.add_argument("--method", choices=("model", "cubic"), default="model",
                   help="model: the network (default); cubic: only the cubic-spline baseline (no weights needed)")
    m.add_argument("--write-cubic", action="store_true", help="also write the cubic baseline (desc-cubic)")
    m.add_argument("--slice-profile", choices=("boxcar", "gaussian"), default="boxcar",
                   help="slice profile for the consistency check (default: boxcar)")
    m.add_argument("--device", type=device, default="cpu", help="cpu (default), cuda or cuda:N")
    m.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass (memory vs speed)")
    r = p.add_argument_group("resources and execution")
    r.add_argument("-w", "--work-dir", default="work", metavar="DIR",
                   help="Nipype work directory, reused on reruns (default: ./work); one per parallel job")
    r.add_argument("--nprocs", "--nthreads", "--n_cpus", type=positive_int, default=None, metavar="N",
                   help="processes to run at once (default: all CPUs)")
    r.add_argument("--omp-nthreads", type=positive_int, default=None, metavar="N",
                   help="threads per super-resolution process (default: min(nprocs - 1, 8), at least 1)")
    r.add_argument("--mem-gb", "--mem", "--mem_gb", type=finite_float(0.0), default=None, metavar="GB",
                   help="memory limit for scheduling parallel jobs")
    r.add_argument("--strict", action="store_true",
                   help="exit 19 when an output is flagged by QC (consistency PSNR below the floor; outputs are "
                        "still written and the flag is in their sidecars)")
    r.add_argument("--stop-on-first-crash", action="store_true", help="stop at the first failed image")
    r.add_argument("--notrack", action="store_true", help="accepted for compatibility: nothing is ever sent")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: Nipype's too)")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


def _contrast(text):
    by_lower = {c.lower(): c for c in CONTRASTS}
    if text.lower() not in by_lower:
        raise argparse.ArgumentTypeError(f"unknown contrast {text!r} (choose from {', '.join(CONTRASTS)})")
    return by_lower[text.lower()]


def _error(msg, code):
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return code


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


def _setup_environment(args):
    """Thread limits and caches before the heavy imports; nothing is fetched from the network."""
    os.environ["NIPYPE_NO_ET"] = "1"
    os.environ["OMP_NUM_THREADS"] = str(args.omp_nthreads)
    # templateflow comes in through niworkflows/nireports: never update it from the network (nothing
    # here needs a template; importing it only unpacks its bundled skeleton into TEMPLATEFLOW_HOME).
    os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")
    home = Path(os.path.expanduser("~"))
    if not os.access(home, os.W_OK):  # read-only HOME (Singularity/Apptainer): caches go to the work dir
        os.environ.setdefault("MPLCONFIGDIR", str(Path(args.work_dir).absolute() / ".cache" / "matplotlib"))
        os.environ.setdefault("DENO_DIR", str(Path(args.work_dir).absolute() / ".cache" / "deno"))
        os.environ.setdefault("TEMPLATEFLOW_HOME", str(Path(args.work_dir).absolute() / ".cache" / "templateflow"))


def _setup_logging(verbose, log_file=None):
    level = logging.DEBUG if verbose >= 2 else logging.INFO
    fmt = logging.Formatter("%(asctime)s prettier-bids: %(message)s", datefmt="%y%m%d-%H:%M:%S")
    LOGGER.setLevel(logging.DEBUG)
    LOGGER.propagate = False
    for h in list(LOGGER.handlers):
        LOGGER.removeHandler(h)
    logging.getLogger("prettier_bids.sr").setLevel(logging.INFO if verbose else logging.WARNING)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(fmt)
    LOGGER.addHandler(console)
    from nipype import config as ncfg, logging as nlog

    ncfg.set("logging", "workflow_level", "INFO" if verbose >= 2 else "ERROR" if verbose else "CRITICAL")
    ncfg.set("logging", "interface_level", "INFO" if verbose >= 2 else "CRITICAL")
    ncfg.set("logging", "utils_level", "WARNING" if verbose >= 2 else "CRITICAL")
    nlog.update_logging(ncfg)
    if log_file is not None:
        fh = logging.FileHandler(log_file)
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(fmt)
        LOGGER.addHandler(fh)
        nlog.getLogger("nipype.workflow").addHandler(fh)
        return fh
    return None


def _close_log_file(handler):
    if handler is None:
        return
    from nipype import logging as nlog

    for logger in (LOGGER, nlog.getLogger("nipype.workflow")):
        logger.removeHandler(handler)
    handler.close()


def _check_output_location(output_dir, bids_dir):
    """Check OUTPUT_DIR without creating anything (that waits until every check has passed)."""
    from ..paths import is_within, nearest_existing

    out = Path(output_dir).absolute()
    bids = Path(bids_dir).absolute()
    if out.resolve() == bids.resolve():
        raise _Exit("OUTPUT_DIR must not be BIDS_DIR (use BIDS_DIR/derivatives)", exitcodes.USAGE)
    from ..outputs import derivatives_root

    for where in (out, derivatives_root(out)):  # OUTPUT_DIR and OUTPUT_DIR/prettier
        if is_within(where, bids) and not is_within(where, bids / "derivatives"):
            raise _Exit(f"OUTPUT_DIR {out} puts the outputs inside BIDS_DIR but not under BIDS_DIR/derivatives/ (a "
                        f"BIDS dataset may not hold other folders): use {bids / 'derivatives'} or a folder outside "
                        "BIDS_DIR", exitcodes.USAGE)
    base = nearest_existing(out)
    if not base.is_dir():
        raise _Exit(f"cannot create OUTPUT_DIR {out}: {base} is not a folder", exitcodes.CANTCREAT)
    if not os.access(base, os.W_OK | os.X_OK):
        raise _Exit(f"cannot {'write to' if base == out else 'create'} OUTPUT_DIR {out}: {base} is not writable",
                    exitcodes.CANTCREAT)
    return out


def _make_output(out):
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _Exit(f"cannot create OUTPUT_DIR {out}: {exc.strerror or exc}", exitcodes.CANTCREAT) from None
    if not os.access(out, os.W_OK):
        raise _Exit(f"cannot write to OUTPUT_DIR {out}", exitcodes.CANTCREAT)
    return out


class _Exit(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def find_validator():
    """The BIDS validator executable: on PATH, or beside the running Python (a venv's bin/, used by
    absolute path without activating the venv); None when not installed."""
    here = Path(sys.executable).parent
    for name in VALIDATORS:
        found = shutil.which(name)
        if found:
            return found
        beside = here / name
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
    return None


def run_bids_validator(bids_dir):
    """Run the BIDS validator if installed: ``(problem, report text)``; problem is None when valid or
    unavailable, else a one-line summary. Nothing is written (the caller saves the report once the
    output folder may be created)."""
    exe = find_validator()
    if exe is None:
        LOGGER.warning("BIDS validation skipped: no validator installed (pip install bids-validator-deno)")
        return None, None
    cmd = [exe, str(bids_dir), "--format", "json"] if "deno" in Path(exe).name else [exe, str(bids_dir), "--json"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        report = json.loads(proc.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        LOGGER.warning("BIDS validation skipped: %s could not run (%s)", Path(exe).name, exc.__class__.__name__)
        return None, None
    issues = report.get("issues", {})
    errors = ([i for i in issues.get("issues", []) if i.get("severity") == "error"]
              if isinstance(issues, dict) and "issues" in issues else issues.get("errors", []))
    if not errors:
        LOGGER.info("BIDS validation passed (%s)", Path(exe).name)
        return None, proc.stdout
    first = errors[0]
    where = first.get("location") or ""
    return (f"the input is not a valid BIDS dataset ({len(errors)} error(s); first: {first.get('code', first)}"
            f"{' at ' + where if where else ''}); run {Path(exe).name} {bids_dir} for details, "
            "or use --skip-bids-validation"), proc.stdout


def main(argv=None):
    args = build_parser().parse_args(argv)
    return guarded_main(PROG, lambda: _guarded(args, argv), verbose=bool(args.verbose))


def _guarded(args, argv):
    try:
        return _main(args, argv)
    except _Exit as exc:
        return _error(str(exc), exc.code)


def _main(args, argv):
    from ..bids import BIDSError, check_bids_dir, check_participant_labels, load_bids_filters

    if args.analysis_level not in LEVELS:
        raise _Exit(f"unknown analysis level {args.analysis_level!r} (choose participant or group)",
                    exitcodes.BAD_LEVEL)
    args.nprocs = args.nprocs or _cpu_count()
    args.omp_nthreads = args.omp_nthreads or max(1, min(args.nprocs - 1, 8))
    args.omp_nthreads = min(args.omp_nthreads, args.nprocs)
    bids_dir = Path(args.bids_dir).absolute()
    try:
        raw_description = check_bids_dir(bids_dir)
        check_participant_labels(bids_dir, args.participant_label)
        args.bids_filters = load_bids_filters(args.bids_filter_file) if args.bids_filter_file else None
    except BIDSError as exc:
        raise _Exit(str(exc), exc.code) from None
    output_dir = _check_output_location(args.output_dir, bids_dir)
    _setup_environment(args)
    if args.analysis_level == "group":
        return run_group_level(args, output_dir)
    return run_participant_level(args, bids_dir, output_dir, raw_description, argv)


def run_group_level(args, output_dir):
    from ..bids import strip_prefix
    from ..outputs import derivatives_root
    from ..reports.group import run_group

    _setup_logging(args.verbose)
    root = derivatives_root(output_dir)
    if not (root / "dataset_description.json").is_file():
        raise _Exit(f"no participant-level outputs in {root} (run the participant level first)", exitcodes.NOINPUT)
    tsv, page, rows = run_group(root, strip_prefix(args.participant_label, "sub-") or None)
    LOGGER.info("group level: %d output(s); wrote %s and %s", len(rows), tsv, page)
    flagged = [r for r in rows if r.get("QCFlags") not in (None, "", "n/a")]
    if flagged and args.strict:
        return _error(f"{len(flagged)} output(s) flagged by QC; see {tsv}", exitcodes.QC_FLAGGED)
    return exitcodes.OK


def load_model_or_exit(args):
    """The model, loaded once here to fail fast (its weights' hash decides which outputs are current)."""
    if args.method != "model":
        return None
    import torch

    from ..sr.models import WeightsError
    from ..sr.reconstruct import load_model

    torch.set_num_threads(1)  # the parent only loads weights; image nodes set their own thread count
    problem = check_device_available(args.device)
    if problem:
        raise _Exit(problem, exitcodes.USAGE)
    try:
        return load_model(args.model, args.weights, device="cpu")
    except WeightsError as exc:
        raise _Exit(str(exc), exitcodes.NOINPUT) from None


def run_participant_level(args, bids_dir, output_dir, raw_description, argv):
    from ..outputs import derivatives_root, new_run_id

    model = load_model_or_exit(args)
    run_id = new_run_id()
    root = derivatives_root(output_dir)
    report = None
    if not args.skip_bids_validation:  # before anything is created
        _setup_logging(args.verbose)
        problem, report = run_bids_validator(bids_dir)
        if problem:
            raise _Exit(problem, exitcodes.BIDS_INVALID)
    _make_output(output_dir)
    log_dir = root / "logs"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _Exit(f"cannot create {log_dir}: {exc.strerror or exc}", exitcodes.CANTCREAT) from None
    if report is not None:
        from ..sr.io import write_text_atomic

        write_text_atomic(report, log_dir / f"bids_validator_{run_id}.json")
    handler = _setup_logging(args.verbose, log_dir / f"prettier-bids_{run_id}.log")
    try:
        return _participant(args, bids_dir, root, raw_description, argv, run_id, model)
    finally:
        _close_log_file(handler)


def _participant(args, bids_dir, root, raw_description, argv, run_id, model):
    from ..bids import BIDSError, get_layout, resolve_participants, select, summarize
    from ..outputs import RunSummary, clean_stale_temporaries, expected_outputs, qc_of, write_dataset_files

    command = " ".join(shlex.quote(a) for a in [PROG] + list(sys.argv[1:] if argv is None else argv))
    LOGGER.info("prettier-bids %s, run %s: %s", __version__, run_id, command)
    if model is not None:
        LOGGER.info("model %s (%s, sha256 %s...)", model.name, model.path, model.sha256[:12])
    t0 = time.time()

    try:
        layout = get_layout(bids_dir, exclude=[root.parent, Path(args.work_dir)],
                            participants=args.participant_label)
        subjects = resolve_participants(layout, args.participant_label)
        cands = select(layout, subjects, args.session_label, args.contrast, args.bids_filters,
                       args.min_slice_spacing)
    except BIDSError as exc:
        raise _Exit(str(exc), exc.code) from None
    LOGGER.info("%s", summarize(cands))

    write_dataset_files(root, bids_dir, raw_description)
    clean_stale_temporaries(root, subjects)
    sha = model.sha256 if model else None
    expected = {c.relpath: expected_outputs(c, root, args.method, args.write_cubic)
                for c in cands if c.status == "selected"}
    todo = _skip_complete(cands, expected, sha)
    ok = _process(todo, expected, sha, args, root, run_id, model) if todo else True

    flagged = []
    for cand in cands:  # QC flags and header warnings of every complete output (this run or earlier)
        if cand.status != "done":
            continue
        qc, warnings = qc_of(expected[cand.relpath])
        for w in warnings:
            LOGGER.warning("header warning: %s: %s", cand.relpath, w)
        if qc:
            flagged.append(cand)
            cand.reason = f"{cand.reason}; QC flag: {'; '.join(qc)}"
            LOGGER.warning("QC flag: %s: %s", cand.relpath, "; ".join(qc))
    summary = RunSummary(root, run_id)
    for cand in cands:
        done = cand.status == "done"
        summary.add(cand, [p.relative_to(root).as_posix() for p in expected[cand.relpath].niftis.values()]
                    if done else ())
    summary_path = summary.write()
    _write_reports(root, subjects, cands, run_options(args, root, run_id, model), command)

    failed = sorted((c for c in cands if c.status == "failed"), key=lambda c: (c.subject, c.relpath))
    LOGGER.info("finished in %.0f s: %s; summary in %s", time.time() - t0,
                ", ".join(f"{v} {k}" for k, v in sorted(summary.counts().items())), summary_path)
    for c in failed:
        LOGGER.error("FAILED sub-%s: %s: %s", c.subject, c.relpath, c.reason)
    if failed:
        subs = ", ".join(sorted({"sub-" + c.subject for c in failed}))
        return _error(f"{len(failed)} of {len(cands)} input(s) failed (participant(s) {subs}); see {summary_path}",
                      exitcodes.FAIL)
    if not ok:
        return _error(f"the workflow did not finish cleanly; see the crash files under {root}/sub-*/log/{run_id}",
                      exitcodes.FAIL)
    if flagged and args.strict:
        return _error(f"{len(flagged)} output(s) flagged by QC (--strict); see {summary_path}", exitcodes.QC_FLAGGED)
    return exitcodes.OK


def _skip_complete(cands, expected, sha):
    """Mark inputs whose outputs are complete as done; return the others by participant."""
    from ..outputs import completion

    todo = {}
    for cand in cands:
        if cand.status != "selected":
            continue
        done, why = completion(expected[cand.relpath], cand.source_uri, sha)
        if done:
            cand.status, cand.reason = "done", "outputs already complete (earlier run)"
            LOGGER.info("already done, skipping: %s", cand.relpath)
        else:
            LOGGER.debug("to do: %s (%s)", cand.relpath, why)
            todo.setdefault(cand.subject, []).append(cand)
    return todo


def run_options(args, root, run_id, model):
    """What the workflows need to know about this run."""
    from ..outputs import software_versions
    from ..workflows import RunOptions

    return RunOptions(output_root=root, work_dir=Path(args.work_dir).absolute(), run_id=run_id,
                      method=args.method, weights=model.path if model else None,
                      model_name=model.name if model else None, model_sha256=model.sha256 if model else None,
                      write_cubic=args.write_cubic, slice_profile=args.slice_profile, device=args.device,
                      batch_size=args.batch_size, nprocs=args.nprocs, omp_nthreads=args.omp_nthreads,
                      mem_gb=args.mem_gb, stop_on_first_crash=args.stop_on_first_crash,
                      software_versions=software_versions())


def _process(todo, expected, sha, args, root, run_id, model):
    """Build and run the workflow of the inputs in ``todo``; set each one's status from what is on disk."""
    from ..outputs import completion
    from ..workflows import init_main_wf
    from ..workflows.base import failure_reason, run_workflow

    opts = run_options(args, root, run_id, model)
    try:
        opts.work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _Exit(f"cannot create the work directory {opts.work_dir}: {exc.strerror or exc}",
                    exitcodes.CANTCREAT) from None
    ok = run_workflow(init_main_wf(todo, opts), opts)
    for cand in (c for cands in todo.values() for c in cands):
        done, why = completion(expected[cand.relpath], cand.source_uri, sha)
        if done:
            cand.status, cand.reason = "done", "processed in this run"
        else:
            cand.status = "failed"
            cand.reason = failure_reason(cand, opts) or (
                "not run (stopped after an earlier failure)" if args.stop_on_first_crash
                else f"incomplete outputs ({why})")
    return ok


def _write_reports(root, subjects, cands, opts, command):
    """logs/CITATION.md (from the workflows' descriptions) and one HTML report per participant of this run."""
    from ..outputs import write_citation
    from ..reports.subject import write_subject_report
    from ..workflows.base import boilerplate

    done = {}
    for cand in cands:
        if cand.status == "done":
            done.setdefault(cand.subject, []).append(cand)
    write_citation(root, boilerplate(done, opts))
    for subject in subjects:
        mine = [c for c in cands if c.subject == subject]
        if mine:
            write_subject_report(root, subject, mine, opts.run_id, command)


if __name__ == "__main__":
    sys.exit(main())
