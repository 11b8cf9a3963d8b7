"""One option-validation layer for every CLI: argparse ``type=`` factories and a parser whose usage
errors are one line with exit code 64, :class:`CLIError` (a known problem and its exit code),
:func:`guarded_main` (known problems: one line and their code; unexpected errors: one line, exit 1;
Ctrl-C and SIGTERM unwind, removing temporaries, and exit 130 / 143) and :func:`setup_logging` (the console
log of prettier-sr, prettier-train and prettier-eval; prettier-bids has its own, ``cli/environment.py``).

Every command has the same skeleton: ``PROG`` defined once in its module; ``main(argv=None)`` parses, then
returns ``guarded_main(PROG, lambda: _main(args), verbose=args.verbose)``; a known problem inside ``_main`` is
``raise CLIError(message, exitcodes.X)``, which ``guarded_main`` prints as the one line ``PROG: error: message``.

Values are checked while parsing, so a bad option never reaches the computation:
``--slice-thickness nan`` / ``inf`` / ``0`` / ``-3``, ``--threads -1`` and ``--device tpu`` are usage errors.
"""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import re
import signal
import sys
import threading
import warnings
from pathlib import Path

from .. import exitcodes
from ..sr.adapt import DEFAULT_STEPS, AdaptSettings
from ..sr.io import is_disk_full
from ..sr.precision import BATCH_SIZE, PRECISIONS
from ..sr.preprocess import DEFAULT_OUTPUT_GRID, OUTPUT_GRIDS
from .entry import exit_for_signal, import_deferring_signals


class CLIError(exitcodes.CodedError):
    """A known problem (bad input, options or environment): one line on stderr and its exit code (``code``)."""


def error(prog, msg, code):
    """Print ``PROG: error: MSG`` on stderr; returns ``code``."""
    print(f"{prog}: error: {exitcodes.printable(msg)}", file=sys.stderr)
    return code


class _OneLineFormatter(logging.Formatter):
    """Console log records stay one line each (:func:`exitcodes.printable`), tracebacks (``-v``) aside."""

    def formatMessage(self, record):
        return exitcodes.printable(super().formatMessage(record))


def setup_logging(prog, level=logging.INFO, timestamps=False, logger_names=False, package_only=False):
    """The console log of a command (``logging.basicConfig`` on stderr), one line per record.

    Lines are ``PROG: message`` (``prettier-sr``: like its other messages), or with ``timestamps``
    ``TIME message`` (the long runs of ``prettier-eval``); ``logger_names`` puts the logger's name before the
    message (``prettier-train``: ``TIME LOGGER message``). ``level`` applies to every logger; with
    ``package_only`` it applies to the package's own (``prettier_bids.*``) and other libraries log only warnings
    (torch's INFO records, e.g. FakeTensor cache statistics at exit after a Ctrl-C, are not the command's
    output). Like ``basicConfig``, it adds nothing to a root logger that already has handlers (the package's
    level is still set)."""
    fmt = ("%(asctime)s " if timestamps else f"{prog}: ") + ("%(name)s " if logger_names else "") + "%(message)s"
    logging.basicConfig(level=logging.WARNING if package_only else level, format=fmt, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, _OneLineFormatter) and handler.formatter is not None \
                and getattr(handler, "stream", None) is sys.stderr:
            handler.setFormatter(_OneLineFormatter(handler.formatter._fmt))
    logging.getLogger("prettier_bids").setLevel(level)  # also undoes an earlier call's level in this process
    route_library_messages(logging.getLogger("prettier_bids"))


class _DebugTo(logging.Handler):
    """Passes a library's records to ``logger`` at DEBUG, as one line."""

    def __init__(self, logger):
        super().__init__()
        self.target = logger

    def emit(self, record):
        self.target.debug("%s: %s", record.name, record.getMessage())


class _WarningTo(logging.Handler):
    """Passes a library's warnings to ``logger`` as one prefixed line each (``warning: matplotlib: ...``)."""

    def __init__(self, logger):
        super().__init__(logging.WARNING)
        self.target = logger

    def emit(self, record):
        self.target.warning("warning: %s: %s", record.name.split(".")[0], " ".join(record.getMessage().split()))


def route_library_messages(logger):
    """What nibabel prints on its own about a header it reads ("vox offset (=376) not divisible by 16", "pixdim[1,2,3]
    should be positive; setting to abs", through a handler of its own, so bare and often twice) goes to ``logger``
    at DEBUG (shown with -v): the image admission says what matters in one line (a zero voxel size is refused).
    Python warnings (nibabel's "Extension size is not a multiple of 16 bytes", with its source line) and
    matplotlib's logged warnings (an unwritable config folder) become one prefixed warning line each."""
    nib_logger = logging.getLogger("nibabel.global")
    for handler in list(nib_logger.handlers):
        nib_logger.removeHandler(handler)
    nib_logger.addHandler(_DebugTo(logger))
    nib_logger.propagate = False
    mpl_logger = logging.getLogger("matplotlib")  # "mkdir -p failed ...", "created a temporary cache directory ..."
    for handler in [h for h in mpl_logger.handlers if isinstance(h, _WarningTo)]:
        mpl_logger.removeHandler(handler)
    mpl_logger.addHandler(_WarningTo(logger))
    mpl_logger.propagate = False

    def show(message, category, filename, lineno, file=None, line=None):
        logger.warning("warning: %s: %s", category.__name__, message)

    warnings.showwarning = show


def add_projection_option(parser, dest="project", scoring=False):
    """``--no-consistency-projection`` (stored ``False`` in ``dest``): the one spelling of the switch that turns
    off the projection of a model's output onto its input, in the commands that make outputs and in those
    that score them (``scoring``)."""
    help_ = ("score the network's output as it is, without the projection onto the input slices that "
             "prettier-sr and prettier-bids apply by default" if scoring else
             "keep the network's output as it is (default: project it onto the input, the least change that "
             "makes the output reproduce the input slices under the slice profile)")
    parser.add_argument("--no-consistency-projection", dest=dest, action="store_false", help=help_)


def add_batch_size_option(parser):
    """``--batch-size N`` (default ``sr.precision.BATCH_SIZE``), in every command that runs a model."""
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE, metavar="N",
                        help=f"windows per forward pass (memory vs speed; default {BATCH_SIZE})")


def add_output_grid_option(parser, dest="output_grid"):
    """``--output-grid {native,1mm}`` (``sr.preprocess.OUTPUT_GRIDS``): the one spelling of the option in the
    commands that make outputs."""
    parser.add_argument("--output-grid", dest=dest, choices=OUTPUT_GRIDS, default=DEFAULT_OUTPUT_GRID,
                        help="native (default): the output keeps the input's in-plane voxels (for in-plane voxel "
                             "sizes of 0.4-1.25 mm; others are resampled to 1 mm) and gets ~1 mm rows along the "
                             "slice axis; 1mm: a ~1 mm grid in every direction (the outputs of earlier versions), for pipelines "
                             "that need it")


def add_adapt_options(parser):
    """``--adapt`` with ``--adapt-steps N`` and ``--adapt-seed N`` (``sr.adapt``), in the commands that make
    outputs; :func:`adapt_settings` turns them into the core's settings."""
    parser.add_argument("--adapt", action="store_true",
                        help="experimental: fine-tune a copy of the model on the scan's own in-plane axes before "
                             "reconstructing it (self-supervised, a few seconds on 2 CPU cores; the sidecar's "
                             "Adaptation records it). Off by default: it has lowered PSNR by up to 0.3 dB on "
                             "simulated scans and raised it by 0.01-0.07 dB on real ones "
                             "(benchmarks/results/adapt.md)")
    parser.add_argument("--adapt-steps", type=int_at_least(1, 100000), default=None, metavar="N",
                        help=f"fine-tuning steps of --adapt (default {DEFAULT_STEPS})")
    parser.add_argument("--adapt-seed", type=int_at_least(0), default=None, metavar="N",
                        help="seed of --adapt's pairs (default 0; the same seed gives the same output)")


def adapt_settings(args, method="model"):
    """The ``sr.adapt.AdaptSettings`` of :func:`add_adapt_options`' options (None without ``--adapt``); a usage
    error for ``--adapt-*`` without ``--adapt`` or ``--adapt`` without a model."""
    if not args.adapt:
        if args.adapt_steps is not None or args.adapt_seed is not None:
            raise CLIError("--adapt-steps and --adapt-seed need --adapt", exitcodes.USAGE)
        return None
    if method != "model":
        raise CLIError("--adapt fine-tunes the model: it does not apply to --method cubic", exitcodes.USAGE)
    return AdaptSettings(steps=args.adapt_steps or DEFAULT_STEPS, seed=args.adapt_seed or 0)


def add_precision_option(parser, dest="precision"):
    """``--precision {auto,fp32,bf16}``: the network's arithmetic (``sr.precision``), the one spelling of the
    option in every command that runs a model."""
    parser.add_argument("--precision", dest=dest, choices=PRECISIONS, default="auto",
                        help="the network's arithmetic: auto (default) runs bfloat16 where the CPU or GPU computes "
                             "it natively (AVX512-BF16, AMX, NVIDIA Ampere or later; about twice as fast, output "
                             "within 0.01 dB of fp32) and fp32 elsewhere; fp32: the exact reference arithmetic")


class UsageParser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 64 (argparse's default is the usage block + exit 2)."""

    def error(self, message):
        self.exit(exitcodes.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _ranged(convert, name, what, low, high, low_inclusive):
    """An argparse ``type=``: ``convert(text)``, finite, within (low, high] (or [low, high])."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value < low or (value == low and not low_inclusive)):
            raise argparse.ArgumentTypeError(f"{text} must be {'>=' if low_inclusive else '>'} {low:g}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} must be <= {high:g}")
        return value

    parse.__name__ = name
    return parse


def finite_float(low=None, high=None, low_inclusive=False, what="a number"):
    """``type=`` for a finite float in (low, high] (or [low, high] with ``low_inclusive``)."""
    return _ranged(float, "number", what, low, high, low_inclusive)


def int_at_least(low=1, high=None):
    """``type=`` for an integer >= ``low`` (and <= ``high``)."""
    return _ranged(int, "integer", "an integer", low, high, True)


positive_int = int_at_least(1)
positive_float = finite_float(0.0)


def cpu_count():
    """The CPUs this process may use (``os.sched_getaffinity``; elsewhere ``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


class CapAtCPUs(argparse.Action):
    """``action=`` for a thread or process count (``--threads``, ``--nprocs``, ``--omp-nthreads``; ``type=``
    :data:`positive_int`): a value above the CPUs this process may use (``os.sched_getaffinity``) is lowered to
    that number, with a warning (more threads than CPUs only slows the run down)."""

    def __call__(self, parser, namespace, values, option_string=None):
        cpus = cpu_count()
        if values is not None and values > cpus:
            print(f"{parser.prog}: warning: {option_string} {values} is more than the {cpus} CPU(s) available; "
                  f"using {cpus}", file=sys.stderr)
            values = cpus
        setattr(namespace, self.dest, values)

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def device(text):
    """``cpu``, ``cuda`` or ``cuda:N`` (anything else is a usage error)."""
    text = text.strip().lower()
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (choose cpu, cuda or cuda:N)")
    return text


def not_empty(text):
    """A file, folder or model name that is not empty: ``--weights ""`` or ``OUTPUT_DIR ""`` (an unset shell
    variable) is a usage error, never the shipped model or the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty (an unset shell variable?)")
    return text


def not_empty_list(text):
    """A comma-separated list with at least one item (``--models ""`` or ``","`` is a usage error, never the
    default); returned as given."""
    not_empty(text.replace(",", " "))
    return text


def check_folder(label, folder, code):
    """:func:`prettier_bids.paths.check_output_folder` (the folder is, or can be made, a writable folder; nothing
    is created) with its problem as a :class:`CLIError` of exit status ``code``."""
    from ..paths import OutputPathError, check_output_folder

    try:
        return check_output_folder(label, folder, code)
    except OutputPathError as exc:
        raise CLIError(str(exc), exc.code) from None


def check_folder_outputs(label, folder, names, inputs):
    """The files ``names`` a command writes in ``folder`` (``--out``, ``--out-dir``) are none of its ``inputs``
    (a split, a config, weights files: None entries ignored): a usage error (64) otherwise. prettier-eval wrote
    its results.json over the split it read, prettier-train its best.pt over one."""
    from ..paths import OutputPathError, check_distinct

    try:
        check_distinct([Path(i) for i in inputs if i is not None], [(label, Path(folder) / n) for n in names])
    except OutputPathError as exc:
        raise CLIError(str(exc), exc.code) from None


def check_device_available(dev):
    """A one-line reason when ``dev`` cannot be used here, else None."""
    if not dev.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return f"--device {dev} requested but no CUDA device is available"
    if ":" in dev and int(dev.split(":")[1]) >= torch.cuda.device_count():
        return f"--device {dev}: only {torch.cuda.device_count()} CUDA device(s) available"
    return None


def apply_threads_and_device(args):
    """A command's ``--threads`` (torch's thread count; all CPUs when not given) and ``--device`` (a usage error,
    exit 64, when it cannot be used here), applied before any work."""
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    problem = check_device_available(getattr(args, "device", "cpu"))
    if problem:
        raise CLIError(problem, exitcodes.USAGE)


def one_line(exc):
    """``ExcType: first line of the message`` for an unexpected exception."""
    text = str(exc).strip().splitlines()
    return exitcodes.printable(f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, ``scancel``): unwinds as Ctrl-C does, so every ``finally`` runs
    and atomic writers remove their temporaries."""


#: Modules with pybind11 initialisation that the commands import lazily inside their run (torch: loading the
#: weights, the SR nodes): imported by :func:`guarded_main` before the command runs, with Ctrl-C and SIGTERM
#: noted rather than raised. A KeyboardInterrupt inside torch's initialisation aborted the process ("terminate
#: called after throwing an instance of 'pybind11::error_already_set'", SIGABRT, exit -6; seen once in CI).
PRELOAD = ("torch",)

#: What SIGTERM does instead of unwinding, once a command has set it (:func:`on_sigterm`).
_ON_SIGTERM = []


def on_sigterm(action):
    """From now on SIGTERM runs ``action()`` and exits 143 at once instead of raising :class:`Terminated`: for
    code during which an exception raised at an arbitrary point could be caught and misreported (Nipype records
    one raised inside a node as that node's failure, and may swallow one in its scheduler loop)."""
    _ON_SIGTERM[:] = [action]


def _sigterm_handler(prog, owner_pid):
    def handler(signum, frame):
        if os.getpid() != owner_pid:  # a forked child (a pool worker) that inherited it: die as by default
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM must not cut the clean-up short
        if not _ON_SIGTERM:
            raise Terminated()
        try:
            exit_for_signal(prog, signal.SIGTERM)
            logging.shutdown()  # flush the log file; then silence what threads say while the action stops them
            logging.disable(logging.CRITICAL)
            sys.stdout.flush()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            _ON_SIGTERM[0]()
        finally:
            os._exit(exitcodes.TERMINATED)
    return handler


def _interrupt_hook(previous):
    """A ``sys.unraisablehook`` that does not let a Ctrl-C (or :class:`Terminated`) die in a finalizer: raised while
    Python runs a ``__del__`` or a weakref callback (SQLAlchemy's, inside pybids), it is "ignored" (a traceback
    printed, the command runs on to exit 0). It is raised again in the main thread once the hook has returned: the
    SIGINT handler raises it, for one call, and a timer thread calls that handler (``_thread.interrupt_main``).
    Other unraisable exceptions go to ``previous``."""
    import _thread

    in_hook = []

    def later():
        timer = threading.Timer(0.001, _thread.interrupt_main)
        timer.daemon = True
        timer.start()

    def hook(unraisable):
        exc = unraisable.exc_value
        if not isinstance(exc, KeyboardInterrupt) or threading.current_thread() is not threading.main_thread():
            return previous(unraisable)
        before = signal.getsignal(signal.SIGINT)

        def raise_again(signum, frame):
            if in_hook:  # raised here, it would be ignored again
                return later()
            signal.signal(signal.SIGINT, before if before is not None else signal.default_int_handler)
            raise exc

        in_hook.append(True)
        try:
            signal.signal(signal.SIGINT, raise_again)
            later()
        finally:
            in_hook.clear()
        return None
    return hook


def guarded_main(prog, func, verbose=False, preload=True):
    """Run ``func()``; a :class:`CLIError` becomes its one line and exit code; an unexpected exception
    becomes one line on stderr and exit 1 (the traceback is logged only when ``verbose``); Ctrl-C is
    exit 130, SIGTERM exit 143, both after the clean-up. ``preload``: first import :data:`PRELOAD` with the
    signals deferred (False for a command that never imports torch: the group level)."""
    previous, previous_hook = None, sys.unraisablehook
    if threading.current_thread() is threading.main_thread():
        for module in PRELOAD if preload else ():
            try:
                signum = import_deferring_signals(module)[1]
            except Exception:  # noqa: BLE001 (a broken install: said by the command's own import, in the guard)
                continue
            if signum is not None:
                return exit_for_signal(prog, signum)
        previous = signal.signal(signal.SIGTERM, _sigterm_handler(prog, os.getpid()))
        sys.unraisablehook = _interrupt_hook(previous_hook)
    try:
        return func()
    except CLIError as exc:
        return error(prog, exc, exc.code)
    except Terminated:
        return exit_for_signal(prog, signal.SIGTERM)
    except KeyboardInterrupt:
        return exit_for_signal(prog, signal.SIGINT)
    except OSError as exc:
        if not is_disk_full(exc):
            return _unexpected(prog, exc, verbose)
        where = f" (writing {exc.filename})" if exc.filename else ""
        what = "no space left on the device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return error(prog, f"{what}{where}: free some space and rerun the same command (what was written whole "
                     "is kept)", exitcodes.CANTCREAT)
    except Exception as exc:  # noqa: BLE001 (the last line of defence: no traceback for users)
        return _unexpected(prog, exc, verbose)
    finally:
        _ON_SIGTERM.clear()
        sys.unraisablehook = previous_hook
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _unexpected(prog, exc, verbose):
    """An exception no check foresaw: one line and exit 1 (the traceback only with ``verbose``)."""
    if verbose:
        logging.getLogger("prettier_bids").error("unexpected error", exc_info=exc)
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    print(f"{prog}: error: unexpected {one_line(exc)} (rerun with -v for details)", file=sys.stderr)
    return exitcodes.FAIL
