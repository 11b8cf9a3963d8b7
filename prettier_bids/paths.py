"""One output-path guard for every command (below :mod:`prettier_bids.bids` in the layering; stdlib only).

:func:`check_output_paths` is called before any work:

* every output must differ from every input and from every other output: resolved paths are
  compared, and ``os.path.samefile`` where both exist (symlinks and hard links count) -> usage error
  (exit 64), nothing written;
* every output's folder must exist and be writable -> exit 73, before the computation.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import exitcodes
from .exitcodes import CodedError


class OutputPathError(CodedError):
    """An output location that must not (or cannot) be written; ``code`` is the exit status."""


def same_file(a, b):
    """True when ``a`` and ``b`` name the same file (same resolved path, or same inode)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_distinct(inputs, outputs, labels=None):
    """Raise OutputPathError(64) when an output is an input or another output."""
    labels = labels or {}
    outputs = [Path(o) for o in outputs if o is not None]
    for out in outputs:
        for inp in inputs:
            if inp is not None and same_file(out, inp):
                raise OutputPathError(f"{labels.get(str(out), 'output')} {out} is the input file {inp}; "
                                      "refusing to overwrite an input", exitcodes.USAGE)
    for i, a in enumerate(outputs):
        for b in outputs[i + 1:]:
            if same_file(a, b):
                raise OutputPathError(f"{labels.get(str(a), 'output')} {a} and {labels.get(str(b), 'output')} {b} "
                                      "are the same file", exitcodes.USAGE)


def check_writable_dirs(outputs):
    """Raise OutputPathError(73) when the folder of an output is missing or not writable."""
    for out in outputs:
        if out is None:
            continue
        folder = Path(out).parent if str(Path(out).parent) else Path(".")
        if not folder.is_dir():
            raise OutputPathError(f"cannot write {out}: folder {folder} does not exist", exitcodes.CANTCREAT)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputPathError(f"cannot write {out}: folder {folder} is not writable", exitcodes.CANTCREAT)
        if Path(out).is_dir():
            raise OutputPathError(f"cannot write {out}: it is a folder", exitcodes.CANTCREAT)


def check_output_paths(inputs, outputs, labels=None):
    """Both checks, the usage error first (see the module docstring)."""
    outputs = [o for o in outputs if o is not None]
    check_distinct(inputs, outputs, labels)
    check_writable_dirs(outputs)


def nearest_existing(path):
    """``path`` or its closest existing ancestor."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def is_within(path, folder):
    """True when ``path`` (resolved) is ``folder`` or lies below it."""
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False
