"""What ``prettier-bids`` does with a :class:`~prettier_bids.config.Config`: the group level, and the
participant level (select the inputs, skip the complete ones, run the workflow, read the crash files,
write the summary and the reports). Known problems raise :class:`~.options.CLIError`.

Nothing is created before the model, the output location, the work directory, (unless skipped) the BIDS
validation and the selection of the inputs have been checked: a run that fails before any work leaves
nothing behind (not even OUTPUT_DIR).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path

from .. import __version__, exitcodes
from ..config import PROG
from . import execution, validator
from .environment import (close_log_file, hold_log_records, release_log_records, remove_private_cache,
                          setup_environment, setup_logging)
from .options import CLIError, check_device_available, error, on_sigterm

LOGGER = logging.getLogger("prettier_bids")


def run(config):
    """Run the analysis level of ``config``; returns the exit code."""
    setup_environment(config)
    if config.analysis_level == "group":
        return run_group_level(config)
    return run_participant_level(config)


def run_group_level(config):
    from ..bids import strip_prefix
    from ..outputs import GROUP_FILES
    from ..paths import OutputPathError, check_output_files
    from ..reports.group import run_group
    from ..sr.io import missing_content

    setup_logging(config.verbose)
    root = config.output_root
    description = root / "dataset_description.json"
    if not (description.is_file() or missing_content(description)):  # (a DataLad clone's: its outputs say so)
        raise CLIError(f"no participant-level outputs in {root} (run the participant level first)", exitcodes.NOINPUT)
    try:
        check_output_files(root, GROUP_FILES)
    except OutputPathError as exc:
        raise CLIError(str(exc), exc.code) from None
    labels = strip_prefix(config.participant_label, "sub-") or None
    subjects = [root / f"sub-{lb}" for lb in labels] if labels else list(root.glob("sub-*"))
    if not any(d.is_dir() for d in subjects):  # (not the sub-XX.html reports) empty tables would replace the last
        whose = f" of {', '.join('sub-' + lb for lb in labels)}" if labels else ""
        raise CLIError(f"no participant-level outputs{whose} in {root} (run the participant level first); the "
                       "group tables were left as they were", exitcodes.NOINPUT)
    tsv, page, rows = run_group(root, labels)
    LOGGER.info("group level: %d output(s); wrote %s and %s", len(rows), tsv, page)
    flagged = [r for r in rows if r.get("QCFlags") not in (None, "", "n/a")]
    if flagged and config.strict:
        return error(PROG, f"{len(flagged)} output(s) flagged by QC; see {tsv}", exitcodes.QC_FLAGGED)
    return exitcodes.OK


def load_model_or_exit(config):
    """The models (a :class:`~prettier_bids.sr.reconstruct.ModelSet`: ``--model``/``--weights`` for every
    contrast, else each contrast's default), loaded once here to fail fast; an output is current when it
    was made with the weights of its input's contrast (their hash)."""
    if config.method != "model":
        return None
    import torch

    from ..sr.models import WeightsError
    from ..sr.reconstruct import load_model_set

    torch.set_num_threads(1)  # the parent only loads weights; image nodes set their own thread count
    problem = check_device_available(config.device)
    if problem:
        raise CLIError(problem, exitcodes.USAGE)
    try:
        return load_model_set(config.model, config.weights, device="cpu", contrasts=config.contrast)
    except WeightsError as exc:
        raise CLIError(str(exc), exitcodes.NOINPUT) from None


def make_dir(path, what, created=None):
    """Create ``path`` (and its parents); CLIError(73) when that fails or it is not writable. The folders it
    makes are appended to ``created`` (when given), so that a failed start can remove them again."""
    path = Path(path)
    missing = [p for p in (path, *path.absolute().parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create {what} {path}: {exc.strerror or exc}", exitcodes.CANTCREAT) from None
    finally:
        if created is not None:
            created.extend(p for p in missing if p.is_dir())
    if not os.access(path, os.W_OK | os.X_OK):
        raise CLIError(f"cannot write to {what} {path}", exitcodes.CANTCREAT)
    return path


def make_output(out, created=None):
    return make_dir(Path(out), "OUTPUT_DIR", created)


def remove_made_dirs(created):
    """Remove the (still empty) folders a failed start made, deepest first."""
    for folder in sorted(set(created), key=lambda p: len(p.absolute().parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass


def abandon_run(root):
    """SIGTERM (or Ctrl-C) once OUTPUT_DIR exists (Nipype is running nodes in this process and its pool): stop the pool's
    workers and remove the temporaries of this run's processes (every output is written as a temporary and
    renamed, so what remains is whole files only); the caller then exits 143 at once (SIGTERM) or 130 (Ctrl-C)."""
    import logging
    import multiprocessing

    from ..sr.io import remove_temporaries

    # the pool's manager thread reports the workers killed here as a BrokenProcessPool traceback: not the user's news
    logging.getLogger("concurrent.futures").disabled = True
    workers = multiprocessing.active_children()
    for proc in workers:
        proc.kill()
    for proc in workers:
        proc.join(timeout=10)
    remove_temporaries(root, pids={os.getpid(), *(p.pid for p in workers)})
    remove_private_cache()


def select_inputs(config):
    """Index BIDS_DIR (never the output or work dirs) and select the inputs: ``(subjects, candidates)``.
    Writes nothing; a problem (no match, bad filter) is a CLIError with its code."""
    from ..bids import BIDSError, get_layout, resolve_participants, select, summarize

    try:
        layout = get_layout(config.bids_dir, exclude=[config.output_dir, config.work_dir],
                            participants=config.participant_label)
        subjects = resolve_participants(layout, config.participant_label)
        cands = select(layout, subjects, config.session_label, config.contrast, config.bids_filters,
                       config.min_slice_spacing, output_grid=config.output_grid)
    except BIDSError as exc:
        raise CLIError(str(exc), exc.code) from None
    LOGGER.info("%s", summarize(cands))
    return subjects, cands


def check_output_folders(config, subjects, cands):
    """Every folder this run would write below OUTPUT_DIR/prettier (``outputs.output_folders``), symlinks resolved,
    stays below it and out of BIDS_DIR (``paths.check_output_dirs``), else CLIError(64): checked before anything
    is written (a ``sub-XX`` symlinked to BIDS_DIR/sub-XX would put the derivatives into the raw dataset); each of them
    writable by this user (``paths.check_writable_folders``), else CLIError(73)."""
    from ..outputs import output_files, output_folders
    from ..paths import OutputPathError, check_output_dirs, check_output_files, check_writable_folders
    from ..reports.subject import report_outputs

    mine = [c for c in cands if c.subject in set(subjects)]
    try:
        folders = output_folders(config.output_root, mine, config.run_id, config.method, config.write_cubic,
                                 reportlets=config.reportlets)
        check_output_dirs(config.output_root, folders, config.bids_dir)
        files = output_files(subjects) + report_outputs(config.output_root, subjects, mine)
        files += [] if config.reports_only else _image_outputs(config, mine)
        check_output_files(config.output_root, files)
        # a read-only or another user's folder below OUTPUT_DIR/prettier: exit 73 now, not after the work
        check_writable_folders(config.output_root, {".", "logs", *(Path(f).parent for f in files),
                                                    *([] if config.reports_only else folders)})
    except OutputPathError as exc:
        raise CLIError(str(exc), exc.code) from None


def _image_outputs(config, cands):
    """The files this run writes for each selected input of ``cands`` (images, sidecars, figures), relative to
    OUTPUT_DIR/prettier: each is replaced by a rename, which fails on a folder."""
    from ..outputs import expected_outputs

    root = config.output_root
    return [p.relative_to(root).as_posix() for c in cands if c.status == "selected"
            for p in expected_outputs(c, root, config.method, config.write_cubic, reportlets=config.reportlets)
            .all_files()]


def lock_work_dir(config, made_here):
    """Lock the work directory for this run (``paths.FolderLock``): a second run on the same ``-w`` exits 75 at
    once, naming this run's PID; then check it again under the lock (``parser.check_work_private``: nothing of
    another user in it). The lock goes with the process (exit, SIGTERM, kill -9). Returns the lock."""
    from ..paths import FolderLock, OutputPathError
    from .parser import check_work_private

    lock = FolderLock(config.work_dir, "the work directory")
    try:
        if not lock.acquire("wait for it to finish, or use another -w (one work directory per run)"):
            LOGGER.warning("cannot lock the work directory %s (the file system does not support locks): make sure no "
                           "other run uses it", config.work_dir)
        check_work_private(config.work_dir)
    except (OutputPathError, CLIError) as exc:
        lock.release(remove=made_here)
        raise CLIError(str(exc), exc.code) from None
    return lock


def lock_participants(config, subjects, cands, log_dir):
    """Lock the participants of this run in the derivatives dataset, each session it selects (``sub-01_ses-1``; a
    participant without sessions: ``sub-02``), whatever the work directory (``paths.ParticipantLocks``, in its
    ``logs`` folder): a second run of one of them (a resubmitted job, overlapping ``--participant-label`` lists,
    ``--reports-only`` during a run) exits 75 at once, naming the run's PID, instead of rewriting the same outputs
    and reports; jobs of other sessions of a participant still run side by side. The locks go with the process
    (exit, SIGTERM, kill -9)."""
    from ..paths import OutputPathError, ParticipantLocks

    mine = set(subjects)
    keys = {f"sub-{c.subject}" + (f"_ses-{c.session}" if c.session else "") for c in cands if c.subject in mine}
    locks = ParticipantLocks(log_dir, config.output_root)
    try:
        if not locks.acquire(keys, "wait for it to finish, or leave it out of this run (one run per participant and "
                                   "session at a time)"):
            LOGGER.warning("cannot lock the participants in %s (the file system does not support locks, or %s is "
                           "another user's): make sure no other run processes them", config.output_root, locks.path)
    except OutputPathError as exc:
        raise CLIError(str(exc), exc.code) from None
    return locks


def run_participant_level(config):
    """Check everything that can fail before any work (the model, the BIDS validation, the selection, the output
    folders), then create and lock the work directory and create OUTPUT_DIR: a run that fails before any work
    leaves nothing behind (not even OUTPUT_DIR or a log file). The log lines of those checks go into the run's log
    file once it exists. Nothing this run creates is writable by other users (umask o-w)."""
    os.umask(os.umask(0) | stat.S_IWOTH)  # the work directory (and outputs) never writable by others
    models = load_model_or_exit(config)
    setup_logging(config.verbose)
    held = hold_log_records()
    handler = lock = busy = None
    try:
        LOGGER.info("prettier-bids %s, run %s: %s", __version__, config.run_id, config.command)
        if models is not None:
            LOGGER.info("model %s", models.describe())
        report = None
        if not config.skip_bids_validation:
            problem, report = validator.run_bids_validator(config.bids_dir)
            if problem:
                raise CLIError(problem, exitcodes.BIDS_INVALID)
        subjects, cands = select_inputs(config)
        check_output_folders(config, subjects, cands)
        created = []
        made_work = False
        try:
            if not config.reports_only:  # --reports-only runs no workflow: no work directory
                make_dir(Path(config.work_dir), "the work directory", created)
                made_work = Path(config.work_dir).absolute() in {p.absolute() for p in created}
                lock = lock_work_dir(config, made_work)
            make_output(config.output_dir, created)
            log_dir = make_dir(config.output_root / "logs", "the log folder", created)
            busy = lock_participants(config, subjects, cands, log_dir)
        except CLIError:
            if lock is not None:  # a work dir this run made is removed (empty): its lock file goes first
                lock.release(remove=made_work)
                lock = None
            remove_made_dirs(created)  # e.g. OUTPUT_DIR cannot be made: the work dir made just before goes too
            raise
        on_sigterm(lambda: abandon_run(config.output_root))
        if report is not None:
            from ..sr.io import write_text_atomic

            write_text_atomic(report, log_dir / f"bids_validator_{config.run_id}.json")
        handler = setup_logging(config.verbose, log_dir / f"prettier-bids_{config.run_id}.log")
    except BaseException:
        if lock is not None:
            lock.release()
        if busy is not None:
            busy.release()
        raise
    finally:
        release_log_records(held, handler)
    try:
        if config.reports_only:
            return reports_only(config, subjects, cands)
        return participant(config, models, subjects, cands)
    except KeyboardInterrupt:  # Ctrl-C: the pool's workers ignore it (workflows/multiproc.py): stop them here
        abandon_run(config.output_root)
        raise
    finally:
        close_log_file(handler)
        if lock is not None:
            lock.release()
        busy.release()


def reports_only(config, subjects, cands):
    """``--reports-only``: no processing; each selected input is shown as complete or not processed, and
    logs/CITATION.md and the subject reports are rebuilt from the outputs on disk (their figures as they are)."""
    from ..outputs import completion, expected_outputs, write_dataset_files

    root = config.output_root
    write_dataset_files(root, config.bids_dir, config.raw_description)
    for cand in cands:
        if cand.status != "selected":
            continue
        expected = expected_outputs(cand, root, config.method, config.write_cubic, reportlets=False)
        done, why = completion(expected, cand.source_uri)
        cand.status, cand.reason = ("done", "outputs complete (earlier run)") if done else \
            ("skipped", f"not processed (--reports-only): {why}")
    write_reports(subjects, cands, config)
    LOGGER.info("reports rebuilt for %d participant(s) from the outputs in %s", len(subjects), root)
    return exitcodes.OK


def participant(config, models, subjects, cands):
    """Skip the complete inputs among the selected ``cands``, process the others, then the summary and the
    reports (``models``: a ModelSet, None for ``--method cubic``)."""
    from ..outputs import RunSummary, clean_stale_temporaries, expected_outputs, qc_of, write_dataset_files

    root = config.output_root
    t0 = time.time()

    write_dataset_files(root, config.bids_dir, config.raw_description)
    clean_stale_temporaries(root, subjects)
    expected = {c.relpath: expected_outputs(c, root, config.method, config.write_cubic, reportlets=config.reportlets)
                for c in cands if c.status == "selected"}
    todo = skip_complete(cands, expected, models, config)
    ok = process(todo, expected, models, config) if todo else True

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
    summary = RunSummary(root, config.run_id)
    for cand in cands:
        done = cand.status == "done"
        summary.add(cand, [p.relative_to(root).as_posix() for p in expected[cand.relpath].niftis.values()]
                    if done else ())
    summary_path = summary.write()
    write_reports(subjects, cands, config)

    failed = sorted((c for c in cands if c.status == "failed"), key=lambda c: (c.subject, c.relpath))
    LOGGER.info("finished in %.0f s: %s; summary in %s", time.time() - t0,
                ", ".join(f"{v} {k}" for k, v in sorted(summary.counts().items())), summary_path)
    for c in failed:
        LOGGER.error("FAILED sub-%s: %s: %s", c.subject, c.relpath, c.reason)
    if failed:
        subs = ", ".join(sorted({"sub-" + c.subject for c in failed}))
        return error(PROG, f"{len(failed)} of {len(cands)} input(s) failed (participant(s) {subs}); see "
                           f"{summary_path}", exitcodes.FAIL)
    if not ok:
        return error(PROG, "the workflow did not finish cleanly; see the crash files under "
                           f"{root}/sub-*/log/{config.run_id}", exitcodes.FAIL)
    if flagged and config.strict:
        return error(PROG, f"{len(flagged)} output(s) flagged by QC (--strict); see {summary_path}",
                     exitcodes.QC_FLAGGED)
    return exitcodes.OK


def made_with(models, cand, config):
    """What ``cand``'s outputs must have been made with to count as done: (the hash of its weights, whether
    they are projected onto the input, the network's arithmetic when ``--precision`` names one; with
    ``--precision auto`` outputs of either arithmetic count); (None, None, None) for ``--method cubic``."""
    if models is None:
        return None, None, None
    precision = None if config.precision == "auto" else config.precision
    return models.for_contrast(cand.contrast).sha256, bool(config.consistency_projection), precision


def skip_complete(cands, expected, models, config):
    """Mark inputs whose outputs are complete (made by the weights of their contrast, with this run's projection
    setting and, when ``--precision`` names one, its arithmetic) as done; return the others by participant."""
    todo = {}
    for cand in cands:
        if cand.status != "selected":
            continue
        done, why = is_complete(expected[cand.relpath], cand, models, config)
        if done:
            cand.status, cand.reason = "done", "outputs already complete (earlier run)"
            LOGGER.info("already done, skipping: %s", cand.relpath)
        else:  # figures of an earlier output that this run does not make: its sinks remove them (stale_figures)
            if expected[cand.relpath].marker.is_file():  # outputs of an earlier run that no longer fit
                LOGGER.info("redoing %s: %s", cand.relpath, why)
            else:
                LOGGER.debug("to do: %s (%s)", cand.relpath, why)
            todo.setdefault(cand.subject, []).append(cand)
    return todo


def is_complete(expected, cand, models, config):
    """``outputs.completion`` of ``cand``'s outputs against everything this run would make them with: the one
    check before the work (already done?) and after it (done, or failed: a redo that failed left the earlier
    outputs, made on another grid, and they were reported "processed in this run")."""
    from ..outputs import completion

    return completion(expected, cand.source_uri, *made_with(models, cand, config), cand=cand,
                      slice_profile=config.slice_profile, output_grid=config.output_grid)


def process(todo, expected, models, config):
    """Build and run the workflow of the inputs in ``todo``; set each one's status from what is on disk
    (and, for a failed one, the reason from its crash file)."""
    from ..workflows import init_main_wf

    ok = execution.run_workflow(init_main_wf(todo, config, models), config,
                                [c for cands in todo.values() for c in cands])
    for cand in (c for cands in todo.values() for c in cands):
        done, why = is_complete(expected[cand.relpath], cand, models, config)
        if done:
            cand.status, cand.reason = "done", "processed in this run"
        else:
            cand.status = "failed"
            cand.reason = execution.failure_reason(cand, config) or (
                "not run (stopped after an earlier failure)" if config.stop_on_first_crash
                else f"incomplete outputs ({why})")
    return ok


def write_reports(subjects, cands, config):
    """logs/CITATION.md (the methods text of every output in the derivatives dataset, from their sidecars: not
    only this run's) and one HTML report per participant of this run."""
    from ..outputs import write_citation
    from ..reports.subject import write_subject_report

    root = config.output_root
    write_citation(root, versions=config.software_versions, subjects=subjects)
    for subject in subjects:
        mine = [c for c in cands if c.subject == subject]
        if mine:
            write_subject_report(root, subject, mine, config.run_id, config.command)
