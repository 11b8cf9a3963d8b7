"""One output-path guard for every command (below :mod:`prettier_bids.bids` in the layering; stdlib only).

:func:`check_output_paths` is called before any work:

* every output must differ from every input and from every other output: resolved paths are
  compared, and ``os.path.samefile`` where both exist (symlinks and hard links count) -> usage error
  (exit 64), nothing written;
* every output's folder must exist and be writable, and its name leave room for the temporary the
  atomic writer makes beside it (``.NAME.PID.tmp.nii.gz``, :data:`TMP_NAME_EXTRA` bytes more) -> exit 73,
  before the computation;
* an output folder (a run directory) must be a folder, or creatable: :func:`check_output_folder`.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import exitcodes
from .exitcodes import CodedError


#: Bytes the atomic writer's temporary name adds to an output's name (``sr.io.tmp_path_for``: a dot, ``.PID``
#: of up to 7 digits, ``.tmp`` and the extension again, at most ``.nii.gz``).
TMP_NAME_EXTRA = 1 + 8 + 4 + 7


def name_max(folder):
    """The longest file name (bytes) ``folder``'s filesystem takes (255 where it does not say)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


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


def _labelled(outputs):
    """``[(label, Path)]`` from paths or ``(label, path)`` pairs (None entries dropped)."""
    out = []
    for item in outputs:
        label, path = item if isinstance(item, tuple) else ("output", item)
        if path is not None:
            out.append((label, Path(path)))
    return out


def check_distinct(inputs, outputs):
    """Raise OutputPathError(64) when an output is an input or another output.

    ``outputs``: paths, or ``(label, path)`` pairs so that the message names the option."""
    outputs = _labelled(outputs)
    for label, out in outputs:
        for inp in inputs:
            if inp is not None and same_file(out, inp):
                raise OutputPathError(f"{label} {out} is the input file {inp}; refusing to overwrite an input",
                                      exitcodes.USAGE)
    for i, (label_a, a) in enumerate(outputs):
        for label_b, b in outputs[i + 1:]:
            if same_file(a, b):
                raise OutputPathError(f"{label_a} {a} and {label_b} {b} are the same file", exitcodes.USAGE)


def check_writable_dirs(outputs):
    """Raise OutputPathError(73) when the folder of an output is missing or not writable, or the output
    exists and is not a regular file (a folder, a device, a FIFO: the rename would replace it)."""
    for label, out in _labelled(outputs):
        folder = out.parent if str(out.parent) else Path(".")
        if not folder.exists():
            raise OutputPathError(f"cannot write {label} {out}: folder {folder} does not exist", exitcodes.CANTCREAT)
        if not folder.is_dir():
            raise OutputPathError(f"cannot write {label} {out}: {folder} is not a folder", exitcodes.CANTCREAT)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputPathError(f"cannot write {label} {out}: folder {folder} is not writable", exitcodes.CANTCREAT)
        limit = name_max(folder) - TMP_NAME_EXTRA
        if len(os.fsencode(out.name)) > limit:
            raise OutputPathError(f"cannot write {label} {out}: its file name is {len(os.fsencode(out.name))} bytes "
                                  f"long, at most {limit} fit here (with the temporary written beside it)",
                                  exitcodes.CANTCREAT)
        if out.is_dir():
            raise OutputPathError(f"cannot write {label} {out}: it is a folder", exitcodes.CANTCREAT)
        if out.exists() and not out.is_file():
            raise OutputPathError(f"cannot write {label} {out}: it exists and is not a regular file (device, FIFO "
                                  "or socket); refusing to replace it", exitcodes.CANTCREAT)


def check_output_folder(label, folder, code=exitcodes.CANTCREAT):
    """Raise OutputPathError(``code``) when the output folder ``folder`` (made later, with its parents) exists and
    is not a folder, lies under a file, or cannot be created or written. Creates nothing."""
    folder = Path(folder).absolute()
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{label} {folder} exists and is not a folder", code)
    base = nearest_existing(folder)
    if not base.is_dir():
        raise OutputPathError(f"cannot create {label} {folder}: {base} is not a folder", code)
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot {'write to' if base == folder else 'create'} {label} {folder}: {base} is "
                              "not writable", code)
    return folder


def check_output_paths(inputs, outputs):
    """Both checks, the usage error first (see the module docstring)."""
    check_distinct(inputs, outputs)
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
