"""The exit codes of every command (``prettier-sr``, ``prettier-bids``, ``prettier-train``, ``prettier-eval``).

One table: the CLIs import their codes from here and their ``--help`` epilogs are generated from
it (:func:`epilog`); ``docs/errors.md`` documents the same table. Codes follow the BIDS-Apps
conventions for dataset problems (16-19) and BSD ``sysexits.h`` for the rest (64-75).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass


def printable(text):
    """``text`` kept on one line: control characters (a newline in a file name) shown escaped. Every error and
    log line a command prints goes through it (``cli.options.error``, the console log, ``bids.summarize``)."""
    text = str(text)
    return text if text.isprintable() else "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


@dataclass(frozen=True)
class ExitCode:
    name: str
    code: int
    short: str  # for --help
    meaning: str  # for docs/errors.md
    commands: tuple = ("prettier-sr", "prettier-bids")


ALL = ("prettier-sr", "prettier-bids", "prettier-train", "prettier-eval")


OK = 0
FAIL = 1
BIDS_INVALID = 16
BAD_LEVEL = 17
NO_MATCH = 18
QC_FLAGGED = 19
USAGE = 64
DATAERR = 65
NOINPUT = 66
CANTCREAT = 73
TEMPFAIL = 75
INTERRUPTED = 130
TERMINATED = 143

TABLE = (
    ExitCode("OK", OK, "ok",
             "success", ALL),
    ExitCode("FAIL", FAIL, "some inputs failed / unexpected error",
             "some inputs failed (prettier-bids), or an unexpected internal error (one line; "
                           "the traceback with -v)", ALL),
    ExitCode("BIDS_INVALID", BIDS_INVALID, "not BIDS",
             "BIDS_DIR is not a valid BIDS dataset", ("prettier-bids",)),
    ExitCode("BAD_LEVEL", BAD_LEVEL, "unknown analysis level",
             "unknown analysis level (not participant or group)", ("prettier-bids",)),
    ExitCode("NO_MATCH", NO_MATCH, "no matching participant or image",
             "the selection matched no participant or image", ("prettier-bids",)),
    ExitCode("QC_FLAGGED", QC_FLAGGED, "--strict and an output failed QC",
             "--strict: an output was written but flagged by QC (consistency PSNR "
                                       "below the floor); see QCFlags in its sidecar"),
    ExitCode("USAGE", USAGE, "usage error",
             "usage error: bad option value, output path equal to an input or another output", ALL),
    ExitCode("DATAERR", DATAERR, "bad input data",
             "bad input data (not NIfTI, 4D, 2D, NaN/Inf, one slice, already high resolution, ...)"),
    ExitCode("NOINPUT", NOINPUT, "missing input or weights",
             "missing input file, BIDS_DIR, training data or model weights", ALL),
    ExitCode("CANTCREAT", CANTCREAT, "cannot write output",
             "cannot write an output (missing or read-only folder, disk full)"),
    ExitCode("TEMPFAIL", TEMPFAIL, "work directory or participant in use",
             "the work directory, or a participant's outputs, is in use by another run (its PID is named); retry "
             "when it has finished, or use another -w", ("prettier-bids",)),
    ExitCode("INTERRUPTED", INTERRUPTED, "interrupted",
             "interrupted (Ctrl-C); rerun the same command to resume", ALL),
    ExitCode("TERMINATED", TERMINATED, "terminated (SIGTERM)",
             "terminated by SIGTERM (`timeout`, `docker stop`, SLURM's `scancel` or time limit); temporaries "
             "removed; rerun the same command to resume", ALL),
)

BY_CODE = {e.code: e for e in TABLE}


class CodedError(Exception):
    """An error that ends a command with a known exit status (``code``, one of :data:`TABLE`)."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def from_json_error(cls, what, exc):
    """The :class:`CodedError` subclass ``cls`` for ``sr.io.JSONReadError`` ``exc`` of the file an option names
    (``what``: e.g. ``"--split PATH"``): a file that cannot be read is :data:`NOINPUT`, one that is not the JSON
    asked for (bad JSON, too deep) :data:`USAGE`. The one wording of both."""
    if exc.unreadable:
        return cls(f"cannot read {what}: {exc.reason}", NOINPUT)
    return cls(f"{what} is {exc.reason}", USAGE)


def codes_for(command):
    return [e for e in TABLE if command in e.commands]


def epilog(command, width=100):
    """The ``exit codes:`` paragraph of a command's ``--help``, generated from :data:`TABLE`."""
    short = {FAIL: "some inputs failed" if command == "prettier-bids" else "unexpected error"}
    items = [f"{e.code} {short.get(e.code, e.short)}" for e in codes_for(command)]
    return textwrap.fill("exit codes: " + "; ".join(items), width=width, subsequent_indent="  ")


def markdown_table():
    """The table as Markdown (docs/errors.md embeds its output)."""
    rows = ["| code | name | meaning | commands |", "|---|---|---|---|"]
    rows += [f"| {e.code} | {e.name} | {e.meaning} | {', '.join(e.commands)} |" for e in TABLE]
    return "\n".join(rows)
