"""File names: the one module for stems and extensions, ``desc-`` labels and BIDS entities.

* stems and extensions: :func:`split_ext` (``.nii.gz`` kept whole), :func:`suffix_of` (the BIDS suffix) and
  the NIfTI-name rule (``NIFTI_EXTENSIONS``, ``is_nifti_name``, behind :func:`is_nifti`) are defined in
  :mod:`prettier_bids.sr.io`, the lowest layer (stdlib only: the SR core names its temporaries with the first,
  prettier-sr picks a contrast's model with the second and checks its output name with the third, none
  needing pybids), and re-exported here; :func:`stem`, :func:`with_ext`, :func:`sidecar_of`, :func:`nifti_of`
  build on them;
* ``desc-`` labels: read from ``prettier_bids/data/io_spec.json`` (:func:`output_desc`,
  :func:`reportlet_desc`, :func:`main_descs`), never typed out elsewhere;
* entities: parsed by pybids (:func:`parse_entities`), output paths built by pybids' ``build_path``
  with the patterns of ``io_spec.json`` (:func:`derivative_relpath`).

Layering: below :mod:`prettier_bids.bids` (which re-exports :func:`load_io_spec` and
:func:`derivative_relpath`); imports only the stdlib, pybids and :mod:`prettier_bids.sr.io`.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .exitcodes import DATAERR, CodedError
# re-exported: these rules live in the stdlib-only sr/io.py, beside split_ext
from .sr.io import NIFTI_EXTENSIONS, is_nifti_name, split_ext, suffix_of  # noqa: F401

#: Extension of the images this package writes.
NIFTI_EXT = ".nii.gz"


class NamingError(CodedError, ValueError):
    """No output name can be built for these entities (exit status ``DATAERR``)."""

    def __init__(self, message, code=DATAERR):
        super().__init__(message, code)


# --------------------------------------------------------------------------------------------
# Stems and extensions
# --------------------------------------------------------------------------------------------

def stem(path):
    """File name without its extension (``sub-01_FLAIR`` for ``.../sub-01_FLAIR.nii.gz``)."""
    return split_ext(path)[0]


def is_nifti(path):
    """Whether ``path``'s file name is a NIfTI name (:func:`prettier_bids.sr.io.is_nifti_name`)."""
    return is_nifti_name(path)


def with_ext(path, ext):
    """``path`` in the same folder with its extension (``.nii.gz`` counted whole) replaced by ``ext``."""
    path = Path(path)
    return path.with_name(stem(path) + ext)


def sidecar_of(nifti):
    """The JSON sidecar of an image."""
    return with_ext(nifti, ".json")


def nifti_of(sidecar):
    """The image (``.nii.gz``, as written by this package) of a JSON sidecar."""
    return with_ext(sidecar, NIFTI_EXT)


# --------------------------------------------------------------------------------------------
# io_spec.json: queries, desc labels, path patterns
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _io_spec_text():
    return (resources.files("prettier_bids") / "data" / "io_spec.json").read_text()


def load_io_spec():
    """The query spec (a fresh copy: callers may modify it)."""
    return json.loads(_io_spec_text())


def output_desc(kind, spec=None):
    """``desc`` label of an output kind (``"sr"``, ``"cubic"``, ``"consistency"``)."""
    return (spec or load_io_spec())["outputs"][kind]["desc"]


def reportlet_desc(kind, spec=None):
    """``desc`` label of a reportlet kind (``"input"``, ``"cubic"``, ``"consistency"``, ``"qc"``)."""
    return (spec or load_io_spec())["reportlets"][kind]["desc"]


def main_descs(spec=None):
    """``desc`` labels of the main outputs (those that carry the QC values): SR, then cubic."""
    return output_desc("sr", spec), output_desc("cubic", spec)


def pattern_entities(spec=None):
    """Entities that output names can carry (those named in the path patterns)."""
    spec = spec or load_io_spec()
    names = set()
    for pattern in spec["patterns"]:
        names.update(re.findall(r"\{(\w+)", pattern))
    return names


def entity_keys(spec=None):
    """``{entity: its key in file names}`` of the entities the path patterns name (``session`` -> ``ses``,
    ``acquisition`` -> ``acq``)."""
    spec = spec or load_io_spec()
    keys = {}
    for pattern in spec["patterns"]:
        keys.update({entity: key for key, entity in re.findall(r"(?:^|[_/\[])([a-z]+)-\{(\w+)", pattern)})
    return keys


# --------------------------------------------------------------------------------------------
# Entities and output paths (pybids)
# --------------------------------------------------------------------------------------------

#: BIDS datatype folders (pybids' ``datatype`` entity).
DATATYPE_FOLDERS = frozenset({"anat", "beh", "dwi", "eeg", "fmap", "func", "ieeg", "meg", "micr", "motion", "mrs",
                              "nirs", "perf", "pet"})


@lru_cache(maxsize=None)
def _file_entities():
    """The entities ``parse_file_entities`` matches by default (pybids' ``bids`` and ``derivatives`` configs),
    loaded once: pybids builds them anew for every call (6 ms: 30 s for the methods text of a 600-participant
    derivatives dataset, in every participant run)."""
    from bids.layout.models import Config

    entities = {}
    for name in ("bids", "derivatives"):
        entities.update(Config.load(name).entities)
    return tuple(entities.values())


def parse_entities(path):
    """BIDS entities of a file (pybids' ``parse_file_entities``) from its name, and its ``datatype`` from its
    folder where that is a datatype folder (``anat``). The folders above never count: a dataset kept under a
    folder named ``desc-old`` or ``run-2023`` gives its files no ``desc`` or ``run``."""
    from bids.layout import parse_file_entities

    path = Path(path)
    ents = parse_file_entities("/" + path.name, entities=_file_entities())
    if path.parent.name in DATATYPE_FOLDERS:
        ents["datatype"] = path.parent.name
    return ents


def derivative_relpath(entities, desc, extension=NIFTI_EXT, datatype=None, spec=None):
    """Output path (relative to the derivatives root) keeping the source entities plus ``desc-``."""
    from bids.layout.writing import build_path

    spec = spec or load_io_spec()
    ents = {k: v for k, v in entities.items() if k not in ("desc", "extension")}
    ents.update({"desc": desc, "extension": extension})
    ents["datatype"] = datatype or ents.get("datatype") or "anat"
    path = build_path(ents, spec["patterns"], strict=False)
    if path is None:
        raise NamingError(f"cannot build an output name for entities {ents}")
    return path


def bids_relpath(entities, spec=None):
    """The raw dataset's path (folder and name, no ``desc``) that ``entities`` make
    (``sub-01/ses-1/anat/sub-01_ses-1_acq-ax_FLAIR.nii.gz``): :func:`derivative_relpath` with no ``desc``; None when
    they make none. A raw file whose own name differs is not a BIDS name (pybids parsed only part of it:
    ``sub-01_foo_FLAIR.nii.gz`` parses as ``sub-01_FLAIR.nii.gz``); one in another folder is a stray copy
    (``sub-01/anat/old/``)."""
    try:
        return derivative_relpath(entities, None, entities.get("extension", NIFTI_EXT), spec=spec)
    except NamingError:
        return None


__all__ = ["DATATYPE_FOLDERS", "NIFTI_EXT", "NIFTI_EXTENSIONS", "NamingError", "bids_relpath", "derivative_relpath",
           "is_nifti", "load_io_spec", "main_descs", "nifti_of", "output_desc", "parse_entities", "pattern_entities",
           "reportlet_desc", "sidecar_of", "split_ext", "stem", "with_ext"]
