"""The JSON split files of ``prettier-train`` and ``prettier-eval`` (``--split``), read and checked before any
work: a missing or unreadable file is :data:`~prettier_bids.exitcodes.NOINPUT`, a file that is not a split
(bad JSON, a list, a missing or mistyped section) is :data:`~prettier_bids.exitcodes.USAGE`.

Sections: ``train``, ``validation`` and the optional ``train_inplane`` are lists of file names relative to
``--data-root``; ``test`` maps each contrast to a list of ``{"file": NAME, "skull_stripped": BOOL}``; the optional
``lesion_masks`` maps a file name to its consensus lesion mask (training: real-lesion sampling;
``prettier-eval lesions``: the test FLAIRs that have one are its default cases). The split describes the data;
no code knows a dataset's file names.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .. import exitcodes
from ..sr.io import JSONReadError, read_json
from .options import CLIError


def default_split():
    """The shipped split (``prettier_bids/data/splits.json``)."""
    return Path(str(resources.files("prettier_bids") / "data" / "splits.json"))


def _names(value):
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _test_entries(value):
    return isinstance(value, dict) and all(
        isinstance(entries, list) and all(isinstance(e, dict) and isinstance(e.get("file"), str) and e["file"]
                                          for e in entries)
        for entries in value.values())


def _mapping(value):
    return isinstance(value, dict) and all(isinstance(k, str) and k and isinstance(v, str) and v
                                           for k, v in value.items())


_CHECKS = {"lesion_masks": (_mapping, "an object mapping file names to lesion mask file names"),
           "train": (_names, "a list of file names"), "validation": (_names, "a list of file names"),
           "train_inplane": (_names, "a list of file names"),
           "test": (_test_entries, 'an object mapping contrasts to lists of {"file": ...} objects')}


def read_split(path, required):
    """The split at ``path`` (None: the shipped one) with the ``required`` sections checked (and
    ``train_inplane`` when present); raises :class:`~.options.CLIError` with its exit code."""
    path = Path(path) if path else default_split()
    try:
        split = read_json(path, unique_keys=True)
    except JSONReadError as exc:
        raise exitcodes.from_json_error(CLIError, f"--split {path}", exc) from None
    if not isinstance(split, dict):
        raise CLIError(f"--split {path} must hold a JSON object with {', '.join(map(repr, required))}, "
                       f"not a {type(split).__name__}", exitcodes.USAGE)
    optional = [s for s in ("train_inplane", "lesion_masks") if split.get(s) is not None]
    for section in list(required) + optional:
        if section not in split:
            raise CLIError(f"--split {path} has no {section!r} section", exitcodes.USAGE)
        check, what = _CHECKS[section]
        if not check(split[section]):
            raise CLIError(f"--split {path}: {section!r} must be {what}", exitcodes.USAGE)
    for section in required:  # a section the command needs must name at least one file
        value = split[section]
        if not (any(value.values()) if isinstance(value, dict) else value):
            raise CLIError(f"--split {path}: the {section!r} section names no file", exitcodes.USAGE)
    return split
