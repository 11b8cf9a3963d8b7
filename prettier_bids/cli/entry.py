"""The console scripts (``setup.cfg``): each imports its command's module only inside a guard.

Importing a command pulls in numpy, torch, nibabel (and for ``prettier-bids`` pybids and Nipype): seconds in
which a Ctrl-C used to print a long traceback from the middle of an import. Here it is one line and exit 130,
as everywhere else (:func:`prettier_bids.cli.options.guarded_main` takes over once the command runs). This
module imports nothing of the package at import time.

During that import a Ctrl-C (or SIGTERM) is only noted, and acted on once the import is over: a KeyboardInterrupt raised
inside a compiled extension's initialisation (torch's pybind11 modules) aborts the process ("terminate called
after throwing an instance of 'pybind11::error_already_set'", killed by SIGABRT) instead of reaching any guard.
The command's guard (:func:`~prettier_bids.cli.options.guarded_main`) imports torch in the same way before
the command runs (its own imports of torch come later, lazily, inside the run).
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import sys

#: exitcodes.INTERRUPTED (not imported: this module must stay import-free)
INTERRUPTED = 130
#: exitcodes.TERMINATED
TERMINATED = 143
#: The signals noted during the imports and acted on after them (SIGTERM: ``docker stop``, ``scancel`` as the
#: command starts; raised inside torch's initialisation it would abort the process as a Ctrl-C does).
_DEFERRED = (signal.SIGINT, signal.SIGTERM)


def import_deferring_signals(module):
    """``module`` imported with SIGINT and SIGTERM noted rather than acted on; returns (the module, the first
    signal that came or None). A signal the process started ignoring (``cmd &`` in a script ignores SIGINT) stays
    ignored."""
    seen, previous = [], {}
    for signum in _DEFERRED:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, lambda signum, frame: seen.append(signum))
    try:
        mod = importlib.import_module(module)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return mod, (seen[0] if seen else None)


def exit_for_signal(prog, signum):
    """The one line on stderr and the exit status (130 Ctrl-C, 143 SIGTERM) of a command stopped by ``signum``
    (a signal noted during an import, :func:`import_deferring_signals`, or one the command's guard caught); None
    when none came. Cleaning up is the caller's."""
    if signum is None:
        return None
    what, code = ("interrupted", INTERRUPTED) if signum == signal.SIGINT else ("terminated (SIGTERM)", TERMINATED)
    print(f"{prog}: error: {what}; rerun the same command to resume", file=sys.stderr, flush=True)
    return code


class _PipeSafe:
    """A console stream whose reader may have gone (``prettier-sr ... 2>&1 | head -1``): once a write finds the pipe
    closed, messages are dropped, so that the command still finishes its work and writes its outputs (a
    BrokenPipeError in a progress line used to abort the run with exit 1 and no output)."""

    def __init__(self, stream):
        self._stream, self._closed = stream, False

    def write(self, text):
        if not self._closed:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._closed = True
        return len(text)

    def flush(self):
        if not self._closed:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._closed = True

    def __getattr__(self, name):
        return getattr(self._stream, name)


#: What OpenMP (libgomp) takes as OMP_NUM_THREADS: positive counts, a comma-separated list for nested levels.
_OMP_THREADS = re.compile(r"\s*\+?[0-9]+\s*(,\s*\+?[0-9]+\s*)*")
#: The largest count kept (libgomp refuses counts that overflow; millions of threads are a typo).
MAX_OMP_THREADS = 65536


def _omp_threads_ok(value):
    """OMP_NUM_THREADS: counts of 1 to :data:`MAX_OMP_THREADS`, comma-separated for nested levels (``04``, ``+4``
    as libgomp reads them); ``0``, ``-1``, ``abc`` or ``99999999999999999999`` made libgomp print its own
    unprefixed ``Invalid value for environment variable`` line."""
    counts = list(map(int, value.split(","))) if _OMP_THREADS.fullmatch(value) else []
    return bool(counts) and 1 <= min(counts) and max(counts) <= MAX_OMP_THREADS


def _prog():
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("prettier") else "prettier_bids"


_CPU_ITEM = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")
_STACK = re.compile(r"\s*\+?(\d+)\s*([bkmg]?)\s*", re.I)


def _cpu_list_ok(value):
    """GOMP_CPU_AFFINITY: CPU numbers and ranges (``0 3 1-2 4-15:2``) that this process may all use (one it may
    not, in a smaller cpuset or container, made libgomp fail with "Thread creation failed", exit 1)."""
    items = [item for item in re.split(r"[\s,]+", value.strip()) if item]
    cpus = set()
    for item in items:
        m = _CPU_ITEM.fullmatch(item)
        if not m:
            return False
        first, last, step = int(m.group(1)), int(m.group(2) or m.group(1)), int(m.group(3) or 1)
        if last < first or step < 1 or last - first > 1 << 16:
            return False
        cpus.update(range(first, last + 1, step))
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return bool(items)
    return bool(items) and cpus <= allowed


def _stack_size_ok(value):
    """OMP_STACKSIZE: a size (unit B, K, M or G; K without one) of at least 16 KiB, libgomp's minimum."""
    m = _STACK.fullmatch(value)
    return bool(m) and int(m.group(1)) * {"b": 1, "": 1024, "k": 1024, "m": 1 << 20, "g": 1 << 30}[
        m.group(2).lower()] >= 16 << 10


def _matches(pattern):
    return lambda value: re.fullmatch(pattern, value, re.I) is not None


#: The OpenMP (libgomp) settings torch's runtime reads when it loads, with the values libgomp takes. An odd
#: value printed an unprefixed ``libgomp: Invalid value ...`` line; an odd GOMP_CPU_AFFINITY (``abc``) made the
#: import of torch spin for ever, deaf to SIGTERM and Ctrl-C (they are deferred during that import).
_OPENMP_SETTINGS = {
    "OMP_NUM_THREADS": (_omp_threads_ok, f"a number of threads from 1 to {MAX_OMP_THREADS}"),
    "GOMP_CPU_AFFINITY": (_cpu_list_ok, "a list of CPU numbers or ranges this process may use"),
    "OMP_PROC_BIND": (_matches(r"\s*(true|false|(master|close|spread)(\s*,\s*(master|close|spread))*)\s*"),
                      "true, false, or a list of master, close, spread"),
    "OMP_WAIT_POLICY": (_matches(r"\s*(active|passive)\s*"), "active or passive"),
    "OMP_STACKSIZE": (_stack_size_ok, "a size of at least 16k (B, K, M or G)"),
    "OMP_PLACES": (_matches(r"\s*((threads|cores|sockets|ll_caches|numa_domains)(\s*\(\s*\d+\s*\))?|\{.*\}.*)\s*"),
                   "threads, cores, sockets, ll_caches, numa_domains or a list of places"),
    "GOMP_SPINCOUNT": (_matches(r"\s*(\d+\s*[kmgt]?|infinite|infinity)\s*"), "a count or infinite"),
}


def check_current_folder():
    """Exit 64 with one line when the current folder no longer exists (deleted under a shell that stayed in it):
    torch's libraries then failed to load with an unprefixed MKL FATAL ERROR (exit 2), the group level with
    ``unexpected FileNotFoundError``. Called, like :func:`drop_invalid_openmp_settings`, before any command."""
    try:
        os.getcwd()
    except FileNotFoundError:
        print(f"{_prog()}: error: the current folder no longer exists (deleted?): cd to an existing folder and "
              "rerun", file=sys.stderr)
        sys.exit(64)


def drop_invalid_openmp_settings():
    """The settings of :data:`_OPENMP_SETTINGS`: a value libgomp would refuse is unset, with a one-line warning,
    before torch loads it. Called when ``prettier_bids.cli`` is imported, so before every console script (this
    module is in that package) and ``python -m prettier_bids.cli...``."""
    for name, (takes_value, takes) in _OPENMP_SETTINGS.items():
        value = os.environ.get(name)
        if value is not None and not takes_value(value):
            del os.environ[name]
            print(f"{_prog()}: warning: {name}={value!r} is not {takes}; ignored", file=sys.stderr)


def _run(prog, module):
    if sys.stderr is not None and not isinstance(sys.stderr, _PipeSafe):
        sys.stderr = _PipeSafe(sys.stderr)
    try:
        mod, signum = import_deferring_signals(module)
        if signum is not None:
            return exit_for_signal(prog, signum)
        code = mod.main()
        # The command is over (its outputs written or its error reported): a Ctrl-C or SIGTERM while the
        # interpreter shuts down would only turn its exit status into "killed by a signal" (-2 seen on a fast CI
        # machine; -15 after prettier-sr had written its output): ignored.
        for signum in _DEFERRED:
            signal.signal(signum, signal.SIG_IGN)
        return code
    except KeyboardInterrupt:  # during the import, or while parsing before the command's own guard
        return exit_for_signal(prog, signal.SIGINT)


def prettier_bids():
    return _run("prettier-bids", "prettier_bids.cli.run")


def prettier_sr():
    return _run("prettier-sr", "prettier_bids.cli.sr")


def prettier_train():
    return _run("prettier-train", "prettier_bids.cli.train")


def prettier_eval():
    return _run("prettier-eval", "prettier_bids.cli.evaluate")
