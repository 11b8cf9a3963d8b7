"""The process environment of ``prettier-bids``: thread limits, caches (set before the heavy imports) and logging."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

LOGGER = logging.getLogger("prettier_bids")


def setup_environment(config):
    """Thread limits and caches before the heavy imports; nothing is fetched from the network."""
    os.environ["NIPYPE_NO_ET"] = "1"
    os.environ["OMP_NUM_THREADS"] = str(config.omp_nthreads)
    # templateflow may come in through niworkflows/nireports: never update it from the network (nothing
    # here needs a template; importing it only unpacks its bundled skeleton into TEMPLATEFLOW_HOME).
    os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")
    home = Path(os.path.expanduser("~"))
    if not os.access(home, os.W_OK):  # read-only HOME (Singularity/Apptainer)
        # the validator's cache, and every cache of a level without a work directory (the group level and
        # --reports-only: its default ./work may lie in BIDS_DIR), go to a private folder removed at exit, so that
        # nothing is made before the checks (an exit 18 left W/.cache) or in the input dataset; the participant
        # level keeps matplotlib's and templateflow's in its work directory, made by then (reused by reruns)
        uses_work = config.analysis_level == "participant" and not config.reports_only
        wanted = [("MPLCONFIGDIR", "matplotlib"), ("TEMPLATEFLOW_HOME", "templateflow")]
        if not config.skip_bids_validation and config.analysis_level == "participant":
            wanted.append(("DENO_DIR", "deno"))
        private = None
        for var, name in wanted:
            if var in os.environ:
                continue
            if uses_work and var != "DENO_DIR":
                os.environ[var] = str(config.work_dir / ".cache" / name)
                continue
            private = private or _private_cache_dir()
            if private is not None:
                os.environ[var] = str(private / name)


#: The private cache folder of this process (:func:`_private_cache_dir`), removed at exit and by a SIGTERM's
#: clean-up (``runner.abandon_run``: os._exit skips atexit)
PRIVATE_CACHE = []


def _private_cache_dir():
    """A new private folder (``mkdtemp``: mode 0700) removed when the process exits; None where none can be made."""
    import atexit
    import tempfile

    try:
        path = Path(tempfile.mkdtemp(prefix="prettier_cache_"))
    except OSError:  # no writable temporary folder: the libraries fall back on their own (and say so)
        return None
    PRIVATE_CACHE.append(path)
    atexit.register(remove_private_cache)
    return path


def remove_private_cache():
    import shutil

    while PRIVATE_CACHE:
        shutil.rmtree(PRIVATE_CACHE.pop(), ignore_errors=True)


def setup_logging(verbose, log_file=None):
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
    from nipype import config as ncfg
    from nipype import logging as nlog

    from .options import route_library_messages

    route_library_messages(LOGGER)
    ncfg.set("logging", "workflow_level", "INFO" if verbose >= 2 else "ERROR" if verbose else "CRITICAL")
    ncfg.set("logging", "interface_level", "INFO" if verbose >= 2 else "CRITICAL")
    ncfg.set("logging", "utils_level", "WARNING" if verbose >= 2 else "CRITICAL")
    nlog.update_logging(ncfg)
    if log_file is not None:
        fh = _LogFile(log_file, encoding="utf-8", errors="backslashreplace")  # a name not UTF-8
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(fmt)
        LOGGER.addHandler(fh)
        nlog.getLogger("nipype.workflow").addHandler(fh)
        return fh
    return None


class _LogFile(logging.FileHandler):
    """The run's log file; a record it cannot write (a full disk) is said once on the console, not as logging's
    28-line "--- Logging error ---" traceback, and the file is written no more (the console keeps everything)."""

    failed = False

    def handleError(self, record):
        if not self.failed:
            self.failed = True
            exc = sys.exc_info()[1]
            why = getattr(exc, "strerror", None) or exc
            sys.stderr.write(f"prettier-bids: warning: cannot write the log file {self.baseFilename} ({why}); the "
                             "console shows the rest\n")

    def emit(self, record):
        if not self.failed:
            super().emit(record)


def close_log_file(handler):
    if handler is None:
        return
    from nipype import logging as nlog

    for logger in (LOGGER, nlog.getLogger("nipype.workflow")):
        logger.removeHandler(handler)
    handler.close()


def hold_log_records():
    """Keep the log records of the checks that run before the log file may be created (OUTPUT_DIR does not
    exist yet); :func:`release_log_records` writes them into the log file once it exists."""
    held = logging.handlers.MemoryHandler(capacity=1 << 20, flushLevel=logging.CRITICAL + 1, flushOnClose=False)
    held.setLevel(logging.DEBUG)
    LOGGER.addHandler(held)
    return held


def release_log_records(held, handler=None):
    """Stop holding records; those held go to ``handler`` (the log file's) when given, else are dropped."""
    LOGGER.removeHandler(held)
    if handler is not None:
        held.setTarget(handler)
        held.flush()
    held.close()
